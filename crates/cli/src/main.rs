//! berth: Docker's commands and flags against berthd (or any Docker Engine API) over
//! `DOCKER_HOST` / `-H`. Output columns and exit codes follow the docker CLI.

mod build;
mod containers;
mod cp;
mod disk;
mod events;
mod format;
mod hostflags;
mod http;
mod images;
mod networks;
mod registry;
mod stats;
mod stream;
mod system;
mod template;
mod volumes;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::containers::*;
use crate::http::Client;
use crate::images::*;
use crate::system::*;

#[derive(Parser)]
#[command(name = "berth", version, about = "A Docker-compatible container engine's command line", disable_help_subcommand = true)]
struct Cli {
    /// Daemon socket to connect to (unix:///path or tcp://host:port).
    #[arg(short = 'H', long = "host", global = true)]
    host: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// A subcommand's arguments, added to clap's command only when that subcommand is the one being
/// parsed. Built eagerly, every subcommand's arguments cost ~0.8 M instructions on each invocation:
/// half of what `berth run` spends in user space before it talks to berthd.
struct Lazy<T>(T);

impl<T: Args> Args for Lazy<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args_for_update)
    }
}

impl<T: clap::FromArgMatches> clap::FromArgMatches for Lazy<T> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(m).map(Lazy)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Create and run a container.
    #[command(disable_help_flag = true)]
    Run(Lazy<RunArgs>),
    #[command(disable_help_flag = true)]
    Create(Lazy<CreateArgs>),
    Start(Lazy<StartArgs>),
    Stop(Lazy<StopArgs>),
    Restart(Lazy<RestartArgs>),
    Kill(Lazy<KillArgs>),
    Rm(Lazy<RmArgs>),
    Ps(Lazy<PsArgs>),
    Logs(Lazy<LogsArgs>),
    Attach(Lazy<AttachArgs>),
    Exec(Lazy<ExecArgs>),
    Inspect(Lazy<InspectArgs>),
    Top(Lazy<TopArgs>),
    Rename(Lazy<RenameArgs>),
    /// Update the resource limits and restart policy of containers.
    Update(Lazy<containers::UpdateArgs>),
    Wait(Lazy<WaitArgs>),
    Pause(Lazy<WaitArgs>),
    Unpause(Lazy<WaitArgs>),
    Stats(Lazy<stats::StatsArgs>),
    Images(Lazy<ImagesArgs>),
    Rmi(Lazy<RmiArgs>),
    Tag(Lazy<TagArgs>),
    History(Lazy<HistoryArgs>),
    Import(Lazy<ImportArgs>),
    /// Build an image from a Dockerfile.
    Build(Lazy<build::BuildArgs>),
    Save(Lazy<SaveArgs>),
    Load(Lazy<LoadArgs>),
    /// Download an image from a registry.
    Pull(Lazy<registry::PullArgs>),
    /// Upload an image to a registry.
    Push(Lazy<registry::PushArgs>),
    /// Log in to a registry.
    Login(Lazy<registry::LoginArgs>),
    /// Log out from a registry.
    Logout(Lazy<registry::LogoutArgs>),
    Info(Lazy<InfoArgs>),
    Version(Lazy<VersionArgs>),
    /// berthd's events as they happen.
    Events(Lazy<events::EventsArgs>),
    /// Print the shell completion script (bash, zsh, fish, elvish or powershell).
    Completion {
        shell: clap_complete::Shell,
    },
    /// Write man pages for berth and each of its commands into a directory (for packaging).
    #[command(hide = true)]
    Man {
        dir: std::path::PathBuf,
    },
    // What `container prune`, `image prune` and `system df` run: groups' commands that have no
    // top-level name of their own.
    #[command(hide = true)]
    ContainerPrune(Lazy<disk::PruneArgs>),
    #[command(hide = true)]
    ImagePrune(Lazy<disk::ImagePruneArgs>),
    #[command(hide = true)]
    SystemDf(Lazy<disk::DfArgs>),
    #[command(hide = true)]
    SystemPrune(disk::SystemPruneArgs),
    /// Manage containers (`berth container ls`, …: the same commands by Docker's other names).
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage berth.
    #[command(subcommand)]
    System(SystemCmd),
    /// Manage networks.
    #[command(subcommand)]
    Network(networks::NetworkCmd),
    /// List a container's published ports.
    Port(networks::PortArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volumes::VolumeCmd),
    /// Manage builds.
    #[command(subcommand)]
    Builder(BuilderCmd),
    /// What a container changed in its filesystem.
    Diff(containers::DiffArgs),
    /// Copy files and folders between a container and the local filesystem.
    Cp(cp::CpArgs),
    /// A container's filesystem as a tar archive.
    Export(cp::ExportArgs),
    /// A new image from a container's changes.
    Commit(containers::CommitArgs),
}

