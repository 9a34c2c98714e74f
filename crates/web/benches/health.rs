//! The health checker's cost per 1,000 workers (`cargo xtask bench health`): judging alone
//! (the rules and the window bookkeeping, on readings in memory), and a whole evaluation
//! (reading workers, leases, balances and withdrawals from the store, then judging) on
//! SQLite and Postgres with 1,000 heartbeating workers. Measures; asserts nothing.

use std::time::{Duration, Instant};

use chrono::Utc;
use domain::{Chain, WorkerId, WorkerKind};
use store::{WorkerHeartbeat, WorkerRegister};
use testkit::{Backend, TestDb};
use web::health::{HealthMonitor, Readings};

const WORKERS: usize = 1_000;
const ROUNDS: u32 = 20;

#[allow(
    clippy::cast_precision_loss,
    clippy::float_arithmetic,
    reason = "a benchmark's printed averages"
)]
fn per_round(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0 / f64::from(ROUNDS)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let now = Utc::now();
        for n in 0..WORKERS {
            let id = WorkerId::new(format!("bench-{n}")).unwrap();
            store
                .worker_register(&WorkerRegister {
                    id: id.clone(),
                    name: id.to_string(),
                    kind: WorkerKind::Deposit,
                    chain: Chain::Tron,
                    pid: Some(1),
                    host: None,
                    port: None,
                    version: None,
                    config: serde_json::json!({}),
                    incarnation: "i".into(),
                    now,
                })
                .await
                .unwrap();
            store
                .worker_heartbeat(&WorkerHeartbeat {
                    id,
                    incarnation: "i".into(),
                    rss_bytes: Some(30 << 20),
                    in_flight: 2,
                    processed_total: 100,
                    failed_total: 1,
                    now,
                })
                .await
                .unwrap();
        }
        let monitor = HealthMonitor::default();
        let readings: Readings = monitor.read(&store, now).await.unwrap();
        assert_eq!(readings.workers.len(), WORKERS);
        let started = Instant::now();
        for round in 0..ROUNDS {
            let at = now + chrono::Duration::seconds(i64::from(round) * 5);
            std::hint::black_box(monitor.judge(&readings, at));
        }
        let judge_ms = per_round(started.elapsed());
        let started = Instant::now();
        for _ in 0..ROUNDS {
            std::hint::black_box(monitor.evaluate(&store, Utc::now()).await.unwrap());
        }
        let evaluate_ms = per_round(started.elapsed());
        println!(
            "health checker, {WORKERS} workers on {backend:?}: judge {judge_ms:.2} ms, read + judge {evaluate_ms:.2} ms per evaluation (mean of {ROUNDS})"
        );
        store.close().await;
    }
}
