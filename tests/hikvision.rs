//! The ISAPI client against the Hikvision simulator: Digest for camera and NVR challenges, no
//! login loop on bad credentials (lockout), and the alert stream in both personalities
//! (camera: CRLF, Content-Length, chunked HTTP/1.1; NVR: bare LF, no Content-Length,
//! `hikboundary`, HTTP/1.0 close-delimited, closed by the device every so often).

mod common;

use gatehouse::secret::Secret;
use gatehouse::sim::hikvision::{HikSim, HikSimConfig, Personality};
use gatehouse::sources::hikvision::{alert, client::IsapiClient, multipart::Parser};
use std::time::Duration;

async fn sim(p: Personality) -> HikSim {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HikSim::start(HikSimConfig {
        personality: p,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn client(sim: &HikSim, password: &str) -> IsapiClient {
    IsapiClient::new(
        &sim.base_url(),
        "admin",
        Secret::new(password),
        &Default::default(),
        std::sync::Arc::new(gatehouse::sources::hikvision::gate::AuthGate::ephemeral(
            "sim",
        )),
    )
    .unwrap()
}

#[tokio::test]
async fn digest_for_camera_and_nvr_challenges() {
    for p in [Personality::camera(), Personality::nvr()] {
        let nvr = p.nvr;
        let s = sim(p).await;
        let c = client(&s, "sim-hik-pass");
        let info = c.get_text("/ISAPI/System/deviceInfo").await.unwrap();
        assert!(info.contains("<serialNumber>"), "{info}");
        assert_eq!(info.contains("<deviceType>NVR</deviceType>"), nvr);
        // The challenge is reused: one unauthenticated request in all.
        c.get_text("/ISAPI/System/deviceInfo").await.unwrap();
        let st = s.stats();
        assert_eq!(st.unauthenticated, 1);
        assert_eq!(st.bad_logins, 0);
    }
}

#[tokio::test]
async fn bad_credentials_are_not_retried_in_a_loop() {
    let s = sim(Personality::camera()).await;
    let c = client(&s, "wrong");
    let e = c.get_text("/ISAPI/System/deviceInfo").await.unwrap_err();
    assert_eq!(e.kind(), gatehouse::error::ErrorKind::Auth);
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert_eq!(
        s.stats().bad_logins,
        1,
        "exactly one attempt with the bad password"
    );
    assert!(
        !e.to_string().contains("wrong"),
        "the password is not in the error"
    );
}

async fn read_alerts(
    res: reqwest::Response,
    want: usize,
    deadline: Duration,
) -> (Vec<alert::Alert>, bool) {
    let boundary =
        Parser::boundary_of(res.headers().get("content-type").unwrap().to_str().unwrap()).unwrap();
    let mut parser = Parser::new(&boundary, 1 << 20);
    let mut res = res;
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + deadline;
    let mut ended = false;
    while out
        .iter()
        .filter(|a: &&alert::Alert| !a.is_heartbeat())
        .count()
        < want
    {
        match tokio::time::timeout_at(end, res.chunk()).await {
            Ok(Ok(Some(b))) => {
                for p in parser.push(&b) {
                    out.push(alert::parse(&p.unwrap().body).unwrap());
                }
            }
            Ok(Ok(None)) => {
                for p in parser.finish() {
                    out.push(alert::parse(&p.unwrap().body).unwrap());
                }
                ended = true;
                break;
            }
            Ok(Err(e)) => panic!("stream error: {e}"),
            Err(_) => break,
        }
    }
    (out, ended)
}

#[tokio::test]
async fn alert_stream_in_both_personalities() {
    for p in [
        Personality::camera(),
        Personality::nvr(),
        Personality::quirky(),
    ] {
        let nvr = p.boundary;
        let s = sim(Personality {
            close_after: Some(Duration::from_secs(2)),
            ..p
        })
        .await;
        let c = client(&s, "sim-hik-pass");
        let res = c.alert_stream().await.unwrap();
        common::wait_for("stream open", Duration::from_secs(5), || {
            s.stream_count() == 1
        })
        .await;
        s.push_alert(1, "VMD", "active");
        s.push_alert(2, "linedetection", "active");
        s.push_alert(1, "VMD", "inactive");
        let (alerts, _) = read_alerts(res, 3, Duration::from_secs(5)).await;
        let real: Vec<_> = alerts.iter().filter(|a| !a.is_heartbeat()).collect();
        assert_eq!(real.len(), 3, "boundary={nvr}: {alerts:?}");
        assert_eq!(
            (real[0].event_type.as_str(), real[0].channel, real[0].state),
            ("vmd", Some(1), alert::State::Active)
        );
        assert_eq!(real[1].event_type, "linedetection");
        assert_eq!(real[2].state, alert::State::Inactive);
        // The device ends the stream by itself (a healthy end, not an error).
        let res = c.alert_stream().await.unwrap();
        let (_, ended) = read_alerts(res, usize::MAX, Duration::from_secs(5)).await;
        assert!(ended, "boundary={nvr}: the stream ended cleanly");
    }
}

async fn get(c: &IsapiClient, path: &str) -> bytes::Bytes {
    let r = c.get(path, None).await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.bytes().await.unwrap()
}

#[tokio::test]
async fn picture_is_a_jpeg_or_a_response_status_with_http_200() {
    let cam = sim(Personality::camera()).await;
    let c = client(&cam, "sim-hik-pass");
    let jpeg = get(&c, "/ISAPI/Streaming/channels/101/picture").await;
    assert!(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]));
    assert!(jpeg.len() > 1000, "a real picture, {} bytes", jpeg.len());
    cam.set_picture_error(true);
    let err = get(&c, "/ISAPI/Streaming/channels/101/picture").await;
    assert!(
        std::str::from_utf8(&err)
            .unwrap()
            .contains("<ResponseStatus"),
        "an error in a 200 answer"
    );
    // NVRs: the picture of a proxied channel lives under StreamingProxy.
    let nvr = sim(Personality::nvr()).await;
    let c = client(&nvr, "sim-hik-pass");
    let err = get(&c, "/ISAPI/Streaming/channels/301/picture").await;
    assert!(!err.starts_with(&[0xFF, 0xD8]));
    let jpeg = get(&c, "/ISAPI/ContentMgmt/StreamingProxy/channels/301/picture").await;
    assert!(jpeg.starts_with(&[0xFF, 0xD8]));
}

#[test]
fn replay_follows_the_capture_timing() {
    let bodies = gatehouse::sim::hikvision::capture_bodies(include_str!(
        "fixtures/hikvision/hiksink_ptz_sequence_first160.jsonl"
    ));
    let at = gatehouse::sim::hikvision::replay_offsets(&bodies);
    assert_eq!(at.len(), bodies.len());
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "in order");
    // 15:39:35 → 15:40:28, the last three parts spread across their second.
    assert_eq!(at.last().unwrap().as_secs(), 53);
    assert!(at[0].is_zero());
    // The PTZ's ~3 alerts a second: no two parts in the same instant within a second.
    assert!(at[0] < at[1] && at[1] < at[2]);
}
