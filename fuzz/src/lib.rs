//! Helpers shared by the fuzz targets: a cursor over the fuzz input, the spec's test
//! secrets, and private temp files for the targets that must go through the file system.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Secret S of spec client.md §8.1.
pub const S: [u8; 16] = [
    0x03, 0x3a, 0x58, 0x8e, 0xbe, 0x5a, 0xae, 0x54, 0xb3, 0x7e, 0xa8, 0x5b, 0x97, 0xed, 0x66, 0x1a,
];
/// Secret S2 of spec client.md §8.1.
pub const S2: [u8; 16] = [
    0x17, 0xb1, 0x06, 0x7a, 0xbf, 0xeb, 0x54, 0xe7, 0xfd, 0x4b, 0x29, 0x9b, 0x31, 0x50, 0x74, 0xe0,
];
/// 'now' of spec client.md §8.1.
pub const NOW: i64 = 1_700_000_000;
/// The TLS domain of spec client.md §8.1.
pub const DOMAIN: &str = "www.example.com";

/// Reads fixed-size pieces off the front of the fuzz input; missing bytes read as zero, so
/// every input is usable and short inputs still reach the parser.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    pub fn u8(&mut self) -> u8 {
        let [b] = self.array::<1>();
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }

    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }

    /// Everything left.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

static CLEANUP: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_temp() {
    if let Some(p) = CLEANUP.get() {
        let _ = std::fs::remove_dir_all(p);
    }
}

/// A directory private to this process under `$TMPDIR` (scripts/fuzz.sh points that into
/// fuzz/work/), removed when the process exits normally (libFuzzer's end of
/// `-max_total_time` or `-runs` is a normal `exit`; after a crash it is left behind).
pub fn private_dir(target: &str) -> &'static Path {
    CLEANUP.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("mtproxy-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz temp dir");
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe {
            libc::atexit(remove_temp);
        }
        dir
    })
}

/// The transport decoders (one fuzz target per tag): walks `parse_frame` over a stream the
/// way the relay does and checks each answer.
///
/// - A frame's prefix is exactly what `encode_prefix` writes for it (the encoding is
///   canonical, so decode then encode gives the input bytes back); a quick-ack token is
///   exactly `quick_ack_bytes`.
/// - `0 < body <= MAX_FRAME`, the frame is never longer than `MAX_FRAME` + its prefix, the
///   payload is a multiple of 4 and at most 3 bytes shorter than the body (only padded
///   intermediate drops any).
/// - `Ok(None)` only with fewer than 4 bytes; a shorter prefix of the same bytes never
///   gives a different definite answer.
pub fn check_transport_stream(tag: mtproto_wire::obfs2::Tag, data: &[u8]) {
    use mtproto_wire::obfs2::Tag;
    use mtproto_wire::transport::{
        encode_prefix, parse_frame, quick_ack_bytes, Frame, Side, MAX_FRAME,
    };
    let Some((&sel, buf)) = data.split_first() else {
        return;
    };
    let side = if sel & 1 == 0 {
        Side::FromClient
    } else {
        Side::FromServer
    };
    let mut pos = 0;
    while pos <= buf.len() {
        let rest = &buf[pos..];
        let r = parse_frame(tag, side, rest);
        for k in 0..rest.len().min(4) {
            let rk = parse_frame(tag, side, &rest[..k]);
            assert!(rk == Ok(None) || rk == r, "prefix {k}: {rk:?} vs {r:?}");
        }
        match r {
            Ok(None) => {
                assert!(rest.len() < 4, "Ok(None) with {} bytes", rest.len());
                break;
            }
            Err(e) => {
                let _ = e.to_string();
                break;
            }
            Ok(Some(f)) => {
                match f {
                    Frame::QuickAck(token) => {
                        assert_eq!(side, Side::FromServer);
                        assert_eq!(quick_ack_bytes(tag, token), rest[..4]);
                    }
                    Frame::Packet {
                        prefix,
                        body,
                        payload,
                        quick_ack,
                    } => {
                        assert!(prefix == 4 || (prefix == 1 && tag == Tag::Abridged));
                        assert!(body > 0 && body <= MAX_FRAME, "body {body}");
                        assert!(f.total_len() <= MAX_FRAME + prefix);
                        assert!(payload > 0 && payload <= body && body - payload < 4);
                        assert!(payload.is_multiple_of(4));
                        if tag != Tag::Padded {
                            assert_eq!(payload, body);
                        }
                        assert!(!(quick_ack && side == Side::FromServer));
                        let mut out = [0u8; 4];
                        let l = encode_prefix(tag, payload, body - payload, quick_ack, &mut out);
                        assert_eq!(out[..l], rest[..prefix], "{f:?}");
                    }
                }
                pos += f.total_len();
            }
        }
    }
}
