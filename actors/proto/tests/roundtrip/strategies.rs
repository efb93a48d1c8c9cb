//! proptest strategies for valid packets of every kind, per protocol version: only fields the
//! version can carry, only values its rules allow, so `decode(encode(p)) == p` must hold.

use std::num::NonZeroU16;

use bytes::Bytes;
use proptest::option::weighted;
use proptest::prelude::*;
use starling_proto::reason::{
    AUTH_CODES, CONNACK_CODES, DISCONNECT_CODES, PUBACK_CODES, PUBREL_CODES, SUBACK_CODES,
    UNSUBACK_CODES, V3_SUBACK_CODES,
};
use starling_proto::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PacketId, Properties, Protocol,
    PubResponse, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    TopicFilter, TopicName, UnsubAck, Unsubscribe,
};

/// Where a property block sits, to keep only the properties allowed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubResponse,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// A UTF-8 string without U+0000, usually short, sometimes not ASCII.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-zA-Z0-9 _-]{0,8}", 1 => "[^\u{0}]{0,6}"]
}

pub(crate) fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1u16..=u16::MAX).prop_map(|id| NonZeroU16::new(id).unwrap_or(NonZeroU16::MIN))
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z0-9$ ]{0,5}", 1 => "[^+#/\u{0}]{0,3}"]
}

pub(crate) fn topic_name() -> impl Strategy<Value = TopicName> {
    prop::collection::vec(level(), 1..5).prop_filter_map("valid topic name", |levels| {
        TopicName::new(&levels.join("/")).ok()
    })
}

pub(crate) fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    let filter_level = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
    (
        prop::option::weighted(0.2, "[a-z]{1,4}"),
        prop::collection::vec(filter_level, 1..5),
        any::<bool>(),
    )
        .prop_filter_map("valid filter", |(group, mut levels, hash)| {
            if hash {
                levels.push("#".to_owned());
            }
            let filter = levels.join("/");
            let full = match group {
                Some(group) => format!("$share/{group}/{filter}"),
                None => filter,
            };
            TopicFilter::new(&full).ok()
        })
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    weighted(0.15, 0u8..=1)
}

fn some<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    weighted(0.15, s)
}

/// Every property with a valid value, each usually absent.
fn all_properties() -> impl Strategy<Value = Properties> {
    let a = (
        flag(),
        some(any::<u32>()),
        some(text()),
        some(topic_name().prop_map(|t| t.as_str().to_owned())),
        some(binary()),
        prop::collection::vec(1u32..=268_435_455, 0..3),
        some(any::<u32>()),
        some(text()),
    );
    let b = (
        some(any::<u16>()),
        some(text()),
        some(binary()),
        flag(),
        some(any::<u32>()),
        flag(),
        some(text()),
        some(text()),
    );
    let c = (
        some(text()),
        some(1u16..=u16::MAX),
        some(any::<u16>()),
        some(1u16..=u16::MAX),
        flag(),
        flag(),
        prop::collection::vec((text(), text()), 0..3),
        some(1u32..=u32::MAX),
    );
    let d = (flag(), flag(), flag());
    (a, b, c, d).prop_map(|(a, b, c, d)| Properties {
        payload_format_indicator: a.0,
        message_expiry_interval: a.1,
        content_type: a.2,
        response_topic: a.3,
        correlation_data: a.4,
        subscription_identifiers: a.5,
        session_expiry_interval: a.6,
        assigned_client_identifier: a.7,
        server_keep_alive: b.0,
        authentication_method: b.1,
        authentication_data: b.2,
        request_problem_information: b.3,
        will_delay_interval: b.4,
        request_response_information: b.5,
        response_information: b.6,
        server_reference: b.7,
        reason_string: c.0,
        receive_maximum: c.1,
        topic_alias_maximum: c.2,
        topic_alias: c.3,
        maximum_qos: c.4,
        retain_available: c.5,
        user_properties: c.6,
        maximum_packet_size: c.7,
        wildcard_subscription_available: d.0,
        subscription_identifier_available: d.1,
        shared_subscription_available: d.2,
    })
}

