//! Fixtures the stats tests share: a view with every field set, C's sample page, and a
//! small Prometheus text parser.

use super::view::{SecretView, StatsView, DEFAULT_WINDOW_CLAMP};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The C sample: (main page lines, fork lines), each as (key, value), comments and
/// blank lines dropped. The fork part starts after the first blank line.
pub(super) type Lines = Vec<(String, String)>;

pub(super) fn sample() -> (Lines, Lines) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/spec/c-stats-sample.txt"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut parts = (Vec::new(), Vec::new());
    let mut fork = false;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            fork = true;
            continue;
        }
        let (k, v) = line.split_once('\t').expect("key<TAB>value");
        let dst = if fork { &mut parts.1 } else { &mut parts.0 };
        dst.push((k.to_string(), v.to_string()));
    }
    assert!(parts.0.len() > 150, "sample main part too short");
    parts
}

pub(super) fn lines(body: &str) -> Vec<(String, String)> {
    assert!(body.ends_with('\n'), "body must end with a newline");
    body.lines()
        .map(|l| {
            assert_eq!(l.matches('\t').count(), 1, "one tab per line: {l:?}");
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

pub(super) fn full_view() -> StatsView {
    StatsView {
        pid: 4242,
        start_time: 1_795_722_105,
        current_time: 1_795_722_761,
        pid_ip: Ipv4Addr::new(192, 0, 2, 2),
        pid_port: 31080,
        cpu_user_seconds: 3.0,
        cpu_sys_seconds: 11.5,
        vm_size_bytes: 1 << 30,
        vm_rss_bytes: 9 << 20,
        vm_data_bytes: 250 << 20,
        version: crate::cli::version(),
        stats_generate_time: 0.000_09,
        workers: 0,
        window_clamp: DEFAULT_WINDOW_CLAMP,
        max_connections: 10_000,
        max_special_connections: 9_000,
        max_accept_rate: 0,
        allow_skip_dh: false,
        proxy_tag_set: true,
        listening_sockets: 2,
        config_filename: "proxy-multi.conf".into(),
        config_loaded_at: 1_795_722_105,
        config_size: 129,
        config_md5: "be4007cb68bd2c36403a90fde83e054c".into(),
        config_auth_clusters: 4,
        aes_pwd_md5: "3c44ae58803b037d34c48bb8425770f4".into(),
        accepted: 25,
        active: 3,
        handshakes_ok: [7, 8, 9],
        handshakes_bad: 2,
        handshakes_timeout: 1,
        tls_accepted: 0,
        tls_rejected: 0,
        tls_masked: 5,
        tls_replayed: 6,
        dc_fallbacks: 4,
        upstream_connect_failed: 1,
        bytes_up: 1000,
        bytes_down: 5000,
        idle_closed: 3,
        accept_rate_limit_failed: 13,
        accept_failed: 11,
        accept_connection_limit_failed: 12,
        outbound_connections: 8,
        outbound_connections_created: 9,
        connect_latency: vec![(0.001, 1), (0.01, 4), (0.1, 8), (1.0, 9)],
        connect_latency_sum: 0.25,
        connect_latency_count: 10,
        forwarded_queries: 24,
        dropped_queries: 13,
        forwarded_responses: 23,
        dropped_responses: 14,
        forwarded_simple_acks: 15,
        dropped_simple_acks: 16,
        ext_connections: 2,
        ext_connections_created: 17,
        failed_lru: 0,
        me_buffered_bytes: 0,
        failed_flood: 18,
        me_connects: 9,
        me_connect_failed: 19,
        me_targets: 3,
        me_declared_targets: 2,
        me_ready_targets: 2,
        me_ready_connections: 8,
        reloads_ok: 20,
        reloads_failed: 21,
        secrets: vec![
            SecretView::default(),
            SecretView {
                active_ips: 1,
                active_auth_keys: 1,
            },
            SecretView::default(),
        ],
        process_pool: None,
        dpi: Default::default(),
        http_connections: 1,
        http_accepted: 4,
        http_queries: 2,
        http_bad_headers: 22,
    }
}

/// A value's shape: per space-separated token, integer `i`, fixed-point `f<decimals>`
/// or other `s` (double spaces give empty tokens, kept).
pub(super) fn shape(v: &str) -> Vec<String> {
    v.split(' ')
        .map(|t| {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            match t.split_once('.') {
                None if digits(t.strip_prefix('-').unwrap_or(t)) => "i".to_string(),
                Some((a, b)) if digits(a) && digits(b) => format!("f{}", b.len()),
                _ => format!("s:{}", t.is_empty()),
            }
        })
        .collect()
}

#[derive(Debug)]
pub(super) struct Sample {
    pub(super) name: String,
    pub(super) labels: Vec<(String, String)>,
    pub(super) value: f64,
}

/// A small parser for the Prometheus text format 0.0.4: `# HELP`, `# TYPE`, samples
/// `name{k="v",…} value`. Fails on anything else and on samples without a TYPE.
pub(super) fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut it = rest.splitn(3, ' ');
            match (it.next(), it.next(), it.next()) {
                (Some("HELP"), Some(n), Some(_)) if valid_name(n) => {}
                (Some("TYPE"), Some(n), Some(t)) if valid_name(n) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(format!("bad type: {line}"));
                    }
                    if types.insert(n.to_string(), t.to_string()).is_some() {
                        return Err(format!("duplicate TYPE: {line}"));
                    }
                }
                _ => return Err(format!("unexpected comment: {line}")),
            }
            continue;
        }
        let end = line.find(['{', ' ']).ok_or(format!("no value: {line}"))?;
        let name = &line[..end];
        if !valid_name(name) {
            return Err(format!("bad name: {line}"));
        }
        let mut rest = &line[end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    r = after;
                    break;
                }
                let eq = r.find("=\"").ok_or(format!("bad label: {line}"))?;
                let key = r[..eq].to_string();
                let mut value = String::new();
                let mut chars = r[eq + 2..].char_indices();
                let close = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => value.push(c),
                            _ => return Err(format!("bad escape: {line}")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("unterminated label: {line}")),
                    }
                };
                labels.push((key, value));
                r = &r[eq + 2 + close + 1..];
                r = r.strip_prefix(',').unwrap_or(r);
            }
            rest = r;
        }
        let mut fields = rest.trim_start_matches(' ').split(' ');
        let raw = fields.next().unwrap_or("");
        let value = match raw {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            _ => raw.parse().map_err(|_| format!("bad value: {line}"))?,
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|b| types.get(*b).map(String::as_str) == Some("histogram"))
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(format!("sample without TYPE: {line}"));
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

pub(super) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
        .value
}
