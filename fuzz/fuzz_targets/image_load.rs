//! `docker load` of a hostile archive (docker-archive or OCI layout): never a panic, and a
//! refused archive leaves no image, layer or blob behind.
#![no_main]

use berth_store::images::{Driver, ImageStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(t.path(), Driver::Vfs).expect("store");
    if berth_store::export::load(&store, data).is_err() {
        assert!(store.list().expect("list").is_empty(), "a refused load recorded an image");
        assert!(store.content.list().expect("blobs").is_empty(), "a refused load left blobs");
        assert!(store.snapshots.walk().expect("layers").is_empty(), "a refused load left layers");
        assert!(store.content.ingests().expect("ingests").is_empty(), "a refused load left ingests");
    }
});
