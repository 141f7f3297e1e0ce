//! Typed configuration. Every key has a doc comment and a default; `config.example.yaml`
//! documents the same keys for users. Loading and validation live in [`load`], hot reload in
//! [`reload`].

mod duration;
pub mod load;
pub mod reload;

pub use duration::HumanDuration;
pub use load::{
    ConfigError, ConfigErrors, SecretFiles, load_file, load_file_with, load_str, normalize_mac,
};
pub use reload::ConfigRx;

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// File format version; only `1` exists.
    pub version: u32,
    pub log: LogConfig,
    pub storage: StorageConfig,
    pub sources: SourcesConfig,
    /// The MQTT bridge. Absent = no MQTT.
    pub mqtt: Option<MqttConfig>,
    /// Per-door settings keyed by the Net2 door id (the ACU address).
    pub doors: BTreeMap<u64, DoorConfig>,
    /// Snapshots and live streams.
    pub media: MediaConfig,
    /// The local HTTP server (HLS, pictures, REST). Absent = no server.
    pub web: Option<WebConfig>,
    /// Sites (seed 001's `property_id`): doors name theirs with `doors.<id>.site`. Absent =
    /// one site, `default`. Applies live.
    pub sites: Vec<SiteConfig>,
    /// Apptive QR-code access. Absent = no QR readers.
    pub apptive: Option<ApptiveConfig>,
    /// People: one home / away state each, from Net2 badges, GATE Wi-Fi and QR entries.
    pub people: Vec<PersonConfig>,
    /// How presence is decided.
    pub presence: PresenceConfig,
}

/// One site (a property): the access points of the REST API are grouped by it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// `property_id` in the REST API: letters, digits, `-` and `_`.
    pub id: String,
    /// Display name; default the id.
    #[serde(default)]
    pub name: Option<String>,
}

impl Config {
    /// The configured sites, or the one default site.
    pub fn sites(&self) -> Vec<SiteConfig> {
        if self.sites.is_empty() {
            vec![SiteConfig {
                id: DEFAULT_SITE.into(),
                name: None,
            }]
        } else {
            self.sites.clone()
        }
    }

    /// The site of a gatehouse point that names none, and of doors without `site`.
    pub fn first_site(&self) -> String {
        self.sites
            .first()
            .map(|s| s.id.clone())
            .unwrap_or_else(|| DEFAULT_SITE.into())
    }

    /// A Net2 door's site: `doors.<id>.site`, else the first site.
    pub fn door_site(&self, door: u64) -> String {
        self.doors
            .get(&door)
            .and_then(|d| d.site.clone())
            .unwrap_or_else(|| self.first_site())
    }

    pub fn has_site(&self, id: &str) -> bool {
        self.sites().iter().any(|s| s.id == id)
    }
}

/// The site when `sites` is absent.
pub const DEFAULT_SITE: &str = "default";

/// Which RTSP stream of a camera channel: `main` (`/Streaming/Channels/N01`) or `sub` (`N02`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    #[default]
    Main,
    Sub,
}

