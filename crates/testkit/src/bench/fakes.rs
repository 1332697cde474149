//! The bench's fake DC: an echo server that costs as little as a DC can.
//!
//! [`crate::FakeDc`] records every packet for tests to inspect; at gigabits per second that
//! bookkeeping (a lock, an event, a copy and a queue per packet) would make the fake the
//! bottleneck. This one reads the obfuscated2 header (no secret, as a DC), then loops:
//! read, transform in place, write back, with one buffer that grows with the traffic
//! (4 KiB while idle, up to 64 KiB). Reading and writing in turn is the back-pressure.
//!
//! Two modes: [`Echo::Decrypted`] decrypts with the upload key and re-encrypts with the
//! download key, so the client gets its own frames back (round trips, verified streams);
//! [`Echo::Raw`] sends the ciphertext back untouched: garbage to the client, but the same
//! bytes for a proxy, which parses nothing on the way down, at no crypto cost (throughput).

use std::io;
use std::net::SocketAddr;

use mtproto_wire::obfs2::{self, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::task::{JoinHandle, JoinSet};

/// What the echo DC sends back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// The client's plaintext, re-encrypted: a valid stream of the same frames.
    Decrypted,
    /// The bytes as received, after the first [`PLAIN_PREFIX`] bytes (echoed decrypted, so
    /// a session's first round trip, made before its stream starts, still checks out).
    Raw,
}

/// Bytes of each connection that [`Echo::Raw`] still echoes decrypted.
pub const PLAIN_PREFIX: usize = 4096;

/// A running echo DC on 127.0.0.1; dropping it closes everything.
pub struct EchoDc {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoDc {
    /// Listens on a free loopback port, serving on `rt`.
    pub fn start(rt: &Handle, echo: Echo) -> io::Result<EchoDc> {
        let _enter = rt.enter();
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let task = rt.spawn(accept_loop(listener, echo));
        Ok(EchoDc { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoDc {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connections: aborting it ends them all.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, echo: Echo) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    conns.spawn(serve(s, echo));
                }
                Err(e) => {
                    eprintln!("bench DC: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(mut s: TcpStream, echo: Echo) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut header = [0u8; HEADER_LEN];
    s.read_exact(&mut header).await?;
    let Some(mut acc) = obfs2::accept(&header, &[]) else {
        return Ok(());
    };
    let mut buf = vec![0u8; 4096];
    let mut plain_left = match echo {
        Echo::Decrypted => usize::MAX,
        Echo::Raw => PLAIN_PREFIX,
    };
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        let k = n.min(plain_left);
        if k > 0 {
            acc.decrypt.apply(&mut buf[..k]);
            acc.encrypt.apply(&mut buf[..k]);
            plain_left -= k;
        }
        s.write_all(&buf[..n]).await?;
        if n == buf.len() && buf.len() < 64 * 1024 {
            buf.resize(buf.len() * 4, 0);
        }
    }
}
