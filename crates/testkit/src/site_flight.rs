//! Reading what a server answers to a ClientHello, the whole of it: until the answer is a
//! complete flight (`mtproto_wire::tls::parse_flight`) and then silent for a while, or
//! until the server closes. Tests send the same hello to the real site and to the proxy
//! and compare the two answers; the masking tests read what came back through the proxy.
//!
//! Not here: judging the answer (the tests do, with `parse_flight`).

use mtproto_wire::tls::{parse_flight, Unmirrorable};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// Most bytes read.
pub const READ_CAP: usize = 256 * 1024;

/// Connects to `addr`, sends `hello`, and returns what came back: read until EOF, or until
/// at least one byte came and then nothing for `quiet` while the bytes are not a TLS
/// flight cut inside a record, or `limit` in all (an error if nothing came by then).
pub async fn exchange(
    addr: SocketAddr,
    hello: &[u8],
    quiet: Duration,
    limit: Duration,
) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut s = timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    s.set_nodelay(true)?;
    s.write_all(hello).await?;
    read_answer(&mut s, quiet, deadline).await
}

/// The reading half of [`exchange`], on a stream the caller set up.
pub async fn read_answer(
    s: &mut TcpStream,
    quiet: Duration,
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(8192);
    loop {
        let cut = matches!(
            parse_flight(&buf),
            Err(Unmirrorable::Malformed("the flight ends inside a record"))
        );
        let until = if buf.is_empty() || cut {
            deadline
        } else {
            deadline.min(Instant::now() + quiet)
        };
        if buf.len() >= READ_CAP {
            return Ok(buf);
        }
        buf.reserve(16 * 1024);
        match timeout_at(until, s.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return Ok(buf),
            Ok(Ok(_)) => {}
            // A reset after the answer still leaves the answer.
            Ok(Err(e)) if !buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(buf)
            }
            Ok(Err(e)) => return Err(e),
            Err(_) if buf.is_empty() => return Err(io::ErrorKind::TimedOut.into()),
            Err(_) => return Ok(buf),
        }
    }
}
