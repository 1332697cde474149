//! `--nat-info`: our local IPv4 addresses as the MEs must see them (local → global, first
//! match wins), for the addresses in the ME key derivation and in every RPC_PROXY_REQ.
//! IPv4-mapped IPv6 addresses are translated as IPv4 (and come out as IPv4); other IPv6
//! addresses and ports never change. One table for the ME connections and the sessions.

use mtproto_wire::rpc::kdf::translate_ipv4;
use std::net::{Ipv4Addr, SocketAddr};

/// The `--nat-info` rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nat {
    rules: Vec<(Ipv4Addr, Ipv4Addr)>,
}

impl Nat {
    /// The rules in command-line order: (local, global).
    pub fn new(rules: Vec<(Ipv4Addr, Ipv4Addr)>) -> Nat {
        Nat { rules }
    }

    fn global(&self, local: Ipv4Addr) -> Ipv4Addr {
        self.rules
            .iter()
            .find(|(l, _)| *l == local)
            .map_or(local, |(_, g)| *g)
    }

    /// `addr` as the MEs see it.
    pub fn addr(&self, addr: SocketAddr) -> SocketAddr {
        translate_ipv4(addr, |v4| self.global(v4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins_v4_and_mapped_only() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let nat = Nat::new(vec![
            ("10.0.0.1".parse().unwrap(), "1.2.3.4".parse().unwrap()),
            ("10.0.0.1".parse().unwrap(), "5.6.7.8".parse().unwrap()),
        ]);
        assert_eq!(nat.addr(a("10.0.0.1:443")), a("1.2.3.4:443"));
        assert_eq!(nat.addr(a("[::ffff:10.0.0.1]:443")), a("1.2.3.4:443"));
        assert_eq!(nat.addr(a("[::ffff:10.0.0.2]:443")), a("10.0.0.2:443"));
        assert_eq!(nat.addr(a("10.0.0.2:80")), a("10.0.0.2:80"));
        assert_eq!(nat.addr(a("[::1]:443")), a("[::1]:443"));
        assert_eq!(Nat::default().addr(a("10.0.0.1:1")), a("10.0.0.1:1"));
    }
}
