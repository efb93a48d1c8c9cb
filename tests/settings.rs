//! Settings: layering (defaults -> files -> environment), acceptor URL parameters, and errors
//! that name the key and the file. Also the daemon's `--check-config`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use config::Environment;
use starling::settings::{LogFormat, LogLevel, Settings};

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

fn load(files: &[&tempfile::NamedTempFile]) -> Result<Settings, starling::settings::SettingsError> {
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path().to_path_buf()).collect();
    Settings::load_with_env(&paths, None)
}

fn load_err(text: &str) -> (String, String) {
    let f = file(text);
    let err = load(&[&f])
        .expect_err("settings should be rejected")
        .to_string();
    (err, f.path().display().to_string())
}

#[test]
fn built_in_defaults_listen_on_loopback_1883_and_61616() {
    let settings = Settings::load_with_env(&[], None).expect("defaults load");
    let acceptors = settings.acceptors().expect("acceptors");
    let addrs: Vec<String> = acceptors.iter().map(|a| a.bind_address()).collect();
    assert_eq!(addrs, ["127.0.0.1:1883", "127.0.0.1:61616"]);
    assert_eq!(settings.core.mqtt_session_scan_interval, 5000);
    assert_eq!(settings.logging.level, LogLevel::Info);
    assert_eq!(settings.logging.format, LogFormat::Term);
}

#[test]
fn the_compiled_in_defaults_are_settings_default_toml() {
    let on_disk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/settings/default.toml"
    ))
    .expect("settings/default.toml");
    assert_eq!(starling::settings::DEFAULT_SETTINGS, on_disk);
}

#[test]
fn later_files_override_earlier_ones_key_by_key() {
    let a = file("[core]\nworkers = 3\nconnect_timeout = 1234\n");
    let b = file("[core]\nworkers = 5\n[logging.levels]\nprotocol = \"trace\"\n");
    let settings = load(&[&a, &b]).expect("load");
    assert_eq!(settings.core.workers, 5);
    assert_eq!(settings.core.connect_timeout, 1234);
    assert_eq!(
        settings.logging.levels.get("protocol"),
        Some(&LogLevel::Trace)
    );
}

#[test]
fn a_file_that_sets_acceptors_replaces_the_default_list() {
    let f = file("[[acceptors]]\nname = \"only\"\nurl = \"tcp://127.0.0.1:1999?protocols=MQTT\"\n");
    let settings = load(&[&f]).expect("load");
    let names: Vec<String> = settings.acceptors.iter().map(|a| a.name.clone()).collect();
    assert_eq!(names, ["only"]);
}

#[test]
fn environment_variables_override_files() {
    let f = file("[core]\nworkers = 3\n");
    let vars: HashMap<String, String> = [
        ("STARLING__CORE__WORKERS".to_owned(), "7".to_owned()),
        ("STARLING__LOGGING__LEVEL".to_owned(), "debug".to_owned()),
    ]
    .into_iter()
    .collect();
    let env = Environment::with_prefix("STARLING").source(Some(vars));
    let settings = Settings::load_with_env(&[f.path().to_path_buf()], Some(env)).expect("load");
    assert_eq!(settings.core.workers, 7);
    assert_eq!(settings.logging.level, LogLevel::Debug);
}

#[test]
fn an_unknown_key_is_an_error_naming_the_key_and_the_file() {
    let (err, path) = load_err("[core]\nbogus = 1\n");
    assert!(
        err.contains("bogus") && err.contains("core") && err.contains(&path),
        "{err}"
    );
    let (err, path) = load_err("[nonsense]\nx = 1\n");
    assert!(err.contains("nonsense") && err.contains(&path), "{err}");
}

#[test]
fn a_wrong_type_is_an_error_naming_the_key_and_the_file() {
    let (err, path) = load_err("[core]\nworkers = \"many\"\n");
    assert!(err.contains("core.workers") && err.contains(&path), "{err}");
}

#[test]
fn an_unknown_log_level_is_explained() {
    let (err, path) = load_err("[logging]\nlevel = \"loud\"\n");
    assert!(
        err.contains("logging.level") && err.contains("loud") && err.contains(&path),
        "{err}"
    );
}

