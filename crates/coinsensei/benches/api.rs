//! The admin API's figures, against a real `coinsensei serve` (release build) over loopback:
//!
//! - load: `GET /api/admin/workers` with 1,000 registered workers (a page of 100, and all
//!   1,000 in one page), and `POST .../start|stop` alternating over those workers, each at a
//!   fixed arrival rate (open loop: latency counts from when a request was due, so a slow
//!   server cannot hide its queueing); p50/p99/max and the number of errors (any non-2xx or
//!   transport failure);
//! - event propagation: `POST .../stop` sent → the `worker` event on a subscribed
//!   `/api/admin/events` stream.
//!
//! Run with `cargo xtask bench api` (or `cargo bench -p coinsensei --bench api`). Set
//! `COINSENSEI_BENCH_RATE` (requests/s, default 1000) and `COINSENSEI_BENCH_SECONDS` (default
//! 10) to change the load, `COINSENSEI_BENCH_ONLY=load|events` to run one part.

#![allow(
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    reason = "reports milliseconds and rates; no money here"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use domain::{Chain, Role, WorkerId, WorkerKind};
use store::{Store, WorkerRegister};
use testkit::{Backend, TestDb};

const WORKERS: usize = 1_000;
/// Requests allowed in flight at once; beyond it a due request counts as an error.
const IN_FLIGHT_MAX: u64 = 512;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

async fn register_workers(store: &Store) {
    let chains = [Chain::Tron, Chain::Ethereum, Chain::Bitcoin];
    let kinds = [WorkerKind::Withdrawal, WorkerKind::Deposit];
    for index in 0..WORKERS {
        let chain = chains[index % chains.len()];
        let kind = kinds[(index / chains.len()) % kinds.len()];
        let id = format!("{chain}-{kind}-{index}");
        store
            .worker_register(&WorkerRegister {
                id: WorkerId::new(&id).unwrap(),
                name: id.clone(),
                kind,
                chain,
                pid: Some(1000 + index as i32),
                host: Some("bench-host".into()),
                port: None,
                version: Some("0.1.0".into()),
                config: serde_json::json!({}),
                incarnation: format!("inc-{id}"),
                now: Utc::now(),
            })
            .await
            .unwrap();
    }
}

fn worker_id(index: usize) -> String {
    let chains = ["tron", "ethereum", "bitcoin"];
    let kinds = ["withdrawal", "deposit"];
    format!("{}-{}-{index}", chains[index % 3], kinds[(index / 3) % 2])
}

async fn token(store: &Store, role: Role) -> String {
    web::auth::issue(store, &format!("bench-{role}"), role, Utc::now())
        .await
        .unwrap()
        .1
}

/// What a request of the load is: its method and path, from its sequence number.
type MakeRequest = Arc<dyn Fn(u64) -> (reqwest::Method, String) + Send + Sync>;

