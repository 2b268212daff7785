//! The few Linux system calls berth-init makes, raw, and its entry point.

pub const SIGCHLD: i32 = 17;
pub const SIGKILL: i32 = 9;
pub const SIGSTOP: i32 = 19;
pub const SIGTSTP: i32 = 20;
pub const SIGTTIN: i32 = 21;
pub const SIGTTOU: i32 = 22;
pub const SIG_SETMASK: usize = 2;
pub const WNOHANG: usize = 1;
pub const ENOENT: isize = -2;
pub const ENOTDIR: isize = -20;
const EINTR: isize = -4;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const WRITE: usize = 1;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const CLONE: usize = 56;
    pub const EXECVE: usize = 59;
    pub const EXIT_GROUP: usize = 231;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const RT_SIGTIMEDWAIT: usize = 128;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const WRITE: usize = 64;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const CLONE: usize = 220;
    pub const EXECVE: usize = 221;
    pub const EXIT_GROUP: usize = 94;
    pub const WAIT4: usize = 260;
    pub const KILL: usize = 129;
    pub const RT_SIGTIMEDWAIT: usize = 137;
}

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(".globl _start", "_start:", "xor rbp, rbp", "mov rdi, rsp", "and rsp, -16", "call berth_init_main", "ud2",);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(".globl _start", "_start:", "mov x0, sp", "bl berth_init_main", "brk #0",);

/// # Safety
/// The arguments must be valid for system call `n`.
#[cfg(target_arch = "x86_64")]
unsafe fn syscall(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the Linux x86_64 system call convention; rcx and r11 are clobbered by `syscall`.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d,
            lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// # Safety
/// The arguments must be valid for system call `n`.
#[cfg(target_arch = "aarch64")]
unsafe fn syscall(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the Linux aarch64 system call convention.
    unsafe {
        core::arch::asm!("svc 0", in("x8") n, inlateout("x0") a as isize => ret, in("x1") b, in("x2") c, in("x3") d, options(nostack));
    }
    ret
}

pub fn write(fd: usize, data: &[u8]) {
    // SAFETY: a valid buffer and its length.
    unsafe { syscall(nr::WRITE, fd, data.as_ptr() as usize, data.len(), 0) };
}

pub fn exit(code: i32) -> ! {
    // SAFETY: exit_group takes an int and does not return.
    unsafe { syscall(nr::EXIT_GROUP, code as usize, 0, 0, 0) };
    // SAFETY: exit_group never returns.
    unsafe { core::hint::unreachable_unchecked() }
}

pub fn sigprocmask(how: usize, set: *const u64, old: *mut u64) {
    // SAFETY: pointers to 8-byte masks (or null for `old`), the kernel's sigset size.
    unsafe { syscall(nr::RT_SIGPROCMASK, how, set as usize, old as usize, 8) };
}

/// fork(): clone with SIGCHLD as the exit signal and nothing shared.
pub fn fork() -> i32 {
    // SAFETY: with a null stack the child continues on a copy of this one, as fork does.
    unsafe { syscall(nr::CLONE, SIGCHLD as usize, 0, 0, 0) as i32 }
}

pub fn execve(path: *const u8, argv: *const *const u8, envp: *const *const u8) -> isize {
    // SAFETY: NUL-terminated path, NULL-terminated vectors (from the kernel or built by us).
    unsafe { syscall(nr::EXECVE, path as usize, argv as usize, envp as usize, 0) }
}

pub fn wait4(pid: i32, status: &mut i32, options: usize) -> i32 {
    // SAFETY: a valid pointer to an int; no rusage.
    unsafe { syscall(nr::WAIT4, pid as isize as usize, status as *mut i32 as usize, options, 0) as i32 }
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: plain integers.
    unsafe { syscall(nr::KILL, pid as isize as usize, sig as usize, 0, 0) };
}

/// Wait up to `secs` for one of `set`; the signal, or 0 on timeout or interruption.
pub fn sigtimedwait(set: &u64, secs: i64) -> i32 {
    let ts = [secs, 0i64];
    // SAFETY: an 8-byte mask, no siginfo, a timespec.
    let r = unsafe { syscall(nr::RT_SIGTIMEDWAIT, set as *const u64 as usize, 0, ts.as_ptr() as usize, 8) };
    if r < 0 || r == EINTR { 0 } else { r as i32 }
}
