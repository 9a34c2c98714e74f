//! Withdrawals paid and settled: the withdrawal row's state machine (`domain::WithdrawalState`)
//! driven by what the store holds of its transactions, on the chains paid one transaction per
//! withdrawal (TRON by stored attempts, Ethereum by nonces tied to the withdrawal).
//!
//! [`WithdrawalPayer::pay`] is what a `withdrawal.pay` job runs; it is safe to run again after
//! a crash at any await, because every step first asks the store what is there already:
//!
//! 1. `pending → processing` (a compare-and-set: a cancel that came first wins).
//! 2. Anything stored for the withdrawal's payout key (an attempt, a bound nonce)? Then the
//!    crash came after it: move on to `broadcast` with that txid. Nothing is signed again.
//! 3. The hot wallet short? Back to `pending` with the reason (nothing was signed), and the
//!    job waits.
//! 4. Pay ([`Wallet::pay`] or [`Wallet::pay_nonce`]: persist, then broadcast), then
//!    `processing → broadcast` with the txid.
//!
//! [`WithdrawalPayer::reconcile_attempts`] and [`WithdrawalPayer::reconcile_nonces`] are what
//! the chain's scheduled `withdrawal.reconcile` job runs: settle the chain's transactions, then
//! sweep the unfinished withdrawals and move each to where its stored transactions say it is
//! (so a crash between settling a transaction and moving its withdrawal is healed on the next
//! round). A withdrawal whose every attempt is provably dead goes back to `processing` and is
//! handed back to be paid again; one that landed but failed, or whose nonce a foreign
//! transaction consumed, goes to `manual_review` with the reason.

use std::time::Duration;

use chain::address::{Address, Network};
use chain::provider::{
    Asset, ChainAttempts, ChainBuild, ChainRead, ChainReplace, ChainSubmit, Payment, SubmitOutcome,
    TxStatus,
};
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::Utc;
use domain::{Amount, AssetCatalogue, Chain, WithdrawalState};
use store::{
    AttemptState, NonceSettlement, Store, StoreError, WithdrawalRow, WithdrawalScan,
    WithdrawalTransition,
};

pub mod review;

use crate::attempts::Settled;
use crate::nonces::{NONCES_SETTLE_MAX, NonceOutcome, NonceSettlePolicy};
use crate::{Wallet, WalletError};

/// How long a withdrawal waits before its job looks again when the hot wallet is short.
pub const FUNDS_WAIT: Duration = Duration::from_secs(30);
/// How many settle calls (of `NONCES_SETTLE_MAX` nonces each) one reconcile round makes at
/// most, while every nonce it looks at settles.
pub const SETTLE_CALLS_MAX: usize = 8;
/// How many unfinished withdrawals one reconcile round sweeps at most.
pub const SWEEP_MAX: u32 = 500;
/// How many of them it looks at, at once (each asks the node a few questions).
pub const SWEEP_CONCURRENCY: usize = 16;
/// How long a round reuses the node's tip instead of asking again: a tip this stale only
/// counts fewer confirmations, never more.
pub const TIP_REUSE: Duration = Duration::from_millis(500);
/// How long a `pending` or `processing` withdrawal may sit before a reconcile round hands it
/// back to be paid (its job lost, dead-lettered, or never queued).
pub const STALLED_AFTER: Duration = Duration::from_secs(60);

/// What a pay run asks of its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayOutcome {
    /// Nothing more for this job: paid and `broadcast`, or moved on by someone else.
    Done,
    /// Not now (the hot wallet is short): run again after this long.
    Wait(Duration),
    /// A failure a retry may fix (a node or database away).
    Retry(String),
}

/// What one reconcile round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Withdrawals moved, as (id, from, to).
    pub moved: Vec<(i64, WithdrawalState, WithdrawalState)>,
    /// Withdrawals to hand (back) to a payer: their job is to be queued (again).
    pub to_pay: Vec<i64>,
    /// Problems met on the way, one per withdrawal or transaction; the round went on.
    pub errors: Vec<String>,
    /// Stored transactions sent again because the node no longer knew them.
    pub rebroadcasts: u64,
}

