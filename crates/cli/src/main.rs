//! berth: Docker's commands and flags against berthd (or any Docker Engine API) over
//! `DOCKER_HOST` / `-H`. Output columns and exit codes follow the docker CLI.

mod disk;
mod format;
mod hostflags;
mod http;
mod stats;
mod stream;
mod template;

use std::io::Read;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::http::{Client, query};

#[derive(Parser)]
#[command(name = "berth", version, about = "A Docker-compatible container engine's command line", disable_help_subcommand = true)]
struct Cli {
    /// Daemon socket to connect to (unix:///path or tcp://host:port).
    #[arg(short = 'H', long = "host", global = true)]
    host: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Default)]
struct CreateFlags {
    #[arg(long)]
    name: Option<String>,
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    #[arg(long = "env-file")]
    env_file: Vec<String>,
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    #[arg(long)]
    entrypoint: Option<String>,
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    #[arg(long, short = 'h')]
    hostname: Option<String>,
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    #[arg(long)]
    privileged: bool,
    #[arg(long = "read-only")]
    read_only: bool,
    #[arg(long, alias = "net")]
    network: Option<String>,
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<i64>,
    #[arg(long)]
    ulimit: Vec<String>,
    #[arg(long)]
    sysctl: Vec<String>,
    #[arg(long = "shm-size")]
    shm_size: Option<String>,
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    #[arg(short = 'a', long = "attach")]
    attach: Vec<String>,
    #[arg(short = 'i', long)]
    interactive: bool,
    #[arg(short = 't', long)]
    tty: bool,
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    pid: Option<String>,
    #[arg(long)]
    ipc: Option<String>,
    #[arg(long)]
    uts: Option<String>,
    #[arg(long = "group-add")]
    group_add: Vec<String>,
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    #[arg(long = "log-opt")]
    log_opt: Vec<String>,
    #[command(flatten)]
    host: hostflags::HostFlags,
    /// Print help (`-h` is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
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
    Wait(Lazy<WaitArgs>),
    Pause(Lazy<WaitArgs>),
    Unpause(Lazy<WaitArgs>),
    Stats(Lazy<stats::StatsArgs>),
    Images(Lazy<ImagesArgs>),
    Rmi(Lazy<RmiArgs>),
    Tag(Lazy<TagArgs>),
    History(Lazy<HistoryArgs>),
    Import(Lazy<ImportArgs>),
    Save(Lazy<SaveArgs>),
    Load(Lazy<LoadArgs>),
    Info(Lazy<InfoArgs>),
    Version(Lazy<VersionArgs>),
    // What `container prune`, `image prune` and `system df` run: groups' commands that have no
    // top-level name of their own.
    #[command(hide = true)]
    ContainerPrune(Lazy<disk::PruneArgs>),
    #[command(hide = true)]
    ImagePrune(Lazy<disk::ImagePruneArgs>),
    #[command(hide = true)]
    SystemDf(Lazy<disk::DfArgs>),
    /// Manage containers (`berth container ls`, …: the same commands by Docker's other names).
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage berth.
    #[command(subcommand)]
    System(SystemCmd),
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
    Wait(Lazy<WaitArgs>),
    Pause(Lazy<WaitArgs>),
    Unpause(Lazy<WaitArgs>),
    Stats(Lazy<stats::StatsArgs>),
    /// Remove all stopped containers.
    Prune(Lazy<disk::PruneArgs>),
}

#[derive(Subcommand)]
enum ImageCmd {
    #[command(aliases = ["list"])]
    Ls(Lazy<ImagesArgs>),
    #[command(aliases = ["remove", "rmi"])]
    Rm(Lazy<RmiArgs>),
    Tag(Lazy<TagArgs>),
    History(Lazy<HistoryArgs>),
    Import(Lazy<ImportArgs>),
    Save(Lazy<SaveArgs>),
    Load(Lazy<LoadArgs>),
    Inspect(Lazy<InspectArgs>),
    /// Remove unused images.
    Prune(Lazy<disk::ImagePruneArgs>),
}

