//! Contexts kept between builds (berth's CLI): under a key the client derives from its
//! context's path, the daemon keeps the context's files and the manifest the client sent with
//! them. The client asks for the manifest, sends only what changed with the new manifest, and
//! the daemon deletes what the manifest no longer lists. A cached rebuild then moves and
//! unpacks nothing, and the files' digests are remembered (`Known`): nothing unchanged is read
//! again. A delta that fails to apply removes the kept context, so the next build sends all.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_api::{ApiError, Kind};
use berth_build::context::Known;

/// The manifest's name inside a delta's tar (the client's list of every path, first entry).
pub(super) const MANIFEST_ENTRY: &str = ".berth-context.json";

#[derive(Default)]
pub(crate) struct Sessions {
    /// One build at a time per kept context.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    known: Mutex<HashMap<String, Known>>,
}

/// A kept context locked for one build.
pub(super) struct Held {
    pub dir: PathBuf,
    pub known: Known,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

fn root(data_root: &Path) -> PathBuf {
    data_root.join("builder").join("sessions")
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(Kind::Internal, e.to_string())
}

impl Sessions {
    fn lock_of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(m.entry(key.to_string()).or_default())
    }

    fn known_of(&self, key: &str) -> Known {
        let mut m = self.known.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(m.entry(key.to_string()).or_default())
    }

    /// The manifest kept for `key` (an empty one when nothing is kept).
    pub(super) fn manifest(&self, data_root: &Path, key: &str) -> serde_json::Value {
        let path = root(data_root).join(key).join("manifest.json");
        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_else(|| serde_json::json!({}))
    }

    /// Apply the delta `tar` to the context kept for `key`; returns it locked for the build.
    pub(super) async fn receive(&self, data_root: &Path, key: &str, body: berth_api::params::ByteStream) -> Result<Held, ApiError> {
        let lock = self.lock_of(key).lock_owned().await;
        let base = root(data_root).join(key);
        let dir = base.join("ctx");
        let known = self.known_of(key);
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
        let (d, b) = (dir.clone(), base.clone());
        let k = Arc::clone(&known);
        let applied = tokio::task::spawn_blocking(move || apply(&b, &d, reader)).await.map_err(internal)?;
        if let Err(e) = applied {
            // What is kept is no longer known to match the client's manifest: start over.
            let _ = std::fs::remove_dir_all(&base);
            k.lock().unwrap_or_else(|p| p.into_inner()).clear();
            return Err(e);
        }
        Ok(Held { dir, known, _lock: lock })
    }

    /// Remove every kept context no build holds; returns the keys and bytes removed.
    pub(super) fn prune(&self, data_root: &Path) -> (Vec<String>, u64) {
        let mut removed = (Vec::new(), 0);
        for e in std::fs::read_dir(root(data_root)).into_iter().flatten().flatten() {
            let key = e.file_name().to_string_lossy().into_owned();
            let lock = self.lock_of(&key);
            let Ok(_held) = lock.try_lock() else { continue };
            let size = du(&e.path());
            if std::fs::remove_dir_all(e.path()).is_ok() {
                self.known.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                removed.0.push(key);
                removed.1 += size;
            }
        }
        removed
    }

    /// Kept contexts and their sizes, for `system df`.
    pub(super) fn list(&self, data_root: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
        std::fs::read_dir(root(data_root))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let when = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                (e.file_name().to_string_lossy().into_owned(), du(&e.path()), when)
            })
            .collect()
    }
}

fn du(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else { return 0 };
    if !md.is_dir() {
        return md.len();
    }
    std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| du(&e.path())).sum()
}

/// Unpack the delta into `dir`, then delete what the manifest it carries does not list, and
/// keep the manifest.
fn apply(base: &Path, dir: &Path, reader: impl std::io::Read) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::new(Kind::InvalidArgument, m);
    std::fs::create_dir_all(dir).map_err(|e| internal(format!("creating {}: {e}", dir.display())))?;
    let input = berth_store::archive::decompress(std::io::BufReader::with_capacity(1 << 20, reader))
        .map_err(|e| bad(format!("the build context: {e}")))?;
    berth_build::context::unpack_context(input, dir, berth_build::context::CONTEXT_LIMITS).map_err(|e| bad(e.to_string()))?;
    let mpath = dir.join(MANIFEST_ENTRY);
    // Read inside the context only: the client's entry could be a symlink to anything.
    let bytes = super::read_in_context(dir, MANIFEST_ENTRY, 64 << 20)
        .map_err(bad)?
        .ok_or_else(|| bad(format!("the context's delta has no {MANIFEST_ENTRY}")))?;
    std::fs::remove_file(&mpath).map_err(internal)?;
    let manifest: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("{MANIFEST_ENTRY}: {e}")))?;
    let listed: BTreeSet<&str> = manifest.keys().map(String::as_str).collect();
    prune_unlisted(dir, "", &listed)?;
    let tmp = base.join("manifest.json.tmp");
    std::fs::write(&tmp, &bytes).map_err(internal)?;
    std::fs::rename(&tmp, base.join("manifest.json")).map_err(internal)
}

/// Delete what is under `dir/rel` and not in `listed` (paths relative to the context).
fn prune_unlisted(dir: &Path, rel: &str, listed: &BTreeSet<&str>) -> Result<(), ApiError> {
    let here = if rel.is_empty() { dir.to_path_buf() } else { dir.join(rel) };
    for e in std::fs::read_dir(&here).map_err(internal)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !listed.contains(path.as_str()) {
            let r = if is_dir { std::fs::remove_dir_all(e.path()) } else { std::fs::remove_file(e.path()) };
            r.map_err(|err| internal(format!("removing {path} from the kept context: {err}")))?;
        } else if is_dir {
            prune_unlisted(dir, &path, listed)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_manifest_no_longer_lists_goes() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for f in ["keep/a", "keep/gone", "old/x", "top"] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), "x").unwrap();
        }
        let listed: BTreeSet<&str> = ["keep", "keep/a", "top"].into_iter().collect();
        prune_unlisted(d, "", &listed).unwrap();
        assert!(d.join("keep/a").exists() && d.join("top").exists());
        assert!(!d.join("keep/gone").exists() && !d.join("old").exists());
    }
}
