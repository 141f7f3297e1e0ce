//! Shared simulator state: fixtures, event log, tokens, doors, SignalR sockets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, Timelike, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Faults, ReceivedCommand, SimConfig, SimEvent, Stats};

pub(crate) const DOORS_JSON: &str = include_str!("../../../tests/fixtures/net2/doors.json");
pub(crate) const DOORS_STATUS_JSON: &str =
    include_str!("../../../tests/fixtures/net2/doors_status.json");
pub(crate) const USERS_JSON: &str = include_str!("../../../tests/fixtures/net2/users.json");
pub(crate) const ACCESSLEVELS_JSON: &str =
    include_str!("../../../tests/fixtures/net2/accesslevels.json");
pub(crate) const DEPARTMENTS_JSON: &str =
    include_str!("../../../tests/fixtures/net2/departments.json");
pub(crate) const TOKEN_INVALID_GRANT_JSON: &str =
    include_str!("../../../tests/fixtures/net2/token_error_invalid_grant.json");
pub(crate) const TOKEN_MFA_JSON: &str =
    include_str!("../../../tests/fixtures/net2/token_error_mfa_required.json");

/// Live state of one door as `/doors/status` reports it.
///
/// Serialised camelCase in the order the real server uses; a `None` door contact is omitted
/// (door 6203980 in the fixtures has no `doorContactClosed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoorStatus {
    pub intruder_alarm_armed: bool,
    pub psu_contact_closed: bool,
    pub tamper_contact_closed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub door_contact_closed: Option<bool>,
    pub alarm_tripped: bool,
    pub door_relay_open: bool,
}

