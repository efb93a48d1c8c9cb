//! Encoding: every packet's wire form for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Two steps: `body_len` walks the packet once, validating what the wire cannot carry (long
//! strings, U+0000, a QoS 1 PUBLISH without packet id) and summing sizes; then the buffer is
//! reserved once and the bytes written, infallibly. So `encoded_len` is exact and an error
//! leaves the buffer untouched. On 3.x, what 3.x cannot say is left out (see [`super::encode`]).

use bytes::{BufMut, BytesMut};

use super::properties::{self, block_len};
use super::{varint, EncodeError};
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, Protocol, PubResponse, Publish, QoS, SubAck,
    Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::reason::ReasonCode;

const MAX_FIELD: usize = 65_535;

/// Size of a UTF-8 Encoded String field: its length prefix and bytes. Checks the 16-bit length
/// and that it holds no U+0000 ([MQTT-1.5.4-2]).
pub(super) fn string_len(s: &str, field: &'static str) -> Result<usize, EncodeError> {
    if s.contains('\0') {
        return Err(EncodeError::Invalid("U+0000 in a string field"));
    }
    field_len(s.len(), field)
}

/// Size of a Binary Data field.
pub(super) fn binary_len(b: &[u8], field: &'static str) -> Result<usize, EncodeError> {
    field_len(b.len(), field)
}

fn field_len(len: usize, field: &'static str) -> Result<usize, EncodeError> {
    if len > MAX_FIELD {
        return Err(EncodeError::FieldTooLong { field, len });
    }
    Ok(2 + len)
}

/// Writes a string field whose size `string_len` accepted.
pub(super) fn put_string(s: &str, buf: &mut BytesMut) {
    put_binary(s.as_bytes(), buf);
}

/// Writes a binary field whose size `binary_len` accepted.
pub(super) fn put_binary(b: &[u8], buf: &mut BytesMut) {
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

/// The properties to write, if any: an empty block is written as absent.
fn props(p: &Option<Box<crate::packet::Properties>>) -> Option<&crate::packet::Properties> {
    p.as_deref().filter(|p| !p.is_empty())
}

pub(super) fn encoded_len(packet: &Packet, protocol: Protocol) -> Result<usize, EncodeError> {
    let remaining = remaining_len(packet, protocol)?;
    Ok(1 + varint::len(remaining as u32) + remaining)
}

pub(super) fn encode(
    packet: &Packet,
    protocol: Protocol,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let remaining = remaining_len(packet, protocol)?;
    buf.reserve(1 + varint::len(remaining as u32) + remaining);
    buf.put_u8(first_byte(packet));
    varint::write(remaining as u32, buf);
    write_body(packet, protocol, buf);
    Ok(())
}

fn remaining_len(packet: &Packet, protocol: Protocol) -> Result<usize, EncodeError> {
    let remaining = body_len(packet, protocol)?;
    if remaining > varint::MAX as usize {
        return Err(EncodeError::PacketTooLarge { remaining });
    }
    Ok(remaining)
}

/// The fixed header's first byte: type and flags ([MQTT-2.2.2]).
fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => {
            0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

fn body_len(packet: &Packet, protocol: Protocol) -> Result<usize, EncodeError> {
    let v5 = protocol.is_v5();
    let props_len = |p: &Option<Box<crate::packet::Properties>>| {
        if v5 {
            block_len(props(p))
        } else {
            Ok(0)
        }
    };
    Ok(match packet {
        Packet::Connect(c) => connect_len(c)?,
        Packet::ConnAck(c) => 2 + props_len(&c.properties)?,
        Packet::Publish(p) => publish_len(p, protocol)?,
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            match pub_response_shape(r, protocol) {
                Shape::Short => 2,
                Shape::Reason => 3,
                Shape::Full => 3 + block_len(props(&r.properties))?,
            }
        }
        Packet::Subscribe(s) => {
            let mut len = 2 + props_len(&s.properties)?;
            for (filter, _) in &s.filters {
                len += field_len(filter.as_str().len(), "topic filter")? + 1;
            }
            len
        }
        Packet::SubAck(s) => 2 + props_len(&s.properties)? + s.reasons.len(),
        Packet::Unsubscribe(u) => {
            let mut len = 2 + props_len(&u.properties)?;
            for filter in &u.filters {
                len += field_len(filter.as_str().len(), "topic filter")?;
            }
            len
        }
        Packet::UnsubAck(u) if v5 => 2 + props_len(&u.properties)? + u.reasons.len(),
        Packet::UnsubAck(_) => 2,
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => match disconnect_shape(d, protocol) {
            Shape::Short => 0,
            Shape::Reason => 1,
            Shape::Full => 1 + block_len(props(&d.properties))?,
        },
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::NotInProtocol {
                    packet: "AUTH",
                    protocol,
                });
            }
            if a.reason == ReasonCode::SUCCESS && props(&a.properties).is_none() {
                0
            } else {
                1 + block_len(props(&a.properties))?
            }
        }
    })
}

