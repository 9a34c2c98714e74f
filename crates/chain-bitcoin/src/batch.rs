//! Batching: pending withdrawals wait in a queue and leave it as batches of at most
//! `max_outputs`, as soon as a batch is full or its oldest withdrawal has waited `max_wait`,
//! so a queue of payouts becomes a few transactions.
//!
//! A withdrawal id is held once: pushed again while it waits or while its batch is being
//! paid, it is ignored. [`Batcher::take`] hands a batch out without forgetting it: the
//! caller [`Batcher::commit`]s it once its transaction is stored (DESIGN.md §2.2), or
//! [`Batcher::putback`]s it when building, signing or storing failed: the very same batch
//! (same withdrawals, same key) is offered again first, even if more withdrawals arrived
//! meanwhile, so a store whose answer was lost sees the same payout again. When the store
//! says some of its withdrawals are paid by another payout already (a batch rebuilt
//! differently after a crash), [`Batcher::drop_paid`] lets them go and offers the rest.
//! The store holds each withdrawal for one payout (`payout_member`), so even a batch
//! formed differently can never pay a withdrawal twice. A crash loses nothing either: the
//! queue is rebuilt from the store's pending withdrawals.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bitcoin::hashes::{Hash, sha256};
use chain::address::Address;
use domain::Amount;

/// A withdrawal waiting to be paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    pub to: Address,
    pub amount: Amount,
}

/// Withdrawals taken together, not yet committed nor put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The payout key of this batch: the same withdrawals in the same order always give the
    /// same key, so a batch rebuilt after a crash is recognised in the store.
    pub key: String,
    pub withdrawals: Vec<Pending>,
}

impl Batch {
    /// What it pays, in order: one output per withdrawal.
    pub fn outputs(&self) -> Vec<(Address, Amount)> {
        self.withdrawals
            .iter()
            .map(|pending| (pending.to.clone(), pending.amount))
            .collect()
    }

    /// The ids of its withdrawals, in order: the payout's members in the store.
    pub fn ids(&self) -> Vec<String> {
        self.withdrawals
            .iter()
            .map(|pending| pending.id.clone())
            .collect()
    }

    /// `"batch-"` and the first 32 hex digits of SHA-256 over the ids, each followed by a
    /// newline (ids are the caller's and may be long; the key fits the store's 200 bytes).
    pub fn key_of(withdrawals: &[Pending]) -> String {
        let mut text = String::new();
        for pending in withdrawals {
            text.push_str(&pending.id);
            text.push('\n');
        }
        let digest = sha256::Hash::hash(text.as_bytes()).to_byte_array();
        let hex = crate::hex(&digest);
        format!("batch-{}", &hex[..32])
    }
}

/// Why a push or a settlement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the batch queue holds its most, {0} withdrawals: wait for batches to be paid")]
    Full(usize),
    #[error("no batch {0} is out: it was committed or put back already")]
    UnknownBatch(String),
}

/// See the module's documentation.
#[derive(Debug)]
pub struct Batcher {
    max_outputs: usize,
    max_wait: Duration,
    max_pending: usize,
    queue: VecDeque<(Pending, Instant)>,
    /// Batches handed out by `take`, by key, with their withdrawals' times.
    out: HashMap<String, Vec<(Pending, Instant)>>,
    /// Batches put back: offered again first, exactly as they were.
    retry: VecDeque<(String, Vec<(Pending, Instant)>)>,
    /// Every id queued, out or put back.
    ids: HashSet<String>,
}

/// The most withdrawals a [`Batcher`] holds (queued and out) by default.
pub const BATCH_PENDING_MAX: usize = 100_000;

impl Batcher {
    pub fn new(max_outputs: usize, max_wait: Duration) -> Result<Batcher, String> {
        Batcher::with_limit(max_outputs, max_wait, BATCH_PENDING_MAX)
    }

    /// `max_pending` bounds what the batcher holds, queued and out.
    pub fn with_limit(
        max_outputs: usize,
        max_wait: Duration,
        max_pending: usize,
    ) -> Result<Batcher, String> {
        if max_outputs == 0 {
            return Err("a batch pays at least one withdrawal".into());
        }
        if max_pending < max_outputs {
            return Err(format!(
                "the batcher must hold at least one full batch ({max_outputs}), not {max_pending}"
            ));
        }
        Ok(Batcher {
            max_outputs,
            max_wait,
            max_pending,
            queue: VecDeque::new(),
            out: HashMap::new(),
            retry: VecDeque::new(),
            ids: HashSet::new(),
        })
    }

    /// Queues `pending`; Ok(false) when its id is already queued or out (nothing changes).
    pub fn push(&mut self, pending: Pending, now: Instant) -> Result<bool, BatchError> {
        if self.ids.contains(&pending.id) {
            return Ok(false);
        }
        if self.ids.len() >= self.max_pending {
            return Err(BatchError::Full(self.max_pending));
        }
        self.ids.insert(pending.id.clone());
        self.queue.push_back((pending, now));
        Ok(true)
    }