#[derive(Subcommand)]
enum ContainerCmd {
    #[command(disable_help_flag = true)]
    Run(Lazy<RunArgs>),
    #[command(disable_help_flag = true)]
    Create(Lazy<CreateArgs>),
    Start(Lazy<StartArgs>),
    Stop(Lazy<StopArgs>),
    Restart(Lazy<RestartArgs>),
    Kill(Lazy<KillArgs>),
    #[command(alias = "remove")]
    Rm(Lazy<RmArgs>),
    #[command(aliases = ["list", "ps"])]
    Ls(Lazy<PsArgs>),
    Logs(Lazy<LogsArgs>),
    Attach(Lazy<AttachArgs>),
    Exec(Lazy<ExecArgs>),
    Inspect(Lazy<InspectArgs>),
    Top(Lazy<TopArgs>),
    Rename(Lazy<RenameArgs>),
    /// Update the resource limits and restart policy of containers.
    Update(Lazy<containers::UpdateArgs>),
    Wait(Lazy<WaitArgs>),
    Pause(Lazy<WaitArgs>),
    Unpause(Lazy<WaitArgs>),
    Stats(Lazy<stats::StatsArgs>),
    /// Remove all stopped containers.
    Prune(Lazy<disk::PruneArgs>),
    Cp(cp::CpArgs),
    Export(cp::ExportArgs),
    Diff(containers::DiffArgs),
    Commit(containers::CommitArgs),
}

#[derive(Subcommand)]
enum BuilderCmd {
    /// Remove the build cache.
    Prune(disk::BuilderPruneArgs),
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Build an image from a Dockerfile.
    Build(Lazy<build::BuildArgs>),
    #[command(aliases = ["list"])]
    Ls(Lazy<ImagesArgs>),
    #[command(aliases = ["remove", "rmi"])]
    Rm(Lazy<RmiArgs>),
    Tag(Lazy<TagArgs>),
    History(Lazy<HistoryArgs>),
    Import(Lazy<ImportArgs>),
    Save(Lazy<SaveArgs>),
    Load(Lazy<LoadArgs>),
    Pull(Lazy<registry::PullArgs>),
    Push(Lazy<registry::PushArgs>),
    Inspect(Lazy<InspectArgs>),
    /// Remove unused images.
    Prune(Lazy<disk::ImagePruneArgs>),
}

#[derive(Subcommand)]
enum SystemCmd {
    Info(Lazy<InfoArgs>),
    /// Show disk usage.
    Df(Lazy<disk::DfArgs>),
    /// Remove unused data.
    Prune(disk::SystemPruneArgs),
    /// berthd's events as they happen.
    Events(Lazy<events::EventsArgs>),
}

