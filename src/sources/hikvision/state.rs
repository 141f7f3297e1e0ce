//! Alarm state per (device, channel or IO port, event type, target), from alerts. Pure: alerts
//! and `now` in, changes out.
//!
//! Do not trust the device to end an event (protocols.md §2): a DS-2CD2185FWD-I camera sends
//! `VMD active` ~1/s and then `inactive`; a PTZ sends `active` ~3/s and **never** `inactive`;
//! an NVR sends `active` ~1/s per channel and never `inactive`. So: ON at the first `active`,
//! OFF at `inactive` or after a hold-off since the last `active` (default 5 s, per event type
//! and per device). Only changes are reported. An alert that names detection targets (human,
//! vehicle) sets the state of each target and the plain state of its type, which is ON while
//! any target is ON.
//!
//! Liveness, order and hold-off go by receive time only. The device's `dateTime` is metadata:
//! camera clocks are often wrong (NTP off, no battery, a `-8:00` offset read literally is
//! 16 h ahead, a clock stepped back by NTP), and one future-dated alert must not silence a
//! device. A backlog the device flushes after a reconnect is recognised by
//! `isDataRetransmission` and is history (the caller stores it), not state.

use super::alert::{Alert, State};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub device: String,
    pub channel: Option<u32>,
    pub io_port: Option<u32>,
    pub event_type: String,
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Key,
    pub on: bool,
}

/// Hold-off times: per event type, falling back to a default.
#[derive(Debug, Clone)]
pub struct Holdoff {
    pub default: Duration,
    pub per_type: HashMap<String, Duration>,
}

impl Default for Holdoff {
    fn default() -> Self {
        Holdoff {
            default: Duration::from_secs(5),
            per_type: HashMap::new(),
        }
    }
}

impl Holdoff {
    fn of(&self, event_type: &str) -> Duration {
        self.per_type
            .get(event_type)
            .copied()
            .unwrap_or(self.default)
    }
}

#[derive(Debug, Default)]
pub struct Tracker {
    holdoff: HashMap<String, Holdoff>,
    default_holdoff: Holdoff,
    /// Active keys and when their last `active` arrived.
    active: HashMap<Key, Instant>,
}

impl Tracker {
    pub fn new(default_holdoff: Holdoff) -> Tracker {
        Tracker {
            default_holdoff,
            ..Default::default()
        }
    }

    /// The hold-offs of devices without their own (a changed config).
    pub fn set_default_holdoff(&mut self, h: Holdoff) {
        self.default_holdoff = h;
    }

    /// A device's own hold-offs (config per camera).
    pub fn set_device_holdoff(&mut self, device: &str, h: Holdoff) {
        self.holdoff.insert(device.to_string(), h);
    }

    fn holdoff(&self, key: &Key) -> Duration {
        self.holdoff
            .get(&key.device)
            .unwrap_or(&self.default_holdoff)
            .of(&key.event_type)
    }

    /// State changes from one alert (received at `now`). Heartbeats and retransmitted
    /// backlog change nothing.
    pub fn on_alert(&mut self, device: &str, alert: &Alert, now: Instant) -> Vec<Change> {
        if alert.is_heartbeat() || alert.retransmission {
            return Vec::new();
        }
        let plain = Key {
            device: device.to_string(),
            channel: alert.channel,
            io_port: alert.io_port,
            event_type: alert.event_type.clone(),
            target: None,
        };
        let targets: Vec<Key> = alert
            .targets()
            .into_iter()
            .map(|t| Key {
                target: Some(t),
                ..plain.clone()
            })
            .collect();
        let mut out = Vec::new();
        match alert.state {
            State::Active => {
                // The plain state first, then each target (every `active` refreshes them).
                for key in std::iter::once(plain).chain(targets) {
                    if self.active.insert(key.clone(), now).is_none() {
                        out.push(Change { key, on: true });
                    }
                }
            }
            State::Inactive => {
                // Without targets the whole type ends; with targets those end, and the plain
                // state with the last of them.
                let same_type = |k: &Key| {
                    Key {
                        target: None,
                        ..k.clone()
                    } == plain
                };
                let mut ending: Vec<Key> = if targets.is_empty() {
                    self.active
                        .keys()
                        .filter(|k| k.target.is_some() && same_type(k))
                        .cloned()
                        .collect()
                } else {
                    targets
                };
                ending.sort();
                for key in ending {
                    if self.active.remove(&key).is_some() {
                        out.push(Change { key, on: false });
                    }
                }
                let any_target_left = self
                    .active
                    .keys()
                    .any(|k| k.target.is_some() && same_type(k));
                if !any_target_left && self.active.remove(&plain).is_some() {
                    out.push(Change {
                        key: plain,
                        on: false,
                    });
                }
            }
            State::Other => {}
        }
        out
    }

