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
//! advisory lock on Postgres, `begin immediate` on SQLite). That lock (`d::lock_payout`) is
//! the one part written per dialect; all the SQL is one text for both (see `dialect.rs`).
//! Output reservations rely on their primary key: on Postgres a second payout's insert waits
//! for the first's transaction and then finds its row.

use chrono::{DateTime, Utc};
use domain::Chain;
use sqlx::{QueryBuilder, Row};

use crate::dialect::{in_write_tx, on_pool, per_dialect};
use crate::{RAW_TX_BYTES_MAX, Store, StoreError};

/// Reads a `payout_attempt` row (without its inputs) in either dialect.
macro_rules! decode_attempt {
    ($row:expr, $d:ident) => {{
        let row = $row;
        let chain: String = row.try_get("chain")?;
        let state: String = row.try_get("state")?;
        Attempt {
            chain: chain
                .parse()
                .map_err(|error| crate::corrupt("payout_attempt.chain", error))?,
            payout: row.try_get("payout")?,
            sender: row.try_get("sender")?,
            txid: row.try_get("txid")?,
            raw: row.try_get("raw")?,
            expires_at: row.try_get("expires_at")?,
            inputs: Vec::new(),
            replaces: row.try_get("replaces")?,
            state: AttemptState::parse(&state)?,
            created_at: $d::read_time(row, "created_at")?,
        }
    }};
}

/// Attempts read from the pool at once when their inputs are looked up.
const INPUTS_LOOKUP_CHUNK: usize = 500;

