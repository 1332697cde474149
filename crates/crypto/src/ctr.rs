//! AES-256-CTR keystream as obfuscated2 uses it: OpenSSL `EVP_aes_256_ctr` semantics, the whole
//! 16-byte IV is one big-endian 128-bit counter (spec client.md §3.3, gotcha 3).
//!
//! Not a general crypto wrapper: it exists so the rest of the code names one type and the
//! cipher backend can be swapped (see the benchmarks) in one place.

use aws_lc_sys::{AES_ctr128_encrypt, AES_set_encrypt_key, AES_KEY};
use std::os::raw::c_uint;

#[cfg(target_arch = "x86_64")]
use crate::select::{kernel_decided, vaes_allowed};
#[cfg(target_arch = "x86_64")]
use crate::vaes;
#[cfg(target_arch = "x86_64")]
use std::sync::atomic::AtomicU8;

/// The cipher state: aws-lc's `AES_KEY` (encryption schedule only: CTR never decrypts a
/// block) and the OpenSSL-style counter block, keystream block and offset into it, which
/// carry a partial block from one call to the next.
#[derive(Clone)]
struct State {
    key: AES_KEY,
    counter: [u8; 16],
    keystream: [u8; 16],
    used: c_uint,
    pos: u64,
}

/// One direction of an obfuscated2 stream. Encrypting and decrypting are the same operation.
///
/// Backed by aws-lc (`AES_ctr128_encrypt`, the call OpenSSL-based C MTProxy makes through
/// `EVP_aes_256_ctr`): 1.2-1.4x the throughput of RustCrypto's `ctr` on this CPU and 288
/// bytes of state against about 1 000 (see benches/crypto.rs and docs/performance.md).
/// On CPUs with VAES and AVX-512 the whole 512-byte chunks of long buffers go through our
/// own kernel instead (`crypto/vaes.rs`, about twice aws-lc's rate), on the same state.
/// Boxed: a session holds two to four of these for its whole life, and inline they would
/// make every state of the session's future larger; on the heap only the live ones cost.
#[derive(Clone)]
pub struct AesCtr(Box<State>);

impl State {
    /// aws-lc's CTR over `buf` (any length; carries the partial block in `keystream`/`used`).
    #[inline]
    fn aws_lc(&mut self, buf: &mut [u8]) {
        if buf.is_empty() {
            return;
        }
        let p = buf.as_mut_ptr();
        // SAFETY: in and out are the same `buf.len()`-byte buffer (the function works in
        // place, as OpenSSL's does); the key was set up in `AesCtr::new`; `counter` and
        // `keystream` are the 16-byte arrays it reads and updates, and `used` stays below
        // 16 (the function maintains it).
        unsafe {
            AES_ctr128_encrypt(
                p,
                p,
                buf.len(),
                &self.key,
                self.counter.as_mut_ptr(),
                self.keystream.as_mut_ptr(),
                &mut self.used,
            );
        }
    }
}

/// Below this many bytes the VAES kernel is not worth the switch (one chunk plus the
/// largest head).
#[cfg(target_arch = "x86_64")]
const VAES_MIN: usize = vaes::CHUNK + 16;

/// `buf` as the bytes up to the next block boundary (given the offset `used` into the
/// current keystream block), the whole kernel chunks after them and the rest.
#[cfg(target_arch = "x86_64")]
fn split_for_kernel(used: c_uint, buf: &mut [u8]) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let head = ((16 - used % 16) % 16) as usize;
    let (head, rest) = buf.split_at_mut(head.min(buf.len()));
    let whole = rest.len() / vaes::CHUNK * vaes::CHUNK;
    let (mid, tail) = rest.split_at_mut(whole);
    (head, mid, tail)
}

