//! Webhook URLs and signing keys: resolved from an environment variable or a file, never
//! printed (`Debug` and `Display` say `<redacted>`), never in an error.

use crate::policy::SecretRef;

/// A secret value. Its only way out is [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one call that needs it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret could not be read; names where it was looked for, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set or empty.
    #[error(
        "environment variable {0} is not set (or empty): export it in the operator's environment"
    )]
    MissingEnv(String),
    /// The file could not be read or is empty.
    #[error("secret file {path}: {reason}: mount the secret there, readable by the operator")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Reads a secret reference now.
pub(crate) fn resolve(reference: &SecretRef) -> Result<Secret, SecretError> {
    match reference {
        SecretRef::Env(name) => match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
            _ => Err(SecretError::MissingEnv(name.clone())),
        },
        SecretRef::File(path) => match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
            Ok(_) => Err(SecretError::File {
                path: path.clone(),
                reason: "empty".into(),
            }),
            Err(e) => Err(SecretError::File {
                path: path.clone(),
                reason: e.kind().to_string(),
            }),
        },
    }
}

/// Where a reference points, for logs: `env SLACK_WEBHOOK_URL` or `file /run/secrets/x`.
pub(crate) fn describe(reference: &SecretRef) -> String {
    match reference {
        SecretRef::Env(name) => format!("env {name}"),
        SecretRef::File(path) => format!("file {path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("https://hooks.slack.com/services/T0/B0/XYZ");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "https://hooks.slack.com/services/T0/B0/XYZ");
    }

    #[test]
    fn a_missing_secret_names_where_it_was_looked_for() {
        let e = resolve(&SecretRef::Env("HEMOSTAT_TEST_NO_SUCH_VAR".into())).unwrap_err();
        assert!(e.to_string().contains("HEMOSTAT_TEST_NO_SUCH_VAR"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cret\n").unwrap();
        let got = resolve(&SecretRef::File(path.display().to_string())).unwrap();
        assert_eq!(got.expose(), "s3cret");
    }
}
