//! Paxton Net2 Local Web API simulator (REST + classic SignalR 2 live events).
//!
//! Speaks the wire format described in `shared/docs/protocols.md` section 1 and the
//! fixtures in `tests/fixtures/net2/`, quirks included: form-encoded token requests with a
//! rate limit, empty bodies for empty event answers, server-local timestamps without a
//! zone in `where`, fire-and-forget door commands, momentary doors that toggle on both
//! `holdopen` and `close`, and SignalR frames whose argument shape varies. Its zone is its own
//! (REST times carry its offset, live times are its bare wall clock) and may change while it
//! runs (DST).

mod rest;
mod signalr;
mod state;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::NaiveDateTime;
use rand::Rng;
use rand::seq::IndexedRandom;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use state::Inner;
pub use state::{DoorStatus, SimUser};

/// Simulator configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Listen address; the default `127.0.0.1:0` picks a free port.
    pub bind: SocketAddr,
    /// Operator display name expected by the password grant.
    pub username: String,
    pub password: String,
    /// Licence GUID expected as `client_id`.
    pub client_id: String,
    /// Access token lifetime (`expires_in`).
    pub token_lifetime: Duration,
    pub refresh_lifetime: Duration,
    /// Token requests allowed in any rolling second; more answer 429.
    pub token_rate_limit_per_sec: u32,
    /// SignalR `{}` keep-alive interval.
    pub keepalive_interval: Duration,
    /// The password grant answers `mfa_required`.
    pub mfa_required: bool,
    /// Server zone at start: local time = UTC + this. It need not be the zone of the machine
    /// running the simulator (a test on a UTC machine runs a server at +01:00);
    /// [`Net2Sim::set_utc_offset_minutes`] moves it later (a DST change).
    pub utc_offset_minutes: i32,
    /// Doors on a momentary relay: `holdopen` and `close` both toggle them.
    pub momentary_doors: Vec<u64>,
    /// Drop a SignalR socket when the access token it connected with expires.
    pub drop_ws_on_token_expiry: bool,
    /// Open time of `door/open` (the door's configured open time).
    pub door_open_time: Duration,
    /// Delay between a relay change and the door contact following it.
    pub door_contact_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: "Gate House".into(),
            password: "sim-password".into(),
            client_id: "00000000-0000-4000-8000-000000000000".into(),
            token_lifetime: Duration::from_secs(30 * 60),
            refresh_lifetime: Duration::from_secs(2 * 60 * 60),
            token_rate_limit_per_sec: 2,
            keepalive_interval: Duration::from_secs(10),
            mfa_required: false,
            utc_offset_minutes: 60,
            momentary_doors: vec![7242929],
            drop_ws_on_token_expiry: false,
            door_open_time: Duration::from_secs(7),
            door_contact_delay: Duration::from_millis(300),
        }
    }
}

/// An event to append to the log (and push live).
#[derive(Debug, Clone)]
pub struct SimEvent {
    pub event_type: i64,
    /// Door (ACU address); 0 = the Net2 server itself.
    pub door: u64,
    pub user_id: Option<i64>,
    /// 0 token, 1 PIN, 2 vehicle registration, 3 code.
    pub token_type: i64,
    /// Server-local time; `None` = now.
    pub time: Option<NaiveDateTime>,
    pub sub_type: i64,
    /// Also push over SignalR.
    pub live: bool,
    /// `cardNo` / `tokenNumber`; `None` = the user's card (0 without a user).
    pub card_no: Option<i64>,
    /// `eventDetails` / `details`.
    pub details: Option<String>,
    /// `linkedEvent`.
    pub linked_event: Option<i64>,
}

