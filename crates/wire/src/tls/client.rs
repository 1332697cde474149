//! The client's side of fake TLS (spec client.md §5.4, §5.8, §5.12), for tests and test
//! clients: building a ClientHello shaped like TDLib's with the HMAC random, and checking
//! the proxy's reply the way TDLib (`TlsInit::wait_hello_response`) does.
//!
//! The hello follows `vectors_client.py`'s `build_client_hello` (TDLib's non-Apple
//! template, extensions in the template's listed order, no permutation): at 517 bytes and
//! with the same random bytes it reproduces spec §8.6 byte for byte. Bigger hellos carry,
//! when there is room, an X25519MLKEM768 key share (group `0x11ec`, 1216 bytes) like
//! Telegram Desktop's, and are padded to the exact length asked for; a hello without SNI
//! is what Telegram-iOS sends.
//!
//! Not here: a real X25519 or ML-KEM key (the shares are random bytes; the proxy never
//! looks at them), ECH, the extension permutation, and anything after the reply
//! (see [`super::record`]).

use super::hello::hello_hmac;
use super::{CHANGE_CIPHER_SPEC, RANDOM_OFFSET};
use subtle::ConstantTimeEq;

/// The length TDLib's hellos always have.
pub const TDLIB_HELLO_LEN: usize = 517;

/// Length of an X25519MLKEM768 key share (ML-KEM-768 encapsulation key + X25519 key).
pub const MLKEM768_X25519_SHARE: usize = 1216;

/// Builds a ClientHello of exactly `target_len` bytes (record header included).
///
/// `random` is asked, in this order, for 7 GREASE seed bytes, the 32-byte session id, the
/// 32-byte X25519 key share (its top bit is then cleared) and, for a post-quantum hello,
/// the 1216-byte X25519MLKEM768 share. The post-quantum share (and group `0x11ec` in
/// supported_groups) is added when it fits in `target_len`; the rest is padding extension.
/// `unix_time` is truncated to 32 bits as TDLib does.
///
/// # Panics
/// If `target_len` is too small for the extensions (317 bytes with a 15-byte domain, 293
/// without SNI; 1539 for a post-quantum one) or above 65 540.
pub fn build_client_hello(
    secret: &[u8; 16],
    domain: Option<&str>,
    unix_time: i64,
    random: &mut impl FnMut(&mut [u8]),
    target_len: usize,
) -> Vec<u8> {
    let mut seed = [0u8; 7];
    random(&mut seed);
    let g = grease(seed);
    let mut session_id = [0u8; 32];
    random(&mut session_id);
    let mut x25519 = [0u8; 32];
    random(&mut x25519);
    x25519[31] &= 0x7f;

    let base = |pq: Option<&[u8]>| extensions(&g, domain, &x25519, pq);
    let head_len = 11 + 32 + 1 + 32 + 2 + 32 + 2 + 2;
    let fits = |exts: &[u8]| head_len + exts.len() + 4 <= target_len;
    let pq_len = head_len + base(Some(&[0; MLKEM768_X25519_SHARE])).len() + 4;
    let mut exts = if target_len >= pq_len {
        let mut share = vec![0u8; MLKEM768_X25519_SHARE];
        random(&mut share);
        base(Some(&share))
    } else {
        base(None)
    };
    assert!(fits(&exts), "hello of {target_len} bytes too short");
    assert!(
        target_len <= 0xffff + 5,
        "hello of {target_len} bytes too long"
    );
    let pad = target_len - head_len - exts.len() - 4;
    ext(&mut exts, &[0x00, 0x15], &vec![0u8; pad]);

    let mut h = Vec::with_capacity(target_len);
    h.extend_from_slice(&[0x16, 0x03, 0x01]);
    h.extend_from_slice(&((target_len - 5) as u16).to_be_bytes());
    h.push(0x01);
    h.extend_from_slice(&((target_len - 9) as u32).to_be_bytes()[1..]);
    h.extend_from_slice(&[0x03, 0x03]);
    h.extend_from_slice(&[0u8; 32]);
    h.push(0x20);
    h.extend_from_slice(&session_id);
    h.extend_from_slice(&[0x00, 0x20, g[0], g[0]]);
    h.extend_from_slice(&[
        0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x2c, 0xc0, 0x30, 0xcc,
        0xa9, 0xcc, 0xa8, 0xc0, 0x13, 0xc0, 0x14, 0x00, 0x9c, 0x00, 0x9d, 0x00, 0x2f, 0x00, 0x35,
    ]);
    h.extend_from_slice(&[0x01, 0x00]);
    h.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    h.extend_from_slice(&exts);
    debug_assert_eq!(h.len(), target_len);
    sign(&mut h, secret, unix_time);
    h
}

