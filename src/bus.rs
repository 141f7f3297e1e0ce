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

/// Which messages a filtered sink takes.
pub type Filter = fn(&Message) -> bool;

#[derive(Clone)]
pub struct Bus {
    sinks: Vec<(mpsc::Sender<Message>, Option<Filter>)>,
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
    sinks: Vec<(mpsc::Sender<Message>, Option<Filter>)>,
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
        self.sinks.push((tx, None));
        rx
    }

    /// A lossless subscription to the messages `filter` accepts only. A sink that publishes
    /// on the bus itself must not receive what it publishes: with its own queue full, its
    /// publish would wait for room it alone can make (see [`crate::presence`]).
    pub fn sink_filtered(&mut self, filter: Filter) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(SINK_QUEUE);
        self.sinks.push((tx, Some(filter)));
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
        for (s, filter) in &self.sinks {
            if filter.is_some_and(|f| !f(&msg)) {
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PersonState;

    fn person(i: usize) -> Message {
        Message::Person(PersonState {
            id: format!("p{i}"),
            name: String::new(),
            site: "default".into(),
            home: Some(true),
            since: None,
            evidence: None,
            last_door: None,
            last_door_direction: None,
            last_door_at: None,
            wifi_sessions: 0,
            last_qr_at: None,
        })
    }

    /// The presence engine publishes far more than its queue holds (a backfill of a busy day)
    /// while it is busy and not reading its own queue: with the filter, none of it lands there,
    /// so it never waits on itself. (With `sink()` instead this stops at SINK_QUEUE.)
    #[tokio::test]
    async fn a_filtered_sink_never_waits_on_its_own_output() {
        let mut b = BusBuilder::default();
        let mut other = b.sink();
        let own = b.sink_filtered(crate::presence::wanted);
        let bus = b.build();
        let drain = tokio::spawn(async move {
            let mut n = 0;
            while other.recv().await.is_some() {
                n += 1;
            }
            n
        });
        let publish = async {
            for i in 0..SINK_QUEUE * 2 {
                bus.publish(person(i)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), publish)
            .await
            .expect("publishing never blocks on the publisher's own queue");
        assert_eq!(own.len(), 0, "its own output never reaches it");
        drop(bus);
        assert_eq!(
            drain.await.unwrap(),
            SINK_QUEUE * 2,
            "the other sink got all"
        );
    }
}
