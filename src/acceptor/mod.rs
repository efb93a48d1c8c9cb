//! Artemis-style acceptor URLs: `tcp://host:port?protocols=MQTT;receiveMaximum=100`.
//!
//! Parameters keep their Artemis names, defaults and special values (the seed's MQTT chapter),
//! so an Artemis user's acceptor line works unchanged. Names are matched exactly, case
//! included, as Artemis matches them. Artemis parameters that do not apply to MQTT (its Netty
//! transport's, its other protocols') are accepted and listed in `Acceptor::ignored`, which
//! the broker logs once at WARN; the few whose ignoring would let in clients the line means to
//! refuse are errors (`artemis`). Any other name is an error, with the nearest known name as a
//! suggestion. Every problem is reported with the parameter's name.

mod artemis;

use std::path::PathBuf;
use std::time::Duration;

use starling_actors::config::MqttConfig;
use starling_actors::connection::AliasPolicy;

use crate::tls::{SslMode, StoreType, TlsParams};

/// One acceptor, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptor {
    /// The acceptor's name from the settings (for logs and errors).
    pub name: String,
    /// Host to bind: an IP address or a name resolved at start.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// The MQTT parameters.
    pub mqtt: MqttConfig,
    /// The TLS parameters (`sslEnabled`, `keyStorePath`, ...).
    pub tls: TlsParams,
    /// Options of the listening socket, which accepted sockets inherit.
    pub socket: SocketOptions,
    /// Parameters accepted but not applied (Artemis' transport and other protocols), each as
    /// `name (what it belongs to)`, in URL order: for one WARN at start-up.
    pub ignored: Vec<String>,
}

/// Socket buffer sizes (`tcpSendBufferSize`, `tcpReceiveBufferSize`), in bytes. `None` (unset,
/// or -1) leaves the kernel's default, with its automatic tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SocketOptions {
    /// `SO_SNDBUF`.
    pub send_buffer_size: Option<u32>,
    /// `SO_RCVBUF`.
    pub receive_buffer_size: Option<u32>,
}

