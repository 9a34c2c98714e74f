//! Payments recorded as attempts (TRON today), for chains without account nonces: each
//! payout (a withdrawal id, the caller's idempotency key) is paid by signed bytes stored under
//! it **before** they are broadcast (DESIGN.md §2.2), and a new attempt for the same payout
//! is only made once every earlier one is provably dead (§2.3; the store refuses it
//! otherwise). The chain says when an attempt is dead through
//! [`chain::provider::ChainAttempts`]; this module never needs to know how.
//!
//! - [`Wallet::pay`]: metadata → build → sign → read the bytes back and compare them with the
//!   payment → `attempt_store` → broadcast. A crash anywhere after the store leaves a Live
//!   attempt that [`Wallet::reconcile_attempts`] finishes; a crash before leaves nothing.
//! - [`Wallet::reconcile_attempts`]: each Live attempt is settled Landed or Dead by the
//!   chain's death rule, or, while it may still land, broadcast again, the very same bytes.

use chain::address::Address;
use chain::provider::{
    AttemptFate, ChainAttempts, ChainEnergy, Delegation, Payment, SignedTransaction, SubmitOutcome,
};
use chrono::Utc;
use store::AttemptNew;

use crate::{Wallet, WalletError};

/// The most Live attempts one reconcile looks at (the least recently checked first, see
/// `Store::attempt_checked`); the rest wait for the next round.
pub const RECONCILE_ATTEMPTS_MAX: usize = 200;
/// The longest payout key the store takes, in bytes.
pub const PAYOUT_KEY_MAX: usize = 200;

/// A payment that went out (or may have): its attempt's txid and what the node said. Whatever
/// the outcome, the bytes were stored first; an outcome other than Accepted or AlreadyKnown
/// is for [`Wallet::reconcile_attempts`] to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paid {
    pub txid: String,
    pub outcome: SubmitOutcome,
}

/// What [`Wallet::reconcile_attempts`] did with one Live attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// In a final block: marked Landed. `success` false means it landed without paying (a
    /// TRC-20 call out of energy): the payout needs an operator, never a blind new attempt.
    Landed {
        payout: String,
        txid: String,
        block: u64,
        success: bool,
    },
    /// Provably never to land: marked Dead; the payout may be paid by a new attempt.
    Dead { payout: String, txid: String },
    /// May still land: the same bytes broadcast again.
    Rebroadcast {
        payout: String,
        txid: String,
        outcome: SubmitOutcome,
    },
    /// The chain could not say (a node error, a proof it could not complete): left Live.
    Undecided {
        payout: String,
        txid: String,
        reason: String,
    },
}

impl<P: ChainAttempts> Wallet<P> {
    /// Pays `payment` for `payout`: builds and signs it, checks the signed bytes say exactly
    /// the payment, stores them as the payout's attempt, then broadcasts them.
    ///
    /// Refused without anything stored or sent: bad input (`Invalid`), bytes that do not
    /// match (`Mismatch`), and a payout that already has a Live or Landed attempt (the
    /// store's `Conflict`: a second attempt only once the first is dead).
    pub async fn pay(&self, payout: &str, payment: &Payment) -> Result<Paid, WalletError> {
        self.check_payment(payment)?;
        check_payout(payout)?;
        let metadata = self.provider.metadata(payment).await?;
        let signed = self.sign_checked(payment, &metadata, None)?;
        self.store_and_send(payout, &payment.from, signed).await
    }

    /// Persist, then broadcast: `signed` stored as the payout's attempt (refused, nothing
    /// sent, while the payout has a Live or Landed one), then sent.
    async fn store_and_send(
        &self,
        payout: &str,
        sender: &Address,
        signed: SignedTransaction,
    ) -> Result<Paid, WalletError> {
        let chain = self.provider.chain();
        let expires_at = self.provider.expires_at(&signed)?;
        self.store
            .attempt_store(&AttemptNew {
                chain,
                payout,
                sender: sender.as_str(),
                txid: &signed.txid,
                raw: &signed.raw,
                expires_at,
                inputs: &[],
                // The payout is the withdrawal itself.
                members: &[],
                replaces: None,
                now: Utc::now(),
            })
            .await?;
        let outcome = self.provider.submit(&signed).await;
        tracing::info!(%chain, payout, txid = %signed.txid, ?outcome, "paid by a stored attempt");
        Ok(Paid {
            txid: signed.txid,
            outcome,
        })
    }

    /// Settles the Live attempts of `payout` only (as [`Wallet::reconcile_attempts`] does the
    /// chain's): what a payer that follows its own payouts calls.
    pub async fn settle_payout(&self, payout: &str) -> Result<Vec<Settled>, WalletError> {
        let chain = self.provider.chain();
        let mut report = Vec::new();
        for attempt in self.store.attempts_of(chain, payout).await? {
            if attempt.state != store::AttemptState::Live {
                continue;
            }
            let signed = SignedTransaction {
                txid: attempt.txid.clone(),
                raw: attempt.raw,
            };
            if let Some(settled) = self.settle_attempt(&signed, payout, &attempt.txid).await? {
                report.push(settled);
            }
        }
        Ok(report)
    }

