//! berth-runc: a runc-compatible command line over berth-runtime, so other engines and the OCI
//! tooling can drive berth's runtime.

mod log;
mod terminal;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, bail};
use berth_runtime::{Container, CreateOptions, ExecOptions, Status};
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

#[derive(Parser)]
#[command(name = "berth-runc", version, about = "runc-compatible OCI runtime built on berth-runtime")]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = "/run/berth-runc")]
    root: PathBuf,
    /// Write errors and debug output to this file as well as stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for compatibility; berth-runc manages cgroups through cgroupfs only.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility ("false" or "auto"); rootless mode is not implemented yet.
    #[arg(long, global = true)]
    rootless: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct CreateArgs {
    id: String,
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    no_pivot: bool,
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Accepted for compatibility.
    #[arg(long)]
    no_new_keyring: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Write a default config.json (Docker's defaults) into the bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Create a container; its process waits for `start`.
    Create(CreateArgs),
    Start {
        id: String,
    },
    /// Create and start a container, and wait for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    State {
        id: String,
    },
    List {
        #[arg(short, long)]
        quiet: bool,
        #[arg(short, long, default_value = "table")]
        format: String,
    },
    Kill {
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
        #[arg(short, long)]
        all: bool,
    },
    Delete {
        id: String,
        #[arg(short, long)]
        force: bool,
    },
    /// Run a new process inside a running container.
    Exec {
        id: String,
        /// A process.json to run instead of ARGS.
        #[arg(short, long)]
        process: Option<PathBuf>,
        #[arg(short, long)]
        tty: bool,
        #[arg(short, long)]
        detach: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(short, long)]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// uid[:gid]
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short = 'g', long = "additional-gids")]
        additional_gids: Vec<u32>,
        #[arg(short, long)]
        cap: Vec<String>,
        #[arg(long)]
        no_new_privs: bool,
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
        /// Exec in a paused container too (the process starts frozen).
        #[arg(long)]
        ignore_paused: bool,
        /// Run the process in an existing sub-cgroup of the container's: [controller,...:]path.
        #[arg(long = "cgroup")]
        cgroup: Vec<String>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the container's processes.
    Ps {
        id: String,
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Resource usage: once with --stats, else every --interval until the container stops.
    Events {
        id: String,
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
    },
    /// What this runtime supports, as the OCI features document.
    Features,
}

/// A failed command: its error, reported and ended as runc would (`failure_form`).
struct Failure {
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { error: e.into() }
    }
}

/// How runc reports a failed command: its prefix to the message and its exit code (a failed
/// `exec` exits 255, so a harness can tell it from the process's own exit code).
fn failure_form(command: &Command) -> (&'static str, u8) {
    match command {
        Command::Run { .. } => ("runc run failed: ", 1),
        Command::Create { .. } => ("runc create failed: ", 1),
        Command::Exec { .. } => ("exec failed: ", 255),
        _ => ("", 1),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = init_logging(&cli);
    let json = cli.log_format == "json";
    let (prefix, code) = failure_form(&cli.command);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            let msg = format!("{prefix}{}", runc_message(&f.error));
            // As runc: a logrus line on stderr (`time=… level=error msg=…`, or JSON), which
            // scripts and harnesses look for; with --log, the line goes there and the message
            // alone to stderr.
            match log {
                Some(mut file) => {
                    let _ = writeln!(file, "{}", log::Logger::line(json, "error", &msg));
                    eprintln!("{msg}");
                }
                None => eprintln!("{}", log::Logger::line(json, "error", &msg)),
            }
            ExitCode::from(code)
        }
    }
}

/// An error in runc's words where runc has its own for the case.
fn runc_message(e: &anyhow::Error) -> String {
    match e.downcast_ref::<berth_runtime::Error>() {
        Some(berth_runtime::Error::NotFound(_)) => "container does not exist".into(),
        _ => format!("{e:#}"),
    }
}