impl Default for DoorStatus {
    /// Closed and locked, every sensor present.
    fn default() -> Self {
        DoorStatus {
            intruder_alarm_armed: false,
            psu_contact_closed: false,
            tamper_contact_closed: false,
            door_contact_closed: Some(true),
            alarm_tripped: false,
            door_relay_open: false,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct FixtureDoor {
    pub name: String,
    pub id: u64,
}

#[derive(Deserialize)]
struct FixtureDoorStatus {
    id: u64,
    status: DoorStatus,
}

/// One element of `GET /api/v1/users`, every field the real server sends, in its order —
/// PIN and phone numbers in clear text included (protocols.md §1, seed 000), so the daemon is
/// tested against them. Invented people only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimUser {
    pub id: i64,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    /// `"2027-06-30T00:00:00+02:00"` or `null`.
    pub expiry_date: Option<String>,
    pub activate_date: Option<String>,
    pub pin: Option<String>,
    pub telephone: Option<String>,
    pub extension: Option<String>,
    pub fax: Option<String>,
    pub is_anti_passback_user: bool,
    pub is_alarm_user: bool,
    pub is_lockdown_exempt: bool,
    pub has_image: bool,
    /// `[{"id":1,"name":"Bil","value":"AB 12 345"}]`.
    pub custom_fields: Vec<serde_json::Value>,
    /// `{"accessLevels":[1],"individualPermissions":[]}`.
    pub door_access_permission_set: serde_json::Value,
}

impl SimUser {
    /// A user as Net2 creates one: active since 2024, no expiry, with a PIN and a phone
    /// number (change them with struct update syntax).
    pub fn new(id: i64, first_name: &str, last_name: &str) -> SimUser {
        SimUser {
            id,
            first_name: Some(first_name.into()),
            middle_name: None,
            last_name: Some(last_name.into()),
            expiry_date: None,
            activate_date: Some("2024-01-01T00:00:00+01:00".into()),
            pin: Some(format!("{:04}", (id * 7919) % 10_000)),
            telephone: Some(format!("{}", 20_000_000 + id * 1_234)),
            extension: None,
            fax: None,
            is_anti_passback_user: false,
            is_alarm_user: false,
            is_lockdown_exempt: false,
            has_image: false,
            custom_fields: Vec::new(),
            door_access_permission_set: serde_json::json!({"accessLevels": [1], "individualPermissions": []}),
        }
    }
}

/// Parsed fixture data plus the per-door wiring the fixtures imply.
pub(crate) struct Fixtures {
    pub doors: Vec<FixtureDoor>,
    pub users: Vec<SimUser>,
    pub initial_status: HashMap<u64, DoorStatus>,
}

impl Fixtures {
    fn load() -> Fixtures {
        let doors: Vec<FixtureDoor> = serde_json::from_str(DOORS_JSON).expect("doors.json");
        let users: Vec<SimUser> = serde_json::from_str(USERS_JSON).expect("users.json");
        let st: Vec<FixtureDoorStatus> =
            serde_json::from_str(DOORS_STATUS_JSON).expect("doors_status.json");
        Fixtures {
            doors,
            users,
            initial_status: st.into_iter().map(|d| (d.id, d.status)).collect(),
        }
    }

    pub fn door_name(&self, door: u64) -> Option<&str> {
        self.doors
            .iter()
            .find(|d| d.id == door)
            .map(|d| d.name.as_str())
    }
}

/// Site prefix of `deviceName` in REST events (as in events_page.json).
pub(crate) fn site_of(door: u64) -> &'static str {
    match door {
        7319051 => "Porsevej",
        6203980 => "Terndrupvej",
        1265688 | 3962494 => "Bohrsvej",
        _ => "Kirkegade50",
    }
}

/// `peripheralID` per door (fixture values where known, invented otherwise).
pub(crate) fn peripheral_of(door: u64, event_type: i64) -> i64 {
    if door == 0 || matches!(event_type, 500 | 501 | 722..=724) {
        return 0;
    }
    match door {
        7242929 => 427,
        6612642 => 411,
        7319051 => 502,
        6626578 => 398,
        6203980 => 515,
        1265688 => 450,
        3962494 => 461,
        _ => 0,
    }
}

/// Card number per fixture user (invented; 8 and 12 as in the fixtures).
pub(crate) fn card_of(user: i64) -> i64 {
    match user {
        8 => 1908,
        12 => 55012,
        19 => 30417,
        _ => 0,
    }
}

pub(crate) fn priority_of(event_type: i64) -> i64 {
    match event_type {
        90 | 92 | 93 | 94 | 95 | 500 | 553 | 722 | 723 => 5,
        16 | 17 | 23 | 24 | 25 | 111 | 112 | 114 => 10,
        550 | 552 | 517 | 518 | 501 => 20,
        _ => 15,
    }
}

/// Danish `eventDescription` as the user's server shows it.
pub(crate) fn description_of(event_type: i64) -> std::borrow::Cow<'static, str> {
    let s = match event_type {
        20 => "Adgang godkendt - med kort",
        26 => "Adgang godkendt - med PIN kode",
        24 => "Adgang nægtet - ugyldig PIN",
        23 => "Adgang nægtet - ugyldigt kort",
        28 | 46 => "Dør åbnet",
        29 | 47 => "Dør lukket",
        65 => "En Net2 regel blev udført",
        92 => "Dør tvunget op",
        93 => "Dør holdt åben",
        500 => "ACU svarer ikke",
        501 => "ACU online",
        550 => "Systembruger",
        552 => "Backup gennemført",
        580 => "Anmodning om at åbne dør",
        723 => "Batteriniveau er kritisk lavt",
        n => return std::borrow::Cow::Owned(format!("Hændelse {n}")),
    };
    std::borrow::Cow::Borrowed(s)
}

#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub id: i64,
    /// Server-local, millisecond precision.
    pub time: NaiveDateTime,
    /// The server's UTC offset when the event was logged (REST shows each event with the
    /// offset of its own time: summer and winter events differ on a DST server).
    pub offset_minutes: i32,
    pub event_type: i64,
    pub sub_type: i64,
    pub door: u64,
    pub user_id: Option<i64>,
    pub token_type: i64,
    pub card_no: i64,
    pub details: Option<String>,
    pub linked: Option<i64>,
}

/// Messages queued for one SignalR socket.
pub(crate) enum Outgoing {
    Live(Vec<Box<RawValue>>),
    DoorStatus(Box<RawValue>),
    DoorEvent(Box<RawValue>),
}

pub(crate) struct SocketEntry {
    pub tx: mpsc::UnboundedSender<Outgoing>,
    pub live: bool,
    pub door_status: HashSet<u64>,
    pub door_events: HashSet<u64>,
    pub kill: CancellationToken,
}

