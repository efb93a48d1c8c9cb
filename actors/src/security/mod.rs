//! Access decisions: who may connect, publish, subscribe and receive.
//!
//! `SecurityManager` is the one seam: `authenticate` sees the CONNECT (and may rewrite or
//! reject the client id: the Artemis "custom client ID handling"), `authorize_publish`,
//! `authorize_subscribe` and `authorize_receive` decide per topic. `DefaultSecurityManager`
//! reads Mosquitto-format password and ACL files (`password`, `acl`); a deployment can wrap it
//! to change one thing (see `examples/security_manager.rs`). `FailureTracker` slows repeated
//! failed logins from one address.
//!
//! MQTT 5 enhanced authentication: an `AuthMethod` is a named mechanism (`SCRAM-SHA-256` ships with Starling). A CONNECT that
//! names a configured method starts an `AuthConversation`; each AUTH packet from the client is a
//! step, until the method says success (CONNACK 0x00, or AUTH 0x00 on re-authentication) or
//! failure (CONNACK 0x86/0x87, or DISCONNECT). A CONNECT naming a method that is not configured
//! gets CONNACK 0x8C, the seed's behaviour. Methods are plain values behind a trait, so a
//! deployment can add its own (Kerberos, OAuth token exchange, ...) without touching the
//! Connection.

pub mod acl;
mod manager;
pub mod password;
pub mod scram;

pub use manager::{
    AuthError, ConnectInfo, DefaultSecurityManager, FailureTracker, Principal, SecurityManager,
    SecurityOptions,
};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use starling_proto::ReasonCode;

/// What one step of an authentication conversation decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send this challenge to the client (AUTH 0x18) and wait for its answer.
    Continue(Bytes),
    /// Authenticated; `data` goes back to the client in CONNACK (or AUTH 0x00).
    Success {
        /// Final authentication data (e.g. the SCRAM server signature).
        data: Option<Bytes>,
        /// Who the client proved to be.
        identity: String,
    },
    /// Refused with this reason code (0x86 bad credentials, 0x87 not authorized, ...).
    Failure(ReasonCode),
}

/// A running authentication exchange with one client.
pub trait AuthConversation: Send + fmt::Debug {
    /// The client's next Authentication Data.
    fn step(&mut self, data: &[u8]) -> AuthStep;
}

/// A challenge/response authentication method.
pub trait AuthMethod: Send + Sync + fmt::Debug {
    /// The Authentication Method name clients use.
    fn name(&self) -> &str;
    /// Starts a conversation with the client's first Authentication Data.
    fn start(&self, data: &[u8]) -> (Box<dyn AuthConversation>, AuthStep);
}

/// The configured authentication methods, by name. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AuthMethods(Arc<HashMap<String, Arc<dyn AuthMethod>>>);

impl AuthMethods {
    /// The given methods.
    pub fn new(methods: Vec<Arc<dyn AuthMethod>>) -> AuthMethods {
        AuthMethods(Arc::new(
            methods
                .into_iter()
                .map(|m| (m.name().to_owned(), m))
                .collect(),
        ))
    }

    /// The method with this name, if configured.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn AuthMethod>> {
        self.0.get(name)
    }
}
