//! ME → proxy RPC messages: `rpc::ops::parse_me_op` (PROXY_ANS, SIMPLE_ACK, CLOSE_EXT,
//! PING, PONG). Input: one frame payload. Every message it recognises, built again with the
//! matching `build_*`, gives the payload back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::rpc::ops::{self, MeOp};
use mtproto_wire::rpc::{RPC_CLOSE_EXT, RPC_PING, RPC_PONG, RPC_PROXY_ANS, RPC_SIMPLE_ACK};

fuzz_target!(|data: &[u8]| {
    let op = ops::parse_me_op(data);
    let mut out = Vec::new();
    match op {
        MeOp::ProxyAns {
            flags,
            conn_id,
            data: r,
        } => {
            assert_eq!(r, 16..data.len());
            ops::build_proxy_ans(&mut out, flags, conn_id, &data[r]);
        }
        MeOp::SimpleAck { conn_id, confirm } => ops::build_simple_ack(&mut out, conn_id, confirm),
        MeOp::CloseExt { conn_id } => ops::build_close_ext(&mut out, conn_id),
        MeOp::Ping { id } => ops::build_ping(&mut out, id),
        MeOp::Pong { id } => ops::build_pong(&mut out, id),
        MeOp::Ignored { op, len } => {
            assert_eq!(len, data.len());
            if len < 4 {
                assert_eq!(op, 0);
            } else {
                assert_eq!(op.to_le_bytes(), data[..4]);
                assert!([
                    RPC_PROXY_ANS,
                    RPC_SIMPLE_ACK,
                    RPC_CLOSE_EXT,
                    RPC_PING,
                    RPC_PONG
                ]
                .contains(&op));
            }
            return;
        }
        MeOp::Unknown(op) => {
            assert_eq!(op.to_le_bytes(), data[..4]);
            assert!(![
                RPC_PROXY_ANS,
                RPC_SIMPLE_ACK,
                RPC_CLOSE_EXT,
                RPC_PING,
                RPC_PONG
            ]
            .contains(&op));
            return;
        }
    }
    assert_eq!(out, data);
});
