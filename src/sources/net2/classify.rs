//! Classification of Net2 events by their numeric `eventType` — never by `eventDescription`,
//! which is localised (Danish on the user's server). Pure: JSON in, [`Event`] out.

use crate::model::{DoorRef, Event, EventKind, TokenType, UserRef, Via};
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;
use std::collections::HashMap;

pub const SOURCE: &str = "net2";

/// Event type → kind. Codes from protocols.md §1 (seen on real servers).
pub fn classify(code: i64, token_hint: Option<i64>) -> EventKind {
    use EventKind::*;
    let denied = |r: &str| AccessDenied { reason: r.into() };
    match code {
        20 => AccessGranted {
            token: token_from_live(token_hint).unwrap_or(TokenType::Card),
        },
        21 | 22 => AccessGranted {
            token: TokenType::CardAndPin,
        },
        26 => AccessGranted {
            token: token_from_live(token_hint).unwrap_or(TokenType::Pin),
        },
        27 => AccessGranted {
            token: token_from_live(token_hint).unwrap_or(TokenType::Code),
        },
        23 => denied("invalid_token"),
        24 => denied("invalid_pin"),
        25 => denied("invalid_code"),
        16 | 17 | 111 => denied("not_permitted"),
        112 => denied("lockdown"),
        114 => denied("battery_critical"),
        28 | 46 => DoorOpened,
        29 => DoorRelocked,
        47 => DoorClosed,
        52 => DoorBell,
        90 | 94 => Tamper { active: true },
        103 => Tamper { active: false },
        91 => Mains { ok: false },
        102 => Mains { ok: true },
        92 => DoorForced,
        93 => DoorHeldOpen { derived: false },
        120 | 300 => Lockdown { active: true },
        121 | 301 => Lockdown { active: false },
        500 => AcuOffline,
        501 => AcuOnline,
        552 => Backup { ok: true },
        553 => Backup { ok: false },
        580 => OpenRequested,
        722 => Battery { critical: false },
        723 => Battery { critical: true },
        other => Other { code: other },
    }
}

/// Live `tokenType`: 0 token, 1 PIN, 2 vehicle registration, 3 code.
fn token_from_live(t: Option<i64>) -> Option<TokenType> {
    Some(match t? {
        0 => TokenType::Card,
        1 => TokenType::Pin,
        2 => TokenType::VehicleReg,
        3 => TokenType::Code,
        _ => TokenType::Unknown,
    })
}

/// The raw payload as kept, minus what may be a typed PIN or code: `tokenNumber` of live
/// events presented by PIN or code (`tokenType` 1 / 3), and `cardNo` of the PIN/code event
/// types 24–27. Nothing in the fixtures shows Net2 putting the digits there, but nothing
/// shows it does not, and a PIN must never be stored.
fn redacted(v: &Value) -> Value {
    let mut v = v.clone();
    let code = int(&v, "eventType");
    if let Value::Object(o) = &mut v {
        if matches!(int(&Value::Object(o.clone()), "tokenType"), Some(1 | 3))
            && o.contains_key("tokenNumber")
        {
            o.insert("tokenNumber".into(), Value::Null);
        }
        if matches!(code, Some(24..=27)) && o.contains_key("cardNo") {
            o.insert("cardNo".into(), Value::Null);
        }
    }
    v
}

/// Names known to the source: users by id, doors by id (config override or Net2's name).
#[derive(Debug, Default, Clone)]
pub struct Names {
    pub users: HashMap<i64, String>,
    pub doors: HashMap<u64, String>,
}

/// Identity of an event however it arrived: server-local time to the second, type, user,
/// door. Live events have no id, so this is what matches them with their REST copy.
pub fn fingerprint(local: NaiveDateTime, code: i64, user: i64, door: u64) -> String {
    format!("{}|{code}|{user}|{door}", local.format("%Y-%m-%dT%H:%M:%S"))
}

/// An id for an event the server gave none (live events): the fingerprint alone is not
/// unique (two swipes of one card in one second), so the receive time is part of it.
fn unique_id(fp: &str, received: DateTime<Utc>) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{SOURCE}:fp:{fp}@{}.{n}", received.timestamp_millis())
}

/// Parse a Net2 timestamp: with offset (REST) or naive server-local (SignalR), with or
/// without fractions. Returns the server-local wall time and, if given, the offset.
pub fn parse_time(s: &str) -> Option<(NaiveDateTime, Option<FixedOffset>)> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some((t.naive_local(), Some(*t.offset())));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some((t, None));
        }
    }
    None
}

