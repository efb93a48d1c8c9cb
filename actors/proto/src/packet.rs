//! One `Packet` model for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Version differences live in the codec, not here: a field that only MQTT 5 carries
//! (properties, most reason codes) is simply absent or default when a 3.x peer is on the line.
//! Rare, large variants (`Connect`) are boxed so the common `Packet` stays small; properties
//! are boxed and optional because most packets carry none.

use std::num::NonZeroU16;

use bytes::Bytes;

use crate::reason::ReasonCode;
use crate::topic::{TopicFilter, TopicName};

/// A packet identifier: never zero on the wire ([MQTT-2.2.1-3]), so the type says so.
pub type PacketId = NonZeroU16;

/// The protocol spoken on a connection, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl Protocol {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Protocol::V31 => 3,
            Protocol::V311 => 4,
            Protocol::V5 => 5,
        }
    }

    /// The protocol name of CONNECT.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V31 => "MQIsdp",
            Protocol::V311 | Protocol::V5 => "MQTT",
        }
    }

    /// True for MQTT 5, the only version with properties, reason codes on acks and AUTH.
    pub fn is_v5(self) -> bool {
        self == Protocol::V5
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::V31 => "3.1",
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5.0",
        })
    }
}

/// Quality of service of a message or the maximum granted to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a two-bit wire value; 3 is not a QoS ([MQTT-3.3.1-4]).
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Every MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT: the first packet from a client.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK: QoS 1 acknowledgement.
    PubAck(PubResponse),
    /// PUBREC: QoS 2, part 1.
    PubRec(PubResponse),
    /// PUBREL: QoS 2, part 2.
    PubRel(PubResponse),
    /// PUBCOMP: QoS 2, part 3.
    PubComp(PubResponse),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT (from either side in MQTT 5).
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

impl Packet {
    /// The packet's type name as the specifications spell it, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol name and level, which fix how every later packet is read.
    pub protocol: Protocol,
    /// Clean Session (3.x) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns the client's keep alive off.
    pub keep_alive: u16,
    /// The client identifier; may be empty (the broker then assigns one or refuses).
    pub client_id: String,
    /// The will message, if the Will Flag is set.
    pub will: Option<LastWill>,
    /// User Name, if its flag is set.
    pub username: Option<String>,
    /// Password, if its flag is set: binary data, never logged.
    pub password: Option<Bytes>,
    /// CONNECT properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

/// A will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will Topic: a topic name, never a filter.
    pub topic: TopicName,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will properties (MQTT 5 only): delay interval, expiry, content type, ...
    pub properties: Option<Box<Properties>>,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// The v5 reason code; 3.x return codes are mapped to and from it in `reason`.
    pub code: ReasonCode,
    /// CONNACK properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this may be a re-delivery. Always false for QoS 0 ([MQTT-3.3.1-2]).
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic Name. Empty only on MQTT 5 when a Topic Alias property stands in for it
    /// ([MQTT-3.3.2-1] allows nothing else); the receiver resolves the alias.
    pub topic: TopicName,
    /// Packet Identifier: `Some` exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
    /// Application payload.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    /// The packet identifier being acknowledged.
    pub packet_id: PacketId,
    /// Reason code (MQTT 5); `SUCCESS` on 3.x.
    pub reason: ReasonCode,
    /// Properties (MQTT 5 only): reason string, user properties.
    pub properties: Option<Box<Properties>>,
}

impl PubResponse {
    /// A successful acknowledgement without properties.
    pub fn success(packet_id: PacketId) -> PubResponse {
        PubResponse {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: None,
        }
    }
}

/// Retain Handling subscription option (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription does not already exist.
    SendIfNew = 1,
    /// 2: never send retained messages for this subscription.
    DoNotSend = 2,
}

