//! Logging: slog drains (term or JSON, to standard error or a file) behind a per-logger level
//! filter.
//!
//! A "logger" is a module of Starling named without its crate: `protocol` (every packet, at
//! TRACE), `connection`, `connection::io`, `session`, `registry`, `topic`, `broker`, `runtime`
//! (`LOGGERS` has them all). `[logging.levels]` sets a level per name; the longest matching
//! name wins, then `[logging] level`. Artemis' packet logger,
//! `org.apache.activemq.artemis.core.protocol.mqtt` (the seed's Debug Logging), is another
//! name for `protocol`; any other name is a settings error (`unknown_loggers`), since it
//! would silently log nothing. The filter runs before the async drain, so a disabled record is never
//! formatted; a record more verbose than every configured level (the TRACE packet log, most of
//! the time) is turned away by one atomic load, before any lock or name lookup. The table can
//! be swapped at run time (`LogLevels::set`).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use slog::{o, Drain, Level, Logger, OwnedKVList, Record};

use crate::settings::{LogFormat, LogLevel, LoggingSettings};

/// Artemis' logger for MQTT packets (the seed's Debug Logging): an alias of `protocol`.
pub const ARTEMIS_MQTT_LOGGER: &str = "org.apache.activemq.artemis.core.protocol.mqtt";

/// Every logger: each module of Starling's crates without the crate's name, and `starling`,
/// the daemon binary's own. A test checks the list against the source files.
pub const LOGGERS: &[&str] = &[
    // starling-actors
    "broker",
    "busy_poll",
    "config",
    "connection",
    "connection::aliases",
    "connection::clock",
    "connection::connect",
    "connection::inbound",
    "connection::io",
    "metrics",
    "msg",
    "protocol",
    "rare",
    "registry",
    "registry::table",
    "retain",
    "security",
    "security::acl",
    "security::manager",
    "security::password",
    "security::scram",
    "session",
    "session::delivery",
    "session::persist",
    "session::subscriptions",
    "session::takeover",
    "store",
    "store::records",
    "store::writer",
    "supervisor",
    "topic",
    // starling (the daemon shell)
    "acceptor",
    "acceptor::artemis",
    "listener",
    "logging",
    "runtime",
    "settings",
    "settings::log",
    "shutdown",
    "tls",
    "websocket",
    "starling",
];

/// The logger a `[logging.levels]` key names: itself, or `protocol` for Artemis' name.
pub fn logger_for(key: &str) -> Option<&'static str> {
    if key == ARTEMIS_MQTT_LOGGER {
        return Some("protocol");
    }
    LOGGERS.iter().copied().find(|name| *name == key)
}

/// The problems of a `[logging.levels]` table: each key that names no logger, and Artemis'
/// name set beside `protocol` to another level. Each names its key as `logging.levels.KEY`.
pub fn level_problems(levels: &BTreeMap<String, LogLevel>) -> Vec<String> {
    let mut problems: Vec<String> = levels
        .keys()
        .filter(|key| logger_for(key).is_none())
        .map(|key| {
            format!(
                "logging.levels.{key}: no logger has this name (names are case-sensitive); the \
                 loggers are {}, and {ARTEMIS_MQTT_LOGGER} (Artemis' name for protocol)",
                LOGGERS.join(", ")
            )
        })
        .collect();
    if let (Some(artemis), Some(ours)) = (levels.get(ARTEMIS_MQTT_LOGGER), levels.get("protocol")) {
        if artemis != ours {
            problems.push(format!(
                "logging.levels.{ARTEMIS_MQTT_LOGGER}: names the protocol logger, which \
                 logging.levels.protocol sets to another level; set one of them"
            ));
        }
    }
    problems
}

/// The level table the filter reads: a default and per-logger overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LevelTable {
    default: Option<Level>,
    /// (logger name, level), longest name first.
    overrides: Vec<(String, Option<Level>)>,
}

fn to_slog(level: LogLevel) -> Option<Level> {
    match level {
        LogLevel::Trace => Some(Level::Trace),
        LogLevel::Debug => Some(Level::Debug),
        LogLevel::Info => Some(Level::Info),
        LogLevel::Warning => Some(Level::Warning),
        LogLevel::Error => Some(Level::Error),
        LogLevel::Critical => Some(Level::Critical),
        LogLevel::Off => None,
    }
}

impl LevelTable {
    fn from_settings(settings: &LoggingSettings) -> LevelTable {
        // Aliases first, so that a logger's own name, set too, is the one kept.
        let mut named: BTreeMap<&str, Option<Level>> = BTreeMap::new();
        let (aliases, names): (Vec<_>, Vec<_>) = settings
            .levels
            .iter()
            .partition(|(name, _)| logger_for(name).is_some_and(|logger| logger != name.as_str()));
        for (name, level) in aliases.into_iter().chain(names) {
            named.insert(logger_for(name).unwrap_or(name.as_str()), to_slog(*level));
        }
        let mut overrides: Vec<_> = named
            .into_iter()
            .map(|(name, level)| (name.to_owned(), level))
            .collect();
        overrides.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
        LevelTable {
            default: to_slog(settings.level),
            overrides,
        }
    }

