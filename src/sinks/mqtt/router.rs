//! Inbound commands: MQTT publish → a typed [`Command`], or a rejection with a reason.
//! Pure except for the per-door interval clock, which the caller passes in.
//!
//! Never act on a retained command (phantom openings from replayed retained `/set` topics are
//! well documented): retained publishes are refused here, and the subscription also asks the
//! broker (MQTT 5 Retain Handling = 2) not to send retained messages at all.

use crate::commands::DoorGate;
use crate::config::DoorConfig;
use crate::model::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDoorCommand {
    action: String,
    #[serde(default)]
    duration_ms: Option<u32>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default, deserialize_with = "crate::commands::code")]
    code: Option<String>,
}

/// The largest command payload acted on. A command is a word or a small JSON object; a
/// larger payload (up to the broker's packet limit) is refused before it is parsed, so its
/// contents never reach a log line, the result topic or the audit table.
pub const MAX_COMMAND_PAYLOAD: usize = 4096;

/// `Err(reason)` when `payload` is over [`MAX_COMMAND_PAYLOAD`].
fn check_size(payload: &[u8]) -> Result<(), Rejection> {
    if payload.len() <= MAX_COMMAND_PAYLOAD {
        return Ok(());
    }
    Err(Rejection {
        request_id: new_request_id(),
        kind: None,
        reason: format!(
            "command payload too large: {} bytes (at most {MAX_COMMAND_PAYLOAD})",
            payload.len()
        ),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLockdown {
    lockdown: bool,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCamera {
    #[serde(default)]
    channel: Option<u32>,
    /// `START` / `STOP` for `stream/set`.
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonReplay {
    from_seq: i64,
    #[serde(default)]
    request_id: Option<String>,
}

/// MQTT payloads to commands; the door checks are the [`DoorGate`] REST shares.
#[derive(Default)]
pub struct Router {
    gate: DoorGate,
}

/// A rejection before the command reaches the door's source.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub request_id: String,
    pub kind: Option<CommandKind>,
    pub reason: String,
}

fn new_request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "mqtt-{}-{}",
        chrono::Utc::now().timestamp_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A parsed command of a topic without per-device checks: refused when retained.
fn command(
    request_id: Option<String>,
    kind: CommandKind,
    retained: bool,
    requester: &str,
) -> Result<Command, Rejection> {
    let request_id = request_id
        .filter(|r| !r.is_empty())
        .unwrap_or_else(new_request_id);
    if retained {
        return Err(Rejection {
            request_id,
            kind: Some(kind),
            reason: "retained command ignored: commands must not be retained".into(),
        });
    }
    Ok(Command {
        request_id,
        requester: requester.into(),
        kind,
        received: chrono::Utc::now(),
        received_at: tokio::time::Instant::now(),
    })
}

fn action(s: &str) -> Option<DoorAction> {
    // LOCK / UNLOCK / OPEN are Home Assistant's lock entity payloads; PRESS its button's.
    Some(match s.trim().to_ascii_uppercase().as_str() {
        "OPEN" | "PRESS" => DoorAction::Open,
        "HOLD_OPEN" | "HOLDOPEN" | "UNLOCK" => DoorAction::HoldOpen,
        "CLOSE" | "LOCK" => DoorAction::Close,
        _ => return None,
    })
}

impl Router {
    /// A router whose door checks share `gate` (the bus's) with the other requesters.
    pub fn new(gate: DoorGate) -> Router {
        Router { gate }
    }

    /// A publish on `…/door/<id>/set`.
    pub fn door(
        &mut self,
        door: DoorId,
        payload: &[u8],
        retained: bool,
        doors: &BTreeMap<DoorId, DoorConfig>,
        now: Instant,
    ) -> Result<Command, Rejection> {
        check_size(payload)?;
        let text = String::from_utf8_lossy(payload);
        let parsed = if text.trim_start().starts_with('{') {
            serde_json::from_str::<JsonDoorCommand>(&text)
                .map_err(|e| format!("malformed JSON command: {e}"))
                .and_then(|j| match action(&j.action) {
                    Some(a) => Ok((a, j.duration_ms, j.request_id, j.code)),
                    None => Err(format!(
                        "unknown action {:?}",
                        j.action.chars().take(40).collect::<String>()
                    )),
                })
        } else {
            match action(&text) {
                Some(a) => Ok((a, None, None, None)),
                None => Err(format!(
                    "unknown command {:?} (OPEN, HOLD_OPEN, CLOSE, LOCK, UNLOCK or JSON)",
                    text.chars().take(40).collect::<String>()
                )),
            }
        };
        let (act, duration_ms, request_id, code) = match parsed {
            Ok(p) => p,
            Err(reason) => {
                return Err(Rejection {
                    request_id: new_request_id(),
                    kind: None,
                    reason,
                });
            }
        };
        let request_id = request_id
            .filter(|r| !r.is_empty())
            .unwrap_or_else(new_request_id);
        let kind = CommandKind::Door {
            door,
            action: act,
            duration_ms,
        };
        let reject = |reason: String| {
            Err(Rejection {
                request_id: request_id.clone(),
                kind: Some(kind.clone()),
                reason,
            })
        };
        if retained {
            return reject("retained command ignored: commands must not be retained".into());
        }
        if let Err((_, reason)) = self
            .gate
            .check(door, duration_ms, code.as_deref(), doors, now)
        {
            return reject(reason);
        }
        Ok(Command {
            request_id,
            requester: format!("mqtt:door/{door}/set"),
            kind,
            received: chrono::Utc::now(),
            received_at: tokio::time::Instant::now(),
        })
    }

    /// A publish on `…/camera/<id>[/ch<N>]/snapshot/set` (any payload, or JSON with
    /// `channel`) or `…/stream/set` (`START` / `STOP`, `ON` / `OFF`, or JSON `action`).
    pub fn camera(
        &mut self,
        camera: &str,
        topic_channel: Option<u32>,
        stream: bool,
        payload: &[u8],
        retained: bool,
        known: bool,
    ) -> Result<Command, Rejection> {
        check_size(payload)?;
        let text = String::from_utf8_lossy(payload);
        let fail = |reason: String| Rejection {
            request_id: new_request_id(),
            kind: None,
            reason,
        };
        let (channel, act, rid) = if text.trim_start().starts_with('{') {
            let j: JsonCamera = serde_json::from_str(&text)
                .map_err(|e| fail(format!("malformed JSON command: {e}")))?;
            (j.channel, j.action, j.request_id)
        } else {
            (None, Some(text.trim().to_string()), None)
        };
        let channel = match (topic_channel, channel) {
            (Some(a), Some(b)) if a != b => {
                return Err(fail(format!(
                    "channel {b} in the payload but ch{a} in the topic"
                )));
            }
            (Some(c), _) | (None, Some(c)) => c,
            (None, None) => 1,
        };
        let action = if stream {
            match act.as_deref().map(|a| a.to_ascii_uppercase()).as_deref() {
                Some("START" | "ON") => CameraAction::StreamStart,
                Some("STOP" | "OFF") => CameraAction::StreamStop,
                other => {
                    return Err(fail(format!(
                        "stream/set takes START, STOP or JSON, not {:?}",
                        other.unwrap_or("").chars().take(40).collect::<String>()
                    )));
                }
            }
        } else {
            CameraAction::Snapshot
        };
        let request_id = rid.filter(|r| !r.is_empty()).unwrap_or_else(new_request_id);
        let kind = CommandKind::Camera {
            camera: camera.to_string(),
            channel,
            action,
        };
        let reject = |reason: String| Rejection {
            request_id: request_id.clone(),
            kind: Some(kind.clone()),
            reason,
        };
        if retained {
            return Err(reject(
                "retained command ignored: commands must not be retained".into(),
            ));
        }
        if !known {
            return Err(reject(format!("unknown camera {camera:?}")));
        }
        if channel == 0 || channel > 256 {
            return Err(reject(format!("channel {channel} out of range (1–256)")));
        }
        Ok(Command {
            request_id,
            requester: format!(
                "mqtt:camera/{camera}/{}",
                if stream { "stream/set" } else { "snapshot/set" }
            ),
            kind,
            received: chrono::Utc::now(),
            received_at: tokio::time::Instant::now(),
        })
    }

    /// A publish on `…/bridge/replay/set`: a `seq` (`1234`) or `{"from_seq":1234,"request_id":…}`.
    pub fn replay(&mut self, payload: &[u8], retained: bool) -> Result<Command, Rejection> {
        check_size(payload)?;
        let text = String::from_utf8_lossy(payload);
        let parsed = if text.trim_start().starts_with('{') {
            serde_json::from_str::<JsonReplay>(&text)
                .map(|j| (j.from_seq, j.request_id))
                .map_err(|e| format!("malformed JSON command: {e}"))
        } else {
            text.trim().parse::<i64>().map(|s| (s, None)).map_err(|_| {
                format!(
                    "replay takes a seq or {{\"from_seq\":N}}, not {:?}",
                    text.chars().take(40).collect::<String>()
                )
            })
        };
        let (from_seq, request_id) = parsed.map_err(|reason| Rejection {
            request_id: new_request_id(),
            kind: None,
            reason,
        })?;
        command(
            request_id,
            CommandKind::Replay { from_seq },
            retained,
            "mqtt:bridge/replay/set",
        )
    }

    /// A publish on `…/net2/lockdown/set`: `ON`, `OFF` or `{"lockdown":true,"request_id":…}`.
    pub fn lockdown(&mut self, payload: &[u8], retained: bool) -> Result<Command, Rejection> {
        check_size(payload)?;
        let text = String::from_utf8_lossy(payload);
        let parsed = if text.trim_start().starts_with('{') {
            serde_json::from_str::<JsonLockdown>(&text)
                .map(|j| (j.lockdown, j.request_id))
                .map_err(|e| format!("malformed JSON command: {e}"))
        } else {
            match text.trim().to_ascii_uppercase().as_str() {
                "ON" => Ok((true, None)),
                "OFF" => Ok((false, None)),
                _ => Err("lockdown takes ON, OFF or JSON".to_string()),
            }
        };
        let (active, rid) = parsed.map_err(|reason| Rejection {
            request_id: new_request_id(),
            kind: None,
            reason,
        })?;
        command(
            rid,
            CommandKind::Lockdown { active },
            retained,
            "mqtt:net2/lockdown/set",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DoorMode, HumanDuration};
    use crate::secret::Secret;
    use std::time::Duration;

    fn doors() -> BTreeMap<DoorId, DoorConfig> {
        let mut m = BTreeMap::new();
        m.insert(1, DoorConfig::default());
        m.insert(
            2,
            DoorConfig {
                mode: DoorMode::Disabled,
                ..Default::default()
            },
        );
        m.insert(
            3,
            DoorConfig {
                require_code: Some(Secret::new("Zq7-door-code")),
                ..Default::default()
            },
        );
        m.insert(
            4,
            DoorConfig {
                min_command_interval: HumanDuration::secs(0),
                ..Default::default()
            },
        );
        m
    }

    fn reason(r: Result<Command, Rejection>) -> String {
        r.unwrap_err().reason
    }

    #[test]
    fn camera_commands() {
        let mut r = Router::default();
        let c = r.camera("garage", None, false, b"", false, true).unwrap();
        assert!(matches!(
            c.kind,
            CommandKind::Camera {
                channel: 1,
                action: CameraAction::Snapshot,
                ..
            }
        ));
        let c = r
            .camera("nvr", Some(3), true, b"start", false, true)
            .unwrap();
        assert!(matches!(
            c.kind,
            CommandKind::Camera {
                channel: 3,
                action: CameraAction::StreamStart,
                ..
            }
        ));
        let c = r
            .camera(
                "nvr",
                None,
                true,
                br#"{"channel":2,"action":"STOP","request_id":"x"}"#,
                false,
                true,
            )
            .unwrap();
        assert_eq!(c.request_id, "x");
        assert!(matches!(
            c.kind,
            CommandKind::Camera {
                channel: 2,
                action: CameraAction::StreamStop,
                ..
            }
        ));
        assert!(reason(r.camera("garage", None, false, b"", true, true)).contains("retained"));
        assert!(
            reason(r.camera("nope", None, false, b"", false, false)).contains("unknown camera")
        );
        assert!(reason(r.camera("g", None, true, b"PLAY", false, true)).contains("START"));
        assert!(
            reason(r.camera("g", Some(1), false, br#"{"channel":2}"#, false, true))
                .contains("topic")
        );
        assert!(reason(r.camera("g", None, false, b"{bad", false, true)).contains("malformed"));
    }

    #[test]
    fn replay_requests() {
        let mut r = Router::default();
        let c = r.replay(b"1234", false).unwrap();
        assert_eq!(c.kind, CommandKind::Replay { from_seq: 1234 });
        let c = r
            .replay(br#"{"from_seq":7,"request_id":"gap-1"}"#, false)
            .unwrap();
        assert_eq!(
            (c.kind, c.request_id.as_str()),
            (CommandKind::Replay { from_seq: 7 }, "gap-1")
        );
        assert!(reason(r.replay(b"7", true)).contains("retained"));
        assert!(reason(r.replay(b"last week", false)).contains("replay takes a seq"));
        assert!(reason(r.replay(br#"{"from":7}"#, false)).contains("malformed"));
    }

    #[test]
    fn plain_and_json_payloads() {
        let mut r = Router::default();
        let now = Instant::now();
        let c = r.door(4, b"OPEN", false, &doors(), now).unwrap();
        assert!(matches!(
            c.kind,
            CommandKind::Door {
                action: DoorAction::Open,
                ..
            }
        ));
        let c = r.door(4, b" unlock\n", false, &doors(), now).unwrap();
        assert!(matches!(
            c.kind,
            CommandKind::Door {
                action: DoorAction::HoldOpen,
                ..
            }
        ));
        let c = r
            .door(
                4,
                br#"{"action":"open","duration_ms":5000,"request_id":"abc"}"#,
                false,
                &doors(),
                now,
            )
            .unwrap();
        assert_eq!(c.request_id, "abc");
        assert!(matches!(
            c.kind,
            CommandKind::Door {
                duration_ms: Some(5000),
                ..
            }
        ));
        let c = r.door(4, b"LOCK", false, &doors(), now).unwrap();
        assert!(matches!(
            c.kind,
            CommandKind::Door {
                action: DoorAction::Close,
                ..
            }
        ));
    }

    #[test]
    fn every_rejection_path() {
        let mut r = Router::default();
        let now = Instant::now();
        assert!(reason(r.door(1, b"OPEN", true, &doors(), now)).contains("retained"));
        assert!(reason(r.door(9, b"OPEN", false, &doors(), now)).contains("unknown door"));
        assert!(reason(r.door(2, b"OPEN", false, &doors(), now)).contains("disabled"));
        assert!(reason(r.door(1, b"WIGGLE", false, &doors(), now)).contains("unknown command"));
        assert!(reason(r.door(1, b"{\"action\":", false, &doors(), now)).contains("malformed"));
        assert!(
            reason(r.door(1, br#"{"action":"open","extra":1}"#, false, &doors(), now))
                .contains("malformed")
        );
        assert!(
            reason(r.door(
                1,
                br#"{"action":"open","duration_ms":5}"#,
                false,
                &doors(),
                now
            ))
            .contains("duration_ms")
        );
        assert!(reason(r.door(3, b"OPEN", false, &doors(), now)).contains("requires a code"));
        let wrong = reason(r.door(
            3,
            br#"{"action":"open","code":"Bad-guess-1"}"#,
            false,
            &doors(),
            now,
        ));
        assert_eq!(wrong, "wrong code");
        assert!(
            r.door(
                3,
                br#"{"action":"open","code":"Zq7-door-code"}"#,
                false,
                &doors(),
                now
            )
            .is_ok()
        );
        // Minimum interval per door.
        assert!(r.door(1, b"OPEN", false, &doors(), now).is_ok());
        assert!(
            reason(r.door(
                1,
                b"OPEN",
                false,
                &doors(),
                now + Duration::from_millis(500)
            ))
            .contains("min_command_interval")
        );
        assert!(
            r.door(1, b"OPEN", false, &doors(), now + Duration::from_secs(3))
                .is_ok()
        );
        assert!(reason(r.lockdown(b"ON", true)).contains("retained"));
        assert!(r.lockdown(b"on", false).is_ok());
        assert!(reason(r.lockdown(b"maybe", false)).contains("ON, OFF"));
    }

    #[test]
    fn the_code_is_never_in_a_rejection() {
        let mut r = Router::default();
        let e = r
            .door(
                3,
                br#"{"action":"open","code":"Wr0ng-code-x"}"#,
                false,
                &doors(),
                Instant::now(),
            )
            .unwrap_err();
        assert!(!format!("{e:?}").contains("Wr0ng-code-x"));
        assert!(!format!("{e:?}").contains("Zq7-door-code"));
    }

    #[test]
    fn a_code_sent_as_a_number_is_never_in_a_rejection() {
        let mut r = Router::default();
        for payload in [
            &br#"{"action":"open","code":123456}"#[..],
            br#"{"action":"open","code":123456.5}"#,
            br#"{"action":"open","code":[123456]}"#,
        ] {
            let e = r
                .door(3, payload, false, &doors(), Instant::now())
                .unwrap_err();
            assert!(!format!("{e:?}").contains("123456"), "{e:?}");
        }
        // A number is the code's digits: the right one opens.
        let mut d = doors();
        d.get_mut(&3).unwrap().require_code = Some(Secret::new("123456"));
        assert!(
            r.door(
                3,
                br#"{"action":"open","code":123456}"#,
                false,
                &d,
                Instant::now()
            )
            .is_ok()
        );
    }

    #[test]
    fn oversized_payloads_are_refused_unread() {
        let mut r = Router::default();
        // Valid JSON padded to just over the limit: refused, not opened.
        let mut big = br#"{"action":"open","request_id":"big-1"}"#.to_vec();
        big.splice(1..1, std::iter::repeat_n(b' ', MAX_COMMAND_PAYLOAD));
        let e = r
            .door(4, &big, false, &doors(), Instant::now())
            .unwrap_err();
        assert!(e.reason.contains("too large"), "{e:?}");
        assert!(!e.request_id.contains("big-1"));
        assert!(reason(r.camera("cam", None, false, &big, false, true)).contains("too large"));
        assert!(reason(r.replay(&big, false)).contains("too large"));
        assert!(reason(r.lockdown(&big, false)).contains("too large"));
        // At the limit it is read as usual.
        let mut at = br#"{"action":"open"}"#.to_vec();
        at.splice(
            1..1,
            std::iter::repeat_n(b' ', MAX_COMMAND_PAYLOAD - at.len()),
        );
        assert_eq!(at.len(), MAX_COMMAND_PAYLOAD);
        assert!(r.door(4, &at, false, &doors(), Instant::now()).is_ok());
    }

    /// Found by fuzzing (fuzz/corpus/mqtt_command/crash-12ac8874…): a code sent as a number
    /// (Home Assistant's YAML turns `code: 482193` into one) was quoted by serde's message.
    #[test]
    fn a_code_of_the_wrong_type_is_not_quoted() {
        let mut r = Router::default();
        for payload in [
            r#"{"action":"open","code":482193}"#,
            r#"{"action":"open","code":482193.5}"#,
            r#"{"action":"open","code":[482193]}"#,
            r#"{"action":"open","code":{"pin":"482193"}}"#,
        ] {
            let e = reason(r.door(3, payload.as_bytes(), false, &doors(), Instant::now()));
            assert!(!e.contains("482193"), "{payload}: {e}");
            // A number is the code's digits (see the test above); other types are refused.
            if payload.contains('[') || payload.contains("pin") {
                assert!(
                    e.contains("code must be a string or a number"),
                    "{payload}: {e}"
                );
            }
        }
        // Absent or null: no code (refused for want of one, not as malformed).
        for payload in [r#"{"action":"open"}"#, r#"{"action":"open","code":null}"#] {
            let e = reason(r.door(3, payload.as_bytes(), false, &doors(), Instant::now()));
            assert!(!e.contains("malformed"), "{payload}: {e}");
        }
    }
}
