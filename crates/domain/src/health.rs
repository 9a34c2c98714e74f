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
    /// A node whose newest block is older than its chain's limit is behind (warning; twice
    /// as old, unhealthy): TRON's blocks come every 3 s, Ethereum's every 12 s, Bitcoin's
    /// every 10 minutes on average (and an hour without one happens several times a week).
    pub sync_lag_tron: Duration,
    pub sync_lag_ethereum: Duration,
    pub sync_lag_bitcoin: Duration,
}

impl HealthLimits {
    /// The sync lag limit of `chain`'s node.
    pub fn sync_lag(&self, chain: crate::Chain) -> Duration {
        match chain {
            crate::Chain::Tron => self.sync_lag_tron,
            crate::Chain::Ethereum => self.sync_lag_ethereum,
            crate::Chain::Bitcoin => self.sync_lag_bitcoin,
        }
    }
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
            sync_lag_tron: HEALTH_SYNC_LAG_TRON_DEFAULT,
            sync_lag_ethereum: HEALTH_SYNC_LAG_ETHEREUM_DEFAULT,
            sync_lag_bitcoin: HEALTH_SYNC_LAG_BITCOIN_DEFAULT,
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

/// The checks of a chain's node; the control plane pauses the chain's withdrawals while
/// these together are unhealthy (see [`node_level`]).
pub const NODE_CHECKS: [&str; 3] = ["node_reachable", "network", "sync_lag"];

/// The node's level from its own checks alone (the hot wallet's and the withdrawals' aside).
pub fn node_level(checks: &[CheckResult]) -> HealthLevel {
    let node: Vec<CheckResult> = checks
        .iter()
        .filter(|check| NODE_CHECKS.contains(&check.name))
        .cloned()
        .collect();
    overall(&node)
}

/// Whether the node answered the probe, and how fast (`Err`: what went wrong, a timeout
/// included: a probe that did not answer is never healthy).
pub fn check_node_reachable(answer: Result<Duration, &str>) -> CheckResult {
    let name = "node_reachable";
    match answer {
        Ok(latency) => CheckResult::new(
            name,
            HealthLevel::Healthy,
            millis(latency),
            "milliseconds",
            format!("answered in {} ms", millis(latency)),
        ),
        Err(error) => CheckResult::new(
            name,
            HealthLevel::Unhealthy,
            -1,
            "milliseconds",
            format!("no answer: {error}"),
        ),
    }
}

/// Whether the node is on the configured network: `actual` as the node names it (None: not
/// measured), `expected` as configured under `key` (None: nothing to compare with). The
/// value is 1 on the expected network, 0 on another, -1 when not known.
pub fn check_network(actual: Option<&str>, expected: Option<&str>, key: &str) -> CheckResult {
    let name = "network";
    let unit = "match";
    let Some(actual) = actual else {
        return CheckResult::new(
            name,
            HealthLevel::Unhealthy,
            -1,
            unit,
            "not measured: the node did not answer".into(),
        );
    };
    match expected {
        None => CheckResult::new(
            name,
            HealthLevel::Healthy,
            -1,
            unit,
            format!("on {actual} (set {key} to have it checked)"),
        ),
        Some(expected) if expected.eq_ignore_ascii_case(actual) => {
            CheckResult::new(name, HealthLevel::Healthy, 1, unit, format!("on {actual}"))
        }
        Some(expected) => CheckResult::new(
            name,
            HealthLevel::Unhealthy,
            0,
            unit,
            format!("on {actual}, but {key} says {expected}"),
        ),
    }
}

/// How far the node's tip is behind: the age of its newest block against the chain's
/// limit (warning over it, unhealthy over twice), and, where the node says so (bitcoind),
/// whether it is still catching up (initial block download, or more than
/// [`crate::limits::HEALTH_HEADERS_BEHIND_MAX`] blocks behind the headers it knows: unhealthy).
pub fn check_sync_lag(
    limit: Duration,
    tip: Option<(u64, Duration)>,
    catching_up: Option<(u64, bool)>,
) -> CheckResult {
    let name = "sync_lag";
    let Some((height, age)) = tip else {
        return CheckResult::new(
            name,
            HealthLevel::Unhealthy,
            -1,
            "milliseconds",
            "not measured: the node did not answer".into(),
        );
    };
    let value = millis(age);
    if let Some((behind, initial_download)) = catching_up
        && (initial_download || behind > crate::limits::HEALTH_HEADERS_BEHIND_MAX)
    {
        let why = if initial_download {
            "in initial block download".to_string()
        } else {
            format!("{behind} blocks behind the headers it knows")
        };
        return CheckResult::new(
            name,
            HealthLevel::Unhealthy,
            value,
            "milliseconds",
            format!("block {height}, {value} ms old: the node is {why}"),
        );
    }
    let (level, reason) = if age > limit * 2 {
        (
            HealthLevel::Unhealthy,
            format!(
                "newest block {height} is {value} ms old, over twice {} ms",
                millis(limit)
            ),
        )
    } else if age > limit {
        (
            HealthLevel::Warning,
            format!(
                "newest block {height} is {value} ms old, over {} ms",
                millis(limit)
            ),
        )
    } else {
        (
            HealthLevel::Healthy,
            format!("newest block {height} is {value} ms old"),
        )
    };
    CheckResult::new(name, level, value, "milliseconds", reason)
}

/// One asset of a hot wallet against its configured floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorReading {
    pub asset: String,
    pub decimals: u8,
    pub balance: crate::Amount,
    pub floor: crate::Amount,
}

