//! Link berth-shim with packed relative relocations (DT_RELR, glibc >= 2.36): the PIE's
//! relocation table shrinks from ~230 KiB to a few KiB, which the loader would otherwise read in
//! full at every start. ASLR is unchanged.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
