//! The commands behind `gatehouse …` (the binary only parses arguments). These write to
//! stdout on purpose: they are the user interface.

use crate::app::{App, notify_ready, run_until_signal};
use crate::config::{self, Config, LogFormat};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::model::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub enum Action {
    Run {
        config: PathBuf,
        log_format: Option<LogFormat>,
    },
    #[cfg(feature = "sim")]
    Demo {
        dir: Option<PathBuf>,
        seconds: Option<u64>,
        log_format: Option<LogFormat>,
    },
    Events {
        db: Option<PathBuf>,
        config: Option<PathBuf>,
        follow: bool,
        last: i64,
        json: bool,
    },
    Net2Doors {
        config: PathBuf,
    },
    Token {
        config: PathBuf,
        name: String,
        ttl: String,
        /// Path prefixes the token opens; empty: every path.
        scope: Vec<String>,
        /// `CAMERA/CH`: print that channel's player link with a token for it alone.
        player: Option<String>,
        /// `viewer`, `operator` or `admin` (default: admin, as before roles).
        role: Option<String>,
    },
    Passwd,
    #[cfg(feature = "sim")]
    SimNet2 {
        bind: std::net::SocketAddr,
        every: u64,
    },
    #[cfg(feature = "sim")]
    SimHikvision {
        bind: std::net::SocketAddr,
        nvr: bool,
        channels: u32,
        rtsp: bool,
        every: u64,
    },
    #[cfg(feature = "sim")]
    SimApptive {
        bind: std::net::SocketAddr,
    },
    #[cfg(feature = "sim")]
    SimGate {
        bind: std::net::SocketAddr,
        every: u64,
    },
    Net2Open {
        config: PathBuf,
        door: DoorId,
        action: DoorAction,
    },
}

fn load(path: &Path) -> Result<Config> {
    config::load_file(path)
        .map_err(|e| Error::new(ErrorKind::Config, format!("{}: {e}", path.display())))
}

pub async fn dispatch(a: Action) -> Result<()> {
    match a {
        Action::Run { config, log_format } => {
            let cfg = load(&config)?;
            let log = crate::logging::init(log_format.unwrap_or(cfg.log.format), &cfg.log.level);
            let app = App::start(cfg, Some(config), Some(log)).await?;
            notify_ready();
            run_until_signal(app).await;
            Ok(())
        }
        #[cfg(feature = "sim")]
        Action::Demo {
            dir,
            seconds,
            log_format,
        } => demo(dir, seconds, log_format).await,
        Action::Events {
            db,
            config,
            follow,
            last,
            json,
        } => {
            let db = match (db, config) {
                (Some(db), _) => db,
                (None, Some(c)) => load(&c)?.storage.path,
                (None, None) => PathBuf::from("./gatehouse.db"),
            };
            events(&db, follow, last, json).await
        }
        Action::Net2Doors { config } => net2_doors(&load(&config)?).await,
        Action::Token {
            config,
            name,
            ttl,
            scope,
            player,
            role,
        } => {
            let cfg = load(&config)?;
            let role = match role.as_deref() {
                None => None,
                Some(r) => Some(serde_norway::from_str::<config::Role>(r).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidArgument,
                        format!("--role {r:?}: expected viewer, operator or admin"),
                    )
                })?),
            };
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                token(&cfg, &name, &ttl, &scope, player.as_deref(), role)?
            );
            Ok(())
        }
        Action::Passwd => passwd(),
        #[cfg(feature = "sim")]
        Action::SimNet2 { bind, every } => sim_net2(bind, every).await,
        #[cfg(feature = "sim")]
        Action::SimHikvision {
            bind,
            nvr,
            channels,
            rtsp,
            every,
        } => sim_hikvision(bind, nvr, channels, rtsp, every).await,
        #[cfg(feature = "sim")]
        Action::SimApptive { bind } => sim_apptive(bind).await,
        #[cfg(feature = "sim")]
        Action::SimGate { bind, every } => sim_gate(bind, every).await,
        Action::Net2Open {
            config,
            door,
            action,
        } => net2_open(load(&config)?, door, action).await,
    }
}

/// `gatehouse passwd`: an argon2id hash for `web.users[].password_hash`.
fn passwd() -> Result<()> {
    use std::io::IsTerminal;
    let bad = |e: std::io::Error| Error::new(ErrorKind::InvalidArgument, format!("{e}"));
    let password = if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("Password: ").map_err(bad)?;
        let b = rpassword::prompt_password("Again: ").map_err(bad)?;
        if a != b {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the two passwords differ",
            ));
        }
        a
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(bad)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.chars().count() < crate::web::accounts::MIN_PASSWORD {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "a password needs at least {} characters",
                crate::web::accounts::MIN_PASSWORD
            ),
        ));
    }
    let hash = crate::web::accounts::hash_password(&password)
        .map_err(|e| Error::new(ErrorKind::Internal, e))?;
    let _ = writeln!(std::io::stdout(), "{hash}");
    Ok(())
}

