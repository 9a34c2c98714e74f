//! Queue maintenance: rescue jobs whose lease expired (their worker died or hung) and prune
//! finished jobs beyond the kept counts (the seed's 100 completed and 50 failed per queue)
//! and age. One control plane leads at a time, by a leadership lease in the queue's backend
//! (renewed every rescue interval, taken over three intervals after its holder stops); the
//! operations are safe even if two ran at once, a rescue taking each job with `for update
//! skip locked` (or the SQLite write lock, or one Redis script).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use store::{JobPrune, JobRescue};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, QueueError};

#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// How often expired leases are looked for.
    pub rescue_interval: Duration,
    /// How often finished jobs are pruned.
    pub prune_interval: Duration,
    pub keep_completed: u32,
    pub keep_failed: u32,
    /// Finished jobs older than this are deleted whatever the counts.
    pub retention: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            rescue_interval: Duration::from_secs(1),
            prune_interval: Duration::from_secs(60),
            keep_completed: domain::limits::JOB_KEEP_COMPLETED_DEFAULT,
            keep_failed: domain::limits::JOB_KEEP_FAILED_DEFAULT,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub rescued: usize,
    pub pruned: u64,
}

pub struct Maintenance {
    backend: Arc<dyn Backend>,
    config: MaintenanceConfig,
    /// Names this process as a leadership holder.
    holder: String,
}

/// The leadership every control plane competes for.
pub const MAINTENANCE_LEADER: &str = "queue-maintenance";

impl Maintenance {
    pub fn new(backend: Arc<dyn Backend>, config: MaintenanceConfig) -> Self {
        let holder = format!(
            "{}:{}:{:x}",
            hostname_hint(),
            std::process::id(),
            rand::random::<u64>()
        );
        Maintenance {
            backend,
            config,
            holder,
        }
    }

    /// Rescues every expired lease at `now` (in bounded batches).
    pub async fn rescue_once(&self, now: DateTime<Utc>) -> Result<usize, QueueError> {
        let mut rescued = 0;
        loop {
            let batch = self
                .backend
                .rescue(&JobRescue {
                    owner: None,
                    limit: domain::limits::JOB_RESCUE_BATCH_MAX,
                    now,
                })
                .await?;
            for job in &batch {
                tracing::warn!(job = job.id, queue = %job.queue, state = %job.state, rescues = job.rescues, "lease expired: job taken back");
            }
            rescued += batch.len();
            if batch.len() < domain::limits::JOB_RESCUE_BATCH_MAX as usize {
                return Ok(rescued);
            }
        }
    }

    pub async fn prune_once(&self, now: DateTime<Utc>) -> Result<u64, QueueError> {
        let finished_before = chrono::Duration::from_std(self.config.retention)
            .ok()
            .map(|retention| now - retention);
        self.backend
            .prune(&JobPrune {
                keep_completed: self.config.keep_completed,
                keep_failed: self.config.keep_failed,
                finished_before,
            })
            .await
    }

    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<MaintenanceReport, QueueError> {
        Ok(MaintenanceReport {
            rescued: self.rescue_once(now).await?,
            pruned: self.prune_once(now).await?,
        })
    }

    /// Takes or renews the maintenance leadership; false while another process leads.
    pub async fn lead(&self, now: DateTime<Utc>) -> Result<bool, QueueError> {
        self.backend
            .lead(
                MAINTENANCE_LEADER,
                &self.holder,
                self.config.rescue_interval * 3,
                now,
            )
            .await
    }

    /// Runs until `cancel` fires, doing the work only while it leads; errors are logged and
    /// retried at the next tick.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut rescue = tokio::time::interval(self.config.rescue_interval);
        let mut prune = tokio::time::interval(self.config.prune_interval);
        rescue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = rescue.tick() => {
                    let now_leading = match self.lead(Utc::now()).await {
                        Ok(leading) => leading,
                        Err(error) => {
                            tracing::warn!(%error, "cannot renew the maintenance leadership");
                            false
                        }
                    };
                    if now_leading != leading {
                        tracing::info!(holder = %self.holder, leading = now_leading, "queue maintenance leadership changed");
                        leading = now_leading;
                    }
                    if !leading {
                        continue;
                    }
                    if let Err(error) = self.rescue_once(Utc::now()).await {
                        tracing::warn!(%error, "lease rescue failed");
                    }
                }
                                _ = prune.tick(), if leading => {
                    match self.prune_once(Utc::now()).await {
                        Ok(0) => {}
                        Ok(pruned) => tracing::debug!(pruned, "pruned finished jobs"),
                        Err(error) => tracing::warn!(%error, "pruning finished jobs failed"),
                    }
                }
            }
        }
    }
}

fn hostname_hint() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into())
}
