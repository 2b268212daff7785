//! The volumes a container mounts: read from its request (`-v name:/path[:opts]`, `-v /path`,
//! `--mount type=volume`, and `Volumes` — the image's `VOLUME`s among them — that nothing else
//! covers), made at create (named ones that are missing, anonymous ones), mounted at each start,
//! and filled from the image's content at that path when a new, empty volume is first mounted.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use berth_api::containers::{ContainerConfig, HostConfig};
use berth_api::{ApiError, Kind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One volume a container mounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub name: String,
    pub destination: String,
    pub rw: bool,
    /// Not filled from the image's content (`nocopy`).
    #[serde(default)]
    pub nocopy: bool,
    /// The mode as given (`ro,nocopy`), for inspect.
    #[serde(default)]
    pub mode: String,
}

/// A volume a create asks for: named, or anonymous (None).
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub name: Option<String>,
    pub destination: String,
    pub rw: bool,
    pub nocopy: bool,
    pub mode: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(Kind::InvalidArgument, msg)
}

/// A `-v` entry that names a volume (`name:/path[:mode]`) or makes an anonymous one (`/path`),
/// rather than a bind of a host path.
pub fn is_volume_bind(b: &str) -> bool {
    let mut parts = b.split(':');
    let first = parts.next().unwrap_or("");
    match parts.next() {
        None => true,
        Some(_) => !first.is_empty() && !first.starts_with('/'),
    }
}

fn check_destination(spec: &str, dst: &str) -> Result<(), ApiError> {
    let config = |why: String| bad(format!("invalid volume specification: '{spec}': invalid mount config for type \"volume\": {why}"));
    if dst.is_empty() {
        return Err(config("field Target must not be empty".into()));
    }
    if !dst.starts_with('/') {
        return Err(config(format!("invalid mount path: '{dst}' mount path must be absolute")));
    }
    if dst.trim_end_matches('/').is_empty() {
        return Err(config("invalid specification: destination can't be '/'".into()));
    }
    Ok(())
}

/// Docker's parse of a volume `-v` entry.
fn parse_bind(b: &str) -> Result<Wanted, ApiError> {
    let invalid = || bad(format!("invalid volume specification: '{b}'"));
    let parts: Vec<&str> = b.split(':').collect();
    let (name, dst, mode) = match parts.as_slice() {
        [d] => (None, *d, ""),
        [n, d] => (Some(*n), *d, ""),
        [n, d, m] => (Some(*n), *d, *m),
        _ => return Err(invalid()),
    };
    // The mode first, as Docker's parser checks it.
    let words: Vec<&str> = mode.split(',').filter(|w| !w.is_empty()).collect();
    for w in &words {
        if !["ro", "rw", "nocopy", "z", "Z", "private", "rprivate", "shared", "rshared", "slave", "rslave"].contains(w) {
            return Err(bad(format!("invalid mode: {mode}")));
        }
    }
    if words.contains(&"ro") && words.contains(&"rw") {
        return Err(bad(format!("invalid mode: {mode}")));
    }
    check_destination(b, dst)?;
    Ok(Wanted {
        name: name.map(str::to_string),
        destination: dst.to_string(),
        rw: !words.contains(&"ro"),
        nocopy: words.contains(&"nocopy"),
        mode: mode.to_string(),
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
    })
}

