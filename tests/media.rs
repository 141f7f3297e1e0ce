//! Snapshots through the whole daemon: MQTT command → JPEG on MQTT, from the camera's
//! `/picture`, from a cold RTSP session (the simulator's built-in RTSP server and GStreamer's,
//! H.264 Main and High), and from a running stream; retained commands refused; pictures saved
//! with retention and linked in SQLite.

mod common;

use common::broker::{Broker, Recorder, publish};
use common::rtsp::{Profile, RtspOpts, RtspServer};
use common::wait_for;
use gatehouse::config::StreamKind;
use gatehouse::sim::hikvision::{HikSim, HikSimConfig, Personality};
use gatehouse::sim::rtsp::RtspSimConfig;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn yaml(broker: &Broker, dir: &std::path::Path, cams: &str, extra: &str) -> String {
    format!(
        "version: 1\nstorage: {{ path: {}/g.db }}\nmqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gh-media-{}\nsources:\n  hikvision:\n{cams}{extra}",
        dir.display(),
        broker.port,
        rand::random::<u32>()
    )
}

fn cam_line(id: &str, sim: &HikSim, extra: &str) -> String {
    format!(
        "    - {{ id: {id}, url: \"{}\", username: admin, password: sim-hik-pass{extra} }}\n",
        sim.base_url()
    )
}

async fn start(yaml: &str) -> gatehouse::app::App {
    let cfg = gatehouse::config::load_str(yaml, &|_| None).unwrap();
    gatehouse::app::App::start(cfg, None, None).await.unwrap()
}

/// Width and height from a JPEG's SOF marker: proof it is a JPEG of that size.
pub fn jpeg_size(j: &[u8]) -> Option<(u16, u16)> {
    if !j.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    while i + 9 < j.len() {
        if j[i] != 0xFF {
            return None;
        }
        let m = j[i + 1];
        let len = u16::from_be_bytes([j[i + 2], j[i + 3]]) as usize;
        if (0xC0..=0xC2).contains(&m) {
            let h = u16::from_be_bytes([j[i + 5], j[i + 6]]);
            let w = u16::from_be_bytes([j[i + 7], j[i + 8]]);
            return Some((w, h));
        }
        i += 2 + len;
    }
    None
}

async fn camera_sim(rtsp: bool) -> HikSim {
    HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        rtsp: rtsp.then(RtspSimConfig::default),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_from_the_cameras_picture_and_retained_commands_refused() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "gatehouse/#", false).await;
    let cam = camera_sim(false).await;
    let dir = tempfile::tempdir().unwrap();
    let app = start(&yaml(
        &broker,
        dir.path(),
        &cam_line("garage", &cam, ""),
        "",
    ))
    .await;
    wait_for("subscribed", T, || {
        rec.on("gatehouse/bridge/state")
            .iter()
            .any(|m| m.text() == "online")
    })
    .await;
    // A retained command is never acted on (a broker replays it at every subscribe).
    publish(
        broker.port,
        "gatehouse/camera/garage/snapshot/set",
        b"PRESS",
        true,
    )
    .await;
    wait_for("rejection", T, || {
        rec.on("gatehouse/command/result")
            .iter()
            .any(|m| m.json()["status"] == "rejected")
    })
    .await;
    assert!(rec.on("gatehouse/camera/garage/ch1/snapshot").is_empty());
    // Clear the retained command so it does not haunt the broker.
    publish(
        broker.port,
        "gatehouse/camera/garage/snapshot/set",
        b"",
        true,
    )
    .await;

    publish(
        broker.port,
        "gatehouse/camera/garage/snapshot/set",
        b"PRESS",
        false,
    )
    .await;
    wait_for("picture", T, || {
        !rec.on("gatehouse/camera/garage/ch1/snapshot").is_empty()
    })
    .await;
    let pic = &rec.on("gatehouse/camera/garage/ch1/snapshot")[0];
    assert_eq!(
        pic.payload,
        cam.picture(),
        "the camera's own JPEG, byte for byte"
    );
    assert!(!pic.retain, "not retained unless configured");
    wait_for("meta", T, || {
        !rec.on("gatehouse/camera/garage/ch1/snapshot/meta")
            .is_empty()
    })
    .await;
    let meta = rec.on("gatehouse/camera/garage/ch1/snapshot/meta")[0].json();
    assert_eq!(meta["source"], "picture");
    assert_eq!(meta["trigger"], "mqtt");
    wait_for("confirmed", T, || {
        rec.on("gatehouse/command/result")
            .iter()
            .any(|m| m.json()["status"] == "confirmed")
    })
    .await;
    // Saved on disk and in SQLite.
    let id = meta["id"].as_str().unwrap().to_string();
    let row = app.store.picture(&id).unwrap().expect("picture row");
    assert_eq!(std::fs::read(&row.path).unwrap(), cam.picture());
    app.shutdown().await;
}

