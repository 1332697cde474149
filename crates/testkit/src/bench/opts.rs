//! The bench's command line.

use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: mtproxy-bench [options]

Scenarios (each against every target; default all):
  --scenario LIST          throughput,idle,handshakes,latency,pipelined,latency-loaded
                           or all (repeatable)
  --quick                  CI smoke sizes (< 30 s), verified streams

Targets:
  --proxy-bin PATH         our proxy (default: mtproto-proxy next to this binary, else
                           target/release/mtproto-proxy)
  --proxy-arg ARG          extra argument for our proxy (repeatable), e.g. --no-fast-mode
  --modes LIST             which of our modes: direct,me,tls,me-tls (default all four;
                           tls is fake TLS to the DC, me-tls fake TLS to the middle-end)
  --no-floor               skip the plain TCP relay floor
  --floor-buf BYTES        the floor's buffer per direction [65536, the proxy's]
  --reference-bin PATH     a reference binary in ME mode (the C mtproto-proxy)
  --reference-args TPL     its arguments (default: see below)
  --peer NAME:MODE:TPL     a peer started with `sh -c 'exec TPL'`, MODE direct|me|tls
                           (repeatable). Placeholders: {port} {secret} {dc} {dc_port}
                           {me_config} {aes_pwd} {site} {maxconn} {workdir}

Sizes (defaults in brackets; --quick in parentheses):
  --conns LIST             throughput connection counts [1,16,256] (16)
  --duration SECS          throughput measurement per point [3] (0.8)
  --warmup SECS            before each measurement [0.5] (0.2)
  --packet BYTES           throughput frame payload [65536]
  --window BYTES           throughput: most bytes a connection has sent and not yet got
                           back (a client with requests in flight), shared out so
                           all connections keep at most 32 MiB in flight [1048576]
  --verify                 throughput: the DC re-encrypts its echo and the client checks
                           every frame (costs the fakes two AES passes per byte) [off] (on)
  --idle-sessions N        idle sessions [10000] (300); fewer when they would not fit in
                           the descriptor limit (2 per session in direct mode)
  --idle-concurrency N     sessions being set up at once [256]
  --idle-window SECS       how long the sessions sit idle before RSS is read (idle CPU
                           is measured over it) [2] (0.5)
  --hs-duration SECS       handshake scenario length [3] (0.8)
  --hs-parallel N          handshake loops in parallel [64] (16)
  --lat-rounds N           latency round trips [2000] (200)
  --lat-packet BYTES       latency frame payload [128]
  --pipe-conns LIST        pipelined: connection counts [1,16] (16)
  --pipe-frames N          pipelined: frames of --packet bytes sent before waiting for
                           their echoes (dual-run's window) [4]
  --maxconn N              the proxies' -c [max(20000, 2 × idle sessions + 1000), at
                           most the descriptor limit − 32]
  --load-threads N         load generator runtime threads [2]
  --fake-threads N         fake DC/ME runtime threads [2]

Output:
  --json PATH              also write the results as JSON

Default reference arguments (ME mode, as the C proxy takes them):
  -u root --address 127.0.0.1 -H {port} -S {secret} --aes-pwd {aes_pwd} -c {maxconn} -M 0 {me_config}
";

pub const DEFAULT_REFERENCE_ARGS: &str =
    "-u root --address 127.0.0.1 -H {port} -S {secret} --aes-pwd {aes_pwd} -c {maxconn} -M 0 {me_config}";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Throughput,
    Idle,
    Handshakes,
    Latency,
    /// Windows of a few large frames, each window's echoes awaited before the next: the
    /// shape a transfer waits on Nagle in (and dual-run's).
    Pipelined,
    /// Latency of a small frame sent right behind a large one (data in flight).
    LatencyLoaded,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Throughput,
        Scenario::Idle,
        Scenario::Handshakes,
        Scenario::Latency,
        Scenario::Pipelined,
        Scenario::LatencyLoaded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Idle => "idle",
            Scenario::Handshakes => "handshakes",
            Scenario::Latency => "latency",
            Scenario::Pipelined => "pipelined",
            Scenario::LatencyLoaded => "latency-loaded",
        }
    }
}

/// What the proxy talks to and how clients reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// obfuscated2 clients, a DC dialled per session.
    Direct,
    /// obfuscated2 clients, sessions multiplexed to a middle-end.
    Me,
    /// Fake-TLS clients, direct to the DC.
    Tls,
    /// Fake-TLS clients, sessions multiplexed to a middle-end (C's only fake-TLS mode).
    MeTls,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Me => "me",
            Mode::Tls => "tls",
            Mode::MeTls => "me-tls",
        }
    }

    /// Sessions go to a middle-end.
    pub fn is_me(self) -> bool {
        matches!(self, Mode::Me | Mode::MeTls)
    }

    /// Clients speak fake TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Mode::Tls | Mode::MeTls)
    }

    fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "direct" => Ok(Mode::Direct),
            "me" => Ok(Mode::Me),
            "tls" => Ok(Mode::Tls),
            "me-tls" => Ok(Mode::MeTls),
            _ => Err(format!("unknown mode {s:?} (direct, me, tls, me-tls)")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub name: String,
    pub mode: Mode,
    pub template: String,
}

