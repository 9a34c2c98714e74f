//! Consolidation sweeps (`sweep`, migration 0022): one row per sweep of a deposit address into
//! the hot wallet (or, `SweepKind::Cold`, of the hot wallet's excess to the cold address), written before anything is signed, with what it was priced at, so a run
//! repeated after a crash builds exactly the same top-up and sweep (their transactions are
//! kept by the nonce path under `gas:<id>` and `sweep:<id>`, [`SweepRow::top_up_payout`] and
//! [`SweepRow::sweep_payout`]). The ledger reads the address, asset, amount, both txids and
//! both fees here.
//!
//! ```text
//! topping_up ──(top-up mined)──► sweeping ──(sweep mined, success)──► swept
//!      │                            │
//!      └──────────► failed ◄────────┘  (a nonce consumed by none of ours; a reverted sweep)
//! ```
//!
//! On TRON (migration 0023) a token sweep's energy comes by delegation from the staking
//! account (`delegate:<id>` before the sweep, `reclaim:<id>` after it, whatever its end:
//! [`Store::sweep_reclaims`] lists the sweeps whose energy is still lent) or by TRX topped up
//! and burned; the row keeps which, each transaction's txid and fee, and the sweep's receipt.
//!
//! An address has at most one open sweep (`topping_up` or `sweeping`): its ETH pays both its
//! native sweep and its token sweeps' gas. Every move is a compare-and-set on the state. The
//! SQL is written once for both dialects (`$n` placeholders; `d::time` encodes a time).

use chrono::{DateTime, Utc};
use domain::{Amount, Chain};
use sqlx::Row;

use crate::dialect::{in_write_tx, on_pool, on_write};
use crate::scans::{amount_text, parse_amount, to_u64};
use crate::{Store, StoreError};

/// The most rows [`Store::sweep_list`] returns at once.
pub const SWEEPS_LIST_MAX: u32 = 1_000;
/// The longest error a sweep keeps.
pub const SWEEP_ERROR_LEN_MAX: usize = 1_000;

const COLUMNS: &str = "id, chain, kind, address, address_index, asset, amount, destination, \
                       price_per_gas, gas_limit, top_up_from, top_up_amount, top_up_txid, \
                       top_up_fee, sweep_txid, sweep_fee, state, error, created_at, updated_at, \
                       energy_source, delegate_from, delegate_balance, delegate_txid, \
                       delegate_fee, reclaim_txid, reclaim_fee, reclaim_state, energy_used, \
                       bandwidth_used";

/// Where a TRON token sweep's energy comes from (migration 0023).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnergySource {
    /// Lent by the staking account (Stake 2.0), and taken back after the sweep.
    Delegation,
    /// TRX topped up to the deposit address and burned by the sweep.
    Burn,
}

impl EnergySource {
    pub fn as_str(self) -> &'static str {
        match self {
            EnergySource::Delegation => "delegation",
            EnergySource::Burn => "burn",
        }
    }
}

impl std::str::FromStr for EnergySource {
    type Err = StoreError;
    fn from_str(text: &str) -> Result<Self, StoreError> {
        match text {
            "delegation" => Ok(EnergySource::Delegation),
            "burn" => Ok(EnergySource::Burn),
            other => Err(crate::corrupt("sweep.energy_source", other)),
        }
    }
}

/// Whether a delegation's energy is still to be taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReclaimState {
    Pending,
    Done,
}

impl ReclaimState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReclaimState::Pending => "pending",
            ReclaimState::Done => "done",
        }
    }
}

impl std::str::FromStr for ReclaimState {
    type Err = StoreError;
    fn from_str(text: &str) -> Result<Self, StoreError> {
        match text {
            "pending" => Ok(ReclaimState::Pending),
            "done" => Ok(ReclaimState::Done),
            other => Err(crate::corrupt("sweep.reclaim_state", other)),
        }
    }
}

/// A TRON token sweep's energy, as priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepEnergy {
    pub source: EnergySource,
    /// With [`EnergySource::Delegation`]: the staking account and the staked sun it lends.
    pub delegate: Option<(String, u64)>,
}

/// What a row moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SweepKind {
    /// A deposit address's balance into the hot wallet (with a gas top-up first, maybe).
    Sweep,
    /// The hot wallet's balance above its ceiling to the cold address (watch-only).
    Cold,
}

