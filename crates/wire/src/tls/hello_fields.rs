//! The fields of a ClientHello a fingerprint or a mirror needs: the cipher suites and the
//! extensions in the order sent, with the contents of the few extensions read (SNI, ALPN,
//! supported_versions, signature_algorithms, key_share).
//!
//! A strict parse of the standard layout (any session-id length, every length checked
//! against its container), unlike the C-compatible SNI walk of [`super::hello`], which
//! decides what is accepted. Used after a hello was accepted (to pick the cipher the real
//! site would choose, and for the JA4 counters) and by tests and probes.
//!
//! Not here: any check of the HMAC, the timestamp or the SNI policy ([`super::hello`]).

use std::ops::Range;

/// Whether a 16-bit value is a GREASE value (`0x?A?A`, RFC 8701).
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// Extension types read here.
pub mod ext {
    /// server_name (SNI).
    pub const SERVER_NAME: u16 = 0x0000;
    /// signature_algorithms.
    pub const SIGNATURE_ALGORITHMS: u16 = 0x000d;
    /// application_layer_protocol_negotiation (ALPN).
    pub const ALPN: u16 = 0x0010;
    /// supported_versions.
    pub const SUPPORTED_VERSIONS: u16 = 0x002b;
    /// key_share.
    pub const KEY_SHARE: u16 = 0x0033;
}

/// A parsed ClientHello. Offsets are into the bytes given to [`HelloFields::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloFields {
    /// `legacy_version` (`0x0303` for TLS 1.2 and 1.3 hellos).
    pub legacy_version: u16,
    /// Cipher suites in the client's order, GREASE included.
    pub ciphers: Vec<u16>,
    /// Offset of the first cipher suite.
    pub ciphers_at: usize,
    /// Extensions in the client's order, GREASE included: type and body range.
    pub extensions: Vec<(u16, Range<usize>)>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// A list of 16-bit values behind a `len_bytes`-byte length prefix filling `body` exactly.
fn u16_list(body: &[u8], len_bytes: usize) -> Option<Vec<u16>> {
    let n = match len_bytes {
        1 => usize::from(*body.first()?),
        _ => usize::from(be16(body, 0)?),
    };
    let list = body.get(len_bytes..)?;
    if list.len() != n || n % 2 != 0 {
        return None;
    }
    Some(
        list.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect(),
    )
}

impl HelloFields {
    /// Parses a hello record (`16 03 0x LL LL`, then the handshake message). `None` if any
    /// length disagrees with its container, or if the record holds more than the hello.
    pub fn parse(rec: &[u8]) -> Option<HelloFields> {
        if rec.len() < 9 || rec[0] != 0x16 || rec[5] != 0x01 {
            return None;
        }
        if usize::from(be16(rec, 3)?) + 5 != rec.len() {
            return None;
        }
        let hs_len = u32::from_be_bytes([0, rec[6], rec[7], rec[8]]) as usize;
        if hs_len + 9 != rec.len() {
            return None;
        }
        let legacy_version = be16(rec, 9)?;
        let sid_len = usize::from(*rec.get(43)?);
        let mut at = 44 + sid_len;
        let cs_len = usize::from(be16(rec, at)?);
        let ciphers_at = at + 2;
        let ciphers = u16_list(rec.get(at..ciphers_at + cs_len)?, 2)?;
        at = ciphers_at + cs_len;
        let comp_len = usize::from(*rec.get(at)?);
        at += 1 + comp_len;
        let mut extensions = Vec::new();
        if at < rec.len() {
            let ext_len = usize::from(be16(rec, at)?);
            at += 2;
            if at + ext_len != rec.len() {
                return None;
            }
            while at < rec.len() {
                let ty = be16(rec, at)?;
                let len = usize::from(be16(rec, at + 2)?);
                let body = at + 4..at + 4 + len;
                if body.end > rec.len() {
                    return None;
                }
                at = body.end;
                extensions.push((ty, body));
            }
        } else if at > rec.len() {
            return None;
        }
        Some(HelloFields {
            legacy_version,
            ciphers,
            ciphers_at,
            extensions,
        })
    }

