//! Apptive QR access through the running daemon: the Net2 simulator (door commands observable
//! there), the Apptive simulator (keys, 15 minutes, hostile answers) and a real Mosquitto.

mod common;

use common::broker::{Broker, Recorder, publish};
use common::{Harness, wait_for};
use gatehouse::clock::OffsetClock;
use gatehouse::sim::apptive::{self, ApptiveSim, ApptiveSimConfig, Mode};
use gatehouse::sim::net2::SimConfig;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const HW_KEY: &str = "qr-hardware-key-5f0c9e";
/// A security key in scans that are refused (never sent to Apptive).
const QWERTZ_KEY: &str = "6f1c2f5e-8d1a-4c0b-9e2f-71a2b3c4d5e6";

struct Qr {
    broker: Broker,
    h: Harness,
    rec: Recorder,
    sim: ApptiveSim,
    clock: Arc<OffsetClock>,
    /// The daemon's config text (restarts use it again).
    text: String,
}

/// `readers` is YAML list items under `apptive.readers` (4-space indent).
async fn setup(readers: &str, apptive_extra: &str) -> Qr {
    setup_with(readers, apptive_extra, "").await
}

/// `net2_extra`: lines under `sources.net2` (4-space indent).
async fn setup_with(readers: &str, apptive_extra: &str, net2_extra: &str) -> Qr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "recorder", "#", false).await;
    let mut h = Harness::new(SimConfig::default(), "").await;
    let clock = h.clock.clone();
    let sim = ApptiveSim::start(ApptiveSimConfig {
        clock: clock.clone(),
        ..ApptiveSimConfig::default()
    })
    .await
    .unwrap();
    let top = format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: gatehouse-qr-{r}\nweb:\n  bind: 127.0.0.1:0\n  jwt_secret: qr-test-secret-0123456789abcdef\n  hardware_key: {HW_KEY}\n{users}apptive:\n  url: {url}\n  token: {token}\n  timeout: 1s\n{apptive_extra}  readers:\n{readers}",
        port = broker.port,
        r = rand::random::<u32>(),
        url = sim.base_url(),
        token = sim.token(),
        users = common::web::users_yaml(),
    );
    let text = format!(
        "{}{}",
        common::config_text(&h.sim, &h.db(), net2_extra, "").replace(
            "  6612642: { open_time_ms: 800 }\n",
            "  6612642: { name: Front door, open_time_ms: 800, min_command_interval: 100ms }\n"
        ),
        top
    );
    h.top = top;
    let mut q = Qr {
        broker,
        h,
        rec,
        sim,
        clock,
        text,
    };
    q.start().await;
    q
}

const FRONT: &str =
    "    - { id: front-qr, door: 6612642, door_id: door_123, max_scans_per_minute: 100 }\n";

