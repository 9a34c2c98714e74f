//! The `audit_log` table: who did what to which target, written in the same transaction as
//! the change it records. One SQL text serves both dialects (see `dialect.rs`); only the
//! encoding of `at` and `details` differs, and each dialect's `dialect` module says how.

use sqlx::Row;

use crate::dialect::{on_pool, on_write, per_dialect};
use crate::{AuditInsert, AuditList, AuditRow, Store, StoreError};

const COLUMNS: &str = "id, at, actor, action, target, details";

/// Reads an `audit_log` row of [`COLUMNS`] in either dialect.
macro_rules! decode_audit {
    ($row:expr, $d:ident) => {{
        let row = $row;
        AuditRow {
            id: row.try_get("id")?,
            at: $d::read_time(row, "at")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            details: $d::read_json(row, "details")?,
        }
    }};
}

per_dialect! {
    /// Inserts an entry on the caller's connection, so it commits with the change it records.
    pub(crate) async fn insert_on(
        connection: &mut d::Connection,
        insert: &AuditInsert,
    ) -> Result<AuditRow, StoreError> {
        let sql = format!(
            "insert into audit_log (at, actor, action, target, details) values ($1, $2, $3, $4, $5)
             returning {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(d::time(insert.now))
            .bind(&insert.actor)
            .bind(&insert.action)
            .bind(&insert.target)
            .bind(d::json(&insert.details))
            .fetch_one(connection)
            .await?;
        Ok(decode_audit!(&row, d))
    }
}

impl Store {
    pub async fn audit_insert(&self, insert: &AuditInsert) -> Result<AuditRow, StoreError> {
        crate::validate_audit(insert)?;
        Ok(on_write!(self, |conn, d| d::audit::insert_on(conn, insert).await?))
    }

    /// Lists audit entries, newest first.
    pub async fn audit_list(&self, list: &AuditList) -> Result<Vec<AuditRow>, StoreError> {
        for (name, value) in [
            ("actor", &list.actor),
            ("action", &list.action),
            ("target", &list.target),
        ] {
            if let Some(value) = value {
                domain::check_text(name, value, domain::Controls::None)
                    .map_err(|error| StoreError::Invalid(error.to_string()))?;
            }
        }
        let limit = i64::from(list.limit.clamp(1, domain::limits::LIST_LIMIT_MAX));
        let sql = format!(
            "select {COLUMNS} from audit_log
             where ($1 is null or actor = $1)
               and ($2 is null or action = $2)
               and ($3 is null or target = $3)
               and ($4 is null or id < $4)
             order by id desc
             limit $5"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&list.actor)
                .bind(&list.action)
                .bind(&list.target)
                .bind(list.before_id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut entries = Vec::with_capacity(rows.len());
            for row in &rows {
                entries.push(decode_audit!(row, d));
            }
            Ok(entries)
        })
    }
}