    /// The logger name of a module path: the path without its crate.
    fn logger_name(module: &str) -> &str {
        // Module paths have no single colons: the first one starts the `::`.
        match module.find(':') {
            Some(i) => module.get(i + 2..).unwrap_or(""),
            None => module,
        }
    }

    /// The most verbose level anything is logged at (`Level::as_usize`; 0: nothing is).
    fn most_verbose(&self) -> usize {
        std::iter::once(self.default)
            .chain(self.overrides.iter().map(|(_, level)| *level))
            .flatten()
            .map(|level| level.as_usize())
            .max()
            .unwrap_or(0)
    }

    fn enabled(&self, module: &str, level: Level) -> bool {
        let name = Self::logger_name(module);
        let limit = self
            .overrides
            .iter()
            .find(|(prefix, _)| {
                name == prefix
                    || (name.starts_with(prefix.as_str()) && name[prefix.len()..].starts_with("::"))
            })
            .map_or(self.default, |(_, level)| *level);
        limit.is_some_and(|limit| level.is_at_least(limit))
    }
}

/// The filter's state: the table, and the most verbose level in it for the fast path.
#[derive(Debug)]
struct Levels {
    table: RwLock<LevelTable>,
    most_verbose: AtomicUsize,
}

impl Levels {
    fn new(table: LevelTable) -> Levels {
        Levels {
            most_verbose: AtomicUsize::new(table.most_verbose()),
            table: RwLock::new(table),
        }
    }

    fn enabled(&self, record: &Record<'_>) -> bool {
        if record.level().as_usize() > self.most_verbose.load(Ordering::Relaxed) {
            return false;
        }
        self.table
            .read()
            .map(|t| t.enabled(record.module(), record.level()))
            .unwrap_or(true)
    }
}

/// A handle to change log levels while running.
#[derive(Debug, Clone)]
pub struct LogLevels(Arc<Levels>);

impl LogLevels {
    /// Applies the levels of new logging settings.
    pub fn set(&self, settings: &LoggingSettings) {
        let table = LevelTable::from_settings(settings);
        if let Ok(mut current) = self.0.table.write() {
            // Raised before a more verbose table is in, lowered after: never too strict.
            self.0
                .most_verbose
                .fetch_max(table.most_verbose(), Ordering::Relaxed);
            let most_verbose = table.most_verbose();
            *current = table;
            self.0.most_verbose.store(most_verbose, Ordering::Relaxed);
        }
    }
}

struct LevelFilter<D> {
    inner: D,
    levels: Arc<Levels>,
}

impl<D: Drain> Drain for LevelFilter<D> {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        if self.levels.enabled(record) {
            let _ = self.inner.log(record, values);
        }
        Ok(())
    }
}

