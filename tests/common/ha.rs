//! A real Home Assistant 2024.1.6 against a test broker: `tests/support/ha_run.py` starts it,
//! waits until its discovery is quiet, stops it cleanly and reports its registries, states and
//! MQTT warnings as JSON.

use serde_json::Value;

/// The Python of the venv scripts/test.sh makes; never a silent pass without it.
pub fn python() -> String {
    let p = std::env::var("GATEHOUSE_HA_PYTHON").unwrap_or_default();
    assert!(
        !p.is_empty(),
        "GATEHOUSE_HA_PYTHON is not set: this test runs a real Home Assistant 2024.1.6 from the \
         venv that scripts/test.sh creates. Run scripts/test.sh, or set \
         GATEHOUSE_HA_PYTHON=<venv>/bin/python (by default ~/.cache/gatehouse/ha-2024.1.6/bin/python)."
    );
    assert!(
        std::path::Path::new(&p).exists(),
        "GATEHOUSE_HA_PYTHON={p} does not exist: run scripts/test.sh to create the venv"
    );
    p
}

/// Run HA against the broker on `port` (its config directory under `work`) until nothing has
/// changed for `quiet` seconds (90 s at most); its report.
pub async fn run(port: u16, work: &std::path::Path, quiet: u32) -> Value {
    let python = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/ha_run.py");
    std::fs::create_dir_all(work).unwrap();
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .args(["--broker-port", &port.to_string()])
        .arg("--work-dir")
        .arg(work)
        .args(["--quiet", &quiet.to_string(), "--limit", "90"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("unable to run {python} {script}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ha_run.py failed ({}): the harness, not gatehouse\n{stderr}",
        out.status
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ha_run.py printed no JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(doc["ha_version"], "2024.1.6", "the Home Assistant tested");
    doc
}
