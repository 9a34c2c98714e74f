//! Payouts recorded before they leave (DESIGN.md §2.2) and settled by what the chain shows
//! (§2.3), through an [`AttemptLog`] (the wallet implements it over the store; this crate
//! never touches the store).
//!
//! [`Payer::prepare`]: the outputs other payouts hold (`reserved`) are left out, coins are
//! selected among the rest, the transaction is built, signed and its fee checked against its
//! real size and the cap, then recorded with its inputs, which the log locks atomically. Two
//! processes that selected the same coin race there: one records, the other gets a Conflict
//! and selects again (at most [`SELECT_TRIES_MAX`] times). A payout that already has an
//! attempt that may land, or did, gets no second one. [`Payer::pay`] then broadcasts the
//! recorded bytes. [`Payer::bump`] records a BIP125 replacement (same inputs, higher fee)
//! under the same payout with `replaces`, then broadcasts it.
//!
//! [`Payer::reconcile`] settles every live attempt from the log alone (a fresh process after
//! a crash needs nothing else): an attempt of the payout in a block deep enough is Landed
//! (its siblings become Replaced); one in the pool is left alone; when the node knows none
//! of them, an attempt whose input was spent by another transaction in a block deep enough
//! (`settle_confirmations`) is Dead, and the others are sent again, byte for byte.

use std::collections::HashSet;
use std::str::FromStr;

use bitcoin::consensus::encode;
use bitcoin::{OutPoint, Transaction, Txid, Witness};
use chain::address::Address;
use chain::attempts::{Attempt, AttemptError, AttemptLog, AttemptNew, AttemptState, Outpoint};
use chain::provider::{
    ChainError, ChainRead, ChainSubmit, Keychain, SignedTransaction, SubmitOutcome, TxStatus,
};
use domain::{Amount, Chain};
use serde_json::json;
use signer::{Signer, SignerError};

use crate::{Bitcoin, UnsignedPayout, Utxo, UtxoSet, chain_error, fee_of};

/// How many times a payout selects again after another took one of its coins.
pub const SELECT_TRIES_MAX: u32 = 8;
/// The most payouts one [`Payer::reconcile`] settles (the rest wait for the next call).
pub const RECONCILE_PAYOUTS_MAX: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Log(#[from] AttemptError),
    #[error("signer: {0}")]
    Signer(#[from] SignerError),
    /// The signed bytes do not pay what was asked: nothing was recorded or sent.
    #[error("the signed transaction does not pay what was asked: {0}")]
    Mismatch(String),
    /// Other payouts took the selected coins every time: try later.
    #[error("{0}")]
    Contended(String),
    /// What was asked cannot be done to this payout (no live attempt to bump, landed...).
    #[error("{0}")]
    Refused(String),
}

impl PayoutError {
    /// Whether the same call may succeed later.
    pub fn is_retriable(&self) -> bool {
        match self {
            PayoutError::Chain(error) => error.retriable,
            PayoutError::Log(error) => error.retriable(),
            PayoutError::Contended(_) => true,
            _ => false,
        }
    }
}

/// What [`Payer::prepare`] left in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// A new attempt, recorded, not sent yet.
    New {
        signed: SignedTransaction,
        fee: u64,
        inputs: Vec<Outpoint>,
        /// Coin selections made: 1, plus one per Conflict on an input.
        selections: u32,
    },
    /// The payout already had an attempt that may land or did: no new one.
    Existing(Attempt),
}

/// What [`Payer::pay`] or [`Payer::bump`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paid {
    pub txid: String,
    /// The node's answer to the broadcast; None when the payout already had an attempt
    /// (reconcile sends it again if the node lost it).
    pub outcome: Option<SubmitOutcome>,
    /// Coin selections made (0 when the payout already had an attempt).
    pub selections: u32,
}

/// What [`Payer::reconcile`] did, by txid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub landed: Vec<String>,
    pub dead: Vec<String>,
    pub rebroadcast: Vec<(String, SubmitOutcome)>,
    /// Payouts with an attempt in the pool, or in a block not deep enough yet.
    pub waiting: usize,
    /// Payouts with live attempts left for the next call ([`RECONCILE_PAYOUTS_MAX`]).
    pub left: usize,
}

