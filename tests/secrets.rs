//! PINs, phone numbers, custom fields and passwords never leave the process: not in logs
//! (at trace level), not on the bus, not in the database. The simulator serves the fixture
//! users, which carry them in clear text as the real server does.

mod common;

use common::{Harness, wait_for};
use gatehouse::sim::net2::{SimConfig, SimEvent};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `needle` as a whole token (not inside a longer number such as a timestamp or a port).
fn contains_token(hay: &[u8], needle: &[u8]) -> bool {
    let word = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    hay.windows(needle.len()).enumerate().any(|(i, w)| {
        w == needle
            && !word(i.checked_sub(1).and_then(|j| hay.get(j)))
            && !word(hay.get(i + needle.len()))
    })
}

/// Values from tests/fixtures/net2/users.json that must never be seen outside.
fn forbidden() -> Vec<String> {
    let users: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("fixtures/net2/users.json")).unwrap();
    let mut out = vec![SimConfig::default().password];
    for u in users {
        out.push(u["pin"].as_str().unwrap().to_string());
        out.push(u["telephone"].as_str().unwrap().to_string());
        for f in u["customFields"].as_array().unwrap() {
            out.push(f["value"].as_str().unwrap().to_string());
        }
    }
    assert!(out.len() >= 7);
    out
}

#[test]
fn pins_phones_and_passwords_never_leave_the_process() {
    let buf = Buf::default();
    let writer = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(sub);
    // A current-thread runtime keeps every task on this thread, under the capturing logger.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bus_dump = rt.block_on(async {
        let mut h = Harness::new(SimConfig::default(), "").await;
        h.start().await;
        let mut watch = h.app().bus.watch();
        wait_for("live socket", Duration::from_secs(20), || {
            h.sim.websocket_count() == 1
        })
        .await;
        for user in [8, 12, 19] {
            h.sim
                .push_event(SimEvent::new(26, 6612642).user(user).token_type(1));
        }
        wait_for("stored", Duration::from_secs(20), || {
            h.query_i64("SELECT count(*) FROM events WHERE user_id IN (8, 12, 19)") >= 3
        })
        .await;
        h.stop().await;
        let mut dump = String::new();
        while let Ok(m) = watch.try_recv() {
            dump.push_str(&format!("{m:?}\n"));
        }
        let db = std::fs::read(h.db()).unwrap();
        let wal = std::fs::read(h.db().with_extension("db-wal")).unwrap_or_default();
        let names = h.query_i64("SELECT count(*) FROM events WHERE user_name = 'Mette Kragh Holm'");
        assert_eq!(names, 1, "names are resolved from the user list");
        (dump, db, wal)
    });
    let (dump, db, wal) = bus_dump;
    let logs = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("Net2 user names refreshed"),
        "the user list was fetched"
    );
    assert!(dump.contains("AccessGranted"), "the bus carried the events");
    for s in forbidden() {
        let needle = s.as_bytes();
        let hit = logs.lines().find(|l| contains_token(l.as_bytes(), needle));
        assert!(hit.is_none(), "{s:?} appears in the logs: {hit:?}");
        assert!(
            !contains_token(dump.as_bytes(), needle),
            "{s:?} appears on the bus"
        );
        for (what, bytes) in [("database", &db), ("WAL", &wal)] {
            assert!(
                !contains_token(bytes, needle),
                "{s:?} appears in the {what}"
            );
        }
    }
    for key in ["\"pin\":", "\"telephone\":", "customFields"] {
        assert!(!logs.contains(key) && !dump.contains(key), "{key} leaked");
        assert!(
            !db.windows(key.len()).any(|w| w == key.as_bytes())
                && !wal.windows(key.len()).any(|w| w == key.as_bytes()),
            "{key} stored"
        );
    }
}
