//! Hikvision benchmarks.
//!
//! - Alarm latency: the simulator writes an `active` part on the alert stream → the retained
//!   state `ON` arrives at a subscriber of a real Mosquitto (started here on a free port);
//!   p50/p99, beside a bare publish → subscribe through the same broker and subscriber.
//! - Parser throughput: the real captures (camera, PTZ, NVR) framed as a camera (CRLF,
//!   Content-Length) and as an NVR (bare LF, no Content-Length, duplicated boundaries), fed
//!   in 1,460-byte reads (one TCP segment) to the multipart parser and the alert XML parser.
//! - CPU: 16 cameras replaying the PTZ capture (about three alerts a second each, the real
//!   rate) in a child process; the daemon's CPU time over the window, as percent of one core,
//!   beside the same daemon with the same 16 streams carrying heartbeats only.
//!
//! `cargo run --release --example bench_hikvision -- [latency-samples] [cpu-seconds]`

#[path = "common/mod.rs"]
mod common;

use common::{Log, cpu_self, free_port, pct, subscriber};
use gatehouse::app::App;
use gatehouse::sim::hikvision::{HikSim, HikSimConfig, Personality, capture_bodies};
use gatehouse::sources::hikvision::{alert, multipart::Parser};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CAPTURES: [&str; 3] = [
    include_str!("../tests/fixtures/hikvision/hiksink_cam_sequence_first140.jsonl"),
    include_str!("../tests/fixtures/hikvision/hiksink_ptz_sequence_first160.jsonl"),
    include_str!("../tests/fixtures/hikvision/hiksink_nvr_sequence_first200.jsonl"),
];

fn camera_yaml(port: u16, db: &std::path::Path, urls: &[String]) -> String {
    let mut y = format!(
        "version: 1\nlog: {{ level: warn }}\nstorage: {{ path: {} }}\nmqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: bench-{}\nsources:\n  hikvision:\n",
        db.display(),
        rand::random::<u32>()
    );
    for (i, u) in urls.iter().enumerate() {
        y.push_str(&format!(
            "    - {{ id: cam{i}, url: \"{u}\", username: admin, password: sim-hik-pass }}\n"
        ));
    }
    y
}

/// Child process: 16 camera simulators; prints their URLs, then streams (`replay`) or only
/// heartbeats (`idle`) until killed.
async fn child(mode: &str, n: usize) {
    let mut sims = Vec::new();
    for _ in 0..n {
        sims.push(Arc::new(
            HikSim::start(HikSimConfig {
                personality: Personality::ptz(),
                ..Default::default()
            })
            .await
            .unwrap(),
        ));
    }
    for s in &sims {
        println!("{}", s.base_url());
    }
    println!("ready");
    if mode == "replay" {
        let ptz = capture_bodies(CAPTURES[1]);
        for s in sims {
            let ptz = ptz.clone();
            tokio::spawn(async move {
                while s.stream_count() == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                loop {
                    // The capture is 53 s long: stamp each round as the device would now.
                    let now = chrono::Local::now().fixed_offset();
                    let first = alert::parse_time("2021-07-02T15:39:35+08:00").unwrap();
                    let shifted: Vec<String> = ptz
                        .iter()
                        .map(|b| {
                            let t = b
                                .split("<dateTime>")
                                .nth(1)
                                .unwrap()
                                .split('<')
                                .next()
                                .unwrap();
                            let at = now + (alert::parse_time(t).unwrap() - first);
                            b.replace(t, &at.format("%Y-%m-%dT%H:%M:%S%:z").to_string())
                        })
                        .collect();
                    s.replay(shifted, 1.0).await.unwrap();
                }
            });
        }
    }
    std::future::pending::<()>().await;
}

