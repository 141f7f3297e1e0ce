//! Issue 19, security: tokens (alg none, algorithm confusion, expired, wrong key, malformed,
//! a scoped token on every route of the OpenAPI document), path traversal, oversized headers
//! and bodies, slow clients, MQTT command payloads at the broker's limit, TLS settings, and a
//! search for every secret in the logs, MQTT, the database and the REST answers. Everything
//! goes through a running daemon (the Net2 simulator behind it); raw sockets where an HTTP
//! client would clean up the request (`..`, `%2e%2e`) before sending it.

mod common;

use common::broker::{Broker, Recorder};
use common::wait_for;
use common::web::{SECRET, WebHarness};
use gatehouse::sim::net2::SimConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(20);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(b: &[u8]) -> String {
    use std::fmt::Write;
    // base64url without padding, by hand (no base64 crate in the tree's direct deps).
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            let _ = write!(s, "{}", A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

/// A JWT with this header and claims, signed HS256-style with `key` (whatever the header
/// says), or unsigned when `key` is None.
fn forge(header: Value, claims: Value, key: Option<&[u8]>) -> String {
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = match key {
        Some(k) => {
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k);
            b64(ring::hmac::sign(&k, msg.as_bytes()).as_ref())
        }
        None => String::new(),
    };
    format!("{msg}.{sig}")
}

fn admin_claims() -> Value {
    json!({"sub": "mallory", "exp": now() + 600, "role": "admin"})
}

/// A raw HTTP/1.1 exchange: `head` is sent as is (plus `Host` and `Connection: close`); the
/// status (0 when the server closed without answering) and the body.
async fn raw(base: &str, method: &str, path: &str, headers: &str) -> (u16, String) {
    raw_body(base, method, path, headers, b"").await
}

/// [`raw`] with a body after the head.
async fn raw_body(
    base: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let addr = base.strip_prefix("http://").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    let mut all = req.into_bytes();
    all.extend_from_slice(body);
    // The server may answer (413, 431) and close before it has read everything.
    let _ = s.write_all(&all).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

/// Every (method, path) of the OpenAPI document the server serves, parameters filled in.
async fn routes(w: &WebHarness) -> Vec<(Method, String)> {
    let (st, api) = w.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let mut out = Vec::new();
    for (path, item) in api["paths"].as_object().unwrap() {
        let mut p = String::new();
        let mut rest = path.as_str();
        while let Some(i) = rest.find('{') {
            let j = rest.find('}').unwrap();
            p.push_str(&rest[..i]);
            p.push_str(match &rest[i + 1..j] {
                "device" | "camera" => "cam1",
                _ => "1",
            });
            rest = &rest[j + 1..];
        }
        p.push_str(rest);
        for m in item.as_object().unwrap().keys() {
            if let Ok(m) = m.to_uppercase().parse::<Method>() {
                out.push((m, p.clone()));
            }
        }
    }
    assert!(
        out.len() >= 40,
        "the document lists the routes: {}",
        out.len()
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_malformed_tokens_are_refused() {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    let path = "/api/access-control/points";
    // The control: a token made right opens it, so every refusal below is the token's doing.
    let good = forge(
        json!({"alg": "HS256", "typ": "JWT"}),
        admin_claims(),
        Some(SECRET.as_bytes()),
    );
    assert_eq!(w.get(path, &good).await.0, StatusCode::OK);
    let ec = rcgen::KeyPair::generate().unwrap();
    let es256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &admin_claims(),
        &jsonwebtoken::EncodingKey::from_ec_der(&ec.serialize_der()),
    )
    .unwrap();
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            forge(json!({"alg": "none", "typ": "JWT"}), admin_claims(), None),
        ),
        (
            "alg None, signed",
            forge(
                json!({"alg": "None"}),
                admin_claims(),
                Some(SECRET.as_bytes()),
            ),
        ),
        (
            "alg RS256, HMAC-signed with the secret (confusion)",
            forge(
                json!({"alg": "RS256", "typ": "JWT"}),
                admin_claims(),
                Some(SECRET.as_bytes()),
            ),
        ),
        (
            "alg HS384 header on an HS256 signature",
            forge(
                json!({"alg": "HS384"}),
                admin_claims(),
                Some(SECRET.as_bytes()),
            ),
        ),
        ("ES256 with a key of its own", es256),
        (
            "expired a minute ago (leeway is 5 s)",
            forge(
                json!({"alg": "HS256"}),
                json!({"sub": "x", "exp": now() - 60, "role": "admin"}),
                Some(SECRET.as_bytes()),
            ),
        ),
        (
            "no exp",
            forge(
                json!({"alg": "HS256"}),
                json!({"sub": "x", "role": "admin"}),
                Some(SECRET.as_bytes()),
            ),
        ),
        (
            "wrong key",
            forge(
                json!({"alg": "HS256"}),
                admin_claims(),
                Some(b"not-the-secret-0123456789"),
            ),
        ),
        (
            "signature stripped",
            good.rsplit_once('.').unwrap().0.to_string() + ".",
        ),
        ("claims edited after signing", {
            let parts: Vec<&str> = good.split('.').collect();
            let c = b64(
                json!({"sub": "x", "exp": now() + 9_999_999, "role": "admin"})
                    .to_string()
                    .as_bytes(),
            );
            format!("{}.{c}.{}", parts[0], parts[2])
        }),
        ("garbage", "garbage".into()),
        ("three empty parts", "..".into()),
        ("not base64", "!!!.@@@.###".into()),
        ("a login token whose account is not there", {
            forge(
                json!({"alg": "HS256"}),
                json!({"sub": "ghost", "exp": now() + 600, "role": "admin", "login": true, "pwv": "x"}),
                Some(SECRET.as_bytes()),
            )
        }),
        ("10 kB of header", format!("{}.e30.x", b64(&[b'{'; 10_000]))),
    ];
    for (what, token) in &cases {
        let (st, body) = w.get(path, token).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(body["detail"].is_string(), "{what}: a clear error: {body}");
        // The same through ?token= (signed URLs).
        let (st, _) = w
            .call(Method::GET, &format!("{path}?token={token}"), None, None)
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{what} as ?token=");
    }
    // No token, an empty one, another scheme.
    for h in [
        "",
        "Authorization: Bearer \r\n",
        "Authorization: Basic YTpi\r\n",
    ] {
        let (st, _) = raw(&w.base, "GET", path, h).await;
        assert_eq!(st, 401, "{h:?}");
    }
    // And the server still answers the good token.
    assert_eq!(w.get(path, &good).await.0, StatusCode::OK);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_opens_nothing_but_its_scope() {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    let scope = "/api/pictures/only-this.jpg";
    // Scoped tokens from the daemon's own signer, as `gatehouse token --scope` and the signed
    // URLs make them: without a role (operator inside the scope), and with the admin role.
    let signer = gatehouse::web::auth::UrlSigner::new(&gatehouse::config::WebConfig {
        jwt_secret: Some(gatehouse::secret::Secret::new(SECRET)),
        ..Default::default()
    })
    .unwrap();
    let ttl = Duration::from_secs(600);
    let plain = signer.token("link", ttl, Some(scope)).unwrap();
    let admin = signer
        .token_with_role(
            "link",
            ttl,
            gatehouse::config::Role::Admin,
            Some(vec![scope.to_string()]),
        )
        .unwrap();
    let none = forge(
        json!({"alg": "HS256"}),
        json!({"sub": "link", "exp": now() + 600, "scope": [], "role": "admin"}),
        Some(SECRET.as_bytes()),
    );
    // Inside its scope the token works (404: no such picture, but past the token check).
    let (st, body) = w.get(scope, &plain).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("no picture"));
    let routes = routes(&w).await;
    let mut checked = 0;
    for (m, p) in &routes {
        if p == scope {
            continue;
        }
        for (what, t) in [
            ("scoped", &plain),
            ("scoped admin", &admin),
            ("empty scope", &none),
        ] {
            let r = w
                .http
                .request(m.clone(), w.url(p))
                .bearer_auth(t)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let st = r.status();
            assert!(
                !st.is_success(),
                "{what} token: {m} {p} answered {st}: {}",
                r.text().await.unwrap_or_default()
            );
            // The public routes (login, hardware registration) refuse for their own reasons;
            // every other one refuses the token.
            let public = p == "/api/auth/login"
                || p == "/api/access-control/points/register"
                || p.ends_with("/heartbeat") && p.starts_with("/api/access-control/points/");
            if !public {
                assert!(
                    st == StatusCode::UNAUTHORIZED || st == StatusCode::FORBIDDEN,
                    "{what} token: {m} {p} answered {st}"
                );
            }
            checked += 1;
        }
    }
    // The HLS route (not in the document) and tricks on the scope's prefix.
    for p in [
        "/hls/cam1/1/index.m3u8",
        "/api/pictures/only-this.jpg/../../access-control/points",
        "/api/pictures/only-this.jpg%2F..%2F..%2Faccess-control%2Fpoints",
        "/api/pictures/only-this.jpgx",
        "/api/pictures/only-this.jp",
        "//api/pictures/only-this.jpg",
    ] {
        let (st, body) = raw(
            &w.base,
            "GET",
            p,
            &format!("Authorization: Bearer {plain}\r\n"),
        )
        .await;
        assert!(st == 401 || st == 403 || st == 404, "{p}: {st} {body}");
        assert!(!body.contains("\"points\""), "{p}: {body}");
    }
    assert!(checked >= 120, "routes × tokens checked: {checked}");
    eprintln!(
        "scoped tokens: {} routes of the OpenAPI document, {checked} requests, none answered 2xx",
        routes.len()
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_serves_nothing_outside() {
    use gatehouse::sim::hikvision::{HikSim, HikSimConfig};
    use gatehouse::sim::rtsp::RtspSimConfig;
    // A camera with a stream, so pictures and HLS segments exist: each route is shown to
    // serve its own files before the tricks on its name.
    let cam = HikSim::start(HikSimConfig {
        rtsp: Some(RtspSimConfig::default()),
        ..Default::default()
    })
    .await
    .unwrap();
    let w = WebHarness::start_with_cameras(
        SimConfig::default(),
        &[format!(
            "{{ id: cam1, url: \"{}\", username: admin, password: sim-hik-pass, use_picture: false }}",
            cam.base_url()
        )],
        "",
        "",
    )
    .await;
    let token = w.login("ada").await;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let media = w.h.app().media.clone().unwrap();
    let snap = media
        .snapshot("cam1", 1, None, gatehouse::media::service::Trigger::Rest)
        .await
        .unwrap();
    let live = media.live_start("cam1", 1).await.unwrap();
    assert!(live.ready(T).await, "the stream runs");
    // The controls: a saved picture and the playlist are served.
    let (st, _) = raw(
        &w.base,
        "GET",
        &format!("/api/pictures/{}.jpg", snap.id),
        &auth,
    )
    .await;
    assert_eq!(st, 200, "the picture");
    let (st, playlist) = raw(&w.base, "GET", "/hls/cam1/1/index.m3u8", &auth).await;
    assert_eq!(st, 200, "the playlist");
    let segment = playlist
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .expect("a segment in the playlist")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let (st, _) = raw(&w.base, "GET", &format!("/hls/cam1/1/{segment}"), &auth).await;
    assert_eq!(st, 200, "a segment: {segment}");
    // A file next to the database: what a traversal would be after.
    let sentinel = "SENTINEL-b7c1e0-never-served";
    std::fs::write(w.h.dir.path().join("secret.txt"), sentinel).unwrap();
    let abs_db = w.h.db().display().to_string().replace('/', "%2F");
    let names = [
        "../secret.txt".to_string(),
        "..%2Fsecret.txt".into(),
        "%2e%2e%2fsecret.txt".into(),
        "%2E%2E/%2E%2E/secret.txt".into(),
        "..%5csecret.txt".into(),
        "....//....//secret.txt".into(),
        "%252e%252e%252fsecret.txt".into(),
        "%2Fetc%2Fpasswd".into(),
        "/etc/passwd".into(),
        abs_db,
        "secret.txt%00.jpg".into(),
        format!("{}.jpg%00", snap.id),
        format!("{segment}%00"),
        format!("..%2F1%2F{segment}"),
        "%c0%ae%c0%ae%2fsecret.txt".into(),
    ];
    // (before, after) the name on each route that takes a name or an id.
    let routes = [
        ("/api/pictures/", ""),
        ("/api/events/", "/picture"),
        ("/hls/cam1/1/", ""),
        ("/hls/", "/1/index.m3u8"),
        ("/live/", "/1"),
        ("/static/", ""),
        ("/api/device/", "/channel/1/snapshot?save=false"),
    ];
    let mut n = 0;
    for (pre, post) in routes {
        for name in &names {
            let p = format!("{pre}{name}{post}");
            let (st, body) = raw(&w.base, "GET", &p, &auth).await;
            let is_player = pre == "/live/" && st == 200;
            assert!((400..500).contains(&st) || is_player, "{p}: {st} {body}");
            assert!(!body.contains(sentinel), "{p} served the file outside");
            assert!(!body.contains("root:"), "{p} served /etc/passwd");
            assert!(!body.contains("SQLite format"), "{p} served the database");
            assert!(!body.contains("\u{FFFD}\u{FFFD}"), "{p} served binary data");
            n += 1;
        }
    }
    assert_eq!(n, names.len() * routes.len());
    eprintln!("path traversal: {n} requests, none served anything outside");
    // The player page names its camera in HTML: escaped, never markup.
    let (st, body) = raw(
        &w.base,
        "GET",
        "/live/%3Cscript%3Ealert(1)%3C%2Fscript%3E/1",
        "",
    )
    .await;
    assert_eq!(st, 200);
    assert!(!body.contains("<script>alert(1)"), "{body}");
    media.live_stop("cam1", 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_bodies_are_refused_and_others_still_served() {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    let token = w.login("ada").await;
    let healthy = || async { w.http.get(w.url("/healthz")).send().await.unwrap().status() };
    // A body one byte over the limit (1 MiB), with and without a Content-Length.
    let big = vec![b' '; (1 << 20) + 1];
    let r = w
        .http
        .post(w.url("/api/access-control/events/sync"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].is_string(), "{body}");
    // Chunked, so the server cannot tell from a Content-Length.
    let (st, body) = raw_body(
        &w.base,
        "POST",
        "/api/access-control/audit",
        &format!(
            "Authorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        ),
        &[format!("{:x}\r\n", big.len()).as_bytes(), &big, b"\r\n0\r\n\r\n"].concat(),
    )
    .await;
    assert_eq!(st, 413, "chunked: {body}");
    assert_eq!(healthy().await, StatusCode::OK);
    // One header of 1 MB: 431, or the connection closed; never served.
    let (st, _) = raw(
        &w.base,
        "GET",
        "/api/access-control/points",
        &format!(
            "Authorization: Bearer {token}\r\nX-Big: {}\r\n",
            "a".repeat(1 << 20)
        ),
    )
    .await;
    assert!(st == 431 || st == 0, "1 MB header: {st}");
    eprintln!("oversized: a 1 MB header answered {st} (0: closed)");
    assert_eq!(healthy().await, StatusCode::OK);
    // A 1 MB token in the header.
    let (st, _) = raw(
        &w.base,
        "GET",
        "/api/access-control/points",
        &format!("Authorization: Bearer {}\r\n", "a".repeat(1 << 20)),
    )
    .await;
    assert!(st == 431 || st == 0, "1 MB token: {st}");
    eprintln!("oversized: a 1 MB token answered {st} (0: closed)");
    // A thousand small headers.
    let many: String = (0..1000).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let (st, _) = raw(
        &w.base,
        "GET",
        "/api/access-control/points",
        &format!("Authorization: Bearer {token}\r\n{many}"),
    )
    .await;
    assert!(st == 431 || st == 0, "1000 headers: {st}");
    eprintln!("oversized: 1000 headers answered {st} (0: closed)");
    // A 100 kB request line (URI).
    let (st, _) = raw(&w.base, "GET", &format!("/{}", "a".repeat(100_000)), "").await;
    assert!(
        st == 414 || st == 431 || st == 400 || st == 0,
        "100 kB URI: {st}"
    );
    eprintln!("oversized: a 100 kB URI answered {st} (0: closed)");
    assert_eq!(healthy().await, StatusCode::OK);
    assert_eq!(
        w.get("/api/access-control/points", &token).await.0,
        StatusCode::OK
    );
    w.stop().await;
}

/// Reads until the server closes the connection; how long that took, or None within `limit`.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_do_not_starve_others() {
    // Regression: `axum::serve` set no timer, so hyper's header read timeout never ran and a
    // client that never finished its headers held its connection forever.
    let w = WebHarness::start(
        SimConfig::default(),
        "  header_read_timeout: 500ms\n  body_read_timeout: 500ms\n",
        "",
    )
    .await;
    let addr = w.base.strip_prefix("http://").unwrap().to_string();
    // 200 connections that send half a request line and stop (slowloris).
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTT").await.unwrap();
        idle.push(s);
    }
    // A connection that sends nothing at all.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Meanwhile the others are served at once.
    for _ in 0..20 {
        let r = tokio::time::timeout(Duration::from_secs(5), w.http.get(w.url("/healthz")).send())
            .await
            .expect("a normal client is served while slow ones wait")
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let took = closed_within(&mut silent, Duration::from_secs(10))
        .await
        .expect("a silent connection is closed");
    assert!(took < Duration::from_secs(5), "{took:?}");
    eprintln!("slow clients: a silent connection closed after {took:?}");
    for (i, s) in idle.iter_mut().enumerate() {
        closed_within(s, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("slow connection {i} still open"));
    }
    // One that dribbles a byte every 100 ms: the timeout covers the whole head, not each
    // byte, so it is cut off long before its 7 s of headers end.
    let mut dribble = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let line =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let start = tokio::time::Instant::now();
    for b in line {
        if dribble.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "dribbled for {took:?}");
    eprintln!("slow clients: a dribbler was cut off after {took:?} of writing");
    closed_within(&mut dribble, Duration::from_secs(10))
        .await
        .expect("the dribbling connection is closed");
    // A client that finishes in time is answered.
    let (st, body) = raw(&w.base, "GET", "/healthz", "").await;
    assert_eq!((st, body.as_str()), (200, "ok"));
    // A kept-alive connection that goes quiet after its answer is closed too (the next head
    // is late), after the answer was read in full.
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"ok") {
        let n = kept.read(&mut buf).await.unwrap();
        assert!(n > 0, "answered before closing");
        got.extend_from_slice(&buf[..n]);
    }
    let took = closed_within(&mut kept, Duration::from_secs(10))
        .await
        .expect("an idle kept-alive connection is closed");
    eprintln!("slow clients: an idle kept-alive connection closed after {took:?}");
    // Headers on time, then a body that stops short: answered and closed, not held.
    let token = w.login("ada").await;
    let mut body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    body.write_all(
        format!(
            "POST /api/access-control/audit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"action\":"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let start = tokio::time::Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), body.read_to_end(&mut answer)).await;
    let took = start.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a body that stops short is answered 408 and closed: {answer:?} after {took:?}"
    );
    assert!(answer.contains("detail"), "{answer}");
    // And the API document says so.
    let (_, api) = w.call(Method::GET, "/api/openapi.json", None, None).await;
    assert!(
        api["paths"]["/api/access-control/audit"]["post"]["responses"]["408"].is_object(),
        "408 is documented"
    );
    eprintln!("slow clients: a body that stopped short was answered 408 after {took:?}");
    assert_eq!(
        w.get("/api/access-control/points", &token).await.0,
        StatusCode::OK
    );
    w.stop().await;
}

/// File descriptors this process has open (the test's clients and the daemon's server side).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_connection_flood_takes_at_most_max_connections() {
    let (logs, _guard, rt) = common::logs::capture("gatehouse=info");
    rt.block_on(async {
        let w = WebHarness::start(
            SimConfig::default(),
            "  header_read_timeout: 1s\n  max_connections: 20\n",
            "",
        )
        .await;
        let addr = w.base.strip_prefix("http://").unwrap().to_string();
        let before = open_fds();
        // 60 clients that connect and say nothing: 60 descriptors here, and the server's.
        let mut flood = Vec::new();
        for _ in 0..60 {
            flood.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        }
        wait_for("the server took its 20", T, || open_fds() >= before + 80).await;
        // Give it the chance to take more: it does not.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let taken = open_fds() - before - 60;
        assert!(taken <= 40, "the server holds {taken} connections (max 20)");
        eprintln!("connection flood: 60 silent clients, the server holds {taken} descriptors");
        // A real client waits for a slot (the silent ones are closed after 1 s), then is served.
        let start = tokio::time::Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            w.http.get(w.url("/healthz")).send(),
        )
        .await
        .expect("served once slots free up")
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        eprintln!(
            "connection flood: a normal client was served after {:?}",
            start.elapsed()
        );
        drop(flood);
        w.stop().await;
    });
    assert!(
        logs.text().contains("every connection slot is taken"),
        "a clear log line"
    );
}

#[test]
fn web_timeouts_are_checked() {
    for (key, bad) in [("max_connections", "0"), ("max_connections", "10001")] {
        let text = format!(
            "version: 1\nsources:\n  net2:\n    url: http://127.0.0.1:1\n    username: u\n    password: p\n    client_id: c\nweb:\n  auth: none\n  {key}: {bad}\n"
        );
        let e = gatehouse::config::load_str(&text, &|_| None).unwrap_err();
        assert!(e.to_string().contains("web.max_connections"), "{e}");
    }
    for key in ["header_read_timeout", "body_read_timeout"] {
        for (v, ok) in [
            ("50ms", false),
            ("100ms", true),
            ("30s", true),
            ("11m", false),
        ] {
            let text = format!(
                "version: 1\nsources:\n  net2:\n    url: http://127.0.0.1:1\n    username: u\n    password: p\n    client_id: c\nweb:\n  auth: none\n  {key}: {v}\n"
            );
            let r = gatehouse::config::load_str(&text, &|_| None);
            assert_eq!(r.is_ok(), ok, "{key} {v}: {:?}", r.err());
            if let Err(e) = r {
                assert!(e.to_string().contains(&format!("web.{key}")), "{e}");
            }
        }
    }
}

/// `mosquitto_pub -f`: any size (the test's own clients cap packets).
fn mosquitto_pub(port: u16, topic: &str, payload: &[u8]) -> bool {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), payload).unwrap();
    std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-f",
        ])
        .arg(f.path())
        .status()
        .unwrap()
        .success()
}

