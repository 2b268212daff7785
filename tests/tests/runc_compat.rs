//! berth-runc as a drop-in runc (issue 21): each case runs the same bundle under runc (where
//! it is installed) and under berth-runc, and expects the same outcome.

use std::process::{Command, Stdio};

use berth_tests::{Bundle, Run, Runtime, have, in_ci, is_root, run_command, skip};

/// runc, with a state root of its own.
struct Runc {
    root: tempfile::TempDir,
}

impl Runc {
    fn new() -> Option<Runc> {
        if !have("runc") {
            assert!(!in_ci(), "CI installs runc");
            skip("runc is not installed: berth-runc is not compared with it");
            return None;
        }
        Some(Runc { root: tempfile::Builder::new().prefix("berth-runc-ref-").tempdir().unwrap() })
    }

    fn command(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(self.root.path());
        c
    }
}

/// One runtime or the other, driven alike.
enum Rt<'a> {
    Ours(&'a Runtime),
    Theirs(&'a Runc),
}

impl Rt<'_> {
    fn name(&self) -> &'static str {
        match self {
            Rt::Ours(_) => "berth-runc",
            Rt::Theirs(_) => "runc",
        }
    }

    fn command(&self) -> Command {
        match self {
            Rt::Ours(r) => r.command(),
            Rt::Theirs(r) => r.command(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        run_command(self.command().args(args))
    }

    /// A command whose container process inherits its stdio (`create`, `run -d`): run with
    /// /dev/null, so no pipe stays open behind it. Returns the exit code.
    fn detached(&self, args: &[&str]) -> i32 {
        let status = self.command().args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
        status.code().unwrap_or(-1)
    }
}

/// runc and berth-runc, where both can run here (as root, runc installed).
fn peers() -> Option<(Runc, Runtime)> {
    if !is_root() {
        return None;
    }
    Some((Runc::new()?, Runtime::new()))
}

fn both<'a>(ours: &'a Runtime, theirs: &'a Runc) -> [Rt<'a>; 2] {
    [Rt::Ours(ours), Rt::Theirs(theirs)]
}

#[test]
fn a_created_container_is_deleted_without_force() {
    let Some((runc, ours)) = peers() else { return };
    for rt in both(&ours, &runc) {
        let b = Bundle::new(&["sleep", "300"]);
        let id = ours.id("created");
        assert_eq!(rt.detached(&["create", "--bundle", b.path().to_str().unwrap(), &id]), 0, "{}", rt.name());
        let state: serde_json::Value = serde_json::from_str(&rt.run(&["state", &id]).success().stdout).unwrap();
        assert_eq!(state["status"], "created", "{}", rt.name());
        let pid = state["pid"].as_i64().unwrap();
        let r = rt.run(&["delete", &id]);
        assert_eq!(r.code, 0, "{}: {r:?}", rt.name());
        assert_ne!(rt.run(&["state", &id]).code, 0, "{}: gone", rt.name());
        berth_tests::wait_until("its init gone", || !std::path::Path::new(&format!("/proc/{pid}")).exists() || zombie(pid));
    }
}

fn zombie(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}

#[test]
fn exec_env_replaces_the_specs_and_caps_take_runcs_names() {
    let Some((runc, ours)) = peers() else { return };
    let mut outputs = Vec::new();
    for rt in both(&ours, &runc) {
        let mut b = Bundle::new(&["sleep", "300"]);
        b.spec["process"]["env"] = serde_json::json!(["PATH=/bin:/usr/bin", "FOO=spec"]);
        b.save();
        let id = ours.id("exec");
        assert_eq!(rt.detached(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]), 0, "{}", rt.name());
        let env = rt.run(&["exec", "--env", "FOO=exec", &id, "sh", "-c", "env | grep ^FOO="]).success().stdout;
        let caps = rt.run(&["exec", "--cap", "CAP_SYS_ADMIN", &id, "grep", "CapBnd", "/proc/self/status"]).success().stdout;
        // Not in a paused container unless asked.
        rt.run(&["pause", &id]).success();
        let refused = rt.run(&["exec", &id, "true"]);
        assert_ne!(refused.code, 0, "{}: exec in a paused container", rt.name());
        assert!(refused.stderr.contains("paused"), "{}: {}", rt.name(), refused.stderr);
        rt.run(&["resume", &id]).success();
        rt.run(&["delete", "--force", &id]).success();
        outputs.push((env, caps));
    }
    assert_eq!(outputs[0].0, "FOO=exec\n", "the spec's FOO replaced, not doubled");
    assert_eq!(outputs[0], outputs[1], "berth-runc and runc agree");
}