async fn cpu_run(port: u16, dir: &std::path::Path, mode: &str, secs: u64) -> (f64, usize) {
    let mut sims = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--child", mode])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut urls = Vec::new();
    for line in std::io::BufReader::new(sims.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "ready" {
            break;
        }
        urls.push(line);
    }
    let cfg = gatehouse::config::load_str(
        &camera_yaml(port, &dir.join(format!("{mode}.db")), &urls),
        &|_| None,
    )
    .unwrap();
    let log = subscriber(port, "gatehouse/camera/+/ch1/alarm/vmd").await;
    let app = App::start(cfg, None, None).await.unwrap();
    // Settle: streams open, discovery published.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c0, t0) = (cpu_self(), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (c1, t1) = (cpu_self(), Instant::now());
    let states = log.lock().unwrap().len();
    app.shutdown().await;
    let _ = sims.kill();
    let _ = sims.wait();
    ((c1 - c0) / (t1 - t0).as_secs_f64() * 100.0, states)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&args[2], 16).await;
    }
    let samples: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let cpu_secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(60);

    // ---- parser throughput ----
    let mut camera = Vec::new();
    let mut nvr = Vec::new();
    let mut parts = 0usize;
    for c in CAPTURES {
        for b in capture_bodies(c) {
            camera.extend_from_slice(
                format!(
                    "--boundary\r\nContent-Type: application/xml; charset=\"UTF-8\"\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                )
                .as_bytes(),
            );
            let lf = b.replace("\r\n", "\n");
            nvr.extend_from_slice(
                format!("\n--hikboundary\n--hikboundary\nContent-Type: application/xml; charset=\"UTF-8\"\n\n{lf}\n").as_bytes(),
            );
            parts += 1;
        }
    }
    for (name, stream, boundary) in [
        ("camera", &camera, "boundary"),
        ("nvr", &nvr, "hikboundary"),
    ] {
        let rounds = (64 << 20) / stream.len() + 1;
        let t = Instant::now();
        let (mut n, mut ok) = (0usize, 0usize);
        for _ in 0..rounds {
            let mut p = Parser::new(boundary, 1 << 20);
            for chunk in stream.chunks(1460) {
                for part in p.push(chunk) {
                    n += 1;
                    if alert::parse(&part.unwrap().body).is_ok() {
                        ok += 1;
                    }
                }
            }
            for part in p.finish() {
                n += 1;
                if alert::parse(&part.unwrap().body).is_ok() {
                    ok += 1;
                }
            }
        }
        let el = t.elapsed().as_secs_f64();
        assert_eq!(n, rounds * parts, "{name}: every part");
        assert_eq!(ok, n, "{name}: every alert parses");
        println!(
            "parser {name} framing: {:.1} MB in {:.3} s = {:.0} MB/s, {:.0} alerts/s (multipart + XML)",
            (rounds * stream.len()) as f64 / 1e6,
            el,
            (rounds * stream.len()) as f64 / 1e6 / el,
            n as f64 / el
        );
    }

    // ---- broker ----
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = std::process::Command::new("mosquitto")
        .args(["-p", &port.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }

    // ---- alarm latency ----
    let cam = HikSim::start(HikSimConfig::default()).await.unwrap();
    let cfg = gatehouse::config::load_str(
        &camera_yaml(port, &dir.path().join("lat.db"), &[cam.base_url()]),
        &|_| None,
    )
    .unwrap();
    let app = App::start(cfg, None, None).await.unwrap();
    let log = subscriber(port, "gatehouse/camera/cam0/ch1/alarm/vmd").await;
    while cam.stream_count() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let wait_for = |log: &Log, before: usize, want: &'static str| {
        let log = log.clone();
        async move {
            loop {
                if let Some(at) = log.lock().unwrap()[before..]
                    .iter()
                    .find(|(_, _, p)| p == want.as_bytes())
                    .map(|m| m.0)
                {
                    return at;
                }
                tokio::task::yield_now().await;
            }
        }
    };
    let mut gh = Vec::new();
    for _ in 0..samples {
        let before = log.lock().unwrap().len();
        let t = Instant::now();
        cam.push_alert(1, "VMD", "active");
        gh.push((wait_for(&log, before, "ON").await - t).as_secs_f64() * 1000.0);
        let before = log.lock().unwrap().len();
        cam.push_alert(1, "VMD", "inactive");
        wait_for(&log, before, "OFF").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.shutdown().await;
    let bare_log = subscriber(port, "bench/bare").await;
    let (pc, mut pel) = AsyncClient::new(MqttOptions::new("bench-pub", "127.0.0.1", port), 1000);
    tokio::spawn(async move { while pel.poll().await.is_ok() {} });
    let mut bare = Vec::new();
    for _ in 0..samples {
        let before = bare_log.lock().unwrap().len();
        let t = Instant::now();
        pc.publish("bench/bare", QoS::AtLeastOnce, true, "ON")
            .await
            .unwrap();
        bare.push((wait_for(&bare_log, before, "ON").await - t).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "alarm latency over {samples} alarms (ms): sim writes `active` -> state ON at subscriber p50 {:.2} p99 {:.2}; bare publish -> subscriber p50 {:.2} p99 {:.2}; added p99 {:.2}",
        pct(gh.clone(), 0.5),
        pct(gh.clone(), 0.99),
        pct(bare.clone(), 0.5),
        pct(bare.clone(), 0.99),
        pct(gh, 0.99) - pct(bare, 0.99)
    );

    // ---- CPU, 16 streaming channels vs 16 heartbeat-only streams ----
    let (busy, states) = cpu_run(port, dir.path(), "replay", cpu_secs).await;
    let (idle, _) = cpu_run(port, dir.path(), "idle", cpu_secs).await;
    let per_s = 16.0 * 160.0 / 53.0;
    println!(
        "cpu over {cpu_secs} s: 16 cameras replaying the PTZ capture (~{per_s:.0} alerts/s) {busy:.2}% of one core ({states} state messages); same 16 streams with heartbeats only {idle:.2}%"
    );
    let _ = broker.kill();
    let _ = broker.wait();
}
