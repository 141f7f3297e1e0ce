//! A Hikvision camera / NVR simulator on a loopback port. Raw TCP on purpose: the alert
//! stream's quirks live below what an HTTP framework lets you write (HTTP/1.0 close-delimited
//! bodies, bare-LF parts, duplicated boundaries, no Content-Length).
//!
//! Speaks ISAPI with Digest authentication (camera challenge: no `algorithm`/`opaque`; NVR:
//! `opaque=""`, `algorithm="MD5"`), locks a client out after repeated bad credentials (as real
//! devices do for ~30 min), answers `/ISAPI/System/deviceInfo` with the shape of the real PTZ
//! capture, and serves `/ISAPI/Event/notification/alertStream` with a chosen personality
//! (camera, PTZ, NVR, or every framing quirk at once). Alerts are pushed one by one, as
//! scripted bursts ([`HikSim::burst`]: no `inactive` where the personality never sends it), or
//! replayed from the real captures at their own pace ([`HikSim::replay`]). `/picture` answers
//! a colour-bar JPEG, or on request the XML `ResponseStatus` with HTTP 200 that devices send.

use chrono::Datelike;
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use super::rtsp::{RtspSim, RtspSimConfig};

const DEVICE_INFO: &str =
    include_str!("../../../tests/fixtures/hikvision/hiksink_deviceinfo_ptz_DS-2DE4A425IW-DE.xml");
const TRIGGERS_CAM: &str =
    include_str!("../../../tests/fixtures/hikvision/hiksink_triggers_cam.xml");
const TRIGGERS_NVR: &str =
    include_str!("../../../tests/fixtures/hikvision/hiksink_triggers_nvr.xml");

/// How the device frames its alert stream.
#[derive(Debug, Clone)]
pub struct Personality {
    /// NVRs: true (`opaque=""`, `algorithm="MD5"` in the challenge).
    pub nvr: bool,
    /// `\r\n` (cameras) or `\n` (NVR bodies).
    pub eol: &'static str,
    /// The boundary parameter: `boundary`, `hikboundary`, `--boundary`.
    pub boundary: &'static str,
    /// HTTP/1.0 with a close-delimited body (no length, no chunking).
    pub http10: bool,
    /// Content-Length on parts.
    pub content_length: bool,
    /// Heartbeat (`videoloss inactive`) interval; `None` = no heartbeats.
    pub heartbeat: Option<Duration>,
    /// Close the stream after this long (NVRs: every 15–40 s).
    pub close_after: Option<Duration>,
    /// Follow each pushed alert with an `image/jpeg` part (cameras with "picture in stream").
    pub jpeg_parts: bool,
    /// Write every boundary line twice (seen on some firmware).
    pub duplicate_boundary: bool,
    /// Blank lines between parts (seen on NVRs).
    pub blank_lines: bool,
    /// Whether a [`HikSim::burst`] ends with `inactive`. PTZs and some NVR event types never
    /// send it: the state only ends by the hold-off.
    pub sends_inactive: bool,
}

impl Personality {
    pub fn camera() -> Personality {
        Personality {
            nvr: false,
            eol: "\r\n",
            boundary: "boundary",
            http10: false,
            content_length: true,
            heartbeat: Some(Duration::from_secs(10)),
            close_after: None,
            jpeg_parts: false,
            duplicate_boundary: false,
            blank_lines: false,
            sends_inactive: true,
        }
    }

    /// A PTZ dome: camera framing, `active` three times a second, never `inactive`.
    pub fn ptz() -> Personality {
        Personality {
            sends_inactive: false,
            ..Personality::camera()
        }
    }

    /// Every framing quirk at once: bare LF, `--boundary` as the parameter, duplicated
    /// boundary lines, blank lines between parts, no Content-Length, HTTP/1.0 close-delimited.
    pub fn quirky() -> Personality {
        Personality {
            nvr: true,
            eol: "\n",
            boundary: "--boundary",
            http10: true,
            content_length: false,
            heartbeat: Some(Duration::from_secs(5)),
            close_after: None,
            jpeg_parts: false,
            duplicate_boundary: true,
            blank_lines: true,
            sends_inactive: false,
        }
    }

