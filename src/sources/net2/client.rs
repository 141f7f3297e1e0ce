//! HTTP side of the Net2 Local API: tokens and REST calls.
//!
//! Tokens (protocols.md §1): form-encoded password grant with `scope=offline_access`, refresh
//! grant before expiry, fall back to the password grant when refresh is refused, one token
//! request in flight (Net2 ≥ 6.8 answers 429 above ~2 token requests/s), and one re-auth +
//! retry on any 401.

use super::types::{TokenError, TokenResponse};
use crate::config::Net2Config;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::secret::Secret;
use reqwest::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Renew when less than this share of the token's lifetime is left (6 min of Net2's 30)…
const REFRESH_AT_REMAINING: f64 = 0.2;
/// …or less than this, for short-lived tokens (capped at half the lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
const MAX_429_RETRIES: u32 = 6;

#[derive(Clone)]
struct Tokens {
    access: Secret,
    expires: Instant,
    lifetime: Duration,
    refresh: Option<(Secret, Instant)>,
}

#[derive(Default)]
struct TokenState {
    current: Option<Tokens>,
    /// Credentials were refused: every caller gets this error until then, so the tasks and
    /// commands waiting for a token do not each retry a known-bad password (lockouts).
    auth_failed: Option<(Error, Instant)>,
}

/// After refused credentials, no new password grant for this long.
const AUTH_FAILURE_HOLD: Duration = Duration::from_secs(300);

pub struct Net2Client {
    http: reqwest::Client,
    base: url::Url,
    username: String,
    password: Secret,
    client_id: String,
    tokens: tokio::sync::Mutex<TokenState>,
    timeout_ms: AtomicU64,
    tls: Arc<rustls::ClientConfig>,
    token_requests: AtomicU64,
}

/// A REST answer body, kept as text so malformed payloads can be logged and stored raw.
pub struct Body {
    pub status: StatusCode,
    pub text: String,
}

fn snippet(s: &str) -> String {
    let s: String = s.chars().take(300).collect();
    s.replace(['\n', '\r'], " ")
}

impl Net2Client {
    pub fn new(cfg: &Net2Config) -> Result<Net2Client> {
        let base = url::Url::parse(&cfg.url).ctx(ErrorKind::Config, || {
            format!("invalid Net2 url {:?}", cfg.url)
        })?;
        let tls = Arc::new(crate::sources::tls::client_config(&cfg.tls)?);
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .ctx(ErrorKind::Internal, || "unable to build HTTP client")?;
        Ok(Net2Client {
            http,
            base,
            username: cfg.username.clone(),
            password: cfg.password(),
            client_id: cfg.client_id.clone(),
            tokens: tokio::sync::Mutex::new(TokenState::default()),
            timeout_ms: AtomicU64::new(cfg.request_timeout.get().as_millis() as u64),
            tls,
            token_requests: AtomicU64::new(0),
        })
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    pub fn set_timeout(&self, d: Duration) {
        self.timeout_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// How many token requests this client has made (diagnostics and tests).
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> url::Url {
        let mut u = self.base.clone();
        u.set_path(&format!(
            "{}{}",
            self.base.path().trim_end_matches('/'),
            path
        ));
        u
    }

    /// A valid access token and when it expires. Single-flight: concurrent callers wait for
    /// the one request in flight.
    pub async fn access_token(&self) -> Result<(Secret, Instant)> {
        let mut guard = self.tokens.lock().await;
        let now = Instant::now();
        if let Some((e, until)) = &guard.auth_failed {
            if now < *until {
                return Err(Error::new(e.kind(), e.message().to_string()));
            }
            guard.auth_failed = None;
        }
        if let Some(t) = guard.current.as_ref() {
            let left = t.expires.saturating_duration_since(now);
            let margin = t
                .lifetime
                .mul_f64(REFRESH_AT_REMAINING)
                .max(REFRESH_MARGIN.min(t.lifetime / 2));
            if left > margin {
                return Ok((t.access.clone(), t.expires));
            }
        }
        let refresh = guard
            .current
            .as_ref()
            .and_then(|t| t.refresh.clone())
            .filter(|(_, exp)| *exp > now + Duration::from_secs(5));
        let mut fresh = None;
        if let Some((rt, _)) = refresh {
            match self
                .grant(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt.expose()),
                    ("client_id", &self.client_id),
                    ("scope", "offline_access"),
                ])
                .await
            {
                Ok(t) => fresh = Some(t),
                Err(e) if e.kind() == ErrorKind::Auth => {
                    tracing::info!(error = %e, "refresh token refused; using the password grant");
                }
                Err(e) => return Err(e),
            }
        }
        let t = match fresh {
            Some(t) => t,
            None => {
                let res = self
                    .grant(&[
                        ("grant_type", "password"),
                        ("username", &self.username),
                        ("password", self.password.expose()),
                        ("client_id", &self.client_id),
                        ("scope", "offline_access"),
                    ])
                    .await;
                match res {
                    Ok(t) => t,
                    Err(e) => {
                        if e.kind() == ErrorKind::Auth {
                            guard.current = None;
                            guard.auth_failed = Some((
                                Error::new(e.kind(), e.message().to_string()),
                                Instant::now() + AUTH_FAILURE_HOLD,
                            ));
                        }
                        return Err(e);
                    }
                }
            }
        };
        let out = (t.access.clone(), t.expires);
        guard.current = Some(t);
        Ok(out)
    }

    /// Forget `used` if it is still the current token (after a 401), keeping the refresh
    /// token.
    pub async fn invalidate(&self, used: &Secret) {
        let mut g = self.tokens.lock().await;
        if let Some(t) = g.current.as_mut()
            && t.access == *used
        {
            t.expires = Instant::now();
        }
    }

