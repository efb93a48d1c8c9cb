//! The Artemis acceptor parameters that are not Starling's: accepted so that a stock Artemis
//! acceptor line starts the broker, reported once at WARN, or refused where ignoring them would
//! let in clients the line means to keep out.
//!
//! The names are Artemis' own: its Netty transport's (`TransportConstants`, with its password
//! masking keys) and its other protocols' (AMQP, STOMP, OpenWire, CORE/HornetQ, and the
//! `anycastPrefix` / `multicastPrefix` every protocol manager takes). Artemis matches them
//! exactly, case included: transport keys by `Set.contains`, protocol keys as JavaBeans
//! properties. So does Starling; a near miss of any known name is an error that suggests it.

/// Why a parameter that Starling does not apply is ignored: the part of Artemis it belongs to,
/// and what Starling does instead, when that is worth saying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Foreign {
    /// `Netty transport`, `AMQP`, `STOMP`, ...
    pub(super) owner: &'static str,
    /// What stands in for it in Starling, if anything.
    pub(super) instead: Option<&'static str>,
}

const NETTY: &str = "Netty transport";
const JAVA_TLS: &str = "Java TLS";
const AMQP: &str = "AMQP";
const STOMP: &str = "STOMP";
const OPENWIRE: &str = "OpenWire";
const CORE: &str = "CORE/HornetQ";
const PREFIXES: &str = "address prefixes of the other protocols";

const fn foreign(owner: &'static str) -> Foreign {
    Foreign {
        owner,
        instead: None,
    }
}

const fn instead(owner: &'static str, instead: &'static str) -> Foreign {
    Foreign {
        owner,
        instead: Some(instead),
    }
}

