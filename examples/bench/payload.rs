//! The payload every bench message carries, and the bookkeeping of which messages were sent,
//! acknowledged and received.
//!
//! Layout (big endian): magic `0xB5 0x42`, run id (u32), publisher id (u32), sequence number
//! (u64), send time in nanoseconds since the bench started (u64); then filler bytes that are a
//! function of (publisher, sequence, position), so that a corrupted or mixed-up payload is seen.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::{BufMut, BytesMut};

/// Size of the header; smaller `--payload` values are raised to it.
pub(crate) const HEADER: usize = 26;
/// First two bytes of every bench payload.
const MAGIC: [u8; 2] = [0xB5, 0x42];

/// The identity of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Identifies one run of the bench, so that messages of other runs (retained ones) are told
    /// apart.
    pub(crate) run: u32,
    /// The publisher's index.
    pub(crate) publisher: u32,
    /// The publisher's sequence number, from 0.
    pub(crate) seq: u64,
    /// When the message was encoded, in nanoseconds since the bench started.
    pub(crate) sent_ns: u64,
}

/// Why a payload was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Not a bench payload of this run (another client's message, an old retained one).
    Foreign,
    /// A bench payload of this run whose bytes are wrong.
    Corrupt,
}

/// The filler byte at `index`.
fn filler(publisher: u32, seq: u64, index: usize) -> u8 {
    (seq as u8) ^ (publisher as u8).wrapping_mul(31) ^ (index as u8)
}

/// Appends a payload of `len` bytes (at least `HEADER`) for `stamp`.
pub(crate) fn put(out: &mut BytesMut, stamp: Stamp, len: usize) {
    out.put_slice(&MAGIC);
    out.put_u32(stamp.run);
    out.put_u32(stamp.publisher);
    out.put_u64(stamp.seq);
    out.put_u64(stamp.sent_ns);
    for i in HEADER..len {
        out.put_u8(filler(stamp.publisher, stamp.seq, i));
    }
}

/// Reads and verifies a payload; `expected_len` is the size the publishers use.
pub(crate) fn read(payload: &[u8], run: u32, expected_len: usize) -> Result<Stamp, Bad> {
    if payload.len() < HEADER || payload[..2] != MAGIC {
        return Err(Bad::Foreign);
    }
    let u32_at = |at: usize| {
        u32::from_be_bytes([
            payload[at],
            payload[at + 1],
            payload[at + 2],
            payload[at + 3],
        ])
    };
    let u64_at = |at: usize| (u64::from(u32_at(at)) << 32) | u64::from(u32_at(at + 4));
    if u32_at(2) != run {
        return Err(Bad::Foreign);
    }
    let stamp = Stamp {
        run,
        publisher: u32_at(6),
        seq: u64_at(10),
        sent_ns: u64_at(18),
    };
    if payload.len() != expected_len {
        return Err(Bad::Corrupt);
    }
    let intact = payload[HEADER..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == filler(stamp.publisher, stamp.seq, i + HEADER));
    if intact {
        Ok(stamp)
    } else {
        Err(Bad::Corrupt)
    }
}

/// Nanoseconds since the bench started (the clock shared by publishers and subscribers).
pub(crate) fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// The instant `now_ns` counts from.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A growable set of sequence numbers (a bitmap).
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false when it was already there.
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        if word >= self.words.len() {
            self.words.resize((word + 1).max(self.words.len() * 2), 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.words[word] & bit != 0 {
            return false;
        }
        self.words[word] |= bit;
        self.len += 1;
        true
    }

    /// How many numbers are in the set.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// How many numbers of `self` are missing from `other`.
    pub(crate) fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }

    /// The set {0, 1, ..., n - 1}.
    pub(crate) fn first(n: u64) -> SeqSet {
        let mut set = SeqSet::default();
        let full = (n / 64) as usize;
        set.words = vec![u64::MAX; full];
        let rem = n % 64;
        if rem != 0 {
            set.words.push((1u64 << rem) - 1);
        }
        set.len = n;
        set
    }
}
