//! Configuration: one TOML file (every section optional, every field defaulted), with the
//! database and broker URLs overridable from the command line or environment.

pub mod consumer;
mod outbox;
pub mod redact;
mod runtime;

pub use consumer::{ConsumerConfig, DeadLetterMode, HttpConfig, RetryMode, Secret, UiAccess};
pub use outbox::{AuthServiceConfig, BrokerConfig, RelayConfig};
pub use runtime::{AuthBackend, Limits};

use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL URL of the host's database.
    pub database_url: String,
    pub broker: BrokerConfig,
    pub relay: RelayConfig,
    pub auth_service: AuthServiceConfig,
    pub consumer: ConsumerConfig,
    pub http: HttpConfig,
    pub limits: Limits,
    /// Where the plugins' `auth` import looks users up.
    pub auth: AuthBackend,
    /// Directory of compiled components (see `runtime::compiled`); `""` compiles at every
    /// load. Default: `$EVENTHOST_COMPILE_CACHE`, else `$XDG_CACHE_HOME/eventhost/compiled`,
    /// else `~/.cache/eventhost/compiled`.
    pub compile_cache: Option<std::path::PathBuf>,
}

/// Passwords in the URLs (and the admin token) stay out of `Debug` output.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field(
                "database_url",
                &crate::config::redact::url(&self.database_url),
            )
            .field("broker", &self.broker)
            .field("relay", &self.relay)
            .field("auth_service", &self.auth_service)
            .field("consumer", &self.consumer)
            .field("http", &self.http)
            .field("limits", &self.limits)
            .field("auth", &self.auth)
            .field("compile_cache", &self.compile_cache)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/eventhost".into(),
            broker: BrokerConfig::default(),
            relay: RelayConfig::default(),
            auth_service: AuthServiceConfig::default(),
            consumer: ConsumerConfig::default(),
            http: HttpConfig::default(),
            limits: Limits::default(),
            auth: AuthBackend::default(),
            compile_cache: None,
        }
    }
}

