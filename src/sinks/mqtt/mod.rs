//! The MQTT bridge: states, events and discovery out; door commands in.
//!
//! - Events go through a persistent outbox: the store sink queues each new event in
//!   `mqtt_outbox` in the same transaction that stores it, and a row is deleted only when the
//!   broker acknowledged its QoS 1 publish. After any crash or outage, whatever is left is
//!   published again, in order. Each event carries its `seq` (monotonic over all events), and
//!   `"redelivered": true` when this publish may repeat an earlier one: it was handed to the
//!   broker on a connection that was lost before the acknowledgement, it was acknowledged in
//!   the last second before a lost connection and our delivery watcher ([`echo`]) did not see
//!   it (a killed broker loses what it had queued), it was left unacknowledged by an earlier
//!   run, or a consumer asked for a replay (`bridge/replay/set`).
//! - Each connection is a fresh client with a clean session: rumqttc neither restores
//!   subscriptions nor backs off, so on every ConnAck we subscribe, publish availability
//!   `online` (the last will fired while we were away), discovery and the full state, and we
//!   back off ourselves (capped).
//! - Retained states are published only when they change.

pub mod client;
pub mod discovery;
pub mod echo;
pub mod embedded;
pub mod payload;
pub mod router;
pub mod topics;
pub mod wifi;

use crate::bus::Bus;
use crate::config::{Config, ConfigRx, DiscoveryMode, MqttConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::model::*;
use crate::storage::Store;
use crate::task::Backoff;
use client::{Client, Ev, Loop, Protocol};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use topics::Topics;

/// QoS 1 event publishes in flight at once.
const WINDOW: usize = 100;
/// Outbox rows read per query.
const READ_AHEAD: usize = 1000;
/// After a lost connection, events the broker acknowledged this shortly before may be gone
/// with it (a killed broker loses what it had queued for its subscribers): they are published
/// again unless the delivery watcher received them.
const LOSS_WINDOW: Duration = Duration::from_secs(1);
/// How often acknowledgements the outbox could not record are written again (while nothing
/// else writes them sooner).
const ACK_RETRY: Duration = Duration::from_secs(2);
/// Events one replay request publishes at most (ask again from the next `seq` for more).
pub const MAX_REPLAY: usize = 10_000;
const SOURCE: &str = "net2";

struct Sink {
    cfg: MqttConfig,
    topics: Topics,
    /// Who this gatehouse is in Home Assistant (`mqtt.instance`): its ids and node id.
    identity: discovery::Identity,
    store: Store,
    bus: Bus,
    cfg_rx: ConfigRx,
    started: chrono::DateTime<chrono::Utc>,
    doors: BTreeMap<DoorId, DoorState>,
    presence: BTreeMap<i64, Presence>,
    health: BTreeMap<String, SourceHealth>,
    router: router::Router,
    /// Discovery configs as last published (also in SQLite, for clearing stale ones).
    discovery: BTreeMap<String, String>,
    /// Camera alarm states by topic (republished on connect), and camera identities.
    alarms: BTreeMap<String, (CameraAlarm, String)>,
    cameras: BTreeMap<String, CameraInfo>,
    /// Live stream states by topic (republished on connect).
    streams: BTreeMap<String, String>,
    /// Registered hardware access points by id (REST), as last published.
    hardware: BTreeMap<String, HardwarePoint>,
    /// The emergency mode's payload (republished on connect).
    emergency: Option<String>,
    /// People's presence as the presence engine last published it.
    persons: BTreeMap<String, PersonState>,
    /// Snapshots and live streams (camera commands go here); `None` without cameras.
    media: Option<crate::media::service::Media>,
    /// The MQTT version for the next connection, and the one that has worked.
    protocol: Protocol,
    protocol_known: Option<Protocol>,
    /// Events whose next publish is flagged `"redelivered": true` (until acknowledged).
    redeliver: std::collections::HashSet<i64>,
    /// Events left unacknowledged by an earlier run (up to this seq) may have been delivered
    /// before it ended: flagged too.
    redeliver_upto: i64,
    /// Acknowledgements of the last seconds, oldest first (what a lost connection may lose).
    recent_acks: VecDeque<(i64, Instant)>,
    /// Acknowledged shortly before a lost connection (decided on the next connection, when
    /// the delivery watcher has taken everything the broker delivered).
    suspect: Vec<i64>,
    /// Handed to a lost connection without an acknowledgement: still in the outbox, sent
    /// again flagged — unless the delivery watcher received them (then they are done).
    unconfirmed: Vec<i64>,
    /// Delivered (acknowledged by the broker, or received by the delivery watcher) but still
    /// in the outbox: deleting them failed (the database full, read-only or locked). Written
    /// again with the next acknowledgements or after [`ACK_RETRY`], and never handed out again
    /// meanwhile (the outbox still lists them; sending them again would be a copy outside
    /// the delivery rule, unflagged).
    unwritten_acks: std::collections::BTreeSet<i64>,
    /// Failed attempts to write them, since the last that worked (one error is logged).
    ack_failures: u32,
    /// What the delivery watcher received, and how many of its connections had ended when
    /// ours was lost.
    echo: Arc<echo::EchoLog>,
    echo_ended: u64,
    /// Replays consumers asked for, waiting to be published.
    replay: VecDeque<crate::storage::OutboxEvent>,
    /// Wi-Fi presence and occupancy (Zequenze GATE sessions).
    wifi: wifi::Wifi,
}

/// One connection's bookkeeping.
#[derive(Default)]
struct Conn {
    connected: bool,
    /// QoS 1 publish requests in order, waiting for their packet id (`Some(seq)` = outbox).
    order: VecDeque<Option<i64>>,
    inflight: HashMap<u16, i64>,
    /// Newest outbox seq handed to the client on this connection.
    sent_upto: i64,
    /// Retained payloads published on this connection (unchanged ones are not resent).
    retained: HashMap<String, String>,
    republish_at: Option<Instant>,
    /// Acknowledged outbox seqs not yet written back.
    acked: Vec<i64>,
    /// Outbox events in `order` not yet written by the client.
    queued_events: usize,
    /// Outbox rows read ahead of the window (one query per batch, not per ack).
    ahead: VecDeque<crate::storage::OutboxEvent>,
    /// The last outbox query found everything: new rows can come from the store directly.
    caught_up: bool,
}

/// rumqttc's request queue is full (the broker is not keeping up): the connection is redone.
fn queue_full(e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("MQTT client queue full: {e}"),
    )
}

/// Keep only the newest payload of each retained topic; non-retained messages all stay, in
/// order.
fn coalesce(out: Vec<(String, String, bool)>) -> Vec<(String, String, bool)> {
    let mut newest: HashMap<&str, usize> = HashMap::new();
    for (i, (t, _, retain)) in out.iter().enumerate() {
        if *retain {
            newest.insert(t.as_str(), i);
        }
    }
    let keep: Vec<bool> = out
        .iter()
        .enumerate()
        .map(|(i, (t, _, retain))| !*retain || newest.get(t.as_str()) == Some(&i))
        .collect();
    out.into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(o, _)| o)
        .collect()
}

impl Conn {
    fn window_free(&self) -> usize {
        WINDOW.saturating_sub(self.inflight.len() + self.queued_events)
    }

    fn push(&mut self, seq: Option<i64>) {
        self.queued_events += seq.is_some() as usize;
        self.order.push_back(seq);
    }

