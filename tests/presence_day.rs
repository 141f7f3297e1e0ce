//! One person's day through the whole daemon, every system real: the Net2 simulator (badges),
//! the Zequenze GATE simulator (the phone on the Wi-Fi, its MAC sent as an integer by the
//! portal log and as `AA-BB-…` by RADIUS), the Apptive simulator (a QR entry, then Apptive
//! down) and a real Mosquitto. The person is mapped by Net2 user, MAC and Apptive member only,
//! so each system's identity has to reach the one presence. The result is checked as a Home
//! Assistant user sees it: the exact timeline of `gatehouse/person/<id>/state` and of the
//! arrival / departure events, with the evidence of each.

mod common;

use common::broker::{Broker, Recorder, publish};
use common::{Harness, wait_for};
use gatehouse::sim::apptive::{ApptiveSim, ApptiveSimConfig, Mode};
use gatehouse::sim::gate::{GateSim, GateSimConfig, SIM_TOKEN, SimUser, default_aps};
use gatehouse::sim::net2::{SimConfig, SimEvent};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
/// Net2 user 8 of the simulator.
const USER: i64 = 8;
const IN_DOOR: u64 = 6612642;
const OUT_DOOR: u64 = 6203980;
/// The phone's MAC as GATE's portal log sends it (an integer): 00:00:07:5b:cd:15.
const PHONE: u64 = 123_456_789;
const STATE: &str = "gatehouse/person/erika/state";
const ATTRS: &str = "gatehouse/person/erika/attributes";
const EVENTS: &str = "gatehouse/presence/event";

fn states(rec: &Recorder) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in rec.on(STATE) {
        // Retained republications (reconnects, discovery) repeat a state: the timeline is
        // its changes.
        if out.last() != Some(&m.text()) {
            out.push(m.text());
        }
    }
    out
}

fn attrs(rec: &Recorder) -> serde_json::Value {
    rec.on(ATTRS).last().map(|m| m.json()).unwrap_or_default()
}

