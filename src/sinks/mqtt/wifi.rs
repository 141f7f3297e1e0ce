//! Wi-Fi presence and occupancy from Zequenze GATE's active RADIUS sessions
//! (`Message::WifiSessions`, the complete list after every poll).
//!
//! - Per user (the RADIUS user name, lower case; the MAC when a session has none): a retained
//!   state `…/wifi/user/<key>/state` while the user has sessions. When the last one ends, a user
//!   with a Home Assistant entity gets `connected: false`; any other user's retained topic is
//!   cleared (a guest hotspot must not leave thousands of retained topics behind).
//! - Which users get a `binary_sensor` (device class presence): `sources.gate.user_entities`
//!   (`people`: the names in `people[].gate_usernames`, from the first second, `OFF` until a
//!   session shows; `all`: every user seen; `none`).
//! - Per location and per access point: a `sensor` (state class measurement, unit `devices`)
//!   with the number of active sessions, `0` when none. The places seen are kept in the
//!   `state` table (`mqtt.wifi_known`) so their entities survive restarts, and are forgotten
//!   (entities cleared) after `sources.gate.forget_after` without a session.

use super::discovery::{Availability, Base, Device, Entity, Identity, ORIGIN};
use super::topics::Topics;
use crate::config::{Config, GateUserEntities};
use crate::model::WifiSession;
use crate::storage::Store;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use tokio::time::Instant;

const STATE_KEY: &str = "mqtt.wifi_known";
/// The GATE device's key (its identifier is `Identity::id` of it: per site).
const DEVICE_KEY: &str = "gate";
/// `last_seen` of the known places is written at most this often when nothing else changed.
const SAVE_EVERY: chrono::Duration = chrono::Duration::hours(1);

