//! Docker's json-file log: one `{"log","stream","time"}` object per line of output, rotated to
//! `<path>.1` … `<path>.<max_file-1>` when the file would pass `max_size`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Docker splits lines longer than this into several entries.
const MAX_LINE: usize = 16 << 10;

pub struct JsonFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_file: u32,
    /// Unfinished lines of stdout and stderr.
    partial: [Vec<u8>; 2],
    /// Rotated files looked for, all rotations together (what a rotation costs).
    probes: u64,
}

fn stream_name(stream: u8) -> &'static str {
    if stream == berth_shim::STDERR { "stderr" } else { "stdout" }
}

impl JsonFile {
    pub fn open(path: &Path, max_size: u64, max_file: u32) -> io::Result<JsonFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(JsonFile {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_file: max_file.max(1),
            partial: [Vec::new(), Vec::new()],
            probes: 0,
        })
    }

    /// Log a chunk of output: every complete line is an entry; the rest waits for its newline.
    pub fn write(&mut self, stream: u8, data: &[u8]) -> io::Result<()> {
        let slot = usize::from(stream == berth_shim::STDERR);
        let mut rest = data;
        let mut out = Vec::new();
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[slot]);
            line.extend_from_slice(&rest[..=pos]);
            rest = &rest[pos + 1..];
            entry(&mut out, stream, &line);
        }
        self.partial[slot].extend_from_slice(rest);
        while self.partial[slot].len() >= MAX_LINE {
            let line: Vec<u8> = self.partial[slot].drain(..MAX_LINE).collect();
            entry(&mut out, stream, &line);
        }
        self.append(&out)
    }

    /// Log what is left of a stream that ended without a newline.
    pub fn flush_partial(&mut self, stream: u8) {
        let slot = usize::from(stream == berth_shim::STDERR);
        if self.partial[slot].is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.partial[slot]);
        let mut out = Vec::new();
        entry(&mut out, stream, &line);
        let _ = self.append(&out);
    }

    fn append(&mut self, out: &[u8]) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        if self.max_size > 0 && self.size > 0 && self.size + out.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(out)?;
        self.size += out.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.max_file <= 1 {
            // No rotated files kept: start the one file again.
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        // Rotated files are numbered 1, 2, … without gaps: shift only those that exist, so the
        // work is what is on disk, not `max-file` (which a client chooses).
        let mut existing = 0;
        while existing < self.max_file - 1 && {
            self.probes += 1;
            numbered(existing + 1).exists()
        } {
            existing += 1;
        }
        if existing == self.max_file - 1 {
            let _ = std::fs::remove_file(numbered(existing));
            existing -= 1;
        }
        for n in (1..=existing).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        std::fs::rename(&self.path, numbered(1))?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn entry(out: &mut Vec<u8>, stream: u8, line: &[u8]) {
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let v = serde_json::json!({"log": String::from_utf8_lossy(line), "stream": stream_name(stream), "time": time});
    if serde_json::to_writer(&mut *out, &v).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn lines_become_entries_and_partials_wait() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let mut log = JsonFile::open(&p, 0, 1).unwrap();
        log.write(berth_shim::STDOUT, b"one\ntw").unwrap();
        log.write(berth_shim::STDERR, b"err\n").unwrap();
        log.write(berth_shim::STDOUT, b"o\nthree").unwrap();
        log.flush_partial(berth_shim::STDOUT);
        let e = entries(&p);
        let logs: Vec<(&str, &str)> = e.iter().map(|v| (v["log"].as_str().unwrap(), v["stream"].as_str().unwrap())).collect();
        assert_eq!(logs, [("one\n", "stdout"), ("err\n", "stderr"), ("two\n", "stdout"), ("three", "stdout")]);
        assert!(e[0]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn rotation_keeps_max_file_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let mut log = JsonFile::open(&p, 200, 3).unwrap();
        for i in 0..40 {
            log.write(berth_shim::STDOUT, format!("line {i}\n").as_bytes()).unwrap();
        }
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["c-json.log", "c-json.log.1", "c-json.log.2"]);
        for n in &names {
            assert!(std::fs::metadata(dir.path().join(n)).unwrap().len() <= 200);
        }
        let last = entries(&p);
        assert_eq!(last.last().unwrap()["log"], "line 39\n");
    }

    #[test]
    fn a_huge_max_file_costs_only_the_files_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let mut log = JsonFile::open(&p, 100, u32::MAX).unwrap();
        for i in 0..20 {
            log.write(berth_shim::STDOUT, format!("line {i}\n").as_bytes()).unwrap();
        }
        let count = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(count > 3, "{count}");
        // Each rotation looked for the files there were and one more, never for max-file's.
        let rotations = count as u64 - 1;
        assert!(log.probes <= rotations * (rotations + 1), "{} probes for {rotations} rotations", log.probes);
        // Oldest output in the highest number, newest in the live file.
        let oldest = entries(&dir.path().join(format!("c-json.log.{}", count - 1)));
        assert_eq!(oldest[0]["log"], "line 0\n");
        assert_eq!(entries(&p).last().unwrap()["log"], "line 19\n");
    }

    #[test]
    fn invalid_utf8_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let mut log = JsonFile::open(&p, 0, 1).unwrap();
        log.write(berth_shim::STDOUT, b"\xff\xfe\n").unwrap();
        log.write(berth_shim::STDOUT, &vec![b'a'; MAX_LINE + 10]).unwrap();
        let e = entries(&p);
        assert_eq!(e[0]["log"], "\u{fffd}\u{fffd}\n");
        assert_eq!(e[1]["log"].as_str().unwrap().len(), MAX_LINE);
    }
}
