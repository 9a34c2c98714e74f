//! The job queue's store operations, dispatched to each dialect, and `StoreTx`: a transaction
//! in which the caller writes its own data and enqueues jobs, so a job exists exactly when the
//! caller's data committed.
//!
//! Every change to a running job presents the fencing token of its claim; a stale one is
//! refused with `StoreError::Stale`, so a worker wrongly thought dead cannot finish a job
//! someone else now holds.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::limits::{
    JOB_ARGS_BYTES_MAX, JOB_ATTEMPTS_MAX, JOB_ENQUEUE_BATCH_MAX, JOB_UNIQUE_KEY_LEN_MAX,
    LIST_LIMIT_MAX,
};
use domain::{JobState, Name, RetryPolicy};

use crate::dialect::on_tx;
use crate::{
    AuditInsert, AuditRow, JobClaim, JobFail, JobFinish, JobInsert, JobInserted, JobLeaseExtend,
    JobList, JobPrune, JobRescue, JobRow, JobSnooze, LeaderAcquire, QueueStats, Store, StoreError,
    postgres, sqlite,
};

macro_rules! on_dialect {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Postgres($store) => $call,
            Store::Sqlite($store) => $call,
        }
    };
}

pub(crate) fn validate_job_insert(insert: &JobInsert) -> Result<(), StoreError> {
    let invalid = |message: String| Err(StoreError::Invalid(message));
    if let Some(retry) = &insert.retry {
        validate_retry(retry)?;
    }
    if let Some(key) = &insert.unique_key
        && !(1..=JOB_UNIQUE_KEY_LEN_MAX).contains(&key.len())
    {
        return invalid(format!(
            "unique key must be 1 to {JOB_UNIQUE_KEY_LEN_MAX} bytes"
        ));
    }
    if crate::json_has_nul(&insert.args) {
        return invalid(
            "job args hold a NUL character (\\u0000), which no store takes; leave it out".into(),
        );
    }
    let args_len = insert.args.to_string().len();
    if args_len > JOB_ARGS_BYTES_MAX {
        return invalid(format!(
            "job args are {args_len} bytes; at most {JOB_ARGS_BYTES_MAX}"
        ));
    }
    Ok(())
}

/// Checks a batch of jobs before anything is written (every backend calls it).
/// A queue's stored policy (max attempts, backoff base and maximum in ms), each part falling
/// back to the default.
pub(crate) fn queue_policy(row: Option<(Option<i64>, Option<i64>, Option<i64>)>) -> RetryPolicy {
    let default = RetryPolicy::default();
    let Some((attempts, base, max)) = row else {
        return default;
    };
    let ms = |value: Option<i64>, fallback: std::time::Duration| {
        value
            .and_then(|ms| u64::try_from(ms).ok())
            .map(std::time::Duration::from_millis)
            .unwrap_or(fallback)
    };
    RetryPolicy {
        max_attempts: attempts
            .and_then(|attempts| u32::try_from(attempts).ok())
            .unwrap_or(default.max_attempts),
        backoff_base: ms(base, default.backoff_base),
        backoff_max: ms(max, default.backoff_max),
    }
}

/// Checks a retry policy (a job's or a queue's).
pub fn validate_retry(retry: &RetryPolicy) -> Result<(), StoreError> {
    if !(1..=JOB_ATTEMPTS_MAX).contains(&retry.max_attempts) {
        return Err(StoreError::Invalid(format!(
            "max attempts must be 1 to {JOB_ATTEMPTS_MAX}"
        )));
    }
    if retry.backoff_base > retry.backoff_max {
        return Err(StoreError::Invalid(
            "backoff base must not exceed the backoff maximum".into(),
        ));
    }
    Ok(())
}

