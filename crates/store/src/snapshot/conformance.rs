//! One suite that every layout passes (as root: it mounts). A layout written outside this crate
//! runs it with the `conformance` feature: [`suite`], [`ephemeral`], [`deferred_sync`] and
//! [`depth_limit`], each given a function that opens its snapshotter on a directory.
use super::*;
#[cfg(test)]
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

pub fn suite<S: Snapshotter>(open: impl Fn(&Path) -> S) {
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

pub fn ephemeral<S: Snapshotter>(open: impl Fn(&Path) -> S) {
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

pub fn deferred_sync<S: Snapshotter>(open: impl Fn(&Path) -> S) {
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

pub fn depth_limit<S: Snapshotter>(open: impl Fn(&Path) -> S) {
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

/// Layers written before their parents are there, then stacked in order (a pull's unpack), where
/// the layout's layers stand alone; refused where they do not.
pub fn standalone_layers<S: Snapshotter>(open: impl Fn(&Path) -> S) {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    s.prepare("top-active", None).unwrap();
    fs::write(s.dir("top-active").unwrap().join("top"), "t").unwrap();
    if !s.layers_stand_alone() {
        assert!(matches!(s.commit_onto("top", "top-active", Some("base")), Err(SnapshotError::NotStandalone(_))));
        return;
    }
    // The parent is not there yet: refused, and the layer stays as it was.
    assert!(s.commit_onto("top", "top-active", Some("base")).is_err());
    assert_eq!(s.stat("top-active").unwrap().kind, Kind::Active);
    s.prepare("base-active", None).unwrap();
    fs::write(s.dir("base-active").unwrap().join("base"), "b").unwrap();
    s.commit_onto("base", "base-active", None).unwrap();
    s.commit_onto("top", "top-active", Some("base")).unwrap();
    assert_eq!(s.stat("top").unwrap().parent.as_deref(), Some("base"));
    assert_eq!(s.stat("top").unwrap().usage.map(|u| u.size), Some(1));
    let m = s.view("look", Some("top")).unwrap();
    with_mounted(&m, |p| {
        assert_eq!(fs::read_to_string(p.join("base")).unwrap(), "b");
        assert_eq!(fs::read_to_string(p.join("top")).unwrap(), "t");
    });
    s.remove("look").unwrap();
    assert!(matches!(s.remove("base"), Err(SnapshotError::HasChildren(_))), "stacked: the parent has a child");
    // A snapshot prepared on a parent cannot be moved onto another.
    s.prepare("on-base", Some("base")).unwrap();
    assert!(s.commit_onto("x", "on-base", Some("top")).is_err());
    drop(s);
    let s = open(t.path());
    assert_eq!(s.stat("top").unwrap().parent.as_deref(), Some("base"), "recorded durably");
}

#[test]
fn overlay_passes_the_suite() {
    if root_or_skip() {
        suite(|p| Overlay::open(p).unwrap());
    }
}

#[test]
fn overlay_stacks_standalone_layers_and_vfs_refuses_to() {
    if root_or_skip() {
        standalone_layers(|p| Overlay::open(p).unwrap());
        standalone_layers(|p| Vfs::open(p).unwrap());
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
