//! Proxy → ME RPC messages: `rpc::ops::parse_proxy_req` (RPC_PROXY_REQ with its extra
//! section) and `parse_proxy_op` (also CLOSE_CONN, PING, PONG). Input: one frame payload.
//! Invariants: the ranges tile the payload; the addresses encode back to the same bytes;
//! a request `build_proxy_req` can express is rebuilt byte for byte; the other ops too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::obfs2::Tag;
use mtproto_wire::rpc::ops::{self, ProxyOp, ReqParams, PROXY_REQ_HEADER_LEN};
use mtproto_wire::rpc::TL_PROXY_TAG;
use std::net::{IpAddr, SocketAddr};

fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&i32::from(addr.port()).to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let len = data.len();
    match ops::parse_proxy_req(data) {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(r) => {
            assert!(len >= PROXY_REQ_HEADER_LEN);
            assert_eq!(r.flags.to_le_bytes(), data[4..8]);
            assert_eq!(r.conn_id.to_le_bytes(), data[8..16]);
            let mut addrs = Vec::new();
            push_addr(&mut addrs, r.client);
            push_addr(&mut addrs, r.local);
            assert_eq!(addrs, data[16..56]);
            assert_eq!(r.extra.end, r.packet.start);
            assert_eq!(r.packet.end, len);
            if r.flags & 0xc == 0 {
                assert_eq!(r.extra, 56..56);
                assert!(r.proxy_tag.is_none() && r.http_query_info.is_none());
            } else {
                assert_eq!(r.extra.start, 60);
                assert!(r.extra.len().is_multiple_of(4));
                assert_eq!((r.extra.len() as i32).to_le_bytes(), data[56..60]);
            }
            if let Some(h) = &r.http_query_info {
                for x in [&h.origin, &h.referer, &h.user_agent] {
                    assert!(x.start >= r.extra.start && x.end <= r.extra.end && x.start <= x.end);
                }
            }
            let _ = (r.quick_ack(), r.unencrypted(), r.transport());
            // Rebuild what build_proxy_req can express: a short-form tag item or no extra.
            let canonical_extra = match r.proxy_tag {
                None => r.extra.is_empty(),
                Some(_) => {
                    r.extra.len() == 28 - 4
                        && r.unknown_extra.is_none()
                        && r.http_query_info.is_none()
                        && data[60..64] == TL_PROXY_TAG.to_le_bytes()
                        && data[64] == 16
                        && data[81..84] == [0, 0, 0]
                }
            };
            if canonical_extra {
                for t in Tag::ALL {
                    for bits in 0..8u8 {
                        let p = ReqParams {
                            transport: t,
                            quick_ack: bits & 1 != 0,
                            unencrypted: bits & 2 != 0,
                            proxy_tag: r.proxy_tag,
                            pad_flag: bits & 4 != 0,
                        };
                        if p.flags() == r.flags {
                            let mut out = Vec::new();
                            ops::build_proxy_req(
                                &mut out,
                                &p,
                                r.conn_id,
                                r.client,
                                r.local,
                                &data[r.packet.clone()],
                            );
                            assert_eq!(out, data, "{p:?}");
                        }
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    match ops::parse_proxy_op(data) {
        ProxyOp::ProxyReq(r) => {
            assert_eq!(ops::parse_proxy_req(data), Ok(r));
            return;
        }
        ProxyOp::BadProxyReq(e) => {
            assert_eq!(ops::parse_proxy_req(data), Err(e));
            return;
        }
        ProxyOp::CloseConn { conn_id } => ops::build_close_conn(&mut out, conn_id),
        ProxyOp::Ping { id } => ops::build_ping(&mut out, id),
        ProxyOp::Pong { id } => ops::build_pong(&mut out, id),
        ProxyOp::Ignored { op, len: l } => {
            assert_eq!(l, len);
            assert!(len < 4 && op == 0 || op.to_le_bytes() == data[..4]);
            return;
        }
        ProxyOp::Unknown(op) => {
            assert_eq!(op.to_le_bytes(), data[..4]);
            return;
        }
    }
    assert_eq!(out, data);
});
