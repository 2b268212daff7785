//! berthd: serves the Docker Engine API on unix sockets (and optionally loopback TCP) over
//! berth-engine. Stopping berthd leaves containers running; the next berthd adopts them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;

#[derive(Parser, Debug, Clone)]
#[command(name = "berthd", version, about = "The berth daemon: serves the Docker Engine API")]
struct Cli {
    /// Where images, containers and volumes live.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Where sockets and runtime state live.
    #[arg(long)]
    exec_root: Option<PathBuf>,
    /// unix:///path/to.sock, tcp://127.0.0.1:PORT, or fd:// for the sockets systemd passes
    /// (socket activation; repeatable).
    #[arg(short = 'H', long = "host")]
    hosts: Vec<String>,
    #[arg(long)]
    log_level: Option<String>,
    #[arg(long)]
    pidfile: Option<PathBuf>,
    /// The cgroup under which containers' cgroups go (unless they name their own).
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// Print berthd's man page (section 8) and exit (for packaging).
    #[arg(long, hide = true)]
    print_man: bool,
    /// API connections served at once on each listener (more wait to be accepted).
    #[arg(long)]
    api_max_connections: Option<usize>,
    /// Seconds a connection may go without a request in flight (idle, or sending its headers)
    /// before it is closed.
    #[arg(long)]
    api_header_timeout: Option<u64>,
    /// A registry (`host[:port]`) or network (CIDR) that may be plain HTTP or have an
    /// unverified certificate (repeatable). Loopback always may.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// A Docker Hub mirror (`https://host`), tried before Docker Hub (repeatable).
    #[arg(long = "registry-mirror")]
    registry_mirrors: Vec<String>,
    /// Layers downloaded at once per pull (default 3).
    #[arg(long)]
    max_concurrent_downloads: Option<usize>,
    /// Layers uploaded at once per push (default 5).
    #[arg(long)]
    max_concurrent_uploads: Option<usize>,
    /// Per-registry certificates: `<dir>/<host[:port]>/{*.crt,*.cert,*.key}`, as Docker's
    /// `/etc/docker/certs.d` (the default).
    #[arg(long)]
    certs_dir: Option<PathBuf>,
    /// The default bridge's device (dockerd's `--bridge`; `berth0`).
    #[arg(short = 'b', long)]
    bridge: Option<String>,
    /// The default bridge's address and subnet, `192.168.200.1/24` (chosen from Docker's
    /// pools when not given).
    #[arg(long)]
    bip: Option<String>,
    /// The default bridge's MTU (1500).
    #[arg(long)]
    mtu: Option<u32>,
    #[arg(long, default_value = "/etc/berth/daemon.json")]
    config_file: PathBuf,
}

/// `/etc/berth/daemon.json`: the same keys as the flags, as dockerd's daemon.json names them.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    data_root: Option<PathBuf>,
    exec_root: Option<PathBuf>,
    #[serde(default)]
    hosts: Vec<String>,
    log_level: Option<String>,
    pidfile: Option<PathBuf>,
    cgroup_parent: Option<String>,
    api_max_connections: Option<usize>,
    api_header_timeout: Option<u64>,
    /// The default logging driver (`json-file`, `local` or `none`) and its options, as
    /// dockerd's `log-driver` and `log-opts`.
    log_driver: Option<String>,
    /// `--init` for every container that does not say (dockerd's `init`).
    #[serde(default)]
    init: bool,
    #[serde(default)]
    log_opts: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    insecure_registries: Vec<String>,
    #[serde(default)]
    registry_mirrors: Vec<String>,
    max_concurrent_downloads: Option<usize>,
    max_concurrent_uploads: Option<usize>,
    certs_dir: Option<PathBuf>,
    bridge: Option<String>,
    bip: Option<String>,
    mtu: Option<u32>,
}

