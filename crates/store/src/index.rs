//! A JSON file read once into memory and changed atomically: the pattern behind
//! `snapshots.json` and `images.json`. A change edits a copy, the copy is written (temp file,
//! fsync, rename, fsync dir) and only then becomes the index, under a lock, so concurrent
//! changes in one process are all kept and a crash leaves the old or the new file, never half.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub struct JsonIndex<T> {
    path: PathBuf,
    data: Mutex<T>,
}

impl<T: Serialize + DeserializeOwned + Clone + Default> JsonIndex<T> {
    /// Read `path` (a missing file is an empty index).
    pub fn open(path: PathBuf) -> io::Result<JsonIndex<T>> {
        let data = match fs::read(&path) {
            Ok(d) => serde_json::from_slice(&d).map_err(|e| io::Error::other(format!("parsing {}: {e}", path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => T::default(),
            Err(e) => return Err(e),
        };
        Ok(JsonIndex { path, data: Mutex::new(data) })
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A consistent copy.
    pub fn get(&self) -> T {
        self.lock().clone()
    }

    /// `f` of the index as it is, for a look at part of it without copying the whole.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.lock())
    }

    /// Apply `f` to a copy, write it, and make it the index. If `f` or the write fails
    /// (`write_err` maps the latter), nothing changes.
    pub fn update<R, E>(&self, f: impl FnOnce(&mut T) -> Result<R, E>, write_err: impl FnOnce(io::Error) -> E) -> Result<R, E> {
        let mut guard = self.lock();
        let mut next = guard.clone();
        let out = f(&mut next)?;
        let written = serde_json::to_vec_pretty(&next).map_err(io::Error::other).and_then(|d| write_atomic(&self.path, &d));
        written.map_err(write_err)?;
        *guard = next;
        Ok(out)
    }

    /// Apply `f` to the index in memory only, for parts of `T` that are not serialised (so the
    /// file would not change): nothing is written. If `f` fails, nothing changes.
    pub fn update_in_memory<R, E>(&self, f: impl FnOnce(&mut T) -> Result<R, E>) -> Result<R, E> {
        let mut guard = self.lock();
        let mut next = guard.clone();
        let out = f(&mut next)?;
        *guard = next;
        Ok(out)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Replace `path` with `data` durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    berth_atomic::write_file(path, data, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_change_changes_nothing_and_a_good_one_survives_reopening() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("index.json");
        let idx: JsonIndex<Vec<u32>> = JsonIndex::open(p.clone()).unwrap();
        idx.update(
            |v| -> io::Result<()> {
                v.push(1);
                Ok(())
            },
            |e| e,
        )
        .unwrap();
        let failed: io::Result<()> = idx.update(
            |v| {
                v.push(2);
                Err(io::Error::other("no"))
            },
            |e| e,
        );
        assert!(failed.is_err());
        assert_eq!(idx.get(), vec![1]);
        assert_eq!(JsonIndex::<Vec<u32>>::open(p).unwrap().get(), vec![1]);
        let names: Vec<_> = fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["index.json"], "no temp file left");
    }
}