    /// The client wrote a QoS 1 publish with `pkid`: it is the oldest queued request.
    fn written(&mut self, pkid: u16) {
        if let Some(Some(seq)) = self.order.pop_front() {
            self.queued_events -= 1;
            self.inflight.insert(pkid, seq);
        }
    }

    fn owes_acks(&self) -> bool {
        !self.inflight.is_empty() || self.queued_events > 0
    }
}

/// The alarm states a device's triggers announce (`/ISAPI/Event/triggers`), OFF: for the
/// channels the device has (an NVR's trigger list names inputs it does not have), its IO
/// ports and device-level events. Discovered, and published OFF, before their first alarm.
fn trigger_alarms(i: &CameraInfo, at: chrono::DateTime<chrono::Utc>) -> Vec<CameraAlarm> {
    let has = |c: u32| i.channels.is_empty() || i.channels.iter().any(|x| x.id == c);
    let mut out: Vec<CameraAlarm> = i
        .triggers
        .iter()
        .filter(|t| t.channel.is_none_or(has))
        .map(|t| CameraAlarm {
            device: i.device.clone(),
            channel: t.channel,
            io_port: t.io_port,
            event_type: t.event_type.clone(),
            target: None,
            on: false,
            at,
        })
        .collect();
    out.dedup_by(|a, b| {
        (a.channel, a.io_port, &a.event_type) == (b.channel, b.io_port, &b.event_type)
    });
    out
}

/// Aborts the task when the sink ends, however it ends.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

pub async fn run(
    store: Store,
    bus: Bus,
    mut rx: mpsc::Receiver<Message>,
    cfg_rx: ConfigRx,
    media: Option<crate::media::service::Media>,
    cancel: CancellationToken,
) {
    let cfg = cfg_rx.borrow().mqtt.clone().expect("mqtt configured");
    let cfg_protocol = cfg.protocol;
    let topics = Topics {
        base: cfg.base_topic.clone(),
        prefix: cfg.discovery.prefix.clone(),
    };
    let hardware = crate::web::hardware_points(&cfg_rx.borrow(), &store)
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    // The states the presence engine kept from the last run: published on connect before
    // the engine's own (queued) messages are taken, so a person who is home never shows
    // `not_home` for a moment after a restart.
    let persons = if cfg_rx.borrow().people.is_empty() {
        BTreeMap::new()
    } else {
        crate::presence::Engine::new(&cfg_rx.borrow(), crate::presence::load(&store))
            .states()
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect()
    };

    let mut sink = Sink {
        doors: store
            .door_states()
            .unwrap_or_default()
            .into_iter()
            .map(|d| (d.id, d))
            .collect(),
        presence: store
            .presence_all()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.user.id, p))
            .collect(),
        discovery: store
            .discovery_published()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        identity: discovery::Identity::new(&cfg.instance()),
        cfg,
        topics,
        store,
        router: router::Router::new(bus.door_gate().clone()),
        bus,
        cfg_rx,
        started: chrono::Utc::now(),
        health: BTreeMap::new(),
        protocol: if cfg_protocol == crate::config::MqttProtocol::V311 {
            Protocol::V311
        } else {
            Protocol::V5
        },
        protocol_known: None,
        alarms: BTreeMap::new(),
        cameras: BTreeMap::new(),
        streams: BTreeMap::new(),
        hardware,
        emergency: None,
        persons,
        media,
        redeliver: Default::default(),
        redeliver_upto: 0,
        recent_acks: VecDeque::new(),
        suspect: Vec::new(),
        unconfirmed: Vec::new(),
        unwritten_acks: Default::default(),
        ack_failures: 0,
        echo: Default::default(),
        echo_ended: 0,
        replay: VecDeque::new(),
        wifi: wifi::Wifi::default(),
    };
    sink.wifi = wifi::Wifi::load(&sink.store);
    // Which ids this site has in Home Assistant: `mqtt.instance` when set; else the ones it
    // published last run, so that an upgrade or a new base topic never replaces a site's
    // entities (with the user's names, areas and automations); else from the base topic.
    let recorded =
        discovery::recorded_instance(sink.discovery.keys().map(String::as_str), &sink.topics);
    let derived = sink.cfg.instance();
    let instance = match (&sink.cfg.instance, recorded) {
        (Some(set), Some(old)) if *set != old => {
            // The configs of the old one are stale: cleared on connect.
            tracing::warn!(
                previous = %old,
                instance = %set,
                "mqtt.instance changed: the entities of the previous instance are removed from Home Assistant, with their names and areas, and new ones made; set mqtt.instance: {old} to keep them"
            );
            set.clone()
        }
        (Some(set), _) => set.clone(),
        (None, Some(old)) => {
            if old != derived {
                tracing::info!(
                    instance = %old,
                    from_base_topic = %derived,
                    "keeping the Home Assistant ids this site has (instance {old}); set mqtt.instance to choose (another gatehouse on this broker needs an instance of its own)"
                );
            }
            old
        }
        (None, None) => derived,
    };
    sink.identity = discovery::Identity::new(&instance);
    sink.redeliver_upto = sink.store.outbox_max().unwrap_or(i64::MAX);
    // The delivery watcher: a second connection subscribed to our own event topics.
    let watcher = match sink.options() {
        Ok(mut o) => {
            o.client_id = format!("{}-watch", o.client_id);
            o.will_topic = None;
            o.session = Some(echo::SESSION);
            Some(tokio::spawn(echo::run(
                o,
                sink.protocol,
                cfg_protocol == crate::config::MqttProtocol::Auto,
                sink.topics.event_filters(),
                sink.echo.clone(),
                cancel.clone(),
            )))
        }
        Err(_) => None,
    };
    let _watcher = AbortOnDrop(watcher);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let started = Instant::now();
        match sink.connection(&mut rx, &cancel).await {
            Ok(()) => return,
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff.reset();
                }
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?d, "MQTT connection lost");
                // Keep taking bus messages while away so the sources are never held back;
                // events wait in the outbox, states are kept and republished on connect.
                let until = Instant::now() + d;
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep_until(until) => break,
                        m = rx.recv() => match m {
                            Some(m) => { sink.absorb(&m); }
                            None => return,
                        },
                    }
                }
            }
        }
    }
}

