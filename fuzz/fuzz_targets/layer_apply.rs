//! A layer tar applied into an empty root: never a panic, and nothing written outside the root
//! (a sentinel directory beside it stays as it was). The first byte picks the whiteout mode.
#![no_main]

use berth_store::archive::{WhiteoutMode, apply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, tar)) = data.split_first() else { return };
    let mode = if mode & 1 == 0 { WhiteoutMode::Overlay } else { WhiteoutMode::Delete };
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("root");
    let beside = t.path().join("beside");
    std::fs::create_dir(&root).expect("root");
    std::fs::create_dir(&beside).expect("beside");
    std::fs::write(beside.join("sentinel"), b"untouched").expect("sentinel");
    let _ = apply(&root, tar, mode);
    let mut names: Vec<_> = std::fs::read_dir(t.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
    names.sort();
    assert_eq!(names, ["beside", "root"], "something was made beside the root");
    assert_eq!(std::fs::read_dir(&beside).expect("list").count(), 1, "something was made in the sentinel directory");
    assert_eq!(std::fs::read(beside.join("sentinel")).expect("sentinel"), b"untouched");
});
