//! The worker runtime: the seed's `BaseWorker`, made safe.
//!
//! One task owns the worker's state and reacts to four things: heartbeat ticks, change-feed
//! hints, finished jobs and shutdown. Desired state is re-read on every heartbeat, so a lost
//! notification only costs latency (DESIGN.md §2.6). Stopping, restarting and shutting down
//! all go through one drain: no new work, in-flight work finishes within the drain timeout,
//! heartbeats continue meanwhile so a long drain is never mistaken for a dead worker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::{DesiredState, WorkerId, WorkerStatus};
use store::{
    Change, ChangeFeed, Store, StoreError, StoreOptions, WorkerHeartbeat, WorkerRegister,
    WorkerRow, WorkerStatusSet,
};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::factory::WorkerSpec;
use crate::job::{JobSource, Work, WorkerFault};

/// Builds a fresh job source; called at start and after every restart.
pub type SourceBuilder = Arc<
    dyn Fn(
            SourceContext,
        ) -> Pin<Box<dyn Future<Output = Result<Arc<dyn JobSource>, WorkerFault>> + Send>>
        + Send
        + Sync,
>;

/// What a job source learns about the process it runs in.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// `WORKER_ID:INCARNATION`: names this process as a lease holder, so the reaper can
    /// release exactly the leases of a worker it marks lost.
    pub owner: String,
}

/// The lease owner name of a worker process.
pub fn lease_owner(id: &WorkerId, incarnation: &str) -> String {
    format!("{id}:{incarnation}")
}

/// Everything a worker process needs to know about itself, validated by the caller.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub id: WorkerId,
    pub name: String,
    pub spec: WorkerSpec,
    pub database_url: String,
    pub store_options: StoreOptions,
    pub heartbeat_interval: Duration,
    pub drain_timeout: Duration,
    pub concurrency: u32,
    /// How long to wait before asking an idle job source again (wake-ups make it sooner).
    pub idle_poll_interval: Duration,
    pub error_backoff_min: Duration,
    pub error_backoff_max: Duration,
    pub version: String,
    pub host: String,
    pub pid: u32,
    pub config_json: serde_json::Value,
}

/// Why the runtime returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeExit {
    /// Shut down on request, drained, and reported `offline`.
    Shutdown,
    /// Another process registered under this id; this one stopped without touching the row.
    Superseded,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a drain leads to once in-flight work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterDrain {
    Stop,
    Restart { generation: i64 },
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Taking work.
    Active,
    /// Desired stopped: alive, heartbeating, taking no work.
    Stopped,
    /// The job source failed; one probe runs at `retry_at`.
    Faulted {
        retry_at: Instant,
    },
    Draining {
        then: AfterDrain,
        deadline: Instant,
    },
}

/// A status write that failed (database away) and is retried on the next heartbeat, unless a
/// newer one replaces it first.
#[derive(Debug, Clone)]
struct PendingStatus {
    to: WorkerStatus,
    error: Option<String>,
}

pub struct WorkerRuntime {
    config: RuntimeConfig,
    build_source: SourceBuilder,
}

struct State {
    store: Store,
    feed: Option<ChangeFeed>,
    source: Option<Arc<dyn JobSource>>,
    incarnation: String,
    /// The status the row has, as far as this process knows (its last successful write).
    status: WorkerStatus,
    /// The restart generation this process has applied, and the one the row records.
    applied_generation: i64,
    reported_generation: i64,
    phase: Phase,
    /// The one job in flight is the recovery probe of a faulted worker.
    probing: bool,
    pending_status: Option<PendingStatus>,
    in_flight: JoinSet<Result<Work, WorkerFault>>,
    idle_until: Option<Instant>,
    backoff: Backoff,
    processed_total: i64,
    failed_total: i64,
    superseded: bool,
}

impl WorkerRuntime {
    pub fn new(config: RuntimeConfig, build_source: SourceBuilder) -> Self {
        WorkerRuntime {
            config,
            build_source,
        }
    }