#[derive(Subcommand)]
enum SystemCmd {
    Info(Lazy<InfoArgs>),
    /// Show disk usage.
    Df(Lazy<disk::DfArgs>),
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
                ContainerCmd::Wait(a) => Cmd::Wait(a),
                ContainerCmd::Pause(a) => Cmd::Pause(a),
                ContainerCmd::Unpause(a) => Cmd::Unpause(a),
                ContainerCmd::Stats(a) => Cmd::Stats(a),
                ContainerCmd::Prune(a) => Cmd::ContainerPrune(a),
            },
            Cmd::Image(i) => match i {
                ImageCmd::Ls(a) => Cmd::Images(a),
                ImageCmd::Rm(a) => Cmd::Rmi(a),
                ImageCmd::Tag(a) => Cmd::Tag(a),
                ImageCmd::History(a) => Cmd::History(a),
                ImageCmd::Import(a) => Cmd::Import(a),
                ImageCmd::Save(a) => Cmd::Save(a),
                ImageCmd::Load(a) => Cmd::Load(a),
                ImageCmd::Inspect(a) => only("image", a),
                ImageCmd::Prune(a) => Cmd::ImagePrune(a),
            },
            Cmd::System(SystemCmd::Info(a)) => Cmd::Info(a),
            Cmd::System(SystemCmd::Df(a)) => Cmd::SystemDf(a),
            other => other,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[arg(short = 'd', long)]
    detach: bool,
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    #[command(flatten)]
    c: CreateFlags,
}

#[derive(Args)]
struct CreateArgs {
    #[command(flatten)]
    c: CreateFlags,
}

#[derive(Args)]
struct StartArgs {
    #[arg(short = 'a', long)]
    attach: bool,
    #[arg(short = 'i', long)]
    interactive: bool,
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
struct StopArgs {
    #[arg(short = 't', long = "time")]
    time: Option<i64>,
    #[arg(short = 's', long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
struct RestartArgs {
    #[arg(short = 't', long = "time")]
    time: Option<i64>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
struct KillArgs {
    #[arg(short = 's', long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
struct RmArgs {
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(short = 'v', long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
struct PsArgs {
    #[arg(short = 'a', long)]
    all: bool,
    #[arg(short = 'q', long)]
    quiet: bool,
    #[arg(short = 's', long)]
    size: bool,
    #[arg(short = 'n', long = "last")]
    last: Option<i64>,
    #[arg(short = 'l', long)]
    latest: bool,
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
struct LogsArgs {
    #[arg(short = 'f', long)]
    follow: bool,
    #[arg(short = 'n', long)]
    tail: Option<String>,
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    #[arg(short = 't', long)]
    timestamps: bool,
    #[arg(long)]
    details: bool,
    container: String,
}

#[derive(Args)]
struct AttachArgs {
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    container: String,
}

#[derive(Args)]
struct ExecArgs {
    #[arg(short = 'i', long)]
    interactive: bool,
    #[arg(short = 't', long)]
    tty: bool,
    #[arg(short = 'd', long)]
    detach: bool,
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(long)]
    privileged: bool,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Args)]
struct InspectArgs {
    #[arg(short = 'f', long)]
    format: Option<String>,
    #[arg(short = 's', long)]
    size: bool,
    #[arg(long = "type")]
    typ: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
struct TopArgs {
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Args)]
struct RenameArgs {
    container: String,
    name: String,
}

#[derive(Args)]
struct WaitArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
struct ImagesArgs {
    #[arg(short = 'a', long)]
    all: bool,
    #[arg(short = 'q', long)]
    quiet: bool,
    #[arg(long)]
    digests: bool,
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    #[arg(long)]
    format: Option<String>,
    reference: Option<String>,
}

#[derive(Args)]
struct RmiArgs {
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
struct TagArgs {
    source: String,
    target: String,
}

#[derive(Args)]
struct HistoryArgs {
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    #[arg(short = 'q', long)]
    quiet: bool,
    #[arg(long)]
    format: Option<String>,
    image: String,
}

#[derive(Args)]
struct ImportArgs {
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// A Dockerfile instruction to apply to the image's config (repeatable).
    #[arg(short = 'c', long)]
    change: Vec<String>,
    file: String,
    reference: Option<String>,
}

#[derive(Args)]
struct SaveArgs {
    #[arg(short = 'o', long)]
    output: Option<String>,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
struct LoadArgs {
    #[arg(short = 'i', long)]
    input: Option<String>,
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args)]
struct InfoArgs {
    #[arg(short = 'f', long)]
    format: Option<String>,
}

#[derive(Args)]
struct VersionArgs {
    #[arg(short = 'f', long)]
    format: Option<String>,
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

fn kv_list(items: &[String]) -> serde_json::Map<String, Value> {
    items
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), Value::String(v.to_string()))
        })
        .collect()
}

/// Docker's `--env-file`: `KEY=VALUE` lines, `KEY` alone takes the value from here.
fn env_file(path: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("open {path}"))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| if l.contains('=') { Some(l.to_string()) } else { std::env::var(l).ok().map(|v| format!("{l}={v}")) })
        .collect())
}

