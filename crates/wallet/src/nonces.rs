//! Payments by account nonces (Ethereum), each nonce tied to the payout it pays in the store
//! (DESIGN.md §2.2 and §2.3):
//!
//! - [`Wallet::pay_nonce`] is idempotent per payout: a job retried after a crash at any await
//!   (before the reservation, between reservation and bind, between bind and broadcast, after
//!   the broadcast) finds the payout's nonce and finishes the same transaction; it never
//!   reserves a second nonce for the payout, and bytes once stored are only ever sent again,
//!   never signed anew with another nonce.
//! - [`Wallet::settle_nonces`] settles each bound nonce of an address by which of its stored
//!   transactions was mined, or as `Foreign` when a transaction none of ours consumed it (a
//!   person must look); it sends again what the node forgot and replaces what waits too long,
//!   both fee caps raised by at least 10 %, up to a cap. Every replacement is stored before it
//!   is broadcast and every earlier transaction of the nonce is kept, since any of them may
//!   be the one mined.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chain::provider::{
    ChainBuild, ChainReplace, ChainSubmit, Payment, SignedTransaction, SubmitOutcome, TxStatus,
};
use chrono::Utc;
use store::{
    NonceBind, NonceFees, NonceHeld, NonceReplace, NonceReserve, NonceSettle, NonceSettlement,
    NonceTxNew, NonceUnsettled, StoreError,
};

use crate::{NONCE_LEASE, Reconciled, Sent, Wallet, WalletError};

/// The most bound nonces one [`Wallet::settle_nonces`] round looks at, the lowest first (a
/// chain mines an address's nonces in order, so the lowest undecided ones are the ones that
/// can move); the rest wait for the next round.
pub const NONCES_SETTLE_MAX: usize = 64;
/// How many nonces a settle call looks at, at once.
pub const SETTLE_CONCURRENCY: usize = 16;

/// How [`Wallet::settle_nonces`] treats transactions that wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceSettlePolicy {
    /// How long the latest transaction of a nonce may wait in the node's pool before it is
    /// replaced with higher fees.
    pub replace_after: Duration,
    /// The most a replacement may pay per gas, in wei (both caps stay under it).
    pub fee_cap: u128,
}

/// What [`Wallet::settle_nonces`] found or did for one bound nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonceOutcome {
    /// One of the nonce's own transactions was mined (recorded in the store). `success` is
    /// its receipt's status: a mined but failed transfer needs a person, not a retry.
    Mined {
        payout: String,
        nonce: u64,
        txid: String,
        block: u64,
        success: bool,
        confirmations: u64,
    },
    /// The nonce was consumed by a transaction that is none of ours (recorded in the store,
    /// logged as an error): the payout goes to `manual_review`.
    Foreign { payout: String, nonce: u64 },
    /// Its latest transaction waits in the node's pool.
    Pending {
        payout: String,
        nonce: u64,
        txid: String,
    },
    /// The node no longer knew its latest transaction: the same bytes were sent again.
    Rebroadcast {
        payout: String,
        nonce: u64,
        txid: String,
        outcome: SubmitOutcome,
    },
    /// It waited longer than the policy allows: a replacement with higher fees was stored
    /// and sent (`replaced` is kept too, and may still be the one mined).
    Replaced {
        payout: String,
        nonce: u64,
        replaced: String,
        txid: String,
        outcome: SubmitOutcome,
    },
    /// It waits, and no replacement can be made: the fee cap, or the most transactions a
    /// nonce keeps ([`store::NONCE_TXS_MAX`]), is reached. Logged as a warning.
    Stuck {
        payout: String,
        nonce: u64,
        txid: String,
    },
}

/// One bound nonce's round: what happened, or the error that stopped it (the other nonces
/// of the round went on).
#[derive(Debug)]
pub struct NonceSettled {
    pub payout: String,
    pub nonce: u64,
    pub result: Result<NonceOutcome, WalletError>,
}

/// Makes the payout keys of [`Wallet::send`] unique within the process.
static SEND_SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn signed_of(held: &NonceHeld) -> Option<SignedTransaction> {
    held.latest().map(|tx| SignedTransaction {
        txid: tx.txid.clone(),
        raw: tx.raw.clone(),
    })
}

