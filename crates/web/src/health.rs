//! The health checker: reads the fleet, the job leases, the hot wallets' balances and the
//! withdrawals' ages from the store, and judges them by `domain::health`'s rules.
//!
//! Error rate and job progress are over a window, so the monitor keeps each worker's
//! counters as it saw them (at most `HEALTH_SAMPLES_MAX` readings per worker, dropped once
//! outside the window or when the worker's process changes). Without an earlier reading (a
//! fresh monitor, the local `coinsensei health`) they cover the worker's life since it
//! started, and the reason says how long that was. One monitor serves `GET
//! /api/admin/health`, `/metrics` and the control plane's restart action, so all three
//! agree; it also remembers since when each worker has been unhealthy.
//!
//! Each configured chain's node is judged too (reachable, on the configured network, its
//! newest block recent enough), through a [`NodeProbe`] the binary implements with the real
//! chain clients, so no chain SDK is built into this crate. Probes run apart from judging
//! ([`HealthMonitor::probe_nodes`], each bounded by a timeout and all at once): a slow or
//! dead node never holds up a report, which judges the latest answer of each node, and an
//! answer that is missing or too old counts as unreachable, never as healthy.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::health::{self, CheckResult, FloorReading, HealthLevel, HealthLimits, JobActivity};
use domain::{Chain, WithdrawalState, WorkerId, WorkerKind, WorkerStatus};
use serde_json::{Value, json};
use store::{Store, StoreError, WorkerList, WorkerRow};

/// What a chain's node said when probed: its network in its own words, what the
/// configuration expects in the same words, and its newest block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// `chain id 1`, `main`, `genesis 0000…`.
    pub network: String,
    /// The same, as configured; None when nothing is configured to compare with.
    pub expected_network: Option<String>,
    /// The configuration key that sets the expectation (named in the reason).
    pub network_key: &'static str,
    pub tip_height: u64,
    pub tip_time: DateTime<Utc>,
    /// Where the node says so (bitcoind): blocks behind the headers it knows, and whether it
    /// is in its initial block download.
    pub catching_up: Option<(u64, bool)>,
}

/// What [`NodeProbe::probe`] returns.
pub type ProbeFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<NodeStatus, String>> + Send + 'a>>;

/// Asks the configured chains' nodes how they are. Implemented by the binary with the same
/// clients the workers use (`coinsensei::chains`); the monitor bounds every call in time.
pub trait NodeProbe: Send + Sync {
    /// The chains whose node is configured.
    fn chains(&self) -> Vec<Chain>;
    /// One look at `chain`'s node; `Err` says what went wrong (never a secret: no URL path,
    /// no credentials).
    fn probe(&self, chain: Chain) -> ProbeFuture<'_>;
}

/// A hot wallet asset's floor, from `[[withdrawal_policy]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    pub chain: Chain,
    pub asset: String,
    pub decimals: u8,
    pub floor: domain::Amount,
}

/// A node's latest answer, and when it came.
#[derive(Debug, Clone)]
struct ProbeRecord {
    at: DateTime<Utc>,
    latency: Duration,
    outcome: Result<NodeStatus, String>,
}

