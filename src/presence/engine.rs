//! The presence state machine: evidence in, person states out. Pure and deterministic: every
//! input carries its own time, and timers fire only when [`Engine::tick`] is told the time.
//!
//! Rules (README "People and presence"):
//! - A badge (Net2 access granted) at an `in` door, or at a `both` door, is an entry → home
//!   (a `both` door says "was here": a person already home stays home). At an `out` door →
//!   away, even while a phone is still on the Wi-Fi (the door is the stronger evidence).
//! - A QR entry (Apptive granted) → home.
//! - A Wi-Fi session of one of the person's devices that becomes active (a GATE portal login,
//!   or a new session in the accounting list) → home, as of the session's start: a session
//!   that started before the person left by an `out` door does not bring them back; a *new*
//!   one does.
//! - When the person's last Wi-Fi session ends (gone from the accounting list, or a logout /
//!   timeout / disconnect), they go away `wifi_away_after` later unless an entry follows. A
//!   session the accounting list still shows after its device's logout / timeout is stale
//!   (the list lags the portal log; RADIUS sessions without a Stop linger) and not taken again.
//! - A Wi-Fi source that lists no sessions for `wifi_away_after` (or is removed from the
//!   config) can no longer say a session ended: its sessions end as of its last list (or now),
//!   and the away timer runs as for any end ([`Engine::expire_sources`]).
//! - Evidence older than the newest evidence already used is ignored (a REST backfill replaying
//!   the morning must not undo the afternoon); evidence of the same second is used in arrival
//!   order, each piece once (by its event id, the key every source keeps stable for a
//!   repeated delivery: the Net2 source publishes a live event and its REST copy once).
//! - Access denied never counts. A person with no evidence yet is unknown (`home: None`).

use crate::config::{Config, DoorDirection};
use crate::model::{DoorId, DoorRef, PersonState, WifiSession};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Ids of the latest evidence used, kept per person (a burst within [`CLOCK_TOLERANCE`] longer
/// than this is longer than any real one).
const SAME_SECOND_IDS: usize = 64;
/// Evidence up to this much older than the newest already used still counts, in the order it
/// arrives. The systems' clocks differ by seconds, and Net2 stamps whole seconds: found by the
/// day through all three simulators (tests/presence_day.rs), a badge at an out door at
/// 12:00:00.4 reads 12:00:00 and arrived after a Wi-Fi login stamped 12:00:00.3, and was
/// ignored as older — the person stayed home after leaving. Older than this, evidence is a
/// replay or a backfill of what the state already reflects, and is ignored.
const CLOCK_TOLERANCE: chrono::Duration = chrono::Duration::seconds(5);
/// How long before GATE's previous session list a portal entry or a session first seen after
/// that list can have started (GATE's accounting learns of a session when the access point's
/// Accounting-Start arrives; its log may be written late). See [`Engine::gate_floor`].
const LIST_LAG: chrono::Duration = chrono::Duration::minutes(5);
/// Ended devices remembered per person.
const ENDED_MACS: usize = 32;

/// One piece of evidence, as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// Net2 access granted for a user at a door.
    Badge {
        /// The event's id (stable over repeated deliveries; two badges in one second differ).
        id: String,
        user: i64,
        door: DoorRef,
        at: DateTime<Utc>,
    },
    /// Apptive QR access granted at a reader.
    Qr {
        id: String,
        member: String,
        reader: String,
        at: DateTime<Utc>,
    },
    /// A GATE portal login (`ui`, `ai`).
    WifiLogin {
        id: String,
        device: WifiDevice,
        at: DateTime<Utc>,
    },
    /// A GATE portal logout, timeout or disconnect (`uo`, `st`, `si`, `di`).
    WifiEnd {
        id: String,
        action: String,
        device: WifiDevice,
        at: DateTime<Utc>,
    },
    /// Every active session of a GATE source (a session missing from it has ended).
    WifiSessions {
        source: String,
        sessions: Vec<WifiSession>,
        at: DateTime<Utc>,
    },
}

/// Who a Wi-Fi record is about: any of these can name the person.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WifiDevice {
    pub user: Option<i64>,
    pub username: Option<String>,
    /// The portal entry's e-mail (lower case). The portal log's `username` is often a short
    /// name while RADIUS accounting names the same person by e-mail: a person configured with
    /// the e-mail in `gate_usernames` is found by either.
    pub email: Option<String>,
    pub mac: Option<String>,
    pub access_point: Option<String>,
}

impl Evidence {
    /// The evidence a bus message carries, if any. Access denied, QR denied, door events and
    /// everything else carry none.
    pub fn from_message(m: &crate::model::Message) -> Option<Evidence> {
        use crate::model::{EventKind, Message};
        match m {
            Message::Event(e) => {
                // Never later than gatehouse received it: a device clock running ahead (a GATE
                // an hour fast was seen in the simulator) would otherwise run every person's
                // Wi-Fi timers up to its time (others going away early) and make its person's
                // newest evidence an hour in the future (their doors ignored for an hour).
                let at = e.time.with_timezone(&Utc).min(e.received);
                let id = e.id.clone();
                match &e.kind {
                    EventKind::AccessGranted { .. } => Some(Evidence::Badge {
                        id,
                        user: e.user.as_ref()?.id,
                        door: e.door.clone()?,
                        at,
                    }),
                    EventKind::QrGranted { reader, member, .. } => Some(Evidence::Qr {
                        id,
                        member: member.clone(),
                        reader: reader.clone(),
                        at,
                    }),
                    EventKind::Wifi {
                        action,
                        user,
                        username,
                        email,
                        mac,
                        access_point,
                        ..
                    } => {
                        let device = WifiDevice {
                            user: *user,
                            username: username.as_ref().map(|u| u.trim().to_lowercase()),
                            email: email.as_ref().map(|u| u.trim().to_lowercase()),
                            mac: mac.as_deref().and_then(crate::config::normalize_mac),
                            access_point: access_point.clone(),
                        };
                        // `aa` (automatic authentication) is deliberately not a login: GATE
                        // logs it as an authentication step (action `au`, where `ui` / `ai`
                        // log `li`, a login), not as a session start. The session it may lead
                        // to shows as an `ai` or in the accounting list, which bring the
                        // person home; taking `aa` too would make an authentication that
                        // never became a session an arrival.
                        match action.as_str() {
                            "ui" | "ai" => Some(Evidence::WifiLogin { id, device, at }),
                            "uo" | "st" | "si" | "di" => Some(Evidence::WifiEnd {
                                id,
                                action: action.clone(),
                                device,
                                at,
                            }),
                            _ => None,
                        }
                    }
                    _ => None,
                }
            }
            Message::WifiSessions {
                source,
                sessions,
                at,
            } => Some(Evidence::WifiSessions {
                source: source.clone(),
                sessions: sessions.clone(),
                at: *at,
            }),
            _ => None,
        }
    }

    fn at(&self) -> DateTime<Utc> {
        match self {
            Evidence::Badge { at, .. }
            | Evidence::Qr { at, .. }
            | Evidence::WifiLogin { at, .. }
            | Evidence::WifiEnd { at, .. }
            | Evidence::WifiSessions { at, .. } => *at,
        }
    }
}

/// An active Wi-Fi session of a person, as last listed by GATE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub mac: Option<String>,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub access_point: Option<String>,
    pub started: Option<DateTime<Utc>>,
}

