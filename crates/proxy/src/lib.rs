//! mtproxy: a Telegram MTProto proxy, drop-in for the C `mtproto-proxy`.
//!
//! The path of one connection: [`listener`] accepts → [`session`] reads the obfuscated2
//! header and finds the secret → [`direct`] dials the DC and sends our own header →
//! [`relay`] moves bytes both ways until either side ends. [`cli`] is C's command line,
//! [`dc`] the DC table, [`links`] the start-up links, [`logging`] C-style log lines.

pub mod bufpool;
pub mod cli;
pub mod config;
pub mod dc;
pub mod direct;
pub mod faketls;
pub mod http_stats;
pub mod links;
pub mod listener;
pub mod logging;
pub mod mask;
pub mod middle;
pub mod process;
pub mod relay;
pub mod session;
pub mod stats;
pub mod tls_probe;
pub mod workers;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// Where sessions go after the client handshake.
#[derive(Debug)]
pub enum Upstream {
    /// A connection per session straight to a Telegram DC.
    Direct(dc::DcTable),
    /// Multiplexed over the ME pool.
    Middle(Arc<middle::Middle>),
}

/// What every session of the process reads.
#[derive(Debug)]
pub struct Shared {
    /// Client secrets in command-line order (empty: no-secret mode).
    pub secrets: Vec<[u8; 16]>,
    pub upstream: Upstream,
    /// Fake-TLS mode (`-D`): the listening ports accept TLS-wrapped clients only.
    pub tls: Option<faketls::TlsConf>,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Direct mode's download direction is passed through without crypto.
    pub fast_mode: bool,
    /// Client connections served at once (`-C`, else `-c`, within the fd limit).
    pub max_clients: u64,
    /// `--max-accept-rate`.
    pub accept_rate: Option<listener::AcceptRate>,
    /// `-W` (C's default 131072 without `-D`, none with it).
    pub window_clamp: Option<u32>,
    pub stats: Arc<stats::Stats>,
}

/// Options accepted for compatibility whose feature is not in this build yet, and
/// options that C itself ignores. Logged at start-up so nothing is dropped silently.
const NOT_YET: &[&str] = &[];
const NO_EFFECT_IN_C: &[&str] = &[
    "crc32c",
    "force-dh",
    "cpu-threads",
    "io-threads",
    "multithread",
    "tcp-cpu-threads",
    "tcp-iothreads",
    // No DH and no RPC server port here: C's effects do not apply.
    "allow-skip-dh",
    "max-dh-accept-rate",
];
/// Options that only matter in middle-proxy mode.
const ME_ONLY: &[&str] = &["aes-pwd", "nat-info", "ping-interval"];

/// The version line printed at start-up and in `--help`.
pub fn version() -> String {
    format!(
        "mtproxy-rs {} (Rust drop-in for mtproxy-0.02)",
        env!("CARGO_PKG_VERSION")
    )
}

