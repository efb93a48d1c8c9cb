//! CONNECT and CONNACK for MQTT 3.1 (MQIsdp), 3.1.1 and 5.0 ([MQTT-3.1], [MQTT-3.2]).

use bytes::Bytes;
use starling_proto::{ConnAck, Connect, DecodeError, Packet, Properties, QoS, ReasonCode};

use crate::*;

/// MQTT 3.1.1 CONNECT with clean session, a QoS 1 retained will, user name and password.
const V311_CONNECT: &[u8] = &[
    0x10, 0x23, // CONNECT, remaining length 35
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x04, // level 4
    0xEE, // user name, password, will retain, will QoS 1, will flag, clean session
    0x00, 0x3C, // keep alive 60
    0x00, 0x03, b'c', b'i', b'd', // client identifier
    0x00, 0x03, b'w', b'/', b't', // will topic
    0x00, 0x03, b'b', b'y', b'e', // will message
    0x00, 0x04, b'u', b's', b'e', b'r', // user name
    0x00, 0x02, b'p', b'w', // password
];

#[test]
fn connect_v311_with_will_user_name_and_password() {
    let Packet::Connect(c) = decode_same(V311_CONNECT, V311) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, V311);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    assert_eq!(c.client_id, "cid");
    let will = c.will.as_ref().unwrap();
    assert_eq!(will.topic.as_str(), "w/t");
    assert_eq!(will.payload, Bytes::from_static(b"bye"));
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert!(will.retain);
    assert_eq!(c.username.as_deref(), Some("user"));
    assert_eq!(c.password, Some(Bytes::from_static(b"pw")));
    assert_eq!(c.properties, None);
}

#[test]
fn connect_is_read_in_its_own_version_whatever_the_limits_say() {
    for limits in [V31, V311, V5] {
        let Packet::Connect(c) = decode_one(V311_CONNECT, limits) else {
            panic!()
        };
        assert_eq!(c.protocol, V311);
    }
}

#[test]
fn connect_v31_mqisdp() {
    let bytes = [
        0x10, 0x16, // CONNECT, remaining length 22
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, // MQIsdp level 3
        0xC2, // user name, password, clean session
        0x00, 0x0A, // keep alive 10
        0x00, 0x02, b'c', b'1', // client identifier
        0x00, 0x01, b'u', // user name
        0x00, 0x01, b'p', // password
    ];
    let Packet::Connect(c) = decode_same(&bytes, V5) else {
        panic!()
    };
    assert_eq!(c.protocol, V31);
    assert_eq!(c.keep_alive, 10);
    assert_eq!(c.client_id, "c1");
    assert_eq!(c.username.as_deref(), Some("u"));
    assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
    assert!(c.will.is_none());
}

/// MQTT 5 CONNECT with CONNECT properties and a will with will properties.
const V5_CONNECT: &[u8] = &[
    0x10, 0x3D, // CONNECT, remaining length 61
    0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, // MQTT level 5
    0xCE, // user name, password, will QoS 1, will flag, clean start
    0x00, 0x1E, // keep alive 30
    0x0F, // properties: 15 bytes
    0x11, 0x00, 0x00, 0x00, 0x78, // session expiry interval 120
    0x21, 0x00, 0x14, // receive maximum 20
    0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k=v
    0x00, 0x03, b'c', b'i', b'd', // client identifier
    0x0E, // will properties: 14 bytes
    0x01, 0x01, // payload format indicator: UTF-8
    0x03, 0x00, 0x04, b't', b'e', b'x', b't', // content type
    0x18, 0x00, 0x00, 0x00, 0x05, // will delay interval 5
    0x00, 0x01, b'w', // will topic
    0x00, 0x02, 0x01, 0x02, // will payload
    0x00, 0x01, b'u', // user name
    0x00, 0x03, b'p', b'w', b'd', // password
];