/// Everything the engine knows about one person; persisted (SQLite `state` table) so that a
/// restart neither forgets a state nor announces an arrival again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    pub home: Option<bool>,
    /// When the state last flipped.
    pub since: Option<DateTime<Utc>>,
    /// The evidence behind the current state, in words.
    pub evidence: Option<String>,
    /// The newest evidence used (anything older by more than [`CLOCK_TOLERANCE`] is ignored).
    pub evidence_at: Option<DateTime<Utc>>,
    /// Ids of the latest evidence used (never used twice), newest last.
    pub evidence_ids: Vec<String>,
    pub last_door: Option<DoorRef>,
    pub last_door_direction: Option<DoorDirection>,
    pub last_door_at: Option<DateTime<Utc>>,
    pub last_qr_at: Option<DateTime<Utc>>,
    pub last_qr_reader: Option<String>,
    /// Active sessions by `<source>/<session id>`.
    pub sessions: BTreeMap<String, Session>,
    /// The last session ended then: away at `wifi_ended_at + wifi_away_after` unless an entry
    /// follows.
    pub wifi_ended_at: Option<DateTime<Utc>>,
    /// Why the Wi-Fi ended, when not a session ending (`GATE has not answered since …`); the
    /// away evidence says so.
    pub wifi_end_note: Option<String>,
    /// Sessions ended because their source stopped answering (or was removed): listed again
    /// once it answers, they count as of that list (the person is on the Wi-Fi now).
    pub expired_sessions: BTreeSet<String>,
    /// Devices a logout / timeout / disconnect ended, and when. GATE's accounting list can
    /// still show such a session afterwards (it lags the portal log, and a RADIUS session
    /// whose access point never sent its Stop stays "active" for hours): a session of that
    /// device that started before its end is not taken again. Forgotten once the list no
    /// longer shows the device.
    pub ended_macs: BTreeMap<String, DateTime<Utc>>,
}

impl Record {
    fn fresh(&self, at: DateTime<Utc>, id: &str) -> bool {
        match self.evidence_at {
            None => true,
            Some(e) => at > e - CLOCK_TOLERANCE && !self.evidence_ids.iter().any(|i| i == id),
        }
    }

    fn used(&mut self, at: DateTime<Utc>, id: &str) {
        if self.evidence_at.is_none_or(|e| at > e) {
            self.evidence_at = Some(at);
        }
        if self.evidence_ids.len() >= SAME_SECOND_IDS {
            self.evidence_ids.remove(0);
        }
        self.evidence_ids.push(id.to_string());
    }

    /// An entry: home (a person already home stays home since then).
    fn entry(&mut self, at: DateTime<Utc>, evidence: String) {
        if self.wifi_ended_at.is_some_and(|e| at >= e) {
            self.wifi_ended_at = None;
        }
        if self.home != Some(true) {
            self.home = Some(true);
            self.since = Some(at);
        }
        self.evidence = Some(evidence);
    }

    fn leave(&mut self, at: DateTime<Utc>, evidence: String) {
        self.wifi_ended_at = None;
        if self.home != Some(false) {
            self.home = Some(false);
            self.since = Some(at);
        }
        self.evidence = Some(evidence);
    }

    /// A session ended at `at`: if it was the last one, the away timer starts.
    fn session_ended(&mut self, at: DateTime<Utc>, note: Option<String>) {
        if self.sessions.is_empty() && self.home != Some(false) {
            self.wifi_ended_at = Some(at);
            self.wifi_end_note = note;
        }
    }
}

/// One person's configuration, as the engine needs it.
#[derive(Debug, Clone, PartialEq)]
struct Person {
    name: String,
    site: String,
}

/// A person's state changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub state: PersonState,
    /// `Some(home)` when home / away flipped (an arrival or a departure to announce).
    pub flipped: Option<bool>,
    /// The id of the evidence that made the change (the same when it is replayed).
    pub cause: String,
}

pub struct Engine {
    people: BTreeMap<String, Person>,
    net2: HashMap<i64, String>,
    gate_users: HashMap<i64, String>,
    gate_names: HashMap<String, String>,
    macs: HashMap<String, String>,
    members: HashMap<String, String>,
    directions: HashMap<DoorId, DoorDirection>,
    away_after: chrono::Duration,
    records: BTreeMap<String, Record>,
    /// Evidence at or after this time runs no timers ([`Engine::hold_timers`]).
    hold_from: Option<DateTime<Utc>>,
    /// The configured Wi-Fi sources (session keys start with `<source>/`).
    wifi_sources: BTreeSet<String>,
    /// When each Wi-Fi source last listed its sessions (not persisted: after a start, a source
    /// gets `wifi_away_after` from then to answer, `waiting_since`).
    last_list: HashMap<String, DateTime<Utc>>,
    /// Since when a source with sessions but no list yet (after a start) has been waited for.
    /// Kept apart from `last_list`: a start is no list, and must not move the backfill's
    /// times ([`Engine::gate_floor`]).
    waiting_since: HashMap<String, DateTime<Utc>>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

fn door_label(d: &DoorRef) -> String {
    match &d.name {
        Some(n) => format!("door {} {n}", d.id),
        None => format!("door {}", d.id),
    }
}

fn direction_name(d: DoorDirection) -> &'static str {
    match d {
        DoorDirection::In => "in",
        DoorDirection::Out => "out",
        DoorDirection::Both => "both",
    }
}

impl Engine {
    /// An engine for `cfg`'s people, resuming from the persisted records.
    pub fn new(cfg: &Config, records: BTreeMap<String, Record>) -> Engine {
        let mut e = Engine {
            people: BTreeMap::new(),
            net2: HashMap::new(),
            gate_users: HashMap::new(),
            gate_names: HashMap::new(),
            macs: HashMap::new(),
            members: HashMap::new(),
            directions: HashMap::new(),
            away_after: chrono::Duration::minutes(10),
            records,
            hold_from: None,
            wifi_sources: BTreeSet::new(),
            last_list: HashMap::new(),
            waiting_since: HashMap::new(),
        };
        e.configure(cfg);
        e
    }

    /// Take a new config (hot reload): people, identities, door directions and the Wi-Fi
    /// window apply at once. A person removed from the config is forgotten.
    pub fn configure(&mut self, cfg: &Config) {
        let first = cfg.first_site();
        self.people = cfg
            .people
            .iter()
            .map(|p| {
                (
                    p.id.clone(),
                    Person {
                        name: p.name.clone().unwrap_or_else(|| p.id.clone()),
                        site: p.site.clone().unwrap_or_else(|| first.clone()),
                    },
                )
            })
            .collect();
        self.net2.clear();
        self.gate_users.clear();
        self.gate_names.clear();
        self.macs.clear();
        self.members.clear();
        for p in &cfg.people {
            for u in &p.net2_users {
                self.net2.insert(*u, p.id.clone());
            }
            for u in &p.gate_users {
                self.gate_users.insert(*u, p.id.clone());
            }
            for u in &p.gate_usernames {
                self.gate_names
                    .insert(u.trim().to_lowercase(), p.id.clone());
            }
            for m in &p.macs {
                if let Some(m) = crate::config::normalize_mac(m) {
                    self.macs.insert(m, p.id.clone());
                }
            }
            for m in &p.apptive_members {
                self.members.insert(m.clone(), p.id.clone());
            }
        }
        self.directions = cfg.doors.iter().map(|(id, d)| (*id, d.direction)).collect();
        // Only for words: a source no longer configured falls silent ([`Engine::expire_sources`]).
        self.wifi_sources = cfg
            .sources
            .gate
            .iter()
            .map(|_| crate::sources::gate::SOURCE.to_string())
            .collect();
        self.away_after = chrono::Duration::from_std(cfg.presence.wifi_away_after.get())
            .unwrap_or(chrono::Duration::minutes(10));
        self.records.retain(|id, _| self.people.contains_key(id));
        for id in self.people.keys() {
            self.records.entry(id.clone()).or_default();
        }
    }

    /// The persisted form: every configured person's record.
    pub fn records(&self) -> &BTreeMap<String, Record> {
        &self.records
    }

    /// Every configured person's state (published at start-up and after a reload).
    pub fn states(&self) -> Vec<PersonState> {
        self.people.keys().filter_map(|id| self.state(id)).collect()
    }

    pub fn state(&self, id: &str) -> Option<PersonState> {
        let p = self.people.get(id)?;
        let r = self.records.get(id)?;
        Some(PersonState {
            id: id.to_string(),
            name: p.name.clone(),
            site: p.site.clone(),
            home: r.home,
            since: r.since,
            evidence: r.evidence.clone(),
            last_door: r.last_door.clone(),
            last_door_direction: r.last_door_direction.map(|d| direction_name(d).to_string()),
            last_door_at: r.last_door_at,
            wifi_sessions: r.sessions.len() as u32,
            last_qr_at: r.last_qr_at,
        })
    }

