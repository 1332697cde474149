//! Command-line parsing, compatible with the C `mtproto-proxy`.
//!
//! The C binary parses its options with GNU `getopt_long` (argument permutation, `--` ends the
//! options, unambiguous prefixes of long names are accepted). This module reproduces that model
//! and the C validation rules (spec: backend-ops.md §3, client.md §1.1 and §7.1), with these
//! deliberate differences:
//!
//! * zero positionals is allowed (it means direct-to-DC mode); only a completely empty command
//!   line is a usage error;
//! * up to 128 `-S` secrets are accepted (the official C asserts at the 17th, the fork allows 128);
//! * assertion aborts of the C (`-H` port ≥ 65536, `-M` out of range) become clean exit-1 errors;
//! * `-p` rejects ports above 65535 (the C does not check), exit 2;
//! * every error message names the option and the offending value;
//! * extension options (`--direct`, `--dc-override`, `--handshake-timeout`, `--idle-timeout`,
//!   `--public-host`, `--no-fast-mode`, `--mask-host`, `--tls-require-sni`) exist; they must be spelled in full (they never take part in prefix
//!   abbreviation, so abbreviations resolve exactly as in the C).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

/// Maximum number of client secrets (`-S` plus `--mtproto-secret-file`), as in the fork.
pub const MAX_SECRETS: usize = 128;
/// Maximum number of `-H` client ports in total (C: `MAX_HTTP_LISTEN_PORTS`).
pub const MAX_HTTP_PORTS: usize = 128;
/// Maximum number of `--nat-info` rules (C: `MAX_NAT_INFO_RULES`).
pub const MAX_NAT_INFO_RULES: usize = 16;
/// Maximum `-M` value (C: `MAX_WORKERS`).
pub const MAX_WORKERS: u32 = 256;
/// Default `--msg-buffers-size`.
pub const DEFAULT_MSG_BUFFERS_SIZE: u64 = 268_435_456;
/// Default `-b`.
pub const DEFAULT_BACKLOG: u32 = 8192;
/// Default `-c` (also used for `-c` ≤ 0).
pub const DEFAULT_CONNECTIONS: u32 = 65536;
/// Default `-T` (also used for `-T` ≤ 0).
pub const DEFAULT_PING_INTERVAL: f64 = 5.0;
/// Default `--handshake-timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--drain-timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `--idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Why parsing stopped: what to print and the process exit code.
///
/// `stdout` holds the usage text when C would print it; `stderr` holds the diagnostics
/// (each line terminated by `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliExit {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for CliExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stderr.is_empty() {
            write!(f, "command line rejected (exit code {})", self.code)
        } else {
            write!(f, "{}", self.stderr.trim_end())
        }
    }
}

impl std::error::Error for CliExit {}

/// `--dc-override DC:HOST:PORT`. `host` is stored without brackets (`[::1]` → `::1`), so it can be
/// passed to `(host, port).to_socket_addrs()` or parsed as an `IpAddr` directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcOverride {
    pub dc: i32,
    pub host: String,
    pub port: u16,
}

/// `-p port` or `-p start:end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpec {
    Single(u16),
    Range(u16, u16),
}

