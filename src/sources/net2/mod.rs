//! The Paxton Net2 source: live events over classic SignalR, REST backfill and backstop
//! polls, door states, users (names only), and door commands from the bus.
//!
//! Tasks (each named, each in a retry loop): `net2.live` (the socket), `net2.events` (REST
//! backfill: at start, after every live (re)connect, then a slow safety poll while live and a
//! fast poll while not), `net2.doors` (`/doors` + `/doors/status` backstop), `net2.users`,
//! `net2.commands` and the housekeeping task (held-open derivation, command timeouts; it
//! sleeps until the next deadline and is woken by every change to `Core`). They share one
//! [`Core`] of pure state behind a mutex that is never held across I/O.
//!
//! What they learn about doors and users also goes to the [`Directory`] (for the REST API):
//! the door list, every door state published, which doors the status poll listed, and the
//! user list (names only).

pub mod classify;
pub mod client;
pub mod dedupe;
pub mod doors;
mod live;
pub mod signalr;
pub mod types;
pub mod zone;

use crate::bus::Bus;
use crate::config::{ConfigRx, Net2Config};
use crate::directory::Directory;
use crate::error::{Error, ErrorKind, Result};
use crate::model::*;
use crate::storage::Store;
use crate::task::{Backoff, RunEnd, supervise};
use chrono::{DateTime, FixedOffset, Offset, Utc};
use classify::{Names, SOURCE};
use client::Net2Client;
use dedupe::{Admit, Deduper};
use doors::DoorTracker;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zone::{Live, ServerZone};

/// Wrong credentials: wait this long before trying again (operators get locked out).
const AUTH_BACKOFF: Duration = Duration::from_secs(300);
/// Raw payloads kept in `rejects` are cut at this size.
const MAX_REJECT_BYTES: usize = 64 * 1024;

pub(crate) fn net2_err(e: Error, msg: &str) -> Error {
    Error::with_source(e.kind(), msg.to_string(), e)
}

/// Query start for a REST backfill from `cursor` (server-local wall time, as the `where`
/// clause wants). It overlaps the last minutes (events whose time is a little older than the
/// newest seen, e.g. buffered by an ACU) — duplicates are dropped by id. When the zone offset
/// changed since the cursor (DST fall-back repeats an hour of wall time), the overlap grows by
/// the difference so the repeated hour is fetched.
pub fn since_cursor(
    cursor: DateTime<FixedOffset>,
    now: DateTime<FixedOffset>,
) -> chrono::NaiveDateTime {
    let shift = (cursor.offset().local_minus_utc() - now.offset().local_minus_utc()).abs();
    cursor.naive_local() - BACKFILL_OVERLAP - chrono::Duration::seconds(shift as i64)
}

const BACKFILL_OVERLAP: chrono::Duration = chrono::Duration::minutes(2);

/// This machine's UTC offset now: only a last resort for server-local times (a REST query
/// window before anything better is known).
fn machine_offset() -> FixedOffset {
    chrono::Local::now().fixed_offset().offset().to_owned()
}

/// Use one live item (arrived at `at`): an event once (the deduper decides), then the state
/// it changed; door flags and lock changes move the door.
fn apply_live(c: &mut Core, item: Live, at: Instant, out: &mut Vec<Message>) {
    match item {
        Live::Event { ev, .. } => {
            if c.dedupe.admit_live(&ev.fingerprint, &ev.id) == Admit::New {
                // In arrival order: the event, then the state it changed.
                let derived = c.tracker.apply_event(&ev, at);
                out.push(Message::Event(ev));
                out.extend(derived);
            }
        }
        Live::Flags(door, flags) => out.extend(c.tracker.apply_flags(door, &flags, at)),
        Live::Locked(door, locked) => out.extend(c.tracker.apply_locked(door, locked, at)),
    }
}

/// Pure state shared by the tasks.
struct Core {
    names: Names,
    dedupe: Deduper,
    tracker: DoorTracker,
    /// Newest REST event time seen (server-local, with offset).
    cursor: Option<DateTime<FixedOffset>>,
    /// The server's UTC offset, and the live items waiting for it.
    zone: ServerZone,
    online: Option<bool>,
    live: bool,
}

pub struct Net2Source {
    client: Arc<Net2Client>,
    core: Mutex<Core>,
    bus: Bus,
    cfg_rx: ConfigRx,
    cancel: CancellationToken,
    live_tx: watch::Sender<bool>,
    backfill_now: Notify,
    status_now: Notify,
    /// Core may have changed: the housekeeping loop recomputes its deadlines.
    housekeeping: Notify,
    /// Passes of the housekeeping loop (its wake-ups, for tests and diagnosis).
    housekeeping_passes: std::sync::atomic::AtomicU64,
    /// The first user list has been fetched (or given up on).
    users_loaded: watch::Sender<bool>,
    directory: Directory,
}