#[derive(Clone, Debug)]
pub struct Opts {
    pub scenarios: Vec<Scenario>,
    pub quick: bool,
    pub proxy_bin: PathBuf,
    pub proxy_args: Vec<String>,
    pub modes: Vec<Mode>,
    pub floor: bool,
    pub floor_buf: usize,
    pub reference_bin: Option<PathBuf>,
    pub reference_args: String,
    pub peers: Vec<PeerSpec>,
    pub conns: Vec<usize>,
    pub duration: Duration,
    pub warmup: Duration,
    pub packet: usize,
    pub verify: bool,
    pub window: usize,
    pub idle_sessions: usize,
    pub idle_concurrency: usize,
    pub idle_settle: Duration,
    pub idle_window: Duration,
    pub hs_duration: Duration,
    pub hs_parallel: usize,
    pub lat_rounds: usize,
    pub lat_packet: usize,
    pub pipe_conns: Vec<usize>,
    pub pipe_frames: usize,
    pub maxconn: Option<u32>,
    /// The descriptor limit in force (set by the bench after raising it; children inherit
    /// it). Not a flag.
    pub nofile: u64,
    pub load_threads: usize,
    pub fake_threads: usize,
    pub json: Option<PathBuf>,
}

fn default_proxy_bin() -> PathBuf {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("mtproto-proxy")));
    match sibling {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("target/release/mtproto-proxy"),
    }
}

impl Opts {
    fn defaults(quick: bool) -> Opts {
        let secs = Duration::from_secs_f64;
        Opts {
            scenarios: Scenario::ALL.to_vec(),
            quick,
            proxy_bin: default_proxy_bin(),
            proxy_args: Vec::new(),
            modes: vec![Mode::Direct, Mode::Me, Mode::Tls, Mode::MeTls],
            floor: true,
            floor_buf: super::floor::DEFAULT_BUF,
            reference_bin: None,
            reference_args: DEFAULT_REFERENCE_ARGS.to_string(),
            peers: Vec::new(),
            conns: if quick { vec![16] } else { vec![1, 16, 256] },
            duration: secs(if quick { 0.8 } else { 3.0 }),
            warmup: secs(if quick { 0.2 } else { 0.5 }),
            packet: 64 * 1024,
            verify: quick,
            window: 1 << 20,
            idle_sessions: if quick { 300 } else { 10_000 },
            idle_concurrency: 256,
            idle_settle: secs(if quick { 0.3 } else { 1.0 }),
            idle_window: secs(if quick { 0.5 } else { 2.0 }),
            hs_duration: secs(if quick { 0.8 } else { 3.0 }),
            hs_parallel: if quick { 16 } else { 64 },
            lat_rounds: if quick { 200 } else { 2000 },
            lat_packet: 128,
            pipe_conns: if quick { vec![16] } else { vec![1, 16] },
            pipe_frames: 4,
            maxconn: None,
            nofile: u64::MAX,
            load_threads: 2,
            fake_threads: 2,
            json: None,
        }
    }

    /// The proxies' `-c`: room for the idle sessions, within the descriptor limit (C's
    /// proxy refuses to start when it cannot get `-c` + 16 descriptors).
    pub fn maxconn(&self) -> u32 {
        self.maxconn.unwrap_or_else(|| {
            let want = (2 * self.idle_sessions as u64 + 1000).max(20_000);
            want.min(self.nofile.saturating_sub(32)) as u32
        })
    }

    /// Idle sessions that fit in the descriptor limit for a target whose sessions each
    /// hold `per_session` descriptors in one process (the target's client and upstream
    /// sockets, or the bench's client and echo-DC sockets).
    pub fn idle_sessions_fitting(&self, per_session: u64) -> usize {
        let fit = self.nofile.saturating_sub(300) / per_session.max(1);
        self.idle_sessions.min(fit.try_into().unwrap_or(usize::MAX))
    }