impl Acceptor {
    /// `host:port`, bracketing IPv6 addresses, for binding.
    pub fn bind_address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The parameters Starling applies: every name `parse` matches.
const NAMES: &[&str] = &[
    "protocols",
    "protocol",
    "receiveMaximum",
    "topicAliasMaximum",
    "maximumPacketSize",
    "serverKeepAlive",
    "defaultMqttSessionExpiryInterval",
    "closeMqttConnectionOnPublishAuthorizationFailure",
    "sslEnabled",
    "keyStorePath",
    "keyStorePassword",
    "keyStoreType",
    "needClientAuth",
    "trustStorePath",
    "trustStorePassword",
    "trustStoreType",
    "tcpSendBufferSize",
    "tcpReceiveBufferSize",
];

/// Parses an acceptor URL. `base` carries the non-URL parameters (timeouts, buffer bounds);
/// every error names the parameter at fault.
pub fn parse(name: &str, url: &str, base: &MqttConfig) -> Result<Acceptor, Vec<String>> {
    let mut errors = Vec::new();
    let Some(rest) = url.strip_prefix("tcp://") else {
        return Err(vec![format!(
            "url {url:?}: must start with tcp:// (e.g. tcp://127.0.0.1:1883?protocols=MQTT)"
        )]);
    };
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, q),
        None => (rest, ""),
    };
    let authority = authority.trim_end_matches('/');
    let (host, port) = match split_host_port(authority) {
        Ok(hp) => hp,
        Err(e) => return Err(vec![format!("url {url:?}: {e}")]),
    };

    let mut mqtt = base.clone();
    let mut tls = TlsParams::default();
    let mut socket = SocketOptions::default();
    let mut ignored = Vec::new();
    // Artemis reads both `protocols` and the deprecated `protocol`; absent, it serves every
    // protocol it has (so MQTT too).
    let mut protocols: Option<(&str, Vec<&str>)> = None;
    for pair in query.split([';', '&']).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let result = match key {
            "protocols" | "protocol" => {
                let (_, list) = protocols.get_or_insert((key, Vec::new()));
                list.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()));
                Ok(())
            }
            "receiveMaximum" => parse_limit(value, 1, 65535, false)
                .map(|v| mqtt.receive_maximum = v.map(|v| v as u16)),
            "topicAliasMaximum" => parse_limit(value, 0, 65535, true)
                .map(|v| mqtt.topic_alias_maximum = v.map(|v| v as u16)),
            "maximumPacketSize" => parse_limit(value, 1, 268_435_455, false)
                .map(|v| mqtt.maximum_packet_size = v.map(|v| v as u32)),
            "serverKeepAlive" => parse_limit(value, 0, 65535, true)
                .map(|v| mqtt.server_keep_alive = v.map(|v| v as u16)),
            "defaultMqttSessionExpiryInterval" => parse_limit(value, 0, i64::from(u32::MAX), true)
                .map(|v| mqtt.default_session_expiry = v.map(|v| v as u32)),
            "closeMqttConnectionOnPublishAuthorizationFailure" => {
                parse_bool(value).map(|v| mqtt.close_on_publish_auth_failure = v)
            }
            "sslEnabled" => parse_ssl_mode(value).map(|mode| tls.mode = mode),
            "keyStorePath" => non_empty(value).map(|v| tls.key_store = Some(PathBuf::from(v))),
            "keyStorePassword" => {
                tls.key_store_password = Some(value.to_owned());
                Ok(())
            }
            "keyStoreType" => parse_store_type(value).map(|t| tls.key_store_type = Some(t)),
            "trustStoreType" => parse_store_type(value).map(|t| tls.trust_store_type = Some(t)),
            "needClientAuth" => parse_bool(value).map(|v| tls.need_client_auth = v),
            "trustStorePath" => non_empty(value).map(|v| tls.trust_store = Some(PathBuf::from(v))),
            "trustStorePassword" => {
                tls.trust_store_password = Some(value.to_owned());
                Ok(())
            }
            "tcpSendBufferSize" => parse_buffer_size(value).map(|v| socket.send_buffer_size = v),
            "tcpReceiveBufferSize" => {
                parse_buffer_size(value).map(|v| socket.receive_buffer_size = v)
            }
            _ => match artemis::lookup(key, value) {
                Some(artemis::Known::Ignored(foreign)) => {
                    ignored.push(match foreign.instead {
                        Some(instead) => format!("{key} ({}; {instead})", foreign.owner),
                        None => format!("{key} ({})", foreign.owner),
                    });
                    Ok(())
                }
                Some(artemis::Known::Refused(why)) => Err(why.to_owned()),
                None => Err(unknown(key)),
            },
        };
        if let Err(e) = result {
            errors.push(format!("{key}: {e}"));
        }
    }
    if let Some((key, list)) = protocols {
        let (served, others): (Vec<&str>, Vec<&str>) = list
            .into_iter()
            .partition(|p| p.eq_ignore_ascii_case("MQTT"));
        if served.is_empty() {
            errors.push(format!(
                "{key}: must include MQTT (got {:?}); leave it out to serve every protocol",
                others.join(",")
            ));
        } else if !others.is_empty() {
            ignored.push(format!(
                "{key} {} (Starling serves MQTT only)",
                others.join(",")
            ));
        }
    }
    if tls.mode != SslMode::Off && tls.key_store.is_none() {
        errors.push("keyStorePath: required when sslEnabled is true or optional".to_owned());
    }
    if tls.need_client_auth && tls.mode != SslMode::Required {
        // Without TLS (or with plain clients allowed beside it) clients present no
        // certificate: the requirement would silently not hold.
        errors.push(
            "needClientAuth: requires sslEnabled=true (with false or optional, clients connect \
             without a certificate)"
                .to_owned(),
        );
    }
    if errors.is_empty() {
        Ok(Acceptor {
            name: name.to_owned(),
            host,
            port,
            mqtt,
            tls,
            socket,
            ignored,
        })
    } else {
        Err(errors)
    }
}