impl Sink {
    /// Update the kept state from a bus message; returns what to publish now.
    fn absorb(&mut self, m: &Message) -> Vec<(String, String, bool)> {
        match m {
            Message::DoorState(d) => {
                let before = self.doors.insert(d.id, d.clone());
                let mut out = vec![(self.topics.door_state(d.id), self.door_payload(d), true)];
                // Learning that a door has no contact (or its name) changes its entities.
                if before.is_none_or(|b| b.has_contact != d.has_contact || b.name != d.name) {
                    out.extend(self.discovery_changes());
                }
                out
            }
            Message::Presence(p) => {
                let new_user = !self.presence.contains_key(&p.user.id);
                self.presence.insert(p.user.id, p.clone());
                let mut out = vec![(
                    self.topics.presence(p.user.id),
                    payload::presence(p).to_string(),
                    true,
                )];
                if new_user {
                    out.extend(self.discovery_changes());
                }
                out
            }
            Message::Health(h) => {
                self.health.insert(h.source.clone(), h.clone());
                vec![
                    (
                        self.topics.source_state(&h.source),
                        payload::health(h).to_string(),
                        true,
                    ),
                    (
                        self.topics.source_availability(&h.source),
                        if h.online { "online" } else { "offline" }.to_string(),
                        true,
                    ),
                    (
                        self.topics.bridge_info(),
                        self.bridge_info().to_string(),
                        true,
                    ),
                ]
            }
            Message::CameraAlarm(a) => {
                let topic = self.topics.camera_alarm(
                    &a.device,
                    a.channel,
                    a.io_port,
                    &a.event_type,
                    a.target.as_deref(),
                );
                let payload = if a.on { "ON" } else { "OFF" }.to_string();
                let new = self
                    .alarms
                    .insert(topic.clone(), (a.clone(), payload.clone()))
                    .is_none();
                let mut out = vec![(topic, payload, true)];
                if new {
                    out.extend(self.discovery_changes());
                }
                out
            }
            Message::CameraInfo(i) => {
                let new = self.cameras.insert(i.device.clone(), i.clone()).as_ref() != Some(i);
                let mut out = vec![(
                    self.topics.camera_info(&i.device),
                    serde_json::to_string(i).unwrap_or_default(),
                    true,
                )];
                // Every alarm the device announces has a state from the first second: OFF
                // until its first alarm (an entity Home Assistant shows as `unknown` reads as
                // broken). An alarm already reported keeps its state.
                for a in trigger_alarms(i, chrono::Utc::now()) {
                    let topic = self.topics.camera_alarm(
                        &a.device,
                        a.channel,
                        a.io_port,
                        &a.event_type,
                        None,
                    );
                    if !self.alarms.contains_key(&topic) {
                        self.alarms.insert(topic.clone(), (a, "OFF".into()));
                        out.push((topic, "OFF".into(), true));
                    }
                }
                // A retained "ON" left by a run that crashed (or lost power) would show a
                // stream as running for ever: every channel whose stream this run has not
                // reported yet is set OFF (a START before this point has reported its ON).
                for ch in &i.channels {
                    let topic = self.topics.camera_stream(&i.device, ch.id);
                    if !self.streams.contains_key(&topic) {
                        let p = payload::stream(&StreamState {
                            camera: i.device.clone(),
                            channel: ch.id,
                            active: false,
                            hls_url: None,
                            player_url: None,
                            detail: "not running".into(),
                        })
                        .to_string();
                        self.streams.insert(topic.clone(), p.clone());
                        out.push((topic, p, true));
                    }
                }
                if new {
                    out.extend(self.discovery_changes());
                }
                out
            }
            Message::Command(u) => vec![(
                self.topics.command_result(),
                payload::command_result(u).to_string(),
                false,
            )],
            Message::Snapshot(s) => vec![(
                self.topics.camera_snapshot_meta(&s.camera, s.channel),
                payload::snapshot_meta(s).to_string(),
                true,
            )],
            Message::Person(p) => {
                self.persons.insert(p.id.clone(), p.clone());
                self.people_payloads()
            }
            // For the reader's display and HA's event entity: an event, never retained.
            Message::QrResult(r) => vec![(
                self.topics.qr_result(&r.reader),
                serde_json::to_string(r).unwrap_or_default(),
                false,
            )],
            Message::WifiSessions { sessions, at, .. } => {
                let cfg = self.cfg_rx.borrow().clone();
                let (mut out, changed) = self.wifi.on_sessions(
                    sessions,
                    *at,
                    Instant::now(),
                    &cfg,
                    &self.topics,
                    &self.store,
                );
                if changed {
                    out.extend(self.discovery_changes());
                }
                out
            }
            Message::Emergency(e) => {
                let p = payload::emergency(e).to_string();
                self.emergency = Some(p.clone());
                vec![(self.topics.emergency(), p, true)]
            }
            Message::Stream(st) => {
                let topic = self.topics.camera_stream(&st.camera, st.channel);
                let p = payload::stream(st).to_string();
                self.streams.insert(topic.clone(), p.clone());
                vec![(topic, p, true)]
            }
            Message::Hardware(hw) => {
                if hw.removed {
                    // Its entities go, and the retained topics only they used.
                    self.hardware.remove(&hw.id);
                    let mut out = self.discovery_changes();
                    out.push((self.topics.hardware_state(&hw.id), String::new(), true));
                    out.push((
                        self.topics.hardware_availability(&hw.id),
                        String::new(),
                        true,
                    ));
                    return out;
                }
                let before = self.hardware.insert(hw.id.clone(), hw.clone());
                let mut out = self.hardware_payloads(hw);
                if before.is_none_or(|b| {
                    (&b.name, &b.vendor, &b.firmware_version)
                        != (&hw.name, &hw.vendor, &hw.firmware_version)
                }) {
                    out.extend(self.discovery_changes());
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// Every configured person as last known (`not_home`, "no evidence yet", before the
    /// presence engine said), in config order.
    fn people_now(&self) -> Vec<PersonState> {
        let cfg = self.cfg_rx.borrow();
        let first = cfg.first_site();
        cfg.people
            .iter()
            .map(|p| {
                let name = p.name.clone().unwrap_or_else(|| p.id.clone());
                let site = p.site.clone().unwrap_or_else(|| first.clone());
                match self.persons.get(&p.id) {
                    Some(s) => PersonState {
                        name,
                        site,
                        ..s.clone()
                    },
                    None => PersonState {
                        id: p.id.clone(),
                        name,
                        site,
                        home: None,
                        since: None,
                        evidence: None,
                        last_door: None,
                        last_door_direction: None,
                        last_door_at: None,
                        wifi_sessions: 0,
                        last_qr_at: None,
                    },
                }
            })
            .collect()
    }

    /// People's retained states and attributes, and the count of each site that has people
    /// (unchanged ones are not resent: `publish_all` compares).
    fn people_payloads(&self) -> Vec<(String, String, bool)> {
        let people = self.people_now();
        let mut out = Vec::new();
        let mut sites: Vec<&str> = Vec::new();
        for p in &people {
            // Attributes first: an automation triggered by the state change (HA's
            // device_tracker reads both topics) then reads the evidence of this change, not
            // of the one before.
            out.push((
                self.topics.person_attributes(&p.id),
                payload::person_attributes(p).to_string(),
                true,
            ));
            out.push((
                self.topics.person_state(&p.id),
                payload::person_state(p).to_string(),
                true,
            ));
            if !sites.contains(&p.site.as_str()) {
                sites.push(&p.site);
            }
        }
        let refs: Vec<&PersonState> = people.iter().collect();
        for site in sites {
            out.push((
                self.topics.site_people(site),
                payload::site_people(site, &refs).to_string(),
                true,
            ));
        }
        out
    }

    /// A hardware point's retained state and availability.
    fn hardware_payloads(&self, hw: &HardwarePoint) -> Vec<(String, String, bool)> {
        vec![
            (
                self.topics.hardware_state(&hw.id),
                serde_json::to_string(hw).unwrap_or_default(),
                true,
            ),
            (
                self.topics.hardware_availability(&hw.id),
                if hw.online { "online" } else { "offline" }.into(),
                true,
            ),
        ]
    }

    /// A picture's JPEG bytes on the camera's snapshot topic. Retained only when small and
    /// configured (`media.retain_max_bytes`), never for a door event's picture (brokers keep
    /// retained payloads forever).
    fn publish_picture(&self, client: &Client, c: &mut Conn, m: &Message) -> Result<()> {
        let Message::Snapshot(s) = m else {
            return Ok(());
        };
        let max = self.cfg_rx.borrow().media.retain_max_bytes as usize;
        let retain = max > 0 && s.jpeg.len() <= max && s.event_id.is_none();
        let topic = self.topics.camera_snapshot(&s.camera, s.channel);
        if s.jpeg.len() + topic.len() + 64 > client::MAX_PACKET {
            tracing::warn!(camera = %s.camera, channel = s.channel, bytes = s.jpeg.len(), "picture too large for MQTT: not published (it is saved, its URL is in the meta topic)");
            return Ok(());
        }
        client
            .publish(topic, retain, s.jpeg.to_vec())
            .map_err(queue_full)?;
        c.push(None);
        Ok(())
    }

    /// The camera that takes an event's picture, and whether the event is fresh (its picture
    /// is being taken now) or older (it has one only if the pictures table says so).
    fn picture_camera(&self, e: &crate::storage::OutboxEvent) -> Option<(String, u32, bool)> {
        self.media.as_ref()?.urls()?;
        let cfg = self.cfg_rx.borrow().clone();
        let (cam, ch) =
            crate::media::service::event_camera(&cfg, e.door_id.map(|d| d as DoorId), &e.kind)?;
        let fresh = chrono::DateTime::parse_from_rfc3339(&e.time)
            .is_ok_and(|t| crate::media::service::event_is_fresh(e.via == "live", t));
        Some((cam.to_string(), ch, fresh))
    }

    /// Which of these older events have a picture: one query off the async threads (the
    /// database may be busy writing on a slow SD card). On a database error the links are
    /// left out, the events still go.
    async fn pictures_taken(
        &self,
        events: &[crate::storage::OutboxEvent],
    ) -> std::collections::HashSet<String> {
        let ask: Vec<String> = events
            .iter()
            .filter(|e| matches!(self.picture_camera(e), Some((_, _, false))))
            .map(|e| e.id.clone())
            .collect();
        if ask.is_empty() {
            return Default::default();
        }
        let found = self
            .store
            .run(move |s| {
                let mut out = std::collections::HashSet::new();
                for id in ask {
                    if s.picture_for_event(&id)?.is_some() {
                        out.insert(id);
                    }
                }
                Ok(out)
            })
            .await;
        found.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unable to look up event pictures: events published without their links");
            Default::default()
        })
    }

    /// An event as published, with the URL of its picture when its door's camera takes one
    /// (the picture follows within a second; the URL answers once it is there), or took one
    /// (`taken`, for older events: see [`Self::pictures_taken`]).
    fn event_payload(&self, e: &crate::storage::OutboxEvent, taken: bool) -> serde_json::Value {
        let mut v = payload::event(e);
        v["redelivered"] = (e.seq <= self.redeliver_upto || self.redeliver.contains(&e.seq)).into();
        let Some(signer) = self.media.as_ref().and_then(|m| m.urls()) else {
            return v;
        };
        let Some((cam, ch, fresh)) = self.picture_camera(e) else {
            return v;
        };
        if fresh || taken {
            v["picture"] = serde_json::json!({
                "url": signer.signed(&crate::media::service::event_picture_path(&e.id)),
                "camera": cam,
                "channel": ch,
            });
        }
        v
    }

    /// `…/camera/<id>[/ch<N>]/snapshot/set` and `…/stream/set`: audited like door commands
    /// (accepted, then confirmed or failed), carried out by the media service.
    async fn on_camera_command(
        &mut self,
        topic: &str,
        cam: &str,
        ch: Option<u32>,
        stream: bool,
        payload: &[u8],
        retain: bool,
    ) {
        let Some(media) = self.media.clone() else {
            return;
        };
        let res = self
            .router
            .camera(cam, ch, stream, payload, retain, media.has_camera(cam));
        let cmd = match res {
            Ok(cmd) => cmd,
            Err(r) => {
                tracing::warn!(request_id = %r.request_id, topic, reason = %r.reason, "MQTT camera command rejected");
                let u = CommandUpdate {
                    request_id: r.request_id,
                    requester: format!("mqtt:camera/{cam}"),
                    kind: r.kind.unwrap_or(CommandKind::Camera {
                        camera: cam.to_string(),
                        channel: ch.unwrap_or(1),
                        action: if stream {
                            crate::model::CameraAction::StreamStart
                        } else {
                            crate::model::CameraAction::Snapshot
                        },
                    }),
                    status: CommandStatus::Rejected,
                    detail: r.reason,
                    at: chrono::Utc::now(),
                };
                self.bus.publish(Message::Command(u)).await;
                return;
            }
        };
        tracing::info!(request_id = %cmd.request_id, topic, "MQTT camera command received");
        let bus = self.bus.clone();
        tokio::spawn(async move {
            let update = |status, detail: String| CommandUpdate {
                request_id: cmd.request_id.clone(),
                requester: cmd.requester.clone(),
                kind: cmd.kind.clone(),
                status,
                detail,
                at: chrono::Utc::now(),
            };
            bus.publish(Message::Command(update(
                CommandStatus::Accepted,
                String::new(),
            )))
            .await;
            let CommandKind::Camera {
                camera,
                channel,
                action,
            } = &cmd.kind
            else {
                return;
            };
            use crate::model::CameraAction::*;
            let done = match action {
                Snapshot => media
                    .snapshot(camera, *channel, None, crate::media::service::Trigger::Mqtt)
                    .await
                    .map(|s| format!("picture {} from {}", s.id, s.source)),
                StreamStart => match media.live_start(camera, *channel).await {
                    Ok(l) => {
                        let wait = media.config().media.snapshot_timeout.get();
                        if l.ready(wait).await {
                            Ok("live stream playable".to_string())
                        } else {
                            media.live_stop(camera, *channel);
                            Err(crate::error::Error::new(
                                ErrorKind::Unavailable,
                                format!(
                                    "live stream not playable within {wait:?}: {}",
                                    l.hub.stats().last_error.unwrap_or_default()
                                ),
                            ))
                        }
                    }
                    Err(e) => Err(e),
                },
                StreamStop => Ok(if media.live_stop(camera, *channel) {
                    "live stream stopped".to_string()
                } else {
                    "live stream was not running".to_string()
                }),
            };
            let u = match done {
                Ok(d) => update(CommandStatus::Confirmed, d),
                Err(e) => update(CommandStatus::Failed, e.to_string()),
            };
            bus.publish(Message::Command(u)).await;
        });
    }

    /// Door state with the door's camera from the config.
    fn door_payload(&self, d: &DoorState) -> String {
        let mut v = payload::door_state(d);
        if let Some((dev, ch)) = self
            .cfg_rx
            .borrow()
            .doors
            .get(&d.id)
            .and_then(|c| c.camera_ref())
        {
            v["camera"] = serde_json::json!({"device": dev, "channel": ch});
        }
        v.to_string()
    }

    fn bridge_info(&self) -> serde_json::Value {
        let cfg = self.cfg_rx.borrow();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "started": self.started.to_rfc3339(),
            "uptime_s": (chrono::Utc::now() - self.started).num_seconds(),
            "sources": self.health.values().map(|h| (h.source.clone(), payload::health(h))).collect::<serde_json::Map<_, _>>(),
            "config": {
                "doors": cfg.doors.len(),
                "net2": cfg.sources.net2.as_ref().map(|n| n.url.clone()),
                "base_topic": self.cfg.base_topic,
                // Which ids this gatehouse has in Home Assistant (many sites).
                "instance": self.identity.instance(),
                "discovery": self.cfg.discovery.enabled.then(|| format!("{:?}", self.cfg.discovery.mode).to_lowercase()),
            },
        })
    }

