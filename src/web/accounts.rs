//! REST API accounts (`web.users`): argon2id password hashes, login and password changes.
//!
//! The config holds each account's hash (`gatehouse passwd` makes one). A password changed
//! through `POST /api/auth/change-password` is kept in the database (`state`, key
//! `web.password.<name>`) beside the config hash it replaced: while the config still says the
//! same, the changed one counts; an admin who edits the config hash resets it. A login token
//! carries a fingerprint of the hash it was issued under: a changed password ends it.
//!
//! One argon2 verification at a time: each takes ~19 MiB and tens of milliseconds (more on a
//! Raspberry Pi); a burst of logins waits rather than multiplying the memory.

use crate::config::{Config, Role, WebUser};
use crate::storage::Store;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

/// Failed logins allowed per account name in [`FAIL_WINDOW`] before 429.
const MAX_FAILURES: u32 = 5;
const FAIL_WINDOW: Duration = Duration::from_secs(60);
/// Shortest new password.
pub const MIN_PASSWORD: usize = 8;

/// Hash `password` as argon2id with the crate's defaults (m = 19 MiB, t = 2, p = 1).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("unable to hash the password: {e}"))
}

/// A config hash must be an argon2id PHC string.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let h = PasswordHash::new(hash)
        .map_err(|e| format!("not a PHC hash string ({e}); make one with `gatehouse passwd`"))?;
    if h.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!(
            "algorithm {} is not argon2id; make one with `gatehouse passwd`",
            h.algorithm
        ));
    }
    Ok(())
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A password changed through the API, as kept in `state`.
#[derive(Serialize, Deserialize)]
struct Changed {
    hash: String,
    /// The config hash it replaced: a different config hash wins (an admin's reset).
    replaces: String,
    /// Unix seconds (for people reading the database).
    at: u64,
}

/// 64 bits of SHA-256 of a hash string: tells one password from the next, and nothing else.
fn fingerprint(hash: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, hash.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn state_key(name: &str) -> String {
    format!("web.password.{name}")
}

/// Why a login or change was refused.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// Wrong name or password (one answer for both).
    Credentials,
    /// Too many failures: retry after this many seconds.
    Throttled(u64),
    /// The new password is unusable.
    Invalid(String),
    /// The database could not keep it.
    Internal(String),
}

/// Account name → (hash, the config hash it replaced, when).
type ChangedByName = HashMap<String, (String, String, u64)>;

#[derive(Clone)]
pub struct Accounts {
    config: watch::Receiver<Arc<Config>>,
    store: Store,
    one_at_a_time: Arc<Semaphore>,
    failures: Arc<Mutex<HashMap<String, (u32, Instant)>>>,
    /// Changed passwords by account name (loaded at start, updated on change).
    changed: Arc<Mutex<ChangedByName>>,
}

