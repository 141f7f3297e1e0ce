//! One face for rumqttc's MQTT 5 and 3.1.1 clients, so the sink speaks MQTT 5 where the broker
//! supports it and 3.1.1 otherwise. MQTT 5 adds Retain Handling = 2 on command subscriptions;
//! under 3.1.1 retained commands still arrive flagged as retained on subscribe and are refused
//! by the router.

use bytes::Bytes;
use rumqttc::Outgoing;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V5,
    V311,
}

/// Largest MQTT packet either way. Pictures from a camera's own `/picture` (4K, 8 MP) can be
/// over 1 MiB; an oversized publish would end the connection inside rumqttc, so the sink
/// checks against this before publishing (Mosquitto's default limit is far higher).
pub const MAX_PACKET: usize = 8 << 20;

/// QoS 1 publishes in flight (MQTT 5; 3.1.1's default is 100 too). rumqttc's v5 client
/// preallocates and fills a slot per packet id up to this limit when the client is made: with
/// no limit that is 65,536 slots, 14 MB per connection (the sink and the delivery watcher
/// each have one: 28 of the daemon's 57 MB, measured with heaptrack, issue 18). The broker's
/// Receive Maximum lowers it further (Mosquitto: 20). It is above the sink's own event window
/// (`WINDOW` in the sink); what waits beyond it waits in rumqttc's request queue.
pub const INFLIGHT: u16 = 100;

pub struct Options {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    /// Last will (`offline`, retained) on this topic; `None` for a helper connection.
    pub will_topic: Option<String>,
    /// Keep the session this long after a disconnect (`None`: a clean session, which the
    /// daemon's own connection always is — a broker must never queue commands for it).
    pub session: Option<Duration>,
    pub credentials: Option<(String, String)>,
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

pub enum Client {
    V5(rumqttc::v5::AsyncClient),
    V4(rumqttc::AsyncClient),
}

pub enum Loop {
    V5(Box<rumqttc::v5::EventLoop>),
    V4(Box<rumqttc::EventLoop>),
}

/// What the sink needs to know from the event loop.
#[derive(Debug)]
pub enum Ev {
    ConnAck {
        session_present: bool,
    },
    Publish {
        topic: String,
        payload: Bytes,
        retain: bool,
    },
    PubAck(u16),
    SubAck,
    Disconnect(String),
    Written(u16),
    DisconnectSent,
    Other,
}

/// A connection error; `refused_protocol` = the broker does not speak this version.
#[derive(Debug)]
pub struct PollError {
    pub message: String,
    pub refused_protocol: bool,
}

pub fn connect(p: Protocol, o: &Options) -> (Client, Loop) {
    match p {
        Protocol::V5 => {
            use rumqttc::v5::mqttbytes::{QoS, v5::LastWill};
            let mut m = rumqttc::v5::MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
            m.set_keep_alive(o.keep_alive);
            m.set_clean_start(o.session.is_none());
            if let Some(d) = o.session {
                m.set_session_expiry_interval(Some(d.as_secs() as u32));
            }
            if let Some(t) = &o.will_topic {
                m.set_last_will(LastWill::new(
                    t.clone(),
                    "offline",
                    QoS::AtLeastOnce,
                    true,
                    None,
                ));
            }
            m.set_max_packet_size(Some(MAX_PACKET as u32));
            m.set_outgoing_inflight_upper_limit(INFLIGHT);
            if let Some((u, pw)) = &o.credentials {
                m.set_credentials(u.clone(), pw.clone());
            }
            if let Some(tls) = &o.tls {
                m.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(tls.clone()),
                ));
            }
            let (c, l) = rumqttc::v5::AsyncClient::new(m, 8192);
            (Client::V5(c), Loop::V5(Box::new(l)))
        }
        Protocol::V311 => {
            use rumqttc::{LastWill, QoS};
            let mut m = rumqttc::MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
            m.set_keep_alive(o.keep_alive);
            m.set_clean_session(o.session.is_none());
            if let Some(t) = &o.will_topic {
                m.set_last_will(LastWill::new(t.clone(), "offline", QoS::AtLeastOnce, true));
            }
            m.set_max_packet_size(MAX_PACKET, MAX_PACKET);
            if let Some((u, pw)) = &o.credentials {
                m.set_credentials(u.clone(), pw.clone());
            }
            if let Some(tls) = &o.tls {
                m.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(tls.clone()),
                ));
            }
            let (c, l) = rumqttc::AsyncClient::new(m, 8192);
            (Client::V4(c), Loop::V4(Box::new(l)))
        }
    }
}

