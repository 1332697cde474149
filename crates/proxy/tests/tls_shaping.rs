//! How our fake-TLS traffic is cut (issue 15): dynamic record sizing after the handshake
//! (small records first, 16 KiB after a burst, small again after an idle second; fixed 16
//! KiB with `--tls-fixed-records`), `--tls-split-hello` (the reply in several TCP
//! segments, seen by a packet capture on `lo`) and `--client-mss` (the MSS the client's
//! socket ends up with). Loopback only; the capture needs root (scripts/test.sh runs the
//! suite as root in its own network namespace).

mod common;

use mtproto_wire::tls::record_sizing::{LARGE, MEDIUM, SMALL};
use mtproxy_testkit::capture::Capture;
use mtproxy_testkit::tap::Tap;
use mtproxy_testkit::tls_site::{SiteOpts, TlsSite};
use mtproxy_testkit::{Client, ClientOpts, FakeDc};
use rand::RngCore;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;

const S1: &str = "0123456789abcdef0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(30);

fn key(h: &str) -> [u8; 16] {
    hex::decode(h).unwrap().try_into().unwrap()
}

fn payload(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v[0] = 1;
    v
}

struct Setup {
    _site: TlsSite,
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
    Setup {
        proxy: common::start(&args),
        _site: site,
        _dc: dc,
    }
}

/// The lengths of the application-data records the proxy sent after its ServerHello
/// flight (whose own record is skipped).
fn data_records(from_proxy: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    let mut app = 0;
    while at + 5 <= from_proxy.len() {
        let n = usize::from(u16::from_be_bytes([from_proxy[at + 3], from_proxy[at + 4]]));
        if from_proxy[at] == 0x17 {
            app += 1;
            if app > 1 {
                out.push(n);
            }
        }
        at += 5 + n;
    }
    out
}

/// Sends `n` bytes in one packet through a tap in front of the proxy and waits for the
/// echo; returns the client and the tap.
async fn echo(c: &mut Client, n: usize) {
    let p = payload(n);
    c.send_packet(&p).await.unwrap();
    let back = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
    assert_eq!(back[..n], p[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn records_start_small_grow_and_shrink_after_an_idle_second() {
    let s = setup(&[]).await;
    let tap = Tap::start(s.proxy.addr()).await.unwrap();
    let opts = ClientOpts::tls(key(S1), Some("localhost".into()));
    let stream = TcpStream::connect(tap.addr()).await.unwrap();
    let mut c = Client::over_stream(stream, opts).await.unwrap();
    echo(&mut c, 600_000).await;
    let first = data_records(&tap.connections()[0].from_site);
    assert!(first.len() > 80, "{} records", first.len());
    assert!(
        first[..40].iter().all(|n| *n <= SMALL),
        "{:?}",
        &first[..40]
    );
    assert!(
        first[40..80].iter().all(|n| *n <= MEDIUM),
        "{:?}",
        &first[40..80]
    );
    assert!(first.contains(&LARGE), "never 16 KiB: {first:?}");
    assert!(first[..80].iter().all(|n| *n < LARGE));
    // The idle gap is the behaviour under test, not a stand-in for synchronisation.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    echo(&mut c, 100_000).await;
    let all = data_records(&tap.connections()[0].from_site);
    let second = &all[first.len()..];
    assert!(!second.is_empty());
    assert!(
        second[0] <= SMALL,
        "after an idle second: {:?}",
        &second[..4]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fixed_records_are_16k_from_the_start() {
    let s = setup(&["--tls-fixed-records"]).await;
    let tap = Tap::start(s.proxy.addr()).await.unwrap();
    let opts = ClientOpts::tls(key(S1), Some("localhost".into()));
    let stream = TcpStream::connect(tap.addr()).await.unwrap();
    let mut c = Client::over_stream(stream, opts).await.unwrap();
    echo(&mut c, 200_000).await;
    let r = data_records(&tap.connections()[0].from_site);
    assert!(r.iter().filter(|n| **n == LARGE).count() >= 10, "{r:?}");
    assert!(r.iter().all(|n| *n <= LARGE));
}

/// The reply's TCP payloads from the proxy's port to the client's, once they add up.
async fn reply_segments(extra: &[&str]) -> Vec<usize> {
    let s = setup(extra).await;
    let cap = Capture::start().expect("packet capture (run as root)");
    let stream = TcpStream::connect(s.proxy.addr()).await.unwrap();
    let local = stream.local_addr().unwrap().port();
    let opts = ClientOpts::tls(key(S1), Some("localhost".into()));
    let c = Client::over_stream(stream, opts).await.unwrap();
    let reply = c.tls_server_hello().unwrap().len();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let p = cap.payloads(s.proxy.port, local);
        if p.iter().sum::<usize>() >= reply {
            return p;
        }
        assert!(tokio::time::Instant::now() < deadline, "captured {p:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn split_hello_goes_out_in_four_segments() {
    let split = reply_segments(&["--tls-split-hello"]).await;
    assert_eq!(split[..3], [24, 103, 6], "{split:?}");
    let whole = reply_segments(&[]).await;
    assert!(whole[0] > 133, "{whole:?}");
}

/// The MSS the kernel uses on a socket (TCP_MAXSEG).
fn mss(s: &TcpStream) -> u32 {
    socket2::SockRef::from(s).mss().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_mss_clamps_what_the_client_sends_and_gets() {
    let s = setup(&["--client-mss", "600"]).await;
    let c = TcpStream::connect(s.proxy.addr()).await.unwrap();
    // The proxy's SYN-ACK announced 600: the client's segments carry at most that (less
    // the TCP timestamp option).
    assert!(mss(&c) <= 600, "{}", mss(&c));
    let plain = setup(&[]).await;
    let d = TcpStream::connect(plain.proxy.addr()).await.unwrap();
    assert!(mss(&d) > 10_000, "loopback default {}", mss(&d));
    // Out-of-range values are refused at start-up.
    let out = std::process::Command::new(common::BIN)
        .args(["-S", S1, "-D", "localhost", "--client-mss", "40"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--client-mss"));
}
