//! RPC packet framing (spec backend-ops.md §1.3): `total_len:i32 ‖ seq:i32 ‖ payload ‖ crc:u32`,
//! all little-endian, `total_len = 12 + payload length`, the checksum over everything before
//! it. Sequence numbers run −2, −1, 0, 1, … in each direction independently. A lone
//! `total_len == 4` word is padding: it has no seq and no checksum.
//!
//! The same framing is used before encryption (the two nonce packets) and inside the AES-CBC
//! stream (everything else); this module only sees plaintext. [`pad_to_block`] adds the
//! padding words a sender puts before each encryption so that whole 16-byte blocks go out.
//!
//! Not here: encryption ([`super::cbc`]) and what payloads mean ([`super::nonce`],
//! [`super::handshake`], [`super::ops`]). After any [`RpcError`] the connection must be
//! closed; the decoder's state is then meaningless.

use std::ops::Range;

/// A padding word: the int32 value 4.
pub const PAD_WORD: [u8; 4] = [4, 0, 0, 0];
/// Length, seq and checksum around each payload.
pub const FRAME_OVERHEAD: usize = 12;
/// Largest `total_len` accepted (2^24). The C has no limit towards MEs; mtprotoproxy and
/// telemt use this one, and no legitimate packet comes close.
pub const MAX_PACKET_LEN: usize = 1 << 24;
/// Sequence number of the first packet in each direction.
pub const FIRST_SEQ: i32 = -2;

/// The frame checksum in use. Both directions start with CRC32 and switch to CRC32C together,
/// after the ME's handshake answer asked for it (§1.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CrcKind {
    /// IEEE CRC32 as zlib computes it.
    #[default]
    Crc32,
    /// Castagnoli CRC32C.
    Crc32c,
}

impl CrcKind {
    /// The checksum of `data`.
    pub fn checksum(self, data: &[u8]) -> u32 {
        match self {
            CrcKind::Crc32 => crc32fast::hash(data),
            CrcKind::Crc32c => crc32c::crc32c(data),
        }
    }
}

/// Why an incoming byte stream is not valid RPC framing. The names follow the C's
/// `fail_connection` codes, see [`RpcError::c_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcError {
    /// `total_len` ≤ 0 or not a multiple of 4 (C: −1).
    BadLength(i32),
    /// `total_len` above [`MAX_PACKET_LEN`] (our cap; counts as C's −1).
    TooLong(i32),
    /// `total_len` of 8 or 12: too short for seq, an op and a checksum (C: −2).
    TooShort(i32),
    /// The checksum in the frame (`got`) is not the one computed (`computed`) (C: −3).
    CrcMismatch {
        /// The checksum of the bytes received.
        computed: u32,
        /// The checksum the frame carries.
        got: u32,
    },
    /// A sequence number other than the next expected one (C: −4).
    BadSeq {
        /// The next sequence number.
        expected: i32,
        /// The one the frame carries.
        got: i32,
    },
}

impl RpcError {
    /// The `fail_connection` code the C uses for this error.
    pub fn c_code(&self) -> i32 {
        match self {
            RpcError::BadLength(_) | RpcError::TooLong(_) => -1,
            RpcError::TooShort(_) => -2,
            RpcError::CrcMismatch { .. } => -3,
            RpcError::BadSeq { .. } => -4,
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::BadLength(l) => write!(f, "bad RPC packet length {l}"),
            RpcError::TooLong(l) => write!(f, "RPC packet length {l} exceeds {MAX_PACKET_LEN}"),
            RpcError::TooShort(l) => write!(f, "RPC packet length {l} is too short"),
            RpcError::CrcMismatch { computed, got } => {
                write!(f, "RPC packet checksum {got:08x}, computed {computed:08x}")
            }
            RpcError::BadSeq { expected, got } => {
                write!(f, "RPC packet seq {got}, expected {expected}")
            }
        }
    }
}

impl std::error::Error for RpcError {}

