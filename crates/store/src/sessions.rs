//! Dashboard sessions, stored as hashes of their ids only. Making ids and hashing them is the
//! web layer's business (as for API tokens); the store keeps the hash, the token the session
//! acts as, and when it ends. A session authenticates only while its token is unrevoked, so
//! revoking a token ends its sessions at their next request.

//!
//! One SQL text serves both dialects (see `dialect.rs`); only the encoding of times differs.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::dialect::{in_write_tx, on_pool, on_write};
use crate::tokens::decode_token;
use crate::{ApiTokenRow, Store, StoreError, corrupt};

/// A new session for the token `token_id`.
#[derive(Debug, Clone)]
pub struct SessionInsert {
    /// Lowercase hex SHA-256 of the session id the browser holds.
    pub id_hash: String,
    pub token_id: i64,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A live session and the token it acts as.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub token: ApiTokenRow,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

fn check_hash(id_hash: &str) -> Result<(), StoreError> {
    if id_hash.len() == 64 && id_hash.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "a session id hash is 64 hex digits".into(),
        ))
    }
}

impl Store {
    /// Records a session; expired sessions are deleted on the way, so the table holds only
    /// live ones (and at most those made within one session lifetime).
    pub async fn session_insert(&self, insert: &SessionInsert) -> Result<(), StoreError> {
        check_hash(&insert.id_hash)?;
        if insert.expires_at <= insert.now {
            return Err(StoreError::Invalid(
                "a session must end after it starts".into(),
            ));
        }
        in_write_tx!(self, |store, conn, d| {
            sqlx::query("delete from dashboard_session where expires_at <= $1")
                .bind(d::time(insert.now))
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "insert into dashboard_session (id_hash, token_id, created_at, expires_at)
                 values ($1, $2, $3, $4)",
            )
            .bind(&insert.id_hash)
            .bind(insert.token_id)
            .bind(d::time(insert.now))
            .bind(d::time(insert.expires_at))
            .execute(&mut *conn)
            .await?;
        });
        Ok(())
    }

    /// The session with this id hash, if it has not expired and its token is not revoked.
    pub async fn session_authenticate(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRow>, StoreError> {
        if check_hash(id_hash).is_err() {
            return Ok(None);
        }
        on_pool!(self, |pool, d| {
            let row = sqlx::query(
                "select t.id, t.name, t.role, t.prefix, t.created_at, t.last_used_at, t.revoked_at,
                        s.created_at as session_created_at, s.expires_at
                 from dashboard_session s join api_token t on t.id = s.token_id
                 where s.id_hash = $1 and s.expires_at > $2 and t.revoked_at is null",
            )
            .bind(id_hash)
            .bind(d::time(now))
            .fetch_optional(pool)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            Ok(Some(SessionRow {
                token: decode_token!(&row, d),
                created_at: d::read_time(&row, "session_created_at")?,
                expires_at: d::read_time(&row, "expires_at")?,
            }))
        })
    }

    /// Ends a session (logout); whether there was one.
    pub async fn session_delete(&self, id_hash: &str) -> Result<bool, StoreError> {
        if check_hash(id_hash).is_err() {
            return Ok(false);
        }
        let deleted = on_write!(self, |conn, _d| {
            sqlx::query("delete from dashboard_session where id_hash = $1")
                .bind(id_hash)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        });
        Ok(deleted > 0)
    }
}
