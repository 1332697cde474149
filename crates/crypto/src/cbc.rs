//! AES-256-CBC as the ME link uses it (spec backend-ops.md §1.4): one continuous stream per
//! direction, no per-packet IV, chaining carried across every call. Only whole 16-byte
//! blocks are processed; the caller keeps any partial tail for the next call (senders pad
//! their output to whole blocks, `mtproto_wire::rpc::pad_to_block`, so there is none on the
//! way out).
//!
//! Not a general crypto wrapper: no padding schemes, no authentication (the frames carry a
//! CRC, which is all the protocol has). Keys come from `mtproto_wire::rpc::kdf`.

use aws_lc_sys::{AES_cbc_encrypt, AES_set_decrypt_key, AES_set_encrypt_key, AES_DECRYPT};
use aws_lc_sys::{AES_ENCRYPT, AES_KEY};

#[cfg(target_arch = "x86_64")]
use crate::select::{kernel_decided, lanes_allowed, vaes_allowed};
#[cfg(target_arch = "x86_64")]
use crate::{lanes, vaes};

/// Whether CBC decryption uses the VAES kernel: allowed (CPU, environment) and the
/// kernel gives aws-lc's bytes and chain for a test stream. Decided once.
#[cfg(target_arch = "x86_64")]
pub(crate) fn vaes_decrypt_usable() -> bool {
    static USE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    kernel_decided(&USE, vaes_allowed, vaes_decrypt_self_test)
}

/// Whether [`encrypt_many`] interleaves chains on the AES-NI kernel: allowed (CPU,
/// environment) and it gives aws-lc's bytes and chains for test streams of every lane
/// count. Decided once.
#[cfg(target_arch = "x86_64")]
pub(crate) fn lanes_usable() -> bool {
    static USE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    kernel_decided(&USE, lanes_allowed, lanes_self_test)
}

/// `MAX_LANES + 1` chains of different keys, IVs and lengths (so every lane count from
/// the maximum down to one is run, and two passes are made), through the kernel and one by
/// one through aws-lc; then one more block each, to check the chains carried on.
#[cfg(target_arch = "x86_64")]
fn lanes_self_test() -> bool {
    let n = lanes::MAX_LANES + 1;
    let make = |i: usize| {
        let key: [u8; 32] = std::array::from_fn(|j| (i * 31 + j * 7 + 1) as u8);
        AesCbcEncryptor::new(&key, &[i as u8 ^ 0x3c; BLOCK_LEN])
    };
    let data =
        |i: usize| -> Vec<u8> { (0..16 * (3 * i + 1)).map(|j| (i + j * 13) as u8).collect() };
    let mut want: Vec<Vec<u8>> = (0..n).map(data).collect();
    let mut reference: Vec<AesCbcEncryptor> = (0..n).map(make).collect();
    for (e, b) in reference.iter_mut().zip(want.iter_mut()) {
        e.0.run_aws(b, AES_ENCRYPT as _);
        e.0.run_aws(&mut [0u8; BLOCK_LEN], AES_ENCRYPT as _);
    }
    let mut got: Vec<Vec<u8>> = (0..n).map(data).collect();
    let mut encs: Vec<AesCbcEncryptor> = (0..n).map(make).collect();
    let mut jobs: Vec<(&mut AesCbcEncryptor, &mut [u8])> = encs
        .iter_mut()
        .zip(got.iter_mut().map(|b| &mut b[..]))
        .collect();
    encrypt_lanes(&mut jobs);
    for e in encs.iter_mut() {
        e.0.run_aws(&mut [0u8; BLOCK_LEN], AES_ENCRYPT as _);
    }
    got == want && encs.iter().zip(&reference).all(|(a, b)| a.0.iv == b.0.iv)
}

/// Encrypts the longest whole-block prefix of each buffer with its own encryptor, in
/// place: the same bytes and chains as `enc.encrypt(buf)` for each in turn. Where the CPU
/// allows, the chains are interleaved (up to eight at once, [`lanes`]), which is several
/// times faster than one serial chain after another.
pub fn encrypt_many(jobs: &mut [(&mut AesCbcEncryptor, &mut [u8])]) {
    #[cfg(target_arch = "x86_64")]
    if jobs.len() > 1 && lanes_usable() {
        encrypt_lanes(jobs);
        return;
    }
    for (enc, buf) in jobs.iter_mut() {
        enc.encrypt(buf);
    }
}

/// All `jobs` on the kernel, [`lanes::MAX_LANES`] at a time.
#[cfg(target_arch = "x86_64")]
fn encrypt_lanes(jobs: &mut [(&mut AesCbcEncryptor, &mut [u8])]) {
    for group in jobs.chunks_mut(lanes::MAX_LANES) {
        encrypt_group(group);
    }
}

