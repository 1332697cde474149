//! End to end, direct mode: the real `mtproto-proxy` binary between the testkit reference
//! client and fake DCs, all on loopback (`--address 127.0.0.1`, `--dc-override` to the fakes).

mod common;

use mtproxy_testkit::{
    parse_res_pq, req_pq_multi, Client, ClientOpts, DcConfig, FakeDc, Tag, MAX_FRAME,
};
use rand::RngCore;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const S1: &str = "0123456789abcdef0123456789abcdef";
const S2: &str = "fedcba9876543210fedcba9876543210";
const LIMIT: Duration = Duration::from_secs(30);

fn key(hex_s: &str) -> [u8; 16] {
    hex::decode(hex_s).unwrap().try_into().unwrap()
}

async fn fake_dc() -> FakeDc {
    FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn ovr(dc: i32, a: SocketAddr) -> String {
    format!("{dc}:{}:{}", a.ip(), a.port())
}

/// Proxy with both secrets and DC 2 pointing at `dc`, plus `extra` arguments.
fn proxy_to(dc: &FakeDc, extra: &[&str]) -> common::Proxy {
    let o = ovr(2, dc.addr());
    let mut args = vec!["-S", S1, "-S", S2, "--dc-override", &o];
    args.extend_from_slice(extra);
    common::start(&args)
}

fn random_payload(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    // Keep it clear of the unencrypted req_pq constructors the fake DC answers specially.
    let k = n.min(8);
    v[..k].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8][..k]);
    v
}

/// Whether `back` is the echo of `sent`. A padded client adds 0..15 padding bytes and the
/// receiver keeps `len & !3` of the frame (spec §4.3), so up to 12 of them come back.
fn is_echo(tag: Tag, sent: &[u8], back: &[u8]) -> bool {
    let extra = if tag == Tag::Padded { 12 } else { 0 };
    back.len() >= sent.len() && back.len() - sent.len() <= extra && back[..sent.len()] == *sent
}