/// The hot wallet's balances against the floors `[[withdrawal_policy]]` sets: unhealthy
/// when one is below its floor (payments that would go under it wait for funds). The value
/// is the lowest balance as a percentage of its floor.
pub fn check_hot_wallet_floor(readings: &[FloorReading]) -> CheckResult {
    let name = "hot_wallet_floor";
    let unit = "percent of floor";
    let percent = |reading: &FloorReading| -> i64 {
        let floor = reading.floor.base_units();
        if floor.is_zero() {
            return i64::MAX;
        }
        let percent = reading
            .balance
            .base_units()
            .saturating_mul(ruint::aliases::U256::from(100u8))
            / floor;
        i64::try_from(percent).unwrap_or(i64::MAX)
    };
    let Some(lowest) = readings.iter().min_by_key(|reading| percent(reading)) else {
        return CheckResult::new(
            name,
            HealthLevel::Healthy,
            -1,
            unit,
            "no floor configured".into(),
        );
    };
    let describe = |reading: &FloorReading| {
        format!(
            "{} {} of floor {}",
            reading.asset,
            reading.balance.format_decimal(reading.decimals),
            reading.floor.format_decimal(reading.decimals)
        )
    };
    let below: Vec<String> = readings
        .iter()
        .filter(|reading| reading.balance.base_units() < reading.floor.base_units())
        .map(describe)
        .collect();
    if below.is_empty() {
        CheckResult::new(
            name,
            HealthLevel::Healthy,
            percent(lowest),
            unit,
            readings.iter().map(describe).collect::<Vec<_>>().join(", "),
        )
    } else {
        CheckResult::new(
            name,
            HealthLevel::Unhealthy,
            percent(lowest),
            unit,
            format!(
                "below its floor: {} (payments that would go under it wait: fund the hot wallet)",
                below.join(", ")
            ),
        )
    }
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
            ..HealthLimits::default()
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

    #[test]
    fn node_reachable_or_not() {
        let check = check_node_reachable(Ok(Duration::from_millis(12)));
        assert_eq!((check.level, check.value), (Healthy, 12));
        let check = check_node_reachable(Err("no answer within 5000 ms"));
        assert_eq!((check.level, check.value), (Unhealthy, -1));
        assert!(check.reason.contains("within 5000 ms"), "{}", check.reason);
    }

    #[test]
    fn network_against_the_configuration() {
        for (actual, expected, level, value, reason) in [
            (None, Some("chain id 1"), Unhealthy, -1, "not measured"),
            (
                Some("chain id 1"),
                None,
                Healthy,
                -1,
                "set ethereum_chain_id",
            ),
            (
                Some("chain id 1"),
                Some("chain id 1"),
                Healthy,
                1,
                "on chain id 1",
            ),
            (
                Some("chain id 31337"),
                Some("chain id 1"),
                Unhealthy,
                0,
                "on chain id 31337, but ethereum_chain_id says chain id 1",
            ),
        ] {
            let check = check_network(actual, expected, "ethereum_chain_id");
            assert_eq!((check.level, check.value), (level, value), "{actual:?}");
            assert!(check.reason.contains(reason), "{}", check.reason);
        }
    }

    #[test]
    fn sync_lag_against_the_limit() {
        let limit = s(60);
        for (tip, catching_up, level, reason) in [
            (None, None, Unhealthy, "not measured"),
            (Some((7, s(10))), None, Healthy, "block 7 is 10000 ms old"),
            (Some((7, s(60))), None, Healthy, "old"),
            (Some((7, s(61))), None, Warning, "over 60000 ms"),
            (Some((7, s(121))), None, Unhealthy, "over twice 60000 ms"),
            (Some((7, s(1))), Some((0, false)), Healthy, "old"),
            (Some((7, s(1))), Some((6, false)), Healthy, "old"),
            (
                Some((7, s(1))),
                Some((7, false)),
                Unhealthy,
                "7 blocks behind",
            ),
            (
                Some((7, s(1))),
                Some((0, true)),
                Unhealthy,
                "initial block download",
            ),
        ] {
            let check = check_sync_lag(limit, tip, catching_up);
            assert_eq!(
                check.level, level,
                "{tip:?} {catching_up:?}: {}",
                check.reason
            );
            assert!(check.reason.contains(reason), "{}", check.reason);
        }
    }

    #[test]
    fn hot_wallet_against_its_floor() {
        let reading = |asset: &str, balance: u128, floor: u128| FloorReading {
            asset: asset.into(),
            decimals: 6,
            balance: crate::Amount::from_u128(balance),
            floor: crate::Amount::from_u128(floor),
        };
        let check = check_hot_wallet_floor(&[]);
        assert_eq!(check.level, Healthy);
        let check = check_hot_wallet_floor(&[reading("TRX", 5_000_000, 2_000_000)]);
        assert_eq!(
            (check.level, check.value),
            (Healthy, 250),
            "{}",
            check.reason
        );
        assert!(
            check.reason.contains("TRX 5 of floor 2"),
            "{}",
            check.reason
        );
        let check = check_hot_wallet_floor(&[reading("TRX", 2_000_000, 2_000_000)]);
        assert_eq!((check.level, check.value), (Healthy, 100));
        let check = check_hot_wallet_floor(&[
            reading("TRX", 5_000_000, 2_000_000),
            reading("USDT", 1_500_000, 2_000_000),
        ]);
        assert_eq!(
            (check.level, check.value),
            (Unhealthy, 75),
            "{}",
            check.reason
        );
        assert!(
            check.reason.contains("USDT 1.5 of floor 2"),
            "{}",
            check.reason
        );
        assert!(!check.reason.contains("TRX"), "{}", check.reason);
        // A token amount far past i64 still judges, its percentage saturated.
        let huge = FloorReading {
            balance: crate::Amount::from_base_units(ruint::aliases::U256::MAX),
            ..reading("USDT", 0, 1)
        };
        assert_eq!(check_hot_wallet_floor(&[huge]).value, i64::MAX);
    }

    #[test]
    fn the_node_level_leaves_the_wallet_out() {
        let checks = vec![
            check_node_reachable(Ok(s(0))),
            check_network(Some("main"), Some("main"), "bitcoin_network"),
            check_sync_lag(s(60), Some((1, s(1))), None),
            check_hot_wallet_floor(&[FloorReading {
                asset: "BTC".into(),
                decimals: 8,
                balance: crate::Amount::from_u128(0),
                floor: crate::Amount::from_u128(1),
            }]),
        ];
        assert_eq!(overall(&checks), Unhealthy);
        assert_eq!(node_level(&checks), Healthy);
        let down = vec![
            check_node_reachable(Err("refused")),
            check_network(None, None, "tron_genesis_block_id"),
            check_sync_lag(s(60), None, None),
        ];
        assert_eq!(node_level(&down), Unhealthy);
    }
}
