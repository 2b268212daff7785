//! Volumes through berthd, with the docker CLI: named and anonymous volumes, their lifetime
//! across containers, filling from the image on first use (owners and modes kept) and not
//! after, `nocopy`, `rm -v`, `--rm`, `volume create/ls/inspect/rm/prune`, and bad input.

use berth_tests::{TestDaemon, json, run_command};
use serde_json::Value;

fn inspect(d: &TestDaemon, id: &str) -> Value {
    let (s, b) = d.request("GET", &format!("/containers/{}/json", id.trim()));
    assert_eq!(s, 200, "{b}");
    json(&b)
}

fn volumes(d: &TestDaemon) -> Vec<String> {
    let out = d.docker(&["volume", "ls", "-q"]).success().stdout;
    out.lines().map(str::to_string).collect()
}

/// An image whose `/data` (a `VOLUME`) holds a file owned by 1234:5678, mode 0640, in a
/// directory of mode 0750, and busybox to look with.
fn import_owned_image(d: &TestDaemon) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    run_command(std::process::Command::new("cp").arg("-a").arg(berth_tests::busybox_rootfs()).arg(&root)).success();
    std::fs::create_dir_all(root.join("data/sub")).unwrap();
    std::fs::write(root.join("data/sub/file"), "from-the-image\n").unwrap();
    std::os::unix::fs::chown(root.join("data/sub/file"), Some(1234), Some(5678)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("data/sub/file"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(root.join("data"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let tar = dir.path().join("img.tar");
    run_command(std::process::Command::new("tar").arg("-C").arg(&root).arg("--numeric-owner").arg("-cf").arg(&tar).arg(".")).success();
    d.docker(&["import", "--change", "VOLUME /data", tar.to_str().unwrap(), "owned:latest"]).success();
}

#[test]
fn named_and_anonymous_volumes_live_apart_from_containers() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    import_owned_image(&d);

    // A named volume made on first use, filled from the image, its owners and modes kept.
    let out = d
        .docker(&[
            "run",
            "--name",
            "w1",
            "-v",
            "store:/data",
            "owned",
            "sh",
            "-c",
            "ls -ln /data/sub/file; stat -c %a /data; echo kept > /data/new",
        ])
        .success()
        .stdout;
    assert!(out.contains("1234") && out.contains("5678") && out.contains("-rw-r-----"), "{out}");
    assert!(out.contains("750"), "{out}");
    let v = json(&d.docker(&["volume", "inspect", "store"]).success().stdout);
    let mountpoint = v[0]["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(format!("{mountpoint}/new")).unwrap(), "kept\n");
    let mounts = &inspect(&d, "w1")["Mounts"];
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Name"], "store");
    assert_eq!(mounts[0]["Destination"], "/data");
    assert_eq!(mounts[0]["Source"], mountpoint.as_str());
    // In use: not removed.
    let r = d.docker(&["volume", "rm", "store"]).failure();
    assert!(r.stderr.contains("volume is in use"), "{r:?}");
    // The container goes, the volume stays with what was written; not filled again.
    d.docker(&["rm", "w1"]).success();
    std::fs::remove_file(format!("{mountpoint}/sub/file")).unwrap();
    let out = d.docker(&["run", "--rm", "-v", "store:/data", "owned", "ls", "/data", "/data/sub"]).success().stdout;
    assert!(out.contains("new") && !out.contains("file"), "not filled again: {out}");
    // `nocopy`: a new volume stays empty.
    let out = d.docker(&["run", "--rm", "-v", "empty:/data:nocopy", "owned", "ls", "-A", "/data"]).success().stdout;
    assert_eq!(out, "");
    let out = d
        .docker(&["run", "--rm", "--mount", "type=volume,source=empty2,target=/data,volume-nocopy", "owned", "ls", "-A", "/data"])
        .success()
        .stdout;
    assert_eq!(out, "");
    // Read-only.
    let r = d.docker(&["run", "--rm", "-v", "store:/data:ro", "owned", "touch", "/data/x"]);
    assert_ne!(r.code, 0, "{r:?}");

    // The image's VOLUME: an anonymous volume, filled; `rm -v` removes it, plain `rm` keeps it.
    let before = volumes(&d);
    d.docker(&["create", "--name", "a1", "owned", "cat", "/data/sub/file"]).success();
    d.docker(&["create", "--name", "a2", "owned", "true"]).success();
    let anon: Vec<String> = volumes(&d).into_iter().filter(|v| !before.contains(v)).collect();
    assert_eq!(anon.len(), 2, "{anon:?}");
    assert_eq!(d.docker(&["start", "-a", "a1"]).success().stdout, "from-the-image\n");
    let a2_vol = inspect(&d, "a2")["Mounts"][0]["Name"].as_str().unwrap().to_string();
    d.docker(&["rm", "-v", "a2"]).success();
    assert!(!volumes(&d).contains(&a2_vol), "rm -v removes its anonymous volume");
    d.docker(&["rm", "a1"]).success();
    assert_eq!(volumes(&d).len(), before.len() + 1, "plain rm keeps it");
    // `--rm`: its anonymous volumes go with it.
    d.docker(&["run", "--rm", "-v", "/scratch", "busybox", "true"]).success();
    assert_eq!(volumes(&d).len(), before.len() + 1);

    // prune: anonymous unused ones only, unless -a; named in use never.
    d.docker(&["run", "-d", "--name", "user", "-v", "busy:/b", "busybox", "sleep", "60"]).success();
    let pruned = d.docker(&["volume", "prune", "-f"]).success().stdout;
    assert!(pruned.contains("Deleted Volumes:") && !pruned.contains("store"), "{pruned}");
    let pruned = d.docker(&["volume", "prune", "-af"]).success().stdout;
    assert!(pruned.contains("store") && pruned.contains("empty") && !pruned.contains("busy"), "{pruned}");
    assert_eq!(volumes(&d), vec!["busy".to_string()]);
    d.docker(&["rm", "-f", "user"]).success();
}

#[test]
fn volume_commands_and_bad_input() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    assert_eq!(d.docker(&["volume", "create", "--label", "team=a", "v1"]).success().stdout, "v1\n");
    assert_eq!(d.docker(&["volume", "create", "v1"]).success().stdout, "v1\n", "a second create answers the volume");
    let anon = d.docker(&["volume", "create"]).success().stdout;
    assert_eq!(anon.trim().len(), 64);
    let ls = d.docker(&["volume", "ls", "--filter", "label=team=a", "--format", "{{.Driver}} {{.Name}}"]).success().stdout;
    assert_eq!(ls, "local v1\n");
    let dangling = d.docker(&["volume", "ls", "-q", "--filter", "dangling=true"]).success().stdout;
    assert_eq!(dangling.lines().count(), 2);
    let v = json(&d.docker(&["volume", "inspect", "v1"]).success().stdout);
    assert_eq!(
        (v[0]["Driver"].as_str(), v[0]["Scope"].as_str(), v[0]["Labels"]["team"].as_str()),
        (Some("local"), Some("local"), Some("a"))
    );
    assert!(v[0]["Mountpoint"].as_str().unwrap().ends_with("/volumes/v1/_data"));

    // Docker's errors, nothing made.
    for bad in ["a/b", "..", "../escape"] {
        let r = d.docker(&["volume", "create", bad]).failure();
        assert!(r.stderr.contains("includes invalid characters"), "{bad}: {r:?}");
    }
    // Over the API (the docker CLI makes `../x` an absolute host path): a name, refused.
    let (status, body) = d.post("/containers/create", r#"{"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": ["../up:/x"]}}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("includes invalid characters"), "{body}");
    let r = d.docker(&["volume", "inspect", "nope"]).failure();
    assert!(r.stderr.contains("no such volume"), "{r:?}");
    let r = d.docker(&["volume", "rm", "nope"]).failure();
    assert!(r.stderr.contains("no such volume"), "{r:?}");
    d.docker(&["volume", "rm", "-f", "nope"]).success();
    assert!(!d.dir.path().join("data/volumes/escape").exists() && !d.dir.path().join("data/escape").exists());
    d.docker(&["volume", "rm", "v1", anon.trim()]).success();
    assert_eq!(d.docker(&["volume", "ls", "-q"]).success().stdout, "");
}

#[test]
fn volumes_from_another_container_and_disk_usage() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("h"), "host-file\n").unwrap();
    let bind = format!("{}:/hostdir", host.path().display());
    d.docker(&["create", "--name", "src", "-v", "shared:/shared", "-v", "/anon", "-v", &bind, "busybox", "true"]).success();
    d.docker(&["run", "--rm", "-v", "shared:/shared", "busybox", "sh", "-c", "head -c 300000 /dev/zero > /shared/blob"]).success();
    // The same volumes and binds at the same paths; read-only with `:ro`.
    let out = d
        .docker(&[
            "run",
            "--rm",
            "--volumes-from",
            "src",
            "busybox",
            "sh",
            "-c",
            "ls /shared /anon; cat /hostdir/h; touch /shared/w && echo writable",
        ])
        .success()
        .stdout;
    assert!(out.contains("blob") && out.contains("host-file") && out.contains("writable"), "{out}");
    let r = d.docker(&["run", "--rm", "--volumes-from", "src:ro", "busybox", "touch", "/shared/x"]);
    assert_ne!(r.code, 0, "{r:?}");
    let r = d.docker(&["run", "--rm", "--volumes-from", "nosuch", "busybox", "true"]).failure();
    assert!(r.stderr.contains("nosuch"), "{r:?}");
    // `system df` counts the volumes, what they hold (against du) and which are used.
    let (s, body) = d.request("GET", "/system/df");
    assert_eq!(s, 200);
    let df = json(&body);
    let shared = df["Volumes"].as_array().unwrap().iter().find(|v| v["Name"] == "shared").unwrap().clone();
    let du = run_command(std::process::Command::new("du").args(["-s", "-B1"]).arg(shared["Mountpoint"].as_str().unwrap())).success().stdout;
    let du: i64 = du.split_whitespace().next().unwrap().parse().unwrap();
    let size = shared["UsageData"]["Size"].as_i64().unwrap();
    // du counts the directory itself too.
    assert!(size >= 300_000 && size <= du, "{size} vs du {du}");
    assert_eq!(shared["UsageData"]["RefCount"], 1);
    let table = d.docker(&["system", "df"]).success().stdout;
    assert!(table.lines().any(|l| l.starts_with("Local Volumes") && l.contains(" 2 ")), "{table}");
    d.docker(&["rm", "-v", "src"]).success();
    d.docker(&["volume", "rm", "shared"]).success();
}

/// `diff`: added, changed and deleted paths of the writable layer, the init files left out.
#[test]
fn diff_lists_what_the_container_changed() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    for tool in ["docker", "berth"] {
        let name = format!("ch-{tool}");
        d.docker(&[
            "run",
            "--name",
            &name,
            "busybox",
            "sh",
            "-c",
            "echo x > /new; mkdir -p /tmp/d; echo y >> /etc/passwd; rm /etc/group; echo h > /etc/hostname",
        ])
        .success();
        let out = if tool == "docker" { d.docker(&["diff", &name]) } else { d.berth(&["diff", &name]) }.success().stdout;
        let lines: Vec<&str> = out.lines().collect();
        for want in ["A /new", "C /etc", "C /etc/passwd", "D /etc/group", "C /tmp", "A /tmp/d"] {
            assert!(lines.contains(&want), "{tool}: {want} in {out}");
        }
        assert!(!out.contains("hostname") && !out.contains("/etc/hosts") && !out.contains("resolv.conf"), "{tool}: {out}");
        d.docker(&["rm", &name]).success();
    }
    let r = d.docker(&["diff", "nosuch"]).failure();
    assert!(r.stderr.contains("No such container"), "{r:?}");
}