/// Issue 19, item 9: a `[logging.levels]` name that no logger has would log nothing, silently:
/// it is a settings error naming the key, the file, and the loggers there are.
#[test]
fn an_unknown_logger_name_is_an_error_naming_key_file_and_known_loggers() {
    let (err, path) = load_err("[logging.levels]\nprotocol = \"trace\"\nconection = \"debug\"\n");
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("logging.levels.conection: no logger"), "{err}");
    assert!(
        err.contains("protocol, ") && err.contains("connection::io"),
        "the known names are listed: {err}"
    );
    assert!(!err.contains("logging.levels.protocol:"), "{err}");

    let f = file("[logging.levels]\n\"org.apache.activemq.artemis.core.server\" = \"debug\"\n");
    let out = starling()
        .args(["--check-config", "-c"])
        .arg(f.path())
        .output()
        .expect("run starling");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("logging.levels.org.apache.activemq.artemis.core.server: no logger")
            && stderr.contains(&f.path().display().to_string()),
        "{stderr}"
    );
}

/// The seed's Debug Logging names Artemis' logger `org.apache.activemq.artemis.core.protocol.
/// mqtt`; written quoted or as TOML's dotted key (nested tables), it is one name.
#[test]
fn artemis_mqtt_logger_is_accepted_quoted_or_dotted() {
    for text in [
        "[logging.levels]\n\"org.apache.activemq.artemis.core.protocol.mqtt\" = \"TRACE\"\n",
        "[logging.levels]\norg.apache.activemq.artemis.core.protocol.mqtt = \"TRACE\"\n",
    ] {
        let settings = load(&[&file(text)]).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            settings
                .logging
                .levels
                .get("org.apache.activemq.artemis.core.protocol.mqtt"),
            Some(&LogLevel::Trace),
            "{text}"
        );
    }
}

#[test]
fn a_toml_syntax_error_names_the_file() {
    let (err, path) = load_err("core = = 1\n");
    assert!(err.contains(&path) && err.contains("line 1"), "{err}");
}

#[test]
fn prohibited_acceptor_zeroes_fail_naming_acceptor_parameter_and_file() {
    let (err, path) = load_err(
        "[[acceptors]]\nname = \"edge\"\n\
         url = \"tcp://127.0.0.1:1883?protocols=MQTT;receiveMaximum=0;maximumPacketSize=0\"\n",
    );
    assert!(err.contains("\"edge\"") && err.contains(&path), "{err}");
    assert!(err.contains("receiveMaximum: 0 is prohibited"), "{err}");
    assert!(err.contains("maximumPacketSize: 0 is prohibited"), "{err}");
}

#[test]
fn duplicate_acceptor_names_and_empty_lists_are_errors() {
    let (err, _) = load_err(
        "[[acceptors]]\nname = \"a\"\nurl = \"tcp://127.0.0.1:1?protocols=MQTT\"\n\
         [[acceptors]]\nname = \"a\"\nurl = \"tcp://127.0.0.1:2?protocols=MQTT\"\n",
    );
    assert!(err.contains("used by another acceptor"), "{err}");
    let (err, _) = load_err("acceptors = []\n");
    assert!(err.contains("at least one acceptor"), "{err}");
}

#[test]
fn zero_intervals_are_errors() {
    let (err, _) = load_err("[core]\nmqtt_session_scan_interval = 0\n");
    assert!(err.contains("core.mqtt_session_scan_interval"), "{err}");
}

#[test]
fn busy_poll_above_a_millisecond_is_an_error_naming_the_key() {
    let (err, _) = load_err("[core]\nbusy_poll = 1001\n");
    assert!(err.contains("core.busy_poll"), "{err}");
    let settings = load(&[&file("[core]\nbusy_poll = 1000\n")]).expect("1000 is allowed");
    assert_eq!(
        settings.broker_config().busy_poll,
        std::time::Duration::from_millis(1)
    );
    let off = load(&[&file("[core]\nbusy_poll = 0\n")]).expect("0 turns it off");
    assert_eq!(off.broker_config().busy_poll, std::time::Duration::ZERO);
}

fn starling() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starling"))
}

#[test]
fn check_config_accepts_valid_settings_and_exits_0() {
    let out = starling()
        .arg("--check-config")
        .output()
        .expect("run starling");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn check_config_prints_every_problem_and_exits_non_zero() {
    let f = file(
        "[[acceptors]]\nname = \"edge\"\n\
         url = \"tcp://127.0.0.1:1883?protocols=MQTT;receiveMaximum=0;bogus=1\"\n",
    );
    let out = starling()
        .args(["--check-config", "-c"])
        .arg(f.path())
        .output()
        .expect("run starling");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("receiveMaximum") && stderr.contains("bogus"),
        "{stderr}"
    );
    assert!(stderr.contains(&f.path().display().to_string()), "{stderr}");
}

#[test]
fn version_is_printed() {
    let out = starling().arg("--version").output().expect("run starling");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
