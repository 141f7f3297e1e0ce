//! Live events over Server-Sent Events (resumable with Last-Event-ID), Prometheus metrics and
//! rate limits — against the running daemon and the Net2 simulator.

mod common;

use common::wait_for;
use common::web::WebHarness;
use gatehouse::sim::net2::{SimConfig, SimEvent};
use reqwest::{Method, StatusCode};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// An open SSE connection and what it delivered: (id, event JSON) per event.
struct Sse {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(i64, serde_json::Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sse {
    async fn open(w: &WebHarness, token: &str, last_id: Option<i64>) -> Sse {
        let mut r = w.http.get(w.url("/api/events/stream")).bearer_auth(token);
        if let Some(id) = last_id {
            r = r.header("Last-Event-ID", id.to_string());
        }
        let res = r.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = seen.clone();
        let task = tokio::spawn(async move {
            let mut res = res;
            let mut buf = String::new();
            while let Ok(Some(chunk)) = res.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let (mut id, mut data) = (None, None);
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                            id = v.trim().parse::<i64>().ok();
                        }
                        if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:"))
                        {
                            data = serde_json::from_str(v).ok();
                        }
                    }
                    if let (Some(id), Some(d)) = (id, data) {
                        out.lock().unwrap().push((id, d));
                    }
                }
            }
        });
        Sse { seen, task }
    }

    fn ids(&self) -> Vec<i64> {
        self.seen.lock().unwrap().iter().map(|(i, _)| *i).collect()
    }

    fn close(self) -> Vec<(i64, serde_json::Value)> {
        self.task.abort();
        self.seen.lock().unwrap().clone()
    }
}

fn burst(sim: &gatehouse::sim::net2::Net2Sim, n: usize, user: i64) {
    // Access granted at one door, all in the same second.
    let now = sim.local_now();
    sim.push_events(
        (0..n)
            .map(|_| SimEvent::new(20, 6203980).user(user).at(now))
            .collect(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_with_last_event_id_misses_nothing() {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    let token = w.login("vera").await;
    let db_max = |w: &WebHarness| w.h.query_i64("SELECT coalesce(max(seq), 0) FROM events");
    wait_for("Net2 live", T, || {
        w.h.app()
            .bus
            .health("net2")
            .is_some_and(|h| h.ready && h.live)
    })
    .await;
    let start = db_max(&w);
    let first = Sse::open(&w, &token, None).await;
    burst(&w.h.sim, 30, 1);
    wait_for("30 events streamed", T, || first.ids().len() >= 30).await;
    let got = first.close();
    let last = got.last().unwrap().0;
    assert!(
        got.iter().all(|(id, _)| *id > start),
        "only new events without Last-Event-ID"
    );
    // The JSON is the MQTT event payload: seq = id.
    assert_eq!(got[0].1["seq"].as_i64(), Some(got[0].0));
    assert_eq!(got[0].1["event_type"], "access_granted");

    // Events while nobody listens, then a reconnect from the last id: exactly the rest.
    burst(&w.h.sim, 40, 2);
    wait_for("the second burst is stored", T, || {
        w.h.query_i64("SELECT count(*) FROM events WHERE kind = 'access_granted'") >= 70
    })
    .await;
    let want: Vec<i64> = {
        let c = rusqlite::Connection::open(w.h.db()).unwrap();
        let mut st = c
            .prepare("SELECT seq FROM events WHERE seq > ?1 ORDER BY seq")
            .unwrap();
        st.query_map([last], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert!(want.len() >= 40, "{want:?}");
    let again = Sse::open(&w, &token, Some(last)).await;
    wait_for("the missed events", T, || again.ids().len() >= want.len()).await;
    // Then live ones keep coming on the same connection.
    burst(&w.h.sim, 5, 3);
    wait_for("live after the catch-up", T, || {
        again.ids().len() >= want.len() + 5
    })
    .await;
    let ids = again.ids();
    assert_eq!(
        &ids[..want.len()],
        &want[..],
        "in order, none missing, none twice"
    );
    assert!(
        ids.windows(2).all(|p| p[0] < p[1]),
        "strictly increasing: {ids:?}"
    );
    again.close();

    // Without a token: 401; a bad Last-Event-ID: 400.
    let (st, _) = w.call(Method::GET, "/api/events/stream", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let res = w
        .http
        .get(w.url("/api/events/stream"))
        .bearer_auth(&token)
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // An open stream does not hold up the shutdown.
    let open = Sse::open(&w, &token, None).await;
    tokio::time::timeout(Duration::from_secs(15), w.stop())
        .await
        .expect("the daemon stops with a stream open");
    open.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_counts_what_was_stored_and_times_the_routes() {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    let token = w.login("vera").await;
    burst(&w.h.sim, 12, 1);
    wait_for("stored", T, || {
        w.h.query_i64("SELECT count(*) FROM events WHERE kind = 'access_granted'") >= 12
    })
    .await;
    let (st, _) = w.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "metrics need a token");
    let res = w
        .http
        .get(w.url("/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let stored = w
        .h
        .query_i64("SELECT count(*) FROM events WHERE source = 'net2' AND kind = 'access_granted'");
    assert_eq!(
        value("gatehouse_events_stored_total{source=\"net2\",kind=\"access_granted\"}"),
        stored as f64
    );
    assert_eq!(value("gatehouse_source_up{source=\"net2\"}"), 1.0);
    assert!(value("process_resident_memory_bytes") > 1e6);
    // The leak gauges a soak samples: the daemon's own tasks (Net2, MQTT, web…), files, threads.
    assert!(value("gatehouse_tokio_alive_tasks") >= 5.0);
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_threads") >= 2.0);
    // The login a moment ago was timed under its route template.
    assert!(
        value(
            "gatehouse_http_request_duration_seconds_count{route=\"/api/auth/login\",method=\"POST\"}"
        ) >= 1.0
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_gets_100_requests_a_minute_and_is_told_how_many_are_left() {
    let w = WebHarness::start(SimConfig::default(), "", "").await;
    let vera = w.login("vera").await;
    let otto = w.login("otto").await;
    let path = "/api/events/0/picture";
    let mut remaining = Vec::new();
    for _ in 0..100 {
        let res = w
            .http
            .get(w.url(path))
            .bearer_auth(&vera)
            .send()
            .await
            .unwrap();
        assert_ne!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()["x-ratelimit-limit"], "100");
        let reset: u64 = res.headers()["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(reset > now && reset <= now + 61, "reset {reset} now {now}");
        remaining.push(
            res.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
    }
    assert_eq!(remaining, (0..100).rev().collect::<Vec<_>>());
    let res = w
        .http
        .get(w.url(path))
        .bearer_auth(&vera)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("rate limit"),
        "{body}"
    );
    // Another user has their own budget.
    let res = w
        .http
        .get(w.url(path))
        .bearer_auth(&otto)
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["x-ratelimit-remaining"], "99");
    w.stop().await;
}