    /// The wall clock was stepped by `by` (NTP at a Pi's boot; [`crate::clock::WallWatch`]):
    /// every running timer moves with it, so what is left of it stays what it was and it fires
    /// after `wifi_away_after` of time that really passed. Without this, a step of days forward
    /// fires every timer at once (everyone on the Wi-Fi "left"), and a step back holds them
    /// for as long as the step. The stored times are rewritten on the new clock (they are when
    /// the session ended as the stepped clock reads it).
    pub fn wall_stepped(&mut self, by: chrono::Duration) {
        for r in self.records.values_mut() {
            if let Some(t) = r.wifi_ended_at.as_mut() {
                *t += by;
            }
            // Back: the newest evidence used moves back too, or everything stamped on the
            // stepped clock (a timer's end included, which would then be dropped: never away)
            // would look older than it for as long as the step. Forward: it stays, evidence
            // from a device whose clock was not stepped (Net2) still counts.
            if by < chrono::Duration::zero()
                && let Some(t) = r.evidence_at.as_mut()
            {
                *t += by;
            }
        }
        for t in self
            .last_list
            .values_mut()
            .chain(self.waiting_since.values_mut())
        {
            *t += by;
        }
        if let Some(h) = self.hold_from.as_mut() {
            *h += by;
        }
    }

