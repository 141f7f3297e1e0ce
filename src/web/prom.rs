//! `GET /metrics`: Prometheus text format (0.0.4), for a scraper holding a viewer token
//! (`gatehouse token --role viewer`). Written by hand: a few families, no registry needed.
//!
//! - `gatehouse_events_stored_total{source,kind}`: events stored since start;
//! - `gatehouse_mqtt_outbox_depth`: events the broker has not acknowledged yet;
//! - `gatehouse_source_up{source}` / `gatehouse_source_live{source}`: each source's health;
//! - `gatehouse_http_request_duration_seconds{route,method}`: a histogram of answer times by
//!   route template (never the raw path: ids would make unbounded series);
//! - `process_resident_memory_bytes`, `gatehouse_build_info{version}`.

use super::{Caller, Detail, Web};
use crate::config::Role;
use axum::Extension;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// HTTP answer times by (route template, method).
#[derive(Clone, Default)]
pub struct HttpStats {
    by_route: Arc<Mutex<BTreeMap<(String, String), Histogram>>>,
}

impl HttpStats {
    fn observe(&self, route: String, method: String, secs: f64) {
        let Ok(mut m) = self.by_route.lock() else {
            return;
        };
        let h = m.entry((route, method)).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }
}

/// Times every answer (the layer over the whole router).
pub(super) async fn observe(State(w): State<Web>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    w.http_stats
        .observe(route, method, start.elapsed().as_secs_f64());
    res
}

/// Label values escaped as the text format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A number field of /proc/self/status (its first word after the name).
fn proc_status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `VmRSS` (kB in /proc; page sizes differ: a Raspberry Pi 5 kernel uses 16 KiB pages).
fn rss_bytes() -> Option<u64> {
    Some(proc_status_field("VmRSS:")? * 1024)
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 401, body = Detail), (status = 403, body = Detail)))]
pub(super) async fn metrics(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
) -> Response {
    if let Err(r) = caller.need(Role::Viewer) {
        return r;
    }
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP gatehouse_build_info The running version.\n# TYPE gatehouse_build_info gauge\ngatehouse_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "# HELP gatehouse_events_stored_total Events stored since start.\n# TYPE gatehouse_events_stored_total counter"
    );
    for ((source, kind), n) in w.store.stored_counts() {
        let _ = writeln!(
            out,
            "gatehouse_events_stored_total{{source=\"{}\",kind=\"{}\"}} {n}",
            esc(&source),
            esc(&kind)
        );
    }
    let depth = w
        .store
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM mqtt_outbox WHERE acked_at IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .await;
    if let Ok(depth) = depth {
        let _ = writeln!(
            out,
            "# HELP gatehouse_mqtt_outbox_depth Stored events the MQTT broker has not acknowledged.\n# TYPE gatehouse_mqtt_outbox_depth gauge\ngatehouse_mqtt_outbox_depth {depth}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_source_up The source reaches its device (1) or not (0).\n# TYPE gatehouse_source_up gauge"
    );
    let healths = w.bus.healths();
    for h in &healths {
        let _ = writeln!(
            out,
            "gatehouse_source_up{{source=\"{}\"}} {}",
            esc(&h.source),
            u8::from(h.online)
        );
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_source_live The source's live feed (SignalR, alert stream) is connected.\n# TYPE gatehouse_source_live gauge"
    );
    for h in &healths {
        let _ = writeln!(
            out,
            "gatehouse_source_live{{source=\"{}\"}} {}",
            esc(&h.source),
            u8::from(h.live)
        );
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_http_request_duration_seconds Time to answer, by route template.\n# TYPE gatehouse_http_request_duration_seconds histogram"
    );
    if let Ok(m) = w.http_stats.by_route.lock() {
        for ((route, method), h) in m.iter() {
            let labels = format!("route=\"{}\",method=\"{}\"", esc(route), esc(method));
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "gatehouse_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "gatehouse_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\ngatehouse_http_request_duration_seconds_sum{{{labels}}} {}\ngatehouse_http_request_duration_seconds_count{{{labels}}} {}",
                h.count, h.sum, h.count
            );
        }
    }
    if let Some(rss) = rss_bytes() {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
        );
    }
    // What a soak watches for leaks (scripts/soak.sh): tasks, open files, threads.
    let _ = writeln!(
        out,
        "# HELP gatehouse_tokio_alive_tasks Tasks alive in the runtime.\n# TYPE gatehouse_tokio_alive_tasks gauge\ngatehouse_tokio_alive_tasks {}",
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    );
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            fds.count()
        );
    }
    if let Some(n) = proc_status_field("Threads:") {
        let _ = writeln!(
            out,
            "# HELP process_threads Threads.\n# TYPE process_threads gauge\nprocess_threads {n}"
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_labels_escaped() {
        let s = HttpStats::default();
        s.observe("/a".into(), "GET".into(), 0.003);
        s.observe("/a".into(), "GET".into(), 0.3);
        let m = s.by_route.lock().unwrap();
        let h = &m[&("/a".to_string(), "GET".to_string())];
        assert_eq!(h.counts[0], 0); // ≤ 1 ms
        assert_eq!(h.counts[1], 1); // ≤ 5 ms
        assert_eq!(h.counts[7], 2); // ≤ 500 ms
        assert_eq!(h.count, 2);
        assert_eq!(esc("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
