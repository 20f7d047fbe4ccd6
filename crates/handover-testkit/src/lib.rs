//! Test support for Handover: real nats-server processes per test.
//!
//! Every [`NatsServer`] and [`NatsCluster`] is fully per-instance: its own
//! free loopback ports, its own temporary store directory and its own log
//! file, so tests can run in parallel in one process. Processes are killed
//! when the value is dropped, and the temporary directory goes with it.
//!
//! The API is blocking (std only); call it from `spawn_blocking` or before
//! building a runtime if you are in async code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a single server gets to become healthy.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a cluster gets to elect a JetStream meta leader.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);
/// How many times a start is retried with fresh ports (port races).
const START_ATTEMPTS: usize = 5;
/// The message given when no nats-server binary can be found.
const NOT_FOUND: &str =
    "nats-server not found: run `cargo xtask setup` or `apt-get install nats-server`";

/// Polls `f` with a short backoff until it returns `true`.
///
/// Panics with a message naming `what` if `timeout` passes first. `f` is
/// always called at least once, and once more right at the deadline.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        if f() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            // One last look, so a slow `f` is not punished by the sleep.
            if f() {
                return;
            }
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(delay.min(deadline - now));
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// Finds the `nats-server` binary on `PATH` or in the usual system places.
///
/// Panics with setup instructions if there is none.
fn nats_server_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .map(|dir| dir.join("nats-server"))
        .chain(
            [
                "/usr/sbin/nats-server",
                "/usr/local/bin/nats-server",
                "/usr/bin/nats-server",
            ]
            .into_iter()
            .map(PathBuf::from),
        )
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{NOT_FOUND}"))
}

/// Returns `n` distinct free loopback ports.
///
/// The listeners are held until all ports are chosen so the ports are
/// distinct, then released; another process could still take one before the
/// server binds it, which is why starts are retried.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Whether a NATS server answers on `port` with its `INFO` greeting.
fn nats_greets(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&loopback(port), Duration::from_millis(250)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).is_ok() && &buf == b"INFO "
}

/// A plain HTTP/1.0 GET on the loopback `port`: `(status, body)`.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&loopback(port), Duration::from_millis(250)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Whether the monitoring endpoint on `port` reports healthy with JetStream.
fn healthy(monitor_port: u16) -> bool {
    matches!(
        http_get(monitor_port, "/healthz?js-enabled-only=true"),
        Some((200, _))
    )
}

/// Whether `/jsz` on `monitor_port` reports a JetStream meta leader.
///
/// Parsed by hand to keep this crate free of JSON dependencies: looks for
/// `"leader": "<non-empty>"` inside the `"meta_cluster"` object.
fn has_meta_leader(monitor_port: u16) -> bool {
    let Some((200, body)) = http_get(monitor_port, "/jsz") else {
        return false;
    };
    meta_leader(&body).is_some()
}

/// Extracts the meta leader's name from a `/jsz` body, if there is one.
fn meta_leader(body: &str) -> Option<String> {
    let meta = &body[body.find("\"meta_cluster\"")?..];
    let end = meta.find('}').unwrap_or(meta.len());
    let meta = &meta[..end];
    let after = &meta[meta.find("\"leader\"")? + "\"leader\"".len()..];
    let after = after.trim_start().strip_prefix(':')?.trim_start();
    let value = after.strip_prefix('"')?;
    let name = &value[..value.find('"')?];
    (!name.is_empty()).then(|| name.to_string())
}

/// One nats-server process with fixed ports, arguments and log file.
#[derive(Debug)]
struct Proc {
    child: Option<Child>,
    args: Vec<String>,
    client_port: u16,
    monitor_port: u16,
    log_path: PathBuf,
}

impl Proc {
    fn new(args: Vec<String>, client_port: u16, monitor_port: u16, log_path: PathBuf) -> Self {
        Self {
            child: None,
            args,
            client_port,
            monitor_port,
            log_path,
        }
    }

