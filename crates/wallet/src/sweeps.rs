//! Consolidation on account-model chains with a fee market (Ethereum): deposit addresses
//! holding more than their asset's minimum are swept into the hot wallet; a token sweep first
//! gets just enough of the native coin for its gas from the gas wallet. The hot wallet's
//! balance above its asset's ceiling goes to a watch-only cold address the same way
//! (`cold:<id>`, signed by the hot wallet's key).
//!
//! Every top-up and every sweep is a payment like a withdrawal: [`Wallet::pay_nonce`] under
//! the payout keys `gas:<sweep id>` (from the gas wallet) and `sweep:<sweep id>` (from the
//! deposit address, signed with the deposit account's key, `signer::DepositSigner`), so its
//! bytes are stored before they are broadcast and a payout holds one nonce whatever happens;
//! the nonce settle rounds say when it was mined. The sweep itself is a row of the store
//! (`sweep`), written before anything is signed, holding the price per gas, the gas limit and
//! the amounts: a run repeated after a crash at any await rebuilds exactly the same payments
//! (or finds their stored bytes) and can never send a second top-up or a second sweep.
//!
//! Pricing: a sweep pays one price per gas as both fee caps
//! ([`chain::provider::ChainSweep::at_fixed_fees`]), so it costs exactly gas used × price. A
//! native sweep sends balance − 21,000 × price and leaves the address empty; a token sweep's
//! top-up is gas limit × price less what the address holds, and what the gas limit's margin
//! leaves unused stays there for its next sweep. New sweeps start only while the base fee is
//! at most the configured cap, and sweep only balances as of a block at the deposit
//! confirmation depth (and still there now), so a deposit a reorg may still take away is
//! never swept, and a balance a mined sweep moved is never swept twice. A sweep's transaction is never replaced with higher fees (a
//! native sweep could not pay them): it waits for the base fee to come back under its price.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chain::address::{Address, Network};
use chain::provider::{Asset, ChainSweep, Payment, TxStatus};
use chrono::Utc;
use domain::{Amount, Chain};
use signer::Signer;
use store::{
    DepositAddressList, NonceSettlement, Store, StoreError, SweepAdvance, SweepInsert,
    SweepInserted, SweepKind, SweepRow, SweepState,
};

use crate::{NonceSettlePolicy, Wallet, WalletError};

/// The most open sweeps a round steps (the oldest first); at that many, no new one starts.
pub const SWEEPS_OPEN_MAX: u32 = 64;
/// The issued addresses whose balances a round reads (the next ones in the next round).
pub const SWEEP_ADDRESSES_PER_ROUND: u32 = 100;
/// The most sweeps a round starts.
pub const SWEEPS_NEW_PER_ROUND_MAX: usize = 32;

/// Never replace a sweep's transaction: it waits in the pool for its price.
const NEVER_REPLACE: NonceSettlePolicy = NonceSettlePolicy {
    replace_after: Duration::MAX,
    fee_cap: 0,
};

/// What the sweeper does on one chain.
#[derive(Debug, Clone)]
pub struct SweepPolicy {
    /// Where sweeps go: the hot wallet.
    pub destination: Address,
    /// The key index (account 0) of the wallet that pays gas top-ups.
    pub gas_index: u32,
    /// Per asset, the balance a deposit address must pass to be swept; assets not listed are
    /// never swept. Tokens are looked at before the native coin, so an address's own ETH pays
    /// its token sweep before a native sweep takes it.
    pub minimums: Vec<(Asset, Amount)>,
    /// New sweeps wait while the base fee per gas is above this.
    pub base_fee_max: u128,
    /// The gas wallet's settle rounds (replacement of a waiting top-up).
    pub gas_settle: NonceSettlePolicy,
    /// The network deposit addresses are parsed on.
    pub network: Network,
    /// Only what is this deep is swept (1: the newest block), so a deposit a reorg may still
    /// take away is never swept; the deposit worker's confirmations.
    pub confirmations: u64,
    /// The hot wallet's key index (account 0): the sender of transfers to the cold address.
    pub hot_index: u32,
    /// Where the hot wallet's balance above its asset's ceiling goes: an address whose key
    /// is not ours to hold (watch-only). `None`: nothing goes cold.
    pub cold: Option<Address>,
    /// Per asset, the hot wallet's ceiling; assets not listed never go cold.
    pub ceilings: Vec<(Asset, Amount)>,
}