    /// When [`Engine::tick`] (or [`Engine::expire_sources`]) has something to do next: a Wi-Fi
    /// away timer, or a source's sessions expiring.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let timers = self.records.values().filter_map(|r| r.wifi_ended_at);
        let silent = self
            .session_sources()
            .into_iter()
            .filter_map(|s| self.silent_since(&s));
        timers.chain(silent).min().map(|t| t + self.away_after)
    }

    /// The source's last list, or since when gatehouse has waited for its first.
    fn silent_since(&self, source: &str) -> Option<DateTime<Utc>> {
        self.last_list
            .get(source)
            .or_else(|| self.waiting_since.get(source))
            .copied()
    }

    fn session_sources(&self) -> BTreeSet<String> {
        self.records
            .values()
            .flat_map(|r| r.sessions.keys())
            .filter_map(|k| k.split_once('/').map(|(s, _)| s.to_string()))
            .collect()
    }

    /// End the sessions of Wi-Fi sources that can no longer say they ended: a source that has
    /// not listed its sessions for `wifi_away_after` (GATE down for days, its token revoked:
    /// 401 for ever; or removed from the config), as of its last list (or the start). Without this, everyone who was on the Wi-Fi would stay home for ever: the away
    /// timer starts only when a list (or a logout) ends the last session. The away timer then
    /// runs from that time as for any session end ([`Engine::tick`] fires it), unless other
    /// evidence since says otherwise. Call it before [`Engine::tick`] with the wall clock.
    pub fn expire_sources(&mut self, now: DateTime<Utc>) -> Vec<Change> {
        let mut ends: Vec<(String, DateTime<Utc>, String, bool)> = Vec::new();
        for source in self.session_sources() {
            if !self.last_list.contains_key(&source) {
                self.waiting_since.entry(source.clone()).or_insert(now);
            }
            let Some(last) = self.silent_since(&source) else {
                continue;
            };
            if last + self.away_after > now {
                continue;
            }
            // A removed source (`sources.gate` takes a restart) is silent from the start: its
            // sessions end as of the start, away `wifi_away_after` later, like a silent one.
            let configured = self.wifi_sources.contains(&source);
            tracing::warn!(source = %source, since = %last, configured, "no Wi-Fi session list for wifi_away_after: its sessions count as ended");
            let note = if configured {
                format!(
                    "{} has not answered since {}",
                    source.to_uppercase(),
                    ts(last)
                )
            } else {
                format!(
                    "Wi-Fi source {source} no longer configured (since {})",
                    ts(last)
                )
            };
            ends.push((source, last, note, configured));
        }
        if ends.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let ids: Vec<String> = self.people.keys().cloned().collect();
        for person in ids {
            self.change(&person, &mut out, |r| {
                for (source, at, note, relist) in &ends {
                    let prefix = format!("{source}/");
                    let gone: Vec<String> = r
                        .sessions
                        .keys()
                        .filter(|k| k.starts_with(&prefix))
                        .cloned()
                        .collect();
                    if gone.is_empty() {
                        continue;
                    }
                    for k in gone {
                        r.sessions.remove(&k);
                        if *relist {
                            r.expired_sessions.insert(k);
                        }
                    }
                    // Evidence newer than the end (a badge at a door since) already says
                    // where the person is.
                    if r.evidence_at.is_none_or(|e| e <= *at) {
                        r.session_ended(*at, Some(note.clone()));
                    }
                }
            });
        }
        out
    }

    /// Fire the Wi-Fi away timers due at `now`.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Change> {
        let due: Vec<String> = self
            .records
            .iter()
            .filter(|(_, r)| r.wifi_ended_at.is_some_and(|t| t + self.away_after <= now))
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in due {
            let away_after = self.away_after;
            self.change(&id, &mut out, |r| {
                let Some(ended) = r.wifi_ended_at.take() else {
                    return;
                };
                let at = ended + away_after;
                let id = format!("wifi-away@{}", at.timestamp_millis());
                if !r.sessions.is_empty() || r.home == Some(false) || !r.fresh(at, &id) {
                    return;
                }
                r.used(at, &id);
                let why = r
                    .wifi_end_note
                    .take()
                    .unwrap_or_else(|| format!("Wi-Fi ended at {}", ts(ended)));
                r.leave(
                    at,
                    format!(
                        "{why} and no entry within {}",
                        crate::config::HumanDuration(away_after.to_std().unwrap_or_default())
                    ),
                );
            });
        }
        out
    }

    /// Hold the timers while gatehouse starts (`from`: the start time; `None` ends the hold).
    ///
    /// At start the sources' backfill brings what happened while gatehouse was down, and live
    /// evidence stamped with the local clock arrives among it: GATE's first session list comes
    /// about a second after start, long before Net2's backfill is through. Ticking to the
    /// list's time would fire every Wi-Fi timer that fell due during the downtime; a backfilled
    /// entry that should have cancelled one (a badge at an `in` door two minutes before the
    /// timer) then arrives older than the newest evidence and is ignored: away while inside.
    /// So during the hold, evidence from before `from` (a backfill, replayed in its order)
    /// still fires the timers due by its time, and evidence at or after `from` fires none; the
    /// task ticks to the wall clock once the hold ends.
    pub fn hold_timers(&mut self, from: Option<DateTime<Utc>>) {
        self.hold_from = from;
    }

    /// The earliest a GATE record first seen now can have happened: its previous session
    /// list's time. GATE is polled (portal log, then the session list); a portal entry not read
    /// by the previous poll was written after it, and a session absent from the previous list
    /// started after it. Used to correct a GATE clock running behind, which we cannot tell from
    /// a late delivery by the times alone: a logout stamped an hour behind would start an away
    /// timer already expired (away at once), a new session an hour behind would be older than
    /// the person's last door and bring nobody home. After a GATE outage (or a restart: not
    /// persisted) the previous list is old or unknown and a backfill keeps its own times.
    fn gate_floor(&self, source: &str) -> Option<DateTime<Utc>> {
        self.last_list.get(source).copied()
    }

    /// Use one piece of evidence. Timers due by its time fire first, so a backfill replays a
    /// day in the order it happened (held while gatehouse starts: [`Engine::hold_timers`]).
    pub fn apply(&mut self, ev: &Evidence) -> Vec<Change> {
        // A GATE portal entry is never older than the previous list allows (a login minus the
        // lag, erring early: the door decides; an end exactly, erring late: away later).
        let floor = self.gate_floor(crate::sources::gate::SOURCE);
        let corrected;
        let ev = match (ev, floor) {
            (Evidence::WifiLogin { id, device, at }, Some(f)) if *at < f - LIST_LAG => {
                corrected = Evidence::WifiLogin {
                    id: id.clone(),
                    device: device.clone(),
                    at: f - LIST_LAG,
                };
                &corrected
            }
            (
                Evidence::WifiEnd {
                    id,
                    action,
                    device,
                    at,
                },
                Some(f),
            ) if *at < f - LIST_LAG => {
                corrected = Evidence::WifiEnd {
                    id: id.clone(),
                    action: action.clone(),
                    device: device.clone(),
                    at: f,
                };
                &corrected
            }
            _ => ev,
        };
        let mut out = if self.hold_from.is_some_and(|h| ev.at() >= h) {
            Vec::new()
        } else {
            self.tick(ev.at())
        };
        match ev {
            Evidence::Badge { id, user, door, at } => {
                let Some(person) = self.net2.get(user).cloned() else {
                    return out;
                };
                let dir = self
                    .directions
                    .get(&door.id)
                    .copied()
                    .unwrap_or(DoorDirection::Both);
                self.change(&person, &mut out, |r| {
                    if !r.fresh(*at, id) {
                        return;
                    }
                    r.used(*at, id);
                    r.last_door = Some(door.clone());
                    r.last_door_direction = Some(dir);
                    r.last_door_at = Some(*at);
                    let what = format!("{} ({})", door_label(door), direction_name(dir));
                    match dir {
                        DoorDirection::In | DoorDirection::Both => r.entry(*at, what),
                        DoorDirection::Out => r.leave(*at, what),
                    }
                });
            }
            Evidence::Qr {
                id,
                member,
                reader,
                at,
            } => {
                let Some(person) = self.members.get(member).cloned() else {
                    return out;
                };
                self.change(&person, &mut out, |r| {
                    if !r.fresh(*at, id) {
                        return;
                    }
                    r.used(*at, id);
                    r.last_qr_at = Some(*at);
                    r.last_qr_reader = Some(reader.clone());
                    r.entry(*at, format!("QR entry at {reader}"));
                });
            }
            Evidence::WifiLogin { id, device, at } => {
                let Some(person) = self.wifi_person(device) else {
                    return out;
                };
                self.change(&person, &mut out, |r| {
                    if !r.fresh(*at, id) {
                        return;
                    }
                    r.used(*at, id);
                    r.entry(*at, wifi_words("Wi-Fi login", device));
                });
            }
            Evidence::WifiEnd {
                id,
                action,
                device,
                at,
            } => {
                let Some(person) = self.wifi_person(device) else {
                    return out;
                };
                self.change(&person, &mut out, |r| {
                    if !r.fresh(*at, id) {
                        return;
                    }
                    r.used(*at, id);
                    // The device's sessions end (by MAC; without one, the user's).
                    if let Some(m) = &device.mac {
                        r.ended_macs.insert(m.clone(), *at);
                        if r.ended_macs.len() > ENDED_MACS {
                            let oldest = r
                                .ended_macs
                                .iter()
                                .min_by_key(|(_, t)| **t)
                                .map(|(k, _)| k.clone());
                            if let Some(k) = oldest {
                                r.ended_macs.remove(&k);
                            }
                        }
                    }
                    let before = r.sessions.len();
                    r.sessions.retain(|_, s| match &device.mac {
                        Some(m) => s.mac.as_ref() != Some(m),
                        None => {
                            !(device.username.is_some() && s.username == device.username
                                || device.email.is_some() && s.username == device.email
                                || device.user.is_some()
                                    && s.user_id.as_deref()
                                        == device.user.map(|u| u.to_string()).as_deref())
                        }
                    });
                    // A logout without a session we knew of (no accounting list yet) ends
                    // the Wi-Fi presence too.
                    if r.sessions.is_empty() && (before > 0 || r.wifi_ended_at.is_none()) {
                        tracing::debug!(action = %action, "last Wi-Fi session ended");
                        r.session_ended(*at, None);
                    }
                });
            }
            Evidence::WifiSessions {
                source,
                sessions,
                at,
            } => {
                let mut mine: BTreeMap<String, BTreeMap<String, Session>> = BTreeMap::new();
                for s in sessions {
                    let device = WifiDevice {
                        user: s.user_id.as_deref().and_then(|u| u.trim().parse().ok()),
                        username: s.username.as_ref().map(|u| u.trim().to_lowercase()),
                        email: None,
                        mac: s.mac.as_deref().and_then(crate::config::normalize_mac),
                        access_point: s.access_point.clone(),
                    };
                    if let Some(p) = self.wifi_person(&device) {
                        mine.entry(p).or_default().insert(
                            format!("{source}/{}", s.session_id),
                            Session {
                                mac: device.mac,
                                username: device.username,
                                user_id: s.user_id.clone(),
                                access_point: s.access_point.clone(),
                                started: s.started,
                            },
                        );
                    }
                }
                // A session absent from the previous list started after it, whatever GATE's
                // clock says (less the lag; see gate_floor).
                let floor = self.gate_floor(source).map(|f| f - LIST_LAG);
                let last = self.last_list.entry(source.clone()).or_insert(*at);
                *last = (*last).max(*at);
                let prefix = format!("{source}/");
                let ids: Vec<String> = self.people.keys().cloned().collect();
                for person in ids {
                    let listed = mine.remove(&person).unwrap_or_default();
                    self.change(&person, &mut out, |r| {
                        let ended: Vec<String> = r
                            .sessions
                            .keys()
                            .filter(|k| k.starts_with(&prefix) && !listed.contains_key(*k))
                            .cloned()
                            .collect();
                        // Devices the list no longer shows are not ended any more.
                        r.ended_macs.retain(|m, _| {
                            listed.values().any(|s| s.mac.as_ref() == Some(m))
                        });
                        let new: Vec<(String, Session)> = listed
                            .into_iter()
                            .filter(|(k, _)| !r.sessions.contains_key(k))
                            .filter(|(_, s)| {
                                // Listed after a logout / timeout of its device: stale.
                                let stale = s.mac.as_ref().and_then(|m| r.ended_macs.get(m)).is_some_and(
                                    |end| s.started.is_none_or(|st| st <= *end),
                                );
                                if stale {
                                    tracing::debug!(mac = ?s.mac, "GATE still lists a session its device ended: not taken");
                                }
                                !stale
                            })
                            .collect();
                        for k in &ended {
                            r.sessions.remove(k);
                        }
                        // Started earlier than the list says (never later: a wrong clock).
                        let mut new_entries = Vec::new();
                        for (k, s) in new {
                            // Ended only because the source went silent: on the Wi-Fi now.
                            let (start, id) = if r.expired_sessions.contains(&k) {
                                (*at, format!("{k}@{}", at.timestamp_millis()))
                            } else {
                                let start = s.started.map_or(*at, |t| t.min(*at));
                                (floor.map_or(start, |f| start.max(f.min(*at))), k.clone())
                            };
                            new_entries.push((id, start, s.clone()));
                            r.sessions.insert(k, s);
                        }
                        r.expired_sessions.retain(|k| !k.starts_with(&prefix));
                        if !r.sessions.is_empty() {
                            // A session is active: no away timer.
                            r.wifi_ended_at = None;
                        } else if !ended.is_empty() {
                            r.session_ended(*at, None);
                        }
                        new_entries.sort_by_key(|(_, t, _)| *t);
                        for (k, start, s) in new_entries {
                            if r.fresh(start, &k) {
                                r.used(start, &k);
                                let d = WifiDevice {
                                    mac: s.mac.clone(),
                                    access_point: s.access_point.clone(),
                                    ..Default::default()
                                };
                                r.entry(start, wifi_words("Wi-Fi session", &d));
                            }
                        }
                    });
                }
            }
        }
        out
    }

    fn wifi_person(&self, d: &WifiDevice) -> Option<String> {
        d.mac
            .as_ref()
            .and_then(|m| self.macs.get(m))
            .or_else(|| d.user.and_then(|u| self.gate_users.get(&u)))
            .or_else(|| d.username.as_ref().and_then(|u| self.gate_names.get(u)))
            .or_else(|| d.email.as_ref().and_then(|u| self.gate_names.get(u)))
            .cloned()
    }

    /// Run `f` on a person's record; a change of their published state goes to `out`.
    fn change(&mut self, id: &str, out: &mut Vec<Change>, f: impl FnOnce(&mut Record)) {
        let before = self.state(id);
        let Some(r) = self.records.get_mut(id) else {
            return;
        };
        let home_before = r.home;
        f(r);
        let home_after = r.home;
        let after = self.state(id);
        if let Some(state) = after
            && Some(&state) != before.as_ref()
        {
            let cause = self
                .records
                .get(id)
                .and_then(|r| r.evidence_ids.last().cloned())
                .unwrap_or_default();
            out.push(Change {
                state,
                flipped: (home_before != home_after).then_some(home_after).flatten(),
                cause,
            });
        }
    }
}