/// How a chain's withdrawals are confirmed.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmationPolicy {
    /// Blocks on top (the including block counts as one) before `completed`; a block at or
    /// below the node's final block counts as confirmed too.
    pub confirmations: u64,
}

/// Pays and settles one chain's withdrawals from its hot wallet.
pub struct WithdrawalPayer<P> {
    pub wallet: Wallet<P>,
    store: Store,
    from_index: u32,
    /// Who moves withdrawals, for the audit log (`worker:ID`).
    actor: String,
    catalogue: AssetCatalogue,
    network: Network,
    policy: ConfirmationPolicy,
    /// How many unfinished withdrawals one round sweeps ([`SWEEP_MAX`] unless a test says).
    sweep_max: u32,
    /// Where the next round's sweep starts: rounds go round the unfinished withdrawals as a
    /// ring, so a long list of old ones (waiting for funds, or a node's slow confirmations)
    /// cannot keep the newer ones from ever being looked at.
    sweep_after: AtomicI64,
    /// What the hot wallet keeps of an asset (by symbol, base units): a payment that would
    /// leave less waits for funds instead.
    floors: Vec<(String, Amount)>,
    /// The node's tip as last asked, and when (see [`TIP_REUSE`]).
    tip_seen: std::sync::Mutex<Option<(std::time::Instant, chain::provider::Tip)>>,
}

impl<P> std::fmt::Debug for WithdrawalPayer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithdrawalPayer")
            .field("actor", &self.actor)
            .field("from_index", &self.from_index)
            .finish_non_exhaustive()
    }
}

impl<P: ChainBuild + ChainSubmit + ChainRead> WithdrawalPayer<P> {
    pub fn new(
        wallet: Wallet<P>,
        store: Store,
        from_index: u32,
        actor: impl Into<String>,
        catalogue: AssetCatalogue,
        network: Network,
        policy: ConfirmationPolicy,
    ) -> Self {
        WithdrawalPayer {
            wallet,
            store,
            from_index,
            actor: actor.into(),
            catalogue,
            network,
            policy,
            sweep_max: SWEEP_MAX,
            sweep_after: AtomicI64::new(0),
            tip_seen: std::sync::Mutex::new(None),
            floors: Vec::new(),
        }
    }

    /// Keeps at least these amounts (by asset symbol, base units) in the hot wallet: it is
    /// never emptied below them.
    #[must_use]
    pub fn with_floors(mut self, floors: Vec<(String, Amount)>) -> Self {
        self.floors = floors;
        self
    }

    fn floor_of(&self, symbol: &str) -> Amount {
        self.floors
            .iter()
            .find(|(each, _)| each == symbol)
            .map_or(Amount::from_u128(0), |(_, floor)| *floor)
    }

    /// Sweeps at most `max` unfinished withdrawals a round (tests make the ring small).
    #[must_use]
    pub fn with_sweep_max(mut self, max: u32) -> Self {
        self.sweep_max = max.max(1);
        self
    }

    fn chain(&self) -> Chain {
        self.wallet.provider().chain()
    }

    /// The payment a withdrawal asks for: from the hot wallet, the token contract from the
    /// catalogue.
    fn payment_of(&self, row: &WithdrawalRow) -> Result<Payment, WalletError> {
        let asset = self
            .catalogue
            .get(row.chain, &row.asset)
            .map_err(|error| WalletError::Invalid(error.to_string()))?;
        let asset = self.on_chain(asset)?;
        let units = row
            .amount
            .parse()
            .map_err(|_| WalletError::Invalid(format!("amount {:?}", row.amount)))?;
        Ok(Payment {
            from_index: self.from_index,
            from: self.wallet.create_wallet(self.from_index)?,
            to: Address::parse(row.chain, self.network, &row.destination)
                .map_err(|error| WalletError::Invalid(format!("destination: {error}")))?,
            asset,
            amount: Amount::from_base_units(units),
        })
    }

    /// A catalogue asset as the chain names it: native, or the token at its contract.
    fn on_chain(&self, asset: &domain::Asset) -> Result<Asset, WalletError> {
        Ok(match &asset.contract {
            None => Asset::Native,
            Some(contract) => Asset::Token(
                Address::parse(asset.chain, self.network, contract)
                    .map_err(|error| WalletError::Invalid(format!("token contract: {error}")))?,
            ),
        })
    }