impl StreamKind {
    /// The Hikvision stream number (`1` main, `2` sub) in `/Streaming/Channels/<ch><n>`.
    pub fn number(self) -> u32 {
        match self {
            StreamKind::Main => 1,
            StreamKind::Sub => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct MediaConfig {
    /// An RTSP session with no consumer left is closed after this long (live).
    pub idle_close: HumanDuration,
    /// Stream decoded for snapshots when the camera has no `/picture` (or it failed).
    pub snapshot_stream: StreamKind,
    /// Stream remuxed to HLS.
    pub live_stream: StreamKind,
    /// JPEG quality 1–100 of pictures decoded from RTSP (live).
    pub jpeg_quality: u8,
    /// Pictures decoded from RTSP wider than this are scaled down (live). 0 = never.
    pub max_width: u32,
    /// Where pictures are saved; default `snapshots/` next to the database. (restart)
    pub snapshot_dir: Option<PathBuf>,
    /// Keep at most this many pictures per camera channel (live), event pictures and the
    /// others counted apart (a poller never pushes a door event's picture out). 0 = no limit.
    pub keep_count: u32,
    /// Delete pictures older than this many days (live). 0 = keep.
    pub keep_days: u32,
    /// Publish the JPEG on MQTT retained when it is at most this many bytes (live).
    /// 0 = never retained.
    pub retain_max_bytes: u32,
    /// Hikvision alarm types that take a picture when they turn ON (`linedetection`,
    /// `fielddetection`, `VMD`…), case-insensitive (live). Empty = none.
    pub snapshot_on_alarm: Vec<String>,
    /// HLS segment target; segments end on the first keyframe after it. (live)
    pub hls_segment: HumanDuration,
    /// Segments kept in memory per live stream (and listed). 4 is the least that keeps three
    /// target durations in the playlist after a removal (RFC 8216 §6.2.2) with segments of
    /// equal length; each one more costs a segment of video in memory per stream.
    pub hls_window: u32,
    /// A live stream stops this long after the last heartbeat or playlist fetch (live).
    pub hls_stop_after: HumanDuration,
    /// Time allowed to find a picture (the camera's `/picture`, then RTSP frames, each in
    /// turn), live. Decoding the frames is not counted: a picture waiting for its turn to
    /// decode is late, not lost.
    pub snapshot_timeout: HumanDuration,
    /// Read busy RTSP streams a frame at a time (`SO_RCVLOWAT`, Linux; see
    /// `media::rcvlowat`). From the next RTSP session.
    pub batch_reads: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            idle_close: HumanDuration::secs(30),
            snapshot_stream: StreamKind::Main,
            live_stream: StreamKind::Main,
            jpeg_quality: 80,
            max_width: 1920,
            snapshot_dir: None,
            keep_count: 500,
            keep_days: 14,
            retain_max_bytes: 0,
            snapshot_on_alarm: Vec::new(),
            hls_segment: HumanDuration::secs(2),
            hls_window: 4,
            hls_stop_after: HumanDuration::secs(90),
            snapshot_timeout: HumanDuration::secs(10),
            batch_reads: true,
        }
    }
}

impl MediaConfig {
    /// `snapshot_dir`, or `snapshots/` beside the database.
    pub fn snapshot_dir(&self, storage: &StorageConfig) -> PathBuf {
        self.snapshot_dir.clone().unwrap_or_else(|| {
            storage
                .path
                .parent()
                .map(|p| p.join("snapshots"))
                .unwrap_or_else(|| PathBuf::from("snapshots"))
        })
    }
}

/// How the web server checks requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebAuth {
    /// A JWT (HS256, signed with `jwt_secret`) as `Authorization: Bearer` or `?token=`.
    #[default]
    Token,
    /// No authentication: anyone who reaches `bind` sees the cameras. Logged as a warning.
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct WebConfig {
    /// Listen address. Loopback by default; put it behind a reverse proxy for the LAN.
    /// (restart)
    pub bind: std::net::SocketAddr,
    /// Base of the URLs gatehouse hands out (MQTT payloads); default `http://<bind>`.
    pub public_url: Option<String>,
    /// HS256 key for tokens, at least 16 characters; `${ENV}` substituted; or
    /// `jwt_secret_file`. Required with `auth: token`.
    pub jwt_secret: Option<Secret>,
    pub jwt_secret_file: Option<PathBuf>,
    pub auth: WebAuth,
    /// Lifetime of the signed URLs gatehouse hands out (pictures in event payloads, HLS).
    pub url_token_ttl: HumanDuration,
    /// REST API accounts (`POST /api/auth/login`): name, role and an argon2id hash made by
    /// `gatehouse passwd`. Reloaded live.
    pub users: Vec<WebUser>,
    /// Lifetime of a token from `POST /api/auth/login`.
    pub session_ttl: HumanDuration,
    /// `X-API-Key` of hardware devices (seed 001 register / heartbeat); `${ENV}` substituted;
    /// or `hardware_key_file`; else the `HARDWARE_INGEST_KEY` environment variable. Without
    /// one the hardware routes answer 401.
    pub hardware_key: Option<Secret>,
    pub hardware_key_file: Option<PathBuf>,
    /// A registered hardware device with no heartbeat for this long is offline (REST, and
    /// its MQTT availability). At least 1s.
    pub hardware_offline_after: HumanDuration,
    /// Requests a minute (seed 001's limits by default); reloaded live.
    pub rate_limits: RateLimits,
    /// A client must send a request's line and headers within this long, else its
    /// connection is closed: a client that never finishes (slowloris) does not hold a
    /// connection and its task forever. 100ms to 10m. (restart)
    pub header_read_timeout: HumanDuration,
    /// A request's body must arrive within this long of its headers, else the request is
    /// answered 408 and its connection closed (a body that stops short held its task
    /// for ever). 100ms to 10m. Reloaded live.
    pub body_read_timeout: HumanDuration,
    /// Connections open at once; past it new clients wait (in the listen backlog) for one to
    /// end, so a flood cannot take every file descriptor. 1 to 10000. (restart)
    pub max_connections: u32,
}

/// Requests a minute per user, per hardware device, and per user on emergency routes.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    pub per_user: u32,
    pub per_device: u32,
    pub emergency: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_user: 100,
            per_device: 1000,
            emergency: 10,
        }
    }
}

