//! The part of the `job` and `queue` tables that stays SQLite's own (the rest is
//! `crate::jobs`, one SQL text for both dialects). SQLite has no row locks, no arrays and no
//! NOTIFY: every write runs under `begin immediate`, so a claim is serialised with every
//! other writer (no `skip locked`), a batch is a loop inside one transaction, and a commit
//! that makes jobs available rings the in-process signal instead of notifying.

use sqlx::{Sqlite, SqliteConnection};

use super::{SqliteStore, dialect as d};
use crate::jobs::{job_columns, millis};
use crate::{
    JobClaim, JobFinish, JobInsert, JobInserted, JobLeaseExtend, JobRescue, JobRow, StoreError,
};

/// Inserts one job on `connection`, which must be inside a write transaction. Split from
/// Postgres' because the queue row and the job are two statements here, and under the write
/// lock a deduplicated key's holder cannot change, so no retry loop is needed.
pub(crate) async fn insert_on(
    connection: &mut SqliteConnection,
    insert: &JobInsert,
) -> Result<JobInserted, StoreError> {
    crate::jobs::validate_job_insert(insert)?;
    let retry = d::jobs::resolve_retry(connection, insert).await?;
    sqlx::query::<Sqlite>(
        "insert into queue (name, updated_at) values ($1, $2) on conflict (name) do nothing",
    )
    .bind(insert.queue.as_str())
    .bind(d::time(insert.now))
    .execute(&mut *connection)
    .await?;
    let inserted: Option<i64> = sqlx::query_scalar::<Sqlite, i64>(
        "insert into job (queue, kind, args, state, priority, max_attempts, backoff_base_ms, backoff_max_ms,
                          unique_key, run_at, created_at)
         values ($1, $2, $3, 'available', $4, $5, $6, $7, $8, $9, $10)
         on conflict (queue, unique_key) where unique_key is not null and state in ('available', 'running')
         do nothing
         returning id",
    )
    .bind(insert.queue.as_str())
    .bind(insert.kind.as_str())
    .bind(d::json(&insert.args))
    .bind(insert.priority)
    .bind(i64::from(retry.max_attempts))
    .bind(millis(retry.backoff_base))
    .bind(millis(retry.backoff_max))
    .bind(insert.unique_key.as_deref())
    .bind(d::time(insert.run_at))
    .bind(d::time(insert.now))
    .fetch_optional(&mut *connection)
    .await?;
    if let Some(id) = inserted {
        return Ok(JobInserted { id, inserted: true });
    }
    // The write lock is held: the job holding the key cannot change under us.
    let id: i64 = sqlx::query_scalar::<Sqlite, i64>(
        "select id from job where queue = $1 and unique_key = $2 and state in ('available', 'running')",
    )
    .bind(insert.queue.as_str())
    .bind(insert.unique_key.as_deref())
    .fetch_one(&mut *connection)
    .await?;
    Ok(JobInserted {
        id,
        inserted: false,
    })
}

const CLAIM: &str = concat!(
    "update job set state = 'running', attempt = attempt + 1, token = token + 1, lease_owner = $2,
                    last_worker = $2,
            lease_expires_at = $3, started_at = $4
     where id in (
         select id from job where queue = $1 and state = 'available' and run_at <= $4
         order by priority, run_at, id limit $5)
     returning ",
    job_columns!()
);

impl SqliteStore {
    /// Wakes this process's change feeds after a commit that made jobs available (other
    /// processes see `data_version` move).
    pub(crate) fn ring(&self) {
        self.job_signal
            .send_modify(|rings| *rings = rings.wrapping_add(1));
    }

    pub(crate) async fn job_insert(&self, insert: &JobInsert) -> Result<JobInserted, StoreError> {
        let mut transaction = self.begin_write().await?;
        let inserted = insert_on(&mut transaction, insert).await?;
        transaction.commit().await?;
        self.ring();
        Ok(inserted)
    }

    /// A loop of single inserts in one transaction: SQLite binds no arrays.
    pub(crate) async fn job_insert_many(
        &self,
        inserts: &[JobInsert],
    ) -> Result<Vec<JobInserted>, StoreError> {
        crate::jobs::validate_job_batch(inserts)?;
        let mut transaction = self.begin_write().await?;
        let mut out = Vec::with_capacity(inserts.len());
        for insert in inserts {
            out.push(insert_on(&mut transaction, insert).await?);
        }
        transaction.commit().await?;
        self.ring();
        Ok(out)
    }

