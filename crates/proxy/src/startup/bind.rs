//! Start-up phase 4: the sockets. Every client port is bound before anything else can fail
//! late (C binds them in pre_init); a worker inherits them from its master instead. Then
//! the `-p` stats port (with `--http-stats`) and the window clamp of the client ports.
//!
//! How one socket is bound is `listener`; this module decides which ones and what a
//! failure means for the exit code.

use crate::fatal::Fatal;
use crate::{cli, listener, stats, workers};
use std::net::TcpListener;
use tracing::warn;

/// The sockets of the process.
pub(super) struct Ports {
    /// The `-H` client ports, bound here or inherited from a master.
    pub clients: Vec<TcpListener>,
    /// A worker's id and its control socket to the master.
    pub control: Option<(usize, std::os::unix::net::UnixStream)>,
    /// The `-p` stats port (not in a worker, nor with `--disable-tcp`).
    pub stats: Option<TcpListener>,
    /// The window clamp set on the client ports.
    pub window_clamp: Option<u32>,
}

/// Binds (or inherits) the client ports, binds the stats port, sets the window clamp.
pub(super) fn bind(
    opts: &cli::Options,
    worker: Option<workers::WorkerEnv>,
) -> Result<Ports, Fatal> {
    let (clients, control) = match worker {
        Some(w) => (w.listeners, Some((w.id, w.control))),
        None => (bind_clients(opts)?, None),
    };
    if clients.is_empty() {
        warn!("no client port given (-H): the proxy serves no clients");
    }
    let stats = if opts.disable_tcp || control.is_some() {
        None
    } else {
        bind_stats_port(opts)?
    };
    // Window clamp on the listening sockets (C: 131072 by default without -D).
    let window_clamp = opts
        .window_clamp
        .or(if opts.domains.is_empty() {
            Some(131_072)
        } else {
            None
        })
        .filter(|c| *c > 0);
    if let Some(c) = window_clamp {
        for l in &clients {
            listener::set_window_clamp(l, c);
        }
    }
    Ok(Ports {
        clients,
        control,
        stats,
        window_clamp,
    })
}

fn bind_clients(opts: &cli::Options) -> Result<Vec<TcpListener>, Fatal> {
    let mut listeners = Vec::new();
    for &port in &opts.ports {
        let addr = listener::bind_addr(port, opts.ipv6, opts.address);
        let l = listener::bind(addr, opts.backlog, opts.reuse_port).map_err(|e| {
            Fatal::log(
                1,
                format!("cannot open http/tcp server socket at port {port}: {e}"),
            )
        })?;
        // Keepalive on the listening socket: Linux copies it to every accepted
        // socket, which saves a setsockopt per connection (the window clamp is
        // set per connection all the same: inherited, it would be cut to the
        // initial window).
        let _ = socket2::SockRef::from(&l).set_keepalive(true);
        // --client-mss: Linux announces it in the SYN-ACK of every accepted connection and
        // copies it to the accepted socket, so the client's segments and ours are as small.
        if let Some(mss) = opts.client_mss {
            socket2::SockRef::from(&l)
                .set_mss(mss)
                .map_err(|e| Fatal::log(1, format!("--client-mss {mss} on port {port}: {e}")))?;
        }
        listeners.push(l);
    }
    Ok(listeners)
}

/// Binds the `-p` stats port when `--http-stats` is given: 127.0.0.1 only, as C. A range
/// `start:end` takes the first port that binds.
fn bind_stats_port(opts: &cli::Options) -> Result<Option<TcpListener>, Fatal> {
    if !opts.http_stats {
        return Ok(None);
    }
    let (first, last, range) = match opts.stats_port {
        None => {
            return Err(Fatal::log(
                1,
                "fatal: port isn't defined (--http-stats needs -p <port>)",
            ))
        }
        Some(cli::PortSpec::Single(p)) => (p, p, false),
        Some(cli::PortSpec::Range(a, b)) => (a, b, true),
    };
    let mut last_err = None;
    for port in first..=last {
        match listener::bind(stats::bind_addr(port), opts.backlog, opts.reuse_port) {
            Ok(l) => return Ok(Some(l)),
            Err(e) => last_err = Some(e),
        }
    }
    let e = last_err.map_or_else(String::new, |e| e.to_string());
    if range {
        Err(Fatal::log(
            2,
            format!("cannot open a stats port in {first}:{last}: {e}"),
        ))
    } else {
        Err(Fatal::log(
            1,
            format!("cannot open server socket at port {first}: {e}"),
        ))
    }
}