struct Config {
    data_root: PathBuf,
    exec_root: PathBuf,
    hosts: Vec<String>,
    log_level: String,
    pidfile: PathBuf,
    log_driver: String,
    log_opts: std::collections::BTreeMap<String, String>,
    init: bool,
    cgroup_parent: String,
    limits: berth_api::server::Limits,
    registry: berth_registry::Options,
    network: berth_engine::NetConfig,
}

/// Threads for blocking work at most (tokio's default is 512); see `main`.
const MAX_BLOCKING_THREADS: usize = 64;
/// How often berthd looks whether the API has gone quiet (see `trim_when_quiet`).
const QUIET: std::time::Duration = std::time::Duration::from_secs(3);
/// Quiet spells after which freed heap is handed back: at once (3 s), and again once the
/// blocking threads of the burst have gone (tokio keeps an idle one 10 s) with what they held.
const TRIM_AFTER: [u32; 2] = [1, 4];

/// After a burst of work (containers created and removed by the hundred, a flood of
/// connections), glibc keeps the freed heap: RSS stayed ~5 MiB above idle. Once the API has been
/// quiet for a while after requests, trim it (a trim takes the arenas' locks for a moment, so
/// not while requests are served).
async fn trim_when_quiet() {
    let mut seen = berth_api::requests_received();
    let mut quiet = u32::MAX;
    loop {
        tokio::time::sleep(QUIET).await;
        let now = berth_api::requests_received();
        quiet = if now != seen { 0 } else { quiet.saturating_add(1) };
        seen = now;
        if TRIM_AFTER.contains(&quiet) {
            // SAFETY: malloc_trim only returns free heap memory to the kernel.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    }
}

/// Default log rotation: 10 MiB per file, 3 files (Docker's json-file keeps everything in one
/// unbounded file unless told otherwise; berth bounds it by default).
/// json-file's rotation unless the container or `log-opts` says otherwise: bounded, where
/// dockerd's is not (kept out of `LogConfig`, which shows what was asked, as dockerd's does).
const DEFAULT_LOG_MAX_SIZE: u64 = 10 << 20;
const DEFAULT_LOG_MAX_FILE: u32 = 3;

/// The default logging driver and its options: daemon.json's, checked as a container's are.
fn log_defaults(
    driver: Option<String>,
    opts: std::collections::BTreeMap<String, String>,
) -> anyhow::Result<(String, std::collections::BTreeMap<String, String>)> {
    let driver = driver.filter(|d| !d.is_empty()).unwrap_or_else(|| "json-file".into());
    if !["json-file", "local", "none"].contains(&driver.as_str()) {
        bail!("log-driver {driver:?}: berthd has the json-file, local and none logging drivers");
    }
    berth_engine::logs::check_opts(&driver, &opts).map_err(|e| anyhow::anyhow!("log-opts: {}", e.message))?;
    Ok((driver, opts))
}

fn config(cli: Cli) -> anyhow::Result<Config> {
    let file: FileConfig = match std::fs::read(&cli.config_file) {
        Ok(d) => serde_json::from_slice(&d).with_context(|| format!("reading {}", cli.config_file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileConfig::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", cli.config_file.display())),
    };
    let exec_root = cli.exec_root.or(file.exec_root).unwrap_or_else(|| PathBuf::from("/run/berth"));
    let mut hosts = if cli.hosts.is_empty() { file.hosts } else { cli.hosts };
    if hosts.is_empty() {
        hosts.push(format!("unix://{}", exec_root.join("berth.sock").display()));
    }
    let (log_driver, log_opts) = log_defaults(file.log_driver.clone(), file.log_opts.clone())?;
    Ok(Config {
        data_root: cli.data_root.or(file.data_root).unwrap_or_else(|| PathBuf::from("/var/lib/berth")),
        pidfile: cli.pidfile.or(file.pidfile).unwrap_or_else(|| exec_root.join("berthd.pid")),
        exec_root,
        hosts,
        log_level: cli.log_level.or(file.log_level).unwrap_or_else(|| "info".into()),
        cgroup_parent: cli.cgroup_parent.or(file.cgroup_parent).unwrap_or_else(|| berth_engine::DEFAULT_CGROUP_PARENT.into()),
        limits: {
            let d = berth_api::server::DEFAULT_LIMITS;
            let max_connections = cli.api_max_connections.or(file.api_max_connections).unwrap_or(d.max_connections);
            let timeout = cli.api_header_timeout.or(file.api_header_timeout).map(std::time::Duration::from_secs);
            if max_connections == 0 || timeout.is_some_and(|t| t.is_zero()) {
                bail!("api-max-connections and api-header-timeout must be at least 1");
            }
            berth_api::server::Limits { max_connections, header_timeout: timeout.unwrap_or(d.header_timeout) }
        },
        log_driver: log_driver.clone(),
        log_opts: log_opts.clone(),
        init: file.init,
        registry: {
            let d = berth_registry::Options::default();
            let downloads = cli.max_concurrent_downloads.or(file.max_concurrent_downloads).unwrap_or(d.max_concurrent_downloads);
            let uploads = cli.max_concurrent_uploads.or(file.max_concurrent_uploads).unwrap_or(d.max_concurrent_uploads);
            if downloads == 0 || uploads == 0 {
                bail!("max-concurrent-downloads and max-concurrent-uploads must be at least 1");
            }
            berth_registry::Options {
                insecure: if cli.insecure_registries.is_empty() { file.insecure_registries } else { cli.insecure_registries },
                mirrors: if cli.registry_mirrors.is_empty() { file.registry_mirrors } else { cli.registry_mirrors },
                certs_dir: cli.certs_dir.or(file.certs_dir).unwrap_or(d.certs_dir),
                max_concurrent_downloads: downloads,
                max_concurrent_uploads: uploads,
                ..d
            }
        },
        network: berth_engine::NetConfig {
            bridge: cli.bridge.or(file.bridge).unwrap_or_default(),
            bip: cli.bip.or(file.bip),
            mtu: cli.mtu.or(file.mtu),
        },
    })
}

/// A socket path is ours to replace only if nothing answers on it.
fn claim_socket(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!("another daemon is listening on {}", path.display());
    }
    std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.print_man {
        let mut page = Vec::new();
        clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).section("8").render(&mut page)?;
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &page);
        return Ok(());
    }
    let cfg = config(cli.clone())?;
    set_log_level(&cfg.log_level);
    tracing::subscriber::set_global_default(SimpleLog).ok();
    for d in [&cfg.data_root, &cfg.exec_root] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let pid = std::process::id().to_string();
    std::fs::write(&cfg.pidfile, &pid).with_context(|| format!("writing {}", cfg.pidfile.display()))?;
    // Two malloc arenas instead of glibc's default of one per thread (up to 8 per core): with
    // an arena per worker and blocking thread, freed memory scattered over ~16 arenas kept
    // berthd's RSS climbing for the first tens of thousands of containers (bench/soak.py: 9.9 ->
    // 14.4 MiB; 9.4 -> 9.8 MiB with two).
    // A fixed mmap threshold: glibc raises it to the size of every large block freed, after
    // which a pull's 256 KiB buffers came from the heap and stayed there (peak RSS over a pull
    // of 81 MB: 55 MiB; see docs/benchmarks.md). Blocks of 128 KiB and more are mapped and
    // returned as they are freed.
    // SAFETY: mallopt only sets the allocator's parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking work (fsyncs, renames, unmounts) comes in bursts: 200 containers started at
        // once grew the pool to 130 threads (~9 MiB of RSS until they left, 10 s later). At most
        // 64. (A keep-alive of 1 s instead of tokio's 10 s let them go sooner, but cost steady use
        // 2-4 % per `run`, spare threads being spawned again at each peak.)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()?;
    let result = rt.block_on(serve(&cfg, cli));
    // Only our own: a daemon started while this one stopped has written its pid there.
    if std::fs::read_to_string(&cfg.pidfile).is_ok_and(|p| p.trim() == pid) {
        let _ = std::fs::remove_file(&cfg.pidfile);
    }
    result
}

/// What tells our socket file from one another daemon bound at the same path after us: the
/// inode alone does not (a file system reuses a freed inode number at once).
fn file_identity(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// berth-shim lives beside berthd.
fn shim_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding berthd's own path")?;
    let shim = exe.with_file_name("berth-shim");
    if !shim.exists() {
        bail!("{} is missing (it is installed beside berthd)", shim.display());
    }
    Ok(shim)
}

/// The listening sockets systemd passed (`LISTEN_PID`, `LISTEN_FDS`, from fd 3): all of them for
/// `fd://`, one for `fd://N`. The variables are unset once read, so no child sees them.
fn activated_fds(which: &str) -> anyhow::Result<Vec<i32>> {
    const FIRST: i32 = 3;
    let pid_ok = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<i32>().ok()).filter(|n| *n > 0 && pid_ok);
    // SAFETY: removing variables races only with other threads reading the environment at the
    // same moment; berthd's other threads (tokio's) do not read it.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let Some(count) = count else { bail!("fd://: no sockets were passed by systemd (LISTEN_FDS)") };
    let all: Vec<i32> = (FIRST..FIRST + count).collect();
    if which.is_empty() {
        return Ok(all);
    }
    let fd: i32 = which.parse().with_context(|| format!("fd://{which}: not a descriptor number"))?;
    if !all.contains(&fd) {
        bail!("fd://{fd}: systemd passed descriptors {FIRST} to {}", FIRST + count - 1);
    }
    Ok(vec![fd])
}

