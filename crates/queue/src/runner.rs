//! The runner a worker uses: claim a job, run its handler, settle the outcome with the claim's
//! token. A refused settlement (the lease expired and someone else holds the job) is reported
//! as lost, never retried: the current holder owns the job now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use domain::Name;
use store::{JobClaim, JobFail, JobFinish, JobLeaseExtend, JobRow, JobSnooze};

use crate::backend::{Backend, QueueError};
use crate::handler::{Outcome, Registry};

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub queue: Name,
    /// Names the lease holder: the worker id and its process incarnation.
    pub owner: String,
    /// How long a claim holds without being extended.
    pub lease: Duration,
}

/// What one `run_batch` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub claimed: usize,
    pub done: usize,
    pub failed: usize,
    pub lost: usize,
}

/// What one `run_one` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    Idle,
    Done,
    /// The job failed (it is retried later, or dead-lettered when it was its last attempt).
    Failed(String),
    /// Our claim went stale before we could settle: another worker holds the job now.
    Lost(String),
}

pub struct Runner {
    backend: Arc<dyn Backend>,
    registry: Registry,
    config: RunnerConfig,
    /// The jobs this runner is running now, by id, with their claim tokens: the only leases
    /// it extends. A job leaves the map however its run ends (settled, failed to settle,
    /// panicked, aborted), so a job nobody runs any more is left to expire and be rescued.
    held: Arc<Mutex<HashMap<i64, i64>>>,
}

/// Jobs claimed by a runner and not yet settled; dropping it stops their lease extension.
pub struct Claimed {
    pub jobs: Vec<JobRow>,
    _held: Held,
}

impl Claimed {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

struct Held {
    held: Arc<Mutex<HashMap<i64, i64>>>,
    ids: Vec<i64>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in &self.ids {
            held.remove(id);
        }
    }
}

impl Runner {
    pub fn new(backend: Arc<dyn Backend>, registry: Registry, config: RunnerConfig) -> Self {
        Runner {
            backend,
            registry,
            config,
            held: Arc::default(),
        }
    }