    async fn grant(&self, form: &[(&str, &str)]) -> Result<Tokens> {
        let grant = form[0].1;
        let mut wait = Duration::from_millis(600);
        for attempt in 0..=MAX_429_RETRIES {
            self.token_requests.fetch_add(1, Ordering::Relaxed);
            let res = self
                .http
                .post(self.url("/api/v1/authorization/tokens"))
                .timeout(self.timeout())
                .form(form)
                .send()
                .await
                .ctx(ErrorKind::Unavailable, || {
                    format!("unable to reach Net2 at {} for a token", self.base)
                })?;
            let status = res.status();
            let retry_after = res
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = res.text().await.unwrap_or_default();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let d = retry_after.unwrap_or(wait).min(Duration::from_secs(30));
                tracing::warn!(attempt, retry_in = ?d, "Net2 token endpoint rate-limited (429)");
                tokio::time::sleep(d).await;
                wait = (wait * 2).min(Duration::from_secs(30));
                continue;
            }
            if status.is_success() {
                let t: TokenResponse = serde_json::from_str(&text).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Protocol,
                        format!(
                            "Net2 token answer is not the expected JSON (HTTP {status}): {}",
                            snippet(&text)
                        ),
                        e,
                    )
                })?;
                // Clamped: a silly value from the device must not overflow the clock.
                let lifetime = Duration::from_secs(t.expires_in.unwrap_or(1800).clamp(1, 86_400));
                let now = Instant::now();
                tracing::debug!(grant, lifetime = ?lifetime, "got Net2 access token");
                return Ok(Tokens {
                    access: Secret::new(t.access_token),
                    expires: now + lifetime,
                    lifetime,
                    // Paxton: refresh tokens live 2 h.
                    refresh: t
                        .refresh_token
                        .map(|r| (Secret::new(r), now + Duration::from_secs(2 * 3600))),
                });
            }
            if let Ok(e) = serde_json::from_str::<TokenError>(&text) {
                let desc = e.error_description.unwrap_or_default();
                return Err(match e.error.as_str() {
                    "mfa_required" => Error::new(
                        ErrorKind::Auth,
                        format!(
                            "Net2 operator {:?} requires multi-factor authentication, which an unattended daemon cannot do: \
                             create a Net2 operator without MFA for gatehouse and set sources.net2.username/password to it",
                            self.username
                        ),
                    ),
                    "invalid_grant" if grant == "password" => Error::new(
                        ErrorKind::Auth,
                        format!(
                            "Net2 refused the credentials of operator {:?} ({desc}): check sources.net2.username (the operator's display name) and password",
                            self.username
                        ),
                    ),
                    "invalid_client" => Error::new(
                        ErrorKind::Auth,
                        format!(
                            "Net2 refused the licence client_id ({desc}): check sources.net2.client_id"
                        ),
                    ),
                    other => Error::new(
                        ErrorKind::Auth,
                        format!("Net2 refused the {grant} grant: {other} {desc}"),
                    ),
                });
            }
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "Net2 token request failed with HTTP {status}: {}",
                    snippet(&text)
                ),
            ));
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            "Net2 token endpoint kept answering 429 (rate limit)",
        ))
    }

    /// GET an API path; on 401 re-authenticate once and retry once.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Body> {
        self.call(reqwest::Method::GET, path, query, None).await
    }

    /// POST a JSON body; on 401 re-authenticate once and retry once (a 401 means the server
    /// refused before acting, so this cannot repeat a door command). No other retries.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<Body> {
        self.call(reqwest::Method::POST, path, &[], Some(body))
            .await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Body> {
        for attempt in 0..2 {
            let (token, _) = self.access_token().await?;
            let mut req = self
                .http
                .request(method.clone(), self.url(path))
                .timeout(self.timeout())
                .header(
                    reqwest::header::AUTHORIZATION,
                    format!("bearer {}", token.expose()),
                );
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let res = req.send().await.ctx(ErrorKind::Unavailable, || {
                format!("unable to reach Net2 for {method} {path}")
            })?;
            let status = res.status();
            let text = res.text().await.ctx(ErrorKind::Unavailable, || {
                format!("Net2 answer to {method} {path} was cut off")
            })?;
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                tracing::info!(path, "Net2 answered 401; re-authenticating once");
                self.invalidate(&token).await;
                continue;
            }
            if !status.is_success() {
                return Err(Error::new(
                    if status == StatusCode::UNAUTHORIZED {
                        ErrorKind::Auth
                    } else {
                        ErrorKind::Unavailable
                    },
                    format!(
                        "Net2 answered HTTP {status} to {method} {path}: {}",
                        snippet(&text)
                    ),
                ));
            }
            return Ok(Body { status, text });
        }
        unreachable!("the loop returns on its second attempt")
    }
}

impl Net2Client {
    /// GET an absolute URL on the Net2 server (SignalR negotiate/start) with `token`. A 401
    /// invalidates the token so the next attempt re-authenticates.
    pub async fn raw_get(&self, url: url::Url, token: &Secret) -> Result<String> {
        let res = self
            .http
            .get(url)
            .timeout(self.timeout())
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            )
            .send()
            .await
            // The URL carries the access token (`token=`): never let it into an error message.
            .map_err(|e| e.without_url())
            .ctx(ErrorKind::Unavailable, || "unable to reach Net2")?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED {
            self.invalidate(token).await;
        }
        if !status.is_success() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("Net2 answered HTTP {status}: {}", snippet(&text)),
            ));
        }
        Ok(text)
    }
}
