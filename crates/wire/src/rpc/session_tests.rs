//! Whole-connection tests: a "proxy" and an "ME" built only from the pieces in this module
//! talk to each other in memory (nonces, keys, encrypted handshake with CRC32, the switch to
//! CRC32C, PROXY_REQ / SIMPLE_ACK / PROXY_ANS / PING / PONG with padding words between
//! frames), with the bytes delivered in arbitrary pieces. Plus byte-exact vectors of the
//! encrypted stream cross-checked against the Python fake ME (itself verified against C).

use std::net::{Ipv4Addr, SocketAddr};

use proptest::prelude::*;

use super::frame::{leading_padding, PAD_WORD};
use super::handshake::{
    check_me_handshake, check_proxy_handshake, me_handshake_answer, proxy_handshake,
};
use super::kdf::{derive_keys, KdfInput, Role};
use super::nonce::{check_me_nonce, check_proxy_nonce, key_select, NoncePacket};
use super::ops::{
    build_ping, build_pong, build_proxy_ans, build_proxy_req, build_simple_ack, parse_me_op,
    parse_proxy_op, MeOp, ProxyOp, ReqParams,
};
use super::*;
use crate::obfs2::Tag;

/// One end of the link: framing, optional CBC, and the input buffers.
struct End {
    enc: FrameEncoder,
    dec: FrameDecoder,
    cbc_out: Option<AesCbcEncryptor>,
    cbc_in: Option<AesCbcDecryptor>,
    /// Received bytes not yet decrypted (a partial block).
    raw: Vec<u8>,
    /// Decrypted (or plaintext) bytes not yet framed.
    plain: Vec<u8>,
    /// Extra padding words to put before each frame, cycled.
    pads: Vec<usize>,
    pad_at: usize,
}

impl End {
    fn new(pads: Vec<usize>) -> End {
        End {
            enc: FrameEncoder::new(),
            dec: FrameDecoder::new(),
            cbc_out: None,
            cbc_in: None,
            raw: Vec::new(),
            plain: Vec::new(),
            pads,
            pad_at: 0,
        }
    }

    fn install(&mut self, keys: &RpcKeys) {
        assert!(
            self.raw.is_empty() && self.plain.is_empty(),
            "§1.4: nothing buffered"
        );
        let (e, d) = keys.ciphers();
        self.cbc_out = Some(e);
        self.cbc_in = Some(d);
    }

    fn switch_crc(&mut self, kind: CrcKind) {
        self.enc.switch_crc(kind);
        self.dec.switch_crc(kind);
    }

    /// Frames the payloads as one flush: padding words between frames (only once
    /// encrypted, as a real ME does), padded to blocks and encrypted.
    fn flush(&mut self, payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            if self.cbc_out.is_some() && !self.pads.is_empty() {
                let n = self.pads[self.pad_at % self.pads.len()];
                self.pad_at += 1;
                for _ in 0..n {
                    out.extend_from_slice(&PAD_WORD);
                }
            }
            self.enc.encode(p, &mut out);
        }
        if let Some(c) = &mut self.cbc_out {
            pad_to_block(&mut out, 0);
            assert_eq!(c.encrypt(&mut out), out.len());
        }
        out
    }

    /// Takes received bytes; returns every complete frame's payload.
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, RpcError> {
        match &mut self.cbc_in {
            Some(c) => {
                self.raw.extend_from_slice(bytes);
                let n = c.decrypt(&mut self.raw);
                self.plain.extend(self.raw.drain(..n));
            }
            None => self.plain.extend_from_slice(bytes),
        }
        let mut got = Vec::new();
        while let Some((n, r)) = self.dec.decode(&self.plain)? {
            got.push(self.plain[r].to_vec());
            self.plain.drain(..n);
        }
        // Trailing padding words are not consumed by the decoder; drop them here.
        let pad = leading_padding(&self.plain);
        self.plain.drain(..pad);
        Ok(got)
    }

    /// Delivers `bytes` in pieces of the given sizes (cycled; 0 is read as 1).
    fn feed_split(&mut self, bytes: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < bytes.len() {
            let n = sizes
                .get(i % sizes.len().max(1))
                .copied()
                .unwrap_or(1)
                .max(1);
            let end = at.saturating_add(n).min(bytes.len());
            got.extend(self.feed(&bytes[at..end]).expect("valid stream"));
            at = end;
            i += 1;
        }
        got
    }
}

const SECRET: [u8; 64] = [0x5c; 64];
const TS: i32 = 1_700_000_000;

fn addrs() -> (SocketAddr, SocketAddr) {
    (
        "127.0.0.1:8888".parse().unwrap(),
        "127.0.0.1:40001".parse().unwrap(),
    )
}

