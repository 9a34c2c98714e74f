//! What the dashboard's charts draw: a short history of each worker (heartbeat age, memory,
//! processed and failed jobs) and each queue (depth, finished jobs, wait), sampled in memory
//! every heartbeat interval by one task per process, started by the first dashboard page
//! that is looked at. Kept in memory on purpose: it is a picture of the last half hour for
//! the operator looking now, not a record; Prometheus (`/metrics`) keeps the long history.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use store::{Store, WorkerList};

/// Samples kept per worker and per queue: half an hour at the default heartbeat interval
/// (5 s), the pace the history is sampled at.
pub const HISTORY_SAMPLES_MAX: usize = 360;
/// The shortest sampling interval, whatever the heartbeat interval.
const HISTORY_INTERVAL_MIN: Duration = Duration::from_secs(1);
/// Workers and queues followed at most; more are not charted.
const HISTORY_SERIES_MAX: usize = 1_000;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkerSample {
    /// Unix seconds.
    pub(crate) t: i64,
    pub(crate) heartbeat_age_ms: Option<i64>,
    pub(crate) rss_bytes: Option<i64>,
    pub(crate) processed: i64,
    pub(crate) failed: i64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueueSample {
    pub(crate) t: i64,
    pub(crate) available: i64,
    pub(crate) scheduled: i64,
    pub(crate) running: i64,
    /// Completed jobs still kept (retention prunes them, so rates come from differences
    /// that the chart clamps at zero).
    pub(crate) completed: i64,
    pub(crate) failed: i64,
    /// How long the oldest available job has waited: the queue's latency right now.
    pub(crate) oldest_wait_ms: Option<i64>,
}

#[derive(Default)]
struct Series {
    workers: HashMap<String, VecDeque<WorkerSample>>,
    queues: HashMap<String, VecDeque<QueueSample>>,
    /// Samples taken so far: the live streams send new history when it moves.
    taken: u64,
}

/// The process's chart history.
#[derive(Default)]
pub(crate) struct History {
    series: Mutex<Series>,
    sampler: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn push<T>(series: &mut VecDeque<T>, sample: T) {
    if series.len() >= HISTORY_SAMPLES_MAX {
        series.pop_front();
    }
    series.push_back(sample);
}

impl History {
    /// Starts the sampler unless it runs already.
    pub(crate) fn ensure_running(
        self: &Arc<Self>,
        store: Store,
        queue: Arc<dyn queue::Backend>,
        interval: Duration,
    ) {
        let mut sampler = self.sampler.lock().unwrap_or_else(PoisonError::into_inner);
        if sampler.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let history = Arc::clone(self);
        *sampler = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(HISTORY_INTERVAL_MIN));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(error) = history.sample(&store, queue.as_ref()).await {
                    tracing::debug!(%error, "dashboard history: could not sample");
                }
            }
        }));
    }

    async fn sample(&self, store: &Store, queue: &dyn queue::Backend) -> Result<(), String> {
        let now = Utc::now();
        let workers = store
            .worker_list(&WorkerList {
                limit: domain::limits::LIST_LIMIT_MAX,
                ..Default::default()
            })
            .await
            .map_err(|error| error.to_string())?;
        let queues = queue.stats(now).await.map_err(|error| error.to_string())?;
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let t = now.timestamp();
        for row in workers.iter().take(HISTORY_SERIES_MAX) {
            let sample = WorkerSample {
                t,
                heartbeat_age_ms: row
                    .last_heartbeat
                    .map(|at| (now - at).num_milliseconds().max(0)),
                rss_bytes: row.rss_bytes,
                processed: row.processed_total,
                failed: row.failed_total,
            };
            push(
                series
                    .workers
                    .entry(row.id.as_str().to_string())
                    .or_default(),
                sample,
            );
        }
        for stats in queues.iter().take(HISTORY_SERIES_MAX) {
            let sample = QueueSample {
                t,
                available: stats.available,
                scheduled: stats.scheduled,
                running: stats.running,
                completed: stats.completed,
                failed: stats.failed,
                oldest_wait_ms: stats
                    .oldest_available_at
                    .map(|at| (now - at).num_milliseconds().max(0)),
            };
            push(
                series
                    .queues
                    .entry(stats.name.as_str().to_string())
                    .or_default(),
                sample,
            );
        }
        series.taken = series.taken.wrapping_add(1);
        Ok(())
    }

    /// How many samples were taken so far.
    pub(crate) fn taken(&self) -> u64 {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .taken
    }

    /// The worker's samples, oldest first, as JSON for its charts.
    pub(crate) fn worker_json(&self, id: &str) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let samples: Vec<&WorkerSample> = series
            .workers
            .get(id)
            .map(|samples| samples.iter().collect())
            .unwrap_or_default();
        serde_json::to_string(&samples).unwrap_or_else(|_| "[]".into())
    }

    /// Every queue's samples, oldest first, as JSON (`{"queue": [sample, ...]}`).
    pub(crate) fn queues_json(&self) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        serde_json::to_string(&series.queues).unwrap_or_else(|_| "{}".into())
    }
}