async fn round_trip(c: &mut Client, payload: &[u8]) {
    c.send_packet(payload).await.unwrap();
    let back = timeout(LIMIT, c.recv_packet())
        .await
        .expect("reply in time")
        .unwrap();
    assert!(
        is_echo(c.opts().tag, payload, &back),
        "echo differs: sent {} bytes, got {}",
        payload.len(),
        back.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_transport_and_secret_round_trips_up_to_max_frame() {
    let dc = fake_dc().await;
    let proxy = proxy_to(&dc, &[]);
    let mut n = 0;
    for tag in Tag::ALL {
        for secret in [S1, S2] {
            let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(secret), tag))
                .await
                .unwrap();
            // req_pq_multi gets a resPQ with our nonce, as from a real DC.
            let (req, nonce) = req_pq_multi();
            c.send_packet(&req).await.unwrap();
            let res = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
            assert_eq!(parse_res_pq(&res), Some(nonce), "{tag:?} {secret}");
            // Padded frames carry up to 15 padding bytes inside the size limit.
            let max = if tag == Tag::Padded {
                MAX_FRAME - 16
            } else {
                MAX_FRAME
            };
            for size in [4, 1000, 65536, max] {
                round_trip(&mut c, &random_payload(size)).await;
            }
            n += 1;
        }
    }
    let conns = dc.connections();
    assert_eq!(conns.len(), n);
    // The DC saw our own header with the client's transport tag and DC id.
    let tags: Vec<_> = conns.iter().map(|c| c.tag).collect();
    for tag in Tag::ALL {
        assert_eq!(tags.iter().filter(|t| **t == Some(tag)).count(), 2);
    }
    assert!(conns
        .iter()
        .all(|c| c.dc == Some(2) && c.frame_error.is_none()));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_fast_mode_round_trips_too() {
    let dc = fake_dc().await;
    let proxy = proxy_to(&dc, &["--no-fast-mode"]);
    for tag in Tag::ALL {
        let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), tag))
            .await
            .unwrap();
        for size in [4, 4096, 300_000] {
            round_trip(&mut c, &random_payload(size)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_clients_twenty_round_trips_each() {
    let dc = fake_dc().await;
    let proxy = proxy_to(&dc, &[]);
    let addr = proxy.addr();
    let mut tasks = Vec::new();
    for i in 0..200usize {
        tasks.push(tokio::spawn(async move {
            let tag = Tag::ALL[i % 3];
            let secret = if i % 2 == 0 { S1 } else { S2 };
            let mut c = Client::connect(addr, ClientOpts::new(key(secret), tag)).await?;
            for r in 0..20usize {
                let p = random_payload(4 * (1 + (i * 7 + r * 13) % 600));
                c.send_packet(&p).await?;
                let back = timeout(LIMIT, c.recv_packet())
                    .await
                    .map_err(std::io::Error::other)??;
                if !is_echo(tag, &p, &back) {
                    return Err(std::io::Error::other(format!(
                        "client {i} round {r}: echo differs"
                    )));
                }
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(dc.connections().len(), 200);
}

/// Reads until EOF; returns bytes received and when the close came.
async fn read_to_close(s: &mut TcpStream) -> (usize, Instant) {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match timeout(LIMIT, s.read(&mut buf))
            .await
            .expect("closed within the limit")
        {
            Ok(0) | Err(_) => return (total, Instant::now()),
            Ok(n) => total += n,
        }
    }
}

/// Bad input of several kinds: no byte back, the connection is held and closed at the
/// handshake deadline (not before), and nothing reaches a DC.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_silence_then_close_at_deadline() {
    let dc = fake_dc().await;
    let proxy = proxy_to(&dc, &["--handshake-timeout", "1.5"]);
    let deadline = Duration::from_millis(1500);

    // A wrong secret, followed by a well-formed packet.
    let wrong = [0x42u8; 16];
    let started = Instant::now();
    let c = Client::connect(proxy.addr(), ClientOpts::new(wrong, Tag::Intermediate))
        .await
        .unwrap();
    let mut s = c.into_inner();
    s.write_all(&[0x11; 100]).await.unwrap();
    let (got, at) = read_to_close(&mut s).await;
    assert_eq!(got, 0, "wrong secret must get no reply");
    assert!(
        at - started >= deadline,
        "closed after {:?}, before the deadline",
        at - started
    );

    // A truncated header (40 of 64 bytes) and then nothing.
    let started = Instant::now();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(&[0x33; 40]).await.unwrap();
    let (got, at) = read_to_close(&mut s).await;
    assert_eq!(got, 0);
    assert!(at - started >= deadline);

    // Garbage, more than a header's worth, still being sent after the header.
    let started = Instant::now();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut junk = vec![0u8; 4096];
    rand::thread_rng().fill_bytes(&mut junk);
    s.write_all(&junk).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (got, at) = read_to_close(&mut s).await;
    assert_eq!(got, 0);
    assert!(at - started >= deadline);

    assert!(
        dc.connections().is_empty(),
        "bad input reached a DC: {:?}",
        dc.connections()
    );
    // A good client still works afterwards.
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Abridged))
        .await
        .unwrap();
    round_trip(&mut c, &random_payload(64)).await;
}

/// Telethon sends the header and then waits before its first packet: the handshake
/// deadline ends with the header, not with the first packet.
#[tokio::test(flavor = "multi_thread")]
async fn header_then_three_seconds_of_silence_then_traffic() {
    let dc = fake_dc().await;
    let proxy = proxy_to(&dc, &["--handshake-timeout", "2"]);
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Intermediate))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (req, nonce) = req_pq_multi();
    c.send_packet(&req).await.unwrap();
    let res = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
    assert_eq!(parse_res_pq(&res), Some(nonce));
}

#[tokio::test(flavor = "multi_thread")]
async fn header_split_across_writes() {
    let dc = fake_dc().await;
    let proxy = proxy_to(&dc, &[]);
    for first in [1, 9, 56, 63] {
        let opts = ClientOpts::new(key(S2), Tag::Padded);
        let mut c = Client::from_header_split(proxy.addr(), opts, first, Duration::from_millis(50))
            .await
            .unwrap();
        round_trip(&mut c, &random_payload(128)).await;
    }
}

/// A client that sends its header and first frame in one write: the proxy reads both at
/// once and the session must pass on every byte after the header, whether the frame fits in
/// that first read or goes on past it.
#[tokio::test(flavor = "multi_thread")]
async fn header_and_first_frame_in_one_write() {
    let dc = fake_dc().await;
    let proxy = proxy_to(&dc, &[]);
    for tag in Tag::ALL {
        for n in [16, 900, 5000, 200_000] {
            let opts = ClientOpts::new(key(S1), tag).header_with_first_frame(true);
            let mut c = Client::connect(proxy.addr(), opts).await.unwrap();
            round_trip(&mut c, &random_payload(n)).await;
            round_trip(&mut c, &random_payload(120)).await;
        }
    }
}

/// `--dc-override` per DC id; media ids use their base DC; unknown ids fall back to DC 2.
#[tokio::test(flavor = "multi_thread")]
async fn dc_override_media_and_unknown_fallback() {
    let dc2 = fake_dc().await;
    let dc4 = fake_dc().await;
    let o2 = ovr(2, dc2.addr());
    let o4 = ovr(4, dc4.addr());
    let proxy = common::start(&["-S", S1, "--dc-override", &o2, "--dc-override", &o4]);
    for dc in [4i16, -4, 99, 0, -2] {
        let mut c = Client::connect(
            proxy.addr(),
            ClientOpts::new(key(S1), Tag::Intermediate).dc(dc),
        )
        .await
        .unwrap();
        round_trip(&mut c, &random_payload(32)).await;
    }
    let seen4: Vec<_> = dc4.connections().iter().map(|c| c.dc).collect();
    let seen2: Vec<_> = dc2.connections().iter().map(|c| c.dc).collect();
    assert_eq!(seen4, vec![Some(4), Some(-4)]);
    assert_eq!(seen2, vec![Some(99), Some(0), Some(-2)]);
}

/// The client's half-close reaches the DC; the DC's replies still reach the client, and
/// then its close does too.
#[tokio::test(flavor = "multi_thread")]
async fn half_close_both_ways() {
    let dc = fake_dc().await;
    let proxy = proxy_to(&dc, &[]);
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Abridged))
        .await
        .unwrap();
    let p = random_payload(2000);
    c.send_packet(&p).await.unwrap();
    c.shutdown_write().await.unwrap();
    let back = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
    assert!(is_echo(Tag::Abridged, &p, &back));
    timeout(LIMIT, c.wait_closed()).await.unwrap().unwrap();
    let conns = timeout(LIMIT, dc.wait_closed(1)).await.unwrap();
    assert_eq!(conns[0].packets, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_session_is_closed_on_both_sides() {
    let dc = fake_dc().await;
    let proxy = proxy_to(&dc, &["--idle-timeout", "1"]);
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Intermediate))
        .await
        .unwrap();
    round_trip(&mut c, &random_payload(16)).await;
    let t0 = Instant::now();
    timeout(LIMIT, c.wait_closed()).await.unwrap().unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(900));
    timeout(LIMIT, dc.wait_closed(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_dc_closes_the_client() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = ovr(2, dead);
    let proxy = common::start(&["-S", S1, "--dc-override", &o]);
    let c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Intermediate))
        .await
        .unwrap();
    let mut s = c.into_inner();
    let (got, _) = read_to_close(&mut s).await;
    assert_eq!(got, 0);
    assert!(
        proxy.wait_log("cannot reach dc 2", LIMIT),
        "{}",
        proxy.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_dc_keeps_session_until_client_leaves() {
    let dc = FakeDc::start_with("127.0.0.1:0".parse().unwrap(), DcConfig::echo().silent())
        .await
        .unwrap();
    let proxy = proxy_to(&dc, &[]);
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Abridged))
        .await
        .unwrap();
    c.send_packet(&random_payload(40)).await.unwrap();
    timeout(LIMIT, dc.wait_packets(1)).await.unwrap();
    drop(c);
    // The client's close is passed on to the DC.
    timeout(LIMIT, dc.wait_closed(1)).await.unwrap();
}

