//! Wiring: config → bus → sinks and sources → ready → shutdown.

use crate::bus::{Bus, BusBuilder};
use crate::config::{Config, reload};
use crate::error::Result;
use crate::logging::LogHandle;
use crate::model::Command;
use crate::storage::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running gatehouse.
pub struct App {
    pub bus: Bus,
    pub store: Store,
    /// The last picture per camera channel from the alert streams.
    pub pictures: crate::sources::hikvision::pictures::Pictures,
    /// Snapshots and live streams (when cameras are configured).
    pub media: Option<crate::media::service::Media>,
    /// Where the web server listens (when configured).
    pub web_addr: Option<std::net::SocketAddr>,
    /// The doors and users the sources know (names only), for the REST API.
    pub directory: crate::directory::Directory,
    /// Emergency lockdown / unlock / restore (the REST API's), with their expiry.
    pub emergency: crate::emergency::Emergency,
    config: watch::Sender<Arc<Config>>,
    sources_cancel: CancellationToken,
    /// The presence engine: stopped after the sources (it takes their last evidence), before
    /// the sinks (its last states and events reach them).
    presence: Option<(CancellationToken, JoinHandle<()>)>,
    sinks_cancel: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    sinks: Vec<JoinHandle<()>>,
}

impl App {
    /// Start everything. `config_path` enables hot reload (file watch + SIGHUP).
    pub async fn start(
        cfg: Config,
        config_path: Option<PathBuf>,
        log: Option<LogHandle>,
    ) -> Result<App> {
        Self::start_with_clock(cfg, config_path, log, Arc::new(crate::clock::SystemClock)).await
    }

