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

/// What the sink does with a command on `topic`: `None` for a topic that is not a command (or
/// a QR scan, whose payload only goes through the vCard parser).
fn route(topic: &str, payload: &[u8], retained: bool) -> Option<Result<(), Rejection>> {
    let topics = Topics {
        base: "gatehouse".into(),
        prefix: "homeassistant".into(),
    };
    let mut router = Router::default();
    let doors = doors();
    let res = if let Some((cam, ch, stream)) = topics.parse_camera_set(topic) {
        router.camera(&cam, ch, stream, payload, retained, cam == "front")
    } else if topics.parse_qr_scan(topic).is_some() {
        let _ = gatehouse::apptive::vcard::parse(payload);
        return None;
    } else if topic == topics.replay_set() {
        router.replay(payload, retained)
    } else if topic == topics.lockdown_set() {
        router.lockdown(payload, retained)
    } else if let Some(Ok(door)) = topics.parse_door_set(topic) {
        router.door(door, payload, retained, &doors, tokio::time::Instant::now())
    } else {
        return None;
    };
    Some(res.map(|_| ()))
}

/// `code` with each character moved on by one (`9` to `0`, `z` to `a`): a code of the same
/// shape that is a different word.
fn shifted(code: &str) -> String {
    code.chars()
        .map(|c| match c {
            '9' => '0',
            'z' => 'a',
            'Z' => 'A',
            c => char::from(c as u8 + 1),
        })
        .collect()
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
    let Some(Err(r)) = route(topic, payload, retained) else {
        return;
    };
    assert!(!r.reason.is_empty());
    let text = String::from_utf8_lossy(payload);
    if !text.contains(CODE) && !topic.contains(CODE) {
        assert!(
            !r.reason.contains(CODE),
            "configured code in {:?}",
            r.reason
        );
    }
    let Some(code) = sent_code(&text, topic) else {
        return;
    };
    if !r.reason.contains(&code) {
        return;
    }
    // The code may be a word the reason holds anyway: `{"code":"action"}` on a camera topic
    // is refused with serde's "unknown field `code`, expected one of `channel`, `action`, …".
    // Send a code of the same shape that is a different word: a reason that quotes the code
    // quotes that one.
    let other = shifted(&code);
    let Some(at) = payload
        .windows(code.len())
        .position(|w| w == code.as_bytes())
    else {
        return;
    };
    let mut payload2 = payload.to_vec();
    payload2[at..at + code.len()].copy_from_slice(other.as_bytes());
    if let Some(Err(r2)) = route(topic, &payload2, retained) {
        assert!(
            !r2.reason.contains(&other),
            "the payload's code {other:?} in the reason {:?} (and {code:?} in {:?})",
            r2.reason,
            r.reason
        );
    }
});
