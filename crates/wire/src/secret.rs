//! Secrets and proxy links (spec client.md §1.2–1.3).
//!
//! The server knows only 16-byte secrets; the client-side forms add a mode byte (`dd`:
//! padded intermediate only; `ee` + domain: fake TLS). Links carry the client form.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;

/// Longest TLS domain TDLib accepts in an `ee` secret.
pub const MAX_TLS_DOMAIN: usize = 182;

/// A client-side secret: what goes into a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientSecret {
    /// 16 bytes: any obfuscated2 transport.
    Plain([u8; 16]),
    /// `dd` + 16 bytes: padded intermediate.
    Padded([u8; 16]),
    /// `ee` + 16 bytes + domain: fake TLS with that SNI.
    Tls([u8; 16], String),
}

impl ClientSecret {
    /// The 16-byte key the server knows.
    pub fn key(&self) -> &[u8; 16] {
        match self {
            ClientSecret::Plain(k) | ClientSecret::Padded(k) | ClientSecret::Tls(k, _) => k,
        }
    }

    /// The raw bytes (mode byte, key, domain).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(17 + MAX_TLS_DOMAIN);
        match self {
            ClientSecret::Plain(k) => v.extend_from_slice(k),
            ClientSecret::Padded(k) => {
                v.push(0xdd);
                v.extend_from_slice(k);
            }
            ClientSecret::Tls(k, d) => {
                v.push(0xee);
                v.extend_from_slice(k);
                v.extend_from_slice(d.as_bytes());
            }
        }
        v
    }

    /// Lower-case hex, the form C operators know.
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// base64url without padding (mtg's and TDLib's form for `ee` secrets).
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_bytes())
    }

    /// Decodes link text the way TDLib does (`ProxySecret::from_link`): hex first, then
    /// base64url, then standard base64, each with or without `=` padding.
    pub fn from_link(text: &str) -> Result<ClientSecret, SecretError> {
        let bytes = decode_any(text).ok_or_else(|| SecretError::Encoding(text.to_string()))?;
        ClientSecret::from_bytes(&bytes)
    }

    /// Interprets decoded bytes by length and first byte.
    pub fn from_bytes(b: &[u8]) -> Result<ClientSecret, SecretError> {
        let key = |s: &[u8]| -> [u8; 16] { s[..16].try_into().expect("16 bytes") };
        match (b.len(), b.first()) {
            (16, _) => Ok(ClientSecret::Plain(key(b))),
            (17, Some(0xdd)) => Ok(ClientSecret::Padded(key(&b[1..]))),
            (n, Some(0xee)) if n >= 18 => {
                let domain = &b[17..];
                if domain.len() > MAX_TLS_DOMAIN {
                    return Err(SecretError::DomainTooLong(domain.len()));
                }
                let domain = std::str::from_utf8(domain).map_err(|_| SecretError::BadDomain)?;
                Ok(ClientSecret::Tls(key(&b[1..]), domain.to_string()))
            }
            (n, _) => Err(SecretError::Unsupported(n)),
        }
    }
}

fn decode_any(text: &str) -> Option<Vec<u8>> {
    if let Ok(v) = hex::decode(text) {
        return Some(v);
    }
    let t = text.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(t)
        .or_else(|_| STANDARD_NO_PAD.decode(t))
        .ok()
}

/// Parses a server-side secret: exactly 32 hex digits, any case (the `-S` rule).
pub fn parse_server_secret(text: &str) -> Result<[u8; 16], SecretError> {
    if text.len() != 32 {
        return Err(SecretError::Length(text.len()));
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(SecretError::NotHex(c));
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(text, &mut out).map_err(|_| SecretError::Encoding(text.to_string()))?;
    Ok(out)
}

/// Why a secret was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretError {
    /// Not 32 hex digits: the number of characters given.
    Length(usize),
    /// This character is not a hex digit.
    NotHex(char),
    /// The text is neither hex nor base64.
    Encoding(String),
    /// A decoded secret of this many bytes has no known form.
    Unsupported(usize),
    /// The fake-TLS domain of an `ee` secret is this many bytes, over the limit.
    DomainTooLong(usize),
    /// The fake-TLS domain is not UTF-8.
    BadDomain,
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretError::Length(n) => {
                write!(f, "a secret is exactly 32 hex digits, got {n} characters")
            }
            SecretError::NotHex(c) => write!(f, "'{c}' is not hexdigit"),
            SecretError::Encoding(t) => write!(f, "'{t}' is neither hex nor base64"),
            SecretError::Unsupported(n) => write!(f, "unsupported proxy secret of {n} bytes"),
            SecretError::DomainTooLong(n) => {
                write!(f, "TLS domain of {n} bytes exceeds {MAX_TLS_DOMAIN}")
            }
            SecretError::BadDomain => write!(f, "TLS domain is not valid UTF-8"),
        }
    }
}