/// `gatehouse token`: a token opening `scope` (every path if empty), or with `player`
/// (`CAMERA/CH`) the link to that channel's player page, carrying a token for it alone.
fn token(
    cfg: &Config,
    name: &str,
    ttl: &str,
    scope: &[String],
    player: Option<&str>,
    role: Option<config::Role>,
) -> Result<String> {
    let web = cfg.web.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            "no web section in the config: no server to open",
        )
    })?;
    let ttl: config::HumanDuration = serde_norway::from_str(ttl)
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, format!("--ttl {ttl:?}: {e}")))?;
    // A Pi before NTP (no real-time clock) would sign a token that is long expired, or far
    // too long valid, once the clock is set.
    crate::clock::ensure_set(
        chrono::Utc::now(),
        "a token signed now would expire at the wrong time",
    )?;
    let signer = crate::web::auth::UrlSigner::new(web)?;
    let Some(player) = player else {
        let scope = (!scope.is_empty()).then(|| scope.to_vec());
        return match (role, scope) {
            (Some(r), scope) => signer.token_with_role(name, ttl.get(), r, scope),
            (None, None) => signer.token(name, ttl.get(), None),
            (None, Some(s)) => signer.token_for(name, ttl.get(), &s),
        };
    };
    let (camera, ch) = player
        .split_once('/')
        .and_then(|(c, ch)| Some((c, ch.parse::<u32>().ok()?)))
        .filter(|(c, _)| !c.is_empty())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("--player {player:?}: expected CAMERA/CH, e.g. garage/1"),
            )
        })?;
    if !cfg.sources.hikvision.iter().any(|h| h.id == camera) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("--player {player:?}: no camera {camera:?} in sources.hikvision"),
        ));
    }
    use crate::media::live::{player_path, player_scope};
    let t = signer.token_for(name, ttl.get(), &player_scope(camera, ch))?;
    Ok(format!(
        "{}{}?token={t}",
        signer.base(),
        player_path(camera, ch)
    ))
}

fn print_event(out: &mut impl Write, e: &crate::storage::StoredEvent, json: bool) {
    if json {
        let v = serde_json::json!({
            "seq": e.seq, "id": e.id, "time": e.time, "kind": e.kind, "door_id": e.door_id,
            "door": e.door_name, "user": e.user_name, "description": e.description, "via": e.via,
        });
        let _ = writeln!(out, "{v}");
    } else {
        let _ = writeln!(
            out,
            "{}  {:<16} {:<32} {:<24} {}",
            e.time,
            e.kind,
            e.door_name.as_deref().unwrap_or("-"),
            e.user_name.as_deref().unwrap_or("-"),
            e.description.as_deref().unwrap_or("")
        );
    }
}

/// Print the last `last` events, then (with `follow`) new ones as they are stored.
pub async fn events(db: &Path, follow: bool, last: i64, json: bool) -> Result<()> {
    let mut waited = false;
    while !db.exists() {
        if !follow {
            return Err(Error::new(
                ErrorKind::Storage,
                format!("no database at {}", db.display()),
            ));
        }
        if !waited {
            eprintln!("waiting for {} to appear…", db.display());
            waited = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let conn = crate::storage::Store::open_readonly(db)?;
    let mut seq = (crate::storage::last_seq(&conn)? - last).max(0);
    let mut out = std::io::stdout();
    loop {
        let batch = crate::storage::events_after(&conn, seq, 500)?;
        for e in &batch {
            print_event(&mut out, e, json);
            seq = e.seq;
        }
        let _ = out.flush();
        if !follow {
            return Ok(());
        }
        if batch.len() < 500 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
}

async fn net2_doors(cfg: &Config) -> Result<()> {
    let n = cfg
        .sources
        .net2
        .as_ref()
        .ok_or_else(|| Error::new(ErrorKind::Config, "sources.net2 is not configured"))?;
    let client = crate::sources::net2::client::Net2Client::new(n)?;
    let doors = client.get("/api/v1/doors", &[]).await?;
    let status = client.get("/api/v1/doors/status", &[]).await?;
    let doors: Vec<crate::sources::net2::types::DoorEntry> =
        serde_json::from_str(&doors.text).unwrap_or_default();
    let status: Vec<crate::sources::net2::types::DoorStatusEntry> = if status.text.trim().is_empty()
    {
        Vec::new()
    } else {
        serde_json::from_str(&status.text).ctx(
            ErrorKind::Protocol,
            || "Net2 door status answer is not the expected JSON",
        )?
    };
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "{:<10} {:<40} {:<8} {:<9} config",
        "id", "name", "contact", "relay"
    );
    for d in doors {
        let s = status
            .iter()
            .find(|s| s.id == d.id)
            .and_then(|s| s.status.clone())
            .unwrap_or_default();
        let contact = match s.door_contact_closed {
            Some(true) => "closed",
            Some(false) => "open",
            None => "-",
        };
        let relay = match s.door_relay_open {
            Some(true) => "unlocked",
            Some(false) => "locked",
            None => "-",
        };
        let conf = cfg
            .doors
            .get(&d.id)
            .map(|c| format!("{:?}", c.mode).to_lowercase())
            .unwrap_or_else(|| "not configured".into());
        let _ = writeln!(
            out,
            "{:<10} {:<40} {:<8} {:<9} {}",
            d.id,
            d.name.unwrap_or_default(),
            contact,
            relay,
            conf
        );
    }
    Ok(())
}

/// Send one command through a short-lived daemon, so it passes the same safety checks and is
/// audited like any other.
async fn net2_open(cfg: Config, door: DoorId, action: DoorAction) -> Result<()> {
    let app = App::start(cfg, None, None).await?;
    let mut watch = app.bus.watch();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Message::Health(h)) = watch.recv().await
                && h.ready
            {
                return;
            }
        }
    })
    .await;
    if ready.is_err() {
        app.shutdown().await;
        return Err(Error::new(
            ErrorKind::Unavailable,
            "no door status from Net2 within 30 s; nothing sent",
        ));
    }
    let request_id = format!("cli-{}", chrono::Utc::now().timestamp_millis());
    let cmd = Command {
        request_id: request_id.clone(),
        requester: format!("cli:{}", std::env::var("USER").unwrap_or_default()),
        kind: CommandKind::Door {
            door,
            action,
            duration_ms: None,
        },
        received: chrono::Utc::now(),
        received_at: tokio::time::Instant::now(),
    };
    let _ = app.commands().send(cmd).await;
    let result = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            if let Ok(Message::Command(u)) = watch.recv().await
                && u.request_id == request_id
            {
                println_status(&u);
                if !matches!(u.status, CommandStatus::Accepted | CommandStatus::Sent) {
                    return u.status;
                }
            }
        }
    })
    .await;
    app.shutdown().await;
    match result {
        Ok(CommandStatus::Confirmed) => Ok(()),
        Ok(s) => Err(Error::new(
            ErrorKind::Unavailable,
            format!("command ended {s:?}"),
        )),
        Err(_) => Err(Error::new(ErrorKind::Unavailable, "no result within 40 s")),
    }
}

