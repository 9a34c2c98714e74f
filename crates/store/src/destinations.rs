//! Registered withdrawal destinations (`withdrawal_destination`, migration 0019): in allowlist
//! mode a withdrawal may pay only to a destination registered here whose cool-down is over.
//! A registration's `usable_at` is fixed when it is made (its time plus the configured
//! cool-down), so a later change of the cool-down never shortens a wait already running.
//! Registering and removing are audited in the same transaction
//! (`withdrawal_destination.add`, `withdrawal_destination.remove`, target
//! `destination:CHAIN:ADDRESS`); removing deletes the row, and registering the address again
//! starts a new cool-down.

use chrono::{DateTime, Utc};
use domain::Chain;
use sqlx::Row;

use crate::dialect::{in_write_tx, on_pool};
use crate::{AuditInsert, Store, StoreError};

/// The longest label a destination may carry.
pub const DESTINATION_LABEL_LEN_MAX: usize = 100;
/// The longest reference prefix a destination may be tied to (a withdrawal's reference).
pub const DESTINATION_REFERENCE_LEN_MAX: usize = 200;

const COLUMNS: &str = "id, chain, address, label, reference, created_by, created_at, usable_at";

/// A destination to register.
#[derive(Debug, Clone)]
pub struct DestinationInsert {
    pub chain: Chain,
    /// Checked and normalised for its chain by the caller (the intake's address rules).
    pub address: String,
    /// What it is, for people ("Binance cold wallet").
    pub label: String,
    /// The reference prefix (the backend's user part) it belongs to: only withdrawals of
    /// that prefix may use it. `None`: any withdrawal may.
    pub reference: Option<String>,
    pub actor: String,
    /// How long after registration it becomes usable.
    pub cooldown: std::time::Duration,
    pub now: DateTime<Utc>,
}

/// A registered destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationRow {
    pub id: i64,
    pub chain: Chain,
    pub address: String,
    pub label: String,
    pub reference: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// Withdrawals may use it from this time on.
    pub usable_at: DateTime<Utc>,
}

impl DestinationRow {
    /// How the audit log names it.
    pub fn audit_target(&self) -> String {
        format!("destination:{}:{}", self.chain, self.address)
    }
}

/// One page of registered destinations, newest first.
#[derive(Debug, Clone, Default)]
pub struct DestinationList {
    pub chain: Option<Chain>,
    /// Only those with an id below this (the next page).
    pub before_id: Option<i64>,
    pub limit: u32,
}

macro_rules! decode_destination {
    ($row:expr, $d:ident) => {{
        let row = $row;
        DestinationRow {
            id: row.try_get("id")?,
            chain: row
                .try_get::<String, _>("chain")?
                .parse()
                .map_err(|error| crate::corrupt("withdrawal_destination.chain", error))?,
            address: row.try_get("address")?,
            label: row.try_get("label")?,
            reference: row.try_get("reference")?,
            created_by: row.try_get("created_by")?,
            created_at: $d::read_time(row, "created_at")?,
            usable_at: $d::read_time(row, "usable_at")?,
        }
    }};
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), StoreError> {
    if text.trim().is_empty() || text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "a destination's {what} is 1 to {max} characters without control characters"
        )));
    }
    Ok(())
}

fn validate(insert: &DestinationInsert) -> Result<(), StoreError> {
    check_text("address", &insert.address, 100)?;
    check_text("label", &insert.label, DESTINATION_LABEL_LEN_MAX)?;
    if let Some(reference) = &insert.reference {
        check_text("reference", reference, DESTINATION_REFERENCE_LEN_MAX)?;
    }
    if insert.actor.is_empty() || insert.actor.len() > 200 {
        return Err(StoreError::Invalid("an actor is 1 to 200 bytes".into()));
    }
    Ok(())
}

