//! The TLS site stand-in and its probes, with no proxy in between: they must agree with each
//! other (and look like a real TLS 1.3 site) before they are used to judge a proxy's masking.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use mtproxy_testkit::tls_site::{
    build_client_hello, https_get, probe_server_hello, raw_exchange, raw_exchange_detailed,
    x25519_public_key, RawEnd, SiteOpts, TlsSite,
};

/// Upper bound for any single step; only hit when something is broken.
const LIMIT: Duration = Duration::from_secs(60);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn site() -> TlsSite {
    TlsSite::start(loopback(), SiteOpts::default())
        .await
        .expect("start site")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_get_sees_token_and_cert() {
    let site = site().await;
    let res = within(https_get(site.addr(), "localhost", &site.cert_der()))
        .await
        .expect("https_get");
    assert_eq!(res.cert_der, site.cert_der());
    let text = String::from_utf8_lossy(&res.response).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert!(text.contains(&site.token()), "{text}");
    assert_eq!(res.body(), site.body());

    let conns = within(site.wait_closed(1)).await;
    let c = &conns[0];
    assert!(c.handshake_done && c.responded, "{c:?}");
    assert_eq!(c.sni.as_deref(), Some("localhost"));
    assert_eq!(c.version, Some(0x0304));
    assert_eq!(c.cipher, Some(0x1301));
    assert_eq!(c.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let req = c.request.as_deref().unwrap();
    assert!(req.starts_with(b"GET / HTTP/1.1\r\nHost: localhost\r\n"));
    // The raw bytes start with the client's ClientHello record.
    assert_eq!(&c.received[..3], &[0x16, 3, 1]);
    site.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_get_with_extra_name_and_any_cert() {
    let site = TlsSite::start(loopback(), SiteOpts::default().name("example.test"))
        .await
        .unwrap();
    assert_eq!(site.names(), ["localhost", "example.test"]);
    // Empty trust: any certificate is accepted and reported.
    let res = within(https_get(site.addr(), "example.test", &[]))
        .await
        .unwrap();
    assert_eq!(res.cert_der, site.cert_der());
    assert_eq!(res.body(), site.body());
    let conns = within(site.wait_served(1)).await;
    assert_eq!(conns[0].sni.as_deref(), Some("example.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_get_rejects_other_cert() {
    let a = site().await;
    let b = site().await;
    let err = within(https_get(a.addr(), "localhost", &b.cert_der()))
        .await
        .expect_err("a's certificate is not b's");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_differ() {
    let a = site().await;
    let b = site().await;
    assert_ne!(a.token(), b.token());
    assert_ne!(a.cert_der(), b.cert_der());
    let ra = within(https_get(a.addr(), "localhost", &[])).await.unwrap();
    let rb = within(https_get(b.addr(), "localhost", &[])).await.unwrap();
    assert!(String::from_utf8_lossy(&ra.response).contains(&a.token()));
    assert!(String::from_utf8_lossy(&rb.response).contains(&b.token()));
    assert!(!String::from_utf8_lossy(&ra.response).contains(&b.token()));
    assert_eq!(ra.cert_der, a.cert_der());
    assert_eq!(rb.cert_der, b.cert_der());
}

#[test]
fn client_hello_layout() {
    let key = x25519_public_key();
    assert_ne!(key, [0u8; 32]);
    assert_ne!(key, x25519_public_key());
    let hello = build_client_hello("localhost", &[7; 32], &[9; 32], &key);
    assert_eq!(hello.len(), 517);
    assert_eq!(&hello[..9], &[0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc]);
    assert_eq!(&hello[11..43], &[7; 32]);
    assert_eq!(hello[43], 0x20);
    assert_eq!(&hello[44..76], &[9; 32]);
    assert_eq!(&hello[76..78], &[0, 0x22]);
    assert_eq!(&hello[80..82], &[0x13, 0x01]);
    // 17 suites, then null compression, then the extensions length to the end.
    assert_eq!(&hello[112..114], &[1, 0]);
    assert_eq!(
        u16::from_be_bytes([hello[114], hello[115]]) as usize,
        517 - 116
    );
    let key_at = hello.windows(32).position(|w| w == key).unwrap();
    assert_eq!(&hello[key_at - 4..key_at], &[0, 0x1d, 0, 32]);
    let host_at = hello.windows(9).position(|w| w == b"localhost").unwrap();
    assert_eq!(&hello[host_at - 9..host_at], &[0, 0, 0, 14, 0, 12, 0, 0, 9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_hello_shape() {
    let site = site().await;
    let mut lens = Vec::new();
    for _ in 0..20 {
        let shape = within(probe_server_hello(site.addr(), "localhost"))
            .await
            .expect("probe");
        assert_eq!(shape.cipher, 0x1301);
        assert_eq!(shape.extensions, [0x0033, 0x002b]);
        assert!(!shape.ext_order_reversed);
        assert!(shape.first_app_data_len > 0);
        // ServerHello record, then CCS, then the application-data record, nothing else.
        let raw = &shape.raw;
        assert_eq!(&raw[..3], &[0x16, 3, 3]);
        let sh_len = u16::from_be_bytes([raw[3], raw[4]]) as usize;
        assert_eq!(raw[5], 2);
        assert_eq!(&raw[5 + 71..5 + 74], &[0x13, 0x01, 0x00]);
        let ccs = 5 + sh_len;
        assert_eq!(&raw[ccs..ccs + 6], &[0x14, 3, 3, 0, 1, 1]);
        let app = ccs + 6;
        assert_eq!(&raw[app..app + 3], &[0x17, 3, 3]);
        let app_len = u16::from_be_bytes([raw[app + 3], raw[app + 4]]) as usize;
        assert_eq!(app_len, shape.first_app_data_len);
        assert_eq!(raw.len(), app + 5 + app_len);
        lens.push(shape.first_app_data_len);
    }
    let (min, max) = (*lens.iter().min().unwrap(), *lens.iter().max().unwrap());
    println!("first application-data record lengths over 20 probes: {lens:?}");
    // Everything in the flight is fixed but the CertificateVerify's ECDSA signature, which is
    // DER: 70..72 bytes, 69 or less with probability 2^-9 per integer. So the length moves by
    // 2 (rarely 3) bytes; 4 would need both integers short at once.
    assert!(max - min <= 4, "{lens:?}");

    // The probe leaves without finishing the handshake; the site sees each one.
    let conns = within(site.wait_closed(20)).await;
    assert!(conns.iter().all(|c| !c.handshake_done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_probes_like_the_proxy() {
    // The C proxy opens 20 probes at once (§5.2 step 2).
    let site = site().await;
    let addr = site.addr();
    let probes: Vec<_> = (0..20)
        .map(|_| tokio::spawn(probe_server_hello(addr, "localhost")))
        .collect();
    for p in probes {
        let shape = within(p).await.unwrap().expect("probe");
        assert_eq!(shape.cipher, 0x1301);
        assert_eq!(shape.extensions, [0x0033, 0x002b]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_fails_handshake_without_hanging() {
    let site = site().await;
    let req = b"GET / HTTP/1.0\r\n\r\n";
    let got = within(raw_exchange_detailed(
        site.addr(),
        req,
        64 * 1024,
        Duration::from_secs(10),
    ))
    .await
    .expect("raw exchange");
    println!(
        "plain HTTP on the TLS port got {:?} after {} bytes: {}",
        got.end,
        got.data.len(),
        hex_string(&got.data)
    );
    assert_ne!(got.end, RawEnd::Timeout, "the site must close");
    // Whatever rustls sends is at most a fatal alert record.
    if !got.data.is_empty() {
        assert_eq!(got.data[0], 0x15, "{:?}", got.data);
    }
    let conns = within(site.wait_closed(1)).await;
    assert!(conns[0].handshake_error.is_some(), "{:?}", conns[0]);
    assert!(!conns[0].handshake_done);
    assert_eq!(conns[0].received, req);

    // The plain wrapper returns the same bytes.
    let again = within(raw_exchange(
        site.addr(),
        req,
        64 * 1024,
        Duration::from_secs(10),
    ))
    .await
    .unwrap();
    assert_eq!(again, got.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_silence() {
    let site = site().await;
    // Random garbage: closed like plain HTTP.
    let junk: Vec<u8> = (0..200u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let got = within(raw_exchange_detailed(
        site.addr(),
        &junk,
        64 * 1024,
        Duration::from_secs(10),
    ))
    .await
    .unwrap();
    assert_ne!(got.end, RawEnd::Timeout, "{got:?}");

    // A client that only half-closes without sending: rustls sees EOF mid-handshake.
    let got = within(raw_exchange_detailed(
        site.addr(),
        &[],
        1024,
        Duration::from_secs(10),
    ))
    .await
    .unwrap();
    assert_ne!(got.end, RawEnd::Timeout, "{got:?}");
    within(site.wait_closed(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback() {
    let Ok(site) = TlsSite::start("[::1]:0".parse().unwrap(), SiteOpts::default()).await else {
        // No IPv6 loopback on this machine.
        return;
    };
    let res = within(https_get(site.addr(), "localhost", &site.cert_der()))
        .await
        .unwrap();
    assert_eq!(res.body(), site.body());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_non_loopback() {
    let err = TlsSite::start("0.0.0.0:0".parse().unwrap(), SiteOpts::default())
        .await
        .err()
        .expect("0.0.0.0 is not loopback");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
