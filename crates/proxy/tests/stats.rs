//! `/stats` and `/metrics` of the real binary (`-p PORT --http-stats`), on loopback.

mod common;

use mtproxy_testkit::{Client, ClientOpts, FakeDc, Tag};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const S1: &str = "0123456789abcdef0123456789abcdef";
const S2: &str = "fedcba9876543210fedcba9876543210";

async fn get(port: u16, path: &str, from: Option<&str>) -> String {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = match from {
        None => TcpStream::connect(addr).await.unwrap(),
        Some(src) => {
            let sock = TcpSocket::new_v4().unwrap();
            sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
            sock.connect(addr).await.unwrap()
        }
    };
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn value<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('\t')))
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_keys_follow_c_and_counters_move() {
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let sp = common::free_port().to_string();
    let proxy = common::start(&[
        "-S",
        S1,
        "-S",
        S2,
        "--dc-override",
        &o,
        "-p",
        &sp,
        "--http-stats",
    ]);
    let port: u16 = sp.parse().unwrap();

    let resp = get(port, "/stats", None).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/spec/c-stats-sample.txt"
    ))
    .expect("shared/spec beside the repo");
    let keys = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#') && l.contains('\t'))
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect()
    };
    let ours = keys(body(&resp));
    // The C block ends at its first `version` line; the fork's example follows it.
    let c_part = &sample[..sample.find("\nversion\t").expect("version line") + 1];
    let mut c_keys = keys(c_part);
    c_keys.push("version".into());
    assert_eq!(&ours[..c_keys.len()], &c_keys[..], "C's keys in C's order");
    assert_eq!(
        &ours[c_keys.len()..],
        [
            "secret_1_active_connections",
            "secret_1_active_auth_keys",
            "secret_2_active_connections",
            "secret_2_active_auth_keys"
        ]
    );

    // Traffic moves the counters: a session with secret 2 counts one client IP under it.
    let key2: [u8; 16] = hex::decode(S2).unwrap().try_into().unwrap();
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key2, Tag::Intermediate))
        .await
        .unwrap();
    c.send_packet(&[9u8; 64]).await.unwrap();
    c.recv_packet().await.unwrap();
    let b = get(port, "/stats", None).await;
    assert_eq!(
        value(body(&b), "secret_2_active_connections"),
        Some("1"),
        "{b}"
    );
    assert_eq!(value(body(&b), "secret_1_active_connections"), Some("0"));
    let m = get(port, "/metrics", None).await;
    assert!(
        m.contains("mtproxy_client_connections_total{transport=\"intermediate\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("mtproxy_relayed_bytes_total{direction=\"up\"}"),
        "{m}"
    );
    assert!(!m.contains(S2), "a secret leaked into /metrics");
    drop(c);

    // C answers only 127.0.0.1 and only /stats.
    assert!(get(port, "/other", None).await.starts_with("HTTP/1.1 404"));
    assert!(get(port, "/stats", Some("127.0.0.2"))
        .await
        .starts_with("HTTP/1.1 404"));
}

#[test]
fn http_stats_without_port_is_fatal_like_c() {
    let out = std::process::Command::new(common::BIN)
        .args(["-H", "1", "--http-stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port isn't defined"));
}
