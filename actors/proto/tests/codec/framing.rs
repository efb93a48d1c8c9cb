//! Framing: incremental input, several packets in one buffer, the maximum packet size, and
//! the fixed header checks that happen before the body arrives.

use bytes::{Bytes, BytesMut};
use starling_proto::{
    decode, encode, encoded_len, DecodeError, EncodeError, Limits, Packet, Properties, Publish,
    QoS, ReasonCode, TopicName,
};

use crate::*;

fn sample_publish() -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: TopicName::new("sensors/1/temp").unwrap(),
        packet_id: Some(pid(42)),
        properties: Some(Box::new(Properties {
            message_expiry_interval: Some(30),
            user_properties: vec![("unit".into(), "C".into())],
            ..Default::default()
        })),
        payload: Bytes::from(vec![7u8; 300]),
    })
}

#[test]
fn one_byte_at_a_time() {
    let packet = sample_publish();
    let bytes = encode_vec(&packet, V5);
    let limits = Limits::new(V5);
    let mut buf = BytesMut::new();
    for (i, byte) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let before = buf.clone();
        match decode(&mut buf, &limits).unwrap() {
            None => {
                assert!(i + 1 < bytes.len(), "complete packet not decoded");
                assert_eq!(buf, before, "buffer touched while incomplete");
            }
            Some(decoded) => {
                assert_eq!(i + 1, bytes.len(), "decoded before the last byte");
                assert_eq!(decoded, packet);
            }
        }
    }
    assert!(buf.is_empty());
    // The V5 CONNECT from the specification vectors, one byte at a time too.
    let mut buf = BytesMut::new();
    let connect = [
        0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x0A, 0x00, 0x00, 0x00,
    ];
    for (i, byte) in connect.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let got = decode(&mut buf, &Limits::new(V311)).unwrap();
        assert_eq!(got.is_some(), i + 1 == connect.len());
    }
}

#[test]
fn incomplete_packets_reserve_room_for_the_rest() {
    let bytes = encode_vec(&sample_publish(), V5);
    let mut buf = BytesMut::from(&bytes[..10]);
    assert_eq!(decode(&mut buf, &Limits::new(V5)).unwrap(), None);
    assert!(buf.capacity() >= bytes.len());
    assert_eq!(&buf[..], &bytes[..10]);
}

#[test]
fn packets_back_to_back_in_one_buffer() {
    let first = sample_publish();
    let second = Packet::PingReq;
    let third = Packet::Disconnect(starling_proto::Disconnect::with_reason(
        ReasonCode::SERVER_BUSY,
    ));
    let mut buf = BytesMut::new();
    for p in [&first, &second, &third] {
        encode(p, V5, &mut buf).unwrap();
    }
    // And half of a fourth.
    let fourth = encode_vec(&sample_publish(), V5);
    buf.extend_from_slice(&fourth[..fourth.len() / 2]);
    let limits = Limits::new(V5);
    assert_eq!(decode(&mut buf, &limits).unwrap(), Some(first));
    assert_eq!(decode(&mut buf, &limits).unwrap(), Some(second));
    assert_eq!(decode(&mut buf, &limits).unwrap(), Some(third));
    assert_eq!(decode(&mut buf, &limits).unwrap(), None);
    assert_eq!(buf.len(), fourth.len() / 2);
    buf.extend_from_slice(&fourth[fourth.len() / 2..]);
    assert_eq!(decode(&mut buf, &limits).unwrap(), Some(sample_publish()));
    assert!(buf.is_empty());
}

