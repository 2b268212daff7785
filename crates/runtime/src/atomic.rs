//! Atomic writes: temp file in the same directory, rename over the target. Durable ones also
//! fsync the file before and the directory after the rename.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replace `path` with `data` so a crash at any moment, of the process or of the machine, leaves
/// either the old or the new content.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    write(path, data, mode, true)
}

/// Replace `path` with `data` so a crash of the process at any moment leaves either the old or
/// the new content; after a crash of the machine either may be lost. For state that describes
/// running processes (they do not survive the machine either), where the two fsyncs of
/// `write_file` would cost milliseconds for nothing.
pub fn replace_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    write(path, data, mode, false)
}

fn write(path: &Path, data: &[u8], mode: u32, durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// True for names `write_file` leaves behind when killed mid-write.
pub fn is_leftover(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_file(&p, b"one", 0o600).unwrap();
        write_file(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        replace_file(&p, b"three", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        assert!(is_leftover(".state.json.tmp-42"));
        assert!(!is_leftover("state.json"));
    }
}