/// Writes the random of a hello whose random bytes are zero: the HMAC of the hello with
/// the time XORed into its last 4 bytes (spec §5.4).
fn sign(h: &mut [u8], secret: &[u8; 16], unix_time: i64) {
    let mut rnd = hello_hmac(secret, h);
    for (r, t) in rnd[28..].iter_mut().zip((unix_time as u32).to_le_bytes()) {
        *r ^= t;
    }
    h[RANDOM_OFFSET..RANDOM_OFFSET + 32].copy_from_slice(&rnd);
}

/// Rewrites the TLS 1.3 suites of a hello from [`build_client_hello`] to `order` (a
/// permutation of `1301 1302 1303`) and signs it again with `secret` at `unix_time`, so a
/// test can offer another preference than TDLib's.
///
/// # Panics
/// If `hello` is not such a hello.
pub fn reorder_tls13_suites(hello: &mut [u8], order: [u16; 3], secret: &[u8; 16], unix_time: i64) {
    let f = super::HelloFields::parse(hello).expect("a hello from build_client_hello");
    let first = f
        .ciphers
        .iter()
        .position(|c| c >> 8 == 0x13)
        .expect("TLS 1.3 suites");
    let at = f.ciphers_at + 2 * first;
    for (k, c) in order.iter().enumerate() {
        hello[at + 2 * k..at + 2 * k + 2].copy_from_slice(&c.to_be_bytes());
    }
    hello[RANDOM_OFFSET..RANDOM_OFFSET + 32].fill(0);
    sign(hello, secret, unix_time);
}

/// TDLib's `Grease::init`: `(b & 0xF0) | 0x0A`, each odd one made to differ from the one
/// before it.
fn grease(seed: [u8; 7]) -> [u8; 7] {
    let mut g = seed.map(|b| (b & 0xf0) | 0x0a);
    for i in (1..7).step_by(2) {
        if g[i] == g[i - 1] {
            g[i] ^= 0x10;
        }
    }
    g
}

fn ext(out: &mut Vec<u8>, ty: &[u8; 2], body: &[u8]) {
    out.extend_from_slice(ty);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// All extensions but the padding, in the generator's order.
fn extensions(g: &[u8; 7], domain: Option<&str>, x25519: &[u8; 32], pq: Option<&[u8]>) -> Vec<u8> {
    let gr = |i: usize| [g[i], g[i]];
    let mut e = Vec::with_capacity(400 + pq.map_or(0, |p| p.len() + 8));
    ext(&mut e, &gr(2), &[]);
    if let Some(d) = domain {
        let d = d.as_bytes();
        let mut list = vec![0x00];
        list.extend_from_slice(&(d.len() as u16).to_be_bytes());
        list.extend_from_slice(d);
        let mut body = (list.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&list);
        ext(&mut e, &[0x00, 0x00], &body);
    }
    ext(&mut e, &[0x00, 0x05], &[0x01, 0x00, 0x00, 0x00, 0x00]);
    let mut groups = gr(4).to_vec();
    if pq.is_some() {
        groups.extend_from_slice(&[0x11, 0xec]);
    }
    groups.extend_from_slice(&[0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    let mut body = (groups.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&groups);
    ext(&mut e, &[0x00, 0x0a], &body);
    ext(&mut e, &[0x00, 0x0b], &[0x01, 0x00]);
    ext(
        &mut e,
        &[0x00, 0x0d],
        &[
            0x00, 0x10, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03, 0x08, 0x05, 0x05, 0x01,
            0x08, 0x06, 0x06, 0x01,
        ],
    );
    ext(&mut e, &[0x00, 0x10], b"\x00\x0c\x02h2\x08http/1.1");
    ext(&mut e, &[0x00, 0x12], &[]);
    ext(&mut e, &[0x00, 0x17], &[]);
    ext(&mut e, &[0x00, 0x1b], &[0x02, 0x00, 0x02]);
    ext(&mut e, &[0x00, 0x23], &[]);
    let g6 = gr(6);
    ext(
        &mut e,
        &[0x00, 0x2b],
        &[0x06, g6[0], g6[1], 0x03, 0x04, 0x03, 0x03],
    );
    ext(&mut e, &[0x00, 0x2d], &[0x01, 0x01]);
    let mut shares = gr(4).to_vec();
    shares.extend_from_slice(&[0x00, 0x01, 0x00]);
    if let Some(p) = pq {
        shares.extend_from_slice(&[0x11, 0xec]);
        shares.extend_from_slice(&(p.len() as u16).to_be_bytes());
        shares.extend_from_slice(p);
    }
    shares.extend_from_slice(&[0x00, 0x1d, 0x00, 0x20]);
    shares.extend_from_slice(x25519);
    let mut body = (shares.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&shares);
    ext(&mut e, &[0x00, 0x33], &body);
    ext(&mut e, &[0x44, 0x69], &[0x00, 0x03, 0x02, b'h', b'2']);
    ext(&mut e, &[0xff, 0x01], &[0x00]);
    ext(&mut e, &gr(3), &[0x00]);
    e
}

/// Why a reply is not (yet) a valid proxy reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerHelloError {
    /// A prefix of a possibly valid reply: read more.
    Incomplete,
    /// Not the three records `16 03 03 …`, `14 03 03 00 01 01`, `17 03 03 …`.
    Malformed,
    /// The server random is not the HMAC of this secret: not our proxy (or a real site).
    BadHmac,
}

impl std::fmt::Display for ServerHelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerHelloError::Incomplete => "incomplete ServerHello",
            ServerHelloError::Malformed => "malformed ServerHello",
            ServerHelloError::BadHmac => "ServerHello random does not match the secret",
        })
    }
}

