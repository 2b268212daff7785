//! Foreground terminals: receive the pty master from the container and copy bytes between it
//! and our own stdin/stdout, with our terminal in raw mode while it runs.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, SetArg, Termios};

pub struct ConsoleListener {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl ConsoleListener {
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!(".console-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        Ok(ConsoleListener { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn accept(self) -> anyhow::Result<OwnedFd> {
        let (stream, _) = self.listener.accept().context("accepting the console connection")?;
        Ok(berth_runtime::console::recv_fd(stream.as_raw_fd())?)
    }
}

impl Drop for ConsoleListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub struct Proxy {
    master: OwnedFd,
    saved: Option<Termios>,
    stdin_open: bool,
}

impl Proxy {
    pub fn new(master: OwnedFd) -> anyhow::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
            // SAFETY: winsize is plain integers; all-zero is a valid value.
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: TIOCGWINSZ writes into the winsize we own.
            if unsafe { libc::ioctl(stdin.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0 {
                let _ = berth_runtime::console::set_size(master.as_raw_fd(), ws.ws_row, ws.ws_col);
            }
        }
        Ok(Proxy { master, saved, stdin_open: true })
    }

    /// Move whatever is ready in either direction, waiting at most `wait`.
    pub fn pump(&mut self, wait: std::time::Duration) -> anyhow::Result<()> {
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        if self.stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        let ms = wait.as_millis().min(u16::MAX as u128) as u16;
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let master_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let stdin_ready = fds.get(1).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
        let mut buf = [0u8; 8192];
        if master_ready {
            self.copy_out(&mut buf);
        }
        if stdin_ready {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(_) => self.stdin_open = false,
                Ok(n) => {
                    let _ = nix::unistd::write(&self.master, &buf[..n]);
                }
            }
        }
        Ok(())
    }

    fn copy_out(&self, buf: &mut [u8]) -> bool {
        match nix::unistd::read(&self.master, buf) {
            Ok(n) if n > 0 => {
                let _ = nix::unistd::write(std::io::stdout(), &buf[..n]);
                true
            }
            _ => false,
        }
    }

    /// Drain what the program wrote before it exited, and restore our terminal.
    pub fn finish(mut self) {
        let mut buf = [0u8; 8192];
        let _ = nix::fcntl::fcntl(&self.master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
        while self.copy_out(&mut buf) {}
        if let Some(t) = self.saved.take() {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &t);
        }
    }
}
