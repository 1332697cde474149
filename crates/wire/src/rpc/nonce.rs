//! The RPC_NONCE exchange (spec backend-ops.md §1.5): each side's first packet, plaintext,
//! seq −2, CRC32. Payload (schema 1, the only one we send), 32 bytes:
//! `op:u32 ‖ key_select[4] ‖ crypto_schema:i32 ‖ crypto_ts:i32 ‖ nonce[16]`.
//! Schema 2 appends `extra_keys_count:i32 ‖ extra_key_select[4·k]` (0 ≤ k ≤ 8), schema 3
//! additionally `dh_params_select:i32 ‖ g_a[256]`.
//!
//! The checks are the C's (`tcp_rpcc_process_nonce_packet`, and the server's twin), in its
//! order, and the error says which C code it corresponds to. The sequence-number part of the
//! first check is the frame decoder's job. Not here: random nonces and clocks (passed in),
//! and the "no other buffered bytes" rule of §1.4 (the caller knows its buffers).

use super::{
    le_i32, le_u32, CRYPTO_SCHEMA_AES, CRYPTO_SCHEMA_AES_DH, CRYPTO_SCHEMA_AES_EXT,
    CRYPTO_SCHEMA_NONE, MAX_EXTRA_KEYS, RPC_NONCE,
};

/// Payload length of a schema-1 nonce packet.
pub const NONCE_LEN: usize = 32;
/// Largest payload any schema allows (schema 3 with 8 extra keys).
pub const MAX_NONCE_LEN: usize = 36 + 4 * MAX_EXTRA_KEYS + 4 + 256;
/// Largest clock difference accepted, in seconds.
pub const MAX_CLOCK_SKEW: i64 = 30;

/// The key selector of a proxy secret: its first 4 bytes, verbatim (zeros for a secret
/// shorter than that, which no peer accepts).
pub fn key_select(secret: &[u8]) -> [u8; 4] {
    let mut k = [0u8; 4];
    if let Some(head) = secret.get(..4) {
        k.copy_from_slice(head);
    }
    k
}

/// The fixed part of a nonce packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NoncePacket {
    /// The first 4 bytes of the proxy secret's key (which secret the peer uses).
    pub key_select: [u8; 4],
    /// The crypto schema: 1 is AES; 2 adds extra key selects, 3 a DH request; 0 is none.
    pub schema: i32,
    /// Sender's clock, unix seconds.
    pub crypto_ts: i32,
    /// The sender's random nonce (key derivation input).
    pub nonce: [u8; 16],
}

impl NoncePacket {
    /// A schema-1 (AES) nonce for `secret`, as the proxy and an ME send it.
    pub fn aes(secret: &[u8], crypto_ts: i32, nonce: [u8; 16]) -> NoncePacket {
        NoncePacket {
            key_select: key_select(secret),
            schema: CRYPTO_SCHEMA_AES,
            crypto_ts,
            nonce,
        }
    }

    /// The 32-byte payload.
    pub fn to_bytes(&self) -> [u8; NONCE_LEN] {
        let mut b = [0u8; NONCE_LEN];
        b[..4].copy_from_slice(&RPC_NONCE.to_le_bytes());
        b[4..8].copy_from_slice(&self.key_select);
        b[8..12].copy_from_slice(&self.schema.to_le_bytes());
        b[12..16].copy_from_slice(&self.crypto_ts.to_le_bytes());
        b[16..32].copy_from_slice(&self.nonce);
        b
    }

    /// Appends the 32-byte payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}

impl std::fmt::Debug for NoncePacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoncePacket")
            .field("key_select", &hex::encode(self.key_select))
            .field("schema", &self.schema)
            .field("crypto_ts", &self.crypto_ts)
            .finish_non_exhaustive()
    }
}

/// Why a peer's nonce packet was refused. The C closes the connection without an error
/// packet in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceError {
    /// Not an RPC_NONCE (C: −2).
    NotNonce {
        /// The op the packet has instead.
        op: u32,
    },
    /// The length does not fit the schema, or the schema is unknown (C: −3).
    BadLength {
        /// The schema the packet names.
        schema: i32,
        /// The packet's length.
        len: usize,
    },
    /// key_select is 0 or not ours (and, for schema 2, not in the extra list either), or a
    /// schema-0 packet carries a key (C: −3).
    BadKeySelect {
        /// The key_select the packet carries.
        got: [u8; 4],
    },
    /// Schema 0: the peer wants no encryption, which ME links never allow (C: −5).
    Unencrypted,
    /// Schema 3: the peer wants Diffie-Hellman, which we never ask for (C: −7).
    DhNotRequested,
    /// The peer's crypto_ts is more than 30 s from ours (C: −6).
    ClockSkew {
        /// Our clock, unix seconds.
        ours: i32,
        /// The peer's crypto_ts.
        theirs: i32,
    },
}

