//! QR readers on this machine's USB ports (`apptive.readers[].usb`).
//!
//! - `kind: hid` — a keyboard-wedge reader: it types the code as a USB keyboard. Read as raw
//!   Linux `struct input_event` records from `/dev/input/…` (timeval, type u16, code u16,
//!   value i32: 24 bytes on a 64-bit kernel ABI, 16 on 32-bit Raspberry Pi OS — the timeval
//!   is two `long`s), after `EVIOCGRAB` so the keystrokes do not also reach the console or a
//!   login prompt (a FIFO or file cannot be grabbed: a warning, not an error). Key codes are
//!   decoded with Shift and Caps Lock as a US layout (what wedge readers default to; a reader
//!   set to another layout must be switched to US). Non-ASCII cannot be typed this way — the
//!   key (a UUID) and the member id are ASCII, a name in the vCard may come out garbled and
//!   does not matter.
//! - `kind: serial` — a CDC-ACM / USB-serial reader: the tty is put in raw mode (termios) at
//!   `baud` and read as bytes.
//!
//! Where a scan ends: a vCard has line breaks, and wedge readers send each as Enter (serial
//! readers as CR or CRLF), so Enter cannot end a scan. A scan ends at the line `END:VCARD`,
//! or when the reader has been quiet for [`IDLE_GAP`] (readers type a whole code in one
//! burst, 2–20 ms a key; a code without END:VCARD — not a vCard, or cut short — is still
//! delivered, and refused with its reason). A device that goes away (USB unplug: ENODEV, or
//! end of file) is reopened with a capped backoff.

use super::Scan;
use crate::config::{QrUsbConfig, QrUsbKind};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Quiet time that ends a scan.
pub const IDLE_GAP: Duration = Duration::from_millis(150);
/// More than this without an end is not a QR code: delivered (and refused) as it is.
const MAX_SCAN: usize = super::vcard::MAX_LEN + 1;

/// Cuts a byte stream into scans (at `END:VCARD` + line end, or by [`Splitter::idle`]).
#[derive(Default)]
pub struct Splitter {
    buf: Vec<u8>,
}

