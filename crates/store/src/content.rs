//! The content store: blobs addressed by digest under `blobs/sha256/<hex>`, written only through
//! ingests. An ingest (`ingest/<sha256 of its ref>/`) is locked by its writer, hashes as it goes,
//! and is renamed into place only after its size and digest check out, so a blob that exists is
//! always whole and correct. An ingest interrupted by a crash is resumed where it stopped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {0} not found")]
    NotFound(Digest),
    #[error("digest mismatch for {expected}: got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
    #[error("ingest {reference:?} would exceed its expected size of {expected} bytes")]
    TooLarge { reference: String, expected: u64 },
    #[error("ingest {0:?} is being written by another writer")]
    Locked(String),
    #[error("{context} {path}: {source}")]
    Io { context: &'static str, path: PathBuf, source: io::Error },
}

type Result<T> = std::result::Result<T, ContentError>;

fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ContentError {
    let path = path.to_path_buf();
    move |source| ContentError::Io { context, path, source }
}

/// The ingests of [`ContentStore::write_blob`]: never resumed (one cut short starts over), so
/// one that no writer holds is abandoned.
pub const BLOB_INGEST: &str = "blob-";

/// A blob store rooted at a directory (`<data-root>/content`).
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
    /// Blobs writes in flight have stored and not yet recorded, with how many hold each.
    holds: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Digest, usize>>>,
}

/// A blob held by a write in flight (see [`ContentStore::hold`]); let go when dropped.
pub struct Held {
    holds: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Digest, usize>>>,
    digest: Digest,
}

impl Held {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Does another write in flight hold the same blob?
    pub fn shared(&self) -> bool {
        self.holds.lock().unwrap_or_else(|p| p.into_inner()).get(&self.digest).is_some_and(|n| *n > 1)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = holds.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                holds.remove(&self.digest);
            }
        }
    }
}

impl ContentStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<ContentStore> {
        let store = ContentStore { root: root.into(), holds: Default::default() };
        for d in [store.blobs(), store.root.join("ingest")] {
            fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        Ok(store)
    }

    fn blobs(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// Mark `digest` as stored by a write in flight, until the returned guard goes: that write
    /// may then drop what it stored and no image names, and leave what another write holds.
    pub fn hold(&self, digest: &Digest) -> Held {
        *self.holds.lock().unwrap_or_else(|p| p.into_inner()).entry(digest.clone()).or_default() += 1;
        Held { holds: std::sync::Arc::clone(&self.holds), digest: digest.clone() }
    }

    /// Where a committed blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs().join(digest.hex())
    }

    fn ingest_dir(&self, reference: &str) -> PathBuf {
        self.root.join("ingest").join(hex::encode(Sha256::digest(reference.as_bytes())))
    }

