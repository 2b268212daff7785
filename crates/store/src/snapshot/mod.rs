//! Snapshots: directory trees for image layers and container writable layers, chained by
//! parent. One [`Snapshotter`], written once ([`Snapshots`]) over a small [`Layout`] that says
//! what a new snapshot starts with and how one is mounted; two layouts: [`OverlayLayout`] (a
//! layer is only its own changes; mounts stack them) and [`VfsLayout`] (a plain copy of the
//! parent, for file systems without overlay). [`conformance`] is the suite every layout passes
//! (exported with the `conformance` feature, for a layout written elsewhere).
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

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod mount;
mod overlay;
mod store;
mod vfs;

pub use overlay::OverlayLayout;
use store::*;
pub use vfs::VfsLayout;

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
    #[error("this snapshotter's layers hold their parents' files: {0:?} cannot be committed onto a parent")]
    NotStandalone(String),
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
    /// Do a layer's files stand alone, without its parent's (overlay: yes; vfs: no)? Then a
    /// layer can be written before its parent is there and [`Snapshotter::commit_onto`] it.
    fn layers_stand_alone(&self) -> bool;
    /// Commit `key`, prepared without a parent, as `name` on top of the committed `parent`
    /// (a pull unpacks layers as they arrive, in any order, and stacks them in order).
    fn commit_onto(&self, name: &str, key: &str, parent: Option<&str>) -> Result<()>;
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

fn bind(source: &Path, ro: bool) -> Mount {
    let mut options = vec!["rbind".to_string()];
    options.push(if ro { "ro" } else { "rw" }.to_string());
    Mount { typ: "bind".into(), source: source.to_path_buf(), options, cwd: None }
}

/// How a back end lays snapshots out: what a new snapshot's directory starts with, and how a
/// snapshot is mounted. Everything else (ids, records, crash safety, removal) is [`Snapshots`]'s.
pub trait Layout: Send + Sync {
    /// Does a layer hold only its own changes (see [`Snapshotter::layers_stand_alone`])?
    fn standalone(&self) -> bool {
        false
    }
    /// Fill `tmp` (a new snapshot's directory, renamed into place after) from its parent chain
    /// (nearest first; empty for a base layer).
    fn fill(&self, snapshots: &Path, tmp: &Path, chain: &[Info]) -> Result<()>;
    /// The mounts that show `info` (its parent chain nearest first), under `snapshots`.
    fn mounts(&self, snapshots: &Path, info: &Info, chain: &[Info]) -> Vec<Mount>;
}

/// The snapshotter over a [`Layout`].
pub struct Snapshots<L: Layout> {
    store: Store,
    layout: L,
}

/// A layer is only its own changes; mounts stack the chain.
pub type Overlay = Snapshots<OverlayLayout>;
/// A layer is a full copy of its parent; mounts are binds.
pub type Vfs = Snapshots<VfsLayout>;

impl<L: Layout> Snapshots<L> {
    /// Open (or make) the snapshots under `root`, with what a crash left cleaned up.
    pub fn with_layout(root: &Path, layout: L) -> Result<Snapshots<L>> {
        Ok(Snapshots { store: Store::open(root)?, layout })
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind, ephemeral: bool, sync: bool) -> Result<Vec<Mount>> {
        let snapshots = self.store.snapshots();
        let info = self.store.create(key, parent, kind, ephemeral, sync, |tmp, chain| self.layout.fill(&snapshots, tmp, chain))?;
        self.mounts_of(&info)
    }

    fn mounts_of(&self, info: &Info) -> Result<Vec<Mount>> {
        let chain = self.store.index.read(|m| self.store.chain(m, info.parent.as_deref()))?;
        Ok(self.layout.mounts(&self.store.snapshots(), info, &chain))
    }
}

impl Snapshots<OverlayLayout> {
    pub fn open(root: &Path) -> Result<Overlay> {
        Snapshots::with_layout(root, OverlayLayout)
    }
}

impl Snapshots<VfsLayout> {
    pub fn open(root: &Path) -> Result<Vfs> {
        Snapshots::with_layout(root, VfsLayout)
    }
}

impl<L: Layout> Snapshotter for Snapshots<L> {
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
        self.mounts_of(&info)
    }

    fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.store.commit(name, key, None)
    }

    fn layers_stand_alone(&self) -> bool {
        self.layout.standalone()
    }

    fn commit_onto(&self, name: &str, key: &str, parent: Option<&str>) -> Result<()> {
        if !self.layout.standalone() {
            return Err(SnapshotError::NotStandalone(key.to_string()));
        }
        self.store.commit(name, key, Some(parent))
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
