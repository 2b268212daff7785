//! A process's stdio as the shim holds it: pipes or a pty's master, non-blocking, and what is
//! waiting to go into its stdin.

use crate::*;

pub(crate) fn nonblocking(fd: RawFd) -> io::Result<()> {
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
pub(crate) fn with_stdio<T>(fds: [&OwnedFd; 3], f: impl FnOnce() -> T) -> io::Result<T> {
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
pub(crate) struct ConsoleSocket {
    pub(crate) path: PathBuf,
    pub(crate) listener: UnixListener,
}

impl ConsoleSocket {
    pub(crate) fn bind(path: PathBuf) -> io::Result<ConsoleSocket> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        Ok(ConsoleSocket { path, listener })
    }

    pub(crate) fn receive(self) -> Result<OwnedFd, Reply> {
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
pub(crate) struct Stdio {
    pub(crate) child: [OwnedFd; 3],
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) outputs: Vec<(OwnedFd, u8)>,
}

pub(crate) fn pipes(stdin: bool) -> Result<Stdio, Reply> {
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

/// The same process's stdio for a TTY: the pty master, both ways.
pub(crate) fn tty_stdio(master: OwnedFd) -> Result<Ends, Reply> {
    let input = master.try_clone().map_err(internal("duplicating the pty master"))?;
    Ok((Some(input), vec![(master, berth_shim::STDOUT)]))
}

/// One process's input and outputs, the container's or an exec's.
pub(crate) struct Proc {
    pub(crate) stdin: Option<File>,
    pub(crate) stdin_buf: Vec<u8>,
    /// Close stdin once `stdin_buf` drains.
    pub(crate) stdin_closing: bool,
    pub(crate) outputs: Vec<(File, u8)>,
    /// The pty master, for resizes.
    pub(crate) master: Option<RawFd>,
    pub(crate) status: Option<i32>,
}

impl Proc {
    pub(crate) fn new(stdin: Option<OwnedFd>, outputs: Vec<(OwnedFd, u8)>, tty: bool) -> io::Result<Proc> {
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

    pub(crate) fn close_stdin(&mut self) {
        if self.stdin_buf.is_empty() {
            self.stdin = None;
        } else {
            self.stdin_closing = true;
        }
    }

    pub(crate) fn flush_stdin(&mut self) {
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
