//! The three shapes of Redis HemoStat speaks to, parsed from one URL: a single server
//! (`redis://`, `rediss://`), a Redis Cluster (`redis+cluster://h1:p1,h2:p2`) and a
//! Sentinel-managed master (`redis+sentinel://s1:p1,s2:p2/<master>[/<db>]`).

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

/// The default port of a Sentinel.
pub(crate) const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Where the data lives and how it is found.
#[derive(Clone, Debug)]
pub(crate) enum Topology {
    /// One server (or a proxy in front of many).
    Single(ConnectionInfo),
    /// A Redis Cluster: the seed nodes (the rest of the cluster is discovered from them).
    Cluster(Vec<ConnectionInfo>),
    /// The master a group of Sentinels names; followed through failovers.
    Sentinel {
        /// The Sentinels (no password: the URL's password is the data nodes').
        sentinels: Vec<ConnectionInfo>,
        /// The monitored master's name (`sentinel monitor <name> …`).
        master: String,
        /// Database, user and password for the master itself.
        node: ConnectionInfo,
    },
}

impl Topology {
    /// Whether connections use TLS.
    pub(crate) fn tls(&self) -> bool {
        let first = match self {
            Self::Single(info) => Some(info),
            Self::Cluster(seeds) => seeds.first(),
            Self::Sentinel { node, .. } => Some(node),
        };
        first.is_some_and(|i| matches!(i.addr(), ConnectionAddr::TcpTls { .. }))
    }
}

/// Parses a URL of any of the three shapes. Errors never echo the URL (it may hold a password).
pub(crate) fn parse(url: &str) -> Result<Topology, String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("a Redis URL starts with redis://, rediss://, redis+cluster://, rediss+cluster://, redis+sentinel:// or rediss+sentinel://".to_owned());
    };
    let (plain, kind) = match scheme.to_ascii_lowercase().as_str() {
        "redis+cluster" => ("redis", Kind::Cluster),
        "rediss+cluster" => ("rediss", Kind::Cluster),
        "redis+sentinel" => ("redis", Kind::Sentinel),
        "rediss+sentinel" => ("rediss", Kind::Sentinel),
        _ => {
            return url
                .into_connection_info()
                .map(Topology::Single)
                .map_err(|e| format!("not a valid redis:// or rediss:// URL: {e}"));
        }
    };
    let url = MultiHost::split(scheme, plain, rest)?;
    match kind {
        Kind::Cluster => url.cluster(),
        Kind::Sentinel => url.sentinel(),
    }
}

enum Kind {
    Cluster,
    Sentinel,
}

/// A cluster or Sentinel URL cut in its parts:
/// `<scheme>://[<userinfo>@]<host>[:<port>][,<host>[:<port>]…][/<segment>…]`.
struct MultiHost<'a> {
    /// The scheme as written (`redis+cluster`, …), for errors.
    scheme: &'a str,
    /// The single-server scheme of each node (`redis` or `rediss`).
    plain: &'static str,
    /// `<userinfo>@`, or empty.
    auth: String,
    /// The hosts, none empty.
    hosts: Vec<&'a str>,
    /// The path's non-empty segments.
    segments: Vec<&'a str>,
}

impl<'a> MultiHost<'a> {
    /// Cuts `rest` (what follows `scheme://`) in its parts.
    fn split(scheme: &'a str, plain: &'static str, rest: &'a str) -> Result<Self, String> {
        if rest.contains('?') || rest.contains('#') {
            return Err(format!(
                "{scheme}:// URLs take no query or fragment (?…, #…): put the password in the URL or REDIS_PASSWORD"
            ));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
        if hosts.iter().any(|h| h.is_empty()) {
            return Err(format!(
                "{scheme}:// needs host:port[,host:port…] (an empty host was given)"
            ));
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        Ok(Self {
            scheme,
            plain,
            auth,
            hosts,
            segments,
        })
    }

    /// The connection info of one node: `host` (with `default_port` when it names none),
    /// database `db`, credentials `auth` (`<userinfo>@` or empty).
    fn node(
        &self,
        host: &str,
        db: &str,
        auth: &str,
        default_port: u16,
    ) -> Result<ConnectionInfo, String> {
        let host = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:{default_port}")
        };
        format!("{}://{auth}{host}/{db}", self.plain)
            .into_connection_info()
            .map_err(|e| format!("{}:// host {host}: {e}", self.scheme))
    }

    /// A Redis Cluster's seeds (database 0 only).
    fn cluster(&self) -> Result<Topology, String> {
        let scheme = self.scheme;
        if !self.segments.is_empty() {
            return Err(format!(
                "{scheme}:// takes no database or path: Redis Cluster only has database 0"
            ));
        }
        let seeds = self
            .hosts
            .iter()
            .map(|h| self.node(h, "0", &self.auth, super::config::DEFAULT_PORT))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Topology::Cluster(seeds))
    }

