//! What every layout shares: ids, metadata, crash-safe create and remove, fsyncs.

use super::*;

/// What both back ends share: ids, metadata, crash-safe create and remove. The metadata is
/// read once at open into an in-memory index; every change is written atomically first and
/// only then applied in memory, under a lock so two changes in one process never lose each other.
pub(super) struct Store {
    pub(super) root: PathBuf,
    pub(super) index: crate::index::JsonIndex<Metadata>,
    /// Fsyncs of `snapshots/`, which every create and removal of an active snapshot needs.
    pub(super) synced: SharedSync,
}

/// Fsyncs of one directory, shared between threads (group commit): a caller whose change an
/// fsync begun after it already covers returns without starting another. Fifty removals at
/// once then cost a few fsyncs of the directory instead of fifty in a row (they would be in a
/// row anyway: a directory's fsyncs hold its lock).
pub(super) struct SharedSync {
    pub(super) dir: PathBuf,
    /// Tickets handed out, one per change that is done and waits to be made durable.
    pub(super) tickets: std::sync::atomic::AtomicU64,
    /// The last ticket known durable.
    pub(super) durable: std::sync::Mutex<u64>,
    /// Fsyncs done (for tests).
    pub(super) fsyncs: std::sync::atomic::AtomicU64,
}

impl SharedSync {
    pub(super) fn new(dir: PathBuf) -> SharedSync {
        SharedSync {
            dir,
            tickets: std::sync::atomic::AtomicU64::new(0),
            durable: std::sync::Mutex::new(0),
            fsyncs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Make durable every change to the directory done before this call.
    pub(super) fn sync(&self) -> Result<()> {
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
pub(super) struct Metadata {
    pub(super) version: u32,
    pub(super) snapshots: BTreeMap<String, Info>,
    /// Active snapshots: held in memory only, each one's record is in its own directory.
    #[serde(skip)]
    pub(super) local: BTreeMap<String, Info>,
}

/// An ephemeral snapshot's record, in its directory.
pub(super) const EPHEMERAL: &str = "ephemeral.json";
/// A durable active snapshot's record, in its directory.
pub(super) const ACTIVE: &str = "active.json";

impl Info {
    /// The name of its record in its directory, for an active snapshot.
    pub(super) fn record_name(&self) -> &'static str {
        if self.ephemeral { EPHEMERAL } else { ACTIVE }
    }
}

impl Metadata {
    pub(super) fn find(&self, key: &str) -> Option<&Info> {
        self.snapshots.get(key).or_else(|| self.local.get(key))
    }

    pub(super) fn has_children(&self, key: &str) -> bool {
        self.snapshots.values().chain(self.local.values()).any(|i| i.parent.as_deref() == Some(key))
    }
}

pub(super) const METADATA_VERSION: u32 = 1;

impl Store {
    pub(super) fn open(root: &Path) -> Result<Store> {
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

    pub(super) fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// A consistent copy of the index.
    pub(super) fn load(&self) -> Result<Metadata> {
        Ok(self.index.get())
    }

    /// Change the metadata (written atomically, then applied in memory).
    pub(super) fn update<T>(&self, f: impl FnOnce(&mut Metadata) -> Result<T>) -> Result<T> {
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
    pub(super) fn clean_leftovers(&self) -> Result<()> {
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

    pub(super) fn path(&self, id: &str) -> PathBuf {
        self.snapshots().join(id)
    }

    /// The chain from `parent` down to the base layer, nearest first.
    pub(super) fn chain(&self, m: &Metadata, parent: Option<&str>) -> Result<Vec<Info>> {
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
    pub(super) fn create(
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
    pub(super) fn sync(&self, key: &str) -> Result<()> {
        let info = self.get(key)?;
        if info.ephemeral || info.kind != Kind::Active {
            return Ok(());
        }
        let record = self.path(&info.id).join(info.record_name());
        fs::File::open(&record).and_then(|f| fsync(&f, &record)).map_err(io_err("syncing", &record))?;
        self.synced.sync()
    }

    /// One snapshot's record (without copying the whole index).
    pub(super) fn get(&self, key: &str) -> Result<Info> {
        self.index.read(|m| m.find(key).cloned()).ok_or_else(|| SnapshotError::NotFound(key.to_string()))
    }

    /// Commit `key` as `name`; with `onto`, a snapshot prepared without a parent gets that
    /// parent (which must be committed) as it is committed.
    pub(super) fn commit(&self, name: &str, key: &str, onto: Option<Option<&str>>) -> Result<()> {
        validate_key(name)?;
        let info = self.get(key)?;
        if info.kind != Kind::Active {
            return Err(SnapshotError::WrongKind { key: key.to_string(), kind: info.kind, action: "commit", wanted: "an active snapshot" });
        }
        if info.ephemeral {
            return Err(SnapshotError::Ephemeral(key.to_string()));
        }
        let new_parent = match onto {
            Some(parent) => {
                if info.parent.is_some() {
                    return Err(SnapshotError::WrongKind {
                        key: key.to_string(),
                        kind: info.kind,
                        action: "commit onto a parent",
                        wanted: "a snapshot prepared without one",
                    });
                }
                if let Some(p) = parent {
                    let chain = self.index.read(|m| self.chain(m, Some(p)))?;
                    if chain.first().is_some_and(|p| p.kind != Kind::Committed) {
                        return Err(SnapshotError::WrongKind {
                            key: p.to_string(),
                            kind: chain[0].kind,
                            action: "a parent",
                            wanted: "a committed snapshot",
                        });
                    }
                    if chain.len() + 1 > MAX_LAYER_DEPTH {
                        return Err(SnapshotError::TooDeep(chain.len() + 1));
                    }
                }
                parent.map(str::to_string)
            }
            None => info.parent.clone(),
        };
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
            if let Some(p) = &new_parent
                && m.snapshots.get(p).is_none_or(|p| p.kind != Kind::Committed)
            {
                return Err(SnapshotError::NotFound(p.clone()));
            }
            let info = m.local.remove(key).or_else(|| m.snapshots.remove(key)).ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
            m.snapshots.insert(
                name.to_string(),
                Info { key: name.to_string(), kind: Kind::Committed, usage: Some(usage), parent: new_parent, ..info },
            );
            Ok(())
        })?;
        // The index names the directory now; the record left in it would be ignored anyway.
        let _ = fs::remove_file(self.path(&info.id).join(info.record_name()));
        Ok(())
    }

    pub(super) fn remove(&self, key: &str) -> Result<()> {
        remove_tree(&self.detach(key, true)?)
    }

    pub(super) fn detach(&self, key: &str, sync: bool) -> Result<PathBuf> {
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

    pub(super) fn usage(&self, key: &str) -> Result<Usage> {
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

    pub(super) fn walk(&self) -> Result<Vec<Info>> {
        let m = self.load()?;
        let mut all: Vec<Info> = m.snapshots.into_values().chain(m.local.into_values()).collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }
}

pub(super) fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 512 || key.contains('\0') {
        return Err(SnapshotError::InvalidKey(key.to_string()));
    }
    Ok(())
}

pub(super) fn random_id() -> String {
    let mut b = [0u8; 12];
    let _ = fs::File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut b));
    hex::encode(b)
}

/// Write an active snapshot's record (fsynced when `durable`).
pub(super) fn write_record(path: &Path, info: &Info, durable: bool) -> io::Result<()> {
    let data = serde_json::to_vec(info).map_err(io::Error::other)?;
    let mut f = fs::File::create(path)?;
    io::Write::write_all(&mut f, &data)?;
    if durable { fsync(&f, path) } else { Ok(()) }
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    fsync(&fs::File::open(dir)?, dir)
}

/// Every fsync of the snapshot store goes through here, so its tests can see what was made
/// durable (a sync that does nothing would otherwise pass every test that cannot crash the machine).
#[cfg_attr(not(any(test, feature = "conformance")), allow(unused_variables))]
pub(super) fn fsync(f: &fs::File, path: &Path) -> io::Result<()> {
    f.sync_all()?;
    #[cfg(any(test, feature = "conformance"))]
    conformance::FSYNCED.lock().unwrap_or_else(|p| p.into_inner()).push(path.to_path_buf());
    Ok(())
}

pub(super) fn remove_tree(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", p)(e)),
    }
}

pub(super) fn tree_usage(dir: &Path) -> Result<Usage> {
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
