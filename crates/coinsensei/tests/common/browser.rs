//! Running the dashboard's browser script (`crates/web/e2e/dashboard.mjs`) against a real
//! `coinsensei up`: where node finds playwright-core and Chromium, a port that stays the same
//! across a restart, and the script's process with its stdin/stdout protocol.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// Where playwright-core is installed: `COINSENSEI_E2E_NODE_MODULES` (set by `cargo xtask
/// test`), or `target/tools/e2e/node_modules`.
pub fn node_modules() -> PathBuf {
    let path = std::env::var_os("COINSENSEI_E2E_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/tools/e2e/node_modules"));
    assert!(
        path.join("playwright-core").exists(),
        "playwright-core is not installed in {}: run `cargo xtask test` (it installs it from npm), or set COINSENSEI_E2E_NODE_MODULES",
        path.display()
    );
    path
}

/// The browser: `COINSENSEI_CHROMIUM` (set by `cargo xtask test`), or Debian's chromium.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("COINSENSEI_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "no Chromium at {}: run `cargo xtask test` (it installs Debian's chromium), or set COINSENSEI_CHROMIUM",
        path.display()
    );
    path
}

/// Where the screenshots go: `target/dashboard-e2e/NAME`.
pub fn artifacts(name: &str) -> PathBuf {
    let dir = workspace().join("target/dashboard-e2e").join(name);
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

/// A loopback port free now, so that a restarted control plane can listen on it again.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The browser script, running.
pub struct Script {
    pub child: Child,
    pub stdin: ChildStdin,
    pub lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

/// Starts `dashboard.mjs` with `env` (see its header for the variables).
pub fn start_script(env: &[(&str, String)]) -> Script {
    start_script_named("dashboard.mjs", env)
}

/// Starts the browser script `crates/web/e2e/NAME` with `env`.
pub fn start_script_named(name: &str, env: &[(&str, String)]) -> Script {
    let mut command = Command::new("node");
    command
        .arg(workspace().join("crates/web/e2e").join(name))
        .env("NODE_MODULES", node_modules())
        .env("CHROMIUM", chromium())
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .expect("start node (the dashboard tests need node and npm)");
    let stdin = child.stdin.take().expect("stdin");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    Script {
        child,
        stdin,
        lines,
    }
}
