//! The queue contract and its SQL implementation. Every backend keeps the same promises,
//! pinned by the conformance suite: claims carry a lease and a fencing token, a stale token
//! is refused, and a job with an expired lease can be rescued.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::Name;
use store::{
    Change, ChangeFeed, JobClaim, JobFail, JobFinish, JobInsert, JobInserted, JobLeaseExtend,
    JobList, JobPrune, JobRescue, JobRow, JobSnooze, QueueStats, Store, StoreError,
};

/// What went wrong, said so the caller knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The caller's claim is no longer current: someone else holds the job, or it finished.
    #[error("stale claim: {0}")]
    Stale(String),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The operation means nothing in the job's or queue's current state.
    #[error("{0}")]
    Conflict(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The backend could not be reached or timed out: retry later.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("queue backend error: {0}")]
    Backend(String),
}

impl QueueError {
    pub fn is_transient(&self) -> bool {
        matches!(self, QueueError::Unavailable(_))
    }
}

impl From<StoreError> for QueueError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Stale(message) => QueueError::Stale(message),
            StoreError::NotFound { what, id } => QueueError::NotFound { what, id },
            StoreError::Conflict(message) => QueueError::Conflict(message),
            StoreError::Invalid(message) => QueueError::Invalid(message),
            error if error.is_transient() => QueueError::Unavailable(error.to_string()),
            error => QueueError::Backend(error.to_string()),
        }
    }
}

/// A hint that jobs may be available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    Queue(Name),
    /// Something changed; look at every queue you care about.
    Any,
}

/// A stream of wake-ups. Hints only: a missed one costs the fallback poll interval.
pub struct Wakeups {
    source: WakeSource,
}

enum WakeSource {
    Feed(ChangeFeed),
    Channel(
        tokio::sync::mpsc::Receiver<Wake>,
        tokio::task::JoinHandle<()>,
    ),
}

impl Drop for WakeSource {
    fn drop(&mut self) {
        if let WakeSource::Channel(_, task) = self {
            task.abort();
        }
    }
}

impl Wakeups {
    /// Wake-ups forwarded by a backend's own task (stopped when this is dropped).
    pub fn from_channel(
        receiver: tokio::sync::mpsc::Receiver<Wake>,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Wakeups {
            source: WakeSource::Channel(receiver, task),
        }
    }

    /// The next hint; `None` when the source is gone (fall back to polling).
    pub async fn next(&mut self) -> Option<Wake> {
        match &mut self.source {
            WakeSource::Feed(feed) => loop {
                match feed.next().await? {
                    Change::Job(queue) => return Some(Wake::Queue(queue)),
                    Change::Unknown => return Some(Wake::Any),
                    Change::Worker(_) => continue,
                }
            },
            WakeSource::Channel(receiver, _) => receiver.recv().await,
        }
    }
}

