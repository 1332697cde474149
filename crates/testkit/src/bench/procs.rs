//! Child processes under test (the proxy, the relay floor, a reference binary, a peer):
//! spawned with piped output that a thread per pipe keeps draining into a log (a full pipe
//! would stall the child), readiness awaited on log lines (woken per line, no sleeping) or,
//! for binaries whose log we do not know, on the port accepting connections. Dropping a
//! [`Proc`] kills it and every process it forked.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::sys;

/// Lines kept for error messages and readiness checks.
const MAX_LINES: usize = 20_000;

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// Pipes still open.
    open: usize,
}

type Log = Arc<(Mutex<LogState>, Condvar)>;

/// A running child; killed (with its descendants) on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    log: Log,
}

fn drain(pipe: impl Read + Send + 'static, log: Log) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut st = log.0.lock().expect("log lock");
            if st.lines.len() >= MAX_LINES {
                st.lines.drain(..MAX_LINES / 2);
            }
            st.lines.push(line);
            log.1.notify_all();
        }
        log.0.lock().expect("log lock").open -= 1;
        log.1.notify_all();
    });
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout and stderr drained into the log.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Proc, String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{name}: cannot start {:?}: {e}", cmd.get_program()))?;
        let log: Log = Arc::new((
            Mutex::new(LogState {
                lines: Vec::new(),
                open: 2,
            }),
            Condvar::new(),
        ));
        drain(child.stdout.take().expect("piped"), log.clone());
        drain(child.stderr.take().expect("piped"), log.clone());
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until `n` lines contain `needle`; returns the first such line. Fails when the
    /// child closes its output first or after `limit`.
    pub fn wait_log(&self, needle: &str, n: usize, limit: Duration) -> Result<String, String> {
        let (lock, cv) = &*self.log;
        let deadline = Instant::now() + limit;
        let mut st = lock.lock().expect("log lock");
        loop {
            let hits: Vec<&String> = st.lines.iter().filter(|l| l.contains(needle)).collect();
            if hits.len() >= n {
                return Ok(hits[0].clone());
            }
            if st.open == 0 {
                return Err(format!(
                    "{}: exited before logging {n}× {needle:?}:\n{}",
                    self.name,
                    tail(&st.lines)
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "{}: no {n}× {needle:?} within {limit:?}:\n{}",
                    self.name,
                    tail(&st.lines)
                ));
            }
            st = cv.wait_timeout(st, deadline - now).expect("log lock").0;
        }
    }

    /// Waits until `addr` accepts a TCP connection (for binaries whose log is unknown).
    pub fn wait_port(&mut self, addr: SocketAddr, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{}: exited ({status}) before listening on {addr}:\n{}",
                    self.name,
                    self.tail()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}: not listening on {addr} within {limit:?}:\n{}",
                    self.name,
                    self.tail()
                ));
            }
            // Polling a port has no event to wait on; 20 ms steps.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last log lines.
    pub fn tail(&self) -> String {
        tail(&self.log.0.lock().expect("log lock").lines)
    }

    /// Is a line containing `needle` in the log?
    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .0
            .lock()
            .expect("log lock")
            .lines
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn tail(lines: &[String]) -> String {
    let start = lines.len().saturating_sub(40);
    lines[start..].join("\n")
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pids = sys::tree_pids(self.pid());
        for p in pids.iter().rev() {
            // SAFETY: kill(2) on pids we started (or their children); at worst ESRCH.
            unsafe {
                libc::kill(*p, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