    /// The discovery configs that should exist now.
    fn wanted_discovery(&self) -> BTreeMap<String, String> {
        if !self.cfg.discovery.enabled {
            return BTreeMap::new();
        }
        let cfg: Arc<Config> = self.cfg_rx.borrow().clone();
        // Alarm kinds the devices report (triggers) are discovered before their first alarm.
        let from_triggers: Vec<CameraAlarm> = self
            .cameras
            .values()
            .flat_map(|i| trigger_alarms(i, self.started))
            .collect();
        let mut alarms: Vec<&CameraAlarm> = self.alarms.values().map(|(a, _)| a).collect();
        alarms.extend(from_triggers.iter().filter(|a| {
            !self.alarms.contains_key(&self.topics.camera_alarm(
                &a.device,
                a.channel,
                a.io_port,
                &a.event_type,
                None,
            ))
        }));
        let net2 = cfg.sources.net2.is_some();
        let ctx = discovery::Context {
            topics: &self.topics,
            identity: &self.identity,
            doors: if net2 {
                discovery::door_names(&cfg.doors, &self.doors)
            } else {
                BTreeMap::new()
            },
            no_contact: self
                .doors
                .values()
                .filter(|d| d.has_contact == Some(false))
                .map(|d| d.id)
                .collect(),
            door_cameras: cfg
                .doors
                .iter()
                .filter_map(|(id, d)| Some((*id, d.camera_ref()?.0.to_string())))
                .collect(),
            presence: if net2 {
                self.presence.values().collect()
            } else {
                Vec::new()
            },
            cameras: cfg
                .sources
                .hikvision
                .iter()
                .map(|h| discovery::CameraCtx {
                    id: h.id.clone(),
                    name: h.name.clone(),
                    isapi: h.isapi(),
                    info: self.cameras.get(&h.id).cloned(),
                })
                .collect(),
            alarms,
            net2,
            hardware: self.hardware.values().collect(),
            people: cfg
                .people
                .iter()
                .map(|p| (p.id.clone(), p.name.clone().unwrap_or_else(|| p.id.clone())))
                .collect(),
            people_sites: {
                let first = cfg.first_site();
                let used: Vec<String> = cfg
                    .people
                    .iter()
                    .map(|p| p.site.clone().unwrap_or_else(|| first.clone()))
                    .collect();
                cfg.sites()
                    .into_iter()
                    .filter(|s| used.contains(&s.id))
                    .map(|s| {
                        let name = s.name.clone().unwrap_or_else(|| s.id.clone());
                        (s.id, name)
                    })
                    .collect()
            },
            qr_readers: cfg
                .apptive
                .iter()
                .flat_map(|a| &a.readers)
                .map(|r| discovery::QrReaderCtx {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    door: r.door,
                })
                .collect(),
        };
        let mut entities = discovery::configs(&ctx);
        entities.extend(self.wifi.entities(&cfg, &self.topics, &self.identity));
        discovery::render(
            &self.topics,
            &self.identity,
            &entities,
            self.cfg.discovery.mode == DiscoveryMode::Device,
        )
        .into_iter()
        .collect()
    }

