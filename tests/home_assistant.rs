//! Gatehouse's MQTT discovery read by a real Home Assistant 2024.1.6 (the newest that runs on
//! Python 3.11): a Net2 simulator, an NVR and a camera simulator, the daemon and a real
//! Mosquitto; then `tests/support/ha_run.py` starts HA against that broker, waits until its
//! discovery is quiet, stops it cleanly and reports its entity and device registries, every
//! entity's state and its MQTT warnings. What a person sees in HA is checked: every config
//! became an entity, states are known from the start, names are friendly, no entity for a
//! channel the NVR lacks, noisy alarms disabled by default, one lock per door, nothing for a
//! source that is not configured. With Net2 the REST API runs too: a hardware access point
//! registers and sends a heartbeat over HTTP before HA starts, and its entities (connection,
//! battery, sensor status on one device named after it) and the emergency mode sensor are
//! checked like the rest, and an Apptive QR reader's event entity ("Fordør QR", on its
//! door's device).
//!
//! Needs `GATEHOUSE_HA_PYTHON` (the venv scripts/test.sh creates). Every check runs and the
//! failures are reported together.

mod common;

use common::broker::{Broker, Msg, Recorder};
use common::wait_for;
use gatehouse::sim::hikvision::{HikSim, HikSimConfig, Personality};
use gatehouse::sim::net2::{Net2Sim, SimConfig};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
/// The doors of `gatehouse demo` (in the Net2 simulator's fixtures), as a user names them.
const DOORS: [(u64, &str); 3] = [
    (
        7242929,
        "{ name: Garage Port, mode: momentary, camera: camera/1 }",
    ),
    (
        6612642,
        "{ name: Fordør, open_time_ms: 5000, camera: nvr/2, direction: in }",
    ),
    (6203980, "{ name: Fordør Terndrupvej }"),
];
const CAMERAS: [&str; 2] = ["camera", "nvr"];
/// The Net2 simulator's user 8, configured as the person `mette`.
const PERSON_USER: i64 = 8;
/// ISAPI event words that must not reach a name a person reads.
const RAW_WORDS: &[&str] = &[
    "vmd",
    "linedetection",
    "fielddetection",
    "regionentrance",
    "regionexiting",
    "tamperdetection",
    "shelteralarm",
    "videoloss",
    "attendedbaggage",
    "unattendedbaggage",
    "facedetection",
    "scenechangedetection",
    "videomismatch",
    "diskfull",
    "diskerror",
    "illaccess",
    "ipconflict",
    "nicbroken",
    "badvideo",
    "recordingfailure",
    "audioexception",
];
/// Rare or noisy alarm types: in the registry, disabled until the user enables them.
const NOISY: &[&str] = &[
    "attendedbaggage",
    "unattendedbaggage",
    "facedetection",
    "scenechangedetection",
    "videomismatch",
    "videoloss",
];
/// Alarm types a user wants from the first second (those the simulators' triggers list must
/// have an entity; IO inputs too when a device lists them).
const WANTED: &[&str] = &[
    "vmd",
    "linedetection",
    "fielddetection",
    "regionentrance",
    "regionexiting",
    "tamperdetection",
    "diskfull",
    "diskerror",
];

/// Alarm types of the whole device (a camera may still send them with channel 1).
const DEVICE_LEVEL: &[&str] = &[
    "diskfull",
    "diskerror",
    "illaccess",
    "ipconflict",
    "nicbroken",
    "recordingfailure",
];

/// The friendly type a name should carry (protocols.md §4), for the types that have one
/// (matched case-insensitively as a part of the name).
fn friendly_type(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "vmd" => "Motion",
        "pir" => "PIR",
        "linedetection" => "Line crossing",
        "fielddetection" => "Intrusion",
        "regionentrance" => "Region entrance",
        "regionexiting" => "Region exit",
        "tamperdetection" | "shelteralarm" | "defocus" => "Tamper",
        "videoloss" => "Video loss",
        "facedetection" => "Face",
        "scenechangedetection" => "Scene change",
        "unattendedbaggage" => "Object left",
        "attendedbaggage" => "Object removed",
        "diskfull" => "Disk full",
        "diskerror" => "Disk error",
        "io" => "Input",
        // Not named in the notes: only the gist is asked for.
        "illaccess" => "Illegal",
        "ipconflict" => "IP conflict",
        "nicbroken" => "Network",
        "recordingfailure" => "Recording",
        "videomismatch" => "Video",
        _ => return None,
    })
}

/// The hardware access point registered over REST in the scenario with Net2, as its installer
/// names it (`location`), and its own id (neither may reach a name raw but the first).
const HW_NAME: &str = "Main Entrance - Building A";
const HW_DEVICE_ID: &str = "AC-DEV-001";
const HW_KEY: &str = "ha-test-hardware-key-0123456789";

struct Scenario {
    broker: Broker,
    rec: Recorder,
    net2: Option<Net2Sim>,
    /// The registered hardware point's id (`hw-<n>`), with Net2.
    hardware: Option<String>,
    _nvr: HikSim,
    _cam: HikSim,
    dir: tempfile::TempDir,
    app: Option<gatehouse::app::App>,
}

