//! The ledger's rows (migration 0021) and what the ledger reads of the other tables.
//!
//! What a wallet should hold is not stored: the web crate's `ledger` folds it from the rows
//! that move money, read here a page at a time (a page is bounded, the fold is not: it reads
//! every page once). Each source of money moves has its own page reader:
//! [`Store::ledger_deposit_page`] (deposits on the chain now: pending, credited, ignored),
//! [`Store::ledger_withdrawal_page`] (withdrawals that may have been signed) and
//! [`Store::ledger_adjustment_page`] (the operators' entries). A later source (a `sweep`
//! table's consolidation transfers and their gas top-ups) adds its own page reader here and
//! its lines to the fold; nothing else changes.
//!
//! - [`Store::ledger_adjustment_insert`]: money that moved outside those rows (a hot wallet's
//!   opening balance, a correction), with its reason, audited in the same transaction.
//! - [`Store::ledger_check_replace`]: a reconciliation's outcome per asset of one chain,
//!   replacing that chain's previous one; `/metrics` and the dashboard read it back with
//!   [`Store::ledger_check_list`].
//!
//! One SQL text serves both dialects (see `dialect.rs`): the statements differ only in how a
//! time is encoded.

use chrono::{DateTime, Utc};
use domain::limits::LIST_LIMIT_MAX;
use domain::{Amount, Chain, WithdrawalState};
use sqlx::Row;

use crate::dialect::{in_write_tx, on_pool};
use crate::scans::parse_amount;
use crate::{AuditInsert, DepositState, Store, StoreError, corrupt};

/// The longest reason of an adjustment.
pub const LEDGER_REASON_LEN_MAX: usize = 500;

/// Which way an adjustment moved money, seen from its wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerDirection {
    In,
    Out,
}

impl LedgerDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerDirection::In => "in",
            LedgerDirection::Out => "out",
        }
    }
}

impl std::str::FromStr for LedgerDirection {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "in" => Ok(LedgerDirection::In),
            "out" => Ok(LedgerDirection::Out),
            other => Err(format!(
                "direction {:?}: in or out",
                other.chars().take(20).collect::<String>()
            )),
        }
    }
}

/// An adjustment to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerAdjustmentInsert {
    pub chain: Chain,
    /// The wallet's address, as the chain spells it (checked by the caller).
    pub address: String,
    /// The catalogue symbol (checked by the caller).
    pub asset: String,
    pub direction: LedgerDirection,
    /// Base units; never zero.
    pub amount: Amount,
    pub reason: String,
    /// Who records it (the audit log's actor).
    pub actor: String,
    pub now: DateTime<Utc>,
}

/// A recorded adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerAdjustmentRow {
    pub id: i64,
    pub chain: Chain,
    pub address: String,
    pub asset: String,
    pub direction: LedgerDirection,
    pub amount: Amount,
    pub reason: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// One page of a chain's rows, in id order, after `after_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerPage {
    pub chain: Chain,
    pub after_id: i64,
    pub limit: u32,
}

/// A deposit whose funds are on the chain now (pending, credited or ignored: an orphaned or
/// reversed one's block left the chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerDeposit {
    pub id: i64,
    pub address: String,
    /// `native`, or the token's contract.
    pub asset: String,
    pub state: DepositState,
    pub amount: Amount,
}

/// A deposit output a Bitcoin payout spends where it lies (an input of one of its
/// attempts, `attempt_input`): moved from its address into the hot wallet once that attempt
/// landed; not settled while only a live one spends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerDepositSpend {
    /// The deposit's id.
    pub id: i64,
    pub address: String,
    /// `native` (only Bitcoin payouts spend deposits).
    pub asset: String,
    pub amount: Amount,
    /// The landed attempt that spent it, if one did.
    pub landed: Option<String>,
    /// A live attempt that spends it (the payout is not settled), when none landed.
    pub live: Option<String>,
}