impl Accounts {
    pub async fn load(config: watch::Receiver<Arc<Config>>, store: Store) -> Accounts {
        let names: Vec<String> = config
            .borrow()
            .web
            .iter()
            .flat_map(|w| w.users.iter().map(|u| u.name.clone()))
            .collect();
        let changed = store
            .run(move |s| {
                let mut m = HashMap::new();
                for n in names {
                    if let Some(v) = s.state_get(&state_key(&n))?
                        && let Ok(c) = serde_json::from_str::<Changed>(&v)
                    {
                        m.insert(n, (c.hash, c.replaces, c.at));
                    }
                }
                Ok(m)
            })
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "unable to read changed API passwords; the config's apply");
                HashMap::new()
            });
        Accounts {
            config,
            store,
            one_at_a_time: Arc::new(Semaphore::new(1)),
            failures: Default::default(),
            changed: Arc::new(Mutex::new(changed)),
        }
    }

    fn user(&self, name: &str) -> Option<WebUser> {
        self.config
            .borrow()
            .web
            .as_ref()?
            .users
            .iter()
            .find(|u| u.name == name)
            .cloned()
    }

    /// The hash that counts for `u`.
    fn current_hash(&self, u: &WebUser) -> String {
        let changed = self.changed.lock().unwrap_or_else(|p| p.into_inner());
        match changed.get(&u.name) {
            Some((hash, replaces, _)) if *replaces == u.password_hash => hash.clone(),
            _ => u.password_hash.clone(),
        }
    }

    /// The fingerprint a login token of `name` carries (of the hash that counts now).
    pub fn fingerprint(&self, name: &str) -> Option<String> {
        Some(fingerprint(&self.current_hash(&self.user(name)?)))
    }

    /// A login token of `name` issued under password fingerprint `pwv` still stands: the
    /// account exists (its role now) and its password did not change since.
    pub fn token_stands(&self, name: &str, pwv: Option<&str>) -> Option<Role> {
        let u = self.user(name)?;
        (pwv == Some(fingerprint(&self.current_hash(&u)).as_str())).then_some(u.role)
    }

    fn throttled(&self, name: &str) -> Option<u64> {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (n, since) = f.get(name)?;
        let left = FAIL_WINDOW.checked_sub(since.elapsed())?;
        (*n >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    fn failed(&self, name: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a flood of invented names must not grow the map for ever.
        if f.len() > 1000 {
            f.retain(|_, (_, t)| t.elapsed() < FAIL_WINDOW);
        }
        let e = f.entry(name.to_string()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= FAIL_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    /// Check `name` / `password`; the account's role when right.
    pub async fn login(&self, name: &str, password: &str) -> Result<Role, Refused> {
        if let Some(s) = self.throttled(name) {
            return Err(Refused::Throttled(s));
        }
        let user = self.user(name);
        // An unknown name costs a verification too: the answer time does not tell which
        // names exist.
        let hash = match &user {
            Some(u) => self.current_hash(u),
            None => DUMMY_HASH.to_string(),
        };
        let ok = self.verify_one(hash, password.to_string()).await;
        match user {
            Some(u) if ok => {
                self.failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                Ok(u.role)
            }
            _ => {
                self.failed(name);
                Err(Refused::Credentials)
            }
        }
    }

    async fn verify_one(&self, hash: String, password: String) -> bool {
        let Ok(_permit) = self.one_at_a_time.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || verify(&hash, &password))
            .await
            .unwrap_or(false)
    }

    /// Change `name`'s password after checking the old one.
    pub async fn change(&self, name: &str, old: &str, new: &str) -> Result<(), Refused> {
        if new.chars().count() < MIN_PASSWORD {
            return Err(Refused::Invalid(format!(
                "the new password must have at least {MIN_PASSWORD} characters"
            )));
        }
        if new == old {
            return Err(Refused::Invalid(
                "the new password is the old one".to_string(),
            ));
        }
        self.login(name, old).await?;
        let u = self.user(name).ok_or(Refused::Credentials)?;
        let new = new.to_string();
        let hash = {
            let Ok(_permit) = self.one_at_a_time.acquire().await else {
                return Err(Refused::Internal("shutting down".into()));
            };
            tokio::task::spawn_blocking(move || hash_password(&new))
                .await
                .map_err(|e| Refused::Internal(e.to_string()))?
                .map_err(Refused::Internal)?
        };
        let at = crate::web::auth::now();
        let c = Changed {
            hash: hash.clone(),
            replaces: u.password_hash.clone(),
            at,
        };
        let value = serde_json::to_string(&c).map_err(|e| Refused::Internal(e.to_string()))?;
        let key = state_key(name);
        self.store
            .run(move |s| s.state_set(&key, Some(&value)))
            .await
            .map_err(|e| Refused::Internal(e.to_string()))?;
        self.changed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (hash, u.password_hash, at));
        Ok(())
    }
}

/// Verified against for unknown names ("password" with a fixed salt): same cost, never a match
/// of a real account.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$Kv1z8wD0PpYpRrzpp2zjOZsWcV5Jt2QY1Yd0Xn2J6yU";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        check_hash(&h).unwrap();
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "correct horsE"));
        assert!(check_hash("plain").is_err());
        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        assert!(check_hash(bcrypt).is_err());
        // The dummy is a valid hash (same cost as a real one) of nothing anyone types here.
        check_hash(DUMMY_HASH).unwrap();
        assert!(!verify(DUMMY_HASH, "correct horse"));
    }
}
