//! The roadmap's autoscaling policy as one pure function: given a queue's policy, how many
//! workers it has, its depth and how long since the last change, how many it should have.
//!
//! The cooldown follows every change, up or down, so depth flapping around a threshold moves
//! the fleet at most once per cooldown. The floor and the ceiling are restored at once,
//! whatever the cooldown (a fleet below its minimum is a fault, not a trend).

use std::time::Duration;

/// One queue's policy (validated by the configuration: `min_workers <= max_workers`, steps
/// and cooldown above zero, `scale_down_depth <= scale_up_depth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePolicy {
    pub min_workers: u32,
    pub max_workers: u32,
    /// Scale up while more jobs than this wait.
    pub scale_up_depth: u64,
    /// Scale down while fewer jobs than this wait.
    pub scale_down_depth: u64,
    pub scale_up_step: u32,
    pub scale_down_step: u32,
    pub cooldown: Duration,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        use crate::limits::*;
        ScalePolicy {
            min_workers: AUTOSCALE_MIN_WORKERS_DEFAULT,
            max_workers: AUTOSCALE_MAX_WORKERS_DEFAULT,
            scale_up_depth: AUTOSCALE_UP_DEPTH_DEFAULT,
            scale_down_depth: AUTOSCALE_DOWN_DEPTH_DEFAULT,
            scale_up_step: AUTOSCALE_UP_STEP_DEFAULT,
            scale_down_step: AUTOSCALE_DOWN_STEP_DEFAULT,
            cooldown: AUTOSCALE_COOLDOWN_DEFAULT,
        }
    }
}

/// Why the autoscaler changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// The last change was less than a cooldown ago.
    Cooldown,
    /// Deep enough to scale up, but at `max_workers`.
    AtMax,
    /// Shallow enough to scale down, but at `min_workers`.
    AtMin,
    /// Between the thresholds.
    WithinBand,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Cooldown => "cooldown",
            HoldReason::AtMax => "at_max",
            HoldReason::AtMin => "at_min",
            HoldReason::WithinBand => "within_band",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleDecision {
    Up { to: u32 },
    Down { to: u32 },
    Hold(HoldReason),
}

/// How many workers the queue should have. `since_change` is the time since the last
/// change this policy made (None: none yet).
pub fn decide(
    policy: &ScalePolicy,
    current: u32,
    depth: u64,
    since_change: Option<Duration>,
) -> ScaleDecision {
    if current < policy.min_workers {
        return ScaleDecision::Up {
            to: policy.min_workers,
        };
    }
    if current > policy.max_workers {
        return ScaleDecision::Down {
            to: policy.max_workers,
        };
    }
    if since_change.is_some_and(|since| since < policy.cooldown) {
        return ScaleDecision::Hold(HoldReason::Cooldown);
    }
    if depth > policy.scale_up_depth {
        if current >= policy.max_workers {
            return ScaleDecision::Hold(HoldReason::AtMax);
        }
        return ScaleDecision::Up {
            to: current
                .saturating_add(policy.scale_up_step)
                .min(policy.max_workers),
        };
    }
    if depth < policy.scale_down_depth {
        if current <= policy.min_workers {
            return ScaleDecision::Hold(HoldReason::AtMin);
        }
        return ScaleDecision::Down {
            to: current
                .saturating_sub(policy.scale_down_step)
                .max(policy.min_workers),
        };
    }
    ScaleDecision::Hold(HoldReason::WithinBand)
}

#[cfg(test)]
mod tests {
    use super::HoldReason::*;
    use super::ScaleDecision::{Down, Hold, Up};
    use super::*;

    #[test]
    fn every_branch_of_the_roadmap_policy() {
        let policy = ScalePolicy::default();
        let cooled = Some(Duration::from_secs(300));
        let warm = Some(Duration::from_secs(299));
        for (current, depth, since, expected) in [
            // The floor and ceiling hold whatever the cooldown.
            (0, 0, warm, Up { to: 1 }),
            (12, 0, warm, Down { to: 10 }),
            (12, 1_000, warm, Down { to: 10 }),
            // Within a cooldown nothing moves.
            (1, 1_000, warm, Hold(Cooldown)),
            (5, 0, warm, Hold(Cooldown)),
            // Deep: up by at most 2, never past the maximum.
            (1, 51, None, Up { to: 3 }),
            (1, 51, cooled, Up { to: 3 }),
            (9, 1_000, cooled, Up { to: 10 }),
            (10, 1_000, cooled, Hold(AtMax)),
            // The thresholds are strict: 50 is not above 50, 5 is not below 5.
            (3, 50, cooled, Hold(WithinBand)),
            (3, 5, cooled, Hold(WithinBand)),
            // Shallow: down by 1, never below the minimum.
            (3, 4, cooled, Down { to: 2 }),
            (2, 0, None, Down { to: 1 }),
            (1, 0, cooled, Hold(AtMin)),
        ] {
            assert_eq!(
                decide(&policy, current, depth, since),
                expected,
                "{current} workers, depth {depth}, since {since:?}"
            );
        }
    }

    #[test]
    fn steps_follow_the_policy() {
        let policy = ScalePolicy {
            min_workers: 2,
            max_workers: 20,
            scale_up_step: 5,
            scale_down_step: 3,
            ..ScalePolicy::default()
        };
        assert_eq!(decide(&policy, 2, 100, None), Up { to: 7 });
        assert_eq!(decide(&policy, 18, 100, None), Up { to: 20 });
        assert_eq!(decide(&policy, 7, 0, None), Down { to: 4 });
        assert_eq!(decide(&policy, 4, 0, None), Down { to: 2 });
    }

    /// Depth flapping across both thresholds every second moves the fleet at most once per
    /// cooldown.
    #[test]
    fn flapping_depth_moves_at_most_once_per_cooldown() {
        let policy = ScalePolicy::default();
        let mut current = 1;
        let mut last_change: Option<u64> = None;
        let mut changes = Vec::new();
        for second in 0..3_600_u64 {
            let depth = if second % 2 == 0 { 1_000 } else { 0 };
            let since = last_change.map(|at| Duration::from_secs(second - at));
            match decide(&policy, current, depth, since) {
                Up { to } | Down { to } => {
                    current = to;
                    last_change = Some(second);
                    changes.push(second);
                }
                Hold(_) => {}
            }
        }
        assert!(changes.len() <= 12, "{changes:?}");
        for pair in changes.windows(2) {
            assert!(pair[1] - pair[0] >= 300, "{changes:?}");
        }
    }
}