    /// Withdrawals waiting, put-back batches included (not counting those out in batches).
    pub fn len(&self) -> usize {
        self.queue.len()
            + self
                .retry
                .iter()
                .map(|(_, taken)| taken.len())
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches out: taken, neither committed nor put back.
    pub fn out(&self) -> usize {
        self.out.len()
    }

    /// The next batch to pay at `now`, oldest first: full, or not full but its oldest has
    /// waited long enough; None while neither. Its withdrawals stay held (a push of one of
    /// them is still ignored) until the batch is committed or put back.
    pub fn take(&mut self, now: Instant) -> Option<Batch> {
        if let Some((key, taken)) = self.retry.pop_front() {
            let withdrawals = taken.iter().map(|(pending, _)| pending.clone()).collect();
            self.out.insert(key.clone(), taken);
            return Some(Batch { key, withdrawals });
        }
        let oldest = self.queue.front()?.1;
        if self.queue.len() < self.max_outputs && now.duration_since(oldest) < self.max_wait {
            return None;
        }
        let count = self.queue.len().min(self.max_outputs);
        let taken: Vec<(Pending, Instant)> = self.queue.drain(..count).collect();
        let withdrawals: Vec<Pending> = taken.iter().map(|(pending, _)| pending.clone()).collect();
        let key = Batch::key_of(&withdrawals);
        self.out.insert(key.clone(), taken);
        Some(Batch { key, withdrawals })
    }

    /// The batch `key` is paid for (its transaction stored): its withdrawals are let go.
    pub fn commit(&mut self, key: &str) -> Result<(), BatchError> {
        let taken = self
            .out
            .remove(key)
            .ok_or_else(|| BatchError::UnknownBatch(key.to_string()))?;
        for (pending, _) in taken {
            self.ids.remove(&pending.id);
        }
        Ok(())
    }

    /// The batch `key` was not paid (or its storing may have failed): the next `take` offers
    /// the very same batch again, before anything else.
    pub fn putback(&mut self, key: &str) -> Result<(), BatchError> {
        let taken = self
            .out
            .remove(key)
            .ok_or_else(|| BatchError::UnknownBatch(key.to_string()))?;
        self.retry.push_front((key.to_string(), taken));
        Ok(())
    }

    /// Some withdrawals of batch `key` are paid by another payout already (the store said
    /// so): they are let go, and the rest of the batch is offered again first, as a new batch.
    /// "Paid by another payout" means that payout may still land, not that it did: the
    /// caller keeps such a withdrawal pending in its own records until that payout is
    /// settled, and queues it again should the payout be settled dead.
    pub fn drop_paid(&mut self, key: &str, paid: &[String]) -> Result<(), BatchError> {
        let taken = self
            .out
            .remove(key)
            .ok_or_else(|| BatchError::UnknownBatch(key.to_string()))?;
        let (gone, rest): (Vec<_>, Vec<_>) = taken
            .into_iter()
            .partition(|(pending, _)| paid.contains(&pending.id));
        for (pending, _) in gone {
            self.ids.remove(&pending.id);
        }
        if !rest.is_empty() {
            let withdrawals: Vec<Pending> =
                rest.iter().map(|(pending, _)| pending.clone()).collect();
            self.retry.push_front((Batch::key_of(&withdrawals), rest));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain::address::Network;
    use domain::Chain;

    fn pending(id: usize) -> Pending {
        Pending {
            id: id.to_string(),
            to: Address::parse(
                Chain::Bitcoin,
                Network::Regtest,
                "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
            )
            .unwrap(),
            amount: Amount::from_u128(1000),
        }
    }

    fn commit(batcher: &mut Batcher, batch: &Batch) {
        batcher.commit(&batch.key).unwrap();
    }

    #[test]
    fn full_batches_leave_at_once_and_a_partial_one_after_the_wait() {
        let start = Instant::now();
        let mut batcher = Batcher::new(25, Duration::from_secs(60)).unwrap();
        for id in 0..60 {
            assert!(batcher.push(pending(id), start).unwrap());
        }
        let first = batcher.take(start).unwrap();
        assert_eq!(first.withdrawals.len(), 25);
        assert_eq!(first.withdrawals[0].id, "0");
        commit(&mut batcher, &first);
        let second = batcher.take(start).unwrap();
        assert_eq!(second.withdrawals.len(), 25);
        commit(&mut batcher, &second);
        assert_eq!(batcher.take(start), None, "10 left, not waited yet");
        let last = batcher.take(start + Duration::from_secs(60)).unwrap();
        assert_eq!(last.withdrawals.len(), 10);
        assert_eq!(last.withdrawals[9].id, "59");
        commit(&mut batcher, &last);
        assert!(batcher.is_empty());
        assert_eq!(batcher.out(), 0);
        assert!(Batcher::new(0, Duration::ZERO).is_err());
        assert!(Batcher::with_limit(25, Duration::ZERO, 24).is_err());
    }

    #[test]
    fn an_id_pushed_twice_is_held_once_while_queued_and_while_out() {
        let start = Instant::now();
        let mut batcher = Batcher::new(3, Duration::from_secs(60)).unwrap();
        assert!(batcher.push(pending(1), start).unwrap());
        assert!(!batcher.push(pending(1), start).unwrap(), "queued already");
        assert_eq!(batcher.len(), 1);
        batcher.push(pending(2), start).unwrap();
        batcher.push(pending(3), start).unwrap();
        let batch = batcher.take(start).unwrap();
        let ids: Vec<&str> = batch.withdrawals.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
        // Out in a batch: a push of the same id (a job delivered twice) is still ignored.
        assert!(!batcher.push(pending(2), start).unwrap());
        assert!(batcher.is_empty());
        commit(&mut batcher, &batch);
        // Once committed the id is free again: the caller's store says it is paid.
        assert!(batcher.push(pending(2), start).unwrap());
        assert!(
            batcher.commit(&batch.key).is_err(),
            "a batch is committed once"
        );
    }

    #[test]
    fn a_batch_put_back_returns_to_the_front_with_its_waiting_times() {
        let start = Instant::now();
        let wait = Duration::from_secs(60);
        let mut batcher = Batcher::new(2, wait).unwrap();
        for id in 0..3 {
            batcher.push(pending(id), start).unwrap();
        }
        let batch = batcher.take(start).unwrap();
        assert_eq!(batcher.len(), 1);
        assert_eq!(batcher.out(), 1);
        // Building failed: nothing is lost, the same withdrawals come out again, first.
        batcher.putback(&batch.key).unwrap();
        assert_eq!(batcher.len(), 3);
        assert_eq!(batcher.out(), 0);
        let again = batcher.take(start).unwrap();
        assert_eq!(again, batch, "same withdrawals, same order, same key");
        commit(&mut batcher, &again);
        // The third waited since `start`: after the wait it leaves alone.
        assert_eq!(batcher.take(start + wait - Duration::from_secs(1)), None);
        let last = batcher.take(start + wait).unwrap();
        assert_eq!(last.withdrawals, vec![pending(2)]);
        assert_ne!(last.key, batch.key);
        assert!(batcher.putback("batch-unknown").is_err());
    }

    #[test]
    fn a_partial_batch_put_back_is_offered_again_unchanged_when_more_arrive() {
        let start = Instant::now();
        let wait = Duration::from_secs(60);
        let mut batcher = Batcher::new(25, wait).unwrap();
        for id in 0..10 {
            batcher.push(pending(id), start).unwrap();
        }
        let partial = batcher.take(start + wait).unwrap();
        assert_eq!(partial.withdrawals.len(), 10);
        // Storing it failed (maybe only its answer was lost); twenty more arrive meanwhile.
        batcher.putback(&partial.key).unwrap();
        for id in 10..30 {
            batcher.push(pending(id), start + wait).unwrap();
        }
        assert_eq!(batcher.len(), 30);
        let again = batcher.take(start + wait).unwrap();
        assert_eq!(
            again, partial,
            "the same ten, the same key: the same payout in the store"
        );
        commit(&mut batcher, &again);
        assert_eq!(
            batcher.take(start + wait),
            None,
            "the twenty have not waited"
        );
        assert_eq!(
            batcher.take(start + wait + wait).unwrap().withdrawals.len(),
            20
        );
    }

    #[test]
    fn withdrawals_paid_elsewhere_are_let_go_and_the_rest_offered_again() {
        let start = Instant::now();
        let mut batcher = Batcher::new(4, Duration::ZERO).unwrap();
        for id in 0..4 {
            batcher.push(pending(id), start).unwrap();
        }
        let batch = batcher.take(start).unwrap();
        batcher
            .drop_paid(&batch.key, &["1".to_string(), "3".to_string()])
            .unwrap();
        let rest = batcher.take(start).unwrap();
        let ids: Vec<&str> = rest.withdrawals.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["0", "2"]);
        assert_ne!(rest.key, batch.key);
        // The ones paid elsewhere are no longer held here.
        assert!(batcher.push(pending(1), start).unwrap());
        assert!(!batcher.push(pending(2), start).unwrap(), "still out");
        assert!(batcher.drop_paid("batch-unknown", &[]).is_err());
    }

    #[test]
    fn the_queue_is_bounded() {
        let start = Instant::now();
        let mut batcher = Batcher::with_limit(2, Duration::ZERO, 3).unwrap();
        for id in 0..3 {
            batcher.push(pending(id), start).unwrap();
        }
        assert_eq!(
            batcher.push(pending(9), start),
            Err(BatchError::Full(3)),
            "full"
        );
        // Withdrawals out in a batch still count until committed.
        let batch = batcher.take(start).unwrap();
        assert!(batcher.push(pending(9), start).is_err());
        commit(&mut batcher, &batch);
        assert!(batcher.push(pending(9), start).unwrap());
    }
}
