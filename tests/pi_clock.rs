//! A Raspberry Pi has no real-time clock: NTP steps its wall clock at boot, by days, forwards
//! and backwards, while gatehouse runs. The running daemon, with its clock stepped the way NTP
//! does it (`OffsetClock::jump`: wall time moves, no time passes), takes no retention, expiry
//! or connection decision on the step.

mod common;

use chrono::{DateTime, Utc};
use common::broker::{Broker, Recorder};
use common::web::WebHarness;
use common::{Harness, wait_for};
use gatehouse::app::App;
use gatehouse::sim::net2::SimConfig;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

const LOCKDOWN: &str = "/api/access-control/emergency/lockdown";
const EMERGENCY: &str = "/api/access-control/emergency";

fn lockdowns(w: &WebHarness) -> Vec<bool> {
    w.h.sim
        .commands()
        .into_iter()
        .filter(|c| c.path.ends_with("controlLockdown"))
        .map(|c| c.body["lockdown"].as_bool().unwrap())
        .collect()
}

async fn expires_at(w: &WebHarness, token: &str) -> DateTime<Utc> {
    let (st, res) = w.get(EMERGENCY, token).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(res["mode"], "lockdown", "{res}");
    res["expires_at"].as_str().unwrap().parse().unwrap()
}

/// Until the published expiry differs from `was` (the daemon saw the step and re-based it).
async fn rebased(w: &WebHarness, token: &str, was: DateTime<Utc>) -> DateTime<Utc> {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = expires_at(w, token).await;
        if (e - was).abs() > chrono::Duration::minutes(1) {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the expiry was never re-based"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stepped_wall_clock_neither_ends_a_lockdown_early_nor_keeps_it_late() {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    let admin = w.login("ada").await;
    wait_for("Net2 ready for commands", Duration::from_secs(15), || {
        w.h.app().bus.health("net2").is_some_and(|h| h.ready)
    })
    .await;
    let b = json!({"property_id": "default", "reason": "Drill", "timeout_minutes": 10});
    let (st, res) = w.call(Method::POST, LOCKDOWN, Some(&admin), Some(b)).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    let first = expires_at(&w, &admin).await;

    // NTP steps the clock 3 days forward: the lockdown's wall-clock expiry is long past, but
    // its 10 minutes are not. It stays, its expiry re-based on the new wall time.
    w.h.clock.jump(chrono::Duration::days(3));
    let e = rebased(&w, &admin, first).await;
    let shift = e - first;
    assert!(
        (shift - chrono::Duration::days(3)).abs() < chrono::Duration::seconds(30),
        "re-based by the step: {shift}"
    );
    assert_eq!(lockdowns(&w), [true], "not restored by a step forward");

    // Then 5 days back (2 days before where it started): the lockdown is not kept for days.
    w.h.clock.jump(-chrono::Duration::days(5));
    let e2 = rebased(&w, &admin, e).await;
    assert!(
        (e2 - (first - chrono::Duration::days(2))).abs() < chrono::Duration::seconds(30),
        "re-based by the step back: {e2} (first {first})"
    );
    assert_eq!(lockdowns(&w), [true]);

    // Its 10 minutes pass: restored, once, when they would have without any step.
    w.h.clock.advance(Duration::from_secs(10 * 60 + 1));
    wait_for(
        "lockdown off at its expiry",
        Duration::from_secs(10),
        || lockdowns(&w) == [true, false],
    )
    .await;
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, res) = w.get(EMERGENCY, &admin).await;
        if res["mode"] == "normal" {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "{res}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockdown_kept_across_a_boot_at_1970_ends_when_ntp_says_it_has() {
    let mut w = WebHarness::start(SimConfig::default(), "", "").await;
    let admin = w.login("ada").await;
    wait_for("Net2 ready for commands", Duration::from_secs(15), || {
        w.h.app().bus.health("net2").is_some_and(|h| h.ready)
    })
    .await;
    let b = json!({"property_id": "default", "reason": "Drill", "timeout_minutes": 10});
    let (st, res) = w.call(Method::POST, LOCKDOWN, Some(&admin), Some(b)).await;
    assert_eq!(st, StatusCode::OK, "{res}");

    // Power cut; the Pi boots with no fake-hwclock: 1970. The stored expiry is 56 years
    // ahead of that clock, but no lockdown outlasts its timeout: it stays, and nothing is sent.
    w.h.stop().await;
    w.h.clock.jump(chrono::DateTime::UNIX_EPOCH - Utc::now());
    w.h.start().await;
    w.base = format!("http://{}", w.h.app().web_addr.unwrap());
    let admin = w.login("ada").await;
    wait_for("Net2 ready again", Duration::from_secs(15), || {
        w.h.app().bus.health("net2").is_some_and(|h| h.ready)
    })
    .await;
    let (_, res) = w.get(EMERGENCY, &admin).await;
    assert_eq!(res["mode"], "lockdown", "{res}");

    // NTP sets the clock: it was down for an hour, so the lockdown expired 50 minutes ago.
    // Read against the time NTP set, it is restored now — not 10 minutes from the boot.
    w.h.clock
        .jump(Utc::now() - chrono::DateTime::UNIX_EPOCH + chrono::Duration::hours(1));
    wait_for(
        "lockdown off once the clock is set",
        Duration::from_secs(10),
        || lockdowns(&w) == [true, false],
    )
    .await;
    w.stop().await;
}

const HW_KEY: &str = "hardware-test-key-0123456789";

/// A hardware access point's connection on the monotonic clock: NTP stepping the wall clock
/// neither takes a point that beats offline (until its next heartbeat: a Home Assistant
/// "door reader offline" alert for nothing) nor keeps a silent one online for days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stepped_wall_clock_takes_no_access_point_offline_nor_keeps_one_online() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "recorder", "gatehouse/hardware/#", false).await;
    let top = format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gatehouse-test-{}\n",
        broker.port,
        rand::random::<u32>()
    );
    let w = WebHarness::start(
        SimConfig::default(),
        &format!("  hardware_key: {HW_KEY}\n  hardware_offline_after: 30s\n"),
        &top,
    )
    .await;
    let viewer = w.login("vera").await;
    let post = |path: String, body: serde_json::Value| {
        let r = w
            .http
            .post(w.url(&path))
            .header("X-API-Key", HW_KEY)
            .json(&body);
        async move {
            let res = r.send().await.unwrap();
            let st = res.status();
            (st, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let mut ids = Vec::new();
    for dev in ["reader-a", "reader-b"] {
        let (st, res) = post(
            "/api/access-control/points/register".into(),
            json!({"device_id": dev, "location": dev}),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{res}");
        ids.push(res["data"]["id"].as_str().unwrap().to_string());
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let health = async |id: &str| {
        let (st, res) = w.get("/api/access-control/points/health", &viewer).await;
        assert_eq!(st, StatusCode::OK, "{res}");
        res["data"][id].clone()
    };
    let avail = |id: &str| {
        rec.on(&format!("gatehouse/hardware/{id}/availability"))
            .last()
            .map(|m| m.text())
    };
    wait_for("both online on MQTT", Duration::from_secs(10), || {
        avail(&a).as_deref() == Some("online") && avail(&b).as_deref() == Some("online")
    })
    .await;
    let since = health(&a).await;
    assert_eq!(since["connection_status"], "online", "{since}");

    // NTP steps the clock a day forward. Reader B beats (the hardware monitor looks at every
    // point then); reader A, silent for a moment, is still online: in REST and on MQTT.
    w.h.clock.jump(chrono::Duration::days(1));
    let b_state = format!("gatehouse/hardware/{b}/state");
    let b_states = rec.on(&b_state).len();
    let (st, res) = post(
        format!("/api/access-control/points/{b}/heartbeat"),
        json!({"sensor_status": "closed"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(res["data"]["isOnline"], true, "{res}");
    wait_for("B's heartbeat on MQTT", Duration::from_secs(10), || {
        rec.on(&b_state)[b_states..]
            .iter()
            .any(|m| m.json()["sensor_status"] == "closed")
    })
    .await;
    let h = health(&a).await;
    assert_eq!(h["connection_status"], "online", "after +1 day: {h}");
    assert_eq!(avail(&a).as_deref(), Some("online"));
    // B's heartbeat continued its online period: a step starts none.
    let hb = health(&b).await;
    assert_eq!(hb["isOnline"], true, "{hb}");
    let (_, list) = w.get("/api/access-control/points", &viewer).await;
    let changed = |id: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["lastStatusChange"].clone())
            .unwrap()
    };
    assert!(
        changed(&b)
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap()
            < Utc::now(),
        "B's online period restarted at the stepped time: {}",
        changed(&b)
    );

    // Then two days back (a day before the heartbeats' wall times), and 31 s pass without a
    // heartbeat: both are offline after their 30 s, not a day and 30 s later.
    w.h.clock.jump(-chrono::Duration::days(2));
    w.h.clock.advance(Duration::from_secs(31));
    for id in [&a, &b] {
        let h = health(id).await;
        assert_eq!(
            h["connection_status"], "offline",
            "{id} after −2 days, 31 s: {h}"
        );
    }
    w.stop().await;
}

/// A daemon keeping a year of history, its clock looked at every 20 ms.
async fn keeping_a_year(h: &mut Harness) {
    h.clock.poll_every(Duration::from_millis(20));
    let text = common::config_text(&h.sim, &h.db(), &h.extra, "").replacen(
        "storage:\n",
        "storage:\n  retention_days: 365\n",
        1,
    );
    let cfg = gatehouse::config::load_str(&text, &|_| None).expect("valid config");
    assert_eq!(cfg.storage.retention_days, 365);
    let app = App::start_with_clock(cfg, None, None, h.clock.clone())
        .await
        .expect("daemon starts");
    h.app = Some(app);
}

/// Until the log holds `n` lines containing `what`.
async fn logged(buf: &common::logs::Buf, what: &str, n: usize) {
    wait_for(what, Duration::from_secs(10), || {
        buf.text().matches(what).count() >= n
    })
    .await;
}

#[test]
fn a_step_of_the_wall_clock_prunes_no_history_until_it_has_settled() {
    let (buf, _guard, rt) = common::logs::capture("gatehouse=info");
    rt.block_on(async {
        let mut h = Harness::new(SimConfig::default(), "").await;
        // 200 events over the last 10 days.
        let start = (Utc::now() - chrono::Duration::days(10)).naive_utc();
        h.sim.seed_history(200, start, Duration::from_secs(4000));
        keeping_a_year(&mut h).await;
        // The simulator's history is stored.
        let end = tokio::time::Instant::now() + Duration::from_secs(15);
        while h.query_i64("SELECT count(*) FROM events") == 0 {
            assert!(
                tokio::time::Instant::now() < end,
                "no history stored: {}",
                buf.text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        wait_for("all history stored", Duration::from_secs(15), || {
            h.query_i64("SELECT count(*) FROM events") == 200
        })
        .await;
        let n = 200;
        let count = || h.query_i64("SELECT count(*) FROM events");

        // A wrong step (a bad NTP source) 400 days ahead, and a day passes: by that clock
        // the whole history is past retention, but the step has not settled.
        h.clock.jump(chrono::Duration::days(400));
        h.clock.advance(Duration::from_secs(25 * 3600));
        logged(&buf, "history retention postponed", 1).await;
        assert_eq!(count(), n, "nothing pruned on a fresh step");

        // NTP corrects it before it settles: the prune then runs by the right time.
        h.clock.jump(-chrono::Duration::days(400));
        logged(&buf, "the wall clock was stepped", 2).await;
        h.clock
            .advance(gatehouse::sinks::store::PRUNE_SETTLE + Duration::from_secs(1));
        logged(&buf, "pruned old events", 2).await;
        assert_eq!(count(), n, "a corrected step lost nothing");

        // A step that stays (the clock really was 400 days behind) is believed once it has
        // settled: the history is then past retention, and pruned.
        h.clock.jump(chrono::Duration::days(400));
        h.clock.advance(Duration::from_secs(25 * 3600));
        logged(&buf, "history retention postponed", 2).await;
        assert_eq!(count(), n, "not before it settles");
        h.clock.advance(gatehouse::sinks::store::PRUNE_SETTLE);
        wait_for("pruned once settled", Duration::from_secs(10), || {
            count() == 0
        })
        .await;
        h.stop().await;
    });
}

/// Picture retention by age (`media.keep_days`) takes no decision on a step either: a step
/// ahead deletes no picture until it has settled, a corrected step loses nothing, and a step
/// that stays is believed once settled (pictures then past `keep_days` go, files and rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_of_the_wall_clock_expires_no_picture_until_it_has_settled() {
    use gatehouse::media::service::Trigger;
    use gatehouse::sim::hikvision::{HikSim, HikSimConfig, Personality};
    let mut h = Harness::new(SimConfig::default(), "").await;
    let cam = HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        ..Default::default()
    })
    .await
    .unwrap();
    let text = common::config_text(&h.sim, &h.db(), "", "").replacen(
        "doors:\n",
        &format!(
            "  hikvision:\n    - {{ id: front, url: \"{}\", username: admin, password: sim-hik-pass }}\nmedia:\n  keep_days: 1\n  keep_count: 0\ndoors:\n",
            cam.base_url()
        ),
        1,
    );
    let cfg = gatehouse::config::load_str(&text, &|_| None).expect("valid config");
    assert_eq!(cfg.media.keep_days, 1);
    let app = App::start_with_clock(cfg, None, None, h.clock.clone())
        .await
        .expect("daemon starts");
    let media = app.media.clone().expect("a camera: media service");
    h.app = Some(app);
    let snap = || async {
        media
            .snapshot("front", 1, None, Trigger::Rest)
            .await
            .expect("picture taken")
    };
    let pictures = || h.query_i64("SELECT count(*) FROM pictures");
    let day = chrono::Duration::days(1);
    let settle = gatehouse::sinks::store::PRUNE_SETTLE + Duration::from_secs(1);

    let (a, b) = (snap().await, snap().await);
    let file = |s: &gatehouse::model::Snapshot| {
        h.db()
            .parent()
            .unwrap()
            .join("snapshots/front/1")
            .join(format!("{}.jpg", s.id))
    };
    assert!(file(&a).exists() && file(&b).exists());
    assert_eq!(pictures(), 2);

    // A wrong step 400 days ahead: by that clock both are past keep_days, but it is fresh.
    h.clock.jump(day * 400);
    let c = snap().await;
    assert_eq!(pictures(), 3, "nothing expired on a fresh step");
    assert!(file(&a).exists() && file(&b).exists());

    // NTP corrects it: the correction is a step too; once it has settled, nothing was lost.
    h.clock.jump(-day * 400);
    h.clock.advance(settle);
    snap().await;
    let d = snap().await;
    assert_eq!(pictures(), 5, "a corrected step lost nothing");

    // A step that stays (the clock really was 400 days behind): believed once settled.
    h.clock.jump(day * 400);
    snap().await;
    assert_eq!(pictures(), 6, "not before it settles");
    h.clock.advance(settle);
    snap().await;
    // Gone: everything taken by the old time (a, b, the two after the correction); kept: c
    // (taken at the stepped time) and the two since.
    assert_eq!(
        pictures(),
        3,
        "pictures past keep_days expired once the step settled"
    );
    for s in [&a, &b, &d] {
        assert!(!file(s).exists(), "{} still on disk", s.id);
    }
    assert!(file(&c).exists());
    h.stop().await;
}