/// Sends `rate` requests a second for `seconds`, each due at its slot; returns the report line.
async fn load(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    label: &str,
    rate: u64,
    seconds: u64,
    make: MakeRequest,
) {
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let in_flight = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(total as usize);
    let start = Instant::now();
    for sequence in 0..total {
        let due = start + interval.mul_f64(sequence as f64);
        tokio::time::sleep_until(due.into()).await;
        if in_flight.load(Ordering::Relaxed) >= IN_FLIGHT_MAX {
            errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (method, path) = make(sequence);
        let request = client
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        let (in_flight, errors, bytes) = (
            Arc::clone(&in_flight),
            Arc::clone(&errors),
            Arc::clone(&bytes),
        );
        tasks.push(tokio::spawn(async move {
            let outcome = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    response.bytes().await.map(|body| body.len()).ok()
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    eprintln!("  error: {status} {text}");
                    None
                }
                Err(error) => {
                    eprintln!("  error: {error}");
                    None
                }
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            match outcome {
                Some(size) => {
                    bytes.fetch_add(size as u64, Ordering::Relaxed);
                }
                None => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            due.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let completed = latencies.len() as u64;
    println!(
        "  {label}: offered {rate}/s for {seconds} s; achieved {:.0}/s; n={completed} errors={} \
         p50={:.2} ms p99={:.2} ms max={:.2} ms; {:.0} KiB per response",
        completed as f64 / elapsed.as_secs_f64(),
        errors.load(Ordering::Relaxed),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(*latencies.last().unwrap()),
        bytes.load(Ordering::Relaxed) as f64 / completed.max(1) as f64 / 1024.0,
    );
}

async fn api_under_load(backend: Backend, rate: u64, seconds: u64) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    register_workers(&store).await;
    let viewer = token(&store, Role::Viewer).await;
    let operator = token(&store, Role::Operator).await;
    let serve = Up::serve(&[], &serve_env(&db)).await;
    let base = format!("http://{}", serve.address);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT_MAX as usize)
        .build()
        .unwrap();
    println!(
        "{} ({} workers registered, control plane with its default 4 database connections):",
        backend_name(backend),
        WORKERS
    );
    // Warm the connections and the server's caches.
    load(
        &client,
        &base,
        &viewer,
        "warm-up",
        rate.min(200),
        1,
        Arc::new(|_| (reqwest::Method::GET, "/api/admin/workers".into())),
    )
    .await;
    load(
        &client,
        &base,
        &viewer,
        "GET /api/admin/workers (first page, 100 workers)",
        rate,
        seconds,
        Arc::new(|_| (reqwest::Method::GET, "/api/admin/workers".into())),
    )
    .await;
    load(
        &client,
        &base,
        &operator,
        "POST /api/admin/workers/{id}/stop|start (alternating over the 1,000)",
        rate,
        seconds,
        Arc::new(|sequence| {
            let index = (sequence as usize) % WORKERS;
            // Each worker is stopped on even rounds over the fleet and started on odd ones,
            // so every request is a meaningful change (a 409 would count as an error).
            let action = if (sequence as usize / WORKERS).is_multiple_of(2) {
                "stop"
            } else {
                "start"
            };
            (
                reqwest::Method::POST,
                format!("/api/admin/workers/{}/{action}", worker_id(index)),
            )
        }),
    )
    .await;
    for full_rate in [100, rate] {
        load(
            &client,
            &base,
            &viewer,
            "GET /api/admin/workers?limit=1000 (all 1,000 in one page)",
            full_rate,
            seconds,
            Arc::new(|_| (reqwest::Method::GET, "/api/admin/workers?limit=1000".into())),
        )
        .await;
    }
    serve.stop().await;
}

/// API stop → the event that shows it on the stream, for `rounds` different workers.
async fn event_propagation(backend: Backend, rounds: usize, gap: Duration) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    register_workers(&store).await;
    let viewer = token(&store, Role::Viewer).await;
    let operator = token(&store, Role::Operator).await;
    let serve = Up::serve(&[], &serve_env(&db)).await;
    let base = format!("http://{}", serve.address);
    let client = reqwest::Client::new();
    let mut events = client
        .get(format!("{base}/api/admin/events"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert!(events.status().is_success());
    let mut buffer = String::new();
    // Reads events until a `worker` event for `id` with `desired` arrives.
    async fn until_event(
        events: &mut reqwest::Response,
        buffer: &mut String,
        id: &str,
        desired: &str,
    ) {
        let shows =
            |worker: &serde_json::Value| worker["id"] == id && worker["desired_state"] == desired;
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let name = event
                    .lines()
                    .find_map(|line| line.strip_prefix("event: "))
                    .unwrap_or_default();
                let data: String = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data: "))
                    .collect();
                let Ok(data) = serde_json::from_str::<serde_json::Value>(&data) else {
                    continue;
                };
                // Postgres names the worker that changed; SQLite sends a fresh snapshot.
                let seen = match name {
                    "worker" => shows(&data),
                    "snapshot" => data["workers"]
                        .as_array()
                        .is_some_and(|workers| workers.iter().any(shows)),
                    _ => false,
                };
                if seen {
                    return;
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream stays open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let id = worker_id(round % WORKERS);
        let (action, desired) = ("stop", "stopped");
        let sent = Instant::now();
        let response = client
            .post(format!("{base}/api/admin/workers/{id}/{action}"))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
        until_event(&mut events, &mut buffer, &id, desired).await;
        samples.push(sent.elapsed());
        tokio::time::sleep(gap).await;
    }
    samples.sort();
    println!(
        "{}: API stop sent → `worker` event received: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        backend_name(backend),
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(*samples.last().unwrap()),
    );
    drop(events);
    serve.stop().await;
}

/// The control plane's environment: this database, and a heartbeat interval long enough
/// that its reaper does not mark the benchmark's process-less workers lost mid-run.
fn serve_env(db: &TestDb) -> [(&str, &str); 2] {
    [
        ("COINSENSEI_DATABASE_URL", db.url.as_str()),
        ("COINSENSEI_HEARTBEAT_INTERVAL", "300"),
    ]
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    }
}

fn main() {
    let setting = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(default)
    };
    // reqwest is built without a crypto provider (the CLI installs ring); so do we.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rate = setting("COINSENSEI_BENCH_RATE", 1000);
    let seconds = setting("COINSENSEI_BENCH_SECONDS", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "coinsensei admin API benchmark ({} build, load generator in this process on loopback)",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        let only = std::env::var("COINSENSEI_BENCH_ONLY").unwrap_or_default();
        if only.is_empty() || only == "events" {
            // SQLite sends at most one snapshot per 250 ms, so its rounds are spaced past that:
            // each stop is an operator's isolated click, not a burst.
            event_propagation(Backend::Postgres, 200, Duration::from_millis(5)).await;
            event_propagation(Backend::Sqlite, 100, Duration::from_millis(300)).await;
        }
        if only.is_empty() || only == "load" {
            for backend in [Backend::Postgres, Backend::Sqlite] {
                api_under_load(backend, rate, seconds).await;
            }
        }
    });
}
