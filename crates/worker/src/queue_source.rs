//! A worker's job source backed by the job queue: each `run_once` claims and runs one job of
//! the worker's queue; a background task keeps the leases of the jobs in flight alive; queue
//! wake-ups end an idle wait early.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use queue::{Backend, Ran, Registry, Runner, RunnerConfig, Wake, Wakeups};
use tokio::sync::Mutex;

use crate::job::{JobSource, Work, WorkerFault};

pub struct QueueSource {
    runner: Arc<Runner>,
    wakeups: Mutex<Option<Wakeups>>,
    lease_keeper: tokio::task::JoinHandle<()>,
}

impl QueueSource {
    pub async fn open(
        backend: Arc<dyn Backend>,
        registry: Registry,
        config: RunnerConfig,
    ) -> Result<Self, WorkerFault> {
        let wakeups = match backend.wakeups().await {
            Ok(wakeups) => Some(wakeups),
            Err(error) => {
                tracing::warn!(%error, "no queue wake-ups; idle workers poll");
                None
            }
        };
        let lease = config.lease;
        let runner = Arc::new(Runner::new(backend, registry, config));
        let lease_keeper = tokio::spawn(keep_leases(Arc::clone(&runner), lease / 3));
        Ok(QueueSource {
            runner,
            wakeups: Mutex::new(wakeups),
            lease_keeper,
        })
    }
}

/// Extends the leases of this worker's jobs well before they expire.
async fn keep_leases(runner: Arc<Runner>, every: Duration) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = runner.extend_leases().await {
            tracing::warn!(%error, "could not extend job leases; they expire unless the next try works");
        }
    }
}

impl Drop for QueueSource {
    fn drop(&mut self) {
        self.lease_keeper.abort();
    }
}

#[async_trait]
impl JobSource for QueueSource {
    async fn run_once(&self) -> Result<Work, WorkerFault> {
        match self.runner.run_one().await {
            Ok(Ran::Idle) => Ok(Work::Idle),
            Ok(Ran::Done) => Ok(Work::Done),
            Ok(Ran::Failed(error) | Ran::Lost(error)) => Ok(Work::Failed(error)),
            // The queue itself is unreachable: the worker cannot work.
            Err(error) => Err(WorkerFault(format!(
                "job queue ({}): {error}",
                self.runner.backend().name()
            ))),
        }
    }

    async fn close(&self) {
        self.lease_keeper.abort();
        *self.wakeups.lock().await = None;
    }

    async fn wait_for_work(&self) {
        let mut guard = self.wakeups.lock().await;
        let Some(wakeups) = guard.as_mut() else {
            drop(guard);
            return std::future::pending().await;
        };
        loop {
            match wakeups.next().await {
                Some(Wake::Queue(queue)) if queue != self.runner.config().queue => continue,
                Some(_) => return,
                None => {
                    *guard = None;
                    drop(guard);
                    return std::future::pending().await;
                }
            }
        }
    }
}