/// `export`: the merged filesystem as a tar, of a stopped and of a running container, which
/// `import` makes an image again.
#[test]
fn export_and_import_round_trip() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let dir = tempfile::tempdir().unwrap();
    d.docker(&["run", "--name", "ex1", "busybox", "sh", "-c", "echo exported > /new; rm /etc/group"]).success();
    d.docker(&["run", "-d", "--name", "ex2", "busybox", "sh", "-c", "echo live > /live; sleep 60"]).success();
    for (name, file, content) in [("ex1", "new", "exported\n"), ("ex2", "live", "live\n")] {
        let tar = dir.path().join(format!("{name}.tar"));
        berth_tests::wait_until("the file to be written", || d.docker(&["exec", "ex2", "test", "-f", "/live"]).code == 0);
        d.docker(&["export", "-o", tar.to_str().unwrap(), name]).success();
        let list = run_command(std::process::Command::new("tar").arg("-tf").arg(&tar)).success().stdout;
        assert!(list.lines().any(|l| l.trim_start_matches("./") == file), "{name}: {list}");
        assert!(list.lines().any(|l| l.trim_start_matches("./") == "bin/busybox"), "{name}");
        assert!(!list.lines().any(|l| l.trim_start_matches("./") == "etc/group") || name == "ex2", "{name}: deleted files are not in it");
        let image = format!("round-{name}");
        d.docker(&["import", tar.to_str().unwrap(), &image]).success();
        let out = d.docker(&["run", "--rm", &image, "/bin/cat", &format!("/{file}")]).success().stdout;
        assert_eq!(out, content);
    }
    // Nothing of the export of a stopped container stays mounted.
    berth_tests::wait_until("the export's mount to go", || !std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains("export-"));
    d.docker(&["rm", "-f", "ex1", "ex2"]).success();
}

