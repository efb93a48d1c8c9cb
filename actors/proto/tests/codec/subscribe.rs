//! SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK ([MQTT-3.8] to [MQTT-3.11]).

use starling_proto::{
    DecodeError, Packet, ReasonCode, RetainHandling, SubAck, SubscriptionOptions, UnsubAck,
};

use crate::*;

#[test]
fn subscribe_v311_specification_example() {
    let bytes = [
        0x82, 0x0E, // SUBSCRIBE, remaining length 14
        0x00, 0x0A, // packet identifier 10
        0x00, 0x03, b'a', b'/', b'b', 0x01, // "a/b" QoS 1
        0x00, 0x03, b'c', b'/', b'#', 0x02, // "c/#" QoS 2
    ];
    for protocol in [V31, V311] {
        let Packet::Subscribe(s) = decode_same(&bytes, protocol) else {
            panic!()
        };
        assert_eq!(s.packet_id, pid(10));
        assert_eq!(s.filters.len(), 2);
        assert_eq!(s.filters[0].0.as_str(), "a/b");
        assert_eq!(s.filters[0].1.qos, starling_proto::QoS::AtLeastOnce);
        assert_eq!(s.filters[1].0.as_str(), "c/#");
        assert_eq!(s.filters[1].1.qos, starling_proto::QoS::ExactlyOnce);
    }
}

#[test]
fn subscribe_v5_with_identifier_and_options() {
    let bytes = [
        0x82, 0x09, // SUBSCRIBE, remaining length 9
        0x00, 0x01, // packet identifier 1
        0x02, 0x0B, 0x05, // properties: subscription identifier 5
        0x00, 0x01, b'a', // "a"
        0x2D, // retain handling 2, retain as published, no local, QoS 1
    ];
    let Packet::Subscribe(s) = decode_same(&bytes, V5) else {
        panic!()
    };
    assert_eq!(s.properties.unwrap().subscription_identifiers, vec![5]);
    assert_eq!(
        s.filters[0].1,
        SubscriptionOptions {
            qos: starling_proto::QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        }
    );
}

/// SUBSCRIBE with packet id 1, (v5: empty properties) and the given payload.
fn subscribe(protocol: Protocol, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    if protocol == V5 {
        body.push(0x00);
    }
    body.extend_from_slice(payload);
    frame(0x82, &body)
}

#[test]
fn malformed_subscribes() {
    for protocol in [V311, V5] {
        // No filters: a protocol error [MQTT-3.8.3-3].
        let err = decode_err(&subscribe(protocol, &[]), protocol);
        assert!(matches!(err, DecodeError::ProtocolError(_)));
        // Reserved bits are malformed [MQTT-3.8.3-5].
        for options in [0xC0, 0x40] {
            let mut payload = s(b"a");
            payload.push(options);
            let err = decode_err(&subscribe(protocol, &payload), protocol);
            assert!(
                matches!(err, DecodeError::MalformedPacket(_)),
                "{options:02X}"
            );
        }
        // QoS 3: malformed in 3.1.1 [MQTT-3-8.3-4], a protocol error in 5.0 (§3.8.3.1).
        let mut payload = s(b"a");
        payload.push(0x03);
        let err = decode_err(&subscribe(protocol, &payload), protocol);
        if protocol == V5 {
            assert!(matches!(err, DecodeError::ProtocolError(_)), "{err:?}");
        } else {
            assert!(matches!(err, DecodeError::MalformedPacket(_)), "{err:?}");
        }
        // Filter without options byte.
        let err = decode_err(&subscribe(protocol, &s(b"a")), protocol);
        assert!(matches!(err, DecodeError::MalformedPacket(_)));
        // Invalid filters map to Malformed Packet.
        for filter in [&b"a/#/b"[..], b"a+", b"", b"$share/g", b"$share//a"] {
            let mut payload = s(filter);
            payload.push(0x00);
            let err = decode_err(&subscribe(protocol, &payload), protocol);
            assert!(
                matches!(err, DecodeError::TopicFilterInvalid(_)),
                "{filter:?}"
            );
            assert_eq!(err.reason_code(), ReasonCode::MALFORMED_PACKET);
        }
        // Flags must be 0010.
        assert!(matches!(
            decode_err(&[0x80], protocol),
            DecodeError::MalformedPacket(_)
        ));
    }
    // On 3.x the upper six option bits are reserved.
    for options in [0x04, 0x08, 0x10] {
        let mut payload = s(b"a");
        payload.push(options);
        let err = decode_err(&subscribe(V311, &payload), V311);
        assert!(matches!(err, DecodeError::MalformedPacket(_)));
    }
    // On 5.0 retain handling 3 is a protocol error (§3.8.3.1), and so is No Local on a shared
    // subscription.
    let mut payload = s(b"a");
    payload.push(0x30);
    assert!(matches!(
        decode_err(&subscribe(V5, &payload), V5),
        DecodeError::ProtocolError(_)
    ));
    let mut payload = s(b"$share/g/a");
    payload.push(0x04);
    assert!(matches!(
        decode_err(&subscribe(V5, &payload), V5),
        DecodeError::ProtocolError(_)
    ));
    // Two subscription identifiers.
    let bytes = frame(
        0x82,
        &[
            0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00,
        ],
    );
    assert!(matches!(
        decode_err(&bytes, V5),
        DecodeError::ProtocolError(_)
    ));
}

