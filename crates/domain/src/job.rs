//! The job queue's vocabulary: job states with their allowed moves, queue and kind names, and
//! the retry policy (exponential backoff with jitter) as a pure function.

use std::fmt;
use std::time::Duration;

string_enum!(
    /// Where a job is in its life. `available` includes jobs whose `run_at` is in the future
    /// (scheduled, or waiting out a retry backoff).
    JobState, "job state", {
        Available => "available",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl JobState {
    /// Whether the job is done, one way or another.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// Whether a job may move from `self` to `to`.
    pub fn can_transition(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            // Claimed by a worker.
            (Available, Running)
            // Operator discards a job that has not run yet.
            | (Available, Cancelled)
            // The worker holding the lease finishes it, or it is retried / snoozed / rescued.
            | (Running, Completed | Failed | Cancelled | Available)
            // Operator retries a dead job, or discards a failed one.
            | (Failed, Available | Cancelled)
            | (Cancelled, Available)
        )
    }
}

/// A queue or job kind name: 1 to 100 characters of lowercase letters, digits and `.`, `_`,
/// `-`, `:`, so it is safe in URLs, logs, Redis keys and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {got:?}: use 1 to 100 characters of a-z, 0-9, '.', '_', '-', ':'")]
pub struct NameError {
    pub got: String,
}

impl Name {
    pub fn new(text: impl Into<String>) -> Result<Name, NameError> {
        let text = text.into();
        let valid = (1..=crate::limits::NAME_LEN_MAX).contains(&text.len())
            && text
                .bytes()
                .all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b':'));
        if valid {
            Ok(Name(text))
        } else {
            Err(NameError {
                got: text.chars().take(40).collect(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a failing job is retried: `max_attempts` runs in all, waiting about
/// `backoff_base × 2^(attempt − 1)` (capped at `backoff_max`) between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    /// The seed's BullMQ settings: 3 attempts, exponential backoff from 2 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: crate::limits::JOB_ATTEMPTS_DEFAULT,
            backoff_base: crate::limits::JOB_BACKOFF_BASE_DEFAULT,
            backoff_max: crate::limits::JOB_BACKOFF_MAX_DEFAULT,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based), or `None` when it was the
    /// last. `random` spreads retries ("equal jitter"): the wait is between half and all of
    /// the exponential delay, so failing jobs do not retry in lockstep.
    pub fn retry_delay(&self, attempt: u32, random: u64) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let base = u64::try_from(self.backoff_base.as_millis()).unwrap_or(u64::MAX);
        let max = u64::try_from(self.backoff_max.as_millis()).unwrap_or(u64::MAX);
        let exponent = attempt.saturating_sub(1).min(62);
        let full = base.saturating_mul(1u64 << exponent).min(max);
        let half = full / 2;
        Some(Duration::from_millis(half + random % (full - half + 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_moves_follow_the_table() {
        use JobState::*;
        let allowed = [
            (Available, Running),
            (Available, Cancelled),
            (Running, Completed),
            (Running, Failed),
            (Running, Cancelled),
            (Running, Available),
            (Failed, Available),
            (Failed, Cancelled),
            (Cancelled, Available),
        ];
        for &from in JobState::ALL {
            for &to in JobState::ALL {
                assert_eq!(
                    from.can_transition(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        // A completed job is final: paid is paid.
        assert!(
            JobState::ALL
                .iter()
                .all(|&to| !Completed.can_transition(to))
        );
    }

    #[test]
    fn retries_back_off_exponentially_with_bounded_jitter() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_attempts, 3);
        for random in [0, 1, 999, u64::MAX] {
            let first = policy.retry_delay(1, random).unwrap();
            assert!(
                (Duration::from_secs(1)..=Duration::from_secs(2)).contains(&first),
                "{first:?}"
            );
            let second = policy.retry_delay(2, random).unwrap();
            assert!(
                (Duration::from_secs(2)..=Duration::from_secs(4)).contains(&second),
                "{second:?}"
            );
            assert_eq!(
                policy.retry_delay(3, random),
                None,
                "the third attempt was the last"
            );
        }
        let capped = RetryPolicy {
            max_attempts: 100,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
        };
        assert!(capped.retry_delay(99, 7).unwrap() <= Duration::from_secs(60));
    }

    #[test]
    fn names_are_safe_identifiers() {
        assert!(Name::new("tron.withdrawal").is_ok());
        assert!(Name::new("hot-wallet:TR7").is_err());
        assert!(Name::new("").is_err());
        assert!(Name::new("a".repeat(101)).is_err());
        assert!(Name::new("with space").is_err());
    }
}
