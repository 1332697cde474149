//! AES-256-CTR on VAES + AVX-512: 32 blocks per step in eight 512-bit registers.
//!
//! aws-lc's CTR runs eight 128-bit AES-NI blocks at a time and stops at about 4.6 GB/s on
//! this class of CPU; VAES does four blocks per instruction, and eight independent registers
//! cover the instruction's latency (four left the unit idle a third of the time). These
//! kernels only do whole 512-byte chunks at a block boundary; `AesCtr` hands them the middle of a buffer and keeps
//! aws-lc for partial blocks and tails, so the stream state stays aws-lc's (counter block,
//! keystream block, offset) and the two mix freely.
//!
//! The round keys are read straight from aws-lc's `AES_KEY` (its AES-NI key set-up stores
//! them as the byte strings AES-NI takes); `AesCtr` checks that once per process against
//! aws-lc's own output before using these kernels (see `crypto::vaes_usable`).

use std::arch::x86_64::*;

/// Registers per kernel step.
const LANES: usize = 8;

/// Bytes per kernel step: 32 AES blocks.
pub(crate) const CHUNK: usize = 64 * LANES;

/// AES blocks per kernel step.
const BLOCKS: u64 = 4 * LANES as u64;

/// AES-256 round keys, 15 × 16 bytes, as in aws-lc's `AES_KEY::rd_key`.
pub(crate) type RoundKeys = [u32; 60];

/// Whether this CPU runs the kernels (the features they are compiled for).
pub(crate) fn cpu_has() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("vaes")
}

/// The round keys broadcast to all four 128-bit lanes.
#[target_feature(enable = "avx512f,avx512bw,vaes")]
#[inline]
fn schedule(rk: &RoundKeys) -> [__m512i; 15] {
    let mut k = [_mm512_setzero_si512(); 15];
    for (i, slot) in k.iter_mut().enumerate() {
        // SAFETY: i < 15, so the 16 bytes at word 4i lie inside the 60-word array.
        let r = unsafe { _mm_loadu_si128(rk.as_ptr().add(4 * i) as *const __m128i) };
        *slot = _mm512_broadcast_i32x4(r);
    }
    k
}

/// The counter blocks `c .. c + BLOCKS` as little-endian 128-bit lanes (low quadword
/// first), for adding in the vector unit; `c`'s low 64 bits must not carry within them.
#[target_feature(enable = "avx512f,avx512bw,vaes")]
#[inline]
fn counters_le(c: u128) -> [__m512i; LANES] {
    let (hi, lo) = ((c >> 64) as u64 as i64, c as u64 as i64);
    let base = _mm512_set_epi64(
        hi,
        lo.wrapping_add(3),
        hi,
        lo.wrapping_add(2),
        hi,
        lo.wrapping_add(1),
        hi,
        lo,
    );
    let mut out = [_mm512_setzero_si512(); LANES];
    for (v, slot) in out.iter_mut().enumerate() {
        let step = 4 * v as i64;
        *slot = _mm512_add_epi64(base, _mm512_set_epi64(0, step, 0, step, 0, step, 0, step));
    }
    out
}

/// The counter blocks `c .. c + BLOCKS` big-endian, built one by one: for the rare chunk in
/// which the low 64 bits carry.
#[target_feature(enable = "avx512f,avx512bw,vaes")]
#[inline(never)]
fn counters_slow(c: u128) -> [__m512i; LANES] {
    let mut bytes = [0u8; CHUNK];
    for (i, b) in bytes.chunks_exact_mut(16).enumerate() {
        b.copy_from_slice(&c.wrapping_add(i as u128).to_be_bytes());
    }
    let mut out = [_mm512_setzero_si512(); LANES];
    for (v, slot) in out.iter_mut().enumerate() {
        // SAFETY: v < LANES, so the 64 bytes at 64v lie inside the CHUNK-byte array.
        *slot = unsafe { _mm512_loadu_si512(bytes.as_ptr().add(64 * v) as *const _) };
    }
    out
}

/// Encrypts the counter blocks in `s` in place (14 rounds).
#[target_feature(enable = "avx512f,avx512bw,vaes")]
#[inline]
fn encrypt(k: &[__m512i; 15], s: &mut [__m512i; LANES]) {
    for x in s.iter_mut() {
        *x = _mm512_xor_si512(*x, k[0]);
    }
    for rk in &k[1..14] {
        for x in s.iter_mut() {
            *x = _mm512_aesenc_epi128(*x, *rk);
        }
    }
    for x in s.iter_mut() {
        *x = _mm512_aesenclast_epi128(*x, k[14]);
    }
}

