//! Manual review actions checked against the chain (`store::reviews`): what a chain's
//! withdrawal worker runs for a `withdrawal.review` job on TRON and Ethereum (Bitcoin's is
//! in `coinsensei::bitcoin_payer`, over its own wallet of outputs).
//!
//! - Mark paid by a txid: the transaction must be in a block at the chain's confirmation
//!   policy, have succeeded, and hold a transfer of exactly the withdrawal's asset (the
//!   catalogue's contract, never a look-alike) and amount to its destination from the hot
//!   wallet; and every transaction stored for the withdrawal must be provably dead or be that
//!   very transaction, so nothing of ours can still pay it a second time.
//! - Mark failed, and try again: every transaction ever stored for the withdrawal, in every
//!   payout round, must be provably dead:
//!   - TRON: every attempt `dead` or `replaced` (the payer proved it past its expiration on
//!     the solidified chain), or in a final block having failed;
//!   - Ethereum: every nonce settled and final: mined by one of ours that failed (in a final
//!     block), or consumed by a foreign transaction with the account's count at the final
//!     block past it and none of ours in a block.
//!
//! The verdict is a sentence either way: the proof that was found, or what is missing.

use chain::provider::{Asset, ChainBuild, ChainRead, ChainSubmit, TxStatus, WatchSet};
use store::{AttemptState, NonceSettlement, ReviewAction, ReviewPaid, ReviewRow, WithdrawalRow};

use super::WithdrawalPayer;
use crate::WalletError;

/// What the chain showed for a review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Proved: apply it. `paid` for `mark_paid`.
    Proved {
        outcome: String,
        paid: Option<ReviewPaid>,
    },
    /// Not proved: nothing changes; why.
    Refused(String),
}

/// How a transaction id is compared: lower case, without `0x`.
pub fn same_txid(a: &str, b: &str) -> bool {
    fn bare(text: &str) -> String {
        text.trim_start_matches("0x")
            .trim_start_matches("0X")
            .to_ascii_lowercase()
    }
    bare(a) == bare(b)
}

impl<P: ChainBuild + ChainSubmit + ChainRead> WithdrawalPayer<P> {
    /// Judges `review` of `row` on the chain (see the module). An error is a node or store
    /// that did not answer: the job tries again.
    pub async fn review(
        &self,
        review: &ReviewRow,
        row: &WithdrawalRow,
    ) -> Result<Verdict, WalletError> {
        let nonces = self.wallet.provider().chain() == domain::Chain::Ethereum;
        let dead = if nonces {
            self.nonces_dead(row, review.txid.as_deref()).await?
        } else {
            self.attempts_dead(row, review.txid.as_deref()).await?
        };
        let dead = match dead {
            Ok(proof) => proof,
            Err(missing) => return Ok(Verdict::Refused(missing)),
        };
        match review.action {
            ReviewAction::MarkFailed | ReviewAction::Retry => Ok(Verdict::Proved {
                outcome: dead,
                paid: None,
            }),
            ReviewAction::MarkPaid => {
                let txid = review.txid.as_deref().unwrap_or_default();
                self.paid_by(row, txid).await
            }
        }
    }

