//! `[logging]` settings: the level, the format, the file, and the per-logger levels (whose
//! names `crate::logging` checks).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `[logging]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSettings {
    /// The level of every logger without its own.
    pub level: LogLevel,
    /// Output format.
    pub format: LogFormat,
    /// Log file; standard error when absent.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Per-logger levels, by module name (`protocol`, `connection`, ...; see
    /// `logging::LOGGERS`), or Artemis' `org.apache.activemq.artemis.core.protocol.mqtt`.
    #[serde(default, deserialize_with = "dotted_levels")]
    pub levels: BTreeMap<String, LogLevel>,
}

/// `[logging.levels]`, where TOML reads an unquoted dotted key (`org.apache.activemq.artemis.
/// core.protocol.mqtt = "trace"`, written as Artemis users write logger names) as nested
/// tables: they are joined back into the one name.
fn dotted_levels<'de, D>(deserializer: D) -> Result<BTreeMap<String, LogLevel>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Node {
        Level(String),
        Table(BTreeMap<String, Node>),
    }
    fn flatten(
        prefix: &str,
        table: BTreeMap<String, Node>,
        out: &mut BTreeMap<String, LogLevel>,
    ) -> Result<(), String> {
        for (key, node) in table {
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            match node {
                Node::Level(level) => {
                    let level = LogLevel::try_from(level).map_err(|e| format!("{name}: {e}"))?;
                    out.insert(name, level);
                }
                Node::Table(table) => flatten(&name, table, out)?,
            }
        }
        Ok(())
    }
    let table = BTreeMap::<String, Node>::deserialize(deserializer)?;
    let mut levels = BTreeMap::new();
    flatten("", table, &mut levels).map_err(serde::de::Error::custom)?;
    Ok(levels)
}

/// A log level name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogLevel {
    /// Every packet (on the `protocol` logger) and more.
    Trace,
    /// Connection life, session decisions.
    Debug,
    /// Start-up, listening addresses, clients connecting.
    Info,
    /// Something is wrong but the broker goes on.
    #[serde(alias = "warn")]
    Warning,
    /// A request failed.
    Error,
    /// The broker cannot go on.
    Critical,
    /// Nothing.
    Off,
}

impl TryFrom<String> for LogLevel {
    type Error = String;

    fn try_from(name: String) -> Result<LogLevel, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warning" | "warn" => LogLevel::Warning,
            "error" => LogLevel::Error,
            "critical" => LogLevel::Critical,
            "off" => LogLevel::Off,
            _ => {
                return Err(format!(
                "unknown log level {name:?} (trace, debug, info, warning, error, critical or off)"
            ))
            }
        })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Term,
    /// One JSON object per line.
    Json,
}
