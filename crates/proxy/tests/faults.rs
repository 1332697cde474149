//! Fault injection: the upstream or a client misbehaves; the affected session ends cleanly,
//! every other session keeps working (checked with live traffic alongside), and the
//! counters say what happened. Loopback only.

mod common;

use mtproxy_testkit::fake_me::{FakeMe, FakeMeConfig, Responder};
use mtproxy_testkit::{Client, ClientOpts, FakeDc, Tag};
use rand::RngCore;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

const S1: &str = "0123456789abcdef0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(30);

fn key() -> [u8; 16] {
    hex::decode(S1).unwrap().try_into().unwrap()
}

fn payload(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v[0] = 1;
    v
}

async fn echo(c: &mut Client) -> std::io::Result<()> {
    let p = payload(64);
    c.send_packet(&p).await?;
    let back = timeout(LIMIT, c.recv_packet())
        .await
        .map_err(std::io::Error::other)??;
    if back[..p.len()] != p[..] {
        return Err(std::io::Error::other("echo differs"));
    }
    Ok(())
}

async fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        })
        .unwrap_or(0)
}

async fn wait_metric(port: u16, series: &str, at_least: u64) -> u64 {
    let end = Instant::now() + LIMIT;
    loop {
        let v = metric(&metrics(port).await, series);
        if v >= at_least || Instant::now() > end {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Direct mode: one DC dies mid-stream. Its client is closed; a client of another DC keeps
/// going.
#[tokio::test(flavor = "multi_thread")]
async fn dc_killed_mid_stream() {
    let victim_dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let other_dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o2 = format!("2:127.0.0.1:{}", victim_dc.addr().port());
    let o4 = format!("4:127.0.0.1:{}", other_dc.addr().port());
    let proxy = common::start(&["-S", S1, "--dc-override", &o2, "--dc-override", &o4]);
    let mut victim = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
        .await
        .unwrap();
    let mut bystander = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Abridged).dc(4))
        .await
        .unwrap();
    echo(&mut victim).await.unwrap();
    echo(&mut bystander).await.unwrap();
    victim_dc.shutdown().await;
    timeout(LIMIT, victim.wait_closed()).await.unwrap().unwrap();
    for _ in 0..20 {
        echo(&mut bystander).await.unwrap();
    }
}

/// A DC that resets connections right after the header.
#[tokio::test(flavor = "multi_thread")]
async fn dc_resets() {
    let rst = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rst_addr = rst.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = rst.accept().await {
            let mut s = s;
            let mut hdr = [0u8; 64];
            let _ = s.read_exact(&mut hdr).await;
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    let good = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o2 = format!("2:{rst_addr}");
    let o4 = format!("4:127.0.0.1:{}", good.addr().port());
    let proxy = common::start(&["-S", S1, "--dc-override", &o2, "--dc-override", &o4]);
    let mut bystander = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Padded).dc(4))
        .await
        .unwrap();
    for _ in 0..5 {
        let mut victim = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
            .await
            .unwrap();
        let _ = victim.send_packet(&payload(64)).await;
        timeout(LIMIT, victim.wait_closed()).await.unwrap().unwrap();
        echo(&mut bystander).await.unwrap();
    }
}