impl SweepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepKind::Sweep => "sweep",
            SweepKind::Cold => "cold",
        }
    }
}

impl std::str::FromStr for SweepKind {
    type Err = StoreError;
    fn from_str(text: &str) -> Result<Self, StoreError> {
        match text {
            "sweep" => Ok(SweepKind::Sweep),
            "cold" => Ok(SweepKind::Cold),
            other => Err(crate::corrupt("sweep.kind", other)),
        }
    }
}

/// Where a sweep is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SweepState {
    /// Its gas top-up is paid (or about to be) and not yet mined.
    ToppingUp,
    /// Its sweep is paid (or about to be) and not yet mined.
    Sweeping,
    /// Its sweep was mined and succeeded.
    Swept,
    /// It needs a person: `error` says why.
    Failed,
}

impl SweepState {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepState::ToppingUp => "topping_up",
            SweepState::Sweeping => "sweeping",
            SweepState::Swept => "swept",
            SweepState::Failed => "failed",
        }
    }

    pub fn is_open(self) -> bool {
        matches!(self, SweepState::ToppingUp | SweepState::Sweeping)
    }

    /// The moves the table allows: forward only, and each open state may fail.
    pub fn can_transition(self, to: SweepState) -> bool {
        matches!(
            (self, to),
            (
                SweepState::ToppingUp,
                SweepState::Sweeping | SweepState::Failed
            ) | (SweepState::Sweeping, SweepState::Swept | SweepState::Failed)
        )
    }
}

impl std::str::FromStr for SweepState {
    type Err = StoreError;
    fn from_str(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "topping_up" => SweepState::ToppingUp,
            "sweeping" => SweepState::Sweeping,
            "swept" => SweepState::Swept,
            "failed" => SweepState::Failed,
            other => return Err(crate::corrupt("sweep.state", other)),
        })
    }
}

/// A sweep to store, priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepInsert {
    pub chain: Chain,
    pub kind: SweepKind,
    /// The deposit address swept, and its key index in the deposit account.
    pub address: String,
    pub address_index: u32,
    /// `native`, or the token's contract.
    pub asset: String,
    pub amount: Amount,
    /// Where it goes (the hot wallet).
    pub destination: String,
    /// What the sweep pays per gas (fee cap and tip alike), and its gas limit.
    pub price_per_gas: u128,
    pub gas_limit: u64,
    /// The gas top-up, for a token sweep whose address lacks the gas: from whom and how much.
    pub top_up: Option<(String, Amount)>,
    /// TRON: where a token sweep's energy comes from (None elsewhere).
    pub energy: Option<SweepEnergy>,
    pub now: DateTime<Utc>,
}

/// A stored sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepRow {
    pub id: i64,
    pub chain: Chain,
    pub kind: SweepKind,
    pub address: String,
    pub address_index: u32,
    pub asset: String,
    pub amount: Amount,
    pub destination: String,
    pub price_per_gas: u128,
    pub gas_limit: u64,
    pub top_up_from: Option<String>,
    pub top_up_amount: Option<Amount>,
    pub top_up_txid: Option<String>,
    pub top_up_fee: Option<Amount>,
    pub sweep_txid: Option<String>,
    pub sweep_fee: Option<Amount>,
    pub state: SweepState,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub energy_source: Option<EnergySource>,
    pub delegate_from: Option<String>,
    pub delegate_balance: Option<u64>,
    pub delegate_txid: Option<String>,
    pub delegate_fee: Option<Amount>,
    pub reclaim_txid: Option<String>,
    pub reclaim_fee: Option<Amount>,
    pub reclaim_state: Option<ReclaimState>,
    pub energy_used: Option<u64>,
    pub bandwidth_used: Option<u64>,
}

impl SweepRow {
    /// The attempts path's payout key of the delegation that lends the sweep its energy.
    pub fn delegate_payout(&self) -> String {
        format!("delegate:{}", self.id)
    }

    /// The attempts path's payout key of the reclaim of that energy.
    pub fn reclaim_payout(&self) -> String {
        format!("reclaim:{}", self.id)
    }

    /// The nonce path's payout key of the gas top-up.
    pub fn top_up_payout(&self) -> String {
        format!("gas:{}", self.id)
    }

    /// The nonce path's payout key of the sweep (`cold:<id>` for a transfer to the cold
    /// address).
    pub fn sweep_payout(&self) -> String {
        match self.kind {
            SweepKind::Sweep => format!("sweep:{}", self.id),
            SweepKind::Cold => format!("cold:{}", self.id),
        }
    }

