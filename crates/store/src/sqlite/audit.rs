//! The `audit_log` table on SQLite.

use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Row, Sqlite};

use super::{SqliteStore, from_millis, to_millis};
use crate::{AuditInsert, AuditList, AuditRow, StoreError, corrupt};

pub(crate) fn decode(row: &SqliteRow) -> Result<AuditRow, StoreError> {
    let details: String = row.try_get("details")?;
    Ok(AuditRow {
        id: row.try_get("id")?,
        at: from_millis(row.try_get("at")?)?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        details: serde_json::from_str(&details)
            .map_err(|error| corrupt("audit_log.details", error))?,
    })
}

/// Inserts an entry on the caller's connection, so it commits with the change it records.
pub(crate) async fn insert_on(
    connection: &mut SqliteConnection,
    insert: &AuditInsert,
) -> Result<AuditRow, StoreError> {
    let row = sqlx::query::<Sqlite>(
        "insert into audit_log (at, actor, action, target, details) values (?1, ?2, ?3, ?4, ?5)
         returning id, at, actor, action, target, details",
    )
    .bind(to_millis(insert.now))
    .bind(&insert.actor)
    .bind(&insert.action)
    .bind(&insert.target)
    .bind(insert.details.to_string())
    .fetch_one(connection)
    .await?;
    decode(&row)
}

impl SqliteStore {
    pub(crate) async fn audit_insert(&self, insert: &AuditInsert) -> Result<AuditRow, StoreError> {
        let mut transaction = self.begin_write().await?;
        let row = insert_on(&mut transaction, insert).await?;
        transaction.commit().await?;
        Ok(row)
    }

    pub(crate) async fn audit_list(&self, list: &AuditList) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query::<Sqlite>(
            "select id, at, actor, action, target, details from audit_log
             where (?1 is null or actor = ?1)
               and (?2 is null or action = ?2)
               and (?3 is null or target = ?3)
               and (?4 is null or id < ?4)
             order by id desc
             limit ?5",
        )
        .bind(&list.actor)
        .bind(&list.action)
        .bind(&list.target)
        .bind(list.before_id)
        .bind(i64::from(list.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }
}
