//! `mtproxy-ctl cutover` and `rollback` under `--supervise`, against the fake ME (`mtproxy-fakes`): a
//! broken candidate of each kind makes cutover roll back by itself and name the failed
//! gate; a good one is switched to and rolled back from.

mod common;

use common::{serial, World, WATCHED_CUTOVER};
use serde_json::Value;

/// The common checks of an automatic rollback: exit 2, the gate named, the reference
/// serving again through the active link.
async fn assert_rolled_back(w: &World, code: i32, rep: &Value, gate: &str) {
    assert_eq!(code, 2, "cutover should exit 2 after rolling back: {rep:#}");
    assert_eq!(rep["result"], "rolled-back", "{rep:#}");
    assert_eq!(rep["rolled_back"], true);
    assert_eq!(rep["failed_gate"], gate, "{rep:#}");
    for key in ["generated_at", "os", "arch", "thresholds", "steps"] {
        assert!(!rep[key].is_null(), "report without {key}");
    }
    let steps = rep["steps"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s["step"] == "rollback"),
        "no rollback step logged"
    );
    assert!(steps
        .iter()
        .all(|s| s["at"].as_str().unwrap().ends_with('Z')));
    assert_eq!(w.active(), w.reference, "the active link is not back");
    assert!(
        w.client_ok().await,
        "the reference does not serve after rollback"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_that_exits_at_once_is_rolled_back_on_the_process_gate() {
    let _s = serial().await;
    let w = World::new("exits").await;
    w.start_reference().await;
    let bad = w
        .tmp
        .script("exits", "#!/bin/sh\necho broken candidate >&2\nexit 1\n");
    let (code, rep) = w
        .cutover(&bad, &["--gate-timeout", "10", "--window", "0"])
        .await;
    assert_rolled_back(&w, code, &rep, "process").await;
    assert_eq!(rep["switch"]["gate"]["checks"][0]["name"], "process");
    assert!(rep["rollback"]["gate"]["ok"].as_bool().unwrap());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_that_never_serves_stats_is_rolled_back_on_the_stats_gate() {
    let _s = serial().await;
    let w = World::new("silent").await;
    w.start_reference().await;
    let bad = w.tmp.script("silent", "#!/bin/sh\nexec sleep 3600\n");
    let (code, rep) = w
        .cutover(&bad, &["--gate-timeout", "3", "--window", "0"])
        .await;
    assert_rolled_back(&w, code, &rep, "stats").await;
    // The hung candidate was stopped, not left behind.
    let pid = rep["switch"]["pid"].as_u64().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_that_serves_stats_but_drops_clients_is_rolled_back_on_the_client_gate() {
    let _s = serial().await;
    let w = World::new("noclients").await;
    w.start_reference().await;
    // /stats on -p, nothing on -H.
    let bad = w.tmp.script(
        "stats-only",
        r#"#!/bin/sh
exec python3 -c '
import sys, http.server
a = sys.argv[1:]
port = int(a[a.index("-p") + 1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = b"uptime\t1\nversion\tbroken-candidate\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *x):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
' "$@"
"#,
    );
    let (code, rep) = w
        .cutover(&bad, &["--gate-timeout", "3", "--window", "0"])
        .await;
    assert_rolled_back(&w, code, &rep, "client").await;
    let checks = rep["switch"]["gate"]["checks"].as_array().unwrap();
    assert_eq!(checks[0]["name"], "stats");
    assert_eq!(checks[0]["ok"], true, "the stand-in's /stats should pass");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_that_crashes_in_the_window_is_rolled_back_on_crash() {
    let _s = serial().await;
    let w = World::new("crash").await;
    w.start_reference().await;
    // Our binary, killed 2 s after it started: passes the gate, dies in the window. Its
    // --help hides --reuse-port, so the switch is a plain stop-start (overlap is tested
    // below and by the drill).
    let real = common::proxy_bin();
    let bad = w.tmp.script(
        "crashes",
        &format!(
            "#!/bin/sh\ncase \"$1\" in --help) {real} --help 2>&1 | grep -v -- --reuse-port; exit 2;; esac\n{real} \"$@\" &\nchild=$!\nsleep 2\nkill -9 $child\nexit 137\n",
            real = real.display()
        ),
    );
    let (code, rep) = w
        .cutover(
            &bad,
            &["--gate-timeout", "20", "--window", "10", "--poll-ms", "100"],
        )
        .await;
    assert!(rep["switch"]["gate"]["ok"].as_bool().unwrap(), "{rep:#}");
    assert_rolled_back(&w, code, &rep, "crash").await;
    assert_eq!(rep["window"]["breach"], "crash");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_candidate_is_switched_to_and_rolled_back_from() {
    let _s = serial().await;
    let w = World::new("good").await;
    w.start_reference().await;
    let cand = w.tmp.alias("candidate");
    let (code, rep) = w.cutover(&cand, WATCHED_CUTOVER).await;
    assert_eq!(code, 0, "{rep:#}");
    assert_eq!(rep["result"], "ok");
    assert!(rep["failed_gate"].is_null());
    // Two builds of ours share the port: the old process kept serving until the new one listened.
    assert_eq!(rep["handover"], "overlap", "{rep:#}");
    assert!(rep["startup_latency_ms"].as_f64().unwrap() > 0.0);
    assert!(rep["shutdown_latency_ms"].as_f64().unwrap() > 0.0);
    assert!(rep["window"]["probes_ok"].as_u64().unwrap() >= 1);
    assert_eq!(w.active(), cand);
    assert!(w.client_ok().await);

    let (code, rep) = w.rollback(&["--window", "0"]).await;
    assert_eq!(code, 0, "{rep:#}");
    assert_eq!(rep["command"], "rollback");
    assert_eq!(rep["result"], "ok");
    assert_eq!(w.active(), w.reference);
    assert!(w.client_ok().await);
    w.stop().await;
}
