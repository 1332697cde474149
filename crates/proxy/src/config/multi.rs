//! The backend config file (`proxy-multi.conf`): C's tokenizer and grammar, sans I/O.
//!
//! [`parse`] turns the file's bytes into a [`ProxyConfig`] or the first [`ConfigError`],
//! with C's exact error text, line number and `near` excerpt (backend-ops §2.2–§2.4).
//! It does no I/O: the caller supplies name resolution. Reading the file, the size cap
//! and the stderr lines around an error live in [`super::load_file`].
//!
//! The quirks kept from C (common/parse-config.c, mtproto/mtproto-config.c):
//! - keywords are matched as prefixes (`proxyfoo:80;` is `proxy foo:80;`);
//! - whitespace, newlines and `#` comments are skipped only *between* tokens that the
//!   C reads with its lexer (statement start, the `:` and the `;`); inside a statement only
//!   space and tab are skipped, so `host\n:80` is fine but `proxy\nhost:80` is not;
//! - integers are read digit by digit with 64-bit wrap-around and then stored the way C
//!   stores them (port, min and max connections truncated to a C `int`);
//! - the text ends at the first NUL byte, as C's `while (cfg_skipspc ())` does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// MAX_CFG_TARGETS: proxy lines allowed in one file.
pub const MAX_TARGETS: usize = 4096;
/// MAX_CFG_CLUSTERS: distinct cluster ids allowed in one file.
pub const MAX_CLUSTERS: usize = 1024;
/// Pool minimum in force before any `min_connections` line.
pub const DEFAULT_MIN_CONNECTIONS: u32 = 4;
/// Pool maximum in force before any `max_connections` line.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;
/// `timeout` when the file has none (C: `MC->timeout = 0.3`). Never used by C.
pub const DEFAULT_TIMEOUT_MS: u32 = 300;

/// One parsed `proxy-multi.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The id named by the last `default` line, 0 if none. Whether a cluster with this id
    /// exists is decided by [`ProxyConfig::lookup`].
    pub default_dc: i32,
    /// Clusters in file order (the order of their first line).
    pub clusters: Vec<Cluster>,
    /// The `timeout` value in milliseconds (300 if absent). C parses and never uses it.
    pub timeout_ms: u32,
    /// Proxy lines in the file, one per line even when addresses repeat.
    pub targets_total: usize,
}

/// The targets of one DC id, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub id: i16,
    pub targets: Vec<TargetSpec>,
}

/// One `proxy`/`proxy_for` line: the ME address and the pool bounds in force at that line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSpec {
    pub addr: SocketAddr,
    pub min_connections: u32,
    pub max_connections: u32,
}

impl ProxyConfig {
    /// The cluster whose id is exactly `dc`.
    pub fn cluster(&self, dc: i16) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.id == dc)
    }

    /// The default cluster: the one named by `default` (0 without a `default` line), if
    /// that id has proxies. Otherwise none, and unknown DCs are dropped.
    pub fn default_cluster(&self) -> Option<&Cluster> {
        i16::try_from(self.default_dc)
            .ok()
            .and_then(|id| self.cluster(id))
    }

    /// C's mf_cluster_lookup with force: the exact id, else the default cluster.
    pub fn lookup(&self, dc: i16) -> Option<&Cluster> {
        self.cluster(dc).or_else(|| self.default_cluster())
    }

    /// Distinct ME addresses (address and port) in order of first appearance, each with
    /// the min/max of the *last* line naming it (C's create_target updates them in place).
    pub fn distinct_targets(&self) -> Vec<(SocketAddr, u32, u32)> {
        let mut out: Vec<(SocketAddr, u32, u32)> = Vec::new();
        for t in self.clusters.iter().flat_map(|c| &c.targets) {
            match out.iter_mut().find(|e| e.0 == t.addr) {
                Some(e) => {
                    e.1 = t.min_connections;
                    e.2 = t.max_connections;
                }
                None => out.push((t.addr, t.min_connections, t.max_connections)),
            }
        }
        out
    }

    /// Number of clusters (distinct DC ids); `config_auth_clusters` in stats.
    pub fn auth_clusters(&self) -> usize {
        self.clusters.len()
    }
}

/// The first error in a config file, as C's `syntax()` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Newlines consumed before the error (0-based line number, as C prints it).
    pub line: usize,
    /// C's message text, e.g. `invalid timeout` or `cannot resolve 'foo'`.
    pub message: String,
    /// Exactly what C prints after `near `: at most 20 bytes up to the end of the line,
    /// followed by ` ...` when 20 bytes were taken.
    pub near: String,
    /// C's `cannot resolve '%s'\n` format carries its own newline, so `near` starts a
    /// second line.
    newline_before_near: bool,
}

impl ConfigError {
    /// C's stderr text: `<file>:<line>: fatal: <message> near <near>`, the prefix omitted
    /// while the line is 0. For `cannot resolve` this is two lines (C's format string has
    /// a `\n` before ` near`); there is no trailing newline.
    pub fn render(&self, file: &str) -> String {
        let prefix = if self.line != 0 {
            format!("{file}:{}: ", self.line)
        } else {
            String::new()
        };
        let sep = if self.newline_before_near { "\n" } else { "" };
        format!("{prefix}fatal: {}{sep} near {}", self.message, self.near)
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {} near {}", self.line, self.message, self.near)
    }
}

