//! What operators watch of the money paths, read at each `/metrics` scrape: the hot wallets'
//! balances (written by the withdrawal workers, table `hot_wallet_balance`, migration 0013),
//! the transactions signed for payouts and how many replaced an earlier one, and where the
//! withdrawals' time goes. Every statement is one text for both dialects; the upsert is the
//! same `on conflict … do update` on Postgres and SQLite (3.24 and later).

use chrono::{DateTime, Utc};
use domain::{Chain, WithdrawalState};
use sqlx::Row;

use crate::dialect::{on_pool, on_write};
use crate::{Store, StoreError, corrupt};

/// What a hot wallet held of one asset when its worker last looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotWalletBalance {
    pub chain: Chain,
    /// The catalogue symbol (`USDT`, `ETH`).
    pub asset: String,
    /// The hot wallet's address.
    pub address: String,
    /// Base units, as decimal digits.
    pub units: String,
    pub checked_at: DateTime<Utc>,
}

/// What a chain's payouts have cost in transactions (see [`Store::payout_transaction_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayoutCounts {
    pub chain: Chain,
    /// Transactions signed for payouts.
    pub transactions: i64,
    /// Those beyond each payout's first.
    pub replacements: i64,
    /// Stored transactions sent again because the node no longer knew them.
    pub rebroadcasts: i64,
}

/// The most completed withdrawals [`Store::withdrawal_completion_times`] reads.
pub const COMPLETION_TIMES_MAX: i64 = 10_000;

fn chain_of(text: &str, what: &str) -> Result<Chain, StoreError> {
    text.parse().map_err(|error| corrupt(what, error))
}

