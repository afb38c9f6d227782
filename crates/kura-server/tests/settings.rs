//! The configuration loader: every setting can be set through the file and through the
//! environment and takes effect, flags beat the environment which beats the file, a malformed
//! value or an unknown key is an error naming it, and docs/configuration.md lists exactly the
//! settings there are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kura_server::settings::{self, ConfigError, Layers, SETTINGS};

/// A value for each setting that differs from its default.
fn sample(name: &str) -> &'static str {
    match name {
        "data_dir" => "/srv/kura-sample",
        "database_url" => "postgres://kura@db.example/kura",
        "listen" => "0.0.0.0:9443",
        "public_url" => "https://kura.example.jp",
        "server_name" => "aoba-kura",
        "master_key" => "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "max_upload_bytes" => "1048576",
        "session_minutes" => "45",
        "sweep_interval_secs" => "120",
        "disclosure_k" => "11",
        "search_repeat_limit" => "3",
        "study_epsilon_budget" => "2.5",
        "org_epsilon_budget" => "7.5",
        "max_open_studies_per_org" => "4",
        "max_differencing_refusals" => "6",
        "provider_sync_interval_secs" => "3600",
        "provider_request_timeout_secs" => "12",
        "outbound_allowed_networks" => "10.0.0.0/8,192.168.1.0/24",
        "max_concurrent_imports" => "5",
        "max_upload_bytes_in_flight" => "2097152",
        "upload_spool_threshold_bytes" => "65536",
        "max_parts_per_record" => "5000",
        other => panic!("no sample value for the setting {other}: add one"),
    }
}

/// `name = value` as TOML: numbers as numbers, lists as lists, the rest as strings.
fn toml_line(name: &str, value: &str) -> String {
    if name == "outbound_allowed_networks" {
        let items: Vec<String> = value.split(',').map(|n| format!("{n:?}")).collect();
        return format!("{name} = [{}]\n", items.join(", "));
    }
    if value.parse::<f64>().is_ok() { format!("{name} = {value}\n") } else { format!("{name} = {value:?}\n") }
}

