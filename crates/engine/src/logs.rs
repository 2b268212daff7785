//! `docker logs`: reads the json-file log (rotated files first), filters by stream, time and tail,
//! and follows the file while the container runs.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_api::containers::LogsOptions;
use berth_api::params::ByteStream;
use bytes::Bytes;
use serde::Deserialize;

use crate::Ctr;

const FOLLOW_POLL: Duration = Duration::from_millis(50);

#[derive(Deserialize)]
struct Entry {
    log: String,
    stream: String,
    time: String,
}

struct Filter {
    opts: LogsOptions,
    tty: bool,
}

impl Filter {
    /// The bytes to send for one log line, or None when it is filtered out. `Err(())`: past `until`.
    fn render(&self, line: &str) -> Result<Option<Bytes>, ()> {
        let Ok(e) = serde_json::from_str::<Entry>(line) else { return Ok(None) };
        let stderr = e.stream == "stderr";
        if (stderr && !self.opts.stderr) || (!stderr && !self.opts.stdout) {
            return Ok(None);
        }
        if self.opts.since > 0.0 || self.opts.until > 0.0 {
            let t = crate::record::unix_seconds(&e.time);
            if self.opts.since > 0.0 && t < self.opts.since {
                return Ok(None);
            }
            if self.opts.until > 0.0 && t > self.opts.until {
                return Err(());
            }
        }
        let mut payload = Vec::with_capacity(e.log.len() + 32);
        if self.opts.timestamps {
            payload.extend_from_slice(e.time.as_bytes());
            payload.push(b' ');
        }
        if self.opts.details {
            payload.push(b' ');
        }
        payload.extend_from_slice(e.log.as_bytes());
        if self.tty {
            return Ok(Some(Bytes::from(payload)));
        }
        let mut out = berth_shim::frame_header(if stderr { berth_shim::STDERR } else { berth_shim::STDOUT }, payload.len()).to_vec();
        out.extend_from_slice(&payload);
        Ok(Some(Bytes::from(out)))
    }
}

/// The log files, oldest first.
fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for e in entries.flatten() {
            let n = e.file_name();
            if let Some(num) = n.to_str().and_then(|s| s.strip_prefix(name)).and_then(|s| s.strip_prefix('.')).and_then(|s| s.parse().ok())
            {
                rotated.push((num, e.path()));
            }
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    out.push(path.to_path_buf());
    out
}

/// Stream the log of `ctr` as `opts` asks.
pub fn stream(ctr: Arc<Ctr>, opts: LogsOptions) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(32);
    let rec = ctr.rec();
    let filter = Filter { tty: rec.tty(), opts };
    let path = rec.log_path.clone();
    tokio::task::spawn_blocking(move || {
        let send = |b: Bytes| tx.blocking_send(Ok(b)).is_ok();
        // Everything already written; with a tail, only the last lines are held (never the whole log).
        let mut tail: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
        let mut past_until = false;
        'files: for f in files(&path) {
            let Ok(file) = std::fs::File::open(&f) else { continue };
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                match filter.render(&line) {
                    Ok(Some(b)) => match filter.opts.tail {
                        None => {
                            if !send(b) {
                                return;
                            }
                        }
                        Some(0) => {}
                        Some(n) => {
                            if tail.len() == n {
                                tail.pop_front();
                            }
                            tail.push_back(b);
                        }
                    },
                    Ok(None) => {}
                    Err(()) => {
                        past_until = true;
                        break 'files;
                    }
                }
            }
        }
        for b in tail {
            if !send(b) {
                return;
            }
        }
        if !filter.opts.follow || past_until {
            return;
        }
        // Follow: read what is appended until the container is not running any more.
        let Ok(mut file) = std::fs::File::open(&path) else { return };
        let mut pos = file.seek(SeekFrom::End(0)).unwrap_or(0);
        let mut ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
        let mut partial = String::new();
        loop {
            let running = ctr.rec().state.status.is_live() && !ctr.removed.load(std::sync::atomic::Ordering::SeqCst);
            // Rotated away: read what is left of the old file, then start the new one.
            let current = std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(ino);
            let mut reader = BufReader::new(&file);
            let _ = reader.seek(SeekFrom::Start(pos));
            loop {
                let mut buf = String::new();
                match reader.read_line(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pos += n as u64;
                        partial.push_str(&buf);
                        if !partial.ends_with('\n') {
                            continue;
                        }
                        let line = std::mem::take(&mut partial);
                        match filter.render(line.trim_end_matches('\n')) {
                            Ok(Some(b)) => {
                                if !send(b) {
                                    return;
                                }
                            }
                            Ok(None) => {}
                            Err(()) => return,
                        }
                    }
                }
            }
            if current != ino {
                match std::fs::File::open(&path) {
                    Ok(f) => {
                        file = f;
                        pos = 0;
                        ino = current;
                        continue;
                    }
                    Err(_) => return,
                }
            }
            if !running || tx.is_closed() {
                return;
            }
            std::thread::sleep(FOLLOW_POLL);
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_render_as_frames_or_raw() {
        let line = r#"{"log":"hi\n","stream":"stderr","time":"2026-01-01T00:00:00.5Z"}"#;
        let f = Filter { tty: false, opts: LogsOptions { stdout: true, stderr: true, ..Default::default() } };
        assert_eq!(&f.render(line).unwrap().unwrap()[..], b"\x02\0\0\0\0\0\0\x03hi\n");
        let f = Filter { tty: true, opts: LogsOptions { stdout: true, stderr: true, timestamps: true, ..Default::default() } };
        assert_eq!(&f.render(line).unwrap().unwrap()[..], b"2026-01-01T00:00:00.5Z hi\n");
        let f =
            Filter { tty: true, opts: LogsOptions { stdout: true, stderr: true, timestamps: true, details: true, ..Default::default() } };
        assert_eq!(&f.render(line).unwrap().unwrap()[..], b"2026-01-01T00:00:00.5Z  hi\n", "no attributes: a space");
        let f = Filter { tty: true, opts: LogsOptions { stdout: true, ..Default::default() } };
        assert_eq!(f.render(line).unwrap(), None);
        let since = crate::record::unix_seconds("2026-01-01T00:00:01Z");
        let f = Filter { tty: true, opts: LogsOptions { stdout: true, stderr: true, since, ..Default::default() } };
        assert_eq!(f.render(line).unwrap(), None);
        let f = Filter { tty: true, opts: LogsOptions { stdout: true, stderr: true, until: since - 1.0, ..Default::default() } };
        assert!(f.render(line).is_err());
    }
}
