//! The obfuscated2 handshake: one 64-byte header that carries the AES-CTR keys of both
//! directions, the transport tag and the DC id (spec client.md §3).
//!
//! Two roles:
//! - [`accept`]: the proxy reading a client's header (or a fake DC reading the proxy's).
//! - [`initiate`] / [`initiate_fast`]: building a header, as a client does and as the proxy
//!   does towards a DC in direct mode.
//!
//! Keys: the reader's decrypt key is `SHA256(H[8..40] ‖ S)` with IV `H[40..56]`; the
//! writer's is built the same way from the reversed bytes `H[8..56]`. Without a secret
//! (what Telegram DCs use) the SHA-256 is skipped and the raw bytes are the keys.
//! The header's own decryption consumes keystream bytes 0..63: the stream from client to
//! server continues at byte 64; the other direction starts at byte 0.

use crate::crypto::AesCtr;
use sha2::{Digest, Sha256};

/// Length of the obfuscated2 header.
pub const HEADER_LEN: usize = 64;

/// The transport a client asked for in the header (spec §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tag {
    /// `ef ef ef ef`: abridged, lengths in 4-byte words.
    Abridged,
    /// `ee ee ee ee`: intermediate, LE32 byte lengths.
    Intermediate,
    /// `dd dd dd dd`: padded intermediate, lengths include 0..15 random padding bytes.
    Padded,
}

impl Tag {
    /// All tags, in the order C tests them.
    pub const ALL: [Tag; 3] = [Tag::Abridged, Tag::Intermediate, Tag::Padded];

    /// The four tag bytes as they appear (decrypted) at header offset 56.
    pub const fn bytes(self) -> [u8; 4] {
        match self {
            Tag::Abridged => [0xef; 4],
            Tag::Intermediate => [0xee; 4],
            Tag::Padded => [0xdd; 4],
        }
    }

    /// Parses decrypted header bytes 56..60.
    pub fn from_bytes(b: [u8; 4]) -> Option<Tag> {
        Tag::ALL.into_iter().find(|t| t.bytes() == b)
    }

    /// Short lower-case name for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Tag::Abridged => "abridged",
            Tag::Intermediate => "intermediate",
            Tag::Padded => "padded",
        }
    }
}

/// Key and IV of one direction.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyIv {
    /// The AES-256 key.
    pub key: [u8; 32],
    /// The initial counter block.
    pub iv: [u8; 16],
}

impl KeyIv {
    fn from_slice(material: &[u8], secret: Option<&[u8; 16]>) -> KeyIv {
        debug_assert_eq!(material.len(), 48);
        let mut key = [0u8; 32];
        match secret {
            Some(s) => {
                let mut h = Sha256::new();
                h.update(&material[..32]);
                h.update(s);
                key.copy_from_slice(&h.finalize());
            }
            None => key.copy_from_slice(&material[..32]),
        }
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&material[32..48]);
        KeyIv { key, iv }
    }

    /// A fresh keystream at position 0.
    pub fn cipher(&self) -> AesCtr {
        AesCtr::new(&self.key, &self.iv)
    }
}

impl std::fmt::Debug for KeyIv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyIv(..)")
    }
}

/// The keys of both directions as seen by the side that *reads* the header:
/// `read` decrypts what the header's sender sends, `write` encrypts what goes back.
pub fn derive_keys(header: &[u8; HEADER_LEN], secret: Option<&[u8; 16]>) -> (KeyIv, KeyIv) {
    let read = KeyIv::from_slice(&header[8..56], secret);
    let mut rev = [0u8; 48];
    rev.copy_from_slice(&header[8..56]);
    rev.reverse();
    let write = KeyIv::from_slice(&rev, secret);
    (read, write)
}

