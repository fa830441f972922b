//! Where Redis is: `--redis-url`/`REDIS_URL`, or the original's `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD`.

use std::fmt;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

/// Unusable Redis settings (the message never contains the password).
#[derive(Debug, thiserror::Error)]
#[error("redis configuration: {reason}")]
pub struct ConfigError {
    /// What is wrong.
    pub reason: String,
}

/// The result type of this module.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The original's default port.
pub const DEFAULT_PORT: u16 = 6379;
/// How many envelopes may wait for Redis before the oldest is dropped.
pub const DEFAULT_OUTBOX_CAPACITY: usize = 10_000;

/// How to reach Redis. Its `Debug` and `Display` never show the password.
#[derive(Clone)]
pub struct RedisConfig {
    info: ConnectionInfo,
    outbox_capacity: usize,
    external_alert_agent: bool,
}

impl RedisConfig {
    /// Builds the configuration from the command line / environment.
    ///
    /// - `url` (`redis://`, `rediss://` for TLS, `redis://user:pass@host:port/db`) wins; if it
    ///   carries no password and `password` is given, that password is used.
    /// - otherwise `host` (with `port`, default 6379, and `password`), as in the original;
    /// - nothing at all: `Ok(None)`, the caller uses the in-memory store;
    /// - a port or password without a host or URL is an error rather than silently ignored.
    pub fn from_parts(
        url: Option<String>,
        host: Option<String>,
        port: Option<u16>,
        password: Option<String>,
    ) -> Result<Option<Self>> {
        let url = url.filter(|u| !u.trim().is_empty());
        let host = host.filter(|h| !h.trim().is_empty());
        let password = password.filter(|p| !p.is_empty());
        let info = if let Some(url) = url {
            // The parser's errors never echo the URL, so the password cannot leak through them.
            let info = url.trim().into_connection_info().map_err(|e| ConfigError {
                reason: format!("REDIS_URL is not a valid redis:// or rediss:// URL: {e}"),
            })?;
            match password {
                Some(p) if info.redis_settings().password().is_none() => {
                    let settings = info.redis_settings().clone().set_password(p);
                    info.set_redis_settings(settings)
                }
                _ => info,
            }
        } else if let Some(host) = host {
            let port = port.unwrap_or(DEFAULT_PORT);
            let info = ConnectionAddr::Tcp(host.trim().to_owned(), port)
                .into_connection_info()
                .map_err(|e| ConfigError {
                    reason: format!("REDIS_HOST/REDIS_PORT: {e}"),
                })?;
            match password {
                Some(p) => {
                    let settings = info.redis_settings().clone().set_password(p);
                    info.set_redis_settings(settings)
                }
                None => info,
            }
        } else if port.is_some() || password.is_some() {
            return Err(ConfigError {
                reason: "REDIS_PORT or REDIS_PASSWORD is set but neither REDIS_HOST nor REDIS_URL"
                    .to_owned(),
            });
        } else {
            return Ok(None);
        };
        Ok(Some(Self {
            info,
            outbox_capacity: DEFAULT_OUTBOX_CAPACITY,
            external_alert_agent: false,
        }))
    }

    /// A configuration from a URL alone (tests, tools).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_parts(Some(url.to_owned()), None, None, None)?.ok_or_else(|| ConfigError {
            reason: "empty Redis URL".to_owned(),
        })
    }

    /// Sets how many envelopes may wait for Redis (at least 1).
    pub fn with_outbox_capacity(mut self, capacity: usize) -> Self {
        self.outbox_capacity = capacity.max(1);
        self
    }

    /// How many envelopes may wait for Redis.
    pub fn outbox_capacity(&self) -> usize {
        self.outbox_capacity
    }

    /// Leaves the `hemostat:events:*` lists to an external alert agent (the original's Alert
    /// agent writes them): HemoStat then never writes them and serves its recent envelopes
    /// from the stream `hemostat:stream:events` instead. Off by default.
    pub fn with_external_alert_agent(mut self, external: bool) -> Self {
        self.external_alert_agent = external;
        self
    }

    /// Whether an external alert agent owns the `hemostat:events:*` lists.
    pub fn external_alert_agent(&self) -> bool {
        self.external_alert_agent
    }

    /// Whether the connection uses TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        matches!(self.info.addr(), ConnectionAddr::TcpTls { .. })
    }

    /// The connection parameters, password included: for the client only, never for logs.
    pub(crate) fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let settings = self.info.redis_settings();
        let mut auth = String::new();
        if let Some(user) = settings.username() {
            auth.push_str(user);
        }
        if settings.password().is_some() {
            auth.push_str(":***");
        }
        if !auth.is_empty() {
            auth.push('@');
        }
        let db = settings.db();
        match self.info.addr() {
            ConnectionAddr::Tcp(host, port) => format!("redis://{auth}{host}:{port}/{db}"),
            ConnectionAddr::TcpTls { host, port, .. } => {
                format!("rediss://{auth}{host}:{port}/{db}")
            }
            ConnectionAddr::Unix(path) => format!("unix://{auth}{}?db={db}", path.display()),
            _ => format!("redis://{auth}?/{db}"),
        }
    }
}

impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted())
            .field("outbox_capacity", &self.outbox_capacity)
            .field("external_alert_agent", &self.external_alert_agent)
            .finish()
    }
}

