//! The option table: every option C's `mtproto-proxy` accepts (in C's usage order), the
//! fork's and ours, with its short letter, whether it takes a value and its help line, and
//! getopt_long's lookup in it (exact long name, else a unique prefix of a C option).
//!
//! It is also the one list of which options take a value that other tools read
//! ([`find_long`], [`find_short`]: `mtproxy-ctl` reads proxy command lines with it).
//! What each option does is `apply`.

/// Whether an option takes a value, as getopt sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// No value.
    No,
    /// A value: inline (`-p8888`, `--port=8888`) or the next argument.
    Required,
    /// A value only inline (`-v3`, `--verbosity=3`).
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Id {
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
    TlsFixedRecords,
    TlsSplitHello,
    ClientMss,
    DrainTimeout,
    ReusePort,
}

pub(super) struct OptDef {
    pub(super) id: Id,
    pub(super) long: &'static str,
    pub(super) short: Option<char>,
    pub(super) arg: Arg,
    /// Our extension (not in the C): exact long name only, never abbreviated.
    pub(super) ext: bool,
    pub(super) help: &'static str,
}

pub(super) const fn c(
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

pub(super) const fn ext(id: Id, long: &'static str, arg: Arg, help: &'static str) -> OptDef {
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
pub(super) const OPTIONS: &[OptDef] = &[
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
    ext(
        Id::TlsFixedRecords,
        "tls-fixed-records",
        Arg::No,
        "send fake-TLS records of 16 KiB from the start, without dynamic record sizing (default: about one TCP segment first, growing during a burst)",
    ),
    ext(
        Id::TlsSplitHello,
        "tls-split-hello",
        Arg::No,
        "send the fake-TLS ServerHello in several TCP segments (against middleboxes that read only the first one; costs 3 extra packets per handshake)",
    ),
    ext(
        Id::ClientMss,
        "client-mss",
        Arg::Required,
        "<bytes> clamp the TCP MSS of accepted client connections (88..65535; smaller segments for the handshake and the whole session, more packets)",
    ),
];

pub(super) enum Lookup {
    Found(&'static OptDef),
    Unknown,
    Ambiguous(Vec<&'static str>),
}

/// getopt_long lookup: an exact match wins; otherwise a unique prefix of a C option.
pub(super) fn lookup_long(name: &str) -> Lookup {
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

pub(super) fn lookup_short(ch: u8) -> Option<&'static OptDef> {
    OPTIONS
        .iter()
        .find(|o| o.short.is_some_and(|s| s as u32 == ch as u32))
}

/// How the option is named in messages: `-X` when it has a short letter, else `--name`.
pub(super) fn flag(o: &OptDef) -> String {
    match o.short {
        Some(c) => format!("-{c}"),
        None => format!("--{}", o.long),
    }
}

/// An option as other tools see it: its names and whether it takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionName {
    pub long: &'static str,
    pub short: Option<char>,
    pub arg: Arg,
}

impl OptDef {
    fn name(&self) -> OptionName {
        OptionName {
            long: self.long,
            short: self.short,
            arg: self.arg,
        }
    }
}

/// The option with exactly this long name (no abbreviation).
pub fn find_long(long: &str) -> Option<OptionName> {
    OPTIONS.iter().find(|o| o.long == long).map(OptDef::name)
}

/// The option with this short letter.
pub fn find_short(short: char) -> Option<OptionName> {
    OPTIONS
        .iter()
        .find(|o| o.short == Some(short))
        .map(OptDef::name)
}