/// Broker, recorder, simulators and the daemon; returns once the daemon has published what it
/// knows about every configured device (and its discovery after it).
async fn start(with_net2: bool) -> Scenario {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec", "#", false).await;
    let cam = HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        ..Default::default()
    })
    .await
    .unwrap();
    let nvr = HikSim::start(HikSimConfig {
        personality: Personality::nvr(),
        ..Default::default()
    })
    .await
    .unwrap();
    let net2 = if with_net2 {
        Some(Net2Sim::start(SimConfig::default()).await.unwrap())
    } else {
        None
    };
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = format!(
        "version: 1\nstorage: {{ path: {}/g.db }}\nmqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gh-ha-{}\nsources:\n  hikvision:\n    - {{ id: camera, url: \"{}\", username: admin, password: sim-hik-pass }}\n    - {{ id: nvr, url: \"{}\", username: admin, password: sim-hik-pass }}\n",
        dir.path().display(),
        broker.port,
        rand::random::<u32>(),
        cam.base_url(),
        nvr.base_url(),
    );
    if let Some(sim) = &net2 {
        let d = SimConfig::default();
        yaml.push_str(&format!(
            "  net2:\n    url: {}\n    username: {}\n    password: {}\n    client_id: {}\ndoors:\n",
            sim.base_url(),
            d.username,
            d.password,
            d.client_id
        ));
        for (id, cfg) in DOORS {
            yaml.push_str(&format!("  {id}: {cfg}\n"));
        }
        // Two people: Mette badges in before HA starts (home), Bo has no evidence yet.
        yaml.push_str(&format!(
            "people:\n  - {{ id: mette, name: Mette, net2_users: [{PERSON_USER}] }}\n  - {{ id: bo, name: Bo, net2_users: [9] }}\n"
        ));
        // The REST API, for a hardware access point to register and beat.
        yaml.push_str(&format!(
            "web:\n  bind: 127.0.0.1:0\n  jwt_secret: ha-test-jwt-secret-0123456789\n  hardware_key: {HW_KEY}\n"
        ));
        // An Apptive QR reader at the front door (no scan: only its event entity is read).
        yaml.push_str(
            "apptive:\n  url: http://127.0.0.1:9\n  token: ha-test-apptive-token\n  readers:\n    - { id: front-qr, door: 6612642, door_id: door_123 }\n",
        );
    }
    let cfg = gatehouse::config::load_str(&yaml, &|_| None).expect("test config is valid");
    let app = gatehouse::app::App::start(cfg, None, None)
        .await
        .expect("daemon starts");
    for id in CAMERAS {
        let info = format!("gatehouse/camera/{id}/info");
        wait_for(&format!("{id}'s info"), T, || !rec.on(&info).is_empty()).await;
        // The alarm kinds its triggers list are announced with the info.
        let prefix = format!("gatehouse/camera/{id}/");
        wait_for(&format!("discovery of {id}'s alarms"), T, || {
            published(&rec.all()).iter().any(|p| {
                p.component == "binary_sensor"
                    && p.state_topic()
                        .is_some_and(|t| t.starts_with(&prefix) && alarm_of(&t).is_some())
            })
        })
        .await;
    }
    if with_net2 {
        wait_for("Net2 online", T, || {
            rec.on("gatehouse/net2/availability")
                .last()
                .is_some_and(|m| m.text() == "online")
        })
        .await;
        for (id, _) in DOORS {
            let t = format!("gatehouse/door/{id}/state");
            wait_for(&format!("door {id}'s state"), T, || !rec.on(&t).is_empty()).await;
        }
    }
    if let Some(sim) = &net2 {
        wait_for("Net2 live", T, || {
            sim.websocket_count() >= 1 && !sim.stats().subscriptions.is_empty()
        })
        .await;
        sim.push_event(
            gatehouse::sim::net2::SimEvent::new(26, 6612642)
                .user(PERSON_USER)
                .token_type(1),
        );
        wait_for("Mette home", T, || {
            rec.on("gatehouse/person/mette/state")
                .last()
                .is_some_and(|m| m.text() == "home")
        })
        .await;
    }
    let hardware = if with_net2 {
        let web = app.web_addr.expect("web: is configured");
        Some(register_hardware(&rec, web).await)
    } else {
        None
    };
    if with_net2 {
        wait_for("the emergency mode", T, || {
            rec.on("gatehouse/emergency")
                .last()
                .is_some_and(|m| m.retain && !m.payload.is_empty())
        })
        .await;
    }
    Scenario {
        broker,
        rec,
        net2,
        hardware,
        _nvr: nvr,
        _cam: cam,
        dir,
        app: Some(app),
    }
}

/// A hardware access point registers and sends one heartbeat through the REST API, as a real
/// device would (`X-API-Key`); returns its point id once its state and its three discovery
/// configs are retained on the broker.
async fn register_hardware(rec: &Recorder, web: std::net::SocketAddr) -> String {
    // reqwest is built without a default TLS provider (plain HTTP here, but it wants one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let r = http
            .post(format!("http://{web}{path}"))
            .header("X-API-Key", HW_KEY)
            .json(&body);
        async move {
            let res = r.send().await.unwrap();
            let st = res.status();
            let body = res.json::<Value>().await.unwrap_or(Value::Null);
            assert!(st.is_success(), "POST {path}: {st} {body}");
            body
        }
    };
    let reg = post(
        "/api/access-control/points/register".into(),
        serde_json::json!({
            "device_id": HW_DEVICE_ID, "device_type": "door", "firmware_version": "2.1.0",
            "hardware_vendor": "SecureAccess Inc", "mac_address": "00:11:22:33:44:55",
            "ip_address": "192.168.1.100", "location": HW_NAME,
            "capabilities": ["card", "biometric", "pin"]
        }),
    )
    .await;
    let id = reg["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no point id in {reg}"))
        .to_string();
    post(
        format!("/api/access-control/points/{id}/heartbeat"),
        serde_json::json!({
            "device_id": HW_DEVICE_ID, "battery_level": 85, "sensor_status": "closed"
        }),
    )
    .await;
    let state = format!("gatehouse/hardware/{id}/state");
    wait_for("the hardware point's state", T, || {
        rec.on(&state).last().is_some_and(|m| {
            let v = m.json();
            m.retain && v["battery_level"] == 85 && v["sensor_status"] == "closed"
        })
    })
    .await;
    let prefix = format!("gatehouse/hardware/{id}/");
    wait_for("the hardware point's discovery", T, || {
        published(&rec.all())
            .iter()
            .filter(|p| p.topics().iter().any(|t| t.starts_with(&prefix)))
            .count()
            >= 3
    })
    .await;
    id
}

/// Run HA against the scenario's broker (the daemon stays up meanwhile) and parse its report.
async fn run_ha(s: &Scenario) -> Value {
    // quiet > the daemon's 1–3 s delay before it answers HA's birth with a full republish.
    let doc = common::ha::run(s.broker.port, &s.dir.path().join("ha-work"), 4).await;
    // For whoever fixes discovery: the whole report, and what gatehouse published.
    if let Some(dir) = std::env::var_os("GATEHOUSE_HA_REPORT_DIR") {
        let dir = std::path::Path::new(&dir);
        std::fs::create_dir_all(dir).unwrap();
        let name = if s.net2.is_some() {
            "full"
        } else {
            "cameras-only"
        };
        let retained: BTreeMap<String, String> = s
            .rec
            .all()
            .into_iter()
            .filter(|m| m.retain)
            .map(|m| (m.topic.clone(), m.text()))
            .collect();
        std::fs::write(dir.join(format!("ha-{name}.json")), doc.to_string()).unwrap();
        std::fs::write(
            dir.join(format!("mqtt-{name}.json")),
            serde_json::to_string_pretty(&retained).unwrap(),
        )
        .unwrap();
    }
    doc
}

/// One discovery config gatehouse left retained (one component of a device-based config).
#[derive(Debug, Clone)]
struct Published {
    topic: String,
    component: String,
    cfg: Value,
}