fn println_status(u: &CommandUpdate) {
    let _ = writeln!(std::io::stdout(), "{:?}: {}", u.status, u.detail);
}

#[cfg(feature = "sim")]
async fn demo(
    dir: Option<PathBuf>,
    seconds: Option<u64>,
    log_format: Option<LogFormat>,
) -> Result<()> {
    use crate::sim::net2::{Net2Sim, SimConfig};
    let log = crate::logging::init(log_format.unwrap_or(LogFormat::Pretty), "info");
    let (dir, _tmp) = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).ctx(ErrorKind::Storage, || {
                format!("unable to create {}", d.display())
            })?;
            (d, None)
        }
        None => {
            let t = tempfile_dir()?;
            (t.clone(), Some(t))
        }
    };
    // The simulated server keeps this machine's time zone, as one in the same building would
    // (gatehouse does not rely on that: live wall-clock times wait for a REST event to show the
    // server's offset; tests run the simulator an hour east of the machine).
    let sim_cfg = SimConfig {
        utc_offset_minutes: chrono::Local::now().offset().local_minus_utc() / 60,
        ..SimConfig::default()
    };
    let (user, pass, client_id) = (
        sim_cfg.username.clone(),
        sim_cfg.password.clone(),
        sim_cfg.client_id.clone(),
    );
    let sim = Net2Sim::start(sim_cfg)
        .await
        .ctx(ErrorKind::Internal, || "unable to start the Net2 simulator")?;
    let cancel = tokio_util::sync::CancellationToken::new();
    sim.spawn_generator(Duration::from_secs(4), cancel.clone());
    // A camera and an NVR, with some motion now and then.
    use crate::sim::hikvision::{HikSim, HikSimConfig, Personality};
    use crate::sim::rtsp::RtspSimConfig;
    // Both stream an H.264 test pattern over RTSP (port in their adminAccesses).
    let cam = HikSim::start(HikSimConfig {
        personality: Personality::camera(),
        rtsp: Some(RtspSimConfig::default()),
        ..Default::default()
    })
    .await
    .ctx(
        ErrorKind::Internal,
        || "unable to start the camera simulator",
    )?;
    let nvr = HikSim::start(HikSimConfig {
        personality: Personality::nvr(),
        rtsp: Some(RtspSimConfig::default()),
        ..Default::default()
    })
    .await
    .ctx(ErrorKind::Internal, || "unable to start the NVR simulator")?;
    let (cam_url, nvr_url) = (cam.base_url(), nvr.base_url());
    let (cam_rtsp, nvr_rtsp) = (
        cam.rtsp_url(101).unwrap_or_default(),
        nvr.rtsp_url(101).unwrap_or_default(),
    );
    // Zequenze GATE: a few invented Wi-Fi users logging in and out.
    let gate = std::sync::Arc::new(
        crate::sim::gate::GateSim::start(crate::sim::gate::GateSimConfig::default())
            .await
            .ctx(ErrorKind::Internal, || "unable to start the GATE simulator")?,
    );
    gate.spawn_generator(Duration::from_secs(6), cancel.clone());
    let gate_url = gate.base_url();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        let mut n = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(9)) => {}
                _ = c2.cancelled() => return,
            }
            n += 1;
            // A burst of `active` like a real camera; the NVR never sends `inactive`.
            for _ in 0..3 {
                cam.push_alert(1, "VMD", "active");
                nvr.push_alert(1 + n % 4, "linedetection", "active");
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            cam.push_alert(1, "VMD", "inactive");
        }
    });
    let db = dir.join("gatehouse.db");
    let cfg_path = dir.join("config.yaml");
    // The embedded broker on 1883 when it is free, else on any free port.
    let free = |p: u16| {
        std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
    };
    let mqtt_port = if free(1883) {
        1883
    } else {
        (0..50)
            .filter_map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .ok()?
                    .local_addr()
                    .ok()
            })
            .map(|a| a.port())
            .find(|p| *p < u16::MAX && free(*p))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    "no free port pair for the embedded MQTT broker",
                )
            })?
    };
    // Apptive QR access at the front door (Fordør), against its simulator.
    let apptive = crate::sim::apptive::ApptiveSim::start(Default::default())
        .await
        .ctx(
            ErrorKind::Internal,
            || "unable to start the Apptive simulator",
        )?;
    let jwt_secret = format!("demo-{:032x}", rand::random::<u128>());
    let yaml = format!(
        "# written by `gatehouse demo`\nversion: 1\nstorage:\n  path: {db}\nsources:\n  net2:\n    url: {url}\n    username: {user}\n    password: {pass}\n    client_id: {client_id}\n    safety_poll_interval: 30s\n  hikvision:\n    - {{ id: camera, url: \"{cam_url}\", username: admin, password: sim-hik-pass }}\n    - {{ id: nvr, url: \"{nvr_url}\", username: admin, password: sim-hik-pass }}\n  gate:\n    url: {gate_url}\n    token: {gate_token}\n    poll_interval: 5s\n    user_entities: all\nmqtt:\n  embedded: true\n  embedded_bind: 127.0.0.1:{mqtt_port}\nmedia:\n  snapshot_on_alarm: [linedetection]\nweb:\n  bind: 127.0.0.1:{web_port}\n  jwt_secret: {jwt}\ndoors:\n  7242929: {{ name: Garage Port, mode: momentary, held_open_after: 2m, camera: camera/1 }}\n  6612642: {{ name: Fordør, open_time_ms: 5000, held_open_after: 1m, camera: nvr/2, direction: in }}\n  6203980: {{ name: Fordør Terndrupvej, direction: out }}\npeople:\n  - {{ id: mette, name: Mette Holm, net2_users: [8], apptive_members: [\"303\"], gate_usernames: [alex.berg, alex.berg@example.org] }}\n  - {{ id: jonas, name: Jonas Bak, net2_users: [12], gate_usernames: [kim.lund, kim.lund@example.org] }}\napptive:\n  url: {apptive_url}\n  token: {apptive_token}\n  readers:\n    - {{ id: front-qr, door: 6612642, door_id: door_123 }}\n",
        db = db.display(),
        apptive_url = apptive.base_url(),
        apptive_token = apptive.token(),
        url = sim.base_url(),
        web_port = if free(8480) { 8480 } else { 0 },
        jwt = jwt_secret,
        gate_token = crate::sim::gate::SIM_TOKEN,
    );
    std::fs::write(&cfg_path, yaml)
        .ctx(ErrorKind::Storage, || "unable to write the demo config")?;
    let cfg = load(&cfg_path)?;
    let app = App::start(cfg, Some(cfg_path.clone()), Some(log)).await?;
    let mut out = std::io::stdout();
    let web = match (&app.media, app.web_addr) {
        (Some(m), Some(addr)) => {
            let day = Duration::from_secs(86400);
            let (tok, player) = m
                .urls()
                .and_then(|u| {
                    let scope = crate::media::live::player_scope("camera", 1);
                    Some((
                        u.token("demo", day, None).ok()?,
                        u.token_for("demo", day, &scope).ok()?,
                    ))
                })
                .unwrap_or_default();
            format!(
                "  live video:       http://{addr}/live/camera/1?token={player}\n  snapshot:         http://{addr}/api/device/camera/channel/1/snapshot?token={tok}\n  snapshot by MQTT: mosquitto_pub -p {mqtt_port} -t gatehouse/camera/camera/snapshot/set -m PRESS\n  REST API:         curl -H 'Authorization: Bearer {tok}' http://{addr}/api/access-control/events\n  its description:  http://{addr}/api/openapi.json\n  live events:      curl -N -H 'Authorization: Bearer {tok}' http://{addr}/api/events/stream\n"
            )
        }
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "\ngatehouse demo is running.\n  Net2 simulator:   {}\n  camera RTSP:      {cam_rtsp} (admin / sim-hik-pass)\n  NVR RTSP:         {nvr_rtsp} (channels 1-4)\n  GATE simulator:   {gate_url} (Wi-Fi users come and go)\n{web}  MQTT broker:      127.0.0.1:{mqtt_port} (embedded)  try: mosquitto_sub -p {mqtt_port} -t 'gatehouse/#' -v\n  Apptive simulator: {apptive_url}  a QR scan at the front door:\n                    curl -s '{apptive_url}/qr/?token={apptive_token}&member=303' | mosquitto_pub -p {mqtt_port} -t gatehouse/qr/front-qr/scan -s\n  config (hot-reloaded): {}\n  database:         {}\n  follow events:    gatehouse events --follow --db {}\nPress Ctrl-C to stop.\n",
        sim.base_url(),
        cfg_path.display(),
        db.display(),
        db.display(),
        apptive_url = apptive.base_url(),
        apptive_token = apptive.token(),
    );
    let mut watch = app.bus.watch();
    let printer = tokio::spawn(async move {
        let mut out = std::io::stdout();
        loop {
            match watch.recv().await {
                Ok(Message::Event(e)) => {
                    let _ = writeln!(out, "{}", event_line(&e, &chrono::Local));
                }
                Ok(Message::DoorState(d)) => {
                    let _ = writeln!(out, "{}", door_line(&d, chrono::Utc::now(), &chrono::Local));
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    match seconds {
        Some(s) => {
            tokio::time::sleep(Duration::from_secs(s)).await;
            app.shutdown().await;
        }
        None => run_until_signal(app).await,
    }
    printer.abort();
    cancel.cancel();
    sim.shutdown().await;
    apptive.shutdown().await;
    Ok(())
}

// `gatehouse demo` prints one line per event and door state: the local time with its offset
// (devices report theirs, or UTC), what happened, and where.

/// `06:00:01+01:00`: `t` in the zone `tz` (the demo passes `chrono::Local`).
#[cfg(feature = "sim")]
fn clock<Tz: chrono::TimeZone>(t: &chrono::DateTime<impl chrono::TimeZone>, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    t.with_timezone(tz).format("%H:%M:%S%:z").to_string()
}

/// One line of `gatehouse demo` for an event.
#[cfg(feature = "sim")]
fn event_line<Tz: chrono::TimeZone>(e: &Event, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let time = clock(&e.time, tz);
    if let EventKind::CameraAlert {
        event_type,
        active,
        channel,
        io_port,
        targets,
        backlog,
        ..
    } = &e.kind
    {
        let camera = e.source.strip_prefix("camera/").unwrap_or(&e.source);
        let what = format!(
            "{} {}",
            camera_event_words(event_type),
            if *active { "started" } else { "ended" }
        );
        let place = match (channel, io_port) {
            (Some(c), _) => format!(" channel {c}"),
            (None, Some(p)) => format!(" input {p}"),
            (None, None) => String::new(),
        };
        let targets = if targets.is_empty() {
            String::new()
        } else {
            format!(" ({})", targets.join(", "))
        };
        let history = if *backlog { " (history)" } else { "" };
        return format!("{time}  camera  {what:<22} {camera}{place}{targets}{history}");
    }
    let name = |n: Option<&String>| n.cloned().unwrap_or_else(|| "-".into());
    if let EventKind::Wifi {
        username,
        mac,
        access_point,
        ..
    } = &e.kind
    {
        let who = username.as_ref().or(mac.as_ref());
        return format!(
            "{time}  wifi    {:<22} {} at {}",
            e.kind.name(),
            name(who),
            name(access_point.as_ref())
        );
    }
    let door = match &e.door {
        Some(d) => name(d.name.as_ref()),
        None => name(e.description.as_ref()),
    };
    let by = e
        .user
        .as_ref()
        .map(|u| format!(" by {}", name(u.name.as_ref())))
        .unwrap_or_default();
    format!("{time}  event   {:<22} {door}{by}", e.kind.name())
}

/// Hikvision event types (lower case on the bus) in words; unknown ones as they are.
#[cfg(feature = "sim")]
fn camera_event_words(t: &str) -> &str {
    crate::sources::hikvision::kinds::kind(t).words.unwrap_or(t)
}

/// One line of `gatehouse demo` for a door's state, at its last update (else `now`).
#[cfg(feature = "sim")]
fn door_line<Tz: chrono::TimeZone>(
    d: &DoorState,
    now: chrono::DateTime<chrono::Utc>,
    tz: &Tz,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let contact = match d.open {
        Some(true) => "open",
        Some(false) => "closed",
        None => "contact unknown",
    };
    let lock = match d.unlocked {
        Some(true) => "unlocked",
        Some(false) => "locked",
        None => "lock unknown",
    };
    let held = if d.held_open { ", held open" } else { "" };
    format!(
        "{}  door    {:<22} {}",
        clock(&d.updated.unwrap_or(now), tz),
        format!("{contact}, {lock}{held}"),
        d.name.as_deref().unwrap_or("-")
    )
}

#[cfg(feature = "sim")]
fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("gatehouse-demo-{}", std::process::id()));
    std::fs::create_dir_all(&d).ctx(ErrorKind::Storage, || {
        format!("unable to create {}", d.display())
    })?;
    Ok(d)
}

#[cfg(feature = "sim")]
async fn sim_apptive(bind: std::net::SocketAddr) -> Result<()> {
    use crate::sim::apptive::{ApptiveSim, ApptiveSimConfig};
    crate::logging::init(LogFormat::Pretty, "info");
    let cfg = ApptiveSimConfig {
        bind,
        ..ApptiveSimConfig::default()
    };
    let (doors, members) = (cfg.doors.clone(), cfg.members.clone());
    let sim = ApptiveSim::start(cfg).await.ctx(
        ErrorKind::Internal,
        || "unable to start the Apptive simulator",
    )?;
    let mut out = format!(
        "url: {url}\ntoken: {token}\ndoor_ids: {doors}\n",
        url = sim.base_url(),
        token = sim.token(),
        doors = doors.join(", ")
    );
    for m in &members {
        out.push_str(&format!(
            "member {}: {} {} ({}); a QR code: {}/qr/?token={}&member={}\n",
            m.id,
            m.firstname,
            m.lastname,
            if m.subscription {
                "subscription"
            } else {
                "no subscription"
            },
            sim.base_url(),
            sim.token(),
            m.id
        ));
    }
    let _ = write!(std::io::stdout(), "{out}");
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    Ok(())
}

#[cfg(feature = "sim")]
async fn sim_gate(bind: std::net::SocketAddr, every: u64) -> Result<()> {
    use crate::sim::gate::{GateSim, GateSimConfig, SIM_TOKEN};
    crate::logging::init(LogFormat::Pretty, "info");
    let sim = std::sync::Arc::new(
        GateSim::start(GateSimConfig {
            bind,
            ..GateSimConfig::default()
        })
        .await
        .ctx(ErrorKind::Internal, || "unable to start the GATE simulator")?,
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    if every > 0 {
        sim.spawn_generator(Duration::from_secs(every), cancel.clone());
    }
    let _ = writeln!(
        std::io::stdout(),
        "url: {}\ntoken: {SIM_TOKEN}",
        sim.base_url()
    );
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    cancel.cancel();
    sim.shutdown();
    Ok(())
}

#[cfg(feature = "sim")]
async fn sim_net2(bind: std::net::SocketAddr, every: u64) -> Result<()> {
    use crate::sim::net2::{Net2Sim, SimConfig};
    crate::logging::init(LogFormat::Pretty, "info");
    let cfg = SimConfig {
        bind,
        ..SimConfig::default()
    };
    let (user, pass, id) = (
        cfg.username.clone(),
        cfg.password.clone(),
        cfg.client_id.clone(),
    );
    let sim = Net2Sim::start(cfg)
        .await
        .ctx(ErrorKind::Internal, || "unable to start the Net2 simulator")?;
    let cancel = tokio_util::sync::CancellationToken::new();
    if every > 0 {
        sim.spawn_generator(Duration::from_secs(every), cancel.clone());
    }
    let _ = writeln!(
        std::io::stdout(),
        "url: {}
username: {user}
password: {pass}
client_id: {id}",
        sim.base_url()
    );
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = stdin_bursts(|| sim.push_random(), |words| net2_fault(&sim, words)) => {}
    }
    cancel.cancel();
    sim.shutdown().await;
    Ok(())
}

/// The Net2 simulator's faults from stdin, for `scripts/chaos.sh`: `fault 500|502|429 on|off`
/// (REST answers 500 / 502, the token endpoint 429), `fault 401` (every access and refresh
/// token invalid from now on), `fault drop` (every SignalR socket closed abruptly). Returns
/// what it did, or `None` for a line that is not one of these.
#[cfg(feature = "sim")]
fn net2_fault(sim: &crate::sim::net2::Net2Sim, words: &[&str]) -> Option<String> {
    use std::sync::atomic::Ordering::Relaxed;
    let f = sim.faults();
    match words {
        [
            "fault",
            which @ ("500" | "502" | "429"),
            state @ ("on" | "off"),
        ] => {
            let flag = match *which {
                "500" => &f.fail_500,
                "502" => &f.html_error,
                _ => &f.token_429,
            };
            flag.store(*state == "on", Relaxed);
        }
        ["fault", "401"] => {
            sim.expire_tokens();
            sim.expire_refresh_tokens();
        }
        ["fault", "drop"] => sim.drop_websockets(),
        _ => return None,
    }
    Some(format!("fault done {}", words[1..].join(" ")))
}

/// Bursts on request, for load measurements (`scripts/bench_idle_rss.sh`): each stdin line
/// `burst N RATE` calls `push` (which logs one or more events and says how many) until N
/// events are out, RATE per second, then prints `burst done N`. Any other line goes to
/// `control`, which prints its answer, or `None` for a line it does not know. Returns at end
/// of input, after which the simulator runs until Ctrl-C.
#[cfg(feature = "sim")]
async fn stdin_bursts(
    mut push: impl FnMut() -> usize,
    mut control: impl FnMut(&[&str]) -> Option<String>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (n, rate) = match words.as_slice() {
            ["burst", n, rate] => match (n.parse::<usize>(), rate.parse::<u32>()) {
                (Ok(n), Ok(r)) if r > 0 => (n, r),
                _ => {
                    eprintln!("expected: burst COUNT RATE_PER_SECOND");
                    continue;
                }
            },
            [] => continue,
            _ => {
                match control(&words) {
                    Some(done) => {
                        let _ = writeln!(std::io::stdout(), "{done}");
                        let _ = std::io::stdout().flush();
                    }
                    None => eprintln!("expected: burst COUNT RATE_PER_SECOND"),
                }
                continue;
            }
        };
        let (per_slice, slice) = burst_pacing(rate);
        let mut tick = tokio::time::interval(slice);
        let mut sent = 0;
        while sent < n {
            tick.tick().await;
            let mut k = 0;
            while k < per_slice && sent < n {
                let m = push();
                sent += m;
                k += m;
            }
        }
        let _ = writeln!(std::io::stdout(), "burst done {sent}");
        let _ = std::io::stdout().flush();
    }
    std::future::pending::<()>().await
}

/// Events per slice and the slice, for RATE events a second: slices of at least 10 ms, not
/// one timer per event (10,000/s stays cheap). The slice was once always 10 ms, so a RATE
/// under 100 ran at 100 a second.
#[cfg(feature = "sim")]
fn burst_pacing(rate: u32) -> (usize, Duration) {
    let per_slice = (rate as usize).div_ceil(100).max(1);
    (per_slice, Duration::from_secs(1) * per_slice as u32 / rate)
}

#[cfg(feature = "sim")]
async fn sim_hikvision(
    bind: std::net::SocketAddr,
    nvr: bool,
    channels: u32,
    rtsp: bool,
    every: u64,
) -> Result<()> {
    use crate::sim::hikvision::{HikSim, HikSimConfig, Personality};
    crate::logging::init(LogFormat::Pretty, "info");
    let cfg = HikSimConfig {
        bind,
        personality: if nvr {
            Personality::nvr()
        } else {
            Personality::camera()
        },
        rtsp: rtsp.then(crate::sim::rtsp::RtspSimConfig::default),
        ..HikSimConfig::default()
    };
    let (user, pass) = (cfg.username.clone(), cfg.password.clone());
    let sim = std::sync::Arc::new(HikSim::start(cfg).await.ctx(
        ErrorKind::Internal,
        || "unable to start the Hikvision simulator",
    )?);
    let channels = channels.max(1);
    // One event = an `active` alert on a channel, then its `inactive` (alternating, so each
    // pair is one motion start and end whatever the personality).
    let mut n = 0u64;
    let mut next = move || {
        n += 1;
        let ch = 1 + (((n - 1) / 2) % u64::from(channels)) as u32;
        let state = if n % 2 == 1 { "active" } else { "inactive" };
        (ch, state)
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    if every > 0 {
        let (s, c) = (sim.clone(), cancel.clone());
        let mut gen_next = next; // a copy: its own counter
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = c.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (ch, state) = gen_next();
                s.push_alert(ch, "VMD", state);
            }
        });
    }
    let rtsp_url = sim.rtsp_url(101).unwrap_or_default();
    let _ = writeln!(
        std::io::stdout(),
        "url: {}\nusername: {user}\npassword: {pass}\nchannels: {channels}\nrtsp: {rtsp_url}",
        sim.base_url()
    );
    let _ = std::io::stdout().flush();
    // The record `scripts/chaos.sh` compares with: each alert of a burst as it is pushed
    // (`alert SEQ CHANNEL STATE`, its number also in its `activePostCount`), and each one
    // written to an alert stream (`delivered SEQ STREAM MS`). An alert pushed while no stream
    // is open reaches nobody (a real device's live stream has no queue) and has no
    // `delivered` line.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    sim.record_deliveries(tx);
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            let _ = writeln!(
                std::io::stdout(),
                "delivered {} {} {}",
                d.seq,
                d.stream,
                d.at_ms
            );
        }
    });
    // SIGUSR1 drops the streams too, at once: stdin lines wait for the burst before them.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut usr1 = signal(SignalKind::user_defined1())
            .ctx(ErrorKind::Internal, || "unable to listen for SIGUSR1")?;
        let s = sim.clone();
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                s.drop_streams();
                let _ = writeln!(std::io::stdout(), "fault done drop (SIGUSR1)");
            }
        });
    }
    let (s2, s3) = (sim.clone(), sim.clone());
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = stdin_bursts(move || {
            let (ch, state) = next();
            let seq = s2.push_numbered(ch, "VMD", state);
            let _ = writeln!(std::io::stdout(), "alert {seq} {ch} {state}");
            1
        }, move |words| hikvision_fault(&s3, words)) => {}
    }
    cancel.cancel();
    Ok(())
}

