//! `charts/hemostat` offline: `scripts/check-chart.py` lints it, renders every value set in `charts/hemostat/ci/`, validates the output with `kubernetes-validate --strict`, the alert rules with `promtool`, the policies with this `hemostat validate`, and checks that the schema refuses bad values.

use std::process::{Command, Output};

fn check_chart(args: &[&str]) -> (Output, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check-chart.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .env("HEMOSTAT_BIN", env!("CARGO_BIN_EXE_hemostat"))
        .output()
        .expect("run python3 scripts/check-chart.py (Debian's python3)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    (out, text)
}

#[test]
fn the_chart_alert_rules_use_only_metrics_the_operator_registers() {
    let (out, text) = check_chart(&["--metric-names"]);
    assert!(out.status.success(), "{text}");
    for metric in ["hemostat_actions_total", "hemostat_breakers_open"] {
        assert!(
            text.contains(&format!("uses {metric}, registered")),
            "{text}"
        );
    }
}

#[test]
fn the_chart_lints_renders_its_value_sets_validates_strictly_and_refuses_bad_values() {
    let (out, stdout) = check_chart(&[]);
    assert!(
        out.status.success(),
        "scripts/check-chart.py failed (pip install helm-python-sdk==0.2.2 kubernetes-validate; apt-get install prometheus):\n{stdout}"
    );
    // Not vacuous: at least three value sets rendered and validated, bad values refused.
    assert!(
        stdout.matches("pass kubernetes-validate --strict").count() >= 3,
        "{stdout}"
    );
    assert!(stdout.matches("ok   refused").count() >= 10, "{stdout}");
    assert!(stdout.contains("promtool check rules"), "{stdout}");
}
