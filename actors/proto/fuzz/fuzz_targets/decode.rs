//! Fuzz target `decode`: arbitrary bytes through `decode` for every protocol version.
//!
//! Checks that decoding never panics, whatever the input, and that every packet it accepts
//! encodes (with `encoded_len` exact) and decodes back to the same packet. The first input byte
//! also picks a maximum packet size, so the size check is exercised too.
//!
//! Run: `cargo fuzz run -s none decode -- -max_total_time=600` from `actors/proto`.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use starling_proto::{decode, encode, encoded_len, Limits, Protocol};

fuzz_target!(|data: &[u8]| {
    let max_packet_size = match data.first() {
        Some(&b) if b & 0x80 != 0 => Some(u32::from(b & 0x7F) * 4),
        _ => None,
    };
    for protocol in [Protocol::V31, Protocol::V311, Protocol::V5] {
        let limits = Limits {
            protocol,
            max_packet_size,
        };
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, &limits) {
            let mut out = BytesMut::new();
            if let Err(e) = encode(&packet, protocol, &mut out) {
                panic!("decoded {packet:?} but cannot encode it: {e}");
            }
            assert_eq!(encoded_len(&packet, protocol).ok(), Some(out.len()));
            let again = decode(&mut out, &Limits::new(protocol));
            assert_eq!(
                again,
                Ok(Some(packet)),
                "re-encoded packet decodes differently"
            );
            assert!(out.is_empty());
        }
    }
});
