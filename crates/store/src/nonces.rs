//! Nonces of sending addresses, each tied to the payout it pays: never two transactions with
//! one nonce, never two nonces for one payout, no gap left behind by a process that reserved a
//! nonce and died before signing with it, and every transaction a nonce ever had kept until the
//! nonce is settled by which of them was mined.
//!
//! - [`Store::nonce_reserve`] hands out, in one transaction under the address's counter lock,
//!   the nonce the payout holds already (reserved or bound: a job retried after a crash finds
//!   and finishes the same transaction), else the lowest expired unbound reservation at or
//!   above the node's pending count (a gap to fill), else the next fresh nonce (at least the
//!   node's pending count, so transactions sent from elsewhere are respected).
//! - [`Store::nonce_bind`] records the first transaction signed with a reservation (only by its
//!   holder, for its payout, before anyone took it over); [`Store::nonce_replace`] adds a
//!   replacement (same nonce, higher fees) and keeps the earlier ones; [`Store::nonce_settle`]
//!   records which of them was mined, or that the nonce went to a transaction none of ours.
//! - [`Store::nonce_release`] gives back a reservation that will not be signed with;
//!   [`Store::nonce_unbind`] frees a nonce whose only transaction the node refused for good.
//!
//! Both dialects run the same SQL (`$n` placeholders, which sqlx's SQLite driver accepts as
//! well), through [`with_dialect!`]: only the time encoding, the write transaction and the
//! counter's lock differ.

use chrono::{DateTime, Utc};
use domain::Chain;
use sqlx::Row;

use crate::{Store, StoreError};

/// The most transactions one nonce keeps: the first and up to 15 replacements. A nonce that
/// needs more has a fee problem for a person, not for another bump.
pub const NONCE_TXS_MAX: usize = 16;

/// The most unsettled nonces [`Store::nonce_unsettled`] returns at once (the lowest first).
pub const NONCES_UNSETTLED_MAX: usize = 256;

/// The largest signed transaction kept (a node's own limit is 128 KiB).
pub const RAW_TX_BYTES_MAX: usize = 128 * 1024;

/// Runs `$body` on either dialect. The body is written once and expanded once per dialect;
/// inside it `$db` is the sqlx database, `$time` encodes a time the dialect's way (timestamptz
/// on Postgres, integer milliseconds on SQLite), `$row_time` decodes one, and `$counter_lock`
/// reads the address's counter under its lock. The lock is the one real difference: Postgres
/// locks the counter row `for update` (other addresses go on in parallel); SQLite has no row
/// locks, and its `begin immediate` (`begin_write`) holds the database's write lock already.
macro_rules! with_dialect {
    ($store:expr, |$db:ident, $dialect:ident, $time:ident, $row_time:ident, $counter_lock:ident| $body:expr) => {
        match $store {
            Store::Postgres($dialect) => {
                #[allow(dead_code, reason = "not every body names the database")]
                type $db = sqlx::Postgres;
                #[allow(unused_variables, reason = "not every body writes a time")]
                let $time = |at: DateTime<Utc>| at;
                #[allow(unused_variables, reason = "not every body reads a time")]
                let $row_time = |row: &sqlx::postgres::PgRow,
                                 column: &str|
                 -> Result<DateTime<Utc>, StoreError> {
                    Ok(row.try_get::<DateTime<Utc>, _>(column)?)
                };
                #[allow(unused_variables, reason = "only reservations lock the counter")]
                let $counter_lock = "select next_nonce from nonce_counter
                     where chain = $1 and address = $2 for update";
                $body
            }
            Store::Sqlite($dialect) => {
                #[allow(dead_code, reason = "not every body names the database")]
                type $db = sqlx::Sqlite;
                #[allow(unused_variables, reason = "not every body writes a time")]
                let $time = |at: DateTime<Utc>| crate::sqlite::to_millis(at);
                #[allow(unused_variables, reason = "not every body reads a time")]
                let $row_time = |row: &sqlx::sqlite::SqliteRow,
                                 column: &str|
                 -> Result<DateTime<Utc>, StoreError> {
                    crate::sqlite::from_millis(row.try_get::<i64, _>(column)?)
                };
                #[allow(unused_variables, reason = "only reservations lock the counter")]
                let $counter_lock =
                    "select next_nonce from nonce_counter where chain = $1 and address = $2";
                $body
            }
        }
    };
}