/// What one [`Sweeper::run_once`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepRound {
    /// Sweeps started this round.
    pub created: Vec<i64>,
    /// Sweeps that moved, and where to.
    pub moved: Vec<(i64, SweepState)>,
    /// The base fee when it was above the cap (nothing new was paid).
    pub base_fee_over_cap: Option<u128>,
    /// Errors, one per sweep or address; the round went on.
    pub errors: Vec<String>,
}

/// How a payout of a sweep stands.
enum Paid {
    /// Stored and sent (or waiting for the base fee); not mined yet.
    Waiting,
    Mined {
        txid: String,
        success: bool,
    },
    /// Its nonce went to a transaction that is none of ours.
    Foreign {
        nonce: u64,
    },
}

/// Where [`Sweeper::stop_at`] ends a round, as if the process died there: the crash tests'
/// seam (every await between storing a sweep and recording its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAt {
    /// The sweep is stored, nothing paid.
    SweepStored,
    /// The top-up is stored and sent, not yet mined.
    TopUpSent,
    /// The top-up is mined, the sweep not told.
    TopUpMined,
    /// The sweep's transaction is stored and sent, not yet mined.
    SweepSent,
    /// The sweep's transaction is mined, the sweep not told.
    SweepMined,
    /// TRON: the delegation of the sweep's energy is stored and sent, not yet landed.
    DelegationSent,
    /// TRON: the delegation landed, the sweep not told.
    DelegationMined,
    /// TRON: the reclaim of the energy is stored and sent, not yet landed.
    ReclaimSent,
    /// TRON: the reclaim landed, the sweep not told.
    ReclaimMined,
}

/// The next [`SWEEP_ADDRESSES_PER_ROUND`] issued addresses of `chain` after `cursor`, which
/// moves on (back to the first after the last page).
pub(crate) async fn next_addresses(
    store: &Store,
    chain: Chain,
    cursor: &Mutex<Option<i64>>,
) -> Result<Vec<store::DepositAddressRow>, WalletError> {
    let after = *cursor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let addresses = store
        .deposit_address_list(&DepositAddressList {
            chain: Some(chain),
            reference: None,
            after_id: after,
            limit: SWEEP_ADDRESSES_PER_ROUND,
        })
        .await?;
    let next = if addresses.len() < SWEEP_ADDRESSES_PER_ROUND as usize {
        None
    } else {
        addresses.last().map(|row| row.id)
    };
    *cursor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
    Ok(addresses)
}

/// How many sweeps of one asset from one address may fail within [`SWEEP_FAILURE_WINDOW`]
/// before no new one is started: each failure burned a fee (a reverted ERC-20 call, a TRON
/// transfer out of energy), and the cause is for a person to find (the
/// `CoinsenseiSweepFailed` alert fires at the first).
pub const SWEEP_FAILURES_MAX: u64 = 3;
/// The window [`SWEEP_FAILURES_MAX`] counts in: once the oldest failure leaves it, one more
/// sweep is tried.
pub const SWEEP_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Whether sweeps of `asset` from `address` failed [`SWEEP_FAILURES_MAX`] times within
/// [`SWEEP_FAILURE_WINDOW`]: then no new one is started (said in the log).
pub(crate) async fn failing_too_often(
    store: &Store,
    chain: Chain,
    address: &str,
    asset: &str,
) -> Result<bool, WalletError> {
    let since = Utc::now()
        - chrono::Duration::from_std(SWEEP_FAILURE_WINDOW).unwrap_or(chrono::Duration::MAX);
    let failures = store.sweep_failures(chain, address, asset, since).await?;
    if failures >= SWEEP_FAILURES_MAX {
        tracing::warn!(%chain, address, asset, failures, "sweeps of this address failed too often within a day: none is started until the oldest failure is a day old");
        return Ok(true);
    }
    Ok(false)
}

/// Records a step's error on its sweep (it stays open; the next round tries again).
pub(crate) async fn note_error(store: &Store, row: &SweepRow, error: &WalletError) {
    // Cut on a character, well inside the store's bound in bytes.
    let text: String = error
        .to_string()
        .chars()
        .take(store::SWEEP_ERROR_LEN_MAX / 4)
        .collect();
    let mut advance = SweepAdvance::new(row.id, row.state, row.state, Utc::now());
    advance.error = Some(text);
    if let Err(error) = store.sweep_advance(&advance).await {
        tracing::debug!(sweep = row.id, %error, "recording a sweep's error");
    }
}

