//! The binary: check-config, hot reload by SIGHUP and file watch, graceful SIGTERM, events.

mod common;

use gatehouse::sim::net2::{Net2Sim, SimConfig};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

#[test]
fn check_config_prints_every_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "version: 1\ncolour: red\nsources:\n  net2:\n    url: ftp://x\n    username: A\n    password: p\n    client_id: c\ndoors:\n  7242929: { relay: 7 }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for p in ["colour", "sources.net2.url", "doors.7242929.relay"] {
        assert!(err.contains(p), "missing {p} in: {err}");
    }
}

#[test]
fn check_config_lists_every_error_of_one_section() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "version: 1\nmqtt: {port: \"9\", protocol: 3.1, keepalive: 5s}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for line in [
        "3 configuration error(s)",
        "  - mqtt.port: ",
        "  - mqtt.protocol: ",
        "  - mqtt.keepalive: unknown key",
    ] {
        assert!(err.contains(line), "missing {line:?} in: {err}");
    }
}

#[test]
fn token_prints_a_jwt_the_server_accepts_for_its_scope_only() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "version: 1\nweb: { jwt_secret: cli-test-secret-0123 }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["token", "--ttl", "1h", "--scope", "/hls/garage/1/", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let cfg = gatehouse::config::load_file(&f).unwrap();
    let signer = gatehouse::web::auth::UrlSigner::new(cfg.web.as_ref().unwrap()).unwrap();
    let claims = signer
        .check(Some(&tok), "/hls/garage/1/index.m3u8")
        .unwrap()
        .unwrap();
    assert_eq!(claims.sub, "cli");
    assert!(signer.check(Some(&tok), "/api/pictures/x.jpg").is_err());
    // Without a web section there is nothing to sign for.
    std::fs::write(&f, "version: 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["token", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no web section"));
}

