//! The job queue (DESIGN.md §4): one contract, [`Backend`], over the stores that hold jobs
//! (Postgres and SQLite through `store`; Redis to come), the handlers that run each kind of
//! job, the [`Runner`] a worker uses to claim, run and settle jobs, and the [`Maintenance`]
//! that rescues expired leases and prunes finished jobs.
//!
//! Jobs are delivered at least once; a job's effects must be idempotent, which the money
//! state machines make them. What the queue guarantees is that at most one worker holds a job
//! at a time (a lease with a fencing token) and that no job is lost: an expired lease is
//! taken back and the job runs again elsewhere.

pub mod backend;
pub mod handler;
pub mod maintenance;
pub mod redis_backend;
pub mod runner;

pub use backend::{Backend, QueueError, SqlBackend, Wake, Wakeups};
pub use handler::{Handler, Outcome, Registry};
pub use maintenance::{Maintenance, MaintenanceConfig};
pub use redis_backend::RedisBackend;
pub use runner::{BatchReport, Claimed, Ran, Runner, RunnerConfig};
pub use store::{JobInsert, JobInserted, JobRow, QueueStats};

/// The queue a worker of `kind` on `chain` takes its jobs from, e.g. `tron.withdrawal`.
pub fn queue_for(kind: domain::WorkerKind, chain: domain::Chain) -> domain::Name {
    domain::Name::new(format!("{chain}.{kind}"))
        .expect("chain and kind names are valid queue names")
}