/// A header that some secret accepted.
#[derive(Debug)]
pub struct Accepted {
    /// Index into the secret list, `None` in no-secret mode.
    pub secret_index: Option<usize>,
    /// The transport the client asked for.
    pub tag: Tag,
    /// DC id, signed: negative for media DCs, +10000 for test DCs (spec §3.6).
    pub dc: i16,
    /// Decrypts what the peer sends next (positioned at keystream byte 64).
    pub decrypt: AesCtr,
    /// Encrypts what we send (positioned at byte 0).
    pub encrypt: AesCtr,
    /// Key and IV behind `encrypt`, for the direct mode's fast path.
    pub encrypt_key: KeyIv,
}

/// Tries each secret in order on the pristine header (spec §1.5); the first one whose
/// decryption shows one of the three tags wins. With an empty list the header is read in
/// no-secret mode. `None` when nothing matches.
pub fn accept(header: &[u8; HEADER_LEN], secrets: &[[u8; 16]]) -> Option<Accepted> {
    if secrets.is_empty() {
        return try_secret(header, None, None);
    }
    secrets
        .iter()
        .enumerate()
        .find_map(|(i, s)| try_secret(header, Some(s), Some(i)))
}

fn try_secret(
    header: &[u8; HEADER_LEN],
    secret: Option<&[u8; 16]>,
    index: Option<usize>,
) -> Option<Accepted> {
    let (read, write) = derive_keys(header, secret);
    let mut decrypt = read.cipher();
    // Only bytes 56..64 carry meaning; decrypting a copy of the tail is enough, the stream
    // just has to end up at byte 64.
    decrypt.skip(56);
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&header[56..64]);
    decrypt.apply(&mut tail);
    let tag = Tag::from_bytes([tail[0], tail[1], tail[2], tail[3]])?;
    let dc = i16::from_le_bytes([tail[4], tail[5]]);
    Some(Accepted {
        secret_index: index,
        tag,
        dc,
        decrypt,
        encrypt: write.cipher(),
        encrypt_key: write,
    })
}

/// A header we built, with the keystreams for our side of the connection.
#[derive(Debug)]
pub struct Initiated {
    /// The 64 bytes to send first, as they go on the wire.
    pub header: [u8; HEADER_LEN],
    /// Encrypts what we send after the header (positioned at byte 64).
    pub encrypt: AesCtr,
    /// Decrypts what the peer sends back (positioned at byte 0).
    pub decrypt: AesCtr,
}

/// Would a server that also speaks the unobfuscated transports or fake TLS on the same
/// port misread this header (spec §3.2)? Clients redraw random bytes until this is true.
pub fn is_acceptable_header(h: &[u8; HEADER_LEN]) -> bool {
    const FORBIDDEN: [u32; 7] = [
        0x4441_4548, // HEAD
        0x5453_4f50, // POST
        0x2054_4547, // GET
        0x4954_504f, // OPTI
        0xdddd_dddd,
        0xeeee_eeee,
        0x0201_0316, // 16 03 01 02: a TLS record
    ];
    let first = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let second = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    h[0] != 0xef && !FORBIDDEN.contains(&first) && second != 0
}

/// Builds a header from 64 random bytes (the caller redraws them until
/// [`is_acceptable_header`] holds for the result, if it cares): bytes 56..62 become the tag
/// and DC id, bytes 62..64 stay random.
pub fn initiate(
    random: [u8; HEADER_LEN],
    tag: Tag,
    dc: i16,
    secret: Option<&[u8; 16]>,
) -> Initiated {
    let mut plain = random;
    plain[56..60].copy_from_slice(&tag.bytes());
    plain[60..62].copy_from_slice(&dc.to_le_bytes());
    // The peer derives its read keys from what it receives; bytes 8..56 go out unencrypted,
    // so deriving from the plaintext header gives the same keys.
    let (peer_read, peer_write) = derive_keys(&plain, secret);
    let mut encrypt = peer_read.cipher();
    let mut enc = plain;
    encrypt.apply(&mut enc);
    let mut header = plain;
    header[56..64].copy_from_slice(&enc[56..64]);
    Initiated {
        header,
        encrypt,
        decrypt: peer_write.cipher(),
    }
}

