//! Zequenze GATE through the running daemon: the simulator (seed 003's shapes, with its
//! hostility switched on), a real Mosquitto and the SQLite file.

mod common;

use common::broker::{Broker, Recorder};
use common::wait_for;
use gatehouse::sim::gate::{GateSim, GateSimConfig, SIM_TOKEN, SimUser, default_aps};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const PRESENCE: &[&str] = &["ui", "uo", "st", "si", "di", "ai", "aa"];

fn yaml(sim: &GateSim, broker: &Broker, dir: &Path, extra: &str) -> String {
    format!(
        "version: 1\nstorage: {{ path: {}/g.db }}\nmqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gh-gate-{}\nsources:\n  gate:\n    url: {}\n    token: {SIM_TOKEN}\n    poll_interval: 200ms\n    page_size: 5\n    max_backoff: 3s\n{extra}",
        dir.display(),
        broker.port,
        rand::random::<u32>(),
        sim.base_url(),
    )
}

async fn daemon(text: &str) -> gatehouse::app::App {
    daemon_with_clock(text, Default::default()).await
}

/// The daemon on a clock the test moves (the presence engine's Wi-Fi timers read it).
async fn daemon_with_clock(
    text: &str,
    clock: std::sync::Arc<gatehouse::clock::OffsetClock>,
) -> gatehouse::app::App {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("GATEHOUSE_LOG").unwrap_or_else(|_| "gatehouse=debug".into()),
        )
        .with_test_writer()
        .try_init();
    let cfg = gatehouse::config::load_str(text, &|_| None).expect("valid config");
    gatehouse::app::App::start_with_clock(cfg, None, None, clock)
        .await
        .expect("daemon starts")
}

