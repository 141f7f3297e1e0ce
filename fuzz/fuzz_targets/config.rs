//! The config loader (`config::load_str_with`): YAML text to a validated `Config`, or every
//! error with its path. Secret files are left unread (`SecretFiles::Skip`): which files a
//! config names is its author's business, and reading them would make the target depend on
//! the machine.
//!
//! Invariants: a refusal has at least one error, each with a message; and loading is a
//! function of the text (the same text gives the same config or the same errors). The second
//! is checked on one input in 8 (chosen by a hash of the input, so a run replays the same
//! way): loading every input twice made the target 28 % slower (60 s from the seeds each:
//! 175 exec/s, 243 with the sample), and a loader whose result hung on something besides the
//! text (a hash map's order, the clock) would differ on many inputs, not on one.
#![no_main]

use gatehouse::config::load::{SecretFiles, load_str_with};
use libfuzzer_sys::fuzz_target;

fn env(k: &str) -> Option<String> {
    match k {
        "NET2_PASSWORD" | "MQTT_PASSWORD" => Some("s3cret-from-env".into()),
        "HOST" => Some("10.0.0.5".into()),
        _ => None,
    }
}

/// FNV-1a: which inputs get the determinism check.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fuzz_target!(|data: &[u8]| {
    // `load_file` reads the file as UTF-8 and refuses other bytes before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let a = load_str_with(text, &env, SecretFiles::Skip);
    if let Err(x) = &a {
        assert!(!x.0.is_empty(), "refused without a reason");
        for e in &x.0 {
            assert!(!e.message.is_empty());
        }
    }
    if fnv(data) % 8 != 0 {
        return;
    }
    let b = load_str_with(text, &env, SecretFiles::Skip);
    match (&a, &b) {
        (Ok(x), Ok(y)) => assert_eq!(x, y, "the same text loaded twice differs"),
        (Err(x), Err(y)) => assert_eq!(x.0, y.0, "the same text refused differently"),
        _ => panic!("the same text both loads and fails"),
    }
});
