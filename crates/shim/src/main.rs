//! berth-shim <bundle>: the parent of one container. Creates it with berth-runtime (from this
//! single-threaded process), holds its stdio (pipes, or the pty master), writes its output to a
//! json-file log, serves attach/exec/kill/resize/wait on `shim.sock`, reaps it and records the exit
//! status atomically, then cleans up the runtime state and exits. One thread, one poll loop, no
//! async runtime: its memory is a few pages of buffers.

mod log;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::cgroups::Parents;
use berth_runtime::{Container, CreateOptions, ExecOptions};
use berth_shim::{Config, ErrorKind, ExitStatus, Reply, Request};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// A client whose unread output passes this is too slow and is dropped, so the container never waits.
const MAX_CLIENT_BACKLOG: usize = 8 << 20;
/// Input for a process held while its stdin pipe is full; clients are not read past it.
const MAX_STDIN_BACKLOG: usize = 64 << 10;
/// How long output is drained after the container's init exited (its pipes normally close at once).
const DRAIN: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 16 << 10;
/// How long after a create, start or exec the memory it touched is handed back: what comes next
/// (berthd's attach and start, a short container's exit) is not kept waiting behind it, and a
/// container that lives this long keeps its shim small.
const RELEASE_DELAY: Duration = Duration::from_millis(100);

fn main() {
    let Some(arg) = std::env::args_os().nth(1) else {
        eprintln!("usage: berth-shim <bundle> | berth-shim {} [<exec-root>]", berth_shim::STANDBY);
        std::process::exit(2);
    };
    // A handler that does nothing, rather than SIG_IGN: writes to gone clients fail with EPIPE,
    // and exec resets a handler (not an ignore) so containers get the default SIGPIPE.
    extern "C" fn on_sigpipe(_: libc::c_int) {}
    // SAFETY: the handler is async-signal-safe (it does nothing).
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::Handler(on_sigpipe)) };
    // Our own session: a terminal's signals to berthd's group do not reach us or the container.
    let _ = nix::unistd::setsid();
    let mut network = None;
    let bundle = if arg == berth_shim::STANDBY {
        network = prepare_ahead();
        match await_bundle() {
            Some(b) => b,
            // berthd went away (or changed its mind) before it had a container for us.
            None => std::process::exit(0),
        }
    } else {
        PathBuf::from(arg)
    };
    // Sockets are bound by relative names from the bundle: full paths can pass sun_path's 108 bytes.
    if let Err(e) = std::env::set_current_dir(&bundle) {
        report(&Reply::error(ErrorKind::Internal, format!("entering {}: {e}", bundle.display())));
        std::process::exit(1);
    }
    let mut shim = match Shim::create(&bundle, network) {
        Ok(s) => s,
        Err(reply) => {
            report(&reply);
            std::process::exit(1);
        }
    };
    report(&Reply { pid: Some(shim.pid), ..Reply::ok() });
    // berthd saw the report; from here on stdout is nobody's.
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
    let code = match shim.run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-shim {}: {e}", shim.cfg.id);
            1
        }
    };
    std::process::exit(code)
}

/// Give back memory that a create, start or exec touched once and will not need again: free heap
/// pages, the stack pages below this frame, and our mappings of read-only file pages (code and
/// constants of the creation and exec paths are most of them; the loop maps back the little it
/// uses, from the page cache). A shim lives as long as its container, and this is most of what it
/// would otherwise keep.
#[inline(never)]
fn release_memory() {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let (stack, clean) = mappings(&smaps);
    drop(smaps);
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    for (low, high) in clean {
        // SAFETY: a private file mapping without write permission and without anonymous (copied)
        // pages holds only page-cache pages: dropping them loses nothing, the next access maps the
        // same file page again. Without write permission none can become a copy meanwhile.
        unsafe { libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED) };
    }
    let Some((low, _)) = stack else { return };
    let here = 0u8;
    // Pages more than 16 KiB below this frame are dead: only our callees' frames could be there,
    // and madvise's own is a few hundred bytes. They come back zeroed if the stack grows again.
    let end = ((&here as *const u8 as usize).saturating_sub(16 << 10)) & !4095;
    if end > low {
        // SAFETY: [low, end) lies inside this thread's stack mapping, below every live frame
        // (see above); MADV_DONTNEED on private anonymous memory only drops its pages.
        unsafe { libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED) };
    }
    std::hint::black_box(&here);
}

/// A mapping's start and end addresses.
type Range = (usize, usize);

