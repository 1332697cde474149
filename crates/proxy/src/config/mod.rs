//! Loading the backend config (`proxy-multi.conf`) and the proxy-secret file.
//!
//! [`load_file`] is the one entry point for both start-up and SIGHUP reload: it reads the
//! file, checks its size, resolves every host and validates every line before it returns,
//! so a caller either gets a complete [`LoadedConfig`] to swap in or a [`LoadError`] and
//! keeps what it had. Nothing is half-applied. The grammar itself is in [`multi`] (sans
//! I/O); the `--aes-pwd` file is in [`aes_pwd`].
//!
//! C reference: mtproto/mtproto-config.c do_reload_config, common/parse-config.c
//! load_config, common/resolver.c (backend-ops §2.5).

pub mod aes_pwd;
pub mod multi;

pub use aes_pwd::{ProxySecret, SecretFile};
pub use multi::{Cluster, ConfigError, ProxyConfig, TargetSpec};

use md5::{Digest, Md5};
use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// MAX_CONFIG_SIZE: larger config files are refused (16 MiB).
pub const MAX_CONFIG_SIZE: usize = 16 << 20;

/// A config that passed every check, with the stats C keeps about it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub config: ProxyConfig,
    /// Bytes read (`config_size` in stats).
    pub size: usize,
    /// MD5 of the bytes read, lowercase hex (`config_md5`).
    pub md5_hex: String,
    /// When this load finished (`config_loaded_at`).
    pub loaded_at: SystemTime,
}

impl LoadedConfig {
    /// C's log line once a config is active.
    pub fn success_message(&self) -> String {
        format!(
            "configuration file {} re-read successfully ({} bytes parsed), new configuration active",
            self.path.display(),
            self.size
        )
    }
}

/// Why a config was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// C's exit status at start-up (`exit(-res)`): 1 for open failure or a syntax error,
    /// 2 for a read error or a file over 16 MiB.
    pub code: u8,
    /// The stderr lines C prints, in order, without newlines; the last one is
    /// `config check failed! (code -N)`. C prints the syntax lines and the last line with
    /// plain fprintf and the others through kprintf (with its timestamp prefix).
    pub lines: Vec<String>,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lines.join("; "))
    }
}

impl std::error::Error for LoadError {}

/// Reads, resolves and validates the config file at `path` (C's do_reload_config first
/// pass), with the system resolver and the /etc/hosts rules of C's kdb_gethostbyname.
pub fn load_file(path: &Path) -> Result<LoadedConfig, LoadError> {
    let name = path.display().to_string();
    // do_reload_config adds its "NOT applied" line when parse_config (read or syntax) fails,
    // not when the open fails; the caller then prints the code.
    let fail = |res: i32, parse_ran: bool, mut lines: Vec<String>| {
        if parse_ran {
            lines.push(format!(
                "error while re-reading config file {name}, new configuration NOT applied"
            ));
        }
        lines.push(format!("config check failed! (code {res})"));
        LoadError {
            code: (-res) as u8,
            lines,
        }
    };
    let file = std::fs::File::open(path).map_err(|e| {
        fail(
            -1,
            false,
            vec![format!(
                "cannot re-read config file {name}: {}",
                strerror(&e)
            )],
        )
    })?;
    let hosts = EtcHosts::load();
    let mut buf = Vec::new();
    if let Err(e) = file.take(MAX_CONFIG_SIZE as u64 + 1).read_to_end(&mut buf) {
        return Err(fail(
            -2,
            true,
            vec![format!(
                "error reading configuration file {name}: {}",
                strerror(&e)
            )],
        ));
    }
    if buf.len() > MAX_CONFIG_SIZE {
        return Err(fail(
            -2,
            true,
            vec![format!(
                "configuration file {name} too long (max {MAX_CONFIG_SIZE} bytes)"
            )],
        ));
    }
    let resolver = |host: &str, bracketed: bool| system_resolve(host, bracketed, hosts.as_ref());
    let config = multi::parse(&buf, &resolver).map_err(|e| {
        fail(
            -1,
            true,
            e.render(&name).split('\n').map(str::to_owned).collect(),
        )
    })?;
    Ok(LoadedConfig {
        path: path.to_path_buf(),
        config,
        size: buf.len(),
        md5_hex: hex::encode(Md5::digest(&buf)),
        loaded_at: SystemTime::now(),
    })
}

