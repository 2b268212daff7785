//! berth-atomic: one way to replace a file, for every crate that keeps state on disk (the
//! runtime's state, the engine's records, the shim's exit status, the store's index). A temporary
//! file in the same directory, renamed over the target; durable writes also fsync the file before
//! and the directory after the rename.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
    stage(path, data, mode, durable)?.commit()
}

/// [`write_file`] in two steps, so a caller can do other work (another fsync) between them:
/// the new content is written and fsynced under a temporary name now, and replaces `path`
/// (rename, directory fsync) at [`Staged::commit`]. Dropped uncommitted, it leaves `path` alone.
pub fn stage_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<Staged> {
    stage(path, data, mode, true)
}

fn stage(path: &Path, data: &[u8], mode: u32, durable: bool) -> std::io::Result<Staged> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let staged = Staged { tmp, path: path.to_path_buf(), durable, done: false };
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&staged.tmp)?;
    f.write_all(data)?;
    if durable {
        f.sync_all()?;
    }
    Ok(staged)
}

/// New content waiting under a temporary name (see [`stage_file`]).
#[must_use = "nothing is replaced until commit"]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    durable: bool,
    done: bool,
}

impl Staged {
    /// Put the content in place (and, for a durable write, make the rename durable).
    pub fn commit(mut self) -> std::io::Result<()> {
        fs::rename(&self.tmp, &self.path)?;
        self.done = true;
        if self.durable {
            File::open(self.path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
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

        // Staged: the old content stays until the commit; a dropped stage leaves nothing.
        let staged = stage_file(&p, b"four", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        staged.commit().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"four");
        drop(stage_file(&p, b"five", 0o600).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"four");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        assert!(!is_leftover("state.json"));
    }
}
