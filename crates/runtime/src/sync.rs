//! The channel between the runtime and a container process it is setting up: a SEQPACKET
//! socket pair carrying one JSON message per packet.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, send, sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind, Result};

#[derive(Debug, Serialize, Deserialize)]
pub enum Msg {
    /// Parent → a new container's init, first: id maps written, cgroup joined; here is the
    /// container's OCI state (for the hooks the init runs itself).
    Begin { state: String },
    /// Parent → child: carry on (cgroup joined, for exec; hooks run, for init).
    Go,
    /// Child → parent: mounts are ready; run the prestart and createRuntime hooks now.
    RunHooks,
    /// Child → parent: set up and waiting for start (or about to exec, for exec).
    Ready,
    /// Child → parent: the seccomp filter is loaded; its listener travels with this message
    /// (SCM_RIGHTS) for the parent to hand to the seccomp agent, then answer Go.
    SeccompListener,
    /// Child → parent: setup failed.
    Failed { kind: WireKind, message: String },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum WireKind {
    ExecNotFound,
    ExecPermission,
    InvalidArgument,
    Other,
}

impl From<Kind> for WireKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::ExecNotFound => WireKind::ExecNotFound,
            Kind::ExecPermission => WireKind::ExecPermission,
            Kind::InvalidArgument => WireKind::InvalidArgument,
            _ => WireKind::Other,
        }
    }
}

impl From<WireKind> for Kind {
    fn from(k: WireKind) -> Self {
        match k {
            WireKind::ExecNotFound => Kind::ExecNotFound,
            WireKind::ExecPermission => Kind::ExecPermission,
            WireKind::InvalidArgument => Kind::InvalidArgument,
            WireKind::Other => Kind::Internal,
        }
    }
}

pub struct Channel(pub OwnedFd);

pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(Error::sys("creating the sync socket pair"))?;
    Ok((Channel(a), Channel(b)))
}

impl Channel {
    pub fn send(&self, msg: &Msg) -> Result<()> {
        let data = serde_json::to_vec(msg).unwrap_or_default();
        send(self.0.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL).map_err(Error::sys("sending on the sync socket"))?;
        Ok(())
    }

    /// `msg` with `fd` attached.
    pub fn send_with_fd(&self, msg: &Msg, fd: &OwnedFd) -> Result<()> {
        let data = serde_json::to_vec(msg).unwrap_or_default();
        let fds = [fd.as_raw_fd()];
        sendmsg::<()>(self.0.as_raw_fd(), &[IoSlice::new(&data)], &[ControlMessage::ScmRights(&fds)], MsgFlags::MSG_NOSIGNAL, None)
            .map_err(Error::sys("sending a descriptor on the sync socket"))?;
        Ok(())
    }

    /// The next message, or None when the other side closed the channel (it exited).
    pub fn recv(&self) -> Result<Option<Msg>> {
        Ok(self.recv_with_fd()?.map(|(m, _)| m))
    }

    /// The next message and the descriptor that came with it, if any.
    pub fn recv_with_fd(&self) -> Result<Option<(Msg, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let (n, fd) = match recvmsg::<()>(self.0.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(r) => {
                    let mut fd = None;
                    for c in r.cmsgs().map_err(Error::sys("reading the sync socket's control data"))? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for raw in fds {
                                // SAFETY: SCM_RIGHTS just installed `raw` in this process; nothing else owns it.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    (r.bytes, fd)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("reading the sync socket")(e)),
            };
            if n == 0 {
                return Ok(None);
            }
            return serde_json::from_slice(&buf[..n])
                .map(|m| Some((m, fd)))
                .map_err(|e| Error::State { id: String::new(), reason: format!("bad sync message: {e}") });
        }
    }
}
