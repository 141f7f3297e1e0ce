//! Many sites, one Home Assistant: two gatehouses, each with its own Mosquitto bridged to a
//! central Mosquitto (the README's "Many sites" bridge: `<base>/#` both ways, discovery out,
//! `homeassistant/status` in), each with its own Net2 simulator (the same door ids at both
//! sites, as two real sites' simulators would have) and a Hikvision camera simulator at site
//! B. Site A keeps the default base topic `gatehouse` (an existing install), site B runs under
//! `site-b/gatehouse`. A real Home Assistant 2024.1.6 on the central broker must hold every
//! entity of both sites with no unique_id collision, two Net2 server devices, and the states
//! that came through the bridges; a door command sent on the central broker to site B reaches
//! site B's Net2 only; restarting site A leaves site B's discovery alone.
//!
//! Needs `GATEHOUSE_HA_PYTHON` (the venv scripts/test.sh creates).

mod common;

use common::Harness;
use common::broker::{Broker, Msg, Recorder, publish};
use common::wait_for;
use gatehouse::sim::hikvision::{HikSim, HikSimConfig, Personality};
use gatehouse::sim::net2::{SimConfig, SimEvent};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const BASE_A: &str = "gatehouse";
const BASE_B: &str = "site-b/gatehouse";
/// A door both sites' simulators have.
const DOOR: u64 = 6612642;

/// A site broker's bridge to the central broker, as the README shows it: everything of the
/// site out, only its commands and HA's birth in; the central broker keeps no session for the
/// site (a command sent while the link is down is dropped, never delivered late), the site
/// broker keeps one for the central (what happened meanwhile goes out when it is back).
fn bridge(name: &str, central: u16, base: &str) -> String {
    format!(
        "\nconnection {name}\naddress 127.0.0.1:{central}\nremote_clientid {name}\n\
         cleansession true\nlocal_cleansession false\nrestart_timeout 1\n\
         topic {base}/# out 1\n\
         topic {base}/+/+/set in 1\n\
         topic {base}/camera/+/+/set in 1\n\
         topic {base}/camera/+/+/+/set in 1\n\
         topic {base}/qr/+/scan in 1\n\
         topic homeassistant/# out 1\n\
         topic homeassistant/status in 1\n"
    )
}