/// Runs a whole connection; `sizes` drives how bytes are cut on delivery, `pads` how many
/// padding words go before each encrypted frame, `crc32c` whether the ME turns it on.
fn run_session(sizes: &[usize], pads: Vec<usize>, crc32c: bool) {
    let (me_addr, proxy_addr) = addrs();
    let proxy_pid = ProcessId::new(Ipv4Addr::LOCALHOST, ProcessId::NO_PORT, 4_000_123, TS - 100);
    let me_pid = ProcessId::new(Ipv4Addr::LOCALHOST, me_addr.port(), 99, TS - 5000);
    let mut proxy = End::new(pads.clone());
    let mut me = End::new(pads.iter().rev().copied().collect());

    // 1. Proxy nonce, plaintext.
    let clt_nonce = NoncePacket::aes(&SECRET, TS, [0xc1; 16]);
    let bytes = proxy.flush(&[clt_nonce.to_bytes().to_vec()]);
    assert_eq!(bytes.len(), 44);
    let got = me.feed_split(&bytes, sizes);
    assert_eq!(got.len(), 1);
    let seen = check_proxy_nonce(&got[0], key_select(&SECRET), TS + 3).unwrap();
    assert_eq!(seen, clt_nonce);

    // 2. ME nonce, plaintext; the ME derives its keys from the proxy's timestamp.
    let srv_nonce = NoncePacket::aes(&SECRET, TS + 3, [0x5e; 16]);
    let bytes = me.flush(&[srv_nonce.to_bytes().to_vec()]);
    let input = KdfInput {
        nonce_srv: srv_nonce.nonce,
        nonce_clt: seen.nonce,
        client_ts: seen.crypto_ts,
        server: me_addr,
        client: proxy_addr,
        secret: &SECRET,
    };
    me.install(&derive_keys(&input, Role::Server));
    let got = proxy.feed_split(&bytes, sizes);
    assert_eq!(got.len(), 1);
    let theirs = check_me_nonce(&got[0], key_select(&SECRET), TS).unwrap();
    let input = KdfInput {
        nonce_srv: theirs.nonce,
        nonce_clt: clt_nonce.nonce,
        client_ts: TS,
        ..input
    };
    proxy.install(&derive_keys(&input, Role::Client));

    // 3. Handshakes, encrypted, CRC32.
    let hs = proxy_handshake(proxy_pid, me_addr);
    let bytes = proxy.flush(&[hs.to_bytes().to_vec()]);
    assert_eq!(bytes.len() % 16, 0);
    let got = me.feed_split(&bytes, sizes);
    assert_eq!(got.len(), 1);
    let phs = check_proxy_handshake(&got[0], Some(&me_pid)).unwrap();
    let use_c = crc32c && phs.crc32c();
    let ans = me_handshake_answer(&phs, me_pid, use_c);
    let bytes = me.flush(&[ans.to_bytes().to_vec()]);
    if use_c {
        me.switch_crc(CrcKind::Crc32c);
    }
    let got = proxy.feed_split(&bytes, sizes);
    assert_eq!(got.len(), 1);
    let r = check_me_handshake(&got[0], &proxy_pid, true).unwrap();
    assert_eq!(r.crc32c, use_c);
    assert_eq!(r.me_pid, me_pid);
    if r.crc32c {
        proxy.switch_crc(CrcKind::Crc32c);
    }

    // 4. Traffic: two requests in one flush, a ping from the ME, answers.
    let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let packets: Vec<Vec<u8>> = vec![(0..40u8).collect(), (0..64u8).rev().collect()];
    let mut reqs = Vec::new();
    for (i, pk) in packets.iter().enumerate() {
        let mut p = ReqParams::new(Tag::Abridged);
        p.quick_ack = i == 1;
        p.proxy_tag = Some([0xab; 16]);
        let mut out = Vec::new();
        build_proxy_req(&mut out, &p, 1000 + i as i64, client, local, pk);
        reqs.push(out);
    }
    let bytes = proxy.flush(&reqs);
    let got = me.feed_split(&bytes, sizes);
    assert_eq!(got.len(), 2);
    let mut answers = Vec::new();
    for (i, g) in got.iter().enumerate() {
        let ProxyOp::ProxyReq(req) = parse_proxy_op(g) else {
            panic!("not a PROXY_REQ: {g:02x?}");
        };
        assert_eq!(req.conn_id, 1000 + i as i64);
        assert_eq!((req.client, req.local), (client, local));
        assert_eq!(req.proxy_tag, Some([0xab; 16]));
        assert_eq!(&g[req.packet.clone()], &packets[i][..]);
        if req.quick_ack() {
            let mut a = Vec::new();
            build_simple_ack(&mut a, req.conn_id, 0x8000_0000 | i as u32);
            answers.push(a);
        }
        let mut a = Vec::new();
        build_proxy_ans(&mut a, 0, req.conn_id, &g[req.packet]);
        answers.push(a);
    }
    let mut ping = Vec::new();
    build_ping(&mut ping, 77);
    answers.push(ping);
    let bytes = me.flush(&answers);
    let got = proxy.feed_split(&bytes, sizes);
    let ops: Vec<MeOp> = got.iter().map(|g| parse_me_op(g)).collect();
    assert_eq!(ops.len(), 4);
    assert!(matches!(ops[0], MeOp::ProxyAns { conn_id: 1000, .. }));
    assert_eq!(
        ops[1],
        MeOp::SimpleAck {
            conn_id: 1001,
            confirm: 0x8000_0001
        }
    );
    match &ops[2] {
        MeOp::ProxyAns {
            conn_id: 1001,
            data,
            ..
        } => assert_eq!(&got[2][data.clone()], &packets[1][..]),
        other => panic!("{other:?}"),
    }
    assert_eq!(ops[3], MeOp::Ping { id: 77 });
    let mut pong = Vec::new();
    build_pong(&mut pong, 77);
    let bytes = proxy.flush(&[pong]);
    let got = me.feed_split(&bytes, sizes);
    assert_eq!(parse_proxy_op(&got[0]), ProxyOp::Pong { id: 77 });
    assert!(proxy.plain.is_empty() && proxy.raw.is_empty());
    assert!(me.plain.is_empty() && me.raw.is_empty());
}

