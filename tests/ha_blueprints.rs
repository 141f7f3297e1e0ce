//! The Home Assistant blueprints and dashboard in `homeassistant/`, read by a real Home
//! Assistant 2024.1.6: a config directory with `automation: !include automations.yaml`, the
//! blueprints copied to `<config>/blueprints/automation/gatehouse/`, one automation per
//! blueprint (`use_blueprint` with realistic inputs: gatehouse's entity ids) and the dashboard
//! as a YAML-mode Lovelace dashboard; then HA's own config check
//! (`python -m homeassistant --script check_config -c DIR -i automation`).
//!
//! In 2024.1.6 check_config does validate blueprint automations (the automation integration's
//! `async_validate_config` loads each blueprint, substitutes the inputs and validates triggers,
//! conditions and actions), but it reports a broken one only as an `ERROR` log line and still
//! exits 0. So the test requires exit 0, no error line, and, for each automation, what only a
//! fully generated and validated automation shows in the `-i automation` dump: its trigger
//! entity and the blueprint file it came from (a failed one is kept as id and alias only).
//! A second config dir holds deliberately broken blueprints (an invalid selector, a broken
//! template) and an automation missing a required input: each must be reported, or the check
//! itself would prove nothing.
//!
//! Needs `GATEHOUSE_HA_PYTHON` (the venv scripts/test.sh creates), like tests/home_assistant.rs.

// Only its `python()`: the venv check shared with the other Home Assistant tests.
#[allow(dead_code)]
#[path = "common/ha.rs"]
mod ha;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BLUEPRINTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/homeassistant/blueprints/automation/gatehouse"
);
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/homeassistant/dashboard.yaml");
/// HA's config check loads a handful of integrations; it takes ~2 s here.
const CHECK_LIMIT: Duration = Duration::from_secs(180);
/// A device id as the mobile_app integration makes them (check_config has no registry).
const PHONE: &str = "4f2b9c1d7e8a4b6c9d0e1f2a3b4c5d6e";

/// One automation per blueprint: (blueprint file, automation YAML, what must appear in the
/// validated automation: entity ids only a substituted blueprint carries).
const AUTOMATIONS: &[(&str, &str, &[&str])] = &[
    (
        "door_held_open.yaml",
        r#"- id: garage_held_open
  alias: Garage Port held open
  use_blueprint:
    path: gatehouse/door_held_open.yaml
    input:
      door_events: event.gatehouse_door_7242929_events
      door_lock: lock.gatehouse_door_7242929_lock
      camera: camera.gatehouse_camera_camera_ch1
      notify_device: PHONE
      action_timeout: 5
"#,
        &[
            "event.gatehouse_door_7242929_events",
            "door_held_open",
            "lock.lock",
        ],
    ),
    (
        "door_forced_tamper.yaml",
        r#"- id: door_alarm
  alias: Door forced or tamper
  use_blueprint:
    path: gatehouse/door_forced_tamper.yaml
    input:
      forced_sensors:
        - binary_sensor.gatehouse_door_7242929_forced
        - binary_sensor.gatehouse_door_6612642_forced
      tamper_sensors:
        - binary_sensor.gatehouse_door_6612642_tamper
      notify_device: PHONE
"#,
        &[
            "binary_sensor.gatehouse_door_6612642_forced",
            "binary_sensor.gatehouse_door_6612642_tamper",
            "alarm_stream",
        ],
    ),
    (
        "person_arrived.yaml",
        r#"- id: mette_arrives
  alias: Mette arrives
  use_blueprint:
    path: gatehouse/person_arrived.yaml
    input:
      people:
        - device_tracker.gatehouse_person_mette
        - device_tracker.gatehouse_person_bo
      arrival_actions:
        - service: light.turn_on
          target:
            entity_id: light.hallway
"#,
        &["device_tracker.gatehouse_person_bo", "light.hallway"],
    ),
    (
        "qr_denied.yaml",
        r#"- id: qr_denied
  alias: QR code denied at the front door
  use_blueprint:
    path: gatehouse/qr_denied.yaml
    input:
      qr_reader: event.gatehouse_qr_front_qr
      notify_device: PHONE
      title: Front door QR
"#,
        &["event.gatehouse_qr_front_qr", "qr_denied"],
    ),
];

