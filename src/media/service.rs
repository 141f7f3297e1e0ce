//! The media service: snapshots (chain of sources, saving, retention, publishing), pictures
//! for door events and alarms, and the RTSP hubs they share with live streams.
//!
//! Snapshot sources, in order:
//! 1. the camera's own JPEG (`/ISAPI/Streaming/channels/<ch>01/picture`; NVRs answer that with
//!    an XML `ResponseStatus` and HTTP 200, and serve `StreamingProxy` instead) — cheapest,
//!    and the only way for H.265 cameras;
//! 2. a running RTSP session: its kept GOP is decoded (the keyframe alone for a command; up to
//!    the first frame at or after the event for a door event, so the picture shows the moment);
//! 3. a session opened for it, until its first keyframe.

use super::decode::{DecodeStats, Decoders, MAX_DECODES};
use super::h264;
use super::hub::{Frame, Hub, KeyFrameRequest, Params, Recv, Target};
use crate::bus::Bus;
use crate::config::{Config, ConfigRx, HikvisionConfig, StreamKind};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Event, Message, Snapshot};
use crate::sources::hikvision::client::IsapiClient;
use crate::storage::{PictureRow, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Events older than this when they arrive (a REST backfill, a replay) get no picture: the
/// camera would show now, not then.
pub const PICTURE_MAX_AGE: Duration = Duration::from_secs(60);

/// Camera channels are 1..=256 (more than any NVR has): bounds the hubs a caller can create.
pub const MAX_CHANNEL: u32 = 256;

/// Who asked for a picture.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Mqtt,
    Rest,
    DoorEvent(String),
    Alarm(String),
}

impl Trigger {
    fn name(&self) -> &'static str {
        match self {
            Trigger::Mqtt => "mqtt",
            Trigger::Rest => "rest",
            Trigger::DoorEvent(_) => "door_event",
            Trigger::Alarm(_) => "alarm",
        }
    }
}

/// Whether an event takes a picture, and from which camera channel. The MQTT sink asks the
/// same question to put the picture URL in the event's payload.
pub fn event_camera<'a>(cfg: &'a Config, door: Option<u64>, kind: &str) -> Option<(&'a str, u32)> {
    let d = cfg.doors.get(&door?)?;
    if !d.snapshot_on(kind) {
        return None;
    }
    d.camera_ref()
}

/// Whether an event is recent enough for a picture: live events always are; others (REST
/// polling, a backfill after an outage) when their time is within [`PICTURE_MAX_AGE`] of now
/// either way (Net2 stamps local time, and its offset can be off by the server's zone).
pub fn event_is_fresh(live: bool, time: chrono::DateTime<chrono::FixedOffset>) -> bool {
    live || (chrono::Utc::now() - time.to_utc())
        .abs()
        .to_std()
        .is_ok_and(|d| d <= PICTURE_MAX_AGE)
}

