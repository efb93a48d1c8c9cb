//! Codec tests with byte vectors written from the MQTT 3.1, 3.1.1 and 5.0 specifications:
//! each packet type per version, every malformed case the decoder must refuse, and framing
//! (incremental input, packets back to back, the size limit).

#![allow(clippy::unwrap_used)]

mod acks;
mod connect;
mod framing;
mod publish;
mod subscribe;

use bytes::BytesMut;
use starling_proto::{decode, encode, encoded_len, DecodeError, Limits, Packet, Protocol};

pub(crate) const V31: Protocol = Protocol::V31;
pub(crate) const V311: Protocol = Protocol::V311;
pub(crate) const V5: Protocol = Protocol::V5;

/// Decodes `bytes` as one whole packet: it must decode and consume everything.
pub(crate) fn decode_one(bytes: &[u8], protocol: Protocol) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, &Limits::new(protocol))
        .unwrap_or_else(|e| panic!("{bytes:02X?} failed: {e}"))
        .expect("complete packet");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    packet
}

/// Decodes `bytes`, which must fail; returns the error.
pub(crate) fn decode_err(bytes: &[u8], protocol: Protocol) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, &Limits::new(protocol)) {
        Err(e) => e,
        Ok(p) => panic!("{bytes:02X?} decoded as {p:?}"),
    }
}

/// Encodes `packet`, checking `encoded_len` against what was written.
pub(crate) fn encode_vec(packet: &Packet, protocol: Protocol) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(packet, protocol, &mut buf).expect("encodes");
    assert_eq!(encoded_len(packet, protocol).unwrap(), buf.len());
    buf.to_vec()
}

/// Decodes `bytes` and checks that encoding the packet gives the same bytes back.
pub(crate) fn decode_same(bytes: &[u8], protocol: Protocol) -> Packet {
    let packet = decode_one(bytes, protocol);
    assert_eq!(
        encode_vec(&packet, protocol),
        bytes,
        "re-encoding {packet:?}"
    );
    packet
}

/// Builds a packet from its first byte and body, with the remaining length computed.
pub(crate) fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
pub(crate) fn s(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text);
    out
}

/// The wrapped error of a CONNECT, checking the protocol it carries.
pub(crate) fn in_connect(err: DecodeError, protocol: Protocol) -> DecodeError {
    assert_eq!(err.connect_protocol(), Some(protocol), "{err:?}");
    err.root().clone()
}

pub(crate) fn pid(id: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(id).unwrap()
}