impl<P: ChainBuild + ChainSubmit> Wallet<P> {
    /// Makes `payment` under a payout key of its own: the seed's `sendTransaction`, which is
    /// not idempotent (each call pays). Workers pay withdrawals with [`Wallet::pay_nonce`].
    /// A failure before the bytes are stored gives the nonce back; a definite refusal by the
    /// node of bytes that never left otherwise frees it; anything else keeps it bound to the
    /// stored bytes, which [`Wallet::reconcile`] sends again if the node drops them.
    pub async fn send(&self, payment: &Payment) -> Result<Sent, WalletError> {
        self.check_payment(payment)?;
        let payout = format!(
            "send:{}:{}:{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            SEND_SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        self.pay_with_nonce(&payout, payment, |_| None).await
    }

    /// The nonce path of [`Wallet::pay_nonce`] and [`Wallet::send`]; `fees` reads the fee
    /// caps of signed bytes, where the chain has them, to keep beside the bytes.
    pub(crate) async fn pay_with_nonce(
        &self,
        payout: &str,
        payment: &Payment,
        fees: impl Fn(&SignedTransaction) -> Option<NonceFees>,
    ) -> Result<Sent, WalletError> {
        let chain = self.provider.chain();
        let from = payment.from.as_str();
        // A retry: the payout's transaction is stored already, finish it.
        if let Some(held) = self.store.nonce_get(chain, payout).await?
            && held.is_bound()
        {
            return self.finish_bound(&held, payment).await;
        }
        let mut metadata = self.provider.metadata(payment).await?;
        let Some(node_pending) = self.provider.sequence(&metadata) else {
            return Err(WalletError::Unsupported(format!(
                "{chain} has no account nonces: its payments are attempts stored under a \
                 payout key, made by `Wallet::pay(payout, payment)`"
            )));
        };
        let now = Utc::now();
        let held = self
            .store
            .nonce_reserve(&NonceReserve {
                chain,
                address: from.to_string(),
                payout: payout.to_string(),
                node_pending,
                holder: self.holder.clone(),
                lease_until: now + NONCE_LEASE,
                now,
            })
            .await?;
        if held.is_bound() {
            return self.finish_bound(&held, payment).await;
        }
        let nonce = held.nonce;
        self.provider.set_sequence(&mut metadata, nonce);
        let signed = match self.sign_checked(payment, &metadata, Some(nonce)) {
            Ok(signed) => signed,
            Err(error) => {
                if let Err(release) = self
                    .store
                    .nonce_release(chain, from, nonce, &self.holder)
                    .await
                {
                    tracing::warn!(%chain, from, nonce, error = %release, "could not give a nonce back");
                }
                return Err(error);
            }
        };
        // Persist, then broadcast.
        let bind = NonceBind {
            chain,
            address: from.to_string(),
            nonce,
            holder: self.holder.clone(),
            payout: payout.to_string(),
            tx: NonceTxNew {
                txid: signed.txid.clone(),
                raw: signed.raw.clone(),
                fees: fees(&signed),
            },
            now: Utc::now(),
        };
        match self.store.nonce_bind(&bind).await {
            Ok(()) => {}
            Err(StoreError::Stale(why)) => {
                // Another try of this payout bound the nonce first: finish its transaction.
                // Or this one's lease ran out and the nonce went elsewhere: nothing was sent,
                // and the next try starts again.
                if let Some(held) = self.store.nonce_get(chain, payout).await?
                    && held.is_bound()
                {
                    return self.finish_bound(&held, payment).await;
                }
                return Err(WalletError::Chain(chain::provider::ChainError::retriable(
                    format!("the nonce reservation of payout {payout} was lost ({why}); try again"),
                )));
            }
            Err(error) => return Err(error.into()),
        }
        let outcome = self.provider.submit(&signed).await;
        if let SubmitOutcome::Rejected {
            retriable: false,
            reason,
        } = &outcome
        {
            // These bytes were stored a moment ago and this was their first broadcast: refused
            // for good, they cannot be out anywhere. The nonce is freed only while the chain
            // has not moved past it (then something consumed it, and settling says what).
            match self.provider.account_sequence(&payment.from).await {
                Ok(Some(sequence)) if sequence.mined <= nonce => {
                    tracing::warn!(%chain, from, nonce, payout, txid = %signed.txid, reason, "the node refused a payment for good; its nonce is freed");
                    if let Err(error) = self
                        .store
                        .nonce_unbind(chain, from, nonce, &signed.txid)
                        .await
                    {
                        tracing::warn!(%chain, from, nonce, payout, %error, "could not free a refused nonce; it stays bound");
                    }
                }
                _ => {
                    tracing::warn!(%chain, from, nonce, payout, txid = %signed.txid, reason, "the node refused a payment for good; its nonce stays bound until it is settled");
                }
            }
        }
        Ok(Sent {
            txid: signed.txid,
            sequence: Some(nonce),
            outcome,
        })
    }

    /// A payout whose nonce is bound: its stored transaction (the latest) sent again, if it
    /// does what `payment` asks; a settled one reported as it ended.
    async fn finish_bound(&self, held: &NonceHeld, payment: &Payment) -> Result<Sent, WalletError> {
        if held.address != payment.from.as_str() {
            return Err(WalletError::Invalid(format!(
                "payout {} is paid from {}, not {}",
                held.payout, held.address, payment.from
            )));
        }
        match &held.settlement {
            Some(NonceSettlement::Mined { txid }) => {
                return Ok(Sent {
                    txid: txid.clone(),
                    sequence: Some(held.nonce),
                    outcome: SubmitOutcome::AlreadyKnown,
                });
            }
            Some(NonceSettlement::Foreign) => {
                return Err(WalletError::NonceForeign {
                    payout: held.payout.clone(),
                    nonce: held.nonce,
                });
            }
            None => {}
        }
        let signed = signed_of(held).ok_or_else(|| {
            WalletError::Store(StoreError::Corrupt(format!(
                "payout {} holds a bound nonce without a transaction",
                held.payout
            )))
        })?;
        let parsed = self.provider.parse(&signed)?;
        if !parsed.matches(payment) || parsed.sequence != Some(held.nonce) {
            return Err(WalletError::Mismatch(format!(
                "payout {} holds {} paying {} {} to {}, not the payment asked; nothing was sent",
                held.payout,
                signed.txid,
                parsed.amount.base_units(),
                parsed.asset,
                parsed.to
            )));
        }
        let outcome = self.provider.submit(&signed).await;
        tracing::info!(chain = %self.provider.chain(), payout = %held.payout, nonce = held.nonce, txid = %signed.txid, ?outcome, "sent a stored payment again");
        Ok(Sent {
            txid: signed.txid,
            sequence: Some(held.nonce),
            outcome,
        })
    }

    /// Looks at the unsettled transactions of key `from_index` whose nonces the chain has not
    /// mined yet: one the node no longer knows (a restarted node, an evicted transaction, a
    /// crash between storing and broadcasting) is sent again, the same bytes (its latest),
    /// so its nonce does not become a gap that stalls every later payment. Nonces the chain
    /// has passed are left to [`Wallet::settle_nonces`], which finds whose transaction
    /// consumed them.
    pub async fn reconcile(&self, from_index: u32) -> Result<Reconciled, WalletError> {
        let chain = self.provider.chain();
        let from = self.create_wallet(from_index)?;
        let Some(sequence) = self.provider.account_sequence(&from).await? else {
            return Ok(Reconciled::default());
        };
        let mut report = Reconciled::default();
        let unsettled = self
            .store
            .nonce_unsettled(&NonceUnsettled {
                chain,
                address: from.to_string(),
                from_nonce: sequence.mined,
                limit: NONCES_SETTLE_MAX,
            })
            .await?;
        for held in unsettled {
            let Some(signed) = signed_of(&held) else {
                continue;
            };
            match self.provider.transaction(&signed.txid).await? {
                TxStatus::NotFound => {
                    let outcome = self.provider.submit(&signed).await;
                    tracing::info!(%chain, from = %from, nonce = held.nonce, txid = %signed.txid, ?outcome, "sent a dropped transaction again");
                    report.rebroadcast.push((held.nonce, signed.txid, outcome));
                }
                TxStatus::Pending | TxStatus::Included { .. } => report.known += 1,
            }
        }
        Ok(report)
    }
}

impl<P: ChainReplace> Wallet<P> {
    /// Pays `payment` for `payout` (a withdrawal id, 1 to 200 bytes), once whatever happens:
    /// a stored transaction of the payout is sent again from its bytes; a reservation without
    /// one is signed with that same nonce; else a nonce is reserved, the payment built, signed,
    /// read back and checked, stored, and only then broadcast. A payout that holds a
    /// transaction for another payment is a `Mismatch` (nothing sent); one whose nonce a
    /// foreign transaction consumed is [`WalletError::NonceForeign`]; one settled `Mined`
    /// returns its mined txid.
    pub async fn pay_nonce(&self, payout: &str, payment: &Payment) -> Result<Sent, WalletError> {
        self.check_payment(payment)?;
        self.pay_with_nonce(payout, payment, |signed| {
            self.provider.fee_caps(signed).ok().map(|caps| NonceFees {
                max_fee_per_gas: caps.max_fee_per_gas,
                max_priority_fee_per_gas: caps.max_priority_fee_per_gas,
            })
        })
        .await
    }

