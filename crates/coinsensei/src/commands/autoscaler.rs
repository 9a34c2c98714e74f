//! `coinsensei autoscaler status`: each `[[autoscale]]` queue's policy, its depth now, the
//! workers of its kind and chain that are live, and the autoscaler's recent decisions as the
//! audit log holds them (written by the `up` that runs the autoscaler).

use std::process::ExitCode;

use chrono::Utc;
use domain::WorkerStatus;
use serde_json::{Value, json};
use store::{AuditList, WorkerList};

use crate::config::Settings;

/// Decisions shown per queue.
const RECENT_DECISIONS: u32 = 10;

pub async fn status(settings: Settings, as_json: bool) -> anyhow::Result<ExitCode> {
    if settings.autoscale.is_empty() {
        if as_json {
            println!("[]");
        } else {
            println!(
                "no queue is autoscaled (add an [[autoscale]] entry to the configuration: see coinsensei.example.toml)"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = super::connect_existing(&settings).await?;
    let backend = super::open_queue(&settings, &store).await?;
    let now = Utc::now();
    let stats = backend.stats(now).await?;
    let mut queues = Vec::with_capacity(settings.autoscale.len());
    for entry in &settings.autoscale {
        let workers = store
            .worker_list(&WorkerList {
                chain: Some(entry.spec.chain),
                kind: Some(entry.spec.kind),
                limit: domain::limits::LIST_LIMIT_MAX,
                ..Default::default()
            })
            .await?;
        let live: Vec<&str> = workers
            .iter()
            .filter(|row| !matches!(row.status, WorkerStatus::Offline | WorkerStatus::Lost))
            .map(|row| row.id.as_str())
            .collect();
        let decisions = store
            .audit_list(&AuditList {
                actor: Some("autoscaler".into()),
                target: Some(format!("queue:{}", entry.queue)),
                limit: RECENT_DECISIONS,
                ..Default::default()
            })
            .await?;
        let depth = stats
            .iter()
            .find(|each| each.name == entry.queue)
            .map_or(0, |each| each.available);
        let policy = &entry.policy;
        queues.push(json!({
            "queue": entry.queue.as_str(),
            "policy": {
                "min_workers": policy.min_workers,
                "max_workers": policy.max_workers,
                "scale_up_depth": policy.scale_up_depth,
                "scale_down_depth": policy.scale_down_depth,
                "scale_up_step": policy.scale_up_step,
                "scale_down_step": policy.scale_down_step,
                "cooldown_seconds": policy.cooldown.as_secs_f64(),
            },
            "depth": depth,
            "workers": live,
            "decisions": decisions.iter().map(|entry| json!({
                "at": entry.at.to_rfc3339(),
                "action": entry.action,
                "from": entry.details["from"],
                "to": entry.details["to"],
                "depth": entry.details["depth"],
                "workers": entry.details["workers"],
            })).collect::<Vec<_>>(),
        }));
    }
    store.close().await;
    print(&queues, as_json)
}

fn print(queues: &[Value], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(queues)?);
        return Ok(ExitCode::SUCCESS);
    }
    for queue in queues {
        let policy = &queue["policy"];
        let workers: Vec<&str> = queue["workers"]
            .as_array()
            .map(|workers| workers.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "{}: depth {}, {} worker(s) live [{}]",
            queue["queue"].as_str().unwrap_or("?"),
            queue["depth"],
            workers.len(),
            workers.join(", "),
        );
        println!(
            "  policy: {}..{} workers, up by {} above depth {}, down by {} below {}, cooldown {} s",
            policy["min_workers"],
            policy["max_workers"],
            policy["scale_up_step"],
            policy["scale_up_depth"],
            policy["scale_down_step"],
            policy["scale_down_depth"],
            policy["cooldown_seconds"],
        );
        let decisions = queue["decisions"].as_array().cloned().unwrap_or_default();
        if decisions.is_empty() {
            println!("  no scaling yet");
        }
        for decision in decisions {
            println!(
                "  {}  {:<22} {} -> {} at depth {}",
                decision["at"].as_str().unwrap_or("?"),
                decision["action"].as_str().unwrap_or("?"),
                decision["from"],
                decision["to"],
                decision["depth"],
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