/// The compile cache when the config does not name one (see `Config::compile_cache`).
pub fn default_compile_cache() -> Option<std::path::PathBuf> {
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = std::env::var_os("EVENTHOST_COMPILE_CACHE") {
        return (!dir.is_empty()).then(|| dir.into());
    }
    let base = env("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| env("HOME").map(|home| std::path::PathBuf::from(home).join(".cache")))?;
    Some(base.join("eventhost/compiled"))
}

impl Config {
    /// `compile_cache` as the runtime takes it: `None` when caching is off.
    pub fn compile_cache(&self) -> Option<std::path::PathBuf> {
        match &self.compile_cache {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir.clone()),
            None => default_compile_cache(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// TOML's message names the key and the line.
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file; unknown keys are refused so a typo is never silently ignored.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        // TOML's message quotes the offending line, which may hold a URL's password.
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "(text)".into(),
            message: redact::text(&e.to_string()),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_ranges().map_err(ConfigError::Invalid)?;
        self.limits.validate().map_err(ConfigError::Invalid)?;
        self.relay.validate().map_err(ConfigError::Invalid)?;
        self.consumer.validate().map_err(ConfigError::Invalid)?;
        self.http.validate().map_err(ConfigError::Invalid)?;
        if self.consumer.inbox_retention <= self.relay.retention {
            // A backfill replays the outbox's kept rows: the inboxes must still know them.
            return Err(ConfigError::Invalid(format!(
                "consumer.inbox_retention ({}) must be longer than relay.retention ({}), \
                 or a backfill would handle events again",
                humantime::format_duration(self.consumer.inbox_retention),
                humantime::format_duration(self.relay.retention)
            )));
        }
        if let Some(path) = &self.broker.ca_file {
            if !self.broker.url.starts_with("amqps://") {
                return Err(ConfigError::Invalid(
                    "broker.ca_file is set but broker.url is not an amqps:// URL".into(),
                ));
            }
            check_pem("broker.ca_file", path).map_err(ConfigError::Invalid)?;
        }
        if let AuthBackend::Http {
            url,
            ca_file: Some(path),
            ..
        } = &self.auth
        {
            if !url.starts_with("https://") {
                return Err(ConfigError::Invalid(
                    "auth.ca_file is set but auth.url is not an https:// URL".into(),
                ));
            }
            check_pem("auth.ca_file", path).map_err(ConfigError::Invalid)?;
        }
        if self.broker.exchange.is_empty() || self.broker.exchange.len() > 255 {
            return Err(ConfigError::Invalid(
                "broker.exchange must be 1 to 255 characters".into(),
            ));
        }
        Ok(())
    }
}

/// A CA file must be readable and hold at least one PEM certificate (a DER file or
/// anything else would silently add no trust at all).
fn check_pem(field: &str, path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read {field} = {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "{field} = {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(())
}

/// No duration in the config may be longer than this: the host adds them to clocks and
/// multiplies them, and a value near `Duration::MAX` would overflow there.
const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl Config {
    /// Every duration within [`LONGEST`], and retry delays within RabbitMQ's message TTL
    /// (a 32-bit count of milliseconds); each error names its field.
    fn check_ranges(&self) -> Result<(), String> {
        let (c, r) = (&self.consumer, &self.relay);
        let mut all = vec![
            ("consumer.reload_interval", c.reload_interval),
            ("consumer.shutdown_timeout", c.shutdown_timeout),
            ("consumer.load_timeout", c.load_timeout),
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.request_timeout", self.http.request_timeout),
            ("http.drain_timeout", self.http.drain_timeout),
            ("broker.connect_timeout", self.broker.connect_timeout),
            ("relay.poll_interval", r.poll_interval),
            ("relay.backoff_base", r.backoff_base),
            ("relay.backoff_max", r.backoff_max),
            ("relay.confirm_timeout", r.confirm_timeout),
            ("relay.retention", r.retention),
            ("relay.purge_interval", r.purge_interval),
        ];
        if let AuthBackend::Http { timeout, .. } = &self.auth {
            all.push(("auth.timeout", *timeout));
        }
        for (field, value) in all {
            if value > LONGEST {
                return Err(format!("{field} must be at most 10 years"));
            }
        }
        for (i, delay) in c.retry_delays.iter().enumerate() {
            if delay.as_millis() > u32::MAX as u128 {
                return Err(format!(
                    "consumer.retry_delays[{i}] must be at most {} ms (RabbitMQ's message TTL)",
                    u32::MAX
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_sections_are_optional() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.relay.batch_size, RelayConfig::default().batch_size);
        let config =
            Config::parse("[relay]\nbatch_size = 50\npoll_interval = \"250ms\"\n").unwrap();
        assert_eq!(config.relay.batch_size, 50);
        assert_eq!(config.relay.poll_interval.as_millis(), 250);
    }

    #[test]
    fn durations_too_long_to_compute_with_name_their_field() {
        for (text, field) in [
            (
                "[relay]\nretention = \"1000000000years\"\n",
                "relay.retention",
            ),
            (
                "[consumer]\nreload_interval = \"100000years\"\n",
                "consumer.reload_interval",
            ),
            (
                "[consumer]\nretry_delays = [\"1s\", \"60days\"]\n",
                "consumer.retry_delays[1]",
            ),
            ("[limits]\nwall_time = \"100years\"\n", "limits.wall_time"),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
    }

    #[test]
    fn dead_letter_mode_parses_and_a_wrong_one_names_its_field() {
        let config = Config::parse("[consumer]\non_dead_letter = \"hold\"\n").unwrap();
        assert_eq!(config.consumer.on_dead_letter, super::DeadLetterMode::Hold);
        let default = Config::parse("").unwrap();
        assert_eq!(default.consumer.on_dead_letter, super::DeadLetterMode::GoOn);
        let err = Config::parse("[consumer]\non_dead_letter = \"wait\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("on_dead_letter"), "{err}");
    }

    #[test]
    fn passwords_in_urls_are_never_printed() {
        let config = Config::parse(
            "database_url = \"postgres://app:db-pass-123@db/x\"\n[broker]\nurl = \"amqps://bus:amqp-pass-456@mq/%2f\"\n",
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("db-pass-123") && !shown.contains("amqp-pass-456"),
            "{shown}"
        );
        assert!(shown.contains("postgres://app:***@db/x"), "{shown}");
    }

    #[test]
    fn ca_files_need_tls_urls_and_auth_credentials_are_never_printed() {
        let err = Config::parse("[broker]\nca_file = \"/ca.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker.ca_file"), "{err}");
        let err = Config::parse(
            "[auth]\nbackend = \"http\"\nurl = \"http://auth\"\nca_file = \"/ca.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.ca_file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let (pem, der) = (dir.path().join("ca.pem"), dir.path().join("ca.der"));
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(&der, [0x30u8, 0x82, 0x01]).unwrap();
        let auth = |path: &std::path::Path| {
            Config::parse(&format!(
                "[auth]\nbackend = \"http\"\nurl = \"https://svc:auth-pass-789@auth\"\nca_file = \"{}\"\n",
                path.display()
            ))
        };
        let config = auth(&pem).unwrap();
        assert!(!format!("{config:?}").contains("auth-pass-789"));
        let err = auth(&der).unwrap_err().to_string();
        assert!(
            err.contains("auth.ca_file") && err.contains("no PEM certificate"),
            "{err}"
        );
        // A syntax error quotes its line; the password in it is masked.
        let err = Config::parse("database_url = \"postgres://u:db-pass-1@h/d\" x\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("db-pass-1"), "{err}");
    }

    #[test]
    fn http_and_load_limits_name_their_field() {
        for (text, field) in [
            ("[http]\nmax_connections = 0\n", "http.max_connections"),
            (
                "[http]\nrequest_timeout = \"1ms\"\n",
                "http.request_timeout",
            ),
            (
                "[http]\ndrain_timeout = \"100000years\"\n",
                "http.drain_timeout",
            ),
            ("[consumer]\nmax_crashes = 1\n", "consumer.max_crashes"),
            ("[consumer]\npartitions = 0\n", "consumer.partitions"),
            ("[consumer]\npartitions = 65\n", "consumer.partitions"),
            (
                "[consumer]\nload_timeout = \"10ms\"\n",
                "consumer.load_timeout",
            ),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
    }

    #[test]
    fn the_admin_token_is_never_printed() {
        let config = Config::parse("[http]\nadmin_token = \"a-very-secret-token-1\"\n").unwrap();
        assert!(!format!("{config:?}").contains("a-very-secret-token-1"));
        let err = Config::parse("[http]\nadmin_token = \"short\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.admin_token"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let err = Config::parse("[relay]\nbatch_sise = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_sise"), "{err}");
        let err = Config::parse("[relay]\nworkers = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("relay.workers"), "{err}");
        let err = Config::parse("[broker]\nconnect_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("connect_timeout"), "{err}");
        let err = Config::parse("[consumer]\nretry_delays = [\"1s\", \"later\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("retry_delays") && err.contains("later"),
            "{err}"
        );
        let err = Config::parse("[consumer]\nconcurrency = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("consumer.concurrency"), "{err}");
        let err = Config::parse("[relay]\nretention = \"40days\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("consumer.inbox_retention") && err.contains("relay.retention"),
            "{err}"
        );
        let err = Config::parse("[consumer]\ninbox_retention = \"2h\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("consumer.inbox_retention"), "{err}");
    }
}