impl std::error::Error for ServerHelloError {}

/// Checks the proxy's reply at the start of `reply` as TDLib does: `16 03 03 len …`, then
/// `14 03 03 00 01 01 17 03 03 len …`, and the server random (bytes 11..43) equal to
/// `HMAC-SHA256(secret, client_random ‖ those three records with the random zeroed)`.
/// Returns how many bytes the three records take; bytes after them are left alone.
pub fn verify_server_hello(
    secret: &[u8; 16],
    client_random: &[u8; 32],
    reply: &[u8],
) -> Result<usize, ServerHelloError> {
    expect(reply, 0, &[0x16, 0x03, 0x03])?;
    if reply.len() < 5 {
        return Err(ServerHelloError::Incomplete);
    }
    let first = 5 + usize::from(u16::from_be_bytes([reply[3], reply[4]]));
    if first < RANDOM_OFFSET + 32 {
        return Err(ServerHelloError::Malformed);
    }
    let mut tail = [0u8; 9];
    tail[..6].copy_from_slice(&CHANGE_CIPHER_SPEC);
    tail[6..].copy_from_slice(&[0x17, 0x03, 0x03]);
    expect(reply, first, &tail)?;
    if reply.len() < first + 11 {
        return Err(ServerHelloError::Incomplete);
    }
    let end = first + 11 + usize::from(u16::from_be_bytes([reply[first + 9], reply[first + 10]]));
    if reply.len() < end {
        return Err(ServerHelloError::Incomplete);
    }
    let r = &reply[..end];
    let want = super::hmac_sha256(
        secret,
        &[
            client_random,
            &r[..RANDOM_OFFSET],
            &[0u8; 32],
            &r[RANDOM_OFFSET + 32..],
        ],
    );
    if bool::from(want.ct_eq(&r[RANDOM_OFFSET..RANDOM_OFFSET + 32])) {
        Ok(end)
    } else {
        Err(ServerHelloError::BadHmac)
    }
}

