//! Bitcoin withdrawals: batched, paid by `chain_bitcoin::payout::Payer` in one transaction
//! per batch, settled and bumped by RBF, all in one round that the chain's scheduled
//! `withdrawal.reconcile` job runs (one at a time per chain; `payers.rs`). A Bitcoin
//! `withdrawal.pay` job pays nothing by itself: it ends at once, and the round batches.
//!
//! A round, each step asking the store first, so that a process killed at any await is
//! followed by a round that finishes its work and never pays a withdrawal twice:
//!
//! 1. the wallet's unspent outputs (`UtxoSet`, in memory, watching the hot wallet's receive
//!    and change keys and, when the deposit xpub is configured, every issued deposit address)
//!    are synced with the node (see "Deposits where they lie" below);
//! 2. `Payer::reconcile` settles the live attempts: Landed at `bitcoin_confirmations`, Dead
//!    when an input was spent deep enough by another transaction, the others sent again;
//! 3. every `processing`, `broadcast` and `confirming` withdrawal is swept by what the store
//!    holds for it: the payout that holds it as a member (`payout_member`) and that payout's
//!    attempts. `processing` and held by a live or landed payout (a crash after the batch
//!    was recorded): `broadcast` with that payout's txid, never paid again. `processing` and
//!    held by nothing (a crash before the batch was recorded): batched again. Landed:
//!    `completed` (txid, block, confirmations). In a block short of the policy:
//!    `confirming`. Held by nothing any more (every attempt proved dead, the store released
//!    it): back to `processing` and batched again. A payout the chain shows paid by an
//!    attempt the store does not hold live (`Reconciled::held`): `manual_review`;
//! 4. a payout whose newest attempt has been unconfirmed for `bitcoin_bump_after` is
//!    replaced by fee (`Payer::bump`: the node's estimate, and at least 10 % or 1 sat/vB
//!    above the old rate, capped by the fee policy; at most `BUMPS_MAX` times);
//! 5. batching: the withdrawals held by nothing and the `pending` ones, oldest first, once
//!    `bitcoin_batch_max` wait or the oldest has waited `bitcoin_batch_wait`: each refused
//!    one (below dust, another asset, one of our own addresses) -> `failed`; the others
//!    `pending -> processing` (compare-and-set each: a cancel that came first wins) and
//!    paid in ONE transaction whose payout is the batch (`Batch::key_of`) and whose members
//!    are the withdrawals, then `processing -> broadcast` with its txid. The store refuses a
//!    batch that holds a withdrawal another payout holds (`Claimed`): that one follows its
//!    payout, the others are batched without it. When the hot wallet cannot pay, the
//!    withdrawals stay `pending` with the reason in `error`, and wait.
//!
//! Deposits where they lie: Bitcoin has no consolidation. A payout spends credited deposits
//! on their deposit addresses directly, beside the hot wallet's own outputs, signing each
//! such input with the deposit address's key (`Keychain::Deposit`); the change goes to the
//! hot wallet. So:
//! - the set watches every issued deposit address (`deposit_address`, read by id as they are
//!   issued, each checked to be the deposit xpub's key at its index). An address issued
//!   after the set read the list may be paid in a block the set applies before it reads the
//!   list again: when new addresses appear, the blocks applied since the previous read are
//!   disconnected and applied again with them watched (`UtxoSet::undo_to`, or a rebuild when
//!   that is deeper than the undo records reach);
//! - a deposit output is selectable only while the store has it `credited` (the deposit
//!   worker's confirmation policy, `bitcoin_deposit_confirmations`: never a pending, ignored,
//!   orphaned or reversed one) and it is worth more than its input costs at the round's fee
//!   rate (`UtxoSet::spend_deposits`, set each round before batching);
//! - the hot wallet's balance (`hot_balances`) counts its own outputs only; the funds a batch
//!   may use count the selectable deposits too;
//! - the ledger (`web::ledger`) moves a deposit spent by a landed attempt from its address
//!   into the hot wallet (the attempt's inputs are stored), and a manual review's mark-paid
//!   accepts a transaction whose inputs are the hot wallet's or the deposit addresses'.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chain::address::{Address, Network};
use chain::attempts::AttemptError;
use chain::provider::{ChainError, ChainRead, Keychain, TxStatus};
use chain_bitcoin::batch::{Batch, Pending};
use chain_bitcoin::payout::{BUMPS_MAX, Payer, PayoutError};
use chain_bitcoin::{Bitcoin, UtxoSet};
use chrono::Utc;
use domain::{Amount, AssetCatalogue, Chain, WithdrawalState};
use signer::Signer;
use store::{AttemptState, Store, StoreError, WithdrawalRow, WithdrawalScan, WithdrawalTransition};
use wallet::WalletError;
use wallet::attempt_log::StoreAttempts;
use wallet::withdrawals::{PayOutcome, Reconciled};

/// The attempts' sender: the hot wallet.
const SENDER: &str = "hot";
/// How many withdrawals one round looks at in each state at most.
const SCAN_MAX: u32 = 500;
/// The most blocks one sync applies (the rest next round).
const SYNC_BLOCKS_MAX: u64 = 2_000;
/// The most issued addresses read in one query.
const ADDRESS_PAGE: u32 = 1_000;
/// The largest virtual size of one P2WPKH input (41 bytes and a 109-unit witness with a
/// 72-byte signature, rounded up): a deposit output worth no more than this many vbytes at
/// the round's fee rate would cost more to spend than it brings, and waits.
const INPUT_VBYTES: u64 = 69;
/// Confirmations a coin needs before it is spent (a coinbase output, to the hot wallet or a
/// deposit address, needs `COINBASE_MATURITY`: the set checks it).
const COIN_CONFIRMATIONS: u64 = 1;

/// How the Bitcoin withdrawals are batched, confirmed and bumped (`WithdrawalSettings`).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub confirmations: u64,
    pub batch_max: usize,
    pub batch_wait: Duration,
    pub bump_after: Duration,
    /// The hot wallet's key index, on the receive keychain (its address) and on the change
    /// keychain (its change).
    pub hot_index: u32,
    /// Satoshi the hot wallet keeps: a batch that would leave less waits for funds.
    pub floor: u64,
    /// The first block the unspent outputs are read from (`bitcoin_wallet_start_block`).
    pub start_block: u64,
}

