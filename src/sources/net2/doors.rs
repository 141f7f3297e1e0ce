//! Door state tracking and command safety (pure: inputs and `now` in, messages out).
//!
//! - State comes from `/doors/status` polls, SignalR door events and access events. Door
//!   closed events (47) are unreliable, so polls are the backstop; doors may have no contact.
//! - "Held open" is derived when the contact stays open longer than the door's
//!   `held_open_after` and the server did not send type 93 itself.
//! - Commands are planned here: refused before the first status sync, for unconfigured or
//!   disabled doors, for repeated request ids, and for momentary doors whose relay state says
//!   the command would toggle the door the wrong way. Net2 answers "fire and forget", so a
//!   sent command is confirmed only by the next status/event, or reported as timed out.

use super::types::StatusFlags;
use crate::config::{DoorConfig, DoorMode};
use crate::model::*;
use chrono::Utc;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Unlocked,
    Locked,
    Lockdown(bool),
}

/// Where a command that may still be confirmed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The request is on its way to Net2. The ACU can move the door before Net2 answers the
    /// POST: a status that confirms the command is remembered (`seen`), not used up.
    Sending,
    /// Net2 took it and "sent" is being published; a confirmation waits until it is out.
    Sent,
    /// "sent" is out: confirmed by the next status or event, or timed out at the deadline.
    Waiting(Instant),
}

#[derive(Debug, Clone)]
struct Pending {
    /// The "sent" update (its status is replaced for confirmed / timeout).
    update: CommandUpdate,
    expect: Expect,
    phase: Phase,
    /// What confirmed it before "sent" was published.
    seen: Option<String>,
}

impl Pending {
    /// The door (or lockdown) did what was asked: confirmed now, or once "sent" is out.
    fn confirm(&mut self, detail: &str) -> Option<CommandUpdate> {
        if !matches!(self.phase, Phase::Waiting(_)) {
            self.seen.get_or_insert_with(|| detail.to_string());
            return None;
        }
        let mut u = self.update.clone();
        u.status = CommandStatus::Confirmed;
        u.detail = detail.into();
        u.at = Utc::now();
        Some(u)
    }
}

#[derive(Debug, Default)]
struct Tracked {
    state: DoorState,
    open_since: Option<Instant>,
    held_reported: bool,
    /// Commands for this door not yet confirmed or timed out, oldest first.
    pending: Vec<Pending>,
    /// Net2 told us this door's state since start-up (a status entry or a live status/door
    /// event). State restored from the database is shown, but never decides a command.
    observed: bool,
    /// Whether the door reports `doorContactClosed` at all (`None` until a status says).
    /// Doors without a contact never get `open` from events: nothing would ever close it.
    has_contact: Option<bool>,
    /// Wall time of the last status poll: older (backfilled) events do not override it.
    observed_at: Option<chrono::DateTime<Utc>>,
}

/// An HTTP request that carries out a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub path: &'static str,
    pub body: serde_json::Value,
}

#[derive(Debug, Default)]
pub struct DoorTracker {
    doors: BTreeMap<DoorId, Tracked>,
    synced: bool,
    handled: HashSet<String>,
    handled_order: VecDeque<String>,
    lockdown_pending: Vec<Pending>,
    /// Site names learned from REST `deviceName` ("Kirkegade50 - Garage Port - ACU:…").
    pub sites: HashMap<DoorId, String>,
    /// Time of the newest access per user, so a backfilled older access does not move them.
    presence: HashMap<i64, chrono::DateTime<chrono::FixedOffset>>,
    /// The Net2 server's UTC offset once known: derived events are dated in it, as the
    /// server's own are (this machine's zone until then).
    pub server_offset: Option<chrono::FixedOffset>,
}

/// A queued command older than this is refused rather than sent late (the user has walked
/// away; a door opening minutes later is a phantom opening).
pub const COMMAND_MAX_AGE: Duration = Duration::from_secs(10);

fn update(cmd: &Command, status: CommandStatus, detail: impl Into<String>) -> CommandUpdate {
    CommandUpdate {
        request_id: cmd.request_id.clone(),
        requester: cmd.requester.clone(),
        kind: cmd.kind.clone(),
        status,
        detail: detail.into(),
        at: Utc::now(),
    }
}

impl DoorTracker {
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    pub fn state(&self, id: DoorId) -> Option<&DoorState> {
        self.doors.get(&id).map(|t| &t.state)
    }

    pub fn states(&self) -> impl Iterator<Item = &DoorState> {
        self.doors.values().map(|t| &t.state)
    }

    /// Restore last known states from the database (shown until the first poll).
    pub fn restore(&mut self, states: Vec<DoorState>) {
        for s in states {
            let id = s.id;
            self.doors.entry(id).or_default().state = s;
        }
    }

    fn door(&mut self, id: DoorId) -> &mut Tracked {
        let t = self.doors.entry(id).or_default();
        t.state.id = id;
        t
    }