/// The sending half: numbers packets from −2 and checksums them.
#[derive(Clone, Debug)]
pub struct FrameEncoder {
    seq: i32,
    crc: CrcKind,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        FrameEncoder::new()
    }
}

impl FrameEncoder {
    /// A fresh connection: seq −2, CRC32.
    pub fn new() -> Self {
        FrameEncoder {
            seq: FIRST_SEQ,
            crc: CrcKind::Crc32,
        }
    }

    /// Appends one frame carrying `payload` to `out` and advances the sequence number.
    /// `payload` must be a non-empty multiple of 4 bytes (every RPC payload is): the peer
    /// rejects anything else.
    pub fn encode(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        out.reserve(payload.len() + FRAME_OVERHEAD);
        let start = self.begin(out);
        out.extend_from_slice(payload);
        self.finish(out, start);
    }

    /// Starts a frame at the end of `out` whose payload the caller appends in place (no
    /// copy of it); returns where the frame starts, for [`FrameEncoder::finish`].
    pub fn begin(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        start
    }

    /// Completes the frame begun at `start`: everything appended after its header is the
    /// payload (a non-empty multiple of 4 bytes). Writes the length and sequence number,
    /// appends the checksum and advances the sequence number.
    pub fn finish(&mut self, out: &mut Vec<u8>, start: usize) {
        let payload = out.len() - start - 8;
        debug_assert!(
            payload > 0 && payload.is_multiple_of(4),
            "RPC payload of {payload} bytes"
        );
        let total = (payload + FRAME_OVERHEAD) as u32;
        out[start..start + 4].copy_from_slice(&total.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&self.seq.to_le_bytes());
        let crc = self.crc.checksum(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        self.seq = self.seq.wrapping_add(1);
    }

    /// Changes the checksum for every later frame (after the handshake).
    pub fn switch_crc(&mut self, kind: CrcKind) {
        self.crc = kind;
    }

    /// The checksum in use.
    pub fn crc(&self) -> CrcKind {
        self.crc
    }

    /// The sequence number the next frame gets.
    pub fn next_seq(&self) -> i32 {
        self.seq
    }
}

/// The receiving half: finds frames in a buffer of plaintext, checks them and the sequence.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    expected: i32,
    crc: CrcKind,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A fresh connection: expects seq −2 with CRC32.
    pub fn new() -> Self {
        FrameDecoder {
            expected: FIRST_SEQ,
            crc: CrcKind::Crc32,
        }
    }

    /// Looks for the next frame at the start of `buf` (plaintext), skipping padding words.
    ///
    /// - `Ok(Some((consumed, payload)))`: a valid frame. `consumed` counts the padding words
    ///   before it and the whole frame; `payload` is the payload's position within `buf`.
    ///   The expected sequence number has advanced.
    /// - `Ok(None)`: more bytes are needed. Padding words already seen are not consumed
    ///   (see [`leading_padding`] to drop them early).
    /// - `Err(_)`: the stream is broken; close the connection.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(usize, Range<usize>)>, RpcError> {
        let mut at = 0;
        loop {
            let Some(head) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            let len = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if len == 4 {
                at += 4;
                continue;
            }
            if len <= 0 || len % 4 != 0 {
                return Err(RpcError::BadLength(len));
            }
            if len < 16 {
                return Err(RpcError::TooShort(len));
            }
            let n = len as usize;
            if n > MAX_PACKET_LEN {
                return Err(RpcError::TooLong(len));
            }
            let Some(frame) = buf.get(at..at + n) else {
                return Ok(None);
            };
            let computed = self.crc.checksum(&frame[..n - 4]);
            let got = u32::from_le_bytes([frame[n - 4], frame[n - 3], frame[n - 2], frame[n - 1]]);
            if computed != got {
                return Err(RpcError::CrcMismatch { computed, got });
            }
            let seq = i32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if seq != self.expected {
                return Err(RpcError::BadSeq {
                    expected: self.expected,
                    got: seq,
                });
            }
            self.expected = self.expected.wrapping_add(1);
            return Ok(Some((at + n, at + 8..at + n - 4)));
        }
    }

    /// Changes the checksum expected on every later frame (after the handshake).
    pub fn switch_crc(&mut self, kind: CrcKind) {
        self.crc = kind;
    }

    /// The checksum in use.
    pub fn crc(&self) -> CrcKind {
        self.crc
    }

    /// The sequence number the next frame must carry.
    pub fn expected_seq(&self) -> i32 {
        self.expected
    }
}

