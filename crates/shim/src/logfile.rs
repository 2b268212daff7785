//! The log files a shim writes and the engine reads back: Docker's `json-file` format (one JSON
//! object per line) and its `local` format (length-framed protobuf `LogEntry` records, as
//! dockerd's local driver writes them). Either is rotated to `<path>.1`, `<path>.2` … (the
//! highest the oldest), each rotated file gzipped to `<path>.N.gz` when compression is on.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A record of the local format larger than this is taken as a corrupt file (lines are split
/// at 16 KiB before they are written).
const MAX_RECORD: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    #[default]
    JsonFile,
    Local,
}

/// One logged line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// [`crate::STDOUT`] or [`crate::STDERR`].
    pub stream: u8,
    /// RFC 3339 with nanoseconds, as the file has it.
    pub time: String,
    /// The line with its newline (none for the last piece of a stream that ended without one).
    pub line: Vec<u8>,
}

fn stream_name(stream: u8) -> &'static str {
    if stream == crate::STDERR { "stderr" } else { "stdout" }
}

/// Go's RFC3339Nano: the fraction without trailing zeros.
fn rfc3339_nano(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_nanos(t).to_string();
    match s.split_once('.') {
        Some((whole, frac)) => {
            let digits = frac.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() { format!("{whole}Z") } else { format!("{whole}.{digits}Z") }
        }
        None => s,
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Append one entry for `line` (with its newline, if it has one) in `format`.
pub fn encode(format: Format, out: &mut Vec<u8>, stream: u8, line: &[u8], now: SystemTime) {
    match format {
        Format::JsonFile => {
            let time = humantime::format_rfc3339_nanos(now).to_string();
            let v = serde_json::json!({"log": String::from_utf8_lossy(line), "stream": stream_name(stream), "time": time});
            if serde_json::to_writer(&mut *out, &v).is_ok() {
                out.push(b'\n');
            }
        }
        Format::Local => {
            // LogEntry { source = 1; time_nano = 2; line = 3 (without its newline); partial = 4 }
            let (text, partial) = match line.strip_suffix(b"\n") {
                Some(t) => (t, false),
                None => (line, true),
            };
            let nanos = now.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
            let mut msg = Vec::with_capacity(text.len() + 32);
            let source = stream_name(stream).as_bytes();
            msg.push(0x0a);
            varint(&mut msg, source.len() as u64);
            msg.extend_from_slice(source);
            msg.push(0x10);
            varint(&mut msg, nanos);
            msg.push(0x1a);
            varint(&mut msg, text.len() as u64);
            msg.extend_from_slice(text);
            if partial {
                msg.extend_from_slice(&[0x20, 1]);
            }
            let size = (msg.len() as u32).to_be_bytes();
            out.extend_from_slice(&size);
            out.extend_from_slice(&msg);
            out.extend_from_slice(&size);
        }
    }
}

#[derive(Deserialize)]
struct JsonEntry {
    log: String,
    stream: String,
    time: String,
}

fn json_entry(line: &[u8]) -> Option<Entry> {
    let e: JsonEntry = serde_json::from_slice(line).ok()?;
    let stream = if e.stream == "stderr" { crate::STDERR } else { crate::STDOUT };
    Some(Entry { stream, time: e.time, line: e.log.into_bytes() })
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// A local-format record's message: None when it does not parse.
fn local_entry(msg: &[u8]) -> Option<Entry> {
    let (mut pos, mut stream, mut nanos, mut line, mut partial) = (0, crate::STDOUT, 0u64, Vec::new(), false);
    while pos < msg.len() {
        let key = read_varint(msg, &mut pos)?;
        match (key >> 3, key & 7) {
            (_, 0) => {
                let v = read_varint(msg, &mut pos)?;
                match key >> 3 {
                    2 => nanos = v,
                    4 => partial = v != 0,
                    _ => {}
                }
            }
            (field, 2) => {
                let len = usize::try_from(read_varint(msg, &mut pos)?).ok()?;
                let data = msg.get(pos..pos.checked_add(len)?)?;
                pos += len;
                match field {
                    1 if data == b"stderr" => stream = crate::STDERR,
                    3 => line = data.to_vec(),
                    _ => {}
                }
            }
            (_, 1) => pos = pos.checked_add(8)?,
            (_, 5) => pos = pos.checked_add(4)?,
            _ => return None,
        }
    }
    if pos > msg.len() {
        return None;
    }
    if !partial {
        line.push(b'\n');
    }
    Some(Entry { stream, time: rfc3339_nano(UNIX_EPOCH + Duration::from_nanos(nanos)), line })
}

/// Entries of one log file, oldest first.
pub struct Reader {
    format: Format,
    inner: Box<dyn BufRead + Send>,
    buf: Vec<u8>,
}

impl Reader {
    /// Open a log file (gzip-compressed if its name ends in `.gz`).
    pub fn open(path: &Path, format: Format) -> io::Result<Reader> {
        let f = File::open(path)?;
        let inner: Box<dyn BufRead + Send> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(f)))
        } else {
            Box::new(BufReader::with_capacity(64 << 10, f))
        };
        Ok(Reader { format, inner, buf: Vec::new() })
    }
}

