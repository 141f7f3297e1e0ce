//! The door checks every requester shares before a command goes on the bus: MQTT
//! (`door/<id>/set`) and REST (`POST /api/access-control/points/{id}/open`) ask the same
//! [`DoorGate`] (one per daemon, on the [`crate::bus::Bus`]), so a door's
//! `min_command_interval` holds across both, and an unconfigured or disabled door, a missing or
//! wrong `require_code` and an out-of-range `duration_ms` are refused with the same words.
//! The source that owns the door checks the rest (first status sync, repeated request ids,
//! age, momentary doors: [`crate::sources::net2::doors`]).

use crate::config::{DoorConfig, DoorMode};
use crate::model::DoorId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Why a command was refused, for the REST status code (MQTT only reports the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not in the config's doors, disabled, or too soon after the last one.
    Conflict,
    /// A code is missing or wrong.
    Code,
    /// A value out of range.
    Invalid,
}

/// The per-door command clock, shared by every requester (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct DoorGate {
    last: Arc<Mutex<HashMap<DoorId, Instant>>>,
}

/// Constant time in the length of the expected code.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in b.iter().enumerate() {
        diff |= (*x ^ a.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

impl DoorGate {
    /// Check a door command and, when it passes, start the door's interval at `now`. The
    /// reason never contains a code.
    pub fn check(
        &self,
        door: DoorId,
        duration_ms: Option<u32>,
        code: Option<&str>,
        doors: &BTreeMap<DoorId, DoorConfig>,
        now: Instant,
    ) -> Result<(), (Refusal, String)> {
        let Some(cfg) = doors.get(&door) else {
            return Err((
                Refusal::Conflict,
                format!("unknown door {door} (not in the config's doors)"),
            ));
        };
        if cfg.mode == DoorMode::Disabled {
            return Err((Refusal::Conflict, format!("door {door} is disabled")));
        }
        if let Some(want) = &cfg.require_code {
            match code {
                None => {
                    return Err((
                        Refusal::Code,
                        format!("door {door} requires a code in a JSON command"),
                    ));
                }
                Some(c) if !same_secret(c, want.expose()) => {
                    return Err((Refusal::Code, "wrong code".into()));
                }
                Some(_) => {}
            }
        }
        if let Some(ms) = duration_ms
            && !(100..=3_600_000).contains(&ms)
        {
            return Err((
                Refusal::Invalid,
                "duration_ms must be between 100 and 3600000".into(),
            ));
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(prev) = last.get(&door)
            && now.saturating_duration_since(*prev) < cfg.min_command_interval.get()
        {
            return Err((
                Refusal::Conflict,
                format!(
                    "door {door} had a command {} ms ago (min_command_interval {})",
                    now.saturating_duration_since(*prev).as_millis(),
                    cfg.min_command_interval
                ),
            ));
        }
        last.insert(door, now);
        Ok(())
    }
}

/// Deserialize the door code sent with a command (`code`, MQTT and REST): absent or null, a
/// string, or a number as its digits ([`crate::secret::json_text`]). Anything else is refused
/// without its value. Found by fuzzing (fuzz/corpus/mqtt_command/crash-12ac8874…).
pub fn code<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::Deserialize;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => crate::secret::json_text(v).map(Some).ok_or_else(|| {
            serde::de::Error::custom("code must be a string or a number (its value is not shown)")
        }),
    }
}