/// One wallet's payouts: its adapter, its unspent outputs, the attempt log and the signer.
pub struct Payer<'a, L> {
    pub bitcoin: &'a Bitcoin,
    pub utxos: &'a UtxoSet,
    pub log: &'a L,
    pub signer: &'a dyn Signer,
    /// The wallet's name, each attempt's sender (e.g. "hot").
    pub sender: &'a str,
    /// Confirmations a coin needs before it is spent (coinbase outputs need 100).
    pub min_confirmations: u64,
    /// Confirmations a block needs before what it holds settles an attempt: the attempt in
    /// it is Landed, or an input spent in it by another transaction makes the attempt Dead
    /// (a shallower block may still be reorged away, and the attempt land after all).
    /// The caller keeps `utxos` synced with the node (`UtxoSet::sync`).
    pub settle_confirmations: u64,
}

impl<L> std::fmt::Debug for Payer<'_, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payer")
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

fn log_outpoint(outpoint: &OutPoint) -> Outpoint {
    Outpoint {
        txid: outpoint.txid.to_string(),
        vout: outpoint.vout,
    }
}

fn chain_outpoint(outpoint: &Outpoint) -> Option<OutPoint> {
    Some(OutPoint {
        txid: Txid::from_str(&outpoint.txid).ok()?,
        vout: outpoint.vout,
    })
}

/// Read back from the signed bytes: they pay exactly `outputs`, in order, then at most
/// change to this wallet's change key `change` (and none without one).
pub fn check_outputs(
    bitcoin: &Bitcoin,
    signed: &SignedTransaction,
    outputs: &[(Address, Amount)],
    change: Option<u32>,
) -> Result<(), PayoutError> {
    let paid = bitcoin.parse_outputs(signed)?;
    let change = match change {
        Some(index) => Some(bitcoin.key_address(Keychain::Change, index)?),
        None => None,
    };
    let rest = paid.get(outputs.len()..).unwrap_or_default();
    let change_ok = match (rest, &change) {
        ([], None) => true,
        ([(to, _)], Some(change)) => to == change,
        _ => false,
    };
    if paid.get(..outputs.len()) != Some(outputs) || !change_ok {
        return Err(PayoutError::Mismatch(format!(
            "asked {outputs:?} with change to {change:?}, the bytes pay {paid:?}"
        )));
    }
    Ok(())
}