/// Keeps only the properties MQTT 5 allows in `ctx`; `None` when nothing is left.
fn restrict(all: Properties, ctx: Ctx) -> Option<Box<Properties>> {
    let mut p = Properties {
        user_properties: all.user_properties,
        ..Properties::default()
    };
    match ctx {
        Ctx::Publish | Ctx::Will => {
            p.payload_format_indicator = all.payload_format_indicator;
            p.message_expiry_interval = all.message_expiry_interval;
            p.content_type = all.content_type;
            p.response_topic = all.response_topic;
            p.correlation_data = all.correlation_data;
            if ctx == Ctx::Publish {
                p.subscription_identifiers = all.subscription_identifiers;
                p.topic_alias = all.topic_alias;
            } else {
                p.will_delay_interval = all.will_delay_interval;
            }
        }
        Ctx::Connect | Ctx::ConnAck => {
            p.session_expiry_interval = all.session_expiry_interval;
            p.authentication_method = all.authentication_method;
            p.authentication_data = all.authentication_data;
            p.receive_maximum = all.receive_maximum;
            p.topic_alias_maximum = all.topic_alias_maximum;
            p.maximum_packet_size = all.maximum_packet_size;
            if ctx == Ctx::Connect {
                p.request_problem_information = all.request_problem_information;
                p.request_response_information = all.request_response_information;
            } else {
                p.assigned_client_identifier = all.assigned_client_identifier;
                p.server_keep_alive = all.server_keep_alive;
                p.response_information = all.response_information;
                p.server_reference = all.server_reference;
                p.reason_string = all.reason_string;
                p.maximum_qos = all.maximum_qos;
                p.retain_available = all.retain_available;
                p.wildcard_subscription_available = all.wildcard_subscription_available;
                p.subscription_identifier_available = all.subscription_identifier_available;
                p.shared_subscription_available = all.shared_subscription_available;
            }
        }
        Ctx::PubResponse | Ctx::SubAck | Ctx::UnsubAck => p.reason_string = all.reason_string,
        Ctx::Subscribe => {
            p.subscription_identifiers = all.subscription_identifiers.into_iter().take(1).collect()
        }
        Ctx::Unsubscribe => {}
        Ctx::Disconnect => {
            p.session_expiry_interval = all.session_expiry_interval;
            p.server_reference = all.server_reference;
            p.reason_string = all.reason_string;
        }
        Ctx::Auth => {
            p.authentication_method = all.authentication_method;
            p.authentication_data = all.authentication_data;
            p.reason_string = all.reason_string;
        }
    }
    (!p.is_empty()).then(|| Box::new(p))
}

/// Properties for `ctx` on `protocol`: always `None` before MQTT 5.
pub(crate) fn properties(
    protocol: Protocol,
    ctx: Ctx,
) -> impl Strategy<Value = Option<Box<Properties>>> {
    all_properties().prop_map(move |all| {
        if protocol.is_v5() {
            restrict(all, ctx)
        } else {
            None
        }
    })
}

fn code_from(codes: &'static [ReasonCode]) -> impl Strategy<Value = ReasonCode> {
    prop::sample::select(codes)
}

fn connect(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        properties(protocol, Ctx::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        prop::option::of(will),
        prop::option::of(text()),
        prop::option::of(binary()),
        properties(protocol, Ctx::Connect),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // Before MQTT 5 a password needs a user name [MQTT-3.1.2-22].
                let password = if protocol.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let code = if protocol.is_v5() {
        code_from(CONNACK_CODES).boxed()
    } else {
        (0u8..=5)
            .prop_map(|c| ReasonCode::from_v3_connack(c).unwrap_or(ReasonCode::SUCCESS))
            .boxed()
    };
    (any::<bool>(), code, properties(protocol, Ctx::ConnAck)).prop_map(
        move |(present, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: present
                    && code == ReasonCode::SUCCESS
                    && protocol != Protocol::V31,
                code,
                properties,
            })
        },
    )
}

