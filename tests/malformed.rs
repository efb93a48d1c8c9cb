//! Malformed and forbidden packets, sent as raw bytes. Each gets the right reason code
//! (MQTT 5: DISCONNECT or CONNACK with the code, then close) or a closed connection (3.x), and
//! the broker keeps serving other clients afterwards.

mod common;

use common::raw::{connect_packet, Raw};
use common::*;
use starling_proto::{Packet, Protocol, QoS, ReasonCode};

/// What the broker must do with the bad bytes.
enum Expect {
    /// MQTT 5, after CONNACK: DISCONNECT with this reason, then close.
    Disconnect(ReasonCode),
    /// Before CONNACK: CONNACK with this code, then close.
    Refused(ReasonCode),
    /// Close without a word.
    Closed,
}

/// Connects (unless `connect` is false), sends `bytes`, checks the outcome, then checks that a
/// fresh client is still served by the same broker.
async fn check(
    broker: &TestBroker,
    protocol: Protocol,
    connect: bool,
    bytes: &[u8],
    expect: Expect,
) {
    let mut raw = if connect {
        Raw::connected(broker.addr, protocol, "victim").await.0
    } else {
        Raw::open(broker.addr, protocol).await
    };
    raw.send(bytes).await;
    match expect {
        Expect::Disconnect(reason) => raw.expect_disconnect(reason).await,
        Expect::Refused(code) => {
            raw.protocol = Protocol::V5.min(protocol);
            raw.expect_connack_refusal(code).await
        }
        Expect::Closed => raw.expect_closed().await,
    }
    // The broker keeps serving everyone else.
    let (mut witness, _) = Raw::connected(broker.addr, Protocol::V311, "witness").await;
    witness.subscribe("still/#", QoS::AtMostOnce).await;
    witness.send_packet(&Packet::PingReq).await;
    assert_eq!(witness.recv().await, Some(Packet::PingResp));
}

macro_rules! bad_packet {
    ($(#[$doc:meta])* $name:ident, $protocol:expr, $bytes:expr, $expect:expr) => {
        bad_packet!($(#[$doc])* $name, "", $protocol, true, $bytes, $expect);
    };
    ($(#[$doc:meta])* $name:ident, $params:expr, $protocol:expr, $connect:expr, $bytes:expr, $expect:expr) => {
        $(#[$doc])*
        #[tokio::test]
        async fn $name() {
            let broker = TestBroker::start($params, "");
            check(&broker, $protocol, $connect, &$bytes, $expect).await;
        }
    };
}

use Expect::*;
use Protocol::{V311, V5};

bad_packet!(
    /// [MQTT-1.5.5-1] A Variable Byte Integer uses at most four bytes.
    remaining_length_of_five_bytes_is_malformed,
    V5, [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-3.3.1-4] A PUBLISH Packet MUST NOT have both QoS bits set to 1.
    publish_with_qos_3_is_malformed,
    V5, [0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, 0x00], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-3.3.1-2] The DUP flag MUST be set to 0 for all QoS 0 messages.
    publish_qos0_with_dup_is_malformed,
    V5, [0x38, 0x04, 0x00, 0x01, b'a', 0x00], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-3.6.1-1] Bits 3,2,1 and 0 of the fixed header in the PUBREL packet are reserved
    /// and MUST be set to 0,0,1 and 0.
    pubrel_with_wrong_flags_is_malformed,
    V5, [0x60, 0x02, 0x00, 0x01], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-3.8.1-1] Reserved SUBSCRIBE flags must be 0,0,1,0.
    subscribe_with_wrong_flags_is_malformed,
    V5, [0x80, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x00], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-3.10.1-1] Reserved UNSUBSCRIBE flags must be 0,0,1,0.
    unsubscribe_with_wrong_flags_is_malformed,
    V5, [0xA0, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-2.1.3-1] Reserved fixed header flags of PINGREQ must be 0.
    pingreq_with_flags_is_malformed,
    V5, [0xC1, 0x00], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// A PINGREQ has no variable header: a remaining length of 1 is malformed.
    pingreq_with_trailing_bytes_is_malformed,
    V5, [0xC0, 0x01, 0x00], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// Packet type 0 is reserved.
    packet_type_zero_is_malformed,
    V5, [0x00, 0x00], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-3.3.2-2] The Topic Name in the PUBLISH packet MUST NOT contain wildcard characters.
    publish_to_single_level_wildcard_topic_is_topic_name_invalid,
    V5, [0x30, 0x06, 0x00, 0x03, b'a', b'/', b'+', 0x00], Disconnect(ReasonCode::TOPIC_NAME_INVALID));
