//! The `job` and `queue` tables on SQLite. Every write runs under `begin immediate`, so a claim
//! is serialised with every other writer; changes to a running job check its fencing token.
//! Commits that make jobs available ring the in-process signal.

use chrono::{DateTime, Utc};
use domain::{JobState, Name, RetryPolicy};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqliteConnection};

use super::{SqliteStore, from_millis, to_millis};
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

fn decode(row: &SqliteRow) -> Result<JobRow, StoreError> {
    let name = |column: &str| -> Result<Name, StoreError> {
        Name::new(row.try_get::<String, _>(column)?).map_err(|error| corrupt("job name", error))
    };
    let json = |column: &str| -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(&row.try_get::<String, _>(column)?)
            .map_err(|error| corrupt("job json", error))
    };
    let time = |column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.try_get::<Option<i64>, _>(column)?
            .map(from_millis)
            .transpose()
    };
    Ok(JobRow {
        id: row.try_get("id")?,
        queue: name("queue")?,
        kind: name("kind")?,
        args: json("args")?,
        state: row
            .try_get::<String, _>("state")?
            .parse()
            .map_err(|error| corrupt("job.state", error))?,
        priority: i16::try_from(row.try_get::<i64, _>("priority")?)
            .map_err(|error| corrupt("job.priority", error))?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        backoff_base_ms: row.try_get("backoff_base_ms")?,
        backoff_max_ms: row.try_get("backoff_max_ms")?,
        unique_key: row.try_get("unique_key")?,
        run_at: from_millis(row.try_get("run_at")?)?,
        token: row.try_get("token")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: time("lease_expires_at")?,
        errors: json("errors")?,
        rescues: row.try_get("rescues")?,
        created_at: from_millis(row.try_get("created_at")?)?,
        started_at: time("started_at")?,
        finished_at: time("finished_at")?,
    })
}

