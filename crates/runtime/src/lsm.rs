//! AppArmor and SELinux: whether the host has them, and the labels a container takes from its
//! spec (`process.apparmorProfile`, `process.selinuxLabel`, `linux.mountLabel`). Where the host
//! lacks the module a label names, the spec is refused rather than run unconfined.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};

use crate::error::{Error, Result};

/// AppArmor is enabled (the module says so), as runc asks it.
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.trim() == "Y")
}

/// SELinux is enabled: selinuxfs is mounted where the kernel puts it.
pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|v| !v.is_empty())
}

/// Refuse labels the host cannot apply, naming what it lacks (runc fails there too).
/// The host is asked only when a label is set: nothing on the start path of a plain container.
pub fn check(spec: &Spec) -> Result<()> {
    check_with(spec, apparmor_enabled, selinux_enabled)
}

fn check_with(spec: &Spec, apparmor: impl Fn() -> bool, selinux: impl Fn() -> bool) -> Result<()> {
    let process = spec.process().clone().unwrap_or_default();
    if let Some(p) = set(process.apparmor_profile())
        && !apparmor()
    {
        return Err(Error::Unsupported(format!("apparmorProfile {p:?} is set but AppArmor is not enabled on this host")));
    }
    let linux = spec.linux().clone().unwrap_or_default();
    for (what, label) in [("mountLabel", set(linux.mount_label())), ("selinuxLabel", set(process.selinux_label()))] {
        if let Some(l) = label
            && !selinux()
        {
            return Err(Error::Unsupported(format!("{what} {l:?} is set but SELinux is not enabled on this host")));
        }
    }
    Ok(())
}

/// What the process writes to take on its labels at exec: the AppArmor profile to change to
/// (`exec PROFILE`, in the module's own attribute directory where the kernel has one) and the
/// SELinux context to exec into.
fn exec_attr_writes(process: &Process, apparmor_dir: bool) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    if let Some(p) = set(process.apparmor_profile()) {
        let file = if apparmor_dir { "/proc/self/attr/apparmor/exec" } else { "/proc/self/attr/exec" };
        out.push((PathBuf::from(file), format!("exec {p}")));
    }
    if let Some(l) = set(process.selinux_label()) {
        out.push((PathBuf::from("/proc/self/attr/exec"), l.to_string()));
    }
    out
}

/// Take on the process's labels for its exec. Done while the process is still root with
/// its capabilities: a non-dumpable process loses its own `/proc/self` files when it changes
/// user.
pub fn apply_exec_labels(process: &Process) -> Result<()> {
    for (path, value) in exec_attr_writes(process, Path::new("/proc/self/attr/apparmor").is_dir()) {
        std::fs::write(&path, &value).map_err(Error::io("setting the label for exec through", &path))?;
    }
    Ok(())
}

/// A file system's mount data with the SELinux mount label added (`context="LABEL"`), as
/// runc adds it to every mount but binds, proc, sysfs, cgroups and mqueue.
pub fn with_mount_label(data: Option<String>, typ: &str, label: Option<&str>) -> Option<String> {
    let Some(label) = label.filter(|l| !l.is_empty()) else { return data };
    if matches!(typ, "proc" | "sysfs" | "cgroup" | "cgroup2" | "mqueue" | "bind") {
        return data;
    }
    let context = format!("context=\"{label}\"");
    Some(match data {
        Some(d) if !d.is_empty() => format!("{d},{context}"),
        _ => context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> Spec {
        let mut s = crate::spec::docker_default(&["true".into()], false);
        let mut j = serde_json::to_value(&s).unwrap();
        for (k, val) in v.as_object().unwrap() {
            let (section, field) = k.split_once('.').unwrap();
            j[section][field] = val.clone();
        }
        s = serde_json::from_value(j).unwrap();
        s
    }

    #[test]
    fn labels_are_refused_only_where_the_host_lacks_the_module() {
        let (yes, no) = (|| true, || false);
        let aa = spec(serde_json::json!({"process.apparmorProfile": "docker-default"}));
        assert!(check_with(&aa, no, yes).unwrap_err().to_string().contains("AppArmor is not enabled"));
        check_with(&aa, yes, no).unwrap();
        let se = spec(serde_json::json!({"linux.mountLabel": "system_u:object_r:container_file_t:s0"}));
        assert!(check_with(&se, yes, no).unwrap_err().to_string().contains("SELinux is not enabled"));
        check_with(&se, no, yes).unwrap();
        check_with(&spec(serde_json::json!({"process.apparmorProfile": ""})), no, no).unwrap();
        // Without labels the host is never asked.
        let asked = || -> bool { panic!("the host was asked") };
        check_with(&spec(serde_json::json!({})), asked, asked).unwrap();
    }

    #[test]
    fn exec_labels_go_where_each_module_reads_them() {
        let s = spec(
            serde_json::json!({"process.apparmorProfile": "docker-default", "process.selinuxLabel": "system_u:system_r:container_t:s0"}),
        );
        let p = s.process().clone().unwrap();
        assert_eq!(
            exec_attr_writes(&p, true),
            [
                (PathBuf::from("/proc/self/attr/apparmor/exec"), "exec docker-default".to_string()),
                (PathBuf::from("/proc/self/attr/exec"), "system_u:system_r:container_t:s0".to_string()),
            ]
        );
        assert_eq!(exec_attr_writes(&p, false)[0].0, PathBuf::from("/proc/self/attr/exec"));
        assert!(exec_attr_writes(&Process::default(), true).is_empty());
    }

    #[test]
    fn the_mount_label_joins_the_data_of_file_systems_that_take_it() {
        let l = Some("system_u:object_r:container_file_t:s0");
        assert_eq!(
            with_mount_label(Some("mode=755".into()), "tmpfs", l).as_deref(),
            Some("mode=755,context=\"system_u:object_r:container_file_t:s0\"")
        );
        assert_eq!(with_mount_label(None, "devpts", l).as_deref(), Some("context=\"system_u:object_r:container_file_t:s0\""));
        assert_eq!(with_mount_label(Some("x".into()), "proc", l).as_deref(), Some("x"));
        assert_eq!(with_mount_label(Some("x".into()), "tmpfs", None).as_deref(), Some("x"));
    }
}
