//! Start-up: from parsed options to a running proxy, in named phases that run in this
//! order, as C's do:
//!
//! 0. logging to stderr (as C: the `-l` file waits for `-d`, phase 7, or SIGUSR1);
//! 1. [`check_options`]: combinations C refuses, options without effect;
//! 2. [`me::load`] (ME mode): the config and the proxy secret, read before any port is bound;
//! 3. [`client_secrets`], [`dc_overrides`]: what sessions need that can fail early;
//! 4. [`bind::bind`]: the client ports (or those inherited from a `-M` master), the stats
//!    port, the window clamp; the fake-TLS mask targets ([`tls::mask_targets`]); then the
//!    fd limit and `--nice` ([`limits`]);
//! 5. [`print_links`]: the mode line and the proxy links on stdout;
//! 6. the runtime; a `-M` master goes to [`crate::master`] from here;
//! 7. privileges dropped, `-d` applied ([`process::server_init_logs`]: stdio to the
//!    `-l` file, as C's `server_init`), then [`build_shared`] (ME pool or DC table, fake TLS) and
//!    [`crate::main_loop`] until SIGTERM/SIGINT.
//!
//! What each phase does with its subject lives beside that subject (`listener`, `links`,
//! `process`, `middle`, `faketls`); this module only orders the phases and passes their
//! results on. It is not the main loop (`main_loop`) nor the master (`master`).

mod bind;
mod me;
mod tls;

use crate::cli::{self, version};
use crate::clock::unix_now;
use crate::fatal::Fatal;
use crate::me_files::MeFiles;
use crate::shared::{AcceptRate, Shared, Upstream};
use crate::stats::ConfigMeta;
use crate::{dc, links, logging, main_loop, master, middle, process, stats};
use crate::{faketls, workers};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::{error, info, warn};

/// The resolved `--dc` overrides.
type DcOverrides = std::collections::HashMap<i32, Vec<std::net::SocketAddr>>;

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

/// Runs the proxy until SIGTERM/SIGINT; returns the process exit code.
pub fn run(opts: cli::Options) -> ExitCode {
    // Before `-d` or SIGUSR1 can point stdout at the log: the links never go there.
    links::keep_stdout();
    // Everything goes to stderr until `-d` takes effect (after the privilege drop) or the
    // first SIGUSR1, as C: `-l` is not opened before (spec backend-ops §4.5).
    logging::init(opts.verbosity);
    info!("Invoking engine {}", version());
    match start(opts) {
        Ok(code) => code,
        Err(fatal) => {
            fatal.report();
            fatal.exit_code()
        }
    }
}

fn start(opts: cli::Options) -> Result<ExitCode, Fatal> {
    let worker = workers::worker_env();
    let me_mode = check_options(&opts)?;
    let me = if me_mode {
        Some(me::load(&opts)?)
    } else {
        None
    };
    let secrets = client_secrets(&opts, me_mode);
    let overrides = dc_overrides(&opts)?;
    let ports = bind::bind(&opts, worker)?;
    let mask = if opts.domains.is_empty() {
        None
    } else {
        Some(tls::mask_targets(&opts)?)
    };
    let max_clients = limits(&opts, me_mode);
    let stats = Arc::new(stats::Stats::with_secrets(secrets.len()));
    print_links(&opts, &ports, &secrets, me.as_ref());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal::log(1, format!("cannot start the runtime: {e}")))?;
    let pid = me::process_id(&opts);
    let meta = Arc::new(RwLock::new(match &me {
        Some(m) => ConfigMeta::from_loaded(&m.loaded, m.secret.as_ref()),
        None => ConfigMeta::none(),
    }));
    let base_view = base_view(&opts, &pid, &ports);
    if opts.workers > 0 && ports.control.is_none() {
        let n = secrets.len();
        let code = rt.block_on(master::run(
            opts,
            ports.clients,
            ports.stats,
            meta,
            base_view,
            n,
        ));
        rt.shutdown_timeout(Duration::from_millis(100));
        return Ok(code);
    }
    // Everything privileged is done: ports bound, config and secrets read.
    process::drop_privileges(opts.user.as_deref())?;
    process::server_init_logs(&opts);
    let plan = Plan {
        secrets,
        overrides,
        me,
        mask,
        max_clients,
        stats,
        pid,
        meta,
        base_view,
    };
    let code = rt.block_on(serve(opts, ports, plan));
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(code)
}

/// Phase 1: refuses what C refuses and says which given options do nothing here.
/// Returns whether the proxy runs in middle-proxy (ME) mode.
fn check_options(opts: &cli::Options) -> Result<bool, Fatal> {
    if !opts.domains.is_empty() && opts.secrets.is_empty() {
        return Err(Fatal::log(
            2,
            "You must specify at least one mtproto-secret to use when using TLS-transport",
        ));
    }
    if !opts.domains.is_empty() && opts.workers > 0 {
        warn!("It is recommended to not use workers with TLS-transport");
    }
    let me_mode = opts.config_file.is_some() && !opts.direct;
    if opts.proxy_tag.is_some() && !me_mode {
        return Err(Fatal::log(
            2,
            "-P (proxy tag) needs middle-proxy mode: give a proxy-multi.conf and no --direct; \
             direct connections to DCs cannot carry an ad tag",
        ));
    }
    if let (Some(given), Some(cli::PortSpec::Single(p))) =
        (opts.stats_port_wrapped, opts.stats_port)
    {
        warn!("-p {given} is above 65535: using port {p} ({given} modulo 65536, as C does)");
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
    Ok(me_mode)
}

/// Phase 3: the client secrets; direct mode without any gets one generated for this run.
fn client_secrets(opts: &cli::Options, me_mode: bool) -> Vec<[u8; 16]> {
    let mut secrets = opts.secrets.clone();
    if secrets.is_empty() && !me_mode {
        let mut s = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut s);
        warn!("no secret given (-S or --mtproto-secret-file): generated one for this run; pass -S to keep it across restarts");
        secrets.push(s);
    }
    secrets
}

