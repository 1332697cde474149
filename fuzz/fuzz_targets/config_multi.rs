//! proxy-multi.conf: `mtproxy::config::multi::parse` with a deterministic fake resolver.
//!
//! Input: the file's bytes. Invariants: the resolver is only asked for host words of the
//! grammar (1..=63 bytes of `[A-Za-z0-9._-]`, plus `:` inside brackets); a parsed config has
//! 1..=1024 distinct, non-empty clusters, `targets_total` proxy lines (at most 4096), ports
//! 1..=65535 and 1 <= min <= max <= 1000 connections, a timeout in 10..=30000 ms; the text
//! after a NUL byte is ignored; an error renders with at most 20 characters of context.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproxy::config::multi::{parse, MAX_CLUSTERS, MAX_TARGETS};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn fake_dns(name: &str, bracketed: bool) -> Option<IpAddr> {
    assert!(!name.is_empty() && name.len() <= 63, "{name:?}");
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || (bracketed && b == b':')),
        "resolver asked for {name:?}"
    );
    match name {
        "localhost" => return Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "me.example" => return Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
        "v6only.example" => {
            return Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)))
        }
        _ => {}
    }
    let h = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    match h % 3 {
        0 => None,
        1 => Some(IpAddr::V4(Ipv4Addr::from(h))),
        _ => Some(IpAddr::V6(Ipv6Addr::from(
            0x2001_0db8_u128 << 96 | u128::from(h),
        ))),
    }
}

fuzz_target!(|text: &[u8]| {
    let r = parse(text, &fake_dns);
    let nul = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    assert_eq!(parse(&text[..nul], &fake_dns), r);
    match r {
        Ok(cfg) => {
            assert!(!cfg.clusters.is_empty() && cfg.clusters.len() <= MAX_CLUSTERS);
            let total: usize = cfg.clusters.iter().map(|c| c.targets.len()).sum();
            assert_eq!(total, cfg.targets_total);
            assert!(total <= MAX_TARGETS);
            assert!(
                (10..=30000).contains(&cfg.timeout_ms),
                "timeout {}",
                cfg.timeout_ms
            );
            for (i, c) in cfg.clusters.iter().enumerate() {
                assert!(!c.targets.is_empty());
                assert!(
                    cfg.clusters[..i].iter().all(|o| o.id != c.id),
                    "dc {} twice",
                    c.id
                );
                assert_eq!(cfg.lookup(c.id).map(|l| l.id), Some(c.id));
                for t in &c.targets {
                    assert_ne!(t.addr.port(), 0);
                    assert!(1 <= t.min_connections, "{t:?}");
                    assert!(t.min_connections <= t.max_connections, "{t:?}");
                    assert!(t.max_connections <= 1000, "{t:?}");
                }
            }
            if let Some(d) = cfg.default_cluster() {
                assert_eq!(i32::from(d.id), cfg.default_dc);
            }
            assert!(cfg.distinct_targets().len() <= total);
        }
        Err(e) => {
            let _ = e.render("proxy-multi.conf");
            let _ = e.to_string();
            assert!(e.near.chars().count() <= 24, "near {:?}", e.near);
            let lines = text[..nul].iter().filter(|&&b| b == b'\n').count();
            assert!(e.line <= lines, "line {} of {lines}", e.line);
        }
    }
});
