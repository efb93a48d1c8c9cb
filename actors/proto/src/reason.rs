//! Reason codes: every MQTT 5 reason code, the MQTT 3.x return codes they map to, and the one
//! place where an internal error becomes a code on the wire.
//!
//! MQTT 5 gives one byte several names (0x00 is Success, Normal disconnection and Granted QoS 0),
//! so a reason code is a newtype over the byte with named constants rather than an enum.

use std::fmt;

use crate::codec::DecodeError;

/// An MQTT 5 reason code (also used, mapped, for MQTT 3.x return codes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u8);

macro_rules! reason_codes {
    ($($name:ident = $value:expr, $text:expr;)*) => {
        impl ReasonCode {
            $(
                #[doc = $text]
                pub const $name: ReasonCode = ReasonCode($value);
            )*

            /// The specification's name for this code (the first name where a byte has several).
            pub fn name(self) -> &'static str {
                #[allow(unreachable_patterns)]
                match self.0 {
                    $($value => $text,)*
                    _ => "Unknown reason code",
                }
            }
        }
    };
}

reason_codes! {
    SUCCESS = 0x00, "Success";
    NORMAL_DISCONNECTION = 0x00, "Normal disconnection";
    GRANTED_QOS_0 = 0x00, "Granted QoS 0";
    GRANTED_QOS_1 = 0x01, "Granted QoS 1";
    GRANTED_QOS_2 = 0x02, "Granted QoS 2";
    DISCONNECT_WITH_WILL_MESSAGE = 0x04, "Disconnect with Will Message";
    NO_MATCHING_SUBSCRIBERS = 0x10, "No matching subscribers";
    NO_SUBSCRIPTION_EXISTED = 0x11, "No subscription existed";
    CONTINUE_AUTHENTICATION = 0x18, "Continue authentication";
    RE_AUTHENTICATE = 0x19, "Re-authenticate";
    UNSPECIFIED_ERROR = 0x80, "Unspecified error";
    MALFORMED_PACKET = 0x81, "Malformed Packet";
    PROTOCOL_ERROR = 0x82, "Protocol Error";
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83, "Implementation specific error";
    UNSUPPORTED_PROTOCOL_VERSION = 0x84, "Unsupported Protocol Version";
    CLIENT_IDENTIFIER_NOT_VALID = 0x85, "Client Identifier not valid";
    BAD_USER_NAME_OR_PASSWORD = 0x86, "Bad User Name or Password";
    NOT_AUTHORIZED = 0x87, "Not authorized";
    SERVER_UNAVAILABLE = 0x88, "Server unavailable";
    SERVER_BUSY = 0x89, "Server busy";
    BANNED = 0x8A, "Banned";
    SERVER_SHUTTING_DOWN = 0x8B, "Server shutting down";
    BAD_AUTHENTICATION_METHOD = 0x8C, "Bad authentication method";
    KEEP_ALIVE_TIMEOUT = 0x8D, "Keep Alive timeout";
    SESSION_TAKEN_OVER = 0x8E, "Session taken over";
    TOPIC_FILTER_INVALID = 0x8F, "Topic Filter invalid";
    TOPIC_NAME_INVALID = 0x90, "Topic Name invalid";
    PACKET_IDENTIFIER_IN_USE = 0x91, "Packet Identifier in use";
    PACKET_IDENTIFIER_NOT_FOUND = 0x92, "Packet Identifier not found";
    RECEIVE_MAXIMUM_EXCEEDED = 0x93, "Receive Maximum exceeded";
    TOPIC_ALIAS_INVALID = 0x94, "Topic Alias invalid";
    PACKET_TOO_LARGE = 0x95, "Packet too large";
    MESSAGE_RATE_TOO_HIGH = 0x96, "Message rate too high";
    QUOTA_EXCEEDED = 0x97, "Quota exceeded";
    ADMINISTRATIVE_ACTION = 0x98, "Administrative action";
    PAYLOAD_FORMAT_INVALID = 0x99, "Payload format invalid";
    RETAIN_NOT_SUPPORTED = 0x9A, "Retain not supported";
    QOS_NOT_SUPPORTED = 0x9B, "QoS not supported";
    USE_ANOTHER_SERVER = 0x9C, "Use another server";
    SERVER_MOVED = 0x9D, "Server moved";
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E, "Shared Subscriptions not supported";
    CONNECTION_RATE_EXCEEDED = 0x9F, "Connection rate exceeded";
    MAXIMUM_CONNECT_TIME = 0xA0, "Maximum connect time";
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1, "Subscription Identifiers not supported";
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2, "Wildcard Subscriptions not supported";
}