/// How much of an ack / DISCONNECT goes on the wire: MQTT 5 lets the reason code and the
/// properties be left out when they say nothing; 3.x never has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Short,
    Reason,
    Full,
}

fn shape(reason: ReasonCode, default: ReasonCode, has_props: bool, protocol: Protocol) -> Shape {
    if !protocol.is_v5() {
        Shape::Short
    } else if has_props {
        Shape::Full
    } else if reason != default {
        Shape::Reason
    } else {
        Shape::Short
    }
}

fn pub_response_shape(r: &PubResponse, protocol: Protocol) -> Shape {
    let has_props = props(&r.properties).is_some();
    shape(r.reason, ReasonCode::SUCCESS, has_props, protocol)
}

fn disconnect_shape(d: &Disconnect, protocol: Protocol) -> Shape {
    let has_props = props(&d.properties).is_some();
    shape(
        d.reason,
        ReasonCode::NORMAL_DISCONNECTION,
        has_props,
        protocol,
    )
}

fn connect_len(c: &Connect) -> Result<usize, EncodeError> {
    let v5 = c.protocol.is_v5();
    // Protocol name, level, flags, keep alive.
    let mut len = 2 + c.protocol.name().len() + 1 + 1 + 2;
    if v5 {
        len += block_len(props(&c.properties))?;
    }
    len += string_len(&c.client_id, "client identifier")?;
    if let Some(will) = &c.will {
        if will.topic.is_empty() {
            return Err(EncodeError::Invalid("empty will topic"));
        }
        if v5 {
            len += block_len(props(&will.properties))?;
        }
        len += field_len(will.topic.as_str().len(), "will topic")?;
        len += binary_len(&will.payload, "will payload")?;
    }
    if let Some(username) = &c.username {
        len += string_len(username, "user name")?;
    }
    if let Some(password) = &c.password {
        if c.username.is_none() && !v5 {
            return Err(EncodeError::Invalid(
                "password without user name before MQTT 5",
            ));
        }
        len += binary_len(password, "password")?;
    }
    Ok(len)
}

fn publish_len(p: &Publish, protocol: Protocol) -> Result<usize, EncodeError> {
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, Some(_)) => {
            return Err(EncodeError::Invalid("packet identifier on a QoS 0 PUBLISH"))
        }
        (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => {
            return Err(EncodeError::Invalid(
                "QoS 1 or 2 PUBLISH without packet identifier",
            ))
        }
        _ => {}
    }
    if p.dup && p.qos == QoS::AtMostOnce {
        return Err(EncodeError::Invalid("DUP on a QoS 0 PUBLISH"));
    }
    let properties = props(&p.properties);
    if p.topic.is_empty() && properties.and_then(|p| p.topic_alias).is_none() {
        return Err(EncodeError::Invalid(
            "empty topic without a Topic Alias (MQTT 5 only)",
        ));
    }
    if p.topic.is_empty() && !protocol.is_v5() {
        return Err(EncodeError::Invalid("empty topic before MQTT 5"));
    }
    let mut len = field_len(p.topic.as_str().len(), "topic name")? + p.payload.len();
    if p.packet_id.is_some() {
        len += 2;
    }
    if protocol.is_v5() {
        len += block_len(properties)?;
    }
    Ok(len)
}

