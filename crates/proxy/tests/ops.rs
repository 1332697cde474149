//! Operations: graceful SIGTERM with draining, SIGUSR1 log reopening, privilege drop,
//! connection caps. The real binary on loopback.

mod common;

use mtproxy_testkit::{Client, ClientOpts, FakeDc, Tag};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const S1: &str = "0123456789abcdef0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(30);

fn key() -> [u8; 16] {
    hex::decode(S1).unwrap().try_into().unwrap()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// Waits for the child to exit (polling waitpid without blocking the runtime).
async fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn echo(c: &mut Client) {
    let p = vec![5u8; 64];
    c.send_packet(&p).await.unwrap();
    assert_eq!(timeout(LIMIT, c.recv_packet()).await.unwrap().unwrap(), p);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_accepting_and_exits_0_once_sessions_end() {
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let mut proxy = common::start(&["-S", S1, "--dc-override", &o, "--drain-timeout", "20"]);
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
        .await
        .unwrap();
    echo(&mut c).await;
    signal(proxy.child.id(), libc::SIGTERM);
    assert!(proxy.wait_log("stopped accepting", LIMIT));
    // No new connections, but the open session keeps working.
    assert!(
        TcpStream::connect(proxy.addr()).await.is_err(),
        "still accepting after SIGTERM"
    );
    echo(&mut c).await;
    let t0 = Instant::now();
    drop(c);
    let code = wait_exit(&mut proxy.child, LIMIT).await;
    assert_eq!(code, Some(0));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "waited for the drain timeout although the session ended"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_stuck_session_exits_0_at_the_drain_timeout() {
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let mut proxy = common::start(&["-S", S1, "--dc-override", &o, "--drain-timeout", "1"]);
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Abridged))
        .await
        .unwrap();
    echo(&mut c).await;
    let t0 = Instant::now();
    signal(proxy.child.id(), libc::SIGTERM);
    let code = wait_exit(&mut proxy.child, LIMIT).await;
    assert_eq!(code, Some(0));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "exited before the drain timeout"
    );
    assert!(
        proxy.wait_log("drain timeout: closing 1 session", LIMIT),
        "{}",
        proxy.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_reopens_a_rotated_log() {
    let dir = std::env::temp_dir().join(format!("mtproxy-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Writable by the user the proxy drops to.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let log = dir.join("proxy.log");
    let stderr = dir.join("stderr");
    let port = common::free_port().to_string();
    let mut child = Command::new(common::BIN)
        .args([
            "-S",
            S1,
            "--address",
            "127.0.0.1",
            "-H",
            &port,
            "-l",
            log.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let wait_for = |p: std::path::PathBuf, needle: &'static str| async move {
        let end = Instant::now() + LIMIT;
        while Instant::now() < end {
            if read(&p).contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    // As C: stderr until the first SIGUSR1 opens -l (tests/fidelity.rs checks the
    // timing); here the rotation: each SIGUSR1 opens the path anew.
    assert!(
        wait_for(stderr.clone(), "main loop").await,
        "stderr: {}",
        read(&stderr)
    );
    signal(child.id(), libc::SIGUSR1);
    assert!(
        wait_for(log.clone(), "logs reopened").await,
        "log file: {}",
        read(&log)
    );
    let rotated = dir.join("proxy.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal(child.id(), libc::SIGUSR1);
    assert!(
        wait_for(log.clone(), "logs reopened").await,
        "new log: {:?}",
        read(&log)
    );
    assert_eq!(read(&rotated).matches("logs reopened").count(), 1);
    assert_eq!(read(&log).matches("logs reopened").count(), 1);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn status_field(pid: u32, field: &str) -> String {
    let t = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    t.lines()
        .find(|l| l.starts_with(field))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn user_option_drops_privileges_after_binding() {
    let proxy = common::start(&["-S", S1, "-u", "nobody"]);
    let uid_line = status_field(proxy.child.id(), "Uid:");
    let groups = status_field(proxy.child.id(), "Groups:");
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let want = nobody.uid.to_string();
        assert!(
            uid_line.split_whitespace().skip(1).all(|u| u == want),
            "{uid_line}"
        );
        assert_eq!(
            groups.split_whitespace().skip(1).collect::<Vec<_>>(),
            vec![nobody.gid.to_string()],
            "{groups}"
        );
        // The port bound as root still serves.
        let _ = TcpStream::connect(proxy.addr()).await.unwrap();
    } else {
        // Not root: -u is ignored, as C does.
        // SAFETY: getuid has no preconditions and cannot fail.
        let me = unsafe { libc::getuid() }.to_string();
        assert!(
            uid_line.split_whitespace().skip(1).all(|u| u == me),
            "{uid_line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_cap_refuses_the_65th_cleanly() {
    let sp = common::free_port().to_string();
    let proxy = common::start(&[
        "-S",
        S1,
        "-c",
        "64",
        "--handshake-timeout",
        "60",
        "-p",
        &sp,
        "--http-stats",
    ]);
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(TcpStream::connect(proxy.addr()).await.unwrap());
    }
    // The 64 are accepted (they sit in the handshake); the 65th is closed at once.
    let stats_port: u16 = sp.parse().unwrap();
    wait_stats(
        stats_port,
        "active_special_connections\t64",
        "all 64 accepted",
    )
    .await;
    let mut extra = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let n = timeout(LIMIT, extra.read(&mut buf))
        .await
        .expect("closed, not left hanging");
    assert!(matches!(n, Ok(0) | Err(_)));
    let b = stats_body(stats_port).await;
    assert!(b.contains("accept_connection_limit_failed\t1"), "{b}");
    assert!(b.contains("active_special_connections\t64"), "{b}");
    // Closed by the clients, the sessions end and give their places back: the count
    // returns to zero and a new connection is taken again.
    drop(held);
    wait_stats(
        stats_port,
        "active_special_connections\t0",
        "count back to 0",
    )
    .await;
    let _again = TcpStream::connect(proxy.addr()).await.unwrap();
    let b = wait_stats(
        stats_port,
        "active_special_connections\t1",
        "a new one taken",
    )
    .await;
    assert!(b.contains("accept_connection_limit_failed\t1"), "{b}");
}

/// Polls `/stats` until it contains `needle`; returns that body. Fails after `LIMIT`.
async fn wait_stats(port: u16, needle: &str, what: &str) -> String {
    let end = Instant::now() + LIMIT;
    loop {
        let b = stats_body(port).await;
        if b.contains(needle) {
            return b;
        }
        assert!(Instant::now() < end, "{what}: no {needle:?} in\n{b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stats_body(port: u16) -> String {
    http_get(port, "/stats").await
}

async fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET {path} HTTP/1.0\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn worker_pids(log: &str) -> Vec<(usize, u32)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split("worker ").nth(1)?;
            let (id, rest) = rest.split_once(" started (pid ")?;
            Some((id.parse().ok()?, rest.trim_end_matches(')').parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_share_the_port_a_killed_worker_is_replaced_and_stats_are_summed() {
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let sp = common::free_port().to_string();
    let mut proxy = common::start(&[
        "-S",
        S1,
        "--dc-override",
        &o,
        "-M",
        "2",
        "-p",
        &sp,
        "--http-stats",
    ]);
    // Each worker is started by its own task: the two lines come in either order.
    for w in ["worker 0 started", "worker 1 started"] {
        assert!(proxy.wait_log(w, LIMIT), "{}", proxy.log_text());
    }
    let before = worker_pids(&proxy.log_text());
    assert_eq!(before.len(), 2, "{before:?}");
    for _ in 0..10 {
        let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
            .await
            .unwrap();
        echo(&mut c).await;
    }
    // Both workers are serving: none died and was replaced on its own.
    let log = proxy.log_text();
    assert!(
        !log.contains("terminated") && !log.contains("cannot register"),
        "{log}"
    );
    assert_eq!(worker_pids(&log).len(), 2, "{log}");
    for _ in 0..10 {
        let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
            .await
            .unwrap();
        echo(&mut c).await;
    }
    // Kill worker 0 hard: the master starts a new one, the port keeps serving.
    let victim = before.iter().find(|(id, _)| *id == 0).unwrap().1;
    signal(victim, libc::SIGKILL);
    let end = Instant::now() + LIMIT;
    let replacement = loop {
        let now = worker_pids(&proxy.log_text());
        if let Some((_, pid)) = now.iter().find(|(id, pid)| *id == 0 && *pid != victim) {
            break *pid;
        }
        assert!(Instant::now() < end, "no replacement: {}", proxy.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(std::path::Path::new(&format!("/proc/{replacement}")).exists());
    for _ in 0..20 {
        let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Abridged))
            .await
            .unwrap();
        echo(&mut c).await;
    }
    // /stats sums the live workers (the killed one's counters died with it).
    let port: u16 = sp.parse().unwrap();
    let end = Instant::now() + LIMIT;
    loop {
        let b = stats_body(port).await;
        assert!(b.contains("workers\t2"), "{b}");
        let m = http_get(port, "/metrics").await;
        let hs: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix("mtproxy_client_accepted_total "))
            .unwrap()
            .parse()
            .unwrap();
        if hs >= 20 {
            break;
        }
        assert!(Instant::now() < end, "summed accepted stayed at {hs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGTERM to the master stops everything with exit 0.
    let pids = worker_pids(&proxy.log_text());
    signal(proxy.child.id(), libc::SIGTERM);
    assert_eq!(wait_exit(&mut proxy.child, LIMIT).await, Some(0));
    let end = Instant::now() + LIMIT;
    for (_, pid) in pids {
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false)
        {
            assert!(Instant::now() < end, "worker {pid} outlived the master");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// No secret ever appears in a log line, at the highest verbosity, through handshakes,
/// sessions and bad input; the links (which must carry it) go to stdout.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_in_any_log_line() {
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let o = format!("2:127.0.0.1:{}", dc.addr().port());
    let proxy = common::start(&[
        "-vvv",
        "-S",
        S1,
        "--dc-override",
        &o,
        "--handshake-timeout",
        "1",
    ]);
    let mut c = Client::connect(proxy.addr(), ClientOpts::new(key(), Tag::Intermediate))
        .await
        .unwrap();
    echo(&mut c).await;
    drop(c);
    let mut bad = TcpStream::connect(proxy.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut bad, &[0u8; 64])
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = timeout(LIMIT, bad.read_to_end(&mut sink)).await;
    assert!(proxy.wait_log("no secret matches", LIMIT));
    let log = proxy.log_text().to_lowercase();
    assert!(log.contains("links for 1 secret(s) printed on stdout"));
    assert!(!log.contains(S1), "the secret appeared in the log");
    assert!(
        !log.contains(&S1[..12]),
        "part of the secret appeared in the log"
    );
    // The links themselves are on stdout.
    let mut out = Command::new(common::BIN)
        .args([
            "-S",
            S1,
            "--address",
            "127.0.0.1",
            "-H",
            &common::free_port().to_string(),
            "--public-host",
            "proxy.example",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(out.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    out.kill().unwrap();
    out.wait().unwrap();
    assert!(
        first.contains("tg://proxy?server=proxy.example&port=") && first.contains(S1),
        "{first}"
    );
}

/// The proxy's side of the connection whose remote end is `client_port`, from the
/// kernel's table: (local port, timer kind). Timer kind 2 is the keepalive timer of an
/// established socket with SO_KEEPALIVE and nothing in flight (proc(5), /proc/net/tcp).
fn proxy_side(proxy_port: u16, client_port: u16) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
        let (local, remote) = (port(f[1])?, port(f[2])?);
        if local == proxy_port && remote == client_port && f[3] == "01" {
            u8::from_str_radix(f[5].split(':').next()?, 16).ok()
        } else {
            None
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn accepted_client_sockets_have_keepalive() {
    // C sets SO_KEEPALIVE on every client socket; we set it on the listening socket and
    // the kernel copies it to each accepted one. Seen from the kernel's socket table.
    let proxy = common::start(&["-S", S1, "--handshake-timeout", "60"]);
    let client = TcpStream::connect(proxy.addr()).await.unwrap();
    let (pp, cp) = (proxy.addr().port(), client.local_addr().unwrap().port());
    let end = Instant::now() + LIMIT;
    let timer = loop {
        if let Some(t) = proxy_side(pp, cp) {
            break t;
        }
        assert!(Instant::now() < end, "the proxy's socket never showed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(timer, 2, "no keepalive timer on the accepted socket");
    drop(client);
}