    /// What the hot wallet holds of each of this chain's catalogue assets, read from the
    /// node: (symbol, hot wallet address, base units). An asset the node cannot answer for
    /// (a token with no contract on this network) is left out with a warning.
    pub async fn hot_balances(&self) -> Result<Vec<(String, String, Amount)>, WalletError> {
        let chain = self.chain();
        let from = self.wallet.create_wallet(self.from_index)?;
        let mut balances = Vec::new();
        for asset in self.catalogue.assets().iter().filter(|a| a.chain == chain) {
            let held = match self.on_chain(asset) {
                Ok(on_chain) => self
                    .wallet
                    .provider()
                    .balance(&from, &on_chain)
                    .await
                    .map_err(WalletError::from),
                Err(error) => Err(error),
            };
            match held {
                Ok(held) => balances.push((asset.symbol.clone(), from.to_string(), held)),
                Err(error) => {
                    tracing::warn!(%chain, asset = %asset.symbol, %error, "the hot wallet's balance could not be read");
                }
            }
        }
        Ok(balances)
    }

    async fn moved(
        &self,
        row: &WithdrawalRow,
        to: WithdrawalState,
        change: impl FnOnce(&mut WithdrawalTransition),
    ) -> Result<WithdrawalRow, StoreError> {
        let mut transition =
            WithdrawalTransition::new(row.id, row.state, to, self.actor.clone(), Utc::now());
        transition.error = row.error.clone().filter(|_| row.state == to);
        change(&mut transition);
        let moved = self.store.withdrawal_transition(&transition).await?;
        if row.state != to {
            tracing::info!(withdrawal = row.id, from = %row.state, %to, txid = ?moved.txid, "withdrawal moved");
            metrics::counter!("coinsensei_withdrawal_transitions_total", "chain" => row.chain.as_str(), "to" => to.as_str()).increment(1);
        }
        Ok(moved)
    }

