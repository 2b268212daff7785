//! `cp` through berthd (`/containers/{id}/archive`), with the docker CLI and berth's: Docker's
//! rules for trailing `/` and `/.`, symlinks and `-L`, ownership, volumes and binds seen from
//! both sides, stopped and read-only containers, and hostile paths and archives that must
//! never reach a host file outside the container.

use std::os::unix::fs::MetadataExt;

use berth_tests::{TestDaemon, json};

fn stat(d: &TestDaemon, ctr: &str, path: &str) -> (u16, Option<serde_json::Value>) {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    write!(s, "HEAD /containers/{ctr}/archive?path={path} HTTP/1.0\r\nHost: berth\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let header =
        resp.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("x-docker-container-path-stat:").map(|_| l[29..].trim().to_string()));
    let stat = header.map(|h| json(&String::from_utf8(base64::engine::general_purpose::STANDARD.decode(h).unwrap()).unwrap()));
    (status, stat)
}

#[test]
fn cp_both_ways_by_dockers_rules() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    let bind = h.join("bind");
    std::fs::create_dir(&bind).unwrap();
    let bind_arg = format!("{}:/bound", bind.display());
    d.docker(&[
        "run",
        "-d",
        "--name",
        "cc",
        "-v",
        "vol:/vol",
        "-v",
        &bind_arg,
        "busybox",
        "sh",
        "-c",
        "mkdir -p /d/sub && echo hi > /d/a && chown 1000:1000 /d/a && ln -s a /d/rel && ln -s /etc /d/etc && echo v > /vol/x && touch /ready; sleep 600",
    ])
    .success();
    berth_tests::wait_until("the container's files", || d.docker(&["exec", "cc", "test", "-e", "/ready"]).code == 0);

    // Stats as Docker's: the name by the request's form, Go's modes, a symlink's resolved target.
    let (_, s) = stat(&d, "cc", "/d/");
    assert_eq!((s.as_ref().unwrap()["name"].as_str(), s.as_ref().unwrap()["mode"].as_u64()), (Some("d"), Some(2147484141)));
    let (_, s) = stat(&d, "cc", "/d/.");
    assert_eq!(s.unwrap()["name"], ".");
    let (_, s) = stat(&d, "cc", "/d/rel");
    assert_eq!((s.as_ref().unwrap()["linkTarget"].as_str(), s.as_ref().unwrap()["mode"].as_u64()), (Some("/d/a"), Some(134218239)));
    assert_eq!(stat(&d, "cc", "/nope").0, 404);

    // Out of the container: a file, a directory, its contents, a symlink as a link and with -L.
    let out = h.join("out");
    std::fs::create_dir(&out).unwrap();
    let o = |p: &str| out.join(p).display().to_string();
    d.docker(&["cp", "cc:/d/a", &o("")]).success();
    d.docker(&["cp", "cc:/d", &o("dir")]).success();
    d.docker(&["cp", "cc:/d/.", &o("contents")]).success();
    d.docker(&["cp", "cc:/d/rel", &o("link")]).success();
    d.docker(&["cp", "-L", "cc:/d/rel", &o("followed")]).success();
    assert_eq!(std::fs::read_to_string(out.join("a")).unwrap(), "hi\n");
    // Files copied out belong to the user copying, as with Docker's CLI.
    assert_eq!(std::fs::metadata(out.join("a")).unwrap().uid(), 0);
    assert_eq!(std::fs::read_to_string(out.join("dir/a")).unwrap(), "hi\n");
    assert!(out.join("dir/sub").is_dir() && !out.join("dir/d").exists());
    assert_eq!(std::fs::read_to_string(out.join("contents/a")).unwrap(), "hi\n");
    assert_eq!(std::fs::read_link(out.join("link")).unwrap().to_str(), Some("a"));
    assert_eq!(std::fs::read_to_string(out.join("followed")).unwrap(), "hi\n");
    assert_eq!(std::fs::read_link(out.join("dir/etc")).unwrap().to_str(), Some("/etc"));
    // Through the volume and the bind, as the container sees them.
    d.docker(&["cp", "cc:/vol/x", &o("x")]).success();
    assert_eq!(std::fs::read_to_string(out.join("x")).unwrap(), "v\n");

    // Into the container: owners kept from the source, a directory, contents, the bind.
    let src = h.join("src");
    std::fs::create_dir_all(src.join("tree/deep")).unwrap();
    std::fs::write(src.join("tree/deep/f"), "deep").unwrap();
    std::fs::write(src.join("owned"), "mine").unwrap();
    std::os::unix::fs::chown(src.join("owned"), Some(4321), Some(8765)).unwrap();
    let s = |p: &str| src.join(p).display().to_string();
    d.docker(&["cp", &s("owned"), "cc:/tmp/"]).success();
    d.docker(&["cp", &s("tree"), "cc:/tmp/newtree"]).success();
    d.docker(&["cp", &s("tree/."), "cc:/vol/"]).success();
    d.docker(&["cp", &s("owned"), "cc:/bound/from-cp"]).success();
    let seen = d.docker(&["exec", "cc", "sh", "-c", "stat -c '%u:%g' /tmp/owned; cat /tmp/newtree/deep/f /vol/deep/f"]).success().stdout;
    assert_eq!(seen, "4321:8765\ndeepdeep");
    assert_eq!(std::fs::read_to_string(bind.join("from-cp")).unwrap(), "mine");

    // Docker's errors.
    let e = d.docker(&["cp", "cc:/nope", &o("")]).failure();
    assert!(e.stderr.contains("Could not find the file /nope in container cc"), "{e:?}");
    let e = d.docker(&["cp", &s("tree"), "cc:/d/a"]).failure();
    assert!(e.stderr.contains("cannot copy directory"), "{e:?}");
    let e = d.docker(&["cp", &s("owned"), "nosuch:/tmp"]).failure();
    assert!(e.stderr.contains("No such container: nosuch"), "{e:?}");
    let e = d.docker(&["cp", &s("owned"), "cc:/d/a/"]).failure();
    assert!(e.stderr.contains("no such directory"), "{e:?}");

    // berth's CLI, the same rules.
    d.berth(&["cp", "cc:/d/.", &o("berth")]).success();
    assert_eq!(std::fs::read_to_string(out.join("berth/a")).unwrap(), "hi\n");
    d.berth(&["cp", &s("tree"), "cc:/berth-tree"]).success();
    d.berth(&["cp", "-L", "cc:/d/rel", &o("berth-followed")]).success();
    assert_eq!(std::fs::read_to_string(out.join("berth-followed")).unwrap(), "hi\n");
    let e = d.berth(&["cp", "cc:/nope", &o("")]).failure();
    assert!(e.stderr.contains("Could not find the file /nope in container cc"), "{e:?}");
    let tar = d.berth(&["cp", "cc:/berth-tree", "-"]).success().stdout;
    assert!(tar.contains("berth-tree/deep/f"), "a tar of the copy on stdout");

    // A stopped container: copies both ways, its layer mounted for the copy only.
    d.docker(&["stop", "-t", "0", "cc"]).success();
    d.docker(&["cp", &s("owned"), "cc:/stopped"]).success();
    d.docker(&["cp", "cc:/stopped", &o("back")]).success();
    assert_eq!(std::fs::read_to_string(out.join("back")).unwrap(), "mine");
    d.docker(&["cp", "cc:/vol/deep/f", &o("vol-stopped")]).success();
    assert_eq!(std::fs::read_to_string(out.join("vol-stopped")).unwrap(), "deep");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(d.socket().parent().unwrap().to_str().unwrap()), "a copy left a mount behind:\n{mounts}");
    d.docker(&["start", "cc"]).success();
    assert_eq!(d.docker(&["exec", "cc", "cat", "/stopped"]).success().stdout, "mine");

    // Read-only root filesystems and volumes refuse, as Docker's.
    d.docker(&["run", "-d", "--name", "ro", "--read-only", "-v", "rovol:/rv:ro", "busybox", "sleep", "600"]).success();
    let e = d.docker(&["cp", &s("owned"), "ro:/tmp"]).failure();
    assert!(e.stderr.contains("container rootfs is marked read-only"), "{e:?}");
    let e = d.docker(&["cp", &s("owned"), "ro:/rv"]).failure();
    assert!(e.stderr.contains("mounted volume is marked read-only"), "{e:?}");
    d.remove_all();
    d.docker(&["volume", "rm", "vol", "rovol"]).success();
}

