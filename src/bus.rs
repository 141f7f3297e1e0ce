//! The typed hub: the only coupling point between sources and sinks.
//!
//! Sinks that must not lose anything (storage, the MQTT outbox) subscribe before sources start
//! and get a bounded queue with back-pressure: a slow sink slows the sources (a REST backfill
//! waits) rather than dropping events. Observers that may lag (a CLI follower) use
//! [`Bus::watch`], a broadcast that drops the oldest messages and reports how many.
//! Commands travel the other way, to the one source that owns the device.

use crate::model::{Command, Message, SourceHealth};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

const SINK_QUEUE: usize = 4096;
const WATCH_QUEUE: usize = 1024;

#[derive(Clone)]
pub struct Bus {
    sinks: Vec<mpsc::Sender<Message>>,
    watch: broadcast::Sender<Message>,
    commands: mpsc::Sender<Command>,
    /// The latest health of each source, for late joiners (availability, `bridge/info`).
    health: Arc<Mutex<BTreeMap<String, SourceHealth>>>,
    /// Door checks and per-door command intervals, shared by every requester (MQTT, REST).
    door_gate: crate::commands::DoorGate,
    /// QR scans (MQTT, REST, USB readers) for the Apptive service, when it runs.
    qr_scans: mpsc::Sender<crate::apptive::Scan>,
}

/// Built at start-up: sinks register, then `build` freezes the list.
pub struct BusBuilder {
    sinks: Vec<mpsc::Sender<Message>>,
    commands: (mpsc::Sender<Command>, Option<mpsc::Receiver<Command>>),
    qr_scans: (
        mpsc::Sender<crate::apptive::Scan>,
        Option<mpsc::Receiver<crate::apptive::Scan>>,
    ),
}

impl Default for BusBuilder {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(64);
        let (qtx, qrx) = mpsc::channel(64);
        BusBuilder {
            sinks: Vec::new(),
            commands: (tx, Some(rx)),
            qr_scans: (qtx, Some(qrx)),
        }
    }
}

impl BusBuilder {
    /// A lossless subscription (back-pressure on sources).
    pub fn sink(&mut self) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(SINK_QUEUE);
        self.sinks.push(tx);
        rx
    }

    /// The command queue, taken once by the source that owns the doors.
    pub fn take_commands(&mut self) -> Option<mpsc::Receiver<Command>> {
        self.commands.1.take()
    }

    /// The QR scan queue, taken once by the Apptive service (dropped without one: sending
    /// then fails, and the sender says QR access is not configured).
    pub fn take_qr_scans(&mut self) -> Option<mpsc::Receiver<crate::apptive::Scan>> {
        self.qr_scans.1.take()
    }

    pub fn build(self) -> Bus {
        Bus {
            sinks: self.sinks,
            watch: broadcast::channel(WATCH_QUEUE).0,
            commands: self.commands.0,
            health: Default::default(),
            door_gate: Default::default(),
            qr_scans: self.qr_scans.0,
        }
    }
}

impl Bus {
    /// Deliver to every sink (waiting for room) and to observers.
    pub async fn publish(&self, msg: Message) {
        if let Message::Health(h) = &msg
            && let Ok(mut m) = self.health.lock()
        {
            m.insert(h.source.clone(), h.clone());
        }
        let _ = self.watch.send(msg.clone());
        for s in &self.sinks {
            // A closed sink has stopped (shutdown or crash, logged by its task).
            let _ = s.send(msg.clone()).await;
        }
    }

    /// A lossy observer.
    pub fn watch(&self) -> broadcast::Receiver<Message> {
        self.watch.subscribe()
    }

    /// The latest health a source reported.
    pub fn health(&self, source: &str) -> Option<SourceHealth> {
        self.health.lock().ok()?.get(source).cloned()
    }

    /// The latest health of every source that reported one.
    pub fn healths(&self) -> Vec<SourceHealth> {
        self.health
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// Where QR scans go (the Apptive service).
    pub fn qr_scans(&self) -> mpsc::Sender<crate::apptive::Scan> {
        self.qr_scans.clone()
    }

    /// The door checks every requester passes before sending a door command.
    pub fn door_gate(&self) -> &crate::commands::DoorGate {
        &self.door_gate
    }
}