/// See the module's documentation.
pub struct BitcoinWithdrawals {
    bitcoin: Bitcoin,
    utxos: UtxoSet,
    log: StoreAttempts,
    store: Store,
    signer: std::sync::Arc<dyn Signer>,
    catalogue: AssetCatalogue,
    network: Network,
    actor: String,
    policy: Policy,
    /// The issued deposit addresses the set watches; None when the adapter has no deposit
    /// xpub (no deposits are spent).
    deposits: Option<std::sync::Mutex<DepositWatch>>,
    /// One round at a time in this process (the job's unique key does it across processes).
    round: tokio::sync::Mutex<()>,
}

/// How far the set's watch of the issued deposit addresses goes.
#[derive(Debug, Default)]
struct DepositWatch {
    /// The newest `deposit_address` id watched.
    after_id: Option<i64>,
    /// The newest block the set had applied when the list was last read (the node's tip then,
    /// while the set was empty: no block mined before the read can pay an address issued
    /// after it); None before the first read.
    loaded: Option<u64>,
    /// Addresses watched.
    watched: u64,
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn chain_error(error: impl std::fmt::Display) -> WalletError {
    WalletError::Chain(ChainError::retriable(error.to_string()))
}

/// Whether a batch is due: full, or its oldest withdrawal has waited long enough.
pub fn batch_due(waiting: usize, oldest_waited: Duration, policy: &Policy) -> bool {
    waiting > 0 && (waiting >= policy.batch_max || oldest_waited >= policy.batch_wait)
}

/// The fee rate of a replacement: the node's estimate, and at least 10 % (1 sat/vB at least)
/// above the rate it replaces; at most `cap`. None when that is no higher than `old`.
pub fn bump_rate(old: u64, estimate: u64, cap: u64) -> Option<u64> {
    let raised = old.saturating_add((old / 10).max(1));
    let rate = raised.max(estimate).min(cap);
    (rate > old).then_some(rate)
}

impl BitcoinWithdrawals {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        bitcoin: Bitcoin,
        store: Store,
        signer: std::sync::Arc<dyn Signer>,
        catalogue: AssetCatalogue,
        network: Network,
        actor: String,
        policy: Policy,
    ) -> Result<Self, WalletError> {
        let utxos = UtxoSet::new();
        for keychain in [Keychain::Receive, Keychain::Change] {
            utxos.watch(
                bitcoin.key_script(keychain, policy.hot_index)?,
                keychain,
                policy.hot_index,
            );
        }
        let deposits = bitcoin
            .has_deposits()
            .then(|| std::sync::Mutex::new(DepositWatch::default()));
        let this = BitcoinWithdrawals {
            bitcoin,
            deposits,
            utxos,
            log: StoreAttempts::new(store.clone()),
            store,
            signer,
            catalogue,
            network,
            actor,
            policy,
            round: tokio::sync::Mutex::new(()),
        };
        // The whole chain at the start (in steps), then each round what is new.
        while this.sync().await? >= SYNC_BLOCKS_MAX {}
        Ok(this)
    }

    async fn sync(&self) -> Result<u64, WalletError> {
        self.watch_deposits().await?;
        let synced = self
            .utxos
            .sync(&self.bitcoin, self.policy.start_block, SYNC_BLOCKS_MAX)
            .await?;
        Ok(synced.applied)
    }

    /// Watches the deposit addresses issued since the last call (see the module's
    /// documentation): each must be the deposit xpub's key at its index, or it is left out
    /// with an error logged (its outputs are not ours to sign for). When there are new ones,
    /// the blocks applied since the previous read are applied again with them watched.
    async fn watch_deposits(&self) -> Result<(), WalletError> {
        let Some(watch) = &self.deposits else {
            return Ok(());
        };
        // The set's newest block before the list is read: an address the list misses was
        // issued after this, so only blocks applied after it can pay it.
        let mark = match self.utxos.last() {
            Some((height, _)) => height,
            None => self.bitcoin.tip().await?.head,
        };
        let mut after_id = lock(watch).after_id;
        let mut new = 0u64;
        loop {
            let page = self
                .store
                .deposit_address_list(&store::DepositAddressList {
                    chain: Some(Chain::Bitcoin),
                    reference: None,
                    after_id,
                    limit: ADDRESS_PAGE,
                })
                .await?;
            for row in &page {
                after_id = Some(row.id);
                let script = self.bitcoin.key_script(Keychain::Deposit, row.index)?;
                let issued = Address::parse(Chain::Bitcoin, self.network, &row.address)
                    .ok()
                    .and_then(|address| self.bitcoin.script_of(&address).ok());
                if issued.as_ref() != Some(&script) {
                    tracing::error!(
                        address = %row.address,
                        index = row.index,
                        reference = %row.reference,
                        "an issued bitcoin deposit address is not the deposit xpub's key at its index: its outputs are not spent by payouts"
                    );
                    continue;
                }
                self.utxos.watch(script, Keychain::Deposit, row.index);
                new += 1;
            }
            if page.len() < ADDRESS_PAGE as usize {
                break;
            }
        }
        let previous = {
            let mut state = lock(watch);
            state.after_id = after_id;
            state.watched += new;
            metrics::gauge!("coinsensei_bitcoin_deposit_addresses_watched")
                .set(state.watched as f64);
            state.loaded
        };
        if new > 0
            && let Some(previous) = previous
        {
            match self.utxos.undo_to(previous) {
                Ok(undone) => tracing::info!(
                    new,
                    undone,
                    "new bitcoin deposit addresses watched: the blocks applied since the last read are applied again"
                ),
                Err(error) => {
                    // Deeper than the undo records: rebuilt from the chain, to the node's tip
                    // before any payout selects from it (a partial set would offer outputs
                    // that later blocks spent).
                    tracing::warn!(%error, new, "rebuilding the bitcoin wallet's outputs from the chain for new deposit addresses");
                    self.utxos.reset();
                    while self
                        .utxos
                        .sync(&self.bitcoin, self.policy.start_block, SYNC_BLOCKS_MAX)
                        .await?
                        .applied
                        >= SYNC_BLOCKS_MAX
                    {}
                }
            }
        }
        let applied = self
            .utxos
            .last()
            .map_or(mark, |(height, _)| height.min(mark));
        lock(watch).loaded = Some(applied);
        Ok(())
    }

