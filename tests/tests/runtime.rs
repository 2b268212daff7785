//! berth-runc against busybox containers: each promise of the runtime checked from inside.

use std::fs;

use berth_tests::{Bundle, Runtime, assert_no_cgroup, have, is_root, live_children};
use serde_json::json;

/// Docker's 14 default capabilities as /proc/self/status prints them.
const DOCKER_CAPS: &str = "00000000a80425fb";

fn status_field(status: &str, field: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).map(|v| v.trim().to_string()).unwrap_or_default()
}

#[test]
fn container_is_pid_1_with_its_own_hostname_and_only_loopback() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "echo pid=$$; hostname; ls /sys/class/net; cat /sys/class/net/lo/operstate"]);
    b.spec["hostname"] = json!("box-one");
    b.save();
    let r = rt.run(&rt.id("ns"), &b).success();
    assert_eq!(r.stdout, "pid=1\nbox-one\nlo\nunknown\n");
}

#[test]
fn dockers_capabilities_seccomp_and_mounts_are_in_place() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["cat", "/proc/self/status", "/proc/self/mountinfo"]);
    let r = rt.run(&rt.id("caps"), &b).success();
    for f in ["CapEff", "CapBnd", "CapPrm"] {
        assert_eq!(status_field(&r.stdout, f), DOCKER_CAPS, "{f}");
    }
    assert_eq!(status_field(&r.stdout, "CapInh"), "0000000000000000");
    assert_eq!(status_field(&r.stdout, "Seccomp"), "2");
    assert_eq!(status_field(&r.stdout, "NoNewPrivs"), "0");
    let mount = |dest: &str| {
        r.stdout.lines().find(|l| l.split_whitespace().nth(4) == Some(dest)).unwrap_or_else(|| panic!("no mount on {dest}")).to_string()
    };
    assert!(mount("/proc").contains("nosuid,nodev,noexec"), "{}", mount("/proc"));
    assert!(mount("/dev").contains(" - tmpfs ") && mount("/dev").contains("mode=755"), "{}", mount("/dev"));
    assert!(mount("/dev/pts").contains("ptmxmode=666"), "{}", mount("/dev/pts"));
    // Each mount line: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE SUPEROPTIONS".
    let fstype = |dest: &str| mount(dest).split(" - ").nth(1).and_then(|t| t.split_whitespace().next()).unwrap_or("").to_string();
    let read_only = |dest: &str| mount(dest).split_whitespace().nth(5).is_some_and(|o| o.split(',').any(|o| o == "ro"));
    assert_eq!(fstype("/sys"), "sysfs");
    assert!(read_only("/sys"), "{}", mount("/sys"));
    assert!(read_only("/sys/fs/cgroup"), "{}", mount("/sys/fs/cgroup"));
    assert_eq!(fstype("/dev/shm"), "tmpfs");
    assert!(mount("/dev/shm").contains("size=65536k"), "{}", mount("/dev/shm"));
    assert_eq!(fstype("/dev/mqueue"), "mqueue");
    assert!(!read_only("/proc"), "{}", mount("/proc"));
}

#[test]
fn masked_paths_are_empty_and_readonly_paths_refuse_writes() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    // Which of the masked files exist depends on the kernel; every one that does must read empty.
    let script = "for f in /proc/kcore /proc/keys /proc/timer_list /proc/interrupts /proc/sched_debug; do [ -e $f ] && wc -c < $f; done | sort -u; \
                  ls /proc/acpi | wc -l; \
                  echo x > /proc/sys/kernel/domainname 2>/dev/null && echo wrote-sys || echo sys-ro; \
                  echo b > /proc/sysrq-trigger 2>/dev/null && echo wrote-sysrq || echo sysrq-ro; \
                  touch /sys/x 2>/dev/null && echo wrote-sysfs || echo sysfs-ro";
    let r = rt.run(&rt.id("mask"), &Bundle::new(&["sh", "-c", script])).success();
    assert_eq!(r.stdout, "0\n0\nsys-ro\nsysrq-ro\nsysfs-ro\n");
}

