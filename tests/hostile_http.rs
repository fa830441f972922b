//! Thousands of idle connections to the HTTP port (what exhausted the operator's descriptors
//! and blocked repairs for minutes): the operator holds at most its cap, closes silent ones,
//! goes on repairing, and answers `/healthz` once the silent ones time out.

mod operator;
mod support;

use std::net::TcpStream;
use std::time::Duration;

use operator::{Operator, policy_dir, policy_for_run};
use support::{ContainerSpec, TestRun, wait_until};

const IDLE_SOCKETS: usize = 3_000;
const CAP: usize = 64;
const CRASH_ONCE: &str =
    "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 1; exit 3";

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn idle_connections_never_take_the_descriptors_repairs_need() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n";
    let policies = policy_dir(dir.path(), &policy_for_run("idle", &run.run_id, policy));
    let op = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--http-max-connections", &CAP.to_string()],
    )
    .await;
    let before = open_fds(op.pid());
    let addr = op.base.trim_start_matches("http://").to_owned();
    let idle: Vec<TcpStream> = (0..IDLE_SOCKETS)
        .map(|_| TcpStream::connect(&addr).expect("connect an idle socket"))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = open_fds(op.pid());
    assert!(
        during <= before + CAP + 8,
        "{IDLE_SOCKETS} idle sockets: the operator holds {during} descriptors (had {before}, cap {CAP})"
    );

    // Repairs go on while the sockets stay open.
    run.spawn(
        "crash",
        ContainerSpec::sh(CRASH_ONCE).label("role", "target"),
    )
    .await;
    op.wait_audit(
        &run.name("crash"),
        40,
        "the crash is repaired under the flood",
        |r| r["status"] == "success",
    )
    .await;
    // Silent connections are closed after the header-read timeout (10 s): /healthz answers
    // again while the client still holds every socket open.
    wait_until(
        Duration::from_secs(30),
        "/healthz answers during the flood",
        || async {
            reqwest::get(format!("{}/healthz", op.base))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    assert!(open_fds(op.pid()) <= before + CAP + 8);
    drop(idle);
}
