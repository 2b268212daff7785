//! Running a plan: each stage from its base, each step through the dispatcher (metadata) or the
//! executor (RUN, COPY, ADD), each step's result kept in the cache under a key that chains its
//! parent's key with what the step is (its instruction with variables expanded, the content
//! digest of its sources, the ARGs a RUN sees). A step whose key is known is not run again; a
//! fully cached build touches no container and writes no layer. The executor is the engine's
//! (RUN through a shim, layers in the store); this module knows neither.

use std::collections::HashMap;

use berth_store::Digest;
use berth_store::image::{History, ImageConfig};
use sha2::Digest as _;

use crate::context::Context;
use crate::dispatch::StageState;
use crate::instructions::Command;
use crate::parser::{Form, Heredoc, Instruction};
use crate::plan::{Base, Plan};
use crate::shell::Lex;

/// A RUN for the executor: the command and what it runs with, on the stage's image so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    pub argv: Vec<String>,
    /// The image's environment, then the ARGs the RUN sees (not kept in the image).
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    pub network: Option<String>,
    pub heredocs: Vec<Heredoc>,
}

/// A COPY or ADD for the executor: sources already resolved (context paths, or paths in a
/// stage's or image's filesystem) and where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    pub from: CopyFrom,
    pub sources: Vec<String>,
    pub dest: String,
    pub workdir: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    /// ADD: local tars are extracted, URLs fetched.
    pub add: bool,
    pub heredocs: Vec<Heredoc>,
    /// ADD's URLs and what they gave.
    pub urls: Vec<(String, Fetched)>,
}

/// An ADD URL's content, fetched by the executor into a file of the build's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub path: std::path::PathBuf,
    /// `sha256:…` of the content.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFrom {
    Context,
    /// The filesystem of a built stage's (or an image's) layers.
    Layers(Vec<Digest>),
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error("{0}")]
    Dispatch(#[from] crate::dispatch::DispatchError),
    #[error("{0}")]
    Context(#[from] crate::context::ContextError),
    #[error("The command '{command}' returned a non-zero code: {code}")]
    RunFailed { command: String, code: i64 },
    #[error("{0}")]
    Executor(String),
}

/// What the engine does for a build.
pub trait Executor {
    /// The image `name` (pulled if it is missing): its config, layers in `rootfs.diff_ids`.
    fn base(&self, name: &str, platform: Option<&str>) -> Result<(String, ImageConfig), BuildError>;
    /// Run `step` on `image`'s layers; its writable layer becomes a new layer: its diffID, or
    /// None when it changed nothing. Output goes to `out`. A non-zero exit is `RunFailed`.
    fn run(&self, image: &ImageConfig, step: &RunStep, out: &mut dyn std::io::Write) -> Result<Option<Digest>, BuildError>;
    /// Write `step`'s files as a new layer on `image`'s layers: its diffID.
    fn copy(&self, image: &ImageConfig, step: &CopyStep) -> Result<Option<Digest>, BuildError>;
    /// Are these layers (still) in the store? A cache entry whose layers went is a miss.
    fn has_layers(&self, diff_ids: &[Digest]) -> bool;
    /// Fetch ADD's `url` into a file the build keeps until it ends.
    fn fetch(&self, url: &str) -> Result<Fetched, BuildError>;
    /// Is `path` a directory in the filesystem of `layers` (for a history line's `dir:`)?
    fn is_dir_in(&self, layers: &[Digest], path: &str) -> bool;
}

/// Where step results are kept between builds (the engine's, on disk).
pub trait Cache {
    fn get(&self, key: &str) -> Option<ImageConfig>;
    /// Keep `image`, the result of the step `key` (`description`) after the step `parent`;
    /// `made_layer`: its last layer is the step's own.
    fn put(&self, key: &str, parent: &str, description: &str, image: &ImageConfig, made_layer: bool);
}

/// What a build reports as it goes (the API turns these into Docker's stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `Step 2/6 : RUN make` (n counts every instruction of the stages built).
    Step {
        n: usize,
        total: usize,
        text: String,
    },
    UsingCache,
    /// The step's result: its cache key's short form.
    Result(String),
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub build_args: HashMap<String, String>,
    pub no_cache: bool,
    /// `--label`s: a LABEL step at the end of the target stage, as the legacy builder adds.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--cache-from` images' configs: a step matching one's history takes its layer.
    pub cache_from: Vec<ImageConfig>,
}

