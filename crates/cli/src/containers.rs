//! Container commands: run, create, start, stop, restart, kill, rm, ps, logs, attach, exec, top,
//! rename, pause, unpause, wait.

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::http::{Client, query};
use crate::*;
use berth_models::containers::{ContainerConfig, ContainerSummary, CreateBody, HealthConfig, HostConfig, LogConfig, StrSlice, Ulimit};

#[derive(Args, Clone, Default)]
pub(crate) struct CreateFlags {
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Pull the image: `missing` (when it is not here), `always`, `never`.
    #[arg(long, default_value = "missing")]
    pub(crate) pull: String,
    /// The platform to pull for a multi-platform image (`os/arch[/variant]`).
    #[arg(long)]
    pub(crate) platform: Option<String>,
    #[arg(short = 'e', long = "env")]
    pub(crate) env: Vec<String>,
    #[arg(long = "env-file")]
    pub(crate) env_file: Vec<String>,
    #[arg(short = 'w', long = "workdir")]
    pub(crate) workdir: Option<String>,
    #[arg(short = 'u', long = "user")]
    pub(crate) user: Option<String>,
    #[arg(long)]
    pub(crate) entrypoint: Option<String>,
    #[arg(short = 'l', long = "label")]
    pub(crate) label: Vec<String>,
    #[arg(long, short = 'h')]
    pub(crate) hostname: Option<String>,
    #[arg(long = "cap-add")]
    pub(crate) cap_add: Vec<String>,
    #[arg(long = "cap-drop")]
    pub(crate) cap_drop: Vec<String>,
    #[arg(long)]
    pub(crate) privileged: bool,
    #[arg(long = "read-only")]
    pub(crate) read_only: bool,
    #[arg(long, alias = "net")]
    pub(crate) network: Option<String>,
    /// The container's IPv4 address on its (user) network.
    #[arg(long)]
    pub(crate) ip: Option<String>,
    #[arg(long = "network-alias", alias = "net-alias")]
    pub(crate) network_alias: Vec<String>,
    #[arg(long = "volumes-from")]
    pub(crate) volumes_from: Vec<String>,
    #[arg(long = "stop-signal")]
    pub(crate) stop_signal: Option<String>,
    #[arg(long = "stop-timeout")]
    pub(crate) stop_timeout: Option<i64>,
    #[arg(long)]
    pub(crate) ulimit: Vec<String>,
    #[arg(long)]
    pub(crate) sysctl: Vec<String>,
    #[arg(long = "shm-size")]
    pub(crate) shm_size: Option<String>,
    #[arg(long = "security-opt")]
    pub(crate) security_opt: Vec<String>,
    #[arg(short = 'a', long = "attach")]
    pub(crate) attach: Vec<String>,
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    #[arg(short = 't', long)]
    pub(crate) tty: bool,
    #[arg(long)]
    pub(crate) rm: bool,
    #[arg(long)]
    pub(crate) pid: Option<String>,
    #[arg(long)]
    pub(crate) ipc: Option<String>,
    #[arg(long)]
    pub(crate) uts: Option<String>,
    #[arg(long = "group-add")]
    pub(crate) group_add: Vec<String>,
    #[arg(short = 'v', long = "volume")]
    pub(crate) volume: Vec<String>,
    #[arg(long = "log-opt")]
    pub(crate) log_opt: Vec<String>,
    /// Command to run to check health (through the shell).
    #[arg(long = "health-cmd")]
    pub(crate) health_cmd: Option<String>,
    /// Time between running the check (`ms|s|m|h`).
    #[arg(long = "health-interval")]
    pub(crate) health_interval: Option<String>,
    /// Maximum time to allow one check to run.
    #[arg(long = "health-timeout")]
    pub(crate) health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long = "health-retries")]
    pub(crate) health_retries: Option<i64>,
    /// Start period for the container to initialize before failures count.
    #[arg(long = "health-start-period")]
    pub(crate) health_start_period: Option<String>,
    /// Time between running the check during the start period.
    #[arg(long = "health-start-interval")]
    pub(crate) health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long = "no-healthcheck")]
    pub(crate) no_healthcheck: bool,
    #[command(flatten)]
    pub(crate) host: hostflags::HostFlags,
    /// Print help (`-h` is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub(crate) help: Option<bool>,
    pub(crate) image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) cmd: Vec<String>,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,
    #[arg(long = "detach-keys")]
    pub(crate) detach_keys: Option<String>,
    #[command(flatten)]
    pub(crate) c: CreateFlags,
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    pub(crate) c: CreateFlags,
}

