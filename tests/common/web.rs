//! A daemon with the web server on a free port, against the Net2 simulator, and a real HTTP
//! client for it: `web.users` accounts (one per role, password `<name>-password`).

use super::Harness;
use gatehouse::sim::net2::SimConfig;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const SECRET: &str = "web-api-test-secret-0123456789";

pub struct WebHarness {
    pub h: Harness,
    pub base: String,
    pub http: reqwest::Client,
}

/// `web.users` for the three roles; hashing is slow, so once per process.
pub fn users_yaml() -> &'static str {
    static Y: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    Y.get_or_init(|| {
        let mut y = String::from("  users:\n");
        for (name, role) in [("vera", "viewer"), ("otto", "operator"), ("ada", "admin")] {
            let hash =
                gatehouse::web::accounts::hash_password(&format!("{name}-password")).unwrap();
            y.push_str(&format!(
                "    - {{ name: {name}, role: {role}, password_hash: \"{hash}\" }}\n"
            ));
        }
        y
    })
}

impl WebHarness {
    /// Net2 simulator + daemon with `web:` (port 0) and the three accounts; `web_extra` is
    /// more YAML under `web:` (two-space indent), `top` more top-level YAML.
    pub async fn start(sim: SimConfig, web_extra: &str, top: &str) -> WebHarness {
        WebHarness::start_with_cameras(sim, &[], web_extra, top).await
    }

    /// As [`WebHarness::start`], with these `sources.hikvision` list items (flow YAML, one a
    /// camera: `{ id: nvr, url: "http://…", … }`).
    pub async fn start_with_cameras(
        sim: SimConfig,
        cameras: &[String],
        web_extra: &str,
        top: &str,
    ) -> WebHarness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut sources = String::new();
        if !cameras.is_empty() {
            sources.push_str("  hikvision:\n");
        }
        for c in cameras {
            sources.push_str(&format!("    - {c}\n"));
        }
        // After `net2:`'s keys: a sibling of `net2` under `sources`.
        let mut h = Harness::new(sim, &sources).await;
        h.top = format!(
            "web:\n  bind: 127.0.0.1:0\n  jwt_secret: {SECRET}\n{}{web_extra}{top}",
            users_yaml()
        );
        h.start().await;
        let addr = h
            .app()
            .web_addr
            .expect("the web server runs without cameras");
        WebHarness {
            h,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Log in; the token.
    pub async fn login(&self, name: &str) -> String {
        let (st, body) = self
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(serde_json::json!({"username": name, "password": format!("{name}-password")})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "login {name}: {body}");
        body["token"].as_str().unwrap().to_string()
    }

    /// A request with an optional bearer token and JSON body; status and JSON answer (Null
    /// when the body is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.expect("request");
        let st = res.status();
        let text = res.text().await.unwrap_or_default();
        (st, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn stop(mut self) {
        self.h.stop().await;
    }
}
