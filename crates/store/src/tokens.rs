//! API tokens of the control plane, stored as hashes only. Generating and hashing tokens is
//! the web layer's business; the store keeps the hash, the role and the dates.
//!
//! One SQL text serves both dialects (see `dialect.rs`); only the encoding of times differs.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::dialect::{on_pool, on_write};
use crate::{ApiTokenInsert, ApiTokenRow, Store, StoreError, corrupt};

/// The columns [`decode_token!`] reads.
const COLUMNS: &str = "id, name, role, prefix, created_at, last_used_at, revoked_at";

/// Reads an `api_token` row of [`COLUMNS`] in either dialect.
macro_rules! decode_token {
    ($row:expr, $d:ident) => {{
        let row = $row;
        ApiTokenRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: row
                .try_get::<String, _>("role")?
                .parse()
                .map_err(|error| corrupt("api_token.role", error))?,
            prefix: row.try_get("prefix")?,
            created_at: $d::read_time(row, "created_at")?,
            last_used_at: $d::read_time_opt(row, "last_used_at")?,
            revoked_at: $d::read_time_opt(row, "revoked_at")?,
        }
    }};
}
pub(crate) use decode_token;

impl Store {
    pub async fn api_token_insert(
        &self,
        insert: &ApiTokenInsert,
    ) -> Result<ApiTokenRow, StoreError> {
        let valid_hash = insert.token_hash.len() == 64
            && insert
                .token_hash
                .bytes()
                .all(|byte| byte.is_ascii_hexdigit());
        if !valid_hash {
            return Err(StoreError::Invalid("a token hash is 64 hex digits".into()));
        }
        if insert.name.trim().is_empty() || insert.name.len() > 100 {
            return Err(StoreError::Invalid(
                "a token name is 1 to 100 characters".into(),
            ));
        }
        domain::check_text("name", &insert.name, domain::Controls::None)
            .map_err(|error| StoreError::Invalid(error.to_string()))?;
        let sql = format!(
            "insert into api_token (name, role, token_hash, prefix, created_at)
             values ($1, $2, $3, $4, $5)
             returning {COLUMNS}"
        );
        Ok(on_write!(self, |conn, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&insert.name)
                .bind(insert.role.as_str())
                .bind(&insert.token_hash)
                .bind(&insert.prefix)
                .bind(d::time(insert.now))
                .fetch_one(&mut *conn)
                .await?;
            decode_token!(&row, d)
        }))
    }

    /// The unrevoked token with this hash, if any; records its use (at most once a minute).
    pub async fn api_token_authenticate(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        let sql =
            format!("select {COLUMNS} from api_token where token_hash = $1 and revoked_at is null");
        let found = on_pool!(self, |pool, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(token_hash)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => Some(decode_token!(&row, d)),
                None => None,
            }
        });
        let Some(row) = found else {
            return Ok(None);
        };
        if row
            .last_used_at
            .is_none_or(|at| now - at > chrono::Duration::seconds(60))
        {
            on_write!(self, |conn, d| {
                sqlx::query("update api_token set last_used_at = $2 where id = $1")
                    .bind(row.id)
                    .bind(d::time(now))
                    .execute(&mut *conn)
                    .await?;
            });
        }
        Ok(Some(row))
    }

    /// Every token, newest first (revoked ones too, marked).
    pub async fn api_token_list(&self) -> Result<Vec<ApiTokenRow>, StoreError> {
        let limit = domain::limits::LIST_LIMIT_MAX;
        let sql = format!("select {COLUMNS} from api_token order by id desc limit $1");
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut tokens = Vec::with_capacity(rows.len());
            for row in &rows {
                tokens.push(decode_token!(row, d));
            }
            Ok(tokens)
        })
    }

    /// Revokes a token: from now on it authenticates nothing.
    pub async fn api_token_revoke(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<ApiTokenRow, StoreError> {
        let sql = format!(
            "update api_token set revoked_at = $2 where id = $1 and revoked_at is null
             returning {COLUMNS}"
        );
        let revoked = on_write!(self, |conn, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(d::time(now))
                .fetch_optional(&mut *conn)
                .await?;
            match row {
                Some(row) => Some(decode_token!(&row, d)),
                None => None,
            }
        });
        if let Some(row) = revoked {
            return Ok(row);
        }
        let sql = format!("select {COLUMNS} from api_token where id = $1");
        let existing = on_pool!(self, |pool, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => Some(decode_token!(&row, d)),
                None => None,
            }
        });
        match existing {
            None => Err(StoreError::NotFound {
                what: "token",
                id: id.to_string(),
            }),
            Some(_) => Err(StoreError::Conflict(format!(
                "token {id} is already revoked"
            ))),
        }
    }
}
