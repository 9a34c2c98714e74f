//! The worker runtime in-process against real stores: the lifecycle the control plane drives
//! (stop, start, restart), faults and recovery, draining, fencing, and the reaper.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use domain::{Chain, ControlAction, DesiredState, WorkerId, WorkerKind, WorkerStatus};
use store::{AuditList, Store, StoreOptions, WorkerControl, WorkerRegister, WorkerRow};
use testkit::{Backend, TestDb, wait_for};
use tokio_util::sync::CancellationToken;
use worker::runtime::SourceBuilder;
use worker::{
    JobSource, Reaper, ReaperConfig, RuntimeConfig, RuntimeExit, Work, WorkerFault, WorkerRuntime,
    WorkerSpec,
};

const WAIT: Duration = Duration::from_secs(10);

/// A job source the test steers: it can fail, be slow, and counts what it did.
#[derive(Default)]
struct Scripted {
    /// Building the source fails (the node is unreachable at start).
    unbuildable: AtomicBool,
    faulty: AtomicBool,
    job_duration_ms: AtomicUsize,
    runs: AtomicUsize,
    closed: AtomicUsize,
}

/// The source handed to the runtime; the test keeps another handle to steer it.
struct Shared(Arc<Scripted>);

#[async_trait]
impl JobSource for Shared {
    async fn run_once(&self) -> Result<Work, WorkerFault> {
        if self.0.faulty.load(Ordering::SeqCst) {
            return Err(WorkerFault("node unreachable: connection refused".into()));
        }
        self.0.runs.fetch_add(1, Ordering::SeqCst);
        let duration = self.0.job_duration_ms.load(Ordering::SeqCst);
        if duration > 0 {
            tokio::time::sleep(Duration::from_millis(duration as u64)).await;
            return Ok(Work::Done);
        }
        Ok(Work::Idle)
    }

    async fn close(&self) {
        self.0.closed.fetch_add(1, Ordering::SeqCst);
    }
}

struct Harness {
    db: TestDb,
    store: Store,
    scripted: Arc<Scripted>,
    builds: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<RuntimeExit>,
    id: WorkerId,
}

fn config(db: &TestDb, id: &WorkerId) -> RuntimeConfig {
    RuntimeConfig {
        id: id.clone(),
        name: "test worker".into(),
        spec: WorkerSpec {
            kind: WorkerKind::Withdrawal,
            chain: Chain::Tron,
        },
        database_url: db.url.clone(),
        store_options: StoreOptions::default(),
        heartbeat_interval: Duration::from_millis(200),
        drain_timeout: Duration::from_secs(5),
        concurrency: 2,
        idle_poll_interval: Duration::from_millis(20),
        error_backoff_min: Duration::from_millis(50),
        error_backoff_max: Duration::from_millis(200),
        version: "test".into(),
        host: "test-host".into(),
        pid: std::process::id(),
        config_json: serde_json::json!({}),
    }
}

impl Harness {
    async fn start(backend: Backend, tweak: impl FnOnce(&mut RuntimeConfig, &Scripted)) -> Harness {
        Harness::start_expecting(backend, tweak, WorkerStatus::Running).await
    }

    async fn start_expecting(
        backend: Backend,
        tweak: impl FnOnce(&mut RuntimeConfig, &Scripted),
        first_status: WorkerStatus,
    ) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("worker=debug,store=debug")
            .try_init();
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = WorkerId::new("tron-withdrawal-1").unwrap();
        let scripted = Arc::new(Scripted::default());
        let mut config = config(&db, &id);
        tweak(&mut config, &scripted);
        let builds = Arc::new(AtomicUsize::new(0));
        let build_source: SourceBuilder = {
            let scripted = Arc::clone(&scripted);
            let builds = Arc::clone(&builds);
            Arc::new(move |_| {
                let scripted = Arc::clone(&scripted);
                builds.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    if scripted.unbuildable.load(Ordering::SeqCst) {
                        return Err(WorkerFault("cannot build: node unreachable".into()));
                    }
                    Ok(Arc::new(Shared(scripted)) as Arc<dyn JobSource>)
                })
            })
        };
        let shutdown = CancellationToken::new();
        let runtime = WorkerRuntime::new(config, build_source);
        let task = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { runtime.run(shutdown).await.expect("runtime") })
        };
        let harness = Harness {
            db,
            store,
            scripted,
            builds,
            shutdown,
            task,
            id,
        };
        harness.wait_status(first_status).await;
        harness
    }

    async fn row(&self) -> WorkerRow {
        self.store
            .worker_get(&self.id)
            .await
            .unwrap()
            .expect("worker row")
    }

    async fn wait_status(&self, status: WorkerStatus) -> WorkerRow {
        wait_for(&format!("status {status}"), WAIT, || async {
            let row = self.store.worker_get(&self.id).await.unwrap()?;
            (row.status == status).then_some(row)
        })
        .await
    }

    async fn control(&self, action: ControlAction) -> WorkerRow {
        self.store
            .worker_control(&WorkerControl {
                id: self.id.clone(),
                action,
                actor: "test".into(),
                now: Utc::now(),
            })
            .await
            .unwrap()
    }
}

