//! Garbage written straight into Redis keys against a real `redis-server`: it is refused,
//! reported and escaped, never a reason to act twice, duplicate or storm.

mod redis_support;

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
