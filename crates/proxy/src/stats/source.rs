//! Where `/stats` and `/metrics` get a fresh snapshot: the counters of [`Stats`] plus what
//! they say about the config in force ([`ConfigMeta`], changed by a successful reload),
//! over a base view of what never changes while the process runs.
//!
//! The view itself is `view`, its rendering `c_text` and `prometheus`; this module only fills it.

use super::counters::Stats;
use super::view::{SecretView, StatsView, ViewFn};
use crate::config;
use std::sync::{Arc, RwLock};

/// What `/stats` says about the config in force (changes on a successful reload).
#[derive(Debug, Default, Clone)]
pub struct ConfigMeta {
    filename: String,
    loaded_at: u64,
    size: u64,
    md5: String,
    clusters: u64,
    aes_pwd_md5: String,
}

impl ConfigMeta {
    /// Direct mode: no config, no proxy secret.
    pub fn none() -> ConfigMeta {
        ConfigMeta {
            aes_pwd_md5: "none".into(),
            ..ConfigMeta::default()
        }
    }

    pub fn from_loaded(
        l: &config::LoadedConfig,
        secret: Option<&config::ProxySecret>,
    ) -> ConfigMeta {
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

/// Fills a view from counters and the config metadata.
pub fn fill_view(v: &mut StatsView, stats: &Stats, meta: &RwLock<ConfigMeta>) {
    v.fill_counters(stats);
    v.fill_process();
    let m = meta.read().expect("meta").clone();
    v.config_filename = m.filename;
    v.config_loaded_at = m.loaded_at;
    v.config_size = m.size;
    v.config_md5 = m.md5;
    v.config_auth_clusters = m.clusters;
    v.aes_pwd_md5 = m.aes_pwd_md5;
    v.me_targets = Stats::get(&stats.me_targets);
    v.me_declared_targets = v.me_targets;
    v.me_ready_targets = Stats::get(&stats.me_ready_targets);
    v.me_ready_connections = Stats::get(&stats.me_ready_connections);
    v.outbound_connections = v.me_ready_connections;
    v.secrets = stats
        .per_secret
        .iter()
        .map(|t| {
            let (ips, keys) = t.counts();
            SecretView {
                active_ips: ips,
                active_auth_keys: keys,
            }
        })
        .collect();
}

/// The function `/stats` and `/metrics` call for a fresh snapshot of this process.
pub fn view_fn(base: StatsView, stats: Arc<Stats>, meta: Arc<RwLock<ConfigMeta>>) -> ViewFn {
    Arc::new(move || {
        let mut v = base.clone();
        fill_view(&mut v, &stats, &meta);
        v
    })
}
