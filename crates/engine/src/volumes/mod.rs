//! Volumes: data that lives outside containers and images, in `<data-root>/volumes/<name>/_data`
//! with the volume's record beside it (`volume.json`). A volume is made under a temporary name
//! and renamed into place, so a crash leaves a whole volume or a leftover that the next start
//! removes; a removed one is renamed away first, then deleted.

mod api;
pub(crate) mod mounts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use berth_api::{ApiError, Kind};
use serde::{Deserialize, Serialize};

/// The label Docker gives anonymous volumes.
pub const ANONYMOUS: &str = "com.docker.volume.anonymous";
const RECORD: &str = "volume.json";
const TMP: &str = ".tmp-";
const TRASH: &str = ".rm-";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolRecord {
    pub name: String,
    pub created: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The local driver's options (`type`, `device`, `o`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl VolRecord {
    pub fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS)
    }

    /// The local driver mounts something on the data directory (`type` or `device` given):
    /// while a running container uses the volume, as Docker's local driver does.
    pub fn mounts(&self) -> bool {
        ["type", "device"].iter().any(|k| self.options.get(*k).is_some_and(|v| !v.is_empty()))
    }

    /// Mount what the local driver's options name on `target` (`o` read as `mount -o`).
    pub fn mount_on(&self, target: &Path) -> nix::Result<()> {
        let o = self.options.get("o").map(String::as_str).unwrap_or("");
        let words: Vec<String> = o.split(',').filter(|w| !w.is_empty()).map(str::to_string).collect();
        let parsed = berth_runtime::rootfs::MountOptions::parse(&words);
        let typ = self.options.get("type").map(String::as_str).filter(|t| !t.is_empty() && *t != "none");
        let device = self.options.get("device").map(String::as_str).unwrap_or("");
        let data = parsed.data.join(",");
        nix::mount::mount(Some(device), target, typ, parsed.flags, Some(data.as_str()).filter(|d| !d.is_empty()))
    }
}

/// Is `p` the root of a mount (in this mount namespace)?
pub(crate) fn is_mount_root(p: &Path) -> bool {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};
    match rustix::fs::statx(rustix::fs::CWD, p, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS) {
        Ok(st) => st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT),
        Err(_) => false,
    }
}

/// Take whatever is mounted on `data` off it (stacked mounts too). False when something stays.
fn unmount_data(data: &Path) -> bool {
    for _ in 0..8 {
        if !is_mount_root(data) {
            return true;
        }
        if let Err(e) = nix::mount::umount2(data, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!("unmounting {}: {e}", data.display());
            return false;
        }
    }
    !is_mount_root(data)
}

pub(crate) struct Volumes {
    dir: PathBuf,
    vols: RwLock<BTreeMap<String, VolRecord>>,
    /// Held while a volume is filled from an image, so two starts never fill one at once.
    pub filling: std::sync::Mutex<()>,
    /// The containers each local-driver mount is up for: the mount goes when the last one lets
    /// go (a count, as Docker's local driver keeps, so a start and an exit never race).
    users: std::sync::Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>,
}

