//! The memory functions the compiler's code calls, which a libc would provide. Plain byte loops:
//! berth-init copies a few short strings.

/// # Safety
/// `dst` and `src` valid for `n` bytes, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: within the `n` bytes the caller vouches for.
        unsafe { *dst.add(i) = *src.add(i) };
    }
    dst
}

/// # Safety
/// `dst` and `src` valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) < (src as usize) {
        for i in 0..n {
            // SAFETY: within the `n` bytes the caller vouches for; forwards when dst is lower.
            unsafe { *dst.add(i) = *src.add(i) };
        }
    } else {
        for i in (0..n).rev() {
            // SAFETY: as above, backwards when dst is higher.
            unsafe { *dst.add(i) = *src.add(i) };
        }
    }
    dst
}

/// # Safety
/// `dst` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: within the `n` bytes the caller vouches for.
        unsafe { *dst.add(i) = c as u8 };
    }
    dst
}

/// # Safety
/// `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: within the `n` bytes the caller vouches for.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// `bcmp` is `memcmp` where only equality matters.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// `s` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the string ends with a NUL the caller vouches for.
    while unsafe { *s.add(n) } != 0 {
        n += 1;
    }
    n
}
