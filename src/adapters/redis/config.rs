//! Where Redis is: `--redis-url`/`REDIS_URL`, or the original's `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD`.

use std::fmt;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::topology;
pub(crate) use super::topology::Topology;

/// Unusable Redis settings (the message never contains the password).
#[derive(Debug, thiserror::Error)]
#[error("redis configuration: {reason}")]
pub struct ConfigError {
    /// What is wrong.
    pub reason: String,
}

/// The result type of this module.
pub(crate) type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The original's default port.
pub const DEFAULT_PORT: u16 = 6379;
/// How many envelopes may wait for Redis before the oldest is dropped.
pub const DEFAULT_OUTBOX_CAPACITY: usize = 10_000;

/// How to reach Redis. Its `Debug` and `Display` never show the password.
#[derive(Clone)]
pub struct RedisConfig {
    topology: Topology,
    /// PEM of the CA(s) trusted for `rediss://` instead of the built-in web roots.
    ca: Option<std::sync::Arc<Vec<u8>>>,
    outbox_capacity: usize,
    external_alert_agent: bool,
}

impl RedisConfig {
    /// Builds the configuration from the command line / environment.
    ///
    /// - `url` wins: `redis://`, `rediss://` for TLS, `redis://user:pass@host:port/db`,
    ///   `redis+cluster://h1:p1,h2:p2` (Redis Cluster, from seed nodes) or
    ///   `redis+sentinel://s1:p1,s2:p2/<master>[/<db>]` (the master the Sentinels name,
    ///   followed through failovers), each also with `rediss+`; if it carries no password and
    ///   `password` is given, that password is used (for the data nodes, never the Sentinels).
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
        let with_password = |info: ConnectionInfo| match &password {
            Some(p) if info.redis_settings().password().is_none() => {
                let settings = info.redis_settings().clone().set_password(p);
                info.set_redis_settings(settings)
            }
            _ => info,
        };
        let topology = if let Some(url) = url {
            // The parser's errors never echo the URL, so the password cannot leak through them.
            match topology::parse(&url).map_err(|reason| ConfigError {
                reason: format!("REDIS_URL: {reason}"),
            })? {
                Topology::Single(info) => Topology::Single(with_password(info)),
                Topology::Cluster(seeds) => {
                    Topology::Cluster(seeds.into_iter().map(with_password).collect())
                }
                Topology::Sentinel {
                    sentinels,
                    master,
                    node,
                } => Topology::Sentinel {
                    sentinels,
                    master,
                    node: with_password(node),
                },
            }
        } else if let Some(host) = host {
            let port = port.unwrap_or(DEFAULT_PORT);
            let info = ConnectionAddr::Tcp(host.trim().to_owned(), port)
                .into_connection_info()
                .map_err(|e| ConfigError {
                    reason: format!("REDIS_HOST/REDIS_PORT: {e}"),
                })?;
            Topology::Single(with_password(info))
        } else if port.is_some() || password.is_some() {
            return Err(ConfigError {
                reason: "REDIS_PORT or REDIS_PASSWORD is set but neither REDIS_HOST nor REDIS_URL"
                    .to_owned(),
            });
        } else {
            return Ok(None);
        };
        Ok(Some(Self {
            topology,
            ca: None,
            outbox_capacity: DEFAULT_OUTBOX_CAPACITY,
            external_alert_agent: false,
        }))
    }

    /// A configuration for one server's connection parameters (tests, tools).
    pub(crate) fn from_info(info: ConnectionInfo) -> Self {
        Self {
            topology: Topology::Single(info),
            ca: None,
            outbox_capacity: DEFAULT_OUTBOX_CAPACITY,
            external_alert_agent: false,
        }
    }

    /// A configuration from a URL alone (tests, tools).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_parts(Some(url.to_owned()), None, None, None)?.ok_or_else(|| ConfigError {
            reason: "empty Redis URL".to_owned(),
        })
    }

    /// Trusts the CA certificate(s) of the PEM file at `path` for TLS instead of the
    /// built-in web roots. Refused: an unreadable file, one without a certificate, and a
    /// URL without TLS (a CA means nothing to `redis://`).
    pub fn with_ca_file(mut self, path: &std::path::Path) -> Result<Self> {
        let shown = path.display();
        if !self.tls() {
            return Err(config_error(format!(
                "--redis-ca-file {shown} is set but the Redis URL does not use TLS: use rediss:// (or rediss+cluster://, rediss+sentinel://), or drop the CA file"
            )));
        }
        let pem = std::fs::read(path).map_err(|e| {
            config_error(format!(
                "--redis-ca-file {shown}: cannot read the file ({e})"
            ))
        })?;
        self.ca = Some(std::sync::Arc::new(validated_ca(&pem).map_err(
            |reason| config_error(format!("--redis-ca-file {shown}: {reason}")),
        )?));
        Ok(self)
    }

    /// The CA certificates trusted for TLS, as PEM, when not the built-in roots.
    pub(crate) fn ca_pem(&self) -> Option<&[u8]> {
        self.ca.as_deref().map(Vec::as_slice)
    }

    /// The one server's connection parameters (unit tests).
    #[cfg(test)]
    fn connection_info(&self) -> &ConnectionInfo {
        match &self.topology {
            Topology::Single(info) => info,
            Topology::Cluster(seeds) => &seeds[0],
            Topology::Sentinel { node, .. } => node,
        }
    }

    /// How the data is reached.
    pub(crate) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether this is a Redis Cluster (keys then carry the `{hemostat}` hash tag).
    pub fn cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster(_))
    }

    /// Sets how many envelopes may wait for Redis (at least 1).
    pub fn with_outbox_capacity(mut self, capacity: usize) -> Self {
        self.outbox_capacity = capacity.max(1);
        self
    }

    /// How many envelopes may wait for Redis.
    pub(crate) fn outbox_capacity(&self) -> usize {
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
    pub(crate) fn external_alert_agent(&self) -> bool {
        self.external_alert_agent
    }

    /// Whether the connection uses TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.topology.tls()
    }

    /// The URL with the password replaced by `***`.
    pub(crate) fn redacted(&self) -> String {
        let (info, hosts) = match &self.topology {
            Topology::Single(info) => return redacted_single(info),
            Topology::Cluster(seeds) => (&seeds[0], seeds),
            Topology::Sentinel {
                sentinels, node, ..
            } => (node, sentinels),
        };
        let settings = info.redis_settings();
        let auth = redacted_auth(settings);
        let tls = if self.tls() { "s" } else { "" };
        let hosts: Vec<String> = hosts
            .iter()
            .map(|i| match i.addr() {
                ConnectionAddr::Tcp(h, p)
                | ConnectionAddr::TcpTls {
                    host: h, port: p, ..
                } => {
                    format!("{h}:{p}")
                }
                _ => "?".to_owned(),
            })
            .collect();
        let hosts = hosts.join(",");
        match &self.topology {
            Topology::Sentinel { master, .. } => {
                format!(
                    "redis{tls}+sentinel://{auth}{hosts}/{master}/{}",
                    settings.db()
                )
            }
            _ => format!("redis{tls}+cluster://{auth}{hosts}"),
        }
    }
}