/// Keeps the async drain alive; dropping it flushes the logs.
pub struct LogGuard {
    _guard: slog_async::AsyncGuard,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// The root logger, its guard, and the handle to change its levels.
#[derive(Debug)]
pub struct Logging {
    /// The root logger.
    pub log: Logger,
    /// Flushes on drop.
    pub guard: LogGuard,
    /// Level control.
    pub levels: LogLevels,
}

/// Builds the root logger from settings, writing to the configured file or standard error.
pub fn build(settings: &LoggingSettings) -> std::io::Result<Logging> {
    let writer: Box<dyn Write + Send> = match &settings.file {
        Some(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
        None => Box::new(std::io::stderr()),
    };
    Ok(build_with_writer(settings, writer))
}

/// Builds the root logger writing to any writer (tests capture logs this way).
pub fn build_with_writer(settings: &LoggingSettings, writer: Box<dyn Write + Send>) -> Logging {
    let format: Box<dyn Drain<Ok = (), Err = std::io::Error> + Send> = match settings.format {
        LogFormat::Term => {
            let decorator = slog_term::PlainDecorator::new(writer);
            Box::new(slog_term::FullFormat::new(decorator).build())
        }
        LogFormat::Json => Box::new(slog_json::Json::new(writer).add_default_keys().build()),
    };
    let (async_drain, guard) = slog_async::Async::new(format.fuse())
        .chan_size(16 * 1024)
        .thread_name("starling-log".to_owned())
        .build_with_guard();
    let levels = Arc::new(Levels::new(LevelTable::from_settings(settings)));
    let filter = LevelFilter {
        inner: async_drain,
        levels: Arc::clone(&levels),
    };
    Logging {
        log: Logger::root(filter.fuse(), o!()),
        guard: LogGuard { _guard: guard },
        levels: LogLevels(levels),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(level: LogLevel, levels: &[(&str, LogLevel)]) -> LevelTable {
        LevelTable::from_settings(&LoggingSettings {
            level,
            format: LogFormat::Term,
            file: None,
            levels: levels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect::<BTreeMap<_, _>>(),
        })
    }

    #[test]
    fn per_logger_levels_override_the_default() {
        let t = table(LogLevel::Info, &[("protocol", LogLevel::Trace)]);
        assert!(t.enabled("starling_actors::protocol", Level::Trace));
        assert!(!t.enabled("starling_actors::connection", Level::Debug));
        assert!(t.enabled("starling_actors::connection", Level::Info));
    }

    #[test]
    fn the_longest_logger_name_wins_and_names_match_whole_segments() {
        let t = table(
            LogLevel::Info,
            &[
                ("connection", LogLevel::Debug),
                ("connection::io", LogLevel::Error),
            ],
        );
        assert!(t.enabled("starling_actors::connection", Level::Debug));
        assert!(t.enabled("starling_actors::connection::connect", Level::Debug));
        assert!(!t.enabled("starling_actors::connection::io", Level::Warning));
        assert!(!t.enabled("starling_actors::connectionx", Level::Debug));
    }

    #[test]
    fn off_disables_everything() {
        let t = table(LogLevel::Off, &[]);
        assert!(!t.enabled("starling::runtime", Level::Critical));
        assert_eq!(t.most_verbose(), 0);
    }

    /// The fast path lets through everything any logger is set to: the most verbose level of
    /// the default and every override.
    #[test]
    fn the_most_verbose_level_covers_every_override() {
        let t = table(LogLevel::Warning, &[("protocol", LogLevel::Trace)]);
        assert_eq!(t.most_verbose(), Level::Trace.as_usize());
        let t = table(LogLevel::Info, &[("connection", LogLevel::Error)]);
        assert_eq!(t.most_verbose(), Level::Info.as_usize());
        assert_eq!(
            LevelTable::logger_name("starling_actors::connection::io"),
            "connection::io"
        );
        assert_eq!(LevelTable::logger_name("starling"), "starling");
    }

    /// The seed's Debug Logging: "TRACE logging for
    /// `org.apache.activemq.artemis.core.protocol.mqtt`" turns on the packet log, which is
    /// the `protocol` logger.
    #[test]
    fn artemis_mqtt_logger_is_the_protocol_logger() {
        let t = table(LogLevel::Info, &[(ARTEMIS_MQTT_LOGGER, LogLevel::Trace)]);
        assert!(t.enabled("starling_actors::protocol", Level::Trace));
        assert!(!t.enabled("starling_actors::connection", Level::Debug));
        // Set beside it, the logger's own name wins.
        let t = table(
            LogLevel::Info,
            &[
                (ARTEMIS_MQTT_LOGGER, LogLevel::Trace),
                ("protocol", LogLevel::Off),
            ],
        );
        assert!(!t.enabled("starling_actors::protocol", Level::Error));
    }

    #[test]
    fn unknown_logger_names_are_problems_listing_the_known_ones() {
        let levels: BTreeMap<String, LogLevel> = [
            ("protocol".to_owned(), LogLevel::Trace),
            ("Protocol".to_owned(), LogLevel::Trace),
            ("conection".to_owned(), LogLevel::Debug),
        ]
        .into_iter()
        .collect();
        let problems = level_problems(&levels);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("logging.levels.Protocol: no logger"));
        assert!(problems[1].starts_with("logging.levels.conection: no logger"));
        assert!(
            problems[1].contains("connection::io") && problems[1].contains(ARTEMIS_MQTT_LOGGER)
        );
        let both: BTreeMap<String, LogLevel> = [
            ("protocol".to_owned(), LogLevel::Off),
            (ARTEMIS_MQTT_LOGGER.to_owned(), LogLevel::Trace),
        ]
        .into_iter()
        .collect();
        assert_eq!(level_problems(&both).len(), 1);
    }

    /// `LOGGERS` is every module of the two crates (test modules aside): a module added
    /// without its logger name would make its name a settings error.
    #[test]
    fn every_module_is_a_known_logger() {
        fn modules(dir: &std::path::Path, prefix: &str, found: &mut Vec<String>) {
            let entries = std::fs::read_dir(dir).expect("source directory");
            for entry in entries {
                let path = entry.expect("entry").path();
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("utf-8 name")
                    .to_owned();
                let name = if prefix.is_empty() {
                    stem.clone()
                } else {
                    format!("{prefix}::{stem}")
                };
                if path.is_dir() {
                    modules(&path, &name, found);
                } else if path.extension().is_some_and(|e| e == "rs") && !stem.ends_with("_tests") {
                    match stem.as_str() {
                        "lib" => {}
                        "main" => found.push("starling".to_owned()),
                        "mod" => found.push(prefix.to_owned()),
                        _ => found.push(name),
                    }
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut found = Vec::new();
        modules(&root.join("actors/src"), "", &mut found);
        modules(&root.join("src"), "", &mut found);
        found.sort();
        let mut listed: Vec<String> = LOGGERS.iter().map(|s| (*s).to_owned()).collect();
        listed.sort();
        assert_eq!(found, listed);
    }
}