impl Qr {
    async fn start(&mut self) {
        let cfg = gatehouse::config::load_str(&self.text, &|_| None).expect("valid config");
        let app = gatehouse::app::App::start_with_clock(cfg, None, None, self.h.clock.clone())
            .await
            .expect("daemon starts");
        self.h.app = Some(app);
        wait_for("door status synced", T, || {
            self.h.query_i64("SELECT count(*) FROM door_state") >= 3
        })
        .await;
        // Subscribed: the bridge is online on this connection.
        wait_for("online", T, || {
            self.rec
                .on("gatehouse/bridge/state")
                .last()
                .is_some_and(|m| m.text() == "online")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Publish a scan and wait for its result (the `n`th on the reader's result topic).
    async fn scan(&self, reader: &str, data: &[u8]) -> Value {
        let topic = format!("gatehouse/qr/{reader}/result");
        let before = self.rec.on(&topic).len();
        publish(
            self.broker.port,
            &format!("gatehouse/qr/{reader}/scan"),
            data,
            false,
        )
        .await;
        wait_for("a QR result", T, || self.rec.on(&topic).len() > before).await;
        let m = self.rec.on(&topic)[before].clone();
        assert!(!m.retain, "results are not retained");
        m.json()
    }

    fn qr(&self, member: &str) -> String {
        self.sim.qr(member).expect("a simulated member")
    }

    fn web(&self) -> String {
        format!("http://{}", self.h.app().web_addr.unwrap())
    }
}

fn key_of(vcard: &str) -> String {
    vcard
        .lines()
        .find_map(|l| l.strip_prefix("ORG:"))
        .unwrap()
        .trim()
        .to_string()
}

fn db_bytes(h: &Harness) -> Vec<u8> {
    let mut b = std::fs::read(h.db()).unwrap();
    b.extend(std::fs::read(h.db().with_extension("db-wal")).unwrap_or_default());
    b
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A granted code opens the door exactly once (audited, published, with the member's name),
/// a replay is refused — also after a restart — and neither the token nor any key shows up
/// in the logs (trace level), MQTT, the database or a REST answer.
#[test]
fn a_granted_code_opens_once_and_secrets_stay_inside() {
    let (buf, _guard, rt) = common::logs::capture("trace");
    let (keys, token, mqtt, db, rest) = rt.block_on(async {
        let mut q = setup(FRONT, "").await;
        let mut keys = Vec::new();
        // The code as a phone shows it: fetched from the simulator's QR endpoint.
        let vcard = reqwest::get(format!(
            "{}/qr/?token={}&member=303",
            q.sim.base_url(),
            q.sim.token()
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        keys.push(key_of(&vcard));
        assert!(q.h.sim.commands().is_empty(), "nothing sent at start-up");

        let r = q.scan("front-qr", vcard.as_bytes()).await;
        assert_eq!(r["granted"], true, "{r}");
        assert_eq!(r["event_type"], "qr_granted");
        assert_eq!(r["message"], apptive::MSG_WELCOME);
        assert_eq!(r["name"], "Erika Muster");
        assert_eq!(r["member"], "303");
        wait_for("the door command reached Net2", T, || {
            q.h.sim.commands().len() == 1
        })
        .await;
        let cmd = &q.h.sim.commands()[0];
        // A timed open (with the door's open_time_ms: Net2's door/control).
        assert!(cmd.path.contains("/commands/door/"), "{}", cmd.path);
        assert!(!cmd.path.contains("hold") && !cmd.path.contains("close"), "{}", cmd.path);
        assert!(cmd.body.to_string().contains("6612642"), "{}", cmd.body);
        wait_for("audited", T, || {
            q.h.query_i64("SELECT count(*) FROM audit WHERE requester = 'qr:front-qr' AND status IN ('sent', 'confirmed')") >= 1
        })
        .await;
        wait_for("the qr_granted event", T, || {
            q.rec
                .on("gatehouse/door/6612642/event")
                .iter()
                .any(|m| m.json()["event_type"] == "qr_granted")
        })
        .await;
        let ev = q
            .rec
            .on("gatehouse/door/6612642/event")
            .into_iter()
            .find(|m| m.json()["event_type"] == "qr_granted")
            .unwrap()
            .json();
        assert_eq!(ev["member"], "303", "{ev}");
        assert_eq!(ev["name"], "Erika Muster", "{ev}");
        assert_eq!(ev["door"]["name"], "Front door", "{ev}");
        assert_eq!(
            q.h.query_i64("SELECT count(*) FROM events WHERE kind = 'qr_granted' AND door_id = 6612642"),
            1
        );

        // The same code again (later than a reader's re-read of a code still held up, which
        // is ignored): refused without asking Apptive, the door stays shut.
        q.clock
            .advance(gatehouse::apptive::REREAD + Duration::from_secs(1));
        let asked = q.sim.access_requests();
        let r = q.scan("front-qr", vcard.as_bytes()).await;
        assert_eq!(r["granted"], false, "{r}");
        assert!(r["reason"].as_str().unwrap().contains("single_use"), "{r}");
        assert_eq!(r["message"], gatehouse::apptive::MSG_USED);
        assert_eq!(q.sim.access_requests(), asked, "a replay is not sent to Apptive");

        // Through REST with the hardware key, too.
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{}/api/qr/scan", q.web()))
            .header("X-API-Key", HW_KEY)
            .json(&serde_json::json!({"reader": "front-qr", "data": vcard}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut rest = resp.text().await.unwrap();
        let j: Value = serde_json::from_str(&rest).unwrap();
        assert_eq!(j["granted"], false, "{j}");

        // After a restart the key is still known.
        q.h.stop().await;
        q.start().await;
        let r = q.scan("front-qr", vcard.as_bytes()).await;
        assert_eq!(r["granted"], false, "replayed after a restart: {r}");
        assert!(r["reason"].as_str().unwrap().contains("single_use"), "{r}");

        // A fresh code through REST opens again (the interval of 100 ms has passed).
        let fresh = q.qr("303");
        keys.push(key_of(&fresh));
        let resp = http
            .post(format!("{}/api/qr/scan", q.web()))
            .header("X-API-Key", HW_KEY)
            .json(&serde_json::json!({"reader": "front-qr", "data": fresh}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.unwrap();
        let j: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["granted"], true, "{j}");
        assert_eq!(j["message"], apptive::MSG_WELCOME, "{j}");
        rest.push_str(&body);
        // A wrong key and an unknown reader.
        let resp = http
            .post(format!("{}/api/qr/scan", q.web()))
            .header("X-API-Key", "wrong")
            .json(&serde_json::json!({"reader": "front-qr", "data": fresh}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let resp = http
            .post(format!("{}/api/qr/scan", q.web()))
            .header("X-API-Key", HW_KEY)
            .json(&serde_json::json!({"reader": "nope", "data": fresh}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        wait_for("two doors opened in all", T, || q.h.sim.commands().len() == 2).await;
        q.h.stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(q.h.sim.commands().len(), 2, "exactly two opens");
        // Everything but the scans the test itself published.
        let mqtt: Vec<u8> = q
            .rec
            .all()
            .iter()
            .filter(|m| !m.topic.ends_with("/scan"))
            .flat_map(|m| m.payload.clone())
            .collect();
        (keys, q.sim.token(), mqtt, db_bytes(&q.h), rest)
    });
    let logs = buf.bytes();
    assert!(
        contains(&logs, "QR access granted"),
        "the capture saw the daemon's logs"
    );
    for secret in keys.iter().chain([&token]) {
        assert!(!contains(&logs, secret), "{secret} in the logs");
        assert!(!contains(&mqtt, secret), "{secret} on MQTT");
        assert!(!contains(&db, secret), "{secret} in the database");
        assert!(
            !contains(rest.as_bytes(), secret),
            "{secret} in a REST answer"
        );
    }
    // The member's picture is not kept (keep_picture off).
    assert!(!contains(&db, "iVBORw0KGgo"), "the picture was stored");
}

/// Every bad code and every bad Apptive answer is a denial with its reason; the door is never
/// opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_codes_and_bad_answers_never_open_the_door() {
    let mut q = setup(FRONT, "").await;
    let good = |key: &str, member: &str| {
        format!("BEGIN:VCARD\r\nVERSION:3.0\r\nORG:{key}\r\nNOTE:{member}\r\nEND:VCARD\r\n")
    };
    let codes: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", b"".to_vec(), "empty scan"),
        ("a URL", b"https://example.org/x".to_vec(), "not a vCard"),
        (
            "no ORG",
            b"BEGIN:VCARD\nVERSION:3.0\nNOTE:303\nEND:VCARD\n".to_vec(),
            "no ORG",
        ),
        (
            "empty NOTE",
            b"BEGIN:VCARD\nVERSION:3.0\nORG:k-1\nNOTE:\nEND:VCARD\n".to_vec(),
            "NOTE (the member id) is empty",
        ),
        (
            "two vCards",
            format!("{}{}", good("a", "1"), good("b", "2")).into_bytes(),
            "more than one vCard",
        ),
        ("binary", vec![0xff, 0xfe, 0, 1, 2, 3], "not UTF-8"),
        ("too long", vec![b'A'; 5000], "too long"),
        // A German / Swiss QWERTZ keyboard wedge types `:` as `>` and `-` as `/`: no `ORG:`
        // line to mask, and the key is still there for anyone who reverses the layout.
        (
            "QWERTZ",
            format!(
                "BEGIN>VCARD\nVERSION>3.0\nORG>{}\nNOTE>303\nEND>VCARD\n",
                QWERTZ_KEY.replace('-', "/")
            )
            .into_bytes(),
            "not a vCard",
        ),
        (
            "no separator",
            format!("BEGIN:VCARD\nVERSION:3.0\nORG{QWERTZ_KEY}\nNOTE:303\nEND:VCARD\n")
                .into_bytes(),
            "no ':'",
        ),
        ("a bare key", QWERTZ_KEY.as_bytes().to_vec(), "not a vCard"),
    ];
    for (what, data, want) in codes {
        let r = q.scan("front-qr", &data).await;
        assert_eq!(r["granted"], false, "{what}: {r}");
        assert!(r["reason"].as_str().unwrap().contains(want), "{what}: {r}");
        assert_eq!(r["message"], gatehouse::apptive::MSG_UNREADABLE, "{what}");
    }
    assert_eq!(
        q.sim.access_requests(),
        0,
        "bad codes are not sent to Apptive"
    );
    // Kept in rejects, with the key masked.
    assert!(q.h.query_i64("SELECT count(*) FROM rejects WHERE source = 'apptive'") >= 6);
    let c = rusqlite::Connection::open(q.h.db()).unwrap();
    let raw: String = c
        .query_row(
            "SELECT raw FROM rejects WHERE error LIKE '%NOTE (the member id) is empty%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        raw.contains("ORG:<3 chars>") && !raw.contains("k-1"),
        "{raw}"
    );
    // No piece of a refused key anywhere in the database, whatever the reader made of it.
    let db = db_bytes(&q.h);
    for part in QWERTZ_KEY.split('-') {
        assert!(
            !contains(&db, part),
            "{part} of a refused key is in the database"
        );
    }

    // Apptive's own denials, with its words.
    let r = q.scan("front-qr", q.qr("404").as_bytes()).await;
    assert_eq!(r["message"], apptive::MSG_NO_SUBSCRIPTION, "{r}");
    assert_eq!(r["name"], "Max Beispiel", "{r}");
    let old = q.qr("303");
    let _new = q.qr("303");
    let r = q.scan("front-qr", old.as_bytes()).await;
    assert_eq!(r["message"], apptive::MSG_INVALID, "a rotated key: {r}");
    let r = q
        .scan("front-qr", good(&key_of(&q.qr("303")), "404").as_bytes())
        .await;
    assert_eq!(
        r["message"],
        apptive::MSG_INVALID,
        "another member's key: {r}"
    );

    // Hostile answers to a code Apptive would accept.
    let modes = [
        (Mode::Slow(Duration::from_millis(2500)), "within 1000 ms"),
        (Mode::Status(500), "HTTP 500"),
        (Mode::Status(429), "HTTP 429"),
        (Mode::NotJson, "not the documented JSON"),
        (Mode::BoolTrue, "access_granted true"),
        (Mode::UpperTrue, "access_granted \"TRUE\""),
        (Mode::NoField, "no access_granted"),
        (Mode::CutShort, "apptive answer"),
        (Mode::Reset, "apptive"),
    ];
    for (mode, want) in modes {
        q.sim.set_mode(mode.clone());
        let r = q.scan("front-qr", q.qr("303").as_bytes()).await;
        assert_eq!(r["granted"], false, "{mode:?}: {r}");
        assert!(
            r["reason"].as_str().unwrap().contains(want),
            "{mode:?}: {r}"
        );
    }
    q.sim.set_mode(Mode::Normal);

    // A wrong token (applied live): Apptive answers 401.
    let good_cfg = (*q.h.app().config()).clone();
    let mut cfg = good_cfg.clone();
    cfg.apptive.as_mut().unwrap().token = Some(gatehouse::secret::Secret::new("wrong-token"));
    q.h.app()
        .config_sender()
        .send_replace(Arc::new(cfg.clone()));
    let r = q.scan("front-qr", q.qr("303").as_bytes()).await;
    assert!(r["reason"].as_str().unwrap().contains("HTTP 401"), "{r}");
    // Apptive down.
    cfg.apptive.as_mut().unwrap().url = "http://127.0.0.1:9".into();
    q.h.app().config_sender().send_replace(Arc::new(cfg));
    let r = q.scan("front-qr", q.qr("303").as_bytes()).await;
    assert!(r["reason"].as_str().unwrap().contains("unreachable"), "{r}");
    assert_eq!(r["message"], gatehouse::apptive::MSG_UNAVAILABLE);

    // Apptive grants, but Net2 is down: the display must not say welcome.
    q.h.app().config_sender().send_replace(Arc::new(good_cfg));
    q.h.sim.go_down().await;
    let r = q.scan("front-qr", q.qr("303").as_bytes()).await;
    assert_eq!(r["granted"], false, "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("apptive granted, the door refused"),
        "{r}"
    );
    assert_eq!(r["message"], gatehouse::apptive::MSG_DOOR, "{r}");
    assert_eq!(r["name"], "Erika Muster", "{r}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(q.h.sim.commands().is_empty(), "the door was never opened");
    assert_eq!(
        q.h.query_i64("SELECT count(*) FROM events WHERE kind = 'qr_granted'"),
        0
    );
    wait_for("every denial stored", T, || {
        q.h.query_i64("SELECT count(*) FROM events WHERE kind = 'qr_denied'") >= 22
    })
    .await;
    q.h.stop().await;
}

/// "Welcome" only once Net2 has taken the open. A busy Net2 that answers the command late
/// (after 4 s, within `request_timeout`) is granted once, after its "sent"; a Net2 that never
/// answers in time (its PC off: the POST times out) is a denial — no welcome, no
/// `qr_granted` (which would also mark the member home).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_only_once_net2_took_the_open() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut q = setup_with(FRONT, "", "    request_timeout: 5s\n").await;
    let commands = "gatehouse/command/result";
    let granted = |q: &Qr| {
        q.h.query_i64("SELECT count(*) FROM events WHERE kind = 'qr_granted'")
    };

    // Late: the result waits for Net2's answer ("sent"), not just 3 s.
    q.h.sim.faults().command_answer_ms.store(4000, Relaxed);
    let asked = std::time::Instant::now();
    let r = q.scan("front-qr", q.qr("303").as_bytes()).await;
    assert_eq!(r["granted"], true, "{r}");
    assert!(
        asked.elapsed() >= Duration::from_millis(3900),
        "welcome after {:?}, before Net2 answered the open",
        asked.elapsed()
    );
    // The command's "sent" result came before the scan's result was published, but on another
    // topic: the recorder may see the two in either order (failed once in CI under load).
    wait_for("Net2 took the open", T, || {
        q.rec.on(commands).iter().any(|m| {
            let v = m.json();
            v["requester"] == "qr:front-qr" && v["status"] == "sent"
        })
    })
    .await;
    wait_for("one qr_granted", T, || granted(&q) == 1).await;

    // Never answered in time: failed, not welcome.
    q.h.sim.faults().command_answer_ms.store(8000, Relaxed);
    let r = q.scan("front-qr", q.qr("303").as_bytes()).await;
    assert_eq!(r["granted"], false, "{r}");
    assert_eq!(r["message"], gatehouse::apptive::MSG_DOOR, "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("apptive granted, the door refused: failed"),
        "{r}"
    );
    wait_for("the denial stored", T, || {
        q.h.query_i64("SELECT count(*) FROM events WHERE kind = 'qr_denied'") == 1
    })
    .await;
    assert_eq!(granted(&q), 1, "no qr_granted for a door Net2 never took");
    q.h.sim.faults().command_answer_ms.store(0, Relaxed);
    q.h.stop().await;
}

/// A reader re-reading the code still held in front of it just after it opened the door is
/// ignored: no "already used" on the display a second after "welcome", no Apptive call, no
/// `qr_denied` with a picture, not counted in the reader's rate. After `REREAD` (or at another
/// reader) the same code is "already used" again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_held_in_front_of_the_reader_is_not_denied() {
    let mut q = setup(
        "    - { id: front-qr, door: 6612642, door_id: door_123, max_scans_per_minute: 3 }\n",
        "",
    )
    .await;
    let topic = "gatehouse/qr/front-qr/result";
    let code = q.qr("303");
    let r = q.scan("front-qr", code.as_bytes()).await;
    assert_eq!(r["granted"], true, "{r}");
    let asked = q.sim.access_requests();
    for _ in 0..5 {
        publish(
            q.broker.port,
            "gatehouse/qr/front-qr/scan",
            code.as_bytes(),
            false,
        )
        .await;
    }
    // A later scan is answered: the re-reads (handled as they came, a parse and a look-up)
    // have been dealt with by then — silently.
    let r = q.scan("front-qr", b"not a code").await;
    assert_eq!(r["message"], gatehouse::apptive::MSG_UNREADABLE, "{r}");
    assert_eq!(q.rec.on(topic).len(), 2, "re-reads got no result");
    assert_eq!(
        q.sim.access_requests(),
        asked,
        "re-reads are not sent to Apptive"
    );
    wait_for("the unreadable scan stored", T, || {
        q.h.query_i64("SELECT count(*) FROM events WHERE kind = 'qr_denied'") == 1
    })
    .await;
    // Later, the same code is refused as used (the third scan this minute: the re-reads were
    // not counted, or this would be "too many scans").
    q.clock
        .advance(gatehouse::apptive::REREAD + Duration::from_secs(1));
    let r = q.scan("front-qr", code.as_bytes()).await;
    assert_eq!(r["message"], gatehouse::apptive::MSG_USED, "{r}");
    assert_eq!(
        q.h.query_i64("SELECT count(*) FROM events WHERE kind = 'qr_granted'"),
        1
    );
    wait_for("the used code's denial stored", T, || {
        q.h.query_i64("SELECT count(*) FROM events WHERE kind = 'qr_denied'") >= 2
    })
    .await;
    assert_eq!(
        q.rec.on(topic).len(),
        3,
        "one result per scan that was not a re-read"
    );
    assert_eq!(
        q.h.query_i64("SELECT count(*) FROM events WHERE kind = 'qr_denied'"),
        2
    );
    q.h.stop().await;
}

/// Retained scans are never acted on; the reader's rate is enforced before Apptive is asked;
/// a code older than 15 minutes is Apptive's "älter als 15min".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_scans_rate_limit_and_the_fifteen_minutes() {
    let broker = Broker::start();
    // Left on the broker before gatehouse starts.
    let sim0 = ApptiveSim::start(ApptiveSimConfig::default())
        .await
        .unwrap();
    let stale = sim0.qr("303").unwrap();
    publish(
        broker.port,
        "gatehouse/qr/front-qr/scan",
        stale.as_bytes(),
        true,
    )
    .await;
    drop(broker);
    let mut q = setup(
        &format!("{FRONT}    - {{ id: garage-qr, door: 7242929, door_id: door_456, max_scans_per_minute: 2 }}\n"),
        "  keep_picture: true\n",
    )
    .await;
    let vcard = q.qr("303");
    publish(
        q.broker.port,
        "gatehouse/qr/front-qr/scan",
        vcard.as_bytes(),
        true,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        q.rec.on("gatehouse/qr/front-qr/result").is_empty(),
        "retained scan acted on"
    );
    assert_eq!(q.sim.access_requests(), 0);
    assert!(q.h.sim.commands().is_empty());

    // Rate: two scans a minute at the garage; the third is refused without asking Apptive.
    for _ in 0..2 {
        let r = q.scan("garage-qr", q.qr("404").as_bytes()).await;
        assert_eq!(r["message"], apptive::MSG_NO_SUBSCRIPTION, "{r}");
    }
    let r = q.scan("garage-qr", q.qr("303").as_bytes()).await;
    assert_eq!(r["granted"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("rate limit"), "{r}");
    assert_eq!(q.sim.access_requests(), 2);
    // Another reader has its own rate.
    let code = q.qr("303");
    // 15 minutes later (the simulator and the daemon share the clock): too old.
    q.clock.advance(Duration::from_secs(15 * 60 + 5));
    let r = q.scan("front-qr", code.as_bytes()).await;
    assert_eq!(r["message"], apptive::MSG_TOO_OLD, "{r}");
    assert!(q.h.sim.commands().is_empty());
    // A fresh one opens.
    let r = q.scan("front-qr", q.qr("303").as_bytes()).await;
    assert_eq!(r["granted"], true, "{r}");
    wait_for("opened", T, || q.h.sim.commands().len() == 1).await;
    // keep_picture: the member's picture is in the stored event, not on MQTT.
    wait_for("stored with the picture", T, || {
        q.h.query_i64("SELECT count(*) FROM events WHERE kind = 'qr_granted' AND raw LIKE '%\"member_picture\":\"iVBORw0KGgo%'") == 1
    })
    .await;
    assert!(
        !q.rec.all().iter().any(|m| m.text().contains("iVBORw0KGgo")),
        "the picture went to MQTT"
    );

    // The same code shown at two readers at once (Apptive slow): one check, one denial.
    q.sim.set_mode(Mode::Slow(Duration::from_millis(400)));
    let code = q.qr("303");
    let before = q.rec.on("gatehouse/qr/front-qr/result").len();
    let asked = q.sim.access_requests();
    publish(
        q.broker.port,
        "gatehouse/qr/front-qr/scan",
        code.as_bytes(),
        false,
    )
    .await;
    publish(
        q.broker.port,
        "gatehouse/qr/front-qr/scan",
        code.as_bytes(),
        false,
    )
    .await;
    wait_for("two results", T, || {
        q.rec.on("gatehouse/qr/front-qr/result").len() >= before + 2
    })
    .await;
    let rs: Vec<Value> = q.rec.on("gatehouse/qr/front-qr/result")[before..]
        .iter()
        .map(|m| m.json())
        .collect();
    assert_eq!(
        rs.iter().filter(|r| r["granted"] == true).count(),
        1,
        "{rs:?}"
    );
    assert!(
        rs.iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|x| x.contains("being checked"))),
        "{rs:?}"
    );
    assert_eq!(q.sim.access_requests(), asked + 1, "Apptive asked once");
    wait_for("opened twice in all", T, || q.h.sim.commands().len() == 2).await;
    q.h.stop().await;
    sim0.shutdown().await;
}

/// The reader's Home Assistant `event` entity: on its door's device, cleared when the reader
/// goes from the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readers_event_entity_is_announced_and_cleared() {
    let mut q = setup(FRONT, "").await;
    let topic = "homeassistant/event/gatehouse/qr_front_qr/config";
    wait_for("discovery", T, || {
        q.rec.on(topic).iter().any(|m| !m.payload.is_empty())
    })
    .await;
    let m = q.rec.on(topic).last().unwrap().clone();
    assert!(m.retain);
    let c = m.json();
    assert_eq!(
        c["event_types"],
        serde_json::json!(["qr_granted", "qr_denied"])
    );
    assert_eq!(c["state_topic"], "gatehouse/qr/front-qr/result");
    assert_eq!(c["name"], "QR");
    assert_eq!(c["device"]["identifiers"][0], "gatehouse_net2_door_6612642");
    assert_eq!(c["device"]["name"], "Front door");
    assert_eq!(c["default_entity_id"], "event.gatehouse_qr_front_qr");
    assert_eq!(c["object_id"], "gatehouse_qr_front_qr");
    // The door's events entity knows the QR event types (they arrive on its topic).
    let door = q
        .rec
        .on("homeassistant/event/gatehouse/door_6612642_events/config")
        .last()
        .unwrap()
        .json();
    assert!(
        door["event_types"]
            .as_array()
            .unwrap()
            .contains(&"qr_granted".into())
    );
    // A second reader appears, then the first goes.
    let mut cfg = (*q.h.app().config()).clone();
    let mut r2 = cfg.apptive.as_ref().unwrap().readers[0].clone();
    r2.id = "side".into();
    r2.name = Some("Side QR".into());
    cfg.apptive.as_mut().unwrap().readers = vec![r2];
    q.h.app().config_sender().send_replace(Arc::new(cfg));
    wait_for("cleared", T, || {
        q.rec
            .on(topic)
            .last()
            .is_some_and(|m| m.payload.is_empty() && m.retain)
    })
    .await;
    wait_for("the new one", T, || {
        !q.rec
            .on("homeassistant/event/gatehouse/qr_side/config")
            .is_empty()
    })
    .await;
    q.h.stop().await;
}

/// `POST /api/qr/scan` with a login: an operator may, a viewer may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_scans_need_an_operator() {
    let q = setup(FRONT, "").await;
    let http = reqwest::Client::new();
    let login = |name: &'static str| {
        let (http, web) = (http.clone(), q.web());
        async move {
            let r: Value = http
                .post(format!("{web}/api/auth/login"))
                .json(
                    &serde_json::json!({"username": name, "password": format!("{name}-password")}),
                )
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["token"].as_str().unwrap().to_string()
        }
    };
    let (viewer, operator) = (login("vera").await, login("otto").await);
    let scan = |token: String, data: String| {
        let (http, web) = (http.clone(), q.web());
        async move {
            let r = http
                .post(format!("{web}/api/qr/scan"))
                .bearer_auth(token)
                .json(&serde_json::json!({"reader": "front-qr", "data": data}))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (st, body) = scan(viewer, q.qr("303")).await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(q.sim.access_requests(), 0, "a viewer's scan is not checked");
    let (st, body) = scan(operator.clone(), q.qr("303")).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["granted"], true, "{body}");
    assert_eq!(body["name"], "Erika Muster", "{body}");
    assert_eq!(body["message"], apptive::MSG_WELCOME, "{body}");
    wait_for("opened", T, || q.h.sim.commands().len() == 1).await;
    // A denial is an answer, not an error.
    let (st, body) = scan(operator, "not a QR code".into()).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["granted"], false, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("no ':'"),
        "{body}"
    );
    let mut h = q.h;
    h.stop().await;
}