/// The network between a site and the central broker: a TCP forwarder the test can cut
/// (every connection dropped, new ones refused) and restore, as a WAN outage would.
struct Link {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn start(to: u16) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Default::default();
        let (u, c) = (up.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    continue;
                };
                c.lock().unwrap().push(tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }));
            }
        });
        Link {
            port,
            up,
            conns,
            task,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// The latest retained payload of every topic under `prefix` (empty = cleared).
fn retained(msgs: &[Msg], prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for m in msgs
        .iter()
        .filter(|m| m.retain && m.topic.starts_with(prefix))
    {
        out.insert(m.topic.clone(), m.text());
    }
    out
}

/// Discovery configs standing on the central broker: topic → config.
fn discovery(msgs: &[Msg]) -> BTreeMap<String, Value> {
    retained(msgs, "homeassistant/")
        .into_iter()
        .filter(|(t, p)| t.ends_with("/config") && !p.is_empty())
        .map(|(t, p)| (t, serde_json::from_str(&p).unwrap()))
        .collect()
}

/// The configs whose state or command topics are under `base`.
fn of_site(d: &BTreeMap<String, Value>, base: &str) -> BTreeMap<String, Value> {
    let prefix = format!("{base}/");
    d.iter()
        .filter(|(_, c)| {
            c["availability"][0]["topic"]
                .as_str()
                .is_some_and(|t| t.starts_with(&prefix))
        })
        .map(|(t, c)| (t.clone(), c.clone()))
        .collect()
}

async fn site(base: &str, broker: u16, camera: Option<&HikSim>) -> Harness {
    let mut h = Harness::new(SimConfig::default(), "").await;
    // `extra_net2` ends the net2 section: a sibling source under `sources:`.
    if let Some(cam) = camera {
        h.extra = format!(
            "  hikvision:\n    - {{ id: yard, url: \"{}\", username: admin, password: sim-hik-pass }}\n",
            cam.base_url()
        );
    }
    // No client_id: the default one (two daemons on one host must not share it).
    h.top = format!("mqtt:\n  host: 127.0.0.1\n  port: {broker}\n  base_topic: {base}\n");
    h.start().await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sites_bridged_to_one_home_assistant() {
    common::ha::python();
    let central = Broker::start();
    let site_a = Broker::start_with(&bridge("site-a", central.port, BASE_A));
    // Site B reaches the central broker through a link the test can cut.
    let link_b = Link::start(central.port).await;
    let site_b = Broker::start_with(&bridge("site-b", link_b.port, BASE_B));
    let sys = Recorder::start(central.port, "sys", "$SYS/broker/connection/+/state", false).await;
    for name in ["site-a", "site-b"] {
        let t = format!("$SYS/broker/connection/{name}/state");
        wait_for(&format!("bridge {name} up"), T, || {
            sys.on(&t).last().is_some_and(|m| m.text() == "1")
        })
        .await;
    }
    let rec = Recorder::start(central.port, "central", "#", false).await;
    // What comes in to a site: Home Assistant's birth (the site answers it with discovery).
    let b_status = Recorder::start(site_b.port, "b-status", "homeassistant/status", false).await;
    let cam = HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut a = site(BASE_A, site_a.port, None).await;
    let b = site(BASE_B, site_b.port, Some(&cam)).await;

    // States and discovery of both sites reach the central broker through the bridges.
    for base in [BASE_A, BASE_B] {
        let t = format!("{base}/door/{DOOR}/state");
        wait_for(&format!("{t} on the central broker"), T, || {
            rec.on(&t).last().is_some_and(|m| m.retain)
        })
        .await;
        let online = format!("{base}/net2/availability");
        wait_for(&format!("{online} online"), T, || {
            rec.on(&online).last().is_some_and(|m| m.text() == "online")
        })
        .await;
    }
    wait_for("site B's camera discovery", T, || {
        discovery(&rec.all()).values().any(|c| {
            c["state_topic"]
                .as_str()
                .is_some_and(|t| t.starts_with(&format!("{BASE_B}/camera/yard/")))
        })
    })
    .await;
    // Settled: both sites' full republish done (bridge/info follows discovery) and no
    // config new or changed for a second (names follow the first door states).
    for base in [BASE_A, BASE_B] {
        let info = format!("{base}/bridge/info");
        wait_for(&info, T, || !rec.on(&info).is_empty()).await;
    }
    for (base, instance) in [(BASE_A, "gatehouse"), (BASE_B, "site_b")] {
        let info = rec.on(&format!("{base}/bridge/info"));
        assert_eq!(info.last().unwrap().json()["config"]["instance"], instance);
    }
    let (mut last, mut since) = (BTreeMap::new(), std::time::Instant::now());
    wait_for("discovery settles", T, || {
        let now = discovery(&rec.all());
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        }
        since.elapsed() > Duration::from_secs(1)
    })
    .await;
    let configs = discovery(&rec.all());
    let (ca, cb) = (of_site(&configs, BASE_A), of_site(&configs, BASE_B));
    assert!(
        !ca.is_empty() && !cb.is_empty(),
        "both sites' configs: {configs:#?}"
    );
    assert_eq!(
        ca.len() + cb.len(),
        configs.len(),
        "every config belongs to a site"
    );
    // Site A is an existing install: its topics and ids are today's.
    assert!(
        ca.contains_key(&format!(
            "homeassistant/lock/gatehouse/door_{DOOR}_lock/config"
        )),
        "site A keeps its discovery topics: {:#?}",
        ca.keys()
    );
    let uid = |c: &Value| c["unique_id"].as_str().unwrap().to_string();
    let ids_a: BTreeSet<String> = ca.values().map(uid).collect();
    let ids_b: BTreeSet<String> = cb.values().map(uid).collect();
    assert!(ids_a.contains(&format!("gatehouse_door_{DOOR}_lock")));
    let both: Vec<_> = ids_a.intersection(&ids_b).collect();
    assert!(both.is_empty(), "unique_ids used by both sites: {both:?}");
    let ent = |c: &Value| c["default_entity_id"].as_str().unwrap().to_string();
    let ea: BTreeSet<String> = ca.values().map(ent).collect();
    let eb: BTreeSet<String> = cb.values().map(ent).collect();
    assert!(ea.is_disjoint(&eb), "entity ids used by both sites");
    let devs = |c: &BTreeMap<String, Value>| -> BTreeSet<String> {
        c.values()
            .flat_map(|c| c["device"]["identifiers"].as_array().unwrap().clone())
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        devs(&ca).is_disjoint(&devs(&cb)),
        "device identifiers used by both sites"
    );

    // Home Assistant on the central broker.
    // quiet > the daemons' 1–3 s delay before they answer HA's birth with a full republish.
    let doc = common::ha::run(central.port, &b.dir.path().join("ha-work"), 5).await;
    eprintln!(
        "HA: {} entities, {} devices, {} states; configs: site A {}, site B {}; timings {}",
        doc["entities"].as_array().unwrap().len(),
        doc["devices"].as_array().unwrap().len(),
        doc["states"].as_object().unwrap().len(),
        ca.len(),
        cb.len(),
        doc["timings"]
    );
    // HA's birth reached the sites; nothing echoed back (a bridge loop would repeat it).
    assert!(
        b_status.all().iter().any(|m| m.text() == "online"),
        "homeassistant/status did not come in to site B"
    );
    let statuses = rec.on("homeassistant/status");
    assert!(
        statuses.len() <= 2,
        "HA's online and offline only: {statuses:?}"
    );
    let entities = doc["entities"].as_array().unwrap();
    let by_uid: BTreeMap<&str, &Value> = entities
        .iter()
        .filter(|e| e["platform"] == "mqtt")
        .filter_map(|e| Some((e["unique_id"].as_str()?, e)))
        .collect();
    let missing: Vec<_> = ids_a
        .iter()
        .chain(&ids_b)
        .filter(|u| !by_uid.contains_key(u.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not in HA's entity registry: {missing:?}"
    );
    let collisions: Vec<&Value> = doc["log"]
        .as_array()
        .unwrap()
        .iter()
        .chain(doc["other_log"].as_array().unwrap())
        .filter(|r| {
            // HA 2024.1 (helpers/entity_platform.py): "Platform mqtt does not generate unique
            // IDs. ID <uid> is already used by <entity> - ignoring <entity>" (or "… already
            // exists - ignoring …" when the entity has no entity_id yet).
            let m = r["message"].as_str().unwrap_or("");
            m.contains("does not generate unique IDs") || m.contains("already exists")
        })
        .collect();
    assert!(
        collisions.is_empty(),
        "HA logged {} unique_id collisions, the first: {:#?}",
        collisions.len(),
        collisions.first()
    );
    let servers: Vec<&Value> = doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["model"] == "Net2 (via gatehouse)")
        .collect();
    assert_eq!(
        servers.len(),
        2,
        "one Net2 server device per site: {servers:#?}"
    );
    assert_ne!(
        servers[0]["name"], servers[1]["name"],
        "two devices of the same name in HA: {servers:#?}"
    );
    // States came through the bridges: each site's lock is known in HA.
    for (ids, base) in [(&ids_a, BASE_A), (&ids_b, BASE_B)] {
        let lock = ids
            .iter()
            .find(|u| u.ends_with(&format!("door_{DOOR}_lock")))
            .unwrap_or_else(|| panic!("{base}: no lock"));
        let eid = by_uid[lock.as_str()]["entity_id"].as_str().unwrap();
        let state = doc["states"][eid]["state"].as_str().unwrap_or("");
        assert!(
            ["locked", "unlocked"].contains(&state),
            "{base}: {eid} is {state:?} in HA"
        );
    }

    // A retained command published on the central broker crosses the bridge still flagged
    // retained (Mosquitto bridges keep the flag), so site B refuses it.
    let set_b = format!("{BASE_B}/door/{DOOR}/set");
    let result = format!("{BASE_B}/command/result");
    let refused = |rec: &Recorder| {
        rec.on(&result).iter().any(|m| {
            m.json()["detail"]
                .as_str()
                .unwrap_or("")
                .contains("retained")
        })
    };
    publish(central.port, &set_b, b"OPEN", true).await;
    wait_for("site B refuses the retained command", T, || refused(&rec)).await;
    // Removing it (an empty retained payload) is a retained "command" too.
    publish(central.port, &set_b, b"", true).await;
    assert!(b.sim.commands().is_empty(), "{:?}", b.sim.commands());

    // A door command on the central broker for site B reaches site B's Net2 only.
    publish(
        central.port,
        &set_b,
        br#"{"action":"open","request_id":"many-sites-1"}"#,
        false,
    )
    .await;
    wait_for("site B's Net2 receives the command", T, || {
        !b.sim.commands().is_empty()
    })
    .await;
    wait_for("site B's command result", T, || {
        rec.on(&result)
            .iter()
            .any(|m| m.json()["request_id"] == "many-sites-1")
    })
    .await;
    assert_eq!(b.sim.commands().len(), 1, "{:?}", b.sim.commands());
    assert!(
        a.sim.commands().is_empty(),
        "site A's Net2 got {:?}",
        a.sim.commands()
    );
    assert!(rec.on(&format!("{BASE_A}/command/result")).is_empty());

    // A command sent while site B's link is down is never delivered late: the link is cut
    // (site B's broker and gatehouse stay up), an OPEN is published on the central broker,
    // the link comes back; a later command (another door) arrives after anything queued
    // would have, and is the only one that reaches the Net2. What happened at site B during
    // the outage reaches the central broker afterwards (the site broker kept it).
    let link = "$SYS/broker/connection/site-b/state";
    link_b.cut();
    wait_for("site B's link down", T, || {
        sys.on(link).last().is_some_and(|m| m.text() == "0")
    })
    .await;
    publish(central.port, &set_b, b"OPEN", false).await;
    // Meanwhile at site B: a badge at the door, published on the site's broker only.
    let event_b = format!("{BASE_B}/door/{DOOR}/event");
    let b_events = Recorder::start(site_b.port, "b-events", &event_b, false).await;
    b.sim
        .push_event(SimEvent::new(26, DOOR).user(8).token_type(1));
    wait_for("the badge at site B", T, || !b_events.all().is_empty()).await;
    let badge = b_events.all()[0].json()["id"].clone();
    rec.clear();
    link_b.restore();
    wait_for("site B's link up", T, || {
        sys.on(link).last().is_some_and(|m| m.text() == "1")
    })
    .await;
    // What happened during the outage goes out once the link is back.
    wait_for("the badge of the outage on the central broker", T, || {
        rec.on(&event_b).iter().any(|m| m.json()["id"] == badge)
    })
    .await;
    publish(
        central.port,
        &format!("{BASE_B}/door/6203980/set"),
        br#"{"action":"open","request_id":"many-sites-after"}"#,
        false,
    )
    .await;
    wait_for("the later command's result", T, || {
        rec.on(&result).iter().any(|m| {
            let v = m.json();
            v["request_id"] == "many-sites-after" && v["status"] != "accepted"
        })
    })
    .await;
    let after: Vec<Value> = rec
        .on(&result)
        .iter()
        .map(Msg::json)
        .filter(|v| v["request_id"] == "many-sites-after")
        .collect();
    assert!(after.iter().all(|v| v["status"] != "rejected"), "{after:?}");
    let cmds = b.sim.commands();
    assert_eq!(
        cmds.len(),
        2,
        "the OPEN sent while away reached the Net2: {cmds:?}"
    );
    assert!(
        cmds[1].path.contains("door") && cmds[1].body.to_string().contains("6203980"),
        "{cmds:?}"
    );

    // Restarting site A leaves site B's discovery configs alone.
    let topics_b: BTreeSet<String> = cb.keys().cloned().collect();
    rec.clear();
    a.stop().await;
    a.start().await;
    let state_a = format!("{BASE_A}/bridge/state");
    wait_for("site A back online", T, || {
        rec.on(&state_a)
            .last()
            .is_some_and(|m| m.text() == "online")
    })
    .await;
    let info_a = format!("{BASE_A}/bridge/info");
    wait_for("site A republished", T, || !rec.on(&info_a).is_empty()).await;
    let cleared: Vec<String> = rec
        .all()
        .into_iter()
        .filter(|m| topics_b.contains(&m.topic) && m.payload.is_empty())
        .map(|m| m.topic)
        .collect();
    assert!(
        cleared.is_empty(),
        "site A's restart cleared site B's {cleared:?}"
    );
    let fresh = Recorder::start(central.port, "fresh", "homeassistant/#", false).await;
    wait_for("site B's configs still retained", T, || {
        let d = discovery(&fresh.all());
        topics_b.iter().all(|t| d.contains_key(t))
    })
    .await;
    assert!(a.sim.commands().is_empty(), "no door command at start-up");
    assert_eq!(b.sim.commands().len(), 2);
}

/// An existing site keeps its Home Assistant ids when its base topic moves (an upgrade from
/// before many sites with a base topic of its own, or a new topic for one site): the ids it
/// published last run stay, the topics in its configs move. Setting `mqtt.instance` is what
/// changes them, and then the old configs are cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_keeps_its_ids_until_its_instance_is_set() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec-moves", "#", false).await;
    let mut h = Harness::new(SimConfig::default(), "").await;
    let mqtt = |base: &str, extra: &str| {
        format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {}\n  base_topic: {base}\n{extra}",
            broker.port
        )
    };
    let lock = format!("homeassistant/lock/gatehouse/door_{DOOR}_lock/config");
    let config_on = |topic: &str, base: &str| {
        let want = format!("{base}/door/{DOOR}/set");
        rec.on(topic)
            .last()
            .is_some_and(|m| m.json()["command_topic"] == want.as_str())
    };
    h.top = mqtt("gatehouse", "");
    h.start().await;
    wait_for("the lock's config", T, || config_on(&lock, "gatehouse")).await;
    h.stop().await;

    // The base topic moves: same ids, same discovery topic, commands on the new topics.
    rec.clear();
    h.top = mqtt("moved/gatehouse", "");
    h.start().await;
    wait_for("the lock's config on the new topics", T, || {
        config_on(&lock, "moved/gatehouse")
    })
    .await;
    let cfg = rec.on(&lock).last().unwrap().json();
    assert_eq!(cfg["unique_id"], format!("gatehouse_door_{DOOR}_lock"));
    assert_eq!(
        cfg["default_entity_id"],
        format!("lock.gatehouse_door_{DOOR}_lock")
    );
    let info = "moved/gatehouse/bridge/info";
    wait_for("bridge info", T, || !rec.on(info).is_empty()).await;
    assert_eq!(
        rec.on(info).last().unwrap().json()["config"]["instance"],
        "gatehouse"
    );
    // Every entity it has now kept its config all along (one the first run announced before
    // Net2 said the door has no contact may be cleared: that one is gone, not moved).
    let msgs = rec.all();
    let configs = discovery(&msgs);
    assert!(configs.len() > 10, "{configs:?}");
    let cleared: Vec<&String> = configs
        .keys()
        .filter(|t| msgs.iter().any(|m| &m.topic == *t && m.payload.is_empty()))
        .collect();
    assert!(cleared.is_empty(), "configs cleared: {cleared:?}");
    h.stop().await;

    // mqtt.instance set: new ids and discovery topics; the old configs are cleared.
    rec.clear();
    h.top = mqtt("moved/gatehouse", "  instance: moved\n");
    h.start().await;
    let new_lock = format!("homeassistant/lock/gatehouse_moved/door_{DOOR}_lock/config");
    wait_for("the lock under the new instance", T, || {
        config_on(&new_lock, "moved/gatehouse")
    })
    .await;
    assert_eq!(
        rec.on(&new_lock).last().unwrap().json()["unique_id"],
        format!("gatehouse_moved_door_{DOOR}_lock")
    );
    wait_for("the old lock config cleared", T, || {
        rec.on(&lock).last().is_some_and(|m| m.payload.is_empty())
    })
    .await;
    h.stop().await;
}