#[derive(Args)]
pub(crate) struct StartArgs {
    #[arg(short = 'a', long)]
    pub(crate) attach: bool,
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    #[arg(long = "detach-keys")]
    pub(crate) detach_keys: Option<String>,
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

#[derive(Args)]
pub(crate) struct StopArgs {
    #[arg(short = 't', long = "time")]
    pub(crate) time: Option<i64>,
    #[arg(short = 's', long)]
    pub(crate) signal: Option<String>,
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

#[derive(Args)]
pub(crate) struct RestartArgs {
    #[arg(short = 't', long = "time")]
    pub(crate) time: Option<i64>,
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

#[derive(Args)]
pub(crate) struct KillArgs {
    #[arg(short = 's', long, default_value = "KILL")]
    pub(crate) signal: String,
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

#[derive(Args)]
pub(crate) struct RmArgs {
    #[arg(short = 'f', long)]
    pub(crate) force: bool,
    #[arg(short = 'v', long)]
    pub(crate) volumes: bool,
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

#[derive(Args)]
pub(crate) struct PsArgs {
    #[arg(short = 'a', long)]
    pub(crate) all: bool,
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
    #[arg(short = 's', long)]
    pub(crate) size: bool,
    #[arg(short = 'n', long = "last")]
    pub(crate) last: Option<i64>,
    #[arg(short = 'l', long)]
    pub(crate) latest: bool,
    #[arg(long = "no-trunc")]
    pub(crate) no_trunc: bool,
    #[arg(short = 'f', long = "filter")]
    pub(crate) filter: Vec<String>,
    #[arg(long)]
    pub(crate) format: Option<String>,
}

#[derive(Args)]
pub(crate) struct LogsArgs {
    #[arg(short = 'f', long)]
    pub(crate) follow: bool,
    #[arg(short = 'n', long)]
    pub(crate) tail: Option<String>,
    #[arg(long)]
    pub(crate) since: Option<String>,
    #[arg(long)]
    pub(crate) until: Option<String>,
    #[arg(short = 't', long)]
    pub(crate) timestamps: bool,
    #[arg(long)]
    pub(crate) details: bool,
    pub(crate) container: String,
}

#[derive(Args)]
pub(crate) struct AttachArgs {
    #[arg(long = "no-stdin")]
    pub(crate) no_stdin: bool,
    #[arg(long = "detach-keys")]
    pub(crate) detach_keys: Option<String>,
    pub(crate) container: String,
}

#[derive(Args)]
pub(crate) struct ExecArgs {
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    #[arg(short = 't', long)]
    pub(crate) tty: bool,
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,
    #[arg(short = 'e', long = "env")]
    pub(crate) env: Vec<String>,
    #[arg(short = 'w', long = "workdir")]
    pub(crate) workdir: Option<String>,
    #[arg(short = 'u', long)]
    pub(crate) user: Option<String>,
    #[arg(long)]
    pub(crate) privileged: bool,
    pub(crate) container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub(crate) cmd: Vec<String>,
}

#[derive(Args)]
pub(crate) struct TopArgs {
    pub(crate) container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) args: Vec<String>,
}

#[derive(Args)]
pub(crate) struct RenameArgs {
    pub(crate) container: String,
    pub(crate) name: String,
}

#[derive(Args)]
pub(crate) struct WaitArgs {
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

pub(crate) fn kv_list(items: &[String]) -> std::collections::BTreeMap<String, String> {
    items
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Docker's `--env-file`: `KEY=VALUE` lines, `KEY` alone takes the value from here.
pub(crate) fn env_file(path: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("open {path}"))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| if l.contains('=') { Some(l.to_string()) } else { std::env::var(l).ok().map(|v| format!("{l}={v}")) })
        .collect())
}

/// The `--health-*` flags as the docker CLI turns them into `Config.Healthcheck`.
fn healthcheck(c: &CreateFlags) -> anyhow::Result<Option<HealthConfig>> {
    let dur = |flag: &str, v: &Option<String>| -> anyhow::Result<i64> {
        let Some(s) = v else { return Ok(0) };
        let ns = berth_format::go_duration(s)
            .with_context(|| format!("invalid argument {s:?} for \"--{flag}\" flag: time: invalid duration {s:?}"))?;
        if ns < 0 {
            bail!("--{flag} cannot be negative");
        }
        Ok(ns)
    };
    let interval = dur("health-interval", &c.health_interval)?;
    let timeout = dur("health-timeout", &c.health_timeout)?;
    let start_period = dur("health-start-period", &c.health_start_period)?;
    let start_interval = dur("health-start-interval", &c.health_start_interval)?;
    let retries = c.health_retries.unwrap_or(0);
    let any = c.health_cmd.as_deref().is_some_and(|s| !s.is_empty())
        || interval != 0
        || timeout != 0
        || start_period != 0
        || start_interval != 0
        || retries != 0;
    if c.no_healthcheck {
        if any {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        return Ok(Some(HealthConfig { test: Some(vec!["NONE".into()]), ..Default::default() }));
    }
    if !any {
        return Ok(None);
    }
    if retries < 0 {
        bail!("--health-retries cannot be negative");
    }
    Ok(Some(HealthConfig {
        test: c.health_cmd.clone().filter(|s| !s.is_empty()).map(|cmd| vec!["CMD-SHELL".into(), cmd]),
        interval: Some(interval),
        timeout: Some(timeout),
        retries: Some(retries),
        start_period: Some(start_period),
        start_interval: Some(start_interval),
    }))
}

pub(crate) fn create_body(c: &CreateFlags) -> anyhow::Result<CreateBody> {
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
        ulimits.push(Ulimit { name: name.to_string(), soft: soft.parse()?, hard: hard.parse()? });
    }
    let attach_all = c.attach.is_empty();
    let has = |s: &str| c.attach.iter().any(|a| a.eq_ignore_ascii_case(s));
    // `-v /path` (no host side) is an anonymous volume, as in Docker's CLI.
    let (binds, volumes): (Vec<&String>, Vec<&String>) = c.volume.iter().partition(|v| v.contains(':'));
    let config = ContainerConfig {
        image: Some(c.image.clone()),
        cmd: (!c.cmd.is_empty()).then(|| StrSlice::Many(c.cmd.clone())),
        // `--entrypoint ""` is `[""]`: no entrypoint, not the image's.
        entrypoint: c.entrypoint.as_ref().map(|e| StrSlice::Many(vec![e.clone()])),
        env: Some(env),
        working_dir: Some(c.workdir.clone().unwrap_or_default()),
        user: Some(c.user.clone().unwrap_or_default()),
        labels: Some(kv_list(&c.label)),
        hostname: Some(c.hostname.clone().unwrap_or_default()),
        stop_signal: c.stop_signal.clone(),
        stop_timeout: c.stop_timeout,
        tty: Some(c.tty),
        open_stdin: Some(c.interactive),
        stdin_once: Some(c.interactive),
        attach_stdin: Some(c.interactive),
        attach_stdout: Some(attach_all || has("stdout")),
        attach_stderr: Some(attach_all || has("stderr")),
        volumes: (!volumes.is_empty()).then(|| volumes.iter().map(|v| (v.to_string(), json!({}))).collect()),
        healthcheck: healthcheck(c)?,
        ..Default::default()
    };
    let mut hc = HostConfig {
        auto_remove: Some(c.rm),
        privileged: Some(c.privileged),
        readonly_rootfs: Some(c.read_only),
        cap_add: Some(c.cap_add.clone()),
        cap_drop: Some(c.cap_drop.clone()),
        network_mode: Some(c.network.clone().unwrap_or_else(|| "default".into())),
        pid_mode: Some(c.pid.clone().unwrap_or_default()),
        ipc_mode: Some(c.ipc.clone().unwrap_or_default()),
        uts_mode: Some(c.uts.clone().unwrap_or_default()),
        sysctls: Some(kv_list(&c.sysctl)),
        ulimits: Some(ulimits),
        shm_size: Some(c.shm_size.as_deref().map(parse_size).transpose()?.unwrap_or(0)),
        security_opt: Some(c.security_opt.clone()),
        group_add: Some(c.group_add.clone()),
        binds: Some(binds.into_iter().cloned().collect()),
        volumes_from: (!c.volumes_from.is_empty()).then(|| c.volumes_from.clone()),
        log_config: (!c.log_opt.is_empty()).then(|| LogConfig { typ: "json-file".into(), config: Some(kv_list(&c.log_opt)) }),
        ..Default::default()
    };
    c.host.fill(&mut hc)?;
    // An address or aliases go with the network they are on, as the docker CLI sends them.
    let networking_config = (c.ip.is_some() || !c.network_alias.is_empty()).then(|| {
        let net = c.network.clone().unwrap_or_else(|| "default".into());
        let ep = berth_models::networks::EndpointSettings {
            ipam_config: c.ip.clone().map(|ip| berth_models::networks::EndpointIpamConfig { ipv4_address: Some(ip), ..Default::default() }),
            aliases: (!c.network_alias.is_empty()).then(|| c.network_alias.clone()),
            ..Default::default()
        };
        berth_models::networks::NetworkingConfig { endpoints_config: Some([(net, ep)].into_iter().collect()) }
    });
    Ok(CreateBody { config, host_config: Some(hc), networking_config })
}

/// POST /containers/create; Docker's CLI wording and exit code 125 on failure. The image is
/// pulled first with `--pull always`, and when it is missing with `--pull missing` (progress
/// on stderr, as the docker CLI shows it).
pub(crate) fn create(client: &Client, c: &CreateFlags) -> anyhow::Result<String> {
    if !["missing", "always", "never"].contains(&c.pull.as_str()) {
        return Err(
            Exit(125, format!("berth: invalid pull option: '{}': must be one of \"always\", \"missing\" or \"never\"", c.pull)).into()
        );
    }
    let body = create_body(c).map_err(|e| Exit(125, format!("berth: {e:#}")))?;
    let path = match &c.name {
        Some(n) => format!("/containers/create?{}", query(&[("name", n.clone())])),
        None => "/containers/create".into(),
    };
    let pull = |client: &Client| -> anyhow::Result<()> {
        let mut err = std::io::stderr().lock();
        crate::registry::pull_image(client, &c.image, c.platform.as_deref(), &mut err, crate::stream::is_tty(2), false)
            .map(|_| ())
            .map_err(|e| Exit(125, format!("berth: {e:#}")).into())
    };
    if c.pull == "always" {
        pull(client)?;
    }
    let body = serde_json::to_value(&body)?;
    let mut pulled = false;
    loop {
        match client.post_json(&path, &body) {
            Ok(v) => {
                for w in v["Warnings"].as_array().into_iter().flatten() {
                    eprintln!("WARNING: {}", format::show(w));
                }
                return Ok(v["Id"].as_str().unwrap_or_default().to_string());
            }
            Err(e) => {
                let msg = e.to_string();
                if msg.contains("No such image") && !pulled && c.pull == "missing" {
                    eprintln!("Unable to find image '{}' locally", c.image);
                    pull(client)?;
                    pulled = true;
                    continue;
                }
                return Err(Exit(125, format!("berth: {msg}")).into());
            }
        }
    }
}

/// Docker's exit code for a failed start: 127 not found, 126 cannot run, 125 otherwise.
pub(crate) fn start_error(e: anyhow::Error) -> anyhow::Error {
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

/// `berth run`.
pub(crate) fn run(client: &Client, a: RunArgs) -> anyhow::Result<i32> {
    let RunArgs { detach, detach_keys, c } = a;
    run_container(client, detach, detach_keys, &c)
}

/// `berth create`.
pub(crate) fn cmd_create(client: &Client, a: CreateArgs) -> anyhow::Result<i32> {
    let CreateArgs { c } = a;
    println!("{}", create(client, &c)?);
    Ok(0)
}

/// `berth start`.
pub(crate) fn start(client: &Client, a: StartArgs) -> anyhow::Result<i32> {
    let StartArgs { attach, interactive, detach_keys, containers } = a;
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

/// `berth stop`.
pub(crate) fn stop(client: &Client, a: StopArgs) -> anyhow::Result<i32> {
    let StopArgs { time, signal, containers } = a;
    let mut q = Vec::new();
    if let Some(t) = time {
        q.push(("t", t.to_string()));
    }
    if let Some(s) = signal {
        q.push(("signal", s));
    }
    each_parallel(&containers, |c| client.post(&format!("/containers/{c}/stop?{}", query(&q))).map(|_| ()))
}

/// `berth restart`.
pub(crate) fn restart(client: &Client, a: RestartArgs) -> anyhow::Result<i32> {
    let RestartArgs { time, containers } = a;
    let q = time.map(|t| format!("?t={t}")).unwrap_or_default();
    each(&containers, true, |c| client.post(&format!("/containers/{c}/restart{q}")).map(|_| ()))
}

/// `berth kill`.
pub(crate) fn kill(client: &Client, a: KillArgs) -> anyhow::Result<i32> {
    let KillArgs { signal, containers } = a;
    each_parallel(&containers, |c| client.post(&format!("/containers/{c}/kill?{}", query(&[("signal", signal.clone())]))).map(|_| ()))
}

/// `berth rm`.
pub(crate) fn rm(client: &Client, a: RmArgs) -> anyhow::Result<i32> {
    let RmArgs { force, volumes, containers } = a;
    each_parallel(&containers, |c| client.delete(&format!("/containers/{c}?force={}&v={}", u8::from(force), u8::from(volumes))).map(|_| ()))
}

/// `berth ps`.
pub(crate) fn cmd_ps(client: &Client, a: PsArgs) -> anyhow::Result<i32> {
    let PsArgs { all, quiet, size, last, latest, no_trunc, filter, format } = a;
    ps(client, all, quiet, size, last, latest, no_trunc, &filter, format.as_deref())
}

/// `berth logs`.
pub(crate) fn logs(client: &Client, a: LogsArgs) -> anyhow::Result<i32> {
    let LogsArgs { follow, tail, since, until, timestamps, details, container } = a;
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

/// `berth attach`.
pub(crate) fn attach(client: &Client, a: AttachArgs) -> anyhow::Result<i32> {
    let AttachArgs { no_stdin, detach_keys, container } = a;
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

/// `berth exec`.
pub(crate) fn exec(client: &Client, a: ExecArgs) -> anyhow::Result<i32> {
    let ExecArgs { interactive, tty, detach, env, workdir, user, privileged, container, cmd } = a;
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

/// `berth top`.
pub(crate) fn top(client: &Client, a: TopArgs) -> anyhow::Result<i32> {
    let TopArgs { container, args } = a;
    let q = if args.is_empty() { String::new() } else { format!("?{}", query(&[("ps_args", args.join(" "))])) };
    let v = client.get(&format!("/containers/{container}/top{q}"))?;
    let mut rows = vec![v["Titles"].as_array().into_iter().flatten().map(format::show).collect::<Vec<_>>()];
    for p in v["Processes"].as_array().into_iter().flatten() {
        rows.push(p.as_array().into_iter().flatten().map(format::show).collect());
    }
    print!("{}", format::table_min(&rows, 20));
    Ok(0)
}

/// `berth rename`.
pub(crate) fn rename(client: &Client, a: RenameArgs) -> anyhow::Result<i32> {
    let RenameArgs { container, name } = a;
    client.post(&format!("/containers/{container}/rename?{}", query(&[("name", name)])))?;
    Ok(0)
}

/// `berth pause`.
pub(crate) fn pause(client: &Client, a: WaitArgs) -> anyhow::Result<i32> {
    let WaitArgs { containers } = a;
    each(&containers, true, |c| client.post(&format!("/containers/{c}/pause")).map(|_| ()))
}

/// `berth unpause`.
pub(crate) fn unpause(client: &Client, a: WaitArgs) -> anyhow::Result<i32> {
    let WaitArgs { containers } = a;
    each(&containers, true, |c| client.post(&format!("/containers/{c}/unpause")).map(|_| ()))
}

/// `berth wait`.
pub(crate) fn wait(client: &Client, a: WaitArgs) -> anyhow::Result<i32> {
    let WaitArgs { containers } = a;
    each(&containers, false, |c| {
        let v = client.send("POST", &format!("/containers/{c}/wait"), None, false)?.json()?;
        println!("{}", v["StatusCode"]);
        Ok(())
    })
}

pub(crate) fn run_container(client: &Client, detach: bool, detach_keys: Option<String>, c: &CreateFlags) -> anyhow::Result<i32> {
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

#[allow(clippy::too_many_arguments)]
pub(crate) fn ps(
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
    let list: Vec<ContainerSummary> = client.get_as(&format!("/containers/json?{}", query(&q)))?;
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
                "Ports": ports_text(&c.ports),
                "Status": c.status,
                "State": c.state,
                "Size": size_text,
                "Names": names.join(","),
                "Labels": c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                "Mounts": "",
                "Networks": c.network_settings.networks.keys().cloned().collect::<Vec<_>>().join(","),
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

/// `ps`'s PORTS: `0.0.0.0:8080->80/tcp, 90/tcp`, as Docker's.
fn ports_text(ports: &[berth_models::containers::Port]) -> String {
    ports
        .iter()
        .map(|p| match (p.ip.as_deref(), p.public_port) {
            (Some(ip), Some(public)) => format!("{ip}:{public}->{}/{}", p.private_port, p.typ),
            _ => format!("{}/{}", p.private_port, p.typ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Args)]
pub(crate) struct DiffArgs {
    pub(crate) container: String,
}

/// `berth diff`: `A /path`, `C /path`, `D /path`, as Docker prints them.
pub(crate) fn diff(client: &Client, a: DiffArgs) -> anyhow::Result<i32> {
    let v = client.get(&format!("/containers/{}/changes", a.container))?;
    for c in v.as_array().into_iter().flatten() {
        let kind = match c["Kind"].as_u64() {
            Some(1) => "A",
            Some(2) => "D",
            _ => "C",
        };
        println!("{kind} {}", c["Path"].as_str().unwrap_or_default());
    }
    Ok(0)
}

#[derive(Args)]
pub(crate) struct CommitArgs {
    #[arg(short = 'a', long)]
    author: Option<String>,
    #[arg(short = 'm', long)]
    message: Option<String>,
    #[arg(short = 'c', long = "change")]
    change: Vec<String>,
    /// Pause the container while committing (Docker's default).
    #[arg(short = 'p', long, default_value = "true", action = clap::ArgAction::Set)]
    pause: bool,
    container: String,
    reference: Option<String>,
}

/// `berth commit CONTAINER [REPOSITORY[:TAG]]`.
pub(crate) fn commit(client: &Client, a: CommitArgs) -> anyhow::Result<i32> {
    let mut q = vec![
        ("container", a.container.clone()),
        ("comment", a.message.unwrap_or_default()),
        ("author", a.author.unwrap_or_default()),
        ("pause", a.pause.to_string()),
    ];
    if let Some(r) = &a.reference {
        // The last colon after the last slash separates the tag (a registry's port is not one).
        let (repo, tag) = match r.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
            _ => (r.clone(), String::new()),
        };
        q.push(("repo", repo));
        q.push(("tag", tag));
    }
    for c in a.change {
        q.push(("changes", c));
    }
    let v = client.post_json(&format!("/commit?{}", query(&q)), &json!({}))?;
    println!("{}", v["Id"].as_str().unwrap_or_default());
    Ok(0)
}

/// Update the resource limits and restart policy of one or more containers.
#[derive(Args)]
pub(crate) struct UpdateArgs {
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    #[arg(long = "cpu-period")]
    cpu_period: Option<i64>,
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    #[arg(long = "cpu-rt-period")]
    cpu_rt_period: Option<i64>,
    #[arg(long = "cpu-rt-runtime")]
    cpu_rt_runtime: Option<i64>,
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<i64>,
    #[arg(long)]
    cpus: Option<String>,
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    #[arg(short = 'm', long)]
    memory: Option<String>,
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<String>,
    /// A size, or -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    #[arg(long = "kernel-memory")]
    kernel_memory: Option<String>,
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    #[arg(long)]
    restart: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// The update's body, as the docker CLI sends it (a zero changes nothing).
fn update_body(a: &UpdateArgs) -> anyhow::Result<HostConfig> {
    let size = |s: &Option<String>| -> anyhow::Result<Option<i64>> {
        match s.as_deref() {
            None => Ok(None),
            Some("-1") => Ok(Some(-1)),
            Some(v) => Ok(Some(parse_size(v)?)),
        }
    };
    let nano_cpus = a.cpus.as_deref().map(crate::hostflags::cpus).transpose()?;
    let restart_policy = a.restart.as_deref().map(crate::hostflags::restart_policy).transpose()?;
    Ok(HostConfig {
        blkio_weight: a.blkio_weight,
        cpu_period: a.cpu_period,
        cpu_quota: a.cpu_quota,
        cpu_realtime_period: a.cpu_rt_period,
        cpu_realtime_runtime: a.cpu_rt_runtime,
        cpu_shares: a.cpu_shares,
        nano_cpus,
        cpuset_cpus: a.cpuset_cpus.clone(),
        cpuset_mems: a.cpuset_mems.clone(),
        memory: size(&a.memory)?,
        memory_reservation: size(&a.memory_reservation)?,
        memory_swap: size(&a.memory_swap)?,
        kernel_memory: size(&a.kernel_memory)?,
        pids_limit: a.pids_limit,
        restart_policy,
        ..Default::default()
    })
}

/// `berth update`: each container's name on success, Docker's warnings on stderr.
pub(crate) fn update(client: &Client, a: UpdateArgs) -> anyhow::Result<i32> {
    let body = update_body(&a)?;
    let v = serde_json::to_value(&body)?;
    if v.as_object().is_none_or(|o| o.values().all(Value::is_null)) {
        bail!("you must provide one or more flags when using this command");
    }
    each(&a.containers, true, |c| {
        let answer = client.post_json(&format!("/containers/{c}/update"), &v)?;
        for w in answer["Warnings"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            eprintln!("{w}");
        }
        Ok(())
    })
}
