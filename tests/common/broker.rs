//! A real Mosquitto broker per test, on a free loopback port, that can be stopped, killed and
//! restarted on the same port; and a subscriber that records everything.

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Lines appended to the generated mosquitto.conf (a bridge, say).
    extra: String,
}

/// A free port whose next port is free too (the embedded broker listens on both).
pub fn free_port_pair() -> u16 {
    let free = |p: u16| {
        std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
    };
    (0..50)
        .map(|_| free_port())
        .find(|p| *p < u16::MAX && free(*p))
        .expect("a free pair of loopback ports")
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with("")
    }

    /// A broker whose mosquitto.conf ends with `extra` (e.g. a `connection` bridge section;
    /// it must come last, as Mosquitto reads every line after `connection` as the bridge's).
    pub fn start_with(extra: &str) -> Broker {
        let mut b = Broker {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.to_string(),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 100\n{}{}",
                self.port,
                self.dir.path().display(),
                // Started as root, Mosquitto drops to its own user, which cannot write the
                // test's directory: persistence would fail (logged only) on every stop.
                if is_root() { "user root\n" } else { "" },
                self.extra,
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < end, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Clean stop (SIGTERM: the broker saves its sessions).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freeze the broker (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Let a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn start_again(&mut self) {
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Msg {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Subscribes to `filter` and records every message. With `persistent`, the session survives
/// a broker restart (clean start off, long session expiry) so nothing is missed while away.
pub struct Recorder {
    pub msgs: Arc<Mutex<Vec<Msg>>>,
    pub client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start(port: u16, id: &str, filter: &str, persistent: bool) -> Recorder {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        if persistent {
            o.set_clean_start(false);
            o.set_session_expiry_interval(Some(3600));
        }
        let (client, mut el) = AsyncClient::new(o, 1000);
        let msgs: Arc<Mutex<Vec<Msg>>> = Default::default();
        let m = msgs.clone();
        let c = client.clone();
        let filter = filter.to_string();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // Retain As Published, so tests can see which messages are retained.
                        let mut f = Filter::new(filter.clone(), QoS::AtLeastOnce);
                        f.preserve_retain = true;
                        let _ = c.subscribe_many([f]).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(t) = ready_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => m.lock().unwrap().push(Msg {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                        at: std::time::Instant::now(),
                    }),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("subscribed")
            .unwrap();
        Recorder { msgs, client, task }
    }

    pub fn on(&self, topic: &str) -> Vec<Msg> {
        self.msgs
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic == topic)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.msgs.lock().unwrap().clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publish one message with a throwaway client.
pub async fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let (client, mut el) = AsyncClient::new(
        MqttOptions::new(format!("pub-{}", rand::random::<u32>()), "127.0.0.1", port),
        10,
    );
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
        .await
        .unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < end {
        if let Ok(Ok(Event::Incoming(Packet::PubAck(_)))) =
            tokio::time::timeout(Duration::from_secs(1), el.poll()).await
        {
            return;
        }
    }
    panic!("publish to {topic} not acknowledged");
}