impl Net2Source {
    fn cfg(&self) -> Net2Config {
        self.cfg_rx
            .borrow()
            .sources
            .net2
            .clone()
            .unwrap_or_default()
    }

    /// The way into `Core` for everything that may change it: the housekeeping loop is
    /// woken to recompute its deadlines (a door opened, a command is waiting). A spare wake
    /// costs one pass; a missing one would delay a held-open alert or a command timeout.
    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        let guard = self.lock_quiet();
        // Stored as a permit when the loop is not waiting yet, so a change between its
        // deadline computation and its wait is not missed. It then waits on this lock.
        self.housekeeping.notify_one();
        guard
    }

    /// `lock` without waking the housekeeping loop: for that loop only (it would wake itself).
    fn lock_quiet(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publish in order; door states also update the directory (before the bus has them).
    async fn publish_all(&self, msgs: Vec<Message>) {
        for m in msgs {
            if let Message::DoorState(st) = &m {
                self.directory.door_state(st, Utc::now());
            }
            self.bus.publish(m).await;
        }
    }

    /// Log and keep a payload we could not use.
    async fn reject(&self, context: &str, error: &str, raw: &str) {
        let snippet: String = raw.chars().take(200).collect();
        tracing::warn!(context, error, raw = %snippet, bytes = raw.len(), "malformed Net2 payload kept raw");
        // Keep enough to diagnose; an HTML page repeated every poll must not fill the SD card.
        let mut raw = raw.to_string();
        if raw.len() > MAX_REJECT_BYTES {
            let mut cut = MAX_REJECT_BYTES;
            while !raw.is_char_boundary(cut) {
                cut -= 1;
            }
            raw.truncate(cut);
        }
        self.bus
            .publish(Message::Reject {
                source: SOURCE.into(),
                context: context.into(),
                error: error.into(),
                raw,
            })
            .await;
    }

    async fn set_live(&self, up: bool) {
        let changed = {
            let mut c = self.lock();
            std::mem::replace(&mut c.live, up) != up
        };
        self.live_tx.send_replace(up);
        if changed {
            if up {
                // Anything missed while the socket was down comes over REST.
                self.backfill_now.notify_one();
            }
            self.publish_health().await;
        }
    }

    async fn set_online(&self, online: bool, detail: &str) {
        let changed = {
            let mut c = self.lock();
            c.online.replace(online) != Some(online)
        };
        if changed {
            if online {
                tracing::info!("Net2 server reachable");
            } else {
                tracing::warn!(detail, "Net2 server unreachable");
            }
            self.publish_health_detail(detail).await;
        }
    }

    /// Reachability follows every REST round trip.
    async fn track<T>(&self, r: Result<T>) -> Result<T> {
        match &r {
            Ok(_) => self.set_online(true, "").await,
            Err(e) if e.kind() != ErrorKind::Protocol => {
                self.set_online(false, &e.to_string()).await
            }
            Err(_) => {}
        }
        r
    }

    async fn publish_health(&self) {
        self.publish_health_detail("").await
    }

    async fn publish_health_detail(&self, detail: &str) {
        let (online, live, ready) = {
            let c = self.lock();
            (c.online.unwrap_or(false), c.live, c.tracker.is_synced())
        };
        self.bus
            .publish(Message::Health(SourceHealth {
                source: SOURCE.into(),
                online,
                live,
                ready,
                detail: detail.into(),
            }))
            .await;
    }

    /// Events are named from the user list: let the first fetch finish before taking events
    /// (bounded, so a failing `/users` does not hold them back).
    async fn names_ready(&self) {
        let mut rx = self.users_loaded.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v)).await;
    }

    fn subscribed_doors(&self) -> Vec<DoorId> {
        let mut ids: Vec<DoorId> = self.lock().names.doors.keys().copied().collect();
        ids.extend(self.cfg_rx.borrow().doors.keys().copied());
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn door_names(&self, c: &mut Core) {
        let cfg = self.cfg_rx.borrow();
        for (id, d) in &cfg.doors {
            if let Some(n) = &d.name {
                c.names.doors.insert(*id, n.clone());
                c.tracker.set_name(*id, n);
            }
        }
    }

    async fn on_live_frame(&self, frame: signalr::Frame) {
        let signalr::Frame::Messages(msgs) = frame else {
            return;
        };
        let now = Utc::now();
        let mut held = false;
        for m in msgs {
            let out = self.take_live_message(&m, now, &mut held);
            self.publish_all(out).await;
        }
        if held {
            tracing::debug!(
                "Net2 live items held until a REST answer shows the server's UTC offset"
            );
            self.backfill_now.notify_one();
        }
    }

    /// One hub message: its items through the zone, in order; what can be used now is.
    fn take_live_message(
        &self,
        m: &signalr::HubMessage,
        now: DateTime<Utc>,
        held: &mut bool,
    ) -> Vec<Message> {
        let mut items = Vec::new();
        let mut c = self.lock();
        match m.method.as_str() {
            "liveevents" => {
                // Live times are naive: `c.zone` places them in the server's zone below (or
                // holds them until it is known), so the offset given here is a placeholder.
                let provisional = c.zone.offset().unwrap_or(Utc.fix());
                for item in m.items() {
                    let ev = classify::live_event(item, &c.names, provisional, now);
                    if let EventKind::Unparsed { error } = &ev.kind {
                        tracing::warn!(error, raw = %ev.raw, "malformed Net2 live event kept raw");
                    }
                    // Net2 sends live times without an offset; should one ever come with
                    // one, it is the server's word like a REST time.
                    let naive = match item
                        .get("eventTime")
                        .and_then(|t| t.as_str())
                        .and_then(classify::parse_time)
                    {
                        Some((_, Some(_))) => {
                            c.zone.learn(ev.time);
                            false
                        }
                        Some((_, None)) => true,
                        None => false,
                    };
                    items.push(Live::Event {
                        ev: Box::new(ev),
                        naive,
                    });
                }
            }
            "doorstatusevents" => {
                for item in m.items() {
                    match serde_json::from_value::<types::LiveDoorStatus>(item.clone()) {
                        Ok(s) => items.push(Live::Flags(s.door_id, s.status.unwrap_or_default())),
                        Err(e) => {
                            tracing::warn!(error = %e, raw = %item, "malformed doorStatusEvents item")
                        }
                    }
                }
            }
            "doorevents" => {
                for item in m.items() {
                    match serde_json::from_value::<types::LiveDoorEvent>(item.clone()) {
                        Ok(types::LiveDoorEvent {
                            door_id,
                            locked: Some(l),
                        }) => items.push(Live::Locked(door_id, l)),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, raw = %item, "malformed doorEvents item")
                        }
                    }
                }
            }
            other => tracing::debug!(method = other, "ignoring Net2 hub message"),
        }
        let mut out = Vec::new();
        for item in items {
            match c.zone.arrive(item, Instant::now(), now) {
                Some(item) => apply_live(&mut c, item, Instant::now(), &mut out),
                None => *held = true,
            }
        }
        out
    }

    /// Fetch REST events since the cursor until caught up. Returns how many were new.
    async fn backfill(&self) -> Result<usize> {
        let cfg = self.cfg();
        let page = cfg.page_size.to_string();
        let mut new = 0;
        // Only the first page overlaps the cursor; later pages continue from the newest event
        // of the page before (inclusive: the boundary events come again and are deduped by id).
        let mut next: Option<chrono::NaiveDateTime> = None;
        loop {
            let since = next.unwrap_or_else(|| {
                let c = self.lock();
                let server_now = c.zone.now_offset(machine_offset());
                c.cursor
                    .map(|t| since_cursor(t, Utc::now().with_timezone(&server_now)))
                    .unwrap_or_else(|| {
                        let start = Utc::now()
                            - chrono::Duration::from_std(cfg.initial_backfill.get())
                                .unwrap_or_default();
                        start.with_timezone(&server_now).naive_local()
                    })
            });
            // Server-local time, no zone suffix (the server rejects or misreads one).
            let q = format!("eventTime>='{}'", since.format("%Y-%m-%dT%H:%M:%S%.3f"));
            // Live items that arrived before this moment should have their copy in the answer.
            let asked = Utc::now();
            let body = self
                .client
                .get(
                    "/api/v1/events",
                    &[
                        ("where", &q),
                        ("orderBy", "eventTime ASC"),
                        ("rowCount", &page),
                    ],
                )
                .await?;
            // Net2 answers "no events" with an empty body, not `[]`.
            let items: Vec<serde_json::Value> = match serde_json::from_str(&body.text) {
                _ if body.text.trim().is_empty() => Vec::new(),
                Ok(v) => v,
                Err(e) => {
                    self.reject("GET /api/v1/events", &e.to_string(), &body.text)
                        .await;
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("Net2 events answer is not a JSON array: {e}"),
                    ));
                }
            };
            let n = items.len();
            let now = Utc::now();
            let (out, page_newest) = {
                let mut c = self.lock();
                let mut out = Vec::new();
                let before = c.cursor;
                let mut page_newest: Option<chrono::NaiveDateTime> = None;
                let mut events = Vec::with_capacity(items.len());
                let mut page = Vec::with_capacity(items.len());
                for item in &items {
                    // A REST time without an offset (none seen so far) is read in the
                    // offset of the others.
                    let offset = c.zone.offset().unwrap_or_else(machine_offset);
                    let ev = classify::rest_event(item, &c.names, offset, now);
                    if let EventKind::Unparsed { error } = &ev.kind {
                        tracing::warn!(error, raw = %ev.raw, "malformed Net2 event kept raw");
                    } else {
                        // Learn the server's zone from the events themselves.
                        c.zone.learn(ev.time);
                        page.push((ev.fingerprint.clone(), ev.time));
                        let local = ev.time.naive_local();
                        page_newest = page_newest.max(Some(local));
                        if c.cursor.is_none_or(|t| ev.time > t) {
                            c.cursor = Some(ev.time);
                        }
                    }
                    events.push(ev);
                }
                // Held live items first: they arrived before their REST copies, which then
                // pair with them.
                let last = n < cfg.page_size as usize || page_newest.is_none_or(|t| t <= since);
                for (item, at) in c.zone.rest_answer(&page, asked, last) {
                    apply_live(&mut c, item, at, &mut out);
                }
                c.tracker.server_offset = c.zone.offset();
                let keys: Vec<_> = events
                    .iter()
                    .map(|e| (e.source_id, e.fingerprint.as_str(), e.id.as_str()))
                    .collect();
                let admits = c.dedupe.admit_rest_page(&keys);
                for (ev, admit) in events.into_iter().zip(admits) {
                    match admit {
                        Admit::New => {
                            let derived = c.tracker.apply_event(&ev, Instant::now());
                            out.push(Message::Event(Box::new(ev)));
                            out.extend(derived);
                        }
                        Admit::Paired {
                            event_id,
                            source_id,
                        } => out.push(Message::Paired {
                            event_id,
                            source_id,
                        }),
                        Admit::DuplicateId | Admit::DuplicateCopy => {}
                    }
                }
                if let Some(t) = c.cursor.filter(|t| Some(*t) != before) {
                    out.push(Message::Cursor {
                        source: SOURCE.into(),
                        position: t.to_rfc3339(),
                    });
                }
                (out, page_newest)
            };
            new += out
                .iter()
                .filter(|m| matches!(m, Message::Event(_)))
                .count();
            self.publish_all(out).await;
            if n < cfg.page_size as usize {
                return Ok(new);
            }
            match page_newest {
                Some(t) if t > since => next = Some(t),
                _ => {
                    tracing::warn!(
                        page = n,
                        "a full page of Net2 events shares one timestamp; raise sources.net2.page_size"
                    );
                    return Ok(new);
                }
            }
        }
    }

    async fn poll_doors(&self) -> Result<()> {
        let list = self.client.get("/api/v1/doors", &[]).await?;
        if list.text.trim().is_empty() {
            // Net2 answers an empty list with an empty body. After doors were listed that is
            // more likely a hiccup than every door deleted: the directory keeps them.
            if self.directory.doors_fetched().is_none() {
                self.directory.set_doors(Vec::new(), Utc::now());
            }
        } else {
            match serde_json::from_str::<Vec<types::DoorEntry>>(&list.text) {
                Ok(doors) => {
                    let listed = {
                        let mut c = self.lock();
                        for d in &doors {
                            if let Some(n) = &d.name {
                                c.names.doors.entry(d.id).or_insert_with(|| n.clone());
                                c.tracker.set_name(d.id, n);
                            }
                        }
                        self.door_names(&mut c);
                        // Named as everywhere else: the config's name, else Net2's (which may
                        // have changed since the last answer).
                        let cfg = self.cfg_rx.borrow();
                        doors
                            .into_iter()
                            .map(|d| {
                                let own = cfg.doors.get(&d.id).and_then(|c| c.name.clone());
                                (d.id, own.or(d.name))
                            })
                            .collect()
                    };
                    self.directory.set_doors(listed, Utc::now());
                }
                Err(e) => {
                    self.reject("GET /api/v1/doors", &e.to_string(), &list.text)
                        .await
                }
            }
        }
        let st = self.client.get("/api/v1/doors/status", &[]).await?;
        let entries: Vec<types::DoorStatusEntry> = if st.text.trim().is_empty() {
            Vec::new()
        } else {
            match serde_json::from_str(&st.text) {
                Ok(v) => v,
                Err(e) => {
                    self.reject("GET /api/v1/doors/status", &e.to_string(), &st.text)
                        .await;
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        "Net2 door status answer is not the expected JSON",
                    ));
                }
            }
        };
        let flat: Vec<_> = entries
            .into_iter()
            .map(|e| (e.id, e.status.unwrap_or_default()))
            .collect();
        self.directory
            .status_poll(flat.iter().map(|(id, _)| *id), Utc::now());
        let (out, first) = {
            let mut c = self.lock();
            let first = !c.tracker.is_synced();
            (c.tracker.apply_status_poll(&flat, Instant::now()), first)
        };
        self.publish_all(out).await;
        if first {
            self.publish_health_detail("door status synced").await;
        }
        Ok(())
    }

    /// Fetch the user list: names for events, and the directory's users. Returns how many.
    async fn refresh_users(&self) -> Result<usize> {
        let body = self.client.get("/api/v1/users", &[]).await?;
        let now = Utc::now();
        if body.text.trim().is_empty() {
            // Net2 answers an empty list with an empty body. After users were listed that is
            // more likely a hiccup than every user deleted: keep them (a failed fetch).
            if self.directory.user_count() > 0 {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    "Net2 answered the user list with an empty body",
                ));
            }
            self.directory.set_users(Vec::new(), now);
            return Ok(0);
        }
        // Never log or keep this payload: it carries PINs and phone numbers.
        let users = types::parse_users(&body.text)?;
        let n = users.len();
        let server = self.lock().zone.offset().unwrap_or_else(machine_offset);
        let entries = users
            .iter()
            .map(|u| u.directory_user(now, server))
            .collect();
        self.lock().names.users = users
            .into_iter()
            .filter_map(|u| u.display_name().map(|n| (u.id, n)))
            .collect();
        self.directory.set_users(entries, now);
        Ok(n)
    }

    async fn handle_command(&self, cmd: Command) {
        // A command's age is read on the monotonic clock from its receipt instant
        // (`Command::received_at`), never from its wall-clock `received`: NTP stepping a Pi's
        // clock between receipt and send must not make a stale command look fresh (sent
        // late: unsafe) or a fresh one stale.
        let doors = self.cfg_rx.borrow().doors.clone();
        // Planned and expected in one step: a status that arrives while the request is on
        // its way confirms it, and a second toggle of a momentary door is refused meanwhile.
        let plan = {
            let mut c = self.lock();
            let plan = c.tracker.plan(&cmd, &doors);
            if plan.is_ok() {
                c.tracker.sending(&cmd);
            }
            plan
        };
        let plan = match plan {
            Ok(p) => p,
            Err(rejection) => {
                tracing::warn!(request_id = %cmd.request_id, requester = %cmd.requester, reason = %rejection.detail, "door command rejected");
                self.bus.publish(Message::Command(rejection)).await;
                return;
            }
        };
        self.bus
            .publish(Message::Command(DoorTracker::rejected(
                &cmd,
                CommandStatus::Accepted,
                plan.path,
            )))
            .await;
        tracing::info!(request_id = %cmd.request_id, requester = %cmd.requester, path = plan.path, "sending door command");
        // Getting a token can take a while (429 backoff): check the age again right before
        // sending, so a door never opens long after it was asked to.
        let token = self.client.access_token().await;
        let age = cmd.age();
        if token.is_err() || age > doors::COMMAND_MAX_AGE {
            let why = match token {
                Err(e) => format!("no Net2 token: {e}; nothing sent"),
                Ok(_) => format!(
                    "command became {}s old while waiting for Net2; nothing sent",
                    age.as_secs()
                ),
            };
            tracing::warn!(request_id = %cmd.request_id, reason = %why, "door command not sent");
            self.lock().tracker.not_sent(&cmd);
            self.bus
                .publish(Message::Command(DoorTracker::rejected(
                    &cmd,
                    CommandStatus::Failed,
                    why,
                )))
                .await;
            return;
        }
        // Sent exactly once: no retry on timeouts or errors (the door may have moved).
        let res = self.client.post(plan.path, &plan.body).await;
        let refused = match &res {
            Ok(b) => {
                serde_json::from_str::<types::CommandResponse>(&b.text)
                    .ok()
                    .and_then(|r| r.output)
                    .map(|o| {
                        o.errors.as_ref().is_none_or(|e| e.is_null())
                            || o.status.as_deref() == Some("FireAndForget")
                    })
                    == Some(false)
            }
            Err(_) => true,
        };
        if refused {
            self.lock().tracker.not_sent(&cmd);
            let detail = match res {
                Ok(b) => format!("Net2 reported errors: {}", b.text),
                Err(e) => e.to_string(),
            };
            tracing::info!(request_id = %cmd.request_id, detail = %detail, "door command failed");
            self.bus
                .publish(Message::Command(DoorTracker::rejected(
                    &cmd,
                    CommandStatus::Failed,
                    detail,
                )))
                .await;
            return;
        }
        // In order: "sent" is out before its confirmation (which may already have come).
        let sent = self.lock().tracker.sent(&cmd);
        tracing::info!(request_id = %cmd.request_id, detail = %sent.detail, "door command sent");
        self.bus.publish(Message::Command(sent)).await;
        let timeout = self.cfg().command_confirm_timeout.get();
        let confirmed = self.lock().tracker.announced(&cmd, Instant::now(), timeout);
        match confirmed {
            Some(u) => self.bus.publish(Message::Command(u)).await,
            // Confirmation comes from the next status; ask for it soon.
            None => self.status_now.notify_one(),
        }
    }
}

