//! Block scanning and deposits (migration 0007): the blocks a scanner read, with their
//! hashes, and the deposits found in them.
//!
//! The newest stored block is the scanner's cursor. [`Store::scan_commit`] appends a batch of
//! blocks and its deposits in one transaction, only if the batch follows the stored chain (a
//! compare-and-set on the newest block's hash: a scanner that read a different chain, or that
//! another scanner overtook, is refused with `Stale`). [`Store::scan_rollback`] cuts the stored
//! chain back to the fork point after a reorg and takes the deposits of the cut blocks with
//! it. [`Store::deposits_credit`] credits what the confirmation policy allows.
//!
//! A transfer the scanner will never credit (zero value, dust, from one of our own wallets) is
//! stored `ignored` with its reason, so it is visible and never holds the cursor back. A
//! deposit seen again after a reorg orphaned it takes every field from the block it is in now
//! (its address, sender and amount too, not only the block): an orphaned row was never
//! credited, so nothing it said before may survive into a credit. A `reversed` deposit (one
//! credited whose block left the chain) is never revived nor removed: a person decides.
//!
//! One SQL text serves both dialects (see `dialect.rs`). Only how one committer per chain is
//! ensured differs: Postgres takes a transaction-scoped advisory lock (`d::lock_chain_scan`),
//! SQLite's `begin immediate` holds the database's write lock already.

use chrono::{DateTime, Utc};
use domain::{Amount, Chain};
use sqlx::{QueryBuilder, Row};

use crate::dialect::{in_write_tx, on_pool};
use crate::{Store, StoreError};

/// Reads a `chain_block` row (`number, hash, parent_hash`) in either dialect.
macro_rules! decode_block {
    ($row:expr) => {{
        let row = $row;
        ScannedBlock {
            number: to_u64("chain_block.number", row.try_get("number")?)?,
            hash: row.try_get("hash")?,
            parent_hash: row.try_get("parent_hash")?,
        }
    }};
}

/// The columns [`decode_deposit!`] reads.
pub(crate) const DEPOSIT_COLUMNS: &str = "id, chain, txid, asset, position, address, sender, \
     amount, block_number, block_hash, state, seen_at, credited_at, reason, updated_at";

/// Reads a `deposit` row of [`DEPOSIT_COLUMNS`] in either dialect.
macro_rules! decode_deposit {
    ($row:expr, $d:ident) => {{
        let row = $row;
        let chain: String = row.try_get("chain")?;
        let amount: String = row.try_get("amount")?;
        let state: String = row.try_get("state")?;
        DepositRow {
            id: row.try_get("id")?,
            chain: chain
                .parse()
                .map_err(|error| crate::corrupt("deposit.chain", error))?,
            txid: row.try_get("txid")?,
            asset: row.try_get("asset")?,
            position: to_u64("deposit.position", row.try_get("position")?)?,
            address: row.try_get("address")?,
            sender: row.try_get("sender")?,
            amount: parse_amount(&amount)?,
            block_number: to_u64("deposit.block_number", row.try_get("block_number")?)?,
            block_hash: row.try_get("block_hash")?,
            state: DepositState::parse(&state)?,
            seen_at: $d::read_time(row, "seen_at")?,
            credited_at: $d::read_time_opt(row, "credited_at")?,
            reason: row.try_get("reason")?,
            updated_at: $d::read_time_opt(row, "updated_at")?,
        }
    }};
}

pub(crate) use decode_deposit;

/// The outbox event telling of deposit `row` (docs/webhooks.md), with the reference its
/// address was issued for (none for an address no longer on record).
pub(crate) fn deposit_event(
    kind: &str,
    row: &DepositRow,
    reference: Option<&str>,
    now: DateTime<Utc>,
) -> crate::EventInsert {
    crate::EventInsert {
        kind: kind.to_string(),
        subject: format!("deposit:{}", row.id),
        payload: serde_json::json!({
            "id": row.id,
            "chain": row.chain.as_str(),
            "asset": row.asset,
            "amount_base_units": amount_text(&row.amount),
            "address": row.address,
            "reference": reference,
            "sender": row.sender,
            "txid": row.txid,
            "position": row.position,
            "block_number": row.block_number,
            "block_hash": row.block_hash,
            "state": row.state.as_str(),
        }),
        now,
    }
}

