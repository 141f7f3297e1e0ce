//! ISAPI over HTTP with Digest (or Basic) authentication.
//!
//! Never retry a refused login in a loop: Hikvision devices lock a client out for ~30 min after
//! repeated bad credentials. One request without credentials gets the challenge; one with them
//! either works or is an `Auth` error (the caller backs off hard and reports "authentication
//! failed"). `stale=true` is a new nonce for the same credentials and is retried once. Every
//! client of one device shares its [`AuthGate`]: one refused login closes it for all of them,
//! across restarts.

use super::digest::{self, Challenge};
use super::gate::AuthGate;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::secret::Secret;
use reqwest::StatusCode;
use std::sync::Mutex;
use std::time::Duration;

enum Auth {
    Digest { challenge: Challenge, nc: u32 },
    Basic,
}

pub struct IsapiClient {
    http: reqwest::Client,
    base: url::Url,
    user: String,
    password: Secret,
    auth: Mutex<Option<Auth>>,
    gate: std::sync::Arc<AuthGate>,
}

impl IsapiClient {
    pub fn new(
        base: &str,
        user: &str,
        password: Secret,
        tls: &crate::config::TlsConfig,
        gate: std::sync::Arc<AuthGate>,
    ) -> Result<IsapiClient> {
        let base = url::Url::parse(base)
            .ctx(ErrorKind::Config, || format!("invalid camera URL {base:?}"))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(crate::sources::tls::client_config(tls)?)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .ctx(ErrorKind::Internal, || "unable to build HTTP client")?;
        Ok(IsapiClient {
            http,
            base,
            user: user.to_string(),
            password,
            auth: Mutex::new(None),
            gate,
        })
    }

    fn header(&self, method: &str, uri: &str) -> Option<String> {
        let mut g = self.auth.lock().ok()?;
        match g.as_mut()? {
            Auth::Digest { challenge, nc } => {
                *nc += 1;
                let cnonce = format!("{:016x}", rand::random::<u64>());
                Some(digest::authorization(
                    challenge,
                    &self.user,
                    self.password.expose(),
                    method,
                    uri,
                    *nc,
                    &cnonce,
                ))
            }
            Auth::Basic => {
                use base64_lite::encode;
                Some(format!(
                    "Basic {}",
                    encode(format!("{}:{}", self.user, self.password.expose()).as_bytes())
                ))
            }
        }
    }

    /// GET `path` (with query), authenticating as needed. Returns the response for reading
    /// or streaming.
    pub async fn get(&self, path: &str, timeout: Option<Duration>) -> Result<reqwest::Response> {
        self.request(reqwest::Method::GET, path, timeout).await
    }

    /// PUT `path` with an empty body (commands such as `requestKeyFrame`).
    pub async fn put(&self, path: &str, timeout: Option<Duration>) -> Result<reqwest::Response> {
        self.request(reqwest::Method::PUT, path, timeout).await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response> {
        let url = self
            .base
            .join(path)
            .ctx(ErrorKind::Internal, || format!("bad ISAPI path {path}"))?;
        let uri = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        // Before any login has worked, one request with credentials at a time: a wrong
        // password costs one bad login, not one per task.
        let _first = self.gate.first_login().await;
        self.gate.check()?;
        let mut sent_credentials = false;
        for _ in 0..3 {
            let auth = self.header(method.as_str(), &uri);
            sent_credentials |= auth.is_some();
            let mut req = self.http.request(method.clone(), url.clone());
            if method == reqwest::Method::PUT {
                req = req.body("");
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            if let Some(a) = &auth {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let res = req.send().await.ctx(ErrorKind::Unavailable, || {
                format!("unable to reach camera at {}", self.base)
            })?;
            if res.status() != StatusCode::UNAUTHORIZED {
                if auth.is_some() {
                    self.gate.accepted();
                }
                return Ok(res);
            }
            let challenge = res
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(digest::parse_challenge);
            let basic = res
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.trim_start().to_ascii_lowercase().starts_with("basic"));
            let stale = challenge.as_ref().is_some_and(|c| c.stale);
            if auth.is_some() && !stale {
                // Refused credentials: never loop (lockout).
                *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.gate.refused();
                return Err(Error::new(
                    ErrorKind::Auth,
                    format!(
                        "authentication failed for user {:?} on {}: check the camera's username and password",
                        self.user, self.base
                    ),
                ));
            }
            *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = match (challenge, basic) {
                (Some(c), _) => Some(Auth::Digest {
                    challenge: c,
                    nc: 0,
                }),
                (None, true) => Some(Auth::Basic),
                (None, false) => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        "camera answered 401 without a usable challenge",
                    ));
                }
            };
        }
        Err(Error::new(
            ErrorKind::Auth,
            format!(
                "authentication failed for user {:?} on {} (sent credentials: {sent_credentials})",
                self.user, self.base
            ),
        ))
    }

    /// GET and read the whole body; non-2xx is an error with the device's `ResponseStatus`.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let res = self.get(path, Some(Duration::from_secs(15))).await?;
        let status = res.status();
        let text = res.text().await.ctx(ErrorKind::Unavailable, || {
            format!("camera answer to {path} was cut off")
        })?;
        if !status.is_success() {
            let snippet: String = text.chars().take(200).collect();
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("camera answered HTTP {status} to {path}: {snippet}"),
            ));
        }
        Ok(text)
    }

    /// Open the alert stream: `/ISAPI/…` first, the legacy path on 404 (old firmware).
    pub async fn alert_stream(&self) -> Result<reqwest::Response> {
        let res = self
            .get("/ISAPI/Event/notification/alertStream", None)
            .await?;
        let res = if res.status() == StatusCode::NOT_FOUND {
            self.get("/Event/notification/alertStream", None).await?
        } else {
            res
        };
        if !res.status().is_success() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("camera refused the alert stream: HTTP {}", res.status()),
            ));
        }
        Ok(res)
    }
}

/// Minimal base64 for Basic auth (no extra dependency for 20 lines).
mod base64_lite {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub fn encode(b: &[u8]) -> String {
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    #[test]
    fn rfc4648() {
        assert_eq!(
            encode(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(encode(b"ab"), "YWI=");
    }
}
