//! The real `handover` binary as a child process: built (or found up to date) by cargo once
//! per test run, started with `serve --config <temp toml>`, stopped with SIGINT or killed
//! with SIGKILL, its JSON log copied to a file for the failure message.
//!
//! The binary lives in the `handover` package, so `CARGO_BIN_EXE_handover` is not set for
//! this one. `HANDOVER_BIN` names a binary to use; otherwise `cargo build -p handover --bin
//! handover` runs once (cargo releases its build lock before it runs tests, and this is a
//! no-op when the binary is up to date) and its JSON output names the executable.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::metric;

/// Variables (and prefixes) cargo sets for the test process about this package.
const SET_FOR_TESTS: [&str; 8] = [
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// The `handover` executable, of the same profile as this test binary.
pub fn handover_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HANDOVER_BIN").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "handover",
            "--bin",
            "handover",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit());
        // What cargo sets for running this test (the package's CARGO_MANIFEST_DIR, …) would
        // reach build scripts that watch it (ring's does) and make them rebuild both ways.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if SET_FOR_TESTS.iter().any(|p| name.starts_with(p)) {
                cmd.env_remove(&*name);
            }
        }
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let out = cmd
            .output()
            .expect("run cargo build for the handover binary");
        assert!(out.status.success(), "cargo build -p handover failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "handover")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo build named the handover executable")
    })
}

/// A `handover.toml` for a child process: NATS at `nats_url`, the test pseudonym key, the
/// read-model store at `store`, the API on a free loopback port, plus `extra` TOML.
pub fn write_config(dir: &Path, name: &str, nats_url: &str, store: &Path, extra: &str) -> PathBuf {
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&key_file, crate::support::KEY_HEX).unwrap();
    let path = dir.join(format!("{name}.toml"));
    let toml = format!(
        "[nats]\nurl = {:?}\n\n[pseudonym]\nkey_file = {:?}\n\n[store]\npath = {:?}\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n{extra}",
        nats_url,
        key_file.display().to_string(),
        store.display().to_string(),
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// `handover serve --config <config>`.
pub fn serve_command(config: &Path) -> Command {
    let mut c = Command::new(handover_bin());
    c.arg("serve").arg("--config").arg(config);
    c
}

/// A running `handover` child process.
pub struct Handover {
    child: Option<Child>,
    log_path: PathBuf,
    /// `http://` and the API's address.
    pub base: String,
}

impl Handover {
    /// Spawns `cmd` (stderr, the JSON log, to `log_path`) and waits until its API listens.
    pub fn spawn(mut cmd: Command, log_path: &Path) -> Handover {
        let mut log = std::fs::File::create(log_path).unwrap();
        let mut child = cmd
            .env_remove("HANDOVER_CONFIG")
            .env_remove("HANDOVER_NATS_URL")
            .env_remove("HANDOVER_PSEUDONYM_KEY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn handover");
        // Copied by this process, so a file-size limit on the child does not cut its log.
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut log));
        let mut h = Handover {
            child: Some(child),
            log_path: log_path.to_path_buf(),
            base: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = h.logged_address() {
                h.base = format!("http://{addr}");
                return h;
            }
            assert!(
                h.is_running(),
                "handover exited during start-up:\n{}",
                h.log()
            );
            assert!(
                Instant::now() < deadline,
                "handover's API did not start:\n{}",
                h.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logged_address(&self) -> Option<String> {
        self.log_lines()
            .into_iter()
            .find(|l| l["fields"]["message"] == "API listening")
            .and_then(|l| l["fields"]["address"].as_str().map(str::to_string))
    }

    /// The log's JSON lines so far.
    pub fn log_lines(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL (no shutdown, no flush) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGINT (a graceful shutdown, as Ctrl-C) and wait for the exit; SIGKILL after 60 s.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // The shell's own `kill`, so no procps is needed.
        let _ = Command::new("sh")
            .args(["-c", r#"kill -INT "$1""#, "sh", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(c.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = c.kill();
                panic!("handover did not stop on SIGINT:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.wait();
    }

    /// One sample of `/metrics`.
    pub async fn metrics(&self, http: &reqwest::Client) -> Option<String> {
        let r = http
            .get(format!("{}/metrics", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        r.text().await.ok()
    }

    /// `/readyz`: its status and body.
    pub async fn readyz(&self, http: &reqwest::Client) -> (u16, String) {
        crate::support::readyz(http, &self.base).await
    }

    /// Waits until `/metrics` shows the journey projection at `position` or beyond.
    pub async fn projected(&mut self, http: &reqwest::Client, position: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let at = match self.metrics(http).await {
                Some(m) => metric(&m, "handover_projection_position{projection=\"journey\"}"),
                None => None,
            };
            if at.is_some_and(|p| p >= position as f64) {
                return;
            }
            assert!(self.is_running(), "handover exited:\n{}", self.log());
            assert!(
                Instant::now() < deadline,
                "the projection did not reach {position} (at {at:?}) in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every entry of every tree of a read-model store, by tree name (the journey tree's
/// timeline chunks split into their events, as `support::snapshot` does).
pub fn all_trees(
    store: &handover_store::Store,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
    store
        .tree_names()
        .into_iter()
        .map(|name| {
            let tree = store.tree(&name).unwrap();
            // "journey", or a rebuilt generation of it, "journey@<n>".
            let entries = if name.split('@').next() == Some(handover_projections::journeys::NAME) {
                crate::support::journey_entries(&tree)
            } else {
                tree.scan_prefix(b"").map(|r| r.unwrap()).collect()
            };
            (name, entries)
        })
        .collect()
}

/// Where two stores' trees differ, as readable lines (empty when identical byte for byte, as
/// [`all_trees`] gives them).
pub fn store_differences(
    got: &std::collections::BTreeMap<String, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
    want: &std::collections::BTreeMap<String, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
) -> Vec<String> {
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    let empty = std::collections::BTreeMap::new();
    for name in names {
        let (g, w) = (
            got.get(name).unwrap_or(&empty),
            want.get(name).unwrap_or(&empty),
        );
        if !got.contains_key(name) || !want.contains_key(name) {
            out.push(format!("tree {name} is in only one store"));
        }
        let keys: std::collections::BTreeSet<&Vec<u8>> = g.keys().chain(w.keys()).collect();
        for k in keys {
            let key = String::from_utf8_lossy(k);
            match (g.get(k), w.get(k)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(_), Some(_)) => out.push(format!("{name}: {key} differs")),
                (Some(_), None) => out.push(format!("{name}: {key} is extra")),
                (None, Some(_)) => out.push(format!("{name}: {key} is missing")),
                (None, None) => {}
            }
        }
    }
    out
}
