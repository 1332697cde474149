//! Fake TLS, the censor's view: everything that is not a fresh, authenticated ClientHello
//! from a client with the secret is spliced to the real site (a loopback TLS stand-in), so
//! a probe sees the site's certificate and answers. Also the handshake shape for hellos of
//! the sizes real clients send.

mod common;

use mtproto_wire::tls::{build_client_hello, verify_server_hello};
use mtproxy_testkit::tls_site::{https_get, raw_exchange, SiteOpts, TlsSite};
use mtproxy_testkit::{Client, ClientOpts, FakeDc, Tag};
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

struct Setup {
    site: TlsSite,
    _dc: FakeDc,
    proxy: common::Proxy,
}

async fn setup(extra: &[&str]) -> Setup {
    let site = TlsSite::start("127.0.0.1:0".parse().unwrap(), SiteOpts::default())
        .await
        .unwrap();
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let m = format!("127.0.0.1:{}", site.addr().port());
    let mut args = vec![
        "-S",
        S1,
        "-D",
        "localhost",
        "--mask-host",
        &m,
        "--dc-override",
        &o,
    ];
    args.extend_from_slice(extra);
    let proxy = common::start(&args);
    Setup {
        site,
        _dc: dc,
        proxy,
    }
}

fn hello(secret: &[u8; 16], domain: Option<&str>, t: i64, len: usize) -> Vec<u8> {
    build_client_hello(
        secret,
        domain,
        t,
        &mut |b: &mut [u8]| rand::thread_rng().fill_bytes(b),
        len,
    )
}

