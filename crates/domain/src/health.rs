//! The health rules of the roadmap, as pure functions: each check turns one measured value
//! into healthy / warning / unhealthy with the reason, and a worker's or a chain's status is
//! the worst of its checks, raised to unhealthy when two or more fail.
//!
//! Values are integers in the unit each check names (milliseconds, bytes, jobs, basis points),
//! so this crate stays free of floats; the control plane gathers the readings
//! (`web::health`) and decides nothing itself.

use std::time::Duration;

/// How healthy something is; ordered, so the worst of several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthLevel {
    Healthy,
    Warning,
    Unhealthy,
}

impl HealthLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthLevel::Healthy => "healthy",
            HealthLevel::Warning => "warning",
            HealthLevel::Unhealthy => "unhealthy",
        }
    }

    /// 0, 1, 2: the metric's value and `coinsensei health`'s exit code.
    pub fn code(self) -> u8 {
        match self {
            HealthLevel::Healthy => 0,
            HealthLevel::Warning => 1,
            HealthLevel::Unhealthy => 2,
        }
    }
}

impl std::fmt::Display for HealthLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check's verdict: its name, level, why, and what was measured (in `unit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: &'static str,
    pub level: HealthLevel,
    pub reason: String,
    pub value: i64,
    pub unit: &'static str,
}

impl CheckResult {
    fn new(
        name: &'static str,
        level: HealthLevel,
        value: i64,
        unit: &'static str,
        reason: String,
    ) -> Self {
        CheckResult {
            name,
            level,
            reason,
            value,
            unit,
        }
    }
}

/// The limits the checks hold readings to (validated by the configuration: none is zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthLimits {
    pub heartbeat_interval: Duration,
    /// A heartbeat older than this many intervals is a warning; at `lost_after_intervals`
    /// (when the reaper calls the worker lost) it is unhealthy.
    pub heartbeat_warning_intervals: u32,
    pub lost_after_intervals: u32,
    /// Resident memory above `memory_warning_percent` of the limit is a warning, above the
    /// limit unhealthy.
    pub memory_limit_bytes: u64,
    pub memory_warning_percent: u32,
    /// The window the job and error checks look over.
    pub window: Duration,
    /// Failed over finished jobs in the window, in basis points (1 % = 100).
    pub error_rate_warning_bp: u32,
    pub error_rate_unhealthy_bp: u32,
    /// Fewer finished jobs than this in the window say nothing about the error rate.
    pub error_rate_min_jobs: u64,
    /// A hot wallet's balance read longer ago than this: its worker is not reconciling.
    pub balance_max_age: Duration,
    /// A withdrawal in one unfinished state for longer than this is stuck (warning; twice
    /// as long, unhealthy).
    pub withdrawal_stuck_after: Duration,
}