/// Runs the proxy until SIGTERM/SIGINT; returns the process exit code.
pub fn run(opts: cli::Options) -> ExitCode {
    if opts.daemonize {
        process::daemonize(opts.log_file.as_deref());
    } else if let Some(path) = &opts.log_file {
        if let Err(e) = process::reopen_log(Some(path)) {
            eprintln!("cannot open log file {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    logging::init(opts.verbosity);
    info!("Invoking engine {}", version());
    match start(opts) {
        Ok(code) => code,
        Err((code, msg)) => {
            if !msg.is_empty() {
                error!("{msg}");
            }
            ExitCode::from(code)
        }
    }
}

type Fatal = (u8, String);

/// Everything ME mode needs at start-up and on reload.
struct MeSetup {
    config_path: std::path::PathBuf,
    aes_pwd: std::path::PathBuf,
    aes_pwd_explicit: bool,
}

impl MeSetup {
    fn load_config(&self) -> Result<config::LoadedConfig, config::LoadError> {
        config::load_file(&self.config_path)
    }

    fn load_secret(&self) -> Result<Option<config::ProxySecret>, String> {
        match config::aes_pwd::load_detailed(&self.aes_pwd, self.aes_pwd_explicit)? {
            config::SecretFile::Loaded(s) => Ok(Some(s)),
            config::SecretFile::Absent { reason } => {
                warn!("{reason}: no proxy secret, no middle-end will accept this proxy (give --aes-pwd)");
                Ok(None)
            }
        }
    }
}

/// Our process id for ME handshakes (spec backend-ops §1.7): `--address` if it is in 10/8,
/// else a 10/8 interface address, else 0 (each connection then uses its local IPv4); the
/// `-p` port or −1; the OS pid masked to 16 bits (C asserts pid < 65536 and aborts on modern
/// systems); the start time.
fn process_id(opts: &cli::Options) -> mtproto_wire::rpc::ProcessId {
    use std::net::Ipv4Addr;
    let ten = |a: &Ipv4Addr| a.octets()[0] == 10;
    let ip = opts
        .address
        .filter(ten)
        .or_else(|| {
            nix::ifaddrs::getifaddrs().ok().and_then(|mut it| {
                it.find_map(|i| {
                    i.address
                        .and_then(|a| a.as_sockaddr_in().map(|s| s.ip()))
                        .filter(ten)
                })
            })
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let port = match opts.stats_port {
        Some(cli::PortSpec::Single(p)) | Some(cli::PortSpec::Range(p, _)) => p,
        None => 0xffff,
    };
    let utime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i32);
    mtproto_wire::rpc::ProcessId::new(ip, port, std::process::id(), utime)
}

/// What `/stats` says about the config in force (changes on a successful reload).
#[derive(Debug, Default, Clone)]
struct ConfigMeta {
    filename: String,
    loaded_at: u64,
    size: u64,
    md5: String,
    clusters: u64,
    aes_pwd_md5: String,
}

impl ConfigMeta {
    fn from_loaded(l: &config::LoadedConfig, secret: Option<&config::ProxySecret>) -> ConfigMeta {
        ConfigMeta {
            filename: l.path.display().to_string(),
            loaded_at: l
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            size: l.size as u64,
            md5: l.md5_hex.clone(),
            clusters: l.config.auth_clusters() as u64,
            aes_pwd_md5: secret.map_or_else(|| "none".to_string(), |s| s.md5_hex()),
        }
    }
}

/// Binds the `-p` stats port when `--http-stats` is given: 127.0.0.1 only, as C. A range
/// `start:end` takes the first port that binds.
fn bind_stats_port(opts: &cli::Options) -> Result<Option<std::net::TcpListener>, Fatal> {
    if !opts.http_stats {
        return Ok(None);
    }
    let (first, last, range) = match opts.stats_port {
        None => {
            return Err((
                1,
                "fatal: port isn't defined (--http-stats needs -p <port>)".into(),
            ))
        }
        Some(cli::PortSpec::Single(p)) => (p, p, false),
        Some(cli::PortSpec::Range(a, b)) => (a, b, true),
    };
    let mut last_err = None;
    for port in first..=last {
        match listener::bind(http_stats::bind_addr(port), opts.backlog, opts.reuse_port) {
            Ok(l) => return Ok(Some(l)),
            Err(e) => last_err = Some(e),
        }
    }
    let e = last_err.map_or_else(String::new, |e| e.to_string());
    if range {
        Err((
            2,
            format!("cannot open a stats port in {first}:{last}: {e}"),
        ))
    } else {
        Err((1, format!("cannot open server socket at port {first}: {e}")))
    }
}

/// Fills a view from counters and the config metadata.
fn fill_view(
    v: &mut http_stats::StatsView,
    stats: &stats::Stats,
    meta: &std::sync::RwLock<ConfigMeta>,
) {
    use stats::Stats as S;
    v.fill_counters(stats);
    v.fill_process();
    let m = meta.read().expect("meta").clone();
    v.config_filename = m.filename;
    v.config_loaded_at = m.loaded_at;
    v.config_size = m.size;
    v.config_md5 = m.md5;
    v.config_auth_clusters = m.clusters;
    v.aes_pwd_md5 = m.aes_pwd_md5;
    v.me_targets = S::get(&stats.me_targets);
    v.me_declared_targets = v.me_targets;
    v.me_ready_targets = S::get(&stats.me_ready_targets);
    v.me_ready_connections = S::get(&stats.me_ready_connections);
    v.outbound_connections = v.me_ready_connections;
    v.secrets = stats
        .per_secret
        .iter()
        .map(|t| {
            let (ips, keys) = t.counts();
            http_stats::SecretView {
                active_ips: ips,
                active_auth_keys: keys,
            }
        })
        .collect();
}

/// The function `/stats` and `/metrics` call for a fresh snapshot.
fn stats_view_fn(
    base: http_stats::StatsView,
    stats: Arc<stats::Stats>,
    meta: Arc<std::sync::RwLock<ConfigMeta>>,
) -> http_stats::ViewFn {
    Arc::new(move || {
        let mut v = base.clone();
        fill_view(&mut v, &stats, &meta);
        v
    })
}

/// Keeps the ME pool gauges in [`stats::Stats`] current (they travel to the master too).
async fn pool_gauges(pool: Arc<middle::pool::Pool>, stats: Arc<stats::Stats>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let (t, rt, rc) = pool.counts();
        stats.me_targets.store(t as u64, Relaxed);
        stats.me_ready_targets.store(rt as u64, Relaxed);
        stats.me_ready_connections.store(rc as u64, Relaxed);
    }
}

/// The master of `-M N` workers: accepts nothing itself; serves `/stats` with the workers'
/// counters summed, forwards signals, replaces dead workers, and on SIGTERM/SIGINT stops
/// them and waits (drain timeout plus a second) before killing stragglers.
async fn master_main(
    opts: cli::Options,
    listeners: Vec<std::net::TcpListener>,
    stats_listener: Option<std::net::TcpListener>,
    meta: Arc<std::sync::RwLock<ConfigMeta>>,
    base_view: http_stats::StatsView,
    secrets: usize,
) -> ExitCode {
    use nix::sys::signal::Signal;
    use tokio::signal::unix::{signal, SignalKind};
    let master = match workers::start(opts.workers, &listeners) {
        Ok(m) => m,
        Err(e) => {
            error!("cannot start workers: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = process::drop_privileges(opts.user.as_deref()) {
        eprintln!("{e}");
        master.stop();
        master.signal_all(Signal::SIGTERM);
        return ExitCode::from(1);
    }
    {
        let m = master.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let sum = m.collect().await;
                *m.summed.lock().expect("summed") = sum;
            }
        });
    }
    if let Some(l) = stats_listener {
        let m = master.clone();
        let view: http_stats::ViewFn = Arc::new(move || {
            let total = stats::Stats::with_secrets(secrets);
            total.absorb(&m.summed.lock().expect("summed"));
            let mut v = base_view.clone();
            fill_view(&mut v, &total, &meta);
            v
        });
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                tokio::spawn(http_stats::serve(l, view, false));
            }
            Err(e) => error!("cannot register the stats listener: {e}"),
        }
    }
    // The master never accepts, but keeps the listening sockets open for its whole life:
    // workers started (and replaced) later inherit them from here.
    let _listeners = listeners;
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        error!("cannot install signal handlers");
        return ExitCode::from(1);
    };
    info!("main loop (master of {} workers)", opts.workers);
    let name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                info!("received signal 01 (SIGHUP): forwarding to the workers");
                master.signal_all(Signal::SIGHUP);
            }
            _ = usr1.recv() => {
                if let Err(e) = process::reopen_log(opts.log_file.as_deref()) {
                    warn!("cannot reopen the log: {e}");
                }
                master.signal_all(Signal::SIGUSR1);
            }
        }
    };
    master.stop();
    master.signal_all(Signal::SIGTERM);
    let end = tokio::time::Instant::now() + opts.drain_timeout + Duration::from_secs(1);
    while !master.pids().is_empty() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = master.pids();
    if !left.is_empty() {
        warn!(
            "WARNING: {} children unfinished --> they are now killed",
            left.len()
        );
        master.signal_all(Signal::SIGKILL);
    }
    info!("Terminated by {name}.");
    ExitCode::SUCCESS
}

