//! Logging drivers and `docker logs`. The drivers are Docker's `json-file`, `local` and `none`
//! (the shim writes the files, in `berth_shim::logfile`'s formats); their options are checked
//! and defaulted here as dockerd checks and defaults them. Reading goes through the rotated and
//! compressed files in order with stream, time and tail filters — a tail reads the live file
//! from its end and older files only when it needs them, a `since` skips rotated files last
//! written before it — and follows the live file while the container runs.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_api::containers::{HostConfig, LogConfig, LogsOptions};
use berth_api::params::ByteStream;
use berth_api::{ApiError, Kind};
use berth_shim::logfile::{self, Entry, Format};
use bytes::Bytes;

use crate::Ctr;

const FOLLOW_POLL: Duration = Duration::from_millis(50);
/// The local driver's defaults (dockerd's).
const LOCAL_MAX_SIZE: u64 = 20 << 20;
const LOCAL_MAX_FILE: u32 = 5;

fn bad(m: String) -> ApiError {
    ApiError::new(Kind::InvalidArgument, m)
}

/// How a container's output is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub format: Format,
    pub max_size: u64,
    pub max_file: u32,
    pub compress: bool,
}

/// Docker's checks of a driver's options: keys it knows, values that parse.
pub fn check_opts(driver: &str, opts: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let known: &[&str] = match driver {
        "" | "json-file" => &["max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag"],
        "local" => &["max-size", "max-file", "compress"],
        _ => return Ok(()),
    };
    for k in opts.keys() {
        if !known.contains(&k.as_str()) {
            return Err(bad(match driver {
                "local" => format!("unknown log opt '{k}' for log driver local"),
                _ => format!("unknown log opt '{k}' for json-file log driver"),
            }));
        }
    }
    settings(driver, opts).map(|_| ())
}

/// The settings of `driver` with `opts`, with berthd's json-file rotation (`fallback`: its
/// max-size and max-file) where the options leave it unbounded.
pub fn settings_or(driver: &str, opts: &BTreeMap<String, String>, fallback: (u64, u32)) -> Result<Settings, ApiError> {
    let mut s = settings(driver, opts)?;
    if s.format == Format::JsonFile {
        if !opts.contains_key("max-size") {
            s.max_size = fallback.0;
        }
        if !opts.contains_key("max-file") {
            s.max_file = fallback.1.max(1);
        }
    }
    Ok(s)
}

/// The settings of `driver` with `opts`, as dockerd's drivers default them.
pub fn settings(driver: &str, opts: &BTreeMap<String, String>) -> Result<Settings, ApiError> {
    let local = driver == "local";
    let max_size = match opts.get("max-size").map(String::as_str) {
        None => {
            if local {
                LOCAL_MAX_SIZE
            } else {
                0
            }
        }
        Some("-1") => 0,
        Some(s) => crate::containers::parse_size(s)?,
    };
    let max_file = match opts.get("max-file") {
        Some(f) => f.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| bad(format!("invalid value for max-file: {f}")))?,
        None if local => LOCAL_MAX_FILE,
        None => 1,
    };
    let compress = match opts.get("compress").map(String::as_str) {
        None => local,
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
        Some(v) => return Err(bad(format!("error reading compress log option: strconv.ParseBool: parsing {v:?}: invalid syntax"))),
    };
    if !local && compress && max_file < 2 {
        return Err(bad("compress cannot be true when max-file is less than 2".into()));
    }
    Ok(Settings { format: if local { Format::Local } else { Format::JsonFile }, max_size, max_file, compress })
}