    /// Changed and stale discovery configs (empty retained payload clears one); records them.
    fn discovery_changes(&mut self) -> Vec<(String, String, bool)> {
        let wanted = self.wanted_discovery();
        let mut out = Vec::new();
        let mut record = Vec::new();
        for (t, p) in &wanted {
            if self.discovery.get(t) != Some(p) {
                out.push((t.clone(), p.clone(), true));
                record.push((t.clone(), Some(p.clone())));
            }
        }
        // Stale configs are cleared, and with them the retained topics only they used (the
        // state, availability and picture topics of a removed door, camera or source).
        let in_use: std::collections::HashSet<String> = wanted
            .values()
            .flat_map(|p| discovery::referenced_topics(p))
            .chain([self.topics.bridge_state()])
            .collect();
        let mut cleared = std::collections::HashSet::new();
        // A configured camera that has not reported since start: its alarm entities (from its
        // triggers and past alarms) are not known yet, not gone. Clearing them would delete
        // them in Home Assistant, with a user's names and areas, on every restart.
        let waiting: Vec<String> = self
            .cfg_rx
            .borrow()
            .sources
            .hikvision
            .iter()
            .filter(|h| !self.cameras.contains_key(&h.id))
            .map(|h| self.topics.camera_prefix(&h.id))
            .collect();
        let not_reported = |p: &str| {
            discovery::referenced_topics(p)
                .iter()
                .any(|t| waiting.iter().any(|w| t.starts_with(w.as_str())))
        };
        let mut kept = Vec::new();
        for (t, p) in &self.discovery {
            if !wanted.contains_key(t) && not_reported(p) {
                kept.push((t.clone(), p.clone()));
                continue;
            }
            if !wanted.contains_key(t) {
                out.push((t.clone(), String::new(), true));
                record.push((t.clone(), None));
            }
            // A removed entity, or one that moved to other topics (alarm states moved to
            // `…/alarm/…`).
            if wanted.get(t) != Some(p) {
                for topic in discovery::referenced_topics(p) {
                    if !in_use.contains(&topic) && cleared.insert(topic.clone()) {
                        out.push((topic, String::new(), true));
                    }
                }
            }
        }
        if !record.is_empty() {
            if let Err(e) = self.store.discovery_record(&record) {
                tracing::error!(error = %e, "unable to record published discovery configs");
            }
            self.discovery = wanted;
            // Still published: compared again once their camera has reported.
            self.discovery.extend(kept);
        }
        out
    }

    /// Everything retained, for a new session or Home Assistant's birth message.
    fn full_state(&mut self, force_discovery: bool) -> Vec<(String, String, bool)> {
        let mut out = vec![(self.topics.bridge_state(), "online".to_string(), true)];
        if force_discovery {
            let stale = self.discovery_changes();
            out.extend(stale.into_iter().filter(|(_, p, _)| p.is_empty()));
            out.extend(
                self.discovery
                    .iter()
                    .map(|(t, p)| (t.clone(), p.clone(), true)),
            );
        } else {
            out.extend(self.discovery_changes());
        }
        out.push((
            self.topics.bridge_info(),
            self.bridge_info().to_string(),
            true,
        ));
        let net2 = self.cfg_rx.borrow().sources.net2.is_some();
        if net2 && !self.health.contains_key(SOURCE) {
            out.push((
                self.topics.source_availability(SOURCE),
                "offline".into(),
                true,
            ));
        }
        // GATE: offline until its first poll (a retained `online` of an earlier run must not
        // make its entities look current), and every Wi-Fi state from the first second.
        let gate = crate::sources::gate::SOURCE;
        let cfg = self.cfg_rx.borrow().clone();
        if cfg.sources.gate.is_some() && !self.health.contains_key(gate) {
            out.push((
                self.topics.source_availability(gate),
                "offline".into(),
                true,
            ));
        }
        out.extend(self.wifi.states(&cfg, &self.topics));
        out.extend(
            self.streams
                .iter()
                .map(|(t, p)| (t.clone(), p.clone(), true)),
        );
        if let Some(p) = &self.emergency {
            out.push((self.topics.emergency(), p.clone(), true));
        }
        for h in self.health.values() {
            out.push((
                self.topics.source_state(&h.source),
                payload::health(h).to_string(),
                true,
            ));
            out.push((
                self.topics.source_availability(&h.source),
                if h.online { "online" } else { "offline" }.into(),
                true,
            ));
        }
        for d in self.doors.values() {
            out.push((self.topics.door_state(d.id), self.door_payload(d), true));
        }
        for (t, (_, p)) in &self.alarms {
            out.push((t.clone(), p.clone(), true));
        }
        for i in self.cameras.values() {
            out.push((
                self.topics.camera_info(&i.device),
                serde_json::to_string(i).unwrap_or_default(),
                true,
            ));
        }
        for p in self.presence.values() {
            out.push((
                self.topics.presence(p.user.id),
                payload::presence(p).to_string(),
                true,
            ));
        }
        for hw in self.hardware.values() {
            out.extend(self.hardware_payloads(hw));
        }
        out.extend(self.people_payloads());
        out
    }

