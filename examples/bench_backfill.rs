//! Backfill throughput: the Net2 simulator holds N events (default 100,000); measure events/s
//! from daemon start until all are in SQLite. Beside it, in the same run, a fetch-only client
//! pages through the same events with the same queries and parses them, storing nothing: the
//! ceiling the simulator and HTTP allow on this machine.
//!
//! `cargo run --release --example bench_backfill -- 100000`

use gatehouse::app::App;
use gatehouse::sim::net2::{Net2Sim, SimConfig};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    let start = sim.local_now() - chrono::Duration::milliseconds(n as i64 * 10 + 60_000);
    sim.seed_history(n, start, Duration::from_millis(10));
    let d = SimConfig::default();

    // Fetch-only reference.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let t = Instant::now();
    let tok: serde_json::Value = http
        .post(format!("{}/api/v1/authorization/tokens", sim.base_url()))
        .form(&[
            ("grant_type", "password"),
            ("username", &d.username),
            ("password", &d.password),
            ("client_id", &d.client_id),
            ("scope", "offline_access"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = format!("bearer {}", tok["access_token"].as_str().unwrap());
    let mut since = start.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
    let mut seen = std::collections::HashSet::new();
    loop {
        let body = http
            .get(format!("{}/api/v1/events", sim.base_url()))
            .query(&[
                ("where", format!("eventTime>='{since}'")),
                ("orderBy", "eventTime ASC".into()),
                ("rowCount", "1000".into()),
            ])
            .header("Authorization", &bearer)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.is_empty() {
            break;
        }
        let page: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        for e in &page {
            seen.insert(e["id"].as_i64().unwrap());
        }
        let last = page.last().unwrap()["eventTime"].as_str().unwrap();
        since = last[..23].to_string();
        if page.len() < 1000 {
            break;
        }
    }
    let fetch = t.elapsed();
    assert_eq!(seen.len(), n);

    // The daemon.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let yaml = format!(
        "version: 1\nstorage:\n  path: {}\nsources:\n  net2:\n    url: {}\n    username: {}\n    password: {}\n    client_id: {}\n    live: false\n    initial_backfill: 7d\n",
        db.display(),
        sim.base_url(),
        d.username,
        d.password,
        d.client_id
    );
    let cfg = gatehouse::config::load_str(&yaml, &|_| None).unwrap();
    let t = Instant::now();
    let app = App::start(cfg, None, None).await.unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    loop {
        let c: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        if c as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let daemon = t.elapsed();
    app.shutdown().await;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("events: {n}");
    println!(
        "fetch-only (HTTP + JSON, no storage): {:.2} s, {:.0} events/s",
        fetch.as_secs_f64(),
        rate(fetch)
    );
    println!(
        "gatehouse backfill into SQLite:       {:.2} s, {:.0} events/s",
        daemon.as_secs_f64(),
        rate(daemon)
    );
    println!(
        "ratio gatehouse / fetch-only time:    {:.2}",
        daemon.as_secs_f64() / fetch.as_secs_f64()
    );
}