    /// Hold-offs that ran out.
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        let expired: Vec<Key> = self
            .active
            .iter()
            .filter(|(k, last)| now.saturating_duration_since(**last) >= self.holdoff(k))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<Change> = expired
            .into_iter()
            .map(|key| {
                self.active.remove(&key);
                Change { key, on: false }
            })
            .collect();
        // Targets before their plain state.
        out.sort_by(|a, b| {
            (
                &a.key.device,
                a.key.channel,
                a.key.io_port,
                &a.key.event_type,
            )
                .cmp(&(
                    &b.key.device,
                    b.key.channel,
                    b.key.io_port,
                    &b.key.event_type,
                ))
                .then(a.key.target.is_none().cmp(&b.key.target.is_none()))
                .then(a.key.target.cmp(&b.key.target))
        });
        out
    }

    /// When the next hold-off runs out (for the caller's timer).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.active
            .iter()
            .map(|(k, last)| *last + self.holdoff(k))
            .min()
    }

    pub fn is_active(&self, key: &Key) -> bool {
        self.active.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::hikvision::alert;

    fn sequence(name: &str) -> Vec<Alert> {
        let p = format!(
            "{}/tests/fixtures/hikvision/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                alert::parse(v["content"].as_str().unwrap().as_bytes()).unwrap()
            })
            .collect()
    }

    /// Feed alerts `every` apart (like the device), ticking as time passes; count changes.
    fn replay(
        t: &mut Tracker,
        alerts: &[Alert],
        every: Duration,
        repeat_for: Duration,
    ) -> Vec<Change> {
        let start = Instant::now();
        let mut now = start;
        let mut out = Vec::new();
        let mut i = 0;
        while now.duration_since(start) < repeat_for {
            // Sequences loop: strip device times so a replayed loop is not a "backlog".
            let mut a = alerts[i % alerts.len()].clone();
            a.date_time = None;
            out.extend(t.tick(now));
            out.extend(t.on_alert("dev", &a, now));
            now += every;
            i += 1;
        }
        // Time passes with nothing more from the device.
        out.extend(t.tick(now + Duration::from_secs(60)));
        out
    }

    #[test]
    fn ptz_repeating_active_for_ten_minutes_gives_exactly_two_messages() {
        let seq = sequence("hiksink_ptz_sequence_first160.jsonl");
        let motion: Vec<Alert> = seq
            .into_iter()
            .filter(|a| a.event_type == "vmd" && a.state == State::Active)
            .collect();
        assert!(!motion.is_empty());
        let mut t = Tracker::new(Holdoff::default());
        let changes = replay(
            &mut t,
            &motion,
            Duration::from_millis(333),
            Duration::from_secs(600),
        );
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes[0].on && !changes[1].on);
    }

    #[test]
    fn real_sequences_never_leave_a_state_stuck() {
        for name in [
            "hiksink_cam_sequence_first140.jsonl",
            "hiksink_ptz_sequence_first160.jsonl",
            "hiksink_nvr_sequence_first200.jsonl",
        ] {
            let seq = sequence(name);
            let mut t = Tracker::new(Holdoff::default());
            let changes = replay(
                &mut t,
                &seq,
                Duration::from_millis(300),
                Duration::from_millis(300 * seq.len() as u64),
            );
            let ons = changes.iter().filter(|c| c.on).count();
            let offs = changes.iter().filter(|c| !c.on).count();
            assert!(ons > 0, "{name}: something turned on");
            assert_eq!(ons, offs, "{name}: every ON is followed by an OFF");
            assert!(t.next_deadline().is_none(), "{name}: nothing left active");
        }
    }

    #[test]
    fn inactive_ends_at_once_and_holdoff_is_per_type_and_device() {
        let a = |state: &str, ty: &str| {
            alert::parse(format!("<EventNotificationAlert><channelID>1</channelID><eventType>{ty}</eventType><eventState>{state}</eventState><activePostCount>1</activePostCount></EventNotificationAlert>").as_bytes()).unwrap()
        };
        let now = Instant::now();
        let mut h = Holdoff::default();
        h.per_type
            .insert("linedetection".into(), Duration::from_secs(1));
        let mut t = Tracker::new(Holdoff::default());
        t.set_device_holdoff("cam", h);
        assert_eq!(t.on_alert("cam", &a("active", "VMD"), now).len(), 1);
        assert!(
            t.on_alert("cam", &a("active", "VMD"), now + Duration::from_secs(1))
                .is_empty(),
            "repeats are not changes"
        );
        assert!(!t.on_alert("cam", &a("inactive", "VMD"), now + Duration::from_secs(2))[0].on);
        t.on_alert("cam", &a("active", "linedetection"), now);
        assert!(t.tick(now + Duration::from_millis(900)).is_empty());
        assert_eq!(
            t.tick(now + Duration::from_millis(1000)).len(),
            1,
            "per-type hold-off of 1 s"
        );
        // Heartbeats change nothing.
        let hb = alert::parse(b"<EventNotificationAlert><eventType>videoloss</eventType><eventState>inactive</eventState><activePostCount>0</activePostCount></EventNotificationAlert>").unwrap();
        assert!(t.on_alert("cam", &hb, now).is_empty());
    }

    #[test]
    fn a_wrong_device_clock_changes_nothing_and_retransmissions_are_history() {
        let at = |time: &str, state: &str, retrans: bool| {
            alert::parse(format!("<EventNotificationAlert><channelID>1</channelID><dateTime>{time}</dateTime><eventType>linedetection</eventType><eventState>{state}</eventState>{}</EventNotificationAlert>", if retrans { "<isDataRetransmission>true</isDataRetransmission>" } else { "" }).as_bytes()).unwrap()
        };
        let now = Instant::now();
        let mut t = Tracker::new(Holdoff::default());
        // A `-8:00` offset read literally: 16 h in the future.
        let on = t.on_alert("nvr", &at("2026-01-05T10:00:00-8:00", "active", false), now);
        assert_eq!(on.len(), 1);
        assert!(t.tick(now + Duration::from_secs(10))[0].key.event_type == "linedetection");
        // Then the clock is stepped back by NTP: alerts still count, at once.
        let back = t.on_alert(
            "nvr",
            &at("2026-01-05T01:00:00+01:00", "active", false),
            now + Duration::from_secs(11),
        );
        assert_eq!(back.len(), 1, "not taken for a backlog");
        let off = t.on_alert(
            "nvr",
            &at("2025-01-01T00:00:00Z", "inactive", false),
            now + Duration::from_secs(12),
        );
        assert_eq!(off.len(), 1, "its OFF comes too");
        assert!(!off[0].on);
        // A flagged retransmission is history only.
        assert!(
            t.on_alert("nvr", &at("2026-01-05T10:00:10+01:00", "active", true), now)
                .is_empty(),
            "flagged retransmission"
        );
    }

    #[test]
    fn targets_have_their_own_states_and_the_plain_state_is_on_while_any_is() {
        let now = Instant::now();
        let mut t = Tracker::new(Holdoff::default());
        let with = |state: &str, targets: &[&str]| {
            let regions: String = targets.iter().enumerate().map(|(i, x)| format!("<DetectionRegionEntry><regionID>{i}</regionID><detectionTarget>{x}</detectionTarget></DetectionRegionEntry>")).collect();
            alert::parse(format!("<EventNotificationAlert><channelID>2</channelID><eventType>linedetection</eventType><eventState>{state}</eventState><DetectionRegionList>{regions}</DetectionRegionList></EventNotificationAlert>").as_bytes()).unwrap()
        };
        let names = |c: &[Change]| -> Vec<(Option<String>, bool)> {
            c.iter().map(|c| (c.key.target.clone(), c.on)).collect()
        };
        let ch = t.on_alert("nvr", &with("active", &["human", "vehicle"]), now);
        assert_eq!(
            names(&ch),
            [
                (None, true),
                (Some("human".into()), true),
                (Some("vehicle".into()), true)
            ]
        );
        // One target ends: the plain state stays ON.
        let ch = t.on_alert("nvr", &with("inactive", &["human"]), now);
        assert_eq!(names(&ch), [(Some("human".into()), false)]);
        // The last one ends: the plain state with it.
        let ch = t.on_alert("nvr", &with("inactive", &["vehicle"]), now);
        assert_eq!(names(&ch), [(Some("vehicle".into()), false), (None, false)]);
        // Hold-off: targets first, then the plain state, together.
        t.on_alert("nvr", &with("active", &["human"]), now);
        let ch = t.tick(now + Duration::from_secs(5));
        assert_eq!(names(&ch), [(Some("human".into()), false), (None, false)]);
        // An `inactive` without targets ends every target of the type.
        t.on_alert("nvr", &with("active", &["human", "vehicle"]), now);
        let ch = t.on_alert("nvr", &with("inactive", &[]), now);
        assert_eq!(ch.len(), 3);
        assert!(t.next_deadline().is_none());
    }
}
