//! The web server without cameras: accounts, roles, login and password changes, the OpenAPI
//! document, and `{"detail"}` answers to bad input — through a real HTTP client against the
//! running daemon with the Net2 simulator.

mod common;

use common::web::WebHarness;
use gatehouse::sim::net2::SimConfig;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_server_runs_without_cameras_and_roles_are_enforced() {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    let (st, body) = w.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");

    // 401 without or with a bad token, `{"detail"}` both times.
    let path = "/api/device/cam/channel/1/snapshot";
    let (st, body) = w.call(Method::GET, path, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(body["detail"].is_string(), "{body}");
    let (st, _) = w.get(path, "not-a-token").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // A viewer may not take a snapshot (403); an operator gets past the role check (404: this
    // daemon has no camera).
    let viewer = w.login("vera").await;
    let operator = w.login("otto").await;
    let (st, body) = w.get(path, &viewer).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("operator"),
        "{body}"
    );
    let (st, body) = w.get(path, &operator).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");

    // The token says who and what.
    let claims = jwt_claims(&viewer);
    assert_eq!(
        (claims["sub"].as_str(), claims["role"].as_str()),
        (Some("vera"), Some("viewer"))
    );
    w.stop().await;
}

fn jwt_claims(token: &str) -> serde_json::Value {
    use base64_decode as b64;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&b64(part)).unwrap()
}

/// base64url without padding (a JWT's parts).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | val(c) as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_refused_then_throttled() {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    let login = |name: &str, pw: &str| {
        let body = json!({"username": name, "password": pw});
        w.call(Method::POST, "/api/auth/login", None, Some(body))
    };
    // Unknown name and wrong password answer the same.
    let (st, a) = login("nobody", "x-password").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, b) = login("vera", "wrong").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(a, b);
    for _ in 0..4 {
        login("vera", "wrong").await;
    }
    // Five failures in a minute: even the right password waits.
    let (st, body) = login("vera", "vera-password").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Another account is not affected.
    let (st, _) = login("ada", "ada-password").await;
    assert_eq!(st, StatusCode::OK);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_ends_old_sessions_and_survives_a_restart() {
    let mut w = WebHarness::start(SimConfig::default(), "", "").await;
    let old = w.login("otto").await;
    let change = |token: String, old_pw: &str, new_pw: &str| {
        let body = json!({"old_password": old_pw, "new_password": new_pw});
        let w = &w;
        async move {
            w.call(
                Method::POST,
                "/api/auth/change-password",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let (st, body) = change(old.clone(), "wrong-password", "otto-new-password").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let (st, body) = change(old.clone(), "otto-password", "short").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (st, body) = change(old.clone(), "otto-password", "otto-new-password").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // The old session is over; the old password too; the new one works.
    let (st, body) = w
        .call(
            Method::POST,
            "/api/auth/change-password",
            Some(&old),
            Some(json!({"old_password": "a", "new_password": "bbbbbbbbbb"})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    let bad = json!({"username": "otto", "password": "otto-password"});
    let (st, _) = w
        .call(Method::POST, "/api/auth/login", None, Some(bad))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let good = json!({"username": "otto", "password": "otto-new-password"});
    let (st, body) = w
        .call(Method::POST, "/api/auth/login", None, Some(good.clone()))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // Kept in the database, not in memory only; never the password itself.
    w.h.stop().await;
    w.h.start().await;
    w.base = format!("http://{}", w.h.app().web_addr.unwrap());
    let (st, body) = w
        .call(Method::POST, "/api/auth/login", None, Some(good))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let db = std::fs::read(w.h.db()).unwrap();
    assert!(
        !db.windows(17).any(|x| x == b"otto-new-password"),
        "the password is not stored"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_answer_detail_and_the_api_is_described() {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    // Malformed JSON 400, wrong type / unknown field / missing field 422, wrong content type
    // 415; each `{"detail"}`.
    let cases: [(&str, StatusCode); 4] = [
        ("{\"username\": ", StatusCode::BAD_REQUEST),
        (
            "{\"username\": 5, \"password\": \"x\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "{\"username\": \"vera\", \"password\": \"x\", \"admin\": true}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("{\"username\": \"vera\"}", StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, want) in cases {
        let res = w
            .http
            .post(w.url("/api/auth/login"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), want, "{body}");
        let v: serde_json::Value = res.json().await.unwrap();
        assert!(v["detail"].is_string(), "{body}: {v}");
    }
    let res = w
        .http
        .post(w.url("/api/auth/login"))
        .body("username=vera")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // OpenAPI 3.1, public, listing the routes with their methods.
    let (st, api) = w.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        api["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        api["openapi"]
    );
    for (path, method) in [
        ("/api/auth/login", "post"),
        ("/api/auth/change-password", "post"),
        ("/api/device/{device}/channel/{ch}/live", "get"),
    ] {
        assert!(
            api["paths"][path][method].is_object(),
            "{path} {method} missing"
        );
    }
    w.stop().await;
}