/// What an API account may do. Each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: doors, events, cameras, pictures, alarms, audit.
    Viewer,
    /// Also opens doors, takes snapshots, starts live streams.
    Operator,
    /// Also runs emergency operations and edits access points.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// One REST API account.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebUser {
    pub name: String,
    pub role: Role,
    /// PHC string `$argon2id$v=19$…` from `gatehouse passwd` (never the password).
    pub password_hash: String,
}

impl std::fmt::Debug for WebUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebUser({}, {})", self.name, self.role.as_str())
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            bind: std::net::SocketAddr::from(([127, 0, 0, 1], 8480)),
            public_url: None,
            jwt_secret: None,
            jwt_secret_file: None,
            auth: WebAuth::Token,
            url_token_ttl: HumanDuration::secs(24 * 3600),
            users: Vec::new(),
            session_ttl: HumanDuration::secs(12 * 3600),
            hardware_key: None,
            hardware_key_file: None,
            rate_limits: RateLimits::default(),
            hardware_offline_after: HumanDuration::secs(15 * 60),
            header_read_timeout: HumanDuration::secs(30),
            body_read_timeout: HumanDuration::secs(30),
            max_connections: 256,
        }
    }
}

impl WebConfig {
    /// `public_url` without a trailing `/`, or `http://<bind>`.
    pub fn base_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.bind),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct MqttConfig {
    /// Broker host. Restart required for every connection key.
    pub host: String,
    /// Broker port (1883, or 8883 with TLS).
    pub port: u16,
    /// Connect with TLS (uses `tls_options`).
    pub tls: bool,
    pub tls_options: TlsConfig,
    pub username: Option<String>,
    /// `${ENV}` substituted; or `password_file`.
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// Default `gatehouse-<hostname>` (`gatehouse-<instance>-<hostname>` for an instance other
    /// than `gatehouse`): brokers kick duplicate ids.
    pub client_id: Option<String>,
    /// Root of every gatehouse topic.
    pub base_topic: String,
    /// This gatehouse's name among others on one broker (many sites): it keeps their Home
    /// Assistant unique_ids, entity ids, device identifiers and discovery node ids apart.
    /// Default: the instance the MQTT sink published under last run (a site keeps its ids),
    /// for a new site the one from `base_topic` ([`MqttConfig::instance`]); `gatehouse` is the
    /// ids from before many sites.
    pub instance: Option<String>,
    pub keep_alive: HumanDuration,
    /// Run an in-process broker on `embedded_bind` instead of connecting to `host`.
    pub embedded: bool,
    pub embedded_bind: std::net::SocketAddr,
    pub discovery: DiscoveryConfig,
    /// `auto` (MQTT 5, falling back to 3.1.1 when the broker refuses it), `"5"` or `"3.1.1"`.
    pub protocol: MqttProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(try_from = "ProtocolRaw")]
pub enum MqttProtocol {
    #[default]
    Auto,
    V5,
    V311,
}

/// `protocol: 5` is a number in YAML, `3.1.1` a string: accept both.
#[derive(Deserialize)]
#[serde(untagged)]
enum ProtocolRaw {
    Num(f64),
    Str(String),
}

