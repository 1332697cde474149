//! The proxy's reply to an accepted ClientHello (spec client.md §5.8), and the choice of
//! the size of its fake encrypted part (§5.2).
//!
//! The reply is exactly three records, sent in one write: a ServerHello (127 bytes with its
//! header), a ChangeCipherSpec, and **one** application-data record of `E` random bytes
//! standing in for the encrypted handshake. Its random is
//! `HMAC-SHA256(secret, client_random ‖ reply with bytes 11..43 zeroed)`. TDLib reads
//! exactly these three records and checks that HMAC.
//!
//! Not here: the key share (the caller's, see [`super::key_share`]) and the fake bytes
//! (random, from the caller), what the site's answers look like ([`super::profile`] picks
//! the size, the cipher and the order), and the record layer that follows
//! ([`super::record`]).

use super::{hmac_sha256, CHANGE_CIPHER_SPEC, RANDOM_OFFSET};

/// Length of the ServerHello record, header included.
pub const SERVER_HELLO_LEN: usize = 127;

/// Reply length without the fake encrypted bytes: ServerHello, ChangeCipherSpec and the
/// application-data record header (127 + 6 + 5).
pub const REPLY_OVERHEAD: usize = SERVER_HELLO_LEN + 6 + 5;

/// The order of the ServerHello's two extensions, learned from the real site (§5.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExtensionOrder {
    /// key_share, then supported_versions (C's default, and what most servers do).
    #[default]
    KeyShareFirst,
    /// supported_versions, then key_share (C's "reversed" order).
    SupportedVersionsFirst,
}

impl ExtensionOrder {
    /// C's `is_reversed_extension_order` flag.
    pub fn from_reversed(reversed: bool) -> ExtensionOrder {
        if reversed {
            ExtensionOrder::SupportedVersionsFirst
        } else {
            ExtensionOrder::KeyShareFirst
        }
    }

    /// Whether this is C's "reversed" order (supported_versions first).
    pub fn is_reversed(self) -> bool {
        self == ExtensionOrder::SupportedVersionsFirst
    }
}

/// Builds the reply (`REPLY_OVERHEAD + app_data.len()` bytes).
///
/// - `client_random`, `session_id`: from [`super::HelloVerdict::Accept`] (the session id
///   is the client's bytes 44..76, copied blindly); `cipher`: `0x13XX`, the client's or
///   the one the site would pick ([`super::profile::SiteProfile::pick_cipher`]).
/// - `key_share`: a fresh X25519 public key (any `X25519(random scalar, 9)` output).
/// - `app_data`: the fake encrypted handshake, `E` random bytes (see
///   [`super::profile::SiteProfile::pick_size`]).
///
/// # Panics
/// If `app_data` is longer than 65 535 bytes (a record length is 16 bits).
pub fn build_server_hello(
    secret: &[u8; 16],
    client_random: &[u8; 32],
    session_id: &[u8; 32],
    cipher: u16,
    key_share: &[u8; 32],
    app_data: &[u8],
    order: ExtensionOrder,
) -> Vec<u8> {
    let e = u16::try_from(app_data.len()).expect("fake application data over 65535 bytes");
    let mut r = Vec::with_capacity(REPLY_OVERHEAD + app_data.len());
    r.extend_from_slice(&[
        0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00, 0x00, 0x76, 0x03, 0x03,
    ]);
    r.extend_from_slice(&[0u8; 32]);
    r.push(0x20);
    r.extend_from_slice(session_id);
    r.extend_from_slice(&cipher.to_be_bytes());
    r.extend_from_slice(&[0x00, 0x00, 0x2e]);
    let key_share_ext = |r: &mut Vec<u8>| {
        r.extend_from_slice(&[0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
        r.extend_from_slice(key_share);
    };
    let versions_ext = |r: &mut Vec<u8>| r.extend_from_slice(&[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]);
    match order {
        ExtensionOrder::KeyShareFirst => {
            key_share_ext(&mut r);
            versions_ext(&mut r);
        }
        ExtensionOrder::SupportedVersionsFirst => {
            versions_ext(&mut r);
            key_share_ext(&mut r);
        }
    }
    debug_assert_eq!(r.len(), SERVER_HELLO_LEN);
    r.extend_from_slice(&CHANGE_CIPHER_SPEC);
    r.extend_from_slice(&[0x17, 0x03, 0x03]);
    r.extend_from_slice(&e.to_be_bytes());
    r.extend_from_slice(app_data);
    let server_random = hmac_sha256(secret, &[client_random, &r]);
    r[RANDOM_OFFSET..RANDOM_OFFSET + 32].copy_from_slice(&server_random);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::client::verify_server_hello;
    use crate::tls::testutil::*;

    const REPLY_87: &str = "
        160303007a0200007603038083b72ee565522189ee1710fc2da0706c165cf70a
        a5bba889d104514599b635208e94ad9cbfe89ff7733fab0f83f79ac3fd2870b6
        f774856a9cd7a7074508b40a130100002e00330024001d0020fc4f5c4d615568
        5fb021fa726ecf77d09595581a2faf56ca6155b2beaabb0576002b0002030414
        03030001011703030040c4cc0798aa93a0c96f9be179d8870117ad24242212b7
        0ca6c4fdaa2fae375a822c544d943883a32b4d5e47039164a8d06e2eb097b94f
        74a78bc3691478be544f";

    fn reply(order: ExtensionOrder) -> Vec<u8> {
        let hello = hello_86();
        build_server_hello(
            &s(),
            &arr(&hello[11..43]),
            &arr(&hello[44..76]),
            0x1301,
            &arr(&drbg("vec/server-ks", 32)),
            &drbg("vec/server-enc", 64),
            order,
        )
    }

    #[test]
    fn vector_8_7_reply() {
        let r = reply(ExtensionOrder::KeyShareFirst);
        assert_eq!(r.len(), 202);
        assert_eq!(hex::encode(&r), hex::encode(h(REPLY_87)));
        let hello = hello_86();
        assert_eq!(verify_server_hello(&s(), &arr(&hello[11..43]), &r), Ok(202));
    }

    #[test]
    fn vector_8_7_reversed_order() {
        let r = reply(ExtensionOrder::SupportedVersionsFirst);
        assert_eq!(hex::encode(&r[81..87]), "002b00020304");
        assert_eq!(hex::encode(&r[87..95]), "00330024001d0020");
        assert_eq!(
            hex::encode(&r[11..43]),
            "8900abe70937ca3acd68f080b55d430e8668e695abea3d4aa34760456124bf25"
        );
        // Everything but the extensions and the random is as in the normal order.
        let n = h(REPLY_87);
        assert_eq!(r[..11], n[..11]);
        assert_eq!(r[43..81], n[43..81]);
        assert_eq!(r[127..], n[127..]);
        let hello = hello_86();
        assert_eq!(verify_server_hello(&s(), &arr(&hello[11..43]), &r), Ok(202));
    }

    #[test]
    fn other_ciphers_and_sizes() {
        let r = build_server_hello(
            &s(),
            &[1; 32],
            &[2; 32],
            0x1303,
            &[3; 32],
            &[4; 3000],
            ExtensionOrder::KeyShareFirst,
        );
        assert_eq!(r.len(), REPLY_OVERHEAD + 3000);
        assert_eq!(r[76..78], [0x13, 0x03]);
        assert_eq!(r[133..138], [0x17, 0x03, 0x03, 0x0b, 0xb8]);
        assert_eq!(verify_server_hello(&s(), &[1; 32], &r), Ok(r.len()));
    }
}
