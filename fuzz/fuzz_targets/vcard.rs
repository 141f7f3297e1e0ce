//! The Apptive QR vCard parser (`apptive::vcard::parse`): a scan's raw bytes, from a USB
//! reader or the MQTT `qr/<reader>/scan` topic.
#![no_main]

use gatehouse::apptive::vcard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match vcard::parse(data) {
        Ok(code) => {
            assert!(data.len() <= vcard::MAX_LEN);
            assert!(!code.key.is_empty(), "a code without a key");
            assert!(!code.member.is_empty(), "a code without a member id");
            // The limit is in characters (a member id may be a name with accents).
            assert!(code.key.expose().chars().count() <= 256);
            assert!(code.member.chars().count() <= 256);
            assert!(
                code.version == "3.0" || code.version == "4.0",
                "{}",
                code.version
            );
            // The key is a secret: its Debug form never shows it.
            assert_eq!(format!("{:?}", code.key), "***");
            assert_eq!(vcard::parse(data), Ok(code), "not deterministic");
        }
        Err(e) => assert!(!e.0.is_empty()),
    }
});