    /// What the sweep cost in the native coin: the fees of its top-up, delegation, sweep and
    /// reclaim, as far as they are known.
    pub fn cost(&self) -> Amount {
        [
            self.top_up_fee,
            self.delegate_fee,
            self.sweep_fee,
            self.reclaim_fee,
        ]
        .into_iter()
        .flatten()
        .fold(Amount::ZERO, |sum, fee| sum.checked_add(fee).unwrap_or(sum))
    }
}

/// What [`Store::sweep_insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepInserted {
    Created(SweepRow),
    /// The address has an open sweep already (perhaps this one, stored by a run that then
    /// died): finish that one first; nothing was written.
    Open(SweepRow),
}

/// A compare-and-set move of a sweep from `from` to `to` (the same state: only the fields),
/// setting the fields given and keeping the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepAdvance {
    pub id: i64,
    pub from: SweepState,
    pub to: SweepState,
    pub top_up_txid: Option<String>,
    pub top_up_fee: Option<Amount>,
    pub sweep_txid: Option<String>,
    pub sweep_fee: Option<Amount>,
    pub delegate_txid: Option<String>,
    pub delegate_fee: Option<Amount>,
    pub reclaim_txid: Option<String>,
    pub reclaim_fee: Option<Amount>,
    /// Set only from pending (to done): the reclaim's compare-and-set.
    pub reclaim_done: bool,
    pub energy_used: Option<u64>,
    pub bandwidth_used: Option<u64>,
    /// Replaces the error (`Some("")` clears it).
    pub error: Option<String>,
    pub now: DateTime<Utc>,
}

impl SweepAdvance {
    /// A move with no field set.
    pub fn new(id: i64, from: SweepState, to: SweepState, now: DateTime<Utc>) -> SweepAdvance {
        SweepAdvance {
            id,
            from,
            to,
            top_up_txid: None,
            top_up_fee: None,
            sweep_txid: None,
            sweep_fee: None,
            delegate_txid: None,
            delegate_fee: None,
            reclaim_txid: None,
            reclaim_fee: None,
            reclaim_done: false,
            energy_used: None,
            bandwidth_used: None,
            error: None,
            now,
        }
    }
}

macro_rules! decode_sweep {
    ($row:expr, $d:ident) => {{
        let row = $row;
        let amount_opt = |column: &str| -> Result<Option<Amount>, StoreError> {
            let text: Option<String> = row.try_get(column)?;
            text.as_deref().map(parse_amount).transpose()
        };
        let price: String = row.try_get("price_per_gas")?;
        let index: i64 = row.try_get("address_index")?;
        let gas_limit: i64 = row.try_get("gas_limit")?;
        let state: String = row.try_get("state")?;
        let count = |column: &str| -> Result<Option<u64>, StoreError> {
            let value: Option<i64> = row.try_get(column)?;
            value.map(|value| to_u64(column, value)).transpose()
        };
        let energy_source: Option<String> = row.try_get("energy_source")?;
        let reclaim_state: Option<String> = row.try_get("reclaim_state")?;
        let delegate_balance: Option<String> = row.try_get("delegate_balance")?;
        SweepRow {
            id: row.try_get("id")?,
            chain: row
                .try_get::<String, _>("chain")?
                .parse()
                .map_err(|error| crate::corrupt("sweep.chain", error))?,
            kind: row.try_get::<String, _>("kind")?.parse()?,
            address: row.try_get("address")?,
            address_index: u32::try_from(index)
                .map_err(|_| crate::corrupt("sweep.address_index", index))?,
            asset: row.try_get("asset")?,
            amount: parse_amount(&row.try_get::<String, _>("amount")?)?,
            destination: row.try_get("destination")?,
            price_per_gas: price
                .parse()
                .map_err(|_| crate::corrupt("sweep.price_per_gas", &price))?,
            gas_limit: to_u64("sweep.gas_limit", gas_limit)?,
            top_up_from: row.try_get("top_up_from")?,
            top_up_amount: amount_opt("top_up_amount")?,
            top_up_txid: row.try_get("top_up_txid")?,
            top_up_fee: amount_opt("top_up_fee")?,
            sweep_txid: row.try_get("sweep_txid")?,
            sweep_fee: amount_opt("sweep_fee")?,
            state: state.parse()?,
            error: row.try_get("error")?,
            created_at: $d::read_time(row, "created_at")?,
            updated_at: $d::read_time(row, "updated_at")?,
            energy_source: energy_source.as_deref().map(str::parse).transpose()?,
            delegate_from: row.try_get("delegate_from")?,
            delegate_balance: delegate_balance
                .as_deref()
                .map(|text| {
                    text.parse::<u64>()
                        .map_err(|_| crate::corrupt("sweep.delegate_balance", text))
                })
                .transpose()?,
            delegate_txid: row.try_get("delegate_txid")?,
            delegate_fee: amount_opt("delegate_fee")?,
            reclaim_txid: row.try_get("reclaim_txid")?,
            reclaim_fee: amount_opt("reclaim_fee")?,
            reclaim_state: reclaim_state.as_deref().map(str::parse).transpose()?,
            energy_used: count("energy_used")?,
            bandwidth_used: count("bandwidth_used")?,
        }
    }};
}