#[test]
fn connect_v5_with_properties_and_will_properties() {
    let Packet::Connect(c) = decode_same(V5_CONNECT, V311) else {
        panic!()
    };
    assert_eq!(c.protocol, V5);
    assert_eq!(c.keep_alive, 30);
    let p = c.properties.as_deref().unwrap();
    assert_eq!(p.session_expiry_interval, Some(120));
    assert_eq!(p.receive_maximum, Some(20));
    assert_eq!(p.user_properties, vec![("k".to_owned(), "v".to_owned())]);
    let will = c.will.as_ref().unwrap();
    assert_eq!(will.topic.as_str(), "w");
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert!(!will.retain);
    let wp = will.properties.as_deref().unwrap();
    assert_eq!(wp.will_delay_interval, Some(5));
    assert_eq!(wp.payload_format_indicator, Some(1));
    assert_eq!(wp.content_type.as_deref(), Some("text"));
    assert_eq!(c.password.as_deref(), Some(&b"pwd"[..]));
}

/// A minimal CONNECT body after the protocol name and level: flags, keep alive, (properties),
/// client id "a".
fn connect_with(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = s(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&[0x00, 0x00]);
    body.extend_from_slice(rest);
    frame(0x10, &body)
}

#[test]
fn unsupported_protocol_names_and_levels() {
    for (name, level) in [
        (&b"MQTT"[..], 3u8),
        (b"MQTT", 6),
        (b"MQIsdp", 4),
        (b"HTTP", 4),
        (b"MQTT", 0),
    ] {
        let err = decode_err(&connect_with(name, level, 0x02, &s(b"a")), V311);
        assert_eq!(
            err,
            DecodeError::UnsupportedProtocolVersion {
                name: String::from_utf8(name.to_vec()).unwrap(),
                level
            }
        );
        assert_eq!(err.connect_protocol(), None);
        assert_eq!(err.reason_code(), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(err.reason_code().to_v3_connack(), 0x01);
    }
}

#[test]
fn malformed_connect_flags() {
    let id = s(b"a");
    // Reserved bit 0 [MQTT-3.1.2-3].
    let err = decode_err(&connect_with(b"MQTT", 4, 0x03, &id), V311);
    assert!(matches!(
        in_connect(err, V311),
        DecodeError::MalformedPacket(_)
    ));
    let mut v5_body = vec![0x00];
    v5_body.extend_from_slice(&id);
    let err = decode_err(&connect_with(b"MQTT", 5, 0x01, &v5_body), V311);
    assert_eq!(err.reason_code(), ReasonCode::MALFORMED_PACKET);
    assert_eq!(err.connect_protocol(), Some(V5));
    // Will QoS / will retain without the will flag [MQTT-3.1.2-11/13].
    for flags in [0x08, 0x10, 0x20] {
        let err = decode_err(&connect_with(b"MQTT", 4, flags, &id), V311);
        assert!(matches!(
            in_connect(err, V311),
            DecodeError::MalformedPacket(_)
        ));
    }
    // Will QoS 3.
    let mut will = id.clone();
    will.extend(s(b"t"));
    will.extend(s(b"m"));
    let err = decode_err(&connect_with(b"MQTT", 4, 0x1C, &will), V311);
    assert!(matches!(
        in_connect(err, V311),
        DecodeError::MalformedPacket(_)
    ));
    // And the same will with QoS 2 is fine.
    assert!(matches!(
        decode_one(&connect_with(b"MQTT", 4, 0x14, &will), V311),
        Packet::Connect(_)
    ));
}

#[test]
fn password_without_user_name_is_malformed_before_mqtt_5() {
    let mut rest = s(b"a");
    rest.extend(s(b"secret"));
    for (name, level, protocol) in [(&b"MQTT"[..], 4, V311), (b"MQIsdp", 3, V31)] {
        let err = decode_err(&connect_with(name, level, 0x40, &rest), V311);
        assert!(matches!(
            in_connect(err, protocol),
            DecodeError::MalformedPacket(_)
        ));
    }
    let mut v5_rest = vec![0x00];
    v5_rest.extend(&rest);
    let Packet::Connect(c) = decode_same(&connect_with(b"MQTT", 5, 0x40, &v5_rest), V5) else {
        panic!()
    };
    assert_eq!(c.username, None);
    assert_eq!(c.password.as_deref(), Some(&b"secret"[..]));
}

#[test]
fn client_identifier_must_be_valid_utf8_without_null() {
    for bad in [
        &[0xFFu8][..],
        &[0xED, 0xA0, 0x80],
        &[b'a', 0x00],
        &[0xC0, 0xAF],
    ] {
        let err = decode_err(&connect_with(b"MQTT", 4, 0x02, &s(bad)), V311);
        assert!(
            matches!(in_connect(err, V311), DecodeError::MalformedPacket(_)),
            "{bad:?}"
        );
    }
    // An empty client id is the broker's decision, not the codec's.
    let Packet::Connect(c) = decode_same(&connect_with(b"MQTT", 4, 0x02, &s(b"")), V311) else {
        panic!()
    };
    assert_eq!(c.client_id, "");
}

#[test]
fn will_topic_with_wildcards_is_topic_name_invalid() {
    let mut rest = s(b"a");
    rest.extend(s(b"w/#"));
    rest.extend(s(b"m"));
    let err = decode_err(&connect_with(b"MQTT", 4, 0x04, &rest), V311);
    assert!(matches!(
        in_connect(err.clone(), V311),
        DecodeError::TopicNameInvalid(_)
    ));
    assert_eq!(err.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
}

#[test]
fn connect_fields_must_fill_the_remaining_length_exactly() {
    // Trailing byte.
    let mut bytes = connect_with(b"MQTT", 4, 0x02, &[0x00, 0x01, b'a', 0x00]);
    let err = decode_err(&bytes, V311);
    assert!(matches!(
        in_connect(err, V311),
        DecodeError::MalformedPacket(_)
    ));
    // Client id running past the end: claims 5 bytes, has 1.
    bytes = connect_with(b"MQTT", 4, 0x02, &[0x00, 0x05, b'a']);
    let err = decode_err(&bytes, V311);
    assert!(matches!(
        in_connect(err, V311),
        DecodeError::MalformedPacket(_)
    ));
    // User name flag with no user name.
    bytes = connect_with(b"MQTT", 4, 0x82, &s(b"a"));
    let err = decode_err(&bytes, V311);
    assert!(matches!(
        in_connect(err, V311),
        DecodeError::MalformedPacket(_)
    ));
    // Cut inside the protocol name: not yet a known protocol.
    let err = decode_err(&[0x10, 0x03, 0x00, 0x04, b'M'], V311);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
}

#[test]
fn connect_properties_are_checked() {
    let v5 = |props: &[u8]| {
        let mut rest = vec![props.len() as u8];
        rest.extend_from_slice(props);
        rest.extend(s(b"a"));
        connect_with(b"MQTT", 5, 0x02, &rest)
    };
    // Topic Alias is a PUBLISH property: malformed.
    let err = decode_err(&v5(&[0x23, 0x00, 0x01]), V5);
    assert_eq!(err.reason_code(), ReasonCode::MALFORMED_PACKET);
    assert_eq!(err.connect_protocol(), Some(V5));
    // Unknown identifier: malformed.
    assert_eq!(
        decode_err(&v5(&[0x7F, 0x00]), V5).reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
    // Receive Maximum 0, Maximum Packet Size 0, Request Problem Information 2: protocol errors.
    for props in [
        &[0x21, 0x00, 0x00][..],
        &[0x27, 0x00, 0x00, 0x00, 0x00],
        &[0x17, 0x02],
        &[0x19, 0x02],
        &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2],
        &[0x15, 0x00, 0x01, b'm', 0x15, 0x00, 0x01, b'm'],
    ] {
        let err = decode_err(&v5(props), V5);
        assert_eq!(
            err.reason_code(),
            ReasonCode::PROTOCOL_ERROR,
            "{props:02X?}"
        );
        assert_eq!(err.connect_protocol(), Some(V5));
    }
    // A property block longer than the packet.
    let err = decode_err(&connect_with(b"MQTT", 5, 0x02, &[0x05, 0x11]), V5);
    assert_eq!(err.reason_code(), ReasonCode::MALFORMED_PACKET);
    // Repeated user properties are fine, and keep their order.
    let Packet::Connect(c) = decode_same(
        &v5(&[0x26, 0, 1, b'a', 0, 1, b'1', 0x26, 0, 1, b'a', 0, 1, b'2']),
        V5,
    ) else {
        panic!()
    };
    let users = &c.properties.as_deref().unwrap().user_properties;
    assert_eq!(users[0].1, "1");
    assert_eq!(users[1].1, "2");
}

#[test]
fn connack_v311_and_v31() {
    let Packet::ConnAck(c) = decode_same(&[0x20, 0x02, 0x01, 0x00], V311) else {
        panic!()
    };
    assert!(c.session_present);
    assert_eq!(c.code, ReasonCode::SUCCESS);
    let Packet::ConnAck(c) = decode_same(&[0x20, 0x02, 0x00, 0x05], V311) else {
        panic!()
    };
    assert_eq!(c.code, ReasonCode::NOT_AUTHORIZED);
    let Packet::ConnAck(c) = decode_same(&[0x20, 0x02, 0x00, 0x01], V31) else {
        panic!()
    };
    assert_eq!(c.code, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    // Return code 6 does not exist; reserved flags; session present on a refusal.
    assert!(matches!(
        decode_err(&[0x20, 0x02, 0x00, 0x06], V311),
        DecodeError::MalformedPacket(_)
    ));
    assert!(matches!(
        decode_err(&[0x20, 0x02, 0x02, 0x00], V311),
        DecodeError::MalformedPacket(_)
    ));
    assert!(matches!(
        decode_err(&[0x20, 0x02, 0x01, 0x05], V311),
        DecodeError::ProtocolError(_)
    ));
    assert!(matches!(
        decode_err(&[0x20, 0x03, 0x00, 0x00, 0x00], V311),
        DecodeError::MalformedPacket(_)
    ));
    // MQTT 5 reasons become their 3.x return codes; 3.1 never says Session Present.
    let connack = |code| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: None,
        })
    };
    assert_eq!(
        encode_vec(&connack(ReasonCode::BANNED), V311),
        [0x20, 0x02, 0x00, 0x05]
    );
    assert_eq!(
        encode_vec(&connack(ReasonCode::MALFORMED_PACKET), V311),
        [0x20, 0x02, 0x00, 0x03]
    );
    assert_eq!(
        encode_vec(&connack(ReasonCode::BAD_USER_NAME_OR_PASSWORD), V31),
        [0x20, 0x02, 0x00, 0x04]
    );
    let present = Packet::ConnAck(ConnAck {
        session_present: true,
        code: ReasonCode::SUCCESS,
        properties: None,
    });
    assert_eq!(encode_vec(&present, V31), [0x20, 0x02, 0x00, 0x00]);
}