/// Up to [`lanes::MAX_LANES`] chains on the kernel: all lanes run for the shortest one's
/// length, the finished lanes leave, and so on; the last lane alone goes to aws-lc.
#[cfg(target_arch = "x86_64")]
fn encrypt_group(jobs: &mut [(&mut AesCbcEncryptor, &mut [u8])]) {
    debug_assert!(jobs.len() <= lanes::MAX_LANES);
    let mut lane = [const {
        lanes::Lane {
            rk: std::ptr::null(),
            iv: [0; BLOCK_LEN],
            p: std::ptr::null_mut(),
        }
    }; lanes::MAX_LANES];
    let mut left = [0usize; lanes::MAX_LANES];
    let mut who = [0usize; lanes::MAX_LANES];
    let mut n = 0;
    for (j, (enc, buf)) in jobs.iter_mut().enumerate() {
        let blocks = buf.len() / BLOCK_LEN;
        if blocks == 0 {
            continue;
        }
        lane[n] = lanes::Lane {
            rk: enc.0.key.rd_key.as_ptr(),
            iv: enc.0.iv,
            p: buf.as_mut_ptr(),
        };
        left[n] = blocks;
        who[n] = j;
        n += 1;
    }
    while n > 1 {
        let step = *left[..n].iter().min().expect("n > 1");
        // SAFETY: the CPU was checked (`lanes_usable`); each lane's key is its encryptor's
        // 60-word schedule and its pointer has `left` ≥ `step` blocks of its own buffer
        // (the buffers are distinct `&mut` slices, so they do not overlap).
        unsafe { lanes::cbc_encrypt_any(&mut lane[..n], step) };
        let mut i = 0;
        while i < n {
            left[i] -= step;
            if left[i] == 0 {
                let (enc, buf) = &mut jobs[who[i]];
                enc.0.iv = lane[i].iv;
                enc.0.pos += (buf.len() / BLOCK_LEN * BLOCK_LEN) as u64;
                n -= 1;
                lane.swap(i, n);
                left.swap(i, n);
                who.swap(i, n);
            } else {
                i += 1;
            }
        }
    }
    if n == 1 {
        let (enc, buf) = &mut jobs[who[0]];
        enc.0.iv = lane[0].iv;
        let end = buf.len() / BLOCK_LEN * BLOCK_LEN;
        let done = end - left[0] * BLOCK_LEN;
        enc.0.pos += done as u64;
        // The rest, which `run_aws` counts.
        enc.0.run_aws(&mut buf[done..end], AES_ENCRYPT as _);
    }
}

#[cfg(target_arch = "x86_64")]
fn vaes_decrypt_self_test() -> bool {
    let key: [u8; 32] = std::array::from_fn(|i| (i * 11 + 3) as u8);
    let iv = [0x5au8; BLOCK_LEN];
    let data: Vec<u8> = (0..2 * vaes::CHUNK).map(|i| (i * 29 + 1) as u8).collect();
    let mut want = data.clone();
    let mut reference = Chain::new(&key, &iv, false);
    reference.run_aws(&mut want, AES_DECRYPT as _);
    let mut got = data;
    let mut c = Chain::new(&key, &iv, false);
    // SAFETY: the caller checked the CPU; the buffer is whole chunks.
    unsafe { vaes::cbc_decrypt(&c.key.rd_key, &mut c.iv, &mut got) };
    got == want && c.iv == reference.iv
}

/// The AES block size.
pub const BLOCK_LEN: usize = 16;

/// One CBC chain in one direction, on aws-lc's `AES_cbc_encrypt` (the call C MTProxy makes
/// through OpenSSL): 1.3x RustCrypto for the serial encryption and 1.5x our batched
/// RustCrypto decryption on this CPU (benches/crypto.rs). Boxed: the key schedule is
/// 244 bytes and lives as long as the ME connection.
#[derive(Clone)]
struct Chain {
    key: AES_KEY,
    /// The previous ciphertext block (the IV at first); aws-lc updates it.
    iv: [u8; BLOCK_LEN],
    pos: u64,
}

impl Chain {
    fn new(key: &[u8; 32], iv: &[u8; BLOCK_LEN], encrypt: bool) -> Box<Chain> {
        let mut c = Box::new(Chain {
            key: AES_KEY {
                rd_key: [0; 60],
                rounds: 0,
            },
            iv: *iv,
            pos: 0,
        });
        // SAFETY: `key` points to 32 readable bytes; `c.key` is a valid, writable AES_KEY.
        let rc = unsafe {
            if encrypt {
                AES_set_encrypt_key(key.as_ptr(), 256, &mut c.key)
            } else {
                AES_set_decrypt_key(key.as_ptr(), 256, &mut c.key)
            }
        };
        assert_eq!(rc, 0, "aws-lc refused a 256-bit AES key");
        c
    }

