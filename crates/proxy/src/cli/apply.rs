//! What each option does to [`Options`]: C's value rules per option (C's `atoi` where C
//! uses it, strict checks where C asserts or we name the bad value), the
//! `--mtproto-secret-file` reader and the `-H` port list.
//!
//! Finding the option and its value in argv is `getopt`.

use super::c_num::{atof, atoi, parse_memory_limit};
use super::getopt::{lossy, Parser};
use super::options::*;
use super::table::{flag, Id, OptDef};
use super::usage::usage_text;
use super::values::*;
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

impl Parser {
    pub(super) fn apply(
        &mut self,
        def: &'static OptDef,
        value: Option<&OsStr>,
    ) -> Result<(), CliExit> {
        self.opts.given.push(def.long);
        // For Arg::Required the value is always present.
        let raw: &OsStr = value.unwrap_or_else(|| OsStr::new(""));
        let v = lossy(raw);
        let vb = raw.as_bytes();
        match def.id {
            Id::Help => {
                return Err(CliExit {
                    code: 2,
                    stdout: usage_text(&self.argv0),
                    stderr: String::new(),
                })
            }
            Id::Verbosity => match value {
                None => self.opts.verbosity = self.opts.verbosity.saturating_add(1),
                Some(_) => self.opts.verbosity = atoi(vb).max(0) as u32,
            },
            Id::Daemonize => match value {
                None => self.opts.daemonize = !self.opts.daemonize,
                Some(_) => self.opts.daemonize = atoi(vb) != 0,
            },
            Id::Multithread => match value {
                None => self.opts.multithread = true,
                Some(_) => self.opts.multithread = atoi(vb) != 0,
            },
            Id::User => {
                if let Some(prev) = &self.opts.user {
                    return Err(Self::fatal(
                        1,
                        format!("wrong option -u{v}, username is already defined as '{prev}'."),
                    ));
                }
                self.opts.user = Some(self.utf8(def, raw)?);
            }
            Id::Log => self.opts.log_file = Some(PathBuf::from(raw)),
            Id::Nice => self.opts.nice = Some(atoi(vb)),
            Id::MsgBuffersSize => {
                self.opts.msg_buffers_size = parse_memory_limit(vb)
                    .map_err(|e| self.usage1(format!("{e} in --msg-buffers-size '{v}'")))?;
            }
            Id::Backlog => {
                let n = atoi(vb);
                self.opts.backlog = if n < 0 { i32::MAX as u32 } else { n as u32 };
            }
            Id::Connections => {
                let n = atoi(vb);
                self.opts.connections = if n <= 0 {
                    DEFAULT_CONNECTIONS
                } else {
                    n as u32
                };
            }
            Id::Port => {
                let (spec, wrapped) = parse_port_spec(vb).ok_or_else(|| {
                    self.usage1(format!(
                        "invalid -p value '{v}': expected <port> (taken modulo 65536, \
                         not 0) or <start>:<end> with 1 <= start <= end <= 65535"
                    ))
                })?;
                self.opts.stats_port = Some(spec);
                self.opts.stats_port_wrapped = wrapped;
            }
            Id::Ipv6 => self.opts.ipv6 = true,
            Id::AesPwd => self.opts.aes_pwd = Some(PathBuf::from(raw)),
            Id::DisableTcp => self.opts.disable_tcp = true,
            Id::Crc32c => self.opts.crc32c = true,
            Id::AllowSkipDh => self.opts.allow_skip_dh = true,
            Id::ForceDh => self.opts.force_dh = true,
            Id::MaxAcceptRate => self.opts.max_accept_rate = atoi(vb).max(0) as u32,
            Id::MaxDhAcceptRate => self.opts.max_dh_accept_rate = atoi(vb).max(0) as u32,
            Id::NatInfo => {
                let Some((l, g)) = v.rsplit_once(':') else {
                    return Err(self.usage1(format!(
                        "expected <local-addr>:<global-addr> in --nat-info, got '{v}'"
                    )));
                };
                let Ok(la) = l.parse::<Ipv4Addr>() else {
                    return Err(self.usage1(format!(
                        "cannot translate host '{l}' in --nat-info '{v}' (expected an IPv4 address)"
                    )));
                };
                let Ok(ga) = g.parse::<Ipv4Addr>() else {
                    return Err(self.usage1(format!(
                        "cannot translate host '{g}' in --nat-info '{v}' (expected an IPv4 address)"
                    )));
                };
                if self.opts.nat_info.len() >= MAX_NAT_INFO_RULES {
                    return Err(self.usage1(format!(
                        "too many rules in --nat-info (max {MAX_NAT_INFO_RULES}): cannot add '{v}'"
                    )));
                }
                self.opts.nat_info.push((la, ga));
            }
            Id::Address => match v.parse::<Ipv4Addr>() {
                Ok(a) if raw.to_str().is_some() => self.opts.address = Some(a),
                _ => {
                    return Err(Self::fatal(
                        4,
                        format!(
                            "Can not convert '{v}' to ip addr: not a valid IPv4 address (--address)"
                        ),
                    ))
                }
            },
            Id::CpuThreads => self.opts.cpu_threads = Some(atoi(vb).max(0) as u32),
            Id::IoThreads => self.opts.io_threads = Some(atoi(vb).max(0) as u32),
            Id::TcpCpuThreads => self.opts.tcp_cpu_threads = Some(atoi(vb).max(0) as u32),
            Id::TcpIothreads => self.opts.tcp_iothreads = Some(atoi(vb).max(0) as u32),
            Id::HttpStats => self.opts.http_stats = true,
            Id::MtprotoSecret => {
                let s = parse_hex16(vb).map_err(|e| self.usage1(e.message('S', &v)))?;
                self.add_secret(s, None)?;
            }
            Id::MtprotoSecretFile => self.load_secret_file(raw)?,
            Id::ProxyTag => {
                let s = parse_hex16(vb).map_err(|e| self.usage1(e.message('P', &v)))?;
                self.opts.proxy_tag = Some(s);
            }
            Id::Domain => {
                let d = self.utf8(def, raw)?;
                self.opts.domains.push(d);
            }
            Id::MaxSpecialConnections => {
                self.opts.max_special_connections = Some(atoi(vb).max(0) as u32)
            }
            Id::WindowClamp => self.opts.window_clamp = Some(atoi(vb).max(0) as u32),
            Id::HttpPorts => self.parse_http_ports(vb, &v)?,
            Id::Slaves => {
                let n = atoi(vb);
                if !(0..=MAX_WORKERS as i32).contains(&n) {
                    return Err(Self::fatal(
                        1,
                        format!(
                            "invalid -M value '{v}': number of workers must be in 0..{MAX_WORKERS}"
                        ),
                    ));
                }
                self.opts.workers = n as u32;
            }
            Id::PingInterval => {
                let x = atof(vb);
                self.opts.ping_interval = if x > 0.0 && x.is_finite() {
                    x
                } else {
                    DEFAULT_PING_INTERVAL
                };
            }
            Id::Direct => self.opts.direct = true,
            Id::NoFastMode => self.opts.no_fast_mode = true,
            Id::TlsRequireSni => self.opts.tls_require_sni = true,
            Id::TlsFixedRecords => self.opts.tls_fixed_records = true,
            Id::TlsSplitHello => self.opts.tls_split_hello = true,
            Id::ClientMss => {
                let n = v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (88..=65535).contains(n));
                self.opts.client_mss = Some(n.ok_or_else(|| {
                    self.usage1(format!(
                        "invalid --client-mss value '{v}': expected a segment size in bytes, 88..65535"
                    ))
                })?);
            }
            Id::ReusePort => self.opts.reuse_port = true,
            Id::DrainTimeout => {
                self.opts.drain_timeout = parse_seconds(&v)
                    .ok_or_else(|| self.usage1(bad_seconds("--drain-timeout", &v)))?;
            }
            Id::MaskHost => {
                let o = parse_dc_override(&format!("1:{v}")).map_err(|e| {
                    self.usage1(format!(
                        "invalid --mask-host value '{v}': {e} (expected <host>:<port>, e.g. 127.0.0.1:8443 or [::1]:443)"
                    ))
                })?;
                self.opts.mask_host = Some((o.host, o.port));
            }
            Id::DcOverride => {
                let o = parse_dc_override(&v).map_err(|e| {
                    self.usage1(format!(
                        "invalid --dc-override value '{v}': {e} (expected <dc>:<host>:<port>, \
                         e.g. 2:149.154.167.51:443 or -2:[2001:db8::1]:443)"
                    ))
                })?;
                self.opts.dc_overrides.push(o);
            }
            Id::HandshakeTimeout => {
                self.opts.handshake_timeout = parse_seconds(&v)
                    .ok_or_else(|| self.usage1(bad_seconds("--handshake-timeout", &v)))?;
            }
            Id::IdleTimeout => {
                self.opts.idle_timeout = parse_seconds(&v)
                    .ok_or_else(|| self.usage1(bad_seconds("--idle-timeout", &v)))?;
            }
            Id::PublicHost => {
                let h = self.utf8(def, raw)?;
                if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(self.usage1(format!(
                        "invalid --public-host value '{h}': expected a non-empty host name or address"
                    )));
                }
                self.opts.public_host = Some(h);
            }
        }
        Ok(())
    }

    pub(super) fn utf8(&self, def: &OptDef, raw: &OsStr) -> Result<String, CliExit> {
        raw.to_str().map(str::to_owned).ok_or_else(|| {
            self.usage1(format!(
                "invalid {} value '{}': not valid UTF-8",
                flag(def),
                raw.to_string_lossy()
            ))
        })
    }

    pub(super) fn add_secret(
        &mut self,
        s: [u8; 16],
        origin: Option<(&str, usize)>,
    ) -> Result<(), CliExit> {
        if self.opts.secrets.len() >= MAX_SECRETS {
            let n = self.opts.secrets.len() + 1;
            let mut msg = format!("too many mtproto secrets: {n} (max {MAX_SECRETS})");
            if let Some((file, line)) = origin {
                msg.push_str(&format!(" while reading '{file}' at line {line}"));
            }
            return Err(self.usage1(msg));
        }
        self.opts.secrets.push(s);
        Ok(())
    }

    /// `--mtproto-secret-file` (client.md §7.1).
    pub(super) fn load_secret_file(&mut self, path: &OsStr) -> Result<(), CliExit> {
        let name = path.to_string_lossy().into_owned();
        let data = std::fs::read(path).map_err(|e| {
            self.usage1(format!(
                "cannot open mtproto secret file '{name}' (--mtproto-secret-file): {e}"
            ))
        })?;
        let mut found = 0usize;
        for (idx, line) in data.split(|&b| b == b'\n').enumerate() {
            let lineno = idx + 1;
            let line = match line.iter().position(|&b| b == b'#') {
                Some(p) => &line[..p],
                None => line,
            };
            for tok in line
                .split(|&b| matches!(b, b',' | b' ' | b'\t' | b'\r' | b'\n'))
                .filter(|t| !t.is_empty())
            {
                let secret = parse_hex16(tok).map_err(|e| {
                    let t = String::from_utf8_lossy(tok);
                    let why = match e {
                        HexErr::Len(_) => format!(
                            "token '{t}' has {} characters, expected exactly 32 hex digits",
                            t.chars().count()
                        ),
                        HexErr::Digit(ch) => {
                            format!("token '{t}': '{ch}' is not a hex digit (expected exactly 32 hex digits)")
                        }
                    };
                    self.usage1(format!(
                        "failed to parse mtproto secret from '{name}' at line {lineno}: {why}"
                    ))
                })?;
                self.add_secret(secret, Some((&name, lineno)))?;
                found += 1;
            }
        }
        if found == 0 {
            return Err(self.usage1(format!(
                "mtproto secret file '{name}' does not contain secrets"
            )));
        }
        Ok(())
    }

    /// `-H p[,p...]`, following mtproto-proxy.c f_parse_option case 'H'.
    pub(super) fn parse_http_ports(&mut self, b: &[u8], v: &str) -> Result<(), CliExit> {
        let syntax = |this: &Self, detail: String| {
            this.usage1(format!(
                "invalid -H value '{v}': {detail} (expected <port>{{,<port>}} with ports 1..65535, no leading zeros)"
            ))
        };
        if b.is_empty() {
            return Err(syntax(self, "empty port list".into()));
        }
        let mut pos = 0;
        while pos < b.len()
            && (b'1'..=b'9').contains(&b[pos])
            && self.opts.ports.len() < MAX_HTTP_PORTS
        {
            let start = pos;
            let mut n: u64 = 0;
            while pos < b.len() && b[pos].is_ascii_digit() {
                n = (n * 10 + u64::from(b[pos] - b'0')).min(u64::from(u32::MAX));
                pos += 1;
            }
            if n > 65535 {
                return Err(Self::fatal(
                    1,
                    format!(
                        "port {} out of range 1..65535 in -H '{v}'",
                        String::from_utf8_lossy(&b[start..pos])
                    ),
                ));
            }
            self.opts.ports.push(n as u16);
            if pos < b.len() && b[pos] == b',' {
                pos += 1;
            } else {
                break;
            }
        }
        if pos < b.len() {
            let ch = b[pos];
            if self.opts.ports.len() >= MAX_HTTP_PORTS && (b'1'..=b'9').contains(&ch) {
                return Err(self.usage1(format!(
                    "too many ports in -H '{v}': at most {MAX_HTTP_PORTS} client ports in total"
                )));
            }
            let detail = match ch {
                b'0' => format!("port at offset {pos} starts with '0'"),
                b',' => format!("empty port at offset {pos}"),
                _ => format!(
                    "unexpected '{}' at offset {pos}",
                    String::from_utf8_lossy(&b[pos..])
                        .chars()
                        .next()
                        .unwrap_or('?')
                ),
            };
            return Err(syntax(self, detail));
        }
        Ok(())
    }
}