fn start(opts: cli::Options) -> Result<ExitCode, Fatal> {
    let worker = workers::worker_env();
    if !opts.domains.is_empty() && opts.secrets.is_empty() {
        return Err((
            2,
            "You must specify at least one mtproto-secret to use when using TLS-transport".into(),
        ));
    }
    if !opts.domains.is_empty() && opts.workers > 0 {
        warn!("It is recommended to not use workers with TLS-transport");
    }
    let me_mode = opts.config_file.is_some() && !opts.direct;
    if opts.proxy_tag.is_some() && !me_mode {
        return Err((
            2,
            "-P (proxy tag) needs middle-proxy mode: give a proxy-multi.conf and no --direct; \
             direct connections to DCs cannot carry an ad tag"
                .into(),
        ));
    }
    for name in &opts.given {
        if NOT_YET.contains(name) {
            warn!("option --{name} is accepted but not yet supported by this build; ignored");
        } else if NO_EFFECT_IN_C.contains(name) {
            info!("option --{name} has no effect (as in C)");
        } else if ME_ONLY.contains(name) && !me_mode {
            warn!("option --{name} only matters in middle-proxy mode; ignored in direct mode");
        }
    }
    // ME mode: the config and the proxy secret are checked before any port is bound, as C.
    let me = if me_mode {
        let setup = MeSetup {
            config_path: opts.config_file.clone().expect("me_mode"),
            aes_pwd: opts
                .aes_pwd
                .clone()
                .unwrap_or_else(|| config::aes_pwd::DEFAULT_FILE.into()),
            aes_pwd_explicit: opts.aes_pwd.is_some(),
        };
        let loaded = setup.load_config().map_err(|e| {
            for l in &e.lines {
                eprintln!("{l}");
            }
            (e.code, String::new())
        })?;
        let secret = setup.load_secret().map_err(|e| {
            eprintln!("{e}");
            (1, String::new())
        })?;
        info!("{}", loaded.success_message());
        Some((setup, loaded, secret))
    } else {
        None
    };

    let mut secrets = opts.secrets.clone();
    if secrets.is_empty() && !me_mode {
        let mut s = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut s);
        warn!("no secret given (-S or --mtproto-secret-file): generated one for this run; pass -S to keep it across restarts");
        secrets.push(s);
    }
    let overrides: Vec<(i32, dc::Target)> = opts
        .dc_overrides
        .iter()
        .map(|o| {
            (
                o.dc,
                dc::Target {
                    host: o.host.clone(),
                    port: o.port,
                },
            )
        })
        .collect();
    let overrides = dc::resolve_overrides(&overrides).map_err(|e| (2, e))?;

    // Bind every client port before anything else can fail late (C binds them in pre_init).
    // A worker inherits them from its master instead.
    let (listeners, control) = match worker {
        Some(w) => (w.listeners, Some((w.id, w.control))),
        None => {
            let mut listeners = Vec::new();
            for &port in &opts.ports {
                let addr = listener::bind_addr(port, opts.ipv6, opts.address);
                let l = listener::bind(addr, opts.backlog, opts.reuse_port).map_err(|e| {
                    (
                        1,
                        format!("cannot open http/tcp server socket at port {port}: {e}"),
                    )
                })?;
                // Keepalive on the listening socket: Linux copies it to every accepted
                // socket, which saves a setsockopt per connection (the window clamp is
                // set per connection all the same: inherited, it would be cut to the
                // initial window).
                let _ = socket2::SockRef::from(&l).set_keepalive(true);
                listeners.push(l);
            }
            (listeners, None)
        }
    };
    if listeners.is_empty() {
        warn!("no client port given (-H): the proxy serves no clients");
    }
    let stats_listener = if opts.disable_tcp || control.is_some() {
        None
    } else {
        bind_stats_port(&opts)?
    };
    let mask = if opts.domains.is_empty() {
        None
    } else {
        Some(mask_targets(&opts)?)
    };
    // Window clamp on the listening sockets (C: 131072 by default without -D).
    let window_clamp = opts
        .window_clamp
        .or(if opts.domains.is_empty() {
            Some(131_072)
        } else {
            None
        })
        .filter(|c| *c > 0);
    if let Some(c) = window_clamp {
        for l in &listeners {
            listener::set_window_clamp(l, c);
        }
    }
    let connections = process::raise_fd_limit(u64::from(opts.connections));
    let max_clients = opts
        .max_special_connections
        .map_or(connections, |c| u64::from(c).min(connections).max(1));
    if let Some(n) = opts.nice {
        process::set_nice(n);
    }
    let stats = Arc::new(stats::Stats::with_secrets(secrets.len()));

    let host = links::public_host(
        opts.public_host.as_deref(),
        opts.nat_info.first().map(|(_, g)| *g),
        opts.address,
    );
    if links::is_local(&host) {
        warn!("links use {host}: pass --public-host with the address clients reach");
    }
    match &me {
        Some((_, loaded, _)) => info!(
            "mode: middle-proxy via {} ({} cluster(s), {} secret(s), proxy tag {})",
            loaded.path.display(),
            loaded.config.auth_clusters(),
            secrets.len(),
            if opts.proxy_tag.is_some() {
                "set"
            } else {
                "not set"
            }
        ),
        None => info!("mode: direct to Telegram DCs ({} secret(s))", secrets.len()),
    }
    if secrets.is_empty() {
        warn!("no secret given: clients are accepted in no-secret mode (as C)");
    }
    for l in listeners.iter().filter(|_| control.is_none()) {
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        info!(
            "listening on {}",
            l.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        );
        for (i, key) in secrets.iter().enumerate() {
            let lines = if opts.domains.is_empty() {
                links::lines(&host, port, key, i + 1)
            } else {
                opts.domains
                    .iter()
                    .flat_map(|d| links::tls_lines(&host, port, key, d, i + 1))
                    .collect()
            };
            // Links carry the secret: they go to stdout, never into a log line.
            for line in lines {
                println!("{line}");
            }
        }
        if !secrets.is_empty() {
            info!(
                "proxy links for {} secret(s) printed on stdout",
                secrets.len()
            );
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| (1, format!("cannot start the runtime: {e}")))?;
    let pid = process_id(&opts);
    let meta = Arc::new(std::sync::RwLock::new(match &me {
        Some((_, loaded, secret)) => ConfigMeta::from_loaded(loaded, secret.as_ref()),
        None => ConfigMeta {
            aes_pwd_md5: "none".into(),
            ..ConfigMeta::default()
        },
    }));
    let base_view = http_stats::StatsView {
        start_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        pid_ip: std::net::Ipv4Addr::from(pid.ip),
        pid_port: pid.port,
        version: version(),
        workers: opts.workers,
        max_connections: u64::from(opts.connections),
        max_special_connections: u64::from(
            opts.max_special_connections.unwrap_or(opts.connections),
        ),
        max_accept_rate: u64::from(opts.max_accept_rate),
        allow_skip_dh: opts.allow_skip_dh,
        proxy_tag_set: opts.proxy_tag.is_some(),
        listening_sockets: listeners.len() as u64 + u64::from(stats_listener.is_some()),
        window_clamp: opts
            .window_clamp
            .unwrap_or(http_stats::DEFAULT_WINDOW_CLAMP),
        ..http_stats::StatsView::default()
    };
    if opts.workers > 0 && control.is_none() {
        let n = secrets.len();
        let code = rt.block_on(master_main(
            opts,
            listeners,
            stats_listener,
            meta,
            base_view,
            n,
        ));
        rt.shutdown_timeout(Duration::from_millis(100));
        return Ok(code);
    }
    // Everything privileged is done: ports bound, config and secrets read.
    process::drop_privileges(opts.user.as_deref()).map_err(|e| {
        eprintln!("{e}");
        (1, String::new())
    })?;
    let code = rt.block_on(async move {
        if let Some((id, ctl)) = control {
            let st = stats.clone();
            tokio::spawn(async move {
                workers::serve_control(ctl, st).await;
                error!("worker {id}: the master process is gone, exiting");
                std::process::exit(1);
            });
        }
        let (upstream, reload) = match me {
            Some((setup, loaded, secret)) => {
                let ident = middle::conn::Ident {
                    pid,
                    secret: secret.map(|s| Arc::new(s.bytes)),
                    nat: opts.nat_info.clone(),
                    bind_v4: opts.address,
                    writers: middle::writer::Writers::new(Duration::from_secs_f64(
                        opts.ping_interval,
                    )),
                    queue_budget: opts.msg_buffers_size,
                };
                let pool = middle::pool::Pool::new(loaded.config.clone(), ident, stats.clone());
                pool.apply(loaded.config);
                tokio::spawn(pool_gauges(pool.clone(), stats.clone()));
                let mid = Arc::new(middle::Middle {
                    pool,
                    proxy_tag: opts.proxy_tag,
                    nat: opts.nat_info.clone(),
                });
                (Upstream::Middle(mid.clone()), Some((setup, mid)))
            }
            None => (
                Upstream::Direct(dc::DcTable::new(overrides, opts.ipv6)),
                None,
            ),
        };
        let tls = match mask {
            None => None,
            Some(mask) => Some(tls_setup(&opts, mask).await),
        };
        let shared = Arc::new(Shared {
            secrets,
            upstream,
            tls,
            handshake_timeout: opts.handshake_timeout,
            idle_timeout: opts.idle_timeout,
            connect_timeout: Duration::from_secs(10),
            fast_mode: !opts.no_fast_mode,
            max_clients,
            accept_rate: (opts.max_accept_rate > 0)
                .then(|| listener::AcceptRate::new(opts.max_accept_rate)),
            window_clamp,
            stats,
        });
        if let Some(l) = stats_listener {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    let view = stats_view_fn(base_view, shared.stats.clone(), meta.clone());
                    tokio::spawn(http_stats::serve(l, view, false));
                }
                Err(e) => {
                    error!("cannot register the stats listener: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        if let (Some(_), Some(target)) = (&shared.tls, probe_target(&shared)) {
            tokio::spawn(refresh_shape(shared.clone(), target));
        }
        serve(listeners, shared, reload.map(|(s, m)| (s, m, meta)), &opts).await
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(code)
}

/// Where masked connections go: `--mask-host`, else each `-D` domain's addresses (resolved
/// once at start-up, like C; a name that does not resolve leaves its connections closed).
fn mask_targets(opts: &cli::Options) -> Result<faketls::MaskTargets, Fatal> {
    use std::net::ToSocketAddrs;
    if let Some((host, port)) = &opts.mask_host {
        let addrs: Vec<std::net::SocketAddr> = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(|e| (2, format!("--mask-host {host}:{port}: cannot resolve: {e}")))?
            .collect();
        return Ok(faketls::MaskTargets {
            explicit: Some(addrs),
            domains: Vec::new(),
        });
    }
    let domains = opts
        .domains
        .iter()
        .map(|d| match (d.as_str(), 443).to_socket_addrs() {
            Ok(a) => a.map(|a| a.ip()).take(1).collect(),
            Err(e) => {
                warn!("cannot resolve TLS domain {d}: {e}; connections to be masked to it will be closed");
                Vec::new()
            }
        })
        .collect();
    Ok(faketls::MaskTargets {
        explicit: None,
        domains,
    })
}

fn probe_target(shared: &Shared) -> Option<(std::net::SocketAddr, String)> {
    let tls = shared.tls.as_ref()?;
    let addr = *tls.mask.for_domain(0, 443).first()?;
    Some((addr, tls.domains[0].clone()))
}

/// Builds the fake-TLS state, probing the site for its reply shape first (C blocks start-up
/// for up to 5 s the same way).
async fn tls_setup(opts: &cli::Options, mask: faketls::MaskTargets) -> faketls::TlsConf {
    let shape = match mask.for_domain(0, 443).first() {
        Some(addr) => match tls_probe::probe(*addr, &opts.domains[0]).await {
            Ok(shape) => {
                info!(
                    "TLS domain {} ({addr}): first record {} bytes{}, {:?}",
                    opts.domains[0],
                    shape.encrypted_size,
                    if shape.randomised {
                        " (randomised)"
                    } else {
                        ""
                    },
                    shape.order
                );
                shape
            }
            Err(e) => {
                warn!(
                    "cannot learn the reply shape of {} at {addr}: {e}; using defaults",
                    opts.domains[0]
                );
                faketls::fallback_shape()
            }
        },
        None => faketls::fallback_shape(),
    };
    faketls::TlsConf {
        domains: opts.domains.clone(),
        policy: if opts.tls_require_sni {
            mtproto_wire::tls::SniPolicy::RequireKnown
        } else {
            mtproto_wire::tls::SniPolicy::AllowMissing
        },
        cache: std::sync::Mutex::new(mtproto_wire::tls::ReplayCache::new(
            mtproto_wire::tls::ReplayCache::DEFAULT_MAX_ENTRIES,
        )),
        shape: std::sync::RwLock::new(shape),
        mask,
        record_max: mtproto_wire::tls::MAX_RECORD_PAYLOAD,
    }
}

/// Re-probes the site every hour or so (jittered) and keeps the last good shape.
async fn refresh_shape(shared: Arc<Shared>, (addr, sni): (std::net::SocketAddr, String)) {
    loop {
        let jitter = rand::random::<u64>() % 600;
        tokio::time::sleep(Duration::from_secs(3600 + jitter)).await;
        let Some(tls) = &shared.tls else { return };
        match tls_probe::probe(addr, &sni).await {
            Ok(shape) => *tls.shape.write().expect("shape") = shape,
            Err(e) => warn!("refreshing the reply shape of {sni}: {e}; keeping the previous one"),
        }
    }
}

/// SIGHUP in ME mode: re-read and validate the config and the proxy secret; apply both only
/// if both are good, otherwise keep what runs (C ignores SIGHUP; spec §2.5 recommends this).
fn reload(
    setup: &MeSetup,
    mid: &middle::Middle,
    stats: &stats::Stats,
    meta: &std::sync::RwLock<ConfigMeta>,
) {
    let loaded = match setup.load_config() {
        Ok(l) => l,
        Err(e) => {
            stats::Stats::inc(&stats.reloads_failed);
            for l in &e.lines {
                error!("{l}");
            }
            error!("configuration reload failed: keeping the configuration in force");
            return;
        }
    };
    let secret = match setup.load_secret() {
        Ok(s) => s,
        Err(e) => {
            stats::Stats::inc(&stats.reloads_failed);
            error!("{e}");
            error!("proxy secret reload failed: keeping the configuration in force");
            return;
        }
    };
    *meta.write().expect("meta") = ConfigMeta::from_loaded(&loaded, secret.as_ref());
    mid.pool.set_secret(secret.map(|s| Arc::new(s.bytes)));
    mid.pool.apply(loaded.config.clone());
    stats::Stats::inc(&stats.reloads_ok);
    info!("{}", loaded.success_message());
}

async fn serve(
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    reloader: Option<(
        MeSetup,
        Arc<middle::Middle>,
        Arc<std::sync::RwLock<ConfigMeta>>,
    )>,
    opts: &cli::Options,
) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let mut tasks = Vec::new();
    for l in listeners {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => tasks.push(tokio::spawn(listener::accept_loop(l, shared.clone()))),
            Err(e) => {
                error!("cannot register listener: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        error!("cannot install signal handlers");
        return ExitCode::from(1);
    };
    info!("main loop");
    let name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => match &reloader {
                Some((setup, mid, meta)) => {
                    info!("received signal 01 (SIGHUP): reloading");
                    reload(setup, mid, &shared.stats, meta);
                }
                None => info!("received signal 01 (SIGHUP): nothing to reload in direct mode"),
            },
            _ = usr1.recv() => {
                match process::reopen_log(opts.log_file.as_deref()) {
                    Ok(()) => info!("received signal 10 (SIGUSR1): logs reopened"),
                    Err(e) => warn!("received signal 10 (SIGUSR1): cannot reopen the log: {e}"),
                }
            }
        }
    };
    // Stop accepting (the listening sockets close with their tasks), then let open sessions
    // finish for up to the drain timeout; a second signal ends the process at once (C).
    for t in &tasks {
        t.abort();
    }
    // Wait until the accept tasks are gone: their listening sockets are closed then.
    for t in tasks {
        let _ = t.await;
    }
    let open = shared
        .stats
        .active
        .load(std::sync::atomic::Ordering::Relaxed);
    info!(
        "{name} handled: stopped accepting; draining {open} session(s) for up to {:?}",
        opts.drain_timeout
    );
    let drained = async {
        while shared
            .stats
            .active
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(opts.drain_timeout, drained) => {}
        _ = term.recv() => { warn!("SIGTERM handled immediately."); return ExitCode::from(1); }
        _ = int.recv() => { warn!("SIGINT handled immediately."); return ExitCode::from(1); }
    }
    let left = shared
        .stats
        .active
        .load(std::sync::atomic::Ordering::Relaxed);
    if left > 0 {
        warn!("drain timeout: closing {left} session(s)");
    }
    info!("Terminated by {name}.");
    ExitCode::SUCCESS
}