/// Appends `$kind` events for the deposit rows `$rows` of `$chain` on `$conn` (dialect `$d`),
/// each with its address's reference.
macro_rules! append_deposit_events {
    ($conn:expr, $d:ident, $chain:expr, $rows:expr, $kind:expr, $now:expr) => {{
        let rows: &[DepositRow] = $rows;
        let mut references: std::collections::HashMap<String, String> =
            std::collections::HashMap::new();
        for chunk in rows.chunks(500) {
            let mut lookup = QueryBuilder::<$d::Db>::new(
                "select address, reference from deposit_address where chain = ",
            );
            lookup.push_bind($chain.as_str());
            lookup.push(" and address in (");
            let mut separated = lookup.separated(", ");
            for row in chunk {
                separated.push_bind(row.address.clone());
            }
            lookup.push(")");
            for found in lookup.build().fetch_all(&mut *$conn).await? {
                references.insert(found.try_get("address")?, found.try_get("reference")?);
            }
        }
        let events: Vec<crate::EventInsert> = rows
            .iter()
            .map(|row| {
                deposit_event(
                    $kind,
                    row,
                    references.get(&row.address).map(String::as_str),
                    $now,
                )
            })
            .collect();
        $d::outbox::append_many_on(&mut *$conn, &events).await?;
    }};
}

/// Blocks kept per chain behind the newest one: deeper than any confirmation policy, so a
/// reorg's fork point is always found among them. Older rows are pruned as scanning goes on.
pub const SCAN_BLOCKS_KEPT: u64 = 2_048;

/// The most blocks one commit takes.
pub const SCAN_COMMIT_BLOCKS_MAX: usize = 2_000;

/// The most deposits one commit of several blocks takes; a scanner that finds more shrinks
/// its range. A commit of a single block may hold up to [`SCAN_BLOCK_DEPOSITS_MAX`], so no
/// block can ever hold the cursor back.
pub const SCAN_COMMIT_DEPOSITS_MAX: usize = 10_000;

/// The most deposits a single block's commit takes: more outputs than a 4 MB Bitcoin block
/// can hold (about 130,000 of 31 bytes), and far more transfers than an Ethereum or TRON block.
pub const SCAN_BLOCK_DEPOSITS_MAX: usize = 200_000;

/// The longest `deposit.reason`.
pub const DEPOSIT_REASON_LEN_MAX: usize = 200;

/// A block as scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedBlock {
    pub number: u64,
    pub hash: String,
    pub parent_hash: String,
}

/// A deposit found in a scanned block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositInsert {
    pub txid: String,
    /// `native`, or the token's contract address.
    pub asset: String,
    /// The index of a token transfer's log within its transaction, the output index on
    /// Bitcoin, 0 for a native payment.
    pub position: u64,
    pub address: String,
    pub sender: Option<String>,
    pub amount: Amount,
    pub block_number: u64,
    pub block_hash: String,
    /// Why it will never be credited (`zero value`, `dust`, `internal`), stored `ignored`;
    /// None for a deposit to credit. Only an ignored deposit may be of zero.
    pub ignored: Option<String>,
}

/// Where a deposit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepositState {
    /// Seen in a block, not yet deep enough to credit.
    Pending,
    /// Deep enough by the chain's policy: the customer's balance may count it.
    Credited,
    /// Its block was reorganised away before it was credited.
    Orphaned,
    /// Its block was reorganised away after it was credited: a person must look.
    Reversed,
    /// Seen and kept for the record, never credited (the row's `reason` says why).
    Ignored,
}

impl DepositState {
    pub fn as_str(self) -> &'static str {
        match self {
            DepositState::Pending => "pending",
            DepositState::Credited => "credited",
            DepositState::Orphaned => "orphaned",
            DepositState::Reversed => "reversed",
            DepositState::Ignored => "ignored",
        }
    }

    /// Every state, for listings and their filters.
    pub const ALL: [DepositState; 5] = [
        DepositState::Pending,
        DepositState::Credited,
        DepositState::Orphaned,
        DepositState::Reversed,
        DepositState::Ignored,
    ];

    pub(crate) fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "pending" => DepositState::Pending,
            "credited" => DepositState::Credited,
            "orphaned" => DepositState::Orphaned,
            "reversed" => DepositState::Reversed,
            "ignored" => DepositState::Ignored,
            other => return Err(crate::corrupt("deposit.state", other)),
        })
    }
}

