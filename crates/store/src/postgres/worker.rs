//! The `worker` table on Postgres: the registry, heartbeats, status and control.

use domain::{ControlDecision, WorkerId};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row};

use super::{PgStore, WORKER_CHANNEL};
use crate::{
    AuditInsert, StoreError, WorkerControl, WorkerHeartbeat, WorkerList, WorkerReap,
    WorkerRegister, WorkerRow, WorkerStatusSet, control_details, corrupt, truncate_error,
};

macro_rules! columns {
    () => {
        "id, name, type, blockchain, status, desired_state, pid, host, port, version, config, incarnation, \
         generation, applied_generation, last_heartbeat, last_error, started_at, rss_bytes, in_flight, \
         processed_total, failed_total, created_at, updated_at"
    };
}

fn decode(row: &PgRow) -> Result<WorkerRow, StoreError> {
    let text =
        |column: &str| -> Result<String, StoreError> { Ok(row.try_get::<String, _>(column)?) };
    Ok(WorkerRow {
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
        config: row.try_get("config")?,
        incarnation: row.try_get("incarnation")?,
        generation: row.try_get("generation")?,
        applied_generation: row.try_get("applied_generation")?,
        last_heartbeat: row.try_get("last_heartbeat")?,
        last_error: row.try_get("last_error")?,
        started_at: row.try_get("started_at")?,
        rss_bytes: row.try_get("rss_bytes")?,
        in_flight: i64::from(row.try_get::<i32, _>("in_flight")?),
        processed_total: row.try_get("processed_total")?,
        failed_total: row.try_get("failed_total")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl PgStore {
    pub(crate) async fn worker_register(
        &self,
        register: &WorkerRegister,
    ) -> Result<WorkerRow, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let row = sqlx::query::<Postgres>(concat!(
            "insert into worker as w (id, name, type, blockchain, status, pid, host, port, version, config,
                incarnation, last_heartbeat, started_at, created_at, updated_at)
             values ($1, $2, $3, $4, 'starting', $5, $6, $7, $8, $9, $10, $11, $11, $11, $11)
             on conflict (id) do update set
                name = excluded.name, status = 'starting', pid = excluded.pid, host = excluded.host,
                port = excluded.port, version = excluded.version, config = excluded.config,
                incarnation = excluded.incarnation, applied_generation = w.generation,
                last_heartbeat = excluded.last_heartbeat, started_at = excluded.started_at,
                rss_bytes = null, in_flight = 0, processed_total = 0, failed_total = 0,
                updated_at = excluded.updated_at
             where w.type = excluded.type and w.blockchain = excluded.blockchain
             returning ",
            columns!()
        ))
        .bind(register.id.as_str())
        .bind(&register.name)
        .bind(register.kind.as_str())
        .bind(register.chain.as_str())
        .bind(register.pid)
        .bind(&register.host)
        .bind(register.port)
        .bind(&register.version)
        .bind(&register.config)
        .bind(&register.incarnation)
        .bind(register.now)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else {
            let existing = self.worker_get(&register.id).await?;
            return Err(StoreError::Conflict(match existing {
                Some(existing) => format!(
                    "worker id {} is registered as a {} {} worker; pick another id",
                    register.id, existing.chain, existing.kind
                ),
                None => format!(
                    "worker id {} changed while registering; try again",
                    register.id
                ),
            }));
        };
        notify(&mut transaction, &register.id).await?;
        transaction.commit().await?;
        decode(&row)
    }

    pub(crate) async fn worker_heartbeat(
        &self,
        heartbeat: &WorkerHeartbeat,
    ) -> Result<WorkerRow, StoreError> {
        let row = sqlx::query::<Postgres>(concat!(
            "update worker set last_heartbeat = $3, rss_bytes = $4, in_flight = $5, processed_total = $6,
                failed_total = $7, updated_at = $3
             where id = $1 and incarnation = $2
             returning ",
            columns!()
        ))
        .bind(heartbeat.id.as_str())
        .bind(&heartbeat.incarnation)
        .bind(heartbeat.now)
        .bind(heartbeat.rss_bytes)
        .bind(i32::try_from(heartbeat.in_flight).unwrap_or(i32::MAX))
        .bind(heartbeat.processed_total)
        .bind(heartbeat.failed_total)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => decode(&row),
            None if self.worker_get(&heartbeat.id).await?.is_some() => {
                Err(StoreError::Superseded(heartbeat.id.to_string()))
            }
            None => Err(StoreError::NotFound {
                what: "worker",
                id: heartbeat.id.to_string(),
            }),
        }
    }

    pub(crate) async fn worker_status_set(
        &self,
        status_set: &WorkerStatusSet,
    ) -> Result<Option<WorkerRow>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let row = sqlx::query::<Postgres>(concat!(
            "update worker set status = $4, last_error = coalesce($5, last_error),
                applied_generation = coalesce($6, applied_generation), updated_at = $7
             where id = $1 and incarnation = $2 and status = $3
             returning ",
            columns!()
        ))
        .bind(status_set.id.as_str())
        .bind(&status_set.incarnation)
        .bind(status_set.from.as_str())
        .bind(status_set.to.as_str())
        .bind(status_set.error.as_deref().map(truncate_error))
        .bind(status_set.applied_generation)
        .bind(status_set.now)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else { return Ok(None) };
        notify(&mut transaction, &status_set.id).await?;
        transaction.commit().await?;
        decode(&row).map(Some)
    }

    pub(crate) async fn worker_control(
        &self,
        control: &WorkerControl,
        before: &WorkerRow,
        decision: ControlDecision,
    ) -> Result<Option<WorkerRow>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let row = sqlx::query::<Postgres>(concat!(
            "update worker set desired_state = $2, generation = generation + $3, updated_at = $4
             where id = $1 and desired_state = $5 and status = $6 and generation = $7
             returning ",
            columns!()
        ))
        .bind(control.id.as_str())
        .bind(decision.desired_state.as_str())
        .bind(i64::from(decision.bump_generation))
        .bind(control.now)
        .bind(before.desired_state.as_str())
        .bind(before.status.as_str())
        .bind(before.generation)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let after = decode(&row)?;
        crate::audit::postgres::insert_on(
            &mut transaction,
            &AuditInsert {
                actor: control.actor.clone(),
                action: format!("worker.{}", control.action),
                target: format!("worker:{}", control.id),
                details: control_details(before, after.desired_state, after.generation),
                now: control.now,
            },
        )
        .await?;
        notify(&mut transaction, &control.id).await?;
        transaction.commit().await?;
        Ok(Some(after))
    }

    pub(crate) async fn worker_get(&self, id: &WorkerId) -> Result<Option<WorkerRow>, StoreError> {
        let row =
            sqlx::query::<Postgres>(concat!("select ", columns!(), " from worker where id = $1"))
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn worker_list(
        &self,
        list: &WorkerList,
    ) -> Result<Vec<WorkerRow>, StoreError> {
        let rows = sqlx::query::<Postgres>(concat!(
            "select ",
            columns!(),
            " from worker
             where ($1::text is null or blockchain = $1)
               and ($2::text is null or type = $2)
               and ($3::text is null or status = $3)
             order by id
             limit $4 offset $5"
        ))
        .bind(list.chain.map(|chain| chain.as_str()))
        .bind(list.kind.map(|kind| kind.as_str()))
        .bind(list.status.map(|status| status.as_str()))
        .bind(i64::from(list.limit))
        .bind(i64::from(list.offset))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    pub(crate) async fn worker_reap(
        &self,
        reap: &WorkerReap,
    ) -> Result<Vec<WorkerRow>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        // Skip rows another reaper holds: two control planes never mark the same worker twice.
        let rows = sqlx::query::<Postgres>(concat!(
            "with stale as (
                select id as stale_id, status as status_before from worker
                where status in ('starting', 'running', 'stopped', 'error') and last_heartbeat < $1
                order by last_heartbeat
                limit $2
                for update skip locked
             )
             update worker set status = 'lost', in_flight = 0, updated_at = $3
             from stale where worker.id = stale.stale_id
             returning stale.status_before, ",
            columns!()
        ))
        .bind(reap.heartbeat_before)
        .bind(i64::from(reap.limit))
        .bind(reap.now)
        .fetch_all(&mut *transaction)
        .await?;
        let mut reaped = Vec::with_capacity(rows.len());
        for row in &rows {
            let worker = decode(row)?;
            let status_before: String = row.try_get("status_before")?;
            crate::audit::postgres::insert_on(
                &mut transaction,
                &crate::lost_audit(reap, &worker, &status_before),
            )
            .await?;
            notify(&mut transaction, &worker.id).await?;
            reaped.push(worker);
        }
        transaction.commit().await?;
        Ok(reaped)
    }
}

async fn notify(connection: &mut sqlx::PgConnection, id: &WorkerId) -> Result<(), StoreError> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(WORKER_CHANNEL)
        .bind(id.as_str())
        .execute(connection)
        .await?;
    Ok(())
}
