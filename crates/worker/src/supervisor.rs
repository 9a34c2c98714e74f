//! The local supervisor behind `coinsensei up`: keeps one child process per configured
//! worker alive, restarting a dead one with backoff, and stops them all cleanly.
//!
//! Each child gets a pipe as its stdin and exits (gracefully) when it reads end-of-file, so
//! children never outlive a supervisor that was killed outright. Every unexpected exit is
//! written to the audit log with its exit status.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use domain::WorkerId;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use store::{AuditInsert, Store};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// Exit code of a worker process that found another process registered under its id. The
/// supervisor does not restart it: two processes taking turns on one id would only fence
/// each other out forever. It is an operator's mistake to surface, not to paper over.
pub const EXIT_SUPERSEDED: u8 = 3;

/// Exit code of a worker process that cannot run for a reason restarting will not change
/// (its id belongs to a worker of another kind, say); sysexits' EX_CONFIG. Not restarted.
pub const EXIT_PERMANENT: u8 = 78;

/// One child process to keep alive.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub id: WorkerId,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub respawn_backoff_min: Duration,
    pub respawn_backoff_max: Duration,
    /// A child that ran this long gets its backoff reset.
    pub stable_after: Duration,
    /// How long a child may take to drain after SIGTERM before it is killed.
    pub stop_timeout: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        use domain::limits::*;
        SupervisorConfig {
            respawn_backoff_min: RESPAWN_BACKOFF_MIN,
            respawn_backoff_max: RESPAWN_BACKOFF_MAX,
            stable_after: RESPAWN_STABLE_AFTER,
            stop_timeout: DRAIN_TIMEOUT_DEFAULT + Duration::from_secs(5),
        }
    }
}

pub struct Supervisor {
    children: Vec<ChildSpec>,
    config: SupervisorConfig,
    store: Store,
}

impl Supervisor {
    pub fn new(children: Vec<ChildSpec>, config: SupervisorConfig, store: Store) -> Self {
        Supervisor {
            children,
            config,
            store,
        }
    }

    /// Runs every child until `cancel` fires, then stops them all and returns.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tasks = JoinSet::new();
        for spec in self.children {
            let config = self.config.clone();
            let store = self.store.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move { keep_alive(spec, config, store, cancel).await });
        }
        while tasks.join_next().await.is_some() {}
    }
}

fn spawn_child(spec: &ChildSpec) -> std::io::Result<Child> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        // Its own process group: a Ctrl-C in the terminal reaches the supervisor only, which
        // then stops each child in order instead of all of them racing it.
        .process_group(0)
        .kill_on_drop(true);
    command.spawn()
}

async fn keep_alive(
    spec: ChildSpec,
    config: SupervisorConfig,
    store: Store,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(config.respawn_backoff_min, config.respawn_backoff_max);
    loop {
        let started = Instant::now();
        let mut child = match spawn_child(&spec) {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(worker = %spec.id, program = %spec.program.display(), %error, "cannot start worker process");
                if wait_or_cancel(backoff.next_delay(), &cancel).await {
                    return;
                }
                continue;
            }
        };
        // `Child::wait` closes the child's stdin, which the child reads as "supervisor gone":
        // hold the pipe here instead, for as long as this supervisor lives.
        let _stdin = child.stdin.take();
        let pid = child.id();
        tracing::info!(worker = %spec.id, pid, "worker process started");
        tokio::select! {
            () = cancel.cancelled() => {
                stop_child(&spec, &mut child, config.stop_timeout).await;
                return;
            }
            exit = child.wait() => {
                let code = exit.as_ref().ok().and_then(std::process::ExitStatus::code);
                let exit = exit.map(|status| status.to_string()).unwrap_or_else(|error| error.to_string());
                let final_exit = match code {
                    Some(code) if code == i32::from(EXIT_SUPERSEDED) => Some(("worker.superseded", "another process runs under this worker id")),
                    Some(code) if code == i32::from(EXIT_PERMANENT) => Some(("worker.failed", "the worker cannot run as configured (see its error above)")),
                    _ => None,
                };
                if let Some((action, reason)) = final_exit {
                    tracing::error!(worker = %spec.id, pid, %exit, "{reason}; not restarting it");
                    record(&store, &spec, action, serde_json::json!({"pid": pid, "exit": exit})).await;
                    return;
                }
                if started.elapsed() >= config.stable_after {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::error!(worker = %spec.id, pid, %exit, restart_in_ms = delay.as_millis() as u64, "worker process exited; restarting");
                let details = serde_json::json!({"pid": pid, "exit": exit, "restart_in_ms": delay.as_millis() as u64});
                record(&store, &spec, "worker.exited", details).await;
                if wait_or_cancel(delay, &cancel).await {
                    return;
                }
            }
        }
    }
}

async fn record(store: &Store, spec: &ChildSpec, action: &str, details: serde_json::Value) {
    let audit = AuditInsert {
        actor: "supervisor".into(),
        action: action.into(),
        target: format!("worker:{}", spec.id),
        details,
        now: Utc::now(),
    };
    if let Err(error) = store.audit_insert(&audit).await {
        tracing::warn!(worker = %spec.id, %error, "cannot record the exit in the audit log");
    }
}

/// Sleeps for `delay`; returns true if cancelled meanwhile.
async fn wait_or_cancel(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

/// SIGTERM, then SIGKILL if the child has not drained within `stop_timeout`.
async fn stop_child(spec: &ChildSpec, child: &mut Child, stop_timeout: Duration) {
    let Some(pid) = child.id() else { return };
    let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    if let Err(error) = kill(pid, Signal::SIGTERM) {
        tracing::warn!(worker = %spec.id, %error, "cannot signal worker process");
    }
    match tokio::time::timeout(stop_timeout, child.wait()).await {
        Ok(_) => tracing::info!(worker = %spec.id, "worker process stopped"),
        Err(_) => {
            tracing::warn!(worker = %spec.id, "worker process did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
}
