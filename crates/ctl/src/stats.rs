//! The proxy's `/stats` page (C's format: one `key<TAB>value` per line) as a map.
//!
//! What it is not: an HTTP client. One `GET /stats HTTP/1.0` on loopback, read to the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `/stats` keys and values, as text.
pub type Stats = BTreeMap<String, String>;

/// Fetches and parses `/stats`; an error names what went wrong.
pub async fn fetch(addr: SocketAddr, limit: Duration) -> Result<Stats, String> {
    match tokio::time::timeout(limit, fetch_inner(addr)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no /stats answer from {addr} within {limit:?}")),
    }
}

async fn fetch_inner(addr: SocketAddr) -> Result<Stats, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("/stats {addr}: {e}"))?;
    s.write_all(b"GET /stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| format!("/stats {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .await
        .map_err(|e| format!("/stats {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or(("", &text));
    if !head.is_empty() && !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        let line = head.lines().next().unwrap_or("");
        return Err(format!("/stats {addr}: {line}"));
    }
    let stats = parse(body);
    if stats.is_empty() {
        return Err(format!("/stats {addr}: empty answer"));
    }
    Ok(stats)
}

/// `key<TAB>value` lines; other lines are skipped.
pub fn parse(body: &str) -> Stats {
    body.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// A numeric value, when present.
pub fn num(stats: &Stats, key: &str) -> Option<f64> {
    stats.get(key).and_then(|v| v.parse::<f64>().ok())
}

/// The sum of the keys that are present.
pub fn sum(stats: &Stats, keys: &[String]) -> f64 {
    keys.iter().filter_map(|k| num(stats, k)).sum()
}

/// The keys a report shows from a sample, when present (C's and ours).
pub const SAMPLE_KEYS: &[&str] = &[
    "pid",
    "version",
    "uptime",
    "active_special_connections",
    "total_special_connections",
    "tot_forwarded_queries",
    "tot_forwarded_responses",
    "dropped_queries",
    "dropped_responses",
    "total_connect_failures",
    "ext_connections",
    "ready_targets",
    "ready_outbound_connections",
];

/// The [`SAMPLE_KEYS`] subset of a sample.
pub fn sample(stats: &Stats) -> Stats {
    stats
        .iter()
        .filter(|(k, _)| SAMPLE_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_c_format() {
        let s = parse("uptime\t12\ntot_forwarded_queries\t5\nnot a pair\nversion\tmtproxy x\n");
        assert_eq!(num(&s, "uptime"), Some(12.0));
        assert_eq!(s.get("version").unwrap(), "mtproxy x");
        assert_eq!(s.len(), 3);
        assert_eq!(
            sum(
                &s,
                &["uptime".into(), "tot_forwarded_queries".into(), "x".into()]
            ),
            17.0
        );
    }
}