/// The blueprint files in the repository, by file name.
fn blueprint_files() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(BLUEPRINTS)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    v.sort();
    v
}

/// A config dir: configuration.yaml, the given automations, the repository's blueprints (and
/// `extra` blueprint files beside them) and the dashboard.
fn config_dir(root: &Path, name: &str, automations: &str, extra: &[(&str, String)]) -> PathBuf {
    let dir = root.join(name);
    let bp = dir.join("blueprints/automation/gatehouse");
    std::fs::create_dir_all(&bp).unwrap();
    for f in blueprint_files() {
        std::fs::copy(Path::new(BLUEPRINTS).join(&f), bp.join(&f)).unwrap();
    }
    for (f, text) in extra {
        std::fs::write(bp.join(f), text).unwrap();
    }
    std::fs::copy(DASHBOARD, dir.join("dashboard.yaml")).unwrap();
    std::fs::write(
        dir.join("configuration.yaml"),
        "homeassistant:\n  name: gatehouse blueprint check\n  unit_system: metric\n  \
         time_zone: UTC\n\
         automation: !include automations.yaml\n\
         lovelace:\n  mode: storage\n  dashboards:\n    gatehouse-doors:\n      mode: yaml\n      \
         filename: dashboard.yaml\n      title: Gatehouse\n      icon: mdi:door\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("automations.yaml"),
        automations.replace("PHONE", PHONE),
    )
    .unwrap();
    dir
}