#[test]
fn session_whole_buffers() {
    run_session(&[usize::MAX], vec![0], true);
    run_session(&[usize::MAX], vec![0], false);
}

#[test]
fn session_one_byte_at_a_time() {
    run_session(&[1], vec![1, 0, 3, 2], true);
    run_session(&[1], vec![2], false);
}

#[test]
fn corrupted_ciphertext_is_a_crc_error() {
    // Two ends with matching keys; flip one ciphertext bit.
    let keys = derive_keys(
        &KdfInput {
            nonce_srv: [1; 16],
            nonce_clt: [2; 16],
            client_ts: TS,
            server: addrs().0,
            client: addrs().1,
            secret: &SECRET,
        },
        Role::Client,
    );
    let mut a = End::new(vec![]);
    a.install(&keys);
    let mut b = End::new(vec![]);
    b.install(&RpcKeys {
        write: keys.read.clone(),
        read: keys.write.clone(),
    });
    let mut bytes = a.flush(&[vec![9; 32]]);
    bytes[20] ^= 0x40;
    assert!(matches!(b.feed(&bytes), Err(RpcError::CrcMismatch { .. })));
}

/// The same stream as the Python fake ME computes it (mtproto_common.rpc_derive_keys and a
/// CBC encryptor): the §1.6 keys, the proxy's handshake (seq −1, CRC32, one padding word),
/// then a PING (seq 0, CRC32C, two padding words) continuing the CBC chain.
#[test]
fn encrypted_stream_vector() {
    let secret: Vec<u8> = (0..32).collect();
    let keys = derive_keys(
        &KdfInput {
            nonce_srv: [0x11; 16],
            nonce_clt: [0x22; 16],
            client_ts: 1_600_000_000,
            server: "149.154.175.50:8888".parse().unwrap(),
            client: "203.0.113.7:40000".parse().unwrap(),
            secret: &secret,
        },
        Role::Client,
    );
    let mut enc = FrameEncoder::new();
    let mut out = Vec::new();
    enc.encode(&[0; 32], &mut Vec::new()); // the nonce went out as seq −2
    let pid = ProcessId::new(Ipv4Addr::new(10, 1, 2, 3), 8888, 0x3456, 1_700_000_000);
    let hs = proxy_handshake(pid, "149.154.175.50:8888".parse().unwrap());
    enc.encode(&hs.to_bytes(), &mut out);
    pad_to_block(&mut out, 0);
    assert_eq!(out.len(), 48);
    let (mut cbc, _) = keys.ciphers();
    cbc.encrypt(&mut out);
    assert_eq!(
        hex::encode(&out),
        "e2d639caf566772b497e733c993105da629f0e2b22fdc849c6163ebcf6c15ba35dabd4683faab81b911222883ab2d253"
    );
    enc.switch_crc(CrcKind::Crc32c);
    let mut ping = Vec::new();
    build_ping(&mut ping, 0x1122_3344_5566_7788);
    let mut out = Vec::new();
    enc.encode(&ping, &mut out);
    pad_to_block(&mut out, 0);
    assert_eq!(out.len(), 32);
    cbc.encrypt(&mut out);
    assert_eq!(
        hex::encode(&out),
        "0cec6462d9bd87c9d189160094e4032e09a06416bf7af773f1b942372a19fc55"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn session_in_random_pieces(sizes in proptest::collection::vec(1usize..40, 1..12), pads in proptest::collection::vec(0usize..4, 1..6), crc32c: bool) {
        run_session(&sizes, pads, crc32c);
    }
}