impl Published {
    /// A key by its full name or its HA abbreviation, with `~` expanded for topics.
    fn get(&self, full: &str, abbr: &str) -> Option<String> {
        let v = self
            .cfg
            .get(full)
            .or_else(|| self.cfg.get(abbr))?
            .as_str()?;
        let base = self.cfg.get("~").and_then(Value::as_str).unwrap_or("");
        Some(if let Some(rest) = v.strip_prefix('~') {
            format!("{base}{rest}")
        } else if let Some(rest) = v.strip_suffix('~') {
            format!("{rest}{base}")
        } else {
            v.to_string()
        })
    }
    fn unique_id(&self) -> Option<String> {
        self.get("unique_id", "uniq_id")
    }
    fn state_topic(&self) -> Option<String> {
        self.get("state_topic", "stat_t")
    }
    /// Every topic the entity reads or writes.
    fn topics(&self) -> Vec<String> {
        [
            ("state_topic", "stat_t"),
            ("command_topic", "cmd_t"),
            ("topic", "t"),
            ("json_attributes_topic", "json_attr_t"),
        ]
        .iter()
        .filter_map(|(f, a)| self.get(f, a))
        .collect()
    }
    fn device_class(&self) -> Option<String> {
        self.get("device_class", "dev_cla")
    }
}

/// The last non-empty retained config on every `homeassistant/…/config` topic.
fn published(msgs: &[Msg]) -> Vec<Published> {
    let mut last: BTreeMap<&str, &Msg> = BTreeMap::new();
    for m in msgs {
        if m.topic.starts_with("homeassistant/") && m.topic.ends_with("/config") && m.retain {
            last.insert(&m.topic, m);
        }
    }
    let mut out = Vec::new();
    for (topic, m) in last {
        if m.payload.is_empty() {
            continue;
        }
        let cfg = m.json();
        let component = topic.split('/').nth(1).unwrap_or("").to_string();
        if let Some(cmps) = cfg
            .get("cmps")
            .or_else(|| cfg.get("components"))
            .and_then(Value::as_object)
        {
            for c in cmps.values() {
                let p = c
                    .get("p")
                    .or_else(|| c.get("platform"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                out.push(Published {
                    topic: topic.to_string(),
                    component: p.to_string(),
                    cfg: c.clone(),
                });
            }
        } else {
            out.push(Published {
                topic: topic.to_string(),
                component,
                cfg,
            });
        }
    }
    out
}

/// A camera alarm from its state topic `gatehouse/camera/<dev>/<chN|ioN|device>/<type>[/…]`:
/// (device, channel, io port, event type).
fn alarm_of(topic: &str) -> Option<(String, Option<u32>, Option<u32>, String)> {
    // `gatehouse/camera/<id>/<ch1|io2|device>/alarm/<type>[/<target>]`
    let rest = topic.strip_prefix("gatehouse/camera/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() < 4 || parts[2] != "alarm" {
        return None;
    }
    let (dev, place, kind) = (parts[0], parts[1], parts[3]);
    let num = |p: &str| p.parse::<u32>().ok();
    let (ch, io) = if let Some(n) = place.strip_prefix("ch").and_then(num) {
        (Some(n), None)
    } else if let Some(n) = place.strip_prefix("io").and_then(num) {
        (None, Some(n))
    } else if place == "device" {
        (None, None)
    } else {
        return None;
    };
    Some((dev.to_string(), ch, io, kind.to_string()))
}

/// The channel of `camera` an entity reads or writes (`…/camera/<id>/ch<N>/…`), if any.
fn channel_of(p: &Published, camera: &str) -> Option<u32> {
    let prefix = format!("gatehouse/camera/{camera}/ch");
    p.topics().iter().find_map(|t| {
        let rest = t.strip_prefix(&prefix)?;
        rest.split('/').next()?.parse().ok()
    })
}

/// `ch12 Motion`, `Snapshot ch3`: a name with a `chN` word.
fn has_ch_word(name: &str) -> bool {
    name.split_whitespace().any(|w| {
        let w = w.to_ascii_lowercase();
        w.strip_prefix("ch")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    })
}

/// `phrase` appears in `name` as whole words (case-insensitive): "Camera 01 Line crossing"
/// has "line crossing", "NVR recordingfailure" has no "recording".
fn has_words(name: &str, phrase: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let (n, p) = (words(name), words(phrase));
    !p.is_empty() && n.windows(p.len()).any(|w| w == p.as_slice())
}

/// Collects every failed check; reported together at the end.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
    passed: Vec<String>,
}

impl Checks {
    fn check(&mut self, name: &str, total: usize, bad: Vec<String>, why: &str) {
        if bad.is_empty() {
            self.passed.push(format!("{name} ({total} checked)"));
        } else {
            let first: Vec<&String> = bad.iter().take(12).collect();
            self.failed.push(format!(
                "{name}: {} of {total} {why}; first {}:\n      {}",
                bad.len(),
                first.len(),
                first
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n      ")
            ));
        }
    }

    fn finish(self, what: &str) {
        eprintln!("{what}: passed:\n  {}", self.passed.join("\n  "));
        assert!(
            self.failed.is_empty(),
            "{what}: {} check(s) failed against Home Assistant 2024.1.6:\n  {}\n(passed: {})",
            self.failed.len(),
            self.failed.join("\n  "),
            self.passed.join("; ")
        );
    }
}

/// What HA reported, indexed.
struct Ha<'a> {
    doc: &'a Value,
    /// Gatehouse's entities (platform mqtt) by unique_id.
    by_uid: BTreeMap<String, &'a Value>,
    devices: BTreeMap<String, &'a Value>,
}

impl<'a> Ha<'a> {
    fn new(doc: &'a Value) -> Ha<'a> {
        let by_uid = doc["entities"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["platform"] == "mqtt")
            .filter_map(|e| Some((e["unique_id"].as_str()?.to_string(), e)))
            .collect();
        let devices = doc["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| Some((d["id"].as_str()?.to_string(), d)))
            .collect();
        Ha {
            doc,
            by_uid,
            devices,
        }
    }
    fn state(&self, entity_id: &str) -> Option<&'a str> {
        self.doc["states"][entity_id]["state"].as_str()
    }
    fn name(e: &Value) -> String {
        e["friendly_name"].as_str().unwrap_or("").to_string()
    }
    fn describe(e: &Value) -> String {
        format!(
            "{} \"{}\" (unique_id {})",
            e["entity_id"].as_str().unwrap_or("?"),
            Self::name(e),
            e["unique_id"].as_str().unwrap_or("?")
        )
    }
}

/// (a) every retained config is an entity, and HA said nothing about them.
fn check_a(c: &mut Checks, pubs: &[Published], ha: &Ha) {
    let mut missing = Vec::new();
    for p in pubs {
        match p.unique_id() {
            None => missing.push(format!("{} has no unique_id", p.topic)),
            Some(u) if !ha.by_uid.contains_key(&u) => missing.push(format!(
                "{} (unique_id {u}) is not in the registry",
                p.topic
            )),
            Some(_) => {}
        }
    }
    c.check(
        "a. every discovery config became an entity",
        pubs.len(),
        missing,
        "retained discovery configs have no entity in HA's registry",
    );
    let log: Vec<String> = ha.doc["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let m = r["message"].as_str().unwrap_or("");
            let m: String = m.chars().take(400).collect();
            format!(
                "{} [{}] {m}",
                r["level"],
                r["logger"].as_str().unwrap_or("")
            )
        })
        .collect();
    let all = log.len() + ha.doc["other_log"].as_array().map(Vec::len).unwrap_or(0);
    c.check(
        "a. HA logged no MQTT/discovery warning or error",
        all,
        log,
        "WARNING+ log records are about MQTT/discovery",
    );
}