impl Default for HealthLimits {
    fn default() -> Self {
        use crate::limits::*;
        HealthLimits {
            heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT,
            heartbeat_warning_intervals: 2,
            lost_after_intervals: LOST_AFTER_INTERVALS_DEFAULT,
            memory_limit_bytes: HEALTH_MEMORY_LIMIT_DEFAULT,
            memory_warning_percent: 80,
            window: HEALTH_WINDOW_DEFAULT,
            error_rate_warning_bp: 500,
            error_rate_unhealthy_bp: 2_500,
            error_rate_min_jobs: 10,
            balance_max_age: HEALTH_BALANCE_MAX_AGE_DEFAULT,
            withdrawal_stuck_after: HEALTH_WITHDRAWAL_STUCK_AFTER_DEFAULT,
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Heartbeat age against the interval. No heartbeat at all is unhealthy.
pub fn check_heartbeat(limits: &HealthLimits, age: Option<Duration>) -> CheckResult {
    let name = "heartbeat";
    let Some(age) = age else {
        return CheckResult::new(
            name,
            HealthLevel::Unhealthy,
            -1,
            "milliseconds",
            "no heartbeat yet".into(),
        );
    };
    let warning_after = limits.heartbeat_interval * limits.heartbeat_warning_intervals;
    let unhealthy_after = limits.heartbeat_interval * limits.lost_after_intervals;
    let (level, reason) = if age >= unhealthy_after {
        (
            HealthLevel::Unhealthy,
            format!(
                "last heartbeat {} ms ago, at or over {} ms (lost)",
                millis(age),
                millis(unhealthy_after)
            ),
        )
    } else if age > warning_after {
        (
            HealthLevel::Warning,
            format!(
                "last heartbeat {} ms ago, over {} ms",
                millis(age),
                millis(warning_after)
            ),
        )
    } else {
        (
            HealthLevel::Healthy,
            format!("last heartbeat {} ms ago", millis(age)),
        )
    };
    CheckResult::new(name, level, millis(age), "milliseconds", reason)
}

/// Resident memory against the limit. A worker that has not reported its memory yet passes:
/// the heartbeat check already covers a worker that reports nothing.
pub fn check_memory(limits: &HealthLimits, rss_bytes: Option<u64>) -> CheckResult {
    let name = "memory";
    let limit = limits.memory_limit_bytes;
    let Some(rss) = rss_bytes else {
        return CheckResult::new(
            name,
            HealthLevel::Healthy,
            -1,
            "bytes",
            "memory not reported yet".into(),
        );
    };
    let warning_at = limit / 100 * u64::from(limits.memory_warning_percent);
    let mib = |bytes: u64| bytes / (1024 * 1024);
    let (level, reason) = if rss > limit {
        (
            HealthLevel::Unhealthy,
            format!(
                "{} MiB resident, over the {} MiB limit",
                mib(rss),
                mib(limit)
            ),
        )
    } else if rss > warning_at {
        (
            HealthLevel::Warning,
            format!(
                "{} MiB resident, over {} % of the {} MiB limit",
                mib(rss),
                limits.memory_warning_percent,
                mib(limit)
            ),
        )
    } else {
        (
            HealthLevel::Healthy,
            format!("{} MiB resident of {} MiB", mib(rss), mib(limit)),
        )
    };
    CheckResult::new(
        name,
        level,
        i64::try_from(rss).unwrap_or(i64::MAX),
        "bytes",
        reason,
    )
}

/// What happened to a worker's jobs over a window (or since it started, when no earlier
/// reading is at hand: `window` says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobActivity {
    pub in_flight: u64,
    pub completed: u64,
    pub failed: u64,
    /// Jobs the worker holds whose lease has expired: it stopped extending them.
    pub past_lease: u64,
    /// How long the counts cover.
    pub window: Duration,
}

/// Job processing: none running past its lease (unhealthy), and jobs finishing while some
/// are in flight (none finished over a whole window: warning).
pub fn check_jobs(limits: &HealthLimits, activity: &JobActivity) -> CheckResult {
    let name = "jobs";
    let finished = activity.completed + activity.failed;
    let seconds = activity.window.as_secs();
    let (level, reason) = if activity.past_lease > 0 {
        (
            HealthLevel::Unhealthy,
            format!("{} job(s) running past their lease", activity.past_lease),
        )
    } else if activity.in_flight > 0 && finished == 0 && activity.window >= limits.window {
        (
            HealthLevel::Warning,
            format!(
                "{} job(s) in flight and none finished in {seconds} s",
                activity.in_flight
            ),
        )
    } else {
        (
            HealthLevel::Healthy,
            format!(
                "{finished} finished in {seconds} s, {} in flight",
                activity.in_flight
            ),
        )
    };
    CheckResult::new(
        name,
        level,
        i64::try_from(activity.past_lease).unwrap_or(i64::MAX),
        "jobs past lease",
        reason,
    )
}

/// Failed over finished jobs in the window, in basis points, once enough jobs finished.
pub fn check_error_rate(limits: &HealthLimits, activity: &JobActivity) -> CheckResult {
    let name = "error_rate";
    let finished = activity.completed + activity.failed;
    let seconds = activity.window.as_secs();
    if finished < limits.error_rate_min_jobs {
        return CheckResult::new(
            name,
            HealthLevel::Healthy,
            0,
            "basis points",
            format!(
                "{} of {finished} failed in {seconds} s (fewer than {} finished: not judged)",
                activity.failed, limits.error_rate_min_jobs
            ),
        );
    }
    let rate_bp = activity.failed.saturating_mul(10_000) / finished;
    let percent = format!("{}.{:02} %", rate_bp / 100, rate_bp % 100);
    let (level, reason) = if rate_bp >= u64::from(limits.error_rate_unhealthy_bp) {
        (
            HealthLevel::Unhealthy,
            format!(
                "{} of {finished} failed in {seconds} s ({percent}), at or over {} bp",
                activity.failed, limits.error_rate_unhealthy_bp
            ),
        )
    } else if rate_bp >= u64::from(limits.error_rate_warning_bp) {
        (
            HealthLevel::Warning,
            format!(
                "{} of {finished} failed in {seconds} s ({percent}), at or over {} bp",
                activity.failed, limits.error_rate_warning_bp
            ),
        )
    } else {
        (
            HealthLevel::Healthy,
            format!(
                "{} of {finished} failed in {seconds} s ({percent})",
                activity.failed
            ),
        )
    };
    CheckResult::new(
        name,
        level,
        i64::try_from(rate_bp).unwrap_or(i64::MAX),
        "basis points",
        reason,
    )
}

/// The worst of the checks; two or more that are not healthy make it unhealthy (the
/// roadmap: one failed check is a warning, two are unhealthy).
pub fn overall(checks: &[CheckResult]) -> HealthLevel {
    let worst = checks
        .iter()
        .map(|check| check.level)
        .max()
        .unwrap_or(HealthLevel::Healthy);
    let failing = checks
        .iter()
        .filter(|check| check.level != HealthLevel::Healthy)
        .count();
    if failing >= 2 {
        HealthLevel::Unhealthy
    } else {
        worst
    }
}

/// A chain's hot wallet: how long ago its balance was last read (by the withdrawal worker's
/// reconcile round). None: no balance was ever recorded for the chain.
pub fn check_balance_age(limits: &HealthLimits, age: Option<Duration>) -> CheckResult {
    let name = "hot_wallet_balance";
    let Some(age) = age else {
        return CheckResult::new(
            name,
            HealthLevel::Warning,
            -1,
            "milliseconds",
            "no hot wallet balance recorded".into(),
        );
    };
    let (level, reason) = if age > limits.balance_max_age {
        (
            HealthLevel::Unhealthy,
            format!(
                "balance read {} ms ago, over {} ms: is the withdrawal worker reconciling?",
                millis(age),
                millis(limits.balance_max_age)
            ),
        )
    } else {
        (
            HealthLevel::Healthy,
            format!("balance read {} ms ago", millis(age)),
        )
    };
    CheckResult::new(name, level, millis(age), "milliseconds", reason)
}

/// A chain's withdrawals: the longest any has been in one unfinished state (`manual_review`
/// is an operator's, not stuck), with that state's name.
pub fn check_withdrawals_stuck(
    limits: &HealthLimits,
    oldest: Option<(&str, Duration)>,
) -> CheckResult {
    let name = "withdrawals_stuck";
    let Some((state, age)) = oldest else {
        return CheckResult::new(
            name,
            HealthLevel::Healthy,
            0,
            "milliseconds",
            "no unfinished withdrawal".into(),
        );
    };
    let after = limits.withdrawal_stuck_after;
    let level = if age > after * 2 {
        HealthLevel::Unhealthy
    } else if age > after {
        HealthLevel::Warning
    } else {
        HealthLevel::Healthy
    };
    let reason = if level == HealthLevel::Healthy {
        format!("oldest unfinished: {} ms in {state}", millis(age))
    } else {
        format!(
            "a withdrawal has been {} ms in {state}, over {} ms",
            millis(age),
            millis(after)
        )
    };
    CheckResult::new(name, level, millis(age), "milliseconds", reason)
}

#[cfg(test)]
mod tests {
    use super::HealthLevel::{Healthy, Unhealthy, Warning};
    use super::*;

    fn limits() -> HealthLimits {
        HealthLimits {
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_warning_intervals: 2,
            lost_after_intervals: 3,
            memory_limit_bytes: 100 * 1024 * 1024,
            memory_warning_percent: 80,
            window: Duration::from_secs(60),
            error_rate_warning_bp: 500,
            error_rate_unhealthy_bp: 2_500,
            error_rate_min_jobs: 10,
            balance_max_age: Duration::from_secs(120),
            withdrawal_stuck_after: Duration::from_secs(1_800),
        }
    }

    fn s(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    #[test]
    fn heartbeat_age_against_the_interval() {
        for (age, level, value, reason) in [
            (None, Unhealthy, -1, "no heartbeat yet"),
            (Some(s(0)), Healthy, 0, "last heartbeat 0 ms ago"),
            (Some(s(10)), Healthy, 10_000, "last heartbeat 10000 ms ago"),
            (Some(s(11)), Warning, 11_000, "over 10000 ms"),
            (Some(s(15)), Unhealthy, 15_000, "(lost)"),
            (Some(s(3_600)), Unhealthy, 3_600_000, "(lost)"),
        ] {
            let check = check_heartbeat(&limits(), age);
            assert_eq!((check.level, check.value), (level, value), "{age:?}");
            assert!(check.reason.contains(reason), "{age:?}: {}", check.reason);
        }
    }

    #[test]
    fn memory_against_the_limit() {
        const MIB: u64 = 1024 * 1024;
        for (rss, level, reason) in [
            (None, Healthy, "not reported"),
            (Some(0), Healthy, "0 MiB resident of 100 MiB"),
            (Some(80 * MIB), Healthy, "80 MiB resident of 100 MiB"),
            (Some(81 * MIB), Warning, "over 80 % of the 100 MiB limit"),
            (Some(100 * MIB), Warning, "over 80 %"),
            (Some(101 * MIB), Unhealthy, "over the 100 MiB limit"),
        ] {
            let check = check_memory(&limits(), rss);
            assert_eq!(check.level, level, "{rss:?}");
            assert!(check.reason.contains(reason), "{rss:?}: {}", check.reason);
        }
    }

    fn activity(in_flight: u64, completed: u64, failed: u64, past_lease: u64) -> JobActivity {
        JobActivity {
            in_flight,
            completed,
            failed,
            past_lease,
            window: s(60),
        }
    }

    #[test]
    fn jobs_complete_and_none_runs_past_its_lease() {
        for (activity, level, reason) in [
            (
                activity(0, 0, 0, 0),
                Healthy,
                "0 finished in 60 s, 0 in flight",
            ),
            (activity(5, 3, 0, 0), Healthy, "3 finished"),
            (activity(5, 0, 1, 0), Healthy, "1 finished"),
            (
                activity(5, 0, 0, 0),
                Warning,
                "5 job(s) in flight and none finished in 60 s",
            ),
            (
                JobActivity {
                    window: s(20),
                    ..activity(5, 0, 0, 0)
                },
                Healthy,
                "0 finished in 20 s",
            ),
            (activity(5, 9, 0, 1), Unhealthy, "1 job(s) running past"),
        ] {
            let check = check_jobs(&limits(), &activity);
            assert_eq!(check.level, level, "{activity:?}");
            assert!(
                check.reason.contains(reason),
                "{activity:?}: {}",
                check.reason
            );
            assert_eq!(check.value, activity.past_lease as i64);
        }
    }

    #[test]
    fn error_rate_over_the_window() {
        for (completed, failed, level, value) in [
            (0, 0, Healthy, 0),
            (0, 9, Healthy, 0),
            (96, 4, Healthy, 400),
            (95, 5, Warning, 500),
            (76, 24, Warning, 2_400),
            (75, 25, Unhealthy, 2_500),
            (0, 10, Unhealthy, 10_000),
        ] {
            let check = check_error_rate(&limits(), &activity(0, completed, failed, 0));
            assert_eq!(
                (check.level, check.value),
                (level, value),
                "{completed}/{failed}: {}",
                check.reason
            );
        }
        let judged = check_error_rate(&limits(), &activity(0, 95, 5, 0));
        assert!(judged.reason.contains("(5.00 %)"), "{}", judged.reason);
        let small = check_error_rate(&limits(), &activity(0, 0, 9, 0));
        assert!(small.reason.contains("not judged"), "{}", small.reason);
    }

    #[test]
    fn one_failed_check_warns_and_two_make_it_unhealthy() {
        let check = |level| CheckResult::new("x", level, 0, "", String::new());
        for (levels, expected) in [
            (vec![], Healthy),
            (vec![Healthy, Healthy, Healthy, Healthy], Healthy),
            (vec![Healthy, Warning, Healthy, Healthy], Warning),
            (vec![Healthy, Unhealthy, Healthy, Healthy], Unhealthy),
            (vec![Warning, Warning, Healthy, Healthy], Unhealthy),
        ] {
            let checks: Vec<_> = levels.into_iter().map(check).collect();
            assert_eq!(overall(&checks), expected, "{checks:?}");
        }
        assert_eq!(Unhealthy.code(), 2);
        assert!(Healthy < Warning && Warning < Unhealthy);
    }

    #[test]
    fn hot_wallet_balance_freshness() {
        for (age, level) in [
            (None, Warning),
            (Some(s(15)), Healthy),
            (Some(s(120)), Healthy),
            (Some(s(121)), Unhealthy),
        ] {
            assert_eq!(check_balance_age(&limits(), age).level, level, "{age:?}");
        }
    }

    #[test]
    fn withdrawals_stuck_in_a_state() {
        for (oldest, level) in [
            (None, Healthy),
            (Some(("broadcast", s(60))), Healthy),
            (Some(("broadcast", s(1_801))), Warning),
            (Some(("processing", s(3_601))), Unhealthy),
        ] {
            let check = check_withdrawals_stuck(&limits(), oldest);
            assert_eq!(check.level, level, "{oldest:?}");
            if let Some((state, _)) = oldest {
                assert!(check.reason.contains(state), "{}", check.reason);
            }
        }
    }
}
