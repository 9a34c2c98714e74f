//! `coinsensei health`: the health checker's report, from the database (judged here, once:
//! error rate and job progress cover each worker's life since it started, there being no
//! earlier reading) or from a control plane (`--server`, judged over its window). The exit
//! code is the worst status: 0 healthy, 1 warning, 2 unhealthy.
//!
//! Also the control plane's actions: a worker unhealthy for longer than the grace period is
//! restarted through the same audited control as an operator's, and a chain's withdrawal
//! queue is paused while its node is unhealthy and resumed when it recovers
//! ([`NodePauses`]).

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::health::HealthLevel;
use domain::{Chain, ControlAction, DesiredState, WorkerKind, WorkerStatus};
use serde_json::{Value, json};
use store::{AuditInsert, AuditList, Store, WorkerControl};
use tokio_util::sync::CancellationToken;
use web::health::{Floor, HealthMonitor, HealthReport, NodeProbe};

use crate::config::{QueueSettings, Settings};

/// The monitor the control plane shares between the API, `/metrics` and its actions; with
/// `nodes`, it judges the configured chains' nodes too (probed every `probe_every`).
pub fn monitor(
    settings: &Settings,
    nodes: Option<Arc<dyn NodeProbe>>,
    probe_every: Duration,
) -> Arc<HealthMonitor> {
    let floors = settings
        .withdrawals
        .policies
        .iter()
        .filter_map(|policy| {
            let asset = settings
                .withdrawals
                .catalogue
                .get(policy.chain, &policy.asset)
                .ok()?;
            Some(Floor {
                chain: policy.chain,
                asset: policy.asset.clone(),
                decimals: asset.decimals,
                floor: policy.floor?,
            })
        })
        .collect();
    let mut monitor = HealthMonitor::new(
        settings.health.limits.clone(),
        matches!(settings.queue, QueueSettings::Database),
    )
    .with_floors(floors);
    if let Some(nodes) = nodes {
        // A probe round takes at most the timeout; an answer older than two rounds and
        // three intervals means the probing stalled, and is not believed.
        let timeout = settings.health.node_timeout;
        monitor = monitor.with_nodes(nodes, timeout, timeout * 2 + probe_every * 3);
    }
    Arc::new(monitor)
}

pub async fn local(settings: Settings, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let monitor = monitor(
        &settings,
        Some(crate::chains::clients(&settings)),
        settings.heartbeat_interval,
    );
    // Bounded by the node timeout; a node that does not answer is reported unreachable.
    monitor.probe_nodes().await;
    let report = tokio::time::timeout(
        domain::limits::STORE_CALL_TIMEOUT,
        monitor.evaluate(&store, Utc::now()),
    )
    .await;
    store.close().await;
    let report = report.map_err(|_| {
        anyhow::anyhow!(
            "the database did not answer within {:?}",
            domain::limits::STORE_CALL_TIMEOUT
        )
    })??;
    print(&web::health::report_json(&report), as_json)
}

pub async fn remote(remote: &super::remote::Remote, as_json: bool) -> anyhow::Result<ExitCode> {
    let report = remote.get(&["api", "admin", "health"], &[]).await?;
    print(&report, as_json)
}

/// Prints the report, and exits with its worst status.
fn print(report: &Value, as_json: bool) -> anyhow::Result<ExitCode> {
    let status = report["status"].as_str().unwrap_or("unhealthy");
    if as_json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("overall: {status}");
        let empty = Vec::new();
        let subjects = report["workers"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|worker| {
                (
                    format!("worker {}", worker["id"].as_str().unwrap_or("?")),
                    worker,
                )
            })
            .chain(
                report["chains"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .map(|chain| {
                        (
                            format!("chain {}", chain["blockchain"].as_str().unwrap_or("?")),
                            chain,
                        )
                    }),
            );
        for (name, subject) in subjects {
            println!("{name:<34} {}", subject["status"].as_str().unwrap_or("?"));
            for check in subject["checks"].as_array().unwrap_or(&empty) {
                println!(
                    "  {:<20} {:<9} {}",
                    check["name"].as_str().unwrap_or("?"),
                    check["status"].as_str().unwrap_or("?"),
                    check["reason"].as_str().unwrap_or(""),
                );
            }
        }
    }
    Ok(ExitCode::from(match status {
        "healthy" => HealthLevel::Healthy.code(),
        "warning" => HealthLevel::Warning.code(),
        _ => HealthLevel::Unhealthy.code(),
    }))
}

