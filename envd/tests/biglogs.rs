//! Log collection is bounded and streamed: a container that writes 2 GB to stdout and a
//! 20 GB sparse file in its log dir are torn down to `gone`, the archive holds both cut at
//! the per-file limit with a marker line saying how much was cut, and the peak RSS of the
//! `envd serve` process stays under 150 MB. Bridge envdt8, pool 10.218.8.0/24.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::serve::{Serve, free_port};

const BRIDGE: &str = "envdt8";
const POOL: &str = "10.218.8.0/24";
const PER_FILE: u64 = 64 << 20;

const TEMPLATE: &str = r#"
name: biglogs
version: "1"
deadline: 15m
pods:
  - name: noisy
    containers:
      - name: noisy
        image: envd/redis:latest
        command:
          - bash
          - -c
          - |
            d=/var/log/envd/noisy
            truncate -s 20G $d/sparse.log
            echo small > $d/small.log
            head -c 2147483648 /dev/zero | tr '\0' x
            echo
            touch $d/written
            trap exit TERM; while :; do sleep 1 & wait $!; done
    ready: { kind: exec, command: [test, -f, /var/log/envd/noisy/written], deadline: 12m }
"#;

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

async fn state(base: &str, id: &str) -> Value {
    common::http::env_json(base, id).await
}

async fn until(base: &str, id: &str, want: &[&str], limit: Duration) -> Value {
    let t = Instant::now();
    loop {
        let e = state(base, id).await;
        if want.iter().any(|w| e["state"] == *w) {
            return e;
        }
        assert!(
            t.elapsed() < limit,
            "still {} after {limit:?}: {e}",
            e["state"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gigabytes_of_logs_cost_envd_no_memory() {
    if !common::engine_available().await {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let templates = common::harness::template_dir("biglogs", TEMPLATE);
    let port = free_port();
    let mut serve = Serve::start(
        data.path(),
        port,
        &[
            "--bridge",
            BRIDGE,
            "--pool-cidr",
            POOL,
            "--templates-dir",
            &templates.path().display().to_string(),
            "--log-max-file",
            "64m",
            "--log-max-env",
            "256m",
            "--log-collect-timeout",
            "4m",
        ],
        None,
    );
    let base = format!("http://127.0.0.1:{port}");
    serve.up().await;
    let guard = common::Guard::default();
    let id = common::http::create_env(&base, "biglogs").await;
    guard.watch(&id);
    let t = Instant::now();
    let e = until(&base, &id, &["ready", "failed"], Duration::from_secs(900)).await;
    assert_eq!(e["state"], "ready", "{e}");
    println!("2 GB written and ready in {:.0?}", t.elapsed());

    let t = Instant::now();
    let resp = reqwest::Client::new()
        .delete(format!("{base}/v1/envs/{id}"))
        .bearer_auth(common::http::admin_token())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let e = until(&base, &id, &["gone", "failed"], Duration::from_secs(600)).await;
    assert_eq!(e["state"], "gone", "{e}");
    println!("torn down in {:.0?}", t.elapsed());

    // The archive, streamed to a file.
    let mut resp = common::http::get(format!("{base}/v1/envs/{id}/logs"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let path = data.path().join("fetched.tar.gz");
    let mut out = std::fs::File::create(&path).unwrap();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        std::io::Write::write_all(&mut out, &chunk).unwrap();
    }
    let hwm = vm_hwm_kb(serve.pid());
    println!(
        "envd serve peak RSS (VmHWM): {} kB = {:.1} MB",
        hwm,
        hwm as f64 / 1024.0
    );

    let mut seen = vec![];
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&path).unwrap(),
    ));
    for entry in a.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let size = entry.size();
        // Only the tail is read into memory here: the marker is the last line.
        let mut tail = vec![];
        std::io::copy(
            &mut (&mut entry).take(size.saturating_sub(400)),
            &mut std::io::sink(),
        )
        .unwrap();
        entry.read_to_end(&mut tail).unwrap();
        let tail = String::from_utf8_lossy(&tail).to_string();
        println!(
            "{name}: {size} bytes, ends {:?}",
            tail.lines().last().unwrap_or("")
        );
        seen.push((name, size, tail));
    }
    let find = |n: &str| {
        seen.iter().find(|(name, ..)| name == n).unwrap_or_else(|| {
            panic!(
                "no {n} in {:?}",
                seen.iter().map(|s| &s.0).collect::<Vec<_>>()
            )
        })
    };
    let (_, size, tail) = find("noisy/noisy.log");
    assert!(*size > PER_FILE && *size < PER_FILE + 400, "{size}");
    assert!(tail.contains("[envd: cut here:"), "{tail}");
    let (_, size, tail) = find("noisy/files/sparse.log");
    assert!(*size > PER_FILE && *size < PER_FILE + 400, "{size}");
    let cut = (20u64 << 30) - PER_FILE;
    assert!(
        tail.contains(&format!("cut here: {cut} more bytes")),
        "{tail}"
    );
    let (_, _, tail) = find("noisy/files/small.log");
    assert_eq!(tail, "small\n");

    assert!(hwm < 150 * 1024, "envd's peak RSS {hwm} kB is over 150 MB");
    drop(serve);
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
}
