//! PUBACK / PUBREC / PUBREL / PUBCOMP, PINGREQ / PINGRESP, DISCONNECT and AUTH
//! ([MQTT-3.4] to [MQTT-3.7], [MQTT-3.12] to [MQTT-3.15]).

use bytes::Bytes;
use starling_proto::{
    Auth, DecodeError, Disconnect, EncodeError, Packet, Properties, PubResponse, ReasonCode,
};

use crate::*;

fn response(packet: &Packet) -> &PubResponse {
    match packet {
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => r,
        other => panic!("not an acknowledgement: {other:?}"),
    }
}

#[test]
fn v3_acknowledgements_are_just_the_packet_id() {
    for (first, kind) in [
        (0x40, "PUBACK"),
        (0x50, "PUBREC"),
        (0x62, "PUBREL"),
        (0x70, "PUBCOMP"),
    ] {
        for protocol in [V31, V311] {
            let packet = decode_same(&[first, 0x02, 0x12, 0x34], protocol);
            assert_eq!(packet.kind(), kind);
            assert_eq!(*response(&packet), PubResponse::success(pid(0x1234)));
            // 3.x has no reason code: a third byte is malformed.
            let err = decode_err(&[first, 0x03, 0x12, 0x34, 0x00], protocol);
            assert!(matches!(err, DecodeError::MalformedPacket(_)));
        }
        // Packet id 0, and a body cut short.
        assert!(matches!(
            decode_err(&[first, 0x02, 0, 0], V311),
            DecodeError::MalformedPacket(_)
        ));
        assert!(matches!(
            decode_err(&[first, 0x01, 0], V5),
            DecodeError::MalformedPacket(_)
        ));
    }
    // A failure reason cannot be said in 3.x: only the packet id is written.
    let nack = Packet::PubAck(PubResponse {
        packet_id: pid(1),
        reason: ReasonCode::NOT_AUTHORIZED,
        properties: Some(Box::new(Properties {
            reason_string: Some("no".into()),
            ..Default::default()
        })),
    });
    assert_eq!(encode_vec(&nack, V311), [0x40, 0x02, 0x00, 0x01]);
}

#[test]
fn fixed_header_flags_of_acknowledgements() {
    // PUBREL must be 0110 0010 [MQTT-3.6.1-1]; the others 0000.
    assert!(matches!(
        decode_err(&[0x60], V311),
        DecodeError::MalformedPacket(_)
    ));
    assert!(matches!(
        decode_err(&[0x42], V311),
        DecodeError::MalformedPacket(_)
    ));
    assert!(matches!(
        decode_err(&[0x51], V5),
        DecodeError::MalformedPacket(_)
    ));
    assert!(matches!(
        decode_err(&[0x72], V5),
        DecodeError::MalformedPacket(_)
    ));
}