    /// Names the deposit outputs a payout may spend this round: those the store has
    /// `credited` and worth more than their input costs at `rate` sat/vB.
    async fn allow_deposits(&self, rate: u64) -> Result<(), WalletError> {
        if self.deposits.is_none() {
            return Ok(());
        }
        let worth = rate.saturating_mul(INPUT_VBYTES);
        let candidates: Vec<_> = self
            .utxos
            .all()
            .into_iter()
            .filter(|(utxo, _)| utxo.keychain == Keychain::Deposit)
            .collect();
        let outpoints: Vec<(String, u64)> = candidates
            .iter()
            .map(|(utxo, _)| {
                (
                    utxo.outpoint.txid.to_string(),
                    u64::from(utxo.outpoint.vout),
                )
            })
            .collect();
        let credited = self
            .store
            .deposits_credited(Chain::Bitcoin, &outpoints)
            .await?;
        let mut allowed = HashSet::new();
        let (mut uncredited, mut uneconomic) = (0u64, 0u64);
        for (utxo, _) in &candidates {
            if !credited.contains(&(
                utxo.outpoint.txid.to_string(),
                u64::from(utxo.outpoint.vout),
            )) {
                uncredited += 1;
            } else if utxo.value <= worth {
                uneconomic += 1;
            } else {
                allowed.insert(utxo.outpoint);
            }
        }
        metrics::gauge!("coinsensei_bitcoin_deposit_outputs", "state" => "spendable")
            .set(allowed.len() as f64);
        metrics::gauge!("coinsensei_bitcoin_deposit_outputs", "state" => "not_credited")
            .set(uncredited as f64);
        metrics::gauge!("coinsensei_bitcoin_deposit_outputs", "state" => "uneconomic")
            .set(uneconomic as f64);
        self.utxos.spend_deposits(allowed);
        Ok(())
    }

