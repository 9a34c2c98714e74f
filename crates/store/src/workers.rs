//! The `worker` table: the registry, heartbeats, status and operator control.
//!
//! One SQL text serves both dialects (see `dialect.rs`), except where they really differ:
//! announcing a change (`d::notify_worker`: Postgres NOTIFY, nothing on SQLite, whose change
//! feed polls `data_version`) and picking the stale workers to reap (`d::worker_reap_stale`:
//! `for update skip locked` on Postgres, the write lock on SQLite).

use domain::WorkerId;
use domain::limits::{LIST_LIMIT_MAX, REAP_BATCH_MAX};
use sqlx::Row;

use crate::dialect::{in_write_tx, on_pool};
use crate::{
    AuditInsert, Store, StoreError, WorkerControl, WorkerHeartbeat, WorkerList, WorkerReap,
    WorkerRegister, WorkerRow, WorkerStatusSet, control_details, corrupt, truncate_error,
};

/// The columns [`decode_worker!`] reads.
pub(crate) const COLUMNS: &str = "id, name, type, blockchain, status, desired_state, pid, host, \
     port, version, config, incarnation, generation, applied_generation, last_heartbeat, \
     last_error, started_at, rss_bytes, in_flight, processed_total, failed_total, created_at, \
     updated_at";

/// Reads a `worker` row of [`COLUMNS`] in either dialect. `in_flight` is an `integer` (32 bits
/// on Postgres), written clamped to `i32::MAX` by the heartbeat.
macro_rules! decode_worker {
    ($row:expr, $d:ident) => {{
        let row = $row;
        let text =
            |column: &str| -> Result<String, StoreError> { Ok(row.try_get::<String, _>(column)?) };
        WorkerRow {
            id: WorkerId::new(text("id")?).map_err(|error| corrupt("worker.id", error))?,
            name: text("name")?,
            kind: text("type")?
                .parse()
                .map_err(|error| corrupt("worker.type", error))?,
            chain: text("blockchain")?
                .parse()
                .map_err(|error| corrupt("worker.blockchain", error))?,
            status: text("status")?
                .parse()
                .map_err(|error| corrupt("worker.status", error))?,
            desired_state: text("desired_state")?
                .parse()
                .map_err(|error| corrupt("worker.desired_state", error))?,
            pid: row.try_get("pid")?,
            host: row.try_get("host")?,
            port: row.try_get("port")?,
            version: row.try_get("version")?,
            config: $d::read_json(row, "config")?,
            incarnation: row.try_get("incarnation")?,
            generation: row.try_get("generation")?,
            applied_generation: row.try_get("applied_generation")?,
            last_heartbeat: $d::read_time_opt(row, "last_heartbeat")?,
            last_error: row.try_get("last_error")?,
            started_at: $d::read_time_opt(row, "started_at")?,
            rss_bytes: row.try_get("rss_bytes")?,
            in_flight: i64::from(row.try_get::<i32, _>("in_flight")?),
            processed_total: row.try_get("processed_total")?,
            failed_total: row.try_get("failed_total")?,
            created_at: $d::read_time(row, "created_at")?,
            updated_at: $d::read_time(row, "updated_at")?,
        }
    }};
}
pub(crate) use decode_worker;

