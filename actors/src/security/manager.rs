//! The `SecurityManager` trait, the default manager over password and ACL files, and the
//! failed-login tracker.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use starling_proto::{Protocol, ReasonCode, TopicFilter, TopicName};

use super::acl::Acl;
use super::password::PasswordFile;

/// What the broker knows about a connecting client. The manager may rewrite the client id.
#[derive(Clone)]
pub struct ConnectInfo {
    client_id: String,
    /// User Name from CONNECT.
    pub username: Option<String>,
    /// Password from CONNECT (never logged; `Debug` hides it).
    pub password: Option<Bytes>,
    /// The protocol version.
    pub protocol: Protocol,
    /// The client's address.
    pub peer: SocketAddr,
    /// Subject common name of the client's TLS certificate, if it presented one.
    pub certificate_identity: Option<String>,
    /// Who MQTT 5 enhanced authentication proved the client to be, if it was used.
    pub enhanced_identity: Option<String>,
}

impl fmt::Debug for ConnectInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectInfo")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("protocol", &self.protocol)
            .field("peer", &self.peer)
            .field("certificate_identity", &self.certificate_identity)
            .field("enhanced_identity", &self.enhanced_identity)
            .finish()
    }
}

impl ConnectInfo {
    /// A connecting client's details.
    pub fn new(client_id: String, protocol: Protocol, peer: SocketAddr) -> ConnectInfo {
        ConnectInfo {
            client_id,
            username: None,
            password: None,
            protocol,
            peer,
            certificate_identity: None,
            enhanced_identity: None,
        }
    }

    /// The client id (as rewritten so far).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Rewrites the client id: the session is looked up under the new one.
    pub fn set_client_id(&mut self, client_id: impl Into<String>) {
        self.client_id = client_id.into();
    }
}

/// Who a connected client is, for authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name authorization uses (`None`: anonymous).
    pub username: Option<String>,
    /// The client id after any rewrite.
    pub client_id: String,
}

/// Why a client may not connect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The client id is refused (CONNACK 0x85; 3.x: 2).
    #[error("client identifier not valid")]
    InvalidClientId,
    /// Unknown user or wrong password (CONNACK 0x86; 3.x: 4).
    #[error("bad user name or password")]
    BadCredentials,
    /// Not allowed to connect, e.g. anonymous when that is off (CONNACK 0x87; 3.x: 5).
    #[error("not authorized")]
    NotAuthorized,
}

impl AuthError {
    /// The CONNACK reason code (3.x return codes are mapped from it by the codec).
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            AuthError::InvalidClientId => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            AuthError::BadCredentials => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            AuthError::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
        }
    }
}

/// The one seam for access decisions.
pub trait SecurityManager: Send + Sync + fmt::Debug {
    /// Decides whether a client may connect, and as whom. May rewrite the client id with
    /// `connect.set_client_id`.
    fn authenticate(&self, connect: &mut ConnectInfo) -> Result<Principal, AuthError>;

    /// May this client publish to `topic` (also checked for its will)?
    fn authorize_publish(&self, principal: &Principal, topic: &TopicName) -> bool;

    /// May this client subscribe to `filter` (the filter part of a shared subscription)?
    fn authorize_subscribe(&self, principal: &Principal, filter: &TopicFilter) -> bool;

    /// May this client receive a message on `topic` (checked for retained messages)?
    fn authorize_receive(&self, principal: &Principal, topic: &TopicName) -> bool;

    /// Re-reads whatever files back the manager; returns what was reloaded. On error the
    /// previous state stays.
    fn reload(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// The default manager's configuration (`[security]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOptions {
    /// Clients without a user name may connect.
    pub allow_anonymous: bool,
    /// Mosquitto-format password file; unset: user names are not checked.
    pub password_file: Option<PathBuf>,
    /// Mosquitto-format ACL file; unset: everything is allowed.
    pub acl_file: Option<PathBuf>,
    /// A TLS client certificate's common name is the user name (no password needed).
    pub use_identity_as_username: bool,
}

/// Password and ACL files, as Mosquitto users know them.
#[derive(Debug)]
pub struct DefaultSecurityManager {
    options: SecurityOptions,
    passwords: RwLock<Option<PasswordFile>>,
    acl: RwLock<Option<Acl>>,
}

impl DefaultSecurityManager {
    /// Loads the files; errors name the setting and the file.
    pub fn new(options: SecurityOptions) -> Result<DefaultSecurityManager, String> {
        let (passwords, acl) = Self::load(&options)?;
        Ok(DefaultSecurityManager {
            options,
            passwords: RwLock::new(passwords),
            acl: RwLock::new(acl),
        })
    }

    /// Allows everything (anonymous included): the built-in defaults, for loopback.
    pub fn allow_all() -> DefaultSecurityManager {
        DefaultSecurityManager {
            options: SecurityOptions {
                allow_anonymous: true,
                ..SecurityOptions::default()
            },
            passwords: RwLock::new(None),
            acl: RwLock::new(None),
        }
    }

    #[allow(clippy::type_complexity)]
    fn load(options: &SecurityOptions) -> Result<(Option<PasswordFile>, Option<Acl>), String> {
        let passwords = match &options.password_file {
            Some(path) => {
                Some(PasswordFile::load(path).map_err(|e| format!("security.password_file: {e}"))?)
            }
            None => None,
        };
        let acl = match &options.acl_file {
            Some(path) => Some(Acl::load(path).map_err(|e| format!("security.acl_file: {e}"))?),
            None => None,
        };
        Ok((passwords, acl))
    }

