//! A policy directory holding what an attacker (or an accident) can put there: a FIFO, a
//! symlink to `/dev/zero`, three symlinks to `.`. `validate` and the loader finish at once,
//! read the good file, and name each bad entry.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const GOOD: &str = "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: good\nspec:\n  selector:\n    matchLabels: {app: web}\n  probes:\n    exit: {}\n";

fn hostile_dir(dir: &Path) {
    std::fs::write(dir.join("good.yaml"), GOOD).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(dir.join("fifo.yaml"))
        .status()
        .unwrap();
    assert!(fifo.success());
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.yaml")).unwrap();
    for link in ["a", "b", "c"] {
        std::os::unix::fs::symlink(".", dir.join(link)).unwrap();
    }
}

#[test]
fn a_fifo_dev_zero_and_symlink_loops_neither_hang_nor_explode_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    hostile_dir(dir.path());
    let path = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(hemostat::policy::load_paths(&[path]));
    });
    let report = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the loader hangs on the hostile directory");
    assert_eq!(report.by_name().len(), 1, "{:#?}", report.diagnostics);
    let about = |name: &str, fragment: &str| {
        report
            .diagnostics
            .iter()
            .any(|d| d.file.ends_with(name) && d.message.contains(fragment))
    };
    assert!(
        about("fifo.yaml", "not a regular file"),
        "{:#?}",
        report.diagnostics
    );
    assert!(
        about("zero.yaml", "not a regular file"),
        "{:#?}",
        report.diagnostics
    );
    assert!(about("/a", "symlink loop"), "{:#?}", report.diagnostics);
    assert!(
        report.files <= 2,
        "each file is read once, not once per path through the links: {}",
        report.files
    );
}

#[test]
fn validate_on_the_hostile_directory_finishes_and_names_every_bad_entry() {
    let dir = tempfile::tempdir().unwrap();
    hostile_dir(dir.path());
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .arg("validate")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("hemostat validate hangs on the hostile directory");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("fifo.yaml") && text.contains("zero.yaml"),
        "{text}"
    );
    assert!(text.contains("symlink loop"), "{text}");
}

#[test]
fn a_policy_file_named_explicitly_must_be_regular_too() {
    let report = hemostat::policy::load_paths(&["/dev/zero"]);
    assert!(
        report.diagnostics[0].message.contains("not a regular file"),
        "{:#?}",
        report.diagnostics
    );
}