fn validate(insert: &SweepInsert) -> Result<(), StoreError> {
    if insert.amount.is_zero() {
        return Err(StoreError::Invalid("a sweep of zero".into()));
    }
    if insert.gas_limit == 0 || i64::try_from(insert.gas_limit).is_err() {
        return Err(StoreError::Invalid(
            "a sweep's gas limit is 1 to 2^63 - 1".into(),
        ));
    }
    if let Some((_, amount)) = &insert.top_up {
        if amount.is_zero() {
            return Err(StoreError::Invalid("a top-up of zero".into()));
        }
        if insert.kind == SweepKind::Cold {
            return Err(StoreError::Invalid(
                "a transfer to the cold address has no top-up".into(),
            ));
        }
    }
    if let Some(energy) = &insert.energy {
        if insert.kind == SweepKind::Cold {
            return Err(StoreError::Invalid(
                "a transfer to the cold address has no energy of its own".into(),
            ));
        }
        match (energy.source, &energy.delegate) {
            (EnergySource::Delegation, Some((from, balance))) => {
                if *balance == 0 || i64::try_from(*balance).is_err() {
                    return Err(StoreError::Invalid(
                        "a delegation lends 1 to 2^63 - 1 sun".into(),
                    ));
                }
                if from.is_empty() || from.len() > 100 || from.chars().any(char::is_control) {
                    return Err(StoreError::Invalid(
                        "a delegation's staking account is 1 to 100 bytes without control characters"
                            .into(),
                    ));
                }
            }
            (EnergySource::Burn, None) => {}
            _ => {
                return Err(StoreError::Invalid(
                    "a sweep's energy comes by delegation (with its staking account) or by burning TRX (without)"
                        .into(),
                ));
            }
        }
    }
    for (what, text) in [
        ("address", &insert.address),
        ("asset", &insert.asset),
        ("destination", &insert.destination),
    ] {
        if text.is_empty() || text.len() > 100 || text.chars().any(char::is_control) {
            return Err(StoreError::Invalid(format!(
                "a sweep's {what} is 1 to 100 bytes without control characters"
            )));
        }
    }
    Ok(())
}

