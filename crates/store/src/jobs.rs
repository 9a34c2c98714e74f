//! The job queue's store operations, dispatched to each dialect, and `StoreTx`: a transaction
//! in which the caller writes its own data and enqueues jobs, so a job exists exactly when the
//! caller's data committed.
//!
//! Every change to a running job presents the fencing token of its claim; a stale one is
//! refused with `StoreError::Stale`, so a worker wrongly thought dead cannot finish a job
//! someone else now holds.
//!
//! The SQL of the job and queue tables is written here once for both dialects (see
//! `dialect.rs`), except inserting, claiming, rescuing and the batch updates: those stay in
//! `postgres/job.rs` and `sqlite/job.rs`, which say why.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::limits::{
    JOB_ARGS_BYTES_MAX, JOB_ATTEMPTS_MAX, JOB_ENQUEUE_BATCH_MAX, JOB_UNIQUE_KEY_LEN_MAX,
    LIST_LIMIT_MAX,
};
use domain::{JobState, Name, RetryPolicy};
use sqlx::Row;

use crate::dialect::{on_pool, on_tx, on_write, per_dialect};
use crate::{
    AuditInsert, AuditRow, JobClaim, JobFail, JobFinish, JobInsert, JobInserted, JobLeaseExtend,
    JobList, JobPrune, JobRescue, JobRow, JobSnooze, LeaderAcquire, QueueStats, Store, StoreError,
    corrupt, truncate_error,
};

/// The columns [`decode_job!`] reads, as a literal for `concat!`.
macro_rules! job_columns {
    () => {
        "id, queue, kind, args, state, priority, attempt, max_attempts, backoff_base_ms, \
         backoff_max_ms, unique_key, run_at, token, lease_owner, lease_expires_at, errors, \
         rescues, created_at, started_at, finished_at, last_worker"
    };
}
pub(crate) use job_columns;

/// Reads a `job` row of [`job_columns!`] in either dialect.
macro_rules! decode_job {
    ($row:expr, $d:ident) => {{
        let row = $row;
        let name = |column: &str| -> Result<domain::Name, StoreError> {
            domain::Name::new(row.try_get::<String, _>(column)?)
                .map_err(|error| corrupt("job name", error))
        };
        JobRow {
            id: row.try_get("id")?,
            queue: name("queue")?,
            kind: name("kind")?,
            args: $d::read_json(row, "args")?,
            state: row
                .try_get::<String, _>("state")?
                .parse()
                .map_err(|error| corrupt("job.state", error))?,
            priority: row.try_get("priority")?,
            attempt: row.try_get("attempt")?,
            max_attempts: row.try_get("max_attempts")?,
            backoff_base_ms: row.try_get("backoff_base_ms")?,
            backoff_max_ms: row.try_get("backoff_max_ms")?,
            unique_key: row.try_get("unique_key")?,
            run_at: $d::read_time(row, "run_at")?,
            token: row.try_get("token")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_expires_at: $d::read_time_opt(row, "lease_expires_at")?,
            errors: $d::read_json(row, "errors")?,
            rescues: row.try_get("rescues")?,
            created_at: $d::read_time(row, "created_at")?,
            started_at: $d::read_time_opt(row, "started_at")?,
            finished_at: $d::read_time_opt(row, "finished_at")?,
            last_worker: row.try_get("last_worker")?,
        }
    }};
}

/// A duration as stored: whole milliseconds, saturating.
pub(crate) fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A retry policy's attempts as stored (`integer`; `validate_retry` keeps them small).
fn attempts_stored(retry: &RetryPolicy) -> i32 {
    i32::try_from(retry.max_attempts).unwrap_or(i32::MAX)
}

per_dialect! {
    /// Runs `query`, a statement that returns [`job_columns!`], and reads the job it returns.
    pub(crate) async fn fetch_job(
        connection: &mut d::Connection,
        query: sqlx::query::Query<'_, d::Db, <d::Db as sqlx::Database>::Arguments>,
    ) -> Result<Option<JobRow>, StoreError> {
        let row = query.fetch_optional(connection).await?;
        Ok(match row {
            Some(row) => Some(decode_job!(&row, d)),
            None => None,
        })
    }

    /// Reads rows of [`job_columns!`].
    pub(crate) fn decode_all(
        rows: &[<d::Db as sqlx::Database>::Row],
    ) -> Result<Vec<JobRow>, StoreError> {
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            jobs.push(decode_job!(row, d));
        }
        Ok(jobs)
    }

    /// The retry policy a job gets: its own, else its queue's, else the defaults.
    pub(crate) async fn resolve_retry(
        connection: &mut d::Connection,
        insert: &JobInsert,
    ) -> Result<RetryPolicy, StoreError> {
        if let Some(retry) = insert.retry {
            return Ok(retry);
        }
        let row: Option<(Option<i32>, Option<i64>, Option<i64>)> = sqlx::query_as(
            "select max_attempts, backoff_base_ms, backoff_max_ms from queue where name = $1",
        )
        .bind(insert.queue.as_str())
        .fetch_optional(&mut *connection)
        .await?;
        Ok(queue_policy(row.map(|(a, b, c)| (a.map(i64::from), b, c))))
    }
}