    pub fn set_name(&mut self, id: DoorId, name: &str) {
        self.door(id).state.name = Some(name.to_string());
    }

    /// A full `/doors/status` answer: marks the tracker synced (an empty answer does not).
    pub fn apply_status_poll(
        &mut self,
        entries: &[(DoorId, StatusFlags)],
        now: Instant,
    ) -> Vec<Message> {
        let mut out = Vec::new();
        for (id, f) in entries {
            out.extend(self.apply_flags(*id, f, now));
            let t = self.door(*id);
            let has_contact = Some(f.door_contact_closed.is_some());
            t.has_contact = has_contact;
            t.observed_at = Some(Utc::now());
            // What a poll tells beyond the flags: whether the door has a contact, and that its
            // ACU is online unless Net2 said otherwise (event 500).
            let before = t.state.clone();
            t.state.has_contact = has_contact;
            t.state.acu_online.get_or_insert(true);
            if t.state != before {
                t.state.updated = Some(Utc::now());
                out.push(Message::DoorState(t.state.clone()));
            }
        }
        if entries.is_empty() {
            return out;
        }
        if !self.synced {
            tracing::info!(
                doors = entries.len(),
                "first Net2 door status sync; commands are accepted from now on"
            );
        }
        self.synced = true;
        out
    }

    /// Status flags from a poll or a SignalR `doorStatusEvents`.
    pub fn apply_flags(&mut self, id: DoorId, f: &StatusFlags, now: Instant) -> Vec<Message> {
        let t = self.door(id);
        t.observed = true;
        if f.door_contact_closed.is_some() {
            t.has_contact = Some(true);
        }
        let before = t.state.clone();
        if let Some(closed) = f.door_contact_closed {
            set_open(t, !closed, now);
        }
        if let Some(relay) = f.door_relay_open {
            t.state.unlocked = Some(relay);
        }
        if let Some(a) = f.alarm_tripped {
            t.state.alarm_tripped = a;
        }
        self.after_change(id, before, now)
    }

    /// SignalR `doorEvents`: `locked` is the relay state.
    pub fn apply_locked(&mut self, id: DoorId, locked: bool, now: Instant) -> Vec<Message> {
        let t = self.door(id);
        t.observed = true;
        let before = t.state.clone();
        t.state.unlocked = Some(!locked);
        self.after_change(id, before, now)
    }

    /// An access or door event (already deduplicated).
    pub fn apply_event(&mut self, ev: &Event, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        if let EventKind::Lockdown { active } = ev.kind {
            let detail = format!(
                "lockdown {} reported by Net2",
                if active { "on" } else { "off" }
            );
            self.lockdown_pending.retain_mut(|p| {
                if p.expect != Expect::Lockdown(active) {
                    return true;
                }
                match p.confirm(&detail) {
                    Some(u) => {
                        out.push(Message::Command(u));
                        false
                    }
                    None => true,
                }
            });
        }
        let Some(d) = &ev.door else { return out };
        let id = d.id;
        if let Some(site) = ev
            .raw
            .contains("deviceName")
            .then(|| serde_json::from_str::<serde_json::Value>(&ev.raw).ok())
            .flatten()
            .and_then(|v| v.get("deviceName")?.as_str().map(str::to_owned))
            .and_then(|n| n.split_once(" - ").map(|(s, _)| s.trim().to_string()))
        {
            self.sites.insert(id, site);
        }
        if let (EventKind::AccessGranted { .. }, Some(u)) = (&ev.kind, &ev.user)
            && self.presence.get(&u.id).is_none_or(|t| ev.time > *t)
        {
            self.presence.insert(u.id, ev.time);
            let name = self
                .doors
                .get(&id)
                .and_then(|t| t.state.name.clone())
                .or_else(|| d.name.clone());
            out.push(Message::Presence(Presence {
                user: u.clone(),
                door: DoorRef { id, name },
                site: self.sites.get(&id).cloned(),
                time: ev.time,
            }));
        }
        let t = self.door(id);
        if t.state.name.is_none() {
            t.state.name = d.name.clone();
        }

        let before = t.state.clone();
        t.state.last_event = Some(ev.kind.name().to_string());
        // Position (contact, relay) comes from live events and status polls. A REST event may
        // be minutes old (a backfill after an outage) and the two clocks differ, so once a
        // status poll has been seen it only adds history, never moves the door.
        let positional = ev.via != Via::Rest || t.observed_at.is_none();
        let contact = t.has_contact != Some(false) && positional;
        match &ev.kind {
            EventKind::AccessGranted { .. } => t.state.last_user = ev.user.clone(),
            EventKind::DoorOpened if contact => set_open(t, true, now),
            EventKind::DoorClosed if contact => set_open(t, false, now),
            EventKind::DoorRelocked if positional => t.state.unlocked = Some(false),
            EventKind::DoorHeldOpen { derived: false } => {
                t.state.held_open = true;
                t.held_reported = true;
            }
            EventKind::DoorForced => t.state.forced = true,
            EventKind::Tamper { active } => t.state.tamper = *active,
            EventKind::AcuOffline => t.state.acu_online = Some(false),
            EventKind::AcuOnline => t.state.acu_online = Some(true),
            EventKind::Battery { critical } => {
                t.state.battery_low = true;
                t.state.battery_critical = *critical;
            }
            EventKind::Other { code: 724 } => {
                t.state.battery_low = false;
                t.state.battery_critical = false;
            }
            EventKind::Mains { ok } => t.state.mains_failed = !*ok,
            _ => {}
        }
        out.extend(self.after_change(id, before, now));
        out
    }

