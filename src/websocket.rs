//! MQTT over WebSocket: the HTTP upgrade and a byte stream over binary frames.
//!
//! The handshake accepts the subprotocols `mqtt` and `mqttv3.1` (in any case) and echoes the
//! one the client offered, as it spelled it (browsers fail the handshake otherwise), and
//! optionally a fixed path. A WebSocket connection's Maximum Packet Size is at most
//! `max_frame_size` when the acceptor has a `maximumPacketSize`; with `maximumPacketSize=-1`
//! none is announced, and a message over `max_frame_size` still ends the connection (see
//! `TransportInfo::max_packet_size`). After it,
//! `WsBytes` turns the frames into the byte stream a Connection reads: MQTT packets do not
//! align with frames (one packet may span frames, one frame may hold several packets), so
//! binary payloads are simply concatenated. Ping/pong are answered by tungstenite; a close
//! frame ends the stream; a text frame is an error (MQTT over WebSocket is binary).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The subprotocols MQTT clients offer, in the order the broker prefers them.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// WebSocket settings of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsSettings {
    /// Only this request path is accepted; `None` accepts any.
    pub path: Option<String>,
    /// Largest frame (and message) accepted, in bytes.
    pub max_frame_size: usize,
}

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why.to_owned()));
    *response.status_mut() = status;
    response
}

/// Chooses the subprotocol: the first of ours that the client offered. A client that offers
/// none is accepted without one; one that offers only others is refused.
// The error type is tungstenite's handshake callback contract (an HTTP response).
#[allow(clippy::result_large_err)]
fn choose_subprotocol(request: &Request) -> Result<Option<String>, ErrorResponse> {
    let offered: Vec<&str> = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if offered.is_empty() {
        return Ok(None);
    }
    // Matched without regard to case, answered exactly as offered (RFC 6455 §4.1: the
    // client fails a handshake whose subprotocol is not one it sent).
    SUBPROTOCOLS
        .iter()
        .find_map(|ours| offered.iter().find(|o| o.eq_ignore_ascii_case(ours)))
        .map(|p| Some((*p).to_owned()))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "subprotocol mqtt or mqttv3.1 required",
            )
        })
}

/// Completes the HTTP upgrade on `stream` and returns the byte stream of MQTT.
// The callback's error type is tungstenite's contract (an HTTP response).
#[allow(clippy::result_large_err)]
pub async fn accept<S>(stream: S, settings: &WsSettings) -> io::Result<WsBytes<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = settings.path.clone();
    let callback = move |request: &Request, mut response: Response| {
        if let Some(path) = &path {
            if request.uri().path() != path {
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    "no MQTT endpoint at this path",
                ));
            }
        }
        if let Some(protocol) = choose_subprotocol(request)? {
            // Offered in a header value, so it is one.
            if let Ok(value) = HeaderValue::from_str(&protocol) {
                response
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", value);
            }
        }
        Ok(response)
    };
    // Small buffers: an idle WebSocket connection should cost little more than a TCP one.
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 4096;
    config.write_buffer_size = 0;
    config.max_frame_size = Some(settings.max_frame_size);
    config.max_message_size = Some(settings.max_frame_size);
    let ws = async_tungstenite::tokio::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(WsBytes {
        ws,
        read: Bytes::new(),
    })
}

/// A WebSocket as a byte stream of binary frames.
pub struct WsBytes<S> {
    ws: WebSocketStream<async_tungstenite::tokio::TokioAdapter<S>>,
    /// The rest of the last binary frame.
    read: Bytes,
}

impl<S> std::fmt::Debug for WsBytes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WsBytes")
    }
}

fn ws_error(e: async_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.read = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket uses binary frames, not text",
                    )))
                }
                // Pings are answered by tungstenite; pongs and raw frames carry no MQTT.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_error)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(ws_error)
    }
}
