//! Batching: pending withdrawals wait in a queue and leave it as batches of at most
//! `max_outputs`, as soon as a batch is full or its oldest withdrawal has waited `max_wait`,
//! so a queue of payouts becomes a few transactions.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chain::address::Address;
use domain::Amount;

/// A withdrawal waiting to be paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    pub to: Address,
    pub amount: Amount,
}

/// See the module's documentation.
#[derive(Debug)]
pub struct Batcher {
    max_outputs: usize,
    max_wait: Duration,
    queue: VecDeque<(Pending, Instant)>,
}

impl Batcher {
    pub fn new(max_outputs: usize, max_wait: Duration) -> Result<Batcher, String> {
        if max_outputs == 0 {
            return Err("a batch pays at least one withdrawal".into());
        }
        Ok(Batcher {
            max_outputs,
            max_wait,
            queue: VecDeque::new(),
        })
    }

    pub fn push(&mut self, pending: Pending, now: Instant) {
        self.queue.push_back((pending, now));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next batch to pay at `now`, oldest first: full, or not full but its oldest has
    /// waited long enough; None while neither.
    pub fn take(&mut self, now: Instant) -> Option<Vec<Pending>> {
        let oldest = self.queue.front()?.1;
        if self.queue.len() < self.max_outputs && now.duration_since(oldest) < self.max_wait {
            return None;
        }
        let count = self.queue.len().min(self.max_outputs);
        Some(
            self.queue
                .drain(..count)
                .map(|(pending, _)| pending)
                .collect(),
        )
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

    #[test]
    fn full_batches_leave_at_once_and_a_partial_one_after_the_wait() {
        let start = Instant::now();
        let mut batcher = Batcher::new(25, Duration::from_secs(60)).unwrap();
        for id in 0..60 {
            batcher.push(pending(id), start);
        }
        let first = batcher.take(start).unwrap();
        assert_eq!(first.len(), 25);
        assert_eq!(first[0].id, "0");
        assert_eq!(batcher.take(start).unwrap().len(), 25);
        assert_eq!(batcher.take(start), None, "10 left, not waited yet");
        let last = batcher.take(start + Duration::from_secs(60)).unwrap();
        assert_eq!(last.len(), 10);
        assert_eq!(last[9].id, "59");
        assert!(batcher.is_empty());
        assert!(Batcher::new(0, Duration::ZERO).is_err());
    }
}
