//! The `starling` daemon: command line -> settings -> logging -> `starling::run`.
//!
//! Exit codes: 0 after a graceful shutdown (or a valid `--check-config`), 1 when the broker
//! cannot start (an address in use, an unreadable store, ...), 2 when the settings are
//! invalid, 3 when actors kept failing past the supervisor's restart budget or the store
//! failed to commit (the service manager should start the broker afresh).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use slog::info;
use starling::{logging, shutdown, Settings};

/// An MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Debug, Parser)]
#[command(name = "starling", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A settings file layered over the built-in defaults; repeat to layer several, in order.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Vec<PathBuf>,
    /// Validate the settings, print every problem, and exit (0 when valid).
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Manage a Mosquitto-format password file (argon2id hashes): add or change a user
    /// (prompting for the password), or delete one.
    Passwd {
        /// Take the password from the command line (for scripts; it shows in `ps`).
        #[arg(short = 'b', conflicts_with = "delete")]
        batch: bool,
        /// Delete the user.
        #[arg(short = 'D')]
        delete: bool,
        /// The password file (created if missing).
        file: PathBuf,
        /// The user name.
        user: String,
        /// The password, with -b.
        password: Option<String>,
    },
    /// Print a `user:verifier` line for `security.scram_sha256_file`; the password is read
    /// from the first line of standard input (never from the command line).
    ScramVerifier {
        /// The user name.
        user: String,
    },
}

fn passwd(batch: bool, delete: bool, file: &Path, user: &str, password: Option<&str>) -> ExitCode {
    use starling_actors::security::password;
    if delete {
        return match password::delete_user(file, user) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("starling passwd: no user {user:?} in {}", file.display());
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("starling passwd: {e}");
                ExitCode::from(1)
            }
        };
    }
    let password = match (batch, password) {
        (true, Some(p)) => p.to_owned(),
        (true, None) => {
            eprintln!("starling passwd: -b needs the password as the last argument");
            return ExitCode::from(2);
        }
        (false, Some(_)) => {
            eprintln!("starling passwd: give the password with -b, or leave it out to be asked");
            return ExitCode::from(2);
        }
        (false, None) => match ask_password() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("starling passwd: {e}");
                return ExitCode::from(1);
            }
        },
    };
    match password::set_password(file, user, &password) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("starling passwd: {e}");
            ExitCode::from(1)
        }
    }
}

/// Asks twice without echo on a terminal; reads one line from standard input otherwise.
fn ask_password() -> Result<String, String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        return if password.is_empty() {
            Err("empty password".to_owned())
        } else {
            Ok(password)
        };
    }
    let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
    let second = rpassword::prompt_password("Reenter password: ").map_err(|e| e.to_string())?;
    if first != second {
        return Err("the passwords do not match".to_owned());
    }
    if first.is_empty() {
        return Err("empty password".to_owned());
    }
    Ok(first)
}

