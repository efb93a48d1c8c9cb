//! Settings: one typed tree, layered and validated at start-up.
//!
//! Layers, later ones winning: the built-in defaults (`settings/default.toml`, compiled in) ->
//! each `-c FILE` in order -> `STARLING__SECTION__KEY` environment variables. A file that sets
//! `acceptors` replaces the whole default list. Every error names the key and the file (or the
//! environment) it came from; an unknown key is an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;
use starling_actors::config::{BrokerConfig, SessionConfig, SupervisionConfig};
use starling_actors::connection::AliasPolicy;
use starling_actors::proto::session::{DropPolicy, QueueLimits};
use starling_actors::security::scram::ScramSha256;
use starling_actors::security::{AuthMethod, AuthMethods, DefaultSecurityManager, SecurityOptions};
use starling_actors::store::{PersistenceConfig, SyncMode};

mod log;

pub use log::{LogFormat, LogLevel, LoggingSettings};

use crate::acceptor::{self, Acceptor};
use crate::logging;
use crate::tls::{self, SslMode};
use crate::websocket::WsSettings;

/// The built-in defaults: the same text as `settings/default.toml`.
pub const DEFAULT_SETTINGS: &str = include_str!("../../settings/default.toml");
const DEFAULT_ORIGIN: &str = "built-in defaults";

/// The whole settings tree.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[core]`.
    pub core: CoreSettings,
    /// `[session]`.
    pub session: SessionSettings,
    /// `[retain]`.
    pub retain: RetainSettings,
    /// `[security]`.
    pub security: SecuritySettings,
    /// `[websocket]`.
    pub websocket: WebSocketSettings,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
    /// `[persistence]`.
    pub persistence: PersistenceSettings,
    /// `[supervisor]`.
    pub supervisor: SupervisorSettings,
    /// `[logging]`.
    pub logging: LoggingSettings,
    /// `[[acceptors]]`.
    pub acceptors: Vec<AcceptorSettings>,
}

/// `[core]`: broker-wide behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreSettings {
    /// Milliseconds between session expiry scans.
    pub mqtt_session_scan_interval: u64,
    /// Worker arbiters; 0 = one per core.
    pub workers: usize,
    /// TopicNode shards; 0 = one per worker.
    pub topic_shards: usize,
    /// Milliseconds a connection may take to send CONNECT.
    pub connect_timeout: u64,
    /// Milliseconds connections get to close on shutdown.
    pub shutdown_grace: u64,
    /// Topic aliases towards MQTT 5 clients that allow them.
    pub outbound_topic_aliases: OutboundAliases,
    /// Milliseconds for a new socket's first bytes plus its TLS and WebSocket handshakes.
    pub handshake_timeout: u64,
    /// Microseconds a busy worker keeps polling before it sleeps; 0: never.
    pub busy_poll: u64,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Seconds between metrics log records; 0: none.
    pub log_interval: u64,
    /// Seconds between `$SYS` publications; 0: none.
    pub sys_interval: u64,
}

/// `[persistence]`: the durable store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceSettings {
    /// Keep sessions, their messages and retained messages across restarts.
    pub enabled: bool,
    /// Directory of the store file (relative paths: to the working directory).
    pub dir: PathBuf,
    /// When commits reach the disk: `always`, `batch` or `never`.
    pub sync: SyncSetting,
    /// With `batch`, the most milliseconds between fsyncs.
    pub sync_interval: u64,
}

/// `persistence.sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncSetting {
    /// fsync before every acknowledgement that needs it.
    Always,
    /// fsync at least every `sync_interval` ms.
    Batch,
    /// Leave it to the operating system (checkpoints every 30 s and at shutdown).
    Never,
}

/// `[supervisor]`: restarting failed actors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSettings {
    /// Most actor restarts within `restart_window`; one more and the broker exits with code 3.
    pub max_restarts: u32,
    /// Seconds over which restarts are counted.
    pub restart_window: u64,
    /// For tests only: lets `Server::broker().inject_fault` make an actor fail.
    pub fault_injection: bool,
}

/// `[websocket]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSettings {
    /// Only this request path is upgraded; empty accepts any path.
    pub path: String,
    /// Largest WebSocket frame or message accepted, in bytes.
    pub max_frame_size: usize,
}

