//! `berth cp` and `berth export`: Docker's rules for what goes where (trailing `/` and `/.`,
//! directories into directories, `-L`), over the archive endpoints. Local files are packed and
//! unpacked through descriptors (berth-store's pack and unpack), so an archive from a container
//! cannot write outside the destination, whatever its names and symlinks.

use std::ffi::OsStr;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use anyhow::{Context, bail};
use berth_models::containers::{PathStat, go_mode};
use berth_store::archive::{self, Owner};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::http::{Client, query};

#[derive(clap::Args)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information).
    #[arg(short = 'a', long)]
    archive: bool,
    /// Always follow a symbolic link in SRC_PATH.
    #[arg(short = 'L', long = "follow-link")]
    follow_link: bool,
    /// Suppress progress output.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// CONTAINER:SRC_PATH or a local path (`-`: a tar on stdin).
    src: String,
    /// CONTAINER:DEST_PATH or a local path (`-`: a tar on stdout).
    dest: String,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Write to a file instead of stdout.
    #[arg(short = 'o', long)]
    output: Option<String>,
    container: String,
}

/// Docker's split of a cp argument: `CONTAINER:PATH`, else a local path (absolute paths and
/// ones starting with `.` are always local, colons or not).
fn split_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.starts_with('.') => (Some(c), p),
        _ => (None, arg),
    }
}

/// Go's `filepath.Split` of a path whose trailing `/` or `/.` matter: (directory, last element).
fn split_entry(path: &str) -> (String, String) {
    let trimmed = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    let (dir, base) = match trimmed.rfind('/') {
        Some(0) if trimmed.len() == 1 => ("/".to_string(), "/".to_string()),
        Some(0) => ("/".to_string(), trimmed[1..].to_string()),
        Some(i) => (trimmed[..i].to_string(), trimmed[i + 1..].to_string()),
        None => (".".to_string(), trimmed.to_string()),
    };
    // `d/.` names the contents of d: its base is `.`, its directory d.
    (dir, base)
}

fn asserts_directory(path: &str) -> bool {
    path.ends_with('/') || path.ends_with("/.") || path == "."
}

fn stat_of(client: &Client, ctr: &str, path: &str) -> anyhow::Result<Option<PathStat>> {
    let q = query(&[("path", path.to_string())]);
    let r = client.send("HEAD", &format!("/containers/{ctr}/archive?{q}"), None, false)?;
    if r.status == 200 {
        let raw = r.header("X-Docker-Container-Path-Stat").context("the daemon sent no path stat")?;
        return Ok(Some(decode_stat(raw)?));
    }
    if r.status == 404 {
        // Which is missing, the container or the path? A GET says, with the daemon's words.
        let c = client.send("GET", &format!("/containers/{ctr}/json"), None, false)?;
        if c.status == 404 {
            c.ok()?;
        }
        return Ok(None);
    }
    // Anything else: the same request as a GET brings the daemon's message.
    client.send("GET", &format!("/containers/{ctr}/archive?{q}"), None, false)?.ok()?;
    bail!("stat of {ctr}:{path} failed with status {}", r.status)
}

fn decode_stat(raw: &str) -> anyhow::Result<PathStat> {
    use base64::Engine as _;
    let json = base64::engine::general_purpose::STANDARD.decode(raw.trim()).context("bad path stat header")?;
    serde_json::from_slice(&json).context("bad path stat header")
}

/// An I/O error as Go words it (`no such file or directory`).
fn reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let d = nix::errno::Errno::from_raw(n).desc();
            let mut c = d.chars();
            c.next().map(|f| f.to_lowercase().chain(c).collect()).unwrap_or_default()
        }
        None => e.to_string(),
    }
}

fn open_dir(path: &str) -> anyhow::Result<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).with_context(|| format!("opening {path}"))
}