/// C's `%m`: the libc message without Rust's ` (os error N)` suffix.
pub(crate) fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match e.raw_os_error() {
        Some(n) => s
            .strip_suffix(&format!(" (os error {n})"))
            .map_or_else(|| s.clone(), str::to_owned),
        None => s,
    }
}

/// The IPv4 name table C builds from /etc/hosts (common/resolver.c: parse_hosts).
struct EtcHosts(HashMap<String, Ipv4Addr>);

impl EtcHosts {
    /// None when the file cannot be used; C then resolves every name with the system.
    fn load() -> Option<EtcHosts> {
        let meta = std::fs::metadata("/etc/hosts").ok()?;
        if !meta.is_file() || meta.len() >= 1 << 24 {
            return None;
        }
        Some(Self::parse(&std::fs::read("/etc/hosts").ok()?))
    }

    /// Lines `a.b.c.d<space|tab>name name ...`; the first address given for a name wins;
    /// 0.0.0.0 and IPv6 lines are skipped.
    fn parse(data: &[u8]) -> EtcHosts {
        let mut map = HashMap::new();
        for line in data.split(|&b| b == b'\n') {
            let line = match line.iter().position(|&b| b != b' ' && b != b'\t') {
                Some(i) => &line[i..],
                None => continue,
            };
            let Some(ip_end) = line.iter().position(|&b| b == b' ' || b == b'\t') else {
                continue;
            };
            let Some(ip) = parse_c_quad(&line[..ip_end]) else {
                continue;
            };
            if ip.is_unspecified() {
                continue;
            }
            for word in line[ip_end..].split(|&b| b == b' ' || b == b'\t') {
                if !word.is_empty() && word.len() < 128 {
                    map.entry(String::from_utf8_lossy(word).into_owned())
                        .or_insert(ip);
                }
            }
        }
        EtcHosts(map)
    }
}