impl NonceError {
    /// The C's `fail_connection` code.
    pub fn c_code(&self) -> i32 {
        match self {
            NonceError::NotNonce { .. } => -2,
            NonceError::BadLength { .. } | NonceError::BadKeySelect { .. } => -3,
            NonceError::Unencrypted => -5,
            NonceError::ClockSkew { .. } => -6,
            NonceError::DhNotRequested => -7,
        }
    }
}

impl std::fmt::Display for NonceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NonceError::NotNonce { op } => write!(f, "expected RPC_NONCE, got op {op:08x}"),
            NonceError::BadLength { schema, len } => {
                write!(f, "nonce packet of {len} bytes does not fit crypto schema {schema}")
            }
            NonceError::BadKeySelect { got } => {
                write!(f, "nonce key_select {} is not our secret's", hex::encode(got))
            }
            NonceError::Unencrypted => write!(f, "peer asked for an unencrypted link"),
            NonceError::DhNotRequested => write!(f, "peer asked for DH, which we did not offer"),
            NonceError::ClockSkew { ours, theirs } => write!(
                f,
                "peer crypto_ts {theirs} is {}s away from ours ({ours}): clocks differ by more than {MAX_CLOCK_SKEW}s",
                (i64::from(*theirs) - i64::from(*ours)).abs()
            ),
        }
    }
}

impl std::error::Error for NonceError {}

/// Checks a peer's nonce payload against our key selector and a reference time, in the C's
/// order, and returns the packet (schema 1 or 2) on success.
///
/// `reference_ts` is what the peer's crypto_ts must be within 30 s of: the proxy passes the
/// crypto_ts it sent ([`check_me_nonce`]), an ME its current clock ([`check_proxy_nonce`]).
pub fn check_nonce(
    payload: &[u8],
    our_key_select: [u8; 4],
    reference_ts: i32,
) -> Result<NoncePacket, NonceError> {
    let len = payload.len();
    if len < 4 {
        return Err(NonceError::BadLength { schema: -1, len });
    }
    let op = le_u32(payload, 0);
    if op != RPC_NONCE {
        return Err(NonceError::NotNonce { op });
    }
    if !(NONCE_LEN..=MAX_NONCE_LEN).contains(&len) {
        return Err(NonceError::BadLength { schema: -1, len });
    }
    let schema = le_i32(payload, 8);
    let bad_len = Err(NonceError::BadLength { schema, len });
    // Extra key count, for schemas 2 and 3.
    let extra = |base: usize| -> Option<usize> {
        let k = le_i32(payload.get(..36)?, 32);
        let k = usize::try_from(k).ok().filter(|k| *k <= MAX_EXTRA_KEYS)?;
        (len == base + 4 * k).then_some(k)
    };
    let extra_count = match schema {
        CRYPTO_SCHEMA_NONE | CRYPTO_SCHEMA_AES if len != NONCE_LEN => return bad_len,
        CRYPTO_SCHEMA_NONE | CRYPTO_SCHEMA_AES => 0,
        CRYPTO_SCHEMA_AES_EXT => match extra(36) {
            Some(k) => k,
            None => return bad_len,
        },
        CRYPTO_SCHEMA_AES_DH => match extra(36 + 4 + 256) {
            Some(k) => k,
            None => return bad_len,
        },
        _ => return bad_len,
    };
    let mut key = [0u8; 4];
    key.copy_from_slice(&payload[4..8]);
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&payload[16..32]);
    let packet = NoncePacket {
        key_select: key,
        schema,
        crypto_ts: le_i32(payload, 12),
        nonce,
    };
    match schema {
        CRYPTO_SCHEMA_NONE if key != [0; 4] => return Err(NonceError::BadKeySelect { got: key }),
        CRYPTO_SCHEMA_NONE => return Err(NonceError::Unencrypted),
        CRYPTO_SCHEMA_AES_DH => return Err(NonceError::DhNotRequested),
        _ => {}
    }
    let extra_keys = payload.get(36..36 + 4 * extra_count).unwrap_or(&[]);
    let ours_listed = extra_keys.chunks_exact(4).any(|k| k == our_key_select);
    if our_key_select == [0; 4] || (key != our_key_select && !ours_listed) {
        return Err(NonceError::BadKeySelect { got: key });
    }
    if (i64::from(packet.crypto_ts) - i64::from(reference_ts)).abs() > MAX_CLOCK_SKEW {
        return Err(NonceError::ClockSkew {
            ours: reference_ts,
            theirs: packet.crypto_ts,
        });
    }
    Ok(packet)
}