    pub fn nvr() -> Personality {
        Personality {
            nvr: true,
            eol: "\n",
            boundary: "hikboundary",
            http10: true,
            content_length: false,
            heartbeat: None,
            close_after: Some(Duration::from_secs(20)),
            jpeg_parts: false,
            duplicate_boundary: false,
            blank_lines: false,
            sends_inactive: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct HikSimConfig {
    pub bind: SocketAddr,
    pub username: String,
    pub password: String,
    pub personality: Personality,
    /// Bad logins before the lockout.
    pub lockout_after: u32,
    pub lockout_for: Duration,
    /// Also serve RTSP ([`RtspSim`]) with this device's username and password (those in the
    /// RTSP config are replaced), on its own port, reported by `/ISAPI/Security/adminAccesses`.
    /// An NVR personality serves channels 1–4. `None` (the default, which existing tests
    /// rely on: 554 in adminAccesses) means no RTSP; `gatehouse demo` turns it on. Cheap: the
    /// loops are encoded once per process (~0.2 s in a debug build).
    pub rtsp: Option<RtspSimConfig>,
    /// Answers `requestKeyFrame` (true, the default). False: the firmware answers 404, as
    /// many NVR channels and every non-Hikvision camera do; a client that joins mid-GOP
    /// then waits for the camera's next key frame.
    pub key_frame_requests: bool,
    /// The days with recordings, every channel alike, for
    /// `POST /ISAPI/ContentMgmt/record/tracks/<ch>01/dailyDistribution`. `None` (the
    /// default): the device has no recording search and answers it 404 `notSupport`, as
    /// cameras without storage do.
    pub record_days: Option<Vec<chrono::NaiveDate>>,
}

impl Default for HikSimConfig {
    fn default() -> Self {
        HikSimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: "admin".into(),
            password: "sim-hik-pass".into(),
            personality: Personality::camera(),
            lockout_after: 3,
            lockout_for: Duration::from_secs(1800),
            rtsp: None,
            key_frame_requests: true,
            record_days: None,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct HikStats {
    pub requests: u64,
    /// Requests that carried an `Authorization` header (login attempts, good or bad).
    pub with_credentials: u64,
    pub unauthenticated: u64,
    pub bad_logins: u64,
    pub locked_out: u64,
    pub streams: u64,
}

struct Inner {
    cfg: HikSimConfig,
    nonce_seq: Mutex<u64>,
    stats: Mutex<HikStats>,
    locked_until: Mutex<Option<tokio::time::Instant>>,
    alerts: broadcast::Sender<Pushed>,
    /// `/picture` answers an XML `ResponseStatus` with HTTP 200 (as devices do) instead of a JPEG.
    picture_error: std::sync::atomic::AtomicBool,
    jpeg: std::sync::OnceLock<Vec<u8>>,
    /// The RTSP port adminAccesses reports.
    rtsp_port: u16,
    /// The RTSP side of the device, for `requestKeyFrame`.
    key_frames: Option<super::rtsp::KeyFrames>,
    clock: Mutex<DeviceClock>,
    started: tokio::time::Instant,
    /// The number of the next alert pushed (1, 2, …): what a delivery record names.
    next_seq: std::sync::atomic::AtomicU64,
    /// Bumped by [`HikSim::drop_streams`]: every open alert stream ends.
    drops: tokio::sync::watch::Sender<u64>,
    /// Where each alert written to a stream is reported ([`HikSim::record_deliveries`]).
    deliveries: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Delivery>>>,
}

/// An alert on its way to the open streams, with its number.
#[derive(Debug, Clone)]
struct Pushed {
    seq: u64,
    body: String,
}

/// One alert written whole to an alert stream (the device's side of "delivered": the bytes
/// are in the socket's send queue, and the stream ends only by an orderly close, so the peer
/// gets them). Alerts pushed while no stream is open reach nobody and are not reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The alert's number, as [`HikSim::push_numbered`] returned it.
    pub seq: u64,
    /// The stream it went out on (1 for the device's first stream, 2 for the next, …).
    pub stream: u64,
    /// When, in milliseconds since the simulator started (monotonic).
    pub at_ms: u64,
}

pub struct HikSim {
    addr: SocketAddr,
    inner: Arc<Inner>,
    /// The accept loop and what ends its connections (`None` while down).
    server: Mutex<Option<Server>>,
    rtsp: Option<RtspSim>,
}

struct Server {
    task: tokio::task::JoinHandle<()>,
    kill: tokio_util::sync::CancellationToken,
}

/// Accept connections until killed; killing ends every connection too (alert streams
/// included), as a device that loses power does.
fn listen(inner: Arc<Inner>, listener: TcpListener) -> Server {
    let kill = tokio_util::sync::CancellationToken::new();
    let k = kill.clone();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (i, k) = (inner.clone(), k.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = k.cancelled() => {}
                    _ = serve(i, sock) => {}
                }
            });
        }
    });
    Server { task, kill }
}

/// A device clock, as wrong as real ones are (NTP off, no battery, a zone written wrong).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceClock {
    /// Added to the real time.
    pub skew: chrono::Duration,
    /// The device is at UTC+8 and writes its offset as `-8:00` (one-digit hour, wrong sign):
    /// read literally, its times are 16 h ahead.
    pub wrong_offset: bool,
}

