//! Checks shared by the Net2 targets.

use gatehouse::model::Event;
use serde_json::Value;

/// An event built from `item`: its kept raw JSON is JSON, and never holds what may be a typed
/// PIN (`tokenNumber` of a PIN / code presentation, `cardNo` of PIN event types 24–27).
pub fn check_event(item: &Value, ev: &Event) {
    let raw: Value = serde_json::from_str(&ev.raw).expect("the raw JSON kept is JSON");
    let int = |v: &Value, k: &str| match v.get(k) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    if matches!(int(item, "tokenType"), Some(1 | 3)) && item.get("tokenNumber").is_some() {
        assert_eq!(
            raw.get("tokenNumber"),
            Some(&Value::Null),
            "PIN kept: {}",
            ev.raw
        );
    }
    if matches!(int(item, "eventType"), Some(24..=27)) && item.get("cardNo").is_some() {
        assert_eq!(
            raw.get("cardNo"),
            Some(&Value::Null),
            "PIN kept: {}",
            ev.raw
        );
    }
    assert!(!ev.id.is_empty() && !ev.fingerprint.is_empty());
}
