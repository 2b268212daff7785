//! berth-init: pid 1 of a container run with `--init`, as Docker's tini is. It starts the
//! program (`berth-init -- prog args…`, the path looked up in `PATH` as `execvp` does), forwards
//! every signal it gets to it, reaps every zombie that is reparented to it, and exits with the
//! program's status (128 + the signal that killed it) once the program has ended.
//!
//! Freestanding (no std, no libc, its own `_start`): the container's root file system has no
//! libraries of ours, and pid 1 should cost next to nothing. Linux on x86_64 and aarch64.

#![no_std]
#![no_main]
// Keeps LLVM from turning the loops of the memory functions below into calls to themselves.
#![no_builtins]

mod mem;
mod sys;

use core::ffi::CStr;

/// Signals not forwarded: those that stop or are the init's own business.
const NOT_FORWARDED: [i32; 6] = [sys::SIGCHLD, sys::SIGKILL, sys::SIGSTOP, sys::SIGTSTP, sys::SIGTTIN, sys::SIGTTOU];

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    sys::exit(126)
}

/// Referenced by core's unwinding glue in builds with `panic=unwind`; never called (the panic
/// handler above never returns).
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

fn say(parts: &[&[u8]]) {
    for p in parts {
        sys::write(2, p);
    }
}

/// `argv[i]` as a C string.
///
/// # Safety
/// `argv` must be the kernel's argument vector with at least `i + 1` entries.
unsafe fn arg<'a>(argv: *const *const u8, i: usize) -> &'a CStr {
    // SAFETY: the caller guarantees `i` is within argc; the kernel's strings are NUL-terminated.
    unsafe { CStr::from_ptr(*argv.add(i) as *const core::ffi::c_char) }
}

/// Exec `file` with `argv` and `envp`, looking it up in PATH (from `envp`) when it has no '/'.
/// Returns only on failure, with the exit code Docker uses (127 not found, 126 otherwise).
fn exec(file: &CStr, argv: *const *const u8, envp: *const *const u8) -> i32 {
    let name = file.to_bytes();
    if name.contains(&b'/') {
        let e = sys::execve(file.as_ptr() as *const u8, argv, envp);
        return if e == sys::ENOENT { 127 } else { 126 };
    }
    let mut path: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut i = 0;
    loop {
        // SAFETY: envp is the kernel's NULL-terminated environment vector.
        let p = unsafe { *envp.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: each entry is a NUL-terminated string.
        let entry = unsafe { CStr::from_ptr(p as *const core::ffi::c_char) }.to_bytes();
        if let Some(v) = entry.strip_prefix(b"PATH=") {
            path = v;
        }
        i += 1;
    }
    let mut code = 127;
    let mut buf = [0u8; 4096];
    for dir in path.split(|b| *b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        if dir.len() + 1 + name.len() + 1 > buf.len() {
            continue;
        }
        buf[..dir.len()].copy_from_slice(dir);
        buf[dir.len()] = b'/';
        buf[dir.len() + 1..dir.len() + 1 + name.len()].copy_from_slice(name);
        buf[dir.len() + 1 + name.len()] = 0;
        let e = sys::execve(buf.as_ptr(), argv, envp);
        // As execvp: a file there that cannot be run is remembered, a missing one is not.
        if e != sys::ENOENT && e != sys::ENOTDIR {
            code = 126;
        }
    }
    code
}

/// Called from `_start` with the initial stack pointer.
#[unsafe(no_mangle)]
extern "C" fn berth_init_main(sp: *const usize) -> ! {
    // SAFETY: at process entry the stack holds argc, then argv[0..argc], NULL, then envp, NULL.
    let argc = unsafe { *sp };
    let argv = unsafe { sp.add(1) } as *const *const u8;
    let envp = unsafe { sp.add(2 + argc) } as *const *const u8;
    // `berth-init [--] prog args…`
    let mut first = 1;
    // SAFETY: index checked against argc.
    if argc > 1 && unsafe { arg(argv, 1) }.to_bytes() == b"--" {
        first = 2;
    }
    if argc <= first {
        say(&[b"usage: berth-init [--] program [args...]\n"]);
        sys::exit(2);
    }
    // Every signal waits for sigtimedwait below (none is delivered asynchronously).
    let all: u64 = !0;
    let mut old: u64 = 0;
    sys::sigprocmask(sys::SIG_SETMASK, &all, &mut old);
    let child = sys::fork();
    if child < 0 {
        say(&[b"berth-init: fork failed\n"]);
        sys::exit(126);
    }
    if child == 0 {
        sys::sigprocmask(sys::SIG_SETMASK, &old, core::ptr::null_mut());
        // SAFETY: first < argc.
        let prog = unsafe { arg(argv, first) };
        // SAFETY: argv + first is still a NULL-terminated vector.
        let code = exec(prog, unsafe { argv.add(first) }, envp);
        say(&[b"berth-init: cannot run ", prog.to_bytes(), if code == 127 { b": not found\n" } else { b": not executable\n" }]);
        sys::exit(code);
    }
    let mut status: Option<i32> = None;
    loop {
        let sig = sys::sigtimedwait(&all, 1);
        if sig > 0 && !NOT_FORWARDED.contains(&sig) {
            sys::kill(child, sig);
        }
        // Reap everything there is (the program, and orphans of its that came to us).
        loop {
            let mut ws: i32 = 0;
            let pid = sys::wait4(-1, &mut ws, sys::WNOHANG);
            if pid <= 0 {
                break;
            }
            if pid == child {
                let code = if ws & 0x7f == 0 { (ws >> 8) & 0xff } else { 128 + (ws & 0x7f) };
                status = Some(code);
            }
        }
        if let Some(code) = status {
            sys::exit(code);
        }
    }
}