    fn with_acl(&self, check: impl FnOnce(&Acl) -> bool) -> bool {
        match self.acl.read() {
            Ok(acl) => acl.as_ref().is_none_or(check),
            // A poisoned lock: deny rather than guess.
            Err(_) => false,
        }
    }
}

impl SecurityManager for DefaultSecurityManager {
    fn authenticate(&self, connect: &mut ConnectInfo) -> Result<Principal, AuthError> {
        let client_id = connect.client_id().to_owned();
        // Enhanced authentication already proved who the client is.
        if let Some(identity) = &connect.enhanced_identity {
            return Ok(Principal {
                username: Some(identity.clone()),
                client_id,
            });
        }
        if self.options.use_identity_as_username {
            if let Some(identity) = &connect.certificate_identity {
                return Ok(Principal {
                    username: Some(identity.clone()),
                    client_id,
                });
            }
        }
        match &connect.username {
            Some(username) => {
                let passwords = self
                    .passwords
                    .read()
                    .map_err(|_| AuthError::NotAuthorized)?;
                if let Some(passwords) = passwords.as_ref() {
                    let password = connect.password.as_deref().unwrap_or_default();
                    if !passwords.verify(username, password) {
                        return Err(AuthError::BadCredentials);
                    }
                }
                Ok(Principal {
                    username: Some(username.clone()),
                    client_id,
                })
            }
            None if self.options.allow_anonymous => Ok(Principal {
                username: None,
                client_id,
            }),
            None => Err(AuthError::NotAuthorized),
        }
    }

    fn authorize_publish(&self, principal: &Principal, topic: &TopicName) -> bool {
        self.with_acl(|acl| {
            acl.can_publish(
                principal.username.as_deref(),
                &principal.client_id,
                topic.as_str(),
            )
        })
    }

    fn authorize_subscribe(&self, principal: &Principal, filter: &TopicFilter) -> bool {
        self.with_acl(|acl| {
            acl.can_subscribe(
                principal.username.as_deref(),
                &principal.client_id,
                filter.matching_filter(),
            )
        })
    }

    fn authorize_receive(&self, principal: &Principal, topic: &TopicName) -> bool {
        self.with_acl(|acl| {
            acl.can_receive(
                principal.username.as_deref(),
                &principal.client_id,
                topic.as_str(),
            )
        })
    }

    fn reload(&self) -> Result<Vec<String>, String> {
        let (passwords, acl) = Self::load(&self.options)?;
        let mut reloaded = Vec::new();
        if passwords.is_some() {
            reloaded.push("password file".to_owned());
        }
        if acl.is_some() {
            reloaded.push("ACL file".to_owned());
        }
        if let Ok(mut current) = self.passwords.write() {
            *current = passwords;
        }
        if let Ok(mut current) = self.acl.write() {
            *current = acl;
        }
        Ok(reloaded)
    }
}

/// Counts failed logins per address so that each further failure is answered more slowly:
/// a password cannot be tried at line rate.
#[derive(Debug)]
pub struct FailureTracker {
    base_delay: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// The delay grows with failures up to this many times the base delay.
const MAX_FACTOR: u32 = 10;

impl FailureTracker {
    /// Delays each failure by `base_delay` times the recent failures from the address.
    pub fn new(base_delay: Duration) -> FailureTracker {
        FailureTracker {
            base_delay,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure from `ip`; returns how long to wait before answering it.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let Ok(mut failures) = self.failures.lock() else {
            return self.base_delay;
        };
        let now = Instant::now();
        if failures.len() > 10_000 {
            failures.retain(|_, (_, at)| now.duration_since(*at) < FAILURE_MEMORY);
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        self.base_delay * entry.0.min(MAX_FACTOR)
    }

    /// A successful login from `ip` clears its record.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_are_answered_more_slowly_and_success_resets() {
        let tracker = FailureTracker::new(Duration::from_millis(100));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(tracker.failed(ip), Duration::from_millis(100));
        assert_eq!(tracker.failed(ip), Duration::from_millis(200));
        for _ in 0..20 {
            tracker.failed(ip);
        }
        assert_eq!(tracker.failed(ip), Duration::from_millis(1000), "capped");
        tracker.succeeded(ip);
        assert_eq!(tracker.failed(ip), Duration::from_millis(100));
    }

    fn info(username: Option<&str>) -> ConnectInfo {
        let mut info = ConnectInfo::new(
            "c1".to_owned(),
            Protocol::V5,
            "127.0.0.1:1".parse().expect("addr"),
        );
        info.username = username.map(str::to_owned);
        info
    }

    #[test]
    fn anonymous_clients_follow_allow_anonymous() {
        let open = DefaultSecurityManager::allow_all();
        assert_eq!(
            open.authenticate(&mut info(None)).map(|p| p.username),
            Ok(None)
        );
        let closed = DefaultSecurityManager::new(SecurityOptions::default()).expect("manager");
        assert_eq!(
            closed.authenticate(&mut info(None)),
            Err(AuthError::NotAuthorized)
        );
        // Without a password file user names are not checked.
        assert!(closed.authenticate(&mut info(Some("bob"))).is_ok());
    }

    #[test]
    fn the_connect_debug_output_hides_the_password() {
        let mut i = info(Some("bob"));
        i.password = Some(Bytes::from_static(b"hunter2"));
        assert!(!format!("{i:?}").contains("hunter2"));
    }
}
