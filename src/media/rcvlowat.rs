//! Fewer wake-ups per stream: `SO_RCVLOWAT` on the RTSP socket.
//!
//! A camera's video reaches us as ~1.4 kB RTP packets interleaved on the RTSP TCP connection.
//! Read as they come, every packet or two costs an epoll wake-up, a tokio task poll and a
//! retina parse: measured on one 1080p / 4.1 Mbit/s stream, about half the daemon's CPU was
//! the kernel's read and `epoll_wait` paths and most of the rest tokio and libc around them
//! (BENCHMARKS.md, run 7). With a low-water mark the kernel wakes the reader only once that
//! many bytes are queued, so a wake-up reads a frame's worth instead of a packet's: the same
//! stream's CPU fell to about half.
//!
//! Holding data costs latency, so the mark follows the stream ([`Batching`]): about
//! [`HOLD`] of the stream's P-frame data (keyframes are rare and large and would inflate the
//! rate), re-measured every [`WINDOW`], capped at [`MAX`], and off (1 byte, the kernel's
//! default) below [`MIN`]: a sub-stream or a low-rate camera gains little and would be held
//! longest. A frame is then delivered up to about one frame interval late (the tail of a
//! frame waits for the head of the next). A stream that suddenly slows — a VBR / "smart
//! codec" camera on a still scene at night, a stalled encoder — could leave its last bytes
//! below the mark with nothing coming to push them out, so when no frame has come for
//! [`stall_after`] the mark drops back to 1 at once (the kernel then signals the queued data
//! right away) and the next window measures again. A door event's picture (≤ 1 s) and the
//! hub's 10 s silence check are never held longer than that.
//!
//! retina owns the socket and has no accessor for it, so [`find`] looks it up: a TCP socket of
//! this process that did not exist before `DESCRIBE`, connected to the RTSP server's address
//! and port (sessions to the same server are opened one at a time for this: [`opening`]).
//! It is duplicated, so the options are set on that socket for as long as the session lives
//! and never on a number that meanwhile went to another file. If it cannot be told apart
//! (none or several), the session runs without a mark: slower, never wrong. Linux only
//! (`/proc/self/fd`); elsewhere every session runs without.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// How much of the stream the mark holds.
pub const HOLD: Duration = Duration::from_millis(40);
/// Below this the mark is off (about 800 kbit/s of P-frames with [`HOLD`]).
pub const MIN: u32 = 4 << 10;
pub const MAX: u32 = 64 << 10;
/// The rate is measured over this long (and at least [`WINDOW_FRAMES`] frames).
pub const WINDOW: Duration = Duration::from_secs(1);
pub const WINDOW_FRAMES: u32 = 10;

/// No frame for this long while holding: let go. Three frame intervals (a held frame comes
/// up to about one interval late, so that is no stall), at least 250 ms, at most 500 ms.
pub fn stall_after(interval: Duration) -> Duration {
    (interval * 3).clamp(Duration::from_millis(250), Duration::from_millis(500))
}

/// The low-water mark for a stream, from the frames it delivers. Pure: the caller applies
/// what it returns to the socket.
#[derive(Debug)]
pub struct Batching {
    window_start: Option<Instant>,
    frames: u32,
    bytes: u64,
    p_frames: u32,
    p_bytes: u64,
    last_frame: Option<Instant>,
    /// Mean frame interval of the last full window.
    interval: Duration,
    mark: u32,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            window_start: None,
            frames: 0,
            bytes: 0,
            p_frames: 0,
            p_bytes: 0,
            last_frame: None,
            interval: Duration::from_millis(40),
            mark: 1,
        }
    }
}

impl Batching {
    /// The mark in force (1: off).
    pub fn mark(&self) -> u32 {
        self.mark
    }

