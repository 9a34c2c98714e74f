//! What the dashboard's charts draw: a short history of each worker (heartbeat age, memory,
//! processed and failed jobs) and each queue (depth, finished jobs, wait), sampled in memory
//! every heartbeat interval by one task per process. Kept in memory on purpose: it is a
//! picture of the last half hour for the operator looking now, not a record; Prometheus
//! (`/metrics`) keeps the long history.
//!
//! Bounded on every side: [`HISTORY_SAMPLES_MAX`] samples per series, [`HISTORY_SERIES_MAX`]
//! series in all, and a worker or queue that a sample no longer finds is dropped with its
//! series. The sampler is started by the first page with charts, stops with the server, and
//! stops (forgetting the history) once no page with charts has looked for
//! [`HISTORY_IDLE_STOP`]. A page gets the history of at most [`HISTORY_QUEUES_CHARTED_MAX`]
//! queues, in full once, then only the samples it has not seen.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::limits::{
    HISTORY_IDLE_STOP, HISTORY_INTERVAL_MIN, HISTORY_QUEUES_CHARTED_MAX, HISTORY_SAMPLES_MAX,
    HISTORY_SERIES_MAX,
};
use serde::Serialize;
use store::{QueueStats, Store, WorkerList, WorkerRow};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkerSample {
    /// Unix seconds.
    pub(crate) t: i64,
    pub(crate) heartbeat_age_ms: Option<i64>,
    pub(crate) rss_bytes: Option<i64>,
    pub(crate) processed: i64,
    pub(crate) failed: i64,
}

impl WorkerSample {
    fn of(row: &WorkerRow, now: DateTime<Utc>) -> WorkerSample {
        WorkerSample {
            t: now.timestamp(),
            heartbeat_age_ms: row
                .last_heartbeat
                .map(|at| (now - at).num_milliseconds().max(0)),
            rss_bytes: row.rss_bytes,
            processed: row.processed_total,
            failed: row.failed_total,
        }
    }
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

impl QueueSample {
    fn of(stats: &QueueStats, now: DateTime<Utc>) -> QueueSample {
        QueueSample {
            t: now.timestamp(),
            available: stats.available,
            scheduled: stats.scheduled,
            running: stats.running,
            completed: stats.completed,
            failed: stats.failed,
            oldest_wait_ms: stats
                .oldest_available_at
                .map(|at| (now - at).num_milliseconds().max(0)),
        }
    }

