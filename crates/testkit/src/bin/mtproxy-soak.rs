//! `mtproxy-soak`: holds many sessions through a real `mtproto-proxy` (direct mode, to an
//! in-process fake DC on loopback) with mixed traffic and churn for a set time, samples the
//! proxy's open fds and RSS every few seconds, and checks that both stay flat after warm-up.
//!
//! ```text
//! mtproxy-soak [--proxy-bin PATH] [--sessions N] [--duration SECS] [--sample SECS]
//!              [--tolerance FRACTION] [--json PATH] [--workers N] [--dc-process]
//! ```
//! Descriptors: a direct-mode session costs the proxy two and this process two (client and
//! fake-DC ends). Where the hard RLIMIT_NOFILE cannot hold that, `--dc-process` runs the
//! fake DC as its own process (`fake-dc`, next to this binary) and `--workers N` runs the
//! proxy with `-M N`, so each worker holds its share; fds and RSS are then summed over the
//! proxy's master and workers. Both are chosen automatically when the limit is too low.
//! Defaults: 10 000 sessions, 900 s, a sample every 5 s, 10 % RSS tolerance. Every few
//! milliseconds a random session sends a packet of 64 B..64 KiB and checks the echo; every
//! second 1 % of the sessions close and are replaced. The last line is
//! `soak: N passed, M failed` (checks: no session error, fds flat, RSS flat).

use mtproxy_testkit::{Client, ClientOpts, FakeDc, Tag};
use rand::{Rng, RngCore};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

