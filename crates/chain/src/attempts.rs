//! What an adapter that pays from unspent outputs needs of the store, said without the store:
//! a log of payout attempts that locks their inputs (DESIGN.md §2.2 and §2.3).
//!
//! Chain adapters never depend on the store (STYLE.md: chain SDKs never touch the database);
//! the wallet implements [`AttemptLog`] over `store::Store` (`wallet::attempt_log`), and an
//! adapter's payout flow (chain-bitcoin's `payout.rs`) is written against this trait. The
//! operations mirror the store's `attempt_*` and `utxo_reserved`.

use std::future::Future;

use domain::Chain;

/// An output, by the transaction that created it and its position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Outpoint {
    pub txid: String,
    pub vout: u32,
}

/// A signed transaction to record before it is broadcast.
#[derive(Debug, Clone, Copy)]
pub struct AttemptNew<'a> {
    pub chain: Chain,
    /// The payout it pays (a withdrawal id, or a batch key): the idempotency key.
    pub payout: &'a str,
    /// Who pays (the wallet's name).
    pub sender: &'a str,
    pub txid: &'a str,
    pub raw: &'a [u8],
    /// The outputs it spends: locked for `payout` in the same transaction as the record.
    pub inputs: &'a [Outpoint],
    /// The withdrawals it pays (a batch pays many): each held for `payout` while it may
    /// land, so a withdrawal taken into another batch too is refused.
    pub members: &'a [String],
    /// The payout's live attempt this one replaces by fee (it shares an input with it).
    pub replaces: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// May still land: rebroadcast it, or settle it.
    Live,
    /// In a block: the payout is made.
    Landed,
    /// Can never land: an input was spent by a transaction that is not the payout's.
    Dead,
    /// Another attempt of the same payout landed.
    Replaced,
}

/// A recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub payout: String,
    pub sender: String,
    pub txid: String,
    pub raw: Vec<u8>,
    pub inputs: Vec<Outpoint>,
    pub replaces: Option<String>,
    pub state: AttemptState,
}

/// Why the log refused, and what the caller can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// The payout already has a live or landed attempt, or an input is locked by another
    /// payout: nothing was recorded. Look again (`attempts_of`, `reserved`) and decide.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The attempt named is not live (any more).
    #[error("stale: {0}")]
    Stale(String),
    /// A withdrawal of the new attempt is paid by another payout that may land (or did):
    /// nothing was recorded; follow that payout, and pay the others without it.
    #[error("{member} is paid by payout {payout} already")]
    Claimed { member: String, payout: String },
    /// The log could not be reached or failed; `retriable` says whether to try again.
    #[error("attempt log: {message}")]
    Failed { retriable: bool, message: String },
}

impl AttemptError {
    pub fn retriable(&self) -> bool {
        matches!(
            self,
            AttemptError::Failed {
                retriable: true,
                ..
            }
        )
    }
}

/// See the module's documentation. Each call is one store transaction.
pub trait AttemptLog: Send + Sync {
    /// The outputs every payout of `chain` holds, with the payout holding each.
    fn reserved(
        &self,
        chain: Chain,
    ) -> impl Future<Output = Result<Vec<(Outpoint, String)>, AttemptError>> + Send;
    /// Records `new` as live and locks its inputs, atomically; see [`AttemptError`].
    fn record(&self, new: &AttemptNew<'_>)
    -> impl Future<Output = Result<(), AttemptError>> + Send;
    /// The live attempts of `chain` (of `sender` when given), least recently checked first
    /// (see [`AttemptLog::checked`]), then oldest first.
    fn live(
        &self,
        chain: Chain,
        sender: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Attempt>, AttemptError>> + Send;
    /// Every attempt of `payout`, oldest first.
    fn attempts_of(
        &self,
        chain: Chain,
        payout: &str,
    ) -> impl Future<Output = Result<Vec<Attempt>, AttemptError>> + Send;
    /// Live → Landed; the payout's other live attempts become Replaced.
    fn landed(
        &self,
        chain: Chain,
        txid: &str,
    ) -> impl Future<Output = Result<(), AttemptError>> + Send;
    /// Live → Dead; the payout's inputs are released once nothing of it may land.
    fn dead(
        &self,
        chain: Chain,
        txid: &str,
    ) -> impl Future<Output = Result<(), AttemptError>> + Send;
    /// A reconciler looked at the live attempts of `payout` now, decided or not: they go
    /// behind every live attempt looked at less recently, so undecided ones never keep
    /// newer ones from being looked at.
    fn checked(
        &self,
        chain: Chain,
        payout: &str,
    ) -> impl Future<Output = Result<(), AttemptError>> + Send;
}
