//! A small RTSP/1.0 server streaming an H.264 test pattern, so `gatehouse demo` and the tests
//! have a camera that streams with nothing installed.
//!
//! A short loop of a moving test pattern (colour bars, a moving box, the frame number in
//! binary) is encoded once with openh264 — per [`StreamConfig`], cached for the whole process,
//! so many simulators cost one encode — and replayed in a loop to every client from shared
//! memory, with continuous RTP timestamps (90 kHz) and sequence numbers per client. The loop
//! length is a whole number of GOPs, so it restarts at an IDR.
//!
//! Shaped like a Hikvision camera (protocols.md §2 "RTSP"): `/Streaming/Channels/101` (main),
//! `102` (sub), NVR style `<N>01`/`<N>02`; Digest authentication without `qop` (as Hikvision's
//! RTSP challenge); the SDP carries the H.264 track (`trackID=1`) **and** an ONVIF metadata
//! track (`trackID=3`) that clients should not need to set up. Interleaved TCP only
//! (`461 Unsupported Transport` for UDP). A sender report goes out on the odd channel every
//! 5 s.
//!
//! What retina 0.4 expects, found while writing this (and why the code does what it does):
//! - relative `a=control:trackID=1` is joined to `Content-Base` (else the request URL);
//!   retina inserts a `/` when the base lacks one, but RFC 2326 resolution does not, so the
//!   base ends with `/` here. Session-level `a=control:*` means the base itself.
//! - `RTP-Info`'s `seq` and `rtptime` become retina's initial expectations: they must be those
//!   of the first packet sent, or retina reports loss / a timestamp jump at the start.
//! - the `ssrc` in the SETUP `Transport` header must be the one on the RTP and RTCP packets,
//!   or retina rejects every packet as a stale session's (it ignores values of ≤ 4 digits).
//! - `Session: <id>;timeout=60`: retina sends a keepalive every `min(timeout, 60) / 2` s,
//!   with GET_PARAMETER/SET_PARAMETER only if OPTIONS listed them in `Public`, else OPTIONS.
//! - retina sends `Range: npt=0.000-` on PLAY; a live source ignores it (GStreamer seeks on it
//!   unless the media is marked not seekable).
//! - `RTP-Info` must not name streams that were not set up, or retina logs a warning;
//!   `interleaved=a-b` must be adjacent channels.
//! - over TCP (policy `Auto`) a dropped retina session tries a single TEARDOWN on its
//!   connection and then closes it: a session must also end when its connection closes.
//! - the ONVIF `m=application` track shows in `Session::streams()` (media `application`,
//!   encoding `vnd.onvif.metadata`) and needs no SETUP; ffmpeg/ffprobe do set it up, so
//!   SETUP of `trackID=3` is accepted (nothing is sent on it).

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::hikvision::{md5_hex, params};

/// One encoded stream: size, rate, GOP and the length of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamConfig {
    pub width: u16,
    pub height: u16,
    pub fps: u32,
    /// Frames from one IDR to the next.
    pub gop: u32,
    /// Length of the loop in frames is this many seconds, rounded up to whole GOPs.
    pub seconds: u32,
    pub bitrate_bps: u32,
    /// Sensor noise on the luma, ± this much per pixel (0: none). A camera at night with
    /// the gain up: every pixel changes every frame, so P-frames are big where the clean
    /// pattern's are a few hundred bytes. Measured at 25 fps: 12 at 320×180 ≈ 2 Mbit/s, 10 at
    /// 640×360 ≈ 6 Mbit/s; 4 is quantized away (the encoder's QP is fixed at 26–30).
    pub noise: u8,
}

impl StreamConfig {
    /// Main stream: 640×360, 10 fps, a keyframe every second.
    pub fn main() -> StreamConfig {
        StreamConfig {
            width: 640,
            height: 360,
            fps: 10,
            gop: 10,
            seconds: 3,
            bitrate_bps: 400_000,
            noise: 0,
        }
    }

    /// Sub stream: 320×180, 10 fps, a keyframe every second.
    pub fn sub() -> StreamConfig {
        StreamConfig {
            width: 320,
            height: 180,
            bitrate_bps: 150_000,
            ..StreamConfig::main()
        }
    }

    fn frames(&self) -> usize {
        let n = (self.seconds.max(1) * self.fps).div_ceil(self.gop) * self.gop;
        n as usize
    }

    fn validate(&self) -> io::Result<()> {
        let ok = self.width.is_multiple_of(2)
            && self.height.is_multiple_of(2)
            && (16..=1920).contains(&self.width)
            && (16..=1088).contains(&self.height)
            && (1..=60).contains(&self.fps)
            && (1..=600).contains(&self.gop)
            && self.seconds <= 60;
        if ok {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unusable RTSP simulator stream {self:?}"),
            ))
        }
    }
}

#[derive(Debug, Clone)]
pub struct RtspSimConfig {
    pub bind: SocketAddr,
    pub username: String,
    pub password: String,
    pub realm: String,
    pub main: StreamConfig,
    pub sub: StreamConfig,
    /// Channels served (`/Streaming/Channels/<N>01` for N in 1..=channels): 1 for a camera.
    pub channels: u32,
    /// The `timeout=` of the Session header. A connection that sends nothing for this long
    /// plus 10 s is closed.
    pub session_timeout: Duration,
    /// `None`: every PLAY starts the loop at an IDR (a pipeline started for the client).
    /// `Some(d)`: a camera that has been encoding for `d` when the simulator starts and goes
    /// on whether or not anyone watches, as real ones do: a new client joins wherever the
    /// GOP is and waits for the next IDR (unless it asks for one: `requestKeyFrame`).
    pub running_since: Option<Duration>,
    /// The camera's 90 kHz clock runs this many parts per million fast (negative: slow), as
    /// cheap camera oscillators do: at -2000, a 2 s GOP (50 frames at 25 fps) spans 1.996 s
    /// of RTP time.
    pub clock_ppm: i32,
    /// Each frame's RTP timestamp is off by up to ± this many 90 kHz ticks (a camera that
    /// stamps frames when its encoder finishes them, not on a grid). 0: exact.
    pub jitter_ticks: u32,
}

