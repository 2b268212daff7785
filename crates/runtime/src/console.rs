//! Terminals: the container makes a pty inside its own devpts and sends the master to whoever
//! listens on the console socket (SCM_RIGHTS), as runc's `--console-socket` does.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::error::{Error, Result};

/// Open a new pty pair in the current /dev/pts; returns (master, slave, slave path).
pub fn open_pty(size: Option<(u16, u16)>) -> Result<(OwnedFd, OwnedFd, String)> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(Error::sys("opening /dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(Error::sys("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(Error::sys("unlockpt"))?;
    let name = nix::pty::ptsname_r(&master).map_err(Error::sys("ptsname"))?;
    let slave = nix::fcntl::open(Path::new(&name), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(Error::sys(format!("opening {name}")))?;
    if let Some((rows, cols)) = size {
        set_size(master.as_raw_fd(), rows, cols)?;
    }
    // SAFETY: PtyMaster owns a valid fd; into_raw_fd hands that ownership to the OwnedFd.
    let master = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) };
    Ok((master, slave, name))
}

pub fn set_size(fd: RawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    nix::errno::Errno::result(rc).map(drop).map_err(Error::sys("setting the terminal size"))
}

/// Make `slave` the calling process's controlling terminal and its stdio.
pub fn become_terminal(slave: &OwnedFd) -> Result<()> {
    nix::unistd::setsid().map_err(Error::sys("setsid"))?;
    // SAFETY: TIOCSCTTY takes an int argument; the fd is a valid open terminal.
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    nix::errno::Errno::result(rc).map_err(Error::sys("making the pty the controlling terminal"))?;
    for target in 0..3 {
        // SAFETY: dup2 onto 0..2 replaces stdio; both descriptors are valid.
        let rc = unsafe { libc::dup2(slave.as_raw_fd(), target) };
        nix::errno::Errno::result(rc).map_err(Error::sys("dup2 of the pty onto stdio"))?;
    }
    Ok(())
}

/// Send `fd` over a connected unix socket with `name` as the payload.
pub fn send_fd(socket: RawFd, fd: RawFd, name: &str) -> Result<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(socket, &iov, &cmsg, MsgFlags::empty(), None).map_err(Error::sys("sending the pty master on the console socket"))?;
    Ok(())
}

/// Receive one fd sent with [`send_fd`].
pub fn recv_fd(socket: RawFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg =
        recvmsg::<()>(socket, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).map_err(Error::sys("receiving the pty master"))?;
    for c in msg.cmsgs().map_err(Error::sys("reading control messages"))? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err(Error::State { id: String::new(), reason: "console socket message carried no file descriptor".into() })
}