/// CVE-2018-15664 and friends: paths that climb out, symlinks to host paths (also swapped in
/// while copies run), and hostile uploads never read or write a host file.
#[test]
fn hostile_copies_never_reach_the_host() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret");
    std::fs::write(&secret, "host-only").unwrap();
    let drop_dir = host.path().join("drop");
    std::fs::create_dir(&drop_dir).unwrap();
    let (secret_s, drop_s) = (secret.display().to_string(), drop_dir.display().to_string());
    // The container swaps /w/dir between a directory and a symlink to the host's directory.
    let script = format!(
        "mkdir -p /w; ln -s {secret_s} /w/to-secret; ln -s {drop_s} /w/to-drop; \
         while true; do rm -rf /w/dir; mkdir /w/dir; echo inside > /w/dir/secret; rm -rf /w/dir; ln -s {drop_s} /w/dir; \
         rm -f /w/dir; ln -s / /w/dir; done"
    );
    d.docker(&["run", "-d", "--name", "swap", "busybox", "sh", "-c", &script]).success();
    berth_tests::wait_until("the symlinks", || d.docker(&["exec", "swap", "test", "-L", "/w/to-secret"]).code == 0);

    // A symlink to a host path resolves inside the container, where there is nothing.
    let climbing = format!("/../../../..{secret_s}");
    for path in ["/w/to-secret", climbing.as_str(), "/w/to-drop/"] {
        let (status, body) = d.request("GET", &format!("/containers/swap/archive?path={path}"));
        assert!(!body.contains("host-only"), "{path}: {status} {body}");
    }
    let e = d.docker(&["cp", "-L", "swap:/w/to-secret", "-"]);
    assert!(!e.stdout.contains("host-only"));

    // Copies in and out while the swap runs.
    let src = host.path().join("f");
    std::fs::write(&src, "uploaded").unwrap();
    let tar = std::process::Command::new("tar").arg("-C").arg(host.path()).args(["-cf", "-", "f"]).output().unwrap().stdout;
    for _ in 0..200 {
        let (_, body) = d.request("GET", "/containers/swap/archive?path=/w/dir/secret");
        assert!(!body.contains("host-only"), "read a host file through a swapped symlink");
        let _ = d.request_body("PUT", "/containers/swap/archive?path=/w/dir", "application/x-tar", &tar);
        let _ = d.request_body("PUT", "/containers/swap/archive?path=/w/to-drop", "application/x-tar", &tar);
    }
    assert_eq!(std::fs::read_dir(&drop_dir).unwrap().count(), 0, "a copy wrote into the host's directory");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host-only");

    // Hostile archives: refused whole, nothing written.
    let mut evil = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..11].copy_from_slice(b"ok-first.tx");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    evil.append(&h, &b"x"[..]).unwrap();
    let mut h = tar::Header::new_old();
    let name = b"../../../../escaped";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    evil.append(&h, &b"x"[..]).unwrap();
    let evil = evil.into_inner().unwrap();
    let (status, body) = d.request_body("PUT", "/containers/swap/archive?path=/tmp", "application/x-tar", &evil);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("'..'"), "{body}");
    let seen = d.docker(&["exec", "swap", "ls", "-la", "--full-time", "/tmp", "/"]);
    assert_ne!(
        d.docker(&["exec", "swap", "test", "-e", "/tmp/ok-first.tx"]).code,
        0,
        "a refused archive wrote its first entry ({status}: {body}); /tmp and / now: {seen:?}"
    );
    let (status, _) = d.request_body("PUT", "/containers/swap/archive?path=/tmp", "application/x-tar", b"not a tar at all, really not");
    assert_eq!(status, 400);
    d.remove_all();
}