impl Cmd {
    /// `container X` and `image X` are `X` (`inspect` limited to that kind of object).
    fn flatten(self) -> Cmd {
        let only = |kind: &str, Lazy(mut a): Lazy<InspectArgs>| {
            a.typ = Some(kind.to_string());
            Cmd::Inspect(Lazy(a))
        };
        match self {
            Cmd::Container(c) => match c {
                ContainerCmd::Run(a) => Cmd::Run(a),
                ContainerCmd::Create(a) => Cmd::Create(a),
                ContainerCmd::Start(a) => Cmd::Start(a),
                ContainerCmd::Stop(a) => Cmd::Stop(a),
                ContainerCmd::Restart(a) => Cmd::Restart(a),
                ContainerCmd::Kill(a) => Cmd::Kill(a),
                ContainerCmd::Rm(a) => Cmd::Rm(a),
                ContainerCmd::Ls(a) => Cmd::Ps(a),
                ContainerCmd::Logs(a) => Cmd::Logs(a),
                ContainerCmd::Attach(a) => Cmd::Attach(a),
                ContainerCmd::Exec(a) => Cmd::Exec(a),
                ContainerCmd::Inspect(a) => only("container", a),
                ContainerCmd::Top(a) => Cmd::Top(a),
                ContainerCmd::Rename(a) => Cmd::Rename(a),
                ContainerCmd::Update(a) => Cmd::Update(a),
                ContainerCmd::Wait(a) => Cmd::Wait(a),
                ContainerCmd::Pause(a) => Cmd::Pause(a),
                ContainerCmd::Unpause(a) => Cmd::Unpause(a),
                ContainerCmd::Stats(a) => Cmd::Stats(a),
                ContainerCmd::Prune(a) => Cmd::ContainerPrune(a),
                ContainerCmd::Cp(a) => Cmd::Cp(a),
                ContainerCmd::Export(a) => Cmd::Export(a),
                ContainerCmd::Diff(a) => Cmd::Diff(a),
                ContainerCmd::Commit(a) => Cmd::Commit(a),
            },
            Cmd::Image(i) => match i {
                ImageCmd::Ls(a) => Cmd::Images(a),
                ImageCmd::Rm(a) => Cmd::Rmi(a),
                ImageCmd::Tag(a) => Cmd::Tag(a),
                ImageCmd::History(a) => Cmd::History(a),
                ImageCmd::Import(a) => Cmd::Import(a),
                ImageCmd::Build(a) => Cmd::Build(a),
                ImageCmd::Save(a) => Cmd::Save(a),
                ImageCmd::Load(a) => Cmd::Load(a),
                ImageCmd::Pull(a) => Cmd::Pull(a),
                ImageCmd::Push(a) => Cmd::Push(a),
                ImageCmd::Inspect(a) => only("image", a),
                ImageCmd::Prune(a) => Cmd::ImagePrune(a),
            },
            Cmd::System(SystemCmd::Info(a)) => Cmd::Info(a),
            Cmd::System(SystemCmd::Df(a)) => Cmd::SystemDf(a),
            Cmd::System(SystemCmd::Prune(a)) => Cmd::SystemPrune(a),
            Cmd::System(SystemCmd::Events(a)) => Cmd::Events(a),
            other => other,
        }
    }
}

/// A failure with the exit code the docker CLI would use.
#[derive(Debug)]
struct Exit(i32, String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidSubcommand && docker_command_not_here(&e) => {
            std::process::exit(125);
        }
        Err(e) => {
            // --help and --version print and succeed; a usage error is 125, as Docker's CLI answers.
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    // Neither needs berthd.
    match cli.cmd {
        Cmd::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "berth", &mut script);
            // A reader that stops early (`| head`) is no error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            std::process::exit(0);
        }
        Cmd::Man { dir } => std::process::exit(match man_pages(&dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e:#}");
                1
            }
        }),
        _ => {}
    }
    let client = Client::new(cli.host);
    let result = run(&client, cli.cmd);
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            if let Some(Exit(code, msg)) = e.downcast_ref::<Exit>() {
                if !msg.is_empty() {
                    eprintln!("{msg}");
                }
                std::process::exit(*code);
            }
            eprintln!("{e:#}");
            std::process::exit(1);
        }
    }
}

/// `berth.1`, and `berth-<command>.1` for each visible command (`berth-container-ls.1` …).
fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    fn write(cmd: &clap::Command, name: &str, dir: &std::path::Path) -> anyhow::Result<()> {
        // A one-shot run: the few names clap keeps as &'static str are leaked.
        let cmd = cmd.clone().name(&*Box::leak(name.to_string().into_boxed_str()));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(sub, &format!("{name}-{}", sub.get_name()), dir)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    write(&cmd, "berth", dir)
}

fn parse_size(s: &str) -> anyhow::Result<i64> {
    i64::try_from(berth_format::parse_size(s)?).with_context(|| format!("invalid size: {s:?}"))
}

/// Docker's commands berth's CLI does not have yet: say so plainly rather than "unrecognized".
#[rustfmt::skip]
const NOT_YET: &[&str] = &[
    "buildx", "checkpoint", "compose", "config", "context",
    "manifest", "node", "plugin", "search", "secret", "service",
    "stack", "swarm", "trust",
];

fn docker_command_not_here(e: &clap::Error) -> bool {
    let Some(clap::error::ContextValue::String(cmd)) = e.get(clap::error::ContextKind::InvalidSubcommand) else { return false };
    if !NOT_YET.contains(&cmd.as_str()) {
        return false;
    }
    eprintln!("berth: '{cmd}' is not implemented yet");
    true
}

