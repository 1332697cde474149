//! Our answer to an accepted ClientHello, shaped like the real site's (issue 15): the
//! ServerHello (a real X25519 key share, the cipher and extension order the site would
//! choose for this hello), the ChangeCipherSpec, and one application-data record as long
//! as the site's whole encrypted first flight. Then its sending, in one write or, with
//! `--tls-split-hello`, in several TCP segments.
//!
//! Not here: the checks that accepted the hello (`mtproto_wire::tls::hello`), the site's
//! profile (`tls_probe`, `mtproto_wire::tls::profile`), the bytes' layout
//! (`mtproto_wire::tls::server_hello`).

use mtproto_wire::tls::{self, HelloFields, SiteProfile};
use rand::RngCore;
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What the reply needs from the accepted hello.
pub struct Accepted<'a> {
    pub secret: &'a [u8; 16],
    pub client_random: &'a [u8; 32],
    pub session_id: &'a [u8; 32],
    /// The client's first TLS 1.3 suite (what C echoes).
    pub cipher: u16,
    /// The parsed hello, if it parses strictly (it does for every real client).
    pub fields: Option<&'a HelloFields>,
}

/// The reply bytes for `hello` under `profile`.
pub fn build(profile: &SiteProfile, hello: &Accepted) -> Vec<u8> {
    let suites = hello
        .fields
        .map(|f| f.tls13_suites())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec![hello.cipher]);
    let cipher = profile.pick_cipher(&suites);
    let mut scalar = [0u8; 32];
    let mut app_data = vec![0u8; profile.pick_size(cipher, rand::random())];
    rand::thread_rng().fill_bytes(&mut scalar);
    rand::thread_rng().fill_bytes(&mut app_data);
    tls::build_server_hello(
        hello.secret,
        hello.client_random,
        hello.session_id,
        cipher,
        &tls::x25519_public_key(&scalar),
        &app_data,
        profile.order,
    )
}

/// Where `--tls-split-hello` cuts the reply: inside the ServerHello's random (so neither
/// segment holds a whole ServerHello), after the ServerHello, and after the
/// ChangeCipherSpec; the encrypted record goes last, as the kernel cuts it.
pub fn split_points(reply_len: usize) -> [usize; 3] {
    [24.min(reply_len), 127.min(reply_len), 133.min(reply_len)]
}

/// Writes the reply: one write, or (`split`) one write per piece. Client sockets have
/// `TCP_NODELAY` (inherited from the listener); before the next piece we wait (at most
/// [`SPLIT_WAIT`]) until the kernel has sent the last one, or its autocorking would join
/// them in one segment again.
pub async fn send(client: &mut TcpStream, reply: &[u8], split: bool) -> std::io::Result<()> {
    if !split {
        return client.write_all(reply).await;
    }
    let mut from = 0;
    for to in split_points(reply.len()).into_iter().chain([reply.len()]) {
        if to > from {
            if from > 0 {
                wait_sent(client).await;
            }
            client.write_all(&reply[from..to]).await?;
            from = to;
        }
    }
    Ok(())
}

/// The longest `--tls-split-hello` waits for one piece to leave.
pub const SPLIT_WAIT: Duration = Duration::from_millis(20);

/// Waits until the socket has no unsent bytes (SIOCOUTQNSD), up to [`SPLIT_WAIT`].
async fn wait_sent(client: &TcpStream) {
    let deadline = Instant::now() + SPLIT_WAIT;
    while unsent(client).is_some_and(|n| n > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Bytes written to the socket and not yet sent (Linux `SIOCOUTQNSD`).
fn unsent(client: &TcpStream) -> Option<i32> {
    const SIOCOUTQNSD: libc::c_ulong = 0x894b;
    let mut n: libc::c_int = 0;
    // SAFETY: ioctl on a valid socket fd with a pointer to a c_int, which is what
    // SIOCOUTQNSD writes.
    let rc = unsafe { libc::ioctl(client.as_raw_fd(), SIOCOUTQNSD, &mut n) };
    (rc == 0).then_some(n)
}
