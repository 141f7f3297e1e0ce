//! Hikvision alert documents (`EventNotificationAlert` XML, or JSON from newer firmware):
//! `sources::hikvision::alert::parse`, what the source calls on every XML / JSON part of the
//! alert stream, and what it then asks of the alert.
#![no_main]

use gatehouse::sources::hikvision::alert;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = alert::parse(data) {
        let _ = a.is_heartbeat();
        let _ = a.device_time();
        let _ = a.targets();
        assert_eq!(a.event_type, alert::normalise_type(&a.raw_type));
        assert_eq!(alert::parse(data).ok(), Some(a), "not deterministic");
    }
    let text = String::from_utf8_lossy(data);
    let _ = alert::parse_time(&text);
    let _ = alert::normalise_type(&text);
});
