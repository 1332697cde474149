//! Parsers of the structured option values: the `-p` port spec, 32-digit hex secrets and
//! tags, seconds, `--dc-override` and host names. Each returns an error naming the value.

use super::c_num::c_int_prefix;
use super::options::{DcOverride, PortSpec};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// `-p`: `sscanf("%d:%d")` with the C checks. A single port above 65535 (up to C's
/// `INT_MAX`) is taken modulo 65536, as C's socket code does; it also comes back as given.
/// One that wraps to 0 is refused (C would listen on a random port), and so is a range
/// past 65535.
pub(super) fn parse_port_spec(s: &[u8]) -> Option<(PortSpec, Option<u32>)> {
    let (start, used) = c_int_prefix(s)?;
    let end = if s.get(used) == Some(&b':') {
        c_int_prefix(&s[used + 1..]).map(|(e, _)| e)
    } else {
        None
    };
    match end {
        None if (1..=65535).contains(&start) => Some((PortSpec::Single(start as u16), None)),
        None if start > 65535 && start <= i128::from(i32::MAX) && start % 65536 != 0 => {
            Some((PortSpec::Single((start % 65536) as u16), Some(start as u32)))
        }
        None => None,
        Some(end) => (start > 0 && start <= end && end <= 65535)
            .then_some((PortSpec::Range(start as u16, end as u16), None)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HexErr {
    Len(usize),
    Digit(char),
}

impl HexErr {
    pub(super) fn message(self, letter: char, value: &str) -> String {
        match self {
            HexErr::Len(_) => format!(
                "'{letter}' option requires exactly 32 hex digits; got {} characters: '{value}'",
                value.chars().count()
            ),
            HexErr::Digit(ch) => format!(
                "'{letter}' option requires exactly 32 hex digits. '{ch}' is not hexdigit (in '{value}')"
            ),
        }
    }
}

/// Exactly 32 hex digits (either case) → 16 bytes. The length is checked first, as in C.
pub(super) fn parse_hex16(s: &[u8]) -> Result<[u8; 16], HexErr> {
    if s.len() != 32 {
        return Err(HexErr::Len(s.len()));
    }
    let mut out = [0u8; 16];
    for (i, &ch) in s.iter().enumerate() {
        let d = match ch {
            b'0'..=b'9' => ch - b'0',
            b'a'..=b'f' => ch - b'a' + 10,
            b'A'..=b'F' => ch - b'A' + 10,
            _ => {
                let shown = String::from_utf8_lossy(&s[i..])
                    .chars()
                    .next()
                    .unwrap_or('?');
                return Err(HexErr::Digit(shown));
            }
        };
        out[i / 2] = (out[i / 2] << 4) | d;
    }
    Ok(out)
}

pub(super) fn bad_seconds(opt: &str, v: &str) -> String {
    format!("invalid {opt} value '{v}': expected a number of seconds greater than 0")
}

/// A strictly parsed, finite, positive number of seconds.
pub(super) fn parse_seconds(v: &str) -> Option<Duration> {
    let x: f64 = v.trim().parse().ok()?;
    if !(x.is_finite() && x > 0.0) {
        return None;
    }
    let d = Duration::try_from_secs_f64(x).ok()?;
    (!d.is_zero()).then_some(d)
}

pub(super) fn parse_dc_override(v: &str) -> Result<DcOverride, String> {
    let (dc_s, rest) = v
        .split_once(':')
        .ok_or_else(|| "missing ':' after the DC number".to_string())?;
    let dc: i32 = dc_s
        .parse()
        .map_err(|_| format!("DC '{dc_s}' is not an integer"))?;
    if dc == 0 {
        return Err("DC must not be 0".into());
    }
    let (host, port_s) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| "missing ']' after the IPv6 address".to_string())?;
        h.parse::<Ipv6Addr>()
            .map_err(|_| format!("'{h}' is not a valid IPv6 address"))?;
        let p = after
            .strip_prefix(':')
            .ok_or_else(|| "expected ':<port>' after ']'".to_string())?;
        (h, p)
    } else {
        let (h, p) = rest
            .rsplit_once(':')
            .ok_or_else(|| "missing ':<port>'".to_string())?;
        if h.contains(':') {
            return Err(format!(
                "IPv6 address '{h}' must be written in brackets, e.g. [{h}]"
            ));
        }
        validate_host(h)?;
        (h, p)
    };
    if port_s.is_empty() || !port_s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port '{port_s}' is not a number"));
    }
    let port = match port_s.parse::<u32>() {
        Ok(p @ 1..=65535) => p as u16,
        _ => return Err(format!("port '{port_s}' out of range 1..65535")),
    };
    Ok(DcOverride {
        dc,
        host: host.to_string(),
        port,
    })
}

/// An IPv4 literal or a DNS host name.
pub(super) fn validate_host(h: &str) -> Result<(), String> {
    if h.is_empty() {
        return Err("empty host".into());
    }
    if h.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return h
            .parse::<Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| format!("'{h}' is not a valid IPv4 address"));
    }
    let name = h.strip_suffix('.').unwrap_or(h);
    let ok = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("'{h}' is not a valid host name or IPv4 address"))
    }
}
