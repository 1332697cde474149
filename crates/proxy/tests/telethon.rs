//! A real client: Telethon 1.45 (pinned in tests/telethon/requirements.txt) connects
//! through the proxy with its three MTProxy connection classes, sends `req_pq_multi` and
//! must get the fake DC's `resPQ` with its nonce.
//!
//! Needs the Python of a venv with those requirements in `MTPROXY_TEST_PYTHON`;
//! `scripts/test.sh` creates it and runs these with `--include-ignored`.

mod common;

use mtproxy_testkit::{FakeDc, Tag};
use std::process::Command;
use std::time::Duration;

const SECRET: &str = "00112233445566778899aabbccddeeff";

fn python() -> String {
    std::env::var("MTPROXY_TEST_PYTHON")
        .expect("MTPROXY_TEST_PYTHON must name the venv python (scripts/test.sh sets it)")
}

fn script() -> String {
    format!(
        "{}/../../tests/telethon/check_proxy.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the Telethon venv: run through scripts/test.sh"]
async fn telethon_gets_res_pq_through_the_proxy_in_every_mode() {
    let dc = FakeDc::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // Every production DC id points at the fake DC, so nothing can leave loopback.
    let overrides: Vec<String> = (1..=5)
        .map(|d| format!("{d}:127.0.0.1:{}", dc.addr().port()))
        .collect();
    let mut args = vec!["-S", SECRET];
    for o in &overrides {
        args.extend_from_slice(&["--dc-override", o]);
    }
    let proxy = common::start(&args);
    let port = proxy.port.to_string();
    let modes = [
        ("abridged", Tag::Abridged),
        ("intermediate", Tag::Intermediate),
        ("randomized", Tag::Padded),
    ];
    for (i, (mode, tag)) in modes.iter().enumerate() {
        let out = Command::new(python())
            .args([
                &script(),
                "--proxy-host",
                "127.0.0.1",
                "--proxy-port",
                &port,
                "--secret",
                SECRET,
            ])
            .args(["--mode", mode, "--dc", "2", "--timeout", "20"])
            .output()
            .expect("run check_proxy.py");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "telethon {mode} failed: {text}\nproxy log:\n{}",
            proxy.log_text()
        );
        assert!(text.contains(&format!("telethon {mode}: ok")), "{text}");
        let conns = tokio::time::timeout(Duration::from_secs(10), dc.wait_connections(i + 1))
            .await
            .unwrap();
        assert_eq!(
            conns[i].tag,
            Some(*tag),
            "the DC saw the transport Telethon chose"
        );
        assert!(conns[i].res_pq_sent >= 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the Telethon venv: run through scripts/test.sh"]
async fn telethon_gets_res_pq_through_the_proxy_in_me_mode() {
    use mtproxy_testkit::fake_me::{FakeMe, FakeMeConfig, MeEvent, Responder};
    let dir = std::env::temp_dir().join(format!("mtproxy-tl-me-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret: Vec<u8> = (0..128u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(dir.join("proxy-secret"), &secret).unwrap();
    let me = FakeMe::start(FakeMeConfig::new(secret).responder(Responder::ResPq))
        .await
        .unwrap();
    let cfg = dir.join("proxy-multi.conf");
    std::fs::write(&cfg, format!("proxy_for 2 {};\ndefault 2;\n", me.addr())).unwrap();
    let pwd = dir.join("proxy-secret").to_string_lossy().into_owned();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let proxy = common::start(&["-v", "-S", SECRET, "--aes-pwd", &pwd, &cfg_s]);
    let needle = format!("Connected to RPC Middle-End {}", me.addr());
    assert!(
        proxy.wait_log_count(&needle, 4, Duration::from_secs(30)),
        "{}",
        proxy.log_text()
    );
    let port = proxy.port.to_string();
    for mode in ["abridged", "intermediate", "randomized"] {
        let out = Command::new(python())
            .args([
                &script(),
                "--proxy-host",
                "127.0.0.1",
                "--proxy-port",
                &port,
                "--secret",
                SECRET,
            ])
            .args(["--mode", mode, "--dc", "2", "--timeout", "20"])
            .output()
            .expect("run check_proxy.py");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "telethon {mode} (ME mode) failed: {text}\nproxy log:\n{}",
            proxy.log_text()
        );
    }
    let reqs = me.count(|e| {
        matches!(
            e,
            MeEvent::ProxyReq {
                unencrypted: true,
                ..
            }
        )
    });
    assert!(reqs >= 3, "the ME saw {reqs} req_pq_multi");
    let _ = std::fs::remove_dir_all(&dir);
}