impl std::error::Error for SecretError {}

/// Where a link points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// `tg://proxy?...`
    Tg,
    /// `https://t.me/proxy?...`
    TMe,
}

/// Builds a proxy link. The host is percent-encoded (an IPv6 literal's `:` and brackets);
/// the secret is written in hex (plain, `dd`) or hex as well for `ee` (both forms decode).
pub fn link(kind: LinkKind, host: &str, port: u16, secret: &ClientSecret) -> String {
    link_with(kind, host, port, &secret.to_hex())
}

/// A link carrying `secret_text` as given (e.g. [`ClientSecret::to_base64url`]).
pub fn link_with(kind: LinkKind, host: &str, port: u16, secret_text: &str) -> String {
    let base = match kind {
        LinkKind::Tg => "tg://proxy",
        LinkKind::TMe => "https://t.me/proxy",
    };
    format!(
        "{base}?server={}&port={port}&secret={}",
        url_encode(host),
        url_encode(secret_text)
    )
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: [u8; 16] = [
        0x03, 0x3a, 0x58, 0x8e, 0xbe, 0x5a, 0xae, 0x54, 0xb3, 0x7e, 0xa8, 0x5b, 0x97, 0xed, 0x66,
        0x1a,
    ];

    #[test]
    fn vector_8_2_encodings_and_links() {
        assert_eq!(
            parse_server_secret("033a588ebe5aae54b37ea85b97ed661a").unwrap(),
            S
        );
        assert_eq!(
            parse_server_secret("033A588EBE5AAE54B37EA85B97ED661A").unwrap(),
            S
        );
        assert_eq!(
            ClientSecret::Plain(S).to_hex(),
            "033a588ebe5aae54b37ea85b97ed661a"
        );
        assert_eq!(
            ClientSecret::Padded(S).to_hex(),
            "dd033a588ebe5aae54b37ea85b97ed661a"
        );
        let tls = ClientSecret::Tls(S, "www.example.com".into());
        assert_eq!(
            tls.to_hex(),
            "ee033a588ebe5aae54b37ea85b97ed661a7777772e6578616d706c652e636f6d"
        );
        assert_eq!(
            tls.to_base64url(),
            "7gM6WI6-Wq5Us36oW5ftZhp3d3cuZXhhbXBsZS5jb20"
        );
        assert_eq!(
            link(LinkKind::Tg, "proxy.example.net", 443, &tls),
            "tg://proxy?server=proxy.example.net&port=443&secret=ee033a588ebe5aae54b37ea85b97ed661a7777772e6578616d706c652e636f6d"
        );
        assert_eq!(
            link(LinkKind::TMe, "proxy.example.net", 443, &tls),
            "https://t.me/proxy?server=proxy.example.net&port=443&secret=ee033a588ebe5aae54b37ea85b97ed661a7777772e6578616d706c652e636f6d"
        );
        assert_eq!(
            link(LinkKind::Tg, "::1", 1, &ClientSecret::Plain(S)),
            "tg://proxy?server=%3A%3A1&port=1&secret=033a588ebe5aae54b37ea85b97ed661a"
        );
    }

    #[test]
    fn link_text_decodes_in_every_form() {
        let tls = ClientSecret::Tls(S, "www.example.com".into());
        for text in [
            "ee033a588ebe5aae54b37ea85b97ed661a7777772e6578616d706c652e636f6d",
            "7gM6WI6-Wq5Us36oW5ftZhp3d3cuZXhhbXBsZS5jb20",
            "7gM6WI6+Wq5Us36oW5ftZhp3d3cuZXhhbXBsZS5jb20=",
        ] {
            assert_eq!(ClientSecret::from_link(text).unwrap(), tls, "{text}");
        }
        assert_eq!(
            ClientSecret::from_link("dd033a588ebe5aae54b37ea85b97ed661a").unwrap(),
            ClientSecret::Padded(S)
        );
        assert_eq!(
            ClientSecret::from_link("aa033a588ebe5aae54b37ea85b97ed661a"),
            Err(SecretError::Unsupported(17))
        );
        assert!(ClientSecret::from_link("!!").is_err());
    }

    #[test]
    fn server_secret_errors() {
        assert_eq!(parse_server_secret("033a"), Err(SecretError::Length(4)));
        assert_eq!(
            parse_server_secret("dd033a588ebe5aae54b37ea85b97ed661a"),
            Err(SecretError::Length(34))
        );
        assert_eq!(
            parse_server_secret("g33a588ebe5aae54b37ea85b97ed661a"),
            Err(SecretError::NotHex('g'))
        );
    }
}
