//! `POST <url>/access` (seed 002): fail closed. Only an answer whose `access_granted` is the
//! exact JSON string `"true"` grants; a boolean `true`, `"TRUE"`, a missing field, an HTTP
//! error status, a timeout (the whole request, `apptive.timeout`), a refused or reset
//! connection, a body that is not JSON or is cut short are all denials, each with its reason.
//! The token and the security key are only ever in the request body: never logged (reqwest
//! logs no bodies), never in a reason.

use crate::config::ApptiveConfig;
use crate::error::{ErrorKind, Result, ResultExt};
use crate::secret::Secret;
use serde::Deserialize;
use std::time::Duration;

/// Apptive's answers are ~100 bytes plus the member's picture (base64): more than this is
/// not an answer of theirs.
const MAX_BODY: usize = 2 * 1024 * 1024;

/// What Apptive said about a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub granted: bool,
    /// Apptive's `message` (for the display), when it sent one.
    pub message: Option<String>,
    /// Gatehouse's words for a denial that is not Apptive's `"false"` (timeout, HTTP 500,
    /// malformed answer…); for Apptive's own denial, `apptive: <message>`.
    pub reason: Option<String>,
    /// "Firstname Lastname", when given.
    pub name: Option<String>,
    /// Base64 picture, only when `keep_picture`.
    pub picture: Option<String>,
}

impl Verdict {
    fn denied(reason: impl Into<String>) -> Verdict {
        Verdict {
            granted: false,
            message: None,
            reason: Some(reason.into()),
            name: None,
            picture: None,
        }
    }
}

/// The answer as Apptive documents it. Every field optional: what matters is checked below.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    firstname: Option<serde_json::Value>,
    #[serde(default)]
    lastname: Option<serde_json::Value>,
    #[serde(default)]
    picture: Option<serde_json::Value>,
    #[serde(default)]
    access_granted: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<serde_json::Value>,
}

fn text(v: &Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

#[derive(Clone)]
pub struct ApptiveClient {
    http: reqwest::Client,
    url: String,
    token: Secret,
    timeout: Duration,
    keep_picture: bool,
}

impl ApptiveClient {
    pub fn new(cfg: &ApptiveConfig) -> Result<ApptiveClient> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(crate::sources::tls::client_config(&cfg.tls)?)
            .connect_timeout(cfg.timeout.get())
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .ctx(ErrorKind::Internal, || "unable to build HTTP client")?;
        Ok(ApptiveClient {
            http,
            url: format!("{}/access", cfg.url.trim_end_matches('/')),
            token: cfg.token.clone().unwrap_or_default(),
            timeout: cfg.timeout.get(),
            keep_picture: cfg.keep_picture,
        })
    }

    /// Ask Apptive; never fails: anything but a clear "true" is a denial with a reason.
    pub async fn check(&self, door_id: &str, member: &str, key: &Secret) -> Verdict {
        let body = serde_json::json!({
            "token": self.token.expose(),
            "door_id": door_id,
            "id": member,
            "securitykey": key.expose(),
        });
        match tokio::time::timeout(self.timeout, self.ask(body)).await {
            Ok(v) => v,
            Err(_) => Verdict::denied(format!(
                "apptive did not answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }

    async fn ask(&self, body: serde_json::Value) -> Verdict {
        let resp = match self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
        {
            Ok(r) => r,
            // reqwest's error text names the URL only (no body, no token in it).
            Err(e) => return Verdict::denied(format!("apptive unreachable: {}", error_chain(&e))),
        };
        let status = resp.status();
        let mut resp = resp;
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    bytes.extend_from_slice(&c);
                    if bytes.len() > MAX_BODY {
                        return Verdict::denied(format!(
                            "apptive answer larger than {MAX_BODY} bytes"
                        ));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Verdict::denied(format!(
                        "apptive answer cut short (HTTP {}): {}",
                        status.as_u16(),
                        error_chain(&e)
                    ));
                }
            }
        }
        if !status.is_success() {
            return Verdict::denied(format!("apptive answered HTTP {}", status.as_u16()));
        }
        let a: Answer = match serde_json::from_slice(&bytes) {
            Ok(a) => a,
            Err(e) => {
                return Verdict::denied(format!("apptive answer is not the documented JSON: {e}"));
            }
        };
        let message = text(&a.message);
        let name = match (text(&a.firstname), text(&a.lastname)) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (f, l) => f.or(l),
        };
        let picture = if self.keep_picture {
            text(&a.picture)
        } else {
            None
        };
        let (granted, reason) = match &a.access_granted {
            Some(serde_json::Value::String(s)) if s == "true" => (true, None),
            Some(serde_json::Value::String(s)) if s == "false" => (
                false,
                Some(format!(
                    "apptive: {}",
                    message.as_deref().unwrap_or("access_granted \"false\"")
                )),
            ),
            Some(other) => (
                false,
                Some(format!(
                    "apptive answer has access_granted {} (only the string \"true\" grants)",
                    short(other)
                )),
            ),
            None => (false, Some("apptive answer has no access_granted".into())),
        };
        Verdict {
            granted,
            message,
            reason,
            name,
            picture,
        }
    }
}

fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
