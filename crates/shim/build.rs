//! Link berth-shim as a position-dependent executable. A PIE's loader writes every relocated
//! pointer of its read-only-after-relocation data (vtables, panic locations, string tables: ~160
//! KiB here), making those pages private to each shim; at a fixed address they stay shared file
//! pages. One shim runs per container, so this is most of its private memory. The cost is ASLR
//! for the shim's own code (libraries, heap and stack are still randomised); the shim parses only
//! berthd's requests on a root-only socket and copies the container's bytes without parsing them.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