impl Store {
    /// Registers a destination, usable from `now + cooldown`, with its audit entry.
    /// `Conflict` when the chain and address are registered already.
    pub async fn withdrawal_destination_insert(
        &self,
        insert: &DestinationInsert,
    ) -> Result<DestinationRow, StoreError> {
        validate(insert)?;
        let cooldown = chrono::Duration::from_std(insert.cooldown)
            .map_err(|_| StoreError::Invalid("the cool-down is too long".into()))?;
        let usable_at = insert
            .now
            .checked_add_signed(cooldown)
            .ok_or_else(|| StoreError::Invalid("the cool-down is too long".into()))?;
        let taken = || {
            StoreError::Conflict(format!(
                "{} address {} is registered already; remove it first to register it again",
                insert.chain, insert.address
            ))
        };
        let insert_sql = format!(
            "insert into withdrawal_destination
                 (chain, address, label, reference, created_by, created_at, usable_at)
             values ($1, $2, $3, $4, $5, $6, $7)
             returning {COLUMNS}"
        );
        let result = self
            .destination_insert_tx(insert, usable_at, insert_sql, taken)
            .await;
        match result {
            // Another registration of the same address committed first (Postgres).
            Err(error) if crate::withdrawals::is_unique_violation(&error) => Err(taken()),
            other => other,
        }
    }

    async fn destination_insert_tx(
        &self,
        insert: &DestinationInsert,
        usable_at: DateTime<Utc>,
        insert_sql: String,
        taken: impl Fn() -> StoreError,
    ) -> Result<DestinationRow, StoreError> {
        in_write_tx!(self, |_store, conn, d| {
            let found: Option<i64> = sqlx::query_scalar(
                "select id from withdrawal_destination where chain = $1 and address = $2",
            )
            .bind(insert.chain.as_str())
            .bind(&insert.address)
            .fetch_optional(&mut *conn)
            .await?;
            if found.is_some() {
                return Err(taken());
            }
            let row = sqlx::query(sqlx::AssertSqlSafe(insert_sql))
                .bind(insert.chain.as_str())
                .bind(&insert.address)
                .bind(&insert.label)
                .bind(insert.reference.as_deref())
                .bind(&insert.actor)
                .bind(d::time(insert.now))
                .bind(d::time(usable_at))
                .fetch_one(&mut *conn)
                .await?;
            let row = decode_destination!(&row, d);
            d::audit::insert_on(
                &mut *conn,
                &AuditInsert {
                    actor: insert.actor.clone(),
                    action: "withdrawal_destination.add".into(),
                    target: row.audit_target(),
                    details: serde_json::json!({
                        "id": row.id,
                        "label": row.label,
                        "reference": row.reference,
                        "usable_at": row.usable_at.to_rfc3339(),
                    }),
                    now: insert.now,
                },
            )
            .await?;
            Ok(row)
        })
    }

    /// The registration of `address` on `chain`, if any (usable or still cooling down).
    pub async fn withdrawal_destination_find(
        &self,
        chain: Chain,
        address: &str,
    ) -> Result<Option<DestinationRow>, StoreError> {
        let sql = format!(
            "select {COLUMNS} from withdrawal_destination where chain = $1 and address = $2"
        );
        on_pool!(self, |pool, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(chain.as_str())
                .bind(address)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(row) => Some(decode_destination!(&row, d)),
                None => None,
            })
        })
    }

    /// Registered destinations, newest first, one page.
    pub async fn withdrawal_destination_list(
        &self,
        list: &DestinationList,
    ) -> Result<Vec<DestinationRow>, StoreError> {
        let limit = i64::from(list.limit.clamp(1, domain::limits::LIST_LIMIT_MAX));
        let sql = format!(
            "select {COLUMNS} from withdrawal_destination
             where ($1 is null or chain = $1) and ($2 is null or id < $2)
             order by id desc limit $3"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(list.chain.map(Chain::as_str))
                .bind(list.before_id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(decode_destination!(row, d));
            }
            Ok(out)
        })
    }

    /// Removes registration `id`, with its audit entry; `NotFound` when there is none.
    pub async fn withdrawal_destination_remove(
        &self,
        id: i64,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<DestinationRow, StoreError> {
        if actor.is_empty() || actor.len() > 200 {
            return Err(StoreError::Invalid("an actor is 1 to 200 bytes".into()));
        }
        let sql = format!("delete from withdrawal_destination where id = $1 returning {COLUMNS}");
        in_write_tx!(self, |_store, conn, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound {
                    what: "withdrawal destination",
                    id: id.to_string(),
                });
            };
            let row = decode_destination!(&row, d);
            d::audit::insert_on(
                &mut *conn,
                &AuditInsert {
                    actor: actor.to_string(),
                    action: "withdrawal_destination.remove".into(),
                    target: row.audit_target(),
                    details: serde_json::json!({ "id": row.id, "label": row.label }),
                    now,
                },
            )
            .await?;
            Ok(row)
        })
    }
}