impl ReasonCode {
    /// Codes below 0x80 report success ([MQTT-2.4]); 0x80 and above report failure.
    pub fn is_success(self) -> bool {
        self.0 < 0x80
    }

    /// This reason as DISCONNECT may carry it: codes DISCONNECT does not allow become the
    /// nearest one it does (bad credentials are "not authorized"; anything else "unspecified").
    pub fn for_disconnect(self) -> ReasonCode {
        if DISCONNECT_CODES.contains(&self) {
            self
        } else if self == ReasonCode::BAD_USER_NAME_OR_PASSWORD {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        }
    }

    /// The MQTT 3.x CONNACK return code for this reason.
    ///
    /// 3.x has six codes; every MQTT 5 failure maps to the nearest of them, so a 3.x client is
    /// told as much as its protocol can say.
    pub fn to_v3_connack(self) -> u8 {
        match self {
            ReasonCode::SUCCESS => 0x00,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => 0x01,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => 0x02,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD | ReasonCode::BAD_AUTHENTICATION_METHOD => 0x04,
            ReasonCode::NOT_AUTHORIZED | ReasonCode::BANNED => 0x05,
            _ => 0x03,
        }
    }

    /// The MQTT 5 reason for a 3.x CONNACK return code, or `None` for a code 3.x does not define.
    pub fn from_v3_connack(code: u8) -> Option<ReasonCode> {
        Some(match code {
            0x00 => ReasonCode::SUCCESS,
            0x01 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            0x02 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            0x03 => ReasonCode::SERVER_UNAVAILABLE,
            0x04 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            0x05 => ReasonCode::NOT_AUTHORIZED,
            _ => return None,
        })
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X} ({})", self.0, self.name())
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Reason codes an MQTT 5 CONNACK may carry (3.2.2.2).
pub const CONNACK_CODES: &[ReasonCode] = &[
    ReasonCode::SUCCESS,
    ReasonCode::UNSPECIFIED_ERROR,
    ReasonCode::MALFORMED_PACKET,
    ReasonCode::PROTOCOL_ERROR,
    ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
    ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
    ReasonCode::BAD_USER_NAME_OR_PASSWORD,
    ReasonCode::NOT_AUTHORIZED,
    ReasonCode::SERVER_UNAVAILABLE,
    ReasonCode::SERVER_BUSY,
    ReasonCode::BANNED,
    ReasonCode::BAD_AUTHENTICATION_METHOD,
    ReasonCode::TOPIC_NAME_INVALID,
    ReasonCode::PACKET_TOO_LARGE,
    ReasonCode::QUOTA_EXCEEDED,
    ReasonCode::PAYLOAD_FORMAT_INVALID,
    ReasonCode::RETAIN_NOT_SUPPORTED,
    ReasonCode::QOS_NOT_SUPPORTED,
    ReasonCode::USE_ANOTHER_SERVER,
    ReasonCode::SERVER_MOVED,
    ReasonCode::CONNECTION_RATE_EXCEEDED,
];

/// Reason codes an MQTT 5 PUBACK or PUBREC may carry (3.4.2.1, 3.5.2.1).
pub const PUBACK_CODES: &[ReasonCode] = &[
    ReasonCode::SUCCESS,
    ReasonCode::NO_MATCHING_SUBSCRIBERS,
    ReasonCode::UNSPECIFIED_ERROR,
    ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
    ReasonCode::NOT_AUTHORIZED,
    ReasonCode::TOPIC_NAME_INVALID,
    ReasonCode::PACKET_IDENTIFIER_IN_USE,
    ReasonCode::QUOTA_EXCEEDED,
    ReasonCode::PAYLOAD_FORMAT_INVALID,
];

/// Reason codes an MQTT 5 PUBREL or PUBCOMP may carry (3.6.2.1, 3.7.2.1).
pub const PUBREL_CODES: &[ReasonCode] =
    &[ReasonCode::SUCCESS, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND];

/// Reason codes an MQTT 5 SUBACK may carry, one per filter (3.9.3).
pub const SUBACK_CODES: &[ReasonCode] = &[
    ReasonCode::GRANTED_QOS_0,
    ReasonCode::GRANTED_QOS_1,
    ReasonCode::GRANTED_QOS_2,
    ReasonCode::UNSPECIFIED_ERROR,
    ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
    ReasonCode::NOT_AUTHORIZED,
    ReasonCode::TOPIC_FILTER_INVALID,
    ReasonCode::PACKET_IDENTIFIER_IN_USE,
    ReasonCode::QUOTA_EXCEEDED,
    ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
    ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
    ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
];

/// Return codes a 3.x SUBACK may carry: the granted QoS or 0x80 Failure.
pub const V3_SUBACK_CODES: &[ReasonCode] = &[
    ReasonCode::GRANTED_QOS_0,
    ReasonCode::GRANTED_QOS_1,
    ReasonCode::GRANTED_QOS_2,
    ReasonCode::UNSPECIFIED_ERROR,
];

/// Reason codes an MQTT 5 UNSUBACK may carry, one per filter (3.11.3).
pub const UNSUBACK_CODES: &[ReasonCode] = &[
    ReasonCode::SUCCESS,
    ReasonCode::NO_SUBSCRIPTION_EXISTED,
    ReasonCode::UNSPECIFIED_ERROR,
    ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
    ReasonCode::NOT_AUTHORIZED,
    ReasonCode::TOPIC_FILTER_INVALID,
    ReasonCode::PACKET_IDENTIFIER_IN_USE,
];

/// Reason codes an MQTT 5 DISCONNECT may carry, from either side (3.14.2.1).
pub const DISCONNECT_CODES: &[ReasonCode] = &[
    ReasonCode::NORMAL_DISCONNECTION,
    ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
    ReasonCode::UNSPECIFIED_ERROR,
    ReasonCode::MALFORMED_PACKET,
    ReasonCode::PROTOCOL_ERROR,
    ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
    ReasonCode::NOT_AUTHORIZED,
    ReasonCode::SERVER_BUSY,
    ReasonCode::SERVER_SHUTTING_DOWN,
    ReasonCode::KEEP_ALIVE_TIMEOUT,
    ReasonCode::SESSION_TAKEN_OVER,
    ReasonCode::TOPIC_FILTER_INVALID,
    ReasonCode::TOPIC_NAME_INVALID,
    ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
    ReasonCode::TOPIC_ALIAS_INVALID,
    ReasonCode::PACKET_TOO_LARGE,
    ReasonCode::MESSAGE_RATE_TOO_HIGH,
    ReasonCode::QUOTA_EXCEEDED,
    ReasonCode::ADMINISTRATIVE_ACTION,
    ReasonCode::PAYLOAD_FORMAT_INVALID,
    ReasonCode::RETAIN_NOT_SUPPORTED,
    ReasonCode::QOS_NOT_SUPPORTED,
    ReasonCode::USE_ANOTHER_SERVER,
    ReasonCode::SERVER_MOVED,
    ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
    ReasonCode::CONNECTION_RATE_EXCEEDED,
    ReasonCode::MAXIMUM_CONNECT_TIME,
    ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
    ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
];

/// Reason codes an AUTH may carry (3.15.2.1).
pub const AUTH_CODES: &[ReasonCode] = &[
    ReasonCode::SUCCESS,
    ReasonCode::CONTINUE_AUTHENTICATION,
    ReasonCode::RE_AUTHENTICATE,
];

impl DecodeError {
    /// The reason code a broker sends (in DISCONNECT or CONNACK) for this decoding failure.
    /// The one mapping from decoding failures to the wire; a 3.x CONNACK takes
    /// [`ReasonCode::to_v3_connack`] of it.
    ///
    /// An invalid topic filter is 0x81 Malformed Packet, not 0x8F: MQTT 5 keeps 0x8F for a
    /// filter that is "correctly formed" but refused by the server.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::MalformedPacket(_) | DecodeError::TopicFilterInvalid(_) => {
                ReasonCode::MALFORMED_PACKET
            }
            DecodeError::ProtocolError(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolVersion { .. } => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            DecodeError::TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::InConnect { source, .. } => source.reason_code(),
        }
    }
}

#[cfg(test)]
mod disconnect_tests {
    use super::*;

    #[test]
    fn codes_disconnect_cannot_carry_are_mapped() {
        assert_eq!(
            ReasonCode::PACKET_TOO_LARGE.for_disconnect(),
            ReasonCode::PACKET_TOO_LARGE
        );
        assert_eq!(
            ReasonCode::BAD_USER_NAME_OR_PASSWORD.for_disconnect(),
            ReasonCode::NOT_AUTHORIZED
        );
        assert_eq!(
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION.for_disconnect(),
            ReasonCode::UNSPECIFIED_ERROR
        );
    }
}