#[test]
fn dev_holds_only_the_default_devices() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let r = rt
        .run(&rt.id("dev"), &Bundle::new(&["sh", "-c", "ls /dev | tr '\\n' ' '; echo; head -c 4 /dev/zero | wc -c; ls -l /dev/null"]))
        .success();
    let mut lines = r.stdout.lines();
    assert_eq!(lines.next().unwrap().trim(), "fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero");
    assert_eq!(lines.next().unwrap().trim(), "4");
    assert!(lines.next().unwrap().starts_with("crw-rw-rw-"));
}

#[test]
fn memory_limit_oom_kills_the_container() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"]);
    b.spec["linux"]["resources"]["memory"] = json!({"limit": 33554432});
    b.save();
    let r = rt.run(&rt.id("oom"), &b);
    assert_eq!(r.code, 137, "expected SIGKILL by the OOM killer: {r:#?}");
    assert!(!r.stdout.contains("survived"));
}

#[test]
fn pids_limit_stops_forks() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & done 2>&1; echo done"]);
    b.spec["linux"]["resources"]["pids"] = json!({"limit": 5});
    b.save();
    let r = rt.run(&rt.id("pids"), &b);
    assert!(r.stdout.contains("can't fork") || r.stderr.contains("can't fork"), "{r:#?}");
}

#[test]
fn rlimits_are_applied_and_raising_a_hard_limit_needs_cap_sys_resource() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "ulimit -n; ulimit -Hn"]);
    b.spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]);
    b.save();
    assert_eq!(rt.run(&rt.id("rl"), &b).success().stdout, "100\n200\n");

    let can_raise = caps_has_sys_resource();
    b.spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 1u64 << 30}]);
    b.save();
    let id = rt.id("rl-high");
    let r = rt.run(&id, &b);
    if can_raise {
        r.success();
    } else {
        let r = r.failure();
        assert!(r.stderr.contains("RlimitNofile") && r.stderr.contains("CAP_SYS_RESOURCE"), "{}", r.stderr);
        assert!(!rt.root.path().join(&id).exists());
        assert_no_cgroup(&id);
    }
}

fn caps_has_sys_resource() -> bool {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    let eff = u64::from_str_radix(&status_field(&s, "CapEff"), 16).unwrap();
    eff & (1 << 24) != 0
}

#[test]
fn user_groups_umask_and_no_new_privs() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "id -u; id -g; id -G; umask; grep NoNewPrivs /proc/self/status; touch /tmp/f && ls -ln /tmp/f"]);
    b.spec["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 29], "umask": 63});
    b.spec["process"]["noNewPrivileges"] = json!(true);
    b.save();
    let r = rt.run(&rt.id("user"), &b).success();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[..4], ["1000", "1000", "1000 10 29", "0077"]);
    assert_eq!(lines[4].split_whitespace().last(), Some("1"));
    assert!(lines[5].starts_with("-rw-------") && lines[5].contains(" 1000 "), "{}", lines[5]);
}

#[test]
fn terminal_is_a_real_pty() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "tty; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size"]);
    b.spec["process"]["terminal"] = json!(true);
    b.spec["process"]["consoleSize"] = json!({"height": 33, "width": 101});
    b.save();
    let r = rt.run(&rt.id("tty"), &b).success();
    let out = r.stdout.replace('\r', "");
    assert!(out.contains("/dev/pts/0\n"), "{out:?}");
    assert!(out.contains("is-a-tty\n"), "{out:?}");
    assert!(out.contains("33 101"), "{out:?}");
}