    /// Split from Postgres' because SQLite has no `for update skip locked`: `begin immediate`
    /// serialises claims with every other writer, so one path serves paused, limited and
    /// open queues.
    pub(crate) async fn job_claim(&self, claim: &JobClaim) -> Result<Vec<JobRow>, StoreError> {
        let limit = i64::from(claim.limit.min(domain::limits::JOB_CLAIM_BATCH_MAX));
        let mut transaction = self.begin_write().await?;
        let settings: Option<(i64, Option<i64>)> =
            sqlx::query_as("select paused, concurrency_limit from queue where name = $1")
                .bind(claim.queue.as_str())
                .fetch_optional(&mut *transaction)
                .await?;
        let room = match settings {
            None | Some((1, _)) => 0,
            Some((_, None)) => limit,
            Some((_, Some(concurrency_limit))) => {
                let running: i64 = sqlx::query_scalar(
                    "select count(*) from job where queue = $1 and state = 'running'",
                )
                .bind(claim.queue.as_str())
                .fetch_one(&mut *transaction)
                .await?;
                (concurrency_limit - running).clamp(0, limit)
            }
        };
        if room == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query::<Sqlite>(CLAIM)
            .bind(claim.queue.as_str())
            .bind(&claim.owner)
            .bind(d::time(claim.lease_until))
            .bind(d::time(claim.now))
            .bind(room)
            .fetch_all(&mut *transaction)
            .await?;
        transaction.commit().await?;
        let mut jobs = d::jobs::decode_all(&rows)?;
        jobs.sort_by_key(|job| (job.priority, job.run_at, job.id));
        Ok(jobs)
    }

    /// One update per lease in one transaction: SQLite binds no arrays.
    pub(crate) async fn job_lease_extend(
        &self,
        extend: &JobLeaseExtend,
    ) -> Result<u64, StoreError> {
        let mut transaction = self.begin_write().await?;
        let mut extended = 0;
        for (id, token) in &extend.jobs {
            let result = sqlx::query::<Sqlite>(
                "update job set lease_expires_at = $2
                 where id = $3 and token = $4 and state = 'running' and lease_owner = $1 and lease_expires_at < $2",
            )
            .bind(&extend.owner)
            .bind(d::time(extend.lease_until))
            .bind(id)
            .bind(token)
            .execute(&mut *transaction)
            .await?;
            extended += result.rows_affected();
        }
        transaction.commit().await?;
        Ok(extended)
    }

    /// One update per job in one transaction: SQLite binds no arrays.
    pub(crate) async fn job_complete_many(
        &self,
        finishes: &[JobFinish],
    ) -> Result<Vec<i64>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let mut done = Vec::with_capacity(finishes.len());
        for finish in finishes {
            let id: Option<i64> = sqlx::query_scalar::<Sqlite, i64>(
                "update job set state = 'completed', finished_at = $3, lease_owner = null, lease_expires_at = null
                 where id = $1 and token = $2 and state = 'running' returning id",
            )
            .bind(finish.id)
            .bind(finish.token)
            .bind(d::time(finish.now))
            .fetch_optional(&mut *transaction)
            .await?;
            done.extend(id);
        }
        transaction.commit().await?;
        Ok(done)
    }

    /// Split from Postgres' for its locking: no `for update skip locked` here, the write lock
    /// keeps a second rescuer out.
    pub(crate) async fn job_rescue(&self, rescue: &JobRescue) -> Result<Vec<JobRow>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let rows = sqlx::query::<Sqlite>(concat!(
            "update job set
                 state = case when attempt >= max_attempts then 'failed' else 'available' end,
                 finished_at = case when attempt >= max_attempts then $2 end,
                 run_at = $2, rescues = rescues + 1,
                 errors = json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', $4,
                     'error', 'lease of ' || lease_owner || ' expired: its worker stopped answering')),
                 lease_owner = null, lease_expires_at = null
             where id in (
                 select id from job
                 where state = 'running' and (($1 is null and lease_expires_at < $2) or lease_owner = $1)
                 order by lease_expires_at limit $3)
             returning ",
            job_columns!()
        ))
        .bind(rescue.owner.as_deref())
        .bind(d::time(rescue.now))
        .bind(i64::from(rescue.limit.min(domain::limits::JOB_RESCUE_BATCH_MAX)))
        .bind(rescue.now.to_rfc3339())
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;
        if !rows.is_empty() {
            self.ring();
        }
        d::jobs::decode_all(&rows)
    }
}
