//! What the access control system knows about its doors and users, for readers outside the
//! source (the REST API): Net2's doors as access points (name, online, last status change,
//! battery, seen by the last status poll) and Net2's users — **names only**.
//!
//! The Net2 source fills it: the door list at every `/doors` answer, door states as they
//! change (the same states it publishes on the bus), and users from `/api/v1/users` at start
//! and every `sources.net2.users_refresh_interval`. The user list is parsed into a type that
//! has no field for PINs, phone numbers, card numbers, emails or custom fields
//! ([`crate::sources::net2::types::UserEntry`]), so none of them can reach this directory,
//! its `Debug` output or its serialization.
//!
//! [`Directory`] is cheap to clone (one `Arc`); reads take a short read lock and return owned
//! copies. [`Directory::subscribe`] tells a reader (an SSE stream, say) that something changed.
//!
//! The cameras ([`Cameras`], [`Directory::cameras`]) are kept the same way, by their sources
//! directly (not through the lossy bus watch): the Hikvision source writes each device's
//! latest device info, its reachability (as it publishes it as health) and the channels that
//! report video loss; the media service writes an RTSP-only camera's reachability.

use crate::model::{DoorId, DoorState};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// A door as an access point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DirectoryDoor {
    /// The ACU address (Net2's door id).
    pub id: DoorId,
    /// `doors.<id>.name` from the config, else Net2's name ("Garage Port - ACU:7242929").
    pub name: Option<String>,
    /// The door's ACU answers Net2: `false` from "ACU not responding" (event 500) until
    /// "ACU online" (501); `true` once a status poll listed the door with no 500 since;
    /// `None` until either.
    pub online: Option<bool>,
    /// Door contact open; `None` when the door has no contact or nothing is known yet.
    pub open: Option<bool>,
    /// Relay released; not proof the door moved.
    pub unlocked: Option<bool>,
    /// Battery low (722) or critical (723), until a battery level update (724).
    pub battery_low: bool,
    pub battery_critical: bool,
    /// Listed by the latest `/doors/status` answer ([`DirectorySnapshot::status_polled`]).
    pub in_last_poll: bool,
    /// When its status last changed (online, open, relay, held open, forced, tamper, alarm,
    /// battery, mains) — access events that change nothing else do not count. Kept across
    /// restarts (from the stored door state); `None` when never known.
    pub last_change: Option<DateTime<Utc>>,
}

/// A Net2 user: who they are, never how they get in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectoryUser {
    pub id: i64,
    /// "First Middle Last", as events name users; `None` when Net2 has no name for them.
    pub name: Option<String>,
    /// Within the user's activate / expiry dates when the list was fetched
    /// ([`DirectorySnapshot::users_fetched`]); `None` when Net2 gave neither date.
    pub active: Option<bool>,
}

/// Everything the directory holds, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DirectorySnapshot {
    /// The doors of Net2's last `/doors` answer, by id.
    pub doors: Vec<DirectoryDoor>,
    /// Net2's users, by id.
    pub users: Vec<DirectoryUser>,
    /// The first `/doors` and `/users` answers have both been taken in.
    pub ready: bool,
    /// When the door list was last fetched.
    pub doors_fetched: Option<DateTime<Utc>>,
    /// When the latest `/doors/status` answer came.
    pub status_polled: Option<DateTime<Utc>>,
    /// When the user list was last fetched (a failed fetch keeps the list and this time).
    pub users_fetched: Option<DateTime<Utc>>,
    /// When anything in the directory last changed.
    pub updated: Option<DateTime<Utc>>,
}

/// What makes a door's status; a change of any part is a status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusKey {
    online: Option<bool>,
    open: Option<bool>,
    unlocked: Option<bool>,
    held_open: bool,
    forced: bool,
    tamper: bool,
    alarm_tripped: bool,
    battery_low: bool,
    battery_critical: bool,
    mains_failed: bool,
}

