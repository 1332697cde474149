//! Fake TLS as a passive censor sees it (issue 15): what our answers to valid clients look
//! like next to the real site's, on loopback with the testkit's TLS site as the site.

mod common;

use mtproto_wire::tls::{build_client_hello, verify_server_hello};
use mtproxy_testkit::curve25519::is_valid_share;
use mtproxy_testkit::tls_site::{SiteOpts, TlsSite};
use rand::RngCore;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const S1: &str = "0123456789abcdef0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(30);

fn key(h: &str) -> [u8; 16] {
    hex::decode(h).unwrap().try_into().unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hello(len: usize) -> Vec<u8> {
    build_client_hello(
        &key(S1),
        Some("localhost"),
        now(),
        &mut |b: &mut [u8]| rand::thread_rng().fill_bytes(b),
        len,
    )
}

/// Sends a valid hello and reads our whole reply (checked as TDLib checks it).
async fn our_reply(proxy: std::net::SocketAddr, h: &[u8]) -> Vec<u8> {
    let random: [u8; 32] = h[11..43].try_into().unwrap();
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(h).await.unwrap();
    let mut reply = Vec::new();
    loop {
        let mut b = [0u8; 4096];
        let n = timeout(LIMIT, c.read(&mut b)).await.unwrap().unwrap();
        assert!(n > 0, "closed after {} bytes", reply.len());
        reply.extend_from_slice(&b[..n]);
        match verify_server_hello(&key(S1), &random, &reply) {
            Ok(used) => {
                reply.truncate(used);
                return reply;
            }
            Err(mtproto_wire::tls::ServerHelloError::Incomplete) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// The ServerHello's x25519 key share (our ServerHello is 127 bytes, extensions at 81).
fn key_share(reply: &[u8]) -> [u8; 32] {
    let at = if reply[81..83] == [0x00, 0x33] {
        89
    } else {
        95
    };
    reply[at..at + 32].try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_key_share_is_a_curve_point() {
    let site = TlsSite::start("127.0.0.1:0".parse().unwrap(), SiteOpts::default())
        .await
        .unwrap();
    let m = format!("127.0.0.1:{}", site.addr().port());
    let proxy = common::start(&["-S", S1, "-D", "localhost", "--mask-host", &m]);
    let mut shares = std::collections::HashSet::new();
    for i in 0..50 {
        let share = key_share(&our_reply(proxy.addr(), &hello(517)).await);
        assert!(is_valid_share(&share), "reply {i}: {}", hex::encode(share));
        shares.insert(share);
    }
    assert_eq!(shares.len(), 50, "a fresh key per handshake");
}
