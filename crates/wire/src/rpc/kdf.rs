//! AES-256-CBC keys and IVs for an ME link (spec backend-ops.md §1.6, the C's
//! `aes_create_keys`).
//!
//! One byte string `S` is hashed per direction:
//! `nonce_srv ‖ nonce_clt ‖ client_ts ‖ srv_ip ‖ clt_port ‖ purpose ‖ clt_ip ‖ srv_port ‖ secret
//! ‖ nonce_srv ‖ [clt_ipv6 ‖ srv_ipv6] ‖ nonce_clt`, then `key = MD5(S[1..])[..12] ‖ SHA1(S)`
//! and `iv = MD5(S[2..])`. Purpose `CLIENT` gives the keys of the proxy→ME direction,
//! `SERVER` those of ME→proxy; so the proxy writes with `CLIENT` and reads with `SERVER`, and
//! the ME the other way round ([`Role`]).
//!
//! Addresses: `server` is the ME's address and `client` the proxy's, each as its own socket
//! sees it (the proxy: peer and local address; the ME: local and peer address). An
//! IPv4-mapped IPv6 address counts as IPv4. **NAT is the caller's job**: translate the IPv4
//! addresses through the `--nat-info` table before building [`KdfInput`] (ports are never
//! translated); [`translate_ipv4`] helps.
//!
//! Not here: the DH variant (never used) and validation of the secret's length (the
//! proxy-secret loader enforces 32..=256 bytes).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use md5::{Digest as _, Md5};
use sha1::Sha1;

use mtproxy_crypto::{AesCbcDecryptor, AesCbcEncryptor};

/// Which end of the link we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The proxy, which connects to the ME: writes with `CLIENT`, reads with `SERVER`.
    Client,
    /// The ME (or a fake one): writes with `SERVER`, reads with `CLIENT`.
    Server,
}

/// The 6 ASCII bytes at offset 42 of `S`: which direction the keys are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// `CLIENT`: the proxy → ME direction.
    Client,
    /// `SERVER`: the ME → proxy direction.
    Server,
}

impl Purpose {
    /// The ASCII word.
    pub const fn bytes(self) -> &'static [u8; 6] {
        match self {
            Purpose::Client => b"CLIENT",
            Purpose::Server => b"SERVER",
        }
    }
}

/// Everything the key derivation hashes, besides the purpose.
#[derive(Clone, Copy)]
pub struct KdfInput<'a> {
    /// The ME's nonce.
    pub nonce_srv: [u8; 16],
    /// The proxy's nonce.
    pub nonce_clt: [u8; 16],
    /// The **proxy's** crypto_ts: the one in the proxy's nonce packet.
    pub client_ts: i32,
    /// The ME's address (after NAT translation).
    pub server: SocketAddr,
    /// The proxy's address of this connection (after NAT translation).
    pub client: SocketAddr,
    /// The proxy secret, all of it.
    pub secret: &'a [u8],
}

impl std::fmt::Debug for KdfInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdfInput")
            .field("client_ts", &self.client_ts)
            .field("server", &self.server)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Key and IV of one direction.
#[derive(Clone, PartialEq, Eq)]
pub struct CbcKeyIv {
    /// The AES-256 key.
    pub key: [u8; 32],
    /// The first chaining block.
    pub iv: [u8; 16],
}

impl CbcKeyIv {
    /// An encrypting stream with this key and IV.
    pub fn encryptor(&self) -> AesCbcEncryptor {
        AesCbcEncryptor::new(&self.key, &self.iv)
    }

    /// A decrypting stream with this key and IV.
    pub fn decryptor(&self) -> AesCbcDecryptor {
        AesCbcDecryptor::new(&self.key, &self.iv)
    }
}

impl std::fmt::Debug for CbcKeyIv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CbcKeyIv(..)")
    }
}

/// The keys of both directions for one end of the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcKeys {
    /// Encrypts what we send.
    pub write: CbcKeyIv,
    /// Decrypts what we receive.
    pub read: CbcKeyIv,
}

impl RpcKeys {
    /// The two streams, `(encrypt, decrypt)`.
    pub fn ciphers(&self) -> (AesCbcEncryptor, AesCbcDecryptor) {
        (self.write.encryptor(), self.read.decryptor())
    }
}

