//! The client ports (`-H`): binding them like C does and accepting connections.
//!
//! Without `-6` each port is bound on IPv4 (`--address` or 0.0.0.0); with `-6` it is a
//! dual-stack IPv6 socket on `::` (IPV6_V6ONLY off). Sockets get SO_REUSEADDR, the `-b`
//! backlog and SO_KEEPALIVE on accepted connections, as in C.

use crate::session;
use crate::stats::Stats;
use crate::Shared;
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
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog.clamp(1, i32::MAX as u32) as i32)?;
    Ok(s.into())
}

/// Accepts until the task is dropped; each connection gets its own task.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!("accept on {:?} failed: {e}", listener.local_addr().ok());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket2::SockRef::from(&stream).set_keepalive(true);
        Stats::inc(&shared.stats.accepted);
        shared
            .stats
            .active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        debug!("accepted {peer}");
        let sh = shared.clone();
        tokio::spawn(async move {
            session::handle(sh.clone(), stream, peer).await;
            sh.stats
                .active
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}
