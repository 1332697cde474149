//! Where each DC id goes in direct mode: the built-in table of Telegram's DC addresses
//! (spec backend-ops §7.1), operator overrides (`--dc-override`), and the fallback for ids
//! the table does not know.
//!
//! Lookup for a client's signed id (negative = media, +10000 = test, spec client.md §3.6):
//! an override for the exact id, then an override for the base DC (|id| or |id| − 10000),
//! then the built-in address of the base DC, and for anything unknown the default DC.
//! Media ids go to the regular DC address, as every direct-mode proxy does.

use crate::fatal::Fatal;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// DC that unknown ids fall back to (mtg and telemt use 2 too).
pub const DEFAULT_DC: i32 = 2;

/// Telegram's DC port.
pub const DC_PORT: u16 = 443;

const fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

const fn v6(s: [u16; 8]) -> Ipv6Addr {
    Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])
}

/// (DC, IPv4, IPv6) of the production DCs.
const PROD: [(i32, Ipv4Addr, Ipv6Addr); 6] = [
    (
        1,
        v4(149, 154, 175, 50),
        v6([0x2001, 0xb28, 0xf23d, 0xf001, 0, 0, 0, 0xa]),
    ),
    (
        2,
        v4(149, 154, 167, 51),
        v6([0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xa]),
    ),
    (
        3,
        v4(149, 154, 175, 100),
        v6([0x2001, 0xb28, 0xf23d, 0xf003, 0, 0, 0, 0xa]),
    ),
    (
        4,
        v4(149, 154, 167, 91),
        v6([0x2001, 0x67c, 0x4e8, 0xf004, 0, 0, 0, 0xa]),
    ),
    (
        5,
        v4(149, 154, 171, 5),
        v6([0x2001, 0xb28, 0xf23f, 0xf005, 0, 0, 0, 0xa]),
    ),
    (
        203,
        v4(91, 105, 192, 100),
        v6([0x2a0a, 0xf280, 0x203, 0xa, 0x5000, 0, 0, 0x100]),
    ),
];

/// (DC, IPv4, IPv6) of the test DCs, reached with ids 10001..10003.
const TEST: [(i32, Ipv4Addr, Ipv6Addr); 3] = [
    (
        1,
        v4(149, 154, 175, 10),
        v6([0x2001, 0xb28, 0xf23d, 0xf001, 0, 0, 0, 0xe]),
    ),
    (
        2,
        v4(149, 154, 167, 40),
        v6([0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xe]),
    ),
    (
        3,
        v4(149, 154, 175, 117),
        v6([0x2001, 0xb28, 0xf23d, 0xf003, 0, 0, 0, 0xe]),
    ),
];

/// One operator override: `--dc-override DC:HOST:PORT`. HOST is resolved at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// The resolved routing table.
#[derive(Clone, Debug, Default)]
pub struct DcTable {
    overrides: HashMap<i32, Vec<SocketAddr>>,
    prefer_ipv6: bool,
}

/// Where a lookup ended up, for logs and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The DC id actually used (differs from the client's id after a fallback).
    pub dc: i32,
    pub fallback: bool,
    /// Addresses to try, in order.
    pub addrs: Vec<SocketAddr>,
}

impl DcTable {
    /// `overrides` maps an exact DC id to resolved addresses.
    pub fn new(overrides: HashMap<i32, Vec<SocketAddr>>, prefer_ipv6: bool) -> Self {
        DcTable {
            overrides,
            prefer_ipv6,
        }
    }

    fn builtin(&self, test: bool, base: i32) -> Option<Vec<SocketAddr>> {
        let table: &[(i32, Ipv4Addr, Ipv6Addr)] = if test { &TEST } else { &PROD };
        let &(_, a4, a6) = table.iter().find(|(dc, _, _)| *dc == base)?;
        let (a4, a6) = (
            SocketAddr::new(IpAddr::V4(a4), DC_PORT),
            SocketAddr::new(IpAddr::V6(a6), DC_PORT),
        );
        Some(if self.prefer_ipv6 {
            vec![a6, a4]
        } else {
            vec![a4, a6]
        })
    }

    fn known(&self, id: i32) -> Option<Vec<SocketAddr>> {
        if let Some(a) = self.overrides.get(&id) {
            return Some(a.clone());
        }
        let abs = id.abs();
        let (test, base) = if abs > 10000 {
            (true, abs - 10000)
        } else {
            (false, abs)
        };
        if let Some(a) = self.overrides.get(&base).filter(|_| !test) {
            return Some(a.clone());
        }
        if test {
            if let Some(a) = self.overrides.get(&abs) {
                return Some(a.clone());
            }
        }
        self.builtin(test, base)
    }

