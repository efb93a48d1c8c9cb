//! The byte formats of what the store keeps: messages, queue entries, sessions, subscriptions.
//!
//! A message is kept as an MQTT 5 PUBLISH (the codec every message already passes through, so
//! topics, payloads and every property survive unchanged) behind its absolute expiry time. The
//! other records are small fixed layouts with a leading version byte, so a later format can
//! still read these. Decoding never panics: a record that does not parse is a `Corrupt` error
//! naming what it was, which the store reports with the file's name.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use starling_proto::session::InflightState;
use starling_proto::{
    decode, encode, Limits, Packet, PacketId, Protocol, Publish, QoS, RetainHandling,
    SubscriptionOptions,
};

use crate::msg::{Message, Will};

const VERSION: u8 = 1;

/// A record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable {what} record")]
pub struct Corrupt {
    /// What kind of record it was.
    pub what: &'static str,
}

fn corrupt(what: &'static str) -> Corrupt {
    Corrupt { what }
}

/// Wall-clock milliseconds for an `Instant` (`0` for `None`): instants do not survive a restart.
pub fn instant_to_unix_ms(at: Option<Instant>) -> u64 {
    let Some(at) = at else { return 0 };
    let now = Instant::now();
    let wall = SystemTime::now();
    let wall_at = if at >= now {
        wall + (at - now)
    } else {
        wall.checked_sub(now - at).unwrap_or(UNIX_EPOCH)
    };
    wall_at
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| (d.as_millis() as u64).max(1))
}

/// The `Instant` for wall-clock milliseconds (`None` for 0).
pub fn unix_ms_to_instant(ms: u64) -> Option<Instant> {
    if ms == 0 {
        return None;
    }
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    let now = Instant::now();
    Some(match at.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead,
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    })
}

/// Wall-clock milliseconds now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A message: its expiry (wall-clock ms, 0 none), then the MQTT 5 PUBLISH.
pub fn encode_message(msg: &Message) -> Bytes {
    let publish = Publish {
        dup: false,
        qos: msg.qos,
        retain: msg.retain,
        topic: msg.topic.clone(),
        packet_id: (msg.qos != QoS::AtMostOnce).then_some(PacketId::MIN),
        properties: msg.properties.clone(),
        payload: msg.payload.clone(),
    };
    let mut buf = BytesMut::with_capacity(msg.payload.len() + msg.topic.as_str().len() + 32);
    buf.put_u8(VERSION);
    buf.put_u64(instant_to_unix_ms(msg.expires_at));
    // A message the broker accepted always encodes; an empty record would read as corrupt.
    let _ = encode(&Packet::Publish(publish), Protocol::V5, &mut buf);
    buf.freeze()
}

/// Reads a message written by `encode_message`.
pub(super) fn decode_message(mut bytes: &[u8]) -> Result<Message, Corrupt> {
    let what = "message";
    if bytes.remaining() < 9 || bytes.get_u8() != VERSION {
        return Err(corrupt(what));
    }
    let expires_at = unix_ms_to_instant(bytes.get_u64());
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, &Limits::new(Protocol::V5)) {
        Ok(Some(Packet::Publish(p))) => Ok(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
            origin: None,
            expires_at,
        }),
        _ => Err(corrupt(what)),
    }
}

/// One message held for one session: how it is delivered and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers to send.
    pub subscription_ids: Vec<u32>,
    /// The shared subscription it came through.
    pub shared: Option<Arc<str>>,
    /// `None` while queued; in flight with its packet id and state.
    pub inflight: Option<(PacketId, InflightState)>,
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u32(s.len() as u32);
    buf.put_slice(s.as_bytes());
}

fn get_str(bytes: &mut &[u8], what: &'static str) -> Result<String, Corrupt> {
    if bytes.remaining() < 4 {
        return Err(corrupt(what));
    }
    let len = bytes.get_u32() as usize;
    if bytes.remaining() < len {
        return Err(corrupt(what));
    }
    let s = std::str::from_utf8(&bytes[..len]).map_err(|_| corrupt(what))?;
    let s = s.to_owned();
    bytes.advance(len);
    Ok(s)
}

