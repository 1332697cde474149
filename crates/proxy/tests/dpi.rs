//! Fake TLS as a passive censor sees it (issue 15), on loopback with two real TLS stacks as
//! the site: the testkit's rustls site (one encrypted record) and OpenSSL's `s_server`
//! (four records; once with `-serverpref`, so that the site's cipher is not the client's).
//!
//! For 200 valid handshakes per site, our answer and the site's own answer to the very same
//! hello are compared: the key share is a curve point, the cipher and the extension order
//! are the site's, and our single encrypted record is as long as the site's whole flight
//! within the site's own spread (the documented jitter: no jitter is added to it). Masked
//! connections get the site's bytes unchanged (a recording relay sits before the site).

mod common;

use mtproto_wire::tls::client::reorder_tls13_suites;
use mtproto_wire::tls::{build_client_hello, parse_flight, verify_server_hello, Flight};
use mtproxy_testkit::curve25519::is_valid_share;
use mtproxy_testkit::openssl_site::{OpensslOpts, OpensslSite};
use mtproxy_testkit::site_flight::exchange;
use mtproxy_testkit::tap::Tap;
use mtproxy_testkit::tls_site::{raw_exchange, SiteOpts, TlsSite};
use rand::RngCore;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const S1: &str = "0123456789abcdef0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(30);
/// Silence that ends a site's answer on loopback.
const QUIET: Duration = Duration::from_millis(30);
/// How much two answers of these sites to the same hello differ: the DER encoding of an
/// ECDSA P-256 signature is 70 to 72 bytes, rarely less. We add no jitter of our own (our
/// lengths are lengths the site's flights had), so ours is within this of any one answer.
const SITE_SPREAD: usize = 4;

fn key(h: &str) -> [u8; 16] {
    hex::decode(h).unwrap().try_into().unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A valid 517-byte hello offering the TLS 1.3 suites in `order`.
fn hello(secret: &[u8; 16], order: [u16; 3]) -> Vec<u8> {
    let t = now();
    let mut h = build_client_hello(
        secret,
        Some("localhost"),
        t,
        &mut |b: &mut [u8]| rand::thread_rng().fill_bytes(b),
        517,
    );
    reorder_tls13_suites(&mut h, order, secret, t);
    h
}

const ORDERS: [[u16; 3]; 3] = [
    [0x1301, 0x1302, 0x1303],
    [0x1302, 0x1303, 0x1301],
    [0x1303, 0x1301, 0x1302],
];

/// Sends a valid hello and reads our whole reply (checked as TDLib checks it).
async fn our_reply(proxy: SocketAddr, h: &[u8]) -> Vec<u8> {
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
                assert_eq!(used, reply.len(), "exactly one flight");
                return reply;
            }
            Err(mtproto_wire::tls::ServerHelloError::Incomplete) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
}

fn key_share(f: &Flight) -> [u8; 32] {
    let (group, k) = f.hello.key_share.clone().unwrap();
    assert_eq!(group, 0x001d);
    k.try_into().unwrap()
}

async fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    timeout(LIMIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in\n{text}"))
}

/// The proxy in front of `tap` (which relays to the site), with the stats port.
fn proxy_for(tap: &Tap, extra: &[&str]) -> (common::Proxy, u16) {
    let m = tap.addr().to_string();
    let sp = common::free_port();
    let sps = sp.to_string();
    let mut args = vec![
        "-S",
        S1,
        "-D",
        "localhost",
        "--mask-host",
        &m,
        "-p",
        &sps,
        "--http-stats",
        "--dc-override",
        "2:127.0.0.1:1",
    ];
    args.extend_from_slice(extra);
    let proxy = common::start(&args);
    (proxy, sp)
}

