//! The MQTT bridge against a real Mosquitto (started per test on a free port) and the Net2
//! simulator.

mod common;

use common::broker::{Broker, Recorder, publish};
use common::{Harness, wait_for};
use gatehouse::sim::net2::{SimConfig, SimEvent};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn mqtt_section(port: u16, extra: &str) -> String {
    format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: gatehouse-test-{}\n{extra}",
        rand::random::<u32>()
    )
}

async fn setup(extra_net2: &str, mqtt_extra: &str) -> (Broker, Harness, Recorder) {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "recorder", "#", false).await;
    let mut h = Harness::new(SimConfig::default(), extra_net2).await;
    h.top = mqtt_section(broker.port, mqtt_extra);
    h.start().await;
    (broker, h, rec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_event_reaches_its_topics() {
    let (_b, mut h, rec) = setup("", "").await;
    wait_for("online", T, || {
        rec.on("gatehouse/bridge/state")
            .last()
            .is_some_and(|m| m.text() == "online")
    })
    .await;
    wait_for("live", T, || {
        h.sim.websocket_count() == 1 && !h.sim.stats().subscriptions.is_empty()
    })
    .await;
    h.sim
        .push_event(SimEvent::new(26, 6612642).user(8).token_type(1));
    wait_for("event on the door topic", T, || {
        !rec.on("gatehouse/door/6612642/event").is_empty()
    })
    .await;
    let ev = rec.on("gatehouse/door/6612642/event")[0].clone();
    assert!(!ev.retain, "events are not retained");
    let j = ev.json();
    assert_eq!(j["event_type"], "access_granted");
    assert_eq!(j["user"]["name"], "Mette Kragh Holm");
    assert_eq!(j["user"]["id"], 8);
    assert_eq!(j["door"]["id"], 6612642);
    assert!(j["id"].as_str().unwrap().starts_with("net2:"));
    assert!(j["seq"].as_i64().unwrap() > 0, "a seq: {j}");
    assert_eq!(j["redelivered"], false, "sent once: {j}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(j["time"].as_str().unwrap()).is_ok(),
        "ISO-8601 with offset: {j}"
    );
    wait_for("presence", T, || {
        !rec.on("gatehouse/user/8/presence").is_empty()
    })
    .await;
    let p = rec.on("gatehouse/user/8/presence").last().unwrap().json();
    assert_eq!(p["door"]["id"], 6612642);
    assert_eq!(
        p["site"],
        serde_json::Value::Null,
        "live events carry no site"
    );
    let state = rec
        .on("gatehouse/door/6612642/state")
        .last()
        .unwrap()
        .json();
    assert_eq!(state["last_user"]["name"], "Mette Kragh Holm");
    assert!(
        rec.on("gatehouse/net2/availability")
            .last()
            .is_some_and(|m| m.text() == "online")
    );
    // Each event exactly once on the wire here (no reconnects).
    let ids: Vec<_> = rec
        .on("gatehouse/door/6612642/event")
        .iter()
        .map(|m| m.json()["id"].clone())
        .collect();
    let mut dedup = ids.clone();
    dedup.dedup();
    assert_eq!(ids, dedup);
    h.stop().await;
    assert_eq!(
        h.query_i64("SELECT count(*) FROM mqtt_outbox"),
        0,
        "every event acknowledged and out of the outbox"
    );
    wait_for("offline on clean shutdown", T, || {
        rec.on("gatehouse/bridge/state")
            .last()
            .is_some_and(|m| m.text() == "offline")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_is_published_republished_on_birth_and_cleared_when_stale() {
    let (b, mut h, rec) = setup("", "").await;
    let lock = "homeassistant/lock/gatehouse/door_7242929_lock/config";
    wait_for("discovery", T, || !rec.on(lock).is_empty()).await;
    let cfg = rec.on(lock)[0].json();
    assert_eq!(cfg["command_topic"], "gatehouse/door/7242929/set");
    assert_eq!(cfg["unique_id"], "gatehouse_door_7242929_lock");
    assert_eq!(cfg["default_entity_id"], "lock.gatehouse_door_7242929_lock");
    assert_eq!(cfg["optimistic"], false);
    assert_eq!(cfg["device"]["via_device"], "gatehouse_net2");
    assert!(
        cfg["device"].get("serial_number").is_none(),
        "HA 2024.1 rejects unknown device keys"
    );
    assert_eq!(
        cfg["availability"][1]["topic"],
        "gatehouse/net2/availability"
    );
    assert!(rec.on(lock)[0].retain);
    // Home Assistant (or openHAB) comes online: discovery again, once, after a short delay.
    // (First the door's name from Net2 replaces the placeholder: a real change, published.)
    wait_for("the door's name from Net2", T, || {
        rec.on(lock)
            .last()
            .is_some_and(|m| m.json()["device"]["name"] != "Door 7242929")
    })
    .await;
    let before = rec.on(lock).len();
    publish(b.port, "homeassistant/status", b"online", false).await;
    publish(b.port, "homeassistant/status", b"online", false).await;
    wait_for("republished", T, || rec.on(lock).len() > before).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        rec.on(lock).len(),
        before + 1,
        "two births within the debounce: one republish"
    );
    h.stop().await;

    // Restart with one door fewer: its configs are cleared with empty retained payloads.
    rec.clear();
    h.top = mqtt_section(b.port, "");
    let cfg = gatehouse::config::load_str(
        &format!(
            "{}{}",
            common::config_text(&h.sim, &h.db(), "", "").replace("  6203980: {}\n", ""),
            h.top
        ),
        &|_| None,
    )
    .unwrap();
    h.app = Some(gatehouse::app::App::start(cfg, None, None).await.unwrap());
    let gone = "homeassistant/lock/gatehouse/door_6203980_lock/config";
    wait_for("stale config cleared", T, || {
        rec.on(gone)
            .iter()
            .any(|m| m.payload.is_empty() && m.retain)
    })
    .await;
    // A live config change (hot reload) clears a removed door's configs too, without restart.
    let gone2 = "homeassistant/lock/gatehouse/door_6612642_lock/config";
    let mut cfg = (*h.app().config()).clone();
    cfg.doors.remove(&6612642);
    h.app()
        .config_sender()
        .send_replace(std::sync::Arc::new(cfg));
    wait_for("cleared on reload", T, || {
        rec.on(gone2)
            .iter()
            .any(|m| m.payload.is_empty() && m.retain)
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_checked_and_every_rejection_is_reported() {
    let broker = Broker::start();
    // A retained command left on the broker from before must never open anything.
    publish(broker.port, "gatehouse/door/6612642/set", b"OPEN", true).await;
    let rec = Recorder::start(broker.port, "recorder", "gatehouse/command/result", false).await;
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.top = mqtt_section(broker.port, "");
    // Door 6203980 needs a code; 3962494 is disabled.
    h.extra = String::new();
    let text = format!(
        "{}  3962494: {{ mode: disabled }}\n{}",
        common::config_text(&h.sim, &h.db(), "", "").replace(
            "  6203980: {}\n",
            "  6203980: { require_code: \"Zq7-door-code\" }\n"
        ),
        h.top
    );
    let cfg = gatehouse::config::load_str(&text, &|_| None).unwrap();
    h.app = Some(gatehouse::app::App::start(cfg, None, None).await.unwrap());
    wait_for("door status synced", T, || {
        h.query_i64("SELECT count(*) FROM door_state") >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        h.sim.commands().is_empty(),
        "the retained command was not acted on"
    );

    let results = |rid: &str| -> Vec<serde_json::Value> {
        rec.all()
            .iter()
            .map(|m| m.json())
            .filter(|j| j["request_id"] == rid)
            .collect()
    };
    let send = |topic: &'static str, payload: String, retain: bool| {
        let port = broker.port;
        async move { publish(port, topic, payload.as_bytes(), retain).await }
    };
    let last_status = |rid: &str| {
        results(rid)
            .last()
            .map(|j| j["status"].as_str().unwrap_or("").to_string())
    };

    // Accepted → sent → confirmed.
    send(
        "gatehouse/door/6612642/set",
        r#"{"action":"open","request_id":"ok-1"}"#.into(),
        false,
    )
    .await;
    wait_for("confirmed", T, || {
        last_status("ok-1").as_deref() == Some("confirmed")
    })
    .await;
    assert_eq!(h.sim.commands().len(), 1);
    // Retained publish while subscribed.
    send(
        "gatehouse/door/6612642/set",
        r#"{"action":"open","request_id":"ret-1"}"#.into(),
        true,
    )
    .await;
    // Duplicate request id, too soon after the last, unknown door, disabled door, malformed,
    // missing and wrong codes.
    send(
        "gatehouse/door/6612642/set",
        r#"{"action":"open","request_id":"ok-1"}"#.into(),
        false,
    )
    .await;
    send(
        "gatehouse/door/6612642/set",
        r#"{"action":"close","request_id":"soon-1"}"#.into(),
        false,
    )
    .await;
    send(
        "gatehouse/door/1234/set",
        r#"{"action":"open","request_id":"unk-1"}"#.into(),
        false,
    )
    .await;
    send(
        "gatehouse/door/3962494/set",
        r#"{"action":"open","request_id":"dis-1"}"#.into(),
        false,
    )
    .await;
    send(
        "gatehouse/door/6612642/set",
        r#"{"action":"fly","request_id":"bad-1"}"#.into(),
        false,
    )
    .await;
    send(
        "gatehouse/door/6203980/set",
        r#"{"action":"open","request_id":"code-1"}"#.into(),
        false,
    )
    .await;
    send(
        "gatehouse/door/6203980/set",
        r#"{"action":"open","request_id":"code-2","code":"Wr0ng-code-x"}"#.into(),
        false,
    )
    .await;
    for (rid, why) in [
        ("ret-1", "retained"),
        ("soon-1", "min_command_interval"),
        ("unk-1", "unknown door"),
        ("dis-1", "disabled"),
        ("code-1", "requires a code"),
        ("code-2", "wrong code"),
    ] {
        wait_for(rid, T, || last_status(rid).as_deref() == Some("rejected")).await;
        let d = results(rid).last().unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(d.contains(why), "{rid}: {d}");
    }
    wait_for("duplicate", T, || {
        results("ok-1").iter().any(|j| j["status"] == "rejected")
    })
    .await;
    wait_for("malformed", T, || {
        rec.all().iter().any(|m| {
            m.json()["detail"]
                .as_str()
                .is_some_and(|d| d.contains("unknown action"))
        })
    })
    .await;
    // The right code opens; the code is never echoed.
    send(
        "gatehouse/door/6203980/set",
        r#"{"action":"open","request_id":"code-3","code":"Zq7-door-code"}"#.into(),
        false,
    )
    .await;
    wait_for("code accepted", T, || {
        last_status("code-3").is_some_and(|s| s == "sent" || s == "confirmed" || s == "timeout")
    })
    .await;
    assert_eq!(
        h.sim.commands().len(),
        2,
        "exactly the two accepted commands reached Net2"
    );
    for m in rec.all() {
        assert!(
            !m.text().contains("Zq7-door-code") && !m.text().contains("Wr0ng-code-x"),
            "a code was echoed: {}",
            m.text()
        );
    }
    h.stop().await;
    // Every rejection is audited.
    let audited = h.query_i64("SELECT count(*) FROM audit WHERE status = 'rejected'");
    assert!(audited >= 8, "audited rejections: {audited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_needs_nothing_installed() {
    let port = common::broker::free_port_pair();
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.top = format!("mqtt:\n  embedded: true\n  embedded_bind: 127.0.0.1:{port}\n");
    h.start().await;
    let rec = Recorder::start(port + 1, "recorder", "gatehouse/#", false).await;
    // MQTT 3.1.1 tools (mosquitto_sub, older HA) on the configured port.
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "gatehouse/door/+/event",
            "-C",
            "1",
            "-W",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (mosquitto-clients)");
    wait_for("live", T, || {
        h.sim.websocket_count() == 1 && !h.sim.stats().subscriptions.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.sim.push_event(SimEvent::new(20, 6612642).user(12));
    wait_for("event through the embedded broker", T, || {
        !rec.on("gatehouse/door/6612642/event").is_empty()
    })
    .await;
    assert_eq!(
        rec.on("gatehouse/door/6612642/event")[0].json()["user"]["name"],
        "Jonas Bak"
    );
    let out = sub.wait_with_output().await.unwrap();
    let line: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("mosquitto_sub got the event");
    assert_eq!(line["event_type"], "access_granted");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_mqtt_3_1_1() {
    // rumqttd's 3.1.1 listener refuses MQTT 5: gatehouse must fall back and work.
    let port = common::broker::free_port_pair();
    gatehouse::sinks::mqtt::embedded::start(format!("127.0.0.1:{port}").parse().unwrap()).unwrap();
    let rec = Recorder::start(port + 1, "recorder", "gatehouse/#", false).await;
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.top = mqtt_section(port, "");
    h.start().await;
    wait_for("online over 3.1.1", T, || {
        rec.on("gatehouse/bridge/state")
            .last()
            .is_some_and(|m| m.text() == "online")
    })
    .await;
    wait_for("live", T, || {
        h.sim.websocket_count() == 1 && !h.sim.stats().subscriptions.is_empty()
    })
    .await;
    h.sim.push_event(SimEvent::new(20, 6612642).user(12));
    wait_for("event over 3.1.1", T, || {
        !rec.on("gatehouse/door/6612642/event").is_empty()
    })
    .await;
    // Commands work too (retained ones are still refused by the router).
    publish(
        port + 1,
        "gatehouse/door/6612642/set",
        br#"{"action":"open","request_id":"v4-1"}"#,
        false,
    )
    .await;
    wait_for("command over 3.1.1", T, || h.sim.commands().len() == 1).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_credentials_to_the_broker() {
    // Mosquitto with a self-signed certificate and a password file.
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let pw = dir.path().join("passwd");
    let ok = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&pw)
        .args(["gatehouse", "s3cret-mqtt"])
        .status()
        .unwrap();
    assert!(ok.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\ncertfile {d}/cert.pem\nkeyfile {d}/key.pem\nallow_anonymous false\npassword_file {d}/passwd\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let mut broker = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.top = format!(
        "mqtt:\n  host: localhost\n  port: {port}\n  tls: true\n  tls_options: {{ ca_file: {}/cert.pem }}\n  username: gatehouse\n  password: s3cret-mqtt\n",
        dir.path().display()
    );
    h.start().await;
    wait_for("connected over TLS with credentials", T, || {
        h.app().bus.health("net2").is_some()
            && h.query_i64("SELECT count(*) FROM mqtt_discovery") > 0
    })
    .await;
    h.stop().await;
    // A wrong password: no connection, nothing published, and the daemon keeps running.
    let discovery_before = h.query_i64("SELECT count(*) FROM mqtt_discovery");
    h.top = h.top.replace("s3cret-mqtt", "wrong");
    let c = rusqlite::Connection::open(h.db()).unwrap();
    c.execute("DELETE FROM mqtt_discovery", []).unwrap();
    drop(c);
    h.start().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.query_i64("SELECT count(*) FROM mqtt_discovery"),
        0,
        "nothing published with a refused password"
    );
    assert!(discovery_before > 0);
    h.stop().await;
    let _ = broker.kill();
    let _ = broker.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_saw_a_gap_in_seq_asks_for_a_replay() {
    let (b, mut h, rec) = setup("    live: false\n", "").await;
    wait_for("online", T, || {
        rec.on("gatehouse/bridge/state")
            .last()
            .is_some_and(|m| m.text() == "online")
    })
    .await;
    let events = |rec: &Recorder| {
        rec.all()
            .into_iter()
            .filter(|m| m.topic.ends_with("/event"))
            .map(|m| m.json())
            .collect::<Vec<_>>()
    };
    for door in [6612642, 7242929, 6203980] {
        h.sim.push_event(SimEvent::new(46, door).rest_only());
    }
    wait_for("three events", T, || events(&rec).len() >= 3).await;
    let first: Vec<_> = events(&rec);
    let seqs: Vec<i64> = first.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive: {seqs:?}"
    );
    assert!(first.iter().all(|e| e["redelivered"] == false));
    // A retained request is refused, nothing is replayed.
    publish(
        b.port,
        "gatehouse/bridge/replay/set",
        seqs[1].to_string().as_bytes(),
        true,
    )
    .await;
    wait_for("refused", T, || {
        rec.on("gatehouse/command/result")
            .iter()
            .any(|m| m.json()["status"] == "rejected" && m.json()["command"] == "replay")
    })
    .await;
    // From the second on: the second and third again, flagged, with their own seq and id.
    let req = format!(r#"{{"from_seq":{},"request_id":"gap-1"}}"#, seqs[1]);
    publish(b.port, "gatehouse/bridge/replay/set", req.as_bytes(), false).await;
    wait_for("replayed", T, || events(&rec).len() >= 5).await;
    let again = &events(&rec)[3..];
    assert_eq!(again.len(), 2, "{again:?}");
    for (e, orig) in again.iter().zip(&first[1..]) {
        assert_eq!(e["seq"], orig["seq"]);
        assert_eq!(e["id"], orig["id"]);
        assert_eq!(e["redelivered"], true);
    }
    let result = rec
        .on("gatehouse/command/result")
        .into_iter()
        .map(|m| m.json())
        .find(|j| j["request_id"] == "gap-1")
        .unwrap();
    assert_eq!(result["status"], "confirmed", "{result}");
    assert!(
        result["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("seq {}–{}", seqs[1], seqs[2])),
        "{result}"
    );
    h.stop().await;
    assert_eq!(
        h.query_i64("SELECT count(*) FROM audit WHERE request_id = 'gap-1'"),
        1,
        "audited"
    );
}