    /// Settles the Live attempts of this chain (of `sender` only when given), the least
    /// recently checked first, at most [`RECONCILE_ATTEMPTS_MAX`]: Landed and Dead are
    /// recorded; an attempt that may still land is broadcast again, the stored bytes byte for
    /// byte. Each attempt looked at is recorded as checked, so attempts that stay undecided go
    /// to the back of the next round. One attempt the chain cannot judge, or whose settling
    /// fails in the store, is reported `Undecided` and does not stop the others.
    pub async fn reconcile_attempts(
        &self,
        sender: Option<&Address>,
    ) -> Result<Vec<Settled>, WalletError> {
        let chain = self.provider.chain();
        let live = self
            .store
            .attempts_live(chain, sender.map(Address::as_str))
            .await?;
        let mut report = Vec::new();
        for attempt in live.into_iter().take(RECONCILE_ATTEMPTS_MAX) {
            let signed = SignedTransaction {
                txid: attempt.txid.clone(),
                raw: attempt.raw,
            };
            let payout = attempt.payout;
            let txid = attempt.txid;
            let settled = self.settle_attempt(&signed, &payout, &txid).await;
            if let Err(error) = self.store.attempt_checked(chain, &payout, Utc::now()).await {
                tracing::warn!(%chain, payout, txid, %error, "could not record an attempt as checked");
            }
            match settled {
                Ok(Some(settled)) => report.push(settled),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%chain, payout, txid, %error, "settling an attempt failed; the round goes on");
                    report.push(Settled::Undecided {
                        payout,
                        txid,
                        reason: error.to_string(),
                    });
                }
            }
        }
        Ok(report)
    }

    /// One Live attempt's fate, recorded (None: another reconciler settled it first). An
    /// error is the store's while recording; the chain's not knowing is `Undecided`.
    async fn settle_attempt(
        &self,
        signed: &SignedTransaction,
        payout: &str,
        txid: &str,
    ) -> Result<Option<Settled>, WalletError> {
        let chain = self.provider.chain();
        let (payout, txid) = (payout.to_string(), txid.to_string());
        Ok(Some(match self.provider.attempt_fate(signed).await {
            Ok(AttemptFate::Landed { block, success }) => {
                if settled_elsewhere(self.store.attempt_landed(chain, &txid, Utc::now()).await)? {
                    return Ok(None);
                }
                if !success {
                    tracing::warn!(%chain, payout, txid, block, "an attempt landed but failed: the payout needs an operator");
                }
                Settled::Landed {
                    payout,
                    txid,
                    block,
                    success,
                }
            }
            Ok(AttemptFate::Dead) => {
                if settled_elsewhere(self.store.attempt_dead(chain, &txid, Utc::now()).await)? {
                    return Ok(None);
                }
                tracing::info!(%chain, payout, txid, "an attempt is provably dead");
                Settled::Dead { payout, txid }
            }
            Ok(AttemptFate::MayLand) => {
                let outcome = self.provider.submit(signed).await;
                tracing::debug!(%chain, payout, txid, ?outcome, "sent a live attempt again");
                Settled::Rebroadcast {
                    payout,
                    txid,
                    outcome,
                }
            }
            Err(error) => {
                tracing::warn!(%chain, payout, txid, error = %error, "an attempt's fate is not known yet");
                Settled::Undecided {
                    payout,
                    txid,
                    reason: error.message,
                }
            }
        }))
    }
}

impl<P: ChainEnergy> Wallet<P> {
    /// Pays `delegation` (a Stake 2.0 delegation of energy, or its reclaim) for `payout` as
    /// [`Wallet::pay`] pays a payment: built, signed, read back and compared, stored as the
    /// payout's attempt, then broadcast.
    pub async fn pay_delegation(
        &self,
        payout: &str,
        delegation: &Delegation,
    ) -> Result<Paid, WalletError> {
        check_payout(payout)?;
        let key = self.create_wallet(delegation.from_index)?;
        if key != delegation.owner {
            return Err(WalletError::Invalid(format!(
                "key {} is {key}, not the staking account {}",
                delegation.from_index, delegation.owner
            )));
        }
        if delegation.receiver == delegation.owner || delegation.balance == 0 {
            return Err(WalletError::Invalid(
                "a delegation lends more than zero to another account".into(),
            ));
        }
        let chain = self.provider.chain();
        let unsigned = self.provider.build_delegation(delegation).await?;
        let signatures = self
            .signer
            .sign_payloads(chain, &self.provider.payloads(&unsigned))?;
        let signed = self.provider.combine(unsigned, &signatures)?;
        let parsed = self.provider.parse_delegation(&signed)?;
        if !delegation.matches(&parsed) {
            return Err(WalletError::Mismatch(format!(
                "asked {delegation:?}; the bytes say {parsed:?}"
            )));
        }
        self.store_and_send(payout, &delegation.owner, signed).await
    }
}

fn check_payout(payout: &str) -> Result<(), WalletError> {
    if payout.is_empty() || payout.len() > PAYOUT_KEY_MAX {
        return Err(WalletError::Invalid(format!(
            "a payout key of 1 to {PAYOUT_KEY_MAX} bytes, not {}",
            payout.len()
        )));
    }
    Ok(())
}

/// Whether settling failed only because the attempt is no longer Live: another reconciler
/// settled it first (or it was replaced), which is not this one's error.
fn settled_elsewhere(result: Result<(), store::StoreError>) -> Result<bool, WalletError> {
    match result {
        Ok(()) => Ok(false),
        Err(store::StoreError::Stale(reason)) => {
            tracing::debug!(reason, "an attempt was settled elsewhere first");
            Ok(true)
        }
        Err(error) => Err(error.into()),
    }
}