impl DeviceClock {
    fn now(&self) -> String {
        let t = chrono::Utc::now() + self.skew;
        if self.wrong_offset {
            let local = t.with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("+8"));
            format!("{}-8:00", local.format("%Y-%m-%dT%H:%M:%S"))
        } else {
            t.with_timezone(&chrono::Local)
                .fixed_offset()
                .format("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        }
    }
}

/// An alert body in the device's own shape, stamped `now` (its `dateTime` as written).
pub fn alert_xml(
    channel: u32,
    event_type: &str,
    state: &str,
    post_count: u32,
    eol: &str,
    now: &str,
) -> String {
    [
        r#"<EventNotificationAlert version="2.0" xmlns="http://www.hikvision.com/ver20/XMLSchema">"#.to_string(),
        "<ipAddress>127.0.0.1</ipAddress>".into(),
        "<portNo>80</portNo>".into(),
        "<protocol>HTTP</protocol>".into(),
        "<macAddress>ff:ff:ff:ff:ff:ff</macAddress>".into(),
        format!("<channelID>{channel}</channelID>"),
        format!("<dateTime>{now}</dateTime>"),
        format!("<activePostCount>{post_count}</activePostCount>"),
        format!("<eventType>{event_type}</eventType>"),
        format!("<eventState>{state}</eventState>"),
        format!("<eventDescription>{event_type} alarm</eventDescription>"),
        "</EventNotificationAlert>".into(),
    ]
    .join(eol)
        + eol
}

/// The alert bodies of a JSONL capture (`tests/fixtures/hikvision/*.jsonl`: one JSON object a
/// line, the part's body in `content`), in order. Panics on a malformed line: captures are
/// fixtures, not input.
pub fn capture_bodies(jsonl: &str) -> Vec<String> {
    jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["content"]
                .as_str()
                .expect("a string `content`")
                .to_string()
        })
        .collect()
}

/// When each body of a capture arrived, relative to the first, from its `dateTime`.
pub fn replay_offsets(bodies: &[String]) -> Vec<Duration> {
    let secs: Vec<Option<i64>> = bodies
        .iter()
        .map(|b| {
            let t = b.split("<dateTime>").nth(1)?.split('<').next()?;
            chrono::DateTime::parse_from_rfc3339(t.trim())
                .ok()
                .map(|d| d.timestamp())
        })
        .collect();
    let first = secs.iter().flatten().copied().next().unwrap_or(0);
    // A body without a readable time arrives with the one before it.
    let mut last = first;
    let secs: Vec<i64> = secs
        .into_iter()
        .map(|s| {
            last = s.unwrap_or(last).max(last);
            last - first
        })
        .collect();
    let mut out = Vec::with_capacity(secs.len());
    let mut i = 0;
    while i < secs.len() {
        let j = (i..secs.len())
            .find(|&j| secs[j] != secs[i])
            .unwrap_or(secs.len());
        let n = (j - i) as u32;
        for k in 0..n {
            out.push(Duration::from_secs(secs[i] as u64) + Duration::from_secs(1) * k / n);
        }
        i = j;
    }
    out
}

/// 75 % colour bars (RGB), as the simulators draw them: `/picture` and the RTSP pattern.
pub(crate) const BARS: [[u8; 3]; 7] = [
    [192, 192, 192],
    [192, 192, 0],
    [0, 192, 192],
    [0, 192, 0],
    [192, 0, 192],
    [192, 0, 0],
    [0, 0, 192],
];

/// Colour bars, as a JPEG (what `/picture` returns).
pub fn test_pattern_jpeg() -> Vec<u8> {
    let (w, h) = (640usize, 360usize);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for _y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&BARS[x * BARS.len() / w]);
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 80)
        .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .expect("encoding a fixed-size test pattern");
    out
}

pub(crate) fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn params(h: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let h = h.trim().strip_prefix("Digest").unwrap_or("");
    let mut rest = h;
    while let Some((k, after)) = rest.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (v, r) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), &q[(end + 1).min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        m.insert(k, v);
        rest = r;
    }
    m
}

impl HikSim {
    pub async fn start(cfg: HikSimConfig) -> std::io::Result<HikSim> {
        let listener = TcpListener::bind(cfg.bind).await?;
        let addr = listener.local_addr()?;
        let rtsp = match &cfg.rtsp {
            Some(r) => Some(
                RtspSim::start(RtspSimConfig {
                    bind: SocketAddr::new(addr.ip(), r.bind.port()),
                    username: cfg.username.clone(),
                    password: cfg.password.clone(),
                    channels: if cfg.personality.nvr { 4 } else { r.channels },
                    ..r.clone()
                })
                .await?,
            ),
            None => None,
        };
        let inner = Arc::new(Inner {
            rtsp_port: rtsp.as_ref().map_or(554, RtspSim::port),
            key_frames: rtsp.as_ref().map(RtspSim::key_frames),
            clock: Mutex::new(DeviceClock::default()),
            next_seq: std::sync::atomic::AtomicU64::new(1),
            drops: tokio::sync::watch::channel(0).0,
            deliveries: Mutex::new(None),
            started: tokio::time::Instant::now(),
            cfg,
            nonce_seq: Mutex::new(0),
            stats: Mutex::new(HikStats::default()),
            locked_until: Mutex::new(None),
            alerts: broadcast::channel(1024).0,
            picture_error: Default::default(),
            jpeg: Default::default(),
        });
        let server = listen(inner.clone(), listener);
        Ok(HikSim {
            addr,
            inner,
            server: Mutex::new(Some(server)),
            rtsp,
        })
    }

