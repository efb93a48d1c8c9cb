//! MQTT 5 properties ([MQTT-2.2.2]): the table of which packet may carry which property, and
//! their decoding and encoding.
//!
//! The decoder enforces the specification's rules in one place: an unknown identifier or one
//! not allowed on the packet is a Malformed Packet ([MQTT-2.2.2-2]); a single-valued property
//! given twice, or a value outside its range (Receive Maximum 0, Maximum Packet Size 0,
//! Subscription Identifier 0, Maximum QoS 2, ...) is a Protocol Error. Topic Alias 0 is the
//! exception: it is passed through, because judging aliases is the receiving connection's job
//! (0x94 Topic Alias invalid). The encoder writes whatever is set, in identifier order.

use bytes::{BufMut, BytesMut};

use super::encode::{binary_len, put_binary, put_string, string_len};
use super::reader::Reader;
use super::{varint, DecodeError, EncodeError};
use crate::packet::Properties;
use crate::topic::TopicName;

/// Where a property block sits: each packet type with properties, plus the will in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ctx {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    PubResponse,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl Ctx {
    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

const CONNECT: u16 = Ctx::Connect.bit();
const WILL: u16 = Ctx::Will.bit();
const CONNACK: u16 = Ctx::ConnAck.bit();
const PUBLISH: u16 = Ctx::Publish.bit();
const PUB_RESPONSE: u16 = Ctx::PubResponse.bit();
const SUBSCRIBE: u16 = Ctx::Subscribe.bit();
const SUBACK: u16 = Ctx::SubAck.bit();
const UNSUBSCRIBE: u16 = Ctx::Unsubscribe.bit();
const UNSUBACK: u16 = Ctx::UnsubAck.bit();
const DISCONNECT: u16 = Ctx::Disconnect.bit();
const AUTH: u16 = Ctx::Auth.bit();
const ALL: u16 = CONNECT
    | WILL
    | CONNACK
    | PUBLISH
    | PUB_RESPONSE
    | SUBSCRIBE
    | SUBACK
    | UNSUBSCRIBE
    | UNSUBACK
    | DISCONNECT
    | AUTH;

/// Table 2-4 of MQTT 5.0: the packets (and will) each property identifier may appear in.
/// `None` for identifiers the specification does not define.
fn allowed_in(id: u32) -> Option<u16> {
    Some(match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => PUBLISH | WILL,
        0x0B => PUBLISH | SUBSCRIBE,
        0x11 => CONNECT | CONNACK | DISCONNECT,
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => CONNACK,
        0x15 | 0x16 => CONNECT | CONNACK | AUTH,
        0x17 | 0x19 => CONNECT,
        0x18 => WILL,
        0x1C => CONNACK | DISCONNECT,
        0x1F => CONNACK | PUB_RESPONSE | SUBACK | UNSUBACK | DISCONNECT | AUTH,
        0x21 | 0x22 | 0x27 => CONNECT | CONNACK,
        0x23 => PUBLISH,
        0x26 => ALL,
        _ => return None,
    })
}

/// Stores a single-valued property; a second occurrence is a Protocol Error.
fn set<T>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::ProtocolError(name));
    }
    *slot = Some(value);
    Ok(())
}

/// Reads a Byte property that may only be 0 or 1.
fn flag(block: &mut Reader, name: &'static str) -> Result<u8, DecodeError> {
    match block.u8(name)? {
        value @ (0 | 1) => Ok(value),
        _ => Err(DecodeError::ProtocolError(name)),
    }
}

/// Reads a Two Byte Integer property that may not be 0.
fn nonzero_u16(block: &mut Reader, name: &'static str) -> Result<u16, DecodeError> {
    match block.u16(name)? {
        0 => Err(DecodeError::ProtocolError(name)),
        value => Ok(value),
    }
}

