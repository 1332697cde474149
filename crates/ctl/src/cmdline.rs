//! Reading a C `mtproto-proxy` command line for what the health gate needs: the client ports
//! (`-H`), the stats port (`-p` with `--http-stats`), the first secret (`-S` or
//! `--mtproto-secret-file`), fake-TLS domains (`-D`), `--address`, and the `proxy-multi.conf`
//! (whose middle-end addresses tell when a new process has its ME links up).
//!
//! The option syntax is C's: `-p8888` and `-p 8888`, `--port=8888` and `--port 8888`, `-v`
//! without an argument, the config file as the one positional argument. Which options take
//! a value comes from the proxy's own option table (`mtproxy::cli::find_long`/`find_short`).
//!
//! What it is not: a validator. The proxy itself rejects bad command lines; this only reads
//! the few options the tools need and ignores the rest.

use mtproxy::cli::{self, Arg};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Whether `--long` takes the next argument as its value (the proxy's own option table).
fn long_takes_value(long: &str) -> bool {
    cli::find_long(long).is_some_and(|o| o.arg == Arg::Required)
}

/// The long name of a short option and whether it takes a value ("" for an unknown letter).
fn short_option(short: char) -> (&'static str, bool) {
    cli::find_short(short).map_or(("", false), |o| (o.long, o.arg == Arg::Required))
}

/// What the tools need from a proxy command line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyArgs {
    pub client_ports: Vec<u16>,
    pub stats_port: Option<u16>,
    pub http_stats: bool,
    pub secrets: Vec<[u8; 16]>,
    pub secret_file: Option<PathBuf>,
    pub domains: Vec<String>,
    pub address: Option<Ipv4Addr>,
    pub config: Option<PathBuf>,
    pub direct: bool,
    pub reuse_port: bool,
    pub drain_timeout: Option<f64>,
}

impl ProxyArgs {
    /// Reads `args` (without the program name).
    pub fn parse(args: &[String]) -> ProxyArgs {
        let mut out = ProxyArgs::default();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            i += 1;
            let (name, value): (String, Option<String>) = if let Some(long) = a.strip_prefix("--") {
                match long.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None if long_takes_value(long) => {
                        let v = args.get(i).cloned();
                        i += 1;
                        (long.to_string(), v)
                    }
                    None => (long.to_string(), None),
                }
            } else if let Some(short) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
                let c = short.chars().next().unwrap_or('-');
                let rest = &short[c.len_utf8()..];
                let (long, takes_value) = short_option(c);
                if !takes_value {
                    (long.to_string(), None)
                } else if rest.is_empty() {
                    let v = args.get(i).cloned();
                    i += 1;
                    (long.to_string(), v)
                } else {
                    (long.to_string(), Some(rest.to_string()))
                }
            } else {
                out.config = Some(PathBuf::from(a));
                continue;
            };
            let v = value.unwrap_or_default();
            match name.as_str() {
                "http-ports" => out
                    .client_ports
                    .extend(v.split(',').filter_map(|p| p.trim().parse::<u16>().ok())),
                "port" => {
                    out.stats_port = v.split(':').next().and_then(|p| p.parse().ok());
                }
                "http-stats" => out.http_stats = true,
                "mtproto-secret" => out.secrets.extend(parse_secret(&v)),
                "mtproto-secret-file" => out.secret_file = Some(PathBuf::from(v)),
                "domain" => out.domains.push(v),
                "address" => out.address = v.parse().ok(),
                "direct" => out.direct = true,
                "reuse-port" => out.reuse_port = true,
                "drain-timeout" => out.drain_timeout = v.parse().ok(),
                _ => {}
            }
        }
        out
    }

    /// Middle-proxy mode (a config file and no `--direct`), as the proxy decides it.
    pub fn me_mode(&self) -> bool {
        self.config.is_some() && !self.direct
    }

    /// The secret a gate client uses: the first `-S`, else the first one in the secrets file.
    pub fn first_secret(&self) -> Option<[u8; 16]> {
        if let Some(s) = self.secrets.first() {
            return Some(*s);
        }
        let text = std::fs::read_to_string(self.secret_file.as_ref()?).ok()?;
        text.lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(|l| l.split(|c: char| c == ',' || c.is_whitespace()))
            .find_map(parse_secret)
    }

    /// Where a client on this host reaches the client ports: `--address` when it is a
    /// loopback address, else 127.0.0.1 (the proxy binds 0.0.0.0 or `::` then).
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        let ip = self
            .address
            .filter(|a| a.is_loopback())
            .unwrap_or(Ipv4Addr::LOCALHOST);
        self.client_ports
            .iter()
            .map(|p| SocketAddr::new(IpAddr::V4(ip), *p))
            .collect()
    }

    /// `/stats` address (127.0.0.1 only, as the proxy binds it), when `--http-stats` and `-p`.
    pub fn stats_addr(&self) -> Option<SocketAddr> {
        match (self.http_stats, self.stats_port) {
            (true, Some(p)) => Some(SocketAddr::from(([127, 0, 0, 1], p))),
            _ => None,
        }
    }

    /// Middle-end addresses named in the config file (ME mode only; empty when unreadable).
    pub fn me_addrs(&self) -> Vec<SocketAddr> {
        if !self.me_mode() {
            return Vec::new();
        }
        let Some(text) = self
            .config
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        else {
            return Vec::new();
        };
        me_addrs_of(&text)
    }
}