/// Where Redis is, for `run` and the policy commands alike. `--redis-url`/`REDIS_URL` wins;
/// otherwise `REDIS_HOST`/`REDIS_PORT`; `REDIS_PASSWORD` is used when the URL carries none.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RedisArgs {
    /// Redis URL (redis://[user:password@]host:port[/db], rediss:// for TLS). Without any Redis
    /// setting, `run` uses the embedded in-memory store and the policy commands 127.0.0.1:6379.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis host, when no URL is given (the original's REDIS_HOST).
    #[arg(long, env = "REDIS_HOST")]
    pub redis_host: Option<String>,
    /// Redis port (default 6379).
    #[arg(long, env = "REDIS_PORT")]
    pub redis_port: Option<u16>,
    /// Redis password (never logged). On the command line it is readable by every user in
    /// `ps`: prefer REDIS_PASSWORD_FILE or --redis-url-file.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// A file holding the Redis URL (with its password), instead of --redis-url.
    #[arg(long, env = "REDIS_URL_FILE", conflicts_with = "redis_url")]
    pub redis_url_file: Option<std::path::PathBuf>,
    /// A file holding the Redis password, instead of --redis-password.
    #[arg(long, env = "REDIS_PASSWORD_FILE", conflicts_with = "redis_password")]
    pub redis_password_file: Option<std::path::PathBuf>,
}

/// The host the policy commands use when none is given.
const CLI_DEFAULT_HOST: &str = "127.0.0.1";

/// `url` with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let redacted = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        // `redis://secret@host`: the single part is the password for Redis.
        "***".to_owned()
    };
    format!(
        "{}://{redacted}@{}{}",
        &url[..scheme_end],
        &authority[at + 1..],
        &rest[authority_end..]
    )
}

/// A Redis client from the arguments (or environment), and the URL to name in messages
/// (never with the password).
impl RedisArgs {
    /// The settings for `run`: `None` without any Redis setting (the embedded store is used).
    pub fn config(&self) -> Result<Option<RedisConfig>> {
        RedisConfig::from_parts(
            self.redis_url.clone(),
            self.redis_host.clone(),
            self.redis_port,
            self.redis_password.clone(),
        )
    }

    /// A client for the policy commands (host 127.0.0.1 and port 6379 by default), and the
    /// URL to name in messages (never with the password).
    pub fn cli_client(&self) -> Result<(redis::Client, String)> {
        cli_client(self)
    }
}

fn cli_client(args: &RedisArgs) -> Result<(redis::Client, String)> {
    let host = args.redis_host.as_deref().unwrap_or(CLI_DEFAULT_HOST);
    let port = args.redis_port.unwrap_or(DEFAULT_PORT);
    let (info, shown) = match args.redis_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => {
            let shown = redact_url(url);
            let info = url
                .into_connection_info()
                .map_err(|e| config_error(format!("invalid Redis URL {shown}: {e}")))?;
            (info, shown)
        }
        None => {
            let info = (host, port)
                .into_connection_info()
                .map_err(|e| config_error(format!("invalid Redis address: {e}")))?;
            (info, format!("redis://{host}:{port}"))
        }
    };
    let info = match args.redis_password.as_deref().filter(|p| !p.is_empty()) {
        Some(password) if info.redis_settings().password().is_none() => {
            let settings = info.redis_settings().clone().set_password(password);
            info.set_redis_settings(settings)
        }
        _ => info,
    };
    let client =
        redis::Client::open(info).map_err(|e| config_error(format!("Redis at {shown}: {e}")))?;
    Ok((client, shown))
}

fn config_error(reason: String) -> ConfigError {
    ConfigError { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_given_means_no_redis() {
        assert!(
            RedisConfig::from_parts(None, None, None, None)
                .unwrap()
                .is_none()
        );
        assert!(
            RedisConfig::from_parts(Some(" ".into()), Some(String::new()), None, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_password_never_shows() {
        let c = RedisConfig::from_url("redis://alice:s3cr3t-pw@cache.example:6380/2").unwrap();
        for shown in [format!("{c}"), format!("{c:?}"), format!("{c:#?}")] {
            assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        }
        assert_eq!(c.to_string(), "redis://alice:***@cache.example:6380/2");
        assert_eq!(
            c.connection_info().redis_settings().password(),
            Some("s3cr3t-pw")
        );

        let c = RedisConfig::from_parts(
            None,
            Some("redis.internal".into()),
            None,
            Some("hunter2-pw".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.to_string(), "redis://:***@redis.internal:6379/0");
        assert!(!format!("{c:?}").contains("hunter2-pw"));
        assert_eq!(
            c.connection_info().redis_settings().password(),
            Some("hunter2-pw")
        );
    }

    #[test]
    fn urls_and_parts_are_understood() {
        let tls = RedisConfig::from_url("rediss://cache.example:6390").unwrap();
        assert!(tls.tls());
        assert_eq!(tls.to_string(), "rediss://cache.example:6390/0");

        let c = RedisConfig::from_parts(
            Some("redis://127.0.0.1:7000/1".into()),
            Some("ignored".into()),
            Some(1),
            Some("pw-from-env".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.to_string(), "redis://:***@127.0.0.1:7000/1");

        let c = RedisConfig::from_parts(None, Some("h".into()), Some(7001), None)
            .unwrap()
            .unwrap();
        assert_eq!(c.to_string(), "redis://h:7001/0");
    }

    #[test]
    fn bad_settings_are_errors_without_the_password() {
        let err = RedisConfig::from_url("http://bob:pa55word-x@h/").unwrap_err();
        assert!(!err.to_string().contains("pa55word-x"), "{err}");
        assert!(
            err.to_string().starts_with("redis configuration: "),
            "{err}"
        );
        let err = RedisConfig::from_parts(None, None, None, Some("pw".into())).unwrap_err();
        assert!(err.to_string().contains("REDIS_HOST"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379"),
            "redis://user:***@host:6379"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
    }
}