impl Default for RtspSimConfig {
    fn default() -> Self {
        RtspSimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: "admin".into(),
            password: "sim-hik-pass".into(),
            realm: "IP Camera(SIM01)".into(),
            main: StreamConfig::main(),
            sub: StreamConfig::sub(),
            channels: 1,
            session_timeout: Duration::from_secs(60),
            running_since: None,
            clock_ppm: 0,
            jitter_ticks: 0,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct RtspStats {
    pub connections: u64,
    pub requests: u64,
    /// 401 answers (first challenges and bad credentials).
    pub unauthorized: u64,
    /// Requests with credentials that did not check out.
    pub bad_logins: u64,
    pub bad_requests: u64,
    /// Sessions created by SETUP and not yet ended by TEARDOWN or a closed connection.
    pub sessions_active: u64,
    pub sessions: u64,
    pub plays: u64,
    pub teardowns: u64,
    /// Frames not sent because a client's queue was full (it then resumes at an IDR).
    pub frames_dropped: u64,
    pub frames_sent: u64,
    /// ISAPI `requestKeyFrame` calls that reached this server (via [`RtspSim::request_key_frame`]).
    pub key_frame_requests: u64,
}

/// A pre-encoded loop, shared by every client.
struct Clip {
    cfg: StreamConfig,
    sps: Bytes,
    pps: Bytes,
    frames: Vec<Frame>,
    /// What encoding it cost (once per process).
    encoded_in: Duration,
    /// With `noise`: the same loop without it, for [`RtspSim::still`].
    still: Option<Arc<Clip>>,
}

struct Frame {
    /// RTP payloads in order (SPS, PPS before an IDR; FU-A fragments); the last gets the marker.
    payloads: Vec<Bytes>,
    idr: bool,
}

/// Largest RTP payload; bigger NALs go as FU-A fragments.
const MAX_PAYLOAD: usize = 1400;

type ClipCell = Arc<OnceLock<Result<Arc<Clip>, String>>>;

/// The process-wide cache: one encode per stream configuration.
fn clip(cfg: StreamConfig) -> io::Result<Arc<Clip>> {
    static CLIPS: OnceLock<Mutex<HashMap<StreamConfig, ClipCell>>> = OnceLock::new();
    let cell = CLIPS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(cfg)
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let mut c = encode(cfg)?;
        if cfg.noise > 0 {
            let clean = StreamConfig { noise: 0, ..cfg };
            c.still = Some(clip(clean).map_err(|e| e.to_string())?);
        }
        Ok(Arc::new(c))
    })
    .clone()
    .map_err(|e| io::Error::other(format!("encoding the test pattern: {e}")))
}

/// BT.601 limited range.
fn yuv(rgb: [u8; 3]) -> [u8; 3] {
    let [r, g, b] = rgb.map(f32::from);
    [
        (16.0 + 0.257 * r + 0.504 * g + 0.098 * b) as u8,
        (128.0 - 0.148 * r - 0.291 * g + 0.439 * b) as u8,
        (128.0 + 0.439 * r - 0.368 * g - 0.071 * b) as u8,
    ]
}

/// Frame `i` of `n`: colour bars, a white box moving across the bottom third, and the frame
/// number as 8 binary squares top left (so consecutive frames differ).
fn pattern(w: usize, h: usize, i: usize, n: usize) -> Vec<u8> {
    use super::hikvision::BARS;
    let mut buf = vec![0u8; w * h * 3 / 2];
    let (y_plane, uv) = buf.split_at_mut(w * h);
    let (u_plane, v_plane) = uv.split_at_mut(w * h / 4);
    let mut fill = |x0: usize, y0: usize, x1: usize, y1: usize, c: [u8; 3]| {
        let c = yuv(c);
        for y in y0..y1.min(h) {
            y_plane[y * w + x0..y * w + x1.min(w)].fill(c[0]);
        }
        for y in y0 / 2..y1.min(h) / 2 {
            u_plane[y * w / 2 + x0 / 2..y * w / 2 + x1.min(w) / 2].fill(c[1]);
            v_plane[y * w / 2 + x0 / 2..y * w / 2 + x1.min(w) / 2].fill(c[2]);
        }
    };
    let top = h * 2 / 3 / 2 * 2;
    for (k, c) in BARS.iter().enumerate() {
        let x0 = (w * k / BARS.len()) & !1;
        let x1 = (w * (k + 1) / BARS.len()) & !1;
        fill(x0, 0, x1, top, *c);
    }
    fill(0, top, w, h, [16, 16, 16]);
    let b = (h / 6).max(2) & !1;
    let x = ((w - b) * i / n.max(1)) & !1;
    let y = (top + (h - top - b) / 2) & !1;
    fill(x, y, x + b, y + b, [235, 235, 235]);
    let s = (h / 24).max(2) & !1;
    for bit in 0..8 {
        let c = if i >> (7 - bit) & 1 == 1 {
            [235, 235, 235]
        } else {
            [16, 16, 16]
        };
        fill(s + bit * s * 2, s, s + bit * s * 2 + s, 2 * s, c);
    }
    buf
}