fn write_body(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) {
    match packet {
        Packet::Connect(c) => write_connect(c, buf),
        Packet::ConnAck(c) => write_connack(c, protocol, buf),
        Packet::Publish(p) => write_publish(p, protocol, buf),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            buf.put_u16(r.packet_id.get());
            match pub_response_shape(r, protocol) {
                Shape::Short => {}
                Shape::Reason => buf.put_u8(r.reason.0),
                Shape::Full => {
                    buf.put_u8(r.reason.0);
                    properties::write(props(&r.properties), buf);
                }
            }
        }
        Packet::Subscribe(s) => write_subscribe(s, protocol, buf),
        Packet::SubAck(s) => write_suback(s, protocol, buf),
        Packet::Unsubscribe(u) => write_unsubscribe(u, protocol, buf),
        Packet::UnsubAck(u) => write_unsuback(u, protocol, buf),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => match disconnect_shape(d, protocol) {
            Shape::Short => {}
            Shape::Reason => buf.put_u8(d.reason.0),
            Shape::Full => {
                buf.put_u8(d.reason.0);
                properties::write(props(&d.properties), buf);
            }
        },
        Packet::Auth(a) => write_auth(a, buf),
    }
}

fn write_connect(c: &Connect, buf: &mut BytesMut) {
    let v5 = c.protocol.is_v5();
    put_string(c.protocol.name(), buf);
    buf.put_u8(c.protocol.level());
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(will) = &c.will {
        flags |= 0x04 | ((will.qos as u8) << 3);
        if will.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    if v5 {
        properties::write(props(&c.properties), buf);
    }
    put_string(&c.client_id, buf);
    if let Some(will) = &c.will {
        if v5 {
            properties::write(props(&will.properties), buf);
        }
        put_string(will.topic.as_str(), buf);
        put_binary(&will.payload, buf);
    }
    if let Some(username) = &c.username {
        put_string(username, buf);
    }
    if let Some(password) = &c.password {
        put_binary(password, buf);
    }
}

fn write_connack(c: &ConnAck, protocol: Protocol, buf: &mut BytesMut) {
    // MQTT 3.1 has no Session Present flag: the byte is reserved.
    let session_present = c.session_present && protocol != Protocol::V31;
    buf.put_u8(u8::from(session_present));
    if protocol.is_v5() {
        buf.put_u8(c.code.0);
        properties::write(props(&c.properties), buf);
    } else {
        buf.put_u8(c.code.to_v3_connack());
    }
}

fn write_publish(p: &Publish, protocol: Protocol, buf: &mut BytesMut) {
    put_string(p.topic.as_str(), buf);
    if let Some(id) = p.packet_id {
        buf.put_u16(id.get());
    }
    if protocol.is_v5() {
        properties::write(props(&p.properties), buf);
    }
    buf.put_slice(&p.payload);
}

fn options_byte(o: &SubscriptionOptions, protocol: Protocol) -> u8 {
    let qos = o.qos as u8;
    if !protocol.is_v5() {
        return qos;
    }
    qos | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

fn write_subscribe(s: &Subscribe, protocol: Protocol, buf: &mut BytesMut) {
    buf.put_u16(s.packet_id.get());
    if protocol.is_v5() {
        properties::write(props(&s.properties), buf);
    }
    for (filter, options) in &s.filters {
        put_string(filter.as_str(), buf);
        buf.put_u8(options_byte(options, protocol));
    }
}

fn write_suback(s: &SubAck, protocol: Protocol, buf: &mut BytesMut) {
    buf.put_u16(s.packet_id.get());
    if protocol.is_v5() {
        properties::write(props(&s.properties), buf);
        for reason in &s.reasons {
            buf.put_u8(reason.0);
        }
    } else {
        // 3.x return codes: the granted QoS, or 0x80 for any failure.
        for reason in &s.reasons {
            buf.put_u8(if reason.0 <= 2 { reason.0 } else { 0x80 });
        }
    }
}

fn write_unsubscribe(u: &Unsubscribe, protocol: Protocol, buf: &mut BytesMut) {
    buf.put_u16(u.packet_id.get());
    if protocol.is_v5() {
        properties::write(props(&u.properties), buf);
    }
    for filter in &u.filters {
        put_string(filter.as_str(), buf);
    }
}

fn write_unsuback(u: &UnsubAck, protocol: Protocol, buf: &mut BytesMut) {
    buf.put_u16(u.packet_id.get());
    if protocol.is_v5() {
        properties::write(props(&u.properties), buf);
        for reason in &u.reasons {
            buf.put_u8(reason.0);
        }
    }
}

fn write_auth(a: &Auth, buf: &mut BytesMut) {
    if a.reason == ReasonCode::SUCCESS && props(&a.properties).is_none() {
        return;
    }
    buf.put_u8(a.reason.0);
    properties::write(props(&a.properties), buf);
}