pub fn validate_job_batch(inserts: &[JobInsert]) -> Result<(), StoreError> {
    if inserts.len() > JOB_ENQUEUE_BATCH_MAX {
        return Err(StoreError::Invalid(format!(
            "{} jobs in one batch; at most {JOB_ENQUEUE_BATCH_MAX}",
            inserts.len()
        )));
    }
    inserts.iter().try_for_each(validate_job_insert)
}

impl Store {
    /// Enqueues a job; with a unique key already held by an unfinished job of the queue,
    /// returns that job instead.
    pub async fn job_insert(&self, insert: &JobInsert) -> Result<JobInserted, StoreError> {
        on_dialect!(self, store => store.job_insert(insert).await)
    }

    /// Enqueues many jobs in one round trip (in input order); all or none.
    pub async fn job_insert_many(
        &self,
        inserts: &[JobInsert],
    ) -> Result<Vec<JobInserted>, StoreError> {
        on_dialect!(self, store => store.job_insert_many(inserts).await)
    }

    /// Claims up to `limit` available jobs (priority, then `run_at`), each with a lease and a
    /// fresh fencing token. A paused queue gives nothing; a limited one at most its room.
    pub async fn job_claim(&self, claim: &JobClaim) -> Result<Vec<JobRow>, StoreError> {
        if claim.limit == 0 || claim.owner.is_empty() {
            return Err(StoreError::Invalid(
                "a claim needs an owner and a limit above 0".into(),
            ));
        }
        on_dialect!(self, store => store.job_claim(claim).await)
    }

    /// Extends every lease `owner` holds; returns how many.
    pub async fn job_lease_extend(&self, extend: &JobLeaseExtend) -> Result<u64, StoreError> {
        on_dialect!(self, store => store.job_lease_extend(extend).await)
    }

    pub async fn job_complete(&self, finish: &JobFinish) -> Result<JobRow, StoreError> {
        let row = on_dialect!(self, store => store.job_finish(finish, JobState::Completed).await)?;
        self.held(finish.id, finish.token, row).await
    }

    /// Completes many jobs at once; returns the ids completed (the others were stale).
    pub async fn job_complete_many(&self, finishes: &[JobFinish]) -> Result<Vec<i64>, StoreError> {
        on_dialect!(self, store => store.job_complete_many(finishes).await)
    }

    /// The worker holding the job gives up on it for good.
    pub async fn job_cancel(&self, finish: &JobFinish) -> Result<JobRow, StoreError> {
        let row = on_dialect!(self, store => store.job_finish(finish, JobState::Cancelled).await)?;
        self.held(finish.id, finish.token, row).await
    }

    /// Records a failed attempt: retried at `retry_at`, or `failed` (dead letter) when `None`.
    pub async fn job_fail(&self, fail: &JobFail) -> Result<JobRow, StoreError> {
        let row = on_dialect!(self, store => store.job_fail(fail).await)?;
        self.held(fail.id, fail.token, row).await
    }

    pub async fn job_snooze(&self, snooze: &JobSnooze) -> Result<JobRow, StoreError> {
        let row = on_dialect!(self, store => store.job_snooze(snooze).await)?;
        self.held(snooze.id, snooze.token, row).await
    }

    /// Takes back running jobs whose lease expired (or all of one owner's); each counts a
    /// rescue and an attempt, and fails for good when it had no attempt left.
    pub async fn job_rescue(&self, rescue: &JobRescue) -> Result<Vec<JobRow>, StoreError> {
        on_dialect!(self, store => store.job_rescue(rescue).await)
    }

    /// An operator runs a failed or cancelled job again, with its attempts reset.
    pub async fn job_retry(&self, id: i64, now: DateTime<Utc>) -> Result<JobRow, StoreError> {
        let from = [JobState::Failed, JobState::Cancelled];
        let row = on_dialect!(self, store => store.job_admin_move(id, &from, JobState::Available, now).await)?;
        self.moved(id, row, "retried", &from).await
    }