/// The smallest writes there are: header and frame arrive one byte per write.
#[tokio::test(flavor = "multi_thread")]
async fn one_byte_writes() {
    use mtproto_wire::transport::encode_prefix;
    let dc = fake_dc().await;
    let proxy = proxy_to(&dc, &[]);
    for tag in Tag::ALL {
        let opts = ClientOpts::new(key(S1), tag);
        let mut c = Client::from_header_split(proxy.addr(), opts, 1, Duration::from_millis(1))
            .await
            .unwrap();
        let p = random_payload(44);
        let mut prefix = [0u8; 4];
        let n = encode_prefix(tag, p.len(), 0, false, &mut prefix);
        let mut frame = prefix[..n].to_vec();
        frame.extend_from_slice(&p);
        for b in frame.chunks(1) {
            c.send_encrypted_raw(b).await.unwrap();
        }
        let back = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
        assert_eq!(back, p, "{tag:?}");
    }
}

/// A DC reached over IPv6 (loopback ::1).
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_dc_override() {
    let dc = FakeDc::start("[::1]:0".parse().unwrap()).await.unwrap();
    let o = format!("2:[::1]:{}", dc.addr().port());
    let proxy = common::start(&["-S", S1, "--dc-override", &o]);
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Intermediate))
        .await
        .unwrap();
    round_trip(&mut c, &random_payload(100)).await;
    assert!(dc.connections()[0].peer.is_ipv6());
}