/// Docker's merge at create: no driver takes the daemon's, and the daemon's options fill in
/// where the container uses the daemon's driver.
pub fn merge_defaults(lc: Option<LogConfig>, driver: &str, opts: &BTreeMap<String, String>) -> LogConfig {
    let mut lc = lc.unwrap_or_default();
    if lc.typ.is_empty() {
        lc.typ = driver.to_string();
    }
    let config = lc.config.get_or_insert_with(BTreeMap::new);
    if lc.typ == driver {
        for (k, v) in opts {
            config.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    lc
}

/// The log config a container runs with. Create stores the merged one in the record; a record
/// without a driver predates that merge and was made when json-file was the only driver (its
/// file is `<id>-json.log`), so it stays json-file whatever the daemon's default is now: the
/// driver is decided once, and `logs` reads by the same rule (`format_of`).
pub fn of_record(hc: &HostConfig, daemon_driver: &str, daemon_opts: &BTreeMap<String, String>) -> LogConfig {
    match &hc.log_config {
        Some(lc) if !lc.typ.is_empty() => lc.clone(),
        lc => {
            let no_opts = BTreeMap::new();
            let opts = if daemon_driver == "json-file" { daemon_opts } else { &no_opts };
            merge_defaults(lc.clone(), "json-file", opts)
        }
    }
}

/// Where a container's log lives: dockerd's names.
pub fn path_for(dir: &Path, id: &str, driver: &str) -> PathBuf {
    match driver {
        "local" => dir.join("local-logs").join("container.log"),
        _ => dir.join(format!("{id}-json.log")),
    }
}

/// The format of a container's log, by its driver.
pub fn format_of(hc: &HostConfig) -> Format {
    if hc.log_config.as_ref().is_some_and(|l| l.typ == "local") { Format::Local } else { Format::JsonFile }
}

/// What becomes of one entry.
#[derive(Debug, PartialEq)]
enum Verdict {
    Send(Bytes),
    /// Not asked for (the other stream).
    Skip,
    /// Older than `since`.
    Before,
    /// Newer than `until`.
    After,
}

struct Filter {
    opts: LogsOptions,
    tty: bool,
}

impl Filter {
    fn render(&self, e: &Entry) -> Verdict {
        let stderr = e.stream == berth_shim::STDERR;
        if (stderr && !self.opts.stderr) || (!stderr && !self.opts.stdout) {
            return Verdict::Skip;
        }
        if self.opts.since > 0.0 || self.opts.until > 0.0 {
            let t = crate::record::unix_seconds(&e.time);
            if self.opts.since > 0.0 && t < self.opts.since {
                return Verdict::Before;
            }
            if self.opts.until > 0.0 && t > self.opts.until {
                return Verdict::After;
            }
        }
        let mut payload = Vec::with_capacity(e.line.len() + 32);
        if self.opts.timestamps {
            payload.extend_from_slice(e.time.as_bytes());
            payload.push(b' ');
        }
        if self.opts.details {
            payload.push(b' ');
        }
        payload.extend_from_slice(&e.line);
        if self.tty {
            return Verdict::Send(Bytes::from(payload));
        }
        let mut out = berth_shim::frame_header(if stderr { berth_shim::STDERR } else { berth_shim::STDOUT }, payload.len()).to_vec();
        out.extend_from_slice(&payload);
        Verdict::Send(Bytes::from(out))
    }
}

/// Rotated files whose last write came before `since` hold nothing newer: skipped unopened.
fn written_since(f: &Path, since: f64) -> bool {
    since <= 0.0
        || std::fs::metadata(f)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .is_none_or(|d| d.as_secs_f64() >= since)
}

/// The last `n` entries to send, oldest first: the live file read from its end, older files
/// (newest first) only while more are needed.
fn tail(files: &[PathBuf], format: Format, filter: &Filter, n: usize) -> Vec<Bytes> {
    let mut picked: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
    let Some((live, older)) = files.split_last() else { return Vec::new() };
    let mut reached_since = false;
    let _ = logfile::read_back(live, format, |e| match filter.render(&e) {
        Verdict::Send(b) => {
            picked.push_front(b);
            picked.len() < n
        }
        Verdict::Skip | Verdict::After => true,
        Verdict::Before => {
            reached_since = true;
            false
        }
    });
    for f in older.iter().rev() {
        if picked.len() >= n || reached_since || !written_since(f, filter.opts.since) {
            break;
        }
        let want = n - picked.len();
        let mut ring: std::collections::VecDeque<Bytes> = std::collections::VecDeque::with_capacity(want);
        let Ok(reader) = logfile::Reader::open(f, format) else { continue };
        for e in reader {
            match filter.render(&e) {
                Verdict::Send(b) => {
                    if ring.len() == want {
                        ring.pop_front();
                    }
                    ring.push_back(b);
                }
                Verdict::After => break,
                Verdict::Skip | Verdict::Before => {}
            }
        }
        for b in ring.into_iter().rev() {
            picked.push_front(b);
        }
    }
    picked.into()
}

/// Stream the log of `ctr` as `opts` asks.
pub(crate) fn stream(ctr: Arc<Ctr>, opts: LogsOptions) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(32);
    let rec = ctr.rec();
    let filter = Filter { tty: rec.tty(), opts };
    let path = rec.log_path.clone();
    let format = format_of(&rec.host_config);
    tokio::task::spawn_blocking(move || {
        let send = |b: Bytes| tx.blocking_send(Ok(b)).is_ok();
        // Where the live file was when the history was read: following starts there.
        let start = std::fs::metadata(&path).map(|m| (m.ino(), m.len())).ok();
        let files = logfile::files(&path);
        let mut past_until = false;
        match filter.opts.tail {
            Some(0) => {}
            Some(n) => {
                for b in tail(&files, format, &filter, n) {
                    if !send(b) {
                        return;
                    }
                }
            }
            None => {
                let last = files.len().saturating_sub(1);
                'files: for (i, f) in files.iter().enumerate() {
                    if i < last && !written_since(f, filter.opts.since) {
                        continue;
                    }
                    let Ok(reader) = logfile::Reader::open(f, format) else { continue };
                    for e in reader {
                        match filter.render(&e) {
                            Verdict::Send(b) => {
                                if !send(b) {
                                    return;
                                }
                            }
                            Verdict::After => {
                                past_until = true;
                                break 'files;
                            }
                            Verdict::Skip | Verdict::Before => {}
                        }
                    }
                }
            }
        }
        if !filter.opts.follow || past_until {
            return;
        }
        follow(&ctr, &path, format, &filter, start, &send, &|| tx.is_closed());
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

/// Send what is appended to the live file until the container is not running any more,
/// going on in the new file after a rotation.
/// `hung_up`: the client went (checked at each poll, so a quiet container's follower ends too).
fn follow(
    ctr: &Ctr,
    path: &Path,
    format: Format,
    filter: &Filter,
    start: Option<(u64, u64)>,
    send: &dyn Fn(Bytes) -> bool,
    hung_up: &dyn Fn() -> bool,
) {
    let Ok(mut file) = std::fs::File::open(path) else { return };
    let mut ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
    // From where the history ended (the file it read may have been rotated away since).
    let mut pos = match start {
        Some((i, len)) if i == ino => len,
        _ => 0,
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let running = ctr.rec().state.status.is_live() && !ctr.removed.load(std::sync::atomic::Ordering::SeqCst);
        let current = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(ino);
        if file.seek(SeekFrom::Start(pos)).is_err() {
            return;
        }
        loop {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pos += n as u64;
                    pending.extend_from_slice(&buf[..n]);
                    let (entries, used) = logfile::split_entries(format, &pending);
                    pending.drain(..used);
                    for e in entries {
                        match filter.render(&e) {
                            Verdict::Send(b) => {
                                if !send(b) {
                                    return;
                                }
                            }
                            Verdict::After => return,
                            Verdict::Skip | Verdict::Before => {}
                        }
                    }
                }
            }
        }
        // Rotated away: what was left of the old file is read; the new one starts.
        if current != ino {
            match std::fs::File::open(path) {
                Ok(f) => {
                    file = f;
                    pos = 0;
                    ino = current;
                    pending.clear();
                    continue;
                }
                Err(_) => return,
            }
        }
        if !running || hung_up() {
            return;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: u8, time: &str, line: &str) -> Entry {
        Entry { stream, time: time.into(), line: line.as_bytes().to_vec() }
    }

    #[test]
    fn entries_render_as_frames_or_raw() {
        let e = entry(berth_shim::STDERR, "2026-01-01T00:00:00.5Z", "hi\n");
        let f = Filter { tty: false, opts: LogsOptions { stdout: true, stderr: true, ..Default::default() } };
        assert_eq!(f.render(&e), Verdict::Send(Bytes::from_static(b"\x02\0\0\0\0\0\0\x03hi\n")));
        let f = Filter { tty: true, opts: LogsOptions { stdout: true, stderr: true, timestamps: true, ..Default::default() } };
        assert_eq!(f.render(&e), Verdict::Send(Bytes::from_static(b"2026-01-01T00:00:00.5Z hi\n")));
        let f =
            Filter { tty: true, opts: LogsOptions { stdout: true, stderr: true, timestamps: true, details: true, ..Default::default() } };
        assert_eq!(f.render(&e), Verdict::Send(Bytes::from_static(b"2026-01-01T00:00:00.5Z  hi\n")), "no attributes: a space");
        let f = Filter { tty: true, opts: LogsOptions { stdout: true, ..Default::default() } };
        assert_eq!(f.render(&e), Verdict::Skip);
        let since = crate::record::unix_seconds("2026-01-01T00:00:01Z");
        let f = Filter { tty: true, opts: LogsOptions { stdout: true, stderr: true, since, ..Default::default() } };
        assert_eq!(f.render(&e), Verdict::Before);
        let f = Filter { tty: true, opts: LogsOptions { stdout: true, stderr: true, until: since - 1.0, ..Default::default() } };
        assert_eq!(f.render(&e), Verdict::After);
    }

    #[test]
    fn options_checked_and_defaulted_as_dockerds() {
        let o = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        assert_eq!(
            settings("local", &o(&[])).unwrap(),
            Settings { format: Format::Local, max_size: 20 << 20, max_file: 5, compress: true }
        );
        assert_eq!(
            settings("json-file", &o(&[("max-size", "1m"), ("max-file", "3"), ("compress", "true")])).unwrap(),
            Settings { format: Format::JsonFile, max_size: 1 << 20, max_file: 3, compress: true }
        );
        assert_eq!(settings("json-file", &o(&[])).unwrap().max_file, 1);
        for (driver, opts, want) in [
            ("json-file", o(&[("compress", "true")]), "compress cannot be true when max-file is less than 2"),
            ("json-file", o(&[("compress", "yes")]), "error reading compress log option"),
            ("json-file", o(&[("max-file", "0")]), "invalid value for max-file: 0"),
            ("json-file", o(&[("max-size", "lots")]), "lots"),
            ("json-file", o(&[("mode", "non-blocking")]), "unknown log opt 'mode' for json-file log driver"),
            ("local", o(&[("tag", "x")]), "unknown log opt 'tag' for log driver local"),
        ] {
            let e = check_opts(driver, &opts).unwrap_err();
            assert!(e.message.contains(want), "{driver} {opts:?}: {}", e.message);
        }
        // The daemon's options fill in only for its own driver.
        let daemon = o(&[("max-size", "10m")]);
        let lc = merge_defaults(None, "json-file", &daemon);
        assert_eq!((lc.typ.as_str(), lc.config.unwrap().get("max-size").map(String::as_str)), ("json-file", Some("10m")));
        let lc = merge_defaults(Some(LogConfig { typ: "local".into(), config: None }), "json-file", &daemon);
        assert_eq!((lc.typ.as_str(), lc.config.unwrap().len()), ("local", 0));
    }

    #[test]
    fn a_record_from_before_the_merge_keeps_json_file() {
        let o = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        let old = HostConfig::default();
        // The daemon's default changed to local since: the record's file is still JSON.
        let lc = of_record(&old, "local", &o(&[("max-size", "1m")]));
        assert_eq!((lc.typ.as_str(), lc.config.unwrap().len()), ("json-file", 0));
        assert_eq!(format_of(&old), Format::JsonFile);
        // A json-file daemon lends its options.
        let lc = of_record(&old, "json-file", &o(&[("max-size", "1m")]));
        assert_eq!(lc.config.unwrap().get("max-size").map(String::as_str), Some("1m"));
        // A merged record is taken as it is.
        let local = HostConfig { log_config: Some(LogConfig { typ: "local".into(), config: None }), ..Default::default() };
        assert_eq!(of_record(&local, "json-file", &o(&[("max-size", "1m")])).typ, "local");
        assert_eq!(format_of(&local), Format::Local);
    }

    #[test]
    fn a_tail_reads_older_files_only_when_it_needs_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let write = |path: &Path, from: usize, to: usize| {
            let mut out = Vec::new();
            for i in from..to {
                logfile::encode(Format::JsonFile, &mut out, berth_shim::STDOUT, format!("{i}\n").as_bytes(), std::time::SystemTime::now());
            }
            std::fs::write(path, out).unwrap();
        };
        write(&dir.path().join("c-json.log.2"), 0, 5);
        write(&dir.path().join("c-json.log.1"), 5, 10);
        write(&p, 10, 13);
        let files = logfile::files(&p);
        let f = Filter { tty: true, opts: LogsOptions { stdout: true, stderr: true, ..Default::default() } };
        let text = |v: Vec<Bytes>| v.iter().map(|b| String::from_utf8_lossy(b).trim().to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(text(tail(&files, Format::JsonFile, &f, 2)), "11,12");
        assert_eq!(text(tail(&files, Format::JsonFile, &f, 7)), "6,7,8,9,10,11,12");
        assert_eq!(text(tail(&files, Format::JsonFile, &f, 100)), "0,1,2,3,4,5,6,7,8,9,10,11,12");
        // An unreadable older file is not needed for a tail the live file satisfies.
        std::fs::write(dir.path().join("c-json.log.1"), b"garbage\n").unwrap();
        assert_eq!(text(tail(&files, Format::JsonFile, &f, 3)), "10,11,12");
    }
}
