//! The Wi-Fi entities (Zequenze GATE) read by a real Home Assistant 2024.1.6: the GATE
//! simulator with sessions at two locations, the daemon, a real Mosquitto, then
//! `tests/support/ha_run.py` (as in tests/home_assistant.rs). Every gatehouse_gate config must
//! become an entity with a state (never `unknown`), HA must log no MQTT/discovery warning, the
//! numbers must be the sessions'.
//!
//! Needs `GATEHOUSE_HA_PYTHON` (the venv scripts/test.sh creates).

mod common;

use common::broker::{Broker, Recorder};
use common::wait_for;
use gatehouse::sim::gate::{GateSim, GateSimConfig, SIM_TOKEN, SimUser, default_aps};
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_makes_every_wifi_entity_with_a_state() {
    let python = std::env::var("GATEHOUSE_HA_PYTHON").unwrap_or_default();
    assert!(
        !python.is_empty() && std::path::Path::new(&python).exists(),
        "GATEHOUSE_HA_PYTHON is not set or missing: run scripts/test.sh (it creates the venv \
         of Home Assistant 2024.1.6), or set GATEHOUSE_HA_PYTHON=<venv>/bin/python"
    );
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "rec-gate-ha", "#", false).await;
    let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
    let aps = default_aps();
    // Anna (a person, RADIUS name = her e-mail) at HQ, two guests: one at HQ, one in the
    // warehouse.
    sim.login(
        &SimUser::new(5501, "anna.koch", 0x02_aa_bb_cc_dd_01),
        &aps[0],
    );
    sim.login(
        &SimUser::new(5502, "ben.lind", 0x02_aa_bb_cc_dd_02),
        &aps[1],
    );
    sim.login(&SimUser::new(5504, "guest-4", 0x02_aa_bb_cc_dd_04), &aps[2]);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "version: 1\nstorage: {{ path: {}/g.db }}\nmqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gh-gate-ha\nsources:\n  gate:\n    url: {}\n    token: {SIM_TOKEN}\n    poll_interval: 500ms\npeople:\n  - {{ id: anna, name: Anna, gate_usernames: [anna.koch@example.org] }}\n  - {{ id: carl, name: Carl, gate_usernames: [carl.dahl] }}\n",
        dir.path().display(),
        broker.port,
        sim.base_url()
    );
    let cfg = gatehouse::config::load_str(&yaml, &|_| None).unwrap();
    let app = gatehouse::app::App::start(cfg, None, None).await.unwrap();
    wait_for("occupancy announced", T, || {
        rec.all()
            .iter()
            .filter(|m| m.topic.starts_with("homeassistant/sensor/gatehouse/gate_"))
            .count()
            >= 5
    })
    .await;
    let work = dir.path().join("ha-work");
    std::fs::create_dir_all(&work).unwrap();
    let out = tokio::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/ha_run.py"
        ))
        .args(["--broker-port", &broker.port.to_string()])
        .arg("--work-dir")
        .arg(&work)
        .args(["--quiet", "4", "--limit", "90"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ha_run.py failed: {stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ha_version"], "2024.1.6");
    let entities: Vec<&Value> = doc["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["unique_id"]
                .as_str()
                .is_some_and(|u| u.starts_with("gatehouse_gate_"))
        })
        .collect();
    // Every config gatehouse left retained is an entity.
    let configs: Vec<String> = rec
        .all()
        .iter()
        .filter(|m| m.retain && m.topic.contains("/gatehouse/gate_") && !m.payload.is_empty())
        .map(|m| m.json()["unique_id"].as_str().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for u in &configs {
        assert!(
            entities.iter().any(|e| e["unique_id"] == u.as_str()),
            "{u} is not in HA's registry"
        );
    }
    // connectivity + 2 people + 2 locations + 3 access points
    assert_eq!(configs.len(), 8, "{configs:?}");
    let log: Vec<&Value> = doc["log"].as_array().unwrap().iter().collect();
    assert!(log.is_empty(), "HA warned about MQTT/discovery: {log:?}");
    let state = |id: &str| {
        doc["states"][id]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    for e in &entities {
        let id = e["entity_id"].as_str().unwrap();
        let s = state(id);
        assert!(
            !["", "unknown", "unavailable"].contains(&s.as_str()),
            "{id} is {s:?}"
        );
    }
    assert_eq!(
        state("binary_sensor.gatehouse_gate_user_anna_koch_example_org"),
        "on"
    );
    assert_eq!(state("binary_sensor.gatehouse_gate_user_carl_dahl"), "off");
    assert_eq!(
        state("sensor.gatehouse_gate_location_headquarters_building_a"),
        "2"
    );
    assert_eq!(state("sensor.gatehouse_gate_location_warehouse"), "1");
    assert_eq!(state("sensor.gatehouse_gate_ap_ap_dock"), "1");
    assert_eq!(state("binary_sensor.gatehouse_gate_connectivity"), "on");
    let anna = &doc["states"]["binary_sensor.gatehouse_gate_user_anna_koch_example_org"];
    assert_eq!(anna["attributes"]["device_class"], "presence");
    assert_eq!(anna["attributes"]["friendly_name"], "Wi-Fi (GATE) Anna");
    let hq = &doc["states"]["sensor.gatehouse_gate_location_headquarters_building_a"];
    assert_eq!(hq["attributes"]["state_class"], "measurement");
    assert_eq!(hq["attributes"]["unit_of_measurement"], "devices");
    // One device for all of them.
    let devs: std::collections::BTreeSet<&str> = entities
        .iter()
        .filter_map(|e| e["device_id"].as_str())
        .collect();
    assert_eq!(devs.len(), 1);
    app.shutdown().await;
}