fn run(client: &Client, cmd: Cmd) -> anyhow::Result<i32> {
    match cmd {
        group @ (Cmd::Container(_) | Cmd::Image(_) | Cmd::System(_)) => run(client, group.flatten()),
        Cmd::ContainerPrune(Lazy(a)) => disk::container_prune(client, &a),
        Cmd::ImagePrune(Lazy(a)) => disk::image_prune(client, &a),
        Cmd::SystemDf(Lazy(_)) => disk::df(client),
        Cmd::SystemPrune(a) => disk::system_prune(client, &a),
        Cmd::Network(c) => networks::run(client, c),
        Cmd::Port(a) => networks::port(client, a),
        Cmd::Volume(c) => volumes::run(client, c),
        Cmd::Diff(a) => containers::diff(client, a),
        Cmd::Cp(a) => cp::cp(client, a),
        Cmd::Export(a) => cp::export(client, a),
        Cmd::Commit(a) => containers::commit(client, a),
        Cmd::Run(Lazy(a)) => containers::run(client, a),
        Cmd::Create(Lazy(a)) => containers::cmd_create(client, a),
        Cmd::Start(Lazy(a)) => containers::start(client, a),
        Cmd::Stop(Lazy(a)) => containers::stop(client, a),
        Cmd::Restart(Lazy(a)) => containers::restart(client, a),
        Cmd::Kill(Lazy(a)) => containers::kill(client, a),
        Cmd::Rm(Lazy(a)) => containers::rm(client, a),
        Cmd::Ps(Lazy(a)) => containers::cmd_ps(client, a),
        Cmd::Logs(Lazy(a)) => containers::logs(client, a),
        Cmd::Attach(Lazy(a)) => containers::attach(client, a),
        Cmd::Exec(Lazy(a)) => containers::exec(client, a),
        Cmd::Inspect(Lazy(a)) => system::cmd_inspect(client, a),
        Cmd::Top(Lazy(a)) => containers::top(client, a),
        Cmd::Rename(Lazy(a)) => containers::rename(client, a),
        Cmd::Update(Lazy(a)) => containers::update(client, a),
        Cmd::Stats(Lazy(a)) => stats::stats(client, &a),
        Cmd::Pause(Lazy(a)) => containers::pause(client, a),
        Cmd::Unpause(Lazy(a)) => containers::unpause(client, a),
        Cmd::Wait(Lazy(a)) => containers::wait(client, a),
        Cmd::Images(Lazy(a)) => images::cmd_images(client, a),
        Cmd::Rmi(Lazy(a)) => images::rmi(client, a),
        Cmd::Tag(Lazy(a)) => images::tag(client, a),
        Cmd::History(Lazy(a)) => images::history(client, a),
        Cmd::Import(Lazy(a)) => images::import(client, a),
        Cmd::Build(Lazy(a)) => build::build(client, a),
        Cmd::Builder(BuilderCmd::Prune(a)) => disk::builder_prune(client, &a),
        Cmd::Save(Lazy(a)) => images::save(client, a),
        Cmd::Load(Lazy(a)) => images::load(client, a),
        Cmd::Pull(Lazy(a)) => registry::pull(client, a),
        Cmd::Push(Lazy(a)) => registry::push(client, a),
        Cmd::Login(Lazy(a)) => registry::login(client, a),
        Cmd::Logout(Lazy(a)) => registry::logout(a),
        Cmd::Info(Lazy(a)) => system::info(client, a),
        Cmd::Events(Lazy(a)) => events::events(client, a),
        // Handled before a client is made.
        Cmd::Completion { .. } | Cmd::Man { .. } => Ok(0),
        Cmd::Version(Lazy(a)) => system::version(client, a),
    }
}