/// Whether `AesCtr` uses the VAES kernels: the CPU has them, the environment does not turn
/// them off (`MTPROXY_AES=aesni`, for comparisons and as a way out), and they give the same
/// bytes as aws-lc for a test stream that crosses a 64-bit counter carry (this also checks
/// that aws-lc stored the round keys in the layout the kernels read). Decided once.
#[cfg(target_arch = "x86_64")]
pub(crate) fn vaes_usable() -> bool {
    static USE: AtomicU8 = AtomicU8::new(0);
    kernel_decided(&USE, vaes_allowed, vaes_self_test)
}

#[cfg(target_arch = "x86_64")]
fn vaes_self_test() -> bool {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8 * 7 + 1);
    let mut iv = [0xa5u8; 16];
    iv[8..].copy_from_slice(&(u64::MAX - 9).to_be_bytes());
    let fresh = || AesCtr::new(&key, &iv);
    let mut want = [0u8; 3 * vaes::CHUNK];
    fresh().0.aws_lc(&mut want);
    let mut got = [0u8; 3 * vaes::CHUNK];
    let mut st = fresh().0;
    let mut c = u128::from_be_bytes(st.counter);
    // SAFETY: `cpu_has` was checked by the caller; the buffer is whole chunks.
    unsafe { vaes::ctr(&st.key.rd_key, &mut c, &mut got) };
    st.counter = c.to_be_bytes();
    let mut next = [0u8; 16];
    st.aws_lc(&mut next);
    let mut want_next = [0u8; 16];
    let mut r = fresh().0;
    r.aws_lc(&mut [0u8; 3 * vaes::CHUNK]);
    r.aws_lc(&mut want_next);
    got == want && next == want_next
}

impl AesCtr {
    /// A keystream positioned at byte 0.
    pub fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        let mut st = Box::new(State {
            key: AES_KEY {
                rd_key: [0; 60],
                rounds: 0,
            },
            counter: *iv,
            keystream: [0; 16],
            used: 0,
            pos: 0,
        });
        // SAFETY: `key` points to 32 readable bytes (256 bits) and `st.key` is a valid,
        // writable AES_KEY; the call only writes the schedule into it.
        let rc = unsafe { AES_set_encrypt_key(key.as_ptr(), 256, &mut st.key) };
        assert_eq!(rc, 0, "AES_set_encrypt_key refused a 256-bit key");
        AesCtr(st)
    }

    /// XORs the keystream into `buf` in place and advances the stream by `buf.len()`.
    #[inline]
    pub fn apply(&mut self, buf: &mut [u8]) {
        if buf.is_empty() {
            return;
        }
        let st = &mut *self.0;
        st.pos += buf.len() as u64;
        #[cfg(target_arch = "x86_64")]
        if buf.len() >= VAES_MIN && vaes_usable() {
            let (head, mid, tail) = split_for_kernel(st.used, buf);
            st.aws_lc(head);
            let mut c = u128::from_be_bytes(st.counter);
            // SAFETY: `vaes_usable` checked the CPU; `mid` is whole chunks; `st.used` is 0
            // after `head`, so `st.counter` is the next block's counter.
            unsafe { vaes::ctr(&st.key.rd_key, &mut c, mid) };
            st.counter = c.to_be_bytes();
            st.aws_lc(tail);
            return;
        }
        st.aws_lc(buf);
    }

    /// Moves the stream forward by `n` bytes without touching any data.
    pub fn skip(&mut self, n: u64) {
        let mut scratch = [0u8; 256];
        let mut left = n;
        while left > 0 {
            let k = left.min(scratch.len() as u64) as usize;
            self.apply(&mut scratch[..k]);
            left -= k as u64;
        }
    }

    /// Keystream position in bytes from the start.
    pub fn position(&self) -> u64 {
        self.0.pos
    }
}