/// The columns of a `nonce_use` row as [`held!`] reads them.
const HELD_COLUMNS: &str = "address, nonce, payout, holder, reserved_until, outcome, mined_txid, \
                            settled_at";

/// The columns of a `nonce_tx` row as [`tx!`] reads them.
const TX_COLUMNS: &str = "nonce, txid, raw, max_fee_per_gas, max_priority_fee_per_gas, created_at";

/// A [`NonceHeld`] (without its transactions) from a row of [`HELD_COLUMNS`].
macro_rules! held {
    ($row:expr, $row_time:ident) => {{
        let row = $row;
        let nonce: i64 = row.try_get("nonce")?;
        let payout: Option<String> = row.try_get("payout")?;
        let outcome: Option<String> = row.try_get("outcome")?;
        let mined_txid: Option<String> = row.try_get("mined_txid")?;
        let settlement = match (outcome.as_deref(), mined_txid) {
            (None, _) => None,
            (Some("mined"), Some(txid)) => Some(NonceSettlement::Mined { txid }),
            (Some("foreign"), None) => Some(NonceSettlement::Foreign),
            (Some(other), _) => return Err(crate::corrupt("nonce_use.outcome", other)),
        };
        // The migration's check: settled_at is set exactly when the outcome is.
        let settled_at = match settlement {
            Some(_) => Some($row_time(&row, "settled_at")?),
            None => None,
        };
        NonceHeld {
            address: row.try_get("address")?,
            nonce: from_i64(nonce)?,
            payout: payout.ok_or_else(|| crate::corrupt("nonce_use.payout", "null"))?,
            holder: row.try_get("holder")?,
            reserved_until: $row_time(&row, "reserved_until")?,
            txs: Vec::new(),
            settlement,
            settled_at,
        }
    }};
}

/// A `(nonce, NonceTx)` from a row of [`TX_COLUMNS`].
macro_rules! tx {
    ($row:expr, $row_time:ident) => {{
        let row = $row;
        let max_fee: Option<i64> = row.try_get("max_fee_per_gas")?;
        let priority: Option<i64> = row.try_get("max_priority_fee_per_gas")?;
        let fees = match (max_fee, priority) {
            (Some(max_fee), Some(priority)) => Some(NonceFees {
                max_fee_per_gas: u128::try_from(max_fee)
                    .map_err(|_| crate::corrupt("nonce_tx.max_fee_per_gas", max_fee))?,
                max_priority_fee_per_gas: u128::try_from(priority)
                    .map_err(|_| crate::corrupt("nonce_tx.max_priority_fee_per_gas", priority))?,
            }),
            _ => None,
        };
        let nonce: i64 = row.try_get("nonce")?;
        (
            from_i64(nonce)?,
            NonceTx {
                txid: row.try_get("txid")?,
                raw: row.try_get("raw")?,
                fees,
                created_at: $row_time(&row, "created_at")?,
            },
        )
    }};
}

/// A request for the nonce of `payout`, sent from `address` on `chain`.
#[derive(Debug, Clone)]
pub struct NonceReserve {
    pub chain: Chain,
    /// The sending address in its canonical form.
    pub address: String,
    /// What the nonce pays (a withdrawal id): one nonce per payout, whoever asks.
    pub payout: String,
    /// The node's count of the address's transactions, pending ones included.
    pub node_pending: u64,
    /// Who reserves (a worker id and incarnation): only it may bind or release.
    pub holder: String,
    /// Until when the reservation holds without a bound transaction.
    pub lease_until: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Both fee caps a transaction was signed with, in wei per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceFees {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// A signed transaction to keep under a nonce.
#[derive(Clone, PartialEq, Eq)]
pub struct NonceTxNew {
    pub txid: String,
    pub raw: Vec<u8>,
    pub fees: Option<NonceFees>,
}

impl std::fmt::Debug for NonceTxNew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceTxNew")
            .field("txid", &self.txid)
            .field("bytes", &self.raw.len())
            .field("fees", &self.fees)
            .finish()
    }
}

