//! COPY and ADD (and WORKDIR's directory): the stage's layers with a new writable layer on
//! top, mounted with the sources' filesystem by a thread in a mount namespace of its own (the
//! host's mount table never shows them; the kernel takes them down with the thread's
//! namespace), the files copied by Docker's rules through the store's tar code (every path
//! resolved inside its root, nothing followed out), the writable layer then made a layer.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use berth_build::builder::{BuildError, CopyStep};
use berth_store::archive::{self, Owner};
use berth_store::images::LayerRecord;
use berth_store::inroot::{in_root, open_dir, resolve};
use nix::fcntl::{AtFlags, OFlag, OpenHow};
use nix::sys::stat::{Mode, SFlag};

use super::exec::Steps;

fn err(what: impl std::fmt::Display) -> BuildError {
    BuildError::Executor(what.to_string())
}

/// Make `step`'s files a layer on `layers`; None when it changed nothing.
pub(super) fn copy_layer(
    steps: &Steps,
    layers: &[LayerRecord],
    from: Option<&[LayerRecord]>,
    step: &CopyStep,
) -> Result<Option<LayerRecord>, BuildError> {
    let images = &steps.engine.images;
    let key = format!("build-{}", crate::names::random_id().map_err(|e| err(e.message))?);
    let src_key = format!("{key}-from");
    let work = steps.engine.cfg.exec_root.join("builder").join(&key);
    let cleanup = || {
        let _ = images.snapshots.remove(&src_key);
        let _ = images.snapshots.remove(&key);
        let _ = std::fs::remove_dir_all(&work);
    };
    let result = (|| {
        let top = layers.last().map(|l| l.chain_id.to_string());
        let mounts = images.snapshots.prepare(&key, top.as_deref()).map_err(err)?;
        let src_mounts = match from {
            Some(ls) if !ls.is_empty() => {
                let top = ls.last().map(|l| l.chain_id.to_string());
                Some(images.snapshots.view(&src_key, top.as_deref()).map_err(err)?)
            }
            _ => None,
        };
        let (root_dir, src_dir) = (work.join("root"), work.join("src"));
        for d in [&root_dir, &src_dir] {
            std::fs::create_dir_all(d).map_err(|e| err(format!("creating {}: {e}", d.display())))?;
        }
        let context = steps.context.clone();
        let scratch_source = matches!(from, Some([]));
        let copied = std::thread::scope(|s| {
            s.spawn(|| -> Result<(), BuildError> {
                use nix::mount::MsFlags;
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS | nix::sched::CloneFlags::CLONE_NEWNS).map_err(err)?;
                nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).map_err(err)?;
                for m in &mounts {
                    m.mount(&root_dir).map_err(|e| err(format!("mounting the step's layers: {e}")))?;
                }
                let source_root = match (&src_mounts, from) {
                    (Some(ms), _) => {
                        for m in ms {
                            m.mount(&src_dir).map_err(|e| err(format!("mounting the source stage's layers: {e}")))?;
                        }
                        src_dir.clone()
                    }
                    // `COPY --from` a stage without layers (scratch): an empty directory.
                    (None, Some(_)) => src_dir.clone(),
                    (None, None) => context.clone(),
                };
                let open = |p: &Path| {
                    nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                        .map_err(|e| err(format!("opening {}: {e}", p.display())))
                };
                let done = (|| {
                    let root = open(&root_dir)?;
                    let src = open(&source_root)?;
                    apply(root.as_fd(), src.as_fd(), step, scratch_source)
                })();
                // Down before the layer is read (the namespace alone would go only after the
                // thread has been reaped).
                let _ = nix::mount::umount2(&src_dir, nix::mount::MntFlags::MNT_DETACH);
                let _ = nix::mount::umount2(&root_dir, nix::mount::MntFlags::empty());
                done
            })
            .join()
            .map_err(|_| err("the copy's thread panicked"))?
        });
        copied?;
        let upper = images.snapshots.dir(&key).map_err(err)?;
        let empty = std::fs::read_dir(&upper).map(|mut d| d.next().is_none()).unwrap_or(false);
        if empty && images.snapshots.layers_stand_alone() {
            return Ok(None);
        }
        steps.hold_for_layer();
        images.snapshots.remove(&src_key).ok();
        images.layer_from_snapshot(&key, layers).map(Some).map_err(|e| {
            steps.dropped_layer();
            err(format!("making the step's layer: {e}"))
        })
    })();
    cleanup();
    result
}

/// A destination as Docker takes it: relative ones from WORKDIR; a trailing `/` (or `.`)
/// means a directory.
fn destination(dest: &str, workdir: &str) -> (String, bool) {
    let dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    let abs = if dest.starts_with('/') { dest.to_string() } else { format!("{}/{dest}", if workdir.is_empty() { "/" } else { workdir }) };
    let mut parts: Vec<&str> = Vec::new();
    for c in abs.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    (format!("/{}", parts.join("/")), dir)
}

