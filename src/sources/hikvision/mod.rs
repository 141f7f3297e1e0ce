//! Hikvision cameras and NVRs (ISAPI): alarms from the alert stream become clean, never-stuck
//! states ([`CameraAlarm`]) and history events; device info and reachability become health.
//!
//! Per device: `hikvision.<id>.stream` (the alert stream: reconnect at once after a healthy
//! end, back off after failures, hard after refused credentials), `hikvision.<id>.info`
//! (deviceInfo, refreshed), and a ticker for hold-offs and the offline grace period.

pub mod alert;
pub mod client;
pub mod digest;
pub mod gate;
pub mod info;
pub mod kinds;
pub mod multipart;
pub mod pictures;
pub mod state;

use crate::bus::Bus;
use crate::config::HikvisionConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::model::*;
use crate::task::{Backoff, RunEnd, supervise};
use chrono::Utc;
use client::IsapiClient;
use multipart::{Parser, PartKind};
use state::{Change, Holdoff, Tracker};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Refused credentials: the device locks clients out for ~30 min after repeated failures.
const AUTH_BACKOFF: Duration = Duration::from_secs(1800);
const MAX_PART: usize = 2 * 1024 * 1024;
const INFO_EVERY: Duration = Duration::from_secs(600);
/// The timer task never sleeps less than this, so a deadline that is already due cannot spin.
const TIMER_SLACK: Duration = Duration::from_millis(5);

struct Device {
    cfg: HikvisionConfig,
    /// The bus source name, also the topic path: `camera/<id>`.
    source: String,
    client: IsapiClient,
    tracker: Mutex<Tracker>,
    bus: Bus,
    /// Since when the device is unreachable (availability waits `offline_after`).
    down_since: Mutex<Option<(Instant, String)>>,
    online: Mutex<Option<bool>>,
    seq: AtomicU64,
    pictures: pictures::Pictures,
    /// Channel of the last alert: a picture part belongs to the alert before it.
    last_channel: Mutex<Option<u32>>,
    /// A history alert was logged at INFO on this stream (the rest go to DEBUG).
    history_logged: std::sync::atomic::AtomicBool,
    /// Wakes the timer task when its next deadline may have moved earlier (a new alarm, a
    /// new outage).
    timer: tokio::sync::Notify,
    /// The REST API's view of this device: written here directly (device info, reachability,
    /// video loss), not through the lossy bus watch.
    cameras: crate::directory::Cameras,
}

impl Device {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn health(&self, online: bool, detail: &str) {
        let changed = {
            let mut o = self.online.lock().unwrap_or_else(|p| p.into_inner());
            o.replace(online) != Some(online)
        };
        if changed {
            self.cameras
                .set_online(&self.cfg.id, online, detail, Utc::now());
            if online {
                tracing::info!(device = %self.cfg.id, "camera reachable");
            } else {
                tracing::warn!(device = %self.cfg.id, detail, "camera unreachable");
            }
            self.bus
                .publish(Message::Health(SourceHealth {
                    source: self.source.clone(),
                    online,
                    live: online,
                    ready: online,
                    detail: detail.to_string(),
                }))
                .await;
        }
    }

    fn failed(&self, e: &Error) {
        let mut d = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        let detail = if e.kind() == ErrorKind::Auth {
            format!("authentication failed: {e}")
        } else {
            e.to_string()
        };
        match d.as_mut() {
            Some((_, msg)) => *msg = detail,
            None => {
                *d = Some((Instant::now(), detail));
                self.timer.notify_one();
            }
        }
    }