fn get_u8(bytes: &mut &[u8], what: &'static str) -> Result<u8, Corrupt> {
    bytes.try_get_u8().map_err(|_| corrupt(what))
}

fn get_u16(bytes: &mut &[u8], what: &'static str) -> Result<u16, Corrupt> {
    bytes.try_get_u16().map_err(|_| corrupt(what))
}

fn get_u32(bytes: &mut &[u8], what: &'static str) -> Result<u32, Corrupt> {
    bytes.try_get_u32().map_err(|_| corrupt(what))
}

fn get_u64(bytes: &mut &[u8], what: &'static str) -> Result<u64, Corrupt> {
    bytes.try_get_u64().map_err(|_| corrupt(what))
}

fn qos_from(byte: u8, what: &'static str) -> Result<QoS, Corrupt> {
    QoS::from_u8(byte).ok_or(corrupt(what))
}

impl EntryRecord {
    /// The bytes of this entry.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(16 + 4 * self.subscription_ids.len());
        buf.put_u8(VERSION);
        buf.put_u8(self.qos as u8);
        buf.put_u8(u8::from(self.retain));
        let (id, state) = match self.inflight {
            None => (0, 0),
            Some((id, InflightState::AwaitingPubAck)) => (id.get(), 1),
            Some((id, InflightState::AwaitingPubRec)) => (id.get(), 2),
            Some((id, InflightState::AwaitingPubComp)) => (id.get(), 3),
        };
        buf.put_u8(state);
        buf.put_u16(id);
        buf.put_u16(self.subscription_ids.len() as u16);
        for sid in &self.subscription_ids {
            buf.put_u32(*sid);
        }
        match &self.shared {
            Some(group) => {
                buf.put_u8(1);
                put_str(&mut buf, group);
            }
            None => buf.put_u8(0),
        }
        buf.freeze()
    }

    /// Reads an entry written by `encode`.
    pub fn decode(mut bytes: &[u8]) -> Result<EntryRecord, Corrupt> {
        let what = "queue entry";
        let b = &mut bytes;
        if get_u8(b, what)? != VERSION {
            return Err(corrupt(what));
        }
        let qos = qos_from(get_u8(b, what)?, what)?;
        let retain = get_u8(b, what)? != 0;
        let state = get_u8(b, what)?;
        let id = get_u16(b, what)?;
        let inflight = match (state, PacketId::new(id)) {
            (0, _) => None,
            (1, Some(id)) => Some((id, InflightState::AwaitingPubAck)),
            (2, Some(id)) => Some((id, InflightState::AwaitingPubRec)),
            (3, Some(id)) => Some((id, InflightState::AwaitingPubComp)),
            _ => return Err(corrupt(what)),
        };
        let count = get_u16(b, what)?;
        let mut subscription_ids = Vec::with_capacity(usize::from(count).min(64));
        for _ in 0..count {
            subscription_ids.push(get_u32(b, what)?);
        }
        let shared = match get_u8(b, what)? {
            0 => None,
            _ => Some(Arc::from(get_str(b, what)?)),
        };
        Ok(EntryRecord {
            qos,
            retain,
            subscription_ids,
            shared,
            inflight,
        })
    }
}

/// The session record's format. Version 1 was written before an MQTT 5 CONNECT without a
/// Session Expiry Interval meant 0: a version-1 session that never expires may be one of the
/// sessions that bug kept (see `SessionRecord::bound_legacy`).
const SESSION_VERSION: u8 = 2;

/// How long a version-1 session that never expires is kept after the upgrade that reads it,
/// unless its client connects again (its CONNECT then decides anew): a day.
pub const LEGACY_SESSION_GRACE_SECS: u32 = 86_400;

/// A persistent session's own state (its subscriptions and messages are separate records).
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Seconds it outlives its connection; `None` never expires.
    pub expiry: Option<u32>,
    /// When its client disconnected (wall-clock ms); `None` while connected.
    pub offline_since: Option<u64>,
    /// The user name it authenticated with, for authorizing its will after a restart.
    pub username: Option<String>,
    /// Its will, if one is pending.
    pub will: Option<Will>,
}

