//! Artemis-style acceptor URLs: `tcp://host:port?protocols=MQTT;receiveMaximum=100`.
//!
//! Parameters keep their Artemis names, defaults and special values (the seed's MQTT chapter),
//! so an Artemis user's acceptor line works unchanged. Every problem is reported with the
//! parameter's name; an unknown parameter is an error, never silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use starling_actors::config::MqttConfig;
use starling_actors::connection::AliasPolicy;

use crate::tls::{SslMode, TlsParams};

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
    let mut saw_protocols = false;
    for pair in query.split([';', '&']).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let result = match key {
            "protocols" => {
                saw_protocols = true;
                if value
                    .split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("MQTT"))
                {
                    Ok(())
                } else {
                    Err(format!("must include MQTT (got {value:?})"))
                }
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
            "needClientAuth" => parse_bool(value).map(|v| tls.need_client_auth = v),
            "trustStorePath" => non_empty(value).map(|v| tls.trust_store = Some(PathBuf::from(v))),
            "trustStorePassword" => {
                tls.trust_store_password = Some(value.to_owned());
                Ok(())
            }
            _ => Err("unknown acceptor parameter".to_owned()),
        };
        if let Err(e) = result {
            errors.push(format!("{key}: {e}"));
        }
    }
    if !saw_protocols {
        errors.push("protocols: missing; an MQTT acceptor needs protocols=MQTT".to_owned());
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
        })
    } else {
        Err(errors)
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
        assert!(err("tcp://h:1").contains("protocols: missing"));
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
}
