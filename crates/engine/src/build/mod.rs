//! `/build`: the context unpacked (bounded, nothing outside its directory), the Dockerfile
//! read, parsed and planned (what is wrong there is the request's error), then berth-build's
//! loop run on a blocking thread with the engine's executor and cache, its progress streamed
//! as Docker's JSON messages; the image recorded and tagged at the end. `/build/prune`.

mod copy;
mod exec;
mod session;

use std::path::PathBuf;
use std::sync::Arc;

use berth_api::build::{BuildOptions, Builds};
use berth_api::images::MessageStream;
use berth_api::params::{ByteStream, Filters};
use berth_api::{ApiError, Kind};
use berth_build::builder::{self, BuildError, Event};
use berth_build::context::{CONTEXT_LIMITS, Context};
use berth_models::build::BuildPruneResponse;
use berth_models::messages::{ErrorDetail, JsonMessage};
use berth_store::reference::Reference;

use crate::Engine;

pub(crate) use exec::cache_entries;
pub(crate) use session::Sessions;

/// A context directory, deleted when dropped (also when the build fails part way).
struct ContextDir(PathBuf);

impl Drop for ContextDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("removing the build context {}: {e}", self.0.display());
        }
    }
}

/// The context a build reads: unpacked for it alone, or kept between builds.
enum Ctx {
    Temp(ContextDir),
    Kept(session::Held),
}

impl Ctx {
    fn dir(&self) -> &std::path::Path {
        match self {
            Ctx::Temp(d) => &d.0,
            Ctx::Kept(h) => &h.dir,
        }
    }
}

/// What builds a crash interrupted left: unpacked contexts, downloads, COPY's work
/// directories and writable layers. (Kept contexts stay: their manifest is written last.)
pub(crate) fn remove_leftovers(engine: &Engine) {
    let builder = engine.cfg.data_root.join("builder");
    for dir in [builder.join("contexts"), builder.join("downloads"), engine.cfg.exec_root.join("builder")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
    if let Ok(infos) = engine.images.snapshots.walk() {
        for info in infos.iter().filter(|i| i.key.starts_with("build-")) {
            if let Err(e) = engine.images.snapshots.remove(&info.key) {
                tracing::warn!("removing the leftover build layer {}: {e}", info.key);
            }
        }
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(Kind::InvalidArgument, message)
}

/// Docker's failure message for a build error (with the step's exit code when a RUN failed).
fn failure(e: &BuildError) -> JsonMessage {
    let message = e.to_string();
    let code = match e {
        BuildError::RunFailed { code, .. } => Some(*code),
        _ => None,
    };
    JsonMessage { error_detail: Some(ErrorDetail { code, message: message.clone() }), error: Some(message), ..Default::default() }
}

impl Engine {
    /// Unpack the context (gzip or zstd compressed, or plain) into a new directory.
    async fn receive_context(&self, body: ByteStream) -> Result<ContextDir, ApiError> {
        let parent = self.cfg.data_root.join("builder").join("contexts");
        std::fs::create_dir_all(&parent).map_err(|e| ApiError::new(Kind::Internal, format!("creating {}: {e}", parent.display())))?;
        let id = crate::names::random_id()?;
        let dir = ContextDir(parent.join(&id[..16]));
        std::fs::create_dir(&dir.0).map_err(|e| ApiError::new(Kind::Internal, format!("creating {}: {e}", dir.0.display())))?;
        let path = dir.0.clone();
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
        tokio::task::spawn_blocking(move || {
            let input = berth_store::archive::decompress(std::io::BufReader::with_capacity(1 << 20, reader))
                .map_err(|e| bad(format!("the build context: {e}")))?;
            berth_build::context::unpack_context(input, &path, CONTEXT_LIMITS).map_err(|e| bad(e.to_string()))
        })
        .await
        .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))??;
        Ok(dir)
    }
}