#[test]
fn create_start_exec_kill_delete_lifecycle() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let id = rt.id("life");
    let b = Bundle::new(&["sleep", "300"]);
    let pid_file = b.path().join("pid");
    rt.runc(&["create", "--bundle", b.path().to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(), &id]).success();
    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(fs::read_to_string(&pid_file).unwrap(), st["pid"].to_string());
    // Created means waiting: the program has not run yet.
    assert!(fs::read_to_string(format!("/proc/{}/cmdline", st["pid"])).unwrap().contains("berth-runc"));
    rt.runc(&["start", &id]).success();
    assert_eq!(rt.status(&id), "running");
    rt.runc(&["start", &id]).failure();

    let r = rt.runc(&["exec", &id, "sh", "-c", "echo $$ is not 1; cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname"]).success();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_ne!(lines[0], "1 is not 1");
    assert_eq!(lines[1].trim(), "sleep 300");
    assert_eq!(lines[2], "berth");
    assert_eq!(rt.runc(&["exec", &id, "sh", "-c", "exit 3"]).code, 3);
    // runc's form: a failed exec exits 255, unlike any exit code of the process.
    let e = rt.runc(&["exec", &id, "no-such-cmd"]);
    assert_eq!(e.code, 255);
    assert!(e.stderr.contains("exec failed: "), "{}", e.stderr);
    assert!(e.stderr.contains("executable file not found"), "{}", e.stderr);
    let caps = rt.runc(&["exec", &id, "grep", "CapEff", "/proc/self/status"]).success();
    assert!(caps.stdout.contains(DOCKER_CAPS));
    // The init and an exec are in the container's cgroup in every hierarchy the runtime joins
    // (v1 through `tasks` by the process itself, the v2 part by CLONE_INTO_CGROUP).
    let init_cgroups = fs::read_to_string(format!("/proc/{}/cgroup", st["pid"])).unwrap();
    let joined = |text: &str| -> Vec<String> {
        text.lines().filter(|l| ["memory", "pids", "freezer", ""].contains(&l.split(':').nth(1).unwrap_or("-"))).map(String::from).collect()
    };
    assert!(joined(&init_cgroups).len() >= 3 || std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists(), "{init_cgroups}");
    for line in joined(&init_cgroups) {
        assert!(line.ends_with(&format!("/berth/{id}")), "init not in its cgroup: {line}");
    }
    let exec_cgroups = rt.runc(&["exec", &id, "cat", "/proc/self/cgroup"]).success();
    assert_eq!(joined(&exec_cgroups.stdout), joined(&init_cgroups));

    let ps = rt.runc(&["ps", "--format", "json", &id]).success();
    let pids: Vec<i32> = serde_json::from_str(&ps.stdout).unwrap();
    assert_eq!(pids, vec![st["pid"].as_i64().unwrap() as i32]);

    rt.runc(&["delete", &id]).failure();
    rt.runc(&["kill", &id, "KILL"]).success();
    rt.wait_status(&id, "stopped");
    rt.runc(&["delete", &id]).success();
    rt.runc(&["state", &id]).failure();
}

#[test]
fn exec_with_a_terminal_and_as_another_user() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let id = rt.id("exec-tty");
    let b = Bundle::new(&["sleep", "300"]);
    rt.runc(&["run", "--detach", "--bundle", b.path().to_str().unwrap(), &id]).success();
    let r = rt.runc(&["exec", "--tty", &id, "tty"]).success();
    assert!(r.stdout.contains("/dev/pts/"), "{r:#?}");
    let r = rt.runc(&["exec", "--user", "1000:1000", "--cwd", "/tmp", "-e", "FOO=bar", &id, "sh", "-c", "id -u; pwd; echo $FOO"]).success();
    assert_eq!(r.stdout, "1000\n/tmp\nbar\n");
    let r = rt.runc(&["exec", "--cwd", "/no/such/dir", &id, "true"]).failure();
    assert!(r.stderr.contains("/no/such/dir"), "{}", r.stderr);
    rt.runc(&["delete", "--force", &id]).success();
    rt.runc(&["exec", &id, "true"]).failure();
}