/// `commit`: the writable layer (additions, changes, deletions) becomes an image layer, with
/// the container's config, `--change`s, author and message; a running container is paused
/// meanwhile and runs on after.
#[test]
fn commit_makes_an_image_of_a_containers_changes() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    d.docker(&[
        "run",
        "--name",
        "c1",
        "-e",
        "FROM_RUN=1",
        "busybox",
        "sh",
        "-c",
        "echo made > /made; rm /etc/group; mkdir /dir; echo x > /dir/f",
    ])
    .success();
    let id = d
        .docker(&[
            "commit",
            "-a",
            "someone",
            "-m",
            "a message",
            "-c",
            "CMD [\"cat\", \"/made\"]",
            "-c",
            "ENV ADDED=2",
            "c1",
            "committed:v1",
        ])
        .success()
        .stdout;
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(d.docker(&["run", "--rm", "committed:v1"]).success().stdout, "made\n", "the CMD change");
    let out = d
        .docker(&["run", "--rm", "committed:v1", "sh", "-c", "cat /dir/f; test -e /etc/group || echo no-group; echo $FROM_RUN $ADDED"])
        .success()
        .stdout;
    assert_eq!(out, "x\nno-group\n1 2\n");
    let img = json(&d.docker(&["image", "inspect", "committed:v1"]).success().stdout);
    assert_eq!(img[0]["Author"], "someone");
    assert_eq!(img[0]["Comment"], "a message");
    assert_eq!(img[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2, "{img}");
    let history = d.docker(&["history", "--no-trunc", "committed:v1"]).success().stdout;
    assert!(history.contains("a message"), "{history}");
    // The committed layer's blob is written when a save needs it, with the diffID the commit
    // recorded: a load of the save into a fresh daemon gives the same image.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("committed.tar");
    d.docker(&["save", "-o", saved.to_str().unwrap(), "committed:v1"]).success();
    d.docker(&["rmi", "committed:v1"]).success();
    let loaded = d.docker(&["load", "-i", saved.to_str().unwrap()]).success().stdout;
    assert!(loaded.contains("committed:v1"), "{loaded}");
    let again = json(&d.docker(&["image", "inspect", "committed:v1"]).success().stdout);
    assert_eq!(again[0]["Id"], img[0]["Id"], "the same image after a save and a load");
    assert_eq!(d.docker(&["run", "--rm", "committed:v1"]).success().stdout, "made\n");
    // A running container: paused while committed, running after.
    d.docker(&["run", "-d", "--name", "c2", "busybox", "sh", "-c", "echo live > /live; sleep 60"]).success();
    berth_tests::wait_until("the file", || d.docker(&["exec", "c2", "test", "-f", "/live"]).code == 0);
    d.docker(&["commit", "c2", "committed:v2"]).success();
    assert_eq!(inspect(&d, "c2")["State"]["Status"], "running");
    assert_eq!(d.docker(&["run", "--rm", "committed:v2", "cat", "/live"]).success().stdout, "live\n");
    // A bad change: nothing made.
    let r = d.docker(&["commit", "-c", "BOGUS x", "c1", "committed:bad"]).failure();
    assert!(r.stderr.contains("not a valid change command"), "{r:?}");
    assert_ne!(d.docker(&["image", "inspect", "committed:bad"]).code, 0);
    d.docker(&["rm", "-f", "c1", "c2"]).success();
}