    /// One round over the bound, unsettled nonces of key `from_index` (at most
    /// [`NONCES_SETTLE_MAX`], the lowest first): each is settled `Mined` by which of its
    /// transactions the chain holds, or `Foreign`; or sent again, or replaced, or left
    /// pending. One nonce's error is reported for it and the round goes on.
    pub async fn settle_nonces(
        &self,
        from_index: u32,
        policy: &NonceSettlePolicy,
    ) -> Result<Vec<NonceSettled>, WalletError> {
        let chain = self.provider.chain();
        let from = self.create_wallet(from_index)?;
        let unsettled = self
            .store
            .nonce_unsettled(&NonceUnsettled {
                chain,
                address: from.to_string(),
                from_nonce: 0,
                limit: NONCES_SETTLE_MAX,
            })
            .await?;
        if unsettled.is_empty() {
            return Ok(Vec::new());
        }
        let Some(sequence) = self.provider.account_sequence(&from).await? else {
            return Err(WalletError::Unsupported(format!(
                "{chain} has no account nonces"
            )));
        };
        // Each nonce is settled on its own row: a few at a time, reported in nonce order.
        use futures_util::StreamExt;
        let from = &from;
        let report = futures_util::stream::iter(unsettled)
            .map(|held| async move {
                let result = self
                    .settle_nonce(from_index, from, &held, sequence.mined, policy)
                    .await;
                if let Err(error) = &result {
                    tracing::warn!(%chain, from = %from, payout = %held.payout, nonce = held.nonce, %error, "settling a nonce failed; the others go on");
                }
                NonceSettled {
                    payout: held.payout,
                    nonce: held.nonce,
                    result,
                }
            })
            .buffered(SETTLE_CONCURRENCY)
            .collect()
            .await;
        Ok(report)
    }

