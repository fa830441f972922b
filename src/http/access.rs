//! Who may use the HTTP server: the API token, Bearer or session cookie, and which routes need it.
//!
//! | route | loopback `--listen` | any other address |
//! |---|---|---|
//! | `/healthz`, `/readyz`, `/login`, `/assets/*` | open | open |
//! | `/metrics` | open | token, unless `--metrics-without-token` |
//! | every other `GET`/`HEAD` | open | token |
//! | anything else (writes) | token, always | token, always |
//!
//! A token is given in `Authorization: Bearer <token>` or by the `hemostat_session` cookie
//! the login form sets (HttpOnly, SameSite=Strict). Without a configured token, writes are
//! refused. [`Access::resolve`] refuses a non-loopback address without a token unless
//! `--insecure-no-auth` is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

/// The name of the session cookie set by the login form.
pub(crate) const COOKIE: &str = "hemostat_session";

/// Why the access settings are unusable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccessError {
    /// A non-loopback address without a token.
    #[error(
        "--listen {0} is reachable from other hosts: give an API token (--api-token-file or HEMOSTAT_API_TOKEN), or pass --insecure-no-auth to serve it to anyone"
    )]
    NoToken(SocketAddr),
    /// The token file cannot be read.
    #[error("cannot read --api-token-file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token holds a character a cookie cannot carry.
    #[error(
        "the API token from {from} holds {bad:?}; use printable ASCII without spaces, quotes, commas, semicolons or backslashes"
    )]
    BadToken {
        /// Where it came from.
        from: String,
        /// The first bad character.
        bad: char,
    },
    /// The token is empty or too short.
    #[error("the API token from {from} is {len} characters long; use at least 16")]
    ShortToken {
        /// Where it came from.
        from: String,
        /// Its length.
        len: usize,
    },
}

/// The access rules in force.
#[derive(Clone, Debug, Default)]
pub struct Access {
    token: Option<Arc<str>>,
    /// Reads need the token too (the address is not loopback).
    reads_need_token: bool,
    /// `/metrics` is open even when reads need the token.
    metrics_open: bool,
}

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing.
    Open,
    /// A valid token.
    Token,
}

impl Access {
    /// Open to anyone: what tests and a loopback address without a token get.
    #[cfg(test)]
    pub(crate) fn open() -> Self {
        Self::default()
    }

    /// The rules for `listen`, with the token from `token_file` or `token_env` (the file wins).
    pub(crate) fn resolve(
        listen: SocketAddr,
        token_file: Option<&Path>,
        token_env: Option<String>,
        insecure_no_auth: bool,
        metrics_without_token: bool,
    ) -> Result<Self, AccessError> {
        let token = match (token_file, token_env) {
            (Some(path), _) => {
                let raw =
                    std::fs::read_to_string(path).map_err(|source| AccessError::TokenFile {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Some(checked(raw.trim(), &path.display().to_string())?)
            }
            (None, Some(raw)) => Some(checked(raw.trim(), "HEMOSTAT_API_TOKEN")?),
            (None, None) => None,
        };
        let loopback = listen.ip().is_loopback();
        if !loopback && token.is_none() && !insecure_no_auth {
            return Err(AccessError::NoToken(listen));
        }
        Ok(Self {
            reads_need_token: !loopback && token.is_some(),
            token: token.map(Into::into),
            metrics_open: metrics_without_token,
        })
    }

    /// Whether a token is configured.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether reads need the token.
    pub(crate) fn reads_need_token(&self) -> bool {
        self.reads_need_token
    }

    /// What `method path` needs under these rules.
    pub(crate) fn need(&self, method: &Method, path: &str) -> Need {
        let read = method == Method::GET || method == Method::HEAD;
        if path == "/login" || (read && (path == "/healthz" || path == "/readyz")) {
            return Need::Open;
        }
        if !read {
            return Need::Token;
        }
        if path.starts_with("/assets/") || !self.reads_need_token {
            return Need::Open;
        }
        if path == "/metrics" && self.metrics_open {
            return Need::Open;
        }
        Need::Token
    }

    /// Whether `candidate` is the token (in time independent of where they differ).
    pub(crate) fn is_token(&self, candidate: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), candidate.as_bytes()))
    }

    /// Whether the request carries the token, as a Bearer header or the session cookie.
    pub(crate) fn authorised(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|t| self.is_token(t.trim())) {
            return true;
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && self.is_token(v))
    }

    /// The `Set-Cookie` value after a successful login.
    pub(crate) fn session_cookie(&self) -> Option<String> {
        self.token
            .as_deref()
            .map(|t| format!("{COOKIE}={t}; HttpOnly; SameSite=Strict; Path=/; Max-Age=2592000"))
    }
}

