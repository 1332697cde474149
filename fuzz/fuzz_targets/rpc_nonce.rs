//! The RPC_NONCE exchange: `rpc::nonce::check_me_nonce` (the proxy reading the ME's nonce).
//!
//! Input: our key selector (4) ‖ the crypto_ts we sent (4, LE) ‖ the ME's nonce payload.
//! Invariants: an accepted nonce is schema 1 or 2, within 30 s, names our key (directly or in
//! its extra key list), and a schema-1 nonce encodes back to the payload; a nonce built with
//! `NoncePacket::aes` for a secret is accepted by the check for that secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::rpc::nonce::{check_me_nonce, check_proxy_nonce, key_select, NoncePacket};
use mtproxy_fuzz::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let ks: [u8; 4] = c.array();
    let ts = c.u32() as i32;
    let payload = c.rest();
    let r = check_me_nonce(payload, ks, ts);
    assert_eq!(r, check_proxy_nonce(payload, ks, ts));
    match r {
        Ok(p) => {
            assert!(p.schema == 1 || p.schema == 2, "schema {}", p.schema);
            assert!((i64::from(p.crypto_ts) - i64::from(ts)).abs() <= 30);
            assert_ne!(ks, [0; 4]);
            assert_eq!(p.key_select, payload[4..8]);
            if p.schema == 1 {
                assert_eq!(payload.len(), 32);
                assert_eq!(p.to_bytes()[..], payload[..]);
            } else {
                assert!(payload.len() >= 36 && payload.len().is_multiple_of(4));
            }
            if p.key_select != ks {
                assert!(payload[36..].chunks_exact(4).any(|k| k == ks));
            }
        }
        Err(e) => {
            let _ = (e.c_code(), e.to_string());
        }
    }
    // Round trip with the payload as a proxy secret (32..=256 bytes).
    if (32..=256).contains(&payload.len()) && key_select(payload) != [0; 4] {
        let mut n = [0u8; 16];
        n.copy_from_slice(&payload[..16]);
        let p = NoncePacket::aes(payload, ts, n);
        assert_eq!(
            check_me_nonce(&p.to_bytes(), key_select(payload), ts),
            Ok(p)
        );
    }
});
