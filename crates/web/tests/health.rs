//! The health checker against real stores: each worker check read from what workers wrote
//! (heartbeats, memory, counters, job leases), the window kept between evaluations, the
//! chain checks from the hot wallets' balances, and `GET /api/admin/health` with its roles.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{DateTime, Utc};
use domain::health::{HealthLevel, HealthLimits};
use domain::{Chain, Name, Role, WorkerId, WorkerKind};
use serde_json::Value;
use store::{HotWalletBalance, JobClaim, JobInsert, Store, WorkerHeartbeat, WorkerRegister};
use testkit::TestDb;
use tower::ServiceExt;
use web::health::HealthMonitor;

const MIB: i64 = 1024 * 1024;

fn limits() -> HealthLimits {
    HealthLimits {
        heartbeat_interval: Duration::from_secs(5),
        memory_limit_bytes: 100 * 1024 * 1024,
        window: Duration::from_secs(60),
        ..HealthLimits::default()
    }
}

async fn register(store: &Store, id: &str, now: DateTime<Utc>) {
    store
        .worker_register(&WorkerRegister {
            id: WorkerId::new(id).unwrap(),
            name: id.into(),
            kind: WorkerKind::Deposit,
            chain: Chain::Tron,
            pid: Some(1),
            host: None,
            port: None,
            version: None,
            config: serde_json::json!({}),
            incarnation: format!("inc-{id}"),
            now,
        })
        .await
        .unwrap();
}

async fn heartbeat(
    store: &Store,
    id: &str,
    now: DateTime<Utc>,
    rss_mib: i64,
    (in_flight, processed, failed): (i64, i64, i64),
) {
    store
        .worker_heartbeat(&WorkerHeartbeat {
            id: WorkerId::new(id).unwrap(),
            incarnation: format!("inc-{id}"),
            rss_bytes: Some(rss_mib * MIB),
            in_flight,
            processed_total: processed,
            failed_total: failed,
            now,
        })
        .await
        .unwrap();
}

fn level_of(report: &web::health::HealthReport, id: &str, check: &str) -> HealthLevel {
    let worker = report
        .workers
        .iter()
        .find(|worker| worker.id.as_str() == id)
        .unwrap_or_else(|| panic!("{id} judged"));
    worker
        .checks
        .iter()
        .find(|each| each.name == check)
        .unwrap()
        .level
}

