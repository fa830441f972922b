//! Garbage written straight into Redis keys against a real `redis-server`: it is refused,
//! reported and escaped, never a reason to act twice, duplicate or storm.

mod operator;
mod redis_support;
mod support;

use std::process::Command;

use redis_support::RedisServer;

const EVIL: &str = "evil\u{1b}[31m\nFORGED level=ERROR";

fn policy(name: &str) -> String {
    format!(
        "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  probes:\n    exit: {{}}\n"
    )
}

#[tokio::test]
async fn control_characters_in_a_stored_policy_name_are_refused_and_escaped_on_output() {
    let server = RedisServer::start();
    let mut conn = server.connection().await;
    let _: () = redis::cmd("HSET")
        .arg("hemostat:policies")
        .arg(EVIL)
        .arg(policy("evil"))
        .arg("good")
        .arg(policy("good"))
        .query_async(&mut conn)
        .await
        .unwrap();

    let refused = hemostat::policy::remote::validate_stored(EVIL, policy("evil").as_bytes())
        .expect_err("a field with control characters is no policy name");
    assert!(!format!("{refused:?}").contains('\u{1b}'), "{refused:?}");

    for output in ["table", "json", "yaml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_hemostat"))
            .args(["get", "policies", "-o", output])
            .env("REDIS_URL", server.url())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "raw escape printed (-o {output}): {text:?}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("FORGED")),
            "forged line (-o {output}): {text:?}"
        );
        assert!(text.contains("good"), "{text}");
        if output == "table" {
            assert!(text.contains(r"evil\u{1b}[31m\nFORGED"), "{text}");
        }
    }
}

/// The password never has to be on the command line (`ps` shows it to every user): from
/// `--redis-url-file` or `REDIS_PASSWORD_FILE` the operator connects; on the command line it
/// is warned about.
#[tokio::test]
async fn the_redis_password_comes_from_a_file_and_on_the_command_line_is_warned_about() {
    let server = RedisServer::start_with_password("s3cret-pw");
    let run = support::TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = operator::policy_dir(
        dir.path(),
        &operator::policy_for_run("pw", &run.run_id, "  probes:\n    exit: {}\n"),
    );
    let url_file = dir.path().join("redis-url");
    std::fs::write(&url_file, format!("{}\n", server.url())).unwrap();
    let pw_file = dir.path().join("redis-password");
    std::fs::write(&pw_file, "s3cret-pw\n").unwrap();
    let without_pw = format!("redis://127.0.0.1:{}/0", server.port());
    let connected = "shared state and decisions go to Redis";
    let warning = "a Redis password is on the command line";

    let from_url_file = operator::Operator::start(
        &policies,
        &run.label,
        &dir.path().join("s1"),
        &["--redis-url-file", url_file.to_str().unwrap()],
    )
    .await;
    let log = from_url_file.log_text();
    assert!(log.contains(connected) && !log.contains(warning), "{log}");
    assert!(!log.contains("s3cret-pw"), "{log}");

    let from_password_file = operator::Operator::start_with_env(
        &policies,
        &run.label,
        &dir.path().join("s2"),
        &["--redis-url", &without_pw],
        &[("REDIS_PASSWORD_FILE", pw_file.to_str().unwrap())],
    )
    .await;
    let log = from_password_file.log_text();
    assert!(log.contains(connected) && !log.contains(warning), "{log}");

    let on_command_line = operator::Operator::start(
        &policies,
        &run.label,
        &dir.path().join("s3"),
        &["--redis-url", &server.url()],
    )
    .await;
    let log = on_command_line.log_text();
    assert!(log.contains(connected) && log.contains(warning), "{log}");
    assert!(!log.contains("s3cret-pw"), "{log}");
}