/// The mirror test against the site at `site`: 200 handshakes compared with the site's
/// answers to the same hellos, then masked connections compared with the site's bytes.
async fn mirrors(site: SocketAddr, records: usize) {
    let tap = Tap::start(site).await.unwrap();
    let (proxy, sp) = proxy_for(&tap, &[]);
    assert!(
        proxy.wait_log("mirroring its first flight", LIMIT),
        "{}",
        proxy.log_text()
    );
    let m = metrics(sp).await;
    assert_eq!(metric(&m, "mtproxy_tls_site_mirrored"), 1.0);
    assert_eq!(
        metric(&m, "mtproxy_tls_site_flight_records"),
        records as f64
    );
    let min = metric(&m, "mtproxy_tls_site_flight_bytes{stat=\"min\"}") as usize;
    let max = metric(&m, "mtproxy_tls_site_flight_bytes{stat=\"max\"}") as usize;
    assert!(min <= max && max - min <= SITE_SPREAD, "{min}..{max}");

    for i in 0..200 {
        let h = hello(&key(S1), ORDERS[i % 3]);
        let ours = parse_flight(&our_reply(proxy.addr(), &h).await).unwrap();
        let theirs = exchange(site, &h, QUIET, LIMIT).await.unwrap();
        let theirs = parse_flight(&theirs).unwrap();
        assert!(
            is_valid_share(&key_share(&ours)),
            "{i}: key share off the curve"
        );
        assert_eq!(ours.records.len(), 1, "{i}: one encrypted record");
        assert_eq!(theirs.records.len(), records, "{i}: the site's records");
        assert_eq!(ours.hello.cipher, theirs.hello.cipher, "{i}: cipher");
        assert_eq!(
            ours.hello.extensions, theirs.hello.extensions,
            "{i}: extension order"
        );
        let (a, b) = (ours.total(), theirs.total());
        assert!(
            a.abs_diff(b) <= SITE_SPREAD,
            "{i}: our record {a} bytes, the site's flight {b}"
        );
    }

    // Masked connections: what the client gets is what the site sent, byte for byte.
    let base = tap.connections().len();
    let mut sent = Vec::new();
    for i in 0..12 {
        let bytes = if i % 4 == 3 {
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()
        } else {
            hello(&[i as u8; 16], ORDERS[0])
        };
        // Half-close after sending: the site answers, sees the end and closes; the client
        // reads everything until then.
        let got = raw_exchange(proxy.addr(), &bytes, 1 << 20, LIMIT)
            .await
            .unwrap();
        sent.push(got);
        // Wait until the site's side of the splice is over too.
        timeout(
            LIMIT,
            tap.wait_until(|c| c.len() > base + i && c[base + i].closed),
        )
        .await
        .unwrap();
    }
    let conns = tap.connections();
    for (i, got) in sent.iter().enumerate() {
        assert_eq!(
            *got,
            conns[base + i].from_site,
            "masked connection {i}: bytes changed"
        );
    }
    assert!(sent.iter().filter(|g| !g.is_empty()).count() >= 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrors_the_rustls_site() {
    let site = TlsSite::start("127.0.0.1:0".parse().unwrap(), SiteOpts::default())
        .await
        .unwrap();
    mirrors(site.addr(), 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrors_openssl_s_server_and_its_four_records() {
    let site = OpensslSite::start(OpensslOpts::default()).unwrap();
    mirrors(site.addr(), 4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrors_the_cipher_a_server_preference_site_picks() {
    let site = OpensslSite::start(OpensslOpts { server_pref: true }).unwrap();
    // The site picks AES-256-GCM whatever the client prefers; so must we.
    let h = hello(&key(S1), ORDERS[0]);
    let theirs = parse_flight(&exchange(site.addr(), &h, QUIET, LIMIT).await.unwrap()).unwrap();
    assert_eq!(theirs.hello.cipher, 0x1302);
    mirrors(site.addr(), 4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmirrorable_site_gets_one_warning_and_the_fallback() {
    // Nothing listens there: unreachable.
    let dead = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let tap = Tap::start(dead).await.unwrap();
    let (proxy, sp) = proxy_for(&tap, &[]);
    assert!(proxy.wait_log("cannot be mirrored", LIMIT));
    let log = proxy.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot be mirrored"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("Choose a -D domain"), "{}", lines[0]);
    let m = metrics(sp).await;
    assert_eq!(metric(&m, "mtproxy_tls_site_mirrored"), 0.0);
    assert_eq!(
        metric(&m, "mtproxy_tls_site_fallback{reason=\"unreachable\"}"),
        1.0
    );
    // The fallback looks like nginx with OpenSSL: supported_versions first, the client's
    // cipher, one record of 2499..3620 bytes.
    for order in ORDERS {
        let ours = parse_flight(&our_reply(proxy.addr(), &hello(&key(S1), order)).await).unwrap();
        assert_eq!(ours.hello.extensions, [0x002b, 0x0033]);
        assert_eq!(ours.hello.cipher, order[0]);
        assert!((2499..=3636).contains(&ours.total()), "{}", ours.total());
        assert!(is_valid_share(&key_share(&ours)));
    }
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
        let reply = our_reply(proxy.addr(), &hello(&key(S1), ORDERS[0])).await;
        let share = key_share(&parse_flight(&reply).unwrap());
        assert!(is_valid_share(&share), "reply {i}: {}", hex::encode(share));
        shares.insert(share);
    }
    assert_eq!(shares.len(), 50, "a fresh key per handshake");
}