async fn stop_start_restart_round_trip(backend: Backend) {
    let mut harness = Harness::start(backend, |_, _| {}).await;
    assert_eq!(harness.builds.load(Ordering::SeqCst), 1);

    harness.control(ControlAction::Stop).await;
    harness.wait_status(WorkerStatus::Stopped).await;
    // Stopped means no work is taken.
    let runs = harness.scripted.runs.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        harness.scripted.runs.load(Ordering::SeqCst),
        runs,
        "a stopped worker takes no work"
    );

    harness.control(ControlAction::Start).await;
    harness.wait_status(WorkerStatus::Running).await;
    wait_for("work again", WAIT, || async {
        (harness.scripted.runs.load(Ordering::SeqCst) > runs).then_some(())
    })
    .await;

    let before = harness.row().await;
    harness.control(ControlAction::Restart).await;
    let restarted = wait_for("restart applied", WAIT, || async {
        let row = harness.row().await;
        (row.applied_generation == before.generation + 1 && row.status == WorkerStatus::Running)
            .then_some(row)
    })
    .await;
    assert_eq!(restarted.generation, before.generation + 1);
    assert_eq!(
        restarted.incarnation, before.incarnation,
        "a restart keeps the process"
    );
    assert_eq!(
        harness.builds.load(Ordering::SeqCst),
        2,
        "a restart rebuilds the job source"
    );
    assert!(
        harness.scripted.closed.load(Ordering::SeqCst) >= 1,
        "and closes the old one"
    );

    harness.shutdown.cancel();
    assert_eq!((&mut harness.task).await.unwrap(), RuntimeExit::Shutdown);
    assert_eq!(harness.row().await.status, WorkerStatus::Offline);
    drop(harness.db);
}

async fn fault_reports_error_then_recovers(backend: Backend) {
    let mut harness = Harness::start(backend, |_, _| {}).await;
    harness.scripted.faulty.store(true, Ordering::SeqCst);
    let errored = harness.wait_status(WorkerStatus::Error).await;
    assert_eq!(
        errored.last_error.as_deref(),
        Some("node unreachable: connection refused")
    );
    harness.scripted.faulty.store(false, Ordering::SeqCst);
    let recovered = harness.wait_status(WorkerStatus::Running).await;
    assert_eq!(
        recovered.last_error.as_deref(),
        Some("node unreachable: connection refused"),
        "the last error stays readable"
    );

    // A worker in error still obeys stop.
    harness.scripted.faulty.store(true, Ordering::SeqCst);
    harness.wait_status(WorkerStatus::Error).await;
    harness.control(ControlAction::Stop).await;
    harness.wait_status(WorkerStatus::Stopped).await;
    harness.shutdown.cancel();
    assert_eq!((&mut harness.task).await.unwrap(), RuntimeExit::Shutdown);
}

