//! PUBLISH for 3.x and 5.0 ([MQTT-3.3]): flags, topic names, packet ids, properties, aliases.

use bytes::{Bytes, BytesMut};
use starling_proto::{
    decode, DecodeError, Limits, Packet, Properties, Publish, QoS, ReasonCode, TopicName,
};

use crate::*;

#[test]
fn publish_qos0_v311() {
    let bytes = [
        0x30, 0x0A, // PUBLISH QoS 0, remaining length 10
        0x00, 0x03, b'a', b'/', b'b', // topic name
        b'h', b'e', b'l', b'l', b'o', // payload
    ];
    for protocol in [V31, V311] {
        let Packet::Publish(p) = decode_same(&bytes, protocol) else {
            panic!()
        };
        assert_eq!(p.topic.as_str(), "a/b");
        assert_eq!(p.qos, QoS::AtMostOnce);
        assert_eq!(p.packet_id, None);
        assert!(!p.dup && !p.retain);
        assert_eq!(p.payload, Bytes::from_static(b"hello"));
    }
}

#[test]
fn publish_qos1_dup_retain_v311() {
    let bytes = [
        0x3B, 0x07, // PUBLISH DUP, QoS 1, RETAIN
        0x00, 0x01, b't', // topic name
        0x00, 0x0A, // packet identifier 10
        b'h', b'i',
    ];
    let Packet::Publish(p) = decode_same(&bytes, V311) else {
        panic!()
    };
    assert!(p.dup && p.retain);
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert_eq!(p.packet_id, Some(pid(10)));
    // An empty payload is a valid payload.
    let Packet::Publish(p) = decode_same(&[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x01], V311) else {
        panic!()
    };
    assert!(p.payload.is_empty());
}

#[test]
fn publish_qos2_v5_with_properties() {
    let bytes = [
        0x34, 0x1D, // PUBLISH QoS 2, remaining length 29
        0x00, 0x01, b't', // topic name
        0x00, 0x05, // packet identifier 5
        0x14, // properties: 20 bytes
        0x01, 0x01, // payload format indicator
        0x02, 0x00, 0x00, 0x00, 0x3C, // message expiry interval 60
        0x0B, 0x81, 0x01, // subscription identifier 129
        0x23, 0x00, 0x02, // topic alias 2
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', // user property
        b'x', b'y', b'z', // payload
    ];
    let Packet::Publish(p) = decode_same(&bytes, V5) else {
        panic!()
    };
    assert_eq!(p.qos, QoS::ExactlyOnce);
    assert_eq!(p.packet_id, Some(pid(5)));
    let props = p.properties.as_deref().unwrap();
    assert_eq!(props.payload_format_indicator, Some(1));
    assert_eq!(props.message_expiry_interval, Some(60));
    assert_eq!(props.subscription_identifiers, vec![129]);
    assert_eq!(props.topic_alias, Some(2));
    assert_eq!(p.payload, Bytes::from_static(b"xyz"));
    // Several subscription identifiers may be sent to a client.
    let bytes = [
        0x30, 0x0A, 0x00, 0x01, b't', 0x06, 0x0B, 0x01, 0x0B, 0x02, 0x0B, 0x03,
    ];
    let Packet::Publish(p) = decode_same(&bytes, V5) else {
        panic!()
    };
    assert_eq!(
        p.properties.unwrap().subscription_identifiers,
        vec![1, 2, 3]
    );
}

#[test]
fn v5_publish_without_properties_has_an_empty_block() {
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicName::new("t").unwrap(),
        packet_id: None,
        properties: None,
        payload: Bytes::from_static(b"p"),
    });
    assert_eq!(
        encode_vec(&publish, V5),
        [0x30, 0x05, 0x00, 0x01, b't', 0x00, b'p']
    );
    assert_eq!(
        encode_vec(&publish, V311),
        [0x30, 0x04, 0x00, 0x01, b't', b'p']
    );
}

#[test]
fn empty_topic_needs_a_topic_alias_on_v5() {
    // Topic alias 7 and no topic: the receiver resolves it.
    let bytes = [0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x07, b'p'];
    let Packet::Publish(p) = decode_same(&bytes, V5) else {
        panic!()
    };
    assert!(p.topic.is_empty());
    assert_eq!(p.properties.unwrap().topic_alias, Some(7));
    let err = decode_err(&[0x30, 0x04, 0x00, 0x00, 0x00, b'p'], V5);
    assert!(matches!(err, DecodeError::ProtocolError(_)));
    assert_eq!(err.reason_code(), ReasonCode::PROTOCOL_ERROR);
    let err = decode_err(&[0x30, 0x03, 0x00, 0x00, b'p'], V311);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
}