#[test]
fn mqtt_commands_at_the_brokers_maximum_size_are_refused() {
    const LIMIT: usize = 1 << 20;
    let (logs, _guard, rt) = common::logs::capture("gatehouse=info");
    rt.block_on(async {
        let broker = Broker::start_with(&format!("max_packet_size {LIMIT}\n"));
        let rec = Recorder::start(broker.port, "rec", "gatehouse/command/result", false).await;
        // A camera, so the snapshot topics are subscribed.
        let cam = gatehouse::sim::hikvision::HikSim::start(Default::default())
            .await
            .unwrap();
        let mut h = common::Harness::new(
            SimConfig::default(),
            &format!(
                "  hikvision:\n    - {{ id: cam1, url: \"{}\", username: admin, password: sim-hik-pass }}\n",
                cam.base_url()
            ),
        )
        .await;
        h.top = format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gh-sec-{}\nweb: {{ bind: \"127.0.0.1:0\", jwt_secret: {SECRET} }}\n",
            broker.port,
            rand::random::<u32>()
        );
        h.start().await;
        wait_for("door status synced", T, || {
            h.query_i64("SELECT count(*) FROM door_state") >= 3
        })
        .await;
        // Give the subscription a moment to be in place: wait for a small rejected command.
        let door = "gatehouse/door/6612642/set";
        wait_for("subscribed", T, || {
            let _ = std::process::Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", door, "-m", "FLY"])
                .status();
            rec.all().iter().any(|m| m.text().contains("unknown command"))
        })
        .await;
        // Valid JSON padded to the broker's maximum (the packet's header and topic take the
        // rest), on the door and the snapshot topics.
        let body = |rid: &str, topic: &str| {
            let cmd = format!(r#"{{"action":"open","request_id":"{rid}","code":"PAD"}}"#);
            let room = LIMIT - 5 - 2 - topic.len() - 2 - 1 - cmd.len();
            cmd.replace("PAD", &"7".repeat(room))
        };
        let snap = "gatehouse/camera/cam1/snapshot/set";
        for topic in [door, snap] {
            let p = body("huge", topic);
            assert!(mosquitto_pub(broker.port, topic, p.as_bytes()), "the broker takes it");
        }
        // Over the broker's maximum: the broker refuses it, gatehouse never sees it.
        let over = vec![b' '; LIMIT + 10];
        let _ = mosquitto_pub(broker.port, door, &over);
        wait_for("both refused", T, || {
            rec.all()
                .iter()
                .filter(|m| m.text().contains("command payload too large"))
                .count()
                >= 2
        })
        .await;
        for m in rec.all() {
            assert!(m.payload.len() < 4096, "a result echoes the payload: {} bytes", m.payload.len());
            assert!(!m.text().contains("huge"), "{}", m.text());
        }
        assert!(h.sim.commands().is_empty(), "no door command was sent");
        // The daemon still works: a normal command opens the door.
        assert!(mosquitto_pub(
            broker.port,
            door,
            br#"{"action":"open","request_id":"after-1"}"#
        ));
        wait_for("the next command is confirmed", T, || {
            rec.all()
                .iter()
                .any(|m| m.json()["request_id"] == "after-1" && m.json()["status"] == "confirmed")
        })
        .await;
        assert_eq!(h.sim.commands().len(), 1);
        h.stop().await;
        let audited = h.query_i64(
            "SELECT count(*) FROM audit WHERE status = 'rejected' AND length(detail) < 200 AND detail LIKE '%too large%'",
        );
        assert!(audited >= 2, "audited: {audited}");
        let longest = h.query_i64("SELECT max(length(detail) + length(request_id)) FROM audit");
        assert!(longest < 1000, "an audit row carries the payload: {longest}");
    });
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("command payload too large"))
        .expect("a clear log line");
    assert!(line.contains("MQTT command rejected"), "{line}");
    assert!(
        line.len() < 1000,
        "the log line carries the payload: {} bytes",
        line.len()
    );
    assert!(
        !text.contains(&"7".repeat(100)),
        "the payload reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_tls_needs_tls12_and_a_trusted_certificate() {
    use gatehouse::config::TlsConfig;
    use gatehouse::sources::tls::client_config;
    let _ = rustls::crypto::ring::default_provider().install_default();
    // What the client offers, read from its ClientHello: TLS 1.3 and 1.2, nothing older.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hello = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 5];
        tcp.read_exact(&mut head).await.unwrap();
        let mut body = vec![0u8; u16::from_be_bytes([head[3], head[4]]) as usize];
        tcp.read_exact(&mut body).await.unwrap();
        (head, body)
    });
    let c = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        client_config(&TlsConfig::default()).unwrap(),
    ));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connecting = tokio::spawn(async move { c.connect(name, tcp).await.is_ok() });
    let (head, b) = hello.await.unwrap();
    assert!(!connecting.await.unwrap(), "no handshake without a server");
    assert_eq!(head[0], 0x16, "a handshake record");
    assert_eq!(b[0], 1, "a ClientHello");
    assert_eq!(
        &b[4..6],
        &[3, 3],
        "legacy_version is TLS 1.2 (1.3 is negotiated by extension)"
    );
    // Past the random, the session id, the cipher suites and the compression methods.
    let mut i = 6 + 32;
    i += 1 + b[i] as usize;
    i += 2 + u16::from_be_bytes([b[i], b[i + 1]]) as usize;
    i += 1 + b[i] as usize;
    let end = i + 2 + u16::from_be_bytes([b[i], b[i + 1]]) as usize;
    i += 2;
    let mut versions = None;
    while i + 4 <= end {
        let ty = u16::from_be_bytes([b[i], b[i + 1]]);
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if ty == 0x002b {
            let d = &b[i + 5..i + 4 + len];
            versions = Some(
                d.chunks(2)
                    .map(|v| u16::from_be_bytes([v[0], v[1]]))
                    .collect::<Vec<_>>(),
            );
        }
        i += 4 + len;
    }
    let mut versions = versions.expect("a supported_versions extension");
    versions.sort();
    assert_eq!(versions, vec![0x0303, 0x0304], "TLS 1.2 and 1.3 only");
    // A server with a self-signed certificate, as cameras and Net2 have.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = cert.der().to_vec();
    let server = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls::pki_types::CertificateDer::from(der.clone())],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let a = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = a.accept(tcp).await {
                    let _ = s.write_all(b"hello").await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    let try_with = |cfg: TlsConfig| async move {
        let c = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config(&cfg)?));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut s = c.connect(name, tcp).await.map_err(|e| {
            gatehouse::error::Error::new(gatehouse::error::ErrorKind::Auth, e.to_string())
        })?;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        Ok::<_, gatehouse::error::Error>(out)
    };
    let e = try_with(TlsConfig::default()).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let wrong_pin = TlsConfig {
        pin_sha256: Some("00".repeat(32)),
        ..Default::default()
    };
    assert!(try_with(wrong_pin).await.is_err());
    let pin = TlsConfig {
        pin_sha256: Some(gatehouse::sources::tls::fingerprint(&der)),
        ..Default::default()
    };
    assert_eq!(try_with(pin).await.unwrap(), "hello");
}

