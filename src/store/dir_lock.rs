//! One operator per state directory: an advisory lock on `<state-dir>/hemostat.lock`, held for
//! the life of the process and released by the kernel when it ends, even by SIGKILL.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file's name inside the state directory.
pub(crate) const LOCK_FILE: &str = "hemostat.lock";

/// Why the state directory cannot be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirLockError {
    /// Another process holds the lock.
    #[error(
        "another HemoStat operator{} is already using --state-dir {dir}: two operators on one \
         state directory would overwrite each other's cooldowns, breakers and audit; stop it, \
         or give this one its own --state-dir (HEMOSTAT_STATE_DIR)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held {
        /// The state directory.
        dir: String,
        /// The holder's process id, as it wrote it in the lock file (when it could be read).
        pid: Option<u32>,
    },
    /// The lock file cannot be created or locked.
    #[error(
        "cannot lock {path} ({source}): the state directory must be writable, on a filesystem \
         with file locks"
    )]
    Io {
        /// The lock file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The state directory, held: dropping it (or the process ending) releases the lock.
#[derive(Debug)]
pub(crate) struct DirLock {
    /// Kept open: the lock lives as long as this descriptor.
    _file: File,
    /// The lock file (shown by `Debug`, read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    path: PathBuf,
}

impl DirLock {
    /// Takes `dir` (created when missing) for this process, or says who holds it. Never waits.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, DirLockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| DirLockError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(DirLockError::Held {
                    dir: dir.display().to_string(),
                    pid: holder_pid(&path),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // For the message a second operator shows; the lock itself is what excludes it.
        file.set_len(0).map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid the holder wrote, when there is one yet.
fn holder_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = DirLock::acquire(&state).unwrap();
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
        // A second open file description conflicts even within one process.
        let err = DirLock::acquire(&state).unwrap_err();
        assert!(
            matches!(&err, DirLockError::Held { pid: Some(p), .. } if *p == std::process::id()),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&state.display().to_string()), "{text}");
        assert!(
            text.contains(&format!("(pid {})", std::process::id())),
            "{text}"
        );
        drop(first);
        DirLock::acquire(&state).unwrap();
    }

    #[test]
    fn a_state_directory_that_cannot_be_created_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        let err = DirLock::acquire(&file.join("state")).unwrap_err();
        assert!(matches!(err, DirLockError::Io { .. }), "{err}");
    }
}
