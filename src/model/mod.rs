//! Domain types shared by sources, the bus and sinks. Wire formats of devices stay in their
//! sources; these are what the rest of gatehouse sees.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

/// A door, by its Net2 id (the ACU address).
pub type DoorId = u64;

/// How a user presented themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    Card,
    Pin,
    CardAndPin,
    VehicleReg,
    Code,
    Unknown,
}

/// A resolved user: id and display name only. PINs, phone numbers and custom fields are
/// never copied into this type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: i64,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoorRef {
    pub id: DoorId,
    pub name: Option<String>,
}

/// What happened, classified from the device's numeric codes (never its localised text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    AccessGranted {
        token: TokenType,
    },
    AccessDenied {
        reason: String,
    },
    DoorOpened,
    DoorClosed,
    DoorRelocked,
    /// Door left open: from the server (type 93) or derived from the contact (`derived`).
    DoorHeldOpen {
        derived: bool,
    },
    DoorForced,
    Tamper {
        active: bool,
    },
    Mains {
        ok: bool,
    },
    Battery {
        critical: bool,
    },
    AcuOffline,
    AcuOnline,
    Lockdown {
        active: bool,
    },
    Backup {
        ok: bool,
    },
    DoorBell,
    /// A door open requested through the API or the Net2 UI (type 580).
    OpenRequested,
    /// Anything else; the raw type is kept so nothing is lost.
    Other {
        code: i64,
    },
    /// A payload we could not understand; `raw` holds it unchanged.
    Unparsed {
        error: String,
    },
    /// A camera / NVR alert (history; the alarm state is [`CameraAlarm`]).
    CameraAlert {
        event_type: String,
        active: bool,
        channel: Option<u32>,
        io_port: Option<u32>,
        targets: Vec<String>,
        /// Retransmitted by the device after a reconnect (or of no known state): history
        /// only, it changed no alarm state.
        backlog: bool,
        /// The device's own `dateTime` (metadata: camera clocks are often wrong; the
        /// event's `time` is when gatehouse received it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_time: Option<String>,
    },
    /// An Apptive QR code was accepted at a reader (and its door opened through the command
    /// path). Never carries the security key.
    QrGranted {
        reader: String,
        /// Apptive member id (the code's NOTE).
        member: String,
        /// "Firstname Lastname" from Apptive's answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Apptive's message for the reader's display.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A QR scan that did not open the door: a bad vCard, a used or unknown key, Apptive's
    /// "false", Apptive unreachable or answering nonsense (fail closed), the reader's rate.
    QrDenied {
        reader: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Why, in gatehouse's words (`invalid vCard: no ORG`, `apptive timeout`…).
        reason: String,
        /// Apptive's message (or gatehouse's, for the display) when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A Zequenze GATE portal transaction (`/txlog_portal/`): a Wi-Fi login, logout or
    /// timeout. `action` is GATE's type code (`ui`, `uo`, `st`, `si`, `di`, `ai`, `aa`…).
    Wifi {
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        /// The entry's `email`, lower case (the portal log's `username` is often a short name
        /// while RADIUS accounting names the same person by e-mail).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        /// `aa:bb:cc:dd:ee:ff` (GATE sends the portal's MAC as an integer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_point: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<String>,
    },
    /// A person's presence changed (home / away), with what showed it.
    Presence {
        person: String,
        home: bool,
        evidence: String,
    },
}

impl EventKind {
    /// Short stable name, used in topics, the database and logs.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::AccessGranted { .. } => "access_granted",
            EventKind::AccessDenied { .. } => "access_denied",
            EventKind::DoorOpened => "door_opened",
            EventKind::DoorClosed => "door_closed",
            EventKind::DoorRelocked => "door_relocked",
            EventKind::DoorHeldOpen { .. } => "door_held_open",
            EventKind::DoorForced => "door_forced",
            EventKind::Tamper { active: true } => "tamper",
            EventKind::Tamper { active: false } => "tamper_restored",
            EventKind::Mains { ok: false } => "mains_failed",
            EventKind::Mains { ok: true } => "mains_restored",
            EventKind::Battery { critical: false } => "battery_low",
            EventKind::Battery { critical: true } => "battery_critical",
            EventKind::AcuOffline => "acu_offline",
            EventKind::AcuOnline => "acu_online",
            EventKind::Lockdown { active: true } => "lockdown_on",
            EventKind::Lockdown { active: false } => "lockdown_off",
            EventKind::Backup { ok: true } => "backup_ok",
            EventKind::Backup { ok: false } => "backup_failed",
            EventKind::DoorBell => "door_bell",
            EventKind::OpenRequested => "open_requested",
            EventKind::Other { .. } => "other",
            EventKind::Unparsed { .. } => "unparsed",
            EventKind::CameraAlert { .. } => "camera_alert",
            EventKind::QrGranted { .. } => "qr_granted",
            EventKind::QrDenied { .. } => "qr_denied",
            EventKind::Wifi { action, .. } => match action.as_str() {
                "ui" | "ai" => "wifi_login",
                "uo" => "wifi_logout",
                "st" | "si" => "wifi_timeout",
                "di" => "wifi_disconnect",
                _ => "wifi_other",
            },
            EventKind::Presence { home: true, .. } => "person_arrived",
            EventKind::Presence { home: false, .. } => "person_left",
        }
    }
}

