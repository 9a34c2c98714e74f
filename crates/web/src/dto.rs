//! The JSON shapes of workers, queues, jobs and audit entries, shared by the admin API and
//! the CLI's `--json` output so the two never drift. Domain types are not `Serialize`: the
//! wire format is written here, by hand, once. Keys are a contract: add, never rename.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use store::{ApiTokenRow, AuditRow, JobRow, QueueStats, WorkerRow};

fn time(at: Option<DateTime<Utc>>) -> Value {
    at.map(|at| Value::String(at.to_rfc3339()))
        .unwrap_or(Value::Null)
}

fn age_ms(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Value {
    at.map(|at| json!((now - at).num_milliseconds().max(0)))
        .unwrap_or(Value::Null)
}

/// A worker on the wire. Serialized straight to bytes by the list routes (no intermediate
/// `Value` for a thousand rows); [`worker`] gives the same object as a `Value`.
#[derive(Debug, Serialize)]
pub struct WorkerView<'a> {
    id: &'a str,
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    blockchain: &'static str,
    status: &'static str,
    desired_state: &'static str,
    pid: Option<i32>,
    host: Option<&'a str>,
    port: Option<i32>,
    version: Option<&'a str>,
    generation: i64,
    applied_generation: i64,
    last_heartbeat: Option<String>,
    heartbeat_age_ms: Option<i64>,
    last_error: Option<&'a str>,
    started_at: Option<String>,
    rss_bytes: Option<i64>,
    in_flight: i64,
    processed_total: i64,
    failed_total: i64,
    created_at: String,
    updated_at: String,
}

impl<'a> WorkerView<'a> {
    pub fn new(row: &'a WorkerRow, now: DateTime<Utc>) -> Self {
        WorkerView {
            id: row.id.as_str(),
            name: &row.name,
            kind: row.kind.as_str(),
            blockchain: row.chain.as_str(),
            status: row.status.as_str(),
            desired_state: row.desired_state.as_str(),
            pid: row.pid,
            host: row.host.as_deref(),
            port: row.port,
            version: row.version.as_deref(),
            generation: row.generation,
            applied_generation: row.applied_generation,
            last_heartbeat: row.last_heartbeat.map(|at| at.to_rfc3339()),
            heartbeat_age_ms: row
                .last_heartbeat
                .map(|at| (now - at).num_milliseconds().max(0)),
            last_error: row.last_error.as_deref(),
            started_at: row.started_at.map(|at| at.to_rfc3339()),
            rss_bytes: row.rss_bytes,
            in_flight: row.in_flight,
            processed_total: row.processed_total,
            failed_total: row.failed_total,
            created_at: row.created_at.to_rfc3339(),
            updated_at: row.updated_at.to_rfc3339(),
        }
    }
}

pub fn worker(row: &WorkerRow, now: DateTime<Utc>) -> Value {
    serde_json::to_value(WorkerView::new(row, now)).unwrap_or(Value::Null)
}

/// A worker's health at a glance: each check passes or says why not; the state is
/// `healthy` when all pass, `warning` when one fails, `unhealthy` when two or more do. A heartbeat older than two intervals is stale (the reaper calls it lost after
/// `lost_after_intervals`).
pub fn worker_health(
    row: &WorkerRow,
    now: DateTime<Utc>,
    heartbeat_interval: std::time::Duration,
) -> Value {
    use domain::{DesiredState, WorkerStatus};
    let stale_after =
        chrono::Duration::from_std(heartbeat_interval * 2).unwrap_or(chrono::Duration::MAX);
    let heartbeat = match row.last_heartbeat {
        None => (false, "no heartbeat yet".to_string()),
        Some(at) => {
            let age = (now - at).num_milliseconds().max(0);
            if now - at > stale_after {
                (
                    false,
                    format!(
                        "last heartbeat {age} ms ago, over the {} ms allowed",
                        stale_after.num_milliseconds()
                    ),
                )
            } else {
                (true, format!("last heartbeat {age} ms ago"))
            }
        }
    };
    let wanted = match row.desired_state {
        DesiredState::Running => WorkerStatus::Running,
        DesiredState::Stopped => WorkerStatus::Stopped,
    };
    let state = if row.status == wanted {
        (true, format!("{} as desired", row.status))
    } else {
        (
            false,
            format!("{} but desired {}", row.status, row.desired_state),
        )
    };
    let control = if row.applied_generation >= row.generation {
        (
            true,
            format!("control generation {} applied", row.generation),
        )
    } else {
        (
            false,
            format!(
                "control generation {} not yet applied (at {})",
                row.generation, row.applied_generation
            ),
        )
    };
    let error = match &row.last_error {
        Some(message) if row.status == WorkerStatus::Error => (false, message.clone()),
        _ => (true, "no current error".to_string()),
    };
    let checks = [
        ("heartbeat", heartbeat),
        ("state", state),
        ("control", control),
        ("error", error),
    ];
    let failed = checks.iter().filter(|(_, (ok, _))| !*ok).count();
    json!({
        "state": match failed {
            0 => "healthy",
            1 => "warning",
            _ => "unhealthy",
        },
        "healthy": failed == 0,
        "checks": checks
            .iter()
            .map(|(name, (ok, detail))| json!({"name": name, "ok": ok, "detail": detail}))
            .collect::<Vec<_>>(),
    })
}