/// From /proc/self/smaps text: the `[stack]` mapping, and the read-only private file mappings
/// that hold no anonymous pages.
fn mappings(smaps: &str) -> (Option<Range>, Vec<Range>) {
    let mut stack = None;
    let mut clean = Vec::new();
    // The mapping being read, if it is a candidate, until its Anonymous line is seen.
    let mut candidate = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((l, h)) = first.split_once('-')
            && let (Ok(low), Ok(high)) = (usize::from_str_radix(l, 16), usize::from_str_radix(h, 16))
        {
            let (perms, inode) = (f.next().unwrap_or(""), f.nth(2).unwrap_or("0"));
            candidate = None;
            if line.ends_with("[stack]") {
                stack = Some((low, high));
            } else if perms.starts_with('r') && perms.as_bytes().get(1) == Some(&b'-') && perms.ends_with('p') && inode != "0" {
                candidate = Some((low, high));
            }
        } else if first == "Anonymous:"
            && let Some(range) = candidate.take()
            && f.next() == Some("0")
        {
            clean.push(range);
        }
    }
    (stack, clean)
}

/// Standby: while there is nothing else to do, read the cgroup hierarchies from the mount table
/// (once per process) and make the network namespace a container will most likely ask for (None
/// when that fails: the runtime then creates one as usual). Containers that share ours
/// (`--network host`) must find us where we started, or we are of no use.
fn prepare_ahead() -> Option<std::sync::Arc<OwnedFd>> {
    use berth_runtime::namespaces;
    let _ = berth_runtime::cgroups::open(Path::new(berth_runtime::DEFAULT_CGROUP_PARENT));
    let home = namespaces::current_network().ok()?;
    let made = namespaces::prepare_network();
    if namespaces::current_network().ok().as_ref() != Some(&home) {
        std::process::exit(1);
    }
    made.ok().map(std::sync::Arc::new)
}

/// Standby: wait for berthd to name the bundle (one line on stdin; end of input: not needed),
/// then let go of stdin and make the bundle's shim.log our stderr, as a shim started for a
/// bundle has them.
fn await_bundle() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    // Unbuffered: std's stdin would keep an 8 KiB buffer for the rest of the shim's life.
    let stdin = io::stdin();
    while !line.contains(&b'\n') {
        match nix::unistd::read(stdin.as_fd(), &mut buf) {
            Ok(0) => return None,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
        if line.len() > 4096 {
            return None;
        }
    }
    line.truncate(line.iter().position(|b| *b == b'\n').unwrap_or(line.len()));
    let bundle = PathBuf::from(std::ffi::OsString::from_vec(line));
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null);
    }
    if let Ok(log) = File::create(bundle.join(berth_shim::LOG)) {
        let _ = nix::unistd::dup2_stderr(log);
    }
    Some(bundle)
}

fn report(reply: &Reply) {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    let _ = io::stdout().write_all(&line);
    let _ = io::stdout().flush();
}

fn internal(context: &str) -> impl FnOnce(io::Error) -> Reply + '_ {
    move |e| Reply::error(ErrorKind::Internal, format!("{context}: {e}"))
}

