//! `starling-proto`: the sans-IO core of Starling.
//!
//! Bytes and rules only: no actix, no tokio, no clock (callers pass time in). Everything here
//! can be tested deterministically without a runtime.
//!
//! - [`packet`]: one `Packet` model for MQTT 3.1, 3.1.1 and 5.0.
//! - [`codec`]: incremental `decode` and `encode`, variable byte integers, properties.
//! - [`reason`]: every MQTT 5 reason code, the 3.x return codes, and the one mapping from
//!   decoding errors to codes on the wire.
//! - [`topic`]: validated `TopicName` / `TopicFilter` newtypes and matching.
//! - [`trie`]: the subscription trie, generic over the subscriber value.
//! - [`topic_tree`]: values by topic name (retained messages), found by filter.
//! - [`lifecycle`]: how long a session outlives its connection, whether it has expired, and
//!   what a reconnect does to a pending will.
//! - [`session`]: a session's outbound state: packet ids, in-flight window, bounded queue,
//!   acknowledgements and replay on reconnect.
//! - [`inbound`]: a session's inbound QoS 2 state: unreleased packet ids and the PUBRECs owed,
//!   in order, each to the connection its PUBLISH came on.

pub mod codec;
pub mod inbound;
pub mod lifecycle;
pub mod packet;
pub mod reason;
pub mod session;
pub mod topic;
pub mod topic_tree;
pub mod trie;

pub use codec::{decode, encode, encoded_len, properties_len, DecodeError, EncodeError, Limits};
pub use packet::*;
pub use reason::ReasonCode;
pub use topic::{TopicError, TopicFilter, TopicName};