bad_packet!(
    /// [MQTT-3.3.2-2] ... nor `#`.
    publish_to_multi_level_wildcard_topic_is_topic_name_invalid,
    V5, [0x30, 0x04, 0x00, 0x01, b'#', 0x00], Disconnect(ReasonCode::TOPIC_NAME_INVALID));
bad_packet!(
    /// [MQTT-2.2.1-3] A QoS 1 PUBLISH carries a non-zero packet identifier.
    publish_qos1_with_packet_id_zero_is_malformed,
    V5, [0x32, 0x06, 0x00, 0x01, b'a', 0x00, 0x00, 0x00], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-1.5.4-1] Ill-formed UTF-8 in a topic is a Malformed Packet.
    publish_topic_with_invalid_utf8_is_malformed,
    V5, [0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-1.5.4-2] A UTF-8 Encoded String MUST NOT include the null character U+0000.
    publish_topic_with_null_character_is_malformed,
    V5, [0x30, 0x05, 0x00, 0x02, b'a', 0x00, 0x00], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-3.8.3-3] A SUBSCRIBE with no Topic Filter is a Protocol Error.
    subscribe_without_filters_is_a_protocol_error,
    V5, [0x82, 0x03, 0x00, 0x01, 0x00], Disconnect(ReasonCode::PROTOCOL_ERROR));
bad_packet!(
    /// [MQTT-4.7.1-1] `#` must be the last character of a filter.
    subscribe_with_hash_not_last_is_malformed,
    V5, [0x82, 0x0B, 0x00, 0x01, 0x00, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00],
    Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-3.8.3-5] Reserved bits of the subscription options must be 0.
    subscribe_options_with_reserved_bits_is_malformed,
    V5, [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0xC0], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-3.1.0-2] A second CONNECT is a Protocol Error, also one the broker cannot decode
    /// (here: protocol level 9).
    a_second_connect_that_does_not_decode_is_a_protocol_error,
    V5, [0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x09, 0x02, 0x00, 0x1E, 0x00, 0x00],
    Disconnect(ReasonCode::PROTOCOL_ERROR));
bad_packet!(
    /// [MQTT-3.1.0-2] ... and one whose body is broken (a will flag with QoS 3 in an MQTT 5
    /// CONNECT).
    a_second_connect_that_is_malformed_is_a_protocol_error,
    V5, [0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x1E, 0x00, 0x1E, 0x00, 0x00, 0x00],
    Disconnect(ReasonCode::PROTOCOL_ERROR));
bad_packet!(
    /// MQTT 5 §3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3."
    v5_subscribe_with_qos_3_is_a_protocol_error,
    V5, [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x03], Disconnect(ReasonCode::PROTOCOL_ERROR));
bad_packet!(
    /// MQTT 5 §3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
    v5_subscribe_with_retain_handling_3_is_a_protocol_error,
    V5, [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x31], Disconnect(ReasonCode::PROTOCOL_ERROR));
bad_packet!(
    /// [MQTT-3-8.3-4] QoS 3 in 3.1.1 subscription options is malformed: the connection closes.
    v311_subscribe_with_qos_3_is_malformed,
    V311, [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03], Closed);
bad_packet!(
    /// A SUBSCRIBE whose remaining length ends inside a filter is malformed.
    truncated_subscribe_is_malformed,
    V5, [0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x05, b'a'], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// An unknown property identifier is a Malformed Packet.
    unknown_property_is_malformed,
    V5, [0x30, 0x07, 0x00, 0x01, b'a', 0x02, 0x7F, 0x00, b'x'], Disconnect(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-3.3.2-8] A Topic Alias of 0 is not permitted.
    topic_alias_zero_is_invalid,
    V5, [0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00], Disconnect(ReasonCode::TOPIC_ALIAS_INVALID));