impl Store {
    /// Stores a priced sweep in `topping_up` (with a top-up or a delegation) or `sweeping`, unless the address
    /// has an open sweep: then that one ([`SweepInserted::Open`]), writing nothing.
    pub async fn sweep_insert(&self, insert: &SweepInsert) -> Result<SweepInserted, StoreError> {
        validate(insert)?;
        // A delegation is the energy's top-up: it comes before the sweep too.
        let delegates = insert
            .energy
            .as_ref()
            .is_some_and(|energy| energy.source == EnergySource::Delegation);
        let state = if insert.top_up.is_some() || delegates {
            SweepState::ToppingUp
        } else {
            SweepState::Sweeping
        };
        let open_sql = format!(
            "select {COLUMNS} from sweep where chain = $1 and address = $2
               and state in ('topping_up', 'sweeping')"
        );
        let insert_sql = format!(
            "insert into sweep (chain, address, address_index, asset, amount, destination,
                 price_per_gas, gas_limit, top_up_from, top_up_amount, state, created_at,
                 updated_at, kind, energy_source, delegate_from, delegate_balance, reclaim_state)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15, $16,
                     $17)
             returning {COLUMNS}"
        );
        match self
            .sweep_insert_tx(insert, state, open_sql, insert_sql)
            .await
        {
            // A Postgres insert that lost the race for the address's open sweep to a
            // concurrent one (the partial unique index `sweep_open`) answers with the winner,
            // as SQLite's write lock would have.
            Err(error) if crate::withdrawals::is_unique_violation(&error) => {
                let open = self
                    .sweep_open_of(insert.chain, &insert.address)
                    .await?
                    .ok_or(error)?;
                Ok(SweepInserted::Open(open))
            }
            other => other,
        }
    }

    async fn sweep_insert_tx(
        &self,
        insert: &SweepInsert,
        state: SweepState,
        open_sql: String,
        insert_sql: String,
    ) -> Result<SweepInserted, StoreError> {
        let delegate = insert
            .energy
            .as_ref()
            .and_then(|energy| energy.delegate.as_ref());
        in_write_tx!(self, |_store, conn, d| {
            // Under the write transaction (SQLite's write lock; on Postgres the partial unique
            // index settles a race, refused below as the open sweep).
            if let Some(row) = sqlx::query(sqlx::AssertSqlSafe(open_sql))
                .bind(insert.chain.as_str())
                .bind(&insert.address)
                .fetch_optional(&mut *conn)
                .await?
            {
                return Ok(SweepInserted::Open(decode_sweep!(&row, d)));
            }
            let row = sqlx::query(sqlx::AssertSqlSafe(insert_sql))
                .bind(insert.chain.as_str())
                .bind(&insert.address)
                .bind(i64::from(insert.address_index))
                .bind(&insert.asset)
                .bind(amount_text(&insert.amount))
                .bind(&insert.destination)
                .bind(insert.price_per_gas.to_string())
                .bind(i64::try_from(insert.gas_limit).unwrap_or(i64::MAX))
                .bind(insert.top_up.as_ref().map(|(from, _)| from.clone()))
                .bind(
                    insert
                        .top_up
                        .as_ref()
                        .map(|(_, amount)| amount_text(amount)),
                )
                .bind(state.as_str())
                .bind(d::time(insert.now))
                .bind(insert.kind.as_str())
                .bind(insert.energy.as_ref().map(|energy| energy.source.as_str()))
                .bind(delegate.map(|(from, _)| from.clone()))
                .bind(delegate.map(|(_, balance)| balance.to_string()))
                .bind(delegate.map(|_| ReclaimState::Pending.as_str()))
                .fetch_one(&mut *conn)
                .await?;
            Ok(SweepInserted::Created(decode_sweep!(&row, d)))
        })
    }

    /// Open sweeps of `chain`, oldest first, at most `limit`.
    pub async fn sweep_open(&self, chain: Chain, limit: u32) -> Result<Vec<SweepRow>, StoreError> {
        self.sweep_select(chain, true, None, limit).await
    }

    /// Sweeps of `chain`, newest first, below `before_id`, at most `limit`.
    pub async fn sweep_list(
        &self,
        chain: Chain,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SweepRow>, StoreError> {
        self.sweep_select(chain, false, before_id, limit).await
    }

    async fn sweep_select(
        &self,
        chain: Chain,
        open: bool,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SweepRow>, StoreError> {
        if limit == 0 || limit > SWEEPS_LIST_MAX {
            return Err(StoreError::Invalid(format!(
                "a sweep listing takes 1 to {SWEEPS_LIST_MAX} rows"
            )));
        }
        let sql = if open {
            format!(
                "select {COLUMNS} from sweep where chain = $1
                   and state in ('topping_up', 'sweeping') and ($2 is null or id < $2)
                 order by id limit $3"
            )
        } else {
            format!(
                "select {COLUMNS} from sweep where chain = $1 and ($2 is null or id < $2)
                 order by id desc limit $3"
            )
        };
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(chain.as_str())
                .bind(before_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut sweeps = Vec::with_capacity(rows.len());
            for row in &rows {
                sweeps.push(decode_sweep!(row, d));
            }
            Ok(sweeps)
        })
    }

    /// Sweeps of `chain` that ended (swept or failed) with their delegated energy still to
    /// take back, oldest first, at most `limit`.
    pub async fn sweep_reclaims(
        &self,
        chain: Chain,
        limit: u32,
    ) -> Result<Vec<SweepRow>, StoreError> {
        if limit == 0 || limit > SWEEPS_LIST_MAX {
            return Err(StoreError::Invalid(format!(
                "a sweep listing takes 1 to {SWEEPS_LIST_MAX} rows"
            )));
        }
        let sql = format!(
            "select {COLUMNS} from sweep where chain = $1 and reclaim_state = 'pending'
               and state in ('swept', 'failed')
             order by id limit $2"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(chain.as_str())
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut sweeps = Vec::with_capacity(rows.len());
            for row in &rows {
                sweeps.push(decode_sweep!(row, d));
            }
            Ok(sweeps)
        })
    }

    /// Sweep `id`, if stored.
    pub async fn sweep_get(&self, id: i64) -> Result<Option<SweepRow>, StoreError> {
        let sql = format!("select {COLUMNS} from sweep where id = $1");
        on_pool!(self, |pool, d| {
            match sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Ok(Some(decode_sweep!(&row, d))),
                None => Ok(None),
            }
        })
    }

    /// Moves a sweep from `advance.from` to `advance.to` (allowed by
    /// [`SweepState::can_transition`], or the same state to record fields), a compare-and-set
    /// on the state: `Stale` when it is no longer in `from`.
    pub async fn sweep_advance(&self, advance: &SweepAdvance) -> Result<SweepRow, StoreError> {
        if advance.from != advance.to && !advance.from.can_transition(advance.to) {
            return Err(StoreError::Invalid(format!(
                "a sweep cannot move from {} to {}",
                advance.from.as_str(),
                advance.to.as_str()
            )));
        }
        if advance
            .error
            .as_ref()
            .is_some_and(|error| error.len() > SWEEP_ERROR_LEN_MAX)
        {
            return Err(StoreError::Invalid(format!(
                "a sweep's error is at most {SWEEP_ERROR_LEN_MAX} bytes"
            )));
        }
        let sql = format!(
            "update sweep set state = $3,
                 top_up_txid = coalesce($4, top_up_txid), top_up_fee = coalesce($5, top_up_fee),
                 sweep_txid = coalesce($6, sweep_txid), sweep_fee = coalesce($7, sweep_fee),
                 error = case when $8 is null then error when $8 = '' then null else $8 end,
                 updated_at = $9,
                 delegate_txid = coalesce($10, delegate_txid),
                 delegate_fee = coalesce($11, delegate_fee),
                 reclaim_txid = coalesce($12, reclaim_txid),
                 reclaim_fee = coalesce($13, reclaim_fee),
                 reclaim_state = case when $14 then 'done' else reclaim_state end,
                 energy_used = coalesce($15, energy_used),
                 bandwidth_used = coalesce($16, bandwidth_used)
             where id = $1 and state = $2 and (not $14 or reclaim_state = 'pending')
             returning {COLUMNS}"
        );
        on_write!(self, |conn, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(advance.id)
                .bind(advance.from.as_str())
                .bind(advance.to.as_str())
                .bind(advance.top_up_txid.as_deref())
                .bind(advance.top_up_fee.as_ref().map(amount_text))
                .bind(advance.sweep_txid.as_deref())
                .bind(advance.sweep_fee.as_ref().map(amount_text))
                .bind(advance.error.as_deref())
                .bind(d::time(advance.now))
                .bind(advance.delegate_txid.as_deref())
                .bind(advance.delegate_fee.as_ref().map(amount_text))
                .bind(advance.reclaim_txid.as_deref())
                .bind(advance.reclaim_fee.as_ref().map(amount_text))
                .bind(advance.reclaim_done)
                .bind(
                    advance
                        .energy_used
                        .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                )
                .bind(
                    advance
                        .bandwidth_used
                        .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                )
                .fetch_optional(&mut *conn)
                .await?;
            match row {
                Some(row) => Ok(decode_sweep!(&row, d)),
                None => Err(StoreError::Stale(format!(
                    "sweep {} is no longer {}{}",
                    advance.id,
                    advance.from.as_str(),
                    if advance.reclaim_done {
                        " with its reclaim pending"
                    } else {
                        ""
                    }
                ))),
            }
        })
    }
}