/// Accepted and ignored (with one WARN per acceptor naming them).
const FOREIGN: &[(&str, Foreign)] = &[
    // Artemis' Netty transport (TransportConstants.ALLOWABLE_ACCEPTOR_KEYS).
    (
        "tcpNoDelay",
        instead(NETTY, "Starling always sets TCP_NODELAY"),
    ),
    ("useEpoll", foreign(NETTY)),
    ("useKQueue", foreign(NETTY)),
    ("useNio", foreign(NETTY)),
    ("useInvm", foreign(NETTY)),
    ("useGlobalWorkerPool", foreign(NETTY)),
    ("useNioGlobalWorkerPool", foreign(NETTY)),
    ("nioRemotingThreads", instead(NETTY, "see [core] workers")),
    ("remotingThreads", instead(NETTY, "see [core] workers")),
    ("batchDelay", foreign(NETTY)),
    ("directDeliver", foreign(NETTY)),
    ("connectionsAllowed", foreign(NETTY)),
    ("backlog", foreign(NETTY)),
    (
        "handshake-timeout",
        instead(NETTY, "see [core] handshake_timeout"),
    ),
    ("writeBufferLowWaterMark", foreign(NETTY)),
    (
        "writeBufferHighWaterMark",
        instead(NETTY, "see [session] max_in_transit_bytes"),
    ),
    ("httpEnabled", foreign(NETTY)),
    ("httpResponseTime", foreign(NETTY)),
    ("httpServerScanPeriod", foreign(NETTY)),
    ("httpUpgradeEnabled", foreign(NETTY)),
    ("clusterConnection", foreign(NETTY)),
    ("connectionTtl", instead(NETTY, "MQTT keep alive applies")),
    (
        "connectionTtlMax",
        instead(NETTY, "MQTT keep alive applies"),
    ),
    (
        "connectionTtlMin",
        instead(NETTY, "MQTT keep alive applies"),
    ),
    (
        "shutdownTimeout",
        instead(NETTY, "see [core] shutdown_grace"),
    ),
    ("quietPeriod", foreign(NETTY)),
    ("autoStart", foreign(NETTY)),
    ("router", foreign(NETTY)),
    (
        "webSocketMaxFramePayloadLength",
        instead(NETTY, "see [websocket] max_frame_size"),
    ),
    ("webSocketEncoderType", foreign(NETTY)),
    ("webSocketCompressionSupported", foreign(NETTY)),
    ("activemq.passwordcodec", foreign(NETTY)),
    // TLS settings of the JVM: Starling's TLS is rustls, with its safe defaults.
    ("sslProvider", instead(JAVA_TLS, "Starling uses rustls")),
    (
        "keyStoreProvider",
        instead(JAVA_TLS, "Starling uses rustls"),
    ),
    (
        "trustStoreProvider",
        instead(JAVA_TLS, "Starling uses rustls"),
    ),
    (
        "enabledCipherSuites",
        instead(JAVA_TLS, "rustls' safe default cipher suites are offered"),
    ),
    (
        "enabledProtocols",
        instead(JAVA_TLS, "TLS 1.2 and 1.3 are offered"),
    ),
    (
        "wantClientAuth",
        instead(JAVA_TLS, "only needClientAuth=true asks for certificates"),
    ),
    ("forceSSLParameters", foreign(JAVA_TLS)),
    ("useDefaultSslContext", foreign(JAVA_TLS)),
    ("sslContext", foreign(JAVA_TLS)),
    ("trustAll", foreign(JAVA_TLS)),
    (
        "sslAutoReload",
        instead(JAVA_TLS, "SIGHUP reloads certificates"),
    ),
    // AMQP (ProtonProtocolManager's bean properties).
    ("amqpCredits", foreign(AMQP)),
    ("amqpLowCredits", foreign(AMQP)),
    ("amqpMinLargeMessageSize", foreign(AMQP)),
    ("amqpDuplicateDetection", foreign(AMQP)),
    ("amqpIdleTimeout", foreign(AMQP)),
    ("amqpUseModifiedForTransientDeliveryErrors", foreign(AMQP)),
    ("amqpTreatRejectAsUnmodifiedDeliveryFailed", foreign(AMQP)),
    ("initialRemoteMaxFrameSize", foreign(AMQP)),
    ("maxFrameSize", foreign(AMQP)),
    ("saslMechanisms", foreign(AMQP)),
    ("saslLoginConfigScope", foreign(AMQP)),
    ("pubSubPrefix", foreign(AMQP)),
    // STOMP.
    ("stompEnableMessageId", foreign(STOMP)),
    ("stomp-enable-message-id", foreign(STOMP)),
    ("stompMinLargeMessageSize", foreign(STOMP)),
    ("stomp-min-large-message-size", foreign(STOMP)),
    ("stompConsumerCredits", foreign(STOMP)),
    ("stompConsumerWindowSize", foreign(STOMP)),
    ("stompMaxFramePayloadLength", foreign(STOMP)),
    ("disableStompServerHeader", foreign(STOMP)),
    ("heartBeatToConnectionTtlModifier", foreign(STOMP)),
    // OpenWire (OpenWireProtocolManager's bean properties).
    ("supportAdvisory", foreign(OPENWIRE)),
    ("suppressInternalManagementObjects", foreign(OPENWIRE)),
    ("rebalanceClusterClients", foreign(OPENWIRE)),
    ("updateClusterClients", foreign(OPENWIRE)),
    ("updateClusterClientsOnRemove", foreign(OPENWIRE)),
    ("maxInactivityDuration", foreign(OPENWIRE)),
    ("maxInactivityDurationInitalDelay", foreign(OPENWIRE)),
    ("useKeepAlive", foreign(OPENWIRE)),
    ("virtualTopicConsumerWildcards", foreign(OPENWIRE)),
    ("openwireUseDuplicateDetectionOnFailover", foreign(OPENWIRE)),
    ("openwireDestinationCacheSize", foreign(OPENWIRE)),
    // CORE / HornetQ, and every protocol manager.
    ("securityDomain", instead(CORE, "see [security]")),
    ("anycastPrefix", foreign(PREFIXES)),
    ("multicastPrefix", foreign(PREFIXES)),
];

/// One refused parameter.
struct Refused {
    name: &'static str,
    /// `None` refuses any value; `Some(v)` only `v` (case-insensitive), the others are
    /// ignored like `FOREIGN`'s, as belonging to `owner`.
    value: Option<&'static str>,
    owner: &'static str,
    why: &'static str,
}

