//! `mtproxy-ctl cutover --systemd` and `rollback --systemd` against a stand-in `systemctl`
//! (there is no systemd here): a bash script, first on the PATH of the mtproxy-ctl process
//! only, that runs a Type=simple unit whose `ExecStart` is the active link with the proxy's
//! command line, against the fakes (`mtproxy-fakes`) on loopback. It logs every call, so the tests see
//! the exact sequence of `systemctl` commands; the process it started is checked through
//! `/proc/PID/exe`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ctl_env, json, proxy_bin, serial, World, WATCHED_CUTOVER};
use mtproxy_ctl::procs::{self, Proc};
use serde_json::Value;

const UNIT: &str = "mtproxy-test.service";

/// The stand-in `systemctl`. State in `$FAKE_SYSTEMD_DIR`:
/// - `UNIT.ExecStart`: the unit's command line, one argument per line (written by the test);
/// - `UNIT.pid`: `PID STARTTIME` of the main process while the unit runs;
/// - `UNIT.log`: the output of the unit's processes (the journal);
/// - `started`: `PID STARTTIME` of every process it ever started (for the clean-up);
/// - `calls`: every invocation by mtproxy-ctl, one line each;
/// - `fail-start`, `fail-stop`: when present, that verb prints the file to stderr and exits 1.
const FAKE_SYSTEMCTL: &str = r#"#!/bin/bash
# A stand-in for systemctl: a Type=simple unit, just enough for mtproxy-ctl.
set -u
dir="${FAKE_SYSTEMD_DIR:?FAKE_SYSTEMD_DIR is not set}"
# The test's own calls (FAKE_SYSTEMD_TEST set) are not logged.
[ -n "${FAKE_SYSTEMD_TEST:-}" ] || echo "$*" >> "$dir/calls"

# "STATE STARTTIME" of a pid (fields 3 and 22 of /proc/PID/stat), or nothing.
proc_stat() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    set -- $s
    echo "$1 ${20}"
}

# The unit's main pid when its process still runs (not a zombie, not a reused pid), else 0.
main_pid() {
    local pid st cur
    read -r pid st 2>/dev/null < "$dir/$1.pid" || { echo 0; return; }
    cur=$(proc_stat "$pid") || { echo 0; return; }
    if [ "${cur%% *}" = Z ] || [ "${cur#* }" != "$st" ]; then echo 0; else echo "$pid"; fi
}

fail_if() {
    if [ -e "$dir/fail-$1" ]; then
        cat "$dir/fail-$1" >&2
        exit 1
    fi
}

