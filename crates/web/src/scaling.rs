//! What the autoscaler of `coinsensei up` is doing, per scaled queue: its policy, the queue's
//! depth, the live workers of its kind and chain, and its recent decisions as the audit log
//! holds them. One reading for `coinsensei autoscaler status` and the dashboard's Health
//! page, so both say the same.

use chrono::{DateTime, Utc};
use domain::autoscale::ScalePolicy;
use domain::{Chain, Name, WorkerKind, WorkerStatus};
use serde_json::{Value, json};
use store::{AuditList, Store, WorkerList};

/// Decisions shown per queue.
pub const RECENT_DECISIONS: u32 = 10;

/// One `[[autoscale]]` queue, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaledQueue {
    pub queue: Name,
    pub kind: WorkerKind,
    pub chain: Chain,
    pub policy: ScalePolicy,
}

/// One audited decision (`autoscaler.scale_up` / `autoscaler.scale_down`).
#[derive(Debug, Clone)]
pub struct Decision {
    pub at: DateTime<Utc>,
    pub action: String,
    /// As the autoscaler wrote them in the audit entry's details.
    pub from: Value,
    pub to: Value,
    pub depth: Value,
    pub workers: Value,
}

impl Decision {
    /// The workers started or retired, for people: their ids joined.
    pub fn workers_text(&self) -> String {
        match &self.workers {
            Value::Array(ids) => ids
                .iter()
                .map(|id| id.as_str().map_or_else(|| id.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(", "),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// A scaled queue now.
#[derive(Debug, Clone)]
pub struct QueueScaling {
    pub queue: ScaledQueue,
    pub depth: i64,
    /// The ids of its kind and chain's workers not offline or lost.
    pub workers: Vec<String>,
    /// Newest first, at most [`RECENT_DECISIONS`].
    pub decisions: Vec<Decision>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScalingError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
}

/// Reads each scaled queue's state.
pub async fn status(
    store: &Store,
    backend: &dyn queue::Backend,
    scaled: &[ScaledQueue],
) -> Result<Vec<QueueScaling>, ScalingError> {
    if scaled.is_empty() {
        return Ok(Vec::new());
    }
    let stats = backend.stats(Utc::now()).await?;
    let mut queues = Vec::with_capacity(scaled.len());
    for entry in scaled {
        let rows = store
            .worker_list(&WorkerList {
                chain: Some(entry.chain),
                kind: Some(entry.kind),
                limit: domain::limits::LIST_LIMIT_MAX,
                ..Default::default()
            })
            .await?;
        let workers = rows
            .iter()
            .filter(|row| !matches!(row.status, WorkerStatus::Offline | WorkerStatus::Lost))
            .map(|row| row.id.to_string())
            .collect();
        let decisions = store
            .audit_list(&AuditList {
                actor: Some("autoscaler".into()),
                target: Some(format!("queue:{}", entry.queue)),
                limit: RECENT_DECISIONS,
                ..Default::default()
            })
            .await?
            .into_iter()
            .map(|row| Decision {
                at: row.at,
                action: row.action,
                from: row.details["from"].clone(),
                to: row.details["to"].clone(),
                depth: row.details["depth"].clone(),
                workers: row.details["workers"].clone(),
            })
            .collect();
        let depth = stats
            .iter()
            .find(|each| each.name == entry.queue)
            .map_or(0, |each| each.available);
        queues.push(QueueScaling {
            queue: entry.clone(),
            depth,
            workers,
            decisions,
        });
    }
    Ok(queues)
}

/// `coinsensei autoscaler status --json`.
pub fn status_json(queues: &[QueueScaling]) -> Value {
    Value::Array(
        queues
            .iter()
            .map(|scaling| {
                let policy = &scaling.queue.policy;
                json!({
                    "queue": scaling.queue.queue.as_str(),
                    "policy": {
                        "min_workers": policy.min_workers,
                        "max_workers": policy.max_workers,
                        "scale_up_depth": policy.scale_up_depth,
                        "scale_down_depth": policy.scale_down_depth,
                        "scale_up_step": policy.scale_up_step,
                        "scale_down_step": policy.scale_down_step,
                        "cooldown_seconds": policy.cooldown.as_secs_f64(),
                    },
                    "depth": scaling.depth,
                    "workers": scaling.workers,
                    "decisions": scaling.decisions.iter().map(|decision| json!({
                        "at": decision.at.to_rfc3339(),
                        "action": decision.action,
                        "from": decision.from,
                        "to": decision.to,
                        "depth": decision.depth,
                        "workers": decision.workers,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