bad_packet!(
    /// [MQTT-3.3.2-9] An alias greater than the broker's Topic Alias Maximum is invalid.
    topic_alias_above_the_maximum_is_invalid,
    ";topicAliasMaximum=10", V5, true,
    [0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x0B], Disconnect(ReasonCode::TOPIC_ALIAS_INVALID));
bad_packet!(
    /// An empty topic with an alias that was never set is a Protocol Error.
    unknown_topic_alias_with_empty_topic_is_a_protocol_error,
    V5, [0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05], Disconnect(ReasonCode::PROTOCOL_ERROR));
bad_packet!(
    /// It is a Protocol Error to include the Topic Alias property more than once.
    repeated_single_valued_property_is_a_protocol_error,
    V5, [0x30, 0x0A, 0x00, 0x01, b'a', 0x06, 0x23, 0x00, 0x01, 0x23, 0x00, 0x02], Disconnect(ReasonCode::PROTOCOL_ERROR));
bad_packet!(
    /// [MQTT-3.1.0-2] A second CONNECT is a Protocol Error.
    second_connect_is_a_protocol_error,
    V5, {
        let mut out = bytes::BytesMut::new();
        starling_proto::encode(&connect_packet(V5, "again"), V5, &mut out).expect("encode");
        out.to_vec()
    }, Disconnect(ReasonCode::PROTOCOL_ERROR));
bad_packet!(
    /// CONNACK is sent only by a server.
    connack_from_a_client_is_a_protocol_error,
    V5, [0x20, 0x03, 0x00, 0x00, 0x00], Disconnect(ReasonCode::PROTOCOL_ERROR));
bad_packet!(
    /// AUTH without an authentication exchange in progress is a Protocol Error.
    unsolicited_auth_is_a_protocol_error,
    V5, [0xF0, 0x00], Disconnect(ReasonCode::PROTOCOL_ERROR));
bad_packet!(
    /// maximumPacketSize: a larger packet gets 0x95 before the broker buffers it.
    packet_over_maximum_packet_size_is_too_large,
    ";maximumPacketSize=64", V5, true,
    {
        let mut v = vec![0x30, 0x64, 0x00, 0x01, b'a', 0x00];
        v.extend([b'x'; 94]);
        v
    }, Disconnect(ReasonCode::PACKET_TOO_LARGE));
bad_packet!(
    /// A packet announcing 200 MB with five bytes sent is refused at once (not buffered).
    huge_announced_length_is_refused_before_buffering,
    ";maximumPacketSize=1024", V5, true,
    [0x30, 0xFF, 0xFF, 0xFF, 0x5F], Disconnect(ReasonCode::PACKET_TOO_LARGE));
/// Skips acknowledgements of the earlier publishes, then expects DISCONNECT 0x93 and a close.
async fn expect_receive_maximum_exceeded(raw: &mut Raw) {
    loop {
        match raw.recv().await {
            Some(Packet::PubAck(_) | Packet::PubRec(_)) => continue,
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                break;
            }
            other => panic!("expected DISCONNECT 0x93, got {other:?}"),
        }
    }
    raw.expect_closed().await;
}

/// [MQTT-3.3.4-9] More unacknowledged QoS 2 PUBLISH than the broker's receiveMaximum gets
/// DISCONNECT 0x93 (Receive Maximum exceeded).
#[tokio::test]
async fn exceeding_receive_maximum_disconnects_with_0x93() {
    let broker = TestBroker::start(";receiveMaximum=2", "");
    let (mut raw, _) = Raw::connected(broker.addr, V5, "greedy").await;
    for id in 1..=3u8 {
        raw.send(&[0x34, 0x06, 0x00, 0x01, b'a', 0x00, id, 0x00])
            .await;
    }
    expect_receive_maximum_exceeded(&mut raw).await;
}

/// [MQTT-3.3.4-9] The example: receiveMaximum=2 and three QoS 1 PUBLISH sent without
/// waiting for PUBACK: the third arrives while two are unacknowledged, so 0x93.
#[tokio::test]
async fn three_pipelined_qos1_publishes_exceed_receive_maximum_two() {
    let broker = TestBroker::start(";receiveMaximum=2", "");
    let (mut raw, _) = Raw::connected(broker.addr, V5, "eager").await;
    let mut three = Vec::new();
    for id in 1..=3u8 {
        three.extend([0x32, 0x06, 0x00, 0x01, b'a', 0x00, id, 0x00]);
    }
    raw.send(&three).await;
    expect_receive_maximum_exceeded(&mut raw).await;
}

