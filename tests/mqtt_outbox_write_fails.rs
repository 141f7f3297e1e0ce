//! Acknowledgements the outbox cannot record (the database full, read-only or locked at that
//! moment) are kept and written later, and the events are not published again. Found by
//! `scripts/chaos.sh disk-full`: the MQTT sink logged one error and dropped them, so the rows
//! stayed in the outbox for good (it never emptied after space returned), and the next
//! connection published them all a second time, without `"redelivered": true` — outside the
//! delivery rule (README "Delivery guarantee").
//!
//! Here the database is locked (`BEGIN IMMEDIATE` from another connection, longer than the
//! daemon's 5 s busy timeout) exactly while the broker's acknowledgements arrive: the broker
//! is frozen (SIGSTOP) while events are published to it, the lock is taken, then the broker
//! goes on.

mod common;

use common::broker::{Broker, Recorder};
use common::wait_for;
use gatehouse::sim::net2::{Net2Sim, SimConfig};
use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn query(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn outbox(db: &Path) -> i64 {
    query(
        db,
        "SELECT count(*) FROM mqtt_outbox WHERE acked_at IS NULL",
    )
}

/// Event messages: the distinct ids, and the copies of an id received before that are not
/// flagged `redelivered`.
fn events(rec: &Recorder) -> (HashSet<String>, Vec<String>) {
    let mut seen = HashSet::new();
    let mut unflagged = Vec::new();
    for m in rec.all().iter().filter(|m| m.topic.ends_with("/event")) {
        let j = m.json();
        let Some(id) = j["id"].as_str() else { continue };
        if !seen.insert(id.to_string()) && j["redelivered"] != true {
            unflagged.push(id.to_string());
        }
    }
    (seen, unflagged)
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_the_outbox_could_not_record_are_kept_and_not_sent_again() {
    let mut broker = Broker::start();
    let rec = Recorder::start(broker.port, "persistent", "gatehouse/#", true).await;
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    sim.seed_history(
        100,
        sim.local_now() - chrono::Duration::hours(1),
        Duration::from_secs(1),
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let cfg = dir.path().join("config.yaml");
    let log = dir.path().join("daemon.log");
    std::fs::write(
        &cfg,
        format!(
            "{}mqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gatehouse-ack-write\n",
            common::config_text(&sim, &db, "    live: false\n", ""),
            broker.port
        ),
    )
    .unwrap();
    let _daemon = Daemon(
        Command::new(BIN)
            .args(["run", "-c"])
            .arg(&cfg)
            .env("GATEHOUSE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("the history published", Duration::from_secs(60), || {
        events(&rec).0.len() >= 100
    })
    .await;
    wait_for("the outbox empty", Duration::from_secs(30), || {
        outbox(&db) == 0
    })
    .await;

    // Events stored and handed to a broker that does not answer yet.
    broker.pause();
    let before = query(&db, "SELECT count(*) FROM events");
    let mut pushed = 0;
    while pushed < 50 {
        pushed += sim.push_random();
    }
    wait_for("the new events stored", Duration::from_secs(30), || {
        query(&db, "SELECT count(*) FROM events") >= before + pushed as i64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(outbox(&db) > 0, "events wait for the frozen broker");

    // The database refuses writes while the acknowledgements arrive.
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.busy_timeout(Duration::from_secs(10)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    broker.resume();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        "an acknowledgement write to fail",
        Duration::from_secs(20),
        || text().contains("unable to mark acknowledged events in the outbox"),
    )
    .await;
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);

    // Written once the database takes writes again, with no new traffic to trigger it.
    wait_for(
        "the outbox empty after the database is writable again",
        Duration::from_secs(20),
        || outbox(&db) == 0,
    )
    .await;

    // The next connection (a clean broker restart) sends nothing again.
    let (ids, _) = events(&rec);
    let received = rec.all().len();
    broker.restart();
    wait_for(
        "the daemon connected again",
        Duration::from_secs(30),
        || rec.all().len() > received,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, unflagged) = events(&rec);
    assert_eq!(
        ids.len(),
        query(&db, "SELECT count(*) FROM events") as usize,
        "every stored event published"
    );
    assert_eq!(after, ids, "no new event ids after the restart");
    assert_eq!(
        unflagged,
        Vec::<String>::new(),
        "copies not flagged redelivered"
    );
}
