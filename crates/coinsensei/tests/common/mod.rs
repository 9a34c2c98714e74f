//! Driving the real `coinsensei` binary: commands, a running `up`, and HTTP probes. Shared by
//! the process tests and the benchmark.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_coinsensei");

pub mod anvil;
pub mod backend;
pub mod browser;
pub mod hooks;

/// A `coinsensei` command with none of the caller's `COINSENSEI_*` settings leaking in.
pub fn coinsensei<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("COINSENSEI_") {
            command.env_remove(key);
        }
    }
    command
        .env("COINSENSEI_LOG", "warn")
        .args(args)
        .kill_on_drop(true);
    command
}

/// Runs a command to completion against `database_url`.
pub async fn run(database_url: &str, args: &[&str]) -> Output {
    coinsensei(args)
        .env("COINSENSEI_DATABASE_URL", database_url)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run coinsensei")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A fresh API token of `role` made by `tokens create` (printed once).
pub async fn token(database_url: &str, role: &str, name: &str) -> String {
    let output = run(
        database_url,
        &["tokens", "create", "--role", role, "--name", name],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .find(|word| word.starts_with("cst_"))
        .expect("the token is printed")
        .to_string()
}

/// `coinsensei ledger reconcile --chain CHAIN --json` with `config`: every wallet line.
pub async fn ledger_reconcile(
    config: &Path,
    database_url: &str,
    chain: &str,
) -> Vec<serde_json::Value> {
    let ledger = coinsensei([
        "--config",
        config.to_str().unwrap(),
        "ledger",
        "reconcile",
        "--chain",
        chain,
        "--json",
    ])
    .env("COINSENSEI_DATABASE_URL", database_url)
    .stdin(Stdio::null())
    .output()
    .await
    .unwrap();
    serde_json::from_slice(&ledger.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", stderr(&ledger)))
}

/// `workers list --json`, parsed.
pub async fn workers_json(database_url: &str) -> Vec<serde_json::Value> {
    let output = run(database_url, &["workers", "list", "--json"]).await;
    assert!(
        output.status.success(),
        "workers list failed: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).expect("workers list --json prints JSON")
}

/// A configuration file in `dir` with fast heartbeats and the given workers.
pub fn write_config(
    dir: &Path,
    heartbeat_interval: f64,
    workers: &[(&str, &str)],
) -> std::path::PathBuf {
    let mut text = format!("heartbeat_interval = {heartbeat_interval}\ndrain_timeout = 2\n");
    for (kind, chain) in workers {
        text.push_str(&format!(
            "\n[[workers]]\nkind = \"{kind}\"\nchain = \"{chain}\"\n"
        ));
    }
    let path = dir.join("coinsensei.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A running `coinsensei up` (or `serve`).
pub struct Up {
    pub child: Child,
    pub address: SocketAddr,
    /// What it printed after its address (the rest of its banner, then anything later).
    pub printed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Up {
    /// Starts `up` with `args` and `env`, and waits for it to print its address.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Up {
        Up::start_command("up", args, env).await
    }

    /// Starts `serve`: the control plane and its reaper, no workers.
    pub async fn serve(args: &[&str], env: &[(&str, &str)]) -> Up {
        Up::start_command("serve", args, env).await
    }

    async fn start_command(command: &str, args: &[&str], env: &[(&str, &str)]) -> Up {
        Up::start_at(command, "127.0.0.1:0", args, env).await
    }

    /// Starts `command` (`up` or `serve`) listening on `listen`.
    pub async fn start_at(command: &str, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Up {
        let mut command = coinsensei([command, "--listen", listen].iter().chain(args));
        command
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("spawn coinsensei up");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let address = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(rest) = line.trim().strip_prefix("control plane") {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .expect("address after `control plane`");
                    return url
                        .trim_start_matches("http://")
                        .parse::<SocketAddr>()
                        .expect("address");
                }
            }
            panic!("coinsensei up exited before printing its address");
        })
        .await
        .expect("coinsensei up printed its address within 30 s");
        // Keep draining stdout so the child never blocks on a full pipe.
        let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        tokio::spawn({
            let printed = printed.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    printed.lock().unwrap().push(line);
                }
            }
        });
        Up {
            child,
            address,
            printed,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id().expect("running") as i32)
    }

    /// SIGINT, as Ctrl-C, and waits for a clean exit.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        kill(self.pid(), Signal::SIGINT).expect("signal up");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("up stops within 30 s")
            .expect("wait")
    }
}

/// A plain HTTP/1.0 GET; returns the status code and body. Hand-written because the tests
/// need nothing more and an HTTP client crate would cost build time.
pub async fn http_get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn signal(pid: i32, signal: Signal) {
    kill(Pid::from_raw(pid), signal).expect("send signal");
}

/// The worker with `id` in a `workers list --json` array.
pub fn find<'a>(workers: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    workers.iter().find(|worker| worker["id"] == id)
}

/// SIGKILLs the process of worker `id` once the registry shows it running under a pid other
/// than `previous` (a process killed before, whose row may name it until its successor
/// registers); returns the pid killed.
pub async fn kill_worker(database_url: &str, id: &str, previous: Option<i64>) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker {id} never ran under a new pid"
        );
        let workers = workers_json(database_url).await;
        if let Some(pid) = find(&workers, id)
            .filter(|worker| worker["status"] == "running")
            .and_then(|worker| worker["pid"].as_i64())
            .filter(|pid| Some(*pid) != previous)
            && kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