    /// Start or resume writing the ingest named `reference`. With `expected` (digest and size,
    /// as a manifest gives them), writes past the size are refused and commit checks both.
    pub fn writer(&self, reference: &str, expected: Option<(Digest, u64)>) -> Result<Writer> {
        let dir = self.ingest_dir(reference);
        fs::create_dir_all(&dir).map_err(io_err("creating ingest", &dir))?;
        let lock_path = dir.join("lock");
        let lock_file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err("opening", &lock_path))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            if e == nix::errno::Errno::EWOULDBLOCK {
                ContentError::Locked(reference.to_string())
            } else {
                ContentError::Io { context: "locking", path: lock_path.clone(), source: e.into() }
            }
        })?;
        // An ingest left for a different expected blob is not ours to resume.
        let expected_text = expected.as_ref().map(|(d, s)| format!("{d} {s}")).unwrap_or_default();
        let expected_path = dir.join("expected");
        let resumable = fs::read_to_string(&expected_path).is_ok_and(|t| t == expected_text);
        let data_path = dir.join("data");
        if !resumable {
            File::create(&data_path).map_err(io_err("creating ingest", &data_path))?;
        }
        let mut file =
            OpenOptions::new().create(true).read(true).append(true).open(&data_path).map_err(io_err("opening ingest", &data_path))?;
        if !resumable {
            fs::write(&expected_path, &expected_text).map_err(io_err("writing", &expected_path))?;
            // Whole or absent: a kill between creating `ref` and writing it left an ingest
            // named "" that no owner check could clear.
            let (tmp, named) = (dir.join("ref.tmp"), dir.join("ref"));
            fs::write(&tmp, reference).and_then(|()| fs::rename(&tmp, &named)).map_err(io_err("writing", &named))?;
        }
        // Resuming: hash what is already there, so the digest covers the whole blob.
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).map_err(io_err("reading ingest", &data_path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        let w = Writer {
            store: self.clone(),
            reference: reference.to_string(),
            dir,
            file,
            hasher,
            offset,
            expected: expected.clone(),
            _lock: lock,
        };
        if let Some((_, size)) = &w.expected
            && w.offset > *size
        {
            w.abort()?;
            return self.writer(reference, expected);
        }
        Ok(w)
    }

    /// Store `data` as one blob (for manifests and configs), checked against `expected`.
    pub fn write_blob(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let digest = Digest::of(data);
        if let Some(e) = expected
            && *e != digest
        {
            return Err(ContentError::DigestMismatch { expected: e.clone(), actual: digest });
        }
        if self.blob_path(&digest).exists() {
            return Ok(digest);
        }
        let mut w = self.writer(&format!("{BLOB_INGEST}{digest}"), Some((digest.clone(), data.len() as u64)))?;
        if w.offset() > 0 {
            w.abort()?;
            w = self.writer(&format!("{BLOB_INGEST}{digest}"), Some((digest.clone(), data.len() as u64)))?;
        }
        w.write_all(data).map_err(io_err("writing ingest", &self.root))?;
        w.commit()
    }

    /// Size of a committed blob.
    pub fn info(&self, digest: &Digest) -> Result<u64> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound(digest.clone())),
            Err(e) => Err(io_err("reading", &p)(e)),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound { ContentError::NotFound(digest.clone()) } else { io_err("opening", &p)(e) }
        })
    }

    /// A whole blob in memory, refusing blobs over `limit` bytes (manifests and configs are small;
    /// a hostile one must not be read into memory whole).
    pub fn read(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let size = self.info(digest)?;
        if size > limit {
            return Err(ContentError::TooLarge { reference: digest.to_string(), expected: limit });
        }
        let p = self.blob_path(digest);
        fs::read(&p).map_err(io_err("reading", &p))
    }

    /// Every committed blob with its size.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let dir = self.blobs();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let e = e.map_err(io_err("listing", &dir))?;
            let Some(d) = e.file_name().to_str().and_then(|n| format!("sha256:{n}").parse::<Digest>().ok()) else { continue };
            let size = e.metadata().map_err(io_err("reading", &e.path()))?.len();
            out.push((d, size));
        }
        out.sort();
        Ok(out)
    }

    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound(digest.clone())),
            Err(e) => Err(io_err("removing", &p)(e)),
        }
    }

    /// Bytes held by committed blobs.
    pub fn usage(&self) -> Result<u64> {
        Ok(self.list()?.iter().map(|(_, s)| s).sum())
    }

    /// Drop an interrupted ingest; one that a live writer holds is left alone (returns false).
    pub fn remove_ingest(&self, reference: &str) -> Result<bool> {
        let dir = self.ingest_dir(reference);
        let lock_path = dir.join("lock");
        let Ok(lock_file) = OpenOptions::new().write(true).open(&lock_path) else {
            return Ok(false);
        };
        let Ok(_lock) = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) else {
            return Ok(false);
        };
        fs::remove_dir_all(&dir).map_err(io_err("removing ingest", &dir))?;
        Ok(true)
    }

    /// Remove ingest directories that a writer killed before it named them (no `ref` file, or
    /// an empty one) and that no writer holds: nothing could ever resume them.
    pub fn remove_unnamed_ingests(&self) -> Result<usize> {
        let dir = self.root.join("ingest");
        let mut removed = 0;
        for e in fs::read_dir(&dir).map_err(io_err("listing", &dir))?.flatten() {
            let path = e.path();
            // An empty name is one a kill cut short (before `ref` was written whole).
            if fs::metadata(path.join("ref")).is_ok_and(|m| m.len() > 0) {
                continue;
            }
            // Held while its writer lives (a writer makes the lock file right after the directory).
            let held = OpenOptions::new()
                .write(true)
                .open(path.join("lock"))
                .ok()
                .is_some_and(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err());
            if !held {
                fs::remove_dir_all(&path).map_err(io_err("removing ingest", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Ingests in flight or interrupted: (reference, bytes written so far).
    pub fn ingests(&self) -> Result<Vec<(String, u64)>> {
        let dir = self.root.join("ingest");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("listing", &dir))?.flatten() {
            let reference = fs::read_to_string(e.path().join("ref")).unwrap_or_default();
            let size = fs::metadata(e.path().join("data")).map(|m| m.len()).unwrap_or(0);
            out.push((reference, size));
        }
        out.sort();
        Ok(out)
    }
}

/// An open ingest. Dropping it without [`Writer::commit`] keeps what was written for a resume.
pub struct Writer {
    store: ContentStore,
    reference: String,
    dir: PathBuf,
    file: File,
    hasher: Sha256,
    offset: u64,
    expected: Option<(Digest, u64)>,
    _lock: Flock<File>,
}

impl Writer {
    /// Bytes written so far (where a resumed download should continue from).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Check size and digest, make the data durable, and move it into the store.
    pub fn commit(mut self) -> Result<Digest> {
        let data = self.dir.join("data");
        self.file.flush().map_err(io_err("flushing", &data))?;
        self.file.sync_all().map_err(io_err("syncing", &data))?;
        let actual = Digest::from_sha256(&self.hasher.clone().finalize().into());
        if let Some((digest, size)) = self.expected.clone() {
            let mismatch = if self.offset != size {
                Some(ContentError::SizeMismatch { digest: digest.clone(), expected: size, actual: self.offset })
            } else if actual != digest {
                Some(ContentError::DigestMismatch { expected: digest, actual: actual.clone() })
            } else {
                None
            };
            if let Some(e) = mismatch {
                // Bad content is never worth resuming.
                self.remove_dir();
                return Err(e);
            }
        }
        let target = self.store.blob_path(&actual);
        fs::rename(&data, &target).map_err(io_err("committing", &target))?;
        let blobs = self.store.blobs();
        File::open(&blobs).and_then(|d| d.sync_all()).map_err(io_err("syncing", &blobs))?;
        self.remove_dir();
        Ok(actual)
    }

    /// Drop the ingest and what it held.
    pub fn abort(self) -> Result<()> {
        self.remove_dir();
        Ok(())
    }

    fn remove_dir(&self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(reference = %self.reference, "removing ingest {}: {e}", self.dir.display());
        }
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some((_, size)) = &self.expected
            && self.offset + buf.len() as u64 > *size
        {
            return Err(io::Error::other(ContentError::TooLarge { reference: self.reference.clone(), expected: *size }));
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path().join("content")).unwrap();
        (t, s)
    }

    #[test]
    fn committed_blob_is_readable_by_digest_and_the_ingest_is_gone() {
        let (_t, s) = store();
        let data = b"hello layer";
        let d = Digest::of(data);
        let mut w = s.writer("layer-1", Some((d.clone(), data.len() as u64))).unwrap();
        w.write_all(data).unwrap();
        assert_eq!(w.commit().unwrap(), d);
        assert_eq!(s.read(&d, 1024).unwrap(), data);
        assert_eq!(s.info(&d).unwrap(), data.len() as u64);
        assert_eq!(s.list().unwrap(), vec![(d.clone(), data.len() as u64)]);
        assert_eq!(s.usage().unwrap(), data.len() as u64);
        assert!(s.ingests().unwrap().is_empty());
        s.delete(&d).unwrap();
        assert!(matches!(s.info(&d), Err(ContentError::NotFound(_))));
    }

    #[test]
    fn wrong_digest_or_size_leaves_no_blob_and_no_ingest() {
        let (_t, s) = store();
        let claimed = Digest::of(b"what the manifest said");
        let mut w = s.writer("bad", Some((claimed.clone(), 5))).unwrap();
        w.write_all(b"other").unwrap();
        assert!(matches!(w.commit(), Err(ContentError::DigestMismatch { .. })));
        let mut w = s.writer("short", Some((claimed, 100))).unwrap();
        w.write_all(b"short").unwrap();
        assert!(matches!(w.commit(), Err(ContentError::SizeMismatch { actual: 5, .. })));
        assert!(s.list().unwrap().is_empty());
        assert!(s.ingests().unwrap().is_empty());
    }

    #[test]
    fn writing_past_the_expected_size_is_refused_at_once() {
        let (_t, s) = store();
        let mut w = s.writer("big", Some((Digest::of(b"abc"), 3))).unwrap();
        let err = w.write_all(b"abcdef").unwrap_err();
        assert!(err.to_string().contains("exceed its expected size of 3"), "{err}");
    }

    #[test]
    fn interrupted_ingest_resumes_where_it_stopped() {
        let (_t, s) = store();
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let d = Digest::of(&data);
        let mut w = s.writer("resume", Some((d.clone(), data.len() as u64))).unwrap();
        w.write_all(&data[..300_000]).unwrap();
        drop(w); // the process dies here
        assert_eq!(s.ingests().unwrap(), vec![("resume".to_string(), 300_000)]);
        let mut w = s.writer("resume", Some((d.clone(), data.len() as u64))).unwrap();
        assert_eq!(w.offset(), 300_000);
        w.write_all(&data[300_000..]).unwrap();
        assert_eq!(w.commit().unwrap(), d);
        // A different expected blob under the same name starts over.
        let mut w = s.writer("resume", Some((d.clone(), 7))).unwrap();
        w.write_all(b"1234").unwrap();
        drop(w);
        let w = s.writer("resume", Some((Digest::of(b"x"), 1))).unwrap();
        assert_eq!(w.offset(), 0);
    }

    #[test]
    fn an_ingest_cut_short_before_it_was_named_is_removed_unless_held() {
        let (t, s) = store();
        let ingest = t.path().join("content/ingest");
        fs::create_dir_all(ingest.join("killed-at-mkdir")).unwrap();
        fs::create_dir_all(ingest.join("killed-after-lock")).unwrap();
        fs::write(ingest.join("killed-after-lock/lock"), b"").unwrap();
        // Killed after creating `ref`, before writing it (an older berth wrote it in place).
        fs::create_dir_all(ingest.join("killed-naming")).unwrap();
        fs::write(ingest.join("killed-naming/lock"), b"").unwrap();
        fs::write(ingest.join("killed-naming/ref"), b"").unwrap();
        fs::create_dir_all(ingest.join("held")).unwrap();
        let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(ingest.join("held/lock")).unwrap();
        let held = Flock::lock(lock, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e).unwrap();
        let named = s.writer("named", None).unwrap();
        drop(named);
        assert_eq!(s.remove_unnamed_ingests().unwrap(), 3);
        let mut left: Vec<String> = fs::read_dir(&ingest).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left.len(), 2, "the held one and the named one stay: {left:?}");
        assert!(left.contains(&"held".to_string()));
        drop(held);
    }

    #[test]
    fn a_second_writer_of_the_same_ingest_is_refused_and_other_refs_share_the_blob() {
        let (_t, s) = store();
        let w1 = s.writer("same", None).unwrap();
        assert!(matches!(s.writer("same", None), Err(ContentError::Locked(_))));
        drop(w1);
        let d1 = s.write_blob(b"shared", None).unwrap();
        let mut w = s.writer("other-ref", None).unwrap();
        w.write_all(b"shared").unwrap();
        assert_eq!(w.commit().unwrap(), d1);
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn reading_a_blob_over_the_limit_is_refused() {
        let (_t, s) = store();
        let d = s.write_blob(&[0u8; 4096], None).unwrap();
        assert!(matches!(s.read(&d, 1024), Err(ContentError::TooLarge { .. })));
    }

    fn big_blob() -> Vec<u8> {
        (0..8_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
    }

    /// Run by `killed_mid_ingest_*` in a child process: write slowly until killed.
    #[test]
    #[ignore = "helper: runs only as the child of killed_mid_ingest_resumes_and_commits_nothing_half_written"]
    fn ingest_writer_child() {
        let root = std::env::var("BERTH_INGEST_ROOT").expect("run by the kill -9 test");
        let s = ContentStore::open(root).unwrap();
        let data = big_blob();
        let mut w = s.writer("killed", Some((Digest::of(&data), data.len() as u64))).unwrap();
        for chunk in data.chunks(4096) {
            w.write_all(chunk).unwrap();
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    #[test]
    fn killed_mid_ingest_resumes_and_commits_nothing_half_written() {
        let (t, s) = store();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "content::tests::ingest_writer_child", "--ignored", "--nocapture"])
            .env("BERTH_INGEST_ROOT", t.path().join("content"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while s.ingests().unwrap().first().is_none_or(|(_, n)| *n < 100_000) {
            assert!(std::time::Instant::now() < deadline, "the writer never got going");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(s.list().unwrap().is_empty(), "a half-written blob was committed");
        let data = big_blob();
        let mut w = s.writer("killed", Some((Digest::of(&data), data.len() as u64))).unwrap();
        let at = w.offset() as usize;
        assert!(at >= 100_000 && at < data.len(), "resumes at {at}");
        w.write_all(&data[at..]).unwrap();
        assert_eq!(w.commit().unwrap(), Digest::of(&data));
        assert_eq!(s.read(&Digest::of(&data), 1 << 30).unwrap(), data);
    }
}
