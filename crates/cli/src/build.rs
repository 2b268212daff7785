//! `berth build`: Docker's `build` flags; the context directory sent as a tar without what
//! `.dockerignore` excludes (or a tar from stdin with `-`), a Dockerfile from outside the
//! context added under a name of its own; the steps and RUN's output printed as they come.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;

use crate::http::{Client, query};

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag")]
    pub(crate) tags: Vec<String>,
    /// The Dockerfile (default `PATH/Dockerfile`; `-` reads it from stdin).
    #[arg(short = 'f', long = "file")]
    pub(crate) file: Option<String>,
    /// Build-time variables (`NAME=value`, or `NAME` to take it from the environment).
    #[arg(long = "build-arg")]
    pub(crate) build_args: Vec<String>,
    /// Metadata for the image (`key=value`).
    #[arg(long = "label")]
    pub(crate) labels: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Print the image ID alone.
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
    /// Write the image ID to this file.
    #[arg(long)]
    pub(crate) iidfile: Option<String>,
    /// Networking for RUN steps (`default`, `none`, `host`).
    #[arg(long)]
    pub(crate) network: Option<String>,
    /// Images to use as cache sources.
    #[arg(long)]
    pub(crate) cache_from: Vec<String>,
    /// Always pull the base images.
    #[arg(long)]
    pub(crate) pull: bool,
    /// Remove RUN's containers after a successful step (default true).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) rm: bool,
    /// Always remove RUN's containers.
    #[arg(long)]
    pub(crate) force_rm: bool,
    #[arg(long)]
    pub(crate) platform: Option<String>,
    /// The context: a directory, or `-` for a tar on stdin.
    pub(crate) path: String,
}

/// Every path of the context `dir` to send, relative, parents first, without what `ignore`
/// excludes (the Dockerfile and `.dockerignore` always go: the daemon reads them).
fn walk(dir: &Path, rel: &str, ignore: &berth_build::ignore::Ignore, keep: &[&str], out: &mut Vec<String>) -> anyhow::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(rel))
        .with_context(|| format!("reading {}", dir.join(rel).display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        let path = if rel.is_empty() { n.clone() } else { format!("{rel}/{n}") };
        let excluded = ignore.excluded(&path) && !keep.contains(&path.as_str());
        let md = std::fs::symlink_metadata(dir.join(&path)).with_context(|| format!("stat {path}"))?;
        if md.is_dir() {
            // An excluded directory is still walked when an exception may bring back
            // something under it.
            if !excluded {
                out.push(path.clone());
            }
            if !excluded || ignore.may_include_under(&path) {
                walk(dir, &path, ignore, keep, out)?;
            }
        } else if !excluded {
            out.push(path);
        }
    }
    Ok(())
}

/// The name a Dockerfile from outside the context gets in it: always the same, so the
/// `.dockerignore` that names it stays the same and a `COPY .` still hits the cache.
const OUTSIDE_DOCKERFILE: &str = ".berth-dockerfile";

/// Write the context's tar (and files made for it, `extra`) to `w`.
fn write_context(dir: &Path, paths: &[String], extra: Vec<(String, Vec<u8>)>, w: impl std::io::Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    for p in paths.iter().filter(|p| !extra.iter().any(|(n, _)| n == *p)) {
        b.append_path_with_name(dir.join(p), p)?;
    }
    for (name, data) in extra {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &data[..])?;
    }
    b.finish()
}

fn key_values(list: &[String], from_env: bool) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for a in list {
        match a.split_once('=') {
            Some((k, v)) => {
                m.insert(k.to_string(), Value::String(v.to_string()));
            }
            None if from_env => {
                // `--build-arg NAME`: from the environment, or null (given without a value).
                m.insert(a.clone(), std::env::var(a).map(Value::String).unwrap_or(Value::Null));
            }
            None => {
                m.insert(a.clone(), Value::String(String::new()));
            }
        }
    }
    m
}

