//! Drop-in fidelity with the C proxy (issue 17): the figures an operator graphs and the
//! behaviours their scripts see, on the real binary, all on loopback.
//!
//! Every test runs ours. When `MTPROXY_REFERENCE_BIN` names the C `mtproto-proxy`, the
//! same test runs C on its own fakes with the same command line and holds it to the same
//! checks (otherwise it says on stderr that it skipped C):
//! - `-M 2`: the master's totals are the sum over its workers, checked against the ME
//!   connections the fake ME holds and the clients held open;
//! - byte counters: `tcp_readv_bytes`, `tcp_writev_bytes` and `/metrics`
//!   `mtproxy_relayed_bytes_total` in direct, ME and fake-TLS mode against the bytes the
//!   client moved. Ours counts exactly the obfuscated2 stream after the 64-byte header
//!   (TLS record headers not counted; padded frames: ± the proxy's 0–3 padding bytes per
//!   frame). C counts every socket: the header, its ME framing and the `/stats` exchange
//!   on top, at most [`C_SLACK`] here;
//! - `-l`: stderr until SIGUSR1 or `-d`; an unwritable path starts and keeps serving;
//! - `-p` above 65535: the stats port is taken modulo 65536.

mod common;

use mtproxy_testkit::fake_me::{FakeMe, FakeMeConfig, Responder};
use mtproxy_testkit::tls_site::{SiteOpts, TlsSite};
use mtproxy_testkit::{Client, ClientOpts, FakeDc, Tag};
use rand::RngCore;
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const S1: &str = "0123456789abcdef0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(30);
/// What C counts on top of the client's bytes in the byte test: the 64-byte header, the
/// ME framing of each packet (RPC header, frame header, CBC padding: under 128 bytes per
/// packet each way), the `/stats` request and answer in between (under 8 KiB) and pings.
const C_SLACK: u64 = 16 * 1024;

fn key() -> [u8; 16] {
    hex::decode(S1).unwrap().try_into().unwrap()
}

/// The C binary, or `None` after saying on stderr why C is skipped.
fn reference() -> Option<String> {
    use std::io::Write;
    match std::env::var("MTPROXY_REFERENCE_BIN") {
        Ok(p) if Path::new(&p).is_file() => Some(p),
        other => {
            let _ = writeln!(
                std::io::stderr(),
                "C reference skipped: MTPROXY_REFERENCE_BIN is {other:?}, not a file"
            );
            None
        }
    }
}

