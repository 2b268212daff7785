//! berth-shim <bundle>: the parent of one container. Creates it with berth-runtime (from this
//! single-threaded process), holds its stdio (pipes, or the pty master), writes its output to a
//! json-file log, serves attach/exec/kill/resize/wait on `shim.sock`, reaps it and records the exit
//! status atomically, then cleans up the runtime state and exits. One thread, one poll loop, no
//! async runtime: its memory is a few pages of buffers.

mod clients;
mod exit;
mod log;
mod probe;
mod requests;
mod shim;
mod stdio;

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

use crate::clients::*;
use crate::shim::*;
use crate::stdio::*;

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

/// Our ends of a process's stdio: its stdin (if any) and its outputs with their stream ids.
type Ends = (Option<OwnedFd>, Vec<(OwnedFd, u8)>);

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
