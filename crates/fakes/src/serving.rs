//! How every fake serves: loopback addresses only, an accept loop that gives each
//! connection its own task until told to stop, and a handle that stops it (politely with
//! [`Serving::stop`], or by aborting everything when dropped).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// `Ok` for a loopback address; else the error `what` (e.g. "the fake DC") gives.
pub fn loopback_only(addr: SocketAddr, what: &str) -> io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} only listens on loopback, not {addr}"),
        ))
    }
}

/// A running accept loop. Dropping it aborts the loop, and with it every connection.
#[derive(Debug)]
pub struct Serving {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Serving {
    /// Accepts on `listener` until stopped; each connection (Nagle off) goes to `accepted`,
    /// which spawns its task on the set it is given. `what` names the fake in errors.
    pub fn start(
        listener: TcpListener,
        what: &'static str,
        accepted: impl FnMut(TcpStream, SocketAddr, &mut JoinSet<()>) + Send + 'static,
    ) -> Serving {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, what, accepted, stopped));
        Serving {
            stop: Some(stop),
            task,
        }
    }

    /// Stops accepting and closes every connection; returns once they are all gone.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    what: &'static str,
    mut accepted: impl FnMut(TcpStream, SocketAddr, &mut JoinSet<()>) + Send + 'static,
    mut stop: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    accepted(stream, peer, &mut conns);
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    eprintln!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback() {
        assert!(loopback_only("127.0.0.1:1".parse().unwrap(), "x").is_ok());
        assert!(loopback_only("[::1]:1".parse().unwrap(), "x").is_ok());
        let e = loopback_only("10.0.0.1:1".parse().unwrap(), "the fake DC").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the fake DC only listens on loopback, not 10.0.0.1:1"
        );
    }
}