    /// Takes a `pending` withdrawal (or finds it `processing`, after a crash): the row, or
    /// `None` when it is elsewhere (canceled, paid, moved on by someone else).
    async fn take(&self, id: i64) -> Result<Option<WithdrawalRow>, StoreError> {
        for _ in 0..3 {
            let Some(row) = self.store.withdrawal_get(id).await? else {
                tracing::warn!(
                    withdrawal = id,
                    "a pay job for a withdrawal that does not exist"
                );
                return Ok(None);
            };
            match row.state {
                WithdrawalState::Processing => return Ok(Some(row)),
                WithdrawalState::Pending => {
                    match self.moved(&row, WithdrawalState::Processing, |_| {}).await {
                        Ok(row) => return Ok(Some(row)),
                        // Canceled or taken meanwhile: look again.
                        Err(StoreError::Conflict(_)) => continue,
                        Err(error) => return Err(error),
                    }
                }
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The hot wallet's shortfall for `payment`, if any: (holds, needs), in the asset's base
    /// units (a native payment's fee included, and the `floor` it must keep).
    async fn shortfall(
        &self,
        payment: &Payment,
        floor: &Amount,
    ) -> Result<Option<(Amount, Amount)>, WalletError> {
        let provider = self.wallet.provider();
        let metadata = provider.metadata(payment).await?;
        let fee = provider.max_fee(&metadata);
        let held = provider.balance(&payment.from, &payment.asset).await?;
        let needs = match payment.asset {
            Asset::Native => payment.amount.checked_add(fee).unwrap_or(payment.amount),
            Asset::Token(_) => payment.amount,
        };
        let needs = needs.checked_add(*floor).unwrap_or(needs);
        // A token transfer's native fee is not checked here: its bound (TRON's fee limit) is
        // a cap far above what it costs. A node that refuses it for want of gas leaves it
        // unpaid and waiting (Ethereum); one that lands out of energy goes to a person.
        Ok((held.base_units() < needs.base_units()).then_some((held, needs)))
    }

    /// Steps 2 and 3 of a pay run, the same on every chain, for a taken withdrawal and the
    /// txid stored for it, if any: nothing stored yet, the hot wallet able to pay.
    /// `Ok(Err(outcome))` ends the run.
    async fn prepare(
        &self,
        row: WithdrawalRow,
        stored: Option<String>,
    ) -> Result<Result<(WithdrawalRow, Payment), PayOutcome>, WalletError> {
        if let Some(txid) = stored {
            self.moved(&row, WithdrawalState::Broadcast, |t| t.txid = Some(txid))
                .await?;
            return Ok(Err(PayOutcome::Done));
        }
        let payment = match self.payment_of(&row) {
            Ok(payment) => payment,
            Err(error) => {
                // Nothing was signed: it can never be paid as asked.
                self.moved(&row, WithdrawalState::Failed, |t| {
                    t.error = Some(format!("refused before anything was signed: {error}"));
                })
                .await?;
                return Ok(Err(PayOutcome::Done));
            }
        };
        if payment.to == payment.from {
            self.moved(&row, WithdrawalState::Failed, |t| {
                t.error = Some("the destination is the hot wallet itself".into());
            })
            .await?;
            return Ok(Err(PayOutcome::Done));
        }
        let floor = self.floor_of(&row.asset);
        if let Some((holds, needs)) = self.shortfall(&payment, &floor).await? {
            let keeping = if floor.base_units().is_zero() {
                String::new()
            } else {
                format!(", keeping its floor of {}", floor.base_units())
            };
            let reason = format!(
                "{}: the hot wallet {} holds {} and needs {} (base units, fees included{keeping})",
                domain::withdrawal::WAITING_FOR_FUNDS,
                payment.from,
                holds.base_units(),
                needs.base_units()
            );
            tracing::warn!(withdrawal = row.id, chain = %row.chain, %reason, "a withdrawal waits for the hot wallet");
            metrics::counter!("coinsensei_withdrawal_funds_short_total", "chain" => row.chain.as_str()).increment(1);
            self.moved(&row, WithdrawalState::Pending, |t| t.error = Some(reason))
                .await?;
            return Ok(Err(PayOutcome::Wait(FUNDS_WAIT)));
        }
        Ok(Ok((row, payment)))
    }

    /// Whether the chain holds `txid` deep enough for the policy: (in a block, success,
    /// block, confirmations, final).
    async fn depth(&self, txid: &str) -> Result<Option<(bool, u64, u64, bool)>, WalletError> {
        let provider = self.wallet.provider();
        match provider.transaction(txid).await? {
            TxStatus::Included {
                block,
                success,
                confirmations,
            } => {
                let finalized = self.tip().await?.finalized;
                let is_final = confirmations >= self.policy.confirmations
                    || finalized.is_some_and(|height| block.number <= height);
                Ok(Some((success, block.number, confirmations, is_final)))
            }
            TxStatus::Pending | TxStatus::NotFound => Ok(None),
        }
    }

    /// The node's tip, asked at most every [`TIP_REUSE`]: a round's withdrawals share it.
    async fn tip(&self) -> Result<chain::provider::Tip, WalletError> {
        let fresh = self
            .tip_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .filter(|(at, _)| at.elapsed() < TIP_REUSE)
            .map(|(_, tip)| tip);
        if let Some(tip) = fresh {
            return Ok(tip);
        }
        let tip = self.wallet.provider().tip().await?;
        *self
            .tip_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), tip));
        Ok(tip)
    }

    /// Moves a withdrawal whose transaction `txid` is in a block: `completed` at the policy,
    /// else `confirming`; `manual_review` when it landed but failed.
    async fn landed(
        &self,
        row: &WithdrawalRow,
        txid: &str,
        (success, block, confirmations, is_final): (bool, u64, u64, bool),
        report: &mut Reconciled,
    ) -> Result<(), StoreError> {
        let to = if !success {
            WithdrawalState::ManualReview
        } else if is_final {
            WithdrawalState::Completed
        } else {
            WithdrawalState::Confirming
        };
        // What it cost, once it is final or needs a person (a failed transaction's fee is
        // spent too); a node that cannot say leaves it unknown, never guessed.
        let fee = if to == WithdrawalState::Confirming {
            None
        } else {
            match self.wallet.provider().fee_paid(txid).await {
                Ok(fee) => fee.map(|fee| fee.base_units().to_string()),
                Err(error) => {
                    tracing::warn!(withdrawal = row.id, %txid, %error, "the fee paid could not be read");
                    None
                }
            }
        };
        let moved = self
            .moved(row, to, |t| {
                t.txid = Some(txid.to_string());
                t.block_height = i64::try_from(block).ok();
                t.confirmations = i64::try_from(confirmations).ok();
                t.fee = fee;
                if !success {
                    t.error = Some(format!(
                        "transaction {txid} landed in block {block} but failed on chain (reverted or out of energy): the fee is spent, the transfer did not happen; a person must decide"
                    ));
                }
            })
            .await?;
        if row.state != to {
            report.moved.push((row.id, row.state, moved.state));
        }
        Ok(())
    }

