//! The MQTT wire codec: incremental `decode`, `encode`, `encoded_len`, their limits and errors.
//!
//! Sans-IO: bytes in a `BytesMut` in, `Packet`s out, and back. The connection actor owns the
//! socket and calls these; nothing here blocks, allocates per byte, or trusts a length it has
//! not checked. Which version's rules apply comes from [`Limits::protocol`] (fixed by the
//! connection's CONNECT), except for CONNECT itself, which carries its own version.
//!
//! - `varint`: the Variable Byte Integer.
//! - `reader`: checked reads of the MQTT data types from a packet's bytes.
//! - `properties`: MQTT 5 properties, and which packet may carry which.
//! - `decode`: the fixed header, framing, and every packet's body.
//! - `encode`: sizes first, then one reservation and the bytes.

mod decode;
mod encode;
mod properties;
mod reader;
mod varint;

use bytes::BytesMut;

use crate::packet::{Packet, Protocol};
use crate::topic::TopicError;

/// What the decoder accepts on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The protocol the connection speaks (from its CONNECT); every packet but CONNECT is read
    /// by its rules.
    pub protocol: Protocol,
    /// Largest whole packet accepted, fixed header included (the broker's Maximum Packet
    /// Size). `None`: only the protocol's own limit (a 268 435 455 byte remaining length).
    pub max_packet_size: Option<u32>,
}

impl Limits {
    /// Limits for `protocol` with no maximum packet size beyond the protocol's own.
    pub fn new(protocol: Protocol) -> Limits {
        Limits {
            protocol,
            max_packet_size: None,
        }
    }
}

/// Why a packet could not be decoded. Every variant maps to one reason code in
/// [`crate::reason`] ([`DecodeError::reason_code`]).
///
/// Errors found inside a CONNECT once its protocol level has been read are wrapped in
/// [`DecodeError::InConnect`], so the broker knows which CONNACK to answer with
/// ([`DecodeError::connect_protocol`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes cannot be parsed as the specification says (0x81).
    #[error("malformed packet: {0}")]
    MalformedPacket(&'static str),
    /// The packet parses but breaks a rule of the protocol (0x82).
    #[error("protocol error: {0}")]
    ProtocolError(&'static str),
    /// The packet is larger than [`Limits::max_packet_size`] (0x95). Reported as soon as the
    /// fixed header is read, before any of the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// The whole packet's announced size, fixed header included.
        size: usize,
        /// The limit in force.
        max: u32,
    },
    /// A CONNECT for a protocol name / level this codec does not speak (0x84; 3.x return
    /// code 1).
    #[error("unsupported protocol {name:?} level {level}")]
    UnsupportedProtocolVersion {
        /// The protocol name sent (lossily decoded if it was not UTF-8).
        name: String,
        /// The protocol level sent.
        level: u8,
    },
    /// A PUBLISH or will topic with wildcards, or otherwise not a valid topic name (0x90).
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(TopicError),
    /// A SUBSCRIBE / UNSUBSCRIBE filter that is not a valid topic filter. Mapped to 0x81
    /// Malformed Packet: MQTT 5 keeps 0x8F for filters that are "correctly formed" but refused.
    #[error("invalid topic filter: {0}")]
    TopicFilterInvalid(TopicError),
    /// An error inside a CONNECT whose protocol is known: answer it in that protocol.
    #[error("in a {protocol} CONNECT: {source}")]
    InConnect {
        /// The protocol the CONNECT asked for.
        protocol: Protocol,
        /// What was wrong with it.
        source: Box<DecodeError>,
    },
}

impl DecodeError {
    /// The protocol of the CONNECT this error was found in, once its protocol level was read:
    /// the broker answers a broken MQTT 5 CONNECT with CONNACK 0x81 / 0x82 / 0x90..., a broken
    /// 3.x one by closing the connection. `None` for errors outside a CONNECT.
    pub fn connect_protocol(&self) -> Option<Protocol> {
        match self {
            DecodeError::InConnect { protocol, .. } => Some(*protocol),
            _ => None,
        }
    }

    /// The error itself, without the CONNECT wrapper.
    pub fn root(&self) -> &DecodeError {
        match self {
            DecodeError::InConnect { source, .. } => source.root(),
            other => other,
        }
    }
}

/// Why a packet could not be encoded. The broker builds packets from validated parts, so these
/// point at bugs or at limits (a huge payload) rather than at peers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The remaining length would exceed the protocol maximum of 268 435 455 bytes.
    #[error("packet too large: remaining length {remaining} exceeds 268435455 bytes")]
    PacketTooLarge {
        /// The remaining length the packet would need.
        remaining: usize,
    },
    /// A string or binary field longer than its 16-bit length prefix can say.
    #[error("{field} is {len} bytes, more than 65535")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The packet type does not exist in the protocol (AUTH on 3.x).
    #[error("{packet} does not exist in MQTT {protocol}")]
    NotInProtocol {
        /// The packet type.
        packet: &'static str,
        /// The protocol asked for.
        protocol: Protocol,
    },
    /// The packet contradicts itself or the wire format (a QoS 1 PUBLISH without packet id,
    /// U+0000 in a string, a subscription identifier above 268 435 455, ...).
    #[error("cannot encode: {0}")]
    Invalid(&'static str),
}

/// Decodes one packet from the front of `buf`.
///
/// - `Ok(None)`: more bytes are needed; `buf` is untouched (capacity may have been reserved).
/// - `Ok(Some(packet))`: exactly that packet's bytes were consumed from `buf`. Payloads and
///   binary fields are zero-copy slices of the packet's bytes.
/// - `Err(_)`: the stream is unusable; close the connection (after a DISCONNECT / CONNACK with
///   [`DecodeError::reason_code`] where the protocol allows).
///
/// Packet size is checked against `limits.max_packet_size` as soon as the fixed header is
/// complete, before the body is waited for or buffered.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Packet>, DecodeError> {
    decode::decode(buf, limits)
}

/// Appends the wire form of `packet` for `protocol` to `buf`, reserving the exact size once.
///
/// CONNECT is written in its own `protocol` field's version. On 3.x, what the protocol cannot
/// carry is left out: properties, reason codes of acks and DISCONNECT, UNSUBACK reasons, MQTT 5
/// subscription options; a CONNACK code becomes its 3.x return code and SUBACK failures 0x80.
/// On error nothing is written.
pub fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
    encode::encode(packet, protocol, buf)
}

/// The number of bytes a properties block takes in a packet, its length prefix included (an
/// error when it could not be encoded at all): for sizing a packet without building it.
pub fn properties_len(p: &crate::packet::Properties) -> Result<usize, EncodeError> {
    properties::block_len(Some(p))
}

/// The number of bytes [`encode`] would write for `packet`: to check a peer's Maximum Packet
/// Size before sending.
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> Result<usize, EncodeError> {
    encode::encoded_len(packet, protocol)
}