/// (b) sensors, binary sensors and locks have a state from the start.
fn check_b(c: &mut Checks, ha: &Ha) {
    let mut total = 0;
    let mut bad = Vec::new();
    for e in ha.by_uid.values() {
        let id = e["entity_id"].as_str().unwrap_or("");
        let domain = id.split('.').next().unwrap_or("");
        if !matches!(domain, "binary_sensor" | "sensor" | "lock") || !e["disabled_by"].is_null() {
            continue;
        }
        total += 1;
        match ha.state(id) {
            None => bad.push(format!("{} has no state at all", Ha::describe(e))),
            Some(s @ ("unknown" | "unavailable")) => {
                bad.push(format!("{} is {s}", Ha::describe(e)))
            }
            Some(_) => {}
        }
    }
    c.check(
        "b. no enabled binary_sensor/sensor/lock unknown or unavailable",
        total,
        bad,
        "enabled entities are unknown/unavailable with every simulator online",
    );
}

/// Channel names as the devices report them, from their info documents.
fn channel_names(msgs: &[Msg], camera: &str) -> BTreeMap<u32, String> {
    let topic = format!("gatehouse/camera/{camera}/info");
    msgs.iter()
        .rfind(|m| m.topic == topic)
        .map(|m| m.json())
        .and_then(|i| {
            i["channels"].as_array().map(|cs| {
                cs.iter()
                    .filter_map(|c| {
                        Some((c["id"].as_u64()? as u32, c["name"].as_str()?.to_string()))
                    })
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// (c) names a person keeps.
fn check_c(c: &mut Checks, pubs: &[Published], ha: &Ha, msgs: &[Msg]) {
    let mut raw = Vec::new();
    for e in ha.by_uid.values() {
        let name = Ha::name(e);
        let own = e["original_name"].as_str().unwrap_or("");
        let lower = name.to_lowercase();
        let word = RAW_WORDS
            .iter()
            .filter(|w| lower.contains(*w))
            .max_by_key(|w| w.len());
        if let Some(w) = word {
            raw.push(format!("{} has the ISAPI word \"{w}\"", Ha::describe(e)));
        } else if has_ch_word(&name) || has_ch_word(own) {
            raw.push(format!("{} has a chN word", Ha::describe(e)));
        }
    }
    c.check(
        "c. no raw ISAPI event word or chN in entity names",
        ha.by_uid.len(),
        raw,
        "entity names carry a raw event word or a chN prefix",
    );
    let names: BTreeMap<&str, BTreeMap<u32, String>> = CAMERAS
        .iter()
        .map(|id| (*id, channel_names(msgs, id)))
        .collect();
    let mut total = 0;
    let mut bad = Vec::new();
    for p in pubs {
        let Some((dev, ch, io, kind)) = p.state_topic().as_deref().and_then(alarm_of) else {
            continue;
        };
        if p.component != "binary_sensor" {
            continue;
        }
        let Some(e) = p.unique_id().and_then(|u| ha.by_uid.get(&u).copied()) else {
            continue; // (a) reports it
        };
        let name = Ha::name(e);
        let mut want = Vec::new();
        if let Some(ch) = ch {
            match names.get(dev.as_str()).and_then(|n| n.get(&ch)) {
                // Disk and network problems belong to the device, whatever channel they carry.
                Some(_) if DEVICE_LEVEL.contains(&kind.as_str()) => {}
                Some(n) => want.push(n.clone()),
                None => continue, // a channel the device lacks: (d)
            }
        }
        total += 1;
        match (friendly_type(&kind), io) {
            (Some(t), Some(n)) => want.push(format!("{t} {n}")),
            (Some(t), None) => want.push(t.to_string()),
            (None, _) => {}
        }
        if !want.iter().all(|w| has_words(&name, w)) {
            bad.push(format!(
                "{} should read like \"{}\"",
                Ha::describe(e),
                want.join(" ")
            ));
        }
    }
    c.check(
        "c. camera alarms named <channel name> <friendly type>",
        total,
        bad,
        "camera alarm entities are not named from the channel's name and a friendly type",
    );
}

/// (d) nothing for a channel the NVR does not have.
fn check_d(c: &mut Checks, pubs: &[Published], ha: &Ha, msgs: &[Msg]) {
    let have = channel_names(msgs, "nvr");
    assert_eq!(have.len(), 4, "the NVR simulator reports 4 channels");
    let mut total = 0;
    let mut bad = Vec::new();
    for p in pubs {
        let Some(ch) = channel_of(p, "nvr") else {
            continue;
        };
        let Some(e) = p.unique_id().and_then(|u| ha.by_uid.get(&u).copied()) else {
            continue;
        };
        total += 1;
        if !have.contains_key(&ch) {
            bad.push(format!("{} is for channel {ch}", Ha::describe(e)));
        }
    }
    c.check(
        "d. no entity for a channel the NVR does not have (it has 1-4)",
        total,
        bad,
        "NVR channel entities are for channels the NVR does not have",
    );
}

/// (e) noisy types disabled by default, the wanted ones enabled.
fn check_e(c: &mut Checks, pubs: &[Published], ha: &Ha, msgs: &[Msg]) {
    let names: BTreeMap<&str, BTreeMap<u32, String>> = CAMERAS
        .iter()
        .map(|id| (*id, channel_names(msgs, id)))
        .collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut total = 0;
    let mut bad = Vec::new();
    for p in pubs {
        let Some((dev, ch, io, kind)) = p.state_topic().as_deref().and_then(alarm_of) else {
            continue;
        };
        let Some(e) = p.unique_id().and_then(|u| ha.by_uid.get(&u).copied()) else {
            continue;
        };
        if ch.is_some_and(|ch| !names.get(dev.as_str()).is_some_and(|n| n.contains_key(&ch))) {
            continue; // a channel the device lacks: (d)
        }
        seen.insert(kind.clone());
        let disabled = e["disabled_by"].as_str();
        if NOISY.contains(&kind.as_str()) {
            total += 1;
            if disabled != Some("integration") {
                bad.push(format!(
                    "{} ({kind}) is disabled_by {:?}, want \"integration\"",
                    Ha::describe(e),
                    disabled
                ));
            }
        } else if WANTED.contains(&kind.as_str()) || io.is_some() || kind == "io" {
            total += 1;
            if let Some(d) = disabled {
                bad.push(format!("{} ({kind}) is disabled_by {d}", Ha::describe(e)));
            }
        }
    }
    // Disk problem sensors from the NVR's storage document count as wanted too.
    for p in pubs {
        let is_disk = p.component == "binary_sensor"
            && p.device_class().as_deref() == Some("problem")
            && p.state_topic().is_some_and(|t| t.ends_with("/info"));
        if let (true, Some(e)) = (
            is_disk,
            p.unique_id().and_then(|u| ha.by_uid.get(&u).copied()),
        ) {
            total += 1;
            if let Some(d) = e["disabled_by"].as_str() {
                bad.push(format!(
                    "{} (disk problem) is disabled_by {d}",
                    Ha::describe(e)
                ));
            }
        }
    }
    for kind in NOISY.iter().chain(WANTED) {
        if !seen.contains(*kind) {
            bad.push(format!(
                "no entity at all for {kind} (the simulators' triggers list it)"
            ));
        }
    }
    c.check(
        "e. noisy alarm types disabled by default, the others enabled",
        total,
        bad,
        "alarm entities have the wrong enabled/disabled default",
    );
}

/// (f) one lock per door, no lock-class binary sensor beside it.
fn check_f(c: &mut Checks, pubs: &[Published], ha: &Ha) {
    let mut bad = Vec::new();
    for (door, _) in DOORS {
        let marker = format!("gatehouse/door/{door}/");
        let of_door: Vec<(&Published, &Value)> = pubs
            .iter()
            .filter(|p| p.topics().iter().any(|t| t.starts_with(&marker)))
            .filter_map(|p| Some((p, *ha.by_uid.get(&p.unique_id()?)?)))
            .collect();
        let locks: Vec<&Value> = of_door
            .iter()
            .filter(|(_, e)| e["entity_id"].as_str().unwrap_or("").starts_with("lock."))
            .map(|(_, e)| *e)
            .collect();
        if locks.len() != 1 {
            bad.push(format!(
                "door {door} has {} lock entities: {:?}",
                locks.len(),
                locks.iter().map(|e| Ha::describe(e)).collect::<Vec<_>>()
            ));
        }
        let lock_devices: BTreeSet<&str> = locks
            .iter()
            .filter_map(|e| e["device_id"].as_str())
            .collect();
        let class_lock =
            |e: &Value| e["original_device_class"] == "lock" || e["device_class"] == "lock";
        for e in ha.by_uid.values() {
            let on_door = of_door
                .iter()
                .any(|(_, x)| x["entity_id"] == e["entity_id"])
                || e["device_id"]
                    .as_str()
                    .is_some_and(|d| lock_devices.contains(d));
            if on_door
                && e["entity_id"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("binary_sensor.")
                && class_lock(e)
            {
                bad.push(format!(
                    "door {door}: binary_sensor with device class lock beside its lock: {}",
                    Ha::describe(e)
                ));
            }
        }
    }
    c.check(
        "f. each door: exactly one lock, no lock-class binary_sensor",
        DOORS.len(),
        bad,
        "problems with doors' lock entities",
    );
}

/// (g) nothing of Net2 when it is not configured.
fn check_g(c: &mut Checks, ha: &Ha, msgs: &[Msg]) {
    let mut bad = Vec::new();
    let net2_devices: BTreeSet<&str> = ha
        .devices
        .iter()
        .filter(|(_, d)| {
            let name = d["name"].as_str().unwrap_or("").to_lowercase();
            let ids = d["identifiers"].to_string().to_lowercase();
            name.contains("net2") || ids.contains("net2")
        })
        .map(|(id, d)| {
            bad.push(format!(
                "device \"{}\" (identifiers {})",
                d["name"].as_str().unwrap_or(""),
                d["identifiers"]
            ));
            id.as_str()
        })
        .collect();
    for e in ha.by_uid.values() {
        let on_net2 = e["device_id"]
            .as_str()
            .is_some_and(|d| net2_devices.contains(d));
        let named = e["unique_id"].as_str().unwrap_or("").contains("net2")
            || e["entity_id"].as_str().unwrap_or("").contains("net2");
        if on_net2 || named {
            bad.push(format!("entity {}", Ha::describe(e)));
        }
    }
    if let Some(m) = msgs
        .iter()
        .rfind(|m| m.topic == "gatehouse/net2/availability")
        .filter(|m| m.retain && !m.payload.is_empty())
    {
        bad.push(format!(
            "retained gatehouse/net2/availability = \"{}\" on the broker",
            m.text()
        ));
    }
    c.check(
        "g. without sources.net2: no Net2 device, entity or availability",
        ha.devices.len() + ha.by_uid.len() + 1,
        bad,
        "things of an unconfigured Net2 exist",
    );
}

/// (what, domain, device class (None: any but battery), state, state attributes wanted).
type Role = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// (h) the hardware access point registered over REST and the emergency mode, as a person
/// sees them: one device named after the point, short friendly names (no raw id, nothing
/// "unknown"), enabled (so (b) covers them too) and their states from the heartbeat.
fn check_h(c: &mut Checks, pubs: &[Published], ha: &Ha, point: &str) {
    let prefix = format!("gatehouse/hardware/{point}/");
    let mine: Vec<&Published> = pubs
        .iter()
        .filter(|p| p.topics().iter().any(|t| t.starts_with(&prefix)))
        .collect();
    let mut bad = Vec::new();
    let mut ents = Vec::new();
    for p in &mine {
        match p.unique_id().and_then(|u| ha.by_uid.get(&u).copied()) {
            Some(e) => ents.push(e),
            None => bad.push(format!("{} has no entity in HA", p.topic)),
        }
    }
    let domain = |e: &Value| {
        e["entity_id"]
            .as_str()
            .unwrap_or("")
            .split('.')
            .next()
            .unwrap_or("")
            .to_string()
    };
    let class = |e: &Value| {
        e["original_device_class"]
            .as_str()
            .or(e["device_class"].as_str())
            .map(str::to_string)
    };
    let roles: [Role; 3] = [
        (
            "connectivity",
            "binary_sensor",
            Some("connectivity"),
            "on",
            &[],
        ),
        (
            "battery",
            "sensor",
            Some("battery"),
            "85",
            &[("unit_of_measurement", "%"), ("device_class", "battery")],
        ),
        ("sensor status", "sensor", None, "closed", &[]),
    ];
    for (what, dom, cls, want, attrs) in roles {
        let found: Vec<&&Value> = ents
            .iter()
            .filter(|e| {
                domain(e) == dom
                    && match cls {
                        Some(k) => class(e).as_deref() == Some(k),
                        None => class(e).as_deref() != Some("battery"),
                    }
            })
            .collect();
        let [e] = found.as_slice() else {
            bad.push(format!(
                "{} {what} entities (want 1): {:?}",
                found.len(),
                found.iter().map(|e| Ha::describe(e)).collect::<Vec<_>>()
            ));
            continue;
        };
        let id = e["entity_id"].as_str().unwrap_or("");
        let st = ha.state(id);
        if st != Some(want) {
            bad.push(format!(
                "{what}: {} is {st:?}, want {want:?}",
                Ha::describe(e)
            ));
        }
        for (k, v) in attrs {
            let got = &ha.doc["states"][id]["attributes"][k];
            if got != v {
                bad.push(format!(
                    "{what}: {} has {k} {got}, want {v:?}",
                    Ha::describe(e)
                ));
            }
        }
    }
    if ents.len() != roles.len() {
        bad.push(format!(
            "{} entities for the point, want {}: {:?}",
            ents.len(),
            roles.len(),
            ents.iter().map(|e| Ha::describe(e)).collect::<Vec<_>>()
        ));
    }
    let devices: BTreeSet<&str> = ents
        .iter()
        .filter_map(|e| e["device_id"].as_str())
        .collect();
    if devices.len() != 1 || ents.iter().any(|e| e["device_id"].is_null()) {
        bad.push(format!(
            "the point's entities are on {} devices, want one",
            devices.len()
        ));
    }
    for d in &devices {
        let name = ha.devices.get(*d).and_then(|d| d["name"].as_str());
        if name != Some(HW_NAME) {
            bad.push(format!(
                "the point's device is named {name:?}, want {HW_NAME:?}"
            ));
        }
    }
    let raw = [
        point.to_lowercase(),
        point
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            .to_lowercase(),
        HW_DEVICE_ID.to_lowercase(),
        "unknown".into(),
        "none".into(),
        "null".into(),
        "gatehouse".into(),
        "hardware_".into(),
        "sensor_status".into(),
    ];
    for e in &ents {
        let name = Ha::name(e);
        let lower = name.to_lowercase();
        let own = name.strip_prefix(HW_NAME).unwrap_or("").trim();
        if own.is_empty() {
            bad.push(format!(
                "{} should read \"{HW_NAME} <what it is>\"",
                Ha::describe(e)
            ));
        }
        if let Some(w) = raw.iter().find(|w| lower.contains(w.as_str())) {
            bad.push(format!("{} has \"{w}\" in its name", Ha::describe(e)));
        }
        if !e["disabled_by"].is_null() {
            bad.push(format!(
                "{} is disabled_by {}",
                Ha::describe(e),
                e["disabled_by"]
            ));
        }
    }
    c.check(
        "h. the hardware point: its device, names and heartbeat's states",
        mine.len(),
        bad,
        "problems with the registered hardware point's entities",
    );

    let mut bad = Vec::new();
    let em: Vec<&Value> = pubs
        .iter()
        .filter(|p| {
            p.component == "sensor" && p.state_topic().as_deref() == Some("gatehouse/emergency")
        })
        .filter_map(|p| ha.by_uid.get(&p.unique_id()?).copied())
        .collect();
    match em.as_slice() {
        [e] => {
            let st = ha.state(e["entity_id"].as_str().unwrap_or(""));
            if st != Some("normal") {
                bad.push(format!("{} is {st:?}, want \"normal\"", Ha::describe(e)));
            }
            if !has_words(&Ha::name(e), "emergency") {
                bad.push(format!("{} should say \"Emergency\"", Ha::describe(e)));
            }
            if !e["disabled_by"].is_null() {
                bad.push(format!("{} is disabled", Ha::describe(e)));
            }
        }
        _ => bad.push(format!(
            "{} sensors on gatehouse/emergency in HA, want 1",
            em.len()
        )),
    }
    c.check(
        "h. the emergency mode sensor shows normal",
        1,
        bad,
        "problems with the emergency mode sensor",
    );
}

/// (j) the QR reader: an event entity "Fordør QR" on the front door's device (read from the
/// real run only: the made-up report has no reader).
fn check_j(c: &mut Checks, ha: &Ha) {
    let mut bad = Vec::new();
    let qr = ha.by_uid.get("gatehouse_qr_front_qr");
    let door = ha.by_uid.get("gatehouse_door_6612642_events");
    match (qr, door) {
        (Some(q), Some(d)) => {
            if q["entity_id"] != "event.gatehouse_qr_front_qr" {
                bad.push(format!("{} has another entity id", Ha::describe(q)));
            }
            if Ha::name(q) != "Fordør QR" {
                bad.push(format!("{} should read \"Fordør QR\"", Ha::describe(q)));
            }
            if q["device_id"].is_null() || q["device_id"] != d["device_id"] {
                bad.push(format!("{} is not on the door's device", Ha::describe(q)));
            }
            if !q["disabled_by"].is_null() {
                bad.push(format!("{} is disabled", Ha::describe(q)));
            }
        }
        _ => bad.push(format!(
            "no QR event entity ({}) or no door events entity ({})",
            qr.is_some(),
            door.is_some()
        )),
    }
    c.check(
        "j. the QR reader's event entity, on its door",
        1,
        bad,
        "problems with the QR reader's entity",
    );
}

/// (i) people: a device_tracker per person that a HA `person` can use (home after a badge at
/// an `in` door, not_home without evidence, never unknown), and the people-on-site count.
fn check_i(c: &mut Checks, ha: &Ha) {
    let mut bad = Vec::new();
    for (id, want, name) in [
        ("device_tracker.gatehouse_person_mette", "home", "Mette"),
        ("device_tracker.gatehouse_person_bo", "not_home", "Bo"),
    ] {
        let st = &ha.doc["states"][id];
        if st["state"].as_str() != Some(want) {
            bad.push(format!("{id} is {}, want {want}", st["state"]));
        }
        let attrs = &st["attributes"];
        if attrs["source_type"] != "router" {
            bad.push(format!("{id} source_type {}", attrs["source_type"]));
        }
        if attrs["friendly_name"] != name {
            bad.push(format!(
                "{id} friendly_name {}, want {name}",
                attrs["friendly_name"]
            ));
        }
        if attrs["evidence"].as_str().is_none_or(str::is_empty) {
            bad.push(format!("{id} has no evidence attribute: {attrs}"));
        }
    }
    let id = "sensor.gatehouse_site_default_people";
    let st = &ha.doc["states"][id];
    if st["state"].as_str() != Some("1") {
        bad.push(format!("{id} is {}, want 1", st["state"]));
    }
    if st["attributes"]["people"] != serde_json::json!(["Mette"]) {
        bad.push(format!("{id} attributes {}", st["attributes"]));
    }
    c.check(
        "i. people: device trackers and the people on site",
        3,
        bad,
        "problems with the people entities",
    );
}

fn summary(doc: &Value, pubs: &[Published], timings: &[(&str, Duration)]) {
    let ents = doc["entities"].as_array().map(Vec::len).unwrap_or(0);
    let mut by_domain: BTreeMap<&str, usize> = BTreeMap::new();
    for e in doc["entities"].as_array().unwrap() {
        let d = e["entity_id"]
            .as_str()
            .unwrap_or("")
            .split('.')
            .next()
            .unwrap_or("");
        *by_domain.entry(d).or_default() += 1;
    }
    eprintln!(
        "Home Assistant {}: {} discovery configs, {ents} entities {by_domain:?}, {} devices, stopped on {}; HA timings {}",
        doc["ha_version"],
        pubs.len(),
        doc["devices"].as_array().map(Vec::len).unwrap_or(0),
        doc["stopped_because"],
        doc["timings"]
    );
    for (what, d) in timings {
        eprintln!("  {what}: {:.1} s", d.as_secs_f64());
    }
    for r in doc["other_log"].as_array().unwrap() {
        let m: String = r["message"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        eprintln!("  HA log (not MQTT): {} [{}] {m}", r["level"], r["logger"]);
    }
}

/// The scenario, HA's run against it, the daemon stopped: every message recorded and HA's
/// report (with the timings printed), and the hardware point's id (with Net2).
async fn run(with_net2: bool) -> (Vec<Msg>, Value, Option<String>) {
    common::ha::python();
    let t0 = Instant::now();
    let mut s = start(with_net2).await;
    let t_daemon = t0.elapsed();
    let doc = run_ha(&s).await;
    let t_ha = t0.elapsed() - t_daemon;
    s.app.take().unwrap().shutdown().await;
    let msgs = s.rec.all();
    let pubs = published(&msgs);
    summary(
        &doc,
        &pubs,
        &[
            ("daemon up, discovery published", t_daemon),
            ("Home Assistant run", t_ha),
            ("total", t0.elapsed()),
        ],
    );
    let entities = Ha::new(&doc).by_uid.len();
    assert!(
        !pubs.is_empty() && entities > 0,
        "harness: {} configs published, {entities} MQTT entities in HA",
        pubs.len(),
    );
    (msgs, doc, s.hardware.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_reads_the_discovery_as_a_person_would_keep_it() {
    let (msgs, doc, point) = run(true).await;
    let (pubs, ha) = (published(&msgs), Ha::new(&doc));
    let mut c = Checks::default();
    check_a(&mut c, &pubs, &ha);
    check_b(&mut c, &ha);
    check_c(&mut c, &pubs, &ha, &msgs);
    check_d(&mut c, &pubs, &ha, &msgs);
    check_e(&mut c, &pubs, &ha, &msgs);
    check_f(&mut c, &pubs, &ha);
    check_h(
        &mut c,
        &pubs,
        &ha,
        point.as_deref().expect("a point registered"),
    );
    check_i(&mut c, &ha);
    check_j(&mut c, &ha);
    c.finish("Net2 + NVR + camera + a hardware point + two people + a QR reader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_net2_home_assistant_shows_nothing_of_it() {
    let (msgs, doc, _) = run(false).await;
    let (pubs, ha) = (published(&msgs), Ha::new(&doc));
    let mut c = Checks::default();
    check_a(&mut c, &pubs, &ha);
    check_g(&mut c, &ha, &msgs);
    c.finish("cameras only");
}

/// The checks themselves, on a made-up report of what a fixed discovery would give in HA:
/// all pass; and each breaks on the fault it is for.
mod checks_on_a_made_up_report {
    use super::*;
    use serde_json::json;

    #[derive(Clone)]
    struct Fake {
        msgs: Vec<Msg>,
        entities: Vec<Value>,
        states: serde_json::Map<String, Value>,
        log: Vec<Value>,
        devices: Vec<Value>,
    }

    impl Fake {
        #[allow(clippy::too_many_arguments)]
        fn add(
            &mut self,
            component: &str,
            uid: &str,
            topics: Value,
            name: &str,
            disabled: bool,
            state: Option<&str>,
            device: &str,
            class: Option<&str>,
        ) {
            let mut cfg = topics;
            cfg["unique_id"] = json!(uid);
            cfg["device_class"] = json!(class);
            self.msgs.push(Msg {
                topic: format!("homeassistant/{component}/gatehouse/{uid}/config"),
                payload: cfg.to_string().into_bytes(),
                retain: true,
                at: std::time::Instant::now(),
            });
            let id = format!("{component}.{uid}");
            self.entities.push(json!({
                "entity_id": id, "unique_id": uid, "platform": "mqtt", "friendly_name": name,
                "original_name": name, "disabled_by": if disabled { Some("integration") } else { None },
                "device_id": device, "original_device_class": class, "device_class": null,
            }));
            if let Some(s) = state {
                self.states
                    .insert(id, json!({"state": s, "attributes": {}}));
            }
        }

        fn alarm(&mut self, dev: &str, place: &str, kind: &str, name: &str, disabled: bool) {
            let uid = format!("{dev}_{place}_{kind}");
            let topic =
                json!({"state_topic": format!("gatehouse/camera/{dev}/{place}/alarm/{kind}")});
            let state = (!disabled).then_some("off");
            self.add(
                "binary_sensor",
                &uid,
                topic,
                name,
                disabled,
                state,
                dev,
                None,
            );
        }

        fn good() -> Fake {
            let mut f = Fake {
                msgs: Vec::new(),
                entities: Vec::new(),
                states: Default::default(),
                log: Vec::new(),
                devices: vec![json!({"id": "hwdev", "name": HW_NAME, "name_by_user": null})],
            };
            let info = |dev: &str, n: u32| {
                Msg {
                topic: format!("gatehouse/camera/{dev}/info"),
                payload: json!({"channels": (1..=n).map(|i| json!({"id": i, "name": format!("Camera {i:02}")})).collect::<Vec<_>>()})
                    .to_string()
                    .into_bytes(),
                retain: true,
                at: std::time::Instant::now(),
            }
            };
            f.msgs.push(info("camera", 1));
            f.msgs.push(info("nvr", 4));
            for (door, _) in DOORS {
                let t = json!({"state_topic": format!("gatehouse/door/{door}/state"), "command_topic": format!("gatehouse/door/{door}/set")});
                let d = format!("door{door}");
                f.add(
                    "lock",
                    &format!("d{door}_lock"),
                    t.clone(),
                    "Door",
                    false,
                    Some("locked"),
                    &d,
                    None,
                );
                f.add(
                    "binary_sensor",
                    &format!("d{door}_contact"),
                    t,
                    "Door",
                    false,
                    Some("off"),
                    &d,
                    Some("door"),
                );
            }
            for (kind, name) in [
                ("vmd", "Camera 01 Motion"),
                ("linedetection", "Camera 01 Line crossing"),
                ("fielddetection", "Camera 01 Intrusion"),
                ("regionentrance", "Camera 01 Region entrance"),
                ("regionexiting", "Camera 01 Region exit"),
                ("tamperdetection", "Camera 01 Tamper"),
            ] {
                f.alarm("nvr", "ch1", kind, name, false);
            }
            for (kind, name) in [
                ("attendedbaggage", "Camera 02 Object removed"),
                ("unattendedbaggage", "Camera 02 Object left"),
                ("facedetection", "Camera 02 Face"),
                ("scenechangedetection", "Camera 02 Scene change"),
                ("videoloss", "Camera 02 Video loss"),
            ] {
                f.alarm("nvr", "ch2", kind, name, true);
            }
            f.alarm(
                "camera",
                "ch1",
                "videomismatch",
                "Camera 01 Video mismatch",
                true,
            );
            f.alarm("nvr", "device", "diskfull", "NVR Disk full", false);
            f.alarm("camera", "ch1", "diskerror", "Garage Disk error", false);
            f.add(
                "camera",
                "nvr_ch4",
                json!({"topic": "gatehouse/camera/nvr/ch4/snapshot"}),
                "Camera 04 Snapshot",
                false,
                Some("idle"),
                "nvr",
                None,
            );
            let hw = json!({"state_topic": "gatehouse/hardware/hw-1/state"});
            for (component, uid, name, state, class) in [
                (
                    "binary_sensor",
                    "hw_conn",
                    "Connection",
                    "on",
                    Some("connectivity"),
                ),
                ("sensor", "hw_batt", "Battery", "85", Some("battery")),
                ("sensor", "hw_sensor", "Sensor", "closed", None),
            ] {
                f.add(
                    component,
                    uid,
                    hw.clone(),
                    &format!("{HW_NAME} {name}"),
                    false,
                    Some(state),
                    "hwdev",
                    class,
                );
            }
            f.states["sensor.hw_batt"]["attributes"] =
                json!({"unit_of_measurement": "%", "device_class": "battery"});
            f.add(
                "sensor",
                "server_emergency",
                json!({"state_topic": "gatehouse/emergency"}),
                "Door server Emergency mode",
                false,
                Some("normal"),
                "server",
                None,
            );
            f
        }

        fn failures(&self) -> Vec<String> {
            let doc = json!({
                "entities": self.entities, "devices": self.devices, "states": self.states,
                "log": self.log, "other_log": [],
            });
            let ha = Ha::new(&doc);
            let pubs = published(&self.msgs);
            let mut c = Checks::default();
            check_a(&mut c, &pubs, &ha);
            check_b(&mut c, &ha);
            check_c(&mut c, &pubs, &ha, &self.msgs);
            check_d(&mut c, &pubs, &ha, &self.msgs);
            check_e(&mut c, &pubs, &ha, &self.msgs);
            check_f(&mut c, &pubs, &ha);
            check_g(&mut c, &ha, &self.msgs);
            check_h(&mut c, &pubs, &ha, "hw-1");
            c.failed
        }
    }

    fn fails_only(f: &Fake, check: &str) {
        let failed = f.failures();
        assert!(
            failed.len() == 1 && failed[0].starts_with(check),
            "want only {check} to fail, got {failed:#?}"
        );
    }

    #[test]
    fn a_fixed_discovery_passes_every_check() {
        let failed = Fake::good().failures();
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[test]
    fn each_check_fails_on_its_fault() {
        // a: a config HA did not take.
        let mut f = Fake::good();
        f.entities.retain(|e| e["unique_id"] != "nvr_ch4");
        fails_only(&f, "a. every discovery config");
        // a: HA complained about a config.
        let mut f = Fake::good();
        f.log.push(json!({"level": "ERROR", "logger": "homeassistant.components.mqtt.mixins", "message": "Error 'extra keys not allowed @ data['device']['serial_number']' when processing MQTT discovery message"}));
        fails_only(&f, "a. HA logged");
        // b: an enabled alarm without a state.
        let mut f = Fake::good();
        f.states["binary_sensor.nvr_ch1_vmd"]["state"] = json!("unknown");
        fails_only(&f, "b.");
        // c: a raw word, then a chN prefix, then the device's name instead of the channel's.
        for name in ["Camera 01 vmd Motion", "ch1 Camera 01 Motion", "NVR Motion"] {
            let mut f = Fake::good();
            let e = f
                .entities
                .iter_mut()
                .find(|e| e["unique_id"] == "nvr_ch1_vmd")
                .unwrap();
            e["friendly_name"] = json!(name);
            let failed = f.failures();
            assert!(
                !failed.is_empty() && failed.iter().all(|x| x.starts_with("c.")),
                "{name}: {failed:#?}"
            );
        }
        // d: an entity for channel 9 of a 4-channel NVR.
        let mut f = Fake::good();
        f.add(
            "button",
            "nvr_ch9_snap",
            json!({"command_topic": "gatehouse/camera/nvr/ch9/snapshot/set"}),
            "Snapshot",
            false,
            None,
            "nvr",
            None,
        );
        fails_only(&f, "d.");
        // e: video loss enabled, motion disabled, and a wanted type missing.
        let mut f = Fake::good();
        let e = f
            .entities
            .iter_mut()
            .find(|e| e["unique_id"] == "nvr_ch2_videoloss")
            .unwrap();
        e["disabled_by"] = json!(null);
        f.states.insert(
            "binary_sensor.nvr_ch2_videoloss".into(),
            json!({"state": "off"}),
        );
        fails_only(&f, "e.");
        let mut f = Fake::good();
        f.entities
            .retain(|e| e["unique_id"] != "nvr_ch1_tamperdetection");
        f.msgs
            .retain(|m| !m.topic.contains("nvr_ch1_tamperdetection"));
        fails_only(&f, "e.");
        // f: a lock-class binary sensor beside the lock.
        let mut f = Fake::good();
        f.add(
            "binary_sensor",
            "d6612642_unlocked",
            json!({"state_topic": "gatehouse/door/6612642/state"}),
            "Fordør Lock",
            false,
            Some("off"),
            "door6612642",
            Some("lock"),
        );
        fails_only(&f, "f.");
        // g: Net2's availability retained without Net2.
        let mut f = Fake::good();
        f.msgs.push(Msg {
            topic: "gatehouse/net2/availability".into(),
            payload: b"offline".to_vec(),
            retain: true,
            at: std::time::Instant::now(),
        });
        fails_only(&f, "g.");
        // h: the battery unknown (b too), a raw id as a name, a device named by its id, the
        // emergency sensor unknown.
        let mut f = Fake::good();
        f.states["sensor.hw_batt"]["state"] = json!("unknown");
        let failed = f.failures();
        assert!(
            failed.len() == 2 && failed[0].starts_with("b.") && failed[1].starts_with("h."),
            "{failed:#?}"
        );
        let mut f = Fake::good();
        let e = f
            .entities
            .iter_mut()
            .find(|e| e["unique_id"] == "hw_sensor")
            .unwrap();
        e["friendly_name"] = json!(format!("{HW_NAME} hardware_hw_1_sensor_status"));
        fails_only(&f, "h. the hardware point");
        let mut f = Fake::good();
        f.devices[0]["name"] = json!(HW_DEVICE_ID);
        fails_only(&f, "h. the hardware point");
        let mut f = Fake::good();
        f.states["sensor.server_emergency"]["state"] = json!("unknown");
        let failed = f.failures();
        assert!(
            failed.len() == 2
                && failed[0].starts_with("b.")
                && failed[1].starts_with("h. the emergency"),
            "{failed:#?}"
        );
    }
}