    /// When the timer task has work: the next hold-off to run out, or the moment an outage
    /// becomes "unreachable" (not again once reported).
    fn next_deadline(&self) -> Option<Instant> {
        let holdoff = self.lock().next_deadline();
        let reported = *self.online.lock().unwrap_or_else(|p| p.into_inner()) == Some(false);
        let offline = match &*self.down_since.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((since, _)) if !reported => Some(*since + self.cfg.offline_after.get()),
            _ => None,
        };
        holdoff.into_iter().chain(offline).min()
    }

    async fn up(&self) {
        *self.down_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.health(true, "").await;
    }

    /// A camera event for the store and the event topic. Its `time` is when gatehouse
    /// received it (one convention for every event; the device's clock is only metadata).
    /// `alert`: the alert that caused it, with its part as received (kept raw).
    fn event(
        &self,
        key: &state::Key,
        active: bool,
        backlog: bool,
        alert: Option<(&alert::Alert, &str)>,
    ) -> Event {
        let (raw, alert) = match alert {
            Some((a, raw)) => (raw, Some(a)),
            None => ("{}", None),
        };
        let now = Utc::now();
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "{}:{}:{}:{}:{}@{}.{n}",
            self.source,
            key.channel.map(|c| c.to_string()).unwrap_or_default(),
            key.event_type,
            key.target.clone().unwrap_or_default(),
            match (backlog, active) {
                (true, _) => "history",
                (false, true) => "on",
                (false, false) => "off",
            },
            now.timestamp_millis()
        );
        let targets = match (&key.target, alert) {
            (Some(t), _) => vec![t.clone()],
            (None, Some(a)) if backlog => a.targets(),
            _ => Vec::new(),
        };
        Event {
            id: id.clone(),
            source: self.source.clone(),
            source_id: None,
            fingerprint: id,
            time: now.with_timezone(&chrono::Local).fixed_offset(),
            received: now,
            via: Via::Live,
            door: None,
            user: None,
            kind: EventKind::CameraAlert {
                event_type: key.event_type.clone(),
                active,
                channel: key.channel,
                io_port: key.io_port,
                targets,
                backlog,
                device_time: alert.and_then(|a| a.device_time()),
            },
            code: None,
            description: Some(format!(
                "{} {}",
                key.event_type,
                match (backlog, active) {
                    (true, _) => "retransmitted by the device (history)",
                    (false, true) => "started",
                    (false, false) => "ended",
                }
            )),
            raw: raw.to_string(),
        }
    }

    async fn publish_changes(&self, changes: Vec<Change>, alert: Option<(&alert::Alert, &str)>) {
        for c in changes {
            if let Some(ch) = c.key.channel
                && c.key.event_type == "videoloss"
            {
                self.cameras.set_video_loss(&self.cfg.id, ch, c.on);
            }
            let event = self.event(&c.key, c.on, false, alert);
            let at = event.received;
            self.bus.publish(Message::Event(Box::new(event))).await;
            self.bus
                .publish(Message::CameraAlarm(CameraAlarm {
                    device: self.cfg.id.clone(),
                    channel: c.key.channel,
                    io_port: c.key.io_port,
                    event_type: c.key.event_type.clone(),
                    target: c.key.target.clone(),
                    on: c.on,
                    at,
                }))
                .await;
        }
    }

    async fn on_part(&self, part: multipart::Part) {
        match part.kind() {
            PartKind::Image => {
                let ch = *self.last_channel.lock().unwrap_or_else(|p| p.into_inner());
                self.pictures
                    .put(&self.cfg.id, ch, bytes::Bytes::from(part.body));
            }
            PartKind::Xml | PartKind::Json => match alert::parse(&part.body) {
                Ok(a) => {
                    if a.channel
                        .is_some_and(|c| self.cfg.ignore_channels.contains(&c))
                    {
                        return;
                    }
                    if !a.is_heartbeat() {
                        *self.last_channel.lock().unwrap_or_else(|p| p.into_inner()) = a.channel;
                    }
                    let raw: String = String::from_utf8_lossy(&part.body)
                        .chars()
                        .take(16 * 1024)
                        .collect();
                    if !a.is_heartbeat() && (a.retransmission || a.state == alert::State::Other) {
                        self.history(&a, &raw).await;
                        return;
                    }
                    let changes = self.lock().on_alert(&self.cfg.id, &a, Instant::now());
                    if changes.iter().any(|c| c.on) {
                        // A new hold-off: it may run out before the timer's current deadline.
                        self.timer.notify_one();
                    }
                    self.publish_changes(changes, Some((&a, &raw))).await;
                }
                Err(e) => {
                    let raw = String::from_utf8_lossy(&part.body);
                    tracing::warn!(device = %self.cfg.id, error = %e, raw = %raw.chars().take(200).collect::<String>(), "malformed alert kept raw");
                    self.bus
                        .publish(Message::Reject {
                            source: self.source.clone(),
                            context: "alert stream part".into(),
                            error: e.to_string(),
                            raw: raw.chars().take(64 * 1024).collect(),
                        })
                        .await;
                }
            },
        }
    }

    /// An alert that changes no state — retransmitted after a reconnect
    /// (`isDataRetransmission`), or in no known state — is kept as history: stored and
    /// published as an event with `backlog: true`, and logged (the first of a stream at INFO).
    async fn history(&self, a: &alert::Alert, raw: &str) {
        let first = !self.history_logged.swap(true, Ordering::Relaxed);
        let why = if a.retransmission {
            "retransmitted by the device"
        } else {
            "in no known state"
        };
        if first {
            tracing::info!(device = %self.cfg.id, event_type = %a.event_type, channel = ?a.channel, device_time = ?a.device_time(), why, "alert kept as history, not state (further ones at DEBUG)");
        } else {
            tracing::debug!(device = %self.cfg.id, event_type = %a.event_type, channel = ?a.channel, device_time = ?a.device_time(), why, "alert kept as history, not state");
        }
        let key = state::Key {
            device: self.cfg.id.clone(),
            channel: a.channel,
            io_port: a.io_port,
            event_type: a.event_type.clone(),
            target: None,
        };
        let event = self.event(&key, a.state == alert::State::Active, true, Some((a, raw)));
        self.bus.publish(Message::Event(Box::new(event))).await;
    }

    async fn stream_once(&self, cancel: &CancellationToken) -> Result<RunEnd> {
        let res = match self.client.alert_stream().await {
            Ok(r) => r,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        self.up().await;
        self.history_logged.store(false, Ordering::Relaxed);
        let ct = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let boundary = Parser::boundary_of(&ct).unwrap_or_else(|| "boundary".into());
        let mut parser = Parser::new(&boundary, MAX_PART);
        let mut res = res;
        let idle = self.cfg.idle_timeout.get();
        loop {
            let chunk = tokio::select! {
                _ = cancel.cancelled() => return Ok(RunEnd::Cancelled),
                c = tokio::time::timeout(idle, res.chunk()) => c,
            };
            let parts = match chunk {
                Err(_) => {
                    let e = Error::new(
                        ErrorKind::Unavailable,
                        format!("no byte from the alert stream for {idle:?}"),
                    );
                    self.failed(&e);
                    return Err(e);
                }
                Ok(Err(e)) => {
                    let e = Error::with_source(ErrorKind::Unavailable, "alert stream failed", e);
                    self.failed(&e);
                    return Err(e);
                }
                // A healthy end (NVRs close every 15–40 s; HTTP/1.0 bodies end at close).
                Ok(Ok(None)) => {
                    for p in parser.finish().into_iter().flatten() {
                        self.on_part(p).await;
                    }
                    return Ok(RunEnd::Healthy);
                }
                Ok(Ok(Some(bytes))) => parser.push(&bytes),
            };
            for p in parts {
                match p {
                    Ok(p) => self.on_part(p).await,
                    Err(e) => {
                        tracing::warn!(device = %self.cfg.id, error = %e, "alert stream part skipped")
                    }
                }
            }
        }
    }

    async fn info_once(&self) -> Result<()> {
        let xml = self.client.get_text("/ISAPI/System/deviceInfo").await?;
        let (top, _) = info::records(&xml, "-");
        let field = |k: &str| top.get(k).cloned().filter(|s| !s.is_empty());
        let device_type = field("deviceType");
        let recorder = device_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("NVR") || t.eq_ignore_ascii_case("DVR"));
        // Optional documents: a device that does not have one answers 403/404; that is fine.
        let optional = |path: &'static str| async move { self.client.get_text(path).await.ok() };
        // NVR channels are proxies of IP cameras; `/System/Video/inputs` answers 403 on pure
        // NVRs and lists analog inputs on DVRs and the camera's own input.
        let mut channels = Vec::new();
        let mut channel_source = None;
        if recorder && let Some(x) = optional("/ISAPI/ContentMgmt/InputProxy/channels").await {
            channels = info::channels(&x);
            channel_source = (!channels.is_empty()).then_some("ip");
        }
        if channels.is_empty()
            && let Some(x) = optional("/ISAPI/System/Video/inputs/channels").await
        {
            channels = info::channels(&x);
            channel_source = (!channels.is_empty()).then_some("local");
        }
        let disks = optional("/ISAPI/ContentMgmt/Storage")
            .await
            .map(|x| info::disks(&x))
            .unwrap_or_default();
        let rtsp_port = optional("/ISAPI/Security/adminAccesses")
            .await
            .and_then(|x| info::rtsp_port(&x));
        let triggers = optional("/ISAPI/Event/triggers")
            .await
            .map(|x| info::triggers(&x))
            .unwrap_or_default();
        let info = CameraInfo {
            device: self.cfg.id.clone(),
            name: field("deviceName"),
            model: field("model"),
            serial: field("serialNumber"),
            mac: field("macAddress"),
            firmware: field("firmwareVersion"),
            device_type,
            channels,
            disks,
            rtsp_port,
            triggers,
        };
        self.cameras
            .set_info(info.clone(), channel_source, Utc::now());
        self.bus.publish(Message::CameraInfo(info)).await;
        Ok(())
    }
}