fn parse_size(s: &str) -> anyhow::Result<i64> {
    i64::try_from(berth_format::parse_size(s)?).with_context(|| format!("invalid size: {s:?}"))
}

fn create_body(c: &CreateFlags) -> anyhow::Result<Value> {
    let mut env = Vec::new();
    for f in &c.env_file {
        env.extend(env_file(f)?);
    }
    for e in &c.env {
        if e.contains('=') {
            env.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            env.push(format!("{e}={v}"));
        }
    }
    let mut ulimits = Vec::new();
    for u in &c.ulimit {
        let (name, limits) = u.split_once('=').with_context(|| format!("invalid ulimit argument: {u}"))?;
        let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
        ulimits.push(json!({"Name": name, "Soft": soft.parse::<i64>()?, "Hard": hard.parse::<i64>()?}));
    }
    let attach_all = c.attach.is_empty();
    let has = |s: &str| c.attach.iter().any(|a| a.eq_ignore_ascii_case(s));
    let log_config = if c.log_opt.is_empty() { Value::Null } else { json!({"Type": "json-file", "Config": kv_list(&c.log_opt)}) };
    // `-v /path` (no host side) is an anonymous volume, as in Docker's CLI.
    let (binds, volumes): (Vec<&String>, Vec<&String>) = c.volume.iter().partition(|v| v.contains(':'));
    let mut body = json!({
        "Image": c.image,
        "Cmd": if c.cmd.is_empty() { Value::Null } else { json!(c.cmd) },
        "Entrypoint": c.entrypoint.as_ref().map(|e| if e.is_empty() { json!([""]) } else { json!([e]) }),
        "Env": env,
        "WorkingDir": c.workdir.clone().unwrap_or_default(),
        "User": c.user.clone().unwrap_or_default(),
        "Labels": kv_list(&c.label),
        "Hostname": c.hostname.clone().unwrap_or_default(),
        "StopSignal": c.stop_signal,
        "StopTimeout": c.stop_timeout,
        "Tty": c.tty,
        "OpenStdin": c.interactive,
        "StdinOnce": c.interactive,
        "AttachStdin": c.interactive,
        "AttachStdout": attach_all || has("stdout"),
        "AttachStderr": attach_all || has("stderr"),
        "HostConfig": {
            "AutoRemove": c.rm,
            "Privileged": c.privileged,
            "ReadonlyRootfs": c.read_only,
            "CapAdd": c.cap_add,
            "CapDrop": c.cap_drop,
            "NetworkMode": c.network.clone().unwrap_or_else(|| "default".into()),
            "PidMode": c.pid.clone().unwrap_or_default(),
            "IpcMode": c.ipc.clone().unwrap_or_default(),
            "UTSMode": c.uts.clone().unwrap_or_default(),
            "Sysctls": kv_list(&c.sysctl),
            "Ulimits": ulimits,
            "ShmSize": c.shm_size.as_deref().map(parse_size).transpose()?.unwrap_or(0),
            "SecurityOpt": c.security_opt,
            "GroupAdd": c.group_add,
            "Binds": binds,
            "LogConfig": log_config,
        }
    });
    if !volumes.is_empty() {
        body["Volumes"] = volumes.iter().map(|v| (v.to_string(), json!({}))).collect::<serde_json::Map<_, _>>().into();
    }
    if let Some(hc) = body["HostConfig"].as_object_mut() {
        c.host.fill(hc)?;
    }
    Ok(body)
}

/// POST /containers/create; Docker's CLI wording and exit code 125 on failure.
fn create(client: &Client, c: &CreateFlags) -> anyhow::Result<String> {
    let body = create_body(c).map_err(|e| Exit(125, format!("berth: {e:#}")))?;
    let path = match &c.name {
        Some(n) => format!("/containers/create?{}", query(&[("name", n.clone())])),
        None => "/containers/create".into(),
    };
    match client.post_json(&path, &body) {
        Ok(v) => {
            for w in v["Warnings"].as_array().into_iter().flatten() {
                eprintln!("WARNING: {}", format::show(w));
            }
            Ok(v["Id"].as_str().unwrap_or_default().to_string())
        }
        Err(e) => {
            let msg = e.to_string();
            if msg.contains("No such image") {
                eprintln!("Unable to find image '{}' locally", c.image);
            }
            Err(Exit(125, format!("berth: {msg}")).into())
        }
    }
}

