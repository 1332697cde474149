//! The three MTProto transports inside the obfuscated stream (spec client.md §4): frame
//! prefixes of abridged, intermediate and padded intermediate, both directions.
//!
//! Sans-I/O: [`parse_frame`] looks at decrypted buffered bytes and says how long the next
//! frame is; the caller owns the buffer. [`encode_prefix`] writes a prefix for a payload.
//! What is not here: the obfuscation itself ([`crate::obfs2`]) and what the payload means.

use crate::obfs2::Tag;

/// Largest inbound frame C accepts (`MAX_POST_SIZE`, spec §4.4); padding included.
pub const MAX_FRAME: usize = 1_044_480;

/// A frame boundary found in the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A packet: `prefix` bytes of length prefix, then `body` bytes of which the first
    /// `payload` are the MTProto packet (padded intermediate drops the `body & 3` tail).
    Packet {
        /// Bytes of the length prefix (and quick-ack flag) before the body.
        prefix: usize,
        /// Bytes of the body after the prefix, padding included.
        body: usize,
        /// Bytes at the start of the body that are the MTProto packet.
        payload: usize,
        /// The sender asked for a quick acknowledgement (client to server only).
        quick_ack: bool,
    },
    /// A 4-byte quick-ack token sent without a length prefix (server to client only).
    QuickAck(u32),
}

impl Frame {
    /// Bytes of the whole frame, prefix included.
    pub fn total_len(&self) -> usize {
        match *self {
            Frame::Packet { prefix, body, .. } => prefix + body,
            Frame::QuickAck(_) => 4,
        }
    }
}

