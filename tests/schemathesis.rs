//! Schemathesis (PyPI) against the running daemon: it reads `/api/openapi.json` and sends
//! generated requests, valid and invalid, to every documented route with an admin's token.
//! The daemon must never answer a server error, and every answer must match the document
//! (status codes, content types, JSON schemas, headers).
//!
//! Needs `GATEHOUSE_SCHEMATHESIS` (the `st` of the venv scripts/test.sh creates).

mod common;

use common::web::WebHarness;
use gatehouse::sim::hikvision::{HikSim, HikSimConfig, Personality};
use gatehouse::sim::net2::SimConfig;

fn st() -> String {
    let p = std::env::var("GATEHOUSE_SCHEMATHESIS").unwrap_or_default();
    assert!(
        !p.is_empty(),
        "GATEHOUSE_SCHEMATHESIS is not set: run the tests with scripts/test.sh, or set \
         GATEHOUSE_SCHEMATHESIS=<venv>/bin/st (by default ~/.cache/gatehouse/schemathesis/bin/st)"
    );
    assert!(
        std::path::Path::new(&p).exists(),
        "GATEHOUSE_SCHEMATHESIS={p} does not exist: run scripts/test.sh to create the venv"
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_as_documented() {
    let st = st();
    // An NVR with recordings, so the camera routes answer with their bodies too (device 1,
    // the documented examples), not only 404s.
    let nvr = HikSim::start(HikSimConfig {
        personality: Personality::nvr(),
        record_days: Some(vec!["2025-01-15".parse().unwrap()]),
        ..Default::default()
    })
    .await
    .unwrap();
    // Generous limits: Schemathesis sends thousands of requests a minute.
    let w = WebHarness::start_with_cameras(
        SimConfig::default(),
        &[format!(
            "{{ id: nvr, url: \"{}\", username: admin, password: sim-hik-pass }}",
            nvr.base_url()
        )],
        "  rate_limits: { per_user: 1000000, per_device: 1000000, emergency: 1000000 }\n",
        "",
    )
    .await;
    let admin = w.login("ada").await;
    // Its device info is in before the run.
    common::wait_for(
        "the NVR's device info",
        std::time::Duration::from_secs(30),
        || {
            w.h.app()
                .directory
                .cameras()
                .get("nvr")
                .is_some_and(|c| c.info.is_some())
        },
    )
    .await;
    let report = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&st)
        .args([
            "run",
            &w.url("/api/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            "--header",
            &format!("Authorization: Bearer {admin}"),
            // A stream never ends: it is tested in tests/web_stream.rs.
            "--exclude-path",
            "/api/events/stream",
            // It connects to whatever address it is given (a made-up `ip_web` can be any
            // host): tested in tests/web_nvr.rs against the simulator.
            "--exclude-path",
            "/api/devices/test-connection",
            "--max-examples",
            "25",
            "--seed",
            "16",
            "--request-timeout",
            "20",
            "--no-color",
            // 404s on ids that do not exist, JPEG bodies it cannot parse: not failures.
            "--warnings",
            "off",
            "--report-dir",
        ])
        .arg(report.path())
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache (`.schemathesis/`) goes there, not into the source tree.
        .current_dir(report.path())
        .output()
        .await
        .expect("schemathesis runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "Schemathesis found failures:\n{text}");
    // It did test the routes (not an empty document): every selected operation. (Its summary
    // names no route when nothing failed.)
    let count = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.trim().split('/').next()?.trim().parse::<u32>().ok())
    };
    let (selected, tested) = (count("Selected:"), count("Tested:"));
    assert!(
        selected.is_some_and(|n| n >= 20) && tested == selected,
        "selected {selected:?}, tested {tested:?}:\n{text}"
    );
    w.stop().await;
}
