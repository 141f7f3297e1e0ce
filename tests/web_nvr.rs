//! Seed 004's device and alarm routes through the running daemon, with the Hikvision simulator
//! (an NVR, a camera) and the web server on port 0: devices and their reachability following
//! the simulator going down and up, channels and device info from the simulator's answers,
//! recording days asked of the device, stored alarms in cursor pages, dismissing them, and a
//! login test that costs the device exactly one login attempt.

mod common;

use common::web::WebHarness;
use gatehouse::sim::hikvision::{HikSim, HikSimConfig, Personality};
use gatehouse::sim::net2::SimConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const SIM_PASSWORD: &str = "sim-hik-pass";

/// The daemon with the Net2 simulator, these cameras (`sources.hikvision` list items) and
/// the web server with the three accounts.
async fn daemon(cameras: &[String]) -> WebHarness {
    WebHarness::start_with_cameras(SimConfig::default(), cameras, "", "").await
}

fn camera_yaml(id: &str, sim: &HikSim) -> String {
    format!(
        "{{ id: {id}, url: \"{}\", username: admin, password: {SIM_PASSWORD}, offline_after: 1s }}",
        sim.base_url()
    )
}

/// Poll `path` until `cond` holds on its answer (bounded); the answer.
async fn until(
    w: &WebHarness,
    token: &str,
    path: &str,
    what: &str,
    cond: impl Fn(StatusCode, &Value) -> bool,
) -> Value {
    let end = tokio::time::Instant::now() + T;
    loop {
        let (st, body) = w.get(path, token).await;
        if cond(st, &body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}: {path} answered {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn device<'a>(list: &'a Value, config_id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|d| d["config_id"] == config_id)
        .unwrap_or_else(|| panic!("{config_id} in {list}"))
}

/// No answer may carry a password, or a field for one.
fn no_password(body: &Value) {
    let text = body.to_string();
    assert!(
        !text.contains(SIM_PASSWORD) && !text.contains("rtsp-secret"),
        "a password in {text}"
    );
    assert!(!text.contains("\"password\""), "a password field in {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_channels_info_and_recording_days_come_from_the_devices() {
    let days = ["2025-01-15", "2025-01-16"]
        .iter()
        .map(|d| d.parse().unwrap())
        .collect();
    let nvr = HikSim::start(HikSimConfig {
        personality: Personality::nvr(),
        record_days: Some(days),
        ..Default::default()
    })
    .await
    .unwrap();
    // A camera without recording search (no storage).
    let cam = HikSim::start(HikSimConfig::default()).await.unwrap();
    let w = daemon(&[
        camera_yaml("nvr", &nvr),
        camera_yaml("cam", &cam),
        // RTSP only, nothing listening: never reachable, no ISAPI.
        "{ id: porch, rtsp_url: \"rtsp://viewer:rtsp-secret@127.0.0.1:9/Streaming/Channels/101\", offline_after: 1s }".into(),
    ])
    .await;
    let viewer = w.login("vera").await;

    let list = until(
        &w,
        &viewer,
        "/api/devices",
        "both ISAPI devices online",
        |st, b| {
            st == StatusCode::OK
                && b.as_array()
                    .is_some_and(|a| a.iter().filter(|d| d["is_checked"] == true).count() == 2)
        },
    )
    .await;
    no_password(&list);
    let n = device(&list, "nvr");
    assert_eq!(n["id"], 1);
    assert_eq!(n["ip_web"], nvr.addr().to_string());
    assert_eq!(n["ip_nvr"], "127.0.0.1");
    assert_eq!(
        (&n["username"], &n["brand"]),
        (&json!("admin"), &json!("hikvision"))
    );
    let p = device(&list, "porch");
    assert_eq!(p["id"], 3);
    assert_eq!(p["is_checked"], false);
    assert_eq!(p["ip_web"], Value::Null, "no web interface");
    assert_eq!(p["ip_nvr"], "127.0.0.1");
    let (_, active) = w.get("/api/devices/active", &viewer).await;
    let ids: Vec<&str> = active
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["config_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["nvr", "cam"]);

    // Channels and info from what the NVR answered (names decoded), by id or position.
    let chans = until(
        &w,
        &viewer,
        "/api/devices/1/channels",
        "the NVR's channels",
        |st, _| st == StatusCode::OK,
    )
    .await;
    let chans = chans.as_array().unwrap();
    assert_eq!(chans.len(), 4, "{chans:?}");
    assert_eq!(chans[2]["name"], "Gate & Drive");
    assert_eq!(
        (
            &chans[2]["id"],
            &chans[2]["device_id"],
            &chans[2]["channel_no"]
        ),
        (&json!(1003), &json!(1), &json!(3))
    );
    assert!(chans.iter().all(|c| c["is_active"] == true));
    let (st, info) = w.get("/api/device/nvr/infor", &viewer).await;
    assert_eq!(st, StatusCode::OK, "{info}");
    no_password(&info);
    assert_eq!(info["device_id"], 1);
    assert_eq!(info["model"], "DS-7608NI-K2");
    assert_eq!(info["serial_number"], "DS-7608NI-K220190101CCWR000000001");
    assert_eq!(info["device_type"], "NVR");
    assert!(info["firmware_version"].is_string() && info["mac_address"].is_string());
    let disks = info["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(
        (
            &disks[0]["hdd_name"],
            &disks[0]["status"],
            &disks[0]["capacity"],
            &disks[0]["free_space"]
        ),
        (
            &json!("hdd1"),
            &json!("ok"),
            &json!(1907729),
            &json!(125952)
        )
    );
    assert_eq!(disks[1]["status"], "error");
    let (st, storage) = w.get("/api/device/1/infor/storage", &viewer).await;
    assert_eq!(
        (st, storage.as_array().map(Vec::len)),
        (StatusCode::OK, Some(2))
    );
    let (st, ch) = w.get("/api/device/nvr/channel/3/infor", &viewer).await;
    assert_eq!(st, StatusCode::OK, "{ch}");
    assert_eq!(ch["channel_name"], "Gate & Drive");
    assert_eq!(ch["connected_type"], "ip");
    assert_eq!(ch["id"], 1003);
    // Not read from the device: null, not a made-up value.
    assert_eq!(ch["video_codec"], Value::Null);
    assert_eq!(ch["resolution_width"], Value::Null);
    for (path, want) in [
        ("/api/device/nvr/channel/9/infor", StatusCode::NOT_FOUND),
        ("/api/device/porch/infor", StatusCode::NOT_FOUND),
        ("/api/device/4/infor", StatusCode::NOT_FOUND),
        ("/api/device/nope/infor", StatusCode::NOT_FOUND),
        ("/api/devices/porch/channels", StatusCode::NOT_FOUND),
        ("/api/device/nvr/channel/x/infor", StatusCode::BAD_REQUEST),
    ] {
        let (st, body) = w.get(path, &viewer).await;
        assert_eq!(st, want, "{path}: {body}");
        assert!(body["detail"].is_string(), "{path}: {body}");
    }

    // Recording days: asked of the device, every channel.
    let (st, month) = w
        .get("/api/devices/nvr/channels/month_data/2025-01", &viewer)
        .await;
    assert_eq!(st, StatusCode::OK, "{month}");
    let channels = month["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 4);
    assert_eq!(channels[2]["channel"]["name"], "Gate & Drive");
    let days = channels[0]["record_days"].as_array().unwrap();
    assert_eq!(days.len(), 31);
    let recorded: Vec<&str> = days
        .iter()
        .filter(|d| d["has_record"] == true)
        .map(|d| d["record_date"].as_str().unwrap())
        .collect();
    assert_eq!(recorded, ["2025-01-15", "2025-01-16"]);
    assert_eq!(month["oldest_record_month"], Value::Null, "not known");
    let (st, full) = w
        .get(
            "/api/devices/channels/1003/record_days_full?month=2025-01",
            &viewer,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{full}");
    let day15 = full
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["record_date"] == "2025-01-15")
        .unwrap();
    assert_eq!(
        (&day15["id"], &day15["channel_id"], &day15["has_record"]),
        (&json!(20250115), &json!(1003), &json!(true))
    );
    // February 2025 has no recordings at all: every day false, none invented.
    let (_, feb) = w
        .get("/api/devices/1/channels/month_data/2025-02", &viewer)
        .await;
    let feb_days = feb["channels"][0]["record_days"].as_array().unwrap();
    assert_eq!(feb_days.len(), 28);
    assert!(feb_days.iter().all(|d| d["has_record"] == false));
    for (path, want) in [
        // The camera has no recording search: said, not faked.
        (
            "/api/devices/cam/channels/month_data/2025-01",
            StatusCode::NOT_IMPLEMENTED,
        ),
        (
            "/api/devices/nvr/channels/month_data/2025-13",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/devices/channels/1003/record_days_full?month=Jan",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/devices/channels/1009/record_days_full",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/devices/channels/9001/record_days_full",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/devices/channels/-5/record_days_full",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (st, body) = w.get(path, &viewer).await;
        assert_eq!(st, want, "{path}: {body}");
        assert!(body["detail"].is_string(), "{path}: {body}");
    }

    // The NVR goes away: it leaves the active list; it comes back: it is listed again.
    nvr.go_down().await;
    until(&w, &viewer, "/api/devices", "the NVR offline", |_, b| {
        device(b, "nvr")["is_checked"] == false
    })
    .await;
    let (_, active) = w.get("/api/devices/active", &viewer).await;
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");
    assert_eq!(active[0]["config_id"], "cam");
    nvr.come_up().await.unwrap();
    until(
        &w,
        &viewer,
        "/api/devices/active",
        "the NVR online again",
        |_, b| b.as_array().is_some_and(|a| a.len() == 2),
    )
    .await;
    w.stop().await;
}

/// Every alarm of the listing (following the cursor), with the page size `limit`.
async fn all_pages(w: &WebHarness, token: &str, query: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let path = format!("/api/user/alarm?limit={limit}{query}{cursor}");
        let (st, page) = w.get(&path, token).await;
        assert_eq!(st, StatusCode::OK, "{path}: {page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        out.extend(items.iter().cloned());
        if page["has_more"] == false {
            assert_eq!(page["next_cursor_id"], Value::Null);
            return out;
        }
        let time = page["next_cursor_time"].as_str().unwrap();
        cursor = format!(
            "&cursor_time={}&cursor_id={}",
            time.replace('+', "%2B"),
            page["next_cursor_id"]
        );
    }
    panic!("more than 100 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_listed_in_cursor_pages_and_dismissed() {
    let cam = HikSim::start(HikSimConfig::default()).await.unwrap();
    let w = daemon(&[camera_yaml("cam", &cam)]).await;
    let viewer = w.login("vera").await;
    let admin = w.login("ada").await;
    until(
        &w,
        &viewer,
        "/api/devices/active",
        "the camera online",
        |_, b| b.as_array().is_some_and(|a| a.len() == 1),
    )
    .await;
    // A burst within one second: 20 distinct alarms (types × channels).
    let types = [
        "VMD",
        "linedetection",
        "fielddetection",
        "tamperdetection",
        "PIR",
    ];
    for ty in types {
        for ch in 1..=4 {
            cam.push_alert(ch, ty, "active");
        }
    }
    until(
        &w,
        &viewer,
        "/api/user/alarm?limit=1000",
        "20 alarms stored",
        |_, b| b["items"].as_array().is_some_and(|a| a.len() == 20),
    )
    .await;
    let (_, whole) = w.get("/api/user/alarm?limit=1000", &viewer).await;
    let whole = whole["items"].as_array().unwrap().clone();
    // Newest first: (created_at, id) descending.
    for pair in whole.windows(2) {
        let key = |a: &Value| {
            (
                a["created_at"].as_str().unwrap().to_string(),
                a["id"].as_i64().unwrap(),
            )
        };
        assert!(key(&pair[0]) > key(&pair[1]), "{pair:?}");
    }
    let a = &whole[0];
    assert_eq!(
        (&a["device_id"], &a["config_id"]),
        (&json!(1), &json!("cam"))
    );
    assert_eq!(a["device_ip_web"], cam.addr().to_string());
    assert!(a["channel_id_in_device"].is_string(), "{a}");
    assert!(a["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(a["message"].as_str().unwrap().contains("started"), "{a}");
    let events: std::collections::BTreeSet<&str> =
        whole.iter().map(|a| a["event"].as_str().unwrap()).collect();
    assert_eq!(events.len(), 5, "{events:?}");

    // Pages of 3 cover every alarm exactly once, in the same order.
    let paged = all_pages(&w, &viewer, "", 3).await;
    let ids = |v: &[Value]| {
        v.iter()
            .map(|a| a["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&paged), ids(&whole));
    // Filters.
    let ch2 = all_pages(&w, &viewer, "&channel_id_in_device=2&device_id=cam", 2).await;
    assert_eq!(ch2.len(), 5);
    assert!(ch2.iter().all(|a| a["channel_id_in_device"] == "2"));
    let vmd = all_pages(&w, &viewer, "&event=vmd&device_id=1", 10).await;
    assert_eq!(vmd.len(), 4);
    // Bad input: 400 / 404 with a detail.
    for (q, want) in [
        ("cursor_time=yesterday&cursor_id=3", StatusCode::BAD_REQUEST),
        ("cursor_time=2026-01-01T00:00:00Z", StatusCode::BAD_REQUEST),
        ("cursor_id=3", StatusCode::BAD_REQUEST),
        (
            "cursor_id=abc&cursor_time=2026-01-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
        ),
        ("limit=0", StatusCode::BAD_REQUEST),
        ("limit=5000", StatusCode::BAD_REQUEST),
        ("channel_id_in_device=front", StatusCode::BAD_REQUEST),
        ("device_id=nope", StatusCode::NOT_FOUND),
    ] {
        let (st, body) = w.get(&format!("/api/user/alarm?{q}"), &viewer).await;
        assert_eq!(st, want, "{q}: {body}");
        assert!(body["detail"].is_string(), "{q}: {body}");
    }

    // Dismissing: admins only; the event stays.
    let first = whole[0]["id"].as_i64().unwrap();
    let path = format!("/api/user/alarm/{first}");
    let (st, _) = w.call(Method::DELETE, &path, Some(&viewer), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, body) = w.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["detail"], "Alarm deleted successfully");
    let (st, _) = w.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "dismissed already");
    let (_, rest) = w.get("/api/user/alarm?limit=1000", &viewer).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 19);
    assert_eq!(
        w.h.query_i64(&format!("SELECT count(*) FROM events WHERE seq = {first}")),
        1,
        "the event stays"
    );
    let (st, _) = w
        .call(
            Method::DELETE,
            "/api/user/alarm?device_id=nope",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, body) = w
        .call(
            Method::DELETE,
            "/api/user/alarm?device_id=cam",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["deleted_count"], 19);
    let (_, none) = w.get("/api/user/alarm", &viewer).await;
    assert_eq!(none["items"], json!([]));
    assert_eq!(none["has_more"], false);
    assert!(
        w.h.query_i64("SELECT count(*) FROM events WHERE kind = 'camera_alert'") >= 20,
        "dismissing keeps the events"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_test_is_one_login_attempt() {
    // Not configured in the daemon: only the tests talk to it.
    let dev = HikSim::start(HikSimConfig {
        personality: Personality::nvr(),
        ..Default::default()
    })
    .await
    .unwrap();
    let w = daemon(&[]).await;
    let operator = w.login("otto").await;
    let viewer = w.login("vera").await;
    let admin = w.login("ada").await;
    let test = |token: &str, body: Value| {
        let token = token.to_string();
        let w = &w;
        async move {
            w.call(
                Method::POST,
                "/api/devices/test-connection",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let host = dev.addr().to_string();
    let body = |pw: &str| json!({"ip_web": host, "username": "admin", "password": pw, "brand": "hikvision"});

    let (st, r) = test(&viewer, body(SIM_PASSWORD)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{r}");
    assert_eq!(dev.stats().requests, 0, "nothing sent for a viewer");

    let (st, r) = test(&operator, body(SIM_PASSWORD)).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(
        r,
        json!({"ip_reachable": true, "auth_ok": true, "message": "OK"})
    );
    let s = dev.stats();
    assert_eq!((s.requests, s.with_credentials), (2, 1), "{s:?}");

    let (st, r) = test(&operator, body("wrong-password")).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(
        (&r["ip_reachable"], &r["auth_ok"]),
        (&json!(true), &json!(false))
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("Authentication failed"),
        "{r}"
    );
    assert!(!r.to_string().contains("wrong-password"));
    let s = dev.stats();
    assert_eq!(
        (s.requests, s.with_credentials, s.bad_logins),
        (4, 2, 1),
        "exactly one more login attempt, not retried: {s:?}"
    );

    // Nothing listening.
    let (st, r) = test(
        &operator,
        json!({"ip_web": "127.0.0.1:9", "username": "admin", "password": "x", "brand": "hikvision"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(
        (&r["ip_reachable"], &r["auth_ok"]),
        (&json!(false), &json!(false))
    );

    // Bad input: 422, nothing sent.
    for b in [
        json!({"ip_web": host, "username": "admin", "password": "x", "brand": "dahua"}),
        json!({"ip_web": format!("http://{host}/x"), "username": "admin", "password": "x", "brand": "hikvision"}),
        json!({"ip_web": host, "username": "admin", "password": "x", "brand": "hikvision", "port": 80}),
        json!({"ip_web": host, "username": "admin", "brand": "hikvision"}),
    ] {
        let (st, r) = test(&admin, b.clone()).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b}: {r}");
        assert!(r["detail"].is_string(), "{r}");
    }
    assert_eq!(dev.stats().requests, 4);

    // Five a minute per user: the operator has used three.
    for _ in 0..2 {
        let (st, _) = test(&operator, json!({"brand": "dahua"})).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let (st, r) = test(&operator, body(SIM_PASSWORD)).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{r}");
    assert_eq!(dev.stats().requests, 4, "a refused test sends nothing");
    w.stop().await;
}