#[test]
fn v5_acknowledgements_short_and_long_forms() {
    // Remaining length 2: Success, no properties.
    let r = decode_same(&[0x40, 0x02, 0x00, 0x01], V5);
    assert_eq!(*response(&r), PubResponse::success(pid(1)));
    // Remaining length 3: a reason code, no properties.
    let r = decode_same(&[0x40, 0x03, 0x00, 0x01, 0x10], V5);
    assert_eq!(response(&r).reason, ReasonCode::NO_MATCHING_SUBSCRIBERS);
    assert_eq!(response(&r).properties, None);
    // Success written out in full (reason 0, empty properties) is the same acknowledgement.
    let r = decode_one(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], V5);
    assert_eq!(*response(&r), PubResponse::success(pid(1)));
    // Reason and a Reason String.
    let bytes = [
        0x50, 0x0A, 0x00, 0x01, // PUBREC, packet id 1
        0x87, // not authorized
        0x06, 0x1F, 0x00, 0x03, b'b', b'a', b'd', // reason string "bad"
    ];
    let r = decode_same(&bytes, V5);
    assert_eq!(response(&r).reason, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(
        response(&r)
            .properties
            .as_deref()
            .unwrap()
            .reason_string
            .as_deref(),
        Some("bad")
    );
    let r = decode_same(&[0x62, 0x03, 0x00, 0x07, 0x92], V5);
    assert_eq!(response(&r).reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
}

#[test]
fn v5_acknowledgement_reason_codes_must_fit_the_packet() {
    // PUBREL / PUBCOMP only know 0x00 and 0x92; PUBACK / PUBREC not 0x92.
    for bytes in [
        [0x62, 0x03, 0x00, 0x01, 0x10],
        [0x70, 0x03, 0x00, 0x01, 0x80],
        [0x40, 0x03, 0x00, 0x01, 0x92],
        [0x50, 0x03, 0x00, 0x01, 0x04],
    ] {
        let err = decode_err(&bytes, V5);
        assert!(
            matches!(err, DecodeError::MalformedPacket(_)),
            "{bytes:02X?}"
        );
    }
    // A User Property is allowed; a Topic Alias is not.
    let r = decode_same(
        &[
            0x70, 0x0B, 0x00, 0x01, 0x00, 0x07, 0x26, 0, 1, b'k', 0, 1, b'v',
        ],
        V5,
    );
    assert_eq!(response(&r).reason, ReasonCode::SUCCESS);
    let err = decode_err(&[0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01], V5);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
}

#[test]
fn ping_request_and_response() {
    for protocol in [V31, V311, V5] {
        assert_eq!(decode_same(&[0xC0, 0x00], protocol), Packet::PingReq);
        assert_eq!(decode_same(&[0xD0, 0x00], protocol), Packet::PingResp);
        let err = decode_err(&[0xC0, 0x01, 0x00], protocol);
        assert!(matches!(err, DecodeError::MalformedPacket(_)));
        assert!(matches!(
            decode_err(&[0xC1], protocol),
            DecodeError::MalformedPacket(_)
        ));
    }
}

#[test]
fn disconnect_v3_and_v5() {
    for protocol in [V31, V311] {
        let d = decode_same(&[0xE0, 0x00], protocol);
        assert_eq!(
            d,
            Packet::Disconnect(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION))
        );
        let err = decode_err(&[0xE0, 0x01, 0x00], protocol);
        assert!(matches!(err, DecodeError::MalformedPacket(_)));
        // Whatever the reason, 3.x DISCONNECT is empty.
        let d = Packet::Disconnect(Disconnect::with_reason(ReasonCode::SERVER_SHUTTING_DOWN));
        assert_eq!(encode_vec(&d, protocol), [0xE0, 0x00]);
    }
    // v5: remaining length 0 is Normal disconnection.
    let normal = decode_same(&[0xE0, 0x00], V5);
    assert_eq!(
        normal,
        Packet::Disconnect(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION))
    );
    // Reason only.
    let will = decode_same(&[0xE0, 0x01, 0x04], V5);
    assert_eq!(
        will,
        Packet::Disconnect(Disconnect::with_reason(
            ReasonCode::DISCONNECT_WITH_WILL_MESSAGE
        ))
    );
    // Reason and Session Expiry Interval.
    let Packet::Disconnect(d) = decode_same(&[0xE0, 0x07, 0x00, 0x05, 0x11, 0, 0, 0x01, 0x00], V5)
    else {
        panic!()
    };
    assert_eq!(d.properties.unwrap().session_expiry_interval, Some(256));
    // Not a DISCONNECT reason; not a DISCONNECT property.
    assert!(matches!(
        decode_err(&[0xE0, 0x01, 0x10], V5),
        DecodeError::MalformedPacket(_)
    ));
    let err = decode_err(&[0xE0, 0x04, 0x00, 0x02, 0x24, 0x01], V5);
    assert!(matches!(err, DecodeError::MalformedPacket(_)));
    assert!(matches!(
        decode_err(&[0xE2], V5),
        DecodeError::MalformedPacket(_)
    ));
}

#[test]
fn auth_v5_only() {
    let a = decode_same(&[0xF0, 0x00], V5);
    assert_eq!(
        a,
        Packet::Auth(Auth {
            reason: ReasonCode::SUCCESS,
            properties: None
        })
    );
    let bytes = [
        0xF0, 0x0F, 0x18, // AUTH, continue authentication
        0x0D, // properties: 13 bytes
        0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // authentication method
        0x16, 0x00, 0x02, 0x01, 0x02, // authentication data
    ];
    let Packet::Auth(a) = decode_same(&bytes, V5) else {
        panic!()
    };
    assert_eq!(a.reason, ReasonCode::CONTINUE_AUTHENTICATION);
    let p = a.properties.unwrap();
    assert_eq!(p.authentication_method.as_deref(), Some("SCRAM"));
    assert_eq!(p.authentication_data, Some(Bytes::from_static(&[1, 2])));
    // Reason alone.
    let a = decode_one(&[0xF0, 0x01, 0x19], V5);
    assert_eq!(
        a,
        Packet::Auth(Auth {
            reason: ReasonCode::RE_AUTHENTICATE,
            properties: None
        })
    );
    assert_eq!(encode_vec(&a, V5), [0xF0, 0x02, 0x19, 0x00]);
    // Not an AUTH reason; AUTH on 3.x (refused from the first byte); flags.
    assert!(matches!(
        decode_err(&[0xF0, 0x01, 0x80], V5),
        DecodeError::MalformedPacket(_)
    ));
    for protocol in [V31, V311] {
        assert!(matches!(
            decode_err(&[0xF0], protocol),
            DecodeError::MalformedPacket(_)
        ));
        let err = starling_proto::encoded_len(&a, protocol).unwrap_err();
        assert!(matches!(err, EncodeError::NotInProtocol { .. }));
    }
    assert!(matches!(
        decode_err(&[0xF1], V5),
        DecodeError::MalformedPacket(_)
    ));
}
