//! The dashboard's figures, in headless Chromium against a real `coinsensei up` (release
//! build, real worker processes) on SQLite and on Postgres:
//!
//! - click Stop → the card's badge says `stopped`: p50 / p99 over 25 clicks (each followed by
//!   Start → `running`), measured in the page from the click to the frame that shows it. The
//!   path is the whole system: POST, desired state and audit entry in the store, the worker
//!   noticing (LISTEN/NOTIFY, or SQLite's data version), draining and reporting `stopped`,
//!   the page's event stream noticing and sending the card;
//! - the bytes transferred for the workers page with 100 workers (2 running processes and 98
//!   registered rows): the HTML and every asset, uncached, as counted by Chromium on the wire
//!   (headers included); the event stream's own bytes are left out (it never finishes).
//!
//! Run with `cargo xtask bench dashboard` (or `cargo bench -p coinsensei --bench dashboard`
//! with playwright-core installed, see `crates/web/e2e`). `COINSENSEI_BENCH_CLICKS` changes
//! the number of clicks.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use chrono::Utc;
use common::browser::{artifacts, start_script};
use common::*;
use domain::{Chain, Role, WorkerId, WorkerKind};
use store::WorkerRegister;
use testkit::{Backend, TestDb, wait_for};

const PAGE_WORKERS: usize = 100;

async fn run(backend: Backend) -> serde_json::Value {
    let db = TestDb::new(backend).await;
    let config = write_config(
        &db.dir(),
        1.0,
        &[("withdrawal", "tron"), ("deposit", "ethereum")],
    );
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let worker = "tron-withdrawal-1";
    wait_for("the workers running", Duration::from_secs(30), || async {
        let workers = workers_json(&db.url).await;
        (workers
            .iter()
            .filter(|worker| worker["status"] == "running")
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let store = db.store().await;
    let chains = [Chain::Tron, Chain::Ethereum, Chain::Bitcoin];
    for index in 0..PAGE_WORKERS - 2 {
        let chain = chains[index % chains.len()];
        let id = format!("{chain}-consolidation-{index}");
        store
            .worker_register(&WorkerRegister {
                id: WorkerId::new(&id).unwrap(),
                name: id.clone(),
                kind: WorkerKind::Consolidation,
                chain,
                pid: Some(10_000 + index as i32),
                host: Some("bench-host".into()),
                port: None,
                version: Some("0.1.0".into()),
                config: serde_json::json!({}),
                incarnation: format!("bench-{index}"),
                now: Utc::now(),
            })
            .await
            .unwrap();
    }
    let (_, operator) = web::auth::issue(&store, "bench", Role::Operator, Utc::now())
        .await
        .unwrap();
    let clicks = std::env::var("COINSENSEI_BENCH_CLICKS").unwrap_or_else(|_| "25".into());
    let mut script = start_script(&[
        ("BASE_URL", format!("http://{}", up.address)),
        ("OPERATOR_TOKEN", operator),
        ("VIEWER_TOKEN", String::new()),
        ("WORKER", worker.into()),
        ("ARTIFACTS", artifacts("bench").display().to_string()),
        ("MODE", "bench".into()),
        ("CLICKS", clicks),
    ]);
    let mut result = None;
    while let Some(line) = script.lines.next_line().await.expect("read the script") {
        if line.starts_with('{') {
            result = Some(line);
        }
    }
    let status = script.child.wait().await.expect("wait for node");
    assert!(status.success(), "the browser script failed: {status}");
    up.stop().await;
    let mut result: serde_json::Value =
        serde_json::from_str(&result.expect("a result line")).unwrap();
    result["store"] = serde_json::json!(store.dialect());
    result
}

#[tokio::main]
async fn main() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let result = run(backend).await;
        let latency = &result["stop_to_stopped_ms"];
        println!(
            "dashboard on {}: click Stop -> badge `stopped` over {} clicks: p50 {:.0} ms, p99 {:.0} ms (min {:.0}, max {:.0}); workers page with {} workers: {} bytes in {} requests",
            result["store"].as_str().unwrap_or("?"),
            result["clicks"],
            latency["p50"].as_f64().unwrap_or(f64::NAN),
            latency["p99"].as_f64().unwrap_or(f64::NAN),
            latency["min"].as_f64().unwrap_or(f64::NAN),
            latency["max"].as_f64().unwrap_or(f64::NAN),
            result["workers_on_page"],
            result["workers_page_bytes"],
            result["workers_page_requests"],
        );
        println!("{result}");
    }
}
