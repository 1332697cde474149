//! `mtproxy-ctl drill`: baseline → cutover → upgrade → rollback under client traffic, with
//! both sides our own binary, and with a reference that cannot share its ports (as C).

mod common;

use common::{can_isolate, ctl, json, proxy_bin, serial, Tmp, CTL};
use serde_json::Value;

/// Runs the drill; as root, in a network namespace of its own with
/// `net.ipv4.tcp_migrate_req=1` (per namespace: the host is not touched), so that a client
/// caught in the old process's accept queue moves to the new one instead of being reset.
/// Returns (exit code, report, isolated).
async fn drill(tmp: &Tmp, reference: &str, candidate: &str) -> (i32, Value, bool) {
    let report = tmp.path("drill.json").display().to_string();
    let args = [
        "drill",
        "--reference",
        reference,
        "--candidate",
        candidate,
        "--steady",
        "1.5",
        "--concurrency",
        "4",
        "--settle-ms",
        "300",
        "--gate-timeout",
        "20",
        "--report",
        &report,
    ];
    let isolated = can_isolate();
    let code = if isolated {
        let out = tokio::process::Command::new("unshare")
            .args([
                "-n",
                "--",
                "sh",
                "-c",
                "ip link set lo up && echo 1 > /proc/sys/net/ipv4/tcp_migrate_req && exec \"$@\"",
                "sh",
                CTL,
            ])
            .args(args)
            .output()
            .await
            .unwrap();
        eprintln!(
            "$ unshare -n … mtproxy-ctl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.code().unwrap_or(-1)
    } else {
        println!(
            "note: not root (or no unshare/ip): the drill runs in this network namespace as it is"
        );
        ctl(&args).await.0
    };
    (code, json(tmp.path("drill.json").as_path()), isolated)
}

fn step<'a>(rep: &'a Value, name: &str) -> &'a Value {
    rep["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {rep:#}"))
}

/// Refused connections that a reset explains when the namespace does not migrate the
/// accept queue (only when the test could not isolate itself).
fn refused_not_reset(s: &Value) -> u64 {
    s["refused_connections"].as_u64().unwrap() - s["traffic"]["refused_reset"].as_u64().unwrap()
}

fn check_schema(rep: &Value) {
    for key in ["generated_at", "os", "arch", "thresholds", "steps"] {
        assert!(!rep[key].is_null(), "report without {key}");
    }
    let names: Vec<&str> = rep["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["start", "baseline", "cutover", "upgrade", "rollback"],
        "the drill stopped early: {:#}",
        rep["errors"]
    );
    for s in rep["steps"].as_array().unwrap() {
        for key in [
            "name",
            "binary",
            "startup_latency_ms",
            "shutdown_latency_ms",
            "refused_connections",
            "broken_sessions",
            "stats_sample",
        ] {
            assert!(s.get(key).is_some(), "step without {key}: {s:#}");
        }
        assert!(s["startup_latency_ms"].as_f64().unwrap() > 0.0, "{s:#}");
        assert!(
            s["stats_sample"]["tot_forwarded_queries"].is_string(),
            "no /stats sample: {s:#}"
        );
        if s["name"] != "start" {
            assert!(s["shutdown_latency_ms"].as_f64().unwrap() > 0.0, "{s:#}");
            assert!(
                s["traffic"]["ok"].as_u64().unwrap() > 0,
                "no traffic: {s:#}"
            );
        }
    }
    let t = &rep["thresholds"];
    assert_eq!(t["startup_factor"], 3.0);
    assert_eq!(t["startup_slack_ms"], 500.0);
    assert!(t["max_startup_latency_ms"].as_f64().is_some());
    assert_eq!(t["traffic"]["overlap_max_refused"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn drill_ours_to_ours_hands_over_with_no_refused_connections() {
    let _s = serial().await;
    let tmp = Tmp::new("drill-ours");
    let r = tmp.alias("reference").display().to_string();
    let c = tmp.alias("candidate").display().to_string();
    let (code, rep, isolated) = drill(&tmp, &r, &c).await;
    check_schema(&rep);
    for name in ["baseline", "cutover", "upgrade", "rollback"] {
        let s = step(&rep, name);
        assert_eq!(s["handover"], "overlap", "{s:#}");
        assert_eq!(s["broken_sessions"], 0, "{s:#}");
        if isolated {
            assert_eq!(s["refused_connections"], 0, "{s:#}");
        } else {
            assert_eq!(refused_not_reset(s), 0, "{s:#}");
        }
    }
    // The candidate → candidate upgrade, the point of the exercise.
    let up = step(&rep, "upgrade");
    assert_eq!(up["refused_connections"], 0, "{up:#}");
    assert_eq!(up["binary"], c);
    assert_eq!(code, 0, "guards breached: {:#}", rep["breaches"]);
    assert_eq!(rep["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn drill_with_a_reference_that_cannot_share_ports_shows_its_gap() {
    let _s = serial().await;
    let tmp = Tmp::new("drill-gap");
    // Our binary without --reuse-port in its --help: to the tools, a binary like C.
    let real = proxy_bin();
    let r = tmp.script(
        "c-like",
        &format!(
            "#!/bin/sh\ncase \"$1\" in --help) {real} --help 2>&1 | grep -v -- --reuse-port; exit 2;; esac\nexec {real} \"$@\"\n",
            real = real.display()
        ),
    );
    let r = r.display().to_string();
    let c = tmp.alias("candidate").display().to_string();
    let (code, rep, isolated) = drill(&tmp, &r, &c).await;
    check_schema(&rep);
    assert_eq!(step(&rep, "baseline")["handover"], "stop-start");
    assert_eq!(step(&rep, "cutover")["handover"], "stop-start");
    assert_eq!(step(&rep, "rollback")["handover"], "stop-start");
    // Between two builds of ours there is no gap, even after a C-like start.
    let up = step(&rep, "upgrade");
    assert_eq!(up["handover"], "overlap", "{up:#}");
    assert_eq!(up["broken_sessions"], 0);
    if isolated {
        assert_eq!(up["refused_connections"], 0, "{up:#}");
    } else {
        assert_eq!(refused_not_reset(up), 0, "{up:#}");
    }
    // The gap is the reference's start-up: reported per step, with the outage clients saw.
    for name in ["cutover", "rollback"] {
        let s = step(&rep, name);
        assert!(s["traffic"]["outage_ms"].as_f64().is_some());
        assert!(s["startup_latency_ms"].as_f64().unwrap() > 0.0);
    }
    assert!(rep["thresholds"]["traffic"]["gap_max_outage_ms"]
        .as_f64()
        .is_some());
    assert_eq!(code, 0, "guards breached: {:#}", rep["breaches"]);
}