/// Slowloris: one byte of header every 200 ms. Closed at the handshake deadline; others
/// are served meanwhile; the timeout is counted.
#[tokio::test(flavor = "multi_thread")]
async fn slowloris_is_closed_at_the_deadline() {
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let sp = common::free_port();
    let sps = sp.to_string();
    let proxy = common::start(&[
        "-S",
        S1,
        "--dc-override",
        &o,
        "--handshake-timeout",
        "1",
        "-p",
        &sps,
        "--http-stats",
    ]);
    let mut slow = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut bystander = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut closed = false;
    for i in 0..64u8 {
        if slow.write_all(&[i]).await.is_err() {
            closed = true;
            break;
        }
        echo(&mut bystander).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = timeout(Duration::from_millis(1), slow.read(&mut b)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slowloris header was still open after 64 bytes");
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert!(wait_metric(sp, "mtproxy_handshakes_total{result=\"timeout\"}", 1).await >= 1);
    assert!(
        dc.connections().len() == 1,
        "the slow client must not reach a DC"
    );
}

fn me_files(secret: &[u8], lines: &str) -> (std::path::PathBuf, String, String) {
    let dir = std::env::temp_dir().join(format!(
        "mtproxy-faults-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), secret).unwrap();
    std::fs::write(dir.join("proxy-multi.conf"), lines).unwrap();
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let (a, b) = (p("secret"), p("proxy-multi.conf"));
    (dir, a, b)
}

/// ME targets that misbehave: one accepts and never answers, one answers garbage. The
/// proxy gives up on them (3-s handshake deadline, protocol error), counts the failures,
/// drops (C) the packets of clients routed there, and serves the healthy DC meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn silent_and_garbage_mes() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (silent_addr, garbage_addr) = (silent.local_addr().unwrap(), garbage.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = garbage.accept().await {
            let mut junk = vec![0u8; 300];
            rand::thread_rng().fill_bytes(&mut junk);
            let _ = s.write_all(&junk).await;
        }
    });
    let mut secret = vec![0u8; 128];
    rand::thread_rng().fill_bytes(&mut secret);
    let good = FakeMe::start(FakeMeConfig::new(secret.clone()).responder(Responder::Echo))
        .await
        .unwrap();
    let conf = format!(
        "proxy_for 1 {silent_addr};\nproxy_for 3 {garbage_addr};\nproxy_for 2 {};\ndefault 2;\n",
        good.addr()
    );
    let (dir, pwd, cfg) = me_files(&secret, &conf);
    let sp = common::free_port();
    let sps = sp.to_string();
    let proxy = common::start(&[
        "-v",
        "-S",
        S1,
        "--aes-pwd",
        &pwd,
        "-p",
        &sps,
        "--http-stats",
        &cfg,
    ]);
    let needle = format!("Connected to RPC Middle-End {}", good.addr());
    assert!(proxy.wait_log_count(&needle, 4, LIMIT));
    let mut bystander = Client::connect(
        proxy.addr(),
        ClientOpts::new(key(), Tag::Intermediate).dc(2),
    )
    .await
    .unwrap();
    echo(&mut bystander).await.unwrap();
    for dc in [1, 3] {
        let mut victim = Client::connect(
            proxy.addr(),
            ClientOpts::new(key(), Tag::Intermediate).dc(dc),
        )
        .await
        .unwrap();
        victim.send_packet(&payload(64)).await.unwrap();
        // No answer can come: the packet was dropped for want of an ME.
        assert!(timeout(Duration::from_millis(500), victim.recv_packet())
            .await
            .is_err());
        echo(&mut bystander).await.unwrap();
    }
    assert!(wait_metric(sp, "mtproxy_me_queries_total{result=\"dropped\"}", 2).await >= 2);
    assert!(wait_metric(sp, "mtproxy_me_connects_total{result=\"failed\"}", 2).await >= 2);
    assert!(
        proxy.wait_log("no handshake within", LIMIT),
        "{}",
        proxy.log_text()
    );
    for _ in 0..10 {
        echo(&mut bystander).await.unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// ME mode parses client frames: a frame over the 1 044 480-byte limit closes that client
/// only.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_frame_closes_only_its_client() {
    let mut secret = vec![0u8; 64];
    rand::thread_rng().fill_bytes(&mut secret);
    let me = FakeMe::start(FakeMeConfig::new(secret.clone()).responder(Responder::Echo))
        .await
        .unwrap();
    let (dir, pwd, cfg) = me_files(
        &secret,
        &format!("proxy_for 2 {};\ndefault 2;\n", me.addr()),
    );
    let proxy = common::start(&["-v", "-S", S1, "--aes-pwd", &pwd, &cfg]);
    let needle = format!("Connected to RPC Middle-End {}", me.addr());
    assert!(proxy.wait_log_count(&needle, 4, LIMIT));
    let mut bystander = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
        .await
        .unwrap();
    echo(&mut bystander).await.unwrap();
    let mut victim = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
        .await
        .unwrap();
    victim
        .send_encrypted_raw(&(2_000_000u32).to_le_bytes())
        .await
        .unwrap();
    timeout(LIMIT, victim.wait_closed()).await.unwrap().unwrap();
    for _ in 0..10 {
        echo(&mut bystander).await.unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A half-open client (its phone lost the network: no FIN, no bytes) is closed by the idle
/// timeout, its upstream too; new clients are served.
#[tokio::test(flavor = "multi_thread")]
async fn half_open_clients_are_closed_by_the_idle_timeout() {
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let proxy = common::start(&["-S", S1, "--dc-override", &o, "--idle-timeout", "1"]);
    let mut vanished = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Abridged))
        .await
        .unwrap();
    echo(&mut vanished).await.unwrap();
    // It goes silent (as a phone that lost its network): closed after the idle timeout,
    // upstream included.
    timeout(LIMIT, vanished.wait_closed())
        .await
        .unwrap()
        .unwrap();
    timeout(LIMIT, dc.wait_closed(1)).await.unwrap();
    let mut active = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Abridged))
        .await
        .unwrap();
    echo(&mut active).await.unwrap();
}

/// A client that sends but never reads, in ME mode: the answers waiting for it are capped
/// (here by a 1 MiB `--msg-buffers-size` budget; 32 MiB per client as C) and it is closed;
/// the counters say so and another client is unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn client_that_never_reads_is_capped_and_closed() {
    let mut secret = vec![0u8; 64];
    rand::thread_rng().fill_bytes(&mut secret);
    let me = FakeMe::start(FakeMeConfig::new(secret.clone()).responder(Responder::Echo))
        .await
        .unwrap();
    let (dir, pwd, cfg) = me_files(
        &secret,
        &format!("proxy_for 2 {};\ndefault 2;\n", me.addr()),
    );
    let sp = common::free_port();
    let sps = sp.to_string();
    let proxy = common::start(&[
        "-v",
        "-S",
        S1,
        "--aes-pwd",
        &pwd,
        "--msg-buffers-size",
        "1m",
        "-p",
        &sps,
        "--http-stats",
        &cfg,
    ]);
    let needle = format!("Connected to RPC Middle-End {}", me.addr());
    assert!(proxy.wait_log_count(&needle, 4, LIMIT));
    let mut bystander = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
        .await
        .unwrap();
    echo(&mut bystander).await.unwrap();
    let mut hog = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
        .await
        .unwrap();
    let big = payload(512 * 1024);
    let sender = tokio::spawn(async move {
        for _ in 0..64 {
            if hog.send_packet(&big).await.is_err() {
                break;
            }
        }
        hog
    });
    let end = Instant::now() + LIMIT;
    loop {
        let b = {
            let mut s = TcpStream::connect(("127.0.0.1", sp)).await.unwrap();
            s.write_all(b"GET /stats HTTP/1.0\r\n\r\n").await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        if b.lines()
            .any(|l| l.starts_with("connections_failed_lru\t") && !l.ends_with("\t0"))
        {
            break;
        }
        assert!(Instant::now() < end, "never capped:\n{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut hog = timeout(LIMIT, sender).await.unwrap().unwrap();
    timeout(LIMIT, hog.wait_closed()).await.unwrap().unwrap();
    for _ in 0..10 {
        echo(&mut bystander).await.unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
}
