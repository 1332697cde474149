//! What a TLS server sends in answer to a ClientHello, up to where it waits for the client:
//! the ServerHello, the ChangeCipherSpec, and the encrypted rest of its first flight
//! (EncryptedExtensions, Certificate, CertificateVerify, Finished) in however many
//! application-data records it chose. OpenSSL sends four records, rustls and others one.
//!
//! [`parse_flight`] reads the bytes a probe collected; [`Flight::total`] is the size the
//! proxy's single fake record should have to put the same number of bytes on the wire.
//! A flight that cannot be mirrored is an [`Unmirrorable`] saying why.
//!
//! Not here: reading from the network (how long to wait for "the end" is the caller's
//! choice) and turning many flights into a profile ([`super::profile`]).

use std::fmt;

/// The ServerHello random that marks a HelloRetryRequest (RFC 8446 §4.1.3).
pub const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// The ServerHello fields the proxy mirrors or checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHelloInfo {
    /// The chosen cipher suite.
    pub cipher: u16,
    /// Extension types in the order sent.
    pub extensions: Vec<u16>,
    /// The key_share entry: group and key bytes.
    pub key_share: Option<(u16, Vec<u8>)>,
    /// The echoed session id.
    pub session_id: Vec<u8>,
}

/// Why a server's answer cannot be imitated by the proxy's one-round-trip TLS 1.3 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unmirrorable {
    /// The first bytes were not a handshake record (an HTTP server, say).
    NotTls,
    /// The server answered with an alert (level, description).
    Alert(u8, u8),
    /// A HelloRetryRequest: the server wants another key-share group first.
    HelloRetryRequest,
    /// A TLS 1.2 (or older) ServerHello: no supported_versions extension.
    Tls12,
    /// No ChangeCipherSpec after the ServerHello (the proxy must send one: clients
    /// require it).
    NoChangeCipherSpec,
    /// ServerHello extensions other than exactly key_share and supported_versions.
    Extensions(Vec<u16>),
    /// A key share of another group than x25519 (or none).
    KeyShareGroup(u16),
    /// Something else was off (truncated, inconsistent lengths, no encrypted records).
    Malformed(&'static str),
}

impl fmt::Display for Unmirrorable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmirrorable::NotTls => f.write_str("the answer is not TLS"),
            Unmirrorable::Alert(l, d) => write!(f, "the site sent a TLS alert (level {l}, description {d})"),
            Unmirrorable::HelloRetryRequest => f.write_str(
                "the site answers with a HelloRetryRequest (it wants another key-share group than x25519)",
            ),
            Unmirrorable::Tls12 => f.write_str("the site speaks TLS 1.2 only"),
            Unmirrorable::NoChangeCipherSpec => {
                f.write_str("the site sends no ChangeCipherSpec after its ServerHello")
            }
            Unmirrorable::Extensions(e) => {
                write!(f, "the site's ServerHello has the extensions {e:04x?}")
            }
            Unmirrorable::KeyShareGroup(g) => {
                write!(f, "the site's key share is of group {g:#06x}, not x25519")
            }
            Unmirrorable::Malformed(what) => write!(f, "malformed answer: {what}"),
        }
    }
}

impl Unmirrorable {
    /// A short lower-case label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Unmirrorable::NotTls => "not_tls",
            Unmirrorable::Alert(..) => "alert",
            Unmirrorable::HelloRetryRequest => "hello_retry_request",
            Unmirrorable::Tls12 => "tls12_only",
            Unmirrorable::NoChangeCipherSpec => "no_change_cipher_spec",
            Unmirrorable::Extensions(_) => "extensions",
            Unmirrorable::KeyShareGroup(_) => "key_share_group",
            Unmirrorable::Malformed(_) => "malformed",
        }
    }
}

/// One server's answer to one hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flight {
    /// The ServerHello.
    pub hello: ServerHelloInfo,
    /// Lengths of the application-data records after the ChangeCipherSpec.
    pub records: Vec<usize>,
}