impl std::error::Error for ConfigError {}

/// Parses a whole `proxy-multi.conf`.
///
/// `resolver(name, bracketed)` is asked only for names that are not literals:
/// - unbracketed names that are not a dotted-quad IPv4 literal, with `bracketed = false`
///   (C: /etc/hosts, then gethostbyname, then the AF_INET6 lookup);
/// - the inside of `[...]` when it is not an IPv6 literal, with `bracketed = true`; only an
///   IPv6 answer is accepted (C: gethostbyname2(name, AF_INET6)).
pub fn parse(
    text: &[u8],
    resolver: &dyn Fn(&str, bool) -> Option<IpAddr>,
) -> Result<ProxyConfig, ConfigError> {
    Parser {
        lx: Lexer::new(text),
        resolver,
        min_connections: DEFAULT_MIN_CONNECTIONS as i32,
        max_connections: DEFAULT_MAX_CONNECTIONS as i32,
        clusters: Vec::new(),
        targets_total: 0,
    }
    .run()
}

/// Tokens of cfg_getlex_ext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Punct(u8),
    MinConnections,
    MaxConnections,
    ProxyFor,
    Proxy,
    Timeout,
    Default,
    Eof,
    Unknown,
}

/// C's `cfg_cur` over a NUL-terminated buffer, with `cfg_lno`.
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    lno: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a [u8]) -> Self {
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        Lexer {
            s: &text[..end],
            pos: 0,
            lno: 0,
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.s.get(i).copied().unwrap_or(0)
    }

    fn cur(&self) -> u8 {
        self.at(self.pos)
    }

    /// cfg_skipspc: space, tab, CR, LF and `#` comments; counts newlines.
    fn skipspc(&mut self) -> u8 {
        loop {
            match self.cur() {
                b'#' => {
                    while self.cur() != 0 && self.cur() != b'\n' {
                        self.pos += 1;
                    }
                }
                b'\n' => {
                    self.lno += 1;
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' => self.pos += 1,
                c => return c,
            }
        }
    }

    /// cfg_skspc: space and tab only.
    fn skspc(&mut self) -> u8 {
        while matches!(self.cur(), b' ' | b'\t') {
            self.pos += 1;
        }
        self.cur()
    }

    /// cfg_getlex_ext: punctuation is consumed, keywords are prefix-matched and consumed,
    /// anything else is left in place.
    fn getlex(&mut self) -> Lex {
        const KEYWORDS: [(&[u8], Lex); 6] = [
            (b"min_connections", Lex::MinConnections),
            (b"max_connections", Lex::MaxConnections),
            (b"proxy_for", Lex::ProxyFor),
            (b"proxy", Lex::Proxy),
            (b"timeout", Lex::Timeout),
            (b"default", Lex::Default),
        ];
        match self.skipspc() {
            0 => Lex::Eof,
            c @ (b';' | b':' | b'{' | b'}') => {
                self.pos += 1;
                Lex::Punct(c)
            }
            _ => {
                let rest = &self.s[self.pos..];
                for (word, lex) in KEYWORDS {
                    if rest.starts_with(word) {
                        self.pos += word.len();
                        return lex;
                    }
                }
                Lex::Unknown
            }
        }
    }

    /// cfg_getint: unsigned digits after space/tab; none reads as 0.
    fn getint(&mut self) -> i64 {
        self.skspc();
        let mut x: i64 = 0;
        while self.cur().is_ascii_digit() {
            x = x
                .wrapping_mul(10)
                .wrapping_add(i64::from(self.cur() - b'0'));
            self.pos += 1;
        }
        x
    }

    /// cfg_getint_signed_zero: optional `-` then digits. Without digits nothing is consumed
    /// (after the space/tab skip) and the value is C's `-1LL << 63`.
    fn getint_signed_zero(&mut self) -> i64 {
        self.skspc();
        let start = self.pos;
        let mut p = start;
        let neg = self.at(p) == b'-';
        if neg {
            p += 1;
        }
        let digits_start = p;
        let mut x: i64 = 0;
        while self.at(p).is_ascii_digit() {
            let d = i64::from(self.at(p) - b'0');
            x = x.wrapping_mul(10);
            x = if neg {
                x.wrapping_sub(d)
            } else {
                x.wrapping_add(d)
            };
            p += 1;
        }
        if p == digits_start {
            return i64::MIN;
        }
        self.pos = p;
        x
    }

    /// cfg_getword: after space/tab, a run of `[A-Za-z0-9._-]`, or `[` then
    /// `[A-Za-z0-9._:-]*` and an optional `]`. Returns its length; does not consume it.
    fn getword(&mut self) -> usize {
        self.skspc();
        let word = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_');
        let mut p = self.pos;
        if self.at(p) != b'[' {
            while word(self.at(p)) {
                p += 1;
            }
        } else {
            p += 1;
            while word(self.at(p)) || self.at(p) == b':' {
                p += 1;
            }
            if self.at(p) == b']' {
                p += 1;
            }
        }
        p - self.pos
    }

    /// What C's syntax() prints after `near `, reading from `pos` but not past `end`.
    fn near(&self, end: usize) -> String {
        let end = end.min(self.s.len());
        let start = self.pos.min(end);
        let mut len = 0;
        while start + len < end && !matches!(self.s[start + len], b'\r' | b'\n') && len < 20 {
            len += 1;
        }
        let mut near = String::from_utf8_lossy(&self.s[start..start + len]).into_owned();
        if len >= 20 {
            near.push_str(" ...");
        }
        near
    }

    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            line: self.lno,
            message: message.into(),
            near: self.near(self.s.len()),
            newline_before_near: false,
        }
    }
}

