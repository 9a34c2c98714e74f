//! The `job` and `queue` tables on Postgres. Claims use `for update skip locked`; every change
//! to a running job checks its fencing token in the `where` clause; inserts announce their
//! queue on `coinsensei_job` in the same statement, so a wake-up is sent exactly when the job
//! commits.

use chrono::{DateTime, Utc};
use domain::{JobState, Name, RetryPolicy};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row};

use super::{JOB_CHANNEL, PgStore};
use crate::{
    JobClaim, JobFail, JobFinish, JobInsert, JobInserted, JobLeaseExtend, JobList, JobPrune,
    JobRescue, JobRow, JobSnooze, LeaderAcquire, QueueStats, StoreError, corrupt, truncate_error,
};

macro_rules! columns {
    () => {
        "id, queue, kind, args, state, priority, attempt, max_attempts, backoff_base_ms, backoff_max_ms, \
         unique_key, run_at, token, lease_owner, lease_expires_at, errors, rescues, created_at, started_at, \
         finished_at"
    };
}

fn decode(row: &PgRow) -> Result<JobRow, StoreError> {
    let name = |column: &str| -> Result<Name, StoreError> {
        Name::new(row.try_get::<String, _>(column)?).map_err(|error| corrupt("job name", error))
    };
    Ok(JobRow {
        id: row.try_get("id")?,
        queue: name("queue")?,
        kind: name("kind")?,
        args: row.try_get("args")?,
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
        run_at: row.try_get("run_at")?,
        token: row.try_get("token")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        errors: row.try_get("errors")?,
        rescues: row.try_get("rescues")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn decode_all(rows: &[PgRow]) -> Result<Vec<JobRow>, StoreError> {
    rows.iter().map(decode).collect()
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The retry policy a job gets: its own, else its queue's, else the defaults.
async fn resolve_retry(
    connection: &mut PgConnection,
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
    Ok(crate::jobs::queue_policy(
        row.map(|(a, b, c)| (a.map(i64::from), b, c)),
    ))
}

/// Inserts one job on `connection` (the pool, or the caller's transaction).
pub(crate) async fn insert_on(
    connection: &mut PgConnection,
    insert: &JobInsert,
) -> Result<JobInserted, StoreError> {
    crate::jobs::validate_job_insert(insert)?;
    let retry = resolve_retry(connection, insert).await?;
    // A unique key whose job finishes between the insert and the lookup: try again.
    for _ in 0..3 {
        let inserted: Option<i64> = sqlx::query_scalar::<Postgres, i64>(
            "with q as (insert into queue (name, updated_at) values ($1, $9) on conflict (name) do nothing)
             insert into job (queue, kind, args, state, priority, max_attempts, backoff_base_ms, backoff_max_ms,
                              unique_key, run_at, created_at)
             select $1, $2, $3, 'available', $4, $5, $6, $7, $8, $10, $9
             from (select pg_notify($11, $1)) as wake
             on conflict (queue, unique_key) where unique_key is not null and state in ('available', 'running')
             do nothing
             returning id",
        )
        .bind(insert.queue.as_str())
        .bind(insert.kind.as_str())
        .bind(&insert.args)
        .bind(insert.priority)
                .bind(i32::try_from(retry.max_attempts).unwrap_or(i32::MAX))
        .bind(millis(retry.backoff_base))
        .bind(millis(retry.backoff_max))
        .bind(insert.unique_key.as_deref())
        .bind(insert.now)
        .bind(insert.run_at)
        .bind(JOB_CHANNEL)
        .fetch_optional(&mut *connection)
        .await?;
        if let Some(id) = inserted {
            return Ok(JobInserted { id, inserted: true });
        }
        let existing: Option<i64> = sqlx::query_scalar::<Postgres, i64>(
            "select id from job where queue = $1 and unique_key = $2 and state in ('available', 'running')",
        )
        .bind(insert.queue.as_str())
        .bind(insert.unique_key.as_deref())
        .fetch_optional(&mut *connection)
        .await?;
        if let Some(id) = existing {
            return Ok(JobInserted {
                id,
                inserted: false,
            });
        }
    }
    Err(StoreError::Conflict(format!(
        "job with unique key {:?} kept changing while enqueueing",
        insert.unique_key
    )))
}

impl PgStore {
    pub(crate) async fn job_insert(&self, insert: &JobInsert) -> Result<JobInserted, StoreError> {
        let mut connection = self.pool.acquire().await?;
        insert_on(&mut connection, insert).await
    }

    /// Many jobs in one statement. Ids are taken from the sequence first, so each input row
    /// knows its id whether it was inserted or deduplicated.
    pub(crate) async fn job_insert_many(
        &self,
        inserts: &[JobInsert],
    ) -> Result<Vec<JobInserted>, StoreError> {
        crate::jobs::validate_job_batch(inserts)?;
        let Some(first) = inserts.first() else {
            return Ok(Vec::new());
        };
        let mut transaction = self.pool.begin().await?;
        let mut policies: Vec<RetryPolicy> = Vec::with_capacity(inserts.len());
        let mut by_queue: std::collections::HashMap<&str, RetryPolicy> =
            std::collections::HashMap::new();
        for insert in inserts {
            let policy = match (insert.retry, by_queue.get(insert.queue.as_str())) {
                (Some(retry), _) => retry,
                (None, Some(known)) => *known,
                (None, None) => {
                    let policy = resolve_retry(&mut transaction, insert).await?;
                    by_queue.insert(insert.queue.as_str(), policy);
                    policy
                }
            };
            policies.push(policy);
        }
        let ids: Vec<i64> = sqlx::query_scalar::<Postgres, i64>(
            "select nextval(pg_get_serial_sequence('job', 'id')) from generate_series(1, $1)",
        )
        .bind(i64::try_from(inserts.len()).unwrap_or(i64::MAX))
        .fetch_all(&mut *transaction)
        .await?;
        let queues: Vec<&str> = inserts.iter().map(|insert| insert.queue.as_str()).collect();
        let kinds: Vec<&str> = inserts.iter().map(|insert| insert.kind.as_str()).collect();
        let args: Vec<&serde_json::Value> = inserts.iter().map(|insert| &insert.args).collect();
        let priorities: Vec<i16> = inserts.iter().map(|insert| insert.priority).collect();
        let max_attempts: Vec<i32> = policies
            .iter()
            .map(|retry| i32::try_from(retry.max_attempts).unwrap_or(i32::MAX))
            .collect();
        let backoff_base: Vec<i64> = policies
            .iter()
            .map(|retry| millis(retry.backoff_base))
            .collect();
        let backoff_max: Vec<i64> = policies
            .iter()
            .map(|retry| millis(retry.backoff_max))
            .collect();
        let unique_keys: Vec<Option<&str>> = inserts
            .iter()
            .map(|insert| insert.unique_key.as_deref())
            .collect();
        let run_at: Vec<DateTime<Utc>> = inserts.iter().map(|insert| insert.run_at).collect();
        let inserted: Vec<i64> = sqlx::query_scalar::<Postgres, i64>(
            "with q as (insert into queue (name, updated_at) select distinct name, $11 from unnest($2::text[]) as n(name)
                        on conflict (name) do nothing),
                  wake as (select count(pg_notify($12, name)) from (select distinct name from unnest($2::text[]) as n(name)) d)
             insert into job (id, queue, kind, args, state, priority, max_attempts, backoff_base_ms, backoff_max_ms,
                              unique_key, run_at, created_at)
             select u.id, u.queue, u.kind, u.args, 'available', u.priority, u.max_attempts, u.backoff_base_ms,
                    u.backoff_max_ms, u.unique_key, u.run_at, $11
             from unnest($1::int8[], $2::text[], $3::text[], $4::jsonb[], $5::int2[], $6::int4[], $7::int8[],
                         $8::int8[], $9::text[], $10::timestamptz[])
                  as u(id, queue, kind, args, priority, max_attempts, backoff_base_ms, backoff_max_ms, unique_key, run_at)
             cross join wake
             order by u.id
             on conflict (queue, unique_key) where unique_key is not null and state in ('available', 'running')
             do nothing
             returning id",
        )
        .bind(&ids)
        .bind(&queues)
        .bind(&kinds)
        .bind(&args)
        .bind(&priorities)
        .bind(&max_attempts)
        .bind(&backoff_base)
        .bind(&backoff_max)
        .bind(&unique_keys)
        .bind(&run_at)
        .bind(first.now)
        .bind(JOB_CHANNEL)
        .fetch_all(&mut *transaction)
        .await?;
        let inserted: std::collections::HashSet<i64> = inserted.into_iter().collect();
        let mut out = Vec::with_capacity(inserts.len());
        for (insert, id) in inserts.iter().zip(ids) {
            if inserted.contains(&id) {
                out.push(JobInserted { id, inserted: true });
                continue;
            }
            // Deduplicated: the unfinished job holding the key (possibly one of this batch).
            let existing: i64 = sqlx::query_scalar::<Postgres, i64>(
                "select id from job where queue = $1 and unique_key = $2 and state in ('available', 'running')",
            )
            .bind(insert.queue.as_str())
            .bind(insert.unique_key.as_deref())
            .fetch_one(&mut *transaction)
            .await?;
            out.push(JobInserted {
                id: existing,
                inserted: false,
            });
        }
        transaction.commit().await?;
        Ok(out)
    }

    pub(crate) async fn job_claim(&self, claim: &JobClaim) -> Result<Vec<JobRow>, StoreError> {
        let limit = i64::from(claim.limit.min(domain::limits::JOB_CLAIM_BATCH_MAX));
        // Fast path, one statement: queues without a pause or a concurrency limit. The share
        // lock on the queue row makes a concurrent pause or limit wait for claims in flight,
        // and claims after it see the new settings.
        let rows = sqlx::query::<Postgres>(concat!(
            "update job set state = 'running', attempt = attempt + 1, token = token + 1, lease_owner = $2,
                    lease_expires_at = $3, started_at = $4
             where id in (
                 select id from job
                 where queue = $1 and state = 'available' and run_at <= $4
                   and exists (select 1 from queue q where q.name = $1 and not q.paused
                               and q.concurrency_limit is null for share)
                 order by priority, run_at, id
                 limit $5
                 for update skip locked)
             returning ",
            columns!()
        ))
        .bind(claim.queue.as_str())
        .bind(&claim.owner)
        .bind(claim.lease_until)
        .bind(claim.now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        if !rows.is_empty() {
            return sorted(decode_all(&rows)?);
        }
        // Slow path: a paused queue claims nothing; a limited one claims under its row lock.
        let mut transaction = self.pool.begin().await?;
        let settings: Option<(bool, Option<i32>)> = sqlx::query_as(
            "select paused, concurrency_limit from queue where name = $1 for update",
        )
        .bind(claim.queue.as_str())
        .fetch_optional(&mut *transaction)
        .await?;
        let Some((false, Some(concurrency_limit))) = settings else {
            return Ok(Vec::new());
        };
        let running: i64 =
            sqlx::query_scalar("select count(*) from job where queue = $1 and state = 'running'")
                .bind(claim.queue.as_str())
                .fetch_one(&mut *transaction)
                .await?;
        let room = (i64::from(concurrency_limit) - running).clamp(0, limit);
        if room == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query::<Postgres>(concat!(
            "update job set state = 'running', attempt = attempt + 1, token = token + 1, lease_owner = $2,
                    lease_expires_at = $3, started_at = $4
             where id in (
                 select id from job where queue = $1 and state = 'available' and run_at <= $4
                 order by priority, run_at, id limit $5 for update skip locked)
             returning ",
            columns!()
        ))
        .bind(claim.queue.as_str())
        .bind(&claim.owner)
        .bind(claim.lease_until)
        .bind(claim.now)
        .bind(room)
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;
        sorted(decode_all(&rows)?)
    }

    pub(crate) async fn job_lease_extend(
        &self,
        extend: &JobLeaseExtend,
    ) -> Result<u64, StoreError> {
        let ids: Vec<i64> = extend.jobs.iter().map(|(id, _)| *id).collect();
        let tokens: Vec<i64> = extend.jobs.iter().map(|(_, token)| *token).collect();
        let result = sqlx::query::<Postgres>(
            "update job set lease_expires_at = $2
             from unnest($3::int8[], $4::int8[]) as held(id, token)
             where job.id = held.id and job.token = held.token and job.state = 'running'
               and job.lease_owner = $1 and job.lease_expires_at < $2",
        )
        .bind(&extend.owner)
        .bind(extend.lease_until)
        .bind(&ids)
        .bind(&tokens)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Completes many jobs in one statement; returns the ids that were still held.
    pub(crate) async fn job_complete_many(
        &self,
        finishes: &[JobFinish],
    ) -> Result<Vec<i64>, StoreError> {
        let Some(first) = finishes.first() else {
            return Ok(Vec::new());
        };
        let ids: Vec<i64> = finishes.iter().map(|finish| finish.id).collect();
        let tokens: Vec<i64> = finishes.iter().map(|finish| finish.token).collect();
        let done: Vec<i64> = sqlx::query_scalar::<Postgres, i64>(
            "update job set state = 'completed', finished_at = $3, lease_owner = null, lease_expires_at = null
             from unnest($1::int8[], $2::int8[]) as c(id, token)
             where job.id = c.id and job.token = c.token and job.state = 'running'
             returning job.id",
        )
        .bind(&ids)
        .bind(&tokens)
        .bind(first.now)
        .fetch_all(&self.pool)
        .await?;
        Ok(done)
    }

    pub(crate) async fn job_finish(
        &self,
        finish: &JobFinish,
        to: JobState,
    ) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query::<Postgres>(concat!(
            "update job set state = $3, finished_at = $4, lease_owner = null, lease_expires_at = null
             where id = $1 and token = $2 and state = 'running'
             returning ",
            columns!()
        ))
        .bind(finish.id)
        .bind(finish.token)
        .bind(to.as_str())
        .bind(finish.now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn job_fail(&self, fail: &JobFail) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query::<Postgres>(concat!(
            "update job set
                 state = case when $4::timestamptz is null then 'failed' else 'available' end,
                 run_at = coalesce($4, run_at),
                 finished_at = case when $4::timestamptz is null then $5 end,
                 lease_owner = null, lease_expires_at = null,
                 errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'at', $6::text, 'error', $3::text))
             where id = $1 and token = $2 and state = 'running'
             returning ",
            columns!()
        ))
        .bind(fail.id)
        .bind(fail.token)
        .bind(truncate_error(&fail.error))
        .bind(fail.retry_at)
        .bind(fail.now)
        .bind(fail.now.to_rfc3339())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn job_snooze(
        &self,
        snooze: &JobSnooze,
    ) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query::<Postgres>(concat!(
            "update job set state = 'available', run_at = $3, attempt = attempt - 1, lease_owner = null,
                    lease_expires_at = null
             where id = $1 and token = $2 and state = 'running'
             returning ",
            columns!()
        ))
        .bind(snooze.id)
        .bind(snooze.token)
        .bind(snooze.run_at)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn job_rescue(&self, rescue: &JobRescue) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query::<Postgres>(concat!(
            "update job set
                 state = case when attempt >= max_attempts then 'failed' else 'available' end,
                 finished_at = case when attempt >= max_attempts then $2 end,
                 run_at = $2, rescues = rescues + 1,
                 errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'at', $4::text,
                     'error', 'lease of ' || lease_owner || ' expired: its worker stopped answering')),
                 lease_owner = null, lease_expires_at = null
             where id in (
                 select id from job
                 where state = 'running'
                   and (($1::text is null and lease_expires_at < $2) or lease_owner = $1)
                 order by lease_expires_at
                 limit $3
                 for update skip locked)
             returning ",
            columns!()
        ))
        .bind(rescue.owner.as_deref())
        .bind(rescue.now)
        .bind(i64::from(rescue.limit.min(domain::limits::JOB_RESCUE_BATCH_MAX)))
        .bind(rescue.now.to_rfc3339())
        .fetch_all(&self.pool)
        .await?;
        decode_all(&rows)
    }

    /// Operator's retry (failed or cancelled → available, attempts reset) or discard
    /// (available or failed → cancelled). Returns `None` when the job is not in a `from` state.
    pub(crate) async fn job_admin_move(
        &self,
        id: i64,
        from: &[JobState],
        to: JobState,
        now: DateTime<Utc>,
    ) -> Result<Option<JobRow>, StoreError> {
        let from: Vec<&str> = from.iter().map(|state| state.as_str()).collect();
        let row = sqlx::query::<Postgres>(concat!(
            "update job set state = $3,
                 attempt = case when $3 = 'available' then 0 else attempt end,
                 run_at = case when $3 = 'available' then $4 else run_at end,
                 finished_at = case when $3 = 'available' then null else $4 end
             where id = $1 and state = any($2)
             returning ",
            columns!()
        ))
        .bind(id)
        .bind(&from)
        .bind(to.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if to == JobState::Available && row.is_some() {
            sqlx::query("select pg_notify($1, (select queue from job where id = $2))")
                .bind(JOB_CHANNEL)
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn job_get(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        let row =
            sqlx::query::<Postgres>(concat!("select ", columns!(), " from job where id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn job_list(&self, list: &JobList) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query::<Postgres>(concat!(
            "select ",
            columns!(),
            " from job
             where ($1::text is null or queue = $1) and ($2::text is null or state = $2)
               and ($3::int8 is null or id < $3)
             order by id desc limit $4"
        ))
        .bind(list.queue.as_ref().map(Name::as_str))
        .bind(list.state.map(JobState::as_str))
        .bind(list.before_id)
        .bind(i64::from(list.limit.min(domain::limits::LIST_LIMIT_MAX)))
        .fetch_all(&self.pool)
        .await?;
        decode_all(&rows)
    }

    pub(crate) async fn job_prune(&self, prune: &JobPrune) -> Result<u64, StoreError> {
        let result = sqlx::query::<Postgres>(
            "delete from job where state in ('completed', 'failed', 'cancelled') and id in (
                 select id from (
                     select id, state, finished_at,
                            row_number() over (partition by queue, state order by id desc) as rank
                     from job where state in ('completed', 'failed', 'cancelled')) ranked
                 where (state = 'completed' and rank > $1)
                    or (state in ('failed', 'cancelled') and rank > $2)
                    or finished_at < $3)",
        )
        .bind(i64::from(prune.keep_completed))
        .bind(i64::from(prune.keep_failed))
        .bind(prune.finished_before)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    pub(crate) async fn queue_stats(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueStats>, StoreError> {
        let rows = sqlx::query::<Postgres>(
            "select q.name, q.paused, q.concurrency_limit,
                    count(j.id) filter (where j.state = 'available' and j.run_at <= $1) as available,
                    count(j.id) filter (where j.state = 'available' and j.run_at > $1) as scheduled,
                    count(j.id) filter (where j.state = 'running') as running,
                    count(j.id) filter (where j.state = 'completed') as completed,
                    count(j.id) filter (where j.state = 'failed') as failed,
                    count(j.id) filter (where j.state = 'cancelled') as cancelled,
                    min(j.run_at) filter (where j.state = 'available' and j.run_at <= $1) as oldest_available_at
             from queue q left join job j on j.queue = q.name
             group by q.name, q.paused, q.concurrency_limit
             order by q.name",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueueStats {
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
                    oldest_available_at: row.try_get("oldest_available_at")?,
                })
            })
            .collect()
    }

    /// Pauses or resumes a queue, or sets its concurrency limit (`Some(None)` removes it).
    /// Returns false when there is no such queue.
    pub(crate) async fn queue_update(
        &self,
        name: &Name,
        paused: Option<bool>,
        concurrency_limit: Option<Option<i32>>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query::<Postgres>(
            "update queue set paused = coalesce($2, paused),
                    concurrency_limit = case when $3 then $4 else concurrency_limit end,
                    updated_at = $5
             where name = $1",
        )
        .bind(name.as_str())
        .bind(paused)
        .bind(concurrency_limit.is_some())
        .bind(concurrency_limit.flatten())
        .bind(now)
        .execute(&self.pool)
        .await?;
        if paused == Some(false) && result.rows_affected() > 0 {
            sqlx::query("select pg_notify($1, $2)")
                .bind(JOB_CHANNEL)
                .bind(name.as_str())
                .execute(&self.pool)
                .await?;
        }
        Ok(result.rows_affected() > 0)
    }
}

impl PgStore {
    pub(crate) async fn queue_set_retry(
        &self,
        name: &Name,
        retry: Option<RetryPolicy>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query::<Postgres>(
            "update queue set max_attempts = $2, backoff_base_ms = $3, backoff_max_ms = $4, updated_at = $5 where name = $1",
        )
        .bind(name.as_str())
        .bind(retry.map(|retry| i32::try_from(retry.max_attempts).unwrap_or(i32::MAX)))
        .bind(retry.map(|retry| millis(retry.backoff_base)))
        .bind(retry.map(|retry| millis(retry.backoff_max)))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    pub(crate) async fn leader_acquire(&self, acquire: &LeaderAcquire) -> Result<bool, StoreError> {
        let holder: Option<String> = sqlx::query_scalar::<Postgres, String>(
            "insert into leader (name, holder, expires_at) values ($1, $2, $3)
             on conflict (name) do update set holder = excluded.holder, expires_at = excluded.expires_at
             where leader.holder = excluded.holder or leader.expires_at < $4
             returning holder",
        )
        .bind(&acquire.name)
        .bind(&acquire.holder)
        .bind(acquire.until)
        .bind(acquire.now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(holder.is_some())
    }
}

fn sorted(mut rows: Vec<JobRow>) -> Result<Vec<JobRow>, StoreError> {
    rows.sort_by_key(|row| (row.priority, row.run_at, row.id));
    Ok(rows)
}
