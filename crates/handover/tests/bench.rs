//! `handover bench` at a tiny size against a real nats-server, with the projector run as
//! the real `handover` executable, so the benchmark keeps working. No figure is checked
//! (a benchmark measures; it does not pass or fail): only that every phase runs and
//! reports.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use handover::bench::{main, BenchOptions, FIGURES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_bench_runs_at_a_tiny_size() {
    assert!(
        handover::dev::find_nats_server().is_some(),
        "nats-server is not installed: run `cargo xtask setup` (the test command does)"
    );
    let mut opts = BenchOptions::new(true, Some(500), Some(50), Some(1));
    opts.sync_events = 100;
    opts.query_time = Duration::from_millis(300);
    opts.e2e_time = Duration::from_secs(1);
    opts.e2e_rate = 100;
    opts.progress_bar = false;
    opts.projector_exe = Some(PathBuf::from(env!("CARGO_BIN_EXE_handover")));
    let dir = tempfile::tempdir().unwrap();
    opts.json = Some(dir.path().join("bench.json"));
    opts.markdown = Some(dir.path().join("bench.md"));
    main(opts.clone()).await.unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(opts.json.as_ref().unwrap()).unwrap()).unwrap();
    let figures = json["figures"].as_array().unwrap();
    let names: Vec<&str> = figures
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = FIGURES.iter().map(|f| f.0).collect();
    assert_eq!(names, expected);
    // The projector process's memory was read from /proc, not left unknown.
    for name in ["rebuild.rss_peak", "rebuild.rss_after"] {
        let f = figures.iter().find(|f| f["name"] == name).unwrap();
        let mb = f["median"].as_f64().unwrap_or(f64::NAN);
        assert!(mb > 1.0 && mb < 100_000.0, "{name} = {mb}");
    }
    // CPU time was read from /proc: the projector process's whole life, and the
    // saturated journey reads (32 clients busy for the phase).
    for name in ["projection.catchup.cpu", "query.journey.cpu"] {
        let f = figures.iter().find(|f| f["name"] == name).unwrap();
        let us = f["median"].as_f64().unwrap_or(f64::NAN);
        assert!(us > 0.0 && us < 1e9, "{name} = {us}");
    }
    // The three one-connection figures ran in the same blocks, each at some rate.
    for name in ["raw.publish.sync", "raw.mllp.relay", "ingest.mllp.1conn"] {
        let f = figures.iter().find(|f| f["name"] == name).unwrap();
        let rate = f["median"].as_f64().unwrap_or(f64::NAN);
        assert!(rate > 0.0 && rate.is_finite(), "{name} = {rate}");
    }
    // The load sweeps ran and report a load they offered (0 when none held).
    for name in ["raw.publish.capacity", "query.journey.capacity"] {
        let f = figures.iter().find(|f| f["name"] == name).unwrap();
        let load = f["median"].as_f64().unwrap_or(f64::NAN);
        assert!(load >= 0.0 && load % 500.0 == 0.0, "{name} = {load}");
    }
    let md = std::fs::read_to_string(opts.markdown.as_ref().unwrap()).unwrap();
    assert!(md.contains("`ingest.mllp.1conn`"), "{md}");
    assert!(md.contains("`raw.mllp.relay`"), "{md}");
    assert!(md.contains("`query.worklist.brokerage.p99`"), "{md}");
}
