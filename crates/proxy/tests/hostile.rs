//! Hostile input, round 2 (issue 24): whoever holds the public link, or sits on the
//! proxy ↔ ME path, must not starve other clients. Each test runs one attack with the real
//! binary beside a stream of legitimate sessions and checks that the legitimate sessions
//! all succeed, that the proxy's memory and fds stay under the stated bound, that the
//! attacker's sessions are the ones closed, and that the counter says so. Loopback only.
//!
//! The ME-side attacks come from the testkit fake ME obeying [`Command`] packets: an
//! attacking client sends one and then never reads.

mod common;

use common::probe::{self, MeFiles, PeakRss};
use mtproxy_testkit::fake_me::{Command, FakeMe, FakeMeConfig, MeEvent};
use mtproxy_testkit::{Client, ClientOpts, Tag};
use rand::RngCore;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio::time::timeout;

const S1: &str = "0123456789abcdef0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

fn key() -> [u8; 16] {
    hex::decode(S1).unwrap().try_into().unwrap()
}

fn payload(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n.max(56) / 4 * 4];
    rand::thread_rng().fill_bytes(&mut v);
    v[0] = 1;
    v
}

/// A proxy in ME mode (DC 2 and the default → one fake ME that obeys commands) with its
/// stats port.
struct MeRig {
    me: FakeMe,
    proxy: common::Proxy,
    stats: u16,
    _files: MeFiles,
}

impl MeRig {
    async fn start(extra: &[&str]) -> MeRig {
        let files = MeFiles::new("");
        let me = FakeMe::start(FakeMeConfig::new(files.secret.clone()).commands(true))
            .await
            .unwrap();
        files.set_config(&format!("proxy_for 2 {};\ndefault 2;\n", me.addr()));
        let stats = common::free_port();
        let (sp, pwd, cfg) = (stats.to_string(), files.pwd(), files.config());
        let mut args = vec!["-v", "-S", S1, "--aes-pwd", &pwd, "-p", &sp, "--http-stats"];
        args.extend_from_slice(extra);
        args.push(&cfg);
        let proxy = common::start(&args);
        let needle = format!("Connected to RPC Middle-End {}", me.addr());
        assert!(
            proxy.wait_log_count(&needle, 4, LIMIT),
            "{}",
            proxy.log_text()
        );
        MeRig {
            me,
            proxy,
            stats,
            _files: files,
        }
    }

    fn pid(&self) -> u32 {
        self.proxy.child.id()
    }

    async fn stat(&self, key: &str) -> u64 {
        probe::stat(&probe::stats_page(self.stats).await, key)
    }

    /// Waits until the fake ME has seen `n` commands.
    async fn wait_commands(&self, n: usize) {
        self.me
            .wait_for(LIMIT, |ev| {
                ev.iter()
                    .filter(|e| matches!(e, MeEvent::Command { .. }))
                    .count()
                    >= n
            })
            .await
            .unwrap();
    }
}

/// A client whose socket takes little before it stops the sender (4 KiB receive buffer),
/// as a client that does not read looks once its buffers are full.
async fn tight_client(addr: SocketAddr) -> Client {
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    let stream = s.connect(addr).await.unwrap();
    Client::over_stream(stream, ClientOpts::new(key(), Tag::Intermediate))
        .await
        .unwrap()
}

/// An attacking client: sends `cmd` and never reads.
async fn attacker(addr: SocketAddr, cmd: Command) -> Client {
    let mut c = tight_client(addr).await;
    c.send_packet(&cmd.encode()).await.unwrap();
    c
}

/// `n` legitimate clients at once, each doing `rounds` echo exchanges of 1..8 KiB; what
/// went wrong, one line per failed client.
async fn legit(addr: SocketAddr, n: usize, rounds: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = Client::connect(addr, ClientOpts::new(key(), Tag::Intermediate))
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                for r in 0..rounds {
                    let p = payload(1024 * (1 + (i + r) % 8));
                    c.send_packet(&p)
                        .await
                        .map_err(|e| format!("round {r}: send: {e}"))?;
                    let back = timeout(LIMIT, c.recv_packet())
                        .await
                        .map_err(|_| format!("round {r}: no answer"))?
                        .map_err(|e| format!("round {r}: {e}"))?;
                    if back != p {
                        return Err(format!("round {r}: wrong answer"));
                    }
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    let mut errors = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Err(e) = t.await.unwrap() {
            errors.push(format!("client {i}: {e}"));
        }
    }
    errors
}

/// Each attacker's session was closed by the proxy (EOF after what was in flight).
async fn all_closed(attackers: Vec<Client>) {
    for (i, mut a) in attackers.into_iter().enumerate() {
        let r = timeout(LIMIT, a.wait_closed()).await;
        assert!(matches!(r, Ok(Ok(_))), "attacker {i} was not closed: {r:?}");
    }
}

