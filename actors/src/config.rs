//! The broker's typed configuration, as the actors see it.
//!
//! `starling` (the daemon) turns settings files and acceptor URLs into these structs; the actors
//! never read a file or parse a URL. Each field keeps the meaning of the Artemis acceptor
//! parameter it comes from, with `None` standing for that parameter's `-1`.

use std::time::Duration;

use starling_proto::session::QueueLimits;

/// Per-acceptor MQTT parameters (the Artemis acceptor URL parameters, typed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// `receiveMaximum`: QoS 1/2 PUBLISH a client may have unacknowledged towards the broker.
    /// `None` (-1): not announced in CONNACK, which a client reads as 65535.
    pub receive_maximum: Option<u16>,
    /// `topicAliasMaximum`: inbound topic aliases a client may use. `Some(0)` disables aliasing;
    /// `None` (-1) does not announce it, which also disables aliasing.
    pub topic_alias_maximum: Option<u16>,
    /// `maximumPacketSize`: largest inbound packet, in bytes. `None` (-1): not announced and not
    /// enforced beyond the protocol's own limit.
    pub maximum_packet_size: Option<u32>,
    /// `serverKeepAlive` in seconds. `None` (-1): always accept the client's keep alive.
    /// `Some(0)`: keep alive disabled whatever the client asks.
    pub server_keep_alive: Option<u16>,
    /// `defaultMqttSessionExpiryInterval` in seconds, for sessions whose client sends none.
    /// `None` (-1): such sessions never expire.
    pub default_session_expiry: Option<u32>,
    /// `closeMqttConnectionOnPublishAuthorizationFailure`.
    pub close_on_publish_auth_failure: bool,
    /// How long a new connection may take to send its CONNECT before it is closed.
    pub connect_timeout: Duration,
    /// Whether to send topic aliases to MQTT 5 clients that announce a Topic Alias Maximum.
    pub outbound_topic_aliases: crate::connection::AliasPolicy,
}

impl Default for MqttConfig {
    /// The seed's defaults.
    fn default() -> Self {
        MqttConfig {
            receive_maximum: Some(65535),
            topic_alias_maximum: Some(65535),
            maximum_packet_size: Some(268_435_455),
            server_keep_alive: Some(60),
            default_session_expiry: None,
            close_on_publish_auth_failure: true,
            connect_timeout: Duration::from_secs(10),
            outbound_topic_aliases: crate::connection::AliasPolicy::Lru,
        }
    }
}

impl MqttConfig {
    /// The keep alive the broker enforces for a client that asked for `client` seconds,
    /// per the seed's `serverKeepAlive` rules: -1 takes the client's value; 0 disables keep
    /// alive; otherwise the server's value applies when it is less than the client's, or when
    /// the client's is 0 (which would disable keep alive).
    pub fn effective_keep_alive(&self, client: u16) -> u16 {
        match self.server_keep_alive {
            None => client,
            Some(0) => 0,
            Some(server) if client == 0 || server < client => server,
            Some(_) => client,
        }
    }
}

/// Broker-wide parameters that no single acceptor owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// `mqtt_session_scan_interval`: how often offline sessions are checked for expiry (and
    /// expired retained messages purged).
    pub session_scan_interval: Duration,
    /// Number of TopicNode shards.
    pub topic_shards: usize,
    /// Per-session limits.
    pub session: SessionConfig,
    /// Expiry for retained messages that carry no Message Expiry Interval; `None`: never.
    pub retained_expiry: Option<Duration>,
    /// How often metrics are logged; zero: never.
    pub metrics_log_interval: Duration,
    /// How often `$SYS` topics are published; zero: never.
    pub sys_interval: Duration,
    /// The durable store; `None`: nothing survives a restart.
    pub persistence: Option<crate::store::PersistenceConfig>,
    /// When failed actors are restarted, and when the broker gives up.
    pub supervision: SupervisionConfig,
    /// `core.busy_poll`: how long a busy worker polls before it sleeps (`busy_poll`); zero:
    /// never.
    pub busy_poll: Duration,
}

/// The `[supervisor]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisionConfig {
    /// Most restarts within `restart_window`; one more and the broker exits non-zero.
    pub max_restarts: u32,
    /// The window `max_restarts` counts over.
    pub restart_window: Duration,
    /// Tests may make actors fail on purpose (`Broker::inject_fault`).
    pub fault_injection: bool,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            max_restarts: 10,
            restart_window: Duration::from_secs(60),
            fault_injection: false,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            session_scan_interval: Duration::from_millis(5000),
            topic_shards: 2,
            session: SessionConfig::default(),
            retained_expiry: None,
            metrics_log_interval: Duration::from_secs(60),
            sys_interval: Duration::from_secs(10),
            persistence: None,
            supervision: SupervisionConfig::default(),
            busy_poll: Duration::from_micros(50),
        }
    }
}

/// Limits every Session obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Most QoS 1/2 messages in flight to one client (its Receive Maximum may lower it).
    pub max_inflight: u16,
    /// The bounded queue of messages waiting for a client.
    pub queue: QueueLimits,
    /// Delivery bytes (`msg::outbound_weight`) a session may have handed to its connection and
    /// not yet seen written: past this, messages wait in the session's bounded queue.
    pub max_in_transit: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_inflight: 100,
            queue: QueueLimits::default(),
            max_in_transit: 1 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_server(v: Option<u16>) -> MqttConfig {
        MqttConfig {
            server_keep_alive: v,
            ..MqttConfig::default()
        }
    }

    #[test]
    fn server_keep_alive_follows_the_seed_rules() {
        assert_eq!(with_server(None).effective_keep_alive(0), 0);
        assert_eq!(with_server(None).effective_keep_alive(300), 300);
        assert_eq!(with_server(Some(0)).effective_keep_alive(30), 0);
        assert_eq!(with_server(Some(60)).effective_keep_alive(30), 30);
        assert_eq!(with_server(Some(60)).effective_keep_alive(300), 60);
        assert_eq!(with_server(Some(60)).effective_keep_alive(0), 60);
    }
}
