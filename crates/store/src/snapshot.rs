//! Snapshots: directory trees for image layers and container writable layers, chained by
//! parent. One trait, two back ends: [`Overlay`] (a layer is only its own changes; mounts stack
//! them) and [`Vfs`] (a plain copy of the parent, for file systems without overlay).
//!
//! On disk, under the snapshotter's root: `snapshots/<id>/{fs,work}` (random ids). Committed
//! snapshots and views are recorded in `snapshots.json` (key → id, parent, kind), replaced
//! atomically: their directory is built under a temporary name and renamed into place before
//! the index names it; a removal drops the index entry first. Active snapshots (a container's
//! writable layer, a layer being unpacked) are many, short-lived and each one's own business:
//! each is recorded in its own directory (`active.json`, written last and fsynced, then the
//! directory's entry), so making or removing one costs two fsyncs and never rewrites a shared
//! file. A removal renames the directory to `.rm-<id>` first. So a crash leaves, at worst, a
//! directory nothing names or with no whole record, which the next `open` deletes.
//!
//! An *ephemeral* snapshot (a `run --rm` container's layer, thrown away when it exits) is an
//! active one whose record is `ephemeral.json` and of which nothing is fsynced. `open` finds it
//! again after a restart of the process; after a crash of the machine it is found whole or
//! removed as a leftover, and no durable snapshot ever depends on it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Docker's limit on the number of layers in an image.
pub const MAX_LAYER_DEPTH: usize = 125;
/// A mount's option string must fit in one page.
const PAGE_SIZE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    Exists(String),
    #[error("snapshot {key:?} is {kind:?}: {action} needs {wanted}")]
    WrongKind { key: String, kind: Kind, action: &'static str, wanted: &'static str },
    #[error("snapshot {0:?} has children and cannot be removed")]
    HasChildren(String),
    #[error("a chain of {0} layers is deeper than the limit of {MAX_LAYER_DEPTH}")]
    TooDeep(usize),
    #[error("invalid snapshot key {0:?}")]
    InvalidKey(String),
    #[error("snapshot {0:?} is ephemeral and cannot be committed")]
    Ephemeral(String),
    #[error("{context} {path}: {source}")]
    Io { context: &'static str, path: PathBuf, source: io::Error },
}

type Result<T> = std::result::Result<T, SnapshotError>;

fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { context, path, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writable (a container's layer, or a layer being unpacked).
    Active,
    /// Read-only view of a parent.
    View,
    /// Immutable; can be a parent.
    Committed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub key: String,
    pub parent: Option<String>,
    pub kind: Kind,
    /// The directory name under `snapshots/`.
    pub id: String,
    /// Not durable, never a parent (see the module's documentation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    /// A committed snapshot's usage, measured once at commit (its tree never changes after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// How to mount a snapshot, for the caller to perform (see [`Mount::mount`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// `overlay` or `bind`.
    pub typ: String,
    pub source: PathBuf,
    pub options: Vec<String>,
    /// Relative paths in `options` are relative to this directory (long layer chains use
    /// short relative paths so the options fit in a page).
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Apparent size of everything but directories in the snapshot's own tree (hard links
    /// counted once): what Docker shows as a layer's size.
    pub size: u64,
    pub inodes: u64,
}

pub trait Snapshotter: Send + Sync {
    /// A new writable snapshot on top of `parent` (a committed snapshot).
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let mounts = self.prepare_unsynced(key, parent)?;
        self.sync(key)?;
        Ok(mounts)
    }
    /// [`Snapshotter::prepare`] without waiting for the disk: the snapshot is whole and usable at
    /// once, and survives a crash of the machine once [`Snapshotter::sync`] has returned (before,
    /// a crash may leave it a leftover that the next open deletes). Lets a caller overlap the
    /// fsyncs with its own.
    fn prepare_unsynced(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;
    /// Make an active snapshot from [`Snapshotter::prepare_unsynced`] durable (nothing to do for
    /// one already durable or ephemeral).
    fn sync(&self, key: &str) -> Result<()>;
    /// [`Snapshotter::prepare`] for a layer that is discarded rather than kept after a crash of
    /// the machine: written without a single fsync, never committed.
    fn prepare_ephemeral(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;
    /// A read-only view of `parent`.
    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;
    /// How to mount an active snapshot or a view.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;
    /// Turn the active snapshot `key` into the committed snapshot `name`.
    fn commit(&self, name: &str, key: &str) -> Result<()>;
    /// Remove a snapshot that has no children.
    fn remove(&self, key: &str) -> Result<()>;
    /// [`Snapshotter::remove`] without the delete: the snapshot is gone from the store at once and
    /// its directory, renamed out of the way, is returned for the caller to delete when it suits
    /// (a reopen deletes it if nobody did).
    fn detach(&self, key: &str) -> Result<PathBuf> {
        let doomed = self.detach_unsynced(key)?;
        self.sync_detached()?;
        Ok(doomed)
    }
    /// [`Snapshotter::detach`] without waiting for the disk: until [`Snapshotter::sync_detached`]
    /// returns, a crash of the machine may bring the snapshot back, so the caller calls it before
    /// it deletes anything in the returned directory (or the snapshot could come back partly
    /// deleted).
    fn detach_unsynced(&self, key: &str) -> Result<PathBuf>;
    /// Make every [`Snapshotter::detach_unsynced`] done so far durable (fsyncs are shared
    /// between concurrent callers).
    fn sync_detached(&self) -> Result<()>;
    fn stat(&self, key: &str) -> Result<Info>;
    fn usage(&self, key: &str) -> Result<Usage>;
    /// Every snapshot.
    fn walk(&self) -> Result<Vec<Info>>;
    /// The directory holding a snapshot's own files (where a layer is applied).
    fn dir(&self, key: &str) -> Result<PathBuf>;
}

/// What both back ends share: ids, metadata, crash-safe create and remove. The metadata is
/// read once at open into an in-memory index; every change is written atomically first and
/// only then applied in memory, under a lock so two changes in one process never lose each other.
struct Store {
    root: PathBuf,
    index: crate::index::JsonIndex<Metadata>,
    /// Fsyncs of `snapshots/`, which every create and removal of an active snapshot needs.
    synced: SharedSync,
}

/// Fsyncs of one directory, shared between threads (group commit): a caller whose change an
/// fsync begun after it already covers returns without starting another. Fifty removals at
/// once then cost a few fsyncs of the directory instead of fifty in a row (they would be in a
/// row anyway: a directory's fsyncs hold its lock).
struct SharedSync {
    dir: PathBuf,
    /// Tickets handed out, one per change that is done and waits to be made durable.
    tickets: std::sync::atomic::AtomicU64,
    /// The last ticket known durable.
    durable: std::sync::Mutex<u64>,
    /// Fsyncs done (for tests).
    fsyncs: std::sync::atomic::AtomicU64,
}

impl SharedSync {
    fn new(dir: PathBuf) -> SharedSync {
        SharedSync {
            dir,
            tickets: std::sync::atomic::AtomicU64::new(0),
            durable: std::sync::Mutex::new(0),
            fsyncs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Make durable every change to the directory done before this call.
    fn sync(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let mine = self.tickets.fetch_add(1, SeqCst) + 1;
        let mut durable = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        if *durable >= mine {
            return Ok(());
        }
        // Every ticket up to here was taken after its change was done, so before this fsync.
        let upto = self.tickets.load(SeqCst);
        sync_dir(&self.dir).map_err(io_err("syncing", &self.dir))?;
        self.fsyncs.fetch_add(1, SeqCst);
        *durable = upto;
        Ok(())
    }
}

#[derive(Default, Clone, Serialize, Deserialize)]
struct Metadata {
    version: u32,
    snapshots: BTreeMap<String, Info>,
    /// Active snapshots: held in memory only, each one's record is in its own directory.
    #[serde(skip)]
    local: BTreeMap<String, Info>,
}

/// An ephemeral snapshot's record, in its directory.
const EPHEMERAL: &str = "ephemeral.json";
/// A durable active snapshot's record, in its directory.
const ACTIVE: &str = "active.json";

impl Info {
    /// The name of its record in its directory, for an active snapshot.
    fn record_name(&self) -> &'static str {
        if self.ephemeral { EPHEMERAL } else { ACTIVE }
    }
}

impl Metadata {
    fn find(&self, key: &str) -> Option<&Info> {
        self.snapshots.get(key).or_else(|| self.local.get(key))
    }

    fn has_children(&self, key: &str) -> bool {
        self.snapshots.values().chain(self.local.values()).any(|i| i.parent.as_deref() == Some(key))
    }
}

const METADATA_VERSION: u32 = 1;

impl Store {
    fn open(root: &Path) -> Result<Store> {
        let snapshots = root.join("snapshots");
        fs::create_dir_all(&snapshots).map_err(io_err("creating", &snapshots))?;
        // Each snapshot's directory in a block group of its own choosing (see `spread`).
        crate::spread::spread_subdirectories(&snapshots);
        let meta = root.join("snapshots.json");
        let index = crate::index::JsonIndex::open(meta.clone()).map_err(io_err("reading", &meta))?;
        let s = Store { root: root.to_path_buf(), index, synced: SharedSync::new(snapshots) };
        s.clean_leftovers()?;
        Ok(s)
    }

    fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// A consistent copy of the index.
    fn load(&self) -> Result<Metadata> {
        Ok(self.index.get())
    }

    /// Change the metadata (written atomically, then applied in memory).
    fn update<T>(&self, f: impl FnOnce(&mut Metadata) -> Result<T>) -> Result<T> {
        self.index.update(
            |m| {
                m.version = METADATA_VERSION;
                f(m)
            },
            io_err("writing", self.index.path()),
        )
    }

    /// Anything under snapshots/ that the index does not name is an active snapshot (when its
    /// record is whole and its parent exists) or a crash leftover.
    fn clean_leftovers(&self) -> Result<()> {
        let m = self.load()?;
        let known: std::collections::HashSet<&str> = m.snapshots.values().map(|i| i.id.as_str()).collect();
        let dir = self.snapshots();
        let mut local = BTreeMap::new();
        for e in fs::read_dir(&dir).map_err(io_err("listing", &dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if known.contains(name.as_str()) {
                continue;
            }
            let read = |file: &str| {
                fs::read(e.path().join(file)).ok().and_then(|d| serde_json::from_slice::<Info>(&d).ok()).filter(|i| i.record_name() == file)
            };
            let record = (!name.starts_with('.')).then(|| read(ACTIVE).or_else(|| read(EPHEMERAL))).flatten().filter(|i| {
                i.id == name
                    && i.kind == Kind::Active
                    && validate_key(&i.key).is_ok()
                    && !m.snapshots.contains_key(&i.key)
                    && !local.contains_key(&i.key)
                    && i.parent.as_ref().is_none_or(|p| m.snapshots.get(p).is_some_and(|p| p.kind == Kind::Committed))
                    && e.path().join("fs").is_dir()
            });
            match record {
                Some(info) => {
                    local.insert(info.key.clone(), info);
                }
                None => {
                    tracing::info!("removing leftover snapshot directory {}", e.path().display());
                    remove_tree(&e.path())?;
                }
            }
        }
        self.index.update_in_memory(|m| -> Result<()> {
            m.local = local;
            Ok(())
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.snapshots().join(id)
    }

    /// The chain from `parent` down to the base layer, nearest first.
    fn chain(&self, m: &Metadata, parent: Option<&str>) -> Result<Vec<Info>> {
        let mut out = Vec::new();
        let mut next = parent.map(str::to_string);
        while let Some(k) = next {
            let info = m.find(&k).ok_or_else(|| SnapshotError::NotFound(k.clone()))?;
            out.push(info.clone());
            next = info.parent.clone();
            if out.len() > MAX_LAYER_DEPTH + 1 {
                break;
            }
        }
        Ok(out)
    }

    /// Create a snapshot directory through a temporary name, fill it with `fill`, record it.
    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        ephemeral: bool,
        sync: bool,
        fill: impl FnOnce(&Path, &[Info]) -> Result<()>,
    ) -> Result<Info> {
        validate_key(key)?;
        let chain = self.index.read(|m| match m.find(key) {
            Some(_) => Err(SnapshotError::Exists(key.to_string())),
            None => self.chain(m, parent),
        })?;
        if let Some(p) = chain.first()
            && p.kind != Kind::Committed
        {
            return Err(SnapshotError::WrongKind { key: p.key.clone(), kind: p.kind, action: "a parent", wanted: "a committed snapshot" });
        }
        // The new snapshot adds one layer for an active snapshot.
        let depth = chain.len() + usize::from(kind == Kind::Active);
        if depth > MAX_LAYER_DEPTH {
            return Err(SnapshotError::TooDeep(depth));
        }
        let id = random_id();
        let info = Info { key: key.to_string(), parent: parent.map(str::to_string), kind, id: id.clone(), ephemeral, usage: None };
        // An active snapshot is made under its own name and recorded in it last; the others
        // are made under a temporary name, renamed into place, then named by the index.
        let local = kind == Kind::Active;
        let dir = if local { self.path(&id) } else { self.snapshots().join(format!(".tmp-{id}")) };
        // Only an active snapshot's durability may be left for later: the others are named by the
        // index, which must never name a directory a crash could take away.
        let sync = sync || !local;
        let result = (|| {
            for sub in [&dir, &dir.join("fs"), &dir.join("work")] {
                fs::create_dir(sub).map_err(io_err("creating", sub))?;
            }
            fs::set_permissions(dir.join("fs"), fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", &dir))?;
            fill(&dir, &chain)?;
            if local {
                let record = dir.join(info.record_name());
                // An ephemeral snapshot is never fsynced.
                write_record(&record, &info, sync && !ephemeral).map_err(io_err("writing", &record))?;
            } else {
                fs::rename(&dir, self.path(&id)).map_err(io_err("renaming", &dir))?;
            }
            if ephemeral || !sync { Ok(()) } else { self.synced.sync() }
        })();
        if let Err(e) = result {
            let _ = remove_tree(&dir);
            return Err(e);
        }
        // Filling ran without the lock; check again that nobody took the key or the parent.
        let record = |m: &mut Metadata| {
            if m.find(key).is_some() {
                return Err(SnapshotError::Exists(key.to_string()));
            }
            if let Some(p) = parent
                && !m.snapshots.contains_key(p)
            {
                return Err(SnapshotError::NotFound(p.to_string()));
            }
            let map = if local { &mut m.local } else { &mut m.snapshots };
            map.insert(key.to_string(), info.clone());
            Ok(())
        };
        let recorded = if local { self.index.update_in_memory(record) } else { self.update(record) };
        if let Err(e) = recorded {
            let _ = remove_tree(&self.path(&info.id));
            return Err(e);
        }
        Ok(info)
    }

    /// Fsync an active snapshot's record and the directory's entry (see `create`).
    fn sync(&self, key: &str) -> Result<()> {
        let info = self.get(key)?;
        if info.ephemeral || info.kind != Kind::Active {
            return Ok(());
        }
        let record = self.path(&info.id).join(info.record_name());
        fs::File::open(&record).and_then(|f| fsync(&f, &record)).map_err(io_err("syncing", &record))?;
        self.synced.sync()
    }

    /// One snapshot's record (without copying the whole index).
    fn get(&self, key: &str) -> Result<Info> {
        self.index.read(|m| m.find(key).cloned()).ok_or_else(|| SnapshotError::NotFound(key.to_string()))
    }

    fn commit(&self, name: &str, key: &str) -> Result<()> {
        validate_key(name)?;
        let info = self.get(key)?;
        if info.kind != Kind::Active {
            return Err(SnapshotError::WrongKind { key: key.to_string(), kind: info.kind, action: "commit", wanted: "an active snapshot" });
        }
        if info.ephemeral {
            return Err(SnapshotError::Ephemeral(key.to_string()));
        }
        if self.index.read(|m| m.find(name).is_some()) {
            return Err(SnapshotError::Exists(name.to_string()));
        }
        // The work directory is overlay's scratch space; a committed layer has no use for it.
        let work = self.path(&info.id).join("work");
        remove_tree(&work)?;
        fs::create_dir(&work).map_err(io_err("creating", &work))?;
        let usage = tree_usage(&self.path(&info.id).join("fs"))?;
        self.update(|m| {
            if m.find(name).is_some() {
                return Err(SnapshotError::Exists(name.to_string()));
            }
            let info = m.local.remove(key).or_else(|| m.snapshots.remove(key)).ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
            m.snapshots.insert(name.to_string(), Info { key: name.to_string(), kind: Kind::Committed, usage: Some(usage), ..info });
            Ok(())
        })?;
        // The index names the directory now; the record left in it would be ignored anyway.
        let _ = fs::remove_file(self.path(&info.id).join(info.record_name()));
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<()> {
        remove_tree(&self.detach(key, true)?)
    }

    fn detach(&self, key: &str, sync: bool) -> Result<PathBuf> {
        let forget = |m: &mut Metadata| {
            if m.has_children(key) {
                return Err(SnapshotError::HasChildren(key.to_string()));
            }
            m.snapshots.remove(key).or_else(|| m.local.remove(key)).ok_or_else(|| SnapshotError::NotFound(key.to_string()))
        };
        let local = self.index.read(|m| m.local.contains_key(key));
        let info = if local { self.index.update_in_memory(forget)? } else { self.update(forget)? };
        // Renamed first so a crash mid-delete leaves a name open() recognises as a leftover.
        let doomed = self.snapshots().join(format!(".rm-{}", info.id));
        fs::rename(self.path(&info.id), &doomed).map_err(io_err("renaming", &doomed))?;
        // For an active snapshot the rename is the removal: made durable unless ephemeral (or
        // left to the caller).
        if sync && local && !info.ephemeral {
            self.synced.sync()?;
        }
        Ok(doomed)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let info = self.get(key)?;
        match info.usage {
            Some(u) if info.kind == Kind::Committed => Ok(u),
            _ => {
                let u = tree_usage(&self.path(&info.id).join("fs"))?;
                // A layer committed before usages were kept: measured once, then remembered
                // (and written with the index's next change).
                if info.kind == Kind::Committed {
                    self.index.update_in_memory(|m| -> Result<()> {
                        if let Some(i) = m.snapshots.get_mut(key) {
                            i.usage = Some(u);
                        }
                        Ok(())
                    })?;
                }
                Ok(u)
            }
        }
    }

    fn walk(&self) -> Result<Vec<Info>> {
        let m = self.load()?;
        let mut all: Vec<Info> = m.snapshots.into_values().chain(m.local.into_values()).collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }
}

fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 512 || key.contains('\0') {
        return Err(SnapshotError::InvalidKey(key.to_string()));
    }
    Ok(())
}

fn random_id() -> String {
    let mut b = [0u8; 12];
    let _ = fs::File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut b));
    hex::encode(b)
}

/// Write an active snapshot's record (fsynced when `durable`).
fn write_record(path: &Path, info: &Info, durable: bool) -> io::Result<()> {
    let data = serde_json::to_vec(info).map_err(io::Error::other)?;
    let mut f = fs::File::create(path)?;
    io::Write::write_all(&mut f, &data)?;
    if durable { fsync(&f, path) } else { Ok(()) }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fsync(&fs::File::open(dir)?, dir)
}

/// Every fsync of the snapshot store goes through here, so its tests can see what was made
/// durable (a sync that does nothing would otherwise pass every test that cannot crash the machine).
#[cfg_attr(not(test), allow(unused_variables))]
fn fsync(f: &fs::File, path: &Path) -> io::Result<()> {
    f.sync_all()?;
    #[cfg(test)]
    conformance::FSYNCED.lock().unwrap_or_else(|p| p.into_inner()).push(path.to_path_buf());
    Ok(())
}

fn remove_tree(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", p)(e)),
    }
}

fn tree_usage(dir: &Path) -> Result<Usage> {
    let mut u = Usage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io_err("listing", &d))?.flatten() {
            let md = e.metadata().map_err(io_err("stat", &e.path()))?;
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            u.inodes += 1;
            if md.is_dir() {
                stack.push(e.path());
            } else {
                // Symlinks count their target's length, as Docker's layer sizes do.
                u.size += md.len();
            }
        }
    }
    Ok(u)
}

fn bind(source: &Path, ro: bool) -> Mount {
    let mut options = vec!["rbind".to_string()];
    options.push(if ro { "ro" } else { "rw" }.to_string());
    Mount { typ: "bind".into(), source: source.to_path_buf(), options, cwd: None }
}

/// Overlay: a snapshot holds only its own changes; mounts stack the chain as lowerdirs.
pub struct Overlay {
    store: Store,
}

impl Overlay {
    pub fn open(root: &Path) -> Result<Overlay> {
        Ok(Overlay { store: Store::open(root)? })
    }

    fn overlay_mounts(&self, info: &Info) -> Result<Vec<Mount>> {
        let chain = self.store.index.read(|m| self.store.chain(m, info.parent.as_deref()))?;
        let own = self.store.path(&info.id);
        if info.kind == Kind::View {
            return Ok(match chain.len() {
                0 => vec![bind(&own.join("fs"), true)],
                1 => vec![bind(&self.store.path(&chain[0].id).join("fs"), true)],
                _ => vec![self.layered(&chain, None)],
            });
        }
        if chain.is_empty() {
            return Ok(vec![bind(&own.join("fs"), false)]);
        }
        Ok(vec![self.layered(&chain, Some(&info.id))])
    }

    /// An overlay mount of `chain` (nearest first), with `upper`'s fs/work when writable. Uses
    /// absolute paths when the options fit in a page, else paths relative to snapshots/.
    fn layered(&self, chain: &[Info], upper: Option<&str>) -> Mount {
        let build = |base: &dyn Fn(&str) -> String| {
            let lower: Vec<String> = chain.iter().map(|i| format!("{}/fs", base(&i.id))).collect();
            let mut options = vec![format!("lowerdir={}", lower.join(":"))];
            if let Some(u) = upper {
                options.push(format!("upperdir={}/fs", base(u)));
                options.push(format!("workdir={}/work", base(u)));
            }
            if upper.is_none() {
                options.push("ro".into());
            }
            options
        };
        let snapshots = self.store.snapshots();
        let absolute = build(&|id: &str| snapshots.join(id).display().to_string());
        if absolute.join(",").len() < PAGE_SIZE {
            return Mount { typ: "overlay".into(), source: "overlay".into(), options: absolute, cwd: None };
        }
        Mount { typ: "overlay".into(), source: "overlay".into(), options: build(&|id: &str| id.to_string()), cwd: Some(snapshots) }
    }
}

impl Snapshotter for Overlay {
    fn prepare_unsynced(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let info = self.store.create(key, parent, Kind::Active, false, false, |_, _| Ok(()))?;
        self.overlay_mounts(&info)
    }

    fn sync(&self, key: &str) -> Result<()> {
        self.store.sync(key)
    }

    fn prepare_ephemeral(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let info = self.store.create(key, parent, Kind::Active, true, false, |_, _| Ok(()))?;
        self.overlay_mounts(&info)
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let info = self.store.create(key, parent, Kind::View, false, true, |_, _| Ok(()))?;
        self.overlay_mounts(&info)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let info = self.store.get(key)?;
        self.overlay_mounts(&info)
    }

    fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.store.commit(name, key)
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.store.remove(key)
    }

    fn detach_unsynced(&self, key: &str) -> Result<PathBuf> {
        self.store.detach(key, false)
    }

    fn sync_detached(&self) -> Result<()> {
        self.store.synced.sync()
    }

    fn stat(&self, key: &str) -> Result<Info> {
        self.store.get(key)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        self.store.usage(key)
    }

    fn walk(&self) -> Result<Vec<Info>> {
        self.store.walk()
    }

    fn dir(&self, key: &str) -> Result<PathBuf> {
        Ok(self.store.path(&self.store.get(key)?.id).join("fs"))
    }
}