fn decode_all(rows: &[SqliteRow]) -> Result<Vec<JobRow>, StoreError> {
    rows.iter().map(decode).collect()
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The retry policy a job gets: its own, else its queue's, else the defaults.
async fn resolve_retry(
    connection: &mut SqliteConnection,
    insert: &JobInsert,
) -> Result<RetryPolicy, StoreError> {
    if let Some(retry) = insert.retry {
        return Ok(retry);
    }
    let row: Option<(Option<i64>, Option<i64>, Option<i64>)> = sqlx::query_as(
        "select max_attempts, backoff_base_ms, backoff_max_ms from queue where name = ?1",
    )
    .bind(insert.queue.as_str())
    .fetch_optional(&mut *connection)
    .await?;
    Ok(crate::jobs::queue_policy(row))
}

/// Inserts one job on `connection`, which must be inside a write transaction.
pub(crate) async fn insert_on(
    connection: &mut SqliteConnection,
    insert: &JobInsert,
) -> Result<JobInserted, StoreError> {
    crate::jobs::validate_job_insert(insert)?;
    let retry = resolve_retry(connection, insert).await?;
    sqlx::query::<Sqlite>(
        "insert into queue (name, updated_at) values (?1, ?2) on conflict (name) do nothing",
    )
    .bind(insert.queue.as_str())
    .bind(to_millis(insert.now))
    .execute(&mut *connection)
    .await?;
    let inserted: Option<i64> = sqlx::query_scalar::<Sqlite, i64>(
        "insert into job (queue, kind, args, state, priority, max_attempts, backoff_base_ms, backoff_max_ms,
                          unique_key, run_at, created_at)
         values (?1, ?2, ?3, 'available', ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         on conflict (queue, unique_key) where unique_key is not null and state in ('available', 'running')
         do nothing
         returning id",
    )
    .bind(insert.queue.as_str())
    .bind(insert.kind.as_str())
    .bind(insert.args.to_string())
    .bind(insert.priority)
        .bind(i64::from(retry.max_attempts))
    .bind(millis(retry.backoff_base))
    .bind(millis(retry.backoff_max))
    .bind(insert.unique_key.as_deref())
    .bind(to_millis(insert.run_at))
    .bind(to_millis(insert.now))
    .fetch_optional(&mut *connection)
    .await?;
    if let Some(id) = inserted {
        return Ok(JobInserted { id, inserted: true });
    }
    // The write lock is held: the job holding the key cannot change under us.
    let id: i64 = sqlx::query_scalar::<Sqlite, i64>(
        "select id from job where queue = ?1 and unique_key = ?2 and state in ('available', 'running')",
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
    "update job set state = 'running', attempt = attempt + 1, token = token + 1, lease_owner = ?2,
            lease_expires_at = ?3, started_at = ?4
     where id in (
         select id from job where queue = ?1 and state = 'available' and run_at <= ?4
         order by priority, run_at, id limit ?5)
     returning ",
    columns!()
);

impl SqliteStore {
    fn ring(&self) {
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

    pub(crate) async fn job_claim(&self, claim: &JobClaim) -> Result<Vec<JobRow>, StoreError> {
        let limit = i64::from(claim.limit.min(domain::limits::JOB_CLAIM_BATCH_MAX));
        let mut transaction = self.begin_write().await?;
        let settings: Option<(i64, Option<i64>)> =
            sqlx::query_as("select paused, concurrency_limit from queue where name = ?1")
                .bind(claim.queue.as_str())
                .fetch_optional(&mut *transaction)
                .await?;
        let room = match settings {
            None | Some((1, _)) => 0,
            Some((_, None)) => limit,
            Some((_, Some(concurrency_limit))) => {
                let running: i64 = sqlx::query_scalar(
                    "select count(*) from job where queue = ?1 and state = 'running'",
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
            .bind(to_millis(claim.lease_until))
            .bind(to_millis(claim.now))
            .bind(room)
            .fetch_all(&mut *transaction)
            .await?;
        transaction.commit().await?;
        let mut jobs = decode_all(&rows)?;
        jobs.sort_by_key(|job| (job.priority, job.run_at, job.id));
        Ok(jobs)
    }

    pub(crate) async fn job_lease_extend(
        &self,
        extend: &JobLeaseExtend,
    ) -> Result<u64, StoreError> {
        let mut transaction = self.begin_write().await?;
        let mut extended = 0;
        for (id, token) in &extend.jobs {
            let result = sqlx::query::<Sqlite>(
                "update job set lease_expires_at = ?2
                 where id = ?3 and token = ?4 and state = 'running' and lease_owner = ?1 and lease_expires_at < ?2",
            )
            .bind(&extend.owner)
            .bind(to_millis(extend.lease_until))
            .bind(id)
            .bind(token)
            .execute(&mut *transaction)
            .await?;
            extended += result.rows_affected();
        }
        transaction.commit().await?;
        Ok(extended)
    }

    pub(crate) async fn job_complete_many(
        &self,
        finishes: &[JobFinish],
    ) -> Result<Vec<i64>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let mut done = Vec::with_capacity(finishes.len());
        for finish in finishes {
            let id: Option<i64> = sqlx::query_scalar::<Sqlite, i64>(
                "update job set state = 'completed', finished_at = ?3, lease_owner = null, lease_expires_at = null
                 where id = ?1 and token = ?2 and state = 'running' returning id",
            )
            .bind(finish.id)
            .bind(finish.token)
            .bind(to_millis(finish.now))
            .fetch_optional(&mut *transaction)
            .await?;
            done.extend(id);
        }
        transaction.commit().await?;
        Ok(done)
    }

    pub(crate) async fn job_finish(
        &self,
        finish: &JobFinish,
        to: JobState,
    ) -> Result<Option<JobRow>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let row = sqlx::query::<Sqlite>(concat!(
            "update job set state = ?3, finished_at = ?4, lease_owner = null, lease_expires_at = null
             where id = ?1 and token = ?2 and state = 'running'
             returning ",
            columns!()
        ))
        .bind(finish.id)
        .bind(finish.token)
        .bind(to.as_str())
        .bind(to_millis(finish.now))
        .fetch_optional(&mut *transaction)
        .await?;
        transaction.commit().await?;
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn job_fail(&self, fail: &JobFail) -> Result<Option<JobRow>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let row = sqlx::query::<Sqlite>(concat!(
            "update job set
                 state = case when ?4 is null then 'failed' else 'available' end,
                 run_at = coalesce(?4, run_at),
                 finished_at = case when ?4 is null then ?5 end,
                 lease_owner = null, lease_expires_at = null,
                 errors = json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', ?6, 'error', ?3))
             where id = ?1 and token = ?2 and state = 'running'
             returning ",
            columns!()
        ))
        .bind(fail.id)
        .bind(fail.token)
        .bind(truncate_error(&fail.error))
        .bind(fail.retry_at.map(to_millis))
        .bind(to_millis(fail.now))
        .bind(fail.now.to_rfc3339())
        .fetch_optional(&mut *transaction)
        .await?;
        transaction.commit().await?;
        self.ring();
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn job_snooze(
        &self,
        snooze: &JobSnooze,
    ) -> Result<Option<JobRow>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let row = sqlx::query::<Sqlite>(concat!(
            "update job set state = 'available', run_at = ?3, attempt = attempt - 1, lease_owner = null,
                    lease_expires_at = null
             where id = ?1 and token = ?2 and state = 'running'
             returning ",
            columns!()
        ))
        .bind(snooze.id)
        .bind(snooze.token)
        .bind(to_millis(snooze.run_at))
        .fetch_optional(&mut *transaction)
        .await?;
        transaction.commit().await?;
        self.ring();
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn job_rescue(&self, rescue: &JobRescue) -> Result<Vec<JobRow>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let rows = sqlx::query::<Sqlite>(concat!(
            "update job set
                 state = case when attempt >= max_attempts then 'failed' else 'available' end,
                 finished_at = case when attempt >= max_attempts then ?2 end,
                 run_at = ?2, rescues = rescues + 1,
                 errors = json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', ?4,
                     'error', 'lease of ' || lease_owner || ' expired: its worker stopped answering')),
                 lease_owner = null, lease_expires_at = null
             where id in (
                 select id from job
                 where state = 'running' and ((?1 is null and lease_expires_at < ?2) or lease_owner = ?1)
                 order by lease_expires_at limit ?3)
             returning ",
            columns!()
        ))
        .bind(rescue.owner.as_deref())
        .bind(to_millis(rescue.now))
        .bind(i64::from(rescue.limit.min(domain::limits::JOB_RESCUE_BATCH_MAX)))
        .bind(rescue.now.to_rfc3339())
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;
        if !rows.is_empty() {
            self.ring();
        }
        decode_all(&rows)
    }

    pub(crate) async fn job_admin_move(
        &self,
        id: i64,
        from: &[JobState],
        to: JobState,
        now: DateTime<Utc>,
    ) -> Result<Option<JobRow>, StoreError> {
        let from =
            serde_json::to_string(&from.iter().map(|state| state.as_str()).collect::<Vec<_>>())
                .map_err(|error| StoreError::Invalid(error.to_string()))?;
        let mut transaction = self.begin_write().await?;
        let row = sqlx::query::<Sqlite>(concat!(
            "update job set state = ?3,
                 attempt = case when ?3 = 'available' then 0 else attempt end,
                 run_at = case when ?3 = 'available' then ?4 else run_at end,
                 finished_at = case when ?3 = 'available' then null else ?4 end
             where id = ?1 and state in (select value from json_each(?2))
             returning ",
            columns!()
        ))
        .bind(id)
        .bind(from)
        .bind(to.as_str())
        .bind(to_millis(now))
        .fetch_optional(&mut *transaction)
        .await?;
        transaction.commit().await?;
        if to == JobState::Available && row.is_some() {
            self.ring();
        }
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn job_get(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query::<Sqlite>(concat!("select ", columns!(), " from job where id = ?1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn job_list(&self, list: &JobList) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query::<Sqlite>(concat!(
            "select ",
            columns!(),
            " from job
             where (?1 is null or queue = ?1) and (?2 is null or state = ?2) and (?3 is null or id < ?3)
             order by id desc limit ?4"
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
        let mut transaction = self.begin_write().await?;
        let result = sqlx::query::<Sqlite>(
            "delete from job where id in (
                 select id from (
                     select id, state, finished_at,
                            row_number() over (partition by queue, state order by id desc) as rank
                     from job where state in ('completed', 'failed', 'cancelled')) ranked
                 where (state = 'completed' and rank > ?1)
                    or (state in ('failed', 'cancelled') and rank > ?2)
                    or finished_at < ?3)",
        )
        .bind(i64::from(prune.keep_completed))
        .bind(i64::from(prune.keep_failed))
        .bind(prune.finished_before.map(to_millis))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(result.rows_affected())
    }

    pub(crate) async fn queue_stats(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueStats>, StoreError> {
        let rows = sqlx::query::<Sqlite>(
            "select q.name, q.paused, q.concurrency_limit,
                    count(j.id) filter (where j.state = 'available' and j.run_at <= ?1) as available,
                    count(j.id) filter (where j.state = 'available' and j.run_at > ?1) as scheduled,
                    count(j.id) filter (where j.state = 'running') as running,
                    count(j.id) filter (where j.state = 'completed') as completed,
                    count(j.id) filter (where j.state = 'failed') as failed,
                    count(j.id) filter (where j.state = 'cancelled') as cancelled,
                    min(j.run_at) filter (where j.state = 'available' and j.run_at <= ?1) as oldest_available_at
             from queue q left join job j on j.queue = q.name
             group by q.name, q.paused, q.concurrency_limit
             order by q.name",
        )
        .bind(to_millis(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueueStats {
                    name: Name::new(row.try_get::<String, _>("name")?)
                        .map_err(|error| corrupt("queue.name", error))?,
                    paused: row.try_get::<i64, _>("paused")? == 1,
                    concurrency_limit: row.try_get("concurrency_limit")?,
                    available: row.try_get("available")?,
                    scheduled: row.try_get("scheduled")?,
                    running: row.try_get("running")?,
                    completed: row.try_get("completed")?,
                    failed: row.try_get("failed")?,
                    cancelled: row.try_get("cancelled")?,
                    oldest_available_at: row
                        .try_get::<Option<i64>, _>("oldest_available_at")?
                        .map(from_millis)
                        .transpose()?,
                })
            })
            .collect()
    }

    pub(crate) async fn queue_set_retry(
        &self,
        name: &Name,
        retry: Option<RetryPolicy>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let result = sqlx::query::<Sqlite>(
            "update queue set max_attempts = ?2, backoff_base_ms = ?3, backoff_max_ms = ?4, updated_at = ?5 where name = ?1",
        )
        .bind(name.as_str())
        .bind(retry.map(|retry| i64::from(retry.max_attempts)))
        .bind(retry.map(|retry| millis(retry.backoff_base)))
        .bind(retry.map(|retry| millis(retry.backoff_max)))
        .bind(to_millis(now))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(result.rows_affected() > 0)
    }

    pub(crate) async fn leader_acquire(&self, acquire: &LeaderAcquire) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let holder: Option<String> = sqlx::query_scalar::<Sqlite, String>(
            "insert into leader (name, holder, expires_at) values (?1, ?2, ?3)
             on conflict (name) do update set holder = excluded.holder, expires_at = excluded.expires_at
             where leader.holder = excluded.holder or leader.expires_at < ?4
             returning holder",
        )
        .bind(&acquire.name)
        .bind(&acquire.holder)
        .bind(to_millis(acquire.until))
        .bind(to_millis(acquire.now))
        .fetch_optional(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(holder.is_some())
    }

    pub(crate) async fn queue_update(
        &self,
        name: &Name,
        paused: Option<bool>,
        concurrency_limit: Option<Option<i32>>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let result = sqlx::query::<Sqlite>(
            "update queue set paused = coalesce(?2, paused),
                    concurrency_limit = case when ?3 then ?4 else concurrency_limit end,
                    updated_at = ?5
             where name = ?1",
        )
        .bind(name.as_str())
        .bind(paused.map(i64::from))
        .bind(concurrency_limit.is_some())
        .bind(concurrency_limit.flatten())
        .bind(to_millis(now))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        if paused == Some(false) {
            self.ring();
        }
        Ok(result.rows_affected() > 0)
    }
}
