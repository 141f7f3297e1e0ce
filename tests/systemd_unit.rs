//! The systemd unit (`systemd/gatehouse.service`) as systemd itself rates it: exposure 2.0 or
//! below by `systemd-analyze security --offline=true` (it was 5.6), and still carrying what
//! gatehouse needs — the network for Net2, cameras (ISAPI, RTSP), MQTT and its web port, a
//! config check before the start that waits instead of restart-looping, SIGHUP reload,
//! credentials and a state directory; and gatehouse.path, which starts it once the config is
//! saved. The .deb ships these very files (tests/deb_package.rs).

use std::process::Command;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/gatehouse.service");

fn directives() -> Vec<(String, String)> {
    std::fs::read_to_string(UNIT)
        .expect("systemd/gatehouse.service")
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn values(key: &str) -> Vec<String> {
    directives()
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn systemd_rates_the_unit_2_or_below() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", UNIT])
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no overall rating:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable rating: {line}"));
    assert!(
        score <= 2.0,
        "exposure {score} (want 2.0 or below):\n{text}"
    );
}

#[test]
fn the_hardened_unit_keeps_what_gatehouse_needs() {
    let one = |k: &str| values(k).into_iter().next().unwrap_or_default();
    assert_eq!(one("Type"), "notify", "READY=1 and the watchdog");
    assert!(one("WatchdogSec").parse::<u32>().is_ok_and(|s| s >= 30));
    // A bad config stops the start as a failed *condition*: an ExecStartPre= failure would be
    // retried by Restart=on-failure every RestartSec= forever.
    assert!(
        one("ExecCondition")
            .contains("check-config --skip-secret-files -c /etc/gatehouse/config.yaml"),
        "a bad config stops the start (credentials do not exist yet for ExecCondition=)"
    );
    // A config that fails at the daemon's own start (a missing secret) exits 78: no loop.
    assert_eq!(one("RestartPreventExitStatus"), "78");
    assert!(
        values("ExecStartPre").is_empty(),
        "the check is the condition"
    );
    assert_eq!(one("Restart"), "on-failure");
    assert!(
        one("ExecStart").starts_with("/usr/bin/gatehouse "),
        "where the .deb puts it"
    );
    assert!(one("ExecStart").contains(" run -c /etc/gatehouse/config.yaml"));
    assert!(one("ExecReload").contains("-HUP"), "hot reload by SIGHUP");
    // Every secret file in one directory, so a site without (say) Net2 needs no empty
    // password file for the start to succeed.
    assert_eq!(
        values("LoadCredential"),
        ["secrets:/etc/gatehouse/secrets"],
        "secrets as credentials"
    );
    // The package's static user, whose group reads the 0640 config.
    assert_eq!(one("User"), "gatehouse");
    assert!(values("DynamicUser").iter().all(|v| v == "no"));
    assert_eq!(one("StateDirectory"), "gatehouse");
    assert_eq!(
        one("UMask"),
        "0077",
        "the database and pictures are the service's alone"
    );
    // Net2, ISAPI, RTSP, MQTT, Apptive, GATE and the web port are TCP; journald and sd_notify
    // are local sockets.
    let families = one("RestrictAddressFamilies");
    for f in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(families.split_whitespace().any(|x| x == f), "{f} allowed");
    }
    for blocked in ["PrivateNetwork", "IPAddressDeny"] {
        assert!(
            values(blocked).iter().all(|v| v == "no" || v.is_empty()),
            "{blocked} would cut gatehouse off from its devices"
        );
    }
    // No capability: the web port is above 1024 by default (a drop-in adds
    // CAP_NET_BIND_SERVICE for a lower one, as the unit's comment says).
    assert_eq!(values("CapabilityBoundingSet"), [""]);
}

/// gatehouse.path starts the service when the config is saved: a fresh install waits on the
/// template and starts once it is filled in, without a restart loop in between.
#[test]
fn the_path_unit_starts_the_service_when_the_config_is_saved() {
    let path_unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/gatehouse.path");
    let text = std::fs::read_to_string(path_unit).expect("systemd/gatehouse.path");
    for line in [
        "PathChanged=/etc/gatehouse/config.yaml",
        "Unit=gatehouse.service",
        "WantedBy=paths.target",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    // systemd parses both files without a complaint (it may only miss the binary, which is
    // not installed here).
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args([UNIT, path_unit])
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("/usr/bin/gatehouse is not executable"))
        .collect();
    assert!(complaints.is_empty(), "{err}");
}

/// The other half of RestartPreventExitStatus=78: a daemon whose config does not load at its
/// own start (the condition above skips secret files; a missing one fails here) exits 78, so
/// systemd marks it failed once instead of restarting it every RestartSec=.
#[test]
fn run_exits_78_when_its_config_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "version: 1\nmqtt:\n  host: 127.0.0.1\n  password_file: /nonexistent/secrets_mqtt\n",
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check-config", "--skip-secret-files", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the condition passes: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("mqtt.password_file"), "{err}");
}
