//! Keeps the restarts seen of each container in `<state-dir>/restarts.json`, so that a
//! restarted operator shows the same counts and still sees a loop that began before it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::observe::store::{ObservedStore, RestartHistory};
use crate::store::atomic_file::{read_json_or_default, write_json_atomic};

/// The file's name in the state directory.
pub(crate) const FILE: &str = "restarts.json";

/// How often the histories are written when they changed (a SIGKILL loses at most this much;
/// restarts in between are still found from the engine's `StartedAt` and `RestartCount`).
pub(crate) const EVERY: Duration = Duration::from_secs(1);

type Histories = BTreeMap<String, RestartHistory>;

/// What an earlier operator left; nothing (with a warning) when the file is unreadable or
/// corrupt: counts start again rather than the operator refusing to start.
pub(crate) fn load(state_dir: &Path) -> Histories {
    let path = state_dir.join(FILE);
    read_json_or_default(&path).unwrap_or_else(|e| {
        warn!(error = %e, "the restart counts of the last run cannot be read: they start from 0");
        Histories::default()
    })
}

/// Writes the histories whenever they changed, and once more at shutdown.
pub(crate) fn spawn_keeper(
    observed: Arc<ObservedStore>,
    state_dir: &Path,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut keeper = Keeper {
        path: state_dir.join(FILE),
        written: None,
        failing: false,
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => keeper.keep(&observed),
                () = shutdown.cancelled() => break,
            }
        }
        keeper.keep(&observed);
    })
}

struct Keeper {
    path: PathBuf,
    /// The digest of what the file holds ([`ObservedStore::histories_digest`]), to write only
    /// on change: comparing digests copies nothing (a copy of every history each second was
    /// a seventh of the operator's CPU time at 1000 containers).
    written: Option<u64>,
    /// The last write failed (warned once until one succeeds).
    failing: bool,
}

impl Keeper {
    /// Writes the histories of `observed` if they changed since the last write.
    fn keep(&mut self, observed: &ObservedStore) {
        let digest = observed.histories_digest();
        if self.written != Some(digest) {
            self.write(digest, &observed.histories());
        }
    }

    fn write(&mut self, digest: u64, histories: &Histories) {
        match write_json_atomic(&self.path, histories) {
            Ok(()) => {
                self.written = Some(digest);
                self.failing = false;
            }
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(path = %self.path.display(), error = %e, "cannot keep the restart counts: a restarted operator will count from 0");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_kept_loads_back_and_a_corrupt_file_loads_as_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let history = RestartHistory {
            restarts: [chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()].into(),
            restart_count: 1,
            ran_before: true,
            ..RestartHistory::default()
        };
        let mut keeper = Keeper {
            path: dir.path().join(FILE),
            written: None,
            failing: false,
        };
        keeper.write(1, &Histories::from([("c1".to_owned(), history.clone())]));
        assert_eq!(
            load(dir.path()),
            Histories::from([("c1".to_owned(), history)])
        );
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(load(dir.path()).is_empty());
    }

    #[test]
    fn the_file_is_written_again_only_when_a_history_changed() {
        use crate::model::container::{ContainerEvent, EventAction};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let observed = ObservedStore::default();
        let mut info = crate::engine::fake::running("web", &[]);
        info.restart_count = 0;
        observed.upsert(info.clone(), chrono::Utc::now());
        let mut keeper = Keeper {
            path: path.clone(),
            written: None,
            failing: false,
        };
        keeper.keep(&observed);
        assert!(load(dir.path()).contains_key(&info.id));
        // Unchanged: not written again (the file removed by hand stays removed).
        std::fs::remove_file(&path).unwrap();
        keeper.keep(&observed);
        keeper.keep(&observed);
        assert!(!path.exists());
        // A restart seen: written again, with it.
        let start = ContainerEvent {
            action: EventAction::Start,
            container_id: info.id.clone(),
            name: info.name.clone(),
            labels: BTreeMap::new(),
            time: chrono::Utc::now() + chrono::Duration::seconds(5),
            exit_code: None,
            signal: None,
        };
        observed.apply_event(&start, &crate::observe::acting::Acting::default());
        keeper.keep(&observed);
        assert_eq!(load(dir.path())[&info.id].restarts.len(), 1);
        // Forgotten: written again without it.
        observed.remove(&info.id);
        keeper.keep(&observed);
        assert!(load(dir.path()).is_empty());
    }
}