    /// Spawns the process (stdout and stderr appended to the log file).
    fn spawn(&mut self) -> Result<(), String> {
        self.kill();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("open log {}: {e}", self.log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("clone log: {e}"))?;
        let child = Command::new(nats_server_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| format!("spawn nats-server: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends the process `SIG<name>` (by the shell's `kill`, so no libc binding is needed).
    fn signal(&mut self, name: &str) {
        let Some(c) = self.child.as_ref() else {
            panic!("nats-server is not running");
        };
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{name} {}", c.id())])
            .status()
            .unwrap_or_else(|e| panic!("could not run kill -{name}: {e}"));
        assert!(status.success(), "kill -{name} {} failed", c.id());
    }

    /// SIGKILLs the process (on Unix `Child::kill` is SIGKILL) and reaps it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the client port greets and the health check passes.
    ///
    /// Fails early if the process exits (e.g. a port was taken).
    fn wait_healthy(&mut self, deadline: Instant) -> Result<(), String> {
        let mut delay = Duration::from_millis(5);
        loop {
            if !self.is_running() {
                return Err(format!(
                    "nats-server exited during start-up:\n{}",
                    self.log()
                ));
            }
            if nats_greets(self.client_port) && healthy(self.monitor_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nats-server on port {} not healthy in time:\n{}",
                    self.client_port,
                    self.log()
                ));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real single-node `nats-server` with JetStream, on free loopback ports.
///
/// ```no_run
/// let nats = handover_testkit::NatsServer::start();
/// println!("connect to {}", nats.url());
/// ```
#[derive(Debug)]
pub struct NatsServer {
    // Declared before `dir` so the process is killed before the store goes.
    proc: Proc,
    store_dir: PathBuf,
    _dir: TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream and waits until it is healthy.
    ///
    /// Panics if `nats-server` is missing or does not become healthy after
    /// a few attempts with fresh ports.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Like [`NatsServer::start`], with extra command-line arguments
    /// appended (kept for [`NatsServer::restart`]).
    pub fn start_with_args(extra: &[&str]) -> Self {
        Self::launch("", |_, store_dir, port, monitor| {
            let mut args: Vec<String> = vec![
                "-js".into(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-m".into(),
                monitor.to_string(),
                "-sd".into(),
                store_dir.display().to_string(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        })
    }

    /// Starts a server from configuration files instead of flags, e.g. a copy of a
    /// deployment's `nats-server.conf` and the files it includes.
    ///
    /// `files` are `(name, text)` pairs written side by side into the server's temporary
    /// directory (so relative `include`s resolve); the first is passed with `-c`. In every
    /// text, `{{port}}`, `{{monitor_port}}` and `{{store_dir}}` are replaced by the chosen
    /// client port, monitoring port and store directory: the configuration must listen on
    /// `127.0.0.1:{{port}}`, serve monitoring on `{{monitor_port}}` and enable JetStream in
    /// `{{store_dir}}` (nats-server refuses a `store_dir` given both as flag and in a file).
    pub fn start_with_config(files: &[(&str, &str)]) -> Self {
        assert!(!files.is_empty(), "no configuration file given");
        Self::launch(
            "with configuration files ",
            |dir, store_dir, port, monitor| {
                for (name, text) in files {
                    let text = text
                        .replace("{{port}}", &port.to_string())
                        .replace("{{monitor_port}}", &monitor.to_string())
                        .replace("{{store_dir}}", &store_dir.display().to_string());
                    std::fs::write(dir.join(name), text).expect("write configuration");
                }
                vec!["-c".to_string(), dir.join(files[0].0).display().to_string()]
            },
        )
    }

    /// Starts a server in a fresh temporary directory on fresh ports, with the arguments
    /// `args(dir, store_dir, port, monitor_port)` returns, retrying a few times.
    fn launch(what: &str, mut args: impl FnMut(&Path, &Path, u16, u16) -> Vec<String>) -> Self {
        let binary = nats_server_binary();
        let mut last_err = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("handover-nats-")
                .tempdir()
                .expect("create temp dir");
            let store_dir = dir.path().join("store");
            std::fs::create_dir_all(&store_dir).expect("create store dir");
            let log_path = dir.path().join("nats-server.log");
            let ports = free_ports(2);
            let (port, monitor) = (ports[0], ports[1]);
            let args = args(dir.path(), &store_dir, port, monitor);
            let mut proc = Proc::new(args, port, monitor, log_path);
            let started = proc
                .spawn()
                .and_then(|()| proc.wait_healthy(Instant::now() + START_DEADLINE));
            match started {
                Ok(()) => {
                    return Self {
                        proc,
                        store_dir,
                        _dir: dir,
                    }
                }
                Err(e) => last_err = e,
            }
        }
        panic!(
            "could not start {} {what}after {START_ATTEMPTS} attempts: {last_err}",
            binary.display()
        );
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.proc.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.proc.client_port
    }

    /// The HTTP monitoring port.
    pub fn monitor_port(&self) -> u16 {
        self.proc.monitor_port
    }

    /// The JetStream store directory (kept across [`NatsServer::restart`]).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Kills the server with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Freezes the server with SIGSTOP: its connections stay open and nothing is answered,
    /// as with a hung server or a half-open network path. [`NatsServer::thaw`] resumes it.
    pub fn freeze(&mut self) {
        self.proc.signal("STOP");
    }

    /// Resumes a server frozen by [`NatsServer::freeze`] (SIGCONT).
    pub fn thaw(&mut self) {
        self.proc.signal("CONT");
    }

    /// Starts the server again on the same port with the same store and
    /// waits until it is healthy. Kills it first if it is still running.
    pub fn restart(&mut self) {
        let mut last_err = String::new();
        for _ in 0..START_ATTEMPTS {
            match self
                .proc
                .spawn()
                .and_then(|()| self.proc.wait_healthy(Instant::now() + START_DEADLINE))
            {
                Ok(()) => return,
                Err(e) => last_err = e,
            }
        }
        panic!(
            "could not restart nats-server on port {}: {last_err}",
            self.port()
        );
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// The server's log so far (all starts), for debugging failures.
    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// A JetStream cluster of real `nats-server` processes on loopback.
///
/// Nodes are named `n1`, `n2`, ... in cluster `handover`, each with its own
/// client, cluster and monitoring ports and store directory.
#[derive(Debug)]
pub struct NatsCluster {
    // Declared before `dir` so the processes die before their stores go.
    nodes: Vec<Proc>,
    store_dirs: Vec<PathBuf>,
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts an `n`-node cluster (use 3) and waits until every node is
    /// healthy and every node sees an elected JetStream meta leader.
    pub fn start(n: usize) -> Self {
        assert!(n >= 1, "a cluster needs at least one node");
        let mut last_err = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(n) {
                Ok(c) => return c,
                Err(e) => last_err = e,
            }
        }
        panic!(
            "could not start a {n}-node nats cluster after {START_ATTEMPTS} attempts: {last_err}"
        );
    }

    fn try_start(n: usize) -> Result<Self, String> {
        // Checked first so a missing binary panics with the setup hint.
        nats_server_binary();
        let dir = tempfile::Builder::new()
            .prefix("handover-nats-cluster-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let ports = free_ports(3 * n);
        let route = |i: usize| format!("nats://127.0.0.1:{}", ports[3 * i + 1]);
        let mut nodes = Vec::with_capacity(n);
        let mut store_dirs = Vec::with_capacity(n);
        for i in 0..n {
            let (client, cluster, monitor) = (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]);
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name).join("store");
            std::fs::create_dir_all(&store).map_err(|e| format!("store dir: {e}"))?;
            let routes: Vec<String> = (0..n).filter(|&j| j != i).map(route).collect();
            let mut args: Vec<String> = vec![
                "-js".into(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                client.to_string(),
                "-m".into(),
                monitor.to_string(),
                "-sd".into(),
                store.display().to_string(),
                "-n".into(),
                name.clone(),
                "--cluster_name".into(),
                "handover".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{cluster}"),
            ];
            if !routes.is_empty() {
                args.push("--routes".into());
                args.push(routes.join(","));
            }
            let log = dir.path().join(format!("{name}.log"));
            nodes.push(Proc::new(args, client, monitor, log));
            store_dirs.push(store);
        }
        for node in &mut nodes {
            node.spawn()?;
        }
        let deadline = Instant::now() + START_DEADLINE;
        for node in &mut nodes {
            node.wait_healthy(deadline)?;
        }
        let mut cluster = Self {
            nodes,
            store_dirs,
            _dir: dir,
        };
        cluster.wait_meta_leader(Instant::now() + CLUSTER_DEADLINE)?;
        Ok(cluster)
    }

    /// Waits until every running node reports a meta leader in `/jsz`.
    fn wait_meta_leader(&mut self, deadline: Instant) -> Result<(), String> {
        let mut delay = Duration::from_millis(10);
        loop {
            let mut all = true;
            for node in &mut self.nodes {
                if node.child.is_some() && !node.is_running() {
                    return Err(format!("node exited:\n{}", node.log()));
                }
                if node.child.is_some() && !has_meta_leader(node.monitor_port) {
                    all = false;
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no JetStream meta leader in time:\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never true for a started cluster).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Client URLs of all nodes, `nats://127.0.0.1:PORT`, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect()
    }

    /// Client port of node `i` (0-based; node `i` is named `n{i+1}`).
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].client_port
    }

    /// HTTP monitoring port of node `i`.
    pub fn monitor_port(&self, i: usize) -> u16 {
        self.nodes[i].monitor_port
    }

    /// Store directory of node `i`.
    pub fn store_dir(&self, i: usize) -> &Path {
        &self.store_dirs[i]
    }

    /// The current JetStream meta leader's server name as seen by the
    /// first running node, if one is elected.
    pub fn meta_leader(&mut self) -> Option<String> {
        let port = self
            .nodes
            .iter_mut()
            .find_map(|n| n.is_running().then_some(n.monitor_port))?;
        let (status, body) = http_get(port, "/jsz")?;
        if status == 200 {
            meta_leader(&body)
        } else {
            None
        }
    }

    /// SIGKILLs node `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Whether node `i` is alive.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i].is_running()
    }

    /// Starts node `i` again with the same ports and store, and waits until
    /// it is healthy and sees a meta leader.
    pub fn restart(&mut self, i: usize) {
        let mut last_err = String::new();
        for _ in 0..START_ATTEMPTS {
            let node = &mut self.nodes[i];
            let started = node
                .spawn()
                .and_then(|()| node.wait_healthy(Instant::now() + START_DEADLINE))
                .and_then(|()| self.wait_meta_leader(Instant::now() + CLUSTER_DEADLINE));
            match started {
                Ok(()) => return,
                Err(e) => last_err = e,
            }
        }
        panic!("could not restart cluster node n{}: {last_err}", i + 1);
    }

    /// Node `i`'s log so far, for debugging failures.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log()
    }

    /// All nodes' logs, each under a header line.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("===== n{} =====\n{}", i + 1, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether something accepts TCP connections on the loopback `port`.
    fn port_accepts(port: u16) -> bool {
        TcpStream::connect_timeout(&loopback(port), Duration::from_millis(250)).is_ok()
    }

    #[test]
    fn start_kill_restart() {
        let mut nats = NatsServer::start();
        assert!(nats.url().starts_with("nats://127.0.0.1:"));
        assert!(nats.url().ends_with(&nats.port().to_string()));
        assert!(nats.is_running());
        assert!(nats_greets(nats.port()), "log:\n{}", nats.log());

        nats.kill();
        assert!(!nats.is_running());
        assert!(!port_accepts(nats.port()), "port still accepts after kill");

        let port = nats.port();
        nats.restart();
        assert_eq!(nats.port(), port);
        assert!(nats.is_running());
        assert!(nats_greets(nats.port()));
        assert!(
            nats.log().contains("Server is ready"),
            "log:\n{}",
            nats.log()
        );
    }

    #[test]
    fn parallel_servers_get_different_ports() {
        let a = std::thread::spawn(NatsServer::start);
        let b = std::thread::spawn(NatsServer::start);
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_ne!(a.port(), b.port());
        assert_ne!(a.store_dir(), b.store_dir());
        assert!(nats_greets(a.port()) && nats_greets(b.port()));
    }

    #[test]
    fn store_dir_persists_across_restart() {
        let mut nats = NatsServer::start();
        let store = nats.store_dir().to_path_buf();
        assert!(store.is_dir());
        // JetStream creates its own directory in the store once enabled.
        wait_until(Duration::from_secs(5), "jetstream dir in store", || {
            store.join("jetstream").is_dir()
        });
        let marker = store.join("marker");
        std::fs::write(&marker, b"kept").unwrap();
        nats.kill();
        nats.restart();
        assert_eq!(nats.store_dir(), store);
        assert_eq!(std::fs::read(&marker).unwrap(), b"kept");
        assert!(nats.log().contains(&store.display().to_string()));
    }

    #[test]
    fn drop_kills_and_removes_temp_dir() {
        let nats = NatsServer::start();
        let (port, store) = (nats.port(), nats.store_dir().to_path_buf());
        drop(nats);
        assert!(!port_accepts(port));
        assert!(!store.exists());
    }

    #[test]
    fn extra_args_are_passed_and_kept() {
        let mut nats = NatsServer::start_with_args(&["--server_name", "extra-args-test"]);
        let varz = || http_get(nats.monitor_port(), "/varz").unwrap().1;
        assert!(varz().contains("extra-args-test"));
        nats.restart();
        let varz = http_get(nats.monitor_port(), "/varz").unwrap().1;
        assert!(varz.contains("extra-args-test"));
    }

    #[test]
    fn configuration_files_with_an_include() {
        let main = "listen: 127.0.0.1:{{port}}\nhttp: 127.0.0.1:{{monitor_port}}\n\
                    jetstream { store_dir: \"{{store_dir}}\" }\ninclude ./extra.conf\n";
        let mut nats = NatsServer::start_with_config(&[
            ("main.conf", main),
            ("extra.conf", "server_name: from-include\n"),
        ]);
        let varz = http_get(nats.monitor_port(), "/varz").unwrap().1;
        assert!(varz.contains("from-include"), "{varz}");
        assert!(nats.store_dir().join("jetstream").is_dir());
        nats.restart();
        assert!(nats_greets(nats.port()));
    }

    #[test]
    fn three_node_cluster() {
        let mut cluster = NatsCluster::start(3);
        assert_eq!(cluster.len(), 3);
        let urls = cluster.urls();
        assert_eq!(urls.len(), 3);
        let mut ports: Vec<u16> = (0..3).map(|i| cluster.port(i)).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3);
        let leader = cluster.meta_leader().expect("meta leader");
        assert!(["n1", "n2", "n3"].contains(&leader.as_str()), "{leader}");

        cluster.kill(1);
        assert!(!cluster.is_running(1));
        assert!(!port_accepts(cluster.port(1)));
        cluster.restart(1);
        assert!(cluster.is_running(1));
        assert!(nats_greets(cluster.port(1)));
        assert!(
            has_meta_leader(cluster.monitor_port(1)),
            "{}",
            cluster.logs()
        );
    }

    #[test]
    fn wait_until_returns_when_true() {
        let mut n = 0;
        wait_until(Duration::from_secs(1), "counter", || {
            n += 1;
            n >= 3
        });
        assert_eq!(n, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn wait_until_panics_with_what() {
        wait_until(Duration::from_millis(30), "the impossible", || false);
    }

    #[test]
    fn meta_leader_parsing() {
        let with = r#"{"server_id":"x","meta_cluster": {"name": "handover", "leader": "n2", "cluster_size": 3}}"#;
        assert_eq!(meta_leader(with).as_deref(), Some("n2"));
        let without = r#"{"meta_cluster": {"name": "handover", "cluster_size": 3}}"#;
        assert_eq!(meta_leader(without), None);
        let empty = r#"{"meta_cluster": {"leader": ""}}"#;
        assert_eq!(meta_leader(empty), None);
        assert_eq!(meta_leader("{}"), None);
    }
}
