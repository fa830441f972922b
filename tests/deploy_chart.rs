//! `charts/hemostat` offline: `scripts/check-chart.py` lints it, renders every value set in `charts/hemostat/ci/`, validates the output with `kubernetes-validate --strict`, the alert rules with `promtool`, the policies with this `hemostat validate`, and checks that the schema refuses bad values.

use std::process::Command;

#[test]
fn the_chart_lints_renders_its_value_sets_validates_strictly_and_refuses_bad_values() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check-chart.py");
    let out = Command::new("python3")
        .arg(script)
        .env("HEMOSTAT_BIN", env!("CARGO_BIN_EXE_hemostat"))
        .output()
        .expect("run python3 scripts/check-chart.py (Debian's python3)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "scripts/check-chart.py failed (pip install helm-python-sdk==0.2.2 kubernetes-validate; apt-get install prometheus):\n{stdout}\n{stderr}"
    );
    // Not vacuous: at least three value sets rendered and validated, bad values refused.
    assert!(
        stdout.matches("pass kubernetes-validate --strict").count() >= 3,
        "{stdout}"
    );
    assert!(stdout.matches("ok   refused").count() >= 10, "{stdout}");
    assert!(stdout.contains("promtool check rules"), "{stdout}");
}
