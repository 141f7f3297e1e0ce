//! The config loader (`config::load_str_with`): YAML text to a validated `Config`, or every
//! error with its path. Secret files are left unread (`SecretFiles::Skip`): which files a
//! config names is its author's business, and reading them would make the target depend on
//! the machine.
//!
//! Invariant: loading is a function of the text (the same text gives the same config or the
//! same errors), and a config that loads has no empty error list.
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

fuzz_target!(|data: &[u8]| {
    // `load_file` reads the file as UTF-8 and refuses other bytes before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let a = load_str_with(text, &env, SecretFiles::Skip);
    let b = load_str_with(text, &env, SecretFiles::Skip);
    match (&a, &b) {
        (Ok(x), Ok(y)) => assert_eq!(x, y, "the same text loaded twice differs"),
        (Err(x), Err(y)) => {
            assert!(!x.0.is_empty(), "refused without a reason");
            assert_eq!(x.0, y.0, "the same text refused differently");
            for e in &x.0 {
                assert!(!e.message.is_empty());
            }
        }
        _ => panic!("the same text both loads and fails"),
    }
});
