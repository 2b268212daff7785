//! Image commands: images, rmi, tag, history, import, save, load.

use std::io::Read;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::http::{Client, query};
use crate::*;

#[derive(Args)]
pub(crate) struct ImagesArgs {
    #[arg(short = 'a', long)]
    pub(crate) all: bool,
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
    #[arg(long)]
    pub(crate) digests: bool,
    #[arg(long = "no-trunc")]
    pub(crate) no_trunc: bool,
    #[arg(short = 'f', long = "filter")]
    pub(crate) filter: Vec<String>,
    #[arg(long)]
    pub(crate) format: Option<String>,
    pub(crate) reference: Option<String>,
}

#[derive(Args)]
pub(crate) struct RmiArgs {
    #[arg(short = 'f', long)]
    pub(crate) force: bool,
    #[arg(required = true)]
    pub(crate) images: Vec<String>,
}

#[derive(Args)]
pub(crate) struct TagArgs {
    pub(crate) source: String,
    pub(crate) target: String,
}

#[derive(Args)]
pub(crate) struct HistoryArgs {
    #[arg(long = "no-trunc")]
    pub(crate) no_trunc: bool,
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
    #[arg(long)]
    pub(crate) format: Option<String>,
    pub(crate) image: String,
}

#[derive(Args)]
pub(crate) struct ImportArgs {
    #[arg(short = 'm', long)]
    pub(crate) message: Option<String>,
    /// A Dockerfile instruction to apply to the image's config (repeatable).
    #[arg(short = 'c', long)]
    pub(crate) change: Vec<String>,
    pub(crate) file: String,
    pub(crate) reference: Option<String>,
}

#[derive(Args)]
pub(crate) struct SaveArgs {
    #[arg(short = 'o', long)]
    pub(crate) output: Option<String>,
    #[arg(required = true)]
    pub(crate) images: Vec<String>,
}

#[derive(Args)]
pub(crate) struct LoadArgs {
    #[arg(short = 'i', long)]
    pub(crate) input: Option<String>,
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
}

/// `berth images`.
pub(crate) fn cmd_images(client: &Client, a: ImagesArgs) -> anyhow::Result<i32> {
    let ImagesArgs { all, quiet, digests, no_trunc, filter, format, reference } = a;
    images(client, all, quiet, digests, no_trunc, filter, format.as_deref(), reference)
}

/// `berth rmi`.
pub(crate) fn rmi(client: &Client, a: RmiArgs) -> anyhow::Result<i32> {
    let RmiArgs { force, images } = a;
    each(&images, false, |i| {
        let v = client.delete(&format!("/images/{i}?force={}", u8::from(force)))?;
        for item in v.as_array().into_iter().flatten() {
            if let Some(u) = item["Untagged"].as_str() {
                println!("Untagged: {u}");
            }
            if let Some(d) = item["Deleted"].as_str() {
                println!("Deleted: {d}");
            }
        }
        Ok(())
    })
}

/// `berth tag`.
pub(crate) fn tag(client: &Client, a: TagArgs) -> anyhow::Result<i32> {
    let TagArgs { source, target } = a;
    let (repo, tag) = split_tag(&target);
    client.post(&format!("/images/{source}/tag?{}", query(&[("repo", repo), ("tag", tag)])))?;
    Ok(0)
}

/// `berth history`.
pub(crate) fn history(client: &Client, a: HistoryArgs) -> anyhow::Result<i32> {
    let HistoryArgs { no_trunc, quiet, format, image } = a;
    let v = client.get(&format!("/images/{image}/history"))?;
    let mut items = Vec::new();
    for h in v.as_array().into_iter().flatten() {
        let id = h["Id"].as_str().unwrap_or("");
        let id = if id.starts_with("sha256:") && !no_trunc { id[7..19].to_string() } else { id.to_string() };
        if quiet {
            println!("{id}");
            continue;
        }
        let mut by = h["CreatedBy"].as_str().unwrap_or("").to_string();
        if !no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        let created = h["Created"].as_i64().unwrap_or(0);
        items.push(json!({
            "ID": id,
            "CreatedSince": ago(created),
            "CreatedAt": utc_time(created, true),
            "CreatedBy": by,
            "Size": human_size(h["Size"].as_u64().unwrap_or(0)),
            "Comment": h["Comment"].as_str().unwrap_or(""),
        }));
    }
    if !quiet {
        let template = format.unwrap_or_else(|| "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}".into());
        print!("{}", format::format_list(&template, &items, "IMAGE")?);
    }
    Ok(0)
}

