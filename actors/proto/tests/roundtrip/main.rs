//! Property tests: every valid packet of every kind survives `decode(encode(p))` for MQTT 3.1,
//! 3.1.1 and 5.0, `encoded_len` is exact, and no input at all makes the decoder panic.

#![allow(clippy::unwrap_used)]

mod strategies;

use bytes::BytesMut;
use proptest::prelude::*;
use starling_proto::{decode, encode, encoded_len, Limits, Packet, Protocol};

const PROTOCOLS: [Protocol; 3] = [Protocol::V31, Protocol::V311, Protocol::V5];

fn round_trip(packet: &Packet, protocol: Protocol) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    encode(packet, protocol, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(encoded_len(packet, protocol).unwrap(), buf.len());
    let limits = Limits {
        protocol,
        max_packet_size: Some(buf.len() as u32),
    };
    let decoded = decode(&mut buf, &limits).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(decoded.as_ref(), Some(packet));
    prop_assert!(buf.is_empty());
    Ok(())
}

/// Decodes everything in `bytes` until it needs more or fails; whatever decodes must
/// re-encode and decode to itself.
fn decode_all(bytes: &[u8], protocol: Protocol) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(bytes);
    let limits = Limits::new(protocol);
    while let Ok(Some(packet)) = decode(&mut buf, &limits) {
        // CONNECT is read in its own protocol, and so is written.
        let mut again = BytesMut::new();
        encode(&packet, protocol, &mut again).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let redecoded =
            decode(&mut again, &limits).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(redecoded.as_ref(), Some(&packet));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn v31_packets_round_trip(packet in strategies::packet(Protocol::V31)) {
        round_trip(&packet, Protocol::V31)?;
    }

    #[test]
    fn v311_packets_round_trip(packet in strategies::packet(Protocol::V311)) {
        round_trip(&packet, Protocol::V311)?;
    }

    #[test]
    fn v5_packets_round_trip(packet in strategies::packet(Protocol::V5)) {
        round_trip(&packet, Protocol::V5)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for protocol in PROTOCOLS {
            decode_all(&bytes, protocol)?;
        }
    }

    /// Valid packets with a few bytes changed or cut reach far deeper into the decoder than
    /// random bytes do.
    #[test]
    fn mutated_packets_never_panic(
        packet in strategies::packet(Protocol::V5),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        for protocol in PROTOCOLS {
            let mut buf = BytesMut::new();
            if encode(&packet, protocol, &mut buf).is_err() {
                continue;
            }
            let mut bytes = buf.to_vec();
            for (at, byte) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *byte;
            }
            decode_all(&bytes, protocol)?;
            decode_all(&bytes[..cut.index(bytes.len() + 1)], protocol)?;
        }
    }
}

/// The strategies really produce every packet kind, with properties on MQTT 5 only: a
/// round-trip test over a narrow generator would prove little.
#[test]
fn strategies_cover_every_kind() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeSet;

    for protocol in PROTOCOLS {
        let mut runner = TestRunner::deterministic();
        let strategy = strategies::packet(protocol);
        let mut kinds = BTreeSet::new();
        let mut with_properties = 0;
        let mut shared = 0;
        for _ in 0..3000 {
            let packet = strategy.new_tree(&mut runner).unwrap().current();
            kinds.insert(packet.kind());
            let props = match &packet {
                Packet::Connect(c) => c.properties.is_some(),
                Packet::Publish(p) => p.properties.is_some(),
                Packet::Subscribe(s) => {
                    shared += s
                        .filters
                        .iter()
                        .filter(|f| f.0.shared_group().is_some())
                        .count();
                    s.properties.is_some()
                }
                Packet::Disconnect(d) => d.properties.is_some(),
                _ => false,
            };
            with_properties += usize::from(props);
        }
        let expected = if protocol.is_v5() { 15 } else { 14 };
        assert_eq!(kinds.len(), expected, "{protocol}: {kinds:?}");
        assert_eq!(
            with_properties > 100,
            protocol.is_v5(),
            "{protocol}: {with_properties}"
        );
        assert!(shared > 10, "{protocol}: {shared} shared filters");
    }
}