    /// A frame of `len` bytes arrived at `now`. Returns the new mark when it changes.
    pub fn frame(&mut self, now: Instant, len: usize, is_key: bool) -> Option<u32> {
        self.last_frame = Some(now);
        let Some(start) = self.window_start else {
            // The window opens at its first frame: what came before (a stall, the session's
            // start) is not measured.
            self.window_start = Some(now);
            return None;
        };
        self.frames += 1;
        self.bytes += len as u64;
        if !is_key {
            self.p_frames += 1;
            self.p_bytes += len as u64;
        }
        let span = now - start;
        if span < WINDOW || self.frames < WINDOW_FRAMES {
            return None;
        }
        let fps = f64::from(self.frames) / span.as_secs_f64();
        let (n, b) = if self.p_frames > 0 {
            (self.p_frames, self.p_bytes)
        } else {
            (self.frames, self.bytes)
        };
        let rate = b as f64 / f64::from(n) * fps;
        self.interval = span / self.frames;
        *self = Batching {
            window_start: Some(now),
            last_frame: Some(now),
            interval: self.interval,
            mark: self.mark,
            ..Batching::default()
        };
        let want = (rate * HOLD.as_secs_f64()) as u32;
        let want = if want < MIN { 1 } else { want.min(MAX) };
        // Small changes are not worth a system call.
        let close = want.abs_diff(self.mark) <= self.mark / 8;
        if close || (want == 1 && self.mark == 1) {
            return None;
        }
        self.mark = want;
        Some(want)
    }

    /// When holding, the instant to let go if no frame has come by then.
    pub fn stall_at(&self) -> Option<Instant> {
        if self.mark == 1 {
            return None;
        }
        self.last_frame.map(|t| t + stall_after(self.interval))
    }

    /// Nothing came by [`Batching::stall_at`]: the mark goes off (returned) and the rate is
    /// measured afresh from the next frame.
    pub fn stalled(&mut self) -> Option<u32> {
        if self.mark == 1 {
            return None;
        }
        *self = Batching {
            interval: self.interval,
            ..Batching::default()
        };
        Some(1)
    }
}

/// Sessions being opened to one RTSP server wait for each other (see the module docs).
/// Sessions to other servers do not.
pub async fn opening(url: &url::Url) -> tokio::sync::OwnedMutexGuard<()> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let key = format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(554)
    );
    let lock = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .clone();
    lock.lock_owned().await
}