impl StatusKey {
    fn of(s: &DoorState) -> StatusKey {
        StatusKey {
            online: s.acu_online,
            open: s.open,
            unlocked: s.unlocked,
            held_open: s.held_open,
            forced: s.forced,
            tamper: s.tamper,
            alarm_tripped: s.alarm_tripped,
            battery_low: s.battery_low,
            battery_critical: s.battery_critical,
            mains_failed: s.mains_failed,
        }
    }
}

#[derive(Debug, Clone)]
struct Status {
    key: StatusKey,
    name: Option<String>,
    last_change: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Doors of the last `/doors` answer and their names.
    listed: BTreeMap<DoorId, Option<String>>,
    /// Every door a state was heard for, listed or not (a state may come before the list).
    status: HashMap<DoorId, Status>,
    polled: BTreeSet<DoorId>,
    users: BTreeMap<i64, DirectoryUser>,
    doors_fetched: Option<DateTime<Utc>>,
    status_polled: Option<DateTime<Utc>>,
    users_fetched: Option<DateTime<Utc>>,
    updated: Option<DateTime<Utc>>,
}

impl Inner {
    fn snapshot(&self) -> DirectorySnapshot {
        let doors = self
            .listed
            .iter()
            .map(|(id, name)| {
                let st = self.status.get(id);
                let key = st.map(|s| s.key);
                DirectoryDoor {
                    id: *id,
                    name: name.clone().or_else(|| st.and_then(|s| s.name.clone())),
                    online: key.and_then(|k| k.online),
                    open: key.and_then(|k| k.open),
                    unlocked: key.and_then(|k| k.unlocked),
                    battery_low: key.is_some_and(|k| k.battery_low),
                    battery_critical: key.is_some_and(|k| k.battery_critical),
                    in_last_poll: self.polled.contains(id),
                    last_change: st.and_then(|s| s.last_change),
                }
            })
            .collect();
        DirectorySnapshot {
            doors,
            users: self.users.values().cloned().collect(),
            ready: self.doors_fetched.is_some() && self.users_fetched.is_some(),
            doors_fetched: self.doors_fetched,
            status_polled: self.status_polled,
            users_fetched: self.users_fetched,
            updated: self.updated,
        }
    }
}

/// The shared directory (see the module docs). Clones share one directory.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<RwLock<Inner>>,
    /// Bumped at every change.
    version: Arc<watch::Sender<u64>>,
    cameras: Cameras,
}

impl Default for Directory {
    fn default() -> Self {
        Directory::new()
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Directory").field(&self.snapshot()).finish()
    }
}

impl Serialize for Directory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.snapshot().serialize(s)
    }
}

impl Directory {
    pub fn new() -> Directory {
        Directory {
            inner: Arc::default(),
            version: Arc::new(watch::Sender::new(0)),
            cameras: Cameras::default(),
        }
    }