/// A daemon with one camera line, once it has the device info (the RTSP port comes from
/// adminAccesses, learned with it).
struct Daemon {
    _broker: Broker,
    _dir: tempfile::TempDir,
    app: gatehouse::app::App,
    media: gatehouse::media::service::Media,
}

async fn daemon(cam_line: &str, extra: &str) -> Daemon {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "gatehouse/camera/#", false).await;
    let dir = tempfile::tempdir().unwrap();
    let app = start(&yaml(&broker, dir.path(), cam_line, extra)).await;
    let media = app.media.clone().unwrap();
    wait_for("device info", T, || {
        !rec.on("gatehouse/camera/garage/info").is_empty()
    })
    .await;
    Daemon {
        _broker: broker,
        _dir: dir,
        app,
        media,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_from_a_cold_rtsp_session_when_picture_fails() {
    let cam = camera_sim(true).await;
    // The camera answers /picture with XML ResponseStatus and HTTP 200 (as real ones do).
    cam.set_picture_error(true);
    let Daemon {
        app,
        media,
        _broker,
        _dir,
    } = daemon(&cam_line("garage", &cam, ""), "").await;
    let snap = media
        .snapshot("garage", 1, None, gatehouse::media::service::Trigger::Rest)
        .await
        .unwrap();
    assert_eq!(snap.source, "rtsp");
    assert_eq!(jpeg_size(&snap.jpeg), Some((640, 360)));
    let rtsp = cam.rtsp().unwrap().stats();
    assert_eq!(rtsp.plays, 1, "one session opened");
    // The session idles out (idle_close) rather than staying open; a second snapshot while it
    // is still open reuses it.
    let again = media
        .snapshot("garage", 1, None, gatehouse::media::service::Trigger::Rest)
        .await
        .unwrap();
    assert_eq!(again.source, "live");
    assert_eq!(cam.rtsp().unwrap().stats().plays, 1);
    app.shutdown().await;
    wait_for("TEARDOWN on shutdown", T, || {
        cam.rtsp().unwrap().stats().sessions_active == 0
    })
    .await;
}

/// Eight pictures asked at once on eight channels (alarms on every channel, a burst of door
/// events): each decode holds a whole decoder (~27 MB at 1080p), so they take turns, and
/// every one of them arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_on_eight_channels_at_once_take_turns_to_decode_and_all_arrive() {
    use gatehouse::media::decode::MAX_DECODES;
    use gatehouse::media::service::Trigger;
    let cam = HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        rtsp: Some(RtspSimConfig {
            channels: 8,
            running_since: Some(Duration::ZERO),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let Daemon {
        app,
        media,
        _broker,
        _dir,
    } = daemon(&cam_line("garage", &cam, ", use_picture: false"), "").await;
    let now = tokio::time::Instant::now();
    let pictures = futures_util::future::join_all((1..=8).map(|ch| {
        let media = media.clone();
        async move {
            media
                .snapshot(
                    "garage",
                    ch,
                    Some(now),
                    Trigger::Alarm("linedetection".into()),
                )
                .await
        }
    }))
    .await;
    for (ch, p) in (1..=8).zip(pictures) {
        let p = p.unwrap_or_else(|e| panic!("channel {ch}: {e}"));
        assert_eq!((p.channel, p.source.as_str()), (ch, "rtsp"));
        assert_eq!(jpeg_size(&p.jpeg), Some((640, 360)));
    }
    let s = media.decode_stats();
    assert_eq!((s.done, s.waiting, s.running), (8, 0, 0), "{s:?}");
    assert!(s.peak <= MAX_DECODES, "{} decodes at once: {s:?}", s.peak);
    app.shutdown().await;
}

/// A camera encodes whether or not anyone watches, so a cold session joins mid-GOP. Asked
/// with ISAPI `requestKeyFrame`, it starts a GOP at once: with a 30 s GOP the picture arrives
/// within the 10 s snapshot timeout only because of the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_session_that_joins_mid_gop_asks_for_a_key_frame() {
    let long_gop = gatehouse::sim::rtsp::StreamConfig {
        gop: 300,
        seconds: 30,
        ..gatehouse::sim::rtsp::StreamConfig::main()
    };
    let cam = HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        rtsp: Some(RtspSimConfig {
            main: long_gop,
            // 1 s into a GOP of 30 s: the next scheduled IDR is 29 s away.
            running_since: Some(Duration::from_secs(1)),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let Daemon {
        app,
        media,
        _broker,
        _dir,
    } = daemon(&cam_line("garage", &cam, ", use_picture: false"), "").await;
    let snap = media
        .snapshot("garage", 1, None, gatehouse::media::service::Trigger::Rest)
        .await
        .expect("a picture within snapshot_timeout (10 s) though the GOP is 30 s");
    assert_eq!(snap.source, "rtsp");
    assert_eq!(jpeg_size(&snap.jpeg), Some((640, 360)));
    let rtsp = cam.rtsp().unwrap().stats();
    assert_eq!(rtsp.key_frame_requests, 1, "asked once: {rtsp:?}");
    let hub = media.hub("garage", 1, StreamKind::Main).unwrap();
    assert_eq!(hub.stats().key_frames_requested, 1);
    app.shutdown().await;
}

/// The live stream of a camera as the independent check saw it: encoding all along (every
/// client joins mid-GOP), a 2 s GOP on a clock 2000 ppm fast with jittery timestamps (each
/// GOP spans 1.996 s ± a few ms), no `requestKeyFrame`; `hls_segment: 2s`, window 4. A
/// player reloading the playlist must see one `#EXT-X-TARGETDURATION` for its whole life and
/// ~2 s segments (before: 1, then 4; and 4 s segments, the GOP a hair under the target).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_playlist_keeps_its_target_duration_and_follows_a_slightly_fast_gop() {
    let two_s = gatehouse::sim::rtsp::StreamConfig {
        gop: 20,
        seconds: 4,
        ..gatehouse::sim::rtsp::StreamConfig::main()
    };
    let cam = HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        rtsp: Some(RtspSimConfig {
            main: two_s,
            running_since: Some(Duration::from_millis(3_600_700)),
            clock_ppm: -2000,
            jitter_ticks: 300,
            ..Default::default()
        }),
        key_frame_requests: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = daemon(&cam_line("garage", &cam, ", use_picture: false"), "").await;
    let live = d.media.live_start("garage", 1).await.unwrap();
    // A player: reload the playlist four times a second until 8 segments have been listed.
    let mut seen = common::hls::Seen::default();
    let mut reload = tokio::time::interval(Duration::from_millis(250));
    let give_up = tokio::time::Instant::now() + Duration::from_secs(40);
    while seen.segments.len() < 8 {
        assert!(tokio::time::Instant::now() < give_up, "too slow: {seen:?}");
        reload.tick().await;
        live.touch();
        if let Some(m) = live.playlist("") {
            seen.read(&m);
        }
    }
    assert_eq!(seen.target(), 2, "{seen:?}");
    // The first (short, 0.5 s) and the rest of its GOP aside, each segment is one GOP.
    let steady: Vec<f64> = seen.segments.values().skip(2).copied().collect();
    assert!(
        steady.iter().all(|d| (1.98..2.01).contains(d)),
        "segments should follow the 1.996 s GOP: {steady:?}"
    );
    d.media.live_stop("garage", 1);
    d.app.shutdown().await;
}

/// A camera without ISAPI (any RTSP camera) is a `sources.hikvision` entry with `id` and
/// `rtsp_url` only. Before, it needed a dummy `url` and `password`, that address was retried
/// for ever, the camera was published offline although its video worked, and every picture
/// tried `/picture` first. Now: no HTTP at all, pictures from RTSP, availability from RTSP
/// (DESCRIBE), and Home Assistant does not call it a Hikvision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_only_camera_needs_no_isapi_and_its_availability_follows_rtsp() {
    let rtsp = gatehouse::sim::rtsp::RtspSim::start(RtspSimConfig::default())
        .await
        .unwrap();
    let url =
        rtsp.url("/Streaming/Channels/101")
            .replacen("rtsp://", "rtsp://admin:sim-hik-pass@", 1);
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "#", false).await;
    let dir = tempfile::tempdir().unwrap();
    let cams = format!("    - {{ id: porch, rtsp_url: \"{url}\", offline_after: 1s }}\n");
    let app = start(&yaml(&broker, dir.path(), &cams, "")).await;
    let availability = || {
        rec.on("gatehouse/camera/porch/availability")
            .last()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
    };
    wait_for("porch online", T, || {
        availability().as_deref() == Some("online")
    })
    .await;
    let media = app.media.clone().unwrap();
    let snap = media
        .snapshot("porch", 1, None, gatehouse::media::service::Trigger::Rest)
        .await
        .unwrap();
    assert_eq!(snap.source, "rtsp");
    assert_eq!(jpeg_size(&snap.jpeg), Some((640, 360)));
    let conn = "homeassistant/binary_sensor/gatehouse/camera_porch_connectivity/config";
    wait_for("discovery", T, || !rec.on(conn).is_empty()).await;
    let dev = rec.on(conn)[0].json()["device"].clone();
    assert_eq!(dev["manufacturer"], "RTSP", "{dev}");
    assert_eq!(dev["model"], "RTSP camera", "{dev}");
    // The camera goes away: offline once offline_after has passed.
    drop(rtsp);
    wait_for("porch offline", T, || {
        availability().as_deref() == Some("offline")
    })
    .await;
    let state = rec
        .on("gatehouse/camera/porch/state")
        .last()
        .unwrap()
        .json();
    assert!(
        state["detail"].as_str().unwrap_or("").contains("RTSP"),
        "says why: {state}"
    );
    app.shutdown().await;
}

