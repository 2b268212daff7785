//! Images on disk: records (config digest = image ID, manifest, layers by diffID and chainID),
//! references, and the layer snapshots they share. `images.json` is replaced atomically; layer
//! snapshots are committed under their chainID, so identical layers are stored once whatever
//! image brought them, and a layer is removed only when no image uses it any more.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::{self, ArchiveError, WhiteoutMode};
use crate::content::{ContentError, ContentStore};
use crate::digest::Digest;
use crate::image::{self, Descriptor, History, ImageConfig, Manifest, Platform, RootFs};
use crate::reference::{Reference, ReferenceError};
use crate::snapshot::{Kind, Overlay, SnapshotError, Snapshotter, Vfs};

/// Manifests and configs are small; anything larger is refused rather than read into memory.
const MAX_METADATA_BLOB: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("not a valid image archive: {0}")]
    BadArchive(String),
    #[error("{0:?} matches more than one image; use more of the ID")]
    Ambiguous(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error("{context} {path}: {source}")]
    Io { context: &'static str, path: PathBuf, source: io::Error },
}

type Result<T> = std::result::Result<T, ImagesError>;

fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImagesError {
    let path = path.to_path_buf();
    move |source| ImagesError::Io { context, path, source }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub diff_id: Digest,
    pub chain_id: Digest,
    /// The blob as stored (and as a registry would serve it).
    pub blob: Digest,
    pub media_type: String,
    /// Bytes of the uncompressed layer tar.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: Digest,
    pub manifest: Digest,
    pub layers: Vec<LayerRecord>,
    /// When this engine stored it.
    pub stored: String,
}

#[derive(Default, Clone, Serialize, Deserialize)]
struct Db {
    version: u32,
    images: BTreeMap<String, ImageRecord>,
    /// Normalised reference → image ID.
    refs: BTreeMap<String, Digest>,
    /// diffID → the gzip blob made of it for a push (of a layer stored uncompressed), so the
    /// next push sends the same bytes without compressing again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    compressed: BTreeMap<Digest, Digest>,
    /// The build cache: a step's key → what the step made.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    cache: BTreeMap<String, CacheRecord>,
}

/// What a build step made, kept for the next build: the image config after it (a blob) and
/// its layers. Its layers and blobs are kept by [`ImageStore::gc`] like an image's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub config: Digest,
    pub layers: Vec<LayerRecord>,
    /// The key of the step before (None after a stage's base).
    pub parent: Option<String>,
    /// The instruction, as `docker system df -v` shows it.
    pub description: String,
    pub created: String,
    /// Did the step make a layer of its own (the last of `layers`)?
    pub made_layer: bool,
}

impl Db {
    /// Every blob an image needs: configs, manifests, layer blobs, and the compressed copies
    /// of layers images still use.
    fn used_blobs(&self) -> BTreeSet<Digest> {
        let mut used = BTreeSet::new();
        for i in self.images.values() {
            used.insert(i.id.clone());
            used.insert(i.manifest.clone());
            for l in &i.layers {
                used.insert(l.blob.clone());
                if let Some(c) = self.compressed.get(&l.diff_id) {
                    used.insert(c.clone());
                }
            }
        }
        for c in self.cache.values() {
            used.insert(c.config.clone());
            used.extend(c.layers.iter().map(|l| l.blob.clone()));
        }
        used
    }

    /// Every layer an image or the build cache uses.
    fn used_chains(&self) -> BTreeSet<String> {
        let images = self.images.values().flat_map(|i| i.layers.iter());
        images.chain(self.cache.values().flat_map(|c| c.layers.iter())).map(|l| l.chain_id.to_string()).collect()
    }
}

const DB_VERSION: u32 = 1;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub snapshots_removed: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize {
    pub size: u64,
    pub shared: u64,
    pub unique: u64,
}

/// A writer that hashes and counts what goes through it.
struct Hashing<'a> {
    inner: &'a mut dyn io::Write,
    hasher: sha2::Sha256,
    count: u64,
}

impl io::Write for Hashing<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        sha2::Digest::update(&mut self.hasher, &data[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A layer unpacked from a stream: its diffID and size, and its snapshot to stack.
struct Streamed {
    diff_id: Digest,
    size: u64,
    unstacked: Unstacked,
}

/// A layer unpacked on its own, not yet stacked on the layers under it (see
/// [`ImageStore::unpack_alone`]).
#[derive(Debug)]
pub struct Unstacked {
    key: String,
    /// Bytes of the uncompressed layer tar.
    pub size: u64,
}

/// Names of work in flight, each followed by its owner (see [`crate::owner`]).
const EXTRACT: &str = "extract-";
const IMPORT: &str = "import-";
const LOAD: &str = "load-";
const COMPRESS: &str = "compress-";

/// Image writes in flight and whether a collection runs (see [`ImageStore::write_guard`]).
#[derive(Default)]
struct Writes {
    state: std::sync::Mutex<WriteState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct WriteState {
    writers: usize,
    gc: bool,
}

/// A write in flight: [`ImageStore::gc`] waits until every one is dropped.
pub struct WriteHold(std::sync::Arc<Writes>);

impl Drop for WriteHold {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        st.writers -= 1;
        self.0.changed.notify_all();
    }
}

/// A collection alone: no writes in flight, none starting.
struct GcHold<'a>(&'a Writes);

impl GcHold<'_> {
    fn take(w: &Writes) -> GcHold<'_> {
        let st = w.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = w.changed.wait_while(st, |st| st.gc || st.writers > 0).unwrap_or_else(|p| p.into_inner());
        st.gc = true;
        GcHold(w)
    }
}

impl Drop for GcHold<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner()).gc = false;
        self.0.changed.notify_all();
    }
}

pub struct ImageStore {
    /// images.json, read once at open; changed through [`ImageStore::update`] only.
    index: crate::index::JsonIndex<Db>,
    /// Writes of images (import, load, and what else brings blobs and layers in before it
    /// records the image) hold this shared; [`ImageStore::gc`] holds it alone, so it never
    /// takes what a write in flight has stored and not yet recorded.
    writes: std::sync::Arc<Writes>,
    pub content: ContentStore,
    pub snapshots: Box<dyn Snapshotter>,
    whiteouts: WhiteoutMode,
}

/// Which snapshotter to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Overlay,
    Vfs,
}

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

impl ImageStore {
    /// Open the store under `root` (`content/`, `snapshots/`, `snapshots.json`, `images.json`).
    pub fn open(root: &Path, driver: Driver) -> Result<ImageStore> {
        fs::create_dir_all(root).map_err(io_err("creating", root))?;
        let content = ContentStore::open(root.join("content"))?;
        let (snapshots, whiteouts): (Box<dyn Snapshotter>, _) = match driver {
            Driver::Overlay => (Box::new(Overlay::open(root)?), WhiteoutMode::Overlay),
            Driver::Vfs => (Box::new(Vfs::open(root)?), WhiteoutMode::Delete),
        };
        let db = root.join("images.json");
        let index = crate::index::JsonIndex::open(db.clone()).map_err(io_err("reading", &db))?;
        let store = ImageStore { index, writes: Default::default(), content, snapshots, whiteouts };
        store.remove_abandoned()?;
        Ok(store)
    }

    /// What a killed unpack, import or load left: `extract-…` snapshots and `import-…`/`load-…`
    /// ingests whose owner is gone, blob writes' ingests and unnamed ones no writer holds. Each
    /// is removed on its own: one that cannot be is reported and the rest go.
    fn remove_abandoned(&self) -> Result<()> {
        for info in self.snapshots.walk()? {
            if info.kind == Kind::Active && crate::owner::alive(&info.key, EXTRACT) == Some(false) {
                tracing::info!(key = %info.key, "removing the leftover of an interrupted unpack");
                if let Err(e) = self.snapshots.remove(&info.key) {
                    tracing::warn!(key = %info.key, "removing the leftover of an interrupted unpack: {e}");
                }
            }
        }
        for (reference, _) in self.content.ingests()? {
            let alive = [IMPORT, LOAD, COMPRESS].iter().find_map(|p| crate::owner::alive(&reference, p));
            // A blob write's ingest is removed only when no writer holds its lock.
            if (alive == Some(false) || reference.starts_with(crate::content::BLOB_INGEST))
                && let Err(e) = self.content.remove_ingest(&reference)
            {
                tracing::warn!("removing the abandoned ingest {reference:?}: {e}");
            }
        }
        if let Err(e) = self.content.remove_unnamed_ingests() {
            tracing::warn!("removing abandoned ingests: {e}");
        }
        Ok(())
    }

