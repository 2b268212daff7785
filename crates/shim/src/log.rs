//! The container's log as Docker's `json-file` or `local` driver keeps it (the format is
//! `berth_shim::logfile`'s): one entry per line of output, rotated to `<path>.1` …
//! `<path>.<max_file-1>` when the file would pass `max_size`; with `compress`, each rotated file
//! is gzipped to `<path>.N.gz` by a child process, so the shim goes on relaying output meanwhile.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use berth_shim::logfile::{self, Format};
use nix::unistd::Pid;

/// Docker splits lines longer than this into several entries.
const MAX_LINE: usize = 16 << 10;

pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_file: u32,
    format: Format,
    compress: bool,
    /// The child gzipping the last rotated file, if it may still run.
    compressing: Option<Pid>,
    /// Unfinished lines of stdout and stderr.
    partial: [Vec<u8>; 2],
    /// Rotated files looked for, all rotations together (what a rotation costs).
    probes: u64,
}

impl LogFile {
    pub fn open(path: &Path, max_size: u64, max_file: u32, format: Format, compress: bool) -> io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_file: max_file.max(1),
            format,
            compress,
            compressing: None,
            partial: [Vec::new(), Vec::new()],
            probes: 0,
        })
    }

    /// Log a chunk of output: every complete line is an entry; the rest waits for its newline.
    pub fn write(&mut self, stream: u8, data: &[u8]) -> io::Result<()> {
        let slot = usize::from(stream == berth_shim::STDERR);
        let mut rest = data;
        let mut out = Vec::new();
        let now = std::time::SystemTime::now();
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[slot]);
            line.extend_from_slice(&rest[..=pos]);
            rest = &rest[pos + 1..];
            self.add(&mut out, stream, &line, now)?;
        }
        self.partial[slot].extend_from_slice(rest);
        while self.partial[slot].len() >= MAX_LINE {
            let line: Vec<u8> = self.partial[slot].drain(..MAX_LINE).collect();
            self.add(&mut out, stream, &line, now)?;
        }
        self.append(&out)
    }

    /// Encode one entry into `out`, the entries of one chunk of output written together; if it
    /// would take the file past `max_size`, what came before is written and the file rotated
    /// first, so no file passes `max_size` by more than one entry (as Docker's).
    fn add(&mut self, out: &mut Vec<u8>, stream: u8, line: &[u8], now: std::time::SystemTime) -> io::Result<()> {
        let before = out.len();
        logfile::encode(self.format, out, stream, line, now);
        if self.max_size > 0 && self.size + out.len() as u64 > self.max_size && self.size + before as u64 > 0 {
            let tail = out.split_off(before);
            self.file.write_all(out)?;
            self.size += out.len() as u64;
            out.clear();
            self.rotate()?;
            out.extend_from_slice(&tail);
        }
        Ok(())
    }

    /// Log what is left of a stream that ended without a newline.
    pub fn flush_partial(&mut self, stream: u8) {
        let slot = usize::from(stream == berth_shim::STDERR);
        if self.partial[slot].is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.partial[slot]);
        let mut out = Vec::new();
        if self.add(&mut out, stream, &line, std::time::SystemTime::now()).is_ok() {
            let _ = self.append(&out);
        }
    }

    fn append(&mut self, out: &[u8]) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        self.file.write_all(out)?;
        self.size += out.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_file <= 1 {
            // No rotated files kept: start the one file again.
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        // The last rotation's compression finishes first: its file is about to move.
        self.wait_compression();
        let gz = self.compress;
        let numbered = |n: u32| logfile::rotated(&self.path, n, gz);
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
        let first = logfile::rotated(&self.path, 1, false);
        std::fs::rename(&self.path, &first)?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        if gz {
            self.compressing = spawn_compression(&first);
        }
        Ok(())
    }

    fn wait_compression(&mut self) {
        if let Some(pid) = self.compressing.take() {
            // Already reaped by the shim's loop (ECHILD) is as good as done.
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        self.wait_compression();
    }
}

/// Gzip `plain` to `<plain>.gz` in a child process (written aside, then renamed; the plain file
/// removed last, so a reader always finds one of them whole). None if the fork failed: the file
/// then stays uncompressed.
fn spawn_compression(plain: &Path) -> Option<Pid> {
    // SAFETY: the shim is single-threaded, so the child is a whole copy of it; the child only
    // does file I/O and allocation and leaves with _exit, running no destructor or atexit hook.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let code = i32::from(compress_file(plain).is_err());
            // SAFETY: _exit ends the child at once, as a forked child must.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => Some(child),
        Err(e) => {
            eprintln!("berth-shim: compressing {}: fork: {e}", plain.display());
            None
        }
    }
}

fn compress_file(plain: &Path) -> io::Result<()> {
    let gz = PathBuf::from(format!("{}.gz", plain.display()));
    let tmp = PathBuf::from(format!("{}.gz.tmp", plain.display()));
    let mut input = File::open(plain)?;
    let out = File::create(&tmp)?;
    let mut enc = flate2::write::GzEncoder::new(io::BufWriter::new(out), flate2::Compression::fast());
    io::copy(&mut input, &mut enc)?;
    enc.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &gz)?;
    std::fs::remove_file(plain)
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
        let mut log = LogFile::open(&p, 0, 1, Format::JsonFile, false).unwrap();
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
        let mut log = LogFile::open(&p, 200, 3, Format::JsonFile, false).unwrap();
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
    fn a_burst_in_one_chunk_rotates_between_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let mut log = LogFile::open(&p, 200, 3, Format::JsonFile, false).unwrap();
        let burst: String = (0..40).map(|i| format!("line {i}\n")).collect();
        log.write(berth_shim::STDOUT, burst.as_bytes()).unwrap();
        for n in ["c-json.log", "c-json.log.1", "c-json.log.2"] {
            assert!(std::fs::metadata(dir.path().join(n)).unwrap().len() <= 200, "{n}");
        }
        assert_eq!(entries(&p).last().unwrap()["log"], "line 39\n");
    }

    #[test]
    fn a_huge_max_file_costs_only_the_files_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let mut log = LogFile::open(&p, 100, u32::MAX, Format::JsonFile, false).unwrap();
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
    fn compressed_rotation_in_the_local_format_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("container.log");
        let mut log = LogFile::open(&p, 300, 4, Format::Local, true).unwrap();
        for i in 0..60 {
            log.write(berth_shim::STDOUT, format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(log);
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["container.log", "container.log.1.gz", "container.log.2.gz", "container.log.3.gz"]);
        let lines: Vec<String> = logfile::files(&p)
            .iter()
            .flat_map(|f| logfile::Reader::open(f, Format::Local).unwrap())
            .map(|e| String::from_utf8(e.line).unwrap())
            .collect();
        let first: usize = lines[0].trim_start_matches("line ").trim().parse().unwrap();
        let want: Vec<String> = (first..60).map(|i| format!("line {i}\n")).collect();
        assert_eq!(lines, want, "in order, without a gap");
    }

    #[test]
    fn invalid_utf8_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let mut log = LogFile::open(&p, 0, 1, Format::JsonFile, false).unwrap();
        log.write(berth_shim::STDOUT, b"\xff\xfe\n").unwrap();
        log.write(berth_shim::STDOUT, &vec![b'a'; MAX_LINE + 10]).unwrap();
        let e = entries(&p);
        assert_eq!(e[0]["log"], "\u{fffd}\u{fffd}\n");
        assert_eq!(e[1]["log"].as_str().unwrap().len(), MAX_LINE);
    }
}