#[test]
fn runcs_own_default_spec_runs_ambient_capabilities_skipped_as_runc_skips_them() {
    let Some((runc, ours)) = peers() else { return };
    // `runc spec` lists ambient capabilities that are not inheritable.
    let b = Bundle::new(&["true"]);
    let dir = tempfile::tempdir().unwrap();
    run_command(Command::new("runc").arg("spec").current_dir(dir.path())).success();
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert!(spec["process"]["capabilities"]["ambient"].as_array().is_some_and(|a| !a.is_empty()));
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["grep", "-E", "^Cap(Amb|Eff|Inh)", "/proc/self/status"]);
    spec["root"]["path"] = b.path().join("rootfs").to_string_lossy().into_owned().into();
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let mut outs = Vec::new();
    for rt in both(&ours, &runc) {
        let id = ours.id("runc-spec");
        let r = rt.run(&["run", "--bundle", dir.path().to_str().unwrap(), &id]);
        assert_eq!(r.code, 0, "{}: {r:?}", rt.name());
        outs.push(r.stdout);
    }
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn hooks_without_env_get_the_runtimes_environment() {
    let Some((runc, ours)) = peers() else { return };
    let mut outs = Vec::new();
    for rt in both(&ours, &runc) {
        let mut b = Bundle::new(&["true"]);
        let out = b.path().join("hooks.out");
        let o = out.to_string_lossy().into_owned();
        b.spec["hooks"] = serde_json::json!({"createRuntime": [
            {"path": "/bin/sh", "args": ["sh", "-c", format!("echo \"inherited:$HOOK_MARK\" >> {o}")]},
            {"path": "/bin/sh", "args": ["sh", "-c", format!("echo \"own:$HOOK_MARK:$A\" >> {o}")], "env": ["A=1"]}
        ]});
        b.save();
        let id = ours.id("hooks-env");
        let r = run_command(rt.command().env("HOOK_MARK", "x").args(["run", "--bundle", b.path().to_str().unwrap(), &id]));
        assert_eq!(r.code, 0, "{}: {r:?}", rt.name());
        outs.push(std::fs::read_to_string(&out).unwrap());
    }
    assert_eq!(outs[0], "inherited:x\nown::1\n");
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn failures_are_reported_as_runc_reports_them() {
    let Some((runc, ours)) = peers() else { return };
    for rt in both(&ours, &runc) {
        for cmd in [&["state", "nosuch"][..], &["kill", "nosuch"], &["delete", "nosuch"], &["start", "nosuch"]] {
            let r = rt.run(cmd);
            assert_eq!(r.code, 1, "{} {cmd:?}", rt.name());
            assert!(r.stderr.contains(r#"level=error msg="container does not exist""#), "{} {cmd:?}: {}", rt.name(), r.stderr);
        }
        // With --log and JSON: the line in the log, the message on stderr.
        let log = tempfile::NamedTempFile::new().unwrap();
        let r = run_command(rt.command().arg("--log").arg(log.path()).args(["--log-format", "json", "state", "nosuch"]));
        assert_eq!((r.code, r.stderr.trim()), (1, "container does not exist"), "{}", rt.name());
        let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(log.path()).unwrap().lines().last().unwrap()).unwrap();
        assert_eq!((line["level"].as_str(), line["msg"].as_str()), (Some("error"), Some("container does not exist")), "{}", rt.name());
    }
}

#[test]
fn proc_through_a_symlink_is_refused() {
    let Some((runc, ours)) = peers() else { return };
    for rt in both(&ours, &runc) {
        let b = Bundle::new(&["true"]);
        let proc_dir = b.path().join("rootfs/proc");
        let _ = std::fs::remove_dir_all(&proc_dir);
        std::os::unix::fs::symlink("/tmp", &proc_dir).unwrap();
        let id = ours.id("proc-link");
        let r = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
        assert_ne!(r.code, 0, "{}", rt.name());
        assert!(r.stderr.contains("must be mounted on ordinary directory"), "{}: {}", rt.name(), r.stderr);
        assert!(std::fs::read_dir(b.path().join("rootfs/tmp")).unwrap().next().is_none(), "{}: nothing mounted there", rt.name());
        let _ = rt.run(&["delete", "--force", &id]);
    }
}

#[test]
fn apparmor_profiles_and_selinux_labels_are_not_ignored() {
    let Some((runc, ours)) = peers() else { return };
    let has = |p: &str| std::path::Path::new(p).exists();
    for (field, host_has) in [("apparmor", has("/sys/kernel/security/apparmor")), ("selinux", has("/sys/fs/selinux/enforce"))] {
        if host_has {
            skip(&format!("this host has {field}: the refusal where it lacks it is not checked"));
            continue;
        }
        for rt in both(&ours, &runc) {
            let mut b = Bundle::new(&["true"]);
            if field == "apparmor" {
                b.spec["process"]["apparmorProfile"] = "some-profile".into();
            } else {
                b.spec["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0".into();
            }
            b.save();
            let id = ours.id(field);
            let r = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
            assert_ne!(r.code, 0, "{} runs with {field} set on a host without it", rt.name());
            assert!(r.stderr.contains("level=error"), "{}: {}", rt.name(), r.stderr);
            if let Rt::Ours(_) = rt {
                assert!(r.stderr.contains("is not enabled on this host"), "says what is missing: {}", r.stderr);
            }
            let _ = rt.run(&["delete", "--force", &id]);
        }
    }
}

/// A tmpfs mounted for the test, unmounted when it ends (failing too).
struct TmpMount(std::path::PathBuf);

impl Drop for TmpMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn recursive_mount_options_reach_submounts() {
    let Some((runc, ours)) = peers() else { return };
    let src = tempfile::tempdir().unwrap();
    let sub = src.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    nix::mount::mount(Some("tmpfs"), &sub, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=1m")).unwrap();
    let _guard = TmpMount(sub.clone());
    let probe = "touch /data/top 2>/dev/null; echo top=$?; touch /data/sub/x 2>/dev/null; echo sub=$?";
    for (options, want) in [(&["rbind", "ro"][..], "top=1\nsub=0\n"), (&["rbind", "rro"][..], "top=1\nsub=1\n")] {
        for rt in both(&ours, &runc) {
            let mut b = Bundle::new(&["sh", "-c", probe]);
            b.spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
                "destination": "/data", "type": "bind", "source": src.path(), "options": options
            }));
            b.save();
            let id = ours.id("rro");
            let r = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
            assert_eq!((r.code, r.stdout.as_str()), (0, want), "{} {options:?}: {}", rt.name(), r.stderr);
        }
    }
}

#[test]
fn a_read_only_root_in_a_user_namespace_keeps_its_locked_flags() {
    let Some((runc, ours)) = peers() else { return };
    for rt in both(&ours, &runc) {
        let mut b = Bundle::new(&["sh", "-c", "touch /x 2>/dev/null; echo $?"]);
        b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(serde_json::json!({"type": "user"}));
        let map = serde_json::json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
        b.spec["linux"]["uidMappings"] = map.clone();
        b.spec["linux"]["gidMappings"] = map;
        b.spec["root"]["readonly"] = true.into();
        b.save();
        let id = ours.id("userns-ro");
        let r = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
        assert_eq!((r.code, r.stdout.as_str()), (0, "1\n"), "{}: {}", rt.name(), r.stderr);
    }
}

#[test]
fn a_shared_root_propagation_works_and_leaks_nothing_into_the_hosts_mounts() {
    let Some((runc, ours)) = peers() else { return };
    let src = tempfile::tempdir().unwrap();
    for rt in both(&ours, &runc) {
        let mut b = Bundle::new(&["sh", "-c", "grep -q ' / / .*shared:' /proc/self/mountinfo && echo shared; sleep 300"]);
        b.spec["linux"]["rootfsPropagation"] = "shared".into();
        b.spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/data", "type": "bind", "source": src.path(), "options": ["rbind"]
        }));
        b.save();
        let id = ours.id("shared");
        assert_eq!(rt.detached(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]), 0, "{}", rt.name());
        // While it runs, none of its mounts is in the host's table.
        let bundle = b.path().to_string_lossy().into_owned();
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!host.lines().any(|l| l.contains(&bundle)), "{}: the container's mounts reached the host: {host}", rt.name());
        rt.run(&["delete", "--force", &id]).success();
    }
}