    fn options(&self) -> Result<client::Options> {
        let (host, port) = if self.cfg.embedded {
            let a = embedded::v5_addr(self.cfg.embedded_bind);
            (a.ip().to_string(), a.port())
        } else {
            (self.cfg.host.clone(), self.cfg.port)
        };
        let tls = if self.cfg.tls {
            Some(Arc::new(crate::sources::tls::client_config(
                &self.cfg.tls_options,
            )?))
        } else {
            None
        };
        Ok(client::Options {
            client_id: self.cfg.client_id_for(self.identity.instance()),
            host,
            port,
            keep_alive: self.cfg.keep_alive.get(),
            will_topic: Some(self.topics.bridge_state()),
            session: None,
            credentials: self.cfg.username.clone().map(|u| {
                (
                    u,
                    self.cfg
                        .password
                        .clone()
                        .unwrap_or_default()
                        .expose()
                        .to_string(),
                )
            }),
            tls,
        })
    }

    /// One connection, until it fails (`Err`) or shutdown (`Ok`).
    async fn connection(
        &mut self,
        rx: &mut mpsc::Receiver<Message>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let (client, mut el) = client::connect(self.protocol, &self.options()?);
        let mut c = Conn::default();
        let res = self.serve(rx, cancel, &client, &mut el, &mut c).await;
        if res.is_err() {
            // Acknowledgements not written back yet are written now: those events must not be
            // sent again as if the broker never had them.
            self.flush_acks(&mut c).await;
            self.lost(&c);
        }
        res
    }

    /// The connection is gone. Events handed to the client without an acknowledgement, and
    /// events acknowledged in the last second (a killed broker loses what it had queued), may
    /// or may not have reached consumers: decided on the next connection, when the delivery
    /// watcher has taken everything the broker delivered.
    fn lost(&mut self, c: &Conn) {
        if !c.connected {
            return;
        }
        self.unconfirmed.extend(c.inflight.values().copied());
        self.unconfirmed.extend(c.order.iter().flatten().copied());
        self.echo_ended = self.echo.ended();
        let now = Instant::now();
        self.suspect.extend(
            self.recent_acks
                .iter()
                .filter(|(_, t)| now.saturating_duration_since(*t) <= LOSS_WINDOW)
                .map(|(s, _)| *s),
        );
        self.recent_acks.clear();
    }

    /// On a new connection, before any event goes out: what the delivery watcher received was
    /// delivered (unacknowledged ones leave the outbox); the rest is published again, flagged
    /// (unacknowledged ones from the outbox, acknowledged ones read back from the events).
    /// When the broker lost its sessions (killed, or run without persistence), everything it
    /// acknowledged in the last second is sent again: a consumer slower than the watcher may
    /// not have had it.
    async fn settle_lost(&mut self, c: &mut Conn) -> Result<()> {
        if self.unconfirmed.is_empty() && self.suspect.is_empty() {
            return Ok(());
        }
        // If the broker went away, so did the watcher's connection: once it has noticed, and
        // is back (with what the broker kept for its session), it has seen all it will see.
        // (If only our connection broke, this waits the limit and decides then.)
        let limit = Duration::from_secs(2);
        self.echo.wait_ended(self.echo_ended, limit).await;
        self.echo.wait_watching(limit).await;
        let broker_lost_state = self.echo.ended() > self.echo_ended && !self.echo.session_kept();
        let (seen, unseen): (Vec<i64>, Vec<i64>) = std::mem::take(&mut self.unconfirmed)
            .into_iter()
            .partition(|s| self.echo.seen(*s));
        self.redeliver.extend(unseen);
        let again: Vec<i64> = std::mem::take(&mut self.suspect)
            .into_iter()
            .filter(|s| broker_lost_state || !self.echo.seen(*s))
            .collect();
        if !again.is_empty() {
            tracing::info!(
                events = again.len(),
                broker_lost_state,
                "publishing again events the broker acknowledged in the last second before the connection was lost"
            );
        }
        self.redeliver.extend(again.iter().copied());
        // Delivered: out of the outbox (kept to write again if that fails).
        self.unwritten_acks.extend(seen);
        self.flush_acks(c).await;
        let rows = self.store.run(move |s| s.events_by_seq(&again)).await?;
        c.ahead.extend(rows);
        Ok(())
    }