    fn payer(&self) -> Payer<'_, StoreAttempts> {
        Payer {
            bitcoin: &self.bitcoin,
            utxos: &self.utxos,
            log: &self.log,
            signer: self.signer.as_ref(),
            sender: SENDER,
            min_confirmations: COIN_CONFIRMATIONS,
            settle_confirmations: self.policy.confirmations,
        }
    }

    /// A `withdrawal.pay` job: nothing to do alone (the round batches).
    pub async fn pay(&self, id: i64) -> PayOutcome {
        tracing::debug!(
            withdrawal = id,
            "bitcoin withdrawals are batched by the reconcile round"
        );
        PayOutcome::Done
    }

    async fn moved(
        &self,
        row: &WithdrawalRow,
        to: WithdrawalState,
        change: impl FnOnce(&mut WithdrawalTransition),
    ) -> Result<WithdrawalRow, StoreError> {
        let mut transition =
            WithdrawalTransition::new(row.id, row.state, to, self.actor.clone(), Utc::now());
        change(&mut transition);
        let moved = self.store.withdrawal_transition(&transition).await?;
        if row.state != to {
            tracing::info!(withdrawal = row.id, from = %row.state, %to, txid = ?moved.txid, "withdrawal moved");
            metrics::counter!("coinsensei_withdrawal_transitions_total", "chain" => "bitcoin", "to" => to.as_str()).increment(1);
        }
        Ok(moved)
    }

    async fn scan(&self, states: Vec<WithdrawalState>) -> Result<Vec<WithdrawalRow>, StoreError> {
        self.store
            .withdrawal_scan(&WithdrawalScan {
                chain: Chain::Bitcoin,
                states,
                after_id: 0,
                limit: SCAN_MAX,
            })
            .await
    }

    /// One round (see the module's documentation).
    pub async fn round(&self) -> Result<Reconciled, WalletError> {
        let _one = self.round.lock().await;
        let mut report = Reconciled::default();
        self.sync().await?;
        let payer = self.payer();
        let settled = payer.reconcile().await.map_err(chain_error)?;
        report.rebroadcasts = u64::try_from(settled.rebroadcast.len()).unwrap_or(u64::MAX);
        let held: HashSet<String> = settled.held.into_iter().collect();
        let mut free = Vec::new();
        for row in self
            .scan(vec![
                WithdrawalState::Processing,
                WithdrawalState::Broadcast,
                WithdrawalState::Confirming,
            ])
            .await?
        {
            match self.sweep(&row, &held, &mut report).await {
                Ok(Some(row)) => free.push(row),
                Ok(None) => {}
                Err(error) => report
                    .errors
                    .push(format!("withdrawal {}: {error}", row.id)),
            }
        }
        if let Err(error) = self.bump_stale(&payer).await {
            report.errors.push(format!("bumping: {error}"));
        }
        if let Err(error) = self.batch(&payer, free, &mut report).await {
            report.errors.push(format!("batching: {error}"));
        }
        Ok(report)
    }

    /// The txid of the payout's landed attempt, else its newest live one.
    async fn standing(&self, payout: &str) -> Result<Option<(String, bool)>, StoreError> {
        let attempts = self.store.attempts_of(Chain::Bitcoin, payout).await?;
        if let Some(landed) = attempts.iter().find(|a| a.state == AttemptState::Landed) {
            return Ok(Some((landed.txid.clone(), true)));
        }
        Ok(attempts
            .iter()
            .rev()
            .find(|a| a.state == AttemptState::Live)
            .map(|a| (a.txid.clone(), false)))
    }

    /// Step 3 for one withdrawal; `Some(row)` when it is `processing` and held by nothing:
    /// to be batched again.
    async fn sweep(
        &self,
        row: &WithdrawalRow,
        held: &HashSet<String>,
        report: &mut Reconciled,
    ) -> Result<Option<WithdrawalRow>, WalletError> {
        let Some(payout) = self
            .store
            .payout_of_member(Chain::Bitcoin, &row.payout_key())
            .await?
        else {
            // No transaction that pays it can land (none stored, or all proved dead).
            return Ok(match row.state {
                WithdrawalState::Processing => Some(row.clone()),
                WithdrawalState::Broadcast => {
                    let moved = self
                        .moved(row, WithdrawalState::Processing, |t| {
                            t.error = Some(
                                "every transaction of its batch was proved dead (an input spent \
                                 by another transaction): batched again"
                                    .into(),
                            );
                        })
                        .await?;
                    report
                        .moved
                        .push((row.id, row.state, WithdrawalState::Processing));
                    Some(moved)
                }
                WithdrawalState::Confirming => {
                    // Back, never forward; the next round batches it again.
                    self.moved(row, WithdrawalState::Broadcast, |t| {
                        t.error = Some("its transaction left the chain".into());
                    })
                    .await?;
                    report
                        .moved
                        .push((row.id, row.state, WithdrawalState::Broadcast));
                    None
                }
                _ => None,
            });
        };
        if held.contains(&payout) {
            let reason = format!(
                "batch {payout}: the chain shows it paid by a transaction the store does not \
                 hold live; a person must decide"
            );
            tracing::error!(withdrawal = row.id, %reason, "a withdrawal needs a person");
            self.moved(row, WithdrawalState::ManualReview, |t| {
                t.error = Some(reason)
            })
            .await?;
            report
                .moved
                .push((row.id, row.state, WithdrawalState::ManualReview));
            return Ok(None);
        }
        let Some((txid, landed)) = self.standing(&payout).await? else {
            // Settled meanwhile: the next round sees where.
            return Ok(None);
        };
        let mut row = row.clone();
        if row.state == WithdrawalState::Processing {
            // A crash after its batch was recorded: that batch pays it, nothing else may.
            let txid = txid.clone();
            row = self
                .moved(&row, WithdrawalState::Broadcast, |t| {
                    t.txid = Some(txid);
                    t.error = None;
                })
                .await?;
            report.moved.push((
                row.id,
                WithdrawalState::Processing,
                WithdrawalState::Broadcast,
            ));
        }
        let status = self.bitcoin.transaction(&txid).await?;
        match status {
            TxStatus::Included {
                block,
                confirmations,
                ..
            } => {
                let to = if landed && confirmations >= self.policy.confirmations {
                    WithdrawalState::Completed
                } else {
                    WithdrawalState::Confirming
                };
                if row.state == to && i64::try_from(confirmations).ok() == Some(row.confirmations) {
                    return Ok(None);
                }
                let fee = if to == WithdrawalState::Completed {
                    self.fee_share(&txid).await
                } else {
                    None
                };
                self.moved(&row, to, |t| {
                    t.txid = Some(txid.clone());
                    t.fee = fee;
                    t.block_height = i64::try_from(block.number).ok();
                    t.confirmations = i64::try_from(confirmations).ok();
                    t.error = None;
                })
                .await?;
                if row.state != to {
                    report.moved.push((row.id, row.state, to));
                }
            }
            TxStatus::Pending | TxStatus::NotFound => {
                if row.state == WithdrawalState::Confirming {
                    self.moved(&row, WithdrawalState::Broadcast, |t| {
                        t.txid = Some(txid.clone());
                        t.error = Some(format!("{txid} left the chain in a reorg"));
                    })
                    .await?;
                    report
                        .moved
                        .push((row.id, row.state, WithdrawalState::Broadcast));
                } else if row.txid.as_deref() != Some(txid.as_str()) {
                    // Replaced by fee: show the newest.
                    self.moved(&row, row.state, |t| t.txid = Some(txid.clone()))
                        .await?;
                }
            }
        }
        Ok(None)
    }

    /// Step 4: RBF for payouts unconfirmed too long.
    async fn bump_stale(&self, payer: &Payer<'_, StoreAttempts>) -> Result<(), WalletError> {
        let live = self
            .store
            .attempts_live(Chain::Bitcoin, Some(SENDER))
            .await?;
        let mut newest: HashMap<&str, &store::Attempt> = HashMap::new();
        let mut bumps: HashMap<&str, usize> = HashMap::new();
        for attempt in &live {
            newest.insert(attempt.payout.as_str(), attempt);
            if attempt.replaces.is_some() {
                *bumps.entry(attempt.payout.as_str()).or_default() += 1;
            }
        }
        let after = chrono::Duration::from_std(self.policy.bump_after).unwrap_or_default();
        let now = Utc::now();
        let mut estimate = None;
        for (payout, attempt) in newest {
            if now - attempt.created_at < after
                || bumps.get(payout).copied().unwrap_or(0) >= BUMPS_MAX
            {
                continue;
            }
            if let TxStatus::Included { .. } = self.bitcoin.transaction(&attempt.txid).await? {
                continue;
            }
            let estimated = match estimate {
                Some(rate) => rate,
                None => *estimate.insert(self.bitcoin.fee_rate().await?),
            };
            let current = chain::attempts::Attempt {
                payout: attempt.payout.clone(),
                sender: attempt.sender.clone(),
                txid: attempt.txid.clone(),
                raw: attempt.raw.clone(),
                inputs: attempt
                    .inputs
                    .iter()
                    .map(|o| chain::attempts::Outpoint {
                        txid: o.txid.clone(),
                        vout: o.vout,
                    })
                    .collect(),
                replaces: attempt.replaces.clone(),
                state: chain::attempts::AttemptState::Live,
            };
            let old = match payer.fee_rate_of(&current) {
                Ok(rate) => rate,
                Err(error) => {
                    tracing::debug!(payout, %error, "cannot bump a bitcoin payout now");
                    continue;
                }
            };
            let Some(rate) = bump_rate(old, estimated, self.bitcoin.fee_policy().cap_sat_vb) else {
                continue;
            };
            match payer.bump(payout, rate).await {
                Ok(paid) => {
                    tracing::info!(payout, old_rate = old, rate, txid = %paid.txid, "bitcoin payout bumped by fee");
                    metrics::counter!("coinsensei_withdrawal_replacements_total", "chain" => "bitcoin").increment(1);
                }
                Err(error) => {
                    tracing::warn!(payout, %error, "bumping a bitcoin payout failed");
                }
            }
        }
        Ok(())
    }

    /// What a withdrawal pays, or why it never can.
    fn output_of(&self, row: &WithdrawalRow) -> Result<(Address, Amount), String> {
        let asset = self
            .catalogue
            .get(Chain::Bitcoin, &row.asset)
            .map_err(|error| error.to_string())?;
        if asset.contract.is_some() {
            return Err(format!("{} is not native bitcoin", row.asset));
        }
        let to = Address::parse(Chain::Bitcoin, self.network, &row.destination)
            .map_err(|error| format!("destination: {error}"))?;
        let sat: u128 = row
            .amount
            .parse()
            .map_err(|_| format!("amount {:?}", row.amount))?;
        let dust = self.bitcoin.dust_of(&to).map_err(|e| e.to_string())?;
        if sat < u128::from(dust) {
            return Err(format!(
                "{sat} satoshi to {to} is below the dust limit ({dust} satoshi)"
            ));
        }
        let script = self.bitcoin.script_of(&to).map_err(|e| e.to_string())?;
        if self.utxos.key_of(&script).is_some() {
            return Err(format!(
                "{to} is one of our own addresses (the hot wallet's, or an issued deposit address)"
            ));
        }
        Ok((to, Amount::from_u128(sat)))
    }

    /// A withdrawal's share of its batch's fee (satoshi): the transaction's fee divided
    /// evenly among the outputs that pay someone else (the change is ours), rounded down.
    /// None when the node cannot say; never guessed.
    async fn fee_share(&self, txid: &str) -> Option<String> {
        let (fee, scripts) = match self.bitcoin.fee_and_outputs(txid).await {
            Ok(found) => found?,
            Err(error) => {
                tracing::warn!(%txid, %error, "the batch's fee could not be read");
                return None;
            }
        };
        let payees = scripts
            .iter()
            .filter(|script| self.utxos.key_of(script).is_none())
            .count();
        let payees = u64::try_from(payees).ok().filter(|n| *n > 0)?;
        Some((fee / payees).to_string())
    }

    /// What the hot wallet can spend now, as ("BTC", its receive address, satoshi): the
    /// figure operators watch (coins a live payout holds are not counted, nor deposits on
    /// their addresses: the deposit balances show those).
    pub async fn hot_balances(&self) -> Result<Vec<(String, String, Amount)>, WalletError> {
        let address = self.signer.address(Chain::Bitcoin, self.policy.hot_index)?;
        let (sat, _) = self.spendable(false).await?;
        Ok(vec![(
            "BTC".into(),
            address.to_string(),
            Amount::from_u128(u128::from(sat)),
        )])
    }

    /// What can be spent now (satoshi, and how many outputs): the hot wallet's confirmed
    /// outputs no payout holds, and with `deposits` the deposit outputs this round allows.
    async fn spendable(&self, deposits: bool) -> Result<(u64, usize), WalletError> {
        let reserved: HashSet<(String, u32)> = self
            .store
            .utxo_reserved(Chain::Bitcoin)
            .await?
            .into_iter()
            .map(|(o, _)| (o.txid, o.vout))
            .collect();
        let tip = self.bitcoin.tip().await?.head;
        let coins: Vec<u64> = self
            .utxos
            .available(tip, COIN_CONFIRMATIONS)
            .into_iter()
            .filter(|u| deposits || u.keychain != Keychain::Deposit)
            .filter(|u| !reserved.contains(&(u.outpoint.txid.to_string(), u.outpoint.vout)))
            .map(|u| u.value)
            .collect();
        Ok((coins.iter().sum(), coins.len()))
    }

    /// Step 5 (see the module's documentation).
    async fn batch(
        &self,
        payer: &Payer<'_, StoreAttempts>,
        free: Vec<WithdrawalRow>,
        report: &mut Reconciled,
    ) -> Result<(), WalletError> {
        let pending = self.scan(vec![WithdrawalState::Pending]).await?;
        let mut waiting: Vec<WithdrawalRow> = free.into_iter().chain(pending).collect();
        waiting.sort_by_key(|row| row.id);
        if waiting.is_empty() {
            return Ok(());
        }
        let rate = self.bitcoin.fee_rate().await?;
        self.allow_deposits(rate).await?;
        while !waiting.is_empty() {
            let oldest = waiting
                .iter()
                .map(|row| row.created_at)
                .min()
                .unwrap_or_else(Utc::now);
            let waited = (Utc::now() - oldest).to_std().unwrap_or_default();
            if !batch_due(waiting.len(), waited, &self.policy) {
                return Ok(());
            }
            let rest = waiting.split_off(waiting.len().min(self.policy.batch_max));
            let taken = std::mem::replace(&mut waiting, rest);
            // Refused ones fail alone; the others go on.
            let mut batch = Vec::new();
            for row in taken {
                match self.output_of(&row) {
                    Ok(output) => batch.push((row, output)),
                    Err(reason) => {
                        let moved = self
                            .moved(&row, WithdrawalState::Failed, |t| {
                                t.error =
                                    Some(format!("refused before anything was signed: {reason}"));
                            })
                            .await;
                        match moved {
                            Ok(_) => {
                                report
                                    .moved
                                    .push((row.id, row.state, WithdrawalState::Failed))
                            }
                            Err(error) => report
                                .errors
                                .push(format!("withdrawal {}: {error}", row.id)),
                        }
                    }
                }
            }
            // The hot wallet, with the deposits it may spend, must cover the amounts and a
            // fee that spends every coin it has.
            let (spendable, coins) = self.spendable(true).await?;
            let fee_room =
                rate.saturating_mul(11 + 43 * (batch.len() as u64 + 1) + 68 * coins as u64);
            let mut total: u64 = 0;
            let mut fits = Vec::new();
            let mut short = Vec::new();
            for (row, output) in batch {
                let sat = u64::try_from(output.1.base_units()).unwrap_or(u64::MAX);
                let needs = total
                    .saturating_add(sat)
                    .saturating_add(fee_room)
                    .saturating_add(self.policy.floor);
                if needs <= spendable {
                    total += sat;
                    fits.push((row, output));
                } else {
                    short.push(row);
                }
            }
            if !short.is_empty() {
                let reason = format!(
                    "waiting for funds: the hot wallet can spend {spendable} satoshi now (its \
                     confirmed outputs and the credited deposits no payout holds) and keeps {} \
                     satoshi; this withdrawal does not fit with the others and the fee",
                    self.policy.floor
                );
                metrics::counter!("coinsensei_withdrawal_funds_short_total", "chain" => "bitcoin")
                    .increment(short.len() as u64);
                for row in &short {
                    if row.error.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(withdrawal = row.id, %reason, "a withdrawal waits for the hot wallet");
                        if let Err(error) = self
                            .moved(row, row.state, |t| t.error = Some(reason.clone()))
                            .await
                        {
                            report
                                .errors
                                .push(format!("withdrawal {}: {error}", row.id));
                        }
                    }
                }
            }
            // Taken: pending -> processing, each a compare-and-set.
            let mut members = Vec::new();
            for (row, output) in fits {
                if row.state == WithdrawalState::Processing {
                    members.push((row, output));
                    continue;
                }
                match self.moved(&row, WithdrawalState::Processing, |_| {}).await {
                    Ok(taken) => members.push((taken, output)),
                    // Canceled meanwhile: not ours to pay.
                    Err(StoreError::Conflict(reason)) => {
                        tracing::info!(withdrawal = row.id, reason, "left out of the batch");
                    }
                    Err(error) => report
                        .errors
                        .push(format!("withdrawal {}: {error}", row.id)),
                }
            }
            self.pay_batch(payer, members, rate, report).await?;
            if !short.is_empty() {
                // The rest wait for funds too.
                return Ok(());
            }
        }
        Ok(())
    }

    /// Pays `members` (all `processing`) in one transaction; a member another payout holds
    /// follows that payout, the others are paid without it.
    async fn pay_batch(
        &self,
        payer: &Payer<'_, StoreAttempts>,
        mut members: Vec<(WithdrawalRow, (Address, Amount))>,
        rate: u64,
        report: &mut Reconciled,
    ) -> Result<(), WalletError> {
        while !members.is_empty() {
            let pending: Vec<Pending> = members
                .iter()
                .map(|(row, (to, amount))| Pending {
                    id: row.payout_key(),
                    to: to.clone(),
                    amount: *amount,
                })
                .collect();
            let key = Batch::key_of(&pending);
            let batch = Batch {
                key: key.clone(),
                withdrawals: pending,
            };
            let paid = payer
                .pay(
                    &key,
                    &batch.ids(),
                    &batch.outputs(),
                    rate,
                    self.policy.hot_index,
                )
                .await;
            match paid {
                Ok(paid) => {
                    tracing::info!(batch = %key, txid = %paid.txid, withdrawals = members.len(), outcome = ?paid.outcome, "bitcoin batch paid");
                    metrics::histogram!("coinsensei_bitcoin_batch_withdrawals")
                        .record(members.len() as f64);
                    for (row, _) in &members {
                        match self
                            .moved(row, WithdrawalState::Broadcast, |t| {
                                t.txid = Some(paid.txid.clone());
                                t.error = None;
                            })
                            .await
                        {
                            Ok(_) => {
                                report
                                    .moved
                                    .push((row.id, row.state, WithdrawalState::Broadcast))
                            }
                            // The next round's sweep heals it from the store.
                            Err(error) => report
                                .errors
                                .push(format!("withdrawal {}: {error}", row.id)),
                        }
                    }
                    return Ok(());
                }
                Err(PayoutError::Log(AttemptError::Claimed { member, payout })) => {
                    tracing::warn!(%member, %payout, "a withdrawal of the batch is paid by another payout: it follows that one");
                    let Some(at) = members
                        .iter()
                        .position(|(row, _)| row.payout_key() == member)
                    else {
                        return Err(chain_error(format!(
                            "the store says {member} of batch {key} is claimed, but it is not in it"
                        )));
                    };
                    let (row, _) = members.remove(at);
                    if let Some((txid, _)) = self.standing(&payout).await? {
                        self.moved(&row, WithdrawalState::Broadcast, |t| {
                            t.txid = Some(txid);
                            t.error = None;
                        })
                        .await?;
                        report
                            .moved
                            .push((row.id, row.state, WithdrawalState::Broadcast));
                    }
                }
                Err(PayoutError::Chain(error)) if !error.retriable => {
                    // Built or checked before anything was recorded: nothing signed is
                    // stored, they stay `processing` held by nothing and are batched again.
                    let reason = format!("the batch could not be built: {error}");
                    tracing::warn!(batch = %key, %reason, "bitcoin batch not paid");
                    for (row, _) in &members {
                        if let Err(error) = self
                            .moved(row, row.state, |t| t.error = Some(reason.clone()))
                            .await
                        {
                            report
                                .errors
                                .push(format!("withdrawal {}: {error}", row.id));
                        }
                    }
                    return Ok(());
                }
                // Anything else (the store or the node away, the signer): the withdrawals
                // stay `processing`; the next round finds whether the batch was recorded.
                Err(error) => return Err(chain_error(format!("batch {key}: {error}"))),
            }
        }
        Ok(())
    }
}

