//! The two files of middle-proxy mode: `proxy-multi.conf` and the proxy secret
//! (`--aes-pwd`). Read at start-up before any port is bound, and again on SIGHUP, where
//! both are applied only if both are good (C ignores SIGHUP; spec §2.5 recommends this).
//!
//! Parsing them is `config`; applying a config to the connections is `middle::pool`.

use crate::config;
use crate::fatal::Fatal;
use crate::middle::Middle;
use crate::stats::{ConfigMeta, Stats};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tracing::{error, info, warn};

/// Where ME mode's files are.
pub struct MeFiles {
    pub config_path: PathBuf,
    pub aes_pwd: PathBuf,
    /// `--aes-pwd` was given (a missing file is then an error, not a warning).
    pub aes_pwd_explicit: bool,
}

impl MeFiles {
    pub fn load_config(&self) -> Result<config::LoadedConfig, config::LoadError> {
        config::load_file(&self.config_path)
    }

    /// The proxy secret; `None` (with a warning) when the default file is absent.
    pub fn load_secret(&self) -> Result<Option<config::ProxySecret>, Fatal> {
        match config::aes_pwd::load_detailed(&self.aes_pwd, self.aes_pwd_explicit)? {
            config::SecretFile::Loaded(s) => Ok(Some(s)),
            config::SecretFile::Absent { reason } => {
                warn!("{reason}: no proxy secret, no middle-end will accept this proxy (give --aes-pwd)");
                Ok(None)
            }
        }
    }
}

/// SIGHUP in ME mode: re-reads and validates the config and the proxy secret; applies both
/// only if both are good, otherwise keeps what runs.
pub fn reload(files: &MeFiles, mid: &Middle, stats: &Stats, meta: &RwLock<ConfigMeta>) {
    let loaded = match files.load_config() {
        Ok(l) => l,
        Err(e) => {
            Stats::inc(&stats.reloads_failed);
            for l in &e.lines {
                error!("{l}");
            }
            error!("configuration reload failed: keeping the configuration in force");
            return;
        }
    };
    let secret = match files.load_secret() {
        Ok(s) => s,
        Err(e) => {
            Stats::inc(&stats.reloads_failed);
            error!("{e}");
            error!("proxy secret reload failed: keeping the configuration in force");
            return;
        }
    };
    *meta.write().expect("meta") = ConfigMeta::from_loaded(&loaded, secret.as_ref());
    mid.pool.set_secret(secret.map(|s| Arc::new(s.bytes)));
    mid.pool.apply(loaded.config.clone());
    Stats::inc(&stats.reloads_ok);
    info!("{}", loaded.success_message());
}
