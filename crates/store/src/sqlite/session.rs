//! The `dashboard_session` table on SQLite.

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite};

use super::{SqliteStore, from_millis, to_millis};
use crate::{ApiTokenRow, SessionInsert, SessionRow, StoreError, corrupt};

impl SqliteStore {
    pub(crate) async fn session_insert(&self, insert: &SessionInsert) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query::<Sqlite>("delete from dashboard_session where expires_at <= ?1")
            .bind(to_millis(insert.now))
            .execute(&mut *transaction)
            .await?;
        sqlx::query::<Sqlite>(
            "insert into dashboard_session (id_hash, token_id, created_at, expires_at)
             values (?1, ?2, ?3, ?4)",
        )
        .bind(&insert.id_hash)
        .bind(insert.token_id)
        .bind(to_millis(insert.now))
        .bind(to_millis(insert.expires_at))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    pub(crate) async fn session_authenticate(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query::<Sqlite>(
            "select t.id, t.name, t.role, t.prefix, t.created_at, t.last_used_at, t.revoked_at,
                    s.created_at as session_created_at, s.expires_at
             from dashboard_session s join api_token t on t.id = s.token_id
             where s.id_hash = ?1 and s.expires_at > ?2 and t.revoked_at is null",
        )
        .bind(id_hash)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let time = |column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
            row.try_get::<Option<i64>, _>(column)?
                .map(from_millis)
                .transpose()
        };
        Ok(Some(SessionRow {
            token: ApiTokenRow {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                role: row
                    .try_get::<String, _>("role")?
                    .parse()
                    .map_err(|error| corrupt("api_token.role", error))?,
                prefix: row.try_get("prefix")?,
                created_at: from_millis(row.try_get("created_at")?)?,
                last_used_at: time("last_used_at")?,
                revoked_at: time("revoked_at")?,
            },
            created_at: from_millis(row.try_get("session_created_at")?)?,
            expires_at: from_millis(row.try_get("expires_at")?)?,
        }))
    }

    pub(crate) async fn session_delete(&self, id_hash: &str) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let deleted = sqlx::query::<Sqlite>("delete from dashboard_session where id_hash = ?1")
            .bind(id_hash)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(deleted.rows_affected() > 0)
    }
}