/// A device that answers `requestKeyFrame` with an error (here: its RTSP is another server,
/// as with an explicit `rtsp_url`) is asked once, never again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_cannot_make_key_frames_is_asked_once() {
    let cam = camera_sim(false).await;
    let rtsp = gatehouse::sim::rtsp::RtspSim::start(RtspSimConfig {
        main: gatehouse::sim::rtsp::StreamConfig {
            gop: 20,
            seconds: 2,
            ..gatehouse::sim::rtsp::StreamConfig::main()
        },
        running_since: Some(Duration::from_millis(500)),
        ..Default::default()
    })
    .await
    .unwrap();
    let url =
        rtsp.url("/Streaming/Channels/101")
            .replacen("rtsp://", "rtsp://admin:sim-hik-pass@", 1);
    let Daemon {
        app,
        media,
        _broker,
        _dir,
    } = daemon(
        &cam_line(
            "garage",
            &cam,
            &format!(", use_picture: false, rtsp_url: \"{url}\""),
        ),
        "media: { idle_close: 1s }\n",
    )
    .await;
    let hub = media.hub("garage", 1, StreamKind::Main).unwrap();
    // Three cold sessions (each idles out before the next); GOP 2 s, so pictures come
    // anyway. A session that happens to join on an IDR asks nothing (1 in 20): only all three
    // doing so (1 in 8,000) would leave the count at 0.
    for _ in 0..3 {
        wait_for("session closed", T, || !hub.stats().running).await;
        let snap = media
            .snapshot("garage", 1, None, gatehouse::media::service::Trigger::Rest)
            .await
            .unwrap();
        assert_eq!(snap.source, "rtsp");
    }
    assert_eq!(hub.stats().sessions_opened, 3);
    assert_eq!(hub.stats().key_frames_requested, 1, "{:?}", hub.stats());
    assert_eq!(rtsp.stats().key_frame_requests, 0);
    app.shutdown().await;
}