/// The RTSP server's addresses, as retina resolves them.
pub async fn peers(url: &url::Url) -> Vec<SocketAddr> {
    let (Some(host), port) = (url.host_str(), url.port_or_known_default().unwrap_or(554)) else {
        return Vec::new();
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::net::lookup_host((host, port)).await {
        Ok(a) => a.collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    /// The inodes of this process's sockets, by descriptor.
    fn sockets() -> Vec<(RawFd, u64)> {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let fd = e.file_name().to_str()?.parse().ok()?;
                let link = std::fs::read_link(e.path()).ok()?;
                let ino = link
                    .to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()?;
                Some((fd, ino))
            })
            .collect()
    }

    pub struct Before(HashSet<u64>);

    pub fn before() -> Before {
        Before(sockets().into_iter().map(|(_, i)| i).collect())
    }

    fn ino(fd: &OwnedFd) -> Option<u64> {
        use std::os::linux::fs::MetadataExt;
        let f = std::fs::File::from(fd.try_clone().ok()?);
        f.metadata().ok().map(|m| m.st_ino())
    }

    pub fn find(before: &Before, peers: &[SocketAddr]) -> Result<OwnedFd, usize> {
        let mut found = Vec::new();
        for (fd, inode) in sockets() {
            if before.0.contains(&inode) {
                continue;
            }
            // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor number. If it was closed since
            // it was listed the call fails; if the number went to another file, the inode
            // check below turns the copy away.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                continue;
            }
            // SAFETY: `dup` is a new descriptor that nothing else owns.
            let dup = unsafe { OwnedFd::from_raw_fd(dup) };
            if ino(&dup) != Some(inode) {
                continue;
            }
            let tcp = std::net::TcpStream::from(dup);
            // TCP_NODELAY exists on TCP sockets only: a Unix or UDP socket fails here.
            let is_tcp = tcp.nodelay().is_ok();
            if is_tcp && tcp.peer_addr().is_ok_and(|p| peers.contains(&p)) {
                found.push(OwnedFd::from(tcp));
            }
        }
        match found.len() {
            1 => Ok(found.pop().expect("one")),
            n => Err(n),
        }
    }

    fn opt(fd: &OwnedFd, value: Option<u32>) -> std::io::Result<u32> {
        let mut v = value.unwrap_or(0).min(i32::MAX as u32) as libc::c_int;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let p = (&raw mut v).cast::<libc::c_void>();
        // SAFETY: `fd` is an open socket we own; `p`/`len` describe one c_int on our stack.
        let r = unsafe {
            match value {
                Some(_) => {
                    libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVLOWAT, p, len)
                }
                None => libc::getsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    p,
                    &mut len,
                ),
            }
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(v.max(0) as u32)
    }

    pub fn set(fd: &OwnedFd, bytes: u32) -> std::io::Result<()> {
        opt(fd, Some(bytes)).map(|_| ())
    }

    pub fn get(fd: &OwnedFd) -> std::io::Result<u32> {
        opt(fd, None)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::net::SocketAddr;
    pub struct Before;
    pub struct OwnedFd;
    pub fn before() -> Before {
        Before
    }
    pub fn find(_: &Before, _: &[SocketAddr]) -> Result<OwnedFd, usize> {
        Err(0)
    }
    pub fn set(_: &OwnedFd, _: u32) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
    pub fn get(_: &OwnedFd) -> std::io::Result<u32> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

pub use imp::Before;

/// The process's sockets now, to tell a session's new one from them afterwards.
pub fn before() -> Before {
    imp::before()
}

/// A session's socket, found and held: the mark is set on it, and back to 1 when dropped, so
/// a TEARDOWN's short answer is not held either.
pub struct Socket {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
    #[cfg(not(target_os = "linux"))]
    fd: imp::OwnedFd,
    mark: u32,
}

impl Socket {
    /// The one TCP socket created since `before` and connected to one of `peers`. `Err`
    /// gives how many matched (0, or more than one).
    pub fn find(before: &Before, peers: &[SocketAddr]) -> Result<Socket, usize> {
        imp::find(before, peers).map(|fd| Socket { fd, mark: 1 })
    }

    pub fn set(&mut self, bytes: u32) -> std::io::Result<()> {
        imp::set(&self.fd, bytes)?;
        self.mark = bytes;
        Ok(())
    }

    /// What the kernel holds (it caps the mark at half the receive buffer's maximum).
    pub fn get(&self) -> std::io::Result<u32> {
        imp::get(&self.fd)
    }

    pub fn mark(&self) -> u32 {
        self.mark
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if self.mark > 1 {
            let _ = imp::set(&self.fd, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames at `fps` for `secs`: every `gop`-th a keyframe of `key` bytes, else `p` bytes.
    fn feed(
        b: &mut Batching,
        t: &mut Instant,
        fps: u32,
        secs: u32,
        gop: u32,
        key: usize,
        p: usize,
    ) -> Vec<u32> {
        let mut changes = Vec::new();
        for i in 0..fps * secs {
            *t += Duration::from_secs(1) / fps;
            changes.extend(b.frame(*t, if i % gop == 0 { key } else { p }, i % gop == 0));
        }
        changes
    }

    #[test]
    fn the_mark_is_hold_worth_of_p_frames_capped_and_off_for_low_rates() {
        let mut t = Instant::now();
        // 1080p25, 4 Mbit/s: P-frames of 16 kB, keyframes of 160 kB every 2 s.
        let mut b = Batching::default();
        assert_eq!(b.mark(), 1);
        let c = feed(&mut b, &mut t, 25, 3, 50, 160_000, 16_000);
        // 16 kB × 25 fps × 40 ms = 16 kB (keyframes left out of the rate).
        assert_eq!(c.len(), 1, "{c:?}");
        assert!((15_500..=16_500).contains(&b.mark()), "{}", b.mark());
        // A steady stream sets it once.
        assert!(feed(&mut b, &mut t, 25, 3, 50, 160_000, 16_000).is_empty());
        // 8 Mbit/s of 60 fps: capped.
        let mut b = Batching::default();
        feed(&mut b, &mut t, 60, 2, 60, 500_000, 40_000);
        assert_eq!(b.mark(), MAX);
        // A 512 kbit/s sub-stream: off.
        let mut b = Batching::default();
        assert!(feed(&mut b, &mut t, 25, 3, 50, 20_000, 2_400).is_empty());
        assert_eq!(b.mark(), 1);
        assert_eq!(b.stall_at(), None);
    }

    #[test]
    fn a_stream_that_stops_is_let_go_within_the_stall_bound() {
        let mut t = Instant::now();
        let mut b = Batching::default();
        feed(&mut b, &mut t, 25, 2, 50, 160_000, 16_000);
        assert!(b.mark() > 1);
        // Frames every 40 ms: let go 250 ms (the floor) after the last one.
        assert_eq!(b.stall_at(), Some(t + Duration::from_millis(250)));
        assert_eq!(b.stalled(), Some(1));
        assert_eq!(b.mark(), 1);
        assert_eq!(b.stall_at(), None);
        assert_eq!(b.stalled(), None);
        // Then measured afresh: the same stream gets its mark back after a window.
        let c = feed(&mut b, &mut t, 25, 2, 50, 160_000, 16_000);
        assert_eq!(c.len(), 1);
        // 5 fps: three intervals are 600 ms, capped at 500.
        let mut b = Batching::default();
        feed(&mut b, &mut t, 5, 3, 10, 400_000, 100_000);
        assert!(b.mark() > 1);
        assert_eq!(b.stall_at(), Some(t + Duration::from_millis(500)));
    }

    #[test]
    fn a_bitrate_drop_lowers_the_mark_or_turns_it_off() {
        let mut t = Instant::now();
        let mut b = Batching::default();
        feed(&mut b, &mut t, 25, 2, 50, 160_000, 16_000);
        let day = b.mark();
        // A still scene at night: a tenth of the data.
        let c = feed(&mut b, &mut t, 25, 2, 50, 16_000, 1_600);
        assert_eq!(c, vec![1], "day mark {day}");
        // Half the data: half the mark; a few per cent: no change.
        let mut b = Batching::default();
        feed(&mut b, &mut t, 25, 2, 50, 160_000, 16_000);
        feed(&mut b, &mut t, 25, 2, 50, 80_000, 8_000);
        assert!((7_500..=8_500).contains(&b.mark()), "{}", b.mark());
        assert!(feed(&mut b, &mut t, 25, 2, 50, 80_000, 8_300).is_empty());
    }

    #[test]
    fn only_keyframes_still_measure() {
        let mut t = Instant::now();
        let mut b = Batching::default();
        feed(&mut b, &mut t, 25, 2, 1, 16_000, 0);
        assert!((15_500..=16_500).contains(&b.mark()), "{}", b.mark());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_new_socket_to_the_server_is_found_set_and_reset() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = server.local_addr().unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let old = std::net::TcpStream::connect(peer).unwrap();
        let _old_side = server.accept().unwrap();
        let before = before();
        // Nothing new yet.
        assert_eq!(Socket::find(&before, &[peer]).err(), Some(0));
        let client = std::net::TcpStream::connect(peer).unwrap();
        // The accepted end and a connection to another port are not it.
        let (accepted, _) = server.accept().unwrap();
        let _elsewhere = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let mut s = Socket::find(&before, &[peer]).expect("found");
        let low = |t: &std::net::TcpStream| {
            imp::get(&std::os::fd::OwnedFd::from(t.try_clone().unwrap())).unwrap()
        };
        assert_eq!(low(&client), 1);
        s.set(20_000).unwrap();
        assert_eq!(s.get().unwrap(), 20_000);
        assert_eq!(low(&client), 20_000, "set on the client's own socket");
        assert_eq!(low(&old), 1);
        assert_eq!(low(&accepted), 1);
        drop(s);
        assert_eq!(low(&client), 1, "reset when the session lets go");
        // Two new ones to the same server: not told apart.
        let before = super::before();
        let _a = std::net::TcpStream::connect(peer).unwrap();
        let _b = std::net::TcpStream::connect(peer).unwrap();
        assert_eq!(Socket::find(&before, &[peer]).err(), Some(2));
    }
}