/// The parsed command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// `-v` (+1 each), `--verbosity[=N]`.
    pub verbosity: u32,
    /// `-u`: user to switch to when started as root.
    pub user: Option<String>,
    /// `-l`: log file.
    pub log_file: Option<PathBuf>,
    /// `-d` (toggles), `--daemonize[=N]`.
    pub daemonize: bool,
    /// `--nice`.
    pub nice: Option<i32>,
    /// `--msg-buffers-size` in bytes.
    pub msg_buffers_size: u64,
    /// `-b`. A negative C value (kernel caps it at somaxconn) is stored as `i32::MAX`.
    pub backlog: u32,
    /// `-c`; ≤ 0 → 65536.
    pub connections: u32,
    /// `-p` (last wins).
    pub stats_port: Option<PortSpec>,
    /// `-6`.
    pub ipv6: bool,
    /// `--aes-pwd`.
    pub aes_pwd: Option<PathBuf>,
    /// `--disable-tcp`.
    pub disable_tcp: bool,
    /// `--crc32c` (no-op in C).
    pub crc32c: bool,
    /// `--allow-skip-dh`.
    pub allow_skip_dh: bool,
    /// `--force-dh` (no-op in C).
    pub force_dh: bool,
    /// `--max-accept-rate` (0 = unlimited; negative → 0).
    pub max_accept_rate: u32,
    /// `--max-dh-accept-rate` (0 = unlimited; negative → 0).
    pub max_dh_accept_rate: u32,
    /// `--nat-info local:global` rules, at most 16.
    pub nat_info: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// `--address`.
    pub address: Option<Ipv4Addr>,
    /// `--cpu-threads` (negative → 0).
    pub cpu_threads: Option<u32>,
    /// `--io-threads` (negative → 0).
    pub io_threads: Option<u32>,
    /// `--tcp-cpu-threads` (negative → 0).
    pub tcp_cpu_threads: Option<u32>,
    /// `--tcp-iothreads` (negative → 0).
    pub tcp_iothreads: Option<u32>,
    /// `--multithread[=N]`.
    pub multithread: bool,
    /// `--http-stats`.
    pub http_stats: bool,
    /// `-S` and `--mtproto-secret-file` secrets in command-line order, at most 128.
    pub secrets: Vec<[u8; 16]>,
    /// `-P` (last wins).
    pub proxy_tag: Option<[u8; 16]>,
    /// `-D`, in command-line order.
    pub domains: Vec<String>,
    /// `-C`; a negative value becomes `Some(0)`, which means "same as `-c`".
    pub max_special_connections: Option<u32>,
    /// `-W`; a negative value becomes `Some(0)`.
    pub window_clamp: Option<u32>,
    /// `-H` client ports, in command-line order, at most 128.
    pub ports: Vec<u16>,
    /// `-M`, 0..=256.
    pub workers: u32,
    /// `-T` seconds; ≤ 0 (or garbage) → 5.0.
    pub ping_interval: f64,
    /// The positional argument (backend config file). `None` means direct-to-DC mode.
    pub config_file: Option<PathBuf>,
    /// Extension `--direct`: force direct-to-DC mode.
    pub direct: bool,
    /// Extension `--dc-override DC:HOST:PORT`, repeatable, in command-line order.
    pub dc_overrides: Vec<DcOverride>,
    /// Extension `--handshake-timeout SECS` (default 10 s).
    pub handshake_timeout: Duration,
    /// Extension `--idle-timeout SECS` (default 600 s).
    pub idle_timeout: Duration,
    /// Extension `--public-host HOST`: the address printed in tg:// links.
    pub public_host: Option<String>,
    /// Extension `--no-fast-mode`: always re-encrypt the download direction in direct mode.
    pub no_fast_mode: bool,
    /// Extension `--mask-host HOST:PORT`: where fake-TLS connections that fail the checks
    /// are spliced to (and what the start-up probe asks); default: the `-D` domain, port 443.
    pub mask_host: Option<(String, u16)>,
    /// Extension `--tls-require-sni`: refuse fake-TLS hellos without SNI, as C does (by
    /// default they are accepted: iOS clients send none).
    pub tls_require_sni: bool,
    /// Extension `--drain-timeout SECS`: after SIGTERM/SIGINT, how long open sessions may
    /// finish before the process exits (default 5 s).
    pub drain_timeout: Duration,
    /// Extension `--reuse-port`: SO_REUSEPORT on the client ports, so a new process can
    /// start serving them before the old one stops (zero-downtime upgrades).
    pub reuse_port: bool,
    /// Long names of every option that appeared, in order, duplicates included.
    pub given: Vec<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            verbosity: 0,
            user: None,
            log_file: None,
            daemonize: false,
            nice: None,
            msg_buffers_size: DEFAULT_MSG_BUFFERS_SIZE,
            backlog: DEFAULT_BACKLOG,
            connections: DEFAULT_CONNECTIONS,
            stats_port: None,
            ipv6: false,
            aes_pwd: None,
            disable_tcp: false,
            crc32c: false,
            allow_skip_dh: false,
            force_dh: false,
            max_accept_rate: 0,
            max_dh_accept_rate: 0,
            nat_info: Vec::new(),
            address: None,
            cpu_threads: None,
            io_threads: None,
            tcp_cpu_threads: None,
            tcp_iothreads: None,
            multithread: false,
            http_stats: false,
            secrets: Vec::new(),
            proxy_tag: None,
            domains: Vec::new(),
            max_special_connections: None,
            window_clamp: None,
            ports: Vec::new(),
            workers: 0,
            ping_interval: DEFAULT_PING_INTERVAL,
            config_file: None,
            direct: false,
            dc_overrides: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            public_host: None,
            no_fast_mode: false,
            mask_host: None,
            tls_require_sni: false,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            reuse_port: false,
            given: Vec::new(),
        }
    }
}

