//! AES-256-CTR keystream as obfuscated2 uses it: OpenSSL `EVP_aes_256_ctr` semantics, the whole
//! 16-byte IV is one big-endian 128-bit counter (spec client.md §3.3, gotcha 3).
//!
//! Not a general crypto wrapper: it exists so the rest of the code names one type and the
//! cipher backend can be swapped (see the benchmarks) in one place.

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

/// CTR only ever runs the block cipher forwards: the encrypt-only key schedule is half the
/// state of `aes::Aes256`.
type Inner = ctr::Ctr128BE<aes::Aes256Enc>;

/// One direction of an obfuscated2 stream. Encrypting and decrypting are the same operation.
///
/// Boxed: a session holds two to four of these across its whole life, and inline they would
/// make every session's future (and every state it passes through) ~1 KiB larger each;
/// on the heap only the live ones cost memory (measured: idle session 28.7 → 10.2 KiB RSS).
#[derive(Clone)]
pub struct AesCtr(Box<Inner>);

impl AesCtr {
    /// A keystream positioned at byte 0.
    pub fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        AesCtr(Box::new(Inner::new(key.into(), iv.into())))
    }

    /// XORs the keystream into `buf` in place and advances the stream by `buf.len()`.
    #[inline]
    pub fn apply(&mut self, buf: &mut [u8]) {
        self.0.apply_keystream(buf);
    }

    /// Moves the stream forward by `n` bytes without touching any data.
    pub fn skip(&mut self, n: u64) {
        let pos: u64 = self.0.current_pos();
        self.0.seek(pos + n);
    }

    /// Keystream position in bytes from the start.
    pub fn position(&self) -> u64 {
        self.0.current_pos()
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
}