    /// The Sentinels (without the password), the master's name and its database.
    fn sentinel(&self) -> Result<Topology, String> {
        let scheme = self.scheme;
        let (master, db) = match self.segments.as_slice() {
            [master] => (*master, "0"),
            [master, db] => (*master, *db),
            _ => {
                return Err(format!(
                    "{scheme}:// needs the master's name: {scheme}://sentinel:26379[,sentinel2:26379]/<master>[/<db>]"
                ));
            }
        };
        if db.parse::<i64>().is_err() {
            return Err(format!(
                "{scheme}://…/{master}/<db>: the database must be a number"
            ));
        }
        let sentinels = self
            .hosts
            .iter()
            .map(|h| self.node(h, "0", "", DEFAULT_SENTINEL_PORT))
            .collect::<Result<Vec<_>, _>>()?;
        // The master's address is what the Sentinels say; this one only carries the rest.
        let node = self.node(self.hosts[0], db, &self.auth, DEFAULT_SENTINEL_PORT)?;
        Ok(Topology::Sentinel {
            sentinels,
            master: master.to_owned(),
            node,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(info: &ConnectionInfo) -> String {
        match info.addr() {
            ConnectionAddr::Tcp(h, p) => format!("tcp {h}:{p}"),
            ConnectionAddr::TcpTls { host, port, .. } => format!("tls {host}:{port}"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn shapes_are_recognised() {
        let cases: &[(&str, &str)] = &[
            ("redis://h:1/2", "single tcp h:1 db 2"),
            ("rediss://h:1", "single tls h:1 db 0"),
            ("redis+cluster://a:1,b:2", "cluster tcp a:1 tcp b:2"),
            ("redis+cluster://a,b:2/", "cluster tcp a:6379 tcp b:2"),
            ("rediss+cluster://:pw@a:1", "cluster tls a:1"),
            (
                "redis+sentinel://s1:5,s2/mymaster",
                "sentinel mymaster tcp s1:5 tcp s2:26379 db 0",
            ),
            ("rediss+sentinel://u:p@s1:5/m/3", "sentinel m tls s1:5 db 3"),
        ];
        for (url, want) in cases {
            let got = match parse(url).unwrap() {
                Topology::Single(i) => {
                    format!("single {} db {}", addr(&i), i.redis_settings().db())
                }
                Topology::Cluster(seeds) => {
                    let s: Vec<String> = seeds.iter().map(addr).collect();
                    format!("cluster {}", s.join(" "))
                }
                Topology::Sentinel {
                    sentinels,
                    master,
                    node,
                } => {
                    let s: Vec<String> = sentinels.iter().map(addr).collect();
                    format!(
                        "sentinel {master} {} db {}",
                        s.join(" "),
                        node.redis_settings().db()
                    )
                }
            };
            assert_eq!(&got, want, "{url}");
        }
    }

    #[test]
    fn passwords_go_to_the_data_nodes_only() {
        let Topology::Sentinel {
            sentinels, node, ..
        } = parse("redis+sentinel://alice:pw1@s:1/m").unwrap()
        else {
            panic!("not sentinel");
        };
        assert_eq!(node.redis_settings().password(), Some("pw1"));
        assert_eq!(node.redis_settings().username(), Some("alice"));
        assert_eq!(sentinels[0].redis_settings().password(), None);
        let Topology::Cluster(seeds) = parse("redis+cluster://:pw2@a:1,b:2").unwrap() else {
            panic!("not cluster");
        };
        assert!(
            seeds
                .iter()
                .all(|s| s.redis_settings().password() == Some("pw2"))
        );
    }

    #[test]
    fn bad_urls_are_refused_without_the_password() {
        for (url, says) in [
            ("redis+sentinel://:s3cr3t@s:1", "master's name"),
            ("redis+sentinel://:s3cr3t@s:1/m/x", "must be a number"),
            ("redis+sentinel://:s3cr3t@s:1/m/1/2", "master's name"),
            ("redis+cluster://:s3cr3t@a:1/1", "no database"),
            ("redis+cluster://:s3cr3t@a:1,,b:2", "empty host"),
            ("redis+cluster://:s3cr3t@a:1?x=1", "no query"),
            ("http://:s3cr3t@a:1", "redis://"),
            ("nothing", "starts with"),
        ] {
            let err = parse(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("s3cr3t"), "{url}: {err}");
        }
    }
}