/// The built image's config and the key of its last step.
pub struct Built {
    pub image: ImageConfig,
    pub key: String,
}

/// The PATH a stage gets when its base image has none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn chain(parent: &str, step: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(parent.as_bytes());
    h.update([0]);
    h.update(step.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn now() -> String {
    humantime_rfc3339(std::time::SystemTime::now())
}

fn humantime_rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // Seconds and nanoseconds as RFC 3339 in UTC, without a date library.
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil(days);
    format!("{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_nanos())
}

/// Days since 1970-01-01 as (year, month, day) (Howard Hinnant's civil_from_days).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A build: its plan, context, the engine's executor and cache, and its options.
pub struct Build<'a> {
    pub plan: &'a Plan,
    pub escape: char,
    pub ctx: &'a Context,
    pub exec: &'a (dyn Executor + Sync),
    pub cache: &'a (dyn Cache + Sync),
    pub opts: &'a Options,
}

/// Run `b`'s plan; `events` hears progress and `out` gets RUN output. Stages that need
/// nothing still being built run at once, each on a thread; the first streams as it goes,
/// the others' reports follow when it is done, in the plan's order (as one after the other).
pub fn build(b: &Build, events: &mut (dyn FnMut(Event) + Send), out: &mut (dyn std::io::Write + Send)) -> Result<Built, BuildError> {
    let plan = b.plan;
    let labels = label_step(&b.opts.labels)?;
    let total: usize = plan.order.iter().map(|i| plan.stages[*i].steps.len() + 1).sum::<usize>() + usize::from(labels.is_some());
    // Each stage's first step number, in the plan's order.
    let mut first = HashMap::new();
    let mut n = 0;
    for &i in &plan.order {
        first.insert(i, n);
        n += plan.stages[i].steps.len() + 1;
    }
    let mut done: HashMap<usize, Built> = HashMap::new();
    let mut pending: Vec<usize> = plan.order.clone();
    while !pending.is_empty() {
        let ready: Vec<usize> = pending.iter().copied().filter(|i| plan.stages[*i].needs.iter().all(|d| done.contains_key(d))).collect();
        let Some((&lead, rest)) = ready.split_first() else {
            return Err(BuildError::Executor("the stages need each other".into()));
        };
        let stage_of = |index: usize, events: &mut dyn FnMut(Event), out: &mut dyn std::io::Write| {
            let extra = if index == plan.target { labels.as_ref() } else { None };
            build_stage(b, index, first[&index], total, extra, &done, events, out)
        };
        let results: Vec<(usize, Result<Built, BuildError>)> = std::thread::scope(|scope| {
            let others: Vec<_> = rest
                .iter()
                .map(|&index| {
                    let stage_of = &stage_of;
                    scope.spawn(move || {
                        let log = Recorded::default();
                        let r = stage_of(index, &mut |e| log.0.borrow_mut().push(Report::Event(e)), &mut RecordedOut(&log.0));
                        (index, r, log)
                    })
                })
                .collect();
            let mut results = vec![(lead, stage_of(lead, events, out))];
            for h in others {
                let (index, r, log) =
                    h.join().unwrap_or_else(|_| (0, Err(BuildError::Executor("a stage's thread panicked".into())), Recorded::default()));
                for report in log.0.into_inner() {
                    match report {
                        Report::Event(e) => events(e),
                        Report::Out(bytes) => {
                            let _ = out.write_all(&bytes);
                        }
                    }
                }
                results.push((index, r));
            }
            results
        });
        for (index, r) in results {
            done.insert(index, r?);
            pending.retain(|p| *p != index);
        }
    }
    done.remove(&plan.target).ok_or_else(|| BuildError::Executor("the target stage was not built".into()))
}

/// What a stage built on a thread of its own reported, kept for later.
enum Report {
    Event(Event),
    Out(Vec<u8>),
}

#[derive(Default)]
struct Recorded(std::cell::RefCell<Vec<Report>>);