fn nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, changing only its status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Run `f` with `fds` as this process's stdin, stdout and stderr, so a process cloned inside `f`
/// inherits them; ours are put back afterwards. Single-threaded, so nothing else sees the swap.
fn with_stdio<T>(fds: [&OwnedFd; 3], f: impl FnOnce() -> T) -> io::Result<T> {
    let saved: Vec<OwnedFd> = (0..3)
        .map(|n| {
            // SAFETY: fds 0-2 are open for the life of the process (berthd gives us all three).
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(n) };
            fd.try_clone_to_owned()
        })
        .collect::<io::Result<_>>()?;
    let swap = |from: [&OwnedFd; 3]| -> io::Result<()> {
        for (n, fd) in from.iter().enumerate() {
            // SAFETY: dup2 onto 0-2, which we then own as our stdio; the source stays open.
            if unsafe { libc::dup2(fd.as_raw_fd(), n as RawFd) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    swap(fds)?;
    let out = f();
    swap([&saved[0], &saved[1], &saved[2]])?;
    Ok(out)
}

/// A pty master received over a console socket that the runtime connects to.
struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn bind(path: PathBuf) -> io::Result<ConsoleSocket> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        Ok(ConsoleSocket { path, listener })
    }

    fn receive(self) -> Result<OwnedFd, Reply> {
        let (conn, _) = self.listener.accept().map_err(internal("accepting console socket"))?;
        let fd = berth_runtime::console::recv_fd(conn.as_raw_fd()).map_err(|e| Reply::error(e.kind(), e.to_string()));
        let _ = std::fs::remove_file(&self.path);
        fd
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The container side and our side of a process's stdio.
struct Stdio {
    child: [OwnedFd; 3],
    stdin: Option<OwnedFd>,
    outputs: Vec<(OwnedFd, u8)>,
}

fn pipes(stdin: bool) -> Result<Stdio, Reply> {
    let null = || -> Result<OwnedFd, Reply> { Ok(File::open("/dev/null").map_err(internal("opening /dev/null"))?.into()) };
    let (in_child, in_ours) = if stdin {
        let (r, w) = io::pipe().map_err(internal("making a stdin pipe"))?;
        (OwnedFd::from(r), Some(OwnedFd::from(w)))
    } else {
        (null()?, None)
    };
    let (out_r, out_w) = io::pipe().map_err(internal("making a stdout pipe"))?;
    let (err_r, err_w) = io::pipe().map_err(internal("making a stderr pipe"))?;
    Ok(Stdio {
        child: [in_child, out_w.into(), err_w.into()],
        stdin: in_ours,
        outputs: vec![(out_r.into(), berth_shim::STDOUT), (err_r.into(), berth_shim::STDERR)],
    })
}

/// Our ends of a process's stdio: its stdin (if any) and its outputs with their stream ids.
type Ends = (Option<OwnedFd>, Vec<(OwnedFd, u8)>);

/// The same process's stdio for a TTY: the pty master, both ways.
fn tty_stdio(master: OwnedFd) -> Result<Ends, Reply> {
    let input = master.try_clone().map_err(internal("duplicating the pty master"))?;
    Ok((Some(input), vec![(master, berth_shim::STDOUT)]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Waiting for its request line.
    Request,
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    /// Streams the exec with this pid.
    Exec(i32),
    Wait,
}

struct Client {
    sock: UnixStream,
    role: Role,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Its input has ended (or it only listens).
    input_done: bool,
    /// Close once `out` is flushed.
    closing: bool,
}

/// One process's input and outputs, the container's or an exec's.
struct Proc {
    stdin: Option<File>,
    stdin_buf: Vec<u8>,
    /// Close stdin once `stdin_buf` drains.
    stdin_closing: bool,
    outputs: Vec<(File, u8)>,
    /// The pty master, for resizes.
    master: Option<RawFd>,
    status: Option<i32>,
}

impl Proc {
    fn new(stdin: Option<OwnedFd>, outputs: Vec<(OwnedFd, u8)>, tty: bool) -> io::Result<Proc> {
        let master = if tty { outputs.first().map(|(fd, _)| fd.as_raw_fd()) } else { None };
        for (fd, _) in &outputs {
            nonblocking(fd.as_raw_fd())?;
        }
        if let Some(fd) = &stdin {
            nonblocking(fd.as_raw_fd())?;
        }
        Ok(Proc {
            stdin: stdin.map(File::from),
            stdin_buf: Vec::new(),
            stdin_closing: false,
            outputs: outputs.into_iter().map(|(fd, s)| (File::from(fd), s)).collect(),
            master,
            status: None,
        })
    }

    fn close_stdin(&mut self) {
        if self.stdin_buf.is_empty() {
            self.stdin = None;
        } else {
            self.stdin_closing = true;
        }
    }

    fn flush_stdin(&mut self) {
        let Some(f) = self.stdin.as_mut() else {
            self.stdin_buf.clear();
            return;
        };
        while !self.stdin_buf.is_empty() {
            match f.write(&self.stdin_buf) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The reader is gone (EPIPE): nothing will ever read this input.
                    self.stdin_buf.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.stdin_closing {
            self.stdin = None;
        }
    }
}

struct Shim {
    /// The container's cgroup, to remove even if its runtime state is gone by the end.
    cgroup: Option<Box<dyn berth_runtime::cgroups::Cgroup>>,
    cfg: Config,
    bundle: PathBuf,
    /// The container is loaded from the runtime's state when needed: holding the parsed spec for
    /// its whole life would cost every shim a few hundred KiB.
    runtime_root: PathBuf,
    /// The container as created, kept for the start that normally follows at once (loading it
    /// again means parsing its whole spec); dropped then, and its memory handed back.
    created: Option<Container>,
    pid: i32,
    main: Proc,
    execs: HashMap<i32, Proc>,
    log: Option<log::JsonFile>,
    listener: Option<UnixListener>,
    sigfd: SignalFd,
    clients: HashMap<u64, Client>,
    next_client: u64,
    started: bool,
    /// Set when the init has been reaped.
    exited: Option<(ExitStatus, Instant)>,
    /// The first attached client with stdin (for StdinOnce).
    stdin_owner: Option<u64>,
    /// A request loaded the container or made a process: hand back what that touched, at this
    /// time (later, not at once: the next requests and a short-lived container's exit go first).
    release_at: Option<Instant>,
}

#[derive(Clone, Copy)]
enum Tag {
    Signal,
    Listener,
    Output(Option<i32>, usize),
    Stdin(Option<i32>),
    Client(u64),
}

impl Shim {
    // Not inlined (nor are the handlers below): their large frames are then gone from the stack
    // while the loop waits, instead of being part of main's or run's frame for good.
    #[inline(never)]
    fn create(bundle: &Path, network: Option<std::sync::Arc<OwnedFd>>) -> Result<Shim, Reply> {
        let cfg_path = bundle.join(berth_shim::CONFIG);
        let data = std::fs::read(&cfg_path).map_err(internal("reading shim.json"))?;
        let cfg: Config = serde_json::from_slice(&data).map_err(|e| Reply::error(ErrorKind::InvalidArgument, format!("shim.json: {e}")))?;
        let log = match &cfg.log_path {
            Some(p) => Some(log::JsonFile::open(p, cfg.log_max_size, cfg.log_max_file).map_err(internal("opening the log"))?),
            None => None,
        };

        let mut opts = CreateOptions { id: cfg.id.clone(), bundle: bundle.to_path_buf(), network, ..Default::default() };
        let null: OwnedFd = File::options().read(true).write(true).open("/dev/null").map_err(internal("opening /dev/null"))?.into();
        let (child, console, stdio) = if cfg.tty {
            let console = ConsoleSocket::bind(PathBuf::from("console.sock")).map_err(internal("binding the console socket"))?;
            opts.console_socket = Some(console.path.clone());
            let dup = || null.try_clone().map_err(internal("duplicating /dev/null"));
            ([dup()?, dup()?, dup()?], Some(console), None)
        } else {
            let s = pipes(cfg.stdin)?;
            let Stdio { child, stdin, outputs } = s;
            (child, None, Some((stdin, outputs)))
        };
        let container = with_stdio([&child[0], &child[1], &child[2]], || Container::create(&cfg.runtime_root, &opts))
            .map_err(internal("swapping stdio"))?
            .map_err(|e| Reply::error(e.kind(), e.to_string()))?;
        drop(child);
        let pid = container.pid();
        let cgroup = container.cgroup().ok();
        let (stdin, outputs) = match (console, stdio) {
            (Some(console), _) => match console.receive().and_then(tty_stdio) {
                Ok(s) => s,
                Err(r) => {
                    let _ = container.delete_with(true, Parents::Keep);
                    return Err(r);
                }
            },
            (None, Some(s)) => s,
            (None, None) => unreachable!("either a console or pipes"),
        };
        let fail = |container: Container, r: Reply| {
            let _ = container.delete_with(true, Parents::Keep);
            r
        };
        let main = match Proc::new(stdin, outputs, cfg.tty) {
            Ok(p) => p,
            Err(e) => return Err(fail(container, internal("setting up stdio")(e))),
        };
        if cfg.tty
            && cfg.rows > 0
            && let Some(m) = main.master
        {
            let _ = berth_runtime::console::set_size(m, cfg.rows, cfg.cols);
        }
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        if let Err(e) = mask.thread_block() {
            return Err(fail(container, Reply::error(ErrorKind::Internal, format!("blocking SIGCHLD: {e}"))));
        }
        let sigfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(s) => s,
            Err(e) => return Err(fail(container, Reply::error(ErrorKind::Internal, format!("signalfd: {e}")))),
        };
        let sock_path = PathBuf::from(berth_shim::SOCKET);
        let _ = std::fs::remove_file(&sock_path);
        let listener = match UnixListener::bind(&sock_path).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(l) => l,
            Err(e) => return Err(fail(container, internal("binding shim.sock")(e))),
        };
        let runtime_root = cfg.runtime_root.clone();
        Ok(Shim {
            cgroup,
            cfg,
            bundle: bundle.to_path_buf(),
            runtime_root,
            created: Some(container),
            pid,
            main,
            execs: HashMap::new(),
            log,
            listener: Some(listener),
            sigfd,
            clients: HashMap::new(),
            next_client: 0,
            started: false,
            exited: None,
            stdin_owner: None,
            release_at: Some(Instant::now() + RELEASE_DELAY),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            if self.release_at.is_some_and(|at| at <= Instant::now()) {
                self.release_at = None;
                release_memory();
            }
            // The init is gone and its output drained (or the drain took too long): finish.
            if let Some((_, at)) = &self.exited
                && (self.main.outputs.is_empty() || at.elapsed() > DRAIN)
            {
                return self.finish();
            }
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut tags: Vec<Tag> = Vec::new();
            let mut add = |fd: RawFd, events: i16, tag: Tag| {
                fds.push(libc::pollfd { fd, events, revents: 0 });
                tags.push(tag);
            };
            add(self.sigfd.as_fd().as_raw_fd(), libc::POLLIN, Tag::Signal);
            if let Some(l) = &self.listener {
                add(l.as_raw_fd(), libc::POLLIN, Tag::Listener);
            }
            let procs = std::iter::once((None, &self.main)).chain(self.execs.iter().map(|(pid, p)| (Some(*pid), p)));
            for (key, p) in procs {
                for (i, (f, _)) in p.outputs.iter().enumerate() {
                    add(f.as_raw_fd(), libc::POLLIN, Tag::Output(key, i));
                }
                if let Some(f) = &p.stdin
                    && !p.stdin_buf.is_empty()
                {
                    add(f.as_raw_fd(), libc::POLLOUT, Tag::Stdin(key));
                }
            }
            for (token, c) in &self.clients {
                let mut events = 0;
                if !c.input_done && !c.closing && self.wants_input(c) {
                    events |= libc::POLLIN;
                }
                if !c.out.is_empty() {
                    events |= libc::POLLOUT;
                }
                add(c.sock.as_raw_fd(), events, Tag::Client(*token));
            }
            let timeout = match (&self.exited, self.release_at) {
                (Some(_), _) => 50,
                (None, Some(at)) => i32::try_from(at.saturating_duration_since(Instant::now()).as_millis() + 1).unwrap_or(i32::MAX),
                (None, None) => -1,
            };
            // SAFETY: fds is a valid array of pollfd for its length during the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for (pfd, tag) in fds.iter().zip(tags) {
                if pfd.revents == 0 {
                    continue;
                }
                match tag {
                    Tag::Signal => self.reap(),
                    Tag::Listener => self.accept(),
                    Tag::Output(key, i) => self.read_output(key, i),
                    Tag::Stdin(key) => {
                        if let Some(p) = self.proc_mut(key) {
                            p.flush_stdin();
                        }
                    }
                    Tag::Client(token) => self.client_ready(token, pfd.revents),
                }
            }
            self.finish_execs();
            self.clients.retain(|_, c| !(c.closing && c.out.is_empty()));
        }
    }

    fn wants_input(&self, c: &Client) -> bool {
        match c.role {
            Role::Request => true,
            Role::Attach { stdin: true, .. } => self.main.stdin.is_some() && self.main.stdin_buf.len() < MAX_STDIN_BACKLOG,
            Role::Exec(pid) => self.execs.get(&pid).is_some_and(|p| p.stdin.is_some() && p.stdin_buf.len() < MAX_STDIN_BACKLOG),
            // Only to notice the client going away.
            _ => true,
        }
    }

    fn proc_mut(&mut self, key: Option<i32>) -> Option<&mut Proc> {
        match key {
            None => Some(&mut self.main),
            Some(pid) => self.execs.get_mut(&pid),
        }
    }

    fn reap(&mut self) {
        while let Ok(Some(_)) = self.sigfd.read_signal() {}
        loop {
            let status = match nix::sys::wait::waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let (pid, code) = status;
            if pid == self.pid {
                let oom_killed = self.oom_kills() > 0;
                let finished_at = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
                self.exited = Some((ExitStatus { exit_code: code, finished_at, oom_killed }, Instant::now()));
            } else if let Some(p) = self.execs.get_mut(&pid) {
                p.status = Some(code);
            }
        }
    }

    fn container(&self) -> berth_runtime::Result<Container> {
        Container::load(&self.runtime_root, &self.cfg.id)
    }

    fn oom_kills(&self) -> u64 {
        self.container().map(|c| c.oom_kills()).unwrap_or(0)
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        while let Ok((sock, _)) = l.accept() {
            if sock.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.next_client;
            self.next_client += 1;
            self.clients
                .insert(token, Client { sock, role: Role::Request, inbuf: Vec::new(), out: Vec::new(), input_done: false, closing: false });
        }
    }

    /// Forward a chunk of output: the container's to the log and attached clients, an exec's to its client.
    #[inline(never)]
    fn read_output(&mut self, key: Option<i32>, i: usize) {
        let mut buf = [0u8; READ_CHUNK];
        let Some(p) = self.proc_mut(key) else { return };
        let Some((f, stream)) = p.outputs.get_mut(i) else { return };
        let stream = *stream;
        let n = match f.read(&mut buf) {
            Ok(0) => 0,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return,
            // EIO from a pty master once every slave is closed: the end of output.
            Err(_) => 0,
        };
        if n == 0 {
            p.outputs.remove(i);
            if key.is_none()
                && let Some(log) = &mut self.log
            {
                log.flush_partial(stream);
            }
            return;
        }
        let data = &buf[..n];
        let mut frame = Vec::with_capacity(n + 8);
        frame.extend_from_slice(&berth_shim::frame_header(stream, n));
        frame.extend_from_slice(data);
        match key {
            None => {
                if let Some(Err(e)) = self.log.as_mut().map(|l| l.write(stream, data)) {
                    eprintln!("berth-shim {}: writing log: {e}", self.cfg.id);
                }
                for c in self.clients.values_mut() {
                    if let Role::Attach { stdout, stderr, .. } = c.role
                        && ((stream == berth_shim::STDOUT && stdout) || (stream == berth_shim::STDERR && stderr))
                    {
                        queue(c, &frame);
                    }
                }
            }
            Some(pid) => {
                for c in self.clients.values_mut() {
                    if c.role == Role::Exec(pid) {
                        queue(c, &frame);
                    }
                }
            }
        }
    }

    #[inline(never)]
    fn client_ready(&mut self, token: u64, revents: i16) {
        if revents & libc::POLLOUT != 0 {
            let Some(c) = self.clients.get_mut(&token) else { return };
            if flush(c).is_err() {
                self.drop_client(token);
                return;
            }
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
            return;
        }
        let mut buf = [0u8; READ_CHUNK];
        let Some(c) = self.clients.get_mut(&token) else { return };
        if c.input_done || c.closing {
            if revents & (libc::POLLHUP | libc::POLLERR) != 0 && c.out.is_empty() {
                self.drop_client(token);
            }
            return;
        }
        let n = match c.sock.read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return,
            Err(_) => {
                self.drop_client(token);
                return;
            }
        };
        let role = c.role;
        match role {
            Role::Request => {
                if n == 0 {
                    self.drop_client(token);
                    return;
                }
                c.inbuf.extend_from_slice(&buf[..n]);
                if let Some(end) = c.inbuf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = c.inbuf.drain(..=end).collect();
                    let rest = std::mem::take(&mut c.inbuf);
                    self.handle(token, &line, rest);
                } else if c.inbuf.len() > berth_shim::MAX_REQUEST {
                    self.reply_and_close(token, Reply::error(ErrorKind::InvalidArgument, "request too long"));
                }
            }
            Role::Attach { stdin, .. } => {
                if n == 0 {
                    c.input_done = true;
                    // A half-close (the docker CLI's way of saying "no more input"): output goes on.
                    // A terminal's input stays open for the next attach, as in Docker.
                    if stdin && self.stdin_owner == Some(token) && self.cfg.stdin_once && !self.cfg.tty {
                        self.main.close_stdin();
                    }
                    return;
                }
                if stdin {
                    self.main.stdin_buf.extend_from_slice(&buf[..n]);
                    self.main.flush_stdin();
                }
            }
            Role::Exec(pid) => {
                if n == 0 {
                    c.input_done = true;
                    if let Some(p) = self.execs.get_mut(&pid) {
                        p.close_stdin();
                    }
                    return;
                }
                if let Some(p) = self.execs.get_mut(&pid) {
                    p.stdin_buf.extend_from_slice(&buf[..n]);
                    p.flush_stdin();
                }
            }
            Role::Wait => {
                if n == 0 {
                    self.drop_client(token);
                }
            }
        }
    }

    fn drop_client(&mut self, token: u64) {
        if let Some(c) = self.clients.remove(&token)
            && let Role::Attach { stdin: true, .. } = c.role
            && self.stdin_owner == Some(token)
            && self.cfg.stdin_once
            && !self.cfg.tty
        {
            self.main.close_stdin();
        }
    }

    fn reply_and_close(&mut self, token: u64, reply: Reply) {
        if let Some(c) = self.clients.get_mut(&token) {
            queue_line(c, &reply);
            c.closing = true;
            c.input_done = true;
            let _ = flush(c);
        }
    }

    #[inline(never)]
    fn handle(&mut self, token: u64, line: &[u8], rest: Vec<u8>) {
        let req: Request = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => return self.reply_and_close(token, Reply::error(ErrorKind::InvalidArgument, format!("bad request: {e}"))),
        };
        let runtime_err = |e: berth_runtime::Error| Reply::error(e.kind(), e.to_string());
        // These load the container's state and spec or create a process: their heap and stack
        // high-water marks are handed back afterwards.
        let heavy = matches!(req, Request::Start | Request::Kill { .. } | Request::Exec { .. });
        match req {
            Request::Start => {
                let reply = if self.started {
                    Reply::error(ErrorKind::Conflict, "container already started")
                } else {
                    let container = match self.created.take() {
                        Some(c) => Ok(c),
                        None => self.container(),
                    };
                    match container.and_then(|c| c.start()) {
                        Ok(()) => {
                            self.started = true;
                            Reply { pid: Some(self.pid), ..Reply::ok() }
                        }
                        Err(e) => runtime_err(e),
                    }
                };
                self.reply_and_close(token, reply);
            }
            Request::Kill { signal, all } => {
                let reply = match Signal::try_from(signal) {
                    Err(_) => Reply::error(ErrorKind::InvalidArgument, format!("invalid signal {signal}")),
                    Ok(sig) => match self.container().and_then(|c| c.kill(sig, all)) {
                        Ok(()) => Reply::ok(),
                        Err(e) => runtime_err(e),
                    },
                };
                self.reply_and_close(token, reply);
            }
            Request::Resize { exec_pid, rows, cols } => {
                let master = match exec_pid {
                    None => self.main.master,
                    Some(pid) => self.execs.get(&pid).and_then(|p| p.master),
                };
                let reply = match master {
                    None => Reply::error(ErrorKind::Conflict, "the process has no terminal"),
                    Some(fd) => match berth_runtime::console::set_size(fd, rows, cols) {
                        Ok(()) => Reply::ok(),
                        Err(e) => runtime_err(e),
                    },
                };
                self.reply_and_close(token, reply);
            }
            Request::Wait => {
                if let Some(c) = self.clients.get_mut(&token) {
                    c.role = Role::Wait;
                }
            }
            Request::Attach { .. } if self.exited.is_some() => {
                self.reply_and_close(token, Reply::error(ErrorKind::Conflict, "the container has exited"));
            }
            Request::Attach { stdin, stdout, stderr } => {
                let stdin = stdin && self.cfg.stdin;
                if stdin && self.stdin_owner.is_none() {
                    self.stdin_owner = Some(token);
                }
                let Some(c) = self.clients.get_mut(&token) else { return };
                c.role = Role::Attach { stdin, stdout, stderr };
                queue_line(c, &Reply::ok());
                if !rest.is_empty() && stdin {
                    self.main.stdin_buf.extend_from_slice(&rest);
                    self.main.flush_stdin();
                }
            }
            Request::Exec { process, stdin } => match self.exec(*process, stdin) {
                Ok(pid) => {
                    let Some(c) = self.clients.get_mut(&token) else { return };
                    c.role = Role::Exec(pid);
                    queue_line(c, &Reply { pid: Some(pid), ..Reply::ok() });
                    if let Some(p) = self.execs.get_mut(&pid)
                        && !rest.is_empty()
                    {
                        p.stdin_buf.extend_from_slice(&rest);
                        p.flush_stdin();
                    }
                }
                Err(reply) => self.reply_and_close(token, reply),
            },
        }
        if heavy && self.release_at.is_none() {
            self.release_at = Some(Instant::now() + RELEASE_DELAY);
        }
    }

    fn exec(&mut self, process: oci_spec::runtime::Process, stdin: bool) -> Result<i32, Reply> {
        if self.exited.is_some() || !self.started {
            return Err(Reply::error(ErrorKind::Conflict, format!("container {} is not running", self.cfg.id)));
        }
        let tty = process.terminal() == Some(true);
        let mut opts = ExecOptions { process: Some(process), ..Default::default() };
        let null: OwnedFd = File::options().read(true).write(true).open("/dev/null").map_err(internal("opening /dev/null"))?.into();
        let runtime_err = |e: berth_runtime::Error| Reply::error(e.kind(), e.to_string());
        let (pid, stdin, outputs) = if tty {
            let console = ConsoleSocket::bind(PathBuf::from(format!("exec-{}.sock", self.next_client)))
                .map_err(internal("binding an exec console socket"))?;
            opts.console_socket = Some(console.path.clone());
            let container = self.container().map_err(runtime_err)?;
            let pid =
                with_stdio([&null, &null, &null], || container.exec(&opts)).map_err(internal("swapping stdio"))?.map_err(runtime_err)?;
            let (i, o) = console.receive().and_then(tty_stdio)?;
            (pid, i, o)
        } else {
            let Stdio { child, stdin, outputs } = pipes(stdin)?;
            let container = self.container().map_err(runtime_err)?;
            let pid = with_stdio([&child[0], &child[1], &child[2]], || container.exec(&opts))
                .map_err(internal("swapping stdio"))?
                .map_err(runtime_err)?;
            (pid, stdin, outputs)
        };
        let p = Proc::new(stdin, outputs, tty).map_err(internal("setting up exec stdio"))?;
        self.execs.insert(pid.as_raw(), p);
        Ok(pid.as_raw())
    }

    /// Execs that were reaped and whose output ended send their exit frame and go.
    fn finish_execs(&mut self) {
        let done: Vec<i32> = self.execs.iter().filter(|(_, p)| p.status.is_some() && p.outputs.is_empty()).map(|(pid, _)| *pid).collect();
        for pid in done {
            let Some(p) = self.execs.remove(&pid) else { continue };
            let status = ExitStatus {
                exit_code: p.status.unwrap_or(255),
                finished_at: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
                oom_killed: false,
            };
            let payload = serde_json::to_vec(&status).unwrap_or_default();
            for c in self.clients.values_mut() {
                if c.role == Role::Exec(pid) {
                    queue(c, &berth_shim::frame_header(berth_shim::EXIT_FRAME, payload.len()));
                    queue(c, &payload);
                    c.closing = true;
                    c.input_done = true;
                }
            }
        }
    }

    /// Record the exit, tell waiters, flush attached clients, remove the runtime state.
    fn finish(&mut self) -> io::Result<()> {
        let Some((status, _)) = self.exited.clone() else { return Ok(()) };
        if let Some(log) = &mut self.log {
            log.flush_partial(berth_shim::STDOUT);
            log.flush_partial(berth_shim::STDERR);
        }
        let json = serde_json::to_vec(&status).map_err(io::Error::other)?;
        // Atomic, not durable: berthd reads it after a crash of its own, not of the machine (which
        // the container would not have survived either).
        berth_atomic::replace_file(&self.bundle.join(berth_shim::EXIT), &json, 0o600)?;
        // The status is on disk before the socket goes: whoever cannot connect any more finds it.
        self.listener = None;
        let _ = std::fs::remove_file(self.bundle.join(berth_shim::SOCKET));
        self.accept_pending_waits();
        let reply = Reply { exit: Some(status), ..Reply::ok() };
        for c in self.clients.values_mut() {
            if c.role == Role::Wait {
                queue_line(c, &reply);
            }
            c.closing = true;
        }
        // Execs still running die with the container's pid namespace; their clients end here.
        let deadline = Instant::now() + Duration::from_secs(2);
        for c in self.clients.values_mut() {
            let _ = c.sock.set_nonblocking(false);
            let _ = c.sock.set_write_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))));
            let _ = c.sock.write_all(&c.out);
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
        self.clients.clear();
        let id = self.cfg.id.clone();
        let root = self.cfg.runtime_root.clone();
        match Container::load(&root, &id) {
            Ok(c) => c.delete_with(true, Parents::Keep).map_err(|e| io::Error::other(format!("deleting the runtime state: {e}"))),
            // Someone removed the state under us; the cgroup is still ours to remove (its
            // processes went with the init's pid namespace).
            Err(_) => match &self.cgroup {
                Some(cg) => cg.destroy(Parents::Keep).map_err(|e| io::Error::other(format!("removing the cgroup: {e}"))),
                None => Ok(()),
            },
        }
    }
}