    /// Routes a client's DC id; unknown ids (0, random bytes, DCs that do not exist) go to
    /// [`DEFAULT_DC`] instead of being closed.
    pub fn route(&self, id: i16) -> Route {
        let id = i32::from(id);
        if let Some(addrs) = self.known(id) {
            return Route {
                dc: id,
                fallback: false,
                addrs,
            };
        }
        let addrs = self
            .known(DEFAULT_DC)
            .expect("default DC is in the built-in table");
        Route {
            dc: DEFAULT_DC,
            fallback: true,
            addrs,
        }
    }
}

/// Resolves `--dc-override` targets once at start-up (an IP literal needs no resolver).
pub fn resolve_overrides(list: &[(i32, Target)]) -> Result<HashMap<i32, Vec<SocketAddr>>, Fatal> {
    use std::net::ToSocketAddrs;
    let mut map: HashMap<i32, Vec<SocketAddr>> = HashMap::new();
    for (dc, t) in list {
        let host = t.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, t.port)],
            Err(_) => (host, t.port)
                .to_socket_addrs()
                .map_err(|e| {
                    Fatal::log(
                        2,
                        format!(
                            "--dc-override {dc}:{}:{}: cannot resolve '{}': {e}",
                            t.host, t.port, host
                        ),
                    )
                })?
                .collect(),
        };
        map.entry(*dc).or_default().extend(addrs);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn builtin_ipv4_first_unless_ipv6_preferred() {
        let t = DcTable::new(HashMap::new(), false);
        let r = t.route(2);
        assert_eq!(
            r,
            Route {
                dc: 2,
                fallback: false,
                addrs: vec![sa("149.154.167.51:443"), sa("[2001:67c:4e8:f002::a]:443")]
            }
        );
        let t6 = DcTable::new(HashMap::new(), true);
        assert_eq!(t6.route(5).addrs[0], sa("[2001:b28:f23f:f005::a]:443"));
    }

    #[test]
    fn media_test_and_unknown_ids() {
        let t = DcTable::new(HashMap::new(), false);
        assert_eq!(t.route(-4).addrs[0], sa("149.154.167.91:443"));
        assert_eq!(t.route(10003).addrs[0], sa("149.154.175.117:443"));
        assert_eq!(t.route(-10001).addrs[0], sa("149.154.175.10:443"));
        assert_eq!(t.route(203).addrs[0], sa("91.105.192.100:443"));
        for unknown in [0i16, 7, -99, 10004, i16::MIN] {
            let r = t.route(unknown);
            assert!(r.fallback, "{unknown}");
            assert_eq!(r.dc, DEFAULT_DC);
            assert_eq!(r.addrs[0], sa("149.154.167.51:443"));
        }
    }

    #[test]
    fn overrides_exact_then_base_then_fallback_through_default() {
        let mut o = HashMap::new();
        o.insert(2, vec![sa("127.0.0.1:1002")]);
        o.insert(-3, vec![sa("127.0.0.1:1333")]);
        let t = DcTable::new(o, false);
        assert_eq!(t.route(2).addrs, vec![sa("127.0.0.1:1002")]);
        assert_eq!(t.route(-2).addrs, vec![sa("127.0.0.1:1002")]);
        assert_eq!(t.route(-3).addrs, vec![sa("127.0.0.1:1333")]);
        assert_eq!(t.route(3).addrs[0], sa("149.154.175.100:443"));
        // Unknown ids land on the default DC's override.
        assert_eq!(
            t.route(99),
            Route {
                dc: 2,
                fallback: true,
                addrs: vec![sa("127.0.0.1:1002")]
            }
        );
        // A test id is not sent to the production override.
        assert_eq!(t.route(10002).addrs[0], sa("149.154.167.40:443"));
    }

    #[test]
    fn resolve_literals_and_brackets() {
        let m = resolve_overrides(&[
            (
                2,
                Target {
                    host: "127.0.0.1".into(),
                    port: 5,
                },
            ),
            (
                2,
                Target {
                    host: "[::1]".into(),
                    port: 6,
                },
            ),
            (
                -1,
                Target {
                    host: "localhost".into(),
                    port: 7,
                },
            ),
        ])
        .unwrap();
        assert_eq!(m[&2], vec![sa("127.0.0.1:5"), sa("[::1]:6")]);
        assert!(m[&-1].iter().all(|a| a.ip().is_loopback() && a.port() == 7));
    }
}
