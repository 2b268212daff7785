//! Docker's default container spec (DESIGN.md, "Docker's defaults") and its seccomp profile,
//! filtered by capabilities and architecture the way Docker filters it.

use oci_spec::runtime::{LinuxSeccomp, Spec};
use serde_json::{Value, json};

/// Docker's default profile, kept as data (see data/README.md).
pub const DOCKER_SECCOMP_PROFILE: &str = include_str!("../data/docker-default-seccomp.json");

/// Docker's 14 default capabilities.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

pub const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// 64 MiB, Docker's default /dev/shm size.
pub const DEFAULT_SHM_SIZE: u64 = 64 * 1024 * 1024;

/// The spec Docker gives `docker run IMAGE ARGS...`, with the rootfs at `rootfs` in the bundle.
pub fn docker_default(args: &[String], terminal: bool) -> Spec {
    let caps: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();
    let mut masked: Vec<String> = MASKED_PATHS.iter().map(|s| s.to_string()).collect();
    // Each CPU's thermal_throttle directory, where the host has them (Docker masks these too).
    if let Ok(entries) = std::fs::read_dir("/sys/devices/system/cpu") {
        let mut cpus: Vec<String> =
            entries.flatten().map(|e| e.path().join("thermal_throttle")).filter(|p| p.exists()).map(|p| p.display().to_string()).collect();
        cpus.sort();
        masked.extend(cpus);
    }
    let mut env = vec![DEFAULT_PATH.to_string()];
    if terminal {
        env.push("TERM=xterm".into());
    }
    let mut namespaces =
        vec![json!({"type": "pid"}), json!({"type": "network"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    if crate::cgroups::detect_mode() == Some(crate::cgroups::Mode::Unified) {
        namespaces.push(json!({"type": "cgroup"}));
    }
    let allow =
        |t: &str, major: i64, minor: Option<i64>| json!({"allow": true, "type": t, "major": major, "minor": minor, "access": "rwm"});
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": false
        },
        "root": {"path": "rootfs", "readonly": false},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={DEFAULT_SHM_SIZE}")]}
        ],
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": masked,
            "readonlyPaths": READONLY_PATHS,
            "resources": {
                "devices": [
                    {"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "access": "m"},
                    {"allow": true, "type": "b", "access": "m"},
                    allow("c", 1, Some(3)), allow("c", 1, Some(5)), allow("c", 1, Some(7)),
                    allow("c", 1, Some(8)), allow("c", 1, Some(9)), allow("c", 5, Some(0)),
                    allow("c", 5, Some(1)), allow("c", 5, Some(2)), allow("c", 136, None)
                ]
            },
            "seccomp": docker_seccomp(&caps)
        }
    });
    // The value is built from constants above; failing to parse it is a bug in this function.
    serde_json::from_value(spec).expect("docker_default builds a valid spec")
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
}

fn native_scmp_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "x86" => "SCMP_ARCH_X86",
        "aarch64" => "SCMP_ARCH_AARCH64",
        "arm" => "SCMP_ARCH_ARM",
        "powerpc64" => "SCMP_ARCH_PPC64LE",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "s390x" => "SCMP_ARCH_S390X",
        _ => "",
    }
}

fn kernel_at_least(min: &str) -> bool {
    let parse = |s: &str| -> (u32, u32) {
        let mut it = s.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok());
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    };
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    parse(&release) >= parse(min)
}

/// Docker's default profile for a container with capabilities `caps`, on this architecture.
pub fn docker_seccomp(caps: &[&str]) -> LinuxSeccomp {
    let profile: Value = serde_json::from_str(DOCKER_SECCOMP_PROFILE).unwrap_or_default();
    let native = native_scmp_arch();
    let mut arches = vec![json!(native)];
    for m in profile["archMap"].as_array().into_iter().flatten() {
        if m["architecture"] == native {
            arches.extend(m["subArchitectures"].as_array().cloned().unwrap_or_default());
        }
    }
    let has = |c: &Value| c.as_str().is_some_and(|c| caps.contains(&c));
    let arch_matches = |a: &Value| a.as_str() == Some(go_arch());
    let mut syscalls = Vec::new();
    for s in profile["syscalls"].as_array().into_iter().flatten() {
        let inc = &s["includes"];
        let exc = &s["excludes"];
        let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
        if !list(&inc["caps"]).iter().all(has) {
            continue;
        }
        if !list(&inc["arches"]).is_empty() && !list(&inc["arches"]).iter().any(arch_matches) {
            continue;
        }
        if inc["minKernel"].as_str().is_some_and(|k| !kernel_at_least(k)) {
            continue;
        }
        if list(&exc["caps"]).iter().any(has) || list(&exc["arches"]).iter().any(arch_matches) {
            continue;
        }
        let mut rule = json!({"names": s["names"], "action": s["action"]});
        if let Some(e) = s.get("errnoRet") {
            rule["errnoRet"] = e.clone();
        }
        if let Some(args) = s.get("args").filter(|a| !a.is_null()) {
            rule["args"] = args.clone();
        }
        syscalls.push(rule);
    }
    let out = json!({
        "defaultAction": profile["defaultAction"],
        "defaultErrnoRet": profile["defaultErrnoRet"],
        "architectures": arches,
        "syscalls": syscalls,
    });
    serde_json::from_value(out).expect("Docker's profile converts to an OCI seccomp section")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(s: &LinuxSeccomp, name: &str) -> bool {
        s.syscalls().as_ref().unwrap().iter().any(|r| {
            r.names().iter().any(|n| n == name)
                && r.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
                && r.args().as_ref().is_none_or(|a| a.is_empty())
        })
    }

    #[test]
    fn default_spec_has_dockers_capabilities_and_paths() {
        let spec = docker_default(&["sh".into()], true);
        let p = spec.process().as_ref().unwrap();
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        assert_eq!(caps.effective(), caps.bounding());
        assert!(caps.inheritable().as_ref().is_none_or(|c| c.is_empty()));
        assert!(p.env().as_ref().unwrap().contains(&"TERM=xterm".to_string()));
        let l = spec.linux().as_ref().unwrap();
        assert!(l.masked_paths().as_ref().unwrap().contains(&"/proc/kcore".to_string()));
        assert_eq!(l.readonly_paths().as_ref().unwrap().len(), 5);
    }

    #[test]
    fn seccomp_filters_by_capabilities() {
        let without = docker_seccomp(&DEFAULT_CAPABILITIES);
        assert!(!allowed(&without, "mount"), "mount needs CAP_SYS_ADMIN");
        assert!(!allowed(&without, "clone"), "unconditional clone needs CAP_SYS_ADMIN");
        let clone3 = without.syscalls().as_ref().unwrap().iter().find(|r| r.names() == &["clone3".to_string()]).unwrap();
        assert_eq!(clone3.errno_ret(), Some(38), "clone3 answers ENOSYS so libc falls back to clone");
        let mut more = DEFAULT_CAPABILITIES.to_vec();
        more.push("CAP_SYS_ADMIN");
        let with = docker_seccomp(&more);
        assert!(allowed(&with, "mount"));
        assert!(allowed(&with, "clone"));
    }

    #[test]
    fn seccomp_filters_by_architecture() {
        let s = docker_seccomp(&DEFAULT_CAPABILITIES);
        if std::env::consts::ARCH == "x86_64" {
            assert!(allowed(&s, "arch_prctl"));
            assert!(!allowed(&s, "s390_runtime_instr"));
            assert_eq!(s.architectures().as_ref().unwrap().len(), 3);
        }
    }
}