/// Manual review on Bitcoin (`store::reviews`; the rules are `wallet::withdrawals::review`'s):
/// a withdrawal is paid by a batch, so what could still pay it is the batch that holds it as
/// a member (`payout_member`), and each of that batch's attempts is dead when the store proved
/// it, or when one of its inputs was spent, deep enough, by another transaction.
impl BitcoinWithdrawals {
    /// Judges `review` of `row` on the chain.
    pub async fn review(
        &self,
        review: &store::ReviewRow,
        row: &WithdrawalRow,
    ) -> Result<wallet::withdrawals::review::Verdict, WalletError> {
        use wallet::withdrawals::review::{Verdict, same_txid};
        let _round = self.round.lock().await;
        let tip = self.utxos_synced().await?;
        let except = review.txid.as_deref();
        let mut proofs = Vec::new();
        // The batch holding it, when the txid to mark it paid by is one of its attempts.
        let mut own_batch = None;
        if let Some(batch) = self
            .store
            .payout_of_member(Chain::Bitcoin, &row.payout_key())
            .await?
        {
            for attempt in self.store.attempts_of(Chain::Bitcoin, &batch).await? {
                if except.is_some_and(|txid| same_txid(txid, &attempt.txid)) {
                    own_batch = Some(batch.clone());
                    continue;
                }
                if matches!(attempt.state, AttemptState::Dead | AttemptState::Replaced) {
                    proofs.push(format!("{} {}", attempt.txid, attempt.state.as_str()));
                    continue;
                }
                // Live or landed in the store: dead only if another transaction spent one of
                // its inputs deep enough.
                let conflict = attempt.inputs.iter().find_map(|input| {
                    let outpoint = chain_bitcoin::bitcoin::OutPoint {
                        txid: input.txid.parse().ok()?,
                        vout: input.vout,
                    };
                    let spend = self.utxos.spent_at(&outpoint)?;
                    let depth = tip.saturating_sub(spend.height) + 1;
                    (spend.spender.to_string() != attempt.txid
                        && depth >= self.policy.confirmations)
                        .then(|| (input.to_string(), spend.spender.to_string(), depth))
                });
                match conflict {
                    Some((input, spender, depth)) => proofs.push(format!(
                        "{} dead: its input {input} was spent by {spender} ({depth} confirmations)",
                        attempt.txid
                    )),
                    None => {
                        return Ok(Verdict::Refused(format!(
                            "attempt {} of batch {batch} is {} and none of its inputs was spent by another transaction deep enough: it may still pay",
                            attempt.txid,
                            attempt.state.as_str()
                        )));
                    }
                }
            }
        }
        let dead = if proofs.is_empty() {
            "no batch holds it: nothing that pays it can land".to_string()
        } else {
            format!(
                "every transaction of its batch is provably dead: {}",
                proofs.join("; ")
            )
        };
        match review.action {
            store::ReviewAction::MarkFailed | store::ReviewAction::Retry => Ok(Verdict::Proved {
                outcome: dead,
                paid: None,
            }),
            store::ReviewAction::MarkPaid => {
                self.paid_by(row, except.unwrap_or_default(), own_batch)
                    .await
            }
        }
    }