/// A topic- and entity-id-safe key: lower case, letters and digits, everything else `_`.
pub fn key(s: &str) -> String {
    let k: String = s
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let k = k.trim_matches('_').to_string();
    if k.is_empty() { "unknown".into() } else { k }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Seen {
    name: String,
    /// Wall time: kept across restarts.
    last_seen: DateTime<Utc>,
    /// Its age on the monotonic clock: (a moment, how long ago it was seen then). Set when
    /// seen by this process, or from `last_seen` the first time a list comes after a restart;
    /// from then on an NTP step of the wall clock (a Pi has no real-time clock) neither forgets
    /// a place at once nor keeps one for as long as the step.
    #[serde(skip)]
    age: Option<(Instant, std::time::Duration)>,
}

impl Seen {
    fn new(name: String, at: DateTime<Utc>, mono: Instant) -> Seen {
        Seen {
            name,
            last_seen: at,
            age: Some((mono, std::time::Duration::ZERO)),
        }
    }

    /// How long ago it was seen, at `mono` (`at` on the wall clock).
    fn age(&mut self, at: DateTime<Utc>, mono: Instant) -> std::time::Duration {
        let (then, age) = *self.age.get_or_insert_with(|| {
            // Before a restart: by the wall clock, once (a clock not yet set reads as "just
            // now": the place is kept a whole `forget_after` more, never forgotten early).
            (mono, (at - self.last_seen).to_std().unwrap_or_default())
        });
        age + mono.saturating_duration_since(then)
    }
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct Known {
    #[serde(default)]
    users: BTreeMap<String, Seen>,
    #[serde(default)]
    locations: BTreeMap<String, Seen>,
    #[serde(default)]
    access_points: BTreeMap<String, Seen>,
    /// User state topics left retained on the broker: a guest who left while gatehouse was
    /// stopped still gets theirs cleared after the restart.
    #[serde(default)]
    retained_users: BTreeSet<String>,
}

#[derive(Default)]
struct Place {
    devices: usize,
    users: BTreeSet<String>,
}

#[derive(Default)]
struct User {
    username: Option<String>,
    sessions: u32,
    macs: BTreeSet<String>,
    access_points: BTreeSet<String>,
    locations: BTreeSet<String>,
    since: Option<DateTime<Utc>>,
}

/// What the MQTT sink keeps about Wi-Fi.
#[derive(Default)]
pub struct Wifi {
    known: Known,
    users: BTreeMap<String, User>,
    locations: BTreeMap<String, Place>,
    access_points: BTreeMap<String, Place>,
    /// `known` changed since it was last written.
    dirty: bool,
    saved_at: Option<DateTime<Utc>>,
}

/// The user key of a session: its user name, else its MAC, else its id.
fn user_key(s: &WifiSession) -> (String, String) {
    let name = s
        .username
        .clone()
        .or_else(|| s.mac.clone())
        .unwrap_or_else(|| s.session_id.clone());
    (key(&name), name)
}

impl Wifi {
    pub fn load(store: &Store) -> Wifi {
        let known = store
            .state_get(STATE_KEY)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        Wifi {
            known,
            ..Default::default()
        }
    }

    fn save(&mut self, store: &Store, at: DateTime<Utc>) {
        match serde_json::to_string(&self.known) {
            Ok(s) => {
                if let Err(e) = store.state_set(STATE_KEY, Some(&s)) {
                    tracing::error!(error = %e, "unable to keep the Wi-Fi places seen");
                }
            }
            Err(e) => tracing::error!(error = %e, "unable to encode the Wi-Fi places seen"),
        }
        self.saved_at = Some(at);
    }

    /// Users with a presence entity: key → display name.
    fn entity_users(&self, cfg: &Config) -> BTreeMap<String, String> {
        let Some(g) = &cfg.sources.gate else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        if g.user_entities == GateUserEntities::None {
            return out;
        }
        if g.user_entities == GateUserEntities::All {
            for (k, s) in &self.known.users {
                out.insert(k.clone(), s.name.clone());
            }
        }
        for p in &cfg.people {
            let name = p.name.clone().unwrap_or_else(|| p.id.clone());
            for u in &p.gate_usernames {
                let label = if p.gate_usernames.len() > 1 {
                    format!("{name} ({u})")
                } else {
                    name.clone()
                };
                out.insert(key(u), label);
            }
        }
        out
    }

    /// A new complete list of active sessions. Returns what to publish and whether the
    /// entities changed (discovery must be redone).
    /// `at`: when the list was read (wall clock), `mono`: the same moment on the monotonic clock.
    pub fn on_sessions(
        &mut self,
        sessions: &[WifiSession],
        at: DateTime<Utc>,
        mono: Instant,
        cfg: &Config,
        topics: &Topics,
        store: &Store,
    ) -> (Vec<(String, String, bool)>, bool) {
        let Some(g) = &cfg.sources.gate else {
            return (Vec::new(), false);
        };
        self.users.clear();
        self.locations.clear();
        self.access_points.clear();
        let mut changed = false;
        let mut save = false;
        for s in sessions {
            let (uk, uname) = user_key(s);
            let u = self.users.entry(uk.clone()).or_default();
            u.username = Some(uname.clone());
            u.sessions += 1;
            u.macs.extend(s.mac.clone());
            u.access_points.extend(s.access_point.clone());
            u.locations.extend(s.location.clone());
            if let Some(t) = s.started {
                u.since = Some(u.since.map_or(t, |x| x.min(t)));
            }
            if g.user_entities == GateUserEntities::All {
                let new = self
                    .known
                    .users
                    .insert(uk.clone(), Seen::new(uname, at, mono))
                    .is_none();
                changed |= new;
            }
            for (name, places, known) in [
                (&s.location, &mut self.locations, &mut self.known.locations),
                (
                    &s.access_point,
                    &mut self.access_points,
                    &mut self.known.access_points,
                ),
            ] {
                let Some(name) = name else { continue };
                let k = key(name);
                let p = places.entry(k.clone()).or_default();
                p.devices += 1;
                p.users.insert(uk.clone());
                let before = known.insert(k, Seen::new(name.clone(), at, mono));
                // A renamed place (same key) changes its entity's name too.
                changed |= before.is_none_or(|b| b.name != *name);
            }
        }
        // Places (and users in `all` mode) without a session for `forget_after` go away.
        let forget = g.forget_after.get();
        for m in [
            &mut self.known.users,
            &mut self.known.locations,
            &mut self.known.access_points,
        ] {
            let before = m.len();
            m.retain(|_, s| s.age(at, mono) <= forget);
            changed |= m.len() != before;
        }
        let mut out = self.states(cfg, topics);
        // Users who left and have no entity: their retained state goes.
        let entity = self.entity_users(cfg);
        let gone: Vec<String> = self
            .known
            .retained_users
            .iter()
            .filter(|k| !self.users.contains_key(*k) && !entity.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            out.push((topics.wifi_user(&k), String::new(), true));
            self.known.retained_users.remove(&k);
            self.dirty = true;
        }
        if changed || self.dirty || self.saved_at.is_none_or(|t| at - t > SAVE_EVERY) {
            save = true;
        }
        if save {
            self.save(store, at);
            self.dirty = false;
        }
        (out, changed)
    }

    fn user_payload(&self, k: &str, name: Option<&str>) -> String {
        match self.users.get(k) {
            Some(u) => json!({
                "connected": true,
                "sessions": u.sessions,
                "username": u.username,
                "name": name,
                "macs": u.macs,
                "access_points": u.access_points,
                "locations": u.locations,
                "since": u.since.map(|t| t.to_rfc3339()),
            }),
            None => json!({
                "connected": false,
                "sessions": 0,
                "username": null,
                "name": name,
                "macs": [],
                "access_points": [],
                "locations": [],
                "since": null,
            }),
        }
        .to_string()
    }

    /// Every retained Wi-Fi state: known places (0 when empty), users with an entity, users
    /// with sessions.
    pub fn states(&mut self, cfg: &Config, topics: &Topics) -> Vec<(String, String, bool)> {
        if cfg.sources.gate.is_none() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (known, places, topic) in [
            (
                &self.known.locations,
                &self.locations,
                Topics::wifi_location as fn(&Topics, &str) -> String,
            ),
            (
                &self.known.access_points,
                &self.access_points,
                Topics::wifi_access_point,
            ),
        ] {
            for (k, s) in known {
                let p = places.get(k);
                let payload = json!({
                    "name": s.name,
                    "devices": p.map_or(0, |p| p.devices),
                    "users": p.map_or(0, |p| p.users.len()),
                });
                out.push((topic(topics, k), payload.to_string(), true));
            }
        }
        let entity = self.entity_users(cfg);
        let keys: BTreeSet<String> = entity.keys().chain(self.users.keys()).cloned().collect();
        for k in keys {
            let payload = self.user_payload(&k, entity.get(&k).map(String::as_str));
            out.push((topics.wifi_user(&k), payload, true));
            self.dirty |= self.known.retained_users.insert(k);
        }
        out
    }

    /// Discovery: the GATE device's connection, occupancy per location and access point,
    /// presence per user with an entity.
    pub fn entities(&self, cfg: &Config, topics: &Topics, identity: &Identity) -> Vec<Entity> {
        if cfg.sources.gate.is_none() {
            return Vec::new();
        }
        let device_id = identity.id(DEVICE_KEY);
        let dev = Device {
            identifiers: vec![device_id.clone()],
            name: identity.device_name("Wi-Fi (GATE)"),
            manufacturer: "Zequenze".into(),
            model: "GATE (via gatehouse)".into(),
            via_device: None,
            sw_version: None,
        };
        let bridge = Availability {
            topic: topics.bridge_state(),
        };
        let with_source = vec![
            bridge.clone(),
            Availability {
                topic: topics.source_availability(crate::sources::gate::SOURCE),
            },
        ];
        let base = |oid: &str,
                    domain: &str,
                    name: String,
                    avail: Vec<Availability>,
                    icon: Option<&'static str>,
                    cat: Option<&'static str>| Base {
            name: Some(name),
            unique_id: identity.id(oid),
            object_id: identity.id(oid),
            default_entity_id: format!("{domain}.{}", identity.id(oid)),
            availability: avail,
            availability_mode: "all",
            device: dev.clone(),
            origin: ORIGIN,
            entity_category: cat,
            icon,
            enabled_by_default: None,
        };
        let mut out = Vec::new();
        let oid = "gate_connectivity";
        out.push(Entity {
            component: "binary_sensor",
            object_id: oid.into(),
            device_id: device_id.clone(),
            config: serde_json::to_value(super::discovery::BinarySensor {
                base: base(
                    oid,
                    "binary_sensor",
                    "Connection".into(),
                    vec![bridge.clone()],
                    None,
                    Some("diagnostic"),
                ),
                state_topic: topics.source_state(crate::sources::gate::SOURCE),
                value_template: "{{ 'ON' if value_json.online else 'OFF' }}".into(),
                device_class: Some("connectivity"),
            })
            .expect("discovery structs serialize"),
        });
        for (kind, known, topic, label, icon) in [
            (
                "location",
                &self.known.locations,
                Topics::wifi_location as fn(&Topics, &str) -> String,
                "",
                "mdi:wifi",
            ),
            (
                "ap",
                &self.known.access_points,
                Topics::wifi_access_point,
                "Access point ",
                "mdi:access-point",
            ),
        ] {
            for (k, s) in known {
                let oid = format!("gate_{kind}_{k}");
                let state = topic(topics, k);
                out.push(Entity {
                    component: "sensor",
                    object_id: oid.clone(),
                    device_id: device_id.clone(),
                    config: serde_json::to_value(Occupancy {
                        base: base(
                            &oid,
                            "sensor",
                            format!("{label}{}", s.name),
                            with_source.clone(),
                            Some(icon),
                            None,
                        ),
                        state_topic: state.clone(),
                        value_template: "{{ value_json.devices }}".into(),
                        json_attributes_topic: state,
                        unit_of_measurement: "devices",
                        state_class: "measurement",
                    })
                    .expect("discovery structs serialize"),
                });
            }
        }
        for (k, name) in self.entity_users(cfg) {
            let oid = format!("gate_user_{k}");
            let state = topics.wifi_user(&k);
            out.push(Entity {
                component: "binary_sensor",
                object_id: oid.clone(),
                device_id: device_id.clone(),
                config: serde_json::to_value(Presence {
                    base: base(&oid, "binary_sensor", name, with_source.clone(), None, None),
                    state_topic: state.clone(),
                    value_template: "{{ 'ON' if value_json.connected else 'OFF' }}".into(),
                    json_attributes_topic: state,
                    device_class: "presence",
                })
                .expect("discovery structs serialize"),
            });
        }
        out
    }
}

/// HA `sensor` with a state class (occupancy).
#[derive(Serialize)]
struct Occupancy {
    #[serde(flatten)]
    base: Base,
    state_topic: String,
    value_template: String,
    json_attributes_topic: String,
    unit_of_measurement: &'static str,
    state_class: &'static str,
}

/// HA `binary_sensor` (presence) with the session details as attributes.
#[derive(Serialize)]
struct Presence {
    #[serde(flatten)]
    base: Base,
    state_topic: String,
    value_template: String,
    json_attributes_topic: String,
    device_class: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: &str, ap: &str) -> WifiSession {
        WifiSession {
            session_id: format!("s-{user}"),
            username: Some(user.into()),
            user_id: None,
            mac: None,
            access_point: Some(ap.into()),
            location: Some("HQ".into()),
            started: None,
        }
    }

    fn user_entities(mode: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db")).unwrap();
        let cfg = crate::config::load_str(
            &format!(
                "version: 1\nsources:\n  gate:\n    url: http://127.0.0.1:9\n    token: t\n    user_entities: {mode}\npeople:\n  - {{ id: anna, gate_usernames: [anna@example.org] }}\n"
            ),
            &|_| None,
        )
        .unwrap();
        let topics = Topics {
            base: "gatehouse".into(),
            prefix: "homeassistant".into(),
        };
        let mut w = Wifi::load(&store);
        let (_, changed) = w.on_sessions(
            &[session("guest-1", "AP-1"), session("guest-2", "AP-2")],
            Utc::now(),
            Instant::now(),
            &cfg,
            &topics,
            &store,
        );
        assert!(changed, "new places");
        // Kept across a restart.
        let w = Wifi::load(&store);
        let e = w.entities(&cfg, &topics, &Identity::default());
        // Another site's GATE: ids, entity ids and its device of its own.
        for b in w.entities(&cfg, &topics, &Identity::new("site_b")) {
            let a = e.iter().find(|a| a.object_id == b.object_id).unwrap();
            for k in ["unique_id", "object_id", "default_entity_id"] {
                let (ka, kb) = (a.config[k].as_str().unwrap(), b.config[k].as_str().unwrap());
                assert!(
                    kb.contains("gatehouse_site_b_gate_") && ka != kb,
                    "{k}: {ka} {kb}"
                );
            }
            assert_eq!(b.device_id, "gatehouse_site_b_gate");
            assert_eq!(a.device_id, "gatehouse_gate");
            assert_eq!(
                b.config["device"]["identifiers"][0],
                "gatehouse_site_b_gate"
            );
        }
        assert_eq!(
            e.iter()
                .filter(|e| e.object_id.starts_with("gate_ap_"))
                .count(),
            2
        );
        e.into_iter()
            .filter(|e| e.object_id.starts_with("gate_user_"))
            .map(|e| e.object_id)
            .collect()
    }

    /// `forget_after` on the monotonic clock: NTP stepping a Pi's wall clock neither forgets
    /// a place at once (its Home Assistant entity, with the user's area and name, deleted)
    /// nor keeps one for as long as the step.
    #[test]
    fn a_stepped_wall_clock_neither_forgets_a_place_early_nor_keeps_it_late() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db")).unwrap();
        let cfg = crate::config::load_str(
            "version: 1\nsources:\n  gate:\n    url: http://127.0.0.1:9\n    token: t\n    user_entities: none\n    forget_after: 1d\n",
            &|_| None,
        )
        .unwrap();
        let topics = Topics {
            base: "gatehouse".into(),
            prefix: "homeassistant".into(),
        };
        let aps = |w: &Wifi| -> Vec<String> {
            w.entities(&cfg, &topics, &Identity::default())
                .into_iter()
                .filter(|e| e.object_id.starts_with("gate_ap_"))
                .map(|e| e.object_id)
                .collect()
        };
        let (t0, m0) = (Utc::now(), Instant::now());
        let day = std::time::Duration::from_secs(86_400);
        let mut w = Wifi::load(&store);
        w.on_sessions(&[session("anna", "AP-1")], t0, m0, &cfg, &topics, &store);
        assert_eq!(aps(&w), ["gate_ap_ap_1"]);
        // A minute later the session ended, and NTP stepped the clock 400 days forward.
        let step = chrono::Duration::days(400);
        let m1 = m0 + std::time::Duration::from_secs(60);
        let (_, changed) = w.on_sessions(&[], t0 + step, m1, &cfg, &topics, &store);
        assert!(!changed);
        assert_eq!(aps(&w), ["gate_ap_ap_1"], "forgotten on a step forward");
        // Then back, two days before it started; a day and a second pass without a session.
        let m2 = m0 + day + std::time::Duration::from_secs(1);
        let t2 = t0 - chrono::Duration::days(2);
        let (_, changed) = w.on_sessions(&[], t2, m2, &cfg, &topics, &store);
        assert!(changed);
        assert!(aps(&w).is_empty(), "kept for the step back");

        // After a restart, a place from before is judged once by the wall clock: a Pi booting
        // at 1970 keeps it (a whole `forget_after` more), a clock two days on forgets it.
        w.on_sessions(&[session("anna", "AP-1")], t0, m0, &cfg, &topics, &store);
        let mut w = Wifi::load(&store);
        let epoch = chrono::DateTime::UNIX_EPOCH;
        w.on_sessions(&[], epoch, m0, &cfg, &topics, &store);
        assert_eq!(aps(&w), ["gate_ap_ap_1"], "forgotten at a boot in 1970");
        let mut w = Wifi::load(&store);
        w.on_sessions(
            &[],
            t0 + chrono::Duration::days(2),
            m0,
            &cfg,
            &topics,
            &store,
        );
        assert!(aps(&w).is_empty(), "kept after two days away");
    }

    #[test]
    fn which_users_get_an_entity() {
        assert_eq!(user_entities("people"), ["gate_user_anna_example_org"]);
        assert_eq!(
            user_entities("all"),
            [
                "gate_user_anna_example_org",
                "gate_user_guest_1",
                "gate_user_guest_2"
            ]
        );
        assert!(user_entities("none").is_empty());
    }

    #[test]
    fn keys_are_topic_and_entity_safe() {
        assert_eq!(key("John.Doe@Company.com"), "john_doe_company_com");
        assert_eq!(key("AP-Floor2-East"), "ap_floor2_east");
        assert_eq!(key("#/+"), "unknown");
    }
}