/// Four decimal numbers 0..=255 separated by dots, as resolver.c's readbyte loop takes them.
fn parse_c_quad(s: &[u8]) -> Option<Ipv4Addr> {
    let mut parts = s.split(|&b| b == b'.');
    let mut octets = [0u8; 4];
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 10 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *o = std::str::from_utf8(p)
            .ok()?
            .parse::<u32>()
            .ok()?
            .try_into()
            .ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// kdb_gethostbyname for names that are not literals.
fn system_resolve(name: &str, bracketed: bool, hosts: Option<&EtcHosts>) -> Option<IpAddr> {
    if bracketed {
        // gethostbyname2(name, AF_INET6): IPv6 answers only.
        return (name, 0)
            .to_socket_addrs()
            .ok()?
            .map(|a| a.ip())
            .find(IpAddr::is_ipv6);
    }
    if let Some(h) = hosts {
        if let Some(ip) = h.0.get(name) {
            return Some(IpAddr::V4(*ip));
        }
        if !name.contains('.') && !name.contains(':') {
            return None;
        }
    }
    // gethostbyname, then the AF_INET6 lookup: the first IPv4, else the first IPv6.
    let addrs: Vec<IpAddr> = (name, 0).to_socket_addrs().ok()?.map(|a| a.ip()).collect();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
}

/// A fresh, empty directory for one test, removed when dropped.
#[cfg(test)]
pub(crate) struct TestDir(PathBuf);

#[cfg(test)]
impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> TestDir {
    let d = std::env::temp_dir().join(format!("mtproxy-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TestDir(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn loads_and_fingerprints() {
        let dir = test_dir("load_ok");
        let text = b"# force_probability 10 10\ndefault 2;\nproxy_for 2 127.0.0.1:8888;\nproxy_for -2 localhost:8888;\n";
        let p = write(&dir, "backend.conf", text);
        let l = load_file(&p).unwrap();
        assert_eq!(l.size, text.len());
        assert_eq!(l.md5_hex, hex::encode(Md5::digest(text)));
        assert_eq!(l.config.auth_clusters(), 2);
        assert_eq!(
            l.config.cluster(-2).unwrap().targets[0].addr,
            "127.0.0.1:8888".parse().unwrap()
        );
        assert_eq!(
            l.success_message(),
            format!(
                "configuration file {} re-read successfully ({} bytes parsed), new configuration active",
                p.display(),
                text.len()
            )
        );
        assert!(l.loaded_at <= SystemTime::now());
    }

    #[test]
    fn open_failure_is_code_1() {
        let dir = test_dir("load_missing");
        let p = dir.join("nope.conf");
        let e = load_file(&p).unwrap_err();
        assert_eq!(e.code, 1);
        assert_eq!(
            e.lines,
            [
                format!(
                    "cannot re-read config file {}: No such file or directory",
                    p.display()
                ),
                "config check failed! (code -1)".to_owned(),
            ]
        );
    }

    #[test]
    fn syntax_error_is_code_1() {
        let dir = test_dir("load_syntax");
        let p = write(&dir, "m.conf", b"default 2;\nproxy_for 2 1.2.3.4:8888\n");
        let e = load_file(&p).unwrap_err();
        let f = p.display();
        assert_eq!(e.code, 1);
        assert_eq!(
            e.lines,
            [
                format!("{f}:2: fatal: ; expected near "),
                format!("error while re-reading config file {f}, new configuration NOT applied"),
                "config check failed! (code -1)".to_owned(),
            ]
        );
    }

    #[test]
    fn unresolvable_names() {
        let dir = test_dir("load_dns");
        // No dot, not in /etc/hosts: fails without asking DNS, as in C.
        let p = write(&dir, "m.conf", b"proxy nosuchhostname-mtproxy-test:80;\n");
        let e = load_file(&p).unwrap_err();
        assert_eq!(e.code, 1);
        assert_eq!(
            e.lines[..2],
            [
                "fatal: cannot resolve 'nosuchhostname-mtproxy-test'".to_owned(),
                " near nosuchhostname-mtpro ...".to_owned(),
            ]
        );
        assert_eq!(e.lines.len(), 4);
    }

    #[test]
    fn too_big_is_code_2() {
        let dir = test_dir("load_big");
        let mut text = b"proxy 1.2.3.4:80;\n".to_vec();
        text.resize(MAX_CONFIG_SIZE, b' ');
        let p = write(&dir, "exact.conf", &text);
        assert_eq!(load_file(&p).unwrap().size, MAX_CONFIG_SIZE);
        text.push(b'\n');
        let p = write(&dir, "big.conf", &text);
        let e = load_file(&p).unwrap_err();
        let f = p.display();
        assert_eq!(e.code, 2);
        assert_eq!(
            e.lines,
            [
                format!("configuration file {f} too long (max 16777216 bytes)"),
                format!("error while re-reading config file {f}, new configuration NOT applied"),
                "config check failed! (code -2)".to_owned(),
            ]
        );
    }

    #[test]
    fn read_error_is_code_2() {
        let dir = test_dir("load_dir");
        let e = load_file(&dir).unwrap_err();
        assert_eq!(e.code, 2);
        assert_eq!(
            e.lines[0],
            format!(
                "error reading configuration file {}: Is a directory",
                dir.display()
            )
        );
        assert_eq!(e.lines[2], "config check failed! (code -2)");
    }

    #[test]
    fn etc_hosts_rules() {
        let h = EtcHosts::parse(
            b"127.0.0.1 localhost\n# 10.0.0.9 commented\n::1 ip6-localhost\n\
              \t10.0.0.1\tme-one me-alias\n10.0.0.2 me-one\n0.0.0.0 blocked\n300.1.1.1 bad\n",
        );
        let get = |n: &str| system_resolve(n, false, Some(&h));
        assert_eq!(get("localhost"), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(get("me-one"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(get("me-alias"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(get("ip6-localhost"), None);
        assert_eq!(get("blocked"), None);
        assert_eq!(get("bad"), None);
        assert_eq!(get("commented"), None);
        // Literals still resolve through the system path (no network needed).
        assert_eq!(get("10.9.8.7"), Some("10.9.8.7".parse().unwrap()));
        assert_eq!(
            system_resolve("::1", true, Some(&h)),
            Some("::1".parse().unwrap())
        );
    }

    #[test]
    fn strerror_drops_rust_suffix() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(strerror(&e), "No such file or directory");
    }
}