/// Calls the dialect's own implementation: for the operations whose SQL differs for real
/// (inserting, claiming, rescuing, batch updates; see `postgres/job.rs`, `sqlite/job.rs`).
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
        let row = self.job_finish_row(finish, JobState::Completed).await?;
        self.held(finish.id, finish.token, row).await
    }

    /// Completes many jobs at once; returns the ids completed (the others were stale).
    pub async fn job_complete_many(&self, finishes: &[JobFinish]) -> Result<Vec<i64>, StoreError> {
        on_dialect!(self, store => store.job_complete_many(finishes).await)
    }

    /// The worker holding the job gives up on it for good.
    pub async fn job_cancel(&self, finish: &JobFinish) -> Result<JobRow, StoreError> {
        let row = self.job_finish_row(finish, JobState::Cancelled).await?;
        self.held(finish.id, finish.token, row).await
    }

    /// Records a failed attempt: retried at `retry_at`, or `failed` (dead letter) when `None`.
    pub async fn job_fail(&self, fail: &JobFail) -> Result<JobRow, StoreError> {
        let row = self.job_fail_row(fail).await?;
        self.held(fail.id, fail.token, row).await
    }

    pub async fn job_snooze(&self, snooze: &JobSnooze) -> Result<JobRow, StoreError> {
        let row = self.job_snooze_row(snooze).await?;
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
        let row = self
            .job_admin_move(id, &from, JobState::Available, now)
            .await?;
        self.moved(id, row, "retried", &from).await
    }

    /// An operator drops a failed job, or one that has not run yet.
    pub async fn job_discard(&self, id: i64, now: DateTime<Utc>) -> Result<JobRow, StoreError> {
        let from = [JobState::Available, JobState::Failed];
        let row = self
            .job_admin_move(id, &from, JobState::Cancelled, now)
            .await?;
        self.moved(id, row, "discarded", &from).await
    }

    pub async fn job_get(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        let query = concat!("select ", job_columns!(), " from job where id = $1");
        on_pool!(self, |pool, d| {
            let mut connection = pool.acquire().await?;
            d::jobs::fetch_job(&mut connection, sqlx::query(query).bind(id)).await
        })
    }

    /// Lists jobs, newest first.
    pub async fn job_list(&self, list: &JobList) -> Result<Vec<JobRow>, StoreError> {
        let limit = i64::from(list.limit.clamp(1, LIST_LIMIT_MAX));
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(concat!(
                "select ",
                job_columns!(),
                " from job
                 where ($1 is null or queue = $1) and ($2 is null or state = $2)
                   and ($3 is null or id < $3)
                 order by id desc limit $4"
            ))
            .bind(list.queue.as_ref().map(Name::as_str))
            .bind(list.state.map(JobState::as_str))
            .bind(list.before_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            d::jobs::decode_all(&rows)
        })
    }

    /// Per lease owner (`worker-id:incarnation`): how many jobs it holds whose lease expired
    /// before `now` and that no rescue has taken back yet. The health check's "running past
    /// its lease": a holder that stopped extending its leases.
    pub async fn job_lease_overdue(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select lease_owner, count(*) as overdue from job
                 where state = 'running' and lease_expires_at < $1
                 group by lease_owner order by lease_owner",
            )
            .bind(d::time(now))
            .fetch_all(pool)
            .await?;
            let mut overdue = Vec::with_capacity(rows.len());
            for row in &rows {
                overdue.push((row.try_get("lease_owner")?, row.try_get("overdue")?));
            }
            Ok(overdue)
        })
    }

    /// Deletes finished jobs beyond the kept counts per queue and older than the cut-off.
    pub async fn job_prune(&self, prune: &JobPrune) -> Result<u64, StoreError> {
        Ok(on_write!(self, |conn, d| {
            // The outer state check keeps a job an operator retried meanwhile.
            sqlx::query(
                "delete from job where state in ('completed', 'failed', 'cancelled') and id in (
                     select id from (
                         select id, state, finished_at,
                                row_number() over (partition by queue, state order by id desc)
                                    as rank
                         from job where state in ('completed', 'failed', 'cancelled')) ranked
                     where (state = 'completed' and rank > $1)
                        or (state in ('failed', 'cancelled') and rank > $2)
                        or finished_at < $3)",
            )
            .bind(i64::from(prune.keep_completed))
            .bind(i64::from(prune.keep_failed))
            .bind(prune.finished_before.map(d::time))
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }))
    }

    /// Every queue with its settings and counts by state.
    pub async fn queue_stats(&self, now: DateTime<Utc>) -> Result<Vec<QueueStats>, StoreError> {
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select q.name, q.paused, q.concurrency_limit,
                        count(j.id) filter (where j.state = 'available' and j.run_at <= $1)
                            as available,
                        count(j.id) filter (where j.state = 'available' and j.run_at > $1)
                            as scheduled,
                        count(j.id) filter (where j.state = 'running') as running,
                        count(j.id) filter (where j.state = 'completed') as completed,
                        count(j.id) filter (where j.state = 'failed') as failed,
                        count(j.id) filter (where j.state = 'cancelled') as cancelled,
                        min(j.run_at) filter (where j.state = 'available' and j.run_at <= $1)
                            as oldest_available_at
                 from queue q left join job j on j.queue = q.name
                 group by q.name, q.paused, q.concurrency_limit
                 order by q.name",
            )
            .bind(d::time(now))
            .fetch_all(pool)
            .await?;
            let mut queues = Vec::with_capacity(rows.len());
            for row in &rows {
                queues.push(QueueStats {
                    name: Name::new(row.try_get::<String, _>("name")?)
                        .map_err(|error| corrupt("queue.name", error))?,
                    paused: row.try_get("paused")?,
                    concurrency_limit: row.try_get("concurrency_limit")?,
                    available: row.try_get("available")?,
                    scheduled: row.try_get("scheduled")?,
                    running: row.try_get("running")?,
                    completed: row.try_get("completed")?,
                    failed: row.try_get("failed")?,
                    cancelled: row.try_get("cancelled")?,
                    oldest_available_at: d::read_time_opt(row, "oldest_available_at")?,
                });
            }
            Ok(queues)
        })
    }

    pub async fn queue_pause(
        &self,
        name: &Name,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let found = self.queue_update(name, Some(paused), None, now).await?;
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
        let found = self.queue_update(name, None, Some(limit), now).await?;
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
        let holder = on_write!(self, |conn, d| {
            sqlx::query_scalar::<_, String>(
                "insert into leader (name, holder, expires_at) values ($1, $2, $3)
                 on conflict (name) do update
                 set holder = excluded.holder, expires_at = excluded.expires_at
                 where leader.holder = excluded.holder or leader.expires_at < $4
                 returning holder",
            )
            .bind(&acquire.name)
            .bind(&acquire.holder)
            .bind(d::time(acquire.until))
            .bind(d::time(acquire.now))
            .fetch_optional(&mut *conn)
            .await?
        });
        Ok(holder.is_some())
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
        let found = self.queue_retry_set(name, retry, now).await?;
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

impl Store {
    /// After a commit that may have made jobs available now: SQLite rings this process's
    /// change feeds (other processes see `data_version` move). Postgres needs nothing here:
    /// the statements that make jobs available for claiming send their NOTIFY themselves,
    /// or through [`Store::jobs_announce`].
    fn jobs_ring(&self) {
        if let Store::Sqlite(store) = self {
            store.ring();
        }
    }

    /// Announces that `queue` has jobs available after a commit: NOTIFY on Postgres, the
    /// in-process ring on SQLite.
    async fn jobs_announce(&self, queue: &str) -> Result<(), StoreError> {
        match self {
            Store::Postgres(store) => {
                sqlx::query("select pg_notify($1, $2)")
                    .bind(crate::postgres::JOB_CHANNEL)
                    .bind(queue)
                    .execute(&store.pool)
                    .await?;
            }
            Store::Sqlite(store) => store.ring(),
        }
        Ok(())
    }

    /// Completes or cancels a running job under its token; `None` when it is not held.
    async fn job_finish_row(
        &self,
        finish: &JobFinish,
        to: JobState,
    ) -> Result<Option<JobRow>, StoreError> {
        Ok(on_write!(self, |conn, d| {
            let query = sqlx::query(concat!(
                "update job set state = $3, finished_at = $4, lease_owner = null,
                        lease_expires_at = null
                 where id = $1 and token = $2 and state = 'running'
                 returning ",
                job_columns!()
            ))
            .bind(finish.id)
            .bind(finish.token)
            .bind(to.as_str())
            .bind(d::time(finish.now));
            d::jobs::fetch_job(&mut *conn, query).await?
        }))
    }

    async fn job_fail_row(&self, fail: &JobFail) -> Result<Option<JobRow>, StoreError> {
        let row = on_write!(self, |conn, d| {
            let errors = d::json_array_push("errors", "'attempt', attempt, 'at', $6, 'error', $3");
            let sql = format!(
                "update job set
                     state = case when $4 is null then 'failed' else 'available' end,
                     run_at = coalesce($4, run_at),
                     finished_at = case when $4 is null then $5 end,
                     lease_owner = null, lease_expires_at = null,
                     errors = {errors}
                 where id = $1 and token = $2 and state = 'running'
                 returning {}",
                job_columns!()
            );
            d::jobs::fetch_job(
                &mut *conn,
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(fail.id)
                    .bind(fail.token)
                    .bind(truncate_error(&fail.error))
                    .bind(fail.retry_at.map(d::time))
                    .bind(d::time(fail.now))
                    .bind(fail.now.to_rfc3339()),
            )
            .await?
        });
        self.jobs_ring();
        Ok(row)
    }

    async fn job_snooze_row(&self, snooze: &JobSnooze) -> Result<Option<JobRow>, StoreError> {
        let row = on_write!(self, |conn, d| {
            d::jobs::fetch_job(
                &mut *conn,
                sqlx::query(concat!(
                    "update job set state = 'available', run_at = $3, attempt = attempt - 1,
                        lease_owner = null, lease_expires_at = null
                 where id = $1 and token = $2 and state = 'running'
                 returning ",
                    job_columns!()
                ))
                .bind(snooze.id)
                .bind(snooze.token)
                .bind(d::time(snooze.run_at)),
            )
            .await?
        });
        self.jobs_ring();
        Ok(row)
    }

    /// Operator's retry (failed or cancelled → available, attempts reset) or discard
    /// (available or failed → cancelled). Returns `None` when the job is not in a `from` state.
    async fn job_admin_move(
        &self,
        id: i64,
        from: &[JobState],
        to: JobState,
        now: DateTime<Utc>,
    ) -> Result<Option<JobRow>, StoreError> {
        // The states are a closed set of our own spellings, so they are written into the
        // text (Postgres would take an array, SQLite a JSON list: this is one statement).
        let from = from
            .iter()
            .map(|state| format!("'{}'", state.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "update job set state = $2,
                 attempt = case when $2 = 'available' then 0 else attempt end,
                 run_at = case when $2 = 'available' then $3 else run_at end,
                 finished_at = case when $2 = 'available' then null else $3 end
             where id = $1 and state in ({from})
             returning {}",
            job_columns!()
        );
        let row = on_write!(self, |conn, d| {
            d::jobs::fetch_job(
                &mut *conn,
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(to.as_str())
                    .bind(d::time(now)),
            )
            .await?
        });
        if to == JobState::Available
            && let Some(row) = &row
        {
            self.jobs_announce(row.queue.as_str()).await?;
        }
        Ok(row)
    }

    /// Pauses or resumes a queue, or sets its concurrency limit (`Some(None)` removes it).
    /// Returns false when there is no such queue.
    async fn queue_update(
        &self,
        name: &Name,
        paused: Option<bool>,
        concurrency_limit: Option<Option<i32>>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = on_write!(self, |conn, d| {
            sqlx::query(
                "update queue set paused = coalesce($2, paused),
                        concurrency_limit = case when $3 then $4 else concurrency_limit end,
                        updated_at = $5
                 where name = $1",
            )
            .bind(name.as_str())
            .bind(paused)
            .bind(concurrency_limit.is_some())
            .bind(concurrency_limit.flatten())
            .bind(d::time(now))
            .execute(&mut *conn)
            .await?
            .rows_affected()
                > 0
        });
        if paused == Some(false) && updated {
            self.jobs_announce(name.as_str()).await?;
        }
        Ok(updated)
    }

    async fn queue_retry_set(
        &self,
        name: &Name,
        retry: Option<RetryPolicy>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(on_write!(self, |conn, d| {
            sqlx::query(
                "update queue set max_attempts = $2, backoff_base_ms = $3, backoff_max_ms = $4,
                        updated_at = $5
                 where name = $1",
            )
            .bind(name.as_str())
            .bind(retry.as_ref().map(attempts_stored))
            .bind(retry.map(|retry| millis(retry.backoff_base)))
            .bind(retry.map(|retry| millis(retry.backoff_max)))
            .bind(d::time(now))
            .execute(&mut *conn)
            .await?
            .rows_affected()
                > 0
        }))
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
        on_tx!(self, |conn, d| d::job_insert_on(conn, insert).await)
    }

    pub async fn audit_insert(&mut self, insert: &AuditInsert) -> Result<AuditRow, StoreError> {
        crate::validate_audit(insert)?;
        on_tx!(self, |conn, d| d::audit::insert_on(conn, insert).await)
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