/// The error for a name nobody knows, suggesting the nearest known one.
fn unknown(key: &str) -> String {
    let known = NAMES.iter().copied().chain(artemis::names());
    match artemis::suggest(key, known) {
        Some(name) if name.eq_ignore_ascii_case(key) => format!(
            "unknown acceptor parameter; did you mean `{name}`? (names are case-sensitive, as \
             in Artemis)"
        ),
        Some(name) => format!("unknown acceptor parameter; did you mean `{name}`?"),
        None => "unknown acceptor parameter".to_owned(),
    }
}

/// `keyStoreType` / `trustStoreType`: Java's type names, read without regard to case as
/// Java's `KeyStore.getInstance` reads them.
fn parse_store_type(value: &str) -> Result<StoreType, String> {
    match value.trim().to_ascii_uppercase().as_str() {
        "PKCS12" => Ok(StoreType::Pkcs12),
        "PEM" => Ok(StoreType::Pem),
        kind @ ("JKS" | "JCEKS") => Err(format!(
            "{kind} keystores cannot be read by Starling; convert the keystore to PKCS#12 with \
             `keytool -importkeystore -srckeystore FILE -destkeystore FILE.p12 \
             -deststoretype PKCS12` and set the type to PKCS12"
        )),
        _ => Err(format!("{value:?} is not PKCS12 or PEM")),
    }
}

/// `tcpSendBufferSize` / `tcpReceiveBufferSize`: -1 (the kernel's default) or a size in bytes.
fn parse_buffer_size(value: &str) -> Result<Option<u32>, String> {
    match parse_limit(value, 1, i64::from(i32::MAX), false) {
        Ok(size) => Ok(size.map(|n| n as u32)),
        Err(_) => Err(format!(
            "{value:?} is not -1 (the system's default) or a size in bytes from 1 to {}",
            i32::MAX
        )),
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed [ in IPv6 address".to_owned())?;
        let port = rest
            .strip_prefix(':')
            .ok_or_else(|| "missing :port after the address".to_owned())?;
        (host, port)
    } else {
        authority
            .rsplit_once(':')
            .ok_or_else(|| "missing :port (e.g. 127.0.0.1:1883)".to_owned())?
    };
    if host.is_empty() {
        return Err("missing host".to_owned());
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
    Ok((host.to_owned(), port))
}

/// Parses an Artemis limit: -1 (None: not sent / no limit) or a value in `min..=max`.
/// 0 is only allowed where `zero_ok`; elsewhere MQTT 5 prohibits it.
fn parse_limit(value: &str, min: i64, max: i64, zero_ok: bool) -> Result<Option<i64>, String> {
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number"))?;
    match n {
        -1 => Ok(None),
        0 if !zero_ok => Err("0 is prohibited by the MQTT 5 specification; use -1 to not send it, or a positive value".to_owned()),
        n if n >= min && n <= max => Ok(Some(n)),
        n => Err(format!("{n} is out of range (-1, or {min} to {max})")),
    }
}

fn parse_ssl_mode(value: &str) -> Result<SslMode, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(SslMode::Required),
        "false" => Ok(SslMode::Off),
        "optional" => Ok(SslMode::Optional),
        _ => Err(format!("{value:?} is not true, false or optional")),
    }
}

