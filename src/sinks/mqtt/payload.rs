//! JSON payloads. Times are ISO-8601 with offset. Names are resolved; PINs never appear
//! (the model has no field that could carry one).

use crate::model::*;
use crate::storage::OutboxEvent;
use serde_json::{Value, json};

/// A door or source event as published (`…/event`): `id` is the dedupe key for consumers,
/// `seq` is monotonic over all events (a consumer of every event topic sees a gap in it),
/// `event_type` is what Home Assistant's `event` entity reads.
pub fn event(e: &OutboxEvent) -> Value {
    let detail: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
    let mut v = json!({
        "id": e.id,
        "seq": e.seq,
        "event_type": e.kind,
        "time": e.time,
        "code": e.code,
        "description": e.description,
        "via": e.via,
        "door": e.door_id.map(|d| json!({"id": d, "name": e.door_name})),
        "user": e.user_id.map(|u| json!({"id": u, "name": e.user_name})),
    });
    // Kind-specific fields (token, reason, derived…) beside the common ones.
    if let (Value::Object(o), Value::Object(d)) = (&mut v, detail) {
        for (k, val) in d {
            if k != "type" {
                o.insert(k, val);
            }
        }
    }
    v
}

/// About the latest picture of a channel (`…/snapshot/meta`, the camera entity's attributes).
pub fn snapshot_meta(s: &Snapshot) -> Value {
    json!({
        "id": s.id,
        "taken": s.taken.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "source": s.source,
        "trigger": s.trigger,
        "event_id": s.event_id,
        "after_event_ms": s.after_event_ms,
        "bytes": s.jpeg.len(),
        "url": s.url,
    })
}

/// A live stream's state (`…/stream`), retained.
pub fn stream(s: &StreamState) -> Value {
    json!({
        "state": if s.active { "ON" } else { "OFF" },
        "hls_url": s.hls_url,
        "player_url": s.player_url,
        "detail": s.detail,
    })
}

pub fn door_state(d: &DoorState) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "contact": d.open.map(|o| if o { "open" } else { "closed" }),
        "open": d.open,
        "lock": d.unlocked.map(|u| if u { "unlocked" } else { "locked" }),
        "unlocked": d.unlocked,
        "held_open": d.held_open,
        "forced": d.forced,
        "tamper": d.tamper,
        "alarm_tripped": d.alarm_tripped,
        "acu_online": d.acu_online,
        "battery_low": d.battery_low,
        "battery_critical": d.battery_critical,
        "mains_failed": d.mains_failed,
        "last_event": d.last_event,
        "last_user": d.last_user,
        "updated": d.updated.map(|t| t.to_rfc3339()),
    })
}

pub fn presence(p: &Presence) -> Value {
    json!({
        "user": p.user,
        "door": p.door,
        "site": p.site,
        "time": p.time.to_rfc3339(),
    })
}

pub fn health(h: &SourceHealth) -> Value {
    json!({
        "online": h.online,
        "live": h.live,
        "ready": h.ready,
        "detail": h.detail,
    })
}

pub fn command_result(u: &CommandUpdate) -> Value {
    let mut v = json!({
        "request_id": u.request_id,
        "status": u.status,
        "detail": u.detail,
        "requester": u.requester,
        "time": u.at.to_rfc3339(),
    });
    if let (Value::Object(o), Ok(Value::Object(k))) = (&mut v, serde_json::to_value(&u.kind)) {
        o.extend(k);
    }
    v
}

/// The emergency mode: the seed's fields (`mode`, `initiated_by`, `initiated_at`, `reason`,
/// `timeout_minutes`, `expires_at`), the property and the doors unlock holds open.
pub fn emergency(e: &EmergencyState) -> Value {
    json!({
        "mode": e.mode.as_str(),
        "property_id": e.property_id,
        "initiated_by": e.initiated_by,
        "initiated_at": e.initiated_at.map(|t| t.to_rfc3339()),
        "reason": e.reason,
        "timeout_minutes": e.timeout_minutes,
        "expires_at": e.expires_at.map(|t| t.to_rfc3339()),
        "doors_held_open": e.held_open,
    })
}

/// A person's state for the `device_tracker`: `home`, else `not_home` (also while there is no
/// evidence yet: an entity stuck at `unknown` reads as broken; the attributes say
/// `"known": false`).
pub fn person_state(p: &PersonState) -> &'static str {
    if p.home == Some(true) {
        "home"
    } else {
        "not_home"
    }
}

/// A person's attributes (`…/person/<id>/attributes`).
pub fn person_attributes(p: &PersonState) -> Value {
    let t = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339());
    json!({
        "id": p.id,
        "name": p.name,
        "site": p.site,
        "known": p.home.is_some(),
        "home": p.home,
        "since": t(p.since),
        "evidence": p.evidence.as_deref().unwrap_or("no evidence yet"),
        "last_door": p.last_door,
        "direction": p.last_door_direction,
        "last_door_at": t(p.last_door_at),
        "wifi_sessions": p.wifi_sessions,
        "last_qr_at": t(p.last_qr_at),
    })
}

/// Who is on a site (`…/site/<id>/people`): the persons whose state is `home`.
pub fn site_people(site: &str, people: &[&PersonState]) -> Value {
    let here: Vec<&&PersonState> = people
        .iter()
        .filter(|p| p.site == site && p.home == Some(true))
        .collect();
    json!({
        "site": site,
        "count": here.len(),
        "people": here.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        "ids": here.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
    })
}
