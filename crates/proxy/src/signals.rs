//! The four signals a serving process and a `-M` master handle: SIGTERM and SIGINT (stop),
//! SIGHUP (reload, or forward to the workers), SIGUSR1 (reopen the log). What each one does
//! is the caller's (`main_loop`, `master`).

use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::error;

/// The installed handlers.
pub struct Signals {
    pub term: Signal,
    pub int: Signal,
    pub hup: Signal,
    pub usr1: Signal,
}

impl Signals {
    /// Installs the four handlers; `None` (logged) if the runtime cannot.
    pub fn install() -> Option<Signals> {
        let (Ok(term), Ok(int), Ok(hup), Ok(usr1)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        ) else {
            error!("cannot install signal handlers");
            return None;
        };
        Some(Signals {
            term,
            int,
            hup,
            usr1,
        })
    }
}
