//! One RTSP session per camera channel and stream, shared by every consumer (snapshots, HLS
//! viewers). Opened on the first consumer, closed `idle_close` after the last one leaves,
//! reconnected with backoff while someone is waiting, torn down on shutdown.
//!
//! Frames fan out over a bounded broadcast: a consumer that falls behind loses the oldest
//! frames, is told how many it missed, and resumes at the next keyframe (a P-frame after a
//! gap would only decode to garbage). The hub also keeps the frames since the last keyframe,
//! so a snapshot on a running stream needs no wait and a late joiner starts at once.
//!
//! Hikvision specifics: the SDP carries an ONVIF metadata track (`m=application`) beside the
//! video; only the first `video` stream is set up. TCP interleaved is used (UDP through NAT and
//! Wi-Fi loses packets and retina's UDP is experimental).

use super::rcvlowat;
use crate::config::StreamKind;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::Secret;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Frames buffered per hub for consumers; a consumer further behind than this skips ahead.
/// 64 frames: 2.5 s at 25 fps of slack. Every slot pins a frame whether anyone is behind or
/// not (about 1.3 MB at 1080p / 4 Mbit/s), and the consumers (the HLS remuxer, a snapshot) never
/// lag that far unless the machine is overloaded, when skipping to a keyframe is the answer.
const FANOUT: usize = 64;
/// The kept GOP is cut when a camera sends absurdly long GOPs (or none at all).
const GOP_MAX_FRAMES: usize = 600;
const GOP_MAX_BYTES: usize = 16 << 20;
/// After refused credentials, the next attempt waits at least this long.
pub const AUTH_BACKOFF: Duration = Duration::from_secs(120);

/// One access unit. `data` is 4-byte length-prefixed NALs; keyframes carry SPS/PPS in front.
#[derive(Debug)]
pub struct Frame {
    pub data: Bytes,
    pub is_key: bool,
    /// Presentation time in 90 kHz units from the start of this RTSP session.
    pub pts: i64,
    /// Counts RTSP sessions: a consumer sees a new session (timeline restart) by it changing.
    pub session: u64,
    pub received: Instant,
    /// The stream's parameters when this frame arrived (a consumer that is behind must not
    /// mux old frames with newer parameters).
    pub params: Option<Arc<Params>>,
}

/// What the stream is, from retina's parsed SDP / in-band parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// `h264` or `h265` (what retina calls the encoding).
    pub encoding: String,
    /// The `avc1` / `hvc1` sample entry box for fMP4.
    pub sample_entry: Vec<u8>,
    /// RFC 6381 codec string (HLS `CODECS`).
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// The decoder configuration record (`avcC` body for H.264).
    pub extra_data: Vec<u8>,
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub url: url::Url,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.url)
    }
}

