//! Access control of the real operator binary: no token off loopback is refused at start; with a token, Bearer, the login form's HttpOnly cookie, and the open probes.

mod operator;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use operator::free_port;

const TOKEN: &str = "test-token-0123456789abcdef";

struct Running {
    child: Child,
    base: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(listen: &str, dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hemostat"));
    cmd.args(["run", "--listen", listen])
        .args([
            "--label-filter",
            &format!("hemostat.test.run={}", uuid::Uuid::new_v4()),
        ])
        .arg("--state-dir")
        .arg(dir)
        .args(extra)
        .env_remove("HEMOSTAT_API_TOKEN")
        .stdout(Stdio::null());
    cmd
}

async fn start(listen_ip: &str, extra: &[&str], token: Option<&str>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("operator.log");
    let mut cmd = command(&format!("{listen_ip}:{port}"), dir.path(), extra);
    if let Some(t) = token {
        cmd.env("HEMOSTAT_API_TOKEN", t);
    }
    let child = cmd
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let r = Running {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(resp) = reqwest::get(format!("{}/readyz", r.base)).await
            && resp.status() == 200
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            std::fs::read_to_string(&r.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(&format!("0.0.0.0:{}", free_port()), dir.path(), &[])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--insecure-no-auth") && stderr.contains("--api-token-file"),
        "{stderr}"
    );
    // No colour codes: stderr is not a terminal here.
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

#[tokio::test]
async fn off_loopback_everything_but_the_probes_needs_the_token() {
    let op = start("0.0.0.0", &[], Some(TOKEN)).await;
    let http = no_redirects();
    let get = |path: &str| http.get(format!("{}{path}", op.base));

    for open in ["/healthz", "/readyz", "/login", "/assets/app.js"] {
        assert_eq!(get(open).send().await.unwrap().status(), 200, "{open}");
    }
    for closed in [
        "/api/v1/containers",
        "/api/v1/events",
        "/metrics",
        "/api/v1/usage",
        "/api/v1/silences",
        "/api/v1/alerts",
    ] {
        let r = get(closed).send().await.unwrap();
        assert_eq!(r.status(), 401, "{closed}");
        assert!(r.headers().contains_key("www-authenticate"), "{closed}");
        let r = get(closed)
            .header("authorization", "Bearer wrong-token-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{closed} with a wrong token");
    }
    let r = get("/api/v1/containers")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = get("/api/v1/events")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(r);

    // A browser is sent to the login form, which sets an HttpOnly cookie for the right token.
    let page = get("/").header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login");
    let wrong = http
        .post(format!("{}/login", op.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=not-the-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(!wrong.headers().contains_key("set-cookie"));
    let login = http
        .post(format!("{}/login", op.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = get("/").header("cookie", &pair).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let api = get("/api/v1/containers")
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);

    // Writes need the token; with it they reach the router (silences are read-only over HTTP:
    // 405).
    let write = http
        .post(format!("{}/api/v1/silences", op.base))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 401);
    let write = http
        .post(format!("{}/api/v1/silences", op.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 405);

    // The log is plain text: stderr is a file, so no colour codes.
    let log = std::fs::read_to_string(&op.log).unwrap();
    assert!(log.contains("serving the dashboard"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file: {log:?}"
    );
}

#[tokio::test]
async fn metrics_can_be_opened_alone_and_loopback_reads_are_open_but_writes_are_not() {
    let op = start("0.0.0.0", &["--metrics-without-token"], Some(TOKEN)).await;
    let http = no_redirects();
    assert_eq!(
        http.get(format!("{}/metrics", op.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/api/v1/audit", op.base))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    drop(op);

    let local = start("127.0.0.1", &[], None).await;
    assert_eq!(
        http.get(format!("{}/api/v1/containers", local.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/", local.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let write = http
        .delete(format!("{}/api/v1/policies/x", local.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        write.status(),
        403,
        "writes without a configured token are refused"
    );
    let body = write.text().await.unwrap();
    assert!(body.contains("--api-token-file"), "{body}");
}