struct Args {
    proxy_bin: String,
    sessions: usize,
    duration: Duration,
    sample: Duration,
    tolerance: f64,
    json: Option<String>,
    workers: usize,
    dc_process: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        proxy_bin: "target/release/mtproto-proxy".into(),
        sessions: 10_000,
        duration: Duration::from_secs(900),
        sample: Duration::from_secs(5),
        tolerance: 0.10,
        json: None,
        workers: 0,
        dc_process: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--proxy-bin" => a.proxy_bin = v(),
            "--sessions" => a.sessions = v().parse().expect("--sessions N"),
            "--duration" => {
                a.duration = Duration::from_secs_f64(v().parse().expect("--duration SECS"))
            }
            "--sample" => a.sample = Duration::from_secs_f64(v().parse().expect("--sample SECS")),
            "--tolerance" => a.tolerance = v().parse().expect("--tolerance FRACTION"),
            "--json" => a.json = Some(v()),
            "--workers" => a.workers = v().parse().expect("--workers N"),
            "--dc-process" => a.dc_process = true,
            "-h" | "--help" => {
                println!("usage: mtproxy-soak [--proxy-bin PATH] [--sessions N] [--duration SECS] [--sample SECS] [--tolerance F] [--json PATH] [--workers N] [--dc-process]");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Raises the soft descriptor limit towards `want`; returns the hard limit.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct pointer.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = want.min(lim.rlim_max.max(want));
        lim.rlim_max = lim.rlim_max.max(want);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_max
}

/// The proxy's processes: `pid` and its direct children (the `-M` workers).
fn proxy_pids(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // Field 4 (ppid) follows the ")" that ends the command name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// Open fds and RSS (KiB) summed over the proxy's processes.
fn tree_sample(pid: u32) -> (usize, u64) {
    proxy_pids(pid)
        .into_iter()
        .map(proc_sample)
        .fold((0, 0), |(f, r), (f2, r2)| (f + f2, r + r2))
}

/// The fake DC as its own process (`fake-dc` next to this binary): its address and child.
fn spawn_fake_dc() -> (std::net::SocketAddr, std::process::Child) {
    let bin = std::env::current_exe()
        .expect("own path")
        .with_file_name("fake-dc");
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("fake-dc output");
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("fake-dc said {line:?}"));
    (addr, child)
}

fn proc_sample(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    (fds, rss)
}

const SECRET: [u8; 16] = [0x5a; 16];

async fn open(addr: std::net::SocketAddr, i: usize) -> std::io::Result<Client> {
    let tag = Tag::ALL[i % 3];
    let mut c = Client::connect(addr, ClientOpts::new(SECRET, tag)).await?;
    let p = vec![7u8; 64];
    c.send_packet(&p).await?;
    c.recv_packet().await?;
    Ok(c)
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    let mut a = a;
    let hard = raise_nofile(a.sessions as u64 * 4 + 1000);
    // This process holds the client ends (and the DC ends unless the DC runs apart); the
    // proxy two per session (split over its workers).
    let need_here = a.sessions as u64 * if a.dc_process { 1 } else { 2 } + 500;
    if need_here > hard && !a.dc_process {
        a.dc_process = true;
        println!("soak: descriptor hard limit {hard}: running the fake DC as its own process");
    }
    let per_proxy = |w: usize| (a.sessions as u64 * 2).div_ceil(w.max(1) as u64) + 500;
    if per_proxy(a.workers) > hard && a.workers == 0 {
        a.workers = (1..=8).find(|&w| per_proxy(w) <= hard).unwrap_or(8);
        println!(
            "soak: descriptor hard limit {hard}: running the proxy with -M {}",
            a.workers
        );
    }
    let (dc_addr, mut dc_child, _dc_inproc) = if a.dc_process {
        let (addr, child) = spawn_fake_dc();
        (addr, Some(child), None)
    } else {
        let dc = FakeDc::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("fake DC");
        (dc.addr(), None, Some(dc))
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&a.proxy_bin)
        .args([
            "-S",
            &hex::encode(SECRET),
            "--address",
            "127.0.0.1",
            "-H",
            &port.to_string(),
        ])
        .args(["--dc-override", &format!("2:{dc_addr}")])
        .args(if a.workers > 0 {
            vec!["-M".to_string(), a.workers.to_string()]
        } else {
            Vec::new()
        })
        .args([
            "-c",
            &(a.sessions * 2 + 1000).to_string(),
            "--idle-timeout",
            "3600",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the proxy (build it with cargo build --release)");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("main loop") => break,
            Some(Ok(_)) => {}
            _ => panic!("the proxy did not start"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let pid = child.id();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (fd0, rss0) = tree_sample(pid);
    println!(
        "soak: proxy pid {pid} ({} process(es)), empty: {fd0} fds, {rss0} KiB RSS; opening {} sessions",
        proxy_pids(pid).len(),
        a.sessions
    );

    // Open the sessions, 256 at a time.
    let slots: Arc<Vec<Mutex<Option<Client>>>> =
        Arc::new((0..a.sessions).map(|_| Mutex::new(None)).collect());
    let errors = Arc::new(AtomicU64::new(0));
    let round_trips = Arc::new(AtomicU64::new(0));
    let t_open = Instant::now();
    for chunk in (0..a.sessions).collect::<Vec<_>>().chunks(256) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let slots = slots.clone();
            tasks.push(tokio::spawn(async move {
                let c = open(addr, i).await;
                let ok = c.is_ok();
                *slots[i].lock().await = c.ok();
                ok
            }));
        }
        for t in tasks {
            if !t.await.unwrap() {
                errors.fetch_add(1, Relaxed);
            }
        }
    }
    let (fd1, rss1) = tree_sample(pid);
    println!(
        "soak: {} sessions open in {:.1} s: {fd1} fds, {rss1} KiB RSS ({:.2} KiB per session)",
        a.sessions,
        t_open.elapsed().as_secs_f64(),
        (rss1.saturating_sub(rss0)) as f64 / a.sessions as f64
    );

    // Mixed traffic and churn until the end.
    let end = Instant::now() + a.duration;
    let workers = 16;
    let mut traffic = Vec::new();
    for _ in 0..workers {
        let (slots, errors, rts) = (slots.clone(), errors.clone(), round_trips.clone());
        traffic.push(tokio::spawn(async move {
            while Instant::now() < end {
                let i = rand::thread_rng().gen_range(0..slots.len());
                let mut slot = slots[i].lock().await;
                let Some(c) = slot.as_mut() else { continue };
                let n = 4 * rand::thread_rng().gen_range(16..16 * 1024);
                let mut p = vec![0u8; n];
                rand::thread_rng().fill_bytes(&mut p);
                p[0] = 1;
                let ok = async {
                    c.send_packet(&p).await?;
                    let back = tokio::time::timeout(Duration::from_secs(30), c.recv_packet())
                        .await
                        .map_err(std::io::Error::other)??;
                    if back.len() < p.len() || back[..p.len()] != p[..] {
                        return Err(std::io::Error::other("echo differs"));
                    }
                    Ok::<_, std::io::Error>(())
                }
                .await;
                match ok {
                    Ok(()) => {
                        rts.fetch_add(1, Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Relaxed);
                        *slot = None;
                    }
                }
                drop(slot);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    {
        let (slots, errors) = (slots.clone(), errors.clone());
        traffic.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while Instant::now() < end {
                tick.tick().await;
                for _ in 0..(slots.len() / 100).max(1) {
                    let i = rand::thread_rng().gen_range(0..slots.len());
                    let mut slot = slots[i].lock().await;
                    *slot = None;
                    match open(addr, i).await {
                        Ok(c) => *slot = Some(c),
                        Err(_) => {
                            errors.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        }));
    }

    let mut samples: Vec<(f64, usize, u64)> = Vec::new();
    let t0 = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(a.sample.min(end.saturating_duration_since(Instant::now()))).await;
        let (fds, rss) = tree_sample(pid);
        let t = t0.elapsed().as_secs_f64();
        println!(
            "soak: t={t:7.1}s fds={fds:6} rss={rss:8} KiB round_trips={} errors={}",
            round_trips.load(Relaxed),
            errors.load(Relaxed)
        );
        samples.push((t, fds, rss));
    }
    for t in traffic {
        let _ = t.await;
    }

    // Flatness after warm-up (the first fifth of the samples).
    let warm = samples.len() / 5;
    let steady = &samples[warm.min(samples.len().saturating_sub(1))..];
    let (fmin, fmax) = steady
        .iter()
        .fold((usize::MAX, 0), |(lo, hi), s| (lo.min(s.1), hi.max(s.1)));
    let (rmin, rmax) = steady
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.2), hi.max(s.2)));
    let fd_slack = (a.sessions / 50).max(20);
    let rss_limit = (rmin as f64 * (1.0 + a.tolerance)) as u64 + 4096;
    let checks = [
        (
            "no session errors",
            errors.load(Relaxed) == 0,
            format!("{} errors", errors.load(Relaxed)),
        ),
        (
            "fds flat",
            fmax <= fmin + fd_slack,
            format!("{fmin}..{fmax} (slack {fd_slack})"),
        ),
        (
            "RSS flat",
            rmax <= rss_limit,
            format!("{rmin}..{rmax} KiB (limit {rss_limit} KiB)"),
        ),
    ];
    let mut failed = 0;
    for (name, ok, detail) in &checks {
        println!("{} {name}: {detail}", if *ok { "ok  " } else { "FAIL" });
        failed += usize::from(!ok);
    }
    if let Some(path) = &a.json {
        let series: Vec<String> = samples
            .iter()
            .map(|(t, f, r)| format!("{{\"t\":{t:.1},\"fds\":{f},\"rss_kib\":{r}}}"))
            .collect();
        let text = format!(
            "{{\"sessions\":{},\"workers\":{},\"duration_s\":{},\"round_trips\":{},\"errors\":{},\"empty_rss_kib\":{rss0},\"samples\":[{}]}}\n",
            a.sessions,
            a.workers,
            a.duration.as_secs(),
            round_trips.load(Relaxed),
            errors.load(Relaxed),
            series.join(",")
        );
        std::fs::write(path, text).expect("write the JSON report");
    }
    let _ = child.kill();
    let _ = child.wait();
    if let Some(mut dc) = dc_child.take() {
        let _ = dc.kill();
        let _ = dc.wait();
    }
    println!("soak: {} passed, {failed} failed", checks.len() - failed);
    std::process::exit(i32::from(failed > 0));
}