    async fn serve(
        &mut self,
        rx: &mut mpsc::Receiver<Message>,
        cancel: &CancellationToken,
        client: &Client,
        el: &mut Loop,
        c: &mut Conn,
    ) -> Result<()> {
        let committed = self.store.committed();
        let mut cfg_rx = self.cfg_rx.clone();
        loop {
            let republish = c.republish_at;
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.goodbye(client, el, c).await;
                    return Ok(());
                }
                ev = el.poll() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => {
                            self.protocol_failed(c.connected, e.refused_protocol);
                            return Err(Error::new(ErrorKind::Unavailable, format!("MQTT broker {}:{}: {}", self.cfg.host, self.cfg.port, e.message)));
                        }
                    };
                    self.on_event(ev, client, c).await?;
                }
                m = rx.recv(), if c.connected => {
                    let Some(m) = m else { return Ok(()) };
                    // Take everything already queued and publish each retained topic once
                    // (its newest payload): a backlog moves a door's state hundreds of times.
                    self.publish_picture(client, c, &m)?;
                    let mut out = self.absorb(&m);
                    while out.len() < 4096 {
                        match rx.try_recv() {
                            Ok(m) => {
                                self.publish_picture(client, c, &m)?;
                                out.extend(self.absorb(&m));
                            }
                            Err(_) => break,
                        }
                    }
                    self.publish_all(client, c, coalesce(out), false)?;
                }
                _ = committed.notified(), if c.connected => self.pump(client, c).await?,
                _ = tokio::time::sleep(ACK_RETRY), if c.connected && !self.unwritten_acks.is_empty() => {
                    self.flush_acks(c).await;
                }
                _ = async { tokio::time::sleep_until(republish.unwrap_or_else(Instant::now)).await }, if republish.is_some() => {
                    c.republish_at = None;
                    tracing::info!("republishing discovery and state for Home Assistant / openHAB");
                    let out = self.full_state(true);
                    self.publish_all(client, c, out, true)?;
                }
                r = cfg_rx.changed() => {
                    if r.is_ok() && c.connected {
                        // People added or removed: their entities, and a state for a new
                        // person from the first second (the presence engine follows).
                        let mut out = self.discovery_changes();
                        out.extend(self.people_payloads());
                        // Users who got an entity (`people:`, `user_entities`) have a state.
                        let cfg = self.cfg_rx.borrow().clone();
                        out.extend(self.wifi.states(&cfg, &self.topics));
                        self.publish_all(client, c, out, false)?;
                    }
                }
            }
        }
    }

    async fn on_event(&mut self, ev: Ev, client: &Client, c: &mut Conn) -> Result<()> {
        match ev {
            Ev::ConnAck { session_present } => {
                tracing::info!(session_present, protocol = ?self.protocol, "MQTT connected");
                self.protocol_known = Some(self.protocol);
                let t = &self.topics;
                let mut commands = vec![t.door_set_filter(), t.lockdown_set(), t.replay_set()];
                if self.media.is_some() {
                    commands.extend(t.camera_set_filters());
                }
                if self.cfg_rx.borrow().apptive.is_some() {
                    commands.push(t.qr_scan_filter());
                }
                client
                    .subscribe(commands, vec![t.ha_status()])
                    .map_err(|e| {
                        Error::new(ErrorKind::Unavailable, format!("unable to subscribe: {e}"))
                    })?;
                c.connected = true;
                c.sent_upto = 0;
                let out = self.full_state(!session_present);
                self.publish_all(client, c, out, true)?;
                self.settle_lost(c).await?;
                // Events go out once the delivery watcher listens (it reconnects too): what
                // it cannot see would count as lost.
                self.echo.wait_watching(Duration::from_secs(2)).await;
                self.pump(client, c).await?;
            }
            Ev::Publish {
                topic,
                payload,
                retain,
            } => {
                self.on_publish(topic, payload, retain, c).await;
                if !self.replay.is_empty() {
                    self.pump(client, c).await?;
                }
            }
            Ev::PubAck(pkid) => {
                if let Some(seq) = c.inflight.remove(&pkid) {
                    self.acked(seq);
                    c.acked.push(seq);
                    // Write acks back in groups (and whenever the window runs dry).
                    if c.acked.len() >= WINDOW / 2 || c.inflight.is_empty() {
                        self.flush_acks(c).await;
                    }
                    self.pump(client, c).await?;
                }
            }
            Ev::Disconnect(why) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("broker disconnected us: {why}"),
                ));
            }
            Ev::Written(pkid) => c.written(pkid),
            Ev::SubAck | Ev::DisconnectSent | Ev::Other => {}
        }
        Ok(())
    }

    /// The broker acknowledged event `seq`.
    fn acked(&mut self, seq: i64) {
        let now = Instant::now();
        self.redeliver.remove(&seq);
        self.recent_acks.push_back((seq, now));
        while self
            .recent_acks
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) > LOSS_WINDOW * 2)
        {
            self.recent_acks.pop_front();
        }
    }

    /// A connection failed. Before any ConnAck with `protocol: auto`, try the other MQTT
    /// version next time (3.1.1-only brokers refuse or drop an MQTT 5 CONNECT), until one
    /// version has worked.
    fn protocol_failed(&mut self, connected: bool, refused: bool) {
        if connected || self.cfg.protocol != crate::config::MqttProtocol::Auto {
            return;
        }
        if self.protocol_known.is_none() || refused {
            self.protocol = match self.protocol {
                Protocol::V5 => Protocol::V311,
                Protocol::V311 => Protocol::V5,
            };
            tracing::info!(next = ?self.protocol, "MQTT connect failed before CONNACK; trying the other protocol version");
        }
    }

    async fn on_publish(
        &mut self,
        topic: String,
        payload: bytes::Bytes,
        retain: bool,
        c: &mut Conn,
    ) {
        if topic == self.topics.ha_status() {
            if payload.as_ref() == b"online" && c.republish_at.is_none() {
                // HA and openHAB both send it, often together: debounce, then a random delay
                // so many bridges do not answer at once.
                let delay = Duration::from_millis(1000 + rand::random_range(0..2000));
                c.republish_at = Some(Instant::now() + delay);
            }
            return;
        }
        if let Some((cam, ch, stream)) = self.topics.parse_camera_set(&topic) {
            self.on_camera_command(&topic, &cam, ch, stream, &payload, retain)
                .await;
            return;
        }
        if let Some(reader) = self.topics.parse_qr_scan(&topic) {
            // Never act on a retained scan: a code left on the broker would open the door
            // again on every reconnect.
            if retain {
                tracing::warn!(
                    topic,
                    "retained QR scan ignored: scans must not be retained"
                );
                return;
            }
            let scan = crate::apptive::Scan {
                reader,
                data: payload.to_vec(),
                via: "mqtt",
                reply: None,
            };
            // Never wait here (the sink also publishes): a full queue means scans are
            // arriving far faster than any reader produces them.
            match self.bus.qr_scans().try_send(scan) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(topic, "QR scan dropped: too many scans waiting")
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::warn!(topic, "QR scan ignored: QR access (apptive) is not running")
                }
            }
            return;
        }
        if topic == self.topics.replay_set() {
            self.on_replay(&payload, retain).await;
            return;
        }
        let doors = self.cfg_rx.borrow().doors.clone();
        let res = if topic == self.topics.lockdown_set() {
            self.router.lockdown(&payload, retain)
        } else {
            match self.topics.parse_door_set(&topic) {
                Some(Ok(door)) => self
                    .router
                    .door(door, &payload, retain, &doors, Instant::now()),
                Some(Err(bad)) => Err(router::Rejection {
                    request_id: format!("mqtt-bad-topic-{bad}"),
                    kind: None,
                    reason: format!("{bad:?} is not a door id"),
                }),
                None => return,
            }
        };
        match res {
            Ok(cmd) => {
                tracing::info!(request_id = %cmd.request_id, topic, "MQTT command received");
                if self.bus.commands().send(cmd).await.is_err() {
                    tracing::error!("no source takes door commands");
                }
            }
            Err(r) => {
                tracing::warn!(request_id = %r.request_id, topic, reason = %r.reason, "MQTT command rejected");
                let u = CommandUpdate {
                    request_id: r.request_id,
                    requester: format!(
                        "mqtt:{}",
                        topic
                            .strip_prefix(&format!("{}/", self.topics.base))
                            .unwrap_or(&topic)
                    ),
                    kind: r.kind.unwrap_or(CommandKind::Lockdown { active: false }),
                    status: CommandStatus::Rejected,
                    detail: r.reason,
                    at: chrono::Utc::now(),
                };
                // Audited (store sink) and reported on the result topic (back through us).
                self.bus.publish(Message::Command(u)).await;
            }
        }
    }

    /// `…/bridge/replay/set`: the stored events from a `seq` on are published again (flagged
    /// `redelivered`), up to [`MAX_REPLAY`]; the result says where the next request starts.
    async fn on_replay(&mut self, payload: &[u8], retain: bool) {
        let update = |request_id: String, kind, status, detail: String| CommandUpdate {
            request_id,
            requester: "mqtt:bridge/replay/set".into(),
            kind,
            status,
            detail,
            at: chrono::Utc::now(),
        };
        let cmd = match self.router.replay(payload, retain) {
            Ok(c) => c,
            Err(r) => {
                tracing::warn!(request_id = %r.request_id, reason = %r.reason, "MQTT replay request rejected");
                let kind = r.kind.unwrap_or(CommandKind::Replay { from_seq: 0 });
                let u = update(r.request_id, kind, CommandStatus::Rejected, r.reason);
                self.bus.publish(Message::Command(u)).await;
                return;
            }
        };
        let CommandKind::Replay { from_seq } = cmd.kind else {
            return;
        };
        let rows = self
            .store
            .run(move |s| s.events_from(from_seq, MAX_REPLAY + 1))
            .await;
        let (status, detail) = match rows {
            Ok(mut rows) => {
                let more = rows.len() > MAX_REPLAY;
                rows.truncate(MAX_REPLAY);
                let detail = match (rows.first(), rows.last()) {
                    (Some(a), Some(b)) if more => format!(
                        "replaying {} events (seq {}–{}); more from seq {}",
                        rows.len(),
                        a.seq,
                        b.seq,
                        b.seq + 1
                    ),
                    (Some(a), Some(b)) => {
                        format!("replaying {} events (seq {}–{})", rows.len(), a.seq, b.seq)
                    }
                    _ => format!("no stored event from seq {from_seq} on"),
                };
                self.redeliver.extend(rows.iter().map(|r| r.seq));
                self.replay.extend(rows);
                (CommandStatus::Confirmed, detail)
            }
            Err(e) => (CommandStatus::Failed, format!("unable to read events: {e}")),
        };
        tracing::info!(request_id = %cmd.request_id, from_seq, detail = %detail, "MQTT replay request");
        let u = update(cmd.request_id, cmd.kind, status, detail);
        self.bus.publish(Message::Command(u)).await;
    }

    fn publish_all(
        &self,
        client: &Client,
        c: &mut Conn,
        out: Vec<(String, String, bool)>,
        force: bool,
    ) -> Result<()> {
        for (topic, payload, retain) in out {
            if retain && !force && !payload.is_empty() && c.retained.get(&topic) == Some(&payload) {
                continue;
            }
            client
                .publish(topic.clone(), retain, payload.clone().into_bytes())
                .map_err(queue_full)?;
            c.push(None);
            if retain {
                c.retained.insert(topic, payload);
            }
        }
        Ok(())
    }

    /// Delete acknowledged events from the outbox. When that fails they are kept (and not
    /// handed out again) until a later attempt works: dropping them would leave them in the
    /// outbox, to be published again, unflagged, on the next connection.
    async fn flush_acks(&mut self, c: &mut Conn) {
        self.unwritten_acks.extend(c.acked.drain(..));
        if self.unwritten_acks.is_empty() {
            return;
        }
        let seqs: Vec<i64> = self.unwritten_acks.iter().copied().collect();
        let n = seqs.len();
        match self.store.run(move |s| s.outbox_done(&seqs)).await {
            Ok(()) => {
                if self.ack_failures > 0 {
                    tracing::info!(
                        events = n,
                        failed_attempts = self.ack_failures,
                        "acknowledged events marked in the outbox after all"
                    );
                }
                self.ack_failures = 0;
                self.unwritten_acks.clear();
            }
            Err(e) => {
                // One error per outage, not one per retry.
                if self.ack_failures == 0 {
                    tracing::error!(error = %e, events = n, retry_every = ?ACK_RETRY, "unable to mark acknowledged events in the outbox; kept, not sent again, and written later");
                } else {
                    tracing::debug!(error = %e, events = n, "still unable to mark acknowledged events in the outbox");
                }
                self.ack_failures += 1;
            }
        }
    }

    /// Hand outbox events to the client, up to the window (refilled in batches).
    async fn pump(&mut self, client: &Client, c: &mut Conn) -> Result<()> {
        if c.window_free() < WINDOW / 4 && c.owes_acks() {
            return Ok(());
        }
        loop {
            let free = c.window_free();
            if free == 0 {
                return Ok(());
            }
            if c.ahead.is_empty() {
                let after = c.sent_upto;
                // Caught up with the database: newly committed rows come straight from the
                // store (the live path, no query). Otherwise (after a connect, or when rows
                // were dropped from that hand-over) read the outbox.
                let fresh = if c.caught_up {
                    self.store.take_fresh(after)
                } else {
                    None
                };
                let rows = match fresh {
                    Some(rows) => rows,
                    None => {
                        let store = self.store.clone();
                        let rows = store
                            .run(move |s| s.outbox_after(after, READ_AHEAD))
                            .await?;
                        c.caught_up = rows.len() < READ_AHEAD;
                        rows
                    }
                };
                if let Some(last) = rows.last() {
                    c.sent_upto = last.seq;
                    // Delivered already, though the outbox could not be told.
                    let done = &self.unwritten_acks;
                    c.ahead
                        .extend(rows.into_iter().filter(|r| !done.contains(&r.seq)));
                } else if !self.replay.is_empty() {
                    // A replay a consumer asked for, when no new event is waiting.
                    let n = self.replay.len().min(READ_AHEAD);
                    c.ahead.extend(self.replay.drain(..n));
                } else {
                    return Ok(());
                }
            }
            let batch: Vec<_> = c.ahead.drain(..free.min(c.ahead.len())).collect();
            let taken = self.pictures_taken(&batch).await;
            for e in batch {
                let topic = match e.door_id {
                    Some(d) => self.topics.door_event(d as DoorId),
                    None if e.source == crate::sources::gate::SOURCE => self.topics.wifi_event(),
                    None => self.topics.source_event(&e.source),
                };
                client
                    .publish(
                        topic,
                        false,
                        self.event_payload(&e, taken.contains(&e.id))
                            .to_string()
                            .into_bytes(),
                    )
                    .map_err(queue_full)?;
                c.push(Some(e.seq));
            }
        }
    }

    /// Clean shutdown: `offline`, then a DISCONNECT that is really sent (rumqttc only queues it).
    async fn goodbye(&mut self, client: &Client, el: &mut Loop, c: &mut Conn) {
        if !c.connected {
            return;
        }
        // Collect the acknowledgements still owed (up to 2 s), so the outbox knows what the
        // broker has; then `offline` and a DISCONNECT that is really sent.
        let end = Instant::now() + Duration::from_secs(2);
        while c.owes_acks() && Instant::now() < end {
            match tokio::time::timeout_at(end, el.poll()).await {
                Ok(Ok(Ev::PubAck(pkid))) => {
                    if let Some(seq) = c.inflight.remove(&pkid) {
                        c.acked.push(seq);
                    }
                }
                Ok(Ok(Ev::Written(pkid))) => c.written(pkid),
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        self.flush_acks(c).await;
        let _ = client.publish(self.topics.bridge_state(), true, b"offline".to_vec());
        client.disconnect();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            match tokio::time::timeout_at(end, el.poll()).await {
                Ok(Ok(Ev::DisconnectSent)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(Ev::PubAck(pkid))) => {
                    if let Some(seq) = c.inflight.remove(&pkid) {
                        c.acked.push(seq);
                    }
                }
                Ok(Ok(Ev::Written(pkid))) => c.written(pkid),
                Ok(Ok(_)) => {}
            }
        }
        self.flush_acks(c).await;
        tracing::info!("MQTT disconnected");
    }
}