/// Builds a no-secret header (as sent to a Telegram DC) chosen so that the peer's encrypt
/// stream is exactly `want_decrypt`: the DC then encrypts its replies with the keystream the
/// proxy's own client expects, and the proxy relays that direction without touching it
/// (the "fast mode" of direct relaying). `random` supplies bytes 0..8 and 62..64.
pub fn initiate_fast(
    random: [u8; HEADER_LEN],
    tag: Tag,
    dc: i16,
    want_decrypt: &KeyIv,
) -> Initiated {
    let mut r = random;
    let mut material = [0u8; 48];
    material[..32].copy_from_slice(&want_decrypt.key);
    material[32..].copy_from_slice(&want_decrypt.iv);
    material.reverse();
    r[8..56].copy_from_slice(&material);
    let out = initiate(r, tag, dc, None);
    debug_assert_eq!(derive_keys(&out.header, None).1, *want_decrypt);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }
    fn arr<const N: usize>(v: &[u8]) -> [u8; N] {
        v.try_into().unwrap()
    }

    const S: &str = "033a588ebe5aae54b37ea85b97ed661a";
    const S2: &str = "17b1067abfeb54e7fd4b299b315074e0";
    const PLAIN_83: &str = "388e1dd8ed84dd9988d839daaaa9331f035cc2357490d795150ab8b243bde65a16cae65cc95b687bbadb1f8678ea4f99f7538eedd0234cbfdddddddd0200471f";
    const WIRE_83: &str = "388e1dd8ed84dd9988d839daaaa9331f035cc2357490d795150ab8b243bde65a16cae65cc95b687bbadb1f8678ea4f99f7538eedd0234cbfbb6c38be63ea9f31";

    #[test]
    fn vector_8_3_key_derivation() {
        let hdr: [u8; 64] = arr(&h(PLAIN_83));
        let s: [u8; 16] = arr(&h(S));
        let (r, w) = derive_keys(&hdr, Some(&s));
        assert_eq!(
            hex::encode(r.key),
            "22d8a066d581dcc7ab26d41e5441b561bf0cf5a34f544d8be833eb7ba1702114"
        );
        assert_eq!(hex::encode(r.iv), "badb1f8678ea4f99f7538eedd0234cbf");
        assert_eq!(
            hex::encode(w.key),
            "99092f1666454e8f20de939bad61710877a16a7d533f3a80e4520837ac8addec"
        );
        assert_eq!(hex::encode(w.iv), "95d7907435c25c031f33a9aada39d888");
    }

    #[test]
    fn vector_8_3_accept_with_two_secrets_and_first_frames() {
        let wire: [u8; 64] = arr(&h(WIRE_83));
        let secrets = [arr::<16>(&h(S2)), arr::<16>(&h(S))];
        let mut a = accept(&wire, &secrets).expect("S matches");
        assert_eq!(a.secret_index, Some(1));
        assert_eq!(a.tag, Tag::Padded);
        assert_eq!(a.dc, 2);
        // S2 alone must not match.
        assert!(accept(&wire, &secrets[..1]).is_none());
        // First client frame continues the stream at byte 64.
        let mut c = h("521449460a91c8690ba01f6f80b77f3c913884d5fb01ef7a59f9c72c79b1326d9389888480307bbb8c5ab752b65caf");
        a.decrypt.apply(&mut c);
        assert_eq!(hex::encode(&c), "2b00000000000000000000000400000000f1536514000000f18e7ebe267ee7653ecf37dfd3ac057d8976c11cc62d43");
        // First proxy frame starts the other stream at byte 0.
        let mut p = h("5200000078a8c59bce4fc960909e2e29d33c5df74da345ea646ccb2c8cd2232d79087c9e5977d5c22a6de309a562db8cfb1e6152e21a512b97b93cab532fdfe89845c7d62caf17747d70fcb122e71912b9ff90bc3b50");
        a.encrypt.apply(&mut p);
        assert_eq!(hex::encode(&p), "8198268fa801477dc64f4b96adcbc574e33994f174dcafeb0a36b230a2c384b704c330a80869f039aff59690099bfd94c5c10f506583cf684c3d752daf27556cbd89f6d46f69ef862b2c8e7f5ffb3167342d3d69bf28");
    }

    #[test]
    fn vector_8_3_initiate_reproduces_wire_header() {
        let plain: [u8; 64] = arr(&h(PLAIN_83));
        let s: [u8; 16] = arr(&h(S));
        let out = initiate(plain, Tag::Padded, 2, Some(&s));
        assert_eq!(hex::encode(out.header), WIRE_83);
        assert_eq!(out.encrypt.position(), 64);
    }

    #[test]
    fn vector_8_4_other_tags_media_test_and_no_secret() {
        let s: [u8; 16] = arr(&h(S));
        let cases: [(&str, Option<[u8; 16]>, Tag, i16); 4] = [
            ("a9c2926c46cd4b0e1ca198469069c9458cfbb5c82fd4a2fe74e0b9c7c354dc2c51baab5108ef12b36b4ba6b2bc3e88908132758031534257f06c65e92cf72a83", Some(s), Tag::Abridged, -2),
            ("94d0add57be3a953a9f2f566918829b6cfd21c23e42ca1bfc37cd233193d46c80271ccaeadbbbf0395c08e83e7af7da900a8acfd06cbc67030a95d45b0b30e6a", Some(s), Tag::Intermediate, 4),
            ("3cb3b15c086f25021b171e876ce2c80d3430ceaa57ba50b15a4a950d36128ea6b464f9c4d1f362a1b1d3d58c1d7be37fd3e8b899b6a67411e980a25b5328b6c7", Some(s), Tag::Padded, 10002),
            ("ac1a64917c04c388ccbedca46fe0b36d7ab4c4fb467de4da58a1c8791795bca3e33603d4dabc9fd8baa68585bef61f07845a6f123deef95bb36317d39c5fe9dc", None, Tag::Intermediate, 1),
        ];
        for (wire, secret, tag, dc) in cases {
            let wire: [u8; 64] = arr(&h(wire));
            let secrets: Vec<[u8; 16]> = secret.into_iter().collect();
            let a = accept(&wire, &secrets).expect("accepted");
            assert_eq!((a.tag, a.dc), (tag, dc));
            assert_eq!(a.secret_index, secret.map(|_| 0));
        }
    }

    #[test]
    fn initiate_fast_makes_peer_encrypt_with_chosen_stream() {
        let want = KeyIv {
            key: [9; 32],
            iv: [3; 16],
        };
        let out = initiate_fast([0x41; 64], Tag::Intermediate, -3, &want);
        // The DC side accepts it in no-secret mode and its encrypt stream equals ours.
        let mut dc = accept(&out.header, &[]).unwrap();
        assert_eq!((dc.tag, dc.dc), (Tag::Intermediate, -3));
        let mut a = [0u8; 40];
        dc.encrypt.apply(&mut a);
        let mut b = [0u8; 40];
        want.cipher().apply(&mut b);
        assert_eq!(a, b);
        assert!(is_acceptable_header(&out.header));
    }

    #[test]
    fn forbidden_prefixes() {
        let mut hd = [1u8; 64];
        assert!(is_acceptable_header(&hd));
        hd[0] = 0xef;
        assert!(!is_acceptable_header(&hd));
        hd[..4].copy_from_slice(b"GET ");
        assert!(!is_acceptable_header(&hd));
        hd[..4].copy_from_slice(&[0x16, 3, 1, 2]);
        assert!(!is_acceptable_header(&hd));
        hd[..4].copy_from_slice(&[1, 1, 1, 1]);
        hd[4..8].copy_from_slice(&[0; 4]);
        assert!(!is_acceptable_header(&hd));
    }
}