/// The message of a logrus line on stderr (`level=error msg="…"`), unescaped enough to compare.
fn msg(stderr: &str) -> String {
    let line = stderr.lines().rfind(|l| l.contains("level=error")).unwrap_or_default();
    line.split_once("msg=").map(|(_, m)| m.trim().trim_matches('"').replace("\\n", "").replace("\\\"", "\"")).unwrap_or_default()
}

#[test]
fn wrong_state_errors_read_as_runcs() {
    let Some((runc, ours)) = peers() else { return };
    let mut seen = Vec::new();
    for rt in both(&ours, &runc) {
        let b = Bundle::new(&["sleep", "300"]);
        let id = ours.id("states");
        let mut outcomes = Vec::new();
        let mut step = |what: &str, args: &[&str]| {
            let r = rt.run(args);
            outcomes.push((what.to_string(), r.code, msg(&r.stderr).replace(&id, "ID")));
        };
        assert_eq!(rt.detached(&["create", "--bundle", b.path().to_str().unwrap(), &id]), 0, "{}", rt.name());
        // A created container takes an exec, and a resume is refused.
        step("exec created", &["exec", &id, "true"]);
        step("resume created", &["resume", &id]);
        rt.run(&["start", &id]).success();
        step("start running", &["start", &id]);
        step("delete running", &["delete", &id]);
        step("resume running", &["resume", &id]);
        rt.run(&["pause", &id]).success();
        step("exec paused", &["exec", &id, "true"]);
        step("delete paused", &["delete", &id]);
        rt.run(&["resume", &id]).success();
        rt.run(&["kill", &id, "KILL"]).success();
        berth_tests::wait_until("stopped", || {
            serde_json::from_str::<serde_json::Value>(&rt.run(&["state", &id]).stdout).is_ok_and(|s| s["status"] == "stopped")
        });
        step("start stopped", &["start", &id]);
        step("kill stopped", &["kill", &id, "TERM"]);
        step("pause stopped", &["pause", &id]);
        step("exec stopped", &["exec", &id, "true"]);
        rt.run(&["delete", &id]).success();
        seen.push(outcomes);
    }
    assert_eq!(seen[0], seen[1], "berth-runc (left) and runc (right)");
}

