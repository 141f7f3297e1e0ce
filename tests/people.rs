//! People and presence end to end: the Net2 simulator's badges through the daemon's presence
//! engine to a real Mosquitto, across restarts and a hot reload.

mod common;

use common::broker::{Broker, Recorder};
use common::{Harness, wait_for};
use gatehouse::clock::Clock;
use gatehouse::sim::net2::{SimConfig, SimEvent};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
/// Net2 user 8 of the simulator ("Mette Kragh Holm").
const USER: i64 = 8;
const IN_DOOR: u64 = 6612642;
const OUT_DOOR: u64 = 6203980;
const TRACKER: &str = "homeassistant/device_tracker/gatehouse/person_mette/config";
const SITE_SENSOR: &str = "homeassistant/sensor/gatehouse/site_default_people/config";
const STATE: &str = "gatehouse/person/mette/state";
const ATTRS: &str = "gatehouse/person/mette/attributes";
const SITE: &str = "gatehouse/site/default/people";
const EVENTS: &str = "gatehouse/presence/event";

fn config(h: &Harness, port: u16, people: bool) -> gatehouse::config::Config {
    let people = if people {
        format!("people:\n  - id: mette\n    name: Mette\n    net2_users: [{USER}]\n")
    } else {
        String::new()
    };
    let text = format!(
        "{}mqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: gatehouse-people-{}\n{people}",
        common::config_text(&h.sim, &h.db(), "", "")
            .replace(
                "  6612642: { open_time_ms: 800 }\n",
                "  6612642: { open_time_ms: 800, direction: in }\n"
            )
            .replace("  6203980: {}\n", "  6203980: { direction: out }\n"),
        rand::random::<u32>()
    );
    gatehouse::config::load_str(&text, &|_| None).expect("test config is valid")
}

async fn start(h: &mut Harness, port: u16) {
    let cfg = config(h, port, true);
    h.app = Some(
        gatehouse::app::App::start_with_clock(cfg, None, None, h.clock.clone())
            .await
            .expect("daemon starts"),
    );
}

fn last_text(rec: &Recorder, topic: &str) -> Option<String> {
    rec.on(topic).last().map(|m| m.text())
}