fn wifi_words(what: &str, d: &WifiDevice) -> String {
    let mut s = what.to_string();
    if let Some(m) = &d.mac {
        s.push_str(&format!(" {m}"));
    }
    if let Some(ap) = &d.access_point {
        s.push_str(&format!(" at {ap}"));
    }
    s
}

#[cfg(test)]
mod tests {
    //! Scripted days on the pure engine: exact state timelines, times given explicitly.
    use super::*;
    use crate::model::{Event, EventKind, Message, TokenType, UserRef, Via};

    const CFG: &str = r#"
version: 1
storage: { path: /tmp/presence-test.db }
sources:
  net2:
    url: https://net2.local:8443
    username: Gate House
    password: x
    client_id: 00000000-0000-4000-8000-000000000000
  gate:
    url: https://gate.example.org/api/v1
    token: x
doors:
  1: { name: Front, direction: in }
  2: { name: Back, direction: out }
  3: { name: Side, direction: both }
people:
  - id: anna
    name: Anna Berg
    net2_users: [11]
    gate_users: [501]
    gate_usernames: [Anna@Example.org]
    macs: ["AA-BB-CC-00-00-01", "aabb.cc00.0003"]
    apptive_members: ["M-77"]
  - id: bo
    net2_users: [12]
    macs: ["aa:bb:cc:00:00:02"]
presence: { wifi_away_after: 10m }
"#;

    const ANNA_PHONE: &str = "aa:bb:cc:00:00:01";
    const ANNA_LAPTOP: &str = "aa:bb:cc:00:00:03";

    fn cfg() -> Config {
        crate::config::load_str(CFG, &|_| None).unwrap()
    }

    fn t(hms: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-03-02T{hms}Z"))
            .unwrap()
            .with_timezone(&Utc)
    }

    fn badge(user: i64, door: u64, at: &str) -> Evidence {
        Evidence::Badge {
            id: format!("net2:fp:{at}:{user}:{door}"),
            user,
            door: DoorRef {
                id: door,
                name: ["", "Front", "Back", "Side"]
                    .get(door as usize)
                    .map(|n| n.to_string()),
            },
            at: t(at),
        }
    }

    fn session(id: &str, mac: &str, started: &str) -> WifiSession {
        WifiSession {
            session_id: id.into(),
            username: Some("anna@example.org".into()),
            user_id: Some("501".into()),
            mac: Some(mac.into()),
            access_point: Some("ap-lobby".into()),
            location: Some("Office".into()),
            started: Some(t(started)),
        }
    }

    fn sessions(list: &[WifiSession], at: &str) -> Evidence {
        Evidence::WifiSessions {
            source: "gate".into(),
            sessions: list.to_vec(),
            at: t(at),
        }
    }

    fn wifi_end(action: &str, mac: &str, at: &str) -> Evidence {
        Evidence::WifiEnd {
            id: format!("gate:{action}:{at}"),
            action: action.into(),
            device: WifiDevice {
                mac: Some(mac.into()),
                ..Default::default()
            },
            at: t(at),
        }
    }

    /// An engine and the timeline of one person's flips: (since, home / away, evidence).
    struct Day {
        e: Engine,
        timeline: Vec<(String, &'static str, String)>,
        changes: Vec<Change>,
    }

    impl Day {
        fn new() -> Day {
            Day::resume(BTreeMap::new())
        }
        fn resume(records: BTreeMap<String, Record>) -> Day {
            Day {
                e: Engine::new(&cfg(), records),
                timeline: Vec::new(),
                changes: Vec::new(),
            }
        }
        fn record(&mut self, ch: Vec<Change>) {
            for c in ch {
                if c.state.id == "anna"
                    && let Some(home) = c.flipped
                {
                    self.timeline.push((
                        ts(c.state.since.unwrap()),
                        if home { "home" } else { "away" },
                        c.state.evidence.clone().unwrap(),
                    ));
                }
                self.changes.push(c);
            }
        }
        fn feed(&mut self, ev: Evidence) -> &mut Day {
            let ch = self.e.apply(&ev);
            self.record(ch);
            self
        }
        fn tick(&mut self, at: &str) -> &mut Day {
            let ch = self.e.tick(t(at));
            self.record(ch);
            self
        }
        /// What the task does when it wakes: sources' sessions expire, then the timers.
        fn wake(&mut self, at: &str) -> &mut Day {
            let ch = self.e.expire_sources(t(at));
            self.record(ch);
            self.tick(at)
        }
        fn anna(&self) -> PersonState {
            self.e.state("anna").unwrap()
        }
    }

    fn line(at: &str, s: &'static str, ev: &str) -> (String, &'static str, String) {
        (at.into(), s, ev.into())
    }

    #[test]
    fn unknown_until_the_first_evidence() {
        let d = Day::new();
        let s = d.anna();
        assert_eq!((s.home, s.since, s.evidence), (None, None, None));
        assert_eq!(s.name, "Anna Berg");
        assert_eq!(s.site, "default");
        assert_eq!(d.e.states().len(), 2);
    }

    #[test]
    fn a_badge_stamped_a_little_before_the_last_wifi_evidence_still_counts() {
        // Net2 stamps whole seconds and the systems' clocks differ: the out door at 12:00:00
        // (really 12:00:00.4) arrives after a Wi-Fi session that started at 12:00:00.3 (its
        // phone re-associated as she walked out). The door decides, in arrival order.
        let mut d = Day::new();
        d.feed(badge(11, 1, "08:00:00"))
            .feed(sessions(
                &[session("s1", ANNA_PHONE, "12:00:00.3")],
                "12:00:00.5",
            ))
            .feed(badge(11, 2, "12:00:00"))
            // A replay of the morning badge, hours old, changes nothing.
            .feed(badge(11, 1, "08:00:00"));
        assert_eq!(
            d.timeline,
            vec![
                line("08:00:00", "home", "door 1 Front (in)"),
                line("12:00:00", "away", "door 2 Back (out)"),
            ]
        );
    }

    #[test]
    fn arrive_by_badge_wifi_joins_leave_by_out_door_while_wifi_connected() {
        let mut d = Day::new();
        d.feed(badge(11, 1, "08:00:00"))
            .feed(sessions(
                &[session("s1", ANNA_PHONE, "08:02:00")],
                "08:02:30",
            ))
            .feed(badge(11, 2, "12:00:00"))
            // The phone is still on the Wi-Fi for a while: the door decided.
            .feed(sessions(
                &[session("s1", ANNA_PHONE, "08:02:00")],
                "12:00:30",
            ))
            .tick("12:30:00")
            .feed(sessions(&[], "12:45:00"))
            .tick("13:00:00")
            // A new session (the phone joins again) brings her back.
            .feed(sessions(
                &[session("s2", ANNA_PHONE, "13:30:00")],
                "13:30:20",
            ));
        assert_eq!(
            d.timeline,
            vec![
                line("08:00:00", "home", "door 1 Front (in)"),
                line("12:00:00", "away", "door 2 Back (out)"),
                line(
                    "13:30:00",
                    "home",
                    "Wi-Fi session aa:bb:cc:00:00:01 at ap-lobby"
                ),
            ]
        );
        let s = d.anna();
        assert_eq!(s.wifi_sessions, 1);
        assert_eq!(s.last_door.unwrap().id, 2);
        assert_eq!(s.last_door_direction.as_deref(), Some("out"));
    }

    #[test]
    fn wifi_timeout_is_away_exactly_wifi_away_after_later() {
        let mut d = Day::new();
        d.feed(sessions(
            &[session("s1", ANNA_PHONE, "09:00:00")],
            "09:00:10",
        ))
        .feed(sessions(&[], "17:00:00"));
        assert_eq!(d.e.next_deadline(), Some(t("17:10:00")));
        d.tick("17:09:59");
        assert_eq!(d.anna().home, Some(true), "not a second early");
        d.tick("17:10:00").tick("17:20:00");
        assert_eq!(
            d.timeline,
            vec![
                line(
                    "09:00:00",
                    "home",
                    "Wi-Fi session aa:bb:cc:00:00:01 at ap-lobby"
                ),
                line(
                    "17:10:00",
                    "away",
                    "Wi-Fi ended at 17:00:00 and no entry within 600s"
                ),
            ]
        );
        assert_eq!(d.e.next_deadline(), None);
    }

