//! The autoscaler of `coinsensei up`: every second, each `[[autoscale]]` queue's depth (jobs
//! ready to run) goes through `domain::autoscale::decide`, and the supervisor starts extra
//! worker processes for the queue or retires the newest extra (drained first: it finishes
//! its in-flight jobs). The configured workers of a queue are never retired, so they count
//! towards its minimum.
//!
//! Every decision is logged (holds at debug, a change of reason at info); every change is
//! audited (`autoscaler.scale_up` / `autoscaler.scale_down`, target `queue:NAME`, with the
//! depth, the counts before and after and the workers started or retired), which is what
//! `coinsensei autoscaler status` reads back.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::autoscale::{HoldReason, ScaleDecision, ScalePolicy, decide};
use domain::{Name, WorkerId};
use store::{AuditInsert, Store};
use tokio_util::sync::CancellationToken;
use worker::{ChildSpec, Supervisor, WorkerSpec};

use crate::config::{AutoscaleEntry, default_worker_id};

/// How `up` makes the child process of an extra worker (the same settings as its own).
pub type MakeChild = Box<dyn Fn(WorkerSpec, &WorkerId) -> ChildSpec + Send + Sync>;

/// One scaled queue's state.
struct QueueScaler {
    queue: Name,
    spec: WorkerSpec,
    /// The configured policy with its minimum raised to the configured workers.
    policy: ScalePolicy,
    configured: u32,
    /// Extra workers running, oldest first.
    extras: Vec<WorkerId>,
    last_change: Option<DateTime<Utc>>,
    last_hold: Option<HoldReason>,
}

/// What one round decided for one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub queue: Name,
    pub depth: u64,
    pub from: u32,
    pub decision: ScaleDecision,
}

pub struct Autoscaler {
    scalers: Vec<QueueScaler>,
    /// Every configured worker id, never handed to an extra.
    taken: Vec<WorkerId>,
    backend: Arc<dyn queue::Backend>,
    store: Store,
    supervisor: Arc<Supervisor>,
    child_spec: MakeChild,
}

impl Autoscaler {
    pub fn new(
        entries: &[AutoscaleEntry],
        configured: &[crate::config::WorkerEntry],
        backend: Arc<dyn queue::Backend>,
        store: Store,
        supervisor: Arc<Supervisor>,
        child_spec: MakeChild,
    ) -> Self {
        let scalers = entries
            .iter()
            .map(|entry| {
                let count = configured
                    .iter()
                    .filter(|worker| worker.spec == entry.spec)
                    .count();
                let configured_count = u32::try_from(count).unwrap_or(u32::MAX);
                QueueScaler {
                    queue: entry.queue.clone(),
                    spec: entry.spec,
                    policy: ScalePolicy {
                        min_workers: entry.policy.min_workers.max(configured_count),
                        ..entry.policy.clone()
                    },
                    configured: configured_count,
                    extras: Vec::new(),
                    last_change: None,
                    last_hold: None,
                }
            })
            .collect();
        Autoscaler {
            scalers,
            taken: configured.iter().map(|worker| worker.id.clone()).collect(),
            backend,
            store,
            supervisor,
            child_spec,
        }
    }