/// Within the quota, pipelined QoS 1 publishes are all acknowledged, in order
/// ([MQTT-4.6.0-2]).
#[tokio::test]
async fn pipelined_qos1_publishes_within_receive_maximum_are_acknowledged_in_order() {
    let broker = TestBroker::start(";receiveMaximum=10", "");
    let (mut raw, _) = Raw::connected(broker.addr, V5, "steady").await;
    let mut batch = Vec::new();
    for (i, topic) in [b'a', b'b', b'c', b'd', b'e'].iter().enumerate() {
        batch.extend([0x32, 0x06, 0x00, 0x01, *topic, 0x00, i as u8 + 1, 0x00]);
    }
    raw.send(&batch).await;
    for id in 1..=5u16 {
        match raw.recv().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id.get(), id),
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
}

// Before CONNACK.

bad_packet!(
    /// [MQTT-3.1.0-1] The first packet must be CONNECT.
    first_packet_not_connect_closes,
    "", V311, false, [0xC0, 0x00], Closed);
bad_packet!(
    /// [MQTT-3.1.2-1] An unknown protocol name gets return code 1 and a close.
    wrong_protocol_name_is_unsupported_protocol_version,
    "", V311, false,
    [0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'X', 0x04, 0x02, 0x00, 0x1E, 0x00, 0x00],
    Refused(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION));
bad_packet!(
    /// [MQTT-3.1.2-2] An unsupported protocol level gets return code 1 and a close.
    unsupported_protocol_level_is_refused,
    "", V311, false,
    [0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x1E, 0x00, 0x00],
    Refused(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION));
bad_packet!(
    /// [MQTT-3.1.2-3] The reserved CONNECT flag must be 0: a v5 client gets CONNACK 0x81.
    v5_connect_with_reserved_flag_gets_connack_malformed,
    "", V5, false,
    [0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x03, 0x00, 0x1E, 0x00, 0x00, 0x01, b'c'],
    Refused(ReasonCode::MALFORMED_PACKET));
bad_packet!(
    /// [MQTT-3.1.2-3] ... and a 3.1.1 client sees the connection closed.
    v311_connect_with_reserved_flag_closes,
    "", V311, false,
    [0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x1E, 0x00, 0x01, b'c'],
    Closed);
bad_packet!(
    /// [MQTT-3.1.2-22] A 3.1.1 password without a user name is malformed.
    v311_password_without_username_closes,
    "", V311, false,
    [0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x42, 0x00, 0x1E, 0x00, 0x01, b'c', 0x00, 0x02, b'p', b'w'],
    Closed);
bad_packet!(
    /// [MQTT-3.1.2-12] Will QoS 3 is malformed.
    will_qos_3_closes,
    "", V311, false,
    [0x10, 0x14, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x1E, 0x00, 0x1E, 0x00, 0x01, b'c',
     0x00, 0x01, b't', 0x00, 0x02, b'h', b'i'],
    Closed);

// MQTT 3.1.1 has no DISCONNECT from the server: the connection is closed.

bad_packet!(
    /// [MQTT-4.8.0-1] On a 3.1.1 protocol violation the connection is closed.
    v311_publish_to_wildcard_topic_closes,
    V311, [0x30, 0x04, 0x00, 0x01, b'#', b'x'], Closed);
bad_packet!(
    /// [MQTT-3.8.3-3] A 3.1.1 SUBSCRIBE without filters closes the connection.
    v311_subscribe_without_filters_closes,
    V311, [0x82, 0x02, 0x00, 0x01], Closed);
bad_packet!(
    /// A 3.1.1 client may not send AUTH (packet type 15).
    v311_auth_packet_closes,
    V311, [0xF0, 0x00], Closed);
bad_packet!(
    /// A 3.1.1 packet over maximumPacketSize closes the connection.
    v311_packet_over_maximum_packet_size_closes,
    ";maximumPacketSize=32", V311, true,
    {
        let mut v = vec![0x30, 0x40, 0x00, 0x01, b'a'];
        v.extend([b'x'; 61]);
        v
    }, Closed);
