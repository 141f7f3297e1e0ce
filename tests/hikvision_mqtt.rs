//! A camera and an NVR (simulated) through the daemon to a real Mosquitto: clean alarm states
//! from repeated `active`s, history events, device info, discovery, and an NVR that closes its
//! stream every couple of seconds without the camera ever going offline.

mod common;

use common::broker::{Broker, Recorder};
use common::wait_for;
use gatehouse::sim::hikvision::{DeviceClock, HikSim, HikSimConfig, Personality};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// An alarm's retained states, without the `OFF` announced before its first alarm (every
/// alarm the device's triggers name has a state from the start).
fn alarm_states(rec: &Recorder, topic: &str) -> Vec<String> {
    let s: Vec<String> = rec.on(topic).iter().map(|m| m.text()).collect();
    let start = s.iter().position(|x| x != "OFF").unwrap_or(s.len());
    s[start..].to_vec()
}

/// The alarm went ON and then OFF again.
fn on_then_off(rec: &Recorder, topic: &str) -> bool {
    let s = alarm_states(rec, topic);
    s.first().is_some_and(|x| x == "ON") && s.last().is_some_and(|x| x == "OFF")
}

async fn daemon(
    cams: &[(&str, &HikSim)],
    broker: &Broker,
    dir: &std::path::Path,
) -> gatehouse::app::App {
    let yaml = daemon_yaml(cams, broker, dir, "1s");
    let cfg = gatehouse::config::load_str(&yaml, &|_| None).unwrap();
    gatehouse::app::App::start(cfg, None, None).await.unwrap()
}