/// The queue contract.
#[async_trait]
pub trait Backend: Send + Sync {
    /// `postgres`, `sqlite` or `redis`.
    fn name(&self) -> &'static str;
    async fn enqueue(&self, job: &JobInsert) -> Result<JobInserted, QueueError>;
    async fn enqueue_many(&self, jobs: &[JobInsert]) -> Result<Vec<JobInserted>, QueueError>;
    async fn claim(&self, claim: &JobClaim) -> Result<Vec<JobRow>, QueueError>;
    async fn extend_leases(&self, extend: &JobLeaseExtend) -> Result<u64, QueueError>;
    async fn complete(&self, finish: &JobFinish) -> Result<JobRow, QueueError>;
    /// Completes many; returns the ids completed (the others were stale).
    async fn complete_many(&self, finishes: &[JobFinish]) -> Result<Vec<i64>, QueueError>;
    async fn fail(&self, fail: &JobFail) -> Result<JobRow, QueueError>;
    async fn snooze(&self, snooze: &JobSnooze) -> Result<JobRow, QueueError>;
    async fn cancel(&self, finish: &JobFinish) -> Result<JobRow, QueueError>;
    async fn rescue(&self, rescue: &JobRescue) -> Result<Vec<JobRow>, QueueError>;
    async fn retry(&self, id: i64, now: DateTime<Utc>) -> Result<JobRow, QueueError>;
    async fn discard(&self, id: i64, now: DateTime<Utc>) -> Result<JobRow, QueueError>;
    async fn get(&self, id: i64) -> Result<Option<JobRow>, QueueError>;
    async fn list(&self, list: &JobList) -> Result<Vec<JobRow>, QueueError>;
    async fn stats(&self, now: DateTime<Utc>) -> Result<Vec<QueueStats>, QueueError>;
    async fn pause(&self, queue: &Name, paused: bool, now: DateTime<Utc>)
    -> Result<(), QueueError>;
    async fn set_concurrency(
        &self,
        queue: &Name,
        limit: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError>;
    async fn prune(&self, prune: &JobPrune) -> Result<u64, QueueError>;
    async fn wakeups(&self) -> Result<Wakeups, QueueError>;
    /// Sets (or with `None` removes) the retry policy of a queue's jobs enqueued without one.
    async fn set_retry(
        &self,
        queue: &Name,
        retry: Option<domain::RetryPolicy>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError>;
    /// Takes or renews the leadership `name` for `holder` for `ttl`; true when it leads.
    async fn lead(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, QueueError>;
}

/// The queue in the SQL store (Postgres or SQLite): jobs commit with the caller's data.
#[derive(Clone)]
pub struct SqlBackend {
    store: Store,
}

impl SqlBackend {
    pub fn new(store: Store) -> Self {
        SqlBackend { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[async_trait]
impl Backend for SqlBackend {
    fn name(&self) -> &'static str {
        self.store.dialect()
    }

    async fn enqueue(&self, job: &JobInsert) -> Result<JobInserted, QueueError> {
        Ok(self.store.job_insert(job).await?)
    }

    async fn enqueue_many(&self, jobs: &[JobInsert]) -> Result<Vec<JobInserted>, QueueError> {
        Ok(self.store.job_insert_many(jobs).await?)
    }

    async fn claim(&self, claim: &JobClaim) -> Result<Vec<JobRow>, QueueError> {
        Ok(self.store.job_claim(claim).await?)
    }

    async fn extend_leases(&self, extend: &JobLeaseExtend) -> Result<u64, QueueError> {
        Ok(self.store.job_lease_extend(extend).await?)
    }

    async fn complete(&self, finish: &JobFinish) -> Result<JobRow, QueueError> {
        Ok(self.store.job_complete(finish).await?)
    }

    async fn complete_many(&self, finishes: &[JobFinish]) -> Result<Vec<i64>, QueueError> {
        Ok(self.store.job_complete_many(finishes).await?)
    }

    async fn fail(&self, fail: &JobFail) -> Result<JobRow, QueueError> {
        Ok(self.store.job_fail(fail).await?)
    }

    async fn snooze(&self, snooze: &JobSnooze) -> Result<JobRow, QueueError> {
        Ok(self.store.job_snooze(snooze).await?)
    }

    async fn cancel(&self, finish: &JobFinish) -> Result<JobRow, QueueError> {
        Ok(self.store.job_cancel(finish).await?)
    }

    async fn rescue(&self, rescue: &JobRescue) -> Result<Vec<JobRow>, QueueError> {
        Ok(self.store.job_rescue(rescue).await?)
    }

    async fn retry(&self, id: i64, now: DateTime<Utc>) -> Result<JobRow, QueueError> {
        Ok(self.store.job_retry(id, now).await?)
    }

    async fn discard(&self, id: i64, now: DateTime<Utc>) -> Result<JobRow, QueueError> {
        Ok(self.store.job_discard(id, now).await?)
    }

    async fn get(&self, id: i64) -> Result<Option<JobRow>, QueueError> {
        Ok(self.store.job_get(id).await?)
    }

    async fn list(&self, list: &JobList) -> Result<Vec<JobRow>, QueueError> {
        Ok(self.store.job_list(list).await?)
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<Vec<QueueStats>, QueueError> {
        Ok(self.store.queue_stats(now).await?)
    }

    async fn pause(
        &self,
        queue: &Name,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        Ok(self.store.queue_pause(queue, paused, now).await?)
    }

    async fn set_concurrency(
        &self,
        queue: &Name,
        limit: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        Ok(self.store.queue_set_concurrency(queue, limit, now).await?)
    }

    async fn prune(&self, prune: &JobPrune) -> Result<u64, QueueError> {
        Ok(self.store.job_prune(prune).await?)
    }

    async fn wakeups(&self) -> Result<Wakeups, QueueError> {
        Ok(Wakeups {
            source: WakeSource::Feed(self.store.change_feed().await?),
        })
    }

    async fn set_retry(
        &self,
        queue: &Name,
        retry: Option<domain::RetryPolicy>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        Ok(self.store.queue_set_retry(queue, retry, now).await?)
    }

    async fn lead(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        let acquire = store::LeaderAcquire {
            name: name.into(),
            holder: holder.into(),
            until: now + ttl,
            now,
        };
        Ok(self.store.leader_acquire(&acquire).await?)
    }
}