/// XORs the keystream of `rk` from counter block `*ctr` into `data` and advances `*ctr` by
/// the number of blocks.
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512BW and VAES ([`cpu_has`]); `data.len()` must be a
/// multiple of [`CHUNK`].
#[target_feature(enable = "avx512f,avx512bw,vaes")]
pub(crate) unsafe fn ctr(rk: &RoundKeys, ctr: &mut u128, data: &mut [u8]) {
    debug_assert_eq!(data.len() % CHUNK, 0);
    let k = schedule(rk);
    let bswap = _mm512_broadcast_i32x4(_mm_set_epi8(
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    ));
    let blocks = BLOCKS as i64;
    let step = _mm512_set_epi64(0, blocks, 0, blocks, 0, blocks, 0, blocks);
    let mut c = *ctr;
    // The counters stay in registers, little-endian, and move by `step` per chunk; a chunk
    // whose low 64 bits would carry takes the slow path and the registers are rebuilt.
    let mut le = counters_le(c);
    for chunk in data.chunks_exact_mut(CHUNK) {
        let mut s = [_mm512_setzero_si512(); LANES];
        let fast = (c as u64) <= u64::MAX - (BLOCKS - 1);
        if fast {
            for v in 0..LANES {
                s[v] = _mm512_shuffle_epi8(le[v], bswap);
                le[v] = _mm512_add_epi64(le[v], step);
            }
        } else {
            s = counters_slow(c);
        }
        encrypt(&k, &mut s);
        xor_into(chunk, &s);
        c = c.wrapping_add(BLOCKS as u128);
        if !fast {
            le = counters_le(c);
        }
    }
    *ctr = c;
}

/// `chunk ^= ks`, one kernel chunk.
#[target_feature(enable = "avx512f,avx512bw,vaes")]
#[inline]
fn xor_into(chunk: &mut [u8], ks: &[__m512i; LANES]) {
    debug_assert_eq!(chunk.len(), CHUNK);
    for (v, k) in ks.iter().enumerate() {
        // SAFETY: the chunk is CHUNK bytes and v < LANES, so the 64 bytes at 64v are inside
        // it; unaligned loads and stores.
        unsafe {
            let p = chunk.as_mut_ptr().add(64 * v) as *mut __m512i;
            let x = _mm512_xor_si512(_mm512_loadu_si512(p as *const _), *k);
            _mm512_storeu_si512(p as *mut _, x);
        }
    }
}

/// AES-256-CBC decryption of whole chunks in place: `P_i = D(C_i) ^ C_(i-1)`, 32 blocks per
/// step (decryption, unlike encryption, has no chain between blocks to wait on). `rk` is
/// aws-lc's decryption schedule (`AES_set_decrypt_key`: the round keys reversed and, but
/// for the first and last, passed through InvMixColumns, which is what AESDEC takes); `iv`
/// is the previous ciphertext block and becomes the chunk's last one.
///
/// # Safety
/// As [`ctr`].
#[target_feature(enable = "avx512f,avx512bw,vaes")]
pub(crate) unsafe fn cbc_decrypt(rk: &RoundKeys, iv: &mut [u8; 16], data: &mut [u8]) {
    debug_assert_eq!(data.len() % CHUNK, 0);
    let k = schedule(rk);
    for chunk in data.chunks_exact_mut(CHUNK) {
        let p = chunk.as_mut_ptr();
        let mut s = [_mm512_setzero_si512(); LANES];
        let mut prev = [_mm512_setzero_si512(); LANES];
        // The previous ciphertext block of each block: the IV, then the chunk shifted by one
        // block. All loaded before anything is written back.
        let mut first = [0u8; 64];
        first[..16].copy_from_slice(iv);
        first[16..].copy_from_slice(&chunk[..48]);
        // SAFETY: every load is 64 bytes at 64v (or 64v − 16 for v ≥ 1) inside the
        // CHUNK-byte chunk, or the 64-byte `first`.
        unsafe {
            prev[0] = _mm512_loadu_si512(first.as_ptr() as *const _);
            for v in 0..LANES {
                s[v] = _mm512_loadu_si512(p.add(64 * v) as *const _);
                if v > 0 {
                    prev[v] = _mm512_loadu_si512(p.add(64 * v - 16) as *const _);
                }
            }
        }
        iv.copy_from_slice(&chunk[CHUNK - 16..]);
        for x in s.iter_mut() {
            *x = _mm512_xor_si512(*x, k[0]);
        }
        for rk in &k[1..14] {
            for x in s.iter_mut() {
                *x = _mm512_aesdec_epi128(*x, *rk);
            }
        }
        for (x, pv) in s.iter_mut().zip(prev.iter()) {
            *x = _mm512_xor_si512(_mm512_aesdeclast_epi128(*x, k[14]), *pv);
        }
        for (v, x) in s.iter().enumerate() {
            // SAFETY: 64 bytes at 64v inside the chunk.
            unsafe { _mm512_storeu_si512(p.add(64 * v) as *mut _, *x) };
        }
    }
}