/// Ok(true) when this call settled the attempt, Ok(false) when another process had (Stale:
/// two reconcilers may run at once).
fn settled(result: Result<(), AttemptError>) -> Result<bool, PayoutError> {
    match result {
        Ok(()) => Ok(true),
        Err(AttemptError::Stale(reason)) => {
            tracing::debug!(reason, "attempt settled by another process");
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

impl<L: AttemptLog> Payer<'_, L> {
    /// The payout's attempt that may still land or has: the newest live one, or the landed one.
    async fn standing(&self, payout: &str) -> Result<Option<Attempt>, PayoutError> {
        let attempts = self.log.attempts_of(Chain::Bitcoin, payout).await?;
        Ok(attempts
            .iter()
            .find(|attempt| attempt.state == AttemptState::Landed)
            .or_else(|| {
                attempts
                    .iter()
                    .rev()
                    .find(|attempt| attempt.state == AttemptState::Live)
            })
            .cloned())
    }

    /// Signs `unsigned` (its fee checked after signing by `combine`) and checks the bytes
    /// pay `outputs` first, in order.
    fn sign(
        &self,
        unsigned: &UnsignedPayout,
        outputs: &[(Address, Amount)],
    ) -> Result<SignedTransaction, PayoutError> {
        let signatures = self
            .signer
            .sign_payloads(Chain::Bitcoin, &self.bitcoin.payloads(unsigned)?)?;
        let signed = self.bitcoin.combine(unsigned, &signatures)?;
        check_outputs(
            self.bitcoin,
            &signed,
            outputs,
            unsigned.change.map(|(index, _)| index),
        )?;
        Ok(signed)
    }

    /// Builds, signs and records an attempt for `payout` without sending it (see the
    /// module's documentation).
    pub async fn prepare(
        &self,
        payout: &str,
        outputs: &[(Address, Amount)],
        fee_rate_sat_vb: u64,
        change_index: u32,
    ) -> Result<Prepared, PayoutError> {
        if let Some(existing) = self.standing(payout).await? {
            return Ok(Prepared::Existing(existing));
        }
        for attempt in 1..=SELECT_TRIES_MAX {
            let reserved: HashSet<OutPoint> = self
                .log
                .reserved(Chain::Bitcoin)
                .await?
                .iter()
                .filter_map(|(outpoint, _)| chain_outpoint(outpoint))
                .collect();
            let tip = self.bitcoin.tip().await?.head;
            let available: Vec<Utxo> = self
                .utxos
                .available(tip, self.min_confirmations)
                .into_iter()
                .filter(|utxo| !reserved.contains(&utxo.outpoint))
                .collect();
            let unsigned =
                self.bitcoin
                    .build_payout(outputs, &available, fee_rate_sat_vb, change_index)?;
            let signed = self.sign(&unsigned, outputs)?;
            let inputs: Vec<Outpoint> = unsigned
                .inputs
                .iter()
                .map(|utxo| log_outpoint(&utxo.outpoint))
                .collect();
            let recorded = self
                .log
                .record(&AttemptNew {
                    chain: Chain::Bitcoin,
                    payout,
                    sender: self.sender,
                    txid: &signed.txid,
                    raw: &signed.raw,
                    inputs: &inputs,
                    replaces: None,
                })
                .await;
            match recorded {
                Ok(()) => {
                    return Ok(Prepared::New {
                        signed,
                        fee: unsigned.fee,
                        inputs,
                        selections: attempt,
                    });
                }
                Err(AttemptError::Conflict(reason)) => {
                    // Another process recorded this payout first, or took one of the coins.
                    if let Some(existing) = self.standing(payout).await? {
                        return Ok(Prepared::Existing(existing));
                    }
                    tracing::info!(
                        payout,
                        attempt,
                        reason,
                        "a coin was taken by another payout: selecting again"
                    );
                    tokio::time::sleep(crate::rpc::retry_delay(attempt, crate::rpc::jitter()))
                        .await;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(PayoutError::Contended(format!(
            "payout {payout}: other payouts took the selected coins {SELECT_TRIES_MAX} times; try again later"
        )))
    }

    /// [`Payer::prepare`], then the recorded bytes broadcast.
    pub async fn pay(
        &self,
        payout: &str,
        outputs: &[(Address, Amount)],
        fee_rate_sat_vb: u64,
        change_index: u32,
    ) -> Result<Paid, PayoutError> {
        match self
            .prepare(payout, outputs, fee_rate_sat_vb, change_index)
            .await?
        {
            Prepared::New {
                signed, selections, ..
            } => {
                let outcome = self.bitcoin.submit(&signed).await;
                tracing::info!(payout, txid = %signed.txid, ?outcome, "bitcoin payout sent");
                Ok(Paid {
                    txid: signed.txid,
                    outcome: Some(outcome),
                    selections,
                })
            }
            Prepared::Existing(attempt) => Ok(Paid {
                txid: attempt.txid,
                outcome: None,
                selections: 0,
            }),
        }
    }

    /// The unsigned form of a recorded attempt: its bytes without witnesses, its inputs from
    /// the wallet's unspent outputs, its change found by the change keys.
    fn unsigned_of(&self, attempt: &Attempt) -> Result<UnsignedPayout, PayoutError> {
        let mut tx: Transaction = encode::deserialize(&attempt.raw).map_err(|error| {
            ChainError::permanent(format!(
                "attempt {}: not a transaction: {error}",
                attempt.txid
            ))
        })?;
        for input in &mut tx.input {
            input.witness = Witness::new();
        }
        let inputs = tx
            .input
            .iter()
            .map(|input| {
                self.utxos.get(&input.previous_output).ok_or_else(|| {
                    PayoutError::Refused(format!(
                        "cannot bump {}: its input {} is not an unspent output of the wallet \
                         (spent, or the wallet's outputs are not synced)",
                        attempt.txid, input.previous_output
                    ))
                })
            })
            .collect::<Result<Vec<Utxo>, _>>()?;
        let change = tx.output.iter().enumerate().find_map(|(vout, output)| {
            match self.utxos.key_of(&output.script_pubkey) {
                Some((Keychain::Change, index)) => Some((index, vout)),
                _ => None,
            }
        });
        let fee = fee_of(&inputs, &tx)?;
        let mut unsigned = UnsignedPayout {
            tx,
            inputs,
            change,
            fee,
            fee_rate_sat_vb: 0,
        };
        unsigned.fee_rate_sat_vb = fee.div_ceil(unsigned.max_vsize().max(1));
        Ok(unsigned)
    }

    /// Replaces the payout's newest live attempt by fee (BIP125: same inputs, the fee from
    /// the change, at least `fee_rate_sat_vb`), recorded with `replaces`, then broadcast.
    pub async fn bump(&self, payout: &str, fee_rate_sat_vb: u64) -> Result<Paid, PayoutError> {
        let attempts = self.log.attempts_of(Chain::Bitcoin, payout).await?;
        if attempts
            .iter()
            .any(|attempt| attempt.state == AttemptState::Landed)
        {
            return Err(PayoutError::Refused(format!(
                "payout {payout} has landed: nothing to bump"
            )));
        }
        let current = attempts
            .iter()
            .rev()
            .find(|attempt| attempt.state == AttemptState::Live)
            .ok_or_else(|| PayoutError::Refused(format!("payout {payout} has no live attempt")))?;
        // Already in a block (not reconciled yet): a replacement could never land.
        if let TxStatus::Included { .. } = self.bitcoin.transaction(&current.txid).await? {
            return Err(PayoutError::Refused(format!(
                "payout {payout}: {} is in a block already, nothing to bump",
                current.txid
            )));
        }
        let unsigned = self.unsigned_of(current)?;
        let paid_before = self.bitcoin.parse_outputs(&SignedTransaction {
            txid: current.txid.clone(),
            raw: current.raw.clone(),
        })?;
        let outputs: Vec<(Address, Amount)> = paid_before
            .into_iter()
            .enumerate()
            .filter(|(vout, _)| unsigned.change.map(|(_, change)| change) != Some(*vout))
            .map(|(_, output)| output)
            .collect();
        let bumped = self.bitcoin.bump(&unsigned, fee_rate_sat_vb)?;
        let signed = self.sign(&bumped, &outputs)?;
        let inputs: Vec<Outpoint> = current.inputs.clone();
        self.log
            .record(&AttemptNew {
                chain: Chain::Bitcoin,
                payout,
                sender: self.sender,
                txid: &signed.txid,
                raw: &signed.raw,
                inputs: &inputs,
                replaces: Some(&current.txid),
            })
            .await?;
        let outcome = self.bitcoin.submit(&signed).await;
        tracing::info!(payout, txid = %signed.txid, replaces = %current.txid, ?outcome, "bitcoin payout bumped");
        Ok(Paid {
            txid: signed.txid,
            outcome: Some(outcome),
            selections: 1,
        })
    }

    /// Whether `outpoint` was spent in a block at least `settle_confirmations` deep: the
    /// wallet's outputs say which block spent it, and the node's UTXO set (without the pool)
    /// agrees it is spent. None while it is spent in a shallower block (wait and see).
    async fn spent_deep(&self, outpoint: &Outpoint, tip: u64) -> Result<Option<bool>, PayoutError> {
        let Some(spent_at) = chain_outpoint(outpoint).and_then(|o| self.utxos.spent_at(&o)).map(|spend| spend.height) else {
            return Ok(Some(false));
        };
        let unspent = self
            .bitcoin
            .rpc()
            .call("gettxout", json!([outpoint.txid, outpoint.vout, false]))
            .await
            .map_err(chain_error)?;
        if !unspent.is_null() {
            // The node's chain has it unspent: our view is behind a reorg.
            return Ok(Some(false));
        }
        let confirmations = tip.saturating_add(1).saturating_sub(spent_at);
        Ok(if confirmations >= self.settle_confirmations {
            Some(true)
        } else {
            None
        })
    }

    /// Settles every live attempt of this wallet (see the module's documentation).
    pub async fn reconcile(&self) -> Result<Reconciled, PayoutError> {
        let mut report = Reconciled::default();
        let live = self.log.live(Chain::Bitcoin, Some(self.sender)).await?;
        let mut payouts = Vec::new();
        let mut seen = HashSet::new();
        for attempt in &live {
            if seen.insert(attempt.payout.as_str()) {
                payouts.push(attempt.payout.as_str());
            }
        }
        report.left = payouts.len().saturating_sub(RECONCILE_PAYOUTS_MAX);
        for payout in payouts.into_iter().take(RECONCILE_PAYOUTS_MAX) {
            self.settle(payout, &mut report).await?;
        }
        Ok(report)
    }

    async fn settle(&self, payout: &str, report: &mut Reconciled) -> Result<(), PayoutError> {
        let live: Vec<Attempt> = self
            .log
            .attempts_of(Chain::Bitcoin, payout)
            .await?
            .into_iter()
            .filter(|attempt| attempt.state == AttemptState::Live)
            .collect();
        let mut waiting = false;
        for attempt in &live {
            match self.bitcoin.transaction(&attempt.txid).await? {
                TxStatus::Included { confirmations, .. }
                    if confirmations >= self.settle_confirmations =>
                {
                    // Stale: another process settled it first; nothing left to do here.
                    if settled(self.log.landed(Chain::Bitcoin, &attempt.txid).await)? {
                        tracing::info!(payout, txid = %attempt.txid, "bitcoin payout landed");
                        report.landed.push(attempt.txid.clone());
                    }
                    return Ok(());
                }
                TxStatus::Included { .. } | TxStatus::Pending => waiting = true,
                TxStatus::NotFound => {}
            }
        }
        if waiting {
            report.waiting += 1;
            return Ok(());
        }
        // The node knows none of them: each is dead if an input was spent in a block deep
        // enough (by none of them: none is in a block), else it is sent again, newest first.
        let tip = self.bitcoin.tip().await?.head;
        let mut alive = Vec::new();
        for attempt in &live {
            let mut dead = false;
            for input in &attempt.inputs {
                match self.spent_deep(input, tip).await? {
                    Some(true) => {
                        dead = true;
                        break;
                    }
                    Some(false) => {}
                    None => {
                        // Spent in a block too shallow to settle on: wait.
                        report.waiting += 1;
                        return Ok(());
                    }
                }
            }
            if dead {
                // Spent in a block: look once more that no attempt of the payout got there
                // meanwhile (then the next round lands it).
                for sibling in &live {
                    if self.bitcoin.transaction(&sibling.txid).await? != TxStatus::NotFound {
                        report.waiting += 1;
                        return Ok(());
                    }
                }
                if settled(self.log.dead(Chain::Bitcoin, &attempt.txid).await)? {
                    tracing::warn!(payout, txid = %attempt.txid, "bitcoin payout attempt dead: an input was spent by another transaction");
                    report.dead.push(attempt.txid.clone());
                }
            } else {
                alive.push(attempt);
            }
        }
        for attempt in alive.into_iter().rev() {
            let signed = SignedTransaction {
                txid: attempt.txid.clone(),
                raw: attempt.raw.clone(),
            };
            let outcome = self.bitcoin.submit(&signed).await;
            tracing::info!(payout, txid = %attempt.txid, ?outcome, "bitcoin payout sent again");
            let taken = matches!(
                outcome,
                SubmitOutcome::Accepted | SubmitOutcome::AlreadyKnown
            );
            report.rebroadcast.push((attempt.txid.clone(), outcome));
            if taken {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FeePolicy, Rpc};
    use bitcoin::hashes::Hash;
    use chain::address::Network;
    use signer::{InProcessSigner, Mnemonic};

    #[test]
    fn the_signed_bytes_must_pay_exactly_what_was_asked_and_change_to_our_key() {
        let signer = InProcessSigner::new(
            &Mnemonic::parse(
                "abandon abandon abandon abandon abandon abandon abandon abandon abandon \
                 abandon abandon about",
            )
            .unwrap(),
            Network::Regtest,
        );
        let rpc = Rpc::new(
            "http://127.0.0.1:9",
            "u",
            "p",
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        let bitcoin = Bitcoin::new(
            rpc,
            Network::Regtest,
            signer.xpub(Chain::Bitcoin).unwrap(),
            FeePolicy::default(),
        )
        .unwrap();
        let coin = Utxo {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([1; 32]),
                vout: 0,
            },
            value: 1_000_000,
            keychain: Keychain::Receive,
            index: 0,
        };
        let to = |index| signer.address(Chain::Bitcoin, index).unwrap();
        let asked = vec![(to(7), Amount::from_u128(100_000))];
        let unsigned = bitcoin.build_payout(&asked, &[coin], 2, 3).unwrap();
        let signatures = signer
            .sign_payloads(Chain::Bitcoin, &bitcoin.payloads(&unsigned).unwrap())
            .unwrap();
        let signed = bitcoin.combine(&unsigned, &signatures).unwrap();
        assert!(check_outputs(&bitcoin, &signed, &asked, Some(3)).is_ok());
        let mismatch = |outputs: &[(Address, Amount)], change| {
            matches!(
                check_outputs(&bitcoin, &signed, outputs, change),
                Err(PayoutError::Mismatch(_))
            )
        };
        assert!(
            mismatch(&[(to(8), Amount::from_u128(100_000))], Some(3)),
            "another recipient"
        );
        assert!(
            mismatch(&[(to(7), Amount::from_u128(100_001))], Some(3)),
            "another amount"
        );
        assert!(mismatch(&asked, Some(4)), "change to another key");
        assert!(mismatch(&asked, None), "change not asked for");
        assert!(mismatch(&[], Some(3)), "an output not asked for");
        let twice = [asked.clone(), asked.clone()].concat();
        assert!(mismatch(&twice, Some(3)), "fewer outputs than asked");
    }
}