/// Restarts, through the audited control, every worker unhealthy for `grace` that can hear
/// it (desired running, alive: its heartbeat check is not what failed). Returns the ids.
pub async fn restart_unhealthy(
    store: &Store,
    monitor: &HealthMonitor,
    report: &HealthReport,
    grace: Duration,
) -> Vec<String> {
    let mut restarted = Vec::new();
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    for worker in &report.workers {
        let Some(since) = worker.unhealthy_since else {
            continue;
        };
        let heartbeat_dead = worker
            .checks
            .iter()
            .any(|check| check.name == "heartbeat" && check.level == HealthLevel::Unhealthy);
        let alive = matches!(
            worker.worker_status,
            WorkerStatus::Running | WorkerStatus::Error
        );
        if report.evaluated_at - since < grace || heartbeat_dead || !alive {
            continue;
        }
        let reasons: Vec<String> = worker
            .checks
            .iter()
            .filter(|check| check.level != HealthLevel::Healthy)
            .map(|check| format!("{}: {}", check.name, check.reason))
            .collect();
        let control = WorkerControl {
            id: worker.id.clone(),
            action: ControlAction::Restart,
            actor: "health".into(),
            now: Utc::now(),
        };
        match store.worker_control(&control).await {
            Ok(row) if row.desired_state == DesiredState::Running => {
                tracing::warn!(worker = %worker.id, reasons = ?reasons, "restarting a worker unhealthy past its grace period");
                monitor.forget_unhealthy(&worker.id);
                restarted.push(worker.id.to_string());
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(worker = %worker.id, %error, "cannot restart an unhealthy worker");
            }
        }
    }
    restarted
}

/// The health action on chains' nodes: pause a chain's withdrawal queue once its node has
/// been unhealthy for the grace period, and resume it when the node recovers, both audited
/// (`queue.pause` / `queue.resume`, actor `health`, the reasons in the details).
///
/// It acts once per outage: a queue already paused when the outage is noticed (an
/// operator's) is left alone, and so is a queue an operator resumes during the outage. It
/// resumes only a queue whose latest pause or resume in the audit log is its own pause, so an
/// operator's pause is never undone, also after a restart of the control plane (the
/// audit log remembers; this struct only remembers which outages were handled).
#[derive(Debug, Default)]
pub struct NodePauses {
    /// Chains whose current outage has been acted on (paused, or found paused by someone).
    handled: HashSet<Chain>,
    /// Chains healthy since their queue was last looked at for a pause of ours: nothing to
    /// resume, so a healthy round reads no queue statistics.
    settled: HashSet<Chain>,
}

/// The actor the health checker's actions are audited as.
const ACTOR: &str = "health";

impl NodePauses {
    /// One round over the report's chains. Returns the queues paused and resumed.
    pub async fn act(
        &mut self,
        store: &Store,
        backend: &dyn queue::Backend,
        report: &HealthReport,
        grace: Duration,
    ) -> (Vec<String>, Vec<String>) {
        let mut paused = Vec::new();
        let mut resumed = Vec::new();
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        for chain in &report.chains {
            let Some(node_level) = chain.node_level else {
                continue;
            };
            let queue = queue::queue_for(WorkerKind::Withdrawal, chain.chain);
            let outcome = if node_level == HealthLevel::Unhealthy {
                self.settled.remove(&chain.chain);
                let Some(since) = chain.node_unhealthy_since else {
                    continue;
                };
                if report.evaluated_at - since < grace || self.handled.contains(&chain.chain) {
                    continue;
                }
                self.pause(store, backend, chain, &queue).await.map(|done| {
                    if done {
                        paused.push(queue.to_string());
                    }
                })
            } else if self.settled.contains(&chain.chain) {
                continue;
            } else {
                self.handled.remove(&chain.chain);
                self.resume(store, backend, chain, &queue)
                    .await
                    .map(|done| {
                        if done {
                            resumed.push(queue.to_string());
                        }
                    })
            };
            if let Err(error) = outcome {
                // Tried again at the next round.
                tracing::warn!(chain = %chain.chain, %queue, error = %format!("{error:#}"), "the health action on a chain's withdrawals failed");
            }
        }
        (paused, resumed)
    }

    async fn pause(
        &mut self,
        store: &Store,
        backend: &dyn queue::Backend,
        chain: &web::health::ChainHealth,
        queue: &domain::Name,
    ) -> anyhow::Result<bool> {
        let now = Utc::now();
        let stats = backend.stats(now).await?;
        let Some(stats) = stats.iter().find(|each| each.name == *queue) else {
            // No withdrawal was ever queued on this chain: nothing to pause.
            self.handled.insert(chain.chain);
            return Ok(false);
        };
        if stats.paused {
            // Someone paused it already: theirs to resume.
            self.handled.insert(chain.chain);
            return Ok(false);
        }
        let reasons = failing(chain);
        backend.pause(queue, true, now).await?;
        self.handled.insert(chain.chain);
        tracing::warn!(chain = %chain.chain, %queue, ?reasons, "pausing a chain's withdrawals: its node is unhealthy");
        audit(store, "queue.pause", queue, chain, reasons).await;
        Ok(true)
    }