impl SimEvent {
    pub fn new(event_type: i64, door: u64) -> SimEvent {
        SimEvent {
            event_type,
            door,
            user_id: None,
            token_type: 0,
            time: None,
            sub_type: 0,
            live: true,
            card_no: None,
            details: None,
            linked_event: None,
        }
    }
    pub fn user(mut self, id: i64) -> Self {
        self.user_id = Some(id);
        self
    }
    pub fn token_type(mut self, t: i64) -> Self {
        self.token_type = t;
        self
    }
    pub fn at(mut self, time: NaiveDateTime) -> Self {
        self.time = Some(time);
        self
    }
    pub fn sub_type(mut self, s: i64) -> Self {
        self.sub_type = s;
        self
    }
    pub fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }
    /// REST log only, no SignalR push.
    pub fn rest_only(self) -> Self {
        self.live(false)
    }
    pub fn card(mut self, card_no: i64) -> Self {
        self.card_no = Some(card_no);
        self
    }
    pub fn details(mut self, d: impl Into<String>) -> Self {
        self.details = Some(d.into());
        self
    }
    pub fn linked(mut self, id: i64) -> Self {
        self.linked_event = Some(id);
        self
    }
}

/// Switchable faults; flip them at any time.
#[derive(Debug)]
pub struct Faults {
    /// REST answers 500 with an HTML page.
    pub fail_500: AtomicBool,
    /// REST answers 502 with nginx's "Bad Gateway" page.
    pub html_error: AtomicBool,
    /// Delay every answer by this many milliseconds.
    pub slow_ms: AtomicU64,
    /// List endpoints answer 200 with an empty body.
    pub empty_bodies: AtomicBool,
    /// Events answers contain a wrong-typed entry and one with an unknown eventType.
    pub malformed_events: AtomicBool,
    /// SignalR available (false: negotiate answers 503, nothing is pushed).
    pub live_enabled: AtomicBool,
    /// Answer door commands this many milliseconds after carrying them out (the door's
    /// status frame reaches the client before the answer).
    pub command_answer_ms: AtomicU64,
    /// Answer `/api/v1/events` this many milliseconds late (a busy Net2 database): live
    /// events overtake the REST backfill.
    pub events_delay_ms: AtomicU64,
    /// `/api/v1/users` (and `/users/{id}`) answer 500 with the IIS error page; the rest works.
    pub users_500: AtomicBool,
    /// `/api/v1/users` answers 200 with an empty body.
    pub users_empty: AtomicBool,
    /// The token endpoint answers 429 to everything (a rate-limit storm).
    pub token_429: AtomicBool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_500: AtomicBool::new(false),
            html_error: AtomicBool::new(false),
            slow_ms: AtomicU64::new(0),
            empty_bodies: AtomicBool::new(false),
            malformed_events: AtomicBool::new(false),
            live_enabled: AtomicBool::new(true),
            command_answer_ms: AtomicU64::new(0),
            events_delay_ms: AtomicU64::new(0),
            users_500: AtomicBool::new(false),
            users_empty: AtomicBool::new(false),
            token_429: AtomicBool::new(false),
        }
    }
}

/// Snapshot of the simulator's counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub token_requests: u64,
    pub password_grants: u64,
    pub refresh_grants: u64,
    pub token_429: u64,
    pub unauthorized: u64,
    pub ws_connects: u64,
    pub negotiates: u64,
    pub events_requests: u64,
    /// `GET /api/v1/users` requests that reached the API (whatever they were answered).
    pub users_requests: u64,
    /// Successful hub invocations: method name as sent, arguments as sent.
    pub subscriptions: Vec<(String, Vec<serde_json::Value>)>,
}