/// `needle` as a whole token (not inside a longer number such as a timestamp or a port).
fn contains_token(hay: &[u8], needle: &[u8]) -> bool {
    let word = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    hay.windows(needle.len()).enumerate().any(|(i, w)| {
        w == needle
            && !word(i.checked_sub(1).and_then(|j| hay.get(j)))
            && !word(hay.get(i + needle.len()))
    })
}

/// Every secret set at once (Net2 password, its users' PINs and phone numbers, the JWT
/// secret, the hardware key, the web accounts' passwords, the MQTT password, the GATE and
/// Apptive tokens, a door code) and traffic that fails (wrong passwords, keys, tokens and
/// codes, a code sent as a number): none of them in the logs at trace level, any MQTT
/// message, the database and its WAL, or any GET answer of the API.
#[test]
fn no_secret_in_logs_mqtt_database_or_rest_answers() {
    use gatehouse::sim::apptive::{ApptiveSim, ApptiveSimConfig};
    use gatehouse::sim::gate::{GateSim, GateSimConfig, SIM_TOKEN};
    use gatehouse::sim::net2::SimEvent;
    const HW_KEY: &str = "hw-Key-5ecret-0123456789";
    const MQTT_PW: &str = "mqtt-Pa55word-e1c9";
    const DOOR_CODE: &str = "Zq7-door-code";
    const WRONG_CODE: &str = "24681357";
    const CAM_PW: &str = "Cam-S3cret-9f1";
    const CAM_WRONG: &str = "Cam-Wr0ng-7c2";
    let users: Vec<Value> = serde_json::from_str(include_str!("fixtures/net2/users.json")).unwrap();
    let mut secrets: Vec<String> = vec![
        SimConfig::default().password,
        SECRET.into(),
        HW_KEY.into(),
        MQTT_PW.into(),
        DOOR_CODE.into(),
        WRONG_CODE.into(),
        SIM_TOKEN.into(),
        "sim-apptive-token".into(),
        "ada-password".into(),
        "otto-password".into(),
        "Wrong-ada-Passw0rd".into(),
        "wrong-hw-key-0123456789".into(),
        "86420975".into(),
        CAM_PW.into(),
        CAM_WRONG.into(),
    ];
    for u in &users {
        secrets.push(u["pin"].as_str().unwrap().into());
        secrets.push(u["telephone"].as_str().unwrap().into());
    }
    let (logs, _guard, rt) = common::logs::capture("trace");
    let (msgs, db, wal, answers) = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let broker = Broker::start();
        let rec = Recorder::start(broker.port, "rec-all", "#", false).await;
        let gate = GateSim::start(GateSimConfig::default()).await.unwrap();
        let apptive = ApptiveSim::start(ApptiveSimConfig::default()).await.unwrap();
        assert_eq!(apptive.token(), "sim-apptive-token");
        // A camera with its password, and one configured with a wrong one.
        let cam = gatehouse::sim::hikvision::HikSim::start(
            gatehouse::sim::hikvision::HikSimConfig {
                password: CAM_PW.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut h = common::Harness::new(
            SimConfig::default(),
            &format!(
                "  gate:\n    url: {}\n    token: {SIM_TOKEN}\n    poll_interval: 200ms\n  hikvision:\n    - {{ id: cam1, url: \"{url}\", username: admin, password: \"{CAM_PW}\" }}\n    - {{ id: cam2, url: \"{url}\", username: admin, password: \"{CAM_WRONG}\" }}\n",
                gate.base_url(),
                url = cam.base_url(),
            ),
        )
        .await;
        let top = format!(
            "media: {{ snapshot_timeout: 2s }}\nmqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gh-secrets-{}\n  username: gatehouse\n  password: {MQTT_PW}\nweb:\n  bind: 127.0.0.1:0\n  jwt_secret: {SECRET}\n  hardware_key: {HW_KEY}\n{}apptive:\n  url: {}\n  token: sim-apptive-token\n  timeout: 1s\n  readers:\n    - {{ id: front-qr, door: 6612642, door_id: door_123 }}\n",
            broker.port,
            rand::random::<u32>(),
            common::web::users_yaml(),
            apptive.base_url(),
        );
        let text = format!(
            "{}{top}",
            common::config_text(&h.sim, &h.db(), &h.extra, "").replace(
                "  6203980: {}\n",
                &format!("  6203980: {{ require_code: \"{DOOR_CODE}\" }}\n")
            )
        );
        let cfg = gatehouse::config::load_str(&text, &|_| None).expect("config");
        let app = gatehouse::app::App::start(cfg, None, None).await.unwrap();
        let base = format!("http://{}", app.web_addr.unwrap());
        h.app = Some(app);
        let w = WebHarness {
            h,
            base,
            http: reqwest::Client::new(),
        };
        wait_for("live socket", T, || w.h.sim.websocket_count() == 1).await;
        for user in [8, 12, 19] {
            w.h.sim
                .push_event(SimEvent::new(26, 6612642).user(user).token_type(1));
        }
        let mut answers = String::new();
        // Failures: wrong and right passwords, keys, tokens.
        for (u, p) in [("ada", "Wrong-ada-Passw0rd"), ("nobody", "ada-password")] {
            let (st, _) = w
                .call(
                    Method::POST,
                    "/api/auth/login",
                    None,
                    Some(json!({"username": u, "password": p})),
                )
                .await;
            assert_eq!(st, StatusCode::UNAUTHORIZED);
        }
        // A password sent as a number (a PIN-like password) is refused without quoting it.
        let (st, body) = w
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"username": "ada", "password": 86420975u64})),
            )
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
        answers.push_str(&format!("{body}\n"));
        let token = w.login("ada").await;
        let _ = w.login("otto").await;
        for key in ["wrong-hw-key-0123456789", HW_KEY] {
            let r = w
                .http
                .post(w.url("/api/access-control/points/register"))
                .header("X-API-Key", key)
                .json(&json!({"name": "x"}))
                .send()
                .await
                .unwrap();
            assert!(!r.status().is_server_error());
        }
        let forged = forge(json!({"alg": "HS256"}), admin_claims(), Some(b"guess-0123456789"));
        assert_eq!(
            w.get("/api/access-control/points", &forged).await.0,
            StatusCode::UNAUTHORIZED
        );
        // Door codes: wrong (as text and as a number), right, over REST and MQTT.
        wait_for("door status synced", T, || {
            w.h.query_i64("SELECT count(*) FROM door_state") >= 3
        })
        .await;
        let door = "gatehouse/door/6203980/set";
        for p in [
            format!(r#"{{"action":"open","request_id":"c1","code":"{WRONG_CODE}"}}"#),
            format!(r#"{{"action":"open","request_id":"c2","code":{WRONG_CODE}}}"#),
            format!(r#"{{"action":"open","request_id":"c3","code":"{DOOR_CODE}"}}"#),
        ] {
            assert!(mosquitto_pub(broker.port, door, p.as_bytes()));
        }
        // c2 may come back under an id of gatehouse's own if its JSON is refused.
        wait_for("three answers", T, || {
            let results: Vec<Value> = rec
                .all()
                .iter()
                .filter(|m| m.topic.ends_with("command/result"))
                .map(|m| m.json())
                .filter(|j| j["requester"] == "mqtt:door/6203980/set")
                .collect();
            ["c1", "c3"]
                .iter()
                .all(|rid| results.iter().any(|j| j["request_id"] == *rid))
                && results
                    .iter()
                    .filter(|j| j["status"] == "rejected")
                    .count()
                    >= 2
        })
        .await;
        for code in [json!(WRONG_CODE), json!(WRONG_CODE.parse::<u64>().unwrap())] {
            let (st, body) = w
                .call(
                    Method::POST,
                    "/api/access-control/points/6203980/open",
                    Some(&token),
                    Some(json!({ "code": code })),
                )
                .await;
            assert!(st.is_client_error(), "{code}: {st} {body}");
            answers.push_str(&format!("{body}\n"));
        }
        wait_for("events stored", T, || {
            w.h.query_i64("SELECT count(*) FROM events WHERE user_id IN (8, 12, 19)") >= 3
        })
        .await;
        // A picture from each camera: one works, one is refused its password.
        for cam in ["cam1", "cam2"] {
            let (st, body) = w
                .call(
                    Method::GET,
                    &format!("/api/device/{cam}/channel/1/snapshot"),
                    Some(&token),
                    None,
                )
                .await;
            answers.push_str(&format!("{cam} snapshot {st} {body}\n"));
            assert_eq!(st.is_success(), cam == "cam1", "{cam}: {st} {body}");
        }
        // Every GET route's answer.
        for (m, p) in routes(&w).await {
            if m != Method::GET || p.contains("/stream") {
                continue;
            }
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                w.http.get(w.url(&p)).bearer_auth(&token).send(),
            )
            .await;
            if let Ok(Ok(r)) = r {
                answers.push_str(&format!("{p}\n{}\n", r.text().await.unwrap_or_default()));
            }
        }
        answers.push_str(&w.call(Method::GET, "/api/openapi.json", None, None).await.1.to_string());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let msgs = rec.all();
        let db_path = w.h.db();
        // Stopped, not dropped: the database goes with the harness's directory.
        let mut w = w;
        w.h.stop().await;
        let db = std::fs::read(&db_path).unwrap();
        let wal = std::fs::read(db_path.with_extension("db-wal")).unwrap_or_default();
        assert!(
            msgs.iter().any(|m| m.topic.ends_with("command/result")),
            "MQTT was recorded"
        );
        drop(w);
        (msgs, db, wal, answers)
    });
    let logs = logs.text();
    assert!(
        logs.contains("Net2 user names refreshed"),
        "the user list was fetched"
    );
    assert!(
        answers.contains("/api/access-control/users"),
        "the GET routes answered"
    );
    // What gatehouse published: the test's own commands (`…/set`) carry codes on purpose.
    let mqtt: Vec<u8> = msgs
        .iter()
        .filter(|m| !m.topic.ends_with("/set"))
        .flat_map(|m| [m.topic.as_bytes(), b" ", &m.payload, b"\n"].concat())
        .collect();
    for s in &secrets {
        let n = s.as_bytes();
        let hit = logs.lines().find(|l| contains_token(l.as_bytes(), n));
        assert!(hit.is_none(), "{s:?} is in the logs: {hit:?}");
        assert!(!contains_token(&mqtt, n), "{s:?} is in an MQTT message");
        assert!(!contains_token(&db, n), "{s:?} is in the database");
        assert!(!contains_token(&wal, n), "{s:?} is in the WAL");
        let hit = answers.lines().find(|l| contains_token(l.as_bytes(), n));
        assert!(hit.is_none(), "{s:?} is in a REST answer: {hit:?}");
    }
}