/// Where an event came from inside its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Live,
    Rest,
    Derived,
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable id: `<source>:<source id>` or `<source>:fp:<fingerprint>`; consumers dedupe on it.
    pub id: String,
    /// `net2`, later `hikvision:<device>` etc.
    pub source: String,
    /// The device's own id for the event, when it has one (Net2 REST `id`).
    pub source_id: Option<i64>,
    /// Identity that is the same whichever way the event arrived (time to the second, type,
    /// user, door): matches a live event with its REST copy.
    pub fingerprint: String,
    /// When it happened, with the device's offset.
    pub time: DateTime<FixedOffset>,
    pub received: DateTime<Utc>,
    pub via: Via,
    pub door: Option<DoorRef>,
    pub user: Option<UserRef>,
    pub kind: EventKind,
    /// The device's numeric type, when it has one.
    pub code: Option<i64>,
    /// The device's own description (localised; for people, never for logic).
    pub description: Option<String>,
    /// The payload exactly as received (PIN-free by construction of the source).
    pub raw: String,
}

/// Last known state of a door, from status polls, live door events and access events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DoorState {
    pub id: DoorId,
    pub name: Option<String>,
    /// Door contact open; `None` when the door has no contact (or it is unreliable).
    pub open: Option<bool>,
    /// Whether the door has a contact at all (`Some(false)`: Net2's status has none for it);
    /// `None` until Net2 said.
    #[serde(default)]
    pub has_contact: Option<bool>,
    /// Relay released (unlocked). Not mechanical proof the door moved.
    pub unlocked: Option<bool>,
    pub held_open: bool,
    pub forced: bool,
    pub tamper: bool,
    pub alarm_tripped: bool,
    pub last_event: Option<String>,
    pub last_user: Option<UserRef>,
    /// The door's ACU answers Net2 (500 / 501).
    pub acu_online: Option<bool>,
    /// Battery low (722) or critical (723); cleared by a battery level update (724).
    pub battery_low: bool,
    pub battery_critical: bool,
    /// Mains failed (91) until restored (102).
    pub mains_failed: bool,
    pub updated: Option<DateTime<Utc>>,
}

/// The last access of a user: "who came home".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub user: UserRef,
    pub door: DoorRef,
    pub site: Option<String>,
    pub time: DateTime<FixedOffset>,
}

/// A source's health, for availability topics and `bridge/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceHealth {
    pub source: String,
    pub online: bool,
    pub live: bool,
    /// Door state synced since start-up: commands are accepted.
    pub ready: bool,
    pub detail: String,
}

