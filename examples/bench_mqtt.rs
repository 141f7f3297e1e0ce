//! MQTT benchmarks against a real Mosquitto started here on a free port.
//!
//! - Latency: the simulator emits a live event → a subscriber receives it on
//!   `gatehouse/door/<id>/event`; p50/p99 over N events, beside a bare publish → subscribe
//!   through the same broker with the same subscriber.
//! - Throughput: a 100,000-event backlog waiting in the outbox (stored while the broker was
//!   down) drained to MQTT QoS 1 once the broker is up, first to last message at the
//!   subscriber; beside a plain rumqttc QoS 1 publisher of as many similar-sized messages.
//!
//! `cargo run --release --example bench_mqtt -- [latency-samples] [backlog]`

#[path = "common/mod.rs"]
mod common;

use common::{Log, free_port, pct, subscriber};
use gatehouse::app::App;
use gatehouse::sim::net2::{Net2Sim, SimConfig, SimEvent};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use std::time::{Duration, Instant};

async fn wait_count(log: &Log, n: usize, prefix: &str) {
    while log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, t, _)| t.starts_with(prefix))
        .count()
        < n
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let samples: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let backlog: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("m.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 100\n")).unwrap();
    let mut broker = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .spawn()
        .expect("mosquitto");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }

    // ---- latency ----
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    let d = SimConfig::default();
    let yaml = |db: &std::path::Path, live: bool| {
        format!(
            "version: 1\nlog: {{ level: warn }}\nstorage: {{ path: {} }}\nsources:\n  net2:\n    url: {}\n    username: {}\n    password: {}\n    client_id: {}\n    live: {live}\n    initial_backfill: 7d\n    page_size: 1000\nmqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: bench-{}\ndoors:\n  6612642: {{}}\n",
            db.display(),
            sim.base_url(),
            d.username,
            d.password,
            d.client_id,
            rand::random::<u32>()
        )
    };
    let cfg =
        gatehouse::config::load_str(&yaml(&dir.path().join("lat.db"), true), &|_| None).unwrap();
    let app = App::start(cfg, None, None).await.unwrap();
    let log = subscriber(port, "gatehouse/door/6612642/event").await;
    while sim.websocket_count() == 0 || sim.stats().subscriptions.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut gh = Vec::new();
    for i in 0..samples {
        let before = log.lock().unwrap().len();
        let t = Instant::now();
        sim.push_event(SimEvent::new(20, 6612642).user(if i % 2 == 0 { 8 } else { 12 }));
        while log.lock().unwrap().len() == before {
            tokio::task::yield_now().await;
        }
        let got = log.lock().unwrap()[before].0;
        gh.push((got - t).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.shutdown().await;
    // Bare publish → subscribe through the same broker.
    let bare_log = subscriber(port, "bench/bare").await;
    let (pc, mut pel) = AsyncClient::new(MqttOptions::new("bench-pub", "127.0.0.1", port), 1000);
    tokio::spawn(async move { while pel.poll().await.is_ok() {} });
    let payload = vec![b'x'; 300];
    let mut bare = Vec::new();
    for _ in 0..samples {
        let before = bare_log.lock().unwrap().len();
        let t = Instant::now();
        pc.publish("bench/bare", QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
        while bare_log.lock().unwrap().len() == before {
            tokio::task::yield_now().await;
        }
        bare.push((bare_log.lock().unwrap()[before].0 - t).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "latency over {samples} events (ms): gatehouse live event -> subscriber p50 {:.2} p99 {:.2}; bare publish -> subscriber p50 {:.2} p99 {:.2}; added p99 {:.2}",
        pct(gh.clone(), 0.5),
        pct(gh.clone(), 0.99),
        pct(bare.clone(), 0.5),
        pct(bare.clone(), 0.99),
        pct(gh, 0.99) - pct(bare, 0.99)
    );

    // ---- throughput: a backlog waiting in the outbox (the broker was down) drains ----
    let sim2 = Net2Sim::start(SimConfig::default()).await.unwrap();
    let start = sim2.local_now() - chrono::Duration::milliseconds(backlog as i64 * 10 + 60_000);
    sim2.seed_history(backlog, start, Duration::from_millis(10));
    let down_port = free_port();
    let yaml2 = yaml(&dir.path().join("tp.db"), false)
        .replace(&sim.base_url(), &sim2.base_url())
        .replace(&format!("port: {port}"), &format!("port: {down_port}"));
    let cfg = gatehouse::config::load_str(&yaml2, &|_| None).unwrap();
    let app = App::start(cfg, None, None).await.unwrap();
    let tp_db = rusqlite::Connection::open(dir.path().join("tp.db")).unwrap();
    while tp_db
        .query_row(
            "SELECT count(*) FROM mqtt_outbox WHERE acked_at IS NULL",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
        < backlog as i64
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The broker comes (back) up on the port gatehouse has been trying.
    let conf2 = dir.path().join("m2.conf");
    std::fs::write(&conf2, format!("listener {down_port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 100\n")).unwrap();
    let mut broker2 = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf2)
        .spawn()
        .expect("mosquitto");
    while std::net::TcpStream::connect(("127.0.0.1", down_port)).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let tlog = subscriber(down_port, "gatehouse/door/+/event").await;
    wait_count(&tlog, backlog, "gatehouse/").await;
    let first_last = |log: &Log| {
        let l = log.lock().unwrap();
        l.last().unwrap().0 - l.first().unwrap().0
    };
    let gt = first_last(&tlog);
    app.shutdown().await;
    let _ = broker2.kill();
    let _ = broker2.wait();
    let plog = subscriber(port, "bench/tp").await;
    let body = vec![b'x'; 380];
    for i in 0..backlog {
        // The client's queue is bounded: publish awaits room, like any QoS 1 publisher.
        pc.publish("bench/tp", QoS::AtLeastOnce, false, body.clone())
            .await
            .unwrap();
        if i % 10_000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    wait_count(&plog, backlog, "bench/tp").await;
    let pt = first_last(&plog);
    let rate = |d: Duration| backlog as f64 / d.as_secs_f64();
    println!(
        "throughput {backlog} events QoS 1, first to last at the subscriber: gatehouse outbox drain {:.2} s, {:.0} msg/s; plain rumqttc publisher {:.2} s, {:.0} msg/s; ratio {:.2}",
        gt.as_secs_f64(),
        rate(gt),
        pt.as_secs_f64(),
        rate(pt),
        rate(gt) / rate(pt)
    );
    let _ = broker.kill();
    let _ = broker.wait();
}