/// `Malformed` if the bytes present at `pos` differ from `pat`, `Incomplete` if some are
/// missing.
fn expect(b: &[u8], pos: usize, pat: &[u8]) -> Result<(), ServerHelloError> {
    let have = b.get(pos..).unwrap_or(&[]);
    let n = have.len().min(pat.len());
    if have[..n] != pat[..n] {
        return Err(ServerHelloError::Malformed);
    }
    if n < pat.len() {
        return Err(ServerHelloError::Incomplete);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::hello::{check_client_hello, sni_of, HelloVerdict, Sni, SniPolicy};
    use crate::tls::replay::ReplayCache;
    use crate::tls::server_hello::{build_server_hello, ExtensionOrder};
    use crate::tls::testutil::*;
    use proptest::prelude::*;

    fn vector_random() -> impl FnMut(&mut [u8]) {
        let mut bytes = drbg("vec/hello/grease", 7);
        bytes.extend(drbg("vec/hello/session_id", 32));
        bytes.extend(drbg("vec/hello/x25519", 32));
        feeder(bytes)
    }

    #[test]
    fn reordered_hellos_still_authenticate() {
        let mut h = build_client_hello(&s(), Some(DOMAIN), NOW, &mut stream("r"), 517);
        reorder_tls13_suites(&mut h, [0x1303, 0x1301, 0x1302], &s(), NOW);
        let f = super::super::HelloFields::parse(&h).unwrap();
        assert_eq!(f.tls13_suites(), [0x1303, 0x1301, 0x1302]);
        let mut cache = crate::tls::ReplayCache::new(16);
        let v = crate::tls::check_client_hello(
            &h,
            0,
            &[s()],
            &[DOMAIN.to_string()],
            NOW,
            &mut cache,
            crate::tls::SniPolicy::RequireKnown,
            false,
        );
        assert!(
            matches!(v, crate::tls::HelloVerdict::Accept { cipher: 0x1303, .. }),
            "{v:?}"
        );
    }

    #[test]
    fn reproduces_vector_8_6() {
        let hello = build_client_hello(&s(), Some(DOMAIN), NOW, &mut vector_random(), 517);
        assert_eq!(hex::encode(&hello), hex::encode(hello_86()));
        assert_eq!(
            hex::encode(grease(arr(&drbg("vec/hello/grease", 7)))),
            "5a3a1a4a9ada8a"
        );
    }

    #[test]
    fn larger_hellos() {
        // 1024: padding only. 1823: with the post-quantum share.
        let h1 = build_client_hello(&s(), Some(DOMAIN), NOW, &mut stream("x"), 1024);
        assert_eq!(h1.len(), 1024);
        assert_eq!(find_group(&h1), None);
        let h2 = build_client_hello(&s(), Some(DOMAIN), NOW, &mut stream("x"), 1823);
        assert_eq!(h2.len(), 1823);
        assert_eq!(find_group(&h2), Some(MLKEM768_X25519_SHARE));
        for h in [&h1, &h2] {
            assert_eq!(sni_of(h), Sni::Name(DOMAIN.as_bytes()));
            assert_eq!(h[..3], [0x16, 3, 1]);
            assert_eq!(usize::from(u16::from_be_bytes([h[3], h[4]])) + 5, h.len());
            // Handshake length and extensions length are consistent.
            assert_eq!(
                u32::from_be_bytes([0, h[6], h[7], h[8]]) as usize + 9,
                h.len()
            );
            assert_eq!(
                usize::from(u16::from_be_bytes([h[112], h[113]])) + 114,
                h.len()
            );
        }
        // The smallest post-quantum hello.
        let short = build_client_hello(&s(), Some(DOMAIN), NOW, &mut stream("x"), 1538);
        assert_eq!(find_group(&short), None);
        // The smallest hellos the builder makes (below 517 they fail `detect`).
        assert_eq!(
            build_client_hello(&s(), Some(DOMAIN), NOW, &mut stream("x"), 317).len(),
            317
        );
        assert_eq!(
            sni_of(&build_client_hello(&s(), None, NOW, &mut stream("x"), 293)),
            Sni::Missing
        );
        let pq = build_client_hello(&s(), Some(DOMAIN), NOW, &mut stream("x"), 1539);
        assert_eq!(find_group(&pq), Some(MLKEM768_X25519_SHARE));
    }

    /// Length of the `11ec` key share, if the hello has one.
    fn find_group(h: &[u8]) -> Option<usize> {
        let mut pos = 114;
        while pos + 4 <= h.len() {
            let ty = u16::from_be_bytes([h[pos], h[pos + 1]]);
            let len = usize::from(u16::from_be_bytes([h[pos + 2], h[pos + 3]]));
            if ty == 0x33 {
                let mut p = pos + 6;
                while p < pos + 4 + len {
                    let g = u16::from_be_bytes([h[p], h[p + 1]]);
                    let l = usize::from(u16::from_be_bytes([h[p + 2], h[p + 3]]));
                    if g == 0x11ec {
                        return Some(l);
                    }
                    p += 4 + l;
                }
                return None;
            }
            pos += 4 + len;
        }
        None
    }

    #[test]
    #[should_panic(expected = "too short")]
    fn too_short_target_panics() {
        build_client_hello(&s(), Some(DOMAIN), NOW, &mut stream("x"), 300);
    }

    #[test]
    fn handshake_round_trip() {
        let domains = vec![DOMAIN.to_string()];
        for (len, domain) in [(517, Some(DOMAIN)), (1823, Some(DOMAIN)), (517, None)] {
            let hello = build_client_hello(&s(), domain, NOW, &mut stream("rt"), len);
            let v = check_client_hello(
                &hello,
                0,
                &[s2(), s()],
                &domains,
                NOW + 1,
                &mut ReplayCache::default(),
                SniPolicy::AllowMissing,
                false,
            );
            let HelloVerdict::Accept {
                secret_index,
                cipher,
                session_id,
                client_random,
                timestamp,
                ..
            } = v
            else {
                panic!("{v:?}");
            };
            assert_eq!((secret_index, cipher, timestamp), (1, 0x1301, NOW as i32));
            let reply = build_server_hello(
                &s(),
                &client_random,
                &session_id,
                cipher,
                &[5; 32],
                &[6; 2500],
                ExtensionOrder::SupportedVersionsFirst,
            );
            // Followed by more bytes: only the three records are consumed.
            let mut stream_bytes = reply.clone();
            stream_bytes.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
            assert_eq!(
                verify_server_hello(&s(), &client_random, &stream_bytes),
                Ok(reply.len())
            );
            // Every proper prefix is incomplete, never an error.
            for cut in [0, 1, 4, 5, 43, 127, 130, 133, 137, 138, reply.len() - 1] {
                assert_eq!(
                    verify_server_hello(&s(), &client_random, &reply[..cut]),
                    Err(ServerHelloError::Incomplete),
                    "{cut}"
                );
            }
            assert_eq!(
                verify_server_hello(&s2(), &client_random, &reply),
                Err(ServerHelloError::BadHmac)
            );
            let mut other = client_random;
            other[0] ^= 1;
            assert_eq!(
                verify_server_hello(&s(), &other, &reply),
                Err(ServerHelloError::BadHmac)
            );
        }
    }

    #[test]
    fn malformed_replies() {
        let cr = [1u8; 32];
        let good = build_server_hello(
            &s(),
            &cr,
            &[2; 32],
            0x1301,
            &[3; 32],
            &[4; 64],
            ExtensionOrder::KeyShareFirst,
        );
        for (pos, val) in [(0, 0x17), (2, 1), (127, 0x15), (132, 0), (133, 0x16)] {
            let mut r = good.clone();
            r[pos] = val;
            assert_eq!(
                verify_server_hello(&s(), &cr, &r),
                Err(ServerHelloError::Malformed),
                "{pos}"
            );
        }
        // A first record too short to hold the random.
        assert_eq!(
            verify_server_hello(&s(), &cr, &[0x16, 3, 3, 0, 10]),
            Err(ServerHelloError::Malformed)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn verify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), prefix: bool) {
            let mut b = bytes;
            if prefix && b.len() > 5 {
                b[..3].copy_from_slice(&[0x16, 3, 3]);
            }
            let _ = verify_server_hello(&s(), &[0; 32], &b);
        }

        #[test]
        fn any_length_and_time_round_trips(len in 517usize..4097, t in any::<u32>(), sni: bool) {
            let domain = sni.then_some(DOMAIN);
            let h = build_client_hello(&s(), domain, i64::from(t), &mut stream("p"), len);
            prop_assert_eq!(h.len(), len);
            let v = check_client_hello(
                &h, 0, &[s()], &[DOMAIN.to_string()], i64::from(t as i32),
                &mut ReplayCache::default(), SniPolicy::AllowMissing, false,
            );
            let ok = matches!(v, HelloVerdict::Accept { timestamp, .. } if timestamp == t as i32);
            prop_assert!(ok, "{:?}", v);
        }
    }
}