/// What a user can ask a door to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoorAction {
    /// Open for the door's open time (or `duration_ms`).
    Open,
    HoldOpen,
    Close,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum CommandKind {
    Door {
        door: DoorId,
        action: DoorAction,
        duration_ms: Option<u32>,
    },
    Lockdown {
        active: bool,
    },
    /// `snapshot`, `stream_start` or `stream_stop` of a camera channel (audited like door
    /// commands; handled by the media service, not a door source).
    Camera {
        camera: String,
        channel: u32,
        action: CameraAction,
    },
    /// Publish the stored events from `from_seq` on again (a consumer saw a gap in `seq`);
    /// carried out by the MQTT sink.
    Replay {
        from_seq: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraAction {
    Snapshot,
    StreamStart,
    StreamStop,
}

/// A request from a sink (MQTT, REST, CLI) to the source that owns the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub request_id: String,
    /// Who asked: `mqtt:<client>`, `cli`, `rest:<user>`.
    pub requester: String,
    pub kind: CommandKind,
    /// When gatehouse received it, on the wall clock: for the audit trail and logs only.
    pub received: DateTime<Utc>,
    /// When gatehouse received it, on the monotonic clock: a command's age (door safety:
    /// one older than its max age is never sent) is decided on this, never on `received`,
    /// because NTP stepping the wall clock between receipt and send could make a fresh
    /// command look stale or, worse, a stale one fresh. Not serialised: an instant means
    /// nothing outside this process, and one deserialised here is received now.
    #[serde(skip, default = "tokio::time::Instant::now")]
    pub received_at: tokio::time::Instant,
}

impl Command {
    /// How long ago gatehouse received it, on the monotonic clock (see `received_at`).
    pub fn age(&self) -> std::time::Duration {
        self.received_at.elapsed()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Accepted,
    /// The device took it (Net2 answers "fire and forget"): not proof the door moved.
    Sent,
    /// A door status or event showed the door moved.
    Confirmed,
    /// Sent, but nothing confirmed it in time.
    Timeout,
    Rejected,
    Failed,
}

/// Progress of a command; every one is written to the audit table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandUpdate {
    pub request_id: String,
    pub requester: String,
    pub kind: CommandKind,
    pub status: CommandStatus,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// An alarm of a camera channel (or IO port) turned on or off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraAlarm {
    pub device: String,
    pub channel: Option<u32>,
    pub io_port: Option<u32>,
    pub event_type: String,
    pub target: Option<String>,
    pub on: bool,
    pub at: DateTime<Utc>,
}

/// What a camera / NVR says about itself (`/ISAPI/System/deviceInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CameraInfo {
    pub device: String,
    pub name: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub mac: Option<String>,
    pub firmware: Option<String>,
    pub device_type: Option<String>,
    pub channels: Vec<CameraChannel>,
    pub disks: Vec<CameraDisk>,
    /// From `/ISAPI/Security/adminAccesses` (for RTSP, next issue).
    pub rtsp_port: Option<u16>,
    /// Events the device reports (`/ISAPI/Event/triggers`): discovered before the first alarm.
    pub triggers: Vec<CameraTrigger>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraTrigger {
    pub event_type: String,
    pub channel: Option<u32>,
    pub io_port: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraChannel {
    pub id: u32,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraDisk {
    pub id: u32,
    /// `hddName` (`hdd1`, `sd`), when the device gives one.
    #[serde(default)]
    pub name: Option<String>,
    /// `hddType` (`SATA`, `SD`, `NAS`), as the device says.
    #[serde(default)]
    pub kind: Option<String>,
    /// `property`: `RW`, `RO`, `Redund`.
    #[serde(default)]
    pub property: Option<String>,
    /// `ok`, `error`, `unformatted`, `idle`… as the device says (lower case).
    pub status: String,
    pub capacity_mb: Option<u64>,
    pub free_mb: Option<u64>,
}

/// A picture taken from a camera channel (snapshot command, door event, alarm, REST).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub id: String,
    pub camera: String,
    pub channel: u32,
    pub taken: DateTime<Utc>,
    /// `picture` (the camera's own JPEG), `live` (decoded from a running stream), `rtsp`
    /// (a session opened for it).
    pub source: String,
    /// `mqtt`, `rest`, `door_event`, `alarm`.
    pub trigger: String,
    pub event_id: Option<String>,
    /// For a picture of a moment (door event, alarm): how long after it the frame shown was
    /// received (ms; negative when the stream had nothing newer). A cold RTSP session on a
    /// camera that cannot be asked for a key frame shows the next key frame, up to a GOP
    /// later; the camera's own `/picture` is as late as its answer.
    pub after_event_ms: Option<i64>,
    pub jpeg: bytes::Bytes,
    /// Where gatehouse serves it (signed), when the web server is on.
    pub url: Option<String>,
}

/// A live stream of a camera channel started or stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    pub camera: String,
    pub channel: u32,
    pub active: bool,
    /// Playlist URL (signed) while active and the web server is on.
    pub hls_url: Option<String>,
    /// Player page URL, with the same token as `hls_url` (it opens both).
    pub player_url: Option<String>,
    pub detail: String,
}

/// A hardware access point (seed 001 `points/register`) as MQTT shows it: its availability
/// follows its heartbeats (offline after `web.hardware_offline_after` without one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwarePoint {
    /// The access point id (`hw-<n>`): topic-safe.
    pub id: String,
    pub name: String,
    /// The device's own id (`AC-DEV-001`).
    pub device_id: String,
    pub online: bool,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub firmware_version: Option<String>,
    pub vendor: Option<String>,
    /// 0–100, from the last heartbeat that had one.
    pub battery_level: Option<u8>,
    /// What the device said about its sensor ("closed").
    pub sensor_status: Option<String>,
    /// Deleted: its entities and retained topics are cleared.
    #[serde(skip)]
    pub removed: bool,
}