fn scram_verifier(user: &str) -> ExitCode {
    let mut password = String::new();
    if std::io::stdin().read_line(&mut password).is_err() {
        eprintln!("starling: cannot read the password from standard input");
        return ExitCode::from(2);
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() || user.is_empty() || user.contains(':') {
        eprintln!("starling: need a user name without ':' and a non-empty password");
        return ExitCode::from(2);
    }
    let verifier = starling_actors::security::scram::Verifier::new(password);
    println!("{user}:{}", verifier.to_text());
    ExitCode::SUCCESS
}

/// Runs the broker until SIGTERM/SIGINT. SIGHUP re-reads the settings files: log levels apply
/// at once, password, ACL and TLS files are re-read; a file that fails keeps the old settings.
fn serve(
    settings: starling::Settings,
    files: &[PathBuf],
    levels: &logging::LogLevels,
    log: &slog::Logger,
) -> Result<bool, starling::StartError> {
    let server = starling::start(settings, log.clone())?;
    let broker = server.broker().clone();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| starling::StartError::Thread(e.to_string()))?;
    let gave_up = runtime.block_on(async {
        let mut signals = match shutdown::Signals::new() {
            Ok(signals) => signals,
            Err(e) => {
                slog::error!(log, "cannot install signal handlers; stopping on Ctrl-C only"; "error" => %e);
                let _ = tokio::signal::ctrl_c().await;
                return false;
            }
        };
        loop {
            let signal = tokio::select! {
                signal = signals.next() => signal,
                why = broker.failed() => {
                    slog::crit!(log, "stopping: the broker gave up"; "why" => why);
                    return true;
                }
            };
            match signal {
                shutdown::Signal::Stop(name) => {
                    info!(log, "signal received"; "signal" => name);
                    return false;
                }
                shutdown::Signal::Reload => match Settings::load(files) {
                    Err(e) => {
                        for problem in &e.problems {
                            slog::error!(log, "reload failed, keeping the previous settings";
                                "problem" => problem);
                        }
                    }
                    Ok(new) => {
                        levels.set(&new.logging);
                        let (mut reloaded, failed) = server.reload();
                        reloaded.insert(0, "log levels".to_owned());
                        info!(log, "reloaded on SIGHUP"; "reloaded" => reloaded.join(", "));
                        for problem in failed {
                            slog::error!(log, "reload failed, keeping the previous settings";
                                "problem" => problem);
                        }
                    }
                },
            }
        }
    });
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    server.stop();
    Ok(gave_up)
}

/// Under systemd with `WatchdogSec=`, pings the watchdog at half its interval for as long as
/// the process lives (the broker's threads stopping ends the process, and the pings).
fn notify_systemd(log: &slog::Logger) {
    if let Some(interval) = sd_notify::watchdog_enabled().filter(|d| !d.is_zero()) {
        let every = interval / 2;
        info!(log, "systemd watchdog enabled"; "interval_ms" => every.as_millis() as u64);
        let spawned = std::thread::Builder::new()
            .name("starling-watchdog".to_owned())
            .spawn(move || loop {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                std::thread::sleep(every);
            });
        if let Err(e) = spawned {
            slog::error!(log, "cannot start the watchdog thread"; "error" => %e);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::ScramVerifier { user }) => return scram_verifier(user),
        Some(Command::Passwd {
            batch,
            delete,
            file,
            user,
            password,
        }) => return passwd(*batch, *delete, file, user, password.as_deref()),
        None => {}
    }
    let settings = match Settings::load(&cli.config) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("starling: invalid settings:");
            for problem in &e.problems {
                eprintln!("  {problem}");
            }
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        // Valid settings parse; what each acceptor ignores is worth a look before starting.
        for acceptor in settings.acceptors().unwrap_or_default() {
            if !acceptor.ignored.is_empty() {
                eprintln!(
                    "starling: warning: acceptor {:?}: parameters ignored, they do not apply \
                     to MQTT in Starling: {}",
                    acceptor.name,
                    acceptor.ignored.join(", ")
                );
            }
        }
        println!(
            "starling: settings are valid ({} acceptor(s))",
            settings.acceptors.len()
        );
        return ExitCode::SUCCESS;
    }
    let logging = match logging::build(&settings.logging) {
        Ok(logging) => logging,
        Err(e) => {
            eprintln!("starling: logging.file: cannot open the log file: {e}");
            return ExitCode::from(2);
        }
    };
    let log = logging.log.clone();
    info!(log, "starting"; "version" => env!("CARGO_PKG_VERSION"));
    notify_systemd(&log);
    let code = match serve(settings, &cli.config, &logging.levels, &log) {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(3),
        Err(e) => {
            slog::crit!(log, "cannot start"; "error" => %e);
            eprintln!("starling: {e}");
            ExitCode::from(1)
        }
    };
    drop(log);
    drop(logging);
    code
}