impl Flight {
    /// The length one application-data record needs to carry the same number of bytes on
    /// the wire as all of them: their lengths plus the headers of all but one.
    pub fn total(&self) -> usize {
        self.records.iter().sum::<usize>() + 5 * self.records.len().saturating_sub(1)
    }
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

/// Parses a ServerHello handshake message (type byte first).
pub fn parse_server_hello(m: &[u8]) -> Result<ServerHelloInfo, Unmirrorable> {
    let bad = Unmirrorable::Malformed;
    if m.len() < 40 || m[0] != 0x02 {
        return Err(bad("not a ServerHello"));
    }
    if u32::from_be_bytes([0, m[1], m[2], m[3]]) as usize + 4 != m.len() {
        return Err(bad("ServerHello length"));
    }
    if m[6..38] == HRR_RANDOM {
        return Err(Unmirrorable::HelloRetryRequest);
    }
    let sid_len = usize::from(m[38]);
    let session_id = m.get(39..39 + sid_len).ok_or(bad("session id"))?.to_vec();
    let at = 39 + sid_len;
    let cipher = be16(m, at).ok_or(bad("cipher"))? as u16;
    let Some(ext_len) = be16(m, at + 3) else {
        return Err(Unmirrorable::Tls12);
    };
    let mut at = at + 5;
    if at + ext_len != m.len() {
        return Err(bad("ServerHello extensions length"));
    }
    let mut extensions = Vec::new();
    let mut key_share = None;
    let mut tls13 = false;
    while at < m.len() {
        let ty = be16(m, at).ok_or(bad("extension"))? as u16;
        let len = be16(m, at + 2).ok_or(bad("extension"))?;
        let body = m.get(at + 4..at + 4 + len).ok_or(bad("extension body"))?;
        match ty {
            0x002b => tls13 = body == [0x03, 0x04],
            0x0033 if len >= 4 => {
                let group = be16(body, 0).unwrap_or(0) as u16;
                key_share = Some((group, body[4..].to_vec()));
            }
            _ => {}
        }
        extensions.push(ty);
        at += 4 + len;
    }
    if !tls13 {
        return Err(Unmirrorable::Tls12);
    }
    Ok(ServerHelloInfo {
        cipher,
        extensions,
        key_share,
        session_id,
    })
}

/// Parses everything a server sent after a ClientHello, up to where it stopped: one
/// handshake record holding just the ServerHello, `14 03 03 00 01 01`, then one or more
/// application-data records, the last complete. Also checks that the answer is one the
/// proxy can imitate (TLS 1.3, x25519, exactly key_share and supported_versions).
pub fn parse_flight(b: &[u8]) -> Result<Flight, Unmirrorable> {
    let bad = Unmirrorable::Malformed;
    if b.len() < 5 {
        return Err(bad("fewer than 5 bytes"));
    }
    match b[0] {
        0x16 => {}
        0x15 if b.len() >= 7 => return Err(Unmirrorable::Alert(b[5], b[6])),
        0x15 => return Err(bad("truncated alert")),
        _ => return Err(Unmirrorable::NotTls),
    }
    let sh_len = be16(b, 3).ok_or(bad("record header"))?;
    let sh = b.get(5..5 + sh_len).ok_or(bad("truncated ServerHello"))?;
    let hello = parse_server_hello(sh)?;
    let mut at = 5 + sh_len;
    let ccs = &super::CHANGE_CIPHER_SPEC[..];
    if b.len() < at + 6 && ccs.starts_with(&b[at..]) {
        return Err(bad("truncated ChangeCipherSpec"));
    }
    if b.get(at..at + 6) != Some(ccs) {
        return Err(match b.get(at) {
            Some(0x16) => Unmirrorable::Tls12,
            _ => Unmirrorable::NoChangeCipherSpec,
        });
    }
    at += 6;
    let mut records = Vec::new();
    while at < b.len() {
        if b.get(at..at + 3) != Some(&super::APP_DATA_PREFIX[..]) {
            return Err(bad(
                "a record other than application data after the ChangeCipherSpec",
            ));
        }
        let len = be16(b, at + 3).ok_or(bad("truncated record header"))?;
        if at + 5 + len > b.len() {
            return Err(bad("the flight ends inside a record"));
        }
        records.push(len);
        at += 5 + len;
    }
    if records.is_empty() {
        return Err(bad("no encrypted records after the ChangeCipherSpec"));
    }
    let mut exts = hello.extensions.clone();
    exts.sort_unstable();
    if exts != [0x002b, 0x0033] {
        return Err(Unmirrorable::Extensions(hello.extensions));
    }
    match &hello.key_share {
        Some((0x001d, k)) if k.len() == 32 => {}
        Some((g, _)) => return Err(Unmirrorable::KeyShareGroup(*g)),
        None => return Err(Unmirrorable::KeyShareGroup(0)),
    }
    Ok(Flight { hello, records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testutil::*;
    use crate::tls::{build_server_hello, ExtensionOrder};

    fn ours(order: ExtensionOrder, e: usize) -> Vec<u8> {
        let hello = hello_86();
        build_server_hello(
            &s(),
            &arr(&hello[11..43]),
            &arr(&hello[44..76]),
            0x1302,
            &[5; 32],
            &vec![0; e],
            order,
        )
    }

    fn record(ty: u8, len: usize) -> Vec<u8> {
        let mut r = vec![ty, 3, 3];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.resize(5 + len, 0xee);
        r
    }

    #[test]
    fn our_reply_is_a_one_record_flight() {
        for order in [
            ExtensionOrder::KeyShareFirst,
            ExtensionOrder::SupportedVersionsFirst,
        ] {
            let f = parse_flight(&ours(order, 3000)).unwrap();
            assert_eq!(f.records, [3000]);
            assert_eq!(f.total(), 3000);
            assert_eq!(f.hello.cipher, 0x1302);
            assert_eq!(f.hello.key_share, Some((0x001d, vec![5; 32])));
            assert_eq!(f.hello.session_id, hello_86()[44..76]);
            let first = if order.is_reversed() { 0x002b } else { 0x0033 };
            assert_eq!(f.hello.extensions[0], first);
        }
    }

    #[test]
    fn openssl_four_records_total() {
        // OpenSSL's 23 + 811 + 281 + 53: one record of 1183 puts as many bytes on the wire.
        let mut b = ours(ExtensionOrder::SupportedVersionsFirst, 1)[..133].to_vec();
        for n in [23, 811, 281, 53] {
            b.extend(record(0x17, n));
        }
        let f = parse_flight(&b).unwrap();
        assert_eq!(f.records, [23, 811, 281, 53]);
        assert_eq!(f.total(), 23 + 811 + 281 + 53 + 15);
        // Cut inside the last record: the flight is not over.
        assert_eq!(
            parse_flight(&b[..b.len() - 1]),
            Err(Unmirrorable::Malformed("the flight ends inside a record"))
        );
    }

    #[test]
    fn unmirrorable_answers() {
        let good = ours(ExtensionOrder::KeyShareFirst, 100);
        let mut hrr = good.clone();
        hrr[11..43].copy_from_slice(&HRR_RANDOM);
        assert_eq!(parse_flight(&hrr), Err(Unmirrorable::HelloRetryRequest));
        // supported_versions saying 1.2.
        let mut v12 = good.clone();
        v12[126] = 0x03;
        assert_eq!(parse_flight(&v12), Err(Unmirrorable::Tls12));
        let mut p256 = good.clone();
        p256[86] = 0x17;
        assert_eq!(
            parse_flight(&p256),
            Err(Unmirrorable::KeyShareGroup(0x0017))
        );
        let mut no_ccs = good.clone();
        no_ccs.drain(127..133);
        assert_eq!(parse_flight(&no_ccs), Err(Unmirrorable::NoChangeCipherSpec));
        assert_eq!(
            parse_flight(&[0x15, 3, 3, 0, 2, 2, 40]),
            Err(Unmirrorable::Alert(2, 40))
        );
        assert_eq!(parse_flight(b"HTTP/1.1 400"), Err(Unmirrorable::NotTls));
        // Cut anywhere: not finished yet, never a wrong verdict.
        for n in 5..good.len() {
            assert!(
                matches!(parse_flight(&good[..n]), Err(Unmirrorable::Malformed(_))),
                "{n}"
            );
        }
        // A TLS 1.2 ServerHello: no extensions at all, then a Certificate record.
        let mut t12 = vec![0x16, 3, 3, 0, 42, 2, 0, 0, 38, 3, 3];
        t12.extend_from_slice(&[1; 32]);
        t12.extend_from_slice(&[0, 0xc0, 0x2f, 0]);
        assert_eq!(parse_flight(&t12), Err(Unmirrorable::Tls12));
    }

    #[test]
    fn garbage_never_panics() {
        let good = ours(ExtensionOrder::KeyShareFirst, 40);
        for n in 0..good.len() {
            let _ = parse_flight(&good[..n]);
            let mut g = good.clone();
            g[n] ^= 0x5a;
            let _ = parse_flight(&g);
        }
    }
}