impl Target {
    /// From a URL that may carry `user:password@` (percent-encoded, as in every RTSP URL):
    /// the credentials are decoded and moved out of the URL, so they are sent only in the
    /// Digest answer and never logged. The URL's credentials (an explicit `rtsp_url`) win
    /// over the device's.
    pub fn new(mut url: url::Url, username: Option<String>, password: Option<Secret>) -> Target {
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let url_user = (!url.username().is_empty()).then(|| dec(url.username()));
        let url_pass = url.password().map(|p| Secret::new(dec(p)));
        let _ = url.set_username("");
        let _ = url.set_password(None);
        match url_user {
            Some(u) => Target {
                url,
                username: Some(u),
                password: url_pass,
            },
            None => Target {
                url,
                username,
                password,
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HubStats {
    pub sessions_opened: u64,
    pub connect_errors: u64,
    pub frames: u64,
    /// Frames a consumer lost by lagging (summed over consumers).
    pub frames_missed: u64,
    pub last_error: Option<String>,
    /// The last attempt failed on refused credentials.
    pub auth_failed: bool,
    pub running: bool,
    /// Key frames asked of the camera (sessions that joined mid-GOP).
    pub key_frames_requested: u64,
    /// The `SO_RCVLOWAT` in force on the session's socket, as the kernel reports it (1: off;
    /// `None`: no session, or its socket could not be found). See [`super::rcvlowat`].
    pub rcvlowat: Option<u32>,
}

/// Asks the camera for a key frame now (Hikvision: ISAPI `requestKeyFrame`). An error means
/// the camera does not do it: it is not asked again.
pub type KeyFrameRequest =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<()>> + Send + Sync>;

/// A session that joined mid-GOP asks for a key frame at most this often.
const KEY_REQUEST_EVERY: Duration = Duration::from_secs(2);

#[derive(Default)]
struct KeyRequests {
    request: Option<KeyFrameRequest>,
    last: Option<Instant>,
    /// The camera answered with an error once: it cannot.
    unsupported: bool,
}

struct State {
    consumers: usize,
    gop: Vec<Arc<Frame>>,
    gop_bytes: usize,
    params: Option<Arc<Params>>,
    stats: HubStats,
    session: u64,
    /// The last whole GOP measured (90 kHz), kept across sessions: a live stream started
    /// later fixes its playlist's target duration with it.
    gop_90k: Option<u64>,
}

pub struct Hub {
    pub camera: String,
    pub channel: u32,
    pub stream: StreamKind,
    target: Mutex<Target>,
    tx: broadcast::Sender<Arc<Frame>>,
    state: Mutex<State>,
    /// Wakes the session task when the first consumer arrives or the last leaves.
    wake: Notify,
    /// Bumped on each new set of parameters (and session): waiters for params watch it.
    params_seq: watch::Sender<u64>,
    idle_close: Mutex<Duration>,
    /// `media.batch_reads`: look for the socket and set a low-water mark (next session).
    batch_reads: std::sync::atomic::AtomicBool,
    cancel: CancellationToken,
    group: Arc<retina::client::SessionGroup>,
    key_requests: Mutex<KeyRequests>,
}

/// A consumer's handle: keeps the session open while it lives.
pub struct Subscription {
    hub: Arc<Hub>,
    rx: broadcast::Receiver<Arc<Frame>>,
    /// Frames from the kept GOP, delivered before live ones.
    backlog: std::collections::VecDeque<Arc<Frame>>,
    resync: bool,
}

/// What a consumer receives.
pub enum Recv {
    Frame(Arc<Frame>),
    /// Frames were dropped because this consumer was too slow; it resumes at a keyframe.
    Missed(u64),
}

impl Hub {
    pub fn new(
        camera: &str,
        channel: u32,
        stream: StreamKind,
        target: Target,
        idle_close: Duration,
        group: Arc<retina::client::SessionGroup>,
        cancel: CancellationToken,
    ) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            camera: camera.to_string(),
            channel,
            stream,
            target: Mutex::new(target),
            tx: broadcast::channel(FANOUT).0,
            state: Mutex::new(State {
                consumers: 0,
                gop: Vec::new(),
                gop_bytes: 0,
                params: None,
                stats: HubStats::default(),
                session: 0,
                gop_90k: None,
            }),
            wake: Notify::new(),
            params_seq: watch::channel(0).0,
            idle_close: Mutex::new(idle_close),
            batch_reads: std::sync::atomic::AtomicBool::new(true),
            cancel,
            group,
            key_requests: Mutex::new(KeyRequests::default()),
        });
        tokio::spawn(run(hub.clone()));
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_target(&self, t: Target) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// How to ask the camera for a key frame when a session starts mid-GOP (without it, the
    /// first picture waits for the camera's next one: up to a GOP, often 2–4 s).
    pub fn set_key_frame_request(&self, f: KeyFrameRequest) {
        self.key_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .request = Some(f);
    }

    /// A session began mid-GOP: ask for a key frame (in the background, once per
    /// `KEY_REQUEST_EVERY`, never again after the camera said no).
    fn request_key_frame(self: &Arc<Self>) {
        let req = {
            let mut k = self.key_requests.lock().unwrap_or_else(|p| p.into_inner());
            if k.unsupported || k.last.is_some_and(|t| t.elapsed() < KEY_REQUEST_EVERY) {
                return;
            }
            let Some(r) = k.request.clone() else {
                return;
            };
            k.last = Some(Instant::now());
            r
        };
        self.lock().stats.key_frames_requested += 1;
        let hub = self.clone();
        tokio::spawn(async move {
            match req().await {
                Ok(()) => {
                    tracing::debug!(camera = %hub.camera, channel = hub.channel, "joined mid-GOP: key frame requested")
                }
                Err(e) => {
                    tracing::info!(camera = %hub.camera, channel = hub.channel, error = %e, "camera cannot be asked for a key frame (not asked again): pictures from a cold session wait for its next one");
                    hub.key_requests
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .unsupported = true;
                }
            }
        });
    }

    pub fn set_batch_reads(&self, on: bool) {
        self.batch_reads
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn set_idle_close(&self, d: Duration) {
        *self.idle_close.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }

    pub fn stats(&self) -> HubStats {
        self.lock().stats.clone()
    }

    /// The camera's GOP as last measured (any session of this hub).
    pub fn gop(&self) -> Option<Duration> {
        self.lock()
            .gop_90k
            .map(|g| Duration::from_micros(g * 1_000_000 / 90_000))
    }

    /// Changes when a session starts, gets new parameters, ends or fails.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.params_seq.subscribe()
    }

    pub fn params(&self) -> Option<Arc<Params>> {
        self.lock().params.clone()
    }

    pub fn consumers(&self) -> usize {
        self.lock().consumers
    }

    /// Start consuming: the session opens if it is not running. The subscription first yields
    /// the frames since the last keyframe (when the stream is running), then live frames.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let (rx, backlog) = {
            let mut s = self.lock();
            s.consumers += 1;
            // Subscribe under the lock: no frame falls between the backlog and the live feed.
            (self.tx.subscribe(), s.gop.iter().cloned().collect())
        };
        self.wake.notify_one();
        Subscription {
            hub: self.clone(),
            rx,
            backlog,
            resync: false,
        }
    }

