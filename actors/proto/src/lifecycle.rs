//! A session's lifetime and its will: how long a session outlives its connection, whether it
//! still exists when a CONNECT asks for it, and what a new connection does to a pending will.
//!
//! These rules used to be decided in three places (the CONNECT handshake, the expiry scan and
//! the takeover path), and disagreed; each has one home here. Sans-IO: the caller passes `now`.

use std::time::{Duration, Instant};

use crate::packet::Protocol;

/// Seconds a session outlives its connection; `None` never expires.
pub type SessionExpiry = Option<u32>;

/// How long the session a CONNECT opens outlives its connection.
///
/// - MQTT 5: the client's Session Expiry Interval; absent means 0, the session ends when the
///   network connection closes [MQTT-3.1.2-23] (Artemis reads it the same way); `0xFFFFFFFF`
///   never expires. `default_3x` does not apply: the client said what it wants by not saying.
/// - MQTT 3.x: Clean Session 1 ends with the connection [MQTT-3.1.2-6]; otherwise the
///   acceptor's `defaultMqttSessionExpiryInterval` (`default_3x`, `None` for -1: never).
pub fn session_expiry(
    protocol: Protocol,
    clean_start: bool,
    requested: Option<u32>,
    default_3x: SessionExpiry,
) -> SessionExpiry {
    if protocol.is_v5() {
        match requested {
            Some(u32::MAX) => None,
            Some(seconds) => Some(seconds),
            None => Some(0),
        }
    } else if clean_start {
        Some(0)
    } else {
        default_3x
    }
}

/// Whether a session whose client left at `offline_since` has expired at `now`. A session
/// with its client connected (`None`) never has. The expiry scan only frees the memory of
/// sessions this says are gone; a CONNECT asks this too, so a session is never resumed after
/// its interval passed, however late the scan runs.
pub fn session_expired(
    expiry: SessionExpiry,
    offline_since: Option<Instant>,
    now: Instant,
) -> bool {
    match (expiry, offline_since) {
        (Some(seconds), Some(since)) => {
            now.saturating_duration_since(since) >= Duration::from_secs(u64::from(seconds))
        }
        _ => false,
    }
}

/// What a new network connection for the client id does to the will of the connection before
/// it, whatever the new connection's Clean Start:
/// - a will with a delay is discarded: the client came back before the delay passed
///   ([MQTT-3.1.3-9]; the delay exists so that a client that returns quickly causes no will,
///   and one that returns with a clean start has returned all the same);
/// - a will without delay was due when the old connection ended abnormally (a takeover ends
///   it so): it is published, unless that connection ended with a normal DISCONNECT
///   ([MQTT-3.1.2-10], which only the old connection can tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WillAtReconnect {
    /// Published (if the old connection did not end with DISCONNECT 0x00).
    Publish,
    /// Deleted unpublished.
    Discard,
}

/// See [`WillAtReconnect`]: `delay` is the will's Will Delay Interval, in seconds.
pub fn will_at_reconnect(delay: u32) -> WillAtReconnect {
    if delay == 0 {
        WillAtReconnect::Publish
    } else {
        WillAtReconnect::Discard
    }
}

/// How long after its client left a will is published: its delay, or at once when the
/// session ends first ([MQTT-3.1.2-8]: "whichever happens first"). `gone_for` is how long
/// the client has already been gone (a restart counts the broker's downtime).
pub fn will_wait(delay: u32, expiry: SessionExpiry, gone_for: Duration) -> Duration {
    let delay = Duration::from_secs(u64::from(delay));
    let until = match expiry {
        Some(seconds) => delay.min(Duration::from_secs(u64::from(seconds))),
        None => delay,
    };
    until.saturating_sub(gone_for)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [MQTT-3.1.2-23]: an MQTT 5 CONNECT without a Session Expiry Interval means 0, whatever
    /// the acceptor's default for 3.x clients.
    #[test]
    fn a_v5_connect_without_session_expiry_ends_with_its_connection() {
        for default in [None, Some(30)] {
            assert_eq!(session_expiry(Protocol::V5, false, None, default), Some(0));
            assert_eq!(session_expiry(Protocol::V5, true, None, default), Some(0));
        }
    }

    #[test]
    fn a_v5_session_expiry_is_the_clients() {
        assert_eq!(
            session_expiry(Protocol::V5, false, Some(10), Some(30)),
            Some(10)
        );
        assert_eq!(session_expiry(Protocol::V5, true, Some(10), None), Some(10));
        assert_eq!(
            session_expiry(Protocol::V5, false, Some(u32::MAX), Some(30)),
            None
        );
    }

    /// The seed's `defaultMqttSessionExpiryInterval` applies to 3.x persistent sessions only.
    #[test]
    fn a_3x_persistent_session_gets_the_acceptor_default() {
        for protocol in [Protocol::V31, Protocol::V311] {
            assert_eq!(session_expiry(protocol, false, None, None), None);
            assert_eq!(session_expiry(protocol, false, None, Some(30)), Some(30));
            assert_eq!(session_expiry(protocol, true, None, None), Some(0));
        }
    }

    #[test]
    fn a_session_expires_once_its_interval_has_passed_offline() {
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        assert!(!session_expired(Some(1), Some(t0), t0));
        assert!(session_expired(Some(1), Some(t0), later(1)));
        assert!(session_expired(Some(0), Some(t0), t0));
        // Connected, or never expiring: never.
        assert!(!session_expired(Some(1), None, later(100)));
        assert!(!session_expired(None, Some(t0), later(1_000_000)));
        // A clock read before `offline_since` (another thread) is not an expiry.
        assert!(!session_expired(Some(1), Some(later(5)), t0));
    }

    /// [MQTT-3.1.3-9]: a new connection before the delay ran out deletes a delayed will; a
    /// will without delay was due at once.
    #[test]
    fn a_new_connection_discards_a_delayed_will_and_publishes_an_immediate_one() {
        assert_eq!(will_at_reconnect(0), WillAtReconnect::Publish);
        assert_eq!(will_at_reconnect(1), WillAtReconnect::Discard);
        assert_eq!(will_at_reconnect(u32::MAX), WillAtReconnect::Discard);
    }

    /// [MQTT-3.1.2-8]: the will goes out after its delay or when the session ends, whichever
    /// comes first; time already gone counts.
    #[test]
    fn a_will_waits_for_its_delay_or_the_sessions_end() {
        let s = Duration::from_secs;
        assert_eq!(will_wait(10, None, s(0)), s(10));
        assert_eq!(will_wait(10, Some(3), s(0)), s(3));
        assert_eq!(will_wait(10, Some(30), s(4)), s(6));
        assert_eq!(will_wait(10, None, s(40)), Duration::ZERO);
        assert_eq!(will_wait(0, None, s(0)), Duration::ZERO);
    }
}