impl Options {
    /// True when the proxy must talk to the DCs directly: `--direct`, or no config file.
    pub fn direct_mode(&self) -> bool {
        self.direct || self.config_file.is_none()
    }

    /// True when the option with this long name appeared on the command line.
    pub fn was_given(&self, long_name: &str) -> bool {
        self.given.contains(&long_name)
    }
}

/// Parses `std::env::args_os()`.
pub fn parse_env() -> Result<Options, CliExit> {
    parse(std::env::args_os())
}

/// Parses a full argument vector; the first item is `argv[0]`.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Options, CliExit> {
    let mut it = args.into_iter();
    let argv0 = it
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mtproto-proxy".to_string());
    let args: Vec<OsString> = it.collect();
    Parser::new(argv0).run(&args)
}

/// The version line printed at start-up and in `--help`.
pub fn version() -> String {
    format!(
        "mtproxy-rs {} (Rust drop-in for mtproxy-0.02)",
        env!("CARGO_PKG_VERSION")
    )
}

/// The usage text (C format, printed on stdout for `-h` and every usage error).
pub fn usage_text(argv0: &str) -> String {
    let mut s = String::with_capacity(4096);
    s.push_str("usage: ");
    s.push_str(argv0);
    s.push_str(
        " [-v] [-6] [-p<port>] [-H<http-port>{,<http-port>}] [-M<workers>] [-u<username>] \
         [-b<backlog>] [-c<max-conn>] [-l<log-name>] [-W<window-size>] [<config-file>]\n",
    );
    s.push_str(&version());
    s.push('\n');
    s.push_str("\tSimple MT-Proto proxy\n");
    // parse_usage: width = max over options of (3 per short letter + len+3 per long name + 6 if
    // the option takes an argument); each line is padded to it, then a tab and the help.
    let width = OPTIONS
        .iter()
        .map(|o| {
            o.long.len()
                + 3
                + if o.short.is_some() { 3 } else { 0 }
                + if o.arg == Arg::No { 0 } else { 6 }
        })
        .max()
        .unwrap_or(0);
    for o in OPTIONS {
        let mut head = format!("--{}", o.long);
        if let Some(c) = o.short {
            head.push_str("/-");
            head.push(c);
        }
        match o.arg {
            Arg::No => {}
            Arg::Required => head.push_str(" <arg>"),
            Arg::Optional => head.push_str(" {arg}"),
        }
        s.push('\t');
        s.push_str(&head);
        for _ in head.len()..width {
            s.push(' ');
        }
        s.push('\t');
        s.push_str(o.help);
        s.push('\n');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Option table
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    No,
    Required,
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    Ipv6,
    MaxSpecialConnections,
    Domain,
    HttpPorts,
    Slaves,
    ProxyTag,
    MtprotoSecret,
    PingInterval,
    WindowClamp,
    Backlog,
    Connections,
    Daemonize,
    Help,
    Log,
    Port,
    User,
    Verbosity,
    AesPwd,
    Nice,
    MsgBuffersSize,
    DisableTcp,
    Crc32c,
    CpuThreads,
    IoThreads,
    AllowSkipDh,
    ForceDh,
    MaxAcceptRate,
    MaxDhAcceptRate,
    Multithread,
    TcpCpuThreads,
    TcpIothreads,
    NatInfo,
    Address,
    HttpStats,
    MtprotoSecretFile,
    Direct,
    DcOverride,
    HandshakeTimeout,
    IdleTimeout,
    PublicHost,
    NoFastMode,
    MaskHost,
    TlsRequireSni,
    DrainTimeout,
    ReusePort,
}

struct OptDef {
    id: Id,
    long: &'static str,
    short: Option<char>,
    arg: Arg,
    /// Our extension (not in the C): exact long name only, never abbreviated.
    ext: bool,
    help: &'static str,
}

const fn c(
    id: Id,
    long: &'static str,
    short: Option<char>,
    arg: Arg,
    help: &'static str,
) -> OptDef {
    OptDef {
        id,
        long,
        short,
        arg,
        ext: false,
        help,
    }
}

const fn ext(id: Id, long: &'static str, arg: Arg, help: &'static str) -> OptDef {
    OptDef {
        id,
        long,
        short: None,
        arg,
        ext: true,
        help,
    }
}

/// In C usage order (sorted by option id), then the fork's option, then our extensions.
const OPTIONS: &[OptDef] = &[
    c(Id::Ipv6, "ipv6", Some('6'), Arg::No, "enables ipv6 TCP/UDP support"),
    c(
        Id::MaxSpecialConnections,
        "max-special-connections",
        Some('C'),
        Arg::Required,
        "sets maximal number of accepted client connections per worker",
    ),
    c(
        Id::Domain,
        "domain",
        Some('D'),
        Arg::Required,
        "adds allowed domain for TLS-transport mode, disables other transports; can be specified more than once",
    ),
    c(
        Id::HttpPorts,
        "http-ports",
        Some('H'),
        Arg::Required,
        "comma-separated list of client (HTTP) ports to listen",
    ),
    c(
        Id::Slaves,
        "slaves",
        Some('M'),
        Arg::Required,
        "spawn several slave workers; not recommended for TLS-transport mode for better replay protection",
    ),
    c(
        Id::ProxyTag,
        "proxy-tag",
        Some('P'),
        Arg::Required,
        "16-byte proxy tag in hex mode to be passed along with all forwarded queries",
    ),
    c(
        Id::MtprotoSecret,
        "mtproto-secret",
        Some('S'),
        Arg::Required,
        "16-byte secret in hex mode",
    ),
    c(
        Id::PingInterval,
        "ping-interval",
        Some('T'),
        Arg::Required,
        "sets ping interval in second for local TCP connections (default 5.000)",
    ),
    c(
        Id::WindowClamp,
        "window-clamp",
        Some('W'),
        Arg::Required,
        "sets window clamp for client TCP connections",
    ),
    c(Id::Backlog, "backlog", Some('b'), Arg::Required, "sets backlog size"),
    c(
        Id::Connections,
        "connections",
        Some('c'),
        Arg::Required,
        "sets maximal connections number",
    ),
    c(
        Id::Daemonize,
        "daemonize",
        Some('d'),
        Arg::Optional,
        "changes between daemonize/not daemonize mode",
    ),
    c(Id::Help, "help", Some('h'), Arg::No, "prints help and exits"),
    c(Id::Log, "log", Some('l'), Arg::Required, "sets log file name"),
    c(
        Id::Port,
        "port",
        Some('p'),
        Arg::Required,
        "<port> or <sport>:<eport> sets listening port number or port range",
    ),
    c(
        Id::User,
        "user",
        Some('u'),
        Arg::Required,
        "sets user name to make setuid",
    ),
    c(
        Id::Verbosity,
        "verbosity",
        Some('v'),
        Arg::Optional,
        "sets or increases verbosity level",
    ),
    c(
        Id::AesPwd,
        "aes-pwd",
        None,
        Arg::Required,
        "sets custom secret.conf file",
    ),
    c(Id::Nice, "nice", None, Arg::Required, "sets niceness"),
    c(
        Id::MsgBuffersSize,
        "msg-buffers-size",
        None,
        Arg::Required,
        "sets maximal buffers size (default 268435456)",
    ),
    c(
        Id::DisableTcp,
        "disable-tcp",
        None,
        Arg::No,
        "do not open listening tcp socket",
    ),
    c(
        Id::Crc32c,
        "crc32c",
        None,
        Arg::No,
        "Try to use crc32c instead of crc32 in tcp rpc",
    ),
    c(
        Id::CpuThreads,
        "cpu-threads",
        None,
        Arg::Required,
        "Number of CPU threads (1-64, default 8)",
    ),
    c(
        Id::IoThreads,
        "io-threads",
        None,
        Arg::Required,
        "Number of I/O threads (1-64, default 16)",
    ),
    c(
        Id::AllowSkipDh,
        "allow-skip-dh",
        None,
        Arg::No,
        "Allow skipping DH during RPC handshake",
    ),
    c(
        Id::ForceDh,
        "force-dh",
        None,
        Arg::No,
        "Force using DH for all outbound RPC connections",
    ),
    c(
        Id::MaxAcceptRate,
        "max-accept-rate",
        None,
        Arg::Required,
        "max number of connections per second that is allowed to accept",
    ),
    c(
        Id::MaxDhAcceptRate,
        "max-dh-accept-rate",
        None,
        Arg::Required,
        "max number of DH connections per second that is allowed to accept",
    ),
    c(
        Id::Multithread,
        "multithread",
        None,
        Arg::Optional,
        "run in multithread mode",
    ),
    c(
        Id::TcpCpuThreads,
        "tcp-cpu-threads",
        None,
        Arg::Required,
        "number of tcp-cpu threads",
    ),
    c(
        Id::TcpIothreads,
        "tcp-iothreads",
        None,
        Arg::Required,
        "number of tcp-io threads",
    ),
    c(
        Id::NatInfo,
        "nat-info",
        None,
        Arg::Required,
        "<local-addr>:<global-addr>\tsets network address translation for RPC protocol handshake",
    ),
    c(
        Id::Address,
        "address",
        None,
        Arg::Required,
        "tries to bind socket only to specified address",
    ),
    c(
        Id::HttpStats,
        "http-stats",
        None,
        Arg::No,
        "allow http server to answer on stats queries",
    ),
    c(
        Id::MtprotoSecretFile,
        "mtproto-secret-file",
        None,
        Arg::Required,
        "path to file with mtproto secrets (comma or whitespace-separated)",
    ),
    ext(
        Id::Direct,
        "direct",
        Arg::No,
        "connect to Telegram DCs directly, ignoring the middle-end config (also implied when no <config-file> is given)",
    ),
    ext(
        Id::DcOverride,
        "dc-override",
        Arg::Required,
        "<dc>:<host>:<port> overrides the address of a DC in direct mode, e.g. 2:149.154.167.51:443, -2:dc.example:443 or 4:[2001:db8::1]:443; can be specified more than once",
    ),
    ext(
        Id::HandshakeTimeout,
        "handshake-timeout",
        Arg::Required,
        "seconds a client may take to complete its handshake (default 10; fractions allowed)",
    ),
    ext(
        Id::IdleTimeout,
        "idle-timeout",
        Arg::Required,
        "seconds of inactivity after which a client connection is closed (default 600; fractions allowed)",
    ),
    ext(
        Id::PublicHost,
        "public-host",
        Arg::Required,
        "host name or address printed in tg:// links",
    ),
    ext(
        Id::NoFastMode,
        "no-fast-mode",
        Arg::No,
        "in direct mode, re-encrypt downloads instead of passing them through (hides the link between the client and DC sides)",
    ),
    ext(
        Id::MaskHost,
        "mask-host",
        Arg::Required,
        "<host>:<port> where fake-TLS connections that fail the checks are forwarded, and what the start-up probe asks (default: the first -D domain, port 443)",
    ),
    ext(
        Id::DrainTimeout,
        "drain-timeout",
        Arg::Required,
        "seconds open sessions may finish after SIGTERM/SIGINT before the process exits (default 5; fractions allowed)",
    ),
    ext(
        Id::ReusePort,
        "reuse-port",
        Arg::No,
        "set SO_REUSEPORT on client ports so a new process can take over without a gap (zero-downtime upgrade)",
    ),
    ext(
        Id::TlsRequireSni,
        "tls-require-sni",
        Arg::No,
        "refuse fake-TLS hellos without SNI like C (default: accept them, iOS clients send none)",
    ),
];

enum Lookup {
    Found(&'static OptDef),
    Unknown,
    Ambiguous(Vec<&'static str>),
}

/// getopt_long lookup: an exact match wins; otherwise a unique prefix of a C option.
fn lookup_long(name: &str) -> Lookup {
    if let Some(o) = OPTIONS.iter().find(|o| o.long == name) {
        return Lookup::Found(o);
    }
    if name.is_empty() {
        return Lookup::Unknown;
    }
    let cands: Vec<&'static OptDef> = OPTIONS
        .iter()
        .filter(|o| !o.ext && o.long.starts_with(name))
        .collect();
    match cands.len() {
        0 => Lookup::Unknown,
        1 => Lookup::Found(cands[0]),
        _ => Lookup::Ambiguous(cands.iter().map(|o| o.long).collect()),
    }
}

fn lookup_short(ch: u8) -> Option<&'static OptDef> {
    OPTIONS
        .iter()
        .find(|o| o.short.is_some_and(|s| s as u32 == ch as u32))
}

/// How the option is named in messages: `-X` when it has a short letter, else `--name`.
fn flag(o: &OptDef) -> String {
    match o.short {
        Some(c) => format!("-{c}"),
        None => format!("--{}", o.long),
    }
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

struct Parser {
    argv0: String,
    opts: Options,
}

fn lossy(v: &OsStr) -> String {
    v.to_string_lossy().into_owned()
}

impl Parser {
    fn new(argv0: String) -> Self {
        Parser {
            argv0,
            opts: Options::default(),
        }
    }

    /// A usage error: the diagnostics on stderr, the usage text on stdout, exit 2.
    fn usage_err(&self, lines: &[String]) -> CliExit {
        let mut stderr = String::new();
        for l in lines {
            stderr.push_str(l);
            stderr.push('\n');
        }
        CliExit {
            code: 2,
            stdout: usage_text(&self.argv0),
            stderr,
        }
    }

    fn usage1(&self, msg: String) -> CliExit {
        self.usage_err(&[msg])
    }

    /// getopt's own diagnostic followed by the C engine's `Unrecognized option`.
    fn getopt_err(&self, msg: String) -> CliExit {
        self.usage_err(&[
            format!("{}: {}", self.argv0, msg),
            "Unrecognized option".into(),
        ])
    }

    /// A fatal error without usage (C exits directly or aborts on an assertion).
    fn fatal(code: i32, msg: String) -> CliExit {
        CliExit {
            code,
            stdout: String::new(),
            stderr: msg + "\n",
        }
    }

    fn run(mut self, args: &[OsString]) -> Result<Options, CliExit> {
        if args.is_empty() {
            return Err(self.usage1(format!(
                "{}: no arguments given: expected options and <config-file> (see usage)",
                self.argv0
            )));
        }
        let mut positionals: Vec<&OsString> = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            let b = arg.as_bytes();
            if b == b"--" {
                positionals.extend(args[i..].iter());
                break;
            }
            if b.len() > 2 && b.starts_with(b"--") {
                let body = &b[2..];
                let (name_b, inline) = match body.iter().position(|&x| x == b'=') {
                    Some(p) => (&body[..p], Some(OsStr::from_bytes(&body[p + 1..]))),
                    None => (body, None),
                };
                let name = String::from_utf8_lossy(name_b);
                let def = match lookup_long(&name) {
                    Lookup::Found(d) => d,
                    Lookup::Unknown => {
                        return Err(self.getopt_err(format!(
                            "unrecognized option '--{}'",
                            String::from_utf8_lossy(body)
                        )))
                    }
                    Lookup::Ambiguous(c) => {
                        let list: Vec<String> = c.iter().map(|n| format!("'--{n}'")).collect();
                        return Err(self.getopt_err(format!(
                            "option '--{}' is ambiguous; possibilities: {}",
                            String::from_utf8_lossy(body),
                            list.join(" ")
                        )));
                    }
                };
                let value: Option<&OsStr> = match def.arg {
                    Arg::No => {
                        if inline.is_some() {
                            return Err(self.getopt_err(format!(
                                "option '--{}' doesn't allow an argument",
                                def.long
                            )));
                        }
                        None
                    }
                    Arg::Optional => inline,
                    Arg::Required => match inline {
                        Some(v) => Some(v),
                        None if i < args.len() => {
                            i += 1;
                            Some(args[i - 1].as_os_str())
                        }
                        None => {
                            return Err(self.getopt_err(format!(
                                "option '--{}' requires an argument",
                                def.long
                            )))
                        }
                    },
                };
                self.apply(def, value)?;
            } else if b.len() > 1 && b[0] == b'-' {
                let mut j = 1;
                while j < b.len() {
                    let ch = b[j];
                    let def = match lookup_short(ch) {
                        Some(d) => d,
                        None => {
                            let shown = String::from_utf8_lossy(&b[j..])
                                .chars()
                                .next()
                                .unwrap_or('?');
                            return Err(self.getopt_err(format!("invalid option -- '{shown}'")));
                        }
                    };
                    j += 1;
                    if def.arg == Arg::Required {
                        let value = if j < b.len() {
                            OsStr::from_bytes(&b[j..])
                        } else if i < args.len() {
                            i += 1;
                            args[i - 1].as_os_str()
                        } else {
                            return Err(self.getopt_err(format!(
                                "option requires an argument -- '{}'",
                                ch as char
                            )));
                        };
                        self.apply(def, Some(value))?;
                        break;
                    }
                    // Short forms of optional-argument options take no argument at all.
                    self.apply(def, None)?;
                }
            } else {
                positionals.push(arg);
            }
        }
        match positionals.len() {
            0 => {}
            1 => self.opts.config_file = Some(PathBuf::from(positionals[0])),
            n => {
                let shown: Vec<String> = positionals
                    .iter()
                    .map(|p| format!("'{}'", p.to_string_lossy()))
                    .collect();
                return Err(self.usage1(format!(
                    "too many arguments: expected at most one <config-file>, got {n}: {} \
                     (note: --verbosity/--daemonize/--multithread take a value only as --name=N)",
                    shown.join(" ")
                )));
            }
        }
        Ok(self.opts)
    }

    fn apply(&mut self, def: &'static OptDef, value: Option<&OsStr>) -> Result<(), CliExit> {
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
                self.opts.stats_port = Some(parse_port_spec(vb).ok_or_else(|| {
                    self.usage1(format!(
                        "invalid -p value '{v}': expected <port> or <start>:<end> \
                         with 1 <= start <= end <= 65535"
                    ))
                })?);
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

    fn utf8(&self, def: &OptDef, raw: &OsStr) -> Result<String, CliExit> {
        raw.to_str().map(str::to_owned).ok_or_else(|| {
            self.usage1(format!(
                "invalid {} value '{}': not valid UTF-8",
                flag(def),
                raw.to_string_lossy()
            ))
        })
    }

    fn add_secret(&mut self, s: [u8; 16], origin: Option<(&str, usize)>) -> Result<(), CliExit> {
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
    fn load_secret_file(&mut self, path: &OsStr) -> Result<(), CliExit> {
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
    fn parse_http_ports(&mut self, b: &[u8], v: &str) -> Result<(), CliExit> {
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

// ---------------------------------------------------------------------------------------------
// Value parsers
// ---------------------------------------------------------------------------------------------

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// C `strtol`-style prefix: leading white space, an optional sign, at least one digit.
/// Returns the value (saturated far outside the i64 range) and the bytes consumed.
fn c_int_prefix(s: &[u8]) -> Option<(i128, usize)> {
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let digits_start = i;
    let mut v: i128 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = (v * 10 + i128::from(s[i] - b'0')).min(1 << 80);
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    Some((if neg { -v } else { v }, i))
}

/// C `atoi`: the leading integer, 0 for garbage; saturates instead of overflowing.
fn atoi(s: &[u8]) -> i32 {
    match c_int_prefix(s) {
        Some((v, _)) => v.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32,
        None => 0,
    }
}

/// C `atof` restricted to decimal notation: the longest leading decimal number, 0.0 otherwise.
fn atof(s: &[u8]) -> f64 {
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let start = i;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        i += 1;
    }
    let mut digits = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < s.len() && s[i] == b'.' {
        i += 1;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return 0.0;
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        let mut k = i + 1;
        if k < s.len() && (s[k] == b'+' || s[k] == b'-') {
            k += 1;
        }
        if k < s.len() && s[k].is_ascii_digit() {
            while k < s.len() && s[k].is_ascii_digit() {
                k += 1;
            }
            i = k;
        }
    }
    std::str::from_utf8(&s[start..i])
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// `parse_memory_limit` (common/server-functions.c): `sscanf("%lld%c")` plus a k/m/g/t suffix.
fn parse_memory_limit(s: &[u8]) -> Result<u64, String> {
    let Some((v, used)) = c_int_prefix(s) else {
        return Err(
            "Parsing limit for option fail: expected a number with an optional k/m/g/t suffix"
                .into(),
        );
    };
    let shift = match s.get(used).map(|c| c | 0x20) {
        None | Some(b' ') => 0,
        Some(b'k') => 10,
        Some(b'm') => 20,
        Some(b'g') => 30,
        Some(b't') => 40,
        Some(_) => {
            let ch = String::from_utf8_lossy(&s[used..])
                .chars()
                .next()
                .unwrap_or('?');
            return Err(format!(
                "Parsing limit fail. Unknown suffix '{ch}' (expected k, m, g or t)"
            ));
        }
    };
    if v < 0 {
        return Err("Parsing limit fail. The size must not be negative".into());
    }
    match u64::try_from(v << shift) {
        Ok(n) if n <= i64::MAX as u64 => Ok(n),
        _ => Err("Parsing limit fail. The size is too large".into()),
    }
}

/// `-p`: `sscanf("%d:%d")` with the C checks plus an upper bound of 65535.
fn parse_port_spec(s: &[u8]) -> Option<PortSpec> {
    let (start, used) = c_int_prefix(s)?;
    let end = if s.get(used) == Some(&b':') {
        c_int_prefix(&s[used + 1..]).map(|(e, _)| e)
    } else {
        None
    };
    match end {
        None => (1..=65535)
            .contains(&start)
            .then_some(PortSpec::Single(start as u16)),
        Some(end) => (start > 0 && start <= end && end <= 65535)
            .then_some(PortSpec::Range(start as u16, end as u16)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HexErr {
    Len(usize),
    Digit(char),
}

impl HexErr {
    fn message(self, letter: char, value: &str) -> String {
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
fn parse_hex16(s: &[u8]) -> Result<[u8; 16], HexErr> {
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

fn bad_seconds(opt: &str, v: &str) -> String {
    format!("invalid {opt} value '{v}': expected a number of seconds greater than 0")
}

/// A strictly parsed, finite, positive number of seconds.
fn parse_seconds(v: &str) -> Option<Duration> {
    let x: f64 = v.trim().parse().ok()?;
    if !(x.is_finite() && x > 0.0) {
        return None;
    }
    let d = Duration::try_from_secs_f64(x).ok()?;
    (!d.is_zero()).then_some(d)
}

fn parse_dc_override(v: &str) -> Result<DcOverride, String> {
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
fn validate_host(h: &str) -> Result<(), String> {
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

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests;
