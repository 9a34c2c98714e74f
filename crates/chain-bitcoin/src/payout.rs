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
//! [`Payer::reconcile`] settles every live attempt from the log and the chain (a fresh process
//! after a crash needs nothing else), as [`fate`] decides from every attempt of the payout
//! and who spent their inputs: an attempt of the payout in a block deep enough is Landed
//! (its siblings become Replaced), whether the node's transaction index says so or the
//! wallet's outputs show one of the payout's attempts spent an input; one in the pool, or in
//! a block not deep enough, is left alone; an attempt an input of which was spent, in a
//! block `settle_confirmations` deep on the node's chain, by a transaction that is none of
//! the payout's attempts is Dead; the others are sent again, byte for byte. The transaction
//! index never proves death: a node whose index lags answers "not found" for a mined one.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use bitcoin::consensus::encode;
use bitcoin::{OutPoint, ScriptBuf, Transaction, Txid, Witness};
use chain::address::Address;
use chain::attempts::{Attempt, AttemptError, AttemptLog, AttemptNew, AttemptState, Outpoint};
use chain::provider::{
    ChainError, ChainRead, ChainSubmit, Keychain, SignedTransaction, SubmitOutcome, TxStatus,
};
use domain::{Amount, Chain};
use serde_json::json;
use signer::{Signer, SignerError};

use crate::{Bitcoin, UnsignedPayout, Utxo, UtxoSet, chain_error, fee_of, utxo::Spend};

/// How many times a payout selects again after another took one of its coins.
pub const SELECT_TRIES_MAX: u32 = 8;
/// How many times the same attempt is recorded when the log fails in a way worth retrying.
pub const RECORD_TRIES_MAX: u32 = 4;
/// The most payouts one [`Payer::reconcile`] settles, the least recently checked first (the
/// rest wait for the next call).
pub const RECONCILE_PAYOUTS_MAX: usize = 500;
/// The most replacements by fee of one payout ([`Payer::bump`]); past it a person looks.
pub const BUMPS_MAX: usize = 10;
/// The fewest confirmations `settle_confirmations` may be: a spend one block deep is undone
/// by any single stale block (they happen on mainnet every few weeks), and an attempt
/// declared dead on it could then confirm beside its replacement and pay twice. Two blocks
/// deep, a natural reorg is rare enough that death may be proven; deployments configure more
/// (3 by default in the withdrawal workers), never less.
pub const SETTLE_CONFIRMATIONS_MIN: u64 = 2;

/// Refuses a `settle_confirmations` below [`SETTLE_CONFIRMATIONS_MIN`], with the reason:
/// for configuration checks, and [`Payer::reconcile`] calls it before settling anything.
pub fn check_settle_confirmations(settle_confirmations: u64) -> Result<(), String> {
    if settle_confirmations < SETTLE_CONFIRMATIONS_MIN {
        return Err(format!(
            "settle_confirmations is {settle_confirmations}, below the floor of \
             {SETTLE_CONFIRMATIONS_MIN}: a spend that shallow can be reorganised away and the \
             attempt it declared dead could still confirm; configure at least \
             {SETTLE_CONFIRMATIONS_MIN}"
        ));
    }
    Ok(())
}

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
    /// Payouts the chain shows paid by an attempt the log does not hold live (see
    /// [`Fate::Held`]): left alone, for a person.
    pub held: Vec<String>,
    /// Payouts whose settling failed this round, with the error (the others went on; these
    /// are looked at again in a later round).
    pub failed: Vec<(String, String)>,
}

/// What the node's chain shows of one input of a live attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSeen {
    /// No spend of it is known: unspent, or spent longer ago than the wallet's outputs
    /// remember. Proves nothing either way.
    NotSpent,
    /// Spent by `spender` in a block of the node's best chain, `confirmations` deep.
    Spent { spender: String, confirmations: u64 },
    /// The wallet's outputs say it was spent, but not provably on the node's best chain
    /// (they are not synced to the node's tip, the node's block at that height is another
    /// one, or the node has the output unspent): proves nothing, settles nothing.
    Unproven,
}