    /// The frames from the last keyframe up to the first one received at or after `at`
    /// (`None`: the keyframe alone), when the stream is running.
    pub fn gop_until(&self, at: Option<Instant>) -> Option<(Arc<Params>, Vec<Arc<Frame>>)> {
        let s = self.lock();
        let first = s.gop.first()?;
        let params = first.params.clone()?;
        if !first.is_key {
            return None;
        }
        let frames = match at {
            None => vec![first.clone()],
            Some(at) => {
                let end = s
                    .gop
                    .iter()
                    .position(|f| f.received >= at)
                    .map(|i| i + 1)
                    .unwrap_or(s.gop.len());
                s.gop[..end].to_vec()
            }
        };
        Some((params, frames))
    }

    /// Wait until parameters are known (the session is playing), or `timeout`.
    pub async fn wait_params(&self, timeout: Duration) -> Option<Arc<Params>> {
        let mut rx = self.params_seq.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.params() {
                return Some(p);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    fn publish(&self, mut frame: Frame) {
        let mut s = self.lock();
        frame.params = s.params.clone();
        let frame = Arc::new(frame);
        s.stats.frames += 1;
        if frame.is_key {
            if let Some(first) = s
                .gop
                .first()
                .filter(|f| f.is_key && f.session == frame.session)
            {
                let d = frame.pts - first.pts;
                if d > 0 && d < 60 * 90_000 {
                    s.gop_90k = Some(d as u64);
                }
            }
            s.gop.clear();
            s.gop_bytes = 0;
        }
        if !s.gop.is_empty() || frame.is_key {
            if s.gop.len() >= GOP_MAX_FRAMES || s.gop_bytes + frame.data.len() > GOP_MAX_BYTES {
                s.gop.clear();
                s.gop_bytes = 0;
            } else {
                s.gop_bytes += frame.data.len();
                s.gop.push(frame.clone());
            }
        }
        let _ = self.tx.send(frame);
    }
}

impl Subscription {
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The next frame, or a notice of missed frames. `None` when the hub shut down.
    pub async fn recv(&mut self) -> Option<Recv> {
        loop {
            let f = if let Some(f) = self.backlog.pop_front() {
                f
            } else {
                match self.rx.recv().await {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.resync = true;
                        self.hub.lock().stats.frames_missed += n;
                        tracing::debug!(camera = %self.hub.camera, channel = self.hub.channel, missed = n, "slow consumer skipped frames");
                        return Some(Recv::Missed(n));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            };
            // No overlap between the backlog and the live feed: `subscribe` copies the GOP
            // and subscribes under the lock `publish` sends under.
            if self.resync {
                if !f.is_key {
                    continue;
                }
                self.resync = false;
            }
            return Some(Recv::Frame(f));
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut s = self.hub.lock();
        s.consumers = s.consumers.saturating_sub(1);
        drop(s);
        self.hub.wake.notify_one();
    }
}

/// The session task: idle → open (with backoff on failure) → play until the last consumer
/// has been gone `idle_close` → idle.
async fn run(hub: Arc<Hub>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        // Idle: wait for a consumer.
        while hub.consumers() == 0 {
            tokio::select! {
                _ = hub.wake.notified() => {}
                _ = hub.cancel.cancelled() => return,
            }
        }
        let started = Instant::now();
        match play(&hub).await {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                let msg = e.to_string();
                {
                    let mut s = hub.lock();
                    s.stats.connect_errors += 1;
                    s.stats.last_error = Some(msg.clone());
                    s.stats.auth_failed = e.kind() == ErrorKind::Auth;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(500);
                }
                if e.kind() == ErrorKind::Auth {
                    backoff = backoff.max(AUTH_BACKOFF);
                }
                let target = hub
                    .target
                    .lock()
                    .map(|t| t.url.to_string())
                    .unwrap_or_default();
                tracing::warn!(camera = %hub.camera, channel = hub.channel, url = %target, error = %msg, retry_in = ?backoff, "RTSP session failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = hub.cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30)).max(
                    if e.kind() == ErrorKind::Auth {
                        AUTH_BACKOFF
                    } else {
                        Duration::ZERO
                    },
                );
            }
        }
        {
            let mut s = hub.lock();
            s.stats.running = false;
            s.stats.rcvlowat = None;
            s.gop.clear();
            s.gop_bytes = 0;
            s.params = None;
        }
        hub.params_seq.send_modify(|n| *n += 1);
        if hub.cancel.is_cancelled() {
            return;
        }
    }
}

/// A session that sends nothing for this long is dead.
const SILENCE: Duration = Duration::from_secs(10);

/// Applies a low-water mark; a socket that refuses it is not tried again this session.
fn set_mark(hub: &Hub, socket: &mut Option<rcvlowat::Socket>, mark: u32) {
    let Some(s) = socket else { return };
    match s.set(mark).and_then(|()| s.get()) {
        Ok(got) => {
            tracing::debug!(camera = %hub.camera, channel = hub.channel, bytes = got, "RTSP socket low-water mark");
            hub.lock().stats.rcvlowat = Some(got);
        }
        Err(e) => {
            tracing::info!(camera = %hub.camera, channel = hub.channel, error = %e, "cannot set SO_RCVLOWAT on the RTSP socket: reads are not batched");
            *socket = None;
            hub.lock().stats.rcvlowat = None;
        }
    }
}

fn session_options(
    target: &Target,
    group: Arc<retina::client::SessionGroup>,
) -> retina::client::SessionOptions {
    let creds = match (&target.username, &target.password) {
        (Some(u), p) => Some(retina::client::Credentials {
            username: u.clone(),
            password: p
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        }),
        _ => None,
    };
    retina::client::SessionOptions::default()
        .creds(creds)
        .user_agent(format!("gatehouse/{}", env!("CARGO_PKG_VERSION")))
        .session_group(group)
}

fn rtsp_error(what: &str, e: retina::Error) -> Error {
    // Refused credentials: retrying soon only locks the camera's account (Hikvision
    // locks a client out for ~30 min after a few bad logins).
    let kind = if e.status_code() == Some(401) {
        ErrorKind::Auth
    } else {
        ErrorKind::Unavailable
    };
    Error::new(kind, format!("RTSP {what}: {e}"))
}

/// Is the camera there: an RTSP DESCRIBE that offers a video track (no SETUP, no PLAY: no
/// stream is started). For cameras without ISAPI, whose availability comes from RTSP.
pub async fn probe(target: &Target, group: Arc<retina::client::SessionGroup>) -> Result<()> {
    let describe =
        retina::client::Session::describe(target.url.clone(), session_options(target, group));
    let session = tokio::time::timeout(Duration::from_secs(15), describe)
        .await
        .map_err(|_| Error::new(ErrorKind::Unavailable, "RTSP DESCRIBE timed out after 15s"))?
        .map_err(|e| rtsp_error("DESCRIBE", e))?;
    if !session.streams().iter().any(|s| s.media() == "video") {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!("{} offers no video track", target.url),
        ));
    }
    Ok(())
}