    /// Runs `sweep` over a round's worth of unfinished withdrawals, [`SWEEP_CONCURRENCY`] at
    /// a time (each is its own compare-and-set), and gathers what each did into `report`; one
    /// withdrawal's error is reported and the others go on. Stalled ones are listed to be
    /// paid again instead.
    async fn sweep_all<F, Fut>(&self, report: &mut Reconciled, sweep: F) -> Result<(), WalletError>
    where
        F: Fn(WithdrawalRow) -> Fut,
        Fut: Future<Output = (WithdrawalRow, Reconciled, Result<(), WalletError>)>,
    {
        use futures_util::StreamExt;
        // Stalled ones are handed back to be paid; the others are looked at.
        let (stalled, rows): (Vec<_>, Vec<_>) = self
            .unfinished()
            .await?
            .into_iter()
            .partition(Self::stalled);
        report.to_pay.extend(stalled.iter().map(|row| row.id));
        let mut swept = futures_util::stream::iter(rows)
            .map(sweep)
            .buffer_unordered(SWEEP_CONCURRENCY);
        while let Some((row, part, result)) = swept.next().await {
            report.moved.extend(part.moved);
            report.to_pay.extend(part.to_pay);
            report.errors.extend(part.errors);
            if let Err(error) = result {
                report
                    .errors
                    .push(format!("withdrawal {}: {error}", row.id));
            }
        }
        Ok(())
    }

    /// The unfinished withdrawals of this chain, a round's worth: the next `sweep_max` of them
    /// by id after where the last round stopped, going on from the oldest at the end.
    async fn unfinished(&self) -> Result<Vec<WithdrawalRow>, StoreError> {
        let scan = |after_id, limit| WithdrawalScan {
            chain: self.chain(),
            states: vec![
                WithdrawalState::Pending,
                WithdrawalState::Processing,
                WithdrawalState::Broadcast,
                WithdrawalState::Confirming,
            ],
            after_id,
            limit,
        };
        let start = self.sweep_after.load(Ordering::Relaxed);
        let mut rows = self
            .store
            .withdrawal_scan(&scan(start, self.sweep_max))
            .await?;
        let mut full = rows.len() >= self.sweep_max as usize;
        if !full && start > 0 {
            // The end of the list: the rest of the round from its start, up to where this
            // round began.
            let left = self.sweep_max - u32::try_from(rows.len()).unwrap_or(0);
            let head = self.store.withdrawal_scan(&scan(0, left)).await?;
            full = head.len() >= left as usize;
            rows.extend(head.into_iter().filter(|row| row.id <= start));
        }
        let next = if full {
            rows.last().map_or(0, |row| row.id)
        } else {
            0
        };
        self.sweep_after.store(next, Ordering::Relaxed);
        Ok(rows)
    }

    /// A `pending` or `processing` withdrawal left alone for a while: its job is to be
    /// queued again (a unique key makes a queued one stay single).
    fn stalled(row: &WithdrawalRow) -> bool {
        matches!(
            row.state,
            WithdrawalState::Pending | WithdrawalState::Processing
        ) && Utc::now() - row.updated_at
            > chrono::Duration::from_std(STALLED_AFTER).unwrap_or_default()
    }

