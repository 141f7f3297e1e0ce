//! People: one home / away state per person, from Net2 badges, GATE Wi-Fi sessions and
//! Apptive QR entries. The rules are in [`engine`] (a pure state machine); this task feeds it
//! from the bus, runs its Wi-Fi away timers (on the wall clock, moved with every step NTP
//! makes to it: [`Engine::wall_stepped`]), persists its records and publishes
//! `Message::Person` and `person_arrived` / `person_left` events.
//!
//! # Why its bus queue is filtered
//! The task is a lossless bus sink that also publishes on the bus. A lossless publish waits
//! for room in every sink's queue — its own included: with its queue full it would wait on
//! itself for ever. So its queue is registered with [`wanted`] as a filter
//! ([`crate::bus::BusBuilder::sink_filtered`]): it receives only evidence (access granted,
//! QR granted, Wi-Fi events and session lists) and never its own output (person states,
//! presence events) nor the command updates the MQTT sink publishes. Nothing it publishes comes
//! back to it, and the sinks it waits on (store, MQTT) never wait on it, so there is no cycle.

pub mod engine;

pub use engine::{Change, Engine, Evidence, Record};

use crate::bus::Bus;
use crate::clock::{Clock, WallWatch};
use crate::config::ConfigRx;
use crate::model::{Event, EventKind, Message, PersonState, Via};
use crate::storage::Store;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The `state` table key of the persisted records.
pub const STATE_KEY: &str = "presence";
/// Source name of presence events (`gatehouse/presence/event`).
pub const SOURCE: &str = "presence";
/// A Wi-Fi away timer already due when gatehouse starts waits this long: the sources' backfill
/// may bring an entry that happened within the window while gatehouse was down.
const STARTUP_GRACE: Duration = Duration::from_secs(30);
/// Evidence taken from the queue before the records are written.
const BATCH: usize = 1000;
/// Timers are checked at least this often.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The bus messages the presence engine takes (its queue receives nothing else).
pub fn wanted(m: &Message) -> bool {
    match m {
        Message::Event(e) => matches!(
            e.kind,
            EventKind::AccessGranted { .. } | EventKind::QrGranted { .. } | EventKind::Wifi { .. }
        ),
        Message::WifiSessions { .. } => true,
        _ => false,
    }
}

/// The records kept from the last run (empty when none, or unreadable: logged).
pub fn load(store: &Store) -> BTreeMap<String, Record> {
    match store.state_get(STATE_KEY) {
        Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::error!(error = %e, "unable to read the stored presence states: everyone starts unknown");
            BTreeMap::new()
        }),
        Ok(None) => BTreeMap::new(),
        Err(e) => {
            tracing::error!(error = %e, "unable to read the stored presence states: everyone starts unknown");
            BTreeMap::new()
        }
    }
}

/// FNV-1a, 64 bits: a short stable digest of an evidence id for an event id.
fn digest(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The event announcing a flip. Its id is derived from the person, the time, the direction
/// and the evidence that caused it: published again after a crash (state not yet
/// persisted), the store keeps it once; two flips in one second are two events.
pub fn presence_event(s: &PersonState, cause: &str, now: DateTime<Utc>) -> Event {
    let home = s.home == Some(true);
    let at = s.since.unwrap_or(now);
    let id = format!(
        "{SOURCE}:{}:{}:{}:{:016x}",
        s.id,
        at.timestamp_millis(),
        if home { "arrived" } else { "left" },
        digest(cause)
    );
    Event {
        id: id.clone(),
        source: SOURCE.into(),
        source_id: None,
        fingerprint: id,
        time: at.fixed_offset(),
        received: now,
        via: Via::Derived,
        door: None,
        user: None,
        kind: EventKind::Presence {
            person: s.id.clone(),
            home,
            evidence: s.evidence.clone().unwrap_or_default(),
        },
        code: None,
        description: Some(format!(
            "{} {}",
            s.name,
            if home { "arrived" } else { "left" }
        )),
        raw: serde_json::to_string(s).unwrap_or_default(),
    }
}

struct Task {
    engine: Engine,
    store: Store,
    bus: Bus,
    clock: Arc<dyn Clock>,
    persisted: BTreeMap<String, Record>,
    /// The start-up grace's end while it runs ([`Engine::hold_timers`]).
    grace_until: Option<DateTime<Utc>>,
    /// Sees the wall clock stepped (NTP at a Pi's boot): the timers move with it.
    watch: WallWatch,
}

impl Task {
    async fn emit(&mut self, changes: Vec<Change>) {
        let now = self.clock.now();
        for c in changes {
            if c.flipped.is_some() {
                tracing::info!(person = %c.state.id, home = ?c.state.home, evidence = ?c.state.evidence, "presence changed");
                self.bus
                    .publish(Message::Event(Box::new(presence_event(
                        &c.state, &c.cause, now,
                    ))))
                    .await;
            }
            self.bus.publish(Message::Person(c.state)).await;
        }
    }

    /// Write the records when they changed (a session list every 30 s usually changes
    /// nothing: no write to the SD card).
    async fn persist(&mut self) {
        if self.engine.records() == &self.persisted {
            return;
        }
        let records = self.engine.records().clone();
        let text = match serde_json::to_string(&records) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "unable to encode presence states");
                return;
            }
        };
        match self
            .store
            .run(move |s| s.state_set(STATE_KEY, Some(&text)))
            .await
        {
            Ok(()) => self.persisted = records,
            Err(e) => {
                tracing::error!(error = %e, "unable to store presence states (kept in memory, written with the next change)")
            }
        }
    }

    /// A step of the wall clock since the last look moves every timer (and the grace) with
    /// it: they measure time that really passed, as the monotonic clock does.
    fn follow_steps(&mut self) {
        if let Some(step) = self.watch.observe(&*self.clock) {
            tracing::warn!(
                by_seconds = step.by.num_seconds(),
                "the wall clock was stepped: presence timers keep the time they had left"
            );
            self.engine.wall_stepped(step.by);
            if let Some(g) = self.grace_until.as_mut() {
                *g += step.by;
            }
        }
    }

    /// Ends the start-up grace once it is over: the engine's timers run again.
    fn grace_over(&mut self, now: DateTime<Utc>) -> bool {
        match self.grace_until {
            Some(g) if now < g => false,
            Some(_) => {
                self.grace_until = None;
                self.engine.hold_timers(None);
                true
            }
            None => true,
        }
    }

    async fn take(&mut self, m: &Message) {
        self.follow_steps();
        self.grace_over(self.clock.now());
        if let Some(ev) = Evidence::from_message(m) {
            let changes = self.engine.apply(&ev);
            self.emit(changes).await;
        }
    }
}

