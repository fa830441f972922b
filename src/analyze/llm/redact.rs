//! Removes obvious secrets from text sent to a model (log lines, label values): pure.

/// What replaces a secret.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// Key names whose values are secrets (`password=…`, `"api_key": "…"`, `Authorization: …`).
const SECRET_KEYS: [&str; 12] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "authorization",
    "credential",
    "private_key",
    "access_key",
];

/// Prefixes of well-known credential formats (OpenAI/Anthropic keys, GitHub, Slack, AWS).
const SECRET_PREFIXES: [&str; 8] = [
    "sk-",
    "sk_",
    "ghp_",
    "gho_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "AKIA",
];

/// True when a label or field name says its value is a secret.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|k| key.contains(k))
}

/// One line with obvious secrets replaced by `[REDACTED]`: values of secret-named keys
/// (`key=v`, `key: v`, `"key": "v"`), bearer/basic credentials, passwords in URLs, and tokens
/// of well-known formats. Conservative: it may redact too much, never on purpose too little.
pub(crate) fn redact_line(line: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut redact_next = false;
    for word in line.split(' ') {
        let scheme = matches!(word.to_ascii_lowercase().as_str(), "bearer" | "basic");
        if redact_next && !word.is_empty() && !scheme {
            out.push(redact_word_value(word));
            redact_next = false;
            continue;
        }
        let (w, next) = redact_word(word);
        redact_next = next;
        out.push(w);
    }
    out.join(" ")
}

/// Keeps the punctuation around a value that is replaced.
fn redact_word_value(word: &str) -> String {
    let trailing: String = word
        .chars()
        .rev()
        .take_while(|c| matches!(c, ',' | ';' | '}' | ']' | ')'))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let quote = if word.starts_with('"') { "\"" } else { "" };
    let close = if quote.is_empty() { "" } else { "\"" };
    format!("{quote}{REDACTED}{close}{trailing}")
}

/// Redacts one space-separated word; the flag says the next word is a secret value
/// (`password: hunter2`, `Bearer abc`).
fn redact_word(word: &str) -> (String, bool) {
    let lower = word.to_ascii_lowercase();
    let bare = lower.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if bare == "bearer" || bare == "basic" {
        return (word.to_owned(), true);
    }
    // key=value or key:value inside one word.
    for sep in ['=', ':'] {
        if let Some(at) = word.find(sep) {
            let (key, value) = (&word[..at], &word[at + 1..]);
            if is_secret_key(key) {
                if value.trim_matches('"').is_empty() {
                    return (word.to_owned(), true);
                }
                return (format!("{key}{sep}{}", redact_word_value(value)), false);
            }
        }
    }
    if let Some(scheme) = word.find("://") {
        let rest = &word[scheme + 3..];
        if let (Some(colon), Some(at)) = (rest.find(':'), rest.find('@'))
            && colon < at
        {
            let user = &rest[..colon];
            return (
                format!("{}{user}:{REDACTED}{}", &word[..scheme + 3], &rest[at..]),
                false,
            );
        }
    }
    let token = word.trim_matches(|c: char| "\"'(),;[]{}".contains(c));
    if token.len() >= 12 && SECRET_PREFIXES.iter().any(|p| token.starts_with(p)) {
        return (word.replace(token, REDACTED), false);
    }
    (word.to_owned(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obvious_secrets_are_redacted_and_the_rest_is_kept() {
        let cases = [
            ("listening on :8080", "listening on :8080"),
            ("password=hunter2 user=bob", "password=[REDACTED] user=bob"),
            ("DB_PASSWORD: hunter2", "DB_PASSWORD: [REDACTED]"),
            (
                r#"{"api_key": "abc123", "n": 1}"#,
                r#"{"api_key": "[REDACTED]", "n": 1}"#,
            ),
            (
                "Authorization: Bearer eyJhbGciOi.x.y",
                "Authorization: Bearer [REDACTED]",
            ),
            ("sent Bearer eyJhbGciOi.x.y ok", "sent Bearer [REDACTED] ok"),
            (
                "connect postgres://app:s3cr3t@db:5432/x failed",
                "connect postgres://app:[REDACTED]@db:5432/x failed",
            ),
            ("key sk-proj-abcdefghijklmnop used", "key [REDACTED] used"),
            ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED]"),
            ("token=", "token="),
            ("auth_token= abc", "auth_token= [REDACTED]"),
        ];
        for (line, want) in cases {
            assert_eq!(redact_line(line), want, "{line}");
        }
    }

    #[test]
    fn secret_keys_are_recognised_case_insensitively() {
        for key in [
            "DB_PASSWORD",
            "io.example.api-key",
            "GITHUB_TOKEN",
            "Secret",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["app", "role", "com.docker.compose.service"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