    async fn to_review(
        &self,
        row: &WithdrawalRow,
        reason: String,
        report: &mut Reconciled,
    ) -> Result<(), StoreError> {
        tracing::error!(withdrawal = row.id, chain = %row.chain, %reason, "a withdrawal needs a person");
        self.moved(row, WithdrawalState::ManualReview, |t| {
            t.error = Some(reason)
        })
        .await?;
        report
            .moved
            .push((row.id, row.state, WithdrawalState::ManualReview));
        Ok(())
    }
}

impl<P: ChainAttempts + ChainRead> WithdrawalPayer<P> {
    /// Pays withdrawal `id` by a stored attempt (TRON).
    pub async fn pay(&self, id: i64) -> PayOutcome {
        match self.pay_attempt(id).await {
            Ok(outcome) => outcome,
            Err(error) => PayOutcome::Retry(error.to_string()),
        }
    }

    async fn pay_attempt(&self, id: i64) -> Result<PayOutcome, WalletError> {
        let chain = self.chain();
        let Some(row) = self.take(id).await? else {
            return Ok(PayOutcome::Done);
        };
        let stored = self
            .store
            .attempts_of(chain, &row.attempt_key())
            .await?
            .into_iter()
            .rev()
            .find(|attempt| matches!(attempt.state, AttemptState::Live | AttemptState::Landed))
            .map(|attempt| attempt.txid);
        let (row, payment) = match self.prepare(row, stored).await? {
            Ok(ready) => ready,
            Err(outcome) => return Ok(outcome),
        };
        match self.wallet.pay(&row.attempt_key(), &payment).await {
            Ok(paid) => {
                self.moved(&row, WithdrawalState::Broadcast, |t| {
                    t.txid = Some(paid.txid.clone());
                })
                .await?;
                Ok(PayOutcome::Done)
            }
            Err(error @ (WalletError::Invalid(_) | WalletError::Mismatch(_))) => {
                self.moved(&row, WithdrawalState::Failed, |t| {
                    t.error = Some(format!("refused before anything was sent: {error}"));
                })
                .await?;
                Ok(PayOutcome::Done)
            }
            // A live attempt appeared (a second run raced this one): follow it.
            Err(WalletError::Store(StoreError::Conflict(_))) => Ok(PayOutcome::Retry(
                "the withdrawal has a live attempt already".into(),
            )),
            Err(error) => Err(error),
        }
    }

    /// One reconcile round on a chain paid by attempts (TRON): the live attempts settled by the
    /// chain's death rule (or sent again), then every unfinished withdrawal moved to where its
    /// attempts say it is.
    pub async fn reconcile_attempts(&self) -> Result<Reconciled, WalletError> {
        let chain = self.chain();
        let mut report = Reconciled::default();
        for settled in self.wallet.reconcile_attempts(None).await? {
            if matches!(settled, Settled::Rebroadcast { .. }) {
                report.rebroadcasts += 1;
            }
            if let Settled::Undecided {
                payout,
                txid,
                reason,
            } = &settled
            {
                report
                    .errors
                    .push(format!("{payout}: attempt {txid} undecided: {reason}"));
            }
        }
        self.sweep_all(&mut report, |row| async move {
            let mut part = Reconciled::default();
            let result = self.sweep_attempts(chain, &row, &mut part).await;
            (row, part, result)
        })
        .await?;
        Ok(report)
    }

    async fn sweep_attempts(
        &self,
        chain: Chain,
        row: &WithdrawalRow,
        report: &mut Reconciled,
    ) -> Result<(), WalletError> {
        if row.state != WithdrawalState::Broadcast {
            return Ok(());
        }
        let attempts = self.store.attempts_of(chain, &row.attempt_key()).await?;
        if let Some(landed) = attempts
            .iter()
            .find(|attempt| attempt.state == AttemptState::Landed)
        {
            // Landed means in a final (solidified) block.
            let (success, block, confirmations, _) =
                self.depth(&landed.txid).await?.ok_or_else(|| {
                    WalletError::Chain(chain::provider::ChainError::retriable(format!(
                        "attempt {} is landed in the store but the node does not show it yet",
                        landed.txid
                    )))
                })?;
            self.landed(
                row,
                &landed.txid,
                (success, block, confirmations, true),
                report,
            )
            .await?;
        } else if !attempts.is_empty()
            && attempts
                .iter()
                .all(|attempt| attempt.state == AttemptState::Dead)
        {
            let last = attempts.last().map(|attempt| attempt.txid.clone());
            self.moved(row, WithdrawalState::Processing, |t| {
                t.error = Some(format!(
                    "attempt {} expired without landing (proven on the solidified chain); paying again",
                    last.unwrap_or_default()
                ));
            })
            .await?;
            report
                .moved
                .push((row.id, row.state, WithdrawalState::Processing));
            report.to_pay.push(row.id);
        } else if let Some(live) = attempts
            .iter()
            .rev()
            .find(|a| a.state == AttemptState::Live)
            && row.txid.as_deref() != Some(live.txid.as_str())
        {
            self.moved(row, WithdrawalState::Broadcast, |t| {
                t.txid = Some(live.txid.clone())
            })
            .await?;
        }
        Ok(())
    }
}

