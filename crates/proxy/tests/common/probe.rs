//! Looking at a running proxy from outside, for the hostile-input tests: its memory and
//! open files (from /proc), its `/stats` page, and the files ME mode needs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident memory of `pid`, bytes (VmRSS).
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Open file descriptors of `pid`.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The soft RLIMIT_NOFILE of `pid`.
pub fn fd_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The highest RSS of a process while this lives, sampled every 10 ms by a thread.
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    pub fn watch(pid: u32) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(SeqCst) {
                p.fetch_max(rss(pid), SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        PeakRss {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// The highest value so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(SeqCst)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET path` on the stats port of a proxy with `-p port --http-stats`: the response.
async fn page(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET {path} HTTP/1.0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The `/stats` page.
pub async fn stats_page(port: u16) -> String {
    page(port, "/stats").await
}

/// The value of `key` on a `/stats` page (0 when absent).
pub fn stat(page: &str, key: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('\t')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `/stats` until `key` reaches `at_least` or `limit` passes; the last value.
pub async fn wait_stat(port: u16, key: &str, at_least: u64, limit: Duration) -> u64 {
    wait_stat_until(port, key, |v| v >= at_least, limit).await
}

/// Polls `/stats` until `key` is under `below` or `limit` passes; the last value.
pub async fn wait_stat_below(port: u16, key: &str, below: u64, limit: Duration) -> u64 {
    wait_stat_until(port, key, |v| v < below, limit).await
}

async fn wait_stat_until(port: u16, key: &str, done: impl Fn(u64) -> bool, limit: Duration) -> u64 {
    let end = tokio::time::Instant::now() + limit;
    loop {
        let v = stat(&stats_page(port).await, key);
        if done(v) || tokio::time::Instant::now() >= end {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A temp dir with a random proxy secret (`--aes-pwd`) and a `proxy-multi.conf`; removed
/// on drop.
pub struct MeFiles {
    pub dir: PathBuf,
    pub secret: Vec<u8>,
}

impl MeFiles {
    /// `config` is the text of proxy-multi.conf.
    pub fn new(config: &str) -> MeFiles {
        let dir = std::env::temp_dir().join(format!(
            "mtproxy-hostile-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let secret: Vec<u8> = (0..128).map(|_| rand::random::<u8>()).collect();
        std::fs::write(dir.join("proxy-secret"), &secret).unwrap();
        std::fs::write(dir.join("proxy-multi.conf"), config).unwrap();
        MeFiles { dir, secret }
    }

    pub fn pwd(&self) -> String {
        self.dir.join("proxy-secret").to_string_lossy().into_owned()
    }

    pub fn config(&self) -> String {
        self.dir
            .join("proxy-multi.conf")
            .to_string_lossy()
            .into_owned()
    }

    /// Rewrites proxy-multi.conf.
    pub fn set_config(&self, config: &str) {
        std::fs::write(self.dir.join("proxy-multi.conf"), config).unwrap();
    }
}

impl Drop for MeFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `/metrics` page.
pub async fn metrics_page(port: u16) -> String {
    page(port, "/metrics").await
}

/// The value of the series `series` (name and labels as printed) on a `/metrics` page.
pub fn metric(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