/// A door or lockdown command as received.
#[derive(Debug, Clone)]
pub struct ReceivedCommand {
    /// Request path as sent, e.g. `/api/v1/commands/door/holdopen`.
    pub path: String,
    /// Parsed JSON body (`Null` if it was not JSON).
    pub body: serde_json::Value,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A running simulated Net2 server.
pub struct Net2Sim {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: Mutex<Option<Server>>,
}

struct Server {
    task: JoinHandle<()>,
    kill: CancellationToken,
}

impl Net2Sim {
    pub async fn start(cfg: SimConfig) -> io::Result<Net2Sim> {
        let listener = TcpListener::bind(cfg.bind).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner::new(cfg));
        let server = serve(Arc::clone(&inner), listener);
        tracing::info!(%addr, "net2 simulator listening");
        Ok(Net2Sim {
            inner,
            addr,
            server: Mutex::new(Some(server)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Append an event to the log (REST) and push it to SignalR subscribers; returns its id.
    pub fn push_event(&self, ev: SimEvent) -> i64 {
        self.inner.push_events(std::slice::from_ref(&ev))[0]
    }

    /// Append several events; the live ones reach subscribers in ONE liveEvents frame.
    pub fn push_events(&self, evs: Vec<SimEvent>) -> Vec<i64> {
        self.inner.push_events(&evs)
    }

    /// Append `n` events to the REST log only, at `start`, `start + step`, ….
    pub fn seed_history(&self, n: usize, start: NaiveDateTime, step: Duration) {
        self.inner.seed_history(n, start, step);
    }

    pub fn event_count(&self) -> usize {
        self.inner.lock().events.len()
    }

    /// Server-local time now (UTC + the current offset), millisecond precision.
    pub fn local_now(&self) -> NaiveDateTime {
        self.inner.local_now()
    }

    /// The server zone's offset changes now (a DST change): later events are logged with it,
    /// earlier ones keep theirs.
    pub fn set_utc_offset_minutes(&self, minutes: i32) {
        self.inner
            .offset_minutes
            .store(minutes, std::sync::atomic::Ordering::Relaxed);
    }

    /// These events happen the moment the next client subscribes to live events: logged and
    /// pushed at once, before the client has had a chance to read any REST event (the
    /// hostile start: a live event with a naive local time and nothing yet to tell its zone).
    pub fn push_on_subscribe(&self, evs: Vec<SimEvent>) {
        self.inner.lock().on_subscribe.extend(evs);
    }

    /// Spawn a random event generator; stops when `cancel` is cancelled.
    pub fn spawn_generator(&self, every: Duration, cancel: CancellationToken) {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = inner.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                push_random(&inner);
            }
        });
    }

    /// One random scenario now (a valid entry and the door opening, a denied card, a door
    /// forced…: one to two events); returns how many events it logged.
    pub fn push_random(&self) -> usize {
        push_random(&self.inner)
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn stats(&self) -> Stats {
        self.inner.lock().stats.clone()
    }

    pub fn commands(&self) -> Vec<ReceivedCommand> {
        self.inner.lock().commands.clone()
    }

    /// Add a user to `/api/v1/users` (or replace the one with its id).
    pub fn add_user(&self, user: SimUser) {
        let mut users = self.inner.users();
        match users.iter_mut().find(|u| u.id == user.id) {
            Some(u) => *u = user,
            None => users.push(user),
        }
    }

    /// Delete a user; `false` when there was none with that id.
    pub fn remove_user(&self, id: i64) -> bool {
        let mut users = self.inner.users();
        let before = users.len();
        users.retain(|u| u.id != id);
        users.len() != before
    }

    /// The users `/api/v1/users` lists now.
    pub fn users(&self) -> Vec<SimUser> {
        self.inner.users().clone()
    }

    pub fn door_status(&self, door: u64) -> Option<DoorStatus> {
        self.inner.lock().doors.get(&door).map(|d| d.status.clone())
    }

    /// Change a door's status and push doorStatusEvents (and doorEvents on relay change).
    /// Unknown doors are ignored.
    pub fn set_door_status(&self, door: u64, f: impl FnOnce(&mut DoorStatus)) {
        self.inner.update_door(door, f);
    }

    /// Every issued access token becomes invalid now (refresh tokens stay valid).
    pub fn expire_tokens(&self) {
        let mut st = self.inner.lock();
        st.access_tokens.clear();
        if self.inner.cfg.drop_ws_on_token_expiry {
            for s in st.sockets.values() {
                s.kill.cancel();
            }
        }
    }

    /// Every issued refresh token becomes invalid now.
    pub fn expire_refresh_tokens(&self) {
        self.inner.lock().refresh_tokens.clear();
    }

    /// Close every SignalR socket abruptly (no close frame).
    pub fn drop_websockets(&self) {
        for s in self.inner.lock().sockets.values() {
            s.kill.cancel();
        }
    }

    /// Number of SignalR sockets currently open.
    pub fn websocket_count(&self) -> usize {
        self.inner.lock().sockets.len()
    }

    /// Stop listening and close every connection (server down). State is kept.
    pub async fn go_down(&self) {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(server) = server {
            server.kill.cancel();
            server.task.abort();
            let _ = server.task.await;
            self.drop_websockets();
            tracing::info!(addr = %self.addr, "net2 simulator down");
        }
    }

    /// Listen again on the same port.
    pub async fn come_up(&self) -> io::Result<()> {
        if self
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let server = serve(Arc::clone(&self.inner), listener);
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
        tracing::info!(addr = %self.addr, "net2 simulator up again");
        Ok(())
    }

    pub async fn shutdown(self) {
        self.go_down().await;
        self.inner.shutdown.cancel();
    }
}

impl Drop for Net2Sim {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
        if let Some(server) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            server.kill.cancel();
            server.task.abort();
        }
        for s in self.inner.lock().sockets.values() {
            s.kill.cancel();
        }
    }
}