/// Path (under the web server) of an event's picture.
pub fn event_picture_path(event_id: &str) -> String {
    format!(
        "/api/events/{}/picture",
        percent_encoding::utf8_percent_encode(event_id, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// What the service knows about a camera device.
/// A JPEG, where it came from (`picture`, `live`, `rtsp`) and, for a picture of a moment,
/// how long after it the frame shown arrived.
struct Picture {
    jpeg: bytes::Bytes,
    source: &'static str,
    after_event_ms: Option<i64>,
}

/// What [`Media::take`] found within `snapshot_timeout`: the camera's own JPEG, or frames to
/// decode. The decode is not timed: a picture waiting for its turn to decode (a burst of door
/// events) is late, not lost.
enum Found {
    Jpeg(Picture),
    Frames {
        params: Arc<Params>,
        frames: Vec<Arc<Frame>>,
        source: &'static str,
        after_event_ms: Option<i64>,
    },
}

/// `a - b` in milliseconds, either way round.
fn signed_ms(a: Instant, b: Instant) -> i64 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_millis() as i64,
        None => -((b - a).as_millis() as i64),
    }
}

struct Camera {
    cfg: HikvisionConfig,
    client: Option<Arc<IsapiClient>>,
    rtsp_port: Option<u16>,
    /// `/picture` failed recently: skip it until then.
    picture_broken_until: HashMap<u32, Instant>,
    /// Channels whose fallback from `/picture` to RTSP was said at INFO (once: NVR channels
    /// without `/picture` fall back on every snapshot).
    picture_fallback_said: std::collections::HashSet<u32>,
    /// The device refused our credentials (ISAPI or RTSP): nothing is tried until then, or
    /// the camera locks us out (Hikvision: ~30 min after a few bad logins, alarms included).
    auth_failed_until: Option<Instant>,
}

impl Camera {
    /// The camera refused our credentials recently: the error to give instead of trying.
    fn refused(&self, camera: &str) -> Option<Error> {
        let t = self.auth_failed_until.filter(|t| *t > Instant::now())?;
        Some(Error::new(
            ErrorKind::Auth,
            format!(
                "{camera} refused our credentials; not trying again for {} s (device lockout)",
                (t - Instant::now()).as_secs()
            ),
        ))
    }
}

/// A camera without ISAPI is asked whether it is there (RTSP DESCRIBE) this often while it
/// answers; no question while a session runs (its frames say so).
const RTSP_CHECK_EVERY: Duration = Duration::from_secs(60);
/// ... and this often (at most) once it does not, until `offline_after` says offline.
const RTSP_RECHECK: Duration = Duration::from_secs(5);

type HubKey = (String, u32, StreamKind);
type Pending = watch::Receiver<Option<std::result::Result<String, String>>>;

/// Door events at one camera channel less than this after the event a picture is being taken
/// for share that picture (each event still gets its own link). A burst of badges at a door
/// (several in one second; a simulator's 500 per second) took a picture per event: thousands
/// of pictures queued behind one decoder for minutes after the burst, each written to the SD
/// card, each task holding its memory (issue 18: 12 MB still allocated 10 min after 100,000
/// events). Pictures of one moment a second apart show the same thing.
const SHARE_WITHIN: Duration = Duration::from_secs(1);

/// The picture being taken for a door event at a camera channel, and the events that joined
/// it.
struct Shot {
    at: Instant,
    rx: Pending,
    /// Shared with the task taking it: a later shot may replace this one in the map while it
    /// is still being taken (events more than [`SHARE_WITHIN`] later).
    joined: Arc<Mutex<Vec<String>>>,
}

pub(crate) struct Inner {
    pub(crate) cfg_rx: ConfigRx,
    pub(crate) bus: Bus,
    pub(crate) store: Store,
    cameras: Mutex<HashMap<String, Camera>>,
    hubs: Mutex<HashMap<HubKey, Arc<Hub>>>,
    /// Event id → picture id once taken (or the error), for the web server to wait on.
    pending: Mutex<HashMap<String, Pending>>,
    /// (camera, channel) → the door event picture being taken there, which later events join.
    shots: Mutex<HashMap<(String, u32), Shot>>,
    pub(crate) group: Arc<retina::client::SessionGroup>,
    pub(crate) cancel: CancellationToken,
    dir: PathBuf,
    pub(crate) live: super::live::Lives,
    /// Base URL and signer of the web server, for URLs in payloads.
    pub(crate) urls: Option<crate::web::auth::UrlSigner>,
    /// Pictures decoded from RTSP take turns (memory: see `media::decode`).
    decoders: Decoders,
    /// The REST API's view of the cameras: an RTSP-only camera's reachability is written here.
    registry: crate::directory::Cameras,
    /// Picture retention by age waits while the wall clock is unset or just stepped (a Pi
    /// before NTP): see `clock`. Retention by count goes on.
    wall: std::sync::Mutex<crate::clock::WallWatch>,
    /// The daemon's clock: when a picture is taken, and what is old (tests step it).
    clock: Arc<dyn crate::clock::Clock>,
}

/// Cheap to clone; one per daemon.
#[derive(Clone)]
pub struct Media(pub(crate) Arc<Inner>);

impl Media {
    /// `gates`: each camera's credential gate, shared with its alert-stream source.
    pub fn start(
        cfg_rx: ConfigRx,
        bus: Bus,
        store: Store,
        gates: &std::collections::BTreeMap<String, Arc<crate::sources::hikvision::gate::AuthGate>>,
        registry: crate::directory::Cameras,
        clock: Arc<dyn crate::clock::Clock>,
        cancel: CancellationToken,
    ) -> Result<Media> {
        let cfg = cfg_rx.borrow().clone();
        let mut cameras = HashMap::new();
        for c in &cfg.sources.hikvision {
            let gate = gates.get(&c.id).cloned().unwrap_or_else(|| {
                Arc::new(crate::sources::hikvision::gate::AuthGate::ephemeral(&c.id))
            });
            // No ISAPI (an RTSP-only camera): no `/picture`, no key-frame requests.
            let client = c
                .isapi()
                .then(|| {
                    IsapiClient::new(
                        &c.url,
                        &c.username,
                        c.password.clone().unwrap_or_default(),
                        &c.tls,
                        gate,
                    )
                    .map(Arc::new)
                    .map_err(|e| tracing::warn!(camera = %c.id, error = %e, "no ISAPI client for pictures"))
                    .ok()
                })
                .flatten();
            cameras.insert(
                c.id.clone(),
                Camera {
                    cfg: c.clone(),
                    client,
                    rtsp_port: None,
                    picture_broken_until: HashMap::new(),
                    picture_fallback_said: Default::default(),
                    auth_failed_until: None,
                },
            );
        }
        let dir = cfg.media.snapshot_dir(&cfg.storage);
        let urls = cfg
            .web
            .as_ref()
            .map(crate::web::auth::UrlSigner::new)
            .transpose()?;
        let media = Media(Arc::new(Inner {
            cfg_rx,
            bus: bus.clone(),
            store,
            cameras: Mutex::new(cameras),
            hubs: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            shots: Mutex::new(HashMap::new()),
            group: Arc::new(retina::client::SessionGroup::default()),
            cancel,
            dir,
            live: Default::default(),
            urls,
            decoders: Decoders::new(MAX_DECODES),
            registry,
            wall: std::sync::Mutex::new(crate::clock::WallWatch::new(&*clock)),
            clock,
        }));
        let m = media.clone();
        let rx = bus.watch();
        tokio::spawn(async move { m.follow_bus(rx).await });
        for c in cfg.sources.hikvision.iter().filter(|c| !c.isapi()) {
            let (m, id) = (media.clone(), c.id.clone());
            tokio::spawn(async move { m.rtsp_availability(id).await });
        }
        // `media.idle_close` applies live to the running hubs (the rest is read at each use).
        let m = media.clone();
        let mut cfg_rx = m.0.cfg_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = cfg_rx.changed() => if r.is_err() { return },
                    _ = m.0.cancel.cancelled() => return,
                }
                let (idle, batch) = {
                    let c = cfg_rx.borrow();
                    (c.media.idle_close.get(), c.media.batch_reads)
                };
                for h in lock(&m.0.hubs).values() {
                    h.set_idle_close(idle);
                    h.set_batch_reads(batch);
                }
            }
        });
        Ok(media)
    }

    pub fn config(&self) -> Arc<Config> {
        self.0.cfg_rx.borrow().clone()
    }

    pub fn has_camera(&self, camera: &str) -> bool {
        lock(&self.0.cameras).contains_key(camera)
    }

    /// The camera's ISAPI client (its credential gate shared with its alert stream), when it
    /// speaks ISAPI.
    pub fn isapi(&self, camera: &str) -> Option<Arc<IsapiClient>> {
        lock(&self.0.cameras).get(camera)?.client.clone()
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The signer of URLs handed out (None without a web server).
    pub fn urls(&self) -> Option<&crate::web::auth::UrlSigner> {
        self.0.urls.as_ref()
    }

    /// The availability of a camera without ISAPI, from RTSP (its `camera/<id>` health, as
    /// the alert stream gives a Hikvision device's): online while a session runs or a
    /// DESCRIBE is answered, offline after `offline_after` of failures (at once on refused
    /// credentials, which are then not tried again for the lockout back-off).
    async fn rtsp_availability(&self, camera: String) {
        let mut online = None;
        let mut down_since: Option<Instant> = None;
        loop {
            let cfg = self.config();
            let kind = cfg.media.snapshot_stream;
            // A session ending or failing (a picture, a live view) is news: look again then.
            let Ok(hub) = self.hub(&camera, 1, kind) else {
                return;
            };
            let mut changes = hub.changes();
            changes.borrow_and_update();
            let offline_after = cfg
                .sources
                .hikvision
                .iter()
                .find(|c| c.id == camera)
                .map_or(Duration::from_secs(30), |c| c.offline_after.get());
            let running = hub.stats().running;
            let refused = lock(&self.0.cameras)
                .get(&camera)
                .and_then(|c| c.refused(&camera));
            let result = match (running, refused) {
                (true, _) => Ok(()),
                (false, Some(e)) => Err(e),
                (false, None) => match self.target(&camera, 1, kind) {
                    Ok(t) => super::hub::probe(&t, self.0.group.clone()).await,
                    Err(e) => Err(e),
                },
            };
            let (now, detail, next) = match &result {
                Ok(()) => {
                    down_since = None;
                    (Some(true), String::new(), RTSP_CHECK_EVERY)
                }
                Err(e) => {
                    let auth = e.kind() == ErrorKind::Auth;
                    if auth {
                        self.auth_failed(&camera);
                    }
                    let since = *down_since.get_or_insert_with(Instant::now);
                    let down = auth || since.elapsed() >= offline_after;
                    let detail = if auth {
                        format!("authentication failed: {e}")
                    } else {
                        e.to_string()
                    };
                    (
                        down.then_some(false),
                        detail,
                        RTSP_RECHECK.min(offline_after),
                    )
                }
            };
            if let Some(now) = now
                && online.replace(now) != Some(now)
            {
                self.0
                    .registry
                    .set_online(&camera, now, &detail, chrono::Utc::now());
                if now {
                    tracing::info!(camera, "camera reachable (RTSP)");
                } else {
                    tracing::warn!(camera, detail, "camera unreachable (RTSP)");
                }
                self.0
                    .bus
                    .publish(Message::Health(crate::model::SourceHealth {
                        source: format!("camera/{camera}"),
                        online: now,
                        live: now,
                        ready: now,
                        detail,
                    }))
                    .await;
            }
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = changes.changed() => {}
                _ = self.0.cancel.cancelled() => return,
            }
        }
    }

    /// Learn RTSP ports from the Hikvision source's device info; take pictures for door
    /// events and alarms.
    async fn follow_bus(&self, mut rx: tokio::sync::broadcast::Receiver<Message>) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let m = tokio::select! {
                _ = self.0.cancel.cancelled() => return,
                m = rx.recv() => m,
            };
            match m {
                Ok(Message::CameraInfo(i)) => {
                    if let Some(c) = lock(&self.0.cameras).get_mut(&i.device) {
                        c.rtsp_port = i.rtsp_port;
                    }
                    let hubs: Vec<_> = lock(&self.0.hubs)
                        .iter()
                        .filter(|(k, _)| k.0 == i.device)
                        .map(|(k, h)| (k.clone(), h.clone()))
                        .collect();
                    for ((cam, ch, kind), h) in hubs {
                        if let Ok(t) = self.target(&cam, ch, kind) {
                            h.set_target(t);
                        }
                    }
                }
                Ok(Message::Event(e)) => self.on_event(&e),
                Ok(Message::CameraAlarm(a)) if a.on => {
                    let wanted = self
                        .config()
                        .media
                        .snapshot_on_alarm
                        .iter()
                        .any(|t| t.eq_ignore_ascii_case(&a.event_type));
                    if let (true, Some(ch)) = (wanted, a.channel) {
                        let m = self.clone();
                        let trig = Trigger::Alarm(a.event_type.clone());
                        let cam = a.device.clone();
                        tokio::spawn(async move {
                            if let Err(e) = m.snapshot(&cam, ch, Some(Instant::now()), trig).await {
                                tracing::warn!(camera = %cam, channel = ch, error = %e, "no picture for alarm");
                            }
                        });
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "media service fell behind the bus: pictures for {n} message(s) may be missing"
                    );
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    fn on_event(&self, e: &Event) {
        let cfg = self.config();
        let Some((cam, ch)) = event_camera(&cfg, e.door.as_ref().map(|d| d.id), e.kind.name())
        else {
            return;
        };
        if !event_is_fresh(e.via == crate::model::Via::Live, e.time) {
            tracing::debug!(event = %e.id, time = %e.time, "event too old for a picture");
            return;
        }
        let at = Instant::now();
        let key = (cam.to_string(), ch);
        let (tx, rx) = watch::channel(None);
        let joined = Arc::new(Mutex::new(Vec::new()));
        {
            let mut p = lock(&self.0.pending);
            if p.contains_key(&e.id) {
                return; // the same event again (live and REST copies share the id)
            }
            // Bounded: forget the oldest waits (their pictures are in the database).
            if p.len() > 256 {
                p.retain(|_, r| r.borrow().is_none());
            }
            let mut shots = lock(&self.0.shots);
            if let Some(s) = shots
                .get_mut(&key)
                .filter(|s| at.saturating_duration_since(s.at) < SHARE_WITHIN)
            {
                lock(&s.joined).push(e.id.clone());
                p.insert(e.id.clone(), s.rx.clone());
                return;
            }
            shots.insert(
                key.clone(),
                Shot {
                    at,
                    rx: rx.clone(),
                    joined: joined.clone(),
                },
            );
            p.insert(e.id.clone(), rx);
        }
        let m = self.clone();
        let id = e.id.clone();
        tokio::spawn(async move {
            let (cam, ch) = (&key.0, key.1);
            let r = m
                .snapshot(cam, ch, Some(at), Trigger::DoorEvent(id.clone()))
                .await;
            // Closed to later events (under the lock they join by): they take their own.
            let joined = {
                let mut shots = lock(&m.0.shots);
                if shots.get(&key).is_some_and(|s| s.at == at) {
                    shots.remove(&key);
                }
                std::mem::take(&mut *lock(&joined))
            };
            match &r {
                Ok(s) => {
                    tracing::info!(event = %id, camera = %cam, channel = ch, source = %s.source, picture = %s.id, shared_with = joined.len(), "picture for door event")
                }
                Err(e) => {
                    tracing::warn!(event = %id, camera = %cam, channel = ch, error = %e, shared_with = joined.len(), "no picture for door event")
                }
            }
            if let (Ok(s), false) = (&r, joined.is_empty()) {
                let pic = s.id.clone();
                if let Err(e) =
                    m.0.store
                        .run(move |st| st.picture_link(&pic, &joined))
                        .await
                {
                    tracing::warn!(event = %id, picture = %s.id, error = %e, "unable to link a shared picture to its events");
                }
            }
            let _ = tx.send(Some(r.map(|s| s.id.clone()).map_err(|e| e.to_string())));
        });
    }

    /// Wait (up to `timeout`) for the picture of an event being taken. `None`: no picture
    /// is being taken for it.
    pub async fn wait_event_picture(
        &self,
        event_id: &str,
        timeout: Duration,
    ) -> Option<std::result::Result<String, String>> {
        let mut rx = lock(&self.0.pending).get(event_id)?.clone();
        let r = tokio::time::timeout(timeout, rx.wait_for(|v| v.is_some())).await;
        match r {
            Ok(Ok(v)) => v.clone(),
            _ => Some(Err("the picture is still being taken".into())),
        }
    }

    fn auth_failed(&self, camera: &str) {
        if let Some(c) = lock(&self.0.cameras).get_mut(camera) {
            c.auth_failed_until = Some(Instant::now() + super::hub::AUTH_BACKOFF);
        }
    }

    /// The RTSP address of a camera channel's stream.
    fn target(&self, camera: &str, channel: u32, kind: StreamKind) -> Result<Target> {
        let cams = lock(&self.0.cameras);
        let c = cams.get(camera).ok_or_else(|| {
            Error::new(ErrorKind::InvalidArgument, format!("no camera {camera:?}"))
        })?;
        let url = rtsp_url(&c.cfg, c.rtsp_port, channel, kind)?;
        Ok(Target::new(
            url,
            Some(c.cfg.username.clone()),
            c.cfg.password.clone(),
        ))
    }

    fn hub_if_any(&self, camera: &str, channel: u32, kind: StreamKind) -> Option<Arc<Hub>> {
        lock(&self.0.hubs)
            .get(&(camera.to_string(), channel, kind))
            .cloned()
    }

    /// The shared hub of a camera channel's stream (created on first use).
    pub fn hub(&self, camera: &str, channel: u32, kind: StreamKind) -> Result<Arc<Hub>> {
        if !(1..=MAX_CHANNEL).contains(&channel) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("channel {channel} out of range (1–{MAX_CHANNEL})"),
            ));
        }
        let key = (camera.to_string(), channel, kind);
        if let Some(h) = lock(&self.0.hubs).get(&key) {
            return Ok(h.clone());
        }
        let target = self.target(camera, channel, kind)?;
        let idle = self.config().media.idle_close.get();
        let client = lock(&self.0.cameras)
            .get(camera)
            .and_then(|c| c.client.clone());
        let mut hubs = lock(&self.0.hubs);
        Ok(hubs
            .entry(key)
            .or_insert_with(|| {
                let hub = Hub::new(
                    camera,
                    channel,
                    kind,
                    target,
                    idle,
                    self.0.group.clone(),
                    self.0.cancel.child_token(),
                );
                if let Some(c) = client {
                    hub.set_key_frame_request(key_frame_request(c, channel, kind));
                }
                hub.set_batch_reads(self.config().media.batch_reads);
                hub
            })
            .clone())
    }

    /// Take, save and publish a picture of a camera channel. `at`: the moment it should show
    /// (door events); `None` = whatever is quickest.
    pub async fn snapshot(
        &self,
        camera: &str,
        channel: u32,
        at: Option<Instant>,
        trigger: Trigger,
    ) -> Result<Arc<Snapshot>> {
        let p = self.picture(camera, channel, at).await?;
        self.save(camera, channel, p, trigger).await
    }

    /// Take a picture and only return it: nothing saved, published or linked (a dashboard
    /// polling REST `…/snapshot?save=false` every few seconds would otherwise write the SD
    /// card all day).
    pub async fn snapshot_unsaved(&self, camera: &str, channel: u32) -> Result<bytes::Bytes> {
        Ok(self.picture(camera, channel, None).await?.jpeg)
    }

    /// What the picture decoders are doing (how many run and wait; the most that ran at once).
    pub fn decode_stats(&self) -> DecodeStats {
        self.0.decoders.stats()
    }

    /// A JPEG and where it came from: the camera's, or frames found within `snapshot_timeout`
    /// and decoded when their turn comes.
    async fn picture(&self, camera: &str, channel: u32, at: Option<Instant>) -> Result<Picture> {
        let timeout = self.config().media.snapshot_timeout.get();
        let found = match tokio::time::timeout(timeout, self.take(camera, channel, at)).await {
            Ok(r) => r?,
            Err(_) => {
                let stats = self
                    .hub_if_any(camera, channel, self.config().media.snapshot_stream)
                    .map(|h| h.stats());
                if stats.as_ref().is_some_and(|s| s.auth_failed) {
                    self.auth_failed(camera);
                }
                let why = stats
                    .and_then(|s| s.last_error)
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("no picture from {camera}/{channel} within {timeout:?}{why}"),
                ));
            }
        };
        match found {
            Found::Jpeg(p) => Ok(p),
            Found::Frames {
                params,
                frames,
                source,
                after_event_ms,
            } => {
                let m = self.config().media.clone();
                let jpeg = decode(
                    &self.0.decoders,
                    params,
                    frames,
                    m.jpeg_quality,
                    m.max_width,
                )
                .await?;
                Ok(Picture {
                    jpeg,
                    source,
                    after_event_ms,
                })
            }
        }
    }

    async fn take(&self, camera: &str, channel: u32, at: Option<Instant>) -> Result<Found> {
        let (use_picture, client) = {
            let cams = lock(&self.0.cameras);
            let c = cams.get(camera).ok_or_else(|| {
                Error::new(ErrorKind::InvalidArgument, format!("no camera {camera:?}"))
            })?;
            if let Some(e) = c.refused(camera) {
                return Err(e);
            }
            let broken = c
                .picture_broken_until
                .get(&channel)
                .is_some_and(|t| *t > Instant::now());
            (c.cfg.use_picture && !broken, c.client.clone())
        };
        if !(1..=MAX_CHANNEL).contains(&channel) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("channel {channel} out of range (1–{MAX_CHANNEL})"),
            ));
        }
        let mut errors = Vec::new();
        if let (true, Some(client)) = (use_picture, client) {
            match device_picture(&client, channel).await {
                Ok(jpeg) => {
                    return Ok(Found::Jpeg(Picture {
                        jpeg,
                        source: "picture",
                        after_event_ms: at.map(|at| signed_ms(Instant::now(), at)),
                    }));
                }
                Err(e) if e.kind() == ErrorKind::Auth => {
                    // The same credentials would fail over RTSP too: one bad login, not two.
                    self.auth_failed(camera);
                    return Err(e);
                }
                Err(e) => {
                    // Only "this device has no /picture" answers turn it off for the channel
                    // (a timeout on a busy NVR does not).
                    if e.kind() == ErrorKind::Protocol {
                        tracing::info!(camera, channel, error = %e, "camera /picture unusable; decoding RTSP instead (skipping /picture for 10 min)");
                        if let Some(c) = lock(&self.0.cameras).get_mut(camera) {
                            c.picture_broken_until
                                .insert(channel, Instant::now() + Duration::from_secs(600));
                        }
                    } else {
                        // Expected on every snapshot of an NVR channel without /picture: said
                        // once per channel, without the device's XML answer (DEBUG has it).
                        let first = lock(&self.0.cameras)
                            .get_mut(camera)
                            .is_some_and(|c| c.picture_fallback_said.insert(channel));
                        if first {
                            // Each attempt as `<path>: HTTP <status>, not a JPEG`, without
                            // the body device_picture quotes after it.
                            let reason = e
                                .to_string()
                                .split("; ")
                                .map(|a| a.splitn(3, ": ").take(2).collect::<Vec<_>>().join(": "))
                                .collect::<Vec<_>>()
                                .join("; ");
                            tracing::info!(
                                camera,
                                channel,
                                reason,
                                "camera /picture unavailable; decoding RTSP instead (said once per channel)"
                            );
                        }
                        tracing::debug!(camera, channel, error = %e, "camera /picture failed; decoding RTSP instead");
                    }
                    errors.push(format!("/picture: {e}"));
                }
            }
        }
        let m = self.config().media.clone();
        let hub = self.hub(camera, channel, m.snapshot_stream)?;
        let was_running = hub.gop_until(None).is_some();
        // Keep the session open while we look (and for idle_close after: a burst of door
        // events reuses it).
        let mut sub = hub.subscribe();
        if let Some(at) = at {
            // Wait for a frame from the moment or after it. A stream with a GOP gets at most a
            // second (frames may have stopped: then the newest there is). A cold session may
            // have joined mid-GOP with a camera that cannot be asked for a key frame: it
            // waits for the camera's next one, however long its GOP (`snapshot_timeout`
            // bounds it), and the picture says how late it is (`after_event_ms`).
            let deadline = at + Duration::from_secs(1);
            loop {
                let gop = hub.gop_until(Some(at));
                if gop
                    .as_ref()
                    .is_some_and(|(_, f)| f.last().is_some_and(|l| l.received >= at))
                {
                    break;
                }
                if gop.is_some() && Instant::now() >= deadline {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(1), sub.recv()).await {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) if gop.is_some() => break,
                    Err(_) => {}
                }
            }
        } else {
            while hub.gop_until(None).is_none() {
                match sub.recv().await {
                    Some(Recv::Frame(_)) | Some(Recv::Missed(_)) => {}
                    None => break,
                }
            }
        }
        let source = if was_running { "live" } else { "rtsp" };
        let Some((params, frames)) = hub.gop_until(at) else {
            if hub.stats().auth_failed {
                self.auth_failed(camera);
            }
            errors.push(
                hub.stats()
                    .last_error
                    .unwrap_or_else(|| "no keyframe from RTSP".into()),
            );
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("no picture from {camera}/{channel}: {}", errors.join("; ")),
            ));
        };
        drop(sub);
        let shown = frames.last().map(|f| f.received);
        Ok(Found::Frames {
            params,
            frames,
            source,
            after_event_ms: at.zip(shown).map(|(at, shown)| signed_ms(shown, at)),
        })
    }

    async fn save(
        &self,
        camera: &str,
        channel: u32,
        picture: Picture,
        trigger: Trigger,
    ) -> Result<Arc<Snapshot>> {
        let Picture {
            jpeg,
            source,
            after_event_ms,
        } = picture;
        let taken = self.0.clock.now();
        let id = format!(
            "{}-{:08x}",
            taken.format("%Y%m%dT%H%M%S%3fZ"),
            rand::random::<u32>()
        );
        let dir = self.0.dir.join(camera).join(channel.to_string());
        let path = dir.join(format!("{id}.jpg"));
        let event_id = match &trigger {
            Trigger::DoorEvent(e) => Some(e.clone()),
            _ => None,
        };
        let row = PictureRow {
            id: id.clone(),
            camera: camera.to_string(),
            channel,
            taken,
            source: source.to_string(),
            trigger: trigger.name().to_string(),
            event_id: event_id.clone(),
            path: path.clone(),
            bytes: jpeg.len() as u64,
        };
        let m = self.config().media.clone();
        let by_age = m.keep_days > 0
            && self
                .0
                .wall
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .trusted(&*self.0.clock, crate::sinks::store::PRUNE_SETTLE);
        if m.keep_days > 0 && !by_age {
            tracing::info!(
                "the wall clock is not set or was just stepped: pictures are not expired by age for now"
            );
        }
        let (data, store) = (jpeg.clone(), self.0.store.clone());
        let now = self.0.clock.now();
        let gone = tokio::task::spawn_blocking(move || -> Result<Vec<PictureRow>> {
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::with_source(ErrorKind::Storage, format!("unable to create {}", dir.display()), e)
            })?;
            let tmp = path.with_extension("jpg.tmp");
            std::fs::write(&tmp, &data)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| {
                    Error::with_source(ErrorKind::Storage, format!("unable to write {}", path.display()), e)
                })?;
            store.picture_insert(&row)?;
            let before = by_age.then(|| {
                (now - chrono::Duration::days(i64::from(m.keep_days))).timestamp_millis()
            });
            let gone = store.pictures_expire(&row.camera, row.channel, m.keep_count, before)?;
            for g in &gone {
                if let Err(e) = std::fs::remove_file(&g.path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %g.path.display(), error = %e, "unable to delete an expired picture");
                }
            }
            Ok(gone)
        })
        .await
        .map_err(|e| Error::with_source(ErrorKind::Internal, "picture save task failed", e))??;
        if !gone.is_empty() {
            tracing::debug!(
                camera,
                channel,
                deleted = gone.len(),
                "pictures past retention deleted"
            );
        }
        let url = self
            .0
            .urls
            .as_ref()
            .map(|u| u.signed(&format!("/api/pictures/{id}.jpg")));
        let snap = Arc::new(Snapshot {
            id,
            camera: camera.to_string(),
            channel,
            taken,
            source: source.to_string(),
            trigger: trigger.name().to_string(),
            event_id,
            after_event_ms,
            jpeg,
            url,
        });
        self.0.bus.publish(Message::Snapshot(snap.clone())).await;
        Ok(snap)
    }

    /// Close every session (TEARDOWN) and wait a little for the teardowns to go out.
    pub async fn shutdown(&self) {
        self.0.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.0.group.await_teardown()).await;
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `rtsp_url` with `{channel}` / `{stream}` substituted, or the Hikvision default
/// `rtsp://<host>:<port>/Streaming/Channels/<channel><0><stream>` (101 = channel 1 main).
pub fn rtsp_url(
    c: &HikvisionConfig,
    port: Option<u16>,
    channel: u32,
    kind: StreamKind,
) -> Result<url::Url> {
    let stream = kind.number();
    if let Some(u) = &c.rtsp_url {
        let s = u
            .expose()
            .replace("{channel}", &channel.to_string())
            .replace("{stream}", &stream.to_string());
        return url::Url::parse(&s).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("invalid rtsp_url {:?}: {e}", crate::secret::redact_url(&s)),
            )
        });
    }
    let base = url::Url::parse(&c.url)
        .map_err(|e| Error::new(ErrorKind::Config, format!("invalid camera url: {e}")))?;
    let host = base
        .host_str()
        .ok_or_else(|| Error::new(ErrorKind::Config, "camera url has no host"))?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    url::Url::parse(&format!(
        "rtsp://{host}:{}/Streaming/Channels/{}",
        port.unwrap_or(554),
        channel * 100 + stream
    ))
    .map_err(|e| Error::new(ErrorKind::Config, format!("RTSP URL for {}: {e}", c.id)))
}