/// A stored deposit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositRow {
    pub id: i64,
    pub chain: Chain,
    pub txid: String,
    pub asset: String,
    pub position: u64,
    pub address: String,
    pub sender: Option<String>,
    pub amount: Amount,
    pub block_number: u64,
    pub block_hash: String,
    pub state: DepositState,
    pub seen_at: DateTime<Utc>,
    pub credited_at: Option<DateTime<Utc>>,
    /// Why an ignored deposit is not credited.
    pub reason: Option<String>,
    /// When its state last changed after it was first seen.
    pub updated_at: Option<DateTime<Utc>>,
}

/// What a rollback undid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollback {
    pub blocks: u64,
    /// Pending deposits whose block is gone.
    pub orphaned: u64,
    /// Credited deposits whose block is gone: each one needs a person.
    pub reversed: u64,
}

fn text(what: &str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() || value.len() > 100 {
        return Err(StoreError::Invalid(format!("{what} is 1 to 100 bytes")));
    }
    Ok(())
}

pub(crate) fn to_i64(what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid(format!("{what} {value} is out of range")))
}

pub(crate) fn to_u64(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| crate::corrupt(what, value))
}

pub(crate) fn amount_text(amount: &Amount) -> String {
    amount.base_units().to_string()
}

pub(crate) fn parse_amount(text: &str) -> Result<Amount, StoreError> {
    Amount::parse_decimal(text, 0).map_err(|error| crate::corrupt("deposit.amount", error))
}

/// The batch is one chain of blocks, each deposit in one of them under the same hash.
fn validate_batch(blocks: &[ScannedBlock], deposits: &[DepositInsert]) -> Result<(), StoreError> {
    if blocks.is_empty() {
        return Err(StoreError::Invalid("a scan commit needs blocks".into()));
    }
    let deposits_max = if blocks.len() == 1 {
        SCAN_BLOCK_DEPOSITS_MAX
    } else {
        SCAN_COMMIT_DEPOSITS_MAX
    };
    if blocks.len() > SCAN_COMMIT_BLOCKS_MAX || deposits.len() > deposits_max {
        return Err(StoreError::Invalid(format!(
            "a scan commit takes at most {SCAN_COMMIT_BLOCKS_MAX} blocks and \
             {SCAN_COMMIT_DEPOSITS_MAX} deposits ({SCAN_BLOCK_DEPOSITS_MAX} in a single block)"
        )));
    }
    for block in blocks {
        to_i64("block number", block.number)?;
        text("a block hash", &block.hash)?;
        text("a parent hash", &block.parent_hash)?;
    }
    for pair in blocks.windows(2) {
        if pair[1].number != pair[0].number + 1 || pair[1].parent_hash != pair[0].hash {
            return Err(StoreError::Invalid(format!(
                "block {} does not follow block {}",
                pair[1].number, pair[0].number
            )));
        }
    }
    let first = blocks[0].number;
    for deposit in deposits {
        text("a txid", &deposit.txid)?;
        text("an asset", &deposit.asset)?;
        text("an address", &deposit.address)?;
        if let Some(sender) = &deposit.sender {
            text("a sender", sender)?;
        }
        to_i64("a position", deposit.position)?;
        match &deposit.ignored {
            None if deposit.amount.is_zero() => {
                return Err(StoreError::Invalid(format!(
                    "deposit {} is of zero and not marked ignored",
                    deposit.txid
                )));
            }
            Some(reason) if reason.is_empty() || reason.len() > DEPOSIT_REASON_LEN_MAX => {
                return Err(StoreError::Invalid(format!(
                    "the reason deposit {} is ignored is 1 to {DEPOSIT_REASON_LEN_MAX} bytes",
                    deposit.txid
                )));
            }
            _ => {}
        }
        let block = deposit
            .block_number
            .checked_sub(first)
            .and_then(|offset| blocks.get(usize::try_from(offset).ok()?));
        if block.is_none_or(|block| block.hash != deposit.block_hash) {
            return Err(StoreError::Invalid(format!(
                "deposit {} is not in a block of the batch",
                deposit.txid
            )));
        }
    }
    Ok(())
}

impl Store {
    /// The newest scanned block of `chain`: where scanning goes on from.
    pub async fn scan_head(&self, chain: Chain) -> Result<Option<ScannedBlock>, StoreError> {
        self.scan_block_at(chain, None).await
    }