async fn each_check_reads_what_workers_wrote(db: &TestDb) {
    let store = db.store().await;
    let t0 = Utc::now() - chrono::Duration::seconds(600);
    let at = |seconds: i64| t0 + chrono::Duration::seconds(seconds);
    for id in ["fine", "silent", "fat", "stuck", "failing"] {
        register(&store, id, at(0)).await;
    }
    let monitor = HealthMonitor::new(limits(), true);

    // First look at t = 100 s: counters since each worker started.
    heartbeat(&store, "fine", at(100), 50, (1, 100, 1)).await;
    heartbeat(&store, "silent", at(80), 50, (0, 0, 0)).await;
    heartbeat(&store, "fat", at(100), 101, (0, 0, 0)).await;
    heartbeat(&store, "stuck", at(100), 50, (2, 5, 0)).await;
    heartbeat(&store, "failing", at(100), 50, (0, 10, 0)).await;
    // `stuck` holds a job whose lease ran out at 90 s.
    store
        .job_insert(&JobInsert {
            queue: Name::new("tron.deposit").unwrap(),
            kind: Name::new("sleep").unwrap(),
            args: serde_json::json!({}),
            priority: 0,
            run_at: at(0),
            retry: None,
            unique_key: None,
            now: at(0),
        })
        .await
        .unwrap();
    store
        .job_claim(&JobClaim {
            queue: Name::new("tron.deposit").unwrap(),
            owner: "stuck:inc-stuck".into(),
            limit: 1,
            lease_until: at(90),
            now: at(50),
        })
        .await
        .unwrap();
    let report = monitor.evaluate(&store, at(100)).await.unwrap();
    assert_eq!(level_of(&report, "fine", "heartbeat"), HealthLevel::Healthy);
    assert_eq!(
        level_of(&report, "silent", "heartbeat"),
        HealthLevel::Unhealthy
    );
    assert_eq!(level_of(&report, "fat", "memory"), HealthLevel::Unhealthy);
    assert_eq!(level_of(&report, "stuck", "jobs"), HealthLevel::Unhealthy);
    assert_eq!(level_of(&report, "fine", "jobs"), HealthLevel::Healthy);
    // 1 of 100 since start: 1 %, healthy.
    assert_eq!(
        level_of(&report, "fine", "error_rate"),
        HealthLevel::Healthy
    );
    assert_eq!(report.level, HealthLevel::Unhealthy);
    let fine = report
        .workers
        .iter()
        .find(|w| w.id.as_str() == "fine")
        .unwrap();
    assert_eq!(fine.level, HealthLevel::Healthy);
    assert_eq!(fine.unhealthy_since, None);
    let silent = report
        .workers
        .iter()
        .find(|w| w.id.as_str() == "silent")
        .unwrap();
    assert_eq!(silent.unhealthy_since, Some(at(100)));

    // A window later: `failing` failed 5 of its next 10 (50 % in the window, though only a
    // third over its life), `fine` kept going, `stuck` finished nothing with jobs in flight.
    heartbeat(&store, "fine", at(170), 50, (1, 200, 1)).await;
    heartbeat(&store, "failing", at(170), 50, (0, 20, 5)).await;
    heartbeat(&store, "stuck", at(170), 50, (2, 5, 0)).await;
    heartbeat(&store, "silent", at(170), 50, (0, 0, 0)).await;
    let report = monitor.evaluate(&store, at(170)).await.unwrap();
    let failing = report
        .workers
        .iter()
        .find(|w| w.id.as_str() == "failing")
        .unwrap();
    let rate = failing
        .checks
        .iter()
        .find(|c| c.name == "error_rate")
        .unwrap();
    assert_eq!(
        (rate.level, rate.value),
        (HealthLevel::Unhealthy, 5_000),
        "{rate:?}"
    );
    assert_eq!(
        level_of(&report, "fine", "error_rate"),
        HealthLevel::Healthy
    );
    assert_eq!(
        level_of(&report, "silent", "heartbeat"),
        HealthLevel::Healthy
    );
    let silent = report
        .workers
        .iter()
        .find(|w| w.id.as_str() == "silent")
        .unwrap();
    assert_eq!(silent.unhealthy_since, None, "recovered");
    // The lease has been rescued? No: nobody rescued it, so it is still past its lease; and
    // the jobs check says so before it says "none finished".
    assert_eq!(level_of(&report, "stuck", "jobs"), HealthLevel::Unhealthy);

    // Chains: a balance read 10 s ago is fresh, one read 10 minutes ago is not.
    let balance = |chain, checked_at| HotWalletBalance {
        chain,
        asset: "X".into(),
        address: "a".into(),
        units: "1".into(),
        checked_at,
    };
    store
        .hot_wallet_set(&balance(Chain::Tron, at(160)))
        .await
        .unwrap();
    store
        .hot_wallet_set(&balance(Chain::Ethereum, at(-430)))
        .await
        .unwrap();
    let report = monitor.evaluate(&store, at(170)).await.unwrap();
    let chain = |chain: Chain| {
        report
            .chains
            .iter()
            .find(|each| each.chain == chain)
            .unwrap()
    };
    assert_eq!(chain(Chain::Tron).level, HealthLevel::Healthy);
    assert_eq!(chain(Chain::Ethereum).level, HealthLevel::Unhealthy);
    assert!(
        report
            .chains
            .iter()
            .all(|each| each.chain != Chain::Bitcoin)
    );
}