case "$*" in
"show -p MainPID --value "*)
    [ $# -eq 5 ] || { echo "fake systemctl: one unit please: $*" >&2; exit 1; }
    main_pid "$5"
    ;;
"start "*)
    [ $# -eq 2 ] || { echo "fake systemctl: one unit please: $*" >&2; exit 1; }
    unit=$2
    fail_if start
    if [ ! -f "$dir/$unit.ExecStart" ]; then
        echo "Failed to start $unit: Unit $unit not found." >&2
        exit 5
    fi
    # Starting an active unit does nothing (as systemd).
    [ "$(main_pid "$unit")" != 0 ] && exit 0
    mapfile -t cmd < "$dir/$unit.ExecStart"
    setsid "${cmd[@]}" < /dev/null >> "$dir/$unit.log" 2>&1 &
    pid=$!
    st=$(proc_stat "$pid") && st=${st#* } || st=gone
    echo "$pid $st" > "$dir/$unit.pid"
    echo "$pid $st" >> "$dir/started"
    ;;
"stop "*)
    [ $# -eq 2 ] || { echo "fake systemctl: one unit please: $*" >&2; exit 1; }
    unit=$2
    fail_if stop
    pid=$(main_pid "$unit")
    if [ "$pid" != 0 ]; then
        kill -TERM "$pid" 2>/dev/null
        # TimeoutStopSec: 10 s, then SIGKILL.
        for _ in $(seq 1000); do
            [ "$(main_pid "$unit")" = 0 ] && break
            sleep 0.01
        done
        if [ "$(main_pid "$unit")" != 0 ]; then
            kill -KILL "$pid" 2>/dev/null
            for _ in $(seq 500); do
                [ "$(main_pid "$unit")" = 0 ] && break
                sleep 0.01
            done
        fi
    fi
    rm -f "$dir/$unit.pid"
    ;;
*)
    echo "fake systemctl: unsupported: $*" >&2
    exit 1
    ;;
esac
exit 0
"#;

/// The calls mtproxy-ctl makes for one switch through systemd.
fn switch_calls() -> Vec<String> {
    vec![
        format!("show -p MainPID --value {UNIT}"),
        format!("stop {UNIT}"),
        format!("start {UNIT}"),
        format!("show -p MainPID --value {UNIT}"),
    ]
}

/// A [`World`] whose proxy is a unit of the stand-in systemd: the unit runs `link`, which
/// points at the reference (our binary through a symlink) to begin with.
struct Sd {
    w: World,
    /// The stand-in's state directory.
    dir: PathBuf,
    /// The directory with `systemctl`, put first on PATH.
    bin: PathBuf,
    link: PathBuf,
}

impl Sd {
    async fn new(name: &str) -> Sd {
        let w = World::new(name).await;
        let dir = w.tmp.path("systemd");
        let bin = w.tmp.path("bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        w.tmp.script("bin/systemctl", FAKE_SYSTEMCTL);
        let link = w.tmp.path("active");
        std::os::unix::fs::symlink(&w.reference, &link).unwrap();
        let mut exec = vec![link.display().to_string()];
        exec.extend(w.args.iter().cloned());
        std::fs::write(
            dir.join(format!("{UNIT}.ExecStart")),
            exec.join("\n") + "\n",
        )
        .unwrap();
        Sd { w, dir, bin, link }
    }

    /// The environment of a process that is to see the stand-in as `systemctl`.
    fn env(&self) -> Vec<(&'static str, String)> {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        vec![
            ("PATH", format!("{}:{path}", self.bin.display())),
            ("FAKE_SYSTEMD_DIR", self.dir.display().to_string()),
        ]
    }

    /// Runs the stand-in directly (the operator's `systemctl`), asserting it succeeds.
    fn systemctl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(self.bin.join("systemctl"))
            .args(args)
            .envs(self.env())
            .env("FAKE_SYSTEMD_TEST", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn main_pid(&self) -> u32 {
        self.systemctl(&["show", "-p", "MainPID", "--value", UNIT])
            .parse()
            .unwrap()
    }

    /// Starts the unit (with what the link points at) and waits until it serves.
    async fn start_unit(&self) {
        self.systemctl(&["start", UNIT]);
        let t0 = Instant::now();
        while !self.w.client_ok().await {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the unit does not serve: {}",
                self.journal()
            );
            assert_ne!(self.main_pid(), 0, "the unit died: {}", self.journal());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(exe(self.main_pid()), real(&proxy_bin()));
    }

    /// What mtproxy-ctl asked the stand-in, in order.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn journal(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{UNIT}.log"))).unwrap_or_default()
    }

    fn active(&self) -> PathBuf {
        std::fs::read_link(&self.link).unwrap()
    }

    fn previous(&self) -> Option<PathBuf> {
        std::fs::read_link(self.link.with_file_name("active.previous")).ok()
    }

    /// `mtproxy-ctl COMMAND --systemd UNIT --link LINK … -- <the unit's command line>`;
    /// returns the exit code, the report and stdout + stderr.
    /// Cutover to a fresh copy of our build with a 5-s gate and no watch window.
    async fn cutover_unwatched(&self) -> (i32, Value, String) {
        let cand = own_build(&self.w, "candidate");
        self.ctl(
            "cutover",
            Some(&cand),
            &["--gate-timeout", "5", "--window", "0"],
        )
        .await
    }

    async fn ctl(&self, command: &str, to: Option<&Path>, extra: &[&str]) -> (i32, Value, String) {
        let report = self
            .w
            .tmp
            .path(&format!("{command}-{:08x}.json", rand::random::<u32>()));
        let (rep, link, state) = (
            report.display().to_string(),
            self.link.display().to_string(),
            self.w.state.display().to_string(),
        );
        let to = to.map(|p| p.display().to_string());
        let mut a = vec![command];
        if let Some(to) = &to {
            a.extend(["--to", to]);
        }
        a.extend([
            "--systemd",
            UNIT,
            "--link",
            &link,
            "--state-dir",
            &state,
            "--report",
            &rep,
        ]);
        a.extend_from_slice(extra);
        a.push("--");
        a.extend(self.w.args.iter().map(String::as_str));
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, out, err) = ctl_env(&a, &env).await;
        (code, json(&report), out + &err)
    }

    /// Stops the unit through the stand-in (SIGTERM, wait).
    fn stop(&self) {
        self.systemctl(&["stop", UNIT]);
    }
}

impl Drop for Sd {
    fn drop(&mut self) {
        // Whatever the stand-in started and is still running goes, by pid and start time.
        let started = std::fs::read_to_string(self.dir.join("started")).unwrap_or_default();
        for l in started.lines() {
            let mut f = l.split_whitespace();
            let (Some(Ok(pid)), Some(Ok(st))) = (
                f.next().map(str::parse::<u32>),
                f.next().map(str::parse::<u64>),
            ) else {
                continue;
            };
            Proc::attach(pid, st).kill();
        }
    }
}