/// A withdrawal that may have been signed, with what it paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerWithdrawal {
    pub id: i64,
    /// The catalogue symbol.
    pub asset: String,
    pub amount: Amount,
    /// The fee paid, in the chain's native base units, once known.
    pub fee: Option<Amount>,
    pub state: WithdrawalState,
    pub txid: Option<String>,
}

/// A reconciliation's outcome for one chain and asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCheck {
    pub chain: Chain,
    /// The catalogue symbol (or the stored asset when the catalogue no longer has it).
    pub asset: String,
    pub agreeing: u64,
    pub differing: u64,
    pub unknown: u64,
    /// The sum of the differences' sizes, in base units.
    pub difference: Amount,
    pub checked_at: DateTime<Utc>,
}

fn page_limit(limit: u32) -> Result<i64, StoreError> {
    if limit == 0 || limit > LIST_LIMIT_MAX {
        return Err(StoreError::Invalid(format!(
            "limit must be 1 to {LIST_LIMIT_MAX}"
        )));
    }
    Ok(i64::from(limit))
}

fn count(what: &str, n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Invalid(format!("{what}: {n} is too many")))
}

impl Store {
    /// Records an adjustment with its audit entry (`ledger.adjust`), in one transaction.
    pub async fn ledger_adjustment_insert(
        &self,
        insert: &LedgerAdjustmentInsert,
    ) -> Result<LedgerAdjustmentRow, StoreError> {
        if insert.amount.is_zero() {
            return Err(StoreError::Invalid(
                "an adjustment of zero changes nothing".into(),
            ));
        }
        if insert.address.is_empty() || insert.address.len() > 100 {
            return Err(StoreError::Invalid("an address is 1 to 100 bytes".into()));
        }
        if insert.asset.is_empty() || insert.asset.len() > 20 {
            return Err(StoreError::Invalid("an asset is 1 to 20 bytes".into()));
        }
        let reason = insert.reason.trim();
        if reason.is_empty() || reason.len() > LEDGER_REASON_LEN_MAX {
            return Err(StoreError::Invalid(format!(
                "a reason is 1 to {LEDGER_REASON_LEN_MAX} bytes: say where the money came from or went"
            )));
        }
        domain::check_text("reason", reason, domain::Controls::Whitespace)
            .map_err(|error| StoreError::Invalid(error.to_string()))?;
        for (what, text) in [("address", &insert.address), ("asset", &insert.asset)] {
            domain::check_text(what, text, domain::Controls::None)
                .map_err(|error| StoreError::Invalid(error.to_string()))?;
        }
        let amount = insert.amount.base_units().to_string();
        let row = in_write_tx!(self, |store, conn, d| {
            let row = sqlx::query(
                "insert into ledger_adjustment
                     (chain, address, asset, direction, amount, reason, created_by, created_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $8)
                 returning id",
            )
            .bind(insert.chain.as_str())
            .bind(&insert.address)
            .bind(&insert.asset)
            .bind(insert.direction.as_str())
            .bind(&amount)
            .bind(reason)
            .bind(&insert.actor)
            .bind(d::time(insert.now))
            .fetch_one(&mut *conn)
            .await?;
            let id: i64 = row.try_get("id")?;
            d::audit::insert_on(
                &mut *conn,
                &AuditInsert {
                    actor: insert.actor.clone(),
                    action: "ledger.adjust".into(),
                    target: format!("ledger_adjustment:{id}"),
                    details: serde_json::json!({
                        "chain": insert.chain.as_str(),
                        "address": insert.address,
                        "asset": insert.asset,
                        "direction": insert.direction.as_str(),
                        "amount_base_units": amount,
                        "reason": reason,
                    }),
                    now: insert.now,
                },
            )
            .await?;
            LedgerAdjustmentRow {
                id,
                chain: insert.chain,
                address: insert.address.clone(),
                asset: insert.asset.clone(),
                direction: insert.direction,
                amount: insert.amount,
                reason: reason.to_string(),
                created_by: insert.actor.clone(),
                created_at: insert.now,
            }
        });
        Ok(row)
    }

