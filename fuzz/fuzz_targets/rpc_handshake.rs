//! RPC_HANDSHAKE and RPC_HANDSHAKE_ERROR: `Handshake::parse`, `check_me_handshake`,
//! `check_proxy_handshake`, `parse_handshake_error`.
//!
//! Input: selector (1) ‖ our process id (12) ‖ payload. selector bit 0: we offered CRC32C;
//! bit 1: the ME side checks the peer pid; bit 2: the ME answers with CRC32C.
//! Invariants: what parses encodes back to the payload; the checks accept only what their
//! rules allow; the ME's answer to a parsed handshake passes the proxy's check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::rpc::handshake::{
    build_handshake_error, check_me_handshake, check_proxy_handshake, me_handshake_answer,
    parse_handshake_error, Handshake, HandshakeError, ProcessId, HANDSHAKE_LEN,
};
use mtproto_wire::rpc::{RPC_HANDSHAKE, RPC_HANDSHAKE_ERROR};
use mtproxy_fuzz::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let sel = c.u8();
    let pid_bytes: [u8; 12] = c.array();
    let payload = c.rest();
    let our = ProcessId::from_bytes(&pid_bytes);
    assert_eq!(our.to_bytes(), pid_bytes);
    let offered = sel & 1 != 0;

    let parsed = Handshake::parse(payload);
    match parsed {
        Ok(h) => {
            assert_eq!(payload.len(), HANDSHAKE_LEN);
            assert_eq!(h.to_bytes()[..], payload[..]);
            let mut v = Vec::new();
            h.encode(&mut v);
            assert_eq!(v, payload);
            // The ME's answer passes the proxy's check, with the pid it echoes.
            let ans = me_handshake_answer(&h, our, sel & 4 != 0);
            let m = check_me_handshake(&ans.to_bytes(), &h.sender_pid, true).expect("own answer");
            assert_eq!(m.crc32c, sel & 4 != 0);
            assert_eq!(m.me_pid, our);
        }
        Err(HandshakeError::PeerError { code }) => {
            assert!(payload.len() >= 8);
            assert_eq!(payload[..4], RPC_HANDSHAKE_ERROR.to_le_bytes());
            assert_eq!(code.to_le_bytes(), payload[4..8]);
        }
        Err(HandshakeError::NotHandshake { op }) => {
            assert_eq!(op.to_le_bytes(), payload[..4]);
            assert_ne!(op, RPC_HANDSHAKE);
        }
        Err(HandshakeError::BadLength { len }) => assert_eq!(len, payload.len()),
        Err(e) => panic!("parse gave a check error: {e:?}"),
    }
    match check_me_handshake(payload, &our, offered) {
        Ok(m) => {
            let h = parsed.expect("check accepted what parse refused");
            assert!(our.matches(&h.peer_pid));
            assert_eq!(h.flags & 0xff, 0);
            assert_eq!(m.crc32c, h.crc32c());
            assert!(offered || !m.crc32c);
            assert_eq!(m.me_pid, h.sender_pid);
        }
        Err(e) => {
            let _ = (e.c_code(), e.sends_error_packet(), e.to_string());
        }
    }
    let me = (sel & 2 != 0).then_some(&our);
    match check_proxy_handshake(payload, me) {
        Ok(h) => {
            assert_eq!(parsed, Ok(h));
            assert_eq!(h.flags & 0xff, 0);
            if let Some(me) = me {
                assert!(me.matches(&h.peer_pid));
            }
        }
        Err(e) => {
            let _ = (e.c_code(), e.sends_error_packet(), e.to_string());
        }
    }
    if let Some((code, pid)) = parse_handshake_error(payload) {
        let mut v = Vec::new();
        build_handshake_error(&mut v, code, &pid);
        assert_eq!(v, payload);
    }
});
