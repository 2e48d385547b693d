//! A faster `memcmp` for the guest.
//!
//! On `wasm32-wasip2`, `memcmp` comes from wasi-libc: musl's loop of one byte per iteration,
//! compiled to wasm. Every ordered comparison of strings lands in it (`Ord for str`, `BTreeMap`
//! keys, sorting), and a connector compares paths that share long prefixes
//! (`/projects/2024/reports/...`). A profile of the Dropbox connector's full sync
//! (`HOST_TEST_PROFILER=perfmap`, BENCHMARKS.md) found 28% of the guest's time in `memcmp`.
//! This one compares eight bytes per step. Defining the symbol in the component keeps the
//! linker from taking libc's (an archive member is only linked for a symbol still undefined).

/// Compare `n` bytes at `a` and `b` as `memcmp` does: the sign of the first differing byte's
/// difference (as unsigned bytes), 0 when they are equal.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
pub unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, and the caller vouches for n bytes at each pointer.
        let (x, y) = unsafe {
            (
                u64::from_le_bytes(core::ptr::read_unaligned(a.add(i).cast::<[u8; 8]>())),
                u64::from_le_bytes(core::ptr::read_unaligned(b.add(i).cast::<[u8; 8]>())),
            )
        };
        if x != y {
            // Little-endian: the lowest differing byte of the word is the first in memory.
            let shift = (x ^ y).trailing_zeros() / 8 * 8;
            let (p, q) = ((x >> shift) as u8, (y >> shift) as u8);
            return i32::from(p) - i32::from(q);
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n.
        let (p, q) = unsafe { (*a.add(i), *b.add(i)) };
        if p != q {
            return i32::from(p) - i32::from(q);
        }
        i += 1;
    }
    0
}

#[cfg(target_arch = "wasm32")]
mod symbols {
    /// # Safety
    /// As C's `memcmp`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the caller's, as for `memcmp`.
        unsafe { super::compare(a, b, n) }
    }

    /// LLVM turns `memcmp(..) == 0` into `bcmp`; musl's `bcmp` would call the `memcmp` above
    /// anyway, this saves the hop.
    ///
    /// # Safety
    /// As C's `bcmp`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the caller's, as for `bcmp`.
        unsafe { super::compare(a, b, n) }
    }
}

#[cfg(test)]
mod tests {
    use super::compare;

    fn sign(o: core::cmp::Ordering) -> i32 {
        o as i32
    }

    #[test]
    fn agrees_with_byte_order_on_every_length_and_position() {
        for len in 0..40usize {
            let base: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            // Equal, and one byte higher or lower at each position (0 and 255 included).
            assert_eq!(unsafe { compare(base.as_ptr(), base.as_ptr(), len) }, 0);
            for at in 0..len {
                for value in [0u8, 1, 127, 128, 254, 255] {
                    let mut other = base.clone();
                    other[at] = value;
                    let got = unsafe { compare(base.as_ptr(), other.as_ptr(), len) };
                    assert_eq!(
                        got.signum(),
                        sign(base.cmp(&other)),
                        "len {len} at {at} value {value}"
                    );
                    // Later differences do not hide an earlier one.
                    if at + 1 < len {
                        other[len - 1] ^= 0xff;
                        let got = unsafe { compare(base.as_ptr(), other.as_ptr(), len) };
                        assert_eq!(got.signum(), sign(base.cmp(&other)));
                    }
                }
            }
        }
    }

    #[test]
    fn unaligned_starts_and_multibyte_text() {
        let a = "/café 2005/readme zürich/budget 報告書/draft/crème-1.txt".as_bytes();
        let b = "/café 2005/readme zürich/budget 報告書/draft/crème-2.txt".as_bytes();
        for offset in 0..8 {
            let (x, y) = (&a[offset..], &b[offset..]);
            let got = unsafe { compare(x.as_ptr(), y.as_ptr(), x.len()) };
            assert_eq!(got.signum(), sign(x.cmp(y)));
        }
    }
}