/// The IPv4 address behind `ip`, also for an IPv4-mapped IPv6 address.
pub fn ipv4_of(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// Applies an IPv4 NAT rule set to `addr`: an IPv4 (or IPv4-mapped) address becomes
/// `SocketAddr::V4(nat(ip))`, port unchanged; IPv6 addresses are never translated.
pub fn translate_ipv4(addr: SocketAddr, nat: impl Fn(Ipv4Addr) -> Ipv4Addr) -> SocketAddr {
    match ipv4_of(addr.ip()) {
        Some(v4) => SocketAddr::new(IpAddr::V4(nat(v4)), addr.port()),
        None => addr,
    }
}

fn ipv6_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The byte string `S` for one purpose (exposed for tests and debugging).
///
/// The IPv4 layout is used when both addresses are IPv4 (or IPv4-mapped); otherwise both IPv4
/// fields are 0 and the 16-byte addresses are appended (an IPv4 one then as `::ffff:a.b.c.d`;
/// the C never mixes the two, it asserts).
pub fn kdf_string(input: &KdfInput<'_>, purpose: Purpose) -> Vec<u8> {
    let v4 = match (ipv4_of(input.server.ip()), ipv4_of(input.client.ip())) {
        (Some(s), Some(c)) => Some((u32::from(s), u32::from(c))),
        _ => None,
    };
    let (srv_ip, clt_ip) = v4.unwrap_or((0, 0));
    let mut s = Vec::with_capacity(118 + input.secret.len());
    s.extend_from_slice(&input.nonce_srv);
    s.extend_from_slice(&input.nonce_clt);
    s.extend_from_slice(&input.client_ts.to_le_bytes());
    s.extend_from_slice(&srv_ip.to_le_bytes());
    s.extend_from_slice(&input.client.port().to_le_bytes());
    s.extend_from_slice(purpose.bytes());
    s.extend_from_slice(&clt_ip.to_le_bytes());
    s.extend_from_slice(&input.server.port().to_le_bytes());
    s.extend_from_slice(input.secret);
    s.extend_from_slice(&input.nonce_srv);
    if v4.is_none() {
        s.extend_from_slice(&ipv6_bytes(input.client.ip()));
        s.extend_from_slice(&ipv6_bytes(input.server.ip()));
    }
    s.extend_from_slice(&input.nonce_clt);
    s
}

/// Key and IV for one purpose.
pub fn derive_key_iv(input: &KdfInput<'_>, purpose: Purpose) -> CbcKeyIv {
    let s = kdf_string(input, purpose);
    let mut key = [0u8; 32];
    key[..12].copy_from_slice(&Md5::digest(&s[1..])[..12]);
    key[12..].copy_from_slice(&Sha1::digest(&s));
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&Md5::digest(&s[2..]));
    CbcKeyIv { key, iv }
}

/// Both directions' keys for `role`: the proxy gets `write = CLIENT, read = SERVER`, the ME
/// the opposite, so one side's write keys are the other's read keys.
pub fn derive_keys(input: &KdfInput<'_>, role: Role) -> RpcKeys {
    let client = derive_key_iv(input, Purpose::Client);
    let server = derive_key_iv(input, Purpose::Server);
    match role {
        Role::Client => RpcKeys {
            write: client,
            read: server,
        },
        Role::Server => RpcKeys {
            write: server,
            read: client,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = {
        let mut s = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            s[i] = i as u8;
            i += 1;
        }
        s
    };

    fn example(server: &str, client: &str) -> KdfInput<'static> {
        KdfInput {
            nonce_srv: [0x11; 16],
            nonce_clt: [0x22; 16],
            client_ts: 1_600_000_000,
            server: server.parse().unwrap(),
            client: client.parse().unwrap(),
            secret: &SECRET,
        }
    }

    #[test]
    fn worked_example_ipv4() {
        let input = example("149.154.175.50:8888", "203.0.113.7:40000");
        let s = kdf_string(&input, Purpose::Client);
        assert_eq!(s.len(), 118);
        let want = format!(
            "{}{}00105e5f32af9a95409c434c49454e54077100cbb822{}{}{}",
            "11".repeat(16),
            "22".repeat(16),
            hex::encode(SECRET),
            "11".repeat(16),
            "22".repeat(16)
        );
        assert_eq!(hex::encode(&s), want);
        let k = derive_keys(&input, Role::Client);
        assert_eq!(
            hex::encode(k.write.key),
            "68afb3af69d8d723b14955ecc679a61943829410b56e7d62fde7bf3f268e3b86"
        );
        assert_eq!(hex::encode(k.write.iv), "9967c1b58d65bf6c5131aedb688982f3");
        assert_eq!(
            hex::encode(k.read.key),
            "cf4586033a1b7720f898e87b5d7a3205e8629c7e512651079be935e989c5e788"
        );
        assert_eq!(hex::encode(k.read.iv), "a1af77af94bcc1fd248122e5bf865ad5");
        // The ME's view: the same two key pairs, swapped.
        let me = derive_keys(&input, Role::Server);
        assert_eq!(me.write, k.read);
        assert_eq!(me.read, k.write);
        assert_eq!(format!("{:?}", k.write), "CbcKeyIv(..)");
    }

    #[test]
    fn worked_example_ipv6() {
        let input = example("[2001:b28:f23d:f001::d]:8888", "[2001:db8::7]:40000");
        assert_eq!(kdf_string(&input, Purpose::Client).len(), 150);
        let k = derive_keys(&input, Role::Client);
        assert_eq!(
            hex::encode(k.write.key),
            "83d230b90e7309548e571f1f3b506fb45335f05849f89f101e4cd1aa18dd9f12"
        );
        assert_eq!(hex::encode(k.write.iv), "e0a2ac30635ea99ed19939a4ad9342f1");
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4() {
        let plain = example("149.154.175.50:8888", "203.0.113.7:40000");
        let mapped = example("[::ffff:149.154.175.50]:8888", "[::ffff:203.0.113.7]:40000");
        assert_eq!(
            kdf_string(&plain, Purpose::Server),
            kdf_string(&mapped, Purpose::Server)
        );
    }

    #[test]
    fn nat_translation_helper() {
        let nat = |ip: Ipv4Addr| {
            if ip == Ipv4Addr::new(10, 0, 0, 5) {
                Ipv4Addr::new(203, 0, 113, 7)
            } else {
                ip
            }
        };
        let a: SocketAddr = "10.0.0.5:40000".parse().unwrap();
        assert_eq!(translate_ipv4(a, nat), "203.0.113.7:40000".parse().unwrap());
        let m: SocketAddr = "[::ffff:10.0.0.5]:1".parse().unwrap();
        assert_eq!(translate_ipv4(m, nat), "203.0.113.7:1".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        assert_eq!(translate_ipv4(v6, nat), v6);
    }
}