    /// An operator drops a failed job, or one that has not run yet.
    pub async fn job_discard(&self, id: i64, now: DateTime<Utc>) -> Result<JobRow, StoreError> {
        let from = [JobState::Available, JobState::Failed];
        let row = on_dialect!(self, store => store.job_admin_move(id, &from, JobState::Cancelled, now).await)?;
        self.moved(id, row, "discarded", &from).await
    }

    pub async fn job_get(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        on_dialect!(self, store => store.job_get(id).await)
    }

    /// Lists jobs, newest first.
    pub async fn job_list(&self, list: &JobList) -> Result<Vec<JobRow>, StoreError> {
        let mut list = list.clone();
        list.limit = list.limit.clamp(1, LIST_LIMIT_MAX);
        on_dialect!(self, store => store.job_list(&list).await)
    }

    /// Deletes finished jobs beyond the kept counts per queue and older than the cut-off.
    pub async fn job_prune(&self, prune: &JobPrune) -> Result<u64, StoreError> {
        on_dialect!(self, store => store.job_prune(prune).await)
    }

    /// Every queue with its settings and counts by state.
    pub async fn queue_stats(&self, now: DateTime<Utc>) -> Result<Vec<QueueStats>, StoreError> {
        on_dialect!(self, store => store.queue_stats(now).await)
    }

    pub async fn queue_pause(
        &self,
        name: &Name,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let found =
            on_dialect!(self, store => store.queue_update(name, Some(paused), None, now).await)?;
        found.then_some(()).ok_or_else(|| StoreError::NotFound {
            what: "queue",
            id: name.to_string(),
        })
    }

    /// Sets (or with `None` removes) how many jobs of the queue may run at once, across all
    /// workers.
    pub async fn queue_set_concurrency(
        &self,
        name: &Name,
        concurrency_limit: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let limit = match concurrency_limit {
            Some(0) => {
                return Err(StoreError::Invalid(
                    "a concurrency limit must be at least 1".into(),
                ));
            }
            Some(limit) => Some(
                i32::try_from(limit)
                    .map_err(|_| StoreError::Invalid("concurrency limit too large".into()))?,
            ),
            None => None,
        };
        let found =
            on_dialect!(self, store => store.queue_update(name, None, Some(limit), now).await)?;
        found.then_some(()).ok_or_else(|| StoreError::NotFound {
            what: "queue",
            id: name.to_string(),
        })
    }

    /// Creates an empty database on a Postgres server (benchmarks and tests use throwaway
    /// ones). The name must be lowercase letters, digits and underscores.
    pub async fn database_create(&self, name: &str) -> Result<(), StoreError> {
        self.database_admin("create database", name).await
    }

    /// Drops a database created by `database_create`, closing its connections.
    pub async fn database_drop(&self, name: &str) -> Result<(), StoreError> {
        self.database_admin("drop database if exists", name).await
    }