    /// Whether `txid` pays `row` (see the module).
    async fn paid_by(&self, row: &WithdrawalRow, txid: &str) -> Result<Verdict, WalletError> {
        let provider = self.wallet.provider();
        let (block, confirmations) = match provider.transaction(txid).await? {
            TxStatus::NotFound => {
                return Ok(Verdict::Refused(format!(
                    "the node does not know transaction {txid}"
                )));
            }
            TxStatus::Pending => {
                return Ok(Verdict::Refused(format!(
                    "transaction {txid} is not in a block yet"
                )));
            }
            TxStatus::Included { success: false, .. } => {
                return Ok(Verdict::Refused(format!(
                    "transaction {txid} failed on chain: it moved nothing"
                )));
            }
            TxStatus::Included {
                block,
                confirmations,
                ..
            } => (block, confirmations),
        };
        let finalized = self.wallet.provider().tip().await?.finalized;
        let is_final = confirmations >= self.policy.confirmations
            || finalized.is_some_and(|height| block.number <= height);
        if !is_final {
            return Ok(Verdict::Refused(format!(
                "transaction {txid} has {confirmations} confirmations of the {} the chain's policy needs: ask again later",
                self.policy.confirmations
            )));
        }
        let payment = match self.payment_of(row) {
            Ok(payment) => payment,
            Err(error) => return Ok(Verdict::Refused(error.to_string())),
        };
        let watch = WatchSet {
            addresses: vec![payment.to.clone()],
            tokens: match &payment.asset {
                Asset::Native => vec![],
                Asset::Token(contract) => vec![contract.clone()],
            },
        };
        let batch = provider.scan(block.number, block.number, &watch).await?;
        let transfers: Vec<_> = batch
            .deposits
            .iter()
            .filter(|transfer| same_txid(&transfer.txid, txid))
            .collect();
        let hot = payment.from.to_string();
        let Some(transfer) = transfers.iter().find(|transfer| {
            transfer.asset == payment.asset
                && transfer.to == payment.to
                && transfer.amount == payment.amount
                && transfer.from.as_deref() == Some(hot.as_str())
        }) else {
            let found: Vec<String> = transfers
                .iter()
                .map(|transfer| {
                    format!(
                        "{} {} from {}",
                        transfer.amount.base_units(),
                        transfer.asset,
                        transfer.from.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            return Ok(Verdict::Refused(format!(
                "transaction {txid} does not pay exactly {} {} ({}) to {} from the hot wallet {hot}; to that destination it pays: {}",
                row.amount,
                row.asset,
                payment.asset,
                row.destination,
                if found.is_empty() {
                    "nothing".to_string()
                } else {
                    found.join(", ")
                }
            )));
        };
        if let Some(other) = self
            .store
            .withdrawal_with_txid(row.chain, txid, row.id, None)
            .await?
        {
            return Ok(Verdict::Refused(format!(
                "transaction {txid} is withdrawal {other}'s: one transfer proves one withdrawal paid"
            )));
        }
        let fee = provider
            .fee_paid(txid)
            .await?
            .map(|fee| fee.base_units().to_string());
        Ok(Verdict::Proved {
            outcome: format!(
                "transaction {txid} pays {} {} to {} from the hot wallet (position {}, block {}, {confirmations} confirmations)",
                row.amount, row.asset, row.destination, transfer.position, block.number
            ),
            paid: Some(ReviewPaid {
                position: i64::try_from(transfer.position).unwrap_or(i64::MAX),
                block_height: i64::try_from(block.number).ok(),
                confirmations: i64::try_from(confirmations).ok(),
                fee,
                batch: None,
            }),
        })
    }

    /// TRON: whether every attempt of every round is provably dead (`except`: the txid a
    /// mark-paid names, which may be one of ours).
    async fn attempts_dead(
        &self,
        row: &WithdrawalRow,
        except: Option<&str>,
    ) -> Result<Result<String, String>, WalletError> {
        let chain = row.chain;
        let mut proofs = Vec::new();
        for key in row.attempt_keys() {
            for attempt in self.store.attempts_of(chain, &key).await? {
                if except.is_some_and(|txid| same_txid(txid, &attempt.txid)) {
                    continue;
                }
                match attempt.state {
                    AttemptState::Live => {
                        return Ok(Err(format!(
                            "attempt {} ({key}) is live: it may still land",
                            attempt.txid
                        )));
                    }
                    AttemptState::Dead | AttemptState::Replaced => {
                        proofs.push(format!("{} {}", attempt.txid, attempt.state.as_str()))
                    }
                    AttemptState::Landed => match self.depth(&attempt.txid).await? {
                        Some((false, block, _, true)) => proofs.push(format!(
                            "{} failed on chain in final block {block}",
                            attempt.txid
                        )),
                        Some((true, ..)) => {
                            return Ok(Err(format!(
                                "attempt {} landed and succeeded: it paid the withdrawal (mark it paid with that txid)",
                                attempt.txid
                            )));
                        }
                        _ => {
                            return Ok(Err(format!(
                                "attempt {} is stored landed but the node does not show it in a final block",
                                attempt.txid
                            )));
                        }
                    },
                }
            }
        }
        Ok(Ok(dead_sentence(&proofs)))
    }

    /// Ethereum: whether every nonce of every round is settled for good with none of ours
    /// paying (`except` as above).
    async fn nonces_dead(
        &self,
        row: &WithdrawalRow,
        except: Option<&str>,
    ) -> Result<Result<String, String>, WalletError> {
        let chain = row.chain;
        let provider = self.wallet.provider();
        let mut proofs = Vec::new();
        for key in row.attempt_keys() {
            let Some(held) = self.store.nonce_get(chain, &key).await? else {
                continue;
            };
            if !held.is_bound() {
                if held.reserved_until > chrono::Utc::now() {
                    return Ok(Err(format!(
                        "nonce {} is reserved for {key} until {}: a payer may be signing",
                        held.nonce, held.reserved_until
                    )));
                }
                continue;
            }
            match &held.settlement {
                None => {
                    return Ok(Err(format!(
                        "nonce {} ({key}) is not settled yet: one of its transactions may still be mined",
                        held.nonce
                    )));
                }
                Some(NonceSettlement::Mined { txid }) => {
                    if except.is_some_and(|paid| same_txid(paid, txid)) {
                        continue;
                    }
                    match self.depth(txid).await? {
                        Some((false, block, _, true)) => proofs.push(format!(
                            "nonce {} used by {txid}, which failed on chain in final block {block}",
                            held.nonce
                        )),
                        Some((true, ..)) => {
                            return Ok(Err(format!(
                                "transaction {txid} (nonce {}) succeeded: it paid the withdrawal (mark it paid with that txid)",
                                held.nonce
                            )));
                        }
                        _ => {
                            return Ok(Err(format!(
                                "transaction {txid} (nonce {}) is not in a final block",
                                held.nonce
                            )));
                        }
                    }
                }
                Some(NonceSettlement::Foreign) => {
                    for tx in &held.txs {
                        if let TxStatus::Included { .. } | TxStatus::Pending =
                            provider.transaction(&tx.txid).await?
                        {
                            return Ok(Err(format!(
                                "transaction {} of nonce {} is known to the node after all",
                                tx.txid, held.nonce
                            )));
                        }
                    }
                    let tip = self.wallet.provider().tip().await?;
                    let deep = tip
                        .head
                        .saturating_sub(self.policy.confirmations.saturating_sub(1));
                    let final_height = tip.finalized.map_or(deep, |finalized| finalized.max(deep));
                    let address =
                        chain::address::Address::parse(chain, self.network, &held.address)
                            .map_err(|error| {
                                WalletError::Invalid(format!("nonce address: {error}"))
                            })?;
                    match provider.account_sequence_at(&address, final_height).await? {
                        Some(count) if count > held.nonce => proofs.push(format!(
                            "nonce {} consumed by a transaction none of ours, final at block {final_height}",
                            held.nonce
                        )),
                        Some(count) => {
                            return Ok(Err(format!(
                                "nonce {} was consumed by a foreign transaction that is not final yet (the account's count at block {final_height} is {count}): ask again later",
                                held.nonce
                            )));
                        }
                        None => {
                            return Ok(Err(
                                "the node cannot say the account's nonce at a block".into()
                            ));
                        }
                    }
                }
            }
        }
        Ok(Ok(dead_sentence(&proofs)))
    }
}

/// The proof of death in a sentence.
fn dead_sentence(proofs: &[String]) -> String {
    if proofs.is_empty() {
        "nothing was ever signed for it".to_string()
    } else {
        format!(
            "every transaction stored for it is provably dead: {}",
            proofs.join("; ")
        )
    }
}