    /// A page of a chain's adjustments, oldest first.
    pub async fn ledger_adjustment_page(
        &self,
        page: &LedgerPage,
    ) -> Result<Vec<LedgerAdjustmentRow>, StoreError> {
        let limit = page_limit(page.limit)?;
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select id, chain, address, asset, direction, amount, reason, created_by,
                        created_at
                 from ledger_adjustment where chain = $1 and id > $2 order by id limit $3",
            )
            .bind(page.chain.as_str())
            .bind(page.after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut adjustments = Vec::with_capacity(rows.len());
            for row in &rows {
                let direction: String = row.try_get("direction")?;
                let amount: String = row.try_get("amount")?;
                adjustments.push(LedgerAdjustmentRow {
                    id: row.try_get("id")?,
                    chain: page.chain,
                    address: row.try_get("address")?,
                    asset: row.try_get("asset")?,
                    direction: direction
                        .parse()
                        .map_err(|error| corrupt("ledger_adjustment.direction", error))?,
                    amount: parse_amount(&amount)?,
                    reason: row.try_get("reason")?,
                    created_by: row.try_get("created_by")?,
                    created_at: d::read_time(row, "created_at")?,
                });
            }
            Ok(adjustments)
        })
    }

    /// A page of a chain's deposits whose funds are on the chain now: `pending`, `credited`
    /// and `ignored` ones of a value (an ignored transfer's coins are on its address too).
    pub async fn ledger_deposit_page(
        &self,
        page: &LedgerPage,
    ) -> Result<Vec<LedgerDeposit>, StoreError> {
        let limit = page_limit(page.limit)?;
        on_pool!(self, |pool, _d| {
            let rows = sqlx::query(
                "select id, address, asset, state, amount from deposit
                 where chain = $1 and id > $2 and state in ('pending', 'credited', 'ignored')
                   and amount <> '0'
                 order by id limit $3",
            )
            .bind(page.chain.as_str())
            .bind(page.after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut deposits = Vec::with_capacity(rows.len());
            for row in &rows {
                let state: String = row.try_get("state")?;
                let amount: String = row.try_get("amount")?;
                deposits.push(LedgerDeposit {
                    id: row.try_get("id")?,
                    address: row.try_get("address")?,
                    asset: row.try_get("asset")?,
                    state: DepositState::parse(&state)?,
                    amount: parse_amount(&amount)?,
                });
            }
            Ok(deposits)
        })
    }

    /// A page of a chain's deposits (those [`Store::ledger_deposit_page`] counts) that a
    /// payout attempt, landed or live, spends: one row per deposit, in id order. Dead and
    /// replaced attempts never moved anything.
    pub async fn ledger_deposit_spend_page(
        &self,
        page: &LedgerPage,
    ) -> Result<Vec<LedgerDepositSpend>, StoreError> {
        let limit = page_limit(page.limit)?;
        on_pool!(self, |pool, _d| {
            let rows = sqlx::query(
                "select d.id, d.address, d.asset, d.amount,
                        max(case when a.state = 'landed' then a.txid end) as landed,
                        max(case when a.state = 'live' then a.txid end) as live
                 from deposit d
                 join attempt_input i
                   on i.chain = d.chain and i.txid = d.txid and i.vout = d.position
                 join payout_attempt a on a.chain = i.chain and a.txid = i.attempt_txid
                 where d.chain = $1 and d.id > $2
                   and d.state in ('pending', 'credited', 'ignored') and d.amount <> '0'
                   and a.state in ('landed', 'live')
                 group by d.id, d.address, d.asset, d.amount
                 order by d.id limit $3",
            )
            .bind(page.chain.as_str())
            .bind(page.after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut spends = Vec::with_capacity(rows.len());
            for row in &rows {
                let amount: String = row.try_get("amount")?;
                spends.push(LedgerDepositSpend {
                    id: row.try_get("id")?,
                    address: row.try_get("address")?,
                    asset: row.try_get("asset")?,
                    amount: parse_amount(&amount)?,
                    landed: row.try_get("landed")?,
                    live: row.try_get("live")?,
                });
            }
            Ok(spends)
        })
    }

    /// A page of a chain's withdrawals that may have been signed (not `approval`, `pending`
    /// or `canceled`), with their fees.
    pub async fn ledger_withdrawal_page(
        &self,
        page: &LedgerPage,
    ) -> Result<Vec<LedgerWithdrawal>, StoreError> {
        let limit = page_limit(page.limit)?;
        on_pool!(self, |pool, _d| {
            let rows = sqlx::query(
                "select id, asset, amount, fee, state, txid from withdrawal
                 where chain = $1 and id > $2 and state not in ('approval', 'pending', 'canceled')
                 order by id limit $3",
            )
            .bind(page.chain.as_str())
            .bind(page.after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut withdrawals = Vec::with_capacity(rows.len());
            for row in &rows {
                let state: String = row.try_get("state")?;
                let amount: String = row.try_get("amount")?;
                let fee: Option<String> = row.try_get("fee")?;
                withdrawals.push(LedgerWithdrawal {
                    id: row.try_get("id")?,
                    asset: row.try_get("asset")?,
                    amount: parse_amount(&amount)?,
                    fee: fee.as_deref().map(parse_amount).transpose()?,
                    state: state
                        .parse()
                        .map_err(|error| corrupt("withdrawal.state", error))?,
                    txid: row.try_get("txid")?,
                });
            }
            Ok(withdrawals)
        })
    }

    /// Replaces `chain`'s reconciliation outcome with `checks` (each of that chain), in one
    /// transaction: an asset no longer reconciled leaves no stale row behind.
    pub async fn ledger_check_replace(
        &self,
        chain: Chain,
        checks: &[LedgerCheck],
    ) -> Result<(), StoreError> {
        if let Some(other) = checks.iter().find(|check| check.chain != chain) {
            return Err(StoreError::Invalid(format!(
                "a check of {} in {chain}'s reconciliation",
                other.chain
            )));
        }
        if let Some(bad) = checks
            .iter()
            .find(|check| check.asset.is_empty() || check.asset.len() > 100)
        {
            return Err(StoreError::Invalid(format!(
                "asset {:?}: 1 to 100 bytes",
                bad.asset.chars().take(40).collect::<String>()
            )));
        }
        in_write_tx!(self, |store, conn, d| {
            sqlx::query("delete from ledger_check where chain = $1")
                .bind(chain.as_str())
                .execute(&mut *conn)
                .await?;
            for check in checks {
                sqlx::query(
                    "insert into ledger_check
                         (chain, asset, agreeing, differing, unknown, difference, checked_at)
                     values ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(chain.as_str())
                .bind(&check.asset)
                .bind(count("agreeing", check.agreeing)?)
                .bind(count("differing", check.differing)?)
                .bind(count("unknown", check.unknown)?)
                .bind(check.difference.base_units().to_string())
                .bind(d::time(check.checked_at))
                .execute(&mut *conn)
                .await?;
            }
        });
        Ok(())
    }

    /// Every chain's last reconciliation, by chain and asset.
    pub async fn ledger_check_list(&self) -> Result<Vec<LedgerCheck>, StoreError> {
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select chain, asset, agreeing, differing, unknown, difference, checked_at
                 from ledger_check order by chain, asset",
            )
            .fetch_all(pool)
            .await?;
            let mut checks = Vec::with_capacity(rows.len());
            for row in &rows {
                let chain: String = row.try_get("chain")?;
                let difference: String = row.try_get("difference")?;
                let number = |column: &str| -> Result<u64, StoreError> {
                    let n: i64 = row.try_get(column)?;
                    u64::try_from(n).map_err(|_| corrupt("ledger_check count", n))
                };
                checks.push(LedgerCheck {
                    chain: chain
                        .parse()
                        .map_err(|error| corrupt("ledger_check.chain", error))?,
                    asset: row.try_get("asset")?,
                    agreeing: number("agreeing")?,
                    differing: number("differing")?,
                    unknown: number("unknown")?,
                    difference: parse_amount(&difference)?,
                    checked_at: d::read_time(row, "checked_at")?,
                });
            }
            Ok(checks)
        })
    }
}
