//! The RTSP simulator against real clients: retina (what the daemon uses), ffprobe (an
//! independent implementation), openh264's decoder, and a raw RTSP client for the edges.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use gatehouse::sim::hikvision::{HikSim, HikSimConfig, Personality};
use gatehouse::sim::rtsp::{RtspSim, RtspSimConfig};
use md5::{Digest, Md5};
use retina::client::{Credentials, PlayOptions, Session, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const USER: &str = "admin";
const PASS: &str = "sim-hik-pass";

async fn sim() -> RtspSim {
    RtspSim::start(RtspSimConfig::default()).await.unwrap()
}

fn creds(password: &str) -> Option<Credentials> {
    Some(Credentials {
        username: USER.into(),
        password: password.into(),
    })
}

async fn describe(
    sim: &RtspSim,
    path: &str,
    password: &str,
) -> Result<Session<retina::client::Described>, retina::Error> {
    let url = url::Url::parse(&sim.url(path)).unwrap();
    Session::describe(url, SessionOptions::default().creds(creds(password))).await
}

/// DESCRIBE, SETUP of the video stream only, PLAY.
async fn play(sim: &RtspSim, path: &str) -> retina::client::Demuxed {
    let mut s = describe(sim, path, PASS).await.unwrap();
    let vi = s
        .streams()
        .iter()
        .position(|s| s.media() == "video")
        .expect("a video stream");
    s.setup(
        vi,
        SetupOptions::default()
            .transport(Transport::Tcp(Default::default()))
            .frame_format(FrameFormat::SIMPLE),
    )
    .await
    .unwrap();
    s.play(PlayOptions::default())
        .await
        .unwrap()
        .demuxed()
        .unwrap()
}

struct Frame {
    ts: i64,
    key: bool,
    data: Vec<u8>,
}

async fn frames(d: &mut retina::client::Demuxed, keyframes: usize, max: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    let fut = async {
        while let Some(item) = d.next().await {
            if let CodecItem::VideoFrame(f) = item.expect("stream error") {
                out.push(Frame {
                    ts: f.timestamp().timestamp(),
                    key: f.is_random_access_point(),
                    data: f.data().to_vec(),
                });
                if out.iter().filter(|f| f.key).count() >= keyframes || out.len() >= max {
                    return;
                }
            }
        }
        panic!("stream ended");
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("frames in time");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retina_gets_keyframes_with_increasing_timestamps_and_sees_the_onvif_track() {
    let sim = sim().await;
    eprintln!(
        "start-up encode: {:?}, loop bytes {:?}",
        sim.encode_time(),
        sim.clip_bytes()
    );
    let s = describe(&sim, "/Streaming/Channels/101", PASS)
        .await
        .unwrap();
    let media: Vec<(String, String)> = s
        .streams()
        .iter()
        .map(|s| {
            (
                s.media().to_string(),
                s.encoding_name().to_ascii_lowercase(),
            )
        })
        .collect();
    assert_eq!(
        media,
        [
            ("video".to_string(), "h264".to_string()),
            ("application".to_string(), "vnd.onvif.metadata".to_string())
        ]
    );
    drop(s);
    let mut d = play(&sim, "/Streaming/Channels/101").await;
    let fs = frames(&mut d, 3, 100).await;
    assert!(fs[0].key, "the stream starts at a keyframe");
    assert_eq!(fs.iter().filter(|f| f.key).count(), 3);
    // GOP 10: a keyframe every 10 frames.
    let keys: Vec<usize> = fs
        .iter()
        .enumerate()
        .filter(|(_, f)| f.key)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(keys, [0, 10, 20]);
    for w in fs.windows(2) {
        // 10 fps at 90 kHz.
        assert_eq!(w[1].ts - w[0].ts, 9000, "continuous timestamps");
    }
    let (w, h) = match d.streams()[0].parameters() {
        Some(retina::codec::ParametersRef::Video(v)) => v.pixel_dimensions(),
        _ => panic!("no video parameters"),
    };
    assert_eq!((w, h), (640, 360));
    let st = sim.stats();
    assert_eq!((st.plays, st.sessions_active), (1, 1));
}

#[tokio::test]
async fn the_loop_wraps_at_an_idr_with_continuous_timestamps() {
    let sim = RtspSim::start(RtspSimConfig {
        main: gatehouse::sim::rtsp::StreamConfig {
            width: 160,
            height: 90,
            fps: 30,
            gop: 15,
            seconds: 1,
            bitrate_bps: 100_000,
            noise: 0,
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let mut d = play(&sim, "/Streaming/Channels/101").await;
    // Two loops of 30 frames and then some.
    let fs = frames(&mut d, 100, 75).await;
    let keys: Vec<usize> = fs
        .iter()
        .enumerate()
        .filter(|(_, f)| f.key)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(keys, [0, 15, 30, 45, 60]);
    assert!(fs.windows(2).all(|w| w[1].ts - w[0].ts == 3000));
    assert_ne!(fs[1].data, fs[2].data, "consecutive frames differ");
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let sim = sim().await;
    let e = describe(&sim, "/Streaming/Channels/101", "nope")
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("401"), "{e}");
    assert!(sim.stats().bad_logins >= 1);
    // And the right one works on the same server.
    describe(&sim, "/Streaming/Channels/101", PASS)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_sees_h264_at_the_configured_size() {
    let sim = sim().await;
    let url = sim.url("/Streaming/Channels/101").replacen(
        "rtsp://",
        &format!("rtsp://{USER}:{PASS}@"),
        1,
    );
    let out = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-show_streams",
            "-of",
            "json",
            &url,
        ])
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("ffprobe in time")
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("ffprobe not found (apt-get install ffmpeg): run scripts/test.sh")
        }
        Err(e) => panic!("ffprobe: {e}"),
    };
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let video = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360))
    );
}

