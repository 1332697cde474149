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
use mtproxy_testkit::{Client, ClientOpts, FakeDc, Tag};
use rand::RngCore;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
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

    /// The proxy's peak RSS from now on, and its RSS now.
    fn watch_rss(&self) -> (PeakRss, u64) {
        (PeakRss::watch(self.pid()), probe::rss(self.pid()))
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

/// No legitimate client failed.
fn all_served(errors: &[String]) {
    assert!(errors.is_empty(), "legitimate clients failed: {errors:#?}");
}

/// The peak RSS since `base` grew by less than `bound`; prints and returns the growth.
fn peak_under(peak: &PeakRss, base: u64, bound: u64, what: &str) -> u64 {
    let grew = peak.peak().saturating_sub(base);
    eprintln!(
        "{what}: peak RSS growth {:.1} MiB",
        grew as f64 / MIB as f64
    );
    assert!(grew < bound, "{what}: RSS grew by {} MiB", grew / MIB);
    grew
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
    let (peak, base) = rig.watch_rss();
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
    all_served(&errors);
    all_closed(attackers).await;
    assert_eq!(
        rig.stat("connections_failed_lru").await,
        4,
        "the four hoarders"
    );
    let metrics = probe::metrics_page(rig.stats).await;
    assert_eq!(
        probe::metric(&metrics, "mtproxy_clients_closed_budget_total"),
        4
    );
    // What the sessions hold goes back to (almost) nothing once the hoarders are gone.
    let mut held = u64::MAX;
    for _ in 0..200 {
        held = probe::metric(
            &probe::metrics_page(rig.stats).await,
            "mtproxy_me_buffered_bytes",
        );
        if held < MIB {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(held < MIB, "{held} bytes still charged");
    peak_under(&peak, base, 8 * MIB + 24 * MIB, "an 8 MiB budget");
}

/// Item 3: floods of empty answers and of quick acks to clients that do not read. Each
/// queued message is charged its real cost (payload plus 64 bytes), so the budget fires
/// and sheds them; memory stays near the budget.
#[tokio::test(flavor = "multi_thread")]
async fn floods_of_small_messages_are_charged_what_they_cost() {
    let rig = MeRig::start(&["--msg-buffers-size", "8m"]).await;
    let (peak, base) = rig.watch_rss();
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
    all_served(&errors);
    all_closed(attackers).await;
    assert_eq!(rig.stat("connections_failed_lru").await, 2);
    peak_under(&peak, base, 8 * MIB + 24 * MIB, "an 8 MiB budget");
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
    let (peak, base) = rig.watch_rss();
    let flood = Command::Padding { bytes: 256 * MIB };
    let _a = attacker(addr, flood).await;
    let readers = tokio::spawn(legit(addr, 64, 10));
    wait_done(&rig.me, flood).await;
    let errors = readers.await.unwrap();
    all_served(&errors);
    peak_under(&peak, base, 16 * MIB, "the padding flood");

    let big = Command::Stray {
        len: (16 * MIB) as u32 - 64,
    };
    let _b = attacker(addr, big).await;
    assert!(probe::wait_stat(rig.stats, "dropped_responses", 1, LIMIT).await >= 1);
    let errors = legit(addr, 8, 4).await;
    all_served(&errors);
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

/// Connects a client and binds it to an ME connection with one echo; the fake ME's
/// number of that connection.
async fn bound_client(rig: &MeRig) -> (u64, Client) {
    let mut c = Client::connect(rig.proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
        .await
        .unwrap();
    let p = payload(256);
    c.send_packet(&p).await.unwrap();
    let back = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
    assert_eq!(back, p);
    let conn = rig
        .me
        .events()
        .iter()
        .find_map(|e| match e {
            MeEvent::ProxyReq {
                conn, packet_head, ..
            } if packet_head[..] == p[..64] => Some(*conn),
            _ => None,
        })
        .expect("the fake ME saw the packet");
    (conn, c)
}

/// `n` clients bound to ME connections, and the connection most of them are on.
async fn bound_clients(rig: &MeRig, n: usize) -> (u64, Vec<(u64, Client)>) {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(bound_client(rig).await);
    }
    let mut count = std::collections::HashMap::new();
    for (conn, _) in &clients {
        *count.entry(*conn).or_insert(0) += 1;
    }
    let most = count.into_iter().max_by_key(|(_, n)| *n).unwrap().0;
    (most, clients)
}

/// Each client does `rounds` more echo exchanges.
async fn still_served(clients: &mut [(u64, Client)], rounds: usize) {
    for (i, (_, c)) in clients.iter_mut().enumerate() {
        for r in 0..rounds {
            let p = payload(512);
            c.send_packet(&p).await.unwrap();
            let back = timeout(LIMIT, c.recv_packet()).await;
            assert!(
                matches!(&back, Ok(Ok(b)) if *b == p),
                "client {i} round {r}: {back:?}"
            );
        }
    }
}

/// Item 4, the sessions: an ME connection stops reading; its sessions' clients keep
/// uploading until the proxy cannot queue more and the sessions wait for room. Those
/// whose clients leave (a reset: a FIN would queue behind the upload the proxy cannot
/// take, and only the idle timeout sees it) end at once, those whose clients stay end at
/// the idle timeout; sessions on the other connections are served throughout.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_waiting_on_an_me_that_stopped_reading_end_with_their_clients_and_at_idle() {
    let idle = Duration::from_secs(12);
    let rig = MeRig::start(&["--idle-timeout", "12"]).await;
    let (stuck, clients) = bound_clients(&rig, 24).await;
    assert!(rig.me.command_on(stuck, Command::StopReading));
    wait_done(&rig.me, Command::StopReading).await;
    let (on_stuck, mut others): (Vec<_>, Vec<_>) =
        clients.into_iter().partition(|(c, _)| *c == stuck);
    assert!(
        on_stuck.len() >= 2,
        "at least 6 of 24 land on the busiest connection"
    );
    // The stuck sessions' clients upload for as long as the proxy takes their bytes.
    let uploads: Vec<_> = on_stuck
        .into_iter()
        .map(|(_, mut c)| {
            let (leave, left) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let p = payload(512 << 10);
                let upload = async {
                    while c.send_packet(&p).await.is_ok() {}
                    std::future::pending::<()>().await
                };
                tokio::select! {
                    _ = upload => {}
                    _ = left => {}
                }
                let s = c.into_inner();
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            });
            (leave, task)
        })
        .collect();
    // Until nothing more is forwarded: the queue of the stuck connection is full and its
    // sessions wait for room.
    let mut last = (
        rig.stat("tot_forwarded_queries").await,
        tokio::time::Instant::now(),
    );
    while last.1.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rig.stat("tot_forwarded_queries").await;
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
        }
    }
    // (The others are served meanwhile, and stay clear of the idle timeout.)
    still_served(&mut others, 1).await;
    let bound_before = rig.stat("ext_connections").await;
    let mut staying = uploads;
    let leaving: Vec<_> = staying.drain(..staying.len() / 2).collect();
    let left_at = tokio::time::Instant::now();
    let n_leaving = leaving.len();
    for (leave, task) in leaving {
        leave.send(()).unwrap();
        task.await.unwrap();
    }
    let want = bound_before - n_leaving as u64;
    let mut bound = bound_before;
    while bound > want && left_at.elapsed() < LIMIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        bound = rig.stat("ext_connections").await;
    }
    let took = left_at.elapsed();
    eprintln!("{n_leaving} sessions whose clients left ended after {took:?}");
    assert_eq!(
        bound,
        want,
        "the sessions whose clients left are still there:\n{}",
        rig.proxy.log_text()
    );
    assert!(
        took < idle / 2,
        "ended only after {took:?} (idle timeout {idle:?})"
    );
    still_served(&mut others, 3).await;
    // The staying clients neither read nor leave: their sessions end at the idle timeout.
    let want = want - staying.len() as u64;
    let bound = probe::wait_stat_below(rig.stats, "ext_connections", want + 1, LIMIT).await;
    assert_eq!(
        bound, want,
        "sessions waiting for room outlived the idle timeout"
    );
    drop(staying);
    still_served(&mut others, 3).await;
}