pub fn cp(client: &Client, a: CpArgs) -> anyhow::Result<i32> {
    if a.src.is_empty() {
        bail!("source can not be empty");
    }
    if a.dest.is_empty() {
        bail!("destination can not be empty");
    }
    match (split_arg(&a.src), split_arg(&a.dest)) {
        ((Some(_), _), (Some(_), _)) => bail!("copying between containers is not supported"),
        ((None, _), (None, _)) => bail!("must specify at least one container source"),
        ((Some(c), p), (None, dst)) => from_container(client, c, p, dst, &a),
        ((None, src), (Some(c), p)) => to_container(client, src, c, p, &a),
    }
}

fn from_container(client: &Client, ctr: &str, src: &str, dst: &str, a: &CpArgs) -> anyhow::Result<i32> {
    let mut src = src.to_string();
    let mut rebase_name = None;
    if a.follow_link
        && let Some(st) = stat_of(client, ctr, &src)?
        && st.mode & go_mode::SYMLINK != 0
    {
        rebase_name = Some(split_entry(&src).1);
        src = st.link_target.clone();
    }
    let q = query(&[("path", src.clone())]);
    let r = client.send("GET", &format!("/containers/{ctr}/archive?{q}"), None, false)?.ok()?;
    let stat = decode_stat(r.header("X-Docker-Container-Path-Stat").context("the daemon sent no path stat")?)?;
    let mut body = r.body;
    if dst == "-" {
        let mut out = std::io::stdout().lock();
        std::io::copy(&mut body, &mut out)?;
        out.flush()?;
        return Ok(0);
    }
    let src_is_dir = stat.mode & go_mode::DIR != 0;
    // The archive's names start with this (`d`, `.`, `/`).
    let src_base = stat.name.clone();
    // Where the destination is, following a symlink there as Docker's CLI does.
    let dst_meta = std::fs::metadata(dst).ok();
    let (extract_in, new_name) = match dst_meta {
        Some(m) if m.is_dir() => (dst.to_string(), rebase_name.clone()),
        Some(_) if src_is_dir => bail!("cannot copy directory"),
        Some(_) => (split_entry(dst).0, Some(split_entry(dst).1)),
        None => {
            if asserts_directory(dst) {
                if src_is_dir {
                    // A new directory named by the path.
                    let (parent, base) = split_entry(dst);
                    (parent, Some(base))
                } else {
                    bail!("destination directory {dst} does not exist");
                }
            } else {
                let (parent, base) = split_entry(dst);
                if std::fs::metadata(&parent).map(|m| !m.is_dir()).unwrap_or(true) {
                    bail!("destination directory {parent} does not exist");
                }
                (parent, Some(base))
            }
        }
    };
    let mut opts = archive::Options::copy(Owner::Unchanged);
    if let Some(to) = new_name.filter(|n| *n != src_base) {
        opts.rebase = Some((src_base.clone(), to));
    }
    let mut counted = Counting { inner: body.by_ref(), n: 0 };
    archive::unpack(open_dir(&extract_in)?, &mut counted, opts)?;
    let copied = counted.n;
    if !a.quiet && std::io::stderr().is_terminal() {
        eprintln!("Successfully copied {} to {dst}", berth_format::human_size(copied, 3));
    }
    Ok(0)
}

struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

