//! One refused login per device, then a hard wait that survives a restart.
//!
//! Hikvision devices lock a client out for about 30 minutes after a few bad logins in a
//! minute (three in 60 s on the devices checked). gatehouse talks to a device from several
//! places (the alert stream, device info, pictures), and is restarted by people fixing its
//! config. So every ISAPI client of a device shares one gate:
//! - until a login has worked, only one request with credentials is in flight at a time;
//! - a refused login closes the gate for [`BACKOFF`]: nothing is sent with those credentials
//!   meanwhile (every request fails at once with the reason);
//! - the closing time is kept in the database with a 16-bit fingerprint of the credentials
//!   (salted, so it says nothing about the password), and a restart with the same credentials
//!   waits out the rest. New credentials open the gate at once.

use crate::error::{Error, ErrorKind, Result};
use crate::secret::Secret;
use crate::storage::Store;
use std::sync::Mutex;
use std::time::Duration;

/// How long a device is left alone after it refused our credentials.
pub const BACKOFF: Duration = Duration::from_secs(1800);

#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    /// Unix ms.
    until_ms: i64,
    fingerprint: u16,
}

pub struct AuthGate {
    device: String,
    fingerprint: u16,
    store: Option<Store>,
    /// Closed until then: unix ms (for the message and the store), and the monotonic
    /// deadline that decides — NTP stepping a Pi's clock at boot neither opens the gate early
    /// nor keeps it closed for the days of a step back.
    closed_until: Mutex<Option<(i64, std::time::Instant)>>,
    /// A refusal of this device is kept in the database (cleared by the next good login).
    kept: std::sync::atomic::AtomicBool,
    /// A login has worked since start-up.
    verified: std::sync::atomic::AtomicBool,
    /// Held by the one request that tries credentials before any has worked.
    first_login: tokio::sync::Mutex<()>,
}

/// 16 bits of SHA-256 over a per-database salt and the credentials.
fn fingerprint(salt: &str, user: &str, password: &Secret) -> u16 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [salt, "\0", user, "\0", password.expose()] {
        ctx.update(part.as_bytes());
    }
    let d = ctx.finish();
    u16::from_be_bytes([d.as_ref()[0], d.as_ref()[1]])
}

fn key(device: &str) -> String {
    format!("hikvision/{device}/auth_backoff")
}

impl AuthGate {
    /// The gate of `device` for these credentials, closed if a refusal of the same
    /// credentials is kept in `store` and not yet waited out.
    pub fn new(device: &str, user: &str, password: &Secret, store: Option<Store>) -> AuthGate {
        let salt = store
            .as_ref()
            .and_then(|s| salt(s).ok())
            .unwrap_or_default();
        let fp = fingerprint(&salt, user, password);
        let now = chrono::Utc::now().timestamp_millis();
        let kept = store
            .as_ref()
            .and_then(|s| s.state_get(&key(device)).ok().flatten())
            .and_then(|v| serde_json::from_str::<Kept>(&v).ok());
        let was_kept = kept.is_some();
        let closed_until = match kept {
            Some(k) if k.fingerprint == fp && k.until_ms > now => {
                // Never more than BACKOFF from now, whatever the clock said when it was kept.
                let left = Duration::from_millis((k.until_ms - now) as u64).min(BACKOFF);
                tracing::warn!(
                    device,
                    wait_s = left.as_secs(),
                    "this camera refused these credentials before the restart: not trying them again until its lockout has passed (change the password in the config to try at once)"
                );
                Some((
                    now + left.as_millis() as i64,
                    std::time::Instant::now() + left,
                ))
            }
            _ => None,
        };
        AuthGate {
            device: device.to_string(),
            fingerprint: fp,
            store,
            closed_until: Mutex::new(closed_until),
            kept: was_kept.into(),
            verified: Default::default(),
            first_login: tokio::sync::Mutex::new(()),
        }
    }

    /// A gate that keeps nothing (tests, tools).
    pub fn ephemeral(device: &str) -> AuthGate {
        AuthGate::new(device, "", &Secret::default(), None)
    }

