//! Alarm state per (device, channel or IO port, event type, target), from alerts. Pure: alerts
//! and `now` in, changes out.
//!
//! Do not trust the device to end an event (protocols.md §2): a DS-2CD2185FWD-I camera sends
//! `VMD active` ~1/s and then `inactive`; a PTZ sends `active` ~3/s and **never** `inactive`;
//! an NVR sends `active` ~1/s per channel and never `inactive`. So: ON at the first `active`,
//! OFF at `inactive` or after a hold-off since the last `active` (default 5 s, per event type
//! and per device). Only changes are reported. A backlog flushed after a reconnect
//! (`isDataRetransmission`, or much older than the newest alert) is history, not state.

use super::alert::{Alert, State};
use chrono::{DateTime, FixedOffset};
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

/// An alert this much older than the newest one from the same device is a backlog.
const BACKLOG_AGE: chrono::Duration = chrono::Duration::seconds(60);

#[derive(Debug, Default)]
pub struct Tracker {
    holdoff: HashMap<String, Holdoff>,
    default_holdoff: Holdoff,
    /// Active keys and when their last `active` arrived.
    active: HashMap<Key, Instant>,
    newest: HashMap<String, DateTime<FixedOffset>>,
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

    /// Whether `alert` is part of a flushed backlog (keep it as history only).
    pub fn is_backlog(&mut self, device: &str, alert: &Alert) -> bool {
        if alert.retransmission {
            return true;
        }
        let Some(t) = alert.date_time else {
            return false;
        };
        let newest = self.newest.entry(device.to_string()).or_insert(t);
        if t > *newest {
            *newest = t;
        }
        t < *newest - BACKLOG_AGE
    }

    pub fn on_alert(&mut self, device: &str, alert: &Alert, now: Instant) -> Vec<Change> {
        if alert.is_heartbeat() || self.is_backlog(device, alert) {
            return Vec::new();
        }
        let targets = alert.targets();
        let targets: Vec<Option<String>> = if targets.is_empty() {
            vec![None]
        } else {
            targets.into_iter().map(Some).collect()
        };
        let mut out = Vec::new();
        for target in targets {
            let key = Key {
                device: device.to_string(),
                channel: alert.channel,
                io_port: alert.io_port,
                event_type: alert.event_type.clone(),
                target,
            };
            match alert.state {
                State::Active => {
                    if self.active.insert(key.clone(), now).is_none() {
                        out.push(Change { key, on: true });
                    }
                }
                State::Inactive => {
                    if self.active.remove(&key).is_some() {
                        out.push(Change { key, on: false });
                    }
                }
                State::Other => {}
            }
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
        out.sort_by(|a, b| a.key.cmp(&b.key));
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
    fn backlog_after_reconnect_is_history_not_state() {
        let at = |time: &str, retrans: bool| {
            alert::parse(format!("<EventNotificationAlert><channelID>1</channelID><dateTime>{time}</dateTime><eventType>VMD</eventType><eventState>active</eventState>{}</EventNotificationAlert>", if retrans { "<isDataRetransmission>true</isDataRetransmission>" } else { "" }).as_bytes()).unwrap()
        };
        let now = Instant::now();
        let mut t = Tracker::new(Holdoff::default());
        assert_eq!(
            t.on_alert("nvr", &at("2026-01-05T10:00:00+01:00", false), now)
                .len(),
            1
        );
        t.tick(now + Duration::from_secs(10));
        assert!(
            t.on_alert("nvr", &at("2026-01-05T09:30:00+01:00", false), now)
                .is_empty(),
            "30 min older than the newest"
        );
        assert!(
            t.on_alert("nvr", &at("2026-01-05T10:00:10+01:00", true), now)
                .is_empty(),
            "flagged retransmission"
        );
        // Separate detection targets are separate states.
        let human = alert::parse(b"<EventNotificationAlert><channelID>2</channelID><eventType>linedetection</eventType><eventState>active</eventState><DetectionRegionList><DetectionRegionEntry><regionID>1</regionID><detectionTarget>human</detectionTarget></DetectionRegionEntry><DetectionRegionEntry><regionID>2</regionID><detectionTarget>vehicle</detectionTarget></DetectionRegionEntry></DetectionRegionList></EventNotificationAlert>").unwrap();
        let ch = t.on_alert("nvr", &human, now);
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[0].key.target.as_deref(), Some("human"));
    }
}
