//! Requests on `shim.sock`: start, attach, kill, resize, wait, exec, probe.

use crate::*;

impl Shim {
    #[inline(never)]
    pub(crate) fn handle(&mut self, token: u64, line: &[u8], rest: Vec<u8>) {
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
            Request::Probe { .. } if self.exited.is_some() || !self.started => {
                self.reply_and_close(token, Reply::error(ErrorKind::Conflict, format!("container {} is not running", self.cfg.id)));
            }
            Request::Probe { process, timeout_ms } => {
                let Some(c) = self.clients.get_mut(&token) else { return };
                c.role = Role::Probe;
                queue_line(c, &Reply::ok());
                let _ = flush(c);
                self.probes.insert(token, crate::probe::Probe::new(*process, timeout_ms));
                if !rest.is_empty()
                    && let Some(c) = self.clients.get_mut(&token)
                {
                    c.inbuf = rest;
                    self.probe_input(token);
                }
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

    pub(crate) fn exec(&mut self, process: oci_spec::runtime::Process, stdin: bool) -> Result<i32, Reply> {
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
}