fn serve(inner: Arc<Inner>, listener: TcpListener) -> Server {
    let kill = CancellationToken::new();
    let app = axum::Router::new()
        .fallback(rest::dispatch)
        .with_state(inner);
    let listener = KillListener {
        inner: listener,
        kill: kill.clone(),
    };
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "net2 simulator server ended");
        }
    });
    Server { task, kill }
}

fn push_random(inner: &Inner) -> usize {
    let evs = random_scenario(inner);
    let first_id = inner.push_events(&evs[..1])[0];
    if evs.len() > 1 {
        let rest: Vec<SimEvent> = evs[1..]
            .iter()
            .cloned()
            .map(|e| e.linked(first_id))
            .collect();
        inner.push_events(&rest);
    }
    evs.len()
}

fn random_scenario(inner: &Inner) -> Vec<SimEvent> {
    let mut rng = rand::rng();
    let doors: Vec<u64> = inner.fixtures.doors.iter().map(|d| d.id).collect();
    let users = inner.user_ids();
    let door = *doors.choose(&mut rng).unwrap_or(&6612642);
    let user = *users.choose(&mut rng).unwrap_or(&8);
    match rng.random_range(0..100) {
        0..30 => vec![SimEvent::new(20, door).user(user), SimEvent::new(28, door)],
        30..50 => vec![
            SimEvent::new(26, door).user(user).token_type(1),
            SimEvent::new(46, door),
        ],
        50..62 => vec![SimEvent::new(24, door).token_type(1)],
        62..72 => vec![SimEvent::new(23, door).card(rng.random_range(1000..99999))],
        72..82 => vec![SimEvent::new(47, door)],
        82..88 => vec![SimEvent::new(93, door)],
        88..91 => vec![SimEvent::new(92, door)],
        91..94 => vec![SimEvent::new(723, 1265688)],
        94..96 => vec![SimEvent::new(500, door), SimEvent::new(501, door)],
        96..98 => vec![SimEvent::new(552, 0)],
        _ => vec![SimEvent::new(580, door), SimEvent::new(28, door)],
    }
}

/// A listener whose connections can all be killed at once (for `go_down`).
struct KillListener {
    inner: TcpListener,
    kill: CancellationToken,
}

impl axum::serve::Listener for KillListener {
    type Io = KillStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((io, addr)) => {
                    let _ = io.set_nodelay(true);
                    let killed = Box::pin(self.kill.clone().cancelled_owned());
                    return (KillStream { io, killed }, addr);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

struct KillStream {
    io: TcpStream,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl KillStream {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.killed.as_mut().poll(cx).is_ready() {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "simulated server went down",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for KillStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