    /// The wallet's outputs synced with the node; the node's height.
    async fn utxos_synced(&self) -> Result<u64, WalletError> {
        while self.sync().await? >= SYNC_BLOCKS_MAX {}
        Ok(self.bitcoin.tip().await?.head)
    }

    async fn paid_by(
        &self,
        row: &WithdrawalRow,
        txid: &str,
        batch: Option<String>,
    ) -> Result<wallet::withdrawals::review::Verdict, WalletError> {
        use wallet::withdrawals::review::{Verdict, same_txid};
        let (block, confirmations) = match self.bitcoin.transaction(txid).await? {
            TxStatus::Included {
                block,
                confirmations,
                ..
            } => (block, confirmations),
            TxStatus::Pending => {
                return Ok(Verdict::Refused(format!(
                    "transaction {txid} is not in a block yet"
                )));
            }
            TxStatus::NotFound => {
                return Ok(Verdict::Refused(format!(
                    "the node does not know transaction {txid}"
                )));
            }
        };
        if confirmations < self.policy.confirmations {
            return Ok(Verdict::Refused(format!(
                "transaction {txid} has {confirmations} confirmations of the {} bitcoin_confirmations needs: ask again later",
                self.policy.confirmations
            )));
        }
        let (to, amount) = match self.output_of(row) {
            Ok(payment) => payment,
            Err(error) => return Ok(Verdict::Refused(error)),
        };
        let watch = chain::provider::WatchSet {
            addresses: vec![to.clone()],
            tokens: vec![],
        };
        let scanned = self
            .bitcoin
            .scan(block.number, block.number, &watch)
            .await?;
        let Some(output) = scanned.deposits.iter().find(|output| {
            same_txid(&output.txid, txid) && output.to == to && output.amount == amount
        }) else {
            return Ok(Verdict::Refused(format!(
                "transaction {txid} has no output of exactly {} sat to {}",
                row.amount, row.destination
            )));
        };
        let Some(inputs) = self.bitcoin.input_scripts(txid).await? else {
            return Ok(Verdict::Refused(format!(
                "the node does not know transaction {txid}"
            )));
        };
        if inputs.is_empty()
            || inputs
                .iter()
                .any(|script| self.utxos.key_of(script).is_none())
        {
            return Ok(Verdict::Refused(format!(
                "transaction {txid} spends outputs that are neither the hot wallet's nor an issued deposit address's: it is not a payment from our wallet"
            )));
        }
        if let Some(other) = self
            .store
            .withdrawal_with_txid(Chain::Bitcoin, txid, row.id, batch.as_deref())
            .await?
        {
            return Ok(Verdict::Refused(format!(
                "transaction {txid} is withdrawal {other}'s: one transfer proves one withdrawal paid"
            )));
        }
        Ok(Verdict::Proved {
            outcome: format!(
                "transaction {txid} pays {} sat to {} from the hot wallet (output {}, block {}, {confirmations} confirmations)",
                row.amount, row.destination, output.position, block.number
            ),
            paid: Some(store::ReviewPaid {
                position: i64::try_from(output.position).unwrap_or(i64::MAX),
                block_height: i64::try_from(block.number).ok(),
                confirmations: i64::try_from(confirmations).ok(),
                fee: self.fee_share(txid).await,
                batch,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address of no wallet here (BIP173's regtest example).
    const ELSEWHERE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

    /// The payer watches issued deposit addresses as they are issued. One issued after the
    /// set applied a block that pays it (the race between issuing and the round's read of
    /// the list) is still found: the blocks applied since the previous read are applied
    /// again with it watched. A stored address that is not the deposit xpub's key at its
    /// index is never watched. On a real regtest node and store; the blocks pay the
    /// addresses by their coinbase.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deposit_address_issued_after_a_block_that_pays_it_is_found_by_applying_again() {
        let db = testkit::TestDb::new(testkit::Backend::Sqlite).await;
        let store = db.store().await;
        let node = testkit::Bitcoind::start().await;
        let keys = signer::InProcessSigner::new(
            &signer::Mnemonic::parse(
                "abandon abandon abandon abandon abandon abandon abandon abandon abandon \
                 abandon abandon about",
            )
            .unwrap(),
            Network::Regtest,
        );
        let deposit_xpub = keys.deposit_xpub(Chain::Bitcoin).unwrap();
        let address = |index| deposit_xpub.address(index).unwrap().to_string();
        let issue = |reference: &'static str, index: u32, address: String| {
            let store = store.clone();
            async move {
                let inserted = store
                    .deposit_address_insert(&store::DepositAddressInsert {
                        chain: Chain::Bitcoin,
                        reference: reference.into(),
                        index,
                        address,
                        actor: "test".into(),
                        now: Utc::now(),
                    })
                    .await
                    .unwrap();
                assert!(matches!(
                    inserted,
                    store::DepositAddressInserted::Created(_)
                ));
            }
        };
        let mine_to = |to: String| {
            let node = &node;
            async move {
                let hashes: Vec<String> =
                    serde_json::from_str(&node.cli(&["generatetoaddress", "1", &to]).await)
                        .unwrap();
                let block: serde_json::Value =
                    serde_json::from_str(&node.cli(&["getblock", &hashes[0]]).await).unwrap();
                chain_bitcoin::bitcoin::OutPoint {
                    txid: block["tx"][0].as_str().unwrap().parse().unwrap(),
                    vout: 0,
                }
            }
        };
        issue("user:a", 0, address(0)).await;
        let paid_a = mine_to(address(0)).await;
        let rpc =
            chain_bitcoin::Rpc::with_cookie(&node.url, &node.cookie(), Duration::from_secs(30))
                .unwrap();
        let bitcoin = Bitcoin::connect(
            rpc,
            Network::Regtest,
            keys.xpub(Chain::Bitcoin).unwrap(),
            chain_bitcoin::FeePolicy::default(),
        )
        .await
        .unwrap()
        .with_deposits(deposit_xpub.clone())
        .unwrap();
        let signer: std::sync::Arc<dyn Signer> = std::sync::Arc::new(keys);
        let payer = BitcoinWithdrawals::new(
            bitcoin.clone(),
            store.clone(),
            signer.clone(),
            AssetCatalogue::new(vec![]).unwrap(),
            Network::Regtest,
            "test".into(),
            policy(),
        )
        .await
        .unwrap();
        let found = payer.utxos.get(&paid_a).unwrap();
        assert_eq!((found.keychain, found.index), (Keychain::Deposit, 0));

        // Address 1 is paid in a block the payer applies before the address is issued.
        let paid_b = mine_to(address(1)).await;
        payer.sync().await.unwrap();
        assert_eq!(
            payer.utxos.last().unwrap().0,
            payer.bitcoin.tip().await.unwrap().head
        );
        assert!(payer.utxos.get(&paid_b).is_none(), "not issued yet");
        issue("user:b", 1, address(1)).await;
        // And a row whose address is another index's: never watched.
        issue("user:c", 2, address(3)).await;
        let paid_c = mine_to(address(3)).await;
        node.cli(&["generatetoaddress", "2", ELSEWHERE]).await;
        payer.sync().await.unwrap();
        let found = payer
            .utxos
            .get(&paid_b)
            .expect("the block that paid address 1 was applied again with it watched");
        assert_eq!((found.keychain, found.index), (Keychain::Deposit, 1));
        assert!(
            payer.utxos.get(&paid_c).is_none(),
            "a mismatched row is not watched"
        );
        assert!(payer.utxos.get(&paid_a).is_some());
        // Coinbase outputs, not credited deposits: none is available to a payout.
        let tip = payer.bitcoin.tip().await.unwrap().head;
        payer.allow_deposits(1).await.unwrap();
        assert!(
            payer
                .utxos
                .available(tip, 1)
                .iter()
                .all(|utxo| utxo.keychain != Keychain::Deposit)
        );
        assert_eq!(lock(payer.deposits.as_ref().unwrap()).watched, 2);

        // From a later start block (`bitcoin_wallet_start_block`): what older blocks paid is
        // not read, what later ones pay is.
        let start_block = payer.bitcoin.tip().await.unwrap().head + 1;
        let later = BitcoinWithdrawals::new(
            bitcoin,
            store.clone(),
            signer,
            AssetCatalogue::new(vec![]).unwrap(),
            Network::Regtest,
            "test".into(),
            Policy {
                start_block,
                ..policy()
            },
        )
        .await
        .unwrap();
        assert!(later.utxos.all().is_empty(), "{:?}", later.utxos.all());
        let paid_later = mine_to(address(1)).await;
        later.sync().await.unwrap();
        assert_eq!(later.utxos.last().unwrap().0, start_block);
        let found = later.utxos.get(&paid_later).unwrap();
        assert_eq!((found.keychain, found.index), (Keychain::Deposit, 1));
        assert_eq!(later.utxos.all().len(), 1);
    }

    fn policy() -> Policy {
        Policy {
            confirmations: 3,
            batch_max: 25,
            batch_wait: Duration::from_secs(30),
            bump_after: Duration::from_secs(600),
            hot_index: 0,
            floor: 0,
            start_block: 1,
        }
    }

    #[test]
    fn a_batch_is_due_when_full_or_its_oldest_waited_long_enough() {
        let policy = policy();
        let s = Duration::from_secs;
        assert!(!batch_due(0, s(3600), &policy), "nothing waits");
        assert!(!batch_due(1, s(29), &policy));
        assert!(!batch_due(24, s(0), &policy));
        assert!(batch_due(25, s(0), &policy), "full");
        assert!(batch_due(100, s(0), &policy));
        assert!(batch_due(1, s(30), &policy), "waited long enough");
    }

    #[test]
    fn a_bump_pays_the_estimate_and_at_least_ten_percent_or_one_more_capped() {
        // +1 sat/vB at low rates, +10 % above 10.
        assert_eq!(bump_rate(2, 2, 500), Some(3));
        assert_eq!(bump_rate(2, 1, 500), Some(3));
        assert_eq!(bump_rate(40, 41, 500), Some(44));
        // The node's estimate when it is higher.
        assert_eq!(bump_rate(2, 20, 500), Some(20));
        // Capped; nothing above the cap.
        assert_eq!(bump_rate(480, 600, 500), Some(500));
        assert_eq!(bump_rate(500, 900, 500), None);
    }
}