/// The regular file `name` of the context in `dir`, resolved inside it (a symlink never leads
/// out), opened without blocking (a FIFO is no file), at most `limit` bytes; None when there is
/// no such regular file.
pub(super) fn read_in_context(dir: &std::path::Path, name: &str, limit: u64) -> Result<Option<Vec<u8>>, String> {
    use nix::fcntl::OFlag;
    use std::io::Read;
    use std::os::fd::AsFd;
    let root = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let how =
        nix::fcntl::OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).resolve(berth_store::inroot::in_root());
    let Ok(fd) = nix::fcntl::openat2(root.as_fd(), name.trim_start_matches('/'), how) else { return Ok(None) };
    let f = std::fs::File::from(fd);
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Ok(None);
    }
    let mut data = Vec::new();
    f.take(limit + 1).read_to_end(&mut data).map_err(|e| format!("reading {name}: {e}"))?;
    if data.len() as u64 > limit {
        return Err(format!("{name} is larger than {limit} bytes"));
    }
    Ok(Some(data))
}

/// The Dockerfile `name` inside the context: text of a reasonable size.
fn read_dockerfile(dir: &std::path::Path, name: &str) -> Result<String, ApiError> {
    match read_in_context(dir, name, 16 << 20).map_err(bad)? {
        Some(d) => String::from_utf8(d).map_err(|_| bad(format!("reading the Dockerfile {name}: not UTF-8 text"))),
        None => Err(ApiError::new(Kind::Internal, format!("Cannot locate specified Dockerfile: {name}"))),
    }
}

