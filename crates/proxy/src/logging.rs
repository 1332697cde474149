//! Log lines in the C proxy's shape: `[pid][YYYY-MM-DD hh:mm:ss.uuuuuu local] message`, on
//! stderr, so existing log scrapers and operators' habits keep working.
//!
//! Verbosity follows C's `-v` counts: 0 prints start-up lines, warnings and errors; 1 adds
//! connection-level events (debug); 2 and more add per-packet traces. `MTPROXY_LOG` (an
//! `EnvFilter` directive such as `mtproxy=trace`) overrides it for debugging.
//! No secret or key is ever passed to a log macro.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

struct CStyle {
    pid: u32,
}

/// The local wall clock as C's kprintf prints it.
pub fn c_timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as libc::time_t;
    // SAFETY: localtime_r writes into the zeroed struct we own; the pointer arguments are valid.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06} local",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        now.subsec_micros()
    )
}

impl<S, N> FormatEvent<S, N> for CStyle
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(w, "[{}][{}] ", self.pid, c_timestamp())?;
        match *event.metadata().level() {
            Level::ERROR => w.write_str("ERROR: ")?,
            Level::WARN => w.write_str("WARNING: ")?,
            _ => {}
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(verbosity: u32) {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("MTPROXY_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("mtproxy={level},mtproto_wire={level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(CStyle {
            pid: std::process::id(),
        })
        .try_init();
}
