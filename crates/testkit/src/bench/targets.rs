//! What the load goes through: the relay floor, our proxy in each mode, a reference binary
//! (ME mode), peers from command templates. Each start brings fresh fakes: an echo DC (also
//! the "straight" endpoint latency is compared with), a fake ME in ME mode, a TLS site for
//! fake TLS's `--mask-host`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rand::RngCore;
use tokio::runtime::Runtime;

use super::client::{Endpoint, Proto};
use super::fakes::{Echo, EchoDc};
use super::floor;
use super::opts::{Mode, Opts, PeerSpec};
use super::procs::{free_port, Proc};
use crate::fake_me::{FakeMe, FakeMeConfig, Responder};
use crate::tls_site::{SiteOpts, TlsSite};

const START_LIMIT: Duration = Duration::from_secs(30);
/// ME connections our proxy keeps per ME address (C's `min_connections` default).
const ME_POOL: usize = 4;
/// SNI and `-D` for fake TLS (the test site's certificate name).
const TLS_DOMAIN: &str = "localhost";

/// A kind of target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Floor,
    Ours(Mode),
    Reference,
    Peer(PeerSpec),
}

/// A target as listed in the results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub kind: Kind,
}

impl Target {
    pub fn mode(&self) -> Mode {
        match &self.kind {
            Kind::Floor => Mode::Direct,
            Kind::Ours(m) => *m,
            Kind::Reference => Mode::Me,
            Kind::Peer(p) => p.mode,
        }
    }

    /// The name baselines are known by in ratio columns (`None`: not a baseline).
    pub fn baseline(&self) -> Option<String> {
        match &self.kind {
            Kind::Floor => Some("floor".into()),
            Kind::Reference => Some("reference".into()),
            Kind::Peer(p) => Some(p.name.clone()),
            Kind::Ours(_) => None,
        }
    }

    /// Every target the options ask for, baselines first.
    pub fn all(o: &Opts) -> Vec<Target> {
        let mut v = Vec::new();
        if o.floor {
            v.push(Target {
                name: "floor (tcp relay)".into(),
                kind: Kind::Floor,
            });
        }
        if o.reference_bin.is_some() {
            v.push(Target {
                name: "reference (me)".into(),
                kind: Kind::Reference,
            });
        }
        for p in &o.peers {
            v.push(Target {
                name: format!("{} ({})", p.name, p.mode.name()),
                kind: Kind::Peer(p.clone()),
            });
        }
        for m in &o.modes {
            v.push(Target {
                name: format!("mtproxy {}", m.name()),
                kind: Kind::Ours(*m),
            });
        }
        v
    }
}

/// Shared by all runs: options, runtimes, a scratch directory.
pub struct Env {
    pub opts: Opts,
    pub fakes: Runtime,
    pub load: Runtime,
    pub workdir: PathBuf,
    /// The secret clients use (also in `-S`).
    pub secret: [u8; 16],
}