/// Item 4, the connection: an ME connection of a proxy pinging every `ping_interval`
/// stops reading (and floods pings if `ping_flood`). The proxy declares it dead, closes
/// its sessions and redials; the sessions on other connections and every new session are
/// served; memory stays bounded. Returns the proxy's log line saying why.
async fn stops_reading(ping_interval: &str, ping_flood: bool) -> String {
    let rig = MeRig::start(&["--ping-interval", ping_interval]).await;
    let (peak, base) = rig.watch_rss();
    let (stuck, clients) = bound_clients(&rig, 24).await;
    let (on_stuck, mut others): (Vec<_>, Vec<_>) =
        clients.into_iter().partition(|(c, _)| *c == stuck);
    assert_eq!(rig.stat("outbound_connections_created").await, 4);
    assert!(rig.me.command_on(stuck, Command::StopReading));
    if ping_flood {
        assert!(rig
            .me
            .command_on(stuck, Command::Pings { count: 2_000_000 }));
    }
    // (The fake ME, not reading, does not see the close itself.)
    assert!(
        rig.proxy.wait_log("declared dead", LIMIT),
        "{}",
        rig.proxy.log_text()
    );
    let log = rig.proxy.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("declared dead"))
        .unwrap_or("");
    for (i, (_, mut c)) in on_stuck.into_iter().enumerate() {
        let r = timeout(LIMIT, c.wait_closed()).await;
        assert!(
            matches!(r, Ok(Ok(_))),
            "session {i} on the dead connection: {r:?}"
        );
    }
    still_served(&mut others, 3).await;
    // Redialled; sessions from now on all succeed (none lands on the dead connection).
    rig.me.wait_ready(5, LIMIT).await.unwrap();
    assert!(probe::wait_stat(rig.stats, "outbound_connections_created", 5, LIMIT).await >= 5);
    let errors = legit(rig.proxy.addr(), 64, 5).await;
    all_served(&errors);
    peak_under(&peak, base, 16 * MIB, line);
    line.to_string()
}