fn redacted_auth(settings: &redis::RedisConnectionInfo) -> String {
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
    auth
}

/// The PEM text if it holds at least one certificate, every one of them parseable.
fn validated_ca(pem: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut count = 0usize;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| format!("not a PEM certificate file ({e})"))?;
        count += 1;
    }
    if count == 0 {
        return Err(
            "no certificate in the file (expected PEM: -----BEGIN CERTIFICATE-----)".to_owned(),
        );
    }
    Ok(pem.to_vec())
}

fn redacted_single(info: &ConnectionInfo) -> String {
    let settings = info.redis_settings();
    let auth = redacted_auth(settings);
    let db = settings.db();
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("redis://{auth}{host}:{port}/{db}"),
        ConnectionAddr::TcpTls { host, port, .. } => {
            format!("rediss://{auth}{host}:{port}/{db}")
        }
        ConnectionAddr::Unix(path) => format!("unix://{auth}{}?db={db}", path.display()),
        _ => format!("redis://{auth}?/{db}"),
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
    /// Redis URL: redis://[user:password@]host:port[/db] (rediss:// for TLS), a Redis Cluster
    /// redis+cluster://[:password@]host:port,host:port (seed nodes), or the master of Sentinels
    /// redis+sentinel://[:password@]sentinel:26379,sentinel2:26379/<master>[/<db>] (both also
    /// rediss+). Without any Redis setting, `run` uses the embedded in-memory store and the
    /// policy commands 127.0.0.1:6379.
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
    /// A PEM file of the CA certificate(s) to trust for rediss:// instead of the built-in web
    /// roots (a private CA). Refused without a TLS URL.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
}