async fn a_worker_that_could_not_start_obeys_stop_and_start(backend: Backend) {
    let mut harness = Harness::start_expecting(
        backend,
        |_, scripted| scripted.unbuildable.store(true, Ordering::SeqCst),
        WorkerStatus::Error,
    )
    .await;
    assert_eq!(
        harness.row().await.last_error.as_deref(),
        Some("cannot build: node unreachable")
    );
    harness.control(ControlAction::Stop).await;
    harness.wait_status(WorkerStatus::Stopped).await;
    // The node comes back while the worker is stopped; start must build the source and work.
    harness.scripted.unbuildable.store(false, Ordering::SeqCst);
    harness.control(ControlAction::Start).await;
    harness.wait_status(WorkerStatus::Running).await;
    wait_for("work after start", WAIT, || async {
        (harness.scripted.runs.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    harness.shutdown.cancel();
    assert_eq!((&mut harness.task).await.unwrap(), RuntimeExit::Shutdown);
}

async fn shutdown_finishes_in_flight_work_and_goes_offline(backend: Backend) {
    let mut harness = Harness::start(backend, |_, scripted| {
        scripted.job_duration_ms.store(300, Ordering::SeqCst)
    })
    .await;
    wait_for("jobs in flight", WAIT, || async {
        (harness.scripted.runs.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    let started = harness.scripted.runs.load(Ordering::SeqCst);
    harness.shutdown.cancel();
    assert_eq!((&mut harness.task).await.unwrap(), RuntimeExit::Shutdown);
    let row = harness.row().await;
    assert_eq!(row.status, WorkerStatus::Offline);
    // Nothing new started after the shutdown request beyond what was in flight.
    assert!(harness.scripted.runs.load(Ordering::SeqCst) <= started + 2);
}

async fn drain_timeout_abandons_stuck_work(backend: Backend) {
    let mut harness = Harness::start(backend, |config, scripted| {
        config.drain_timeout = Duration::from_millis(300);
        scripted.job_duration_ms.store(60_000, Ordering::SeqCst);
    })
    .await;
    wait_for("a stuck job", WAIT, || async {
        (harness.scripted.runs.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    let asked = std::time::Instant::now();
    harness.control(ControlAction::Stop).await;
    harness.wait_status(WorkerStatus::Stopped).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the drain gave up at its timeout"
    );
    harness.shutdown.cancel();
    (&mut harness.task).await.unwrap();
}

async fn a_second_process_fences_out_the_first(backend: Backend) {
    let mut harness = Harness::start(backend, |_, _| {}).await;
    // Another process registers under the same id (say, the supervisor restarted it).
    harness
        .store
        .worker_register(&WorkerRegister {
            id: harness.id.clone(),
            name: "test worker".into(),
            kind: WorkerKind::Withdrawal,
            chain: Chain::Tron,
            pid: Some(1),
            host: Some("other".into()),
            port: None,
            version: None,
            config: serde_json::json!({}),
            incarnation: "someone-else".into(),
            now: Utc::now(),
        })
        .await
        .unwrap();
    let exit = tokio::time::timeout(WAIT, &mut harness.task)
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(exit, RuntimeExit::Superseded);
    let row = harness
        .store
        .worker_get(&harness.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.incarnation.as_deref(),
        Some("someone-else"),
        "the old process left the row alone"
    );
    assert_eq!(row.host.as_deref(), Some("other"));
}

async fn reaper_marks_a_silent_worker_lost_and_a_live_one_reports_back(backend: Backend) {
    let mut harness = Harness::start(backend, |config, _| {
        config.heartbeat_interval = Duration::from_millis(100)
    })
    .await;
    let reaper = Reaper::new(
        harness.store.clone(),
        ReaperConfig {
            interval: Duration::from_millis(50),
            lost_after: Duration::from_millis(300),
            batch: 100,
        },
    );
    // With a clock far ahead, the live worker looks silent: the reaper marks it lost...
    let reaped = reaper
        .run_once(Utc::now() + chrono::Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(reaped.len(), 1);
    let audit = harness
        .store
        .audit_list(&AuditList {
            action: Some("worker.lost".into()),
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    // ...and the worker, alive after all, reports back at its next heartbeat.
    harness.wait_status(WorkerStatus::Running).await;
    // At the real time it is fresh: nothing to reap.
    assert!(reaper.run_once(Utc::now()).await.unwrap().is_empty());

    // A worker that really went silent: abandon the runtime without letting it report.
    harness.task.abort();
    let _ = (&mut harness.task).await;
    let lost = wait_for("lost", WAIT, || async {
        let reaped = reaper.run_once(Utc::now()).await.unwrap();
        reaped.into_iter().next()
    })
    .await;
    assert_eq!(lost.status, WorkerStatus::Lost);
    assert_eq!(lost.desired_state, DesiredState::Running);
}

testkit::on_both_stores!(
    stop_start_restart_round_trip,
    fault_reports_error_then_recovers,
    a_worker_that_could_not_start_obeys_stop_and_start,
    shutdown_finishes_in_flight_work_and_goes_offline,
    drain_timeout_abandons_stuck_work,
    a_second_process_fences_out_the_first,
    reaper_marks_a_silent_worker_lost_and_a_live_one_reports_back,
);