#[test]
fn pause_and_resume_freeze_the_container() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let id = rt.id("pause");
    let b = Bundle::new(&["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/tick; usleep 10000; done"]);
    rt.runc(&["run", "--detach", "--bundle", b.path().to_str().unwrap(), &id]).success();
    let tick = b.path().join("rootfs/tmp/tick");
    std::thread::sleep(std::time::Duration::from_millis(100));
    rt.runc(&["pause", &id]).success();
    assert_eq!(rt.status(&id), "paused");
    let frozen = fs::read_to_string(&tick).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert_eq!(fs::read_to_string(&tick).unwrap(), frozen, "a paused container kept running");
    rt.runc(&["exec", &id, "true"]).failure();
    rt.runc(&["resume", &id]).success();
    assert_eq!(rt.status(&id), "running");
    // It ticks again; a read can land between the shell's truncate and its write, so look a few times.
    let ticked = (0..40).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        fs::read_to_string(&tick).is_ok_and(|t| !t.is_empty() && t != frozen)
    });
    assert!(ticked, "a resumed container stayed frozen at {frozen:?}");
    let ev = rt.runc(&["events", "--stats", &id]).success();
    let v: serde_json::Value = serde_json::from_str(ev.stdout.trim()).unwrap();
    assert_eq!(v["type"], "stats");
    assert!(v["data"]["pids"]["current"].as_u64().unwrap() >= 1);
    assert!(v["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    rt.runc(&["pause", &id]).success();
    rt.runc(&["delete", "--force", &id]).success();
}

#[test]
fn hooks_run_at_each_stage_with_the_state_on_stdin() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let id = rt.id("hooks");
    let mut b = Bundle::new(&["true"]);
    let log = b.path().join("hooks.log");
    let hook =
        |stage: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read -r s; echo \"{stage} $s\" >> {}", log.display())]});
    b.spec["hooks"] = json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "read -r s; echo \"startContainer $s\" > /tmp/hook-ran"]}],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")]
    });
    b.save();
    rt.runc(&["run", "--keep", "--bundle", b.path().to_str().unwrap(), &id]).success();
    rt.runc(&["delete", &id]).success();
    let text = fs::read_to_string(&log).unwrap();
    let stages: Vec<&str> = text.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(stages, ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]);
    let created: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap().split_once(' ').unwrap().1).unwrap();
    assert_eq!(created["id"], id.as_str());
    assert_eq!(created["status"], "creating");
    assert!(created["pid"].as_i64().unwrap() > 0);
    let in_container = fs::read_to_string(b.path().join("rootfs/tmp/hook-ran")).unwrap();
    let start: serde_json::Value = serde_json::from_str(in_container.trim().split_once(' ').unwrap().1).unwrap();
    assert_eq!((start["id"].as_str(), start["status"].as_str()), (Some(id.as_str()), Some("created")));
    let container_hook: serde_json::Value = serde_json::from_str(text.lines().nth(2).unwrap().split_once(' ').unwrap().1).unwrap();
    assert_eq!(container_hook["pid"], created["pid"]);
}

#[test]
fn failing_hook_fails_create_and_leaves_nothing() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let id = rt.id("badhook");
    let mut b = Bundle::new(&["true"]);
    b.spec["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo no-way >&2; exit 1"]}]});
    b.save();
    let r = rt.run(&id, &b).failure();
    assert!(r.stderr.contains("no-way"), "{}", r.stderr);
    assert!(!rt.root.path().join(&id).exists());
    assert_no_cgroup(&id);
    assert!(live_children().is_empty(), "children left: {:?}", live_children());
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_host_uid() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "id -u; cat /proc/self/uid_map; ls /dev/null && echo dev-ok"]);
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    b.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.save();
    let r = rt.run(&rt.id("userns"), &b).success();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["0", "100000", "65536"]);
    assert!(r.stdout.contains("dev-ok"));
}

#[test]
fn user_namespaced_init_and_exec_are_in_the_cgroup() {
    if !is_root() {
        return;
    }
    // The init starts in its new user namespace and cannot join v1 itself (its parent moves it);
    // an exec joins before it enters that namespace.
    let rt = Runtime::new();
    let id = rt.id("userns-cg");
    let mut b = Bundle::new(&["sleep", "300"]);
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    b.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.save();
    rt.runc(&["run", "--detach", "--bundle", b.path().to_str().unwrap(), &id]).success();
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.runc(&["exec", "--detach", "--pid-file", b.path().join("e.pid").to_str().unwrap(), &id, "sleep", "300"]).success();
    let epid = fs::read_to_string(b.path().join("e.pid")).unwrap();
    for p in [pid.to_string(), epid.trim().to_string()] {
        let cg = fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
        let memory = cg.lines().find(|l| l.split(':').nth(1) == Some("memory"));
        if let Some(line) = memory {
            assert!(line.ends_with(&format!("/berth/{id}")), "{p}: {line}");
        }
        let has_v2 = ["/sys/fs/cgroup/unified/cgroup.controllers", "/sys/fs/cgroup/cgroup.controllers"]
            .iter()
            .any(|f| std::path::Path::new(f).exists());
        if has_v2 {
            let unified = cg.lines().find(|l| l.starts_with("0::")).unwrap_or_default();
            assert!(unified.ends_with(&format!("/berth/{id}")), "{p}: {unified}");
        }
    }
    assert_eq!(rt.runc(&["exec", &id, "id", "-u"]).success().stdout, "0\n");
    rt.runc(&["delete", "--force", &id]).success();
}

