//! Live streams through the whole daemon: the seed-004 REST contract and HLS read back by
//! ffprobe/ffmpeg, the player page played by headless Chromium (driven over the Chrome
//! DevTools Protocol), `stream/set` over MQTT, idle streams stopping, an RTSP server restart
//! mid-stream, the hub's late-joiner and slow-consumer policy, and snapshots from a running
//! session.
//!
//! Needs mosquitto, ffmpeg, GStreamer's RTSP server and chromium (`scripts/test.sh` installs
//! them on Debian); without them these tests fail rather than pass vacuously.

mod common;

use common::broker::{Broker, Recorder, publish};
use common::rtsp::{RtspOpts, RtspServer, parse_streams};
use common::wait_for;
use futures_util::{SinkExt, StreamExt};
use gatehouse::config::StreamKind;
use gatehouse::media::hub::Recv;
use gatehouse::media::service::Media;
use gatehouse::sim::hikvision::{HikSim, HikSimConfig, Personality};
use gatehouse::sim::rtsp::{RtspSimConfig, StreamConfig};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "media-live-test-secret-0123";

fn logs() {
    // reqwest is built without a default TLS provider (plain http here, but it asks).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("GATEHOUSE_LOG").unwrap_or_else(|_| "gatehouse=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A daemon with one camera `garage` (or whatever `cam_line` says), MQTT and the web server
/// on a free port.
struct Daemon {
    broker: Broker,
    rec: Recorder,
    _dir: tempfile::TempDir,
    app: gatehouse::app::App,
    media: Media,
    web: SocketAddr,
    http: reqwest::Client,
    /// The daemon's config, as `gatehouse token -c` reads it.
    yaml: String,
}

impl Daemon {
    async fn start(cam_line: impl FnOnce(&Broker) -> String, extra: &str) -> Daemon {
        logs();
        let broker = Broker::start();
        let rec = Recorder::start(broker.port, "rec", "gatehouse/#", false).await;
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "version: 1\nstorage: {{ path: {}/g.db }}\nmqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gh-live-{}\nweb: {{ bind: \"127.0.0.1:0\", jwt_secret: {SECRET} }}\nsources:\n  hikvision:\n{}{extra}",
            dir.path().display(),
            broker.port,
            rand::random::<u32>(),
            cam_line(&broker),
        );
        let cfg = gatehouse::config::load_str(&yaml, &|_| None).unwrap();
        let app = gatehouse::app::App::start(cfg, None, None).await.unwrap();
        let media = app.media.clone().expect("media service");
        let web = app.web_addr.expect("web server");
        // What the user's config file says: the port the server really listens on.
        let yaml = yaml.replace("\"127.0.0.1:0\"", &format!("\"{web}\""));
        Daemon {
            broker,
            rec,
            _dir: dir,
            app,
            media,
            web,
            http: reqwest::Client::new(),
            yaml,
        }
    }

    /// `gatehouse token -c <this daemon's config> <args>`: its stdout, trimmed.
    fn gatehouse_token(&self, args: &[&str]) -> String {
        let f = self._dir.path().join("config.yaml");
        std::fs::write(&f, &self.yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("token")
            .args(args)
            .arg("-c")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gatehouse token {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An unscoped token (as `gatehouse token` makes).
    fn token(&self) -> String {
        self.media
            .urls()
            .unwrap()
            .token("test", Duration::from_secs(600), None)
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.web)
    }

    /// `(status, JSON body)` of a REST call, with an optional bearer token.
    async fn call(&self, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = match method {
            "GET" => self.http.get(self.url(path)),
            _ => self.http.post(self.url(path)),
        };
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let res = r.send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.bytes().await.unwrap();
        let v = serde_json::from_slice(&body).unwrap_or_else(|_| {
            panic!(
                "{method} {path}: HTTP {status}, body not JSON: {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, v)
    }

    async fn get_text(&self, url: &str) -> (u16, String) {
        let res = self.http.get(url).send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    async fn stop(self) {
        self.app.shutdown().await;
        drop(self.broker);
    }
}

/// A Hikvision camera simulator serving RTSP (main stream `main`).
async fn camera_sim(main: StreamConfig) -> HikSim {
    HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        rtsp: Some(RtspSimConfig {
            main,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn cam_line(id: &str, sim: &HikSim, extra: &str) -> String {
    format!(
        "    - {{ id: {id}, url: \"{}\", username: admin, password: sim-hik-pass{extra} }}\n",
        sim.base_url()
    )
}

/// The RTSP port of the simulator is learned from its device info: wait for it.
async fn wait_camera_info(d: &Daemon, cam: &str) {
    let topic = format!("gatehouse/camera/{cam}/info");
    wait_for("camera info", T, || !d.rec.on(&topic).is_empty()).await;
}

/// Runs a command with a deadline; `(success, stdout, stderr)`.
async fn run(cmd: &str, args: &[&str], limit: Duration) -> (bool, String, String) {
    let child = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (scripts/test.sh installs it): {e}"));
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{cmd} {args:?} did not finish within {limit:?}"))
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// ffprobe reads the HLS playlist at `url` as one H.264 stream of `w`×`h`, silently.
async fn ffprobe_h264(url: &str, w: u32, h: u32) {
    let (ok, out, err) = run(
        "ffprobe",
        &["-v", "error", "-show_streams", url],
        Duration::from_secs(60),
    )
    .await;
    assert!(ok && err.trim().is_empty(), "ffprobe {url}: {err}");
    let streams = parse_streams(&out);
    let v: Vec<_> = streams
        .iter()
        .filter(|s| s.get("codec_type").map(String::as_str) == Some("video"))
        .collect();
    assert_eq!(v.len(), 1, "one video stream: {out}");
    assert_eq!(v[0]["codec_name"], "h264", "{out}");
    assert_eq!(v[0]["width"], w.to_string(), "{out}");
    assert_eq!(v[0]["height"], h.to_string(), "{out}");
}

/// ffmpeg decodes 3 s of the live playlist without a single message; returns the frames.
async fn ffmpeg_decode(url: &str) -> usize {
    let (ok, out, err) = run(
        "ffmpeg",
        &[
            "-nostdin", "-v", "error", "-i", url, "-t", "3", "-f", "framecrc", "-",
        ],
        Duration::from_secs(60),
    )
    .await;
    assert!(ok && err.trim().is_empty(), "ffmpeg {url}: {err}");
    out.lines().filter(|l| !l.starts_with('#')).count()
}

// ---------------------------------------------------------------------------------------
// 1. REST contract + HLS through ffprobe/ffmpeg

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_over_the_seed_004_rest_contract() {
    let cam = camera_sim(StreamConfig::main()).await;
    let d = Daemon::start(|_| cam_line("garage", &cam, ""), "").await;
    wait_camera_info(&d, "garage").await;
    let tok = d.token();
    let live = "/api/device/garage/channel/1/live";

    // No token: 401 with a {"detail": …} body, and nothing started.
    let (st, body) = d.call("GET", live, None).await;
    assert_eq!(st, 401, "{body}");
    assert!(body["detail"].is_string(), "{body}");
    assert!(d.media.live("garage", 1).is_none());
    // A token scoped to another camera opens nothing here.
    let other = d
        .media
        .urls()
        .unwrap()
        .token("test", Duration::from_secs(600), Some("/api/device/porch/"))
        .unwrap();
    let (st, body) = d.call("GET", live, Some(&other)).await;
    assert_eq!(st, 401, "{body}");
    assert!(body["detail"].is_string(), "{body}");
    // Unknown camera.
    let (st, body) = d
        .call("GET", "/api/device/nosuch/channel/1/live", Some(&tok))
        .await;
    assert_eq!(st, 404, "{body}");
    assert!(body["detail"].is_string(), "{body}");

    let (st, body) = d.call("GET", live, Some(&tok)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    let hls = body["hls_url"].as_str().expect("hls_url").to_string();
    assert!(hls.starts_with("/hls/garage/1/index.m3u8?token="), "{hls}");
    let url = d.url(&hls);
    let (st, m3u8) = d.get_text(&url).await;
    assert_eq!(st, 200, "{m3u8}");
    assert!(m3u8.starts_with("#EXTM3U"), "{m3u8}");
    // The playlist's token opens this stream only.
    let q = &hls[hls.find('?').unwrap()..];
    let (st, _) = d
        .get_text(&d.url(&format!("/hls/porch/1/index.m3u8{q}")))
        .await;
    assert_eq!(st, 401);

    ffprobe_h264(&url, 640, 360).await;
    let frames = ffmpeg_decode(&url).await;
    // 3 s at 10 fps; ffmpeg may stop a frame or two short of the limit.
    assert!((25..=31).contains(&frames), "{frames} frames in 3 s");

    let (st, body) = d
        .call("POST", "/api/device/garage/channel/1/heartbeat", Some(&tok))
        .await;
    assert_eq!((st, body), (200, json!({"status": "ok"})));
    let (st, body) = d
        .call("POST", "/api/device/garage/channel/1/stop", Some(&tok))
        .await;
    assert_eq!((st, body), (200, json!({"status": "ok"})));
    let (st, body) = d.get_text(&url).await;
    assert_eq!(
        st, 404,
        "the playlist is gone once STOP is answered: {body}"
    );
    let (st, body) = d
        .call("POST", "/api/device/garage/channel/1/heartbeat", Some(&tok))
        .await;
    assert_eq!(st, 404, "{body}");
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// 2. Headless Chromium plays the player page

/// Headless Chromium in its own process group, killed (group and all) on drop.
struct Chromium {
    child: std::process::Child,
    /// `ws://127.0.0.1:<port>/devtools/browser/<id>`
    ws: String,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn start() -> Chromium {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                "--autoplay-policy=no-user-gesture-required",
                "--window-size=1024,768",
                "about:blank",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("chromium runs (apt-get install chromium; scripts/test.sh does)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep draining stderr for Chromium's life (a full pipe would block it).
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(i) = line.find("DevTools listening on ws://") {
                    let _ = tx.send(
                        line[i + "DevTools listening on ".len()..]
                            .trim()
                            .to_string(),
                    );
                }
            }
        });
        let mut c = Chromium {
            child,
            ws: String::new(),
            _profile: profile,
        };
        c.ws = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("Chromium printed its DevTools address");
        c
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The whole group (renderer, GPU, zygote…), by the group id of the process we started.
        let pgid = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &pgid])
            .status();
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &pgid])
            .status();
        let _ = self.child.wait();
    }
}

/// A minimal CDP client: one page's WebSocket, commands answered by id.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    id: u64,
}

impl Cdp {
    async fn connect(ws_url: &str) -> Cdp {
        let u = url::Url::parse(ws_url).unwrap();
        let tcp = tokio::net::TcpStream::connect((u.host_str().unwrap(), u.port().unwrap()))
            .await
            .unwrap();
        let (ws, _) = tokio_tungstenite::client_async(ws_url, tcp)
            .await
            .expect("CDP WebSocket handshake");
        Cdp { ws, id: 0 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        use tokio_tungstenite::tungstenite::Message;
        self.id += 1;
        let id = self.id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no CDP answer to {method}"))
                .expect("CDP socket open")
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// `Runtime.evaluate` of an expression returning a JSON string, parsed.
    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true}),
            )
            .await;
        let s = r["result"]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("evaluate {js}: {r}"));
        serde_json::from_str(s).unwrap()
    }
}

/// Standard base64 (CDP's screenshots), without a crate for it.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..chunk.len()]);
    }
    out
}