pub(crate) struct DoorRuntime {
    pub status: DoorStatus,
    /// Bumped by every command; scheduled steps of an older command are skipped.
    pub generation: u64,
}

#[derive(Default)]
pub(crate) struct State {
    pub events: Vec<StoredEvent>,
    pub next_event_id: i64,
    pub access_tokens: HashMap<String, Instant>,
    pub refresh_tokens: HashMap<String, Instant>,
    pub token_window: VecDeque<Instant>,
    pub doors: HashMap<u64, DoorRuntime>,
    pub commands: Vec<ReceivedCommand>,
    pub stats: Stats,
    pub sockets: HashMap<u64, SocketEntry>,
    pub next_socket: u64,
    /// ConnectionToken → ConnectionId of negotiated SignalR connections.
    pub connections: HashMap<String, String>,
    pub close_counter: u64,
    /// Events that happen the moment the next client subscribes to live events.
    pub on_subscribe: Vec<SimEvent>,
}

pub(crate) struct Inner {
    pub cfg: SimConfig,
    /// The server zone's current UTC offset (starts at `cfg.utc_offset_minutes`; a test
    /// moves it to play a DST change).
    pub offset_minutes: AtomicI32,
    pub faults: Faults,
    pub fixtures: Fixtures,
    pub state: Mutex<State>,
    /// What `GET /api/v1/users` lists (the fixture users at start; tests add and remove).
    /// A leaf lock: taken with or without `state`, never the other way round.
    pub users: Mutex<Vec<SimUser>>,
    /// Cancelled when the whole simulator shuts down (door timers, generators).
    pub shutdown: CancellationToken,
}

pub(crate) fn b64(data: &[u8], url: bool) -> String {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let alpha = if url { URL } else { STD };
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(alpha[(n >> 18) as usize & 63] as char);
        out.push(alpha[(n >> 12) as usize & 63] as char);
        if chunk.len() > 1 {
            out.push(alpha[(n >> 6) as usize & 63] as char);
        } else if !url {
            out.push('=');
        }
        if chunk.len() > 2 {
            out.push(alpha[n as usize & 63] as char);
        } else if !url {
            out.push('=');
        }
    }
    out
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill(&mut b[..]);
    b
}