#[test]
fn joins_another_containers_network_namespace_by_path() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let a = rt.id("net-a");
    let ba = Bundle::new(&["sleep", "300"]);
    rt.runc(&["run", "--detach", "--bundle", ba.path().to_str().unwrap(), &a]).success();
    let pid = rt.state(&a)["pid"].as_i64().unwrap();
    let theirs = fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let mut bb = Bundle::new(&["readlink", "/proc/self/ns/net"]);
    for ns in bb.spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = json!(format!("/proc/{pid}/ns/net"));
        }
    }
    bb.save();
    let r = rt.run(&rt.id("net-b"), &bb).success();
    assert_eq!(r.stdout.trim(), theirs.to_str().unwrap());
    rt.runc(&["delete", "--force", &a]).success();
}

#[test]
fn time_namespace_offsets_boottime() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["cut", "-d.", "-f1", "/proc/uptime"]);
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "time"}));
    b.spec["linux"]["timeOffsets"] = json!({"boottime": {"secs": 864000000, "nanosecs": 0}});
    b.save();
    let r = rt.run(&rt.id("time"), &b).success();
    assert!(r.stdout.trim().parse::<u64>().unwrap() >= 864000000, "{}", r.stdout);
}

#[test]
fn read_only_rootfs_and_bind_mounts() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("in.txt"), "from host").unwrap();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /data/in.txt; echo; touch /x 2>/dev/null || echo root-ro; touch /data/y 2>/dev/null || echo data-ro; touch /rw/z && echo rw-ok",
    ]);
    b.spec["root"]["readonly"] = json!(true);
    let mounts = b.spec["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/data", "type": "bind", "source": host.path(), "options": ["rbind", "ro"]}));
    mounts.push(json!({"destination": "/rw", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}));
    b.save();
    let r = rt.run(&rt.id("ro"), &b).success();
    assert_eq!(r.stdout, "from host\nroot-ro\ndata-ro\nrw-ok\n");
    assert!(!host.path().join("y").exists());
}

#[test]
fn sysctls_are_written_in_the_containers_namespaces() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start", "/proc/sys/kernel/domainname"]);
    b.spec["linux"]["sysctl"] = json!({"net.ipv4.ip_unprivileged_port_start": "80"});
    b.spec["domainname"] = json!("example.test");
    b.save();
    let r = rt.run(&rt.id("sysctl"), &b).success();
    assert_eq!(r.stdout, "80\nexample.test\n");
    assert_ne!(fs::read_to_string("/proc/sys/kernel/domainname").unwrap().trim(), "example.test");
}

// ---- bad input: a clear error naming what is wrong, and nothing left behind ----

#[track_caller]
fn refused(rt: &Runtime, id: &str, b: &Bundle, needle: &str) -> berth_tests::Run {
    let r = rt.run(id, b).failure();
    // The message as runc logs it: in a logrus line, its quotes escaped.
    assert!(r.stderr.contains("level=error") && r.stderr.replace("\\\"", "\"").contains(needle), "expected {needle:?} in: {}", r.stderr);
    assert!(!rt.root.path().join(id).exists(), "state dir of {id} left behind");
    assert_no_cgroup(id);
    assert!(live_children().is_empty(), "processes left: {:?}", live_children());
    r
}