/// Where `/proc/PID/exe` points.
fn exe(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// `p` with every symlink and `..` resolved, as `/proc/PID/exe` shows a binary.
fn real(p: &Path) -> Option<PathBuf> {
    Some(std::fs::canonicalize(p).unwrap())
}

/// A second build of ours under its own name: a hard link (or a copy), so that
/// `/proc/PID/exe` of its process names it and not the reference's target.
fn own_build(w: &World, name: &str) -> PathBuf {
    let dir = w.tmp.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("mtproto-proxy");
    if std::fs::hard_link(proxy_bin(), &p).is_err() {
        std::fs::copy(proxy_bin(), &p).unwrap();
    }
    p
}

fn all_checks_ok(gate: &Value) {
    let checks = gate["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["stats", "client", "process"], "{gate:#}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{gate:#}");
    assert_eq!(gate["ok"], true);
}

/// Cutover to a good candidate; returns it.
async fn good_cutover(sd: &Sd) -> PathBuf {
    let old = sd.main_pid();
    let old_start = procs::starttime(old).unwrap();
    let cand = own_build(&sd.w, "candidate");
    let (code, rep, _) = sd.ctl("cutover", Some(&cand), WATCHED_CUTOVER).await;
    assert_eq!(code, 0, "{rep:#}\n{}", sd.journal());
    assert_eq!(rep["result"], "ok");
    assert_eq!(rep["command"], "cutover");
    assert_eq!(rep["backend"], "systemd");
    assert_eq!(rep["handover"], "stop-start");
    assert!(rep["failed_gate"].is_null());
    assert_eq!(rep["rolled_back"], false);
    assert!(rep["rollback"].is_null());
    assert_eq!(rep["from"], sd.w.reference.display().to_string());
    assert_eq!(rep["to"], cand.display().to_string());
    all_checks_ok(&rep["switch"]["gate"]);
    assert!(rep["startup_latency_ms"].as_f64().unwrap() > 0.0);
    assert!(rep["shutdown_latency_ms"].as_f64().unwrap() > 0.0);
    assert!(rep["window"]["breach"].is_null(), "{rep:#}");
    assert!(rep["window"]["probes_ok"].as_u64().unwrap() >= 1);

    assert_eq!(sd.active(), cand);
    assert_eq!(sd.previous(), Some(sd.w.reference.clone()));
    assert_eq!(sd.calls(), switch_calls());
    // The unit runs the candidate now, under the pid the report names; the old one is gone.
    let pid = sd.main_pid();
    assert_ne!(pid, 0);
    assert_ne!(pid, old);
    assert_eq!(rep["switch"]["pid"], pid);
    assert_eq!(exe(pid), real(&cand));
    assert!(
        !Proc::attach(old, old_start).alive(),
        "the old process runs"
    );
    assert!(sd.w.client_ok().await);
    cand
}

#[tokio::test(flavor = "multi_thread")]
async fn cutover_through_systemd_to_a_good_candidate() {
    let _s = serial().await;
    let sd = Sd::new("sd-good").await;
    sd.start_unit().await;
    good_cutover(&sd).await;
    sd.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_candidate_is_rolled_back_through_systemd() {
    let _s = serial().await;
    let sd = Sd::new("sd-exits").await;
    sd.start_unit().await;
    let bad =
        sd.w.tmp
            .script("exits", "#!/bin/sh\necho broken candidate >&2\nexit 1\n");
    let (code, rep, _) = sd
        .ctl(
            "cutover",
            Some(&bad),
            &["--gate-timeout", "10", "--window", "0"],
        )
        .await;
    assert_eq!(code, 2, "cutover should exit 2 after rolling back: {rep:#}");
    assert_eq!(rep["backend"], "systemd");
    assert_eq!(rep["result"], "rolled-back", "{rep:#}");
    assert_eq!(rep["rolled_back"], true);
    assert_eq!(rep["failed_gate"], "process", "{rep:#}");
    assert_eq!(rep["switch"]["gate"]["checks"][0]["name"], "process");
    assert_eq!(rep["switch"]["gate"]["checks"][0]["ok"], false);
    all_checks_ok(&rep["rollback"]["gate"]);
    assert_eq!(rep["rollback"]["to"], sd.w.reference.display().to_string());
    assert!(
        sd.journal().contains("broken candidate"),
        "{}",
        sd.journal()
    );

    // Two switches: to the candidate, and back.
    assert_eq!(sd.calls(), [switch_calls(), switch_calls()].concat());
    assert_eq!(sd.active(), sd.w.reference);
    let pid = sd.main_pid();
    assert_ne!(pid, 0);
    assert_eq!(rep["rollback"]["pid"], pid);
    assert_eq!(exe(pid), real(&proxy_bin()));
    assert!(sd.w.client_ok().await, "the reference does not serve");
    sd.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_through_systemd_after_a_good_cutover() {
    let _s = serial().await;
    let sd = Sd::new("sd-rollback").await;
    sd.start_unit().await;
    let cand = good_cutover(&sd).await;
    let _ = std::fs::remove_file(sd.dir.join("calls"));

    let (code, rep, _) = sd
        .ctl("rollback", None, &["--gate-timeout", "20", "--window", "0"])
        .await;
    assert_eq!(code, 0, "{rep:#}\n{}", sd.journal());
    assert_eq!(rep["command"], "rollback");
    assert_eq!(rep["backend"], "systemd");
    assert_eq!(rep["result"], "ok");
    assert_eq!(rep["from"], cand.display().to_string());
    assert_eq!(rep["to"], sd.w.reference.display().to_string());
    all_checks_ok(&rep["switch"]["gate"]);
    assert_eq!(sd.calls(), switch_calls());
    assert_eq!(sd.active(), sd.w.reference);
    assert_eq!(sd.previous(), Some(cand));
    let pid = sd.main_pid();
    assert_ne!(pid, 0);
    assert_eq!(exe(pid), real(&proxy_bin()));
    assert!(sd.w.client_ok().await);
    sd.stop();
}

const JOB_FAILED: &str = "Job for mtproxy-test.service failed because the control process \
                          exited with error code (fake).";

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_systemctl_start_is_reported_and_the_link_restored() {
    let _s = serial().await;
    let sd = Sd::new("sd-nostart").await;
    sd.start_unit().await;
    std::fs::write(sd.dir.join("fail-start"), format!("{JOB_FAILED}\n")).unwrap();
    let (code, rep, output) = sd.cutover_unwatched().await;
    // The candidate never ran and neither did the rollback: failed.
    assert_eq!(code, 3, "{rep:#}");
    assert_eq!(rep["result"], "failed", "{rep:#}");
    assert_eq!(rep["failed_gate"], "process", "{rep:#}");
    assert_eq!(rep["rolled_back"], true);
    assert_eq!(sd.calls(), [switch_calls(), switch_calls()].concat());
    // The unit and what systemctl said, in the output and in the report's gates.
    let expect = format!("systemctl start {UNIT}: {JOB_FAILED}");
    assert!(output.contains(&expect), "{output}");
    for sw in ["switch", "rollback"] {
        let detail = rep[sw]["gate"]["checks"][0]["detail"].as_str().unwrap();
        assert!(detail.contains(&expect), "{sw}: {detail}");
    }
    assert_eq!(sd.active(), sd.w.reference, "the link is not restored");
    assert_eq!(sd.main_pid(), 0);

    // Once systemctl works again, the service comes back on the restored link.
    std::fs::remove_file(sd.dir.join("fail-start")).unwrap();
    sd.start_unit().await;
    sd.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_systemctl_stop_changes_nothing() {
    let _s = serial().await;
    let sd = Sd::new("sd-nostop").await;
    sd.start_unit().await;
    // A previous binary on record, which a cutover that did nothing must keep.
    let older = own_build(&sd.w, "older");
    let previous = sd.link.with_file_name("active.previous");
    std::os::unix::fs::symlink(&older, &previous).unwrap();
    let pid = sd.main_pid();
    std::fs::write(
        sd.dir.join("fail-stop"),
        format!("Failed to stop {UNIT}: Access denied (fake)\n"),
    )
    .unwrap();
    let (code, rep, output) = sd.cutover_unwatched().await;
    assert_eq!(code, 1, "{rep:#}");
    assert_eq!(rep["result"], "error");
    let expect = format!("systemctl stop {UNIT}: Failed to stop {UNIT}: Access denied (fake)");
    assert_eq!(rep["error"], expect.as_str(), "{rep:#}");
    assert!(output.contains(&expect), "{output}");
    assert_eq!(
        sd.calls(),
        [
            format!("show -p MainPID --value {UNIT}"),
            format!("stop {UNIT}")
        ]
    );
    assert_eq!(sd.active(), sd.w.reference, "the link is not restored");
    assert_eq!(sd.previous(), Some(older), "the previous link changed");
    // The old process was never touched.
    assert_eq!(sd.main_pid(), pid);
    assert!(sd.w.client_ok().await);
    std::fs::remove_file(sd.dir.join("fail-stop")).unwrap();
    sd.stop();
}