/// A signed transaction kept under a nonce: its first, or one of its replacements.
#[derive(Clone, PartialEq, Eq)]
pub struct NonceTx {
    pub txid: String,
    pub raw: Vec<u8>,
    pub fees: Option<NonceFees>,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for NonceTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceTx")
            .field("txid", &self.txid)
            .field("bytes", &self.raw.len())
            .field("fees", &self.fees)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// How a nonce ended: consumed by one of its own transactions, or by one that is none of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonceSettlement {
    Mined {
        txid: String,
    },
    /// A transaction none of ours consumed the nonce: its payout needs a person.
    Foreign,
}

/// A nonce and what it holds: reserved (no transaction yet) or bound (its transactions, the
/// first one first, the latest last), and settled once it is known how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceHeld {
    pub address: String,
    pub nonce: u64,
    pub payout: String,
    pub holder: String,
    pub reserved_until: DateTime<Utc>,
    pub txs: Vec<NonceTx>,
    pub settlement: Option<NonceSettlement>,
    pub settled_at: Option<DateTime<Utc>>,
}

impl NonceHeld {
    /// Whether a transaction was signed with the nonce and kept.
    pub fn is_bound(&self) -> bool {
        !self.txs.is_empty()
    }

    /// The transaction to send: the latest replacement, or the first.
    pub fn latest(&self) -> Option<&NonceTx> {
        self.txs.last()
    }
}

/// Binds a reservation to the first transaction signed with it. Call it before broadcasting.
#[derive(Debug, Clone)]
pub struct NonceBind {
    pub chain: Chain,
    pub address: String,
    pub nonce: u64,
    pub holder: String,
    pub payout: String,
    pub tx: NonceTxNew,
    pub now: DateTime<Utc>,
}

/// Adds a replacement (same nonce, higher fees) to a bound, unsettled nonce whose latest
/// transaction is `replaces`. Call it before broadcasting the replacement.
#[derive(Debug, Clone)]
pub struct NonceReplace {
    pub chain: Chain,
    pub address: String,
    pub nonce: u64,
    pub replaces: String,
    pub tx: NonceTxNew,
    pub now: DateTime<Utc>,
}

/// Records how a bound nonce ended, once: `Mined` names one of its own transactions.
#[derive(Debug, Clone)]
pub struct NonceSettle {
    pub chain: Chain,
    pub address: String,
    pub nonce: u64,
    pub settlement: NonceSettlement,
    pub now: DateTime<Utc>,
}

/// The bound, unsettled nonces of an address from `from_nonce` up, lowest first, at most
/// `limit` (clamped to [`NONCES_UNSETTLED_MAX`]).
#[derive(Debug, Clone)]
pub struct NonceUnsettled {
    pub chain: Chain,
    pub address: String,
    /// The lowest nonce wanted: 0 for all; the node's mined count for those still to mine.
    pub from_nonce: u64,
    pub limit: usize,
}

fn validate(address: &str, holder: &str) -> Result<(), StoreError> {
    if address.is_empty() || address.len() > 100 {
        return Err(StoreError::Invalid("an address is 1 to 100 bytes".into()));
    }
    if holder.is_empty() || holder.len() > 200 {
        return Err(StoreError::Invalid("a holder is 1 to 200 bytes".into()));
    }
    Ok(())
}

fn validate_payout(payout: &str) -> Result<(), StoreError> {
    if payout.is_empty() || payout.len() > 200 {
        return Err(StoreError::Invalid("a payout key is 1 to 200 bytes".into()));
    }
    Ok(())
}

fn validate_txid(txid: &str) -> Result<(), StoreError> {
    if txid.is_empty() || txid.len() > 100 {
        return Err(StoreError::Invalid("a txid is 1 to 100 bytes".into()));
    }
    Ok(())
}