/// Why an element could not become a normal event (it still becomes an `Unparsed` one).
fn int(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn string(v: &Value, key: &str) -> Option<String> {
    v.get(key)?.as_str().map(str::to_owned)
}

/// The fields that differ between the REST and the SignalR shape of an event.
struct Wire {
    via: Via,
    id: Option<i64>,
    door: Option<u64>,
    user_id: Option<i64>,
    /// The wire's own door / user names, used when the caches have none.
    door_name: Option<String>,
    user_name: Option<String>,
    token_hint: Option<i64>,
    description: Option<String>,
}

/// Build an event from one REST element (`GET /api/v1/events`). Never fails: missing or
/// wrong-typed fields give an `Unparsed` kind with the raw JSON kept.
pub fn rest_event(
    v: &Value,
    names: &Names,
    server_offset: FixedOffset,
    now: DateTime<Utc>,
) -> Event {
    let w = Wire {
        via: Via::Rest,
        id: int(v, "id"),
        door: int(v, "address").filter(|a| *a > 0).map(|a| a as u64),
        user_id: int(v, "userID")
            .or_else(|| int(v, "userId"))
            .filter(|u| *u > 0),
        door_name: string(v, "deviceName"),
        user_name: crate::sources::net2::types::join_name([
            &string(v, "firstName"),
            &string(v, "middleName"),
            &string(v, "surname"),
        ]),
        token_hint: None,
        description: string(v, "eventDescription"),
    };
    assemble(v, w, names, server_offset, now)
}

/// Build an event from one SignalR `liveEvents` element. Its `eventTime` is naive server-local
/// time and it has no id; `userName` is "Surname Firstname" (or null for API opens), so names
/// are resolved through `userId` and the user cache, never by splitting.
pub fn live_event(
    v: &Value,
    names: &Names,
    server_offset: FixedOffset,
    now: DateTime<Utc>,
) -> Event {
    let w = Wire {
        via: Via::Live,
        id: None,
        door: int(v, "deviceId").filter(|a| *a > 0).map(|a| a as u64),
        user_id: int(v, "userId")
            .or_else(|| int(v, "userID"))
            .filter(|u| *u > 0),
        door_name: string(v, "areaName"),
        user_name: string(v, "userName"),
        token_hint: int(v, "tokenType"),
        description: None,
    };
    assemble(v, w, names, server_offset, now)
}

fn assemble(
    v: &Value,
    w: Wire,
    names: &Names,
    server_offset: FixedOffset,
    now: DateTime<Utc>,
) -> Event {
    let raw = redacted(v).to_string();
    let code = int(v, "eventType");
    let time = string(v, "eventTime").and_then(|s| parse_time(&s));
    let mut problems = Vec::new();
    if w.via == Via::Rest && w.id.is_none() {
        problems.push("missing id");
    }
    if code.is_none() {
        problems.push("missing or non-numeric eventType");
    }
    if time.is_none() {
        problems.push("missing or invalid eventTime");
    }
    let (local, offset) =
        time.unwrap_or_else(|| (now.with_timezone(&server_offset).naive_local(), None));
    let offset = offset.unwrap_or(server_offset);
    let kind = match (code, problems.is_empty()) {
        (Some(c), true) => classify(c, w.token_hint),
        _ => EventKind::Unparsed {
            error: problems.join(", "),
        },
    };
    let fp = fingerprint(
        local,
        code.unwrap_or(-1),
        w.user_id.unwrap_or(0),
        w.door.unwrap_or(0),
    );
    Event {
        id: match w.id {
            Some(i) => format!("{SOURCE}:{i}"),
            None => unique_id(&fp, now),
        },
        source: SOURCE.into(),
        source_id: w.id,
        fingerprint: fp,
        time: offset
            .from_local_datetime(&local)
            .single()
            .unwrap_or_else(|| now.with_timezone(&offset)),
        received: now,
        via: w.via,
        door: w.door.map(|d| DoorRef {
            id: d,
            name: names.doors.get(&d).cloned().or(w.door_name),
        }),
        user: w.user_id.map(|u| UserRef {
            id: u,
            name: names.users.get(&u).cloned().or(w.user_name),
        }),
        kind,
        code,
        description: w.description,
        raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = include_str!("../../../tests/fixtures/net2/events_page.json");

    fn off() -> FixedOffset {
        FixedOffset::east_opt(3600).unwrap()
    }

    #[test]
    fn classifies_by_code_not_text() {
        assert_eq!(
            classify(26, None),
            EventKind::AccessGranted {
                token: TokenType::Pin
            }
        );
        assert_eq!(
            classify(20, Some(2)),
            EventKind::AccessGranted {
                token: TokenType::VehicleReg
            }
        );
        assert_eq!(
            classify(24, None),
            EventKind::AccessDenied {
                reason: "invalid_pin".into()
            }
        );
        assert_eq!(
            classify(93, None),
            EventKind::DoorHeldOpen { derived: false }
        );
        assert_eq!(classify(92, None), EventKind::DoorForced);
        assert_eq!(classify(500, None), EventKind::AcuOffline);
        assert_eq!(classify(501, None), EventKind::AcuOnline);
        assert_eq!(classify(723, None), EventKind::Battery { critical: true });
        assert_eq!(classify(553, None), EventKind::Backup { ok: false });
        assert_eq!(classify(300, None), EventKind::Lockdown { active: true });
        assert_eq!(classify(9999, None), EventKind::Other { code: 9999 });
    }

    #[test]
    fn fixture_page_classifies() {
        let page: Vec<Value> = serde_json::from_str(PAGE).unwrap();
        let mut names = Names::default();
        names.users.insert(8, "Mette Kragh Holm".into());
        let evs: Vec<_> = page
            .iter()
            .map(|v| rest_event(v, &names, off(), Utc::now()))
            .collect();
        assert_eq!(evs[0].kind, EventKind::DoorHeldOpen { derived: false });
        assert_eq!(evs[0].source_id, Some(1545686));
        assert_eq!(evs[0].id, "net2:1545686");
        assert_eq!(evs[0].door.as_ref().unwrap().id, 7242929);
        let granted = evs.iter().find(|e| e.source_id == Some(1545681)).unwrap();
        assert_eq!(
            granted.kind,
            EventKind::AccessGranted {
                token: TokenType::Pin
            }
        );
        assert_eq!(
            granted.user.as_ref().unwrap().name.as_deref(),
            Some("Mette Kragh Holm")
        );
        assert_eq!(granted.time.to_rfc3339(), "2026-01-05T06:00:01.017+01:00");
        assert_eq!(granted.fingerprint, "2026-01-05T06:00:01|26|8|7242929");
        assert!(
            evs.iter()
                .all(|e| !matches!(e.kind, EventKind::Unparsed { .. }))
        );
    }

    #[test]
    fn malformed_elements_become_unparsed_with_raw_kept() {
        let v: Value = serde_json::json!({"id": 5, "eventType": "abc", "eventTime": null});
        let e = rest_event(&v, &Names::default(), off(), Utc::now());
        assert!(matches!(e.kind, EventKind::Unparsed { .. }));
        assert_eq!(e.raw, v.to_string());
        assert_eq!(e.id, "net2:5");
        let e = rest_event(&Value::Null, &Names::default(), off(), Utc::now());
        assert!(matches!(e.kind, EventKind::Unparsed { .. }));
    }

    #[test]
    fn live_event_matches_rest_fingerprint() {
        let live = serde_json::json!({"eventTime":"2026-01-05T06:00:01","eventType":26,"tokenType":1,"userId":8,"userName":"Holm Mette","deviceId":7242929});
        let e = live_event(&live, &Names::default(), off(), Utc::now());
        assert_eq!(e.fingerprint, "2026-01-05T06:00:01|26|8|7242929");
        assert_eq!(e.time.to_rfc3339(), "2026-01-05T06:00:01+01:00");
        // Without a cached name the live name is used as-is, not split.
        assert_eq!(e.user.unwrap().name.as_deref(), Some("Holm Mette"));
        assert!(e.source_id.is_none());
    }

    #[test]
    fn possible_pin_digits_are_not_kept_raw() {
        let live = serde_json::json!({"eventTime":"2026-01-05T06:00:01","eventType":26,"tokenType":1,"tokenNumber":4821,"userId":8,"deviceId":7});
        let e = live_event(&live, &Names::default(), off(), Utc::now());
        assert!(!e.raw.contains("4821"), "{}", e.raw);
        let card = serde_json::json!({"eventTime":"2026-01-05T06:00:01","eventType":20,"tokenType":0,"tokenNumber":55012,"userId":8,"deviceId":7});
        assert!(
            live_event(&card, &Names::default(), off(), Utc::now())
                .raw
                .contains("55012"),
            "card numbers stay"
        );
        let rest = serde_json::json!({"id":1,"eventTime":"2026-01-05T06:00:01+01:00","eventType":24,"cardNo":7730,"address":7});
        assert!(
            !rest_event(&rest, &Names::default(), off(), Utc::now())
                .raw
                .contains("7730")
        );
    }

    #[test]
    fn parses_time_shapes() {
        assert!(
            parse_time("2026-01-05T06:00:01.017+01:00")
                .unwrap()
                .1
                .is_some()
        );
        assert!(
            parse_time("2019-09-17T11:51:20.9832179Z")
                .unwrap()
                .1
                .is_some()
        );
        assert!(parse_time("2026-01-10T18:48:34").unwrap().1.is_none());
        assert!(parse_time("2026-01-10T18:48:34.5").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
