//! What a `gatehouse demo` run must have done, natively (tests/cli.rs) or as the arm64 build
//! under qemu-user (tests/cross_arm64.rs): started every simulator and the embedded broker,
//! stored Net2 and Wi-Fi (GATE) events, stopped cleanly, logged no error.

use std::path::Path;
use std::process::Output;

pub fn assert_demo_ran(out: &Output, dir: &Path, seconds: u64) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("gatehouse demo is running"), "{stdout}");
    for what in ["GATE simulator", "Apptive simulator", "MQTT broker"] {
        assert!(stdout.contains(what), "no {what} line:\n{stdout}");
    }
    let db = rusqlite::Connection::open(dir.join("gatehouse.db")).unwrap();
    let count = |source: &str| -> i64 {
        db.query_row(
            "SELECT count(*) FROM events WHERE source = ?1",
            [source],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert!(count("net2") >= 1, "no Net2 event in {seconds} s");
    assert!(count("gate") >= 1, "no Wi-Fi event in {seconds} s");
    assert!(
        !stdout.contains("ERROR") && !stderr.contains("ERROR") && !stderr.contains("panicked"),
        "{stdout}\n{stderr}"
    );
}
