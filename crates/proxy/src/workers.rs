//! `-M N` worker processes. The master binds every port, then starts N copies of this
//! binary (re-executed, not forked: a forked multi-threaded runtime is unsafe) that inherit
//! the listening sockets and accept on them; the kernel spreads connections among them.
//!
//! The master accepts no clients. It serves `/stats` with the workers' counters summed (as
//! C), forwards SIGTERM/SIGINT, SIGHUP and SIGUSR1, and replaces a worker that dies (C takes
//! the whole proxy down instead; we log that we differ). Each worker has a control socket
//! to the master: the master asks for counter snapshots over it, and a worker whose master
//! is gone sees the socket close and exits (C: "Parent ... is changed, aborting").
//!
//! A replaced worker starts after the master dropped privileges: it re-reads the config and
//! secret files as that user, so they must be readable by it.

use crate::stats::Stats;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tracing::{error, info, warn};

const ENV_ID: &str = "MTPROXY_WORKER_ID";
const ENV_FDS: &str = "MTPROXY_LISTEN_FDS";
const ENV_CTL: &str = "MTPROXY_CONTROL_FD";

/// What a worker process inherits from its master.
#[derive(Debug)]
pub struct WorkerEnv {
    pub id: usize,
    pub listeners: Vec<std::net::TcpListener>,
    pub control: std::os::unix::net::UnixStream,
}

fn parse_fd(s: &str) -> Option<RawFd> {
    s.parse::<RawFd>().ok().filter(|fd| *fd > 2)
}

/// `Some` when this process was started by a master as a worker. Takes ownership of the
/// inherited descriptors and clears the variables so nothing else sees them.
pub fn worker_env() -> Option<WorkerEnv> {
    let id: usize = std::env::var(ENV_ID).ok()?.parse().ok()?;
    let fds: Vec<RawFd> = std::env::var(ENV_FDS)
        .ok()?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(parse_fd)
        .collect::<Option<_>>()?;
    let ctl = parse_fd(&std::env::var(ENV_CTL).ok()?)?;
    for k in [ENV_ID, ENV_FDS, ENV_CTL] {
        std::env::remove_var(k);
    }
    // SAFETY: the master passed these descriptors to us for exactly this use; nothing
    // else in this process owns them.
    let listeners = fds
        .into_iter()
        .map(|fd| unsafe { std::net::TcpListener::from_raw_fd(fd) })
        .collect();
    // SAFETY: as above: the control socket the master passed us, owned by nothing else.
    let control = unsafe { std::os::unix::net::UnixStream::from_raw_fd(ctl) };
    Some(WorkerEnv {
        id,
        listeners,
        control,
    })
}

fn set_inheritable(fd: RawFd, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD)?);
    let new = if on {
        flags - FdFlag::FD_CLOEXEC
    } else {
        flags | FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(new))?;
    Ok(())
}

/// Worker side: answers the master's snapshot requests; returns when the master is gone.
pub async fn serve_control(control: std::os::unix::net::UnixStream, stats: Arc<Stats>) {
    let _ = control.set_nonblocking(true);
    let Ok(control) = tokio::net::UnixStream::from_std(control) else {
        return;
    };
    let (r, mut w) = control.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "S" {
            let snap = stats.snapshot();
            let text: Vec<String> = snap.iter().map(u64::to_string).collect();
            if w.write_all(format!("{}\n", text.join(" ")).as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// One worker slot of the master.
struct Slot {
    pid: AtomicU32,
    control: tokio::sync::Mutex<Option<BufReader<tokio::net::UnixStream>>>,
}

/// The master's view of its workers.
pub struct Master {
    slots: Vec<Arc<Slot>>,
    stopping: AtomicBool,
    /// The last snapshot of each worker that answered (refreshed in the background for
    /// `/stats`; `stats::combine` sums them).
    pub snapshots: Mutex<Vec<Vec<u64>>>,
}

impl Master {
    /// Pids of the running workers.
    pub fn pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .map(|s| s.pid.load(Relaxed))
            .filter(|p| *p != 0)
            .collect()
    }

    /// Sends `sig` to every worker.
    pub fn signal_all(&self, sig: nix::sys::signal::Signal) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
    }

    /// Asks every worker for its counters: one snapshot per worker that answered.
    pub async fn collect(&self) -> Vec<Vec<u64>> {
        let mut all: Vec<Vec<u64>> = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let mut guard = slot.control.lock().await;
            let Some(ctl) = guard.as_mut() else { continue };
            let ask = async {
                ctl.get_mut().write_all(b"S\n").await?;
                let mut line = String::new();
                ctl.read_line(&mut line).await?;
                Ok::<_, io::Error>(line)
            };
            match tokio::time::timeout(Duration::from_secs(1), ask).await {
                Ok(Ok(line)) => all.push(
                    line.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect(),
                ),
                _ => *guard = None,
            }
        }
        all
    }

    pub fn stop(&self) {
        self.stopping.store(true, Relaxed);
    }
}

/// Starts `n` workers on the `listeners` and keeps them running: a dead worker is replaced
/// after a short back-off, until [`Master::stop`].
pub fn start(n: u32, listeners: &[std::net::TcpListener]) -> io::Result<Arc<Master>> {
    let fds: Vec<RawFd> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    for fd in &fds {
        set_inheritable(*fd, true)?;
    }
    let master = Arc::new(Master {
        slots: (0..n)
            .map(|_| {
                Arc::new(Slot {
                    pid: AtomicU32::new(0),
                    control: tokio::sync::Mutex::new(None),
                })
            })
            .collect(),
        stopping: AtomicBool::new(false),
        snapshots: Mutex::new(Vec::new()),
    });
    info!("creating {n} workers");
    for (id, slot) in master.slots.iter().enumerate() {
        tokio::spawn(keep_running(master.clone(), slot.clone(), id, fds.clone()));
    }
    Ok(master)
}

fn spawn_one(
    id: usize,
    fds: &[RawFd],
) -> io::Result<(tokio::process::Child, tokio::net::UnixStream)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    set_inheritable(theirs.as_raw_fd(), true)?;
    let exe = std::env::current_exe()?;
    let fd_list: Vec<String> = fds.iter().map(RawFd::to_string).collect();
    let child = tokio::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(ENV_ID, id.to_string())
        .env(ENV_FDS, fd_list.join(","))
        .env(ENV_CTL, theirs.as_raw_fd().to_string())
        .kill_on_drop(false)
        .spawn()?;
    // Our copy of the worker's end is not needed any more.
    drop(theirs);
    ours.set_nonblocking(true)?;
    Ok((child, tokio::net::UnixStream::from_std(ours)?))
}

async fn keep_running(master: Arc<Master>, slot: Arc<Slot>, id: usize, fds: Vec<RawFd>) {
    let mut backoff = Duration::from_millis(100);
    while !master.stopping.load(Relaxed) {
        let started = std::time::Instant::now();
        let (mut child, ctl) = match spawn_one(id, &fds) {
            Ok(x) => x,
            Err(e) => {
                error!("cannot start worker {id}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        slot.pid.store(pid, Relaxed);
        *slot.control.lock().await = Some(BufReader::new(ctl));
        info!("worker {id} started (pid {pid})");
        let status = child.wait().await;
        slot.pid.store(0, Relaxed);
        *slot.control.lock().await = None;
        if master.stopping.load(Relaxed) {
            break;
        }
        warn!(
            "Child {pid} (worker {id}) terminated ({}); starting a replacement (C would abort the whole proxy here)",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        );
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