/// Vfs: every snapshot is a full copy of its parent; mounts are binds.
pub struct Vfs {
    store: Store,
}

impl Vfs {
    pub fn open(root: &Path) -> Result<Vfs> {
        Ok(Vfs { store: Store::open(root)? })
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind, ephemeral: bool, sync: bool) -> Result<Vec<Mount>> {
        let snapshots = self.store.snapshots();
        let info = self.store.create(key, parent, kind, ephemeral, sync, |tmp, chain| match chain.first() {
            Some(p) => copy_tree(&snapshots.join(&p.id).join("fs"), &tmp.join("fs")),
            None => Ok(()),
        })?;
        Ok(vec![bind(&self.store.path(&info.id).join("fs"), kind == Kind::View)])
    }
}

impl Snapshotter for Vfs {
    fn prepare_unsynced(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active, false, false)
    }

    fn sync(&self, key: &str) -> Result<()> {
        self.store.sync(key)
    }

    fn prepare_ephemeral(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active, true, false)
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::View, false, true)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let info = self.store.get(key)?;
        Ok(vec![bind(&self.store.path(&info.id).join("fs"), info.kind != Kind::Active)])
    }

    fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.store.commit(name, key)
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.store.remove(key)
    }

    fn detach_unsynced(&self, key: &str) -> Result<PathBuf> {
        self.store.detach(key, false)
    }

    fn sync_detached(&self) -> Result<()> {
        self.store.synced.sync()
    }

    fn stat(&self, key: &str) -> Result<Info> {
        self.store.get(key)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        self.store.usage(key)
    }

    fn walk(&self) -> Result<Vec<Info>> {
        self.store.walk()
    }

    fn dir(&self, key: &str) -> Result<PathBuf> {
        Ok(self.store.path(&self.store.get(key)?.id).join("fs"))
    }
}