/// Runs until `cancel`; then takes what is already queued and persists.
pub async fn run(
    store: Store,
    bus: Bus,
    mut rx: mpsc::Receiver<Message>,
    cfg_rx: ConfigRx,
    clock: Arc<dyn Clock>,
    started: DateTime<Utc>,
    cancel: CancellationToken,
) {
    let persisted = load(&store);
    let mut engine = Engine::new(&cfg_rx.borrow(), persisted.clone());
    // Evidence stamped from now on (live, or GATE's session lists) runs no timer until the
    // grace is over: the backfill of the downtime is still coming.
    engine.hold_timers(Some(started));
    let grace_until = started + chrono::Duration::from_std(STARTUP_GRACE).unwrap_or_default();
    let watch = WallWatch::new(&*clock);
    let mut t = Task {
        engine,
        store,
        bus,
        clock,
        persisted,
        grace_until: Some(grace_until),
        watch,
    };
    // Every person has a state from the first second (kept from the last run, or unknown); no
    // event: nothing happened.
    for s in t.engine.states() {
        t.bus.publish(Message::Person(s)).await;
    }
    // Every Wi-Fi source with sessions has `wifi_away_after` from now to list them (a source
    // removed from the config while gatehouse was stopped never will: they end then).
    let changes = t.engine.expire_sources(started);
    t.emit(changes).await;
    t.persist().await;
    let mut cfg_watch = cfg_rx.clone();
    let mut cfg_alive = true;
    loop {
        // Checked at least every second while a timer runs: the wall clock can jump (NTP
        // after a Pi boots, a test's clock).
        t.follow_steps();
        let grace = t.grace_until.unwrap_or(DateTime::<Utc>::MIN_UTC);
        let wait = t.engine.next_deadline().map(|d| {
            (d.max(grace) - t.clock.now())
                .to_std()
                .unwrap_or_default()
                .min(MAX_SLEEP)
        });
        tokio::select! {
            _ = cancel.cancelled() => {
                while let Ok(m) = rx.try_recv() {
                    t.take(&m).await;
                }
                t.persist().await;
                return;
            }
            m = rx.recv() => {
                let Some(m) = m else {
                    t.persist().await;
                    return;
                };
                t.take(&m).await;
                // A burst (a backfill) is persisted once per batch.
                for _ in 0..BATCH {
                    let Ok(m) = rx.try_recv() else { break };
                    t.take(&m).await;
                }
                t.persist().await;
            }
            r = cfg_watch.changed(), if cfg_alive => {
                if r.is_err() {
                    cfg_alive = false;
                    continue;
                }
                let cfg = cfg_watch.borrow_and_update().clone();
                t.engine.configure(&cfg);
                for s in t.engine.states() {
                    t.bus.publish(Message::Person(s)).await;
                }
                t.persist().await;
            }
            _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))) => {
                t.follow_steps();
                let now = t.clock.now();
                // A timer due at start-up waits for the grace (the backfill).
                if !t.grace_over(now) {
                    continue;
                }
                let mut changes = t.engine.expire_sources(now);
                changes.extend(t.engine.tick(now));
                if !changes.is_empty() {
                    t.emit(changes).await;
                    t.persist().await;
                }
            }
        }
    }
}
