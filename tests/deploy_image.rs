//! The operator image (`scripts/build-image.sh`, tag in `$HEMOSTAT_TEST_IMAGE`): small, runs `--version`, turns healthy through `hemostat healthcheck`, and never acts on its own container.

mod deploy_support;
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use deploy_support::{OperatorContainer, Spec, docker, operator_image, run_container};
use serde_json::Value;
use support::{TestRun, wait_for, wait_until};

const MAX_IMAGE_BYTES: u64 = 30 * 1024 * 1024;

#[test]
fn the_image_is_under_30_mib_runs_version_and_declares_its_entrypoint_healthcheck_and_label() {
    let image = operator_image();
    let size: u64 = docker(&["image", "inspect", "--format", "{{.Size}}", &image])
        .parse()
        .unwrap();
    assert!(
        size < MAX_IMAGE_BYTES,
        "{image} is {size} bytes, over 30 MiB"
    );
    println!("{image}: {} KiB", size / 1024);

    let version = docker(&[
        "run",
        "--rm",
        "--label",
        "hemostat.test=1",
        &image,
        "--version",
    ]);
    assert_eq!(
        version,
        format!("hemostat {}", env!("CARGO_PKG_VERSION")),
        "`docker run --rm {image} --version`"
    );

    let config: Value = serde_json::from_str(&docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        &image,
    ]))
    .unwrap();
    assert_eq!(config["Entrypoint"], serde_json::json!(["/hemostat"]));
    assert_eq!(config["Cmd"], serde_json::json!(["run"]));
    assert_eq!(
        config["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/hemostat", "healthcheck"])
    );
    assert_eq!(config["Labels"]["io.hemostat.protected"], "true");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"HEMOSTAT_LISTEN=0.0.0.0:9090"), "{env:?}");
}

#[test]
fn the_image_carries_the_ca_roots_for_rediss_and_https() {
    let image = operator_image();
    let id = docker(&["create", "--label", "hemostat.test=1", &image]);
    let out = Command::new("docker")
        .args([
            "cp",
            &format!("{id}:/etc/ssl/certs/ca-certificates.crt"),
            "-",
        ])
        .output()
        .unwrap();
    docker(&["rm", "-f", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tar = String::from_utf8_lossy(&out.stdout);
    let certs = tar.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(certs > 100, "only {certs} CA certificates in the image");
}

fn policy_dir(dir: &std::path::Path, run: &TestRun, role: &str) -> std::path::PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("self.yaml"),
        format!(
            "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: self\nspec:\n  selector:\n    matchLabels: {{hemostat.test.run: \"{}\", role: {role}}}\n  probes:\n    healthcheck: {{unhealthyFor: 1s}}\n  remediation:\n    actions: [restart]\n",
            run.run_id
        ),
    )
    .unwrap();
    policies
}

#[tokio::test]
async fn in_its_image_the_operator_turns_healthy_through_hemostat_healthcheck() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(dir.path(), &run, "nobody");
    let op = OperatorContainer::start(
        &run,
        "healthy",
        &policies,
        &dir.path().join("state"),
        &run.label,
        &[],
        &[],
    )
    .await;
    // The image's HEALTHCHECK (interval 10 s) runs `hemostat healthcheck` against /readyz.
    wait_until(
        Duration::from_secs(45),
        "the image's HEALTHCHECK reports healthy",
        || async { op.container.inspect("{{.State.Health.Status}}") == "healthy" },
    )
    .await;
    let last: Value =
        serde_json::from_str(&op.container.inspect("{{json .State.Health.Log}}")).unwrap();
    assert_eq!(last.as_array().unwrap().last().unwrap()["ExitCode"], 0);
}

/// An image like the one under test whose healthcheck always fails (exec form: a scratch
/// image has no shell for `--health-cmd`), removed on drop.
struct UnhealthyImage(String);

impl UnhealthyImage {
    fn build(run: &TestRun) -> Self {
        let tag = format!("hemostat-test-unhealthy:{}", &run.run_id[..8]);
        let dockerfile = format!(
            "FROM {}\nLABEL hemostat.test=\"1\"\nHEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD [\"/hemostat\", \"healthcheck\", \"--url\", \"http://127.0.0.1:1/readyz\"]\n",
            operator_image()
        );
        let mut child = Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", &tag, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        UnhealthyImage(tag)
    }
}

impl Drop for UnhealthyImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[tokio::test]
async fn in_its_image_the_operator_finds_its_own_container_and_never_acts_on_it() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(dir.path(), &run, "self");
    let image = UnhealthyImage::build(&run);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // Governed by a policy and not protected by the image's label: only the own-container
    // gate stands between the operator and a restart of itself.
    let container = run_container(
        &run,
        &Spec {
            name: "self".into(),
            image: image.0.clone(),
            env: vec![
                ("HEMOSTAT_POLICIES".into(), "/etc/hemostat/policies".into()),
                ("HEMOSTAT_LABEL_FILTER".into(), run.label.clone()),
                ("HEMOSTAT_RESYNC_INTERVAL".into(), "2s".into()),
                (
                    "HEMOSTAT_API_TOKEN".into(),
                    deploy_support::API_TOKEN.into(),
                ),
            ],
            labels: vec![
                ("role".into(), "self".into()),
                ("io.hemostat.protected".into(), "false".into()),
            ],
            binds: vec![
                "/var/run/docker.sock:/var/run/docker.sock".into(),
                format!("{}:/etc/hemostat/policies:ro", policies.display()),
                format!("{}:/var/lib/hemostat", state.display()),
            ],
            publish: vec![9090],
            ..Spec::default()
        },
    );
    let started_at = container.inspect("{{.State.StartedAt}}");
    let op = OperatorContainer::attach(container.clone()).await;
    op.wait_ready(Duration::from_secs(30)).await;

    let refusal = wait_for(
        Duration::from_secs(45),
        "the operator refuses to restart its own unhealthy container",
        || async {
            op.audit()
                .await
                .into_iter()
                .find(|r| r["container"] == container.name.as_str())
        },
    )
    .await;
    assert_eq!(refusal["gate"], "own_container", "{refusal}");
    assert_eq!(refusal["status"], "rejected", "{refusal}");
    assert_eq!(container.inspect("{{.State.Health.Status}}"), "unhealthy");
    assert_eq!(container.inspect("{{.State.StartedAt}}"), started_at);
    // It says which container it found itself in: this one.
    let logs = container.logs();
    let found = logs
        .lines()
        .find(|l| l.contains("running in a container"))
        .unwrap_or_else(|| panic!("no 'running in a container' line in:\n{logs}"));
    assert!(found.contains(&container.id[..12]), "{found}");
}

#[test]
fn the_license_file_and_the_image_label_match_cargo_toml() {
    let root = env!("CARGO_MANIFEST_DIR");
    let cargo = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    let license = cargo
        .lines()
        .find_map(|l| l.strip_prefix("license = "))
        .expect("Cargo.toml has a license")
        .trim_matches('"');
    assert_eq!(license, "MIT");
    let text = std::fs::read_to_string(format!("{root}/LICENSE")).expect("a LICENSE file");
    assert_eq!(text.lines().next(), Some("MIT License"));
    assert!(text.contains("Permission is hereby granted, free of charge"));
    let label = docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"org.opencontainers.image.licenses\"}}",
        &operator_image(),
    ]);
    assert_eq!(label, license);
}
