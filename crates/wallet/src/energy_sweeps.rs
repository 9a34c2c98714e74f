//! Consolidation on a chain whose token transfers are paid with energy (TRON, Stake 2.0):
//! deposit addresses holding more than their asset's minimum are swept into the hot wallet,
//! and the hot wallet's balance above its asset's ceiling goes to a watch-only cold address.
//!
//! A TRC-20 sweep needs, on the deposit address:
//! - **the account to exist**: receiving tokens does not create a TRON account, and an account
//!   that does not exist can neither call a contract nor be lent energy. A real exchange
//!   activates it with the smallest TRX transfer from its gas wallet (1 sun: the gas wallet
//!   burns the creation fees, 1.1 TRX at today's parameters; the address then has the daily
//!   free bandwidth every account has). Delegating bandwidth instead would need the account
//!   to exist first, so activation comes first whatever the energy's source;
//! - **bandwidth**: a TRC-20 transfer (about 345 bytes) fits the 600 bytes of free daily
//!   bandwidth; an address whose free bandwidth is used up gets the TRX to burn for it in its
//!   top-up;
//! - **energy**: lent by the staking account (a key of ours whose TRX is staked for energy by
//!   FreezeBalanceV2) through `DelegateResourceContract`, then taken back by
//!   `UnDelegateResourceContract` once the sweep ended, whatever its end; when the staking
//!   account cannot lend enough now (`getcandelegatedmaxsize`), the top-up carries the TRX
//!   the transfer will burn for its energy instead.
//!
//! Every transaction is a payment by attempts ([`Wallet::pay`], [`Wallet::pay_delegation`]):
//! stored before it is broadcast under a payout key of its sweep (`gas:<id>` from the gas
//! wallet, `delegate:<id>` and `reclaim:<id>` from the staking account, `sweep:<id>` from the
//! deposit address, `cold:<id>` from the hot wallet), a new attempt only once every earlier
//! one is provably dead (`chain_tron::death`), and a step moves on only once its transaction
//! is in a solidified block. The sweep's row (`store::sweeps`, migrations 0022 and 0023) is
//! written, priced, before anything is signed, with where its energy comes from and a reclaim
//! pending from then on, so a round that dies at any await is finished by the next one: one
//! top-up, one delegation, one sweep, one reclaim. A delegation that landed is always taken
//! back: the reclaim is looked for on every ended sweep whose reclaim is pending, and it
//! follows the delegation's attempts, not the row's fields, so a crash between the delegation
//! landing and the row saying so still reclaims.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chain::address::{Address, Network};
use chain::provider::{Asset, ChainEnergy, Delegation, Payment, ResourceReceipt};
use chrono::Utc;
use domain::{Amount, Chain};
use signer::Signer;
use store::{
    AttemptState, EnergySource, ReclaimState, Store, StoreError, SweepAdvance, SweepEnergy,
    SweepInsert, SweepInserted, SweepKind, SweepRow, SweepState,
};

use crate::sweeps::{
    SWEEPS_NEW_PER_ROUND_MAX, SWEEPS_OPEN_MAX, StopAt, Stops, SweepRound, asset_text,
    next_addresses, note_error,
};
use crate::{Wallet, WalletError};

/// What activates a deposit address: the least TRX transfer there is (1 sun). The sender
/// burns the account-creation fees; what it sends stays on the address.
pub const ACTIVATION_SUN: u64 = 1;

/// What the energy sweeper does on one chain.
#[derive(Debug, Clone)]
pub struct EnergySweepPolicy {
    /// Where sweeps go: the hot wallet.
    pub destination: Address,
    /// The key index (account 0) of the wallet that pays TRX top-ups (activation, bandwidth,
    /// energy to burn).
    pub gas_index: u32,
    /// The key index (account 0) of the staking account that lends energy; `None`: energy is
    /// always burned.
    pub staker_index: Option<u32>,
    /// Per asset, the balance a deposit address must pass to be swept; assets not listed are
    /// never swept. Tokens are looked at before TRX.
    pub minimums: Vec<(Asset, Amount)>,
    /// The network deposit addresses are parsed on.
    pub network: Network,
    /// The hot wallet's key index (account 0): the sender of transfers to the cold address.
    pub hot_index: u32,
    /// Where the hot wallet's balance above its asset's ceiling goes (watch-only).
    pub cold: Option<Address>,
    pub ceilings: Vec<(Asset, Amount)>,
}

