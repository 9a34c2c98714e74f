//! `coinsensei health`: the health checker's report, from the database (judged here, once:
//! error rate and job progress cover each worker's life since it started, there being no
//! earlier reading) or from a control plane (`--server`, judged over its window). The exit
//! code is the worst status: 0 healthy, 1 warning, 2 unhealthy.
//!
//! Also the control plane's restart action: a worker unhealthy for longer than the grace
//! period is restarted through the same audited control as an operator's.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::health::HealthLevel;
use domain::{ControlAction, DesiredState, WorkerStatus};
use serde_json::Value;
use store::{Store, WorkerControl};
use tokio_util::sync::CancellationToken;
use web::health::{HealthMonitor, HealthReport};

use crate::config::{QueueSettings, Settings};

/// The monitor the control plane shares between the API, `/metrics` and the restart action.
pub fn monitor(settings: &Settings) -> Arc<HealthMonitor> {
    Arc::new(HealthMonitor::new(
        settings.health.limits.clone(),
        matches!(settings.queue, QueueSettings::Database),
    ))
}

pub async fn local(settings: Settings, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let report = tokio::time::timeout(
        domain::limits::STORE_CALL_TIMEOUT,
        monitor(&settings).evaluate(&store, Utc::now()),
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

/// The control plane's health loop: judge every heartbeat interval (so unhealthy-since is
/// tracked without anyone asking) and restart what stayed unhealthy, if configured.
pub async fn run_loop(
    store: Store,
    monitor: Arc<HealthMonitor>,
    every: Duration,
    restart_after: Option<Duration>,
    cancel: CancellationToken,
) {
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
        if let Some(grace) = restart_after {
            restart_unhealthy(&store, &monitor, &report, grace).await;
        }
    }
}