/// Read a small file of the image (through its root, nothing followed out).
fn read_in(root: BorrowedFd, path: &str) -> String {
    let how = OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC).resolve(in_root());
    let Ok(fd) = nix::fcntl::openat2(root, path.trim_start_matches('/'), how) else { return String::new() };
    let mut s = String::new();
    let _ = std::fs::File::from(fd).take(4 << 20).read_to_string(&mut s);
    s
}

/// `--chown`'s user and group, looked up in the image's /etc/passwd and /etc/group.
fn owner(root: BorrowedFd, chown: Option<&str>) -> Result<(u32, u32), BuildError> {
    let Some(spec) = chown.filter(|c| !c.is_empty()) else { return Ok((0, 0)) };
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (passwd, group) = (read_in(root, "/etc/passwd"), read_in(root, "/etc/group"));
    // Field `idx` of the line for `name` in a passwd or group file.
    let field = |table: &str, name: &str, idx: usize| -> Option<u32> {
        table.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() > idx && f[0] == name).and_then(|f| f[idx].parse().ok())
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => field(&passwd, u, 2).ok_or_else(|| {
            err(format!("unable to convert uid/gid chown string to host mapping: can't find uid for user {u}: no such user: {u}"))
        })?,
    };
    let gid = match g {
        // A user alone: its primary group (a number alone: the same number), as Docker's
        // COPY --chown does.
        None => u.parse::<u32>().ok().or_else(|| field(&passwd, u, 3)).unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => field(&group, g, 2).ok_or_else(|| {
                err(format!("unable to convert uid/gid chown string to host mapping: can't find gid for group {g}: no such group: {g}"))
            })?,
        },
    };
    Ok((uid, gid))
}

/// Open (making what is missing, 0755 and owned by `owner`) the directory `path` in `root`.
fn mkdirs(root: BorrowedFd, path: &str, owner: (u32, u32)) -> Result<OwnedFd, BuildError> {
    let mut dir = open_dir(root, "/").map_err(err)?;
    let mut at = String::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        at.push('/');
        at.push_str(c);
        match open_dir(root, &at) {
            Ok(d) => dir = d,
            Err(nix::errno::Errno::ENOENT) => {
                // Made under its parent as resolved inside the root.
                match nix::sys::stat::mkdirat(dir.as_fd(), c, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(err(format!("mkdir {at}: {e}"))),
                }
                let _ = nix::unistd::fchownat(
                    dir.as_fd(),
                    c,
                    Some(nix::unistd::Uid::from_raw(owner.0)),
                    Some(nix::unistd::Gid::from_raw(owner.1)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                );
                dir = open_dir(root, &at).map_err(|e| err(format!("mkdir {at}: {e}")))?;
            }
            Err(nix::errno::Errno::ENOTDIR) => return Err(err(format!("mkdir {at}: not a directory"))),
            Err(e) => return Err(err(format!("{at}: {e}"))),
        }
    }
    Ok(dir)
}

fn is_dir(root: BorrowedFd, path: &str) -> bool {
    open_dir(root, path).is_ok()
}

/// Unpack the tar `produce` writes into the directory `dir`, owned by `owner`, with `mode`.
fn unpack_into(
    dir: OwnedFd,
    owner: Owner,
    mode: Option<u32>,
    produce: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static,
) -> Result<(), BuildError> {
    let mut opts = archive::Options::copy(owner);
    opts.mode = mode;
    opts.no_overwrite_dir_non_dir = false;
    let mut stream = archive::Pipeline::start(produce);
    let applied = archive::unpack(dir, &mut stream, opts);
    let produced = stream.finish();
    applied.map_err(|e| err(format!("copying: {e}")))?;
    produced.map_err(|e| err(format!("reading the sources: {e}")))
}

/// What an ADD source is: a local archive ADD extracts (gzip, zstd or plain tar).
fn is_archive(file: &std::fs::File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 512];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    (n >= 2 && head[..2] == [0x1f, 0x8b]) || (n >= 4 && head[..4] == [0x28, 0xb5, 0x2f, 0xfd]) || (n >= 262 && &head[257..262] == b"ustar")
}