/// Refused, with the reason: ignoring these would accept clients (or certificates) the line
/// means to refuse, or use a password Starling cannot decode.
const REFUSED: &[Refused] = &[
    Refused {
        name: "crlPath",
        value: None,
        owner: JAVA_TLS,
        why: "certificate revocation lists are not supported; ignoring it would accept \
              revoked client certificates",
    },
    Refused {
        name: "trustManagerFactoryPlugin",
        value: None,
        owner: JAVA_TLS,
        why: "a Java trust manager cannot be loaded; ignoring it would change which client \
              certificates are trusted",
    },
    Refused {
        name: "keyStoreAlias",
        value: None,
        owner: JAVA_TLS,
        why: "not supported: Starling serves the keystore's first private key with its \
              certificate; give it a keystore holding only the one to serve",
    },
    Refused {
        name: "sniHost",
        value: None,
        owner: JAVA_TLS,
        why: "not supported; ignoring it would accept connections for any server name",
    },
    Refused {
        name: "verifyHost",
        value: Some("true"),
        owner: JAVA_TLS,
        why: "checking client certificates against the client's host name is not supported",
    },
    Refused {
        name: "activemq.usemaskedpassword",
        value: Some("true"),
        owner: NETTY,
        why: "masked passwords are not supported; give keyStorePassword and \
              trustStorePassword in clear, in a settings file only the broker can read",
    },
];

/// What the parameter `key` with `value` is, if it is one of these Artemis names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Known {
    /// Accepted and ignored.
    Ignored(Foreign),
    /// An error, with the reason.
    Refused(&'static str),
}

/// Looks `key` up among the Artemis parameters Starling does not apply (exactly, as Artemis).
pub(super) fn lookup(key: &str, value: &str) -> Option<Known> {
    if let Some(refused) = REFUSED.iter().find(|r| r.name == key) {
        return Some(match refused.value {
            Some(v) if !value.trim().eq_ignore_ascii_case(v) => {
                Known::Ignored(foreign(refused.owner))
            }
            _ => Known::Refused(refused.why),
        });
    }
    FOREIGN
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, foreign)| Known::Ignored(*foreign))
}

/// Every Artemis parameter name these tables know, for suggestions.
pub(super) fn names() -> impl Iterator<Item = &'static str> {
    FOREIGN
        .iter()
        .map(|(name, _)| *name)
        .chain(REFUSED.iter().map(|r| r.name))
}

/// The known name closest to `key`, if it is close enough to be what was meant: the same
/// letters in another case, or a few edits away (more for longer names).
pub(super) fn suggest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    let limit = (key.chars().count() / 3).max(2);
    known
        .map(|name| (edit_distance(&lower, &name.to_ascii_lowercase()), name))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            let deletion = previous[j + 1] + 1;
            let insertion = current[j] + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "abd"), 1);
        assert_eq!(edit_distance("abc", "ab"), 1);
        assert_eq!(edit_distance("recievemaximum", "receivemaximum"), 2);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn near_misses_are_suggested_and_strangers_are_not() {
        let known = ["receiveMaximum", "topicAliasMaximum", "useEpoll"];
        assert_eq!(
            suggest("recieveMaximum", known.iter().copied()),
            Some("receiveMaximum")
        );
        assert_eq!(
            suggest("ReceiveMaximum", known.iter().copied()),
            Some("receiveMaximum")
        );
        assert_eq!(suggest("useEpol", known.iter().copied()), Some("useEpoll"));
        assert_eq!(suggest("bogus", known.iter().copied()), None);
    }

    #[test]
    fn names_are_matched_exactly() {
        assert!(lookup("useEpoll", "true").is_some());
        assert!(lookup("useepoll", "true").is_none());
        assert!(matches!(lookup("crlPath", "/x"), Some(Known::Refused(_))));
        assert!(matches!(
            lookup("verifyHost", "TRUE"),
            Some(Known::Refused(_))
        ));
        assert!(matches!(
            lookup("verifyHost", "false"),
            Some(Known::Ignored(_))
        ));
    }

    #[test]
    fn no_name_is_listed_twice() {
        let mut all: Vec<&str> = names().collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
    }
}