/// `system prune` with berth's CLI and the docker CLI (which also prunes the build cache: berth
/// has none before builds, so nothing is deleted there): stopped containers, unused networks,
/// dangling or unused images, and with `--volumes` unused anonymous volumes; what is in use
/// stays.
#[test]
fn system_prune_removes_what_nothing_uses() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    d.docker(&["run", "-d", "--name", "keep", "-v", "busy:/b", "busybox", "sleep", "60"]).success();
    d.docker(&["run", "--name", "old", "-v", "/anon", "busybox", "true"]).success();
    d.docker(&["network", "create", "--subnet", "10.254.251.0/24", "unused"]).success();
    d.docker(&["tag", "busybox", "extra:1"]).success();
    let out = d.berth(&["system", "prune", "-f", "--volumes"]).success().stdout;
    assert!(out.contains("Deleted Containers:") && out.contains("Deleted Networks:") && out.contains("unused"), "{out}");
    assert!(out.contains("Deleted Volumes:") && out.contains("Total reclaimed space:"), "{out}");
    assert_eq!(d.docker(&["ps", "-aq"]).success().stdout.lines().count(), 1, "the running one stays");
    assert_eq!(d.docker(&["volume", "ls", "-q"]).success().stdout, "busy\n");
    assert!(d.docker(&["image", "inspect", "extra:1"]).code == 0, "not dangling: kept without -a");
    d.docker(&["rm", "-f", "keep"]).success();
    d.berth(&["system", "prune", "-af"]).success();
    assert_ne!(d.docker(&["image", "inspect", "extra:1"]).code, 0, "-a: unused images go");
    assert_eq!(d.docker(&["volume", "ls", "-q"]).success().stdout, "busy\n", "named volumes stay");
    // The docker CLI's, with a filter (busybox went with -a).
    d.import_busybox();
    d.docker(&["run", "--name", "labelled", "--label", "drop=yes", "busybox", "true"]).success();
    d.docker(&["run", "--name", "unlabelled", "busybox", "true"]).success();
    let out = d.docker(&["system", "prune", "-f", "--filter", "label=drop=yes"]).success().stdout;
    assert!(out.contains("Total reclaimed space:"), "{out}");
    let left = d.docker(&["ps", "-a", "--format", "{{.Names}}"]).success().stdout;
    assert_eq!(left, "unlabelled\n", "only the labelled container went");
    d.docker(&["rm", "unlabelled"]).success();
}