struct Parser<'a, 'r> {
    lx: Lexer<'a>,
    resolver: &'r dyn Fn(&str, bool) -> Option<IpAddr>,
    min_connections: i32,
    max_connections: i32,
    clusters: Vec<Cluster>,
    targets_total: usize,
}

impl Parser<'_, '_> {
    /// parse_config's statement loop.
    fn run(mut self) -> Result<ProxyConfig, ConfigError> {
        let mut timeout_ms = DEFAULT_TIMEOUT_MS;
        let mut default_dc: i32 = 0;
        let mut have_proxy = false;
        while self.lx.skipspc() != 0 {
            let t = self.lx.getlex();
            match t {
                Lex::Timeout => {
                    let v = self.lx.getint();
                    if !(10..=30000).contains(&v) {
                        return Err(self.lx.error("invalid timeout"));
                    }
                    timeout_ms = v as u32;
                }
                Lex::Default | Lex::ProxyFor => {
                    let id = self.lx.getint_signed_zero();
                    if !(-0x8000..0x8000).contains(&id) {
                        return Err(self
                            .lx
                            .error("invalid target id (integer -32768..32767 expected)"));
                    }
                    if t == Lex::Default {
                        default_dc = id as i32;
                    } else {
                        if !matches!(self.lx.cur(), b' ' | b'\t') {
                            return Err(self.lx.error("space expected after target id"));
                        }
                        self.lx.skspc();
                        have_proxy = true;
                        self.proxy_line(id as i16)?;
                    }
                }
                Lex::Proxy => {
                    have_proxy = true;
                    self.proxy_line(0)?;
                }
                Lex::MaxConnections => {
                    let v = self.lx.getint() as i32;
                    if v < self.min_connections || v > 1000 {
                        return Err(self.lx.error("invalid max connections"));
                    }
                    self.max_connections = v;
                }
                Lex::MinConnections => {
                    let v = self.lx.getint() as i32;
                    if v < 1 || v > self.max_connections {
                        return Err(self.lx.error("invalid min connections"));
                    }
                    self.min_connections = v;
                }
                Lex::Eof => break,
                Lex::Punct(_) | Lex::Unknown => {
                    return Err(self.lx.error("'proxy <ip>:<port>;' expected"));
                }
            }
            if self.lx.getlex() != Lex::Punct(b';') {
                return Err(self.lx.error("; expected"));
            }
        }
        if !have_proxy {
            return Err(self
                .lx
                .error("expected to find a mtproto-proxy configuration with `proxy' directives"));
        }
        if self.clusters.is_empty() {
            // Unreachable, as in C: every proxy line creates or extends a cluster.
            return Err(self
                .lx
                .error("no MTProto next proxy servers defined to forward queries to"));
        }
        Ok(ProxyConfig {
            default_dc,
            clusters: self.clusters,
            timeout_ms,
            targets_total: self.targets_total,
        })
    }

    /// The shared tail of `proxy` and `proxy_for D`: cluster and target limits, the host,
    /// `:`, the port, then the cluster contiguity rule.
    fn proxy_line(&mut self, dc: i16) -> Result<(), ConfigError> {
        if self.clusters.len() >= MAX_CLUSTERS {
            return Err(self.lx.error("too many auth clusters"));
        }
        if self.targets_total >= MAX_TARGETS {
            return Err(self
                .lx
                .error(format!("too many targets ({})", self.targets_total)));
        }
        let ip = self.host()?;
        if self.lx.getlex() != Lex::Punct(b':') {
            return Err(self.lx.error(": expected"));
        }
        // C stores the 64-bit reading in an int.
        let port = self.lx.getint() as i32;
        if port == 0 {
            return Err(self.lx.error("port number expected"));
        }
        if port <= 0 || port >= 0x10000 {
            return Err(self.lx.error(format!("port number {port} out of range")));
        }
        self.targets_total += 1;
        let target = TargetSpec {
            addr: SocketAddr::new(ip, port as u16),
            min_connections: self.min_connections as u32,
            max_connections: self.max_connections as u32,
        };
        let last = self.clusters.len().checked_sub(1);
        match self.clusters.iter().position(|c| c.id == dc) {
            None => self.clusters.push(Cluster {
                id: dc,
                targets: vec![target],
            }),
            Some(i) if Some(i) == last => self.clusters[i].targets.push(target),
            Some(_) => {
                return Err(self.lx.error(format!("proxies for dc {dc} intermixed")));
            }
        }
        Ok(())
    }

