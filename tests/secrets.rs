//! PINs, phone numbers, custom fields and passwords never leave the process: not in logs
//! (at trace level), not on the bus, not in the database. The simulator serves the fixture
//! users, which carry them in clear text as the real server does.

mod common;

use common::{Harness, wait_for};
use gatehouse::sim::net2::{SimConfig, SimEvent};

use std::time::Duration;

/// `needle` as a whole token (not inside a longer number such as a timestamp or a port).
fn contains_token(hay: &[u8], needle: &[u8]) -> bool {
    let word = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    hay.windows(needle.len()).enumerate().any(|(i, w)| {
        w == needle
            && !word(i.checked_sub(1).and_then(|j| hay.get(j)))
            && !word(hay.get(i + needle.len()))
    })
}

/// Values from tests/fixtures/net2/users.json that must never be seen outside.
fn forbidden() -> Vec<String> {
    let users: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("fixtures/net2/users.json")).unwrap();
    let mut out = vec![SimConfig::default().password];
    for u in users {
        out.push(u["pin"].as_str().unwrap().to_string());
        out.push(u["telephone"].as_str().unwrap().to_string());
        for f in u["customFields"].as_array().unwrap() {
            out.push(f["value"].as_str().unwrap().to_string());
        }
    }
    assert!(out.len() >= 7);
    out
}

#[test]
fn pins_phones_and_passwords_never_leave_the_process() {
    let (buf, _guard, rt) = common::logs::capture("trace");
    let bus_dump = rt.block_on(async {
        let mut h = Harness::new(SimConfig::default(), "").await;
        h.start().await;
        let mut watch = h.app().bus.watch();
        wait_for("live socket", Duration::from_secs(20), || {
            h.sim.websocket_count() == 1
        })
        .await;
        for user in [8, 12, 19] {
            h.sim
                .push_event(SimEvent::new(26, 6612642).user(user).token_type(1));
        }
        wait_for("stored", Duration::from_secs(20), || {
            h.query_i64("SELECT count(*) FROM events WHERE user_id IN (8, 12, 19)") >= 3
        })
        .await;
        h.stop().await;
        let mut dump = String::new();
        while let Ok(m) = watch.try_recv() {
            dump.push_str(&format!("{m:?}\n"));
        }
        let db = std::fs::read(h.db()).unwrap();
        let wal = std::fs::read(h.db().with_extension("db-wal")).unwrap_or_default();
        let names = h.query_i64("SELECT count(*) FROM events WHERE user_name = 'Mette Kragh Holm'");
        assert_eq!(names, 1, "names are resolved from the user list");
        (dump, db, wal)
    });
    let (dump, db, wal) = bus_dump;
    let logs = buf.text();
    assert!(
        logs.contains("Net2 user names refreshed"),
        "the user list was fetched"
    );
    assert!(dump.contains("AccessGranted"), "the bus carried the events");
    for s in forbidden() {
        let needle = s.as_bytes();
        let hit = logs.lines().find(|l| contains_token(l.as_bytes(), needle));
        assert!(hit.is_none(), "{s:?} appears in the logs: {hit:?}");
        assert!(
            !contains_token(dump.as_bytes(), needle),
            "{s:?} appears on the bus"
        );
        for (what, bytes) in [("database", &db), ("WAL", &wal)] {
            assert!(
                !contains_token(bytes, needle),
                "{s:?} appears in the {what}"
            );
        }
    }
    for key in ["\"pin\":", "\"telephone\":", "customFields"] {
        assert!(!logs.contains(key) && !dump.contains(key), "{key} leaked");
        assert!(
            !db.windows(key.len()).any(|w| w == key.as_bytes())
                && !wal.windows(key.len()).any(|w| w == key.as_bytes()),
            "{key} stored"
        );
    }
}

