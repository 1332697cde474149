//! Starting the real `mtproto-proxy` binary for end-to-end tests, on loopback only.
//!
//! The proxy is started with `--address 127.0.0.1` and loopback `--dc-override`s; start-up
//! is complete when it logs `main loop` on stderr (read from the pipe, no sleeping).
#![allow(dead_code)]

pub mod probe;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A running proxy; killed on drop.
pub struct Proxy {
    pub child: Child,
    pub port: u16,
    pub log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Proxy {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Log lines so far.
    pub fn log_text(&self) -> String {
        self.log.0.lock().unwrap().join("\n")
    }

    /// Waits until at least `n` log lines contain `needle`; false after `limit`.
    pub fn wait_log_count(&self, needle: &str, n: usize, limit: Duration) -> bool {
        let (lock, cv) = &*self.log;
        let guard = lock.lock().unwrap();
        let (_g, res) = cv
            .wait_timeout_while(guard, limit, |lines| {
                lines.iter().filter(|l| l.contains(needle)).count() < n
            })
            .unwrap();
        !res.timed_out()
    }

    /// Waits (woken by each new log line) until a line contains `needle`; false after `limit`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let (lock, cv) = &*self.log;
        let guard = lock.lock().unwrap();
        let (_g, res) = cv
            .wait_timeout_while(guard, limit, |lines| {
                !lines.iter().any(|l| l.contains(needle))
            })
            .unwrap();
        !res.timed_out()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const BIN: &str = env!("CARGO_BIN_EXE_mtproto-proxy");

/// The release build of the proxy beside this test's debug build (`scripts/test.sh` builds
/// it before the tests), for the tests whose subject is speed rather than behaviour.
pub fn release_bin() -> Option<std::path::PathBuf> {
    let debug = std::path::Path::new(BIN);
    let p = debug.parent()?.parent()?.join("release/mtproto-proxy");
    p.is_file().then_some(p)
}

/// Starts the proxy with `args` plus `--address 127.0.0.1 -H <free port>`, and waits for
/// its `main loop` line. Retries on a lost port race.
pub fn start(args: &[&str]) -> Proxy {
    start_bin(std::path::Path::new(BIN), args)
}

/// [`start`] with another build of the proxy.
pub fn start_bin(bin: &std::path::Path, args: &[&str]) -> Proxy {
    start_limited(bin, args, None)
}

/// [`start`] with the soft open-file limit lowered to `soft` first (the shell's `ulimit`,
/// then `exec`), so that the proxy runs with the limit it raises for itself.
pub fn start_with_nofile(soft: u64, args: &[&str]) -> Proxy {
    start_limited(std::path::Path::new(BIN), args, Some(soft))
}

fn start_limited(bin: &std::path::Path, args: &[&str], soft_nofile: Option<u64>) -> Proxy {
    for _ in 0..5 {
        let port = free_port();
        let port_s = port.to_string();
        let mut cmd = match soft_nofile {
            None => Command::new(bin),
            Some(n) => {
                let mut c = Command::new("bash");
                let script = format!("ulimit -Sn {n} && exec \"$0\" \"$@\"");
                c.arg("-c").arg(script).arg(bin);
                c
            }
        };
        cmd.args(args)
            .args(["--address", "127.0.0.1", "-H", &port_s])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn mtproto-proxy");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("main loop") {
                    if let Some(t) = tx.take() {
                        let _ = t.send(true);
                    }
                }
                log2.0.lock().unwrap().push(line);
                log2.1.notify_all();
            }
            if let Some(t) = tx.take() {
                let _ = t.send(false);
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(true) => return Proxy { child, port, log },
            _ => {
                let _ = child.kill();
                let status = child.wait();
                let text = log.0.lock().unwrap().join("\n");
                if text.contains("Address already in use") {
                    continue;
                }
                panic!("proxy did not start ({status:?}):\n{text}");
            }
        }
    }
    panic!("no free port after 5 tries");
}
