//! Disk usage and what frees it: `system df`, `container prune`, `image prune`, with Docker's
//! prompts and output.

use std::io::{BufRead, Write};

use clap::Args;
use serde_json::Value;

use crate::http::{Client, query};
use crate::{filters_json, human_size};

#[derive(Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(long = "filter")]
    filter: Vec<String>,
}

#[derive(Args)]
pub struct ImagePruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short = 'a', long)]
    all: bool,
    #[command(flatten)]
    prune: PruneArgs,
}

#[derive(Args)]
pub struct DfArgs {}

#[derive(Args)]
pub struct SystemPruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short = 'a', long)]
    all: bool,
    /// Prune anonymous volumes too.
    #[arg(long)]
    volumes: bool,
    #[command(flatten)]
    prune: PruneArgs,
}

/// `system prune`: stopped containers, unused networks, dangling (or, with `-a`, unused) images,
/// and with `--volumes` unused anonymous volumes, as Docker's client does it.
pub fn system_prune(client: &Client, a: &SystemPruneArgs) -> anyhow::Result<i32> {
    let mut warning =
        String::from("WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n");
    if a.volumes {
        warning.push_str("  - all anonymous volumes not used by at least one container\n");
    }
    warning.push_str(if a.all {
        "  - all images without at least one container associated to them\n"
    } else {
        "  - all dangling images\n"
    });
    warning.push_str("  - unused build cache\n");
    if !a.prune.force && !confirm(warning.trim_end()) {
        return Ok(0);
    }
    let q = |extra| filters_query(&a.prune.filter, extra);
    let mut reclaimed = 0u64;
    let list = |v: &Value, key: &str| -> Vec<String> {
        v[key].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
    };
    let section = |title: &str, items: &[String]| {
        if !items.is_empty() {
            println!("{title}:");
            for i in items {
                println!("{i}");
            }
            println!();
        }
    };
    let v = client.post_json(&format!("/containers/prune{}", q(None)), &Value::Null)?;
    reclaimed += v["SpaceReclaimed"].as_u64().unwrap_or(0);
    section("Deleted Containers", &list(&v, "ContainersDeleted"));
    let v = client.post_json(&format!("/networks/prune{}", q(None)), &Value::Null)?;
    section("Deleted Networks", &list(&v, "NetworksDeleted"));
    if a.volumes {
        let v = client.post_json(&format!("/volumes/prune{}", q(None)), &Value::Null)?;
        reclaimed += v["SpaceReclaimed"].as_u64().unwrap_or(0);
        section("Deleted Volumes", &list(&v, "VolumesDeleted"));
    }
    let dangling = if a.all { ("dangling", "false") } else { ("dangling", "true") };
    let v = client.post_json(&format!("/images/prune{}", q(Some(dangling))), &Value::Null)?;
    reclaimed += v["SpaceReclaimed"].as_u64().unwrap_or(0);
    let mut images = Vec::new();
    for d in v["ImagesDeleted"].as_array().into_iter().flatten() {
        if let Some(u) = d["Untagged"].as_str() {
            images.push(format!("untagged: {u}"));
        }
        if let Some(i) = d["Deleted"].as_str() {
            images.push(format!("deleted: {i}"));
        }
    }
    section("Deleted Images", &images);
    let v = client.post_json(&format!("/build/prune{}", q(None)), &Value::Null)?;
    reclaimed += v["SpaceReclaimed"].as_u64().unwrap_or(0);
    section("Deleted build cache objects", &list(&v, "CachesDeleted"));
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(0)
}

#[derive(Args)]
pub struct BuilderPruneArgs {
    /// Remove all the build cache (berth keeps no other kind).
    #[arg(short = 'a', long)]
    all: bool,
    #[command(flatten)]
    prune: PruneArgs,
}