    /// Stop listening and close every connection (the device is gone; its RTSP side, if any,
    /// stays). State and counters are kept.
    pub async fn go_down(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(s) = server {
            s.kill.cancel();
            s.task.abort();
            let _ = s.task.await;
        }
    }

    /// Listen again on the same port.
    pub async fn come_up(&self) -> std::io::Result<()> {
        if self.server.lock().unwrap().is_some() {
            return Ok(());
        }
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        };
        *self.server.lock().unwrap() = Some(listen(self.inner.clone(), listener));
        Ok(())
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The RTSP server, when [`HikSimConfig::rtsp`] is set.
    pub fn rtsp(&self) -> Option<&RtspSim> {
        self.rtsp.as_ref()
    }

    /// `rtsp://<addr>/Streaming/Channels/<id>` (e.g. 101), when RTSP is on.
    pub fn rtsp_url(&self, stream_id: u32) -> Option<String> {
        self.rtsp
            .as_ref()
            .map(|r| r.url(&format!("/Streaming/Channels/{stream_id}")))
    }

    pub fn stats(&self) -> HikStats {
        self.inner.stats.lock().unwrap().clone()
    }

    /// Send an alert on every open stream (a body as the device would write it).
    pub fn push_alert(&self, channel: u32, event_type: &str, state: &str) {
        let body = self.inner.alert(channel, event_type, state, 1);
        self.inner.push(body);
    }

    /// Send an alert whose `activePostCount` is its own number (returned), so that what a
    /// client stored can be matched with what was sent, alert by alert
    /// ([`HikSim::record_deliveries`]; `scripts/chaos.sh alert-drops`).
    pub fn push_numbered(&self, channel: u32, event_type: &str, state: &str) -> u64 {
        let seq = self
            .inner
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = self.inner.alert(channel, event_type, state, seq as u32);
        let _ = self.inner.alerts.send(Pushed { seq, body });
        seq
    }

    /// Report every alert written to a stream on `tx`, from now on.
    pub fn record_deliveries(&self, tx: tokio::sync::mpsc::UnboundedSender<Delivery>) {
        *self.inner.deliveries.lock().unwrap() = Some(tx);
    }

    /// End every open alert stream now, as an NVR does every 15–40 s, but at a moment of the
    /// caller's choosing: an orderly close between two parts (what was written arrives). The
    /// device keeps listening; the client reconnects.
    pub fn drop_streams(&self) {
        self.inner.drops.send_modify(|n| *n += 1);
    }

    /// Set the device's clock (its alerts' `dateTime`).
    pub fn set_clock(&self, clock: DeviceClock) {
        *self.inner.clock.lock().unwrap() = clock;
    }

    /// Send a raw part body (e.g. a line of a recorded sequence).
    pub fn push_raw(&self, body: &str) {
        self.inner.push(body.to_string());
    }

    /// Make `/picture` fail (an XML `ResponseStatus` with HTTP 200) or work again.
    pub fn set_picture_error(&self, on: bool) {
        self.inner
            .picture_error
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The JPEG `/picture` serves (a colour-bar test pattern, 640×360).
    pub fn picture(&self) -> Vec<u8> {
        self.inner.jpeg.get_or_init(test_pattern_jpeg).clone()
    }

    /// A scripted event: `count` `active` alerts `every` apart, then `inactive` if the
    /// personality sends it.
    pub fn burst(
        &self,
        channel: u32,
        event_type: &str,
        count: u32,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let (inner, ty) = (self.inner.clone(), event_type.to_string());
        tokio::spawn(async move {
            for n in 1..=count {
                inner.push(inner.alert(channel, &ty, "active", n));
                tokio::time::sleep(every).await;
            }
            if inner.cfg.personality.sends_inactive {
                inner.push(inner.alert(channel, &ty, "inactive", 0));
            }
        })
    }

    /// Replay recorded part bodies (a capture's `content` lines) with their timing: the
    /// captures carry no receive times, so the devices' own `dateTime` (1 s resolution) sets
    /// the pace, and the parts within one second are spread evenly across it. `speed` 1.0 is
    /// real time.
    pub fn replay(&self, bodies: Vec<String>, speed: f64) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        let offsets = replay_offsets(&bodies);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for (body, at) in bodies.into_iter().zip(offsets) {
                tokio::time::sleep_until(start + at.div_f64(speed)).await;
                inner.push(body);
            }
        })
    }

    pub fn stream_count(&self) -> usize {
        self.inner.alerts.receiver_count()
    }
}