    fn after_change(&mut self, id: DoorId, before: DoorState, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        let t = self.doors.get_mut(&id).expect("door exists");
        let moved = before.unlocked != t.state.unlocked || before.open != t.state.open;
        let state = t.state.clone();
        t.pending.retain_mut(|p| {
            let done = match p.expect {
                Expect::Unlocked => state.unlocked == Some(true) || state.open == Some(true),
                Expect::Locked => state.unlocked == Some(false),
                Expect::Lockdown(_) => false,
            };
            if !(done && moved) {
                return true;
            }
            match p.confirm("door status confirms the command") {
                Some(u) => {
                    out.push(Message::Command(u));
                    false
                }
                None => true,
            }
        });
        let _ = now;
        if t.state != before {
            t.state.updated = Some(Utc::now());
            out.push(Message::DoorState(t.state.clone()));
        }
        out
    }

    /// When [`DoorTracker::tick`] next has something to do: the earliest unreported
    /// held-open limit and command deadline (`None`: nothing pending, no tick needed until
    /// the state or the configuration changes). A deadline already past is returned as is.
    pub fn next_deadline(&self, cfg: &BTreeMap<DoorId, DoorConfig>) -> Option<Instant> {
        let waiting = |q: &[Pending]| {
            q.iter()
                .filter_map(|p| match p.phase {
                    Phase::Waiting(deadline) => Some(deadline),
                    _ => None,
                })
                .min()
        };
        let doors = self.doors.iter().flat_map(|(id, t)| {
            let held = match (t.open_since, cfg.get(id).and_then(|c| c.held_open_after)) {
                // A limit too large for the clock never comes (as in `tick`).
                (Some(since), Some(limit)) if !t.held_reported => since.checked_add(limit.get()),
                _ => None,
            };
            held.into_iter().chain(waiting(&t.pending))
        });
        doors.chain(waiting(&self.lockdown_pending)).min()
    }

    /// Time passes: derived held-open events and command timeouts.
    pub fn tick(&mut self, cfg: &BTreeMap<DoorId, DoorConfig>, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        for (id, t) in self.doors.iter_mut() {
            if let (Some(since), Some(limit)) =
                (t.open_since, cfg.get(id).and_then(|c| c.held_open_after))
                && !t.held_reported
                && now.saturating_duration_since(since) >= limit.get()
            {
                t.held_reported = true;
                t.state.held_open = true;
                t.state.last_event = Some("door_held_open".into());
                t.state.updated = Some(Utc::now());
                out.push(Message::Event(Box::new(derived_held_open(
                    &t.state,
                    limit.get(),
                    self.server_offset,
                ))));
                out.push(Message::DoorState(t.state.clone()));
            }
            out.extend(timeouts(
                &mut t.pending,
                now,
                "sent, but no door status or event confirmed it",
            ));
        }
        out.extend(timeouts(
            &mut self.lockdown_pending,
            now,
            "sent, but no lockdown event confirmed it",
        ));
        out
    }

    /// Decide whether and how to carry out `cmd`. `Err` is the rejection, ready to publish.
    pub fn plan(
        &mut self,
        cmd: &Command,
        doors: &BTreeMap<DoorId, DoorConfig>,
    ) -> Result<Plan, CommandUpdate> {
        let reject = |why: String| Err(update(cmd, CommandStatus::Rejected, why));
        if self.handled.contains(&cmd.request_id) {
            return reject(format!(
                "request_id {:?} was already handled; commands are never repeated",
                cmd.request_id
            ));
        }
        if !self.synced {
            return reject(
                "no door status from Net2 yet since start-up; try again in a moment".into(),
            );
        }
        // Monotonic: an NTP step since receipt must not change the verdict (see
        // `Command::received_at`).
        let age = cmd.age();
        if age > COMMAND_MAX_AGE {
            return reject(format!(
                "command is {}s old; not sending it late",
                age.as_secs()
            ));
        }
        let plan = self.plan_inner(cmd, doors);
        if plan.is_ok() {
            self.remember(&cmd.request_id);
        }
        plan
    }

