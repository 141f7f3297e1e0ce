//! The build time, for the wall-clock sanity check (`clock::build_time`): a Pi without a
//! real-time clock boots at 1970 or at its last shutdown, and a clock earlier than the build
//! cannot be right. `SOURCE_DATE_EPOCH` (reproducible builds, Debian packaging) wins.
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=GATEHOUSE_BUILD_EPOCH={epoch}");
}