/// `core.outbound_topic_aliases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundAliases {
    /// Never.
    Off,
    /// Alias repeated topics, recycling the least recently used alias.
    Lru,
}

/// `[session]`: what each client's session may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Most QoS 1/2 messages in flight to one client.
    pub max_inflight_messages: u16,
    /// Most messages waiting for one client.
    pub max_queued_messages: usize,
    /// Most payload bytes waiting for one client; 0: no byte limit.
    pub max_queued_bytes: usize,
    /// Which message goes when the queue is full.
    pub queue_full_policy: QueueFullPolicy,
    /// Queue QoS 0 messages for offline clients.
    pub queue_qos0_messages: bool,
    /// Delivery bytes handed to a connection and not yet written.
    pub max_in_transit_bytes: usize,
}

/// `session.queue_full_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueFullPolicy {
    /// Drop the oldest queued message.
    DropOldest,
    /// Drop the new message.
    DropNewest,
}

/// `[retain]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetainSettings {
    /// Milliseconds before a retained message without its own expiry expires; -1: never.
    pub expiry_delay: i64,
}

/// `[security]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Clients without a user name may connect.
    pub allow_anonymous: bool,
    /// Mosquitto-format password file (`user:hash`); unset: user names are not checked.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Mosquitto-format ACL file; unset: every client may publish and subscribe anywhere.
    #[serde(default)]
    pub acl_file: Option<PathBuf>,
    /// A TLS client certificate's common name is the user name.
    pub use_identity_as_username: bool,
    /// Milliseconds each failed login from an address waits, times its recent failures.
    pub auth_failure_delay: u64,
    /// SCRAM-SHA-256 verifiers (`user:SCRAM-SHA-256$...` lines). When set, MQTT 5 clients may
    /// authenticate with the `SCRAM-SHA-256` method.
    #[serde(default)]
    pub scram_sha256_file: Option<PathBuf>,
}

/// One `[[acceptors]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptorSettings {
    /// A name for logs and errors.
    pub name: String,
    /// The Artemis-style URL.
    pub url: String,
}

/// Settings that failed to load: every problem found, each naming its key and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsError {}

fn file_source(path: &Path) -> File<config::FileSourceFile, FileFormat> {
    File::from(path).format(FileFormat::Toml).required(true)
}

fn defaults() -> File<config::FileSourceString, FileFormat> {
    File::from_str(DEFAULT_SETTINGS, FileFormat::Toml)
}

impl Settings {
    /// Loads the layers: defaults, then `files` in order, then environment variables.
    pub fn load(files: &[PathBuf]) -> Result<Settings, SettingsError> {
        Self::load_with_env(files, Some(Environment::with_prefix("STARLING")))
    }

    /// Like `load`, with the environment layer given (tests pass `None` or their own).
    pub fn load_with_env(
        files: &[PathBuf],
        env: Option<Environment>,
    ) -> Result<Settings, SettingsError> {
        let mut problems = Vec::new();
        // Each file alone over the defaults first, so an error names the file it is in.
        for file in files {
            let layered = Config::builder()
                .add_source(defaults())
                .add_source(file_source(file))
                .build()
                .and_then(|c| c.try_deserialize::<Settings>());
            match layered {
                Err(e) => problems.push(format!("{}: {}", file.display(), e)),
                // Over the defaults, which set none, a file's logger names are its own.
                Ok(layered) => problems.extend(
                    logging::level_problems(&layered.logging.levels)
                        .into_iter()
                        .map(|p| format!("{}: {p}", file.display())),
                ),
            }
        }
        if !problems.is_empty() {
            return Err(SettingsError { problems });
        }

        let mut builder = Config::builder().add_source(defaults());
        for file in files {
            builder = builder.add_source(file_source(file));
        }
        if let Some(env) = env {
            builder = builder.add_source(env.separator("__").try_parsing(true));
        }
        let merged = builder.build().map_err(|e| SettingsError {
            problems: vec![e.to_string()],
        })?;
        let settings: Settings = merged
            .clone()
            .try_deserialize()
            .map_err(|e| SettingsError {
                problems: vec![e.to_string()],
            })?;
        // Each file's names are checked above: what is left came from the environment, or
        // from files that are fine alone but not together.
        let combined = logging::level_problems(&settings.logging.levels);
        if !combined.is_empty() {
            return Err(SettingsError {
                problems: combined
                    .into_iter()
                    .map(|p| format!("settings files and environment combined: {p}"))
                    .collect(),
            });
        }
        settings.validate(&acceptors_origin(files))?;
        Ok(settings)
    }