impl SessionRecord {
    /// The bytes of this record.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u8(SESSION_VERSION);
        match self.expiry {
            Some(s) => {
                buf.put_u8(1);
                buf.put_u32(s);
            }
            None => buf.put_u8(0),
        }
        buf.put_u64(self.offline_since.unwrap_or(0));
        match &self.username {
            Some(u) => {
                buf.put_u8(1);
                put_str(&mut buf, u);
            }
            None => buf.put_u8(0),
        }
        match &self.will {
            Some(will) => {
                buf.put_u8(1);
                buf.put_u32(will.delay);
                let msg = encode_message(&will.msg);
                buf.put_u32(msg.len() as u32);
                buf.put_slice(&msg);
            }
            None => buf.put_u8(0),
        }
        buf.freeze()
    }

    /// Reads a record written by `encode` (or by an earlier version).
    pub fn decode(bytes: &[u8]) -> Result<SessionRecord, Corrupt> {
        Self::decode_versioned(bytes).map(|(record, _)| record)
    }

    /// Reads a record and says which format it was written in.
    pub fn decode_versioned(mut bytes: &[u8]) -> Result<(SessionRecord, u8), Corrupt> {
        let what = "session";
        let b = &mut bytes;
        let version = get_u8(b, what)?;
        if !(1..=SESSION_VERSION).contains(&version) {
            return Err(corrupt(what));
        }
        let expiry = match get_u8(b, what)? {
            0 => None,
            _ => Some(get_u32(b, what)?),
        };
        let offline_since = Some(get_u64(b, what)?).filter(|&ms| ms != 0);
        let username = match get_u8(b, what)? {
            0 => None,
            _ => Some(get_str(b, what)?),
        };
        let will = match get_u8(b, what)? {
            0 => None,
            _ => {
                let delay = get_u32(b, what)?;
                let len = get_u32(b, what)? as usize;
                if b.remaining() < len {
                    return Err(corrupt(what));
                }
                let msg = decode_message(&b[..len])?;
                Some(Will { msg, delay })
            }
        };
        let record = SessionRecord {
            expiry,
            offline_since,
            username,
            will,
        };
        Ok((record, version))
    }

    /// Upgrading from format 1: a session that never expires was either an MQTT 3.x
    /// persistent session (kept by `defaultMqttSessionExpiryInterval` -1, rightly) or an MQTT 5
    /// session whose client sent no Session Expiry Interval (which should have ended with its
    /// connection); format 1 cannot tell them apart. Such a session is kept for
    /// `LEGACY_SESSION_GRACE_SECS` from `now_ms`, counted as offline from then: a client that
    /// comes back within the grace keeps its session (and its CONNECT sets the expiry anew),
    /// and the sessions the bug left behind are gone a day after the upgrade. Says whether it
    /// changed anything.
    pub fn bound_legacy(&mut self, version: u8, now_ms: u64) -> bool {
        if version >= SESSION_VERSION || self.expiry.is_some() {
            return false;
        }
        self.expiry = Some(LEGACY_SESSION_GRACE_SECS);
        self.offline_since = Some(now_ms);
        true
    }
}

/// A subscription's options and identifier.
pub(super) fn encode_subscription(options: SubscriptionOptions, id: Option<u32>) -> Bytes {
    let mut buf = BytesMut::with_capacity(10);
    buf.put_u8(VERSION);
    buf.put_u8(
        options.qos as u8
            | u8::from(options.no_local) << 2
            | u8::from(options.retain_as_published) << 3
            | (options.retain_handling as u8) << 4,
    );
    match id {
        Some(id) => {
            buf.put_u8(1);
            buf.put_u32(id);
        }
        None => buf.put_u8(0),
    }
    buf.freeze()
}