fn apply(root: BorrowedFd, src: BorrowedFd, step: &CopyStep, scratch_source: bool) -> Result<(), BuildError> {
    let (dest, dir_dest) = destination(&step.dest, &step.workdir);
    let count = step.sources.len() + step.heredocs.len() + step.urls.len();
    let what = if step.add { "ADD" } else { "COPY" };
    if count > 1 && !dir_dest {
        return Err(err(format!("When using {what} with more than one source file, the destination must be a directory and end with a /")));
    }
    let mode = match step.chmod.as_deref().filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => Some(
            u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| err(format!("invalid chmod parameter {m:?}: must be octal")))?,
        ),
    };
    let own = owner(root, step.chown.as_deref())?;
    let into_dir = dir_dest || is_dir(root, &dest);
    if count == 0 {
        // WORKDIR: the directory alone.
        mkdirs(root, &dest, own)?;
        return Ok(());
    }
    // (the directory written into, the name there) for a single file or heredoc `name`.
    let target = |name: &str| -> (String, String) {
        if into_dir {
            (dest.clone(), name.to_string())
        } else {
            let (parent, base) = dest.rsplit_once('/').unwrap_or(("", dest.as_str()));
            (if parent.is_empty() { "/".into() } else { parent.to_string() }, base.to_string())
        }
    };
    for h in &step.heredocs {
        let (dir, name) = target(&h.name);
        let fd = mkdirs(root, &dir, own)?;
        let content = h.content.clone().into_bytes();
        unpack_into(fd, Owner::Fixed(own.0, own.1), mode.or(Some(0o644)), move |w| {
            let mut b = tar::Builder::new(w);
            let mut hd = tar::Header::new_gnu();
            hd.set_size(content.len() as u64);
            hd.set_mode(0o644);
            hd.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut hd, &name, &content[..])?;
            b.finish()
        })?;
    }
    for (url, fetched) in &step.urls {
        // Named after the URL's last path segment, 0600, not extracted (Docker's rules).
        let name = url.split(['?', '#']).next().unwrap_or(url).trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
        let name = if name.is_empty() || name.contains(':') {
            if into_dir {
                return Err(err(format!("cannot determine a file name from {url}: name the destination")));
            }
            String::new()
        } else {
            name
        };
        let (dir, as_name) = target(&name);
        let fd = mkdirs(root, &dir, own)?;
        let file = std::fs::File::open(&fetched.path).map_err(|e| err(format!("{url}: {e}")))?;
        let size = file.metadata().map_err(err)?.len();
        unpack_into(fd, Owner::Fixed(own.0, own.1), mode.or(Some(0o600)), move |w| {
            let mut b = tar::Builder::new(w);
            let mut hd = tar::Header::new_gnu();
            hd.set_size(size);
            hd.set_mode(0o600);
            hd.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut hd, &as_name, file)?;
            b.finish()
        })?;
    }
    for s in &step.sources {
        if scratch_source {
            return Err(err(format!("{what} failed: stat {s}: file does not exist")));
        }
        let real = resolve(src, s, true).map_err(|e| err(format!("{s}: {e}")))?;
        let (parent, name) = match real.trim_end_matches('/').rsplit_once('/') {
            Some((p, n)) => (if p.is_empty() { "/".to_string() } else { p.to_string() }, n.to_string()),
            None => ("/".to_string(), String::new()),
        };
        let missing = || err(format!("{what} failed: stat {}: file does not exist", s.trim_start_matches('/')));
        let parent_fd = open_dir(src, &parent).map_err(|_| missing())?;
        let st = if name.is_empty() {
            nix::sys::stat::fstat(&parent_fd).map_err(|_| missing())?
        } else {
            nix::sys::stat::fstatat(parent_fd.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|_| missing())?
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFDIR {
            // A directory's contents, not the directory itself.
            let dir = if name.is_empty() { parent_fd } else { open_dir(src, &real).map_err(|_| missing())? };
            let listing = nix::fcntl::openat(dir.as_fd(), ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(err)?;
            let mut names: Vec<std::ffi::OsString> = nix::dir::Dir::from_fd(listing)
                .map_err(err)?
                .iter()
                .filter_map(|e| e.ok())
                .map(|e| <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(e.file_name().to_bytes()).to_os_string())
                .filter(|n| n != "." && n != "..")
                .collect();
            names.sort();
            let out = mkdirs(root, &dest, own)?;
            let dir = std::sync::Arc::new(dir);
            for n in names {
                let into = out.try_clone().map_err(err)?;
                let d = std::sync::Arc::clone(&dir);
                let as_name = n.to_string_lossy().into_owned();
                unpack_into(into, Owner::Fixed(own.0, own.1), mode, move |w| {
                    berth_store::pack::pack(d.as_fd(), Some(&n), &as_name, w).map(|_| ())
                })?;
            }
            continue;
        }
        if step.add && kind == SFlag::S_IFREG {
            let how = OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).resolve(in_root());
            let f = std::fs::File::from(nix::fcntl::openat2(parent_fd.as_fd(), name.as_str(), how).map_err(err)?);
            if is_archive(&f) {
                // ADD extracts a local archive into the destination, its owners kept.
                let out = mkdirs(root, &dest, own)?;
                let input = archive::decompress(std::io::BufReader::with_capacity(1 << 20, f)).map_err(err)?;
                let opts = archive::Options::copy(Owner::FromArchive);
                archive::unpack(out, input, opts).map_err(|e| err(format!("extracting {s}: {e}")))?;
                continue;
            }
        }
        let (dir, as_name) = target(&name);
        let out = mkdirs(root, &dir, own)?;
        let n = std::ffi::OsString::from(name.clone());
        unpack_into(out, Owner::Fixed(own.0, own.1), mode, move |w| {
            berth_store::pack::pack(parent_fd.as_fd(), Some(&n), &as_name, w).map(|_| ())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_by_dockers_rules() {
        assert_eq!(destination("/app/", "/"), ("/app".to_string(), true));
        assert_eq!(destination("x", "/w"), ("/w/x".to_string(), false));
        assert_eq!(destination(".", "/w"), ("/w".to_string(), true));
        assert_eq!(destination("../../etc", "/w"), ("/etc".to_string(), false));
        assert_eq!(destination("a/./b/", ""), ("/a/b".to_string(), true));
    }
}
