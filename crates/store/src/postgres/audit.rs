//! The `audit_log` table on Postgres.

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Postgres, Row};

use super::PgStore;
use crate::{AuditInsert, AuditList, AuditRow, StoreError};

pub(crate) fn decode(row: &PgRow) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        details: row.try_get("details")?,
    })
}

/// Inserts an entry on the caller's connection, so it commits with the change it records.
pub(crate) async fn insert_on(
    connection: &mut PgConnection,
    insert: &AuditInsert,
) -> Result<AuditRow, StoreError> {
    let row = sqlx::query::<Postgres>(
        "insert into audit_log (at, actor, action, target, details) values ($1, $2, $3, $4, $5)
         returning id, at, actor, action, target, details",
    )
    .bind(insert.now)
    .bind(&insert.actor)
    .bind(&insert.action)
    .bind(&insert.target)
    .bind(&insert.details)
    .fetch_one(connection)
    .await?;
    decode(&row)
}

impl PgStore {
    pub(crate) async fn audit_insert(&self, insert: &AuditInsert) -> Result<AuditRow, StoreError> {
        let mut connection = self.pool.acquire().await?;
        insert_on(&mut connection, insert).await
    }

    pub(crate) async fn audit_list(&self, list: &AuditList) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "select id, at, actor, action, target, details from audit_log
             where ($1::text is null or actor = $1)
               and ($2::text is null or action = $2)
               and ($3::text is null or target = $3)
               and ($4::bigint is null or id < $4)
             order by id desc
             limit $5",
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