/// The node probe and how it is bounded.
struct Nodes {
    probe: Arc<dyn NodeProbe>,
    /// The longest one probe may take.
    timeout: Duration,
    /// An answer older than this is not believed (the probe loop stalled): unreachable.
    max_age: Duration,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes")
            .field("chains", &self.probe.chains())
            .field("timeout", &self.timeout)
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// One worker's verdict.
#[derive(Debug, Clone)]
pub struct WorkerHealth {
    pub id: WorkerId,
    pub kind: WorkerKind,
    pub chain: Chain,
    pub worker_status: WorkerStatus,
    pub level: HealthLevel,
    pub checks: Vec<CheckResult>,
    /// Since when it has been unhealthy without a break, as this monitor saw it.
    pub unhealthy_since: Option<DateTime<Utc>>,
}

/// One chain's verdict: its node (when one is configured) and what the store knows of it.
#[derive(Debug, Clone)]
pub struct ChainHealth {
    pub chain: Chain,
    pub level: HealthLevel,
    pub checks: Vec<CheckResult>,
    /// The node's own checks together (`domain::health::node_level`); None without a node.
    pub node_level: Option<HealthLevel>,
    /// Since when the node has been unhealthy without a break, as this monitor saw it.
    pub node_unhealthy_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct HealthReport {
    pub evaluated_at: DateTime<Utc>,
    pub level: HealthLevel,
    pub workers: Vec<WorkerHealth>,
    pub chains: Vec<ChainHealth>,
}

/// What the checks read, fetched in one go (also what a benchmark feeds [`HealthMonitor::judge`]).
#[derive(Debug, Clone, Default)]
pub struct Readings {
    pub workers: Vec<WorkerRow>,
    /// Jobs running past their lease per lease holder (`worker-id:incarnation`).
    pub overdue: Vec<(String, i64)>,
    pub balances: Vec<store::HotWalletBalance>,
    pub withdrawal_oldest: Vec<(Chain, WithdrawalState, DateTime<Utc>)>,
}

#[derive(Debug, Clone)]
struct Sample {
    at: DateTime<Utc>,
    incarnation: Option<String>,
    processed: i64,
    failed: i64,
}

#[derive(Debug, Default)]
struct Memory {
    samples: HashMap<WorkerId, VecDeque<Sample>>,
    unhealthy_since: HashMap<WorkerId, DateTime<Utc>>,
    probes: HashMap<Chain, ProbeRecord>,
    node_unhealthy_since: HashMap<Chain, DateTime<Utc>>,
}

#[derive(Debug)]
pub struct HealthMonitor {
    limits: HealthLimits,
    /// Whether the jobs live in the store (else in Redis, whose leases this does not read:
    /// the "past its lease" half of the job check is then not judged).
    jobs_in_store: bool,
    nodes: Option<Nodes>,
    floors: Vec<Floor>,
    memory: Mutex<Memory>,
}

impl Default for HealthMonitor {
    fn default() -> Self {
        HealthMonitor::new(HealthLimits::default(), true)
    }
}

/// Every worker row, a page at a time, at most `HEALTH_WORKERS_MAX`.
pub async fn all_workers(store: &Store) -> Result<Vec<WorkerRow>, StoreError> {
    use domain::limits::{HEALTH_WORKERS_MAX, LIST_LIMIT_MAX};
    let mut workers = Vec::new();
    loop {
        let page = store
            .worker_list(&WorkerList {
                limit: LIST_LIMIT_MAX,
                offset: u32::try_from(workers.len()).unwrap_or(u32::MAX),
                ..Default::default()
            })
            .await?;
        let last = page.len() < LIST_LIMIT_MAX as usize;
        workers.extend(page);
        if last || workers.len() >= HEALTH_WORKERS_MAX as usize {
            return Ok(workers);
        }
    }
}

fn age(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (now - at).to_std().unwrap_or(Duration::ZERO)
}

fn non_negative(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl HealthMonitor {
    pub fn new(limits: HealthLimits, jobs_in_store: bool) -> Self {
        HealthMonitor {
            limits,
            jobs_in_store,
            nodes: None,
            floors: Vec::new(),
            memory: Mutex::default(),
        }
    }

    /// Judges the nodes `probe` reaches: each probe bounded by `timeout`, and an answer older
    /// than `max_age` taken as none.
    #[must_use]
    pub fn with_nodes(
        mut self,
        probe: Arc<dyn NodeProbe>,
        timeout: Duration,
        max_age: Duration,
    ) -> Self {
        self.nodes = Some(Nodes {
            probe,
            timeout,
            max_age,
        });
        self
    }

    /// Judges the hot wallets' balances against these floors.
    #[must_use]
    pub fn with_floors(mut self, floors: Vec<Floor>) -> Self {
        self.floors = floors;
        self
    }

    /// Asks every configured node at once, each within the timeout, and keeps the answers for
    /// the next judgements. A probe that does not answer in time is recorded as unreachable.
    pub async fn probe_nodes(&self) {
        let Some(nodes) = &self.nodes else {
            return;
        };
        let chains = nodes.probe.chains();
        let probes = chains.iter().map(|&chain| async move {
            let started = std::time::Instant::now();
            let outcome = match tokio::time::timeout(nodes.timeout, nodes.probe.probe(chain)).await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {} ms", nodes.timeout.as_millis())),
            };
            let record = ProbeRecord {
                at: Utc::now(),
                latency: started.elapsed(),
                outcome,
            };
            if let Err(error) = &record.outcome {
                tracing::debug!(%chain, %error, "a node probe failed");
            }
            (chain, record)
        });
        let records = futures_util::future::join_all(probes).await;
        let mut memory = self
            .memory
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for (chain, record) in records {
            memory.probes.insert(chain, record);
        }
    }

    pub fn limits(&self) -> &HealthLimits {
        &self.limits
    }

    /// Reads what the checks need from the store.
    pub async fn read(&self, store: &Store, now: DateTime<Utc>) -> Result<Readings, StoreError> {
        Ok(Readings {
            workers: all_workers(store).await?,
            overdue: if self.jobs_in_store {
                store.job_lease_overdue(now).await?
            } else {
                Vec::new()
            },
            balances: store.hot_wallet_list().await?,
            withdrawal_oldest: store.withdrawal_state_oldest().await?,
        })
    }

    /// Reads and judges.
    pub async fn evaluate(
        &self,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<HealthReport, StoreError> {
        let readings = self.read(store, now).await?;
        Ok(self.judge(&readings, now))
    }

    /// Judges readings taken at `now`, and remembers the counters for the next window.
    /// Workers that went `offline` (stopped for good, or retired by the autoscaler) are not
    /// judged.
    pub fn judge(&self, readings: &Readings, now: DateTime<Utc>) -> HealthReport {
        let mut overdue: HashMap<&str, u64> = HashMap::new();
        for (owner, count) in &readings.overdue {
            let id = owner.rsplit_once(':').map_or(owner.as_str(), |(id, _)| id);
            *overdue.entry(id).or_default() += non_negative(*count);
        }
        let mut memory = self
            .memory
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut workers = Vec::with_capacity(readings.workers.len());
        for row in &readings.workers {
            if row.status == WorkerStatus::Offline {
                continue;
            }
            let activity = self.activity(&mut memory, row, now, overdue.get(row.id.as_str()));
            let checks = vec![
                health::check_heartbeat(&self.limits, row.last_heartbeat.map(|at| age(now, at))),
                health::check_memory(&self.limits, row.rss_bytes.map(non_negative)),
                health::check_jobs(&self.limits, &activity),
                health::check_error_rate(&self.limits, &activity),
            ];
            let level = health::overall(&checks);
            let unhealthy_since = if level == HealthLevel::Unhealthy {
                Some(*memory.unhealthy_since.entry(row.id.clone()).or_insert(now))
            } else {
                memory.unhealthy_since.remove(&row.id);
                None
            };
            workers.push(WorkerHealth {
                id: row.id.clone(),
                kind: row.kind,
                chain: row.chain,
                worker_status: row.status,
                level,
                checks,
                unhealthy_since,
            });
        }
        // Forget workers that are gone or offline.
        let live: std::collections::HashSet<&WorkerId> =
            workers.iter().map(|worker| &worker.id).collect();
        memory.samples.retain(|id, _| live.contains(id));
        memory.unhealthy_since.retain(|id, _| live.contains(id));
        drop(memory);

        let chains = self.chains(readings, now);
        let level = workers
            .iter()
            .map(|worker| worker.level)
            .chain(chains.iter().map(|chain| chain.level))
            .max()
            .unwrap_or(HealthLevel::Healthy);
        HealthReport {
            evaluated_at: now,
            level,
            workers,
            chains,
        }
    }

    /// Forgets since when a worker has been unhealthy: after a restart, it gets a whole
    /// grace period again.
    pub fn forget_unhealthy(&self, id: &WorkerId) {
        let mut memory = self
            .memory
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        memory.unhealthy_since.remove(id);
    }

    /// The worker's job counts over the window: against the newest reading at least a window
    /// old (else the oldest one), or its whole life when there is none of this process.
    fn activity(
        &self,
        memory: &mut Memory,
        row: &WorkerRow,
        now: DateTime<Utc>,
        past_lease: Option<&u64>,
    ) -> JobActivity {
        let samples = memory.samples.entry(row.id.clone()).or_default();
        if samples.back().is_some_and(|last| {
            last.incarnation != row.incarnation || last.processed > row.processed_total
        }) {
            samples.clear();
        }
        let window_start = now - chrono::Duration::from_std(self.limits.window).unwrap_or_default();
        // Keep one reading at or before the window's start as the baseline; drop older ones.
        while samples.len() >= 2 && samples[1].at <= window_start {
            samples.pop_front();
        }
        let (since, processed, failed) = match samples.front() {
            Some(base) => (base.at, base.processed, base.failed),
            None => (row.started_at.unwrap_or(now), 0, 0),
        };
        let processed = non_negative(row.processed_total - processed);
        let failed = non_negative(row.failed_total - failed);
        // Readings closer together than a sixtieth of the window add nothing but churn (the
        // API and scrapes may ask far more often than the loop): keep one per slot, so the
        // bounded history always spans the window.
        let spacing = chrono::Duration::from_std(self.limits.window / 60).unwrap_or_default();
        if samples.back().is_none_or(|last| now - last.at >= spacing) {
            samples.push_back(Sample {
                at: now,
                incarnation: row.incarnation.clone(),
                processed: row.processed_total,
                failed: row.failed_total,
            });
        }
        while samples.len() > domain::limits::HEALTH_SAMPLES_MAX {
            samples.pop_front();
        }
        JobActivity {
            in_flight: non_negative(row.in_flight),
            completed: processed.saturating_sub(failed),
            failed,
            past_lease: past_lease.copied().unwrap_or(0),
            window: age(now, since),
        }
    }

    /// Per chain with a node configured, a hot wallet balance on record or an unfinished
    /// withdrawal.
    fn chains(&self, readings: &Readings, now: DateTime<Utc>) -> Vec<ChainHealth> {
        let probed: Vec<Chain> = self
            .nodes
            .as_ref()
            .map(|nodes| nodes.probe.chains())
            .unwrap_or_default();
        let mut memory = self
            .memory
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut chains = Vec::new();
        for chain in Chain::ALL {
            let balance_read = readings
                .balances
                .iter()
                .filter(|balance| balance.chain == chain)
                .map(|balance| balance.checked_at)
                .min();
            let stuck = readings
                .withdrawal_oldest
                .iter()
                .filter(|(each, state, _)| {
                    *each == chain && *state != WithdrawalState::ManualReview
                })
                .min_by_key(|(_, _, since)| *since)
                .map(|(_, state, since)| (state.as_str(), age(now, *since)));
            let unfinished = readings
                .withdrawal_oldest
                .iter()
                .any(|(each, _, _)| *each == chain);
            let has_node = probed.contains(&chain);
            if balance_read.is_none() && !unfinished && !has_node {
                continue;
            }
            let mut checks = Vec::new();
            if has_node {
                checks.extend(self.node_checks(chain, memory.probes.get(&chain), now));
            }
            if let Some(read) = balance_read {
                checks.push(health::check_balance_age(
                    &self.limits,
                    Some(age(now, read)),
                ));
            }
            let floors = self.floor_readings(chain, &readings.balances);
            if !floors.is_empty() {
                checks.push(health::check_hot_wallet_floor(&floors));
            }
            checks.push(health::check_withdrawals_stuck(&self.limits, stuck));
            let node_level = has_node.then(|| health::node_level(&checks));
            let node_unhealthy_since = if node_level == Some(HealthLevel::Unhealthy) {
                Some(*memory.node_unhealthy_since.entry(chain).or_insert(now))
            } else {
                memory.node_unhealthy_since.remove(&chain);
                None
            };
            chains.push(ChainHealth {
                chain,
                level: health::overall(&checks),
                checks,
                node_level,
                node_unhealthy_since,
            });
        }
        chains
    }

    /// The node's three checks from its latest answer (none, or one too old: unreachable).
    fn node_checks(
        &self,
        chain: Chain,
        record: Option<&ProbeRecord>,
        now: DateTime<Utc>,
    ) -> Vec<CheckResult> {
        let max_age = self
            .nodes
            .as_ref()
            .map_or(Duration::MAX, |nodes| nodes.max_age);
        let answer: Result<(&NodeStatus, Duration), String> = match record {
            None => Err("not probed yet".into()),
            Some(record) if age(now, record.at) > max_age => Err(format!(
                "last probed {} ms ago, over {} ms",
                age(now, record.at).as_millis(),
                max_age.as_millis()
            )),
            Some(record) => match &record.outcome {
                Ok(status) => Ok((status, record.latency)),
                Err(error) => Err(error.clone()),
            },
        };
        match answer {
            Ok((status, latency)) => vec![
                health::check_node_reachable(Ok(latency)),
                health::check_network(
                    Some(&status.network),
                    status.expected_network.as_deref(),
                    status.network_key,
                ),
                health::check_sync_lag(
                    self.limits.sync_lag(chain),
                    Some((status.tip_height, age(now, status.tip_time))),
                    status.catching_up,
                ),
            ],
            Err(error) => vec![
                health::check_node_reachable(Err(&error)),
                health::check_network(None, None, ""),
                health::check_sync_lag(self.limits.sync_lag(chain), None, None),
            ],
        }
    }

    /// The chain's hot wallet balances that have a floor (an asset with no balance on record
    /// is left to the balance age check).
    fn floor_readings(
        &self,
        chain: Chain,
        balances: &[store::HotWalletBalance],
    ) -> Vec<FloorReading> {
        self.floors
            .iter()
            .filter(|floor| floor.chain == chain)
            .filter_map(|floor| {
                let balance = balances
                    .iter()
                    .find(|balance| balance.chain == chain && balance.asset == floor.asset)?;
                let units = balance.units.parse::<ruint::aliases::U256>().ok()?;
                Some(FloorReading {
                    asset: floor.asset.clone(),
                    decimals: floor.decimals,
                    balance: domain::Amount::from_base_units(units),
                    floor: floor.floor,
                })
            })
            .collect()
    }
}

fn check_json(check: &CheckResult) -> Value {
    json!({
        "name": check.name,
        "status": check.level.as_str(),
        "reason": check.reason,
        "value": check.value,
        "unit": check.unit,
    })
}

/// The report's JSON: `GET /api/admin/health` and `coinsensei health --json`.
pub fn report_json(report: &HealthReport) -> Value {
    json!({
        "status": report.level.as_str(),
        "evaluated_at": report.evaluated_at.to_rfc3339(),
        "workers": report.workers.iter().map(|worker| json!({
            "id": worker.id.as_str(),
            "type": worker.kind.as_str(),
            "blockchain": worker.chain.as_str(),
            "worker_status": worker.worker_status.as_str(),
            "status": worker.level.as_str(),
            "unhealthy_since": worker.unhealthy_since.map(|at| at.to_rfc3339()),
            "checks": worker.checks.iter().map(check_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "chains": report.chains.iter().map(|chain| json!({
            "blockchain": chain.chain.as_str(),
            "status": chain.level.as_str(),
            "node_status": chain.node_level.map(HealthLevel::as_str),
            "node_unhealthy_since": chain.node_unhealthy_since.map(|at| at.to_rfc3339()),
            "checks": chain.checks.iter().map(check_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Exports each check as gauges: `coinsensei_health_check_status` (0 healthy, 1 warning,
/// 2 unhealthy) and `coinsensei_health_check_value` (in the check's unit) by worker or chain
/// and check, and `coinsensei_worker_health_status` / `coinsensei_chain_health_status`.
#[allow(
    clippy::cast_precision_loss,
    reason = "gauges are f64 by the Prometheus format; values far below 2^53"
)]
pub(crate) fn export(report: &HealthReport) {
    for worker in &report.workers {
        let id = worker.id.as_str().to_string();
        metrics::gauge!("coinsensei_worker_health_status", "worker" => id.clone())
            .set(f64::from(worker.level.code()));
        for check in &worker.checks {
            metrics::gauge!("coinsensei_health_check_status", "worker" => id.clone(), "check" => check.name)
                .set(f64::from(check.level.code()));
            metrics::gauge!("coinsensei_health_check_value", "worker" => id.clone(), "check" => check.name)
                .set(check.value as f64);
        }
    }
    for chain in &report.chains {
        metrics::gauge!("coinsensei_chain_health_status", "chain" => chain.chain.as_str())
            .set(f64::from(chain.level.code()));
        for check in &chain.checks {
            metrics::gauge!("coinsensei_chain_health_check_status", "chain" => chain.chain.as_str(), "check" => check.name)
                .set(f64::from(check.level.code()));
            metrics::gauge!("coinsensei_chain_health_check_value", "chain" => chain.chain.as_str(), "check" => check.name)
                .set(check.value as f64);
        }
    }
}