/// The local driver's options (`type`, `device`, `o`): a tmpfs volume with a size limit, a bind
/// of a host directory, both mounted while a container uses them and taken off after (nothing
/// left in the host's mount table), `size` refused as Docker refuses it without quotas; and
/// `--tmpfs` / `--mount type=tmpfs` size limits that hold.
#[test]
fn local_driver_options_and_tmpfs_limits() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let mounted = || std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains("/volumes/")).count();
    d.docker(&["volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m,uid=1000", "small"]).success();
    let v = json(&d.docker(&["volume", "inspect", "small"]).success().stdout);
    assert_eq!(v[0]["Options"]["type"], "tmpfs");
    let out = d
        .docker(&[
            "run",
            "--rm",
            "-v",
            "small:/t",
            "busybox",
            "sh",
            "-c",
            "stat -c %u /t; head -c 2000000 /dev/zero > /t/big; echo $?; du -k /t/big",
        ])
        .success()
        .stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    assert_ne!(lines[1], "0", "a 2 MB write into a 1 MiB tmpfs volume succeeded: {out}");
    assert_eq!(mounted(), 0, "the tmpfs stays mounted with no container using it");
    // Two users: the mount stays while either runs, and goes with the last.
    d.docker(&["run", "-d", "--name", "first", "-v", "small:/t", "busybox", "sh", "-c", "echo shared > /t/f; sleep 60"]).success();
    berth_tests::wait_until("the first's write", || d.docker(&["exec", "first", "test", "-f", "/t/f"]).code == 0);
    d.docker(&["run", "-d", "--name", "second", "-v", "small:/t", "busybox", "sleep", "60"]).success();
    d.docker(&["rm", "-f", "first"]).success();
    assert_eq!(d.docker(&["exec", "second", "cat", "/t/f"]).success().stdout, "shared\n", "the first's exit kept the mount");
    assert_eq!(mounted(), 1);
    d.docker(&["rm", "-f", "second"]).success();
    assert_eq!(mounted(), 0, "the last user's exit took it off");

    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("from-host"), "h").unwrap();
    let dev = format!("device={}", host.path().display());
    d.docker(&["volume", "create", "-o", "type=none", "-o", "o=bind", "-o", &dev, "hostdir"]).success();
    let out =
        d.docker(&["run", "--rm", "-v", "hostdir:/h", "busybox", "sh", "-c", "cat /h/from-host; echo c > /h/from-ctr"]).success().stdout;
    assert_eq!(out, "h");
    assert_eq!(std::fs::read_to_string(host.path().join("from-ctr")).unwrap(), "c\n");
    // A copy into a stopped container goes through the volume's own mount, not its empty
    // data directory, as Docker mounts a stopped container's volumes for a copy.
    d.docker(&["run", "--name", "stopped", "-v", "hostdir:/h", "busybox", "true"]).success();
    let upload = tempfile::tempdir().unwrap();
    std::fs::write(upload.path().join("via-cp"), "cp").unwrap();
    d.docker(&["cp", upload.path().join("via-cp").to_str().unwrap(), "stopped:/h/"]).success();
    assert_eq!(std::fs::read_to_string(host.path().join("via-cp")).unwrap(), "cp");
    d.docker(&["rm", "stopped"]).success();
    assert_eq!(mounted(), 0, "the copy's mount stayed in its own namespace");
    // Removing the volume takes the mount off first: the host directory keeps its files.
    d.docker(&["volume", "rm", "hostdir", "small"]).success();
    assert!(host.path().join("from-host").exists() && host.path().join("from-ctr").exists());
    assert_eq!(mounted(), 0);

    let e = d.docker(&["volume", "create", "-o", "size=10m", "quota"]).failure();
    assert!(e.stderr.contains("quota size requested but no quota support"), "{e:?}");
    let e = d.docker(&["volume", "create", "-o", "bogus=1", "bogus"]).failure();
    assert!(e.stderr.contains("invalid option"), "{e:?}");

    // --tmpfs and --mount type=tmpfs: their sizes hold.
    let out = d
        .docker(&[
            "run",
            "--rm",
            "--tmpfs",
            "/a:size=1m",
            "--mount",
            "type=tmpfs,target=/b,tmpfs-size=1048576,tmpfs-mode=0700",
            "busybox",
            "sh",
            "-c",
            "head -c 2000000 /dev/zero > /a/x; echo $?; head -c 2000000 /dev/zero > /b/x; echo $?; stat -c %a /b",
        ])
        .success()
        .stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0] != "0" && lines[1] != "0", "{out}");
    assert_eq!(lines[2], "700", "{out}");
}
