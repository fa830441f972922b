//! Channels: from each policy's `spec.alerts.channels`, and the original's environment
//! (`SLACK_WEBHOOK_URL`, `ALERT_ENABLED`, `ALERT_DEDUPE_TTL`) as an operator-wide Slack channel.
//! Names never hold a secret: `web-api/slack`, `web-api/webhook-2`, `operator/slack`.

use std::time::Duration;

use crate::policy::{Alerts, Channel, HealthPolicy, HumanDuration, SecretRef};

/// The name of the operator-wide channel from `SLACK_WEBHOOK_URL`.
pub(crate) const OPERATOR_CHANNEL: &str = "operator/slack";

/// Where a channel delivers.
#[derive(Clone, Debug, PartialEq)]
pub enum ChannelSpec {
    /// A Slack incoming webhook.
    Slack {
        /// The webhook URL's reference.
        url: SecretRef,
    },
    /// A generic JSON webhook.
    Webhook {
        /// The URL's reference.
        url: SecretRef,
        /// The HMAC key's reference.
        key: Option<SecretRef>,
    },
    /// An Alertmanager.
    Alertmanager {
        /// Its base URL.
        url: String,
    },
}

impl ChannelSpec {
    /// From a policy's channel.
    pub(crate) fn from_policy(channel: &Channel) -> Self {
        match channel {
            Channel::Slack(s) => Self::Slack {
                url: s.webhook_url_from.clone(),
            },
            Channel::Webhook(w) => Self::Webhook {
                url: w.url_from.clone(),
                key: w.secret_from.clone(),
            },
            Channel::Alertmanager(a) => Self::Alertmanager { url: a.url.clone() },
        }
    }

    /// `slack`, `webhook` or `alertmanager`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Slack { .. } => "slack",
            Self::Webhook { .. } => "webhook",
            Self::Alertmanager { .. } => "alertmanager",
        }
    }

    /// What makes two channels the same destination (references, not secret values), so two
    /// policies naming one webhook share one queue, one rate limit and one group.
    pub(crate) fn identity(&self) -> String {
        let r = |s: &SecretRef| crate::alert::secret::describe(s);
        match self {
            Self::Slack { url } => format!("slack {}", r(url)),
            Self::Webhook { url, key } => {
                format!(
                    "webhook {} {}",
                    r(url),
                    key.as_ref().map(r).unwrap_or_default()
                )
            }
            Self::Alertmanager { url } => format!("alertmanager {url}"),
        }
    }

    /// Messages per second allowed (Slack: about one per webhook).
    pub(crate) fn per_second(&self) -> u32 {
        match self {
            Self::Slack { .. } => 1,
            Self::Webhook { .. } | Self::Alertmanager { .. } => 10,
        }
    }
}

/// One channel with the alert settings of the policy (or environment) that declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelConfig {
    /// Its name.
    pub name: String,
    /// Where it delivers.
    pub spec: ChannelSpec,
    /// What is sent to it and how often (its `channels` field is not used).
    pub alerts: Alerts,
}

/// The channels a policy declares, named `<policy>/<kind>` (`-N` from the second of a kind).
pub(crate) fn policy_channels(policy: &HealthPolicy) -> Vec<ChannelConfig> {
    let alerts = &policy.spec.alerts;
    let mut seen: Vec<&'static str> = Vec::new();
    alerts
        .channels
        .iter()
        .map(|c| {
            let spec = ChannelSpec::from_policy(c);
            let kind = spec.kind();
            seen.push(kind);
            let n = seen.iter().filter(|k| **k == kind).count();
            let name = if n == 1 {
                format!("{}/{kind}", policy.metadata.name)
            } else {
                format!("{}/{kind}-{n}", policy.metadata.name)
            };
            ChannelConfig {
                name,
                spec,
                alerts: Alerts {
                    channels: Vec::new(),
                    ..alerts.clone()
                },
            }
        })
        .collect()
}