impl std::fmt::Debug for AesCtr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "AesCtr(pos={})", self.position())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_carries_across_all_128_bits() {
        // IV ff..ff: the next block's counter wraps to 00..00 (full 128-bit carry).
        let key = [7u8; 32];
        let mut a = AesCtr::new(&key, &[0xff; 16]);
        let mut two = [0u8; 32];
        a.apply(&mut two);
        let mut b = AesCtr::new(&key, &[0; 16]);
        let mut one = [0u8; 16];
        b.apply(&mut one);
        assert_eq!(&two[16..], &one[..]);
    }

    #[test]
    fn nist_sp800_38a_ctr_aes256() {
        // F.5.5 CTR-AES256.Encrypt, fed in uneven pieces so the partial-block carry is used.
        let key: [u8; 32] = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
        let iv: [u8; 16] = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let plain = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
                     30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
        let cipher = "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5\
                      2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6";
        let mut buf: Vec<u8> = hexv(plain);
        let mut c = AesCtr::new(&key, &iv);
        let (a, rest) = buf.split_at_mut(5);
        c.apply(a);
        let (b, rest) = rest.split_at_mut(27);
        c.apply(b);
        c.apply(&mut rest[..0]);
        c.apply(rest);
        assert_eq!(buf, hexv(cipher));
        assert_eq!(c.position(), 64);
    }

    fn hexv(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn hex<const N: usize>(s: &str) -> [u8; N] {
        hexv(s).try_into().unwrap()
    }

    #[test]
    fn clones_continue_independently() {
        let mut a = AesCtr::new(&[3; 32], &[4; 16]);
        let mut x = [0u8; 21];
        a.apply(&mut x);
        let mut b = a.clone();
        let (mut p, mut q) = ([0u8; 40], [0u8; 40]);
        a.apply(&mut p);
        b.apply(&mut q);
        assert_eq!(p, q);
        assert_eq!(a.position(), 61);
    }

    #[test]
    fn skip_equals_applying() {
        let mut a = AesCtr::new(&[1; 32], &[2; 16]);
        let mut b = a.clone();
        let mut buf = [0u8; 100];
        a.apply(&mut buf[..37]);
        b.skip(37);
        let mut x = [0u8; 63];
        let mut y = [0u8; 63];
        a.apply(&mut x);
        b.apply(&mut y);
        assert_eq!(x, y);
        assert_eq!(a.position(), 100);
    }

    /// The stream through `apply`, with the kernels where the CPU has them, against aws-lc
    /// alone, for sizes around the kernel's chunk and threshold, uneven splits and an IV
    /// whose low 64 bits carry within the stream.
    #[test]
    fn kernels_match_aws_lc_for_any_split() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 13 + 5) as u8);
        let mut ivs = vec![[0x11u8; 16], [0xff; 16]];
        let mut near = [0x42u8; 16];
        near[8..].copy_from_slice(&(u64::MAX - 40).to_be_bytes());
        ivs.push(near);
        let sizes = [
            1usize, 15, 16, 17, 255, 256, 511, 512, 527, 528, 529, 1000, 1024, 4096, 65536,
        ];
        for iv in ivs {
            for &first in &[0usize, 1, 7, 16, 300] {
                for &n in &sizes {
                    let data: Vec<u8> = (0..first + n).map(|i| (i * 31 + 7) as u8).collect();
                    let mut want = data.clone();
                    AesCtr::new(&key, &iv).0.aws_lc(&mut want);
                    let mut got = data.clone();
                    let mut c = AesCtr::new(&key, &iv);
                    let (a, b) = got.split_at_mut(first);
                    c.apply(a);
                    c.apply(b);
                    assert_eq!(got, want, "iv {iv:02x?} first {first} n {n}");
                    assert_eq!(c.position(), (first + n) as u64);
                    // And the next bytes continue the same stream.
                    let mut more = [0u8; 40];
                    c.apply(&mut more);
                    let mut r = AesCtr::new(&key, &iv);
                    r.0.aws_lc(&mut vec![0u8; first + n]);
                    let mut want_more = [0u8; 40];
                    r.0.aws_lc(&mut want_more);
                    assert_eq!(more, want_more, "iv {iv:02x?} first {first} n {n} (next)");
                }
            }
        }
    }
}