#[test]
fn missing_rootfs_is_refused() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.spec["root"]["path"] = json!("no-such-rootfs");
    b.save();
    refused(&rt, &rt.id("norootfs"), &b, "no-such-rootfs does not exist");
}

#[test]
fn invalid_config_is_refused() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    fs::write(b.path().join("config.json"), "{\"ociVersion\": \"1.0.2\", \"process\": {").unwrap();
    refused(&rt, &rt.id("badjson"), &b, "config.json");
    let mut b = Bundle::new(&["true"]);
    b.spec["process"]["capabilities"]["bounding"] = json!(["CAP_NOT_A_CAP"]);
    b.save();
    refused(&rt, &rt.id("badcap"), &b, "CAP_NOT_A_CAP");
    let mut b = Bundle::new(&["true"]);
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    b.save();
    refused(&rt, &rt.id("nomap"), &b, "uidMappings");
}

#[test]
fn unknown_syscall_is_refused() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.spec["linux"]["seccomp"]["syscalls"].as_array_mut().unwrap().push(json!({"names": ["frobnicate"], "action": "SCMP_ACT_ALLOW"}));
    b.save();
    refused(&rt, &rt.id("badsys"), &b, "unknown syscall \"frobnicate\"");
}

#[test]
fn seccomp_from_the_spec_is_enforced() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "mkdir /tmp/d && echo made || echo denied"]);
    b.spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]});
    b.save();
    let r = rt.run(&rt.id("sec"), &b).success();
    assert_eq!(r.stdout, "denied\n");
}

#[test]
fn unmapped_uid_is_refused() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    b.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 10}]);
    b.spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 10}]);
    b.spec["process"]["user"] = json!({"uid": 5000, "gid": 0});
    b.save();
    refused(&rt, &rt.id("baduid"), &b, "setting uid 5000");
}

#[test]
fn missing_or_unrunnable_commands_fail_the_run_as_runc_fails_it() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["no-such-command", "arg"]);
    let r = refused(&rt, &rt.id("nocmd"), &b, "exec: \"no-such-command\": executable file not found in $PATH");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("runc run failed: "), "{}", r.stderr);
    let b = Bundle::new(&["/etc/passwd"]);
    let r = refused(&rt, &rt.id("noexec"), &b, "permission denied");
    assert_eq!(r.code, 1);
}

#[test]
fn missing_mount_source_is_refused() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/data", "type": "bind", "source": "/no/such/source", "options": ["rbind"]}));
    b.save();
    refused(&rt, &rt.id("nosrc"), &b, "mount source /no/such/source for /data does not exist");
}

#[test]
fn cgroup_value_the_kernel_refuses_is_named() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.spec["linux"]["resources"]["cpu"] = json!({"cpus": "999"});
    b.save();
    refused(&rt, &rt.id("badcg"), &b, "cpuset.cpus");
}

#[test]
fn missing_working_directory_is_refused() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.spec["process"]["cwd"] = json!("/does/not/exist");
    b.save();
    refused(&rt, &rt.id("nocwd"), &b, "/does/not/exist");
}

#[test]
fn duplicate_and_invalid_ids_are_refused() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let id = rt.id("dup");
    let b = Bundle::new(&["sleep", "300"]);
    rt.runc(&["create", "--bundle", b.path().to_str().unwrap(), &id]).success();
    let r = rt.runc(&["create", "--bundle", b.path().to_str().unwrap(), &id]).failure();
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert_eq!(rt.status(&id), "created");
    let r = rt.runc(&["create", "--bundle", b.path().to_str().unwrap(), "../escape"]).failure();
    assert!(r.stderr.contains("invalid container id"), "{}", r.stderr);
    rt.runc(&["delete", "--force", &id]).success();
}

// ---- the same bundle under runc gives the same answers ----

