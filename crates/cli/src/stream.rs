//! Attach, exec and logs streams: demultiplexing Docker's frames, stdin relaying, raw terminal
//! mode with resizes on SIGWINCH, and waiting for a container's exit code.

use std::io::{BufReader, Read, Write};
use std::os::fd::AsRawFd;

use anyhow::Context;

use crate::http::{Client, Conn, query};

pub fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// `--since`/`--until`: Unix seconds, RFC 3339, or a duration ago (`10m`, `1h`).
pub fn parse_time(s: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    Ok(format!("{:.9}", berth_format::parse_timestamp(s, now)?))
}

/// Copy a log or attach stream to our stdout/stderr: frames are split by stream without a TTY.
pub fn copy_output(mut r: impl Read, tty: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if tty {
        let mut buf = [0u8; 32 << 10];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n])?;
            out.flush()?;
        }
    }
    let mut header = [0u8; 8];
    let mut payload = Vec::new();
    loop {
        if r.read_exact(&mut header).is_err() {
            return Ok(());
        }
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        payload.resize(len, 0);
        r.read_exact(&mut payload)?;
        if header[0] == 2 {
            let mut e = std::io::stderr().lock();
            e.write_all(&payload)?;
            e.flush()?;
        } else {
            out.write_all(&payload)?;
            out.flush()?;
        }
    }
}

/// A hijacked attach connection (made before the container starts, so no output is missed).
pub struct Attached {
    reader: BufReader<Conn>,
    keys: Option<String>,
}

pub fn attach(client: &Client, id: &str, stdin: bool, detach_keys: Option<&str>) -> anyhow::Result<Attached> {
    let mut q = vec![("stream", "1".to_string()), ("stdout", "1".into()), ("stderr", "1".into())];
    if stdin {
        q.push(("stdin", "1".into()));
    }
    if let Some(k) = detach_keys {
        q.push(("detachKeys", k.to_string()));
    }
    let resp = client.send("POST", &format!("/containers/{id}/attach?{}", query(&q)), None, true)?.ok()?;
    let (reader, _) = resp.into_conn();
    Ok(Attached { reader, keys: detach_keys.map(str::to_string) })
}

/// `wait` sent before the start, answered when the container exits.
pub struct Waiter {
    handle: std::thread::JoinHandle<anyhow::Result<i32>>,
}

impl Waiter {
    pub fn start(client: &Client, id: &str, condition: &str) -> anyhow::Result<Waiter> {
        let resp = client.send("POST", &format!("/containers/{id}/wait?condition={condition}"), None, false)?.ok()?;
        let handle = std::thread::spawn(move || -> anyhow::Result<i32> {
            let v = resp.json()?;
            Ok(v["StatusCode"].as_i64().unwrap_or(0) as i32)
        });
        Ok(Waiter { handle })
    }

    pub fn code(self) -> anyhow::Result<i32> {
        self.handle.join().map_err(|_| anyhow::anyhow!("wait thread panicked"))?
    }
}

/// Raw mode for our terminal while attached to a TTY; restored on drop.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = nix::sys::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let r = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Resize the remote terminal now and on every SIGWINCH.
fn follow_resizes(client: &Client, path: String) {
    let send = {
        let client = client.clone();
        move || {
            if let Some((h, w)) = terminal_size() {
                let _ = client.post(&format!("{path}?h={h}&w={w}"));
            }
        }
    };
    send();
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGWINCH);
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        while set.wait().is_ok() {
            send();
        }
    });
}

/// Relay an attach stream: our stdin in (if asked), its output out. Returns true when the user
/// detached (the container keeps running).
pub fn relay(client: &Client, a: Attached, tty: bool, stdin: bool, id: &str, resize: bool) -> anyhow::Result<bool> {
    let interactive_tty = tty && is_tty(0) && stdin;
    let _raw = if interactive_tty { RawMode::enter() } else { None };
    if tty && (resize || interactive_tty) && is_tty(1) {
        follow_resizes(client, format!("/containers/{id}/resize"));
    }
    let writer = a.reader.get_ref().try_clone().context("cloning the attach connection")?;
    if stdin {
        pump_stdin(writer, berth_format::detach_keys(a.keys.as_deref()));
    } else {
        writer.shutdown_write();
    }
    copy_output(a.reader, tty)?;
    Ok(DETACHED.load(std::sync::atomic::Ordering::SeqCst))
}

/// Set when the detach sequence went through our stdin: the daemon then ends the stream
/// with the container still running.
static DETACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn pump_stdin(mut writer: Conn, keys: Vec<u8>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 32 << 10];
        let mut input = std::io::stdin();
        let mut matched = 0;
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for &b in &buf[..n] {
                        if !keys.is_empty() && b == keys[matched] {
                            matched += 1;
                            if matched == keys.len() {
                                DETACHED.store(true, std::sync::atomic::Ordering::SeqCst);
                                matched = 0;
                            }
                        } else {
                            matched = usize::from(!keys.is_empty() && b == keys[0]);
                        }
                    }
                    if writer.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        writer.shutdown_write();
    });
}

/// Relay an exec's hijacked stream.
pub fn relay_exec(client: &Client, resp: crate::http::Response, tty: bool, stdin: bool, exec_id: &str) -> anyhow::Result<()> {
    let (reader, _) = resp.into_conn();
    let interactive_tty = tty && stdin && is_tty(0);
    let _raw = if interactive_tty { RawMode::enter() } else { None };
    if tty && is_tty(1) {
        follow_resizes(client, format!("/exec/{exec_id}/resize"));
    }
    let writer = reader.get_ref().try_clone()?;
    if stdin {
        pump_stdin(writer, berth_format::detach_keys(None));
    } else {
        writer.shutdown_write();
    }
    copy_output(reader, tty)
}