/// Reads the property block (length, then properties) found in `ctx`. An empty block is `None`.
pub(super) fn decode(r: &mut Reader, ctx: Ctx) -> Result<Option<Box<Properties>>, DecodeError> {
    let len = r.varint("property length")?;
    let bytes = r.take(len as usize, "property length runs past the packet")?;
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut block = Reader::new(bytes);
    let mut p = Properties::default();
    while !block.is_empty() {
        let id = block.varint("property identifier")?;
        let mask =
            allowed_in(id).ok_or(DecodeError::MalformedPacket("unknown property identifier"))?;
        if mask & ctx.bit() == 0 {
            return Err(DecodeError::MalformedPacket(
                "property not allowed in this packet",
            ));
        }
        let b = &mut block;
        match id {
            0x01 => {
                let v = flag(b, "invalid or repeated Payload Format Indicator")?;
                set(
                    &mut p.payload_format_indicator,
                    v,
                    "repeated Payload Format Indicator",
                )?;
            }
            0x02 => {
                let v = b.u32("Message Expiry Interval")?;
                set(
                    &mut p.message_expiry_interval,
                    v,
                    "repeated Message Expiry Interval",
                )?;
            }
            0x03 => {
                let v = b.string("Content Type")?;
                set(&mut p.content_type, v, "repeated Content Type")?;
            }
            0x08 => {
                let v = b.string("Response Topic")?;
                if TopicName::new(&v).is_err() {
                    return Err(DecodeError::ProtocolError(
                        "Response Topic is not a topic name",
                    ));
                }
                set(&mut p.response_topic, v, "repeated Response Topic")?;
            }
            0x09 => {
                let v = b.binary("Correlation Data")?;
                set(&mut p.correlation_data, v, "repeated Correlation Data")?;
            }
            0x0B => {
                let v = b.varint("Subscription Identifier")?;
                if v == 0 {
                    return Err(DecodeError::ProtocolError("Subscription Identifier 0"));
                }
                if ctx == Ctx::Subscribe && !p.subscription_identifiers.is_empty() {
                    return Err(DecodeError::ProtocolError(
                        "repeated Subscription Identifier in SUBSCRIBE",
                    ));
                }
                p.subscription_identifiers.push(v);
            }
            0x11 => {
                let v = b.u32("Session Expiry Interval")?;
                set(
                    &mut p.session_expiry_interval,
                    v,
                    "repeated Session Expiry Interval",
                )?;
            }
            0x12 => {
                let v = b.string("Assigned Client Identifier")?;
                set(
                    &mut p.assigned_client_identifier,
                    v,
                    "repeated Assigned Client Identifier",
                )?;
            }
            0x13 => {
                let v = b.u16("Server Keep Alive")?;
                set(&mut p.server_keep_alive, v, "repeated Server Keep Alive")?;
            }
            0x15 => {
                let v = b.string("Authentication Method")?;
                set(
                    &mut p.authentication_method,
                    v,
                    "repeated Authentication Method",
                )?;
            }
            0x16 => {
                let v = b.binary("Authentication Data")?;
                set(
                    &mut p.authentication_data,
                    v,
                    "repeated Authentication Data",
                )?;
            }
            0x17 => {
                let v = flag(b, "invalid Request Problem Information")?;
                set(
                    &mut p.request_problem_information,
                    v,
                    "repeated Request Problem Information",
                )?;
            }
            0x18 => {
                let v = b.u32("Will Delay Interval")?;
                set(
                    &mut p.will_delay_interval,
                    v,
                    "repeated Will Delay Interval",
                )?;
            }
            0x19 => {
                let v = flag(b, "invalid Request Response Information")?;
                let name = "repeated Request Response Information";
                set(&mut p.request_response_information, v, name)?;
            }
            0x1A => {
                let v = b.string("Response Information")?;
                set(
                    &mut p.response_information,
                    v,
                    "repeated Response Information",
                )?;
            }
            0x1C => {
                let v = b.string("Server Reference")?;
                set(&mut p.server_reference, v, "repeated Server Reference")?;
            }
            0x1F => {
                let v = b.string("Reason String")?;
                set(&mut p.reason_string, v, "repeated Reason String")?;
            }
            0x21 => {
                let v = nonzero_u16(b, "Receive Maximum 0")?;
                set(&mut p.receive_maximum, v, "repeated Receive Maximum")?;
            }
            0x22 => {
                let v = b.u16("Topic Alias Maximum")?;
                set(
                    &mut p.topic_alias_maximum,
                    v,
                    "repeated Topic Alias Maximum",
                )?;
            }
            0x23 => {
                // 0 is never a valid alias, but judging an alias (0, or above the maximum the
                // receiver announced) is the receiver's: it answers 0x94 Topic Alias invalid.
                let v = b.u16("Topic Alias")?;
                set(&mut p.topic_alias, v, "repeated Topic Alias")?;
            }
            0x24 => {
                let v = flag(b, "invalid Maximum QoS")?;
                set(&mut p.maximum_qos, v, "repeated Maximum QoS")?;
            }
            0x25 => {
                let v = flag(b, "invalid Retain Available")?;
                set(&mut p.retain_available, v, "repeated Retain Available")?;
            }
            0x26 => {
                let name = b.string("User Property name")?;
                let value = b.string("User Property value")?;
                p.user_properties.push((name, value));
            }
            0x27 => {
                let v = b.u32("Maximum Packet Size")?;
                if v == 0 {
                    return Err(DecodeError::ProtocolError("Maximum Packet Size 0"));
                }
                set(
                    &mut p.maximum_packet_size,
                    v,
                    "repeated Maximum Packet Size",
                )?;
            }
            0x28 => {
                let v = flag(b, "invalid Wildcard Subscription Available")?;
                let name = "repeated Wildcard Subscription Available";
                set(&mut p.wildcard_subscription_available, v, name)?;
            }
            0x29 => {
                let v = flag(b, "invalid Subscription Identifier Available")?;
                let name = "repeated Subscription Identifier Available";
                set(&mut p.subscription_identifier_available, v, name)?;
            }
            0x2A => {
                let v = flag(b, "invalid Shared Subscription Available")?;
                let name = "repeated Shared Subscription Available";
                set(&mut p.shared_subscription_available, v, name)?;
            }
            _ => return Err(DecodeError::MalformedPacket("unknown property identifier")),
        }
    }
    Ok(Some(Box::new(p)))
}