/// Item 4: an ME connection that stops reading and floods pings: the pongs queued for it
/// reach the control cap (long before the 30 s of unanswered pings at the default
/// --ping-interval).
#[tokio::test(flavor = "multi_thread")]
async fn an_me_that_stops_reading_and_floods_pings_is_declared_dead_and_redialled() {
    let why = stops_reading("5", true).await;
    assert!(why.contains("does not read"), "{why}");
}

/// Item 4: an ME connection that just stops reading: the proxy's own pings go
/// unanswered (for 3 s at --ping-interval 0.5).
#[tokio::test(flavor = "multi_thread")]
async fn an_me_that_stops_reading_is_declared_dead_when_its_pongs_stop() {
    let why = stops_reading("0.5", false).await;
    assert!(why.contains("RPC_PONG"), "{why}");
}

/// A stand-in for the site masked connections are spliced to: holds every connection
/// except the proxy's start-up probes (a TLS record of under 1 KiB, closed at once: the
/// proxy then uses its default reply shape). Counts what it holds.
async fn hold_site() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let held = Arc::new(AtomicUsize::new(0));
    let count = held.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 5];
                if s.read_exact(&mut first).await.is_err() {
                    return;
                }
                let record = usize::from(u16::from_be_bytes([first[3], first[4]]));
                if first[0] == 0x16 && record < 1024 {
                    return;
                }
                count.fetch_add(1, SeqCst);
                let mut sink = [0u8; 1024];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                count.fetch_sub(1, SeqCst);
            });
        }
    });
    (addr, held)
}

