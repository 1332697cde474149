//! What every report has: when and where it was made, a timestamped step log (also printed
//! to stderr as it happens), latency summaries, and writing the JSON file.
//!
//! What it is not: a logging framework. Lines go to stderr; the JSON goes where `--report`
//! says.

use std::path::Path;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use time::OffsetDateTime;

use crate::procs::ms;

/// `generated_at`, `os`, `arch` (and the kernel) of a report.
#[derive(Clone, Debug, Serialize)]
pub struct Meta {
    pub generated_at: String,
    pub os: &'static str,
    pub arch: &'static str,
    pub kernel: String,
    pub host_cpus: usize,
    /// `net.ipv4.tcp_migrate_req` of the network namespace: with 1, connections waiting in
    /// the accept queue of a closing SO_REUSEPORT listener move to another listener of the
    /// group instead of being reset (zero-downtime overlap needs it).
    pub tcp_migrate_req: Option<u8>,
    pub tool: String,
}

impl Meta {
    pub fn now() -> Meta {
        Meta {
            generated_at: rfc3339(SystemTime::now()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            host_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tcp_migrate_req: tcp_migrate_req(),
            tool: format!("mtproxy-ctl {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// `net.ipv4.tcp_migrate_req` here, if the kernel has it.
pub fn tcp_migrate_req() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// UTC, millisecond precision: `2026-11-26T21:50:01.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.millisecond()
    )
}

/// A command's exit status from its report: 1 when something failed to run, 2 when a guard
/// was breached, else 0.
pub fn exit_code(errors: &[String], breaches: &[String]) -> i32 {
    if !errors.is_empty() {
        1
    } else if !breaches.is_empty() {
        2
    } else {
        0
    }
}

/// The last line of a text report (after a blank line): `ERROR` when something failed to
/// run, else `passed` when no guard was breached, else `breach` and the breached guards.
pub fn verdict_line(errors: &[String], breaches: &[String], passed: &str, breach: &str) -> String {
    let verdict = if !errors.is_empty() {
        "ERROR".to_string()
    } else if breaches.is_empty() {
        passed.to_string()
    } else {
        format!("{breach}: {}", breaches.join(", "))
    };
    format!("\nverdict: {verdict}\n")
}

/// One logged step.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    pub at: String,
    /// Milliseconds since the command started.
    pub elapsed_ms: f64,
    pub step: String,
    pub ok: bool,
    pub detail: String,
}

/// The step log of a command: every entry is printed to stderr at once and kept.
#[derive(Clone, Debug)]
pub struct Timeline {
    t0: Instant,
    pub entries: Vec<LogEntry>,
    pub quiet: bool,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline {
            t0: Instant::now(),
            entries: Vec::new(),
            quiet: false,
        }
    }

    pub fn log(&mut self, step: &str, ok: bool, detail: impl Into<String>) {
        let e = LogEntry {
            at: rfc3339(SystemTime::now()),
            elapsed_ms: ms(self.t0.elapsed()),
            step: step.to_string(),
            ok,
            detail: detail.into(),
        };
        if !self.quiet {
            eprintln!(
                "{} {:>9.1} ms  {:<14} {}{}",
                e.at,
                e.elapsed_ms,
                e.step,
                if ok { "" } else { "FAILED: " },
                e.detail
            );
        }
        self.entries.push(e);
    }
}

/// p50/p95/p99 (nearest rank), mean, max and count of a latency sample, milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(sample: &[f64]) -> Summary {
        if sample.is_empty() {
            return Summary::default();
        }
        let mut v = sample.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| {
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            round3(v[i.clamp(1, v.len()) - 1])
        };
        Summary {
            n: v.len(),
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            mean: round3(v.iter().sum::<f64>() / v.len() as f64),
            max: round3(v[v.len() - 1]),
        }
    }
}

/// Three decimals, for readable JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Writes `value` as pretty JSON to `path` (creating parent directories).
pub fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn verdicts() {
        let (none, two) = (Vec::new(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(
            verdict_line(&none, &none, "ok", "BREACH"),
            "\nverdict: ok\n"
        );
        assert_eq!(
            verdict_line(&none, &two, "ok", "BREACH"),
            "\nverdict: BREACH: a, b\n"
        );
        assert_eq!(
            verdict_line(&two, &two, "ok", "BREACH"),
            "\nverdict: ERROR\n"
        );
        let codes = [
            exit_code(&none, &none),
            exit_code(&none, &two),
            exit_code(&two, &none),
        ];
        assert_eq!(codes, [0, 2, 1]);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&v);
        assert_eq!(
            (s.p50, s.p95, s.p99, s.max, s.n),
            (50.0, 95.0, 99.0, 100.0, 100)
        );
        assert_eq!(Summary::of(&[7.0]).p99, 7.0);
        assert_eq!(Summary::of(&[]).n, 0);
    }
}