/// Hikvision `PUT /ISAPI/Streaming/channels/<N0x>/requestKeyFrame`: the camera starts a new
/// GOP at once, so a session that joined mid-GOP has its first decodable picture in a frame
/// or two instead of at the camera's next scheduled I-frame (0–GOP, often 2–4 s). It changes
/// no setting. Used by other Hikvision clients for the same reason; devices without it answer
/// an error (`notSupport`), after which the hub does not ask again.
fn key_frame_request(client: Arc<IsapiClient>, channel: u32, kind: StreamKind) -> KeyFrameRequest {
    let path = format!(
        "/ISAPI/Streaming/channels/{}/requestKeyFrame",
        channel * 100 + if kind == StreamKind::Main { 1 } else { 2 }
    );
    Arc::new(move || {
        let (client, path) = (client.clone(), path.clone());
        Box::pin(async move {
            let res = client.put(&path, Some(Duration::from_secs(3))).await?;
            let status = res.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{path}: HTTP {status}"),
                ))
            }
        })
    })
}

/// The device's own JPEG: `Streaming`, then `StreamingProxy` (NVRs). A body that is not a
/// JPEG (XML `ResponseStatus` with HTTP 200, an HTML login page) is an error with its start.
async fn device_picture(client: &IsapiClient, channel: u32) -> Result<bytes::Bytes> {
    let mut errs = Vec::new();
    for kind in ["Streaming", "StreamingProxy"] {
        let path = format!("/ISAPI/{kind}/channels/{}01/picture", channel);
        let r = async {
            let res = client.get(&path, Some(Duration::from_secs(5))).await?;
            let status = res.status();
            let body = res.bytes().await.map_err(|e| {
                Error::with_source(ErrorKind::Unavailable, format!("{path} was cut off"), e)
            })?;
            if status.is_success() && body.starts_with(&[0xFF, 0xD8]) {
                return Ok(body);
            }
            let snippet: String = String::from_utf8_lossy(&body[..body.len().min(200)])
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            Err(Error::new(
                ErrorKind::Protocol,
                format!("{path}: HTTP {status}, not a JPEG: {snippet}"),
            ))
        }
        .await;
        match r {
            Ok(b) => return Ok(b),
            // Refused credentials: a second path would only count as another bad login.
            Err(e) if e.kind() == ErrorKind::Auth => return Err(e),
            Err(e) => errs.push(e.to_string()),
        }
    }
    Err(Error::new(ErrorKind::Unavailable, errs.join("; ")))
}