    fn depth(&self) -> i64 {
        self.available + self.scheduled + self.running
    }
}

#[derive(Default)]
struct Series {
    workers: HashMap<String, VecDeque<WorkerSample>>,
    queues: HashMap<String, VecDeque<QueueSample>>,
    /// Samples taken so far: the live streams send new history when it moves.
    taken: u64,
}

/// The process's chart history.
pub(crate) struct History {
    series: Mutex<Series>,
    sampler: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// When a page with charts last looked.
    looked_at: Mutex<Instant>,
}

impl Default for History {
    fn default() -> Self {
        History {
            series: Mutex::default(),
            sampler: Mutex::default(),
            looked_at: Mutex::new(Instant::now()),
        }
    }
}

/// What one page was last sent of the history, so the next send holds only what is new.
#[derive(Debug, Default)]
pub(crate) struct HistoryCursor {
    /// The series the page draws (worker id, or queue names); `None` before the first send.
    names: Option<Vec<String>>,
    /// The newest sample's time the page has.
    newest: i64,
}

/// A `history` event: the whole history (`reset`) or the samples after the last event.
#[derive(Serialize)]
struct Update<T: Serialize> {
    reset: bool,
    data: T,
}

/// JSON that is safe inside a `<script>` element whatever the names it holds: `<`, `>` and
/// `&` (only ever inside JSON strings) become `\u003c`, `\u003e`, `\u0026`.
fn script_safe(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn push<T>(series: &mut VecDeque<T>, sample: T) {
    if series.len() >= HISTORY_SAMPLES_MAX {
        series.pop_front();
    }
    series.push_back(sample);
}

/// Carries `old`'s series over for every name in `samples` (in order, up to `room`) with the
/// new sample appended; names absent from `samples` are dropped.
fn carry<T>(
    old: &mut HashMap<String, VecDeque<T>>,
    samples: impl IntoIterator<Item = (String, T)>,
    room: usize,
) -> HashMap<String, VecDeque<T>> {
    let mut new = HashMap::new();
    for (name, sample) in samples.into_iter().take(room) {
        let mut series = old.remove(&name).unwrap_or_default();
        push(&mut series, sample);
        new.insert(name, series);
    }
    new
}

impl History {
    /// Notes that a page with charts looks, and starts the sampler unless it runs already.
    /// It stops when `shutdown` fires, or after [`HISTORY_IDLE_STOP`] without a look.
    pub(crate) fn ensure_running(
        self: &Arc<Self>,
        store: Store,
        queue: Arc<dyn queue::Backend>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        *self
            .looked_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let mut sampler = self.sampler.lock().unwrap_or_else(PoisonError::into_inner);
        if shutdown.is_cancelled() || sampler.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let history = Arc::clone(self);
        *sampler = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(HISTORY_INTERVAL_MIN));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if history.idle() {
                    tracing::debug!("dashboard history: no page looked for a while; sampler stops");
                    break;
                }
                if let Err(error) = history.sample(&store, queue.as_ref()).await {
                    tracing::debug!(%error, "dashboard history: could not sample");
                }
            }
            history.forget();
        }));
    }

    fn idle(&self) -> bool {
        self.looked_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
            > HISTORY_IDLE_STOP
    }

    /// Drops every series (nobody looks at them any more).
    fn forget(&self) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series.workers = HashMap::new();
        series.queues = HashMap::new();
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
        self.record(
            workers
                .iter()
                .map(|row| (row.id.as_str().to_string(), WorkerSample::of(row, now))),
            queues
                .iter()
                .map(|stats| (stats.name.as_str().to_string(), QueueSample::of(stats, now))),
        );
        Ok(())
    }

    /// Adds one sample of every worker and queue there is now; the ones not there any more
    /// are dropped. Queues first, then workers, [`HISTORY_SERIES_MAX`] in all.
    fn record(
        &self,
        workers: impl IntoIterator<Item = (String, WorkerSample)>,
        queues: impl IntoIterator<Item = (String, QueueSample)>,
    ) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let queues = carry(&mut series.queues, queues, HISTORY_SERIES_MAX);
        let workers = carry(
            &mut series.workers,
            workers,
            HISTORY_SERIES_MAX - queues.len(),
        );
        series.queues = queues;
        series.workers = workers;
        series.taken = series.taken.wrapping_add(1);
    }

    /// How many samples were taken so far.
    pub(crate) fn taken(&self) -> u64 {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .taken
    }

    /// The worker's samples, oldest first, as JSON for its charts (safe in a `<script>`).
    pub(crate) fn worker_json(&self, id: &str) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let samples: Vec<&WorkerSample> = series
            .workers
            .get(id)
            .map(|samples| samples.iter().collect())
            .unwrap_or_default();
        script_safe(&samples)
    }

    /// The queues a page charts: the [`HISTORY_QUEUES_CHARTED_MAX`] deepest now.
    fn charted(queues: &HashMap<String, VecDeque<QueueSample>>) -> Vec<String> {
        let mut names: Vec<(&String, i64)> = queues
            .iter()
            .map(|(name, samples)| (name, samples.back().map_or(0, QueueSample::depth)))
            .collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let mut names: Vec<String> = names
            .into_iter()
            .take(HISTORY_QUEUES_CHARTED_MAX)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// The charted queues' samples newer than `after`, as JSON (`{"queue": [sample, ...]}`).
    fn queues_after(series: &Series, names: &[String], after: i64) -> String {
        let data: HashMap<&str, Vec<&QueueSample>> = names
            .iter()
            .filter_map(|name| {
                let samples = series.queues.get(name)?;
                Some((
                    name.as_str(),
                    samples.iter().filter(|sample| sample.t > after).collect(),
                ))
            })
            .collect();
        script_safe(&data)
    }

    /// The charted queues' samples, oldest first, as JSON (`{"queue": [sample, ...]}`).
    pub(crate) fn queues_json(&self) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let names = Self::charted(&series.queues);
        Self::queues_after(&series, &names, i64::MIN)
    }

    /// The next `history` event for a worker's page: everything the first time, then the
    /// samples it has not had.
    pub(crate) fn worker_update(&self, id: &str, cursor: &mut HistoryCursor) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let samples = series.workers.get(id);
        let reset = cursor.names.is_none();
        let after = if reset { i64::MIN } else { cursor.newest };
        let data: Vec<&WorkerSample> = samples
            .into_iter()
            .flatten()
            .filter(|sample| sample.t > after)
            .collect();
        cursor.names = Some(vec![id.to_string()]);
        cursor.newest = samples
            .and_then(|samples| samples.back())
            .map_or(cursor.newest, |sample| sample.t);
        script_safe(&Update { reset, data })
    }

    /// The next `history` event for the queues page: everything when the charted queues
    /// changed (or the first time), else the samples it has not had.
    pub(crate) fn queues_update(&self, cursor: &mut HistoryCursor) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let names = Self::charted(&series.queues);
        let reset = cursor.names.as_ref() != Some(&names);
        let after = if reset { i64::MIN } else { cursor.newest };
        let data = Self::queues_after(&series, &names, after);
        cursor.newest = series
            .queues
            .values()
            .filter_map(|samples| samples.back())
            .map(|sample| sample.t)
            .max()
            .unwrap_or(cursor.newest);
        cursor.names = Some(names);
        format!("{{\"reset\":{reset},\"data\":{data}}}")
    }

    #[cfg(test)]
    fn series_count(&self) -> (usize, usize) {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        (series.workers.len(), series.queues.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(t: i64) -> WorkerSample {
        WorkerSample {
            t,
            heartbeat_age_ms: Some(10),
            rss_bytes: None,
            processed: t,
            failed: 0,
        }
    }

    fn queue(t: i64, depth: i64) -> QueueSample {
        QueueSample {
            t,
            available: depth,
            scheduled: 0,
            running: 0,
            completed: 0,
            failed: 0,
            oldest_wait_ms: None,
        }
    }

    fn named<T>(names: &[&str], sample: impl Fn() -> T) -> Vec<(String, T)> {
        names
            .iter()
            .map(|name| (name.to_string(), sample()))
            .collect()
    }

    #[test]
    fn gone_workers_and_queues_are_dropped_and_series_are_bounded() {
        let history = History::default();
        history.record(
            named(&["a", "b"], || worker(1)),
            named(&["q1", "q2"], || queue(1, 1)),
        );
        assert_eq!(history.series_count(), (2, 2));
        // `b` and `q2` are gone: their series go with them; `a` keeps its history.
        history.record(named(&["a"], || worker(2)), named(&["q1"], || queue(2, 1)));
        assert_eq!(history.series_count(), (1, 1));
        assert_eq!(history.worker_json("b"), "[]");
        assert!(history.worker_json("a").contains("\"t\":1"));
        assert!(!history.queues_json().contains("q2"));
        assert_eq!(history.taken(), 2);

        // Samples per series and series in all are capped, queues first.
        for t in 0..(HISTORY_SAMPLES_MAX as i64 + 10) {
            history.record(named(&["a"], || worker(t)), []);
        }
        let samples: Vec<serde_json::Value> =
            serde_json::from_str(&history.worker_json("a")).unwrap();
        assert_eq!(samples.len(), HISTORY_SAMPLES_MAX);
        let many: Vec<String> = (0..HISTORY_SERIES_MAX).map(|n| format!("w{n}")).collect();
        history.record(
            many.iter().map(|name| (name.clone(), worker(1))),
            named(&["q1", "q2", "q3"], || queue(1, 1)),
        );
        assert_eq!(history.series_count(), (HISTORY_SERIES_MAX - 3, 3));
    }

    #[test]
    fn pages_get_the_deepest_queues_then_only_new_samples() {
        let history = History::default();
        let names: Vec<String> = (0..HISTORY_QUEUES_CHARTED_MAX + 5)
            .map(|n| format!("q{n:02}"))
            .collect();
        let record = |t: i64| {
            history.record(
                [],
                names
                    .iter()
                    .enumerate()
                    .map(|(depth, name)| (name.clone(), queue(t, depth as i64))),
            );
        };
        record(1);
        let full: serde_json::Value = serde_json::from_str(&history.queues_json()).unwrap();
        let charted = full.as_object().unwrap();
        assert_eq!(charted.len(), HISTORY_QUEUES_CHARTED_MAX);
        assert!(!charted.contains_key("q00"), "the deepest: {full}");

        let mut cursor = HistoryCursor::default();
        let first: serde_json::Value =
            serde_json::from_str(&history.queues_update(&mut cursor)).unwrap();
        assert_eq!(first["reset"], true);
        record(2);
        let next: serde_json::Value =
            serde_json::from_str(&history.queues_update(&mut cursor)).unwrap();
        assert_eq!(next["reset"], false);
        let samples = next["data"]["q14"].as_array().unwrap();
        assert_eq!(samples.len(), 1, "{next}");
        assert_eq!(samples[0]["t"], 2);

        let mut cursor = HistoryCursor::default();
        assert!(
            history
                .worker_update("w", &mut cursor)
                .contains("\"reset\":true")
        );
    }

    #[test]
    fn history_json_is_safe_in_a_script_element() {
        let json = script_safe(&serde_json::json!({"</script><b>&": 1}));
        assert_eq!(json, r#"{"\u003c/script\u003e\u003cb\u003e\u0026":1}"#);
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["</script><b>&"], 1);
    }

    #[tokio::test]
    async fn the_sampler_stops_with_the_server() {
        let db = testkit::TestDb::sqlite();
        let store = db.store().await;
        let queue: Arc<dyn queue::Backend> = Arc::new(queue::SqlBackend::new(store.clone()));
        let history = Arc::new(History::default());
        let shutdown = CancellationToken::new();
        history.ensure_running(store, queue, HISTORY_INTERVAL_MIN, shutdown.clone());
        shutdown.cancel();
        let task = history.sampler.lock().unwrap().take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the sampler ended")
            .unwrap();
    }
}