/// Deterministic (per frame index) noise of ± `amp` on a plane.
fn add_noise(plane: &mut [u8], amp: u8, frame: usize) {
    if amp == 0 {
        return;
    }
    let mut x = (frame as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let span = 2 * u64::from(amp) + 1;
    for p in plane {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let d = (x % span) as i16 - i16::from(amp);
        *p = (i16::from(*p) + d).clamp(16, 235) as u8;
    }
}

fn strip_start_code(nal: &[u8]) -> &[u8] {
    nal.strip_prefix(&[0, 0, 0, 1][..])
        .or_else(|| nal.strip_prefix(&[0, 0, 1][..]))
        .unwrap_or(nal)
}

/// RFC 6184: a single NAL unit packet, or FU-A fragments for NALs over [`MAX_PAYLOAD`].
fn packetize(nal: &[u8], out: &mut Vec<Bytes>) {
    if nal.len() <= MAX_PAYLOAD {
        out.push(Bytes::copy_from_slice(nal));
        return;
    }
    let indicator = (nal[0] & 0xE0) | 28;
    let ty = nal[0] & 0x1F;
    let chunks: Vec<&[u8]> = nal[1..].chunks(MAX_PAYLOAD - 2).collect();
    let last = chunks.len() - 1;
    for (k, c) in chunks.into_iter().enumerate() {
        let mut p = Vec::with_capacity(c.len() + 2);
        p.push(indicator);
        p.push(u8::from(k == 0) << 7 | u8::from(k == last) << 6 | ty);
        p.extend_from_slice(c);
        out.push(p.into());
    }
}

fn encode(cfg: StreamConfig) -> Result<Clip, String> {
    use openh264::encoder::{
        BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, QpRange,
        RateControlMode,
    };
    use openh264::formats::YUVBuffer;
    let t0 = Instant::now();
    let config = EncoderConfig::new()
        .max_frame_rate(FrameRate::from_hz(cfg.fps as f32))
        .bitrate(BitRate::from_bps(cfg.bitrate_bps))
        // Fixed QP: rate control would want frame skipping (and says so on stderr).
        .rate_control_mode(RateControlMode::Off)
        .qp(QpRange::new(26, 30))
        .skip_frames(false)
        .scene_change_detect(false)
        .num_threads(1)
        .intra_frame_period(IntraFramePeriod::from_num_frames(cfg.gop));
    let mut enc = Encoder::with_api_config(openh264::OpenH264API::from_source(), config)
        .map_err(|e| e.to_string())?;
    let (w, h) = (cfg.width as usize, cfg.height as usize);
    let n = cfg.frames();
    let (mut sps, mut pps) = (None, None);
    let mut raw = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 && i.is_multiple_of(cfg.gop as usize) {
            enc.force_intra_frame();
        }
        let mut yuv = pattern(w, h, i, n);
        add_noise(&mut yuv[..w * h], cfg.noise, i);
        let src = YUVBuffer::from_vec(yuv, w, h);
        let ts = openh264::Timestamp::from_millis(i as u64 * 1000 / cfg.fps as u64);
        let bs = enc.encode_at(&src, ts).map_err(|e| e.to_string())?;
        let idr = bs.frame_type() == FrameType::IDR;
        if idr != i.is_multiple_of(cfg.gop as usize) {
            return Err(format!(
                "frame {i} came out {:?} (GOP {})",
                bs.frame_type(),
                cfg.gop
            ));
        }
        let mut nals = Vec::new();
        for l in 0..bs.num_layers() {
            let Some(layer) = bs.layer(l) else { continue };
            for k in 0..layer.nal_count() {
                let Some(nal) = layer.nal_unit(k).map(strip_start_code) else {
                    continue;
                };
                match nal.first().map(|b| b & 0x1F) {
                    None => {}
                    Some(7) => sps = Some(Bytes::copy_from_slice(nal)),
                    Some(8) => pps = Some(Bytes::copy_from_slice(nal)),
                    Some(_) => nals.push(nal.to_vec()),
                }
            }
        }
        raw.push((idr, nals));
    }
    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err("the encoder wrote no SPS/PPS".into());
    };
    let frames = raw
        .into_iter()
        .map(|(idr, nals)| {
            let mut payloads = Vec::new();
            if idr {
                // Parameter sets before every IDR, as cameras do (and the loop restarts at one).
                payloads.push(sps.clone());
                payloads.push(pps.clone());
            }
            for nal in &nals {
                packetize(nal, &mut payloads);
            }
            Frame { payloads, idr }
        })
        .collect();
    debug!(?cfg, elapsed = ?t0.elapsed(), "encoded the RTSP test pattern");
    Ok(Clip {
        cfg,
        sps,
        pps,
        frames,
        encoded_in: t0.elapsed(),
        still: None,
    })
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

