//! The shim's state and its poll loop: the container's and execs' output to the log and clients,
//! reaping, new connections.

use crate::*;

pub(crate) struct Shim {
    /// The container's cgroup, to remove even if its runtime state is gone by the end.
    pub(crate) cgroup: Option<Box<dyn berth_runtime::cgroups::Cgroup>>,
    pub(crate) cfg: Config,
    pub(crate) bundle: PathBuf,
    /// The container is loaded from the runtime's state when needed: holding the parsed spec for
    /// its whole life would cost every shim a few hundred KiB.
    pub(crate) runtime_root: PathBuf,
    /// The container as created, kept for the start that normally follows at once (loading it
    /// again means parsing its whole spec); dropped then, and its memory handed back.
    pub(crate) created: Option<Container>,
    pub(crate) pid: i32,
    pub(crate) main: Proc,
    pub(crate) execs: HashMap<i32, Proc>,
    /// Healthcheck probes, by the token of their connection.
    pub(crate) probes: HashMap<u64, crate::probe::Probe>,
    pub(crate) log: Option<log::LogFile>,
    pub(crate) listener: Option<UnixListener>,
    pub(crate) sigfd: SignalFd,
    pub(crate) clients: HashMap<u64, Client>,
    pub(crate) next_client: u64,
    pub(crate) started: bool,
    /// Set when the init has been reaped.
    pub(crate) exited: Option<(ExitStatus, Instant)>,
    /// The first attached client with stdin (for StdinOnce).
    pub(crate) stdin_owner: Option<u64>,
    /// A request loaded the container or made a process: hand back what that touched, at this
    /// time (later, not at once: the next requests and a short-lived container's exit go first).
    pub(crate) release_at: Option<Instant>,
}

#[derive(Clone, Copy)]
pub(crate) enum Tag {
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
    pub(crate) fn create(bundle: &Path, network: Option<std::sync::Arc<OwnedFd>>) -> Result<Shim, Reply> {
        let cfg_path = bundle.join(berth_shim::CONFIG);
        let data = std::fs::read(&cfg_path).map_err(internal("reading shim.json"))?;
        let cfg: Config = serde_json::from_slice(&data).map_err(|e| Reply::error(ErrorKind::InvalidArgument, format!("shim.json: {e}")))?;
        let log = match &cfg.log_path {
            Some(p) => Some(
                log::LogFile::open(p, cfg.log_max_size, cfg.log_max_file, cfg.log_format, cfg.log_compress)
                    .map_err(internal("opening the log"))?,
            ),
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
            probes: HashMap::new(),
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

    pub(crate) fn run(&mut self) -> io::Result<()> {
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
            self.tend_probes();
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
            let next = self.probes.values().filter_map(|p| p.wake_at()).chain(self.release_at).min();
            let timeout = match (&self.exited, next) {
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
            self.forget_probes();
        }
    }

    pub(crate) fn wants_input(&self, c: &Client) -> bool {
        match c.role {
            Role::Request => true,
            Role::Attach { stdin: true, .. } => self.main.stdin.is_some() && self.main.stdin_buf.len() < MAX_STDIN_BACKLOG,
            Role::Exec(pid) => self.execs.get(&pid).is_some_and(|p| p.stdin.is_some() && p.stdin_buf.len() < MAX_STDIN_BACKLOG),
            // Only to notice the client going away.
            _ => true,
        }
    }

    pub(crate) fn proc_mut(&mut self, key: Option<i32>) -> Option<&mut Proc> {
        match key {
            None => Some(&mut self.main),
            Some(pid) => self.execs.get_mut(&pid),
        }
    }

    pub(crate) fn reap(&mut self) {
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

    pub(crate) fn container(&self) -> berth_runtime::Result<Container> {
        Container::load(&self.runtime_root, &self.cfg.id)
    }

    pub(crate) fn oom_kills(&self) -> u64 {
        self.container().map(|c| c.oom_kills()).unwrap_or(0)
    }

    pub(crate) fn accept(&mut self) {
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
    pub(crate) fn read_output(&mut self, key: Option<i32>, i: usize) {
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
                if self.probe_output(pid, data) {
                    return;
                }
                for c in self.clients.values_mut() {
                    if c.role == Role::Exec(pid) {
                        queue(c, &frame);
                    }
                }
            }
        }
    }

    #[inline(never)]
    pub(crate) fn client_ready(&mut self, token: u64, revents: i16) {
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
            Role::Probe => {
                if n == 0 {
                    self.drop_client(token);
                    return;
                }
                c.inbuf.extend_from_slice(&buf[..n]);
                self.probe_input(token);
            }
        }
    }

    pub(crate) fn drop_client(&mut self, token: u64) {
        if let Some(c) = self.clients.remove(&token)
            && let Role::Attach { stdin: true, .. } = c.role
            && self.stdin_owner == Some(token)
            && self.cfg.stdin_once
            && !self.cfg.tty
        {
            self.main.close_stdin();
        }
    }

    pub(crate) fn reply_and_close(&mut self, token: u64, reply: Reply) {
        if let Some(c) = self.clients.get_mut(&token) {
            queue_line(c, &reply);
            c.closing = true;
            c.input_done = true;
            let _ = flush(c);
        }
    }
}
