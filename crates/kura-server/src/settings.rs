//! The one configuration loader: every setting of [`Config`] in one table ([`SETTINGS`]), read
//! from a TOML file, then the environment (`KURA_<NAME>`), then command-line flags, each layer
//! overriding the one before. A value that does not parse is an error naming the setting and
//! where the value came from; an unknown key in the file is an error too (a typo must not be
//! silently ignored). `docs/configuration.md` documents the same table, and a test keeps the two
//! in step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// One setting: its name (the TOML key and, upper-cased after `KURA_`, the environment
/// variable), how to read a value into a [`Config`] and how to show the value a config holds.
pub struct Setting {
    pub name: &'static str,
    /// What it does, for `docs/configuration.md`.
    pub about: &'static str,
    /// The value `Config::embedded` gives, in words.
    pub default: &'static str,
    /// Whether its value is a secret (never shown; the environment or the file only).
    pub secret: bool,
    apply: fn(&mut Config, &str) -> Result<(), String>,
    show: fn(&Config) -> String,
}

impl Setting {
    /// `KURA_` and the name upper-cased.
    pub fn env_var(&self) -> String {
        format!("KURA_{}", self.name.to_ascii_uppercase())
    }

    /// Reads `value` into `config`.
    pub fn apply(&self, config: &mut Config, value: &str) -> Result<(), String> {
        (self.apply)(config, value.trim())
    }

    /// The value `config` holds, as the file or the environment would write it.
    pub fn show(&self, config: &Config) -> String {
        (self.show)(config)
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Environment(String),
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "in {}", path.display()),
            Source::Environment(var) => write!(f, "in the environment ({var})"),
            Source::Flag(flag) => write!(f, "on the command line (--{flag})"),
        }
    }
}

/// A configuration that cannot be used; the message names the setting and the source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("setting `{setting}` {origin}: {message}")]
    Invalid { setting: String, origin: Source, message: String },
    #[error("cannot read the configuration file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{} has no setting `{key}` (docs/configuration.md lists them)", path.display())]
    UnknownKey { path: PathBuf, key: String },
}

/// The layers a configuration is built from, lowest precedence first after the defaults.
#[derive(Default)]
pub struct Layers {
    /// `--config FILE`.
    pub file: Option<PathBuf>,
    /// The process environment (only `KURA_*` variables that name a setting are read).
    pub environment: BTreeMap<String, String>,
    /// Settings given as flags, by setting name.
    pub flags: Vec<(&'static str, String)>,
}

impl Layers {
    /// The file, the process environment, and `flags`.
    pub fn from_process(file: Option<PathBuf>, flags: Vec<(&'static str, String)>) -> Self {
        let environment = std::env::vars().filter(|(k, _)| k.starts_with("KURA_")).collect();
        Self { file, environment, flags }
    }
}

/// Builds the configuration: `data_dir` first (it places the database and the key), then the
/// embedded defaults under it, then every other setting from the file, the environment and the
/// flags in that order. The public URL follows the listen address unless it is set itself.
pub fn load(default_data_dir: &Path, layers: &Layers) -> Result<Config, ConfigError> {
    let mut values: Vec<(&'static Setting, String, Source)> = Vec::new();
    if let Some(path) = &layers.file {
        for (key, value) in read_file(path)? {
            let setting = SETTINGS
                .iter()
                .find(|s| s.name == key)
                .ok_or_else(|| ConfigError::UnknownKey { path: path.clone(), key: key.clone() })?;
            values.push((setting, value, Source::File(path.clone())));
        }
    }
    for setting in SETTINGS {
        let var = setting.env_var();
        if let Some(value) = layers.environment.get(&var).filter(|v| !v.trim().is_empty()) {
            values.push((setting, value.clone(), Source::Environment(var)));
        }
    }
    for (name, value) in &layers.flags {
        let setting = SETTINGS.iter().find(|s| s.name == *name).expect("a flag names a setting of the table");
        values.push((setting, value.clone(), Source::Flag(name.replace('_', "-"))));
    }

    let data_dir = values
        .iter()
        .rev()
        .find(|(s, ..)| s.name == "data_dir")
        .map_or_else(|| default_data_dir.to_path_buf(), |(_, v, _)| PathBuf::from(v.trim()));
    let mut config = Config::embedded(data_dir);
    let mut public_url_set = false;
    for (setting, value, source) in &values {
        setting.apply(&mut config, value).map_err(|message| ConfigError::Invalid {
            setting: setting.name.to_owned(),
            origin: source.clone(),
            message,
        })?;
        public_url_set |= setting.name == "public_url";
    }
    if !public_url_set {
        config.public_url = format!("http://{}", config.listen);
    }
    Ok(config)
}

/// The file's settings as text, each value as the environment would give it (arrays joined
/// by commas).
fn read_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File { path: path.to_path_buf(), message: e.to_string() })?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| ConfigError::File { path: path.to_path_buf(), message: e.message().to_owned() })?;
    let mut out = Vec::new();
    for (key, value) in table {
        let text = match &value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => {
                let mut parts = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) => parts.push(s.clone()),
                        _ => {
                            return Err(ConfigError::Invalid {
                                setting: key,
                                origin: Source::File(path.to_path_buf()),
                                message: "a list holds strings only".into(),
                            });
                        }
                    }
                }
                parts.join(",")
            }
            _ => {
                return Err(ConfigError::Invalid {
                    setting: key,
                    origin: Source::File(path.to_path_buf()),
                    message: "expected a string, a number or a list of strings".into(),
                });
            }
        };
        out.push((key, text));
    }
    Ok(out)
}