/// Docker's default spec without its mount namespace (and, as runc wants then, without masked
/// and read-only paths), running `args` with a marker file in its rootfs.
fn without_mount_ns(args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    std::fs::write(b.path().join("rootfs/etc/marker"), "inside\n").unwrap();
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "mount");
    b.save();
    b
}

fn host_mounts_under(dir: &std::path::Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(&d)).map(str::to_string).collect()
}

#[test]
fn without_a_mount_namespace_the_root_is_the_rootfs_and_delete_takes_the_mounts_away() {
    let Some((runc, ours)) = peers() else { return };
    let mut outs = Vec::new();
    for rt in both(&ours, &runc) {
        // runc leaves such a container's mounts in the table it ran in: give it one of its own.
        let contained = |args: &[&str]| match rt {
            Rt::Ours(_) => rt.run(args),
            Rt::Theirs(_) => {
                let mut c = Command::new("unshare");
                c.args(["-m", "--propagation", "private", "runc", "--root"]).arg(runc.root.path()).args(args);
                run_command(&mut c)
            }
        };
        // Masked paths cannot be masked in the host's namespace: refused, as runc refuses.
        let mut masked = without_mount_ns(&["true"]);
        masked.spec["linux"]["maskedPaths"] = serde_json::json!(["/proc/kcore"]);
        masked.save();
        let r = contained(&["run", "--bundle", masked.path().to_str().unwrap(), &ours.id("nomnt-masked")]);
        assert_ne!(r.code, 0, "{}", rt.name());
        assert!(r.stderr.contains("unable to restrict sys entries without a private MNT namespace"), "{}: {}", rt.name(), r.stderr);

        let mut b = without_mount_ns(&["sh", "-c", "cat /etc/marker; test -e /proc/self/exe && echo proc"]);
        b.spec["linux"]["maskedPaths"] = serde_json::json!([]);
        b.spec["linux"]["readonlyPaths"] = serde_json::json!([]);
        b.save();
        let r = contained(&["run", "--bundle", b.path().to_str().unwrap(), &ours.id("nomnt")]);
        assert_eq!(r.code, 0, "{}: {r:?}", rt.name());
        outs.push(r.stdout);
        if let Rt::Ours(_) = rt {
            assert_eq!(host_mounts_under(b.path()), Vec::<String>::new(), "nothing of it stays mounted");
            // Detached, an exec sees the container's root too (runc's sees the host's).
            b.spec["process"]["args"] = serde_json::json!(["sleep", "300"]);
            b.save();
            let id = ours.id("nomnt-exec");
            assert_eq!(rt.detached(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]), 0);
            assert!(!host_mounts_under(b.path()).is_empty(), "its mounts are in our table while it runs");
            assert_eq!(rt.run(&["exec", &id, "cat", "/etc/marker"]).success().stdout, "inside\n");
            rt.run(&["delete", "--force", &id]).success();
            assert_eq!(host_mounts_under(b.path()), Vec::<String>::new(), "delete took its mounts away");
        }
    }
    assert_eq!(outs[0], "inside\nproc\n");
    assert_eq!(outs[0], outs[1], "berth-runc and runc agree");
}