/// Copy a tree with owners, modes, times, symlinks, devices and hard links preserved.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let mut links: std::collections::HashMap<(u64, u64), PathBuf> = std::collections::HashMap::new();
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    let mut dirs = Vec::new();
    while let Some((src, dst)) = stack.pop() {
        for e in fs::read_dir(&src).map_err(io_err("listing", &src))?.flatten() {
            let s = e.path();
            let d = dst.join(e.file_name());
            let md = fs::symlink_metadata(&s).map_err(io_err("stat", &s))?;
            let ft = md.file_type();
            if !ft.is_dir() && md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    fs::hard_link(first, &d).map_err(io_err("linking", &d))?;
                    continue;
                }
                links.insert((md.dev(), md.ino()), d.clone());
            }
            if ft.is_dir() {
                fs::create_dir(&d).map_err(io_err("creating", &d))?;
                stack.push((s, d.clone()));
                dirs.push((d, md));
                continue;
            } else if ft.is_symlink() {
                let t = fs::read_link(&s).map_err(io_err("reading link", &s))?;
                std::os::unix::fs::symlink(t, &d).map_err(io_err("creating", &d))?;
            } else if ft.is_file() {
                fs::copy(&s, &d).map_err(io_err("copying", &s))?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let kind = nix::sys::stat::SFlag::from_bits_truncate(md.mode() & libc_s_ifmt());
                nix::sys::stat::mknod(&d, kind, nix::sys::stat::Mode::from_bits_truncate(md.mode()), md.rdev())
                    .map_err(|e| io_err("creating", &d)(e.into()))?;
            } else {
                continue; // sockets are not copied
            }
            set_meta(&d, &md)?;
        }
    }
    // Directories last (children change their times) and deepest first.
    for (d, md) in dirs.iter().rev() {
        set_meta(d, md)?;
    }
    Ok(())
}

