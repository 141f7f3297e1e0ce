//! Tokens for the web server: HS256 JWTs signed with `web.jwt_secret`. A token without a
//! `scope` (from `gatehouse token`) opens everything. A `scope` lists the path prefixes a token
//! opens: the URLs gatehouse hands out carry one, so a URL leaked from a notification opens
//! that picture, or that channel's player and stream, only, and only until it expires.

use crate::config::{Role, WebAuth, WebConfig};
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
    /// Path prefixes this token opens; absent = every path, empty = none. One prefix is
    /// written as a string (as tokens were before a scope could list several).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "one_or_many")]
    pub scope: Option<Vec<String>>,
    /// What the bearer may do. Absent in tokens from before roles, and in signed URLs (their
    /// scope limits them): an unscoped token without a role is an admin's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Issued at (seconds since the epoch); login tokens carry it so that a password change
    /// ends the sessions opened before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Set on tokens from `POST /api/auth/login`: the account is checked on every request
    /// (removed, role changed, password changed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub login: bool,
    /// Login tokens: a fingerprint of the password hash they were issued under; a changed
    /// password ends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwv: Option<String>,
}

/// `"scope": "/a/"` or `"scope": ["/a/", "/b/"]`.
mod one_or_many {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub fn serialize<S: Serializer>(v: &Option<Vec<String>>, s: S) -> Result<S::Ok, S::Error> {
        match v.as_deref() {
            Some([one]) => one.serialize(s),
            v => v.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }))
    }
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

pub(crate) fn now() -> u64 {
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

    /// A token for `sub`, valid `ttl`, limited to paths under `scope` when given.
    pub fn token(&self, sub: &str, ttl: Duration, scope: Option<&str>) -> Result<String> {
        self.sign(sub, ttl, scope.map(|s| vec![s.to_owned()]))
    }

    /// A token for `sub`, valid `ttl`, opening paths under any of `scope` (none if empty).
    pub fn token_for(&self, sub: &str, ttl: Duration, scope: &[String]) -> Result<String> {
        self.sign(sub, ttl, Some(scope.to_vec()))
    }

    fn sign(&self, sub: &str, ttl: Duration, scope: Option<Vec<String>>) -> Result<String> {
        self.sign_claims(Claims {
            sub: sub.to_string(),
            exp: now() + ttl.as_secs(),
            scope,
            role: None,
            iat: Some(now()),
            login: false,
            pwv: None,
        })
    }

    /// A token with `role` (`gatehouse token --role`), optionally limited to `scope`.
    pub fn token_with_role(
        &self,
        sub: &str,
        ttl: Duration,
        role: Role,
        scope: Option<Vec<String>>,
    ) -> Result<String> {
        self.sign_claims(Claims {
            sub: sub.to_string(),
            exp: now() + ttl.as_secs(),
            scope,
            role: Some(role),
            iat: Some(now()),
            login: false,
            pwv: None,
        })
    }

    /// The token `POST /api/auth/login` answers for an account.
    pub fn login_token(
        &self,
        name: &str,
        role: Role,
        pwv: String,
        ttl: Duration,
    ) -> Result<String> {
        self.sign_claims(Claims {
            sub: name.to_string(),
            exp: now() + ttl.as_secs(),
            scope: None,
            role: Some(role),
            iat: Some(now()),
            login: true,
            pwv: Some(pwv),
        })
    }

    fn sign_claims(&self, claims: Claims) -> Result<String> {
        let Some((enc, _)) = &self.keys else {
            return Err(Error::new(ErrorKind::Config, "web.auth is none: no tokens"));
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, enc)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("unable to sign a token: {e}")))
    }

    /// `?token=…` (or nothing without auth) opening paths under any of `scope`, valid
    /// `web.url_token_ttl`.
    pub fn query_for(&self, scope: &[String]) -> String {
        match self.token_for("gatehouse", self.ttl, scope) {
            Ok(t) => format!("?token={t}"),
            Err(_) => String::new(),
        }
    }

    /// Full URL of `path` with a token scoped to exactly it.
    pub fn signed(&self, path: &str) -> String {
        self.signed_for(path, &[path.to_owned()])
    }

    /// Full URL of `path` with a token opening paths under any of `scope`.
    pub fn signed_for(&self, path: &str, scope: &[String]) -> String {
        format!("{}{path}{}", self.base(), self.query_for(scope))
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
            && !scope.iter().any(|s| in_scope(path, s))
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
        let url = s.signed_for("/hls/garage/1/index.m3u8", &["/hls/garage/1/".into()]);
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
    fn a_scope_lists_prefixes_and_a_single_string_still_reads() {
        let s = signer();
        let scope = ["/live/garage/1".to_string(), "/hls/garage/1/".to_string()];
        let t = s.token_for("me", Duration::from_secs(60), &scope).unwrap();
        for ok in ["/live/garage/1", "/hls/garage/1/index.m3u8"] {
            assert!(s.check(Some(&t), ok).is_ok(), "{ok}");
        }
        for no in [
            "/live/garage/10",
            "/hls/porch/1/index.m3u8",
            "/api/pictures/x",
        ] {
            assert!(s.check(Some(&t), no).is_err(), "{no}");
        }
        // One prefix is a plain string, as in tokens signed before scopes could list more.
        let t = s
            .token("me", Duration::from_secs(60), Some("/hls/garage/1/"))
            .unwrap();
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &DecodingKey::from_secret(b"0123456789abcdef-test"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap()
        .claims;
        assert_eq!(claims["scope"], "/hls/garage/1/");
        assert!(s.check(Some(&t), "/hls/garage/1/seg1.m4s").is_ok());
        // An empty list opens nothing (not everything).
        let t = s.token_for("me", Duration::from_secs(60), &[]).unwrap();
        assert!(s.check(Some(&t), "/hls/garage/1/index.m3u8").is_err());
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
                role: None,
                iat: None,
                login: false,
                pwv: None,
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
