//! No event lost, in order per door, and sent twice only by the redelivery rule: 12,000 events
//! drained to MQTT while the broker is restarted (SIGTERM: nothing twice), the broker is killed
//! with SIGKILL (at most what was acknowledged in the last second, and only what no consumer
//! was seen to receive), and the daemon is killed with SIGKILL, each mid-burst. Every copy
//! after the first is flagged `"redelivered": true`, and `seq` has no gap. The subscriber
//! keeps a persistent session, so what the broker accepted while it was away is still
//! delivered.

mod common;

use common::broker::{Broker, Recorder};
use common::wait_for;
use gatehouse::sim::net2::{Net2Sim, SimConfig};
use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const N: usize = 12_000;

fn spawn_daemon(cfg: &std::path::Path) -> Child {
    Command::new(BIN)
        .args(["run", "-c"])
        .arg(cfg)
        .env(
            "GATEHOUSE_LOG",
            std::env::var("TEST_DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(cfg.with_extension("log"))
                .unwrap(),
        )
        .spawn()
        .unwrap()
}

/// Messages for an id already received, and whether each is flagged `redelivered` (sent
/// again by gatehouse). A persistent QoS 1 session also gets repeats from the broker itself:
/// what was in flight to it when the broker stopped (Mosquitto does not always set DUP).
fn repeats(rec: &Recorder) -> Vec<(String, bool)> {
    let mut seen = HashSet::new();
    rec.all()
        .iter()
        .map(|m| m.json())
        .filter_map(|j| {
            let id = j["id"].as_str()?.to_string();
            (!seen.insert(id.clone())).then(|| (id, j["redelivered"] == true))
        })
        .collect()
}

/// Distinct events first received in the second before `t`.
fn first_received_within_1s_before(rec: &Recorder, t: std::time::Instant) -> usize {
    let mut seen = HashSet::new();
    rec.all()
        .iter()
        .filter(|m| {
            let id = m.json()["id"].as_str().unwrap_or("").to_string();
            seen.insert(id) && m.at <= t && t.duration_since(m.at) <= Duration::from_secs(1)
        })
        .count()
}

fn unique_ids(rec: &Recorder) -> HashSet<String> {
    rec.all()
        .iter()
        .filter_map(|m| m.json()["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_exactly_once_per_id_across_broker_restart_and_daemon_kill() {
    let mut broker = Broker::start();
    // A consumer with a persistent session (nothing missed while the broker is away: the
    // no-loss check), and one with a clean session as Home Assistant's (what it receives
    // twice is what gatehouse sent twice).
    let rec = Recorder::start(broker.port, "persistent", "gatehouse/door/+/event", true).await;
    let ha = Recorder::start(broker.port, "ha-like", "gatehouse/door/+/event", false).await;
    let avail = Recorder::start(broker.port, "availability", "gatehouse/bridge/state", false).await;
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    let start = sim.local_now() - chrono::Duration::hours(3);
    sim.seed_history(N, start, Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    let text = format!(
        "{}mqtt:\n  host: 127.0.0.1\n  port: {}\n  keep_alive: 5s\n  client_id: gatehouse-exactly-once\n",
        common::config_text(
            &sim,
            &dir.path().join("g.db"),
            "    live: false\n    page_size: 500\n",
            ""
        ),
        broker.port
    );
    std::fs::write(&cfg, text).unwrap();

    let mut daemon = spawn_daemon(&cfg);
    wait_for("some events delivered", Duration::from_secs(60), || {
        unique_ids(&rec).len() >= 500
    })
    .await;
    // Broker restart mid-burst (SIGTERM): it delivered what it acknowledged, nothing twice.
    broker.restart();
    let after_restart = unique_ids(&rec).len();
    wait_for("more after broker restart", Duration::from_secs(60), || {
        unique_ids(&rec).len() > after_restart + 500 || unique_ids(&rec).len() == N
    })
    .await;
    let graceful = repeats(&ha);
    assert_eq!(
        graceful,
        [],
        "nothing received twice across a clean broker restart"
    );
    // Broker killed mid-burst: what it acknowledged but had not delivered is gone with it;
    // gatehouse sends again what it had acknowledged in the last second and the delivery
    // watcher did not receive.
    let before_kill = unique_ids(&rec).len();
    let killed_at = std::time::Instant::now();
    broker.kill9();
    let last_second = first_received_within_1s_before(&ha, killed_at);
    broker.start_again();
    wait_for("more after broker kill", Duration::from_secs(60), || {
        unique_ids(&rec).len() > before_kill + 500 || unique_ids(&rec).len() == N
    })
    .await;
    let killed = repeats(&ha);
    assert!(
        killed.len() <= last_second,
        "{} received twice across a broker kill; {last_second} events arrived in its last second",
        killed.len()
    );
    assert!(
        killed.iter().all(|(_, flagged)| *flagged),
        "a repeat not flagged redelivered: {killed:?}"
    );
    // Daemon killed mid-burst: no clean shutdown, no goodbye.
    let at_kill = unique_ids(&rec).len();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    wait_for("last will", Duration::from_secs(20), || {
        avail.all().last().is_some_and(|m| m.text() == "offline")
    })
    .await;
    let mut daemon = spawn_daemon(&cfg);
    wait_for("all events delivered", Duration::from_secs(120), || {
        unique_ids(&rec).len() >= N
    })
    .await;
    wait_for("online again", Duration::from_secs(20), || {
        avail.all().last().is_some_and(|m| m.text() == "online")
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    daemon.wait().unwrap();

    let msgs = rec.all();
    let ids = unique_ids(&rec);
    assert_eq!(ids.len(), N, "every event, once per id");
    // The simulator numbers its events consecutively: no gap anywhere.
    let mut nums: Vec<i64> = ids
        .iter()
        .map(|i| i.trim_start_matches("net2:").parse().unwrap())
        .collect();
    nums.sort_unstable();
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap in the delivered event ids"
    );
    // In order per door: the first copy of each event arrives in event order.
    let mut seen = HashSet::new();
    let mut per_door: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for m in &msgs {
        let j = m.json();
        let id = j["id"].as_str().unwrap().to_string();
        if seen.insert(id.clone()) {
            let n: i64 = id.trim_start_matches("net2:").parse().unwrap();
            per_door
                .entry(j["door"]["id"].as_i64().unwrap_or(0))
                .or_default()
                .push(n);
        }
    }
    for (door, seq) in &per_door {
        assert!(
            seq.windows(2).all(|w| w[0] < w[1]),
            "door {door} out of order"
        );
    }
    let dupes = msgs.len() - ids.len();
    eprintln!(
        "persistent consumer: {} messages for {N} events ({dupes} repeats, {} flagged redelivered); clean consumer: {} received twice across the broker restart, {} across the broker kill ({last_second} in its last second); daemon killed at {at_kill}",
        msgs.len(),
        repeats(&rec).iter().filter(|(_, ours)| *ours).count(),
        graceful.len(),
        killed.len()
    );
    // `seq` numbers every event: no gap, one per id.
    let mut seqs: Vec<i64> = msgs
        .iter()
        .filter_map(|m| m.json()["seq"].as_i64())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    seqs.dedup();
    assert_eq!(seqs.len(), N, "one seq per event");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "a gap in seq");
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap_or_default();
    if let Ok(p) = std::env::var("TEST_DAEMON_LOG_COPY") {
        let _ = std::fs::write(&p, &log);
        let _ = std::fs::copy(dir.path().join("g.db"), format!("{p}.db"));
    }
    let total: i64 = rusqlite::Connection::open(dir.path().join("g.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM mqtt_outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        h_outbox(&dir),
        0,
        "outbox empty after a clean stop ({total} rows); daemon log:\n{}",
        log.chars()
            .rev()
            .take(3000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    );
}

fn h_outbox(dir: &tempfile::TempDir) -> i64 {
    let c = rusqlite::Connection::open(dir.path().join("g.db")).unwrap();
    c.query_row(
        "SELECT count(*) FROM mqtt_outbox WHERE acked_at IS NULL",
        [],
        |r| r.get(0),
    )
    .unwrap()
}