fn presence_events(h: &Harness) -> Vec<String> {
    let c = rusqlite::Connection::open(h.db()).unwrap();
    let mut st = c
        .prepare("SELECT kind FROM events WHERE source = 'presence' ORDER BY time_ms, seq")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

async fn badge(h: &Harness, rec: &Recorder, door: u64, want: &str) {
    h.sim
        .push_event(SimEvent::new(26, door).user(USER).token_type(1));
    wait_for(&format!("{want} after a badge at door {door}"), T, || {
        last_text(rec, STATE).as_deref() == Some(want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badges_move_a_person_home_and_away_and_restarts_keep_it() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "recorder", "#", false).await;
    let mut h = Harness::new(SimConfig::default(), "").await;
    start(&mut h, broker.port).await;

    // Announced with a state from the first second: not_home, "no evidence yet".
    wait_for("device_tracker discovery", T, || {
        !rec.on(TRACKER).is_empty()
    })
    .await;
    let cfg = rec.on(TRACKER)[0].clone();
    assert!(cfg.retain);
    let c = cfg.json();
    assert_eq!(c["source_type"], "router");
    assert_eq!(c["state_topic"], STATE);
    assert_eq!(c["json_attributes_topic"], ATTRS);
    assert_eq!(c["payload_home"], "home");
    assert_eq!(c["payload_not_home"], "not_home");
    assert_eq!(c["unique_id"], "gatehouse_person_mette");
    assert_eq!(c["object_id"], "gatehouse_person_mette");
    assert_eq!(
        c["default_entity_id"],
        "device_tracker.gatehouse_person_mette"
    );
    assert_eq!(c["device"]["name"], "Mette");
    wait_for("site sensor discovery", T, || {
        !rec.on(SITE_SENSOR).is_empty()
    })
    .await;
    assert_eq!(rec.on(SITE_SENSOR)[0].json()["state_topic"], SITE);
    wait_for("first state", T, || last_text(&rec, STATE).is_some()).await;
    assert_eq!(last_text(&rec, STATE).unwrap(), "not_home");
    assert!(rec.on(STATE)[0].retain, "states are retained");
    wait_for("attributes", T, || !rec.on(ATTRS).is_empty()).await;
    let a = rec.on(ATTRS).last().unwrap().json();
    assert_eq!(a["known"], false);
    assert_eq!(a["evidence"], "no evidence yet");
    wait_for("site count", T, || !rec.on(SITE).is_empty()).await;
    assert_eq!(rec.on(SITE).last().unwrap().json()["count"], 0);

    wait_for("live", T, || {
        h.sim.websocket_count() == 1 && !h.sim.stats().subscriptions.is_empty()
    })
    .await;
    // In door → home, counted on the site, announced as an event.
    badge(&h, &rec, IN_DOOR, "home").await;
    wait_for("count 1", T, || {
        rec.on(SITE).last().unwrap().json()["count"] == 1
    })
    .await;
    assert_eq!(rec.on(SITE).last().unwrap().json()["people"][0], "Mette");
    let a = rec.on(ATTRS).last().unwrap().json();
    assert_eq!(a["known"], true);
    assert_eq!(a["direction"], "in");
    assert_eq!(a["last_door"]["id"], IN_DOOR);
    assert!(
        a["evidence"]
            .as_str()
            .unwrap()
            .starts_with(&format!("door {IN_DOOR}")),
        "{a}"
    );
    wait_for("arrival event", T, || !rec.on(EVENTS).is_empty()).await;
    let ev = rec.on(EVENTS)[0].clone();
    assert!(!ev.retain, "events are not retained");
    assert_eq!(ev.json()["event_type"], "person_arrived");
    assert_eq!(ev.json()["person"], "mette");
    assert_eq!(ev.json()["home"], true);

    // Out door → not_home.
    badge(&h, &rec, OUT_DOOR, "not_home").await;
    wait_for("count 0", T, || {
        rec.on(SITE).last().unwrap().json()["count"] == 0
    })
    .await;
    wait_for("departure event", T, || rec.on(EVENTS).len() == 2).await;
    assert_eq!(rec.on(EVENTS)[1].json()["event_type"], "person_left");
    h.stop().await;
    assert_eq!(presence_events(&h), vec!["person_arrived", "person_left"]);

    // While gatehouse is down, she comes in again (Net2 logs it; no live push to anyone).
    h.sim.push_event(
        SimEvent::new(26, IN_DOOR)
            .user(USER)
            .token_type(1)
            .rest_only(),
    );
    rec.clear();
    start(&mut h, broker.port).await;
    // The state kept from before is announced at once (not unknown, not "no evidence yet"),
    // then the REST backfill brings her home, announced once.
    wait_for("state after restart", T, || {
        last_text(&rec, STATE).is_some()
    })
    .await;
    let first = rec.on(ATTRS)[0].json();
    assert_eq!(first["known"], true, "{first}");
    wait_for("home from the backfill", T, || {
        last_text(&rec, STATE).as_deref() == Some("home")
    })
    .await;
    wait_for("one arrival", T, || rec.on(EVENTS).len() == 1).await;
    h.stop().await;
    assert_eq!(
        presence_events(&h),
        vec!["person_arrived", "person_left", "person_arrived"]
    );

    // A plain restart: home at once, no arrival announced again.
    rec.clear();
    start(&mut h, broker.port).await;
    wait_for("state after the second restart", T, || {
        last_text(&rec, STATE).is_some()
    })
    .await;
    assert_eq!(
        rec.on(STATE)[0].text(),
        "home",
        "never unknown, never not_home"
    );
    wait_for("Net2 live again", T, || {
        h.sim.websocket_count() >= 1 && !h.sim.stats().subscriptions.is_empty()
    })
    .await;
    // The backfill runs at start; give it time to bring anything it would (it must not).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rec.on(EVENTS).is_empty(), "{:?}", rec.on(EVENTS));
    assert_eq!(presence_events(&h).len(), 3);

    // Hot reload without `people:`: the tracker and the site sensor go, with their topics.
    let cfg = config(&h, broker.port, false);
    let mut live = (*h.app().config()).clone();
    live.people = cfg.people;
    h.app()
        .config_sender()
        .send_replace(std::sync::Arc::new(live));
    for topic in [TRACKER, SITE_SENSOR, STATE, ATTRS, SITE] {
        wait_for(&format!("{topic} cleared"), T, || {
            rec.on(topic)
                .last()
                .is_some_and(|m| m.payload.is_empty() && m.retain)
        })
        .await;
    }
    h.stop().await;
}

fn qr_granted(at: chrono::DateTime<chrono::Utc>) -> gatehouse::model::Message {
    use gatehouse::model::*;
    Message::Event(Box::new(Event {
        id: format!("apptive:front-qr:{}", at.timestamp_millis()),
        source: "apptive".into(),
        source_id: None,
        fingerprint: format!("apptive:front-qr:{}", at.timestamp_millis()),
        time: at.fixed_offset(),
        received: at,
        via: Via::Live,
        door: Some(DoorRef {
            id: IN_DOOR,
            name: None,
        }),
        user: None,
        kind: EventKind::QrGranted {
            reader: "front-qr".into(),
            member: "M-77".into(),
            name: Some("Anna Berg".into()),
            message: Some("Viel Spass und herzlich willkommen!".into()),
        },
        code: None,
        description: None,
        raw: "{}".into(),
    }))
}

/// Wi-Fi session lists and a QR entry as the GATE and Apptive sources put them on the bus; the
/// Wi-Fi away timer runs on the daemon's clock (moved forward, not waited for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wifi_sessions_and_qr_entries_through_the_daemon() {
    use gatehouse::model::{Message, WifiSession};
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "recorder", "gatehouse/#", false).await;
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.top = format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gatehouse-people-{}\npeople:\n  - id: anna\n    name: Anna Berg\n    macs: [\"AA-BB-CC-00-00-01\"]\n    gate_users: [501]\n    apptive_members: [M-77]\npresence:\n  wifi_away_after: 10m\n",
        broker.port,
        rand::random::<u32>()
    );
    h.start().await;
    let state = "gatehouse/person/anna/state";
    let attrs = "gatehouse/person/anna/attributes";
    wait_for("first state", T, || last_text(&rec, state).is_some()).await;
    let bus = h.app().bus.clone();
    let now = h.clock.now();
    let session = |id: &str, mac: &str, user: Option<&str>| WifiSession {
        session_id: id.into(),
        username: None,
        user_id: user.map(str::to_owned),
        mac: Some(mac.into()),
        access_point: Some("ap-lobby".into()),
        location: Some("Office".into()),
        started: Some(now - chrono::Duration::seconds(30)),
    };
    // GATE lists her phone among strangers and a MAC it garbled: she is home.
    bus.publish(Message::WifiSessions {
        source: "gate".into(),
        sessions: vec![
            session("s9", "not-a-mac", None),
            session("s1", "aa:bb:cc:00:00:01", Some("501")),
            session("s2", "aa:bb:cc:00:00:99", Some("777")),
        ],
        at: now,
    })
    .await;
    wait_for("home by Wi-Fi", T, || {
        last_text(&rec, state).as_deref() == Some("home")
    })
    .await;
    let a = rec.on(attrs).last().unwrap().json();
    assert_eq!(a["wifi_sessions"], 1, "{a}");
    assert!(a["evidence"].as_str().unwrap().starts_with("Wi-Fi session"));
    // Her phone leaves the Wi-Fi: still home for wifi_away_after.
    bus.publish(Message::WifiSessions {
        source: "gate".into(),
        sessions: vec![session("s2", "aa:bb:cc:00:00:99", Some("777"))],
        at: now + chrono::Duration::seconds(5),
    })
    .await;
    wait_for("session gone", T, || {
        rec.on(attrs).last().unwrap().json()["wifi_sessions"] == 0
    })
    .await;
    h.clock.advance(Duration::from_secs(9 * 60));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(last_text(&rec, state).as_deref(), Some("home"), "not yet");
    h.clock.advance(Duration::from_secs(60));
    wait_for("away after the Wi-Fi window", T, || {
        last_text(&rec, state).as_deref() == Some("not_home")
    })
    .await;
    // The attributes are a message of their own: they may land just after the state.
    wait_for("the Wi-Fi window in the evidence", T, || {
        rec.on(attrs).last().unwrap().json()["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("no entry within 600s"))
    })
    .await;
    // A QR entry brings her home.
    bus.publish(qr_granted(h.clock.now())).await;
    wait_for("home by QR", T, || {
        last_text(&rec, state).as_deref() == Some("home")
    })
    .await;
    let a = rec.on(attrs).last().unwrap().json();
    assert_eq!(a["evidence"], "QR entry at front-qr");
    assert!(a["last_qr_at"].is_string());
    wait_for("three presence events", T, || rec.on(EVENTS).len() == 3).await;
    let kinds: Vec<_> = rec
        .on(EVENTS)
        .iter()
        .map(|m| m.json()["event_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["person_arrived", "person_left", "person_arrived"]);
    h.stop().await;
}

/// A burst of badges in one live frame (a controller flushing its buffer; Net2 live times
/// have no fraction, so most share a second): every flip in order, once, and the REST copies
/// the safety poll brings change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_badges_in_one_frame() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "recorder", "gatehouse/#", false).await;
    let mut h = Harness::new(SimConfig::default(), "").await;
    start(&mut h, broker.port).await;
    wait_for("live", T, || {
        h.sim.websocket_count() == 1 && !h.sim.stats().subscriptions.is_empty()
    })
    .await;
    let burst: Vec<SimEvent> = (0..41)
        .map(|i| {
            let door = if i % 2 == 0 { IN_DOOR } else { OUT_DOOR };
            SimEvent::new(26, door).user(USER).token_type(1)
        })
        .collect();
    h.sim.push_events(burst);
    wait_for("41 presence events", T, || rec.on(EVENTS).len() == 41).await;
    assert_eq!(
        last_text(&rec, STATE).as_deref(),
        Some("home"),
        "the last badge was in"
    );
    let kinds: Vec<String> = rec
        .on(EVENTS)
        .iter()
        .map(|m| m.json()["event_type"].as_str().unwrap().to_string())
        .collect();
    for (i, k) in kinds.iter().enumerate() {
        let want = if i % 2 == 0 {
            "person_arrived"
        } else {
            "person_left"
        };
        assert_eq!(k, want, "flip {i} out of order: {kinds:?}");
    }
    // The safety poll (every 2 s here) brings the REST copies: paired by the Net2 source,
    // nothing for presence.
    let polls = h.sim.stats().events_requests;
    wait_for("two REST polls", T, || {
        h.sim.stats().events_requests >= polls + 2
    })
    .await;
    assert_eq!(rec.on(EVENTS).len(), 41);
    h.stop().await;
    assert_eq!(presence_events(&h).len(), 41);
}

/// A Net2 badge as the Net2 source's REST backfill puts it on the bus after a restart.
fn backfilled_badge(
    user: i64,
    door: u64,
    at: chrono::DateTime<chrono::Utc>,
    received: chrono::DateTime<chrono::Utc>,
) -> gatehouse::model::Message {
    use gatehouse::model::*;
    let id = format!("net2:fp:test:{}:{user}:{door}", at.timestamp_millis());
    Message::Event(Box::new(Event {
        id: id.clone(),
        source: "net2".into(),
        source_id: None,
        fingerprint: id,
        time: at.fixed_offset(),
        received,
        via: Via::Rest,
        door: Some(DoorRef {
            id: door,
            name: None,
        }),
        user: Some(UserRef {
            id: user,
            name: None,
        }),
        kind: EventKind::AccessGranted {
            token: TokenType::Card,
        },
        code: None,
        description: None,
        raw: "{}".into(),
    }))
}

/// Her phone left the Wi-Fi, gatehouse was down (an upgrade) when the away timer fell due, and
/// she had badged in meanwhile. GATE's first session list after the start (stamped now) must
/// not fire the overdue timer before Net2's backfill brings the badge that cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_due_during_an_upgrade_waits_for_the_backfilled_badge() {
    use gatehouse::model::{Message, WifiSession};
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "recorder", "gatehouse/#", false).await;
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.top = format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gatehouse-people-{}\npeople:\n  - id: anna\n    name: Anna Berg\n    net2_users: [{USER}]\n    macs: [\"AA-BB-CC-00-00-01\"]\npresence:\n  wifi_away_after: 10m\n",
        broker.port,
        rand::random::<u32>()
    );
    h.start().await;
    let state = "gatehouse/person/anna/state";
    let attrs = "gatehouse/person/anna/attributes";
    wait_for("first state", T, || last_text(&rec, state).is_some()).await;
    let bus = h.app().bus.clone();
    let t0 = h.clock.now();
    let phone = WifiSession {
        session_id: "s1".into(),
        username: None,
        user_id: None,
        mac: Some("aa:bb:cc:00:00:01".into()),
        access_point: Some("ap-lobby".into()),
        location: None,
        started: Some(t0),
    };
    bus.publish(Message::WifiSessions {
        source: "gate".into(),
        sessions: vec![phone],
        at: t0,
    })
    .await;
    wait_for("home by Wi-Fi", T, || {
        last_text(&rec, state).as_deref() == Some("home")
    })
    .await;
    // Her phone leaves at t0 + 5 s: away at t0 + 10 min 5 s unless an entry follows.
    bus.publish(Message::WifiSessions {
        source: "gate".into(),
        sessions: vec![],
        at: t0 + chrono::Duration::seconds(5),
    })
    .await;
    wait_for("session gone", T, || {
        rec.on(attrs)
            .last()
            .is_some_and(|m| m.json()["wifi_sessions"] == 0)
    })
    .await;
    h.stop().await;
    // Down for half an hour; she badged in at t0 + 8 min.
    h.clock.advance(Duration::from_secs(30 * 60));
    h.start().await;
    let bus = h.app().bus.clone();
    let now = h.clock.now();
    bus.publish(Message::WifiSessions {
        source: "gate".into(),
        sessions: vec![],
        at: now,
    })
    .await;
    bus.publish(backfilled_badge(
        USER,
        IN_DOOR,
        t0 + chrono::Duration::minutes(8),
        now,
    ))
    .await;
    wait_for("the backfilled badge used", T, || {
        rec.on(attrs).last().is_some_and(|m| {
            m.json()["evidence"]
                .as_str()
                .is_some_and(|e| e.starts_with("door "))
        })
    })
    .await;
    // The grace is over: the next list runs the timers on the wall clock. Nothing is due.
    h.clock.advance(Duration::from_secs(31));
    bus.publish(Message::WifiSessions {
        source: "gate".into(),
        sessions: vec![],
        at: h.clock.now(),
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(last_text(&rec, state).as_deref(), Some("home"));
    let kinds: Vec<_> = rec
        .on(EVENTS)
        .iter()
        .map(|m| m.json()["event_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        ["person_arrived"],
        "no departure while she was inside"
    );
    h.stop().await;
}
