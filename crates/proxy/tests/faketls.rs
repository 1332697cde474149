//! Fake TLS, the client's view: real-client-shaped sessions through the proxy's TLS port,
//! in direct and middle-proxy mode, and Telethon with TelethonFakeTLS.

mod common;

use mtproxy_testkit::fake_me::{FakeMe, FakeMeConfig, MeEvent, Responder};
use mtproxy_testkit::tls_client::read_server_hello;
use mtproxy_testkit::tls_site::{SiteOpts, TlsSite};
use mtproxy_testkit::{parse_res_pq, req_pq_multi, Client, ClientOpts, FakeDc, Tag, MAX_FRAME};
use rand::RngCore;
use std::time::Duration;
use tokio::time::timeout;

const S1: &str = "0123456789abcdef0123456789abcdef";
const S2: &str = "fedcba9876543210fedcba9876543210";
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

fn is_echo(sent: &[u8], back: &[u8]) -> bool {
    back.len() >= sent.len() && back.len() - sent.len() <= 12 && back[..sent.len()] == *sent
}

async fn site() -> TlsSite {
    TlsSite::start("127.0.0.1:0".parse().unwrap(), SiteOpts::default())
        .await
        .unwrap()
}

/// A TLS stand-in site, a fake DC, and the proxy in fake-TLS direct mode pointing at both.
async fn tls_direct() -> (TlsSite, FakeDc, common::Proxy) {
    let site = site().await;
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let m = format!("127.0.0.1:{}", site.addr().port());
    let proxy = common::start(&[
        "-S",
        S1,
        "-D",
        "localhost",
        "--mask-host",
        &m,
        "--dc-override",
        &o,
    ]);
    (site, dc, proxy)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_sessions_round_trip_up_to_max_frame_in_direct_mode() {
    let site = site().await;
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let m = format!("127.0.0.1:{}", site.addr().port());
    let proxy = common::start(&[
        "-S",
        S1,
        "-S",
        S2,
        "-D",
        "localhost",
        "--mask-host",
        &m,
        "--dc-override",
        &o,
    ]);
    for (len, ccs, secret) in [(517, true, S1), (1024, false, S2), (1823, true, S2)] {
        let opts = ClientOpts::tls(key(secret), Some("localhost".into()))
            .hello_len(len)
            .send_ccs(ccs);
        let mut c = Client::connect(proxy.addr(), opts).await.unwrap();
        let (req, nonce) = req_pq_multi();
        c.send_packet(&req).await.unwrap();
        assert_eq!(
            parse_res_pq(&timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap()),
            Some(nonce)
        );
        for n in [56, 5000, 100_000, MAX_FRAME - 16] {
            let p = payload(n);
            c.send_packet(&p).await.unwrap();
            let back = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
            assert!(is_echo(&p, &back), "hello {len}: {n} bytes");
        }
    }
    // Only the 20 start-up probes reached the site: no session was masked.
    assert_eq!(site.connection_count(), 20);
    assert!(dc.connections().iter().all(|c| c.tag == Some(Tag::Padded)));
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_without_sni_is_accepted_by_default_and_masked_with_require_sni() {
    let (site, dc, proxy) = tls_direct().await;
    let mut c = Client::connect(proxy.addr(), ClientOpts::tls(key(S1), None))
        .await
        .unwrap();
    let p = payload(64);
    c.send_packet(&p).await.unwrap();
    assert!(is_echo(
        &p,
        &timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap()
    ));

    // A second proxy on the same site and DC, with C's SNI rule.
    let m = format!("127.0.0.1:{}", site.addr().port());
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let strict = common::start(&[
        "-S",
        S1,
        "-D",
        "localhost",
        "--mask-host",
        &m,
        "--dc-override",
        &o,
        "--tls-require-sni",
    ]);
    let before = site.connection_count();
    let (mut s, hello) = Client::tls_hello_only(strict.addr(), &ClientOpts::tls(key(S1), None))
        .await
        .unwrap();
    assert!(
        read_server_hello(&mut s, &key(S1), &hello).await.is_err(),
        "C refuses hellos without SNI"
    );
    timeout(LIMIT, site.wait_connections(before + 1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn inner_tags_other_than_padded_are_refused() {
    let (_site, dc, proxy) = tls_direct().await;
    let opts = ClientOpts::tls(key(S1), Some("localhost".into())).tag(Tag::Intermediate);
    let mut c = Client::connect(proxy.addr(), opts).await.unwrap();
    let _ = c.send_packet(&payload(64)).await;
    assert!(timeout(LIMIT, c.recv_packet()).await.unwrap().is_err());
    assert!(
        dc.connections().is_empty(),
        "an intermediate-tag session reached the DC"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_sessions_in_me_mode_carry_the_ad_tag() {
    let site = site().await;
    let dir = std::env::temp_dir().join(format!("mtproxy-tls-me-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut secret = vec![0u8; 128];
    rand::thread_rng().fill_bytes(&mut secret);
    std::fs::write(dir.join("proxy-secret"), &secret).unwrap();
    let me = FakeMe::start(FakeMeConfig::new(secret).responder(Responder::Echo))
        .await
        .unwrap();
    std::fs::write(
        dir.join("proxy-multi.conf"),
        format!("proxy_for 2 {};\ndefault 2;\n", me.addr()),
    )
    .unwrap();
    let m = format!("127.0.0.1:{}", site.addr().port());
    let pwd = dir.join("proxy-secret").to_string_lossy().into_owned();
    let cfg = dir.join("proxy-multi.conf").to_string_lossy().into_owned();
    let tag = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let proxy = common::start(&[
        "-v",
        "-S",
        S1,
        "-D",
        "localhost",
        "--mask-host",
        &m,
        "--aes-pwd",
        &pwd,
        "-P",
        tag,
        &cfg,
    ]);
    let needle = format!("Connected to RPC Middle-End {}", me.addr());
    assert!(
        proxy.wait_log_count(&needle, 4, LIMIT),
        "{}",
        proxy.log_text()
    );
    let mut c = Client::connect(
        proxy.addr(),
        ClientOpts::tls(key(S1), Some("localhost".into())),
    )
    .await
    .unwrap();
    for n in [56, 70_000] {
        let p = payload(n);
        c.send_packet(&p).await.unwrap();
        assert!(is_echo(
            &p,
            &timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap()
        ));
    }
    let tags: Vec<_> = me
        .events()
        .into_iter()
        .filter_map(|e| {
            if let MeEvent::ProxyReq {
                proxy_tag, flags, ..
            } = e
            {
                Some((proxy_tag, flags))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(tags.len(), 2);
    assert!(tags
        .iter()
        .all(|(t, f)| t.map(hex::encode).as_deref() == Some(tag) && *f == 0x2002_1008));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the Telethon venv: run through scripts/test.sh"]
async fn telethon_fake_tls_gets_res_pq() {
    let site = site().await;
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let m = format!("127.0.0.1:{}", site.addr().port());
    let overrides: Vec<String> = (1..=5)
        .map(|d| format!("{d}:127.0.0.1:{}", dc.addr().port()))
        .collect();
    let mut args = vec!["-S", S1, "-D", "localhost", "--mask-host", &m];
    for o in &overrides {
        args.extend_from_slice(&["--dc-override", o]);
    }
    let proxy = common::start(&args);
    let python = std::env::var("MTPROXY_TEST_PYTHON")
        .expect("MTPROXY_TEST_PYTHON (scripts/test.sh sets it)");
    let script = format!(
        "{}/../../tests/telethon/check_proxy.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let secret = format!("ee{S1}{}", hex::encode("localhost"));
    let out = std::process::Command::new(python)
        .args([
            &script,
            "--proxy-host",
            "127.0.0.1",
            "--proxy-port",
            &proxy.port.to_string(),
            "--secret",
            &secret,
        ])
        .args(["--mode", "faketls", "--dc", "2", "--timeout", "20"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("telethon faketls: ok"),
        "{text}\nproxy log:\n{}",
        proxy.log_text()
    );
    assert_eq!(site.connection_count(), 20, "TelethonFakeTLS was masked");
    assert_eq!(dc.connections().len(), 1);
}