    #[test]
    fn a_stepped_wall_clock_moves_the_wifi_timer_with_it() {
        // Forward by 3 days (NTP at boot): still home until 600 s of real time have passed.
        let mut d = Day::new();
        d.feed(sessions(
            &[session("s1", ANNA_PHONE, "09:00:00")],
            "09:00:10",
        ))
        .feed(sessions(&[], "17:00:00"));
        d.e.wall_stepped(chrono::Duration::days(3));
        let later = |s: &str| t(s) + chrono::Duration::days(3);
        assert_eq!(d.e.next_deadline(), Some(later("17:10:00")));
        let c = d.e.tick(later("17:05:00"));
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(d.anna().home, Some(true), "no phantom departure");
        let c = d.e.tick(later("17:10:00"));
        assert_eq!(c.iter().filter(|c| c.flipped.is_some()).count(), 1);
        assert_eq!(d.anna().home, Some(false));
        assert!(d.e.tick(later("17:20:00")).is_empty(), "away exactly once");

        // Back by a day: the timer still fires 600 s after the session ended (it was dropped
        // as older than the session list that ended the session: never away).
        let mut d = Day::new();
        d.feed(sessions(
            &[session("s1", ANNA_PHONE, "09:00:00")],
            "09:00:10",
        ))
        .feed(sessions(&[], "17:00:00"));
        d.e.wall_stepped(-chrono::Duration::days(1));
        let earlier = |s: &str| t(s) - chrono::Duration::days(1);
        assert_eq!(d.e.next_deadline(), Some(earlier("17:10:00")));
        d.e.tick(earlier("17:10:00"));
        assert_eq!(d.anna().home, Some(false), "on time after a step back");
    }

    #[test]
    fn wifi_ends_but_a_badge_follows_within_the_window_stays_home() {
        let mut d = Day::new();
        d.feed(sessions(
            &[session("s1", ANNA_PHONE, "09:00:00")],
            "09:00:10",
        ))
        .feed(wifi_end("uo", ANNA_PHONE, "17:00:00"))
        .feed(sessions(&[], "17:00:30"))
        .feed(badge(11, 3, "17:05:00"))
        .tick("17:10:00")
        .tick("23:00:00");
        assert_eq!(
            d.timeline,
            vec![line(
                "09:00:00",
                "home",
                "Wi-Fi session aa:bb:cc:00:00:01 at ap-lobby"
            )]
        );
        let s = d.anna();
        assert_eq!(s.since, Some(t("09:00:00")), "still home since the morning");
        assert_eq!(s.evidence.as_deref(), Some("door 3 Side (both)"));
        assert_eq!(d.e.next_deadline(), None);
    }

    #[test]
    fn a_session_gate_still_lists_after_its_timeout_does_not_keep_her_home() {
        let mut d = Day::new();
        let phone = session("s1", ANNA_PHONE, "09:00:00");
        d.feed(sessions(std::slice::from_ref(&phone), "09:00:10"))
            .feed(wifi_end("st", ANNA_PHONE, "17:00:00"))
            // The accounting list lags the portal log (or the AP never sent its Stop).
            .feed(sessions(std::slice::from_ref(&phone), "17:00:30"))
            .feed(sessions(std::slice::from_ref(&phone), "17:05:00"))
            .tick("17:10:00");
        assert_eq!(
            d.timeline.last().unwrap(),
            &line(
                "17:10:00",
                "away",
                "Wi-Fi ended at 17:00:00 and no entry within 600s"
            )
        );
        assert_eq!(d.anna().wifi_sessions, 0);
        // A real new session of the same phone brings her back.
        d.feed(sessions(
            &[phone.clone(), session("s3", ANNA_PHONE, "18:00:00")],
            "18:00:20",
        ));
        assert_eq!(d.timeline.last().unwrap().0, "18:00:00");
        assert_eq!(d.anna().home, Some(true));
        // The stale one stays ignored while the phone is listed; once the list no longer
        // shows the phone, it is forgotten.
        d.feed(sessions(
            &[session("s3", ANNA_PHONE, "18:00:00")],
            "18:01:00",
        ));
        assert_eq!(d.e.records()["anna"].ended_macs.len(), 1);
        d.feed(sessions(&[], "19:00:00"));
        assert!(d.e.records()["anna"].ended_macs.is_empty());
    }

    #[test]
    fn one_device_logs_out_another_stays_no_timer() {
        let mut d = Day::new();
        d.feed(sessions(
            &[
                session("s1", ANNA_PHONE, "09:00:00"),
                session("s2", ANNA_LAPTOP, "09:05:00"),
            ],
            "09:05:10",
        ))
        .feed(wifi_end("st", ANNA_PHONE, "12:00:00"))
        .tick("13:00:00");
        assert_eq!(d.anna().home, Some(true));
        assert_eq!(d.anna().wifi_sessions, 1);
        // No away timer (the next deadline is GATE's silence check, a list after the last).
        assert_eq!(d.e.records()["anna"].wifi_ended_at, None);
        assert_eq!(d.e.next_deadline(), Some(t("09:15:10")));
        // The laptop goes too (a disconnect): the timer runs from then.
        d.feed(wifi_end("di", ANNA_LAPTOP, "14:00:00"))
            .tick("14:10:00");
        assert_eq!(d.timeline.last().unwrap().1, "away");
        assert_eq!(d.timeline.last().unwrap().0, "14:10:00");
    }

    #[test]
    fn qr_entry_counts_and_apptive_down_changes_nothing() {
        let mut d = Day::new();
        d.feed(Evidence::Qr {
            id: "qr1".into(),
            member: "M-77".into(),
            reader: "front-qr".into(),
            at: t("07:30:00"),
        });
        assert_eq!(
            d.timeline,
            vec![line("07:30:00", "home", "QR entry at front-qr")]
        );
        assert_eq!(d.anna().last_qr_at, Some(t("07:30:00")));
        // Apptive unreachable: the scan is denied (fail closed). A denial, like a Net2 access
        // denied, is no evidence at all.
        let ev = |kind| {
            Message::Event(Box::new(Event {
                id: "x".into(),
                source: "apptive".into(),
                source_id: None,
                fingerprint: "x".into(),
                time: t("18:00:00").fixed_offset(),
                received: t("18:00:00"),
                via: Via::Live,
                door: Some(DoorRef { id: 2, name: None }),
                user: Some(UserRef { id: 11, name: None }),
                kind,
                code: None,
                description: None,
                raw: String::new(),
            }))
        };
        for kind in [
            EventKind::QrDenied {
                reader: "front-qr".into(),
                member: Some("M-77".into()),
                name: None,
                reason: "apptive timeout".into(),
                message: None,
            },
            EventKind::AccessDenied {
                reason: "outside time zone".into(),
            },
            EventKind::DoorOpened,
        ] {
            assert_eq!(Evidence::from_message(&ev(kind)), None);
        }
        // The same message as a grant is evidence (the door is Back, an out door).
        let granted = Evidence::from_message(&ev(EventKind::AccessGranted {
            token: TokenType::Card,
        }))
        .unwrap();
        d.feed(granted);
        assert_eq!(d.timeline.len(), 2);
        assert_eq!(d.timeline[1].1, "away");
    }

    #[test]
    fn a_restart_keeps_states_and_timers_and_announces_nothing_again() {
        let mut d = Day::new();
        d.feed(badge(11, 1, "08:00:00"))
            .feed(sessions(
                &[session("s1", ANNA_PHONE, "08:01:00")],
                "08:01:10",
            ))
            .feed(badge(12, 1, "08:30:00"))
            .feed(sessions(&[], "17:00:00"));
        // Persisted (JSON in the `state` table) and read back.
        let text = serde_json::to_string(d.e.records()).unwrap();
        let mut d2 = Day::resume(serde_json::from_str(&text).unwrap());
        assert_eq!(d2.anna(), d.anna());
        assert_eq!(d2.e.state("bo").unwrap().home, Some(true));
        // The Net2 REST backfill after the restart brings the morning again: nothing flips.
        d2.feed(badge(11, 1, "08:00:00"))
            .feed(badge(11, 2, "07:00:00"))
            .feed(badge(12, 1, "08:30:00"));
        assert!(d2.timeline.is_empty(), "{:?}", d2.timeline);
        assert!(d2.changes.is_empty(), "{:?}", d2.changes);
        // The Wi-Fi timer started before the restart still runs.
        d2.tick("17:10:00");
        assert_eq!(
            d2.timeline,
            vec![line(
                "17:10:00",
                "away",
                "Wi-Fi ended at 17:00:00 and no entry within 600s"
            )]
        );
    }