    /// [`App::start`] with the clock that times emergency expiry, presence and retention
    /// (tests move it, and step it as NTP does).
    pub async fn start_with_clock(
        cfg: Config,
        config_path: Option<PathBuf>,
        log: Option<LogHandle>,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Result<App> {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), summary = %cfg.summary(), "starting gatehouse");
        let store = Store::open(&cfg.storage.path)?;
        if let Some(m) = cfg.mqtt.as_ref().filter(|m| m.embedded) {
            crate::sinks::mqtt::embedded::start(m.embedded_bind)?;
        }
        let (cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg.clone()));
        let sources_cancel = CancellationToken::new();
        let sinks_cancel = CancellationToken::new();

        let mut builder = BusBuilder::default();
        // Sinks (lossless subscriptions) — register before any source starts.
        let store_rx = builder.sink();
        let mqtt_rx = cfg.mqtt.is_some().then(|| {
            // Events reach MQTT through the outbox the store fills in the same transaction.
            store.enable_outbox();
            builder.sink()
        });
        // People: the presence engine takes evidence only (a filtered queue: it never
        // receives what it publishes itself, see `presence`).
        let presence_rx =
            (!cfg.people.is_empty()).then(|| builder.sink_filtered(crate::presence::wanted));
        let commands = builder.take_commands().expect("command queue taken once");
        let qr_scans = builder.take_qr_scans().expect("QR scan queue taken once");
        let bus = builder.build();
        // Filled by the Net2 source; doors and users for the REST API.
        let directory = crate::directory::Directory::new();
        // The emergency mode kept from before a restart (never sent again; restored at its
        // expiry by the task started with the sources).
        let emergency = crate::emergency::Emergency::load(
            store.clone(),
            bus.clone(),
            cfg_rx.clone(),
            directory.clone(),
            clock.clone(),
        );
        // The web server's socket first: a bind error fails the start before anything runs.
        let listener = match &cfg.web {
            Some(w) => Some(crate::web::bind(w).await?),
            None => None,
        };
        // One credential gate per camera, shared by its alert stream, info and pictures.
        let gates = crate::sources::hikvision::gates(&cfg, &store);
        // Before the sources: it learns RTSP ports from their first device info.
        let media = if cfg.sources.hikvision.is_empty() {
            None
        } else {
            Some(crate::media::service::Media::start(
                cfg_rx.clone(),
                bus.clone(),
                store.clone(),
                &gates,
                directory.cameras().clone(),
                clock.clone(),
                sources_cancel.child_token(),
            )?)
        };
        // The web server runs whenever `web:` is configured, with or without cameras.
        let web_addr = match listener {
            Some(l) => {
                let ctx = crate::web::Context {
                    media: media.clone(),
                    store: store.clone(),
                    bus: bus.clone(),
                    config: cfg_rx.clone(),
                    directory: directory.clone(),
                    emergency: emergency.clone(),
                    clock: clock.clone(),
                };
                Some(crate::web::serve(ctx, l, sinks_cancel.clone()).await?)
            }
            None => None,
        };

        let mut sinks = vec![tokio::spawn(crate::sinks::store::run(
            store.clone(),
            store_rx,
            cfg_rx.clone(),
            clock.clone(),
            sinks_cancel.clone(),
        ))];
        if let Some(rx) = mqtt_rx {
            sinks.push(tokio::spawn(crate::sinks::mqtt::run(
                store.clone(),
                bus.clone(),
                rx,
                cfg_rx.clone(),
                media.clone(),
                sinks_cancel.clone(),
            )));
        }

        // Presence, before the sources: every person's state is out before new evidence.
        // Started only with `people:` at start-up (adding the first person needs a restart;
        // later changes to `people:` apply live).
        let presence = presence_rx.map(|rx| {
            let cancel = CancellationToken::new();
            // The start is read here, before the task is spawned: evidence stamped after
            // `App::start` returns (GATE's first session list) must never count as backfill
            // from before the start, whenever the task first runs (a race seen in tests).
            let started = clock.now();
            let task = tokio::spawn(crate::presence::run(
                store.clone(),
                bus.clone(),
                rx,
                cfg_rx.clone(),
                clock.clone(),
                started,
                cancel.clone(),
            ));
            (cancel, task)
        });

        // Sources.
        let mut sources = Vec::new();
        let pictures = crate::sources::hikvision::pictures::Pictures::default();
        let mut commands = Some(commands);
        if cfg.sources.net2.is_some() {
            sources.extend(crate::sources::net2::spawn(
                &store,
                bus.clone(),
                cfg_rx.clone(),
                commands.take().expect("one owner of door commands"),
                sources_cancel.clone(),
                directory.clone(),
            )?);
        }
        // Cameras without ISAPI have no alert stream or device info: the media service follows
        // their availability over RTSP.
        for cam in cfg.sources.hikvision.iter().filter(|c| c.isapi()) {
            sources.extend(crate::sources::hikvision::spawn(
                cam,
                gates[&cam.id].clone(),
                bus.clone(),
                pictures.clone(),
                directory.cameras().clone(),
                cfg_rx.clone(),
                sources_cancel.clone(),
            )?);
        }
        // QR access: scans from MQTT, REST and USB readers → Apptive → the door command queue.
        // Without `apptive:` the queue is dropped (adding it later needs a restart).
        if cfg.apptive.is_some() {
            sources.extend(crate::apptive::spawn(
                store.clone(),
                bus.clone(),
                cfg_rx.clone(),
                qr_scans,
                clock.clone(),
                sources_cancel.clone(),
            ));
        } else {
            drop(qr_scans);
        }
        if cfg.sources.gate.is_some() {
            sources.extend(crate::sources::gate::spawn(
                &store,
                bus.clone(),
                cfg_rx.clone(),
                sources_cancel.clone(),
            )?);
        }
        // After the Net2 source: a restore due at start-up waits for its first door status.
        sources.push(emergency.spawn(sources_cancel.clone()));
        // A burst's freed heap given back once it is over (a small machine's RSS).
        sources.push(tokio::spawn(crate::memory::run(sources_cancel.clone())));
        if let Some(mut c) = commands {
            // No source owns doors: answer nothing, but do not let senders block. Ends at
            // shutdown too: the senders (MQTT, web) may outlive the sinks' wait, which then
            // took its full 10 s on every stop of a daemon without doors.
            let cancel = sinks_cancel.clone();
            sinks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = c.recv() => if r.is_none() { return },
                        _ = cancel.cancelled() => return,
                    }
                }
            }));
        }

        // Hot reload.
        if let Some(path) = config_path {
            sinks.push(tokio::spawn(reload::watch_file(
                path,
                cfg_tx.clone(),
                sources_cancel.clone(),
            )));
        }
        if let Some(log) = log {
            let mut rx = cfg_rx.clone();
            let cancel = sources_cancel.clone();
            sinks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { return },
                        _ = cancel.cancelled() => return,
                    }
                    let level = rx.borrow().log.level.clone();
                    log.set_level(&level);
                }
            }));
        }
        Ok(App {
            bus,
            store,
            pictures,
            media,
            web_addr,
            directory,
            emergency,
            config: cfg_tx,
            sources_cancel,
            presence,
            sinks_cancel,
            sources,
            sinks,
        })
    }

    /// Where sinks (MQTT, REST, CLI) send door commands.
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.bus.commands()
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// Replace the running config as a reload would (tests, and the file watcher).
    pub fn config_sender(&self) -> &watch::Sender<Arc<Config>> {
        &self.config
    }

    /// Graceful stop: sources first, then sinks drain what is queued (storage is flushed).
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.sources_cancel.cancel();
        // A door command in flight finishes (up to its request timeout) so its result is
        // audited before the store closes.
        for t in self.sources {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
        if let Some((cancel, task)) = self.presence {
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        // RTSP sessions are torn down (TEARDOWN sent) before the process goes.
        if let Some(m) = &self.media {
            m.shutdown().await;
        }
        drop(self.bus);
        self.sinks_cancel.cancel();
        for t in self.sinks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        tracing::info!("stopped");
    }
}

/// Send one notification to systemd (`sd_notify`); a no-op outside systemd.
fn sd_notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let p = path.to_string_lossy();
    let res = if let Some(abs) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &*p)
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "unable to notify systemd");
    }
}

/// Tell systemd we are ready (`Type=notify`), and keep its watchdog fed at half of
/// `WATCHDOG_USEC` while the runtime is alive.
pub fn notify_ready() {
    sd_notify("READY=1");
    let usec = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(usec) = usec.filter(|u| *u > 0) {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_micros(usec / 2));
            loop {
                every.tick().await;
                sd_notify("WATCHDOG=1");
            }
        });
    }
}

/// Wait for SIGTERM or SIGINT, then shut down; a second signal exits at once.
pub async fn run_until_signal(app: App) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    let shutdown = app.shutdown();
    tokio::select! {
        _ = shutdown => {}
        _ = term.recv() => { tracing::warn!("second signal: exiting now"); std::process::exit(130) }
        _ = int.recv() => { tracing::warn!("second signal: exiting now"); std::process::exit(130) }
    }
}