    /// cfg_gethost: reads the host word and resolves it; leaves the cursor after it.
    fn host(&mut self) -> Result<IpAddr, ConfigError> {
        let len = self.lx.getword();
        if len == 0 || len > 63 {
            return Err(self.lx.error("hostname expected"));
        }
        let start = self.lx.pos;
        let word = String::from_utf8_lossy(&self.lx.s[start..start + len]).into_owned();
        match resolve(&word, self.resolver) {
            Some(ip) => {
                self.lx.pos += len;
                Ok(ip)
            }
            None => Err(ConfigError {
                line: self.lx.lno,
                message: format!("cannot resolve '{word}'"),
                // C cuts the buffer after the word while it prints the error.
                near: self.lx.near(start + len),
                newline_before_near: true,
            }),
        }
    }
}

/// kdb_gethostbyname, with literals handled here and names handed to `resolver`.
fn resolve(word: &str, resolver: &dyn Fn(&str, bool) -> Option<IpAddr>) -> Option<IpAddr> {
    if let Some(inner) = word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
        if inner.is_empty() {
            return None;
        }
        if let Ok(v6) = inner.parse::<Ipv6Addr>() {
            return Some(IpAddr::V6(v6));
        }
        // gethostbyname2(AF_INET6) refuses IPv4 literals.
        if inner.parse::<Ipv4Addr>().is_ok() {
            return None;
        }
        return match resolver(inner, true) {
            Some(ip @ IpAddr::V6(_)) => Some(ip),
            _ => None,
        };
    }
    if word.starts_with('[') {
        // `[` without its `]`: no resolver accepts a name with a bracket.
        return None;
    }
    if let Ok(v4) = word.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    resolver(word, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Resolves nothing; panics if asked, so literal paths are proven not to call it.
    fn no_dns(name: &str, bracketed: bool) -> Option<IpAddr> {
        panic!("resolver called for {name:?} (bracketed: {bracketed})")
    }

    fn fake_dns(name: &str, bracketed: bool) -> Option<IpAddr> {
        match (name, bracketed) {
            ("localhost", false) => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ("me.example", false) => Some("10.1.2.3".parse().unwrap()),
            ("v6only.example", false) => Some("2001:db8::7".parse().unwrap()),
            ("v6only.example", true) => Some("2001:db8::7".parse().unwrap()),
            ("me.example", true) => Some("10.1.2.3".parse().unwrap()), // wrong family
            _ => None,
        }
    }

    fn ok(text: &str) -> ProxyConfig {
        parse(text.as_bytes(), &fake_dns).unwrap_or_else(|e| panic!("{}", e.render("f")))
    }

    fn err(text: &str) -> ConfigError {
        match parse(text.as_bytes(), &fake_dns) {
            Ok(c) => panic!("parsed: {c:?}"),
            Err(e) => e,
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The shape of Telegram's getProxyConfig answer.
    fn telegram_file() -> String {
        let mut s = String::from("# force_probability 10 10\ndefault 2;\n");
        let mut n = 0;
        let mut line = |dc: i32, s: &mut String| {
            n += 1;
            s.push_str(&format!("proxy_for {dc} 127.0.0.{n}:8888;\n"));
        };
        for dc in [1, -1, 2, -2, 3, -3] {
            line(dc, &mut s);
        }
        for _ in 0..10 {
            line(4, &mut s);
        }
        for dc in [-4, -4, 5, 5, -5, -5] {
            line(dc, &mut s);
        }
        s
    }

    #[test]
    fn typical_telegram_file() {
        let text = telegram_file();
        let c = parse(text.as_bytes(), &no_dns).unwrap();
        assert_eq!(c.default_dc, 2);
        assert_eq!(c.timeout_ms, 300);
        assert_eq!(c.targets_total, 22);
        assert_eq!(c.auth_clusters(), 10);
        let ids: Vec<i16> = c.clusters.iter().map(|c| c.id).collect();
        assert_eq!(ids, [1, -1, 2, -2, 3, -3, 4, -4, 5, -5]);
        let dc4 = c.cluster(4).unwrap();
        assert_eq!(dc4.targets.len(), 10);
        assert_eq!(dc4.targets[0].addr, sa("127.0.0.7:8888"));
        assert_eq!(dc4.targets[9].addr, sa("127.0.0.16:8888"));
        assert!(dc4
            .targets
            .iter()
            .all(|t| t.min_connections == 4 && t.max_connections == 8));
        assert_eq!(c.cluster(-5).unwrap().targets.len(), 2);
        assert_eq!(c.cluster(-1).unwrap().targets[0].addr, sa("127.0.0.2:8888"));
        // Test-mode ids fall to the default cluster (2).
        assert_eq!(c.lookup(10002).unwrap().id, 2);
        assert_eq!(c.lookup(-3).unwrap().id, -3);
        assert!(c.cluster(10002).is_none());
        assert_eq!(c.distinct_targets().len(), 22);
    }

    #[test]
    fn negative_ids_and_proxy_is_cluster_zero() {
        let c =
            ok("proxy_for -32768 1.2.3.4:1;\nproxy_for 32767 1.2.3.5:65535;\nproxy 1.2.3.6:443;\n");
        let ids: Vec<i16> = c.clusters.iter().map(|c| c.id).collect();
        assert_eq!(ids, [-32768, 32767, 0]);
        assert_eq!(c.cluster(0).unwrap().targets[0].addr, sa("1.2.3.6:443"));
        // No `default` line: the default id is 0, and cluster 0 exists.
        assert_eq!(c.default_dc, 0);
        assert_eq!(c.lookup(5).unwrap().id, 0);
        assert_eq!(c.cluster(-32768).unwrap().targets[0].addr.port(), 1);
        // `-0` is 0: it continues cluster 0.
        let c = ok("proxy 1.2.3.4:80;proxy_for -0 1.2.3.5:80;");
        assert_eq!(c.cluster(0).unwrap().targets.len(), 2);
    }

    #[test]
    fn ipv6_brackets() {
        let c = parse(
            b"proxy_for 2 [::1]:8888;\nproxy_for -2 [2001:db8::1]:443;",
            &no_dns,
        )
        .unwrap();
        assert_eq!(c.cluster(2).unwrap().targets[0].addr, sa("[::1]:8888"));
        assert_eq!(
            c.cluster(-2).unwrap().targets[0].addr,
            sa("[2001:db8::1]:443")
        );
        // Bracketed names go to the resolver as IPv6-only lookups.
        let c = ok("proxy [v6only.example]:80;");
        assert_eq!(c.clusters[0].targets[0].addr, sa("[2001:db8::7]:80"));
        let e = err("proxy [me.example]:80;");
        assert_eq!(e.message, "cannot resolve '[me.example]'");
        // IPv4 literals in brackets fail, like gethostbyname2(AF_INET6).
        let e = parse(b"proxy [1.2.3.4]:80;", &no_dns).unwrap_err();
        assert_eq!(e.message, "cannot resolve '[1.2.3.4]'");
        // Missing `]`, and empty brackets.
        let e = parse(b"proxy [::1:80;", &no_dns).unwrap_err();
        assert_eq!(e.message, "cannot resolve '[::1:80'");
        let e = parse(b"proxy []:80;", &no_dns).unwrap_err();
        assert_eq!(e.message, "cannot resolve '[]'");
        // An unbracketed IPv6 address is not a host word.
        let e = parse(b"proxy ::1:80;", &no_dns).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.near.as_str()),
            ("hostname expected", "::1:80;")
        );
    }

    #[test]
    fn names_use_the_resolver() {
        let c = ok(
            "proxy_for 1 localhost:80;\nproxy_for 2 me.example:81;\nproxy_for 3 v6only.example:82;",
        );
        assert_eq!(c.cluster(1).unwrap().targets[0].addr, sa("127.0.0.1:80"));
        assert_eq!(c.cluster(2).unwrap().targets[0].addr, sa("10.1.2.3:81"));
        assert_eq!(
            c.cluster(3).unwrap().targets[0].addr,
            sa("[2001:db8::7]:82")
        );
    }

    #[test]
    fn cannot_resolve_renders_like_c() {
        let e = err("default 2;\nproxy_for 2 nowhere.invalid:8888;\n");
        assert_eq!(e.line, 1);
        assert_eq!(e.message, "cannot resolve 'nowhere.invalid'");
        assert_eq!(e.near, "nowhere.invalid");
        assert_eq!(
            e.render("backend.conf"),
            "backend.conf:1: fatal: cannot resolve 'nowhere.invalid'\n near nowhere.invalid"
        );
        // The near text is cut at the end of the word; 20+ bytes get " ...".
        let e = err("proxy abcdefghijklmnopqrstuvwxyz:80;");
        assert_eq!(e.near, "abcdefghijklmnopqrst ...");
        assert_eq!(
            e.render("x"),
            "fatal: cannot resolve 'abcdefghijklmnopqrstuvwxyz'\n near abcdefghijklmnopqrst ..."
        );
    }

    #[test]
    fn host_word_length() {
        let long63 = format!("{}.x", "a".repeat(61));
        let long64 = format!("{}.x", "a".repeat(62));
        let e = err(&format!("proxy {long63}:80;"));
        assert_eq!(e.message, format!("cannot resolve '{long63}'"));
        let e = err(&format!("proxy {long64}:80;"));
        assert_eq!(e.message, "hostname expected");
        let e = err("proxy ;");
        assert_eq!(
            (e.message.as_str(), e.near.as_str()),
            ("hostname expected", ";")
        );
        // The host must be on the keyword's line.
        let e = err("proxy\n1.2.3.4:80;");
        assert_eq!(
            (e.line, e.message.as_str(), e.near.as_str()),
            (0, "hostname expected", "")
        );
        assert_eq!(e.render("f"), "fatal: hostname expected near ");
    }

    #[test]
    fn every_error_message_with_line_and_near() {
        let cases: &[(&str, usize, &str, &str)] = &[
            ("timeout 5;", 0, "invalid timeout", ";"),
            ("\n\ntimeout 30001;", 2, "invalid timeout", ";"),
            (
                "default 32768;",
                0,
                "invalid target id (integer -32768..32767 expected)",
                ";",
            ),
            (
                "default -32769 ;",
                0,
                "invalid target id (integer -32768..32767 expected)",
                " ;",
            ),
            (
                "default ;",
                0,
                "invalid target id (integer -32768..32767 expected)",
                ";",
            ),
            (
                "default - 1;",
                0,
                "invalid target id (integer -32768..32767 expected)",
                "- 1;",
            ),
            (
                "proxy_for\n1 1.2.3.4:80;",
                0,
                "invalid target id (integer -32768..32767 expected)",
                "",
            ),
            (
                "proxy_for 2127.0.0.1:80;",
                0,
                "space expected after target id",
                ".0.0.1:80;",
            ),
            ("proxy_for 2;", 0, "space expected after target id", ";"),
            ("proxy 1.2.3.4;", 0, ": expected", ""),
            ("proxy 1.2.3.4 80;", 0, ": expected", "80;"),
            ("proxy 1.2.3.4:;", 0, "port number expected", ";"),
            ("proxy 1.2.3.4:0;", 0, "port number expected", ";"),
            ("proxy 1.2.3.4:\n80;", 0, "port number expected", ""),
            (
                "proxy 1.2.3.4:65536;",
                0,
                "port number 65536 out of range",
                ";",
            ),
            (
                "proxy 1.2.3.4:2147483648;",
                0,
                "port number -2147483648 out of range",
                ";",
            ),
            ("proxy 1.2.3.4:80", 0, "; expected", ""),
            (
                "proxy 1.2.3.4:80\nproxy 1.2.3.5:80;",
                1,
                "; expected",
                " 1.2.3.5:80;",
            ),
            ("proxy 1.2.3.4:80 x;", 0, "; expected", "x;"),
            ("max_connections 3;", 0, "invalid max connections", ";"),
            ("max_connections 1001;", 0, "invalid max connections", ";"),
            ("min_connections 0;", 0, "invalid min connections", ";"),
            ("min_connections 9;", 0, "invalid min connections", ";"),
            (
                "proxi 1.2.3.4:80;",
                0,
                "'proxy <ip>:<port>;' expected",
                "proxi 1.2.3.4:80;",
            ),
            (
                "# c\n; proxy 1.2.3.4:80;",
                1,
                "'proxy <ip>:<port>;' expected",
                " proxy 1.2.3.4:80;",
            ),
            ("{}", 0, "'proxy <ip>:<port>;' expected", "}"),
            (
                "proxy_for 1 1.2.3.4:80;\nproxy_for 2 1.2.3.5:80;\nproxy_for 1 1.2.3.6:80;\n",
                2,
                "proxies for dc 1 intermixed",
                ";",
            ),
            (
                "",
                0,
                "expected to find a mtproto-proxy configuration with `proxy' directives",
                "",
            ),
            (
                "# only\ndefault 2;\ntimeout 100;\n",
                3,
                "expected to find a mtproto-proxy configuration with `proxy' directives",
                "",
            ),
        ];
        for &(text, line, message, near) in cases {
            let e = err(text);
            assert_eq!(
                (e.line, e.message.as_str(), e.near.as_str()),
                (line, message, near),
                "for {text:?}"
            );
        }
    }

    #[test]
    fn rendered_forms() {
        let e = err("timeout 5;");
        assert_eq!(
            e.render("proxy-multi.conf"),
            "fatal: invalid timeout near ;"
        );
        let e = err("# force_probability 10 10\ndefault 2;\nproxy_for 2 1.2.3.4:80\n");
        assert_eq!(e.line, 3);
        assert_eq!(
            e.render("proxy-multi.conf"),
            "proxy-multi.conf:3: fatal: ; expected near "
        );
        let e = err("default 2;\nproxy_for 2 1.2.3.4:99999;   # a comment that is long");
        assert_eq!(
            e.render("/etc/mt.conf"),
            "/etc/mt.conf:1: fatal: port number 99999 out of range near ;   # a comment that ..."
        );
        // Exactly 20 bytes to the end of line still gets " ..." (C tests len >= 20).
        let e = err("proxy 1.2.3.4:80 abcdefghijklmnopqrst\r\n");
        assert_eq!(e.near, "abcdefghijklmnopqrst ...");
        let e = err("proxy 1.2.3.4:80 abcdefghijklmnopqrs\r\n");
        assert_eq!(e.near, "abcdefghijklmnopqrs");
    }

    #[test]
    fn missing_semicolon() {
        let e = err("proxy_for 1 1.2.3.4:80\nproxy_for 1 1.2.3.5:80;\n");
        assert_eq!((e.line, e.message.as_str()), (1, "; expected"));
        assert_eq!(e.near, " 1 1.2.3.5:80;");
        assert_eq!(e.render("c"), "c:1: fatal: ; expected near  1 1.2.3.5:80;");
        let e = err("default 2\n");
        assert_eq!(
            (e.line, e.message.as_str(), e.near.as_str()),
            (1, "; expected", "")
        );
        let e = err("default 2 timeout 20;");
        assert_eq!(
            (e.message.as_str(), e.near.as_str()),
            ("; expected", " 20;")
        );
    }

    #[test]
    fn tokenizer_quirks() {
        // Keywords are prefixes.
        let c = ok("proxyme.example:80;");
        assert_eq!(c.clusters[0].targets[0].addr, sa("10.1.2.3:80"));
        assert_eq!(err("proxyfoo:80;").message, "cannot resolve 'foo'");
        let c = ok("timeout20;default-3;proxy_for-3\t1.2.3.4:80;");
        assert_eq!((c.timeout_ms, c.default_dc), (20, -3));
        assert_eq!(c.lookup(7).unwrap().id, -3);
        // `host : port`, even across newlines and comments before ':' and ';'.
        let c = ok("proxy 1.2.3.4 # c\n : \t80 # c\n\n ;\nproxy_for 0 1.2.3.5\t:\t81\r\n;");
        assert_eq!(c.clusters[0].targets[1].addr, sa("1.2.3.5:81"));
        // Comments and CR between statements.
        let c = ok("#a\r\n  # b\r\n\tproxy 1.2.3.4:80;#c\r\n");
        assert_eq!(c.targets_total, 1);
        // Everything after a NUL byte is ignored.
        let c = ok("proxy 1.2.3.4:80;\0 garbage");
        assert_eq!(c.targets_total, 1);
        let e = err("\0proxy 1.2.3.4:80;");
        assert!(e.message.starts_with("expected to find"));
        // Port digits wrap like C's int: 2^32 + 443 is port 443.
        let c = ok("proxy 1.2.3.4:4294967739;");
        assert_eq!(c.clusters[0].targets[0].addr.port(), 443);
        // Leading zeros in the port are digits.
        let c = ok("proxy 1.2.3.4:00080;");
        assert_eq!(c.clusters[0].targets[0].addr.port(), 80);
        // `{` `}` `:` are tokens but start no statement.
        assert_eq!(err(":").near, "");
    }

    #[test]
    fn ports_bounds() {
        assert_eq!(
            ok("proxy 1.2.3.4:65535;").clusters[0].targets[0]
                .addr
                .port(),
            65535
        );
        assert_eq!(ok("proxy 1.2.3.4:1;").clusters[0].targets[0].addr.port(), 1);
        assert_eq!(err("proxy 1.2.3.4:0;").message, "port number expected");
        assert_eq!(
            err("proxy 1.2.3.4:65536;").message,
            "port number 65536 out of range"
        );
        assert_eq!(err("proxy 1.2.3.4:-1;").message, "port number expected");
    }

    #[test]
    fn timeout_bounds() {
        assert_eq!(ok("timeout 10; proxy 1.2.3.4:80;").timeout_ms, 10);
        assert_eq!(ok("timeout 30000; proxy 1.2.3.4:80;").timeout_ms, 30000);
        assert_eq!(
            err("timeout 9; proxy 1.2.3.4:80;").message,
            "invalid timeout"
        );
        assert_eq!(err("timeout 30001;").message, "invalid timeout");
        assert_eq!(err("timeout;").message, "invalid timeout");
        // The last one wins.
        assert_eq!(
            ok("timeout 100; timeout 200; proxy 1.2.3.4:80;").timeout_ms,
            200
        );
    }

    #[test]
    fn min_max_order_and_defaults() {
        // min 10 needs max >= 10 first.
        assert_eq!(
            err("min_connections 10;").message,
            "invalid min connections"
        );
        let c = ok(
            "proxy 1.2.3.1:80;max_connections 20; min_connections 10; proxy 1.2.3.2:80;\
                    min_connections 1; max_connections 1; proxy 1.2.3.3:80;\
                    max_connections 1000; proxy 1.2.3.4:80;",
        );
        let t: Vec<(u32, u32)> = c.clusters[0]
            .targets
            .iter()
            .map(|t| (t.min_connections, t.max_connections))
            .collect();
        assert_eq!(t, [(4, 8), (10, 20), (1, 1), (1, 1000)]);
        // max below the current min fails, and so does min above the current max.
        assert_eq!(err("max_connections 3;").message, "invalid max connections");
        assert_eq!(
            ok("max_connections 4; proxy 1.2.3.4:80;").clusters[0].targets[0].max_connections,
            4
        );
        assert_eq!(
            err("max_connections 4; min_connections 5;").message,
            "invalid min connections"
        );
        assert_eq!(
            ok("min_connections 8; proxy 1.2.3.4:80;").clusters[0].targets[0].min_connections,
            8
        );
        assert_eq!(
            err("max_connections 1001;").message,
            "invalid max connections"
        );
        // C keeps these in an int: 2^32 + 5 is 5.
        let c = ok("max_connections 4294967301; proxy 1.2.3.4:80;");
        assert_eq!(c.clusters[0].targets[0].max_connections, 5);
    }

    #[test]
    fn intermixed_clusters() {
        // Contiguous repeats are fine; returning to an earlier id is not.
        let c = ok("proxy_for 1 1.2.3.4:80;\nproxy_for 1 1.2.3.5:80;\nproxy_for 2 1.2.3.6:80;");
        assert_eq!(c.cluster(1).unwrap().targets.len(), 2);
        let e = err("proxy 1.2.3.4:80;\nproxy_for 5 1.2.3.5:80;\nproxy 1.2.3.6:80;");
        assert_eq!(
            (e.line, e.message.as_str()),
            (2, "proxies for dc 0 intermixed")
        );
        let e = err("proxy_for -2 1.2.3.4:80;\nproxy_for 2 1.2.3.5:80;\nproxy_for -2 1.2.3.6:80;");
        assert_eq!(
            e.render("m.conf"),
            "m.conf:2: fatal: proxies for dc -2 intermixed near ;"
        );
    }

    #[test]
    fn too_many_targets() {
        let mut s = String::new();
        for i in 0..4096 {
            s.push_str(&format!("proxy 10.0.{}.{}:80;\n", i / 256, i % 256));
        }
        let c = parse(s.as_bytes(), &no_dns).unwrap();
        assert_eq!(c.targets_total, 4096);
        assert_eq!(c.distinct_targets().len(), 4096);
        s.push_str("proxy 10.1.0.0:80;\n");
        let e = parse(s.as_bytes(), &no_dns).unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (4096, "too many targets (4096)")
        );
        assert_eq!(e.near, " 10.1.0.0:80;");
        assert_eq!(
            e.render("big.conf"),
            "big.conf:4096: fatal: too many targets (4096) near  10.1.0.0:80;"
        );
        // For proxy_for the cursor is past the id and its spaces.
        let s = s.replace("proxy 10.1.0.0", "proxy_for 0  10.1.0.0");
        assert_eq!(
            parse(s.as_bytes(), &no_dns).unwrap_err().near,
            "10.1.0.0:80;"
        );
    }

    #[test]
    fn too_many_auth_clusters() {
        let mut s = String::new();
        for i in 0..1024 {
            s.push_str(&format!("proxy_for {i} 10.0.0.1:80;\n"));
        }
        assert_eq!(parse(s.as_bytes(), &no_dns).unwrap().auth_clusters(), 1024);
        // Even a line for the last cluster fails once 1024 exist (C checks first).
        let more = format!("{s}proxy_for 1023 10.0.0.2:80;\n");
        let e = parse(more.as_bytes(), &no_dns).unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (1024, "too many auth clusters")
        );
        assert_eq!(e.near, "10.0.0.2:80;");
    }

    #[test]
    fn default_semantics() {
        // `default` names a cluster with no proxies: no default.
        let c = ok("default 7;\nproxy_for 1 1.2.3.4:80;\nproxy_for 2 1.2.3.5:80;");
        assert_eq!(c.default_dc, 7);
        assert!(c.default_cluster().is_none());
        assert!(c.lookup(3).is_none());
        assert_eq!(c.lookup(2).unwrap().id, 2);
        // No `default` and no cluster 0: unknown DCs are dropped.
        let c = ok("proxy_for 1 1.2.3.4:80;");
        assert!(c.lookup(2).is_none());
        // Position does not matter; the last one wins.
        let c = ok("proxy_for 1 1.2.3.4:80;\nproxy_for 2 1.2.3.5:80;\ndefault 1;\ndefault 2;");
        assert_eq!(c.lookup(-9).unwrap().id, 2);
        assert_eq!(c.lookup(1).unwrap().id, 1);
    }

    #[test]
    fn distinct_targets_last_line_wins() {
        let c = ok(
            "proxy_for 2 1.2.3.4:8888;\nproxy_for 2 1.2.3.5:8888;\nmax_connections 16;\n\
                    min_connections 6;\nproxy_for -2 1.2.3.4:8888;\nproxy_for -2 1.2.3.4:8889;",
        );
        assert_eq!(c.targets_total, 4);
        assert_eq!(
            c.distinct_targets(),
            vec![
                (sa("1.2.3.4:8888"), 6, 16),
                (sa("1.2.3.5:8888"), 4, 8),
                (sa("1.2.3.4:8889"), 6, 16),
            ]
        );
    }

    #[test]
    fn literal_ipv4_never_calls_resolver() {
        let c = parse(b"proxy 255.255.255.255:1;", &no_dns).unwrap();
        assert_eq!(c.clusters[0].targets[0].addr, sa("255.255.255.255:1"));
        // Not a dotted quad: left to the resolver (C's gethostbyname would take inet_aton forms).
        let e = parse(b"proxy 1.2.3:80;", &fake_dns).unwrap_err();
        assert_eq!(e.message, "cannot resolve '1.2.3'");
    }
}
