//! Schemathesis (PyPI) against the running daemon: it reads `/api/openapi.json` and sends
//! generated requests, valid and invalid, to every documented route with an admin's token.
//! The daemon must never answer a server error, and every answer must match the document
//! (status codes, content types, JSON schemas, headers).
//!
//! Needs `GATEHOUSE_SCHEMATHESIS` (the `st` of the venv scripts/test.sh creates).

mod common;

use common::web::WebHarness;
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
    // Generous limits: Schemathesis sends thousands of requests a minute.
    let w = WebHarness::start(
        SimConfig::default(),
        "  rate_limits: { per_user: 1000000, per_device: 1000000, emergency: 1000000 }\n",
        "",
    )
    .await;
    let admin = w.login("ada").await;
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
        .output()
        .await
        .expect("schemathesis runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "Schemathesis found failures:\n{text}");
    // It did test the routes (not an empty document).
    assert!(text.contains("/api/auth/login"), "{text}");
    w.stop().await;
}
