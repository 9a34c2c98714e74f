//! The reaper: marks workers whose heartbeat is too old as `lost`, with an audit entry.
//!
//! It runs in the control plane. Several control planes may run at once: the store's reap is
//! a compare-and-set that skips rows another reaper holds, so each worker is marked once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use store::{Store, StoreError, WorkerReap, WorkerRow};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ReaperConfig {
    /// How often to look for stale workers.
    pub interval: Duration,
    /// A heartbeat older than this makes a worker `lost` (default 3 × the heartbeat interval).
    pub lost_after: Duration,
    /// Most workers marked in one pass.
    pub batch: u32,
}

impl ReaperConfig {
    /// Defaults derived from the heartbeat interval: lost after 3 intervals, checked twenty
    /// times per interval (at most once a second), so a dead worker is marked within 5 % of
    /// the threshold. A pass is one indexed update that usually matches nothing.
    pub fn for_heartbeat(heartbeat_interval: Duration, lost_after_intervals: u32) -> Self {
        ReaperConfig {
            interval: (heartbeat_interval / 20)
                .clamp(Duration::from_millis(25), Duration::from_secs(1)),
            lost_after: heartbeat_interval * lost_after_intervals,
            batch: domain::limits::REAP_BATCH_MAX,
        }
    }
}

pub struct Reaper {
    store: Store,
    config: ReaperConfig,
}

impl Reaper {
    pub fn new(store: Store, config: ReaperConfig) -> Self {
        Reaper { store, config }
    }

    /// One pass at time `now`: returns the workers it marked lost.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<Vec<WorkerRow>, StoreError> {
        let lost_after =
            chrono::Duration::from_std(self.config.lost_after).unwrap_or(chrono::Duration::MAX);
        let reaped = self
            .store
            .worker_reap(&WorkerReap {
                heartbeat_before: now - lost_after,
                limit: self.config.batch,
                actor: "reaper".into(),
                now,
            })
            .await?;
        for worker in &reaped {
            // Its job leases are left to expire rather than released here: a worker whose
            // heartbeat stalled may still be running its jobs, and only lease expiry (which it
            // would have prevented by extending them) proves it stopped.
            tracing::warn!(
                worker = %worker.id,
                last_heartbeat = ?worker.last_heartbeat,
                host = worker.host.as_deref().unwrap_or("?"),
                pid = worker.pid,
                "worker lost: no heartbeat"
            );
        }
        Ok(reaped)
    }

    /// Runs passes until `cancel` fires; errors are logged and the next pass tries again.
    ///
    /// After the reaper could not reach the database (and when it starts), it waits one whole
    /// threshold before marking anyone lost: during an outage the workers could not heartbeat
    /// either, and they deserve the same time to report back as a fresh worker gets.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reachable_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let settled =
                reachable_since.is_some_and(|since| since.elapsed() >= self.config.lost_after);
            let outcome = if settled {
                self.run_once(Utc::now()).await.map(drop)
            } else {
                self.store.ping().await
            };
            match outcome {
                Ok(()) => {
                    reachable_since.get_or_insert_with(tokio::time::Instant::now);
                }
                Err(error) => {
                    if reachable_since.take().is_some() {
                        tracing::warn!(%error, "reaper cannot reach the database; pausing until it can");
                    }
                }
            }
        }
    }
}