    async fn settle_nonce(
        &self,
        from_index: u32,
        from: &chain::address::Address,
        held: &NonceHeld,
        mined_count: u64,
        policy: &NonceSettlePolicy,
    ) -> Result<NonceOutcome, WalletError> {
        let chain = self.provider.chain();
        let payout = held.payout.clone();
        let nonce = held.nonce;
        let Some(latest) = signed_of(held) else {
            return Err(WalletError::Store(StoreError::Corrupt(format!(
                "nonce {nonce} of payout {payout} is bound without a transaction"
            ))));
        };
        // Which transactions to ask about: every one once the chain has passed the nonce;
        // else the latest (the one in the pool), whose receipt may have just appeared.
        let candidates: Vec<&str> = if nonce < mined_count {
            held.txs.iter().map(|tx| tx.txid.as_str()).collect()
        } else {
            vec![latest.txid.as_str()]
        };
        let mut latest_status = None;
        for txid in candidates {
            let status = self.provider.transaction(txid).await?;
            if let TxStatus::Included {
                block,
                success,
                confirmations,
            } = status
            {
                self.store
                    .nonce_settle(&NonceSettle {
                        chain,
                        address: from.to_string(),
                        nonce,
                        settlement: NonceSettlement::Mined {
                            txid: txid.to_string(),
                        },
                        now: Utc::now(),
                    })
                    .await?;
                tracing::info!(%chain, from = %from, payout, nonce, txid, block = block.number, success, "a nonce settled: mined");
                return Ok(NonceOutcome::Mined {
                    payout,
                    nonce,
                    txid: txid.to_string(),
                    block: block.number,
                    success,
                    confirmations,
                });
            }
            if txid == latest.txid {
                latest_status = Some(status);
            }
        }
        if nonce < mined_count {
            // None of ours is in a block, yet the chain has passed the nonce. Asked again now
            // (the count read before the receipts could be from a block since reorganised):
            // if it still holds, a transaction that is none of ours consumed the nonce.
            let again = self
                .provider
                .account_sequence(from)
                .await?
                .map_or(0, |sequence| sequence.mined);
            if again <= nonce {
                return Ok(NonceOutcome::Pending {
                    payout,
                    nonce,
                    txid: latest.txid,
                });
            }
            self.store
                .nonce_settle(&NonceSettle {
                    chain,
                    address: from.to_string(),
                    nonce,
                    settlement: NonceSettlement::Foreign,
                    now: Utc::now(),
                })
                .await?;
            let txids: Vec<&str> = held.txs.iter().map(|tx| tx.txid.as_str()).collect();
            tracing::error!(%chain, from = %from, payout, nonce, ?txids, "a nonce was consumed by a transaction that is none of ours: the payout needs a person");
            return Ok(NonceOutcome::Foreign { payout, nonce });
        }
        match latest_status {
            Some(TxStatus::NotFound) => {
                let outcome = self.provider.submit(&latest).await;
                tracing::info!(%chain, from = %from, payout, nonce, txid = %latest.txid, ?outcome, "sent a dropped transaction again");
                Ok(NonceOutcome::Rebroadcast {
                    payout,
                    nonce,
                    txid: latest.txid,
                    outcome,
                })
            }
            _ => {
                let waited = held
                    .latest()
                    .map(|tx| Utc::now() - tx.created_at)
                    .and_then(|waited| waited.to_std().ok())
                    .unwrap_or_default();
                if waited < policy.replace_after {
                    return Ok(NonceOutcome::Pending {
                        payout,
                        nonce,
                        txid: latest.txid,
                    });
                }
                self.replace(from_index, from, held, latest, policy).await
            }
        }
    }

