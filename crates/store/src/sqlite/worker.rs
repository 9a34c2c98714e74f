//! The part of the `worker` table that stays SQLite's own (the rest is `crate::workers`):
//! picking stale workers without row locks, and (not) announcing changes.

use domain::WorkerId;
use sqlx::{Row, SqliteConnection};

use crate::workers::{COLUMNS, decode_worker};
use crate::{StoreError, WorkerReap, WorkerRow, corrupt};

/// Marks up to `reap.limit` workers with stale heartbeats `lost`; returns each with the status
/// it had. SQLite has no `for update skip locked`: the caller's `begin immediate` holds the
/// write lock, so no other reaper sees the same rows, and each row is updated by its own
/// compare-and-set (`update ... from` with a CTE is Postgres' form).
pub(crate) async fn reap_stale(
    connection: &mut SqliteConnection,
    reap: &WorkerReap,
) -> Result<Vec<(WorkerRow, String)>, StoreError> {
    use super::dialect as d;
    let stale = sqlx::query(
        "select id, status from worker
         where status in ('starting', 'running', 'stopped', 'error') and last_heartbeat < $1
         order by last_heartbeat
         limit $2",
    )
    .bind(d::time(reap.heartbeat_before))
    .bind(i64::from(reap.limit))
    .fetch_all(&mut *connection)
    .await?;
    let sql = format!(
        "update worker set status = 'lost', in_flight = 0, updated_at = $3
         where id = $1 and status = $2
         returning {COLUMNS}"
    );
    let mut reaped = Vec::with_capacity(stale.len());
    for stale_row in &stale {
        let id: String = stale_row.try_get("id")?;
        let status_before: String = stale_row.try_get("status")?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(&id)
            .bind(&status_before)
            .bind(d::time(reap.now))
            .fetch_one(&mut *connection)
            .await?;
        reaped.push((decode_worker!(&row, d), status_before));
    }
    Ok(reaped)
}

/// SQLite has no notifications: change feeds poll `pragma data_version`, which moves with
/// every commit, so there is nothing to announce.
pub(crate) async fn notify(
    _connection: &mut SqliteConnection,
    _id: &WorkerId,
) -> Result<(), StoreError> {
    Ok(())
}
