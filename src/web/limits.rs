//! Rate limits as seed 001 states them: 100 requests a minute per user on the API, 1000 per
//! hardware device, 10 a minute per user on emergency operations. Every answer carries
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (unix seconds when
//! the window ends); past the limit, 429 with `Retry-After`.
//!
//! Fixed one-minute windows per (class, key): a counter and a window start each, so the map
//! is small and a request costs one short lock. Entries of past windows are dropped when the
//! map grows; when it is full of live windows, new keys share one budget: invented keys
//! cannot grow it for ever. Windows follow the monotonic clock;
//! `Reset` is computed from the wall clock at answer time.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Drop finished windows once the map holds this many keys.
const PRUNE_AT: usize = 4096;

/// Which budget a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Every API route for a user (or a client address without a user).
    Standard,
    /// Hardware devices (`X-API-Key` routes), per device.
    Hardware,
    /// `/api/access-control/emergency/…`, per user.
    Emergency,
    /// `POST /api/devices/test-connection`, per user: each is a login attempt on a device,
    /// and devices lock an account out after a few bad ones.
    DeviceTest,
}

/// Login tests a user may run a minute ([`Class::DeviceTest`]).
pub const DEVICE_TESTS_PER_MINUTE: u32 = 5;

impl Class {
    /// This class's requests a minute under `limits` (`web.rate_limits`).
    pub fn limit(self, limits: &crate::config::RateLimits) -> u32 {
        match self {
            Class::Standard => limits.per_user,
            Class::Hardware => limits.per_device,
            Class::Emergency => limits.emergency,
            Class::DeviceTest => DEVICE_TESTS_PER_MINUTE,
        }
    }

    /// The class of an API path (hardware routes are classed by their own layer).
    pub fn of_path(path: &str) -> Class {
        if path.starts_with("/api/access-control/emergency/") {
            Class::Emergency
        } else if path == "/api/devices/test-connection" {
            Class::DeviceTest
        } else {
            Class::Standard
        }
    }
}

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the window ends.
    pub reset_in: Duration,
}

impl Decision {
    /// Put the `X-RateLimit-*` headers (and `Retry-After` when refused) on `headers`.
    pub fn headers(&self, headers: &mut HeaderMap) {
        let reset_unix = std::time::SystemTime::now()
            .checked_add(self.reset_in)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .unwrap_or(0);
        let mut put = |name: &'static str, v: u64| {
            if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
                headers.insert(name, v);
            }
        };
        put("x-ratelimit-limit", self.limit.into());
        put("x-ratelimit-remaining", self.remaining.into());
        put("x-ratelimit-reset", reset_unix);
        if !self.allowed {
            let secs = self.reset_in.as_secs() + u64::from(self.reset_in.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
    }

    /// The 429 answer, headers included.
    pub fn refusal(&self) -> Response {
        let secs = self.reset_in.as_secs().max(1);
        let mut r = super::detail(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "rate limit of {} requests a minute reached: retry in {secs} s",
                self.limit
            ),
        );
        self.headers(r.headers_mut());
        r
    }
}

/// (class, key) → (window start, requests counted in it).
type Windows = HashMap<(Class, String), (Instant, u32)>;

#[derive(Clone, Default)]
pub struct Limiter {
    windows: Arc<Mutex<Windows>>,
}

impl Limiter {
    /// Count a request of `key` against `class`, allowed `limit` a minute, at `now`.
    pub fn check_at(&self, class: Class, key: &str, limit: u32, now: Instant) -> Decision {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (class, key.to_string());
        if w.len() >= PRUNE_AT && !w.contains_key(&key) {
            w.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            // Still full of live windows: new keys share one budget (bounded memory, and
            // nobody resets a budget by pushing others out).
            if w.len() >= PRUNE_AT {
                key.1 = "*".into();
            }
        }
        let e = w.entry(key).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        let allowed = e.1 < limit;
        if allowed {
            e.1 += 1;
        }
        Decision {
            allowed,
            limit,
            remaining: limit.saturating_sub(e.1),
            reset_in: WINDOW.saturating_sub(now.duration_since(e.0)),
        }
    }

    pub fn check(&self, class: Class, key: &str, limit: u32) -> Decision {
        self.check_at(class, key, limit, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_allows_its_limit_then_refuses_until_it_ends() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..100 {
            let d = l.check_at(Class::Standard, "ada", 100, t0 + Duration::from_millis(i));
            assert!(d.allowed, "{i}");
            assert_eq!(d.remaining, 99 - i as u32);
        }
        let d = l.check_at(Class::Standard, "ada", 100, t0 + Duration::from_secs(30));
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.reset_in), (0, Duration::from_secs(30)));
        // Another user, and another class of the same user, have their own budgets.
        assert!(l.check_at(Class::Standard, "otto", 100, t0).allowed);
        assert!(l.check_at(Class::Emergency, "ada", 10, t0).allowed);
        // A new window.
        let d = l.check_at(Class::Standard, "ada", 100, t0 + Duration::from_secs(60));
        assert!(d.allowed);
        assert_eq!(d.remaining, 99);
    }

    #[test]
    fn refusals_carry_retry_after_and_the_map_stays_bounded() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            l.check_at(Class::Emergency, "ada", 10, t0);
        }
        let d = l.check_at(Class::Emergency, "ada", 10, t0 + Duration::from_millis(500));
        let r = d.refusal();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "60");
        assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
        assert_eq!(r.headers()["x-ratelimit-limit"], "10");
        for i in 0..(PRUNE_AT * 2) {
            l.check_at(Class::Standard, &format!("k{i}"), 100, t0);
        }
        l.check_at(Class::Standard, "late", 100, t0 + WINDOW);
        assert!(l.windows.lock().unwrap().len() <= PRUNE_AT + 1);
    }
}