/// The transaction's fields as stored: its txid and bytes checked, its fees as integers.
fn validate_tx(tx: &NonceTxNew) -> Result<(Option<i64>, Option<i64>), StoreError> {
    validate_txid(&tx.txid)?;
    if tx.raw.is_empty() || tx.raw.len() > RAW_TX_BYTES_MAX {
        return Err(StoreError::Invalid(format!(
            "a signed transaction is 1 to {RAW_TX_BYTES_MAX} bytes"
        )));
    }
    let fee = |fee: u128| {
        i64::try_from(fee).map_err(|_| StoreError::Invalid(format!("a fee of {fee} is too high")))
    };
    Ok(match tx.fees {
        Some(fees) => (
            Some(fee(fees.max_fee_per_gas)?),
            Some(fee(fees.max_priority_fee_per_gas)?),
        ),
        None => (None, None),
    })
}

pub(crate) fn to_i64(nonce: u64) -> Result<i64, StoreError> {
    i64::try_from(nonce).map_err(|_| StoreError::Invalid(format!("nonce {nonce} is out of range")))
}

fn from_i64(nonce: i64) -> Result<u64, StoreError> {
    u64::try_from(nonce).map_err(|_| crate::corrupt("nonce_use.nonce", nonce))
}

/// A unique violation as the caller's error; anything else as it is.
fn unique_as(error: sqlx::Error, refused: impl FnOnce() -> StoreError) -> StoreError {
    match &error {
        sqlx::Error::Database(database) if database.is_unique_violation() => refused(),
        _ => error.into(),
    }
}

fn stale(address: &str, nonce: u64, why: &str) -> StoreError {
    StoreError::Stale(format!("nonce {nonce} of {address}: {why}"))
}

