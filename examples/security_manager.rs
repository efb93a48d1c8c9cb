//! Custom client id handling, as the Artemis `security-manager` example does it: a security
//! manager that wraps the default one and changes one thing. It rejects client ids containing
//! `/` (CONNACK 0x85, or return code 2 on MQTT 3.x) and prefixes every client id with the
//! user name (`alice` connecting as `sensor` gets the session `alice/sensor`), so users cannot
//! take over each other's sessions by guessing ids.
//!
//! ```sh
//! cargo run --example security_manager              # built-in settings, 127.0.0.1:1883
//! cargo run --example security_manager -- -c my.toml
//! mosquitto_sub -u alice -i sensor -t '#' -v          # its session is "alice/sensor"
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use starling::{logging, Settings};
use starling_actors::proto::{TopicFilter, TopicName};
use starling_actors::security::{
    AuthError, ConnectInfo, DefaultSecurityManager, Principal, SecurityManager,
};

/// The wrapper: the default manager's decisions, with client ids checked and prefixed.
#[derive(Debug)]
pub struct PrefixingManager {
    /// The manager it wraps.
    pub inner: Arc<dyn SecurityManager>,
}

impl SecurityManager for PrefixingManager {
    fn authenticate(&self, connect: &mut ConnectInfo) -> Result<Principal, AuthError> {
        if connect.client_id().contains('/') {
            return Err(AuthError::InvalidClientId);
        }
        let mut principal = self.inner.authenticate(connect)?;
        if let Some(user) = &principal.username {
            let id = format!("{user}/{}", connect.client_id());
            connect.set_client_id(id.clone());
            principal.client_id = id;
        }
        Ok(principal)
    }

    fn authorize_publish(&self, principal: &Principal, topic: &TopicName) -> bool {
        self.inner.authorize_publish(principal, topic)
    }

    fn authorize_subscribe(&self, principal: &Principal, filter: &TopicFilter) -> bool {
        self.inner.authorize_subscribe(principal, filter)
    }

    fn authorize_receive(&self, principal: &Principal, topic: &TopicName) -> bool {
        self.inner.authorize_receive(principal, topic)
    }

    fn reload(&self) -> Result<Vec<String>, String> {
        self.inner.reload()
    }
}

#[allow(dead_code)] // tests/security.rs includes this file for `PrefixingManager` only
fn main() -> std::process::ExitCode {
    let files: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| a != "-c")
        .map(PathBuf::from)
        .collect();
    let settings = match Settings::load(&files) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("invalid settings:\n{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let logging = match logging::build(&settings.logging) {
        Ok(logging) => logging,
        Err(e) => {
            eprintln!("logging: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let inner = match DefaultSecurityManager::new(settings.security_options()) {
        Ok(manager) => Arc::new(manager),
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let manager = Arc::new(PrefixingManager { inner });
    let server = match starling::start_with_security(settings, logging.log.clone(), manager) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(1);
        }
    };
    for (name, addr) in server.addresses() {
        println!("listening: {name} on {addr} (client ids prefixed with the user name)");
    }
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    if let Ok(waiter) = waiter {
        let _ = waiter.block_on(tokio::signal::ctrl_c());
    }
    server.stop();
    std::process::ExitCode::SUCCESS
}