/// `berth import`.
pub(crate) fn import(client: &Client, a: ImportArgs) -> anyhow::Result<i32> {
    let ImportArgs { message, change, file, reference } = a;
    let mut q = vec![("fromSrc", "-".to_string())];
    q.extend(change.into_iter().map(|c| ("changes", c)));
    if let Some(r) = reference {
        let (repo, tag) = split_tag(&r);
        q.push(("repo", repo));
        q.push(("tag", tag));
    }
    if let Some(m) = message {
        q.push(("message", m));
    }
    let mut input: Box<dyn Read> = if file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&file).with_context(|| format!("open {file}"))?)
    };
    let resp = client.send("POST", &format!("/images/create?{}", query(&q)), Some(("application/x-tar", &mut input)), false)?.ok()?;
    for line in resp.text()?.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)?;
        if let Some(e) = v["error"].as_str() {
            bail!("{e}");
        }
        if let Some(s) = v["status"].as_str() {
            println!("{s}");
        }
    }
    Ok(0)
}

/// `berth save`.
pub(crate) fn save(client: &Client, a: SaveArgs) -> anyhow::Result<i32> {
    let SaveArgs { output, images } = a;
    let q = query(&images.iter().map(|i| ("names", i.clone())).collect::<Vec<_>>());
    let mut resp = client.send("GET", &format!("/images/get?{q}"), None, false)?.ok()?;
    match output {
        Some(o) => {
            let mut f = std::fs::File::create(&o).with_context(|| format!("creating {o}"))?;
            std::io::copy(&mut resp.body, &mut f)?;
        }
        None => {
            if stream::is_tty(1) {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            std::io::copy(&mut resp.body, &mut std::io::stdout().lock())?;
        }
    }
    Ok(0)
}

/// `berth load`.
pub(crate) fn load(client: &Client, a: LoadArgs) -> anyhow::Result<i32> {
    let LoadArgs { input, quiet } = a;
    let mut r: Box<dyn Read> = match input {
        Some(i) => Box::new(std::fs::File::open(&i).with_context(|| format!("open {i}"))?),
        None => Box::new(std::io::stdin()),
    };
    let resp = client.send("POST", "/images/load", Some(("application/x-tar", &mut r)), false)?.ok()?;
    for line in resp.text()?.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)?;
        if let Some(e) = v["error"].as_str() {
            bail!("{e}");
        }
        if let Some(s) = v["stream"].as_str()
            && !quiet
        {
            print!("{s}");
        }
    }
    Ok(0)
}

pub(crate) fn split_tag(r: &str) -> (String, String) {
    let slash = r.rfind('/').unwrap_or(0);
    match r[slash..].rfind(':') {
        Some(i) => (r[..slash + i].to_string(), r[slash + i + 1..].to_string()),
        None => (r.to_string(), "latest".to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn images(
    client: &Client,
    all: bool,
    quiet: bool,
    digests: bool,
    no_trunc: bool,
    mut filter: Vec<String>,
    format: Option<&str>,
    reference: Option<String>,
) -> anyhow::Result<i32> {
    if let Some(r) = reference {
        filter.push(format!("reference={r}"));
    }
    let mut q = vec![("all", u8::from(all).to_string()), ("digests", u8::from(digests).to_string())];
    if !filter.is_empty() {
        q.push(("filters", filters_json(&filter)));
    }
    let list = client.get(&format!("/images/json?{}", query(&q)))?;
    let mut items = Vec::new();
    for img in list.as_array().into_iter().flatten() {
        let id = trunc_id(img["Id"].as_str().unwrap_or(""), no_trunc);
        if quiet {
            if !items.iter().any(|i: &Value| i["ID"] == id.as_str()) {
                items.push(json!({"ID": id}));
            }
            continue;
        }
        let tags: Vec<String> = img["RepoTags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
        let tags = if tags.is_empty() { vec!["<none>:<none>".to_string()] } else { tags };
        let digests: Vec<&str> = img["RepoDigests"].as_array().into_iter().flatten().filter_map(|d| d.as_str()).collect();
        for t in tags {
            let (repo, tag) = split_tag(&t);
            // `repo@sha256:…` for this repository, as Docker shows it.
            let digest = digests.iter().find_map(|d| d.split_once('@').filter(|(r, _)| *r == repo).map(|(_, d)| d)).unwrap_or("<none>");
            items.push(json!({
                "ID": id, "Repository": repo, "Tag": tag, "Digest": digest,
                "CreatedSince": ago(img["Created"].as_i64().unwrap_or(0)), "CreatedAt": utc_time(img["Created"].as_i64().unwrap_or(0), false),
                "Size": human_size(img["Size"].as_u64().unwrap_or(0)),
            }));
        }
    }
    if quiet {
        for i in &items {
            println!("{}", format::show(&i["ID"]));
        }
        return Ok(0);
    }
    let template = match format {
        Some(f) => f.to_string(),
        None if digests => "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}".into(),
        None => "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}".into(),
    };
    print!("{}", format::format_list(&template, &items, "IMAGE ID")?);
    Ok(0)
}
