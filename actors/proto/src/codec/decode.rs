//! Decoding: framing by the fixed header, then every packet's variable header and payload.
//!
//! Framing comes first and is cheap: the first byte is checked as soon as it arrives (packet
//! type, flags [MQTT-2.2.2]) and the size as soon as the remaining length is complete, so a
//! bad or oversized packet is refused before its body is buffered. A complete packet is split
//! off the buffer and frozen; its fields are then read with checked reads only, and must use
//! up the remaining length exactly.
//!
//! Where the specifications leave the error class open, the choices are:
//! - a reason code not listed for the packet type (a PUBREL with 0x10, a CONNACK with 0x04),
//!   or a 3.x return code outside the table, is a Malformed Packet: it cannot be read as any
//!   value the packet defines;
//! - SUBSCRIBE / UNSUBSCRIBE without filters and SUBACK / UNSUBACK without codes are Protocol
//!   Errors on every version ([MQTT-3.8.3-3], [MQTT-3.10.3-2]);
//! - an empty PUBLISH topic is a Protocol Error on MQTT 5 without a Topic Alias, a Malformed
//!   Packet on 3.x; wildcards in it are Topic Name invalid;
//! - rules that depend on who sent the packet (a client PUBLISH must not carry a Subscription
//!   Identifier, a Topic Alias must not exceed the maximum announced) are the connection's to
//!   check: the codec decodes both directions alike.

use std::num::NonZeroU16;

use bytes::{Buf, BytesMut};

use super::properties::{self, Ctx};
use super::reader::Reader;
use super::{varint, DecodeError, Limits};
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PacketId, Protocol, PubResponse, Publish,
    QoS, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::reason::{self, ReasonCode};
use crate::topic::TopicName;

/// The most capacity reserved ahead for an incomplete packet: a peer's announced length is a
/// claim, not bytes, so larger packets grow the buffer as they actually arrive.
const RESERVE_CAP: usize = 1 << 20;

fn malformed(what: &'static str) -> DecodeError {
    DecodeError::MalformedPacket(what)
}

pub(super) fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first_byte(first, limits.protocol)?;
    let Some((remaining, len_bytes)) = varint::read(buf.get(1..).unwrap_or_default())? else {
        return Ok(None);
    };
    let header_len = 1 + len_bytes;
    let total = header_len + remaining as usize;
    if let Some(max) = limits.max_packet_size {
        if total > max as usize {
            return Err(DecodeError::PacketTooLarge { size: total, max });
        }
    }
    if buf.len() < total {
        buf.reserve((total - buf.len()).min(RESERVE_CAP));
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(header_len);
    decode_body(first, Reader::new(frame), limits.protocol).map(Some)
}

/// Checks the packet type and the fixed header flags ([MQTT-2.2.2-1/2], [MQTT-3.3.1-2/4]).
fn check_first_byte(first: u8, protocol: Protocol) -> Result<(), DecodeError> {
    let flags = first & 0x0F;
    match first >> 4 {
        0 => Err(malformed("packet type 0 is reserved")),
        3 => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                Err(malformed("PUBLISH with QoS 3"))
            } else if qos == 0 && flags & 0x08 != 0 {
                Err(malformed("DUP set on a QoS 0 PUBLISH"))
            } else {
                Ok(())
            }
        }
        15 if !protocol.is_v5() => Err(malformed("AUTH before MQTT 5")),
        6 | 8 | 10 if flags != 0x02 => Err(malformed("fixed header flags must be 0010")),
        6 | 8 | 10 => Ok(()),
        _ if flags != 0 => Err(malformed("fixed header flags must be 0000")),
        _ => Ok(()),
    }
}

fn decode_body(first: u8, r: Reader, protocol: Protocol) -> Result<Packet, DecodeError> {
    let packet = match first >> 4 {
        1 => Packet::Connect(Box::new(connect(r)?)),
        2 => Packet::ConnAck(connack(r, protocol)?),
        3 => Packet::Publish(publish(first, r, protocol)?),
        4 => Packet::PubAck(pub_response(r, protocol, reason::PUBACK_CODES)?),
        5 => Packet::PubRec(pub_response(r, protocol, reason::PUBACK_CODES)?),
        6 => Packet::PubRel(pub_response(r, protocol, reason::PUBREL_CODES)?),
        7 => Packet::PubComp(pub_response(r, protocol, reason::PUBREL_CODES)?),
        8 => Packet::Subscribe(subscribe(r, protocol)?),
        9 => Packet::SubAck(suback(r, protocol)?),
        10 => Packet::Unsubscribe(unsubscribe(r, protocol)?),
        11 => Packet::UnsubAck(unsuback(r, protocol)?),
        12 => {
            r.finish("PINGREQ with a body")?;
            Packet::PingReq
        }
        13 => {
            r.finish("PINGRESP with a body")?;
            Packet::PingResp
        }
        14 => Packet::Disconnect(disconnect(r, protocol)?),
        15 => Packet::Auth(auth(r)?),
        _ => return Err(malformed("packet type 0 is reserved")),
    };
    Ok(packet)
}