    /// `Err` while closed.
    pub fn check(&self) -> Result<()> {
        let until = *self.closed_until.lock().unwrap_or_else(|p| p.into_inner());
        match until {
            Some((t, deadline)) if std::time::Instant::now() < deadline => {
                let at = chrono::DateTime::from_timestamp_millis(t)
                    .map(|t| t.with_timezone(&chrono::Local).format("%H:%M").to_string())
                    .unwrap_or_default();
                Err(Error::new(
                    ErrorKind::Auth,
                    format!(
                        "camera {} refused these credentials; not trying them again before {at} (devices lock clients out after repeated bad logins): check the username and password",
                        self.device
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Until a login has worked, one credentialed request at a time: hold this while it runs.
    pub async fn first_login(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.verified.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        Some(self.first_login.lock().await)
    }

    /// The device took our credentials.
    pub fn accepted(&self) {
        if !self
            .verified
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            *self.closed_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if self.kept.swap(false, std::sync::atomic::Ordering::Relaxed) {
                self.keep(None);
            }
        }
    }

    /// The device refused our credentials: closed for [`BACKOFF`], kept across restarts.
    pub fn refused(&self) {
        let until = chrono::Utc::now().timestamp_millis() + BACKOFF.as_millis() as i64;
        *self.closed_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((until, std::time::Instant::now() + BACKOFF));
        self.verified
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.kept.store(true, std::sync::atomic::Ordering::Relaxed);
        self.keep(Some(until));
    }

    fn keep(&self, until: Option<i64>) {
        let Some(store) = &self.store else { return };
        let value = until.map(|until_ms| {
            serde_json::to_string(&Kept {
                until_ms,
                fingerprint: self.fingerprint,
            })
            .unwrap_or_default()
        });
        if let Err(e) = store.state_set(&key(&self.device), value.as_deref()) {
            tracing::warn!(device = %self.device, error = %e, "unable to keep the camera's credential back-off");
        }
    }
}

/// The database's salt for credential fingerprints (made once).
fn salt(store: &Store) -> Result<String> {
    if let Some(s) = store.state_get("salt")? {
        return Ok(s);
    }
    let s = format!("{:032x}", rand::random::<u128>());
    store.state_set("salt", Some(&s))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_survives_a_restart_for_the_same_credentials_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db")).unwrap();
        let pw = Secret::new("wrong");
        let g = AuthGate::new("cam", "admin", &pw, Some(store.clone()));
        assert!(g.check().is_ok());
        g.refused();
        let e = g.check().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Auth);
        // "Restart": a new gate from the same database.
        let g = AuthGate::new("cam", "admin", &pw, Some(store.clone()));
        assert!(g.check().is_err(), "still waiting after a restart");
        // The password was fixed: try at once.
        let g = AuthGate::new("cam", "admin", &Secret::new("right"), Some(store.clone()));
        assert!(g.check().is_ok());
        g.accepted();
        // Nothing about the password is kept: 16 bits of a salted hash.
        let kept = store.state_get("hikvision/cam/auth_backoff").unwrap();
        assert!(kept.is_none(), "cleared once a login worked: {kept:?}");
        let g = AuthGate::new("cam", "admin", &pw, Some(store.clone()));
        g.refused();
        let kept = store
            .state_get("hikvision/cam/auth_backoff")
            .unwrap()
            .unwrap();
        assert!(!kept.contains("wrong"), "{kept}");
    }

    #[test]
    fn a_refusal_kept_by_a_clock_stepped_back_waits_no_longer_than_the_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db")).unwrap();
        let pw = Secret::new("wrong");
        AuthGate::new("cam", "admin", &pw, Some(store.clone())).refused();
        // Kept while the clock read 10 days behind (a Pi before NTP): its end is 10 days on.
        let mut k: Kept =
            serde_json::from_str(&store.state_get(&key("cam")).unwrap().unwrap()).unwrap();
        k.until_ms += 10 * 86_400_000;
        let v = serde_json::to_string(&k).unwrap();
        store.state_set(&key("cam"), Some(&v)).unwrap();
        let g = AuthGate::new("cam", "admin", &pw, Some(store.clone()));
        assert!(g.check().is_err(), "still closed after the restart");
        let (_, deadline) = g.closed_until.lock().unwrap().unwrap();
        assert!(
            deadline <= std::time::Instant::now() + BACKOFF,
            "closed for {:?}",
            deadline - std::time::Instant::now()
        );
    }
}