async fn gst_snapshot(profile: Profile) {
    let server = RtspServer::start(RtspOpts {
        profile,
        width: 800,
        height: 448,
        ..RtspOpts::default().with_auth("admin", "p@ss:w/rd", common::rtsp::AuthMethod::Digest)
    });
    let broker = Broker::start();
    let cam = camera_sim(false).await;
    let dir = tempfile::tempdir().unwrap();
    let line = cam_line(
        "porch",
        &cam,
        &format!(
            ", use_picture: false, rtsp_url: \"{}\"",
            server.url_with_credentials("/Streaming/Channels/101")
        ),
    );
    let app = start(&yaml(
        &broker,
        dir.path(),
        &line,
        "media: { max_width: 400 }\n",
    ))
    .await;
    let media = app.media.clone().unwrap();
    let snap = media
        .snapshot("porch", 1, None, gatehouse::media::service::Trigger::Rest)
        .await
        .unwrap();
    assert_eq!(snap.source, "rtsp");
    assert_eq!(
        jpeg_size(&snap.jpeg),
        Some((400, 224)),
        "decoded and scaled to max_width"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_from_gstreamer_h264_high_with_digest_credentials_in_the_url() {
    gst_snapshot(Profile::High).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_from_gstreamer_h264_main() {
    gst_snapshot(Profile::Main).await;
}

/// The busy stream of the test below: 320×180 at 25 fps with sensor noise, about 2 Mbit/s.
#[cfg(target_os = "linux")]
async fn busy_sub_camera() -> HikSim {
    let busy = gatehouse::sim::rtsp::StreamConfig {
        fps: 25,
        gop: 50,
        seconds: 2,
        noise: 12,
        ..gatehouse::sim::rtsp::StreamConfig::sub()
    };
    HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        rtsp: Some(RtspSimConfig {
            sub: busy,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// `media.batch_reads: false` leaves the socket alone, however busy the stream.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reads_off_sets_no_low_water_mark() {
    let cam = busy_sub_camera().await;
    let d = daemon(
        &cam_line("garage", &cam, ", use_picture: false"),
        "media: { batch_reads: false }\n",
    )
    .await;
    let busy = d.media.hub("garage", 1, StreamKind::Sub).unwrap();
    let _b = busy.subscribe();
    // Past two measuring windows.
    wait_for("frames", T, || busy.stats().frames >= 60).await;
    assert_eq!(busy.stats().rcvlowat, None, "{:?}", busy.stats());
    d.app.shutdown().await;
}

/// Reads are batched with `SO_RCVLOWAT` (src/media/rcvlowat.rs) on a busy stream and not on
/// a quiet one, and when a busy camera stops sending the mark is let go, so the frames it did
/// send are not left in the socket below it (without that they would wait for the next frame,
/// here never: the session would die of silence after 10 s with them undelivered).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_streams_batch_reads_and_a_camera_that_stops_sending_is_not_held() {
    use gatehouse::media::rcvlowat::MIN;
    // Main: the simulator's clean 640×360 pattern, 10 fps, tens of kbit/s. Sub: busy.
    let cam = busy_sub_camera().await;
    let rtsp = cam.rtsp().unwrap();
    let Daemon {
        app,
        media,
        _broker,
        _dir,
    } = daemon(&cam_line("garage", &cam, ", use_picture: false"), "").await;
    let quiet = media.hub("garage", 1, StreamKind::Main).unwrap();
    let busy = media.hub("garage", 1, StreamKind::Sub).unwrap();
    let (_q, _b) = (quiet.subscribe(), busy.subscribe());
    wait_for("the busy stream's low-water mark", T, || {
        busy.stats().rcvlowat.is_some_and(|b| b >= MIN)
    })
    .await;
    // Two measuring windows (a second each) of the quiet stream: it stays off.
    wait_for("the quiet stream measured", T, || {
        quiet.stats().frames >= 22
    })
    .await;
    assert_eq!(quiet.stats().rcvlowat, Some(1), "{:?}", quiet.stats());

    rtsp.freeze(true);
    let delivered = || quiet.stats().frames + busy.stats().frames;
    wait_for(
        "every frame sent before the camera stopped delivered, the mark let go",
        Duration::from_secs(5),
        || busy.stats().rcvlowat == Some(1) && delivered() == rtsp.stats().frames_sent,
    )
    .await;
    assert_eq!(rtsp.stats().frames_dropped, 0);
    assert_eq!(busy.stats().sessions_opened, 1, "{:?}", busy.stats());

    // Sending again: measured afresh, batched again.
    rtsp.freeze(false);
    wait_for("the mark back after a thaw", T, || {
        busy.stats().rcvlowat.is_some_and(|b| b >= MIN)
    })
    .await;
    assert_eq!(busy.stats().sessions_opened, 1);

    // The scene goes still: from the next keyframe the busy stream's frames are a few hundred
    // bytes, far below the mark, so until a measuring window ends they would sit in the socket
    // a mark's worth at a time (seconds of them). The stall bound lets go of them instead: no
    // frame waits anywhere near a second (a door event's picture must be taken within one).
    let mut rx = busy.subscribe();
    rtsp.still(true);
    let (mut last, mut max_gap, mut small) = (None, Duration::ZERO, 0);
    // 5 s of stream time: the switch comes within a GOP (2 s), then 3 s of the still scene.
    for _ in 0..125 {
        let f = match tokio::time::timeout(T, rx.recv()).await {
            Ok(Some(gatehouse::media::hub::Recv::Frame(f))) => f,
            other => panic!("no frame: {:?}", other.map(|r| r.is_some())),
        };
        if let Some(l) = last {
            max_gap = max_gap.max(f.received - l);
        }
        last = Some(f.received);
        small += usize::from(f.data.len() < 1_000);
    }
    assert!(small >= 50, "the scene went still: {small} small frames");
    assert!(
        max_gap < Duration::from_secs(1),
        "a frame was held {max_gap:?}"
    );
    assert_eq!(busy.stats().rcvlowat, Some(1), "{:?}", busy.stats());
    assert_eq!(busy.stats().sessions_opened, 1);
    app.shutdown().await;
}

/// A daemon without doors (cameras only) stops at once: the task that answers door commands
/// nobody owns used to wait for every command sender to go, which the MQTT and web sides
/// outlive, so each stop hung for the full 10 s sink timeout (a systemd stop, a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_without_doors_stops_without_waiting_out_a_timeout() {
    let cam = camera_sim(false).await;
    let d = daemon(&cam_line("garage", &cam, ""), "").await;
    let _keep = d.media.clone();
    tokio::time::timeout(Duration::from_secs(5), d.app.shutdown())
        .await
        .expect("shutdown finished well before the 10 s sink timeout");
}