    /// One round at `now`: reads the depths, decides and acts for every queue.
    pub async fn run_once(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decided>, queue::QueueError> {
        let stats =
            tokio::time::timeout(domain::limits::STORE_CALL_TIMEOUT, self.backend.stats(now))
                .await
                .map_err(|_| {
                    queue::QueueError::Unavailable("reading queue depths timed out".into())
                })??;
        let mut decided = Vec::with_capacity(self.scalers.len());
        for index in 0..self.scalers.len() {
            let scaler = &self.scalers[index];
            let depth = stats
                .iter()
                .find(|each| each.name == scaler.queue)
                .map_or(0, |each| u64::try_from(each.available).unwrap_or(0));
            let from = scaler.configured + u32::try_from(scaler.extras.len()).unwrap_or(u32::MAX);
            let since = scaler
                .last_change
                .map(|at| (now - at).to_std().unwrap_or(Duration::ZERO));
            let decision = decide(&scaler.policy, from, depth, since);
            self.act(index, from, depth, decision, now).await;
            decided.push(Decided {
                queue: self.scalers[index].queue.clone(),
                depth,
                from,
                decision,
            });
        }
        Ok(decided)
    }

    async fn act(
        &mut self,
        index: usize,
        from: u32,
        depth: u64,
        decision: ScaleDecision,
        now: DateTime<Utc>,
    ) {
        let (action, to, workers) = match decision {
            ScaleDecision::Hold(reason) => {
                let scaler = &mut self.scalers[index];
                if scaler.last_hold != Some(reason) {
                    tracing::info!(queue = %scaler.queue, depth, workers = from, reason = reason.as_str(), "autoscaler holds");
                    scaler.last_hold = Some(reason);
                } else {
                    tracing::debug!(queue = %scaler.queue, depth, workers = from, reason = reason.as_str(), "autoscaler holds");
                }
                return;
            }
            ScaleDecision::Up { to } => {
                let mut started = Vec::new();
                for _ in from..to {
                    let id = self.free_id(index);
                    let spec = (self.child_spec)(self.scalers[index].spec, &id);
                    self.supervisor.spawn(spec);
                    self.scalers[index].extras.push(id.clone());
                    started.push(id.to_string());
                }
                ("autoscaler.scale_up", to, started)
            }
            ScaleDecision::Down { to } => {
                let mut retired = Vec::new();
                let scaler = &mut self.scalers[index];
                while scaler.configured + u32::try_from(scaler.extras.len()).unwrap_or(u32::MAX)
                    > to
                {
                    let Some(id) = scaler.extras.pop() else { break };
                    self.supervisor.retire(&id);
                    retired.push(id.to_string());
                }
                ("autoscaler.scale_down", to, retired)
            }
        };
        let scaler = &mut self.scalers[index];
        scaler.last_change = Some(now);
        scaler.last_hold = None;
        tracing::info!(queue = %scaler.queue, depth, from, to, workers = ?workers, "{action}");
        let audit = AuditInsert {
            actor: "autoscaler".into(),
            action: action.into(),
            target: format!("queue:{}", scaler.queue),
            details: serde_json::json!({
                "depth": depth,
                "from": from,
                "to": to,
                "workers": workers,
                "policy": {
                    "min_workers": scaler.policy.min_workers,
                    "max_workers": scaler.policy.max_workers,
                    "scale_up_depth": scaler.policy.scale_up_depth,
                    "scale_down_depth": scaler.policy.scale_down_depth,
                    "cooldown_ms": u64::try_from(scaler.policy.cooldown.as_millis()).unwrap_or(u64::MAX),
                },
            }),
            now,
        };
        if let Err(error) = self.store.audit_insert(&audit).await {
            tracing::warn!(queue = %scaler.queue, %error, "the scaling took effect but its audit entry was not written");
        }
    }

    /// The lowest `CHAIN-KIND-N` not configured, not an extra, and not a retired extra still
    /// draining.
    fn free_id(&self, index: usize) -> WorkerId {
        let spec = self.scalers[index].spec;
        (1..)
            .map(|n| default_worker_id(spec.kind, spec.chain, n))
            .find(|id| {
                !self.taken.contains(id)
                    && !self.supervisor.has(id)
                    && !self.scalers.iter().any(|scaler| scaler.extras.contains(id))
            })
            .expect("an unbounded range has a free id")
    }

    /// Runs a round every `AUTOSCALE_INTERVAL` until `cancel` fires; a round that cannot
    /// read the depths changes nothing.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(domain::limits::AUTOSCALE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.run_once(Utc::now()).await {
                tracing::warn!(%error, "autoscaler cannot read queue depths");
            }
        }
    }
}
