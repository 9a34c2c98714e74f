//! What the dashboard's charts draw: a history of each worker (heartbeat age, memory,
//! processed and failed jobs) and each queue (depth, finished jobs, wait), sampled in memory
//! every heartbeat interval by one task per process and folded into one point per minute
//! (the worst of what the minute saw for the gauges, the last for the counters), so a chart
//! of an hour or a day shows the trend, not every heartbeat's jitter. Kept in memory on
//! purpose: it is a picture for the operator looking now, not a record; Prometheus
//! (`/metrics`) keeps the long history.
//!
//! Bounded on every side: [`HISTORY_MINUTES_MAX`] minutes per series, [`HISTORY_SERIES_MAX`]
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
    HISTORY_IDLE_STOP, HISTORY_INTERVAL_MIN, HISTORY_MINUTES_MAX, HISTORY_QUEUES_CHARTED_MAX,
    HISTORY_SERIES_MAX,
};
use serde::Serialize;
use store::{QueueStats, Store, WorkerList, WorkerRow};
use tokio_util::sync::CancellationToken;

/// The start of `now`'s minute, in Unix seconds: the time of the point it is folded into.
fn minute(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(60) * 60
}

/// The larger of two optional gauges.
fn worst(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

/// A sample that the next one of the same minute is folded into.
trait Fold {
    fn t(&self) -> i64;
    /// Takes `later` (of the same minute) in.
    fn fold(&mut self, later: Self);
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkerSample {
    /// The minute's start, Unix seconds.
    pub(crate) t: i64,
    /// Samples folded into this minute.
    pub(crate) n: u32,
    pub(crate) heartbeat_age_ms: Option<i64>,
    pub(crate) rss_bytes: Option<i64>,
    pub(crate) processed: i64,
    pub(crate) failed: i64,
}

impl WorkerSample {
    fn of(row: &WorkerRow, now: DateTime<Utc>) -> WorkerSample {
        WorkerSample {
            t: minute(now),
            n: 1,
            heartbeat_age_ms: row
                .last_heartbeat
                .map(|at| (now - at).num_milliseconds().max(0)),
            rss_bytes: row.rss_bytes,
            processed: row.processed_total,
            failed: row.failed_total,
        }
    }
}

impl Fold for WorkerSample {
    fn t(&self) -> i64 {
        self.t
    }

    fn fold(&mut self, later: Self) {
        self.n = self.n.saturating_add(later.n);
        self.heartbeat_age_ms = worst(self.heartbeat_age_ms, later.heartbeat_age_ms);
        self.rss_bytes = worst(self.rss_bytes, later.rss_bytes);
        self.processed = later.processed;
        self.failed = later.failed;
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueueSample {
    /// The minute's start, Unix seconds.
    pub(crate) t: i64,
    /// Samples folded into this minute.
    pub(crate) n: u32,
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
            t: minute(now),
            n: 1,
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

impl Fold for QueueSample {
    fn t(&self) -> i64 {
        self.t
    }

    /// The minute keeps the sample with the deepest queue (its counts belong together),
    /// the longest wait, and the latest counters of finished jobs.
    fn fold(&mut self, later: Self) {
        let n = self.n.saturating_add(later.n);
        let oldest_wait_ms = worst(self.oldest_wait_ms, later.oldest_wait_ms);
        if later.depth() >= self.depth() {
            self.available = later.available;
            self.scheduled = later.scheduled;
            self.running = later.running;
        }
        self.completed = later.completed;
        self.failed = later.failed;
        self.oldest_wait_ms = oldest_wait_ms;
        self.n = n;
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
    /// How far back the page's charts go (seconds): what the first send holds. `None`: all.
    range: Option<i64>,
}

impl HistoryCursor {
    /// For a page whose charts show the last `seconds`.
    pub(crate) fn over(seconds: i64) -> Self {
        HistoryCursor {
            range: Some(seconds),
            ..Default::default()
        }
    }

    /// The oldest minute the next send holds: the page's range when it is sent in full,
    /// else the newest minute the page has (it may have filled up since).
    fn since(&self, reset: bool) -> i64 {
        match (reset, self.range) {
            (false, _) => self.newest,
            (true, Some(range)) => Utc::now().timestamp() - range,
            (true, None) => i64::MIN,
        }
    }
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

/// Folds `sample` into the series' last minute when it is the same one, else starts a new
/// minute (dropping the oldest past [`HISTORY_MINUTES_MAX`]).
fn push<T: Fold>(series: &mut VecDeque<T>, sample: T) {
    if let Some(last) = series.back_mut()
        && last.t() == sample.t()
    {
        last.fold(sample);
        return;
    }
    if series.len() >= HISTORY_MINUTES_MAX {
        series.pop_front();
    }
    series.push_back(sample);
}

/// Carries `old`'s series over for every name in `samples` (in order, up to `room`) with the
/// new sample appended; names absent from `samples` are dropped.
fn carry<T: Fold>(
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

    /// The worker's minutes from `since` (Unix seconds) on, oldest first, as JSON for its
    /// charts (safe in a `<script>`).
    pub(crate) fn worker_json(&self, id: &str, since: i64) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let samples: Vec<&WorkerSample> = series
            .workers
            .get(id)
            .map(|samples| samples.iter().filter(|sample| sample.t >= since).collect())
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

    /// The charted queues' minutes from `since` on, as JSON (`{"queue": [sample, ...]}`).
    fn queues_since(series: &Series, names: &[String], since: i64) -> String {
        let data: HashMap<&str, Vec<&QueueSample>> = names
            .iter()
            .filter_map(|name| {
                let samples = series.queues.get(name)?;
                Some((
                    name.as_str(),
                    samples.iter().filter(|sample| sample.t >= since).collect(),
                ))
            })
            .collect();
        script_safe(&data)
    }

    /// The charted queues' minutes from `since` on, oldest first, as JSON
    /// (`{"queue": [sample, ...]}`).
    pub(crate) fn queues_json(&self, since: i64) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let names = Self::charted(&series.queues);
        Self::queues_since(&series, &names, since)
    }

    /// The next `history` event for a worker's page: everything the first time, then the
    /// minutes it has not had, and again the newest it had (still filling up).
    pub(crate) fn worker_update(&self, id: &str, cursor: &mut HistoryCursor) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let samples = series.workers.get(id);
        let reset = cursor.names.is_none();
        let since = cursor.since(reset);
        let data: Vec<&WorkerSample> = samples
            .into_iter()
            .flatten()
            .filter(|sample| sample.t >= since)
            .collect();
        cursor.names = Some(vec![id.to_string()]);
        cursor.newest = samples
            .and_then(|samples| samples.back())
            .map_or(cursor.newest, |sample| sample.t);
        script_safe(&Update { reset, data })
    }

    /// The next `history` event for the queues page: everything when the charted queues
    /// changed (or the first time), else the minutes it has not had and the newest again.
    pub(crate) fn queues_update(&self, cursor: &mut HistoryCursor) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let names = Self::charted(&series.queues);
        let reset = cursor.names.as_ref() != Some(&names);
        let since = cursor.since(reset);
        let data = Self::queues_since(&series, &names, since);
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
            n: 1,
            heartbeat_age_ms: Some(10),
            rss_bytes: None,
            processed: t,
            failed: 0,
        }
    }

    fn queue(t: i64, depth: i64) -> QueueSample {
        QueueSample {
            t,
            n: 1,
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
        assert_eq!(history.worker_json("b", i64::MIN), "[]");
        assert!(history.worker_json("a", i64::MIN).contains("\"t\":1"));
        assert!(!history.queues_json(i64::MIN).contains("q2"));
        assert_eq!(history.taken(), 2);

        // Minutes per series and series in all are capped, queues first.
        for t in 0..(HISTORY_MINUTES_MAX as i64 + 10) {
            history.record(named(&["a"], || worker(t * 60)), []);
        }
        let samples: Vec<serde_json::Value> =
            serde_json::from_str(&history.worker_json("a", i64::MIN)).unwrap();
        assert_eq!(samples.len(), HISTORY_MINUTES_MAX);
        let recent: Vec<serde_json::Value> =
            serde_json::from_str(&history.worker_json("a", (HISTORY_MINUTES_MAX as i64) * 60))
                .unwrap();
        assert_eq!(recent.len(), 10, "only the minutes asked for");
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
        let full: serde_json::Value = serde_json::from_str(&history.queues_json(i64::MIN)).unwrap();
        let charted = full.as_object().unwrap();
        assert_eq!(charted.len(), HISTORY_QUEUES_CHARTED_MAX);
        assert!(!charted.contains_key("q00"), "the deepest: {full}");

        let mut cursor = HistoryCursor::default();
        let first: serde_json::Value =
            serde_json::from_str(&history.queues_update(&mut cursor)).unwrap();
        assert_eq!(first["reset"], true);
        record(60);
        let next: serde_json::Value =
            serde_json::from_str(&history.queues_update(&mut cursor)).unwrap();
        assert_eq!(next["reset"], false);
        let samples = next["data"]["q14"].as_array().unwrap();
        // The minute the page had (it may have filled up since), then the new one.
        assert_eq!(samples.len(), 2, "{next}");
        assert_eq!(samples[1]["t"], 60);

        let mut cursor = HistoryCursor::default();
        assert!(
            history
                .worker_update("w", &mut cursor)
                .contains("\"reset\":true")
        );

        // A page showing the last hour gets the last hour only (these minutes are from 1970).
        let mut hour = HistoryCursor::over(3_600);
        let first: serde_json::Value =
            serde_json::from_str(&history.queues_update(&mut hour)).unwrap();
        assert_eq!(first["reset"], true);
        assert_eq!(first["data"]["q14"], serde_json::json!([]), "{first}");
    }

    #[test]
    fn samples_of_one_minute_fold_into_one_point() {
        let history = History::default();
        let at = |seconds: i64| DateTime::from_timestamp(1_800_000_020 + seconds, 0).unwrap();
        let sample = |seconds: i64, age: i64, rss: i64, processed: i64| WorkerSample {
            heartbeat_age_ms: Some(age),
            rss_bytes: Some(rss),
            processed,
            ..worker(minute(at(seconds)))
        };
        // 1_800_000_020 is 20 s into a minute: 0..40 s later is that minute, 40 s the next.
        for (seconds, age, rss, processed) in [
            (0, 900, 10, 1),
            (5, 4_000, 30, 2),
            (10, 100, 20, 3),
            (40, 50, 5, 9),
        ] {
            history.record(named(&["a"], || sample(seconds, age, rss, processed)), []);
        }
        let minutes: Vec<serde_json::Value> =
            serde_json::from_str(&history.worker_json("a", i64::MIN)).unwrap();
        assert_eq!(minutes.len(), 2, "{minutes:?}");
        // The worst heartbeat age and memory of the minute, the last counters.
        assert_eq!(minutes[0]["n"], 3);
        assert_eq!(minutes[0]["heartbeat_age_ms"], 4_000);
        assert_eq!(minutes[0]["rss_bytes"], 30);
        assert_eq!(minutes[0]["processed"], 3);
        assert_eq!(minutes[1]["n"], 1);
        assert_eq!(minutes[1]["t"].as_i64().unwrap() % 60, 0);

        // A queue's minute keeps its deepest sample's counts and its longest wait.
        let mut deep = queue(0, 7);
        deep.oldest_wait_ms = Some(10);
        let mut first = queue(0, 2);
        first.oldest_wait_ms = Some(500);
        first.fold(deep);
        first.fold(queue(0, 1));
        assert_eq!(
            (first.available, first.oldest_wait_ms, first.n),
            (7, Some(500), 3)
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
