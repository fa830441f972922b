//! Policies applied through Redis (kubectl-style `apply`/`get`/`delete`/`diff`) and the watcher that enforces them.
//!
//! Storage:
//!
//! | key | type | content |
//! |---|---|---|
//! | [`POLICIES_KEY`] `hemostat:policies` | hash | field = policy name, value = the YAML text of that one document as applied (`status` stripped) |
//! | [`META_KEY`] `hemostat:policies:meta` | hash | field = policy name, value = JSON [`PolicyMeta`] (`generation`, `appliedAt`) |
//! | [`CHANGED_CHANNEL`] `hemostat:policies:changed` | pub/sub | the name of every policy created, configured or deleted |
//!
//! Everything read back from Redis is untrusted (anyone who reaches Redis can `HSET`
//! garbage): [`watch_policies`] validates each stored document again and an invalid one never
//! replaces the last good version of its name.
//!
//! On a name clash between a policy from the operator's files (`base`) and one applied
//! through Redis, **the Redis one wins**: `hemostat apply` is the fleet-wide, most recent
//! intent, while files are each node's bootstrap set.
//!
//! `apply` writes both hashes in one Lua script and `delete` in one `MULTI`: on a Redis
//! Cluster both keys carry the `{hemostat}` hash tag (see [`super::keys::tagged`]), so they
//! share a slot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, Target, subscribe_with_backoff};
use crate::util::backoff::Backoff;
use tracing::{debug, info, warn};

use super::keys::APPLY_SCRIPT;
pub use super::keys::{CHANGED_CHANNEL, META_KEY, POLICIES_KEY};
pub(crate) use crate::policy::diff::{canonical_yaml, unified_diff};
use crate::policy::documents::split_documents;
use crate::policy::load::{Diagnostic, LoadReport, MAX_FILE_BYTES, load_bytes, load_str};
use crate::policy::registry::PolicyRegistry;
pub(crate) use crate::policy::source::compose;
use crate::policy::types::HealthPolicy;

/// How often the watcher re-reads everything even without a change message.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// How many times an apply is recomputed when the policies change under it.
const APPLY_ATTEMPTS: u64 = 20;
/// How long the watcher waits for Redis to answer a read before reconnecting.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The given text is not a valid set of policies; nothing was written.
    #[error("{}", format_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
    /// Redis could not be reached or answered an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

fn format_diagnostics(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `apply` did to one policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did not exist.
    Created,
    /// It existed and differed (semantically); it was replaced.
    Configured,
    /// It existed and is semantically equal; nothing was written.
    Unchanged,
}

impl Outcome {
    /// `created`, `configured` or `unchanged`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
        }
    }
}

/// Bookkeeping stored next to each applied policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMeta {
    /// 1 when created, +1 on each change.
    pub generation: u64,
    /// When it was last created or configured (written with `+00:00`; read naive, `Z` or
    /// with an offset).
    #[serde(with = "crate::model::wire::wire_time")]
    pub applied_at: DateTime<Utc>,
}

/// One policy as stored in Redis.
#[derive(Clone, Debug)]
pub struct StoredPolicy {
    /// The hash field.
    pub name: String,
    /// The stored text, as applied.
    pub text: String,
    /// Its metadata, when present and readable.
    pub meta: Option<PolicyMeta>,
    /// The stored text validated again: the policy, or why it is not one.
    pub parsed: Result<HealthPolicy, Vec<Diagnostic>>,
}

/// How one policy of a file compares with what is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DiffKind {
    /// Not stored yet.
    Created,
    /// Stored and semantically equal.
    Unchanged,
    /// Stored and different.
    Changed,
}

/// The comparison of one given policy with the stored one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct PolicyDiff {
    /// The policy's name.
    pub name: String,
    /// Created, unchanged or changed.
    pub kind: DiffKind,
    /// A unified-style diff of the canonical YAML (`--- live/NAME`, `+++ applied/NAME`,
    /// `@@` hunks); empty when unchanged.
    pub diff: String,
}