fn checked(token: &str, from: &str) -> Result<String, AccessError> {
    // The cookie carries the token: keep it to characters a cookie value may hold.
    let len = token.chars().count();
    if len < 16 {
        return Err(AccessError::ShortToken {
            from: from.to_owned(),
            len,
        });
    }
    if let Some(bad) = token
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, ';' | ',' | '"' | '\\'))
    {
        return Err(AccessError::BadToken {
            from: from.to_owned(),
            bad,
        });
    }
    Ok(token.to_owned())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: lets a request through or answers 401/403 (a browser asking for a page is
/// sent to the login form instead).
pub(crate) async fn guard(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let need = access.need(request.method(), request.uri().path());
    if need == Need::Open || access.authorised(request.headers()) {
        return next.run(request).await;
    }
    if !access.has_token() {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({"error": "writes need an API token: start the operator with --api-token-file or HEMOSTAT_API_TOKEN"})),
        )
            .into_response();
    }
    let wants_page = request.method() == Method::GET
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    if wants_page {
        return Redirect::to("/login").into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"hemostat\"")],
        axum::Json(serde_json::json!({"error": "this needs the API token: send Authorization: Bearer <token>, or log in at /login"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-token";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_non_loopback_address_needs_a_token_unless_insecure() {
        let err = Access::resolve(addr("0.0.0.0:9090"), None, None, false, false).unwrap_err();
        assert!(err.to_string().contains("--insecure-no-auth"), "{err}");
        assert!(Access::resolve(addr("0.0.0.0:9090"), None, None, true, false).is_ok());
        assert!(Access::resolve(addr("127.0.0.1:9090"), None, None, false, false).is_ok());
        assert!(Access::resolve(addr("[::1]:9090"), None, None, false, false).is_ok());
        let short = Access::resolve(addr("0.0.0.0:1"), None, Some("abc".into()), false, false);
        assert!(matches!(short, Err(AccessError::ShortToken { len: 3, .. })));
    }

    #[test]
    fn the_token_comes_from_the_file_before_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
        let a = Access::resolve(
            addr("0.0.0.0:1"),
            Some(&file),
            Some("another-token-from-env".into()),
            false,
            false,
        )
        .unwrap();
        assert!(a.is_token(TOKEN));
        assert!(!a.is_token("another-token-from-env"));
        let missing = Access::resolve(
            addr("0.0.0.0:1"),
            Some(&dir.path().join("no")),
            None,
            false,
            false,
        );
        assert!(matches!(missing, Err(AccessError::TokenFile { .. })));
    }

    #[test]
    fn what_each_route_needs() {
        let remote =
            Access::resolve(addr("0.0.0.0:1"), None, Some(TOKEN.into()), false, false).unwrap();
        let remote_metrics =
            Access::resolve(addr("0.0.0.0:1"), None, Some(TOKEN.into()), false, true).unwrap();
        let local =
            Access::resolve(addr("127.0.0.1:1"), None, Some(TOKEN.into()), false, false).unwrap();
        let insecure = Access::resolve(addr("0.0.0.0:1"), None, None, true, false).unwrap();
        use Need::{Open, Token};
        let get = Method::GET;
        let post = Method::POST;
        let table: [(&Access, &Method, &str, Need); 16] = [
            (&remote, &get, "/healthz", Open),
            (&remote, &get, "/readyz", Open),
            (&remote, &get, "/login", Open),
            (&remote, &post, "/login", Open),
            (&remote, &get, "/assets/app.js", Open),
            (&remote, &get, "/", Token),
            (&remote, &get, "/api/v1/containers", Token),
            (&remote, &get, "/api/v1/events", Token),
            (&remote, &get, "/metrics", Token),
            (&remote_metrics, &get, "/metrics", Open),
            (&remote_metrics, &get, "/api/v1/audit", Token),
            (&local, &get, "/", Open),
            (&local, &get, "/metrics", Open),
            (&local, &post, "/api/v1/silences", Token),
            (&insecure, &get, "/api/v1/containers", Open),
            (&insecure, &Method::DELETE, "/api/v1/policies/x", Token),
        ];
        for (access, method, path, want) in table {
            assert_eq!(
                access.need(method, path),
                want,
                "{method} {path} {access:?}"
            );
        }
    }

    #[test]
    fn a_bearer_header_or_the_session_cookie_carries_the_token() {
        let a = Access::resolve(addr("0.0.0.0:1"), None, Some(TOKEN.into()), false, false).unwrap();
        let with = |name: header::HeaderName, value: String| {
            let mut h = HeaderMap::new();
            h.insert(name, value.parse().unwrap());
            h
        };
        assert!(a.authorised(&with(header::AUTHORIZATION, format!("Bearer {TOKEN}"))));
        assert!(!a.authorised(&with(header::AUTHORIZATION, "Bearer wrong".into())));
        assert!(!a.authorised(&with(header::AUTHORIZATION, TOKEN.into())));
        assert!(a.authorised(&with(
            header::COOKIE,
            format!("theme=dark; {COOKIE}={TOKEN}")
        )));
        assert!(!a.authorised(&with(header::COOKIE, format!("{COOKIE}=nope"))));
        assert!(!a.authorised(&HeaderMap::new()));
        let cookie = a.session_cookie().unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(!Access::open().is_token(""));
    }
}