impl Store {
    async fn sweep_open_of(
        &self,
        chain: Chain,
        address: &str,
    ) -> Result<Option<SweepRow>, StoreError> {
        let sql = format!(
            "select {COLUMNS} from sweep where chain = $1 and address = $2
               and state in ('topping_up', 'sweeping')"
        );
        on_pool!(self, |pool, d| {
            match sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(chain.as_str())
                .bind(address)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Ok(Some(decode_sweep!(&row, d))),
                None => Ok(None),
            }
        })
    }
}

/// What [`Store::sweep_search`] lists: newest first, below `before_id`, filtered by chain and
/// state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepList {
    pub chain: Option<Chain>,
    pub state: Option<SweepState>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// The sweeps' numbers for `/metrics` and the alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// How many sweeps per chain and state.
    pub counts: Vec<(Chain, SweepState, i64)>,
    /// Per chain with open sweeps: when the oldest open one was stored, and how many open
    /// ones have an error noted (a step failed; the next round tries again).
    pub open: Vec<(Chain, DateTime<Utc>, i64)>,
}

impl SweepState {
    /// Every state, in the order of the diagram.
    pub const ALL: [SweepState; 4] = [
        SweepState::ToppingUp,
        SweepState::Sweeping,
        SweepState::Swept,
        SweepState::Failed,
    ];
}