impl Store {
    /// The nonce of `reserve.payout`: the one it holds already (reserved or bound; an
    /// unbound one is taken over by `reserve.holder`, whose lease starts again), else a gap
    /// to fill, else a fresh one. A payout holding a nonce of another address is a
    /// `Conflict`.
    pub async fn nonce_reserve(&self, reserve: &NonceReserve) -> Result<NonceHeld, StoreError> {
        validate(&reserve.address, &reserve.holder)?;
        validate_payout(&reserve.payout)?;
        let pending = to_i64(reserve.node_pending)?;
        if reserve.lease_until <= reserve.now {
            return Err(StoreError::Invalid(
                "a reservation must last a while".into(),
            ));
        }
        let chain = reserve.chain.as_str();
        let address = reserve.address.as_str();
        with_dialect!(self, |Db, dialect, time, row_time, counter_lock| {
            let mut transaction = dialect.begin_write().await?;
            sqlx::query::<Db>(
                "insert into nonce_counter (chain, address, next_nonce) values ($1, $2, $3)
                 on conflict (chain, address) do nothing",
            )
            .bind(chain)
            .bind(address)
            .bind(pending)
            .execute(&mut *transaction)
            .await?;
            let next: i64 = sqlx::query_scalar::<Db, i64>(counter_lock)
                .bind(chain)
                .bind(address)
                .fetch_one(&mut *transaction)
                .await?;
            // Unbound reservations below the node's count are moot: that nonce is used already.
            sqlx::query::<Db>(
                "delete from nonce_use
                 where chain = $1 and address = $2 and txid is null and nonce < $3",
            )
            .bind(chain)
            .bind(address)
            .bind(pending)
            .execute(&mut *transaction)
            .await?;
            // The payout's own nonce first: a retry finishes what an earlier try began.
            let own = sqlx::query::<Db>(
                "select address, nonce, txid from nonce_use where chain = $1 and payout = $2",
            )
            .bind(chain)
            .bind(&reserve.payout)
            .fetch_optional(&mut *transaction)
            .await?;
            let nonce = if let Some(own) = own {
                let own_address: String = own.try_get("address")?;
                let nonce: i64 = own.try_get("nonce")?;
                if own_address != address {
                    return Err(StoreError::Conflict(format!(
                        "payout {} holds nonce {nonce} of {own_address}, not of {address}",
                        reserve.payout
                    )));
                }
                sqlx::query::<Db>(
                    "update nonce_use set holder = $4, reserved_until = $5
                     where chain = $1 and address = $2 and nonce = $3 and txid is null",
                )
                .bind(chain)
                .bind(address)
                .bind(nonce)
                .bind(&reserve.holder)
                .bind(time(reserve.lease_until))
                .execute(&mut *transaction)
                .await?;
                nonce
            } else {
                // A gap to fill: a reservation nobody bound and whose holder's lease ran out.
                let reused = sqlx::query::<Db>(
                    "update nonce_use set holder = $4, reserved_until = $5, payout = $7
                     where (chain, address, nonce) = (
                         select chain, address, nonce from nonce_use
                         where chain = $1 and address = $2 and txid is null
                           and reserved_until <= $3 and nonce >= $6
                         order by nonce limit 1)
                     returning nonce",
                )
                .bind(chain)
                .bind(address)
                .bind(time(reserve.now))
                .bind(&reserve.holder)
                .bind(time(reserve.lease_until))
                .bind(pending)
                .bind(&reserve.payout)
                .fetch_optional(&mut *transaction)
                .await?;
                match reused {
                    Some(row) => row.try_get::<i64, _>("nonce")?,
                    None => {
                        let nonce = next.max(pending);
                        sqlx::query::<Db>(
                            "insert into nonce_use
                                 (chain, address, nonce, holder, reserved_until, payout)
                             values ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind(chain)
                        .bind(address)
                        .bind(nonce)
                        .bind(&reserve.holder)
                        .bind(time(reserve.lease_until))
                        .bind(&reserve.payout)
                        .execute(&mut *transaction)
                        .await
                        .map_err(|error| {
                            unique_as(error, || {
                                StoreError::Conflict(format!(
                                    "payout {} holds a nonce already",
                                    reserve.payout
                                ))
                            })
                        })?;
                        sqlx::query::<Db>(
                            "update nonce_counter set next_nonce = $3
                             where chain = $1 and address = $2",
                        )
                        .bind(chain)
                        .bind(address)
                        .bind(nonce + 1)
                        .execute(&mut *transaction)
                        .await?;
                        nonce
                    }
                }
            };
            let row = sqlx::query::<Db>(sqlx::AssertSqlSafe(format!(
                "select {HELD_COLUMNS} from nonce_use
                 where chain = $1 and address = $2 and nonce = $3"
            )))
            .bind(chain)
            .bind(address)
            .bind(nonce)
            .fetch_one(&mut *transaction)
            .await?;
            let mut held = held!(row, row_time);
            let txs = sqlx::query::<Db>(sqlx::AssertSqlSafe(format!(
                "select {TX_COLUMNS} from nonce_tx
                 where chain = $1 and address = $2 and nonce = $3 order by seq"
            )))
            .bind(chain)
            .bind(address)
            .bind(nonce)
            .fetch_all(&mut *transaction)
            .await?;
            for row in txs {
                held.txs.push(tx!(row, row_time).1);
            }
            transaction.commit().await?;
            Ok(held)
        })
    }

    /// Binds reservation `bind.nonce` to the first transaction signed with it, keeping its
    /// bytes. Call it before broadcasting. `Stale` when `bind.holder` no longer holds it for
    /// `bind.payout` (its lease ran out and the nonce went to someone else), or it is bound;
    /// `Conflict` when the txid is kept under another nonce.
    pub async fn nonce_bind(&self, bind: &NonceBind) -> Result<(), StoreError> {
        validate(&bind.address, &bind.holder)?;
        validate_payout(&bind.payout)?;
        let (max_fee, priority) = validate_tx(&bind.tx)?;
        let nonce = to_i64(bind.nonce)?;
        let chain = bind.chain.as_str();
        with_dialect!(self, |Db, dialect, time, row_time, counter_lock| {
            let mut transaction = dialect.begin_write().await?;
            let done = sqlx::query::<Db>(
                "update nonce_use set txid = $5, raw = $6
                 where chain = $1 and address = $2 and nonce = $3 and holder = $4
                   and payout = $7 and txid is null",
            )
            .bind(chain)
            .bind(&bind.address)
            .bind(nonce)
            .bind(&bind.holder)
            .bind(&bind.tx.txid)
            .bind(&bind.tx.raw)
            .bind(&bind.payout)
            .execute(&mut *transaction)
            .await?;
            if done.rows_affected() != 1 {
                return Err(stale(
                    &bind.address,
                    bind.nonce,
                    &format!(
                        "not held by {} for {} (bound, or taken over)",
                        bind.holder, bind.payout
                    ),
                ));
            }
            sqlx::query::<Db>(
                "insert into nonce_tx (chain, address, nonce, seq, txid, raw, max_fee_per_gas,
                     max_priority_fee_per_gas, created_at)
                 values ($1, $2, $3, 0, $4, $5, $6, $7, $8)",
            )
            .bind(chain)
            .bind(&bind.address)
            .bind(nonce)
            .bind(&bind.tx.txid)
            .bind(&bind.tx.raw)
            .bind(max_fee)
            .bind(priority)
            .bind(time(bind.now))
            .execute(&mut *transaction)
            .await
            .map_err(|error| {
                unique_as(error, || {
                    StoreError::Conflict(format!("{} is kept under another nonce", bind.tx.txid))
                })
            })?;
            transaction.commit().await?;
            Ok(())
        })
    }