/// The first entry of a delta: every path of the context with its signature.
const MANIFEST_ENTRY: &str = ".berth-context.json";

/// The key berthd keeps this context under: this machine, the context's path, the Dockerfile.
fn context_key(dir: &Path, dockerfile: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let text = format!("{}\0{}\0{dockerfile}", host.trim(), abs.display());
    berth_store::Digest::of(text.as_bytes()).hex().to_string()
}

/// The manifest berthd keeps for `key`, or None from a daemon that keeps none (Docker).
fn kept_manifest(client: &Client, key: &str) -> Option<serde_json::Map<String, Value>> {
    let r = client.send("GET", &format!("/berth/build/context/{key}"), None, false).ok()?;
    if r.status != 200 {
        return None;
    }
    r.json().ok()?.as_object().cloned()
}

/// Each path's signature (what changes when its content may have: type, size, times, inode,
/// mode, owner) and the paths whose signature differs from what berthd kept.
fn delta(
    dir: &Path,
    paths: &[String],
    extras: &[(String, Vec<u8>)],
    kept: &serde_json::Map<String, Value>,
) -> anyhow::Result<(serde_json::Map<String, Value>, Vec<String>)> {
    use std::os::unix::fs::MetadataExt;
    let mut sigs = serde_json::Map::new();
    let mut changed = Vec::new();
    for p in paths {
        let m = std::fs::symlink_metadata(dir.join(p)).with_context(|| format!("stat {p}"))?;
        let sig = format!(
            "{:o}:{}:{}.{}:{}.{}:{}:{}:{}",
            m.mode(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.ino(),
            m.uid(),
            m.gid()
        );
        if kept.get(p).and_then(Value::as_str) != Some(sig.as_str()) {
            changed.push(p.clone());
        }
        sigs.insert(p.clone(), Value::String(sig));
    }
    // Made here (the amended .dockerignore, an outside Dockerfile): always sent.
    for (name, data) in extras {
        sigs.insert(name.clone(), Value::String(format!("made:{}", berth_store::Digest::of(data).hex())));
    }
    Ok((sigs, changed))
}

pub(crate) fn build(client: &Client, a: BuildArgs) -> anyhow::Result<i32> {
    let mut q: Vec<(&str, String)> = a.tags.iter().map(|t| ("t", t.clone())).collect();
    let mut extra = None;
    let stdin_context = a.path == "-";
    let dockerfile = match (&a.file, stdin_context) {
        (Some(f), _) if f == "-" => {
            let mut data = Vec::new();
            std::io::stdin().read_to_end(&mut data)?;
            extra = Some((OUTSIDE_DOCKERFILE.to_string(), data));
            OUTSIDE_DOCKERFILE.to_string()
        }
        (Some(f), true) => f.clone(),
        (Some(f), false) => {
            let ctx = std::fs::canonicalize(&a.path).with_context(|| format!("unable to prepare context: path {:?} not found", a.path))?;
            let file = std::fs::canonicalize(f)
                .with_context(|| format!("unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {f}"))?;
            match file.strip_prefix(&ctx) {
                Ok(rel) => rel.to_string_lossy().into_owned(),
                Err(_) => {
                    // Outside the context: sent beside it under a name of its own.
                    let data = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                    extra = Some((OUTSIDE_DOCKERFILE.to_string(), data));
                    OUTSIDE_DOCKERFILE.to_string()
                }
            }
        }
        (None, _) => "Dockerfile".into(),
    };
    q.push(("dockerfile", dockerfile.clone()));
    let args = key_values(&a.build_args, true);
    if !args.is_empty() {
        q.push(("buildargs", Value::Object(args).to_string()));
    }
    let labels = key_values(&a.labels, false);
    if !labels.is_empty() {
        q.push(("labels", Value::Object(labels).to_string()));
    }
    if !a.cache_from.is_empty() {
        q.push(("cachefrom", serde_json::to_string(&a.cache_from)?));
    }
    for (k, v) in [("target", &a.target), ("networkmode", &a.network), ("platform", &a.platform)] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    for (k, on) in [("nocache", a.no_cache), ("q", a.quiet), ("pull", a.pull), ("forcerm", a.force_rm)] {
        if on {
            q.push((k, "1".into()));
        }
    }
    if !a.rm {
        q.push(("rm", "0".into()));
    }
    let mut body: Box<dyn Read + Send> = if stdin_context {
        Box::new(std::io::stdin())
    } else {
        let dir = PathBuf::from(&a.path);
        if !dir.is_dir() {
            bail!("unable to prepare context: path {:?} not found", a.path);
        }
        if extra.is_none() && !dir.join(&dockerfile).is_file() {
            bail!(
                "unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {}: no such file or directory",
                dir.join(&dockerfile).display()
            );
        }
        let ignore_text = std::fs::read_to_string(dir.join(".dockerignore")).unwrap_or_default();
        let ignore = berth_build::ignore::Ignore::parse(&ignore_text).map_err(|e| anyhow::anyhow!("error checking context: {e}"))?;
        let mut paths = Vec::new();
        walk(&dir, "", &ignore, &[dockerfile.as_str(), ".dockerignore"], &mut paths)?;
        // A Dockerfile from outside goes in beside the context, and `.dockerignore` names
        // it: it is read, never copied (as Docker's client does it).
        let mut extras = Vec::new();
        if let Some((name, data)) = extra {
            let mut ignore = ignore_text.clone();
            if !ignore.is_empty() && !ignore.ends_with('\n') {
                ignore.push('\n');
            }
            ignore.push_str(&format!("{name}\n"));
            extras.push((".dockerignore".to_string(), ignore.into_bytes()));
            extras.push((name, data));
        }
        // A daemon that keeps contexts (berthd) gets what changed since the last build.
        let key = context_key(&dir, a.file.as_deref().unwrap_or(""));
        let send = match kept_manifest(client, &key) {
            Some(kept) => {
                let (sigs, changed) = delta(&dir, &paths, &extras, &kept)?;
                extras.push((MANIFEST_ENTRY.to_string(), serde_json::to_vec(&sigs)?));
                q.push(("berthcontext", key));
                changed
            }
            None => paths,
        };
        let (r, w) = std::io::pipe()?;
        std::thread::spawn(move || write_context(&dir, &send, extras, w));
        Box::new(r)
    };
    let resp = client.send("POST", &format!("/build?{}", query(&q)), Some(("application/x-tar", &mut body)), false)?.ok()?;
    let mut id = None;
    let mut out = std::io::stdout().lock();
    for line in std::io::BufReader::new(resp.body).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).with_context(|| format!("reading the build's output: {line:?}"))?;
        if let Some(e) = v["error"].as_str() {
            use std::io::Write;
            out.flush()?;
            eprintln!("{e}");
            let code = v["errorDetail"]["code"].as_i64().filter(|c| *c != 0).unwrap_or(1);
            return Ok(i32::try_from(code).unwrap_or(1));
        }
        if let Some(i) = v["aux"]["ID"].as_str() {
            id = Some(i.to_string());
        }
        if let Some(s) = v["stream"].as_str() {
            use std::io::Write;
            if a.quiet && id.is_none() && s.starts_with("sha256:") {
                id = Some(s.trim().to_string());
            }
            out.write_all(s.as_bytes())?;
            out.flush()?;
        } else if let Some(s) = v["status"].as_str() {
            use std::io::Write;
            writeln!(out, "{s}")?;
        }
    }
    if let (Some(f), Some(i)) = (a.iidfile, &id) {
        std::fs::write(&f, i).with_context(|| format!("writing the image ID to {f}"))?;
    }
    Ok(0)
}