    /// The body of the first extension of type `ty`.
    pub fn extension<'a>(&self, rec: &'a [u8], ty: u16) -> Option<&'a [u8]> {
        let (_, r) = self.extensions.iter().find(|(t, _)| *t == ty)?;
        rec.get(r.clone())
    }

    /// The TLS 1.3 suites offered (`0x13XX`), in the client's order.
    pub fn tls13_suites(&self) -> Vec<u16> {
        self.ciphers
            .iter()
            .copied()
            .filter(|c| c >> 8 == 0x13)
            .collect()
    }

    /// The supported_versions list, if the extension is there and well formed.
    pub fn supported_versions(&self, rec: &[u8]) -> Option<Vec<u16>> {
        u16_list(self.extension(rec, ext::SUPPORTED_VERSIONS)?, 1)
    }

    /// The signature_algorithms list, if the extension is there and well formed.
    pub fn signature_algorithms(&self, rec: &[u8]) -> Option<Vec<u16>> {
        u16_list(self.extension(rec, ext::SIGNATURE_ALGORITHMS)?, 2)
    }

    /// The first ALPN protocol name (possibly empty), if the extension is there and its
    /// first entry is well formed.
    pub fn first_alpn<'a>(&self, rec: &'a [u8]) -> Option<&'a [u8]> {
        let body = self.extension(rec, ext::ALPN)?;
        let n = usize::from(*body.get(2)?);
        body.get(3..3 + n)
    }

    /// Where the 32-byte x25519 share is inside the key_share extension, if offered.
    pub fn x25519_share(&self, rec: &[u8]) -> Option<Range<usize>> {
        let (_, r) = self.extensions.iter().find(|(t, _)| *t == ext::KEY_SHARE)?;
        let body = rec.get(r.clone())?;
        let mut at = 2;
        while at + 4 <= body.len() {
            let group = be16(body, at)?;
            let len = usize::from(be16(body, at + 2)?);
            if group == 0x001d && len == 32 && at + 4 + 32 <= body.len() {
                return Some(r.start + at + 4..r.start + at + 36);
            }
            at += 4 + len;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::client::build_client_hello;
    use crate::tls::testutil::*;

    #[test]
    fn parses_the_spec_hello() {
        let h = hello_86();
        let f = HelloFields::parse(&h).unwrap();
        assert_eq!(f.legacy_version, 0x0303);
        assert_eq!(f.ciphers.len(), 16);
        assert!(is_grease(f.ciphers[0]));
        assert_eq!(f.tls13_suites(), [0x1301, 0x1302, 0x1303]);
        assert_eq!(f.ciphers_at, 78);
        let types: Vec<u16> = f.extensions.iter().map(|e| e.0).collect();
        assert!(is_grease(types[0]) && is_grease(types[types.len() - 2]));
        assert_eq!(types[1], ext::SERVER_NAME);
        assert_eq!(*types.last().unwrap(), 0x0015);
        assert_eq!(f.first_alpn(&h), Some(&b"h2"[..]));
        let v = f.supported_versions(&h).unwrap();
        assert!(is_grease(v[0]));
        assert_eq!(v[1..], [0x0304, 0x0303]);
        assert_eq!(f.signature_algorithms(&h).unwrap()[0], 0x0403);
        let share = f.x25519_share(&h).unwrap();
        assert_eq!(
            hex::encode(&h[share]),
            "982785400f6aa0e9f2257cb902b1fb5d1f471ddbb8e79bd8c7251674c5b7e53d"
        );
    }

    #[test]
    fn post_quantum_hellos_parse_too() {
        let h = build_client_hello(&s(), Some(DOMAIN), NOW, &mut stream("pq"), 1823);
        let f = HelloFields::parse(&h).unwrap();
        assert!(f.x25519_share(&h).is_some());
        assert_eq!(f.extensions.last().unwrap().1.end, h.len());
    }

    #[test]
    fn every_truncation_and_length_error_is_refused() {
        let h = hello_86();
        for n in 0..h.len() {
            assert_eq!(HelloFields::parse(&h[..n]), None, "{n} bytes");
        }
        let mut longer = h.clone();
        longer.push(0);
        assert_eq!(HelloFields::parse(&longer), None);
        let mut bad_ext = h.clone();
        bad_ext[h.len() - 200] ^= 0xff; // inside the padding body: still fine
        assert!(HelloFields::parse(&bad_ext).is_some());
        let mut bad_cs = h;
        bad_cs[77] = 0x21; // cipher-suites length 0x21: odd
        assert_eq!(HelloFields::parse(&bad_cs), None);
    }

    #[test]
    fn grease_values() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && is_grease(0x3a3a));
        assert!(!is_grease(0x0a1a) && !is_grease(0x1301) && !is_grease(0x0a0b));
    }
}
