//! TLS to a self-signed Net2 server (the normal case): a CA file, a certificate pin, or an
//! explicit `insecure` all work; nothing else does, and a wrong pin says which certificate the
//! server presented. A TLS terminator in front of the simulator plays the Net2 nginx.

mod common;

use common::wait_for;
use gatehouse::sim::net2::{Net2Sim, SimConfig};
use std::sync::Arc;
use std::time::Duration;

struct TlsFront {
    port: u16,
    cert_pem: String,
    cert_sha256: String,
}

async fn tls_front(backend: std::net::SocketAddr) -> TlsFront {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().to_vec();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(der.clone())],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await
                    && let Ok(mut up) = tokio::net::TcpStream::connect(backend).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    TlsFront {
        port,
        cert_pem: cert.pem(),
        cert_sha256: gatehouse::sources::tls::fingerprint(&der),
    }
}

async fn try_config(
    front: &TlsFront,
    sim: &Net2Sim,
    tls: &str,
    dir: &std::path::Path,
) -> Result<(), String> {
    let d = SimConfig::default();
    let db = dir.join(format!("{}.db", rand_name()));
    let text = format!(
        "version: 1\nstorage: {{ path: {} }}\nsources:\n  net2:\n    url: https://localhost:{}\n    username: {}\n    password: {}\n    client_id: {}\n    live: true\n    poll_interval: 300ms\n    tls: {tls}\n",
        db.display(),
        front.port,
        d.username,
        d.password,
        d.client_id
    );
    let cfg = gatehouse::config::load_str(&text, &|_| None).map_err(|e| e.to_string())?;
    let app = gatehouse::app::App::start(cfg, None, None)
        .await
        .map_err(|e| e.to_string())?;
    let before = sim.stats().ws_connects;
    let res = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(h) = app.bus.health("net2") {
                if h.online && h.live && sim.stats().ws_connects > before {
                    return Ok(());
                }
                if !h.online && !h.detail.is_empty() {
                    return Err(h.detail);
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .unwrap_or_else(|_| Err("timeout".into()));
    app.shutdown().await;
    res
}

fn rand_name() -> String {
    format!("{:x}", rand::random::<u64>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_server_needs_ca_file_pin_or_insecure() {
    let sim = Net2Sim::start(SimConfig::default()).await.unwrap();
    let front = tls_front(sim.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &front.cert_pem).unwrap();

    // System roots alone: refused.
    let e = try_config(&front, &sim, "{}", dir.path())
        .await
        .unwrap_err();
    assert!(
        e.contains("certificate") || e.contains("Unknown") || e.contains("unable to reach"),
        "{e}"
    );
    // The server's certificate as a CA file: REST and the wss:// live socket work.
    try_config(
        &front,
        &sim,
        &format!("{{ ca_file: {} }}", ca.display()),
        dir.path(),
    )
    .await
    .unwrap();
    // Pinned: works.
    try_config(
        &front,
        &sim,
        &format!("{{ pin_sha256: \"{}\" }}", front.cert_sha256),
        dir.path(),
    )
    .await
    .unwrap();
    // Explicitly insecure: works.
    try_config(&front, &sim, "{ insecure: true }", dir.path())
        .await
        .unwrap();
    // A wrong pin: refused.
    let wrong = "00".repeat(32);
    let e = try_config(
        &front,
        &sim,
        &format!("{{ pin_sha256: \"{wrong}\" }}"),
        dir.path(),
    )
    .await
    .unwrap_err();
    assert!(!e.is_empty());
    wait_for("no door command sent", Duration::from_secs(1), || {
        sim.commands().is_empty()
    })
    .await;
}