#[async_trait::async_trait]
impl Builds for Engine {
    async fn build(&self, opts: BuildOptions, context: ByteStream) -> Result<MessageStream, ApiError> {
        let mut refs = Vec::new();
        for t in &opts.tags {
            refs.push(Reference::parse(t).map_err(|e| bad(format!("invalid reference format: {t}: {e}")))?);
        }
        let dir = match &opts.context_key {
            Some(key) => Ctx::Kept(self.build_sessions.receive(&self.cfg.data_root, key, context).await?),
            None => Ctx::Temp(self.receive_context(context).await?),
        };
        let text = read_dockerfile(dir.dir(), &opts.dockerfile)?;
        let ignore_text = read_in_context(dir.dir(), ".dockerignore", 1 << 20).map_err(bad)?.unwrap_or_default();
        let ignore_text = String::from_utf8_lossy(&ignore_text);
        let ignore = berth_build::ignore::Ignore::parse(&ignore_text).map_err(|e| bad(format!(".dockerignore: {e}")))?;
        let file = opts.dockerfile.clone();
        let df = berth_build::parse(&file, &text).map_err(|e| {
            bad(format!("dockerfile parse error line {}: {} ({}:{}:{})", e.pos.line, e.message, e.file, e.pos.line, e.pos.column))
        })?;
        let plan = berth_build::plan(&file, &df, &opts.build_args, opts.target.as_deref()).map_err(|e| bad(e.to_string()))?;
        let escape = df.directives.escape;

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<JsonMessage>();
        let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel::<JsonMessage>();
        let quiet = opts.quiet;
        // `q`: the output is kept, and sent only if the build fails; success sends the ID.
        tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Some(m) = rx.recv().await {
                if !quiet {
                    let _ = out_tx.send(m);
                    continue;
                }
                if m.error.is_some() {
                    for k in kept.drain(..) {
                        let _ = out_tx.send(k);
                    }
                    let _ = out_tx.send(m);
                } else if let Some(id) = m.aux.as_ref().and_then(|a| a.get("ID")).and_then(|v| v.as_str()) {
                    let _ = out_tx.send(JsonMessage::stream(format!("{id}\n")));
                } else {
                    kept.push(m);
                }
            }
        });
        let engine = self.clone();
        tokio::task::spawn_blocking(move || {
            let steps = exec::Steps::new(
                engine.clone(),
                tx.clone(),
                dir.dir().to_path_buf(),
                opts.network.clone(),
                opts.rm || opts.force_rm,
                opts.pull,
            );
            let result = (|| -> Result<String, BuildError> {
                let ctx = Context::open(dir.dir(), ignore).map_err(|e| BuildError::Executor(format!("the build context: {e}")))?;
                let ctx = match &dir {
                    Ctx::Kept(h) => ctx.with_known(Arc::clone(&h.known)),
                    Ctx::Temp(_) => ctx,
                };
                // `--cache-from` images present here (the legacy builder pulls none).
                let cache_from = opts.cache_from.iter().filter_map(|name| steps.local_image(name)).collect();
                let bopts = builder::Options {
                    build_args: opts.build_args.clone(),
                    no_cache: opts.no_cache,
                    labels: opts.labels.clone(),
                    cache_from,
                };
                let b = builder::Build { plan: &plan, escape, ctx: &ctx, exec: &steps, cache: &steps, opts: &bopts };
                let sink = tx.clone();
                let mut events = move |e: Event| {
                    let text = match e {
                        Event::Step { n, total, text } => format!("Step {n}/{total} : {text}\n"),
                        Event::UsingCache => " ---> Using cache\n".to_string(),
                        Event::Result(k) => format!(" ---> {k}\n"),
                    };
                    let _ = sink.send(JsonMessage::stream(text));
                };
                let mut out = exec::StreamOut(tx.clone());
                let built = builder::build(&b, &mut events, &mut out)?;
                let mut image = built.image;
                // The image is as old as its last step: a cached rebuild makes the same one.
                image.created = image.history.last().and_then(|h| h.created.clone()).or(image.created);
                let layers = steps.layers_of(&image.rootfs.diff_ids)?;
                let bytes = serde_json::to_vec(&image).map_err(|e| BuildError::Executor(e.to_string()))?;
                let id = engine
                    .images
                    .record_image(bytes, layers, &refs)
                    .map_err(|e| BuildError::Executor(format!("recording the image: {e}")))?;
                Ok(id.to_string())
            })();
            match result {
                Ok(id) => {
                    let _ = tx.send(JsonMessage { aux: Some(serde_json::json!({ "ID": id })), ..Default::default() });
                    let short: String = id.trim_start_matches("sha256:").chars().take(12).collect();
                    let _ = tx.send(JsonMessage::stream(format!("Successfully built {short}\n")));
                    for r in &refs {
                        engine.event("image", "tag", &id, &[("name", r.familiar())]);
                        let _ = tx.send(JsonMessage::stream(format!("Successfully tagged {}\n", r.familiar())));
                    }
                }
                Err(e) => {
                    let _ = tx.send(failure(&e));
                }
            }
            drop(steps);
            drop(dir);
        });
        Ok(Box::pin(futures_util::stream::unfold(out_rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })))
    }

    async fn prune(&self, all: bool, filters: Filters) -> Result<BuildPruneResponse, ApiError> {
        let _ = all;
        // Cache records carry no labels: a label filter matches none of them.
        if !filters.get("label").is_empty() || !filters.get("label!").is_empty() {
            return Ok(BuildPruneResponse::default());
        }
        // `until`: only what was made before it goes.
        let until = crate::containers::until_filters(&filters)?.into_iter().reduce(f64::min);
        let e = self.clone();
        let (deleted, freed) = tokio::task::spawn_blocking(move || {
            let (mut deleted, mut freed) = e
                .images
                .cache_prune(|c| until.is_some_and(|cut| crate::record::unix_seconds(&c.created) >= cut))
                .map_err(|err| ApiError::new(Kind::Internal, format!("pruning the build cache: {err}")))?;
            // Kept contexts are the cache of what clients sent (BuildKit's `source.local`).
            if until.is_none() {
                let (keys, bytes) = e.build_sessions.prune(&e.cfg.data_root);
                deleted.extend(keys);
                freed += bytes;
            }
            Ok::<_, ApiError>((deleted, freed))
        })
        .await
        .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))??;
        let ids: Vec<String> = deleted.iter().map(|k| k.trim_start_matches("sha256:").chars().take(25).collect()).collect();
        Ok(BuildPruneResponse { caches_deleted: (!ids.is_empty()).then_some(ids), space_reclaimed: freed })
    }

    async fn context_manifest(&self, key: &str) -> Result<serde_json::Value, ApiError> {
        Ok(self.build_sessions.manifest(&self.cfg.data_root, key))
    }
}