fn file_with(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("kura.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn every_setting_takes_effect_through_the_file_and_through_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = settings::load(dir.path(), &Layers::default()).unwrap();
    for setting in SETTINGS {
        let value = sample(setting.name);
        assert_ne!(setting.show(&defaults), value, "{}: the sample differs from the default", setting.name);

        let file = file_with(dir.path(), &toml_line(setting.name, value));
        let from_file = settings::load(dir.path(), &Layers { file: Some(file), ..Default::default() })
            .unwrap_or_else(|e| panic!("{}: {e}", setting.name));
        assert_eq!(setting.show(&from_file), value, "{} through the file", setting.name);

        let layers = Layers { environment: env(&[(&setting.env_var(), value)]), ..Default::default() };
        let from_env = settings::load(dir.path(), &layers).unwrap_or_else(|e| panic!("{}: {e}", setting.name));
        assert_eq!(setting.show(&from_env), value, "{} through {}", setting.name, setting.env_var());
    }
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_with(dir.path(), "disclosure_k = 20\nlisten = \"127.0.0.1:7001\"\nserver_name = \"from-file\"\n");
    let layers = Layers {
        file: Some(file),
        environment: env(&[("KURA_DISCLOSURE_K", "30"), ("KURA_LISTEN", "127.0.0.1:7002")]),
        flags: vec![("listen", "127.0.0.1:7003".into())],
    };
    let config = settings::load(dir.path(), &layers).unwrap();
    assert_eq!(config.server_name, "from-file");
    assert_eq!(config.disclosure_k, 30);
    assert_eq!(config.listen.to_string(), "127.0.0.1:7003");
    // The public URL follows the listen address unless set itself.
    assert_eq!(config.public_url, "http://127.0.0.1:7003");
    // The data directory places the database unless the database is set itself.
    let moved = Layers { environment: env(&[("KURA_DATA_DIR", "/srv/elsewhere")]), ..Default::default() };
    let config = settings::load(dir.path(), &moved).unwrap();
    assert_eq!(config.database_url, "sqlite:/srv/elsewhere/kura.db");
    // Unrelated KURA_ variables (the CLI's own) are not settings and are left alone.
    let cli_only =
        Layers { environment: env(&[("KURA_SERVER", "http://x"), ("KURA_TOKEN", "t")]), ..Default::default() };
    settings::load(dir.path(), &cli_only).unwrap();
}

#[test]
fn a_malformed_value_is_an_error_naming_the_setting_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    for setting in SETTINGS.iter().filter(|s| !matches!(s.name, "data_dir" | "server_name")) {
        let layers = Layers { environment: env(&[(&setting.env_var(), "not a value")]), ..Default::default() };
        let error = settings::load(dir.path(), &layers).expect_err(setting.name).to_string();
        assert!(error.contains(setting.name) && error.contains(&setting.env_var()), "{error}");
    }
    // Below the least sensible value.
    for (var, value) in
        [("KURA_DISCLOSURE_K", "0"), ("KURA_SESSION_MINUTES", "-5"), ("KURA_STUDY_EPSILON_BUDGET", "NaN")]
    {
        let layers = Layers { environment: env(&[(var, value)]), ..Default::default() };
        assert!(settings::load(dir.path(), &layers).is_err(), "{var}={value} is refused");
    }
    // In the file: a wrong type, a typo, a file that is not TOML.
    let file = file_with(dir.path(), "session_minutes = \"half an hour\"\n");
    let error = settings::load(dir.path(), &Layers { file: Some(file.clone()), ..Default::default() }).unwrap_err();
    assert!(matches!(&error, ConfigError::Invalid { setting, .. } if setting == "session_minutes"), "{error}");
    assert!(error.to_string().contains("kura.toml"), "{error}");
    std::fs::write(&file, "disclosure = 5\n").unwrap();
    let error = settings::load(dir.path(), &Layers { file: Some(file.clone()), ..Default::default() }).unwrap_err();
    assert!(matches!(&error, ConfigError::UnknownKey { key, .. } if key == "disclosure"), "{error}");
    std::fs::write(&file, "listen = [\n").unwrap();
    let error = settings::load(dir.path(), &Layers { file: Some(file), ..Default::default() }).unwrap_err();
    assert!(matches!(error, ConfigError::File { .. }), "{error}");
    let missing = Layers { file: Some(dir.path().join("absent.toml")), ..Default::default() };
    assert!(matches!(settings::load(dir.path(), &missing), Err(ConfigError::File { .. })));
}

#[test]
fn the_master_key_never_shows_in_errors_or_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let key = sample("master_key");
    let layers = Layers { environment: env(&[("KURA_MASTER_KEY", key)]), ..Default::default() };
    let config = settings::load(dir.path(), &layers).unwrap();
    assert!(!format!("{config:?}").contains(key));
    let short = Layers { environment: env(&[("KURA_MASTER_KEY", "00112233deadbeef")]), ..Default::default() };
    let error = settings::load(dir.path(), &short).unwrap_err().to_string();
    assert!(!error.contains("deadbeef"), "{error}");
}

#[test]
fn the_documentation_lists_exactly_the_settings() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let (start, end) = ("<!-- settings table: generated -->\n", "<!-- end of settings table -->");
    let table = settings::markdown_table();
    if std::env::var_os("KURA_UPDATE_SNAPSHOTS").is_some() {
        let head = &doc[..doc.find(start).expect("start marker") + start.len()];
        let tail = &doc[doc.find(end).expect("end marker")..];
        std::fs::write(path, format!("{head}{table}{tail}")).unwrap();
        return;
    }
    assert!(
        doc.contains(&format!("{start}{table}{end}")),
        "docs/configuration.md's table is not the settings table; KURA_UPDATE_SNAPSHOTS=1 rewrites it"
    );
}