/// Sends `hello`, returns whatever comes back within the limit (until EOF or 64 KiB).
async fn send_hello(addr: std::net::SocketAddr, hello: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(hello).await.unwrap();
    let mut out = vec![0u8; 65536];
    let mut got = 0;
    // Our fake reply is 138 + ~2.5 KB; the real site's first flight is similar. Read what
    // arrives in the first exchange.
    while got < 128 {
        match timeout(LIMIT, s.read(&mut out[got..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got += n,
        }
    }
    out.truncate(got);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_probe_learns_the_site_shape() {
    let s = setup(&[]).await;
    assert!(
        s.proxy.wait_log("TLS domain localhost", LIMIT),
        "{}",
        s.proxy.log_text()
    );
    let log = s.proxy.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("answered with one record of "))
        .unwrap_or_else(|| panic!("{log}"))
        .to_string();
    let n: usize = line
        .split("one record of ")
        .nth(1)
        .unwrap()
        .split("..")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The stand-in's encrypted flight is one record of about 520 bytes (certificate +
    // signature).
    assert!((400..700).contains(&n), "{line}");
    assert!(s.site.connection_count() >= 20, "C's 20 probes");
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_hellos_of_real_client_sizes_get_our_server_hello() {
    let s = setup(&[]).await;
    for len in [517, 1024, 1823] {
        let h = hello(&key(S1), Some("localhost"), now(), len);
        let random: [u8; 32] = h[11..43].try_into().unwrap();
        let mut c = TcpStream::connect(s.proxy.addr()).await.unwrap();
        c.write_all(&h).await.unwrap();
        let mut reply = Vec::new();
        let used = loop {
            let mut b = [0u8; 4096];
            let n = timeout(LIMIT, c.read(&mut b)).await.unwrap().unwrap();
            assert!(n > 0, "{len}: closed after {} bytes", reply.len());
            reply.extend_from_slice(&b[..n]);
            match verify_server_hello(&key(S1), &random, &reply) {
                Ok(used) => break used,
                Err(mtproto_wire::tls::ServerHelloError::Incomplete) => {}
                Err(e) => panic!("{len}: {e:?}"),
            }
        };
        assert_eq!(used, reply.len(), "{len}: exactly one flight");
    }
    // Nothing reached the site but the start-up probes.
    assert_eq!(s.site.connection_count(), 20);
}

/// A browser-like client (rustls) sees the site's certificate and page through our port.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_tls_client_lands_on_the_site() {
    let s = setup(&[]).await;
    let direct = https_get(s.site.addr(), "localhost", &[]).await.unwrap();
    let via = https_get(s.proxy.addr(), "localhost", &[]).await.unwrap();
    assert_eq!(via.cert_der, s.site.cert_der());
    assert_eq!(via.cert_der, direct.cert_der);
    assert!(String::from_utf8_lossy(&via.response).contains(&s.site.token()));
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_checks_are_masked_not_answered() {
    let s = setup(&[]).await;
    let base = s.site.connection_count();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "wrong secret",
            hello(&[7u8; 16], Some("localhost"), now(), 517),
        ),
        (
            "unknown SNI",
            hello(&key(S1), Some("other.example"), now(), 517),
        ),
        (
            "stale timestamp",
            hello(&key(S1), Some("localhost"), now() - 3600, 517),
        ),
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
    ];
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let _ = send_hello(s.proxy.addr(), bytes).await;
        // The site got exactly the bytes the client sent, as the first bytes of a connection.
        let conns = timeout(LIMIT, s.site.wait_connections(base + i + 1))
            .await
            .unwrap();
        let c = &conns[base + i];
        assert!(
            c.received.starts_with(bytes),
            "{name}: site saw {:?}",
            &c.received[..c.received.len().min(16)]
        );
    }
    // Plain HTTP: the same answer as from the site directly.
    let direct = raw_exchange(s.site.addr(), b"GET / HTTP/1.0\r\n\r\n", 4096, LIMIT)
        .await
        .unwrap();
    let via = raw_exchange(s.proxy.addr(), b"GET / HTTP/1.0\r\n\r\n", 4096, LIMIT)
        .await
        .unwrap();
    assert_eq!(via, direct);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_obfuscated2_on_a_tls_port_is_masked() {
    let s = setup(&[]).await;
    let base = s.site.connection_count();
    let c = Client::connect(s.proxy.addr(), ClientOpts::new(key(S1), Tag::Padded))
        .await
        .unwrap();
    let header = c.header();
    let mut raw = c.into_inner();
    let mut buf = [0u8; 64];
    // The site answers the non-TLS bytes as it would (an alert or a close), never us.
    let _ = timeout(LIMIT, raw.read(&mut buf)).await;
    let conns = timeout(LIMIT, s.site.wait_connections(base + 1))
        .await
        .unwrap();
    assert!(conns[base].received.starts_with(&header[..9]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_hello_is_masked() {
    let s = setup(&[]).await;
    let h = hello(&key(S1), Some("localhost"), now(), 517);
    let random: [u8; 32] = h[11..43].try_into().unwrap();
    let first = send_hello(s.proxy.addr(), &h).await;
    assert!(verify_server_hello(&key(S1), &random, &first).is_ok() || first.len() >= 133);
    let base = s.site.connection_count();
    let second = send_hello(s.proxy.addr(), &h).await;
    assert!(
        verify_server_hello(&key(S1), &random, &second).is_err(),
        "a replay got our ServerHello"
    );
    let conns = timeout(LIMIT, s.site.wait_connections(base + 1))
        .await
        .unwrap();
    assert!(conns[base].received.starts_with(&h));
}

/// A flood of the same hello: every copy after the first is masked, and the proxy's memory
/// stays flat (the replay cache holds one entry).
#[tokio::test(flavor = "multi_thread")]
async fn replay_flood_is_masked_with_bounded_memory() {
    replay_flood(2000).await;
}

/// The figure: 100 000 copies (about a minute on loopback). Run by scripts/test.sh.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "long: run with --include-ignored (scripts/test.sh does)"]
async fn replay_flood_of_100k_is_masked_with_bounded_memory() {
    replay_flood(100_000).await;
}

async fn replay_flood(n: usize) {
    let s = setup(&[]).await;
    let h = hello(&key(S1), Some("localhost"), now(), 517);
    let _ = send_hello(s.proxy.addr(), &h).await;
    let rss = |pid: u32| -> u64 {
        let t = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        t.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let pid = s.proxy.child.id();
    let base = s.site.connection_count();
    let before = rss(pid);
    let addr = s.proxy.addr();
    let h = std::sync::Arc::new(h);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / 8 {
                let mut c = TcpStream::connect(addr).await.unwrap();
                c.write_all(&h).await.unwrap();
                c.shutdown().await.unwrap();
                let mut sink = Vec::new();
                let _ = timeout(LIMIT, c.read_to_end(&mut sink)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every replay reached the site; none got an answer from us.
    timeout(LIMIT, s.site.wait_connections(base + n))
        .await
        .unwrap();
    let after = rss(pid);
    println!("replay flood of {n}: proxy RSS {before} KiB before, {after} KiB after");
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB over {n} replays"
    );
}
