//! Exponential backoff with full jitter, shared by every retry loop of the workers.
//!
//! Jitter keeps a fleet of workers that failed together (a database restart, a node outage)
//! from retrying together.

use std::time::Duration;

use rand::Rng;

/// Doubling delays between `min` and `max`, each drawn uniformly from its upper half.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The delay before the next try; each call doubles the ceiling up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_ms = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        // Half fixed, half random: never much shorter than planned, never in lockstep.
        let half = ceiling_ms / 2;
        Duration::from_millis(half + rand::rng().random_range(0..=ceiling_ms - half))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_within_jitter_bounds() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1_000));
        let ceilings = [100, 200, 400, 800, 1_000, 1_000, 1_000];
        for ceiling in ceilings {
            let delay = backoff.next_delay().as_millis();
            assert!(
                (ceiling / 2..=ceiling).contains(&delay),
                "{delay} not within [{}, {ceiling}]",
                ceiling / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
