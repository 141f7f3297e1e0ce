//! Media benchmarks (issue 5): snapshots and live HLS against a real 1080p RTSP source.
//!
//! The camera is GStreamer's RTSP server (tests/support/rtsp_server.py) serving the cached
//! 1080p25 GOP-50 High clip (`clip_1080p()`) from the file in a loop, without re-encoding.
//! The daemon is the release binary in a child process (`gatehouse run -c <yaml>`), cameras
//! configured `use_picture: false` with `rtsp_url:` pointing at that server, so RTSP is what is
//! measured; a Mosquitto is started on a free port; Hikvision simulators (in this process,
//! heartbeats only) answer the cameras' ISAPI alert streams.
//!
//! - Snapshot latency: MQTT `gatehouse/camera/cam0/snapshot/set` → JPEG at a subscriber of
//!   `gatehouse/camera/cam0/ch1/snapshot`, alternating with `ffmpeg -rtsp_transport tcp -i URL
//!   -frames:v 1 -y snap.jpg` (process wall time). Cold (no session: `idle_close: 1s` and 2 s
//!   between samples) with the server's pipeline idle (the first client starts it) and with it
//!   already running for another client (what a camera is: the join lands mid-GOP); and with a
//!   running session (a live stream kept open).
//! - Breakdown of a cold snapshot, in this process with the daemon's own `Hub` and decoder:
//!   RTSP DESCRIBE→PLAY, first frame, first keyframe, 1080p decode, JPEG encode.
//! - START → playable playlist: the REST `…/live` call's latency (it answers once the playlist
//!   has a segment), cold (no session) and with the hub already running, beside ffmpeg's
//!   spawn → first playlist with a segment.
//! - HLS CPU and RSS: 1 and 4 live streams (4 cameras on the same server) kept alive by a
//!   player loop (playlist + new segments every 2 s) for the window, vs as many `ffmpeg -c copy
//!   -f hls` processes for the same window; CPU from /proc/<pid>/stat, RSS from VmRSS (the
//!   daemon's RSS added per stream: RSS with N streams minus RSS idle with the same config).
//!
//! - Hikvision camera running (the simulator's RTSP server at 1080p, joined mid-GOP, honouring
//!   ISAPI `requestKeyFrame`): cold snapshot and cold START → playable vs ffmpeg on its URL.
//! - Floor: receiving alone (one RTSP session with the daemon's `Hub` in this process, frames
//!   drained) vs `ffmpeg -c copy -f null`: what any remuxer pays before it writes a byte.
//!
//! - Batched reads: one live stream with `media.batch_reads` on (the default) and off, each
//!   beside ffmpeg (`batch`).
//!
//! - Door pictures and peak RSS (issue 15, `pictures`): Net2 door events on eight doors, each
//!   watched by a channel of a 1080p Hikvision simulator, one door at a time and all eight at
//!   once, cold and running sessions: event → picture latency, the daemon's peak RSS (VmHWM,
//!   restarted before each sample) and its RSS between bursts. First, in this process, where
//!   a decode's memory goes (eight at once through the service's decode queue, one at a time
//!   on several threads without handing memory back, eight at once unbounded).
//!
//! `cargo build --release && cargo run --release --example bench_media -- [snap-samples]
//! [hls-seconds] [snap|hik|pictures|hls|hls1|floor|batch]`; `GATEHOUSE_BIN=<path>` runs
//! another build of the daemon (a before/after comparison); `BENCH_LOG=info` raises the
//! daemons' log level (`warn`).

#[path = "common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../tests/common/rtsp.rs"]
mod rtsp;

use common::{Log, cpu_of, free_port, pct, status_kb, subscriber};
use gatehouse::config::StreamKind;
use gatehouse::media::h264;
use gatehouse::media::hub::{Hub, Recv, Target};
use gatehouse::sim::hikvision::{HikSim, HikSimConfig};
use rtsp::{RtspOpts, RtspServer};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "bench-media-secret-0123456789abcdef";

struct Env {
    broker: u16,
    dir: tempfile::TempDir,
    gst: RtspServer,
    url: String,
    sims: Vec<HikSim>,
    bin: PathBuf,
    /// `media.batch_reads` of the daemons started next.
    batch_reads: std::sync::atomic::AtomicBool,
}

struct Daemon {
    child: std::process::Child,
    pid: String,
    base: String,
    http: reqwest::Client,
    token: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(v: &[f64]) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    format!(
        "p50 {:.0} p90 {:.0} min {:.0} max {:.0} ms (n={})",
        pct(v.to_vec(), 0.5),
        pct(v.to_vec(), 0.9),
        v.iter().cloned().fold(f64::MAX, f64::min),
        v.iter().cloned().fold(0.0, f64::max),
        v.len()
    )
}

/// Sleeps a random 0–2 s (one GOP): samples spaced by fixed sleeps would otherwise lock to the
/// GOP's phase and always wait the same time for a keyframe.
async fn gop_jitter() {
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..2000))).await;
}

fn is_jpeg(b: &[u8]) -> bool {
    b.starts_with(&[0xFF, 0xD8])
}