async fn serve(cfg: &Config, cli: Cli) -> anyhow::Result<()> {
    // First of all: a SIGTERM while the engine opens, or as soon as a client can connect, stops
    // berthd as any other does (the default action would leave its socket and pid file behind).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let engine = berth_engine::Engine::open(berth_engine::Config {
        data_root: cfg.data_root.clone(),
        exec_root: cfg.exec_root.clone(),
        shim: shim_path()?,
        init_path: std::env::current_exe().ok().map(|e| e.with_file_name("berth-init")),
        init: cfg.init,
        log_driver: cfg.log_driver.clone(),
        log_opts: cfg.log_opts.clone(),
        log_default_max_size: DEFAULT_LOG_MAX_SIZE,
        log_default_max_file: DEFAULT_LOG_MAX_FILE,
        cgroup_parent: cfg.cgroup_parent.clone(),
        registry: cfg.registry.clone(),
        network: cfg.network.clone(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("starting the engine: {}", e.message))?;
    let engine = Arc::new(engine);
    let app = berth_api::app(berth_api::Backends {
        system: engine.clone(),
        containers: engine.clone(),
        images: engine.clone(),
        networks: engine.clone(),
        volumes: engine.clone(),
        builds: engine.clone(),
        events: engine.clone(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut sockets = Vec::new();
    for host in &cfg.hosts {
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Some(path) = host.strip_prefix("unix://") {
            let path = PathBuf::from(path);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            claim_socket(&path)?;
            let listener = tokio::net::UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
            // root and the socket's group only, as dockerd does; the group is `berth` where the
            // package made it (dockerd's is `docker`).
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
            if let Ok(Some(g)) = nix::unistd::Group::from_name("berth") {
                nix::unistd::chown(&path, None, Some(g.gid)).with_context(|| format!("giving {} to the berth group", path.display()))?;
            }
            tracing::info!("API listening on {}", path.display());
            let identity = file_identity(&path);
            sockets.push((path, identity));
            tasks.push(tokio::spawn(berth_api::server::serve(listener, app.clone(), cfg.limits, shutdown)));
        } else if let Some(addr) = host.strip_prefix("tcp://") {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
            if !listener.local_addr()?.ip().is_loopback() {
                tracing::warn!("the API on {addr} is unauthenticated and reachable beyond this host");
            }
            tracing::info!("API listening on tcp://{}", listener.local_addr()?);
            tasks.push(tokio::spawn(berth_api::server::serve(listener, app.clone(), cfg.limits, shutdown)));
        } else if let Some(which) = host.strip_prefix("fd://") {
            // Socket activation (berth.socket, as docker.socket): the sockets systemd made.
            for fd in activated_fds(which)? {
                // SAFETY: systemd passed this descriptor to this process for it to own; each is
                // taken once (activated_fds lists each once and unsets the environment).
                let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                use nix::sys::socket::SockaddrLike;
                let domain = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd).ok().and_then(|a| a.family());
                let stop = {
                    let mut stop = stop_rx.clone();
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    }
                };
                if domain == Some(nix::sys::socket::AddressFamily::Unix) {
                    let l = std::os::unix::net::UnixListener::from(owned);
                    l.set_nonblocking(true)?;
                    tracing::info!("API listening on the socket systemd passed (fd {fd})");
                    tasks.push(tokio::spawn(berth_api::server::serve(
                        tokio::net::UnixListener::from_std(l)?,
                        app.clone(),
                        cfg.limits,
                        stop,
                    )));
                } else {
                    let l = std::net::TcpListener::from(owned);
                    l.set_nonblocking(true)?;
                    tracing::info!("API listening on tcp://{} (from systemd, fd {fd})", l.local_addr()?);
                    tasks.push(tokio::spawn(berth_api::server::serve(
                        tokio::net::TcpListener::from_std(l)?,
                        app.clone(),
                        cfg.limits,
                        stop,
                    )));
                }
            }
            drop(shutdown);
        } else {
            bail!("unsupported host {host:?}: use unix:///path, tcp://127.0.0.1:PORT or fd:// (socket activation)");
        }
    }
    tokio::spawn(trim_when_quiet());
    // SIGHUP: daemon.json read again, and what dockerd reloads applied.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping (containers keep running)");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping");
                break;
            }
            _ = hup.recv() => match config(cli.clone()) {
                Ok(new) => {
                    set_log_level(&new.log_level);
                    engine.reload(new.registry, &new.log_level);
                    tracing::info!("SIGHUP: reloaded {}", cli.config_file.display());
                }
                // As dockerd: a file that does not parse changes nothing.
                Err(e) => tracing::error!("SIGHUP: not reloaded: {e:#}"),
            },
        }
    }
    let _ = stop_tx.send(true);
    // Long polls (wait, logs -f) would hold a graceful stop forever: give them a moment.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    // As soon as nothing is served on them, and only our own: a daemon started after us may
    // have claimed the path already (ours stopped answering).
    for (path, identity) in sockets {
        let answers = std::os::unix::net::UnixStream::connect(&path).is_ok();
        if identity.is_some() && file_identity(&path) == identity && !answers {
            let _ = std::fs::remove_file(path);
        }
    }
    engine.shutdown().await;
    Ok(())
}

/// The most verbose level logged (a reload may change it): 0 error … 4 trace.
static LOG_LEVEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

fn level_rank(l: &tracing::Level) -> u8 {
    match *l {
        tracing::Level::ERROR => 0,
        tracing::Level::WARN => 1,
        tracing::Level::INFO => 2,
        tracing::Level::DEBUG => 3,
        tracing::Level::TRACE => 4,
    }
}

fn set_log_level(name: &str) {
    let level: tracing::Level = name.parse().unwrap_or(tracing::Level::INFO);
    LOG_LEVEL.store(level_rank(&level), std::sync::atomic::Ordering::Relaxed);
}

/// Log lines on stderr: `time level message`.
struct SimpleLog;

impl tracing::Subscriber for SimpleLog {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        level_rank(m.level()) <= LOG_LEVEL.load(std::sync::atomic::Ordering::Relaxed)
    }
    // Asked each time, not cached per call site: the level may change at a reload.
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        struct V(String);
        impl tracing::field::Visit for V {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut v = V(String::new());
        e.record(&mut v);
        eprintln!("{} {}", e.metadata().level(), v.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