/// One RTSP session, until idle, cancelled or failed.
async fn play(hub: &Arc<Hub>) -> Result<()> {
    use retina::client::{PlayOptions, SetupOptions, TcpTransportOptions, Transport};
    let target = hub
        .target
        .lock()
        .map(|t| t.clone())
        .map_err(|_| Error::new(ErrorKind::Internal, "hub target lock poisoned"))?;
    let opts = session_options(&target, hub.group.clone());
    let rtsp = rtsp_error;
    let connect = async {
        // Find the socket retina opens (see `rcvlowat`): its address, then what sockets
        // exist before, one session to this server at a time.
        let batch =
            cfg!(target_os = "linux") && hub.batch_reads.load(std::sync::atomic::Ordering::Relaxed);
        let peers = if batch {
            rcvlowat::peers(&target.url).await
        } else {
            Vec::new()
        };
        let opening = match peers.is_empty() {
            true => None,
            false => Some(rcvlowat::opening(&target.url).await),
        };
        let before = opening.as_ref().map(|_| rcvlowat::before());
        let mut session = retina::client::Session::describe(target.url.clone(), opts)
            .await
            .map_err(|e| rtsp("DESCRIBE", e))?;
        let socket = match &before {
            Some(b) => rcvlowat::Socket::find(b, &peers),
            None => Err(0),
        };
        drop(opening);
        if batch && let Err(n) = &socket {
            tracing::debug!(camera = %hub.camera, channel = hub.channel, matched = n, "RTSP socket not told apart: reads are not batched");
        }
        let Some(video) = session.streams().iter().position(|s| s.media() == "video") else {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("{} offers no video track", target.url),
            ));
        };
        let encoding = session.streams()[video]
            .encoding_name()
            .to_ascii_lowercase();
        session
            .setup(
                video,
                SetupOptions::default()
                    .transport(Transport::Tcp(TcpTransportOptions::default()))
                    .frame_format(retina::codec::FrameFormat {
                        h26x_framing: retina::codec::h26x::Framing::FourByteLength,
                        parameter_set_insertion: retina::codec::ParameterSetInsertion::EachKeyFrame,
                        aac_framing: retina::codec::aac::Framing::Raw,
                    }),
            )
            .await
            .map_err(|e| rtsp("SETUP", e))?;
        let playing = session
            .play(PlayOptions::default())
            .await
            .map_err(|e| rtsp("PLAY", e))?;
        let demuxed = playing.demuxed().map_err(|e| rtsp("demux", e))?;
        Ok::<_, Error>((demuxed, video, encoding, socket.ok()))
    };
    let (mut demuxed, video, encoding, socket) = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(15), connect) => r.map_err(|_| {
            Error::new(ErrorKind::Unavailable, "RTSP connect timed out after 15s")
        })??,
        _ = hub.cancel.cancelled() => return Ok(()),
    };
    // Declared after `demuxed`, so dropped before it: the mark is back to 1 before retina
    // sends its TEARDOWN and waits for the short answer.
    let mut socket = socket;
    let mut batching = rcvlowat::Batching::default();
    let session_no = {
        let mut s = hub.lock();
        s.session += 1;
        s.stats.sessions_opened += 1;
        s.stats.running = true;
        s.stats.last_error = None;
        s.stats.auth_failed = false;
        s.stats.rcvlowat = socket.as_ref().map(|s| s.get().unwrap_or(1));
        s.session
    };
    tracing::info!(camera = %hub.camera, channel = hub.channel, stream = ?hub.stream, url = %target.url, "RTSP session playing");
    let read_params = |d: &retina::client::Demuxed| -> Option<Params> {
        match d.streams().get(video)?.parameters()? {
            retina::codec::ParametersRef::Video(v) => Some(Params {
                encoding: encoding.clone(),
                sample_entry: v.mp4_sample_entry().build().ok()?,
                codec: v.rfc6381_codec().to_string(),
                width: v.pixel_dimensions().0,
                height: v.pixel_dimensions().1,
                extra_data: v.extra_data().to_vec(),
            }),
            _ => None,
        }
    };
    if let Some(p) = read_params(&demuxed) {
        hub.lock().params = Some(Arc::new(p));
        hub.params_seq.send_modify(|n| *n += 1);
    }
    let mut idle_since: Option<Instant> = None;
    let mut first_frame = true;
    let mut last_data = Instant::now();
    loop {
        let idle_close = *hub.idle_close.lock().unwrap_or_else(|p| p.into_inner());
        let idle_deadline = idle_since.map(|t| t + idle_close);
        // Silence is a dead session (cameras send 10–30 frames a second).
        let silent_at = last_data + SILENCE;
        let stall_at = socket.as_ref().and(batching.stall_at());
        // One timer for whichever comes first.
        let deadline = [idle_deadline, stall_at]
            .into_iter()
            .flatten()
            .fold(silent_at, Instant::min);
        let item = tokio::select! {
            _ = hub.cancel.cancelled() => return Ok(()),
            _ = hub.wake.notified() => {
                idle_since = match (hub.consumers(), idle_since) {
                    (0, None) => Some(Instant::now()),
                    (0, s) => s,
                    _ => None,
                };
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                if idle_deadline.is_some_and(|d| now >= d) {
                    tracing::info!(camera = %hub.camera, channel = hub.channel, "RTSP session idle: closing");
                    return Ok(());
                }
                if now >= silent_at {
                    return Err(Error::new(ErrorKind::Unavailable, "no RTSP data for 10s"));
                }
                if stall_at.is_some_and(|d| now >= d)
                    && let Some(mark) = batching.stalled()
                {
                    tracing::debug!(camera = %hub.camera, channel = hub.channel, "no frame while holding reads: low-water mark off");
                    set_mark(hub, &mut socket, mark);
                }
                continue;
            }
            r = demuxed.next() => match r {
                None => return Err(Error::new(ErrorKind::Unavailable, "RTSP session ended")),
                Some(Err(e)) => return Err(rtsp("stream", e)),
                Some(Ok(item)) => {
                    last_data = Instant::now();
                    item
                }
            },
        };
        if let retina::codec::CodecItem::VideoFrame(f) = item {
            if f.has_new_parameters()
                && let Some(p) = read_params(&demuxed)
            {
                tracing::info!(camera = %hub.camera, channel = hub.channel, codec = %p.codec, width = p.width, height = p.height, "stream parameters");
                hub.lock().params = Some(Arc::new(p));
                hub.params_seq.send_modify(|n| *n += 1);
            }
            if f.loss() > 0 {
                tracing::debug!(camera = %hub.camera, lost = f.loss(), "RTP packets lost");
            }
            let ts = f.timestamp();
            // Video RTP clocks are 90 kHz (RFC 6184 / 7798); scale anyway if one is not.
            let pts = ts.elapsed() * 90_000 / i64::from(ts.clock_rate().get());
            let is_key = f.is_random_access_point();
            if std::mem::take(&mut first_frame) && !is_key {
                hub.request_key_frame();
            }
            if socket.is_some()
                && let Some(mark) = batching.frame(last_data, f.data().len(), is_key)
            {
                set_mark(hub, &mut socket, mark);
            }
            hub.publish(Frame {
                data: Bytes::from(f.into_data()),
                is_key,
                pts,
                session: session_no,
                received: Instant::now(),
                params: None,
            });
        }
    }
}
