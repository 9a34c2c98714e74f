//! Webhook delivery figures, against a real `coinsensei serve` and a receiver over loopback,
//! on Postgres:
//!
//! - throughput: a backlog of `COINSENSEI_BENCH_EVENTS` events (default 5,000: one
//!   `withdrawal.created` each) appended while the control plane is down, then `serve`
//!   started: how many events per second one deliverer drains to one endpoint (its default
//!   `concurrency`, 8 posts in flight);
//! - latency: withdrawals created one at a time, every 20 ms, while `serve` runs: from the
//!   state change's commit (the event's `created_at`) to the receiver's receipt, p50 / p99.
//!
//! Run with `cargo xtask bench webhooks` (or `cargo bench -p coinsensei --bench webhooks`).

#![allow(
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    reason = "reports milliseconds and rates; no money here"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;
use domain::Chain;
use store::{Store, WithdrawalCreate};
use testkit::TestDb;

const SECRET: &str = "bench-secret-0123456789abcdef";
const LATENCY_EVENTS: usize = 200;

/// What the receiver saw: per event id, when it arrived and when its change committed.
type Seen = Arc<Mutex<Vec<(String, DateTime<Utc>, DateTime<Utc>)>>>;

async fn receiver(seen: Seen) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    let now = Utc::now();
                    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let id = headers["coinsensei-event-id"].to_str().unwrap().to_string();
                    let at = event["created_at"]
                        .as_str()
                        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
                        .map_or(now, |at| at.with_timezone(&Utc));
                    seen.lock().unwrap().push((id, now, at));
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

async fn create(store: &Store, n: usize) {
    store
        .withdrawal_create(&WithdrawalCreate {
            idempotency_key: format!("bench-{n}"),
            request_hash: "a".repeat(64),
            reference: format!("user:{n}"),
            chain: Chain::Tron,
            asset: "USDT".into(),
            destination: "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7".into(),
            amount: "1000000".into(),
            actor: "token:1:bench".into(),
            job: None,
            approval: false,
            limits: vec![],
            destination_rule: None,
            now: Utc::now(),
        })
        .await
        .unwrap();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn wait_for_count(seen: &Seen, count: usize, limit: Duration) {
    let started = Instant::now();
    while seen.lock().unwrap().len() < count {
        assert!(
            started.elapsed() < limit,
            "only {} of {count} events arrived in {limit:?}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let backlog: usize = std::env::var("COINSENSEI_BENCH_EVENTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(5_000);
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let seen: Seen = Arc::default();
    let address = receiver(Arc::clone(&seen)).await;
    let config = db.dir().join("webhooks.toml");
    std::fs::write(
        &config,
        format!(
            "[[webhooks]]\nname = \"bench\"\nurl = \"http://{address}/hook\"\nsecret = \"{SECRET}\"\n\
             events = [\"withdrawal.*\"]\n"
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let env = [("COINSENSEI_DATABASE_URL", db.url.as_str())];

    // The endpoint's subscription is stored when the control plane first starts with it:
    // one event through, then it is stopped.
    let first = Up::serve(&args, &env).await;
    create(&store, usize::MAX).await;
    wait_for_count(&seen, 1, Duration::from_secs(60)).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    seen.lock().unwrap().clear();

    // Throughput: a backlog appended while it is down, drained by one deliverer.
    for n in 0..backlog {
        create(&store, n).await;
    }
    let started = Instant::now();
    let up = Up::serve(&args, &env).await;
    let ready = started.elapsed();
    wait_for_count(&seen, backlog, Duration::from_secs(300)).await;
    let drained = started.elapsed();
    let (first_at, last_at) = {
        let seen = seen.lock().unwrap();
        (
            seen.iter().map(|(_, at, _)| *at).min().unwrap(),
            seen.iter().map(|(_, at, _)| *at).max().unwrap(),
        )
    };
    let span = (last_at - first_at).to_std().unwrap_or_default();
    let rate = backlog as f64 / span.as_secs_f64().max(1e-9);
    let distinct: std::collections::HashSet<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(id, ..)| id.clone())
        .collect();

    // Latency: one change at a time while it runs.
    seen.lock().unwrap().clear();
    for n in 0..LATENCY_EVENTS {
        create(&store, backlog + n).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_count(&seen, LATENCY_EVENTS, Duration::from_secs(60)).await;
    let mut latencies: Vec<f64> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, received, committed)| {
            (*received - *committed).num_microseconds().unwrap_or(0) as f64 / 1000.0
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    drop(up);

    println!(
        "webhooks (Postgres, one endpoint, concurrency 8): backlog of {backlog} events drained in {:.2} s \
         after start ({:.2} s to listen; {} distinct); first to last receipt {:.2} s: {rate:.0} events/s",
        drained.as_secs_f64(),
        ready.as_secs_f64(),
        distinct.len(),
        span.as_secs_f64(),
    );
    println!(
        "webhooks: state change -> receipt over {LATENCY_EVENTS} changes 20 ms apart: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or_default(),
    );
}
