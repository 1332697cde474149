//! The start-up lines an operator pastes into Telegram: for every secret and client port,
//! the `tg://proxy` and `https://t.me/proxy` links in the plain and `dd` forms.
//!
//! The host in the links is `--public-host`, else `--address`, else the first global
//! IPv4 address of the machine's interfaces (no network request: behind NAT the operator
//! passes `--public-host`), else 127.0.0.1.
//!
//! The links carry the secrets: they go to the stdout the process started with (kept by
//! [`keep_stdout`] before `-l` or `-d` can point stdout at the log file), never to the log.

use mtproto_wire::secret::{link, link_with, ClientSecret, LinkKind};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

/// The stdout the process started with, for the links.
static STDOUT: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Keeps a copy of stdout as it is now; call before anything redirects it.
pub fn keep_stdout() {
    use std::os::fd::AsFd;
    if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() {
        *STDOUT.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::fs::File::from(fd));
    }
}

/// Writes link lines to the stdout kept by [`keep_stdout`] (stdout itself if none was
/// kept).
pub fn print(lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut kept = STDOUT.lock().unwrap_or_else(|e| e.into_inner());
    let _ = match kept.as_mut() {
        Some(f) => f.write_all(text.as_bytes()),
        None => std::io::stdout().write_all(text.as_bytes()),
    };
}

/// The host to print in links: `--public-host`, else the global side of the first
/// `--nat-info` rule (the address clients reach behind NAT, as in Docker), else
/// `--address`, else an interface address.
pub fn public_host(
    explicit: Option<&str>,
    nat_global: Option<Ipv4Addr>,
    address: Option<Ipv4Addr>,
) -> String {
    if let Some(h) = explicit {
        return h.to_string();
    }
    if let Some(g) = nat_global {
        return g.to_string();
    }
    if let Some(a) = address {
        return a.to_string();
    }
    interface_ipv4().map_or_else(|| "127.0.0.1".to_string(), |a| a.to_string())
}

fn interface_ipv4() -> Option<Ipv4Addr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    let mut fallback = None;
    for ifa in addrs {
        let Some(ip) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|s| s.ip())
        else {
            continue;
        };
        if ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() {
            continue;
        }
        if !ip.is_private() {
            return Some(ip);
        }
        fallback.get_or_insert(ip);
    }
    fallback
}

/// The link lines for one secret on one port.
pub fn lines(host: &str, port: u16, key: &[u8; 16], index: usize) -> Vec<String> {
    let plain = ClientSecret::Plain(*key);
    let dd = ClientSecret::Padded(*key);
    vec![
        format!(
            "secret #{index} link: {}",
            link(LinkKind::Tg, host, port, &plain)
        ),
        format!(
            "secret #{index} link: {}",
            link(LinkKind::TMe, host, port, &plain)
        ),
        format!(
            "secret #{index} dd link: {}",
            link(LinkKind::Tg, host, port, &dd)
        ),
        format!(
            "secret #{index} dd link: {}",
            link(LinkKind::TMe, host, port, &dd)
        ),
    ]
}

/// The `ee` (fake TLS) link lines for one secret, domain and port: hex and base64url forms.
pub fn tls_lines(host: &str, port: u16, key: &[u8; 16], domain: &str, index: usize) -> Vec<String> {
    let s = ClientSecret::Tls(*key, domain.to_string());
    let b64 = link_with(LinkKind::TMe, host, port, &s.to_base64url());
    vec![
        format!(
            "secret #{index} ee link ({domain}): {}",
            link(LinkKind::Tg, host, port, &s)
        ),
        format!(
            "secret #{index} ee link ({domain}): {}",
            link(LinkKind::TMe, host, port, &s)
        ),
        format!("secret #{index} ee link ({domain}, base64url): {b64}"),
    ]
}

/// True for an address a client cannot reach (used to warn about useless links).
pub fn is_local(host: &str) -> bool {
    host.parse::<IpAddr>()
        .map(|ip| ip.is_loopback() || ip.is_unspecified())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_precedence() {
        let ten = Some(Ipv4Addr::new(10, 0, 0, 1));
        let global = Some(Ipv4Addr::new(203, 0, 113, 5));
        assert_eq!(
            public_host(Some("proxy.example.net"), global, ten),
            "proxy.example.net"
        );
        assert_eq!(public_host(None, global, ten), "203.0.113.5");
        assert_eq!(public_host(None, None, ten), "10.0.0.1");
    }

    #[test]
    fn tls_link_lines_in_hex_and_base64url() {
        let l = tls_lines("1.2.3.4", 443, &[0x11; 16], "example.com", 2);
        assert!(l[0].ends_with("tg://proxy?server=1.2.3.4&port=443&secret=ee111111111111111111111111111111116578616d706c652e636f6d"));
        assert!(l[2].ends_with("https://t.me/proxy?server=1.2.3.4&port=443&secret=7hERERERERERERERERERERFleGFtcGxlLmNvbQ"));
    }

    #[test]
    fn link_lines_for_plain_and_dd() {
        let l = lines("1.2.3.4", 443, &[0x11; 16], 1);
        assert_eq!(l.len(), 4);
        assert!(l[0].ends_with(
            "tg://proxy?server=1.2.3.4&port=443&secret=11111111111111111111111111111111"
        ));
        assert!(l[3].ends_with(
            "https://t.me/proxy?server=1.2.3.4&port=443&secret=dd11111111111111111111111111111111"
        ));
    }
}