    /// Parses the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Opts, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = Opts::defaults(quick);
        let mut scenarios: Vec<Scenario> = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            match a.as_str() {
                "--quick" => {}
                "-h" | "--help" => return Err(USAGE.to_string()),
                "--scenario" => {
                    for s in val()?.split(',') {
                        match s {
                            "all" => scenarios.extend(Scenario::ALL),
                            _ => scenarios.push(
                                *Scenario::ALL
                                    .iter()
                                    .find(|x| x.name() == s)
                                    .ok_or_else(|| format!("unknown scenario {s:?}"))?,
                            ),
                        }
                    }
                }
                "--proxy-bin" => o.proxy_bin = PathBuf::from(val()?),
                "--proxy-arg" => o.proxy_args.push(val()?),
                "--modes" => {
                    o.modes = val()?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(Mode::parse)
                        .collect::<Result<_, _>>()?
                }
                "--no-floor" => o.floor = false,
                "--floor-buf" => o.floor_buf = num_arg(a, &val()?)?,
                "--reference-bin" => o.reference_bin = Some(PathBuf::from(val()?)),
                "--reference-args" => o.reference_args = val()?,
                "--peer" => {
                    let v = val()?;
                    let mut parts = v.splitn(3, ':');
                    let (Some(name), Some(mode), Some(tpl)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(format!("--peer {v:?}: want NAME:MODE:TEMPLATE"));
                    };
                    o.peers.push(PeerSpec {
                        name: name.to_string(),
                        mode: Mode::parse(mode)?,
                        template: tpl.to_string(),
                    });
                }
                "--conns" => o.conns = counts(a, &val()?)?,
                "--pipe-conns" => o.pipe_conns = counts(a, &val()?)?,
                "--pipe-frames" => o.pipe_frames = num_arg::<usize>(a, &val()?)?.max(1),
                "--duration" => o.duration = secs_arg(a, &val()?)?,
                "--warmup" => o.warmup = secs_arg(a, &val()?)?,
                "--packet" => o.packet = num_arg(a, &val()?)?,
                "--verify" => o.verify = true,
                "--window" => o.window = num_arg::<usize>(a, &val()?)?.max(1),
                "--idle-sessions" => o.idle_sessions = num_arg(a, &val()?)?,
                "--idle-concurrency" => o.idle_concurrency = num_arg::<usize>(a, &val()?)?.max(1),
                "--idle-window" => o.idle_window = secs_arg(a, &val()?)?,
                "--hs-duration" => o.hs_duration = secs_arg(a, &val()?)?,
                "--hs-parallel" => o.hs_parallel = num_arg::<usize>(a, &val()?)?.max(1),
                "--lat-rounds" => o.lat_rounds = num_arg::<usize>(a, &val()?)?.max(1),
                "--lat-packet" => o.lat_packet = num_arg(a, &val()?)?,
                "--maxconn" => o.maxconn = Some(num_arg(a, &val()?)?),
                "--load-threads" => o.load_threads = num_arg::<usize>(a, &val()?)?.max(1),
                "--fake-threads" => o.fake_threads = num_arg::<usize>(a, &val()?)?.max(1),
                "--json" => o.json = Some(PathBuf::from(val()?)),
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            }
        }
        if !scenarios.is_empty() {
            scenarios.dedup();
            o.scenarios = Scenario::ALL
                .into_iter()
                .filter(|s| scenarios.contains(s))
                .collect();
        }
        Ok(o)
    }
}

fn secs_arg(flag: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{flag} {v}: want seconds"))
}

fn counts(flag: &str, v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|s| s.parse::<usize>().map_err(|e| format!("{flag} {s}: {e}")))
        .collect()
}

fn num_arg<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse::<T>()
        .map_err(|_| format!("{flag} {v}: want a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Opts, String> {
        Opts::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn quick_sets_small_sizes_and_flags_still_win() {
        let o = parse(&["--idle-sessions", "50", "--quick"]).unwrap();
        assert!(o.quick && o.verify);
        assert_eq!(o.idle_sessions, 50);
        assert_eq!(o.conns, vec![16]);
    }

    #[test]
    fn scenarios_and_peers() {
        let o = parse(&[
            "--scenario",
            "latency,idle",
            "--peer",
            "tp:direct:/bin/x -H {port} --dc {dc}",
        ])
        .unwrap();
        assert_eq!(o.scenarios, vec![Scenario::Idle, Scenario::Latency]);
        assert_eq!(o.peers[0].mode, Mode::Direct);
        assert_eq!(o.peers[0].template, "/bin/x -H {port} --dc {dc}");
        assert!(parse(&["--scenario", "nope"]).is_err());
        assert!(parse(&["--peer", "x:y"]).is_err());
        let mut o = parse(&[]).unwrap();
        assert_eq!(o.maxconn(), 21_000);
        o.nofile = 20_000;
        assert_eq!(o.maxconn(), 19_968);
        assert_eq!(o.idle_sessions_fitting(2), 9_850);
        assert_eq!(o.idle_sessions_fitting(1), 10_000);
    }

    #[test]
    fn pipelined_and_fake_tls_over_me() {
        let o = parse(&[
            "--scenario",
            "latency-loaded,pipelined",
            "--modes",
            "me-tls,direct",
            "--pipe-conns",
            "1,8",
            "--pipe-frames",
            "2",
        ])
        .unwrap();
        assert_eq!(
            o.scenarios,
            vec![Scenario::Pipelined, Scenario::LatencyLoaded]
        );
        assert_eq!(o.modes, vec![Mode::MeTls, Mode::Direct]);
        assert!(Mode::MeTls.is_me() && Mode::MeTls.is_tls());
        assert!(!Mode::Tls.is_me() && !Mode::Me.is_tls());
        assert_eq!((o.pipe_conns.clone(), o.pipe_frames), (vec![1, 8], 2));
        let d = parse(&[]).unwrap();
        assert_eq!(d.modes.len(), 4);
        assert_eq!((d.pipe_conns, d.pipe_frames), (vec![1, 16], 4));
    }
}