/// A proxy in fake-TLS mode (`-D localhost`, direct to a fake DC) whose masked
/// connections go to a [`hold_site`], with its stats port.
struct TlsRig {
    proxy: common::Proxy,
    stats: u16,
    _dc: FakeDc,
}

impl TlsRig {
    /// Started at soft open-file limit `nofile` when given; `extra` options added. Also
    /// the count of connections the site holds.
    async fn start(nofile: Option<u64>, extra: &[&str]) -> (TlsRig, Arc<AtomicUsize>) {
        let (site, held) = hold_site().await;
        let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (o, m) = (format!("2:{}", dc.addr()), site.to_string());
        let stats = common::free_port();
        let sp = stats.to_string();
        let mut args = vec![
            "-S",
            S1,
            "-D",
            "localhost",
            "--mask-host",
            &m,
            "--dc-override",
            &o,
            "-p",
            &sp,
            "--http-stats",
        ];
        args.extend_from_slice(extra);
        let proxy = match nofile {
            Some(n) => common::start_with_nofile(n, &args),
            None => common::start(&args),
        };
        let rig = TlsRig {
            proxy,
            stats,
            _dc: dc,
        };
        (rig, held)
    }
}

/// `n` connections that send a line of HTTP to a fake-TLS port (masked: spliced to the
/// site) and stay.
async fn junk(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        v.push(s);
    }
    v
}