/// Length of the properties themselves, without the length prefix.
fn body_len(p: &Properties) -> Result<usize, EncodeError> {
    let byte = |v: &Option<u8>| v.map_or(0, |_| 2);
    let two = |v: &Option<u16>| v.map_or(0, |_| 3);
    let four = |v: &Option<u32>| v.map_or(0, |_| 5);
    let string = |v: &Option<String>, field| match v {
        Some(s) => string_len(s, field).map(|n| n + 1),
        None => Ok(0),
    };
    let binary = |v: &Option<bytes::Bytes>, field| match v {
        Some(b) => binary_len(b, field).map(|n| n + 1),
        None => Ok(0),
    };
    let mut len = byte(&p.payload_format_indicator)
        + four(&p.message_expiry_interval)
        + string(&p.content_type, "Content Type")?
        + string(&p.response_topic, "Response Topic")?
        + binary(&p.correlation_data, "Correlation Data")?
        + four(&p.session_expiry_interval)
        + string(&p.assigned_client_identifier, "Assigned Client Identifier")?
        + two(&p.server_keep_alive)
        + string(&p.authentication_method, "Authentication Method")?
        + binary(&p.authentication_data, "Authentication Data")?
        + byte(&p.request_problem_information)
        + four(&p.will_delay_interval)
        + byte(&p.request_response_information)
        + string(&p.response_information, "Response Information")?
        + string(&p.server_reference, "Server Reference")?
        + string(&p.reason_string, "Reason String")?
        + two(&p.receive_maximum)
        + two(&p.topic_alias_maximum)
        + two(&p.topic_alias)
        + byte(&p.maximum_qos)
        + byte(&p.retain_available)
        + four(&p.maximum_packet_size)
        + byte(&p.wildcard_subscription_available)
        + byte(&p.subscription_identifier_available)
        + byte(&p.shared_subscription_available);
    for &id in &p.subscription_identifiers {
        if id > varint::MAX {
            return Err(EncodeError::Invalid(
                "Subscription Identifier above 268435455",
            ));
        }
        len += 1 + varint::len(id);
    }
    for (name, value) in &p.user_properties {
        len +=
            1 + string_len(name, "User Property name")? + string_len(value, "User Property value")?;
    }
    Ok(len)
}