fn daemon_yaml(
    cams: &[(&str, &HikSim)],
    broker: &Broker,
    dir: &std::path::Path,
    holdoff: &str,
) -> String {
    let mut yaml = format!(
        "version: 1\nstorage: {{ path: {}/g.db }}\nmqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gh-cam-{}\nsources:\n  hikvision:\n",
        dir.display(),
        broker.port,
        rand::random::<u32>()
    );
    for (id, s) in cams {
        yaml.push_str(&format!(
            "    - {{ id: {id}, url: \"{}\", username: admin, password: sim-hik-pass, holdoff: {holdoff}, offline_after: 5s }}\n",
            s.base_url()
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_actives_become_one_on_and_one_off() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "#", false).await;
    let cam = HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&[("garage", &cam)], &broker, dir.path()).await;
    wait_for("stream open", T, || cam.stream_count() == 1).await;
    // A PTZ-like burst: `active` three times a second, never `inactive`.
    for _ in 0..9 {
        cam.push_alert(1, "VMD", "active");
        tokio::time::sleep(Duration::from_millis(333)).await;
    }
    let topic = "gatehouse/camera/garage/ch1/alarm/vmd";
    wait_for("OFF after the hold-off", T, || on_then_off(&rec, topic)).await;
    assert_eq!(
        alarm_states(&rec, topic),
        ["ON", "OFF"],
        "only changes are published"
    );
    assert!(rec.on(topic).iter().all(|m| m.retain));
    // History: one event per change, on the camera's event topic.
    wait_for("events", T, || {
        rec.on("gatehouse/camera/garage/event").len() >= 2
    })
    .await;
    let ev = rec.on("gatehouse/camera/garage/event")[0].json();
    assert_eq!(
        ev["event_type"], "vmd",
        "the device's event type, normalised"
    );
    assert_eq!(ev["channel"], 1);
    assert_eq!(ev["active"], true);
    // Device info and discovery for the alarm seen.
    wait_for("info", T, || {
        !rec.on("gatehouse/camera/garage/info").is_empty()
    })
    .await;
    assert!(
        rec.on("gatehouse/camera/garage/info")[0].json()["serial"]
            .as_str()
            .unwrap()
            .starts_with("DS-2DE4A425IW")
    );
    let cfg_topic = "homeassistant/binary_sensor/gatehouse/camera_garage_ch1_vmd/config";
    wait_for("discovery", T, || !rec.on(cfg_topic).is_empty()).await;
    let c = rec.on(cfg_topic).last().unwrap().json();
    assert_eq!(c["state_topic"], topic);
    assert_eq!(c["device_class"], "motion");
    assert!(
        c["device"]["identifiers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("DS-2DE4A425IW")),
        "{c}"
    );
    let ev_cfg = "homeassistant/event/gatehouse/camera_garage_events/config";
    wait_for("event entity", T, || !rec.on(ev_cfg).is_empty()).await;
    let types = rec.on(ev_cfg).last().unwrap().json()["event_types"].clone();
    assert!(
        types.as_array().unwrap().iter().any(|t| t == "vmd"),
        "{types}"
    );
    // The heartbeat-only `videoloss inactive` never became an alarm: its state is OFF (from
    // the triggers), never ON.
    assert!(
        rec.all()
            .iter()
            .filter(|m| m.topic.contains("/videoloss"))
            .all(|m| m.text() == "OFF")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nvr_closing_its_stream_stays_online_and_reconnects_at_once() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "#", false).await;
    let nvr = HikSim::start(HikSimConfig {
        personality: Personality {
            close_after: Some(Duration::from_millis(1500)),
            ..Personality::nvr()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&[("nvr", &nvr)], &broker, dir.path()).await;
    wait_for("three streams (reconnected after each close)", T, || {
        nvr.stats().streams >= 3
    })
    .await;
    wait_for("online", T, || {
        rec.on("gatehouse/camera/nvr/availability")
            .last()
            .is_some_and(|m| m.text() == "online")
    })
    .await;
    assert!(
        rec.on("gatehouse/camera/nvr/availability")
            .iter()
            .all(|m| m.text() == "online"),
        "never offline for a healthy close"
    );
    // Channels, disks and the RTSP port from the NVR's documents; a failed disk is a problem.
    wait_for("NVR info", T, || {
        !rec.on("gatehouse/camera/nvr/info").is_empty()
    })
    .await;
    let info = rec.on("gatehouse/camera/nvr/info").last().unwrap().json();
    assert_eq!(info["device_type"], "NVR");
    assert_eq!(info["channels"].as_array().unwrap().len(), 4);
    assert_eq!(info["channels"][0]["name"], "Camera 01");
    assert_eq!(
        info["channels"][2]["name"], "Gate & Drive",
        "an escaped character decoded"
    );
    assert_eq!(info["disks"][1]["status"], "error");
    assert_eq!(info["rtsp_port"], 554);
    // An alarm on channel 15 still arrives on a later stream.
    wait_for("stream open", T, || nvr.stream_count() == 1).await;
    nvr.push_alert(15, "linedetection", "active");
    wait_for("NVR channel alarm", T, || {
        rec.on("gatehouse/camera/nvr/ch15/alarm/linedetection")
            .first()
            .is_some_and(|m| m.text() == "ON")
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_camera_password_is_reported_and_not_hammered() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "gatehouse/camera/#", false).await;
    let cam = HikSim::start(HikSimConfig {
        password: "something-else".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&[("door", &cam)], &broker, dir.path()).await;
    wait_for("reported offline after the grace period", T, || {
        rec.on("gatehouse/camera/door/state")
            .last()
            .is_some_and(|m| {
                m.json()["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("authentication failed")
            })
    })
    .await;
    // The alert stream, device info and pictures share one gate: one bad login in all.
    let st = cam.stats();
    assert_eq!(st.bad_logins, 1, "one attempt, no loop: {st:?}");
    assert_eq!(st.locked_out, 0, "never provoked the lockout");
    // Restarted at once (a person fixing something else): the wait is remembered, nothing
    // is sent with the refused credentials (three bad logins in a minute lock the device).
    app.shutdown().await;
    let app = daemon(&[("door", &cam)], &broker, dir.path()).await;
    wait_for("state after the restart", T, || {
        rec.on("gatehouse/camera/door/state")
            .last()
            .is_some_and(|m| {
                m.json()["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("not trying them again")
            })
    })
    .await;
    let st = cam.stats();
    assert_eq!(
        st.bad_logins, 1,
        "no new bad login after the restart: {st:?}"
    );
    app.shutdown().await;
    // The password fixed in the config: tried at once.
    let yaml = daemon_yaml(&[("door", &cam)], &broker, dir.path(), "1s")
        .replace("password: sim-hik-pass", "password: something-else");
    let cfg = gatehouse::config::load_str(&yaml, &|_| None).unwrap();
    let app = gatehouse::app::App::start(cfg, None, None).await.unwrap();
    wait_for("online with the right password", T, || {
        rec.on("gatehouse/camera/door/availability")
            .last()
            .is_some_and(|m| m.text() == "online")
    })
    .await;
    assert_eq!(cam.stats().bad_logins, 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_in_the_stream_are_kept_per_channel() {
    let broker = Broker::start();
    let cam = HikSim::start(HikSimConfig {
        personality: Personality {
            jpeg_parts: true,
            ..Personality::camera()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&[("porch", &cam)], &broker, dir.path()).await;
    wait_for("stream open", T, || cam.stream_count() == 1).await;
    cam.push_alert(2, "VMD", "active");
    wait_for("picture kept", T, || {
        app.pictures.latest("porch", Some(2)).is_some()
    })
    .await;
    let p = app.pictures.latest("porch", Some(2)).unwrap();
    assert!(
        p.jpeg.starts_with(&[0xFF, 0xD8]) && p.jpeg.ends_with(&[0xFF, 0xD9]),
        "binary bytes intact: {:?}",
        p.jpeg
    );
    assert!(app.pictures.latest("porch", Some(1)).is_none());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_ptz_capture_is_one_on_and_one_off() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "gatehouse/camera/#", false).await;
    let ptz = HikSim::start(HikSimConfig {
        personality: Personality::ptz(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&[("ptz", &ptz)], &broker, dir.path()).await;
    wait_for("stream open", T, || ptz.stream_count() == 1).await;
    // 160 real parts over 53 s: VMD `active` about three times a second with gaps of up to
    // 4 s, never `inactive`. At 8× the gaps are ≤ 0.5 s, under the 1 s hold-off (5 s at
    // real speed): one burst.
    let bodies = gatehouse::sim::hikvision::capture_bodies(include_str!(
        "fixtures/hikvision/hiksink_ptz_sequence_first160.jsonl"
    ));
    ptz.replay(bodies, 8.0).await.unwrap();
    let topic = "gatehouse/camera/ptz/ch1/alarm/vmd";
    wait_for("OFF after the hold-off", T, || on_then_off(&rec, topic)).await;
    // Nothing more comes later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(alarm_states(&rec, topic), ["ON", "OFF"]);
    let events = rec.on("gatehouse/camera/ptz/event");
    assert_eq!(events.len(), 2, "one history event per change");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_quirk_and_no_inactive_still_gives_clean_states() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "gatehouse/camera/#", false).await;
    let cam = HikSim::start(HikSimConfig {
        personality: Personality::quirky(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&[("odd", &cam)], &broker, dir.path()).await;
    wait_for("stream open", T, || cam.stream_count() == 1).await;
    cam.burst(3, "fielddetection", 4, Duration::from_millis(200))
        .await
        .unwrap();
    let topic = "gatehouse/camera/odd/ch3/alarm/fielddetection";
    wait_for("OFF by the hold-off", T, || on_then_off(&rec, topic)).await;
    assert_eq!(alarm_states(&rec, topic), ["ON", "OFF"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_holdoff_applies_live_to_an_alarm_that_is_on() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "gatehouse/camera/#", false).await;
    let cam = HikSim::start(HikSimConfig {
        personality: Personality::ptz(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let yaml = daemon_yaml(&[("yard", &cam)], &broker, dir.path(), "10m");
    std::fs::write(&path, &yaml).unwrap();
    let cfg = gatehouse::config::load_str(&yaml, &|_| None).unwrap();
    let app = gatehouse::app::App::start(cfg, Some(path.clone()), None)
        .await
        .unwrap();
    wait_for("stream open", T, || cam.stream_count() == 1).await;
    cam.push_alert(1, "VMD", "active");
    let topic = "gatehouse/camera/yard/ch1/alarm/vmd";
    wait_for("ON", T, || {
        rec.on(topic).last().is_some_and(|m| m.text() == "ON")
    })
    .await;
    // With ten minutes it would stay ON for the rest of the test.
    std::fs::write(&path, yaml.replace("holdoff: 10m", "holdoff: 1s")).unwrap();
    wait_for("OFF by the new hold-off", T, || {
        rec.on(topic).last().is_some_and(|m| m.text() == "OFF")
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_with_a_wrong_clock_is_followed_by_receive_time() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "gatehouse/camera/#", false).await;
    let cam = HikSim::start(HikSimConfig::default()).await.unwrap();
    // At UTC+8, writing its offset as `-8:00`: read literally, 16 h in the future.
    cam.set_clock(DeviceClock {
        wrong_offset: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&[("gate", &cam)], &broker, dir.path()).await;
    wait_for("stream open", T, || cam.stream_count() == 1).await;
    let topic = "gatehouse/camera/gate/ch1/alarm/linedetection";
    let states = |rec: &Recorder| alarm_states(rec, topic);
    let before = chrono::Utc::now();
    cam.push_alert(1, "linedetection", "active");
    wait_for("ON", T, || states(&rec).last().is_some_and(|s| s == "ON")).await;
    cam.push_alert(1, "linedetection", "inactive");
    wait_for("OFF", T, || states(&rec).last().is_some_and(|s| s == "OFF")).await;
    // NTP fixes the clock (16 h back): the next alarm counts as much as the first.
    cam.set_clock(DeviceClock::default());
    cam.push_alert(1, "linedetection", "active");
    wait_for("ON again", T, || states(&rec).len() >= 3).await;
    cam.push_alert(1, "linedetection", "inactive");
    wait_for("OFF again", T, || states(&rec).len() >= 4).await;
    assert_eq!(states(&rec), ["ON", "OFF", "ON", "OFF"]);
    // The event and the state are separate messages: the last event may land after the state.
    wait_for("four events", T, || {
        rec.on("gatehouse/camera/gate/event").len() >= 4
    })
    .await;
    // Events carry the receive time; the device's time is its own field.
    let evs: Vec<_> = rec
        .on("gatehouse/camera/gate/event")
        .iter()
        .map(|m| m.json())
        .collect();
    assert_eq!(evs.len(), 4, "{evs:?}");
    for e in &evs {
        let t = chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
        assert!(
            t >= before - chrono::Duration::seconds(1)
                && t <= chrono::Utc::now() + chrono::Duration::seconds(1),
            "received now: {e}"
        );
    }
    assert!(
        evs[0]["device_time"].as_str().unwrap().ends_with("-08:00"),
        "as the device said: {}",
        evs[0]
    );
    // A backlog the device retransmits after a reconnect is history: stored and published
    // flagged, no state change.
    cam.push_raw("<EventNotificationAlert><channelID>1</channelID><dateTime>2020-01-01T00:00:00Z</dateTime><eventType>VMD</eventType><eventState>active</eventState><isDataRetransmission>true</isDataRetransmission></EventNotificationAlert>");
    wait_for("history event", T, || {
        rec.on("gatehouse/camera/gate/event").len() >= 5
    })
    .await;
    let h = rec.on("gatehouse/camera/gate/event")[4].json();
    assert_eq!(
        (h["event_type"].as_str(), h["backlog"].as_bool()),
        (Some("vmd"), Some(true))
    );
    assert_eq!(h["device_time"], "2020-01-01T00:00:00+00:00");
    assert!(
        rec.on("gatehouse/camera/gate/ch1/alarm/vmd")
            .iter()
            .all(|m| m.text() == "OFF"),
        "no state from history"
    );
    app.shutdown().await;
    let db = rusqlite::Connection::open(dir.path().join("g.db")).unwrap();
    let stored: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE detail LIKE '%\"backlog\":true%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 1, "the history is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_camera_away_keeps_its_alarm_entities() {
    // Home Assistant deletes an entity whose discovery config is cleared, and with it the
    // user's name, area and settings: a restart must not clear what a camera that has not
    // answered yet will announce again.
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "#", false).await;
    let cam = HikSim::start(HikSimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&[("gate", &cam)], &broker, dir.path()).await;
    cam.push_alert(1, "linedetection", "active");
    let is_alarm_cfg = |t: &str| {
        t.starts_with("homeassistant/binary_sensor/")
            && t.contains("gate")
            && t.ends_with("/config")
    };
    wait_for("alarm entities discovered", T, || {
        rec.all()
            .iter()
            .any(|m| is_alarm_cfg(&m.topic) && !m.payload.is_empty())
    })
    .await;
    app.shutdown().await;
    cam.go_down().await;
    let mark = rec.all().len();
    let bridge_before = rec.on("gatehouse/bridge/state").len();
    let app = daemon(&[("gate", &cam)], &broker, dir.path()).await;
    wait_for("bridge online again", T, || {
        rec.on("gatehouse/bridge/state")[bridge_before..]
            .iter()
            .any(|m| m.text() == "online")
    })
    .await;
    // The camera comes back: its info is fetched again, and nothing was cleared meanwhile.
    cam.come_up().await.unwrap();
    wait_for("camera info again", T, || {
        rec.all()[mark..]
            .iter()
            .any(|m| m.topic == "gatehouse/camera/gate/info")
    })
    .await;
    let cleared: Vec<String> = rec.all()[mark..]
        .iter()
        .filter(|m| is_alarm_cfg(&m.topic) && m.payload.is_empty())
        .map(|m| m.topic.clone())
        .collect();
    assert!(
        cleared.is_empty(),
        "cleared across the restart: {cleared:?}"
    );
    app.shutdown().await;
}
