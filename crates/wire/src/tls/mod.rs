//! Fake TLS, the transport of `ee` secrets (spec client.md §5): a TLS 1.3 look-alike
//! handshake whose ClientHello random is an HMAC of the secret, then the obfuscated2 stream
//! carried in `17 03 03` application-data records.
//!
//! - [`hello`]: recognising the first bytes, and checking a ClientHello in C's order
//!   (SNI, port 80, trailing bytes, size cap, replay, HMAC, timestamp, cipher suite).
//! - [`replay`]: the bounded cache of client randoms behind the replay check.
//! - [`server_hello`]: the proxy's reply (ServerHello + ChangeCipherSpec + one fake
//!   application-data record).
//! - [`key_share`]: the ServerHello's X25519 key share, a real public key.
//! - [`flight`]: what a real server answers to a hello (its whole first flight), and
//!   [`profile`]: the site's answers summed up as the proxy imitates them.
//! - [`hello_fields`]: the fields of a ClientHello, and [`ja4`]: its JA4 fingerprint.
//! - [`record`]: the record layer after the handshake, both directions, and
//!   [`record_sizing`]: how long the records we send are (dynamic record sizing).
//! - [`client`]: the client's side (building hellos like TDLib's, checking the reply), for
//!   tests and test clients.
//!
//! Not here: sockets, timers, the masquerade relay (forwarding to the real site), the
//! network side of probing the real site, and the obfuscated2 header inside the first record (that is
//! [`crate::obfs2`]). Randomness and the current time always come from the caller.

pub mod client;
pub mod flight;
pub mod hello;
pub mod hello_fields;
pub mod ja4;
pub mod key_share;
pub mod profile;
pub mod record;
pub mod record_sizing;
pub mod replay;
pub mod server_hello;

pub use client::{build_client_hello, verify_server_hello, ServerHelloError};
pub use flight::{parse_flight, Flight, Unmirrorable};
pub use hello::{
    check_client_hello, detect, hello_hmac, is_allowed_timestamp, sni_of, Detect, ForwardTarget,
    HelloVerdict, RejectReason, Sni, SniPolicy, DETECT_BYTES,
};
pub use hello_fields::HelloFields;
pub use ja4::ja4;
pub use key_share::x25519_public_key;
pub use profile::SiteProfile;
pub use record::{
    records_len, write_records, RecordError, RecordReader, C_RECORD_PAYLOAD, MAX_RECORD_PAYLOAD,
};
pub use record_sizing::RecordSizer;
pub use replay::ReplayCache;
pub use server_hello::{build_server_hello, ExtensionOrder, REPLY_OVERHEAD};

/// Offset of the 32-byte random in a hello (ClientHello or ServerHello), record header
/// included: bytes 11..43.
pub const RANDOM_OFFSET: usize = 11;

/// Offset of the 32-byte session id C assumes (after the `20` length byte at 43): bytes
/// 44..76.
pub const SESSION_ID_OFFSET: usize = 44;

/// Largest ClientHello (record header included) the proxy authenticates (spec §5.3, the
/// Nov-2025 C fix). Longer hellos are forwarded to the site.
pub const MAX_HELLO_LEN: usize = 4096;

/// The ChangeCipherSpec record both sides send once: `14 03 03 00 01 01`.
pub const CHANGE_CIPHER_SPEC: [u8; 6] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];

/// Header prefix of an application-data record: `17 03 03`, then a BE16 length.
pub const APP_DATA_PREFIX: [u8; 3] = [0x17, 0x03, 0x03];

/// `HMAC-SHA256(key, parts...)`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Shared by the tests of the submodules: the spec's deterministic "random" bytes and the
/// §8.6 inputs.
#[cfg(test)]
pub(crate) mod testutil {
    use sha2::{Digest, Sha256};

    /// `vectors_client.py`'s `drbg`: SHA-256(label ‖ BE32(i)) concatenated.
    pub fn drbg(label: &str, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0u32;
        while out.len() < n {
            let mut h = Sha256::new();
            h.update(label.as_bytes());
            h.update(i.to_be_bytes());
            out.extend_from_slice(&h.finalize());
            i += 1;
        }
        out.truncate(n);
        out
    }

    pub fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    pub fn arr<const N: usize>(v: &[u8]) -> [u8; N] {
        v.try_into().unwrap()
    }

    pub const S: &str = "033a588ebe5aae54b37ea85b97ed661a";
    pub const S2: &str = "17b1067abfeb54e7fd4b299b315074e0";
    pub const NOW: i64 = 1_700_000_000;
    pub const DOMAIN: &str = "www.example.com";

    pub fn s() -> [u8; 16] {
        arr(&h(S))
    }
    pub fn s2() -> [u8; 16] {
        arr(&h(S2))
    }

    /// §8.6: the 517-byte hello, secret S, SNI www.example.com, timestamp 1700000000.
    pub const HELLO_86: &str = "
        1603010200010001fc0303eca3a4b945bf2403e74caffe9eee2be0c7e02718b0
        0886649aad94deff409bec208e94ad9cbfe89ff7733fab0f83f79ac3fd2870b6
        f774856a9cd7a7074508b40a00205a5a130113021303c02bc02fc02cc030cca9
        cca8c013c014009c009d002f0035010001931a1a000000000014001200000f77
        77772e6578616d706c652e636f6d000500050100000000000a000a00089a9a00
        1d00170018000b00020100000d00120010040308040401050308050501080606
        010010000e000c02683208687474702f312e310012000000170000001b000302
        000200230000002b0007068a8a03040303002d000201010033002b00299a9a00
        0100001d0020982785400f6aa0e9f2257cb902b1fb5d1f471ddbb8e79bd8c725
        1674c5b7e53d446900050003026832ff010001004a4a000100001500c8000000
        0000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000
        0000000000";

    pub fn hello_86() -> Vec<u8> {
        h(HELLO_86)
    }

    /// A random source that hands out the given bytes in order, then panics.
    pub fn feeder(bytes: Vec<u8>) -> impl FnMut(&mut [u8]) {
        let mut pos = 0;
        move |out: &mut [u8]| {
            out.copy_from_slice(&bytes[pos..pos + out.len()]);
            pos += out.len();
        }
    }

    /// A deterministic, endless random source: drbg(label) as one long stream.
    pub fn stream(label: &str) -> impl FnMut(&mut [u8]) {
        let label = label.to_string();
        let mut block = 0u32;
        let mut buf: Vec<u8> = Vec::new();
        move |out: &mut [u8]| {
            for b in out.iter_mut() {
                if buf.is_empty() {
                    let mut h = Sha256::new();
                    h.update(label.as_bytes());
                    h.update(block.to_be_bytes());
                    buf = h.finalize().to_vec();
                    block += 1;
                }
                *b = buf.remove(0);
            }
        }
    }
}
