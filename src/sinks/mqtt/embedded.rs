//! `mqtt: { embedded: true }`: an in-process broker (rumqttd) on a loopback port, so a first
//! run (and `gatehouse demo`) needs no broker installed. Fine for trying gatehouse; a real
//! installation should use the house broker (Mosquitto, HA's add-on…).
//!
//! rumqttd serves one protocol version per listener: MQTT 3.1.1 on `embedded_bind` (what
//! `mosquitto_sub` and most tools speak) and MQTT 5 on the next port, which gatehouse itself
//! uses. Both share one router, so messages cross between them.

use crate::error::{Error, ErrorKind, Result};
use std::net::SocketAddr;

/// The MQTT 5 listener gatehouse connects to: the port after `bind`.
pub fn v5_addr(bind: SocketAddr) -> SocketAddr {
    SocketAddr::new(bind.ip(), bind.port().wrapping_add(1))
}

/// Without the `embedded-broker` feature: config validation already refuses
/// `mqtt.embedded: true` (with its path); this is the same answer for any caller that skipped it.
#[cfg(not(feature = "embedded-broker"))]
pub fn start(_bind: SocketAddr) -> Result<()> {
    Err(Error::new(
        ErrorKind::Config,
        format!("mqtt.embedded: {}", crate::config::load::EMBEDDED_MISSING),
    ))
}

/// Start the broker on its own threads; it lives as long as the process.
#[cfg(feature = "embedded-broker")]
pub fn start(bind: SocketAddr) -> Result<()> {
    use std::collections::HashMap;
    if !bind.ip().is_loopback() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "mqtt.embedded_bind {bind} must be a loopback address: the embedded broker has no authentication"
            ),
        ));
    }
    let v5 = v5_addr(bind);
    // Fail early and clearly if a port is taken (rumqttd would only log it on its thread).
    for addr in [bind, v5] {
        drop(std::net::TcpListener::bind(addr).map_err(|e| {
            Error::with_source(ErrorKind::Config, format!("unable to listen on {addr} for the embedded MQTT broker (mqtt.embedded_bind and the port after it)"), e)
        })?);
    }
    let server = |name: &str, listen: SocketAddr| rumqttd::ServerSettings {
        name: name.into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1024 * 1024,
            max_inflight_count: 200,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server("v4", bind))])),
        v5: Some(HashMap::from([("1".to_string(), server("v5", v5))])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-embedded".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Internal,
                "unable to start the embedded MQTT broker",
                e,
            )
        })?;
    // Wait until both listeners are bound: probing by binding, since a probing connection
    // would be logged by rumqttd as a failed client.
    for _ in 0..250 {
        if std::net::TcpListener::bind(bind).is_err() && std::net::TcpListener::bind(v5).is_err() {
            tracing::info!(%bind, mqtt5 = %v5, "embedded MQTT broker listening (3.1.1 and 5)");
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(Error::new(
        ErrorKind::Internal,
        format!("embedded MQTT broker did not start on {bind}"),
    ))
}