fn non_empty(value: &str) -> Result<&str, String> {
    if value.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(value.trim())
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

/// The non-URL connection parameters from `[core]`, as the base for every acceptor.
pub fn base_config(connect_timeout_ms: u64, outbound_topic_aliases: AliasPolicy) -> MqttConfig {
    MqttConfig {
        connect_timeout: Duration::from_millis(connect_timeout_ms),
        outbound_topic_aliases,
        ..MqttConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> Acceptor {
        match parse("t", url, &MqttConfig::default()) {
            Ok(a) => a,
            Err(e) => panic!("{url}: {e:?}"),
        }
    }

    fn err(url: &str) -> String {
        match parse("t", url, &MqttConfig::default()) {
            Ok(a) => panic!("{url} parsed: {a:?}"),
            Err(e) => e.join("; "),
        }
    }

    #[test]
    fn defaults_are_the_seeds() {
        let a = ok("tcp://127.0.0.1:1883?protocols=MQTT");
        assert_eq!(a.host, "127.0.0.1");
        assert_eq!(a.port, 1883);
        assert_eq!(a.mqtt.receive_maximum, Some(65535));
        assert_eq!(a.mqtt.topic_alias_maximum, Some(65535));
        assert_eq!(a.mqtt.maximum_packet_size, Some(268_435_455));
        assert_eq!(a.mqtt.server_keep_alive, Some(60));
        assert_eq!(a.mqtt.default_session_expiry, None);
        assert!(a.mqtt.close_on_publish_auth_failure);
    }

    #[test]
    fn every_parameter_is_read() {
        let a = ok(
            "tcp://0.0.0.0:1883?protocols=CORE,MQTT;receiveMaximum=10;topicAliasMaximum=0;\
                    maximumPacketSize=-1;serverKeepAlive=-1;defaultMqttSessionExpiryInterval=30;\
                    closeMqttConnectionOnPublishAuthorizationFailure=false",
        );
        assert_eq!(a.mqtt.receive_maximum, Some(10));
        assert_eq!(a.mqtt.topic_alias_maximum, Some(0));
        assert_eq!(a.mqtt.maximum_packet_size, None);
        assert_eq!(a.mqtt.server_keep_alive, None);
        assert_eq!(a.mqtt.default_session_expiry, Some(30));
        assert!(!a.mqtt.close_on_publish_auth_failure);
    }

    #[test]
    fn tls_parameters_are_read() {
        let a = ok(
            "tcp://h:8883?protocols=MQTT;sslEnabled=true;keyStorePath=/k.p12;\
                    keyStorePassword=pw;needClientAuth=true;trustStorePath=/ca.pem",
        );
        assert_eq!(a.tls.mode, SslMode::Required);
        assert_eq!(a.tls.key_store, Some(PathBuf::from("/k.p12")));
        assert_eq!(a.tls.key_store_password.as_deref(), Some("pw"));
        assert!(a.tls.need_client_auth);
        assert_eq!(a.tls.trust_store, Some(PathBuf::from("/ca.pem")));
    }

    /// Client certificates are only ever presented over TLS: requiring them on an acceptor
    /// that also (or only) takes plain clients is an error, not a requirement that silently
    /// does not hold.
    #[test]
    fn need_client_auth_without_tls_only_is_an_error_naming_the_parameter() {
        for mode in ["false", "optional"] {
            let url = format!(
                "tcp://h:8883?protocols=MQTT;sslEnabled={mode};keyStorePath=/k.pem;\
                 needClientAuth=true;trustStorePath=/ca.pem"
            );
            let errors = parse("main", &url, &MqttConfig::default()).expect_err(&url);
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("needClientAuth: requires sslEnabled=true")),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let a = ok("tcp://[::1]:1883?protocols=MQTT");
        assert_eq!(a.host, "::1");
        assert_eq!(a.bind_address(), "[::1]:1883");
    }

    #[test]
    fn prohibited_zeroes_are_errors_naming_the_parameter() {
        assert!(err("tcp://h:1?protocols=MQTT;receiveMaximum=0")
            .starts_with("receiveMaximum: 0 is prohibited"));
        assert!(err("tcp://h:1?protocols=MQTT;maximumPacketSize=0")
            .starts_with("maximumPacketSize: 0 is prohibited"));
    }

    #[test]
    fn bad_values_and_unknown_parameters_are_errors() {
        assert!(err("tcp://h:1?protocols=MQTT;receiveMaximum=70000")
            .contains("receiveMaximum: 70000 is out of range"));
        assert!(err("tcp://h:1?protocols=MQTT;serverKeepAlive=x").contains("serverKeepAlive:"));
        assert!(
            err("tcp://h:1?protocols=MQTT;bogus=1").contains("bogus: unknown acceptor parameter")
        );
        assert!(err("tcp://h:1?protocols=AMQP").contains("protocols: must include MQTT"));
        assert!(err("tcp://h:1?protocols=").contains("protocols: must include MQTT"));
        assert!(err("tcp://h:1?protocol=STOMP").contains("protocol: must include MQTT"));
        assert!(err("udp://h:1?protocols=MQTT").contains("must start with tcp://"));
        assert!(err("tcp://h?protocols=MQTT").contains("missing :port"));
        assert!(err("tcp://h:99999?protocols=MQTT").contains("not a number"));
        assert!(err("tcp://h:1?protocols=MQTT;sslEnabled=maybe").contains("sslEnabled:"));
        assert!(err("tcp://h:1?protocols=MQTT;sslEnabled=true").contains("keyStorePath: required"));
    }

    #[test]
    fn several_errors_are_all_reported() {
        let e = err("tcp://h:1?protocols=MQTT;receiveMaximum=0;maximumPacketSize=0");
        assert!(e.contains("receiveMaximum") && e.contains("maximumPacketSize"));
    }

    /// Artemis' own default acceptors (`artemis create`), verbatim but for the address.
    const STOCK_MQTT: &str = "tcp://0.0.0.0:1883?tcpSendBufferSize=1048576;\
        tcpReceiveBufferSize=1048576;protocols=MQTT;useEpoll=true";
    const STOCK_ARTEMIS: &str = "tcp://0.0.0.0:61616?tcpSendBufferSize=1048576;\
        tcpReceiveBufferSize=1048576;amqpMinLargeMessageSize=102400;\
        protocols=CORE,AMQP,STOMP,HORNETQ,MQTT,OPENWIRE;useEpoll=true;amqpCredits=1000;\
        amqpLowCredits=300;amqpDuplicateDetection=true;supportAdvisory=false;\
        suppressInternalManagementObjects=false";
    const STOCK_HORNETQ: &str = "tcp://0.0.0.0:5445?anycastPrefix=jms.queue.;\
        multicastPrefix=jms.topic.;protocols=HORNETQ,STOMP,MQTT;useEpoll=true";

    #[test]
    fn stock_artemis_lines_parse_and_list_what_is_ignored() {
        let a = ok(STOCK_MQTT);
        assert_eq!(a.socket.send_buffer_size, Some(1_048_576));
        assert_eq!(a.socket.receive_buffer_size, Some(1_048_576));
        assert_eq!(a.ignored, ["useEpoll (Netty transport)"]);
        assert_eq!(a.mqtt, MqttConfig::default());

        let a = ok(STOCK_ARTEMIS);
        assert_eq!(
            a.ignored,
            [
                "amqpMinLargeMessageSize (AMQP)",
                "useEpoll (Netty transport)",
                "amqpCredits (AMQP)",
                "amqpLowCredits (AMQP)",
                "amqpDuplicateDetection (AMQP)",
                "supportAdvisory (OpenWire)",
                "suppressInternalManagementObjects (OpenWire)",
                "protocols CORE,AMQP,STOMP,HORNETQ,OPENWIRE (Starling serves MQTT only)",
            ]
        );
        let a = ok(STOCK_HORNETQ);
        assert!(
            a.ignored[0].starts_with("anycastPrefix ("),
            "{:?}",
            a.ignored
        );
        let a = ok("tcp://h:1?protocols=MQTT;anycastPrefix=;multicastPrefix=");
        assert_eq!(a.ignored.len(), 2, "{:?}", a.ignored);
    }

    /// Artemis: "If empty: we get the default list" (RemotingServiceImpl.createAcceptor): an
    /// acceptor without `protocols` serves every protocol, MQTT among them.
    #[test]
    fn a_missing_protocols_parameter_serves_mqtt() {
        let a = ok("tcp://127.0.0.1:1883");
        assert!(a.ignored.is_empty());
        let a = ok("tcp://127.0.0.1:1883?receiveMaximum=7");
        assert_eq!(a.mqtt.receive_maximum, Some(7));
        // The deprecated singular name is read like the plural.
        assert!(ok("tcp://h:1?protocol=MQTT").ignored.is_empty());
    }

    /// Artemis matches parameter names exactly: transport keys with `Set.contains`
    /// (`ConfigurationHelper.checkKeys`, `HashMap.get`), protocol keys as JavaBeans
    /// properties (`BeanSupport.setData`). Artemis silently ignores a name it does not
    /// know; Starling refuses it, suggesting the nearest known name (by edit distance,
    /// ignoring case).
    #[test]
    fn a_misspelled_parameter_is_an_error_suggesting_the_right_name() {
        let e = err("tcp://h:1?protocols=MQTT;recieveMaximum=10");
        assert_eq!(
            e,
            "recieveMaximum: unknown acceptor parameter; did you mean `receiveMaximum`?"
        );
        let e = err("tcp://h:1?protocols=MQTT;ReceiveMaximum=10");
        assert!(
            e.contains("did you mean `receiveMaximum`? (names are case-sensitive"),
            "{e}"
        );
        let e = err("tcp://h:1?protocols=MQTT;useepoll=true");
        assert!(e.contains("did you mean `useEpoll`?"), "{e}");
        let e = err("tcp://h:1?protocols=MQTT;maxPacketSize=100");
        assert!(e.contains("did you mean `maximumPacketSize`?"), "{e}");
        assert_eq!(
            err("tcp://h:1?protocols=MQTT;bogus=1"),
            "bogus: unknown acceptor parameter"
        );
    }

    #[test]
    fn parameters_whose_ignoring_would_let_clients_in_are_refused() {
        assert!(err("tcp://h:1?protocols=MQTT;crlPath=/crl.pem").starts_with("crlPath: "));
        assert!(err("tcp://h:1?protocols=MQTT;verifyHost=true").starts_with("verifyHost: "));
        assert_eq!(
            ok("tcp://h:1?protocols=MQTT;verifyHost=false").ignored,
            ["verifyHost (Java TLS)"]
        );
        assert!(
            err("tcp://h:1?protocols=MQTT;activemq.usemaskedpassword=true")
                .starts_with("activemq.usemaskedpassword: masked passwords")
        );
    }

    #[test]
    fn buffer_sizes_are_minus_one_or_a_size() {
        let a = ok("tcp://h:1?tcpSendBufferSize=-1;tcpReceiveBufferSize=65536");
        assert_eq!(a.socket.send_buffer_size, None);
        assert_eq!(a.socket.receive_buffer_size, Some(65536));
        assert!(err("tcp://h:1?tcpSendBufferSize=0").starts_with("tcpSendBufferSize: "));
        assert!(err("tcp://h:1?tcpReceiveBufferSize=big").starts_with("tcpReceiveBufferSize: "));
    }

    /// `NAMES` lists exactly what `parse` matches: each parses as a known parameter.
    #[test]
    fn every_listed_name_is_a_parameter() {
        for name in NAMES {
            let url = format!("tcp://h:1?{name}=x");
            if let Err(errors) = parse("t", &url, &MqttConfig::default()) {
                assert!(
                    !errors
                        .iter()
                        .any(|e| e.contains("unknown acceptor parameter")),
                    "{name}: {errors:?}"
                );
            }
        }
    }

    #[test]
    fn store_types_are_read_without_regard_to_case() {
        let a = ok("tcp://h:1?keyStoreType=pkcs12;trustStoreType=Pem");
        assert_eq!(a.tls.key_store_type, Some(StoreType::Pkcs12));
        assert_eq!(a.tls.trust_store_type, Some(StoreType::Pem));
        assert!(err("tcp://h:1?keyStoreType=JKS").contains("keytool -importkeystore"));
        assert!(err("tcp://h:1?trustStoreType=BCFKS").starts_with("trustStoreType: "));
    }
}