/// Ours, then C when there is one.
fn binaries() -> Vec<(&'static str, String)> {
    let mut v = vec![("ours", common::BIN.to_string())];
    if let Some(c) = reference() {
        v.push(("C", c));
    }
    v
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Options both binaries get: as root, `-u root` (C's default user `mtproxy` may not
/// exist); `-c 10000` (C exits when it cannot raise the fd limit to 65552).
fn base_args() -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if is_root() {
        a.extend(["-u".into(), "root".into()]);
    }
    a.extend(["-c".into(), "10000".into()]);
    a
}

/// A temp dir with a proxy secret and a config naming a fake ME on two addresses; the
/// fake ME itself. Removed on drop.
struct MeWorld {
    dir: PathBuf,
    me: FakeMe,
}

impl MeWorld {
    async fn new(name: &str) -> MeWorld {
        let dir = std::env::temp_dir().join(format!(
            "mtproxy-fidelity-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // Writable by any user the proxy might run as (the -l tests write logs here).
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let mut secret = vec![0u8; 128];
        rand::thread_rng().fill_bytes(&mut secret);
        std::fs::write(dir.join("proxy-secret"), &secret).unwrap();
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let me = FakeMe::start(
            FakeMeConfig::new(secret)
                .listen_on([lo, lo])
                .responder(Responder::Echo),
        )
        .await
        .unwrap();
        let (a, b) = (me.addrs()[0], me.addrs()[1]);
        std::fs::write(
            dir.join("proxy-multi.conf"),
            format!("proxy_for 1 {a};\nproxy_for -1 {a};\nproxy_for 2 {b};\nproxy_for -2 {b};\ndefault 2;\n"),
        )
        .unwrap();
        MeWorld { dir, me }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// C's command line for ME mode: `base_args`, `extra`, the secret, the config.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a = base_args();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(["-S", S1, "--aes-pwd"].map(String::from));
        a.push(self.path("proxy-secret"));
        a.push(self.path("proxy-multi.conf"));
        a
    }
}

impl Drop for MeWorld {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(bin: &str, args: &[String]) -> common::Proxy {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    common::start_bin(Path::new(bin), &a)
}

async fn http_get(port: u16, path: &str) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.contains(" 200 ") => Ok(body.to_string()),
        _ => Err(format!("not a 200 answer: {text:.200}")),
    }
}

type Map = HashMap<String, String>;

async fn try_stats(port: u16) -> Result<Map, String> {
    let body = http_get(port, "/stats").await?;
    Ok(body
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

async fn stats(port: u16) -> Map {
    try_stats(port).await.unwrap()
}

fn num(m: &Map, key: &str) -> u64 {
    m.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number for {key}: {:?}", m.get(key)))
}

/// Polls `/stats` until `ok` holds; panics after [`LIMIT`] with `what` and the last page.
/// A port not open yet counts as not yet (C's `-M` master opens it after its workers'
/// `main loop`).
async fn wait_stats(port: u16, what: &str, mut ok: impl FnMut(&Map) -> bool) -> Map {
    let end = Instant::now() + LIMIT;
    loop {
        let m = try_stats(port).await.unwrap_or_default();
        if !m.is_empty() && ok(&m) {
            return m;
        }
        assert!(
            Instant::now() < end,
            "{what}: never true; last /stats: {m:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- -M 2 ------------------------------------------------------------------------------

/// `-M 2` (the Docker default): the master's `total_*` keys are the sums over the workers,
/// as in C. Two targets per worker: `total_*_targets` 4, the section's one pool 2; the ME
/// connections the fake ME holds are the sum of every process's pool; six clients held
/// open, wherever the kernel put them, are all counted.
#[tokio::test(flavor = "multi_thread")]
async fn workers_totals_are_the_sum_over_workers() {
    for (name, bin) in binaries() {
        let w = MeWorld::new("workers").await;
        let sp = common::free_port();
        let proxy = start(
            &bin,
            &w.args(&["-M", "2", "-p", &sp.to_string(), "--http-stats"]),
        );
        // Every ME connection the fake sees (C's master keeps a pool of its own too).
        let m = wait_stats(sp, "targets ready in both workers", |m| {
            num(m, "total_ready_targets") == 4
                && num(m, "total_allocated_outbound_connections") == w.me.live_connections() as u64
        })
        .await;
        let conns = w.me.live_connections() as u64;
        assert!(conns >= 16, "{name}: 2 workers × 2 targets × 4: {conns}");
        for (k, want) in [
            ("total_declared_targets", 4),
            ("total_allocated_targets", 4),
            ("total_inactive_targets", 0),
            ("ready_targets", 2),
            ("allocated_targets", 2),
            ("active_targets", 2),
            ("total_max_special_connections", 2 * 10_000),
            ("workers", 2),
        ] {
            assert_eq!(num(&m, k), want, "{name}: {k}");
        }

        let mut clients = Vec::new();
        for _ in 0..6 {
            let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
                .await
                .unwrap();
            let p = packet(256);
            c.send_packet(&p).await.unwrap();
            let back = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
            assert_eq!(back, p, "{name}: echo");
            clients.push(c);
        }
        // C's workers publish their counters on their own schedule: wait for all of them.
        let m = wait_stats(sp, "six clients counted", |m| {
            [
                "total_special_connections",
                "ext_connections",
                "ext_connections_created",
                "tot_forwarded_queries",
                "tot_forwarded_responses",
            ]
            .iter()
            .all(|k| num(m, k) == 6)
        })
        .await;
        // Clients, every process's ME connections, and this stats connection.
        assert_eq!(
            num(&m, "total_connections"),
            6 + w.me.live_connections() as u64 + num(&m, "http_connections"),
            "{name}"
        );
        drop(clients);
        drop(proxy);
    }
}

// ---- inbound_connections_accepted ------------------------------------------------------

/// C counts an accepted connection twice (at accept(2) and when it sets the connection
/// up): one client and the stats connection asking add 4, in ours as in C.
#[tokio::test(flavor = "multi_thread")]
async fn accepted_connections_count_twice_like_c() {
    for (name, bin) in binaries() {
        let w = MeWorld::new("accepted").await;
        let sp = common::free_port();
        let proxy = start(&bin, &w.args(&["-p", &sp.to_string(), "--http-stats"]));
        let s0 = wait_stats(sp, "ME targets ready", |m| num(m, "ready_targets") == 2).await;
        let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
            .await
            .unwrap();
        let p = packet(64);
        c.send_packet(&p).await.unwrap();
        assert_eq!(timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap(), p);
        let s1 = stats(sp).await;
        assert_eq!(
            num(&s1, "inbound_connections_accepted") - num(&s0, "inbound_connections_accepted"),
            4,
            "{name}: one client and one stats connection, each counted twice"
        );
    }
}

// ---- byte counters ---------------------------------------------------------------------

/// An "encrypted" MTProto packet (non-zero auth_key_id), `n` bytes, a multiple of 4.
fn packet(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n.max(56) & !3];
    rand::thread_rng().fill_bytes(&mut v);
    v[0] = 1;
    v
}

/// Bytes one client moved after its header: (sent, received), as frames on the wire.
/// Every packet goes out with no padding and comes back echoed; `padded` says the answer
/// may carry 0–3 padding bytes the reader drops (returned as the third figure: the slack).
async fn exchange(addr: SocketAddr, opts: ClientOpts, sizes: &[usize]) -> (u64, u64, u64) {
    let padded = opts.tag == Tag::Padded;
    let mut c = Client::connect(addr, opts).await.unwrap();
    let (mut up, mut down) = (0u64, 0u64);
    for &n in sizes {
        let p = packet(n);
        c.send_frame(&p, 0, false).await.unwrap();
        let back = timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap();
        assert_eq!(back[..p.len()], p[..], "echo");
        up += 4 + p.len() as u64;
        down += 4 + back.len() as u64;
    }
    let slack = if padded { 3 * sizes.len() as u64 } else { 0 };
    (up, down, slack)
}

/// The relayed-bytes figures of `/stats` and `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct Bytes {
    readv: u64,
    writev: u64,
    /// `/metrics` (ours only): up, down.
    up: u64,
    down: u64,
}

async fn bytes(port: u16, ours: bool) -> Bytes {
    let m = stats(port).await;
    let mut b = Bytes {
        readv: num(&m, "tcp_readv_bytes"),
        writev: num(&m, "tcp_writev_bytes"),
        ..Bytes::default()
    };
    if ours {
        let text = http_get(port, "/metrics").await.unwrap();
        let metric = |dir: &str| -> u64 {
            let key = format!("mtproxy_relayed_bytes_total{{direction=\"{dir}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in /metrics"))
        };
        b.up = metric("up");
        b.down = metric("down");
    }
    b
}

/// Ours: every counter moved by exactly the client's bytes (the down side within `slack`).
async fn assert_ours_counted(port: u16, mode: &str, before: Bytes, moved: (u64, u64, u64)) {
    let (up, down, slack) = moved;
    let end = Instant::now() + LIMIT;
    loop {
        let b = bytes(port, true).await;
        let (du, dd) = (b.up - before.up, b.down - before.down);
        let (dr, dw) = (b.readv - before.readv, b.writev - before.writev);
        let ok = du == up && (down..=down + slack).contains(&dd) && dr == du + dd && dw == du + dd;
        if ok {
            return;
        }
        assert!(
            Instant::now() < end,
            "{mode}: client moved {up} up, {down} (+{slack}) down; counted up {du}, down {dd}, \
             tcp_readv_bytes +{dr}, tcp_writev_bytes +{dw}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Direct mode (ours only: C has none): the counters equal the client's bytes exactly.
#[tokio::test(flavor = "multi_thread")]
async fn byte_counters_equal_the_client_bytes_in_direct_mode() {
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let sp = common::free_port();
    let proxy = common::start(&[
        "-S",
        S1,
        "--dc-override",
        &o,
        "-p",
        &sp.to_string(),
        "--http-stats",
    ]);
    let before = bytes(sp, true).await;
    let opts = ClientOpts::new(key(), Tag::Intermediate);
    let moved = exchange(proxy.addr(), opts, &[100_000, 100_000, 64, 4096]).await;
    assert_ours_counted(sp, "direct", before, moved).await;
}

/// ME mode, the case (2 × 100 KB each way and some small packets): ours counts
/// exactly the client's bytes; C, when there is one, counts them plus its framing.
#[tokio::test(flavor = "multi_thread")]
async fn byte_counters_equal_the_client_bytes_in_me_mode() {
    let sizes = [100_000, 100_000, 64, 4096];
    for (name, bin) in binaries() {
        let w = MeWorld::new("bytes").await;
        let sp = common::free_port();
        let proxy = start(&bin, &w.args(&["-p", &sp.to_string(), "--http-stats"]));
        let ours = name == "ours";
        wait_stats(sp, "ME targets ready", |m| num(m, "ready_targets") == 2).await;
        let before = bytes(sp, ours).await;
        let opts = ClientOpts::new(key(), Tag::Intermediate);
        let moved = exchange(proxy.addr(), opts, &sizes).await;
        if ours {
            assert_ours_counted(sp, "ME", before, moved).await;
            continue;
        }
        // C: both directions of both sockets, at least the client's bytes, plus framing.
        let client = moved.0 + moved.1;
        let end = Instant::now() + LIMIT;
        loop {
            let b = bytes(sp, false).await;
            let (dr, dw) = (b.readv - before.readv, b.writev - before.writev);
            let ok = (client..=client + C_SLACK).contains(&dr)
                && (client..=client + C_SLACK).contains(&dw);
            if ok {
                break;
            }
            assert!(
                Instant::now() < end,
                "C: client moved {client} bytes; tcp_readv_bytes +{dr}, tcp_writev_bytes +{dw}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Fake TLS in ME mode (ours): the TLS handshake and record headers are not counted, the
/// obfuscated2 stream inside is (the proxy's answers carry 0–3 padding bytes each).
#[tokio::test(flavor = "multi_thread")]
async fn byte_counters_equal_the_client_bytes_in_fake_tls_mode() {
    let w = MeWorld::new("tls").await;
    let site = TlsSite::start("127.0.0.1:0".parse().unwrap(), SiteOpts::default())
        .await
        .unwrap();
    let sp = common::free_port();
    let mask = format!("127.0.0.1:{}", site.addr().port());
    let proxy = start(
        common::BIN,
        &w.args(&[
            "-D",
            "localhost",
            "--mask-host",
            &mask,
            "-p",
            &sp.to_string(),
            "--http-stats",
        ]),
    );
    wait_stats(sp, "ME targets ready", |m| num(m, "ready_targets") == 2).await;
    let before = bytes(sp, true).await;
    let opts = ClientOpts::tls(key(), Some("localhost".into()));
    let moved = exchange(proxy.addr(), opts, &[100_000, 100_000, 64, 4096]).await;
    assert_ours_counted(sp, "fake TLS", before, moved).await;
}

// ---- -l --------------------------------------------------------------------------------

/// A proxy in ME mode started by hand (stderr to a file we read, a stats port), killed on
/// drop.
struct Started {
    child: std::process::Child,
    stderr: PathBuf,
    port: u16,
    stats: u16,
}

impl Started {
    fn spawn(bin: &str, w: &MeWorld, extra: &[&str]) -> Started {
        let (port, stats) = (common::free_port(), common::free_port());
        let stderr = w.dir.join(format!("stderr-{}", rand::random::<u32>()));
        let child = Command::new(bin)
            .args(w.args(extra))
            .args(["--address", "127.0.0.1", "-H", &port.to_string()])
            .args(["-p", &stats.to_string(), "--http-stats"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Started {
            child,
            stderr,
            port,
            stats,
        }
    }

    /// Waits for `main loop` on stderr or in `log`, and for the ME pool (C drops a packet
    /// that comes before it).
    async fn ready(&self, name: &str, log: &Path) {
        assert!(
            wait_until(|| [read(&self.stderr), read(log)]
                .iter()
                .any(|t| t.contains("main loop")))
            .await,
            "{name}: stderr {}",
            self.stderr()
        );
        wait_stats(self.stats, "ME targets ready", |m| {
            num(m, "ready_targets") == 2
        })
        .await;
    }

    fn stderr(&self) -> String {
        read(&self.stderr)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, then the exit code (None: still running after [`LIMIT`]).
    fn stop(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let end = Instant::now() + LIMIT;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    async fn round_trip(&self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut c = Client::connect(addr, ClientOpts::new(key(), Tag::Intermediate))
            .await
            .unwrap();
        let p = packet(128);
        c.send_packet(&p).await.unwrap();
        assert_eq!(timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap(), p);
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(p: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Polls until `ok()`; false after [`LIMIT`].
async fn wait_until(ok: impl Fn() -> bool) -> bool {
    let end = Instant::now() + LIMIT;
    while Instant::now() < end {
        if ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Polls until `ok(text of p)`; false after [`LIMIT`].
async fn wait_file(p: &Path, ok: impl Fn(&str) -> bool) -> bool {
    wait_until(|| ok(&read(p))).await
}

/// `-l FILE` without `-d`: everything on stderr until SIGUSR1 (the file does not even exist
/// before), then everything in the file; as C (spec backend-ops §4.5).
#[tokio::test(flavor = "multi_thread")]
async fn log_file_is_used_from_sigusr1_on() {
    for (name, bin) in binaries() {
        let w = MeWorld::new("log").await;
        let log = w.dir.join("proxy.log");
        let mut p = Started::spawn(&bin, &w, &["-l", log.to_str().unwrap()]);
        p.ready(name, &log).await;
        assert!(p.stderr().contains("main loop"), "{name}");
        p.round_trip().await;
        assert!(!log.exists(), "{name}: -l opened before SIGUSR1");
        p.signal(libc::SIGUSR1);
        assert!(
            wait_until(|| log.exists()).await,
            "{name}: SIGUSR1 did not open the log"
        );
        p.round_trip().await;
        assert_eq!(p.stop(), Some(0), "{name}");
        let (file, err) = (read(&log), p.stderr());
        assert!(file.contains("Terminated by SIGTERM"), "{name}: log {file}");
        assert!(!file.contains("main loop"), "{name}: log {file}");
        assert!(
            !err.contains("Terminated by SIGTERM"),
            "{name}: stderr {err}"
        );
    }
}

/// `-l` naming a path that cannot be opened: the proxy starts and serves (C opens it only
/// later, and loses its output then); SIGUSR1 does not stop it.
#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_log_file_does_not_stop_the_proxy() {
    for (name, bin) in binaries() {
        let w = MeWorld::new("badlog").await;
        let bad = w.dir.join("no-such-dir").join("proxy.log");
        let mut p = Started::spawn(&bin, &w, &["-l", bad.to_str().unwrap()]);
        p.ready(name, &bad).await;
        p.round_trip().await;
        p.signal(libc::SIGUSR1);
        // Both say on stderr that the signal came (C: "received signal 10").
        assert!(
            wait_file(&p.stderr, |t| t.contains("received signal 10")).await,
            "{name}: stderr {}",
            p.stderr()
        );
        p.round_trip().await;
        assert_eq!(p.stop(), Some(0), "{name}");
        if name == "ours" {
            assert!(p.stderr().contains("cannot open the log file"));
        }
    }
}

/// `-d -l FILE`: the start-up lines before the switch (ports bound, privileges dropped)
/// on stderr, `main loop` and everything after in the file, as C's `server_init`.
#[tokio::test(flavor = "multi_thread")]
async fn daemonize_switches_to_the_log_file_at_server_init() {
    for (name, bin) in binaries() {
        let w = MeWorld::new("dlog").await;
        let log = w.dir.join("proxy.log");
        let mut p = Started::spawn(&bin, &w, &["-d", "-l", log.to_str().unwrap()]);
        p.ready(name, &log).await;
        assert!(read(&log).contains("main loop"), "{name}: {}", read(&log));
        p.round_trip().await;
        assert_eq!(p.stop(), Some(0), "{name}");
        let (file, err) = (read(&log), p.stderr());
        assert!(err.contains("Invoking engine"), "{name}: stderr {err}");
        assert!(!err.contains("main loop"), "{name}: stderr {err}");
        assert!(!file.contains("Invoking engine"), "{name}: log {file}");
        assert!(file.contains("Terminated by SIGTERM"), "{name}: log {file}");
    }
}

// ---- -p above 65535 --------------------------------------------------------------------

/// `-p P+65536 --http-stats` serves `/stats` on P, as C (which keeps the low 16 bits).
#[tokio::test(flavor = "multi_thread")]
async fn stats_port_above_65535_wraps_like_c() {
    for (name, bin) in binaries() {
        let w = MeWorld::new("port").await;
        let sp = common::free_port();
        let given = (u32::from(sp) + 65536).to_string();
        let proxy = start(&bin, &w.args(&["-p", &given, "--http-stats"]));
        wait_stats(sp, "the stats port", |m| {
            m.contains_key("total_ready_targets")
        })
        .await;
        if name == "ours" {
            assert!(
                proxy.log_text().contains(&format!("using port {sp}")),
                "{}",
                proxy.log_text()
            );
        }
    }
}