    fn hold(&self, jobs: &[JobRow]) -> Held {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for job in jobs {
            held.insert(job.id, job.token);
        }
        Held {
            held: Arc::clone(&self.held),
            ids: jobs.iter().map(|job| job.id).collect(),
        }
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Claims at most one job and runs it to a settled outcome.
    pub async fn run_one(&self) -> Result<Ran, QueueError> {
        let now = Utc::now();
        let claim = JobClaim {
            queue: self.config.queue.clone(),
            owner: self.config.owner.clone(),
            limit: 1,
            lease_until: now + self.config.lease,
            now,
        };
        let Some(job) = self.backend.claim(&claim).await?.into_iter().next() else {
            return Ok(Ran::Idle);
        };
        let _held = self.hold(std::slice::from_ref(&job));
        let outcome = match self.registry.get(job.kind.as_str()) {
            Some(handler) => handler.run(&job).await,
            None => Outcome::Fatal(format!(
                "no handler for job kind {:?} (this worker runs: {})",
                job.kind.as_str(),
                self.registry.kinds().join(", ")
            )),
        };
        self.settle(&job, outcome).await
    }

    async fn settle(&self, job: &JobRow, outcome: Outcome) -> Result<Ran, QueueError> {
        let now = Utc::now();
        let result = match &outcome {
            Outcome::Done => self
                .backend
                .complete(&JobFinish {
                    id: job.id,
                    token: job.token,
                    now,
                })
                .await
                .map(drop),
            Outcome::Retry(error) | Outcome::Fatal(error) => {
                let retry_at = match outcome {
                    Outcome::Retry(_) => {
                        let attempt = u32::try_from(job.attempt).unwrap_or(u32::MAX);
                        job.retry_policy()
                            .retry_delay(attempt, rand::random())
                            .map(|delay| now + delay)
                    }
                    _ => None,
                };
                let fail = JobFail {
                    id: job.id,
                    token: job.token,
                    error: error.clone(),
                    retry_at,
                    now,
                };
                self.backend.fail(&fail).await.map(drop)
            }
            Outcome::Snooze(delay) => {
                let snooze = JobSnooze {
                    id: job.id,
                    token: job.token,
                    run_at: now + *delay,
                    now,
                };
                self.backend.snooze(&snooze).await.map(drop)
            }
        };
        match result {
            Ok(()) => Ok(match outcome {
                Outcome::Done | Outcome::Snooze(_) => Ran::Done,
                Outcome::Retry(error) | Outcome::Fatal(error) => Ran::Failed(error),
            }),
            Err(QueueError::Stale(message)) => {
                tracing::warn!(job = job.id, queue = %job.queue, %message, "lost the job's lease before settling it; its new holder owns it");
                Ok(Ran::Lost(message))
            }
            Err(error) => Err(error),
        }
    }

    /// Claims up to `limit` jobs at once, runs their handlers concurrently and completes the
    /// successful ones in one batch: the throughput path, two round trips per batch.
    pub async fn run_batch(&self, limit: u32) -> Result<BatchReport, QueueError> {
        let claimed = self.claim_batch(limit).await?;
        let running = claimed.jobs.len().max(1);
        self.finish_batch(claimed, running).await
    }

    /// Claims up to `limit` jobs. With `finish_batch`, lets a caller claim the next batch
    /// while the previous one completes.
    pub async fn claim_batch(&self, limit: u32) -> Result<Claimed, QueueError> {
        let now = Utc::now();
        let claim = JobClaim {
            queue: self.config.queue.clone(),
            owner: self.config.owner.clone(),
            limit,
            lease_until: now + self.config.lease,
            now,
        };
        let jobs = self.backend.claim(&claim).await?;
        let held = self.hold(&jobs);
        Ok(Claimed { jobs, _held: held })
    }

    /// Runs the handlers of claimed jobs, at most `max_running` at once, and settles them,
    /// completing the successful ones in one call.
    pub async fn finish_batch(
        &self,
        claimed: Claimed,
        max_running: usize,
    ) -> Result<BatchReport, QueueError> {
        let jobs = &claimed.jobs;
        let mut report = BatchReport {
            claimed: jobs.len(),
            ..BatchReport::default()
        };
        if jobs.is_empty() {
            return Ok(report);
        }
        // In waves of `max_running`: simple, and a wave of fast handlers finishes together.
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(jobs.len());
        for wave in jobs.chunks(max_running.max(1)) {
            let wave_outcomes = futures_util::future::join_all(wave.iter().map(|job| async move {
                match self.registry.get(job.kind.as_str()) {
                    Some(handler) => handler.run(job).await,
                    None => {
                        Outcome::Fatal(format!("no handler for job kind {:?}", job.kind.as_str()))
                    }
                }
            }))
            .await;
            outcomes.extend(wave_outcomes);
        }
        let now = Utc::now();
        let mut finishes = Vec::with_capacity(jobs.len());
        for (job, outcome) in jobs.iter().zip(outcomes) {
            match outcome {
                Outcome::Done => finishes.push(JobFinish {
                    id: job.id,
                    token: job.token,
                    now,
                }),
                other => match self.settle(job, other).await? {
                    Ran::Lost(_) => report.lost += 1,
                    Ran::Failed(_) => report.failed += 1,
                    _ => report.done += 1,
                },
            }
        }
        if !finishes.is_empty() {
            let completed = self.backend.complete_many(&finishes).await?;
            report.done += completed.len();
            report.lost += finishes.len() - completed.len();
        }
        Ok(report)
    }

    /// Extends the leases of the jobs this runner is running now.
    pub async fn extend_leases(&self) -> Result<u64, QueueError> {
        let jobs: Vec<(i64, i64)> = {
            let held = self
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            held.iter().map(|(id, token)| (*id, *token)).collect()
        };
        if jobs.is_empty() {
            return Ok(0);
        }
        let now = Utc::now();
        let extend = JobLeaseExtend {
            owner: self.config.owner.clone(),
            jobs,
            lease_until: now + self.config.lease,
            now,
        };
        self.backend.extend_leases(&extend).await
    }
}