/// One HTTP/1.0 request to a daemon's unix socket: (status, the path-stat header, body bytes).
fn raw(socket: &std::path::Path, method: &str, path: &str, body: &[u8]) -> (u16, Option<String>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    // A daemon may answer an upload it refuses without reading it, and close: the write can
    // then fail and the read end in a reset after the answer, which is what counts.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let stat = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-docker-container-path-stat").then(|| v.trim().to_string())
    });
    (status, stat, resp[split..].to_vec())
}

/// A tar's entries as (name, type, link target, mode, uid, gid).
fn entries(tar: &[u8]) -> Vec<(String, char, String, u32, u64, u64)> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let link = e.link_name().unwrap().map(|l| l.display().to_string()).unwrap_or_default();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            (name, h.entry_type().as_byte() as char, link, h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap())
        })
        .collect()
}

/// The archive endpoints beside dockerd's (the peer) for the same container: the same statuses,
/// stats (but times) and tar entries (names, types, link targets, modes, owners) for each form
/// of path, and the same answers to uploads.
#[test]
fn archive_answers_match_dockerds() {
    if !berth_tests::is_root() || !berth_tests::have("docker") {
        assert!(!berth_tests::in_ci(), "CI runs this test as root with the docker CLI");
        return;
    }
    let Some(peer) = berth_tests::peer_dockerd() else { return };
    let Some(d) = TestDaemon::with_busybox() else { return };
    let peer_socket = std::path::PathBuf::from(peer.trim_start_matches("unix://"));
    let on_peer = |args: &[&str]| {
        let mut c = std::process::Command::new("docker");
        c.env("DOCKER_HOST", &peer).args(args);
        berth_tests::run_command(&mut c)
    };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs.tar");
    let made =
        std::process::Command::new("tar").arg("-C").arg(berth_tests::busybox_rootfs()).arg("-cf").arg(&rootfs).arg(".").status().unwrap();
    assert!(made.success());
    on_peer(&["import", rootfs.to_str().unwrap(), "berth-cp-cmp:latest"]).success();
    let name = format!("cpcmp-{}", std::process::id());
    let setup = "mkdir -p /d/sub && echo hi > /d/a && chown 1000:1000 /d/a && chmod 4755 /d/sub && ln -s /etc /d/lnk && ln -s a /d/rel \
                 && ln /d/a /d/hard && touch /ready; sleep 600";
    on_peer(&["run", "-d", "--name", &name, "--network", "none", "berth-cp-cmp", "sh", "-c", setup]).success();
    d.docker(&["run", "-d", "--name", &name, "--network", "none", "busybox", "sh", "-c", setup]).success();
    berth_tests::wait_until("the files", || {
        on_peer(&["exec", &name, "test", "-e", "/ready"]).code == 0 && d.docker(&["exec", &name, "test", "-e", "/ready"]).code == 0
    });
    let decode = |h: Option<String>| -> Option<serde_json::Value> {
        use base64::Engine as _;
        let mut v = json(&String::from_utf8(base64::engine::general_purpose::STANDARD.decode(h?).ok()?).ok()?);
        let is_dir = v["mode"].as_u64().is_some_and(|m| m & (1 << 31) != 0);
        let obj = v.as_object_mut()?;
        obj.remove("mtime");
        if is_dir {
            obj.remove("size"); // a directory's size is its file system's business
        }
        Some(v)
    };
    for path in ["/d", "/d/", "/d/.", "/d/a", "/d/lnk", "/d/rel", "/d/hard", "/d/sub", "/nope", "/d/a/", "/../d/./a"] {
        let url = format!("/v1.41/containers/{name}/archive?path={path}");
        let (ts, th, tb) = raw(&peer_socket, "GET", &url, b"");
        let (os, oh, ob) = raw(&d.socket(), "GET", &url, b"");
        assert_eq!(os, ts, "GET {path}: status");
        assert_eq!(decode(oh), decode(th), "GET {path}: stat");
        if ts == 200 {
            assert_eq!(entries(&ob), entries(&tb), "GET {path}: entries");
        } else if ts == 404 {
            assert_eq!(String::from_utf8_lossy(&ob).trim(), String::from_utf8_lossy(&tb).trim(), "GET {path}: message");
        }
        let (hs, _, _) = raw(&peer_socket, "HEAD", &url, b"");
        assert_eq!(raw(&d.socket(), "HEAD", &url, b"").0, hs, "HEAD {path}: status");
    }
    // Uploads: the same answers, the same result.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o640);
    h.set_uid(7);
    h.set_gid(8);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "up/f", &b"new"[..]).unwrap();
    let up = b.into_inner().unwrap();
    for path in ["/tmp", "/d/lnk/..", "/d/a", "/nope", "/d/lnk"] {
        let url = format!("/v1.41/containers/{name}/archive?path={path}&noOverwriteDirNonDir=true");
        let (ts, _, tb) = raw(&peer_socket, "PUT", &url, &up);
        let (os, _, ob) = raw(&d.socket(), "PUT", &url, &up);
        assert_eq!(os, ts, "PUT {path}: status ({})", String::from_utf8_lossy(&ob));
        if ts != 200 {
            assert_eq!(String::from_utf8_lossy(&ob).trim(), String::from_utf8_lossy(&tb).trim(), "PUT {path}: message");
        }
    }
    for f in ["/tmp/up", "/up/f", "/etc/up/f"] {
        let url = format!("/v1.41/containers/{name}/archive?path={f}");
        let (t, o) = (raw(&peer_socket, "GET", &url, b""), raw(&d.socket(), "GET", &url, b""));
        assert_eq!((o.0, entries_or_empty(&o.2, o.0)), (t.0, entries_or_empty(&t.2, t.0)), "after the uploads: {f}");
    }
    on_peer(&["rm", "-f", &name]).success();
    on_peer(&["rmi", "berth-cp-cmp"]).success();
    d.remove_all();
}

fn entries_or_empty(body: &[u8], status: u16) -> Vec<(String, char, String, u32, u64, u64)> {
    if status == 200 { entries(body) } else { Vec::new() }
}
