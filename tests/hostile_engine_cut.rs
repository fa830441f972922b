//! The engine's API cut under a running operator (through a socket proxy the test owns):
//! `/readyz` says 503 while repairs cannot run and 200 again once the engine is back, while
//! `/healthz` stays 200 (the process is alive).

mod operator;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use operator::{Operator, policy_dir, policy_for_run};
use support::{ContainerSpec, TestRun, wait_until};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

const ENGINE: &str = "/var/run/docker.sock";

/// Forwards a Unix socket to the engine's; `cut` drops every connection and stops listening.
struct Proxy {
    path: PathBuf,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect(ENGINE).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
            // Dropping the JoinSet (when this task is aborted) aborts every connection.
        });
        Self {
            path: path.to_path_buf(),
            task: Some(task),
        }
    }

    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn ready_status(op: &Operator) -> u16 {
    reqwest::get(format!("{}/readyz", op.base))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn readyz_is_false_while_the_engine_event_stream_is_cut_and_true_once_back() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("engine.sock");
    let mut proxy = Proxy::start(&sock);
    let policy = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n";
    let policies = policy_dir(dir.path(), &policy_for_run("cut", &run.run_id, policy));
    let host = format!("unix://{}", sock.display());
    let op = Operator::start_with_env(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &[],
        &[("DOCKER_HOST", &host)],
    )
    .await;
    assert_eq!(ready_status(&op).await, 200);

    proxy.cut().await;
    wait_until(
        Duration::from_secs(5),
        "readyz says 503 once the stream is cut",
        || async { ready_status(&op).await == 503 },
    )
    .await;
    let live = reqwest::get(format!("{}/healthz", op.base)).await.unwrap();
    assert_eq!(live.status(), 200, "the process itself is alive");

    let _proxy = Proxy::start(&sock);
    wait_until(
        Duration::from_secs(20),
        "readyz is 200 again once the engine is back",
        || async { ready_status(&op).await == 200 },
    )
    .await;
    // And repairs run again: a crash after the cut healed is repaired.
    let _id = run
        .spawn(
            "crash",
            ContainerSpec::sh(
                "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 1; exit 3",
            )
            .label("role", "target"),
        )
        .await;
    op.wait_audit(
        &run.name("crash"),
        40,
        "the crash after the cut is repaired",
        |r| r["status"] == "success",
    )
    .await;
}
