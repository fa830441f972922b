//! The only modules that talk to third-party services; each implements one trait of the core.

pub(crate) mod alertmanager;
pub mod llm;
pub mod redis;
pub(crate) mod slack;
pub(crate) mod webhook;

use std::sync::Arc;
use std::time::Duration;

use crate::alert::channels::ChannelSpec;
use crate::alert::notify::Notifier;
use crate::alert::secret::{SecretError, resolve};

/// The HTTP client every notifier shares: rustls, a timeout per request, no redirects (a
/// redirect could carry a webhook token elsewhere).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hemostat/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds")
}

/// The notifier for a channel, its secrets read now.
pub fn notifier_for(
    spec: &ChannelSpec,
    client: &reqwest::Client,
    timeout: Duration,
) -> Result<Arc<dyn Notifier>, SecretError> {
    Ok(match spec {
        ChannelSpec::Slack { url } => Arc::new(slack::SlackNotifier::new(
            client.clone(),
            resolve(url)?,
            timeout,
        )),
        ChannelSpec::Webhook { url, key } => Arc::new(webhook::WebhookNotifier::new(
            client.clone(),
            resolve(url)?,
            key.as_ref().map(resolve).transpose()?,
            timeout,
        )),
        ChannelSpec::Alertmanager { url } => Arc::new(alertmanager::AlertmanagerNotifier::new(
            client.clone(),
            url,
            timeout,
        )),
    })
}

/// Sends a POST and maps any answer but 2xx to a [`crate::alert::notify::NotifyError`].
pub(crate) async fn post(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<String, crate::alert::notify::NotifyError> {
    use crate::alert::notify::NotifyError;
    let response = request
        .send()
        .await
        .map_err(|e| NotifyError::from_reqwest(e, timeout))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .text()
        .await
        .map_err(|e| NotifyError::from_reqwest(e, timeout))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(NotifyError::from_status(status, &headers, &body))
    }
}