    #[test]
    fn older_evidence_from_a_backfill_never_flips_the_state_backwards() {
        let mut d = Day::new();
        d.feed(badge(11, 2, "18:00:00"));
        // Net2's REST backfill delivers the day late, after the live out badge.
        for ev in [
            badge(11, 1, "08:00:00"),
            badge(11, 2, "12:00:00"),
            badge(11, 1, "13:00:00"),
        ] {
            d.feed(ev);
        }
        // A Wi-Fi session that started before she left, listed only now.
        d.feed(sessions(
            &[session("s1", ANNA_PHONE, "17:30:00")],
            "18:05:00",
        ));
        assert_eq!(
            d.timeline,
            vec![line("18:00:00", "away", "door 2 Back (out)")]
        );
        assert_eq!(d.anna().since, Some(t("18:00:00")));
    }

    #[test]
    fn a_day_replayed_in_order_fires_its_timers_at_their_time() {
        // Gatehouse was down all day: the backfill brings it in order, and the Wi-Fi timer
        // that fell due between two events fires in its place.
        let mut d = Day::new();
        d.feed(sessions(
            &[session("s1", ANNA_PHONE, "09:00:00")],
            "09:00:05",
        ))
        .feed(wifi_end("st", ANNA_PHONE, "12:00:00"))
        .feed(badge(11, 1, "12:30:00"))
        .feed(badge(11, 2, "16:00:00"));
        assert_eq!(
            d.timeline,
            vec![
                line(
                    "09:00:00",
                    "home",
                    "Wi-Fi session aa:bb:cc:00:00:01 at ap-lobby"
                ),
                line(
                    "12:10:00",
                    "away",
                    "Wi-Fi ended at 12:00:00 and no entry within 600s"
                ),
                line("12:30:00", "home", "door 1 Front (in)"),
                line("16:00:00", "away", "door 2 Back (out)"),
            ]
        );
    }

    #[test]
    fn bursts_and_badges_in_the_same_second() {
        let mut d = Day::new();
        // In and out within the same second: used in arrival order.
        d.feed(badge(11, 1, "10:00:00"))
            .feed(badge(11, 2, "10:00:00"));
        // The same events delivered again (same ids: a replay): nothing.
        d.feed(badge(11, 2, "10:00:00"))
            .feed(badge(11, 1, "10:00:00"));
        // In again in the same second: a different event (its own id), used.
        d.feed(Evidence::Badge {
            id: "net2:4711".into(),
            user: 11,
            door: DoorRef {
                id: 1,
                name: Some("Front".into()),
            },
            at: t("10:00:00"),
        });
        assert_eq!(
            d.timeline,
            vec![
                line("10:00:00", "home", "door 1 Front (in)"),
                line("10:00:00", "away", "door 2 Back (out)"),
                line("10:00:00", "home", "door 1 Front (in)"),
            ]
        );
        // A burst of 500 badges (a controller flushing its buffer), two people interleaved.
        let mut d = Day::new();
        for i in 0..500u32 {
            let at = format!("11:{:02}:{:02}", i / 60, i % 60);
            let door = if i % 2 == 0 { 1 } else { 2 };
            d.feed(badge(11, door, &at)).feed(badge(12, 3 - door, &at));
        }
        assert_eq!(d.timeline.len(), 500, "every flip, once");
        assert_eq!(d.anna().home, Some(false), "the last badge (out door) wins");
        assert_eq!(d.e.state("bo").unwrap().home, Some(true));
        assert!(d.e.records()["anna"].evidence_ids.len() <= SAME_SECOND_IDS);
    }

    #[test]
    fn a_both_door_says_was_here() {
        let mut d = Day::new();
        d.feed(badge(11, 1, "08:00:00"))
            .feed(badge(11, 3, "09:00:00"));
        assert_eq!(d.anna().since, Some(t("08:00:00")), "home stays home");
        d.feed(badge(11, 2, "12:00:00"))
            .feed(badge(11, 3, "13:00:00"));
        assert_eq!(
            d.timeline.iter().map(|l| l.1).collect::<Vec<_>>(),
            vec!["home", "away", "home"]
        );
        // A door not in `doors` counts as `both`; an unknown Net2 user is nobody.
        d.feed(badge(11, 9, "14:00:00"));
        assert_eq!(d.anna().last_door_direction.as_deref(), Some("both"));
        let before = d.changes.len();
        d.feed(badge(99, 2, "15:00:00"));
        assert_eq!(d.changes.len(), before);
        assert_eq!(d.anna().home, Some(true));
    }

    #[test]
    fn wifi_login_events_find_the_person_by_mac_user_or_name() {
        for device in [
            WifiDevice {
                mac: Some(ANNA_LAPTOP.into()),
                ..Default::default()
            },
            WifiDevice {
                user: Some(501),
                ..Default::default()
            },
            WifiDevice {
                username: Some("anna@example.org".into()),
                ..Default::default()
            },
        ] {
            let mut d = Day::new();
            d.feed(Evidence::WifiLogin {
                id: "l1".into(),
                device: device.clone(),
                at: t("08:00:00"),
            });
            assert_eq!(d.anna().home, Some(true), "{device:?}");
            // A logout without any listed session: the timer runs.
            d.feed(Evidence::WifiEnd {
                id: "l2".into(),
                action: "uo".into(),
                device,
                at: t("09:00:00"),
            })
            .tick("09:10:00");
            assert_eq!(d.anna().home, Some(false));
        }
    }

    fn gate_event(action: &str, at: &str, received: &str) -> Message {
        // The portal log names Anna by a short name; her config has the e-mail that RADIUS
        // accounting uses, and the entry carries it too.
        Message::Event(Box::new(Event {
            id: format!("gate:{action}:{at}"),
            source: "gate".into(),
            source_id: None,
            fingerprint: String::new(),
            time: t(at).fixed_offset(),
            received: t(received),
            via: Via::Rest,
            door: None,
            user: None,
            kind: EventKind::Wifi {
                action: action.into(),
                user: None,
                username: Some("anna".into()),
                email: Some("Anna@Example.org".into()),
                mac: None,
                access_point: None,
                location: None,
            },
            code: None,
            description: None,
            raw: String::new(),
        }))
    }

    #[test]
    fn wifi_events_find_the_person_by_the_entrys_email() {
        let mut d = Day::new();
        d.feed(Evidence::from_message(&gate_event("ui", "08:00:00", "08:00:00")).unwrap());
        assert_eq!(d.anna().home, Some(true));
        // The accounting list names the session by e-mail; the logout (no MAC) ends it.
        let mut s = session("s1", ANNA_PHONE, "08:00:00");
        s.mac = None;
        s.user_id = None;
        d.feed(sessions(&[s], "08:00:30"));
        assert_eq!(d.anna().wifi_sessions, 1);
        d.feed(Evidence::from_message(&gate_event("uo", "09:00:00", "09:00:00")).unwrap());
        assert_eq!(d.anna().wifi_sessions, 0);
        d.tick("09:10:00");
        assert_eq!(d.anna().home, Some(false));
    }

    #[test]
    fn a_gate_clock_an_hour_ahead_moves_no_timer_and_hides_no_door() {
        let mut d = Day::new();
        // Bo's phone left at 09:55: away at 10:05 unless he comes back.
        d.feed(sessions(
            &[WifiSession {
                mac: Some("aa:bb:cc:00:00:02".into()),
                username: None,
                user_id: None,
                ..session("b1", ANNA_PHONE, "09:00:00")
            }],
            "09:00:10",
        ))
        .feed(sessions(&[], "09:55:00"));
        // Anna's login reaches gatehouse at 10:00, stamped 11:00 by GATE's clock.
        d.feed(Evidence::from_message(&gate_event("ui", "11:00:00", "10:00:00")).unwrap());
        assert_eq!(d.anna().since, Some(t("10:00:00")), "as of its arrival");
        assert_eq!(
            d.e.state("bo").unwrap().home,
            Some(true),
            "no timer run ahead"
        );
        // She leaves by the out door at 10:01: not hidden behind an 11:00 login.
        d.feed(badge(11, 2, "10:01:00"));
        assert_eq!(d.anna().home, Some(false));
        d.tick("10:05:00");
        assert_eq!(d.e.state("bo").unwrap().home, Some(false));
    }

