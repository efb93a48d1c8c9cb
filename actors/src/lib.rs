//! `starling-actors`: the Starling MQTT broker as an actix actor system.
//!
//! A map of the crate, in the order data flows through it:
//!
//! - [`broker`]: opens the store and starts the long-lived actors (supervised) with what it
//!   holds; `BrokerHandle::accept` turns a socket into a
//!   Connection; `Broker::shutdown` closes every connection (MQTT 5: DISCONNECT 0x8B).
//! - [`connection`]: the Connection actor, one per socket: decode, CONNECT handshake, keep
//!   alive, topic aliases, inbound QoS 1/2 acknowledgement, encode and batched writes. Its
//!   timers (CONNECT timeout, keep alive, shutdown) are one clock per worker thread
//!   (`connection::clock`), not timers per connection.
//! - [`registry`]: client id -> Session: the session table shared by the workers, where a
//!   CONNECT finds or starts its session on its own thread (attaches for one id in order,
//!   takeover) and a session that ends leaves; and the Registry actor that owns it (recovery,
//!   queries, dropping dead entries when it restarts).
//! - [`session`]: the Session actor, one per client id, outliving connections until expiry:
//!   subscriptions (the source of truth), QoS 1/2 in flight and the bounded queue (the state
//!   machine is `proto::session`), inbound QoS 2 ids (`proto::inbound`), the will, and the will of a connection
//!   taken over until that connection says whether it had disconnected (`session::takeover`).
//! - [`security`]: MQTT 5 enhanced authentication: the `AuthMethod` hook and SCRAM-SHA-256.
//! - [`retain`]: the RetainStore actor: last retained message per topic, expiry, matching.
//! - [`topic`]: TopicNode actors, the subscription trie sharded by first topic level, and the
//!   `Router` that picks a shard.
//! - [`store`]: the durable store (redb behind one group-committing writer thread): persistent
//!   sessions, subscriptions, queued and in-flight messages, inbound QoS 2 ids, retained
//!   messages; recovery at start-up (with the wills of sessions that expired meanwhile); a
//!   failed commit makes the broker give up.
//! - [`supervisor`]: restarts failed actors in place with their state; the restart budget;
//!   test-only fault injection.
//! - [`msg`]: every message exchanged between actors: the contract.
//! - [`busy_poll`]: a busy worker polls its sockets for `core.busy_poll` µs before it sleeps,
//!   so that senders do not pay for waking it; [`busy_poll::touch`] marks arriving work.
//! - [`metrics`]: per-worker counters; the reporter logs them and publishes `$SYS` topics.
//! - [`protocol`]: packet TRACE logging on the `protocol` logger.
//! - [`config`]: the typed acceptor and broker parameters the actors obey.
//! - `rare`: `Rare<T>`, state kept out of line until used, so idle clients stay small.
//!
//! The protocol itself (packets, codec, topics, trie) is the sans-IO crate `starling-proto`,
//! re-exported as [`proto`].

pub mod broker;
pub mod busy_poll;
pub mod config;
pub mod connection;
pub mod metrics;
pub mod msg;
pub mod protocol;
mod rare;
pub mod registry;
pub mod retain;
pub mod security;
pub mod session;
pub mod store;
pub mod supervisor;
pub mod topic;

pub use starling_proto as proto;
#[cfg(test)]
mod footprint {
    use std::mem::size_of;

    /// Every client costs one Session and one Connection future, each a tokio task rounded
    /// up to 128 bytes; idle memory per connection (README, Performance) depends on these
    /// staying below the boundaries they were cut to. Growing one is a decision, not an
    /// accident: box the new state (`rare::Rare`) or raise the bound and re-measure.
    #[test]
    fn idle_client_state_stays_small() {
        assert!(size_of::<crate::session::Session>() <= 512);
        assert!(size_of::<crate::connection::Connection>() <= 448);
    }
}