    fn plan_inner(
        &mut self,
        cmd: &Command,
        doors: &BTreeMap<DoorId, DoorConfig>,
    ) -> Result<Plan, CommandUpdate> {
        let reject = |why: String| Err(update(cmd, CommandStatus::Rejected, why));
        match &cmd.kind {
            CommandKind::Camera { .. } | CommandKind::Replay { .. } => {
                reject("not a door command".into())
            }
            CommandKind::Lockdown { active } => Ok(Plan {
                path: "/api/v1/commands/controlLockdown",
                body: serde_json::json!({ "lockdown": active }),
            }),
            CommandKind::Door {
                door,
                action,
                duration_ms,
            } => {
                let Some(dc) = doors.get(door) else {
                    return reject(format!(
                        "door {door} is not configured (add doors.{door} to the config)"
                    ));
                };
                let tracked = self.doors.get(door);
                match dc.mode {
                    DoorMode::Disabled => {
                        return reject(format!("door {door} is disabled (doors.{door}.mode)"));
                    }
                    DoorMode::Momentary => {
                        // holdopen and close both pulse the relay and toggle the door, so
                        // decide from where the door is now: its contact when it has one
                        // (the relay says nothing about a door moved by its own remote),
                        // else the relay; and only from what Net2 said since start-up.
                        let Some(t) = tracked.filter(|t| t.observed) else {
                            return reject(format!(
                                "door {door} is momentary and its state has not been seen since start-up; not sending a toggle"
                            ));
                        };
                        if !t.pending.is_empty() {
                            return reject(format!(
                                "door {door} is momentary and the previous command is not confirmed yet"
                            ));
                        }
                        let is_open = if t.has_contact == Some(true) {
                            t.state.open
                        } else {
                            t.state.unlocked
                        };
                        match (action, is_open) {
                            (_, None) => {
                                return reject(format!(
                                    "door {door} is momentary and its relay state is unknown; not sending a toggle"
                                ));
                            }
                            (DoorAction::Open | DoorAction::HoldOpen, Some(true)) => {
                                return reject(format!(
                                    "door {door} is already open; a momentary relay would close it"
                                ));
                            }
                            (DoorAction::Close, Some(false)) => {
                                return reject(format!(
                                    "door {door} is already closed; a momentary relay would open it"
                                ));
                            }
                            _ => {}
                        }
                    }
                    DoorMode::Normal => {}
                }
                let id = *door;
                Ok(match action {
                    DoorAction::Open => match duration_ms.or(dc.open_time_ms) {
                        Some(ms) => Plan {
                            path: "/api/v1/commands/door/control",
                            body: serde_json::json!({
                                "DoorId": id,
                                "RelayFunction": {"RelayId": format!("Relay{}", dc.relay), "RelayAction": "TimedOpen", "RelayOpenTime": ms},
                                "LedFlash": 3
                            }),
                        },
                        None => Plan {
                            path: "/api/v1/commands/door/open",
                            body: serde_json::json!({ "doorId": id }),
                        },
                    },
                    DoorAction::HoldOpen => Plan {
                        path: "/api/v1/commands/door/holdopen",
                        body: serde_json::json!({ "doorId": id }),
                    },
                    DoorAction::Close => Plan {
                        path: "/api/v1/commands/door/close",
                        body: serde_json::json!({ "doorId": id }),
                    },
                })
            }
        }
    }

    fn remember(&mut self, id: &str) {
        if self.handled.insert(id.to_string()) {
            self.handled_order.push_back(id.to_string());
            while self.handled_order.len() > 10_000 {
                if let Some(old) = self.handled_order.pop_front() {
                    self.handled.remove(&old);
                }
            }
        }
    }

    fn pending_of(&mut self, cmd: &Command) -> Option<&mut Vec<Pending>> {
        match &cmd.kind {
            CommandKind::Door { door, .. } => Some(&mut self.door(*door).pending),
            CommandKind::Lockdown { .. } => Some(&mut self.lockdown_pending),
            CommandKind::Camera { .. } | CommandKind::Replay { .. } => None,
        }
    }

    /// `cmd` (planned) is about to be sent: from now on a status or event that confirms it
    /// counts, even one that arrives before Net2 answers. Call [`Self::sent`] or
    /// [`Self::not_sent`] afterwards.
    pub fn sending(&mut self, cmd: &Command) {
        let expect = match &cmd.kind {
            CommandKind::Door { action, .. } => match action {
                DoorAction::Open | DoorAction::HoldOpen => Expect::Unlocked,
                DoorAction::Close => Expect::Locked,
            },
            CommandKind::Lockdown { active } => Expect::Lockdown(*active),
            CommandKind::Camera { .. } | CommandKind::Replay { .. } => return,
        };
        let update = update(
            cmd,
            CommandStatus::Sent,
            "Net2 accepted the command (fire and forget)",
        );
        if let Some(q) = self.pending_of(cmd) {
            q.push(Pending {
                update,
                expect,
                phase: Phase::Sending,
                seen: None,
            });
        }
    }

