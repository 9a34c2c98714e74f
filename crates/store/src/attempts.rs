//! Payout attempts (migration 0009): the signed transactions that pay a payout, each stored
//! before it is broadcast (DESIGN.md §2.2), and the Bitcoin outputs they spend, each locked
//! to one payout.
//!
//! A payout is what one or more attempts pay: a withdrawal, or a Bitcoin batch of them. The
//! store holds invariant 3 (at most one attempt can land) for the chains without an account
//! nonce (TRON, Bitcoin):
//!
//! - [`Store::attempt_store`] refuses a new attempt while the payout has a live or landed one,
//!   unless it names the live one it replaces by fee and spends an input of every live attempt
//!   of the payout (so it conflicts on chain with each, and at most one of them can confirm);
//! - inputs are reserved in the same transaction: an output reserved by another payout is a
//!   `Conflict`, and nothing is written;
//! - only [`Store::attempt_dead`] (the chain proved the attempt can never land) lets a payout
//!   have a new attempt; [`Store::attempt_landed`] retires the payout's other live attempts.
//!
//! Every change is a compare-and-set on the attempt's state, serialised per payout (an
//! advisory lock on Postgres, `begin immediate` on SQLite).

use chrono::{DateTime, Utc};
use domain::Chain;

use crate::{RAW_TX_BYTES_MAX, Store, StoreError};

macro_rules! on_dialect {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Postgres($store) => $call,
            Store::Sqlite($store) => $call,
        }
    };
}

/// The most inputs one attempt may spend (a standard transaction of 100 kvB holds fewer).
pub const ATTEMPT_INPUTS_MAX: usize = 2_000;

/// The most live attempts one [`Store::attempts_live`] returns (the oldest first): a
/// reconciler that finds this many settles them and asks again.
pub const ATTEMPTS_LIVE_MAX: usize = 10_000;

/// The most withdrawals one payout pays.
pub const ATTEMPT_MEMBERS_MAX: usize = 2_000;

/// An output of a previous transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outpoint {
    pub txid: String,
    pub vout: u32,
}

impl std::fmt::Display for Outpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.txid, self.vout)
    }
}

/// A signed transaction paying `payout`, to be stored before it is broadcast.
#[derive(Clone)]
pub struct AttemptNew<'a> {
    pub chain: Chain,
    /// What it pays: a withdrawal id, or a batch id (the caller's idempotency key).
    pub payout: &'a str,
    /// The paying address (TRON's owner), or the paying wallet's name (Bitcoin).
    pub sender: &'a str,
    pub txid: &'a str,
    /// The signed bytes: what is broadcast, and broadcast again.
    pub raw: &'a [u8],
    /// When it can no longer enter a block (TRON `raw_data.expiration`, ms); None elsewhere.
    pub expires_at: Option<i64>,
    /// The outputs it spends (Bitcoin), reserved for `payout`.
    pub inputs: &'a [Outpoint],
    /// The withdrawals it pays when a payout pays several (a Bitcoin batch): each is held
    /// for `payout` while it may land, so no other payout can pay it too.
    pub members: &'a [String],
    /// The txid of the payout's live attempt that this one replaces by fee.
    pub replaces: Option<&'a str>,
    pub now: DateTime<Utc>,
}

impl std::fmt::Debug for AttemptNew<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptNew")
            .field("chain", &self.chain)
            .field("payout", &self.payout)
            .field("txid", &self.txid)
            .field("bytes", &self.raw.len())
            .field("inputs", &self.inputs.len())
            .field("members", &self.members.len())
            .field("replaces", &self.replaces)
            .finish_non_exhaustive()
    }
}

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// Stored, maybe broadcast: it may land, so only its own bytes may be sent again.
    Live,
    /// In a block at the chain's confirmation policy: the payout is paid by it.
    Landed,
    /// Proved unable to ever land: the payout may have a new attempt.
    Dead,
    /// Another attempt of the same payout landed and this one conflicts with it.
    Replaced,
}

impl AttemptState {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Live => "live",
            AttemptState::Landed => "landed",
            AttemptState::Dead => "dead",
            AttemptState::Replaced => "replaced",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<AttemptState, StoreError> {
        Ok(match text {
            "live" => AttemptState::Live,
            "landed" => AttemptState::Landed,
            "dead" => AttemptState::Dead,
            "replaced" => AttemptState::Replaced,
            other => return Err(crate::corrupt("payout_attempt.state", other)),
        })
    }
}

/// A stored attempt.
#[derive(Clone, PartialEq, Eq)]
pub struct Attempt {
    pub chain: Chain,
    pub payout: String,
    pub sender: String,
    pub txid: String,
    pub raw: Vec<u8>,
    pub expires_at: Option<i64>,
    pub inputs: Vec<Outpoint>,
    pub replaces: Option<String>,
    pub state: AttemptState,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("chain", &self.chain)
            .field("payout", &self.payout)
            .field("txid", &self.txid)
            .field("state", &self.state)
            .field("bytes", &self.raw.len())
            .field("expires_at", &self.expires_at)
            .field("inputs", &self.inputs)
            .field("replaces", &self.replaces)
            .finish_non_exhaustive()
    }
}