impl<P: ChainBuild + ChainSubmit + ChainRead + ChainReplace> WithdrawalPayer<P> {
    /// Pays withdrawal `id` with a nonce tied to it (Ethereum).
    pub async fn pay_by_nonce(&self, id: i64) -> PayOutcome {
        match self.pay_nonce_run(id).await {
            Ok(outcome) => outcome,
            Err(error) => PayOutcome::Retry(error.to_string()),
        }
    }

    async fn pay_nonce_run(&self, id: i64) -> Result<PayOutcome, WalletError> {
        let chain = self.chain();
        let Some(row) = self.take(id).await? else {
            return Ok(PayOutcome::Done);
        };
        let stored = self
            .store
            .nonce_get(chain, &row.attempt_key())
            .await?
            .and_then(|held| held.latest().map(|tx| tx.txid.clone()));
        let (row, payment) = match self.prepare(row, stored).await? {
            Ok(ready) => ready,
            Err(outcome) => return Ok(outcome),
        };
        match self.wallet.pay_nonce(&row.attempt_key(), &payment).await {
            Ok(sent) => {
                if let SubmitOutcome::Rejected {
                    retriable: false,
                    reason,
                } = &sent.outcome
                {
                    // Refused for good; if its nonce was given back nothing is out there.
                    let bound = self
                        .store
                        .nonce_get(chain, &row.attempt_key())
                        .await?
                        .is_some_and(|held| held.is_bound());
                    if !bound {
                        self.moved(&row, WithdrawalState::Pending, |t| {
                            t.error = Some(format!("the node refused the payment: {reason}"));
                        })
                        .await?;
                        return Ok(PayOutcome::Wait(FUNDS_WAIT));
                    }
                }
                self.moved(&row, WithdrawalState::Broadcast, |t| {
                    t.txid = Some(sent.txid.clone());
                })
                .await?;
                Ok(PayOutcome::Done)
            }
            Err(WalletError::NonceForeign { nonce, .. }) => {
                let mut report = Reconciled::default();
                self.to_review(
                    &row,
                    format!("nonce {nonce} of the hot wallet was consumed by a transaction that is none of ours: this withdrawal was not paid by it"),
                    &mut report,
                )
                .await?;
                Ok(PayOutcome::Done)
            }
            Err(error @ (WalletError::Invalid(_) | WalletError::Mismatch(_))) => {
                // Refused before signing, or the payout holds bytes that are not this
                // payment: the first was never paid, the second needs a person.
                let bound = self
                    .store
                    .nonce_get(chain, &row.attempt_key())
                    .await?
                    .is_some_and(|held| held.is_bound());
                if bound {
                    let mut report = Reconciled::default();
                    self.to_review(
                        &row,
                        format!("its stored transaction does not match it: {error}"),
                        &mut report,
                    )
                    .await?;
                } else {
                    self.moved(&row, WithdrawalState::Failed, |t| {
                        t.error = Some(format!("refused before anything was sent: {error}"));
                    })
                    .await?;
                }
                Ok(PayOutcome::Done)
            }
            Err(error) => Err(error),
        }
    }

