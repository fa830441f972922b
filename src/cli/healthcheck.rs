//! `hemostat healthcheck`: asks a running operator's `/readyz` (or any URL) and exits 0 or 1, for a scratch image's HEALTHCHECK.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::Args;

use crate::policy::HumanDuration;

/// Arguments of `hemostat healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// What to ask; default: `/readyz` on the operator's `HEMOSTAT_LISTEN` address (an
    /// unspecified address such as 0.0.0.0 is asked on loopback), else http://127.0.0.1:9090.
    #[arg(long)]
    pub url: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s")]
    pub timeout: HumanDuration,
}

/// The URL asked when `--url` is not given, from the operator's listen address (`HEMOSTAT_LISTEN`).
pub(crate) fn default_url(listen: Option<&str>) -> String {
    let addr = listen
        .and_then(|l| l.trim().parse::<SocketAddr>().ok())
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 9090)));
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/readyz", SocketAddr::new(ip, addr.port()))
}

/// Asks once; prints why on failure and returns the exit code (0 healthy, 1 not).
pub(crate) async fn run(args: HealthcheckArgs) -> anyhow::Result<i32> {
    let url = args
        .url
        .unwrap_or_else(|| default_url(std::env::var("HEMOSTAT_LISTEN").ok().as_deref()));
    let timeout: Duration = args.timeout.get();
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
    match client.get(&url).send().await {
        Ok(answer) if answer.status().is_success() => Ok(0),
        Ok(answer) => {
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            eprintln!("unhealthy: {url} answered {status}: {}", body.trim());
            Ok(1)
        }
        Err(e) => {
            eprintln!("unhealthy: {url} did not answer within {timeout:?}: {e}");
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::default_url;

    #[test]
    fn default_url_follows_the_listen_address_and_asks_unspecified_ones_on_loopback() {
        let cases = [
            (None, "http://127.0.0.1:9090/readyz"),
            (Some("0.0.0.0:9090"), "http://127.0.0.1:9090/readyz"),
            (Some("[::]:8080"), "http://[::1]:8080/readyz"),
            (Some("10.1.2.3:9191"), "http://10.1.2.3:9191/readyz"),
            (Some("not an address"), "http://127.0.0.1:9090/readyz"),
        ];
        for (listen, want) in cases {
            assert_eq!(default_url(listen), want, "listen {listen:?}");
        }
    }
}
