//! The proxy's fake-TLS reply as a client checks it: `tls::verify_server_hello`, and
//! `build_server_hello` → `verify_server_hello` round trips.
//!
//! Input: flags (1) ‖ client random (32) ‖ then
//! - flags bit 0 clear: the reply bytes (bit 1: forge the server HMAC so the structure
//!   checks pass and the HMAC check succeeds);
//! - flags bit 0 set: session id (32) ‖ cipher (2) ‖ key share (32) ‖ order (1) ‖ fake
//!   application data (rest), built with `build_server_hello`.
#![no_main]

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use mtproto_wire::tls::{
    build_server_hello, verify_server_hello, ExtensionOrder, ServerHelloError, REPLY_OVERHEAD,
};
use mtproxy_fuzz::{Cursor, S, S2};

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

/// The end of the three records if the structure is complete (mirrors TDLib's walk).
fn structure_end(r: &[u8]) -> Option<usize> {
    if r.len() < 5 || r[..3] != [0x16, 3, 3] {
        return None;
    }
    let first = 5 + be16(r, 3);
    if first < 43 || r.len() < first + 11 {
        return None;
    }
    if r[first..first + 9] != [0x14, 3, 3, 0, 1, 1, 0x17, 3, 3] {
        return None;
    }
    let end = first + 11 + be16(r, first + 9);
    (r.len() >= end).then_some(end)
}

fn check_prefixes(secret: &[u8; 16], cr: &[u8; 32], r: &[u8], n: usize, pick: usize) {
    // Every proper prefix of a good reply is incomplete, never malformed.
    for k in [0, 1, 3, 4, 5, 43, n / 2, n - 1, pick % n] {
        if k < n {
            assert_eq!(
                verify_server_hello(secret, cr, &r[..k]),
                Err(ServerHelloError::Incomplete),
                "prefix {k} of {n}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let cr: [u8; 32] = c.array();
    if flags & 1 == 0 {
        let mut reply = c.rest().to_vec();
        if flags & 2 != 0 {
            if let Some(end) = structure_end(&reply) {
                let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&S).unwrap();
                mac.update(&cr);
                mac.update(&reply[..11]);
                mac.update(&[0u8; 32]);
                mac.update(&reply[43..end]);
                let d = mac.finalize().into_bytes();
                reply[11..43].copy_from_slice(&d);
            }
        }
        match verify_server_hello(&S, &cr, &reply) {
            Ok(n) => {
                assert_eq!(Some(n), structure_end(&reply));
                check_prefixes(&S, &cr, &reply, n, usize::from(flags));
            }
            Err(e) => {
                let _ = e.to_string();
                if e != ServerHelloError::Incomplete {
                    if let Some(end) = structure_end(&reply) {
                        assert_eq!(e, ServerHelloError::BadHmac, "end {end}");
                    }
                }
            }
        }
    } else {
        let session_id: [u8; 32] = c.array();
        let cipher = c.u16();
        let key_share: [u8; 32] = c.array();
        let order = ExtensionOrder::from_reversed(c.u8() & 1 != 0);
        let app = c.rest();
        let app = &app[..app.len().min(65535)];
        let r = build_server_hello(&S, &cr, &session_id, cipher, &key_share, app, order);
        assert_eq!(r.len(), REPLY_OVERHEAD + app.len());
        assert_eq!(verify_server_hello(&S, &cr, &r), Ok(r.len()));
        let mut longer = r.clone();
        longer.extend_from_slice(b"\x17\x03\x03\x00\x01x");
        assert_eq!(verify_server_hello(&S, &cr, &longer), Ok(r.len()));
        assert_eq!(
            verify_server_hello(&S2, &cr, &r),
            Err(ServerHelloError::BadHmac)
        );
        check_prefixes(&S, &cr, &r, r.len(), usize::from(cipher));
    }
});