impl Store {
    /// Sweeps of every chain or one, in every state or one, newest first.
    pub async fn sweep_search(&self, list: &SweepList) -> Result<Vec<SweepRow>, StoreError> {
        if list.limit == 0 || list.limit > SWEEPS_LIST_MAX {
            return Err(StoreError::Invalid(format!(
                "a sweep listing takes 1 to {SWEEPS_LIST_MAX} rows"
            )));
        }
        let sql = format!(
            "select {COLUMNS} from sweep
              where ($1 is null or chain = $1) and ($2 is null or state = $2)
                and ($3 is null or id < $3)
              order by id desc limit $4"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(list.chain.map(Chain::as_str))
                .bind(list.state.map(SweepState::as_str))
                .bind(list.before_id)
                .bind(i64::from(list.limit))
                .fetch_all(pool)
                .await?;
            let mut sweeps = Vec::with_capacity(rows.len());
            for row in &rows {
                sweeps.push(decode_sweep!(row, d));
            }
            Ok(sweeps)
        })
    }

    /// How many sweeps of `asset` (`native`, or a token's contract) from `address` failed
    /// since `since`: each burned a fee, so a sweeper starts no new one past a cap.
    pub async fn sweep_failures(
        &self,
        chain: Chain,
        address: &str,
        asset: &str,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        on_pool!(self, |pool, d| {
            let row = sqlx::query(
                "select count(*) as n from sweep
                 where chain = $1 and address = $2 and asset = $3 and state = 'failed'
                   and updated_at >= $4",
            )
            .bind(chain.as_str())
            .bind(address)
            .bind(asset)
            .bind(d::time(since))
            .fetch_one(pool)
            .await?;
            to_u64("sweep failures", row.try_get::<i64, _>("n")?)
        })
    }

    /// The counts per chain and state, and the open sweeps' oldest and erring, per chain.
    pub async fn sweep_stats(&self) -> Result<SweepStats, StoreError> {
        on_pool!(self, |pool, d| {
            let rows =
                sqlx::query("select chain, state, count(*) as n from sweep group by chain, state")
                    .fetch_all(pool)
                    .await?;
            let mut stats = SweepStats::default();
            for row in &rows {
                let chain: String = row.try_get("chain")?;
                let state: String = row.try_get("state")?;
                stats.counts.push((
                    chain
                        .parse()
                        .map_err(|error| crate::corrupt("sweep.chain", error))?,
                    state.parse()?,
                    row.try_get::<i64, _>("n")?,
                ));
            }
            // The oldest open sweep's own row (not `min(created_at)`: an aggregate loses the
            // column's type on SQLite), and how many open ones have an error.
            let rows = sqlx::query(
                "select chain, created_at,
                        (select count(*) from sweep e
                          where e.chain = s.chain and e.state in ('topping_up', 'sweeping')
                            and e.error is not null) as erring
                   from sweep s
                  where state in ('topping_up', 'sweeping')
                    and id = (select min(id) from sweep o
                               where o.chain = s.chain
                                 and o.state in ('topping_up', 'sweeping'))",
            )
            .fetch_all(pool)
            .await?;
            for row in &rows {
                let chain: String = row.try_get("chain")?;
                stats.open.push((
                    chain
                        .parse()
                        .map_err(|error| crate::corrupt("sweep.chain", error))?,
                    d::read_time(row, "created_at")?,
                    row.try_get::<i64, _>("erring")?,
                ));
            }
            Ok(stats)
        })
    }
}