pub(crate) fn random_uuid() -> String {
    let mut b: [u8; 16] = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Inner {
    pub fn new(cfg: SimConfig) -> Inner {
        let fixtures = Fixtures::load();
        let mut st = State {
            next_event_id: 1_545_700,
            ..State::default()
        };
        for d in &fixtures.doors {
            let status = fixtures
                .initial_status
                .get(&d.id)
                .cloned()
                .unwrap_or_default();
            st.doors.insert(
                d.id,
                DoorRuntime {
                    status,
                    generation: 0,
                },
            );
        }
        Inner {
            offset_minutes: AtomicI32::new(cfg.utc_offset_minutes),
            cfg,
            faults: Faults::default(),
            users: Mutex::new(fixtures.users.clone()),
            fixtures,
            state: Mutex::new(st),
            shutdown: CancellationToken::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn users(&self) -> MutexGuard<'_, Vec<SimUser>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// First, middle and last name of a listed user (events carry them).
    pub fn user_names(&self, id: i64) -> Option<[Option<String>; 3]> {
        self.users().iter().find(|u| u.id == id).map(|u| {
            [
                u.first_name.clone(),
                u.middle_name.clone(),
                u.last_name.clone(),
            ]
        })
    }

    pub fn user_ids(&self) -> Vec<i64> {
        self.users().iter().map(|u| u.id).collect()
    }

    /// The server zone's UTC offset now, in minutes.
    pub fn offset_now(&self) -> i32 {
        self.offset_minutes.load(Ordering::Relaxed)
    }

    /// Server-local "now", truncated to milliseconds.
    pub fn local_now(&self) -> NaiveDateTime {
        let t = Utc::now().naive_utc() + chrono::Duration::minutes(self.offset_now().into());
        let ms = t.nanosecond() / 1_000_000 * 1_000_000;
        t.with_nanosecond(ms).unwrap_or(t)
    }

    // ---------------------------------------------------------------- tokens

    pub fn token_valid(&self, token: &str) -> bool {
        let st = self.lock();
        st.access_tokens
            .get(token)
            .is_some_and(|exp| Instant::now() < *exp)
    }

    pub fn token_expiry(&self, token: &str) -> Option<Instant> {
        self.lock().access_tokens.get(token).copied()
    }

    pub fn issue_access_token(&self, st: &mut State) -> String {
        let exp = Utc::now() + self.cfg.token_lifetime;
        let nonce: [u8; 12] = random_bytes();
        let payload = format!(
            "{{\"sub\":\"1\",\"unique_name\":{},\"exp\":{},\"jti\":\"{}\"}}",
            serde_json::Value::String(self.cfg.username.clone()),
            exp.timestamp(),
            nonce.iter().map(|x| format!("{x:02x}")).collect::<String>()
        );
        let sig: [u8; 32] = random_bytes();
        let token = format!(
            "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}",
            b64(payload.as_bytes(), true),
            b64(&sig, true)
        );
        st.access_tokens
            .insert(token.clone(), Instant::now() + self.cfg.token_lifetime);
        token
    }

    pub fn issue_refresh_token(&self, st: &mut State) -> String {
        let b: [u8; 16] = random_bytes();
        let token: String = b.iter().map(|x| format!("{x:02x}")).collect();
        st.refresh_tokens
            .insert(token.clone(), Instant::now() + self.cfg.refresh_lifetime);
        token
    }

    // ---------------------------------------------------------------- events

    fn store_event(&self, st: &mut State, ev: &SimEvent) -> StoredEvent {
        let id = st.next_event_id;
        st.next_event_id += 1;
        let time = ev.time.unwrap_or_else(|| self.local_now());
        let user = ev.user_id.filter(|u| *u != 0);
        let card_no = ev.card_no.unwrap_or_else(|| user.map(card_of).unwrap_or(0));
        let stored = StoredEvent {
            id,
            time,
            offset_minutes: self.offset_now(),
            event_type: ev.event_type,
            sub_type: ev.sub_type,
            door: ev.door,
            user_id: user,
            token_type: ev.token_type,
            card_no,
            details: ev.details.clone(),
            linked: ev.linked_event,
        };
        insert_sorted(&mut st.events, stored.clone());
        stored
    }

    /// The liveEvents element for one event (no id, naive local time without fraction).
    pub fn live_json(&self, ev: &StoredEvent) -> Box<RawValue> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Live<'a> {
            event_time: String,
            event_type: i64,
            event_sub_type: i64,
            token_type: i64,
            token_number: i64,
            user_id: i64,
            user_name: Option<String>,
            device_id: u64,
            area_name: &'a str,
            details: Option<&'a str>,
            notification_type: i64,
        }
        let user = ev.user_id.and_then(|u| self.user_names(u));
        let user_name = user.map(|[first, _, last]| {
            format!(
                "{} {}",
                last.as_deref().unwrap_or(""),
                first.as_deref().unwrap_or("")
            )
            .trim()
            .to_string()
        });
        let area = if ev.door == 0 {
            "Net2 Server"
        } else {
            self.fixtures.door_name(ev.door).unwrap_or("")
        };
        let live = Live {
            event_time: ev.time.format("%Y-%m-%dT%H:%M:%S").to_string(),
            event_type: ev.event_type,
            event_sub_type: ev.sub_type,
            token_type: ev.token_type,
            token_number: if ev.token_type == 0 && ev.user_id.is_some() {
                ev.card_no
            } else {
                0
            },
            user_id: ev.user_id.unwrap_or(0),
            user_name,
            device_id: ev.door,
            area_name: area,
            details: ev.details.as_deref(),
            notification_type: 0,
        };
        serde_json::value::to_raw_value(&live).expect("serialise live event")
    }

    /// Store events (one REST log entry each) and push the live ones as one batch.
    pub fn push_events(&self, evs: &[SimEvent]) -> Vec<i64> {
        let mut st = self.lock();
        let mut ids = Vec::with_capacity(evs.len());
        let mut live = Vec::new();
        for ev in evs {
            let stored = self.store_event(&mut st, ev);
            ids.push(stored.id);
            if ev.live
                && self
                    .faults
                    .live_enabled
                    .load(std::sync::atomic::Ordering::Relaxed)
            {
                live.push(self.live_json(&stored));
            }
        }
        if !live.is_empty() {
            for s in st.sockets.values().filter(|s| s.live) {
                let _ = s.tx.send(Outgoing::Live(live.clone()));
            }
        }
        ids
    }

    pub fn seed_history(&self, n: usize, start: NaiveDateTime, step: Duration) {
        const TYPES: [(i64, i64); 8] = [
            (20, 0),
            (28, 0),
            (26, 1),
            (46, 0),
            (24, 1),
            (47, 0),
            (93, 0),
            (23, 0),
        ];
        let step = chrono::Duration::from_std(step).unwrap_or(chrono::Duration::seconds(1));
        let doors: Vec<u64> = self.fixtures.doors.iter().map(|d| d.id).collect();
        let users = self.user_ids();
        let mut st = self.lock();
        st.events.reserve(n);
        let was_sorted_until = st.events.len();
        let mut t = start;
        let offset_minutes = self.offset_now();
        for i in 0..n {
            let (event_type, token_type) = TYPES[i % TYPES.len()];
            let door = doors[(i / TYPES.len()) % doors.len()];
            let user = match event_type {
                20 | 26 => Some(users[i % users.len()]),
                _ => None,
            };
            let id = st.next_event_id;
            st.next_event_id += 1;
            st.events.push(StoredEvent {
                id,
                time: t,
                offset_minutes,
                event_type,
                sub_type: 0,
                door,
                user_id: user,
                token_type,
                card_no: user.map(card_of).unwrap_or(0),
                details: None,
                linked: None,
            });
            t += step;
        }
        let ev = &st.events;
        let sorted = ev.len() <= 1
            || ev[was_sorted_until.saturating_sub(1)..]
                .windows(2)
                .all(|w| (w[0].time, w[0].id) <= (w[1].time, w[1].id));
        if !sorted {
            st.events.sort_by_key(|e| (e.time, e.id));
        }
    }

    // ---------------------------------------------------------------- doors

    /// Change a door's status; pushes doorStatusEvents (and doorEvents when the relay changed).
    pub fn update_door(&self, door: u64, f: impl FnOnce(&mut DoorStatus)) -> bool {
        let mut st = self.lock();
        let Some(rt) = st.doors.get_mut(&door) else {
            return false;
        };
        let before = rt.status.clone();
        f(&mut rt.status);
        let after = rt.status.clone();
        if after != before {
            self.push_door_change(&st, door, &before, &after);
        }
        true
    }

    fn push_door_change(&self, st: &State, door: u64, before: &DoorStatus, after: &DoorStatus) {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct StatusEv<'a> {
            door_id: u64,
            status: &'a DoorStatus,
            notification_type: i64,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct DoorEv {
            door_id: u64,
            locked: bool,
        }
        let status = serde_json::value::to_raw_value(&StatusEv {
            door_id: door,
            status: after,
            notification_type: 0,
        })
        .expect("serialise status");
        let relay_changed = before.door_relay_open != after.door_relay_open;
        let door_ev = serde_json::value::to_raw_value(&DoorEv {
            door_id: door,
            locked: !after.door_relay_open,
        })
        .expect("serialise door event");
        for s in st.sockets.values() {
            if s.door_status.contains(&door) {
                let _ = s.tx.send(Outgoing::DoorStatus(status.clone()));
            }
            if relay_changed && s.door_events.contains(&door) {
                let _ = s.tx.send(Outgoing::DoorEvent(door_ev.clone()));
            }
        }
    }

    fn bump_generation(&self, door: u64) -> Option<u64> {
        let mut st = self.lock();
        let rt = st.doors.get_mut(&door)?;
        rt.generation += 1;
        Some(rt.generation)
    }

    fn generation_is(&self, door: u64, generation: u64) -> bool {
        self.lock()
            .doors
            .get(&door)
            .is_some_and(|d| d.generation == generation)
    }

    fn relay_open(&self, door: u64) -> bool {
        self.lock()
            .doors
            .get(&door)
            .is_some_and(|d| d.status.door_relay_open)
    }

    fn next_close_reports(&self) -> bool {
        let mut st = self.lock();
        st.close_counter += 1;
        st.close_counter % 2 == 1
    }

    fn api_event(&self, event_type: i64, door: u64, linked: Option<i64>) -> i64 {
        let mut ev = SimEvent::new(event_type, door);
        ev.linked_event = linked;
        self.push_events(&[ev])[0]
    }

    /// Door contact follows the relay after a short delay; no-op when the door has no contact.
    async fn contact_follows(self: &Arc<Self>, door: u64, generation: u64, closed: bool) -> bool {
        if !self.sleep(self.cfg.door_contact_delay).await || !self.generation_is(door, generation) {
            return false;
        }
        let mut changed = false;
        self.update_door(door, |s| {
            if let Some(c) = s.door_contact_closed.as_mut() {
                changed = *c != closed;
                *c = closed;
            }
        });
        changed
    }

    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.shutdown.cancelled() => false,
        }
    }

    /// Timed open (door/open and door/control TimedOpen).
    pub fn timed_open(self: &Arc<Self>, door: u64, open_for: Duration) {
        let Some(generation) = self.bump_generation(door) else {
            return;
        };
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let req = me.api_event(580, door, None);
            me.update_door(door, |s| s.door_relay_open = true);
            if me.contact_follows(door, generation, false).await {
                me.api_event(28, door, Some(req));
            }
            let rest = open_for.saturating_sub(me.cfg.door_contact_delay);
            if !me.sleep(rest).await || !me.generation_is(door, generation) {
                return;
            }
            me.relock(door, generation).await;
        });
    }

    async fn relock(self: &Arc<Self>, door: u64, generation: u64) {
        let was_open = self.relay_open(door);
        self.update_door(door, |s| s.door_relay_open = false);
        if was_open {
            self.api_event(29, door, None);
        }
        if self.contact_follows(door, generation, true).await && self.next_close_reports() {
            self.api_event(47, door, None);
        }
    }

    /// door/holdopen.
    pub fn hold_open(self: &Arc<Self>, door: u64) {
        if self.cfg.momentary_doors.contains(&door) {
            return self.toggle(door);
        }
        let Some(_generation) = self.bump_generation(door) else {
            return;
        };
        let me = Arc::clone(self);
        tokio::spawn(async move {
            me.api_event(580, door, None);
            me.update_door(door, |s| s.door_relay_open = true);
        });
    }

    /// door/close.
    pub fn close(self: &Arc<Self>, door: u64) {
        if self.cfg.momentary_doors.contains(&door) {
            return self.toggle(door);
        }
        let Some(generation) = self.bump_generation(door) else {
            return;
        };
        let me = Arc::clone(self);
        tokio::spawn(async move { me.relock(door, generation).await });
    }

    /// A momentary relay pulse: the door moves to the other state.
    fn toggle(self: &Arc<Self>, door: u64) {
        let Some(generation) = self.bump_generation(door) else {
            return;
        };
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let opening = !me.relay_open(door);
            if opening {
                let req = me.api_event(580, door, None);
                me.update_door(door, |s| s.door_relay_open = true);
                if me.contact_follows(door, generation, false).await {
                    me.api_event(28, door, Some(req));
                }
            } else {
                me.relock(door, generation).await;
            }
        });
    }

    pub fn record_command(&self, path: &str, body: serde_json::Value) {
        self.lock().commands.push(ReceivedCommand {
            path: path.to_string(),
            body,
            at: Utc::now(),
        });
    }
}

/// "+01:00" style form of a UTC offset in minutes, as REST event times end.
pub(crate) fn offset_str(minutes: i32) -> String {
    let sign = if minutes < 0 { '-' } else { '+' };
    let a = minutes.unsigned_abs();
    format!("{sign}{:02}:{:02}", a / 60, a % 60)
}

fn insert_sorted(events: &mut Vec<StoredEvent>, ev: StoredEvent) {
    let key = (ev.time, ev.id);
    if events.last().is_none_or(|l| (l.time, l.id) <= key) {
        events.push(ev);
    } else {
        let pos = events.partition_point(|e| (e.time, e.id) <= key);
        events.insert(pos, ev);
    }
}
