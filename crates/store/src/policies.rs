//! Withdrawal policies changed through the API (`withdrawal_policy_override`, migration
//! 0020): an asset's row replaces its `[[withdrawal_policy]]` at intake until it is cleared.
//! Each change is written with its audit entry (the policy before and after) in one
//! transaction. The store keeps the policy as the caller's JSON (amounts in base units);
//! what it means is the web crate's (`web::withdrawals::AssetPolicy`).
//!
//! The upsert is one text for both dialects: Postgres and SQLite (3.24 and later) read the
//! same `on conflict ... do update`.

use chrono::{DateTime, Utc};
use domain::Chain;
use sqlx::Row;

use crate::dialect::{in_write_tx, on_pool};
use crate::{AuditInsert, Store, StoreError};

/// A policy set through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOverride {
    pub chain: Chain,
    pub asset: String,
    pub policy: serde_json::Value,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

macro_rules! decode_override {
    ($row:expr, $d:ident) => {{
        let row = $row;
        let chain: String = row.try_get("chain")?;
        let policy: String = row.try_get("policy")?;
        PolicyOverride {
            chain: chain
                .parse()
                .map_err(|error| crate::corrupt("withdrawal_policy_override.chain", error))?,
            asset: row.try_get("asset")?,
            policy: serde_json::from_str(&policy).map_err(|error| {
                crate::corrupt("json in withdrawal_policy_override.policy", error)
            })?,
            updated_by: row.try_get("updated_by")?,
            updated_at: $d::read_time(row, "updated_at")?,
        }
    }};
}

impl Store {
    /// The policy set through the API for one asset, if any.
    pub async fn policy_override_get(
        &self,
        chain: Chain,
        asset: &str,
    ) -> Result<Option<PolicyOverride>, StoreError> {
        on_pool!(self, |pool, d| {
            let row = sqlx::query(
                "select chain, asset, policy, updated_by, updated_at
                 from withdrawal_policy_override where chain = $1 and asset = $2",
            )
            .bind(chain.as_str())
            .bind(asset)
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                Some(row) => Some(decode_override!(&row, d)),
                None => None,
            })
        })
    }

    /// Every policy set through the API.
    pub async fn policy_overrides(&self) -> Result<Vec<PolicyOverride>, StoreError> {
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select chain, asset, policy, updated_by, updated_at
                 from withdrawal_policy_override order by chain, asset",
            )
            .fetch_all(pool)
            .await?;
            let mut all = Vec::with_capacity(rows.len());
            for row in &rows {
                all.push(decode_override!(row, d));
            }
            Ok(all)
        })
    }

    /// Sets an asset's policy (`Some`) or clears it back to the configuration's (`None`),
    /// audited as `withdrawal_policy.set` / `withdrawal_policy.clear` with the policy before
    /// and after (`before`: what applied until now, as the caller shows it).
    pub async fn policy_override_write(
        &self,
        chain: Chain,
        asset: &str,
        policy: Option<&serde_json::Value>,
        before: &serde_json::Value,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if asset.is_empty() || asset.len() > 100 || actor.is_empty() || actor.len() > 200 {
            return Err(StoreError::Invalid(
                "an asset is 1 to 100 bytes and an actor 1 to 200".into(),
            ));
        }
        let text = policy.map(serde_json::Value::to_string);
        if text.as_ref().is_some_and(|text| text.len() > 4000) {
            return Err(StoreError::Invalid(
                "a policy is at most 4000 bytes of JSON".into(),
            ));
        }
        in_write_tx!(self, |_store, conn, d| {
            match &text {
                Some(text) => {
                    sqlx::query(
                        "insert into withdrawal_policy_override
                             (chain, asset, policy, updated_by, updated_at)
                         values ($1, $2, $3, $4, $5)
                         on conflict (chain, asset) do update
                         set policy = excluded.policy, updated_by = excluded.updated_by,
                             updated_at = excluded.updated_at",
                    )
                    .bind(chain.as_str())
                    .bind(asset)
                    .bind(text)
                    .bind(actor)
                    .bind(d::time(now))
                    .execute(&mut *conn)
                    .await?;
                }
                None => {
                    sqlx::query(
                        "delete from withdrawal_policy_override where chain = $1 and asset = $2",
                    )
                    .bind(chain.as_str())
                    .bind(asset)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            d::audit::insert_on(
                &mut *conn,
                &AuditInsert {
                    actor: actor.to_string(),
                    action: if policy.is_some() {
                        "withdrawal_policy.set".into()
                    } else {
                        "withdrawal_policy.clear".into()
                    },
                    target: format!("withdrawal_policy:{chain}/{asset}"),
                    details: serde_json::json!({ "before": before, "after": policy }),
                    now,
                },
            )
            .await?;
            Ok(())
        })
    }
}