/// Logs and errors go to --log (as JSON lines with --log-format json, which containerd and
/// podman read back), or to stderr without --log.
fn init_logging(cli: &Cli) -> Option<std::fs::File> {
    let level = if cli.debug { tracing::Level::DEBUG } else { tracing::Level::WARN };
    let json = cli.log_format == "json";
    let file = cli.log.as_ref().and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    let out: Box<dyn Write + Send> = match file.as_ref().and_then(|f| f.try_clone().ok()) {
        Some(f) => Box::new(f),
        None => Box::new(std::io::stderr()),
    };
    log::Logger::install(level, json, out);
    file
}

fn run(cli: Cli) -> Result<u8, Failure> {
    if cli.systemd_cgroup {
        bail_f("the systemd cgroup driver is not implemented yet: use cgroupfs (omit --systemd-cgroup)")?;
    }
    if cli.rootless.as_deref().is_some_and(|r| r == "true") {
        bail_f("rootless mode is not implemented yet")?;
    }
    let root = cli.root.as_path();
    match cli.command {
        Command::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail_f(&format!("{} already exists", path.display()))?;
            }
            let mut spec = berth_runtime::spec::docker_default(&["sh".into()], true);
            spec.set_hostname(Some("berth".into()));
            std::fs::write(&path, serde_json::to_string_pretty(&spec)?).with_context(|| format!("writing {}", path.display()))?;
            Ok(0)
        }
        Command::Create(a) => {
            Container::create(root, &create_options(&a))?;
            Ok(0)
        }
        Command::Start { id } => {
            Container::load(root, &id)?.start()?;
            Ok(0)
        }
        Command::Run { create, detach, keep } => run_container(root, &create, detach, keep),
        Command::State { id } => {
            let c = Container::load(root, &id)?;
            println!("{}", serde_json::to_string_pretty(&c.oci_state())?);
            Ok(0)
        }
        Command::List { quiet, format } => {
            let all = Container::list(root)?;
            if quiet {
                all.iter().for_each(|c| println!("{}", c.id()));
            } else if format == "json" {
                let v: Vec<_> = all.iter().map(|c| c.oci_state()).collect();
                println!("{}", serde_json::to_string(&v)?);
            } else {
                let mut rows = vec![["ID".to_string(), "PID".into(), "STATUS".into(), "BUNDLE".into(), "CREATED".into(), "OWNER".into()]];
                for c in &all {
                    let status = c.status();
                    let pid = if status == Status::Stopped { 0 } else { c.pid() };
                    rows.push([
                        c.id().into(),
                        pid.to_string(),
                        status.to_string(),
                        c.state.bundle.display().to_string(),
                        c.state.created.clone(),
                        c.state.owner.clone(),
                    ]);
                }
                print_table(&rows);
            }
            Ok(0)
        }
        Command::Kill { id, signal, all } => {
            Container::load(root, &id)?.kill(parse_signal(&signal)?, all)?;
            Ok(0)
        }
        Command::Delete { id, force } => {
            match Container::load(root, &id) {
                Ok(c) => c.delete(force)?,
                // runc treats deleting an unknown container with --force as done.
                Err(berth_runtime::Error::NotFound(_)) if force => {}
                Err(e) => return Err(e.into()),
            }
            Ok(0)
        }
        Command::Exec {
            id,
            process,
            tty,
            detach,
            pid_file,
            console_socket,
            env,
            cwd,
            user,
            additional_gids,
            cap,
            no_new_privs,
            preserve_fds,
            ignore_paused,
            cgroup,
            args,
        } => {
            let c = Container::load(root, &id)?;
            let proc_spec = match process {
                Some(path) => {
                    let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))?
                }
                None => {
                    if args.is_empty() {
                        bail_f("exec needs a command (ARGS) or --process")?;
                    }
                    let mut p = c.state.config()?.process().clone().unwrap_or_default();
                    p.set_args(Some(args));
                    p.set_terminal(Some(tty));
                    // As runc: a variable the spec has is replaced, not added twice.
                    let mut e = p.env().clone().unwrap_or_default();
                    let key = |s: &str| s.split_once('=').map_or(s.to_string(), |(k, _)| k.to_string());
                    for x in env {
                        match e.iter_mut().find(|y| key(y) == key(&x)) {
                            Some(slot) => *slot = x,
                            None => e.push(x),
                        }
                    }
                    p.set_env(Some(e));
                    if let Some(cwd) = cwd {
                        p.set_cwd(cwd);
                    }
                    if let Some(u) = user {
                        let (uid, gid) = u.split_once(':').unwrap_or((&u, "0"));
                        p.user_mut().set_uid(uid.parse().with_context(|| format!("bad uid in --user {u:?}"))?);
                        p.user_mut().set_gid(gid.parse().with_context(|| format!("bad gid in --user {u:?}"))?);
                    }
                    if !additional_gids.is_empty() {
                        p.user_mut().set_additional_gids(Some(additional_gids));
                    }
                    if !cap.is_empty() {
                        let mut caps = p.capabilities().clone().unwrap_or_default();
                        let extra: Vec<oci_spec::runtime::Capability> = cap
                            .iter()
                            // `CAP_KILL`, as runc takes it (and `KILL`).
                            .map(|c| {
                                serde_json::from_value::<oci_spec::runtime::Capability>(serde_json::json!(c))
                                    .map_err(|_| anyhow::anyhow!("unknown capability {c:?}"))
                            })
                            .collect::<anyhow::Result<_>>()?;
                        for set in [caps.bounding().clone(), caps.effective().clone(), caps.permitted().clone()].iter().enumerate() {
                            let mut s = set.1.clone().unwrap_or_default();
                            s.extend(extra.iter().copied());
                            match set.0 {
                                0 => caps.set_bounding(Some(s)),
                                1 => caps.set_effective(Some(s)),
                                _ => caps.set_permitted(Some(s)),
                            };
                        }
                        p.set_capabilities(Some(caps));
                    }
                    if no_new_privs {
                        p.set_no_new_privileges(Some(true));
                    }
                    p
                }
            };
            let cgroups = cgroup.iter().map(|g| g.parse()).collect::<Result<Vec<berth_runtime::SubCgroup>, _>>()?;
            let opts = ExecOptions { process: Some(proc_spec), console_socket, pid_file, preserve_fds, ignore_paused, cgroups };
            exec_in(&c, detach, opts)
        }
        Command::Ps { id, format, ps_args } => {
            let c = Container::load(root, &id)?;
            let pids = c.pids()?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
                return Ok(0);
            }
            let args = if ps_args.is_empty() { vec!["-ef".to_string()] } else { ps_args };
            let out = std::process::Command::new("ps").args(&args).output().context("running ps")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let pid_col = header.split_whitespace().position(|h| h == "PID").context("ps output has no PID column")?;
            println!("{header}");
            for l in lines {
                if l.split_whitespace().nth(pid_col).and_then(|p| p.parse().ok()).is_some_and(|p: i32| pids.contains(&p)) {
                    println!("{l}");
                }
            }
            Ok(0)
        }
        Command::Pause { id } => {
            Container::load(root, &id)?.pause()?;
            Ok(0)
        }
        Command::Resume { id } => {
            Container::load(root, &id)?.resume()?;
            Ok(0)
        }
        Command::Events { id, stats, interval } => {
            let c = Container::load(root, &id)?;
            let every = parse_duration(&interval)?;
            loop {
                let s = c.stats()?;
                println!("{}", serde_json::json!({"type": "stats", "id": id, "data": s}));
                if stats || c.status() == Status::Stopped {
                    return Ok(0);
                }
                std::thread::sleep(every);
            }
        }
        Command::Features => {
            println!("{}", serde_json::to_string_pretty(&features())?);
            Ok(0)
        }
    }
}