struct RecordedOut<'a>(&'a std::cell::RefCell<Vec<Report>>);

impl std::io::Write for RecordedOut<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().push(Report::Out(data.to_vec()));
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Build the stage `index` (its steps numbered from `n0 + 1`, `extra` after them), on the
/// stages in `done`.
#[allow(clippy::too_many_arguments)]
fn build_stage(
    b: &Build,
    index: usize,
    n0: usize,
    total: usize,
    extra: Option<&(Instruction, Command)>,
    done: &HashMap<usize, Built>,
    events: &mut dyn FnMut(Event),
    out: &mut dyn std::io::Write,
) -> Result<Built, BuildError> {
    let (plan, exec) = (b.plan, b.exec);
    let lex = Lex::new(b.escape);
    let stage = &plan.stages[index];
    let mut n = n0 + 1;
    let (base_key, base_image) = match &stage.base {
        Base::Scratch => ("scratch".to_string(), ImageConfig { os: "linux".into(), architecture: "amd64".into(), ..Default::default() }),
        Base::Image(name) => exec.base(name, stage.platform.as_deref())?,
        Base::Stage(s) => {
            let b = done.get(s).ok_or_else(|| BuildError::Executor(format!("stage {s} was not built before stage {index}")))?;
            (b.key.clone(), b.image.clone())
        }
    };
    let from_text = match &stage.base {
        Base::Image(name) => name.clone(),
        Base::Scratch => "scratch".into(),
        Base::Stage(s) => plan.stages[*s].name.clone().unwrap_or_else(|| s.to_string()),
    };
    events(Event::Step { n, total, text: format!("FROM {from_text}") });
    let mut base_image = base_image;
    // The base's ONBUILD triggers run first, and are not passed on.
    let triggers = base_image.config.on_build.take().unwrap_or_default();
    let mut state = StageState::new(base_image);
    // A stage starts with a PATH when its base has none, as Docker's builders do.
    let env = state.image.config.env.get_or_insert_with(Vec::new);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    let mut key = base_key;
    events(Event::Result(short(&key)));
    if !triggers.is_empty() {
        let _ = writeln!(out, "# Executing {} build trigger{}", triggers.len(), if triggers.len() == 1 { "" } else { "s" });
        key = chain(&key, "ONBUILD");
    }
    for t in &triggers {
        let parsed = crate::dispatch::trigger(t).map_err(|e| BuildError::Executor(format!("ONBUILD trigger {t:?}: {e}")))?;
        key = step(b, &mut state, &key, &parsed, &lex, done, Io { events, out })?;
    }
    for s in stage.steps.iter().chain(extra) {
        n += 1;
        events(Event::Step { n, total, text: s.0.original.clone() });
        key = step(b, &mut state, &key, s, &lex, done, Io { events, out })?;
        events(Event::Result(short(&key)));
    }
    Ok(Built { image: state.image, key })
}

/// `--label a=b` as the instruction `LABEL "a"="b"`.
fn label_step(labels: &std::collections::BTreeMap<String, String>) -> Result<Option<(Instruction, Command)>, BuildError> {
    if labels.is_empty() {
        return Ok(None);
    }
    // Quoted only where a word needs it, as the legacy builder's line reads (`LABEL l=v`).
    let quote = |s: &str| {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c)) {
            s.to_string()
        } else {
            serde_json::to_string(s).unwrap_or_default()
        }
    };
    let text = format!("LABEL {}", labels.iter().map(|(k, v)| format!("{}={}", quote(k), quote(v))).collect::<Vec<_>>().join(" "));
    crate::dispatch::trigger(&text).map(Some).map_err(|e| BuildError::Executor(format!("--label: {e}")))
}

fn short(key: &str) -> String {
    key.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Where a step reports.
struct Io<'a> {
    events: &'a mut dyn FnMut(Event),
    out: &'a mut dyn std::io::Write,
}