/// Item 1: clients that ask for big answers and never read. At the `--msg-buffers-size`
/// cap the proxy sheds the sessions holding the most, i.e. them; the 64 clients that read
/// all get their answers.
#[tokio::test(flavor = "multi_thread")]
async fn the_budget_sheds_the_hoarders_not_the_readers() {
    let rig = MeRig::start(&["--msg-buffers-size", "8m"]).await;
    let peak = PeakRss::watch(rig.pid());
    let base = probe::rss(rig.pid());
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let cmd = Command::Answers {
            len: 1 << 20,
            count: 24,
        };
        attackers.push(attacker(rig.proxy.addr(), cmd).await);
    }
    rig.wait_commands(4).await;
    let errors = legit(rig.proxy.addr(), 64, 20).await;
    assert!(errors.is_empty(), "legitimate clients failed: {errors:#?}");
    all_closed(attackers).await;
    assert_eq!(
        rig.stat("connections_failed_lru").await,
        4,
        "the four hoarders"
    );
    let grew = peak.peak().saturating_sub(base);
    eprintln!("peak RSS growth: {:.1} MiB", grew as f64 / MIB as f64);
    assert!(
        grew < 8 * MIB + 24 * MIB,
        "RSS grew by {} MiB over an 8 MiB budget",
        grew / MIB
    );
}

/// Item 3: floods of empty answers and of quick acks to clients that do not read. Each
/// queued message is charged its real cost (payload plus 64 bytes), so the budget fires
/// and sheds them; memory stays near the budget.
#[tokio::test(flavor = "multi_thread")]
async fn floods_of_small_messages_are_charged_what_they_cost() {
    let rig = MeRig::start(&["--msg-buffers-size", "8m"]).await;
    let peak = PeakRss::watch(rig.pid());
    let base = probe::rss(rig.pid());
    let attackers = vec![
        attacker(
            rig.proxy.addr(),
            Command::Answers {
                len: 0,
                count: 1_000_000,
            },
        )
        .await,
        attacker(rig.proxy.addr(), Command::Acks { count: 1_000_000 }).await,
    ];
    rig.wait_commands(2).await;
    let errors = legit(rig.proxy.addr(), 64, 10).await;
    assert!(errors.is_empty(), "legitimate clients failed: {errors:#?}");
    all_closed(attackers).await;
    assert_eq!(rig.stat("connections_failed_lru").await, 2);
    let grew = peak.peak().saturating_sub(base);
    eprintln!("peak RSS growth: {:.1} MiB", grew as f64 / MIB as f64);
    assert!(
        grew < 8 * MIB + 24 * MIB,
        "RSS grew by {} MiB over an 8 MiB budget",
        grew / MIB
    );
}

/// Waits until the fake ME has handed everything `cmd` asked for to its writer.
async fn wait_done(me: &FakeMe, cmd: Command) {
    me.wait_for(LIMIT, |ev| {
        ev.iter()
            .any(|e| matches!(e, MeEvent::CommandDone { cmd: c, .. } if *c == cmd))
    })
    .await
    .unwrap();
}

/// Item 2: an ME sends 256 MiB of padding words (legal between frames), then a legal
/// 16 MiB frame (for a session nobody has). The padding is consumed as it comes (memory
/// stays flat, the readers beside it are served) and the large frame's buffer is given
/// back once it is consumed.
#[tokio::test(flavor = "multi_thread")]
async fn padding_floods_and_large_frames_from_an_me_leave_no_memory_behind() {
    let rig = MeRig::start(&[]).await;
    let addr = rig.proxy.addr();
    let peak = PeakRss::watch(rig.pid());
    let base = probe::rss(rig.pid());
    let flood = Command::Padding { bytes: 256 * MIB };
    let _a = attacker(addr, flood).await;
    let readers = tokio::spawn(legit(addr, 64, 10));
    wait_done(&rig.me, flood).await;
    let errors = readers.await.unwrap();
    assert!(errors.is_empty(), "legitimate clients failed: {errors:#?}");
    let grew = peak.peak().saturating_sub(base);
    eprintln!(
        "peak RSS growth during the padding flood: {:.1} MiB",
        grew as f64 / MIB as f64
    );
    assert!(grew < 16 * MIB, "RSS grew by {} MiB", grew / MIB);

    let big = Command::Stray {
        len: (16 * MIB) as u32 - 64,
    };
    let _b = attacker(addr, big).await;
    assert!(probe::wait_stat(rig.stats, "dropped_responses", 1, LIMIT).await >= 1);
    let errors = legit(addr, 8, 4).await;
    assert!(errors.is_empty(), "legitimate clients failed: {errors:#?}");
    let after = probe::rss(rig.pid()).saturating_sub(base);
    eprintln!(
        "peak RSS growth with the 16 MiB frame: {:.1} MiB, after it: {:.1} MiB",
        peak.peak().saturating_sub(base) as f64 / MIB as f64,
        after as f64 / MIB as f64
    );
    assert!(
        after < 8 * MIB,
        "{} MiB kept after a 16 MiB frame",
        after / MIB
    );
}
