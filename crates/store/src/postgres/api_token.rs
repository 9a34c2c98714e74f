//! The `api_token` table on Postgres.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row};

use super::PgStore;
use crate::{ApiTokenInsert, ApiTokenRow, StoreError, corrupt};

fn decode(row: &PgRow) -> Result<ApiTokenRow, StoreError> {
    Ok(ApiTokenRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row
            .try_get::<String, _>("role")?
            .parse()
            .map_err(|error| corrupt("api_token.role", error))?,
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl PgStore {
    pub(crate) async fn api_token_insert(
        &self,
        insert: &ApiTokenInsert,
    ) -> Result<ApiTokenRow, StoreError> {
        let row = sqlx::query::<Postgres>(
            "insert into api_token (name, role, token_hash, prefix, created_at) values ($1, $2, $3, $4, $5)
             returning id, name, role, prefix, created_at, last_used_at, revoked_at",
        )
        .bind(&insert.name)
        .bind(insert.role.as_str())
        .bind(&insert.token_hash)
        .bind(&insert.prefix)
        .bind(insert.now)
        .fetch_one(&self.pool)
        .await?;
        decode(&row)
    }

    pub(crate) async fn api_token_authenticate(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        let row = sqlx::query::<Postgres>(
            "select id, name, role, prefix, created_at, last_used_at, revoked_at from api_token
             where token_hash = $1 and revoked_at is null",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row.as_ref().map(decode).transpose()? else {
            return Ok(None);
        };
        if row
            .last_used_at
            .is_none_or(|at| now - at > chrono::Duration::seconds(60))
        {
            sqlx::query::<Postgres>("update api_token set last_used_at = $2 where id = $1")
                .bind(row.id)
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(row))
    }

    pub(crate) async fn api_token_list(&self, limit: u32) -> Result<Vec<ApiTokenRow>, StoreError> {
        let rows = sqlx::query::<Postgres>(
            "select id, name, role, prefix, created_at, last_used_at, revoked_at from api_token order by id desc limit $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Revokes an unrevoked token; `None` when there is none with this id unrevoked.
    pub(crate) async fn api_token_revoke(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        let row = sqlx::query::<Postgres>(
            "update api_token set revoked_at = $2 where id = $1 and revoked_at is null
             returning id, name, role, prefix, created_at, last_used_at, revoked_at",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn api_token_get(&self, id: i64) -> Result<Option<ApiTokenRow>, StoreError> {
        let row = sqlx::query::<Postgres>(
            "select id, name, role, prefix, created_at, last_used_at, revoked_at from api_token where id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }
}
