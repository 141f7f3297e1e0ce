//! Seed 001's events API against the running daemon with the Net2 simulator: filters, pages,
//! cursors, the streamed export, hardware sync (idempotent) and mobile agents' events with
//! their review.

mod common;

use common::wait_for;
use common::web::WebHarness;
use gatehouse::sim::net2::{SimConfig, SimEvent};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const GARAGE: u64 = 7242929;
const FRONT: u64 = 6612642;

async fn started() -> WebHarness {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    wait_for("Net2 live", T, || {
        w.h.app()
            .bus
            .health("net2")
            .is_some_and(|h| h.ready && h.live)
    })
    .await;
    w
}

/// Grants, denials and a "door not opened" (61), all in the same second.
async fn history(w: &WebHarness) {
    let now = w.h.sim.local_now();
    let mut evs = Vec::new();
    for _ in 0..3 {
        evs.push(SimEvent::new(20, GARAGE).user(1).at(now));
    }
    for _ in 0..2 {
        evs.push(SimEvent::new(23, FRONT).user(2).at(now));
    }
    evs.push(SimEvent::new(61, FRONT).user(1).at(now));
    w.h.sim.push_events(evs);
    wait_for("six access events stored", T, || {
        w.h.query_i64(
            "SELECT count(*) FROM events WHERE kind IN ('access_granted','access_denied') OR (kind = 'other' AND code = 61)",
        ) >= 6
    })
    .await;
}