/// The source name used in diagnostics about a stored policy (control characters escaped).
pub fn stored_source(name: &str) -> String {
    format!("redis:{POLICIES_KEY}/{}", printable(name))
}

pub(crate) use crate::util::printable::printable;

/// Validates a stored value: exactly one valid document whose name is the hash field.
pub fn validate_stored(name: &str, bytes: &[u8]) -> Result<HealthPolicy, Vec<Diagnostic>> {
    let source = stored_source(name);
    let whole = |message: String| {
        vec![Diagnostic {
            file: source.clone(),
            line: 1,
            column: 1,
            message,
            policy: Some(printable(name).into_owned()),
        }]
    };
    if let Err(why) = crate::policy::validate::check_dns_name(name) {
        // The hash field names the policy: one that is not a policy name (control characters,
        // escapes) is refused before anything of it is used.
        return Err(whole(format!(
            "stored under a field that is not a policy name: {}",
            printable(&why)
        )));
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(whole(format!(
            "stored value is {} bytes; at most {MAX_FILE_BYTES} are accepted",
            bytes.len()
        )));
    }
    let report = load_bytes(&source, bytes);
    if !report.is_clean() {
        return Err(report.diagnostics);
    }
    let mut policies = report.policies;
    if policies.len() != 1 {
        return Err(whole(format!(
            "stored value holds {} documents; exactly one HealthPolicy is expected",
            policies.len()
        )));
    }
    let mut policy = policies.remove(0).policy;
    if policy.metadata.name != name {
        return Err(whole(format!(
            "stored under {:?} but metadata.name is {:?}",
            printable(name),
            policy.metadata.name
        )));
    }
    policy.status = None;
    Ok(policy)
}

/// The applied policies in Redis.
#[derive(Clone)]
pub struct PolicyRepo {
    /// The connection (reconnects by itself).
    pub conn: Conn,
}

impl PolicyRepo {
    /// Connects with short timeouts and few retries (for command-line use), and checks that
    /// Redis answers.
    pub async fn connect(target: impl Into<Target>) -> Result<Self, RemoteError> {
        let target = target.into();
        let mut conn = super::conn::connect(target.config(), 1, Duration::from_secs(5))?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(Self { conn })
    }

    fn policies_key(&self) -> String {
        self.conn.key(POLICIES_KEY)
    }

    fn meta_key(&self) -> String {
        self.conn.key(META_KEY)
    }