impl Drop for HikSim {
    fn drop(&mut self) {
        if let Some(s) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            s.task.abort();
        }
    }
}

impl Inner {
    /// Send a body on every open stream, numbered.
    fn push(&self, body: String) {
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.alerts.send(Pushed { seq, body });
    }

    fn alert(&self, channel: u32, event_type: &str, state: &str, post_count: u32) -> String {
        let now = self.clock.lock().unwrap().now();
        alert_xml(
            channel,
            event_type,
            state,
            post_count,
            self.cfg.personality.eol,
            &now,
        )
    }
}

async fn serve(inner: Arc<Inner>, sock: tokio::net::TcpStream) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        {
            let mut st = inner.stats.lock().unwrap();
            st.requests += 1;
            st.with_credentials += u64::from(headers.contains_key("authorization"));
        }
        // A body (PUT, POST) is read whole: the connection stays in step.
        let body_len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut req_body = vec![0u8; body_len.min(1 << 20)];
        if body_len > 0 {
            r.read_exact(&mut req_body).await?;
        }
        let req_body = String::from_utf8_lossy(&req_body).into_owned();
        if let Err(resp) = check_auth(&inner, &method, &path, headers.get("authorization")) {
            w.write_all(resp.as_bytes()).await?;
            continue;
        }
        let p = path.split('?').next().unwrap_or("");
        if p.eq_ignore_ascii_case("/ISAPI/Event/notification/alertStream") {
            return alert_stream(inner, w).await;
        }
        if let Some(kind) = picture_path(p) {
            // Cameras serve `Streaming`; NVRs answer it with an error *with HTTP 200* and
            // serve the proxied channel's picture under `StreamingProxy` (protocols.md §2).
            let fail = inner
                .picture_error
                .load(std::sync::atomic::Ordering::Relaxed)
                || (inner.cfg.personality.nvr && kind == "Streaming");
            let (ctype, body) = if fail {
                (
                    "application/xml",
                    RESPONSE_STATUS_NOT_SUPPORTED
                        .replace("x</requestURL>", &format!("{p}</requestURL>"))
                        .into_bytes(),
                )
            } else {
                (
                    "image/jpeg",
                    inner.jpeg.get_or_init(test_pattern_jpeg).clone(),
                )
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
                body.len()
            );
            w.write_all(head.as_bytes()).await?;
            w.write_all(&body).await?;
            continue;
        }
        let (status, ctype, body) = if p.eq_ignore_ascii_case("/ISAPI/System/deviceInfo") {
            // NVRs are other devices: their own model and serial (HA merges devices that share
            // an identifier).
            let body = if inner.cfg.personality.nvr {
                DEVICE_INFO
                    .replace("IPDome", "NVR")
                    .replace("<deviceName>PTZ", "<deviceName>NVR")
                    .replace(
                        "DS-2DE4A425IW-DE20180101AAWRC52000000W",
                        "DS-7608NI-K220190101CCWR000000001",
                    )
                    .replace("DS-2DE4A425IW-DE", "DS-7608NI-K2")
            } else {
                DEVICE_INFO.to_string()
            };
            ("200 OK", "application/xml", body)
        } else if p.eq_ignore_ascii_case("/ISAPI/ContentMgmt/InputProxy/channels")
            && inner.cfg.personality.nvr
        {
            let chans: String = (1..=4)
                // Channel 3's name carries an escaped character, as installers' names do.
                .map(|i| {
                    let name = if i == 3 { "Gate &amp; Drive".to_string() } else { format!("Camera {i:02}") };
                    format!("<InputProxyChannel version=\"2.0\"><id>{i}</id><name>{name}</name><sourceInputPortDescriptor><proxyProtocol>HIKVISION</proxyProtocol><ipAddress>192.0.2.{}</ipAddress></sourceInputPortDescriptor></InputProxyChannel>", 10 + i)
                })
                .collect();
            (
                "200 OK",
                "application/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InputProxyChannelList version=\"2.0\" xmlns=\"http://www.hikvision.com/ver20/XMLSchema\">{chans}</InputProxyChannelList>\n"
                ),
            )
        } else if p.eq_ignore_ascii_case("/ISAPI/System/Video/inputs/channels") {
            if inner.cfg.personality.nvr {
                // Pure NVRs answer 403 here (protocols.md §2).
                ("403 Forbidden", "application/xml", "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ResponseStatus version=\"1.0\"><statusCode>4</statusCode><statusString>Invalid Operation</statusString><subStatusCode>notSupport</subStatusCode></ResponseStatus>\n".to_string())
            } else {
                ("200 OK", "application/xml", "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<VideoInputChannelList version=\"2.0\" xmlns=\"http://www.hikvision.com/ver20/XMLSchema\"><VideoInputChannel><id>1</id><inputPort>1</inputPort><videoInputEnabled>true</videoInputEnabled><name>Camera 01</name></VideoInputChannel></VideoInputChannelList>\n".to_string())
            }
        } else if p.eq_ignore_ascii_case("/ISAPI/ContentMgmt/Storage") {
            let hdds = if inner.cfg.personality.nvr {
                "<hdd><id>1</id><hddName>hdd1</hddName><hddType>SATA</hddType><status>ok</status><capacity>1907729</capacity><freeSpace>125952</freeSpace><property>RW</property></hdd><hdd><id>2</id><hddName>hdd2</hddName><hddType>SATA</hddType><status>error</status><capacity>1907729</capacity><freeSpace>0</freeSpace><property>RW</property></hdd>"
            } else {
                "<hdd><id>1</id><hddName>sd</hddName><hddType>SD</hddType><status>ok</status><capacity>30436</capacity><freeSpace>1024</freeSpace><property>RW</property></hdd>"
            };
            (
                "200 OK",
                "application/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<storage version=\"1.0\" xmlns=\"http://www.hikvision.com/ver10/XMLSchema\"><hddList version=\"1.0\">{hdds}</hddList></storage>\n"
                ),
            )
        } else if p.eq_ignore_ascii_case("/ISAPI/Event/triggers") {
            // The real devices' answers (recorded by HikSink).
            (
                "200 OK",
                "application/xml",
                if inner.cfg.personality.nvr {
                    TRIGGERS_NVR
                } else {
                    TRIGGERS_CAM
                }
                .to_string(),
            )
        } else if p.eq_ignore_ascii_case("/ISAPI/Security/adminAccesses") {
            (
                "200 OK",
                "application/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AdminAccessProtocolList version=\"2.0\" xmlns=\"http://www.hikvision.com/ver20/XMLSchema\"><AdminAccessProtocol><id>1</id><enabled>true</enabled><protocol>HTTP</protocol><portNo>80</portNo></AdminAccessProtocol><AdminAccessProtocol><id>4</id><enabled>true</enabled><protocol>RTSP</protocol><portNo>{}</portNo></AdminAccessProtocol></AdminAccessProtocolList>\n",
                    inner.rtsp_port
                ),
            )
        } else if let Some(track) = daily_path(p).filter(|_| method == "POST") {
            daily_distribution(&inner, track, &req_body)
        } else if let Some(id) = key_frame_path(p).filter(|_| method == "PUT") {
            // `PUT /ISAPI/Streaming/channels/<id>/requestKeyFrame`: the stream's next frame is
            // an IDR (a client that joined mid-GOP need not wait for the next one).
            match &inner.key_frames {
                Some(k) if inner.cfg.key_frame_requests && k.request(id) => (
                    "200 OK",
                    "application/xml",
                    RESPONSE_STATUS_OK.replace("x</requestURL>", &format!("{p}</requestURL>")),
                ),
                _ => (
                    "404 Not Found",
                    "application/xml",
                    RESPONSE_STATUS_NOT_SUPPORTED.to_string(),
                ),
            }
        } else {
            (
                "404 Not Found",
                "application/xml",
                RESPONSE_STATUS_NOT_SUPPORTED.to_string(),
            )
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            body.len()
        );
        w.write_all(resp.as_bytes()).await?;
    }
}

