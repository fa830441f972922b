//! What a benchmark's figures were measured on, printed the same way by every bench. Included
//! with `#[path = "support/machine.rs"] mod machine;`.

/// The build profile of this bench: figures from a debug build are not comparable.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug profile"
    } else {
        "release profile"
    }
}

/// Prints `machine: nproc …, Docker Engine …, cgroup …, load average …, <extra>`.
pub fn print(extra: &str) {
    let cmd = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cgroup = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "v1"
    };
    println!(
        "machine: nproc {}, Docker Engine {}, cgroup {cgroup}, load average {}, {extra}",
        cmd(&["nproc"]),
        cmd(&["docker", "version", "--format", "{{.Server.Version}}"]),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
}

/// Prints the load average once the measurement is over.
pub fn print_final_load() {
    println!(
        "load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
