//! Start-up of middle-proxy (ME) mode: phase 2 reads the config and the proxy secret before
//! any port is bound, as C; phase 7 starts the ME pool with our process id and keeps its
//! gauges in the counters.
//!
//! The files themselves and their reload are `me_files`; the pool is `middle::pool`.

use crate::clock::unix_now;
use crate::fatal::Fatal;
use crate::me_files::MeFiles;
use crate::{cli, config, middle, stats};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// The ME files and what was read from them at start-up.
pub(super) struct MeLoaded {
    pub files: MeFiles,
    pub loaded: config::LoadedConfig,
    pub secret: Option<config::ProxySecret>,
}

/// Phase 2: reads and checks the config and the proxy secret; errors are printed here.
pub(super) fn load(opts: &cli::Options) -> Result<MeLoaded, Fatal> {
    let files = MeFiles {
        config_path: opts.config_file.clone().expect("me_mode"),
        aes_pwd: opts
            .aes_pwd
            .clone()
            .unwrap_or_else(|| config::aes_pwd::DEFAULT_FILE.into()),
        aes_pwd_explicit: opts.aes_pwd.is_some(),
    };
    let loaded = files
        .load_config()
        .map_err(|e| Fatal::stderr_lines(e.code, e.lines))?;
    let secret = files.load_secret()?;
    info!("{}", loaded.success_message());
    Ok(MeLoaded {
        files,
        loaded,
        secret,
    })
}

/// Our process id for ME handshakes (spec backend-ops §1.7): `--address` if it is in 10/8,
/// else a 10/8 interface address, else 0 (each connection then uses its local IPv4); the
/// `-p` port or −1; the OS pid masked to 16 bits (C asserts pid < 65536 and aborts on modern
/// systems); the start time.
pub(super) fn process_id(opts: &cli::Options) -> mtproto_wire::rpc::ProcessId {
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
    let utime = unix_now() as i32;
    mtproto_wire::rpc::ProcessId::new(ip, port, std::process::id(), utime)
}

/// Phase 7: the ME pool on the loaded config, its gauges kept current in the background.
pub(super) fn start_pool(
    opts: &cli::Options,
    loaded: config::LoadedConfig,
    secret: Option<config::ProxySecret>,
    pid: mtproto_wire::rpc::ProcessId,
    stats: &Arc<stats::Stats>,
) -> Arc<middle::Middle> {
    let budget = middle::budget::Budget::new(opts.msg_buffers_size, stats.clone());
    let nat = Arc::new(middle::nat::Nat::new(opts.nat_info.clone()));
    let ident = middle::conn::Ident {
        pid,
        secret: secret.map(|s| Arc::new(s.bytes)),
        nat: nat.clone(),
        bind_v4: opts.address,
        writers: middle::writer::Writers::new(Duration::from_secs_f64(opts.ping_interval)),
    };
    let pool = middle::pool::Pool::new(loaded.config.clone(), ident, stats.clone());
    pool.apply(loaded.config);
    tokio::spawn(pool_gauges(pool.clone(), stats.clone()));
    Arc::new(middle::Middle {
        pool,
        budget,
        proxy_tag: opts.proxy_tag,
        nat,
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
