//! The seam between the worker runtime and the work it runs.
//!
//! The runtime owns the lifecycle (concurrency, drain, error backoff, desired state); a
//! `JobSource` only knows how to do one unit of work. The queue (and, behind it, the chain
//! adapters) plugs in here without the runtime changing.

use async_trait::async_trait;

/// What one call of [`JobSource::run_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// A job ran to completion.
    Done,
    /// A job ran and failed; the job's own retry policy handles it. The worker is healthy.
    Failed(String),
    /// Nothing to do right now.
    Idle,
}

/// The worker itself cannot work (its node or database is unreachable, its configuration is
/// wrong): it reports `error` and tries again with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WorkerFault(pub String);

#[async_trait]
pub trait JobSource: Send + Sync {
    /// Runs at most one unit of work. Called concurrently up to the worker's concurrency.
    async fn run_once(&self) -> Result<Work, WorkerFault>;

    /// Releases connections before a restart or shutdown. The runtime builds a fresh source
    /// afterwards, so a restart really does reconnect.
    async fn close(&self) {}

    /// Returns when work may be available, so an idle worker need not wait out its poll
    /// interval. Hints only: returning spuriously costs one empty `run_once`.
    async fn wait_for_work(&self) {
        std::future::pending::<()>().await
    }
}

/// The job source of a worker whose job queue is not wired yet: it is always idle. Workers
/// built on it still register, heartbeat, obey start / stop / restart and drain, which is
/// the whole lifecycle the control plane manages.
#[derive(Debug, Default)]
pub struct NoJobSource;

#[async_trait]
impl JobSource for NoJobSource {
    async fn run_once(&self) -> Result<Work, WorkerFault> {
        Ok(Work::Idle)
    }
}