    /// Runs the worker until `shutdown` is cancelled (then drains and reports `offline`) or
    /// another process takes its id over.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<RuntimeExit, RuntimeError> {
        let config = &self.config;
        let store = Store::connect(&config.database_url, &config.store_options).await?;
        let incarnation = new_incarnation();
        let row = store
            .worker_register(&WorkerRegister {
                id: config.id.clone(),
                name: config.name.clone(),
                kind: config.spec.kind,
                chain: config.spec.chain,
                pid: i32::try_from(config.pid).ok(),
                host: Some(config.host.clone()),
                port: None,
                version: Some(config.version.clone()),
                config: config.config_json.clone(),
                incarnation: incarnation.clone(),
                now: Utc::now(),
            })
            .await?;
        tracing::info!(worker = %config.id, kind = %config.spec.kind, chain = %config.spec.chain, generation = row.generation, "worker registered");
        let feed = open_feed(&store).await;
        let mut state = State {
            store,
            feed,
            source: None,
            incarnation,
            status: WorkerStatus::Starting,
            applied_generation: row.generation,
            reported_generation: row.applied_generation,
            phase: Phase::Stopped,
            probing: false,
            pending_status: None,
            in_flight: JoinSet::new(),
            idle_until: None,
            backoff: Backoff::new(config.error_backoff_min, config.error_backoff_max),
            processed_total: 0,
            failed_total: 0,
            superseded: false,
        };
        self.start_up(&mut state, row.desired_state).await;

        let mut heartbeat = tokio::time::interval_at(
            Instant::now() + config.heartbeat_interval,
            config.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut shutdown_seen = false;

        loop {
            if state.superseded {
                state.in_flight.abort_all();
                tracing::error!(worker = %config.id, "another process registered under this worker id; stopping without touching its row");
                return Ok(RuntimeExit::Superseded);
            }
            if let Phase::Draining { then, .. } = state.phase
                && state.in_flight.is_empty()
            {
                if self.finish_drain(&mut state, then).await {
                    return Ok(RuntimeExit::Shutdown);
                }
                continue;
            }
            let spawn_at = self.next_spawn_at(&state);
            // While idle, a wake-up from the job source ends the wait early.
            let idle_source = match (&state.source, state.idle_until) {
                (Some(source), Some(_)) if state.phase == Phase::Active => Some(Arc::clone(source)),
                _ => None,
            };
            let drain_deadline = match state.phase {
                Phase::Draining { deadline, .. } => Some(deadline),
                _ => None,
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !shutdown_seen => {
                    shutdown_seen = true;
                    tracing::info!(worker = %config.id, in_flight = state.in_flight.len(), "shutting down: draining");
                    self.begin_drain(&mut state, AfterDrain::Shutdown);
                }
                Some(joined) = state.in_flight.join_next(), if !state.in_flight.is_empty() => {
                    self.job_finished(&mut state, joined).await;
                }
                change = next_change(&mut state.feed) => {
                    match change {
                        Some(Change::Worker(id)) if id != config.id => {}
                        Some(Change::Job(_)) => {}
                        Some(_) => self.refresh(&mut state).await,
                        // The feed's task died: fall back to heartbeats and try to reopen later.
                        None => state.feed = None,
                    }
                }
                _ = heartbeat.tick() => {
                    self.beat(&mut state).await;
                    if state.feed.is_none() {
                        state.feed = open_feed(&state.store).await;
                    }
                }
                () = sleep_until_opt(drain_deadline), if drain_deadline.is_some() => {
                    tracing::warn!(worker = %config.id, abandoned = state.in_flight.len(), "drain timeout: abandoning in-flight work (its leases will expire and it runs again elsewhere)");
                    state.in_flight.abort_all();
                    while state.in_flight.join_next().await.is_some() {}
                    state.probing = false;
                }
                () = wait_for_work(idle_source.as_deref()), if idle_source.is_some() => {
                    state.idle_until = None;
                }
                () = sleep_until_opt(spawn_at), if spawn_at.is_some() => {
                    self.spawn_work(&mut state);
                }
            }
        }
    }

    /// Builds the job source and moves `starting` to what the operator wants.
    async fn start_up(&self, state: &mut State, desired: DesiredState) {
        match (self.build_source)(self.source_context(state)).await {
            Ok(source) => {
                state.source = Some(source);
                let (to, phase) = match desired {
                    DesiredState::Running => (WorkerStatus::Running, Phase::Active),
                    DesiredState::Stopped => (WorkerStatus::Stopped, Phase::Stopped),
                };
                state.phase = phase;
                self.set_status(state, to, None).await;
            }
            Err(fault) => self.fault(state, fault).await,
        }
    }