impl Store {
    pub async fn worker_register(
        &self,
        register: &WorkerRegister,
    ) -> Result<WorkerRow, StoreError> {
        let sql = format!(
            "insert into worker as w (id, name, type, blockchain, status, pid, host, port, version,
                config, incarnation, last_heartbeat, started_at, created_at, updated_at)
             values ($1, $2, $3, $4, 'starting', $5, $6, $7, $8, $9, $10, $11, $11, $11, $11)
             on conflict (id) do update set
                name = excluded.name, status = 'starting', pid = excluded.pid, host = excluded.host,
                port = excluded.port, version = excluded.version, config = excluded.config,
                incarnation = excluded.incarnation, applied_generation = w.generation,
                last_heartbeat = excluded.last_heartbeat, started_at = excluded.started_at,
                rss_bytes = null, in_flight = 0, processed_total = 0, failed_total = 0,
                updated_at = excluded.updated_at
             where w.type = excluded.type and w.blockchain = excluded.blockchain
             returning {COLUMNS}"
        );
        let registered = in_write_tx!(self, |store, conn, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(register.id.as_str())
                .bind(&register.name)
                .bind(register.kind.as_str())
                .bind(register.chain.as_str())
                .bind(register.pid)
                .bind(&register.host)
                .bind(register.port)
                .bind(&register.version)
                .bind(d::json(&register.config))
                .bind(&register.incarnation)
                .bind(d::time(register.now))
                .fetch_optional(&mut *conn)
                .await?;
            match row {
                Some(row) => {
                    let row = decode_worker!(&row, d);
                    d::notify_worker(&mut *conn, &register.id).await?;
                    Some(row)
                }
                None => None,
            }
        });
        if let Some(row) = registered {
            return Ok(row);
        }
        // The id is taken by a worker of another kind or chain. Looked up after the
        // transaction ended, so SQLite's write lock is not held while the pool is asked.
        let existing = self.worker_get(&register.id).await?;
        Err(StoreError::Conflict(match existing {
            Some(existing) => format!(
                "worker id {} is registered as a {} {} worker; pick another id",
                register.id, existing.chain, existing.kind
            ),
            None => format!(
                "worker id {} changed while registering; try again",
                register.id
            ),
        }))
    }

    /// Records a heartbeat and returns the row, so the worker re-reads its desired state.
    pub async fn worker_heartbeat(
        &self,
        heartbeat: &WorkerHeartbeat,
    ) -> Result<WorkerRow, StoreError> {
        let sql = format!(
            "update worker set last_heartbeat = $3, rss_bytes = $4, in_flight = $5,
                processed_total = $6, failed_total = $7, updated_at = $3
             where id = $1 and incarnation = $2
             returning {COLUMNS}"
        );
        // One statement on the pool in both dialects (SQLite has always run it without
        // `begin immediate`: it reads nothing before it writes).
        let row = on_pool!(self, |pool, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(heartbeat.id.as_str())
                .bind(&heartbeat.incarnation)
                .bind(d::time(heartbeat.now))
                .bind(heartbeat.rss_bytes)
                .bind(i32::try_from(heartbeat.in_flight).unwrap_or(i32::MAX))
                .bind(heartbeat.processed_total)
                .bind(heartbeat.failed_total)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => Some(decode_worker!(&row, d)),
                None => None,
            }
        });
        match row {
            Some(row) => Ok(row),
            None if self.worker_get(&heartbeat.id).await?.is_some() => {
                Err(StoreError::Superseded(heartbeat.id.to_string()))
            }
            None => Err(StoreError::NotFound {
                what: "worker",
                id: heartbeat.id.to_string(),
            }),
        }
    }

    /// Moves the worker's status from `from` to `to`, if that is an allowed transition and the
    /// row still has status `from` and the caller's incarnation. With `from == to` it only
    /// records `applied_generation` (a restart whose `starting` report was lost).
    pub async fn worker_status_set(
        &self,
        status_set: &WorkerStatusSet,
    ) -> Result<WorkerRow, StoreError> {
        let records_generation =
            status_set.from == status_set.to && status_set.applied_generation.is_some();
        if !(status_set.from.can_transition(status_set.to) || records_generation) {
            return Err(StoreError::Invalid(format!(
                "worker status cannot move from {} to {}",
                status_set.from, status_set.to
            )));
        }
        let sql = format!(
            "update worker set status = $4, last_error = coalesce($5, last_error),
                applied_generation = coalesce($6, applied_generation), updated_at = $7
             where id = $1 and incarnation = $2 and status = $3
             returning {COLUMNS}"
        );
        let result = in_write_tx!(self, |store, conn, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(status_set.id.as_str())
                .bind(&status_set.incarnation)
                .bind(status_set.from.as_str())
                .bind(status_set.to.as_str())
                .bind(status_set.error.as_deref().map(truncate_error))
                .bind(status_set.applied_generation)
                .bind(d::time(status_set.now))
                .fetch_optional(&mut *conn)
                .await?;
            match row {
                Some(row) => {
                    let row = decode_worker!(&row, d);
                    d::notify_worker(&mut *conn, &status_set.id).await?;
                    Some(row)
                }
                None => None,
            }
        });
        match result {
            Some(row) => Ok(row),
            None => match self.worker_get(&status_set.id).await? {
                None => Err(StoreError::NotFound {
                    what: "worker",
                    id: status_set.id.to_string(),
                }),
                Some(row)
                    if row.incarnation.as_deref() != Some(status_set.incarnation.as_str()) =>
                {
                    Err(StoreError::Superseded(status_set.id.to_string()))
                }
                Some(row) => Err(StoreError::Conflict(format!(
                    "worker {} is {}, not {}",
                    row.id, row.status, status_set.from
                ))),
            },
        }
    }

    /// Applies an operator's start / stop / restart and writes its audit entry, atomically.
    /// The decision is made on a read and written as a compare-and-set; a lost race is
    /// retried a few times on fresh data.
    pub async fn worker_control(&self, control: &WorkerControl) -> Result<WorkerRow, StoreError> {
        const CAS_TRIES: usize = 5;
        let sql = format!(
            "update worker set desired_state = $2, generation = generation + $3, updated_at = $4
             where id = $1 and desired_state = $5 and status = $6 and generation = $7
             returning {COLUMNS}"
        );
        for _ in 0..CAS_TRIES {
            let Some(before) = self.worker_get(&control.id).await? else {
                return Err(StoreError::NotFound {
                    what: "worker",
                    id: control.id.to_string(),
                });
            };
            let restart_pending = before.applied_generation < before.generation;
            let decision =
                control
                    .action
                    .decide(before.desired_state, before.status, restart_pending)?;
            let written = in_write_tx!(self, |store, conn, d| {
                let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(control.id.as_str())
                    .bind(decision.desired_state.as_str())
                    .bind(i64::from(decision.bump_generation))
                    .bind(d::time(control.now))
                    .bind(before.desired_state.as_str())
                    .bind(before.status.as_str())
                    .bind(before.generation)
                    .fetch_optional(&mut *conn)
                    .await?;
                match row {
                    Some(row) => {
                        let after = decode_worker!(&row, d);
                        let audit = AuditInsert {
                            actor: control.actor.clone(),
                            action: format!("worker.{}", control.action),
                            target: format!("worker:{}", control.id),
                            details: control_details(
                                &before,
                                after.desired_state,
                                after.generation,
                            ),
                            now: control.now,
                        };
                        d::audit::insert_on(&mut *conn, &audit).await?;
                        d::notify_worker(&mut *conn, &control.id).await?;
                        Some(after)
                    }
                    None => None,
                }
            });
            if let Some(row) = written {
                return Ok(row);
            }
        }
        Err(StoreError::Conflict(format!(
            "worker {} kept changing; try again",
            control.id
        )))
    }

    pub async fn worker_get(&self, id: &WorkerId) -> Result<Option<WorkerRow>, StoreError> {
        let sql = format!("select {COLUMNS} from worker where id = $1");
        on_pool!(self, |pool, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(row) => Some(decode_worker!(&row, d)),
                None => None,
            })
        })
    }

    /// Lists workers by id, filtered and paged.
    pub async fn worker_list(&self, list: &WorkerList) -> Result<Vec<WorkerRow>, StoreError> {
        let limit = i64::from(list.limit.clamp(1, LIST_LIMIT_MAX));
        let sql = format!(
            "select {COLUMNS} from worker
             where ($1 is null or blockchain = $1)
               and ($2 is null or type = $2)
               and ($3 is null or status = $3)
             order by id
             limit $4 offset $5"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(list.chain.map(|chain| chain.as_str()))
                .bind(list.kind.map(|kind| kind.as_str()))
                .bind(list.status.map(|status| status.as_str()))
                .bind(limit)
                .bind(i64::from(list.offset))
                .fetch_all(pool)
                .await?;
            let mut workers = Vec::with_capacity(rows.len());
            for row in &rows {
                workers.push(decode_worker!(row, d));
            }
            Ok(workers)
        })
    }

    /// Marks workers with stale heartbeats `lost`, each with an audit entry; returns them.
    pub async fn worker_reap(&self, reap: &WorkerReap) -> Result<Vec<WorkerRow>, StoreError> {
        let mut reap = reap.clone();
        reap.limit = reap.limit.clamp(1, REAP_BATCH_MAX);
        Ok(in_write_tx!(self, |store, conn, d| {
            // Which rows and how they are kept from a second reaper differ by dialect.
            let reaped = d::worker_reap_stale(&mut *conn, &reap).await?;
            let mut workers = Vec::with_capacity(reaped.len());
            for (worker, status_before) in reaped {
                let audit = crate::lost_audit(&reap, &worker, &status_before);
                d::audit::insert_on(&mut *conn, &audit).await?;
                d::notify_worker(&mut *conn, &worker.id).await?;
                workers.push(worker);
            }
            workers
        }))
    }
}