    /// One reconcile round on a chain paid by nonces (Ethereum): the hot wallet's nonces
    /// settled (mined by which txid, consumed by a foreign transaction, sent again, replaced),
    /// then every unfinished withdrawal moved to where its nonce and the chain say it is.
    pub async fn reconcile_nonces(
        &self,
        policy: &NonceSettlePolicy,
    ) -> Result<Reconciled, WalletError> {
        let chain = self.chain();
        let mut report = Reconciled::default();
        // A settle call looks at the lowest NONCES_SETTLE_MAX unsettled nonces. While every
        // one of them settled, the next ones are waiting behind: go on, a bounded number of
        // times, so a busy hot wallet is settled at the pace it pays.
        for _ in 0..SETTLE_CALLS_MAX {
            let settled = self.wallet.settle_nonces(self.from_index, policy).await?;
            let full = settled.len() == NONCES_SETTLE_MAX;
            let mut all_settled = true;
            for settled in settled {
                match settled.result {
                    Ok(NonceOutcome::Mined { .. } | NonceOutcome::Foreign { .. }) => {}
                    Ok(NonceOutcome::Rebroadcast { .. }) => {
                        report.rebroadcasts += 1;
                        all_settled = false;
                    }
                    Ok(_) => all_settled = false,
                    Err(error) => {
                        all_settled = false;
                        report.errors.push(format!(
                            "{} nonce {}: {error}",
                            settled.payout, settled.nonce
                        ));
                    }
                }
            }
            if !(full && all_settled) {
                break;
            }
        }
        self.sweep_all(&mut report, |row| async move {
            let mut part = Reconciled::default();
            let result = self.sweep_nonce(chain, &row, &mut part).await;
            (row, part, result)
        })
        .await?;
        Ok(report)
    }

    async fn sweep_nonce(
        &self,
        chain: Chain,
        row: &WithdrawalRow,
        report: &mut Reconciled,
    ) -> Result<(), WalletError> {
        if !matches!(
            row.state,
            WithdrawalState::Broadcast | WithdrawalState::Confirming
        ) {
            return Ok(());
        }
        let held = self.store.nonce_get(chain, &row.attempt_key()).await?;
        let Some(held) = held.filter(|held| held.is_bound()) else {
            // Nothing bound any more (refused for good and given back): pay again.
            self.moved(row, WithdrawalState::Processing, |t| {
                t.error = Some("its transaction was refused for good; paying again".into());
            })
            .await?;
            report.to_pay.push(row.id);
            return Ok(());
        };
        match &held.settlement {
            Some(NonceSettlement::Foreign) => {
                self.to_review(
                    row,
                    format!(
                        "nonce {} of {} was consumed by a transaction that is none of ours: this withdrawal was not paid by it; check the hot wallet's key",
                        held.nonce, held.address
                    ),
                    report,
                )
                .await?;
            }
            Some(NonceSettlement::Mined { txid }) => {
                match self.depth(txid).await? {
                    Some(depth) => self.landed(row, txid, depth, report).await?,
                    None => {
                        // Settled mined, but the block is gone: a reorg. Back to broadcast, and
                        // the same bytes out again.
                        if row.state == WithdrawalState::Confirming {
                            self.moved(row, WithdrawalState::Broadcast, |t| {
                            t.error = Some(format!("transaction {txid} left the chain in a reorg; waiting for it again"));
                        })
                        .await?;
                            report
                                .moved
                                .push((row.id, row.state, WithdrawalState::Broadcast));
                        }
                        if let Some(tx) = held.txs.iter().find(|tx| &tx.txid == txid) {
                            let signed = chain::provider::SignedTransaction {
                                txid: tx.txid.clone(),
                                raw: tx.raw.clone(),
                            };
                            let outcome = self.wallet.provider().submit(&signed).await;
                            tracing::info!(withdrawal = row.id, %txid, ?outcome, "sent a reorged transaction again");
                        }
                    }
                }
            }
            None => {
                // Unsettled: the latest transaction is the one to show.
                if let Some(latest) = held.latest()
                    && row.txid.as_deref() != Some(latest.txid.as_str())
                {
                    self.moved(row, row.state, |t| t.txid = Some(latest.txid.clone()))
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// The withdrawal a payout key names (of any round), if it names one.
pub fn withdrawal_of(payout: &str) -> Option<i64> {
    store::parse_round_key(payout).map(|(id, _)| id)
}