const fn libc_s_ifmt() -> u32 {
    0o170000
}

fn set_meta(p: &Path, md: &fs::Metadata) -> Result<()> {
    let err = |e: nix::Error| io_err("setting metadata of", p)(e.into());
    nix::unistd::fchownat(nix::fcntl::AT_FDCWD, p, Some(md.uid().into()), Some(md.gid().into()), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(err)?;
    if !md.file_type().is_symlink() {
        fs::set_permissions(p, fs::Permissions::from_mode(md.mode() & 0o7777)).map_err(io_err("chmod", p))?;
    }
    let t = |s: i64, n: i64| nix::sys::time::TimeSpec::new(s, n);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t(md.atime(), md.atime_nsec()),
        &t(md.mtime(), md.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(err)
}

impl Mount {
    /// This overlay mount with `volatile`: no sync reaches the upper layer, and unmounting does
    /// not sync the whole file system under it. Only for a layer that is thrown away rather than
    /// mounted again after a crash of the machine. None for other kinds of mount.
    pub fn volatile(&self) -> Option<Mount> {
        if self.typ != "overlay" || self.options.iter().any(|o| o == "volatile") {
            return None;
        }
        let mut v = self.clone();
        v.options.push("volatile".into());
        Some(v)
    }

    /// This overlay with `dir` as its lowest layer, under every other, if the options still fit
    /// in a page. None for other kinds of mount, or a `dir` that cannot go in the options.
    pub fn with_lowest(&self, dir: &Path) -> Option<Mount> {
        let dir = dir.to_str().filter(|d| d.starts_with('/') && !d.contains([':', ',', '\\']))?;
        if self.typ != "overlay" {
            return None;
        }
        let mut m = self.clone();
        let lower = m.options.iter_mut().find(|o| o.starts_with("lowerdir="))?;
        lower.push(':');
        lower.push_str(dir);
        (m.options.join(",").len() < PAGE_SIZE).then_some(m)
    }

    /// Perform this mount on `target`. Relative option paths are resolved from `cwd` by a
    /// thread with its own working directory (unshare(CLONE_FS)), so the process's is untouched.
    pub fn mount(&self, target: &Path) -> io::Result<()> {
        if self.cwd.is_none() {
            return self.mount_here(target);
        }
        let target = target.to_path_buf();
        let m = self.clone();
        std::thread::spawn(move || m.mount_here(&target)).join().map_err(|_| io::Error::other("mount thread panicked"))?
    }

    /// [`Mount::mount`] from this thread (which changes its working directory for a `cwd`).
    fn mount_here(&self, target: &Path) -> io::Result<()> {
        use nix::mount::MsFlags;
        let ro = self.options.iter().any(|o| o == "ro");
        if self.typ == "bind" {
            nix::mount::mount(Some(&self.source), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)?;
            if ro {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)?;
            }
            return Ok(());
        }
        let data: Vec<&str> = self.options.iter().map(String::as_str).filter(|o| *o != "ro").collect();
        let flags = if ro { MsFlags::MS_RDONLY } else { MsFlags::empty() };
        if let Some(cwd) = &self.cwd {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
            nix::unistd::chdir(cwd)?;
        }
        // Overlay refuses a work directory that a volatile mount used before (its mark that
        // the layer may be inconsistent after a crash). Only volatile mounts reuse one, and
        // those layers are never mounted after a crash, so the mark goes.
        if self.options.iter().any(|o| o == "volatile")
            && let Some(work) = self.options.iter().find_map(|o| o.strip_prefix("workdir="))
        {
            let _ = std::fs::remove_dir_all(Path::new(work).join("work/incompat/volatile"));
        }
        nix::mount::mount(Some(&self.source), target, Some(self.typ.as_str()), flags, Some(data.join(",").as_str()))?;
        Ok(())
    }
}

#[cfg(test)]
mod conformance {
    //! One suite that every snapshotter passes.
    use super::*;
    use crate::test_support::root_or_skip;

    #[test]
    fn only_overlay_mounts_become_volatile() {
        let overlay = Mount { typ: "overlay".into(), source: "overlay".into(), options: vec!["workdir=w".into()], cwd: None };
        let v = overlay.volatile().unwrap();
        assert_eq!(v.options, ["workdir=w", "volatile"]);
        assert!(v.volatile().is_none(), "added once");
        let bind = Mount { typ: "bind".into(), source: "/x".into(), options: vec!["ro".into()], cwd: None };
        assert!(bind.volatile().is_none());
    }

    /// Mount `mounts` at a temp dir for the length of `f`, always unmounting.
    fn with_mounted<T>(mounts: &[Mount], f: impl FnOnce(&Path) -> T) -> T {
        let target = tempfile::tempdir().unwrap();
        mounts[0].mount(target.path()).unwrap();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(target.path())));
        nix::mount::umount2(target.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
        out.unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    fn suite<S: Snapshotter>(open: impl Fn(&Path) -> S) {
        let t = tempfile::tempdir().unwrap();
        let s = open(t.path());

        // Base layer: write, commit.
        let m = s.prepare("base-active", None).unwrap();
        with_mounted(&m, |p| {
            fs::create_dir(p.join("etc")).unwrap();
            fs::write(p.join("etc/hostname"), "base").unwrap();
            fs::write(p.join("etc/gone"), "x").unwrap();
            std::os::unix::fs::symlink("hostname", p.join("etc/link")).unwrap();
            fs::create_dir_all(p.join("var/cache/deep")).unwrap();
        });
        s.commit("base", "base-active").unwrap();
        // Docker's layer size: files and symlinks (their target's length), not directories;
        // measured once, at commit.
        let base_size = ("base".len() + "x".len() + "hostname".len()) as u64;
        assert_eq!(s.stat("base").unwrap().usage.map(|u| u.size), Some(base_size));
        assert_eq!(s.stat("base").unwrap().kind, Kind::Committed);
        assert!(matches!(s.stat("base-active"), Err(SnapshotError::NotFound(_))));

        // A child sees the parent, changes it without touching it.
        let m = s.prepare("child-active", Some("base")).unwrap();
        with_mounted(&m, |p| {
            assert_eq!(fs::read_to_string(p.join("etc/hostname")).unwrap(), "base");
            fs::write(p.join("etc/hostname"), "child").unwrap();
            fs::remove_file(p.join("etc/gone")).unwrap();
            fs::remove_dir_all(p.join("var/cache")).unwrap();
            fs::create_dir(p.join("var/cache")).unwrap();
            fs::write(p.join("var/cache/new"), "n").unwrap();
        });
        s.commit("child", "child-active").unwrap();

        // A view of the child: the changes, read-only.
        let m = s.view("child-view", Some("child")).unwrap();
        with_mounted(&m, |p| {
            assert_eq!(fs::read_to_string(p.join("etc/hostname")).unwrap(), "child");
            assert!(!p.join("etc/gone").exists());
            assert!(!p.join("var/cache/deep").exists(), "a recreated directory hides the old one's content");
            assert!(p.join("var/cache/new").exists());
            assert!(fs::write(p.join("x"), "y").is_err(), "views are read-only");
        });
        // The parent is unchanged.
        let m = s.view("base-view", Some("base")).unwrap();
        with_mounted(&m, |p| {
            assert_eq!(fs::read_to_string(p.join("etc/hostname")).unwrap(), "base");
            assert!(p.join("etc/gone").exists());
        });

        // Bookkeeping and refusals.
        assert_eq!(s.usage("base").unwrap().size, base_size);
        // A committed layer recorded before usages were kept gets one when first asked.
        drop(s);
        let index = t.path().join("snapshots.json");
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&index).unwrap()).unwrap();
        v["snapshots"]["base"].as_object_mut().unwrap().remove("usage");
        fs::write(&index, serde_json::to_vec(&v).unwrap()).unwrap();
        let s = open(t.path());
        assert_eq!(s.stat("base").unwrap().usage, None);
        assert_eq!(s.usage("base").unwrap().size, base_size);
        assert_eq!(s.stat("base").unwrap().usage.map(|u| u.size), Some(base_size), "remembered");
        let keys: Vec<String> = s.walk().unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["base", "base-view", "child", "child-view"]);
        assert!(matches!(s.prepare("child", None), Err(SnapshotError::Exists(_))));
        assert!(matches!(s.remove("base"), Err(SnapshotError::HasChildren(_))));
        assert!(matches!(s.prepare("x", Some("child-view")), Err(SnapshotError::WrongKind { .. })));
        assert!(matches!(s.prepare("y", Some("missing")), Err(SnapshotError::NotFound(_))));
        assert!(matches!(s.commit("z", "child"), Err(SnapshotError::WrongKind { .. })));

        // An active snapshot is recorded in its own directory, not in the shared index.
        s.prepare("ctr", Some("child")).unwrap();
        fs::write(s.dir("ctr").unwrap().join("kept"), "k").unwrap();
        s.prepare("torn", Some("child")).unwrap();
        let torn = t.path().join("snapshots").join(s.stat("torn").unwrap().id);
        let index = fs::read_to_string(t.path().join("snapshots.json")).unwrap();
        assert!(!index.contains("\"ctr\"") && !index.contains("torn"), "{index}");

        // Crash leftovers are cleaned when the store is opened again; records survive.
        fs::create_dir_all(t.path().join("snapshots/.tmp-deadbeef/fs")).unwrap();
        fs::create_dir_all(t.path().join("snapshots/.rm-cafe/fs")).unwrap();
        // A create cut short before its record was whole.
        fs::write(torn.join(ACTIVE), b"{\"key\":\"torn\",").unwrap();
        drop(s);
        let s = open(t.path());
        let names: Vec<String> =
            fs::read_dir(t.path().join("snapshots")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        assert!(!torn.exists());
        assert_eq!(s.walk().unwrap().len(), 5);
        let ctr = s.stat("ctr").unwrap();
        assert_eq!((ctr.kind, ctr.parent.as_deref(), ctr.ephemeral), (Kind::Active, Some("child"), false));
        assert_eq!(fs::read_to_string(s.dir("ctr").unwrap().join("kept")).unwrap(), "k");
        assert!(matches!(s.remove("child"), Err(SnapshotError::HasChildren(_))), "an active child keeps its parent");
        let doomed = s.detach("ctr").unwrap();
        drop(s);
        let s = open(t.path());
        assert!(!doomed.exists() && matches!(s.stat("ctr"), Err(SnapshotError::NotFound(_))), "a detach is a removal");

        // Removal, leaves first.
        for k in ["child-view", "base-view", "child", "base"] {
            s.remove(k).unwrap();
        }
        assert!(s.walk().unwrap().is_empty());
        assert_eq!(fs::read_dir(t.path().join("snapshots")).unwrap().count(), 0);
    }

    /// A store with one committed layer, `base`, holding `from-base`.
    fn with_base<S: Snapshotter>(open: &impl Fn(&Path) -> S) -> (tempfile::TempDir, S) {
        let t = tempfile::tempdir().unwrap();
        let s = open(t.path());
        s.prepare("base-active", None).unwrap();
        fs::write(s.dir("base-active").unwrap().join("from-base"), "b").unwrap();
        s.commit("base", "base-active").unwrap();
        (t, s)
    }

    fn ephemeral<S: Snapshotter>(open: impl Fn(&Path) -> S) {
        let (t, s) = with_base(&open);

        let m = s.prepare_ephemeral("eph", Some("base")).unwrap();
        with_mounted(&m, |p| {
            assert_eq!(fs::read_to_string(p.join("from-base")).unwrap(), "b");
            fs::write(p.join("scratch"), "s").unwrap();
        });
        let index = fs::read_to_string(t.path().join("snapshots.json")).unwrap();
        assert!(!index.contains("eph"), "an ephemeral snapshot is not in the durable index: {index}");
        assert!(s.stat("eph").unwrap().ephemeral);
        assert!(!s.stat("base").unwrap().ephemeral);
        assert!(matches!(s.commit("c", "eph"), Err(SnapshotError::Ephemeral(_))));
        assert!(matches!(s.remove("base"), Err(SnapshotError::HasChildren(_))), "an ephemeral child keeps its parent");
        assert!(matches!(s.prepare("eph", None), Err(SnapshotError::Exists(_))));
        assert!(matches!(s.prepare_ephemeral("base", None), Err(SnapshotError::Exists(_))));
        assert!(matches!(s.prepare_ephemeral("x", Some("eph")), Err(SnapshotError::WrongKind { .. })), "never a parent");

        // Found again when the store is opened again (a restart of the daemon)…
        s.prepare_ephemeral("torn", Some("base")).unwrap();
        let torn = t.path().join("snapshots").join(s.stat("torn").unwrap().id);
        drop(s);
        // … but one whose record a crash of the machine lost is a leftover.
        fs::remove_file(torn.join(EPHEMERAL)).unwrap();
        let s = open(t.path());
        assert!(s.stat("eph").unwrap().ephemeral);
        assert!(s.usage("eph").unwrap().size >= 1, "its files are still there");
        assert!(matches!(s.stat("torn"), Err(SnapshotError::NotFound(_))));
        assert!(!torn.exists());

        // Detached: gone from the store at once, its directory the caller's to delete.
        let doomed = s.detach("eph").unwrap();
        assert!(matches!(s.stat("eph"), Err(SnapshotError::NotFound(_))));
        assert!(doomed.join("fs/scratch").exists());
        drop(s);
        let s = open(t.path());
        assert!(!doomed.exists(), "a reopen deletes what the caller left");
        s.remove("base").unwrap();
        assert!(s.walk().unwrap().is_empty());
        assert_eq!(fs::read_dir(t.path().join("snapshots")).unwrap().count(), 0);
    }

    /// The paths fsynced so far (by this test process's threads, whatever the test).
    pub(super) static FSYNCED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

    /// What was fsynced under `root` since the last call.
    fn fsynced_under(root: &Path) -> Vec<PathBuf> {
        let mut all = FSYNCED.lock().unwrap();
        let (mine, others): (Vec<PathBuf>, Vec<PathBuf>) = all.drain(..).partition(|p| p.starts_with(root));
        *all = others;
        mine
    }

    fn deferred_sync<S: Snapshotter>(open: impl Fn(&Path) -> S) {
        let (t, s) = with_base(&open);

        // Usable before its sync, and an ordinary active snapshot after it; made durable by the
        // sync and not before: the record, then the directory's entry.
        fsynced_under(t.path());
        let m = s.prepare_unsynced("ctr", Some("base")).unwrap();
        assert_eq!(fsynced_under(t.path()), Vec::<PathBuf>::new(), "prepare_unsynced fsynced");
        with_mounted(&m, |p| {
            assert_eq!(fs::read_to_string(p.join("from-base")).unwrap(), "b");
            fs::write(p.join("new"), "n").unwrap();
        });
        s.sync("ctr").unwrap();
        let record = t.path().join("snapshots").join(s.stat("ctr").unwrap().id).join(ACTIVE);
        assert_eq!(fsynced_under(t.path()), [record, t.path().join("snapshots")], "what sync made durable");
        assert!(!s.stat("ctr").unwrap().ephemeral);
        assert!(matches!(s.prepare_unsynced("ctr", None), Err(SnapshotError::Exists(_))));
        assert!(matches!(s.sync("nothing"), Err(SnapshotError::NotFound(_))));
        s.sync("base").unwrap();

        // One whose record a crash of the machine lost before its sync is a leftover.
        s.prepare_unsynced("torn", Some("base")).unwrap();
        let torn = t.path().join("snapshots").join(s.stat("torn").unwrap().id);
        drop(s);
        fs::remove_file(torn.join(ACTIVE)).unwrap();
        let s = open(t.path());
        assert!(matches!(s.stat("torn"), Err(SnapshotError::NotFound(_))));
        assert!(!torn.exists());
        assert_eq!(fs::read_to_string(s.dir("ctr").unwrap().join("new")).unwrap(), "n", "the synced one is whole");
        s.commit("ctr-layer", "ctr").unwrap();

        // Detached without a sync: gone from the store at once, the directory the caller's.
        s.prepare("gone", Some("base")).unwrap();
        fsynced_under(t.path());
        let doomed = s.detach_unsynced("gone").unwrap();
        assert_eq!(fsynced_under(t.path()), Vec::<PathBuf>::new(), "detach_unsynced fsynced");
        s.sync_detached().unwrap();
        assert_eq!(fsynced_under(t.path()), [t.path().join("snapshots")], "sync_detached fsyncs the directory");
        assert!(matches!(s.stat("gone"), Err(SnapshotError::NotFound(_))));
        assert!(doomed.join("fs").exists());
        drop(s);
        let s = open(t.path());
        assert!(!doomed.exists(), "a reopen deletes what the caller left");
        assert!(matches!(s.stat("gone"), Err(SnapshotError::NotFound(_))));
    }

    fn depth_limit<S: Snapshotter>(open: impl Fn(&Path) -> S) {
        let t = tempfile::tempdir().unwrap();
        let s = open(t.path());
        let mut parent: Option<String> = None;
        for i in 0..MAX_LAYER_DEPTH {
            s.prepare(&format!("a{i}"), parent.as_deref()).unwrap();
            s.commit(&format!("l{i}"), &format!("a{i}")).unwrap();
            parent = Some(format!("l{i}"));
        }
        assert!(matches!(s.prepare("too-deep", parent.as_deref()), Err(SnapshotError::TooDeep(126))));
        // A view of the deepest chain still works (and for overlay, mounts all 125 layers).
        let m = s.view("deep-view", parent.as_deref()).unwrap();
        assert!(m[0].options.join(",").len() < PAGE_SIZE, "mount options must fit in a page");
        with_mounted(&m, |p| assert!(p.exists()));
    }

    #[test]
    fn a_lowest_layer_goes_under_the_others() {
        let m = Mount {
            typ: "overlay".into(),
            source: "overlay".into(),
            options: vec!["lowerdir=/s/b:/s/a".into(), "upperdir=/s/c/fs".into(), "workdir=/s/c/work".into()],
            cwd: None,
        };
        let under = m.with_lowest(Path::new("/base")).unwrap();
        assert_eq!(under.options[0], "lowerdir=/s/b:/s/a:/base");
        assert_eq!(under.options[1..], m.options[1..]);
        assert!(m.with_lowest(Path::new("relative")).is_none());
        assert!(m.with_lowest(Path::new("/a:b")).is_none(), "a colon would split the layer");
        assert!(m.with_lowest(Path::new(&format!("/{}", "x".repeat(PAGE_SIZE)))).is_none(), "options past a page");
        assert!(bind(Path::new("/s/a"), true).with_lowest(Path::new("/base")).is_none());
    }

    #[test]
    fn concurrent_directory_syncs_share_fsyncs() {
        use std::sync::atomic::Ordering::SeqCst;
        let t = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(SharedSync::new(t.path().to_path_buf()));
        s.sync().unwrap();
        s.sync().unwrap();
        assert_eq!(s.fsyncs.load(SeqCst), 2, "one after another, each call fsyncs");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (s, b) = (s.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    s.sync().unwrap();
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let n = s.fsyncs.load(SeqCst) - 2;
        assert!((1..=16).contains(&n), "{n} fsyncs for 16 calls");
        assert_eq!(*s.durable.lock().unwrap(), 18, "every ticket is covered");
        assert!(SharedSync::new(t.path().join("missing")).sync().is_err());
    }

    #[test]
    fn concurrent_changes_in_one_process_are_all_kept() {
        let t = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Overlay::open(t.path()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        s.prepare(&format!("t{n}-{i}"), None).unwrap();
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(s.walk().unwrap().len(), 160);
        drop(s);
        assert_eq!(
            Overlay::open(t.path()).unwrap().walk().unwrap().len(),
            160,
            "every change is on disk too (their records, in their directories)"
        );
    }

    #[test]
    fn overlay_passes_the_suite() {
        if root_or_skip() {
            suite(|p| Overlay::open(p).unwrap());
        }
    }

    #[test]
    fn vfs_passes_the_suite() {
        if root_or_skip() {
            suite(|p| Vfs::open(p).unwrap());
        }
    }

    #[test]
    fn overlay_keeps_ephemeral_snapshots_out_of_the_durable_index() {
        if root_or_skip() {
            ephemeral(|p| Overlay::open(p).unwrap());
        }
    }

    #[test]
    fn vfs_keeps_ephemeral_snapshots_out_of_the_durable_index() {
        if root_or_skip() {
            ephemeral(|p| Vfs::open(p).unwrap());
        }
    }

    #[test]
    fn overlay_syncs_a_prepared_snapshot_when_asked() {
        if root_or_skip() {
            deferred_sync(|p| Overlay::open(p).unwrap());
        }
    }

    #[test]
    fn vfs_syncs_a_prepared_snapshot_when_asked() {
        if root_or_skip() {
            deferred_sync(|p| Vfs::open(p).unwrap());
        }
    }

    #[test]
    fn overlay_mounts_125_layers_with_options_that_fit_a_page() {
        if root_or_skip() {
            depth_limit(|p| Overlay::open(p).unwrap());
        }
    }

    #[test]
    fn vfs_refuses_chains_deeper_than_125() {
        if root_or_skip() {
            depth_limit(|p| Vfs::open(p).unwrap());
        }
    }
}