impl Client {
    /// QoS 1 publish without waiting (the caller owns the event loop).
    pub fn publish(&self, topic: String, retain: bool, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Client::V5(c) => c
                .try_publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    retain,
                    payload,
                )
                .map_err(|e| e.to_string()),
            Client::V4(c) => c
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
        }
    }

    /// Command filters get Retain Handling = 2 (never send retained) under MQTT 5.
    pub fn subscribe(&self, commands: Vec<String>, plain: Vec<String>) -> Result<(), String> {
        match self {
            Client::V5(c) => {
                use rumqttc::v5::mqttbytes::{
                    QoS,
                    v5::{Filter, RetainForwardRule},
                };
                let mut f: Vec<Filter> = commands
                    .into_iter()
                    .map(|path| Filter {
                        path,
                        qos: QoS::AtLeastOnce,
                        nolocal: true,
                        preserve_retain: true,
                        retain_forward_rule: RetainForwardRule::Never,
                    })
                    .collect();
                f.extend(plain.into_iter().map(|p| Filter::new(p, QoS::AtLeastOnce)));
                c.try_subscribe_many(f).map_err(|e| e.to_string())
            }
            Client::V4(c) => {
                let f = commands
                    .into_iter()
                    .chain(plain)
                    .map(|p| rumqttc::SubscribeFilter::new(p, rumqttc::QoS::AtLeastOnce));
                c.try_subscribe_many(f).map_err(|e| e.to_string())
            }
        }
    }

    pub fn disconnect(&self) {
        let _ = match self {
            Client::V5(c) => c.try_disconnect().map_err(|_| ()),
            Client::V4(c) => c.try_disconnect().map_err(|_| ()),
        };
    }
}

impl Loop {
    pub async fn poll(&mut self) -> Result<Ev, PollError> {
        match self {
            Loop::V5(l) => {
                use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
                use rumqttc::v5::{ConnectionError, Event};
                match l.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => Ok(Ev::ConnAck {
                        session_present: a.session_present,
                    }),
                    Ok(Event::Incoming(Packet::Publish(p))) => Ok(Ev::Publish {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                        retain: p.retain,
                    }),
                    Ok(Event::Incoming(Packet::PubAck(a))) => Ok(Ev::PubAck(a.pkid)),
                    Ok(Event::Incoming(Packet::SubAck(_))) => Ok(Ev::SubAck),
                    Ok(Event::Incoming(Packet::Disconnect(d))) => {
                        Ok(Ev::Disconnect(format!("{:?}", d.reason_code)))
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(Ev::Written(pkid)),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(Ev::DisconnectSent),
                    Ok(_) => Ok(Ev::Other),
                    Err(e) => Err(PollError {
                        refused_protocol: matches!(
                            e,
                            ConnectionError::ConnectionRefused(
                                ConnectReturnCode::UnsupportedProtocolVersion
                                    | ConnectReturnCode::RefusedProtocolVersion
                            )
                        ),
                        message: e.to_string(),
                    }),
                }
            }
            Loop::V4(l) => {
                use rumqttc::{ConnectionError, Event, Packet};
                match l.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => Ok(Ev::ConnAck {
                        session_present: a.session_present,
                    }),
                    Ok(Event::Incoming(Packet::Publish(p))) => Ok(Ev::Publish {
                        topic: p.topic.clone(),
                        payload: p.payload,
                        retain: p.retain,
                    }),
                    Ok(Event::Incoming(Packet::PubAck(a))) => Ok(Ev::PubAck(a.pkid)),
                    Ok(Event::Incoming(Packet::SubAck(_))) => Ok(Ev::SubAck),
                    Ok(Event::Incoming(Packet::Disconnect)) => {
                        Ok(Ev::Disconnect("broker sent DISCONNECT".into()))
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(Ev::Written(pkid)),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(Ev::DisconnectSent),
                    Ok(_) => Ok(Ev::Other),
                    Err(e) => Err(PollError {
                        refused_protocol: matches!(
                            e,
                            ConnectionError::ConnectionRefused(
                                rumqttc::ConnectReturnCode::RefusedProtocolVersion
                            )
                        ),
                        message: e.to_string(),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rumqttc fills one slot per possible packet id when the loop is made: without a limit
    /// that was 65,536 (14 MB per connection, issue 18).
    #[tokio::test]
    async fn mqtt5_in_flight_publishes_are_limited() {
        let o = Options {
            client_id: "t".into(),
            host: "127.0.0.1".into(),
            port: 1,
            keep_alive: Duration::from_secs(30),
            will_topic: None,
            session: None,
            credentials: None,
            tls: None,
        };
        let (_c, l) = connect(Protocol::V5, &o);
        let Loop::V5(l) = l else {
            panic!("asked for MQTT 5")
        };
        assert_eq!(
            l.options.get_outgoing_inflight_upper_limit(),
            Some(INFLIGHT)
        );
        assert_eq!(l.state.inflight(), 0);
        assert!(usize::from(INFLIGHT) >= super::super::WINDOW);
    }
}