impl Store {
    /// Records what a hot wallet holds of `asset` (the last reading wins).
    pub async fn hot_wallet_set(&self, balance: &HotWalletBalance) -> Result<(), StoreError> {
        let well_formed = (1..=20).contains(&balance.asset.len())
            && (1..=100).contains(&balance.address.len())
            && (1..=78).contains(&balance.units.len())
            && balance.units.bytes().all(|byte| byte.is_ascii_digit());
        if !well_formed {
            return Err(StoreError::Invalid(format!(
                "a hot wallet balance needs an asset of 1 to 20 characters, an address of 1 to 100 and base units of 1 to 78 digits: {:?} {:?} {:?}",
                balance.asset, balance.address, balance.units
            )));
        }
        on_write!(self, |conn, d| {
            sqlx::query(
                "insert into hot_wallet_balance (chain, asset, address, units, checked_at)
                 values ($1, $2, $3, $4, $5)
                 on conflict (chain, asset) do update
                 set address = excluded.address, units = excluded.units,
                     checked_at = excluded.checked_at",
            )
            .bind(balance.chain.as_str())
            .bind(&balance.asset)
            .bind(&balance.address)
            .bind(&balance.units)
            .bind(d::time(balance.checked_at))
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    }

    /// Every hot wallet balance recorded, by chain and asset.
    pub async fn hot_wallet_list(&self) -> Result<Vec<HotWalletBalance>, StoreError> {
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select chain, asset, address, units, checked_at from hot_wallet_balance
                 order by chain, asset",
            )
            .fetch_all(pool)
            .await?;
            let mut balances = Vec::with_capacity(rows.len());
            for row in &rows {
                let chain: String = row.try_get("chain")?;
                balances.push(HotWalletBalance {
                    chain: chain_of(&chain, "hot_wallet_balance.chain")?,
                    asset: row.try_get("asset")?,
                    address: row.try_get("address")?,
                    units: row.try_get("units")?,
                    checked_at: d::read_time(row, "checked_at")?,
                });
            }
            Ok(balances)
        })
    }

    /// Counts `n` more stored transactions of `chain` sent again.
    pub async fn payout_rebroadcasts_add(&self, chain: Chain, n: u64) -> Result<(), StoreError> {
        let n = i64::try_from(n).map_err(|_| StoreError::Invalid(format!("{n} rebroadcasts")))?;
        on_write!(self, |conn, _d| {
            sqlx::query(
                "insert into payout_counter (chain, kind, n) values ($1, 'rebroadcast', $2)
                 on conflict (chain, kind) do update set n = payout_counter.n + excluded.n",
            )
            .bind(chain.as_str())
            .bind(n)
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    }

    /// Per chain: the transactions signed for payouts, those beyond each payout's first (an
    /// Ethereum nonce's fee replacements, a Bitcoin payout's RBF bumps, a TRON payout paid
    /// again after its attempt was proven dead), and the rebroadcasts. Chains without any
    /// are left out.
    pub async fn payout_transaction_counts(&self) -> Result<Vec<PayoutCounts>, StoreError> {
        on_pool!(self, |pool, _d| {
            let rows = sqlx::query(
                "select chain, count(*) as transactions,
                        count(*) - count(distinct payout) as replacements, 0 as rebroadcasts
                 from payout_attempt group by chain
                 union all
                 select chain, count(*) as transactions,
                        sum(case when seq > 0 then 1 else 0 end) as replacements,
                        0 as rebroadcasts
                 from nonce_tx group by chain
                 union all
                 select chain, 0 as transactions, 0 as replacements, n as rebroadcasts
                 from payout_counter where kind = 'rebroadcast'",
            )
            .fetch_all(pool)
            .await?;
            let mut counts: Vec<PayoutCounts> = Vec::new();
            for row in &rows {
                let chain: String = row.try_get("chain")?;
                let chain = chain_of(&chain, "payout chain")?;
                let index = match counts.iter().position(|each| each.chain == chain) {
                    Some(index) => index,
                    None => {
                        counts.push(PayoutCounts {
                            chain,
                            transactions: 0,
                            replacements: 0,
                            rebroadcasts: 0,
                        });
                        counts.len() - 1
                    }
                };
                let entry = &mut counts[index];
                entry.transactions += row.try_get::<i64, _>("transactions")?;
                entry.replacements += row.try_get::<i64, _>("replacements")?;
                entry.rebroadcasts += row.try_get::<i64, _>("rebroadcasts")?;
            }
            Ok(counts)
        })
    }

    /// Per chain and unfinished state (`manual_review` included): when the withdrawal that
    /// has been in it longest got there.
    pub async fn withdrawal_state_oldest(
        &self,
    ) -> Result<Vec<(Chain, WithdrawalState, DateTime<Utc>)>, StoreError> {
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select chain, state, min(updated_at) as since from withdrawal
                 where state not in ('completed', 'failed', 'canceled')
                 group by chain, state",
            )
            .fetch_all(pool)
            .await?;
            let mut oldest = Vec::with_capacity(rows.len());
            for row in &rows {
                let chain: String = row.try_get("chain")?;
                let state: String = row.try_get("state")?;
                oldest.push((
                    chain_of(&chain, "withdrawal.chain")?,
                    state
                        .parse()
                        .map_err(|error| corrupt("withdrawal.state", error))?,
                    d::read_time(row, "since")?,
                ));
            }
            Ok(oldest)
        })
    }

    /// Request to `completed`, in milliseconds, of the withdrawals completed since `since`
    /// (the newest [`COMPLETION_TIMES_MAX`]), with their chain.
    pub async fn withdrawal_completion_times(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Chain, i64)>, StoreError> {
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select chain, created_at, updated_at from withdrawal
                 where state = 'completed' and updated_at >= $1
                 order by updated_at desc limit $2",
            )
            .bind(d::time(since))
            .bind(COMPLETION_TIMES_MAX)
            .fetch_all(pool)
            .await?;
            let mut times = Vec::with_capacity(rows.len());
            for row in &rows {
                let chain: String = row.try_get("chain")?;
                let created = d::read_time(row, "created_at")?;
                let completed = d::read_time(row, "updated_at")?;
                times.push((
                    chain_of(&chain, "withdrawal.chain")?,
                    (completed - created).num_milliseconds().max(0),
                ));
            }
            Ok(times)
        })
    }
}
