//! The runner and maintenance on the SQL backends: each handler outcome settles the job as it
//! should, a runner whose lease was taken over cannot settle, and maintenance rescues expired
//! leases and prunes finished jobs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use domain::{JobState, Name, RetryPolicy};
use queue::{
    Backend, Handler, Maintenance, MaintenanceConfig, Outcome, Ran, Registry, Runner, RunnerConfig,
    SqlBackend,
};
use store::{JobInsert, JobRow};
use testkit::{Backend as Db, TestDb};

struct Fixed(Outcome);

#[async_trait]
impl Handler for Fixed {
    async fn run(&self, _job: &JobRow) -> Outcome {
        self.0.clone()
    }
}

fn insert(kind: &str) -> JobInsert {
    let now = Utc::now();
    JobInsert {
        queue: Name::new("q").unwrap(),
        kind: Name::new(kind).unwrap(),
        args: serde_json::json!({"ms": 600}),
        priority: 0,
        run_at: now,
        retry: Some(RetryPolicy {
            max_attempts: 2,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(20),
        }),
        unique_key: None,
        now,
    }
}

async fn backend(backend: Db) -> (TestDb, Arc<dyn Backend>) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    (db, Arc::new(SqlBackend::new(store)))
}

fn runner(backend: &Arc<dyn Backend>, owner: &str, lease: Duration) -> Runner {
    let mut registry = Registry::default();
    registry.register("ok", Arc::new(Fixed(Outcome::Done)));
    registry.register("flaky", Arc::new(Fixed(Outcome::Retry("timeout".into()))));
    registry.register(
        "broken",
        Arc::new(Fixed(Outcome::Fatal("bad address".into()))),
    );
    registry.register(
        "later",
        Arc::new(Fixed(Outcome::Snooze(Duration::from_secs(60)))),
    );
    Runner::new(
        Arc::clone(backend),
        registry,
        RunnerConfig {
            queue: Name::new("q").unwrap(),
            owner: owner.into(),
            lease,
        },
    )
}

async fn each_outcome_settles_the_job(db: Db) {
    let (_db, backend) = backend(db).await;
    let runner = runner(&backend, "w1", Duration::from_secs(30));
    assert_eq!(runner.run_one().await.unwrap(), Ran::Idle);
    for (kind, ran, state, attempt) in [
        ("ok", Ran::Done, JobState::Completed, 1),
        (
            "broken",
            Ran::Failed("bad address".into()),
            JobState::Failed,
            1,
        ),
        ("later", Ran::Done, JobState::Available, 0),
        ("mystery", Ran::Failed(String::new()), JobState::Failed, 1),
    ] {
        let id = backend.enqueue(&insert(kind)).await.unwrap().id;
        let got = runner.run_one().await.unwrap();
        if kind == "mystery" {
            assert!(
                matches!(&got, Ran::Failed(message) if message.contains("no handler for job kind \"mystery\"")),
                "{got:?}"
            );
        } else {
            assert_eq!(got, ran, "{kind}");
        }
        let job = backend.get(id).await.unwrap().unwrap();
        assert_eq!((job.state, job.attempt), (state, attempt), "{kind}");
        if kind == "later" {
            assert!(
                job.run_at > Utc::now() + Duration::from_secs(50),
                "snoozed a minute"
            );
            backend.discard(id, Utc::now()).await.unwrap();
        }
    }
    // A retryable failure waits out its backoff, then dead-letters after its last attempt.
    let id = backend.enqueue(&insert("flaky")).await.unwrap().id;
    assert_eq!(
        runner.run_one().await.unwrap(),
        Ran::Failed("timeout".into())
    );
    let job = backend.get(id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Available, 1));
    testkit::wait_for("the retry", Duration::from_secs(5), || async {
        (runner.run_one().await.unwrap() != Ran::Idle).then_some(())
    })
    .await;
    let job = backend.get(id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempt, job.errors.as_array().unwrap().len()),
        (JobState::Failed, 2, 2)
    );
}

async fn a_runner_whose_lease_was_taken_cannot_settle(db: Db) {
    let (_db, backend) = backend(db).await;
    let slow = runner(&backend, "slow", Duration::from_millis(200));
    let id = backend.enqueue(&insert("sleep")).await.unwrap().id;
    let slow_run = tokio::spawn(async move { slow.run_one().await });
    // The slow runner's lease expires (nobody extends it); maintenance takes the job back and
    // another runner finishes it.
    let maintenance = Maintenance::new(Arc::clone(&backend), MaintenanceConfig::default());
    testkit::wait_for("the rescue", Duration::from_secs(5), || async {
        (maintenance.rescue_once(Utc::now()).await.unwrap() > 0).then_some(())
    })
    .await;
    let fast = runner(&backend, "fast", Duration::from_secs(30));
    assert_eq!(
        fast.run_one().await.unwrap(),
        Ran::Done,
        "the job runs again elsewhere"
    );
    let lost = slow_run.await.unwrap().unwrap();
    assert!(matches!(lost, Ran::Lost(_)), "{lost:?}");
    let job = backend.get(id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.rescues, job.attempt),
        (JobState::Completed, 1, 2)
    );
}

async fn maintenance_prunes_beyond_the_kept_counts(db: Db) {
    let (_db, backend) = backend(db).await;
    let runner = runner(&backend, "w1", Duration::from_secs(30));
    for _ in 0..5 {
        backend.enqueue(&insert("ok")).await.unwrap();
        backend.enqueue(&insert("broken")).await.unwrap();
    }
    while runner.run_one().await.unwrap() != Ran::Idle {}
    let config = MaintenanceConfig {
        keep_completed: 2,
        keep_failed: 1,
        ..MaintenanceConfig::default()
    };
    let report = Maintenance::new(Arc::clone(&backend), config)
        .run_once(Utc::now())
        .await
        .unwrap();
    assert_eq!((report.rescued, report.pruned), (0, 7));
    let stats = backend.stats(Utc::now()).await.unwrap();
    assert_eq!((stats[0].completed, stats[0].failed), (2, 1));
}

async fn only_jobs_still_running_keep_their_lease(db: Db) {
    let (_db, backend) = backend(db).await;
    let runner = Arc::new(runner(&backend, "w1", Duration::from_secs(30)));
    let mut slow = insert("sleep");
    slow.args = serde_json::json!({"ms": 5_000});
    backend.enqueue(&slow).await.unwrap();
    let task = {
        let runner = Arc::clone(&runner);
        tokio::spawn(async move { runner.run_one().await })
    };
    testkit::wait_for("the job running", Duration::from_secs(5), || async {
        (backend.stats(Utc::now()).await.unwrap().first()?.running == 1).then_some(())
    })
    .await;
    assert_eq!(
        runner.extend_leases().await.unwrap(),
        1,
        "a running job is extended"
    );
    // The run is aborted (a drain timeout, a panic): its lease is no longer extended, so it
    // expires and the job is rescued instead of being held forever.
    task.abort();
    let _ = task.await;
    assert_eq!(runner.extend_leases().await.unwrap(), 0);
}

testkit::on_both_stores!(
    only_jobs_still_running_keep_their_lease,
    each_outcome_settles_the_job,
    a_runner_whose_lease_was_taken_cannot_settle,
    maintenance_prunes_beyond_the_kept_counts,
);