    /// The cameras' device info and reachability (shared: clones write the same registry).
    pub fn cameras(&self) -> &Cameras {
        &self.cameras
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Change the directory; `f` says whether anything changed (then `updated` moves and
    /// subscribers are told).
    fn write(&self, now: DateTime<Utc>, f: impl FnOnce(&mut Inner) -> bool) {
        let changed = {
            let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
            let changed = f(&mut g);
            if changed {
                g.updated = Some(now);
            }
            changed
        };
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
    }

    /// Everything, at one moment.
    pub fn snapshot(&self) -> DirectorySnapshot {
        self.read().snapshot()
    }

    /// The doors of Net2's last door list, by id.
    pub fn doors(&self) -> Vec<DirectoryDoor> {
        self.snapshot().doors
    }

    pub fn door(&self, id: DoorId) -> Option<DirectoryDoor> {
        self.doors().into_iter().find(|d| d.id == id)
    }

    /// Net2's users (names only), by id.
    pub fn users(&self) -> Vec<DirectoryUser> {
        self.read().users.values().cloned().collect()
    }

    pub fn user(&self, id: i64) -> Option<DirectoryUser> {
        self.read().users.get(&id).cloned()
    }

    /// The first door list and the first user list have both been fetched.
    pub fn ready(&self) -> bool {
        let g = self.read();
        g.doors_fetched.is_some() && g.users_fetched.is_some()
    }

    /// When anything last changed.
    pub fn updated(&self) -> Option<DateTime<Utc>> {
        self.read().updated
    }

    pub fn doors_fetched(&self) -> Option<DateTime<Utc>> {
        self.read().doors_fetched
    }

    pub fn users_fetched(&self) -> Option<DateTime<Utc>> {
        self.read().users_fetched
    }

    /// A receiver that sees a new value at every change (its value only counts changes).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    // ---------------------------------------------------------------- the source's side

    /// A door list answer: exactly these doors from now on, with these names.
    pub(crate) fn set_doors(&self, doors: Vec<(DoorId, Option<String>)>, now: DateTime<Utc>) {
        self.write(now, |g| {
            let listed: BTreeMap<_, _> = doors.into_iter().collect();
            let changed = g.listed != listed || g.doors_fetched.is_none();
            g.listed = listed;
            g.doors_fetched = Some(now);
            changed
        });
    }

    /// A door's state as the source publishes it (polls, live status, events, restored).
    pub(crate) fn door_state(&self, s: &DoorState, now: DateTime<Utc>) {
        let key = StatusKey::of(s);
        self.write(now, |g| {
            use std::collections::hash_map::Entry;
            let st = match g.status.entry(s.id) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => {
                    // First heard of: its status last changed when its state was last
                    // updated (a state restored from the database keeps its time).
                    v.insert(Status {
                        key,
                        name: s.name.clone(),
                        last_change: s.updated,
                    });
                    return true;
                }
            };
            let mut changed = false;
            if st.name != s.name {
                st.name.clone_from(&s.name);
                changed = true;
            }
            if st.key != key {
                st.key = key;
                st.last_change = Some(s.updated.unwrap_or(now));
                changed = true;
            }
            changed
        });
    }

    /// A `/doors/status` answer listed these doors.
    pub(crate) fn status_poll(&self, ids: impl IntoIterator<Item = DoorId>, now: DateTime<Utc>) {
        self.write(now, |g| {
            let polled: BTreeSet<_> = ids.into_iter().collect();
            let changed = g.polled != polled || g.status_polled.is_none();
            g.polled = polled;
            g.status_polled = Some(now);
            changed
        });
    }

    /// A user list answer: exactly these users from now on.
    pub(crate) fn set_users(&self, users: Vec<DirectoryUser>, now: DateTime<Utc>) {
        self.write(now, |g| {
            let users: BTreeMap<_, _> = users.into_iter().map(|u| (u.id, u)).collect();
            let changed = g.users != users || g.users_fetched.is_none();
            g.users = users;
            g.users_fetched = Some(now);
            changed
        });
    }

    pub(crate) fn user_count(&self) -> usize {
        self.read().users.len()
    }
}

/// What gatehouse knows about one camera or NVR (`sources.hikvision[].id`), now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CameraEntry {
    /// The latest device info the source fetched (`None` until the device first answered).
    pub info: Option<crate::model::CameraInfo>,
    /// When that info was fetched.
    pub info_fetched: Option<DateTime<Utc>>,
    /// Where the channel list came from: `ip` (an NVR's proxied IP cameras, from
    /// `InputProxy/channels`) or `local` (a camera's or DVR's own video inputs).
    pub channel_source: Option<&'static str>,
    /// Reachable, as published on the bus as the camera's health (its alert stream; an
    /// RTSP-only camera's RTSP): `None` until first known.
    pub online: Option<bool>,
    /// When `online` last changed.
    pub online_since: Option<DateTime<Utc>>,
    /// Why it is unreachable (empty while reachable).
    pub detail: String,
    /// Channels whose `videoloss` alarm is on now.
    pub video_loss: BTreeSet<u32>,
}