/// The crash tests' seam of a sweeper: the point where rounds end, if any.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stops(Option<StopAt>);

impl Stops {
    pub(crate) fn at(point: StopAt) -> Stops {
        Stops(Some(point))
    }

    /// Whether `error` is this seam's stop (which ends the round, as a crash would).
    pub(crate) fn stopped(&self, error: &WalletError) -> bool {
        self.0.is_some()
            && matches!(error, WalletError::Unsupported(text) if text.starts_with("stopped at"))
    }

    /// Ends the round here when this is the point.
    pub(crate) fn stop(&self, point: StopAt) -> Result<(), WalletError> {
        if self.0 == Some(point) {
            return Err(WalletError::Unsupported(format!("stopped at {point:?}")));
        }
        Ok(())
    }
}

/// The sweeper of one chain.
pub struct Sweeper<P> {
    provider: P,
    /// The gas wallet's (account 0 keys).
    gas: Wallet<P>,
    /// The deposit account's keys.
    deposit_signer: Arc<dyn Signer>,
    /// Account 0's keys: the hot wallet's transfers to the cold address.
    signer: Arc<dyn Signer>,
    store: Store,
    holder: String,
    policy: SweepPolicy,
    /// The id of the last issued address looked at; `None`: start from the first.
    cursor: Mutex<Option<i64>>,
    stops: Stops,
}

impl<P> std::fmt::Debug for Sweeper<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

pub(crate) fn asset_text(asset: &Asset) -> String {
    match asset {
        Asset::Native => "native".into(),
        Asset::Token(contract) => contract.to_string(),
    }
}

fn gas_cost(gas_limit: u64, price: u128) -> Option<Amount> {
    u128::from(gas_limit)
        .checked_mul(price)
        .map(Amount::from_u128)
}

