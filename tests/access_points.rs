//! Seed 001's access points, health, hardware devices, users and REST door commands, through
//! a real HTTP client against the running daemon with the Net2 simulator (and a real
//! Mosquitto for the hardware points' MQTT side).

mod common;

use common::broker::{Broker, Recorder};
use common::wait_for;
use common::web::WebHarness;
use gatehouse::sim::net2::SimConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const KEY: &str = "hardware-test-key-0123456789";

/// The points list once the Net2 directory has its doors.
async fn points_when_ready(w: &WebHarness, token: &str, n: u64) -> Value {
    let end = tokio::time::Instant::now() + T;
    loop {
        let (st, body) = w.get("/api/access-control/points", token).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        if body["pagination"]["total"].as_u64() >= Some(n) {
            return body;
        }
        assert!(tokio::time::Instant::now() < end, "no doors: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn audit_rows(w: &WebHarness, sql_where: &str, arg: &str) -> i64 {
    let c = rusqlite::Connection::open(w.h.db()).unwrap();
    c.query_row(
        &format!("SELECT count(*) FROM audit WHERE {sql_where}"),
        [arg],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_are_listed_paged_by_site_and_edited_by_admins_only() {
    let w = WebHarness::start(
        SimConfig::default(),
        "",
        "sites:\n  - { id: home, name: Kirkegade 50 }\n  - { id: cabin }\n",
    )
    .await;
    let viewer = w.login("vera").await;
    let admin = w.login("ada").await;
    let all = points_when_ready(&w, &viewer, 7).await;
    let data = all["data"].as_array().unwrap();
    assert_eq!(data.len(), 7, "{all}");
    assert_eq!(
        all["pagination"],
        json!({"page": 1, "limit": 100, "total": 7, "totalPages": 1})
    );
    // Names from Net2; the seed's fields exactly.
    let garage = data.iter().find(|p| p["id"] == "net2-7242929").unwrap();
    assert_eq!(garage["name"], "Garage Port - ACU:7242929", "{garage}");
    let mut keys: Vec<&str> = garage
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "id",
            "isOnline",
            "lastStatusChange",
            "location",
            "name",
            "status",
            "type"
        ]
    );
    assert_eq!(
        (&garage["type"], &garage["status"], &garage["location"]),
        (&json!("door"), &json!("active"), &json!("Kirkegade 50"))
    );

    // Pages.
    let (_, p3) = w
        .get("/api/access-control/points?limit=3&page=3", &viewer)
        .await;
    assert_eq!(p3["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        p3["pagination"],
        json!({"page": 3, "limit": 3, "total": 7, "totalPages": 3})
    );
    let (st, body) = w.get("/api/access-control/points?limit=0", &viewer).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].is_string());

    // Sites: doors are in the first; an unknown site is 404, not an empty list.
    let (_, cabin) = w
        .get("/api/access-control/points?property_id=cabin", &viewer)
        .await;
    assert_eq!(cabin["pagination"]["total"], 0, "{cabin}");
    let (_, home) = w
        .get("/api/access-control/points?property_id=home", &viewer)
        .await;
    assert_eq!(home["pagination"]["total"], 7);
    let (st, body) = w
        .get("/api/access-control/points?property_id=nowhere", &viewer)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("nowhere"));

    // A viewer reads but does not write.
    let new = json!({"name": "Side Entrance", "location": "Building A - Side", "type": "gate", "status": "active", "property_id": "cabin"});
    for (m, path, body) in [
        (
            Method::POST,
            "/api/access-control/points",
            Some(new.clone()),
        ),
        (
            Method::PUT,
            "/api/access-control/points/net2-6203980",
            Some(json!({"status": "maintenance"})),
        ),
        (
            Method::DELETE,
            "/api/access-control/points/net2-6203980",
            None,
        ),
    ] {
        let (st, body) = w.call(m.clone(), path, Some(&viewer), body).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{m} {path}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("admin"));
    }

    // An admin creates, edits, deletes.
    let (st, made) = w
        .call(
            Method::POST,
            "/api/access-control/points",
            Some(&admin),
            Some(new),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    assert_eq!(made["success"], true);
    let id = made["data"]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("point-"), "{made}");
    assert_eq!(made["data"]["type"], "gate");
    let (_, cabin) = w
        .get("/api/access-control/points?property_id=cabin", &viewer)
        .await;
    assert_eq!(cabin["data"][0]["id"], id.as_str(), "{cabin}");
    // Bad bodies: nothing stored.
    for bad in [
        json!({"name": ""}),
        json!({"name": "x", "status": "broken"}),
        json!({"name": "x", "colour": "red"}),
        json!({"name": "x", "property_id": "nowhere"}),
    ] {
        let (st, body) = w
            .call(
                Method::POST,
                "/api/access-control/points",
                Some(&admin),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert!(body["detail"].is_string());
    }
    let (_, after) = w.get("/api/access-control/points", &viewer).await;
    assert_eq!(after["pagination"]["total"], 8, "only the good one stored");

    // A Net2 door: gatehouse's name and status shown, Net2's untouched; never deleted.
    let (st, edited) = w
        .call(
            Method::PUT,
            "/api/access-control/points/net2-6203980",
            Some(&admin),
            Some(json!({"name": "Front door", "status": "maintenance"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{edited}");
    assert_eq!(edited["data"]["name"], "Front door");
    assert_eq!(edited["data"]["status"], "maintenance");
    assert!(edited["data"]["lastStatusChange"].is_string(), "{edited}");
    let (st, body) = w
        .call(
            Method::DELETE,
            "/api/access-control/points/net2-6203980",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("disabled"),
        "{body}"
    );
    let (st, _) = w
        .call(
            Method::PUT,
            "/api/access-control/points/net2-1",
            Some(&admin),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let path = format!("/api/access-control/points/{id}");
    let (st, body) = w.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, _) = w.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Health: every point, keyed by id.
    let (st, health) = w.get("/api/access-control/points/health", &viewer).await;
    assert_eq!(st, StatusCode::OK);
    let fd = &health["data"]["net2-6203980"];
    assert_eq!(fd["point_id"], "net2-6203980");
    assert_eq!(fd["name"], "Front door");
    assert_eq!(fd["device_id"], "6203980");
    assert!(fd["connection_status"].is_string(), "{fd}");
    assert!(fd["firmware_version"].is_null());

    // Without a hardware key configured, hardware ingest says so.
    let res = w
        .http
        .post(w.url("/api/access-control/points/register"))
        .header("X-API-Key", KEY)
        .json(&json!({"device_id": "AC-DEV-001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("not configured"),
        "{body}"
    );

    // The routes are described.
    let (_, api) = w.call(Method::GET, "/api/openapi.json", None, None).await;
    for (path, method) in [
        ("/api/access-control/points", "get"),
        ("/api/access-control/points", "post"),
        ("/api/access-control/points/{id}", "put"),
        ("/api/access-control/points/{id}", "delete"),
        ("/api/access-control/points/health", "get"),
        ("/api/access-control/points/register", "post"),
        ("/api/access-control/points/{id}/heartbeat", "post"),
        ("/api/access-control/points/{id}/open", "post"),
        ("/api/access-control/users", "get"),
    ] {
        assert!(
            api["paths"][path][method].is_object(),
            "{path} {method} missing"
        );
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_names_only_and_managed_in_net2() {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    let viewer = w.login("vera").await;
    let sim_users = w.h.sim.users();
    assert!(sim_users.iter().any(|u| u.pin.is_some()));
    let end = tokio::time::Instant::now() + T;
    let (text, body) = loop {
        let res = w
            .http
            .get(w.url("/api/access-control/users?limit=1000"))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        if body["pagination"]["total"].as_u64() == Some(sim_users.len() as u64) {
            break (text, body);
        }
        assert!(tokio::time::Instant::now() < end, "no users: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first = &body["data"][0];
    assert!(first["id"].is_string(), "{first}");
    let fid: i64 = first["id"].as_str().unwrap().parse().unwrap();
    let want = sim_users.iter().find(|u| u.id == fid).unwrap();
    let name = first["name"].as_str().unwrap();
    assert!(
        name.starts_with(want.first_name.as_deref().unwrap_or("")),
        "{first}"
    );
    let mut keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["id", "name", "status"]);
    assert_eq!(first["status"], "active");
    for u in &sim_users {
        for secret in [&u.pin, &u.telephone].into_iter().flatten() {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} of user {} leaked",
                u.id
            );
        }
    }
    let (_, page) = w
        .get("/api/access-control/users?limit=1&page=2", &viewer)
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["pagination"]["totalPages"], sim_users.len());

    let admin = w.login("ada").await;
    let id = sim_users[0].id;
    for (m, path) in [
        (Method::POST, "/api/access-control/users".to_string()),
        (Method::PUT, format!("/api/access-control/users/{id}")),
        (Method::DELETE, format!("/api/access-control/users/{id}")),
    ] {
        let res = w
            .http
            .request(m.clone(), w.url(&path))
            .bearer_auth(&admin)
            .json(&json!({"name": "John Doe"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
        assert_eq!(res.headers()["allow"], "GET");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["detail"], "users are managed in Net2");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_open_reaches_net2_once_through_the_same_checks_and_is_audited() {
    let w = WebHarness::start(
        SimConfig::default(),
        &format!("  hardware_key: {KEY}\n"),
        "",
    )
    .await;
    let viewer = w.login("vera").await;
    let operator = w.login("otto").await;
    let admin = w.login("ada").await;
    points_when_ready(&w, &viewer, 7).await;
    wait_for("door status synced", T, || {
        w.h.app().bus.health("net2").is_some_and(|h| h.ready)
    })
    .await;
    let open = |token: String, id: &str, body: Value| {
        let path = format!("/api/access-control/points/{id}/open");
        let w = &w;
        async move { w.call(Method::POST, &path, Some(&token), Some(body)).await }
    };
    let (st, body) = open(viewer.clone(), "net2-6203980", json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(w.h.sim.commands().is_empty());

    let (st, body) = open(operator.clone(), "net2-6203980", json!({"action": "open"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    let rid = body["request_id"].as_str().unwrap().to_string();
    assert!(
        ["accepted", "sent"].contains(&body["status"].as_str().unwrap()),
        "{body}"
    );
    wait_for("the open reaches Net2", T, || w.h.sim.commands().len() == 1).await;
    let cmd = &w.h.sim.commands()[0];
    assert_eq!(cmd.path, "/api/v1/commands/door/open");
    assert_eq!(cmd.body["doorId"], 6203980);
    wait_for("audited", T, || {
        audit_rows(&w, "request_id = ?1 AND requester = 'rest:otto'", &rid) >= 2
    })
    .await;

    // Inside min_command_interval (2 s): refused, audited, not sent.
    let (st, body) = open(operator.clone(), "net2-6203980", json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let why = body["detail"].as_str().unwrap();
    assert!(why.contains("min_command_interval"), "{body}");
    wait_for("the refusal is audited", T, || {
        audit_rows(
            &w,
            "status = 'rejected' AND detail LIKE '%' || ?1 || '%'",
            "min_command_interval",
        ) == 1
    })
    .await;

    // A point under maintenance refuses commands.
    let (st, _) = w
        .call(
            Method::PUT,
            "/api/access-control/points/net2-6612642",
            Some(&admin),
            Some(json!({"status": "maintenance"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = open(operator.clone(), "net2-6612642", json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("maintenance"),
        "{body}"
    );
    wait_for("audited as rejected", T, || {
        audit_rows(
            &w,
            "status = 'rejected' AND detail LIKE '%' || ?1 || '%'",
            "maintenance",
        ) == 1
    })
    .await;

    // A Net2 door that is not in the config, a hardware point, an unknown point, bad input.
    let (st, body) = open(operator.clone(), "net2-6626578", json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("unknown door"));
    let res = w
        .http
        .post(w.url("/api/access-control/points/register"))
        .header("X-API-Key", KEY)
        .json(&json!({"device_id": "AC-DEV-001", "location": "Main Entrance"}))
        .send()
        .await
        .unwrap();
    let hw: Value = res.json().await.unwrap();
    let hw_id = hw["data"]["id"].as_str().unwrap().to_string();
    let (st, body) = open(operator.clone(), &hw_id, json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("no door"));
    let (st, _) = open(operator.clone(), "net2-1", json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = open(operator.clone(), "net2-6203980", json!({"action": "fly"})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);

    tokio::time::sleep(Duration::from_millis(300)).await; // nothing else may arrive
    assert_eq!(
        w.h.sim.commands().len(),
        1,
        "exactly one command reached Net2"
    );
    w.stop().await;
}

fn mqtt_top(port: u16) -> String {
    format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: gatehouse-test-{}\n",
        rand::random::<u32>()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardware_registers_beats_goes_offline_by_itself_and_shows_on_mqtt() {
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "recorder", "#", false).await;
    let mut w = WebHarness::start(
        SimConfig::default(),
        &format!("  hardware_key: {KEY}\n  hardware_offline_after: 1s\n"),
        &mqtt_top(broker.port),
    )
    .await;
    let viewer = w.login("vera").await;
    let post = |path: &str, key: Option<&str>, body: Value| {
        let mut r = w.http.post(w.url(path)).json(&body);
        if let Some(k) = key {
            r = r.header("X-API-Key", k);
        }
        async move {
            let res = r.send().await.unwrap();
            let st = res.status();
            (st, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let reg = json!({
        "device_id": "AC-DEV-001", "device_type": "door", "firmware_version": "2.1.0",
        "hardware_vendor": "SecureAccess Inc", "mac_address": "00:11:22:33:44:55",
        "ip_address": "192.168.1.100", "location": "Main Entrance - Building A",
        "capabilities": ["card", "biometric", "pin"]
    });
    let path = "/api/access-control/points/register";
    let (st, body) = post(path, None, reg.clone()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    let (st, _) = post(path, Some("wrong-key-0123456789"), reg.clone()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // A JWT is no hardware key.
    let res = w
        .http
        .post(w.url(path))
        .bearer_auth(&viewer)
        .json(&reg)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (st, body) = post(path, Some(KEY), reg.clone()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    let d = &body["data"];
    let id = d["id"].as_str().unwrap().to_string();
    assert_eq!(
        (&d["name"], &d["device_id"], &d["status"], &d["isOnline"]),
        (
            &json!("Main Entrance - Building A"),
            &json!("AC-DEV-001"),
            &json!("active"),
            &json!(true)
        )
    );
    // Again: the same point.
    let (_, again) = post(path, Some(KEY), reg).await;
    assert_eq!(again["data"]["id"], id.as_str());

    let beat = format!("/api/access-control/points/{id}/heartbeat");
    let (st, body) = post(&beat, Some(KEY), json!({"battery_level": 150})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (st, _) = post(&beat, None, json!({})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, body) = post(
        &beat,
        Some(KEY),
        json!({"device_id": "AC-DEV-001", "firmware_version": "2.1.1", "battery_level": 85, "sensor_status": "closed"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!((&body["ok"], &body["point_id"]), (&json!(true), &json!(id)));
    assert!(body["data"]["last_heartbeat"].is_string());
    let (st, _) = post(
        "/api/access-control/points/hw-999/heartbeat",
        Some(KEY),
        json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // MQTT: availability, state and Home Assistant entities.
    let avail = format!("gatehouse/hardware/{id}/availability");
    let state = format!("gatehouse/hardware/{id}/state");
    let key = id.replace('-', "_");
    let conn_cfg =
        format!("homeassistant/binary_sensor/gatehouse/hardware_{key}_connectivity/config");
    let batt_cfg = format!("homeassistant/sensor/gatehouse/hardware_{key}_battery/config");
    let sens_cfg = format!("homeassistant/sensor/gatehouse/hardware_{key}_sensor_status/config");
    wait_for("discovery", T, || {
        [&conn_cfg, &batt_cfg, &sens_cfg].iter().all(|t| {
            rec.on(t)
                .last()
                .is_some_and(|m| m.retain && !m.payload.is_empty())
        })
    })
    .await;
    let c = rec.on(&conn_cfg).last().unwrap().json();
    assert_eq!(c["state_topic"], state.as_str());
    assert_eq!(c["device_class"], "connectivity");
    assert_eq!(c["device"]["name"], "Main Entrance - Building A");
    let b = rec.on(&batt_cfg).last().unwrap().json();
    assert_eq!(b["unit_of_measurement"], "%");
    assert!(
        b["availability"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["topic"] == avail.as_str())
    );
    wait_for("battery on MQTT", T, || {
        rec.on(&state).last().is_some_and(|m| {
            m.json()["battery_level"] == 85 && m.json()["sensor_status"] == "closed"
        })
    })
    .await;
    let online_at = rec
        .on(&avail)
        .iter()
        .find(|m| m.text() == "online")
        .map(|m| m.at)
        .expect("online published");

    // No heartbeat for offline_after (1 s): offline by itself, on MQTT and in the API.
    wait_for("offline by itself", T, || {
        rec.on(&avail)
            .last()
            .is_some_and(|m| m.text() == "offline" && m.retain)
    })
    .await;
    let offline_at = rec.on(&avail).last().unwrap().at;
    assert!(offline_at.duration_since(online_at) >= Duration::from_millis(900));
    assert_eq!(rec.on(&state).last().unwrap().json()["online"], false);
    let (_, health) = w.get("/api/access-control/points/health", &viewer).await;
    let hh = &health["data"][id.as_str()];
    assert_eq!(
        (
            &hh["connection_status"],
            &hh["isOnline"],
            &hh["battery_level"]
        ),
        (&json!("offline"), &json!(false), &json!(85)),
        "{health}"
    );
    assert_eq!(hh["firmware_version"], "2.1.1");
    assert_eq!(hh["device_id"], "AC-DEV-001");
    let (_, list) = w.get("/api/access-control/points", &viewer).await;
    let p = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(p["isOnline"], false, "{p}");

    // A heartbeat brings it back.
    let (st, _) = post(&beat, Some(KEY), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    wait_for("online again", T, || {
        rec.on(&avail).last().is_some_and(|m| m.text() == "online")
    })
    .await;

    // Kept across a restart — and its Home Assistant entities are never cleared meanwhile
    // (an empty config deletes the entity in HA, with the user's names and areas).
    let seen = |t: &str| rec.on(t).len();
    let before: Vec<usize> = [&conn_cfg, &batt_cfg, &sens_cfg]
        .iter()
        .map(|t| seen(t))
        .collect();
    let bridge = "gatehouse/bridge/state";
    let bridge_before = seen(bridge);
    let state_before = seen(&state);
    w.h.stop().await;
    w.h.start().await;
    w.base = format!("http://{}", w.h.app().web_addr.unwrap());
    wait_for("bridge back online", T, || {
        rec.on(bridge)[bridge_before..]
            .iter()
            .any(|m| m.text() == "online")
    })
    .await;
    wait_for("the point's state again", T, || seen(&state) > state_before).await;
    for (t, n) in [&conn_cfg, &batt_cfg, &sens_cfg].iter().zip(before) {
        assert!(
            rec.on(t)[n..].iter().all(|m| !m.payload.is_empty()),
            "{t} was cleared across the restart"
        );
    }
    let viewer = w.login("vera").await;
    let (_, health) = w.get("/api/access-control/points/health", &viewer).await;
    assert_eq!(
        health["data"][id.as_str()]["device_id"],
        "AC-DEV-001",
        "{health}"
    );

    // Deleted: its entities and retained topics are cleared.
    let admin = w.login("ada").await;
    let (st, _) = w
        .call(
            Method::DELETE,
            &format!("/api/access-control/points/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    wait_for("entities cleared", T, || {
        [&conn_cfg, &batt_cfg, &sens_cfg, &avail]
            .iter()
            .all(|t| rec.on(t).last().is_some_and(|m| m.payload.is_empty()))
    })
    .await;
    w.stop().await;
    drop(broker);
}
