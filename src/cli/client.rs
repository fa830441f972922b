//! The one client the kubectl-style verbs share: a running operator's HTTP API (`--api`) and
//! the policies in Redis.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use crate::adapters::redis::config::RedisArgs;
use crate::adapters::redis::policies::PolicyRepo;
use crate::http::views::{ContainerView, PolicyView};
use crate::model::wire::Envelope;

/// The operator's address when none is given.
pub(crate) const DEFAULT_API: &str = "http://127.0.0.1:9090";

/// `api` as a base URL: `host:port` becomes `http://host:port`; a trailing `/` is dropped.
pub(crate) fn api_base(api: &str) -> String {
    let api = api.trim().trim_end_matches('/');
    if api.contains("://") {
        api.to_owned()
    } else {
        format!("http://{api}")
    }
}

/// `--api`, or the default address.
pub(crate) fn api_or_default(api: &Option<String>) -> &str {
    api.as_deref().unwrap_or(DEFAULT_API)
}

/// A running operator's HTTP API.
pub(crate) struct Operator<'a> {
    /// The address as given (`--api`), for messages.
    given: &'a str,
    http: reqwest::Client,
}

impl<'a> Operator<'a> {
    /// A client for the operator at `api` (URL or host:port).
    pub(crate) fn new(api: &'a str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Self { given: api, http })
    }

    /// The operator's base URL.
    pub(crate) fn base(&self) -> String {
        api_base(self.given)
    }

    /// `GET path` as JSON.
    pub(crate) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<T> {
        self.get_as(path, "the expected JSON").await
    }

    /// `GET path` as JSON; `what` names the expected body in the error when it is not.
    pub(crate) async fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> anyhow::Result<T> {
        let api = self.given;
        let url = format!("{}{path}", self.base());
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| anyhow!("the operator is not reachable at {api} ({e}): is `hemostat run` running there? point --api / HEMOSTAT_API at its --listen address"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("{url} answered {status}: {body}");
        }
        response
            .json()
            .await
            .with_context(|| format!("{url} answered something that is not {what}"))
    }

    /// The containers it observes.
    pub(crate) async fn containers(&self) -> anyhow::Result<Vec<ContainerView>> {
        self.get("/api/v1/containers").await
    }

    /// Its recent decisions (at most 1000), oldest first.
    pub(crate) async fn decisions(&self) -> anyhow::Result<Vec<Envelope>> {
        self.get("/api/v1/decisions?limit=1000").await
    }

    /// The policies in force there.
    pub(crate) async fn policies(&self) -> anyhow::Result<Vec<PolicyView>> {
        self.get("/api/v1/policies").await
    }
}

/// The policies in Redis, or what to do when Redis does not answer.
pub(crate) async fn connect_redis(args: &RedisArgs) -> anyhow::Result<PolicyRepo> {
    let (config, shown) = super::run::redis_secrets_from_files(args.clone())?.cli_config()?;
    PolicyRepo::connect(&config).await.map_err(|e| {
        anyhow!(
            "cannot reach Redis at {shown} ({e}): start Redis there, or point --redis-url / REDIS_URL (or REDIS_HOST, REDIS_PORT, REDIS_PASSWORD) at a reachable one"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_is_taken_as_http() {
        for (given, base) in [
            ("127.0.0.1:9090", "http://127.0.0.1:9090"),
            ("localhost:9090/", "http://localhost:9090"),
            ("http://h:1", "http://h:1"),
            ("https://h:1/", "https://h:1"),
            (" [::1]:9090 ", "http://[::1]:9090"),
        ] {
            assert_eq!(api_base(given), base, "{given}");
        }
    }
}