impl Env {
    pub fn new(opts: Opts) -> Result<Env, String> {
        let rt = |name: &'static str, n: usize| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .thread_name(name)
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))
        };
        let workdir = std::env::temp_dir().join(format!("mtproxy-bench-{}", std::process::id()));
        std::fs::create_dir_all(&workdir).map_err(|e| format!("{workdir:?}: {e}"))?;
        let mut secret = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut secret);
        Ok(Env {
            fakes: rt(FAKE_THREADS, opts.fake_threads)?,
            load: rt(LOAD_THREADS, opts.load_threads)?,
            opts,
            workdir,
            secret,
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

/// Thread-name prefixes, for per-part CPU from `/proc/self/task`.
pub const FAKE_THREADS: &str = "bench-fake";
pub const LOAD_THREADS: &str = "bench-load";

/// A started target with its fakes. Field order is drop order: the process goes first.
pub struct Running {
    pub proc: Proc,
    /// How clients reach the target.
    pub endpoint: Endpoint,
    /// The echo DC, reached straight (no secret): latency's zero.
    pub straight: Endpoint,
    pub me: Option<FakeMe>,
    _site: Option<TlsSite>,
    _dc: EchoDc,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }
}

struct Fakes {
    dc: EchoDc,
    me: Option<FakeMe>,
    me_secret: Vec<u8>,
    site: Option<TlsSite>,
}

fn fakes_for(env: &Env, mode: Mode, echo: Echo) -> Result<Fakes, String> {
    let h = env.fakes.handle();
    let dc = EchoDc::start(h, echo).map_err(|e| format!("echo DC: {e}"))?;
    let mut me_secret = vec![0u8; 128];
    rand::thread_rng().fill_bytes(&mut me_secret);
    let me = if mode.is_me() {
        Some(
            env.fakes
                .block_on(FakeMe::start(
                    FakeMeConfig::new(me_secret.clone()).responder(Responder::Echo),
                ))
                .map_err(|e| format!("fake ME: {e}"))?,
        )
    } else {
        None
    };
    let site = if mode.is_tls() {
        Some(
            env.fakes
                .block_on(TlsSite::start(
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                    SiteOpts::default(),
                ))
                .map_err(|e| format!("TLS site: {e}"))?,
        )
    } else {
        None
    };
    Ok(Fakes {
        dc,
        me,
        me_secret,
        site,
    })
}

/// Files an ME-mode proxy reads: `--aes-pwd` and `proxy-multi.conf`.
fn me_files(dir: &Path, me: &FakeMe, secret: &[u8]) -> Result<(String, String), String> {
    let pwd = dir.join("proxy-secret");
    let conf = dir.join("proxy-multi.conf");
    let a = me.addr();
    std::fs::write(&pwd, secret).map_err(|e| format!("{pwd:?}: {e}"))?;
    let text = format!(
        "# mtproxy-bench\nproxy_for 1 {a};\nproxy_for -1 {a};\nproxy_for 2 {a};\nproxy_for -2 {a};\ndefault 2;\n"
    );
    std::fs::write(&conf, text).map_err(|e| format!("{conf:?}: {e}"))?;
    Ok((
        pwd.to_string_lossy().into_owned(),
        conf.to_string_lossy().into_owned(),
    ))
}

/// Starts `target` with fresh fakes (`echo`: what the DC sends back).
pub fn start(env: &Env, target: &Target, echo: Echo) -> Result<Running, String> {
    let mode = target.mode();
    let fakes = fakes_for(env, mode, echo)?;
    let dc = fakes.dc.addr();
    let straight = Endpoint {
        addr: dc,
        proto: Proto::Obfs2 { secret: None },
    };
    let secret_hex = hex::encode(env.secret);
    let client = |addr: SocketAddr| Endpoint {
        addr,
        proto: if mode.is_tls() {
            Proto::Tls {
                secret: env.secret,
                domain: TLS_DOMAIN.into(),
            }
        } else {
            Proto::Obfs2 {
                secret: Some(env.secret),
            }
        },
    };
    let dir = env.workdir.join(format!("{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
    let (pwd, conf) = match &fakes.me {
        Some(me) => me_files(&dir, me, &fakes.me_secret)?,
        None => (String::new(), String::new()),
    };
    let site = fakes
        .site
        .as_ref()
        .map(|s| format!("127.0.0.1:{}", s.addr().port()))
        .unwrap_or_default();
    let maxconn = env.opts.maxconn().to_string();

    let (proc, endpoint) = match &target.kind {
        Kind::Floor => {
            let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
            let mut cmd = Command::new(exe);
            cmd.args([
                floor::CHILD_FLAG,
                "127.0.0.1:0",
                &dc.to_string(),
                &env.opts.floor_buf.to_string(),
            ]);
            let p = Proc::spawn(&target.name, cmd)?;
            let line = p.wait_log("main loop", 1, START_LIMIT)?;
            let addr: SocketAddr = line
                .rsplit(' ')
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("floor: bad ready line {line:?}"))?;
            (
                p,
                Endpoint {
                    addr,
                    proto: Proto::Obfs2 { secret: None },
                },
            )
        }
        Kind::Ours(m) => {
            let mut last = String::new();
            let mut started = None;
            for _ in 0..5 {
                let port = free_port();
                let mut cmd = Command::new(&env.opts.proxy_bin);
                cmd.args(["--address", "127.0.0.1", "-H", &port.to_string()])
                    .args(["-S", &secret_hex, "-c", &maxconn]);
                if std::env::var_os("MTPROXY_LOG").is_none() {
                    // The ME connection lines and nothing per session (-v would log each).
                    cmd.env("MTPROXY_LOG", "info,mtproxy::middle::conn=debug");
                }
                if m.is_me() {
                    cmd.args(["--aes-pwd", &pwd]);
                } else {
                    cmd.args(["--dc-override", &format!("2:{dc}")]);
                }
                if m.is_tls() {
                    cmd.args(["-D", TLS_DOMAIN, "--mask-host", &site]);
                }
                cmd.args(&env.opts.proxy_args);
                if m.is_me() {
                    cmd.arg(&conf);
                }
                let p = Proc::spawn(&target.name, cmd)?;
                match p.wait_log("main loop", 1, START_LIMIT) {
                    Ok(_) => {
                        started = Some((p, port));
                        break;
                    }
                    Err(e) if p.logged("Address already in use") => last = e,
                    Err(e) => return Err(e),
                }
            }
            let (p, port) = started.ok_or(last)?;
            if m.is_me() {
                p.wait_log("Connected to RPC Middle-End", ME_POOL, START_LIMIT)?;
            }
            (p, client(SocketAddr::from(([127, 0, 0, 1], port))))
        }
        Kind::Reference | Kind::Peer(_) => {
            let port = free_port();
            let (program, tpl) = match &target.kind {
                Kind::Reference => (
                    env.opts
                        .reference_bin
                        .as_ref()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    env.opts.reference_args.clone(),
                ),
                Kind::Peer(p) => (String::new(), p.template.clone()),
                _ => unreachable!(),
            };
            let vars = [
                ("{port}", port.to_string()),
                ("{secret}", secret_hex.clone()),
                ("{dc}", dc.to_string()),
                ("{dc_port}", dc.port().to_string()),
                ("{me_config}", conf.clone()),
                ("{aes_pwd}", pwd.clone()),
                ("{site}", site.clone()),
                ("{maxconn}", maxconn.clone()),
                ("{workdir}", dir.to_string_lossy().into_owned()),
            ];
            let mut line = format!("exec {program} {tpl}");
            for (k, v) in vars {
                line = line.replace(k, &v);
            }
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &line]).current_dir(&dir);
            let mut p = Proc::spawn(&target.name, cmd)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if let Some(me) = &fakes.me {
                env.fakes
                    .block_on(me.wait_ready(1, START_LIMIT))
                    .map_err(|e| format!("{}: no ME connection: {e}\n{}", target.name, p.tail()))?;
            }
            p.wait_port(addr, START_LIMIT)?;
            (p, client(addr))
        }
    };
    Ok(Running {
        proc,
        endpoint,
        straight,
        me: fakes.me,
        _site: fakes.site,
        _dc: fakes.dc,
    })
}
