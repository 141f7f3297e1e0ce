//! Wire-level tests of the Net2 simulator, driven by a plain HTTP / WebSocket client.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gatehouse::sim::net2::*;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

fn cfg() -> SimConfig {
    SimConfig {
        token_rate_limit_per_sec: 1000,
        ..SimConfig::default()
    }
}

fn http() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: a provider must exist even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn token_req(sim: &Net2Sim, c: &reqwest::Client, form: &[(&str, &str)]) -> reqwest::Response {
    c.post(format!("{}/api/v1/authorization/tokens", sim.base_url()))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn login(sim: &Net2Sim, c: &reqwest::Client) -> Value {
    let r = token_req(
        sim,
        c,
        &[
            ("username", "Gate House"),
            ("password", "sim-password"),
            ("grant_type", "password"),
            ("client_id", "00000000-0000-4000-8000-000000000000"),
            ("scope", "offline_access"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn access(sim: &Net2Sim, c: &reqwest::Client) -> String {
    login(sim, c).await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn get(c: &reqwest::Client, url: String, token: &str) -> reqwest::Response {
    c.get(url)
        .header("Authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap()
}

fn is_7_digit_utc(s: &str) -> bool {
    // 2026-01-05T06:30:01.9832179Z
    s.len() == 28
        && s.ends_with('Z')
        && s.as_bytes()[19] == b'.'
        && s[20..27].bytes().all(|b| b.is_ascii_digit())
        && chrono::NaiveDateTime::parse_from_str(&s[..19], "%Y-%m-%dT%H:%M:%S").is_ok()
}

#[tokio::test]
async fn token_grant_refresh_and_errors() {
    let sim = Net2Sim::start(cfg()).await.unwrap();
    let c = http();
    let t = login(&sim, &c).await;
    let keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "access_token",
            "expires_in",
            "expiry_datetime",
            "refresh_token",
            "token_type"
        ]
    );
    assert_eq!(t["token_type"], "bearer");
    assert_eq!(t["expires_in"], 1800);
    assert!(
        is_7_digit_utc(t["expiry_datetime"].as_str().unwrap()),
        "{t}"
    );
    let access = t["access_token"].as_str().unwrap();
    let r = get(&c, format!("{}/api/v1/doors", sim.base_url()), access).await;
    assert_eq!(r.status(), 200);
    let doors: Value = r.json().await.unwrap();
    assert_eq!(doors.as_array().unwrap().len(), 7);

    // Refresh grant: new tokens, the used refresh token is gone.
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt.as_str()),
        ("client_id", "00000000-0000-4000-8000-000000000000"),
        ("scope", "offline_access"),
    ];
    let r = token_req(&sim, &c, &refresh).await;
    assert_eq!(r.status(), 200);
    let t2: Value = r.json().await.unwrap();
    assert_ne!(t2["access_token"], t["access_token"]);
    assert!(t2["refresh_token"].is_string());
    let r = token_req(&sim, &c, &refresh).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

    // No offline_access: no refresh token.
    let r = token_req(
        &sim,
        &c,
        &[
            ("username", "Gate House"),
            ("password", "sim-password"),
            ("grant_type", "password"),
            ("client_id", "00000000-0000-4000-8000-000000000000"),
        ],
    )
    .await;
    let t3: Value = r.json().await.unwrap();
    assert!(t3.get("refresh_token").is_none());

    // Wrong password, wrong client, JSON body.
    let r = token_req(
        &sim,
        &c,
        &[
            ("username", "Gate House"),
            ("password", "nope"),
            ("grant_type", "password"),
            ("client_id", "00000000-0000-4000-8000-000000000000"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        body["error_description"],
        "The user name or password is incorrect."
    );
    let r = token_req(
        &sim,
        &c,
        &[
            ("username", "Gate House"),
            ("password", "sim-password"),
            ("grant_type", "password"),
            ("client_id", "wrong"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let r = c
        .post(format!("{}/api/v1/authorization/tokens", sim.base_url()))
        .json(&serde_json::json!({"username":"Gate House","password":"sim-password","grant_type":"password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );

    let s = sim.stats();
    assert_eq!(s.token_requests, 7);
    assert_eq!(s.refresh_grants, 2);
    assert_eq!(s.password_grants, 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_rate_limit_answers_429_html() {
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    let c = http();
    let form = [
        ("username", "Gate House"),
        ("password", "sim-password"),
        ("grant_type", "password"),
        ("client_id", "00000000-0000-4000-8000-000000000000"),
    ];
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r = token_req(&sim, &c, &form).await;
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.text().await.unwrap().contains("429 Too Many Requests"));
        }
    }
    assert_eq!(codes, [200, 200, 429]);
    let s = sim.stats();
    assert_eq!(
        (s.token_requests, s.token_429, s.password_grants),
        (3, 1, 2)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn mfa_required_answers_challenge() {
    let sim = Net2Sim::start(SimConfig {
        mfa_required: true,
        ..cfg()
    })
    .await
    .unwrap();
    let c = http();
    let r = token_req(
        &sim,
        &c,
        &[
            ("username", "Gate House"),
            ("password", "sim-password"),
            ("grant_type", "password"),
            ("client_id", "00000000-0000-4000-8000-000000000000"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "mfa_required");
    assert!(v["challengeToken"].is_string());
    sim.shutdown().await;
}

#[tokio::test]
async fn api_requires_live_bearer_token() {
    let sim = Net2Sim::start(cfg()).await.unwrap();
    let c = http();
    let url = format!("{}/api/v1/doors/status", sim.base_url());
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"Message":"Authorization has been denied for this request."})
    );
    let token = access(&sim, &c).await;
    let r = c
        .get(&url)
        .header("Authorization", format!("BEARER {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let st: Value = r.json().await.unwrap();
    let door = st
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == 6203980)
        .unwrap();
    assert!(door["status"].get("doorContactClosed").is_none());
    assert_eq!(door["status"]["doorRelayOpen"], false);

    sim.expire_tokens();
    let r = get(&c, url.clone(), &token).await;
    assert_eq!(r.status(), 401);
    assert_eq!(sim.stats().unauthorized, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn events_paging_where_order_and_empty_body() {
    let sim = Net2Sim::start(cfg()).await.unwrap();
    let c = http();
    let token = access(&sim, &c).await;
    let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 5)
        .unwrap()
        .and_hms_opt(6, 0, 0)
        .unwrap();
    sim.seed_history(50, start, Duration::from_secs(60));
    assert_eq!(sim.event_count(), 50);
    let url = format!("{}/api/v1/events", sim.base_url());
    let q = |w: &str, o: &str, n: &str| {
        c.get(&url)
            .header("Authorization", format!("bearer {token}"))
            .query(&[("where", w), ("orderBy", o), ("rowCount", n)])
    };

    let r = q("eventTime>='2026-01-05T06:10:00'", "eventTime ASC", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page: Vec<Value> = r.json().await.unwrap();
    assert_eq!(page.len(), 10);
    assert_eq!(page[0]["eventTime"], "2026-01-05T06:10:00.000+01:00");
    assert_eq!(page[9]["eventTime"], "2026-01-05T06:19:00.000+01:00");
    let keys: std::collections::BTreeSet<&str> = page[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let fixture: Vec<Value> =
        serde_json::from_str(include_str!("fixtures/net2/events_page.json")).unwrap();
    let want: std::collections::BTreeSet<&str> = fixture[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, want);
    for e in &page {
        assert!(e["deviceName"].as_str().unwrap().contains(" - "));
        assert!(e["eventDescription"].is_string());
    }

    // DESC with an upper bound.
    let r = q(
        "eventTime>='2026-01-05T06:10:00' and eventTime<'2026-01-05T06:15:00.000'",
        "eventTime DESC",
        "1000",
    )
    .send()
    .await
    .unwrap();
    let page: Vec<Value> = r.json().await.unwrap();
    assert_eq!(page.len(), 5);
    assert_eq!(page[0]["eventTime"], "2026-01-05T06:14:00.000+01:00");
    assert!(page[0]["id"].as_i64() > page[4]["id"].as_i64());

    // Defaults: newest first.
    let r = get(&c, url.clone(), &token).await;
    let page: Vec<Value> = r.json().await.unwrap();
    assert_eq!(page.len(), 50);
    assert_eq!(page[0]["eventTime"], "2026-01-05T06:49:00.000+01:00");

    // Nothing newer: 200 with an empty body, not [].
    let r = q("eventTime>'2026-01-05T06:49:00'", "eventTime ASC", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    // A zone suffix is a client bug.
    for w in [
        "eventTime>='2026-01-05T06:10:00Z'",
        "eventTime>='2026-01-05T06:10:00+01:00'",
        "eventTime>='2026-01-05T05:10:00.000-00:00'",
    ] {
        let r = q(w, "eventTime ASC", "10").send().await.unwrap();
        assert_eq!(r.status(), 400, "{w}");
        assert!(r.json::<Value>().await.unwrap()["Message"].is_string());
    }

    // Live-pushed events land in the log with the server offset.
    let id = sim.push_event(SimEvent::new(26, 6612642).user(8).token_type(1));
    let r = q("eventTime>='2026-01-05T07:00:00'", "eventTime DESC", "1")
        .send()
        .await
        .unwrap();
    let page: Vec<Value> = r.json().await.unwrap();
    assert_eq!(page[0]["id"], id);
    assert_eq!(
        page[0]["eventDescription"],
        "Adgang godkendt - med PIN kode"
    );
    assert_eq!(page[0]["surname"], "Holm");
    assert_eq!(page[0]["userID"], 8);
    assert!(page[0]["eventTime"].as_str().unwrap().ends_with("+01:00"));
    assert_eq!(sim.stats().events_requests, 8);
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_change_answers() {
    let sim = Net2Sim::start(cfg()).await.unwrap();
    let c = http();
    let token = access(&sim, &c).await;
    sim.push_event(SimEvent::new(20, 7319051).user(12));
    let url = format!("{}/api/v1/events", sim.base_url());

    sim.faults()
        .malformed_events
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let page: Vec<Value> = get(&c, url.clone(), &token).await.json().await.unwrap();
    assert_eq!(page.len(), 3);
    assert!(
        page.iter()
            .any(|e| e["eventType"] == "abc" && e["eventTime"].is_null())
    );
    assert!(page.iter().any(|e| e["eventType"] == 9999));
    let mut ids: Vec<String> = page.iter().map(|e| e["id"].to_string()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    sim.faults()
        .malformed_events
        .store(false, std::sync::atomic::Ordering::Relaxed);

    sim.faults()
        .empty_bodies
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = get(&c, format!("{}/api/v1/users", sim.base_url()), &token).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    sim.faults()
        .empty_bodies
        .store(false, std::sync::atomic::Ordering::Relaxed);

    sim.faults()
        .html_error
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = get(&c, url.clone(), &token).await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("Bad Gateway"));
    sim.faults()
        .html_error
        .store(false, std::sync::atomic::Ordering::Relaxed);

    sim.faults()
        .fail_500
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get(&c, url.clone(), &token).await.status(), 500);
    sim.faults()
        .fail_500
        .store(false, std::sync::atomic::Ordering::Relaxed);

    let users: Value = get(&c, format!("{}/api/v1/users", sim.base_url()), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(users[0]["pin"], "4821");
    let one: Value = get(&c, format!("{}/api/v1/users/12", sim.base_url()), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["lastName"], "Bak");

    // Users come and go, in the full shape (PIN and phone included); events name them.
    let users_url = format!("{}/api/v1/users", sim.base_url());
    sim.add_user(SimUser::new(40, "Ida", "Testesen"));
    let users: Vec<Value> = get(&c, users_url.clone(), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(users.len(), 4);
    let ida = users.iter().find(|u| u["id"] == 40).unwrap();
    assert_eq!(ida["firstName"], "Ida");
    assert!(
        ida["pin"].is_string() && ida["telephone"].is_string(),
        "{ida}"
    );
    assert_eq!(
        ida.as_object().unwrap().keys().collect::<Vec<_>>(),
        users[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        "the same fields as the fixture users"
    );
    let id = sim.push_event(SimEvent::new(20, 6612642).user(40));
    let page: Vec<Value> = get(&c, url.clone(), &token).await.json().await.unwrap();
    let ev = page.iter().find(|e| e["id"] == id).unwrap();
    assert_eq!(ev["surname"], "Testesen");
    assert!(sim.remove_user(40));
    assert_eq!(
        get(&c, format!("{users_url}/40"), &token).await.status(),
        404
    );
    // The user list alone fails, or answers an empty body; the rest works.
    let faults = sim.faults();
    faults
        .users_500
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get(&c, users_url.clone(), &token).await.status(), 500);
    assert_eq!(get(&c, url.clone(), &token).await.status(), 200);
    faults
        .users_500
        .store(false, std::sync::atomic::Ordering::Relaxed);
    faults
        .users_empty
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = get(&c, users_url.clone(), &token).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    faults
        .users_empty
        .store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sim.users().len(), 3);
    sim.shutdown().await;
}

async fn command(
    sim: &Net2Sim,
    c: &reqwest::Client,
    token: &str,
    path: &str,
    body: Value,
) -> reqwest::Response {
    c.post(format!("{}/api/v1/commands/{path}", sim.base_url()))
        .header("Authorization", format!("bearer {token}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn momentary_door_toggles_on_holdopen_and_close() {
    let sim = Net2Sim::start(cfg()).await.unwrap();
    let c = http();
    let token = access(&sim, &c).await;
    let garage = 7242929;
    // Fixture: the garage port is open (relay open, contact open).
    assert!(sim.door_status(garage).unwrap().door_relay_open);

    let r = command(
        &sim,
        &c,
        &token,
        "door/close",
        serde_json::json!({"doorId": garage}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["commandName"], "CloseDoor");
    assert_eq!(v["output"]["status"], "FireAndForget");
    assert_eq!(v["input"]["doorId"], garage);
    wait_for("garage closed", || {
        let s = sim.door_status(garage).unwrap();
        !s.door_relay_open && s.door_contact_closed == Some(true)
    })
    .await;

    // holdopen toggles it back open; a second close toggles again.
    let r = command(
        &sim,
        &c,
        &token,
        "door/holdopen",
        serde_json::json!({"doorId": garage}),
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["commandName"],
        "HoldDoorOpen"
    );
    wait_for("garage open", || {
        let s = sim.door_status(garage).unwrap();
        s.door_relay_open && s.door_contact_closed == Some(false)
    })
    .await;
    // Holding open "again" closes a momentary door: the danger the client must avoid.
    command(
        &sim,
        &c,
        &token,
        "door/holdopen",
        serde_json::json!({"doorId": garage}),
    )
    .await;
    wait_for("garage closed again", || {
        !sim.door_status(garage).unwrap().door_relay_open
    })
    .await;

    let cmds = sim.commands();
    let paths: Vec<&str> = cmds.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/commands/door/close",
            "/api/v1/commands/door/holdopen",
            "/api/v1/commands/door/holdopen"
        ]
    );
    assert_eq!(cmds[0].body["doorId"], garage);
    sim.shutdown().await;
}

#[tokio::test]
async fn timed_control_opens_and_relocks() {
    let sim = Net2Sim::start(cfg()).await.unwrap();
    let c = http();
    let token = access(&sim, &c).await;
    let door = 6612642;
    let body: Value =
        serde_json::from_str(include_str!("fixtures/net2/door_control_request.json")).unwrap();
    let mut body = body;
    body["RelayFunction"]["RelayOpenTime"] = 400.into();
    let r = command(&sim, &c, &token, "door/control", body).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["commandName"],
        "DoorControl"
    );
    wait_for("relay open", || {
        sim.door_status(door).unwrap().door_relay_open
    })
    .await;
    wait_for("relocked", || {
        let s = sim.door_status(door).unwrap();
        !s.door_relay_open && s.door_contact_closed == Some(true)
    })
    .await;
    wait_for("events", || sim.event_count() >= 3).await;
    let page: Vec<Value> = get(
        &c,
        format!("{}/api/v1/events?orderBy=eventTime ASC", sim.base_url()),
        &token,
    )
    .await
    .json()
    .await
    .unwrap();
    let types: Vec<i64> = page
        .iter()
        .map(|e| e["eventType"].as_i64().unwrap())
        .collect();
    assert_eq!(&types[..3], &[580, 28, 29]);

    let mut bad: Value =
        serde_json::from_str(include_str!("fixtures/net2/door_control_request.json")).unwrap();
    bad["RelayFunction"]["RelayAction"] = "Explode".into();
    assert_eq!(
        command(&sim, &c, &token, "door/control", bad)
            .await
            .status(),
        400
    );
    let r = command(
        &sim,
        &c,
        &token,
        "controlLockdown",
        serde_json::json!({"lockdown": true}),
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["commandName"],
        "ControlLockdown"
    );
    assert_eq!(sim.commands().len(), 3);
    sim.shutdown().await;
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

const CONNECTION_DATA: &str = r#"[{"name":"eventHubLocal"}]"#;

async fn negotiate(sim: &Net2Sim, c: &reqwest::Client, token: &str) -> Value {
    let r = c
        .get(format!("{}/signalr/negotiate", sim.base_url()))
        .query(&[
            ("clientProtocol", "1.5"),
            ("connectionData", CONNECTION_DATA),
            ("token", token),
        ])
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn ws_connect(sim: &Net2Sim, conn_token: &str, token: &str) -> Result<Ws, String> {
    let url = format!(
        "ws://{}/signalr/connect?transport=webSockets&clientProtocol=1.5&connectionToken={}&connectionData={}&token={}",
        sim.addr(),
        enc(conn_token),
        enc(CONNECTION_DATA),
        enc(token)
    );
    let tcp = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    tokio_tungstenite::client_async(url, tcp)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// Next text frame that is not a keep-alive.
async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("frame in time")
            .expect("socket open")
            .expect("frame ok");
        if let Message::Text(t) = m
            && t.as_str() != "{}"
        {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn invoke(ws: &mut Ws, method: &str, args: Value, id: u32) {
    let f = serde_json::json!({"H":"eventHubLocal","M":method,"A":args,"I":id});
    ws.send(Message::Text(f.to_string().into())).await.unwrap();
}

/// The events of a liveEvents frame, whatever the argument shape.
fn live_events(frame: &Value) -> (bool, Vec<Value>) {
    let m = &frame["M"][0];
    assert!(
        m["H"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("eventHubLocal")
    );
    assert_eq!(m["M"], "liveEvents");
    let a = m["A"].as_array().unwrap();
    match &a[0] {
        Value::Array(inner) => (true, inner.clone()),
        _ => (false, a.clone()),
    }
}

#[tokio::test]
async fn signalr_round_trip() {
    let sim = Net2Sim::start(SimConfig {
        keepalive_interval: Duration::from_millis(100),
        ..cfg()
    })
    .await
    .unwrap();
    let c = http();
    let token = access(&sim, &c).await;
    let n = negotiate(&sim, &c, &token).await;
    assert_eq!(n["KeepAliveTimeout"], 20.0);
    assert_eq!(n["TryWebSockets"], true);
    assert_eq!(n["Url"], "/signalr");
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/net2/signalr/negotiate.json")).unwrap();
    let key_set = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(key_set(&n), key_set(&fixture));
    let conn = n["ConnectionToken"].as_str().unwrap().to_string();
    assert!(
        conn.contains('+') && conn.contains('/'),
        "needs url-encoding: {conn}"
    );

    let mut ws = ws_connect(&sim, &conn, &token).await.unwrap();
    let init = next_frame(&mut ws).await;
    assert_eq!(init["S"], 1);
    assert!(init["C"].as_str().unwrap().starts_with("d-"));
    assert_eq!(init["M"], serde_json::json!([]));

    let r = c
        .get(format!("{}/signalr/start", sim.base_url()))
        .query(&[
            ("transport", "webSockets"),
            ("clientProtocol", "1.5"),
            ("connectionToken", conn.as_str()),
            ("connectionData", CONNECTION_DATA),
            ("token", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["Response"], "started");

    // A keep-alive arrives.
    let ka = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ka, Message::Text("{}".into()));

    invoke(&mut ws, "SUBSCRIBETOLIVEEVENTS", serde_json::json!([]), 1).await;
    assert_eq!(next_frame(&mut ws).await, serde_json::json!({"I":"1"}));
    invoke(
        &mut ws,
        "subscribeToDoorStatusEvents",
        serde_json::json!(["6612642"]),
        2,
    )
    .await;
    assert_eq!(next_frame(&mut ws).await, serde_json::json!({"I":"2"}));
    invoke(
        &mut ws,
        "subscribeToDoorEvents",
        serde_json::json!([6612642]),
        3,
    )
    .await;
    assert_eq!(next_frame(&mut ws).await, serde_json::json!({"I":"3"}));
    invoke(&mut ws, "nope", serde_json::json!([]), 4).await;
    let e = next_frame(&mut ws).await;
    assert_eq!(e["I"], "4");
    assert_eq!(
        e["E"],
        "There was an error invoking Hub method 'eventhublocal.nope'."
    );
    let subs = sim.stats().subscriptions;
    assert_eq!(subs.len(), 3);
    assert_eq!(subs[1].1, vec![Value::from("6612642")]);

    // Two single events: one in each argument shape.
    sim.push_event(SimEvent::new(20, 7319051).user(12));
    let (nested1, evs1) = live_events(&next_frame(&mut ws).await);
    sim.push_event(SimEvent::new(580, 7242929));
    let (nested2, evs2) = live_events(&next_frame(&mut ws).await);
    assert_ne!(nested1, nested2, "both shapes are used");
    let e = &evs1[0];
    assert_eq!(e["userName"], "Bak Jonas");
    assert_eq!(e["tokenNumber"], 55012);
    assert_eq!(e["deviceId"], 7319051);
    assert_eq!(e["areaName"], "Fordør Porsevej - ACU:967438");
    assert!(e.get("id").is_none());
    let t = e["eventTime"].as_str().unwrap();
    assert_eq!(
        t.len(),
        19,
        "naive local time without fraction or offset: {t}"
    );
    assert!(chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").is_ok());
    let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "areaName",
            "details",
            "deviceId",
            "eventSubType",
            "eventTime",
            "eventType",
            "notificationType",
            "tokenNumber",
            "tokenType",
            "userId",
            "userName"
        ]
    );
    assert_eq!(evs2[0]["userName"], Value::Null);
    let frames: Vec<Value> = include_str!("fixtures/net2/signalr/frames.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(key_set(e), key_set(&frames[3]["M"][0]["A"][0][0]));

    // A batch of two in one frame.
    sim.push_events(vec![
        SimEvent::new(26, 6612642).user(8).token_type(1),
        SimEvent::new(46, 6612642),
    ]);
    let (nested, evs) = live_events(&next_frame(&mut ws).await);
    assert!(nested);
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0]["userName"], "Holm Mette");
    assert_eq!(evs[0]["tokenNumber"], 0);

    // Door status and door events for the subscribed door only.
    sim.set_door_status(7242929, |s| s.tamper_contact_closed = true);
    sim.set_door_status(6612642, |s| s.door_relay_open = true);
    let f = next_frame(&mut ws).await;
    assert_eq!(f["M"][0]["M"], "doorStatusEvents");
    let a = &f["M"][0]["A"];
    let st = if a[0].is_array() { &a[0][0] } else { &a[0] };
    assert_eq!(st["doorId"], 6612642);
    assert_eq!(st["status"]["doorRelayOpen"], true);
    let f = next_frame(&mut ws).await;
    assert_eq!(f["M"][0]["M"], "doorEvents");
    let a = &f["M"][0]["A"];
    let de = if a[0].is_array() { &a[0][0] } else { &a[0] };
    assert_eq!(de, &serde_json::json!({"doorId":6612642,"locked":false}));

    // Dropped abruptly: the stream ends without a close frame.
    sim.drop_websockets();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) if t.as_str() == "{}" => continue,
            other => break other,
        }
    };
    assert!(!matches!(end, Some(Ok(Message::Close(_)))), "{end:?}");
    let s = sim.stats();
    assert_eq!((s.negotiates, s.ws_connects), (1, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn signalr_rejects_bad_tokens() {
    let sim = Net2Sim::start(cfg()).await.unwrap();
    let c = http();
    let r = c
        .get(format!("{}/signalr/negotiate", sim.base_url()))
        .query(&[
            ("clientProtocol", "1.5"),
            ("connectionData", CONNECTION_DATA),
            ("token", "bogus"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let token = access(&sim, &c).await;
    let conn = negotiate(&sim, &c, &token).await["ConnectionToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ws_connect(&sim, "not-a-token", &token).await.is_err());
    assert!(ws_connect(&sim, &conn, "bogus").await.is_err());
    // The raw (un-encoded) connection token is a client bug: '+' decodes as a space.
    let url = format!(
        "ws://{}/signalr/connect?transport=webSockets&clientProtocol=1.5&connectionToken={conn}&token={token}",
        sim.addr()
    );
    let tcp = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    assert!(tokio_tungstenite::client_async(url, tcp).await.is_err());
    assert!(ws_connect(&sim, &conn, &token).await.is_ok());

    sim.faults()
        .live_enabled
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let r = c
        .get(format!("{}/signalr/negotiate", sim.base_url()))
        .query(&[
            ("clientProtocol", "1.5"),
            ("connectionData", CONNECTION_DATA),
            ("token", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    sim.shutdown().await;
}

#[tokio::test]
async fn socket_dropped_on_token_expiry_when_configured() {
    let sim = Net2Sim::start(SimConfig {
        drop_ws_on_token_expiry: true,
        ..cfg()
    })
    .await
    .unwrap();
    let c = http();
    let token = access(&sim, &c).await;
    let conn = negotiate(&sim, &c, &token).await["ConnectionToken"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ws = ws_connect(&sim, &conn, &token).await.unwrap();
    next_frame(&mut ws).await;
    wait_for("socket registered", || sim.websocket_count() == 1).await;
    sim.expire_tokens();
    wait_for("socket dropped", || sim.websocket_count() == 0).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn go_down_and_come_up_on_same_port() {
    let sim = Net2Sim::start(cfg()).await.unwrap();
    let c = http();
    let token = access(&sim, &c).await;
    sim.push_event(SimEvent::new(552, 0));
    let addr = sim.addr();
    sim.go_down().await;
    assert!(
        c.get(format!("{}/api/v1/doors", sim.base_url()))
            .send()
            .await
            .is_err()
    );
    sim.come_up().await.unwrap();
    assert_eq!(sim.addr(), addr);
    let r = get(&c, format!("{}/api/v1/events", sim.base_url()), &token).await;
    assert_eq!(r.status(), 200);
    let page: Vec<Value> = r.json().await.unwrap();
    assert_eq!(page[0]["eventDescription"], "Backup gennemført");
    assert_eq!(page[0]["deviceName"], "Net2 Server");
    sim.shutdown().await;
}

#[tokio::test]
async fn seed_history_is_fast() {
    let sim = Net2Sim::start(cfg()).await.unwrap();
    let start = chrono::Utc::now().naive_utc() - chrono::Duration::days(30);
    let t = Instant::now();
    sim.seed_history(100_000, start, Duration::from_secs(20));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(sim.event_count(), 100_000);
    let c = http();
    let token = access(&sim, &c).await;
    let page: Vec<Value> = get(
        &c,
        format!("{}/api/v1/events?rowCount=5000", sim.base_url()),
        &token,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(page.len(), 1000);
    sim.shutdown().await;
}

#[tokio::test]
async fn generator_produces_events() {
    let sim = Net2Sim::start(cfg()).await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    sim.spawn_generator(Duration::from_millis(5), cancel.clone());
    wait_for("generated events", || sim.event_count() >= 10).await;
    cancel.cancel();
    sim.shutdown().await;
}

#[tokio::test]
async fn server_zone_is_its_own_changes_with_dst_and_an_event_can_meet_the_subscriber() {
    let sim = Net2Sim::start(SimConfig {
        utc_offset_minutes: 60,
        ..cfg()
    })
    .await
    .unwrap();
    let c = http();
    let token = access(&sim, &c).await;
    let t1 = chrono::NaiveDate::from_ymd_opt(2026, 3, 29)
        .unwrap()
        .and_hms_opt(1, 59, 30)
        .unwrap();
    sim.push_on_subscribe(vec![SimEvent::new(20, 6612642).user(12).at(t1)]);
    assert_eq!(sim.event_count(), 0, "it happens at the subscription");
    let conn = negotiate(&sim, &c, &token).await["ConnectionToken"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ws = ws_connect(&sim, &conn, &token).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["S"], 1);
    invoke(&mut ws, "subscribeToLiveEvents", serde_json::json!([]), 1).await;
    let frames = [next_frame(&mut ws).await, next_frame(&mut ws).await];
    let live = frames
        .iter()
        .find(|f| f.get("M").is_some())
        .expect("a liveEvents frame right at the subscription");
    assert_eq!(live_events(live).1[0]["eventTime"], "2026-03-29T01:59:30");
    assert!(frames.contains(&serde_json::json!({"I":"1"})));
    // Summer time: later events are logged at +02:00, earlier ones keep +01:00.
    sim.set_utc_offset_minutes(120);
    let t2 = t1 + chrono::Duration::hours(1) + chrono::Duration::seconds(40);
    sim.push_event(SimEvent::new(20, 6612642).user(12).at(t2).rest_only());
    let r = get(
        &c,
        format!("{}/api/v1/events?orderBy=eventTime%20ASC", sim.base_url()),
        &token,
    )
    .await;
    let page: Vec<Value> = r.json().await.unwrap();
    let times: Vec<&str> = page
        .iter()
        .map(|e| e["eventTime"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "2026-03-29T01:59:30.000+01:00",
            "2026-03-29T03:00:10.000+02:00"
        ]
    );
    let now = sim.local_now() - chrono::Utc::now().naive_utc();
    assert!(
        (now - chrono::Duration::hours(2)).abs() < chrono::Duration::seconds(5),
        "the server's clock follows its zone: {now}"
    );
}

#[tokio::test]
async fn token_429_fault_refuses_every_grant_until_switched_off() {
    use std::sync::atomic::Ordering::Relaxed;
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    let c = http();
    let form = [
        ("username", "Gate House"),
        ("password", "sim-password"),
        ("grant_type", "password"),
        ("client_id", "00000000-0000-4000-8000-000000000000"),
    ];
    sim.faults().token_429.store(true, Relaxed);
    // Below the per-second limit (2): only the fault can refuse these.
    let r = token_req(&sim, &c, &form).await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("429 Too Many Requests"));
    sim.faults().token_429.store(false, Relaxed);
    let r = token_req(&sim, &c, &form).await;
    assert_eq!(r.status(), 200);
    let s = sim.stats();
    assert_eq!((s.token_429, s.password_grants), (1, 1));
    sim.shutdown().await;
}