fn validate_key(what: &str, text: &str, max: usize) -> Result<(), StoreError> {
    if text.is_empty() || text.len() > max {
        return Err(StoreError::Invalid(format!("a {what} is 1 to {max} bytes")));
    }
    Ok(())
}

fn validate(new: &AttemptNew<'_>) -> Result<(), StoreError> {
    validate_key("payout", new.payout, 200)?;
    validate_key("sender", new.sender, 100)?;
    validate_key("txid", new.txid, 100)?;
    if new.raw.is_empty() || new.raw.len() > RAW_TX_BYTES_MAX {
        return Err(StoreError::Invalid(format!(
            "a signed transaction is 1 to {RAW_TX_BYTES_MAX} bytes"
        )));
    }
    if new.expires_at.is_some_and(|at| at < 0) {
        return Err(StoreError::Invalid("an expiration is not negative".into()));
    }
    if new.replaces == Some(new.txid) {
        return Err(StoreError::Invalid(
            "an attempt cannot replace itself".into(),
        ));
    }
    if new.inputs.len() > ATTEMPT_INPUTS_MAX {
        return Err(StoreError::Invalid(format!(
            "an attempt spends at most {ATTEMPT_INPUTS_MAX} outputs"
        )));
    }
    let mut inputs: Vec<&Outpoint> = new.inputs.iter().collect();
    inputs.sort();
    for pair in inputs.windows(2) {
        if pair[0] == pair[1] {
            return Err(StoreError::Invalid(format!(
                "output {} is spent twice by one attempt",
                pair[0]
            )));
        }
    }
    for input in &inputs {
        validate_key("txid", &input.txid, 100)?;
    }
    if new.members.len() > ATTEMPT_MEMBERS_MAX {
        return Err(StoreError::Invalid(format!(
            "a payout pays at most {ATTEMPT_MEMBERS_MAX} withdrawals"
        )));
    }
    let mut members: Vec<&String> = new.members.iter().collect();
    members.sort();
    for member in &members {
        validate_key("withdrawal id", member, 200)?;
    }
    if let Some(pair) = members.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(StoreError::Invalid(format!(
            "withdrawal {} is paid twice by one payout",
            pair[0]
        )));
    }
    if new.replaces.is_some() && new.inputs.is_empty() {
        return Err(StoreError::Invalid(
            "only an attempt that spends outputs can replace another".into(),
        ));
    }
    Ok(())
}

impl Store {
    /// Stores `new` as a live attempt of its payout, with its inputs reserved, in one
    /// transaction; call it before broadcasting. Refused, with nothing written:
    /// - `Conflict` while the payout has a live or landed attempt and `new` replaces none (a
    ///   new attempt needs every earlier one proved dead), or when an input is reserved by
    ///   another payout, or the txid is stored for something else;
    /// - `Claimed` when one of its `members` is paid by another payout that may still land;
    /// - `Stale` when `replaces` is not a live attempt of the payout, or `new` spends none of
    ///   the inputs of one of the payout's live attempts (a replacement must conflict with
    ///   every attempt that may still confirm, not only the one it names).
    ///
    /// Storing the very same attempt again is a no-op, so a caller that lost the answer can
    /// simply call again.
    pub async fn attempt_store(&self, new: &AttemptNew<'_>) -> Result<(), StoreError> {
        validate(new)?;
        on_dialect!(self, store => store.attempt_store(new).await)
    }

    /// The live attempts of `chain` (of `sender` only, when given), least recently checked
    /// first ([`Store::attempt_checked`]; never checked before all, then oldest first), with
    /// their bytes and inputs: what a reconciler sends again or settles. At most
    /// [`ATTEMPTS_LIVE_MAX`]: attempts that stay undecided go to the back, so they never keep
    /// newer ones from being looked at.
    pub async fn attempts_live(
        &self,
        chain: Chain,
        sender: Option<&str>,
    ) -> Result<Vec<Attempt>, StoreError> {
        if let Some(sender) = sender {
            validate_key("sender", sender, 100)?;
        }
        on_dialect!(self, store => store.attempts_live(chain, sender).await)
    }