/// The Hikvision simulator's faults from stdin, for `scripts/chaos.sh`: `fault drop` (every
/// open alert stream closed now, between two parts). Returns what it did, or `None` for a
/// line that is not one of these.
#[cfg(feature = "sim")]
fn hikvision_fault(sim: &crate::sim::hikvision::HikSim, words: &[&str]) -> Option<String> {
    match words {
        ["fault", "drop"] => sim.drop_streams(),
        _ => return None,
    }
    Some(format!("fault done {}", words[1..].join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, FixedOffset};

    #[cfg(feature = "sim")]
    #[test]
    fn bursts_keep_their_rate_below_100_a_second_too() {
        for (rate, per_slice, ms) in [(1, 1, 1000), (50, 1, 20), (100, 1, 10), (200, 2, 10)] {
            assert_eq!(
                burst_pacing(rate),
                (per_slice, Duration::from_millis(ms)),
                "rate {rate}"
            );
        }
        // Not a whole number of milliseconds: still RATE a second.
        let (n, slice) = burst_pacing(150);
        assert_eq!(n, 2);
        assert!((n as f64 / slice.as_secs_f64() - 150.0).abs() < 0.01);
    }

    #[cfg(feature = "sim")]
    #[tokio::test]
    async fn net2_fault_lines_switch_the_simulators_faults() {
        use crate::sim::net2::{Net2Sim, SimConfig};
        use std::sync::atomic::Ordering::Relaxed;
        let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
        let f = sim.faults();
        for (which, flag) in [
            ("500", &f.fail_500),
            ("502", &f.html_error),
            ("429", &f.token_429),
        ] {
            let done = net2_fault(&sim, &["fault", which, "on"]);
            assert_eq!(
                done.as_deref(),
                Some(format!("fault done {which} on").as_str())
            );
            assert!(flag.load(Relaxed), "{which} on");
            net2_fault(&sim, &["fault", which, "off"]).unwrap();
            assert!(!flag.load(Relaxed), "{which} off");
        }
        assert!(net2_fault(&sim, &["fault", "401"]).is_some());
        assert!(net2_fault(&sim, &["fault", "drop"]).is_some());
        // Anything else is not a fault line (the caller says what it expected instead).
        for bad in [
            &["fault"][..],
            &["fault", "404", "on"],
            &["fault", "500"],
            &["fault", "500", "maybe"],
            &["fault", "401", "on"],
            &["burst"],
        ] {
            assert_eq!(net2_fault(&sim, bad), None, "{bad:?}");
        }
        assert!(!f.fail_500.load(Relaxed) && !f.html_error.load(Relaxed));
        sim.shutdown().await;
    }

    fn at(t: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(t).unwrap()
    }

    fn event(source: &str, time: &str, kind: EventKind) -> Event {
        Event {
            id: "x".into(),
            source: source.into(),
            source_id: None,
            fingerprint: "x".into(),
            time: at(time),
            received: at(time).to_utc(),
            via: Via::Live,
            door: None,
            user: None,
            kind,
            code: None,
            description: None,
            raw: "{}".into(),
        }
    }

    fn cet() -> FixedOffset {
        FixedOffset::east_opt(3600).unwrap()
    }

    fn alert(event_type: &str, active: bool, channel: Option<u32>, io: Option<u32>) -> EventKind {
        EventKind::CameraAlert {
            event_type: event_type.into(),
            active,
            channel,
            io_port: io,
            targets: Vec::new(),
            backlog: false,
            device_time: None,
        }
    }

    #[cfg(feature = "sim")]
    #[test]
    fn demo_event_lines_show_local_time_with_offset_and_names() {
        let mut e = event(
            "net2",
            "2026-01-05T06:00:01.017+01:00",
            EventKind::AccessGranted {
                token: TokenType::Pin,
            },
        );
        e.door = Some(DoorRef {
            id: 7242929,
            name: Some("Garage Port".into()),
        });
        e.user = Some(UserRef {
            id: 8,
            name: Some("Mette Kragh Holm".into()),
        });
        assert_eq!(
            event_line(&e, &cet()),
            "06:00:01+01:00  event   access_granted         Garage Port by Mette Kragh Holm"
        );
        // The same instant from a device that reports UTC (or from another zone) reads the
        // same: one zone for every line.
        let e = event("net2", "2026-01-05T05:00:01Z", EventKind::DoorOpened);
        assert_eq!(
            event_line(&e, &cet()),
            "06:00:01+01:00  event   door_opened            -"
        );
    }

    #[test]
    fn demo_camera_lines_name_camera_channel_and_type() {
        let line = |k| event_line(&event("camera/nvr", "2026-01-05T05:00:02Z", k), &cet());
        assert_eq!(
            line(alert("linedetection", true, Some(2), None)),
            "06:00:02+01:00  camera  line crossing started  nvr channel 2"
        );
        assert_eq!(
            line(alert("vmd", false, Some(1), None)),
            "06:00:02+01:00  camera  motion ended           nvr channel 1"
        );
        assert_eq!(
            line(alert("io", true, None, Some(1))),
            "06:00:02+01:00  camera  alarm input started    nvr input 1"
        );
        assert_eq!(
            line(alert("diskfull", true, None, None)),
            "06:00:02+01:00  camera  disk full started      nvr"
        );
        let mut k = alert("fielddetection", true, Some(3), None);
        if let EventKind::CameraAlert {
            targets, backlog, ..
        } = &mut k
        {
            targets.push("human".into());
            *backlog = true;
        }
        assert_eq!(
            line(k),
            "06:00:02+01:00  camera  intrusion started      nvr channel 3 (human) (history)"
        );
        assert_eq!(
            line(alert("somethingNew", true, Some(1), None)),
            "06:00:02+01:00  camera  somethingNew started   nvr channel 1"
        );
    }

    #[cfg(feature = "sim")]
    #[test]
    fn demo_door_lines_use_words() {
        let now = at("2026-01-05T05:00:09Z").to_utc();
        let mut d = DoorState {
            id: 7242929,
            name: Some("Garage Port".into()),
            open: Some(true),
            unlocked: Some(false),
            updated: Some(at("2026-01-05T05:00:03Z").to_utc()),
            ..Default::default()
        };
        assert_eq!(
            door_line(&d, now, &cet()),
            "06:00:03+01:00  door    open, locked           Garage Port"
        );
        d.open = Some(false);
        d.unlocked = Some(true);
        d.held_open = true;
        assert_eq!(
            door_line(&d, now, &cet()),
            "06:00:03+01:00  door    closed, unlocked, held open Garage Port"
        );
        d.open = None;
        d.unlocked = None;
        d.held_open = false;
        d.updated = None;
        assert_eq!(
            door_line(&d, now, &cet()),
            "06:00:09+01:00  door    contact unknown, lock unknown Garage Port"
        );
    }
}
