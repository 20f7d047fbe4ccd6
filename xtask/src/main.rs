//! Project chores, run as `cargo xtask <task>` (cargo-xtask convention):
//!
//! - `setup`: installs what the project needs from Debian's packages when missing
//!   (`nats-server`; `chromium` and `chromium-driver` for the browser test; `util-linux` for
//!   `prlimit`, which the disk-full test runs `handover` under), using apt-get as root or
//!   through sudo;
//! - `dev`: `setup`, then `handover dev --demo` (release build) — the README's run command;
//! - `test`: `setup`, then formatting, clippy with warnings as errors, rustdoc with warnings
//!   as errors, and the whole test suite — the README's test command, which `.ci/run` calls.

use std::path::Path;
use std::process::{exit, Command};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(true),
        Some("dev") => setup(false).and_then(|()| dev(&args[1..])),
        Some("test") | Some("ci") => setup(true).and_then(|()| test()),
        _ => {
            eprintln!("usage: cargo xtask <setup|dev|test>\n  setup  install nats-server, chromium, chromium-driver and prlimit if missing\n  dev    run the local backbone with demo data\n  test   fmt, clippy, docs and all tests (the CI entry point)");
            exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        exit(1);
    }
}

type Result = std::result::Result<(), String>;

fn run(cmd: &mut Command) -> Result {
    eprintln!("$ {}", format!("{cmd:?}").replace('"', ""));
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn have(bin: &str, also: &[&str]) -> bool {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    on_path || also.iter().any(|p| Path::new(p).is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn apt_install(packages: &[&str]) -> Result {
    let sudo = !is_root();
    if sudo && !have("sudo", &[]) {
        return Err(format!(
            "{} missing and not root: install with `apt-get install {}` as root",
            packages.join(", "),
            packages.join(" ")
        ));
    }
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            c.arg("apt-get");
        }
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run(&mut apt(&["update", "-q"]))?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(packages);
    run(&mut apt(&args))
}

/// Installs what the project needs from Debian when missing: nats-server (the event log
/// for `dev` and the tests) and, with `for_tests`, chromium and chromium-driver (the web
/// UI's browser test) and util-linux's `prlimit` (the disk-full test's file-size limit).
fn setup(for_tests: bool) -> Result {
    let mut missing = Vec::new();
    if !have("nats-server", &["/usr/sbin/nats-server"]) {
        missing.push("nats-server");
    }
    if for_tests && !have("chromium", &["/usr/bin/chromium"]) {
        missing.push("chromium");
    }
    if for_tests && !have("chromedriver", &["/usr/bin/chromedriver"]) {
        missing.push("chromium-driver");
    }
    if for_tests && !have("prlimit", &["/usr/bin/prlimit"]) {
        missing.push("util-linux");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing missing Debian packages: {}", missing.join(" "));
    apt_install(&missing)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn dev(extra: &[String]) -> Result {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "handover",
        "--",
        "dev",
        "--demo",
    ]);
    c.args(extra);
    run(&mut c)
}

fn test() -> Result {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo()
        .args(["doc", "--workspace", "--no-deps", "--quiet"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    run(cargo().args(["test", "--workspace"]))
}
