//! Logging: slog drains (term or JSON, to standard error or a file) behind a per-logger level
//! filter.
//!
//! A "logger" is a module of Starling named without its crate: `protocol` (every packet, at
//! TRACE), `connection`, `connection::io`, `session`, `registry`, `topic`, `broker`, `runtime`.
//! `[logging.levels]` sets a level per name; the longest matching name wins, then
//! `[logging] level`. The filter runs before the async drain, so a disabled record costs one
//! level lookup and is never formatted. Its table can be swapped at run time (`LogLevels::set`).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, RwLock};

use slog::{o, Drain, Level, Logger, OwnedKVList, Record};

use crate::settings::{LogFormat, LogLevel, LoggingSettings};

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
        let mut overrides: Vec<_> = settings
            .levels
            .iter()
            .map(|(name, level)| (name.clone(), to_slog(*level)))
            .collect();
        overrides.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
        LevelTable {
            default: to_slog(settings.level),
            overrides,
        }
    }

    /// The logger name of a module path: the path without its crate.
    fn logger_name(module: &str) -> &str {
        module.split_once("::").map_or(module, |(_, rest)| rest)
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

/// A handle to change log levels while running.
#[derive(Debug, Clone)]
pub struct LogLevels(Arc<RwLock<LevelTable>>);

impl LogLevels {
    /// Applies the levels of new logging settings.
    pub fn set(&self, settings: &LoggingSettings) {
        if let Ok(mut table) = self.0.write() {
            *table = LevelTable::from_settings(settings);
        }
    }
}

struct LevelFilter<D> {
    inner: D,
    levels: Arc<RwLock<LevelTable>>,
}

impl<D: Drain> Drain for LevelFilter<D> {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let enabled = self
            .levels
            .read()
            .map(|t| t.enabled(record.module(), record.level()))
            .unwrap_or(true);
        if enabled {
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
    let levels = Arc::new(RwLock::new(LevelTable::from_settings(settings)));
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
    use std::collections::BTreeMap;

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
    }
}