fn packet_id(r: &mut Reader) -> Result<PacketId, DecodeError> {
    NonZeroU16::new(r.u16("packet identifier")?).ok_or(malformed("packet identifier 0"))
}

/// Reads a reason code that must be one of `allowed`; another is a Malformed Packet.
fn reason_code(
    r: &mut Reader,
    allowed: &[ReasonCode],
    what: &'static str,
) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(r.u8(what)?);
    if allowed.contains(&code) {
        Ok(code)
    } else {
        Err(malformed(what))
    }
}

/// Reads the property block of an MQTT 5 packet; nothing on 3.x.
fn props_if_v5(
    r: &mut Reader,
    protocol: Protocol,
    ctx: Ctx,
) -> Result<Option<Box<crate::packet::Properties>>, DecodeError> {
    if protocol.is_v5() {
        properties::decode(r, ctx)
    } else {
        Ok(None)
    }
}

/// CONNECT: read in the version it names, whatever the connection's `Limits` say.
fn connect(mut r: Reader) -> Result<Connect, DecodeError> {
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    let protocol = match (name.as_ref(), level) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQTT", 5) => Protocol::V5,
        (b"MQIsdp", 3) => Protocol::V31,
        _ => {
            return Err(DecodeError::UnsupportedProtocolVersion {
                name: String::from_utf8_lossy(&name).into_owned(),
                level,
            })
        }
    };
    connect_body(r, protocol).map_err(|source| DecodeError::InConnect {
        protocol,
        source: Box::new(source),
    })
}