    /// Validates every document of `text` (named `source` in diagnostics) and stores each
    /// policy. Anything invalid: [`RemoteError::Invalid`] with every diagnostic, and nothing
    /// is written. Changes are written at once (a Lua compare-and-set: when someone else
    /// changed one of these policies between the read and the write, the whole apply is
    /// recomputed) and each changed name is published on [`CHANGED_CHANNEL`].
    pub async fn apply(
        &mut self,
        source: &str,
        text: &str,
    ) -> Result<Vec<(String, Outcome)>, RemoteError> {
        let docs = validated_documents(source, text)?;
        let names: Vec<&str> = docs
            .iter()
            .map(|d| d.policy.metadata.name.as_str())
            .collect();
        let script = redis::Script::new(APPLY_SCRIPT);
        let mut attempt: u64 = 0;
        loop {
            attempt += 1;
            let stored: Vec<Option<Vec<u8>>> = self.fetch(&self.policies_key(), &names).await?;
            let metas: Vec<Option<String>> = self.fetch(&self.meta_key(), &names).await?;
            let now = Utc::now();
            let mut invocation = script.prepare_invoke();
            invocation
                .key(self.policies_key())
                .key(self.meta_key())
                .arg(CHANGED_CHANNEL);
            let mut outcomes = Vec::new();
            let mut writes = 0usize;
            for ((doc, old), meta) in docs.iter().zip(stored).zip(metas) {
                let name = doc.policy.metadata.name.clone();
                let previous = old.as_deref().map(|b| validate_stored(&name, b));
                let outcome = match previous {
                    None => Outcome::Created,
                    Some(Ok(p)) if p == doc.policy => Outcome::Unchanged,
                    Some(_) => Outcome::Configured,
                };
                if outcome != Outcome::Unchanged {
                    let generation = meta
                        .and_then(|m| serde_json::from_str::<PolicyMeta>(&m).ok())
                        .filter(|_| outcome == Outcome::Configured)
                        .map_or(1, |m| m.generation + 1);
                    let meta = PolicyMeta {
                        generation,
                        applied_at: now,
                    };
                    let meta = serde_json::to_string(&meta).unwrap_or_default();
                    invocation
                        .arg(&name)
                        .arg(if old.is_some() { "1" } else { "0" })
                        .arg(old.unwrap_or_default())
                        .arg(&doc.text)
                        .arg(meta);
                    writes += 1;
                }
                outcomes.push((name, outcome));
            }
            if writes == 0 {
                return Ok(outcomes);
            }
            let written: i64 = invocation.invoke_async(&mut self.conn).await?;
            if written == 1 || attempt >= APPLY_ATTEMPTS {
                if written != 1 {
                    return Err(RemoteError::Redis(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "these policies keep changing under this apply; try again",
                    ))));
                }
                return Ok(outcomes);
            }
            debug!(attempt, "policies changed during apply; recomputing");
            // Jitter, so that concurrent appliers do not keep colliding.
            let jitter = (uuid::Uuid::new_v4().as_u128() % 20) as u64 + 1;
            tokio::time::sleep(Duration::from_millis(jitter * attempt)).await;
        }
    }

    /// One stored policy, if there is one by that name.
    pub async fn get(&mut self, name: &str) -> Result<Option<StoredPolicy>, RemoteError> {
        let (policies, meta_key) = (self.policies_key(), self.meta_key());
        let text: Option<Vec<u8>> = self.conn.hget(policies, name).await?;
        let Some(bytes) = text else {
            return Ok(None);
        };
        let meta: Option<String> = self.conn.hget(meta_key, name).await?;
        Ok(Some(stored(name.to_owned(), bytes, meta)))
    }

    /// Every stored policy, by name.
    pub async fn list(&mut self) -> Result<Vec<StoredPolicy>, RemoteError> {
        let (policies, meta_key) = (self.policies_key(), self.meta_key());
        let all: BTreeMap<String, Vec<u8>> = self.conn.hgetall(policies).await?;
        let mut metas: BTreeMap<String, String> = self.conn.hgetall(meta_key).await?;
        Ok(all
            .into_iter()
            .map(|(name, bytes)| {
                let meta = metas.remove(&name);
                stored(name, bytes, meta)
            })
            .collect())
    }

    /// Deletes a policy; false when there was none by that name.
    pub async fn delete(&mut self, name: &str) -> Result<bool, RemoteError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(self.policies_key(), name)
            .hdel(self.meta_key(), name)
            .ignore();
        self.conn.publish_in(&mut pipe, CHANGED_CHANNEL, name);
        let (removed,): (u64,) = pipe.query_async(&mut self.conn).await?;
        Ok(removed > 0)
    }

    /// Compares every policy of `text` with the stored one (kubectl diff: policies stored
    /// but not in `text` are not reported). Invalid text: [`RemoteError::Invalid`].
    pub(crate) async fn diff(
        &mut self,
        source: &str,
        text: &str,
    ) -> Result<Vec<PolicyDiff>, RemoteError> {
        let docs = validated_documents(source, text)?;
        let names: Vec<&str> = docs
            .iter()
            .map(|d| d.policy.metadata.name.as_str())
            .collect();
        let stored: Vec<Option<Vec<u8>>> = self.fetch(&self.policies_key(), &names).await?;
        Ok(docs
            .iter()
            .zip(stored)
            .map(|(doc, old)| {
                let name = doc.policy.metadata.name.clone();
                let new = canonical_yaml(&doc.policy);
                let (kind, old_text) = match old.as_deref().map(|b| validate_stored(&name, b)) {
                    None => (DiffKind::Created, String::new()),
                    Some(Ok(p)) if p == doc.policy => (DiffKind::Unchanged, String::new()),
                    Some(Ok(p)) => (DiffKind::Changed, canonical_yaml(&p)),
                    // An invalid stored value: compare with its raw text.
                    Some(Err(_)) => (
                        DiffKind::Changed,
                        String::from_utf8_lossy(old.as_deref().unwrap_or_default()).into_owned(),
                    ),
                };
                let diff = if kind == DiffKind::Unchanged {
                    String::new()
                } else {
                    unified_diff(
                        &format!("live/{name}"),
                        &format!("applied/{name}"),
                        &old_text,
                        &new,
                    )
                };
                PolicyDiff { name, kind, diff }
            })
            .collect())
    }

    async fn fetch<T: redis::FromRedisValue>(
        &mut self,
        key: &str,
        names: &[&str],
    ) -> Result<Vec<Option<T>>, RemoteError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(key);
        for name in names {
            cmd.arg(*name);
        }
        Ok(cmd.query_async(&mut self.conn).await?)
    }
}