/// One step of a stage: its result in `state`, its cache key returned.
fn step(
    b: &Build,
    state: &mut StageState,
    parent: &str,
    (inst, cmd): &(Instruction, Command),
    lex: &Lex,
    done: &HashMap<usize, Built>,
    io: Io,
) -> Result<String, BuildError> {
    let (plan, ctx, exec, cache, opts) = (b.plan, b.ctx, b.exec, b.cache, b.opts);
    let (events, out) = (io.events, io.out);
    match cmd {
        Command::Run { form, heredocs, network } => {
            let args = state.run_args(&opts.build_args);
            let argv = state.argv(form);
            let key = chain(parent, &format!("RUN {}\0{:?}\0{:?}", serde_json::to_string(&argv).unwrap_or_default(), args, heredocs));
            if let Some(hit) = cached(cache, exec, &key, opts) {
                events(Event::UsingCache);
                state.image = hit;
                return Ok(key);
            }
            // The legacy builder's history: the shell and the command, or the exec form's JSON.
            let shown = match form {
                Form::Shell(_) => argv.join(" "),
                Form::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
            };
            let by = if args.is_empty() {
                shown
            } else {
                format!("|{} {} {shown}", args.len(), args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "))
            };
            if let Some(hit) = from_images(opts, exec, &state.image, &by) {
                events(Event::UsingCache);
                state.image = hit;
                cache.put(&key, parent, &inst.original, &state.image, true);
                return Ok(key);
            }
            let mut env = state.image.config.env.clone().unwrap_or_default();
            env.extend(args.iter().map(|(k, v)| format!("{k}={v}")));
            let spec = RunStep {
                argv: argv.clone(),
                env,
                user: state.image.config.user.clone(),
                workdir: state.image.config.working_dir.clone(),
                network: network.clone(),
                heredocs: heredocs.clone(),
            };
            let layer = exec.run(&state.image, &spec, out)?;
            let made = layer.is_some();
            record(state, layer, by);
            cache.put(&key, parent, &inst.original, &state.image, made);
            Ok(key)
        }
        Command::Copy(c) | Command::Add(c) => {
            let add = matches!(cmd, Command::Add(_));
            let words = |s: &StageState, w: &str| {
                lex.word(w, s).map_err(|e| crate::dispatch::DispatchError::Expand { keyword: inst.keyword.clone(), source: e })
            };
            let mut sources = Vec::new();
            for s in &c.sources {
                // `<<EOF`, `<<-EOF`, `<<"EOF"`: the heredoc, not a file of the context.
                let heredoc = s.strip_prefix("<<").map(|n| n.trim_start_matches('-').trim_matches(['"', '\'']));
                if !c.heredocs.iter().any(|h| heredoc == Some(h.name.as_str())) {
                    sources.push(words(state, s)?);
                }
            }
            let dest = words(state, &c.dest)?;
            // ADD's URLs: fetched now, their content in the key (as the legacy builder does).
            let is_url = |s: &String| s.starts_with("http://") || s.starts_with("https://");
            let mut urls = Vec::new();
            if sources.iter().any(is_url) {
                if !add {
                    return Err(BuildError::Executor("source can't be a URL for COPY".into()));
                }
                for u in sources.iter().filter(|s| is_url(s)) {
                    urls.push((u.clone(), exec.fetch(u)?));
                }
                sources.retain(|s| !is_url(s));
            }
            let fetched: Vec<&str> = urls.iter().map(|(_, f)| f.digest.as_str()).collect();
            let (from, resolved, digest) = match &c.from {
                None => {
                    let resolved = if sources.is_empty() { Vec::new() } else { ctx.sources(&sources)? };
                    let digest = if resolved.is_empty() && fetched.len() == 1 {
                        fetched[0].to_string()
                    } else if fetched.is_empty() {
                        ctx.digest(&resolved)?
                    } else {
                        chain(&ctx.digest(&resolved)?, &fetched.join(","))
                    };
                    (CopyFrom::Context, resolved, digest)
                }
                Some(f) => {
                    let f = words(state, f)?.to_ascii_lowercase();
                    let stage = match f.parse::<usize>() {
                        Ok(i) => done.get(&i),
                        Err(_) => plan.stages.iter().find(|s| s.name.as_deref() == Some(f.as_str())).and_then(|s| done.get(&s.index)),
                    };
                    let (layers, origin) = match stage {
                        Some(b) => (b.image.rootfs.diff_ids.clone(), b.key.clone()),
                        None => {
                            let (id, img) = exec.base(&f, None)?;
                            (img.rootfs.diff_ids, id)
                        }
                    };
                    // Another stage's files: its key stands for its content.
                    (CopyFrom::Layers(layers), sources.clone(), origin)
                }
            };
            let key =
                chain(parent, &format!("{} {:?} {dest}\0{digest}\0{:?}\0{:?}\0{:?}", inst.keyword, resolved, c.chown, c.chmod, c.heredocs));
            if let Some(hit) = cached(cache, exec, &key, opts) {
                events(Event::UsingCache);
                state.image = hit;
                return Ok(key);
            }
            let what = if add { "ADD" } else { "COPY" };
            // The legacy builder's line: `file:`, `dir:` or `multi:` and the sources' digest.
            let sort = match (&from, resolved.len() + urls.len() + c.heredocs.len()) {
                (_, n) if n > 1 => "multi",
                (CopyFrom::Context, _) if resolved.len() == 1 && ctx.is_dir(&resolved[0]) => "dir",
                (CopyFrom::Layers(layers), _) if resolved.len() == 1 && exec.is_dir_in(layers, &resolved[0]) => "dir",
                _ => "file",
            };
            // No space after it: the legacy builder's line has none (`--chown=7:8dir:…`).
            let chown = c.chown.as_ref().map(|o| format!("--chown={o}")).unwrap_or_default();
            let by = format!("{} {what} {chown}{sort}:{} in {dest} ", state.nop(), digest.trim_start_matches("sha256:"));
            if let Some(hit) = from_images(opts, exec, &state.image, &by) {
                events(Event::UsingCache);
                state.image = hit;
                cache.put(&key, parent, &inst.original, &state.image, true);
                return Ok(key);
            }
            let spec = CopyStep {
                from,
                sources: resolved,
                dest: dest.clone(),
                workdir: state.image.config.working_dir.clone(),
                chown: c.chown.clone(),
                chmod: c.chmod.clone(),
                add,
                heredocs: c.heredocs.clone(),
                urls,
            };
            let layer = exec.copy(&state.image, &spec)?;
            let made = layer.is_some();
            record(state, layer, by);
            cache.put(&key, parent, &inst.original, &state.image, made);
            Ok(key)
        }
        cmd => {
            let h = state.apply(cmd, inst, lex, &opts.build_args, &plan.global)?;
            let key = chain(parent, h.created_by.as_deref().unwrap_or(""));
            // Cached too, with its date: a rebuild then makes the same image (the same ID).
            if let Some(hit) = cached(cache, exec, &key, opts) {
                events(Event::UsingCache);
                state.image = hit;
                return Ok(key);
            }
            if let Some(hit) = from_images(opts, exec, &state.image, h.created_by.as_deref().unwrap_or("")) {
                events(Event::UsingCache);
                let made = hit.rootfs.diff_ids.len() > state.image.rootfs.diff_ids.len();
                state.image = hit;
                cache.put(&key, parent, &inst.original, &state.image, made);
                return Ok(key);
            }
            let mut h = History { created: Some(now()), ..h };
            let mut made = false;
            // WORKDIR makes its directory, in a layer of its own when it was not there.
            if let Command::Workdir(_) = cmd {
                let dir = state.image.config.working_dir.clone();
                let mkdir = CopyStep {
                    from: CopyFrom::Context,
                    sources: Vec::new(),
                    dest: format!("{dir}/"),
                    workdir: dir,
                    chown: None,
                    chmod: None,
                    add: false,
                    heredocs: Vec::new(),
                    urls: Vec::new(),
                };
                if let Some(layer) = exec.copy(&state.image, &mkdir)? {
                    state.image.rootfs.diff_ids.push(layer);
                    h.empty_layer = false;
                    made = true;
                }
            }
            state.image.history.push(h);
            cache.put(&key, parent, &inst.original, &state.image, made);
            Ok(key)
        }
    }
}

/// A `--cache-from` image whose history goes on from `image`'s with a step that wrote
/// `created_by` (the legacy builder's rule: the same history, layer for layer): `image` with
/// that step's history entry and layer.
fn from_images(opts: &Options, exec: &dyn Executor, image: &ImageConfig, created_by: &str) -> Option<ImageConfig> {
    if opts.no_cache {
        return None;
    }
    let (hs, ls) = (&image.history, &image.rootfs.diff_ids);
    for c in &opts.cache_from {
        let k = hs.len();
        let same_so_far = c.history.len() > k
            && c.rootfs.diff_ids.starts_with(ls)
            && c.history[..k].iter().zip(hs).all(|(a, b)| a.created_by == b.created_by && a.empty_layer == b.empty_layer);
        let Some(h) = c.history.get(k).filter(|h| same_so_far && h.created_by.as_deref() == Some(created_by)) else { continue };
        let mut next = image.clone();
        next.history.push(h.clone());
        if !h.empty_layer {
            next.rootfs.diff_ids.push(c.rootfs.diff_ids.get(ls.len())?.clone());
        }
        if exec.has_layers(&next.rootfs.diff_ids) {
            return Some(next);
        }
    }
    None
}

fn cached(cache: &dyn Cache, exec: &dyn Executor, key: &str, opts: &Options) -> Option<ImageConfig> {
    if opts.no_cache {
        return None;
    }
    cache.get(key).filter(|img| exec.has_layers(&img.rootfs.diff_ids))
}

/// A step's layer (if it made one) and its history line.
fn record(state: &mut StageState, layer: Option<Digest>, created_by: String) {
    let empty = layer.is_none();
    if let Some(d) = layer {
        state.image.rootfs.diff_ids.push(d);
    }
    state.image.history.push(History { created: Some(now()), created_by: Some(created_by), empty_layer: empty, ..Default::default() });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        runs: Mutex<Vec<RunStep>>,
        copies: Mutex<Vec<CopyStep>>,
        fail: Option<i64>,
        /// Each RUN takes this long (to see stages overlap).
        slow: Option<std::time::Duration>,
    }

    fn digest_of(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    impl Executor for Fake {
        fn base(&self, name: &str, _: Option<&str>) -> Result<(String, ImageConfig), BuildError> {
            let mut img = ImageConfig::default();
            img.rootfs.diff_ids.push(digest_of(name));
            img.config.cmd = Some(vec!["sh".into()]);
            img.config.env = Some(vec!["PATH=/bin".into()]);
            Ok((format!("sha256:{name}"), img))
        }
        fn run(&self, _: &ImageConfig, step: &RunStep, out: &mut dyn std::io::Write) -> Result<Option<Digest>, BuildError> {
            if let Some(code) = self.fail {
                return Err(BuildError::RunFailed { command: step.argv.join(" "), code });
            }
            if let Some(d) = self.slow {
                std::thread::sleep(d);
            }
            writeln!(out, "ran {}", step.argv.join(" ")).unwrap();
            self.runs.lock().unwrap().push(step.clone());
            Ok(Some(digest_of(&format!("run {:?}", step.argv))))
        }
        fn copy(&self, _: &ImageConfig, step: &CopyStep) -> Result<Option<Digest>, BuildError> {
            if step.sources.is_empty() && step.heredocs.is_empty() {
                // WORKDIR's directory, there already.
                return Ok(None);
            }
            self.copies.lock().unwrap().push(step.clone());
            Ok(Some(digest_of(&format!("copy {:?}", step.sources))))
        }
        fn has_layers(&self, _: &[Digest]) -> bool {
            true
        }
        fn fetch(&self, url: &str) -> Result<Fetched, BuildError> {
            Err(BuildError::Executor(format!("no network here: {url}")))
        }
        fn is_dir_in(&self, _: &[Digest], path: &str) -> bool {
            path.ends_with('/')
        }
    }

    #[derive(Default)]
    struct MemCache(Mutex<HashMap<String, ImageConfig>>);

    impl Cache for MemCache {
        fn get(&self, key: &str) -> Option<ImageConfig> {
            self.0.lock().unwrap().get(key).cloned()
        }
        fn put(&self, key: &str, _: &str, _: &str, image: &ImageConfig, _: bool) {
            self.0.lock().unwrap().insert(key.to_string(), image.clone());
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        ctx_dir: std::path::PathBuf,
    }

    fn setup() -> Setup {
        let d = tempfile::tempdir().unwrap();
        let ctx_dir = d.path().join("ctx");
        std::fs::create_dir_all(ctx_dir.join("src")).unwrap();
        std::fs::write(ctx_dir.join("src/app.txt"), "v1").unwrap();
        Setup { _dir: d, ctx_dir }
    }

    fn go(s: &Setup, src: &str, exec: &Fake, cache: &MemCache, opts: &Options) -> Result<(Built, Vec<Event>, String), BuildError> {
        let df = crate::parser::parse("Dockerfile", src).unwrap();
        let plan = crate::plan::plan("Dockerfile", &df, &opts.build_args, None)?;
        let ctx = Context::open(&s.ctx_dir, crate::ignore::Ignore::default()).unwrap();
        let mut events = Vec::new();
        let mut out = Vec::new();
        let b = Build { plan: &plan, escape: '\\', ctx: &ctx, exec, cache, opts };
        let built = build(&b, &mut |e| events.push(e), &mut out)?;
        Ok((built, events, String::from_utf8(out).unwrap()))
    }

    const DF: &str = "FROM busybox\nARG V=1\nENV A=$V\nWORKDIR /app\nCOPY src/ ./\nRUN echo $A > f\nCMD [\"cat\", \"f\"]\n";

    #[test]
    fn a_build_runs_each_step_and_a_rebuild_hits_the_cache() {
        let s = setup();
        let (exec, cache) = (Fake::default(), MemCache::default());
        let (built, events, out) = go(&s, DF, &exec, &cache, &Options::default()).unwrap();
        assert_eq!(out, "ran /bin/sh -c echo $A > f\n");
        let img = &built.image;
        assert_eq!(img.rootfs.diff_ids.len(), 3, "base, COPY, RUN");
        assert_eq!(img.config.cmd.as_ref().unwrap(), &["cat", "f"]);
        assert_eq!(img.config.working_dir, "/app");
        assert_eq!(img.history.iter().filter(|h| !h.empty_layer).count(), 2);
        let last_run = img.history.iter().rev().find(|h| !h.empty_layer).unwrap();
        assert_eq!(last_run.created_by.as_deref(), Some("|1 V=1 /bin/sh -c echo $A > f"));
        let run = exec.runs.lock().unwrap()[0].clone();
        assert_eq!((run.workdir.as_str(), run.env.clone()), ("/app", vec!["PATH=/bin".to_string(), "A=1".into(), "V=1".into()]));
        assert_eq!(exec.copies.lock().unwrap()[0].sources, ["/src"]);
        assert_eq!(events[0], Event::Step { n: 1, total: 7, text: "FROM busybox".into() });
        // Again: nothing runs, nothing is copied.
        let (again, events, out) = go(&s, DF, &exec, &cache, &Options::default()).unwrap();
        assert_eq!((exec.runs.lock().unwrap().len(), exec.copies.lock().unwrap().len(), out.as_str()), (1, 1, ""));
        assert_eq!(events.iter().filter(|e| **e == Event::UsingCache).count(), 6, "every step after FROM");
        assert_eq!(again.key, built.key);
        assert_eq!(again.image, built.image, "the same config, history dates included: the same image ID");
        // A touched file still hits; a changed one misses from its COPY on.
        let f = s.ctx_dir.join("src/app.txt");
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(std::time::UNIX_EPOCH).unwrap();
        go(&s, DF, &exec, &cache, &Options::default()).unwrap();
        assert_eq!(exec.copies.lock().unwrap().len(), 1);
        std::fs::write(&f, "v2").unwrap();
        go(&s, DF, &exec, &cache, &Options::default()).unwrap();
        assert_eq!((exec.copies.lock().unwrap().len(), exec.runs.lock().unwrap().len()), (2, 2));
        // A different build argument changes the ENV that uses it: everything after misses.
        let opts = Options { build_args: [("V".to_string(), "2".to_string())].into(), ..Default::default() };
        go(&s, DF, &exec, &cache, &opts).unwrap();
        assert_eq!((exec.copies.lock().unwrap().len(), exec.runs.lock().unwrap().len()), (3, 3));
        // One only a RUN sees misses at that RUN.
        let only_run = "FROM busybox\nARG R=1\nRUN echo $R\n";
        go(&s, only_run, &exec, &cache, &Options::default()).unwrap();
        let opts = Options { build_args: [("R".to_string(), "2".to_string())].into(), ..Default::default() };
        go(&s, only_run, &exec, &cache, &opts).unwrap();
        assert_eq!(exec.runs.lock().unwrap().len(), 5);
        assert_eq!(exec.runs.lock().unwrap()[4].env.last().map(String::as_str), Some("R=2"));
        // --no-cache runs everything.
        let opts = Options { no_cache: true, ..Default::default() };
        go(&s, DF, &exec, &cache, &opts).unwrap();
        assert_eq!((exec.copies.lock().unwrap().len(), exec.runs.lock().unwrap().len()), (4, 6));
    }

    #[test]
    fn cache_from_images_stand_in_for_the_steps_they_match() {
        let s = setup();
        let (exec, cache) = (Fake::default(), MemCache::default());
        let (built, _, _) = go(&s, DF, &exec, &cache, &Options::default()).unwrap();
        // An empty cache: the image's history and layers answer for every step.
        let opts = Options { cache_from: vec![built.image.clone()], ..Default::default() };
        let (again, events, _) = go(&s, DF, &exec, &MemCache::default(), &opts).unwrap();
        assert_eq!((exec.runs.lock().unwrap().len(), exec.copies.lock().unwrap().len()), (1, 1), "nothing ran again");
        assert_eq!(events.iter().filter(|e| **e == Event::UsingCache).count(), 6);
        assert_eq!(again.image, built.image, "the same image");
        // From where the Dockerfile differs, steps run.
        let changed = DF.replace("RUN echo $A > f", "RUN echo $A > g");
        go(&s, &changed, &exec, &MemCache::default(), &opts).unwrap();
        assert_eq!((exec.runs.lock().unwrap().len(), exec.copies.lock().unwrap().len()), (2, 1));
    }

    #[test]
    fn independent_stages_run_at_once_and_report_in_order() {
        let s = setup();
        let exec = Fake { slow: Some(std::time::Duration::from_millis(300)), ..Default::default() };
        let src = "FROM busybox AS a\nRUN make a\nFROM busybox AS b\nRUN make b\nFROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n";
        let t = std::time::Instant::now();
        let (_, events, out) = go(&s, src, &exec, &MemCache::default(), &Options::default()).unwrap();
        assert!(t.elapsed() < std::time::Duration::from_millis(550), "a and b overlapped: {:?}", t.elapsed());
        assert_eq!(out, "ran /bin/sh -c make a\nran /bin/sh -c make b\n");
        let steps: Vec<usize> = events.iter().filter_map(|e| if let Event::Step { n, .. } = e { Some(*n) } else { None }).collect();
        assert_eq!(steps, [1, 2, 3, 4, 5, 6, 7], "numbered and reported as one after the other");
    }

    #[test]
    fn stages_copy_from_each_other_and_failures_report_the_command() {
        let s = setup();
        let (exec, cache) = (Fake::default(), MemCache::default());
        let src = "FROM busybox AS build\nRUN make\nFROM alpine\nCOPY --from=build /out /out\n";
        let (built, _, _) = go(&s, src, &exec, &cache, &Options::default()).unwrap();
        let copy = exec.copies.lock().unwrap()[0].clone();
        assert_eq!(copy.from, CopyFrom::Layers(vec![digest_of("busybox"), digest_of("run [\"/bin/sh\", \"-c\", \"make\"]")]));
        assert_eq!(built.image.rootfs.diff_ids[0], digest_of("alpine"));
        let failing = Fake { fail: Some(2), ..Default::default() };
        let e = go(&s, "FROM busybox\nRUN false\n", &failing, &MemCache::default(), &Options::default()).err().unwrap();
        assert_eq!(e.to_string(), "The command '/bin/sh -c false' returned a non-zero code: 2");
        let e = go(&s, "FROM busybox\nCOPY missing /x\n", &exec, &cache, &Options::default()).err().unwrap();
        assert!(e.to_string().contains("file not found in build context"), "{e}");
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(humantime_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5)), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
    }
}