    /// Checks what types alone cannot: ranges, acceptor URLs, unique names.
    fn validate(&self, acceptors_origin: &str) -> Result<(), SettingsError> {
        let mut problems = Vec::new();
        if self.core.mqtt_session_scan_interval == 0 {
            problems.push(
                "core.mqtt_session_scan_interval: must be at least 1 (milliseconds)".to_owned(),
            );
        }
        if self.core.connect_timeout == 0 {
            problems.push("core.connect_timeout: must be at least 1 (milliseconds)".to_owned());
        }
        if self.core.handshake_timeout == 0 {
            problems.push("core.handshake_timeout: must be at least 1 (milliseconds)".to_owned());
        }
        if self.core.busy_poll > MAX_BUSY_POLL_US {
            problems.push(format!(
                "core.busy_poll: at most {MAX_BUSY_POLL_US} (microseconds; 0 turns it off)"
            ));
        }
        if self.websocket.max_frame_size < 1024 {
            problems.push("websocket.max_frame_size: must be at least 1024".to_owned());
        }
        if self.session.max_inflight_messages == 0 {
            problems.push("session.max_inflight_messages: must be at least 1".to_owned());
        }
        if self.session.max_queued_messages == 0 {
            problems.push("session.max_queued_messages: must be at least 1".to_owned());
        }
        if self.session.max_in_transit_bytes < 1024 {
            problems.push("session.max_in_transit_bytes: must be at least 1024".to_owned());
        }
        if self.persistence.enabled && self.persistence.dir.as_os_str().is_empty() {
            problems.push("persistence.dir: must not be empty".to_owned());
        }
        if self.persistence.sync_interval == 0 {
            problems
                .push("persistence.sync_interval: must be at least 1 (milliseconds)".to_owned());
        }
        if self.supervisor.max_restarts == 0 {
            problems.push("supervisor.max_restarts: must be at least 1".to_owned());
        }
        if self.supervisor.restart_window == 0 {
            problems.push("supervisor.restart_window: must be at least 1 (seconds)".to_owned());
        }
        if self.retain.expiry_delay < -1 || self.retain.expiry_delay == 0 {
            problems.push(
                "retain.expiry_delay: -1 (never) or a positive number of milliseconds".to_owned(),
            );
        }
        if let Some(path) = &self.security.scram_sha256_file {
            if let Err(e) = ScramSha256::from_file(path) {
                problems.push(format!("security.scram_sha256_file: {e}"));
            }
        }
        if let Err(e) = DefaultSecurityManager::new(self.security_options()) {
            problems.push(e);
        }
        if self.acceptors.is_empty() {
            problems.push(format!(
                "acceptors (in {acceptors_origin}): at least one acceptor is needed"
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, a) in self.acceptors.iter().enumerate() {
            if !names.insert(a.name.as_str()) {
                problems.push(format!(
                    "acceptors[{i}].name (in {acceptors_origin}): {:?} is used by another acceptor",
                    a.name
                ));
            }
            match acceptor::parse(&a.name, &a.url, &self.base_mqtt()) {
                Err(errors) => {
                    for e in errors {
                        problems.push(format!(
                            "acceptors[{i}] {:?} (in {acceptors_origin}): {e}",
                            a.name
                        ));
                    }
                }
                // A keystore that cannot be read stops the broker at start-up.
                Ok(parsed) if parsed.tls.mode != SslMode::Off => {
                    if let Err(e) = tls::server_config(&parsed.tls) {
                        problems.push(format!(
                            "acceptors[{i}] {:?} (in {acceptors_origin}): {e}",
                            a.name
                        ));
                    }
                }
                Ok(_) => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError { problems })
        }
    }

    fn base_mqtt(&self) -> starling_actors::config::MqttConfig {
        let aliases = match self.core.outbound_topic_aliases {
            OutboundAliases::Off => AliasPolicy::Off,
            OutboundAliases::Lru => AliasPolicy::Lru,
        };
        acceptor::base_config(self.core.connect_timeout, aliases)
    }

    /// The acceptors, parsed (validated by `load`).
    pub fn acceptors(&self) -> Result<Vec<Acceptor>, SettingsError> {
        let base = self.base_mqtt();
        self.acceptors
            .iter()
            .map(|a| {
                acceptor::parse(&a.name, &a.url, &base).map_err(|problems| SettingsError {
                    problems: problems
                        .into_iter()
                        .map(|p| format!("acceptor {:?}: {p}", a.name))
                        .collect(),
                })
            })
            .collect()
    }

    /// The default security manager's options.
    pub fn security_options(&self) -> SecurityOptions {
        SecurityOptions {
            allow_anonymous: self.security.allow_anonymous,
            password_file: self.security.password_file.clone(),
            acl_file: self.security.acl_file.clone(),
            use_identity_as_username: self.security.use_identity_as_username,
        }
    }

    /// The MQTT 5 enhanced authentication methods these settings enable.
    pub fn auth_methods(&self) -> Result<AuthMethods, SettingsError> {
        let mut methods: Vec<Arc<dyn AuthMethod>> = Vec::new();
        if let Some(path) = &self.security.scram_sha256_file {
            let scram = ScramSha256::from_file(path).map_err(|e| SettingsError {
                problems: vec![format!("security.scram_sha256_file: {e}")],
            })?;
            methods.push(Arc::new(scram));
        }
        Ok(AuthMethods::new(methods))
    }

    /// The WebSocket settings for acceptors.
    pub fn websocket(&self) -> WsSettings {
        WsSettings {
            path: Some(self.websocket.path.clone()).filter(|p| !p.is_empty()),
            max_frame_size: self.websocket.max_frame_size,
        }
    }

    /// Worker arbiters to start.
    pub fn worker_count(&self) -> usize {
        match self.core.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        }
    }

    /// The broker-wide parameters the actors need.
    pub fn broker_config(&self) -> BrokerConfig {
        BrokerConfig {
            session_scan_interval: std::time::Duration::from_millis(
                self.core.mqtt_session_scan_interval,
            ),
            topic_shards: match self.core.topic_shards {
                0 => self.worker_count(),
                n => n,
            },
            session: SessionConfig {
                max_inflight: self.session.max_inflight_messages,
                queue: QueueLimits {
                    max_messages: self.session.max_queued_messages,
                    max_bytes: self.session.max_queued_bytes,
                    policy: match self.session.queue_full_policy {
                        QueueFullPolicy::DropOldest => DropPolicy::DropOldest,
                        QueueFullPolicy::DropNewest => DropPolicy::DropNewest,
                    },
                    queue_qos0_offline: self.session.queue_qos0_messages,
                },
                max_in_transit: self.session.max_in_transit_bytes,
            },
            retained_expiry: u64::try_from(self.retain.expiry_delay)
                .ok()
                .map(std::time::Duration::from_millis),
            metrics_log_interval: std::time::Duration::from_secs(self.metrics.log_interval),
            sys_interval: std::time::Duration::from_secs(self.metrics.sys_interval),
            persistence: self.persistence.enabled.then(|| PersistenceConfig {
                dir: self.persistence.dir.clone(),
                sync: match self.persistence.sync {
                    SyncSetting::Always => SyncMode::Always,
                    SyncSetting::Batch => SyncMode::Batch,
                    SyncSetting::Never => SyncMode::Never,
                },
                sync_interval: std::time::Duration::from_millis(self.persistence.sync_interval),
            }),
            supervision: SupervisionConfig {
                max_restarts: self.supervisor.max_restarts,
                restart_window: std::time::Duration::from_secs(self.supervisor.restart_window),
                fault_injection: self.supervisor.fault_injection,
            },
            busy_poll: std::time::Duration::from_micros(self.core.busy_poll),
        }
    }
}

/// Longest `core.busy_poll`: polling for more than a millisecond would keep a worker's CPU
/// busy through pauses it should sleep in.
const MAX_BUSY_POLL_US: u64 = 1000;

/// Which layer the acceptor list comes from: the last file that sets `acceptors` (a file
/// replaces the list, it never appends), else the built-in defaults.
fn acceptors_origin(files: &[PathBuf]) -> String {
    files
        .iter()
        .rev()
        .find(|file| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|text| text.parse::<toml::Table>().ok())
                .is_some_and(|table| table.contains_key("acceptors"))
        })
        .map_or_else(|| DEFAULT_ORIGIN.to_owned(), |f| f.display().to_string())
}