impl TryFrom<ProtocolRaw> for MqttProtocol {
    type Error = String;
    fn try_from(r: ProtocolRaw) -> Result<Self, String> {
        let s = match r {
            ProtocolRaw::Num(n) => n.to_string(),
            ProtocolRaw::Str(s) => s,
        };
        match s.trim() {
            "auto" => Ok(MqttProtocol::Auto),
            "5" | "5.0" => Ok(MqttProtocol::V5),
            "3.1.1" | "4" => Ok(MqttProtocol::V311),
            other => Err(format!(
                "unknown MQTT protocol {other:?} (auto, 5 or 3.1.1)"
            )),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            tls: false,
            tls_options: TlsConfig::default(),
            username: None,
            password: None,
            password_file: None,
            client_id: None,
            base_topic: "gatehouse".into(),
            instance: None,
            keep_alive: HumanDuration::secs(30),
            embedded: false,
            embedded_bind: std::net::SocketAddr::from(([127, 0, 0, 1], 1883)),
            discovery: DiscoveryConfig::default(),
            protocol: MqttProtocol::Auto,
        }
    }
}

/// The instance of the default base topic: Home Assistant ids exactly as before many sites.
pub const DEFAULT_INSTANCE: &str = "gatehouse";

impl MqttConfig {
    /// `client_id`, else the default for the instance from the config.
    pub fn client_id(&self) -> String {
        self.client_id_for(&self.instance())
    }

    /// `client_id`, else the default for `instance` (the one the daemon runs as, which may be
    /// the one it published last run rather than the config's).
    pub fn client_id_for(&self, instance: &str) -> String {
        self.client_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "host".into());
            // Two sites' daemons on one host (or one broker) must not kick each other.
            match instance {
                DEFAULT_INSTANCE => format!("gatehouse-{host}"),
                i => format!("gatehouse-{i}-{host}"),
            }
        })
    }

    /// `instance`, else derived from `base_topic`: its levels other than `gatehouse`, lower
    /// case, everything but letters and digits as `_` (`site-b/gatehouse` → `site_b`,
    /// `Home/Gatehouse` → `home`); `gatehouse` when nothing is left, so the default base topic
    /// keeps the ids existing installs have in Home Assistant.
    pub fn instance(&self) -> String {
        if let Some(i) = &self.instance {
            return i.clone();
        }
        let levels: Vec<String> = self
            .base_topic
            .split('/')
            .map(slug)
            .filter(|l| !l.is_empty() && l != DEFAULT_INSTANCE)
            .collect();
        if levels.is_empty() {
            DEFAULT_INSTANCE.to_string()
        } else {
            levels.join("_")
        }
    }
}

/// Lower case, runs of anything but ASCII letters and digits as one `_`, none at the ends.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// Words that begin gatehouse's own id keys (`gatehouse_camera_<id>`, `gatehouse_net2_…`): an
/// instance named so could share an id with the instance `gatehouse` (its camera `x_y` and
/// the instance `camera`'s camera `y` would both be `gatehouse_camera_x_y…`).
pub const RESERVED_INSTANCES: &[&str] = &[
    "camera", "door", "gate", "hardware", "net2", "people", "person", "qr", "site", "user",
];

