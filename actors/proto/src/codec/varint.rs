//! The Variable Byte Integer ([MQTT-1.5.5]): the remaining length, property lengths, and the
//! Subscription Identifier. Seven bits per byte, least significant group first, at most four
//! bytes, and always the shortest form.

use bytes::{BufMut, BytesMut};

use super::DecodeError;

/// The largest value four bytes can hold: also the largest remaining length.
pub(crate) const MAX: u32 = 268_435_455;

/// Bytes needed to encode `value` (which must be at most [`MAX`]).
pub(super) fn len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends `value` (at most [`MAX`]; callers check) in its shortest form.
pub(super) fn write(mut value: u32, buf: &mut BytesMut) {
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        if value == 0 {
            buf.put_u8(byte);
            return;
        }
        buf.put_u8(byte | 0x80);
    }
}

/// Reads a Variable Byte Integer from the front of `bytes`.
///
/// `Ok(None)`: `bytes` ends before the integer does. `Ok(Some((value, bytes used)))`.
/// A fifth byte, or a longer form than needed ([MQTT-1.5.5-1]), is a Malformed Packet.
pub(super) fn read(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (index, &byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            if byte == 0 && index > 0 {
                return Err(DecodeError::MalformedPacket(
                    "variable byte integer not in its shortest form",
                ));
            }
            return Ok(Some((value, index + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::MalformedPacket(
            "variable byte integer longer than 4 bytes",
        ))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: u32) -> Vec<u8> {
        let mut buf = BytesMut::new();
        write(value, &mut buf);
        assert_eq!(buf.len(), len(value));
        buf.to_vec()
    }

    #[test]
    fn boundaries_from_the_specification() {
        // Table 1-1 / 2.2.3 of the specifications.
        let cases: [(u32, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (MAX, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for (value, bytes) in cases {
            assert_eq!(encoded(value), bytes);
            assert_eq!(read(bytes), Ok(Some((value, bytes.len()))));
        }
    }

    #[test]
    fn incomplete_too_long_and_overlong_forms() {
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(read(&[0x80]), Ok(None));
        assert_eq!(read(&[0xFF, 0xFF, 0xFF]), Ok(None));
        assert!(read(&[0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(read(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
        assert!(read(&[0x80, 0x00]).is_err());
        assert!(read(&[0x81, 0x80, 0x00]).is_err());
        // Trailing bytes after the integer are not its business.
        assert_eq!(read(&[0x05, 0xFF]), Ok(Some((5, 1))));
    }

    #[test]
    fn every_length_round_trips() {
        for value in (0..20_000).chain([MAX - 1, MAX, 2_097_151, 2_097_152]) {
            let bytes = encoded(value);
            assert_eq!(read(&bytes), Ok(Some((value, bytes.len()))));
        }
    }
}