#[test]
fn too_large_is_reported_from_the_fixed_header_alone() {
    let limits = Limits {
        protocol: V311,
        max_packet_size: Some(1024),
    };
    // A PUBLISH announcing 268 435 455 bytes, of which nothing has arrived.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    let err = decode(&mut buf, &limits).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1024
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    assert!(buf.capacity() < 1024, "the body must not be reserved");
    // Exactly at the limit is fine; one byte over is not.
    let publish = |payload: usize| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new("t").unwrap(),
            packet_id: None,
            properties: None,
            payload: Bytes::from(vec![0u8; payload]),
        })
    };
    let exact = publish(1024 - 3 - 3);
    assert_eq!(encoded_len(&exact, V311).unwrap(), 1024);
    let mut buf = BytesMut::from(&encode_vec(&exact, V311)[..]);
    assert_eq!(decode(&mut buf, &limits).unwrap(), Some(exact));
    let mut buf = BytesMut::from(&encode_vec(&publish(1024 - 5), V311)[..4]);
    assert_eq!(
        decode(&mut buf, &limits).unwrap_err(),
        DecodeError::PacketTooLarge {
            size: 1025,
            max: 1024
        }
    );
}

#[test]
fn remaining_length_is_checked() {
    let limits = Limits::new(V311);
    // Five length bytes.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01][..]);
    assert!(matches!(
        decode(&mut buf, &limits),
        Err(DecodeError::MalformedPacket(_))
    ));
    // Not the shortest form.
    let mut buf = BytesMut::from(&[0xC0, 0x80, 0x00][..]);
    assert!(matches!(
        decode(&mut buf, &limits),
        Err(DecodeError::MalformedPacket(_))
    ));
    // Still incomplete.
    for partial in [
        &[][..],
        &[0x30],
        &[0x30, 0x80],
        &[0x30, 0x80, 0x80, 0x80],
        &[0x30, 0x05, 0x00],
    ] {
        let mut buf = BytesMut::from(partial);
        assert_eq!(decode(&mut buf, &limits).unwrap(), None, "{partial:02X?}");
        assert_eq!(&buf[..], partial);
    }
}

#[test]
fn reserved_packet_type_and_flags() {
    for protocol in [V31, V311, V5] {
        assert!(matches!(
            decode_err(&[0x00], protocol),
            DecodeError::MalformedPacket(_)
        ));
        assert!(matches!(
            decode_err(&[0x00, 0x00], protocol),
            DecodeError::MalformedPacket(_)
        ));
        // CONNECT, CONNACK, UNSUBACK, DISCONNECT with flags set.
        for first in [0x11, 0x28, 0xB1, 0xE8] {
            assert!(matches!(
                decode_err(&[first], protocol),
                DecodeError::MalformedPacket(_)
            ));
        }
    }
}

#[test]
fn encode_errors_leave_the_buffer_alone() {
    let mut buf = BytesMut::new();
    let long = "x".repeat(65_536);
    let connect = Packet::Connect(Box::new(starling_proto::Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 0,
        client_id: long,
        will: None,
        username: None,
        password: None,
        properties: None,
    }));
    assert!(matches!(
        encode(&connect, V311, &mut buf),
        Err(EncodeError::FieldTooLong { .. })
    ));
    let huge = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicName::new("t").unwrap(),
        packet_id: None,
        properties: None,
        payload: Bytes::from(vec![0u8; 268_435_455]),
    });
    assert!(matches!(
        encoded_len(&huge, V311),
        Err(EncodeError::PacketTooLarge { .. })
    ));
    assert!(matches!(
        encode(&huge, V311, &mut buf),
        Err(EncodeError::PacketTooLarge { .. })
    ));
    let nul = Packet::Disconnect(starling_proto::Disconnect {
        reason: ReasonCode::SUCCESS,
        properties: Some(Box::new(Properties {
            reason_string: Some("a\0b".into()),
            ..Default::default()
        })),
    });
    assert!(matches!(
        encode(&nul, V5, &mut buf),
        Err(EncodeError::Invalid(_))
    ));
    let subid = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicName::new("t").unwrap(),
        packet_id: None,
        properties: Some(Box::new(Properties {
            subscription_identifiers: vec![268_435_456],
            ..Default::default()
        })),
        payload: Bytes::new(),
    });
    assert!(matches!(
        encode(&subid, V5, &mut buf),
        Err(EncodeError::Invalid(_))
    ));
    assert!(buf.is_empty());
}
