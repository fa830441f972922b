//! A JSON file read whole and replaced atomically: a crash at any moment leaves the old or the
//! new content on disk, never a torn one.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Result, StoreError};

/// Reads the JSON at `path`, creating its directory when missing: the default when there is no
/// file yet, [`StoreError::Corrupt`] when it holds something else, [`StoreError::Persist`] when
/// it cannot be read.
pub(crate) fn read_json_or_default<T: DeserializeOwned + Default>(path: &Path) -> Result<T> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Persist {
            path: dir.display().to_string(),
            source,
        })?;
    }
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            path: path.display().to_string(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(StoreError::Persist {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Writes `value` as JSON to `<path>.tmp` (the extension replaced by `json.tmp`), syncs it,
/// then renames it over `path`.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    write_bytes_atomic(path, &bytes)
}

/// [`write_json_atomic`] of bytes already serialised.
pub(crate) fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_missing_file_reads_as_the_default_and_its_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        let read: BTreeMap<String, u32> = read_json_or_default(&path).unwrap();
        assert!(read.is_empty());
        assert!(dir.path().join("sub").is_dir());
    }

    #[test]
    fn what_is_written_reads_back_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let value = BTreeMap::from([("a".to_owned(), 1u32)]);
        write_json_atomic(&path, &value).unwrap();
        write_json_atomic(&path, &value).unwrap();
        assert_eq!(
            read_json_or_default::<BTreeMap<String, u32>>(&path).unwrap(),
            value
        );
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn a_file_that_is_not_the_expected_json_is_corrupt_not_a_silent_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = read_json_or_default::<BTreeMap<String, u32>>(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_a_persist_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        let err =
            read_json_or_default::<BTreeMap<String, u32>>(&file.join("state.json")).unwrap_err();
        assert!(matches!(err, StoreError::Persist { .. }), "{err}");
    }
}
