//! The SignalR socket: negotiate → connect (WebSocket) → start → subscribe, then frames until
//! the socket drops, keep-alives stop, or the access token is about to expire.

use super::signalr::{self, Frame};
use super::{Net2Source, net2_err};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::task::RunEnd;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message as Ws, client::IntoClientRequest};

/// A socket that lived at least this long counts as healthy when it ends (reconnect at once,
/// backoff reset); shorter lives back off.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

pub(super) async fn run_once(src: &Net2Source) -> Result<RunEnd> {
    src.names_ready().await;
    let client = &src.client;
    let (token, expires) = client.access_token().await?;
    let base = client.base().clone();

    // 1. negotiate
    let neg_url = signalr::url(&base, "negotiate", None, token.expose());
    let neg = client
        .raw_get(neg_url, &token)
        .await
        .map_err(|e| net2_err(e, "unable to negotiate the Net2 live event connection"))?;
    let neg: serde_json::Value = serde_json::from_str(&neg).map_err(|e| {
        Error::with_source(
            ErrorKind::Protocol,
            "Net2 SignalR negotiate answer is not JSON",
            e,
        )
    })?;
    let conn_token = neg
        .get("ConnectionToken")
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "Net2 SignalR negotiate answer has no ConnectionToken",
            )
        })?
        .to_string();
    let keepalive = neg
        .get("KeepAliveTimeout")
        .and_then(|v| v.as_f64())
        .filter(|s| s.is_finite())
        .map(|s| Duration::from_secs_f64(s.clamp(1.0, 300.0)))
        .unwrap_or(Duration::from_secs(20));

    // 2. connect
    let ws_url = signalr::url(&base, "connect", Some(&conn_token), token.expose());
    let mut req = ws_url
        .as_str()
        .into_client_request()
        .ctx(ErrorKind::Internal, || "invalid SignalR URL")?;
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", token.expose())
            .parse()
            .map_err(|_| Error::new(ErrorKind::Internal, "token is not a valid header value"))?,
    );
    let host = base.host_str().unwrap_or("localhost").to_string();
    let port = base.port_or_known_default().unwrap_or(80);
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| {
        Error::new(
            ErrorKind::Unavailable,
            "timed out connecting to Net2 for live events",
        )
    })?
    .ctx(ErrorKind::Unavailable, || {
        format!("unable to connect to Net2 at {host}:{port} for live events")
    })?;
    let stream: Box<dyn Io> = if base.scheme() == "https" {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| {
            Error::new(ErrorKind::Config, format!("invalid TLS server name {host}"))
        })?;
        let tls = tokio_rustls::TlsConnector::from(client.tls())
            .connect(name, tcp)
            .await
            .ctx(ErrorKind::Unavailable, || "TLS handshake with Net2 failed")?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .map_err(|_| {
        Error::new(
            ErrorKind::Unavailable,
            "timed out opening the Net2 live event socket",
        )
    })?
    .ctx(
        ErrorKind::Unavailable,
        || "unable to open the Net2 live event socket",
    )?;
    let connected_at = Instant::now();

    // 3. start (after the transport's init frame), 4. subscribe
    let mut started = false;
    let mut planned = false;
    let mut next_id = 1u64;
    let deadline = expires
        .checked_sub(src.cfg().reconnect_before_expiry.get())
        .unwrap_or(expires)
        .max(Instant::now() + Duration::from_secs(5));
    let idle_limit = keepalive + keepalive / 2;
    let end = loop {
        let frame = tokio::select! {
            _ = src.cancel.cancelled() => {
                let _ = ws.close(None).await;
                break Ok(RunEnd::Cancelled);
            }
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!("access token expires soon; reconnecting the live event socket");
                let _ = ws.close(None).await;
                planned = true;
                break Ok(RunEnd::Healthy);
            }
            f = tokio::time::timeout(idle_limit, ws.next()) => f,
        };
        let msg = match frame {
            Err(_) => {
                break Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("no keep-alive from Net2 for {idle_limit:?}"),
                ));
            }
            Ok(None) => break Ok(RunEnd::Healthy),
            Ok(Some(Err(e))) => {
                break Err(Error::with_source(
                    ErrorKind::Unavailable,
                    "Net2 live event socket failed",
                    e,
                ));
            }
            Ok(Some(Ok(m))) => m,
        };
        let text = match msg {
            Ws::Text(t) => t.to_string(),
            Ws::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            Ws::Ping(p) => {
                let _ = ws.send(Ws::Pong(p)).await;
                continue;
            }
            Ws::Close(_) => break Ok(RunEnd::Healthy),
            _ => continue,
        };
        match signalr::decode(&text) {
            Ok(Frame::Init) if !started => {
                let start_url = signalr::url(&base, "start", Some(&conn_token), token.expose());
                client
                    .raw_get(start_url, &token)
                    .await
                    .map_err(|e| net2_err(e, "unable to start the Net2 live event connection"))?;
                started = true;
                let mut invocations =
                    vec![signalr::invoke("subscribeToLiveEvents", vec![], next_id)];
                next_id += 1;
                for door in src.subscribed_doors() {
                    // Paxton's guide passes the address as a string.
                    for m in ["subscribeToDoorStatusEvents", "subscribeToDoorEvents"] {
                        invocations.push(signalr::invoke(
                            m,
                            vec![door.to_string().into()],
                            next_id,
                        ));
                        next_id += 1;
                    }
                }
                for inv in invocations {
                    if let Err(e) = ws.send(Ws::Text(inv.into())).await {
                        return Err(Error::with_source(
                            ErrorKind::Unavailable,
                            "unable to subscribe to Net2 live events",
                            e,
                        ));
                    }
                }
                tracing::info!(subscriptions = next_id - 1, "Net2 live events connected");
                src.set_live(true).await;
            }
            Ok(Frame::Result { id, error: Some(e) }) => {
                tracing::warn!(invocation = %id, error = %e, "Net2 hub refused an invocation");
            }
            Ok(frame) => src.on_live_frame(frame).await,
            Err(e) => src.reject("signalr frame", &e.to_string(), &text).await,
        }
    };
    src.set_live(false).await;
    match end {
        Ok(RunEnd::Healthy) if !planned && connected_at.elapsed() < HEALTHY_AFTER => {
            Err(Error::new(
                ErrorKind::Unavailable,
                "Net2 live event socket closed soon after connecting",
            ))
        }
        other => other,
    }
}
