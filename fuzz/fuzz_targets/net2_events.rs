//! Net2 REST JSON and event classification: an events page (`GET /api/v1/events`) through
//! `classify::rest_event`, the users (`types::parse_users` and what the directory asks of a
//! user), doors, door status and command replies as the source decodes them, and
//! `classify::classify` on any event type / token type.
//!
//! Input: byte 0 picks the document, the rest is its body.
#![no_main]

use chrono::{FixedOffset, TimeZone, Utc};
use gatehouse::sources::net2::classify::{self, Names};
use gatehouse::sources::net2::types::{self, CommandResponse, DoorEntry, DoorStatusEntry};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let now = Utc.with_ymd_and_hms(2026, 1, 26, 10, 0, 0).unwrap();
    let offset = FixedOffset::east_opt(3600).unwrap();
    // Response bodies are read as text (reqwest's `text()`: lossy UTF-8).
    let text = String::from_utf8_lossy(body);
    match which % 6 {
        0 => {
            let mut names = Names::default();
            names.users.insert(7, "Mette Jensen".into());
            names.doors.insert(6612642, "Front door".into());
            if let Ok(items) = serde_json::from_str::<Vec<Value>>(&text) {
                for item in &items {
                    let ev = classify::rest_event(item, &names, offset, now);
                    common::check_event(item, &ev);
                }
            }
        }
        1 => {
            if let Ok(users) = types::parse_users(&text) {
                for u in users {
                    let _ = u.display_name();
                    let _ = u.active(now, offset);
                    let _ = u.directory_user(now, offset);
                }
            }
        }
        2 => {
            let _ = serde_json::from_str::<Vec<DoorEntry>>(&text);
        }
        3 => {
            let _ = serde_json::from_str::<Vec<DoorStatusEntry>>(&text);
        }
        4 => {
            let _ = serde_json::from_str::<CommandResponse>(&text);
        }
        _ => {
            // Any event type and token type classify to something, the same each time.
            if body.len() >= 16 {
                let code = i64::from_le_bytes(body[..8].try_into().unwrap());
                let hint = i64::from_le_bytes(body[8..16].try_into().unwrap());
                for h in [None, Some(hint)] {
                    assert_eq!(classify::classify(code, h), classify::classify(code, h));
                }
            }
            let _ = classify::parse_time(&text);
        }
    }
});
