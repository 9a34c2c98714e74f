//! `coinsensei bench queue`: measures a queue backend the way a user sizes a deployment, on a
//! throwaway database (Postgres: a temporary database on the server; SQLite: a temporary
//! file) or key prefix (Redis), removed afterwards.
//!
//! - bulk enqueue: N no-op jobs in batches of 1,000;
//! - single enqueue: one job per call, from C concurrent callers;
//! - processed: a backlog of N jobs drained by runners that claim up to 500 jobs at once
//!   (Redis: one batch of `concurrency`), run `concurrency` at a time, and complete in batches;
//! - latency: enqueue-to-start at a steady 200 jobs/s, C idle runners woken by the queue;
//! - recovery: jobs held by owners that die (stop extending, as after SIGKILL), until another
//!   runner starts them, with the default lease and the maintenance rescue.

#![allow(
    clippy::float_arithmetic,
    reason = "rates and percentiles of a benchmark; no money here"
)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use chrono::Utc;
use domain::{Name, RetryPolicy};
use queue::{
    Backend, Handler, Maintenance, MaintenanceConfig, Outcome, Registry, Runner, RunnerConfig,
};
use serde_json::json;
use store::{JobInsert, JobRow};
use tokio::sync::Mutex;

use crate::config::{QueueSettings, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    Postgres,
    Sqlite,
    Redis,
}

pub struct BenchQueue {
    pub backend: BenchBackend,
    pub jobs: u32,
    pub concurrency: u32,
    pub json: bool,
    /// Postgres server to create the throwaway database on.
    pub postgres_url: Option<String>,
    pub recovery_trials: u32,
}

const BATCH: usize = 1_000;
/// Jobs a fetcher claims at once in the throughput run (graphile-worker's local queue size
/// in its benchmark).
const PREFETCH: usize = 500;
const STEADY_RATE: u32 = 200;
const STEADY_SECONDS: u32 = 5;

fn noop(queue: &Name, args: serde_json::Value) -> JobInsert {
    let now = Utc::now();
    JobInsert {
        queue: queue.clone(),
        kind: Name::new("noop").expect("valid"),
        args,
        priority: 0,
        run_at: now,
        retry: Some(RetryPolicy::default()),
        unique_key: None,
        now,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Records enqueue-to-start latency from the enqueue time carried in the job's args.
struct LatencyProbe(Mutex<Vec<f64>>);

#[async_trait]
impl Handler for LatencyProbe {
    async fn run(&self, job: &JobRow) -> Outcome {
        if let Some(sent) = job.args.get("sent_us").and_then(serde_json::Value::as_i64) {
            let now = Utc::now().timestamp_micros();
            self.0.lock().await.push((now - sent) as f64 / 1000.0);
        }
        Outcome::Done
    }
}

/// A throwaway place to bench in, removed on `cleanup`.
enum Scratch {
    Postgres { admin_url: String, name: String },
    Sqlite { dir: std::path::PathBuf },
    Redis(queue::RedisBackend),
}

async fn open(
    request: &BenchQueue,
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn Backend>, Scratch, String)> {
    let suffix = format!("{:x}", rand_u64());
    match request.backend {
        BenchBackend::Postgres => {
            let admin_url = request
                .postgres_url
                .clone()
                .or_else(|| {
                    settings
                        .database_url
                        .starts_with("postgres")
                        .then(|| settings.database_url.clone())
                })
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let name = format!("coinsensei_bench_{suffix}");
            let admin = store::Store::connect(&admin_url, &store::StoreOptions::default()).await?;
            admin.database_create(&name).await.with_context(|| {
                format!(
                    "creating a throwaway database on {} (the bench needs the right to)",
                    store::redact_url(&admin_url)
                )
            })?;
            admin.close().await;
            let url = replace_database(&admin_url, &name)?;
            let options = store::StoreOptions {
                max_connections: 16,
                ..store::StoreOptions::default()
            };
            let store = store::Store::connect(&url, &options).await?;
            store.migrate().await?;
            let durability = format!(
                "synchronous_commit={}",
                store.setting("synchronous_commit").await?
            );
            Ok((
                Arc::new(queue::SqlBackend::new(store)),
                Scratch::Postgres { admin_url, name },
                durability,
            ))
        }
        BenchBackend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("coinsensei-bench-{suffix}"));
            let url = format!("sqlite://{}", dir.join("bench.db").display());
            let store = store::Store::connect(&url, &store::StoreOptions::default()).await?;
            store.migrate().await?;
            Ok((
                Arc::new(queue::SqlBackend::new(store)),
                Scratch::Sqlite { dir },
                "journal=wal synchronous=full".into(),
            ))
        }
        BenchBackend::Redis => {
            let url = match &settings.queue {
                QueueSettings::Redis { url, .. } => url.clone(),
                QueueSettings::Database => "redis://127.0.0.1:6379/".into(),
            };
            let backend =
                queue::RedisBackend::connect(&url, &format!("cs-bench-{suffix}:")).await?;
            let durability = backend.durability().await?;
            Ok((
                Arc::new(backend.clone()),
                Scratch::Redis(backend),
                durability,
            ))
        }
    }
}