    /// Net2 took the request: the "sent" update to publish. Its confirmation (already seen, or
    /// still to come) is held back until [`Self::announced`], so it never overtakes "sent".
    pub fn sent(&mut self, cmd: &Command) -> CommandUpdate {
        let mut u = update(
            cmd,
            CommandStatus::Sent,
            "Net2 accepted the command (fire and forget)",
        );
        if let Some(p) = self
            .pending_of(cmd)
            .and_then(|q| q.iter_mut().find(|p| p.update.request_id == cmd.request_id))
        {
            p.phase = Phase::Sent;
            u = p.update.clone();
        }
        u
    }

    /// "sent" was published: wait for confirmation until `timeout`, or return it now when a
    /// status confirmed the command while it was on its way.
    pub fn announced(
        &mut self,
        cmd: &Command,
        now: Instant,
        timeout: Duration,
    ) -> Option<CommandUpdate> {
        let q = self.pending_of(cmd)?;
        let i = q
            .iter()
            .position(|p| p.update.request_id == cmd.request_id)?;
        q[i].phase = Phase::Waiting(now + timeout);
        let detail = q[i].seen.take()?;
        q.remove(i).confirm(&detail)
    }

    /// `cmd` was not sent after all (or Net2 refused it): nothing to confirm.
    pub fn not_sent(&mut self, cmd: &Command) {
        if let Some(q) = self.pending_of(cmd) {
            q.retain(|p| p.update.request_id != cmd.request_id);
        }
    }

    pub fn rejected(
        cmd: &Command,
        status: CommandStatus,
        detail: impl Into<String>,
    ) -> CommandUpdate {
        update(cmd, status, detail)
    }
}

/// Commands whose confirmation did not come in time.
fn timeouts(q: &mut Vec<Pending>, now: Instant, detail: &str) -> Vec<Message> {
    let mut out = Vec::new();
    q.retain(|p| match p.phase {
        Phase::Waiting(deadline) if now >= deadline => {
            let mut u = p.update.clone();
            u.status = CommandStatus::Timeout;
            u.detail = detail.into();
            u.at = Utc::now();
            out.push(Message::Command(u));
            false
        }
        _ => true,
    });
    out
}

fn set_open(t: &mut Tracked, open: bool, now: Instant) {
    // A door restored from the database as open starts its held-open clock here too.
    if open && (t.state.open != Some(true) || t.open_since.is_none()) {
        t.open_since = Some(now);
    }
    if !open {
        t.open_since = None;
        t.held_reported = false;
        t.state.held_open = false;
        t.state.forced = false;
    }
    t.state.open = Some(open);
}

