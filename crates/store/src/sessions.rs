//! Dashboard sessions, stored as hashes of their ids only. Making ids and hashing them is the
//! web layer's business (as for API tokens); the store keeps the hash, the token the session
//! acts as, and when it ends. A session authenticates only while its token is unrevoked, so
//! revoking a token ends its sessions at their next request.

use chrono::{DateTime, Utc};

use crate::{ApiTokenRow, Store, StoreError};

macro_rules! on_dialect {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Postgres($store) => $call,
            Store::Sqlite($store) => $call,
        }
    };
}

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
        on_dialect!(self, store => store.session_insert(insert).await)
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
        on_dialect!(self, store => store.session_authenticate(id_hash, now).await)
    }

    /// Ends a session (logout); whether there was one.
    pub async fn session_delete(&self, id_hash: &str) -> Result<bool, StoreError> {
        if check_hash(id_hash).is_err() {
            return Ok(false);
        }
        on_dialect!(self, store => store.session_delete(id_hash).await)
    }
}
