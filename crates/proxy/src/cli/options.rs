//! What the command line decides: [`Options`] with C's defaults, the limits C enforces,
//! and [`CliExit`], what to print and the exit code when parsing stops.
//!
//! Reading argv into them is `getopt` and `apply`; this module holds no parsing.

use std::fmt;
use std::net::Ipv4Addr;
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
    /// The `-p` value as given when it was above 65535 (`stats_port` holds it modulo
    /// 65536, as C uses it); start-up logs the port actually used.
    pub stats_port_wrapped: Option<u32>,
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
    /// Extension `--tls-fixed-records`: fake-TLS records of 16 KiB from the start (no
    /// dynamic record sizing).
    pub tls_fixed_records: bool,
    /// Extension `--tls-split-hello`: the fake-TLS reply in several TCP segments.
    pub tls_split_hello: bool,
    /// Extension `--client-mss N`: TCP_MAXSEG on the client ports.
    pub client_mss: Option<u32>,
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
            stats_port_wrapped: None,
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
            tls_fixed_records: false,
            tls_split_hello: false,
            client_mss: None,
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