/// The options byte of one SUBSCRIBE entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the subscriber accepts.
    pub qos: QoS,
    /// No Local (MQTT 5): do not send the client's own publications back to it.
    pub no_local: bool,
    /// Retain As Published (MQTT 5): keep the RETAIN flag of forwarded messages.
    pub retain_as_published: bool,
    /// Retain Handling (MQTT 5).
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (MQTT 5 only): subscription identifier, user properties.
    pub properties: Option<Box<Properties>>,
    /// At least one filter with its options ([MQTT-3.8.3-3]).
    pub filters: Vec<(TopicFilter, SubscriptionOptions)>,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
    /// One code per filter, in order: `GRANTED_QOS_0..2` or a failure code.
    pub reasons: Vec<ReasonCode>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (MQTT 5 only): user properties.
    pub properties: Option<Box<Properties>>,
    /// At least one filter ([MQTT-3.10.3-2]).
    pub filters: Vec<TopicFilter>,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
    /// One code per filter (MQTT 5); empty on 3.x, whose UNSUBACK has no payload.
    pub reasons: Vec<ReasonCode>,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Reason code (MQTT 5); `NORMAL_DISCONNECTION` on 3.x.
    pub reason: ReasonCode,
    /// Properties (MQTT 5 only): session expiry, reason string, server reference.
    pub properties: Option<Box<Properties>>,
}

impl Disconnect {
    /// A DISCONNECT with a reason code and no properties.
    pub fn with_reason(reason: ReasonCode) -> Disconnect {
        Disconnect {
            reason,
            properties: None,
        }
    }
}

/// AUTH (MQTT 5 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// `SUCCESS`, `CONTINUE_AUTHENTICATION` or `RE_AUTHENTICATE`.
    pub reason: ReasonCode,
    /// Properties: authentication method and data, reason string, user properties.
    pub properties: Option<Box<Properties>>,
}

/// Every MQTT 5 property. Which ones a packet may carry is checked by the decoder
/// (a property where the specification does not allow it is a Malformed Packet);
/// the encoder writes whatever is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// 0x01 Payload Format Indicator (PUBLISH, will): 0 bytes, 1 UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// 0x02 Message Expiry Interval in seconds (PUBLISH, will).
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type (PUBLISH, will).
    pub content_type: Option<String>,
    /// 0x08 Response Topic (PUBLISH, will): a topic name.
    pub response_topic: Option<String>,
    /// 0x09 Correlation Data (PUBLISH, will).
    pub correlation_data: Option<Bytes>,
    /// 0x0B Subscription Identifier: several on PUBLISH, at most one on SUBSCRIBE; never 0.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 Session Expiry Interval in seconds (CONNECT, CONNACK, DISCONNECT).
    pub session_expiry_interval: Option<u32>,
    /// 0x12 Assigned Client Identifier (CONNACK).
    pub assigned_client_identifier: Option<String>,
    /// 0x13 Server Keep Alive in seconds (CONNACK).
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method (CONNECT, CONNACK, AUTH).
    pub authentication_method: Option<String>,
    /// 0x16 Authentication Data (CONNECT, CONNACK, AUTH).
    pub authentication_data: Option<Bytes>,
    /// 0x17 Request Problem Information (CONNECT): 0 or 1.
    pub request_problem_information: Option<u8>,
    /// 0x18 Will Delay Interval in seconds (will).
    pub will_delay_interval: Option<u32>,
    /// 0x19 Request Response Information (CONNECT): 0 or 1.
    pub request_response_information: Option<u8>,
    /// 0x1A Response Information (CONNACK).
    pub response_information: Option<String>,
    /// 0x1C Server Reference (CONNACK, DISCONNECT).
    pub server_reference: Option<String>,
    /// 0x1F Reason String (acks, CONNACK, DISCONNECT, AUTH).
    pub reason_string: Option<String>,
    /// 0x21 Receive Maximum (CONNECT, CONNACK): never 0.
    pub receive_maximum: Option<u16>,
    /// 0x22 Topic Alias Maximum (CONNECT, CONNACK).
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 Topic Alias (PUBLISH): never 0.
    pub topic_alias: Option<u16>,
    /// 0x24 Maximum QoS (CONNACK): 0 or 1.
    pub maximum_qos: Option<u8>,
    /// 0x25 Retain Available (CONNACK): 0 or 1.
    pub retain_available: Option<u8>,
    /// 0x26 User Property: name/value pairs, order kept, repeats allowed.
    pub user_properties: Vec<(String, String)>,
    /// 0x27 Maximum Packet Size (CONNECT, CONNACK): never 0.
    pub maximum_packet_size: Option<u32>,
    /// 0x28 Wildcard Subscription Available (CONNACK): 0 or 1.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 Subscription Identifier Available (CONNACK): 0 or 1.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A Shared Subscription Available (CONNACK): 0 or 1.
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// True when no property is set: such a block is sent as a zero length.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}
