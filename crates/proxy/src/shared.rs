//! The state every session of the process reads: the secrets, where sessions go after the
//! handshake ([`Upstream`]), the fake-TLS set-up, the timeouts and caps, the counters, and
//! the `--max-accept-rate` bucket shared by all listening sockets.
//!
//! Built once by `startup` and handed to every accept loop behind an `Arc`; nothing here
//! changes after start-up except through interior locks (the TLS reply shape, the replay
//! cache, the accept bucket, the ME pool). It is not the per-connection state: that lives in
//! `session`, `direct` and `middle::session`.

use crate::{dc, faketls, middle, stats};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    pub accept_rate: Option<AcceptRate>,
    /// `-W` (C's default 131072 without `-D`, none with it).
    pub window_clamp: Option<u32>,
    pub stats: Arc<stats::Stats>,
}

/// `--max-accept-rate`: a token bucket over all listening sockets of the process.
#[derive(Debug)]
pub struct AcceptRate {
    per_sec: f64,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl AcceptRate {
    pub fn new(per_sec: u32) -> Self {
        AcceptRate {
            per_sec: per_sec as f64,
            state: std::sync::Mutex::new((per_sec as f64, Instant::now())),
        }
    }

    /// Takes one token; false when the rate is exceeded.
    pub fn allow(&self) -> bool {
        let mut st = self.state.lock().expect("rate");
        let now = Instant::now();
        let refill = now.duration_since(st.1).as_secs_f64() * self.per_sec;
        st.0 = (st.0 + refill).min(self.per_sec.max(1.0));
        st.1 = now;
        if st.0 >= 1.0 {
            st.0 -= 1.0;
            true
        } else {
            false
        }
    }
}
