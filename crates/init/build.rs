//! berth-init runs inside containers, whose root file systems have no libc of ours: it is linked
//! freestanding and static (its own `_start`, raw system calls), a few KiB.
fn main() {
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie", "-Wl,--gc-sections"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