/// Bytes the block takes on the wire: the length prefix and the properties.
pub(super) fn block_len(p: Option<&Properties>) -> Result<usize, EncodeError> {
    let len = match p {
        Some(p) => body_len(p)?,
        None => 0,
    };
    if len > varint::MAX as usize {
        return Err(EncodeError::PacketTooLarge { remaining: len });
    }
    Ok(varint::len(len as u32) + len)
}

/// Writes the block. `block_len` must have accepted it.
pub(super) fn write(p: Option<&Properties>, buf: &mut BytesMut) {
    let Some(p) = p else {
        buf.put_u8(0);
        return;
    };
    // Checked by `block_len`; a failure here could only be a bug, and writes an empty block.
    let len = body_len(p).unwrap_or(0);
    varint::write(len as u32, buf);
    let put_byte = |buf: &mut BytesMut, id: u8, v: Option<u8>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u8(v);
        }
    };
    let put_two = |buf: &mut BytesMut, id: u8, v: Option<u16>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u16(v);
        }
    };
    let put_four = |buf: &mut BytesMut, id: u8, v: Option<u32>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u32(v);
        }
    };
    let put_str = |buf: &mut BytesMut, id: u8, v: &Option<String>| {
        if let Some(v) = v {
            buf.put_u8(id);
            put_string(v, buf);
        }
    };
    let put_bin = |buf: &mut BytesMut, id: u8, v: &Option<bytes::Bytes>| {
        if let Some(v) = v {
            buf.put_u8(id);
            put_binary(v, buf);
        }
    };
    put_byte(buf, 0x01, p.payload_format_indicator);
    put_four(buf, 0x02, p.message_expiry_interval);
    put_str(buf, 0x03, &p.content_type);
    put_str(buf, 0x08, &p.response_topic);
    put_bin(buf, 0x09, &p.correlation_data);
    for &id in &p.subscription_identifiers {
        buf.put_u8(0x0B);
        varint::write(id, buf);
    }
    put_four(buf, 0x11, p.session_expiry_interval);
    put_str(buf, 0x12, &p.assigned_client_identifier);
    put_two(buf, 0x13, p.server_keep_alive);
    put_str(buf, 0x15, &p.authentication_method);
    put_bin(buf, 0x16, &p.authentication_data);
    put_byte(buf, 0x17, p.request_problem_information);
    put_four(buf, 0x18, p.will_delay_interval);
    put_byte(buf, 0x19, p.request_response_information);
    put_str(buf, 0x1A, &p.response_information);
    put_str(buf, 0x1C, &p.server_reference);
    put_str(buf, 0x1F, &p.reason_string);
    put_two(buf, 0x21, p.receive_maximum);
    put_two(buf, 0x22, p.topic_alias_maximum);
    put_two(buf, 0x23, p.topic_alias);
    put_byte(buf, 0x24, p.maximum_qos);
    put_byte(buf, 0x25, p.retain_available);
    for (name, value) in &p.user_properties {
        buf.put_u8(0x26);
        put_string(name, buf);
        put_string(value, buf);
    }
    put_four(buf, 0x27, p.maximum_packet_size);
    put_byte(buf, 0x28, p.wildcard_subscription_available);
    put_byte(buf, 0x29, p.subscription_identifier_available);
    put_byte(buf, 0x2A, p.shared_subscription_available);
}
