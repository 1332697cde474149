//! The JA4 fingerprint of a ClientHello (FoxIO's JA4, TLS over TCP), the name a DPI box
//! files a client under: `t13d1516h2_8daaf6152771_e5627efa2ab1`.
//!
//! - part a: `t`, the highest supported_versions entry (else the legacy version) as two
//!   characters, `d`/`i` for SNI present or not, the number of cipher suites and of
//!   extensions (two digits each, at most 99), the first and last character of the first
//!   ALPN value (`00` without one);
//! - part b: the first 12 hex digits of SHA-256 over the sorted cipher list
//!   (`002f,0035,…`), or `000000000000` for none;
//! - part c: the same over the sorted extension list without SNI and ALPN, then `_` and the
//!   signature algorithms in the order sent (no `_` without them), or `000000000000`.
//!
//! GREASE values are ignored everywhere. Not here: JA4S/JA4X and the other JA4+ methods.

use super::hello_fields::{ext, is_grease, HelloFields};
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// Length of every JA4 string.
pub const JA4_LEN: usize = 36;

/// JA4 of a hello record; `None` if it does not parse ([`HelloFields::parse`]).
pub fn ja4(rec: &[u8]) -> Option<String> {
    Some(ja4_of(&HelloFields::parse(rec)?, rec))
}

/// JA4 of a hello record already parsed into `f`.
pub fn ja4_of(f: &HelloFields, rec: &[u8]) -> String {
    let ciphers: Vec<u16> = f
        .ciphers
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let exts: Vec<u16> = f
        .extensions
        .iter()
        .map(|e| e.0)
        .filter(|t| !is_grease(*t))
        .collect();
    let version = f
        .supported_versions(rec)
        .and_then(|v| v.into_iter().filter(|v| !is_grease(*v)).max())
        .unwrap_or(f.legacy_version);
    let sni = if exts.contains(&ext::SERVER_NAME) {
        'd'
    } else {
        'i'
    };
    let mut out = String::with_capacity(JA4_LEN);
    let _ = write!(
        out,
        "t{}{sni}{:02}{:02}{}_",
        version_code(version),
        ciphers.len().min(99),
        exts.len().min(99),
        alpn_code(f.first_alpn(rec).unwrap_or_default())
    );
    let mut sorted = ciphers;
    sorted.sort_unstable();
    out.push_str(&hash12(&hex_list(&sorted)));
    out.push('_');
    let mut rest: Vec<u16> = exts
        .into_iter()
        .filter(|t| *t != ext::SERVER_NAME && *t != ext::ALPN)
        .collect();
    rest.sort_unstable();
    let mut c = hex_list(&rest);
    let sigs = f.signature_algorithms(rec).unwrap_or_default();
    if !sigs.is_empty() && !c.is_empty() {
        c.push('_');
        c.push_str(&hex_list(&sigs));
    }
    out.push_str(&hash12(&c));
    out
}

fn version_code(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        _ => "00",
    }
}

/// First and last character of the first ALPN value; their hex digits if either is not
/// ASCII alphanumeric; `00` for none.
fn alpn_code(a: &[u8]) -> String {
    let (Some(&first), Some(&last)) = (a.first(), a.last()) else {
        return "00".into();
    };
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        return format!("{}{}", first as char, last as char);
    }
    let h = hex::encode([first, last]);
    format!("{}{}", &h[..1], &h[3..])
}

fn hex_list(v: &[u16]) -> String {
    let mut s = String::with_capacity(v.len() * 5);
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{x:04x}");
    }
    s
}

fn hash12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    hex::encode(&Sha256::digest(s.as_bytes())[..6])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testutil::*;

    /// The worked example of the JA4 specification (technical_details/JA4.md).
    #[test]
    fn spec_example_hashes() {
        let ciphers = [
            0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
            0x009c, 0x009d, 0x002f, 0x0035,
        ];
        let mut sorted = ciphers.to_vec();
        sorted.sort_unstable();
        assert_eq!(hash12(&hex_list(&sorted)), "8daaf6152771");
        let exts = [
            0x0005, 0x000a, 0x000b, 0x000d, 0x0012, 0x0015, 0x0017, 0x001b, 0x0023, 0x002b, 0x002d,
            0x0033, 0x4469, 0xff01,
        ];
        let sigs = [
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ];
        let c = format!("{}_{}", hex_list(&exts), hex_list(&sigs));
        assert_eq!(hash12(&c), "e5627efa2ab1");
        assert_eq!(hash12(&hex_list(&exts)), "6d807ffa2a79");
        assert_eq!(hash12(""), "000000000000");
    }

    #[test]
    fn alpn_codes() {
        assert_eq!(alpn_code(b"h2"), "h2");
        assert_eq!(alpn_code(b"http/1.1"), "h1");
        assert_eq!(alpn_code(b"x"), "xx");
        assert_eq!(alpn_code(b""), "00");
        assert_eq!(alpn_code(&[0xab]), "ab");
        assert_eq!(alpn_code(&[0xab, 0xcd]), "ad");
        assert_eq!(alpn_code(&[0x30, 0xab]), "3b");
        assert_eq!(alpn_code(&[0x30, 0xab, 0xcd, 0x31]), "01");
    }

    /// The spec hello (TDLib's layout): 15 suites and 16 extensions once GREASE is gone
    /// (the padding counts), SNI present, h2 first.
    #[test]
    fn tdlib_hello() {
        let j = ja4(&hello_86()).unwrap();
        assert_eq!(j.len(), JA4_LEN);
        // The same extension set and signature algorithms as the specification's example.
        assert_eq!(j, "t13d1516h2_8daaf6152771_e5627efa2ab1");
        // No SNI: 'i', one extension fewer; part c does not change (SNI is left out).
        let no_sni = crate::tls::client::build_client_hello(&s(), None, NOW, &mut stream("x"), 517);
        let k = ja4(&no_sni).unwrap();
        assert!(k.starts_with("t13i1515h2_8daaf6152771_"), "{k}");
        assert_eq!(j[24..], k[24..]);
        assert_eq!(ja4(&[0x16, 3, 1, 0, 0]), None);
    }
}
