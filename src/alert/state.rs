//! Where silences are kept: the `AlertState` trait, and its state-dir file implementation
//! (the Redis one, shared by a fleet, is `adapters::redis::alert_state`).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::silence::Silence;

/// Expired silences are listed this long, then forgotten.
pub(crate) const KEEP_EXPIRED: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Errors of an alert state store.
#[derive(Debug, thiserror::Error)]
pub enum AlertStateError {
    /// The silences file could not be read or written.
    #[error("silences file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The silences file or a stored silence is not what HemoStat writes.
    #[error("silences in {place} are corrupt: {source}")]
    Corrupt {
        /// The file or key.
        place: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The shared store did not answer.
    #[error("redis {op}: {source}")]
    Unavailable {
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Silences, shared by whoever reads and writes them.
#[async_trait::async_trait]
pub trait AlertState: Send + Sync + 'static {
    /// Every silence (active, pending, and expired within [`KEEP_EXPIRED`]).
    async fn silences(&self) -> Result<Vec<Silence>, AlertStateError>;
    /// Stores a new silence.
    async fn add_silence(&self, silence: Silence) -> Result<(), AlertStateError>;
    /// Ends a silence now; `None` when there is no such id.
    async fn expire_silence(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Silence>, AlertStateError>;
}

/// Silences in `<state-dir>/silences.json`, written atomically (temp file, fsync, rename), read
/// afresh on every call so the CLI and a running operator see each other's changes.
#[derive(Debug)]
pub struct FileAlertState {
    path: PathBuf,
    /// Serialises this process's read-modify-write cycles.
    lock: tokio::sync::Mutex<()>,
}

impl FileAlertState {
    /// Keeps silences under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("silences.json"),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn io(&self, source: std::io::Error) -> AlertStateError {
        AlertStateError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn read(&self) -> Result<Vec<Silence>, AlertStateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| AlertStateError::Corrupt {
                    place: self.path.display().to_string(),
                    source,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io(e)),
        }
    }

    fn write(&self, silences: &[Silence]) -> Result<(), AlertStateError> {
        use std::io::Write as _;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let body = serde_json::to_vec_pretty(silences).expect("silences serialise");
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))
    }
}

/// Drops silences expired for longer than [`KEEP_EXPIRED`].
pub(crate) fn prune(silences: &mut Vec<Silence>, now: DateTime<Utc>) {
    silences.retain(|s| now - s.ends_at < KEEP_EXPIRED);
}

#[async_trait::async_trait]
impl AlertState for FileAlertState {
    async fn silences(&self) -> Result<Vec<Silence>, AlertStateError> {
        self.read()
    }

    async fn add_silence(&self, silence: Silence) -> Result<(), AlertStateError> {
        let _guard = self.lock.lock().await;
        let mut all = self.read()?;
        prune(&mut all, Utc::now());
        all.push(silence);
        self.write(&all)
    }

    async fn expire_silence(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Silence>, AlertStateError> {
        let _guard = self.lock.lock().await;
        let mut all = self.read()?;
        let Some(s) = all.iter_mut().find(|s| s.id == id) else {
            return Ok(None);
        };
        if s.ends_at > now {
            s.ends_at = now;
        }
        let out = s.clone();
        self.write(&all)?;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn silences_survive_a_new_reader_and_expire_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let s = Silence::new(
            Some("web-*".into()),
            None,
            None,
            std::time::Duration::from_secs(3600),
            "deploy".into(),
            "me".into(),
            now,
        )
        .unwrap();
        FileAlertState::new(dir.path())
            .add_silence(s.clone())
            .await
            .unwrap();
        let other = FileAlertState::new(dir.path());
        assert_eq!(other.silences().await.unwrap(), vec![s.clone()]);
        let expired = other.expire_silence(&s.id, now).await.unwrap().unwrap();
        assert!(!expired.is_active(now));
        assert!(other.expire_silence("nope", now).await.unwrap().is_none());
        assert!(!FileAlertState::new(dir.path()).silences().await.unwrap()[0].is_active(now));
    }
}