    /// Shared hold on image writes (see `writes`): hold it while bringing in what an image
    /// record will name.
    /// The hold is owned and `Send`, so an async pull keeps it across its awaits.
    pub fn write_guard(&self) -> WriteHold {
        let (lock, cv) = (&self.writes.state, &self.writes.changed);
        let mut st = cv.wait_while(lock.lock().unwrap_or_else(|p| p.into_inner()), |st| st.gc).unwrap_or_else(|p| p.into_inner());
        st.writers += 1;
        WriteHold(std::sync::Arc::clone(&self.writes))
    }

    /// Remove what nothing uses: committed layers no image uses (leaves first; a layer under a
    /// container's writable layer stays, as a parent), unpacks and ingests whose owner is gone,
    /// and blobs no image references. Containers' writable layers are the engine's, never
    /// touched here. Waits for image writes in flight in this process, and holds off new ones.
    pub fn gc(&self) -> Result<GcReport> {
        let _alone = GcHold::take(&self.writes);
        self.remove_abandoned()?;
        let db = self.load()?;
        let used_chains = db.used_chains();
        let mut report = GcReport::default();
        // Leaves first: repeat while removals free up parents.
        loop {
            let mut progress = false;
            for info in self.snapshots.walk()? {
                if info.kind != Kind::Committed || used_chains.contains(&info.key) {
                    continue;
                }
                let size = self.snapshots.usage(&info.key).map(|u| u.size).unwrap_or(0);
                match self.snapshots.remove(&info.key) {
                    Ok(()) => {
                        report.snapshots_removed += 1;
                        report.bytes_freed += size;
                        progress = true;
                    }
                    Err(SnapshotError::HasChildren(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if !progress {
                break;
            }
        }
        let used_blobs = db.used_blobs();
        for (d, size) in self.content.list()? {
            if !used_blobs.contains(&d) {
                match self.content.delete(&d) {
                    Ok(()) | Err(ContentError::NotFound(_)) => {
                        report.blobs_removed += 1;
                        report.bytes_freed += size;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(report)
    }

    /// Blobs no image references, among `candidates` (what one write brought in): deleted,
    /// unless another write in flight holds them too.
    pub fn drop_unreferenced(&self, candidates: &[crate::content::Held]) -> Result<()> {
        let used = self.load()?.used_blobs();
        for h in candidates {
            if !used.contains(h.digest()) && !h.shared() {
                match self.content.delete(h.digest()) {
                    Ok(()) | Err(ContentError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Each layer's size as `docker history` shows it: its unpacked content (see [`Usage`]).
    ///
    /// [`Usage`]: crate::snapshot::Usage
    pub fn layer_sizes(&self, img: &ImageRecord) -> Vec<u64> {
        img.layers.iter().map(|l| self.snapshots.usage(&l.chain_id.to_string()).map(|u| u.size).unwrap_or(0)).collect()
    }

    /// Sizes as `docker images` and `docker system df` show them: the image's layers, the part
    /// shared with other images, and the rest.
    pub fn sizes(&self) -> Result<BTreeMap<Digest, ImageSize>> {
        let db = self.load()?;
        let mut users: BTreeMap<&Digest, usize> = BTreeMap::new();
        for img in db.images.values() {
            for l in &img.layers {
                *users.entry(&l.chain_id).or_default() += 1;
            }
        }
        let mut layer_size: BTreeMap<&Digest, u64> = BTreeMap::new();
        for chain in users.keys() {
            layer_size.insert(chain, self.snapshots.usage(&chain.to_string()).map(|u| u.size).unwrap_or(0));
        }
        Ok(db
            .images
            .values()
            .map(|img| {
                let size: u64 = img.layers.iter().map(|l| layer_size[&l.chain_id]).sum();
                let shared: u64 = img.layers.iter().filter(|l| users[&l.chain_id] > 1).map(|l| layer_size[&l.chain_id]).sum();
                (img.id.clone(), ImageSize { size, shared, unique: size - shared })
            })
            .collect())
    }

    /// A consistent copy of the index.
    fn load(&self) -> Result<Db> {
        Ok(self.index.get())
    }

    /// Change the records (written atomically, then applied in memory).
    fn update<T>(&self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        self.index.update(
            |db| {
                db.version = DB_VERSION;
                f(db)
            },
            io_err("writing", self.index.path()),
        )
    }

    /// Make sure the layer `chain_id` (on `parent`) is unpacked from `blob` and committed.
    /// With `diff_id`, the uncompressed stream must hash to it (a loaded archive's layers are
    /// checked against their config); returns the uncompressed size when it unpacked.
    pub fn unpack(&self, parent: Option<&Digest>, chain_id: &Digest, blob: &Digest, diff_id: Option<&Digest>) -> Result<Option<u64>> {
        if self.snapshots.stat(&chain_id.to_string()).is_ok() {
            return Ok(None); // shared with an image we already have
        }
        let key = format!("{EXTRACT}{}-{}", crate::owner::me(), chain_id.hex());
        let parent_key = parent.map(|p| p.to_string());
        self.snapshots.prepare(&key, parent_key.as_deref())?;
        let result = (|| -> Result<u64> {
            let file = self.content.open_blob(blob)?;
            let count = self.apply_layer(&key, io::BufReader::with_capacity(1 << 20, file), diff_id)?;
            self.snapshots.commit(&chain_id.to_string(), &key)?;
            Ok(count)
        })();
        if result.is_err() {
            let _ = self.snapshots.remove(&key);
        }
        result.map(Some)
    }

    /// Decompress (gzip, zstd or none, by magic) and apply `layer` to the active snapshot `key`,
    /// hashing the uncompressed stream as it goes (checked against `diff_id`); returns its size.
    fn apply_layer(&self, key: &str, layer: impl Read + Send + 'static, diff_id: Option<&Digest>) -> Result<u64> {
        let dir = self.snapshots.dir(key)?;
        // Decompress and hash on one core while the other unpacks.
        let mut stream = archive::Pipeline::start(move |w| {
            let mut layer = archive::decompress(layer)?;
            let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
            let mut count = 0u64;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = layer.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                sha2::Digest::update(&mut hasher, &buf[..n]);
                count += n as u64;
                w.write_all(&buf[..n])?;
            }
            Ok((Digest::from_sha256(&sha2::Digest::finalize(hasher).into()), count))
        });
        archive::apply(&dir, &mut stream, self.whiteouts)?;
        // The diffID covers every byte, the tar's trailing padding included.
        let (actual, count) = stream.finish().map_err(|e| ImagesError::Archive(ArchiveError::Read(e)))?;
        if let Some(expected) = diff_id
            && *expected != actual
        {
            return Err(ImagesError::Content(ContentError::DigestMismatch { expected: expected.clone(), actual }));
        }
        Ok(count)
    }

    /// Can a layer be unpacked before the one under it is here ([`ImageStore::unpack_alone`])?
    pub fn unpacks_out_of_order(&self) -> bool {
        self.snapshots.layers_stand_alone()
    }

    /// Unpack a layer from `layer` (its compressed bytes as they arrive) into a snapshot of its
    /// own, before the layers under it are there; checked against `diff_id`. Stack it with
    /// [`ImageStore::stack_layer`], or drop it with [`ImageStore::drop_unstacked`]. Only where
    /// [`ImageStore::unpacks_out_of_order`].
    pub fn unpack_alone(&self, chain_id: &Digest, layer: impl Read + Send + 'static, diff_id: &Digest) -> Result<Unstacked> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{EXTRACT}{}-{}-{n}", crate::owner::me(), chain_id.hex());
        self.snapshots.prepare(&key, None)?;
        match self.apply_layer(&key, layer, Some(diff_id)) {
            Ok(size) => Ok(Unstacked { key, size }),
            Err(e) => {
                let _ = self.snapshots.remove(&key);
                Err(e)
            }
        }
    }

    /// Commit a layer from [`ImageStore::unpack_alone`] as `chain_id` on `parent` (committed
    /// first). When another pull committed the same layer meanwhile, this copy is dropped.
    pub fn stack_layer(&self, layer: Unstacked, chain_id: &Digest, parent: Option<&Digest>) -> Result<u64> {
        if self.has_layer(chain_id) {
            self.drop_unstacked(layer);
            return Ok(self.snapshots.usage(&chain_id.to_string()).map(|u| u.size).unwrap_or(0));
        }
        let parent = parent.map(|p| p.to_string());
        match self.snapshots.commit_onto(&chain_id.to_string(), &layer.key, parent.as_deref()) {
            Ok(()) => Ok(layer.size),
            Err(e) => {
                self.drop_unstacked(layer);
                Err(e.into())
            }
        }
    }

    pub fn drop_unstacked(&self, layer: Unstacked) {
        if let Err(e) = self.snapshots.remove(&layer.key) {
            tracing::warn!(key = %layer.key, "removing an unpacked layer: {e}");
        }
    }

    /// `docker import`: a root filesystem tar (plain or gzip) becomes a one-layer image.
    /// A root filesystem tar becomes a one-layer image with `config` as its container defaults.
    pub fn import(
        &self,
        tar: impl Read,
        reference: Option<&Reference>,
        comment: &str,
        config: crate::image::ContainerConfig,
    ) -> Result<Digest> {
        let mut input = archive::decompress(tar).map_err(|e| ImagesError::Archive(ArchiveError::Read(e)))?;
        let _writing = self.write_guard();
        let ingest = format!("{IMPORT}{}-{}", crate::owner::me(), now());
        let mut w = self.content.writer(&ingest, None)?;
        let size = io::copy(&mut input, &mut w).map_err(|e| ImagesError::Archive(ArchiveError::Read(e)))?;
        let diff_id = w.commit()?;
        let held = self.content.hold(&diff_id);
        let chain_id = diff_id.clone();
        if let Err(e) = self.unpack(None, &chain_id, &diff_id, None) {
            let _ = self.drop_unreferenced(&[held]);
            return Err(e);
        }
        let created = now();
        let config = ImageConfig {
            architecture: Platform::host().architecture,
            os: "linux".into(),
            created: Some(created.clone()),
            comment: (!comment.is_empty()).then(|| comment.to_string()),
            rootfs: RootFs { typ: "layers".into(), diff_ids: vec![diff_id.clone()] },
            config,
            history: vec![History {
                created: Some(created),
                comment: Some(comment.to_string()).filter(|c| !c.is_empty()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let config_bytes = serde_json::to_vec(&config).map_err(|e| ImagesError::Image(image::ImageError::BadConfig(e)))?;
        let layers = vec![LayerRecord {
            diff_id: diff_id.clone(),
            chain_id,
            blob: diff_id.clone(),
            media_type: image::MEDIA_DOCKER_LAYER.into(),
            size,
        }];
        self.record(config_bytes, layers, reference)
    }

    /// `commit`: the writable snapshot `key`, made on image `parent`, becomes a new layer on top
    /// of the parent's, and the image is recorded with the parent's config, `config` as its
    /// container defaults and a history entry (`author`, `comment`, `created_by`). The layer's
    /// tar goes straight from the snapshot into a verified blob, then is unpacked as a layer of
    /// its own (shared with any image that has the same chain). The caller keeps the snapshot
    /// from changing meanwhile (a paused or stopped container).
    pub fn commit(
        &self,
        key: &str,
        parent: &Digest,
        config: crate::image::ContainerConfig,
        history: History,
        reference: Option<&Reference>,
    ) -> Result<Digest> {
        let base = self.get(parent)?;
        let (_, mut image_config) = self.config(parent)?;
        let _writing = self.write_guard();
        let layer = self.layer_from_snapshot(key, &base.layers)?;
        let mut diff_ids: Vec<Digest> = base.layers.iter().map(|l| l.diff_id.clone()).collect();
        diff_ids.push(layer.diff_id.clone());
        let created = now();
        image_config.created = Some(created.clone());
        image_config.author = history.author.clone().filter(|a| !a.is_empty());
        image_config.comment = history.comment.clone().filter(|c| !c.is_empty());
        image_config.config = config;
        image_config.rootfs.diff_ids = diff_ids;
        image_config.history.push(History { created: Some(created), ..history });
        let config_bytes = serde_json::to_vec(&image_config).map_err(|e| ImagesError::Image(image::ImageError::BadConfig(e)))?;
        let mut layers = base.layers.clone();
        layers.push(layer);
        self.record(config_bytes, layers, reference)
    }

    /// The writable snapshot `key`, made on the layers `under`, becomes a layer of its own
    /// stacked on them (shared with any image that has the same chain); the snapshot stays.
    /// The caller keeps the snapshot from changing meanwhile, and holds a
    /// [`ImageStore::write_guard`] until something records the layer.
    pub fn layer_from_snapshot(&self, key: &str, under: &[LayerRecord]) -> Result<LayerRecord> {
        let upper = self.snapshots.dir(key)?;
        let parent_chain = under.last().map(|l| l.chain_id.clone());
        let chain_of = |diff_id: &Digest| {
            let mut ids: Vec<Digest> = under.iter().map(|l| l.diff_id.clone()).collect();
            ids.push(diff_id.clone());
            image::chain_ids(&ids).pop().unwrap_or_else(|| diff_id.clone())
        };
        let (diff_id, size, chain_id) = if self.snapshots.layers_stand_alone() {
            // One pass: the layer's tar is made from the upper directory, hashed, and unpacked
            // as it is made, into a layer of its own stacked on the image's. Its blob is written
            // only when a push or save needs it (`ensure_layer_blob`), from that layer.
            let upper = upper.clone();
            let layer = self.unpack_stream(move |w| {
                crate::diff::diff(crate::diff::Source::Overlay(&upper), w).map(|_| ()).map_err(|e| io::Error::other(e.to_string()))
            })?;
            let (diff_id, size) = (layer.diff_id.clone(), layer.size);
            let chain_id = chain_of(&diff_id);
            self.stack_layer(layer.unstacked, &chain_id, parent_chain.as_ref())?;
            (diff_id, size, chain_id)
        } else {
            // A plain copy is compared with its parent's tree.
            let lower = match &parent_chain {
                Some(c) => self.snapshots.dir(&c.to_string())?,
                None => PathBuf::from("/nonexistent"),
            };
            let source = crate::diff::Source::Compare { lower: &lower, upper: &upper };
            let ingest = format!("{IMPORT}{}-{}", crate::owner::me(), now());
            let w = self.content.writer(&ingest, None)?;
            let w = crate::diff::diff(source, w).map_err(ImagesError::Archive)?;
            let size = w.offset();
            let diff_id = w.commit()?;
            let held = self.content.hold(&diff_id);
            let chain_id = chain_of(&diff_id);
            if let Err(e) = self.unpack(parent_chain.as_ref(), &chain_id, &diff_id, None) {
                let _ = self.drop_unreferenced(&[held]);
                return Err(e);
            }
            (diff_id, size, chain_id)
        };
        Ok(LayerRecord { diff_id: diff_id.clone(), chain_id, blob: diff_id, media_type: image::MEDIA_DOCKER_LAYER.into(), size })
    }

    /// Record an image of `config_bytes` on `layers` (unpacked already), named by each of
    /// `refs`: a build's result.
    pub fn record_image(&self, config_bytes: Vec<u8>, layers: Vec<LayerRecord>, refs: &[Reference]) -> Result<Digest> {
        // The same image again (a fully cached rebuild): named, nothing written or synced.
        let id = Digest::of(&config_bytes);
        let (known, named) = self.index.read(|db| {
            let known = db.images.contains_key(&id.to_string());
            (known, known && refs.iter().all(|r| db.refs.get(&r.to_string()) == Some(&id)))
        });
        if named {
            return Ok(id);
        }
        if known {
            self.update(|db| {
                if !db.images.contains_key(&id.to_string()) {
                    return Err(ImagesError::NotFound(id.to_string()));
                }
                for r in refs {
                    db.refs.insert(r.to_string(), id.clone());
                }
                Ok(())
            })?;
            return Ok(id);
        }
        let id = self.record(config_bytes, layers, refs.first())?;
        if refs.len() > 1 {
            self.update(|db| {
                for r in &refs[1..] {
                    db.refs.insert(r.to_string(), id.clone());
                }
                Ok(())
            })?;
        }
        Ok(id)
    }

    /// A build step's result from the cache: the config after it and its layers, when every
    /// layer is still here.
    pub fn cache_get(&self, key: &str) -> Option<(ImageConfig, Vec<LayerRecord>)> {
        let rec = self.index.read(|db| db.cache.get(key).cloned())?;
        if !rec.layers.last().is_none_or(|l| self.has_layer(&l.chain_id)) {
            return None;
        }
        let bytes = self.content.read(&rec.config, MAX_METADATA_BLOB).ok()?;
        let config = ImageConfig::parse(&bytes).ok()?;
        Some((config, rec.layers))
    }

    /// Keep a build step's result (under the caller's [`ImageStore::write_guard`], held since
    /// its layer was made). A step that made a layer has it synced first, so a cache record
    /// never names a layer a crash of the machine could have cut short.
    pub fn cache_put(
        &self,
        key: &str,
        config_bytes: &[u8],
        layers: Vec<LayerRecord>,
        parent: Option<String>,
        description: String,
        made_layer: bool,
    ) -> Result<()> {
        if made_layer {
            self.sync_layers()?;
        }
        let config = self.content.write_blob(config_bytes, None)?;
        let rec = CacheRecord { config, layers, parent, description, created: now(), made_layer };
        self.update(|db| {
            db.cache.insert(key.to_string(), rec);
            Ok(())
        })
    }

    /// The build cache's records, each with the size of the layer it made (0 for none).
    pub fn cache_list(&self) -> Result<Vec<(String, CacheRecord, u64)>> {
        let db = self.load()?;
        Ok(db
            .cache
            .into_iter()
            .map(|(k, c)| {
                let size = match (c.made_layer, c.layers.last()) {
                    (true, Some(l)) => self.snapshots.usage(&l.chain_id.to_string()).map(|u| u.size).unwrap_or(0),
                    _ => 0,
                };
                (k, c, size)
            })
            .collect())
    }

    /// Forget the build cache's records (those `keep` does not keep), then remove what
    /// nothing uses any more; returns the keys forgotten and the bytes freed.
    pub fn cache_prune(&self, keep: impl Fn(&CacheRecord) -> bool) -> Result<(Vec<String>, u64)> {
        let removed = self.update(|db| {
            let gone: Vec<String> = db.cache.iter().filter(|(_, c)| !keep(c)).map(|(k, _)| k.clone()).collect();
            for k in &gone {
                db.cache.remove(k);
            }
            Ok(gone)
        })?;
        let freed = if removed.is_empty() { 0 } else { self.gc()?.bytes_freed };
        Ok((removed, freed))
    }

    /// Unpack the uncompressed layer tar that `produce` writes into a snapshot of its own,
    /// hashing it as it goes (for [`ImageStore::stack_layer`]).
    fn unpack_stream(&self, produce: impl FnOnce(&mut dyn io::Write) -> io::Result<()> + Send + 'static) -> Result<Streamed> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{EXTRACT}{}-stream-{}-{n}", crate::owner::me(), now());
        self.snapshots.prepare(&key, None)?;
        let applied = (|| -> Result<(Digest, u64)> {
            let dir = self.snapshots.dir(&key)?;
            let mut stream = archive::Pipeline::start(move |w| {
                let mut hashed = Hashing { inner: w, hasher: <sha2::Sha256 as sha2::Digest>::new(), count: 0 };
                produce(&mut hashed)?;
                Ok((Digest::from_sha256(&sha2::Digest::finalize(hashed.hasher).into()), hashed.count))
            });
            archive::apply(&dir, &mut stream, self.whiteouts)?;
            stream.finish().map_err(|e| ImagesError::Archive(ArchiveError::Read(e)))
        })();
        match applied {
            Ok((diff_id, size)) => Ok(Streamed { diff_id, size, unstacked: Unstacked { key, size } }),
            Err(e) => {
                let _ = self.snapshots.remove(&key);
                Err(e)
            }
        }
    }

    /// Make sure layer `layer`'s own (uncompressed) blob is stored. A committed layer's is
    /// written from its unpacked snapshot when first needed: the layer tar is made the same way
    /// from the same files, so it has the same bytes, and it is checked against the diffID.
    pub fn ensure_layer_blob(&self, layer: &LayerRecord) -> Result<()> {
        if self.content.info(&layer.blob).is_ok() {
            return Ok(());
        }
        if layer.blob != layer.diff_id || !self.snapshots.layers_stand_alone() || !self.has_layer(&layer.chain_id) {
            return Err(ImagesError::NotFound(format!("the blob of layer {}", layer.diff_id)));
        }
        let dir = self.snapshots.dir(&layer.chain_id.to_string())?;
        let ingest = format!("{IMPORT}{}-layer-{}", crate::owner::me(), layer.diff_id.hex());
        let w = self.content.writer(&ingest, Some((layer.diff_id.clone(), layer.size)))?;
        let w = crate::diff::diff(crate::diff::Source::Overlay(&dir), w).map_err(ImagesError::Archive)?;
        w.commit()?;
        Ok(())
    }

    /// Store config and manifest blobs for `layers` (already unpacked) and record the image.
    pub(crate) fn record(&self, config_bytes: Vec<u8>, layers: Vec<LayerRecord>, reference: Option<&Reference>) -> Result<Digest> {
        self.sync_layers()?;
        let id = self.content.write_blob(&config_bytes, None)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(image::MEDIA_DOCKER_MANIFEST.into()),
            config: Descriptor {
                media_type: image::MEDIA_DOCKER_CONFIG.into(),
                digest: id.clone(),
                size: config_bytes.len() as u64,
                platform: None,
                annotations: Default::default(),
                urls: Vec::new(),
            },
            layers: layers
                .iter()
                .map(|l| Descriptor {
                    media_type: l.media_type.clone(),
                    digest: l.blob.clone(),
                    size: self.content.info(&l.blob).unwrap_or(l.size),
                    platform: None,
                    annotations: Default::default(),
                    urls: Vec::new(),
                })
                .collect(),
            annotations: Default::default(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| ImagesError::Image(image::ImageError::BadManifest(e)))?;
        let manifest = self.content.write_blob(&manifest_bytes, None)?;
        self.update(|db| {
            db.images.insert(id.to_string(), ImageRecord { id: id.clone(), manifest, layers, stored: now() });
            if let Some(r) = reference {
                db.refs.insert(r.to_string(), id.clone());
            }
            Ok(())
        })?;
        Ok(id)
    }

    /// A stored blob whose content is the layer `diff_id` as a registry takes it (compressed),
    /// with its media type: the image's own blob when it is compressed and here, else the gzip
    /// copy an earlier push made, else any image's compressed blob of the same layer. None when
    /// only an uncompressed blob (or none) is here: see [`ImageStore::compress_layer`].
    pub fn push_blob(&self, layer: &LayerRecord) -> Option<(Digest, String)> {
        let here = |d: &Digest| self.content.info(d).is_ok();
        let compressed = |t: &str| t != image::MEDIA_DOCKER_LAYER && t != image::MEDIA_OCI_LAYER;
        if compressed(&layer.media_type) && here(&layer.blob) {
            return Some((layer.blob.clone(), layer.media_type.clone()));
        }
        self.index.read(|db| {
            if let Some(c) = db.compressed.get(&layer.diff_id).filter(|c| here(c)) {
                return Some((c.clone(), image::MEDIA_DOCKER_LAYER_GZIP.to_string()));
            }
            db.images
                .values()
                .flat_map(|i| i.layers.iter())
                .find(|l| l.diff_id == layer.diff_id && compressed(&l.media_type) && here(&l.blob))
                .map(|l| (l.blob.clone(), l.media_type.clone()))
        })
    }

    /// Gzip the layer `diff_id` from any stored blob of it (checking it is that layer), store
    /// the result and remember it, so later pushes reuse it. Returns the gzip blob's digest.
    pub fn compress_layer(&self, diff_id: &Digest) -> Result<Digest> {
        let layers: Vec<LayerRecord> =
            self.index.read(|db| db.images.values().flat_map(|i| i.layers.iter()).filter(|l| l.diff_id == *diff_id).cloned().collect());
        let source = layers.iter().find(|l| self.content.info(&l.blob).is_ok()).map(|l| l.blob.clone());
        let read = |e: io::Error| ImagesError::Archive(ArchiveError::Read(e));
        let mut layer: Box<dyn Read> = match source {
            Some(source) => {
                let file = self.content.open_blob(&source)?;
                archive::decompress(io::BufReader::with_capacity(1 << 20, file)).map_err(read)?
            }
            // A committed layer without its blob: its tar is made from its snapshot, as
            // `ensure_layer_blob` makes it, and checked below like any other.
            None => {
                let committed = layers
                    .iter()
                    .find(|l| l.blob == l.diff_id && self.snapshots.layers_stand_alone() && self.has_layer(&l.chain_id))
                    .ok_or_else(|| ImagesError::NotFound(format!("a stored blob of layer {diff_id}")))?;
                let dir = self.snapshots.dir(&committed.chain_id.to_string())?;
                Box::new(archive::Pipeline::start(move |w| {
                    crate::diff::diff(crate::diff::Source::Overlay(&dir), w).map(|_| ()).map_err(|e| io::Error::other(e.to_string()))
                }))
            }
        };
        let ingest = format!("{COMPRESS}{}-{}", crate::owner::me(), diff_id.hex());
        let mut w = self.content.writer(&ingest, None)?;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        {
            let mut gz = flate2::write::GzEncoder::new(&mut w, flate2::Compression::fast());
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = layer.read(&mut buf).map_err(read)?;
                if n == 0 {
                    break;
                }
                sha2::Digest::update(&mut hasher, &buf[..n]);
                io::Write::write_all(&mut gz, &buf[..n]).map_err(read)?;
            }
            gz.finish().map_err(read)?;
        }
        let actual = Digest::from_sha256(&sha2::Digest::finalize(hasher).into());
        if actual != *diff_id {
            w.abort()?;
            return Err(ImagesError::Content(ContentError::DigestMismatch { expected: diff_id.clone(), actual }));
        }
        let blob = w.commit()?;
        self.update(|db| {
            db.compressed.insert(diff_id.clone(), blob.clone());
            Ok(())
        })?;
        Ok(blob)
    }

    /// The image's manifest as stored (a pulled image's as the registry served it).
    pub fn manifest(&self, img: &ImageRecord) -> Result<Vec<u8>> {
        Ok(self.content.read(&img.manifest, MAX_METADATA_BLOB)?)
    }

    /// Make every unpacked layer's files durable before an image that names them is recorded:
    /// one `syncfs` of the store's filesystem (layers are written without an fsync per file).
    /// A layer committed but not yet synced when the machine crashes belongs to no image, and
    /// the collection at the next start removes it.
    pub fn sync_layers(&self) -> Result<()> {
        let root = self.index.path().parent().unwrap_or(Path::new("/")).to_path_buf();
        let dir = fs::File::open(&root).map_err(io_err("opening", &root))?;
        rustix::fs::syncfs(&dir).map_err(|e| ImagesError::Io { context: "syncing the filesystem of", path: root, source: e.into() })
    }

    /// Is the layer `chain_id` unpacked already (from any image)?
    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        self.snapshots.stat(&chain_id.to_string()).is_ok()
    }

    /// Record an image pulled from a registry: its `manifest` and `config` as the registry
    /// served them (the manifest's digest is the repository digest), `layers` already unpacked
    /// and their blobs stored, and the references that now name it. Returns the image ID.
    pub fn record_pulled(&self, manifest: &[u8], config: &[u8], layers: Vec<LayerRecord>, refs: &[Reference]) -> Result<Digest> {
        self.sync_layers()?;
        let id = self.content.write_blob(config, None)?;
        let manifest = self.content.write_blob(manifest, None)?;
        self.update(|db| {
            db.images.insert(id.to_string(), ImageRecord { id: id.clone(), manifest, layers, stored: now() });
            for r in refs {
                db.refs.insert(r.to_string(), id.clone());
            }
            Ok(())
        })?;
        Ok(id)
    }

    /// The image a reference names, if any (no ID prefixes).
    pub fn lookup(&self, reference: &Reference) -> Option<Digest> {
        self.index.read(|db| db.refs.get(&reference.to_string()).cloned())
    }

    /// An image by full ID (`sha256:…` or 64 hex), reference (`busybox`, `busybox:1`) or unique
    /// ID prefix, in Docker's order: a name wins over an ID prefix (`cafe` is the image named
    /// so, whatever IDs start with those letters).
    pub fn resolve(&self, name: &str) -> Result<Digest> {
        let db = self.load()?;
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        let is_hex = !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let by_prefix = || -> Result<Digest> {
            let matches: Vec<&ImageRecord> = db.images.values().filter(|i| i.id.hex().starts_with(hex)).collect();
            match matches.len() {
                1 => Ok(matches[0].id.clone()),
                0 => Err(ImagesError::NotFound(name.to_string())),
                _ => Err(ImagesError::Ambiguous(name.to_string())),
            }
        };
        if is_hex && (hex.len() == 64 || name.starts_with("sha256:")) {
            return by_prefix();
        }
        let named = Reference::parse(name).map(|r| db.refs.get(&r.to_string()).cloned());
        match named {
            Ok(Some(id)) => Ok(id),
            _ if is_hex => by_prefix(),
            Ok(None) => Err(ImagesError::NotFound(name.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    pub fn get(&self, id: &Digest) -> Result<ImageRecord> {
        self.load()?.images.get(&id.to_string()).cloned().ok_or_else(|| ImagesError::NotFound(id.to_string()))
    }

    /// The config's raw bytes (whose digest is the ID) and its parsed form.
    pub fn config(&self, id: &Digest) -> Result<(Vec<u8>, ImageConfig)> {
        let raw = self.content.read(id, MAX_METADATA_BLOB)?;
        let parsed = ImageConfig::parse(&raw)?;
        Ok((raw, parsed))
    }

    /// Every image with the references that point at it.
    pub fn list(&self) -> Result<Vec<(ImageRecord, Vec<Reference>)>> {
        let db = self.load()?;
        Ok(db
            .images
            .values()
            .map(|img| {
                let refs = db.refs.iter().filter(|(_, id)| **id == img.id).filter_map(|(r, _)| Reference::parse(r).ok()).collect();
                (img.clone(), refs)
            })
            .collect())
    }

    pub fn tag(&self, source: &str, target: &Reference) -> Result<()> {
        let id = self.resolve(source)?;
        self.update(|db| {
            if !db.images.contains_key(&id.to_string()) {
                return Err(ImagesError::NotFound(source.to_string()));
            }
            db.refs.insert(target.to_string(), id);
            Ok(())
        })
    }

    /// Remove a reference; returns the image it pointed at.
    pub fn untag(&self, reference: &Reference) -> Result<Digest> {
        self.update(|db| db.refs.remove(&reference.to_string()).ok_or_else(|| ImagesError::NotFound(reference.familiar())))
    }

    /// Remove an image, its references, and every layer snapshot and blob no other image uses.
    pub fn remove(&self, id: &Digest) -> Result<()> {
        let img = self.update(|db| {
            let img = db.images.remove(&id.to_string()).ok_or_else(|| ImagesError::NotFound(id.to_string()))?;
            db.refs.retain(|_, v| v != id);
            Ok(img)
        })?;
        let db = self.load()?;
        let used_chains = db.used_chains();
        let used_blobs = db.used_blobs();
        // Leaf layers first: a snapshot with children cannot go before them.
        for l in img.layers.iter().rev() {
            if !used_chains.contains(&l.chain_id.to_string()) {
                match self.snapshots.remove(&l.chain_id.to_string()) {
                    Ok(()) | Err(SnapshotError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let compressed: Vec<Digest> = img.layers.iter().filter_map(|l| db.compressed.get(&l.diff_id).cloned()).collect();
        for b in img.layers.iter().map(|l| &l.blob).chain([&img.id, &img.manifest]).chain(compressed.iter()) {
            if !used_blobs.contains(b) {
                match self.content.delete(b) {
                    Ok(()) | Err(ContentError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{root_or_skip, rootfs_tar};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn import_makes_a_one_layer_image_found_by_name_id_and_prefix() {
        if !root_or_skip() {
            return;
        }
        for driver in [Driver::Overlay, Driver::Vfs] {
            let t = tempfile::tempdir().unwrap();
            let s = ImageStore::open(t.path(), driver).unwrap();
            let r = Reference::parse("busybox").unwrap();
            let id = s.import(&gzip(&rootfs_tar("one"))[..], Some(&r), "Imported from -", Default::default()).unwrap();
            assert_eq!(s.resolve("busybox").unwrap(), id);
            assert_eq!(s.resolve("busybox:latest").unwrap(), id);
            assert_eq!(s.resolve("docker.io/library/busybox").unwrap(), id);
            assert_eq!(s.resolve(&id.to_string()).unwrap(), id);
            assert_eq!(s.resolve(&id.hex()[..12]).unwrap(), id);
            let (raw, config) = s.config(&id).unwrap();
            assert_eq!(Digest::of(&raw), id, "the ID is the digest of the config bytes");
            assert_eq!(config.rootfs.diff_ids.len(), 1);
            let img = s.get(&id).unwrap();
            let layer = &img.layers[0];
            assert_eq!(layer.diff_id, Digest::of(&rootfs_tar("one")), "diffID is the digest of the uncompressed tar");
            let dir = s.snapshots.dir(&layer.chain_id.to_string()).unwrap();
            assert_eq!(fs::read_to_string(dir.join("etc/marker")).unwrap(), "one");
            let manifest = Manifest::parse(&s.content.read(&img.manifest, 1 << 20).unwrap()).unwrap();
            assert_eq!(manifest.config.digest, id);
            // Reopening finds everything again.
            drop(s);
            let s = ImageStore::open(t.path(), driver).unwrap();
            assert_eq!(s.resolve("busybox").unwrap(), id);
            assert!(matches!(s.resolve("nothere"), Err(ImagesError::NotFound(_))));
        }
    }

    #[test]
    fn identical_layers_are_stored_once_and_removed_with_their_last_image() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let s = ImageStore::open(t.path(), Driver::Overlay).unwrap();
        let a = s.import(&rootfs_tar("same")[..], Some(&Reference::parse("a").unwrap()), "", Default::default()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5)); // a different creation time
        let b = s.import(&rootfs_tar("same")[..], Some(&Reference::parse("b").unwrap()), "", Default::default()).unwrap();
        assert_ne!(a, b, "configs differ by creation time");
        assert_eq!(s.snapshots.walk().unwrap().len(), 1, "one snapshot for the shared layer");
        s.tag("a", &Reference::parse("a:v2").unwrap()).unwrap();
        // A name wins over an ID prefix made of the same letters, as in Docker.
        let hex_named = s.import(&rootfs_tar("hex")[..], None, "", Default::default()).unwrap();
        let prefix = &b.hex()[..2];
        s.tag(&hex_named.to_string(), &Reference::parse(prefix).unwrap()).unwrap();
        assert_eq!(s.resolve(prefix).unwrap(), hex_named);
        assert_eq!(s.resolve(&b.hex()[..12]).unwrap(), b);
        s.remove(&hex_named).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.list().unwrap().iter().find(|(i, _)| i.id == a).unwrap().1.len(), 2);
        assert_eq!(s.untag(&Reference::parse("a:v2").unwrap()).unwrap(), a);

        s.remove(&a).unwrap();
        assert_eq!(s.snapshots.walk().unwrap().len(), 1, "b still uses the layer");
        assert!(matches!(s.resolve("a:latest"), Err(ImagesError::NotFound(_))));
        s.remove(&b).unwrap();
        assert!(s.snapshots.walk().unwrap().is_empty());
        assert!(s.content.list().unwrap().is_empty(), "configs, manifests and layers are gone");
    }

    #[test]
    fn a_corrupt_import_leaves_no_image_layer_or_blob() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let s = ImageStore::open(t.path(), Driver::Overlay).unwrap();
        let mut bad = rootfs_tar("x");
        bad.truncate(700);
        assert!(s.import(&bad[..], None, "", Default::default()).is_err());
        assert!(s.list().unwrap().is_empty());
        assert!(s.snapshots.walk().unwrap().is_empty());
        assert!(s.content.list().unwrap().is_empty());
        assert!(s.content.ingests().unwrap().is_empty());
    }

    #[test]
    fn ambiguous_prefixes_and_bad_names_are_refused() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let s = ImageStore::open(t.path(), Driver::Overlay).unwrap();
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(s.import(&rootfs_tar(&i.to_string())[..], None, "", Default::default()).unwrap());
        }
        // With 20 images some first hex digit is shared: a one-digit prefix is ambiguous.
        let first: Vec<char> = ids.iter().map(|d| d.hex().chars().next().unwrap()).collect();
        let shared = first.iter().find(|c| first.iter().filter(|d| d == c).count() > 1).unwrap();
        assert!(matches!(s.resolve(&shared.to_string()), Err(ImagesError::Ambiguous(_))));
        assert!(matches!(s.resolve("Bad/Name"), Err(ImagesError::Reference(_))));
    }

    #[test]
    fn gc_removes_what_no_image_uses_and_keeps_what_is_in_use() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let s = ImageStore::open(t.path(), Driver::Overlay).unwrap();
        let id = s.import(&rootfs_tar("kept")[..], Some(&Reference::parse("kept").unwrap()), "", Default::default()).unwrap();
        let chain = s.get(&id).unwrap().layers[0].chain_id.to_string();
        // A container's writable layer on the image, one on a layer no image uses any more, an
        // orphan layer, an orphan blob, an unpack whose process is gone and one of ours.
        s.snapshots.prepare("container-1", Some(&chain)).unwrap();
        s.snapshots.prepare("parent-active", None).unwrap();
        s.snapshots.commit("parent-of-container-2", "parent-active").unwrap();
        s.snapshots.prepare("container-2", Some("parent-of-container-2")).unwrap();
        s.snapshots.prepare("orphan-active", None).unwrap();
        s.snapshots.commit("orphan", "orphan-active").unwrap();
        s.snapshots.prepare("extract-999999999.1-abc", None).unwrap();
        let ours = format!("extract-{}-def", crate::owner::me());
        s.snapshots.prepare(&ours, None).unwrap();
        let orphan_blob = s.content.write_blob(b"nobody's", None).unwrap();
        let report = s.gc().unwrap();
        assert_eq!((report.snapshots_removed, report.blobs_removed), (1, 1), "{report:?}");
        for kept in ["container-1", "container-2", "parent-of-container-2", &chain, &ours] {
            assert!(s.snapshots.stat(kept).is_ok(), "{kept} was removed");
        }
        assert!(s.snapshots.stat("extract-999999999.1-abc").is_err(), "an abandoned unpack stayed");
        assert!(matches!(s.content.info(&orphan_blob), Err(ContentError::NotFound(_))));
        assert_eq!(s.resolve("kept").unwrap(), id);
        assert_eq!(s.content.list().unwrap().len(), 3, "config, manifest and layer of the image");
    }

    #[test]
    fn a_layer_stored_uncompressed_is_gzipped_once_for_pushes_and_kept_while_used() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let s = ImageStore::open(t.path(), Driver::Overlay).unwrap();
        let id = s.import(&rootfs_tar("one")[..], None, "", Default::default()).unwrap();
        let layer = s.get(&id).unwrap().layers[0].clone();
        assert_eq!(s.push_blob(&layer), None, "only the uncompressed tar is here");
        let gz = s.compress_layer(&layer.diff_id).unwrap();
        assert_eq!(s.push_blob(&layer), Some((gz.clone(), image::MEDIA_DOCKER_LAYER_GZIP.to_string())), "remembered: not made again");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&s.content.read(&gz, 1 << 30).unwrap()[..]).read_to_end(&mut raw).unwrap();
        assert_eq!(Digest::of(&raw), layer.diff_id);
        assert_eq!(s.gc().unwrap().blobs_removed, 0, "in use while the image is");
        s.remove(&id).unwrap();
        assert!(s.content.info(&gz).is_err(), "removed with the last image of its layer");
    }

    #[test]
    fn the_build_cache_keeps_its_layers_from_collection_until_pruned() {
        if !root_or_skip() {
            return;
        }
        for driver in [Driver::Overlay, Driver::Vfs] {
            let t = tempfile::tempdir().unwrap();
            let s = ImageStore::open(t.path(), driver).unwrap();
            let base = s.import(&rootfs_tar("base")[..], None, "", Default::default()).unwrap();
            let under = s.get(&base).unwrap().layers;
            let chain = under[0].chain_id.to_string();
            s.snapshots.prepare("step", Some(&chain)).unwrap();
            fs::write(s.snapshots.dir("step").unwrap().join("made"), "by a step").unwrap();
            let hold = s.write_guard();
            let layer = s.layer_from_snapshot("step", &under).unwrap();
            s.snapshots.remove("step").unwrap();
            let mut layers = under.clone();
            layers.push(layer.clone());
            let (_, mut config) = s.config(&base).unwrap();
            config.rootfs.diff_ids.push(layer.diff_id.clone());
            let bytes = serde_json::to_vec(&config).unwrap();
            s.cache_put("sha256:k1", &bytes, layers.clone(), Some("sha256:k0".into()), "RUN x".into(), true).unwrap();
            drop(hold);
            // The image goes; the cache still holds the base layer and the step's.
            s.remove(&base).unwrap();
            s.gc().unwrap();
            let (got, got_layers) = s.cache_get("sha256:k1").expect("a hit");
            assert_eq!((got.rootfs.diff_ids.len(), got_layers), (2, layers.clone()), "{driver:?}");
            assert!(s.has_layer(&layer.chain_id));
            let listed = s.cache_list().unwrap();
            assert_eq!((listed.len(), listed[0].1.description.as_str(), listed[0].1.made_layer), (1, "RUN x", true));
            // A build's result recorded from them, named twice.
            let refs = [Reference::parse("built:1").unwrap(), Reference::parse("built:2").unwrap()];
            let id = s.record_image(bytes, layers.clone(), &refs).unwrap();
            assert_eq!((s.resolve("built:1").unwrap(), s.resolve("built:2").unwrap()), (id.clone(), id.clone()));
            // The same again (a cached rebuild): the same image, a new name added.
            let again =
                s.record_image(serde_json::to_vec(&config).unwrap(), layers.clone(), &[Reference::parse("built:3").unwrap()]).unwrap();
            assert_eq!((again, s.resolve("built:3").unwrap()), (id.clone(), id.clone()));
            // Pruned: the records go, and what only they kept.
            s.remove(&id).unwrap();
            let (gone, freed) = s.cache_prune(|_| false).unwrap();
            assert_eq!(gone, ["sha256:k1"]);
            assert!(freed > 0, "{driver:?}");
            assert!(s.cache_get("sha256:k1").is_none() && !s.has_layer(&layer.chain_id), "{driver:?}");
        }
    }

    #[test]
    fn a_commit_unpacks_in_one_pass_and_writes_its_blob_the_same_when_needed() {
        if !root_or_skip() {
            return;
        }
        use std::os::unix::fs::{PermissionsExt, symlink};
        let t = tempfile::tempdir().unwrap();
        let s = ImageStore::open(t.path(), Driver::Overlay).unwrap();
        let base = s.import(&rootfs_tar("base")[..], None, "", Default::default()).unwrap();
        let chain = s.get(&base).unwrap().layers[0].chain_id.to_string();
        let changes = |key: &str| {
            s.snapshots.prepare(key, Some(&chain)).unwrap();
            let up = s.snapshots.dir(key).unwrap();
            fs::create_dir_all(up.join("data/deep")).unwrap();
            fs::write(up.join("data/deep/file"), vec![3u8; 300_000]).unwrap();
            fs::hard_link(up.join("data/deep/file"), up.join("data/link")).unwrap();
            symlink("/etc/passwd", up.join("data/sym")).unwrap();
            fs::write(up.join("data/suid"), "x").unwrap();
            fs::set_permissions(up.join("data/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
            std::os::unix::fs::lchown(up.join("data/suid"), Some(123), Some(456)).unwrap();
            // A deletion (a whiteout) and a directory made opaque.
            fs::create_dir_all(up.join("etc")).unwrap();
            nix::sys::stat::mknod(&up.join("etc/marker"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).unwrap();
            fs::create_dir_all(up.join("opaque")).unwrap();
            rustix::fs::setxattr(up.join("opaque"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).unwrap();
            // One time for everything: the two commits compared below may be made in different
            // seconds, and a tar keeps modification times.
            fn pin_times(p: &std::path::Path) {
                let t = nix::sys::time::TimeSpec::new(1_700_000_000, 0);
                for e in fs::read_dir(p).unwrap().flatten() {
                    if e.file_type().unwrap().is_dir() {
                        pin_times(&e.path());
                    }
                    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &e.path(), &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
                        .unwrap();
                }
            }
            pin_times(&up);
            let t = nix::sys::time::TimeSpec::new(1_700_000_000, 0);
            nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &up, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
        };
        changes("ctr");
        let id = s.commit("ctr", &base, Default::default(), History::default(), None).unwrap();
        let layer = s.get(&id).unwrap().layers.last().unwrap().clone();
        assert!(s.content.info(&layer.blob).is_err(), "no blob written at the commit");
        let dir = s.snapshots.dir(&layer.chain_id.to_string()).unwrap();
        assert_eq!(fs::read(dir.join("data/link")).unwrap(), vec![3u8; 300_000]);
        // The blob, made when needed, is checked against the diffID the commit hashed.
        s.ensure_layer_blob(&layer).unwrap();
        assert_eq!(Digest::of(&s.content.read(&layer.blob, 1 << 30).unwrap()), layer.diff_id);
        assert_eq!(s.content.info(&layer.blob).unwrap(), layer.size);
        // A second commit of the same changes: the layer is shared; a push gzips it from the
        // snapshot with no blob stored.
        s.remove(&id).unwrap();
        changes("ctr2");
        let id2 = s.commit("ctr2", &base, Default::default(), History::default(), None).unwrap();
        let layer2 = s.get(&id2).unwrap().layers.last().unwrap().clone();
        assert_eq!(layer2.diff_id, layer.diff_id, "the same changes make the same layer");
        assert!(s.content.info(&layer2.blob).is_err());
        let gz = s.compress_layer(&layer2.diff_id).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&s.content.read(&gz, 1 << 30).unwrap()[..]).read_to_end(&mut raw).unwrap();
        assert_eq!(Digest::of(&raw), layer2.diff_id);
        for key in ["ctr", "ctr2"] {
            s.snapshots.remove(key).unwrap();
        }
    }

    #[test]
    fn gc_waits_for_image_writes_in_flight() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(ImageStore::open(t.path(), Driver::Overlay).unwrap());
        // A write has stored a blob it has not recorded yet: a gc meanwhile must not take it.
        let writing = s.write_guard();
        let blob = s.content.write_blob(b"pulled, not yet recorded", None).unwrap();
        let gc = {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || s.gc().unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!gc.is_finished(), "gc ran during a write");
        assert!(s.content.info(&blob).is_ok());
        // The hold is owned: an async pull ends it on whichever thread it ends on.
        std::thread::spawn(move || drop(writing)).join().unwrap();
        assert_eq!(gc.join().unwrap().blobs_removed, 1, "the write ended without recording it");
    }

    #[test]
    fn sizes_split_shared_and_unique_layers() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let s = ImageStore::open(t.path(), Driver::Overlay).unwrap();
        let a = s.import(&rootfs_tar("same")[..], None, "", Default::default()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = s.import(&rootfs_tar("same")[..], None, "", Default::default()).unwrap();
        let c = s.import(&rootfs_tar("different")[..], None, "", Default::default()).unwrap();
        let sizes = s.sizes().unwrap();
        let layer = ("#!fake".len() + "same".len()) as u64;
        assert_eq!(sizes[&a], ImageSize { size: layer, shared: layer, unique: 0 });
        assert_eq!(sizes[&b], sizes[&a]);
        let c_size = ("#!fake".len() + "different".len()) as u64;
        assert_eq!(sizes[&c], ImageSize { size: c_size, shared: 0, unique: c_size });
    }

    /// Snapshot keys and ids as another process recorded them (our index does not see its
    /// changes): the shared index, and the active snapshots' records in their directories.
    fn recorded_on_disk(root: &Path) -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_slice(&fs::read(root.join("snapshots.json")).unwrap_or_default()).unwrap_or_default();
        let mut out: Vec<(String, String)> = v["snapshots"]
            .as_object()
            .map(|m| m.iter().map(|(k, i)| (k.clone(), i["id"].as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        for e in fs::read_dir(root.join("snapshots")).into_iter().flatten().flatten() {
            let record: Option<serde_json::Value> =
                fs::read(e.path().join("active.json")).ok().and_then(|d| serde_json::from_slice(&d).ok());
            if let Some(r) = record {
                out.push((r["key"].as_str().unwrap_or_default().to_string(), r["id"].as_str().unwrap_or_default().to_string()));
            }
        }
        out
    }

    /// Run by the kill -9 test in a child process: import a large tar until killed.
    #[test]
    #[ignore = "helper: runs only as the child of an_import_killed_mid_unpack_leaves_nothing_after_reopen"]
    fn import_child() {
        let root = std::env::var("BERTH_IMAGES_ROOT").expect("run by the kill -9 test");
        let s = ImageStore::open(Path::new(&root), Driver::Overlay).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let blob = vec![7u8; 64 * 1024];
        for i in 0..3000 {
            let mut h = tar::Header::new_gnu();
            h.set_size(blob.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            b.append_data(&mut h, format!("d{}/f{i}", i % 50), &blob[..]).unwrap();
        }
        s.import(&b.into_inner().unwrap()[..], Some(&Reference::parse("big").unwrap()), "", Default::default()).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    #[test]
    fn an_import_killed_mid_unpack_leaves_nothing_after_reopen() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let s = ImageStore::open(t.path(), Driver::Overlay).unwrap();
        let kept = s.import(&rootfs_tar("committed")[..], Some(&Reference::parse("kept").unwrap()), "", Default::default()).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "images::tests::import_child", "--ignored"])
            .env("BERTH_IMAGES_ROOT", t.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let unpacking = recorded_on_disk(t.path()).into_iter().find(|(k, _)| k.starts_with("extract-"));
            if let Some((_, id)) = unpacking
                && fs::read_dir(t.path().join("snapshots").join(id).join("fs")).is_ok_and(|d| d.count() > 20)
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the import never started unpacking");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL, mid-unpack
        child.wait().unwrap();
        let s = ImageStore::open(t.path(), Driver::Overlay).unwrap();
        assert!(s.snapshots.walk().unwrap().iter().all(|i| !i.key.starts_with("extract-")), "the half-unpacked layer was not cleaned");
        assert!(matches!(s.resolve("big"), Err(ImagesError::NotFound(_))));
        assert_eq!(s.resolve("kept").unwrap(), kept, "nothing committed was lost");
        assert_eq!(s.snapshots.walk().unwrap().len(), 1);
        let names: Vec<String> =
            fs::read_dir(t.path().join("snapshots")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 1, "only the committed layer's directory is left: {names:?}");
        // The layer blob the killed import committed is an orphan for gc, not a record.
        s.gc().unwrap();
        assert_eq!(s.content.list().unwrap().len(), 3, "config, manifest and layer of the kept image");
    }

    /// Run by the kill -9 test in a child process: collect garbage until killed.
    #[test]
    #[ignore = "helper: runs only as the child of a_gc_killed_midway_leaves_a_consistent_store"]
    fn gc_child() {
        let root = std::env::var("BERTH_IMAGES_ROOT").expect("run by the kill -9 test");
        let s = ImageStore::open(Path::new(&root), Driver::Overlay).unwrap();
        s.gc().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    #[test]
    fn a_gc_killed_midway_leaves_a_consistent_store() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let s = ImageStore::open(t.path(), Driver::Overlay).unwrap();
        let kept = s.import(&rootfs_tar("kept")[..], Some(&Reference::parse("kept").unwrap()), "", Default::default()).unwrap();
        const ORPHANS: usize = 300;
        for i in 0..ORPHANS {
            s.snapshots.prepare(&format!("o{i}-a"), None).unwrap();
            let dir = s.snapshots.dir(&format!("o{i}-a")).unwrap();
            for f in 0..40 {
                fs::write(dir.join(format!("f{f}")), [0u8; 512]).unwrap();
            }
            s.snapshots.commit(&format!("o{i}"), &format!("o{i}-a")).unwrap();
            s.content.write_blob(format!("orphan blob {i}").as_bytes(), None).unwrap();
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "images::tests::gc_child", "--ignored"])
            .env("BERTH_IMAGES_ROOT", t.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while recorded_on_disk(t.path()).len() > ORPHANS + 1 - 30 {
            assert!(std::time::Instant::now() < deadline, "gc never got going");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.kill().unwrap(); // SIGKILL, mid-collection
        child.wait().unwrap();

        let s = ImageStore::open(t.path(), Driver::Overlay).unwrap();
        let recorded: BTreeSet<String> = s.snapshots.walk().unwrap().into_iter().map(|i| i.id).collect();
        let on_disk: BTreeSet<String> =
            fs::read_dir(t.path().join("snapshots")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(recorded, on_disk, "every recorded snapshot has its directory and nothing else is left");
        assert!(recorded.len() < ORPHANS + 1, "the child removed some before it died");
        assert_eq!(s.resolve("kept").unwrap(), kept, "nothing an image uses was touched");
        let report = s.gc().unwrap();
        assert!(report.snapshots_removed > 0);
        assert_eq!(s.snapshots.walk().unwrap().len(), 1);
        assert_eq!(s.content.list().unwrap().len(), 3, "config, manifest and layer of the kept image");
        let layer_dir = s.snapshots.dir(&s.get(&kept).unwrap().layers[0].chain_id.to_string()).unwrap();
        assert_eq!(fs::read_to_string(layer_dir.join("etc/marker")).unwrap(), "kept");
    }
}