fn to_container(client: &Client, src: &str, ctr: &str, dst: &str, a: &CpArgs) -> anyhow::Result<i32> {
    let put = |path: &str, body: &mut dyn Read| -> anyhow::Result<()> {
        let mut pairs = vec![("path", path.to_string()), ("noOverwriteDirNonDir", "true".to_string())];
        if a.archive {
            pairs.push(("copyUIDGID", "true".to_string()));
        }
        let url = format!("/containers/{ctr}/archive?{}", query(&pairs));
        client.send("PUT", &url, Some(("application/x-tar", body)), false)?.ok()?;
        Ok(())
    };
    // The destination, a symlink there followed as Docker's CLI does.
    let mut dst_path = dst.to_string();
    let mut dst_stat = stat_of(client, ctr, &dst_path)?;
    if let Some(st) = &dst_stat
        && st.mode & go_mode::SYMLINK != 0
    {
        dst_path = st.link_target.clone();
        dst_stat = stat_of(client, ctr, &dst_path)?;
    }
    if src == "-" {
        match &dst_stat {
            Some(st) if st.mode & go_mode::DIR != 0 => {}
            _ => bail!("destination \"{ctr}:{dst}\" must be a directory"),
        }
        put(&dst_path, &mut std::io::stdin().lock())?;
        return Ok(0);
    }
    let meta = if a.follow_link { std::fs::metadata(src) } else { std::fs::symlink_metadata(src) }
        .map_err(|e| anyhow::anyhow!("lstat {src}: {}", reason(&e)))?;
    let (src_dir, src_base) = split_entry(src);
    let (extract_in, as_name) = match &dst_stat {
        Some(st) if st.mode & go_mode::DIR != 0 => (dst_path.clone(), src_base.clone()),
        Some(_) if meta.is_dir() => bail!("cannot copy directory"),
        _ if !meta.is_dir() && asserts_directory(&dst_path) => bail!("destination directory {ctr}:{dst} does not exist"),
        _ => {
            let (parent, base) = split_entry(&dst_path);
            (parent, base)
        }
    };
    // Packed on a thread while the upload streams it.
    let (mut reader, writer) = std::io::pipe()?;
    let follow = a.follow_link;
    let src_owned = src.to_string();
    let packer = std::thread::spawn(move || -> anyhow::Result<()> {
        let out = std::io::BufWriter::with_capacity(1 << 20, writer);
        // A directory's contents (`d/.`), the root, or a followed link to a directory.
        let whole_dir = src_base == "." || (src_base == "/" && src_dir == "/") || (follow && meta.is_dir());
        let written = if whole_dir {
            let dir = open_dir(&src_owned)?;
            berth_store::pack::pack(dir.as_fd(), None, &as_name, out)
        } else if follow && meta.is_file() {
            // The link's target under the link's name.
            let real = std::fs::canonicalize(&src_owned)?;
            let (d, b) = split_entry(&real.to_string_lossy());
            let dir = open_dir(&d)?;
            berth_store::pack::pack(dir.as_fd(), Some(OsStr::from_bytes(b.as_bytes())), &as_name, out)
        } else {
            let dir = open_dir(&src_dir)?;
            berth_store::pack::pack(dir.as_fd(), Some(OsStr::from_bytes(src_base.as_bytes())), &as_name, out)
        };
        let mut out = written?;
        out.flush()?;
        Ok(())
    });
    let sent = put(&extract_in, &mut reader);
    drop(reader);
    let packed = packer.join().map_err(|_| anyhow::anyhow!("the packing thread panicked"))?;
    sent?;
    packed?;
    if !a.quiet && std::io::stderr().is_terminal() {
        eprintln!("Successfully copied to {ctr}:{dst}");
    }
    Ok(0)
}

pub fn export(client: &Client, a: ExportArgs) -> anyhow::Result<i32> {
    let mut r = client.send("GET", &format!("/containers/{}/export", a.container), None, false)?.ok()?;
    match &a.output {
        Some(path) => {
            let mut f = std::fs::File::create(path).with_context(|| format!("creating {path}"))?;
            std::io::copy(&mut r.body, &mut f)?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            if out.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            std::io::copy(&mut r.body, &mut out)?;
            out.flush()?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_as_dockers() {
        assert_eq!(split_arg("c:/x"), (Some("c"), "/x"));
        assert_eq!(split_arg("/a:b"), (None, "/a:b"));
        assert_eq!(split_arg("./a:b"), (None, "./a:b"));
        assert_eq!(split_arg("file"), (None, "file"));
        assert_eq!(split_entry("/d/."), ("/d".into(), ".".into()));
        assert_eq!(split_entry("/d/"), ("/".into(), "d".into()));
        assert_eq!(split_entry("/"), ("/".into(), "/".into()));
        assert_eq!(split_entry("f"), (".".into(), "f".into()));
        assert!(asserts_directory("x/") && asserts_directory("x/.") && !asserts_directory("x"));
    }
}
