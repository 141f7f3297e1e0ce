//! Tokens for the web server: HS256 JWTs signed with `web.jwt_secret`. A token without a
//! `scope` (from `gatehouse token`) opens everything; the signed URLs gatehouse hands out (a
//! door event's picture, a live stream's playlist) carry a `scope`, the path prefix they open,
//! so a URL leaked from a notification opens that picture or stream only, and only until it
//! expires.

use crate::config::{WebAuth, WebConfig};
use crate::error::{Error, ErrorKind, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Who: `gatehouse` for signed URLs, or the name given to `gatehouse token`.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Path prefix this token opens; absent = every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Signs and checks tokens; knows the server's public base URL.
#[derive(Clone)]
pub struct UrlSigner {
    /// Shared by clones: [`UrlSigner::set_base`] fixes it once the server has bound.
    base: std::sync::Arc<std::sync::RwLock<String>>,
    keys: Option<(EncodingKey, DecodingKey)>,
    ttl: Duration,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UrlSigner({}, auth {})",
            self.base(),
            self.keys.is_some()
        )
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl UrlSigner {
    pub fn new(cfg: &WebConfig) -> Result<UrlSigner> {
        let keys = match cfg.auth {
            WebAuth::None => None,
            WebAuth::Token => {
                let s = cfg.jwt_secret.as_ref().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Config,
                        "web.jwt_secret is required with auth: token",
                    )
                })?;
                let k = s.expose().as_bytes();
                Some((EncodingKey::from_secret(k), DecodingKey::from_secret(k)))
            }
        };
        Ok(UrlSigner {
            base: std::sync::Arc::new(std::sync::RwLock::new(cfg.base_url())),
            keys,
            ttl: cfg.url_token_ttl.get(),
        })
    }

    pub fn auth_required(&self) -> bool {
        self.keys.is_some()
    }

    pub fn base(&self) -> String {
        self.base.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the base URL: `web.bind` with port 0 (tests) is only known once bound, and
    /// `http://127.0.0.1:0/…` in an MQTT payload would open nothing.
    pub fn set_base(&self, base: &str) {
        *self.base.write().unwrap_or_else(|p| p.into_inner()) = base.trim_end_matches('/').into();
    }

    /// A token for `sub`, valid `ttl`, limited to `scope` when given.
    pub fn token(&self, sub: &str, ttl: Duration, scope: Option<&str>) -> Result<String> {
        let Some((enc, _)) = &self.keys else {
            return Err(Error::new(ErrorKind::Config, "web.auth is none: no tokens"));
        };
        let claims = Claims {
            sub: sub.to_string(),
            exp: now() + ttl.as_secs(),
            scope: scope.map(str::to_owned),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, enc)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("unable to sign a token: {e}")))
    }

    /// `?token=…` (or nothing without auth) opening paths under `scope`.
    pub fn query(&self, scope: &str) -> String {
        match self.token("gatehouse", self.ttl, Some(scope)) {
            Ok(t) => format!("?token={t}"),
            Err(_) => String::new(),
        }
    }

    /// Full URL of `path` with a token scoped to exactly it.
    pub fn signed(&self, path: &str) -> String {
        format!("{}{path}{}", self.base(), self.query(path))
    }

    /// Full URL of `path` with a token scoped to `scope` (a prefix of `path`).
    pub fn signed_scope(&self, path: &str, scope: &str) -> String {
        format!("{}{path}{}", self.base(), self.query(scope))
    }

    /// Check a token for a request path. Without auth every request passes.
    pub fn check(
        &self,
        token: Option<&str>,
        path: &str,
    ) -> std::result::Result<Option<Claims>, String> {
        let Some((_, dec)) = &self.keys else {
            return Ok(None);
        };
        let token = token.ok_or("a token is required (Authorization: Bearer or ?token=)")?;
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, dec, &v)
            .map_err(|e| format!("invalid token: {e}"))?;
        if let Some(scope) = &data.claims.scope
            && !in_scope(path, scope)
        {
            return Err(format!("this token does not open {path}"));
        }
        Ok(Some(data.claims))
    }
}

/// `path` is `scope` or below it, on a segment boundary: `/hls/garage/1` opens
/// `/hls/garage/1/seg3.m4s` but not `/hls/garage/10/…`.
fn in_scope(path: &str, scope: &str) -> bool {
    path == scope
        || (path.starts_with(scope)
            && (scope.ends_with('/') || path[scope.len()..].starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn signer() -> UrlSigner {
        UrlSigner::new(&WebConfig {
            jwt_secret: Some(Secret::new("0123456789abcdef-test")),
            public_url: Some("http://pi:8480/".into()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn scoped_tokens_open_their_prefix_only() {
        let s = signer();
        let url = s.signed_scope("/hls/garage/1/index.m3u8", "/hls/garage/1/");
        assert!(
            url.starts_with("http://pi:8480/hls/garage/1/index.m3u8?token="),
            "{url}"
        );
        let tok = url.split("token=").nth(1).unwrap();
        assert!(s.check(Some(tok), "/hls/garage/1/seg3.m4s").is_ok());
        let e = s.check(Some(tok), "/hls/porch/1/index.m3u8").unwrap_err();
        assert!(e.contains("does not open"), "{e}");
        assert!(s.check(None, "/hls/garage/1/x").is_err());
        // A scope without the trailing slash (`gatehouse token --scope`) still stops at
        // the segment boundary.
        let t = s
            .token("me", Duration::from_secs(60), Some("/hls/garage/1"))
            .unwrap();
        assert!(s.check(Some(&t), "/hls/garage/1/index.m3u8").is_ok());
        assert!(s.check(Some(&t), "/hls/garage/10/index.m3u8").is_err());
        assert!(s.check(Some("garbage"), "/x").is_err());
    }

    #[test]
    fn expired_and_foreign_tokens_are_refused() {
        let s = signer();
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "x".into(),
                exp: now() - 60,
                scope: None,
            },
            &EncodingKey::from_secret(b"0123456789abcdef-test"),
        )
        .unwrap();
        assert!(
            s.check(Some(&old), "/api")
                .unwrap_err()
                .contains("invalid token")
        );
        let other = UrlSigner::new(&WebConfig {
            jwt_secret: Some(Secret::new("another-secret-of-16")),
            ..Default::default()
        })
        .unwrap();
        let t = other.token("x", Duration::from_secs(60), None).unwrap();
        assert!(s.check(Some(&t), "/api").is_err());
        let t = s.token("me", Duration::from_secs(60), None).unwrap();
        assert_eq!(s.check(Some(&t), "/anything").unwrap().unwrap().sub, "me");
    }
}