fn whole<T: std::str::FromStr + PartialOrd + std::fmt::Display>(value: &str, least: T) -> Result<T, String> {
    match value.replace('_', "").parse::<T>() {
        Ok(n) if n >= least => Ok(n),
        _ => Err(format!("expected a whole number of at least {least}, got {value:?}")),
    }
}

fn positive_real(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("expected a number greater than 0, got {value:?}")),
    }
}

fn text(value: &str) -> Result<String, String> {
    if value.is_empty() { Err("expected a value, got an empty one".into()) } else { Ok(value.to_owned()) }
}

fn url(value: &str) -> Result<String, String> {
    match reqwest::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(value.trim_end_matches('/').to_owned()),
        _ => Err(format!("expected an http:// or https:// URL, got {value:?}")),
    }
}

/// Every setting, in the order `docs/configuration.md` lists them.
pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "data_dir",
        about: "The data directory: the SQLite database, the encrypted content, the master key file.",
        default: "`./kura-data` (`kura demo`, `kura serve --data-dir`)",
        secret: false,
        apply: |c, v| {
            c.data_dir = PathBuf::from(text(v)?);
            Ok(())
        },
        show: |c| c.data_dir.display().to_string(),
    },
    Setting {
        name: "database_url",
        about: "`sqlite:PATH` or `postgres://user@host/db`; credentials in it are never logged.",
        default: "`sqlite:<data_dir>/kura.db`",
        secret: false,
        apply: |c, v| {
            let v = text(v)?;
            if !(v.starts_with("sqlite:") || v.starts_with("postgres://") || v.starts_with("postgresql://")) {
                return Err("expected sqlite:PATH or postgres://…".into());
            }
            c.database_url = v;
            Ok(())
        },
        show: |c| c.database_url.clone(),
    },
    Setting {
        name: "listen",
        about: "The address and port to serve on.",
        default: "`127.0.0.1:8080`",
        secret: false,
        apply: |c, v| {
            c.listen =
                v.parse::<SocketAddr>().map_err(|_| format!("expected HOST:PORT such as 127.0.0.1:8080, got {v:?}"))?;
            Ok(())
        },
        show: |c| c.listen.to_string(),
    },
    Setting {
        name: "public_url",
        about: "The URL clients reach this server at (behind a proxy, its https address); machine clients put `<public_url>/api/v1/auth/token` in their assertions.",
        default: "`http://<listen>`",
        secret: false,
        apply: |c, v| {
            c.public_url = url(v)?;
            Ok(())
        },
        show: |c| c.public_url.clone(),
    },
    Setting {
        name: "server_name",
        about: "This server's name as peers and exported archives show it.",
        default: "`kura`",
        secret: false,
        apply: |c, v| {
            c.server_name = text(v)?;
            Ok(())
        },
        show: |c| c.server_name.clone(),
    },
    Setting {
        name: "master_key",
        about: "The master key that wraps every record's data key, 64 hex digits. Without it the key is read from (or created in) `<data_dir>/master.key`. Give it through the environment or a file only readable by the server.",
        default: "from `<data_dir>/master.key`",
        secret: true,
        apply: |c, v| {
            if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("expected 64 hex digits".into());
            }
            c.master_key_hex = Some(v.to_owned());
            Ok(())
        },
        show: |c| c.master_key_hex.clone().unwrap_or_default(),
    },
    Setting {
        name: "max_upload_bytes",
        about: "The largest upload or archive import accepted, in bytes.",
        default: "268435456 (256 MiB)",
        secret: false,
        apply: |c, v| {
            c.max_upload_bytes = whole(v, 1024usize)?;
            Ok(())
        },
        show: |c| c.max_upload_bytes.to_string(),
    },
    Setting {
        name: "session_minutes",
        about: "How long a person's bearer token (and portal session) lasts.",
        default: "30",
        secret: false,
        apply: |c, v| {
            c.session_minutes = whole(v, 1i64)?;
            Ok(())
        },
        show: |c| c.session_minutes.to_string(),
    },
    Setting {
        name: "sweep_interval_secs",
        about: "How often the sweeper looks for expired grants and copies to destroy.",
        default: "60",
        secret: false,
        apply: |c, v| {
            c.sweep_interval_secs = whole(v, 1u64)?;
            Ok(())
        },
        show: |c| c.sweep_interval_secs.to_string(),
    },
    Setting {
        name: "disclosure_k",
        about: "Research counts below this many people are not disclosed (DESIGN.md I5). Lower it only on a test server.",
        default: "10",
        secret: false,
        apply: |c, v| {
            c.disclosure_k = whole(v, 1u64)?;
            Ok(())
        },
        show: |c| c.disclosure_k.to_string(),
    },
    Setting {
        name: "search_repeat_limit",
        about: "How often one study may run the same research query in thirty days.",
        default: "7",
        secret: false,
        apply: |c, v| {
            c.search_repeat_limit = whole(v, 1i64)?;
            Ok(())
        },
        show: |c| c.search_repeat_limit.to_string(),
    },
    Setting {
        name: "study_epsilon_budget",
        about: "The most ε one study may spend on differentially private analyses.",
        default: "10",
        secret: false,
        apply: |c, v| {
            c.study_epsilon_budget = positive_real(v)?;
            Ok(())
        },
        show: |c| c.study_epsilon_budget.to_string(),
    },
    Setting {
        name: "org_epsilon_budget",
        about: "The most ε one research organisation may spend over all its studies.",
        default: "20",
        secret: false,
        apply: |c, v| {
            c.org_epsilon_budget = positive_real(v)?;
            Ok(())
        },
        show: |c| c.org_epsilon_budget.to_string(),
    },
    Setting {
        name: "max_open_studies_per_org",
        about: "How many studies one research organisation may have pending review or approved at once.",
        default: "20",
        secret: false,
        apply: |c, v| {
            c.max_open_studies_per_org = whole(v, 1i64)?;
            Ok(())
        },
        show: |c| c.max_open_studies_per_org.to_string(),
    },
    Setting {
        name: "max_differencing_refusals",
        about: "After this many searches and analyses refused for differencing, an organisation's research is suspended until an operator resumes it.",
        default: "3",
        secret: false,
        apply: |c, v| {
            c.max_differencing_refusals = whole(v, 1i64)?;
            Ok(())
        },
        show: |c| c.max_differencing_refusals.to_string(),
    },
    Setting {
        name: "provider_sync_interval_secs",
        about: "How old a linked external provider's last sync may get before the background task pulls it again.",
        default: "21600 (6 hours)",
        secret: false,
        apply: |c, v| {
            c.provider_sync_interval_secs = whole(v, 1u64)?;
            Ok(())
        },
        show: |c| c.provider_sync_interval_secs.to_string(),
    },
    Setting {
        name: "provider_request_timeout_secs",
        about: "The longest one request to an external provider may take.",
        default: "30",
        secret: false,
        apply: |c, v| {
            c.provider_request_timeout_secs = whole(v, 1u64)?;
            Ok(())
        },
        show: |c| c.provider_request_timeout_secs.to_string(),
    },
    Setting {
        name: "outbound_allowed_networks",
        about: "Networks that webhooks, providers and peers may be reached on although not public (comma-separated CIDRs, or a list in the file), e.g. `10.0.0.0/8`. Empty: public addresses only.",
        default: "(none)",
        secret: false,
        apply: |c, v| {
            c.outbound_allowed_networks = crate::outbound::parse_networks(v)?;
            Ok(())
        },
        show: |c| c.outbound_allowed_networks.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
    },
    Setting {
        name: "max_concurrent_imports",
        about: "Archive imports run at once; one more is answered 503 with Retry-After. Each holds its archive and a 19 MiB key derivation in memory.",
        default: "2",
        secret: false,
        apply: |c, v| {
            c.max_concurrent_imports = whole(v, 1usize)?;
            Ok(())
        },
        show: |c| c.max_concurrent_imports.to_string(),
    },
    Setting {
        name: "max_upload_bytes_in_flight",
        about: "Upload bytes all uploads together may hold in memory at once (raised to max_upload_bytes if lower); one more is answered 503 with Retry-After.",
        default: "536870912 (512 MiB)",
        secret: false,
        apply: |c, v| {
            c.max_upload_bytes_in_flight = whole(v, 1024usize)?;
            Ok(())
        },
        show: |c| c.max_upload_bytes_in_flight.to_string(),
    },
    Setting {
        name: "upload_spool_threshold_bytes",
        about: "Upload bodies larger than this are spooled to an encrypted file while they arrive.",
        default: "8388608 (8 MiB)",
        secret: false,
        apply: |c, v| {
            c.upload_spool_threshold_bytes = whole(v, 1usize)?;
            Ok(())
        },
        show: |c| c.upload_spool_threshold_bytes.to_string(),
    },
    Setting {
        name: "max_parts_per_record",
        about: "The most parts (FHIR resources, DICOM instances) one uploaded record may have.",
        default: "100000",
        secret: false,
        apply: |c, v| {
            c.max_parts_per_record = whole(v, 1usize)?;
            Ok(())
        },
        show: |c| c.max_parts_per_record.to_string(),
    },
];

/// The table of settings as `docs/configuration.md` shows it (a test keeps the file equal).
pub fn markdown_table() -> String {
    let mut out =
        String::from("| setting (file) | environment | default | what it does |\n| --- | --- | --- | --- |\n");
    for s in SETTINGS {
        let about = if s.secret { format!("{} (secret: never logged)", s.about) } else { s.about.to_owned() };
        out.push_str(&format!("| `{}` | `{}` | {} | {} |\n", s.name, s.env_var(), s.default, about));
    }
    out
}