pub fn queue(stats: &QueueStats, now: DateTime<Utc>) -> Value {
    json!({
        "name": stats.name.as_str(),
        "paused": stats.paused,
        "concurrency_limit": stats.concurrency_limit,
        "available": stats.available,
        "scheduled": stats.scheduled,
        "running": stats.running,
        "completed": stats.completed,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "oldest_available_age_ms": age_ms(stats.oldest_available_at, now),
    })
}

pub fn job(job: &JobRow) -> Value {
    json!({
        "id": job.id,
        "queue": job.queue.as_str(),
        "kind": job.kind.as_str(),
        "args": job.args,
        "state": job.state.as_str(),
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "unique_key": job.unique_key,
        "run_at": job.run_at.to_rfc3339(),
        "lease_owner": job.lease_owner,
        "lease_expires_at": time(job.lease_expires_at),
        "rescues": job.rescues,
        "errors": job.errors,
        "created_at": job.created_at.to_rfc3339(),
        "started_at": time(job.started_at),
        "finished_at": time(job.finished_at),
    })
}

pub fn audit(entry: &AuditRow) -> Value {
    json!({
        "id": entry.id,
        "at": entry.at.to_rfc3339(),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "details": entry.details,
    })
}

/// A token as listed: never its secret nor its hash.
pub fn token(token: &ApiTokenRow) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "role": token.role.as_str(),
        "prefix": token.prefix,
        "created_at": token.created_at.to_rfc3339(),
        "last_used_at": time(token.last_used_at),
        "revoked_at": time(token.revoked_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Chain, DesiredState, WorkerId, WorkerKind, WorkerStatus};

    fn row(now: DateTime<Utc>) -> WorkerRow {
        WorkerRow {
            id: WorkerId::new("tron-withdrawal-1").unwrap(),
            name: "tron-withdrawal-1".into(),
            kind: WorkerKind::Withdrawal,
            chain: Chain::Tron,
            status: WorkerStatus::Running,
            desired_state: DesiredState::Running,
            pid: Some(1),
            host: None,
            port: None,
            version: None,
            config: json!({}),
            incarnation: None,
            generation: 2,
            applied_generation: 2,
            last_heartbeat: Some(now - chrono::Duration::seconds(1)),
            last_error: None,
            started_at: Some(now),
            rss_bytes: None,
            in_flight: 0,
            processed_total: 0,
            failed_total: 0,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn health_counts_failed_checks() {
        let now = Utc::now();
        let interval = std::time::Duration::from_secs(5);
        let healthy = worker_health(&row(now), now, interval);
        assert_eq!(healthy["state"], "healthy", "{healthy}");
        let mut stale = row(now);
        stale.last_heartbeat = Some(now - chrono::Duration::seconds(11));
        let warning = worker_health(&stale, now, interval);
        assert_eq!(warning["state"], "warning", "{warning}");
        assert_eq!(warning["checks"][0]["ok"], false);
        assert!(
            warning["checks"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("11000 ms")
        );
        stale.status = WorkerStatus::Error;
        stale.last_error = Some("node unreachable".into());
        stale.applied_generation = 1;
        let unhealthy = worker_health(&stale, now, interval);
        assert_eq!(unhealthy["state"], "unhealthy", "{unhealthy}");
        assert_eq!(unhealthy["healthy"], false);
        assert_eq!(unhealthy["checks"][3]["detail"], "node unreachable");
    }
}