    fn next_spawn_at(&self, state: &State) -> Option<Instant> {
        let slots_free = state.in_flight.len() < self.config.concurrency as usize;
        match state.phase {
            Phase::Active if slots_free && state.source.is_some() => {
                Some(state.idle_until.unwrap_or_else(Instant::now))
            }
            // One probe at a time while faulted.
            Phase::Faulted { retry_at } if state.in_flight.is_empty() => Some(retry_at),
            _ => None,
        }
    }

    fn source_context(&self, state: &State) -> SourceContext {
        SourceContext {
            owner: lease_owner(&self.config.id, &state.incarnation),
        }
    }

    fn spawn_work(&self, state: &mut State) {
        let source = match &state.source {
            Some(source) => Arc::clone(source),
            None => {
                // Faulted before a source could be built: the probe is building one.
                let build_source = Arc::clone(&self.build_source);
                let context = self.source_context(state);
                state.in_flight.spawn(async move {
                    let source = build_source(context).await?;
                    source.run_once().await.map(|_| Work::Idle)
                });
                state.probing = true;
                return;
            }
        };
        let wanted = match state.phase {
            Phase::Faulted { .. } => {
                state.probing = true;
                1
            }
            _ => (self.config.concurrency as usize).saturating_sub(state.in_flight.len()),
        };
        state.idle_until = None;
        for _ in 0..wanted {
            let source = Arc::clone(&source);
            state
                .in_flight
                .spawn(async move { source.run_once().await });
        }
    }

    async fn job_finished(
        &self,
        state: &mut State,
        joined: Result<Result<Work, WorkerFault>, tokio::task::JoinError>,
    ) {
        // While faulted, a probe is spawned only when nothing else is in flight, so the job
        // that finishes while `probing` is the probe.
        let was_probe = std::mem::take(&mut state.probing);
        let result = match joined {
            Ok(result) => result,
            Err(error) if error.is_cancelled() => return,
            Err(error) => Err(WorkerFault(format!("job task panicked: {error}"))),
        };
        match result {
            Ok(work) => {
                match &work {
                    Work::Done => state.processed_total += 1,
                    Work::Failed(reason) => {
                        state.processed_total += 1;
                        state.failed_total += 1;
                        tracing::warn!(worker = %self.config.id, error = %reason, "job failed");
                    }
                    Work::Idle => {
                        if state.idle_until.is_none() {
                            state.idle_until =
                                Some(Instant::now() + self.config.idle_poll_interval);
                        }
                    }
                }
                // Only the probe's success proves recovery; work that was already in flight
                // when the fault came says nothing about it.
                if was_probe && matches!(state.phase, Phase::Faulted { .. }) {
                    self.recover(state).await;
                }
            }
            Err(fault) if matches!(state.phase, Phase::Faulted { .. }) && !was_probe => {
                tracing::warn!(worker = %self.config.id, error = %fault, "in-flight work failed after the fault");
            }
            Err(fault) => self.fault(state, fault).await,
        }
    }

    async fn fault(&self, state: &mut State, fault: WorkerFault) {
        let delay = state.backoff.next_delay();
        tracing::error!(worker = %self.config.id, error = %fault, retry_in_ms = delay.as_millis() as u64, "worker fault");
        if let Phase::Draining { .. } = state.phase {
            return;
        }
        state.phase = Phase::Faulted {
            retry_at: Instant::now() + delay,
        };
        if state.status != WorkerStatus::Error {
            self.set_status(state, WorkerStatus::Error, Some(fault.0))
                .await;
        }
    }

    async fn recover(&self, state: &mut State) {
        tracing::info!(worker = %self.config.id, attempts = state.backoff.attempts(), "worker recovered");
        state.backoff.reset();
        if state.source.is_none() {
            match (self.build_source)(self.source_context(state)).await {
                Ok(source) => state.source = Some(source),
                Err(fault) => return self.fault(state, fault).await,
            }
        }
        state.phase = Phase::Active;
        self.set_status(state, WorkerStatus::Running, None).await;
        // The operator may have changed their mind while we were faulted.
        self.refresh(state).await;
    }

