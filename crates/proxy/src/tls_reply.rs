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
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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

/// Writes the reply: one write, or (`split`) one write per piece with `TCP_NODELAY` on, so
/// each piece leaves in its own segment.
pub async fn send(client: &mut TcpStream, reply: &[u8], split: bool) -> std::io::Result<()> {
    if !split {
        return client.write_all(reply).await;
    }
    let nodelay = client.nodelay().unwrap_or(false);
    client.set_nodelay(true)?;
    let mut from = 0;
    for to in split_points(reply.len()).into_iter().chain([reply.len()]) {
        if to > from {
            client.write_all(&reply[from..to]).await?;
            from = to;
        }
    }
    client.set_nodelay(nodelay)
}
