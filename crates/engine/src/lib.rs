//! berth-engine: the daemon's core. Containers (records, a state machine run through shims, a
//! read view that never waits), execs, logs and images, behind berth-api's backend traits.
//!
//! On disk: `<data-root>/containers/<id>/` holds `container.json`, the json-file log and the init
//! files (hostname, hosts, resolv.conf); `<exec-root>/containers/<id>/` is the OCI bundle while the
//! container runs (config.json, the mounted rootfs, the shim's socket and exit status).

mod build;
mod changes;
pub(crate) mod chunks;
mod containers;
mod error;
mod events;
mod exec;
mod hostconfig;
mod images;
pub mod logs;
mod names;
mod networks;
mod pull;
mod record;
mod restore;
mod shim;
mod spec;
mod stats;
mod stream;
mod system;
pub(crate) mod task;
#[cfg(test)]
mod tests;
mod volumes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use berth_api::{ApiError, Kind};
use berth_store::images::{Driver, ImageStore};

pub use berth_runtime::DEFAULT_CGROUP_PARENT;
pub use containers::{check_create, parse_size};
pub use error::Error;

pub use networks::NetConfig;
pub use record::{Record, Status};

#[derive(Debug, Clone)]
pub struct Config {
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    /// The berth-shim binary.
    pub shim: PathBuf,
    /// berth-init, bind-mounted as a container's pid 1 with `--init` (None: not installed).
    pub init_path: Option<PathBuf>,
    /// `--init` for containers that do not say (daemon.json's `init`).
    pub init: bool,
    /// The default logging driver and its options (dockerd's `log-driver` and `log-opts`).
    pub log_driver: String,
    pub log_opts: std::collections::BTreeMap<String, String>,
    /// json-file's rotation where neither the container nor `log_opts` sets it (berthd's
    /// own default: bounded, where dockerd's is not).
    pub log_default_max_size: u64,
    pub log_default_max_file: u32,
    /// Where containers' cgroups go unless they name their own (dockerd's `--cgroup-parent`).
    pub cgroup_parent: String,
    /// Registries: insecure ones, mirrors, certificates, transfers at once.
    pub registry: berth_registry::Options,
    /// The default bridge (dockerd's `--bridge`, `--bip`, `--mtu`).
    pub network: NetConfig,
}

/// One container: its current record (swapped whole on each change) and a lock serialising
/// lifecycle operations, which readers never take.
pub(crate) struct Ctr {
    pub id: String,
    rec: RwLock<Arc<Record>>,
    pub op: tokio::sync::Mutex<()>,
    /// Bumped after every state change; waiters watch it.
    pub changed: tokio::sync::watch::Sender<u64>,
    pub removed: std::sync::atomic::AtomicBool,
    /// A restart is stopping it: an auto-remove container is not removed at this exit (as Docker).
    pub restarting: std::sync::atomic::AtomicBool,
    /// A forced removal is stopping it: its exit leaves the bundle to the removal.
    pub removing: std::sync::atomic::AtomicBool,
    /// Attaches made before a start; the start connects each to the shim before the program runs.
    pub pending_attach: Mutex<Vec<(berth_shim::Request, tokio::sync::oneshot::Sender<shim::Conn>)>>,
    /// The bundle being made for its first start while its create finished (see
    /// `Engine::prepare_ahead`).
    pub ahead: Mutex<Option<containers::Ahead>>,
    /// Bumped by whatever cancels a pending restart (a stop, a removal, a start).
    pub restart_gen: std::sync::atomic::AtomicU64,
    /// The restart policy's next delay (Docker's back-off: 100 ms, doubling, reset after 10 s up).
    pub backoff: Mutex<std::time::Duration>,
    /// The healthcheck while it runs: its task and the live health (see `containers::health`).
    pub health: Mutex<containers::health::Live>,
    pub dir: PathBuf,
    pub bundle: PathBuf,
}