/// What the original's environment asks for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OperatorAlerts {
    /// `ALERT_ENABLED` (default true): false turns every notification off.
    pub enabled: bool,
    /// The `SLACK_WEBHOOK_URL` channel, when set.
    pub channel: Option<ChannelConfig>,
}

/// A bad value in the alert environment.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?}: {expected}")]
pub(crate) struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// Its value (never a secret: only ALERT_ENABLED and ALERT_DEDUPE_TTL are parsed).
    pub value: String,
    /// What would be right.
    pub expected: &'static str,
}

/// Reads `ALERT_ENABLED`, `ALERT_DEDUPE_TTL` and whether `SLACK_WEBHOOK_URL` is set through
/// `get` (the process environment in `hemostat run`).
pub(crate) fn operator_alerts(
    get: impl Fn(&str) -> Option<String>,
) -> Result<OperatorAlerts, EnvError> {
    let enabled = match get("ALERT_ENABLED").map(|v| v.trim().to_ascii_lowercase()) {
        None => true,
        Some(v) if v.is_empty() || ["1", "true", "yes", "on"].contains(&v.as_str()) => true,
        Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => false,
        Some(v) => {
            return Err(EnvError {
                name: "ALERT_ENABLED",
                value: v,
                expected: "use true or false",
            });
        }
    };
    let dedupe = match get("ALERT_DEDUPE_TTL") {
        None => Duration::from_secs(60),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => v
                .trim()
                .parse::<HumanDuration>()
                .map(|d| d.get())
                .map_err(|_| EnvError {
                    name: "ALERT_DEDUPE_TTL",
                    value: v.clone(),
                    expected: "seconds (60) or a duration (1m)",
                })?,
        },
    };
    let channel = get("SLACK_WEBHOOK_URL")
        .filter(|v| !v.trim().is_empty())
        .map(|_| ChannelConfig {
            name: OPERATOR_CHANNEL.to_owned(),
            spec: ChannelSpec::Slack {
                url: SecretRef::Env("SLACK_WEBHOOK_URL".into()),
            },
            alerts: Alerts {
                dedupe_for: HumanDuration::from(dedupe),
                ..Alerts::default()
            },
        });
    Ok(OperatorAlerts { enabled, channel })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_originals_environment_makes_an_operator_wide_slack_channel() {
        let none = operator_alerts(env(&[])).unwrap();
        assert!(none.enabled && none.channel.is_none());
        let on = operator_alerts(env(&[
            ("SLACK_WEBHOOK_URL", "https://x"),
            ("ALERT_DEDUPE_TTL", "30"),
        ]))
        .unwrap();
        let ch = on.channel.unwrap();
        assert_eq!(ch.name, OPERATOR_CHANNEL);
        assert_eq!(ch.alerts.dedupe_for.get(), Duration::from_secs(30));
        assert_eq!(
            operator_alerts(env(&[("SLACK_WEBHOOK_URL", "https://x")]))
                .unwrap()
                .channel
                .unwrap()
                .alerts
                .dedupe_for
                .get(),
            Duration::from_secs(60),
            "the original's default"
        );
        assert!(
            !operator_alerts(env(&[("ALERT_ENABLED", "false")]))
                .unwrap()
                .enabled
        );
        assert!(operator_alerts(env(&[("ALERT_ENABLED", "maybe")])).is_err());
        assert!(operator_alerts(env(&[("ALERT_DEDUPE_TTL", "soon")])).is_err());
    }

    #[test]
    fn channels_are_named_by_policy_and_kind_and_never_by_secret() {
        let mut p = crate::policy::builtin::default_policy();
        p.metadata.name = "web".into();
        let slack = || {
            Channel::Slack(crate::policy::SlackChannel {
                webhook_url_from: SecretRef::Env("S".into()),
            })
        };
        p.spec.alerts.channels = vec![
            slack(),
            slack(),
            Channel::Alertmanager(crate::policy::AlertmanagerChannel {
                url: "http://am:9093".into(),
            }),
        ];
        let names: Vec<String> = policy_channels(&p).into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["web/slack", "web/slack-2", "web/alertmanager"]);
    }
}
