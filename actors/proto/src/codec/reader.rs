//! Checked reads of the MQTT data types ([MQTT-1.5]) from one packet's bytes.
//!
//! Every read checks the length first and reports a Malformed Packet naming the field, so no
//! input can make the decoder panic. Binary fields are zero-copy slices of the packet.

use bytes::{Buf, Bytes};

use super::{varint, DecodeError};
use crate::topic::{TopicFilter, TopicName};

/// The unread rest of a packet's body (or of a property block).
#[derive(Debug)]
pub(super) struct Reader {
    bytes: Bytes,
}

fn malformed(what: &'static str) -> DecodeError {
    DecodeError::MalformedPacket(what)
}

impl Reader {
    pub(super) fn new(bytes: Bytes) -> Reader {
        Reader { bytes }
    }

    /// Bytes left.
    pub(super) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Fails unless every byte has been read: a field list shorter than the remaining length
    /// is a Malformed Packet.
    pub(super) fn finish(&self, packet: &'static str) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(malformed(packet))
        }
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.bytes.try_get_u8().map_err(|_| malformed(what))
    }

    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.bytes.try_get_u16().map_err(|_| malformed(what))
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.bytes.try_get_u32().map_err(|_| malformed(what))
    }

    pub(super) fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        match varint::read(&self.bytes)? {
            Some((value, used)) => {
                self.take(used, what)?;
                Ok(value)
            }
            None => Err(malformed(what)),
        }
    }

    /// The next `len` bytes, as a slice of the packet.
    pub(super) fn take(&mut self, len: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        if len > self.bytes.len() {
            return Err(malformed(what));
        }
        Ok(self.bytes.split_to(len))
    }

    /// Everything left (a PUBLISH payload).
    pub(super) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.bytes)
    }

    /// Binary Data: a two-byte length, then that many bytes.
    pub(super) fn binary(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    /// A UTF-8 Encoded String, handed to `f` while still borrowed from the packet: well-formed
    /// UTF-8 (which excludes surrogates) without U+0000 ([MQTT-1.5.4-1/2]).
    fn str_with<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&str) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let bytes = self.binary(what)?;
        let s = std::str::from_utf8(&bytes).map_err(|_| malformed(what))?;
        if s.contains('\0') {
            return Err(malformed(what));
        }
        f(s)
    }

    /// A UTF-8 Encoded String, owned.
    pub(super) fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        self.str_with(what, |s| Ok(s.to_owned()))
    }

    /// A topic name, with one allocation (its `Arc<str>`). An empty string is returned as
    /// `None`: whether that is allowed depends on the packet (a Topic Alias in MQTT 5).
    pub(super) fn topic_name(
        &mut self,
        what: &'static str,
    ) -> Result<Option<TopicName>, DecodeError> {
        self.str_with(what, |s| {
            if s.is_empty() {
                return Ok(None);
            }
            TopicName::new(s)
                .map(Some)
                .map_err(DecodeError::TopicNameInvalid)
        })
    }

    /// A topic filter; one that is not valid is [`DecodeError::TopicFilterInvalid`].
    pub(super) fn topic_filter(&mut self, what: &'static str) -> Result<TopicFilter, DecodeError> {
        self.str_with(what, |s| {
            TopicFilter::new(s).map_err(DecodeError::TopicFilterInvalid)
        })
    }
}
