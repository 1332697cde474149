//! A recording TCP relay: put between a proxy and the site it masks as, it forwards both
//! ways unchanged and keeps, per connection, the bytes the site sent (up to
//! [`TAP_CAP`]). A test compares them with what a masked client received, to show the
//! proxy passed the site's answer on byte for byte.
//!
//! Loopback only; tests wait on [`Tap::wait_until`] rather than sleeping. Stops on drop.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes kept per connection and direction.
pub const TAP_CAP: usize = 4 << 20;

/// One relayed connection: what the site sent to the relay's client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tapped {
    pub from_site: Vec<u8>,
    /// The site or the client closed.
    pub closed: bool,
}

struct State {
    conns: Mutex<Vec<Tapped>>,
    changed: watch::Sender<u64>,
}

impl State {
    fn update(&self, i: usize, f: impl FnOnce(&mut Tapped)) {
        f(&mut self.conns.lock().expect("tap")[i]);
        self.changed.send_modify(|g| *g += 1);
    }
}

/// A running relay to one target.
pub struct Tap {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Tap {
    /// Listens on a free loopback port and relays every connection to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Tap> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let state = Arc::new(State {
            conns: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let i = {
                    let mut c = st.conns.lock().expect("tap");
                    c.push(Tapped::default());
                    c.len() - 1
                };
                st.changed.send_modify(|g| *g += 1);
                tokio::spawn(relay(client, target, i, st.clone()));
            }
        });
        Ok(Tap { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of every connection so far, in accept order.
    pub fn connections(&self) -> Vec<Tapped> {
        self.state.conns.lock().expect("tap").clone()
    }

    /// Waits until `pred` holds for the connection list; wrap it in a timeout.
    pub async fn wait_until(&self, pred: impl Fn(&[Tapped]) -> bool) -> Vec<Tapped> {
        let mut rx = self.state.changed.subscribe();
        loop {
            let snap = self.connections();
            if pred(&snap) {
                return snap;
            }
            if rx.changed().await.is_err() {
                return snap;
            }
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, target: SocketAddr, i: usize, st: Arc<State>) {
    let Ok(mut site) = TcpStream::connect(target).await else {
        st.update(i, |t| t.closed = true);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = site.set_nodelay(true);
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = site.split();
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    };
    let down = async {
        let mut b = vec![0u8; 16 * 1024];
        loop {
            let n = match sr.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            st.update(i, |t| {
                let room = TAP_CAP.saturating_sub(t.from_site.len());
                t.from_site.extend_from_slice(&b[..n.min(room)]);
            });
            if cw.write_all(&b[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
    st.update(i, |t| t.closed = true);
}
