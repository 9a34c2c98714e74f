//! API tokens of the control plane, stored as hashes only. Generating and hashing tokens is
//! the web layer's business; the store keeps the hash, the role and the dates.

use chrono::{DateTime, Utc};

use crate::{ApiTokenInsert, ApiTokenRow, Store, StoreError};

macro_rules! on_dialect {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Postgres($store) => $call,
            Store::Sqlite($store) => $call,
        }
    };
}

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
        on_dialect!(self, store => store.api_token_insert(insert).await)
    }

    /// The unrevoked token with this hash, if any; records its use (at most once a minute).
    pub async fn api_token_authenticate(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        on_dialect!(self, store => store.api_token_authenticate(token_hash, now).await)
    }

    /// Every token, newest first (revoked ones too, marked).
    pub async fn api_token_list(&self) -> Result<Vec<ApiTokenRow>, StoreError> {
        let limit = domain::limits::LIST_LIMIT_MAX;
        on_dialect!(self, store => store.api_token_list(limit).await)
    }

    /// Revokes a token: from now on it authenticates nothing.
    pub async fn api_token_revoke(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<ApiTokenRow, StoreError> {
        if let Some(row) = on_dialect!(self, store => store.api_token_revoke(id, now).await)? {
            return Ok(row);
        }
        match on_dialect!(self, store => store.api_token_get(id).await)? {
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