per_dialect! {
    /// Releases the payout's reservations that no live or landed attempt of it spends, and
    /// its members when none of its attempts is live or landed any more.
    pub(crate) async fn release_unused(
        connection: &mut d::Connection,
        chain: Chain,
        payout: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "delete from utxo_reservation
             where chain = $1 and payout = $2 and not exists (
                 select 1 from attempt_input i
                 join payout_attempt a on a.chain = i.chain and a.txid = i.attempt_txid
                 where i.chain = utxo_reservation.chain and i.txid = utxo_reservation.txid
                   and i.vout = utxo_reservation.vout and a.payout = utxo_reservation.payout
                   and a.state in ('live', 'landed'))",
        )
        .bind(chain.as_str())
        .bind(payout)
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "delete from payout_member
             where chain = $1 and payout = $2 and not exists (
                 select 1 from payout_attempt a
                 where a.chain = payout_member.chain and a.payout = payout_member.payout
                   and a.state in ('live', 'landed'))",
        )
        .bind(chain.as_str())
        .bind(payout)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    /// The inputs of attempt `txid`, in order.
    pub(crate) async fn inputs_of(
        connection: &mut d::Connection,
        chain: Chain,
        txid: &str,
    ) -> Result<Vec<Outpoint>, StoreError> {
        sqlx::query(
            "select txid, vout from attempt_input where chain = $1 and attempt_txid = $2
             order by txid, vout",
        )
        .bind(chain.as_str())
        .bind(txid)
        .fetch_all(connection)
        .await?
        .iter()
        .map(|row| {
            Ok(Outpoint {
                txid: row.try_get("txid")?,
                vout: vout(row.try_get("vout")?)?,
            })
        })
        .collect()
    }

    /// Fills in the inputs of `attempts` (all of one chain), a chunk of attempts per query.
    pub(crate) async fn with_inputs(
        pool: &sqlx::Pool<d::Db>,
        mut attempts: Vec<Attempt>,
    ) -> Result<Vec<Attempt>, StoreError> {
        let Some(chain) = attempts.first().map(|attempt| attempt.chain) else {
            return Ok(attempts);
        };
        let txids: Vec<String> = attempts.iter().map(|a| a.txid.clone()).collect();
        for chunk in txids.chunks(INPUTS_LOOKUP_CHUNK) {
            let mut select = QueryBuilder::<d::Db>::new(
                "select attempt_txid, txid, vout from attempt_input where chain = ",
            );
            select.push_bind(chain.as_str()).push(" and attempt_txid in (");
            let mut list = select.separated(", ");
            for txid in chunk {
                list.push_bind(txid);
            }
            select.push(") order by attempt_txid, txid, vout");
            for row in select.build().fetch_all(pool).await? {
                let owner: String = row.try_get("attempt_txid")?;
                let input = Outpoint {
                    txid: row.try_get("txid")?,
                    vout: vout(row.try_get("vout")?)?,
                };
                if let Some(attempt) = attempts.iter_mut().find(|a| a.txid == owner) {
                    attempt.inputs.push(input);
                }
            }
        }
        Ok(attempts)
    }
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
        let chain = new.chain.as_str();
        in_write_tx!(self, |store, conn, d| {
            d::lock_payout(&mut *conn, new.chain, new.payout).await?;
            let same_txid = sqlx::query(
                "select payout, raw from payout_attempt where chain = $1 and txid = $2",
            )
            .bind(chain)
            .bind(new.txid)
            .fetch_optional(&mut *conn)
            .await?
            .map(|row| Ok::<_, StoreError>((row.try_get("payout")?, row.try_get("raw")?)))
            .transpose()?;
            let holding = sqlx::query(
                "select txid, state from payout_attempt
                 where chain = $1 and payout = $2 and state in ('live', 'landed')
                 order by created_at, txid",
            )
            .bind(chain)
            .bind(new.payout)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok((row.try_get("txid")?, AttemptState::parse(&state)?))
            })
            .collect::<Result<Vec<(String, AttemptState)>, StoreError>>()?;
            // A replacement must conflict with every live attempt: their inputs (a payout has a
            // few, bounded by the bumps a chain adapter makes).
            let mut live_inputs = Vec::new();
            if new.replaces.is_some() {
                for (txid, state) in &holding {
                    if *state == AttemptState::Live {
                        let inputs = d::attempts::inputs_of(&mut *conn, new.chain, txid).await?;
                        live_inputs.push((txid.clone(), inputs));
                    }
                }
            }
            if !check_store(new, same_txid, &holding, &live_inputs)? {
                return Ok(());
            }
            sqlx::query(
                "insert into payout_attempt
                     (chain, txid, payout, sender, raw, expires_at, replaces, state, created_at)
                 values ($1, $2, $3, $4, $5, $6, $7, 'live', $8)",
            )
            .bind(chain)
            .bind(new.txid)
            .bind(new.payout)
            .bind(new.sender)
            .bind(new.raw)
            .bind(new.expires_at)
            .bind(new.replaces)
            .bind(d::time(new.now))
            .execute(&mut *conn)
            .await?;
            // One order for every writer: on Postgres two payouts reserving overlapping outputs
            // then wait on each other instead of deadlocking.
            let mut inputs = new.inputs.to_vec();
            inputs.sort();
            for chunk in inputs.chunks(500) {
                let mut insert = QueryBuilder::<d::Db>::new(
                    "insert into attempt_input (chain, attempt_txid, txid, vout) ",
                );
                insert.push_values(chunk, |mut row, input| {
                    row.push_bind(chain)
                        .push_bind(new.txid)
                        .push_bind(&input.txid)
                        .push_bind(i64::from(input.vout));
                });
                insert.build().execute(&mut *conn).await?;
                let mut reserve = QueryBuilder::<d::Db>::new(
                    "insert into utxo_reservation (chain, txid, vout, payout, reserved_at) ",
                );
                reserve.push_values(chunk, |mut row, input| {
                    row.push_bind(chain)
                        .push_bind(&input.txid)
                        .push_bind(i64::from(input.vout))
                        .push_bind(new.payout)
                        .push_bind(d::time(new.now));
                });
                reserve.push(" on conflict (chain, txid, vout) do nothing");
                reserve.build().execute(&mut *conn).await?;
            }
            // Each input must now be reserved for this payout: a row of another payout (committed
            // before ours, or on Postgres waited for by the insert above) means it is spoken
            // for.
            if !new.inputs.is_empty() {
                let taken = sqlx::query(
                    "select r.txid, r.vout, r.payout from utxo_reservation r
                     join attempt_input i on i.chain = r.chain and i.txid = r.txid and i.vout = r.vout
                     where i.chain = $1 and i.attempt_txid = $2 and r.payout <> $3
                     order by r.txid, r.vout limit 1",
                )
                .bind(chain)
                .bind(new.txid)
                .bind(new.payout)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(row) = taken {
                    let txid: String = row.try_get("txid")?;
                    let output: i64 = row.try_get("vout")?;
                    let payout: String = row.try_get("payout")?;
                    return Err(StoreError::Conflict(format!(
                        "output {txid}:{output} is reserved by payout {payout}"
                    )));
                }
            }
            // Each withdrawal it pays must be this payout's alone, the same way.
            let mut members = new.members.to_vec();
            members.sort();
            for chunk in members.chunks(500) {
                let mut claim = QueryBuilder::<d::Db>::new(
                    "insert into payout_member (chain, member, payout, claimed_at) ",
                );
                claim.push_values(chunk, |mut row, member| {
                    row.push_bind(chain)
                        .push_bind(member)
                        .push_bind(new.payout)
                        .push_bind(d::time(new.now));
                });
                claim.push(" on conflict (chain, member) do nothing");
                claim.build().execute(&mut *conn).await?;
                let mut taken = QueryBuilder::<d::Db>::new(
                    "select member, payout from payout_member where chain = ",
                );
                taken
                    .push_bind(chain)
                    .push(" and payout <> ")
                    .push_bind(new.payout);
                taken.push(" and member in (");
                let mut list = taken.separated(", ");
                for member in chunk {
                    list.push_bind(member);
                }
                taken.push(") order by member limit 1");
                if let Some(row) = taken.build().fetch_optional(&mut *conn).await? {
                    return Err(StoreError::Claimed {
                        member: row.try_get("member")?,
                        payout: row.try_get("payout")?,
                    });
                }
            }
        });
        Ok(())
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
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select * from payout_attempt
                 where chain = $1 and state = 'live' and ($2 is null or sender = $2)
                 order by checked_at is not null, checked_at, created_at, txid limit $3",
            )
            .bind(chain.as_str())
            .bind(sender)
            .bind(ATTEMPTS_LIVE_MAX as i64)
            .fetch_all(pool)
            .await?;
            let mut attempts = Vec::with_capacity(rows.len());
            for row in &rows {
                attempts.push(decode_attempt!(row, d));
            }
            d::attempts::with_inputs(pool, attempts).await
        })
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
        on_pool!(self, |pool, d| {
            sqlx::query(
                "update payout_attempt set checked_at = $3
                 where chain = $1 and payout = $2 and state = 'live'",
            )
            .bind(chain.as_str())
            .bind(payout)
            .bind(d::time(now))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Every attempt of `payout`, oldest first.
    pub async fn attempts_of(
        &self,
        chain: Chain,
        payout: &str,
    ) -> Result<Vec<Attempt>, StoreError> {
        validate_key("payout", payout, 200)?;
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select * from payout_attempt where chain = $1 and payout = $2
                 order by created_at, txid",
            )
            .bind(chain.as_str())
            .bind(payout)
            .fetch_all(pool)
            .await?;
            let mut attempts = Vec::with_capacity(rows.len());
            for row in &rows {
                attempts.push(decode_attempt!(row, d));
            }
            d::attempts::with_inputs(pool, attempts).await
        })
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
        let settled = in_write_tx!(self, |store, conn, d| {
            let payout: Option<String> = sqlx::query_scalar(
                "select payout from payout_attempt where chain = $1 and txid = $2",
            )
            .bind(chain.as_str())
            .bind(txid)
            .fetch_optional(&mut *conn)
            .await?;
            match payout {
                None => false,
                Some(payout) => {
                    d::lock_payout(&mut *conn, chain, &payout).await?;
                    let done = sqlx::query(
                        "update payout_attempt set state = $3, settled_at = $4
                         where chain = $1 and txid = $2 and state = 'live'",
                    )
                    .bind(chain.as_str())
                    .bind(txid)
                    .bind(to.as_str())
                    .bind(d::time(now))
                    .execute(&mut *conn)
                    .await?;
                    if done.rows_affected() == 1 {
                        if to == AttemptState::Landed {
                            sqlx::query(
                                "update payout_attempt set state = 'replaced', settled_at = $3
                                 where chain = $1 and payout = $2 and state = 'live'",
                            )
                            .bind(chain.as_str())
                            .bind(&payout)
                            .bind(d::time(now))
                            .execute(&mut *conn)
                            .await?;
                        }
                        d::attempts::release_unused(&mut *conn, chain, &payout).await?;
                        true
                    } else {
                        false
                    }
                }
            }
        });
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
        on_pool!(self, |pool, _d| {
            sqlx::query(
                "select txid, vout, payout from utxo_reservation where chain = $1
                 order by txid, vout",
            )
            .bind(chain.as_str())
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    Outpoint {
                        txid: row.try_get("txid")?,
                        vout: vout(row.try_get("vout")?)?,
                    },
                    row.try_get("payout")?,
                ))
            })
            .collect()
        })
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
