//! `diff` (`/containers/{id}/changes`): what the container's writable layer changed — added,
//! changed, deleted — against its image, as Docker lists it. On overlay the upper directory holds
//! exactly the changes (whiteouts are deletions; a path the lower layers have is a change); a
//! plain-copy (vfs) layer is compared with its image's tree. The init files mounted over
//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` are not the container's changes.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_api::containers::ChangeItem;

use super::*;

/// Docker's kinds: 0 changed, 1 added, 2 deleted.
const CHANGED: u8 = 0;
const ADDED: u8 = 1;
const DELETED: u8 = 2;

const INIT_FILES: [&str; 3] = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn children(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> =
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())).collect();
    v.sort();
    v
}

/// The changes an overlay upper directory holds, against its lower directories.
pub(crate) fn overlay_changes(upper: &Path, lowers: &[PathBuf]) -> Vec<(String, u8)> {
    fn walk(dir: &Path, rel: &str, lowers: &[PathBuf], out: &mut Vec<(String, u8)>) {
        for (name, path) in children(dir) {
            let Ok(md) = std::fs::symlink_metadata(&path) else { continue };
            let rel = format!("{rel}/{name}");
            if is_whiteout(&md) {
                out.push((rel, DELETED));
                continue;
            }
            let in_lower = lowers.iter().any(|l| std::fs::symlink_metadata(l.join(rel.trim_start_matches('/'))).is_ok());
            out.push((rel.clone(), if in_lower { CHANGED } else { ADDED }));
            if md.is_dir() {
                walk(&path, &rel, if in_lower { lowers } else { &[] }, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(upper, "", lowers, &mut out);
    out
}

/// The changes of a full copy (`upper`) against the tree it was copied from (`lower`).
pub(crate) fn compare_changes(lower: &Path, upper: &Path) -> Vec<(String, u8)> {
    fn same(a: &std::fs::Metadata, b: &std::fs::Metadata, pa: &Path, pb: &Path) -> bool {
        let base = a.mode() == b.mode() && a.uid() == b.uid() && a.gid() == b.gid();
        if a.is_dir() {
            return base;
        }
        base && a.size() == b.size()
            && a.mtime() == b.mtime()
            && a.mtime_nsec() == b.mtime_nsec()
            && (!a.file_type().is_symlink() || std::fs::read_link(pa).ok() == std::fs::read_link(pb).ok())
    }
    fn walk(lower: Option<&Path>, upper: &Path, rel: &str, out: &mut Vec<(String, u8)>) {
        let ups = children(upper);
        for (name, path) in &ups {
            let Ok(md) = std::fs::symlink_metadata(path) else { continue };
            let r = format!("{rel}/{name}");
            let low = lower.map(|l| l.join(name));
            match low.as_ref().and_then(|l| std::fs::symlink_metadata(l).ok()) {
                None => {
                    out.push((r.clone(), ADDED));
                    if md.is_dir() {
                        walk(None, path, &r, out);
                    }
                }
                Some(lmd) => {
                    let low = low.unwrap_or_default();
                    let children_differ = md.is_dir() && lmd.is_dir() && {
                        let before = out.len();
                        walk(Some(&low), path, &r, out);
                        out.len() > before
                    };
                    if !same(&lmd, &md, &low, path) || (md.is_dir() != lmd.is_dir()) || children_differ {
                        // The directory before its children, as Docker lists it.
                        let at = out.iter().position(|(p, _)| p.starts_with(&format!("{r}/"))).unwrap_or(out.len());
                        out.insert(at, (r, CHANGED));
                    }
                }
            }
        }
        if let Some(l) = lower {
            for (name, _) in children(l) {
                if !ups.iter().any(|(n, _)| *n == name) {
                    out.push((format!("{rel}/{name}"), DELETED));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(Some(lower), upper, "", &mut out);
    out
}

impl Engine {
    /// `commit`: the writable layer becomes a new image layer on the container's image; the
    /// image's config is the container's (its command, environment, ports, volumes, labels …)
    /// with the request's fields and `--change` instructions on top. A running container is
    /// paused meanwhile unless `pause=false`, as Docker does.
    pub(super) async fn commit_ctr(&self, opts: berth_api::containers::CommitOptions) -> Result<String, ApiError> {
        let ctr = self.lookup(&opts.container)?;
        let _op = ctr.op.lock().await;
        let rec = ctr.rec();
        let reference = match &opts.repo {
            Some(repo) => {
                let name = match &opts.tag {
                    Some(t) => format!("{repo}:{t}"),
                    None => repo.clone(),
                };
                Some(berth_store::Reference::parse(&name).map_err(|e| ApiError::new(Kind::InvalidArgument, e.to_string()))?)
            }
            None => None,
        };
        // The container's config as an image's, the request's set fields over it, then changes.
        let mut merged = serde_json::to_value(&rec.config).unwrap_or_default();
        if let (Some(m), Some(serde_json::Value::Object(over))) = (merged.as_object_mut(), opts.config.as_ref()) {
            for (k, v) in over {
                let empty = v.is_null() || v.as_str() == Some("") || v.as_array().is_some_and(|a| a.is_empty());
                if !empty {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        // Unset fields are absent from an image's config.
        if let Some(m) = merged.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        let mut config: berth_store::image::ContainerConfig =
            serde_json::from_value(merged).map_err(|e| ApiError::new(Kind::InvalidArgument, format!("invalid config: {e}")))?;
        crate::changes::apply(&mut config, &opts.changes)?;
        let parent: berth_store::Digest =
            rec.image.parse().map_err(|_| ApiError::new(Kind::Internal, format!("bad image ID {}", rec.image)))?;
        let history = berth_store::image::History {
            created_by: Some(crate::containers::view::command_line(&rec)),
            author: Some(opts.author.clone()).filter(|a| !a.is_empty()),
            comment: Some(opts.comment.clone()).filter(|c| !c.is_empty()),
            ..Default::default()
        };
        let freeze = opts.pause && rec.state.status == Status::Running;
        if freeze {
            self.set_frozen(&ctr, true).await?;
        }
        let images = Arc::clone(&self.images);
        let key = rec.id.clone();
        let made = tokio::task::spawn_blocking(move || images.commit(&key, &parent, config, history, reference.as_ref())).await;
        if freeze {
            let _ = self.set_frozen(&ctr, false).await;
        }
        let id = made
            .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?
            .map_err(|e| ApiError::new(Kind::Internal, format!("committing {}: {e}", rec.id)))?;
        Ok(id.to_string())
    }

    /// `export`: a tar of the container's merged filesystem, symlinks as links, streamed as it
    /// is written; volumes and binds are not in it (as Docker's). It is read through a private,
    /// read-only view (see `archive.rs`): a stopped container's layer is never mounted for
    /// writing beside a start, and nothing of it reaches the host's mount table.
    pub(super) async fn export_ctr(&self, id: &str) -> Result<ByteStream, ApiError> {
        let ctr = self.lookup(id)?;
        let (view, root) = self.fs_view(&ctr).await?;
        let (out, stream) = crate::chunks::channel();
        tokio::task::spawn_blocking(move || {
            let mut tar = tar::Builder::new(out);
            tar.follow_symlinks(false);
            if let Err(e) = tar.append_dir_all(".", &root).and_then(|()| tar.finish()) {
                tracing::warn!("export of {}: {e}", root.display());
            }
            drop(tar);
            drop(view);
        });
        Ok(stream)
    }

    pub(super) async fn changes_ctr(&self, id: &str) -> Result<Vec<ChangeItem>, ApiError> {
        let ctr = self.lookup(id)?;
        let rec = ctr.rec();
        let e = self.clone();
        let list = tokio::task::spawn_blocking(move || -> Result<Vec<(String, u8)>, ApiError> {
            let internal = |x: berth_store::snapshot::SnapshotError| ApiError::new(Kind::Internal, x.to_string());
            let upper = e.images.snapshots.dir(&rec.id).map_err(internal)?;
            let mounts = e.images.snapshots.mounts(&rec.id).map_err(internal)?;
            match mounts.first().filter(|m| m.typ == "overlay") {
                Some(m) => {
                    let base = m.cwd.clone().unwrap_or_default();
                    let lowers: Vec<PathBuf> = m
                        .options
                        .iter()
                        .filter_map(|o| o.strip_prefix("lowerdir="))
                        .flat_map(|l| l.split(':'))
                        .map(|l| base.join(l))
                        .collect();
                    Ok(overlay_changes(&upper, &lowers))
                }
                None => {
                    let image = e.images.get(&rec.image.parse().map_err(|_| ApiError::new(Kind::Internal, "bad image ID"))?);
                    let parent = image.ok().and_then(|i| i.layers.last().map(|l| l.chain_id.to_string()));
                    match parent {
                        Some(p) => Ok(compare_changes(&e.images.snapshots.dir(&p).map_err(internal)?, &upper)),
                        None => Ok(compare_changes(Path::new("/nonexistent"), &upper)),
                    }
                }
            }
        })
        .await
        .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))??;
        Ok(list
            .into_iter()
            .filter(|(p, k)| !(INIT_FILES.contains(&p.as_str()) && *k != DELETED))
            .map(|(path, kind)| ChangeItem { path, kind })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_copy_is_compared_with_its_tree() {
        let d = tempfile::tempdir().unwrap();
        let (lower, upper) = (d.path().join("lower"), d.path().join("upper"));
        for root in [&lower, &upper] {
            std::fs::create_dir_all(root.join("etc")).unwrap();
            std::fs::create_dir_all(root.join("keep")).unwrap();
            std::fs::write(root.join("etc/conf"), "a").unwrap();
            std::fs::write(root.join("gone"), "x").unwrap();
        }
        // Same times, so only what the container did counts.
        for f in ["etc/conf", "gone"] {
            let t = std::fs::metadata(lower.join(f)).unwrap().modified().unwrap();
            std::fs::File::options().write(true).open(upper.join(f)).unwrap().set_modified(t).unwrap();
        }
        std::fs::write(upper.join("etc/conf"), "changed").unwrap();
        std::fs::remove_file(upper.join("gone")).unwrap();
        std::fs::write(upper.join("new"), "n").unwrap();
        let c = compare_changes(&lower, &upper);
        assert_eq!(c, vec![("/etc".into(), CHANGED), ("/etc/conf".into(), CHANGED), ("/new".into(), ADDED), ("/gone".into(), DELETED)]);
    }

    #[test]
    fn an_overlay_upper_is_read_against_its_lowers() {
        let d = tempfile::tempdir().unwrap();
        let (lower, upper) = (d.path().join("lower"), d.path().join("upper"));
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::write(lower.join("etc/conf"), "a").unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/conf"), "b").unwrap();
        std::fs::create_dir_all(upper.join("newdir")).unwrap();
        std::fs::write(upper.join("newdir/f"), "f").unwrap();
        let c = overlay_changes(&upper, &[lower]);
        assert_eq!(
            c,
            vec![("/etc".into(), CHANGED), ("/etc/conf".into(), CHANGED), ("/newdir".into(), ADDED), ("/newdir/f".into(), ADDED)]
        );
    }
}