fn derived_held_open(s: &DoorState, after: Duration, offset: Option<chrono::FixedOffset>) -> Event {
    let now = Utc::now();
    let local = match offset {
        Some(o) => now.with_timezone(&o),
        None => now.with_timezone(&chrono::Local).fixed_offset(),
    };
    let fp = format!(
        "{}|held_open|0|{}",
        local.naive_local().format("%Y-%m-%dT%H:%M:%S"),
        s.id
    );
    Event {
        id: format!("net2:derived:{fp}"),
        source: super::classify::SOURCE.into(),
        source_id: None,
        fingerprint: fp,
        time: local,
        received: now,
        via: Via::Derived,
        door: Some(DoorRef {
            id: s.id,
            name: s.name.clone(),
        }),
        user: None,
        kind: EventKind::DoorHeldOpen { derived: true },
        code: None,
        description: Some(format!(
            "door contact open for more than {}s",
            after.as_secs()
        )),
        raw: serde_json::json!({"derived": "held_open", "door": s.id, "after_s": after.as_secs()})
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(id: &str, door: DoorId, action: DoorAction) -> Command {
        Command {
            request_id: id.into(),
            requester: "test".into(),
            kind: CommandKind::Door {
                door,
                action,
                duration_ms: None,
            },
            received: Utc::now(),
            received_at: tokio::time::Instant::now(),
        }
    }

    fn flags(closed: Option<bool>, relay: bool) -> StatusFlags {
        StatusFlags {
            door_contact_closed: closed,
            door_relay_open: Some(relay),
            ..Default::default()
        }
    }

    fn doors() -> BTreeMap<DoorId, DoorConfig> {
        let mut m = BTreeMap::new();
        m.insert(
            1,
            DoorConfig {
                held_open_after: Some(crate::config::HumanDuration::secs(30)),
                ..Default::default()
            },
        );
        m.insert(
            2,
            DoorConfig {
                mode: DoorMode::Momentary,
                ..Default::default()
            },
        );
        m.insert(
            3,
            DoorConfig {
                mode: DoorMode::Disabled,
                ..Default::default()
            },
        );
        m.insert(
            4,
            DoorConfig {
                open_time_ms: Some(8000),
                relay: 2,
                ..Default::default()
            },
        );
        m
    }

    #[test]
    fn refuses_before_first_sync_and_repeats() {
        let mut t = DoorTracker::default();
        let e = t
            .plan(&cmd("a", 1, DoorAction::Open), &doors())
            .unwrap_err();
        assert_eq!(e.status, CommandStatus::Rejected);
        assert!(e.detail.contains("no door status"));
        t.apply_status_poll(&[(1, flags(Some(true), false))], Instant::now());
        assert!(t.plan(&cmd("b", 1, DoorAction::Open), &doors()).is_ok());
        assert!(
            t.plan(&cmd("b", 1, DoorAction::Open), &doors())
                .unwrap_err()
                .detail
                .contains("already handled")
        );
        assert!(
            t.plan(&cmd("c", 9, DoorAction::Open), &doors())
                .unwrap_err()
                .detail
                .contains("not configured")
        );
        assert!(
            t.plan(&cmd("d", 3, DoorAction::Open), &doors())
                .unwrap_err()
                .detail
                .contains("disabled")
        );
    }

    #[test]
    fn plans_requests_per_door_config() {
        let mut t = DoorTracker::default();
        t.apply_status_poll(&[(1, flags(Some(true), false))], Instant::now());
        assert_eq!(
            t.plan(&cmd("a", 1, DoorAction::Open), &doors())
                .unwrap()
                .path,
            "/api/v1/commands/door/open"
        );
        let p = t.plan(&cmd("b", 4, DoorAction::Open), &doors()).unwrap();
        assert_eq!(p.path, "/api/v1/commands/door/control");
        assert_eq!(p.body["RelayFunction"]["RelayId"], "Relay2");
        assert_eq!(p.body["RelayFunction"]["RelayOpenTime"], 8000);
        assert_eq!(
            t.plan(&cmd("c", 1, DoorAction::HoldOpen), &doors())
                .unwrap()
                .path,
            "/api/v1/commands/door/holdopen"
        );
        assert_eq!(
            t.plan(&cmd("d", 1, DoorAction::Close), &doors())
                .unwrap()
                .body,
            serde_json::json!({"doorId": 1})
        );
    }

    #[test]
    fn momentary_door_never_toggles_the_wrong_way() {
        let now = Instant::now();
        let mut t = DoorTracker::default();
        // State restored from the database never decides a toggle.
        t.restore(vec![DoorState {
            id: 2,
            open: Some(false),
            unlocked: Some(false),
            ..Default::default()
        }]);
        t.apply_status_poll(&[(1, flags(Some(true), false))], now);
        assert!(
            t.plan(&cmd("a", 2, DoorAction::HoldOpen), &doors())
                .unwrap_err()
                .detail
                .contains("not been seen")
        );
        // A door without a contact: decided from the relay.
        t.apply_flags(2, &flags(None, true), now);
        assert!(
            t.plan(&cmd("b", 2, DoorAction::HoldOpen), &doors())
                .unwrap_err()
                .detail
                .contains("already open")
        );
        assert!(t.plan(&cmd("c", 2, DoorAction::Close), &doors()).is_ok());
        t.apply_flags(2, &flags(None, false), now);
        assert!(
            t.plan(&cmd("d", 2, DoorAction::Close), &doors())
                .unwrap_err()
                .detail
                .contains("already closed")
        );
        // A rejected request id may be retried once the reason is gone.
        assert!(t.plan(&cmd("e", 2, DoorAction::HoldOpen), &doors()).is_ok());
        // While a toggle is unconfirmed, a second one (a double tap) is refused.
        send(&mut t, &cmd("e", 2, DoorAction::HoldOpen), now);
        assert!(
            t.plan(&cmd("f", 2, DoorAction::HoldOpen), &doors())
                .unwrap_err()
                .detail
                .contains("not confirmed")
        );
        t.apply_flags(2, &flags(None, true), now);
        // With a contact, the contact wins: opened by its own remote, the relay is idle.
        t.apply_flags(2, &flags(Some(false), false), now);
        assert!(
            t.plan(&cmd("g", 2, DoorAction::HoldOpen), &doors())
                .unwrap_err()
                .detail
                .contains("already open")
        );
        assert!(t.plan(&cmd("h", 2, DoorAction::Close), &doors()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn old_commands_are_not_sent_late() {
        let mut t = DoorTracker::default();
        t.apply_status_poll(&[(1, flags(Some(true), false))], Instant::now());
        let c = cmd("late", 1, DoorAction::Open);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(t.plan(&c, &doors()).unwrap_err().detail.contains("old"));
    }

    /// The wall clock stepped back an hour after receipt (NTP on a Pi that booted with a
    /// clock ahead) makes `received` look an hour in the future: on the wall clock the
    /// command would stay "fresh" for an hour. Its age is monotonic, so 11 s later it is
    /// refused.
    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_stepped_back_does_not_keep_a_command_fresh() {
        let mut t = DoorTracker::default();
        t.apply_status_poll(&[(1, flags(Some(true), false))], Instant::now());
        let mut c = cmd("stepped-back", 1, DoorAction::Open);
        c.received = Utc::now() + chrono::Duration::hours(1);
        tokio::time::advance(Duration::from_secs(11)).await;
        let refused = t.plan(&c, &doors()).unwrap_err();
        assert!(refused.detail.contains("11s old"), "{refused:?}");
    }

    /// The wall clock stepped forward an hour after receipt: a fresh command is still sent.
    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_stepped_forward_does_not_make_a_fresh_command_stale() {
        let mut t = DoorTracker::default();
        t.apply_status_poll(&[(1, flags(Some(true), false))], Instant::now());
        let mut c = cmd("stepped-forward", 1, DoorAction::Open);
        c.received = Utc::now() - chrono::Duration::hours(1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(t.plan(&c, &doors()).is_ok());
    }

    #[test]
    fn backfilled_events_do_not_move_a_polled_door_and_contactless_doors_stay_unknown() {
        let now = Instant::now();
        let mut t = DoorTracker::default();
        t.apply_status_poll(
            &[(1, flags(Some(true), false)), (4, flags(None, false))],
            now,
        );
        let ev = |code: i64, door: DoorId, via: Via| {
            let v = serde_json::json!({"eventTime":"2026-01-05T06:00:01.017+01:00","id":1,"eventType":code,"address":door});
            let mut e = super::super::classify::rest_event(
                &v,
                &Default::default(),
                chrono::FixedOffset::east_opt(3600).unwrap(),
                Utc::now(),
            );
            e.via = via;
            e
        };
        t.apply_event(&ev(46, 1, Via::Rest), now);
        assert_eq!(
            t.state(1).unwrap().open,
            Some(false),
            "an old REST 'opened' is history"
        );
        t.apply_event(&ev(46, 1, Via::Live), now);
        assert_eq!(
            t.state(1).unwrap().open,
            Some(true),
            "a live 'opened' moves it"
        );
        t.apply_event(&ev(46, 4, Via::Live), now);
        assert_eq!(
            t.state(4).unwrap().open,
            None,
            "no contact: nothing would ever close it"
        );
    }

    /// What the command task does around the POST, with nothing arriving meanwhile.
    fn send(t: &mut DoorTracker, c: &Command, now: Instant) -> Vec<CommandStatus> {
        t.sending(c);
        let mut steps = vec![t.sent(c).status];
        steps.extend(
            t.announced(c, now, Duration::from_secs(10))
                .map(|u| u.status),
        );
        steps
    }

    fn statuses(out: &[Message], id: &str) -> Vec<CommandStatus> {
        out.iter()
            .filter_map(|m| match m {
                Message::Command(u) if u.request_id == id => Some(u.status),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn sent_command_is_confirmed_or_times_out() {
        let now = Instant::now();
        let mut t = DoorTracker::default();
        t.apply_status_poll(
            &[(1, flags(Some(true), false)), (4, flags(Some(true), false))],
            now,
        );
        let c = cmd("a", 1, DoorAction::Open);
        assert_eq!(send(&mut t, &c, now), [CommandStatus::Sent]);
        let out = t.apply_flags(1, &flags(Some(true), true), now);
        assert_eq!(statuses(&out, "a"), [CommandStatus::Confirmed]);
        assert_eq!(t.next_deadline(&doors()), None, "nothing waits");
        let c = cmd("b", 4, DoorAction::Open);
        send(&mut t, &c, now);
        // The housekeeping loop sleeps until exactly this.
        assert_eq!(
            t.next_deadline(&doors()),
            Some(now + Duration::from_secs(10))
        );
        assert!(t.tick(&doors(), now + Duration::from_secs(5)).is_empty());
        let out = t.tick(&doors(), now + Duration::from_secs(11));
        assert_eq!(statuses(&out, "b"), [CommandStatus::Timeout]);
        assert_eq!(t.next_deadline(&doors()), None);
    }

    #[test]
    fn a_door_that_moves_before_net2_answers_is_confirmed_after_sent() {
        // The ACU opens the relay and the status frame arrives while the POST is still on
        // its way: that frame confirms the command, and "confirmed" follows "sent".
        let now = Instant::now();
        let mut t = DoorTracker::default();
        t.apply_status_poll(&[(1, flags(Some(true), false))], now);
        let c = cmd("a", 1, DoorAction::Open);
        t.sending(&c);
        let out = t.apply_flags(1, &flags(Some(true), true), now);
        assert!(statuses(&out, "a").is_empty(), "nothing before sent");
        assert_eq!(t.sent(&c).status, CommandStatus::Sent);
        // Another frame while "sent" is being published: still held back.
        let out = t.apply_flags(1, &flags(Some(false), true), now);
        assert!(statuses(&out, "a").is_empty(), "nothing before sent is out");
        let confirmed = t.announced(&c, now, Duration::from_secs(10)).unwrap();
        assert_eq!(confirmed.status, CommandStatus::Confirmed);
        let later = t.tick(&doors(), now + Duration::from_secs(60));
        assert!(
            statuses(&later, "a").is_empty(),
            "confirmed once, no timeout"
        );
        // A command that was not sent leaves nothing behind.
        let c = cmd("b", 1, DoorAction::Close);
        t.sending(&c);
        t.not_sent(&c);
        let later = t.tick(&doors(), now + Duration::from_secs(60));
        assert!(statuses(&later, "b").is_empty());
        // Two commands in flight on one door each get their result.
        let (o, h) = (
            cmd("o", 1, DoorAction::Open),
            cmd("h", 1, DoorAction::Close),
        );
        t.apply_flags(1, &flags(Some(true), false), now);
        send(&mut t, &o, now);
        send(&mut t, &h, now);
        let out = t.apply_flags(1, &flags(Some(true), true), now);
        assert_eq!(statuses(&out, "o"), [CommandStatus::Confirmed]);
        let out = t.tick(&doors(), now + Duration::from_secs(11));
        assert_eq!(statuses(&out, "h"), [CommandStatus::Timeout]);
    }

    #[test]
    fn an_unconfirmed_lockdown_is_a_deadline_and_times_out() {
        let now = Instant::now();
        let mut t = DoorTracker::default();
        let c = Command {
            request_id: "l".into(),
            requester: "test".into(),
            kind: CommandKind::Lockdown { active: true },
            received: Utc::now(),
            received_at: now,
        };
        assert_eq!(send(&mut t, &c, now), [CommandStatus::Sent]);
        assert_eq!(
            t.next_deadline(&doors()),
            Some(now + Duration::from_secs(10))
        );
        let out = t.tick(&doors(), now + Duration::from_secs(10));
        assert_eq!(statuses(&out, "l"), [CommandStatus::Timeout]);
        assert_eq!(t.next_deadline(&doors()), None);
    }

    #[test]
    fn lockdown_confirmed_by_its_event_even_before_sent() {
        let now = Instant::now();
        let mut t = DoorTracker::default();
        let c = Command {
            request_id: "l".into(),
            requester: "test".into(),
            kind: CommandKind::Lockdown { active: true },
            received: Utc::now(),
            received_at: tokio::time::Instant::now(),
        };
        t.sending(&c);
        let ev = Event {
            kind: EventKind::Lockdown { active: true },
            door: None,
            ..derived_held_open(&DoorState::default(), Duration::ZERO, None)
        };
        assert!(statuses(&t.apply_event(&ev, now), "l").is_empty());
        t.sent(&c);
        let u = t.announced(&c, now, Duration::from_secs(10)).unwrap();
        assert_eq!(u.status, CommandStatus::Confirmed);
        assert_eq!(u.detail, "lockdown on reported by Net2");
    }

    #[test]
    fn held_open_is_derived_once_when_server_is_silent() {
        let now = Instant::now();
        let mut t = DoorTracker::default();
        let server = chrono::FixedOffset::east_opt(3600).unwrap();
        t.server_offset = Some(server);
        t.apply_status_poll(&[(1, flags(Some(false), false))], now);
        assert_eq!(
            t.next_deadline(&doors()),
            Some(now + Duration::from_secs(30))
        );
        assert!(t.tick(&doors(), now + Duration::from_secs(29)).is_empty());
        let out = t.tick(&doors(), now + Duration::from_secs(31));
        assert!(out.iter().any(|m| matches!(m, Message::Event(e) if e.kind == EventKind::DoorHeldOpen { derived: true })));
        // Dated in the server's zone, like the server's own events.
        assert!(
            out.iter()
                .any(|m| matches!(m, Message::Event(e) if *e.time.offset() == server))
        );
        assert!(t.state(1).unwrap().held_open);
        assert_eq!(
            t.next_deadline(&doors()),
            None,
            "reported: no deadline left"
        );
        assert!(
            t.tick(&doors(), now + Duration::from_secs(60)).is_empty(),
            "reported once"
        );
        // Closing resets; a door without a contact never derives anything.
        t.apply_flags(1, &flags(Some(true), false), now + Duration::from_secs(61));
        assert!(!t.state(1).unwrap().held_open);
        t.apply_flags(4, &flags(None, true), now);
        assert!(t.tick(&doors(), now + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn access_granted_updates_presence_and_last_user() {
        let mut t = DoorTracker::default();
        let v = serde_json::json!({"eventTime":"2026-01-05T06:00:01.017+01:00","id":1,"deviceName":"Kirkegade50 - Garage Port - ACU:7242929","eventType":26,"userID":8,"address":7242929,"firstName":"Mette","surname":"Holm"});
        let ev = super::super::classify::rest_event(
            &v,
            &Default::default(),
            chrono::FixedOffset::east_opt(3600).unwrap(),
            Utc::now(),
        );
        let out = t.apply_event(&ev, Instant::now());
        let p = out
            .iter()
            .find_map(|m| match m {
                Message::Presence(p) => Some(p),
                _ => None,
            })
            .unwrap();
        assert_eq!(p.user.id, 8);
        assert_eq!(p.site.as_deref(), Some("Kirkegade50"));
        assert_eq!(t.state(7242929).unwrap().last_user.as_ref().unwrap().id, 8);
    }
}