    /// Gives back a reservation that will not be signed with: the next reservation gets it.
    pub async fn nonce_release(
        &self,
        chain: Chain,
        address: &str,
        nonce: u64,
        holder: &str,
    ) -> Result<(), StoreError> {
        validate(address, holder)?;
        let nonce_i64 = to_i64(nonce)?;
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        let done = with_dialect!(self, |Db, dialect, time, row_time, counter_lock| {
            sqlx::query::<Db>(
                "update nonce_use set reserved_until = $5
                 where chain = $1 and address = $2 and nonce = $3 and holder = $4
                   and txid is null",
            )
            .bind(chain.as_str())
            .bind(address)
            .bind(nonce_i64)
            .bind(holder)
            .bind(time(epoch))
            .execute(&dialect.pool)
            .await?
            .rows_affected()
        });
        if done == 1 {
            Ok(())
        } else {
            Err(stale(
                address,
                nonce,
                &format!("not held by {holder} (bound, or taken over)"),
            ))
        }
    }

    /// Adds a replacement to bound nonce `replace.nonce`, keeping every earlier transaction.
    /// `Stale` when the nonce's latest transaction is not `replace.replaces` (another
    /// replacement came first) or the nonce is settled; `Conflict` when it holds
    /// [`NONCE_TXS_MAX`] transactions already or the txid is kept elsewhere.
    pub async fn nonce_replace(&self, replace: &NonceReplace) -> Result<(), StoreError> {
        validate(&replace.address, "replacement")?;
        validate_txid(&replace.replaces)?;
        let (max_fee, priority) = validate_tx(&replace.tx)?;
        let nonce = to_i64(replace.nonce)?;
        let chain = replace.chain.as_str();
        let address = replace.address.as_str();
        with_dialect!(self, |Db, dialect, time, row_time, counter_lock| {
            let mut transaction = dialect.begin_write().await?;
            let latest = sqlx::query::<Db>(
                "select t.seq, t.txid from nonce_tx t
                 join nonce_use u on u.chain = t.chain and u.address = t.address
                     and u.nonce = t.nonce
                 where t.chain = $1 and t.address = $2 and t.nonce = $3 and u.outcome is null
                 order by t.seq desc limit 1",
            )
            .bind(chain)
            .bind(address)
            .bind(nonce)
            .fetch_optional(&mut *transaction)
            .await?;
            let Some(latest) = latest else {
                return Err(stale(address, replace.nonce, "not bound, or settled"));
            };
            let seq: i64 = latest.try_get("seq")?;
            let txid: String = latest.try_get("txid")?;
            if txid != replace.replaces {
                return Err(stale(
                    address,
                    replace.nonce,
                    &format!("its latest transaction is {txid}, not {}", replace.replaces),
                ));
            }
            if usize::try_from(seq + 1).map_or(true, |count| count >= NONCE_TXS_MAX) {
                return Err(StoreError::Conflict(format!(
                    "nonce {} of {address} holds {NONCE_TXS_MAX} transactions already",
                    replace.nonce
                )));
            }
            // The primary key (chain, address, nonce, seq) makes this a compare-and-set: of
            // two replacements of the same transaction, the second insert fails.
            sqlx::query::<Db>(
                "insert into nonce_tx (chain, address, nonce, seq, txid, raw, max_fee_per_gas,
                     max_priority_fee_per_gas, created_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(chain)
            .bind(address)
            .bind(nonce)
            .bind(seq + 1)
            .bind(&replace.tx.txid)
            .bind(&replace.tx.raw)
            .bind(max_fee)
            .bind(priority)
            .bind(time(replace.now))
            .execute(&mut *transaction)
            .await
            .map_err(|error| {
                unique_as(error, || {
                    stale(
                        address,
                        replace.nonce,
                        "replaced meanwhile, or the txid is kept",
                    )
                })
            })?;
            transaction.commit().await?;
            Ok(())
        })
    }

    /// Records how bound nonce `settle.nonce` ended, once. `Stale` when it is not bound, is
    /// settled already, or `Mined` names a txid that is none of the nonce's transactions.
    pub async fn nonce_settle(&self, settle: &NonceSettle) -> Result<(), StoreError> {
        validate(&settle.address, "settle")?;
        let nonce = to_i64(settle.nonce)?;
        let (outcome, mined_txid) = match &settle.settlement {
            NonceSettlement::Mined { txid } => {
                validate_txid(txid)?;
                ("mined", Some(txid.as_str()))
            }
            NonceSettlement::Foreign => ("foreign", None),
        };
        let done = with_dialect!(self, |Db, dialect, time, row_time, counter_lock| {
            sqlx::query::<Db>(
                "update nonce_use set outcome = $4, mined_txid = $5, settled_at = $6
                 where chain = $1 and address = $2 and nonce = $3
                   and txid is not null and outcome is null
                   and ($4 = 'foreign' or exists (
                       select 1 from nonce_tx t
                       where t.chain = $1 and t.address = $2 and t.nonce = $3 and t.txid = $5))",
            )
            .bind(settle.chain.as_str())
            .bind(&settle.address)
            .bind(nonce)
            .bind(outcome)
            .bind(mined_txid)
            .bind(time(settle.now))
            .execute(&dialect.pool)
            .await?
            .rows_affected()
        });
        if done == 1 {
            Ok(())
        } else {
            Err(stale(
                &settle.address,
                settle.nonce,
                "not bound, settled already, or the txid is none of its transactions",
            ))
        }
    }

    /// Frees bound nonce `nonce` whose only transaction, `txid`, the node refused for good
    /// (it can never be mined): the next reservation gets the nonce, so no gap stays behind.
    /// Only for a definite refusal of bytes that never left otherwise; a nonce with a
    /// replacement, or settled, keeps its transactions (`Stale`).
    pub async fn nonce_unbind(
        &self,
        chain: Chain,
        address: &str,
        nonce: u64,
        txid: &str,
    ) -> Result<(), StoreError> {
        validate(address, "unbind")?;
        let nonce_i64 = to_i64(nonce)?;
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        with_dialect!(self, |Db, dialect, time, row_time, counter_lock| {
            let mut transaction = dialect.begin_write().await?;
            let freed = sqlx::query::<Db>(
                "update nonce_use set txid = null, raw = null, reserved_until = $5
                 where chain = $1 and address = $2 and nonce = $3 and txid = $4
                   and outcome is null
                   and (select count(*) from nonce_tx t
                        where t.chain = $1 and t.address = $2 and t.nonce = $3) = 1",
            )
            .bind(chain.as_str())
            .bind(address)
            .bind(nonce_i64)
            .bind(txid)
            .bind(time(epoch))
            .execute(&mut *transaction)
            .await?;
            if freed.rows_affected() != 1 {
                return Err(stale(
                    address,
                    nonce,
                    &format!("not bound to {txid} alone, or settled"),
                ));
            }
            sqlx::query::<Db>(
                "delete from nonce_tx where chain = $1 and address = $2 and nonce = $3",
            )
            .bind(chain.as_str())
            .bind(address)
            .bind(nonce_i64)
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            Ok(())
        })
    }

    /// The bound nonces of an address that are not settled yet, lowest first, each with all
    /// its transactions: the ones to look for on the chain. Nothing is dropped here; a nonce
    /// leaves this list only when [`Store::nonce_settle`] says how it ended.
    pub async fn nonce_unsettled(
        &self,
        unsettled: &NonceUnsettled,
    ) -> Result<Vec<NonceHeld>, StoreError> {
        validate(&unsettled.address, "unsettled")?;
        let limit = unsettled.limit.clamp(1, NONCES_UNSETTLED_MAX) as i64;
        let chain = unsettled.chain.as_str();
        let address = unsettled.address.as_str();
        with_dialect!(self, |Db, dialect, time, row_time, counter_lock| {
            let rows = sqlx::query::<Db>(sqlx::AssertSqlSafe(format!(
                "select {HELD_COLUMNS} from nonce_use
                 where chain = $1 and address = $2 and txid is not null and outcome is null
                   and nonce >= $4
                 order by nonce limit $3"
            )))
            .bind(chain)
            .bind(address)
            .bind(limit)
            .bind(to_i64(unsettled.from_nonce)?)
            .fetch_all(&dialect.pool)
            .await?;
            let mut held = Vec::with_capacity(rows.len());
            for row in rows {
                held.push(held!(row, row_time));
            }
            let (Some(first), Some(last)) = (held.first(), held.last()) else {
                return Ok(held);
            };
            let txs = sqlx::query::<Db>(sqlx::AssertSqlSafe(format!(
                "select {TX_COLUMNS} from nonce_tx
                 where chain = $1 and address = $2 and nonce between $3 and $4
                 order by nonce, seq"
            )))
            .bind(chain)
            .bind(address)
            .bind(to_i64(first.nonce)?)
            .bind(to_i64(last.nonce)?)
            .fetch_all(&dialect.pool)
            .await?;
            for row in txs {
                let (nonce, tx) = tx!(row, row_time);
                if let Ok(at) = held.binary_search_by_key(&nonce, |held| held.nonce) {
                    held[at].txs.push(tx);
                }
            }
            Ok(held)
        })
    }

    /// The nonce `payout` holds on `chain`, with its transactions and how it ended, if any.
    pub async fn nonce_get(
        &self,
        chain: Chain,
        payout: &str,
    ) -> Result<Option<NonceHeld>, StoreError> {
        validate_payout(payout)?;
        with_dialect!(self, |Db, dialect, time, row_time, counter_lock| {
            let row = sqlx::query::<Db>(sqlx::AssertSqlSafe(format!(
                "select {HELD_COLUMNS} from nonce_use where chain = $1 and payout = $2"
            )))
            .bind(chain.as_str())
            .bind(payout)
            .fetch_optional(&dialect.pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let mut held = held!(row, row_time);
            let txs = sqlx::query::<Db>(sqlx::AssertSqlSafe(format!(
                "select {TX_COLUMNS} from nonce_tx
                 where chain = $1 and address = $2 and nonce = $3 order by seq"
            )))
            .bind(chain.as_str())
            .bind(&held.address)
            .bind(to_i64(held.nonce)?)
            .fetch_all(&dialect.pool)
            .await?;
            for row in txs {
                held.txs.push(tx!(row, row_time).1);
            }
            Ok(Some(held))
        })
    }
}