/// An emergency mode (seed 001 emergency operations; [`crate::emergency`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmergencyMode {
    #[default]
    Normal,
    Lockdown,
    Unlock,
}

impl EmergencyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EmergencyMode::Normal => "normal",
            EmergencyMode::Lockdown => "lockdown",
            EmergencyMode::Unlock => "unlock",
        }
    }
}

/// The emergency mode, as persisted and published. In `normal` the other fields tell the
/// last restore (who, when, why); all `None` when there never was an emergency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmergencyState {
    pub mode: EmergencyMode,
    pub property_id: Option<String>,
    /// The API account that asked (or `gatehouse` for a restore at expiry).
    pub initiated_by: Option<String>,
    pub initiated_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub timeout_minutes: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The doors unlock held open: restore closes exactly these.
    #[serde(default)]
    pub held_open: Vec<DoorId>,
}

impl EmergencyState {
    /// A timed emergency whose time is up.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        self.mode != EmergencyMode::Normal && self.expires_at.is_some_and(|e| now >= e)
    }
}

/// A Wi-Fi session GATE's RADIUS accounting reports as active
/// (`/aaa_accounting/?session_status=active`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WifiSession {
    /// `acctsessionid` (or `acctuniqueid`).
    pub session_id: String,
    /// `username` (often an e-mail address), lower case.
    pub username: Option<String>,
    /// `user_id` as GATE gives it (a string in accounting, an integer in the portal log).
    pub user_id: Option<String>,
    /// The client's MAC (`callingstationid`), `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    pub access_point: Option<String>,
    pub location: Option<String>,
    pub started: Option<DateTime<Utc>>,
}

/// A person's presence: home / away with the evidence and since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonState {
    pub id: String,
    pub name: String,
    pub site: String,
    /// `None` until any evidence was seen.
    pub home: Option<bool>,
    pub since: Option<DateTime<Utc>>,
    /// What decided the state (`door 3 (in)`, `wifi session ended`, `qr front-qr`).
    pub evidence: Option<String>,
    /// The last door passed, its direction and when.
    pub last_door: Option<DoorRef>,
    pub last_door_direction: Option<String>,
    pub last_door_at: Option<DateTime<Utc>>,
    /// Active Wi-Fi sessions of the person's devices.
    pub wifi_sessions: u32,
    pub last_qr_at: Option<DateTime<Utc>>,
}

/// The outcome of a QR scan at a reader, as its display and Home Assistant's `event` entity
/// read it. Never carries the security key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QrResult {
    pub reader: String,
    /// `qr_granted` / `qr_denied` (what HA's `event` entity reads).
    pub event_type: String,
    pub granted: bool,
    /// Apptive's message, or gatehouse's (German / English) for a local denial.
    pub message: String,
    /// Why it was denied, in gatehouse's words; `None` when granted.
    pub reason: Option<String>,
    pub member: Option<String>,
    pub name: Option<String>,
    pub door: DoorId,
    pub time: DateTime<Utc>,
}

/// Everything that travels on the bus from sources to sinks.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Event(Box<Event>),
    DoorState(DoorState),
    Presence(Presence),
    Health(SourceHealth),
    Command(CommandUpdate),
    CameraAlarm(CameraAlarm),
    CameraInfo(CameraInfo),
    Snapshot(std::sync::Arc<Snapshot>),
    Stream(StreamState),
    /// A hardware access point registered, sent a heartbeat, went offline or was deleted.
    Hardware(HardwarePoint),
    /// A source's persisted position (Net2: the newest REST event time). Travels with the
    /// events so the store writes it after the events that precede it.
    Cursor {
        source: String,
        position: String,
    },
    /// A live event (stored as `event_id`, without a device id) was matched by its REST copy,
    /// which carries the device's id: the store records it on the live event's row.
    Paired {
        event_id: String,
        source_id: i64,
    },
    /// The emergency mode changed (or is announced at start-up).
    Emergency(EmergencyState),
    /// Every active Wi-Fi session of a GATE source, after each successful poll (the complete
    /// list: a session missing from it has ended).
    WifiSessions {
        source: String,
        sessions: Vec<WifiSession>,
        at: DateTime<Utc>,
    },
    /// A person's presence (published at start-up and on each change).
    Person(PersonState),
    /// A QR scan's outcome for the reader's display (`…/qr/<reader>/result`, not retained).
    QrResult(QrResult),
    /// A device payload that could not be used; kept raw for diagnosis.
    Reject {
        source: String,
        context: String,
        error: String,
        raw: String,
    },
}
