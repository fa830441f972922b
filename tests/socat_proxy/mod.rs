//! A `socat` proxy in front of the engine's Unix socket, for staged faults: `cut` kills socat and
//! every connection it forked (the long-lived `/events` stream included), `heal` starts it again.
//!
//! ```ignore
//! mod socat_proxy;
//! let mut proxy = socat_proxy::EngineProxy::start(&dir.path().join("engine.sock"));
//! let docker_host = proxy.docker_host();      // unix:///…/engine.sock, for the operator
//! proxy.cut();                                 // nothing answers on the socket any more
//! proxy.heal();                                // the engine answers again
//! ```
//!
//! Nothing skips silently: a missing `socat` is a panic that says what to install.
#![allow(dead_code)] // each test binary uses a different subset

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The engine's socket behind the proxy: `DOCKER_HOST` when it is a `unix://` one, else the default.
pub fn engine_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => PathBuf::from(&host["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// A `socat UNIX-LISTEN:…,fork UNIX-CONNECT:<engine>` process group; killed on drop.
pub struct EngineProxy {
    path: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl EngineProxy {
    /// Starts the proxy listening on `path` and waits until the socket exists.
    pub fn start(path: &Path) -> Self {
        let mut proxy = Self {
            path: path.to_path_buf(),
            child: None,
            log: path.with_extension("socat.log"),
        };
        proxy.heal();
        proxy
    }

    /// A proxy that is down from the start (its socket does not exist yet): [`Self::heal`] starts it.
    pub fn down(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        Self {
            path: path.to_path_buf(),
            child: None,
            log: path.with_extension("socat.log"),
        }
    }

    /// `unix://<path>`, for the operator's `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Whether socat is running.
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Starts socat (when it is not running) and waits until its socket accepts connections.
    pub fn heal(&mut self) {
        if self.child.is_some() {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", self.path.display()))
            .arg(format!("UNIX-CONNECT:{}", engine_socket().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: `cut` ends the forked children (open connections) too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start socat ({e}): install Debian's socat package (apt-get install socat)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&self.path).is_err() {
            assert!(
                Instant::now() < deadline,
                "socat did not listen on {} within 10 s",
                self.path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills socat and every connection it forked (SIGKILL to its process group) and removes
    /// the socket: open streams break, new connections are refused.
    pub fn cut(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