impl Iterator for Reader {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            self.buf.clear();
            match self.format {
                Format::JsonFile => {
                    // A line that does not parse (one being written) is skipped.
                    let n = self.inner.read_until(b'\n', &mut self.buf).ok()?;
                    if n == 0 || !self.buf.ends_with(b"\n") {
                        return None;
                    }
                    if let Some(e) = json_entry(&self.buf) {
                        return Some(e);
                    }
                }
                Format::Local => {
                    let mut size = [0u8; 4];
                    self.inner.read_exact(&mut size).ok()?;
                    let n = u32::from_be_bytes(size) as usize;
                    if n > MAX_RECORD {
                        return None;
                    }
                    self.buf.resize(n + 4, 0);
                    self.inner.read_exact(&mut self.buf).ok()?;
                    return local_entry(&self.buf[..n]);
                }
            }
        }
    }
}

/// The complete entries at the start of `buf` (bytes appended to a live log: the last one may
/// still be being written), and how many bytes they took. A corrupt local record ends the
/// parse with everything taken, so a follower skips it rather than stalling on it.
pub fn split_entries(format: Format, buf: &[u8]) -> (Vec<Entry>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    match format {
        Format::JsonFile => {
            while let Some(i) = buf[pos..].iter().position(|b| *b == b'\n') {
                if let Some(e) = json_entry(&buf[pos..pos + i + 1]) {
                    out.push(e);
                }
                pos += i + 1;
            }
        }
        Format::Local => {
            while buf.len() - pos >= 4 {
                let n = u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
                if n > MAX_RECORD {
                    return (out, buf.len());
                }
                if buf.len() - pos < n + 8 {
                    break;
                }
                match local_entry(&buf[pos + 4..pos + 4 + n]) {
                    Some(e) => out.push(e),
                    None => return (out, buf.len()),
                }
                pos += n + 8;
            }
        }
    }
    (out, pos)
}

/// Read an uncompressed log file from its end: `f` gets each entry, newest first, until it
/// returns false. Only as much of the file is read as that takes (`logs --tail`).
pub fn read_back(path: &Path, format: Format, mut f: impl FnMut(Entry) -> bool) -> io::Result<()> {
    let mut file = File::open(path)?;
    let mut end = file.seek(SeekFrom::End(0))?;
    match format {
        Format::JsonFile => {
            const CHUNK: u64 = 64 << 10;
            // Bytes of lines not yet complete (their start lies before what was read).
            let mut carry: Vec<u8> = Vec::new();
            let mut first = true;
            while end > 0 {
                let start = end.saturating_sub(CHUNK);
                let mut chunk = vec![0u8; (end - start) as usize];
                file.seek(SeekFrom::Start(start))?;
                file.read_exact(&mut chunk)?;
                chunk.extend_from_slice(&carry);
                end = start;
                // The last line of the file may be one being written: only complete lines count.
                if first {
                    first = false;
                    match chunk.iter().rposition(|b| *b == b'\n') {
                        Some(i) => chunk.truncate(i + 1),
                        None => chunk.clear(),
                    }
                }
                let mut lines: Vec<&[u8]> = chunk.split_inclusive(|b| *b == b'\n').collect();
                // The first piece may be the end of a line that starts in the chunk before.
                carry = if start > 0 { lines.remove(0).to_vec() } else { Vec::new() };
                for l in lines.into_iter().rev() {
                    if let Some(e) = json_entry(l)
                        && !f(e)
                    {
                        return Ok(());
                    }
                }
                if carry.len() > MAX_RECORD * 2 {
                    // A "line" that long is no entry of ours.
                    return Ok(());
                }
            }
            Ok(())
        }
        Format::Local => {
            while end >= 8 {
                let mut size = [0u8; 4];
                file.seek(SeekFrom::Start(end - 4))?;
                file.read_exact(&mut size)?;
                let n = u32::from_be_bytes(size) as u64;
                if n as usize > MAX_RECORD || n + 8 > end {
                    return Ok(());
                }
                let mut msg = vec![0u8; n as usize];
                file.seek(SeekFrom::Start(end - 4 - n))?;
                file.read_exact(&mut msg)?;
                end -= n + 8;
                let Some(e) = local_entry(&msg) else { return Ok(()) };
                if !f(e) {
                    return Ok(());
                }
            }
            Ok(())
        }
    }
}

