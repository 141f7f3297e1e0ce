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
        self.request(reqwest::Method::GET, path, None, timeout)
            .await
    }

    /// PUT `path` with an empty body (commands such as `requestKeyFrame`).
    pub async fn put(&self, path: &str, timeout: Option<Duration>) -> Result<reqwest::Response> {
        self.request(reqwest::Method::PUT, path, Some(""), timeout)
            .await
    }

    /// POST an XML document to `path` (searches such as `dailyDistribution`); the answer's
    /// status and text, whatever the status (devices without the feature answer 403 / 404
    /// with a `ResponseStatus`, which the caller tells apart).
    pub async fn post_xml(
        &self,
        path: &str,
        xml: &str,
        timeout: Duration,
    ) -> Result<(StatusCode, String)> {
        let res = self
            .request(reqwest::Method::POST, path, Some(xml), Some(timeout))
            .await?;
        let status = res.status();
        let text = res.text().await.ctx(ErrorKind::Unavailable, || {
            format!("camera answer to {path} was cut off")
        })?;
        Ok((status, text))
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
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
            if let Some(b) = body {
                if !b.is_empty() {
                    req = req.header(reqwest::header::CONTENT_TYPE, "application/xml");
                }
                req = req.body(b.to_string());
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

/// What one login attempt to a device found ([`test_login`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginTest {
    /// Something answered HTTP at the address.
    pub reachable: bool,
    /// The credentials were accepted.
    pub auth_ok: bool,
    /// What happened, for a person (never the password).
    pub message: String,
}

/// The longest a login test takes, both requests together.
pub const LOGIN_TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Try credentials on a device that is not (necessarily) configured: `GET
/// http://<host>/ISAPI/System/deviceInfo` once without credentials (for the challenge) and
/// once with them, on one connection, within [`LOGIN_TEST_TIMEOUT`]. Never retried, not even
/// on `stale=true`: a wrong password costs the device's lockout counter exactly one bad login.
/// `host` is `host` or `host:port` (checked by the caller). The password is used for the one
/// `Authorization` header and nothing else.
pub async fn test_login(host: &str, user: &str, password: &Secret) -> LoginTest {
    let fail = |reachable: bool, message: String| LoginTest {
        reachable,
        auth_ok: false,
        message,
    };
    let url = match url::Url::parse(&format!("http://{host}/ISAPI/System/deviceInfo")) {
        Ok(u) => u,
        Err(e) => return fail(false, format!("invalid address {host:?}: {e}")),
    };
    let http = match crate::sources::tls::client_config(&Default::default()).and_then(|tls| {
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1)
            .build()
            .ctx(ErrorKind::Internal, || "unable to build HTTP client")
    }) {
        Ok(c) => c,
        Err(e) => return fail(false, e.to_string()),
    };
    let answered = std::sync::atomic::AtomicBool::new(false);
    let attempt = async {
        let first = match http.get(url.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                let why = if e.is_timeout() {
                    "no answer".to_string()
                } else {
                    chain(&e)
                };
                return fail(false, format!("Cannot reach device at {host}: {why}"));
            }
        };
        answered.store(true, std::sync::atomic::Ordering::Relaxed);
        let status = first.status();
        if status.is_success() {
            return LoginTest {
                reachable: true,
                auth_ok: true,
                message: "OK (the device asked for no credentials)".into(),
            };
        }
        if status != StatusCode::UNAUTHORIZED {
            return fail(
                true,
                format!(
                    "the device answered HTTP {status} to /ISAPI/System/deviceInfo: not a Hikvision ISAPI device?"
                ),
            );
        }
        let values: Vec<String> = first
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        // Read the body so the connection can carry the next request.
        let _ = first.bytes().await;
        let uri = url.path();
        let header = if let Some(c) = values.iter().find_map(|v| digest::parse_challenge(v)) {
            let cnonce = format!("{:016x}", rand::random::<u64>());
            digest::authorization(&c, user, password.expose(), "GET", uri, 1, &cnonce)
        } else if values
            .iter()
            .any(|v| v.trim_start().to_ascii_lowercase().starts_with("basic"))
        {
            format!(
                "Basic {}",
                base64_lite::encode(format!("{user}:{}", password.expose()).as_bytes())
            )
        } else {
            return fail(
                true,
                "the device answered 401 without a usable challenge".into(),
            );
        };
        match http
            .get(url.clone())
            .header(reqwest::header::AUTHORIZATION, header)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => LoginTest {
                reachable: true,
                auth_ok: true,
                message: "OK".into(),
            },
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED => fail(
                true,
                format!(
                    "Authentication failed for user {user:?} (not retried: the device locks an account out after a few bad logins)"
                ),
            ),
            Ok(r) => fail(
                true,
                format!("the device answered HTTP {} to the login", r.status()),
            ),
            Err(e) => fail(
                true,
                format!("the device did not answer the login: {}", chain(&e)),
            ),
        }
    };
    match tokio::time::timeout(LOGIN_TEST_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) if answered.load(std::sync::atomic::Ordering::Relaxed) => fail(
            true,
            format!("the device did not answer the login within {LOGIN_TEST_TIMEOUT:?}"),
        ),
        Err(_) => fail(
            false,
            format!("Cannot reach device at {host}: no answer within {LOGIN_TEST_TIMEOUT:?}"),
        ),
    }
}

/// An error and its causes, `: `-separated (reqwest's own message alone says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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