fn replace_database(url: &str, database: &str) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url).context("postgres url")?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

async fn cleanup(scratch: Scratch) {
    match scratch {
        Scratch::Postgres { admin_url, name } => {
            if let Ok(admin) =
                store::Store::connect(&admin_url, &store::StoreOptions::default()).await
            {
                let _ = admin.database_drop(&name).await;
                admin.close().await;
            }
        }
        Scratch::Sqlite { dir } => {
            let _ = std::fs::remove_dir_all(dir);
        }
        Scratch::Redis(backend) => {
            let _ = backend.delete_everything().await;
        }
    }
}

fn rand_u64() -> u64 {
    rand::random()
}

pub async fn queue(settings: Settings, request: BenchQueue) -> anyhow::Result<ExitCode> {
    if request.jobs == 0 || request.concurrency == 0 {
        bail!("--jobs and --concurrency must be at least 1");
    }
    let (backend, scratch, durability) = open(&request, &settings).await?;
    let result = run(&request, backend, &durability).await;
    cleanup(scratch).await;
    let report = result?;
    if request.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn progress(json: bool, message: &str) {
    if !json {
        eprintln!("{message}");
    } else {
        tracing::info!("{message}");
    }
}

async fn run(
    request: &BenchQueue,
    backend: Arc<dyn Backend>,
    durability: &str,
) -> anyhow::Result<serde_json::Value> {
    let jobs = request.jobs as usize;
    let concurrency = request.concurrency as usize;

    // Bulk enqueue.
    let bulk_queue = Name::new("bench.bulk")?;
    let started = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let size = left.min(BATCH);
        let batch: Vec<JobInsert> = (0..size).map(|_| noop(&bulk_queue, json!({}))).collect();
        backend.enqueue_many(&batch).await?;
        left -= size;
    }
    let enqueue_bulk_per_s = jobs as f64 / started.elapsed().as_secs_f64();
    progress(
        request.json,
        &format!("bulk enqueue: {enqueue_bulk_per_s:.0} jobs/s"),
    );

    // Processed: drain the bulk backlog. Fetchers claim up to PREFETCH jobs at once (as
    // graphile-worker's local queue does) and run at most `concurrency` handlers at a time;
    // each claims its next batch while the previous one runs and completes, so round trips
    // overlap. SQL backends do best with one fetcher (a claim is one statement whatever its
    // size); Redis, single-threaded but cheap per script, with a few in parallel.
    let fetchers: usize = match backend.name() {
        "redis" => concurrency.clamp(1, 4),
        _ => 1,
    };
    let running_per_fetcher = concurrency.div_ceil(fetchers).max(1);
    // Redis does best with small scripts: a long claim script blocks its single thread.
    let prefetch = if backend.name() == "redis" {
        running_per_fetcher
    } else {
        PREFETCH.max(running_per_fetcher)
    };
    let per_fetch = u32::try_from(prefetch).unwrap_or(u32::MAX);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..fetchers {
        let runner = Runner::new(
            Arc::clone(&backend),
            Registry::default(),
            RunnerConfig {
                queue: bulk_queue.clone(),
                owner: format!("bench-{n}"),
                lease: Duration::from_secs(60),
            },
        );
        tasks.spawn(async move {
            let mut done = 0usize;
            let mut current = runner.claim_batch(per_fetch).await?;
            while !current.is_empty() {
                let (report, next) = tokio::join!(
                    runner.finish_batch(current, running_per_fetcher),
                    runner.claim_batch(per_fetch)
                );
                done += report?.done;
                current = next?;
            }
            Ok::<usize, queue::QueueError>(done)
        });
    }
    let mut processed = 0;
    while let Some(result) = tasks.join_next().await {
        processed += result??;
    }
    let processed_per_s = processed as f64 / started.elapsed().as_secs_f64();
    if processed != jobs {
        bail!("processed {processed} of {jobs} jobs");
    }
    progress(
        request.json,
        &format!("processed: {processed_per_s:.0} jobs/s"),
    );

    // Single enqueue from concurrent callers.
    let single_queue = Name::new("bench.single")?;
    let single_jobs = jobs.min(20_000);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..concurrency {
        let backend = Arc::clone(&backend);
        let queue = single_queue.clone();
        let count = single_jobs / concurrency + usize::from(n < single_jobs % concurrency);
        tasks.spawn(async move {
            for _ in 0..count {
                backend.enqueue(&noop(&queue, json!({}))).await?;
            }
            Ok::<(), queue::QueueError>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let enqueue_single_per_s = single_jobs as f64 / started.elapsed().as_secs_f64();
    progress(
        request.json,
        &format!("single enqueue: {enqueue_single_per_s:.0} jobs/s"),
    );

    let (latency_p50_ms, latency_p99_ms) = steady_latency(&backend, concurrency).await?;
    progress(
        request.json,
        &format!(
            "latency at {STEADY_RATE} jobs/s: p50 {latency_p50_ms:.2} ms, p99 {latency_p99_ms:.2} ms"
        ),
    );
    let (recovery_p50_s, recovery_p99_s, lost) =
        recovery(&backend, request.recovery_trials).await?;
    progress(
        request.json,
        &format!("recovery: p50 {recovery_p50_s:.2} s, p99 {recovery_p99_s:.2} s, lost {lost}"),
    );

    Ok(json!({
        "backend": backend.name(),
        "jobs": jobs,
        "concurrency": concurrency,
        "durability": durability,
        "enqueue_bulk_per_s": enqueue_bulk_per_s.round(),
        "enqueue_single_per_s": enqueue_single_per_s.round(),
        "processed_per_s": processed_per_s.round(),
        "latency_p50_ms": (latency_p50_ms * 100.0).round() / 100.0,
        "latency_p99_ms": (latency_p99_ms * 100.0).round() / 100.0,
        "recovery_p50_s": (recovery_p50_s * 100.0).round() / 100.0,
        "recovery_p99_s": (recovery_p99_s * 100.0).round() / 100.0,
        "recovery_trials": request.recovery_trials,
        "jobs_lost": lost,
    }))
}

/// C runners wait on the queue's wake-ups (polling every second otherwise, as workers do)
/// while jobs arrive at a steady rate; each job records when it started.
async fn steady_latency(
    backend: &Arc<dyn Backend>,
    concurrency: usize,
) -> anyhow::Result<(f64, f64)> {
    let queue = Name::new("bench.latency")?;
    let probe = Arc::new(LatencyProbe(Mutex::new(Vec::new())));
    let mut registry = Registry::default();
    registry.register("probe", Arc::clone(&probe) as Arc<dyn Handler>);
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut wakeups = backend.wakeups().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let forwarder = {
        let wake = Arc::clone(&wake);
        tokio::spawn(async move {
            while wakeups.next().await.is_some() {
                // One job, one runner: waking them all would make them race for it.
                wake.notify_one();
            }
        })
    };
    let mut runners = tokio::task::JoinSet::new();
    for n in 0..concurrency {
        let runner = Runner::new(
            Arc::clone(backend),
            registry.clone(),
            RunnerConfig {
                queue: queue.clone(),
                owner: format!("latency-{n}"),
                lease: Duration::from_secs(60),
            },
        );
        let (wake, stop) = (Arc::clone(&wake), Arc::clone(&stop));
        runners.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let notified = wake.notified();
                match runner.run_one().await {
                    Ok(queue::Ran::Idle) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "latency runner");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let total = STEADY_RATE * STEADY_SECONDS;
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / STEADY_RATE);
    for _ in 0..total {
        ticker.tick().await;
        let mut job = noop(&queue, json!({"sent_us": Utc::now().timestamp_micros()}));
        job.kind = Name::new("probe")?;
        backend.enqueue(&job).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe.0.lock().await.len() < total as usize {
        if Instant::now() > deadline {
            bail!("latency jobs did not all start within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    wake.notify_waiters();
    runners.abort_all();
    forwarder.abort();
    let mut samples = probe.0.lock().await.clone();
    samples.sort_by(f64::total_cmp);
    Ok((percentile(&samples, 50.0), percentile(&samples, 99.0)))
}

/// Trials at once: each job is claimed by an owner that then dies (never extends its lease,
/// never settles), as after SIGKILL. A live runner and the maintenance loop run with the
/// defaults; recovery is the time from the death to the job starting elsewhere.
async fn recovery(backend: &Arc<dyn Backend>, trials: u32) -> anyhow::Result<(f64, f64, usize)> {
    let queue = Name::new("bench.recovery")?;
    let lease = domain::limits::JOB_LEASE_DEFAULT;
    let mut deaths = std::collections::HashMap::new();
    for n in 0..trials {
        let id = backend
            .enqueue(&noop(&queue, json!({"trial": n})))
            .await?
            .id;
        let now = Utc::now();
        let claimed = backend
            .claim(&store::JobClaim {
                queue: queue.clone(),
                owner: format!("doomed-{n}"),
                limit: 1,
                lease_until: now + lease,
                now,
            })
            .await?;
        if claimed.first().map(|job| job.id) != Some(id) {
            bail!("recovery trial {n} could not claim its job");
        }
        deaths.insert(id, Instant::now());
        // Stagger the deaths across the rescue interval, as real crashes are.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    let maintenance = Maintenance::new(Arc::clone(backend), MaintenanceConfig::default());
    let maintenance_task = {
        let cancel = cancel.clone();
        tokio::spawn(async move { maintenance.run(cancel).await })
    };
    let started_at: Arc<Mutex<std::collections::HashMap<i64, Instant>>> = Arc::default();
    struct Recorder(Arc<Mutex<std::collections::HashMap<i64, Instant>>>);
    #[async_trait]
    impl Handler for Recorder {
        async fn run(&self, job: &JobRow) -> Outcome {
            self.0
                .lock()
                .await
                .entry(job.id)
                .or_insert_with(Instant::now);
            Outcome::Done
        }
    }
    let mut registry = Registry::default();
    registry.register("noop", Arc::new(Recorder(Arc::clone(&started_at))));
    let runner = Runner::new(
        Arc::clone(backend),
        registry,
        RunnerConfig {
            queue: queue.clone(),
            owner: "survivor".into(),
            lease,
        },
    );
    let deadline = Instant::now() + lease * 3;
    while started_at.lock().await.len() < deaths.len() && Instant::now() < deadline {
        if runner.run_one().await? == queue::Ran::Idle {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    cancel.cancel();
    let _ = maintenance_task.await;
    let started_at = started_at.lock().await;
    let mut samples: Vec<f64> = deaths
        .iter()
        .filter_map(|(id, died)| started_at.get(id).map(|at| (*at - *died).as_secs_f64()))
        .collect();
    let lost = deaths.len() - samples.len();
    samples.sort_by(f64::total_cmp);
    Ok((percentile(&samples, 50.0), percentile(&samples, 99.0), lost))
}