/// Every volume a create asks for, checked: one destination once.
pub fn wanted(cfg: &ContainerConfig, hc: &HostConfig) -> Result<Vec<Wanted>, ApiError> {
    let mut out: Vec<Wanted> = Vec::new();
    for b in hc.binds.iter().flatten().filter(|b| is_volume_bind(b)) {
        out.push(parse_bind(b)?);
    }
    for m in hc.mounts.iter().flatten().filter(|m| m.typ.as_deref() == Some("volume")) {
        let target = m.target.clone().unwrap_or_default();
        let spec = format!("{}:{target}", m.source.as_deref().unwrap_or(""));
        check_destination(&spec, &target)?;
        let opts = m.volume_options.clone().unwrap_or_default();
        if opts.subpath.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::not_implemented("volume subpaths"));
        }
        let driver = opts.driver_config.clone().unwrap_or_default();
        if driver.name.as_deref().is_some_and(|d| !d.is_empty() && d != "local") {
            return Err(bad(format!("error while mounting volume: plugin \"{}\" not found", driver.name.unwrap_or_default())));
        }
        out.push(Wanted {
            name: m.source.clone().filter(|s| !s.is_empty()),
            destination: target,
            rw: m.read_only != Some(true),
            nocopy: opts.no_copy == Some(true),
            mode: String::new(),
            labels: opts.labels.unwrap_or_default(),
            options: driver.options.unwrap_or_default(),
        });
    }
    // `Volumes` nothing else covers: anonymous volumes (the image's `VOLUME`s come this way).
    let covered = |path: &str, out: &[Wanted]| {
        let path = path.trim_end_matches('/');
        out.iter().any(|w| w.destination.trim_end_matches('/') == path)
            || hc.binds.iter().flatten().filter_map(|b| b.split(':').nth(1)).any(|t| t.trim_end_matches('/') == path)
            || hc.mounts.iter().flatten().filter_map(|m| m.target.as_deref()).any(|t| t.trim_end_matches('/') == path)
            || hc.tmpfs.iter().flatten().any(|(t, _)| t.trim_end_matches('/') == path)
    };
    for path in cfg.volumes.iter().flat_map(|v| v.keys()) {
        if !covered(path, &out) {
            check_destination(path, path)?;
            out.push(Wanted {
                name: None,
                destination: path.clone(),
                rw: true,
                nocopy: false,
                mode: String::new(),
                labels: BTreeMap::new(),
                options: BTreeMap::new(),
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    for w in &out {
        if !seen.insert(w.destination.trim_end_matches('/').to_string()) {
            return Err(bad(format!("Duplicate mount point: {}", w.destination)));
        }
    }
    Ok(out)
}

/// The OCI mount of a volume whose data is at `source`.
pub fn spec(m: &VolumeMount, source: &Path) -> Value {
    let mut options = vec!["rbind", "rprivate"];
    if !m.rw {
        options.push("ro");
    }
    json!({"destination": m.destination, "type": "bind", "source": source, "options": options})
}

/// Fill the empty volume at `data` from the container's content at `from` (inside its root,
/// already resolved): files, directories and symlinks with their owners, modes and times.
/// Nothing is followed out of `from`: symlinks are copied as links. Blocking.
pub fn populate(from: &Path, data: &Path) -> std::io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(from) else { return Ok(()) };
    if !meta.is_dir() || std::fs::read_dir(data)?.next().is_some() {
        return Ok(());
    }
    copy_tree(from, data)?;
    // The volume's root takes the directory's owner and mode, as Docker's copy does.
    std::os::unix::fs::lchown(data, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let meta = std::fs::symlink_metadata(&src)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_file() {
            use std::os::unix::fs::OpenOptionsExt;
            let mut r = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&src)?;
            let mut w = std::fs::OpenOptions::new().write(true).create_new(true).open(&dst)?;
            std::io::copy(&mut r, &mut w)?;
        } else {
            // Devices, fifos, sockets: not copied (as Docker's copy of a volume's content).
            continue;
        }
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
        if !ft.is_symlink() {
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            let times = [
                libc::timespec { tv_sec: meta.atime(), tv_nsec: meta.atime_nsec() },
                libc::timespec { tv_sec: meta.mtime(), tv_nsec: meta.mtime_nsec() },
            ];
            let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dst.as_os_str()))?;
            // SAFETY: a valid C string and two timespecs, read only by the call.
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(v: Value) -> HostConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn volume_binds_are_told_from_host_binds() {
        assert!(is_volume_bind("data:/d"));
        assert!(is_volume_bind("/anon"));
        assert!(is_volume_bind("data:/d:ro,nocopy"));
        assert!(!is_volume_bind("/host:/d"));
        assert!(!is_volume_bind(":/d"));
    }

    #[test]
    fn a_create_asks_for_named_anonymous_and_image_volumes() {
        let cfg: ContainerConfig = serde_json::from_value(json!({"Volumes": {"/img": {}, "/bound": {}}})).unwrap();
        let w = wanted(
            &cfg,
            &hc(json!({
                "Binds": ["data:/d:ro,nocopy", "/host:/bound"],
                "Mounts": [{"Type": "volume", "Source": "", "Target": "/m", "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"}}}]
            })),
        )
        .unwrap();
        let names: Vec<(Option<&str>, &str, bool, bool)> =
            w.iter().map(|w| (w.name.as_deref(), w.destination.as_str(), w.rw, w.nocopy)).collect();
        assert_eq!(names, vec![(Some("data"), "/d", false, true), (None, "/m", true, true), (None, "/img", true, false)]);
        assert_eq!(w[1].labels["a"], "b");
        let refused = |b: Value| wanted(&ContainerConfig::default(), &hc(b)).unwrap_err().message;
        assert!(refused(json!({"Binds": ["v:relative"]})).contains("must be absolute"));
        assert!(refused(json!({"Binds": ["v:/"]})).contains("can't be '/'"));
        assert!(refused(json!({"Binds": ["v:/a:ro,rw"]})).contains("invalid mode"));
        assert!(refused(json!({"Binds": ["v:/a:bogus"]})).contains("invalid mode"));
        assert!(refused(json!({"Binds": ["v:/a", "w:/a/"]})).contains("Duplicate mount point"));
    }

    #[test]
    fn population_copies_owners_modes_and_links_without_following_them() {
        let dir = tempfile::tempdir().unwrap();
        let (from, data) = (dir.path().join("from"), dir.path().join("data"));
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::write(from.join("sub/f"), b"content").unwrap();
        std::fs::set_permissions(from.join("sub/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.join("link")).unwrap();
        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::create_dir(&data).unwrap();
        populate(&from, &data).unwrap();
        assert_eq!(std::fs::read(data.join("sub/f")).unwrap(), b"content");
        assert_eq!(std::fs::metadata(data.join("sub/f")).unwrap().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_link(data.join("link")).unwrap(), Path::new("/etc/passwd"), "copied as a link");
        assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o777, 0o750);
        // Not again: the volume is no longer empty.
        std::fs::write(from.join("new"), b"x").unwrap();
        populate(&from, &data).unwrap();
        assert!(!data.join("new").exists());
    }
}