#[test]
fn runc_and_berth_runc_agree_on_the_same_bundle() {
    if !is_root() || !have("runc") {
        return;
    }
    let rt = Runtime::new();
    let probe = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|Seccomp|NoNewPrivs):' /proc/self/status; hostname; echo $$; \
                 ls /sys/class/net; id; ls /dev | tr '\\n' ' '; echo; wc -c < /proc/kcore; umask; ulimit -n";
    let mut b = Bundle::new(&["sh", "-c", probe]);
    b.spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}]);
    b.save();
    let ours = rt.run(&rt.id("cmp"), &b).success().stdout;
    let runc_root = tempfile::tempdir().unwrap();
    let id = rt.id("cmp-runc");
    let theirs = berth_tests::run_command(std::process::Command::new("runc").args([
        "--root",
        runc_root.path().to_str().unwrap(),
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]))
    .success()
    .stdout;
    assert_eq!(ours, theirs);
}

#[test]
fn cpu_limits_are_visible_through_the_containers_cgroup_mount() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let script = if v2 {
        "cat /sys/fs/cgroup/cpu.weight /sys/fs/cgroup/cpu.max"
    } else {
        "cat /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us"
    };
    let mut b = Bundle::new(&["sh", "-c", script]);
    b.spec["linux"]["resources"]["cpu"] = json!({"shares": 512, "quota": 50000, "period": 100000});
    b.save();
    let r = rt.run(&rt.id("cpu"), &b).success();
    let expected = if v2 { "20\n50000 100000\n" } else { "512\n50000\n" };
    assert_eq!(r.stdout, expected);
}

#[test]
fn detached_exec_writes_its_pid_file() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let id = rt.id("exec-d");
    let b = Bundle::new(&["sleep", "300"]);
    rt.runc(&["run", "--detach", "--bundle", b.path().to_str().unwrap(), &id]).success();
    let pid_file = b.path().join("exec.pid");
    rt.runc(&["exec", "--detach", "--pid-file", pid_file.to_str().unwrap(), &id, "sleep", "300"]).success();
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    // exec -d returns once the program replaced the runtime; its arguments appear a moment
    // later in the same execve (the kernel sets them up after closing our sync socket).
    let mut cmdline = String::new();
    for _ in 0..100 {
        cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
        if !cmdline.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(cmdline, "sleep\u{0}300\u{0}");
    let ps = rt.runc(&["ps", "--format", "json", &id]).success();
    let pids: Vec<i32> = serde_json::from_str(&ps.stdout).unwrap();
    assert!(pids.contains(&pid), "{pids:?} lacks {pid}");
    rt.runc(&["delete", "--force", &id]).success();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || fs::read_to_string(format!("/proc/{pid}/stat")).unwrap().contains(") Z ")
    );
}

/// CVE-2019-5736: a process in the container must not reach the runtime's binary through
/// /proc/PID/exe of a runtime process in its pid namespace (the waiting init is berth-runc).
#[test]
fn waiting_init_is_not_reachable_through_proc_exe() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let a = rt.id("cve-a");
    let ba = Bundle::new(&["sleep", "300"]);
    rt.runc(&["create", "--bundle", ba.path().to_str().unwrap(), &a]).success();
    let pid = rt.state(&a)["pid"].as_i64().unwrap();
    let mut bb = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/1/exe > /dev/null 2>&1 && echo REACHED || echo denied; ls -l /proc/1/exe 2>&1 | grep -c berth-runc; true",
    ]);
    for ns in bb.spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "pid" {
            ns["path"] = json!(format!("/proc/{pid}/ns/pid"));
        }
    }
    bb.save();
    let r = rt.run(&rt.id("cve-b"), &bb).success();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].contains("berth-runc"), "pid 1 should be the waiting init: {lines:?}");
    assert_eq!(lines[1], "denied");
    assert_eq!(lines[2], "0", "the link target must not be readable either");
    rt.runc(&["delete", "--force", &a]).success();
}

