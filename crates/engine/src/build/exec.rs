//! The engine's side of a build: berth-build's `Executor` (base images resolved or pulled, RUN
//! in a container through a shim like any other, COPY/ADD into a layer without one) and its
//! `Cache` (the store's build cache). Runs on a blocking thread; the engine's async parts
//! are reached through the runtime's handle.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use berth_api::containers::{Containers, CreateBody, WaitCondition};
use berth_build::builder::{BuildError, Cache, CopyStep, Executor, RunStep};
use berth_models::containers::{ContainerConfig, HostConfig, StrSlice};
use berth_models::messages::JsonMessage;
use berth_store::Digest;
use berth_store::image::ImageConfig;
use berth_store::images::{LayerRecord, WriteHold};

use crate::Engine;
use crate::containers::StepImage;

/// Where a build's messages go (the API's stream).
pub(super) type Sink = tokio::sync::mpsc::UnboundedSender<JsonMessage>;

/// A writer whose lines become `{"stream": …}` messages as they come (RUN's output).
pub(super) struct StreamOut(pub Sink);

impl Write for StreamOut {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if !data.is_empty() {
            let _ = self.0.send(JsonMessage::stream(String::from_utf8_lossy(data).into_owned()));
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) struct Steps {
    pub engine: Engine,
    pub rt: tokio::runtime::Handle,
    pub sink: Sink,
    /// The context's directory (COPY's sources).
    pub context: std::path::PathBuf,
    /// `networkmode` for RUN steps without `--network`.
    pub network: Option<String>,
    pub rm: bool,
    pub pull: bool,
    /// Every layer the build has met, by chain ID: base images', cached steps', its own.
    layers: Mutex<HashMap<Digest, LayerRecord>>,
    /// Held from the moment a step makes a layer until the cache records it, so no
    /// collection takes the layer in between: by thread (stages build at once, each on one).
    hold: Mutex<HashMap<std::thread::ThreadId, WriteHold>>,
    /// ADD's downloads, deleted when the build ends.
    downloads: Mutex<Vec<std::path::PathBuf>>,
}

impl Drop for Steps {
    fn drop(&mut self) {
        for f in self.downloads.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The most an ADD URL may bring.
const DOWNLOAD_LIMIT: u64 = 16 << 30;

fn exec_err(e: impl std::fmt::Display) -> BuildError {
    BuildError::Executor(e.to_string())
}

impl Steps {
    pub fn new(engine: Engine, sink: Sink, context: std::path::PathBuf, network: Option<String>, rm: bool, pull: bool) -> Steps {
        Steps {
            engine,
            rt: tokio::runtime::Handle::current(),
            sink,
            context,
            network,
            rm,
            pull,
            layers: Mutex::new(HashMap::new()),
            hold: Mutex::new(HashMap::new()),
            downloads: Mutex::new(Vec::new()),
        }
    }

    fn know(&self, layers: &[LayerRecord]) {
        let mut m = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        for l in layers {
            m.entry(l.chain_id.clone()).or_insert_with(|| l.clone());
        }
    }

    /// The layer records of `diff_ids` (a stage's state), from what the build has met.
    pub fn layers_of(&self, diff_ids: &[Digest]) -> Result<Vec<LayerRecord>, BuildError> {
        let m = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        berth_store::image::chain_ids(diff_ids)
            .iter()
            .map(|c| m.get(c).cloned().ok_or_else(|| exec_err(format!("layer {c} is not known to this build"))))
            .collect()
    }

    fn hold_writes(&self) {
        let h = self.engine.images.write_guard();
        self.hold.lock().unwrap_or_else(|p| p.into_inner()).insert(std::thread::current().id(), h);
    }

    fn release_writes(&self) {
        self.hold.lock().unwrap_or_else(|p| p.into_inner()).remove(&std::thread::current().id());
    }

    /// The image `name`, resolved locally or pulled (its progress goes to the stream).
    fn image(&self, name: &str, platform: Option<&str>) -> Result<(Digest, ImageConfig, Vec<LayerRecord>), BuildError> {
        let images = &self.engine.images;
        let local = if self.pull { None } else { images.resolve(name).ok() };
        let id = match local {
            Some(id) => id,
            None => {
                let reference = crate::pull::pull_reference(name, None).map_err(|e| exec_err(e.message))?;
                let platform = platform.map(crate::pull::parse_platform).transpose().map_err(|e| exec_err(e.message))?;
                let sink = self.sink.clone();
                let engine = self.engine.clone();
                let r = reference.clone();
                self.rt.block_on(async move {
                    use futures_util::StreamExt;
                    let mut progress = engine.pull_image(r, platform, Default::default()).await.map_err(|e| exec_err(e.message))?;
                    while let Some(m) = progress.next().await {
                        if let Some(e) = &m.error {
                            return Err(exec_err(e));
                        }
                        let _ = sink.send(m);
                    }
                    Ok(())
                })?;
                images.lookup(&reference).ok_or_else(|| exec_err(format!("pull access denied for {name}")))?
            }
        };
        let rec = images.get(&id).map_err(exec_err)?;
        let (_, config) = images.config(&id).map_err(exec_err)?;
        self.know(&rec.layers);
        Ok((id, config, rec.layers))
    }

    /// A local image's config, its layers made known to the build (`--cache-from`).
    pub fn local_image(&self, name: &str) -> Option<ImageConfig> {
        let images = &self.engine.images;
        let id = images.resolve(name).ok()?;
        let rec = images.get(&id).ok()?;
        let (_, config) = images.config(&id).ok()?;
        self.know(&rec.layers);
        Some(config)
    }

    /// RUN's command: the shell form's heredocs go to the shell with it (it reads them
    /// itself); a command that is a heredoc alone runs the heredoc as its script.
    fn command(step: &RunStep) -> Vec<String> {
        let mut argv = step.argv.clone();
        if step.heredocs.is_empty() {
            return argv;
        }
        let last = argv.len().saturating_sub(1);
        let only = step.heredocs.len() == 1
            && argv.get(last).is_some_and(|c| {
                c.trim().trim_start_matches("<<").trim_start_matches('-').trim_matches(['"', '\'']) == step.heredocs[0].name
            });
        if only && argv.len() >= 2 {
            argv[last] = step.heredocs[0].content.clone();
            return argv;
        }
        if let Some(script) = argv.get_mut(last) {
            for h in &step.heredocs {
                script.push('\n');
                script.push_str(&h.content);
                if !h.content.ends_with('\n') && !h.content.is_empty() {
                    script.push('\n');
                }
                script.push_str(&h.name);
            }
        }
        argv
    }

    /// Copy the json-file log's lines from `offset` to the stream; returns the new offset.
    fn forward_log(&self, path: &std::path::Path, offset: u64) -> u64 {
        use std::io::{BufRead, Seek};
        let Ok(mut f) = std::fs::File::open(path) else { return offset };
        if f.seek(std::io::SeekFrom::Start(offset)).is_err() {
            return offset;
        }
        let mut r = std::io::BufReader::new(f);
        let mut at = offset;
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line still being written is read whole next time.
                Ok(_) if !line.ends_with('\n') => break,
                Ok(n) => {
                    at += n as u64;
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && let Some(log) = v.get("log").and_then(|l| l.as_str())
                    {
                        let _ = self.sink.send(JsonMessage::stream(log.to_string()));
                    }
                }
            }
        }
        at
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Executor for Steps {
    fn base(&self, name: &str, platform: Option<&str>) -> Result<(String, ImageConfig), BuildError> {
        let (id, config, _) = self.image(name, platform)?;
        Ok((id.to_string(), config))
    }

    fn run(&self, image: &ImageConfig, step: &RunStep, out: &mut dyn Write) -> Result<Option<Digest>, BuildError> {
        let layers = self.layers_of(&image.rootfs.diff_ids)?;
        let config_bytes = serde_json::to_vec(image).map_err(exec_err)?;
        let image_id = Digest::of(&config_bytes).to_string();
        let argv = Steps::command(step);
        let network = step.network.clone().or_else(|| self.network.clone()).filter(|n| n != "default");
        let body = CreateBody {
            config: ContainerConfig {
                image: Some(image_id.clone()),
                cmd: Some(StrSlice::Many(argv)),
                // RUN runs its command, not the image's entrypoint.
                entrypoint: Some(StrSlice::Many(vec![String::new()])),
                env: Some(step.env.clone()),
                user: Some(step.user.clone()),
                working_dir: Some(step.workdir.clone()).filter(|w| !w.is_empty()),
                ..Default::default()
            },
            host_config: Some(HostConfig { network_mode: network, ..Default::default() }),
            networking_config: None,
        };
        let top = layers.last().map(|l| l.chain_id.to_string());
        let e = self.engine.clone();
        let img = StepImage { id: image_id, config: image.clone(), top };
        let created = self.rt.block_on(async move { e.create_on(None, body, Some(img)).await }).map_err(|e| exec_err(e.message))?;
        let id = created.id;
        let _ = writeln!(out, " ---> Running in {}", short(&id));
        let result = self.run_container(&id, step, &layers);
        let remove = self.rm || result.is_err();
        if remove {
            let e = self.engine.clone();
            let rid = id.clone();
            let removed = self.rt.block_on(async move { Containers::remove(&e, &rid, true, true).await });
            if result.is_ok() {
                match removed {
                    Ok(()) => {
                        let _ = writeln!(out, "Removing intermediate container {}", short(&id));
                    }
                    Err(e) => tracing::warn!("removing the build container {id}: {}", e.message),
                }
            }
        }
        result.map(Some)
    }

    fn copy(&self, image: &ImageConfig, step: &CopyStep) -> Result<Option<Digest>, BuildError> {
        let layers = self.layers_of(&image.rootfs.diff_ids)?;
        let from = match &step.from {
            berth_build::builder::CopyFrom::Context => None,
            berth_build::builder::CopyFrom::Layers(diff_ids) => Some(self.layers_of(diff_ids)?),
        };
        let made = super::copy::copy_layer(self, &layers, from.as_deref(), step)?;
        Ok(made.map(|l| {
            let d = l.diff_id.clone();
            self.know(&[l]);
            d
        }))
    }

    fn fetch(&self, url: &str) -> Result<berth_build::builder::Fetched, BuildError> {
        let dir = self.engine.cfg.data_root.join("builder").join("downloads");
        std::fs::create_dir_all(&dir).map_err(|e| exec_err(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(crate::names::random_id().map_err(|e| exec_err(e.message))?);
        let mut file = std::fs::File::create(&path).map_err(|e| exec_err(format!("creating {}: {e}", path.display())))?;
        self.downloads.lock().unwrap_or_else(|p| p.into_inner()).push(path.clone());
        let registry = self.engine.registry();
        let (digest, _) = self.rt.block_on(async move { registry.download(url, &mut file, DOWNLOAD_LIMIT).await }).map_err(exec_err)?;
        Ok(berth_build::builder::Fetched { path, digest: digest.to_string() })
    }

    fn is_dir_in(&self, diff_ids: &[Digest], path: &str) -> bool {
        // The top layer that has the path decides (a whiteout there: not a directory). Links
        // on the way are not followed: a history line's word, nothing copied by it.
        let Ok(layers) = self.layers_of(diff_ids) else { return false };
        let rel = path.trim_matches('/');
        for l in layers.iter().rev() {
            let Ok(dir) = self.engine.images.snapshots.dir(&l.chain_id.to_string()) else { continue };
            match std::fs::symlink_metadata(dir.join(rel)) {
                Ok(m) => return m.is_dir(),
                Err(_) => continue,
            }
        }
        false
    }

    fn has_layers(&self, diff_ids: &[Digest]) -> bool {
        self.layers_of(diff_ids).is_ok_and(|ls| ls.last().is_none_or(|l| self.engine.images.has_layer(&l.chain_id)))
    }
}

impl Steps {
    /// Start the container `id`, forward its output, wait for it; its writable layer becomes
    /// a layer on `layers`.
    fn run_container(&self, id: &str, step: &RunStep, layers: &[LayerRecord]) -> Result<Digest, BuildError> {
        let ctr = self.engine.lookup(id).map_err(|e| exec_err(e.message))?;
        let log = ctr.rec().log_path.clone();
        let e = self.engine.clone();
        let cid = id.to_string();
        let waited = self.rt.block_on(async move {
            let wait = e.wait(&cid, WaitCondition::NextExit).await?;
            e.start(&cid).await?;
            Ok::<_, berth_api::ApiError>(wait)
        });
        let mut wait = waited.map_err(|e| exec_err(e.message))?;
        let mut offset = 0;
        // The output as it comes, polled, then the rest once it exited.
        let status = loop {
            let tick = std::time::Duration::from_millis(20);
            match self.rt.block_on(async { tokio::time::timeout(tick, &mut wait).await }) {
                Ok(s) => break s,
                Err(_) => offset = self.forward_log(&log, offset),
            }
        };
        self.forward_log(&log, offset);
        if let Some(err) = status.error.filter(|e| !e.message.is_empty()) {
            return Err(exec_err(err.message));
        }
        if status.status_code != 0 {
            // The legacy builder's words: the command's arguments joined, whatever its form.
            return Err(BuildError::RunFailed { command: step.argv.join(" "), code: status.status_code });
        }
        self.hold_writes();
        let layer = self.engine.images.layer_from_snapshot(id, layers).map_err(|e| {
            self.release_writes();
            exec_err(format!("committing the step's layer: {e}"))
        })?;
        let d = layer.diff_id.clone();
        self.know(&[layer]);
        Ok(d)
    }

    /// The store's write hold for a layer made outside [`Steps::run`] (COPY).
    pub(super) fn hold_for_layer(&self) {
        self.hold_writes();
    }

    pub(super) fn dropped_layer(&self) {
        self.release_writes();
    }
}

impl Cache for Steps {
    fn get(&self, key: &str) -> Option<ImageConfig> {
        let (config, layers) = self.engine.images.cache_get(key)?;
        self.know(&layers);
        Some(config)
    }

    fn put(&self, key: &str, parent: &str, description: &str, image: &ImageConfig, made_layer: bool) {
        let stored = (|| {
            let layers = self.layers_of(&image.rootfs.diff_ids)?;
            let bytes = serde_json::to_vec(image).map_err(exec_err)?;
            self.engine
                .images
                .cache_put(key, &bytes, layers, Some(parent.to_string()), description.to_string(), made_layer)
                .map_err(exec_err)
        })();
        self.release_writes();
        if let Err(e) = stored {
            tracing::warn!("keeping build step {key} in the cache: {e}");
        }
    }
}

/// The cache's records as `docker system df` lists them.
pub(crate) fn cache_entries(engine: &Engine) -> Vec<berth_models::build::BuildCache> {
    let Ok(list) = engine.images.cache_list() else { return Vec::new() };
    let images: std::collections::BTreeSet<String> = engine
        .images
        .list()
        .map(|l| l.iter().flat_map(|(i, _)| i.layers.iter().map(|l| l.chain_id.to_string())).collect())
        .unwrap_or_default();
    let kept = engine.build_sessions.list(&engine.cfg.data_root).into_iter().map(|(key, size, when)| {
        let when = humantime::format_rfc3339_seconds(when).to_string();
        berth_models::build::BuildCache {
            id: key.chars().take(25).collect(),
            typ: "source.local".into(),
            description: "the build context kept between builds".into(),
            size: size as i64,
            created_at: when.clone(),
            last_used_at: Some(when),
            usage_count: 1,
            ..Default::default()
        }
    });
    list.into_iter()
        .map(|(key, rec, size)| {
            let shared = rec.made_layer && rec.layers.last().is_some_and(|l| images.contains(&l.chain_id.to_string()));
            berth_models::build::BuildCache {
                id: key.trim_start_matches("sha256:").chars().take(25).collect(),
                parents: rec.parent.map(|p| vec![p.trim_start_matches("sha256:").chars().take(25).collect()]),
                typ: "regular".into(),
                description: rec.description,
                in_use: false,
                shared,
                size: size as i64,
                created_at: rec.created.clone(),
                last_used_at: Some(rec.created),
                usage_count: 1,
            }
        })
        .chain(kept)
        .collect()
}