impl Splitter {
    /// Add bytes; returns the scans they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for &b in bytes {
            // Line ends between scans (the CRLF after END:VCARD) start nothing.
            if self.buf.is_empty() && matches!(b, b'\r' | b'\n' | 0) {
                continue;
            }
            self.buf.push(b);
            let ended = matches!(b, b'\r' | b'\n') && {
                let body = self.buf[..self.buf.len() - 1].trim_ascii_end();
                let start = body
                    .iter()
                    .rposition(|c| matches!(c, b'\r' | b'\n'))
                    .map_or(0, |i| i + 1);
                body[start..]
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"END:VCARD")
            };
            if ended || self.buf.len() >= MAX_SCAN {
                out.push(std::mem::take(&mut self.buf));
            }
        }
        out
    }

    /// The reader went quiet: what it typed is one scan.
    pub fn idle(&mut self) -> Option<Vec<u8>> {
        let b = std::mem::take(&mut self.buf);
        (!b.trim_ascii().is_empty()).then_some(b)
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Keyboard key codes (linux/input-event-codes.h) to US-layout characters.
#[derive(Default)]
pub struct Keyboard {
    shift_l: bool,
    shift_r: bool,
    caps: bool,
}

const EV_KEY: u16 = 1;

impl Keyboard {
    /// One `EV_KEY` event: the character it types, if any.
    pub fn key(&mut self, code: u16, value: i32) -> Option<u8> {
        let down = value != 0; // 1 press, 2 auto-repeat, 0 release
        match code {
            42 => self.shift_l = down,
            54 => self.shift_r = down,
            58 if value == 1 => self.caps = !self.caps,
            _ if value == 0 => {}
            _ => return self.char_of(code),
        }
        None
    }

    fn char_of(&self, code: u16) -> Option<u8> {
        let shift = self.shift_l || self.shift_r;
        const ROW1: &[u8; 12] = b"1234567890-=";
        const ROW1S: &[u8; 12] = b"!@#$%^&*()_+";
        let letter = |c: u8| {
            if shift ^ self.caps {
                c.to_ascii_uppercase()
            } else {
                c
            }
        };
        let pick = |plain: u8, shifted: u8| if shift { shifted } else { plain };
        Some(match code {
            2..=13 => pick(ROW1[code as usize - 2], ROW1S[code as usize - 2]),
            15 => b'\t',
            16..=25 => letter(b"qwertyuiop"[code as usize - 16]),
            26 => pick(b'[', b'{'),
            27 => pick(b']', b'}'),
            28 | 96 => b'\n', // Enter, keypad Enter
            30..=38 => letter(b"asdfghjkl"[code as usize - 30]),
            39 => pick(b';', b':'),
            40 => pick(b'\'', b'"'),
            41 => pick(b'`', b'~'),
            43 => pick(b'\\', b'|'),
            44..=50 => letter(b"zxcvbnm"[code as usize - 44]),
            51 => pick(b',', b'<'),
            52 => pick(b'.', b'>'),
            53 => pick(b'/', b'?'),
            55 => b'*',
            57 => b' ',
            71..=83 => b"789-456+1230."[code as usize - 71],
            98 => b'/',
            _ => return None,
        })
    }
}

/// Size of one `struct input_event` for this machine's ABI.
pub const EVENT_SIZE: usize = 2 * std::mem::size_of::<usize>() + 8;

/// Decode whole `input_event` records; returns the characters typed.
pub fn decode_events(kb: &mut Keyboard, records: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records.chunks_exact(EVENT_SIZE) {
        let t = EVENT_SIZE - 8;
        let ty = u16::from_ne_bytes([r[t], r[t + 1]]);
        let code = u16::from_ne_bytes([r[t + 2], r[t + 3]]);
        let value = i32::from_ne_bytes([r[t + 4], r[t + 5], r[t + 6], r[t + 7]]);
        if ty == EV_KEY {
            out.extend(kb.key(code, value));
        }
    }
    out
}

/// Read the reader until `cancel`, reopening it when it goes away.
pub async fn run(
    reader: String,
    cfg: QrUsbConfig,
    scans: mpsc::Sender<Scan>,
    cancel: CancellationToken,
) {
    let mut backoff = crate::task::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let started = Instant::now();
        let res = tokio::select! {
            r = read_device(&reader, &cfg, &scans) => r,
            _ = cancel.cancelled() => return,
        };
        if started.elapsed() > Duration::from_secs(10) {
            backoff.reset();
        }
        let d = backoff.next_delay();
        match res {
            Ok(()) => {
                tracing::warn!(reader = %reader, device = %cfg.device.display(), retry_in = ?d, "QR reader went away (unplugged?); reopening")
            }
            Err(e) => {
                tracing::warn!(reader = %reader, device = %cfg.device.display(), error = %e, retry_in = ?d, "QR reader not readable; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

#[cfg(target_os = "linux")]
async fn read_device(
    reader: &str,
    cfg: &QrUsbConfig,
    scans: &mpsc::Sender<Scan>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use tokio::io::unix::AsyncFd;
    let fd = sys::open(&cfg.device, cfg.kind == QrUsbKind::Serial)?;
    match cfg.kind {
        QrUsbKind::Hid => {
            // SAFETY: EVIOCGRAB takes an int by value; the fd is open.
            let r = unsafe { libc::ioctl(fd.as_raw_fd(), sys::EVIOCGRAB as _, 1 as libc::c_int) };
            if r != 0 {
                tracing::warn!(reader, device = %cfg.device.display(), error = %std::io::Error::last_os_error(), "unable to grab the QR reader (EVIOCGRAB): its keystrokes also reach the console");
            }
        }
        QrUsbKind::Serial => sys::raw_mode(&fd, cfg.baud)?,
    }
    tracing::info!(reader, device = %cfg.device.display(), kind = ?cfg.kind, "QR reader opened");
    // SAFETY: `fd` is owned by the AsyncFd from here and closed only when it drops.
    let afd = unsafe { AsyncFd::register(fd) }.map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut split = Splitter::default();
    let mut kb = Keyboard::default();
    // Partial input_event records carried to the next read.
    let mut pending: Vec<u8> = Vec::new();
    let mut last = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let idle = async {
            if split.is_empty() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep_until(last + IDLE_GAP).await
            }
        };
        let n = tokio::select! {
            g = afd.readable() => {
                let mut g = g?;
                match g.try_io(|f| sys::read(f.get_ref().as_raw_fd(), &mut buf)) {
                    Ok(r) => r,
                    Err(_would_block) => continue,
                }
            }
            _ = idle => {
                if let Some(s) = split.idle() {
                    deliver(reader, s, scans).await;
                }
                continue;
            }
        };
        let n = match n {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(e) => return Err(e),
        };
        last = Instant::now();
        let typed = match cfg.kind {
            QrUsbKind::Hid => {
                pending.extend_from_slice(&buf[..n]);
                let whole = pending.len() / EVENT_SIZE * EVENT_SIZE;
                let t = decode_events(&mut kb, &pending[..whole]);
                pending.drain(..whole);
                t
            }
            QrUsbKind::Serial => buf[..n].to_vec(),
        };
        for s in split.push(&typed) {
            deliver(reader, s, scans).await;
        }
    }
}

#[cfg(not(target_os = "linux"))]
async fn read_device(
    _reader: &str,
    _cfg: &QrUsbConfig,
    _scans: &mpsc::Sender<Scan>,
) -> std::io::Result<()> {
    Err(std::io::Error::other("USB QR readers need Linux"))
}

async fn deliver(reader: &str, data: Vec<u8>, scans: &mpsc::Sender<Scan>) {
    tracing::debug!(reader, bytes = data.len(), "QR scan from a USB reader");
    let scan = Scan {
        reader: reader.to_string(),
        data,
        via: "usb",
        reply: None,
    };
    if scans.send(scan).await.is_err() {
        tracing::warn!(reader, "QR scan dropped: the QR service has stopped");
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Path;

    /// `_IOW('E', 0x90, int)` (the request's C type differs between glibc and musl: cast
    /// where it is used).
    pub const EVIOCGRAB: u32 = 0x4004_4590;

    pub fn open(path: &Path, serial: bool) -> std::io::Result<OwnedFd> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("device path contains a NUL byte"))?;
        let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
        flags |= if serial {
            libc::O_RDWR | libc::O_NOCTTY
        } else {
            libc::O_RDONLY
        };
        // SAFETY: a valid C string; the returned fd is owned below.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: just opened, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn read(fd: i32, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn speed(baud: u32) -> std::io::Result<libc::speed_t> {
        Ok(match baud {
            1200 => libc::B1200,
            2400 => libc::B2400,
            4800 => libc::B4800,
            9600 => libc::B9600,
            19200 => libc::B19200,
            38400 => libc::B38400,
            57600 => libc::B57600,
            115200 => libc::B115200,
            230400 => libc::B230400,
            _ => {
                return Err(std::io::Error::other(format!(
                    "unsupported baud rate {baud}"
                )));
            }
        })
    }

    /// Raw 8N1 at `baud`: no echo, no line editing, no CR/LF translation.
    pub fn raw_mode(fd: &OwnedFd, baud: u32) -> std::io::Result<()> {
        let speed = speed(baud)?;
        // SAFETY: termios is plain data; tcgetattr fills it; the fd is open.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd.as_raw_fd(), &mut t) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::cfmakeraw(&mut t);
            t.c_cflag |= libc::CLOCAL | libc::CREAD;
            libc::cfsetispeed(&mut t, speed);
            libc::cfsetospeed(&mut t, speed);
            if libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn event(ty: u16, code: u16, value: i32) -> Vec<u8> {
        let mut r = vec![0u8; EVENT_SIZE - 8];
        r.extend(ty.to_ne_bytes());
        r.extend(code.to_ne_bytes());
        r.extend(value.to_ne_bytes());
        r
    }

    #[test]
    fn keys_decode_with_shift_and_caps() {
        let mut kb = Keyboard::default();
        let mut recs = Vec::new();
        // "Ab:1\n" typed as: shift-down a shift-up b, shift ; , 1, Enter; plus SYN events.
        for (c, v) in [(42, 1), (30, 1), (30, 0), (42, 0), (48, 1), (48, 0)] {
            recs.extend(event(EV_KEY, c, v));
            recs.extend(event(0, 0, 0));
        }
        for (c, v) in [
            (54, 1),
            (39, 1),
            (39, 0),
            (54, 0),
            (2, 1),
            (2, 0),
            (28, 1),
            (28, 0),
        ] {
            recs.extend(event(EV_KEY, c, v));
        }
        // Caps Lock on: letters upper, digits unchanged; with shift, letters lower.
        for (c, v) in [
            (58, 1),
            (58, 0),
            (16, 1),
            (16, 0),
            (42, 1),
            (16, 1),
            (16, 0),
            (42, 0),
        ] {
            recs.extend(event(EV_KEY, c, v));
        }
        assert_eq!(decode_events(&mut kb, &recs), b"Ab:1\nQq");
    }

    /// The key presses (code, shift) that type `c` on a US keyboard.
    fn keys_for(c: u8) -> (u16, bool) {
        for shift in [false, true] {
            for code in 1..100u16 {
                let mut kb = Keyboard {
                    shift_l: shift,
                    ..Default::default()
                };
                if kb.key(code, 1) == Some(c) {
                    return (code, shift);
                }
            }
        }
        panic!("no key types {c:?}")
    }

    /// What a wedge reader writes for `text`: press / release (with Shift) and SYN reports.
    fn typed(text: &str) -> Vec<u8> {
        let mut r = Vec::new();
        for &c in text.as_bytes() {
            let (code, shift) = keys_for(c);
            if shift {
                r.extend(event(EV_KEY, 42, 1));
            }
            r.extend(event(EV_KEY, code, 1));
            r.extend(event(0, 0, 0));
            r.extend(event(EV_KEY, code, 0));
            if shift {
                r.extend(event(EV_KEY, 42, 0));
            }
            r.extend(event(0, 0, 0));
        }
        r
    }

    async fn next(rx: &mut mpsc::Receiver<Scan>) -> String {
        let s = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a scan in time")
            .expect("the reader runs");
        assert_eq!(s.via, "usb");
        String::from_utf8(s.data).unwrap()
    }

    const CARD: &str = "BEGIN:VCARD\nVERSION:3.0\nN:Muster;Erika\nORG:6f1c2f5e-8d1a-4b7e-9a43-2c1d0e5f7a99\nNOTE:303\nEND:VCARD\n";

    /// A keyboard-wedge reader through a FIFO standing in for `/dev/input/eventN` (it cannot be
    /// grabbed: a warning), split records across writes, a scan without END:VCARD ended by the
    /// idle gap, and an unplug (the writer goes) followed by a replug.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hid_reader_through_a_fifo() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("event-kbd");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Read + write: opening never blocks, and the FIFO has a writer from the start.
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap()
        };
        let mut dev = open();
        let (tx, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let cfg = QrUsbConfig {
            kind: QrUsbKind::Hid,
            device: path.clone(),
            baud: 9600,
        };
        let task = tokio::spawn(run("usb-qr".into(), cfg, tx, cancel.clone()));
        let recs = typed(CARD);
        // Cut inside a record: the reader must carry the partial one over.
        let (a, b) = recs.split_at(EVENT_SIZE * 7 + 5);
        dev.write_all(a).unwrap();
        dev.write_all(b).unwrap();
        assert_eq!(next(&mut rx).await, CARD);
        // Not a vCard: ended by the reader going quiet.
        dev.write_all(&typed("Hello, World!")).unwrap();
        assert_eq!(next(&mut rx).await, "Hello, World!");
        // Unplugged (the device node goes), then plugged in again (a new node): the scan can
        // only arrive through a reopen.
        drop(dev);
        std::fs::remove_file(&path).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut dev = open();
        dev.write_all(&typed(CARD)).unwrap();
        assert_eq!(next(&mut rx).await, CARD);
        cancel.cancel();
        task.await.unwrap();
    }

    /// A USB-serial reader on a real pty: raw mode (no CR→NL translation, no echo), CRLF lines,
    /// scans split at END:VCARD even when two arrive in one write.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serial_reader_on_a_pty() {
        use std::io::Write;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let (mut master, mut slave) = (0, 0);
        // SAFETY: out-pointers to two ints; no name, termios or winsize.
        let r = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: just opened, owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: a buffer of its length.
        assert_eq!(
            unsafe { libc::ttyname_r(slave.as_raw_fd(), name.as_mut_ptr(), name.len()) },
            0
        );
        // SAFETY: NUL-terminated by ttyname_r.
        let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
            .to_str()
            .unwrap()
            .to_string();
        let (tx, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let cfg = QrUsbConfig {
            kind: QrUsbKind::Serial,
            device: path.into(),
            baud: 115200,
        };
        let task = tokio::spawn(run("serial-qr".into(), cfg, tx, cancel.clone()));
        // Wait until the reader has put the line in raw mode (canonical mode off).
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: termios is plain data filled by tcgetattr.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut t) }, 0);
            if t.c_lflag & libc::ICANON == 0 {
                break;
            }
            assert!(Instant::now() < end, "the reader never set raw mode");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let crlf = CARD.replace('\n', "\r\n");
        let mut m = std::fs::File::from(master);
        m.write_all(format!("{crlf}{crlf}").as_bytes()).unwrap();
        let want = crlf.trim_end_matches('\n');
        assert_eq!(
            next(&mut rx).await,
            want,
            "raw: CR kept, nothing translated"
        );
        assert_eq!(next(&mut rx).await, want);
        cancel.cancel();
        task.await.unwrap();
        drop(slave);
    }

    #[test]
    fn scans_end_at_end_vcard_or_idle() {
        let mut s = Splitter::default();
        let got = s.push(b"\r\nBEGIN:VCARD\r\nVERSION:3.0\r\nEND:VCARD\r\nBEGIN:VCARD\nend:vcard");
        assert_eq!(
            got,
            vec![b"BEGIN:VCARD\r\nVERSION:3.0\r\nEND:VCARD\r".to_vec()]
        );
        // The second has no line end yet: it ends when the reader goes quiet.
        assert!(s.push(b"").is_empty());
        assert_eq!(s.idle().unwrap(), b"BEGIN:VCARD\nend:vcard".to_vec());
        assert!(s.idle().is_none());
    }
}