const RESPONSE_STATUS_NOT_SUPPORTED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ResponseStatus version=\"1.0\" xmlns=\"http://www.hikvision.com/ver10/XMLSchema\">\n<requestURL>x</requestURL>\n<statusCode>4</statusCode>\n<statusString>Invalid Operation</statusString>\n<subStatusCode>notSupport</subStatusCode>\n</ResponseStatus>\n";

const RESPONSE_STATUS_OK: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ResponseStatus version=\"1.0\" xmlns=\"http://www.hikvision.com/ver10/XMLSchema\">\n<requestURL>x</requestURL>\n<statusCode>1</statusCode>\n<statusString>OK</statusString>\n<subStatusCode>ok</subStatusCode>\n</ResponseStatus>\n";

/// The track id of `/ISAPI/ContentMgmt/record/tracks/<id>/dailyDistribution`.
fn daily_path(p: &str) -> Option<u32> {
    let lower = p.to_ascii_lowercase();
    let rest = lower.strip_prefix("/isapi/contentmgmt/record/tracks/")?;
    rest.strip_suffix("/dailydistribution")?.parse().ok()
}

/// The answer to a `dailyDistribution` search: every day of the asked month, `record` true on
/// the configured days (track `<ch>01` of an existing channel only).
fn daily_distribution(
    inner: &Inner,
    track: u32,
    body: &str,
) -> (&'static str, &'static str, String) {
    let not_supported = || {
        (
            "404 Not Found",
            "application/xml",
            RESPONSE_STATUS_NOT_SUPPORTED.to_string(),
        )
    };
    let Some(days) = &inner.cfg.record_days else {
        return not_supported();
    };
    let channels = if inner.cfg.personality.nvr { 4 } else { 1 };
    if track % 100 != 1 || !(1..=channels).contains(&(track / 100)) {
        return not_supported();
    }
    let field = |name: &str| -> Option<i64> {
        body.split(&format!("<{name}>"))
            .nth(1)?
            .split('<')
            .next()?
            .trim()
            .parse()
            .ok()
    };
    let bad = || {
        (
            "400 Bad Request",
            "application/xml",
            RESPONSE_STATUS_NOT_SUPPORTED.replace("Invalid Operation", "Invalid XML Content"),
        )
    };
    let (Some(year), Some(month)) = (field("year"), field("monthOfYear")) else {
        return bad();
    };
    let Some(first) = chrono::NaiveDate::from_ymd_opt(year as i32, month as u32, 1) else {
        return bad();
    };
    let mut list = String::new();
    let mut d = first;
    while d.month() == first.month() {
        let rec = days.contains(&d);
        list.push_str(&format!(
            "<day><id>{n}</id><dayOfMonth>{n}</dayOfMonth><record>{rec}</record>{t}</day>",
            n = d.day(),
            t = if rec {
                "<recordType>time</recordType>"
            } else {
                ""
            }
        ));
        d = d.succ_opt().unwrap_or(first);
    }
    (
        "200 OK",
        "application/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<trackDailyDistribution version=\"1.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\"><dayList>{list}</dayList></trackDailyDistribution>\n"
        ),
    )
}