/// Start the Net2 tasks. `commands` is the bus's command queue.
pub fn spawn(
    store: &Store,
    bus: Bus,
    cfg_rx: ConfigRx,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    directory: Directory,
) -> Result<Vec<JoinHandle<()>>> {
    let cfg = cfg_rx
        .borrow()
        .sources
        .net2
        .clone()
        .ok_or_else(|| Error::new(ErrorKind::Config, "sources.net2 missing"))?;
    let client = Arc::new(Net2Client::new(&cfg)?);
    let mut dedupe = Deduper::default();
    let cursor = store
        .cursor(SOURCE)?
        .and_then(|c| DateTime::parse_from_rfc3339(&c).ok());
    if let Some(c) = cursor {
        let keys =
            store.recent_keys(SOURCE, (c - chrono::Duration::hours(6)).timestamp_millis())?;
        tracing::info!(cursor = %c, known = keys.ids.len(), "resuming Net2 events from the stored cursor");
        dedupe.seed(keys.ids, keys.live);
    }
    let mut tracker = DoorTracker::default();
    tracker.restore(store.door_states()?);
    // What was known at the last stop, until Net2 says otherwise (the directory lists a door
    // once Net2's door list has it).
    for st in tracker.states() {
        directory.door_state(st, Utc::now());
    }
    // Never this machine's zone: the server's is learned from REST (see `zone`).
    let zone = ServerZone::new(cursor);
    tracker.server_offset = zone.offset();
    let (live_tx, _) = watch::channel(false);
    let src = Arc::new(Net2Source {
        client,
        core: Mutex::new(Core {
            names: Names::default(),
            dedupe,
            tracker,
            cursor,
            zone,
            online: None,
            live: false,
        }),
        bus,
        cfg_rx,
        cancel: cancel.clone(),
        live_tx,
        backfill_now: Notify::new(),
        status_now: Notify::new(),
        housekeeping: Notify::new(),
        housekeeping_passes: Default::default(),
        users_loaded: watch::channel(false).0,
        directory,
    });
    src.door_names(&mut src.lock());
    let backoff = || Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut tasks = Vec::new();

    if cfg.live {
        let s = src.clone();
        tasks.push(supervise(
            "net2.live",
            cancel.clone(),
            backoff(),
            AUTH_BACKOFF,
            move || {
                let s = s.clone();
                async move { live::run_once(&s).await }
            },
        ));
    }

    let s = src.clone();
    tasks.push(supervise(
        "net2.events",
        cancel.clone(),
        backoff(),
        AUTH_BACKOFF,
        move || {
            let s = s.clone();
            async move {
                s.names_ready().await;
                loop {
                    let n = s.track(s.backfill().await).await?;
                    if n > 0 {
                        tracing::debug!(new = n, "Net2 events fetched over REST");
                    }
                    let mut live_rx = s.live_tx.subscribe();
                    let c = s.cfg();
                    let every = if *live_rx.borrow() {
                        c.safety_poll_interval
                    } else {
                        c.poll_interval
                    }
                    .get();
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = s.backfill_now.notified() => {}
                        _ = live_rx.changed() => {}
                        _ = s.cancel.cancelled() => return Ok(RunEnd::Cancelled),
                    }
                }
            }
        },
    ));

    let s = src.clone();
    tasks.push(supervise(
        "net2.doors",
        cancel.clone(),
        backoff(),
        AUTH_BACKOFF,
        move || {
            let s = s.clone();
            async move {
                loop {
                    s.track(s.poll_doors().await).await?;
                    let mut live_rx = s.live_tx.subscribe();
                    let c = s.cfg();
                    let every = if *live_rx.borrow() {
                        c.door_status_safety_interval
                    } else {
                        c.door_status_interval
                    }
                    .get();
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = s.status_now.notified() => {
                            // Give the relay a moment to move before asking.
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        _ = live_rx.changed() => {}
                        _ = s.cancel.cancelled() => return Ok(RunEnd::Cancelled),
                    }
                }
            }
        },
    ));

    let s = src.clone();
    tasks.push(supervise(
        "net2.users",
        cancel.clone(),
        backoff(),
        AUTH_BACKOFF,
        move || {
            let s = s.clone();
            async move {
                // A failed fetch keeps the previous list and never stops the source: one
                // warning per failure streak, retried with a backoff (never slower than the
                // refresh itself).
                let mut retry = Backoff::new(Duration::from_secs(2), Duration::from_secs(120));
                let mut failures = 0u32;
                loop {
                    let every = s.cfg().users_refresh_interval.get();
                    let wait = match s.refresh_users().await {
                        Ok(n) => {
                            s.set_online(true, "").await;
                            if failures > 0 {
                                tracing::info!(users = n, failures, "Net2 user list fetched again");
                            } else {
                                tracing::debug!(users = n, "Net2 user names refreshed");
                            }
                            failures = 0;
                            retry.reset();
                            every
                        }
                        Err(e) => {
                            let kept = s.directory.user_count();
                            if failures == 0 {
                                tracing::warn!(error = %e, kept, "unable to fetch the Net2 user list; keeping the previous one");
                            } else {
                                tracing::debug!(error = %e, failures, "Net2 user list still failing");
                            }
                            failures += 1;
                            retry.next_delay().min(every)
                        }
                    };
                    s.users_loaded.send_replace(true);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = s.cancel.cancelled() => return Ok(RunEnd::Cancelled),
                    }
                }
            }
        },
    ));

    let s = src.clone();
    tasks.push(tokio::spawn(async move {
        let mut commands = commands;
        loop {
            tokio::select! {
                c = commands.recv() => match c {
                    Some(c) => s.handle_command(c).await,
                    None => return,
                },
                _ = s.cancel.cancelled() => {
                    // Whatever is still queued is answered (and audited), never sent.
                    commands.close();
                    while let Some(c) = commands.recv().await {
                        let u = DoorTracker::rejected(&c, CommandStatus::Rejected, "gatehouse is shutting down; nothing sent");
                        s.bus.publish(Message::Command(u)).await;
                    }
                    return;
                },
            }
        }
    }));

    tasks.push(tokio::spawn(housekeeping(src.clone())));
    Ok(tasks)
}

