//! The client ports (`-H`): binding them like C does and accepting connections.
//!
//! Without `-6` each port is bound on IPv4 (`--address` or 0.0.0.0); with `-6` it is a
//! dual-stack IPv6 socket on `::` (IPV6_V6ONLY off). Sockets get SO_REUSEADDR, the `-b`
//! backlog and SO_KEEPALIVE on accepted connections, as in C.
//!
//! Listening sockets also get `TCP_NODELAY`, which Linux copies to every socket it accepts
//! (the test below reads it back), so no client connection waits for Nagle and no accept
//! pays a `setsockopt` for it. Without it the last partial segment of each write waited for
//! the previous one's ACK: fake TLS and direct mode stalled ~3 ms per pipelined window.
//!
//! Stopping ([`accept_loop`]'s `stop`): what is already in the accept queue is accepted and
//! served before the listening socket closes. Closing it with connections queued resets
//! them; with `--reuse-port` hand-overs those are clients the kernel had already given to
//! this process while the new one was listening (unless `net.ipv4.tcp_migrate_req` is 1,
//! which moves them to the new process).

use crate::session;
use crate::shared::Shared;
use crate::stats::Stats;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// Where a `-H` port is bound.
pub fn bind_addr(port: u16, ipv6: bool, address: Option<Ipv4Addr>) -> SocketAddr {
    match (ipv6, address) {
        (_, Some(a)) if !ipv6 => SocketAddr::new(IpAddr::V4(a), port),
        (true, _) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
    }
}

/// Binds and listens (a std listener, so it can be created before the runtime starts).
pub fn bind(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog.clamp(1, i32::MAX as u32) as i32)?;
    Ok(s.into())
}

/// `-W`: TCP_WINDOW_CLAMP on a socket (C sets it on listening and accepted sockets).
pub fn set_window_clamp(fd: &impl std::os::fd::AsRawFd, clamp: u32) {
    let v = clamp as libc::c_int;
    // SAFETY: setsockopt with a valid fd and a pointer to a c_int of the right size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_WINDOW_CLAMP,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// How often a failing accept is logged at most.
const FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Rate limit for accept failures in the log (each is counted in `accept_calls_failed`).
#[derive(Default)]
struct FailureLog {
    last: Option<std::time::Instant>,
    quiet: u64,
}

impl FailureLog {
    /// Some(failures not logged since the last line) when this one is to be logged.
    fn due(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < FAILURE_LOG_EVERY)
        {
            self.quiet += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.quiet))
    }
}

/// Accepts until the task is dropped; each connection gets its own task. Over the `-C`/`-c`
/// cap or the accept rate a connection is accepted and closed at once (a clean refusal
/// instead of a hang in the backlog), and counted.
///
/// When `stop` turns true: accepts what is queued (without waiting), then returns and the
/// listening socket closes.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut admit = Admit::default();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = listener.accept() => r,
        };
        admit.handle(accepted, &listener, &shared).await;
    }
    // The queue, without waiting: `timeout` polls the accept before its zero deadline.
    let zero = std::time::Duration::ZERO;
    while let Ok(accepted) = tokio::time::timeout(zero, listener.accept()).await {
        if accepted.is_err() {
            break;
        }
        admit.handle(accepted, &listener, &shared).await;
    }
}

/// What the accept loop keeps between connections.
#[derive(Default)]
struct Admit {
    warned_at: u64,
    failures: FailureLog,
}

impl Admit {
    /// One `accept` result: a session, a refusal over the caps, or a counted failure.
    async fn handle(
        &mut self,
        accepted: io::Result<(tokio::net::TcpStream, SocketAddr)>,
        listener: &TcpListener,
        shared: &Arc<Shared>,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let (warned_at, failures) = (&mut self.warned_at, &mut self.failures);
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: counted, logged at most every few seconds, and a
                // short back-off instead of spinning.
                Stats::inc(&shared.stats.accept_failed);
                if let Some(more) = failures.due() {
                    let at = listener.local_addr().ok();
                    warn!("accept on {at:?} failed: {e} ({more} more failure(s) not logged)");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                return;
            }
        };
        let active = shared.stats.active.load(Relaxed);
        if active >= shared.max_clients {
            Stats::inc(&shared.stats.accept_limit_refused);
            debug!(
                "refusing {peer}: {active} client connections, the cap is {}",
                shared.max_clients
            );
            return;
        }
        if active * 10 >= shared.max_clients * 9 && active > *warned_at {
            *warned_at = active;
            warn!(
                "CRITICAL: used {active} user connections out of {}",
                shared.max_clients
            );
        } else if active * 10 < shared.max_clients * 8 {
            *warned_at = 0;
        }
        if let Some(rate) = &shared.accept_rate {
            if !rate.allow() {
                Stats::inc(&shared.stats.accept_rate_refused);
                return;
            }
        }
        if let Some(c) = shared.window_clamp {
            set_window_clamp(&stream, c);
        }
        Stats::inc(&shared.stats.accepted);
        debug!("accepted {peer}");
        tokio::spawn(session::SessionTask::new(shared.clone(), stream, peer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stopping accepts what is queued before the socket closes (closing would reset it):
    /// connections queued before the loop even ran are all served.
    #[tokio::test]
    async fn stopping_accepts_the_queue_first() {
        let l = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 64, false).unwrap();
        let addr = l.local_addr().unwrap();
        let clients: Vec<std::net::TcpStream> = (0..5)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let shared = Arc::new(Shared {
            secrets: vec![[7; 16]],
            upstream: crate::shared::Upstream::Direct(crate::dc::DcTable::new(
                Default::default(),
                false,
            )),
            tls: None,
            handshake_timeout: std::time::Duration::from_secs(5),
            idle_timeout: std::time::Duration::from_secs(5),
            connect_timeout: std::time::Duration::from_secs(5),
            fast_mode: true,
            max_clients: 100,
            accept_rate: None,
            window_clamp: None,
            stats: Arc::new(Stats::with_secrets(1)),
        });
        let (_tx, stop) = tokio::sync::watch::channel(true);
        let l = TcpListener::from_std(l).unwrap();
        accept_loop(l, shared.clone(), stop).await;
        assert_eq!(Stats::get(&shared.stats.accepted), 5);
        drop(clients);
    }

    /// Accepted sockets inherit TCP_NODELAY from the listener (no per-accept setsockopt),
    /// on IPv4 and on the dual-stack IPv6 socket `-6` binds.
    #[test]
    fn accepted_sockets_have_nodelay() {
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            let l = match bind(SocketAddr::new(ip, 0), 16, false) {
                Ok(l) => l,
                Err(e) if ip.is_ipv6() => {
                    eprintln!("no IPv6 loopback here ({e}); IPv4 checked");
                    continue;
                }
                Err(e) => panic!("bind {ip}: {e}"),
            };
            l.set_nonblocking(false).unwrap();
            let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (accepted, _) = l.accept().unwrap();
            assert!(
                accepted.nodelay().unwrap(),
                "accepted socket on {ip} waits for Nagle"
            );
        }
    }

    /// A burst of accept failures gives one log line, then one per interval with the count
    /// of those not logged.
    #[test]
    fn accept_failures_are_logged_at_most_once_per_interval() {
        let mut f = FailureLog::default();
        assert_eq!(f.due(), Some(0));
        for _ in 0..250 {
            assert_eq!(f.due(), None);
        }
        f.last = Some(std::time::Instant::now() - FAILURE_LOG_EVERY);
        assert_eq!(f.due(), Some(250));
        assert_eq!(f.due(), None);
    }
}
