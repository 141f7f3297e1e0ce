//! Shared test harness: a Net2 simulator, a daemon configured against it, and helpers that
//! wait for a condition (bounded) instead of sleeping.
#![allow(dead_code)]

pub mod broker;
pub mod demo;
pub mod ha;
pub mod hls;
pub mod logs;
pub mod rtsp;
pub mod web;

use gatehouse::app::App;
use gatehouse::config::{self, Config};
use gatehouse::sim::net2::{Net2Sim, SimConfig};
use std::path::PathBuf;
use std::time::Duration;

pub struct Harness {
    pub sim: Net2Sim,
    pub dir: tempfile::TempDir,
    pub app: Option<App>,
    pub extra: String,
    /// Extra top-level YAML (e.g. an `mqtt:` section).
    pub top: String,
    /// The daemon's wall clock (emergency expiry): `advance` it instead of waiting.
    pub clock: std::sync::Arc<gatehouse::clock::OffsetClock>,
}

pub fn config_text(sim: &Net2Sim, db: &std::path::Path, extra_net2: &str, doors: &str) -> String {
    let d = SimConfig::default();
    format!(
        "version: 1\nstorage:\n  path: {db}\nsources:\n  net2:\n    url: {url}\n    username: {u}\n    password: {p}\n    client_id: {c}\n    poll_interval: 300ms\n    safety_poll_interval: 2s\n    door_status_interval: 500ms\n    door_status_safety_interval: 2s\n    initial_backfill: 30d\n{extra_net2}doors:\n  7242929: {{ mode: momentary }}\n  6612642: {{ open_time_ms: 800 }}\n  6203980: {{}}\n{doors}",
        db = db.display(),
        url = sim.base_url(),
        u = d.username,
        p = d.password,
        c = d.client_id,
    )
}

impl Harness {
    pub async fn new(sim_cfg: SimConfig, extra_net2: &str) -> Harness {
        // Logs are shown for failing tests only.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("GATEHOUSE_LOG").unwrap_or_else(|_| "gatehouse=debug".into()),
            )
            .with_test_writer()
            .try_init();
        let sim = Net2Sim::start(sim_cfg).await.expect("simulator starts");
        Harness {
            sim,
            dir: tempfile::tempdir().unwrap(),
            app: None,
            extra: extra_net2.to_string(),
            top: String::new(),
            clock: Default::default(),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("gatehouse.db")
    }

    pub fn config(&self) -> Config {
        let text = format!(
            "{}{}",
            config_text(&self.sim, &self.db(), &self.extra, ""),
            self.top
        );
        config::load_str(&text, &|_| None).expect("test config is valid")
    }

    pub async fn start(&mut self) -> &App {
        let app = App::start_with_clock(self.config(), None, None, self.clock.clone())
            .await
            .expect("daemon starts");
        self.app = Some(app);
        self.app.as_ref().unwrap()
    }

    pub async fn stop(&mut self) {
        if let Some(a) = self.app.take() {
            a.shutdown().await;
        }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("daemon running")
    }

    /// Query the database with a fresh read-only connection.
    pub fn query_i64(&self, sql: &str) -> i64 {
        let c = rusqlite::Connection::open(self.db()).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    pub fn stored_source_ids(&self) -> Vec<i64> {
        let c = rusqlite::Connection::open(self.db()).unwrap();
        let mut st = c
            .prepare("SELECT source_id FROM events WHERE source_id IS NOT NULL ORDER BY source_id")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }
}

/// Poll `cond` every 25 ms until it holds or `limit` passes.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() > end {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