/// The `n`th rotated file of `path`, compressed or not.
pub fn rotated(path: &Path, n: u32, gz: bool) -> PathBuf {
    PathBuf::from(format!("{}.{n}{}", path.display(), if gz { ".gz" } else { "" }))
}

/// The files of the log at `path`, oldest first, the live one last. Where a rotated file is
/// there both plain and gzipped (its compression is finishing), the plain one is taken.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, bool, PathBuf)> = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for e in entries.flatten() {
            let file_name = e.file_name();
            let Some(rest) = file_name.to_str().and_then(|s| s.strip_prefix(name)).and_then(|s| s.strip_prefix('.')) else { continue };
            let (num, gz) = match rest.strip_suffix(".gz") {
                Some(n) => (n, true),
                None => (rest, false),
            };
            if let Ok(num) = num.parse::<u32>() {
                rotated.push((num, gz, e.path()));
            }
        }
    }
    // Highest number first; plain before gzipped.
    rotated.sort_by_key(|r| (std::cmp::Reverse(r.0), r.1));
    rotated.dedup_by_key(|r| r.0);
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, _, p)| p).collect();
    out.push(path.to_path_buf());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(format: Format, lines: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (s, l)) in lines.iter().enumerate() {
            encode(format, &mut out, *s, l, UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i as u64 * 500));
        }
        out
    }

    #[test]
    fn both_formats_read_back_forwards_and_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let lines: &[(u8, &[u8])] = &[(crate::STDOUT, b"one\n"), (crate::STDERR, b"two\n"), (crate::STDOUT, b"no newline")];
        for format in [Format::JsonFile, Format::Local] {
            let p = dir.path().join(format!("{format:?}.log"));
            std::fs::write(&p, write(format, lines)).unwrap();
            let fwd: Vec<Entry> = Reader::open(&p, format).unwrap().collect();
            assert_eq!(fwd.iter().map(|e| (e.stream, e.line.as_slice())).collect::<Vec<_>>(), lines, "{format:?}");
            assert!(fwd[1].time.starts_with("2023-11-14T22:13:20.5"), "{}", fwd[1].time);
            let mut back = Vec::new();
            read_back(&p, format, |e| {
                back.push(e);
                true
            })
            .unwrap();
            back.reverse();
            assert_eq!(back, fwd, "{format:?}");
            let mut two = Vec::new();
            read_back(&p, format, |e| {
                two.push(e);
                two.len() < 2
            })
            .unwrap();
            assert_eq!(two.len(), 2);
        }
        // The local format is Docker's: size, LogEntry, size.
        let raw = write(Format::Local, &[(crate::STDOUT, b"hi\n")]);
        let n = u32::from_be_bytes(raw[..4].try_into().unwrap()) as usize;
        assert_eq!((&raw[4..12], &raw[raw.len() - 4..]), (&b"\x0a\x06stdout"[..], &raw[..4]));
        assert_eq!(raw.len(), n + 8);
    }

    #[test]
    fn json_lines_across_chunks_and_a_line_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let long = vec![b'x'; 100_000];
        let mut data = write(Format::JsonFile, &[(crate::STDOUT, b"first\n"), (crate::STDOUT, &[&long[..], b"\n"].concat())]);
        data.extend_from_slice(b"{\"log\":\"half");
        std::fs::write(&p, data).unwrap();
        let mut got = Vec::new();
        read_back(&p, Format::JsonFile, |e| {
            got.push(e.line.len());
            true
        })
        .unwrap();
        assert_eq!(got, [100_001, 6]);
    }

    #[test]
    fn appended_bytes_split_into_complete_entries() {
        for format in [Format::JsonFile, Format::Local] {
            let data = write(format, &[(crate::STDOUT, b"a\n"), (crate::STDOUT, b"b\n")]);
            let cut = data.len() - 3;
            let (got, used) = split_entries(format, &data[..cut]);
            assert_eq!((got.len(), got[0].line.as_slice()), (1, &b"a\n"[..]), "{format:?}");
            let (rest, used2) = split_entries(format, &data[used..]);
            assert_eq!((rest.len(), used + used2), (1, data.len()));
        }
    }

    #[test]
    fn garbage_ends_a_read_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.log");
        std::fs::write(&p, b"\xff\xff\xff\xffjunkjunk").unwrap();
        assert_eq!(Reader::open(&p, Format::Local).unwrap().count(), 0);
        read_back(&p, Format::Local, |_| panic!("no entry")).unwrap();
        let mut msg = vec![0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f];
        msg.extend_from_slice(b"short");
        assert_eq!(local_entry(&msg), None);
    }

    #[test]
    fn files_oldest_first_plain_over_gzipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        for n in ["c.log", "c.log.1", "c.log.2.gz", "c.log.3.gz", "c.log.3", "c.log.x", "other.log.1"] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let names: Vec<String> = files(&p).iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["c.log.3", "c.log.2.gz", "c.log.1", "c.log"]);
    }
}