#[tokio::test]
async fn a_keyframe_decodes_at_the_sub_stream_size() {
    use openh264::formats::YUVSource;
    let sim = sim().await;
    let mut d = play(&sim, "/Streaming/Channels/102").await;
    let fs = frames(&mut d, 1, 1).await;
    assert!(fs[0].key);
    let mut dec = openh264::decoder::Decoder::new().unwrap();
    let pic = dec
        .decode(&fs[0].data)
        .expect("decodes")
        .expect("a picture from one keyframe");
    assert_eq!(pic.dimensions(), (320, 180));
    // Colour bars: the left bar is light grey, the right one blue-ish (low luma).
    let (y, stride) = (pic.y(), pic.strides().0);
    assert!(
        y[10 * stride + 5] > 150,
        "grey bar luma {}",
        y[10 * stride + 5]
    );
    assert!(
        y[10 * stride + 315] < 60,
        "blue bar luma {}",
        y[10 * stride + 315]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_at_once_and_teardown_ends_the_session() {
    let sim = sim().await;
    let (mut a, mut b) = tokio::join!(
        play(&sim, "/Streaming/Channels/101"),
        play(&sim, "/Streaming/Channels/102")
    );
    let (fa, fb) = tokio::join!(frames(&mut a, 100, 5), frames(&mut b, 100, 5));
    assert_eq!((fa.len(), fb.len()), (5, 5));
    assert_eq!(sim.stats().sessions_active, 2);

    // A third, raw client: TEARDOWN answers 200, closes the connection and counts.
    let mut raw = Raw::connect(&sim).await;
    let base = sim.url("/Streaming/Channels/101");
    raw.setup_play(&base).await;
    assert_eq!(sim.stats().sessions_active, 3);
    let (code, _, _) = raw.request("TEARDOWN", &base, &[]).await;
    assert_eq!(code, 200);
    assert!(raw.closed().await, "the connection closes after TEARDOWN");
    let st = sim.stats();
    assert_eq!((st.teardowns, st.sessions_active, st.plays), (1, 2, 3));

    // The other two still stream.
    let (fa, fb) = tokio::join!(frames(&mut a, 100, 3), frames(&mut b, 100, 3));
    assert_eq!((fa.len(), fb.len()), (3, 3));
    drop((a, b));
    // Dropped retina sessions end theirs (TEARDOWN or connection closed).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.stats().sessions_active > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", sim.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn protocol_edges() {
    let sim = RtspSim::start(RtspSimConfig {
        channels: 4,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut raw = Raw::connect(&sim).await;
    let url = sim.url("/Streaming/Channels/101");
    // OPTIONS needs no login and lists the keepalive methods.
    let (code, h, _) = raw.request("OPTIONS", &url, &[]).await;
    assert_eq!(code, 200);
    assert!(h["public"].contains("GET_PARAMETER"));
    // No credentials: a Digest challenge.
    raw.login = false;
    let (code, h, _) = raw.request("DESCRIBE", &url, &[]).await;
    assert_eq!(code, 401);
    assert!(h["www-authenticate"].starts_with("Digest realm=\""));
    // Wrong password: 401 again.
    raw.login = true;
    raw.password = "wrong".into();
    let (code, _, _) = raw.request("DESCRIBE", &url, &[]).await;
    assert_eq!(code, 401);
    raw.password = PASS.into();
    let (code, h, body) = raw.request("DESCRIBE", &url, &[]).await;
    assert_eq!(code, 200);
    assert_eq!(h["content-base"], format!("{url}/"));
    for want in [
        "m=video 0 RTP/AVP 96",
        "a=rtpmap:96 H264/90000",
        "packetization-mode=1;profile-level-id=",
        "a=control:trackID=1",
        "m=application 0 RTP/AVP 107",
        "a=rtpmap:107 vnd.onvif.metadata/90000",
        "a=control:trackID=3",
    ] {
        assert!(body.contains(want), "{want} in\n{body}");
    }
    // NVR channels and unknown paths.
    assert_eq!(
        raw.request("DESCRIBE", &sim.url("/Streaming/Channels/401"), &[])
            .await
            .0,
        200
    );
    assert_eq!(
        raw.request("DESCRIBE", &sim.url("/Streaming/Channels/402"), &[])
            .await
            .0,
        200
    );
    assert_eq!(
        raw.request("DESCRIBE", &sim.url("/Streaming/Channels/501"), &[])
            .await
            .0,
        404
    );
    assert_eq!(raw.request("DESCRIBE", &sim.url("/nope"), &[]).await.0, 404);
    // UDP: 461.
    let track = format!("{url}/trackID=1");
    let udp = [("Transport", "RTP/AVP;unicast;client_port=5000-5001")];
    assert_eq!(raw.request("SETUP", &track, &udp).await.0, 461);
    // PLAY without a session.
    assert_eq!(
        raw.request("PLAY", &url, &[("Session", "123")]).await.0,
        454
    );
    // Garbage: 400, and the connection still works.
    raw.send_raw(b"HELLO\r\n\r\n").await;
    assert_eq!(raw.response().await.0, 400);
    raw.send_raw(b"DESCRIBE rtsp://x/Streaming/Channels/101 RTSP/1.0\r\n\r\n")
        .await;
    assert_eq!(raw.response().await.0, 400, "no CSeq");
    raw.send_raw(b"DESCRIBE rtsp://x/ RTSP/1.0\r\nCSeq: 9\r\nContent-Length: zz\r\n\r\n")
        .await;
    assert_eq!(raw.response().await.0, 400);
    // Setting up the metadata track too is allowed (ffmpeg does); PLAY, keepalive.
    raw.setup_play(&url).await;
    let meta = format!("{url}/trackID=3");
    let tcp = [("Transport", "RTP/AVP/TCP;unicast;interleaved=4-5")];
    assert_eq!(raw.request("SETUP", &meta, &tcp).await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(raw.request("GET_PARAMETER", &url, &[]).await.0, 200);
    assert_eq!(raw.request("SET_PARAMETER", &url, &[]).await.0, 200);
    assert!(raw.rtp_packets > 0, "RTP arrived while talking");
    assert!(sim.stats().bad_requests >= 3);
}

#[tokio::test]
async fn hiksim_serves_rtsp_and_reports_its_port() {
    let cam = HikSim::start(HikSimConfig {
        rtsp: Some(RtspSimConfig::default()),
        ..Default::default()
    })
    .await
    .unwrap();
    let rtsp = cam.rtsp().expect("RTSP on");
    assert_ne!(rtsp.port(), 554);
    assert_eq!(
        cam.rtsp_url(101).unwrap(),
        format!("rtsp://{}/Streaming/Channels/101", rtsp.addr())
    );
    let body = http_get(&cam, "/ISAPI/Security/adminAccesses").await;
    assert!(
        body.contains(&format!(
            "<protocol>RTSP</protocol><portNo>{}</portNo>",
            rtsp.port()
        )),
        "{body}"
    );
    // The NVR serves its channels; credentials are the HikSim's.
    let nvr = HikSim::start(HikSimConfig {
        personality: Personality::nvr(),
        password: "other".into(),
        rtsp: Some(RtspSimConfig::default()),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = nvr.rtsp().unwrap();
    let mut raw = Raw::connect(r).await;
    raw.password = "other".into();
    assert_eq!(
        raw.request("DESCRIBE", &r.url("/Streaming/Channels/301"), &[])
            .await
            .0,
        200
    );
    // Off (the default): no server, and the usual 554.
    let off = HikSim::start(HikSimConfig::default()).await.unwrap();
    assert!(off.rtsp().is_none());
    let body = http_get(&off, "/ISAPI/Security/adminAccesses").await;
    assert!(body.contains("<portNo>554</portNo>"), "{body}");
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn challenge_params(h: &str) -> HashMap<String, String> {
    h.trim_start_matches("Digest")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// GET with Digest (qop=auth) against the HikSim's HTTP side.
async fn http_get(sim: &HikSim, path: &str) -> String {
    async fn once(
        sim: &HikSim,
        path: &str,
        auth: Option<String>,
    ) -> (u16, HashMap<String, String>, String) {
        let mut s = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes())
            .await
            .unwrap();
        let mut r = BufReader::new(s);
        read_head_and_body(&mut r).await
    }
    let (code, h, _) = once(sim, path, None).await;
    assert_eq!(code, 401);
    let p = challenge_params(&h["www-authenticate"]);
    let (realm, nonce) = (&p["realm"], &p["nonce"]);
    let ha1 = md5_hex(&format!("{USER}:{realm}:{PASS}"));
    let ha2 = md5_hex(&format!("GET:{path}"));
    let resp = md5_hex(&format!("{ha1}:{nonce}:00000001:abcdef:auth:{ha2}"));
    let auth = format!(
        "Digest username=\"{USER}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{path}\", qop=auth, nc=00000001, cnonce=\"abcdef\", response=\"{resp}\", opaque=\"\""
    );
    let (code, _, body) = once(sim, path, Some(auth)).await;
    assert_eq!(code, 200);
    body
}

async fn read_head_and_body<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> (u16, HashMap<String, String>, String) {
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut h = HashMap::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).await.unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            h.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len = h
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.unwrap();
    (code, h, String::from_utf8_lossy(&body).into_owned())
}

/// A minimal RTSP client: Digest without qop, skips interleaved data while waiting.
struct Raw {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    cseq: u32,
    challenge: Option<(String, String)>,
    login: bool,
    password: String,
    session: Option<String>,
    rtp_packets: u64,
}

impl Raw {
    async fn connect(sim: &RtspSim) -> Raw {
        let (r, w) = tokio::net::TcpStream::connect(sim.addr())
            .await
            .unwrap()
            .into_split();
        Raw {
            r: BufReader::new(r),
            w,
            cseq: 0,
            challenge: None,
            login: true,
            password: PASS.into(),
            session: None,
            rtp_packets: 0,
        }
    }

    async fn send_raw(&mut self, b: &[u8]) {
        self.w.write_all(b).await.unwrap();
    }

    async fn response(&mut self) -> (u16, HashMap<String, String>, String) {
        let fut = async {
            loop {
                let buf = self.r.fill_buf().await.unwrap();
                if buf.first() == Some(&b'$') {
                    let mut hdr = [0u8; 4];
                    self.r.read_exact(&mut hdr).await.unwrap();
                    let mut data = vec![0; u16::from_be_bytes([hdr[2], hdr[3]]) as usize];
                    self.r.read_exact(&mut data).await.unwrap();
                    if hdr[1] % 2 == 0 {
                        self.rtp_packets += 1;
                    }
                    continue;
                }
                return read_head_and_body(&mut self.r).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .expect("a response")
    }

    async fn request(
        &mut self,
        method: &str,
        url: &str,
        extra: &[(&str, &str)],
    ) -> (u16, HashMap<String, String>, String) {
        for _ in 0..2 {
            self.cseq += 1;
            let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
            for (k, v) in extra {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
            if let (Some(s), false) = (&self.session, extra.iter().any(|(k, _)| *k == "Session")) {
                req.push_str(&format!("Session: {s}\r\n"));
            }
            if let (true, Some((realm, nonce))) = (self.login, &self.challenge) {
                let ha1 = md5_hex(&format!("{USER}:{realm}:{}", self.password));
                let ha2 = md5_hex(&format!("{method}:{url}"));
                let resp = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
                req.push_str(&format!(
                    "Authorization: Digest username=\"{USER}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{url}\", response=\"{resp}\"\r\n"
                ));
            }
            self.w
                .write_all(format!("{req}\r\n").as_bytes())
                .await
                .unwrap();
            let (code, h, body) = self.response().await;
            assert_eq!(
                h.get("cseq").map(String::as_str),
                Some(self.cseq.to_string().as_str())
            );
            if code == 401 && self.challenge.is_none() && self.login {
                let p = challenge_params(&h["www-authenticate"]);
                self.challenge = Some((p["realm"].clone(), p["nonce"].clone()));
                continue;
            }
            if let Some(s) = h.get("session") {
                self.session = Some(s.split(';').next().unwrap().to_string());
            }
            return (code, h, body);
        }
        unreachable!()
    }

    async fn setup_play(&mut self, base: &str) {
        let tcp = [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")];
        let (code, h, _) = self
            .request("SETUP", &format!("{base}/trackID=1"), &tcp)
            .await;
        assert_eq!(code, 200);
        assert!(h["session"].ends_with(";timeout=60"), "{:?}", h["session"]);
        assert!(h["transport"].starts_with("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc="));
        let (code, h, _) = self.request("PLAY", base, &[("Range", "npt=0.000-")]).await;
        assert_eq!(code, 200);
        assert!(
            h["rtp-info"].starts_with(&format!("url={base}/trackID=1;seq=")),
            "{:?}",
            h["rtp-info"]
        );
    }

    /// Reads (skipping interleaved data) until the server closes.
    async fn closed(&mut self) -> bool {
        let mut sink = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.r.read_to_end(&mut sink)).await,
            Ok(Ok(_))
        )
    }
}