/// A valid `mqtt.instance`: what Home Assistant accepts in an entity id and a discovery node id.
pub fn valid_instance(i: &str) -> bool {
    !i.is_empty()
        && i.len() <= 32
        && i.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !i.starts_with('_')
        && !i.ends_with('_')
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct DiscoveryConfig {
    /// Publish Home Assistant discovery (openHAB reads it too).
    pub enabled: bool,
    /// Discovery prefix; HA's (and openHAB's) birth topic is `<prefix>/status`.
    pub prefix: String,
    /// `per_component` (works everywhere, default) or `device` (HA ≥ 2024.12 only; older HA
    /// and openHAB before Feb 2026 ignore it).
    pub mode: DiscoveryMode,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            enabled: true,
            prefix: "homeassistant".into(),
            mode: DiscoveryMode::PerComponent,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryMode {
    #[default]
    PerComponent,
    Device,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// Level filter in env-filter syntax (`info`, `gatehouse=debug,info`). `GATEHOUSE_LOG`
    /// overrides it. Applies live on reload.
    pub level: String,
    /// `pretty`, `json` or `journald` (priority prefixes for systemd). Restart required.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
    Journald,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// SQLite database file. Restart required.
    pub path: PathBuf,
    /// Events older than this many days are pruned once a day. 0 keeps everything.
    pub retention_days: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("./gatehouse.db"),
            retention_days: 90,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(default)]
pub struct SourcesConfig {
    /// The Paxton Net2 server. Absent = no Net2 source.
    pub net2: Option<Net2Config>,
    /// Hikvision cameras and NVRs.
    pub hikvision: Vec<HikvisionConfig>,
    /// Zequenze GATE (Wi-Fi portal and RADIUS sessions). Absent = none.
    pub gate: Option<GateConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct HikvisionConfig {
    /// Short id used in topics and entity ids (`garage`), unique. (restart)
    pub id: String,
    /// The device's name in Home Assistant (default: a camera's channel name, else the name
    /// the device reports, else `id`; an NVR's channels are named as the NVR names them).
    pub name: Option<String>,
    /// `http://camera` or `https://nvr` (self-signed: see `tls`). (restart) Empty (left out)
    /// for a camera without ISAPI (any RTSP camera): then `rtsp_url` is required, and
    /// gatehouse takes pictures and live streams over RTSP only, with the camera's
    /// availability from RTSP (no alarms, no device info, no `/picture`).
    pub url: String,
    pub username: String,
    /// `${ENV}` substituted; or `password_file`.
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub tls: TlsConfig,
    /// An alarm is OFF this long after its last `active` when the device sends no
    /// `inactive` (PTZs and NVRs never do).
    pub holdoff: HumanDuration,
    /// Hold-off per event type (`VMD: 10s`).
    pub holdoff_per_type: BTreeMap<String, HumanDuration>,
    /// The stream counts as dead after this long without a byte (heartbeats included).
    pub idle_timeout: HumanDuration,
    /// Availability goes `offline` only after the device was unreachable this long.
    pub offline_after: HumanDuration,
    /// Channels to ignore (empty NVR inputs that report video loss forever).
    pub ignore_channels: Vec<u32>,
    /// RTSP URL of channel 1 main stream, when it is not the Hikvision default
    /// (`rtsp://<host>:<port from adminAccesses>/Streaming/Channels/101`). `{channel}` and
    /// `{stream}` (1 main, 2 sub) are substituted when present.
    /// A [`Secret`]: it may carry `user:password@`.
    pub rtsp_url: Option<Secret>,
    /// Ask the device for `/picture` before decoding RTSP (cameras and NVRs that have it).
    pub use_picture: bool,
}

impl HikvisionConfig {
    /// The device speaks ISAPI (alert stream, device info, `/picture`): a `url` is given.
    pub fn isapi(&self) -> bool {
        !self.url.is_empty()
    }
}

impl Default for HikvisionConfig {
    fn default() -> Self {
        HikvisionConfig {
            name: None,
            id: String::new(),
            url: String::new(),
            username: "admin".into(),
            password: None,
            password_file: None,
            tls: TlsConfig::default(),
            holdoff: HumanDuration::secs(5),
            holdoff_per_type: BTreeMap::new(),
            idle_timeout: HumanDuration::secs(60),
            offline_after: HumanDuration::secs(30),
            ignore_channels: Vec::new(),
            rtsp_url: None,
            use_picture: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Net2Config {
    /// Base URL of the Net2 Local API, e.g. `https://net2-pc:8443` or `http://net2-pc:8080`.
    pub url: String,
    /// Operator display name ("First Last"). The operator must not have MFA enabled.
    pub username: String,
    /// Operator password; `${ENV_VAR}` is substituted. Use this or `password_file`.
    pub password: Option<Secret>,
    /// File whose contents (trailing newline trimmed) is the password (systemd credentials).
    pub password_file: Option<PathBuf>,
    /// The licence GUID issued by Paxton (the licence file name).
    pub client_id: String,
    pub tls: TlsConfig,
    /// Follow live events over SignalR. `false` = REST polling only.
    pub live: bool,
    /// REST event poll interval while live events are off or down.
    pub poll_interval: HumanDuration,
    /// Slow REST safety poll while live events are up (catches anything the hub missed).
    pub safety_poll_interval: HumanDuration,
    /// `/doors/status` poll interval while live events are off or down.
    pub door_status_interval: HumanDuration,
    /// `/doors/status` poll interval while live events are up (door-closed events are
    /// unreliable, so the status is polled as a backstop anyway).
    pub door_status_safety_interval: HumanDuration,
    /// How often the user list (names only are kept) is refreshed: names for events and the
    /// directory's users. A failed fetch keeps the previous list and is retried sooner.
    pub users_refresh_interval: HumanDuration,
    /// On the very first start (no cursor yet), fetch this much history.
    pub initial_backfill: HumanDuration,
    /// Per-request timeout.
    pub request_timeout: HumanDuration,
    /// Events per REST page (`rowCount`), at most 1000.
    pub page_size: u32,
    /// A command is reported `timeout` if no door status or event confirms it in this time.
    pub command_confirm_timeout: HumanDuration,
    /// Reconnect the live socket this long before the access token expires.
    pub reconnect_before_expiry: HumanDuration,
}

impl Default for Net2Config {
    fn default() -> Self {
        Net2Config {
            url: String::new(),
            username: String::new(),
            password: None,
            password_file: None,
            client_id: String::new(),
            tls: TlsConfig::default(),
            live: true,
            poll_interval: HumanDuration::secs(5),
            safety_poll_interval: HumanDuration::secs(300),
            door_status_interval: HumanDuration::secs(30),
            door_status_safety_interval: HumanDuration::secs(600),
            users_refresh_interval: HumanDuration::secs(600),
            initial_backfill: HumanDuration::secs(24 * 3600),
            request_timeout: HumanDuration::secs(15),
            page_size: 1000,
            command_confirm_timeout: HumanDuration::secs(15),
            reconnect_before_expiry: HumanDuration::secs(120),
        }
    }
}

impl Net2Config {
    /// The password, from `password` or `password_file` (resolved at load time).
    pub fn password(&self) -> Secret {
        self.password.clone().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM file with extra CA certificates (self-signed Net2 servers). System roots are
    /// always trusted too.
    pub ca_file: Option<PathBuf>,
    /// Hex SHA-256 of the server's leaf certificate (DER). When set, only that certificate
    /// is accepted, whoever signed it.
    pub pin_sha256: Option<String>,
    /// Accept any certificate. Only for testing; logged as a warning.
    pub insecure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DoorMode {
    /// Open, hold open and close as Net2 defines them.
    #[default]
    Normal,
    /// Momentary relay (garage ports): hold open and close both pulse and toggle the door, so
    /// gatehouse decides from the current relay state whether to send anything.
    Momentary,
    /// Commands are refused.
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct DoorConfig {
    /// Display name; default is the name Net2 reports.
    pub name: Option<String>,
    /// Which relay a timed open drives (1 or 2).
    pub relay: u8,
    /// Duration of a timed open (`door/control`); `None` uses the door's own open time
    /// (`door/open`).
    pub open_time_ms: Option<u32>,
    pub mode: DoorMode,
    /// Derive a "held open" event when the contact stays open this long and the server sends
    /// no type 93 itself. `None` = only trust the server.
    pub held_open_after: Option<HumanDuration>,
    /// Commands (MQTT and REST) closer together than this (per door) are refused.
    pub min_command_interval: HumanDuration,
    /// A shared code that must be in a JSON command (`"code"`) for this door; never logged
    /// or echoed.
    pub require_code: Option<Secret>,
    /// The camera that watches this door: `<hikvision id>/<channel>` (pictures with door
    /// events; shown in the door's state).
    pub camera: Option<String>,
    /// Door events that take a picture with `camera`: `access_granted`, `access_denied`,
    /// `door_opened`, `door_held_open`, `door_forced`, `door_bell` (default), and
    /// `open_requested`.
    pub snapshot_on: Vec<String>,
    /// The site (`sites[].id`) the door belongs to; default the first site.
    pub site: Option<String>,
    /// For presence: an `in` door means arriving, an `out` door leaving (`both`, default).
    pub direction: DoorDirection,
}

/// Door events that can carry a picture.
pub const SNAPSHOT_DOOR_KINDS: [&str; 9] = [
    "access_granted",
    "access_denied",
    "door_opened",
    "door_held_open",
    "door_forced",
    "door_bell",
    "qr_granted",
    "qr_denied",
    "open_requested",
];

/// Those that do unless `snapshot_on` says otherwise: all but `open_requested` (an API open
/// request has no one at the door to see). A QR scan has someone at the reader.
pub const SNAPSHOT_DOOR_DEFAULT: &[&str] = SNAPSHOT_DOOR_KINDS.split_at(8).0;

impl DoorConfig {
    /// `camera` split into device id and channel.
    pub fn camera_ref(&self) -> Option<(&str, u32)> {
        let (d, c) = self.camera.as_deref()?.split_once('/')?;
        Some((d, c.parse().ok()?))
    }

    /// Whether an event of this kind (its [`crate::model::EventKind::name`]) takes a picture.
    pub fn snapshot_on(&self, kind: &str) -> bool {
        self.camera.is_some() && self.snapshot_on.iter().any(|k| k == kind)
    }
}

impl Default for DoorConfig {
    fn default() -> Self {
        DoorConfig {
            name: None,
            relay: 1,
            open_time_ms: None,
            mode: DoorMode::Normal,
            held_open_after: None,
            min_command_interval: HumanDuration::secs(2),
            require_code: None,
            camera: None,
            snapshot_on: SNAPSHOT_DOOR_DEFAULT
                .iter()
                .map(|s| s.to_string())
                .collect(),
            site: None,
            direction: DoorDirection::Both,
        }
    }
}

impl Config {
    /// Short human summary for `check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let mut sources = Vec::new();
        if let Some(n) = &self.sources.net2 {
            sources.push(format!(
                "net2 ({}, live {})",
                n.url,
                if n.live { "on" } else { "off" }
            ));
        }
        for h in &self.sources.hikvision {
            sources.push(format!("hikvision {} ({})", h.id, h.url));
        }
        if let Some(g) = &self.sources.gate {
            sources.push(format!("gate ({})", crate::secret::redact_url(&g.url)));
        }
        let mqtt = match &self.mqtt {
            None => "none".to_string(),
            Some(m) if m.embedded => format!("embedded broker on {}", m.embedded_bind),
            Some(m) => format!("{}:{}", m.host, m.port),
        };
        let web = match &self.web {
            Some(w) => format!("; web on {}", w.bind),
            None => String::new(),
        };
        format!(
            "{} door(s) configured; sources: {}; mqtt: {mqtt}; database {}{web}",
            self.doors.len(),
            if sources.is_empty() {
                "none".to_string()
            } else {
                sources.join(", ")
            },
            self.storage.path.display()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 17: Apptive QR access, Zequenze GATE Wi-Fi presence, people.

/// Apptive QR-code access (seed 002): scans → `POST <url>/access` → open the reader's door.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApptiveConfig {
    /// Base URL; gatehouse posts to `<url>/access`. HTTPS only (http is accepted for a
    /// loopback simulator).
    pub url: String,
    /// The token Apptive issued to this access-control provider. A secret: never logged.
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub tls: TlsConfig,
    /// Whole request, connect to answer; past it the scan is denied (fail closed).
    pub timeout: HumanDuration,
    /// A security key opens at most once (a photographed code cannot be replayed).
    pub single_use: bool,
    /// How long a used key is remembered (Apptive's keys are valid 15 minutes).
    pub key_validity: HumanDuration,
    /// Keep the member's picture from Apptive's answer (base64) with the stored event (its
    /// `raw`, as `member_picture`; never published on MQTT). Off: dropped on arrival.
    pub keep_picture: bool,
    /// The QR readers.
    pub readers: Vec<QrReaderConfig>,
}

impl Default for ApptiveConfig {
    fn default() -> Self {
        ApptiveConfig {
            url: String::new(),
            token: None,
            token_file: None,
            tls: TlsConfig::default(),
            timeout: HumanDuration::secs(3),
            single_use: true,
            key_validity: HumanDuration::secs(15 * 60),
            keep_picture: false,
            readers: Vec::new(),
        }
    }
}

/// One QR reader at a door.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QrReaderConfig {
    /// Topic-safe id: `gatehouse/qr/<id>/scan`. Letters, digits, `-`, `_`.
    pub id: String,
    /// Display name; default the id.
    pub name: Option<String>,
    /// The Net2 door (a key of `doors`) a granted scan opens.
    pub door: u64,
    /// Apptive's door / turnstile id for this reader.
    pub door_id: String,
    /// Scans accepted per minute from this reader; more are denied without asking Apptive.
    pub max_scans_per_minute: u32,
    /// A reader attached to this machine (USB HID keyboard wedge or USB serial).
    pub usb: Option<QrUsbConfig>,
}

impl Default for QrReaderConfig {
    fn default() -> Self {
        QrReaderConfig {
            id: String::new(),
            name: None,
            door: 0,
            door_id: String::new(),
            max_scans_per_minute: 12,
            usb: None,
        }
    }
}

/// A USB QR reader on the Pi.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrUsbConfig {
    /// `hid` (keyboard wedge, read through evdev) or `serial` (CDC-ACM / USB-serial).
    pub kind: QrUsbKind,
    /// `/dev/input/by-id/…-event-kbd` or `/dev/serial/by-id/…`.
    pub device: PathBuf,
    /// Serial speed (serial only).
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    9600
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QrUsbKind {
    Hid,
    Serial,
}

/// Zequenze GATE (seed 003): Wi-Fi portal logins and RADIUS sessions as presence.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateConfig {
    /// API base, e.g. `https://gate.zequenze.com/api/v1`.
    pub url: String,
    /// Bearer token. A secret: never logged.
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub tls: TlsConfig,
    /// How often `/txlog_portal/` and `/aaa_accounting/?session_status=active` are read.
    pub poll_interval: HumanDuration,
    /// Records per page (`limit`, 1–100).
    pub page_size: u32,
    /// On first start (no stored cursor), how far back the transaction log is read.
    pub initial_backfill: HumanDuration,
    pub request_timeout: HumanDuration,
    /// Longest wait between tries after 429 / 5xx / network errors (doubling from
    /// `poll_interval`; `Retry-After` is honoured).
    pub max_backoff: HumanDuration,
    /// Which GATE users get a Home Assistant presence entity (`binary_sensor`, device class
    /// presence): `people` (default) the RADIUS user names listed in `people[].gate_usernames`,
    /// `all` every user seen in an active session (a busy guest hotspot makes hundreds), or
    /// `none`. Every user in an active session has a state topic either way. (live)
    pub user_entities: GateUserEntities,
    /// Locations and access points (and with `user_entities: all`, users) not seen in any
    /// active session for this long lose their entities. (live)
    pub forget_after: HumanDuration,
}

/// See [`GateConfig::user_entities`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateUserEntities {
    #[default]
    People,
    All,
    None,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            url: String::new(),
            token: None,
            token_file: None,
            tls: TlsConfig::default(),
            poll_interval: HumanDuration::secs(30),
            page_size: 100,
            initial_backfill: HumanDuration::secs(3600),
            request_timeout: HumanDuration::secs(10),
            max_backoff: HumanDuration::secs(600),
            user_entities: GateUserEntities::People,
            forget_after: HumanDuration::secs(7 * 24 * 3600),
        }
    }
}

/// A door's direction for presence: passing an `in` door means arriving, an `out` door
/// leaving; `both` (default) says nothing about direction beyond "was here".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DoorDirection {
    In,
    Out,
    #[default]
    Both,
}

/// One person, and how each system knows them.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PersonConfig {
    /// Topic-safe id (`anna`): `gatehouse/person/<id>/state`, `device_tracker.<id>`.
    pub id: String,
    /// Display name; default the id.
    pub name: Option<String>,
    /// Net2 user ids (a person can have several cards / users).
    pub net2_users: Vec<i64>,
    /// GATE user ids (`user` in `/txlog_portal/`).
    pub gate_users: Vec<i64>,
    /// GATE user names or e-mail addresses (`username` / `email`; RADIUS `username`).
    pub gate_usernames: Vec<String>,
    /// Phone / laptop MAC addresses (RADIUS `callingstationid`), any common notation.
    pub macs: Vec<String>,
    /// Apptive member ids (the QR code's NOTE).
    pub apptive_members: Vec<String>,
    /// The site the person belongs to (`sites[].id`); default the first site.
    pub site: Option<String>,
}

/// How the evidence of each person is turned into home / away.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// After the person's last Wi-Fi session ends, away unless an entry (badge at an `in` or
    /// `both` door, QR entry, a new Wi-Fi session) follows within this time.
    pub wifi_away_after: HumanDuration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            wifi_away_after: HumanDuration::secs(600),
        }
    }
}