fn internal(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> ApiError {
    let msg = format!("{what} {}", p.display());
    move |e| ApiError::new(Kind::Internal, format!("{msg}: {e}"))
}

/// Docker's rule for a volume's name: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (no `/`, no `..` alone).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2 && b.len() <= 255 && b[0].is_ascii_alphanumeric() && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

impl Volumes {
    /// Read every volume under `dir`; leftovers of a create or removal a crash cut short go.
    pub fn open(dir: &Path) -> Result<Volumes, ApiError> {
        std::fs::create_dir_all(dir).map_err(internal("creating", dir))?;
        let mut vols = BTreeMap::new();
        for e in std::fs::read_dir(dir).map_err(internal("listing", dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP) || name.starts_with(TRASH) {
                // A removal cut short may have left a mount there: never delete through it.
                if unmount_data(&e.path().join("_data")) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
                continue;
            }
            match std::fs::read(e.path().join(RECORD)).ok().and_then(|b| serde_json::from_slice::<VolRecord>(&b).ok()) {
                Some(r) if r.name == name => {
                    vols.insert(name, r);
                }
                _ => tracing::warn!("skipping {}: no volume record", e.path().display()),
            }
        }
        Ok(Volumes { dir: dir.to_path_buf(), vols: RwLock::new(vols), filling: std::sync::Mutex::new(()), users: Default::default() })
    }

    /// Where volume `name`'s data is.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    pub fn get(&self, name: &str) -> Option<VolRecord> {
        self.vols.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn all(&self) -> Vec<VolRecord> {
        self.vols.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Volume `name` (a new random one when None), made unless it exists; true when made now.
    /// Blocking.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<(VolRecord, bool), ApiError> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                if !valid_name(n) {
                    return Err(ApiError::new(
                        Kind::InvalidArgument,
                        format!(
                            "create {n}: \"{n}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
                        ),
                    ));
                }
                n.to_string()
            }
            None => crate::names::random_id()?,
        };
        for k in options.keys() {
            if !["type", "device", "o", "size"].contains(&k.as_str()) {
                return Err(ApiError::new(Kind::InvalidArgument, format!("create {name}: invalid option: {k:?}")));
            }
        }
        // Docker's answer where the file system has no project quotas (ext4, here).
        if options.get("size").is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::new(Kind::InvalidArgument, format!("create {name}: quota size requested but no quota support")));
        }
        let mut vols = self.vols.write().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = vols.get(&name) {
            return Ok((v.clone(), false));
        }
        let rec = VolRecord { name: name.clone(), created: crate::record::now(), labels, options };
        let tmp = self.dir.join(format!("{TMP}{name}"));
        let _ = std::fs::remove_dir_all(&tmp);
        let made = (|| -> std::io::Result<()> {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o701).create(&tmp)?;
            std::fs::DirBuilder::new().mode(0o755).create(tmp.join("_data"))?;
            berth_atomic::write_file(&tmp.join(RECORD), &serde_json::to_vec_pretty(&rec).unwrap_or_default(), 0o600)?;
            std::fs::rename(&tmp, self.dir.join(&name))?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(internal("creating volume", &self.dir.join(&name))(e));
        }
        vols.insert(name, rec.clone());
        Ok((rec, true))
    }

    /// Mount what the local driver's options say on volume `name`'s data directory for
    /// container `user`, unless it is mounted already. Blocking.
    pub fn mount(&self, name: &str, user: &str) -> Result<(), ApiError> {
        let Some(rec) = self.get(name).filter(VolRecord::mounts) else { return Ok(()) };
        let data = self.path(name);
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if !is_mount_root(&data) {
            let o = rec.options.get("o").cloned().unwrap_or_default();
            let device = rec.options.get("device").cloned().unwrap_or_default();
            rec.mount_on(&data).map_err(|e| {
                ApiError::new(
                    Kind::Internal,
                    format!(
                        "error while mounting volume '{}': failed to mount local volume: mount {device}:{}, data: {o}: {}",
                        data.display(),
                        data.display(),
                        e.desc().to_lowercase()
                    ),
                )
            })?;
        }
        users.entry(name.to_string()).or_default().insert(user.to_string());
        Ok(())
    }

    /// Count container `user` as using volume `name`'s mount, which is up (restore). Blocking.
    pub fn adopt(&self, name: &str, user: &str) {
        if self.get(name).is_some_and(|r| r.mounts()) && is_mount_root(&self.path(name)) {
            self.users.lock().unwrap_or_else(|p| p.into_inner()).entry(name.to_string()).or_default().insert(user.to_string());
        }
    }

    /// Container `user` no longer needs its volumes' mounts: each goes with its last user.
    /// Idempotent. Blocking.
    pub fn release(&self, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.retain(|name, set| {
            set.remove(user);
            if !set.is_empty() {
                return true;
            }
            unmount_data(&self.path(name));
            false
        });
    }

    /// Take off local-driver mounts no container uses (after a crash, or with nothing
    /// running). Blocking.
    pub fn release_unused(&self) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for v in self.all().into_iter().filter(|v| v.mounts() && !users.contains_key(&v.name)) {
            unmount_data(&self.path(&v.name));
        }
    }

    /// Remove volume `name` (the caller checked it is not in use). Blocking.
    pub fn remove(&self, name: &str) -> Result<(), ApiError> {
        let mut vols = self.vols.write().unwrap_or_else(|p| p.into_inner());
        if !vols.contains_key(name) {
            return Err(ApiError::new(Kind::NotFound, format!("get {name}: no such volume")));
        }
        // Deleting through a mount would empty a bound host directory.
        if !unmount_data(&self.path(name)) {
            return Err(ApiError::new(Kind::Internal, format!("remove {name}: its mount cannot be taken off")));
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let doomed = self.dir.join(format!("{TRASH}{name}-{nanos:x}"));
        std::fs::rename(self.dir.join(name), &doomed).map_err(internal("removing volume", &self.dir.join(name)))?;
        vols.remove(name);
        drop(vols);
        if let Err(e) = std::fs::remove_dir_all(&doomed) {
            tracing::warn!("deleting {}: {e}", doomed.display());
        }
        Ok(())
    }

    /// Bytes under a volume's data (`system df`). Blocking.
    pub fn size(&self, name: &str) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else { return 0 };
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => {
                        use std::os::unix::fs::MetadataExt;
                        m.blocks() * 512
                    }
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.path(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["data", "my_vol.1", "a-b", "0x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a", "../x", "a/b", "..", ".hidden", "-x", "a b", "a\nb"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn volumes_are_made_whole_kept_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volumes::open(dir.path()).unwrap();
        let (r, made) = v.create(Some("data"), [("a".into(), "b".into())].into(), BTreeMap::new()).unwrap();
        assert!(made && v.path("data").is_dir());
        let (again, made) = v.create(Some("data"), BTreeMap::new(), BTreeMap::new()).unwrap();
        assert!(!made && again == r, "a second create answers the existing volume");
        assert!(v.create(Some("../x"), BTreeMap::new(), BTreeMap::new()).is_err());
        assert!(v.create(Some("x1"), BTreeMap::new(), [("bogus".into(), "1".into())].into()).is_err());
        let (anon, _) = v.create(None, [(ANONYMOUS.into(), String::new())].into(), BTreeMap::new()).unwrap();
        assert!(anon.anonymous() && anon.name.len() == 64);
        // A leftover of a create cut short goes at the next open; the volumes stay.
        std::fs::create_dir(dir.path().join(".tmp-half")).unwrap();
        let v = Volumes::open(dir.path()).unwrap();
        assert!(!dir.path().join(".tmp-half").exists());
        assert_eq!(v.all().len(), 2);
        v.remove("data").unwrap();
        assert!(v.get("data").is_none() && !dir.path().join("data").exists());
        assert_eq!(v.remove("data").unwrap_err().kind, Kind::NotFound);
    }
}