/// Why a stream was not valid framing. Every one of these closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Length 0 (abridged or intermediate).
    ZeroLength,
    /// Abridged long form carrying fewer than 127 words.
    Overlong,
    /// Intermediate length not a multiple of 4, or bit 30 set.
    BadLength(u32),
    /// Padded frame of 1..3 bytes: no packet at all (C asserts here; we close).
    PaddingOnly(u32),
    /// Above [`MAX_FRAME`].
    TooLarge(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::ZeroLength => write!(f, "zero frame length"),
            FrameError::Overlong => write!(f, "overlong abridged length encoding"),
            FrameError::BadLength(l) => write!(f, "bad frame length {l:#x}"),
            FrameError::PaddingOnly(l) => write!(f, "padded frame of {l} bytes has no packet"),
            FrameError::TooLarge(l) => write!(f, "frame of {l} bytes exceeds {MAX_FRAME}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Which way the bytes flow: a server reads request flags, a client reads quick-ack tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Parsing what a client sent (the proxy, a fake DC).
    FromClient,
    /// Parsing what a server sent (a client).
    FromServer,
}

/// Looks at the start of `buf` (decrypted bytes) for the next frame. `Ok(None)`: more bytes
/// are needed to know the length. The frame's body may not be complete yet: compare
/// [`Frame::total_len`] with `buf.len()`.
pub fn parse_frame(tag: Tag, side: Side, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
    match tag {
        Tag::Abridged => parse_abridged(side, buf),
        Tag::Intermediate | Tag::Padded => parse_intermediate(tag == Tag::Padded, side, buf),
    }
}

fn parse_abridged(side: Side, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
    let Some(&b) = buf.first() else {
        return Ok(None);
    };
    if b & 0x80 != 0 && side == Side::FromServer {
        if buf.len() < 4 {
            return Ok(None);
        }
        // The token was byte-swapped by the server: its first byte is the MSB.
        return Ok(Some(Frame::QuickAck(u32::from_be_bytes([
            buf[0], buf[1], buf[2], buf[3],
        ]))));
    }
    let quick_ack = b & 0x80 != 0;
    let (prefix, words) = if b & 0x7f == 0x7f {
        if buf.len() < 4 {
            return Ok(None);
        }
        let words = u32::from_le_bytes([buf[1], buf[2], buf[3], 0]) as usize;
        if words < 0x7f {
            return Err(FrameError::Overlong);
        }
        (4, words)
    } else {
        (1, (b & 0x7f) as usize)
    };
    if words == 0 {
        return Err(FrameError::ZeroLength);
    }
    let body = words * 4;
    if body > MAX_FRAME {
        return Err(FrameError::TooLarge(body));
    }
    Ok(Some(Frame::Packet {
        prefix,
        body,
        payload: body,
        quick_ack,
    }))
}

fn parse_intermediate(padded: bool, side: Side, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let raw = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if raw & 0x8000_0000 != 0 && side == Side::FromServer {
        return Ok(Some(Frame::QuickAck(raw)));
    }
    let quick_ack = raw & 0x8000_0000 != 0;
    let len = raw & 0x7fff_ffff;
    if len == 0 {
        return Err(FrameError::ZeroLength);
    }
    if len & 0x4000_0000 != 0 || (!padded && !len.is_multiple_of(4)) {
        return Err(FrameError::BadLength(raw));
    }
    let body = len as usize;
    if body > MAX_FRAME {
        return Err(FrameError::TooLarge(body));
    }
    if padded && body < 4 {
        return Err(FrameError::PaddingOnly(len));
    }
    let payload = if padded { body & !3 } else { body };
    Ok(Some(Frame::Packet {
        prefix: 4,
        body,
        payload,
        quick_ack,
    }))
}

/// Writes the length prefix for a `payload_len`-byte packet followed by `padding` bytes
/// (padded only; must be 0 otherwise) into `out`; returns the prefix length (1 or 4).
/// `payload_len` must be a multiple of 4 and at most [`MAX_FRAME`] for abridged.
pub fn encode_prefix(
    tag: Tag,
    payload_len: usize,
    padding: usize,
    quick_ack: bool,
    out: &mut [u8; 4],
) -> usize {
    match tag {
        Tag::Abridged => {
            debug_assert!(payload_len.is_multiple_of(4) && padding == 0);
            let words = payload_len / 4;
            let qa = if quick_ack { 0x80 } else { 0 };
            if words < 0x7f {
                out[0] = words as u8 | qa;
                1
            } else {
                let w = (words as u32).to_le_bytes();
                *out = [0x7f | qa, w[0], w[1], w[2]];
                4
            }
        }
        Tag::Intermediate | Tag::Padded => {
            debug_assert!(tag == Tag::Padded || padding == 0);
            let mut len = (payload_len + padding) as u32;
            if quick_ack {
                len |= 0x8000_0000;
            }
            *out = len.to_le_bytes();
            4
        }
    }
}

/// The 4 raw bytes a server sends for a quick acknowledgement `token` (spec §4.5): byte-swapped
/// in abridged, little-endian otherwise. (Padded's optional two-packet form is not produced.)
pub fn quick_ack_bytes(tag: Tag, token: u32) -> [u8; 4] {
    match tag {
        Tag::Abridged => token.to_be_bytes(),
        Tag::Intermediate | Tag::Padded => token.to_le_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn prefix(tag: Tag, n: usize, qa: bool) -> String {
        let mut out = [0u8; 4];
        let l = encode_prefix(tag, n, 0, qa, &mut out);
        hex::encode(&out[..l])
    }

    #[test]
    fn vector_8_5_prefixes() {
        let rows: [(usize, bool, &str, &str); 7] = [
            (4, false, "01", "04000000"),
            (40, false, "0a", "28000000"),
            (40, true, "8a", "28000080"),
            (504, false, "7e", "f8010000"),
            (508, false, "7f7f0000", "fc010000"),
            (508, true, "ff7f0000", "fc010080"),
            (1044480, false, "7f00fc03", "00f00f00"),
        ];
        for (n, qa, ab, im) in rows {
            assert_eq!(prefix(Tag::Abridged, n, qa), ab, "abridged {n}");
            assert_eq!(prefix(Tag::Intermediate, n, qa), im, "intermediate {n}");
            let ab_bytes = hex::decode(ab).unwrap();
            let f = parse_frame(Tag::Abridged, Side::FromClient, &ab_bytes)
                .unwrap()
                .unwrap();
            assert_eq!(
                f,
                Frame::Packet {
                    prefix: ab_bytes.len(),
                    body: n,
                    payload: n,
                    quick_ack: qa
                }
            );
            let im_bytes = hex::decode(im).unwrap();
            let f = parse_frame(Tag::Intermediate, Side::FromClient, &im_bytes)
                .unwrap()
                .unwrap();
            assert_eq!(
                f,
                Frame::Packet {
                    prefix: 4,
                    body: n,
                    payload: n,
                    quick_ack: qa
                }
            );
        }
    }

    #[test]
    fn vector_8_5_rejected() {
        assert_eq!(
            parse_frame(Tag::Abridged, Side::FromClient, &[0]),
            Err(FrameError::ZeroLength)
        );
        assert_eq!(
            parse_frame(Tag::Abridged, Side::FromClient, &[0x7f, 5, 0, 0]),
            Err(FrameError::Overlong)
        );
        assert_eq!(
            parse_frame(Tag::Intermediate, Side::FromClient, &[0; 4]),
            Err(FrameError::ZeroLength)
        );
        assert_eq!(
            parse_frame(Tag::Intermediate, Side::FromClient, &[5, 0, 0, 0]),
            Err(FrameError::BadLength(5))
        );
        assert_eq!(
            parse_frame(Tag::Intermediate, Side::FromClient, &[4, 0, 0, 0x40]),
            Err(FrameError::BadLength(0x4000_0004))
        );
        assert_eq!(
            parse_frame(Tag::Padded, Side::FromClient, &[3, 0, 0, 0]),
            Err(FrameError::PaddingOnly(3))
        );
        assert_eq!(
            parse_frame(
                Tag::Padded,
                Side::FromClient,
                &(MAX_FRAME as u32 + 1).to_le_bytes()
            ),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        assert_eq!(
            parse_frame(Tag::Abridged, Side::FromClient, &[0x7f, 0x01, 0x00, 0x04]),
            Err(FrameError::TooLarge(0x040001 * 4))
        );
    }

    #[test]
    fn padded_forwards_len_and_not_3() {
        // Spec §8.3: length 43 → forward 40.
        let f = parse_frame(Tag::Padded, Side::FromClient, &[43, 0, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!(
            f,
            Frame::Packet {
                prefix: 4,
                body: 43,
                payload: 40,
                quick_ack: false
            }
        );
        assert_eq!(f.total_len(), 47);
    }

    #[test]
    fn incomplete_prefixes_wait() {
        assert_eq!(parse_frame(Tag::Abridged, Side::FromClient, &[]), Ok(None));
        assert_eq!(
            parse_frame(Tag::Abridged, Side::FromClient, &[0x7f, 1]),
            Ok(None)
        );
        assert_eq!(
            parse_frame(Tag::Intermediate, Side::FromClient, &[1, 0, 0]),
            Ok(None)
        );
        assert_eq!(
            parse_frame(Tag::Intermediate, Side::FromServer, &[1, 0, 0]),
            Ok(None)
        );
    }

    #[test]
    fn quick_ack_tokens_from_server() {
        let token = 0x8123_4567;
        let b = quick_ack_bytes(Tag::Abridged, token);
        assert_eq!(b, [0x81, 0x23, 0x45, 0x67]);
        assert_eq!(
            parse_frame(Tag::Abridged, Side::FromServer, &b),
            Ok(Some(Frame::QuickAck(token)))
        );
        let b = quick_ack_bytes(Tag::Intermediate, token);
        assert_eq!(
            parse_frame(Tag::Intermediate, Side::FromServer, &b),
            Ok(Some(Frame::QuickAck(token)))
        );
    }

    proptest! {
        #[test]
        fn prefix_round_trip(words in 1usize..=(MAX_FRAME / 4), qa: bool, pad in 0usize..16, ti in 0usize..3) {
            let tag = Tag::ALL[ti];
            let n = words * 4;
            let pad = if tag == Tag::Padded { pad } else { 0 };
            let mut out = [0u8; 4];
            let l = encode_prefix(tag, n, pad, qa, &mut out);
            let f = parse_frame(tag, Side::FromClient, &out[..l]);
            if n + pad > MAX_FRAME {
                prop_assert_eq!(f, Err(FrameError::TooLarge(n + pad)));
            } else {
                prop_assert_eq!(f, Ok(Some(Frame::Packet { prefix: l, body: n + pad, payload: n + (pad & !3), quick_ack: qa })));
            }
        }

        #[test]
        fn parser_never_panics(tag in 0usize..3, fromserver: bool, bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
            let side = if fromserver { Side::FromServer } else { Side::FromClient };
            let _ = parse_frame(Tag::ALL[tag], side, &bytes);
        }
    }
}