/// One GET through the router; the status and the body's bytes.
async fn get(store: &Store, path: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut request = Request::builder().method(Method::GET).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let router = web::router(
        store.clone(),
        Arc::new(queue::SqlBackend::new(store.clone())),
        &web::WebOptions::default(),
    );
    let response = router
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

async fn call(store: &Store, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let (status, bytes) = get(store, path, token).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn the_api_reports_to_viewers_and_up(db: &TestDb) {
    let store = db.store().await;
    let now = Utc::now();
    register(&store, "tron-deposit-1", now).await;
    heartbeat(&store, "tron-deposit-1", now, 10, (0, 0, 0)).await;
    let (status, _) = call(&store, "/api/admin/health", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, service) = web::auth::issue(&store, "app", Role::Service, now)
        .await
        .unwrap();
    let (status, _) = call(&store, "/api/admin/health", Some(&service)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, viewer) = web::auth::issue(&store, "v", Role::Viewer, now)
        .await
        .unwrap();
    let (status, body) = call(&store, "/api/admin/health", Some(&viewer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "healthy", "{body}");
    let worker = &body["workers"][0];
    assert_eq!(worker["id"], "tron-deposit-1");
    let names: Vec<&str> = worker["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| check["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["heartbeat", "memory", "jobs", "error_rate"]);
    assert_eq!(worker["checks"][1]["value"], 10 * MIB, "{body}");

    // And a series per check at /metrics.
    let (status, text) = get(&store, "/metrics", Some(&viewer)).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(text).unwrap();
    for check in ["heartbeat", "memory", "jobs", "error_rate"] {
        let series = text.lines().find(|line| {
            line.starts_with("coinsensei_health_check_status{")
                && line.contains(&format!("check=\"{check}\""))
                && line.contains("worker=\"tron-deposit-1\"")
        });
        assert!(
            series.is_some_and(|line| line.ends_with(" 0")),
            "{check}: {series:?}"
        );
    }
    assert!(text.contains("coinsensei_worker_health_status{worker=\"tron-deposit-1\"} 0"));
}

/// What the test's probe answers: a status, an error, or nothing ever.
#[derive(Debug, Clone)]
enum Answer {
    Status(web::health::NodeStatus),
    Error(String),
    Never,
}

/// A node probe the test steers: the monitor's bounds (timeout, an answer too old) and
/// bookkeeping are what is under test here; the real probes, against real nodes, are
/// `crates/coinsensei/tests/health_nodes.rs`'s.
struct Steered(std::sync::Mutex<Answer>);

impl web::health::NodeProbe for Steered {
    fn chains(&self) -> Vec<Chain> {
        vec![Chain::Tron]
    }

    fn probe(&self, _chain: Chain) -> web::health::ProbeFuture<'_> {
        let answer = self.0.lock().unwrap().clone();
        Box::pin(async move {
            match answer {
                Answer::Status(status) => Ok(status),
                Answer::Error(error) => Err(error),
                Answer::Never => std::future::pending().await,
            }
        })
    }
}

fn chain_check<'a>(
    report: &'a web::health::HealthReport,
    chain: Chain,
    name: &str,
) -> &'a domain::health::CheckResult {
    report
        .chains
        .iter()
        .find(|each| each.chain == chain)
        .unwrap_or_else(|| panic!("{chain} judged"))
        .checks
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("{chain} {name}"))
}

