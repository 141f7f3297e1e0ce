//! Inbound MQTT commands: the topic dispatch of the MQTT sink (`Topics::parse_*`) and the
//! payload parsing of `sinks::mqtt::router::Router` (door, camera, replay, lockdown), plus a
//! QR scan topic's payload through the vCard parser, as the sink does.
//!
//! Input: byte 0 = flags (bit 0: retained), then the topic up to the first `\n`, then the
//! payload.
//!
//! Invariant: a door code (the configured one, or one sent in the payload) never appears in a
//! rejection's reason: reasons go to the log and to the `bridge/command_result` topic.
#![no_main]

use gatehouse::config::{DoorConfig, HumanDuration};
use gatehouse::secret::Secret;
use gatehouse::sinks::mqtt::router::{Rejection, Router};
use gatehouse::sinks::mqtt::topics::Topics;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::time::Duration;

/// The configured code of door 2.
const CODE: &str = "739154";

fn doors() -> BTreeMap<u64, DoorConfig> {
    let mut d = BTreeMap::new();
    d.insert(1, DoorConfig::default());
    d.insert(
        2,
        DoorConfig {
            require_code: Some(Secret::new(CODE)),
            min_command_interval: HumanDuration(Duration::ZERO),
            ..DoorConfig::default()
        },
    );
    d
}

/// The code a JSON payload carries, as text, when it is distinctive enough to look for.
fn sent_code(payload: &str, topic: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let c = v.get("code")?;
    let s = match c {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    // Short codes turn up in other words by chance; a code quoted elsewhere in the input
    // (another field) may be quoted from there.
    (s.len() >= 6
        && s.chars().all(|c| c.is_ascii_alphanumeric())
        && payload.matches(s.as_str()).count() == 1
        && !topic.contains(s.as_str()))
    .then_some(s)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let retained = flags & 1 == 1;
    let (topic, payload) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    // MQTT topics are UTF-8 (the client library refuses others).
    let Ok(topic) = std::str::from_utf8(topic) else {
        return;
    };
    let topics = Topics {
        base: "gatehouse".into(),
        prefix: "homeassistant".into(),
    };
    let mut router = Router::default();
    let doors = doors();
    let res: Result<_, Rejection> = if let Some((cam, ch, stream)) = topics.parse_camera_set(topic)
    {
        router.camera(&cam, ch, stream, payload, retained, cam == "front")
    } else if topics.parse_qr_scan(topic).is_some() {
        let _ = gatehouse::apptive::vcard::parse(payload);
        return;
    } else if topic == topics.replay_set() {
        router.replay(payload, retained)
    } else if topic == topics.lockdown_set() {
        router.lockdown(payload, retained)
    } else if let Some(Ok(door)) = topics.parse_door_set(topic) {
        router.door(door, payload, retained, &doors, tokio::time::Instant::now())
    } else {
        return;
    };
    if let Err(r) = res {
        assert!(!r.reason.is_empty());
        let text = String::from_utf8_lossy(payload);
        if !text.contains(CODE) && !topic.contains(CODE) {
            assert!(
                !r.reason.contains(CODE),
                "configured code in {:?}",
                r.reason
            );
        }
        if let Some(code) = sent_code(&text, topic) {
            assert!(
                !r.reason.contains(&code),
                "the payload's code {code:?} in the reason {:?}",
                r.reason
            );
        }
    }
});
