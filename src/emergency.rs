//! Emergency operations (seed 001 `/emergency/lockdown | unlock | restore`):
//!
//! - **lockdown**: Net2's own lockdown (`controlLockdown`, its pre-configured rules), one
//!   [`CommandKind::Lockdown`] through the door command queue;
//! - **unlock**: hold open every door whose config `mode` is `normal` (never a `momentary`
//!   door: a garage port's relay toggles; never a `disabled` one), one command per door;
//! - **restore**: back to normal — lockdown off, or close exactly the doors unlock held open.
//!
//! Each is asked for by an admin, now: the commands go through the same queue as every door
//! command (planned, sent once, audited by the Net2 source), and the step itself is audited
//! with who asked and why. The mode and its expiry are kept in the `state` table: they survive
//! a restart, and a timed emergency restores by itself at its expiry — at start-up when
//! gatehouse was down then (the one command ever sent at start-up, and only because an admin
//! asked for a timed emergency). The lockdown or unlock itself is never sent again at
//! start-up. The mode is published on the bus for MQTT (`<base>/emergency`, retained).
//!
//! Time comes from a [`Clock`], so a test can move past an expiry without waiting for it.
//!
//! The expiry is persisted as a wall time (all a restart can read), but while running it is
//! timed on the monotonic clock: a Pi has no real-time clock, and NTP steps its wall clock at
//! boot, by days. A step never expires an emergency early nor keeps it longer: the deadline
//! stays where it was and the persisted `expires_at` is re-based on the new wall time (and
//! published). A wall clock that was not set when the expiry was read (before the build time,
//! or the kernel's "unsynchronised" flag) is the exception: its step is NTP setting it, and
//! the persisted expiry is read again against the new time. Whatever the clock does, no
//! emergency lasts longer than its `timeout_minutes` from when this process read it.

use crate::bus::Bus;
use crate::clock::{Clock, WallWatch};
use crate::config::{ConfigRx, DoorMode};
use crate::model::{
    Command, CommandKind, CommandStatus, CommandUpdate, DoorAction, DoorId, Message,
};
pub use crate::model::{EmergencyMode as Mode, EmergencyState};
use crate::storage::{AuditNote, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

/// The `state` table key.
pub const STATE_KEY: &str = "emergency";
/// `timeout_minutes` at most (a day).
pub const MAX_TIMEOUT_MINUTES: u32 = 1440;
/// How long a step waits for the Net2 source's answer to one command (it always answers:
/// sent, rejected or failed; a token wait is bounded by the command's 10 s age limit).
const COMMAND_ANSWER: Duration = Duration::from_secs(30);
/// A restore at expiry that could not be carried out (Net2 away) is tried again this often.
const RETRY_RESTORE: Duration = Duration::from_secs(30);
/// The actor of a restore at expiry.
pub const EXPIRY_ACTOR: &str = "gatehouse";

/// What an admin asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub property_id: String,
    pub reason: String,
    /// Only for lockdown and unlock.
    pub timeout_minutes: Option<u32>,
}

/// How one door command of a step went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DoorOutcome {
    pub id: DoorId,
    pub name: Option<String>,
    /// The command's status: `sent` / `confirmed` (it went out), `rejected` / `failed`.
    pub status: String,
    pub detail: String,
}

/// A step carried out (possibly in part: see `doors`).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub state: EmergencyState,
    pub doors: Vec<DoorOutcome>,
}

/// A step not carried out; nothing changed (or, for a partial restore, what is left).
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Against the current mode or config (409): nothing was sent.
    Conflict(String),
    /// No Net2 source (503): nothing was sent.
    Unavailable(String),
    /// Net2 did not take the commands (502): the mode is what it was, or what is left.
    Failed {
        detail: String,
        doors: Vec<DoorOutcome>,
    },
}

impl Refusal {
    fn detail(&self) -> &str {
        match self {
            Refusal::Conflict(d) | Refusal::Unavailable(d) | Refusal::Failed { detail: d, .. } => d,
        }
    }
}

/// Checks of a request that need no state: `Err` is the reason (422).
pub fn validate(req: &Request, timed: bool) -> Result<(), String> {
    if req.property_id.trim().is_empty() {
        return Err("property_id must not be empty".into());
    }
    if req.property_id.chars().count() > 100 {
        return Err("property_id is longer than 100 characters".into());
    }
    if req.reason.trim().is_empty() {
        return Err("reason must not be empty".into());
    }
    if req.reason.chars().count() > 1000 {
        return Err("reason is longer than 1000 characters".into());
    }
    match req.timeout_minutes {
        Some(_) if !timed => Err("timeout_minutes is not used by restore".into()),
        Some(m) if !(1..=MAX_TIMEOUT_MINUTES).contains(&m) => Err(format!(
            "timeout_minutes must be between 1 and {MAX_TIMEOUT_MINUTES}"
        )),
        _ => Ok(()),
    }
}