impl Env {
    /// `idle_close`: of the daemon's RTSP sessions (`1s` unless a phase needs them kept).
    fn yaml(&self, tag: &str, web_port: u16, idle_close: &str, cams: &str) -> String {
        format!(
            "version: 1\nlog: {{ level: {} }}\nstorage: {{ path: {}/{tag}.db }}\nmqtt: {{ host: 127.0.0.1, port: {}, client_id: bench-media-{} }}\nweb: {{ bind: \"127.0.0.1:{web_port}\", jwt_secret: \"{SECRET}\" }}\nmedia: {{ idle_close: {idle_close}, batch_reads: {} }}\nsources:\n  hikvision:\n",
            std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            self.dir.path().display(),
            self.broker,
            rand::random::<u32>(),
            self.batch_reads.load(std::sync::atomic::Ordering::Relaxed)
        ) + cams
    }

    /// A daemon with `cams` cameras (Hikvision simulators for ISAPI) streaming from the
    /// GStreamer server.
    async fn daemon(&self, tag: &str, cams: usize) -> Daemon {
        let lines: String = (0..cams)
            .map(|i| {
                format!(
                    "    - {{ id: cam{i}, url: \"{}\", username: admin, password: sim-hik-pass, use_picture: false, rtsp_url: \"{}\" }}\n",
                    self.sims[i].base_url(),
                    self.url
                )
            })
            .collect();
        self.daemon_with(tag, &lines).await
    }

    async fn daemon_with(&self, tag: &str, cams: &str) -> Daemon {
        self.daemon_idle(tag, "1s", cams).await
    }

    async fn daemon_idle(&self, tag: &str, idle_close: &str, cams: &str) -> Daemon {
        let web_port = free_port();
        let conf = self.dir.path().join(format!("{tag}.yaml"));
        std::fs::write(&conf, self.yaml(tag, web_port, idle_close, cams)).unwrap();
        let stderr = std::fs::File::create(self.dir.path().join(format!("{tag}.log"))).unwrap();
        let child = std::process::Command::new(&self.bin)
            .arg("run")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("gatehouse binary");
        let base = format!("http://127.0.0.1:{web_port}");
        let http = reqwest::Client::new();
        let end = Instant::now() + Duration::from_secs(20);
        while !http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < end, "daemon not up: see {tag}.log");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({ "sub": "bench", "exp": exp }),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        Daemon {
            pid: child.id().to_string(),
            child,
            base,
            http,
            token,
        }
    }
}

