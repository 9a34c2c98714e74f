//! Deposit addresses, the scan lease and the deposit listing (migration 0017).
//!
//! - [`Store::deposit_address_insert`]: one address per (chain, reference). The caller derives
//!   the address at the index [`Store::deposit_address_next_index`] gave it; the insert is
//!   refused by whichever unique constraint another request won (the reference: that
//!   request's address is the answer; the index or the address: derive the next one and try
//!   again), so racing requests for one reference end with one address, and two references
//!   never share an index. Only the store's constraints decide, not a lock: the same on both
//!   dialects.
//! - [`Store::scan_lease_take`]: one deposit scanner per chain. A holder keeps its lease by
//!   taking it again before it expires; another holder gets it only once it has expired.
//! - [`Store::deposit_list`]: deposits newest first, each with the reference of the address
//!   it paid (a join on `deposit_address`), filtered by chain, state, reference.
//!
//! One SQL text serves both dialects (see `dialect.rs`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::Chain;
use domain::limits::LIST_LIMIT_MAX;
use sqlx::Row;

use crate::dialect::{in_write_tx, on_pool, on_write};
use crate::scans::{DEPOSIT_COLUMNS, decode_deposit, parse_amount, to_u64};
use crate::{AuditInsert, DepositRow, DepositState, Store, StoreError};

/// An issued deposit address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositAddressRow {
    pub id: i64,
    pub chain: Chain,
    pub reference: String,
    /// The key index under the chain's deposit account (account/0/index).
    pub index: u32,
    pub address: String,
    pub created_at: DateTime<Utc>,
}

/// An address to store for a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositAddressInsert {
    pub chain: Chain,
    pub reference: String,
    pub index: u32,
    pub address: String,
    /// Who asked (the audit log's actor).
    pub actor: String,
    pub now: DateTime<Utc>,
}

/// What [`Store::deposit_address_insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepositAddressInserted {
    /// Stored: the reference's address from now on.
    Created(DepositAddressRow),
    /// The reference had an address already (perhaps stored a moment ago by a racing
    /// request): that one is the answer; nothing was written.
    Existing(DepositAddressRow),
    /// Another reference holds the index (or the address): derive the next index and try again.
    IndexTaken,
}

/// Which issued addresses to list, oldest first, after `after_id`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DepositAddressList {
    pub chain: Option<Chain>,
    pub reference: Option<String>,
    pub after_id: Option<i64>,
    pub limit: u32,
}

/// Which deposits to list, newest first, before `before_id`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DepositList {
    pub chain: Option<Chain>,
    pub state: Option<DepositState>,
    pub reference: Option<String>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// A deposit with the reference of the address it paid (None: an address not issued through
/// `deposit_address`, say one a test watched directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositView {
    pub deposit: DepositRow,
    pub reference: Option<String>,
}

/// How many outpoints one query of [`Store::deposits_credited`] asks about.
pub const CREDITED_LOOKUP_CHUNK: usize = 200;

const ADDRESS_COLUMNS: &str = "id, chain, reference, derivation_index, address, created_at";

macro_rules! decode_address {
    ($row:expr, $d:ident) => {{
        let row = $row;
        let chain: String = row.try_get("chain")?;
        let index: i64 = row.try_get("derivation_index")?;
        DepositAddressRow {
            id: row.try_get("id")?,
            chain: chain
                .parse()
                .map_err(|error| crate::corrupt("deposit_address.chain", error))?,
            reference: row.try_get("reference")?,
            index: u32::try_from(index)
                .map_err(|_| crate::corrupt("deposit_address.derivation_index", index))?,
            address: row.try_get("address")?,
            created_at: $d::read_time(row, "created_at")?,
        }
    }};
}

fn check_limit(limit: u32) -> Result<i64, StoreError> {
    if limit == 0 || limit > LIST_LIMIT_MAX {
        return Err(StoreError::Invalid(format!(
            "limit must be 1 to {LIST_LIMIT_MAX}"
        )));
    }
    Ok(i64::from(limit))
}

fn check_reference(reference: &str) -> Result<(), StoreError> {
    domain::withdrawal::check_reference(reference)
        .map_err(|error| StoreError::Invalid(format!("reference: {error}")))
}