    fn begin_drain(&self, state: &mut State, then: AfterDrain) {
        // Shutdown wins over anything else in progress; otherwise the first drain continues.
        if let Phase::Draining {
            then: current,
            deadline,
        } = state.phase
        {
            if then == AfterDrain::Shutdown && current != AfterDrain::Shutdown {
                state.phase = Phase::Draining { then, deadline };
            }
            return;
        }
        state.idle_until = None;
        state.phase = Phase::Draining {
            then,
            deadline: Instant::now() + self.config.drain_timeout,
        };
    }

    /// Completes a drain. Returns true when the process should exit.
    async fn finish_drain(&self, state: &mut State, then: AfterDrain) -> bool {
        match then {
            AfterDrain::Shutdown => {
                if let Some(source) = state.source.take() {
                    source.close().await;
                }
                self.set_status(state, WorkerStatus::Offline, None).await;
                if state.pending_status.is_some() {
                    tracing::warn!(worker = %self.config.id, "could not report offline; the reaper will mark this worker lost");
                }
                // The feed holds a pooled connection; closing the pool waits for it.
                state.feed = None;
                state.store.close().await;
                tracing::info!(worker = %self.config.id, "worker offline");
                true
            }
            AfterDrain::Stop => {
                state.phase = Phase::Stopped;
                self.set_status(state, WorkerStatus::Stopped, None).await;
                tracing::info!(worker = %self.config.id, "worker stopped");
                self.refresh(state).await;
                false
            }
            AfterDrain::Restart { generation } => {
                tracing::info!(worker = %self.config.id, generation, "restarting: rebuilding connections");
                if let Some(source) = state.source.take() {
                    source.close().await;
                }
                self.set_status(state, WorkerStatus::Starting, None).await;
                match Store::connect(&self.config.database_url, &self.config.store_options).await {
                    Ok(store) => {
                        state.feed = None;
                        let old = std::mem::replace(&mut state.store, store);
                        old.close().await;
                        state.feed = open_feed(&state.store).await;
                    }
                    Err(error) => {
                        tracing::warn!(worker = %self.config.id, %error, "reconnect failed; keeping the old pool")
                    }
                }
                state.applied_generation = generation;
                let desired = match bounded(state.store.worker_get(&self.config.id)).await {
                    Ok(Some(row)) => row.desired_state,
                    _ => DesiredState::Running,
                };
                self.start_up(state, desired).await;
                self.refresh(state).await;
                false
            }
        }
    }

    /// Re-reads the row and reconciles.
    async fn refresh(&self, state: &mut State) {
        match bounded(state.store.worker_get(&self.config.id)).await {
            Ok(Some(row)) => self.reconcile(state, &row).await,
            Ok(None) => state.superseded = true,
            Err(error) => {
                tracing::warn!(worker = %self.config.id, %error, "cannot read desired state; retrying at the next heartbeat")
            }
        }
    }

    async fn beat(&self, state: &mut State) {
        if let Some(pending) = state.pending_status.take() {
            self.set_status(state, pending.to, pending.error).await;
        }
        let heartbeat = WorkerHeartbeat {
            id: self.config.id.clone(),
            incarnation: state.incarnation.clone(),
            rss_bytes: memory_stats::memory_stats()
                .and_then(|usage| i64::try_from(usage.physical_mem).ok()),
            in_flight: state.in_flight.len() as i64,
            processed_total: state.processed_total,
            failed_total: state.failed_total,
            now: Utc::now(),
        };
        match bounded(state.store.worker_heartbeat(&heartbeat)).await {
            Ok(row) => self.reconcile(state, &row).await,
            Err(StoreError::Superseded(_) | StoreError::NotFound { .. }) => state.superseded = true,
            Err(error) => tracing::warn!(worker = %self.config.id, %error, "heartbeat failed"),
        }
    }