/// A process in a mount namespace of its own, for a container to join; killed when dropped.
struct MountNs(std::process::Child);

impl MountNs {
    fn new() -> MountNs {
        let child = Command::new("unshare").args(["-m", "--propagation", "private", "sleep", "300"]).spawn().unwrap();
        let pid = child.id();
        let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        berth_tests::wait_until("its own mount namespace", || std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|ns| ns != ours));
        MountNs(child)
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/mnt", self.0.id())
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_mount_namespace_joined_by_path_gets_the_rootfs() {
    let Some((runc, ours)) = peers() else { return };
    let mut outs = Vec::new();
    for rt in both(&ours, &runc) {
        let ns = MountNs::new();
        let mut b = without_mount_ns(&["sh", "-c", "cat /etc/marker; test -e /proc/self/exe && echo proc"]);
        b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(serde_json::json!({"type": "mount", "path": ns.path()}));
        b.save();
        let r = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), &ours.id("joinmnt")]);
        assert_eq!(r.code, 0, "{}: {r:?}", rt.name());
        outs.push(r.stdout);
        assert_eq!(host_mounts_under(b.path()), Vec::<String>::new(), "{}: the mounts were made in the joined namespace", rt.name());
    }
    assert_eq!(outs[0], "inside\nproc\n");
    assert_eq!(outs[0], outs[1], "berth-runc and runc agree");
}

#[test]
fn an_unknown_option_on_a_bind_mount_is_refused() {
    let Some((runc, ours)) = peers() else { return };
    let src = tempfile::tempdir().unwrap();
    for rt in both(&ours, &runc) {
        let mut b = Bundle::new(&["sh", "-c", "touch /data/x && echo wrote"]);
        // `rrro`, a misspelt `rro`.
        b.spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/data", "type": "bind", "source": src.path(), "options": ["rbind", "rrro"]
        }));
        b.save();
        let id = ours.id("badopt");
        let r = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
        match rt {
            // runc 1.1 drops it without a word, and the mount is writable.
            Rt::Theirs(_) => assert_eq!((r.code, r.stdout.as_str()), (0, "wrote\n"), "runc: {r:?}"),
            Rt::Ours(_) => {
                assert_ne!(r.code, 0, "{r:?}");
                assert!(r.stderr.contains("unknown mount option") && r.stderr.contains("rrro"), "{}", r.stderr);
            }
        }
        let _ = rt.run(&["delete", "--force", &id]);
    }
}