impl<P: ChainSweep + 'static> Sweeper<P> {
    /// `signer` holds the gas wallet's key (account 0); `deposit_signer` the deposit account's.
    pub fn new(
        provider: P,
        signer: Arc<dyn Signer>,
        deposit_signer: Arc<dyn Signer>,
        store: Store,
        holder: impl Into<String>,
        policy: SweepPolicy,
    ) -> Result<Self, WalletError> {
        let holder = holder.into();
        let gas = Wallet::new(
            provider.clone(),
            Arc::clone(&signer),
            store.clone(),
            holder.clone(),
        );
        if policy.destination.chain() != provider.chain() {
            return Err(WalletError::Invalid(format!(
                "the sweep destination {} is not a {} address",
                policy.destination,
                provider.chain()
            )));
        }
        let mut policy = policy;
        // Tokens first (see `SweepPolicy::minimums`).
        policy
            .minimums
            .sort_by_key(|(asset, _)| matches!(asset, Asset::Native));
        Ok(Sweeper {
            provider,
            gas,
            signer,
            deposit_signer,
            store,
            holder,
            policy,
            cursor: Mutex::new(None),
            stops: Stops::default(),
        })
    }

    /// Ends every round at `point` with an error, as if the process died there (tests).
    pub fn stop_at(mut self, point: StopAt) -> Self {
        self.stops = Stops::at(point);
        self
    }

    fn stopped(&self, error: &WalletError) -> bool {
        self.stops.stopped(error)
    }

    fn stop(&self, point: StopAt) -> Result<(), WalletError> {
        self.stops.stop(point)
    }

    fn chain(&self) -> Chain {
        self.provider.chain()
    }

    /// The gas wallet's address.
    pub fn gas_wallet(&self) -> Result<Address, WalletError> {
        self.gas.create_wallet(self.policy.gas_index)
    }

    /// One round: settle the gas wallet's nonces, step every open sweep (at most
    /// [`SWEEPS_OPEN_MAX`]), then, while the base fee is at most the cap, read the balances
    /// of the next [`SWEEP_ADDRESSES_PER_ROUND`] issued addresses and start a sweep for each
    /// one holding more than its asset's minimum.
    pub async fn run_once(&self) -> Result<SweepRound, WalletError> {
        let chain = self.chain();
        let mut round = SweepRound::default();
        for settled in self
            .gas
            .settle_nonces(self.policy.gas_index, &self.policy.gas_settle)
            .await?
        {
            if let Err(error) = settled.result {
                round.errors.push(format!(
                    "{} nonce {}: {error}",
                    settled.payout, settled.nonce
                ));
            }
        }
        let base_fee = self.provider.base_fee().await?;
        let base_fee_ok = base_fee <= self.policy.base_fee_max;
        if !base_fee_ok {
            round.base_fee_over_cap = Some(base_fee);
        }
        let open = self.store.sweep_open(chain, SWEEPS_OPEN_MAX).await?;
        let mut busy: HashSet<String> = HashSet::new();
        for row in open.iter() {
            busy.insert(row.address.clone());
            let (id, before) = (row.id, row.state);
            match self.step(row.clone(), base_fee_ok).await {
                Ok(after) if after != before => round.moved.push((id, after)),
                Ok(_) => {}
                Err(error) if self.stopped(&error) => return Err(error),
                Err(error) => {
                    tracing::warn!(%chain, sweep = id, %error, "a sweep step failed; the next round tries again");
                    self.note_error(row, &error).await;
                    round.errors.push(format!("sweep {id}: {error}"));
                }
            }
        }
        if !base_fee_ok || open.len() >= SWEEPS_OPEN_MAX as usize {
            return Ok(round);
        }
        if let Some(cold) = &self.policy.cold {
            let hot = self.gas.create_wallet(self.policy.hot_index)?;
            if !busy.contains(hot.as_str()) {
                busy.insert(hot.to_string());
                match self.start_cold(&hot, cold).await {
                    Ok(Some(row)) => {
                        round.created.push(row.id);
                        self.stop(StopAt::SweepStored)?;
                        let id = row.id;
                        match self.step(row.clone(), true).await {
                            Ok(after) if after != row.state => round.moved.push((id, after)),
                            Ok(_) => {}
                            Err(error) if self.stopped(&error) => return Err(error),
                            Err(error) => {
                                tracing::warn!(%chain, sweep = id, %error, "a transfer to the cold address failed; the next round tries again");
                                self.note_error(&row, &error).await;
                                round.errors.push(format!("sweep {id}: {error}"));
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(error) => round.errors.push(format!("the hot wallet {hot}: {error}")),
                }
            }
        }
        for issued in next_addresses(&self.store, chain, &self.cursor).await? {
            if round.created.len() >= SWEEPS_NEW_PER_ROUND_MAX {
                break;
            }
            if busy.contains(&issued.address) {
                continue;
            }
            match self.start(&issued.address, issued.index).await {
                Ok(Some(row)) => {
                    round.created.push(row.id);
                    self.stop(StopAt::SweepStored)?;
                    // Its first payment goes out now rather than next round.
                    let id = row.id;
                    match self.step(row.clone(), true).await {
                        Ok(after) if after != row.state => round.moved.push((id, after)),
                        Ok(_) => {}
                        Err(error) if self.stopped(&error) => return Err(error),
                        Err(error) => {
                            tracing::warn!(%chain, sweep = id, %error, "a sweep step failed; the next round tries again");
                            self.note_error(&row, &error).await;
                            round.errors.push(format!("sweep {id}: {error}"));
                        }
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    round
                        .errors
                        .push(format!("address {}: {error}", issued.address));
                }
            }
        }
        Ok(round)
    }

    /// Prices and stores a sweep of the first asset of `address` over its minimum; `None`
    /// when none is.
    async fn start(&self, address: &str, index: u32) -> Result<Option<SweepRow>, WalletError> {
        let chain = self.chain();
        let from = Address::parse(chain, self.policy.network, address)
            .map_err(|error| WalletError::Invalid(format!("issued address {address}: {error}")))?;
        let derived = self.deposit_signer.address(chain, index)?;
        if derived != from {
            return Err(WalletError::Invalid(format!(
                "issued address {address} is not deposit key {index} ({derived}): the keystore is not the one its xpub came from"
            )));
        }
        // Balances as of the newest block at the policy's depth: a deposit younger than that
        // waits for a later round.
        let head = self.provider.tip().await?.head;
        let at = head.saturating_sub(self.policy.confirmations.saturating_sub(1));
        for (asset, minimum) in &self.policy.minimums {
            let balance = self.sweepable(&from, asset, at).await?;
            if balance <= *minimum
                || failing_too_often(&self.store, chain, from.as_str(), &asset_text(asset)).await?
            {
                continue;
            }
            let price = self.provider.sweep_price().await?;
            let mut payment = Payment {
                from_index: index,
                from: from.clone(),
                to: self.policy.destination.clone(),
                asset: asset.clone(),
                amount: balance,
            };
            let gas_limit = self.provider.gas_limit(&payment).await?;
            let cost = gas_cost(gas_limit, price)
                .ok_or_else(|| WalletError::Invalid("the sweep's gas cost overflows".into()))?;
            let top_up = match asset {
                Asset::Native => {
                    // Balance less exactly what the transfer's gas costs at its fixed price.
                    let Some(amount) = balance.checked_sub(cost).filter(|a| !a.is_zero()) else {
                        continue;
                    };
                    payment.amount = amount;
                    None
                }
                Asset::Token(_) => {
                    // The gas it holds already, counted as deep as the deposits.
                    let held = self.sweepable(&from, &Asset::Native, at).await?;
                    match cost.checked_sub(held) {
                        Some(missing) if !missing.is_zero() => {
                            Some((self.gas_wallet()?.to_string(), missing))
                        }
                        _ => None,
                    }
                }
            };
            let inserted = self
                .store
                .sweep_insert(&SweepInsert {
                    chain,
                    kind: SweepKind::Sweep,
                    address: from.to_string(),
                    address_index: index,
                    asset: asset_text(asset),
                    amount: payment.amount,
                    destination: self.policy.destination.to_string(),
                    price_per_gas: price,
                    gas_limit,
                    top_up,
                    energy: None,
                    now: Utc::now(),
                })
                .await?;
            return Ok(match inserted {
                SweepInserted::Created(row) => {
                    tracing::info!(%chain, sweep = row.id, address = %row.address, asset = %row.asset, amount = %row.amount.base_units(), price, gas_limit, top_up = ?row.top_up_amount.map(|a| a.base_units()), "a sweep starts");
                    Some(row)
                }
                // Another sweeper started one a moment ago: it is stepped next round.
                SweepInserted::Open(_) => None,
            });
        }
        Ok(None)
    }

    /// Prices and stores a transfer of the hot wallet's excess over the first asset's ceiling
    /// it passes to the cold address; `None` when it passes none. The hot wallet's own
    /// balance moves only by our payments and sweeps into it, so it is read as it is now.
    async fn start_cold(
        &self,
        hot: &Address,
        cold: &Address,
    ) -> Result<Option<SweepRow>, WalletError> {
        let chain = self.chain();
        for (asset, ceiling) in &self.policy.ceilings {
            let balance = self.provider.balance(hot, asset).await?;
            let Some(excess) = balance.checked_sub(*ceiling).filter(|a| !a.is_zero()) else {
                continue;
            };
            let payment = Payment {
                from_index: self.policy.hot_index,
                from: hot.clone(),
                to: cold.clone(),
                asset: asset.clone(),
                amount: excess,
            };
            let price = self.provider.sweep_price().await?;
            let gas_limit = self.provider.gas_limit(&payment).await?;
            let inserted = self
                .store
                .sweep_insert(&SweepInsert {
                    chain,
                    kind: SweepKind::Cold,
                    address: hot.to_string(),
                    address_index: self.policy.hot_index,
                    asset: asset_text(asset),
                    amount: excess,
                    destination: cold.to_string(),
                    price_per_gas: price,
                    gas_limit,
                    top_up: None,
                    energy: None,
                    now: Utc::now(),
                })
                .await?;
            return Ok(match inserted {
                SweepInserted::Created(row) => {
                    tracing::info!(%chain, sweep = row.id, asset = %row.asset, amount = %row.amount.base_units(), cold = %row.destination, "the hot wallet's excess goes to the cold address");
                    Some(row)
                }
                SweepInserted::Open(_) => None,
            });
        }
        Ok(None)
    }

    /// What `address` holds of `asset` both as of block `at` and now: deep enough that a
    /// reorg cannot take it away, and not already swept by a sweep mined since `at`.
    async fn sweepable(
        &self,
        address: &Address,
        asset: &Asset,
        at: u64,
    ) -> Result<Amount, WalletError> {
        let deep = self.provider.balance_at(address, asset, at).await?;
        let now = self.provider.balance(address, asset).await?;
        Ok(deep.min(now))
    }

    /// The payment a sweep's row describes, from the deposit address.
    fn sweep_payment(&self, row: &SweepRow) -> Result<Payment, WalletError> {
        let chain = self.chain();
        let parse = |text: &str| {
            Address::parse(chain, self.policy.network, text).map_err(|error| {
                WalletError::Store(StoreError::Corrupt(format!(
                    "sweep {}: {text}: {error}",
                    row.id
                )))
            })
        };
        let asset = if row.asset == "native" {
            Asset::Native
        } else {
            Asset::Token(parse(&row.asset)?)
        };
        Ok(Payment {
            from_index: row.address_index,
            from: parse(&row.address)?,
            to: parse(&row.destination)?,
            asset,
            amount: row.amount,
        })
    }

    /// Moves a sweep as far as its payments allow now; returns its state after.
    async fn step(&self, row: SweepRow, base_fee_ok: bool) -> Result<SweepState, WalletError> {
        let mut row = row;
        if row.state == SweepState::ToppingUp {
            let (Some(from), Some(amount)) = (&row.top_up_from, row.top_up_amount) else {
                return Err(WalletError::Store(StoreError::Corrupt(format!(
                    "sweep {} tops up without a sender or amount",
                    row.id
                ))));
            };
            let chain = self.chain();
            let gas_wallet = self.gas_wallet()?;
            if gas_wallet.as_str() != from {
                return Err(WalletError::Invalid(format!(
                    "sweep {}'s top-up is from {from}, but the gas wallet is now {gas_wallet}: configure the gas wallet it was priced with",
                    row.id
                )));
            }
            let payment = Payment {
                from_index: self.policy.gas_index,
                from: gas_wallet,
                to: Address::parse(chain, self.policy.network, &row.address)
                    .map_err(|error| WalletError::Invalid(format!("sweep {}: {error}", row.id)))?,
                asset: Asset::Native,
                amount,
            };
            match self
                .paid(&self.gas, None, &row.top_up_payout(), &payment, base_fee_ok)
                .await?
            {
                Paid::Waiting => return Ok(row.state),
                Paid::Foreign { nonce } => {
                    return self
                        .fail(&row, format!("the gas wallet's nonce {nonce} of this top-up went to a transaction that is none of ours: check whether the address got its gas"))
                        .await;
                }
                Paid::Mined { txid, success } => {
                    self.stop(StopAt::TopUpMined)?;
                    let fee = self.provider.fee_paid(&txid).await?;
                    if !success {
                        let mut advance =
                            SweepAdvance::new(row.id, row.state, SweepState::Failed, Utc::now());
                        advance.top_up_txid = Some(txid);
                        advance.top_up_fee = fee;
                        advance.error = Some("its gas top-up was mined but failed".into());
                        return Ok(self.store.sweep_advance(&advance).await?.state);
                    }
                    let mut advance =
                        SweepAdvance::new(row.id, row.state, SweepState::Sweeping, Utc::now());
                    advance.top_up_txid = Some(txid);
                    advance.top_up_fee = fee;
                    advance.error = Some(String::new());
                    row = self.store.sweep_advance(&advance).await?;
                    tracing::info!(%chain, sweep = row.id, txid = ?row.top_up_txid, fee = ?row.top_up_fee.map(|f| f.base_units()), "a sweep's gas top-up was mined");
                }
            }
        }
        if row.state != SweepState::Sweeping {
            return Ok(row.state);
        }
        let payment = self.sweep_payment(&row)?;
        // A sweep is signed by the deposit address's key, a cold transfer by the hot wallet's.
        let signer = match row.kind {
            SweepKind::Sweep => &self.deposit_signer,
            SweepKind::Cold => &self.signer,
        };
        let wallet = Wallet::new(
            self.provider
                .at_fixed_fees(row.price_per_gas, row.gas_limit),
            Arc::clone(signer),
            self.store.clone(),
            self.holder.clone(),
        );
        match self
            .paid(
                &wallet,
                Some(row.address_index),
                &row.sweep_payout(),
                &payment,
                base_fee_ok,
            )
            .await?
        {
            Paid::Waiting => Ok(row.state),
            Paid::Foreign { nonce } => {
                self.fail(&row, format!("the deposit address's nonce {nonce} went to a transaction that is none of ours: its key is used elsewhere"))
                    .await
            }
            Paid::Mined { txid, success } => {
                self.stop(StopAt::SweepMined)?;
                let fee = self.provider.fee_paid(&txid).await?;
                let to = if success {
                    SweepState::Swept
                } else {
                    SweepState::Failed
                };
                let mut advance = SweepAdvance::new(row.id, row.state, to, Utc::now());
                advance.sweep_txid = Some(txid);
                advance.sweep_fee = fee;
                advance.error = Some(if success {
                    String::new()
                } else {
                    "the sweep was mined but failed (reverted): its gas was spent, nothing moved"
                        .into()
                });
                let done = self.store.sweep_advance(&advance).await?;
                tracing::info!(chain = %self.chain(), sweep = done.id, address = %done.address, asset = %done.asset, amount = %done.amount.base_units(), txid = ?done.sweep_txid, cost = %done.cost().base_units(), state = done.state.as_str(), "a sweep ended");
                Ok(done.state)
            }
        }
    }

    /// Where `payout` stands, paying it (persisted, then broadcast) when nothing is bound yet
    /// and the base fee allows. With `settle_index`, that key's bound nonces are settled
    /// first (a deposit address's; the gas wallet's are settled once per round).
    async fn paid(
        &self,
        wallet: &Wallet<P>,
        settle_index: Option<u32>,
        payout: &str,
        payment: &Payment,
        base_fee_ok: bool,
    ) -> Result<Paid, WalletError> {
        let chain = self.chain();
        let mut held = self.store.nonce_get(chain, payout).await?;
        if let (Some(index), Some(bound)) = (settle_index, &held)
            && bound.is_bound()
            && bound.settlement.is_none()
        {
            for settled in wallet.settle_nonces(index, &NEVER_REPLACE).await? {
                if let Err(error) = settled.result {
                    tracing::warn!(%chain, payout = settled.payout, nonce = settled.nonce, %error, "settling a sweep's nonce");
                }
            }
            held = self.store.nonce_get(chain, payout).await?;
        }
        match held {
            Some(held) if held.is_bound() => match held.settlement {
                Some(NonceSettlement::Mined { txid }) => {
                    match self.provider.transaction(&txid).await? {
                        TxStatus::Included { success, .. } => Ok(Paid::Mined { txid, success }),
                        // Settled mined, and gone since (a reorg): it waits to be mined again.
                        TxStatus::Pending | TxStatus::NotFound => Ok(Paid::Waiting),
                    }
                }
                Some(NonceSettlement::Foreign) => Ok(Paid::Foreign { nonce: held.nonce }),
                None => Ok(Paid::Waiting),
            },
            _ if !base_fee_ok => Ok(Paid::Waiting),
            _ => {
                let sent = wallet.pay_nonce(payout, payment).await?;
                self.stop(if settle_index.is_some() {
                    StopAt::SweepSent
                } else {
                    StopAt::TopUpSent
                })?;
                tracing::info!(%chain, payout, txid = %sent.txid, nonce = ?sent.sequence, outcome = ?sent.outcome, "a sweep payment was stored and sent");
                if let chain::provider::SubmitOutcome::Rejected { reason, .. } = &sent.outcome {
                    return Err(WalletError::Chain(chain::provider::ChainError::retriable(
                        format!("the node refused {payout} ({reason}); it is tried again"),
                    )));
                }
                Ok(Paid::Waiting)
            }
        }
    }

    async fn fail(&self, row: &SweepRow, why: String) -> Result<SweepState, WalletError> {
        tracing::error!(chain = %self.chain(), sweep = row.id, address = %row.address, why, "a sweep failed: it needs a person");
        let mut advance = SweepAdvance::new(row.id, row.state, SweepState::Failed, Utc::now());
        advance.error = Some(why);
        Ok(self.store.sweep_advance(&advance).await?.state)
    }

    async fn note_error(&self, row: &SweepRow, error: &WalletError) {
        note_error(&self.store, row, error).await;
    }
}