impl Store {
    /// The address issued for `reference` on `chain`, if any.
    pub async fn deposit_address_get(
        &self,
        chain: Chain,
        reference: &str,
    ) -> Result<Option<DepositAddressRow>, StoreError> {
        let sql = format!(
            "select {ADDRESS_COLUMNS} from deposit_address where chain = $1 and reference = $2"
        );
        on_pool!(self, |pool, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(chain.as_str())
                .bind(reference)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(row) => Some(decode_address!(&row, d)),
                None => None,
            })
        })
    }

    /// The index after the highest one issued on `chain` (0 when none is).
    pub async fn deposit_address_next_index(&self, chain: Chain) -> Result<u32, StoreError> {
        let highest: Option<i64> = on_pool!(self, |pool, _d| {
            sqlx::query_scalar("select max(derivation_index) from deposit_address where chain = $1")
                .bind(chain.as_str())
                .fetch_one(pool)
                .await?
        });
        match highest {
            None => Ok(0),
            Some(highest) => u32::try_from(highest + 1)
                .ok()
                .filter(|next| *next < 1 << 31)
                .ok_or_else(|| {
                    StoreError::LimitReached(format!(
                        "every deposit index of {chain} is issued (2^31)"
                    ))
                }),
        }
    }

    /// Stores `insert` unless its reference has an address already or its index (or address)
    /// is another reference's; see [`DepositAddressInserted`].
    pub async fn deposit_address_insert(
        &self,
        insert: &DepositAddressInsert,
    ) -> Result<DepositAddressInserted, StoreError> {
        check_reference(&insert.reference)?;
        if insert.index >= 1 << 31 {
            return Err(StoreError::Invalid(format!(
                "deposit index {} is not a normal BIP32 index",
                insert.index
            )));
        }
        if insert.address.is_empty() || insert.address.len() > 100 {
            return Err(StoreError::Invalid("an address is 1 to 100 bytes".into()));
        }
        let sql = format!(
            "insert into deposit_address (chain, reference, derivation_index, address, created_at)
             values ($1, $2, $3, $4, $5)
             on conflict do nothing
             returning {ADDRESS_COLUMNS}"
        );
        // The row and its audit entry commit together.
        let created = in_write_tx!(self, |store, conn, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(insert.chain.as_str())
                .bind(&insert.reference)
                .bind(i64::from(insert.index))
                .bind(&insert.address)
                .bind(d::time(insert.now))
                .fetch_optional(&mut *conn)
                .await?;
            match row {
                Some(row) => {
                    let row = decode_address!(&row, d);
                    d::audit::insert_on(
                        &mut *conn,
                        &AuditInsert {
                            actor: insert.actor.clone(),
                            action: "deposit_address.create".into(),
                            target: format!("deposit_address:{}", row.id),
                            details: serde_json::json!({
                                "chain": row.chain.as_str(),
                                "reference": row.reference,
                                "index": row.index,
                                "address": row.address,
                            }),
                            now: insert.now,
                        },
                    )
                    .await?;
                    Some(row)
                }
                None => None,
            }
        });
        if let Some(row) = created {
            return Ok(DepositAddressInserted::Created(row));
        }
        Ok(
            match self
                .deposit_address_get(insert.chain, &insert.reference)
                .await?
            {
                Some(row) => DepositAddressInserted::Existing(row),
                None => DepositAddressInserted::IndexTaken,
            },
        )
    }

    /// Issued addresses, oldest first, after `after_id`.
    pub async fn deposit_address_list(
        &self,
        list: &DepositAddressList,
    ) -> Result<Vec<DepositAddressRow>, StoreError> {
        let limit = check_limit(list.limit)?;
        let sql = format!(
            "select {ADDRESS_COLUMNS} from deposit_address
             where ($1 is null or chain = $1) and ($2 is null or reference = $2)
               and ($3 is null or id > $3)
             order by id limit $4"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(list.chain.map(Chain::as_str))
                .bind(list.reference.as_deref())
                .bind(list.after_id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut addresses = Vec::with_capacity(rows.len());
            for row in &rows {
                addresses.push(decode_address!(row, d));
            }
            Ok(addresses)
        })
    }

    /// Takes (or keeps) the scan lease of `chain` for `holder` until `now + ttl`; false while
    /// another holder's lease has not expired.
    pub async fn scan_lease_take(
        &self,
        chain: Chain,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if holder.is_empty() || holder.len() > 200 {
            return Err(StoreError::Invalid(
                "a lease holder is 1 to 200 bytes".into(),
            ));
        }
        let expires = now
            + chrono::Duration::from_std(ttl)
                .map_err(|_| StoreError::Invalid("a lease that long".into()))?;
        Ok(on_write!(self, |conn, d| {
            sqlx::query(
                "insert into scan_lease (chain, holder, expires_at) values ($1, $2, $3)
                 on conflict (chain) do update
                 set holder = excluded.holder, expires_at = excluded.expires_at
                 where scan_lease.holder = excluded.holder or scan_lease.expires_at < $4
                 returning holder",
            )
            .bind(chain.as_str())
            .bind(holder)
            .bind(d::time(expires))
            .bind(d::time(now))
            .fetch_optional(&mut *conn)
            .await?
            .is_some()
        }))
    }

    /// Gives the scan lease of `chain` up, if `holder` has it.
    pub async fn scan_lease_release(&self, chain: Chain, holder: &str) -> Result<(), StoreError> {
        on_write!(self, |conn, _d| {
            sqlx::query("delete from scan_lease where chain = $1 and holder = $2")
                .bind(chain.as_str())
                .bind(holder)
                .execute(&mut *conn)
                .await?;
        });
        Ok(())
    }

    /// Which of `outpoints` (txid, position) are `credited` deposits of `chain`: a Bitcoin
    /// payout may spend those where they lie, and no other deposit output. Asked
    /// [`CREDITED_LOOKUP_CHUNK`] at a time.
    pub async fn deposits_credited(
        &self,
        chain: Chain,
        outpoints: &[(String, u64)],
    ) -> Result<std::collections::HashSet<(String, u64)>, StoreError> {
        let mut credited = std::collections::HashSet::new();
        for chunk in outpoints.chunks(CREDITED_LOOKUP_CHUNK) {
            let mut sql = String::from(
                "select txid, position from deposit where chain = $1 and state = 'credited' and (",
            );
            for n in 0..chunk.len() {
                if n > 0 {
                    sql.push_str(" or ");
                }
                sql.push_str(&format!(
                    "(txid = ${} and position = ${})",
                    2 * n + 2,
                    2 * n + 3
                ));
            }
            sql.push(')');
            let mut positions = Vec::with_capacity(chunk.len());
            for (_, position) in chunk {
                positions.push(crate::scans::to_i64("position", *position)?);
            }
            let found: Vec<(String, u64)> = on_pool!(self, |pool, _d| {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(chain.as_str());
                for ((txid, _), position) in chunk.iter().zip(&positions) {
                    query = query.bind(txid.as_str()).bind(*position);
                }
                let rows = query.fetch_all(pool).await?;
                let mut found = Vec::with_capacity(rows.len());
                for row in &rows {
                    let position: i64 = row.try_get("position")?;
                    found.push((row.try_get("txid")?, to_u64("deposit.position", position)?));
                }
                Ok::<_, StoreError>(found)
            })?;
            credited.extend(found);
        }
        Ok(credited)
    }

    /// Deposits newest first, each with its address's reference.
    pub async fn deposit_list(&self, list: &DepositList) -> Result<Vec<DepositView>, StoreError> {
        let limit = check_limit(list.limit)?;
        let columns: Vec<String> = DEPOSIT_COLUMNS
            .split(',')
            .map(|column| format!("deposit.{}", column.trim()))
            .collect();
        let sql = format!(
            "select {}, deposit_address.reference as reference_of
             from deposit left join deposit_address
               on deposit_address.chain = deposit.chain
              and deposit_address.address = deposit.address
             where ($1 is null or deposit.chain = $1) and ($2 is null or deposit.state = $2)
               and ($3 is null or deposit_address.reference = $3)
               and ($4 is null or deposit.id < $4)
             order by deposit.id desc limit $5",
            columns.join(", ")
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(list.chain.map(Chain::as_str))
                .bind(list.state.map(DepositState::as_str))
                .bind(list.reference.as_deref())
                .bind(list.before_id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut deposits = Vec::with_capacity(rows.len());
            for row in &rows {
                deposits.push(DepositView {
                    deposit: decode_deposit!(row, d),
                    reference: row.try_get("reference_of")?,
                });
            }
            Ok(deposits)
        })
    }

    /// One deposit by id, with its address's reference.
    pub async fn deposit_get(&self, id: i64) -> Result<Option<DepositView>, StoreError> {
        let columns: Vec<String> = DEPOSIT_COLUMNS
            .split(',')
            .map(|column| format!("deposit.{}", column.trim()))
            .collect();
        let sql = format!(
            "select {}, deposit_address.reference as reference_of
             from deposit left join deposit_address
               on deposit_address.chain = deposit.chain
              and deposit_address.address = deposit.address
             where deposit.id = $1",
            columns.join(", ")
        );
        on_pool!(self, |pool, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(row) => Some(DepositView {
                    deposit: decode_deposit!(&row, d),
                    reference: row.try_get("reference_of")?,
                }),
                None => None,
            })
        })
    }
}