#[test]
fn connack_v5_with_properties() {
    let bytes = [
        0x20, 0x0A, // CONNACK, remaining length 10
        0x00, // no session present
        0x00, // success
        0x07, // properties: 7 bytes
        0x21, 0x00, 0x0A, // receive maximum 10
        0x24, 0x01, // maximum QoS 1
        0x25, 0x00, // retain not available
    ];
    let Packet::ConnAck(c) = decode_same(&bytes, V5) else {
        panic!()
    };
    let p = c.properties.as_deref().unwrap();
    assert_eq!(p.receive_maximum, Some(10));
    assert_eq!(p.maximum_qos, Some(1));
    assert_eq!(p.retain_available, Some(0));
    // Maximum QoS 2 is a protocol error; a PUBLISH property on a CONNACK is malformed.
    let err = decode_err(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02], V5);
    assert!(matches!(err, DecodeError::ProtocolError(_)));
    let err = decode_err(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x01, 0x01], V5);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
    // 0x10 is not a CONNACK reason code.
    let err = decode_err(&[0x20, 0x03, 0x00, 0x10, 0x00], V5);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
    // Without properties the empty block is still written.
    let refused = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::BAD_AUTHENTICATION_METHOD,
        properties: Some(Box::new(Properties::default())),
    });
    assert_eq!(encode_vec(&refused, V5), [0x20, 0x03, 0x00, 0x8C, 0x00]);
}

#[test]
fn connect_encodes_in_its_own_protocol() {
    let connect = Packet::Connect(Box::new(Connect {
        protocol: V31,
        clean_start: true,
        keep_alive: 10,
        client_id: "c1".into(),
        will: None,
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: None,
    }));
    let bytes = encode_vec(&connect, V5);
    assert_eq!(
        &bytes[2..10],
        &[0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p']
    );
    assert_eq!(decode_one(&bytes, V5), connect);
}
