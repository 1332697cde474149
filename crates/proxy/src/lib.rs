//! mtproxy: a Telegram MTProto proxy, drop-in for the C `mtproto-proxy`.
//!
//! The path of one connection: [`listener`] accepts → [`session`] reads the obfuscated2
//! header and finds the secret → [`direct`] dials the DC and sends our own header →
//! [`relay`] moves bytes both ways until either side ends. [`cli`] is C's command line,
//! [`dc`] the DC table, [`links`] the start-up links, [`logging`] C-style log lines.

pub mod cli;
pub mod dc;
pub mod direct;
pub mod links;
pub mod listener;
pub mod logging;
pub mod relay;
pub mod session;
pub mod stats;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// What every session of the process reads.
#[derive(Debug)]
pub struct Shared {
    /// Client secrets in command-line order (empty: no-secret mode).
    pub secrets: Vec<[u8; 16]>,
    pub dcs: dc::DcTable,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Direct mode's download direction is passed through without crypto.
    pub fast_mode: bool,
    pub stats: stats::Stats,
}

/// Options accepted for compatibility whose feature is not in this build yet, and
/// options that C itself ignores. Logged at start-up so nothing is dropped silently.
const NOT_YET: &[&str] = &[
    "user",
    "log",
    "daemonize",
    "nice",
    "msg-buffers-size",
    "connections",
    "port",
    "aes-pwd",
    "disable-tcp",
    "allow-skip-dh",
    "max-accept-rate",
    "max-dh-accept-rate",
    "nat-info",
    "http-stats",
    "max-special-connections",
    "window-clamp",
    "slaves",
];
const NO_EFFECT_IN_C: &[&str] = &[
    "crc32c",
    "force-dh",
    "ping-interval",
    "cpu-threads",
    "io-threads",
    "multithread",
    "tcp-cpu-threads",
    "tcp-iothreads",
];

/// The version line printed at start-up and in `--help`.
pub fn version() -> String {
    format!(
        "mtproxy-rs {} (Rust drop-in for mtproxy-0.02)",
        env!("CARGO_PKG_VERSION")
    )
}

/// Runs the proxy until SIGTERM/SIGINT; returns the process exit code.
pub fn run(opts: cli::Options) -> ExitCode {
    logging::init(opts.verbosity);
    info!("Invoking engine {}", version());
    match start(opts) {
        Ok(code) => code,
        Err((code, msg)) => {
            error!("{msg}");
            ExitCode::from(code)
        }
    }
}

fn start(opts: cli::Options) -> Result<ExitCode, (u8, String)> {
    if !opts.domains.is_empty() {
        return Err((
            1,
            "fake TLS (-D) is not supported by this build yet; refusing to start rather than serve \
             plain obfuscated2 on ports meant to be TLS-only"
                .into(),
        ));
    }
    if opts.proxy_tag.is_some() && (opts.config_file.is_none() || opts.direct) {
        return Err((
            2,
            "-P (proxy tag) needs middle-proxy mode: give a proxy-multi.conf and no --direct; \
             direct connections to DCs cannot carry an ad tag"
                .into(),
        ));
    }
    if let (Some(cfg), false) = (&opts.config_file, opts.direct) {
        return Err((
            1,
            format!(
                "middle-proxy mode (config file '{}') is not supported by this build yet; \
                 pass --direct to relay straight to Telegram DCs",
                cfg.display()
            ),
        ));
    }
    for name in &opts.given {
        if NOT_YET.contains(name) {
            warn!("option --{name} is accepted but not yet supported by this build; ignored");
        } else if NO_EFFECT_IN_C.contains(name) {
            info!("option --{name} has no effect (as in C)");
        }
    }
    let mut secrets = opts.secrets.clone();
    if secrets.is_empty() {
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
    let mut listeners = Vec::new();
    for &port in &opts.ports {
        let addr = listener::bind_addr(port, opts.ipv6, opts.address);
        let l = listener::bind(addr, opts.backlog).map_err(|e| {
            (
                1,
                format!("cannot open http/tcp server socket at port {port}: {e}"),
            )
        })?;
        listeners.push(l);
    }
    if listeners.is_empty() {
        warn!("no client port given (-H): the proxy serves no clients");
    }

    let shared = Arc::new(Shared {
        secrets,
        dcs: dc::DcTable::new(overrides, opts.ipv6),
        handshake_timeout: opts.handshake_timeout,
        idle_timeout: opts.idle_timeout,
        connect_timeout: Duration::from_secs(10),
        fast_mode: !opts.no_fast_mode,
        stats: stats::Stats::default(),
    });

    let host = links::public_host(opts.public_host.as_deref(), opts.address);
    if links::is_local(&host) {
        warn!("links use {host}: pass --public-host with the address clients reach");
    }
    info!(
        "mode: direct to Telegram DCs ({} secret(s))",
        shared.secrets.len()
    );
    for l in &listeners {
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        info!(
            "listening on {}",
            l.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        );
        for (i, key) in shared.secrets.iter().enumerate() {
            for line in links::lines(&host, port, key, i + 1) {
                info!("{line}");
            }
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| (1, format!("cannot start the runtime: {e}")))?;
    let code = rt.block_on(serve(listeners, shared));
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(code)
}

async fn serve(listeners: Vec<std::net::TcpListener>, shared: Arc<Shared>) -> ExitCode {
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
            _ = hup.recv() => info!("received signal 01 (SIGHUP): nothing to reload in direct mode"),
            _ = usr1.recv() => info!("received signal 10 (SIGUSR1): log reopening is not supported yet"),
        }
    };
    for t in tasks {
        t.abort();
    }
    info!("Terminated by {name}.");
    ExitCode::SUCCESS
}