/// `gatehouse passwd` hashes what it reads (argon2id, for `web.users`), and `gatehouse token
/// --role` signs that role into the token.
#[test]
fn passwd_hashes_for_web_users_and_token_carries_a_role() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("a long enough password"));
    // The hash is accepted in a config, and logs that account in (see tests/web_api.rs); a
    // short password is refused.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        format!("version: 1\nweb:\n  jwt_secret: cli-test-secret-0123\n  users: [{{ name: ada, role: admin, password_hash: \"{hash}\" }}]\n"),
    )
    .unwrap();
    gatehouse::config::load_file(&f).expect("the hash is accepted");
    let mut child = Command::new(BIN)
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8"));

    let out = Command::new(BIN)
        .args(["token", "--role", "viewer", "--name", "grafana", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let cfg = gatehouse::config::load_file(&f).unwrap();
    let signer = gatehouse::web::auth::UrlSigner::new(cfg.web.as_ref().unwrap()).unwrap();
    let claims = signer.check(Some(&tok), "/metrics").unwrap().unwrap();
    assert_eq!(claims.sub, "grafana");
    assert_eq!(claims.role, Some(gatehouse::config::Role::Viewer));
    let out = Command::new(BIN)
        .args(["token", "--role", "root", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown role is refused");
}

/// `gatehouse token --player CAMERA/CH` prints the link a viewer opens: the player page with a
/// token for that channel's player, its stream, playlist and segments, and nothing else.
#[test]
fn token_player_prints_the_link_to_one_channels_player() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "version: 1\nweb: { jwt_secret: cli-test-secret-0123, public_url: \"https://gate.lan/\" }\nsources:\n  hikvision:\n    - { id: garage, url: \"http://192.0.2.1\", username: admin, password: x }\n    - { id: porch, url: \"http://192.0.2.2\", username: admin, password: x }\n",
    )
    .unwrap();
    let token = |args: &[&str]| {
        Command::new(BIN)
            .arg("token")
            .args(args)
            .arg("-c")
            .arg(&f)
            .output()
            .unwrap()
    };
    let out = token(&["--player", "garage/1", "--ttl", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let tok = link
        .strip_prefix("https://gate.lan/live/garage/1?token=")
        .unwrap_or_else(|| panic!("not the player link: {link}"));
    let cfg = gatehouse::config::load_file(&f).unwrap();
    let signer = gatehouse::web::auth::UrlSigner::new(cfg.web.as_ref().unwrap()).unwrap();
    for p in [
        "/live/garage/1",
        "/api/device/garage/channel/1/live",
        "/api/device/garage/channel/1/heartbeat",
        "/hls/garage/1/index.m3u8",
        "/hls/garage/1/init0.mp4",
        "/hls/garage/1/seg7.m4s",
    ] {
        assert!(signer.check(Some(tok), p).is_ok(), "{p} refused");
    }
    for p in [
        "/api/device/garage/channel/1/stop",
        "/api/device/garage/channel/1/snapshot",
        "/api/device/garage/channel/10/live",
        "/api/device/garage/channel/2/heartbeat",
        "/api/device/porch/channel/1/live",
        "/hls/garage/10/index.m3u8",
        "/hls/porch/1/index.m3u8",
        "/live/porch/1",
        "/api/pictures/x.jpg",
        "/api/events/x/picture",
    ] {
        assert!(signer.check(Some(tok), p).is_err(), "{p} opened");
    }
    // Mistakes are named, not signed.
    for (args, says) in [
        (&["--player", "garag/1"][..], "garag"),
        (&["--player", "garage"][..], "CAMERA/CH"),
        (&["--player", "garage/x"][..], "CAMERA/CH"),
        (&["--player", "garage/1", "--scope", "/hls/"][..], "--scope"),
    ] {
        let out = token(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} printed a token");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // --scope, repeated: paths under any of the prefixes.
    let out = token(&["--scope", "/hls/garage/1/", "--scope", "/api/pictures/"]);
    assert!(out.status.success());
    let tok = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(signer.check(Some(&tok), "/hls/garage/1/index.m3u8").is_ok());
    assert!(signer.check(Some(&tok), "/api/pictures/x.jpg").is_ok());
    assert!(signer.check(Some(&tok), "/hls/porch/1/index.m3u8").is_err());
}

#[test]
fn example_config_is_valid_and_documented() {
    let out = Command::new(BIN)
        .args([
            "check-config",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"),
        ])
        .env("NET2_PASSWORD", "example")
        .env("CAMERA_PASSWORD", "example")
        .env("GATEHOUSE_JWT_SECRET", "example-secret-0123456789")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ok"), "{stdout}");
    assert!(
        stdout.contains("1 door(s)") && stdout.contains("net2"),
        "{stdout}"
    );
    // Without the variable the ${NET2_PASSWORD} reference is an error at its path.
    let out = Command::new(BIN)
        .args([
            "check-config",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"),
        ])
        .env_remove("NET2_PASSWORD")
        .env("CAMERA_PASSWORD", "example")
        .env("GATEHOUSE_JWT_SECRET", "example-secret-0123456789")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("sources.net2.password: environment variable NET2_PASSWORD is not set")
    );
}

/// Collect the daemon's JSON log lines on a channel.
fn log_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, what: &str, needle: &str) -> String {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < end {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200))
            && l.contains(needle)
        {
            return l;
        }
    }
    panic!("no log line with {needle:?} ({what})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reloads_config_and_stops_gracefully() {
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    let db = dir.path().join("g.db");
    let text = common::config_text(&sim, &db, "", "");
    std::fs::write(&cfg, &text).unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "run", "-c"])
        .arg(&cfg)
        .env("GATEHOUSE_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let rx = tokio::task::spawn_blocking({
        let rx = log_lines(&mut child);
        move || {
            wait_line(&rx, "start", "Net2 live events connected");
            rx
        }
    })
    .await
    .unwrap();
    let pid = child.id().to_string();

    // An invalid file is rejected and the running config stays.
    std::fs::write(&cfg, format!("{text}bogus: 1\n")).unwrap();
    let l = wait_line(&rx, "invalid reload", "config reload rejected");
    assert!(l.contains("bogus"), "{l}");

    // A live change applies; a restart-only change is named.
    std::fs::write(
        &cfg,
        text.replace("poll_interval: 300ms", "poll_interval: 1s"),
    )
    .unwrap();
    wait_line(&rx, "live change", "config reloaded");
    let moved = text.replace(&sim.base_url(), "http://127.0.0.1:9");
    std::fs::write(&cfg, &moved).unwrap();
    let l = wait_line(&rx, "restart-only change", "restart required");
    assert!(l.contains("sources.net2.url"), "{l}");

    // SIGHUP re-reads the file too.
    std::fs::write(&cfg, &text).unwrap();
    let _ = rx.try_iter().count();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    wait_line(&rx, "sighup", "SIGHUP");

    // SIGTERM: graceful stop, exit 0.
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    wait_line(&rx, "graceful stop", "\"stopped\"");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        sim.commands().is_empty(),
        "no door command at start-up or shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_command_prints_stored_events() {
    let mut h = common::Harness::new(SimConfig::default(), "    live: false\n").await;
    h.sim.seed_history(
        5,
        h.sim.local_now() - chrono::Duration::minutes(10),
        Duration::from_secs(60),
    );
    h.start().await;
    common::wait_for("stored", Duration::from_secs(20), || {
        h.query_i64("SELECT count(*) FROM events") >= 5
    })
    .await;
    h.stop().await;
    let out = Command::new(BIN)
        .args(["events", "--json", "-n", "3", "--db"])
        .arg(h.db())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|l| l["id"].as_str().unwrap().starts_with("net2:"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net2_doors_and_open_for_diagnostics() {
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        common::config_text(&sim, &dir.path().join("g.db"), "", ""),
    )
    .unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["net2", "-c"])
        .arg(&cfg)
        .arg("doors")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let garage = text
        .lines()
        .find(|l| l.starts_with("7242929"))
        .unwrap_or_default();
    assert!(
        garage.contains("Garage Port")
            && garage.contains("unlocked")
            && garage.contains("momentary"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("3962494") && l.contains("not configured")),
        "{text}"
    );
    assert!(sim.commands().is_empty(), "listing doors sends nothing");

    let out = tokio::process::Command::new(BIN)
        .args(["net2", "-c"])
        .arg(&cfg)
        .args(["open", "6612642"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Confirmed"), "{text}");
    assert_eq!(sim.commands().len(), 1, "exactly one command");
    let db = rusqlite::Connection::open(dir.path().join("g.db")).unwrap();
    let audited: i64 = db
        .query_row(
            "SELECT count(*) FROM audit WHERE requester LIKE 'cli:%' AND status = 'confirmed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_format_has_priority_prefixes() {
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        common::config_text(&sim, &dir.path().join("g.db"), "", ""),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "journald", "run", "-c"])
        .arg(&cfg)
        .env("GATEHOUSE_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let rx = log_lines(&mut child);
    let line =
        tokio::task::spawn_blocking(move || wait_line(&rx, "journald", "live events connected"))
            .await
            .unwrap();
    assert!(line.starts_with("<6>gatehouse::"), "{line}");
    assert!(
        !line.contains('\u{1b}'),
        "no colour codes under journald: {line:?}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_logs_into_a_pipe_have_no_colour_codes() {
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        common::config_text(&sim, &dir.path().join("g.db"), "", ""),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "pretty", "run", "-c"])
        .arg(&cfg)
        .env("GATEHOUSE_LOG", "info")
        .env_remove("NO_COLOR")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let rx = log_lines(&mut child);
    let pid = child.id().to_string();
    let lines = tokio::task::spawn_blocking(move || {
        let first = wait_line(&rx, "pretty", "live events connected");
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        // Until the daemon closes stderr on exit.
        std::iter::once(first).chain(rx.iter()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:?}");
    for l in &lines {
        assert!(!l.contains("\x1b["), "colour codes in a pipe: {l:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_ready_and_feeds_the_watchdog() {
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        common::config_text(&sim, &dir.path().join("g.db"), "", ""),
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let msgs = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got
            .iter()
            .filter(|m: &&String| m.as_str() == "WATCHDOG=1")
            .count()
            < 2
        {
            let n = sock.recv(&mut buf).expect("a notification in time");
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    })
    .await
    .unwrap();
    assert_eq!(msgs[0], "READY=1");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// The README's first command: `gatehouse demo` runs the whole daemon against its simulators
/// (Net2, camera, NVR, GATE, Apptive) with nothing to configure, writes a config that
/// `check-config` accepts, stores events from Net2 and GATE, and stops cleanly.
#[test]
fn the_demo_runs_everything_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--seconds", "14", "--dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    common::demo::assert_demo_ran(&out, dir.path(), 14);
    let check = Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(dir.path().join("config.yaml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the demo's config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}
