//! Logging: slog drains (term or JSON, to standard error or a file) behind a per-logger level
//! filter.
//!
//! A "logger" is a module of Starling named without its crate: `protocol` (every packet, at
//! TRACE), `connection`, `connection::io`, `session`, `registry`, `topic`, `broker`, `runtime`.
//! `[logging.levels]` sets a level per name; the longest matching name wins, then
//! `[logging] level`. The filter runs before the async drain, so a disabled record is never
//! formatted; a record more verbose than every configured level (the TRACE packet log, most of
//! the time) is turned away by one atomic load, before any lock or name lookup. The table can
//! be swapped at run time (`LogLevels::set`).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
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
}