#[test]
fn topic_name_with_wildcards_is_topic_name_invalid() {
    for topic in [&b"a/+"[..], b"#", b"a/#"] {
        let mut body = s(topic);
        body.push(b'x');
        let err = decode_err(&frame(0x30, &body), V311);
        assert!(matches!(err, DecodeError::TopicNameInvalid(_)));
        assert_eq!(err.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
    }
}

#[test]
fn topic_name_must_be_valid_utf8_without_null() {
    for topic in [
        &[0xFFu8][..],
        &[0xED, 0xA0, 0x80],
        &[b'a', 0x00],
        &[0xE2, 0x82],
    ] {
        let err = decode_err(&frame(0x30, &s(topic)), V311);
        assert!(
            matches!(err, DecodeError::MalformedPacket(_)),
            "{topic:02X?}"
        );
    }
}

#[test]
fn malformed_fixed_header_flags_and_ids() {
    // QoS 3, refused from the first byte alone.
    assert!(matches!(
        decode_err(&[0x36], V311),
        DecodeError::MalformedPacket(_)
    ));
    // DUP on QoS 0 [MQTT-3.3.1-2].
    assert!(matches!(
        decode_err(&[0x38], V5),
        DecodeError::MalformedPacket(_)
    ));
    // Packet identifier 0 [MQTT-2.2.1-3].
    let err = decode_err(&[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00], V311);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
    // QoS 1 without room for the packet identifier.
    let err = decode_err(&[0x32, 0x04, 0x00, 0x01, b't', 0x00], V311);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
    // Topic length past the end.
    let err = decode_err(&[0x30, 0x03, 0x00, 0x05, b't'], V311);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
}

#[test]
fn publish_properties_are_checked() {
    let publish = |props: &[u8]| {
        let mut body = s(b"t");
        body.push(props.len() as u8);
        body.extend_from_slice(props);
        frame(0x30, &body)
    };
    // Session Expiry Interval is not a PUBLISH property.
    let err = decode_err(&publish(&[0x11, 0, 0, 0, 1]), V5);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
    // Payload Format Indicator 2, Subscription Identifier 0, repeats, a Response Topic filter.
    for props in [
        &[0x01, 0x02][..],
        &[0x0B, 0x00],
        &[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1],
        &[0x23, 0x00, 0x01, 0x23, 0x00, 0x01],
        &[0x08, 0x00, 0x01, b'#'],
    ] {
        let err = decode_err(&publish(props), V5);
        assert!(
            matches!(err, DecodeError::ProtocolError(_)),
            "{props:02X?}: {err:?}"
        );
    }
    // Topic Alias 0 is passed through: the connection answers it with 0x94 Topic Alias invalid.
    let Packet::Publish(p) = decode_same(&publish(&[0x23, 0x00, 0x00]), V5) else {
        panic!()
    };
    assert_eq!(p.properties.unwrap().topic_alias, Some(0));
    // A property cut short, and a subscription identifier longer than 4 bytes.
    let err = decode_err(&publish(&[0x02, 0x00]), V5);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
    let err = decode_err(&publish(&[0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), V5);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
}

#[test]
fn payload_is_a_slice_of_the_read_buffer() {
    let bytes = frame(0x30, &[0x00, 0x01, b't', 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut buf = BytesMut::from(&bytes[..]);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let Some(Packet::Publish(p)) = decode(&mut buf, &Limits::new(V311)).unwrap() else {
        panic!()
    };
    let at = p.payload.as_ptr() as usize;
    assert!(
        at >= start && at + p.payload.len() <= end,
        "payload was copied"
    );
}

#[test]
fn encode_refuses_inconsistent_publishes() {
    let base = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TopicName::new("t").unwrap(),
        packet_id: None,
        properties: None,
        payload: Bytes::new(),
    };
    let mut buf = BytesMut::new();
    let cases = [
        Publish { ..base.clone() },
        Publish {
            qos: QoS::AtMostOnce,
            packet_id: Some(pid(1)),
            ..base.clone()
        },
        Publish {
            qos: QoS::AtMostOnce,
            dup: true,
            ..base.clone()
        },
        Publish {
            qos: QoS::AtMostOnce,
            topic: TopicName::empty(),
            ..base.clone()
        },
    ];
    for publish in cases {
        let packet = Packet::Publish(publish);
        assert!(
            starling_proto::encode(&packet, V5, &mut buf).is_err(),
            "{packet:?}"
        );
        assert!(buf.is_empty(), "nothing written on error");
    }
    // An alias-only topic cannot be sent to a 3.x peer.
    let aliased = Packet::Publish(Publish {
        qos: QoS::AtMostOnce,
        topic: TopicName::empty(),
        properties: Some(Box::new(Properties {
            topic_alias: Some(1),
            ..Default::default()
        })),
        ..base
    });
    assert!(starling_proto::encode(&aliased, V311, &mut buf).is_err());
    assert!(starling_proto::encode(&aliased, V5, &mut buf).is_ok());
}