/// Apply `f` to each name, printing the name on success like Docker; exit 1 if any failed.
fn each(names: &[String], echo: bool, mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<i32> {
    let mut failed = false;
    for n in names {
        match f(n) {
            Ok(()) if echo => println!("{n}"),
            Ok(()) => {}
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// How many containers `stop`, `kill` and `rm` handle at once (Docker's CLI does the same).
const PARALLEL: usize = 50;

/// `f` for each name, PARALLEL at a time; each name or error printed in the order given.
fn each_parallel(names: &[String], f: impl Fn(&str) -> anyhow::Result<()> + Sync) -> anyhow::Result<i32> {
    let mut failed = false;
    in_parallel(names, PARALLEL, f, |n, r| match r {
        Ok(()) => println!("{n}"),
        Err(e) => {
            eprintln!("{e:#}");
            failed = true;
        }
    });
    Ok(i32::from(failed))
}

/// `f` for each name, `width` at a time (a new one starts as soon as one ends, as in Docker's
/// CLI, rather than in batches that wait for their slowest); `done` hears each result in the
/// order of `names`, as soon as it and all before it are in.
fn in_parallel<R: Send>(names: &[String], width: usize, f: impl Fn(&str) -> R + Sync, mut done: impl FnMut(&str, R)) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, R)>();
    std::thread::scope(|s| {
        for _ in 0..width.min(names.len()) {
            let (tx, next, f) = (tx.clone(), &next, &f);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(n) = names.get(i) else { break };
                    if tx.send((i, f(n))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut waiting = std::collections::BTreeMap::new();
        let mut shown = 0;
        for (i, r) in rx {
            waiting.insert(i, r);
            while let Some(r) = waiting.remove(&shown) {
                done(&names[shown], r);
                shown += 1;
            }
        }
    });
}

fn trunc_id(id: &str, no_trunc: bool) -> String {
    let id = id.strip_prefix("sha256:").filter(|_| !no_trunc).unwrap_or(id);
    if no_trunc { id.to_string() } else { id.chars().take(12).collect() }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn human_duration(s: i64) -> String {
    berth_format::human_duration(s.max(0) as u64)
}

fn ago(t: i64) -> String {
    format!("{} ago", human_duration(now() - t))
}

/// A Unix time as the docker CLI prints `CreatedAt` (in UTC): Go's `Time.String()`
/// (`2026-01-02 15:04:05 +0000 UTC`) for containers and images, RFC 3339 for history.
fn utc_time(t: i64, rfc3339: bool) -> String {
    // humantime writes times from the epoch to the end of year 9999; a server's stranger
    // times are shown at those bounds.
    let t = t.clamp(0, 253_402_300_799) as u64;
    let s = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t)).to_string();
    if rfc3339 { s } else { s.replacen('T', " ", 1).replacen('Z', " +0000 UTC", 1) }
}

/// Docker's sizes: decimal units, three significant digits (`1.98MB`).
fn human_size(n: u64) -> String {
    berth_format::human_size(n, 3)
}

fn filters_json(filter: &[String]) -> String {
    let mut m: serde_json::Map<String, Value> = serde_json::Map::new();
    for f in filter {
        let (k, v) = f.split_once('=').unwrap_or((f, ""));
        if let Some(a) = m.entry(k.to_string()).or_insert_with(|| json!([])).as_array_mut() {
            a.push(json!(v));
        }
    }
    Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_work_keeps_its_width_and_reports_in_order() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let names: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let mut seen = Vec::new();
        in_parallel(
            &names,
            4,
            |n| {
                let now = running.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                // Later names finish first where they can: the report keeps the given order.
                std::thread::sleep(std::time::Duration::from_millis(if n.parse::<u64>().unwrap() % 4 == 0 { 12 } else { 2 }));
                running.fetch_sub(1, SeqCst);
                n.len()
            },
            |n, len| seen.push((n.to_string(), len)),
        );
        assert_eq!(seen, names.iter().map(|n| (n.clone(), n.len())).collect::<Vec<_>>());
        assert!(most.load(SeqCst) <= 4, "at most 4 at once, saw {}", most.load(SeqCst));
        assert!(most.load(SeqCst) >= 2, "they do run at once");
        in_parallel(&[], 4, |_| (), |_, _| panic!("nothing to do"));
    }

    #[test]
    fn tags_sizes_and_flags() {
        assert_eq!(split_tag("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(split_tag("localhost:5000/a/b:v1"), ("localhost:5000/a/b".into(), "v1".into()));
        assert_eq!(split_tag("localhost:5000/a"), ("localhost:5000/a".into(), "latest".into()));
        assert_eq!(human_size(2_130_000), "2.13MB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(1_984_230), "1.98MB");
        assert_eq!(berth_format::human_size(1_984_230, 4), "1.984MB", "system df's precision");
        assert_eq!(human_size(0), "0B");
        assert_eq!(utc_time(1_767_323_045, false), "2026-01-02 03:04:05 +0000 UTC");
        assert_eq!(utc_time(1_767_323_045, true), "2026-01-02T03:04:05Z");
        assert_eq!(utc_time(0, true), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400, true), "2000-02-29T00:00:00Z");
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        let c = CreateFlags { image: "busybox".into(), entrypoint: Some(String::new()), rm: true, ..Default::default() };
        let b = create_body(&c).unwrap();
        assert_eq!(b.config.entrypoint, Some(berth_models::containers::StrSlice::Many(vec![String::new()])));
        assert_eq!(b.host_config.and_then(|h| h.auto_remove), Some(true));
        assert_eq!(filters_json(&["status=running".into(), "status=exited".into()]), r#"{"status":["running","exited"]}"#);
    }
}