impl Shim {
    /// Requests that arrived while the container was ending: waits join the answer, the rest close.
    fn accept_pending_waits(&mut self) {
        for c in self.clients.values_mut() {
            if c.role != Role::Request {
                continue;
            }
            let _ = c.sock.set_nonblocking(false);
            let _ = c.sock.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = [0u8; 256];
            while !c.inbuf.contains(&b'\n') && c.inbuf.len() < 256 {
                match c.sock.read(&mut buf) {
                    Ok(n) if n > 0 => c.inbuf.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            if matches!(serde_json::from_slice::<Request>(c.inbuf.split(|b| *b == b'\n').next().unwrap_or(&[])), Ok(Request::Wait)) {
                c.role = Role::Wait;
            }
        }
    }
}

fn queue(c: &mut Client, data: &[u8]) {
    if c.closing {
        return;
    }
    if c.out.len() + data.len() > MAX_CLIENT_BACKLOG {
        // Too slow a reader: it loses the stream rather than stall the container.
        c.out.clear();
        c.closing = true;
        return;
    }
    c.out.extend_from_slice(data);
}

fn queue_line(c: &mut Client, reply: &Reply) {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    c.out.extend_from_slice(&line);
}

fn flush(c: &mut Client) -> io::Result<()> {
    while !c.out.is_empty() {
        match c.sock.write(&c.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if c.closing {
        let _ = c.sock.shutdown(std::net::Shutdown::Both);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
00200000-00296000 r--p 00000000 fe:00 5358787                            /usr/bin/berth-shim
Rss:                 256 kB
Anonymous:             0 kB
00296000-003dd000 r-xp 00095000 fe:00 5358787                            /usr/bin/berth-shim
Anonymous:             0 kB
003dd000-00407000 r--p 001db000 fe:00 5358787                            /usr/bin/berth-shim
Anonymous:             4 kB
00407000-00409000 rw-p 00204000 fe:00 5358787                            /usr/bin/berth-shim
Anonymous:             0 kB
26420000-2643b000 rw-p 00000000 00:00 0                                  [heap]
Anonymous:            20 kB
7f8d3e37a000-7f8d3e4d0000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f8d3e500000-7f8d3e501000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
7ffc19e94000-7ffc19eb5000 rw-p 00000000 00:00 0                          [stack]
Anonymous:            44 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let (stack, clean) = mappings(SMAPS);
        assert_eq!(stack, Some((0x7ffc19e94000, 0x7ffc19eb5000)));
        // Not the relro segment with a copied page, not writable data, not the vdso or the heap.
        assert_eq!(clean, vec![(0x200000, 0x296000), (0x296000, 0x3dd000), (0x7f8d3e37a000, 0x7f8d3e4d0000)]);
    }

    #[test]
    fn this_process_has_a_stack_and_code() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let (stack, clean) = mappings(&smaps);
        assert!(stack.is_some());
        assert!(!clean.is_empty());
    }
}