impl Store {
    /// Deposits by chain and state, and each chain's newest scanned block: what `/metrics`
    /// reads (a reversed deposit is the alert).
    pub async fn deposit_counts(
        &self,
    ) -> Result<(Vec<(Chain, DepositState, i64)>, Vec<(Chain, u64)>), StoreError> {
        on_pool!(self, |pool, _d| {
            let rows = sqlx::query(
                "select chain, state, count(*) as n from deposit group by chain, state",
            )
            .fetch_all(pool)
            .await?;
            let mut counts = Vec::with_capacity(rows.len());
            for row in &rows {
                let chain: String = row.try_get("chain")?;
                let state: String = row.try_get("state")?;
                counts.push((
                    chain
                        .parse()
                        .map_err(|error| crate::corrupt("deposit.chain", error))?,
                    DepositState::parse(&state)?,
                    row.try_get::<i64, _>("n")?,
                ));
            }
            let rows =
                sqlx::query("select chain, max(number) as number from chain_block group by chain")
                    .fetch_all(pool)
                    .await?;
            let mut heads = Vec::with_capacity(rows.len());
            for row in &rows {
                let chain: String = row.try_get("chain")?;
                heads.push((
                    chain
                        .parse()
                        .map_err(|error| crate::corrupt("chain_block.chain", error))?,
                    to_u64("chain_block.number", row.try_get("number")?)?,
                ));
            }
            Ok((counts, heads))
        })
    }
}
