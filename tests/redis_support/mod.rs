//! A real `redis-server` on a free loopback port, for tests: start, stop, restart (keeping data with AOF), killed on drop.
//!
//! ```ignore
//! mod redis_support;
//! let server = redis_support::RedisServer::start();          // in-memory only
//! let durable = redis_support::RedisServer::start_durable();  // appendonly, survives restart()
//! let url = server.url();                                     // redis://127.0.0.1:PORT/0
//! ```
//!
//! Nothing skips silently: a missing `redis-server` is a panic that says what to install.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's package puts the server; `REDIS_SERVER` overrides it.
fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// A running (or stopped) test server; killed and its data removed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    durable: bool,
    password: Option<String>,
    /// More `redis-server` arguments (cluster mode, TLS, replication…).
    extra: Vec<String>,
    /// With TLS: the CA file `redis-cli` checks the server with (the plain port is 0).
    tls_ca: Option<std::path::PathBuf>,
    child: Option<Child>,
}

impl RedisServer {
    /// A server that keeps nothing on disk.
    pub fn start() -> Self {
        Self::launch(false, None)
    }

    /// A server with `appendonly yes` in its own directory: data survives [`Self::restart`].
    pub fn start_durable() -> Self {
        Self::launch(true, None)
    }

    /// A server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Self {
        Self::launch(false, Some(password.to_owned()))
    }

    fn launch(durable: bool, password: Option<String>) -> Self {
        Self::build(durable, password, Vec::new(), None)
    }

    /// A server with more `redis-server` arguments; `{port}` and `{dir}` in them are replaced
    /// by its port and directory. With `tls_ca`, the server listens with TLS on its port
    /// (`--tls-port`, `--port 0`) and readiness is checked by `redis-cli --tls`.
    pub fn start_with(extra: Vec<String>, tls_ca: Option<std::path::PathBuf>) -> Self {
        Self::build(false, None, extra, tls_ca)
    }

    fn build(
        durable: bool,
        password: Option<String>,
        extra: Vec<String>,
        tls_ca: Option<std::path::PathBuf>,
    ) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let extra = extra
            .into_iter()
            .map(|a| {
                a.replace("{port}", &port.to_string())
                    .replace("{dir}", &dir.path().display().to_string())
            })
            .collect();
        let mut server = Self {
            port,
            dir,
            durable,
            password,
            extra,
            tls_ca,
            child: None,
        };
        server.spawn();
        server
    }

    /// The server's directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs `redis-cli` against this server with `args`; its stdout (panics if it cannot run).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(ca) = &self.tls_ca {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        if let Some(pw) = &self.password {
            cmd.args(["--no-auth-warning", "-a", pw]);
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run redis-cli: install Debian's redis-tools");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let mut cmd = Command::new(server_binary());
        if self.tls_ca.is_some() {
            cmd.arg("--port").arg("0").arg("--tls-port");
        } else {
            cmd.arg("--port");
        }
        cmd.arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--appendonly")
            .arg(if self.durable { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg("always")
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        if let Some(pw) = &self.password {
            cmd.arg("--requirepass").arg(pw);
        }
        cmd.args(&self.extra);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): install Debian's redis-server package",
                server_binary()
            )
        });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s; log:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers PING (a raw RESP exchange, no client library).
    pub fn ping(&self) -> bool {
        if self.tls_ca.is_some() {
            return self.cli(&["PING"]).contains("PONG");
        }
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut req = String::new();
        if let Some(pw) = &self.password {
            req.push_str(&format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{pw}\r\n", pw.len()));
        }
        req.push_str("*1\r\n$4\r\nPING\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let mut got = String::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
            if got.contains("+PONG") {
                return true;
            }
            if got.contains("-") {
                return false;
            }
        }
        false
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0` (with the password when there is one).
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// A `redis` client for checks made by the test itself.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis client")
    }

    /// A fresh multiplexed connection for checks made by the test itself.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server")
    }

    /// Stops the server (SIGTERM: a durable server writes its AOF first) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server (SIGKILL: no shutdown, no final write; a durable server's AOF is
    /// fsynced on every write, so what it acknowledged survives) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Stops and starts the server.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub mod ha;
/// A successful restart of `web` on `n1`, recorded now under decision `id`, with `details`.
pub fn audit_record(id: &str, details: &str) -> hemostat::model::audit::AuditRecord {
    hemostat::model::audit::AuditRecord {
        decision_id: id.to_owned(),
        timestamp: chrono::Utc::now(),
        node: "n1".into(),
        container: "web".into(),
        container_id: "abc".into(),
        policy: "default".into(),
        action: "restart".into(),
        status: "success".into(),
        reason: "exited".into(),
        details: details.to_owned(),
        action_started_at: None,
        gate: None,
        analysis_method: None,
        root_cause: None,
        fallback_reason: None,
    }
}