/// Phase 3: the `--dc` overrides, resolved once.
fn dc_overrides(opts: &cli::Options) -> Result<DcOverrides, Fatal> {
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
    dc::resolve_overrides(&overrides)
}

/// Phase 4, after binding: raises the fd limit for `-c`, applies `--nice`; returns how many
/// client connections are served at once.
fn limits(opts: &cli::Options, me_mode: bool) -> u64 {
    // A client's socket and its upstream's (a DC, or a masked connection's site); an
    // ME-mode client shares the pool's connections.
    let per = if me_mode && opts.domains.is_empty() {
        1
    } else {
        2
    };
    let connections = process::raise_fd_limit(u64::from(opts.connections), per);
    let max_clients = opts
        .max_special_connections
        .map_or(connections, |c| u64::from(c).min(connections).max(1));
    if let Some(n) = opts.nice {
        process::set_nice(n);
    }
    max_clients
}

/// Phase 5: the mode line and, for each client port, the proxy links (not in a worker: its
/// master printed them).
fn print_links(
    opts: &cli::Options,
    ports: &bind::Ports,
    secrets: &[[u8; 16]],
    me: Option<&me::MeLoaded>,
) {
    let host = links::public_host(
        opts.public_host.as_deref(),
        opts.nat_info.first().map(|(_, g)| *g),
        opts.address,
    );
    if links::is_local(&host) {
        warn!("links use {host}: pass --public-host with the address clients reach");
    }
    match me {
        Some(m) => info!(
            "mode: middle-proxy via {} ({} cluster(s), {} secret(s), proxy tag {})",
            m.loaded.path.display(),
            m.loaded.config.auth_clusters(),
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
    for l in ports.clients.iter().filter(|_| ports.control.is_none()) {
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
            links::print(&lines);
        }
        if !secrets.is_empty() {
            info!(
                "proxy links for {} secret(s) printed on stdout",
                secrets.len()
            );
        }
    }
}

/// Phase 6: what `/stats` reports that never changes while the process runs.
fn base_view(
    opts: &cli::Options,
    pid: &mtproto_wire::rpc::ProcessId,
    ports: &bind::Ports,
) -> stats::StatsView {
    stats::StatsView {
        start_time: unix_now(),
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
        listening_sockets: ports.clients.len() as u64 + u64::from(ports.stats.is_some()),
        window_clamp: opts.window_clamp.unwrap_or(stats::DEFAULT_WINDOW_CLAMP),
        ..stats::StatsView::default()
    }
}

/// What the serving process carries from the earlier phases into the runtime.
struct Plan {
    secrets: Vec<[u8; 16]>,
    overrides: DcOverrides,
    me: Option<me::MeLoaded>,
    mask: Option<faketls::MaskTargets>,
    max_clients: u64,
    stats: Arc<stats::Stats>,
    pid: mtproto_wire::rpc::ProcessId,
    meta: Arc<RwLock<ConfigMeta>>,
    base_view: stats::StatsView,
}

/// Phase 7, inside the runtime: the worker's control socket, the shared state, the stats
/// port, the TLS shape refresher, then the main loop.
async fn serve(opts: cli::Options, ports: bind::Ports, plan: Plan) -> ExitCode {
    if let Some((id, ctl)) = ports.control {
        let st = plan.stats.clone();
        tokio::spawn(async move {
            workers::serve_control(ctl, st).await;
            error!("worker {id}: the master process is gone, exiting");
            std::process::exit(1);
        });
    }
    let meta = plan.meta.clone();
    let base_view = plan.base_view.clone();
    let (shared, reload) = build_shared(&opts, ports.window_clamp, plan).await;
    if let Some(l) = ports.stats {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                let view = stats::view_fn(base_view, shared.stats.clone(), meta.clone());
                tokio::spawn(stats::serve(l, view, false));
            }
            Err(e) => {
                error!("cannot register the stats listener: {e}");
                return ExitCode::from(1);
            }
        }
    }
    tls::spawn_refresh(&shared);
    let reloader = reload.map(|(files, mid)| main_loop::Reloader { files, mid, meta });
    main_loop::run(ports.clients, shared, reloader, &opts).await
}

/// Phase 7: the upstream (ME pool or DC table), fake TLS, and the state every session reads.
async fn build_shared(
    opts: &cli::Options,
    window_clamp: Option<u32>,
    plan: Plan,
) -> (Arc<Shared>, Option<(MeFiles, Arc<middle::Middle>)>) {
    let (upstream, reload) = match plan.me {
        Some(m) => {
            let mid = me::start_pool(opts, m.loaded, m.secret, plan.pid, &plan.stats);
            (Upstream::Middle(mid.clone()), Some((m.files, mid)))
        }
        None => (
            Upstream::Direct(dc::DcTable::new(plan.overrides, opts.ipv6)),
            None,
        ),
    };
    let tls = match plan.mask {
        None => None,
        Some(mask) => Some(tls::setup(opts, mask, &plan.stats).await),
    };
    let shared = Arc::new(Shared {
        secrets: plan.secrets,
        upstream,
        tls,
        handshake_timeout: opts.handshake_timeout,
        idle_timeout: opts.idle_timeout,
        connect_timeout: Duration::from_secs(10),
        fast_mode: !opts.no_fast_mode,
        max_clients: plan.max_clients,
        accept_rate: (opts.max_accept_rate > 0).then(|| AcceptRate::new(opts.max_accept_rate)),
        window_clamp,
        stats: plan.stats,
    });
    (shared, reload)
}