/// One credential gate per configured device, shared by every client of it (alert stream,
/// device info, pictures) and kept across restarts in `store`.
pub fn gates(
    cfg: &crate::config::Config,
    store: &crate::storage::Store,
) -> std::collections::BTreeMap<String, Arc<gate::AuthGate>> {
    cfg.sources
        .hikvision
        .iter()
        .map(|c| {
            let pw = c.password.clone().unwrap_or_default();
            let g = gate::AuthGate::new(&c.id, &c.username, &pw, Some(store.clone()));
            (c.id.clone(), Arc::new(g))
        })
        .collect()
}

fn holdoff_of(cfg: &HikvisionConfig) -> Holdoff {
    Holdoff {
        default: cfg.holdoff.get(),
        per_type: cfg
            .holdoff_per_type
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.get()))
            .collect(),
    }
}

/// Start one device's tasks.
pub fn spawn(
    cfg: &HikvisionConfig,
    gate: Arc<gate::AuthGate>,
    bus: Bus,
    pictures: pictures::Pictures,
    cameras: crate::directory::Cameras,
    mut cfg_rx: crate::config::reload::ConfigRx,
    cancel: CancellationToken,
) -> Result<Vec<JoinHandle<()>>> {
    let client = IsapiClient::new(
        &cfg.url,
        &cfg.username,
        cfg.password.clone().unwrap_or_default(),
        &cfg.tls,
        gate,
    )?;
    let dev = Arc::new(Device {
        source: format!("camera/{}", cfg.id),
        cfg: cfg.clone(),
        client,
        tracker: Mutex::new(Tracker::new(holdoff_of(cfg))),
        bus,
        down_since: Mutex::new(None),
        online: Mutex::new(None),
        seq: AtomicU64::new(0),
        pictures,
        last_channel: Mutex::new(None),
        history_logged: Default::default(),
        timer: tokio::sync::Notify::new(),
        cameras,
    });
    let mut tasks = Vec::new();
    let d = dev.clone();
    let c = cancel.clone();
    tasks.push(supervise(
        format!("hikvision.{}.stream", cfg.id),
        cancel.clone(),
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        AUTH_BACKOFF,
        move || {
            let (d, c) = (d.clone(), c.clone());
            async move { d.stream_once(&c).await }
        },
    ));
    let d = dev.clone();
    let c = cancel.clone();
    tasks.push(supervise(
        format!("hikvision.{}.info", cfg.id),
        cancel.clone(),
        Backoff::new(Duration::from_secs(5), Duration::from_secs(300)),
        AUTH_BACKOFF,
        move || {
            let (d, c) = (d.clone(), c.clone());
            async move {
                loop {
                    d.info_once().await?;
                    tokio::select! {
                        _ = tokio::time::sleep(INFO_EVERY) => {}
                        _ = c.cancelled() => return Ok(RunEnd::Cancelled),
                    }
                }
            }
        },
    ));
    let d = dev;
    tasks.push(tokio::spawn(async move {
        // Sleeps until the next deadline (no polling: an idle daemon on a Pi should not wake
        // several times a second per camera); woken early by a new alarm, a new outage or a
        // config change. A hold-off that was re-armed by a repeated alarm since is simply
        // found not yet expired, and the sleep resumes to its new end.
        let mut config_open = true;
        loop {
            let next = d.next_deadline();
            let mut reload = false;
            tokio::select! {
                _ = async {
                    match next {
                        // Never a busy loop, whatever the clock does.
                        Some(t) => tokio::time::sleep_until(t.max(Instant::now() + TIMER_SLACK)).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = d.timer.notified() => {}
                r = cfg_rx.changed(), if config_open => match r {
                    Ok(()) => reload = true,
                    Err(_) => config_open = false,
                },
                _ = cancel.cancelled() => return,
            }
            // Hold-offs apply live (also to alarms that are ON now: the hold-off is read when
            // it is checked, not when the alarm started).
            if reload {
                let new = cfg_rx
                    .borrow_and_update()
                    .sources
                    .hikvision
                    .iter()
                    .find(|c| c.id == d.cfg.id)
                    .map(holdoff_of);
                if let Some(h) = new {
                    d.lock().set_default_holdoff(h);
                }
            }
            let changes = d.lock().tick(Instant::now());
            d.publish_changes(changes, None).await;
            let down = d
                .down_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some((since, detail)) = down
                && since.elapsed() >= d.cfg.offline_after.get()
            {
                d.health(false, &detail).await;
            }
        }
    }));
    Ok(tasks)
}