async fn state_is(rec: &Recorder, want: &str, why: &str) {
    wait_for(why, T, || {
        rec.on(STATE).last().is_some_and(|m| m.text() == want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_badges_wifi_and_qr_gives_one_exact_timeline() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "recorder", "#", false).await;
    let mut h = Harness::new(SimConfig::default(), "").await;
    let gate = GateSim::start(GateSimConfig::default()).await.unwrap();
    let apptive = ApptiveSim::start(ApptiveSimConfig {
        clock: h.clock.clone(),
        ..ApptiveSimConfig::default()
    })
    .await
    .unwrap();
    let text = format!(
        "{net2}mqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: gatehouse-day-{r}\n\
         apptive:\n  url: {aurl}\n  token: {atoken}\n  timeout: 1s\n  readers:\n    - {{ id: front-qr, door: {IN_DOOR}, door_id: door_123 }}\n\
         people:\n  - id: erika\n    name: Erika\n    net2_users: [{USER}]\n    macs: [\"00:00:07:5B:CD:15\"]\n    apptive_members: [\"303\"]\n\
         presence:\n  wifi_away_after: 10m\n",
        net2 = common::config_text(&h.sim, &h.db(), "", "")
            .replace(
                "  6612642: { open_time_ms: 800 }\n",
                "  6612642: { open_time_ms: 800, direction: in, min_command_interval: 100ms }\n"
            )
            .replace("  6203980: {}\n", "  6203980: { direction: out }\n")
            // GATE beside Net2 under `sources:`.
            .replace(
                "    initial_backfill: 30d\n",
                &format!(
                    "    initial_backfill: 30d\n  gate:\n    url: {}\n    token: {SIM_TOKEN}\n    poll_interval: 200ms\n",
                    gate.base_url()
                )
            ),
        port = broker.port,
        r = rand::random::<u32>(),
        aurl = apptive.base_url(),
        atoken = apptive.token(),
    );
    let cfg = gatehouse::config::load_str(&text, &|_| None).expect("valid config");
    h.app = Some(
        gatehouse::app::App::start_with_clock(cfg, None, None, h.clock.clone())
            .await
            .expect("daemon starts"),
    );
    wait_for("door status synced", T, || {
        h.query_i64("SELECT count(*) FROM door_state") >= 3
    })
    .await;
    wait_for("Net2 live", T, || {
        h.sim.websocket_count() >= 1 && !h.sim.stats().subscriptions.is_empty()
    })
    .await;
    // No evidence yet: not_home from the first second, never unknown.
    state_is(&rec, "not_home", "a state before any evidence").await;
    assert_eq!(attrs(&rec)["known"], false);

    let phone = SimUser::new(5432, "erika.m", PHONE);
    let aps = default_aps();
    // The AP whose RADIUS writes the MAC with dashes.
    let ap = aps.iter().find(|a| a.dashes).expect("a dashed AP").clone();

    // 1. Morning: a badge at the in door.
    h.sim
        .push_event(SimEvent::new(26, IN_DOOR).user(USER).token_type(1));
    state_is(&rec, "home", "home after a badge at the in door").await;
    assert!(
        attrs(&rec)["evidence"]
            .as_str()
            .is_some_and(|e| e.contains(&IN_DOOR.to_string()) && e.contains("(in)")),
        "{}",
        attrs(&rec)
    );

    // 2. The phone joins the Wi-Fi: still home, one session.
    let morning = gate.login(&phone, &ap);
    wait_for("the phone's session counted", T, || {
        attrs(&rec)["wifi_sessions"] == 1
    })
    .await;

    // 3. Leaving by the out door while the phone is still on the Wi-Fi: away (the door is the
    // stronger evidence).
    h.sim
        .push_event(SimEvent::new(26, OUT_DOOR).user(USER).token_type(1));
    state_is(&rec, "not_home", "away after the out door").await;
    // The phone drops off later: nothing changes.
    gate.end_session(morning, "st");
    wait_for("the session gone", T, || attrs(&rec)["wifi_sessions"] == 0).await;

    // 4. Back with a QR code at the front reader: the door opens once, and she is home.
    let before = h.sim.commands().len();
    let code = apptive.qr("303").expect("member 303");
    publish(
        broker.port,
        "gatehouse/qr/front-qr/scan",
        code.as_bytes(),
        false,
    )
    .await;
    state_is(&rec, "home", "home after a QR entry").await;
    assert!(
        attrs(&rec)["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("QR entry at front-qr")),
        "{}",
        attrs(&rec)
    );
    wait_for("the front door opened", T, || {
        h.sim.commands().len() == before + 1
    })
    .await;

    // 5. The phone joins again, then times out: home for wifi_away_after, then away.
    let evening = gate.login(&phone, &ap);
    wait_for("the evening session counted", T, || {
        attrs(&rec)["wifi_sessions"] == 1
    })
    .await;
    gate.end_session(evening, "si");
    wait_for("the evening session gone", T, || {
        attrs(&rec)["wifi_sessions"] == 0
    })
    .await;
    // NTP steps the wall clock 3 days forward (a Pi without RTC at boot): the timer keeps
    // what it had left, no phantom departure.
    h.clock.jump(chrono::Duration::days(3));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rec.on(STATE).last().map(|m| m.text()).as_deref(),
        Some("home"),
        "a wall-clock step is no time passing"
    );
    // Nine minutes on the daemon's clock: still home.
    h.clock.advance(Duration::from_secs(9 * 60));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rec.on(STATE).last().map(|m| m.text()).as_deref(),
        Some("home"),
        "home within wifi_away_after"
    );
    h.clock.advance(Duration::from_secs(62));
    state_is(&rec, "not_home", "away once wifi_away_after passed").await;
    assert!(
        attrs(&rec)["evidence"]
            .as_str()
            .is_some_and(|e| e.starts_with("Wi-Fi ended")),
        "{}",
        attrs(&rec)
    );

    // 6. Apptive is down: the scan is denied, the door stays shut, she stays away.
    apptive.set_mode(Mode::Status(503));
    let before = h.sim.commands().len();
    let results = rec.on("gatehouse/qr/front-qr/result").len();
    let code = apptive.qr("303").expect("member 303");
    publish(
        broker.port,
        "gatehouse/qr/front-qr/scan",
        code.as_bytes(),
        false,
    )
    .await;
    wait_for("the denial", T, || {
        rec.on("gatehouse/qr/front-qr/result").len() > results
    })
    .await;
    let denial = rec.on("gatehouse/qr/front-qr/result")[results].json();
    assert_eq!(denial["granted"], false, "{denial}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.sim.commands().len(), before, "no door opened");

    // The whole day, as Home Assistant's device_tracker and the event history show it.
    assert_eq!(
        states(&rec),
        ["not_home", "home", "not_home", "home", "not_home"],
        "the person's state timeline"
    );
    let events: Vec<(String, String)> = rec
        .on(EVENTS)
        .iter()
        .map(|m| {
            let v = m.json();
            (
                v["event_type"].as_str().unwrap_or_default().to_string(),
                v["evidence"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "person_arrived",
            "person_left",
            "person_arrived",
            "person_left"
        ],
        "{events:?}"
    );
    assert!(events[0].1.contains("(in)"), "{events:?}");
    assert!(events[1].1.contains("(out)"), "{events:?}");
    assert!(events[2].1.contains("QR"), "{events:?}");
    assert!(events[3].1.starts_with("Wi-Fi ended"), "{events:?}");
    assert_eq!(
        h.query_i64("SELECT count(*) FROM events WHERE source = 'presence'"),
        4,
        "four presence events stored"
    );
    h.app.take().unwrap().shutdown().await;
    gate.shutdown();
    apptive.shutdown().await;
}