/// Polls `f` until it holds or the limit passes.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + LIMIT;
    while !f() {
        assert!(tokio::time::Instant::now() < end, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fake-TLS clients with the secret, each echoing once through the DC; the failures.
async fn tls_clients(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut errors = Vec::new();
    for i in 0..n {
        let opts = ClientOpts::tls(key(), Some("localhost".into()));
        let r = async {
            let mut c = Client::connect(addr, opts).await?;
            let p = payload(200);
            c.send_packet(&p).await?;
            let back = timeout(LIMIT, c.recv_packet())
                .await
                .map_err(std::io::Error::other)??;
            // Padded transport inside fake TLS: the echo carries the padding too.
            if !back.starts_with(&p) {
                return Err(std::io::Error::other("wrong echo"));
            }
            Ok::<(), std::io::Error>(())
        };
        if let Err(e) = r.await {
            errors.push(format!("client {i}: {e}"));
        }
    }
    errors
}

/// Item 5: with `-c 300` and the fd limit the proxy sets for itself (started at a soft
/// limit of 64), junk to a fake-TLS port (no secret needed: masked, two descriptors each)
/// up to the cap leaves room for the clients; past the cap connections are accepted and
/// closed at once and counted, and accept never fails for want of a descriptor.
#[tokio::test(flavor = "multi_thread")]
async fn the_connection_cap_holds_up_to_c_with_the_fd_limit_the_proxy_sets() {
    const C: usize = 300;
    let c = C.to_string();
    let (rig, held) = TlsRig::start(Some(64), &["-c", &c]).await;
    let (proxy, stats) = (&rig.proxy, rig.stats);
    let (pid, addr) = (proxy.child.id(), proxy.addr());
    let limit = probe::fd_limit(pid);
    eprintln!("-c {C}: the proxy set its open-file limit to {limit}");
    assert!(limit >= 2 * C as u64, "{limit} descriptors for -c {C}");

    // 80 % of the cap in junk: every clients still gets in.
    let first = junk(addr, C * 8 / 10).await;
    until("the junk is spliced to the site", || {
        held.load(SeqCst) >= C * 8 / 10
    })
    .await;
    let errors = tls_clients(addr, 20).await;
    assert!(
        errors.is_empty(),
        "clients failed beside the junk: {errors:#?}"
    );
    // Past the cap: refused at once and counted, never an accept failure.
    let second = junk(addr, C / 3).await;
    let over = (C * 8 / 10 + C / 3 - C) as u64;
    let refused = probe::wait_stat(stats, "accept_connection_limit_failed", over, LIMIT).await;
    assert!(
        refused >= over,
        "{refused} refused at the cap, {over} expected"
    );
    let page = probe::stats_page(stats).await;
    assert_eq!(probe::stat(&page, "accept_calls_failed"), 0, "{page}");
    assert!(
        !proxy.log_text().contains("accept on"),
        "{}",
        proxy.log_text()
    );
    let fds = probe::fds(pid);
    eprintln!("at the cap: {fds} descriptors open, {refused} connections refused");
    assert!((fds as u64) < limit);
    // The junk leaves: clients are served again.
    drop((first, second));
    until("the site's connections are closed", || {
        held.load(SeqCst) == 0
    })
    .await;
    let errors = tls_clients(addr, 20).await;
    assert!(
        errors.is_empty(),
        "clients failed after the junk: {errors:#?}"
    );
}

/// Item 7: 80 slow clients on the stats port, each sending a request a byte every 2 s
/// and reconnecting a second after it is closed, for 10 s. Each of their connections is closed by the
/// whole-request deadline (5 s) or earlier, when a newer connection takes its slot; an
/// operator's `/stats`, every 250 ms, is always answered.
#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_on_the_stats_port_do_not_keep_stats_from_anyone() {
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:{}", dc.addr());
    let stats = common::free_port();
    let sp = stats.to_string();
    let proxy = common::start(&["-S", S1, "--dc-override", &o, "-p", &sp, "--http-stats"]);
    let run = Duration::from_secs(10);
    let start = tokio::time::Instant::now();
    let slow: Vec<_> = (0..80)
        .map(|_| {
            tokio::spawn(async move {
                // How long each of its connections stayed open.
                let mut held = Vec::new();
                while start.elapsed() < run {
                    let Ok(s) = TcpStream::connect(("127.0.0.1", stats)).await else {
                        continue;
                    };
                    let t = tokio::time::Instant::now();
                    let (mut rd, mut wr) = s.into_split();
                    let trickle = tokio::spawn(async move {
                        let _ = wr.write_all(b"GET /stats HTTP/1.1\r\n").await;
                        loop {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            if wr.write_all(b"X").await.is_err() {
                                return;
                            }
                        }
                    });
                    let mut sink = Vec::new();
                    let _ = timeout(LIMIT, rd.read_to_end(&mut sink)).await;
                    trickle.abort();
                    held.push(t.elapsed());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                held
            })
        })
        .collect();
    let (mut answered, mut refused) = (0, Vec::new());
    while start.elapsed() < run {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let page = timeout(Duration::from_secs(3), probe::stats_page(stats)).await;
        match page {
            Ok(p) if p.contains("\r\n\r\n") && p.contains("active_connections") => answered += 1,
            other => refused.push(format!("{:.1} s: {other:?}", start.elapsed().as_secs_f64())),
        }
    }
    assert!(refused.is_empty(), "/stats not answered: {refused:#?}");
    let mut longest = Duration::ZERO;
    for t in slow {
        for h in t.await.unwrap() {
            longest = longest.max(h);
        }
    }
    eprintln!("{answered} /stats answered beside 80 slow clients; the longest a slow client held a connection: {longest:?}");
    assert!(
        longest < Duration::from_secs(8),
        "a slow client held on for {longest:?}"
    );
    drop(proxy);
}

/// Item 9: 300 connections to a fake-TLS port, one after the other, each sending a
/// 16 KiB ClientHello with a wrong secret (masked: spliced to the site, which keeps them
/// open). The bytes received before the decision are replayed to the site and freed, so
/// what the 300 spliced connections hold is far less than their hellos.
#[tokio::test(flavor = "multi_thread")]
async fn masked_connections_keep_no_hello_buffer() {
    const N: usize = 300;
    let (rig, held) = TlsRig::start(None, &[]).await;
    let (proxy, stats) = (&rig.proxy, rig.stats);
    let (pid, addr) = (proxy.child.id(), proxy.addr());
    let wrong = [7u8; 16];
    let hello = |len| {
        mtproto_wire::tls::build_client_hello(
            &wrong,
            Some("localhost"),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
            &mut |b: &mut [u8]| rand::thread_rng().fill_bytes(b),
            len,
        )
    };
    // One to warm up the allocator and the runtime.
    let mut conns = Vec::new();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello(16 * 1024)).await.unwrap();
    conns.push(s);
    until("the first is spliced", || held.load(SeqCst) == 1).await;
    let base = probe::rss(pid);
    for i in 1..=N {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello(16 * 1024)).await.unwrap();
        conns.push(s);
        until("the hello is spliced", || held.load(SeqCst) == i + 1).await;
    }
    let grew = probe::rss(pid).saturating_sub(base);
    let per = grew / N as u64;
    eprintln!(
        "{N} masked connections with 16 KiB hellos: RSS +{:.1} MiB, {per} bytes each",
        grew as f64 / MIB as f64
    );
    assert!(per < 6 * 1024, "{per} bytes per masked connection");
    let masked = probe::metric(
        &probe::metrics_page(stats).await,
        "mtproxy_tls_handshakes_total{result=\"masked\"}",
    );
    assert_eq!(masked, N as u64 + 1);
    // Clients with the secret are served beside them.
    let errors = tls_clients(addr, 10).await;
    assert!(errors.is_empty(), "clients failed: {errors:#?}");
}

