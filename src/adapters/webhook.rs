//! `alert::Notifier` for generic JSON webhooks: `{"version", "kind": "AlertGroup", "sentAt",
//! "alerts": [Alert…]}` (each alert with its envelope), signed with HMAC-SHA256 when a key is
//! configured.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::json;

use crate::alert::Alert;
use crate::alert::notify::{Notifier, NotifyError};
use crate::alert::secret::Secret;

/// The header holding `sha256=<hex>`.
pub(crate) const SIGNATURE_HEADER: &str = "X-Hemostat-Signature";
/// The header holding the Unix time (seconds) that was signed with the body.
pub(crate) const TIMESTAMP_HEADER: &str = "X-Hemostat-Timestamp";
/// The body's `version`.
pub(crate) const VERSION: &str = "hemostat.io/v1alpha1";

/// `sha256=` + hex of `HMAC-SHA256(key, "<timestamp>.<body>")`: what a receiver recomputes.
pub(crate) fn signature(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The body for a group of alerts.
pub(crate) fn body(alerts: &[Alert], sent_at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": VERSION,
        "kind": "AlertGroup",
        "sentAt": sent_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "alerts": alerts,
    }))
    .expect("alerts serialise")
}

/// Posts alert groups to one URL.
pub(crate) struct WebhookNotifier {
    client: reqwest::Client,
    url: Secret,
    key: Option<Secret>,
    timeout: Duration,
}

impl WebhookNotifier {
    /// A notifier for `url`, signing with `key` when given.
    pub(crate) fn new(
        client: reqwest::Client,
        url: Secret,
        key: Option<Secret>,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            url,
            key,
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl Notifier for WebhookNotifier {
    async fn send(&self, alerts: &[Alert]) -> Result<(), NotifyError> {
        let now = chrono::Utc::now();
        let body = body(alerts, now);
        let timestamp = now.timestamp().to_string();
        let mut request = self
            .client
            .post(self.url.expose())
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, &timestamp);
        if let Some(key) = &self.key {
            request = request.header(
                SIGNATURE_HEADER,
                signature(key.expose().as_bytes(), &timestamp, &body),
            );
        }
        super::post(request.body(body), self.timeout)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_timestamp_dot_body() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"Jefe", b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"Jefe", "1700000000", br#"{"a":1}"#),
            "sha256=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }

    #[test]
    fn the_body_carries_every_alert_with_its_fields() {
        let v: serde_json::Value =
            serde_json::from_slice(&body(&[Alert::test("n1")], chrono::Utc::now())).unwrap();
        assert_eq!(v["kind"], "AlertGroup");
        assert_eq!(v["alerts"][0]["node"], "n1");
        assert_eq!(v["alerts"][0]["kind"], "test");
    }
}