fn q(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn stored_ids(db: &Path) -> Vec<i64> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT source_id FROM events WHERE source = 'gate' ORDER BY source_id")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// How many times each GATE transaction id was published on `gatehouse/wifi/event`.
fn published(rec: &Recorder) -> BTreeMap<i64, usize> {
    let mut m = BTreeMap::new();
    for msg in rec.on("gatehouse/wifi/event") {
        let v = msg.json();
        let id: i64 = v["id"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        *m.entry(id).or_default() += 1;
    }
    m
}

fn users() -> (SimUser, SimUser) {
    (
        SimUser::new(5501, "anna.koch", 0x02_aa_bb_cc_dd_01),
        SimUser::new(5502, "ben.lind", 0x02_aa_bb_cc_dd_02),
    )
}

/// Mixed portal traffic: every presence type, registrations (skipped), a malformed entry
/// with an id and one without.
fn traffic(sim: &GateSim, n: usize) {
    let (a, b) = users();
    let aps = default_aps();
    for i in 0..n {
        let kind = ["ui", "uo", "st", "si", "di", "ai", "aa", "ur"][i % 8];
        sim.portal(kind, if i % 2 == 0 { &a } else { &b }, &aps[i % aps.len()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_once_across_shifting_pages_and_a_daemon_restart() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec-gate1", "gatehouse/#", false).await;
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    // Offset cursors, two logins arriving before each page request, and the previous
    // page's last entry repeated: pages overlap and shift under the client.
    sim.offset_cursors(true);
    sim.insert_while_paging(2);
    sim.duplicate_across_pages(true);
    traffic(&sim, 23);
    sim.push_raw_entry(
        json!({"datetime": "yesterday", "type": "ui", "user": 1}),
        true,
    );
    sim.push_raw_entry(json!({"type": "uo", "note": "no id at all"}), false);
    traffic(&sim, 4);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let text = yaml(&sim, &broker, dir.path(), "");
    let app = daemon(&text).await;
    // The inserts stop once the first poll has paged through everything.
    wait_for("first poll paged", T, || sim.stats().txlog_requests >= 8).await;
    sim.insert_while_paging(0);
    wait_for("every presence entry stored", T, || {
        stored_ids(&db) == sim.txlog_ids(PRESENCE)
    })
    .await;
    wait_for("published", T, || {
        published(&rec).len() == sim.txlog_ids(PRESENCE).len()
    })
    .await;
    // The malformed entries are kept raw, once each, however often polls pass them.
    let polls = sim.stats().txlog_requests;
    wait_for("more polls", T, || sim.stats().txlog_requests >= polls + 5).await;
    assert_eq!(
        q(&db, "SELECT count(*) FROM rejects WHERE source = 'gate'"),
        2,
        "the bad datetime and the entry without id, once each"
    );
    assert_eq!(
        q(
            &db,
            "SELECT count(*) FROM rejects WHERE raw LIKE '%yesterday%'"
        ),
        1
    );
    // Registrations are skipped, not stored.
    assert_eq!(
        q(
            &db,
            "SELECT count(*) FROM events WHERE source = 'gate' AND raw LIKE '%\"type\":\"ur\"%'"
        ),
        0
    );
    let first = sim.txlog_ids(PRESENCE);
    app.shutdown().await;

    // While the daemon is away: more traffic, and the server's clock goes five hours wrong
    // (the cursor is by id, not by time).
    sim.set_clock_offset(chrono::Duration::hours(-5));
    traffic(&sim, 12);
    // The first request of the new run fails (its retry comes a poll interval later, time to
    // watch the bus), and pages shift and overlap again.
    sim.fail_next(1, 503, 0);
    sim.insert_while_paging(1);
    let app = daemon(&text).await;
    let mut watch = app.bus.watch();
    let on_bus = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let b = on_bus.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(m) = watch.recv().await {
            if let gatehouse::model::Message::Event(e) = m {
                b.lock().unwrap().push(e.id.clone());
            }
        }
    });
    wait_for("second run paged", T, || {
        sim.stats().txlog_requests >= polls + 12
    })
    .await;
    sim.insert_while_paging(0);
    wait_for("the new entries stored", T, || {
        stored_ids(&db) == sim.txlog_ids(PRESENCE)
    })
    .await;
    wait_for("published", T, || {
        published(&rec).len() == sim.txlog_ids(PRESENCE).len()
    })
    .await;
    assert!(sim.txlog_ids(PRESENCE).len() > first.len());
    let counts = published(&rec);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    // The sources' own deduplication: each entry once on the bus too (the people fusion
    // reads the bus, not the store).
    watcher.abort();
    let mut seen = on_bus.lock().unwrap().clone();
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), n, "an entry went on the bus twice");
    assert_eq!(n, sim.txlog_ids(PRESENCE).len() - first.len());
    // Resumed from the stored cursor: nothing before it was read again (the malformed
    // entries would be rejected a second time).
    assert_eq!(
        q(&db, "SELECT count(*) FROM rejects WHERE source = 'gate'"),
        2,
        "no replay after the restart"
    );
    let ev = rec.on("gatehouse/wifi/event")[0].json();
    assert!(ev["seq"].as_i64().is_some(), "{ev}");
    assert!(
        ev["event_type"].as_str().unwrap().starts_with("wifi_"),
        "{ev}"
    );
    assert!(!rec.on("gatehouse/wifi/event")[0].retain);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_server_errors_and_a_reset_server_lose_nothing() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec-gate2", "gatehouse/#", false).await;
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    traffic(&sim, 6);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let app = daemon(&yaml(&sim, &broker, dir.path(), "")).await;
    wait_for("stored", T, || stored_ids(&db) == sim.txlog_ids(PRESENCE)).await;
    wait_for("online", T, || {
        rec.on("gatehouse/gate/availability")
            .last()
            .is_some_and(|m| m.text() == "online")
    })
    .await;

    // A burst of 502s: availability goes offline, the waits double.
    let before = sim.stats().log.len();
    sim.fail_next(4, 502, 0);
    traffic(&sim, 5);
    wait_for("stored after the 5xx burst", T, || {
        stored_ids(&db) == sim.txlog_ids(PRESENCE)
    })
    .await;
    let log = sim.stats().log[before..].to_vec();
    let fails: Vec<_> = log.iter().filter(|(_, _, s)| *s == 502).collect();
    assert_eq!(fails.len(), 4);
    let gaps: Vec<Duration> = fails.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(
        // 200, 400, 800 ms plus request latency (a loaded machine adds to each).
        gaps[2] > gaps[0] * 2,
        "waits double from poll_interval: {gaps:?}"
    );
    assert!(
        rec.on("gatehouse/gate/availability")
            .iter()
            .any(|m| m.text() == "offline"),
        "5xx makes the source unavailable"
    );
    wait_for("online again", T, || {
        rec.on("gatehouse/gate/availability")
            .last()
            .is_some_and(|m| m.text() == "online")
    })
    .await;

    // 429 with Retry-After: 2 s is honoured (the poll interval is 200 ms).
    let before = sim.stats().log.len();
    sim.fail_next(1, 429, 2);
    traffic(&sim, 3);
    wait_for("stored after the 429", T, || {
        stored_ids(&db) == sim.txlog_ids(PRESENCE)
    })
    .await;
    let log = sim.stats().log[before..].to_vec();
    let i = log.iter().position(|(_, _, s)| *s == 429).unwrap();
    let wait = log[i + 1].0 - log[i].0;
    assert!(
        wait >= Duration::from_millis(1900),
        "Retry-After honoured: {wait:?}"
    );
    let state = rec.on("gatehouse/gate/state");
    assert!(
        state
            .iter()
            .any(|m| m.json()["detail"].as_str().unwrap_or("").contains("429")),
        "the health says why"
    );

    // A 200 whose body is cut off: kept raw in `rejects`, retried, nothing lost. It hits
    // whichever request comes next, a portal or an accounting page (the poll may be between
    // the two when the failure is queued).
    sim.fail_next(1, 200, 0);
    traffic(&sim, 3);
    wait_for("stored after the cut-off body", T, || {
        stored_ids(&db) == sim.txlog_ids(PRESENCE)
    })
    .await;
    wait_for("the cut-off page rejected", T, || {
        q(
            &db,
            "SELECT count(*) FROM rejects WHERE context IN ('txlog_portal page', 'aaa_accounting page')",
        ) >= 1
    })
    .await;
    assert_eq!(
        q(
            &db,
            "SELECT count(*) FROM rejects WHERE context IN ('txlog_portal page', 'aaa_accounting page')",
        ),
        1,
        "one cut-off body, rejected once"
    );

    // The server restarts with an empty database: ids start at 1 again, below our cursor.
    // Its new entries are read under a new numbering, never mistaken for old ones.
    let old = stored_ids(&db).len();
    sim.restart(true);
    traffic(&sim, 7);
    let fresh = sim.txlog_ids(PRESENCE);
    assert!(fresh.iter().all(|id| *id < 10), "{fresh:?}");
    wait_for("entries after the reset stored", T, || {
        q(&db, "SELECT count(*) FROM events WHERE id LIKE 'gate:e1:%'") == fresh.len() as i64
    })
    .await;
    assert_eq!(stored_ids(&db).len(), old + fresh.len());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_occupancy_follow_sessions() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec-gate3", "#", false).await;
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Anna is a person (odd user ids log in to RADIUS with their e-mail address); Ben is a
    // guest without an entity.
    let extra = "    forget_after: 3s\npeople:\n  - { id: anna, name: Anna, gate_usernames: [Anna.Koch@example.org] }\n";
    let app = daemon(&yaml(&sim, &broker, dir.path(), extra)).await;
    let anna_topic = "gatehouse/wifi/user/anna_koch_example_org/state";
    let anna_cfg = "homeassistant/binary_sensor/gatehouse/gate_user_anna_koch_example_org/config";
    wait_for("Anna's entity and state before any session", T, || {
        !rec.on(anna_cfg).is_empty() && !rec.on(anna_topic).is_empty()
    })
    .await;
    let c = rec.on(anna_cfg).last().unwrap().json();
    assert_eq!(c["device_class"], "presence");
    assert_eq!(c["name"], "Anna");
    assert_eq!(
        c["default_entity_id"],
        "binary_sensor.gatehouse_gate_user_anna_koch_example_org"
    );
    assert_eq!(c["device"]["identifiers"][0], "gatehouse_gate");
    let first = rec.on(anna_topic)[0].clone();
    assert!(first.retain);
    assert_eq!(
        first.json()["connected"],
        false,
        "OFF from the first second, never unknown"
    );

    let (anna, ben) = (
        SimUser::new(5501, "anna.koch", 0x02_aa_bb_cc_dd_01),
        SimUser::new(5502, "ben.lind", 0x02_aa_bb_cc_dd_02),
    );
    let aps = default_aps();
    let sa = sim.login(&anna, &aps[0]);
    let sb = sim.login(&ben, &aps[1]);
    let hq = "gatehouse/wifi/location/headquarters_building_a/state";
    let ap_east = "gatehouse/wifi/ap/ap_floor2_east/state";
    let ben_topic = "gatehouse/wifi/user/ben_lind/state";
    // The places' states and the users' are messages of their own: wait for all three.
    wait_for("two devices at HQ, Anna and Ben connected", T, || {
        rec.on(hq).last().is_some_and(|m| m.json()["devices"] == 2)
            && rec
                .on(anna_topic)
                .last()
                .is_some_and(|m| m.json()["connected"] == true)
            && rec
                .on(ben_topic)
                .last()
                .is_some_and(|m| m.json()["connected"] == true)
    })
    .await;
    let a = rec.on(anna_topic).last().unwrap().json();
    assert_eq!(a["connected"], true);
    assert_eq!(a["sessions"], 1);
    assert_eq!(a["access_points"], json!(["AP-Floor3-West"]));
    assert_eq!(a["macs"], json!(["02:aa:bb:cc:dd:01"]));
    assert!(
        rec.on("homeassistant/binary_sensor/gatehouse/gate_user_ben_lind/config")
            .is_empty(),
        "a guest gets a topic, no entity"
    );
    // Occupancy sensors: announced with their first session, retained, a number from the start.
    let loc_cfg = "homeassistant/sensor/gatehouse/gate_location_headquarters_building_a/config";
    // Discovery follows the states in the same batch.
    wait_for("HQ's sensor announced", T, || !rec.on(loc_cfg).is_empty()).await;
    let c = rec.on(loc_cfg).last().unwrap().json();
    assert_eq!(c["state_class"], "measurement");
    assert_eq!(c["unit_of_measurement"], "devices");
    assert_eq!(c["state_topic"], hq);
    assert_eq!(c["availability"][1]["topic"], "gatehouse/gate/availability");
    for t in [hq, ap_east] {
        let all = rec.on(t);
        assert!(
            all.iter().all(|m| m.retain && m.json()["devices"].is_u64()),
            "{t}"
        );
    }
    assert_eq!(rec.on(ap_east).last().unwrap().json()["devices"], 1);

    // Anna's session times out, Ben logs out.
    sim.end_session(sa, "st");
    sim.end_session(sb, "uo");
    wait_for("HQ empty", T, || {
        rec.on(hq).last().is_some_and(|m| m.json()["devices"] == 0)
    })
    .await;
    wait_for("Anna away", T, || {
        rec.on(anna_topic)
            .last()
            .is_some_and(|m| m.json()["connected"] == false)
    })
    .await;
    wait_for("Ben's topic cleared", T, || {
        rec.on(ben_topic)
            .last()
            .is_some_and(|m| m.payload.is_empty())
    })
    .await;
    // Events: login, timeout, logout (they reach MQTT through the store's outbox, on their
    // own path: not ordered with the states).
    let kinds = || -> Vec<String> {
        rec.on("gatehouse/wifi/event")
            .iter()
            .map(|m| m.json()["event_type"].as_str().unwrap().to_string())
            .collect()
    };
    wait_for("login, timeout and logout events", T, || {
        let k = kinds();
        ["wifi_login", "wifi_timeout", "wifi_logout"]
            .iter()
            .all(|w| k.iter().any(|x| x == w))
    })
    .await;
    // Places without a session for `forget_after` go: config and state cleared.
    wait_for("HQ forgotten", T, || {
        rec.on(loc_cfg).last().is_some_and(|m| m.payload.is_empty())
            && rec.on(hq).last().is_some_and(|m| m.payload.is_empty())
    })
    .await;
    // Anna's entity stays (she is a person).
    assert!(!rec.on(anna_cfg).last().unwrap().payload.is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_reported_clearly() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec-gate4", "gatehouse/gate/#", false).await;
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    sim.set_token("another-token");
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&yaml(&sim, &broker, dir.path(), "")).await;
    wait_for("health says the token was refused", T, || {
        rec.on("gatehouse/gate/state").iter().any(|m| {
            m.json()["detail"].as_str().is_some_and(|d| {
                d.contains("refused the token") && d.contains("sources.gate.token")
            })
        })
    })
    .await;
    assert_eq!(
        rec.on("gatehouse/gate/availability").last().unwrap().text(),
        "offline"
    );
    assert!(sim.stats().unauthorized >= 1);
    app.shutdown().await;
}

/// The Bearer token is only ever in the Authorization header: not in the logs (at trace
/// level, HTTP client internals included), MQTT or the database — also when it is refused.
#[test]
fn the_token_never_leaves_the_process() {
    let (buf, _guard, rt) = common::logs::capture("trace");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let broker = Broker::start();
    let msgs = rt.block_on(async {
        let rec = Recorder::start(broker.port, "rec-gate5", "#", false).await;
        let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
        let (a, b) = users();
        sim.login(&a, &default_aps()[0]);
        sim.login(&b, &default_aps()[2]);
        let cfg =
            gatehouse::config::load_str(&yaml(&sim, &broker, dir.path(), ""), &|_| None).unwrap();
        let app = gatehouse::app::App::start(cfg, None, None).await.unwrap();
        wait_for("stored", T, || stored_ids(&db).len() == 2).await;
        wait_for("occupancy published", T, || {
            !rec.on("gatehouse/wifi/ap/ap_dock/state").is_empty()
        })
        .await;
        // Refused: the error path logs the server's answer, never what we sent.
        sim.set_token("rotated");
        wait_for("refused", T, || sim.stats().unauthorized >= 2).await;
        app.shutdown().await;
        rec.all()
    });
    let logs = buf.text();
    assert!(logs.contains("GATE reachable"), "the logs were captured");
    assert!(logs.contains("GATE authentication failed"));
    let hit = logs.lines().find(|l| l.contains(SIM_TOKEN));
    assert!(hit.is_none(), "the token is in the logs: {hit:?}");
    for m in &msgs {
        assert!(
            !m.topic.contains(SIM_TOKEN) && !m.text().contains(SIM_TOKEN),
            "{}",
            m.topic
        );
    }
    assert!(!msgs.is_empty());
    for f in ["g.db", "g.db-wal"] {
        let bytes = std::fs::read(dir.path().join(f)).unwrap_or_default();
        assert!(
            !bytes
                .windows(SIM_TOKEN.len())
                .any(|w| w == SIM_TOKEN.as_bytes()),
            "the token is in {f}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_who_left_while_gatehouse_was_stopped_leaves_no_retained_state() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec-gate6", "gatehouse/wifi/#", false).await;
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    let (_, ben) = users();
    let s = sim.login(&ben, &default_aps()[1]);
    let dir = tempfile::tempdir().unwrap();
    let text = yaml(&sim, &broker, dir.path(), "");
    let app = daemon(&text).await;
    let topic = "gatehouse/wifi/user/ben_lind/state";
    wait_for("Ben connected", T, || {
        rec.on(topic)
            .last()
            .is_some_and(|m| m.json()["connected"] == true)
    })
    .await;
    app.shutdown().await;
    sim.end_session(s, "si");
    let app = daemon(&text).await;
    wait_for("Ben's retained state cleared after the restart", T, || {
        rec.on(topic).last().is_some_and(|m| m.payload.is_empty())
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occupancy_uses_complete_session_lists_only() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec-gate7", "gatehouse/wifi/#", false).await;
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    let aps = default_aps();
    // Twelve phones at HQ: three pages of five, the last of each page repeated on the next.
    for i in 0..12 {
        sim.login(
            &SimUser::new(
                6000 + i,
                &format!("guest-{i}"),
                0x02_00_00_00_60_00 + i as u64,
            ),
            &aps[0],
        );
    }
    sim.duplicate_across_pages(true);
    // A record that is not a session (no id of any kind), and one with a garbled start time.
    sim.push_raw_session(json!({"username": "nobody", "acctstoptime": null}));
    sim.push_raw_session(json!({"radacctid": 99999, "acctsessionid": "x", "acctstarttime": "soon", "acctstoptime": null}));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let app = daemon(&yaml(&sim, &broker, dir.path(), "")).await;
    let hq = "gatehouse/wifi/location/headquarters_building_a/state";
    wait_for("twelve devices at HQ", T, || {
        rec.on(hq).last().is_some_and(|m| m.json()["devices"] == 12)
    })
    .await;
    // Later pages fail for a while: the cut-short list (first page only) is never used.
    sim.fail_later_accounting_pages(4, 502);
    wait_for("the failures served", T, || {
        sim.stats().failures_served >= 4
    })
    .await;
    let polls = sim.stats().accounting_requests;
    wait_for("a good poll after them", T, || {
        sim.stats().accounting_requests >= polls + 6
    })
    .await;
    let counts: Vec<serde_json::Value> = rec
        .on(hq)
        .iter()
        .map(|m| m.json()["devices"].clone())
        .collect();
    assert!(
        counts.iter().skip_while(|c| **c != 12).all(|c| *c == 12),
        "a partial list moved the count: {counts:?}"
    );
    assert_eq!(rec.on(hq).last().unwrap().json()["users"], 12);
    assert_eq!(
        q(
            &db,
            "SELECT count(*) FROM rejects WHERE context = 'aaa_accounting record'"
        ),
        2,
        "each malformed record once"
    );
    app.shutdown().await;
}

/// Seed 003's `next` links carry the cursor and the limit only (`…/aaa_accounting/?cursor=
/// xyz123&limit=25` answering `?start_date=…&session_status=active&limit=25`), and so do the
/// simulator's: every later page must still ask for the first request's filters, or the first
/// backfill reads the whole portal log and each accounting poll walks every stopped session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_pages_keep_the_first_requests_filters() {
    let broker = Broker::start();
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    let aps = default_aps();
    // Two days ago by GATE's clock: outside the one-hour first backfill.
    sim.set_clock_offset(chrono::Duration::hours(-48));
    traffic(&sim, 12);
    sim.set_clock_offset(chrono::Duration::zero());
    let old = sim.txlog_ids(PRESENCE);
    // Fourteen phones, every other one gone again: more active sessions than fit on a page,
    // with stopped ones between them.
    let sessions: Vec<i64> = (0..14)
        .map(|i| {
            sim.login(
                &SimUser::new(
                    7000 + i,
                    &format!("visitor-{i}"),
                    0x02_00_00_00_70_00 + i as u64,
                ),
                &aps[0],
            )
        })
        .collect();
    for s in sessions.iter().step_by(2) {
        sim.end_session(*s, "uo");
    }
    traffic(&sim, 12);
    let fresh: Vec<i64> = sim
        .txlog_ids(PRESENCE)
        .into_iter()
        .filter(|i| !old.contains(i))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let app = daemon(&yaml(
        &sim,
        &broker,
        dir.path(),
        "    initial_backfill: 1h\n",
    ))
    .await;
    // Seven active sessions, five a page: two accounting pages a poll; two polls done.
    wait_for("two complete polls", T, || {
        sim.stats().accounting_requests >= 4
    })
    .await;
    wait_for("the backfill stored", T, || {
        let s = stored_ids(&db);
        fresh.iter().all(|i| s.contains(i))
    })
    .await;
    assert_eq!(
        stored_ids(&db),
        fresh,
        "entries before the backfill window read"
    );
    let queries = sim.stats().queries;
    let has = |q: &[(String, String)], k: &str, v: Option<&str>| {
        q.iter()
            .any(|(n, x)| n == k && v.is_none_or(|v| v == x.as_str()))
    };
    // The first poll's portal pages (everything before the first accounting request).
    let first_poll: Vec<_> = queries
        .iter()
        .take_while(|(e, _)| *e == "txlog_portal")
        .collect();
    assert!(
        first_poll.len() >= 2,
        "the backfill spans pages: {first_poll:?}"
    );
    for (_, q) in &first_poll {
        assert!(
            has(q, "start_date", None),
            "a backfill page without start_date: {q:?}"
        );
    }
    for (e, q) in &queries {
        if *e == "aaa_accounting" {
            assert!(
                has(q, "session_status", Some("active")),
                "an accounting page without session_status=active: {q:?}"
            );
        }
    }
    app.shutdown().await;
}

/// Days offline on a busy hotspot: a gap of a hundred pages, read while GATE refuses every
/// 25th request with a 429. Read in one go, newest first, nothing could be published before
/// the stored cursor was reached, every 429 threw the pages read away and the next poll began
/// again at the newest page: the catch-up never finished. Now it goes window by window (by
/// GATE's time, oldest first), each published and checkpointed, never holding more than 20
/// pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backlog_is_caught_up_through_rate_limits() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec-gate9", "gatehouse/wifi/event", false).await;
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    let (a, b) = users();
    let aps = default_aps();
    // What was read before going offline: three hours ago by GATE's clock.
    sim.set_clock_offset(chrono::Duration::hours(-3));
    traffic(&sim, 8);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let text = yaml(&sim, &broker, dir.path(), "    initial_backfill: 4h\n")
        .replace("max_backoff: 3s", "max_backoff: 400ms");
    let app = daemon(&text).await;
    wait_for("the first entries stored", T, || {
        stored_ids(&db) == sim.txlog_ids(PRESENCE)
    })
    .await;
    app.shutdown().await;
    // Offline: 500 logins over the last two hours (100 pages of 5).
    for i in 0..500i64 {
        sim.set_clock_offset(chrono::Duration::seconds(-7200 + i * 14));
        sim.portal(
            "ui",
            if i % 2 == 0 { &a } else { &b },
            &aps[i as usize % aps.len()],
        );
    }
    sim.set_clock_offset(chrono::Duration::zero());
    let want = sim.txlog_ids(PRESENCE);
    let before = sim.stats().queries.len();
    sim.throttle_every(25);
    let app = daemon(&text).await;
    wait_for("the backlog stored", Duration::from_secs(60), || {
        stored_ids(&db) == want
    })
    .await;
    wait_for("the backlog published", T, || {
        published(&rec).keys().copied().collect::<Vec<_>>() == want
    })
    .await;
    let twice: Vec<_> = published(&rec)
        .into_iter()
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    // Windows by time, and never more than 20 pages of entries held: a read of more pages
    // (each begins with a request without a cursor) stops after the 21st.
    let queries = sim.stats().queries[before..].to_vec();
    let txlog: Vec<_> = queries
        .iter()
        .filter(|(e, _)| *e == "txlog_portal")
        .map(|(_, q)| q)
        .collect();
    assert!(
        txlog.iter().any(|q| q.iter().any(|(k, _)| k == "end_date")),
        "no catch-up windows"
    );
    let mut run = 0;
    let mut longest = 0;
    for q in &txlog {
        run = if q.iter().any(|(k, _)| k == "cursor") {
            run + 1
        } else {
            1
        };
        longest = longest.max(run);
    }
    assert!(longest <= 21, "a read of {longest} pages");
    app.shutdown().await;
}

/// GATE's clock set back hours while gatehouse was offline: the gap's newest entry is dated
/// before the time the cursor reached, so windows by time would never reach it. That gap is
/// read in one go (by id, as a normal poll), and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_gap_behind_a_clock_set_back_is_still_read() {
    let broker = Broker::start();
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    let (a, b) = users();
    let aps = default_aps();
    traffic(&sim, 8);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let text = yaml(&sim, &broker, dir.path(), "");
    let app = daemon(&text).await;
    wait_for("the first entries stored", T, || {
        stored_ids(&db) == sim.txlog_ids(PRESENCE)
    })
    .await;
    app.shutdown().await;
    // 150 logins (30 pages of 5), all dated five hours before the cursor's time.
    sim.set_clock_offset(chrono::Duration::hours(-5));
    for i in 0..150usize {
        sim.portal("ui", if i % 2 == 0 { &a } else { &b }, &aps[i % aps.len()]);
    }
    let want = sim.txlog_ids(PRESENCE);
    let app = daemon(&text).await;
    wait_for("the gap stored", T, || stored_ids(&db) == want).await;
    app.shutdown().await;
}

/// GATE's clock runs an hour ahead: its entries are taken as of their arrival. Before, one
/// login stamped an hour ahead ran everyone's Wi-Fi away timers an hour forward (Ben, whose
/// phone had just left, went away at once) and dated Anna's arrival an hour in the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_clock_an_hour_ahead_moves_no_one_s_presence() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec-gate-clock", "gatehouse/person/#", false).await;
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = yaml(
        &sim,
        &broker,
        dir.path(),
        "people:\n  - { id: anna, gate_users: [5501], gate_usernames: [anna.koch@example.org] }\n  - { id: ben, gate_users: [5502], gate_usernames: [ben.lind] }\npresence: { wifi_away_after: 10m }\n",
    );
    let clock = std::sync::Arc::new(gatehouse::clock::OffsetClock::new());
    let app = daemon_with_clock(&text, clock.clone()).await;
    // Past the start-up grace (during it, evidence stamped after the start runs no timer).
    clock.advance(Duration::from_secs(31));
    let (a, b) = users();
    let aps = default_aps();
    let state = |id: &str| {
        rec.on(&format!("gatehouse/person/{id}/state"))
            .last()
            .map(|m| m.text())
    };
    let attrs = |id: &str| {
        rec.on(&format!("gatehouse/person/{id}/attributes"))
            .last()
            .map(|m| m.json())
    };
    let ben = sim.login(&b, &aps[0]);
    wait_for("Ben home", T, || state("ben").as_deref() == Some("home")).await;
    // (The simulator's accounting names odd user ids by e-mail, even ones by user name.)
    wait_for("Ben's session listed", T, || {
        attrs("ben").is_some_and(|a| a["wifi_sessions"] == 1)
    })
    .await;
    // His phone leaves: away ten minutes from now, unless he comes back.
    sim.end_session(ben, "uo");
    wait_for("Ben's session over", T, || {
        attrs("ben").is_some_and(|a| a["wifi_sessions"] == 0)
    })
    .await;
    sim.set_clock_offset(chrono::Duration::hours(1));
    sim.login(&a, &aps[0]);
    wait_for("Anna home", T, || state("anna").as_deref() == Some("home")).await;
    // A few more polls (200 ms apart): Ben's timer is not run an hour forward.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state("ben").as_deref(), Some("home"));
    let since: chrono::DateTime<chrono::Utc> = attrs("anna").unwrap()["since"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        since <= chrono::Utc::now(),
        "Anna's arrival dated by GATE's clock: {since}"
    );
    app.shutdown().await;
    sim.shutdown();
}