/// Reads a subscription written by `encode_subscription`.
pub(super) fn decode_subscription(
    mut bytes: &[u8],
) -> Result<(SubscriptionOptions, Option<u32>), Corrupt> {
    let what = "subscription";
    let b = &mut bytes;
    if get_u8(b, what)? != VERSION {
        return Err(corrupt(what));
    }
    let flags = get_u8(b, what)?;
    let retain_handling = match flags >> 4 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(corrupt(what)),
    };
    let options = SubscriptionOptions {
        qos: qos_from(flags & 3, what)?,
        no_local: flags & 4 != 0,
        retain_as_published: flags & 8 != 0,
        retain_handling,
    };
    let id = match get_u8(b, what)? {
        0 => None,
        _ => Some(get_u32(b, what)?),
    };
    Ok((options, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_proto::{Properties, TopicName};

    fn message() -> Message {
        Message {
            topic: TopicName::new("a/b").expect("topic"),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Some(Box::new(Properties {
                content_type: Some("text/plain".into()),
                ..Properties::default()
            })),
            origin: None,
            expires_at: Some(Instant::now() + Duration::from_secs(60)),
        }
    }

    #[test]
    fn messages_survive_their_encoding() {
        let msg = message();
        let back = decode_message(&encode_message(&msg)).expect("decodes");
        assert_eq!(back.topic, msg.topic);
        assert_eq!(back.payload, msg.payload);
        assert_eq!(back.qos, msg.qos);
        assert!(back.retain);
        assert_eq!(back.properties, msg.properties);
        let left = back
            .expires_at
            .expect("expiry")
            .duration_since(Instant::now());
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60));
    }

    #[test]
    fn entries_sessions_and_subscriptions_survive_their_encoding() {
        let entry = EntryRecord {
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![3, 9],
            shared: Some(Arc::from("$share/g/a")),
            inflight: PacketId::new(42).map(|id| (id, InflightState::AwaitingPubComp)),
        };
        assert_eq!(EntryRecord::decode(&entry.encode()), Ok(entry));
        let session = SessionRecord {
            expiry: Some(30),
            offline_since: Some(1_700_000_000_000),
            username: Some("ann".into()),
            will: Some(Will {
                msg: message(),
                delay: 5,
            }),
        };
        let back = SessionRecord::decode(&session.encode()).expect("decodes");
        assert_eq!(back.expiry, Some(30));
        assert_eq!(back.offline_since, session.offline_since);
        assert_eq!(back.username.as_deref(), Some("ann"));
        assert_eq!(back.will.map(|w| w.delay), Some(5));
        let options = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: false,
            retain_handling: RetainHandling::DoNotSend,
        };
        assert_eq!(
            decode_subscription(&encode_subscription(options, Some(7))),
            Ok((options, Some(7)))
        );
    }

    /// A format-1 session that never expires (possibly kept by the MQTT 5 expiry bug) gets a
    /// day from the upgrade; one with an expiry, or written in format 2, is left as it is.
    #[test]
    fn a_legacy_session_that_never_expires_is_bounded_at_upgrade() {
        let record = |expiry| SessionRecord {
            expiry,
            offline_since: Some(5),
            username: None,
            will: None,
        };
        let mut v1 = record(None).encode().to_vec();
        v1[0] = 1;
        let (mut legacy, version) = SessionRecord::decode_versioned(&v1).expect("decodes");
        assert_eq!(version, 1);
        assert!(legacy.bound_legacy(version, 1_000));
        assert_eq!(legacy.expiry, Some(LEGACY_SESSION_GRACE_SECS));
        assert_eq!(legacy.offline_since, Some(1_000));

        let mut bounded = record(Some(30));
        assert!(!bounded.bound_legacy(1, 1_000));
        assert_eq!(bounded.offline_since, Some(5));
        let (mut current, version) =
            SessionRecord::decode_versioned(&record(None).encode()).expect("decodes");
        assert_eq!(version, SESSION_VERSION);
        assert!(!current.bound_legacy(version, 1_000));
        assert_eq!(current.expiry, None);
    }

    #[test]
    fn truncated_or_garbled_records_are_errors_not_panics() {
        let bytes = SessionRecord {
            expiry: None,
            offline_since: None,
            username: Some("bob".into()),
            will: Some(Will {
                msg: message(),
                delay: 0,
            }),
        }
        .encode();
        for len in 0..bytes.len() {
            assert!(
                SessionRecord::decode(&bytes[..len]).is_err(),
                "prefix {len}"
            );
        }
        assert!(decode_message(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]).is_err());
        assert!(EntryRecord::decode(&[9]).is_err());
        assert!(decode_subscription(&[1, 0xff, 0]).is_err());
    }
}