const PAGE_STATE: &str = r#"JSON.stringify((() => {
  const v = document.getElementById("video"), s = document.getElementById("status");
  return {
    href: location.href,
    state: s ? s.dataset.state : null, text: s ? s.textContent : null,
    t: v ? v.currentTime : -1, w: v ? v.videoWidth : 0, h: v ? v.videoHeight : 0,
    mse: !!(window.MediaSource && MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E"')),
    hls: !!(window.Hls && Hls.isSupported()),
  };
})())"#;

/// Open `url` in the page and wait for the player's state on it: `Ok` once it plays the
/// 640×360 test pattern, `Err(state)` when it says "error".
async fn open_player(cdp: &mut Cdp, url: &str) -> Result<Value, Value> {
    cdp.call("Page.navigate", json!({ "url": url })).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        let s = cdp.eval(PAGE_STATE).await;
        // Until the navigation commits, the state is the previous page's.
        if s["href"] == url {
            if s["state"] == "error" {
                return Err(s);
            }
            if s["hls"] == true && s["mse"] == false {
                panic!(
                    "this Chromium cannot decode H.264 in MSE (isTypeSupported avc1 false): {s}"
                );
            }
            if s["state"] == "playing" && s["t"].as_f64().unwrap_or(0.0) > 1.0 && s["w"] == 640 {
                return Ok(s);
            }
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{url}: neither playing nor an error within 45 s: {s}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A daemon with two cameras, `garage` (its info known) and `porch`: tokens for one must not
/// open the other. The simulators live as long as the returned pair.
async fn garage_and_porch() -> (Daemon, [HikSim; 2]) {
    let cam = camera_sim(StreamConfig::main()).await;
    let porch = camera_sim(StreamConfig::main()).await;
    let d = Daemon::start(
        |_| {
            format!(
                "{}{}",
                cam_line("garage", &cam, ""),
                cam_line("porch", &porch, "")
            )
        },
        "",
    )
    .await;
    wait_camera_info(&d, "garage").await;
    (d, [cam, porch])
}

/// The player links gatehouse hands out, opened the way a user does: the one `gatehouse token
/// --player` prints (from a stopped stream), the `player_url` of a stream's MQTT payload, and
/// its `hls_url`'s token on the player page. A token for another camera is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_plays_the_player_links_gatehouse_hands_out() {
    let (d, _cameras) = garage_and_porch().await;
    let chromium = Chromium::start();
    // The page target Chromium opened on about:blank.
    let devtools = url::Url::parse(&chromium.ws).unwrap();
    let list: Value = d
        .http
        .get(format!(
            "http://{}:{}/json/list",
            devtools.host_str().unwrap(),
            devtools.port().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page_ws = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .unwrap_or_else(|| panic!("no page target: {list}"))
        .to_string();
    let mut cdp = Cdp::connect(&page_ws).await;
    let state_topic = "gatehouse/camera/garage/ch1/stream";

    // 1. A stream started over MQTT: the token of its hls_url opens the player page, and so
    //    does its player_url.
    publish(
        d.broker.port,
        "gatehouse/camera/garage/stream/set",
        b"START",
        false,
    )
    .await;
    wait_for("stream ON", T, || {
        d.rec
            .on(state_topic)
            .iter()
            .any(|m| m.retain && m.json()["state"] == "ON")
    })
    .await;
    let on = d
        .rec
        .on(state_topic)
        .into_iter()
        .map(|m| m.json())
        .find(|v| v["state"] == "ON")
        .unwrap();
    let hls_url = on["hls_url"].as_str().expect("hls_url");
    let hls_token = hls_url
        .split("?token=")
        .nth(1)
        .expect("hls_url has a token");
    let page = d.url(&format!("/live/garage/1?token={hls_token}"));
    if let Err(s) = open_player(&mut cdp, &page).await {
        panic!("the hls_url's token does not open the player page: {s}");
    }
    let player_url = on["player_url"]
        .as_str()
        .expect("player_url in the payload");
    assert!(
        player_url.starts_with(&d.url("/live/garage/1?token=")),
        "{player_url}"
    );
    if let Err(s) = open_player(&mut cdp, player_url).await {
        panic!("the payload's player_url does not play: {s}");
    }

    // 2. From a stopped stream, the documented link: `gatehouse token --player garage/1`.
    cdp.call("Page.navigate", json!({ "url": "about:blank" }))
        .await;
    publish(
        d.broker.port,
        "gatehouse/camera/garage/stream/set",
        b"STOP",
        false,
    )
    .await;
    wait_for("stream stopped", T, || d.media.live("garage", 1).is_none()).await;
    let link = d.gatehouse_token(&["--player", "garage/1"]);
    assert!(
        link.starts_with(&d.url("/live/garage/1?token=")),
        "gatehouse token --player prints the player's link: {link}"
    );
    let state = match open_player(&mut cdp, &link).await {
        Ok(s) => s,
        Err(s) => panic!("the player link of `gatehouse token --player` failed: {s}"),
    };
    assert_eq!(state["h"], 360, "{state}");

    // A screenshot of the video element alone.
    let rect = cdp
        .eval(r#"JSON.stringify(document.getElementById("video").getBoundingClientRect())"#)
        .await;
    let shot = cdp
        .call(
            "Page.captureScreenshot",
            json!({"format": "png", "clip": {
                "x": rect["x"], "y": rect["y"], "width": rect["width"], "height": rect["height"],
                "scale": 1,
            }}),
        )
        .await;
    let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
    std::fs::create_dir_all(&out_dir).unwrap();
    let path = out_dir.join("media_live_chromium.png");
    std::fs::write(&path, &png).unwrap();
    println!("screenshot: {}", path.display());

    // Decode it (ffmpeg) to grey pixels: a played frame of the colour bars, not a black box.
    let p = path.to_str().unwrap();
    let (ok, out, err) = run(
        "ffprobe",
        &["-v", "error", "-show_streams", p],
        Duration::from_secs(20),
    )
    .await;
    assert!(ok && err.is_empty(), "{err}");
    let s = &parse_streams(&out)[0];
    assert_eq!(s["codec_name"], "png");
    let (w, h): (usize, usize) = (s["width"].parse().unwrap(), s["height"].parse().unwrap());
    let grey = tokio::process::Command::new("ffmpeg")
        .args([
            "-v", "error", "-i", p, "-f", "rawvideo", "-pix_fmt", "gray", "-",
        ])
        .output()
        .await
        .unwrap();
    assert!(grey.status.success());
    let px = grey.stdout;
    assert_eq!(px.len(), w * h, "{w}×{h} grey pixels");
    let mean = px.iter().map(|&v| f64::from(v)).sum::<f64>() / px.len() as f64;
    let var = px
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / px.len() as f64;
    let bright = px.iter().filter(|&&v| v > 64).count() as f64 / px.len() as f64;
    println!(
        "screenshot {w}×{h}: mean luma {mean:.1}, stddev {:.1}, bright {bright:.2}",
        var.sqrt()
    );
    assert!(
        var.sqrt() > 20.0 && bright > 0.2,
        "the frame is (nearly) uniform / black: mean {mean:.1}, stddev {:.1}, {bright:.2} bright ({})",
        var.sqrt(),
        path.display()
    );

    // 3. The player link of another camera, with its token moved onto this camera's page:
    //    refused, and the page says so.
    let porch_link = d.gatehouse_token(&["--player", "porch/1"]);
    let porch_token = porch_link.split("?token=").nth(1).expect("a token");
    let page = d.url(&format!("/live/garage/1?token={porch_token}"));
    match open_player(&mut cdp, &page).await {
        Ok(s) => panic!("a token for porch/1 plays garage/1: {s}"),
        Err(s) => assert!(s["text"].as_str().unwrap().contains("does not open"), "{s}"),
    }
    drop(cdp);
    drop(chromium);
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// 3. MQTT stream/set

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_stream_set_starts_and_stops_a_stream() {
    let cam = camera_sim(StreamConfig::main()).await;
    let d = Daemon::start(|_| cam_line("garage", &cam, ""), "").await;
    wait_camera_info(&d, "garage").await;
    let set = "gatehouse/camera/garage/stream/set";
    let state_topic = "gatehouse/camera/garage/ch1/stream";
    let on = |d: &Daemon| -> Vec<Value> {
        d.rec
            .on(state_topic)
            .iter()
            .filter(|m| m.retain)
            .map(|m| m.json())
            .filter(|v| v["state"] == "ON")
            .collect()
    };

    publish(d.broker.port, set, b"START", false).await;
    wait_for("stream ON (retained)", T, || !on(&d).is_empty()).await;
    wait_for("START confirmed", T, || {
        d.rec
            .on("gatehouse/command/result")
            .iter()
            .any(|m| m.json()["status"] == "confirmed")
    })
    .await;
    let st = &on(&d)[0];
    let url = st["hls_url"].as_str().expect("hls_url").to_string();
    let prefix = format!("http://{}/hls/garage/1/index.m3u8?token=", d.web);
    assert!(url.starts_with(&prefix), "{url} (expected {prefix}…)");
    let (code, m3u8) = d.get_text(&url).await;
    assert_eq!(code, 200, "{m3u8}");
    assert!(m3u8.starts_with("#EXTM3U"), "{m3u8}");

    // (A retained OFF was already published at start-up: only one after STOP counts.)
    d.rec.clear();
    publish(d.broker.port, set, b"STOP", false).await;
    wait_for("stream OFF", T, || {
        d.rec
            .on(state_topic)
            .iter()
            .any(|m| m.retain && m.json()["state"] == "OFF")
    })
    .await;
    assert!(d.media.live("garage", 1).is_none());

    // A retained START is never acted on (the broker would replay it at every subscribe).
    d.rec.clear();
    publish(d.broker.port, set, b"START", true).await;
    wait_for("retained START rejected", T, || {
        d.rec
            .on("gatehouse/command/result")
            .iter()
            .any(|m| m.json()["status"] == "rejected")
    })
    .await;
    publish(d.broker.port, set, b"", true).await;
    assert!(d.media.live("garage", 1).is_none(), "no stream started");
    assert!(on(&d).is_empty(), "no stream started");
    d.stop().await;
}

/// A run that crashed left its retained stream "ON" on the broker: the next run sets every
/// channel it has not started OFF, so Home Assistant does not show a stream for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_retained_stream_on_is_cleared_at_start() {
    let cam = camera_sim(StreamConfig::main()).await;
    let state_topic = "gatehouse/camera/garage/ch1/stream";
    let d = Daemon::start(
        |b| {
            let st = std::process::Command::new("mosquitto_pub")
                .args(["-p", &b.port.to_string(), "-t", state_topic, "-r"])
                .args([
                    "-m",
                    r#"{"state":"ON","hls_url":"/hls/garage/1/index.m3u8","detail":"started"}"#,
                ])
                .status()
                .expect("mosquitto_pub (apt-get install mosquitto-clients)");
            assert!(st.success());
            cam_line("garage", &cam, "")
        },
        "",
    )
    .await;
    wait_camera_info(&d, "garage").await;
    wait_for("retained stream OFF", T, || {
        d.rec
            .on(state_topic)
            .iter()
            .any(|m| m.retain && m.json()["state"] == "OFF")
    })
    .await;
    // What a client subscribing now gets: OFF, not the stale ON.
    let late = Recorder::start(d.broker.port, "late", state_topic, false).await;
    wait_for("retained state delivered", T, || {
        !late.on(state_topic).is_empty()
    })
    .await;
    let last = late.on(state_topic).last().unwrap().json();
    assert_eq!(last["state"], "OFF", "{last}");
    assert!(last["hls_url"].is_null(), "{last}");
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. An unwatched stream stops, then its RTSP session closes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwatched_stream_stops_and_its_session_closes() {
    let cam = camera_sim(StreamConfig::main()).await;
    let d = Daemon::start(
        |_| cam_line("garage", &cam, ""),
        "media: { hls_stop_after: 5s, idle_close: 1s }\n",
    )
    .await;
    wait_camera_info(&d, "garage").await;
    let (st, body) = d
        .call("GET", "/api/device/garage/channel/1/live", Some(&d.token()))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(cam.rtsp().unwrap().stats().sessions_active, 1);
    // No heartbeat, no playlist fetch.
    wait_for("stream OFF for lack of viewers", T, || {
        d.rec
            .on("gatehouse/camera/garage/ch1/stream")
            .iter()
            .any(|m| {
                m.json()["state"] == "OFF" && m.json()["detail"] == "no heartbeat or playlist fetch"
            })
    })
    .await;
    assert!(d.media.live("garage", 1).is_none());
    wait_for("RTSP session closed (idle_close)", T, || {
        cam.rtsp().unwrap().stats().sessions_active == 0
    })
    .await;
    assert!(
        cam.rtsp().unwrap().stats().teardowns >= 1,
        "closed with TEARDOWN"
    );
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// 5. The RTSP server restarts mid-stream

/// The playlist's media sequence numbers.
fn seqs(m3u8: &str) -> Vec<u64> {
    m3u8.lines()
        .filter_map(|l| l.strip_prefix("seg"))
        .filter_map(|l| l.split('.').next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_survives_an_rtsp_server_restart() {
    let mut server = RtspServer::start(RtspOpts::default());
    let cam = HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        ..Default::default()
    })
    .await
    .unwrap();
    let line = cam_line(
        "porch",
        &cam,
        &format!(
            ", use_picture: false, rtsp_url: \"{}\"",
            server.default_url()
        ),
    );
    let d = Daemon::start(|_| line, "").await;
    let (st, body) = d
        .call("GET", "/api/device/porch/channel/1/live", Some(&d.token()))
        .await;
    assert_eq!(st, 200, "{body}");
    let url = d.url(body["hls_url"].as_str().unwrap());
    let hub = d.media.hub("porch", 1, StreamKind::Main).unwrap();
    assert_eq!(hub.stats().sessions_opened, 1);
    // A second segment, so there is a "before" to compare with.
    let deadline = tokio::time::Instant::now() + T;
    let before = loop {
        let (_, m) = d.get_text(&url).await;
        if seqs(&m).len() >= 2 {
            break *seqs(&m).last().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no second segment: {m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    tokio::task::block_in_place(|| server.restart());
    wait_for("the hub reconnected", Duration::from_secs(60), || {
        hub.stats().sessions_opened >= 2
    })
    .await;
    assert_eq!(hub.stats().sessions_opened, 2, "{:?}", hub.stats());
    // Segments from the new session, after a discontinuity.
    let deadline = tokio::time::Instant::now() + T;
    let m3u8 = loop {
        let (code, m) = d.get_text(&url).await;
        assert_eq!(code, 200, "the playlist stays up through the restart: {m}");
        if m.contains("#EXT-X-DISCONTINUITY\n")
            && m.split("#EXT-X-DISCONTINUITY\n")
                .nth(1)
                .is_some_and(|after| !seqs(after).is_empty())
        {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no segment after a discontinuity: {m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(*seqs(&m3u8).last().unwrap() > before, "{m3u8}");
    let s = seqs(&m3u8);
    assert!(
        s.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence numbers continue: {m3u8}"
    );
    ffprobe_h264(&url, 640, 360).await;
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// 6. Late joiners start at a keyframe; slow consumers are told and skip to one

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiners_and_slow_consumers_resume_at_keyframes() {
    // 50 fps, a keyframe every 25 frames: the hub's 64-frame fan-out fills in ~1.3 s.
    const STEP: i64 = 90_000 / 50;
    let cam = camera_sim(StreamConfig {
        width: 320,
        height: 180,
        fps: 50,
        gop: 25,
        seconds: 2,
        bitrate_bps: 300_000,
        noise: 0,
    })
    .await;
    let d = Daemon::start(|_| cam_line("garage", &cam, ""), "").await;
    wait_camera_info(&d, "garage").await;
    let hub = d.media.hub("garage", 1, StreamKind::Main).unwrap();
    let next = |r: Option<Recv>| match r {
        Some(Recv::Frame(f)) => f,
        Some(Recv::Missed(n)) => panic!("missed {n} frames"),
        None => panic!("hub closed"),
    };
    let recv = async |s: &mut gatehouse::media::hub::Subscription| {
        tokio::time::timeout(Duration::from_secs(15), s.recv())
            .await
            .expect("a frame within 15 s")
    };

    // The first consumer, read until mid-GOP: a keyframe and a few frames after it.
    let mut first = hub.subscribe();
    let mut since_key = None;
    while since_key.is_none_or(|n| n < 8) {
        let f = next(recv(&mut first).await);
        since_key = match (f.is_key, since_key) {
            (true, _) => Some(0),
            (false, Some(n)) => Some(n + 1),
            (false, None) => None,
        };
    }
    // A late joiner gets the kept GOP from its keyframe, then live frames without a gap.
    let joined = tokio::time::Instant::now();
    let mut late = hub.subscribe();
    let k = next(recv(&mut late).await);
    assert!(k.is_key, "a late joiner starts at a keyframe");
    let mut pts = k.pts;
    let mut backlog = 1;
    for _ in 0..60 {
        let f = next(recv(&mut late).await);
        assert_eq!(f.session, k.session);
        assert!(
            f.pts > pts && f.pts - pts <= 2 * STEP,
            "continuous: {} after {pts}",
            f.pts
        );
        if f.received < joined {
            backlog += 1;
        }
        pts = f.pts;
    }
    assert!(
        backlog >= 9,
        "the kept GOP (keyframe + 8) came first: {backlog} frames from before joining"
    );
    drop(first);

    // A consumer that stops reading for longer than the fan-out holds.
    let mut slow = hub.subscribe();
    let at = hub.stats().frames;
    wait_for("the fan-out overflows", Duration::from_secs(60), || {
        hub.stats().frames > at + 64 + 50
    })
    .await;
    let mut missed = None;
    for _ in 0..=600 {
        match recv(&mut slow).await {
            Some(Recv::Frame(_)) => {} // the kept GOP from subscribe time
            Some(Recv::Missed(n)) => {
                missed = Some(n);
                break;
            }
            None => panic!("hub closed"),
        }
    }
    let n = missed.expect("the slow consumer is told it missed frames");
    assert!(n >= 50, "missed {n}");
    assert!(hub.stats().frames_missed >= n);
    let k = next(recv(&mut slow).await);
    assert!(k.is_key, "after a gap the consumer resumes at a keyframe");
    let mut pts = k.pts;
    for _ in 0..30 {
        let f = next(recv(&mut slow).await);
        assert!(
            f.pts > pts && f.pts - pts <= 2 * STEP,
            "continuous after resync"
        );
        pts = f.pts;
    }
    drop(late);
    drop(slow);
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// 7. A snapshot on a running stream comes from it

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_on_a_running_stream_comes_from_it() {
    let cam = camera_sim(StreamConfig::main()).await;
    let d = Daemon::start(|_| cam_line("garage", &cam, ", use_picture: false"), "").await;
    wait_camera_info(&d, "garage").await;
    let live = d.media.live_start("garage", 1).await.unwrap();
    assert!(live.ready(T).await, "the stream plays");
    assert_eq!(cam.rtsp().unwrap().stats().plays, 1);

    let t0 = tokio::time::Instant::now();
    publish(
        d.broker.port,
        "gatehouse/camera/garage/snapshot/set",
        b"PRESS",
        false,
    )
    .await;
    wait_for("picture meta", T, || {
        !d.rec
            .on("gatehouse/camera/garage/ch1/snapshot/meta")
            .is_empty()
    })
    .await;
    println!("snapshot from the running stream in {:?}", t0.elapsed());
    let meta = d.rec.on("gatehouse/camera/garage/ch1/snapshot/meta")[0].json();
    assert_eq!(meta["source"], "live", "{meta}");
    wait_for("picture", T, || {
        !d.rec.on("gatehouse/camera/garage/ch1/snapshot").is_empty()
    })
    .await;
    let jpeg = &d.rec.on("gatehouse/camera/garage/ch1/snapshot")[0].payload;
    assert!(jpeg.starts_with(&[0xFF, 0xD8]), "a JPEG");
    assert_ne!(jpeg[..], cam.picture()[..], "not the camera's /picture");
    assert_eq!(
        cam.rtsp().unwrap().stats().plays,
        1,
        "the running session was used, no second one"
    );
    d.media.live_stop("garage", 1);
    d.stop().await;
}

/// `(status, Content-Type, Cache-Control, body)` of a REST GET.
async fn get_bytes(d: &Daemon, path: &str, token: Option<&str>) -> (u16, String, String, Vec<u8>) {
    let mut r = d.http.get(d.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let res = r.send().await.unwrap();
    let header = |h| {
        res.headers()
            .get(h)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (ct, cc) = (header("content-type"), header("cache-control"));
    (
        res.status().as_u16(),
        ct,
        cc,
        res.bytes().await.unwrap().to_vec(),
    )
}

async fn saved_pictures(d: &Daemon, cam: &str) -> usize {
    let cam = cam.to_string();
    d.media
        .store()
        .run(move |s| s.pictures_recent(&cam, 1, 100))
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_snapshot_is_saved_and_published_unless_save_false() {
    let cam = camera_sim(StreamConfig::main()).await;
    let d = Daemon::start(|_| cam_line("garage", &cam, ""), "").await;
    wait_camera_info(&d, "garage").await;
    let path = "/api/device/garage/channel/1/snapshot";
    let tok = d.token();

    let (st, _, _, _) = get_bytes(&d, path, None).await;
    assert_eq!(st, 401, "no token, no picture");

    // Saved (disk + SQLite) and published, like any other trigger.
    let (st, ct, cc, body) = get_bytes(&d, path, Some(&tok)).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!((ct.as_str(), cc.as_str()), ("image/jpeg", "no-store"));
    assert_eq!(body, cam.picture(), "the camera's /picture");
    wait_for("meta", T, || {
        !d.rec
            .on("gatehouse/camera/garage/ch1/snapshot/meta")
            .is_empty()
    })
    .await;
    let meta = d.rec.on("gatehouse/camera/garage/ch1/snapshot/meta")[0].json();
    assert_eq!(meta["trigger"], "rest", "{meta}");
    assert_eq!(saved_pictures(&d, "garage").await, 1);

    // save=false: the same fresh JPEG, and nothing kept or sent anywhere.
    for _ in 0..3 {
        let (st, ct, cc, body) = get_bytes(&d, &format!("{path}?save=false"), Some(&tok)).await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!((ct.as_str(), cc.as_str()), ("image/jpeg", "no-store"));
        assert_eq!(body, cam.picture());
    }
    // A saved one after them: once its meta is on MQTT, anything the unsaved ones had
    // published would be too (one publisher, in order).
    let (st, _, _, _) = get_bytes(&d, &format!("{path}?save=true"), Some(&tok)).await;
    assert_eq!(st, 200);
    wait_for("second meta", T, || {
        d.rec.on("gatehouse/camera/garage/ch1/snapshot/meta").len() >= 2
    })
    .await;
    assert_eq!(
        d.rec.on("gatehouse/camera/garage/ch1/snapshot").len(),
        2,
        "only the saved pictures are published"
    );
    assert_eq!(
        saved_pictures(&d, "garage").await,
        2,
        "only the saved pictures are kept"
    );

    let (st, _, _, body) = get_bytes(&d, &format!("{path}?save=maybe"), Some(&tok)).await;
    assert_eq!(st, 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["detail"].as_str().unwrap().contains("save"), "{v}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_start_says_why_and_stops() {
    // Nothing listens on that port: the camera is unreachable over RTSP.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let cam = camera_sim(StreamConfig::main()).await;
    let d = Daemon::start(
        |_| {
            cam_line(
                "garage",
                &cam,
                &format!(", use_picture: false, rtsp_url: \"rtsp://127.0.0.1:{port}/x\""),
            )
        },
        "media: { snapshot_timeout: 2s }\n",
    )
    .await;
    let (st, body) = d
        .call("GET", "/api/device/garage/channel/1/live", Some(&d.token()))
        .await;
    assert_eq!(st, 502, "{body}");
    let why = body["detail"].as_str().unwrap();
    assert!(
        why.contains("did not start") && why.contains("refused"),
        "{why}"
    );
    // Not left behind reconnecting for hls_stop_after.
    assert!(d.media.live("garage", 1).is_none());
    wait_for("OFF", T, || {
        d.rec
            .on("gatehouse/camera/garage/ch1/stream")
            .last()
            .is_some_and(|m| m.json()["state"] == "OFF")
    })
    .await;
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// 8. One token per player link: its page, its stream's start and heartbeat, its playlist and
//    segments, and nothing else

/// The URIs a playlist lists: the init segment (`#EXT-X-MAP`) and the media segments.
fn playlist_uris(m3u8: &str) -> Vec<String> {
    m3u8.lines()
        .filter_map(|l| match l.strip_prefix("#EXT-X-MAP:URI=\"") {
            Some(rest) => rest.split('"').next().map(str::to_owned),
            None => (!l.starts_with('#') && !l.trim().is_empty()).then(|| l.trim().to_owned()),
        })
        .collect()
}

/// `tok` opens what the player page of `cam`/`ch` needs — the page, `…/live`, `…/heartbeat`,
/// the playlist and every URI in it (with the token the playlist repeats) — and nothing
/// else: not `…/stop` or `…/snapshot`, not another channel or camera, not pictures.
async fn assert_opens_one_player(d: &Daemon, tok: &str, cam: &str, ch: u32, other_cam: &str) {
    let api = format!("/api/device/{cam}/channel/{ch}");
    let (st, page) = d
        .get_text(&d.url(&format!("/live/{cam}/{ch}?token={tok}")))
        .await;
    assert_eq!(st, 200, "{page}");
    let (st, body) = d.call("GET", &format!("{api}/live"), Some(tok)).await;
    assert_eq!(st, 200, "…/live: {body}");
    let (st, body) = d.call("POST", &format!("{api}/heartbeat"), Some(tok)).await;
    assert_eq!(st, 200, "…/heartbeat: {body}");
    let (st, m3u8) = d
        .get_text(&d.url(&format!("/hls/{cam}/{ch}/index.m3u8?token={tok}")))
        .await;
    assert_eq!(st, 200, "playlist: {m3u8}");
    let uris = playlist_uris(&m3u8);
    assert!(uris.len() >= 2, "an init segment and a segment: {m3u8}");
    for u in &uris {
        assert!(u.contains("?token="), "{u} carries the token: {m3u8}");
        let (st, _, _, body) = get_bytes(d, &format!("/hls/{cam}/{ch}/{u}"), None).await;
        assert_eq!(st, 200, "{u}: {}", String::from_utf8_lossy(&body));
    }
    let refused = [
        ("POST", format!("{api}/stop")),
        ("GET", format!("{api}/snapshot")),
        ("GET", format!("/api/device/{cam}/channel/{}/live", ch + 1)),
        ("GET", format!("/api/device/{cam}/channel/{ch}0/live")),
        ("GET", format!("/api/device/{other_cam}/channel/{ch}/live")),
        (
            "POST",
            format!("/api/device/{other_cam}/channel/{ch}/heartbeat"),
        ),
        ("GET", format!("/hls/{other_cam}/{ch}/index.m3u8")),
        ("GET", format!("/hls/{cam}/{}/index.m3u8", ch + 1)),
        ("GET", "/api/pictures/x.jpg".to_string()),
        ("GET", "/api/events/x/picture".to_string()),
    ];
    for (method, path) in refused {
        let (st, body) = d.call(method, &path, Some(tok)).await;
        assert_eq!(st, 401, "{method} {path} opened: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("does not open"),
            "{method} {path}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_token_opens_its_channels_player_playlist_and_segments_only() {
    let (d, _cameras) = garage_and_porch().await;

    // The REST answer: hls_url and player_url carry one token, for the player.
    let (st, body) = d
        .call("GET", "/api/device/garage/channel/1/live", Some(&d.token()))
        .await;
    assert_eq!(st, 200, "{body}");
    let hls = body["hls_url"].as_str().expect("hls_url");
    let (path, tok) = hls.split_once("?token=").expect("a token");
    assert_eq!(path, "/hls/garage/1/index.m3u8");
    assert_eq!(
        body["player_url"].as_str(),
        Some(format!("/live/garage/1?token={tok}").as_str()),
        "{body}"
    );
    assert_opens_one_player(&d, tok, "garage", 1, "porch").await;

    // The MQTT payload: the same, as full URLs.
    let on = || {
        d.rec
            .on("gatehouse/camera/garage/ch1/stream")
            .into_iter()
            .map(|m| m.json())
            .find(|v| v["state"] == "ON")
    };
    wait_for("stream ON", T, || on().is_some()).await;
    let on = on().unwrap();
    let player = on["player_url"].as_str().expect("player_url");
    let tok = player
        .strip_prefix(&d.url("/live/garage/1?token="))
        .unwrap_or_else(|| panic!("{player}"));
    assert_eq!(
        on["hls_url"].as_str(),
        Some(
            d.url(&format!("/hls/garage/1/index.m3u8?token={tok}"))
                .as_str()
        ),
        "{on}"
    );
    assert_opens_one_player(&d, tok, "garage", 1, "porch").await;

    // The documented command.
    let link = d.gatehouse_token(&["--player", "garage/1", "--ttl", "1h"]);
    let tok = link
        .strip_prefix(&d.url("/live/garage/1?token="))
        .unwrap_or_else(|| panic!("{link}"));
    assert_opens_one_player(&d, tok, "garage", 1, "porch").await;
    // Another camera's player token opens nothing of this one.
    let link = d.gatehouse_token(&["--player", "porch/1"]);
    let tok = link.split("?token=").nth(1).unwrap();
    let (st, body) = d
        .call("GET", "/api/device/garage/channel/1/live", Some(tok))
        .await;
    assert_eq!(st, 401, "{body}");
    d.media.live_stop("garage", 1);
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// 9. Every error is {"detail": …} JSON, axum's own rejections included

/// `(status, Content-Type, Allow, body)` of any request.
async fn raw(
    d: &Daemon,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String, String, String) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = d.http.request(m, d.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let res = r.send().await.unwrap();
    let header = |h| {
        res.headers()
            .get(h)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (ct, allow) = (header("content-type"), header("allow"));
    (res.status().as_u16(), ct, allow, res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_detail_rejections_and_unknown_routes_included() {
    let cam = camera_sim(StreamConfig::main()).await;
    let d = Daemon::start(|_| cam_line("garage", &cam, ""), "").await;
    let tok = d.token();
    let t = Some(tok.as_str());
    // (method, path, token, status, a word the detail names, Allow)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, u16, &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "GET",
            "/api/device/garage/channel/abc/live",
            t,
            400,
            "abc",
            "",
        ),
        (
            "POST",
            "/api/device/garage/channel/abc/heartbeat",
            t,
            400,
            "abc",
            "",
        ),
        (
            "POST",
            "/api/device/garage/channel/abc/stop",
            t,
            400,
            "abc",
            "",
        ),
        (
            "GET",
            "/api/device/garage/channel/abc/snapshot",
            t,
            400,
            "abc",
            "",
        ),
        (
            "GET",
            "/api/device/garage/channel/-1/live",
            t,
            400,
            "-1",
            "",
        ),
        (
            "GET",
            "/api/device/garage/channel/99999999999/live",
            t,
            400,
            "99999999999",
            "",
        ),
        ("GET", "/hls/garage/abc/index.m3u8", t, 400, "abc", ""),
        ("GET", "/live/garage/abc", None, 400, "abc", ""),
        (
            "GET",
            "/api/device/garage/channel/1/snapshot?save=maybe",
            t,
            400,
            "save",
            "",
        ),
        // The token is checked before anything else is looked at.
        (
            "GET",
            "/api/device/garage/channel/abc/live",
            None,
            401,
            "token",
            "",
        ),
        ("GET", "/nosuch", None, 404, "/nosuch", ""),
        (
            "GET",
            "/api/device/garage",
            t,
            404,
            "/api/device/garage",
            "",
        ),
        (
            "GET",
            "/api/device/garage/channel/1/stop",
            t,
            405,
            "GET",
            "POST",
        ),
        ("POST", "/healthz", None, 405, "POST", "GET"),
        ("DELETE", "/live/garage/1", None, 405, "DELETE", "GET"),
    ];
    for &(method, path, token, status, word, allow) in cases {
        let (st, ct, al, body) = raw(&d, method, path, token).await;
        let what = format!("{method} {path}: HTTP {st} {ct:?} {body:?}");
        assert_eq!(st, status, "{what}");
        assert!(ct.starts_with("application/json"), "{what}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}"));
        let detail = v["detail"].as_str().unwrap_or_else(|| panic!("{what}"));
        assert!(detail.contains(word), "{what}: the detail names {word:?}");
        assert!(
            al.contains(allow),
            "{what}: Allow {al:?}, expected {allow:?}"
        );
    }
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// 10. What is open without a token: the player page, its script and /healthz, which hold
//     no data; everything else needs one

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_page_and_its_script_are_open_and_hold_no_data() {
    let cam = camera_sim(StreamConfig::main()).await;
    let d = Daemon::start(|_| cam_line("garage", &cam, ""), "").await;
    let (st, ct, _, page) = raw(&d, "GET", "/live/garage/1", None).await;
    assert_eq!(
        (st, ct.as_str()),
        (200, "text/html; charset=utf-8"),
        "{page}"
    );
    // The page is the same for a camera that does not exist: it does not even tell which
    // cameras there are.
    let (st, _, _, nosuch) = raw(&d, "GET", "/live/nosuch/1", None).await;
    assert_eq!(st, 200);
    assert_eq!(page.replace("garage", "nosuch"), nosuch);
    assert!(!page.contains(&cam.base_url()), "{page}");
    let (st, ct, _, js) = raw(&d, "GET", "/static/hls.min.js", None).await;
    assert_eq!((st, ct.as_str()), (200, "text/javascript"));
    assert!(js.contains("Hls"));
    let (st, _, _, ok) = raw(&d, "GET", "/healthz", None).await;
    assert_eq!((st, ok.as_str()), (200, "ok"));
    for (method, path) in [
        ("GET", "/api/device/garage/channel/1/live"),
        ("POST", "/api/device/garage/channel/1/heartbeat"),
        ("POST", "/api/device/garage/channel/1/stop"),
        ("GET", "/api/device/garage/channel/1/snapshot"),
        ("GET", "/hls/garage/1/index.m3u8"),
        ("GET", "/hls/garage/1/seg1.m4s"),
        ("GET", "/api/pictures/x.jpg"),
        ("GET", "/api/events/x/picture"),
    ] {
        let (st, body) = d.call(method, path, None).await;
        assert_eq!(st, 401, "{method} {path}: {body}");
        assert!(body["detail"].is_string(), "{body}");
    }
    d.stop().await;
}