fn bail_f(msg: &str) -> anyhow::Result<()> {
    bail!("{msg}")
}

fn create_options(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
        network: None,
    }
}

fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("unknown signal {s}"));
    }
    let name = s.to_uppercase();
    let name = if name.starts_with("SIG") { name } else { format!("SIG{name}") };
    Signal::from_str(&name).with_context(|| format!("unknown signal {s}"))
}

fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad interval {s:?}"))?;
    Ok(match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" | "" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n * 60),
        _ => bail!("bad interval {s:?}"),
    })
}

fn print_table(rows: &[[String; 6]]) {
    let widths: Vec<usize> = (0..6).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", line.join("   ").trim_end());
    }
}

static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// While we wait for a container in the foreground, signals sent to us go to it (as with runc).
fn forward_signals_to(pid: Pid) {
    FORWARD_TO.store(pid.as_raw(), Ordering::Relaxed);
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2] {
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(forward_signal),
            nix::sys::signal::SaFlags::SA_RESTART,
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only loads an atomic and calls kill, both async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
    }
}

fn exit_code(status: WaitStatus) -> Option<u8> {
    match status {
        WaitStatus::Exited(_, code) => Some(code as u8),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as u8),
        _ => None,
    }
}

/// Wait for `pid` (our child), reaping any orphans handed to us meanwhile; returns its code.
fn wait_for(pid: Pid, mut tick: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<u8> {
    loop {
        tick()?;
        match waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(st) if st.pid() == Some(pid) => {
                if let Some(code) = exit_code(st) {
                    return Ok(code);
                }
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("waiting for process {pid}: {e}"),
        }
    }
}

fn run_container(root: &Path, a: &CreateArgs, detach: bool, keep: bool) -> Result<u8, Failure> {
    let mut opts = create_options(a);
    let config = berth_runtime::load_spec(&a.bundle)?;
    let terminal = config.spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    if !detach {
        // Orphans of a container that shares our pid namespace come to us to be reaped.
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
    let console = if terminal && opts.console_socket.is_none() {
        if detach {
            bail_f("run --detach of a terminal container needs --console-socket")?;
        }
        let c = terminal::ConsoleListener::new(root, &a.id)?;
        opts.console_socket = Some(c.path().to_path_buf());
        Some(c)
    } else {
        None
    };
    let container = Container::create_from(root, &opts, config)?;
    let pty = console.map(|c| c.accept()).transpose()?;
    if let Err(e) = container.start() {
        let _ = Container::load(root, &a.id).and_then(|c| c.delete(true));
        return Err(e.into());
    }
    if detach {
        return Ok(0);
    }
    let pid = Pid::from_raw(container.pid());
    forward_signals_to(pid);
    let code = match pty {
        Some(master) => {
            let mut proxy = terminal::Proxy::new(master)?;
            let code = wait_for(pid, || proxy.pump(std::time::Duration::from_millis(20)));
            proxy.finish();
            code
        }
        None => wait_for(pid, || {
            std::thread::sleep(std::time::Duration::from_millis(1));
            Ok(())
        }),
    };
    if !keep {
        Container::load(root, &a.id)?.delete(true)?;
    }
    Ok(code?)
}

fn exec_in(c: &Container, detach: bool, mut opts: ExecOptions) -> Result<u8, Failure> {
    let terminal = opts.process.as_ref().is_some_and(|p| p.terminal() == Some(true));
    let listener = if terminal && opts.console_socket.is_none() {
        if detach {
            bail_f("exec --detach --tty needs --console-socket")?;
        }
        Some(terminal::ConsoleListener::new(&std::env::temp_dir(), &format!("exec-{}", std::process::id()))?)
    } else {
        None
    };
    if let Some(l) = &listener {
        opts.console_socket = Some(l.path().to_path_buf());
    }
    let pid = c.exec(&opts)?;
    if detach {
        return Ok(0);
    }
    forward_signals_to(pid);
    match listener.map(|l| l.accept()).transpose()? {
        Some(master) => {
            let mut proxy = terminal::Proxy::new(master)?;
            let code = wait_for(pid, || proxy.pump(std::time::Duration::from_millis(20)));
            proxy.finish();
            Ok(code?)
        }
        None => Ok(wait_for(pid, || {
            std::thread::sleep(std::time::Duration::from_millis(1));
            Ok(())
        })?),
    }
}

fn features() -> serde_json::Value {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "slave", "strictatime", "suid", "sync", "tmpcopyup", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        }
    })
}