struct Inner {
    store: Store,
    bus: Bus,
    cfg: ConfigRx,
    directory: crate::directory::Directory,
    clock: Arc<dyn Clock>,
    /// Held for a whole step: two admins (or an admin and the expiry) never interleave.
    step: Mutex<()>,
    current: watch::Sender<EmergencyState>,
    started: DateTime<Utc>,
    timer: std::sync::Mutex<Timer>,
}

/// The running expiry of the current emergency, on the monotonic clock.
struct Timer {
    watch: WallWatch,
    /// The persisted `expires_at` this deadline was computed for, and the deadline.
    deadline: Option<(DateTime<Utc>, tokio::time::Instant)>,
}

/// What the timer found.
enum Due {
    No,
    Yes,
    /// The wall clock was stepped: the emergency (not due) with its expiry re-based.
    Rebased(EmergencyState),
}

/// The emergency service (cheap to clone).
#[derive(Clone)]
pub struct Emergency {
    inner: Arc<Inner>,
}

fn request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "emergency-{}-{}",
        Utc::now().timestamp_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn went_out(status: CommandStatus) -> bool {
    matches!(
        status,
        CommandStatus::Sent | CommandStatus::Confirmed | CommandStatus::Timeout
    )
}

fn status_name(s: CommandStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Emergency {
    /// The persisted mode (normal when there is none, or it cannot be read: logged).
    pub fn load(
        store: Store,
        bus: Bus,
        cfg: ConfigRx,
        directory: crate::directory::Directory,
        clock: Arc<dyn Clock>,
    ) -> Emergency {
        let state = match store.state_get(STATE_KEY) {
            Ok(Some(s)) => serde_json::from_str(&s).unwrap_or_else(|e| {
                tracing::error!(error = %e, "the stored emergency mode is unreadable; taken as normal");
                EmergencyState::default()
            }),
            Ok(None) => EmergencyState::default(),
            Err(e) => {
                tracing::error!(error = %e, "unable to read the stored emergency mode; taken as normal");
                EmergencyState::default()
            }
        };
        if state.mode != Mode::Normal {
            tracing::warn!(mode = state.mode.as_str(), by = ?state.initiated_by, expires_at = ?state.expires_at, "an emergency mode is active (kept from before the restart; nothing is sent again)");
        }
        let started = clock.now();
        Emergency {
            inner: Arc::new(Inner {
                store,
                bus,
                cfg,
                directory,
                step: Mutex::new(()),
                current: watch::Sender::new(state),
                started,
                timer: std::sync::Mutex::new(Timer {
                    watch: WallWatch::new(&*clock),
                    deadline: None,
                }),
                clock,
            }),
        }
    }

    pub fn current(&self) -> EmergencyState {
        self.inner.current.borrow().clone()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Whether `cur` is due, on the monotonic deadline (see the module docs).
    fn due(&self, cur: &EmergencyState) -> Due {
        let clock = &*self.inner.clock;
        let mut t = self.inner.timer.lock().unwrap_or_else(|p| p.into_inner());
        let step = t.watch.observe(clock);
        let (Some(expires), true) = (cur.expires_at, cur.mode != Mode::Normal) else {
            t.deadline = None;
            return Due::No;
        };
        let (now, mono) = (clock.now(), clock.mono());
        if let Some(step) = step {
            tracing::warn!(by_s = step.by.num_seconds(), %now, "the wall clock was stepped (NTP?)");
            if step.was_unset {
                // NTP set the clock: read the persisted expiry against it.
                t.deadline = None;
            }
        }
        let deadline = match t.deadline {
            Some((e, d)) if e == expires => d,
            _ => {
                let most = chrono::Duration::minutes(i64::from(
                    cur.timeout_minutes.unwrap_or(MAX_TIMEOUT_MINUTES),
                ));
                let left = (expires - now).clamp(chrono::Duration::zero(), most);
                let d = mono + left.to_std().unwrap_or_default();
                t.deadline = Some((expires, d));
                d
            }
        };
        if mono >= deadline {
            return Due::Yes;
        }
        if step.is_some() && t.deadline.is_some_and(|(e, _)| e == expires) {
            let left = chrono::Duration::from_std(deadline - mono).unwrap_or_default();
            let rebased = now + left;
            if (rebased - expires).abs() > chrono::Duration::seconds(1) {
                tracing::warn!(mode = cur.mode.as_str(), was = %expires, now = %rebased, "emergency expiry re-based on the stepped wall clock (it still ends when it would have)");
                t.deadline = Some((rebased, deadline));
                return Due::Rebased(EmergencyState {
                    expires_at: Some(rebased),
                    ..cur.clone()
                });
            }
        }
        Due::No
    }

    fn door_name(&self, id: DoorId) -> Option<String> {
        let cfg = self.inner.cfg.borrow().clone();
        cfg.doors
            .get(&id)
            .and_then(|d| d.name.clone())
            .or_else(|| self.inner.directory.door(id).and_then(|d| d.name))
    }

    /// Send one command through the door queue and wait for what became of it.
    async fn command(&self, kind: CommandKind, requester: &str) -> CommandUpdate {
        let mut rx = self.inner.bus.watch();
        let cmd = Command {
            request_id: request_id(),
            requester: requester.to_string(),
            kind,
            received: Utc::now(),
            received_at: tokio::time::Instant::now(),
        };
        let answer = |status, detail: &str| CommandUpdate {
            request_id: cmd.request_id.clone(),
            requester: cmd.requester.clone(),
            kind: cmd.kind.clone(),
            status,
            detail: detail.to_string(),
            at: Utc::now(),
        };
        if self.inner.bus.commands().send(cmd.clone()).await.is_err() {
            return answer(
                CommandStatus::Rejected,
                "the door command queue is closed (shutting down); nothing sent",
            );
        }
        let deadline = tokio::time::Instant::now() + COMMAND_ANSWER;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => {
                    return answer(
                        CommandStatus::Failed,
                        "no answer from the Net2 source in time; it may have been sent",
                    );
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    return answer(CommandStatus::Failed, "the bus closed (shutting down)");
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Ok(Message::Command(u)))
                    if u.request_id == cmd.request_id && u.status != CommandStatus::Accepted =>
                {
                    return u;
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Write one audit entry for a step (errors logged: the step happened either way).
    async fn audit(&self, note: AuditNote) {
        let at = self.now();
        if let Err(e) = self
            .inner
            .store
            .run(move |s| s.audit_note(&note, at).map(|_| ()))
            .await
        {
            tracing::error!(error = %e, "unable to write the emergency audit entry");
        }
    }

    /// Keep and publish the new mode.
    async fn set(&self, state: EmergencyState) {
        let text = serde_json::to_string(&state).unwrap_or_default();
        if let Err(e) = self
            .inner
            .store
            .run(move |s| s.state_set(STATE_KEY, Some(&text)))
            .await
        {
            tracing::error!(error = %e, mode = state.mode.as_str(), "unable to store the emergency mode: it will not survive a restart");
        }
        self.inner.current.send_replace(state.clone());
        self.inner.bus.publish(Message::Emergency(state)).await;
    }

    fn net2_configured(&self) -> bool {
        self.inner.cfg.borrow().sources.net2.is_some()
    }

    /// Lockdown or unlock, asked for by `by` (an API account).
    pub async fn begin(&self, mode: Mode, req: Request, by: &str) -> Result<Outcome, Refusal> {
        let _step = self.inner.step.lock().await;
        let action = format!("emergency_{}", mode.as_str());
        let res = self.begin_locked(mode, &req, by).await;
        let (status, reason) = match &res {
            Ok(o) if o.doors.len() > o.state.held_open.len() && mode == Mode::Unlock => {
                ("partial", req.reason.clone())
            }
            Ok(_) => ("success", req.reason.clone()),
            Err(Refusal::Conflict(d)) => ("refused", format!("{} ({d})", req.reason)),
            Err(r) => ("failed", format!("{} ({})", req.reason, r.detail())),
        };
        self.audit(AuditNote {
            requester: format!("rest:{by}"),
            action,
            status: status.into(),
            target: Some(format!("property:{}", req.property_id)),
            reason: Some(reason),
            source: "rest".into(),
            property_id: Some(req.property_id.clone()),
        })
        .await;
        res
    }

    async fn begin_locked(&self, mode: Mode, req: &Request, by: &str) -> Result<Outcome, Refusal> {
        let cur = self.current();
        if cur.mode != Mode::Normal {
            return Err(Refusal::Conflict(format!(
                "emergency {} is active (by {}, since {}): restore it first",
                cur.mode.as_str(),
                cur.initiated_by.as_deref().unwrap_or("?"),
                cur.initiated_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            )));
        }
        if !self.net2_configured() {
            return Err(Refusal::Unavailable(
                "no Net2 source is configured: there is nothing to command".into(),
            ));
        }
        let requester = format!("rest:{by}");
        let now = self.now();
        let mut state = EmergencyState {
            mode,
            property_id: Some(req.property_id.clone()),
            initiated_by: Some(by.to_string()),
            initiated_at: Some(now),
            reason: Some(req.reason.clone()),
            timeout_minutes: req.timeout_minutes,
            expires_at: req
                .timeout_minutes
                .map(|m| now + chrono::Duration::minutes(m as i64)),
            held_open: Vec::new(),
        };
        let mut doors = Vec::new();
        match mode {
            Mode::Normal => return Err(Refusal::Conflict("normal is not an emergency".into())),
            Mode::Lockdown => {
                let u = self
                    .command(CommandKind::Lockdown { active: true }, &requester)
                    .await;
                if !went_out(u.status) {
                    tracing::warn!(by, status = ?u.status, detail = %u.detail, "emergency lockdown not carried out");
                    return Err(Refusal::Failed {
                        detail: format!("Net2 lockdown was not sent: {}", u.detail),
                        doors,
                    });
                }
            }
            Mode::Unlock => {
                let cfg = self.inner.cfg.borrow().clone();
                // Points an admin set to maintenance or disabled, and doors moved to another
                // site, through the access-point API (`access_points`).
                let points = self
                    .inner
                    .store
                    .read(|c| {
                        let mut st = c.prepare_cached(
                            "SELECT id, status, site FROM access_points WHERE kind = 'net2'",
                        )?;
                        let rows = st.query_map([], |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, Option<String>>(1)?,
                                r.get::<_, Option<String>>(2)?,
                            ))
                        })?;
                        Ok(rows.filter_map(|r| r.ok()).collect::<Vec<_>>())
                    })
                    .await
                    .unwrap_or_default();
                let meta = |id: DoorId| points.iter().find(|(p, _, _)| *p == format!("net2-{id}"));
                let normal: Vec<DoorId> = cfg
                    .doors
                    .iter()
                    .filter(|(_, d)| d.mode == DoorMode::Normal)
                    .map(|(id, _)| *id)
                    .filter(|id| {
                        let (status, site) = meta(*id)
                            .map(|(_, s, site)| (s.clone(), site.clone()))
                            .unwrap_or_default();
                        let site = site.unwrap_or_else(|| cfg.door_site(*id));
                        status.as_deref().is_none_or(|s| s == "active") && site == req.property_id
                    })
                    .collect();
                if normal.is_empty() {
                    return Err(Refusal::Conflict(format!(
                        "no door of property {:?} has mode normal in the config and status active: nothing to hold open",
                        req.property_id
                    )));
                }
                for id in normal {
                    let u = self
                        .command(
                            CommandKind::Door {
                                door: id,
                                action: DoorAction::HoldOpen,
                                duration_ms: None,
                            },
                            &requester,
                        )
                        .await;
                    if went_out(u.status) {
                        state.held_open.push(id);
                    }
                    doors.push(DoorOutcome {
                        id,
                        name: self.door_name(id),
                        status: status_name(u.status),
                        detail: u.detail,
                    });
                }
                if state.held_open.is_empty() {
                    tracing::warn!(by, "emergency unlock: no door was held open");
                    return Err(Refusal::Failed {
                        detail: "Net2 held no door open (see doors)".into(),
                        doors,
                    });
                }
            }
        }
        tracing::warn!(mode = mode.as_str(), by, reason = %req.reason, expires_at = ?state.expires_at, held_open = ?state.held_open, "emergency mode on");
        self.set(state.clone()).await;
        Ok(Outcome { state, doors })
    }

    /// Back to normal, asked for by `by`.
    pub async fn restore(&self, req: Request, by: &str) -> Result<Outcome, Refusal> {
        let _step = self.inner.step.lock().await;
        let cur = self.current();
        let res = if cur.mode == Mode::Normal {
            Err(Refusal::Conflict(
                "no emergency mode is active: nothing to restore".into(),
            ))
        } else if cur
            .property_id
            .as_deref()
            .is_some_and(|p| p != req.property_id)
        {
            Err(Refusal::Conflict(format!(
                "the active emergency is for property {:?}",
                cur.property_id.as_deref().unwrap_or_default()
            )))
        } else {
            self.restore_locked(cur, &format!("rest:{by}"), by, &req.reason)
                .await
        };
        let (status, reason) = match &res {
            Ok(_) => ("success", req.reason.clone()),
            Err(Refusal::Conflict(d)) => ("refused", format!("{} ({d})", req.reason)),
            Err(r) => ("failed", format!("{} ({})", req.reason, r.detail())),
        };
        self.audit(AuditNote {
            requester: format!("rest:{by}"),
            action: "emergency_restore".into(),
            status: status.into(),
            target: Some(format!("property:{}", req.property_id)),
            reason: Some(reason),
            source: "rest".into(),
            property_id: Some(req.property_id.clone()),
        })
        .await;
        res
    }

    /// Undo `cur`: lockdown off, or close the doors it held open. On a partial failure the
    /// mode stays, with the doors still to close.
    async fn restore_locked(
        &self,
        cur: EmergencyState,
        requester: &str,
        by: &str,
        reason: &str,
    ) -> Result<Outcome, Refusal> {
        let mut doors = Vec::new();
        let mut left = cur.clone();
        match cur.mode {
            Mode::Normal => {}
            Mode::Lockdown => {
                let u = self
                    .command(CommandKind::Lockdown { active: false }, requester)
                    .await;
                if !went_out(u.status) {
                    tracing::warn!(by, status = ?u.status, detail = %u.detail, "emergency restore: lockdown off not sent");
                    return Err(Refusal::Failed {
                        detail: format!("Net2 lockdown off was not sent: {}", u.detail),
                        doors,
                    });
                }
            }
            Mode::Unlock => {
                for id in &cur.held_open {
                    let u = self
                        .command(
                            CommandKind::Door {
                                door: *id,
                                action: DoorAction::Close,
                                duration_ms: None,
                            },
                            requester,
                        )
                        .await;
                    if went_out(u.status) {
                        left.held_open.retain(|d| d != id);
                    }
                    doors.push(DoorOutcome {
                        id: *id,
                        name: self.door_name(*id),
                        status: status_name(u.status),
                        detail: u.detail,
                    });
                }
                if !left.held_open.is_empty() {
                    tracing::warn!(by, left = ?left.held_open, "emergency restore: doors still held open");
                    if left.held_open != cur.held_open {
                        self.set(left.clone()).await;
                    }
                    return Err(Refusal::Failed {
                        detail: format!(
                            "Net2 did not close every door; still held open: {:?}",
                            left.held_open
                        ),
                        doors,
                    });
                }
            }
        }
        let state = EmergencyState {
            mode: Mode::Normal,
            property_id: cur.property_id.clone(),
            initiated_by: Some(by.to_string()),
            initiated_at: Some(self.now()),
            reason: Some(reason.to_string()),
            timeout_minutes: None,
            expires_at: None,
            held_open: Vec::new(),
        };
        tracing::warn!(
            was = cur.mode.as_str(),
            by,
            reason,
            "emergency mode off: back to normal"
        );
        self.set(state.clone()).await;
        Ok(Outcome { state, doors })
    }

    /// A due emergency: restore it (once Net2 is ready). `true` when nothing is left to do.
    async fn expire(&self) -> bool {
        let _step = self.inner.step.lock().await;
        let cur = self.current();
        let now = self.now();
        match self.due(&cur) {
            Due::Yes => {}
            Due::No => return true,
            Due::Rebased(s) => {
                self.set(s).await;
                return true;
            }
        }
        let expired = cur.expires_at.unwrap_or(now);
        let down = expired < self.inner.started;
        let reason = format!(
            "timeout: emergency {} by {} expired at {}{}",
            cur.mode.as_str(),
            cur.initiated_by.as_deref().unwrap_or("?"),
            expired.to_rfc3339(),
            if down {
                " while gatehouse was not running; restored at start-up"
            } else {
                ""
            }
        );
        if down {
            tracing::warn!(mode = cur.mode.as_str(), %expired, "an emergency expired while gatehouse was down: restoring now (the only command sent at start-up)");
        } else {
            tracing::warn!(mode = cur.mode.as_str(), %expired, "emergency expired: restoring");
        }
        let property = cur.property_id.clone();
        let res = self
            .restore_locked(cur, "gatehouse:emergency-expiry", EXPIRY_ACTOR, &reason)
            .await;
        let status = if res.is_ok() { "success" } else { "failed" };
        let reason = match &res {
            Ok(_) => reason,
            Err(r) => format!("{reason} ({}; retrying)", r.detail()),
        };
        self.audit(AuditNote {
            requester: format!("{EXPIRY_ACTOR}:expiry"),
            action: "emergency_restore".into(),
            status: status.into(),
            target: property.as_ref().map(|p| format!("property:{p}")),
            reason: Some(reason),
            source: "expiry".into(),
            property_id: property,
        })
        .await;
        res.is_ok()
    }

    /// Publish the mode once (MQTT's retained state), then restore timed emergencies at their
    /// expiry until `cancel`.
    pub fn spawn(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            me.inner.bus.publish(Message::Emergency(me.current())).await;
            let mut changed = me.inner.current.subscribe();
            loop {
                let cur = changed.borrow_and_update().clone();
                let due = match me.due(&cur) {
                    Due::Yes => true,
                    Due::No => false,
                    Due::Rebased(s) => {
                        let _step = me.inner.step.lock().await;
                        // Only if no admin step changed it meanwhile.
                        if me.current() == cur {
                            me.set(s).await;
                        }
                        continue;
                    }
                };
                let wait = if due {
                    let ready = me.inner.bus.health("net2").is_some_and(|h| h.ready);
                    if !ready {
                        // The tracker refuses commands until Net2's first door status.
                        Duration::from_millis(500)
                    } else if me.expire().await {
                        continue;
                    } else {
                        RETRY_RESTORE
                    }
                } else if cur.expires_at.is_some() && cur.mode != Mode::Normal {
                    // The deadline is monotonic, but the wall clock is watched every second
                    // so a step is re-based (and published) at once.
                    me.inner.clock.poll(Duration::from_secs(1))
                } else {
                    Duration::from_secs(3600)
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                    r = changed.changed() => if r.is_err() { return },
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn due_only_when_timed_and_past() {
        let mut s = EmergencyState {
            mode: Mode::Lockdown,
            expires_at: Some(t("2026-01-26T11:00:00Z")),
            ..Default::default()
        };
        assert!(!s.due(t("2026-01-26T10:59:59Z")));
        assert!(s.due(t("2026-01-26T11:00:00Z")));
        assert!(
            s.due(t("2026-01-27T00:00:00Z")),
            "late (gatehouse was down)"
        );
        s.expires_at = None;
        assert!(
            !s.due(t("2030-01-01T00:00:00Z")),
            "no timeout: until restored"
        );
        s.expires_at = Some(t("2026-01-26T11:00:00Z"));
        s.mode = Mode::Normal;
        assert!(!s.due(t("2030-01-01T00:00:00Z")));
    }

    #[test]
    fn requests_are_checked() {
        let r = |p: &str, reason: &str, m: Option<u32>| Request {
            property_id: p.into(),
            reason: reason.into(),
            timeout_minutes: m,
        };
        assert!(validate(&r("prop-1", "threat", Some(30)), true).is_ok());
        assert!(validate(&r("prop-1", "threat", None), true).is_ok());
        assert!(
            validate(&r("prop-1", " ", None), true)
                .unwrap_err()
                .contains("reason")
        );
        assert!(
            validate(&r("", "x", None), true)
                .unwrap_err()
                .contains("property_id")
        );
        for m in [0, 1441] {
            assert!(
                validate(&r("p", "x", Some(m)), true)
                    .unwrap_err()
                    .contains("timeout_minutes")
            );
        }
        assert!(validate(&r("p", "x", Some(1440)), true).is_ok());
        assert!(
            validate(&r("p", "x", Some(5)), false).is_err(),
            "restore has no timeout"
        );
        assert!(validate(&r("p", &"x".repeat(1001), None), true).is_err());
    }

    #[test]
    fn the_stored_form_reads_back() {
        let s = EmergencyState {
            mode: Mode::Unlock,
            property_id: Some("main".into()),
            initiated_by: Some("ada".into()),
            initiated_at: Some(t("2026-01-26T10:30:00Z")),
            reason: Some("fire drill".into()),
            timeout_minutes: Some(30),
            expires_at: Some(t("2026-01-26T11:00:00Z")),
            held_open: vec![6612642, 6203980],
        };
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"mode\":\"unlock\""), "{text}");
        assert_eq!(serde_json::from_str::<EmergencyState>(&text).unwrap(), s);
    }
}