/// HA's config check on `dir` with the automations dumped: (exit ok, stdout + stderr without
/// colour codes).
async fn check_config(dir: &Path) -> (bool, String) {
    let python = ha::python();
    let run = tokio::process::Command::new(&python)
        .args(["-m", "homeassistant", "--script", "check_config", "-c"])
        .arg(dir)
        .args(["-i", "automation"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(CHECK_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("check_config did not finish within {CHECK_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("unable to run {python} -m homeassistant: {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), strip_ansi(&text))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The lines in which HA reports a problem with the configuration.
fn error_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            l.contains("ERROR")
                || l.contains("Invalid config")
                || l.contains("Failed config")
                || l.contains("Traceback")
        })
        .collect()
}

#[tokio::test]
async fn every_blueprint_makes_a_valid_automation_in_home_assistant() {
    let tmp = tempfile::tempdir().unwrap();
    let used: BTreeSet<&str> = AUTOMATIONS.iter().map(|a| a.0).collect();
    let files = blueprint_files();
    assert_eq!(
        files.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        used,
        "every blueprint in homeassistant/ needs an automation in this test"
    );
    let all: String = AUTOMATIONS.iter().map(|a| a.1).collect();
    let dir = config_dir(tmp.path(), "good", &all, &[]);
    let (ok, text) = check_config(&dir).await;
    let errors = error_lines(&text);
    assert!(
        ok && errors.is_empty() && text.contains("Successful config"),
        "HA's config check rejected the blueprints (exit ok: {ok}):\n{}\n--- full output:\n{text}",
        errors.join("\n")
    );
    let mut missing = Vec::new();
    for (file, _, marks) in AUTOMATIONS {
        let src = format!("blueprints/automation/gatehouse/{file}:");
        for m in marks.iter().copied().chain([src.as_str()]) {
            if !text.contains(m) {
                missing.push(format!("{file}: {m}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "automations HA did not fully generate from their blueprints (not in its dump):\n{}\n\
         --- full output:\n{text}",
        missing.join("\n")
    );
}

/// The negative control: the same check reports a broken blueprint and a missing input.
#[tokio::test]
async fn a_broken_blueprint_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let read = |f: &str| std::fs::read_to_string(Path::new(BLUEPRINTS).join(f)).unwrap();
    // An option no number selector has.
    let held = read("door_held_open.yaml");
    let bad_selector = held
        .replacen("max: 60\n", "max: 60\n          bogus_option: 3\n", 1)
        .replacen("name: Gatehouse", "name: Broken selector", 1);
    assert_ne!(
        bad_selector, held,
        "door_held_open.yaml changed: fix the test"
    );
    // A template that does not parse.
    let qr = read("qr_denied.yaml");
    let bad_template = qr.replacen("{{ title }}", "{{ title }", 1).replacen(
        "name: Gatehouse",
        "name: Broken template",
        1,
    );
    assert_ne!(bad_template, qr, "qr_denied.yaml changed: fix the test");
    let automations = "\
- id: broken_selector
  alias: Broken selector
  use_blueprint:
    path: gatehouse/broken_selector.yaml
    input:
      door_events: event.gatehouse_door_7242929_events
      door_lock: lock.gatehouse_door_7242929_lock
      camera: camera.gatehouse_camera_camera_ch1
      notify_device: PHONE
- id: broken_template
  alias: Broken template
  use_blueprint:
    path: gatehouse/broken_template.yaml
    input:
      qr_reader: event.gatehouse_qr_front_qr
      notify_device: PHONE
- id: missing_input
  alias: Missing input
  use_blueprint:
    path: gatehouse/qr_denied.yaml
    input:
      notify_device: PHONE
";
    let dir = config_dir(
        tmp.path(),
        "broken",
        automations,
        &[
            ("broken_selector.yaml", bad_selector),
            ("broken_template.yaml", bad_template),
        ],
    );
    let (_, text) = check_config(&dir).await;
    let errors = error_lines(&text).join("\n");
    let expect = [
        ("invalid selector", "bogus_option"),
        ("broken template", "Broken template"),
        ("missing input", "Missing input qr_reader"),
    ];
    let unreported: Vec<_> = expect
        .iter()
        .filter(|(_, m)| !errors.contains(m))
        .map(|(what, _)| *what)
        .collect();
    assert!(
        unreported.is_empty(),
        "HA's config check did not report: {unreported:?}\n--- errors:\n{errors}\n--- full output:\n{text}"
    );
}

/// Every entity the dashboard shows is one gatehouse creates for the demo configuration of
/// tests/home_assistant.rs (object ids from src/sinks/mqtt/discovery.rs), and it has door
/// tiles, cameras and presence.
#[test]
fn the_dashboard_shows_gatehouse_entities() {
    let doc: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut known = BTreeSet::new();
    for door in ["7242929", "6612642", "6203980"] {
        for (domain, key) in [
            ("lock", "lock"),
            ("button", "open"),
            ("event", "events"),
            ("sensor", "last_user"),
            ("binary_sensor", "held_open"),
            ("binary_sensor", "forced"),
            ("binary_sensor", "tamper"),
            ("binary_sensor", "acu"),
        ] {
            known.insert(format!("{domain}.gatehouse_door_{door}_{key}"));
        }
    }
    // Doors with a contact in the demo (6203980 has none).
    for door in ["7242929", "6612642"] {
        known.insert(format!("binary_sensor.gatehouse_door_{door}_contact"));
    }
    for (cam, ch) in [("camera", 1), ("nvr", 2)] {
        known.insert(format!("camera.gatehouse_camera_{cam}_ch{ch}"));
        known.insert(format!(
            "button.gatehouse_camera_{cam}_ch{ch}_take_snapshot"
        ));
        known.insert(format!("binary_sensor.gatehouse_camera_{cam}_connectivity"));
    }
    for p in ["mette", "bo"] {
        known.insert(format!("device_tracker.gatehouse_person_{p}"));
    }
    known.insert("sensor.gatehouse_site_default_people".into());
    known.insert("event.gatehouse_qr_front_qr".into());

    fn walk(v: &serde_norway::Value, key: Option<&str>, out: &mut Vec<String>) {
        use serde_norway::Value::*;
        match v {
            String(s) if matches!(key, Some("entity" | "entities")) => out.push(s.clone()),
            Sequence(items) => items.iter().for_each(|i| walk(i, key, out)),
            Mapping(m) => {
                for (k, v) in m {
                    walk(v, k.as_str(), out);
                }
            }
            _ => {}
        }
    }
    let mut shown = Vec::new();
    walk(&doc, None, &mut shown);
    let unknown: Vec<_> = shown.iter().filter(|e| !known.contains(*e)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard shows entities gatehouse does not create: {unknown:?}"
    );
    for domain in ["lock.", "binary_sensor.", "camera.", "device_tracker."] {
        assert!(
            shown.iter().any(|e| e.starts_with(domain)),
            "the dashboard shows no {domain} entity"
        );
    }
    assert!(doc["views"].as_sequence().is_some_and(|v| v.len() >= 3));
}