fn publish(protocol: Protocol) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        packet_id(),
        properties(protocol, Ctx::Publish),
        binary(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, alias_only, id, mut properties, payload)| {
                let mut topic = topic;
                // MQTT 5: an empty topic stands for a Topic Alias.
                if protocol.is_v5() && alias_only {
                    let p = properties.get_or_insert_with(Box::default);
                    p.topic_alias.get_or_insert(1);
                    topic = TopicName::empty();
                }
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic,
                    packet_id: (qos != QoS::AtMostOnce).then_some(id),
                    properties,
                    payload,
                })
            },
        )
}

fn pub_response(
    protocol: Protocol,
    codes: &'static [ReasonCode],
) -> impl Strategy<Value = PubResponse> {
    (
        packet_id(),
        code_from(codes),
        properties(protocol, Ctx::PubResponse),
    )
        .prop_map(move |(packet_id, reason, properties)| PubResponse {
            packet_id,
            reason: if protocol.is_v5() {
                reason
            } else {
                ReasonCode::SUCCESS
            },
            properties,
        })
}

fn options(protocol: Protocol) -> impl Strategy<Value = SubscriptionOptions> {
    let handling = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (qos(), any::<bool>(), any::<bool>(), handling).prop_map(move |(qos, nl, rap, rh)| {
        if protocol.is_v5() {
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            }
        }
    })
}

fn subscribe(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let entry = (topic_filter(), options(protocol)).prop_map(|(filter, mut options)| {
        // No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
        if filter.shared_group().is_some() {
            options.no_local = false;
        }
        (filter, options)
    });
    (
        packet_id(),
        properties(protocol, Ctx::Subscribe),
        prop::collection::vec(entry, 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let codes = if protocol.is_v5() {
        SUBACK_CODES
    } else {
        V3_SUBACK_CODES
    };
    (
        packet_id(),
        properties(protocol, Ctx::SubAck),
        prop::collection::vec(code_from(codes), 1..4),
    )
        .prop_map(|(packet_id, properties, reasons)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reasons,
            })
        })
}

fn unsubscribe(protocol: Protocol) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        properties(protocol, Ctx::Unsubscribe),
        prop::collection::vec(topic_filter(), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn unsuback(protocol: Protocol) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        properties(protocol, Ctx::UnsubAck),
        prop::collection::vec(code_from(UNSUBACK_CODES), 1..4),
    )
        .prop_map(move |(packet_id, properties, reasons)| {
            let reasons = if protocol.is_v5() {
                reasons
            } else {
                Vec::new()
            };
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reasons,
            })
        })
}

fn disconnect(protocol: Protocol) -> impl Strategy<Value = Packet> {
    (
        code_from(DISCONNECT_CODES),
        properties(protocol, Ctx::Disconnect),
    )
        .prop_map(move |(reason, properties)| {
            let reason = if protocol.is_v5() {
                reason
            } else {
                ReasonCode::NORMAL_DISCONNECTION
            };
            Packet::Disconnect(Disconnect { reason, properties })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    (code_from(AUTH_CODES), properties(Protocol::V5, Ctx::Auth))
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
}

/// Any valid packet for `protocol`, every kind equally likely.
pub(crate) fn packet(protocol: Protocol) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(protocol),
        connack(protocol),
        publish(protocol),
        pub_response(protocol, PUBACK_CODES).prop_map(Packet::PubAck),
        pub_response(protocol, PUBACK_CODES).prop_map(Packet::PubRec),
        pub_response(protocol, PUBREL_CODES).prop_map(Packet::PubRel),
        pub_response(protocol, PUBREL_CODES).prop_map(Packet::PubComp),
        subscribe(protocol),
        suback(protocol),
        unsubscribe(protocol),
        unsuback(protocol),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(protocol),
    ];
    if protocol.is_v5() {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}