    /// Runs the longest whole-block prefix of `buf` through the chain in place.
    fn run(&mut self, buf: &mut [u8], mode: std::os::raw::c_int) -> usize {
        let n = buf.len() / BLOCK_LEN * BLOCK_LEN;
        #[cfg(target_arch = "x86_64")]
        if mode == AES_DECRYPT as std::os::raw::c_int && n >= vaes::CHUNK && vaes_decrypt_usable() {
            // Whole chunks on the VAES kernel, the rest on aws-lc, one chain.
            let whole = n / vaes::CHUNK * vaes::CHUNK;
            // SAFETY: checked CPU; `whole` is a multiple of the chunk; the key is the
            // decryption schedule (`new` with encrypt = false).
            unsafe { vaes::cbc_decrypt(&self.key.rd_key, &mut self.iv, &mut buf[..whole]) };
            self.pos += whole as u64;
            return whole + self.run_aws(&mut buf[whole..n], mode);
        }
        self.run_aws(&mut buf[..n], mode)
    }

    /// aws-lc's CBC over the whole blocks of `buf`.
    fn run_aws(&mut self, buf: &mut [u8], mode: std::os::raw::c_int) -> usize {
        let n = buf.len() / BLOCK_LEN * BLOCK_LEN;
        if n > 0 {
            let p = buf.as_mut_ptr();
            // SAFETY: in and out are the same n-byte buffer, n a multiple of 16 (in place is
            // supported, as in OpenSSL); the key was set up for this direction in `new`;
            // `iv` is the 16-byte chaining block the function reads and updates.
            unsafe { AES_cbc_encrypt(p, p, n, &self.key, self.iv.as_mut_ptr(), mode) };
        }
        self.pos += n as u64;
        n
    }
}

/// The encrypting direction.
#[derive(Clone)]
pub struct AesCbcEncryptor(Box<Chain>);

impl AesCbcEncryptor {
    /// A stream starting with `iv`.
    pub fn new(key: &[u8; 32], iv: &[u8; BLOCK_LEN]) -> Self {
        AesCbcEncryptor(Chain::new(key, iv, true))
    }

    /// Encrypts the longest whole-block prefix of `buf` in place and returns its length
    /// (`buf.len()` rounded down to a multiple of 16). The rest is left untouched.
    pub fn encrypt(&mut self, buf: &mut [u8]) -> usize {
        self.0.run(buf, AES_ENCRYPT as _)
    }

    /// Bytes encrypted so far.
    pub fn position(&self) -> u64 {
        self.0.pos
    }
}

/// The decrypting direction.
#[derive(Clone)]
pub struct AesCbcDecryptor(Box<Chain>);

impl AesCbcDecryptor {
    /// A stream starting with `iv`.
    pub fn new(key: &[u8; 32], iv: &[u8; BLOCK_LEN]) -> Self {
        AesCbcDecryptor(Chain::new(key, iv, false))
    }

    /// Decrypts the longest whole-block prefix of `buf` in place and returns its length.
    /// A partial last block is left untouched: hand it in again with the bytes that follow.
    pub fn decrypt(&mut self, buf: &mut [u8]) -> usize {
        self.0.run(buf, AES_DECRYPT as _)
    }

    /// Bytes decrypted so far.
    pub fn position(&self) -> u64 {
        self.0.pos
    }
}

impl std::fmt::Debug for AesCbcEncryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material or chaining state.
        write!(f, "AesCbcEncryptor(pos={})", self.0.pos)
    }
}

