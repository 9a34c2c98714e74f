//! The part of the `job` and `queue` tables that stays Postgres' own (the rest is
//! `crate::jobs`, one SQL text for both dialects). What stays here differs for real:
//! inserts announce their queue on `coinsensei_job` in the same statement (so a wake-up is
//! sent exactly when the job commits) and take a batch as arrays (`unnest`); claims and
//! rescues pick rows with `for update skip locked`, so many workers claim in parallel; a
//! batch of lease extensions or completions is one statement over arrays.

use chrono::{DateTime, Utc};
use domain::RetryPolicy;
use sqlx::{PgConnection, Postgres};

use super::{JOB_CHANNEL, PgStore, dialect as d};
use crate::jobs::{job_columns, millis};
use crate::{
    JobClaim, JobFinish, JobInsert, JobInserted, JobLeaseExtend, JobRescue, JobRow, StoreError,
};

/// Inserts one job on `connection` (the pool, or the caller's transaction). Split from
/// SQLite's because the queue row, the job and its NOTIFY are one statement, and without a
/// table lock a deduplicated key's holder may finish meanwhile, so it is retried.
pub(crate) async fn insert_on(
    connection: &mut PgConnection,
    insert: &JobInsert,
) -> Result<JobInserted, StoreError> {
    crate::jobs::validate_job_insert(insert)?;
    let retry = d::jobs::resolve_retry(connection, insert).await?;
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

    /// Many jobs in one statement over arrays (`unnest`, which SQLite cannot bind). Ids are
    /// taken from the sequence first, so each input row knows its id whether it was inserted
    /// or deduplicated.
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
                    let policy = d::jobs::resolve_retry(&mut transaction, insert).await?;
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

    /// Split from SQLite's for its locking: rows are picked `for update skip locked`, so
    /// workers claim in parallel, and a limited queue is counted under its row lock.
    pub(crate) async fn job_claim(&self, claim: &JobClaim) -> Result<Vec<JobRow>, StoreError> {
        let limit = i64::from(claim.limit.min(domain::limits::JOB_CLAIM_BATCH_MAX));
        // Fast path, one statement: queues without a pause or a concurrency limit. The share
        // lock on the queue row makes a concurrent pause or limit wait for claims in flight,
        // and claims after it see the new settings.
        let rows = sqlx::query::<Postgres>(concat!(
            "update job set state = 'running', attempt = attempt + 1, token = token + 1, lease_owner = $2,
                    last_worker = $2,
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
            job_columns!()
        ))
        .bind(claim.queue.as_str())
        .bind(&claim.owner)
        .bind(claim.lease_until)
        .bind(claim.now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        if !rows.is_empty() {
            return sorted(d::jobs::decode_all(&rows)?);
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
                    last_worker = $2,
                    lease_expires_at = $3, started_at = $4
             where id in (
                 select id from job where queue = $1 and state = 'available' and run_at <= $4
                 order by priority, run_at, id limit $5 for update skip locked)
             returning ",
            job_columns!()
        ))
        .bind(claim.queue.as_str())
        .bind(&claim.owner)
        .bind(claim.lease_until)
        .bind(claim.now)
        .bind(room)
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;
        sorted(d::jobs::decode_all(&rows)?)
    }

    /// One statement over arrays (`unnest`), which SQLite cannot bind.
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

    /// Completes many jobs in one statement over arrays (`unnest`, which SQLite cannot bind);
    /// returns the ids that were still held.
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

    /// Split from SQLite's for its locking: `for update skip locked` keeps two rescuers off
    /// the same jobs without waiting on each other.
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
            job_columns!()
        ))
        .bind(rescue.owner.as_deref())
        .bind(rescue.now)
        .bind(i64::from(rescue.limit.min(domain::limits::JOB_RESCUE_BATCH_MAX)))
        .bind(rescue.now.to_rfc3339())
        .fetch_all(&self.pool)
        .await?;
        d::jobs::decode_all(&rows)
    }
}

fn sorted(mut rows: Vec<JobRow>) -> Result<Vec<JobRow>, StoreError> {
    rows.sort_by_key(|row| (row.priority, row.run_at, row.id));
    Ok(rows)
}