fn stored(name: String, bytes: Vec<u8>, meta: Option<String>) -> StoredPolicy {
    StoredPolicy {
        parsed: validate_stored(&name, &bytes),
        meta: meta.and_then(|m| serde_json::from_str(&m).ok()),
        text: String::from_utf8_lossy(&bytes).into_owned(),
        name,
    }
}

/// One valid document of an applied text, with the text to store for it.
struct Document {
    policy: HealthPolicy,
    text: String,
}

/// Validates the whole text; on success, pairs each policy with its own document text
/// (or its canonical YAML when the document carried a `status`, which is never stored).
fn validated_documents(source: &str, text: &str) -> Result<Vec<Document>, RemoteError> {
    let report: LoadReport = load_str(source, text);
    if !report.is_clean() {
        return Err(RemoteError::Invalid(report.diagnostics));
    }
    let chunks: Vec<&str> = split_documents(text).iter().map(|c| c.body()).collect();
    let mut docs = Vec::new();
    for (i, loaded) in report.policies.into_iter().enumerate() {
        let mut policy = loaded.policy;
        let had_status = policy.status.take().is_some();
        // The document's own text, when it maps one to one and parses to the same policy.
        let own = chunks.get(i).filter(|_| !had_status).and_then(|chunk| {
            let again = load_str(source, chunk);
            (again.is_clean() && again.policies.len() == 1 && again.policies[0].policy == policy)
                .then(|| (*chunk).to_owned())
        });
        let text = own.unwrap_or_else(|| canonical_yaml(&policy));
        docs.push(Document { policy, text });
    }
    Ok(docs)
}

/// Keeps the registry equal to `base ∪ remote` (see [`compose`]); see [`watch_policies_with`].
pub async fn watch_policies(
    client: impl Into<Target>,
    registry: Arc<PolicyRegistry>,
    base: Vec<HealthPolicy>,
    shutdown: CancellationToken,
) {
    let (_keep, rx) = watch::channel(base);
    watch_policies_with(client, registry, rx, shutdown).await;
}