impl std::fmt::Debug for AesCbcDecryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AesCbcDecryptor(pos={})", self.0.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // NIST SP 800-38A, F.2.5 / F.2.6 (CBC-AES256).
    const KEY: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
    const IV: &str = "000102030405060708090a0b0c0d0e0f";
    const PLAIN: &str = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
    const CIPHER: &str = "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b";

    fn kiv() -> ([u8; 32], [u8; 16]) {
        (h(KEY).try_into().unwrap(), h(IV).try_into().unwrap())
    }

    #[test]
    fn nist_vector_both_ways() {
        let (k, iv) = kiv();
        let mut buf = h(PLAIN);
        assert_eq!(AesCbcEncryptor::new(&k, &iv).encrypt(&mut buf), 64);
        assert_eq!(hex::encode(&buf), CIPHER);
        assert_eq!(AesCbcDecryptor::new(&k, &iv).decrypt(&mut buf), 64);
        assert_eq!(hex::encode(&buf), PLAIN);
    }

    #[test]
    fn chaining_carries_across_calls_and_partial_tail_is_left() {
        let (k, iv) = kiv();
        let mut enc = AesCbcEncryptor::new(&k, &iv);
        let mut buf = h(PLAIN);
        let (a, b) = buf.split_at_mut(16);
        assert_eq!(enc.encrypt(a), 16);
        assert_eq!(enc.encrypt(&mut b[..47]), 32);
        assert_eq!(&b[32..47], &h(PLAIN)[48..63], "partial tail untouched");
        assert_eq!(enc.encrypt(&mut b[32..]), 16);
        assert_eq!(hex::encode(&buf), CIPHER);
        assert_eq!(enc.position(), 64);
        assert_eq!(format!("{enc:?}"), "AesCbcEncryptor(pos=64)");
    }

    proptest! {
        #[test]
        fn decrypt_in_any_block_split(cuts in proptest::collection::vec(0usize..40, 0..10), blocks in 1usize..40) {
            let key = [5u8; 32];
            let iv = [6u8; 16];
            let plain: Vec<u8> = (0..blocks * 16).map(|i| (i * 7 + 3) as u8).collect();
            let mut c = plain.clone();
            AesCbcEncryptor::new(&key, &iv).encrypt(&mut c);
            let mut dec = AesCbcDecryptor::new(&key, &iv);
            let mut at = 0;
            for cut in cuts {
                let end = (at + cut * 16).min(c.len());
                prop_assert_eq!(dec.decrypt(&mut c[at..end]), end - at);
                at = end;
            }
            dec.decrypt(&mut c[at..]);
            prop_assert_eq!(c, plain);
        }
    }

    proptest! {
        /// `encrypt_many` (interleaved chains where the CPU has AES-NI; that it is in use
        /// is checked in `select::tests::kernels_in_use_where_the_cpu_has_them`) against
        /// each encryptor alone: bytes, partial tails left alone, positions, and the chains
        /// carry on the same.
        #[test]
        fn encrypt_many_matches_one_chain_at_a_time(lens in proptest::collection::vec(0usize..700, 0..20), seed: u8) {
            let make = |i: usize| {
                let key: [u8; 32] = std::array::from_fn(|j| (j as u8).wrapping_mul(seed | 1).wrapping_add(i as u8));
                AesCbcEncryptor::new(&key, &[seed ^ i as u8; 16])
            };
            let data: Vec<Vec<u8>> = lens.iter().enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 7 + j * 3) as u8 ^ seed).collect())
                .collect();
            let mut want = data.clone();
            let mut one: Vec<AesCbcEncryptor> = (0..lens.len()).map(make).collect();
            for (e, b) in one.iter_mut().zip(want.iter_mut()) {
                e.encrypt(b);
            }
            let mut got = data.clone();
            let mut many: Vec<AesCbcEncryptor> = (0..lens.len()).map(make).collect();
            let mut jobs: Vec<(&mut AesCbcEncryptor, &mut [u8])> =
                many.iter_mut().zip(got.iter_mut().map(|b| &mut b[..])).collect();
            encrypt_many(&mut jobs);
            prop_assert_eq!(&got, &want);
            for (i, (a, b)) in many.iter_mut().zip(one.iter_mut()).enumerate() {
                prop_assert_eq!(a.position(), (lens[i] / 16 * 16) as u64);
                prop_assert_eq!(a.position(), b.position());
                let (mut x, mut y) = ([1u8; 32], [1u8; 32]);
                a.encrypt(&mut x);
                b.encrypt(&mut y);
                prop_assert_eq!(x, y, "chain {} carries on", i);
            }
        }
    }

    /// Decryption through `decrypt` (the VAES kernel for whole chunks where the CPU has
    /// it) against aws-lc alone, for lengths around the chunk, split in two calls. That the
    /// kernel is in use is checked in `select::tests::kernels_in_use_where_the_cpu_has_them`.
    #[test]
    fn decryption_matches_aws_lc_for_any_split() {
        let (key, iv) = kiv();
        for &n in &[16usize, 496, 512, 528, 1024, 1040, 4096, 65536, 65536 + 48] {
            for &first in &[0usize, 16, 512, 528] {
                let first = first.min(n);
                let data: Vec<u8> = (0..n).map(|i| (i * 13 + 7) as u8).collect();
                let mut want = data.clone();
                let mut r = Chain::new(&key, &iv, false);
                r.run_aws(&mut want, AES_DECRYPT as _);
                let mut got = data.clone();
                let mut d = AesCbcDecryptor::new(&key, &iv);
                assert_eq!(d.decrypt(&mut got[..first]), first);
                assert_eq!(d.decrypt(&mut got[first..]), n - first);
                assert_eq!(got, want, "n {n} first {first}");
                assert_eq!(d.position(), n as u64);
                // The chain continues.
                let (mut x, mut y) = ([9u8; 32], [9u8; 32]);
                r.run_aws(&mut x, AES_DECRYPT as _);
                d.decrypt(&mut y);
                assert_eq!(x, y, "n {n} first {first} (next)");
            }
        }
    }
}