/// The stream id of `/ISAPI/Streaming/channels/<id>/requestKeyFrame`.
fn key_frame_path(p: &str) -> Option<u32> {
    let rest = p
        .get(.."/ISAPI/Streaming/channels/".len())
        .filter(|h| h.eq_ignore_ascii_case("/ISAPI/Streaming/channels/"))
        .map(|h| &p[h.len()..])?;
    let (id, tail) = rest.split_once('/')?;
    tail.eq_ignore_ascii_case("requestKeyFrame")
        .then(|| id.parse().ok())
        .flatten()
}

/// `Streaming` or `StreamingProxy` for `/ISAPI/<kind>/channels/<N>01/picture`.
fn picture_path(p: &str) -> Option<&'static str> {
    let lower = p.to_ascii_lowercase();
    let rest = lower.strip_prefix("/isapi/")?;
    let (kind, rest) = if let Some(r) = rest.strip_prefix("streaming/channels/") {
        ("Streaming", r)
    } else {
        (
            "StreamingProxy",
            rest.strip_prefix("contentmgmt/streamingproxy/channels/")?,
        )
    };
    let id = rest.strip_suffix("/picture")?;
    (id.len() >= 3 && id.bytes().all(|b| b.is_ascii_digit())).then_some(kind)
}

fn check_auth(
    inner: &Inner,
    method: &str,
    path: &str,
    auth: Option<&String>,
) -> Result<(), String> {
    let cfg = &inner.cfg;
    let now = tokio::time::Instant::now();
    let locked = inner.locked_until.lock().unwrap().is_some_and(|t| now < t);
    let challenge = || {
        let mut n = inner.nonce_seq.lock().unwrap();
        *n += 1;
        let nonce = format!("{:032x}", *n as u128 * 0x9e3779b97f4a7c15);
        let hdr = if cfg.personality.nvr {
            format!(
                "Digest realm=\"DS-SIM-NVR\", domain=\"::\", qop=\"auth\", nonce=\"{nonce}\", opaque=\"\", algorithm=\"MD5\", stale=\"FALSE\""
            )
        } else {
            format!(
                "Digest qop=\"auth\", realm=\"IP Camera(SIM01)\", nonce=\"{nonce}\", stale=\"FALSE\""
            )
        };
        let body = "<!DOCTYPE html>\n<html><head><title>Document Error: Unauthorized</title></head>\n<body><h2>Access Error: 401 -- Unauthorized</h2>\n<p>Authentication Error</p>\n</body>\n</html>\n";
        format!(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {hdr}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let Some(auth) = auth else {
        inner.stats.lock().unwrap().unauthenticated += 1;
        return Err(challenge());
    };
    if locked {
        inner.stats.lock().unwrap().locked_out += 1;
        return Err(challenge());
    }
    let p = params(auth);
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    let ha1 = md5_hex(&format!(
        "{}:{}:{}",
        get("username"),
        get("realm"),
        cfg.password
    ));
    let ha2 = md5_hex(&format!("{method}:{}", get("uri")));
    let want = md5_hex(&format!(
        "{ha1}:{}:{}:{}:{}:{ha2}",
        get("nonce"),
        get("nc"),
        get("cnonce"),
        get("qop")
    ));
    let opaque_ok = !cfg.personality.nvr || p.contains_key("opaque");
    if get("username") == cfg.username && get("response") == want && get("uri") == path && opaque_ok
    {
        return Ok(());
    }
    let mut st = inner.stats.lock().unwrap();
    st.bad_logins += 1;
    if st.bad_logins >= cfg.lockout_after as u64 {
        *inner.locked_until.lock().unwrap() = Some(now + cfg.lockout_for);
    }
    Err(challenge())
}

async fn alert_stream(
    inner: Arc<Inner>,
    mut w: tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<()> {
    let p = inner.cfg.personality.clone();
    let stream_no = {
        let mut st = inner.stats.lock().unwrap();
        st.streams += 1;
        st.streams
    };
    let mut rx = inner.alerts.subscribe();
    let mut drops = inner.drops.subscribe();
    tracing::info!(stream = stream_no, "alert stream opened");
    let head = if p.http10 {
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: multipart/mixed; boundary={}\r\nConnection: close\r\n\r\n",
            p.boundary
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: multipart/mixed; boundary={}\r\nTransfer-Encoding: chunked\r\n\r\n",
            p.boundary
        )
    };
    w.write_all(head.as_bytes()).await?;
    let line = if p.boundary.starts_with("--") {
        p.boundary.to_string()
    } else {
        format!("--{}", p.boundary)
    };
    // What comes before a part's headers: blank lines and (duplicated) boundary lines.
    let opener = {
        let mut o = String::new();
        if p.blank_lines {
            o.push_str(p.eol);
        }
        for _ in 0..if p.duplicate_boundary { 2 } else { 1 } {
            o.push_str(&line);
            o.push_str(p.eol);
        }
        o
    };
    let part = |body: &str| {
        let mut s = format!(
            "{opener}Content-Type: application/xml; charset=\"UTF-8\"{eol}",
            eol = p.eol
        );
        if p.content_length {
            s.push_str(&format!("Content-Length: {}{}", body.len(), p.eol));
        }
        s.push_str(p.eol);
        s.push_str(body);
        if !p.content_length {
            s.push_str(p.eol);
        }
        s
    };
    let chunked = !p.http10;
    let end = p.close_after.map(|d| tokio::time::Instant::now() + d);
    let mut hb = p.heartbeat.map(tokio::time::interval);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(Pushed { seq, body }) => {
                    write(&mut w, part(&body), chunked).await?;
                    if let Some(tx) = inner.deliveries.lock().unwrap().as_ref() {
                        let at_ms = inner.started.elapsed().as_millis() as u64;
                        let _ = tx.send(Delivery { seq, stream: stream_no, at_ms });
                    }
                    if p.jpeg_parts {
                        // Binary: needs its Content-Length whatever the personality.
                        let jpeg: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, b'\r', b'\n', b'-', b'-', 0xFF, 0xD9];
                        let mut data = format!("{opener}Content-Type: image/jpeg{eol}Content-Length: {}{eol}{eol}", jpeg.len(), eol = p.eol).into_bytes();
                        data.extend_from_slice(jpeg);
                        data.extend_from_slice(p.eol.as_bytes());
                        write_bytes(&mut w, data, chunked).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return Ok(()),
            },
            _ = async { match hb.as_mut() { Some(i) => { i.tick().await; } None => std::future::pending().await } } => {
                write(&mut w, part(&inner.alert(1, "videoloss", "inactive", 0)), chunked).await?;
            }
            _ = drops.changed() => {
                // Dropped (`HikSim::drop_streams`): closed between two parts, without the
                // chunked body's last chunk (a client of a chunked stream sees it end early;
                // a close-delimited one cannot tell it from the periodic close).
                tracing::info!(stream = stream_no, "alert stream dropped");
                return w.shutdown().await;
            }
            _ = async { match end { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                // Healthy end of stream (NVRs do this every 15–40 s).
                tracing::info!(stream = stream_no, "alert stream closed (the periodic close)");
                if chunked {
                    w.write_all(b"0\r\n\r\n").await?;
                }
                return w.shutdown().await;
            }
        }
    }
}

async fn write(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    s: String,
    chunked: bool,
) -> std::io::Result<()> {
    let data = if chunked {
        format!("{:x}\r\n{s}\r\n", s.len())
    } else {
        s
    };
    w.write_all(data.as_bytes()).await
}

async fn write_bytes(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    s: Vec<u8>,
    chunked: bool,
) -> std::io::Result<()> {
    if chunked {
        w.write_all(format!("{:x}\r\n", s.len()).as_bytes()).await?;
        w.write_all(&s).await?;
        w.write_all(b"\r\n").await
    } else {
        w.write_all(&s).await
    }
}