    async fn database_admin(&self, verb: &str, name: &str) -> Result<(), StoreError> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
        if !valid {
            return Err(StoreError::Invalid(format!(
                "database name {name:?}: use a-z, 0-9 and _"
            )));
        }
        let Store::Postgres(store) = self else {
            return Err(StoreError::Invalid(
                "creating databases needs Postgres".into(),
            ));
        };
        let force = if verb.starts_with("drop") {
            " with (force)"
        } else {
            ""
        };
        sqlx::query(sqlx::AssertSqlSafe(format!("{verb} {name}{force}")))
            .execute(&store.pool)
            .await?;
        Ok(())
    }

    /// A Postgres setting's current value (`synchronous_commit`, ...), for reports.
    pub async fn setting(&self, name: &str) -> Result<String, StoreError> {
        let Store::Postgres(store) = self else {
            return Err(StoreError::Invalid("settings are read on Postgres".into()));
        };
        Ok(
            sqlx::query_scalar::<sqlx::Postgres, String>("select current_setting($1)")
                .bind(name)
                .fetch_one(&store.pool)
                .await?,
        )
    }

    /// Takes or renews a leadership lease; true when `holder` leads until `until`.
    pub async fn leader_acquire(&self, acquire: &LeaderAcquire) -> Result<bool, StoreError> {
        if acquire.name.is_empty() || acquire.holder.is_empty() || acquire.until <= acquire.now {
            return Err(StoreError::Invalid(
                "a leadership lease needs a name, a holder and a future expiry".into(),
            ));
        }
        on_dialect!(self, store => store.leader_acquire(acquire).await)
    }

    /// Sets (or with `None` removes) the retry policy of a queue's jobs enqueued without one.
    pub async fn queue_set_retry(
        &self,
        name: &Name,
        retry: Option<RetryPolicy>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some(retry) = &retry {
            validate_retry(retry)?;
        }
        let found = on_dialect!(self, store => store.queue_set_retry(name, retry, now).await)?;
        found.then_some(()).ok_or_else(|| StoreError::NotFound {
            what: "queue",
            id: name.to_string(),
        })
    }

    /// Begins a transaction for the caller's own writes and its jobs.
    pub async fn begin(&self) -> Result<StoreTx, StoreError> {
        Ok(match self {
            Store::Postgres(store) => StoreTx::Postgres(store.pool.begin().await?),
            Store::Sqlite(store) => {
                StoreTx::Sqlite(store.begin_write().await?, Arc::clone(&store.job_signal))
            }
        })
    }

    /// Turns "no row changed" after a token-checked update into NotFound or Stale.
    async fn held(&self, id: i64, token: i64, row: Option<JobRow>) -> Result<JobRow, StoreError> {
        if let Some(row) = row {
            return Ok(row);
        }
        match self.job_get(id).await? {
            None => Err(StoreError::NotFound {
                what: "job",
                id: id.to_string(),
            }),
            Some(job) => Err(StoreError::Stale(format!(
                "job {id} is {} under token {}; the caller holds token {token}",
                job.state, job.token
            ))),
        }
    }

    async fn moved(
        &self,
        id: i64,
        row: Option<JobRow>,
        verb: &str,
        from: &[JobState],
    ) -> Result<JobRow, StoreError> {
        if let Some(row) = row {
            return Ok(row);
        }
        match self.job_get(id).await? {
            None => Err(StoreError::NotFound {
                what: "job",
                id: id.to_string(),
            }),
            Some(job) => {
                let from: Vec<&str> = from.iter().map(|state| state.as_str()).collect();
                Err(StoreError::Conflict(format!(
                    "job {id} is {}: only {} jobs can be {verb}",
                    job.state,
                    from.join(" or ")
                )))
            }
        }
    }
}

/// A transaction on the store. Dropping it without `commit` rolls it back.
pub enum StoreTx {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(
        sqlx::Transaction<'static, sqlx::Sqlite>,
        Arc<tokio::sync::watch::Sender<u64>>,
    ),
}

impl StoreTx {
    /// Enqueues a job that exists only if this transaction commits.
    pub async fn job_insert(&mut self, insert: &JobInsert) -> Result<JobInserted, StoreError> {
        match self {
            StoreTx::Postgres(transaction) => postgres::job::insert_on(transaction, insert).await,
            StoreTx::Sqlite(transaction, _) => sqlite::job::insert_on(transaction, insert).await,
        }
    }

    pub async fn audit_insert(&mut self, insert: &AuditInsert) -> Result<AuditRow, StoreError> {
        crate::validate_audit(insert)?;
        on_tx!(self, |conn, d| d::audit_insert_on(conn, insert).await)
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            StoreTx::Postgres(transaction) => transaction.commit().await?,
            StoreTx::Sqlite(transaction, signal) => {
                transaction.commit().await?;
                signal.send_modify(|rings| *rings = rings.wrapping_add(1));
            }
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            StoreTx::Postgres(transaction) => transaction.rollback().await?,
            StoreTx::Sqlite(transaction, _) => transaction.rollback().await?,
        }
        Ok(())
    }
}
