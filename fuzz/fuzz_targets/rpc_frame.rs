//! The ME RPC frame decoder: `rpc::FrameDecoder::decode` over a plaintext stream.
//!
//! Input: flags (1) ‖ stream. flags bit 0: CRC32C instead of CRC32; bit 1: first rewrite
//! the seq and checksum of every well-formed frame so the decoder gets past them.
//! Invariants: each frame decoded, encoded again by a fresh `FrameEncoder`, gives the input
//! bytes back (after the padding words it skipped); the sequence advances by one per
//! frame; `Ok(None)` only when the next frame is really incomplete; with the rewrite every
//! rewritten frame decodes. Each payload also goes through the RPC message parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::rpc::frame::{
    leading_padding, CrcKind, FrameDecoder, FrameEncoder, FIRST_SEQ, MAX_PACKET_LEN,
};
use mtproto_wire::rpc::{handshake, nonce, ops};

fn le_i32(b: &[u8]) -> i32 {
    i32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Gives every complete, well-formed frame the right seq and checksum; returns how many.
fn fix_up(buf: &mut [u8], crc: CrcKind) -> usize {
    let (mut pos, mut seq, mut n) = (0usize, FIRST_SEQ, 0usize);
    while pos + 4 <= buf.len() {
        let len = le_i32(&buf[pos..]);
        if len == 4 {
            pos += 4;
            continue;
        }
        if len < 16
            || len % 4 != 0
            || len as usize > MAX_PACKET_LEN
            || pos + len as usize > buf.len()
        {
            break;
        }
        let l = len as usize;
        buf[pos + 4..pos + 8].copy_from_slice(&seq.to_le_bytes());
        let sum = crc.checksum(&buf[pos..pos + l - 4]);
        buf[pos + l - 4..pos + l].copy_from_slice(&sum.to_le_bytes());
        seq = seq.wrapping_add(1);
        pos += l;
        n += 1;
    }
    n
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let crc = if flags & 1 != 0 {
        CrcKind::Crc32c
    } else {
        CrcKind::Crc32
    };
    let mut buf = rest.to_vec();
    let fixed = (flags & 2 != 0).then(|| fix_up(&mut buf, crc));

    let mut dec = FrameDecoder::new();
    dec.switch_crc(crc);
    let mut enc = FrameEncoder::new();
    enc.switch_crc(crc);
    let (mut pos, mut frames) = (0usize, 0usize);
    loop {
        let rest = &buf[pos..];
        let before = dec.expected_seq();
        match dec.decode(rest) {
            Ok(Some((consumed, range))) => {
                let pad = leading_padding(rest);
                assert_eq!(range.start, pad + 8);
                assert_eq!(range.end + 4, consumed);
                assert!(consumed <= rest.len());
                let payload = &rest[range.clone()];
                assert!(!payload.is_empty() && payload.len().is_multiple_of(4));
                assert_eq!(dec.expected_seq(), before.wrapping_add(1));
                let mut again = Vec::new();
                enc.encode(payload, &mut again);
                assert_eq!(again, rest[pad..consumed]);
                let _ = ops::parse_me_op(payload);
                let _ = ops::parse_proxy_op(payload);
                let _ = handshake::Handshake::parse(payload);
                let _ = nonce::check_me_nonce(payload, [0, 1, 2, 3], 1_600_000_000);
                pos += consumed;
                frames += 1;
            }
            Ok(None) => {
                assert_eq!(dec.expected_seq(), before);
                let r = &rest[leading_padding(rest)..];
                if r.len() >= 4 {
                    let n = le_i32(r);
                    assert!(n >= 16 && n % 4 == 0 && n as usize <= MAX_PACKET_LEN);
                    assert!(n as usize > r.len());
                }
                break;
            }
            Err(e) => {
                let _ = (e.c_code(), e.to_string());
                break;
            }
        }
    }
    if let Some(fixed) = fixed {
        assert_eq!(frames, fixed);
    }
});