struct Inner {
    cfg: RtspSimConfig,
    main: Arc<Clip>,
    sub: Arc<Clip>,
    stats: Mutex<RtspStats>,
    ids: AtomicU64,
    started: Instant,
    /// Per stream id (`101`, `102`…): how many key frames were asked for. A streamer that
    /// sees the count move sends an IDR next.
    key_requests: Mutex<HashMap<u32, u64>>,
    /// [`RtspSim::freeze`].
    frozen: std::sync::atomic::AtomicBool,
    /// [`RtspSim::still`].
    still: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn stat(&self, f: impl FnOnce(&mut RtspStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn id(&self) -> u64 {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        (n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ rand::random::<u64>()
    }
}

/// Asks a simulator's streams for key frames; see [`RtspSim::request_key_frame`].
#[derive(Clone)]
pub struct KeyFrames(Arc<Inner>);

impl KeyFrames {
    pub fn request(&self, id: u32) -> bool {
        let ch = id / 100;
        if !(1..=self.0.cfg.channels).contains(&ch) || !(1..=2).contains(&(id % 100)) {
            return false;
        }
        *lock_map(&self.0.key_requests).entry(id).or_default() += 1;
        self.0.stat(|s| s.key_frame_requests += 1);
        true
    }
}

/// The RTSP simulator. Dropping it (or [`RtspSim::stop`]) ends every task and connection.
pub struct RtspSim {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl RtspSim {
    /// Binds (port 0 by default), encodes the main and sub loops (once per process per
    /// [`StreamConfig`]) and starts serving.
    pub async fn start(cfg: RtspSimConfig) -> io::Result<RtspSim> {
        cfg.main.validate()?;
        cfg.sub.validate()?;
        let listener = TcpListener::bind(cfg.bind).await?;
        let addr = listener.local_addr()?;
        let (m, s) = (cfg.main, cfg.sub);
        let (main, sub) =
            tokio::task::spawn_blocking(move || Ok::<_, io::Error>((clip(m)?, clip(s)?)))
                .await
                .map_err(io::Error::other)??;
        let inner = Arc::new(Inner {
            cfg,
            main,
            sub,
            stats: Default::default(),
            ids: AtomicU64::new(0),
            started: Instant::now(),
            key_requests: Mutex::new(HashMap::new()),
            frozen: Default::default(),
            still: Default::default(),
        });
        let i = inner.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set: aborting this task aborts them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    a = listener.accept() => match a {
                        Ok((sock, peer)) => {
                            let i = i.clone();
                            conns.spawn(async move {
                                if let Err(e) = serve(i, sock).await {
                                    debug!(%peer, error = %e, "RTSP connection ended");
                                }
                            });
                        }
                        Err(e) => {
                            warn!(error = %e, "RTSP simulator: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(RtspSim { addr, inner, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `rtsp://<addr><path>`, e.g. `url("/Streaming/Channels/101")`.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://{}{path}", self.addr)
    }

    pub fn config(&self) -> &RtspSimConfig {
        &self.inner.cfg
    }

    /// With [`RtspSimConfig::running_since`]: how long the camera has been encoding, i.e. where
    /// a client joining now starts in the loop (its GOP phase: `position % (gop / fps)`).
    pub fn position(&self) -> Option<Duration> {
        self.inner
            .cfg
            .running_since
            .map(|d| d + self.inner.started.elapsed())
    }

    pub fn stats(&self) -> RtspStats {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What encoding the main and sub loops cost. Paid once per process per
    /// [`StreamConfig`] (by the first simulator to start with it; later ones reuse it).
    pub fn encode_time(&self) -> Duration {
        self.inner.main.encoded_in + self.inner.sub.encoded_in
    }

    /// Bytes of encoded video per loop (main, sub).
    pub fn clip_bytes(&self) -> (usize, usize) {
        let n = |c: &Clip| {
            c.frames
                .iter()
                .flat_map(|f| &f.payloads)
                .map(|p| p.len())
                .sum()
        };
        (n(&self.inner.main), n(&self.inner.sub))
    }

    /// What ISAPI `PUT /ISAPI/Streaming/channels/<id>/requestKeyFrame` does on a camera: the
    /// next frame of stream `id` (`101`, `102`, `N01`…) to every client is an IDR. False for
    /// a stream this server does not have.
    pub fn request_key_frame(&self, id: u32) -> bool {
        self.key_frames().request(id)
    }

    /// A handle for [`RtspSim::request_key_frame`] (the ISAPI side of the same device).
    pub fn key_frames(&self) -> KeyFrames {
        KeyFrames(self.inner.clone())
    }

    /// A camera that stops sending and keeps its connections open (a stalled encoder; a
    /// "smart codec" camera on a still scene sends next to nothing): while frozen, no frame
    /// and no sender report goes out. The clock runs on, so the first frame after a thaw
    /// carries a timestamp as far on as the time frozen.
    pub fn freeze(&self, frozen: bool) {
        self.inner.frozen.store(frozen, Ordering::Relaxed);
    }

    /// The scene goes still (the lights go off, nothing moves, the noise is gone): from the
    /// next keyframe on, a stream with `noise` streams the same pattern without it, so its
    /// bitrate falls to a few kbit/s in one step, as a VBR camera's does. `false`: back to
    /// the noisy loop at the next keyframe.
    pub fn still(&self, still: bool) {
        self.inner.still.store(still, Ordering::Relaxed);
    }

    /// Stops listening and ends every connection.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for RtspSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Aborts the task when dropped (connection tasks are aborted as a whole).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Out {
    Bytes(Bytes),
    Close,
}

struct Request {
    method: String,
    url: String,
    headers: HashMap<String, String>,
}

impl Request {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).map(String::as_str)
    }
}

const MAX_LINE: u64 = 8192;
const MAX_HEADERS: usize = 64;
const MAX_BODY: usize = 65536;

enum Read {
    Request(Request),
    /// Interleaved data from the client (RTCP receiver reports): skipped.
    Data,
    Bad(String),
    Eof,
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.take(MAX_LINE).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request line too long or truncated",
        ));
    }
    Ok(Some(String::from_utf8_lossy(&buf).trim_end().to_string()))
}

async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Read> {
    let first = match r.fill_buf().await?.first() {
        None => return Ok(Read::Eof),
        Some(b) => *b,
    };
    if first == b'$' {
        let mut hdr = [0u8; 4];
        r.read_exact(&mut hdr).await?;
        let len = u16::from_be_bytes([hdr[2], hdr[3]]) as u64;
        tokio::io::copy(&mut r.take(len), &mut tokio::io::sink()).await?;
        return Ok(Read::Data);
    }
    let mut line = match read_line(r).await? {
        None => return Ok(Read::Eof),
        Some(l) => l,
    };
    // Tolerate blank lines between requests.
    while line.is_empty() {
        line = match read_line(r).await? {
            None => return Ok(Read::Eof),
            Some(l) => l,
        };
    }
    let mut headers = HashMap::new();
    for _ in 0..=MAX_HEADERS {
        let Some(h) = read_line(r).await? else {
            return Ok(Read::Eof);
        };
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    if headers.len() > MAX_HEADERS {
        return Ok(Read::Bad("too many headers".into()));
    }
    if let Some(len) = headers.get("content-length") {
        match len.parse::<usize>() {
            Ok(n) if n <= MAX_BODY => {
                tokio::io::copy(&mut r.take(n as u64), &mut tokio::io::sink()).await?;
            }
            _ => return Ok(Read::Bad(format!("bad Content-Length {len:?}"))),
        }
    }
    let parts: Vec<&str> = line.split_whitespace().collect();
    match parts[..] {
        [m, u, v] if v.starts_with("RTSP/1.") => Ok(Read::Request(Request {
            method: m.to_ascii_uppercase(),
            url: u.to_string(),
            headers,
        })),
        _ => Ok(Read::Bad(format!("bad request line {line:?}"))),
    }
}

/// What a request URL points at.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    /// `rtsp://host:port` as the client wrote it (without credentials).
    origin: String,
    /// `101`, `102`, `401`…
    id: u32,
    main: bool,
    /// `trackID=N` in the URL.
    track: Option<u32>,
}

impl Target {
    fn base(&self) -> String {
        format!("{}/Streaming/Channels/{}/", self.origin, self.id)
    }
}

fn parse_url(url: &str, channels: u32) -> Result<Target, u16> {
    let rest = url
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("rtsp://"))
        .map(|_| &url[7..])
        .ok_or(400u16)?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority.is_empty() {
        return Err(400);
    }
    let path = path.split('?').next().unwrap_or("").to_ascii_lowercase();
    let rest = path.strip_prefix("/streaming/channels/").ok_or(404u16)?;
    let (id, track) = match rest.split_once('/') {
        None => (rest, None),
        Some((id, "")) => (id, None),
        Some((id, t)) => {
            let n = t
                .strip_prefix("trackid=")
                .and_then(|n| n.trim_end_matches('/').parse::<u32>().ok())
                .filter(|n| *n == 1 || *n == 3)
                .ok_or(404u16)?;
            (id, Some(n))
        }
    };
    if id.len() < 3 || id.len() > 5 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(404);
    }
    let n: u32 = id.parse().map_err(|_| 404u16)?;
    let (ch, st) = (n / 100, n % 100);
    if !(1..=channels).contains(&ch) || !(st == 1 || st == 2) {
        return Err(404);
    }
    Ok(Target {
        origin: format!("rtsp://{authority}"),
        id: n,
        main: st == 1,
        track,
    })
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        _ => "Not Implemented",
    }
}