/// Proxy side: checks the ME's nonce. `sent_ts` is the crypto_ts the proxy put in its own
/// nonce packet (the C compares with that, not with the clock now).
pub fn check_me_nonce(
    payload: &[u8],
    our_key_select: [u8; 4],
    sent_ts: i32,
) -> Result<NoncePacket, NonceError> {
    check_nonce(payload, our_key_select, sent_ts)
}

/// ME side: checks the proxy's nonce against the ME's clock `now` (unix seconds).
pub fn check_proxy_nonce(
    payload: &[u8],
    our_key_select: [u8; 4],
    now: i32,
) -> Result<NoncePacket, NonceError> {
    check_nonce(payload, our_key_select, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KS: [u8; 4] = [0, 1, 2, 3];
    const TS: i32 = 1_600_000_000;

    #[test]
    fn spec_nonce_payload() {
        let secret: Vec<u8> = (0..32).collect();
        let p = NoncePacket::aes(&secret, TS, [0x22; 16]);
        assert_eq!(
            hex::encode(p.to_bytes()),
            "aa87cb7a000102030100000000105e5f22222222222222222222222222222222"
        );
        assert_eq!(check_me_nonce(&p.to_bytes(), KS, TS), Ok(p));
        assert!(!format!("{p:?}").contains("2222"));
    }

    fn with(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = NoncePacket::aes(&KS, TS, [7; 16]).to_bytes().to_vec();
        f(&mut v);
        v
    }

    #[test]
    fn each_check_and_its_c_code() {
        let cases: Vec<(Vec<u8>, i32)> = vec![
            (with(|v| v[0] ^= 1), -2),
            (with(|v| v.push(0)), -3),
            (with(|v| v.truncate(28)), -3),
            (with(|v| v[8] = 7), -3),
            (with(|v| v[4..8].copy_from_slice(&[9; 4])), -3),
            (with(|v| v[8] = 0), -3), // schema 0 carrying a key
            (
                with(|v| {
                    v[8] = 0;
                    v[4..8].copy_from_slice(&[0; 4]);
                }),
                -5,
            ),
            (
                with(|v| {
                    v[8] = 3;
                    v.extend_from_slice(&0i32.to_le_bytes());
                    v.extend_from_slice(&[0; 260]);
                }),
                -7,
            ),
            (
                with(|v| v[12..16].copy_from_slice(&(TS + 31).to_le_bytes())),
                -6,
            ),
            (
                with(|v| v[12..16].copy_from_slice(&(TS - 31).to_le_bytes())),
                -6,
            ),
        ];
        for (i, (p, code)) in cases.iter().enumerate() {
            let e = check_me_nonce(p, KS, TS).unwrap_err();
            assert_eq!(e.c_code(), *code, "case {i}: {e}");
        }
        // 30 s either way is fine.
        for d in [-30, 30] {
            let p = with(|v| v[12..16].copy_from_slice(&(TS + d).to_le_bytes()));
            assert!(check_proxy_nonce(&p, KS, TS).is_ok());
        }
        // A zero key select of our own matches nothing.
        let p = NoncePacket::aes(&[0; 32], TS, [1; 16]).to_bytes();
        assert_eq!(check_me_nonce(&p, [0; 4], TS).unwrap_err().c_code(), -3);
    }

    #[test]
    fn schema_2_with_our_key_in_the_extra_list() {
        let p = with(|v| {
            v[4..8].copy_from_slice(&[9; 4]);
            v[8] = 2;
            v.extend_from_slice(&2i32.to_le_bytes());
            v.extend_from_slice(&[8; 4]);
            v.extend_from_slice(&KS);
        });
        assert_eq!(check_me_nonce(&p, KS, TS).unwrap().schema, 2);
        // Count does not match the length.
        let mut q = p.clone();
        q[32] = 3;
        assert_eq!(check_me_nonce(&q, KS, TS).unwrap_err().c_code(), -3);
        // Our key not listed.
        let mut r = p;
        r[40..44].copy_from_slice(&[8; 4]);
        assert!(matches!(
            check_me_nonce(&r, KS, TS),
            Err(NonceError::BadKeySelect { .. })
        ));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), ts: i32) {
            let _ = check_nonce(&bytes, KS, ts);
        }
    }
}