fn connect_body(mut r: Reader, protocol: Protocol) -> Result<Connect, DecodeError> {
    let v5 = protocol.is_v5();
    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        return Err(malformed("reserved connect flag set"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(malformed("will QoS or will retain without the will flag"));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(malformed("will QoS 3"))?;
    if password_flag && !username_flag && !v5 {
        return Err(malformed("password flag without user name flag"));
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = props_if_v5(&mut r, protocol, Ctx::Connect)?;
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let properties = props_if_v5(&mut r, protocol, Ctx::Will)?;
        let topic = r
            .topic_name("will topic")?
            .ok_or(malformed("empty will topic"))?;
        let payload = r.binary("will payload")?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = match username_flag {
        true => Some(r.string("user name")?),
        false => None,
    };
    let password = match password_flag {
        true => Some(r.binary("password")?),
        false => None,
    };
    r.finish("CONNECT longer than its fields")?;
    Ok(Connect {
        protocol,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(mut r: Reader, protocol: Protocol) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("connack flags")?;
    // 3.1 has no Session Present: the whole byte is reserved, and ignored.
    let session_present = match protocol {
        Protocol::V31 => false,
        Protocol::V311 | Protocol::V5 => {
            if flags & 0xFE != 0 {
                return Err(malformed("reserved CONNACK flags set"));
            }
            flags & 0x01 != 0
        }
    };
    let code = if protocol.is_v5() {
        reason_code(&mut r, reason::CONNACK_CODES, "CONNACK reason code")?
    } else {
        ReasonCode::from_v3_connack(r.u8("CONNACK return code")?)
            .ok_or(malformed("CONNACK return code"))?
    };
    if session_present && code != ReasonCode::SUCCESS {
        return Err(DecodeError::ProtocolError(
            "Session Present on a refused connection",
        ));
    }
    let properties = props_if_v5(&mut r, protocol, Ctx::ConnAck)?;
    r.finish("CONNACK longer than its fields")?;
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

fn publish(first: u8, mut r: Reader, protocol: Protocol) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((first >> 1) & 0x03).ok_or(malformed("PUBLISH with QoS 3"))?;
    let topic = r.topic_name("topic name")?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(packet_id(&mut r)?),
    };
    let properties = props_if_v5(&mut r, protocol, Ctx::Publish)?;
    let topic = match topic {
        Some(topic) => topic,
        None if !protocol.is_v5() => return Err(malformed("empty topic name")),
        None if properties.as_ref().and_then(|p| p.topic_alias).is_some() => TopicName::empty(),
        None => {
            return Err(DecodeError::ProtocolError(
                "empty topic name without a Topic Alias",
            ))
        }
    };
    Ok(Publish {
        dup: first & 0x08 != 0,
        qos,
        retain: first & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. MQTT 5 may leave out the properties (remaining length 3)
/// or the reason code too (remaining length 2: Success).
fn pub_response(
    mut r: Reader,
    protocol: Protocol,
    allowed: &[ReasonCode],
) -> Result<PubResponse, DecodeError> {
    let packet_id = packet_id(&mut r)?;
    let mut reason = ReasonCode::SUCCESS;
    let mut properties = None;
    if protocol.is_v5() && !r.is_empty() {
        reason = reason_code(&mut r, allowed, "reason code not valid for this packet")?;
        if !r.is_empty() {
            properties = properties::decode(&mut r, Ctx::PubResponse)?;
        }
    }
    r.finish("acknowledgement longer than its fields")?;
    Ok(PubResponse {
        packet_id,
        reason,
        properties,
    })
}

fn subscription_options(byte: u8, protocol: Protocol) -> Result<SubscriptionOptions, DecodeError> {
    // QoS 3 is malformed in 3.1.1 ([MQTT-3-8.3-4]) and a Protocol Error in 5.0 (§3.8.3.1).
    let qos = QoS::from_u8(byte & 0x03).ok_or(if protocol.is_v5() {
        DecodeError::ProtocolError("subscription QoS 3")
    } else {
        malformed("subscription QoS 3")
    })?;
    if !protocol.is_v5() {
        if byte & 0xFC != 0 {
            return Err(malformed("reserved subscription option bits set"));
        }
        return Ok(SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        });
    }
    if byte & 0xC0 != 0 {
        return Err(malformed("reserved subscription option bits set"));
    }
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        // §3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
        _ => return Err(DecodeError::ProtocolError("retain handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

fn subscribe(mut r: Reader, protocol: Protocol) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(&mut r)?;
    let properties = props_if_v5(&mut r, protocol, Ctx::Subscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.topic_filter("topic filter")?;
        let options = subscription_options(r.u8("subscription options")?, protocol)?;
        if options.no_local && filter.shared_group().is_some() {
            return Err(DecodeError::ProtocolError(
                "No Local on a shared subscription",
            ));
        }
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::ProtocolError(
            "SUBSCRIBE without topic filters",
        ));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn suback(mut r: Reader, protocol: Protocol) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(&mut r)?;
    let properties = props_if_v5(&mut r, protocol, Ctx::SubAck)?;
    let allowed = if protocol.is_v5() {
        reason::SUBACK_CODES
    } else {
        reason::V3_SUBACK_CODES
    };
    let mut reasons = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        reasons.push(reason_code(&mut r, allowed, "SUBACK reason code")?);
    }
    if reasons.is_empty() {
        return Err(DecodeError::ProtocolError("SUBACK without reason codes"));
    }
    Ok(SubAck {
        packet_id,
        properties,
        reasons,
    })
}

fn unsubscribe(mut r: Reader, protocol: Protocol) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(&mut r)?;
    let properties = props_if_v5(&mut r, protocol, Ctx::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.topic_filter("topic filter")?);
    }
    if filters.is_empty() {
        return Err(DecodeError::ProtocolError(
            "UNSUBSCRIBE without topic filters",
        ));
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn unsuback(mut r: Reader, protocol: Protocol) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(&mut r)?;
    let mut reasons = Vec::new();
    let mut properties = None;
    if protocol.is_v5() {
        properties = properties::decode(&mut r, Ctx::UnsubAck)?;
        reasons.reserve(r.remaining());
        while !r.is_empty() {
            reasons.push(reason_code(
                &mut r,
                reason::UNSUBACK_CODES,
                "UNSUBACK reason code",
            )?);
        }
        if reasons.is_empty() {
            return Err(DecodeError::ProtocolError("UNSUBACK without reason codes"));
        }
    }
    r.finish("UNSUBACK longer than its fields")?;
    Ok(UnsubAck {
        packet_id,
        properties,
        reasons,
    })
}

/// DISCONNECT. MQTT 5 may leave out the properties (remaining length 1) or everything
/// (remaining length 0: Normal disconnection).
fn disconnect(mut r: Reader, protocol: Protocol) -> Result<Disconnect, DecodeError> {
    let mut reason = ReasonCode::NORMAL_DISCONNECTION;
    let mut properties = None;
    if protocol.is_v5() && !r.is_empty() {
        reason = reason_code(&mut r, reason::DISCONNECT_CODES, "DISCONNECT reason code")?;
        if !r.is_empty() {
            properties = properties::decode(&mut r, Ctx::Disconnect)?;
        }
    }
    r.finish("DISCONNECT longer than its fields")?;
    Ok(Disconnect { reason, properties })
}

/// AUTH (MQTT 5 only: the first byte check refuses it on 3.x). Remaining length 0 is Success.
fn auth(mut r: Reader) -> Result<Auth, DecodeError> {
    let mut reason = ReasonCode::SUCCESS;
    let mut properties = None;
    if !r.is_empty() {
        reason = reason_code(&mut r, reason::AUTH_CODES, "AUTH reason code")?;
        if !r.is_empty() {
            properties = properties::decode(&mut r, Ctx::Auth)?;
        }
    }
    r.finish("AUTH longer than its fields")?;
    Ok(Auth { reason, properties })
}
