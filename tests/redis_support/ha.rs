//! Redis beyond one server, for tests: a Redis Cluster made with `redis-cli --cluster create`,
//! Sentinels (`redis-sentinel`) watching a master and its replica, and a test CA with a
//! server certificate (the `openssl` command) for TLS. Everything on free loopback ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{RedisServer, free_port};

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Redis Cluster of `masters` masters, each with `replicas` replicas.
pub struct RedisCluster {
    /// Every node, in the order given to `redis-cli --cluster create`.
    pub nodes: Vec<RedisServer>,
    /// The nodes' `nodes.conf` files, in memory: each is saved with fsync on every change of
    /// the cluster, and a stall on a busy disk would look like a dead node.
    _conf: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts the nodes (cluster node timeout 2 s, so a dead master is replaced in seconds)
    /// and creates the cluster; returns once every node says `cluster_state:ok`.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let conf = tempfile::tempdir_in(fast_dir()).expect("temp dir for nodes.conf");
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|i| {
                RedisServer::start_with(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &conf
                            .path()
                            .join(format!("nodes-{i}.conf"))
                            .display()
                            .to_string(),
                        "--cluster-node-timeout",
                        "2000",
                        "--cluster-port",
                        &free_port().to_string(),
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                    None,
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("cannot run redis-cli: install Debian's redis-tools");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes, _conf: conf };
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running node says `cluster_state:ok` and knows every slot.
    pub fn wait_ok(&self, timeout: Duration) {
        wait("cluster_state:ok on every node", timeout, || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            })
        });
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The hash slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        self.running()
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    fn running(&self) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a running node")
    }

    /// The index of the node that is master of `slot` now, as a running node sees it
    /// (`None` while no live master serves it).
    pub fn master_of(&self, slot: u16) -> Option<usize> {
        let nodes = self.running().cli(&["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                match (a.parse::<u16>(), b.parse::<u16>()) {
                    (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                let port: u16 = fields[1]
                    .split(['@', ','])
                    .next()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse().ok())?;
                return self.nodes.iter().position(|n| n.port() == port);
            }
        }
        None
    }
}

/// A `redis-sentinel` watching one master under `name` (quorum 1, down after 1 s).
pub struct Sentinel {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Sentinel {
    /// Starts a Sentinel monitoring 127.0.0.1:`master_port` as `name` and waits until it
    /// answers.
    pub fn start(name: &str, master_port: u16) -> Self {
        let port = free_port();
        // In memory when possible: a Sentinel saves its configuration with fsync, and a stall
        // of 2 s on a busy disk sends it into TILT mode (no failover for 30 s).
        let dir = tempfile::tempdir_in(fast_dir()).expect("temp dir for the sentinel");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 10000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-sentinel: install Debian's redis-sentinel package");
        let sentinel = Self {
            port,
            dir,
            child: Some(child),
        };
        wait("the sentinel answers PING", Duration::from_secs(10), || {
            sentinel.cli(&["PING"]).contains("PONG")
        });
        sentinel
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `redis-cli` against this Sentinel.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run redis-cli: install Debian's redis-tools");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port of the master this Sentinel names for `name`.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        let out = self.cli(&["SENTINEL", "get-master-addr-by-name", name]);
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// The Sentinel's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A test CA and a server certificate for 127.0.0.1/localhost it signed, made with the
/// `openssl` command in a temporary directory.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes the CA and the server certificate (EC P-256, valid one day).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the CA");
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stdin(Stdio::null())
                .output()
                .expect("cannot run openssl: install Debian's openssl package");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "1",
            "-subj",
            "/CN=hemostat test CA",
        ];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
        run(&ca);
        let mut csr = vec!["req", "-subj", "/CN=localhost"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
        run(&csr);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ]);
        Self { dir }
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A file in the CA's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `redis-server` speaking only TLS on its port, with this CA's server certificate.
    pub fn server(&self) -> RedisServer {
        let p = |n: &str| self.path(n).display().to_string();
        RedisServer::start_with(
            vec![
                "--tls-cert-file".into(),
                p("server.crt"),
                "--tls-key-file".into(),
                p("server.key"),
                "--tls-ca-cert-file".into(),
                p("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            Some(self.ca()),
        )
    }
}

/// `/dev/shm` when it is there (tmpfs), else the temporary directory.
pub fn fast_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Where `path` is, for messages.
pub fn shown(path: &Path) -> String {
    path.display().to_string()
}