/// Make `sub` below cgroup `cg` in every hierarchy that has `cg`; returns the directories made.
fn make_sub_cgroups(cg: &str, sub: &str) -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mut hierarchies: Vec<std::path::PathBuf> = vec![root.to_path_buf()];
    hierarchies.extend(std::fs::read_dir(root).unwrap().flatten().filter_map(|e| std::fs::canonicalize(e.path()).ok()));
    hierarchies.sort();
    hierarchies.dedup();
    let mut made = Vec::new();
    for h in hierarchies {
        let dir = h.join(cg.trim_start_matches('/'));
        if dir.is_dir() && dir.join("cgroup.procs").exists() && std::fs::create_dir(dir.join(sub)).is_ok() {
            // A new v1 cpuset takes no process until it has cpus and mems (neither runtime fills them in).
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(dir.join(f)) {
                    std::fs::write(dir.join(sub).join(f), v.trim()).unwrap();
                }
            }
            made.push(dir.join(sub));
        }
    }
    made
}

#[test]
fn exec_runs_in_a_sub_cgroup_when_asked() {
    let Some((runc, ours)) = peers() else { return };
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
    let mut seen = Vec::new();
    for rt in both(&ours, &runc) {
        let mut b = Bundle::new(&["sleep", "300"]);
        let id = ours.id("subcg");
        let cg = format!("/berth-compat-{id}");
        b.spec["linux"]["cgroupsPath"] = cg.clone().into();
        b.save();
        assert_eq!(rt.detached(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]), 0, "{}", rt.name());
        let made = make_sub_cgroups(&cg, "sub");
        assert!(!made.is_empty(), "{}: no cgroup of the container found", rt.name());
        let mut outs = Vec::new();
        let mut forms = vec!["sub"];
        if v1 {
            forms.push("memory,pids:sub");
        }
        for form in forms {
            let r = rt.run(&["exec", "--cgroup", form, &id, "cat", "/proc/self/cgroup"]);
            assert_eq!(r.code, 0, "{} --cgroup {form}: {r:?}", rt.name());
            outs.push(r.stdout.replace(&id, "ID"));
        }
        let missing = rt.run(&["exec", "--cgroup", "nosuch", &id, "true"]);
        assert_ne!(missing.code, 0, "{}: a sub-cgroup that does not exist", rt.name());
        rt.run(&["delete", "--force", &id]).success();
        if let Rt::Ours(_) = rt {
            assert!(made.iter().all(|d| !d.exists()), "delete took the sub-cgroups with the container's");
        }
        // What runc leaves, the test takes.
        for d in &made {
            let _ = std::fs::remove_dir(d);
            let _ = std::fs::remove_dir(d.parent().unwrap());
        }
        seen.push(outs);
    }
    assert!(seen[0][0].lines().any(|l| l.ends_with("/sub")), "{}", seen[0][0]);
    assert_eq!(seen[0], seen[1], "berth-runc and runc agree");
}

/// A seccomp agent for the tests: takes each listener sent to its socket and answers every
/// notified call with ENOMEDIUM, as runc's test agent answers chmod. Keeps the JSON it got.
struct Agent {
    dir: tempfile::TempDir,
    got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

/// `struct seccomp_notif` and `struct seccomp_notif_resp` (linux/seccomp.h).
#[repr(C)]
#[derive(Default)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const NOTIF_RECV: libc::c_ulong = 0xc050_2100; // _IOWR('!', 0, struct seccomp_notif)
const NOTIF_SEND: libc::c_ulong = 0xc018_2101; // _IOWR('!', 1, struct seccomp_notif_resp)

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::Builder::new().prefix("berth-agent-").tempdir().unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("agent.sock")).unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (msg, fd) = recv_listener(&conn);
                seen.lock().unwrap().push(msg);
                std::thread::spawn(move || answer_all(fd));
            }
        });
        Agent { dir, got }
    }

    fn path(&self) -> String {
        self.dir.path().join("agent.sock").to_string_lossy().into_owned()
    }
}

