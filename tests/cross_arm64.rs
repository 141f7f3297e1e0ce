//! The Raspberry Pi build (issue 18): gatehouse cross-built for aarch64-unknown-linux-gnu with
//! Debian's cross compiler runs under qemu-user — `--version`, then `gatehouse demo` for 20 s:
//! the whole daemon against its simulators (Net2, cameras over RTSP, GATE, Apptive, the embedded
//! broker) stores Net2 and Wi-Fi events in SQLite and stops cleanly, as tests/cli.rs checks for
//! the native build.
//!
//! The arm64 binary is a default-features (simulators included) debug build that
//! scripts/test.sh makes before `cargo test` and names in `GATEHOUSE_ARM64_BIN`:
//!   cargo build --locked --target aarch64-unknown-linux-gnu --bin gatehouse
//! (linker and C compilers: .cargo/config.toml). Without the variable the test takes that
//! build's path, and fails if it is not there — it never skips.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn arm64_bin() -> PathBuf {
    let bin = std::env::var_os("GATEHOUSE_ARM64_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/aarch64-unknown-linux-gnu/debug/gatehouse")
        });
    assert!(
        bin.is_file(),
        "no arm64 gatehouse at {}: run scripts/test.sh, or `cargo build --locked --target \
         aarch64-unknown-linux-gnu --bin gatehouse` (apt: gcc-aarch64-linux-gnu \
         g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)",
        bin.display()
    );
    // An x86-64 binary run "under qemu" would prove nothing: ELF e_machine 183 is AArch64.
    let head = std::fs::read(&bin).unwrap();
    assert_eq!(&head[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([head[18], head[19]]),
        183,
        "{} is not an AArch64 binary",
        bin.display()
    );
    bin
}

/// qemu-aarch64 with the cross glibc of libc6-dev-arm64-cross as the dynamic loader's root.
fn qemu(bin: &PathBuf) -> Command {
    let mut c = Command::new("qemu-aarch64");
    c.args(["-L", "/usr/aarch64-linux-gnu"]).arg(bin);
    c
}

#[test]
fn the_arm64_build_runs_the_demo_under_qemu() {
    let bin = arm64_bin();
    let out = qemu(&bin)
        .arg("--version")
        .output()
        .expect("qemu-aarch64 (apt install qemu-user)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("gatehouse {}", env!("CARGO_PKG_VERSION"))
    );

    let dir = tempfile::tempdir().unwrap();
    let out = qemu(&bin)
        .args(["demo", "--seconds", "20", "--dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    // What the daemon stored is read back natively: the arm64 SQLite wrote a file this
    // machine's SQLite reads.
    common::demo::assert_demo_ran(&out, dir.path(), 20);
}
