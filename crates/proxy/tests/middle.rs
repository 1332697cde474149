//! End to end, middle-proxy mode: the real `mtproto-proxy` with a `proxy-multi.conf` and an
//! `--aes-pwd` file, between the testkit reference client and the testkit fake ME, all on
//! loopback.

mod common;

use mtproxy_testkit::fake_me::{simple_ack_confirm, FakeMe, FakeMeConfig, MeEvent, Responder};
use mtproxy_testkit::{
    parse_res_pq, req_pq_multi, Client, ClientOpts, ServerFrame, Tag, MAX_FRAME,
};
use rand::RngCore;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::timeout;

const S1: &str = "0123456789abcdef0123456789abcdef";
const S2: &str = "fedcba9876543210fedcba9876543210";
const TAG: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
const LIMIT: Duration = Duration::from_secs(30);

fn key(h: &str) -> [u8; 16] {
    hex::decode(h).unwrap().try_into().unwrap()
}

/// A temp dir with the proxy secret and a config; removed on drop.
struct Files {
    dir: PathBuf,
    secret: Vec<u8>,
}

impl Files {
    fn new() -> Files {
        let dir = std::env::temp_dir().join(format!(
            "mtproxy-me-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut secret = vec![0u8; 128];
        rand::thread_rng().fill_bytes(&mut secret);
        std::fs::write(dir.join("proxy-secret"), &secret).unwrap();
        Files { dir, secret }
    }
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
    /// DC 1/-1 → me1, 2/-2 → me2, default 2.
    fn write_config(
        &self,
        name: &str,
        me1: std::net::SocketAddr,
        me2: std::net::SocketAddr,
    ) -> String {
        let text = format!(
            "# test config\nproxy_for 1 {me1};\nproxy_for -1 {me1};\nproxy_for 2 {me2};\nproxy_for -2 {me2};\ndefault 2;\n"
        );
        std::fs::write(self.dir.join(name), text).unwrap();
        self.path(name)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fake_me(files: &Files, responder: Responder) -> FakeMe {
    FakeMe::start(FakeMeConfig::new(files.secret.clone()).responder(responder))
        .await
        .unwrap()
}

/// Starts the proxy in ME mode against two fake MEs and waits until all 8 pool connections
/// (4 per ME address, C's default) are ready.
async fn setup(files: &Files, me1: &FakeMe, me2: &FakeMe, extra: &[&str]) -> common::Proxy {
    let cfg = files.write_config("proxy-multi.conf", me1.addr(), me2.addr());
    let pwd = files.path("proxy-secret");
    // -v: the proxy logs each ME connection it has made ready, which is what tests wait for.
    let mut args = vec!["-v", "-S", S1, "-S", S2, "--aes-pwd", &pwd];
    args.extend_from_slice(extra);
    args.push(&cfg);
    let proxy = common::start(&args);
    for me in [me1, me2] {
        let needle = format!("Connected to RPC Middle-End {}", me.addr());
        assert!(
            proxy.wait_log_count(&needle, 4, LIMIT),
            "{}",
            proxy.log_text()
        );
    }
    proxy
}

fn payload(n: usize) -> Vec<u8> {
    // An "encrypted" MTProto packet: non-zero auth_key_id, at least 56 bytes.
    let mut v = vec![0u8; n.max(56)];
    rand::thread_rng().fill_bytes(&mut v);
    v[0] = 1;
    v
}

fn is_echo(tag: Tag, sent: &[u8], back: &[u8]) -> bool {
    let extra = if tag == Tag::Padded { 12 } else { 0 };
    back.len() >= sent.len() && back.len() - sent.len() <= extra && back[..sent.len()] == *sent
}

/// Sends `p` and checks that it comes back.
async fn echoed(c: &mut Client, tag: Tag, p: &[u8]) {
    c.send_packet(p).await.unwrap();
    let back = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
    assert!(
        is_echo(tag, p, &back),
        "{tag:?}: sent {} bytes, got {}",
        p.len(),
        back.len()
    );
}

fn reqs(me: &FakeMe) -> Vec<(i64, u32, Option<[u8; 16]>)> {
    me.events()
        .into_iter()
        .filter_map(|e| match e {
            MeEvent::ProxyReq {
                conn_id,
                flags,
                proxy_tag,
                ..
            } => Some((conn_id, flags, proxy_tag)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_transport_and_secret_through_the_me_with_c_flags() {
    let files = Files::new();
    let me1 = fake_me(&files, Responder::ResPq).await;
    let me2 = fake_me(&files, Responder::ResPq).await;
    let proxy = setup(&files, &me1, &me2, &[]).await;
    for tag in Tag::ALL {
        for secret in [S1, S2] {
            let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(secret), tag))
                .await
                .unwrap();
            let (req, nonce) = req_pq_multi();
            c.send_packet(&req).await.unwrap();
            let res = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
            assert_eq!(parse_res_pq(&res), Some(nonce), "{tag:?}");
            let max = if tag == Tag::Padded {
                MAX_FRAME - 16
            } else {
                MAX_FRAME
            };
            for n in [56, 1000, 100_000, max] {
                echoed(&mut c, tag, &payload(n)).await;
            }
        }
        // Header and first frame in one write: the proxy reads both at once and the session
        // must get every byte after the header, whether the frame fits in that first read
        // or goes on past it.
        for n in [56, 900, 5000, 200_000] {
            let opts = ClientOpts::new(key(S2), tag).header_with_first_frame(true);
            let mut c = Client::connect(proxy.addr(), opts).await.unwrap();
            echoed(&mut c, tag, &payload(n)).await;
            echoed(&mut c, tag, &payload(120)).await;
        }
    }
    // C's flag words: abridged 0x40021000, (padded) intermediate 0x20021000, +2 unencrypted.
    let flags: std::collections::BTreeSet<u32> = reqs(&me2).iter().map(|r| r.1).collect();
    assert_eq!(
        flags,
        [0x2002_1000, 0x2002_1002, 0x4002_1000, 0x4002_1002]
            .into_iter()
            .collect()
    );
    assert!(
        reqs(&me2).iter().all(|r| r.2.is_none()),
        "no -P: no proxy tag"
    );
    assert!(reqs(&me1).is_empty(), "DC 2 traffic went to the DC 1 ME");
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_tag_is_sent_exactly_when_given_and_dcs_route_by_cluster() {
    let files = Files::new();
    let me1 = fake_me(&files, Responder::Echo).await;
    let me2 = fake_me(&files, Responder::Echo).await;
    let proxy = setup(&files, &me1, &me2, &["-P", TAG]).await;
    for dc in [1i16, -1, 2, -2, 7] {
        let mut c = Client::connect(
            proxy.addr(),
            ClientOpts::new(key(S1), Tag::Intermediate).dc(dc),
        )
        .await
        .unwrap();
        let p = payload(64);
        c.send_packet(&p).await.unwrap();
        assert_eq!(timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap(), p);
    }
    let (r1, r2) = (reqs(&me1), reqs(&me2));
    assert_eq!(
        (r1.len(), r2.len()),
        (2, 3),
        "1/-1 → ME 1; 2/-2 and unknown 7 → default ME 2"
    );
    for r in r1.iter().chain(&r2) {
        assert_eq!(r.2, Some(key(TAG)));
        assert_eq!(r.1 & 0x8, 0x8);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_ack_reaches_the_client_in_its_framing() {
    let files = Files::new();
    let cfg = FakeMeConfig::new(files.secret.clone()).simple_ack(true);
    let me1 = FakeMe::start(cfg.clone()).await.unwrap();
    let me2 = FakeMe::start(cfg).await.unwrap();
    let proxy = setup(&files, &me1, &me2, &[]).await;
    for tag in Tag::ALL {
        let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), tag))
            .await
            .unwrap();
        let p = payload(80);
        // Padding below 4 bytes, so the forwarded packet (len & !3) is exactly `p` and the
        // fake ME's token for it is predictable.
        let padding = if tag == Tag::Padded { 3 } else { 0 };
        c.send_frame(&p, padding, true).await.unwrap();
        let first = timeout(LIMIT, c.recv_frame()).await.unwrap().unwrap();
        assert_eq!(
            first,
            ServerFrame::QuickAck(simple_ack_confirm(&p)),
            "{tag:?}"
        );
        let back = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
        assert!(is_echo(tag, &p, &back));
    }
    let quick: Vec<u32> = reqs(&me2).iter().map(|r| r.1 & 0x8000_0000).collect();
    assert!(
        quick.iter().all(|q| *q != 0),
        "the quick-ack flag is forwarded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn me_close_closes_client_and_client_close_sends_close_conn() {
    let files = Files::new();
    let me1 = fake_me(&files, Responder::Echo).await;
    let me2 = fake_me(&files, Responder::Echo).await;
    let proxy = setup(&files, &me1, &me2, &[]).await;

    // The ME closes one session: that client is closed, another one keeps working.
    let mut victim = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Abridged))
        .await
        .unwrap();
    let mut bystander = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Abridged))
        .await
        .unwrap();
    for c in [&mut victim, &mut bystander] {
        let p = payload(60);
        c.send_packet(&p).await.unwrap();
        assert_eq!(timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap(), p);
    }
    let victim_id = reqs(&me2)[0].0;
    assert!(me2.close_session(victim_id));
    timeout(LIMIT, victim.wait_closed()).await.unwrap().unwrap();
    let p = payload(60);
    bystander.send_packet(&p).await.unwrap();
    assert_eq!(
        timeout(LIMIT, bystander.recv_packet())
            .await
            .unwrap()
            .unwrap(),
        p
    );
    // The proxy did not answer RPC_CLOSE_EXT with RPC_CLOSE_CONN.
    assert_eq!(
        me2.count(|e| matches!(e, MeEvent::CloseConn { conn_id, .. } if *conn_id == victim_id)),
        0
    );

    // The client leaves: the ME hears RPC_CLOSE_CONN for its session.
    let by_id = reqs(&me2).last().unwrap().0;
    drop(bystander);
    me2.wait_for(LIMIT, |ev| {
        ev.iter()
            .any(|e| matches!(e, MeEvent::CloseConn { conn_id, .. } if *conn_id == by_id))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn me_restart_closes_bound_clients_and_the_pool_reconnects_without_leaks() {
    let files = Files::new();
    let me1 = fake_me(&files, Responder::Echo).await;
    let mut me2 = fake_me(&files, Responder::Echo).await;
    let proxy = setup(&files, &me1, &me2, &[]).await;
    let fds = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let pid = proxy.child.id();

    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Intermediate))
        .await
        .unwrap();
    let p = payload(100);
    c.send_packet(&p).await.unwrap();
    assert_eq!(timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap(), p);
    drop(c);
    let before = fds(pid);

    for round in 0..3 {
        let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Intermediate))
            .await
            .unwrap();
        c.send_packet(&p).await.unwrap();
        assert_eq!(timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap(), p);
        let ready_before = me2.count(|e| matches!(e, MeEvent::Ready { .. }));
        me2.stop().await;
        // The client bound to the dead ME connection is closed, not hung.
        timeout(LIMIT, c.wait_closed()).await.unwrap().unwrap();
        me2.restart().await.unwrap();
        me2.wait_ready(ready_before + 4, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let needle = format!("Connected to RPC Middle-End {}", me2.addr());
        assert!(
            proxy.wait_log_count(&needle, 4 * (round + 2), LIMIT),
            "round {round}"
        );
        let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Intermediate))
            .await
            .unwrap();
        c.send_packet(&p).await.unwrap();
        assert_eq!(timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap(), p);
    }
    // Same pool size as before the restarts: dead connections were not kept.
    let after = fds(pid);
    assert!(after <= before + 2, "fds grew from {before} to {after}");
    assert_eq!(me2.live_connections(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_clients_multiplexed_over_the_pool() {
    let files = Files::new();
    let me1 = fake_me(&files, Responder::Echo).await;
    let me2 = fake_me(&files, Responder::Echo).await;
    let proxy = setup(&files, &me1, &me2, &[]).await;
    let addr = proxy.addr();
    let mut tasks = Vec::new();
    for i in 0..200usize {
        tasks.push(tokio::spawn(async move {
            let tag = Tag::ALL[i % 3];
            let dc = if i % 2 == 0 { 1 } else { 2 };
            let mut c = Client::connect(addr, ClientOpts::new(key(S1), tag).dc(dc)).await?;
            for r in 0..20usize {
                let p = payload(56 + 4 * ((i * 31 + r * 7) % 500));
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
    // 200 sessions over 8 ME connections.
    assert_eq!(me1.live_connections() + me2.live_connections(), 8);
    assert_eq!(reqs(&me1).len() + reqs(&me2).len(), 4000);
}

#[tokio::test(flavor = "multi_thread")]
async fn short_and_key_exchange_filtering_like_c() {
    let files = Files::new();
    let me1 = fake_me(&files, Responder::Echo).await;
    let me2 = fake_me(&files, Responder::Echo).await;
    let proxy = setup(&files, &me1, &me2, &[]).await;
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Intermediate))
        .await
        .unwrap();
    // 24 bytes: too short, dropped silently; an unencrypted non-key-exchange message too.
    c.send_packet(&[7u8; 24]).await.unwrap();
    let mut unenc = vec![0u8; 40];
    unenc[16..20].copy_from_slice(&20u32.to_le_bytes());
    unenc[20..24].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    c.send_packet(&unenc).await.unwrap();
    // The connection stays open and the next good packet goes through.
    let p = payload(56);
    c.send_packet(&p).await.unwrap();
    assert_eq!(timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap(), p);
    assert_eq!(reqs(&me2).len(), 1);
}

fn send_signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reload_applies_good_configs_and_keeps_serving_on_bad_ones() {
    let files = Files::new();
    let me1 = fake_me(&files, Responder::Echo).await;
    let me2 = fake_me(&files, Responder::Echo).await;
    let proxy = setup(&files, &me1, &me2, &[]).await;
    let pid = proxy.child.id();
    let cfg = files.path("proxy-multi.conf");

    // A broken file: the old config keeps serving.
    std::fs::write(&cfg, "proxy_for 2 127.0.0.1:;\n").unwrap();
    send_signal(pid, libc::SIGHUP);
    assert!(
        proxy.wait_log("configuration reload failed", LIMIT),
        "{}",
        proxy.log_text()
    );
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Abridged))
        .await
        .unwrap();
    let p = payload(64);
    c.send_packet(&p).await.unwrap();
    assert_eq!(timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap(), p);
    assert_eq!(reqs(&me2).len(), 1);

    // A good file moving DC 2 to a third ME: new sessions go there, the old ME drains.
    let me3 = fake_me(&files, Responder::Echo).await;
    files.write_config("proxy-multi.conf", me1.addr(), me3.addr());
    send_signal(pid, libc::SIGHUP);
    let needle = format!("Connected to RPC Middle-End {}", me3.addr());
    assert!(proxy.wait_log(&needle, LIMIT), "{}", proxy.log_text());
    let mut c2 = Client::connect(proxy.addr(), ClientOpts::new(key(S1), Tag::Abridged))
        .await
        .unwrap();
    c2.send_packet(&p).await.unwrap();
    assert_eq!(timeout(LIMIT, c2.recv_packet()).await.unwrap().unwrap(), p);
    assert_eq!(reqs(&me3).len(), 1);
    // The session still on ME 2 keeps working until it ends; then ME 2 is dropped.
    c.send_packet(&p).await.unwrap();
    assert_eq!(timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap(), p);
    drop(c);
    me2.wait_for(LIMIT, |ev| {
        ev.iter()
            .filter(|e| matches!(e, MeEvent::Disconnected { .. }))
            .count()
            >= 4
    })
    .await
    .unwrap();
}

#[test]
fn bad_config_or_secret_at_start_exits_like_c() {
    let files = Files::new();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let pwd = files.path("proxy-secret");
    let bad = files.path("bad.conf");
    std::fs::write(&bad, "default 2;\nproxy_for 2 127.0.0.1:99999;\n").unwrap();
    let (code, err) = run(&["-H", "1", "--aes-pwd", &pwd, &bad]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("bad.conf:1: fatal: port number 99999 out of range"),
        "{err}"
    );
    let (code, err) = run(&["-H", "1", "--aes-pwd", &pwd, &files.path("missing.conf")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot re-read config file"), "{err}");
    let good = files.write_config(
        "good.conf",
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    let short = files.path("short-secret");
    std::fs::write(&short, [1u8; 16]).unwrap();
    let (code, err) = run(&["-H", "1", "--aes-pwd", &short, &good]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("too long or too short"), "{err}");
    // -P needs ME mode.
    let (code, err) = run(&["-H", "1", "-P", TAG]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("-P (proxy tag) needs middle-proxy mode"),
        "{err}"
    );
}
