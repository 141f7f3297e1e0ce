//! Net2 SignalR frames (`sources::net2::signalr::decode`) and what the live source does with
//! a hub message's items: `classify::live_event` for `liveEvents`, the typed
//! `LiveDoorStatus` / `LiveDoorEvent` for the door subscriptions.
#![no_main]

use chrono::{FixedOffset, TimeZone, Utc};
use gatehouse::sources::net2::classify::{self, Names};
use gatehouse::sources::net2::signalr::{self, Frame};
use gatehouse::sources::net2::types::{LiveDoorEvent, LiveDoorStatus};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8; binary ones are read lossily, as the source does.
    let text = String::from_utf8_lossy(data);
    let Ok(frame) = signalr::decode(&text) else {
        return;
    };
    assert_eq!(
        signalr::decode(&text).ok(),
        Some(frame.clone()),
        "not deterministic"
    );
    let Frame::Messages(msgs) = frame else {
        return;
    };
    let names = Names::default();
    let now = Utc.with_ymd_and_hms(2026, 1, 26, 10, 0, 0).unwrap();
    let offset = FixedOffset::east_opt(3600).unwrap();
    for m in msgs {
        assert_eq!(
            m.method,
            m.method.to_ascii_lowercase(),
            "method not lower-cased"
        );
        for item in m.items() {
            match m.method.as_str() {
                "liveevents" => {
                    let ev = classify::live_event(item, &names, offset, now);
                    common::check_event(item, &ev);
                    if let Some(t) = item.get("eventTime").and_then(|t| t.as_str()) {
                        let _ = classify::parse_time(t);
                    }
                }
                "doorstatusevents" => {
                    let _ = serde_json::from_value::<LiveDoorStatus>(item.clone());
                }
                "doorevents" => {
                    let _ = serde_json::from_value::<LiveDoorEvent>(item.clone());
                }
                _ => {}
            }
        }
    }
});