impl Ctr {
    /// End the attaches waiting for a start that will not come (the start failed, or the
    /// container is gone): their clients' connections close, as Docker closes a container's
    /// streams then.
    pub fn release_attaches(&self) {
        self.pending_attach.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn rec(&self) -> Arc<Record> {
        self.rec.read().map(|r| Arc::clone(&r)).unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// The record as the read views show it: with the healthcheck's latest results, which are
    /// kept apart while it runs (a probe a second would otherwise copy the record each time).
    pub fn view(&self) -> Arc<Record> {
        let rec = self.rec();
        let live = self.health.lock().unwrap_or_else(|p| p.into_inner()).health.clone();
        match live {
            Some(h) if rec.state.health.as_ref() != Some(&h) => {
                let mut r = (*rec).clone();
                r.state.health = Some(h);
                Arc::new(r)
            }
            _ => rec,
        }
    }

    /// Change the record: persisted first, then published, then waiters woken.
    /// Change the record durably (see [`record::Durability`]).
    pub fn update(&self, f: impl FnOnce(&mut Record)) -> Result<Arc<Record>, ApiError> {
        self.change(Some(record::Durability::Durable), f)
    }

    /// Change only the status of the container's process (atomically, not durably).
    pub fn update_status(&self, f: impl FnOnce(&mut Record)) -> Result<Arc<Record>, ApiError> {
        self.change(Some(record::Durability::Atomic), f)
    }

    /// Change the record in memory only, for a state that restore reaches again from the one
    /// on disk (an auto-remove container's exit: restore finds its shim gone and removes it).
    pub fn update_in_memory(&self, f: impl FnOnce(&mut Record)) {
        // Nothing is written, so nothing can fail.
        let _ = self.change(None, f);
    }

    /// Apply `f`, persist the result (unless `durable` is None), publish it, wake waiters.
    fn change(&self, durable: Option<record::Durability>, f: impl FnOnce(&mut Record)) -> Result<Arc<Record>, ApiError> {
        let mut guard = self.rec.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**guard).clone();
        f(&mut next);
        if let Some(d) = durable {
            next.save(&self.dir, d)?;
        }
        let next = Arc::new(next);
        *guard = Arc::clone(&next);
        drop(guard);
        self.changed.send_modify(|n| *n += 1);
        Ok(next)
    }
}

#[derive(Default)]
struct Table {
    by_id: HashMap<String, Arc<Ctr>>,
    /// name → id
    names: HashMap<String, String>,
}

pub struct Inner {
    cfg: Config,
    images: Arc<ImageStore>,
    /// Swapped whole by a reload (SIGHUP).
    registry: RwLock<berth_registry::Registry>,
    table: RwLock<Table>,
    execs: Mutex<HashMap<String, Arc<exec::Exec>>>,
    runtime_root: PathBuf,
    /// The snapshotter chosen at open (overlay where the kernel has it).
    driver: Driver,
    containers_dir: PathBuf,
    bundles_dir: PathBuf,
    /// How the engine reaches containers' processes (berth-shim; a fake in tests).
    tasks: Arc<dyn task::Tasks>,
    /// Deletes of removed containers' files still running, and a wake-up when one ends.
    deleting: Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
    /// The lowest layer of every container's overlay (see [`mountpoints`]); None without overlay.
    mountpoints: Option<PathBuf>,
    /// Networks, their bridges and rules, and containers' endpoints.
    nets: Arc<networks::Networks>,
    /// Volumes (`<data-root>/volumes`).
    vols: Arc<volumes::Volumes>,
    /// Build contexts kept between builds (`<data-root>/builder/sessions`).
    build_sessions: build::Sessions,
    /// What changed, for `/events`.
    events: Arc<events::Events>,
    /// This daemon's ID (`info`'s, the actor of its events), kept in `<data-root>/engine-id`.
    id: String,
}

/// The daemon's ID: made once (random) and kept in the data root, as dockerd keeps its own.
fn engine_id(data_root: &Path) -> Result<String, ApiError> {
    let path = data_root.join("engine-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let id = names::random_id()?;
    berth_atomic::write_file(&path, id.as_bytes(), 0o600)
        .map_err(|e| ApiError::new(Kind::Internal, format!("writing {}: {e}", path.display())))?;
    Ok(id)
}

/// Mount points of Docker's default spec that images often lack. They make up the lowest layer
/// of every container's overlay, under the image's own layers, so a container of an image
/// without them does not create them in its writable layer (for `/etc/hostname` alone: a
/// copy-up of `/etc` and a new file, in every container). Whatever the image has comes first,
/// and a whiteout in the image hides them as before (the runtime then makes the mount point).
const MOUNTPOINT_DIRS: [&str; 4] = ["proc", "sys", "dev", "etc"];
const MOUNTPOINT_FILES: [&str; 3] = ["etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// `<data-root>/mountpoints`, made once (under a temporary name, then renamed) and never
/// changed after: running containers' overlays have it as a layer.
fn mountpoints(data_root: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = data_root.join("mountpoints");
    if dir.is_dir() {
        return Ok(dir);
    }
    // One berthd per data root: a fixed name, so one a crash left is cleared here.
    let tmp = data_root.join(".mountpoints.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    for d in MOUNTPOINT_DIRS {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(tmp.join(d))?;
    }
    for f in MOUNTPOINT_FILES {
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(tmp.join(f))?;
    }
    std::fs::rename(&tmp, &dir)?;
    Ok(dir)
}

/// The engine; cheap to clone (tasks hold their own handle).
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

impl std::ops::Deref for Engine {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

fn overlay_works() -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.lines().any(|l| l.ends_with("\toverlay")))
}

impl Engine {
    /// The registry client (a clone shares its caches).
    pub(crate) fn registry(&self) -> berth_registry::Registry {
        self.registry.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Apply what a reload of the daemon's settings changes (SIGHUP, as dockerd's): the registry
    /// options (insecure registries, mirrors, concurrent downloads and uploads). Told as a
    /// `daemon reload` event with the new values, as dockerd tells it.
    pub fn reload(&self, registry: berth_registry::Options, log_level: &str) {
        let attrs = [
            ("insecure-registries", format!("[{}]", registry.insecure.join(" "))),
            ("registry-mirrors", format!("[{}]", registry.mirrors.join(" "))),
            ("max-concurrent-downloads", registry.max_concurrent_downloads.to_string()),
            ("max-concurrent-uploads", registry.max_concurrent_uploads.to_string()),
            ("debug", (log_level == "debug" || log_level == "trace").to_string()),
            ("name", nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()),
        ];
        {
            let mut r = self.registry.write().unwrap_or_else(|p| p.into_inner());
            *r = r.with_options(registry);
        }
        self.event("daemon", "reload", &self.id, &attrs);
    }

    /// Open the engine's state and adopt containers whose shims are still running.
    pub async fn open(cfg: Config) -> Result<Engine, ApiError> {
        let tasks = Arc::new(task::ShimTasks {
            shim_bin: cfg.shim.clone(),
            exec_root: cfg.exec_root.clone(),
            bundles: cfg.exec_root.join("containers"),
            runtime_root: cfg.exec_root.join("runtime"),
            cgroup_parent: cfg.cgroup_parent.clone(),
            standby: Mutex::new(None),
        });
        let driver = if overlay_works() { Driver::Overlay } else { Driver::Vfs };
        Engine::open_with(cfg, tasks, driver, Arc::new(berth_network::plumbing::Kernel::new())).await
    }

    /// [`Engine::open`] with these tasks, this snapshotter and this way to the kernel's networking.
    pub(crate) async fn open_with(
        cfg: Config,
        tasks: Arc<dyn task::Tasks>,
        driver: Driver,
        plumbing: Arc<dyn berth_network::plumbing::Plumbing>,
    ) -> Result<Engine, ApiError> {
        let internal = |what: &str, p: &Path| {
            let what = what.to_string();
            let p = p.to_path_buf();
            move |e: std::io::Error| ApiError::new(Kind::Internal, format!("{what} {}: {e}", p.display()))
        };
        berth_runtime::cgroups::relative(Path::new(&cfg.cgroup_parent))
            .map_err(|e| ApiError::new(Kind::InvalidArgument, format!("cgroup-parent {:?}: {e}", cfg.cgroup_parent)))?;
        let containers_dir = cfg.data_root.join("containers");
        let bundles_dir = cfg.exec_root.join("containers");
        let runtime_root = cfg.exec_root.join("runtime");
        for d in [&containers_dir, &bundles_dir, &runtime_root] {
            std::fs::create_dir_all(d).map_err(internal("creating", d))?;
            // A container's directories each in a block group of their own choosing: see
            // berth_store::spread (ext4 without a journal is slow to reuse freed inodes).
            berth_store::spread::spread_subdirectories(d);
        }
        let mountpoints = match driver {
            Driver::Overlay => mountpoints(&cfg.data_root)
                .inspect_err(|e| tracing::warn!("making {}/mountpoints (containers make their own): {e}", cfg.data_root.display()))
                .ok(),
            Driver::Vfs => None,
        };
        let store_root = cfg.data_root.join("image");
        let images = tokio::task::spawn_blocking(move || ImageStore::open(&store_root, driver))
            .await
            .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?
            .map_err(|e| ApiError::new(Kind::Internal, format!("opening the image store: {e}")))?;
        let nets = networks::Networks::open(&cfg.data_root.join("network"), cfg.network.clone(), plumbing)?;
        let vols = volumes::Volumes::open(&cfg.data_root.join("volumes"))?;
        let id = engine_id(&cfg.data_root)?;
        let engine = Engine(Arc::new(Inner {
            id,
            nets: Arc::new(nets),
            vols: Arc::new(vols),
            registry: RwLock::new(berth_registry::Registry::new(cfg.registry.clone())),
            cfg,
            images: Arc::new(images),
            table: RwLock::new(Table::default()),
            execs: Mutex::new(HashMap::new()),
            runtime_root,
            driver,
            containers_dir,
            bundles_dir,
            tasks,
            deleting: Arc::new((std::sync::atomic::AtomicUsize::new(0), tokio::sync::Notify::new())),
            mountpoints,
            build_sessions: Default::default(),
            events: Default::default(),
        }));
        engine.restore().await?;
        let e = engine.clone();
        let _ = tokio::task::spawn_blocking(move || build::remove_leftovers(&e)).await;
        // Containers their restart policy brings back when berthd starts (also after a reboot).
        engine.restart_at_start();
        // Another engine may set its FORWARD policy to drop at any time (dockerd does when it
        // starts): look every few seconds while berthd has bridges up.
        let nets = Arc::clone(&engine.nets);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                let n = Arc::clone(&nets);
                let _ = tokio::task::spawn_blocking(move || n.sync_foreign()).await;
            }
        });
        // What a crash left in the image store (a load's blobs, a layer no image records).
        engine.collect_garbage().await;
        let e = engine.clone();
        // A spawn blocks its thread until the child has exec'd: not a worker's.
        let _ = tokio::task::spawn_blocking(move || e.tasks.prepare_next()).await;
        Ok(engine)
    }

    /// Remove from the image store what no image uses (`ImageStore::gc`), off the runtime's
    /// workers; returns the bytes freed.
    pub(crate) async fn collect_garbage(&self) -> u64 {
        let images = Arc::clone(&self.images);
        match tokio::task::spawn_blocking(move || images.gc()).await {
            Ok(Ok(r)) => {
                if r.blobs_removed + r.snapshots_removed > 0 {
                    tracing::info!(
                        "image store: removed {} blobs and {} layers no image uses ({} bytes)",
                        r.blobs_removed,
                        r.snapshots_removed,
                        r.bytes_freed
                    );
                }
                r.bytes_freed
            }
            Ok(Err(e)) => {
                tracing::warn!("collecting the image store's garbage: {e}");
                0
            }
            Err(e) => {
                tracing::warn!("collecting the image store's garbage: {e}");
                0
            }
        }
    }

    /// berthd is stopping (its containers keep running): remove the cgroup parent that its shims
    /// keep between containers, unless a container still uses it.
    pub async fn shutdown(&self) {
        // Bundles made ahead of starts that never came hold mounts.
        for c in self.all() {
            self.drop_ahead(&c).await;
        }
        self.deletes_done(std::time::Duration::from_secs(10)).await;
        let e = self.clone();
        // It may wait a moment for the last shims (a blocking wait): off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || e.release_shims()).await;
    }

    fn release_shims(&self) {
        let live = self.all().iter().any(|c| c.rec().state.status.is_live());
        self.tasks.release(live);
        self.nets.unlinked();
        // With nothing running, nothing of berthd's networking or volume mounts stays on the host.
        if !live {
            self.nets.teardown();
            self.vols.release_unused();
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn table_mut(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn new_ctr(&self, rec: Record) -> Arc<Ctr> {
        let (changed, _) = tokio::sync::watch::channel(0);
        Arc::new(Ctr {
            id: rec.id.clone(),
            dir: self.containers_dir.join(&rec.id),
            bundle: self.bundles_dir.join(&rec.id),
            rec: RwLock::new(Arc::new(rec)),
            op: tokio::sync::Mutex::new(()),
            changed,
            removed: std::sync::atomic::AtomicBool::new(false),
            restarting: std::sync::atomic::AtomicBool::new(false),
            removing: std::sync::atomic::AtomicBool::new(false),
            pending_attach: Mutex::new(Vec::new()),
            ahead: Mutex::new(None),
            restart_gen: std::sync::atomic::AtomicU64::new(0),
            backoff: Mutex::new(std::time::Duration::ZERO),
            health: Mutex::new(Default::default()),
        })
    }

    /// A container by full ID, name, or unique ID prefix (Docker's lookup order).
    pub(crate) fn lookup(&self, name: &str) -> Result<Arc<Ctr>, ApiError> {
        let t = self.table();
        let not_found = || ApiError::new(Kind::NotFound, format!("No such container: {name}"));
        if name.is_empty() {
            return Err(not_found());
        }
        if let Some(c) = t.by_id.get(name) {
            return Ok(Arc::clone(c));
        }
        let n = name.strip_prefix('/').unwrap_or(name);
        if let Some(id) = t.names.get(n)
            && let Some(c) = t.by_id.get(id)
        {
            return Ok(Arc::clone(c));
        }
        let matches: Vec<&Arc<Ctr>> = t.by_id.iter().filter(|(id, _)| id.starts_with(name)).map(|(_, c)| c).collect();
        match matches.len() {
            1 => Ok(Arc::clone(matches[0])),
            0 => Err(not_found()),
            _ => Err(ApiError::new(Kind::InvalidArgument, format!("multiple IDs found with provided prefix: {name}"))),
        }
    }

    /// Publish a container event: its name, image and labels, and `extra`.
    pub(crate) fn ctr_event(&self, rec: &Record, action: &str, extra: &[(&str, String)]) {
        let mut a: std::collections::BTreeMap<String, String> = rec.config.labels.clone().unwrap_or_default();
        a.insert("name".into(), rec.name.clone());
        a.insert("image".into(), rec.image_name.clone());
        for (k, v) in extra {
            a.insert(k.to_string(), v.clone());
        }
        self.events.publish("container", action, &rec.id, a);
    }

    /// `network connect`/`disconnect` for each network a container is on (its start, its exit).
    pub(crate) fn network_events(&self, rec: &Record, action: &str) {
        for (name, ep) in &rec.networks {
            let id = if ep.network_id.is_empty() { name.clone() } else { ep.network_id.clone() };
            self.event("network", action, &id, &[("name", name.clone()), ("type", "bridge".into()), ("container", rec.id.clone())]);
        }
    }

    /// Publish an event of another kind about `id`, with `attributes`.
    pub(crate) fn event(&self, typ: &str, action: &str, id: &str, attributes: &[(&str, String)]) {
        let a = attributes.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        self.events.publish(typ, action, id, a);
    }

    pub(crate) fn all(&self) -> Vec<Arc<Ctr>> {
        self.table().by_id.values().cloned().collect()
    }
}

#[async_trait::async_trait]
impl berth_api::events::Events for Engine {
    async fn events(&self, since: Option<f64>, until: Option<f64>) -> Result<berth_api::events::EventStream, ApiError> {
        Ok(self.events.subscribe(since, until))
    }
}