/// Where a payout of a sweep stands.
enum Payout {
    /// No attempt may land (none made, or every one provably dead): it may be paid.
    Unpaid,
    /// An attempt may still land.
    Waiting,
    /// In a solidified block, with its receipt.
    Landed {
        txid: String,
        receipt: ResourceReceipt,
    },
}

/// The energy sweeper of one chain.
pub struct EnergySweeper<P> {
    provider: P,
    /// Account 0's keys: the gas wallet, the staking account, the hot wallet.
    wallet: Wallet<P>,
    /// The deposit account's keys.
    deposits: Wallet<P>,
    store: Store,
    policy: EnergySweepPolicy,
    cursor: Mutex<Option<i64>>,
    stops: Stops,
}

impl<P> std::fmt::Debug for EnergySweeper<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnergySweeper").finish_non_exhaustive()
    }
}

impl<P: ChainEnergy + 'static> EnergySweeper<P> {
    /// `signer` holds account 0 (gas wallet, staking account, hot wallet); `deposit_signer`
    /// the deposit account's keys.
    pub fn new(
        provider: P,
        signer: Arc<dyn Signer>,
        deposit_signer: Arc<dyn Signer>,
        store: Store,
        holder: impl Into<String>,
        policy: EnergySweepPolicy,
    ) -> Result<Self, WalletError> {
        let holder = holder.into();
        if policy.destination.chain() != provider.chain() {
            return Err(WalletError::Invalid(format!(
                "the sweep destination {} is not a {} address",
                policy.destination,
                provider.chain()
            )));
        }
        let wallet = Wallet::new(provider.clone(), signer, store.clone(), holder.clone());
        let deposits = Wallet::new(provider.clone(), deposit_signer, store.clone(), holder);
        for (role, index) in [
            ("gas wallet", Some(policy.gas_index)),
            ("staking account", policy.staker_index),
        ] {
            if let Some(index) = index
                && wallet.create_wallet(index)? == policy.destination
            {
                return Err(WalletError::Invalid(format!(
                    "the {role} (key {index}) is the hot wallet: give it a key of its own"
                )));
            }
        }
        let mut policy = policy;
        policy
            .minimums
            .sort_by_key(|(asset, _)| matches!(asset, Asset::Native));
        Ok(EnergySweeper {
            provider,
            wallet,
            deposits,
            store,
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

    fn chain(&self) -> Chain {
        self.provider.chain()
    }

    /// The gas wallet's address.
    pub fn gas_wallet(&self) -> Result<Address, WalletError> {
        self.wallet.create_wallet(self.policy.gas_index)
    }

    /// The staking account's address, if one is configured.
    pub fn staker(&self) -> Result<Option<Address>, WalletError> {
        self.policy
            .staker_index
            .map(|index| self.wallet.create_wallet(index))
            .transpose()
    }

    /// One round: step every open sweep (at most [`SWEEPS_OPEN_MAX`]), take back the energy of
    /// ended ones, send the hot wallet's excess cold, then start a sweep of each of the next
    /// [`SWEEP_ADDRESSES_PER_ROUND`] issued addresses holding more than its asset's minimum.
    pub async fn run_once(&self) -> Result<SweepRound, WalletError> {
        let chain = self.chain();
        let mut round = SweepRound::default();
        let open = self.store.sweep_open(chain, SWEEPS_OPEN_MAX).await?;
        let mut busy: HashSet<String> = HashSet::new();
        for row in &open {
            busy.insert(row.address.clone());
            self.step_noted(row, &mut round).await?;
        }
        for row in self.store.sweep_reclaims(chain, SWEEPS_OPEN_MAX).await? {
            if let Err(error) = self.reclaim(&row).await {
                if self.stops.stopped(&error) {
                    return Err(error);
                }
                tracing::warn!(%chain, sweep = row.id, %error, "taking a sweep's energy back failed; the next round tries again");
                round
                    .errors
                    .push(format!("sweep {} reclaim: {error}", row.id));
            }
        }
        if open.len() >= SWEEPS_OPEN_MAX as usize {
            return Ok(round);
        }
        if let Some(cold) = &self.policy.cold {
            let hot = self.wallet.create_wallet(self.policy.hot_index)?;
            if busy.insert(hot.to_string()) {
                match self.start_cold(&hot, cold).await {
                    Ok(Some(row)) => {
                        round.created.push(row.id);
                        self.stops.stop(StopAt::SweepStored)?;
                        self.step_noted(&row, &mut round).await?;
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
                    self.stops.stop(StopAt::SweepStored)?;
                    self.step_noted(&row, &mut round).await?;
                }
                Ok(None) => {}
                Err(error) => round
                    .errors
                    .push(format!("address {}: {error}", issued.address)),
            }
        }
        Ok(round)
    }

    /// Steps `row`, noting a move or an error in `round`; only a test's stop ends the round.
    async fn step_noted(&self, row: &SweepRow, round: &mut SweepRound) -> Result<(), WalletError> {
        match self.step(row.clone()).await {
            Ok(after) if after != row.state => round.moved.push((row.id, after)),
            Ok(_) => {}
            Err(error) if self.stops.stopped(&error) => return Err(error),
            Err(error) => {
                tracing::warn!(chain = %self.chain(), sweep = row.id, %error, "a sweep step failed; the next round tries again");
                note_error(&self.store, row, &error).await;
                round.errors.push(format!("sweep {}: {error}", row.id));
            }
        }
        Ok(())
    }

    /// Prices and stores a sweep of the first asset of `address` over its minimum.
    async fn start(&self, address: &str, index: u32) -> Result<Option<SweepRow>, WalletError> {
        let chain = self.chain();
        let from = Address::parse(chain, self.policy.network, address)
            .map_err(|error| WalletError::Invalid(format!("issued address {address}: {error}")))?;
        let derived = self.deposits.create_wallet(index)?;
        if derived != from {
            return Err(WalletError::Invalid(format!(
                "issued address {address} is not deposit key {index} ({derived}): the keystore is not the one the addresses came from"
            )));
        }
        for (asset, minimum) in &self.policy.minimums {
            // What the address holds as of the solidified block (as its deposits are
            // credited) and still holds now: a deposit a reorganisation may yet take away is
            // never swept, and a balance a landed sweep moved is never swept twice.
            let (now, settled) = tokio::try_join!(
                self.provider.balance(&from, asset),
                self.provider.settled_balance(&from, asset)
            )?;
            let balance = now.min(settled);
            if balance <= *minimum
                || crate::sweeps::failing_too_often(
                    &self.store,
                    chain,
                    from.as_str(),
                    &crate::sweeps::asset_text(asset),
                )
                .await?
            {
                continue;
            }
            let mut payment = Payment {
                from_index: index,
                from: from.clone(),
                to: self.policy.destination.clone(),
                asset: asset.clone(),
                amount: balance,
            };
            let (resources, prices) = tokio::try_join!(
                self.provider.account_resources(&from),
                self.provider.burn_prices()
            )?;
            let bytes = self.provider.transfer_bytes(asset);
            // Bandwidth: free (or staked) when it covers the whole transaction, else burned;
            // an address activated by its top-up starts with its free bandwidth whole.
            let bandwidth_burn = if !resources.activated
                || resources.free_bandwidth >= bytes
                || resources.staked_bandwidth >= bytes
            {
                0
            } else {
                bytes.saturating_mul(prices.bandwidth)
            };
            let (energy, source, top_up) = match asset {
                Asset::Native => {
                    // All of it, less the bandwidth it burns: the address is left empty.
                    let Some(amount) = balance
                        .checked_sub(Amount::from_u128(u128::from(bandwidth_burn)))
                        .filter(|amount| !amount.is_zero())
                    else {
                        continue;
                    };
                    payment.amount = amount;
                    (bytes, None, 0)
                }
                Asset::Token(_) => {
                    let energy = self.provider.energy_needed(&payment).await?;
                    let missing = energy.saturating_sub(resources.energy_available);
                    let activation = if resources.activated {
                        0
                    } else {
                        ACTIVATION_SUN
                    };
                    let (source, burn) = self.energy_source(missing, prices.energy).await?;
                    let needed = activation
                        .saturating_add(bandwidth_burn)
                        .saturating_add(burn);
                    // What the address holds already pays first (its balance is not a
                    // deposit being swept: TRX sweeps come after token sweeps).
                    let top_up = needed.saturating_sub(resources.balance);
                    let top_up = if resources.activated {
                        top_up
                    } else {
                        top_up.max(ACTIVATION_SUN)
                    };
                    (energy.max(1), source, top_up)
                }
            };
            let top_up = if top_up > 0 {
                Some((
                    self.gas_wallet()?.to_string(),
                    Amount::from_u128(u128::from(top_up)),
                ))
            } else {
                None
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
                    price_per_gas: u128::from(prices.energy),
                    gas_limit: energy,
                    top_up,
                    energy: source,
                    now: Utc::now(),
                })
                .await?;
            return Ok(match inserted {
                SweepInserted::Created(row) => {
                    tracing::info!(%chain, sweep = row.id, address = %row.address, asset = %row.asset, amount = %row.amount.base_units(), energy = row.gas_limit, source = ?row.energy_source.map(EnergySource::as_str), delegated = ?row.delegate_balance, top_up = ?row.top_up_amount.map(|a| a.base_units()), "a sweep starts");
                    Some(row)
                }
                SweepInserted::Open(_) => None,
            });
        }
        Ok(None)
    }

    /// Where `missing` energy comes from: lent by the staking account when it can lend that
    /// much now, beside what the open sweeps priced for a delegation not landed yet will ask
    /// of it (the node's figure does not know them: sweeps started in one round would
    /// otherwise all count on the same stake, and the later delegations be refused round after
    /// round); else burned (and what burning it costs).
    async fn energy_source(
        &self,
        missing: u64,
        energy_price: u64,
    ) -> Result<(Option<SweepEnergy>, u64), WalletError> {
        if missing == 0 {
            return Ok((None, 0));
        }
        if let Some(staker) = self.staker()? {
            let stake = self.provider.stake_for_energy(&staker, missing).await?;
            let lendable = self.provider.delegatable(&staker).await?;
            let promised: u64 = self
                .store
                .sweep_open(self.chain(), SWEEPS_OPEN_MAX)
                .await?
                .iter()
                .filter(|row| {
                    row.energy_source == Some(EnergySource::Delegation)
                        && row.delegate_txid.is_none()
                        && row.delegate_from.as_deref() == Some(staker.as_str())
                })
                .filter_map(|row| row.delegate_balance)
                .fold(0, u64::saturating_add);
            if lendable.saturating_sub(promised) >= stake {
                return Ok((
                    Some(SweepEnergy {
                        source: EnergySource::Delegation,
                        delegate: Some((staker.to_string(), stake)),
                    }),
                    0,
                ));
            }
            tracing::info!(chain = %self.chain(), %staker, lendable, promised, stake, "the staking account cannot lend the energy: it is burned");
        }
        Ok((
            Some(SweepEnergy {
                source: EnergySource::Burn,
                delegate: None,
            }),
            missing.saturating_mul(energy_price),
        ))
    }

    /// Prices and stores a transfer of the hot wallet's excess over the first asset's ceiling
    /// it passes to the cold address.
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
            let prices = self.provider.burn_prices().await?;
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
                    price_per_gas: u128::from(prices.energy),
                    gas_limit: self.provider.transfer_bytes(asset),
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

    fn parse(&self, row: &SweepRow, text: &str) -> Result<Address, WalletError> {
        Address::parse(self.chain(), self.policy.network, text).map_err(|error| {
            WalletError::Store(StoreError::Corrupt(format!(
                "sweep {}: {text}: {error}",
                row.id
            )))
        })
    }

    fn delegation(&self, row: &SweepRow, reclaim: bool) -> Result<Delegation, WalletError> {
        let (Some(from), Some(balance)) = (&row.delegate_from, row.delegate_balance) else {
            return Err(WalletError::Store(StoreError::Corrupt(format!(
                "sweep {} delegates without a staking account or balance",
                row.id
            ))));
        };
        let index = self.policy.staker_index.ok_or_else(|| {
            WalletError::Invalid(format!(
                "sweep {} was lent energy by {from}, but no staking account is configured: configure the one it was priced with",
                row.id
            ))
        })?;
        let owner = self.wallet.create_wallet(index)?;
        if owner.as_str() != from {
            return Err(WalletError::Invalid(format!(
                "sweep {} was lent energy by {from}, but the staking account is now {owner}: configure the one it was priced with",
                row.id
            )));
        }
        Ok(Delegation {
            from_index: index,
            owner,
            receiver: self.parse(row, &row.address)?,
            balance,
            reclaim,
        })
    }

    /// Where `payout` stands: its Live attempts settled first (landed, dead, or sent again).
    async fn payout(&self, wallet: &Wallet<P>, payout: &str) -> Result<Payout, WalletError> {
        let chain = self.chain();
        let mut attempts = self.store.attempts_of(chain, payout).await?;
        if attempts
            .iter()
            .any(|attempt| attempt.state == AttemptState::Live)
        {
            wallet.settle_payout(payout).await?;
            attempts = self.store.attempts_of(chain, payout).await?;
        }
        if let Some(landed) = attempts
            .iter()
            .find(|attempt| attempt.state == AttemptState::Landed)
        {
            let receipt = self.provider.receipt(&landed.txid).await?.ok_or_else(|| {
                WalletError::Chain(chain::provider::ChainError::retriable(format!(
                    "{payout}'s transaction {} landed but its receipt is not served yet",
                    landed.txid
                )))
            })?;
            return Ok(Payout::Landed {
                txid: landed.txid.clone(),
                receipt,
            });
        }
        if attempts
            .iter()
            .any(|attempt| attempt.state == AttemptState::Live)
        {
            return Ok(Payout::Waiting);
        }
        Ok(Payout::Unpaid)
    }

    /// Refuses a payment the node refused: the attempt stays stored (it is proven dead, or
    /// sent again, by later rounds) and the sweep keeps the reason.
    fn refused(payout: &str, paid: &crate::attempts::Paid) -> Result<(), WalletError> {
        if let chain::provider::SubmitOutcome::Rejected { reason, .. } = &paid.outcome {
            return Err(WalletError::Chain(chain::provider::ChainError::retriable(
                format!("the node refused {payout} ({reason}); it is tried again"),
            )));
        }
        Ok(())
    }

    /// Moves a sweep as far as its transactions allow now; returns its state after.
    async fn step(&self, row: SweepRow) -> Result<SweepState, WalletError> {
        let chain = self.chain();
        let mut row = row;
        if row.state == SweepState::ToppingUp
            && row.top_up_from.is_some()
            && row.top_up_txid.is_none()
        {
            let (Some(from), Some(amount)) = (&row.top_up_from, row.top_up_amount) else {
                unreachable!("checked above, with the store's check on both columns");
            };
            let gas_wallet = self.gas_wallet()?;
            if gas_wallet.as_str() != from {
                return Err(WalletError::Invalid(format!(
                    "sweep {}'s top-up is from {from}, but the gas wallet is now {gas_wallet}: configure the gas wallet it was priced with",
                    row.id
                )));
            }
            let payout = row.top_up_payout();
            match self.payout(&self.wallet, &payout).await? {
                Payout::Waiting => return Ok(row.state),
                Payout::Unpaid => {
                    let payment = Payment {
                        from_index: self.policy.gas_index,
                        from: gas_wallet,
                        to: self.parse(&row, &row.address)?,
                        asset: Asset::Native,
                        amount,
                    };
                    let paid = self.wallet.pay(&payout, &payment).await?;
                    self.stops.stop(StopAt::TopUpSent)?;
                    Self::refused(&payout, &paid)?;
                    return Ok(row.state);
                }
                Payout::Landed { txid, receipt } => {
                    self.stops.stop(StopAt::TopUpMined)?;
                    let fee = Some(Amount::from_u128(u128::from(receipt.fee)));
                    if !receipt.success {
                        let mut advance =
                            SweepAdvance::new(row.id, row.state, SweepState::Failed, Utc::now());
                        advance.top_up_txid = Some(txid);
                        advance.top_up_fee = fee;
                        advance.error = Some("its TRX top-up landed but failed".into());
                        return Ok(self.store.sweep_advance(&advance).await?.state);
                    }
                    let next = if row.energy_source == Some(EnergySource::Delegation) {
                        SweepState::ToppingUp
                    } else {
                        SweepState::Sweeping
                    };
                    let mut advance = SweepAdvance::new(row.id, row.state, next, Utc::now());
                    advance.top_up_txid = Some(txid);
                    advance.top_up_fee = fee;
                    advance.error = Some(String::new());
                    row = self.store.sweep_advance(&advance).await?;
                    tracing::info!(%chain, sweep = row.id, txid = ?row.top_up_txid, fee = receipt.fee, "a sweep's TRX top-up landed");
                }
            }
        }
        if row.state == SweepState::ToppingUp {
            // Its energy, lent (the top-up, if any, has landed).
            let delegation = self.delegation(&row, false)?;
            let payout = row.delegate_payout();
            match self.payout(&self.wallet, &payout).await? {
                Payout::Waiting => return Ok(row.state),
                Payout::Unpaid => {
                    let paid = self.wallet.pay_delegation(&payout, &delegation).await?;
                    self.stops.stop(StopAt::DelegationSent)?;
                    Self::refused(&payout, &paid)?;
                    return Ok(row.state);
                }
                Payout::Landed { txid, receipt } => {
                    self.stops.stop(StopAt::DelegationMined)?;
                    let to = if receipt.success {
                        SweepState::Sweeping
                    } else {
                        SweepState::Failed
                    };
                    let mut advance = SweepAdvance::new(row.id, row.state, to, Utc::now());
                    advance.delegate_txid = Some(txid);
                    advance.delegate_fee = Some(Amount::from_u128(u128::from(receipt.fee)));
                    advance.error = Some(if receipt.success {
                        String::new()
                    } else {
                        "its delegation landed but failed".into()
                    });
                    row = self.store.sweep_advance(&advance).await?;
                    tracing::info!(%chain, sweep = row.id, txid = ?row.delegate_txid, staked = ?row.delegate_balance, "a sweep's energy was lent");
                }
            }
        }
        if row.state != SweepState::Sweeping {
            return Ok(row.state);
        }
        let asset = if row.asset == "native" {
            Asset::Native
        } else {
            Asset::Token(self.parse(&row, &row.asset)?)
        };
        // A sweep is signed by the deposit address's key, a cold transfer by the hot wallet's.
        let wallet = match row.kind {
            SweepKind::Sweep => &self.deposits,
            SweepKind::Cold => &self.wallet,
        };
        let payout = row.sweep_payout();
        match self.payout(wallet, &payout).await? {
            Payout::Waiting => Ok(row.state),
            Payout::Unpaid => {
                let payment = Payment {
                    from_index: row.address_index,
                    from: self.parse(&row, &row.address)?,
                    to: self.parse(&row, &row.destination)?,
                    asset,
                    amount: row.amount,
                };
                let paid = wallet.pay(&payout, &payment).await?;
                self.stops.stop(StopAt::SweepSent)?;
                Self::refused(&payout, &paid)?;
                Ok(row.state)
            }
            Payout::Landed { txid, receipt } => {
                self.stops.stop(StopAt::SweepMined)?;
                let to = if receipt.success {
                    SweepState::Swept
                } else {
                    SweepState::Failed
                };
                let mut advance = SweepAdvance::new(row.id, row.state, to, Utc::now());
                advance.sweep_txid = Some(txid);
                advance.sweep_fee = Some(Amount::from_u128(u128::from(receipt.fee)));
                advance.energy_used = Some(receipt.energy);
                advance.bandwidth_used = Some(receipt.bandwidth);
                advance.error = Some(if receipt.success {
                    String::new()
                } else {
                    "the sweep landed but failed (out of energy?): its fee was burned, nothing moved"
                        .into()
                });
                let done = self.store.sweep_advance(&advance).await?;
                tracing::info!(chain = %self.chain(), sweep = done.id, address = %done.address, asset = %done.asset, amount = %done.amount.base_units(), txid = ?done.sweep_txid, energy = receipt.energy, energy_fee = receipt.energy_fee, bandwidth = receipt.bandwidth, cost = %done.cost().base_units(), source = ?done.energy_source.map(EnergySource::as_str), state = done.state.as_str(), "a sweep ended");
                Ok(done.state)
            }
        }
    }

    /// Takes back the energy an ended sweep was lent: by the delegation's attempts, so a
    /// delegation that landed is reclaimed even when the row never said so; a delegation that
    /// never landed (none made, or every attempt dead) has nothing to take back.
    async fn reclaim(&self, row: &SweepRow) -> Result<(), WalletError> {
        let chain = self.chain();
        match self.payout(&self.wallet, &row.delegate_payout()).await? {
            Payout::Waiting => return Ok(()),
            Payout::Unpaid => {
                let mut done = SweepAdvance::new(row.id, row.state, row.state, Utc::now());
                done.reclaim_done = true;
                self.store.sweep_advance(&done).await?;
                tracing::info!(%chain, sweep = row.id, "a sweep's delegation never landed: nothing to take back");
                return Ok(());
            }
            Payout::Landed { receipt, .. } if !receipt.success => {
                let mut done = SweepAdvance::new(row.id, row.state, row.state, Utc::now());
                done.reclaim_done = true;
                self.store.sweep_advance(&done).await?;
                return Ok(());
            }
            Payout::Landed { .. } => {}
        }
        let delegation = self.delegation(row, true)?;
        let payout = row.reclaim_payout();
        match self.payout(&self.wallet, &payout).await? {
            Payout::Waiting => Ok(()),
            Payout::Unpaid => {
                let paid = self.wallet.pay_delegation(&payout, &delegation).await?;
                self.stops.stop(StopAt::ReclaimSent)?;
                Self::refused(&payout, &paid)
            }
            Payout::Landed { txid, receipt } => {
                self.stops.stop(StopAt::ReclaimMined)?;
                if !receipt.success {
                    return Err(WalletError::Unsupported(format!(
                        "sweep {}'s reclaim {txid} landed but failed: the energy is still lent; look at the staking account",
                        row.id
                    )));
                }
                let mut done = SweepAdvance::new(row.id, row.state, row.state, Utc::now());
                done.reclaim_txid = Some(txid);
                done.reclaim_fee = Some(Amount::from_u128(u128::from(receipt.fee)));
                done.reclaim_done = true;
                let row = self.store.sweep_advance(&done).await?;
                debug_assert_eq!(row.reclaim_state, Some(ReclaimState::Done));
                tracing::info!(%chain, sweep = row.id, txid = ?row.reclaim_txid, cost = %row.cost().base_units(), "a sweep's energy was taken back");
                Ok(())
            }
        }
    }
}