fn recv_listener(conn: &std::os::unix::net::UnixStream) -> (serde_json::Value, std::os::fd::OwnedFd) {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let r = nix::sys::socket::recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut cmsg), nix::sys::socket::MsgFlags::empty()).unwrap();
    let mut fd = None;
    for c in r.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: SCM_RIGHTS just installed these descriptors in this process.
            fd = fds.first().map(|f| unsafe { std::os::fd::OwnedFd::from_raw_fd(*f) });
        }
    }
    let n = r.bytes;
    (serde_json::from_slice(&buf[..n]).unwrap(), fd.expect("a listener came with the message"))
}

fn answer_all(fd: std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    loop {
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut p, 1, 30_000) } <= 0 || p.revents & libc::POLLIN == 0 {
            return; // every process of the filter is gone (POLLHUP), or nothing came
        }
        let mut n = Notif::default();
        // SAFETY: the kernel fills a struct seccomp_notif of exactly this layout.
        if unsafe { libc::ioctl(fd.as_raw_fd(), NOTIF_RECV, &mut n as *mut Notif) } != 0 {
            continue;
        }
        let mut resp = NotifResp { id: n.id, val: 0, error: -libc::ENOMEDIUM, flags: 0 };
        // SAFETY: a struct seccomp_notif_resp of exactly this layout, read by the kernel.
        unsafe { libc::ioctl(fd.as_raw_fd(), NOTIF_SEND, &mut resp as *mut NotifResp) };
    }
}

fn notify_mkdir(b: &mut Bundle, listener: &str) {
    b.spec["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": listener,
        "listenerMetadata": "berth-test",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    b.save();
}

#[test]
fn seccomp_notify_hands_the_listener_to_the_agent() {
    let Some((runc, ours)) = peers() else { return };
    let mut outs = Vec::new();
    for rt in both(&ours, &runc) {
        let agent = Agent::start();
        let probe = "mkdir /tmp/x 2>&1; echo rc=$?";
        let mut b = Bundle::new(&["sh", "-c", probe]);
        notify_mkdir(&mut b, &agent.path());
        let id = ours.id("notify");
        let run = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
        assert_eq!(run.code, 0, "{}: {run:?}", rt.name());
        // An exec's filter has its own listener, sent the same way.
        b.spec["process"]["args"] = serde_json::json!(["sleep", "300"]);
        b.save();
        let id = ours.id("notify-exec");
        assert_eq!(rt.detached(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]), 0, "{}", rt.name());
        let exec = rt.run(&["exec", &id, "sh", "-c", probe]);
        rt.run(&["delete", "--force", &id]).success();
        let got = agent.got.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "{}: one listener per process: {got:#?}", rt.name());
        for m in &got {
            assert_eq!((m["fds"].clone(), m["metadata"].clone()), (serde_json::json!(["seccompFd"]), "berth-test".into()), "{}", rt.name());
            assert!(m["pid"].as_i64().is_some_and(|p| p > 0) && m["state"]["bundle"].is_string(), "{}: {m}", rt.name());
        }
        outs.push((run.stdout, exec.stdout));
    }
    assert!(outs[0].0.contains("No medium found") && outs[0].0.ends_with("rc=1\n"), "{:?}", outs[0]);
    assert_eq!(outs[0], outs[1], "berth-runc and runc agree");
}

#[test]
fn seccomp_notify_without_an_agent_or_on_write_is_refused() {
    let Some((runc, ours)) = peers() else { return };
    for rt in both(&ours, &runc) {
        let dir = tempfile::tempdir().unwrap();
        let nobody = dir.path().join("nobody.sock").to_string_lossy().into_owned();
        let mut b = Bundle::new(&["true"]);
        notify_mkdir(&mut b, &nobody);
        let id = ours.id("noagent");
        let r = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
        assert_ne!(r.code, 0, "{}", rt.name());
        assert!(r.stderr.contains("failed to connect with seccomp agent"), "{}: {}", rt.name(), r.stderr);
        let _ = rt.run(&["delete", "--force", &id]);

        b.spec["linux"]["seccomp"]["syscalls"] = serde_json::json!([{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]);
        b.save();
        let id = ours.id("notify-write");
        let r = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
        assert_ne!(r.code, 0, "{}", rt.name());
        assert!(r.stderr.contains("SCMP_ACT_NOTIFY cannot be used for the write syscall"), "{}: {}", rt.name(), r.stderr);
        let _ = rt.run(&["delete", "--force", &id]);
    }
}