#[test]
fn list_features_process_json_and_json_log() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let id = rt.id("misc");
    let b = Bundle::new(&["sleep", "300"]);
    rt.runc(&["run", "--detach", "--bundle", b.path().to_str().unwrap(), &id]).success();

    let list = rt.runc(&["list"]).success();
    let mut lines = list.stdout.lines();
    assert!(lines.next().unwrap().starts_with("ID "));
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!((row[0], row[2]), (id.as_str(), "running"));
    assert_eq!(rt.runc(&["list", "-q"]).success().stdout.trim(), id);
    let json: serde_json::Value = serde_json::from_str(&rt.runc(&["list", "--format", "json"]).success().stdout).unwrap();
    assert_eq!(json[0]["id"], id.as_str());

    let features: serde_json::Value = serde_json::from_str(&rt.runc(&["features"]).success().stdout).unwrap();
    assert!(features["linux"]["namespaces"].as_array().unwrap().contains(&json!("time")));
    assert_eq!(features["linux"]["seccomp"]["enabled"], true);

    let process = b.path().join("process.json");
    fs::write(
        &process,
        serde_json::to_vec(&json!({"user": {"uid": 1000, "gid": 1000}, "args": ["id", "-u"], "cwd": "/", "env": ["PATH=/bin"]})).unwrap(),
    )
    .unwrap();
    let r = rt.runc(&["exec", "--process", process.to_str().unwrap(), &id]).success();
    assert_eq!(r.stdout, "1000\n");

    let log = b.path().join("runc.log");
    let r = rt.runc(&["--log", log.to_str().unwrap(), "--log-format", "json", "start", &id]).failure();
    assert!(r.stderr.contains("cannot start an already running container"), "{}", r.stderr);
    let line: serde_json::Value = serde_json::from_str(fs::read_to_string(&log).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("cannot start an already running container"));
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    rt.runc(&["delete", "--force", &id]).success();
}

/// How many mounts a mount namespace holds, reachable from its root or not (Linux 6.12's
/// `NS_MNT_GET_INFO`); None where the kernel cannot say.
fn mounts_in_namespace(pid: i32) -> Option<u32> {
    #[repr(C)]
    struct MntNsInfo {
        size: u32,
        nr_mounts: u32,
        mnt_ns_id: u64,
    }
    // _IOR(NSIO = 0xb7, 10, struct mnt_ns_info)
    const NS_MNT_GET_INFO: libc::c_ulong = (2 << 30) | ((std::mem::size_of::<MntNsInfo>() as libc::c_ulong) << 16) | (0xb7 << 8) | 10;
    let ns = fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
    let mut info = MntNsInfo { size: std::mem::size_of::<MntNsInfo>() as u32, nr_mounts: 0, mnt_ns_id: 0 };
    // SAFETY: the ioctl fills a struct of the size it is told, from an open namespace fd.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&ns), NS_MNT_GET_INFO, &mut info) };
    (rc == 0).then_some(info.nr_mounts)
}

#[test]
fn no_pivot_moves_the_root_and_chroots() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["ls", "/"]);
    let r = rt.runc(&["run", "--no-pivot", "--bundle", b.path().to_str().unwrap(), &rt.id("nopivot")]).success();
    assert!(r.stdout.contains("bin\n") && !r.stdout.contains("boot\n"), "{}", r.stdout);
    // What tells the two apart: pivot_root detaches the host's mounts from the container's mount
    // namespace; a move and chroot leaves them there, under the container's root.
    let b = Bundle::new(&["sleep", "60"]);
    let mut counts = Vec::new();
    for flags in [&[][..], &["--no-pivot"][..]] {
        let id = rt.id("ns");
        let mut args = vec!["create", "--bundle", b.path().to_str().unwrap()];
        args.extend_from_slice(flags);
        args.push(&id);
        rt.runc(&args).success();
        let pid = rt.state(&id)["pid"].as_i64().unwrap() as i32;
        let visible = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap().lines().count() as u32;
        counts.push((mounts_in_namespace(pid), visible));
        rt.runc(&["delete", "--force", &id]).success();
    }
    match (counts[0], counts[1]) {
        ((Some(pivot), seen_pivot), (Some(moved), seen_moved)) => {
            assert_eq!(pivot, seen_pivot, "pivot_root: only the container's own mounts are in its namespace");
            assert!(moved > seen_moved, "--no-pivot: the host's mounts stay underneath ({moved} in all, {seen_moved} seen)");
        }
        _ => berth_tests::skip("this kernel cannot count a mount namespace's mounts (NS_MNT_GET_INFO, Linux 6.12)"),
    }
}