/// Like [`watch_policies`], with a base set that may change (e.g. a file hot-reloader sends
/// each new valid file set on `base`).
///
/// Reads every stored policy, subscribes to [`CHANGED_CHANNEL`] and re-reads everything on
/// each message, every [`POLL_INTERVAL`], after each reconnect and when `base` changes. A
/// stored document that is invalid is logged (warn) and never replaces the last good version
/// of its name; a deleted one is removed. While Redis is unreachable the last known set stays
/// in force and the watcher reconnects with backoff (up to 30 s). Returns on `shutdown`.
pub(crate) async fn watch_policies_with(
    client: impl Into<Target>,
    registry: Arc<PolicyRegistry>,
    mut base: watch::Receiver<Vec<HealthPolicy>>,
    shutdown: CancellationToken,
) {
    let target: Target = client.into();
    let reads = match super::conn::connect(target.config(), 1, READ_TIMEOUT) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, "policy watcher cannot set up its Redis connection; only the file policies are in force");
            return;
        }
    };
    let policies_key = reads.key(POLICIES_KEY);
    let mut state = WatchState::default();
    let mut backoff = Backoff::default();
    let mut base_open = true;
    loop {
        let Some((mut messages, mut conn)) = subscribe_with_backoff(
            &target,
            CHANGED_CHANNEL,
            "policy watcher cannot reach Redis; keeping the policies in force",
            &mut backoff,
            &shutdown,
            || async { Ok(reads.clone()) },
        )
        .await
        else {
            return;
        };
        info!(channel = CHANGED_CHANNEL, "policy watcher subscribed");
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the initial (or post-reconnect) full read.
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = poll.tick() => {}
                msg = messages.next() => match msg {
                    Some(msg) => debug!(policy = ?msg.get_payload::<String>().ok(), "policy change announced"),
                    None => {
                        warn!("policy watcher lost its Redis subscription; reconnecting");
                        break;
                    }
                },
                changed = base.changed(), if base_open => {
                    if changed.is_err() { base_open = false; continue; }
                }
            }
            let read = tokio::time::timeout(READ_TIMEOUT, conn.hgetall(&policies_key));
            let all: BTreeMap<String, Vec<u8>> = tokio::select! {
                () = shutdown.cancelled() => return,
                r = read => match r {
                    Ok(Ok(all)) => all,
                    Ok(Err(e)) if !super::conn::is_connection_error(&e) => {
                        // Redis answered with an error (hemostat:policies is not a hash…): the
                        // connection is fine, reconnecting would only storm. Reported once,
                        // read again at the next poll.
                        crate::store::report_bad_value(
                            &policies_key,
                            &e.to_string(),
                            "policies in force kept; read again every poll",
                        );
                        continue;
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "cannot read applied policies from Redis; keeping the policies in force and reconnecting");
                        break;
                    }
                    Err(_) => {
                        warn!(timeout = ?READ_TIMEOUT, "Redis did not answer; keeping the policies in force and reconnecting");
                        break;
                    }
                },
            };
            state.update(all);
            let set = compose(&base.borrow(), &state.good);
            if registry.snapshot().as_slice() != set.as_slice() {
                let names: Vec<&str> = set.iter().map(|p| p.metadata.name.as_str()).collect();
                info!(policies = ?names, "policies in force updated");
                registry.replace(set);
            }
        }
    }
}

#[derive(Default)]
struct WatchState {
    /// The last good version of each stored policy.
    good: BTreeMap<String, HealthPolicy>,
    /// The raw value last seen per name, so an unchanged bad value is warned about once.
    seen: BTreeMap<String, Vec<u8>>,
}

impl WatchState {
    fn update(&mut self, all: BTreeMap<String, Vec<u8>>) {
        let present: BTreeSet<&String> = all.keys().collect();
        self.good.retain(|name, _| {
            let keep = present.contains(name);
            if !keep {
                info!(policy = %printable(name), "applied policy deleted");
            }
            keep
        });
        self.seen.retain(|name, _| present.contains(name));
        for (name, bytes) in &all {
            if self.seen.get(name) == Some(bytes) {
                continue;
            }
            self.seen.insert(name.clone(), bytes.clone());
            match validate_stored(name, bytes) {
                Ok(policy) => {
                    self.good.insert(name.clone(), policy);
                }
                Err(diagnostics) => {
                    let kept = self.good.contains_key(name);
                    for d in &diagnostics {
                        warn!(policy = %printable(name), keeping_last_good = kept, "invalid applied policy in Redis: {d}");
                    }
                }
            }
        }
    }
}