/// GATE's token is revoked (401 for ever): no session list comes any more, so nothing would
/// ever end Anna's session. After `wifi_away_after` without a list her session counts as ended
/// at the last one, and she goes away, the evidence saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_when_gate_stops_answering() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec-gate-silent", "gatehouse/person/#", false).await;
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = yaml(
        &sim,
        &broker,
        dir.path(),
        "people:\n  - { id: anna, gate_users: [5501], gate_usernames: [anna.koch@example.org] }\npresence: { wifi_away_after: 10m }\n",
    );
    let clock = std::sync::Arc::new(gatehouse::clock::OffsetClock::new());
    let app = daemon_with_clock(&text, clock.clone()).await;
    clock.advance(Duration::from_secs(31));
    let (a, _) = users();
    let aps = default_aps();
    let state = || {
        rec.on("gatehouse/person/anna/state")
            .last()
            .map(|m| m.text())
    };
    let attrs = || {
        rec.on("gatehouse/person/anna/attributes")
            .last()
            .map(|m| m.json())
    };
    sim.login(&a, &aps[0]);
    wait_for("Anna home", T, || state().as_deref() == Some("home")).await;
    wait_for("her session listed", T, || {
        attrs().is_some_and(|a| a["wifi_sessions"] == 1)
    })
    .await;
    sim.set_token("revoked");
    let refused = sim.stats().unauthorized;
    wait_for("GATE refusing", T, || sim.stats().unauthorized > refused).await;
    // Nine minutes of silence: still home.
    clock.advance(Duration::from_secs(9 * 60));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state().as_deref(), Some("home"));
    clock.advance(Duration::from_secs(61));
    wait_for("away after the window of silence", T, || {
        state().as_deref() == Some("not_home")
    })
    .await;
    wait_for("the evidence says why", T, || {
        attrs().is_some_and(|a| {
            a["evidence"]
                .as_str()
                .is_some_and(|e| e.starts_with("GATE has not answered since"))
                && a["wifi_sessions"] == 0
        })
    })
    .await;
    app.shutdown().await;
    sim.shutdown();
}
