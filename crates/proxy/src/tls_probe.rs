//! Learning how the real site answers a TLS 1.3 ClientHello, so our fake first flight has
//! the same shape (spec client.md §5.2): whether the ServerHello lists supported_versions
//! before key_share, and how long the first application-data record is. C sends 20 probes
//! at start-up; we do the same, then refresh periodically in the background.
//!
//! The probe is an ordinary TDLib-shaped hello with a random "secret": the site sees a
//! normal TLS client that hangs up after the first flight.

use crate::clock::unix_now;
use mtproto_wire::tls::{build_client_hello, ExtensionOrder, ReplyShape};
use rand::RngCore;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Probes sent at once.
pub const PROBES: usize = 20;
/// All of them must answer within this.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// One probe: (first application-data record length, extension order).
pub async fn probe_once(addr: SocketAddr, sni: &str) -> io::Result<(usize, ExtensionOrder)> {
    let mut key = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut key);
    let now = unix_now() as i64;
    let hello = build_client_hello(
        &key,
        Some(sni),
        now,
        &mut |b: &mut [u8]| rand::thread_rng().fill_bytes(b),
        517,
    );
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&hello).await?;
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("probe of {addr}: {what}"),
        )
    };

    let mut hdr = [0u8; 5];
    s.read_exact(&mut hdr).await?;
    if hdr[..3] != [0x16, 0x03, 0x03] {
        return Err(bad("no TLS 1.2-style handshake record"));
    }
    let len = u16::from_be_bytes([hdr[3], hdr[4]]) as usize;
    let mut sh = vec![0u8; len];
    s.read_exact(&mut sh).await?;
    let order = server_hello_order(&sh)
        .ok_or_else(|| bad("not a TLS 1.3 ServerHello with key_share and supported_versions"))?;

    let mut ccs = [0u8; 6];
    s.read_exact(&mut ccs).await?;
    if ccs != mtproto_wire::tls::CHANGE_CIPHER_SPEC {
        return Err(bad("no ChangeCipherSpec after the ServerHello"));
    }
    s.read_exact(&mut hdr).await?;
    if hdr[..3] != [0x17, 0x03, 0x03] {
        return Err(bad("no application-data record"));
    }
    let app = u16::from_be_bytes([hdr[3], hdr[4]]) as usize;
    if app == 0 {
        return Err(bad("empty application-data record"));
    }
    Ok((app, order))
}

/// The extension order of a ServerHello handshake message, if it is the TLS 1.3 shape C
/// accepts (cipher 0x1301, exactly key_share and supported_versions).
fn server_hello_order(sh: &[u8]) -> Option<ExtensionOrder> {
    // type(1) len(3) version(2) random(32) sid_len(1) sid(32) cipher(2) comp(1) ext_len(2)
    if sh.len() < 79 || sh[0] != 0x02 || sh[38] != 32 {
        return None;
    }
    if sh[71..74] != [0x13, 0x01, 0x00] {
        return None;
    }
    let ext_len = u16::from_be_bytes([sh[74], sh[75]]) as usize;
    let exts = sh.get(76..76 + ext_len)?;
    let mut types = Vec::new();
    let mut i = 0;
    while i + 4 <= exts.len() {
        let t = u16::from_be_bytes([exts[i], exts[i + 1]]);
        let l = u16::from_be_bytes([exts[i + 2], exts[i + 3]]) as usize;
        types.push(t);
        i += 4 + l;
    }
    if i != exts.len() {
        return None;
    }
    match types.as_slice() {
        [0x0033, 0x002b] => Some(ExtensionOrder::KeyShareFirst),
        [0x002b, 0x0033] => Some(ExtensionOrder::SupportedVersionsFirst),
        _ => None,
    }
}

/// C's start-up probe: [`PROBES`] at once, all within [`TIMEOUT`]; `None` if any failed.
pub async fn probe(addr: SocketAddr, sni: &str) -> Result<ReplyShape, String> {
    let tasks: Vec<_> = (0..PROBES)
        .map(|_| {
            let sni = sni.to_string();
            tokio::spawn(async move { tokio::time::timeout(TIMEOUT, probe_once(addr, &sni)).await })
        })
        .collect();
    let mut samples = Vec::with_capacity(PROBES);
    for t in tasks {
        match t.await {
            Ok(Ok(Ok(s))) => samples.push(s),
            Ok(Ok(Err(e))) => return Err(e.to_string()),
            Ok(Err(_)) => return Err(format!("probe of {addr} timed out after {TIMEOUT:?}")),
            Err(e) => return Err(e.to_string()),
        }
    }
    ReplyShape::from_probe(&samples).ok_or_else(|| "no usable probe answers".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_hello_shapes() {
        let mut sh = vec![0u8; 76];
        sh[0] = 2;
        sh[38] = 32;
        sh[71..74].copy_from_slice(&[0x13, 0x01, 0x00]);
        let mut exts = vec![
            0x00, 0x33, 0x00, 0x02, 0xaa, 0xbb, 0x00, 0x2b, 0x00, 0x02, 0x03, 0x04,
        ];
        let with = |e: &[u8]| {
            let mut v = sh.clone();
            v[74..76].copy_from_slice(&(e.len() as u16).to_be_bytes());
            v.extend_from_slice(e);
            v
        };
        assert_eq!(
            server_hello_order(&with(&exts)),
            Some(ExtensionOrder::KeyShareFirst)
        );
        exts.rotate_left(6);
        assert_eq!(
            server_hello_order(&with(&exts)),
            Some(ExtensionOrder::SupportedVersionsFirst)
        );
        assert_eq!(server_hello_order(&with(&exts[..6])), None);
        let mut other_cipher = with(&exts);
        other_cipher[72] = 0x02;
        assert_eq!(server_hello_order(&other_cipher), None);
    }
}
