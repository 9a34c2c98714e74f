//! The local supervisor behind `coinsensei up`: keeps one child process per configured
//! worker alive, restarting a dead one with backoff, and stops them all cleanly. Children
//! may be added while it runs and retired one by one (the autoscaler's): a retired child
//! is drained like any stopping one (SIGTERM: in-flight jobs finish) and not restarted.
//!
//! Each child gets a pipe as its stdin and exits (gracefully) when it reads end-of-file, so
//! children never outlive a supervisor that was killed outright. Every unexpected exit is
//! written to the audit log with its exit status.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
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

/// The supervisor of one `up`: children can be added while it runs (the autoscaler's extra
/// workers) and retired (drained by SIGTERM, then not restarted).
pub struct Supervisor {
    config: SupervisorConfig,
    store: Store,
    cancel: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
    /// Each child still kept alive or draining, with its own retirement signal; an id
    /// leaves when its child is gone for good.
    children: Arc<Mutex<HashMap<WorkerId, CancellationToken>>>,
}

impl Supervisor {
    /// A supervisor whose children all stop when `cancel` fires.
    pub fn new(config: SupervisorConfig, store: Store, cancel: CancellationToken) -> Self {
        Supervisor {
            config,
            store,
            cancel,
            tasks: Mutex::new(JoinSet::new()),
            children: Arc::default(),
        }
    }

    /// Starts keeping `spec` alive. False, and nothing started, while a child of that id is
    /// still kept alive or draining (two processes on one id would fence each other out).
    pub fn spawn(&self, spec: ChildSpec) -> bool {
        let retire = CancellationToken::new();
        {
            let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
            if children.contains_key(&spec.id) {
                return false;
            }
            children.insert(spec.id.clone(), retire.clone());
        }
        let config = self.config.clone();
        let store = self.store.clone();
        let cancel = self.cancel.clone();
        let children = Arc::clone(&self.children);
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .spawn(async move {
                let id = spec.id.clone();
                keep_alive(spec, config, store, cancel, retire).await;
                children
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        true
    }

    /// Whether a child of this id is kept alive or still draining.
    pub fn has(&self, id: &WorkerId) -> bool {
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
    }

    /// Retires a child: SIGTERM (it finishes its in-flight jobs within its drain timeout and
    /// reports `offline`), no restart, an audit entry `worker.retired` with the drain time.
    /// Returns at once; false if no such child runs.
    pub fn retire(&self, id: &WorkerId) -> bool {
        let children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        children.get(id).map(CancellationToken::cancel).is_some()
    }

    /// Waits until every child has stopped (after `cancel`, or each retired or given up on).
    pub async fn wait(&self) {
        loop {
            let mut tasks =
                std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
            if tasks.is_empty() {
                return;
            }
            while tasks.join_next().await.is_some() {}
        }
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
    retire: CancellationToken,
) {
    let mut backoff = Backoff::new(config.respawn_backoff_min, config.respawn_backoff_max);
    loop {
        let started = Instant::now();
        let mut child = match spawn_child(&spec) {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(worker = %spec.id, program = %spec.program.display(), %error, "cannot start worker process");
                if wait_or_cancel(backoff.next_delay(), &cancel, &retire).await {
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
            () = retire.cancelled() => {
                let draining = Instant::now();
                stop_child(&spec, &mut child, config.stop_timeout).await;
                let drain_ms = u64::try_from(draining.elapsed().as_millis()).unwrap_or(u64::MAX);
                tracing::info!(worker = %spec.id, pid, drain_ms, "worker process retired");
                record(&store, &spec, "worker.retired", serde_json::json!({"pid": pid, "drain_ms": drain_ms})).await;
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
                if wait_or_cancel(delay, &cancel, &retire).await {
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

/// Sleeps for `delay`; returns true if cancelled or retired meanwhile.
async fn wait_or_cancel(
    delay: Duration,
    cancel: &CancellationToken,
    retire: &CancellationToken,
) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = retire.cancelled() => true,
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