/// Item 8: 100 clients in ME mode each announce a frame of 1 000 000 bytes, send 900 KiB
/// of it and stop. The buffers holding their incomplete frames count against
/// `--msg-buffers-size` (32 MiB here): the biggest holders are shed until the total is
/// under the budget again; 64 readers beside them are all served.
#[tokio::test(flavor = "multi_thread")]
async fn incomplete_frames_count_against_the_budget() {
    let rig = MeRig::start(&["--msg-buffers-size", "32m"]).await;
    let (peak, base) = rig.watch_rss();
    let mut attackers = Vec::new();
    for _ in 0..100 {
        let mut c = Client::connect(rig.proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
            .await
            .unwrap();
        c.send_encrypted_raw(&1_000_000u32.to_le_bytes())
            .await
            .unwrap();
        // Shed clients may see the close while sending.
        let _ = c.send_encrypted_raw(&vec![0x11; 900 * 1024]).await;
        attackers.push(c);
    }
    let errors = legit(rig.proxy.addr(), 64, 10).await;
    all_served(&errors);
    let shed = probe::wait_stat(rig.stats, "connections_failed_lru", 60, LIMIT).await;
    eprintln!("{shed} of 100 incomplete frames shed");
    assert!(
        shed >= 60,
        "only {shed} shed: 100 x 900 KiB over a 32 MiB budget"
    );
    peak_under(&peak, base, 32 * MIB + 32 * MIB, "a 32 MiB budget");
    drop(attackers);
}

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces): utime and stime are the
    // 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let field = |i: usize| f.get(i).copied().unwrap_or(0);
    (field(11) + field(12)) as f64 / tick
}

