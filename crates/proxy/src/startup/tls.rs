//! Start-up of fake-TLS mode (`-D`): where masked connections go (resolved once, like C),
//! the site's profile (probed before serving; C blocks start-up for up to 5 s the same
//! way) and its hourly refresh.
//!
//! The handshake and record layer are `faketls`; the probe itself is `tls_probe`.

use crate::fatal::Fatal;
use crate::shared::Shared;
use crate::stats::Stats;
use crate::{cli, faketls, tls_probe};
use mtproto_wire::tls::RecordSizer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Where masked connections go: `--mask-host`, else each `-D` domain's addresses (resolved
/// once at start-up, like C; a name that does not resolve leaves its connections closed).
pub(super) fn mask_targets(opts: &cli::Options) -> Result<faketls::MaskTargets, Fatal> {
    use std::net::ToSocketAddrs;
    if let Some((host, port)) = &opts.mask_host {
        let addrs: Vec<SocketAddr> = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(|e| Fatal::log(2, format!("--mask-host {host}:{port}: cannot resolve: {e}")))?
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

/// Builds the fake-TLS state, probing the site for its reply shape first.
pub(super) async fn setup(
    opts: &cli::Options,
    mask: faketls::MaskTargets,
    stats: &Stats,
) -> faketls::TlsConf {
    let profile =
        tls_probe::learn(mask.for_domain(0, 443).first().copied(), &opts.domains[0]).await;
    stats.dpi.set_site(&profile);
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
        profile: std::sync::RwLock::new(Arc::new(profile)),
        mask,
        records: if opts.tls_fixed_records {
            RecordSizer::fixed(mtproto_wire::tls::MAX_RECORD_PAYLOAD)
        } else {
            RecordSizer::dynamic()
        },
        split_hello: opts.tls_split_hello,
    }
}

/// In fake-TLS mode, starts re-probing the first domain's site in the background.
pub(super) fn spawn_refresh(shared: &Arc<Shared>) {
    if let (Some(_), Some(target)) = (&shared.tls, probe_target(shared)) {
        tokio::spawn(refresh_shape(shared.clone(), target));
    }
}

fn probe_target(shared: &Shared) -> Option<(SocketAddr, String)> {
    let tls = shared.tls.as_ref()?;
    let addr = *tls.mask.for_domain(0, 443).first()?;
    Some((addr, tls.domains[0].clone()))
}

/// Re-probes the site every hour or so (jittered) and keeps the last good profile (a site
/// that could not be mirrored at start-up is tried again too).
async fn refresh_shape(shared: Arc<Shared>, (addr, sni): (SocketAddr, String)) {
    loop {
        let jitter = rand::random::<u64>() % 600;
        tokio::time::sleep(Duration::from_secs(3600 + jitter)).await;
        let Some(tls) = &shared.tls else { return };
        match tls_probe::probe(addr, &sni).await {
            Ok(p) => {
                shared.stats.dpi.set_site(&p);
                *tls.profile.write().expect("profile") = Arc::new(p);
            }
            Err(e) => warn!("refreshing the reply shape of {sni}: {e}; keeping the previous one"),
        }
    }
}