async fn floors_and_node_probes(db: &TestDb) {
    let store = db.store().await;
    let now = Utc::now();
    let status = web::health::NodeStatus {
        network: "genesis 00".into(),
        expected_network: Some("genesis 00".into()),
        network_key: "tron_genesis_block_id",
        tip_height: 7,
        tip_time: now,
        catching_up: None,
    };
    let probe = Arc::new(Steered(std::sync::Mutex::new(Answer::Status(status))));
    let monitor = HealthMonitor::new(limits(), true)
        .with_floors(vec![web::health::Floor {
            chain: Chain::Tron,
            asset: "USDT".into(),
            decimals: 6,
            floor: domain::Amount::from_u128(2_000_000),
        }])
        .with_nodes(
            probe.clone(),
            Duration::from_millis(100),
            Duration::from_secs(10),
        );

    // Before any probe: the node is not taken for healthy.
    let report = monitor.evaluate(&store, now).await.unwrap();
    let reachable = chain_check(&report, Chain::Tron, "node_reachable");
    assert_eq!(reachable.level, HealthLevel::Unhealthy);
    assert!(
        reachable.reason.contains("not probed yet"),
        "{}",
        reachable.reason
    );

    // Answered: healthy; the hot wallet above its floor.
    let balance = |units: &str| HotWalletBalance {
        chain: Chain::Tron,
        asset: "USDT".into(),
        address: "T".into(),
        units: units.into(),
        checked_at: now,
    };
    store.hot_wallet_set(&balance("2500000")).await.unwrap();
    monitor.probe_nodes().await;
    let report = monitor.evaluate(&store, Utc::now()).await.unwrap();
    let tron = report
        .chains
        .iter()
        .find(|each| each.chain == Chain::Tron)
        .unwrap();
    assert_eq!(
        tron.node_level,
        Some(HealthLevel::Healthy),
        "{:?}",
        tron.checks
    );
    assert_eq!(tron.level, HealthLevel::Healthy, "{:?}", tron.checks);
    let floor = chain_check(&report, Chain::Tron, "hot_wallet_floor");
    assert_eq!((floor.level, floor.value), (HealthLevel::Healthy, 125));
    assert_eq!(floor.reason, "USDT 2.5 of floor 2");

    // Below the floor: unhealthy, the node still healthy (no pause for a poor wallet).
    store.hot_wallet_set(&balance("1500000")).await.unwrap();
    let report = monitor.evaluate(&store, Utc::now()).await.unwrap();
    let floor = chain_check(&report, Chain::Tron, "hot_wallet_floor");
    assert_eq!((floor.level, floor.value), (HealthLevel::Unhealthy, 75));
    assert!(
        floor.reason.contains("USDT 1.5 of floor 2"),
        "{}",
        floor.reason
    );
    let tron = report
        .chains
        .iter()
        .find(|each| each.chain == Chain::Tron)
        .unwrap();
    assert_eq!(tron.node_level, Some(HealthLevel::Healthy));
    assert_eq!(tron.level, HealthLevel::Unhealthy);

    // A node that never answers: the probe gives up at the timeout, unreachable, and the
    // unhealthy spell is tracked from the first judgement that saw it.
    *probe.0.lock().unwrap() = Answer::Never;
    let started = std::time::Instant::now();
    monitor.probe_nodes().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the probe is bounded"
    );
    let first = Utc::now();
    let report = monitor.evaluate(&store, first).await.unwrap();
    let reachable = chain_check(&report, Chain::Tron, "node_reachable");
    assert_eq!(reachable.level, HealthLevel::Unhealthy);
    assert_eq!(reachable.reason, "no answer: no answer within 100 ms");
    let report = monitor
        .evaluate(&store, first + chrono::TimeDelta::seconds(1))
        .await
        .unwrap();
    let tron = report
        .chains
        .iter()
        .find(|each| each.chain == Chain::Tron)
        .unwrap();
    assert_eq!(tron.node_level, Some(HealthLevel::Unhealthy));
    assert_eq!(tron.node_unhealthy_since, Some(first));

    // An error says what the node said; an answer on another network is unhealthy; and an
    // answer older than the limit is not believed.
    *probe.0.lock().unwrap() = Answer::Error("refused".into());
    monitor.probe_nodes().await;
    let report = monitor.evaluate(&store, Utc::now()).await.unwrap();
    assert_eq!(
        chain_check(&report, Chain::Tron, "node_reachable").reason,
        "no answer: refused"
    );
    *probe.0.lock().unwrap() = Answer::Status(web::health::NodeStatus {
        network: "genesis 01".into(),
        expected_network: Some("genesis 00".into()),
        network_key: "tron_genesis_block_id",
        tip_height: 9,
        tip_time: Utc::now(),
        catching_up: None,
    });
    monitor.probe_nodes().await;
    let report = monitor.evaluate(&store, Utc::now()).await.unwrap();
    let network = chain_check(&report, Chain::Tron, "network");
    assert_eq!(network.level, HealthLevel::Unhealthy);
    assert_eq!(
        network.reason,
        "on genesis 01, but tron_genesis_block_id says genesis 00"
    );
    let later = Utc::now() + chrono::TimeDelta::seconds(11);
    let report = monitor.evaluate(&store, later).await.unwrap();
    let reachable = chain_check(&report, Chain::Tron, "node_reachable");
    assert_eq!(reachable.level, HealthLevel::Unhealthy);
    assert!(
        reachable.reason.contains("last probed"),
        "{}",
        reachable.reason
    );
    store.close().await;
}

testkit::on_both_stores!(
    db:
    each_check_reads_what_workers_wrote,
    the_api_reports_to_viewers_and_up,
    floors_and_node_probes,
);
