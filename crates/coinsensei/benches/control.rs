//! The foundation's figures, measured on real processes against both stores:
//!
//! - control latency: an operator's stop (or start) written → the worker reports it;
//! - lost-worker detection after `kill -9`;
//! - idle worker RSS;
//! - `coinsensei up` time to ready (`/readyz` answers 200).
//!
//! Run with `cargo xtask bench` (or `cargo bench -p coinsensei --bench control`). Set
//! `COINSENSEI_BENCH_ROUNDS` to change the number of control rounds (default 100).

#![allow(
    clippy::float_arithmetic,
    reason = "reports milliseconds and MiB; no money here"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use domain::{ControlAction, WorkerId, WorkerStatus};
use nix::sys::signal::Signal;
use store::{Store, WorkerControl};
use testkit::{Backend, TestDb};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    format!(
        "n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(*samples.last().unwrap())
    )
}

/// Polls the row until its status is `status`; returns when it was first seen.
async fn until_status(store: &Store, id: &WorkerId, status: WorkerStatus) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = store.worker_get(id).await.unwrap();
        if row.as_ref().is_some_and(|row| row.status == status) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {status} (row: {row:?})"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    }
}

/// `up` with one worker at the default 5 s heartbeat, so what is measured is the change feed,
/// not a heartbeat that happened to come by.
async fn control_latency(backend: Backend, rounds: usize) {
    let db = TestDb::new(backend).await;
    let config = write_config(&db.dir(), 5.0, &[("withdrawal", "tron")]);
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let store = db.store().await;
    let id = WorkerId::new("tron-withdrawal-1").unwrap();
    until_status(&store, &id, WorkerStatus::Running).await;
    let mut stops = Vec::with_capacity(rounds);
    let mut starts = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        for (action, status, samples) in [
            (ControlAction::Stop, WorkerStatus::Stopped, &mut stops),
            (ControlAction::Start, WorkerStatus::Running, &mut starts),
        ] {
            let asked = Instant::now();
            store
                .worker_control(&WorkerControl {
                    id: id.clone(),
                    action,
                    actor: "bench".into(),
                    now: Utc::now(),
                })
                .await
                .unwrap();
            samples.push(until_status(&store, &id, status).await - asked);
        }
    }
    println!(
        "control latency, {:<8} stop → stopped:  {}",
        backend_name(backend),
        summary(stops)
    );
    println!(
        "control latency, {:<8} start → running: {}",
        backend_name(backend),
        summary(starts)
    );
    store.close().await;
    assert!(up.stop().await.success());
}

/// A worker under `serve` (which runs the reaper) is killed with -9; how long until `lost`.
async fn lost_detection(backend: Backend, rounds: usize) {
    let heartbeat = 1.0;
    let db = TestDb::new(backend).await;
    let config = write_config(&db.dir(), heartbeat, &[]);
    let config = config.to_str().unwrap();
    let env = [("COINSENSEI_DATABASE_URL", db.url.as_str())];
    let serve = Up::serve(&["--config", config], &env).await;
    let store = db.store().await;
    let id = WorkerId::new("tron-deposit-1").unwrap();
    let mut after_kill = Vec::new();
    let mut after_heartbeat = Vec::new();
    for _ in 0..rounds {
        let mut child = coinsensei([
            "--config", config, "worker", "--kind", "deposit", "--chain", "tron",
        ])
        .envs(env)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
        until_status(&store, &id, WorkerStatus::Running).await;
        // Kill at a random point of the heartbeat cycle, as real crashes do.
        tokio::time::sleep(Duration::from_millis(rand::random_range(1000..2000))).await;
        signal(child.id().unwrap() as i32, Signal::SIGKILL);
        let killed = Instant::now();
        let killed_at = Utc::now();
        let _ = child.wait().await;
        let lost = until_status(&store, &id, WorkerStatus::Lost).await;
        after_kill.push(lost - killed);
        let last_heartbeat = store
            .worker_get(&id)
            .await
            .unwrap()
            .unwrap()
            .last_heartbeat
            .unwrap();
        let since_heartbeat =
            (killed_at - last_heartbeat).to_std().unwrap_or_default() + (lost - killed);
        after_heartbeat.push(since_heartbeat);
    }
    println!(
        "lost detection,  {:<8} heartbeat {heartbeat} s, threshold 3 × interval: kill → lost: {}",
        backend_name(backend),
        summary(after_kill)
    );
    println!(
        "lost detection,  {:<8} last heartbeat → lost:                      {}",
        backend_name(backend),
        summary(after_heartbeat)
    );
    store.close().await;
    assert!(serve.stop().await.success());
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `up` on a fresh data directory (creates and migrates the database) and on an existing one;
/// then the RSS of its idle workers.
async fn time_to_ready_and_rss(rounds: usize) {
    let db = TestDb::sqlite();
    let mut fresh = Vec::new();
    let mut existing = Vec::new();
    for round in 0..rounds {
        let data_dir = db.dir().join(format!("round-{round}"));
        for samples in [&mut fresh, &mut existing] {
            let started = Instant::now();
            let up = Up::start(&["--data-dir", data_dir.to_str().unwrap()], &[]).await;
            loop {
                if let Ok((200, _)) = http_get(up.address, "/readyz").await {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            samples.push(started.elapsed());
            assert!(up.stop().await.success());
        }
    }
    println!(
        "up time to ready, fresh data dir (create + migrate): {}",
        summary(fresh)
    );
    println!(
        "up time to ready, existing database:                 {}",
        summary(existing)
    );

    // Idle RSS: let all default workers settle, then read /proc of each.
    let data_dir = db.dir().join("rss");
    let up = Up::start(&["--data-dir", data_dir.to_str().unwrap()], &[]).await;
    let url = format!("sqlite://{}", data_dir.join("coinsensei.db").display());
    let store = store::Store::connect(&url, &store::StoreOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let rows = store
        .worker_list(&store::WorkerList {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut rss: Vec<u64> = rows
        .iter()
        .filter_map(|row| row.pid)
        .map(|pid| rss_kib(pid as u32))
        .collect();
    rss.sort();
    println!(
        "idle worker RSS over {} workers: min {:.1} MiB, median {:.1} MiB, max {:.1} MiB; up (control plane + supervisor): {:.1} MiB",
        rss.len(),
        rss[0] as f64 / 1024.0,
        rss[rss.len() / 2] as f64 / 1024.0,
        rss[rss.len() - 1] as f64 / 1024.0,
        rss_kib(up.pid().as_raw() as u32) as f64 / 1024.0
    );
    store.close().await;
    assert!(up.stop().await.success());
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let rounds: usize = std::env::var("COINSENSEI_BENCH_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "coinsensei foundation benchmark ({} build)",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        for backend in [Backend::Postgres, Backend::Sqlite] {
            control_latency(backend, rounds).await;
        }
        for backend in [Backend::Postgres, Backend::Sqlite] {
            lost_detection(backend, 5).await;
        }
        time_to_ready_and_rss(10).await;
    });
}