/// How many bytes of padding words `buf` starts with. A caller that buffers input can drop
/// them before waiting for more bytes; [`FrameDecoder::decode`] skips them anyway.
pub fn leading_padding(buf: &[u8]) -> usize {
    buf.chunks_exact(4).take_while(|w| *w == PAD_WORD).count() * 4
}

/// Appends 0..3 padding words so that `out[start..]` is a whole number of 16-byte blocks,
/// as a sender does before encrypting what it flushes (§1.4). `out[start..]` must already
/// be a multiple of 4 bytes long (frames always are).
pub fn pad_to_block(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    debug_assert!(len.is_multiple_of(4), "{len} bytes are not word-aligned");
    let words = ((16 - len % 16) % 16) / 4;
    for _ in 0..words {
        out.extend_from_slice(&PAD_WORD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_check_values() {
        assert_eq!(CrcKind::Crc32.checksum(b"123456789"), 0xcbf4_3926);
        assert_eq!(CrcKind::Crc32c.checksum(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn spec_nonce_frame_bytes() {
        // §1.6: the proxy's nonce frame, seq −2, CRC32.
        let payload =
            hex::decode("aa87cb7a000102030100000000105e5f22222222222222222222222222222222")
                .unwrap();
        let mut enc = FrameEncoder::new();
        let mut out = Vec::new();
        enc.encode(&payload, &mut out);
        assert_eq!(
            hex::encode(&out),
            "2c000000feffffffaa87cb7a000102030100000000105e5f22222222222222222222222222222222ec512759"
        );
        assert_eq!(enc.next_seq(), -1);
        let mut dec = FrameDecoder::new();
        assert_eq!(dec.decode(&out), Ok(Some((44, 8..40))));
        assert_eq!(dec.expected_seq(), -1);
    }

    #[test]
    fn frames_built_in_place_are_the_encoded_bytes() {
        let (mut a, mut b) = (FrameEncoder::new(), FrameEncoder::new());
        a.switch_crc(CrcKind::Crc32c);
        b.switch_crc(CrcKind::Crc32c);
        let (mut want, mut got) = (vec![7u8; 5], vec![7u8; 5]);
        for payload in [&[1u8, 2, 3, 4][..], &[9u8; 64][..]] {
            a.encode(payload, &mut want);
            let start = b.begin(&mut got);
            got.extend_from_slice(payload);
            b.finish(&mut got, start);
        }
        assert_eq!(got, want);
        assert_eq!(b.next_seq(), a.next_seq());
    }

    #[test]
    fn sequence_and_crc_switch() {
        let mut enc = FrameEncoder::new();
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        for i in 0..4u32 {
            if i == 2 {
                enc.switch_crc(CrcKind::Crc32c);
            }
            out.clear();
            enc.encode(&i.to_le_bytes(), &mut out);
            assert_eq!(&out[4..8], &(i as i32 - 2).to_le_bytes());
            if i == 2 {
                // Still CRC32 on the receiving side: mismatch.
                let mut d2 = dec.clone();
                assert!(matches!(d2.decode(&out), Err(RpcError::CrcMismatch { .. })));
                dec.switch_crc(CrcKind::Crc32c);
            }
            let (n, r) = dec.decode(&out).unwrap().unwrap();
            assert_eq!(n, 16);
            assert_eq!(&out[r], &i.to_le_bytes());
        }
    }

    #[test]
    fn padding_words_are_skipped() {
        let mut enc = FrameEncoder::new();
        let mut buf = Vec::new();
        buf.extend_from_slice(&PAD_WORD);
        buf.extend_from_slice(&PAD_WORD);
        enc.encode(&[1, 2, 3, 4], &mut buf);
        buf.extend_from_slice(&PAD_WORD);
        let mut dec = FrameDecoder::new();
        // Incomplete frame after padding: nothing consumed yet.
        assert_eq!(dec.decode(&buf[..12]), Ok(None));
        assert_eq!(leading_padding(&buf[..12]), 8);
        assert_eq!(dec.decode(&buf), Ok(Some((24, 16..20))));
        // The trailing padding word alone is "need more".
        assert_eq!(dec.decode(&buf[24..]), Ok(None));
        assert_eq!(leading_padding(&buf[24..]), 4);
    }

    #[test]
    fn rejections_have_distinct_variants() {
        let mut dec = FrameDecoder::new();
        let word = |v: i32| v.to_le_bytes().to_vec();
        assert_eq!(dec.decode(&word(0)), Err(RpcError::BadLength(0)));
        assert_eq!(dec.decode(&word(-16)), Err(RpcError::BadLength(-16)));
        assert_eq!(dec.decode(&word(18)), Err(RpcError::BadLength(18)));
        assert_eq!(dec.decode(&word(8)), Err(RpcError::TooShort(8)));
        assert_eq!(dec.decode(&word(12)), Err(RpcError::TooShort(12)));
        assert_eq!(
            dec.decode(&word((1 << 24) + 4)),
            Err(RpcError::TooLong((1 << 24) + 4))
        );
        // 2^24 itself is allowed: just waits for the bytes.
        assert_eq!(dec.decode(&word(1 << 24)), Ok(None));
        assert_eq!(RpcError::TooShort(8).c_code(), -2);

        let mut enc = FrameEncoder::new();
        let mut f = Vec::new();
        enc.encode(&[9; 8], &mut f);
        let mut bad = f.clone();
        bad[10] ^= 1;
        assert!(matches!(
            dec.decode(&bad),
            Err(RpcError::CrcMismatch { .. })
        ));
        // Right CRC, wrong seq: a second frame from a fresh encoder has −2 again.
        dec.decode(&f).unwrap().unwrap();
        assert_eq!(
            dec.decode(&f),
            Err(RpcError::BadSeq {
                expected: -1,
                got: -2
            })
        );
    }

    #[test]
    fn pad_to_block_adds_0_to_3_words() {
        for pre in [0usize, 4, 8, 12, 16, 20, 44] {
            let mut out = vec![0xaa; 3];
            out.extend(std::iter::repeat_n(0u8, pre));
            pad_to_block(&mut out, 3);
            assert_eq!((out.len() - 3) % 16, 0);
            assert!(out.len() - 3 - pre <= 12);
            assert!(out[3 + pre..].chunks(4).all(|w| w == PAD_WORD));
        }
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), crc32c: bool) {
            let mut dec = FrameDecoder::new();
            if crc32c {
                dec.switch_crc(CrcKind::Crc32c);
            }
            let mut at = 0;
            while let Ok(Some((n, r))) = dec.decode(&bytes[at..]) {
                prop_assert!(r.end <= n && n > 0);
                at += n;
            }
        }

        #[test]
        fn round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u32>(), 1..20), 1..8), pads in proptest::collection::vec(0usize..4, 8)) {
            let mut enc = FrameEncoder::new();
            let mut buf = Vec::new();
            for (p, pad) in payloads.iter().zip(&pads) {
                for _ in 0..*pad { buf.extend_from_slice(&PAD_WORD); }
                let bytes: Vec<u8> = p.iter().flat_map(|w| w.to_le_bytes()).collect();
                enc.encode(&bytes, &mut buf);
            }
            let mut dec = FrameDecoder::new();
            let mut at = 0;
            for p in &payloads {
                let (n, r) = dec.decode(&buf[at..]).unwrap().unwrap();
                let bytes: Vec<u8> = p.iter().flat_map(|w| w.to_le_bytes()).collect();
                prop_assert_eq!(&buf[at..][r], &bytes[..]);
                at += n;
            }
            prop_assert_eq!(dec.decode(&buf[at..]), Ok(None));
        }
    }
}
