//! The overlay layout: a snapshot holds only its own changes; mounts stack the chain as lowerdirs.

use super::*;

/// Overlay: a snapshot holds only its own changes; mounts stack the chain as lowerdirs.
pub struct OverlayLayout;

impl Layout for OverlayLayout {
    fn standalone(&self) -> bool {
        true
    }

    fn fill(&self, _snapshots: &Path, _tmp: &Path, _chain: &[Info]) -> Result<()> {
        Ok(())
    }

    fn mounts(&self, snapshots: &Path, info: &Info, chain: &[Info]) -> Vec<Mount> {
        let own = snapshots.join(&info.id);
        if info.kind == Kind::View {
            return match chain.len() {
                0 => vec![bind(&own.join("fs"), true)],
                1 => vec![bind(&snapshots.join(&chain[0].id).join("fs"), true)],
                _ => vec![layered(snapshots, chain, None)],
            };
        }
        if chain.is_empty() {
            return vec![bind(&own.join("fs"), false)];
        }
        vec![layered(snapshots, chain, Some(&info.id))]
    }
}

/// An overlay mount of `chain` (nearest first), with `upper`'s fs/work when writable. Uses
/// absolute paths when the options fit in a page, else paths relative to snapshots/.
fn layered(snapshots: &Path, chain: &[Info], upper: Option<&str>) -> Mount {
    let build = |base: &dyn Fn(&str) -> String| {
        let lower: Vec<String> = chain.iter().map(|i| format!("{}/fs", base(&i.id))).collect();
        let mut options = vec![format!("lowerdir={}", lower.join(":"))];
        if let Some(u) = upper {
            options.push(format!("upperdir={}/fs", base(u)));
            options.push(format!("workdir={}/work", base(u)));
        }
        if upper.is_none() {
            options.push("ro".into());
        }
        options
    };
    let absolute = build(&|id: &str| snapshots.join(id).display().to_string());
    if absolute.join(",").len() < PAGE_SIZE {
        return Mount { typ: "overlay".into(), source: "overlay".into(), options: absolute, cwd: None };
    }
    Mount {
        typ: "overlay".into(),
        source: "overlay".into(),
        options: build(&|id: &str| id.to_string()),
        cwd: Some(snapshots.to_path_buf()),
    }
}