/// Docker's commands berth's CLI does not have yet: say so plainly rather than "unrecognized".
#[rustfmt::skip]
const NOT_YET: &[&str] = &[
    "build", "builder", "buildx", "checkpoint", "commit", "compose", "config", "context", "cp", "diff", "events", "export",
    "login", "logout", "manifest", "network", "node", "plugin", "port", "pull", "push", "search", "secret", "service",
    "stack", "swarm", "trust", "update", "volume",
];

fn docker_command_not_here(e: &clap::Error) -> bool {
    let Some(clap::error::ContextValue::String(cmd)) = e.get(clap::error::ContextKind::InvalidSubcommand) else { return false };
    if !NOT_YET.contains(&cmd.as_str()) {
        return false;
    }
    eprintln!("berth: '{cmd}' is not implemented yet");
    true
}

/// Docker's exit code for a failed start: 127 not found, 126 cannot run, 125 otherwise.
fn start_error(e: anyhow::Error) -> anyhow::Error {
    let msg = e.to_string();
    let code = if msg.contains("executable file not found") || msg.contains("no such file or directory") {
        127
    } else if msg.contains("permission denied") || msg.contains("is a directory") {
        126
    } else {
        125
    };
    Exit(code, format!("berth: {msg}")).into()
}

fn run(client: &Client, cmd: Cmd) -> anyhow::Result<i32> {
    match cmd {
        group @ (Cmd::Container(_) | Cmd::Image(_) | Cmd::System(_)) => run(client, group.flatten()),
        Cmd::ContainerPrune(Lazy(a)) => disk::container_prune(client, &a),
        Cmd::ImagePrune(Lazy(a)) => disk::image_prune(client, &a),
        Cmd::SystemDf(Lazy(_)) => disk::df(client),
        Cmd::Run(Lazy(RunArgs { detach, detach_keys, c })) => run_container(client, detach, detach_keys, &c),
        Cmd::Create(Lazy(CreateArgs { c })) => {
            println!("{}", create(client, &c)?);
            Ok(0)
        }
        Cmd::Start(Lazy(StartArgs { attach, interactive, detach_keys, containers })) => {
            if attach || interactive {
                let id = &containers[0];
                let info = client.get(&format!("/containers/{id}/json"))?;
                let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
                let stdin = interactive && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
                let conn = stream::attach(client, id, stdin, detach_keys.as_deref())?;
                let waiter = stream::Waiter::start(client, id, "next-exit")?;
                client.post(&format!("/containers/{id}/start")).map_err(start_error)?;
                // Detached: the container runs on, and the docker CLI says nothing.
                if stream::relay(client, conn, tty, stdin, id, tty)? {
                    return Ok(0);
                }
                return waiter.code();
            }
            each(&containers, true, |c| client.post(&format!("/containers/{c}/start")).map(|_| ()))
        }
        Cmd::Stop(Lazy(StopArgs { time, signal, containers })) => {
            let mut q = Vec::new();
            if let Some(t) = time {
                q.push(("t", t.to_string()));
            }
            if let Some(s) = signal {
                q.push(("signal", s));
            }
            each_parallel(&containers, |c| client.post(&format!("/containers/{c}/stop?{}", query(&q))).map(|_| ()))
        }
        Cmd::Restart(Lazy(RestartArgs { time, containers })) => {
            let q = time.map(|t| format!("?t={t}")).unwrap_or_default();
            each(&containers, true, |c| client.post(&format!("/containers/{c}/restart{q}")).map(|_| ()))
        }
        Cmd::Kill(Lazy(KillArgs { signal, containers })) => each_parallel(&containers, |c| {
            client.post(&format!("/containers/{c}/kill?{}", query(&[("signal", signal.clone())]))).map(|_| ())
        }),
        Cmd::Rm(Lazy(RmArgs { force, volumes, containers })) => each_parallel(&containers, |c| {
            client.delete(&format!("/containers/{c}?force={}&v={}", u8::from(force), u8::from(volumes))).map(|_| ())
        }),
        Cmd::Ps(Lazy(PsArgs { all, quiet, size, last, latest, no_trunc, filter, format })) => {
            ps(client, all, quiet, size, last, latest, no_trunc, &filter, format.as_deref())
        }
        Cmd::Logs(Lazy(LogsArgs { follow, tail, since, until, timestamps, details, container })) => {
            let info = client.get(&format!("/containers/{container}/json"))?;
            let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
            let mut q = vec![("stdout", "1".to_string()), ("stderr", "1".to_string())];
            if follow {
                q.push(("follow", "1".into()));
            }
            if timestamps {
                q.push(("timestamps", "1".into()));
            }
            if details {
                q.push(("details", "1".into()));
            }
            if let Some(t) = tail {
                q.push(("tail", t));
            }
            for (k, v) in [("since", since), ("until", until)] {
                if let Some(v) = v {
                    q.push((k, stream::parse_time(&v)?));
                }
            }
            let resp = client.send("GET", &format!("/containers/{container}/logs?{}", query(&q)), None, false)?.ok()?;
            stream::copy_output(resp.body, tty)?;
            Ok(0)
        }
        Cmd::Attach(Lazy(AttachArgs { no_stdin, detach_keys, container })) => {
            let info = client.get(&format!("/containers/{container}/json"))?;
            if !info["State"]["Running"].as_bool().unwrap_or(false) {
                bail!("You cannot attach to a stopped container, start it first");
            }
            let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
            let stdin = !no_stdin && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
            let waiter = stream::Waiter::start(client, &container, "next-exit")?;
            let conn = stream::attach(client, &container, stdin, detach_keys.as_deref())?;
            if stream::relay(client, conn, tty, stdin, &container, tty)? {
                // What the docker CLI answers to a detach from `attach` (not from `run` or `start`).
                return Err(Exit(1, "read escape sequence".into()).into());
            }
            waiter.code()
        }
        Cmd::Exec(Lazy(ExecArgs { interactive, tty, detach, env, workdir, user, privileged, container, cmd })) => {
            let body = json!({
                "AttachStdin": interactive && !detach, "AttachStdout": !detach, "AttachStderr": !detach,
                "Tty": tty, "Env": env, "Cmd": cmd, "WorkingDir": workdir.unwrap_or_default(),
                "User": user.unwrap_or_default(), "Privileged": privileged,
            });
            let v = client.post_json(&format!("/containers/{container}/exec"), &body).map_err(|e| Exit(1, e.to_string()))?;
            let id = v["Id"].as_str().unwrap_or_default().to_string();
            if detach {
                client.post_json(&format!("/exec/{id}/start"), &json!({"Detach": true, "Tty": tty}))?;
                return Ok(0);
            }
            let data = serde_json::to_vec(&json!({"Detach": false, "Tty": tty}))?;
            let resp = client.send_json("POST", &format!("/exec/{id}/start"), &data, true)?.ok()?;
            stream::relay_exec(client, resp, tty, interactive, &id)?;
            let info = client.get(&format!("/exec/{id}/json"))?;
            Ok(info["ExitCode"].as_i64().unwrap_or(0) as i32)
        }
        Cmd::Inspect(Lazy(InspectArgs { format, size, typ, names })) => inspect(client, format.as_deref(), size, typ.as_deref(), &names),
        Cmd::Top(Lazy(TopArgs { container, args })) => {
            let q = if args.is_empty() { String::new() } else { format!("?{}", query(&[("ps_args", args.join(" "))])) };
            let v = client.get(&format!("/containers/{container}/top{q}"))?;
            let mut rows = vec![v["Titles"].as_array().into_iter().flatten().map(format::show).collect::<Vec<_>>()];
            for p in v["Processes"].as_array().into_iter().flatten() {
                rows.push(p.as_array().into_iter().flatten().map(format::show).collect());
            }
            print!("{}", format::table_min(&rows, 20));
            Ok(0)
        }
        Cmd::Rename(Lazy(RenameArgs { container, name })) => {
            client.post(&format!("/containers/{container}/rename?{}", query(&[("name", name)])))?;
            Ok(0)
        }
        Cmd::Stats(Lazy(a)) => stats::stats(client, &a),
        Cmd::Pause(Lazy(WaitArgs { containers })) => {
            each(&containers, true, |c| client.post(&format!("/containers/{c}/pause")).map(|_| ()))
        }
        Cmd::Unpause(Lazy(WaitArgs { containers })) => {
            each(&containers, true, |c| client.post(&format!("/containers/{c}/unpause")).map(|_| ()))
        }
        Cmd::Wait(Lazy(WaitArgs { containers })) => each(&containers, false, |c| {
            let v = client.send("POST", &format!("/containers/{c}/wait"), None, false)?.json()?;
            println!("{}", v["StatusCode"]);
            Ok(())
        }),
        Cmd::Images(Lazy(ImagesArgs { all, quiet, digests, no_trunc, filter, format, reference })) => {
            images(client, all, quiet, digests, no_trunc, filter, format.as_deref(), reference)
        }
        Cmd::Rmi(Lazy(RmiArgs { force, images })) => each(&images, false, |i| {
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
        }),
        Cmd::Tag(Lazy(TagArgs { source, target })) => {
            let (repo, tag) = split_tag(&target);
            client.post(&format!("/images/{source}/tag?{}", query(&[("repo", repo), ("tag", tag)])))?;
            Ok(0)
        }
        Cmd::History(Lazy(HistoryArgs { no_trunc, quiet, format, image })) => {
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
        Cmd::Import(Lazy(ImportArgs { message, change, file, reference })) => {
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
            let resp =
                client.send("POST", &format!("/images/create?{}", query(&q)), Some(("application/x-tar", &mut input)), false)?.ok()?;
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
        Cmd::Save(Lazy(SaveArgs { output, images })) => {
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
        Cmd::Load(Lazy(LoadArgs { input, quiet })) => {
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
        Cmd::Info(Lazy(InfoArgs { format })) => {
            let v = client.get("/info")?;
            match format {
                Some(f) => println!("{}", format::render(&f, &v)?),
                None => {
                    for k in [
                        "Containers",
                        "ContainersRunning",
                        "ContainersPaused",
                        "ContainersStopped",
                        "Images",
                        "ServerVersion",
                        "Driver",
                        "LoggingDriver",
                        "CgroupDriver",
                        "CgroupVersion",
                        "KernelVersion",
                        "OperatingSystem",
                        "OSType",
                        "Architecture",
                        "NCPU",
                        "MemTotal",
                        "DockerRootDir",
                        "Name",
                    ] {
                        println!(" {k}: {}", format::show(&v[k]));
                    }
                }
            }
            Ok(0)
        }
        Cmd::Version(Lazy(VersionArgs { format })) => {
            let server = client.get("/version")?;
            let v = json!({
                "Client": {"Version": env!("CARGO_PKG_VERSION"), "ApiVersion": http::API_VERSION, "Os": "linux", "Arch": server["Arch"]},
                "Server": server,
            });
            match format {
                Some(f) => println!("{}", format::render(&f, &v)?),
                None => {
                    println!("Client:\n Version:\t{}\n API version:\t{}\n", env!("CARGO_PKG_VERSION"), http::API_VERSION);
                    println!(
                        "Server:\n Version:\t{}\n API version:\t{} (minimum version {})\n Kernel:\t{}",
                        format::show(&server["Version"]),
                        format::show(&server["ApiVersion"]),
                        format::show(&server["MinAPIVersion"]),
                        format::show(&server["KernelVersion"])
                    );
                }
            }
            Ok(0)
        }
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

fn split_tag(r: &str) -> (String, String) {
    let slash = r.rfind('/').unwrap_or(0);
    match r[slash..].rfind(':') {
        Some(i) => (r[..slash + i].to_string(), r[slash + i + 1..].to_string()),
        None => (r.to_string(), "latest".to_string()),
    }
}

fn run_container(client: &Client, detach: bool, detach_keys: Option<String>, c: &CreateFlags) -> anyhow::Result<i32> {
    let id = create(client, c)?;
    if detach {
        client.post(&format!("/containers/{id}/start")).map_err(start_error)?;
        println!("{id}");
        return Ok(0);
    }
    let stdin = c.interactive;
    let conn = stream::attach(client, &id, stdin, detach_keys.as_deref())?;
    let waiter = stream::Waiter::start(client, &id, if c.rm { "removed" } else { "next-exit" })?;
    client.post(&format!("/containers/{id}/start")).map_err(start_error)?;
    if stream::relay(client, conn, c.tty, stdin, &id, c.tty)? {
        return Ok(0);
    }
    waiter.code()
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
    human_size_digits(n, 3)
}

/// Go's `%.*g` of a size in decimal units: `digits` significant digits, no trailing zeros.
fn human_size_digits(n: u64, digits: usize) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let int_digits = if v < 1.0 { 1 } else { v.log10().floor() as usize + 1 };
    let s = format!("{v:.*}", digits.saturating_sub(int_digits));
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    format!("{s}{}", units[i])
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

/// The fields of `GET /containers/json` that `ps` shows; the rest of each entry is skipped unparsed.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PsEntry {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    state: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
    size_rw: Option<u64>,
    size_root_fs: Option<u64>,
}

#[allow(clippy::too_many_arguments)]
fn ps(
    client: &Client,
    all: bool,
    quiet: bool,
    size: bool,
    last: Option<i64>,
    latest: bool,
    no_trunc: bool,
    filter: &[String],
    format: Option<&str>,
) -> anyhow::Result<i32> {
    let mut q = vec![("all", u8::from(all).to_string()), ("size", u8::from(size).to_string())];
    if let Some(n) = last.filter(|n| *n > 0) {
        q.push(("limit", n.to_string()));
    }
    if latest {
        q.push(("limit", "1".into()));
    }
    if !filter.is_empty() {
        q.push(("filters", filters_json(filter)));
    }
    let list: Vec<PsEntry> = client.get_as(&format!("/containers/json?{}", query(&q)))?;
    if quiet {
        for c in &list {
            println!("{}", trunc_id(&c.id, no_trunc));
        }
        return Ok(0);
    }
    let items: Vec<Value> = list
        .into_iter()
        .map(|c| {
            let mut cmd = c.command;
            if !no_trunc && cmd.chars().count() > 20 {
                cmd = cmd.chars().take(19).collect::<String>() + "…";
            }
            let names: Vec<&str> = c.names.iter().map(|n| n.trim_start_matches('/')).collect();
            let size_text = if size {
                format!("{} (virtual {})", human_size(c.size_rw.unwrap_or(0)), human_size(c.size_root_fs.unwrap_or(0)))
            } else {
                String::new()
            };
            json!({
                "ID": trunc_id(&c.id, no_trunc),
                "Image": c.image,
                "Command": format!("\"{cmd}\""),
                "CreatedAt": utc_time(c.created, false),
                "RunningFor": ago(c.created),
                "Ports": "",
                "Status": c.status,
                "State": c.state,
                "Size": size_text,
                "Names": names.join(","),
                "Labels": c.labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                "Mounts": "",
                "Networks": "",
            })
        })
        .collect();
    let template = match format {
        Some(f) => f.to_string(),
        None if size => "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}".into(),
        None => "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}".into(),
    };
    print!("{}", format::format_list(&template, &items, "CONTAINER ID")?);
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn images(
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

fn inspect(client: &Client, format: Option<&str>, size: bool, typ: Option<&str>, names: &[String]) -> anyhow::Result<i32> {
    let mut found = Vec::new();
    let mut failed = false;
    for n in names {
        let container = || client.get(&format!("/containers/{n}/json?size={}", u8::from(size)));
        let image = || client.get(&format!("/images/{n}/json"));
        // One kind asked for: the daemon's own error; either kind: Docker's "No such object".
        let v = match typ {
            Some("container") => container(),
            Some("image") => image(),
            _ => container().or_else(|_| image()).map_err(|_| anyhow::anyhow!("Error: No such object: {n}")),
        };
        match v {
            Ok(v) => found.push(v),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    match format {
        Some(f) => {
            for v in &found {
                println!("{}", format::render(f, v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(found))?),
    }
    Ok(i32::from(failed))
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
        assert_eq!(human_size_digits(1_984_230, 4), "1.984MB", "system df's precision");
        assert_eq!(human_size(0), "0B");
        assert_eq!(utc_time(1_767_323_045, false), "2026-01-02 03:04:05 +0000 UTC");
        assert_eq!(utc_time(1_767_323_045, true), "2026-01-02T03:04:05Z");
        assert_eq!(utc_time(0, true), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400, true), "2000-02-29T00:00:00Z");
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        let c = CreateFlags { image: "busybox".into(), entrypoint: Some(String::new()), rm: true, ..Default::default() };
        let b = create_body(&c).unwrap();
        assert_eq!(b["Entrypoint"], json!([""]));
        assert_eq!(b["HostConfig"]["AutoRemove"], true);
        assert_eq!(filters_json(&["status=running".into(), "status=exited".into()]), r#"{"status":["running","exited"]}"#);
    }
}