    /// Replaces the latest transaction of `held` with higher fees: built from the stored
    /// bytes, signed, read back and checked to pay exactly what they paid, stored as one more
    /// transaction of the nonce, then broadcast.
    async fn replace(
        &self,
        from_index: u32,
        from: &chain::address::Address,
        held: &NonceHeld,
        latest: SignedTransaction,
        policy: &NonceSettlePolicy,
    ) -> Result<NonceOutcome, WalletError> {
        let chain = self.provider.chain();
        let (payout, nonce) = (held.payout.clone(), held.nonce);
        let stuck = |why: &str| {
            tracing::warn!(%chain, from = %from, payout, nonce, txid = %latest.txid, why, "a transaction waits and cannot be replaced");
            Ok(NonceOutcome::Stuck {
                payout: payout.clone(),
                nonce,
                txid: latest.txid.clone(),
            })
        };
        if held.txs.len() >= store::NONCE_TXS_MAX {
            return stuck("the nonce holds the most transactions it may");
        }
        let Some(unsigned) = self
            .provider
            .replacement(&latest, from_index, policy.fee_cap)
            .await?
        else {
            return stuck("the fee cap is reached");
        };
        let signatures = self
            .signer
            .sign_payloads(chain, &self.provider.payloads(&unsigned))?;
        let signed = self.provider.combine(unsigned, &signatures)?;
        let before = self.provider.parse(&latest)?;
        let after = self.provider.parse(&signed)?;
        if before != after {
            return Err(WalletError::Mismatch(format!(
                "the replacement of {} does not pay what it replaces: {after:?} instead of \
                 {before:?}",
                latest.txid
            )));
        }
        let caps = self.provider.fee_caps(&signed)?;
        self.store
            .nonce_replace(&NonceReplace {
                chain,
                address: from.to_string(),
                nonce,
                replaces: latest.txid.clone(),
                tx: NonceTxNew {
                    txid: signed.txid.clone(),
                    raw: signed.raw.clone(),
                    fees: Some(NonceFees {
                        max_fee_per_gas: caps.max_fee_per_gas,
                        max_priority_fee_per_gas: caps.max_priority_fee_per_gas,
                    }),
                },
                now: Utc::now(),
            })
            .await?;
        let outcome = self.provider.submit(&signed).await;
        tracing::info!(%chain, from = %from, payout, nonce, replaced = %latest.txid, txid = %signed.txid, ?outcome, "replaced a waiting transaction with higher fees");
        Ok(NonceOutcome::Replaced {
            payout,
            nonce,
            replaced: latest.txid,
            txid: signed.txid,
            outcome,
        })
    }
}