    async fn resume(
        &mut self,
        store: &Store,
        backend: &dyn queue::Backend,
        chain: &web::health::ChainHealth,
        queue: &domain::Name,
    ) -> anyhow::Result<bool> {
        let now = Utc::now();
        let stats = backend.stats(now).await?;
        if !stats.iter().any(|each| each.name == *queue && each.paused) {
            self.settled.insert(chain.chain);
            return Ok(false);
        }
        if !paused_by_health(store, queue).await? {
            self.settled.insert(chain.chain);
            return Ok(false);
        }
        backend.pause(queue, false, now).await?;
        self.settled.insert(chain.chain);
        tracing::info!(chain = %chain.chain, %queue, "resuming a chain's withdrawals: its node recovered");
        audit(store, "queue.resume", queue, chain, failing(chain)).await;
        Ok(true)
    }
}

/// The chain's checks that are not healthy, as `name: reason`.
fn failing(chain: &web::health::ChainHealth) -> Vec<String> {
    chain
        .checks
        .iter()
        .filter(|check| check.level != HealthLevel::Healthy)
        .map(|check| format!("{}: {}", check.name, check.reason))
        .collect()
}

/// Whether the queue's newest pause or resume in the audit log is the health checker's
/// pause.
async fn paused_by_health(store: &Store, queue: &domain::Name) -> anyhow::Result<bool> {
    let target = format!("queue:{queue}");
    let newest = |action: &str| {
        let list = AuditList {
            action: Some(action.into()),
            target: Some(target.clone()),
            limit: 1,
            ..Default::default()
        };
        async move { store.audit_list(&list).await }
    };
    let pause = newest("queue.pause").await?.into_iter().next();
    let resume = newest("queue.resume").await?.into_iter().next();
    Ok(match (pause, resume) {
        (Some(pause), resume) => {
            pause.actor == ACTOR && resume.is_none_or(|resume| resume.id < pause.id)
        }
        (None, _) => false,
    })
}

async fn audit(
    store: &Store,
    action: &str,
    queue: &domain::Name,
    chain: &web::health::ChainHealth,
    reasons: Vec<String>,
) {
    let insert = AuditInsert {
        actor: ACTOR.into(),
        action: action.into(),
        target: format!("queue:{queue}"),
        details: json!({
            "chain": chain.chain.as_str(),
            "node_status": chain.node_level.map(HealthLevel::as_str),
            "reasons": reasons,
        }),
        now: Utc::now(),
    };
    if let Err(error) = store.audit_insert(&insert).await {
        tracing::error!(%error, action, %queue, "the health action took effect but its audit entry was not written");
    }
}

/// The control plane's node probing: every `every`, each configured node at once, each
/// within the monitor's timeout. Apart from the judging loop, so a dead node never delays
/// a restart or a report.
pub async fn probe_loop(monitor: Arc<HealthMonitor>, every: Duration, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = monitor.probe_nodes() => {}
        }
    }
}

/// What the health loop does besides judging.
#[derive(Debug, Clone, Copy)]
pub struct Actions {
    /// Restart a worker unhealthy this long.
    pub restart_after: Option<Duration>,
    /// Pause a chain's withdrawals once its node has been unhealthy this long.
    pub pause_after: Option<Duration>,
}

/// The control plane's health loop: judge every heartbeat interval (so unhealthy-since is
/// tracked without anyone asking), restart what stayed unhealthy and pause the withdrawals
/// of chains whose node stayed unhealthy, if configured.
pub async fn run_loop(
    store: Store,
    backend: Arc<dyn queue::Backend>,
    monitor: Arc<HealthMonitor>,
    every: Duration,
    actions: Actions,
    cancel: CancellationToken,
) {
    let mut pauses = NodePauses::default();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let evaluated = tokio::time::timeout(
            domain::limits::STORE_CALL_TIMEOUT,
            monitor.evaluate(&store, Utc::now()),
        )
        .await;
        let report = match evaluated {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                tracing::warn!(%error, "health check cannot read the store");
                continue;
            }
            Err(_) => {
                tracing::warn!("health check timed out reading the store");
                continue;
            }
        };
        if let Some(grace) = actions.restart_after {
            restart_unhealthy(&store, &monitor, &report, grace).await;
        }
        if let Some(grace) = actions.pause_after {
            let acted = tokio::time::timeout(
                domain::limits::STORE_CALL_TIMEOUT,
                pauses.act(&store, backend.as_ref(), &report, grace),
            )
            .await;
            if acted.is_err() {
                tracing::warn!(
                    "the health action on withdrawals timed out; tried again next round"
                );
            }
        }
    }
}