    #[test]
    fn a_gate_clock_an_hour_behind_neither_hurries_nor_hides_wifi_evidence() {
        let mut d = Day::new();
        let phone = session("s1", ANNA_PHONE, "09:00:00");
        d.feed(sessions(std::slice::from_ref(&phone), "10:00:00"))
            .feed(sessions(std::slice::from_ref(&phone), "10:30:00"))
            // Her phone logs out at 10:30:10, stamped 09:30:10 by GATE's clock.
            .feed(wifi_end("uo", ANNA_PHONE, "09:30:10"))
            .feed(sessions(&[], "10:30:30"))
            .tick("10:30:31")
            .tick("10:39:59");
        assert_eq!(d.anna().home, Some(true), "not away at once");
        d.tick("10:40:00");
        assert_eq!(
            d.timeline.last().unwrap(),
            &line(
                "10:40:00",
                "away",
                "Wi-Fi ended at 10:30:00 and no entry within 600s"
            )
        );
        // Back at 11:30 after leaving by the out door at 11:00: GATE lists a new session,
        // started "10:29:55". It was not in the list of 11:29:30, so it is newer than that
        // (less the lag), newer than the door: home.
        d.feed(badge(11, 3, "10:50:00"))
            .feed(badge(11, 2, "11:00:00"))
            .feed(sessions(&[], "11:29:30"))
            .feed(sessions(
                &[session("s2", ANNA_PHONE, "10:29:55")],
                "11:30:00",
            ));
        assert_eq!(
            d.timeline.last().unwrap(),
            &line(
                "11:24:30",
                "home",
                "Wi-Fi session aa:bb:cc:00:00:01 at ap-lobby"
            )
        );
    }

    #[test]
    fn a_backfilled_entry_cancels_a_timer_that_fell_due_while_gatehouse_was_down() {
        let mut d = Day::new();
        d.feed(sessions(
            &[session("s1", ANNA_PHONE, "09:00:00")],
            "09:00:10",
        ))
        // Her phone leaves at 10:00 (away at 10:10 unless an entry follows); gatehouse stops.
        .feed(sessions(&[], "10:00:00"));
        let mut d = Day::resume(d.e.records().clone());
        // Started again at 10:30 (an upgrade). Meanwhile she badged in at 10:08.
        d.e.hold_timers(Some(t("10:30:00")));
        // GATE's first session list comes a second after start, before Net2's backfill.
        d.feed(sessions(&[], "10:30:01"))
            .feed(badge(11, 1, "10:08:00"))
            .feed(sessions(&[], "10:30:31"));
        // The grace is over: the timers run on the wall clock.
        d.e.hold_timers(None);
        d.tick("10:31:00").tick("12:00:00");
        assert!(d.timeline.is_empty(), "{:?}", d.timeline);
        assert_eq!(d.anna().home, Some(true));
        assert_eq!(d.anna().evidence.as_deref(), Some("door 1 Front (in)"));
        // A timer that fell due during the downtime with no entry still fires, at its time.
        let mut d = Day::new();
        d.feed(sessions(
            &[session("s1", ANNA_PHONE, "09:00:00")],
            "09:00:10",
        ))
        .feed(sessions(&[], "10:00:00"));
        d.e.hold_timers(Some(t("10:30:00")));
        d.feed(sessions(&[], "10:30:01"));
        assert_eq!(d.anna().home, Some(true), "held");
        d.e.hold_timers(None);
        d.tick("10:30:30");
        assert_eq!(
            d.timeline.last().unwrap(),
            &line(
                "10:10:00",
                "away",
                "Wi-Fi ended at 10:00:00 and no entry within 600s"
            )
        );
    }

    #[test]
    fn sessions_of_a_gate_that_stops_answering_expire_after_the_window() {
        let mut d = Day::new();
        let phone = session("s1", ANNA_PHONE, "09:00:00");
        d.feed(sessions(std::slice::from_ref(&phone), "09:00:10"))
            .wake("09:30:00")
            // GATE's last answer (its token is revoked afterwards: 401 for ever).
            .feed(sessions(std::slice::from_ref(&phone), "10:00:00"));
        assert_eq!(d.e.next_deadline(), Some(t("10:10:00")));
        d.wake("10:09:59");
        assert_eq!((d.anna().home, d.anna().wifi_sessions), (Some(true), 1));
        d.wake("10:10:00").wake("12:00:00");
        assert_eq!(
            d.timeline.last().unwrap(),
            &line(
                "10:10:00",
                "away",
                "GATE has not answered since 10:00:00 and no entry within 600s"
            )
        );
        assert_eq!(d.anna().wifi_sessions, 0);
        assert_eq!(d.e.next_deadline(), None);
        // GATE answers again and still lists the phone: she is on the Wi-Fi now.
        d.feed(sessions(std::slice::from_ref(&phone), "12:30:00"));
        assert_eq!(
            d.timeline.last().unwrap(),
            &line(
                "12:30:00",
                "home",
                "Wi-Fi session aa:bb:cc:00:00:01 at ap-lobby"
            )
        );
        assert!(d.e.records()["anna"].expired_sessions.is_empty());

        // A badge at a door while GATE is silent: the door says where she is, no timer.
        let mut d = Day::new();
        d.feed(sessions(std::slice::from_ref(&phone), "09:00:10"))
            .feed(badge(11, 3, "09:05:00"))
            .wake("09:10:10")
            .wake("12:00:00");
        assert_eq!(d.anna().home, Some(true));
        assert_eq!(d.anna().wifi_sessions, 0);
        assert_eq!(d.e.next_deadline(), None);
    }

    #[test]
    fn after_a_restart_gates_backfill_keeps_its_times() {
        let mut d = Day::new();
        d.feed(sessions(
            &[session("s1", ANNA_PHONE, "09:00:00")],
            "09:00:10",
        ));
        let mut d = Day::resume(d.e.records().clone());
        // Started at 10:30 with her session on record; GATE's backfill brings her 10:00 logout.
        d.wake("10:30:00")
            .feed(wifi_end("uo", ANNA_PHONE, "10:00:00"))
            .wake("10:30:01");
        assert_eq!(
            d.timeline,
            vec![line(
                "10:10:00",
                "away",
                "Wi-Fi ended at 10:00:00 and no entry within 600s"
            )]
        );
    }

    #[test]
    fn sessions_of_a_removed_gate_source_end_and_the_timer_runs() {
        let mut d = Day::new();
        d.feed(sessions(
            &[session("s1", ANNA_PHONE, "09:00:00")],
            "09:00:10",
        ));
        // Restarted at 11:00 without `sources.gate`: nothing will ever list or end the session.
        let mut c = cfg();
        c.sources.gate = None;
        let mut d = Day::resume(d.e.records().clone());
        d.e.configure(&c);
        d.wake("11:00:00").wake("11:09:59");
        assert_eq!(d.anna().wifi_sessions, 1);
        assert_eq!(d.anna().home, Some(true), "the window runs first");
        d.wake("11:10:00");
        assert_eq!(d.anna().wifi_sessions, 0);
        assert_eq!(
            d.timeline,
            vec![line(
                "11:10:00",
                "away",
                "Wi-Fi source gate no longer configured (since 11:00:00) and no entry within 600s"
            )]
        );
    }

    #[test]
    fn a_removed_person_is_forgotten_and_a_new_one_starts_unknown() {
        let mut d = Day::new();
        d.feed(badge(12, 1, "08:00:00"));
        let mut c = cfg();
        c.people.retain(|p| p.id != "bo");
        c.people.push(crate::config::PersonConfig {
            id: "cy".into(),
            ..Default::default()
        });
        d.e.configure(&c);
        assert!(d.e.state("bo").is_none());
        assert!(!d.e.records().contains_key("bo"));
        assert_eq!(d.e.state("cy").unwrap().home, None);
        d.feed(badge(12, 1, "09:00:00"));
        assert!(
            d.changes
                .iter()
                .all(|c| c.state.id != "bo" || c.state.since == Some(t("08:00:00")))
        );
    }
}