struct Response {
    code: u16,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, String)>,
}

impl Response {
    fn new(code: u16) -> Response {
        Response {
            code,
            headers: Vec::new(),
            body: None,
        }
    }

    fn header(mut self, k: &'static str, v: impl Into<String>) -> Response {
        self.headers.push((k, v.into()));
        self
    }

    fn to_bytes(&self, cseq: Option<&str>) -> Bytes {
        let mut s = format!("RTSP/1.0 {} {}\r\n", self.code, reason(self.code));
        if let Some(c) = cseq {
            s.push_str(&format!("CSeq: {c}\r\n"));
        }
        s.push_str("Server: Hikvision-Webs\r\n");
        s.push_str(&format!(
            "Date: {}\r\n",
            chrono::Utc::now().format("%a, %b %d %Y %H:%M:%S GMT")
        ));
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        match &self.body {
            Some((ctype, body)) => s.push_str(&format!(
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => s.push_str("\r\n"),
        }
        Bytes::from(s)
    }
}

/// Per-client RTP state: SSRC, sequence numbers and timestamps continue across loops.
#[derive(Clone)]
struct Rtp {
    ssrc: u32,
    seq: u16,
    ts0: u32,
    packets: u32,
    octets: u32,
    /// [`RtspSimConfig::clock_ppm`] and [`RtspSimConfig::jitter_ticks`].
    ppm: i32,
    jitter: u32,
}

impl Rtp {
    fn ts(&self, frame: u64, fps: u32) -> u32 {
        let exact = (frame * 90_000 / u64::from(fps)) as i64;
        let skewed = exact + exact * i64::from(self.ppm) / 1_000_000;
        // A fixed pseudo-random offset per frame; none on frame 0 (RTP-Info's rtptime).
        let j = i64::from(self.jitter);
        let off = if j == 0 || frame == 0 {
            0
        } else {
            (frame.wrapping_mul(2_654_435_761) >> 8) as i64 % (2 * j + 1) - j
        };
        self.ts0.wrapping_add((skewed + off) as u32)
    }

    /// The interleaved RTP packets of one frame; `self.seq` etc. advance only when `commit`.
    fn frame(&self, f: &Frame, ts: u32, channel: u8) -> (Bytes, Rtp) {
        let mut next = self.clone();
        let len: usize = f.payloads.iter().map(|p| p.len() + 16).sum();
        let mut b = BytesMut::with_capacity(len);
        let last = f.payloads.len().saturating_sub(1);
        for (k, p) in f.payloads.iter().enumerate() {
            b.put_u8(b'$');
            b.put_u8(channel);
            b.put_u16((12 + p.len()) as u16);
            b.put_u8(0x80);
            b.put_u8(u8::from(k == last) << 7 | 96);
            b.put_u16(next.seq);
            b.put_u32(ts);
            b.put_u32(next.ssrc);
            b.put_slice(p);
            next.seq = next.seq.wrapping_add(1);
            next.packets = next.packets.wrapping_add(1);
            next.octets = next.octets.wrapping_add(p.len() as u32);
        }
        (b.freeze(), next)
    }

    /// An RTCP sender report (RFC 3550 §6.4.1) on `channel`.
    fn sender_report(&self, ts: u32, channel: u8) -> Bytes {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ntp_secs = now.as_secs() + 2_208_988_800;
        let ntp_frac = (u64::from(now.subsec_nanos()) << 32) / 1_000_000_000;
        let mut b = BytesMut::with_capacity(32);
        b.put_u8(b'$');
        b.put_u8(channel);
        b.put_u16(28);
        b.put_u8(0x80);
        b.put_u8(200);
        b.put_u16(6);
        b.put_u32(self.ssrc);
        b.put_u32(ntp_secs as u32);
        b.put_u32(ntp_frac as u32);
        b.put_u32(ts);
        b.put_u32(self.packets);
        b.put_u32(self.octets);
        b.freeze()
    }
}

struct Session {
    id: String,
    target: Target,
    video_channel: Option<u8>,
    rtp: Rtp,
    streamer: Option<AbortOnDrop>,
}

fn lock_map<K, V>(m: &Mutex<HashMap<K, V>>) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn stream(
    inner: Arc<Inner>,
    clip: Arc<Clip>,
    mut rtp: Rtp,
    channel: u8,
    stream_id: u32,
    tx: mpsc::Sender<Out>,
) {
    let fps = clip.cfg.fps;
    let len = clip.frames.len() as u64;
    let gop = u64::from(clip.cfg.gop);
    // Burst (the default) catches up after a late wake-up, so the stream stays real time.
    let mut tick = tokio::time::interval(Duration::from_secs(1) / fps);
    let sr_every = u64::from(fps) * 5;
    let mut need_idr = false;
    // Where in the loop this client joins: at the start, or where a running camera is now.
    let mut k = inner
        .cfg
        .running_since
        .map(|d| ((d + inner.started.elapsed()).as_secs_f64() * f64::from(fps)) as u64)
        .unwrap_or(0);
    let key_requests = || lock_map(&inner.key_requests).get(&stream_id).copied();
    let mut asked = key_requests();
    let mut cur = clip.clone();
    for n in 0u64.. {
        tick.tick().await;
        if inner.frozen.load(Ordering::Relaxed) {
            continue;
        }
        let now_asked = key_requests();
        if now_asked != asked {
            asked = now_asked;
            // The encoder starts a GOP now: here, the loop jumps to its next IDR (the
            // picture skips ahead less than a GOP; the timeline goes on).
            if !k.is_multiple_of(gop) {
                k += gop - k % gop;
            }
        }
        if k.is_multiple_of(gop) {
            cur = match (&clip.still, inner.still.load(Ordering::Relaxed)) {
                (Some(s), true) => s.clone(),
                _ => clip.clone(),
            };
        }
        let f = &cur.frames[(k % len) as usize];
        k += 1;
        let ts = rtp.ts(n, fps);
        if need_idr && !f.idr {
            inner.stat(|s| s.frames_dropped += 1);
            continue;
        }
        let (data, next) = rtp.frame(f, ts, channel);
        match tx.try_send(Out::Bytes(data)) {
            Ok(()) => {
                rtp = next;
                need_idr = false;
                inner.stat(|s| s.frames_sent += 1);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A slow client: drop, and resume at the next IDR so it can still decode.
                need_idr = true;
                inner.stat(|s| s.frames_dropped += 1);
                continue;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
        if n.is_multiple_of(sr_every) {
            let _ = tx.try_send(Out::Bytes(rtp.sender_report(ts, channel + 1)));
        }
    }
}

async fn writer(mut w: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Out>) {
    while let Some(m) = rx.recv().await {
        match m {
            Out::Bytes(b) => {
                if w.write_all(&b).await.is_err() {
                    return;
                }
            }
            Out::Close => {
                let _ = w.shutdown().await;
                return;
            }
        }
    }
}

struct Conn {
    inner: Arc<Inner>,
    nonce: String,
    session: Option<Session>,
    tx: mpsc::Sender<Out>,
}

async fn serve(inner: Arc<Inner>, sock: TcpStream) -> io::Result<()> {
    inner.stat(|s| s.connections += 1);
    let _ = sock.set_nodelay(true);
    let (r, w) = sock.into_split();
    // About a second of frames: a client that reads slower than that loses frames, not memory.
    let cap = (inner.cfg.main.fps.max(inner.cfg.sub.fps) as usize).max(8);
    let (tx, rx) = mpsc::channel(cap);
    let writer = tokio::spawn(writer(w, rx));
    let mut conn = Conn {
        nonce: format!("{:016x}{:016x}", inner.id(), inner.id()),
        inner: inner.clone(),
        session: None,
        tx,
    };
    let idle = inner.cfg.session_timeout + Duration::from_secs(10);
    let mut r = BufReader::new(r);
    let result = loop {
        let req = match tokio::time::timeout(idle, read_request(&mut r)).await {
            Err(_) => break Ok(()),
            Ok(Err(e)) => break Err(e),
            Ok(Ok(Read::Eof)) => break Ok(()),
            Ok(Ok(Read::Data)) => continue,
            Ok(Ok(Read::Bad(why))) => {
                warn!(%why, "RTSP simulator: bad request");
                inner.stat(|s| s.bad_requests += 1);
                let _ = conn
                    .tx
                    .send(Out::Bytes(Response::new(400).to_bytes(None)))
                    .await;
                continue;
            }
            Ok(Ok(Read::Request(req))) => req,
        };
        inner.stat(|s| s.requests += 1);
        let (resp, close) = conn.handle(&req);
        if resp.code == 400 {
            warn!(method = %req.method, url = %req.url, "RTSP simulator: bad request");
            inner.stat(|s| s.bad_requests += 1);
        }
        let bytes = resp.to_bytes(req.header("cseq"));
        if conn.tx.send(Out::Bytes(bytes)).await.is_err() {
            break Ok(());
        }
        if resp.code == 200 && req.method == "PLAY" {
            conn.play();
        }
        if close {
            let _ = conn.tx.send(Out::Close).await;
            break Ok(());
        }
    };
    if let Some(s) = conn.session.take() {
        drop(s.streamer);
        inner.stat(|s| s.sessions_active = s.sessions_active.saturating_sub(1));
    }
    drop(conn);
    // Let the writer flush what is queued (e.g. the TEARDOWN answer), but not forever.
    let mut writer = AbortOnDrop(writer);
    let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer.0).await;
    result
}

impl Conn {
    fn authorized(&self, req: &Request) -> bool {
        let cfg = &self.inner.cfg;
        let Some(h) = req.header("authorization") else {
            return false;
        };
        let p = params(h);
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        let ha1 = md5_hex(&format!(
            "{}:{}:{}",
            get("username"),
            cfg.realm,
            cfg.password
        ));
        let ha2 = md5_hex(&format!("{}:{}", req.method, get("uri")));
        let want = if p.contains_key("qop") {
            md5_hex(&format!(
                "{ha1}:{}:{}:{}:{}:{ha2}",
                get("nonce"),
                get("nc"),
                get("cnonce"),
                get("qop")
            ))
        } else {
            md5_hex(&format!("{ha1}:{}:{ha2}", get("nonce")))
        };
        let ok = get("username") == cfg.username
            && get("realm") == cfg.realm
            && get("nonce") == self.nonce
            && get("response") == want;
        if !ok {
            self.inner.stat(|s| s.bad_logins += 1);
            debug!(user = get("username"), "RTSP simulator: bad credentials");
        }
        ok
    }

    fn challenge(&self) -> Response {
        self.inner.stat(|s| s.unauthorized += 1);
        Response::new(401).header(
            "WWW-Authenticate",
            format!(
                "Digest realm=\"{}\", nonce=\"{}\", stale=\"FALSE\"",
                self.inner.cfg.realm, self.nonce
            ),
        )
    }

    fn clip(&self, t: &Target) -> &Arc<Clip> {
        if t.main {
            &self.inner.main
        } else {
            &self.inner.sub
        }
    }

    /// Checks the Session header against ours.
    fn session_ok(&self, req: &Request) -> Result<&Session, u16> {
        let s = self.session.as_ref().ok_or(454u16)?;
        let given = req.header("session").ok_or(454u16)?;
        let id = given.split(';').next().unwrap_or("").trim();
        if id == s.id { Ok(s) } else { Err(454) }
    }

    fn session_header(&self) -> String {
        let id = self.session.as_ref().map(|s| s.id.as_str()).unwrap_or("");
        format!(
            "{id};timeout={}",
            self.inner.cfg.session_timeout.as_secs().max(1)
        )
    }

    /// The answer, and whether to close the connection after it.
    fn handle(&mut self, req: &Request) -> (Response, bool) {
        if req.header("cseq").is_none() {
            return (Response::new(400), false);
        }
        if req.method == "OPTIONS" {
            return (
                Response::new(200).header(
                    "Public",
                    "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER",
                ),
                false,
            );
        }
        let known = [
            "DESCRIBE",
            "SETUP",
            "PLAY",
            "TEARDOWN",
            "GET_PARAMETER",
            "SET_PARAMETER",
        ];
        if !known.contains(&req.method.as_str()) {
            return (Response::new(501), false);
        }
        if !self.authorized(req) {
            return (self.challenge(), false);
        }
        let target = if req.url == "*" {
            None
        } else {
            match parse_url(&req.url, self.inner.cfg.channels) {
                Ok(t) => Some(t),
                Err(code) => return (Response::new(code), false),
            }
        };
        match (req.method.as_str(), target) {
            ("DESCRIBE", Some(t)) => (self.describe(&t), false),
            ("SETUP", Some(t)) => (self.setup(req, t), false),
            ("PLAY", _) => match self.session_ok(req) {
                Err(c) => (Response::new(c), false),
                Ok(s) if s.video_channel.is_none() => (Response::new(455), false),
                Ok(s) => {
                    let mut r = Response::new(200)
                        .header("Session", self.session_header())
                        .header("Range", "npt=now-");
                    if s.streamer.is_none() {
                        let clip = self.clip(&s.target);
                        let ts = s.rtp.ts(0, clip.cfg.fps);
                        r = r.header(
                            "RTP-Info",
                            format!(
                                "url={}trackID=1;seq={};rtptime={ts}",
                                s.target.base(),
                                s.rtp.seq
                            ),
                        );
                    }
                    (r, false)
                }
            },
            ("TEARDOWN", _) => match self.session_ok(req) {
                Err(c) => (Response::new(c), false),
                Ok(_) => {
                    let s = self.session.take();
                    drop(s);
                    self.inner.stat(|s| {
                        s.teardowns += 1;
                        s.sessions_active = s.sessions_active.saturating_sub(1);
                    });
                    (Response::new(200), true)
                }
            },
            ("GET_PARAMETER" | "SET_PARAMETER", _) => {
                if req.header("session").is_some()
                    && let Err(c) = self.session_ok(req)
                {
                    return (Response::new(c), false);
                }
                let mut r = Response::new(200);
                if self.session.is_some() {
                    r = r.header("Session", self.session_header());
                }
                (r, false)
            }
            _ => (Response::new(400), false),
        }
    }

    fn describe(&self, t: &Target) -> Response {
        if t.track.is_some() {
            return Response::new(404);
        }
        let clip = self.clip(t);
        let c = &clip.cfg;
        let profile = clip
            .sps
            .get(1..4)
            .map(|b| format!("{:02X}{:02X}{:02X}", b[0], b[1], b[2]))
            .unwrap_or_else(|| "42001F".into());
        let id = self.inner.id() % 1_000_000_000_000;
        let host = t
            .origin
            .trim_start_matches("rtsp://")
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| "0.0.0.0".into());
        let sdp = format!(
            "v=0\r\n\
             o=- {id} {id} IN IP4 {host}\r\n\
             s=Media Presentation\r\n\
             e=NONE\r\n\
             b=AS:{bw}\r\n\
             t=0 0\r\n\
             a=control:*\r\n\
             m=video 0 RTP/AVP 96\r\n\
             c=IN IP4 0.0.0.0\r\n\
             b=AS:{bw}\r\n\
             a=recvonly\r\n\
             a=x-dimensions:{w},{h}\r\n\
             a=control:trackID=1\r\n\
             a=rtpmap:96 H264/90000\r\n\
             a=fmtp:96 packetization-mode=1;profile-level-id={profile};sprop-parameter-sets={sps},{pps}\r\n\
             m=application 0 RTP/AVP 107\r\n\
             c=IN IP4 0.0.0.0\r\n\
             b=AS:50\r\n\
             a=recvonly\r\n\
             a=control:trackID=3\r\n\
             a=rtpmap:107 vnd.onvif.metadata/90000\r\n",
            bw = c.bitrate_bps / 1000 + 50,
            w = c.width,
            h = c.height,
            sps = base64(&clip.sps),
            pps = base64(&clip.pps),
        );
        let mut r = Response::new(200).header("Content-Base", t.base());
        r.body = Some(("application/sdp", sdp));
        r
    }

    fn setup(&mut self, req: &Request, t: Target) -> Response {
        let track = t.track.unwrap_or(1);
        let Some(transport) = req.header("transport") else {
            return Response::new(461);
        };
        // The first TCP transport offered; UDP only is refused.
        let Some(tcp) = transport
            .split(',')
            .map(str::trim)
            .find(|t| t.to_ascii_uppercase().starts_with("RTP/AVP/TCP"))
        else {
            return Response::new(461);
        };
        let requested = tcp
            .split(';')
            .find_map(|p| p.trim().strip_prefix("interleaved="))
            .map(|v| {
                let mut it = v.splitn(2, '-').map(|n| n.trim().parse::<u8>());
                match (it.next(), it.next()) {
                    (Some(Ok(a)), Some(Ok(b))) if a.checked_add(1) == Some(b) => Ok(a),
                    (Some(Ok(a)), None) if a < 255 => Ok(a),
                    _ => Err(()),
                }
            });
        let channel = match requested {
            Some(Ok(a)) => a,
            Some(Err(())) => return Response::new(400),
            None => (2 * (track - 1)) as u8,
        };
        match &mut self.session {
            Some(_) => {
                if let Err(c) = self.session_ok(req) {
                    return Response::new(c);
                }
            }
            None => {
                if req.header("session").is_some() {
                    return Response::new(454);
                }
                let id = format!("{:08}", self.inner.id() % 100_000_000);
                let rtp = Rtp {
                    ssrc: (self.inner.id() as u32) | 0x1000_0000,
                    seq: rand::random(),
                    ts0: rand::random(),
                    packets: 0,
                    octets: 0,
                    ppm: self.inner.cfg.clock_ppm,
                    jitter: self.inner.cfg.jitter_ticks,
                };
                self.session = Some(Session {
                    id,
                    target: t.clone(),
                    video_channel: None,
                    rtp,
                    streamer: None,
                });
                self.inner.stat(|s| {
                    s.sessions += 1;
                    s.sessions_active += 1;
                });
            }
        }
        let header = self.session_header();
        let Some(s) = self.session.as_mut() else {
            return Response::new(500);
        };
        if track == 1 {
            if s.streamer.is_some() {
                return Response::new(455);
            }
            s.video_channel = Some(channel);
            // A SETUP on 102 after 101 switches the stream.
            s.target = t;
        }
        // The metadata track is accepted (ffmpeg sets up every stream) but carries nothing.
        Response::new(200).header("Session", header).header(
            "Transport",
            format!(
                "RTP/AVP/TCP;unicast;interleaved={}-{};ssrc={:08x};mode=\"play\"",
                channel,
                channel + 1,
                s.rtp.ssrc
            ),
        )
    }

    fn play(&mut self) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let (Some(ch), None) = (s.video_channel, s.streamer.as_ref()) else {
            return;
        };
        let clip = if s.target.main {
            self.inner.main.clone()
        } else {
            self.inner.sub.clone()
        };
        self.inner.stat(|st| st.plays += 1);
        s.streamer = Some(AbortOnDrop(tokio::spawn(stream(
            self.inner.clone(),
            clip,
            s.rtp.clone(),
            ch,
            s.target.id,
            self.tx.clone(),
        ))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn fu_a_fragments_and_reassembles() {
        let nal: Vec<u8> = std::iter::once(0x65)
            .chain((0..5000).map(|i| i as u8))
            .collect();
        let mut out = Vec::new();
        packetize(&nal, &mut out);
        assert!(out.len() >= 4);
        assert!(out.iter().all(|p| p.len() <= MAX_PAYLOAD));
        assert_eq!(out[0][0], 0x60 | 28);
        assert_eq!(out[0][1], 0x80 | 5);
        assert_eq!(out.last().unwrap()[1], 0x40 | 5);
        let mut back = vec![(out[0][0] & 0xE0) | (out[0][1] & 0x1F)];
        for p in &out {
            back.extend_from_slice(&p[2..]);
        }
        assert_eq!(back, nal);
        let mut small = Vec::new();
        packetize(&[0x41, 1, 2, 3], &mut small);
        assert_eq!(small, vec![Bytes::from_static(&[0x41, 1, 2, 3])]);
    }

    #[test]
    fn urls() {
        let t = parse_url("rtsp://u:p@127.0.0.1:554/Streaming/Channels/101", 1).unwrap();
        assert_eq!(t.origin, "rtsp://127.0.0.1:554");
        assert!(t.main && t.track.is_none() && t.id == 101);
        let t = parse_url("rtsp://h/streaming/channels/102/trackID=1?x=1", 1).unwrap();
        assert!(!t.main && t.track == Some(1));
        assert_eq!(
            parse_url("rtsp://h/Streaming/Channels/401", 4).unwrap().id,
            401
        );
        assert_eq!(parse_url("rtsp://h/Streaming/Channels/401", 1), Err(404));
        assert_eq!(parse_url("rtsp://h/Streaming/Channels/103", 1), Err(404));
        assert_eq!(parse_url("rtsp://h/Streaming/Channels/001", 1), Err(404));
        assert_eq!(parse_url("rtsp://h/other", 1), Err(404));
        assert_eq!(parse_url("http://h/Streaming/Channels/101", 1), Err(400));
        assert_eq!(parse_url("rtsp://", 1), Err(400));
        assert_eq!(
            parse_url("rtsp://h/Streaming/Channels/101/trackID=9", 1),
            Err(404)
        );
        assert_eq!(parse_url("rtsp://h/Streaming/Channels/1é1", 1), Err(404));
    }

    #[test]
    fn loop_is_whole_gops_and_starts_at_idr() {
        let cfg = StreamConfig {
            width: 64,
            height: 36,
            fps: 5,
            gop: 4,
            seconds: 1,
            bitrate_bps: 50_000,
            noise: 0,
        };
        let clip = clip(cfg).unwrap();
        assert_eq!(clip.frames.len(), 8);
        let idrs: Vec<bool> = clip.frames.iter().map(|f| f.idr).collect();
        assert_eq!(idrs, [true, false, false, false, true, false, false, false]);
        assert_eq!(clip.sps[0] & 0x1F, 7);
        assert_eq!(clip.pps[0] & 0x1F, 8);
        assert_eq!(clip.frames[0].payloads[0], clip.sps);
        assert_ne!(
            clip.frames[1].payloads, clip.frames[2].payloads,
            "consecutive frames differ"
        );
    }
}
