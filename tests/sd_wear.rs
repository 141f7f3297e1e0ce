//! SD-card wear (issue 18): a Pi's database lives on its SD card. The -wal file is bounded
//! after a backfill, and an idle daemon commits nothing to its database.

mod common;

use common::{Harness, wait_for};
use gatehouse::model::{Event, EventKind, Via};
use gatehouse::sim::net2::{SimConfig, SimEvent};
use gatehouse::storage::{Store, WAL_SIZE_LIMIT, Write};
use std::time::Duration;

fn event(n: i64) -> Write {
    let time = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00+01:00").unwrap()
        + chrono::Duration::seconds(n);
    Write::Event(Box::new(Event {
        id: format!("net2:{n}"),
        source: "net2".into(),
        source_id: Some(n),
        fingerprint: format!("{}|20|1|1", time.to_rfc3339()),
        time,
        received: chrono::Utc::now(),
        via: Via::Rest,
        door: None,
        user: None,
        kind: EventKind::DoorOpened,
        code: Some(46),
        description: Some("Door opened".into()),
        raw: "{}".into(),
    }))
}

fn wal_len(db: &std::path::Path) -> u64 {
    std::fs::metadata(db.with_extension("db-wal"))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[test]
fn the_wal_file_is_truncated_back_to_its_limit_after_a_reader_held_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let s = Store::open(&db).unwrap();
    s.write_batch(&[event(0)]).unwrap();
    // A long read (an export, `gatehouse events --follow`) holds its snapshot: checkpoints
    // cannot pass it, and the WAL grows through a backfill of 20,000 events in the store
    // sink's largest batches.
    let reader = Store::open_readonly(&db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let n: i64 = reader
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    for b in 0..10 {
        let batch: Vec<Write> = (0..2000).map(|i| event(1 + b * 2000 + i)).collect();
        s.write_batch(&batch).unwrap();
    }
    let largest = wal_len(&db);
    assert!(
        largest > 3 * WAL_SIZE_LIMIT as u64 / 2,
        "the WAL grows past its limit while held ({largest} bytes): else this proves nothing"
    );
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    // Live events after it: a checkpoint completes, the WAL restarts, and is truncated then.
    for n in 0..5 {
        s.write_batch(&[event(100_000 + n)]).unwrap();
    }
    let after = wal_len(&db);
    assert!(
        after <= WAL_SIZE_LIMIT as u64,
        "the -wal file is {after} bytes after the backfill (largest {largest}), over its {WAL_SIZE_LIMIT}-byte limit"
    );
    assert_eq!(s.count_events().unwrap(), 20_006);
}

/// The database's commit counter, as another connection sees it.
fn data_version(c: &rusqlite::Connection) -> i64 {
    c.query_row("PRAGMA data_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_commits_nothing_to_its_database() {
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.start().await;
    wait_for("Net2 synced", Duration::from_secs(15), || {
        h.app().bus.health("net2").is_some_and(|hl| hl.ready)
    })
    .await;
    let c = rusqlite::Connection::open(h.db()).unwrap();
    // Start-up writes (door states, the cursor) end: two polls' worth with no commit.
    let mut v = data_version(&c);
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = data_version(&c);
        if now == v {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "start-up writes never end"
        );
        v = now;
    }
    // Idle: ~10 REST polls and door status polls (every 300/500 ms here, as the harness
    // configures them), and six simulated hours for the clock-driven timers.
    let sizes = |h: &Harness| (std::fs::metadata(h.db()).unwrap().len(), wal_len(&h.db()));
    let before = sizes(&h);
    for _ in 0..6 {
        h.clock.advance(Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        data_version(&c),
        v,
        "the idle daemon committed to its database"
    );
    assert_eq!(
        sizes(&h),
        before,
        "the idle daemon's database files changed size"
    );

    // The same probe sees a commit: one event.
    h.sim.push_event(SimEvent::new(20, 6203980).user(1));
    wait_for("the event committed", Duration::from_secs(10), || {
        data_version(&c) != v
    })
    .await;
    h.stop().await;
}
