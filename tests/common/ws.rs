//! MQTT over WebSocket for tests: a raw MQTT 5 client speaking packets in binary frames, over
//! any stream (TCP, or TLS for WebSocket over TLS).

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::Message;
use bytes::BytesMut;
use futures_util::StreamExt;
use starling_proto::{
    decode, encode, Limits, Packet, Protocol, ReasonCode, Subscribe, SubscriptionOptions,
    TopicFilter,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::raw::connect_packet;
use super::WAIT;

/// An MQTT client over a WebSocket (over any stream), speaking packets in binary frames.
pub struct WsRaw<S> {
    ws: async_tungstenite::WebSocketStream<async_tungstenite::tokio::TokioAdapter<S>>,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsRaw<S> {
    pub async fn open(
        stream: S,
        path: &str,
        subprotocol: Option<&str>,
    ) -> Result<(WsRaw<S>, Option<String>), String> {
        let mut request = format!("ws://127.0.0.1{path}")
            .into_client_request()
            .expect("request");
        if let Some(p) = subprotocol {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(p).expect("header"),
            );
        }
        let (ws, response) = async_tungstenite::tokio::client_async(request, stream)
            .await
            .map_err(|e| e.to_string())?;
        let chosen = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((
            WsRaw {
                ws,
                buf: BytesMut::new(),
            },
            chosen,
        ))
    }

    pub async fn send_frame(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send frame");
    }

    pub async fn send_packet(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, Protocol::V5, &mut out).expect("encode");
        self.send_frame(out.to_vec()).await;
    }

    pub async fn recv(&mut self) -> Option<Packet> {
        let limits = Limits {
            protocol: Protocol::V5,
            max_packet_size: None,
        };
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) = decode(&mut self.buf, &limits).expect("decodable") {
                    return Some(p);
                }
                match self.ws.next().await {
                    Some(Ok(Message::Binary(b))) => self.buf.extend_from_slice(&b),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .expect("timed out waiting on the WebSocket")
    }

    pub async fn connect(&mut self, id: &str) {
        self.send_packet(&connect_packet(Protocol::V5, id)).await;
        assert!(
            matches!(self.recv().await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::SUCCESS)
        );
    }

    pub async fn subscribe(&mut self, filter: &str) {
        self.send_packet(&Packet::Subscribe(Subscribe {
            packet_id: super::raw::pid(1),
            properties: None,
            filters: vec![(
                TopicFilter::new(filter).expect("filter"),
                SubscriptionOptions::default(),
            )],
        }))
        .await;
        assert!(matches!(self.recv().await, Some(Packet::SubAck(_))));
    }

    pub async fn recv_payload(&mut self) -> Vec<u8> {
        match self.recv().await {
            Some(Packet::Publish(p)) => p.payload.to_vec(),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}
