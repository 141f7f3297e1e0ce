//! Helpers shared by the benchmarks (`#[path = "common/mod.rs"] mod common;` in each): a free
//! port, an MQTT subscriber that records what it receives, percentiles, and CPU/RSS of a
//! process from /proc. A directory without `main.rs`, so cargo does not take it for an example.
#![allow(dead_code)]

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a subscriber received: (receive time, topic, payload).
pub type Log = Arc<Mutex<Vec<(Instant, String, Vec<u8>)>>>;

/// A subscriber to `filter` on the broker at `127.0.0.1:port`; returns once subscribed.
pub async fn subscriber(port: u16, filter: &str) -> Log {
    let mut o = MqttOptions::new(
        format!("bench-sub-{}", rand::random::<u32>()),
        "127.0.0.1",
        port,
    );
    // Room for a 1080p JPEG (bench_media); the other benchmarks' messages are small.
    o.set_max_packet_size(Some(8 << 20));
    let (c, mut el) = AsyncClient::new(o, 1000);
    let log: Log = Default::default();
    let l = log.clone();
    let f = filter.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    c.subscribe(f.clone(), QoS::AtLeastOnce).await.unwrap()
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => l.lock().unwrap().push((
                    Instant::now(),
                    String::from_utf8_lossy(&p.topic).into_owned(),
                    p.payload.to_vec(),
                )),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    rx.await.unwrap();
    log
}

/// The `p` quantile (0–1) of `v`, nearest rank.
pub fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// utime + stime of a process (`"self"` or a pid), in seconds (fields 14 and 15 of stat(5)).
pub fn cpu_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// utime + stime of this process, in seconds.
pub fn cpu_self() -> f64 {
    cpu_of("self")
}

/// A `/proc/<pid>/status` field in kB (`VmRSS`, `VmHWM`), 0 when absent.
pub fn status_kb(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
