//! The part of the `worker` table that stays Postgres' own (the rest is `crate::workers`):
//! picking stale workers with `for update skip locked`, and announcing changes with NOTIFY.

use domain::WorkerId;
use sqlx::{PgConnection, Row};

use super::WORKER_CHANNEL;
use crate::workers::{COLUMNS, decode_worker};
use crate::{StoreError, WorkerReap, WorkerRow, corrupt};

/// Marks up to `reap.limit` workers with stale heartbeats `lost` in one statement; returns
/// each with the status it had. Rows another reaper holds are skipped, so two control planes
/// never mark the same worker twice (SQLite's write lock gives the same without row locks).
pub(crate) async fn reap_stale(
    connection: &mut PgConnection,
    reap: &WorkerReap,
) -> Result<Vec<(WorkerRow, String)>, StoreError> {
    let sql = format!(
        "with stale as (
            select id as stale_id, status as status_before from worker
            where status in ('starting', 'running', 'stopped', 'error') and last_heartbeat < $1
            order by last_heartbeat
            limit $2
            for update skip locked
         )
         update worker set status = 'lost', in_flight = 0, updated_at = $3
         from stale where worker.id = stale.stale_id
         returning stale.status_before, {COLUMNS}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(reap.heartbeat_before)
        .bind(i64::from(reap.limit))
        .bind(reap.now)
        .fetch_all(connection)
        .await?;
    let mut reaped = Vec::with_capacity(rows.len());
    for row in &rows {
        use super::dialect as d;
        reaped.push((decode_worker!(row, d), row.try_get("status_before")?));
    }
    Ok(reaped)
}

/// Announces a change of worker `id` to every change feed (they re-read the row).
pub(crate) async fn notify(connection: &mut PgConnection, id: &WorkerId) -> Result<(), StoreError> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(WORKER_CHANNEL)
        .bind(id.as_str())
        .execute(connection)
        .await?;
    Ok(())
}