/// Item 10: 8 senders without a secret (a header no secret accepts, then 64 MiB each as
/// fast as they can, then silence until the handshake deadline closes them): skip mode
/// discards in the kernel, a megabyte per call; clients with the secret are served beside
/// them and the rejected handshakes are counted. Prints the proxy's CPU per GB discarded
/// (1.8 s/GB reading 512 bytes at a time).
#[tokio::test(flavor = "multi_thread")]
async fn senders_without_a_secret_are_discarded_cheaply() {
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:{}", dc.addr());
    let stats = common::free_port();
    let sp = stats.to_string();
    let proxy = common::start(&[
        "-S",
        S1,
        "--dc-override",
        &o,
        "-p",
        &sp,
        "--http-stats",
        "--handshake-timeout",
        "6",
    ]);
    let (pid, addr) = (proxy.child.id(), proxy.addr());
    let cpu0 = cpu_seconds(pid);
    let sent_all = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let sent_all = sent_all.clone();
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let mut sent = 0u64;
                let chunk = vec![0x33u8; 256 * 1024];
                if s.write_all(&[0u8; 64]).await.is_ok() {
                    while sent < 64 * MIB && s.write_all(&chunk).await.is_ok() {
                        sent += chunk.len() as u64;
                    }
                }
                sent_all.fetch_add(1, SeqCst);
                // Closed by the proxy at the handshake deadline.
                let mut end = [0u8; 1];
                let closed = timeout(LIMIT, s.read(&mut end)).await;
                assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
                sent
            })
        })
        .collect();
    // Clients with the secret beside them, one every 100 ms while the senders send.
    let mut served = 0;
    while sent_all.load(SeqCst) < 8 {
        let mut c = Client::connect(addr, ClientOpts::new(key(), Tag::Intermediate))
            .await
            .unwrap();
        let p = payload(1000);
        c.send_packet(&p).await.unwrap();
        let back = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
        assert_eq!(back, p);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = cpu_seconds(pid) - cpu0;
    let mut total = 0;
    for s in senders {
        total += s.await.unwrap();
    }
    let gb = total as f64 / 1e9;
    eprintln!(
        "{gb:.2} GB discarded from 8 senders in skip mode: {:.2} CPU-s per GB; {served} clients served beside them",
        cpu / gb
    );
    let rejected = probe::metric(
        &probe::metrics_page(stats).await,
        "mtproxy_handshakes_total{result=\"rejected\"}",
    );
    assert_eq!(rejected, 8);
    assert!(served > 0);
    assert_eq!(
        total,
        8 * 64 * MIB,
        "the senders were cut off before the deadline"
    );
    assert!(cpu / gb < 0.6, "{:.2} CPU-s per GB discarded", cpu / gb);
}

/// Runs the proxy with `-l <dir>/proxy.log` plus `extra`, stdout captured; once the log
/// file is open (`-d` opens it, else the SIGUSR1 sent here) returns (stdout's lines so
/// far, the log file's text).
fn links_and_log(extra: &[&str]) -> (String, String) {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!(
        "mtproxy-links-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // Writable by the user the proxy drops to.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let log = dir.join("proxy.log");
    let port = common::free_port().to_string();
    let mut args = vec!["-S", S1, "--address", "127.0.0.1", "-H", &port];
    let log_s = log.to_string_lossy().into_owned();
    args.extend_from_slice(&["-l", &log_s]);
    args.extend_from_slice(extra);
    let mut child = std::process::Command::new(common::BIN)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let end = std::time::Instant::now() + LIMIT;
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut out = Vec::new();
    let mut signalled = false;
    while !read().contains("main loop") && !read().contains("logs reopened") {
        assert!(
            std::time::Instant::now() < end,
            "the log file never filled: {:?}",
            read()
        );
        while let Ok(l) = rx.try_recv() {
            out.push(l);
        }
        if !signalled && out.iter().filter(|l| l.contains("link")).count() >= 4 {
            // The links are out: the start-up is past them; open the file if -d did not.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
            signalled = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
        out.push(l);
    }
    let text = read();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    (out.join("\n"), text)
}

/// Item 6: the links carry the secret; with `-l` (the file opened by SIGUSR1) and with
/// `-d -l` they go to the stdout the proxy started with, never into the log file.
#[test]
fn the_links_never_go_to_the_log_file() {
    for extra in [&[][..], &["-d"][..]] {
        let (stdout, log) = links_and_log(extra);
        assert!(
            stdout.contains(S1),
            "{extra:?}: the links are not on stdout: {stdout}"
        );
        assert!(!log.is_empty(), "{extra:?}: nothing logged");
        assert!(
            !log.to_lowercase().contains(S1) && !log.contains(&S1[..12]),
            "{extra:?}: the secret is in the log file:\n{log}"
        );
    }
}