    /// Records that a reconciler looked at the live attempts of `payout` at `now`, decided or
    /// not: the next [`Store::attempts_live`] puts them behind every attempt looked at less
    /// recently.
    pub async fn attempt_checked(
        &self,
        chain: Chain,
        payout: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        validate_key("payout", payout, 200)?;
        // One SQL text for both dialects; only the time's encoding differs.
        const CHECKED: &str = "update payout_attempt set checked_at = $3
             where chain = $1 and payout = $2 and state = 'live'";
        match self {
            Store::Postgres(store) => {
                sqlx::query(CHECKED)
                    .bind(chain.as_str())
                    .bind(payout)
                    .bind(now)
                    .execute(&store.pool)
                    .await?;
            }
            Store::Sqlite(store) => {
                sqlx::query(CHECKED)
                    .bind(chain.as_str())
                    .bind(payout)
                    .bind(crate::sqlite::to_millis(now))
                    .execute(&store.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Every attempt of `payout`, oldest first.
    pub async fn attempts_of(
        &self,
        chain: Chain,
        payout: &str,
    ) -> Result<Vec<Attempt>, StoreError> {
        validate_key("payout", payout, 200)?;
        on_dialect!(self, store => store.attempts_of(chain, payout).await)
    }

    /// Live → landed: the attempt is in a block at the chain's confirmation policy. The
    /// payout's other live attempts become replaced (they conflict with it), and the outputs
    /// reserved only for them are released. `Stale` when the attempt is not live.
    pub async fn attempt_landed(
        &self,
        chain: Chain,
        txid: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        validate_key("txid", txid, 100)?;
        self.attempt_settle(chain, txid, AttemptState::Landed, now)
            .await
    }

    /// Live → dead: the chain proved the attempt can never land (TRON: expired, and the
    /// solidified chain past its expiration does not hold it; Bitcoin: an input was spent by a
    /// transaction that is none of the payout's). Outputs reserved for the payout that no live
    /// or landed attempt of it spends any more are released. `Stale` when it is not live.
    pub async fn attempt_dead(
        &self,
        chain: Chain,
        txid: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        validate_key("txid", txid, 100)?;
        self.attempt_settle(chain, txid, AttemptState::Dead, now)
            .await
    }

    async fn attempt_settle(
        &self,
        chain: Chain,
        txid: &str,
        to: AttemptState,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let settled = on_dialect!(self, store => store.attempt_settle(chain, txid, to, now).await)?;
        if settled {
            Ok(())
        } else {
            Err(StoreError::Stale(format!(
                "attempt {txid} on {chain} is not live"
            )))
        }
    }

    /// The outputs reserved on `chain`, each with the payout it is reserved for: coin
    /// selection leaves them out.
    pub async fn utxo_reserved(&self, chain: Chain) -> Result<Vec<(Outpoint, String)>, StoreError> {
        on_dialect!(self, store => store.utxo_reserved(chain).await)
    }
}

/// What `attempt_store` decides from the rows it read under the payout's lock. `live_inputs`
/// are the inputs of each live attempt of the payout (read only for a replacement).
pub(crate) fn check_store(
    new: &AttemptNew<'_>,
    same_txid: Option<(String, Vec<u8>)>,
    holding: &[(String, AttemptState)],
    live_inputs: &[(String, Vec<Outpoint>)],
) -> Result<bool, StoreError> {
    if let Some((payout, raw)) = same_txid {
        if payout == new.payout && raw == new.raw {
            return Ok(false);
        }
        return Err(StoreError::Conflict(format!(
            "transaction {} is stored already for payout {payout}",
            new.txid
        )));
    }
    match new.replaces {
        None => {
            if let Some((txid, state)) = holding.first() {
                return Err(StoreError::Conflict(format!(
                    "payout {} has a {} attempt {txid}: only its own bytes may be sent again until it is proved dead",
                    new.payout,
                    state.as_str()
                )));
            }
        }
        Some(replaces) => {
            if let Some((txid, _)) = holding
                .iter()
                .find(|(_, state)| *state == AttemptState::Landed)
            {
                return Err(StoreError::Conflict(format!(
                    "payout {} is paid by {txid} already",
                    new.payout
                )));
            }
            if !holding
                .iter()
                .any(|(txid, state)| txid == replaces && *state == AttemptState::Live)
            {
                return Err(StoreError::Stale(format!(
                    "{replaces} is not a live attempt of payout {}",
                    new.payout
                )));
            }
            // Every live attempt may still confirm: the new one must spend an output of each,
            // or it and one of them could both confirm. Sharing an input with the one it
            // names is not enough once a payout has been bumped twice.
            for (txid, _) in holding
                .iter()
                .filter(|(_, state)| *state == AttemptState::Live)
            {
                let shares = live_inputs
                    .iter()
                    .find(|(live, _)| live == txid)
                    .is_some_and(|(_, inputs)| {
                        inputs.iter().any(|input| new.inputs.contains(input))
                    });
                if !shares {
                    return Err(StoreError::Stale(format!(
                        "{} spends none of the outputs of live attempt {txid}: both could confirm",
                        new.txid
                    )));
                }
            }
        }
    }
    Ok(true)
}

pub(crate) fn vout(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| crate::corrupt("vout", value))
}