/// What [`fate`] decides for one payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// This live attempt is in a block deep enough: Landed, its siblings Replaced.
    Landed(String),
    /// Nothing settles yet: an attempt in the pool or in a block not deep enough, an input
    /// spent in a block not deep enough, or a spend not proven on the node's chain.
    Wait,
    /// These live attempts can never land (`dead`); the others are sent again, in this
    /// order (newest first), until the node takes one.
    Settle {
        dead: Vec<String>,
        resend: Vec<String>,
    },
    /// An input was spent by an attempt of the payout that is not live (Landed, Replaced or
    /// Dead in the log): the payout is paid, yet the log says otherwise. Nothing is settled
    /// nor sent; a person looks.
    Held(String),
}

/// Decides a payout's fate from every one of its attempts (all states, oldest first, as
/// `attempts_of` gives them), what the node says of each live one by txid (None: it could
/// not say, e.g. its index is still being built), and what the chain shows of each input of
/// the live attempts. An attempt is Dead only when one of its inputs was spent deep enough
/// by a transaction that is none of the payout's attempts: the transaction index is never
/// needed to prove death, and a spend by one of the payout's own attempts lands that one.
pub fn fate(
    attempts: &[Attempt],
    status: &HashMap<String, Option<TxStatus>>,
    inputs: &HashMap<Outpoint, InputSeen>,
    settle_confirmations: u64,
) -> Fate {
    // Never shallower than the floor, whatever the caller passes.
    let settle_confirmations = settle_confirmations.max(SETTLE_CONFIRMATIONS_MIN);
    let live: Vec<&Attempt> = attempts
        .iter()
        .filter(|attempt| attempt.state == AttemptState::Live)
        .collect();
    let seen = |attempt: &Attempt| {
        attempt
            .inputs
            .iter()
            .map(|input| inputs.get(input).unwrap_or(&InputSeen::NotSpent))
            .collect::<Vec<_>>()
    };
    // In a block deep enough, by the node's index.
    for attempt in &live {
        if let Some(Some(TxStatus::Included { confirmations, .. })) = status.get(&attempt.txid)
            && *confirmations >= settle_confirmations
        {
            return Fate::Landed(attempt.txid.clone());
        }
    }
    // An input spent by one of the payout's own attempts: that one is in a block.
    let mut wait = false;
    let mut held = None;
    for attempt in &live {
        for input in seen(attempt) {
            let InputSeen::Spent {
                spender,
                confirmations,
            } = input
            else {
                continue;
            };
            let Some(ours) = attempts.iter().find(|other| other.txid == *spender) else {
                continue;
            };
            if ours.state != AttemptState::Live {
                held = Some(ours.txid.clone());
            } else if *confirmations >= settle_confirmations {
                return Fate::Landed(ours.txid.clone());
            } else {
                wait = true;
            }
        }
    }
    if let Some(txid) = held {
        return Fate::Held(txid);
    }
    for attempt in &live {
        match status.get(&attempt.txid) {
            Some(Some(TxStatus::Pending | TxStatus::Included { .. })) => wait = true,
            Some(Some(TxStatus::NotFound) | None) | None => {}
        }
        for input in seen(attempt) {
            match input {
                InputSeen::Unproven => wait = true,
                InputSeen::Spent { confirmations, .. } if *confirmations < settle_confirmations => {
                    wait = true;
                }
                InputSeen::Spent { .. } | InputSeen::NotSpent => {}
            }
        }
    }
    if wait {
        return Fate::Wait;
    }
    // Every spend left is by another transaction, deep enough.
    let (dead, alive): (Vec<&Attempt>, Vec<&Attempt>) = live.iter().partition(|attempt| {
        seen(attempt)
            .iter()
            .any(|input| matches!(input, InputSeen::Spent { .. }))
    });
    Fate::Settle {
        dead: dead.iter().map(|attempt| attempt.txid.clone()).collect(),
        resend: alive
            .iter()
            .rev()
            .map(|attempt| attempt.txid.clone())
            .collect(),
    }
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
    /// At least [`SETTLE_CONFIRMATIONS_MIN`]: [`Payer::reconcile`] refuses less.
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

/// The change of a recorded attempt's transaction: its last output, when that pays one of
/// the wallet's change keys (`key_of`). Every attempt pays the outputs asked, in order, then
/// at most change (`check_outputs`): an output to a change key anywhere else is a
/// recipient's, and a bump must never take its fee from it.
pub fn change_of(
    tx: &Transaction,
    key_of: impl Fn(&ScriptBuf) -> Option<(Keychain, u32)>,
) -> Option<(u32, usize)> {
    let vout = tx.output.len().checked_sub(1)?;
    match key_of(&tx.output.get(vout)?.script_pubkey) {
        Some((Keychain::Change, index)) => Some((index, vout)),
        _ => None,
    }
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

    /// Records `new`, again with the same bytes when the log failed in a way worth retrying:
    /// the first try may have been stored with only its answer lost, and recording the very
    /// same attempt again is a no-op. Giving up then would let the caller rebuild the payout
    /// differently while the stored bytes may still be broadcast by a reconcile.
    async fn record(&self, new: &AttemptNew<'_>) -> Result<(), AttemptError> {
        let mut tries = 1;
        loop {
            match self.log.record(new).await {
                Err(error) if error.retriable() && tries < RECORD_TRIES_MAX => {
                    tracing::warn!(payout = new.payout, txid = new.txid, %error, tries, "recording the attempt failed: trying again with the same bytes");
                    tokio::time::sleep(crate::rpc::retry_delay(tries, crate::rpc::jitter())).await;
                    tries += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Builds, signs and records an attempt for `payout` without sending it (see the
    /// module's documentation). `members` are the withdrawals it pays (empty: the payout is
    /// one withdrawal, and its key is that withdrawal's id): one already paid by another
    /// payout that may land is refused with [`AttemptError::Claimed`], nothing recorded (pay
    /// the others without it). An output to one of the wallet's own keys is refused: an
    /// internal transfer is not a withdrawal, and a bump could take it for change.
    pub async fn prepare(
        &self,
        payout: &str,
        members: &[String],
        outputs: &[(Address, Amount)],
        fee_rate_sat_vb: u64,
        change_index: u32,
    ) -> Result<Prepared, PayoutError> {
        for (to, _) in outputs {
            if self.utxos.key_of(&self.bitcoin.script_of(to)?).is_some() {
                return Err(PayoutError::Refused(format!(
                    "{to} is this wallet's own address: a payout pays out"
                )));
            }
        }
        // A payout of one withdrawal holds it under its own key.
        let alone = [payout.to_string()];
        let members = if members.is_empty() {
            &alone[..]
        } else {
            members
        };
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
                .record(&AttemptNew {
                    chain: Chain::Bitcoin,
                    payout,
                    sender: self.sender,
                    txid: &signed.txid,
                    raw: &signed.raw,
                    inputs: &inputs,
                    members,
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
        members: &[String],
        outputs: &[(Address, Amount)],
        fee_rate_sat_vb: u64,
        change_index: u32,
    ) -> Result<Paid, PayoutError> {
        match self
            .prepare(payout, members, outputs, fee_rate_sat_vb, change_index)
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
    /// the wallet's unspent outputs, its change the last output when it pays a change key.
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
        let change = change_of(&tx, |script| self.utxos.key_of(script));
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

    /// The fee rate (sat/vB, by its largest size) a live, unconfirmed attempt pays: its
    /// inputs must still be unspent outputs of the wallet.
    pub fn fee_rate_of(&self, attempt: &Attempt) -> Result<u64, PayoutError> {
        Ok(self.unsigned_of(attempt)?.fee_rate_sat_vb)
    }

    /// Replaces the payout's newest live attempt by fee (BIP125: same inputs, the fee from
    /// the change, at least `fee_rate_sat_vb`), recorded with `replaces`, then broadcast.
    /// At most [`BUMPS_MAX`] times per payout.
    pub async fn bump(&self, payout: &str, fee_rate_sat_vb: u64) -> Result<Paid, PayoutError> {
        let attempts = self.log.attempts_of(Chain::Bitcoin, payout).await?;
        let bumps = attempts
            .iter()
            .filter(|attempt| attempt.replaces.is_some())
            .count();
        if bumps >= BUMPS_MAX {
            return Err(PayoutError::Refused(format!(
                "payout {payout} was replaced by fee {bumps} times already (at most \
                 {BUMPS_MAX}): a person looks"
            )));
        }
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
        self.record(&AttemptNew {
            chain: Chain::Bitcoin,
            payout,
            sender: self.sender,
            txid: &signed.txid,
            raw: &signed.raw,
            inputs: &inputs,
            // The payout holds its withdrawals already.
            members: &[],
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

    /// What the node's chain shows of `outpoint` (see [`InputSeen`]): the wallet's outputs
    /// say who spent it and in which block; that block must be the node's at that height, the
    /// outputs synced to the node's tip (`tip`: their last block is the node's best), and
    /// the node's UTXO set (without the pool) must have it spent.
    async fn input_seen(
        &self,
        outpoint: &Outpoint,
        tip: Option<u64>,
    ) -> Result<InputSeen, PayoutError> {
        let Some(Spend {
            height,
            spender,
            block,
        }) = chain_outpoint(outpoint).and_then(|o| self.utxos.spent_at(&o))
        else {
            return Ok(InputSeen::NotSpent);
        };
        let Some(tip) = tip else {
            return Ok(InputSeen::Unproven);
        };
        let on_chain = self
            .bitcoin
            .block(height)
            .await?
            .is_some_and(|node| node.hash == block.to_string());
        if !on_chain || height > tip {
            return Ok(InputSeen::Unproven);
        }
        let unspent = self
            .bitcoin
            .rpc()
            .call("gettxout", json!([outpoint.txid, outpoint.vout, false]))
            .await
            .map_err(chain_error)?;
        if !unspent.is_null() {
            // The node's chain has it unspent: our view is behind a reorg.
            return Ok(InputSeen::Unproven);
        }
        Ok(InputSeen::Spent {
            spender: spender.to_string(),
            confirmations: tip.saturating_add(1).saturating_sub(height),
        })
    }

    /// The height of the wallet outputs' last block when it is the node's best block (their
    /// spends are then on the node's chain, and as deep as they say); None otherwise (not
    /// synced yet, or the node moved to another branch: `UtxoSet::sync` first).
    async fn synced_tip(&self) -> Result<Option<u64>, PayoutError> {
        let Some((height, hash)) = self.utxos.last() else {
            return Ok(None);
        };
        let best = self
            .bitcoin
            .rpc()
            .call("getbestblockhash", json!([]))
            .await
            .map_err(chain_error)?;
        Ok((best.as_str() == Some(hash.to_string().as_str())).then_some(height))
    }

    /// Settles every live attempt of this wallet (see the module's documentation).
    pub async fn reconcile(&self) -> Result<Reconciled, PayoutError> {
        check_settle_confirmations(self.settle_confirmations).map_err(PayoutError::Refused)?;
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
            // One payout's error is reported for it; the round goes on.
            if let Err(error) = self.settle(payout, &mut report).await {
                tracing::warn!(payout, %error, "bitcoin payout: settling failed; the round goes on");
                report.failed.push((payout.to_string(), error.to_string()));
            }
            // Looked at, decided or not: the next round reads it after the payouts looked at
            // less recently, so payouts that stay undecided never starve newer ones.
            if let Err(error) = self.log.checked(Chain::Bitcoin, payout).await {
                tracing::warn!(payout, %error, "bitcoin payout: could not record the check");
            }
        }
        Ok(report)
    }

    async fn settle(&self, payout: &str, report: &mut Reconciled) -> Result<(), PayoutError> {
        let attempts = self.log.attempts_of(Chain::Bitcoin, payout).await?;
        let live: Vec<&Attempt> = attempts
            .iter()
            .filter(|attempt| attempt.state == AttemptState::Live)
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let mut status = HashMap::new();
        for attempt in &live {
            let seen = match self.bitcoin.transaction(&attempt.txid).await {
                Ok(seen) => Some(seen),
                // The node cannot say (its index is being built): the wallet's outputs
                // still can.
                Err(error) if error.retriable => {
                    tracing::warn!(payout, txid = %attempt.txid, %error, "bitcoin payout attempt: the node cannot say where it is");
                    None
                }
                Err(error) => return Err(error.into()),
            };
            status.insert(attempt.txid.clone(), seen);
        }
        let mut inputs = HashMap::new();
        let mut tip = None;
        for attempt in &live {
            for input in &attempt.inputs {
                if inputs.contains_key(input) {
                    continue;
                }
                if tip.is_none()
                    && chain_outpoint(input).is_some_and(|o| self.utxos.spent_at(&o).is_some())
                {
                    tip = Some(self.synced_tip().await?);
                }
                let seen = self.input_seen(input, tip.flatten()).await?;
                inputs.insert(input.clone(), seen);
            }
        }
        match fate(&attempts, &status, &inputs, self.settle_confirmations) {
            Fate::Landed(txid) => {
                // Stale: another process settled it first; nothing left to do here.
                if settled(self.log.landed(Chain::Bitcoin, &txid).await)? {
                    tracing::info!(payout, %txid, "bitcoin payout landed");
                    report.landed.push(txid);
                }
            }
            Fate::Wait => report.waiting += 1,
            Fate::Held(txid) => {
                tracing::error!(
                    payout,
                    %txid,
                    "bitcoin payout: an input was spent by an attempt the log does not hold \
                     live; left alone for a person"
                );
                report.held.push(payout.to_string());
            }
            Fate::Settle { dead, resend } => {
                for txid in dead {
                    if settled(self.log.dead(Chain::Bitcoin, &txid).await)? {
                        tracing::warn!(payout, %txid, "bitcoin payout attempt dead: an input was spent by another transaction");
                        report.dead.push(txid);
                    }
                }
                for txid in resend {
                    let Some(attempt) = live.iter().find(|attempt| attempt.txid == txid) else {
                        continue;
                    };
                    let signed = SignedTransaction {
                        txid: attempt.txid.clone(),
                        raw: attempt.raw.clone(),
                    };
                    let outcome = self.bitcoin.submit(&signed).await;
                    tracing::info!(payout, %txid, ?outcome, "bitcoin payout sent again");
                    let taken = matches!(
                        outcome,
                        SubmitOutcome::Accepted | SubmitOutcome::AlreadyKnown
                    );
                    report.rebroadcast.push((txid, outcome));
                    if taken {
                        break;
                    }
                }
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

    fn attempt(txid: &str, inputs: &[u32], state: AttemptState) -> Attempt {
        Attempt {
            payout: "p".into(),
            sender: "hot".into(),
            txid: txid.into(),
            raw: vec![],
            inputs: inputs.iter().map(|&vout| coin(vout)).collect(),
            replaces: None,
            state,
        }
    }

    fn coin(vout: u32) -> Outpoint {
        Outpoint {
            txid: "c".repeat(64),
            vout,
        }
    }

    fn included(confirmations: u64) -> Option<TxStatus> {
        Some(TxStatus::Included {
            block: chain::provider::BlockRef {
                number: 1,
                hash: "h".into(),
                parent_hash: "g".into(),
            },
            success: true,
            confirmations,
        })
    }

    fn spent(by: &str, confirmations: u64) -> InputSeen {
        InputSeen::Spent {
            spender: by.into(),
            confirmations,
        }
    }

    fn settle(dead: &[&str], resend: &[&str]) -> Fate {
        let own = |txids: &[&str]| txids.iter().map(ToString::to_string).collect();
        Fate::Settle {
            dead: own(dead),
            resend: own(resend),
        }
    }

    /// A case of the table: its name, the payout's attempts, what the node says of them by
    /// txid, what the chain shows of their inputs (by vout of one coin), the fate expected.
    type Case = (
        &'static str,
        Vec<Attempt>,
        Vec<(&'static str, Option<TxStatus>)>,
        Vec<(u32, InputSeen)>,
        Fate,
    );

    /// Settled 3 deep. Attempts "a" (the first) and "b" (its replacement, same input 0);
    /// "x" is a transaction that is none of the payout's.
    #[test]
    fn an_attempt_is_dead_only_when_another_transaction_spent_its_input_deep_enough() {
        use AttemptState::{Dead, Landed, Live, Replaced};
        let not_found = Some(TxStatus::NotFound);
        let unknown = None;
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("the index shows it deep",
             vec![attempt("a", &[0], Live)], vec![("a", included(3))], vec![], Fate::Landed("a".into())),
            ("the index shows it in a block too shallow",
             vec![attempt("a", &[0], Live)], vec![("a", included(2))], vec![(0, spent("a", 2))], Fate::Wait),
            ("in the pool",
             vec![attempt("a", &[0], Live)], vec![("a", Some(TxStatus::Pending))], vec![], Fate::Wait),
            // The review's case: the index is rebuilding (not found, or cannot say), the
            // attempt's own input is spent deep: by itself, so it landed.
            ("the index lags, the attempt spent its own input",
             vec![attempt("a", &[0], Live)], vec![("a", not_found.clone())], vec![(0, spent("a", 5))], Fate::Landed("a".into())),
            ("the index cannot say, the attempt spent its own input",
             vec![attempt("a", &[0], Live)], vec![("a", unknown.clone())], vec![(0, spent("a", 3))], Fate::Landed("a".into())),
            ("the replacement spent the input: it landed",
             vec![attempt("a", &[0], Live), attempt("b", &[0], Live)], vec![("a", not_found.clone()), ("b", not_found.clone())], vec![(0, spent("b", 3))], Fate::Landed("b".into())),
            ("the first version spent the input: it landed",
             vec![attempt("a", &[0], Live), attempt("b", &[0], Live)], vec![("a", unknown.clone()), ("b", not_found.clone())], vec![(0, spent("a", 4))], Fate::Landed("a".into())),
            ("ours, too shallow",
             vec![attempt("a", &[0], Live), attempt("b", &[0], Live)], vec![("a", not_found.clone()), ("b", not_found.clone())], vec![(0, spent("b", 2))], Fate::Wait),
            ("another transaction, deep enough: both dead",
             vec![attempt("a", &[0], Live), attempt("b", &[0], Live)], vec![("a", not_found.clone()), ("b", unknown.clone())], vec![(0, spent("x", 3))], settle(&["a", "b"], &[])),
            ("another transaction, too shallow",
             vec![attempt("a", &[0], Live)], vec![("a", not_found.clone())], vec![(0, spent("x", 2))], Fate::Wait),
            ("another transaction deep on one input, ours shallow on the other",
             vec![attempt("a", &[0, 1], Live)], vec![("a", not_found.clone())], vec![(0, spent("x", 9)), (1, spent("a", 1))], Fate::Wait),
            ("another transaction deep, a sibling in the pool",
             vec![attempt("a", &[0], Live), attempt("b", &[1], Live)], vec![("a", not_found.clone()), ("b", Some(TxStatus::Pending))], vec![(0, spent("x", 3))], Fate::Wait),
            ("a spend not proven on the node's chain",
             vec![attempt("a", &[0], Live)], vec![("a", not_found.clone())], vec![(0, InputSeen::Unproven)], Fate::Wait),
            ("nothing spent, nothing known: sent again, newest first",
             vec![attempt("a", &[0], Live), attempt("b", &[0], Live)], vec![("a", not_found.clone()), ("b", unknown.clone())], vec![(0, InputSeen::NotSpent)], settle(&[], &["b", "a"])),
            ("one dead by another transaction, another with other inputs sent again",
             vec![attempt("a", &[0], Live), attempt("b", &[1], Live)], vec![("a", not_found.clone()), ("b", not_found.clone())], vec![(0, spent("x", 3))], settle(&["a"], &["b"])),
            // Spent by an attempt the log no longer holds live: the payout is paid whatever
            // the log says; never dead, never sent again.
            ("spent by a replaced attempt",
             vec![attempt("a", &[0], Replaced), attempt("b", &[0], Live)], vec![("b", not_found.clone())], vec![(0, spent("a", 3))], Fate::Held("a".into())),
            ("spent by an attempt marked dead",
             vec![attempt("a", &[0], Dead), attempt("b", &[0], Live)], vec![("b", not_found.clone())], vec![(0, spent("a", 30))], Fate::Held("a".into())),
            ("spent by the landed attempt",
             vec![attempt("a", &[0], Landed), attempt("b", &[0], Live)], vec![("b", unknown.clone())], vec![(0, spent("a", 1))], Fate::Held("a".into())),
            ("no live attempt",
             vec![attempt("a", &[0], Landed)], vec![], vec![(0, spent("a", 3))], settle(&[], &[])),
        ];
        for (name, attempts, status, inputs, expected) in cases {
            let status = status
                .into_iter()
                .map(|(txid, seen)| (txid.to_string(), seen))
                .collect();
            let inputs = inputs
                .into_iter()
                .map(|(vout, seen)| (coin(vout), seen))
                .collect();
            assert_eq!(fate(&attempts, &status, &inputs, 3), expected, "{name}");
        }
    }

    /// A caller asking for one confirmation still gets the floor: a spend by another
    /// transaction one block deep proves nothing (a single stale block undoes it), and
    /// neither does our own attempt one block deep land the payout; two deep does.
    #[test]
    fn a_one_block_deep_spend_proves_nothing_whatever_the_caller_asks() {
        let not_found = Some(TxStatus::NotFound);
        let one = |seen: InputSeen| {
            let attempts = vec![attempt("a", &[0], AttemptState::Live)];
            let status = HashMap::from([("a".to_string(), not_found.clone())]);
            let inputs = HashMap::from([(coin(0), seen)]);
            fate(&attempts, &status, &inputs, 1)
        };
        assert_eq!(one(spent("x", 1)), Fate::Wait);
        assert_eq!(
            one(spent("x", SETTLE_CONFIRMATIONS_MIN)),
            settle(&["a"], &[])
        );
        assert_eq!(one(spent("a", 1)), Fate::Wait);
        assert_eq!(one(spent("a", 2)), Fate::Landed("a".into()));
        assert!(
            check_settle_confirmations(1)
                .unwrap_err()
                .contains("at least 2")
        );
        assert!(check_settle_confirmations(0).is_err());
        check_settle_confirmations(SETTLE_CONFIRMATIONS_MIN).unwrap();
    }

    #[test]
    fn the_change_is_the_last_output_to_a_change_key_never_a_recipients() {
        use bitcoin::{Amount as Sat, TxOut, absolute::LockTime, transaction::Version};
        let script = |n: u8| ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([n; 20]));
        let key_of = |script: &ScriptBuf| match script.as_bytes().get(2) {
            Some(5) => Some((Keychain::Change, 5)),
            Some(3) => Some((Keychain::Change, 3)),
            Some(1) => Some((Keychain::Receive, 1)),
            _ => None,
        };
        let tx = |outputs: &[u8]| Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![],
            output: outputs
                .iter()
                .map(|&n| TxOut {
                    value: Sat::from_sat(1_000),
                    script_pubkey: script(n),
                })
                .collect(),
        };
        // A withdrawal to our own change key 5, another recipient, then change to key 3.
        assert_eq!(change_of(&tx(&[5, 9, 3]), key_of), Some((3, 2)));
        assert_eq!(change_of(&tx(&[5, 9]), key_of), None, "a recipient's");
        assert_eq!(change_of(&tx(&[9, 1]), key_of), None, "a receive key");
        assert_eq!(change_of(&tx(&[]), key_of), None);
    }

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