/// `builder prune`: the build cache, as Docker's client asks for it.
pub fn builder_prune(client: &Client, a: &BuilderPruneArgs) -> anyhow::Result<i32> {
    let warning = if a.all { "WARNING! This will remove all build cache." } else { "WARNING! This will remove all dangling build cache." };
    if !a.prune.force && !confirm(warning) {
        return Ok(0);
    }
    let mut q = filters_query(&a.prune.filter, None);
    if a.all {
        q = if q.is_empty() { "?all=1".into() } else { format!("{q}&all=1") };
    }
    let v = client.post_json(&format!("/build/prune{q}"), &Value::Null)?;
    let deleted: Vec<String> = v["CachesDeleted"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
    if !deleted.is_empty() {
        println!("ID");
        for d in deleted {
            println!("{d}");
        }
    }
    println!("Total:\t{}", human_size(v["SpaceReclaimed"].as_u64().unwrap_or(0)));
    Ok(0)
}

/// Docker's `[y/N]` question; anything but y or yes is no.
fn confirm(warning: &str) -> bool {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn filters_query(filter: &[String], extra: Option<(&str, &str)>) -> String {
    let mut filter = filter.to_vec();
    if let Some((k, v)) = extra {
        filter.push(format!("{k}={v}"));
    }
    if filter.is_empty() { String::new() } else { format!("?{}", query(&[("filters", filters_json(&filter))])) }
}

pub fn container_prune(client: &Client, a: &PruneArgs) -> anyhow::Result<i32> {
    if !a.force && !confirm("WARNING! This will remove all stopped containers.") {
        return Ok(0);
    }
    let v = client.post_json(&format!("/containers/prune{}", filters_query(&a.filter, None)), &Value::Null)?;
    let deleted: Vec<&str> = v["ContainersDeleted"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !deleted.is_empty() {
        println!("Deleted Containers:");
        for id in deleted {
            println!("{id}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(v["SpaceReclaimed"].as_u64().unwrap_or(0)));
    Ok(0)
}

pub fn image_prune(client: &Client, a: &ImagePruneArgs) -> anyhow::Result<i32> {
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !a.prune.force && !confirm(warning) {
        return Ok(0);
    }
    let dangling = if a.all { ("dangling", "false") } else { ("dangling", "true") };
    let v = client.post_json(&format!("/images/prune{}", filters_query(&a.prune.filter, Some(dangling))), &Value::Null)?;
    let deleted = v["ImagesDeleted"].as_array().cloned().unwrap_or_default();
    if !deleted.is_empty() {
        println!("Deleted Images:");
        for d in deleted {
            if let Some(u) = d["Untagged"].as_str() {
                println!("untagged: {u}");
            }
            if let Some(i) = d["Deleted"].as_str() {
                println!("deleted: {i}");
            }
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(v["SpaceReclaimed"].as_u64().unwrap_or(0)));
    Ok(0)
}

/// `system df` shows sizes with four significant digits.
fn size(n: u64) -> String {
    berth_format::human_size(n, 4)
}

/// `500MB (40%)`: what could go, and its share of the total.
fn reclaimable(n: u64, total: u64) -> String {
    match (n * 100).checked_div(total) {
        Some(pct) => format!("{} ({pct}%)", size(n)),
        None => size(n),
    }
}

pub fn df(client: &Client) -> anyhow::Result<i32> {
    let v = client.get("/system/df")?;
    let images = v["Images"].as_array().cloned().unwrap_or_default();
    let containers = v["Containers"].as_array().cloned().unwrap_or_default();
    let total = v["LayersSize"].as_u64().unwrap_or(0);
    // Docker's arithmetic: what images in use hold apart from what they share is not reclaimable.
    let used: u64 = images
        .iter()
        .filter(|i| i["Containers"].as_u64().unwrap_or(0) > 0)
        .map(|i| i["Size"].as_u64().unwrap_or(0).saturating_sub(i["SharedSize"].as_u64().unwrap_or(0)))
        .sum();
    let active_images = images.iter().filter(|i| i["Containers"].as_u64().unwrap_or(0) > 0).count();
    let rw = |c: &Value| c["SizeRw"].as_u64().unwrap_or(0);
    let running = |c: &Value| c["State"] == "running";
    let ctr_size: u64 = containers.iter().map(rw).sum();
    let ctr_free: u64 = containers.iter().filter(|c| !running(c)).map(rw).sum();
    let volumes = v["Volumes"].as_array().cloned().unwrap_or_default();
    let vol_size = |x: &Value| x["UsageData"]["Size"].as_i64().unwrap_or(0).max(0) as u64;
    let vol_used = |x: &Value| x["UsageData"]["RefCount"].as_i64().unwrap_or(0) > 0;
    let vols_size: u64 = volumes.iter().map(vol_size).sum();
    let vols_free: u64 = volumes.iter().filter(|x| !vol_used(x)).map(vol_size).sum();
    let rows = vec![
        vec!["TYPE".into(), "TOTAL".into(), "ACTIVE".into(), "SIZE".into(), "RECLAIMABLE".into()],
        vec![
            "Images".into(),
            images.len().to_string(),
            active_images.to_string(),
            size(total),
            reclaimable(total.saturating_sub(used), total),
        ],
        vec![
            "Containers".into(),
            containers.len().to_string(),
            containers.iter().filter(|c| running(c)).count().to_string(),
            size(ctr_size),
            reclaimable(ctr_free, ctr_size),
        ],
        vec![
            "Local Volumes".into(),
            volumes.len().to_string(),
            volumes.iter().filter(|x| vol_used(x)).count().to_string(),
            size(vols_size),
            reclaimable(vols_free, vols_size),
        ],
        {
            let cache = v["BuildCache"].as_array().cloned().unwrap_or_default();
            let total: u64 = cache.iter().map(|c| c["Size"].as_u64().unwrap_or(0)).sum();
            let free: u64 =
                cache.iter().filter(|c| c["InUse"] != true && c["Shared"] != true).map(|c| c["Size"].as_u64().unwrap_or(0)).sum();
            let active = cache.iter().filter(|c| c["InUse"] == true).count();
            vec!["Build Cache".into(), cache.len().to_string(), active.to_string(), size(total), size(free)]
        },
    ];
    print!("{}", crate::format::table(&rows));
    Ok(0)
}