/// The last of `frames` (a run from a key frame) as a JPEG, when the decoders' turn comes.
async fn decode(
    decoders: &Decoders,
    params: Arc<Params>,
    frames: Vec<Arc<Frame>>,
    quality: u8,
    max_width: u32,
) -> Result<bytes::Bytes> {
    if params.encoding != "h264" {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "the stream is {} ({}); gatehouse decodes only H.264 for snapshots: enable the camera's /picture (use_picture) or set the snapshot stream to H.264",
                params.encoding.to_uppercase(),
                params.codec
            ),
        ));
    }
    decoders
        .run(move || {
            let ps = h264::avcc_parameter_sets(&params.extra_data).ok();
            let units: Vec<&[u8]> = frames.iter().map(|f| f.data.as_ref()).collect();
            h264::units_to_jpeg(ps.as_deref(), &units, quality, max_width)
                .map(|(j, _)| bytes::Bytes::from(j))
        })
        .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hikvision_rtsp_urls() {
        let mut c = HikvisionConfig {
            id: "g".into(),
            url: "http://10.0.0.5:8080".into(),
            ..Default::default()
        };
        assert_eq!(
            rtsp_url(&c, Some(8554), 1, StreamKind::Main)
                .unwrap()
                .as_str(),
            "rtsp://10.0.0.5:8554/Streaming/Channels/101"
        );
        assert_eq!(
            rtsp_url(&c, None, 12, StreamKind::Sub).unwrap().as_str(),
            "rtsp://10.0.0.5:554/Streaming/Channels/1202"
        );
        c.rtsp_url = Some(crate::secret::Secret::new(
            "rtsp://cam/ch{channel}/s{stream}",
        ));
        assert_eq!(
            rtsp_url(&c, None, 3, StreamKind::Sub).unwrap().as_str(),
            "rtsp://cam/ch3/s2"
        );
    }

    #[tokio::test]
    async fn h265_without_picture_is_a_clear_error() {
        let params = Arc::new(Params {
            encoding: "h265".into(),
            sample_entry: Vec::new(),
            codec: "hvc1.1.6.L120.90".into(),
            width: 1920,
            height: 1080,
            extra_data: Vec::new(),
        });
        let e = decode(&Decoders::new(1), params, Vec::new(), 80, 0)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("H265") && msg.contains("use_picture"), "{msg}");
    }

    #[test]
    fn credentials_in_the_url_are_decoded_and_removed() {
        let t = Target::new(
            url::Url::parse("rtsp://ad%40min:p%3Ass%2Fw@cam:554/x").unwrap(),
            None,
            None,
        );
        assert_eq!(t.url.as_str(), "rtsp://cam:554/x");
        assert_eq!(t.username.as_deref(), Some("ad@min"));
        assert_eq!(t.password.unwrap().expose(), "p:ss/w");
    }
}
