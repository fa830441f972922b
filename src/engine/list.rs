//! The engine's container list over a Unix socket, decoded into only the fields a resync reads.
//!
//! A resync lists every container every 30 s. bollard decodes each list entry whole (ports,
//! mounts, every network's endpoint settings), which at 1000 containers cost 50 ms of CPU and
//! some 3 MB of short-lived heap per list, most of the operator's idle cost
//! (docs/BENCHMARKS.md §9d). This reads the same `GET /containers/json` on a connection of its
//! own and keeps id, names, labels, state and status; every other field is skipped unread.
//! Engines behind TCP, TLS or SSH are still listed through bollard.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bollard::errors::Error as BollardError;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde::Deserialize;

use crate::model::container::{ContainerState, ContainerSummary};

/// One entry of the engine's list, as far as HemoStat reads it.
#[derive(Debug, Deserialize)]
pub(super) struct Listed {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Names", default)]
    pub names: Option<Vec<String>>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "State", default)]
    pub state: Option<String>,
    #[serde(rename = "Status", default)]
    pub status: Option<String>,
}

impl Listed {
    /// The summary a resync compares with the last inspection.
    pub(super) fn summary(self) -> ContainerSummary {
        let name = self
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        let status = self.status.as_deref().unwrap_or_default();
        ContainerSummary {
            id: self.id,
            name,
            labels: self.labels.unwrap_or_default(),
            state: state_of(self.state.as_deref().unwrap_or_default()),
            health: ContainerSummary::health_of_status(status),
            up_for: crate::model::uptime::UptimeBounds::of_status(status),
        }
    }
}

/// The list's `State` word; `stopping`, empty or unknown words are `Unknown` (not a state to
/// act on).
fn state_of(word: &str) -> ContainerState {
    match word {
        "created" => ContainerState::Created,
        "running" => ContainerState::Running,
        "restarting" => ContainerState::Restarting,
        "paused" => ContainerState::Paused,
        "exited" => ContainerState::Exited,
        "dead" => ContainerState::Dead,
        "removing" => ContainerState::Removing,
        _ => ContainerState::Unknown,
    }
}

/// Lists containers over the engine's Unix socket.
#[derive(Clone, Debug)]
pub(super) struct UnixLister {
    socket: PathBuf,
}

impl UnixLister {
    /// A lister for `endpoint` when it is a Unix socket (`unix:///var/run/docker.sock`).
    pub(super) fn of_endpoint(endpoint: &str) -> Option<UnixLister> {
        let path = endpoint.strip_prefix("unix://")?;
        Some(UnixLister {
            socket: PathBuf::from(path),
        })
    }

    /// `GET /v{api}/containers/json?all=1`, with the label filter when given. Errors are
    /// bollard's, so that they classify as the calls bollard makes do.
    pub(super) async fn list(
        &self,
        api_version: &str,
        label_filter: Option<&str>,
    ) -> Result<Vec<ContainerSummary>, BollardError> {
        let body = self.get(&list_path(api_version, label_filter)).await?;
        // Decoded from the chunks as they came: no copy of the whole list into one buffer
        // (about 0.8 MB at 1000 containers, beside the chunks themselves).
        let listed: Vec<Listed> = serde_json::from_reader(hyper::body::Buf::reader(body))?;
        Ok(listed.into_iter().map(Listed::summary).collect())
    }

    /// The body of a `GET` of `path`, on a new connection (one every resync: nothing to pool).
    async fn get(&self, path: &str) -> Result<impl hyper::body::Buf + use<>, BollardError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => {
                    BollardError::SocketNotFoundError(self.socket.display().to_string())
                }
                _ => BollardError::IOError { err },
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        // The connection is driven beside the request and ends with it.
        let driven = tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?;
        drop(sender);
        driven.abort();
        if !status.is_success() {
            return Err(BollardError::DockerResponseServerError {
                status_code: status.as_u16(),
                message: engine_message(&body.to_bytes()),
            });
        }
        Ok(body.aggregate())
    }
}

/// The request path: every container, only those with the label when a filter is given.
fn list_path(api_version: &str, label_filter: Option<&str>) -> String {
    let mut path = format!("/v{api_version}/containers/json?all=1");
    if let Some(label) = label_filter {
        let filters = serde_json::json!({ "label": [label] }).to_string();
        path.push_str("&filters=");
        path.extend(percent_encoding::utf8_percent_encode(
            &filters,
            percent_encoding::NON_ALPHANUMERIC,
        ));
    }
    path
}

/// The engine's error text (`{"message": "…"}`), or the body as it came.
fn engine_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    serde_json::from_slice::<Message>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::container::HealthStatus;

    #[test]
    fn a_list_entry_keeps_what_a_resync_reads_and_skips_the_rest() {
        // An entry as Docker 20.10 writes it (ports, mounts and networks skipped unread).
        let json = r#"[{"Id":"abc","Names":["/web"],"Image":"busybox","ImageID":"sha256:1",
            "Command":"sleep 1","Created":1,"Ports":[{"PrivatePort":80,"Type":"tcp"}],
            "Labels":{"hsx":"1","team":"a"},"State":"running","Status":"Up 3 minutes (healthy)",
            "HostConfig":{"NetworkMode":"default"},"NetworkSettings":{"Networks":{"bridge":
            {"IPAMConfig":null,"Links":null,"Aliases":null,"NetworkID":"n","EndpointID":"e",
            "Gateway":"172.17.0.1","IPAddress":"172.17.0.2","IPPrefixLen":16,"DriverOpts":null}}},
            "Mounts":[]},
            {"Id":"def","Names":null,"Labels":null,"State":"stopping","Status":""}]"#;
        let listed: Vec<Listed> = serde_json::from_str(json).unwrap();
        let summaries: Vec<ContainerSummary> = listed.into_iter().map(Listed::summary).collect();
        let web = &summaries[0];
        assert_eq!(
            (web.id.as_str(), web.name.as_str(), web.state, web.health),
            ("abc", "web", ContainerState::Running, HealthStatus::Healthy)
        );
        assert_eq!(web.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(
            web.up_for.map(|b| b.min.as_secs()),
            Some(180),
            "the uptime is read from the status text"
        );
        let bare = &summaries[1];
        assert_eq!(
            (bare.name.as_str(), bare.state, bare.health, bare.up_for),
            ("", ContainerState::Unknown, HealthStatus::None, None)
        );
        assert!(bare.labels.is_empty());
    }

    #[test]
    fn the_label_filter_is_percent_encoded_json() {
        assert_eq!(list_path("1.41", None), "/v1.41/containers/json?all=1");
        assert_eq!(
            list_path("1.41", Some("hsx=1")),
            "/v1.41/containers/json?all=1&filters=%7B%22label%22%3A%5B%22hsx%3D1%22%5D%7D"
        );
    }

    #[test]
    fn only_a_unix_endpoint_is_listed_here() {
        assert!(UnixLister::of_endpoint("unix:///var/run/docker.sock").is_some());
        assert!(UnixLister::of_endpoint("tcp://127.0.0.1:2375").is_none());
        assert!(UnixLister::of_endpoint("ssh://host").is_none());
    }
}