#[test]
fn shared_subscriptions_decode() {
    let mut payload = s(b"$share/g/a/+");
    payload.push(0x01);
    let Packet::Subscribe(sub) = decode_same(&subscribe(V5, &payload), V5) else {
        panic!()
    };
    assert_eq!(sub.filters[0].0.shared_group(), Some("g"));
    assert_eq!(sub.filters[0].0.matching_filter(), "a/+");
}

#[test]
fn suback_v3_and_v5() {
    let Packet::SubAck(ack) = decode_same(&[0x90, 0x05, 0x00, 0x0A, 0x00, 0x01, 0x80], V311) else {
        panic!()
    };
    assert_eq!(
        ack.reasons,
        [
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::UNSPECIFIED_ERROR
        ]
    );
    // 3.x knows only 0, 1, 2 and 0x80; any failure is sent as 0x80.
    let err = decode_err(&[0x90, 0x03, 0x00, 0x0A, 0x87], V311);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
    let refused = Packet::SubAck(SubAck {
        packet_id: pid(10),
        properties: None,
        reasons: vec![ReasonCode::GRANTED_QOS_2, ReasonCode::NOT_AUTHORIZED],
    });
    assert_eq!(
        encode_vec(&refused, V311),
        [0x90, 0x04, 0x00, 0x0A, 0x02, 0x80]
    );
    assert_eq!(
        encode_vec(&refused, V5),
        [0x90, 0x05, 0x00, 0x0A, 0x00, 0x02, 0x87]
    );
    // v5 with a reason string.
    let bytes = [
        0x90, 0x09, 0x00, 0x0A, 0x04, 0x1F, 0x00, 0x01, b'x', 0x9E, 0xA2,
    ];
    let Packet::SubAck(ack) = decode_same(&bytes, V5) else {
        panic!()
    };
    assert_eq!(
        ack.reasons,
        [
            ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
            ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
        ]
    );
    // Not a SUBACK code; no codes at all.
    assert!(matches!(
        decode_err(&[0x90, 0x04, 0x00, 0x0A, 0x00, 0x92], V5),
        DecodeError::MalformedPacket(_)
    ));
    assert!(matches!(
        decode_err(&[0x90, 0x03, 0x00, 0x0A, 0x00], V5),
        DecodeError::ProtocolError(_)
    ));
    assert!(matches!(
        decode_err(&[0x90, 0x02, 0x00, 0x0A], V311),
        DecodeError::ProtocolError(_)
    ));
}

#[test]
fn unsubscribe_and_unsuback() {
    let bytes = [
        0xA2, 0x0A, 0x00, 0x02, 0x00, 0x01, b'a', 0x00, 0x03, b'b', b'/', b'#',
    ];
    let Packet::Unsubscribe(u) = decode_same(&bytes, V311) else {
        panic!()
    };
    assert_eq!(u.packet_id, pid(2));
    assert_eq!(
        u.filters.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        ["a", "b/#"]
    );
    let v5 = [0xA2, 0x06, 0x00, 0x02, 0x00, 0x00, 0x01, b'a'];
    assert!(matches!(decode_same(&v5, V5), Packet::Unsubscribe(_)));
    // No filters; bad filter; wrong flags.
    assert!(matches!(
        decode_err(&[0xA2, 0x02, 0x00, 0x02], V311),
        DecodeError::ProtocolError(_)
    ));
    assert!(matches!(
        decode_err(&[0xA2, 0x03, 0x00, 0x02, 0x00], V5),
        DecodeError::ProtocolError(_)
    ));
    let err = decode_err(&[0xA2, 0x06, 0x00, 0x02, 0x00, 0x01, b'#', 0x00], V311);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
    let err = decode_err(&[0xA2, 0x06, 0x00, 0x02, 0x00, 0x02, b'#', b'a'], V311);
    assert!(matches!(err, DecodeError::TopicFilterInvalid(_)));
    assert!(matches!(
        decode_err(&[0xA0], V311),
        DecodeError::MalformedPacket(_)
    ));

    // UNSUBACK: 3.x has no payload, 5.0 one reason per filter.
    let Packet::UnsubAck(ack) = decode_same(&[0xB0, 0x02, 0x00, 0x02], V311) else {
        panic!()
    };
    assert!(ack.reasons.is_empty());
    let with_reasons = Packet::UnsubAck(UnsubAck {
        packet_id: pid(2),
        properties: None,
        reasons: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
    });
    assert_eq!(encode_vec(&with_reasons, V311), [0xB0, 0x02, 0x00, 0x02]);
    assert_eq!(
        encode_vec(&with_reasons, V5),
        [0xB0, 0x05, 0x00, 0x02, 0x00, 0x00, 0x11]
    );
    assert_eq!(
        decode_one(&[0xB0, 0x05, 0x00, 0x02, 0x00, 0x00, 0x11], V5),
        with_reasons
    );
    assert!(matches!(
        decode_err(&[0xB0, 0x03, 0x00, 0x02, 0x00], V311),
        DecodeError::MalformedPacket(_)
    ));
    assert!(matches!(
        decode_err(&[0xB0, 0x04, 0x00, 0x02, 0x00, 0x01], V5),
        DecodeError::MalformedPacket(_)
    ));
}