    /// Moves towards what the row says the operator wants.
    async fn reconcile(&self, state: &mut State, row: &WorkerRow) {
        if row.incarnation.as_deref() != Some(state.incarnation.as_str()) {
            state.superseded = true;
            return;
        }
        state.reported_generation = row.applied_generation;
        if row.status == WorkerStatus::Lost && state.status != WorkerStatus::Lost {
            // The reaper gave up on us too early; say what we really are.
            tracing::warn!(worker = %self.config.id, "marked lost while alive; reporting back");
            state.status = WorkerStatus::Lost;
            let to = match state.phase {
                Phase::Stopped => WorkerStatus::Stopped,
                Phase::Faulted { .. } => WorkerStatus::Error,
                _ => WorkerStatus::Running,
            };
            self.set_status(state, to, None).await;
        }
        if matches!(state.phase, Phase::Draining { .. }) {
            return;
        }
        if row.generation > state.applied_generation {
            self.begin_drain(
                state,
                AfterDrain::Restart {
                    generation: row.generation,
                },
            );
        } else if row.desired_state == DesiredState::Stopped && state.phase != Phase::Stopped {
            self.begin_drain(state, AfterDrain::Stop);
        } else if row.desired_state == DesiredState::Running && state.phase == Phase::Stopped {
            if state.source.is_none() {
                // Stopped while its job source could not be built: the probe builds it, and
                // the worker reports running once that works.
                state.phase = Phase::Faulted {
                    retry_at: Instant::now(),
                };
                return;
            }
            state.phase = Phase::Active;
            self.set_status(state, WorkerStatus::Running, None).await;
            tracing::info!(worker = %self.config.id, "worker started");
        }
    }

    /// Writes a status change as a compare-and-set on the status we last wrote, recording the
    /// generation this process has applied. If the reaper moved the row meanwhile, re-reads and
    /// tries again from there. A write that fails is retried at the next heartbeat, unless a
    /// newer one replaces it first: the row must end up saying what is true now, not what was
    /// true when the database went away.
    async fn set_status(&self, state: &mut State, to: WorkerStatus, error: Option<String>) {
        state.pending_status = None;
        for _ in 0..3 {
            if state.status == to && state.reported_generation == state.applied_generation {
                return;
            }
            let status_set = WorkerStatusSet {
                id: self.config.id.clone(),
                incarnation: state.incarnation.clone(),
                from: state.status,
                to,
                error: error.clone(),
                applied_generation: Some(state.applied_generation),
                now: Utc::now(),
            };
            match bounded(state.store.worker_status_set(&status_set)).await {
                Ok(row) => {
                    state.status = row.status;
                    state.reported_generation = row.applied_generation;
                    return;
                }
                Err(StoreError::Conflict(_)) => {
                    match bounded(state.store.worker_get(&self.config.id)).await {
                        Ok(Some(row))
                            if row.incarnation.as_deref() == Some(state.incarnation.as_str()) =>
                        {
                            state.status = row.status;
                            state.reported_generation = row.applied_generation;
                        }
                        Ok(_) => {
                            state.superseded = true;
                            return;
                        }
                        Err(_) => break,
                    }
                }
                Err(StoreError::Superseded(_) | StoreError::NotFound { .. }) => {
                    state.superseded = true;
                    return;
                }
                Err(error) => {
                    tracing::warn!(worker = %self.config.id, %error, to = %to, "status change not written; retrying at the next heartbeat");
                    break;
                }
            }
        }
        state.pending_status = Some(PendingStatus { to, error });
    }
}

/// Bounds a store call, so a database that stops answering (a half-open connection) cannot
/// hold the worker's loop, and with it SIGTERM and the drain deadline.
async fn bounded<T>(call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let limit = domain::limits::STORE_CALL_TIMEOUT;
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(StoreError::TimedOut(limit)))
}

async fn open_feed(store: &Store) -> Option<ChangeFeed> {
    match store.change_feed().await {
        Ok(feed) => Some(feed),
        Err(error) => {
            tracing::warn!(%error, "no change feed; controls take effect at the next heartbeat");
            None
        }
    }
}

async fn next_change(feed: &mut Option<ChangeFeed>) -> Option<Change> {
    match feed {
        Some(feed) => feed.next().await,
        None => std::future::pending().await,
    }
}

async fn wait_for_work(source: Option<&dyn JobSource>) {
    match source {
        Some(source) => source.wait_for_work().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn new_incarnation() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