/// The cameras' registry (see the module docs). Clones share one registry.
#[derive(Clone, Default)]
pub struct Cameras {
    inner: Arc<RwLock<BTreeMap<String, CameraEntry>>>,
}

impl std::fmt::Debug for Cameras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cameras").field(&self.all()).finish()
    }
}

impl Cameras {
    fn write(&self, device: &str, f: impl FnOnce(&mut CameraEntry)) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        f(g.entry(device.to_string()).or_default());
    }

    /// One camera's entry (`None` when nothing was ever heard of it).
    pub fn get(&self, device: &str) -> Option<CameraEntry> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(device)
            .cloned()
    }

    /// Every camera heard of, by id.
    pub fn all(&self) -> BTreeMap<String, CameraEntry> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The device info the source fetched, and where its channels came from.
    pub(crate) fn set_info(
        &self,
        info: crate::model::CameraInfo,
        channel_source: Option<&'static str>,
        now: DateTime<Utc>,
    ) {
        let device = info.device.clone();
        self.write(&device, |e| {
            e.info = Some(info);
            e.channel_source = channel_source;
            e.info_fetched = Some(now);
        });
    }

    /// Reachability as the source publishes it (health).
    pub(crate) fn set_online(&self, device: &str, online: bool, detail: &str, now: DateTime<Utc>) {
        self.write(device, |e| {
            if e.online != Some(online) {
                e.online_since = Some(now);
            }
            e.online = Some(online);
            e.detail = detail.to_string();
        });
    }

    /// A channel's `videoloss` alarm went on or off.
    pub(crate) fn set_video_loss(&self, device: &str, channel: u32, on: bool) {
        self.write(device, |e| {
            if on {
                e.video_loss.insert(channel);
            } else {
                e.video_loss.remove(&channel);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cameras_keep_the_latest_info_and_reachability() {
        let d = Directory::new();
        let c = d.cameras().clone();
        let t0 = t("2026-01-05T06:00:00Z");
        let t1 = t("2026-01-05T06:01:00Z");
        assert!(d.cameras().get("nvr").is_none());
        c.set_online("nvr", true, "", t0);
        c.set_online("nvr", true, "", t1);
        let e = d.cameras().get("nvr").unwrap();
        assert_eq!((e.online, e.online_since), (Some(true), Some(t0)));
        c.set_online("nvr", false, "refused", t1);
        let e = d.cameras().get("nvr").unwrap();
        assert_eq!((e.online, e.online_since), (Some(false), Some(t1)));
        assert_eq!(e.detail, "refused");
        c.set_info(
            crate::model::CameraInfo {
                device: "nvr".into(),
                name: None,
                model: Some("DS-7608NI-K2".into()),
                serial: None,
                mac: None,
                firmware: None,
                device_type: Some("NVR".into()),
                channels: Vec::new(),
                disks: Vec::new(),
                rtsp_port: None,
                triggers: Vec::new(),
            },
            Some("ip"),
            t1,
        );
        c.set_video_loss("nvr", 3, true);
        let e = d.cameras().get("nvr").unwrap();
        assert_eq!(e.info.unwrap().model.as_deref(), Some("DS-7608NI-K2"));
        assert_eq!(e.online, Some(false), "info does not touch reachability");
        assert!(e.video_loss.contains(&3));
        c.set_video_loss("nvr", 3, false);
        assert!(d.cameras().get("nvr").unwrap().video_loss.is_empty());
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn state(id: DoorId, online: Option<bool>, updated: &str) -> DoorState {
        DoorState {
            id,
            name: Some(format!("door {id}")),
            acu_online: online,
            updated: Some(t(updated)),
            ..Default::default()
        }
    }

    #[test]
    fn lists_the_doors_of_the_last_list_with_their_state() {
        let d = Directory::new();
        let now = t("2026-01-05T06:00:00Z");
        assert!(!d.ready());
        assert!(d.doors().is_empty());
        // A state may come before the list: it is kept, not listed.
        d.door_state(&state(1, Some(true), "2026-01-04T10:00:00Z"), now);
        assert!(d.doors().is_empty());
        d.set_doors(vec![(1, Some("Fordør".into())), (2, None)], now);
        d.status_poll([1], now);
        let doors = d.doors();
        assert_eq!(doors.len(), 2);
        assert_eq!(doors[0].name.as_deref(), Some("Fordør"));
        assert_eq!(doors[0].online, Some(true));
        assert!(doors[0].in_last_poll);
        assert_eq!(doors[0].last_change, Some(t("2026-01-04T10:00:00Z")));
        assert_eq!(doors[1].online, None);
        assert!(!doors[1].in_last_poll);
        // Named from its state when the list has no name.
        d.door_state(&state(2, None, "2026-01-05T06:00:00Z"), now);
        assert_eq!(d.door(2).unwrap().name.as_deref(), Some("door 2"));
        // A door gone from Net2's list is gone from the directory.
        d.set_doors(vec![(2, None)], now);
        assert_eq!(d.doors().len(), 1);
        assert!(!d.ready(), "no user list yet");
        d.set_users(Vec::new(), now);
        assert!(d.ready());
        assert_eq!(d.snapshot().status_polled, Some(now));
    }

    #[test]
    fn last_change_moves_with_the_status_only() {
        let d = Directory::new();
        let now = t("2026-01-05T06:00:00Z");
        d.set_doors(vec![(7, None)], now);
        d.door_state(&state(7, Some(true), "2026-01-05T06:00:00Z"), now);
        let mut ev = state(7, Some(true), "2026-01-05T06:05:00Z");
        ev.last_event = Some("access_granted".into());
        d.door_state(&ev, now);
        assert_eq!(
            d.door(7).unwrap().last_change,
            Some(t("2026-01-05T06:00:00Z")),
            "an access event alone is no status change"
        );
        let mut rx = d.subscribe();
        rx.borrow_and_update();
        d.door_state(&state(7, Some(false), "2026-01-05T06:10:00Z"), now);
        let door = d.door(7).unwrap();
        assert_eq!(door.online, Some(false));
        assert_eq!(door.last_change, Some(t("2026-01-05T06:10:00Z")));
        assert!(rx.has_changed().unwrap(), "subscribers are told");
        let mut bat = state(7, Some(false), "2026-01-05T06:20:00Z");
        bat.battery_low = true;
        bat.battery_critical = true;
        d.door_state(&bat, now);
        let door = d.door(7).unwrap();
        assert!(door.battery_low && door.battery_critical);
        assert_eq!(door.last_change, Some(t("2026-01-05T06:20:00Z")));
    }

    #[test]
    fn unchanged_answers_change_nothing_but_the_fetch_times() {
        let d = Directory::new();
        let t0 = t("2026-01-05T06:00:00Z");
        let t1 = t("2026-01-05T06:10:00Z");
        let users = vec![DirectoryUser {
            id: 8,
            name: Some("Mette Kragh Holm".into()),
            active: Some(true),
        }];
        d.set_users(users.clone(), t0);
        d.set_doors(vec![(1, None)], t0);
        let mut rx = d.subscribe();
        rx.borrow_and_update();
        d.set_users(users, t1);
        d.set_doors(vec![(1, None)], t1);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(d.updated(), Some(t0));
        assert_eq!(d.users_fetched(), Some(t1));
        assert_eq!(d.doors_fetched(), Some(t1));
        assert_eq!(d.user(8).unwrap().name.as_deref(), Some("Mette Kragh Holm"));
        assert_eq!(d.user_count(), 1);
    }
}