/// Longest sleep of the housekeeping loop. Its deadlines are kept exactly (monotonic clock,
/// woken by every change to `Core`); this bounds only how late the zone's wall-clock hold
/// limit can be after the wall clock is stepped (NTP at boot), and re-checks the request
/// timeout setting.
const HOUSEKEEPING_CAP: Duration = Duration::from_secs(30);

/// Time-driven work: derived held-open events, command timeouts, live items REST has not
/// settled in time. It sleeps until the earliest deadline instead of ticking every second
/// (idle wake-ups on a Pi), and wakes early when `Core` or the configuration changes.
async fn housekeeping(s: Arc<Net2Source>) {
    let mut cfg_rx = s.cfg_rx.clone();
    let mut cfg_open = true;
    let mut last_timeout = None;
    loop {
        s.housekeeping_passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let timeout = s.cfg().request_timeout.get();
        if last_timeout != Some(timeout) {
            s.client.set_timeout(timeout);
            last_timeout = Some(timeout);
        }
        let doors = s.cfg_rx.borrow().doors.clone();
        let (out, due, wall_due) = {
            let mut c = s.lock_quiet();
            // Live items REST has not settled in time go with the best offset known.
            let mut out = Vec::new();
            for (item, at) in c.zone.overdue(Utc::now()) {
                apply_live(&mut c, item, at, &mut out);
            }
            out.extend(c.tracker.tick(&doors, Instant::now()));
            (out, c.tracker.next_deadline(&doors), c.zone.next_deadline())
        };
        s.publish_all(out).await;
        let now = Instant::now();
        let mut until = now + HOUSEKEEPING_CAP;
        if let Some(d) = due {
            until = until.min(d);
        }
        if let Some(w) = wall_due {
            let left = (w - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            until = until.min(now + left.min(HOUSEKEEPING_CAP));
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = s.housekeeping.notified() => {}
            r = cfg_rx.changed(), if cfg_open => cfg_open = r.is_ok(),
            _ = s.cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DoorConfig, HumanDuration};
    use std::sync::atomic::Ordering;
    use types::StatusFlags;

    /// A source (no server behind it) with door 1's held-open limit at `held` seconds, and
    /// a sink with everything it publishes.
    fn source(held: u64) -> (Arc<Net2Source>, mpsc::Receiver<Message>) {
        let mut cfg = Config::default();
        cfg.sources.net2 = Some(Net2Config {
            url: "http://127.0.0.1:9/".into(),
            ..Default::default()
        });
        cfg.doors.insert(
            1,
            DoorConfig {
                held_open_after: Some(HumanDuration::secs(held)),
                ..Default::default()
            },
        );
        let mut b = crate::bus::BusBuilder::default();
        let rx = b.sink();
        // The sender is leaked on purpose: a dropped one would end `cfg_rx.changed()`.
        let (tx, cfg_rx) = watch::channel(Arc::new(cfg));
        std::mem::forget(tx);
        let cfg = cfg_rx.borrow().sources.net2.clone().unwrap();
        let src = Arc::new(Net2Source {
            client: Arc::new(Net2Client::new(&cfg).unwrap()),
            core: Mutex::new(Core {
                names: Names::default(),
                dedupe: Deduper::default(),
                tracker: DoorTracker::default(),
                cursor: None,
                zone: ServerZone::new(None),
                online: None,
                live: false,
            }),
            bus: b.build(),
            cfg_rx,
            cancel: CancellationToken::new(),
            live_tx: watch::channel(false).0,
            backfill_now: Notify::new(),
            status_now: Notify::new(),
            housekeeping: Notify::new(),
            housekeeping_passes: Default::default(),
            users_loaded: watch::channel(false).0,
            directory: Directory::new(),
        });
        (src, rx)
    }

    /// Let the spawned loop run (paused clock: no time passes).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn held_open(rx: &mut mpsc::Receiver<Message>) -> bool {
        let mut seen = false;
        while let Ok(m) = rx.try_recv() {
            seen |= matches!(&m, Message::Event(e) if e.kind == EventKind::DoorHeldOpen { derived: true });
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn housekeeping_sleeps_while_idle_and_alerts_held_open_on_time() {
        // A 5 s limit, shorter than the idle cap: only the wake-up on a state change can
        // make it on time.
        let (s, mut rx) = source(5);
        let passes = || s.housekeeping_passes.load(Ordering::Relaxed);
        tokio::spawn(housekeeping(s.clone()));
        settle().await;
        assert_eq!(passes(), 1);
        // Idle for five minutes: woken by the cap only (a 1 s tick would be 300 passes).
        // (Second by second: one big `advance` fires a periodic timer only once.)
        for _ in 0..300 {
            tokio::time::advance(Duration::from_secs(1)).await;
            settle().await;
        }
        let idle = passes() - 1;
        assert!(
            idle <= 10,
            "{idle} idle passes: not sleeping while nothing is pending"
        );
        // Mid-sleep, the door opens (as a status poll would report it).
        tokio::time::advance(Duration::from_secs(7)).await;
        settle().await;
        let opened = Instant::now();
        let out = s.lock().tracker.apply_status_poll(
            &[(
                1,
                StatusFlags {
                    door_contact_closed: Some(false),
                    ..Default::default()
                },
            )],
            opened,
        );
        s.publish_all(out).await;
        settle().await;
        assert!(!held_open(&mut rx));
        tokio::time::advance(Duration::from_millis(4999)).await;
        settle().await;
        assert!(!held_open(&mut rx), "not before the limit");
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert!(held_open(&mut rx), "held open exactly at the limit");
        assert_eq!(Instant::now() - opened, Duration::from_secs(5));
        // Reported: nothing pending, back to sleeping.
        let before = passes();
        for _ in 0..29 {
            tokio::time::advance(Duration::from_secs(1)).await;
            settle().await;
        }
        assert!(passes() - before <= 1, "{} passes", passes() - before);
        s.cancel.cancel();
    }

    #[test]
    fn backfill_overlaps_and_covers_the_repeated_dst_hour() {
        let cur = DateTime::parse_from_rfc3339("2026-10-25T02:59:00+02:00").unwrap();
        let summer = DateTime::parse_from_rfc3339("2026-10-25T00:00:00+02:00").unwrap();
        let winter = DateTime::parse_from_rfc3339("2026-10-25T03:30:00+01:00").unwrap();
        assert_eq!(since_cursor(cur, summer).to_string(), "2026-10-25 02:57:00");
        // After fall-back, 02:00–02:59 (+01:00) come again: fetch from an hour earlier.
        assert_eq!(since_cursor(cur, winter).to_string(), "2026-10-25 01:57:00");
    }
}