/// The host the policy commands use when none is given.
const CLI_DEFAULT_HOST: &str = "127.0.0.1";

/// `url` with any password replaced by `***`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
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

impl RedisArgs {
    /// The settings for `run`: `None` without any Redis setting (the embedded store is used).
    pub(crate) fn config(&self) -> Result<Option<RedisConfig>> {
        let config = RedisConfig::from_parts(
            self.redis_url.clone(),
            self.redis_host.clone(),
            self.redis_port,
            self.redis_password.clone(),
        )?;
        match (config, &self.redis_ca_file) {
            (Some(c), Some(ca)) => c.with_ca_file(ca).map(Some),
            (None, Some(ca)) => Err(config_error(format!(
                "--redis-ca-file {} is set but no Redis URL or host is",
                ca.display()
            ))),
            (config, None) => Ok(config),
        }
    }

    /// The settings for the policy commands (host 127.0.0.1 and port 6379 by default), and
    /// the URL to name in messages (never with the password).
    pub(crate) fn cli_config(&self) -> Result<(RedisConfig, String)> {
        let mut args = self.clone();
        if args.redis_url.as_deref().is_none_or(str::is_empty) && args.redis_host.is_none() {
            args.redis_host = Some(CLI_DEFAULT_HOST.to_owned());
        }
        let config = args
            .config()?
            .ok_or_else(|| config_error("no Redis".to_owned()))?;
        let shown = match (&args.redis_url, &args.redis_host) {
            (Some(url), _) if !url.is_empty() => redact_url(url.trim()),
            (_, host) => format!(
                "redis://{}:{}",
                host.as_deref().unwrap_or(CLI_DEFAULT_HOST),
                args.redis_port.unwrap_or(DEFAULT_PORT)
            ),
        };
        Ok((config, shown))
    }
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
    fn cluster_and_sentinel_urls_print_without_the_password() {
        let c = RedisConfig::from_url("redis+cluster://:pw-c1@a:1,b:2").unwrap();
        assert!(c.cluster());
        assert_eq!(c.to_string(), "redis+cluster://:***@a:1,b:2");
        let c = RedisConfig::from_parts(
            Some("rediss+sentinel://s1:5,s2:6/mymaster/2".into()),
            None,
            None,
            Some("pw-s1".into()),
        )
        .unwrap()
        .unwrap();
        assert!(!c.cluster() && c.tls());
        assert_eq!(c.to_string(), "rediss+sentinel://:***@s1:5,s2:6/mymaster/2");
        assert_eq!(
            c.connection_info().redis_settings().password(),
            Some("pw-s1")
        );
    }

    #[test]
    fn ca_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let tls = RedisConfig::from_url("rediss://h:1").unwrap();
        for (path, says) in [
            (dir.path().join("missing.pem"), "cannot read"),
            (empty, "no certificate"),
            (junk.clone(), "not a PEM certificate"),
        ] {
            let err = tls.clone().with_ca_file(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        let plain = RedisConfig::from_url("redis://h:1").unwrap();
        let err = plain.with_ca_file(&junk).unwrap_err().to_string();
        assert!(err.contains("rediss://"), "{err}");
        let args = RedisArgs {
            redis_ca_file: Some(junk),
            ..RedisArgs::default()
        };
        let err = args.config().unwrap_err().to_string();
        assert!(err.contains("no Redis URL"), "{err}");
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
