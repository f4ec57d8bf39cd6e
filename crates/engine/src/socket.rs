//! Slack's Socket Mode (issue 16, item 2): for installations without public ingress, the
//! server opens a WebSocket to Slack and Slack's commands and interactions come over it as
//! envelopes, each acknowledged with its `envelope_id` (and, for a modal, the answer).
//!
//! This module makes the connection: `apps.connections.open` with the app-level token gives
//! a `wss://` URL, which is connected through the outbound guard (its addresses checked as
//! every outgoing connection's are), with TLS from the platform's roots as the HTTP client's,
//! within the channel's timeout. What the envelopes say is handled by the web crate, which
//! answers Slack the same way over HTTP and here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use config::SlackChannel;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::Engine;

/// A byte stream a WebSocket runs over: plain TCP (only to `outbound_allow` hosts, for tests
/// and loopback fakes) or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One Socket Mode connection.
pub struct Socket {
    ws: WebSocketStream<Pin<Box<dyn Io>>>,
}

/// What came over the connection.
pub enum Incoming {
    /// An envelope to acknowledge: its id, its type and its payload.
    Envelope {
        id: String,
        kind: String,
        payload: Value,
    },
    /// Slack asked the app to reconnect (`disconnect`), or closed the connection.
    Reconnect,
    /// Anything else (`hello`, pings): nothing to do.
    Other,
}

/// The largest frame read (Slack's envelopes are a few kilobytes).
const MAX_FRAME: usize = 1024 * 1024;

impl Socket {
    /// Opens a connection: `apps.connections.open`, then the WebSocket to the URL it gives.
    pub async fn open(
        engine: &Engine,
        ch: &SlackChannel,
        app_token: &str,
    ) -> Result<Socket, String> {
        let sender = engine.sender();
        let reply = crate::slack::call_with(
            &sender,
            ch,
            app_token,
            "apps.connections.open",
            &Value::Object(Default::default()),
            engine.now(),
        )
        .await;
        if let Some(e) = reply.error {
            return Err(e);
        }
        let url = reply
            .body
            .as_ref()
            .and_then(|b| b["url"].as_str())
            .ok_or("apps.connections.open gave no url")?
            .to_owned();
        let timeout = Duration::from_secs(ch.timeout.secs());
        let connect = connect(sender.guard(), &url);
        let ws = match tokio::time::timeout(timeout, connect).await {
            Ok(r) => r?,
            Err(_) => return Err("connecting to Slack's WebSocket timed out".into()),
        };
        Ok(Socket { ws })
    }

    /// The next thing Slack sent; `Err` when the connection failed.
    pub async fn next(&mut self) -> Result<Incoming, String> {
        loop {
            let Some(msg) = self.ws.next().await else {
                return Ok(Incoming::Reconnect);
            };
            let text = match msg.map_err(|e| format!("Slack's WebSocket failed: {e}"))? {
                Message::Text(t) => t,
                Message::Close(_) => return Ok(Incoming::Reconnect),
                // Pings are answered by the library; pongs and binary frames mean nothing.
                _ => continue,
            };
            let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                return Ok(Incoming::Other);
            };
            return Ok(match (v["type"].as_str(), v["envelope_id"].as_str()) {
                (Some("disconnect"), _) => Incoming::Reconnect,
                (Some(kind), Some(id)) => Incoming::Envelope {
                    id: id.to_owned(),
                    kind: kind.to_owned(),
                    payload: v["payload"].clone(),
                },
                _ => Incoming::Other,
            });
        }
    }

    /// Acknowledges an envelope, with the answer a modal needs, if any.
    pub async fn ack(&mut self, id: &str, payload: Option<Value>) -> Result<(), String> {
        let mut ack = serde_json::json!({ "envelope_id": id });
        if let Some(p) = payload {
            ack["payload"] = p;
        }
        self.ws
            .send(Message::Text(ack.to_string().into()))
            .await
            .map_err(|e| format!("acknowledging on Slack's WebSocket failed: {e}"))
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Connects a `wss://` URL (or `ws://` to a host `outbound_allow` lists) through the guard.
async fn connect(
    guard: &crate::outbound::Guard,
    url: &str,
) -> Result<WebSocketStream<Pin<Box<dyn Io>>>, String> {
    // The guard reads http(s) URLs; a WebSocket URL is checked as its HTTP twin.
    let (twin, tls) = if let Some(rest) = url.strip_prefix("wss://") {
        (format!("https://{rest}"), true)
    } else if let Some(rest) = url.strip_prefix("ws://") {
        (format!("http://{rest}"), false)
    } else {
        return Err("apps.connections.open gave a URL that is not ws(s)://".into());
    };
    guard.check_literal(&twin)?;
    let u = reqwest::Url::parse(&twin).map_err(|e| format!("Slack's WebSocket URL: {e}"))?;
    let host = u
        .host_str()
        .ok_or("Slack's WebSocket URL has no host")?
        .to_owned();
    let port = u.port_or_known_default().unwrap_or(443);
    let tcp = guard.connect(&host, port).await?;
    let _ = tcp.set_nodelay(true);
    let io: Pin<Box<dyn Io>> = if tls {
        crate::connector::install_tls_provider();
        use rustls_platform_verifier::ConfigVerifierExt;
        let config = rustls::ClientConfig::with_platform_verifier()
            .map_err(|e| format!("TLS settings: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("Slack's WebSocket host: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with Slack's WebSocket failed: {e}"))?;
        Box::pin(stream)
    } else {
        Box::pin(tcp)
    };
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.max_frame_size = Some(MAX_FRAME);
    config.max_message_size = Some(MAX_FRAME);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, io, Some(config))
        .await
        .map_err(|e| format!("Slack's WebSocket handshake failed: {e}"))?;
    Ok(ws)
}