/// Camera passwords (Digest for ISAPI and RTSP, also when written into an `rtsp_url`) stay
/// out of logs, the bus, the database and the URLs handed out — on success and on failure.
#[test]
fn camera_passwords_never_leave_the_process() {
    use gatehouse::sim::hikvision::{HikSim, HikSimConfig};
    use gatehouse::sim::rtsp::RtspSimConfig;
    const PW: &str = "Cam-S3cret:p@ss";
    let (buf, _guard, rt) = common::logs::capture("trace");
    let (dump, db, wal, errors) = rt.block_on(async {
        let cam = HikSim::start(HikSimConfig {
            password: PW.into(),
            rtsp: Some(RtspSimConfig::default()),
            ..Default::default()
        })
        .await
        .unwrap();
        let rtsp = cam.rtsp_url(101).unwrap();
        let enc: String = percent_encoding::utf8_percent_encode(PW, percent_encoding::NON_ALPHANUMERIC).to_string();
        let with_creds = rtsp.replacen("rtsp://", &format!("rtsp://admin:{enc}@"), 1);
        let dir = tempfile::tempdir().unwrap();
        // `good` finds its password in its rtsp_url; `bad` has a wrong one everywhere.
        let yaml = format!(
            "version: 1\nstorage: {{ path: {}/g.db }}\nmedia: {{ snapshot_timeout: 4s }}\nweb: {{ bind: 127.0.0.1:0, jwt_secret: secrets-test-secret-0123 }}\nsources:\n  hikvision:\n    - {{ id: good, url: \"{url}\", password: not-this-one, use_picture: false, rtsp_url: \"{with_creds}\" }}\n    - {{ id: bad, url: \"{url}\", password: \"{PW}-wrong\", use_picture: false, rtsp_url: \"{rtsp}\" }}\n",
            dir.path().display(),
            url = cam.base_url(),
        );
        let cfg = gatehouse::config::load_str(&yaml, &|_| None).unwrap();
        let app = gatehouse::app::App::start(cfg, None, None).await.unwrap();
        let media = app.media.clone().unwrap();
        let mut watch = app.bus.watch();
        let snap = media
            .snapshot("good", 1, None, gatehouse::media::service::Trigger::Rest)
            .await
            .unwrap();
        assert!(snap.jpeg.starts_with(&[0xFF, 0xD8]));
        let live = media.live_start("good", 1).await.unwrap();
        assert!(live.ready(Duration::from_secs(20)).await);
        let err = media
            .snapshot("bad", 1, None, gatehouse::media::service::Trigger::Rest)
            .await
            .unwrap_err()
            .to_string();
        media.live_stop("good", 1);
        // One login attempt per try, and no quick retries after a refusal (lockout).
        eprintln!("bad snapshot error: {err}");
        let bad = cam.rtsp().unwrap().stats().bad_logins;
        assert!((1..=2).contains(&bad), "{bad} bad RTSP logins");
        // The next picture is refused at once: no login attempt until the back-off is over.
        let again = media
            .snapshot("bad", 1, None, gatehouse::media::service::Trigger::Rest)
            .await
            .unwrap_err()
            .to_string();
        assert!(again.contains("refused our credentials"), "{again}");
        assert_eq!(cam.rtsp().unwrap().stats().bad_logins, bad);
        app.shutdown().await;
        let mut dump = String::new();
        while let Ok(m) = watch.try_recv() {
            dump.push_str(&format!("{m:?}\n"));
        }
        let db_path = dir.path().join("g.db");
        let db = std::fs::read(&db_path).unwrap();
        let wal = std::fs::read(db_path.with_extension("db-wal")).unwrap_or_default();
        (dump, db, wal, err)
    });
    let logs = buf.text();
    assert!(logs.contains("RTSP session playing"), "the session ran");
    assert!(dump.contains("Snapshot"), "the bus carried the picture");
    let enc: String =
        percent_encoding::utf8_percent_encode(PW, percent_encoding::NON_ALPHANUMERIC).to_string();
    for needle in [PW, enc.as_str(), "Cam-S3cret"] {
        let hit = logs.lines().find(|l| l.contains(needle));
        assert!(hit.is_none(), "{needle:?} appears in the logs: {hit:?}");
        assert!(!dump.contains(needle), "{needle:?} appears on the bus");
        assert!(
            !errors.contains(needle),
            "{needle:?} appears in an error: {errors}"
        );
        for (what, bytes) in [("database", &db), ("WAL", &wal)] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} appears in the {what}"
            );
        }
    }
}