/// `proxy_for DC HOST:PORT;` and `proxy HOST:PORT;` entries of a `proxy-multi.conf`, deduplicated.
pub fn me_addrs_of(config: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for stmt in config
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ")
        .split(';')
    {
        let words: Vec<&str> = stmt.split_whitespace().collect();
        let addr = match words.as_slice() {
            ["proxy_for", _, a, ..] => a,
            ["proxy", a, ..] => a,
            _ => continue,
        };
        if let Ok(a) = addr.parse::<SocketAddr>() {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// 32 hex digits, optionally with a `dd` prefix (as some front-ends write them).
pub fn parse_secret(s: &str) -> Option<[u8; 16]> {
    let s = s.trim();
    let s = if s.len() == 34 && s.starts_with("dd") {
        &s[2..]
    } else {
        s
    };
    hex::decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn c_command_line() {
        let a = ProxyArgs::parse(&v(
            "-u root -c 10000 --address 127.0.0.1 -p 8888 -H 443,444 -S 0123456789abcdef0123456789abcdef --aes-pwd s --http-stats -v proxy-multi.conf",
        ));
        assert_eq!(a.client_ports, vec![443, 444]);
        assert_eq!(a.stats_port, Some(8888));
        assert!(a.http_stats);
        assert_eq!(a.secrets.len(), 1);
        assert_eq!(a.config, Some(PathBuf::from("proxy-multi.conf")));
        assert!(a.me_mode());
        assert_eq!(a.stats_addr(), Some("127.0.0.1:8888".parse().unwrap()));
        assert_eq!(a.client_addrs()[1], "127.0.0.1:444".parse().unwrap());
    }

    #[test]
    fn glued_and_equals_forms() {
        let a = ProxyArgs::parse(&v(
            "-p8888 -H443 -Dexample.com --domain=b.example --reuse-port --drain-timeout=1.5 --direct",
        ));
        assert_eq!(a.stats_port, Some(8888));
        assert_eq!(a.client_ports, vec![443]);
        assert_eq!(a.domains, vec!["example.com", "b.example"]);
        assert!(a.reuse_port && a.direct && !a.me_mode());
        assert_eq!(a.drain_timeout, Some(1.5));
    }

    #[test]
    fn config_addresses() {
        let c = "# x\nproxy_for 1 127.0.0.1:1001;\nproxy_for -1 127.0.0.1:1001;\nproxy_for 2 127.0.0.1:1002; default 2;\n";
        assert_eq!(
            me_addrs_of(c),
            vec![
                "127.0.0.1:1001".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:1002".parse().unwrap()
            ]
        );
    }
}
