//! AES-256-CBC encryption of several independent chains at once, on AES-NI.
//!
//! CBC encryption is serial within a chain: each block waits for the previous block's 14
//! rounds, so one chain keeps the AES unit busy a fraction of the time (about 0.85 GB/s
//! on this CPU, latency-bound). Blocks of different chains do not depend on each other;
//! interleaving the rounds of up to [`MAX_LANES`] chains fills the unit's pipeline. The ME
//! link has one chain per connection, so this is what lets a writer serving several ME
//! connections encrypt their batches in one pass.
//!
//! Each lane has its own key: the round keys are read from aws-lc's `AES_KEY` encryption
//! schedule (its AES-NI key set-up stores them as the byte strings AESENC takes); the CBC
//! module checks once per process that this gives aws-lc's bytes before using it.

use std::arch::x86_64::*;

/// Most chains in one pass. Eight in flight cover AESENC's latency on current cores; more
/// would only add register pressure.
pub(crate) const MAX_LANES: usize = 8;

/// One chain's part of a pass.
pub(crate) struct Lane {
    /// The AES-256 encryption round keys, 15 × 16 bytes (aws-lc's `rd_key`).
    pub rk: *const u32,
    /// The chaining block: the previous ciphertext block; updated.
    pub iv: [u8; 16],
    /// The data, encrypted in place; advanced past what was encrypted.
    pub p: *mut u8,
}

/// Whether this CPU has what the kernel is compiled for.
pub(crate) fn cpu_has() -> bool {
    is_x86_feature_detected!("aes")
}

/// Encrypts `blocks` 16-byte blocks of each of the `N` lanes in place, interleaved.
///
/// # Safety
/// The CPU must have AES-NI ([`cpu_has`]); `lanes.len() == N`; every lane's `rk` points to
/// 60 readable words and its `p` to `16 * blocks` readable and writable bytes that no other
/// lane's range overlaps.
#[target_feature(enable = "aes")]
pub(crate) unsafe fn cbc_encrypt<const N: usize>(lanes: &mut [Lane], blocks: usize) {
    debug_assert_eq!(lanes.len(), N);
    let mut s = [_mm_setzero_si128(); N];
    let mut rk = [std::ptr::null::<__m128i>(); N];
    let mut p = [std::ptr::null_mut::<__m128i>(); N];
    for i in 0..N {
        // SAFETY: `iv` is a 16-byte array; an unaligned load.
        s[i] = unsafe { _mm_loadu_si128(lanes[i].iv.as_ptr() as *const __m128i) };
        rk[i] = lanes[i].rk as *const __m128i;
        p[i] = lanes[i].p as *mut __m128i;
    }
    // Every load and store below: round key r of lane i is 16 bytes at word 4r, r < 15,
    // inside the 60 words; block b < `blocks` of lane i is inside its range (the caller's
    // guarantees).
    for b in 0..blocks {
        for i in 0..N {
            // SAFETY: block b of lane i is inside its range.
            let x = unsafe { _mm_loadu_si128(p[i].add(b)) };
            // SAFETY: round key 0 of lane i, inside its 60 words.
            let k0 = unsafe { _mm_loadu_si128(rk[i]) };
            s[i] = _mm_xor_si128(_mm_xor_si128(s[i], x), k0);
        }
        for r in 1..14 {
            for i in 0..N {
                // SAFETY: round key r < 14 of lane i, inside its 60 words.
                let k = unsafe { _mm_loadu_si128(rk[i].add(r)) };
                s[i] = _mm_aesenc_si128(s[i], k);
            }
        }
        for i in 0..N {
            // SAFETY: round key 14 of lane i, the last 16 bytes of its 60 words.
            let k = unsafe { _mm_loadu_si128(rk[i].add(14)) };
            s[i] = _mm_aesenclast_si128(s[i], k);
            // SAFETY: block b of lane i is inside its range, which no other lane's overlaps.
            unsafe { _mm_storeu_si128(p[i].add(b), s[i]) };
        }
    }
    for i in 0..N {
        // SAFETY: `iv` is a 16-byte array; an unaligned store.
        unsafe { _mm_storeu_si128(lanes[i].iv.as_mut_ptr() as *mut __m128i, s[i]) };
        // SAFETY: the lane's range is `16 * blocks` bytes from `p`: one past its end at most.
        lanes[i].p = unsafe { lanes[i].p.add(16 * blocks) };
    }
}

/// [`cbc_encrypt`] for `lanes.len()` lanes (2 to [`MAX_LANES`]).
///
/// # Safety
/// As [`cbc_encrypt`].
pub(crate) unsafe fn cbc_encrypt_any(lanes: &mut [Lane], blocks: usize) {
    // SAFETY: the caller's guarantees, with N = lanes.len().
    unsafe {
        match lanes.len() {
            2 => cbc_encrypt::<2>(lanes, blocks),
            3 => cbc_encrypt::<3>(lanes, blocks),
            4 => cbc_encrypt::<4>(lanes, blocks),
            5 => cbc_encrypt::<5>(lanes, blocks),
            6 => cbc_encrypt::<6>(lanes, blocks),
            7 => cbc_encrypt::<7>(lanes, blocks),
            8 => cbc_encrypt::<8>(lanes, blocks),
            n => unreachable!("{n} lanes"),
        }
    }
}
