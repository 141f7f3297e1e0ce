//! An NVR channel without `/picture` is the expected case for a snapshot decoded from RTSP:
//! the fallback is said once per camera channel at INFO with a short reason; the device's
//! answer (an XML body) and every later fallback are DEBUG only.

mod common;

use gatehouse::media::service::Trigger;
use gatehouse::sim::hikvision::{HikSim, HikSimConfig, Personality};
use gatehouse::sim::rtsp::RtspSimConfig;

#[test]
fn picture_fallback_is_logged_at_info_once_per_channel_and_briefly() {
    let (buf, _guard, rt) = common::logs::capture("gatehouse=debug");
    rt.block_on(async {
        // The simulated NVR answers /picture of channels 2 and 3 with XML, as real ones do.
        let nvr = HikSim::start(HikSimConfig {
            personality: Personality::nvr(),
            rtsp: Some(RtspSimConfig::default()),
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = gatehouse::config::load_str(
            &format!(
                "version: 1\nstorage: {{ path: {}/g.db }}\nsources:\n  hikvision:\n    - {{ id: nvr, url: \"{}\", username: admin, password: sim-hik-pass }}\n",
                dir.path().display(),
                nvr.base_url()
            ),
            &|_| None,
        )
        .unwrap();
        let app = gatehouse::app::App::start(cfg, None, None).await.unwrap();
        let media = app.media.clone().unwrap();
        for channel in [2, 2, 3, 2] {
            let snap = media
                .snapshot("nvr", channel, None, Trigger::Rest)
                .await
                .unwrap();
            assert_ne!(snap.source, "picture");
        }
        app.shutdown().await;
    });
    let logs = buf.text();
    let fallback: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("/picture") && l.contains("RTSP"))
        .collect();
    let info: Vec<&str> = fallback
        .iter()
        .copied()
        .filter(|l| l.contains(" INFO "))
        .collect();
    assert_eq!(
        info.len(),
        2,
        "once for channel 2, once for 3: {fallback:#?}"
    );
    assert!(info[0].contains("channel=2") && info[1].contains("channel=3"));
    for l in &info {
        assert!(!l.contains("<?xml") && l.len() < 400, "short at INFO: {l}");
        assert!(l.contains("HTTP 200 OK, not a JPEG"), "{l}");
    }
    let debug = fallback.iter().filter(|l| l.contains("DEBUG")).count();
    assert_eq!(
        debug, 4,
        "each fallback with the device's answer: {fallback:#?}"
    );
    assert!(
        fallback
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains("ResponseStatus")),
        "{fallback:#?}"
    );
}