fn total(v: &Value) -> u64 {
    v["pagination"]["total"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_filtered_and_paged_as_the_seed_says() {
    let w = started().await;
    history(&w).await;
    let tok = w.login("vera").await;
    let (st, all) = w.get("/api/access-control/events", &tok).await;
    assert_eq!(st, StatusCode::OK, "{all}");
    assert_eq!(total(&all), 6);
    let e = &all["data"][0];
    for k in [
        "id",
        "userId",
        "userName",
        "accessPointId",
        "accessPointName",
        "action",
        "timestamp",
        "location",
        "accessMethod",
        "source",
        "review_status",
    ] {
        assert!(e.get(k).is_some(), "{k} missing in {e}");
    }
    assert_eq!(e["source"], "net2");
    for (q, n) in [
        ("action=denied", 2),
        ("action=granted", 3),
        ("action=timeout", 1),
        ("userId=1", 4),
        ("userId=1&action=granted", 3),
        (&format!("accessPointId=net2-{FRONT}") as &str, 3),
        ("startDate=2099-01-01", 0),
        ("endDate=2000-01-01", 0),
        ("property_id=default", 6),
    ] {
        let (st, v) = w
            .get(&format!("/api/access-control/events?{q}"), &tok)
            .await;
        assert_eq!(st, StatusCode::OK, "{q}: {v}");
        assert_eq!(total(&v), n, "{q}");
        assert_eq!(v["data"].as_array().unwrap().len() as u64, n, "{q}");
    }
    let (_, v) = w
        .get("/api/access-control/events?action=denied", &tok)
        .await;
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] == "denied" && e["accessPointId"] == format!("net2-{FRONT}"))
    );
    // Pages: 6 events, 4 a page → 2 pages, the second with 2.
    let (_, p2) = w
        .get("/api/access-control/events?limit=4&page=2", &tok)
        .await;
    assert_eq!(
        p2["pagination"],
        json!({"page": 2, "limit": 4, "total": 6, "totalPages": 2})
    );
    assert_eq!(p2["data"].as_array().unwrap().len(), 2);
    // Bad input: 400 with a detail, or 404 for what does not exist.
    for (q, want) in [
        ("action=maybe", StatusCode::BAD_REQUEST),
        ("startDate=yesterday", StatusCode::BAD_REQUEST),
        ("userId=abc", StatusCode::BAD_REQUEST),
        ("limit=0", StatusCode::BAD_REQUEST),
        ("limit=5000", StatusCode::BAD_REQUEST),
        ("cursor=garbage", StatusCode::BAD_REQUEST),
        (
            "startDate=2026-02-01&endDate=2026-01-01",
            StatusCode::BAD_REQUEST,
        ),
        ("colour=red", StatusCode::BAD_REQUEST),
        ("accessPointId=the-shed", StatusCode::NOT_FOUND),
        ("property_id=elsewhere", StatusCode::NOT_FOUND),
    ] {
        let (st, v) = w
            .get(&format!("/api/access-control/events?{q}"), &tok)
            .await;
        assert_eq!(st, want, "{q}: {v}");
        assert!(v["detail"].is_string(), "{q}: {v}");
    }
    let (st, _) = w
        .call(Method::GET, "/api/access-control/events", None, None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_walks_a_burst_once_and_the_export_streams_it_all() {
    let w = started().await;
    let now = w.h.sim.local_now();
    w.h.sim.push_events(
        (0..25)
            .map(|i| SimEvent::new(20, GARAGE).user(1 + i % 3).at(now))
            .collect(),
    );
    wait_for("25 grants", T, || {
        w.h.query_i64("SELECT count(*) FROM events WHERE kind = 'access_granted'") >= 25
    })
    .await;
    let tok = w.login("vera").await;
    let mut cursor = String::new();
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let (st, v) = w
            .get(
                &format!("/api/access-control/events?limit=10&cursor={cursor}"),
                &tok,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        pages += 1;
        for e in v["data"].as_array().unwrap() {
            ids.push(e["id"].as_str().unwrap().to_string());
        }
        match v["cursor"]["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(v["cursor"]["has_more"], true);
                cursor = c.to_string();
            }
            None => {
                assert_eq!(v["cursor"]["has_more"], false);
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (25, 25), "each event once");

    // CSV: a header and one line per event; JSON: the same events.
    let res = w
        .http
        .get(w.url("/api/access-control/events/export?format=csv&action=granted"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("events.csv")
    );
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("seq,id,time,action"), "{}", lines[0]);
    assert_eq!(lines.len(), 26, "{csv}");
    let res = w
        .http
        .get(w.url("/api/access-control/events/export?format=json"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let all: Vec<Value> = res.json().await.unwrap();
    assert_eq!(all.len(), 25);
    assert!(
        all.windows(2)
            .all(|p| p[0]["seq"].as_i64() < p[1]["seq"].as_i64()),
        "oldest first"
    );
    let (st, v) = w
        .get("/api/access-control/events/export?format=xlsx", &tok)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hardware_sync_is_idempotent_and_shows_in_the_history() {
    let w = started().await;
    let op = w.login("otto").await;
    let viewer = w.login("vera").await;
    let batch = json!({
        "access_point_id": format!("net2-{GARAGE}"),
        "events": [
            {"userId": "1", "action": "granted", "timestamp": "2026-01-26T10:30:00Z"},
            {"userId": "1", "action": "granted", "timestamp": "2026-01-26T10:30:00Z"},
            {"userId": "2", "action": "denied", "timestamp": "2026-01-26T10:31:00Z"},
            {"action": "timeout", "timestamp": "2026-01-26T10:32:00+01:00"}
        ]
    });
    let path = "/api/access-control/events/sync";
    let (st, _) = w
        .call(Method::POST, path, Some(&viewer), Some(batch.clone()))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = w
        .call(Method::POST, path, Some(&op), Some(batch.clone()))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"],
        json!({"received": 4, "stored": 4, "duplicates": 0})
    );
    // The device sends it again (it never saw the answer): nothing new.
    let (_, v) = w.call(Method::POST, path, Some(&op), Some(batch)).await;
    assert_eq!(
        v["data"],
        json!({"received": 4, "stored": 0, "duplicates": 4})
    );
    let (_, v) = w
        .get("/api/access-control/events?startDate=2026-01-26T00:00:00Z&endDate=2026-01-27T00:00:00Z", &viewer)
        .await;
    assert_eq!(total(&v), 4, "{v}");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["source"] == "hardware")
    );
    // Newest first: the timeout (09:32 UTC) is the oldest.
    assert_eq!(v["data"][3]["action"], "timeout", "{v}");
    // Bad entries: 422, nothing stored.
    let before = w.h.query_i64("SELECT count(*) FROM events");
    for bad in [
        json!({"access_point_id": "p", "events": [{"action": "open", "timestamp": "2026-01-26T10:30:00Z"}]}),
        json!({"access_point_id": "p", "events": [{"action": "granted", "timestamp": "26/01/2026"}]}),
        json!({"access_point_id": "p", "events": [{"action": "granted", "timestamp": "2026-01-26T10:30:00Z", "pin": "1234"}]}),
        json!({"access_point_id": "p", "events": [{"userId": "x1", "action": "granted", "timestamp": "2026-01-26T10:30:00Z"}]}),
    ] {
        let (st, v) = w
            .call(Method::POST, path, Some(&op), Some(bad.clone()))
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        assert!(v["detail"].is_string());
    }
    assert_eq!(w.h.query_i64("SELECT count(*) FROM events"), before);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mobile_agents_event_is_kept_once_and_reviewed_once() {
    let w = started().await;
    let op = w.login("otto").await;
    let viewer = w.login("vera").await;
    let body = json!({
        "property_id": "default",
        "user_id": "1",
        "access_point": format!("net2-{FRONT}"),
        "access_method": "mobile",
        "event_type": "access_attempt",
        "timestamp": "2026-01-26T10:30:00Z",
        "location": {"lat": 40.7128, "lng": -74.0060},
        "is_authorized": true,
        "source_agent_id": "agent-789",
        "source_device_id": "mobile-device-001",
        "source_metadata": {"app_version": "1.0.0", "gps_accuracy": 5.2},
        "idempotency_key": "550e8400-e29b-41d4-a716-446655440000",
        "description": "Access granted via mobile app"
    });
    let path = "/api/access-control/events/agent";
    let (st, first) = w
        .call(Method::POST, path, Some(&op), Some(body.clone()))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    assert_eq!(first["data"]["review_status"], "pending");
    assert_eq!(first["message"], "Agent event submitted for review");
    assert_eq!(first["success"], true);
    let (st, again) = w.call(Method::POST, path, Some(&op), Some(body)).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again["data"]["id"], first["data"]["id"]);
    assert_eq!(
        w.h.query_i64("SELECT count(*) FROM events WHERE id LIKE 'agent:%'"),
        1
    );
    let (_, v) = w
        .get(
            "/api/access-control/events?startDate=2026-01-26&endDate=2026-01-26",
            &viewer,
        )
        .await;
    assert_eq!(v["data"][0]["review_status"], "pending", "{v}");
    assert_eq!(v["data"][0]["source"], "mobile_agent");
    assert_eq!(v["data"][0]["userId"], "1");

    let id = first["data"]["id"].as_str().unwrap();
    let review = |tok: String, action: &str| {
        let p = format!("/api/access-control/events/{id}/review?action={action}&reason=checked");
        let w = &w;
        async move { w.call(Method::PUT, &p, Some(&tok), None).await }
    };
    let (st, _) = review(viewer.clone(), "approve").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = review(op.clone(), "maybe").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = review(op.clone(), "approve").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["review_status"], "approved");
    assert_eq!(v["data"]["reviewed_by"], "otto");
    assert_eq!(v["message"], "Event approved");
    let (st, v) = review(op.clone(), "reject").await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, _) = w
        .call(
            Method::PUT,
            "/api/access-control/events/net2:1/review?action=approve",
            Some(&op),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, v) = w
        .get(
            "/api/access-control/events?startDate=2026-01-26&endDate=2026-01-26",
            &viewer,
        )
        .await;
    assert_eq!(v["data"][0]["review_status"], "approved");
    // Out-of-range coordinates, an unknown field: 422.
    let (st, _) = w
        .call(Method::POST, path, Some(&op), Some(json!({"access_point": "x", "timestamp": "2026-01-26T10:30:00Z", "is_authorized": true, "location": {"lat": 91.0, "lng": 0.0}})))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    w.stop().await;
}