    /// The stored block `number` of `chain`, if it is among the kept ones.
    pub async fn scan_block(
        &self,
        chain: Chain,
        number: u64,
    ) -> Result<Option<ScannedBlock>, StoreError> {
        let number = to_i64("block number", number)?;
        self.scan_block_at(chain, Some(number)).await
    }

    /// Block `number`, or the newest with None.
    async fn scan_block_at(
        &self,
        chain: Chain,
        number: Option<i64>,
    ) -> Result<Option<ScannedBlock>, StoreError> {
        on_pool!(self, |pool, _d| {
            let row = sqlx::query(
                "select number, hash, parent_hash from chain_block
                 where chain = $1 and ($2 is null or number = $2)
                 order by number desc limit 1",
            )
            .bind(chain.as_str())
            .bind(number)
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                Some(row) => Some(decode_block!(&row)),
                None => None,
            })
        })
    }

    /// Appends `blocks` (consecutive and chained) and the `deposits` in them, in one
    /// transaction. `Stale` when the first block does not follow the newest stored one (its
    /// number or its parent hash): the chain moved under the scanner, or another scanner
    /// committed first. A deposit seen before is kept as it is, unless it was orphaned by a
    /// reorg: then it is pending again, in its new block.
    pub async fn scan_commit(
        &self,
        chain: Chain,
        blocks: &[ScannedBlock],
        deposits: &[DepositInsert],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        validate_batch(blocks, deposits)?;
        in_write_tx!(self, |store, conn, d| {
            // One committer per chain at a time; the check below is then a true
            // compare-and-set.
            d::lock_chain_scan(&mut *conn, chain).await?;
            let newest = sqlx::query(
                "select number, hash, parent_hash from chain_block
                 where chain = $1 order by number desc limit 1",
            )
            .bind(chain.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            let first = &blocks[0];
            if let Some(newest) = newest {
                let newest = decode_block!(&newest);
                if newest.number + 1 != first.number || newest.hash != first.parent_hash {
                    return Err(StoreError::Stale(format!(
                        "block {} does not follow the stored block {} {}",
                        first.number, newest.number, newest.hash
                    )));
                }
            }
            let mut insert = QueryBuilder::<d::Db>::new(
                "insert into chain_block (chain, number, hash, parent_hash, scanned_at) ",
            );
            insert.push_values(blocks, |mut row, block| {
                row.push_bind(chain.as_str())
                    .push_bind(block.number as i64)
                    .push_bind(&block.hash)
                    .push_bind(&block.parent_hash)
                    .push_bind(d::time(now));
            });
            insert.build().execute(&mut *conn).await?;
            for chunk in deposits.chunks(1_000) {
                let mut insert = QueryBuilder::<d::Db>::new(
                    "insert into deposit (chain, txid, asset, position, address, sender, amount,
                                          block_number, block_hash, state, seen_at, reason) ",
                );
                // Numbers were range-checked by `validate_batch`.
                insert.push_values(chunk, |mut row, deposit| {
                    let state = if deposit.ignored.is_some() {
                        "ignored"
                    } else {
                        "pending"
                    };
                    row.push_bind(chain.as_str())
                        .push_bind(&deposit.txid)
                        .push_bind(&deposit.asset)
                        .push_bind(deposit.position as i64)
                        .push_bind(&deposit.address)
                        .push_bind(&deposit.sender)
                        .push_bind(amount_text(&deposit.amount))
                        .push_bind(deposit.block_number as i64)
                        .push_bind(&deposit.block_hash)
                        .push_bind(state)
                        .push_bind(d::time(now))
                        .push_bind(&deposit.ignored);
                });
                // Seen again after a reorg: every field comes from the block it is in now, so
                // a re-mined transaction whose transfers changed can neither keep an old
                // address or amount nor move a credit (only never-credited rows are revived).
                insert.push(
                    " on conflict (chain, txid, asset, position) do update
                      set address = excluded.address, sender = excluded.sender,
                          amount = excluded.amount, block_number = excluded.block_number,
                          block_hash = excluded.block_hash, state = excluded.state,
                          reason = excluded.reason, seen_at = excluded.seen_at,
                          updated_at = excluded.seen_at
                      where deposit.state in ('orphaned', 'ignored')",
                );
                insert.push(format!(" returning {DEPOSIT_COLUMNS}"));
                let mut detected = Vec::new();
                for row in insert.build().fetch_all(&mut *conn).await? {
                    let row = decode_deposit!(&row, d);
                    // New, or revived from an orphaned block: the backend hears of it.
                    if row.state == DepositState::Pending {
                        detected.push(row);
                    }
                }
                append_deposit_events!(conn, d, chain, &detected, "deposit.detected", now);
            }
            let newest = blocks[blocks.len() - 1].number;
            sqlx::query("delete from chain_block where chain = $1 and number < $2")
                .bind(chain.as_str())
                .bind(newest.saturating_sub(SCAN_BLOCKS_KEPT) as i64)
                .execute(&mut *conn)
                .await?;
        });
        Ok(())
    }

    /// Cuts the stored chain of `chain` back to `keep_through` after a reorg: later blocks
    /// are forgotten, their pending deposits orphaned and their credited ones reversed.
    /// Their ignored ones are orphaned too, keeping their reason and telling nobody (no
    /// event was ever sent of them): their coins are no longer on the chain, and the
    /// ledger, which counts an ignored transfer's value as held, must stop counting them.
    /// Mined again, such a row is revived as ignored by the next commit.
    pub async fn scan_rollback(
        &self,
        chain: Chain,
        keep_through: u64,
        now: DateTime<Utc>,
    ) -> Result<Rollback, StoreError> {
        let keep_through = to_i64("block number", keep_through)?;
        in_write_tx!(self, |store, conn, d| {
            d::lock_chain_scan(&mut *conn, chain).await?;
            let blocks = sqlx::query("delete from chain_block where chain = $1 and number > $2")
                .bind(chain.as_str())
                .bind(keep_through)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            let mut moved = [0u64; 3];
            let sql = format!(
                "update deposit set state = $4, updated_at = $5
                 where chain = $1 and block_number > $2 and state = $3
                 returning {DEPOSIT_COLUMNS}"
            );
            for (slot, (from, to, kind)) in [
                ("pending", "orphaned", Some("deposit.orphaned")),
                ("credited", "reversed", Some("deposit.reversed")),
                ("ignored", "orphaned", None),
            ]
            .into_iter()
            .enumerate()
            {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(chain.as_str())
                    .bind(keep_through)
                    .bind(from)
                    .bind(to)
                    .bind(d::time(now))
                    .fetch_all(&mut *conn)
                    .await?;
                let mut changed = Vec::with_capacity(rows.len());
                for row in &rows {
                    changed.push(decode_deposit!(row, d));
                }
                moved[slot] = changed.len() as u64;
                if let Some(kind) = kind {
                    append_deposit_events!(conn, d, chain, &changed, kind, now);
                }
            }
            Ok(Rollback {
                blocks,
                orphaned: moved[0],
                reversed: moved[1],
            })
        })
    }

    /// Credits the pending deposits of `chain` in blocks up to `through`; returns how many.
    pub async fn deposits_credit(
        &self,
        chain: Chain,
        through: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let through = to_i64("block number", through)?;
        let sql = format!(
            "update deposit set state = 'credited', credited_at = $3, updated_at = $3
             where chain = $1 and state = 'pending' and block_number <= $2
             returning {DEPOSIT_COLUMNS}"
        );
        in_write_tx!(self, |store, conn, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(chain.as_str())
                .bind(through)
                .bind(d::time(now))
                .fetch_all(&mut *conn)
                .await?;
            let mut credited = Vec::with_capacity(rows.len());
            for row in &rows {
                credited.push(decode_deposit!(row, d));
            }
            // Credited, with its event in the same transaction.
            append_deposit_events!(conn, d, chain, &credited, "deposit.confirmed", now);
            Ok(credited.len() as u64)
        })
    }

    /// Deposits of `chain`, newest first, in `state` if given.
    pub async fn deposits_list(
        &self,
        chain: Chain,
        state: Option<DepositState>,
        limit: u32,
    ) -> Result<Vec<DepositRow>, StoreError> {
        if limit == 0 || limit > domain::limits::LIST_LIMIT_MAX {
            return Err(StoreError::Invalid(format!(
                "limit must be 1 to {}",
                domain::limits::LIST_LIMIT_MAX
            )));
        }
        let sql = format!(
            "select {DEPOSIT_COLUMNS} from deposit where chain = $1 and ($2 is null or state = $2)
             order by id desc limit $3"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(chain.as_str())
                .bind(state.map(DepositState::as_str))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut deposits = Vec::with_capacity(rows.len());
            for row in &rows {
                deposits.push(decode_deposit!(row, d));
            }
            Ok(deposits)
        })
    }
}