impl Daemon {
    /// `GET …/live`: (latency, playlist URL with its token).
    async fn live(&self, cam: &str) -> (Duration, String) {
        let t = Instant::now();
        let r = self
            .http
            .get(format!("{}/api/device/{cam}/channel/1/live", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap();
        let d = t.elapsed();
        assert!(status.is_success(), "live {cam}: {status} {v}");
        (
            d,
            format!("{}{}", self.base, v["hls_url"].as_str().unwrap()),
        )
    }

    async fn stop_live(&self, cam: &str) {
        let r = self
            .http
            .post(format!("{}/api/device/{cam}/channel/1/stop", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    fn cpu(&self) -> f64 {
        cpu_of(&self.pid)
    }

    fn rss_kb(&self) -> u64 {
        status_kb(&self.pid, "VmRSS")
    }

    fn hwm_kb(&self) -> u64 {
        status_kb(&self.pid, "VmHWM")
    }

    /// Start VmHWM again from the current RSS (proc(5), `clear_refs`).
    fn reset_hwm(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").expect("clear_refs");
    }

    fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid])
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > end {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

/// Files a player fetched (playlists and segments, all players together).
static FETCHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A player: every 2 s the playlist, then the init segment once and every segment not fetched
/// yet. Runs until `until` (or aborted); returns (playlists, segments, bytes).
async fn player(http: reqwest::Client, playlist: String, until: Instant) -> (u64, u64, u64) {
    let base = url::Url::parse(&playlist).unwrap();
    let mut seen = std::collections::HashSet::new();
    let (mut lists, mut segs, mut bytes) = (0u64, 0u64, 0u64);
    while Instant::now() < until {
        FETCHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tick = Instant::now();
        if let Ok(r) = http.get(playlist.as_str()).send().await
            && r.status().is_success()
            && let Ok(text) = r.text().await
        {
            lists += 1;
            let mut uris = Vec::new();
            for l in text.lines() {
                if let Some(rest) = l.strip_prefix("#EXT-X-MAP:URI=\"") {
                    uris.push(rest.split('"').next().unwrap().to_string());
                } else if !l.starts_with('#') && !l.trim().is_empty() {
                    uris.push(l.trim().to_string());
                }
            }
            for u in uris {
                if seen.insert(u.clone())
                    && let Ok(r) = http.get(base.join(&u).unwrap()).send().await
                    && let Ok(b) = r.bytes().await
                {
                    FETCHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    segs += 1;
                    bytes += b.len() as u64;
                }
            }
        }
        tokio::time::sleep_until((tick + Duration::from_secs(2)).into()).await;
    }
    (lists, segs, bytes)
}

async fn ffmpeg_snapshot(url: &str, out: &Path) -> f64 {
    let _ = std::fs::remove_file(out);
    let t = Instant::now();
    let st = tokio::process::Command::from(ffmpeg_in(url))
        .args(["-frames:v", "1", "-y"])
        .arg(out)
        .stdin(Stdio::null())
        .status()
        .await
        .expect("ffmpeg");
    let d = ms(t.elapsed());
    assert!(st.success(), "ffmpeg snapshot failed");
    assert!(is_jpeg(&std::fs::read(out).unwrap()), "ffmpeg wrote a JPEG");
    d
}

/// A subscriber of cam0's snapshot topic and a client to command it, once the daemon takes
/// commands (subscribed, RTSP port learnt from adminAccesses); its session then idles out.
async fn commander(env: &Env) -> (Log, AsyncClient) {
    let log = subscriber(env.broker, "gatehouse/camera/cam0/ch1/snapshot").await;
    let (pc, mut pel) = AsyncClient::new(
        MqttOptions::new(
            format!("bench-media-{}", rand::random::<u32>()),
            "127.0.0.1",
            env.broker,
        ),
        100,
    );
    tokio::spawn(async move { while pel.poll().await.is_ok() {} });
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let before = log.lock().unwrap().len();
        press(&pc).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if log.lock().unwrap().len() > before {
            break;
        }
        assert!(Instant::now() < end, "daemon takes no snapshot");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    (log, pc)
}

/// The snapshot command, as the HA button sends it.
async fn press(pc: &AsyncClient) {
    pc.publish(
        "gatehouse/camera/cam0/snapshot/set",
        QoS::AtLeastOnce,
        false,
        "PRESS",
    )
    .await
    .unwrap();
}

/// MQTT command → JPEG at the subscriber, in ms.
async fn our_snapshot(pc: &AsyncClient, log: &Log) -> f64 {
    let before = log.lock().unwrap().len();
    let t = Instant::now();
    press(pc).await;
    let end = t + Duration::from_secs(15);
    loop {
        if let Some((at, _, p)) = log.lock().unwrap().get(before) {
            assert!(is_jpeg(p), "a JPEG on the snapshot topic");
            return ms(*at - t);
        }
        assert!(Instant::now() < end, "no snapshot within 15 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `ffmpeg` reading `url` over RTSP/TCP, quietly; the caller adds the output.
fn ffmpeg_in(url: &str) -> std::process::Command {
    let mut c = std::process::Command::new("ffmpeg");
    c.args([
        "-nostdin",
        "-v",
        "error",
        "-rtsp_transport",
        "tcp",
        "-i",
        url,
    ]);
    c
}

/// An ffmpeg `-c copy -f hls` process writing into `dir`.
fn ffmpeg_hls(url: &str, dir: &Path) -> std::process::Child {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    ffmpeg_in(url)
        .args([
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_list_size",
            "6",
        ])
        .args(["-hls_flags", "delete_segments"])
        .arg(dir.join("index.m3u8"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg")
}

async fn wait_playlist(dir: &Path) -> Instant {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if std::fs::read_to_string(dir.join("index.m3u8")).is_ok_and(|p| p.contains("#EXTINF")) {
            return Instant::now();
        }
        assert!(Instant::now() < end, "ffmpeg wrote no playlist");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn kill(mut c: std::process::Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// A client that keeps the server's pipeline running (a camera encodes whether or not anyone
/// watches): new clients then join mid-GOP.
fn keeper(url: &str) -> std::process::Child {
    ffmpeg_in(url)
        .args(["-c", "copy", "-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg")
}

/// A Hikvision camera (the simulator's RTSP server: 1080p25, GOP 50, ~4 Mbit/s, encoding
/// whether or not anyone watches, so every cold session joins mid-GOP) that honours ISAPI
/// `requestKeyFrame`: cold snapshot and cold START → playable, RTSP derived from the device
/// (`use_picture: false`), beside ffmpeg on the same URL.
async fn hik_running(env: &Env, n: usize) {
    let stream = gatehouse::sim::rtsp::StreamConfig {
        width: 1920,
        height: 1080,
        fps: 25,
        gop: 50,
        seconds: 4,
        bitrate_bps: 4_000_000,
        noise: 0,
    };
    let sim = HikSim::start(HikSimConfig {
        rtsp: Some(gatehouse::sim::rtsp::RtspSimConfig {
            main: stream,
            running_since: Some(Duration::ZERO),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = sim
        .rtsp_url(101)
        .unwrap()
        .replacen("rtsp://", "rtsp://admin:sim-hik-pass@", 1);
    let d = env
        .daemon_with(
            "hik",
            &format!(
                "    - {{ id: cam0, url: \"{}\", username: admin, password: sim-hik-pass, use_picture: false }}\n",
                sim.base_url()
            ),
        )
        .await;
    let (log, pc) = commander(env).await;
    let snap = env.dir.path().join("snap-hik.jpg");
    let (mut ours, mut ff) = (Vec::new(), Vec::new());
    for _ in 0..n {
        gop_jitter().await;
        ours.push(our_snapshot(&pc, &log).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        gop_jitter().await;
        ff.push(ffmpeg_snapshot(&url, &snap).await);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let asked = sim.rtsp().unwrap().stats().key_frame_requests;
    println!(
        "snapshot cold, Hikvision simulator running (mid-GOP join, requestKeyFrame): gatehouse MQTT->JPEG {} | ffmpeg -frames:v 1 {} | ratio p50 {:.2} | key frames asked {asked}",
        summary(&ours),
        summary(&ff),
        pct(ours.clone(), 0.5) / pct(ff.clone(), 0.5)
    );
    let (mut cold, mut fh) = (Vec::new(), Vec::new());
    let ffdir = env.dir.path().join("ff-hik");
    for _ in 0..n {
        gop_jitter().await;
        let (c, _) = d.live("cam0").await;
        cold.push(ms(c));
        d.stop_live("cam0").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        gop_jitter().await;
        let t = Instant::now();
        let c = ffmpeg_hls(&url, &ffdir);
        fh.push(ms(wait_playlist(&ffdir).await - t));
        kill(c);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "START -> playable, Hikvision simulator running (requestKeyFrame): gatehouse REST /live cold {} | ffmpeg -f hls spawn -> playlist with a segment {} | key frames asked {}",
        summary(&cold),
        summary(&fh),
        sim.rtsp().unwrap().stats().key_frame_requests - asked
    );
    d.stop();
}

/// Door events on eight doors, each watched by one channel of a 1080p Hikvision camera (the
/// simulator: 1080p25, GOP 50, encoding whether or not anyone watches, honouring
/// `requestKeyFrame`), `use_picture: false` so every picture is decoded from RTSP; the Net2
/// simulator in this process sends the events live. Latency = the event pushed → its
/// picture's `…/snapshot/meta` at an MQTT subscriber. `idle_close: 5s`: a picture 7 s after
/// the last opens a cold session; one 0.3–2.5 s after it finds the session running (it
/// decodes from the kept GOP's key frame up to the event). Peak RSS = the daemon's VmHWM,
/// started again (`clear_refs`) before each sample.
async fn pictures(env: &Env, n: usize) {
    use gatehouse::sim::net2::{Net2Sim, SimConfig, SimEvent};
    const CHANNELS: u64 = 8;
    const DOOR0: u64 = 1001;
    let net2 = Net2Sim::start(SimConfig::default()).await.unwrap();
    let stream = gatehouse::sim::rtsp::StreamConfig {
        width: 1920,
        height: 1080,
        fps: 25,
        gop: 50,
        seconds: 4,
        bitrate_bps: 4_000_000,
        noise: 0,
    };
    let cam = HikSim::start(HikSimConfig {
        rtsp: Some(gatehouse::sim::rtsp::RtspSimConfig {
            main: stream,
            channels: CHANNELS as u32,
            running_since: Some(Duration::ZERO),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    decode_memory(&cam).await;
    let n2 = SimConfig::default();
    let doors: String = (0..CHANNELS)
        .map(|i| format!("  {}: {{ camera: cam0/{} }}\n", DOOR0 + i, i + 1))
        .collect();
    let meta = subscriber(env.broker, "gatehouse/camera/cam0/+/snapshot/meta").await;
    let d = env
        .daemon_idle(
            "pictures",
            "5s",
            &format!(
                "    - {{ id: cam0, url: \"{}\", username: admin, password: sim-hik-pass, use_picture: false }}\n  net2:\n    url: \"{}\"\n    username: \"{}\"\n    password: \"{}\"\n    client_id: \"{}\"\n    live: true\ndoors:\n{doors}",
                cam.base_url(),
                net2.base_url(),
                n2.username,
                n2.password,
                n2.client_id
            ),
        )
        .await;
    let end = Instant::now() + Duration::from_secs(30);
    while net2.websocket_count() == 0 {
        assert!(
            Instant::now() < end,
            "the daemon never took Net2 live events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Settle (camera info, alert stream, MQTT discovery) before the idle figure.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = d.rss_kb();
    let mb = |kb: u64| kb as f64 / 1024.0;

    let log = env.dir.path().join("pictures.log");
    // Events pushed at once; waits for each one's picture (on its door's channel: live event
    // ids are fingerprints, not known here); their latencies in ms.
    let take = |doors: Vec<u64>| {
        let (net2, meta, log) = (&net2, meta.clone(), log.clone());
        async move {
            let t = Instant::now();
            net2.push_events(
                doors
                    .iter()
                    .map(|&d| SimEvent::new(20, d).user(8))
                    .collect(),
            );
            let topics: Vec<String> = doors
                .iter()
                .map(|d| format!("gatehouse/camera/cam0/ch{}/snapshot/meta", d - DOOR0 + 1))
                .collect();
            let end = t + Duration::from_secs(30);
            let mut lat: Vec<Option<f64>> = vec![None; doors.len()];
            while lat.iter().any(Option::is_none) {
                assert!(
                    Instant::now() < end,
                    "pictures missing after 30 s: {lat:?}; the daemon said: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
                for (at, topic, p) in meta.lock().unwrap().iter().filter(|m| m.0 >= t) {
                    let door_event = serde_json::from_slice::<serde_json::Value>(p)
                        .is_ok_and(|v| v["trigger"] == "door_event");
                    if let Some(k) = topics.iter().position(|x| x == topic)
                        && door_event
                        && lat[k].is_none()
                    {
                        lat[k] = Some(ms(*at - t));
                    }
                }
            }
            lat.into_iter().map(Option::unwrap).collect::<Vec<f64>>()
        }
    };
    let rand_ms = |a: u64, b: u64| Duration::from_millis(rand::random_range(a..b));

    // One door at a time: cold, then running.
    let (mut cold, mut warm, mut hwm1) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        tokio::time::sleep(Duration::from_secs(7) + rand_ms(0, 2000)).await;
        d.reset_hwm();
        cold.extend(take(vec![DOOR0]).await);
        tokio::time::sleep(rand_ms(300, 2500)).await;
        warm.extend(take(vec![DOOR0]).await);
        hwm1.push(mb(d.hwm_kb()));
    }
    let one_rss = mb(d.rss_kb());

    // Eight doors at once, cold then running; RSS once the sessions have closed.
    let (mut bc, mut bw, mut hwm8, mut after) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let all: Vec<u64> = (0..CHANNELS).map(|i| DOOR0 + i).collect();
    for _ in 0..n {
        tokio::time::sleep(Duration::from_secs(7) + rand_ms(0, 2000)).await;
        after.push(mb(d.rss_kb()));
        d.reset_hwm();
        let c = take(all.clone()).await;
        bc.push(c.iter().cloned().fold(0.0, f64::max));
        tokio::time::sleep(rand_ms(300, 2500)).await;
        let w = take(all.clone()).await;
        bw.push(w.iter().cloned().fold(0.0, f64::max));
        hwm8.push(mb(d.hwm_kb()));
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    after.push(mb(d.rss_kb()));
    let f = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "door pictures (1080p, 8 channels; {}): idle RSS {:.1} MB\n  one door, cold session: event->picture {}\n  one door, running session: event->picture {}\n  one door at a time: peak RSS (VmHWM) per cold+running pair max {:.1} MB ({}); RSS after {:.1} MB\n  8 doors at once, cold sessions: last picture {}\n  8 doors at once, running sessions: last picture {}\n  8 doors at once: peak RSS per cold+running burst max {:.1} MB ({})\n  RSS before each burst, sessions closed, and at the end: {} MB",
        env.bin.display(),
        mb(idle),
        summary(&cold),
        summary(&warm),
        hwm1.iter().cloned().fold(0.0, f64::max),
        f(&hwm1),
        one_rss,
        summary(&bc),
        summary(&bw),
        hwm8.iter().cloned().fold(0.0, f64::max),
        f(&hwm8),
        f(&after),
    );
    d.stop();
}

/// Where a picture's memory goes, in this process with the daemon's own decoder: a 1080p GOP
/// of the camera (50 frames from a key frame, what a door picture on a running session may
/// decode) turned into JPEGs, measured as VmHWM over the RSS before (`clear_refs`) and the
/// RSS kept after:
/// - eight at once through `media::decode::Decoders` (the service: one at a time, the freed
///   memory handed back);
/// - one at a time, each on another thread kept alive (as a blocking pool's), nothing handed
///   back: what glibc's per-thread arenas keep;
/// - eight at once on `spawn_blocking` (the service before issue 15).
async fn decode_memory(cam: &HikSim) {
    use gatehouse::media::decode::Decoders;
    let me = || status_kb("self", "VmRSS");
    let hwm = || status_kb("self", "VmHWM");
    let reset = || std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: no preconditions; it only walks the allocator's free lists.
    let trim = || unsafe {
        libc::malloc_trim(0);
    };
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let trim = || {};

    let cancel = tokio_util::sync::CancellationToken::new();
    let group = Arc::new(retina::client::SessionGroup::default());
    let hub = Hub::new(
        "decode-memory",
        1,
        StreamKind::Main,
        Target::new(
            url::Url::parse(&cam.rtsp_url(101).unwrap()).unwrap(),
            Some("admin".into()),
            Some(gatehouse::secret::Secret::new("sim-hik-pass")),
        ),
        Duration::from_millis(100),
        group.clone(),
        cancel.clone(),
    );
    let mut sub = hub.subscribe();
    let mut gop: Vec<bytes::Bytes> = Vec::new();
    while gop.len() < 50 {
        match tokio::time::timeout(Duration::from_secs(10), sub.recv()).await {
            Ok(Some(Recv::Frame(f))) if f.is_key || !gop.is_empty() => gop.push(f.data.clone()),
            Ok(Some(_)) => {}
            _ => panic!("no 1080p GOP from the camera simulator"),
        }
    }
    let params = hub.params().unwrap();
    drop(sub);
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), group.await_teardown()).await;
    let ps = Arc::new(h264::avcc_parameter_sets(&params.extra_data).ok());
    let gop = Arc::new(gop);
    let job = || {
        let (ps, gop) = (ps.clone(), gop.clone());
        move || {
            let (j, size) = h264::units_to_jpeg((*ps).as_deref(), &gop[..], 80, 1920).unwrap();
            assert!(is_jpeg(&j) && size == (1920, 1080));
        }
    };
    let mb = |kb: u64| kb as f64 / 1024.0;
    // (VmHWM over the RSS before, RSS kept after over the RSS before), in MB.
    let mut rows = Vec::new();
    let mut measure = |label: &str, before: u64| {
        rows.push(format!(
            "{label}: peak +{:.1} MB, kept +{:.1} MB",
            mb(hwm().saturating_sub(before)),
            mb(me()) - mb(before)
        ));
    };

    trim();
    let before = me();
    reset();
    let t = Instant::now();
    let d = Decoders::new(gatehouse::media::decode::MAX_DECODES);
    let runs: Vec<_> = (0..8).map(|_| d.run(job())).collect();
    for r in futures_util::future::join_all(runs).await {
        r.unwrap();
    }
    measure(
        &format!("8 at once through Decoders ({:.0} ms)", ms(t.elapsed())),
        before,
    );

    trim();
    let before = me();
    reset();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (tx, rx) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<()>>();
            let j = job();
            let h = std::thread::spawn(move || {
                while let Ok(done) = rx.recv() {
                    j.clone()();
                    let _ = done.send(());
                }
            });
            (tx, h)
        })
        .collect();
    for (tx, _) in &threads {
        let (done, wait) = std::sync::mpsc::channel();
        tx.send(done).unwrap();
        wait.recv().unwrap();
    }
    measure(
        "one at a time on 4 live threads, nothing handed back",
        before,
    );
    for (tx, h) in threads {
        drop(tx);
        h.join().unwrap();
    }

    trim();
    let before = me();
    reset();
    let t = Instant::now();
    let runs: Vec<_> = (0..8).map(|_| tokio::task::spawn_blocking(job())).collect();
    for r in futures_util::future::join_all(runs).await {
        r.unwrap();
    }
    measure(
        &format!(
            "8 at once on spawn_blocking, as before ({:.0} ms)",
            ms(t.elapsed())
        ),
        before,
    );
    trim();
    println!(
        "decode memory, in this process (1080p GOP of 50 frames -> JPEG q80): {}",
        rows.join(" | ")
    );
}

/// What receiving the stream costs before any remuxing, each side for `secs`: one RTSP
/// session with the daemon's own `Hub` (retina) in this process, its frames drained (this
/// process's CPU while idle is measured first and subtracted), and `ffmpeg -c copy -f null`.
async fn floor(env: &Env, secs: u64) {
    let me = std::process::id().to_string();
    let win = Duration::from_secs(secs);
    let (c0, t0) = (cpu_of(&me), Instant::now());
    tokio::time::sleep(win).await;
    let idle = (cpu_of(&me) - c0) / t0.elapsed().as_secs_f64();
    let cancel = tokio_util::sync::CancellationToken::new();
    let group = Arc::new(retina::client::SessionGroup::default());
    let hub = Hub::new(
        "floor",
        1,
        StreamKind::Main,
        Target::new(url::Url::parse(&env.url).unwrap(), None, None),
        Duration::from_millis(100),
        group.clone(),
        cancel.clone(),
    );
    let mut sub = hub.subscribe();
    let drain = tokio::spawn(async move { while sub.recv().await.is_some() {} });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (c0, t0, f0) = (cpu_of(&me), Instant::now(), hub.stats().frames);
    tokio::time::sleep(win).await;
    let wall = t0.elapsed().as_secs_f64();
    let ours = cpu_of(&me) - c0 - idle * wall;
    let frames = hub.stats().frames - f0;
    drain.abort();
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), group.await_teardown()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let k = keeper(&env.url);
    let pid = k.id().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (f0, t1) = (cpu_of(&pid), Instant::now());
    tokio::time::sleep(win).await;
    let theirs = (cpu_of(&pid) - f0) / t1.elapsed().as_secs_f64() * 60.0;
    kill(k);
    println!(
        "floor, receive only ({secs} s): gatehouse Hub (retina) {:.3} s per minute ({frames} frames; this process idle {:.2}% subtracted) | ffmpeg -c copy -f null {theirs:.3} s per minute | ratio {:.2}",
        ours / wall * 60.0,
        idle * 100.0,
        ours / wall * 60.0 / theirs
    );
}

/// A cold snapshot taken apart with the daemon's own pieces: (DESCRIBE→PLAY, first frame,
/// first keyframe, decode, JPEG encode), each in ms from the previous step (the first
/// three from subscribe).
async fn breakdown_once(url: &str) -> [f64; 5] {
    let cancel = tokio_util::sync::CancellationToken::new();
    let group = Arc::new(retina::client::SessionGroup::default());
    let hub = Hub::new(
        "bench",
        1,
        StreamKind::Main,
        Target::new(url::Url::parse(url).unwrap(), None, None),
        Duration::from_millis(100),
        group.clone(),
        cancel.clone(),
    );
    let t0 = Instant::now();
    let mut sub = hub.subscribe();
    while !hub.stats().running {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let play = ms(t0.elapsed());
    let mut first = None;
    let key = loop {
        match tokio::time::timeout(Duration::from_secs(10), sub.recv()).await {
            Ok(Some(Recv::Frame(f))) => {
                first.get_or_insert_with(|| ms(t0.elapsed()));
                if f.is_key {
                    break f;
                }
            }
            Ok(Some(Recv::Missed(_))) => {}
            _ => panic!("no keyframe"),
        }
    };
    let t_key = ms(t0.elapsed());
    let params = hub.params().unwrap();
    drop(sub);
    cancel.cancel();
    let (dec, enc) = tokio::task::spawn_blocking(move || {
        let ps = h264::avcc_parameter_sets(&params.extra_data).ok();
        let t = Instant::now();
        let yuv = h264::decode_last(ps.as_deref(), &[key.data.as_ref()]).unwrap();
        let dec = ms(t.elapsed());
        let t = Instant::now();
        let (j, _) = h264::encode_jpeg(&yuv, 80, 0).unwrap();
        assert!(is_jpeg(&j));
        (dec, ms(t.elapsed()))
    })
    .await
    .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(3), group.await_teardown()).await;
    [play, first.unwrap(), t_key, dec, enc]
}

async fn breakdown(url: &str, n: usize, label: &str) {
    let mut cols: [Vec<f64>; 5] = Default::default();
    for _ in 0..n {
        gop_jitter().await;
        let r = breakdown_once(url).await;
        for (c, v) in cols.iter_mut().zip(r) {
            c.push(v);
        }
        // Let the server tear an unshared pipeline down again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let p = |v: &Vec<f64>| format!("{:.0}/{:.0}", pct(v.clone(), 0.5), pct(v.clone(), 0.9));
    println!(
        "breakdown cold, {label} (p50/p90 ms, n={n}): subscribe->PLAY {} | ->first frame {} | ->first keyframe {} | decode 1080p keyframe {} | JPEG encode q80 {}",
        p(&cols[0]),
        p(&cols[1]),
        p(&cols[2]),
        p(&cols[3]),
        p(&cols[4])
    );
}

async fn snapshots(env: &Env, n: usize) {
    let d = env.daemon("snap", 1).await;
    let (log, pc) = commander(env).await;
    let snap = env.dir.path().join("snap.jpg");

    for (label, keep) in [("server pipeline idle", false), ("camera running", true)] {
        let k = keep.then(|| keeper(&env.url));
        if keep {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let (mut ours, mut ff) = (Vec::new(), Vec::new());
        for _ in 0..n {
            gop_jitter().await;
            ours.push(our_snapshot(&pc, &log).await);
            // idle_close is 1 s: the session is gone (and an unshared pipeline torn down).
            tokio::time::sleep(Duration::from_secs(2)).await;
            gop_jitter().await;
            ff.push(ffmpeg_snapshot(&env.url, &snap).await);
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        println!(
            "snapshot cold, {label}: gatehouse MQTT->JPEG {} | ffmpeg -frames:v 1 {} | ratio p50 {:.2}",
            summary(&ours),
            summary(&ff),
            pct(ours.clone(), 0.5) / pct(ff.clone(), 0.5)
        );
        if let Some(k) = k {
            kill(k);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // A running session: a live stream kept open by a player.
    let (_, pl) = d.live("cam0").await;
    let until = Instant::now() + Duration::from_secs(3600);
    let p = tokio::spawn(player(d.http.clone(), pl, until));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut warm = Vec::new();
    for i in 0..2 * n {
        warm.push(our_snapshot(&pc, &log).await);
        // Spread the samples over the GOP.
        tokio::time::sleep(Duration::from_millis(300 + (i as u64 * 170) % 900)).await;
    }
    println!(
        "snapshot with a running session (live stream open): gatehouse MQTT->JPEG {}",
        summary(&warm)
    );
    p.abort();
    d.stop_live("cam0").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // START -> playable playlist, the camera running (joins mid-GOP), alternating with ffmpeg.
    let k = keeper(&env.url);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut cold, mut hot, mut ff) = (Vec::new(), Vec::new(), Vec::new());
    let ffdir = env.dir.path().join("ff-start");
    for _ in 0..n {
        gop_jitter().await;
        let (c, _) = d.live("cam0").await;
        cold.push(ms(c));
        // Stop, and START again soon: the hub is still open (idle_close 1 s) with its GOP.
        d.stop_live("cam0").await;
        tokio::time::sleep(Duration::from_millis(rand::random_range(50..700))).await;
        let (h, _) = d.live("cam0").await;
        hot.push(ms(h));
        d.stop_live("cam0").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        gop_jitter().await;
        let t = Instant::now();
        let c = ffmpeg_hls(&env.url, &ffdir);
        ff.push(ms(wait_playlist(&ffdir).await - t));
        kill(c);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    kill(k);
    println!(
        "START -> playable (camera running): gatehouse REST /live cold {} | hub already running {} | ffmpeg -f hls spawn -> playlist with a segment {}",
        summary(&cold),
        summary(&hot),
        summary(&ff)
    );
    d.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn hls(env: &Env, n: usize, secs: u64) {
    let gst_pid = env.gst.pid().unwrap().to_string();
    // ---- gatehouse ----
    let d = env.daemon(&format!("hls{n}"), 4).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c0, t0) = (d.cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs(15)).await;
    let idle_cpu = (d.cpu() - c0) / t0.elapsed().as_secs_f64() * 100.0;
    let idle_rss = d.rss_kb();
    let mut starts = Vec::new();
    let mut players = Vec::new();
    let until = Instant::now() + Duration::from_secs(secs + 40);
    FETCHED.store(0, std::sync::atomic::Ordering::Relaxed);
    for i in 0..n {
        let (t, pl) = d.live(&format!("cam{i}")).await;
        starts.push(ms(t));
        players.push(tokio::spawn(player(d.http.clone(), pl, until)));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, g0, t0) = (d.cpu(), cpu_of(&gst_pid), Instant::now());
    let mut rss = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss.push(d.rss_kb());
    }
    let wall = t0.elapsed().as_secs_f64();
    let (cpu, gcpu) = (d.cpu() - c0, cpu_of(&gst_pid) - g0);
    let hwm = status_kb(&d.pid, "VmHWM");
    let fetched = FETCHED.swap(0, std::sync::atomic::Ordering::Relaxed);
    for p in &players {
        p.abort();
    }
    d.stop();
    let rss_end = *rss.last().unwrap();
    let rss_max = *rss.iter().max().unwrap();
    let stream_min = n as f64 * wall / 60.0;
    // What the streams add: the daemon's idle CPU (4 cameras' alert streams, MQTT) goes on
    // without them.
    let marginal = (cpu - idle_cpu / 100.0 * wall).max(0.0) / stream_min;
    println!(
        "hls {n} stream(s) over {wall:.0} s (batch_reads {}): gatehouse CPU {cpu:.2} s = {:.2} s per stream-minute ({:.1}% of a core; {marginal:.2} s with the idle CPU taken off); RSS idle {:.1} MB (idle CPU {idle_cpu:.2}%), with streams {:.1} MB (max {:.1}, HWM {:.1}) => added {:.2} MB/stream; START cold {}; GStreamer server CPU {:.2} s; player requests (playlists + segments) {fetched}",
        env.batch_reads.load(std::sync::atomic::Ordering::Relaxed),
        cpu / stream_min,
        cpu / wall * 100.0,
        idle_rss as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        hwm as f64 / 1024.0,
        (rss_end as f64 - idle_rss as f64) / 1024.0 / n as f64,
        summary(&starts),
        gcpu
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // ---- ffmpeg, same source, same window ----
    let mut kids = Vec::new();
    for i in 0..n {
        let dir = env.dir.path().join(format!("ff{i}"));
        kids.push((ffmpeg_hls(&env.url, &dir), dir));
    }
    for (_, dir) in &kids {
        wait_playlist(dir).await;
    }
    let pids: Vec<String> = kids.iter().map(|(c, _)| c.id().to_string()).collect();
    let fcpu = || pids.iter().map(|p| cpu_of(p)).sum::<f64>();
    let (c0, g0, t0) = (fcpu(), cpu_of(&gst_pid), Instant::now());
    let mut frss = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        frss.push(pids.iter().map(|p| status_kb(p, "VmRSS")).sum::<u64>());
    }
    let wall = t0.elapsed().as_secs_f64();
    let (cpu_f, gcpu) = (fcpu() - c0, cpu_of(&gst_pid) - g0);
    for (c, _) in kids {
        kill(c);
    }
    let stream_min = n as f64 * wall / 60.0;
    println!(
        "hls {n} stream(s) over {wall:.0} s: ffmpeg CPU {cpu_f:.2} s = {:.2} s per stream-minute; RSS {:.1} MB per process; GStreamer server CPU {gcpu:.2} s; CPU ratio gatehouse/ffmpeg {:.2} ({:.2} idle taken off)",
        cpu_f / stream_min,
        *frss.last().unwrap() as f64 / 1024.0 / n as f64,
        (cpu / stream_min) / (cpu_f / stream_min),
        marginal / (cpu_f / stream_min)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(60);
    let only = args.get(3).cloned().unwrap_or_default();
    // `GATEHOUSE_BIN`: another build of the daemon (a before/after comparison).
    let bin = std::env::var_os("GATEHOUSE_BIN").map_or_else(
        || {
            std::env::current_exe()
                .unwrap()
                .parent()
                .and_then(Path::parent)
                .unwrap()
                .join("gatehouse")
        },
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "{} missing: cargo build --release first",
        bin.display()
    );

    let clip = rtsp::clip_1080p();
    let opts = RtspOpts {
        file: Some(clip),
        ..rtsp::clip_1080p_opts()
    };
    let gst = RtspServer::start(opts);
    let url = gst.default_url();
    let broker = free_port();
    let mut mosq = std::process::Command::new("mosquitto")
        .args(["-p", &broker.to_string()])
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto");
    while std::net::TcpStream::connect(("127.0.0.1", broker)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut sims = Vec::new();
    for _ in 0..4 {
        sims.push(HikSim::start(HikSimConfig::default()).await.unwrap());
    }
    let env = Env {
        broker,
        dir: tempfile::tempdir().unwrap(),
        gst,
        url,
        sims,
        bin,
        batch_reads: true.into(),
    };
    println!("source: {} (1080p25, GOP 50, High, file loop)", env.url);

    if only.is_empty() || only == "snap" {
        breakdown(&env.url, n, "server pipeline idle").await;
        let k = keeper(&env.url);
        tokio::time::sleep(Duration::from_secs(2)).await;
        breakdown(&env.url, n, "camera running").await;
        kill(k);
        tokio::time::sleep(Duration::from_secs(2)).await;
        snapshots(&env, n).await;
    }
    if only.is_empty() || only == "hik" {
        hik_running(&env, n).await;
    }
    if only.is_empty() || only == "pictures" {
        pictures(&env, n).await;
    }
    if only.is_empty() || only == "hls" || only == "floor" {
        floor(&env, secs).await;
    }
    if only.is_empty() || only == "hls" || only == "hls1" {
        hls(&env, 1, secs).await;
    }
    if only.is_empty() || only == "hls" {
        hls(&env, 4, secs).await;
    }
    // One stream with reads batched (the default) and not, each beside ffmpeg.
    if only == "batch" {
        for on in [true, false] {
            env.batch_reads
                .store(on, std::sync::atomic::Ordering::Relaxed);
            hls(&env, 1, secs).await;
        }
    }
    let _ = mosq.kill();
    let _ = mosq.wait();
}
