//! The queue contract's conformance suite: the same cases against Postgres, SQLite and
//! Redis. Enqueue (one, bulk, deduplicated), claims with leases and fencing tokens, retries
//! and the dead letter, snooze, rescue, pause, concurrency limits, stats, pruning, wake-ups,
//! and many concurrent claimers that never share a job.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use domain::{JobState, Name, RetryPolicy};
use queue::{Backend, QueueError, RedisBackend, SqlBackend, Wake};
use store::{
    JobClaim, JobFail, JobFinish, JobInsert, JobLeaseExtend, JobList, JobPrune, JobRescue,
    JobSnooze,
};
use testkit::TestDb;

/// One backend under test, with what keeps it alive.
struct Harness {
    backend: Arc<dyn Backend>,
    _db: Option<TestDb>,
}

impl Harness {
    async fn postgres() -> Harness {
        Harness::sql(TestDb::postgres().await).await
    }

    async fn sqlite() -> Harness {
        Harness::sql(TestDb::sqlite()).await
    }

    async fn sql(db: TestDb) -> Harness {
        let store = db.store().await;
        Harness {
            backend: Arc::new(SqlBackend::new(store)),
            _db: Some(db),
        }
    }

    /// A fresh key prefix on the local Redis, so tests never see each other's keys.
    async fn redis() -> Harness {
        let url = std::env::var("COINSENSEI_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
        let prefix = format!("cs-test-{}:", rand_suffix());
        let backend = RedisBackend::connect(&url, &prefix)
            .await
            .unwrap_or_else(|error| panic!("tests need Redis at {url}: {error}"));
        Harness {
            backend: Arc::new(backend),
            _db: None,
        }
    }
}

fn rand_suffix() -> String {
    format!("{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish()
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

fn job(queue: &str, now: DateTime<Utc>) -> JobInsert {
    JobInsert {
        queue: name(queue),
        kind: name("noop"),
        args: serde_json::json!({"n": 1}),
        priority: 0,
        run_at: now,
        retry: None,
        unique_key: None,
        now,
    }
}

fn claim(queue: &str, owner: &str, limit: u32, now: DateTime<Utc>) -> JobClaim {
    JobClaim {
        queue: name(queue),
        owner: owner.into(),
        limit,
        lease_until: now + Duration::from_secs(30),
        now,
    }
}

fn finish(id: i64, token: i64, now: DateTime<Utc>) -> JobFinish {
    JobFinish { id, token, now }
}

async fn claims_by_priority_and_fences_completion(harness: &Harness) {
    let backend = &harness.backend;
    let mut low = job("q", at(0));
    low.priority = 5;
    let low = backend.enqueue(&low).await.unwrap();
    let first = backend.enqueue(&job("q", at(1))).await.unwrap();
    let second = backend.enqueue(&job("q", at(2))).await.unwrap();
    assert!(low.inserted && first.inserted && second.inserted);

    let claimed = backend.claim(&claim("q", "w1", 2, at(3))).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|job| job.id).collect();
    assert_eq!(ids, [first.id, second.id], "priority first, then run_at");
    let held = &claimed[0];
    assert_eq!(
        (held.state, held.attempt, held.token),
        (JobState::Running, 1, 1)
    );
    assert_eq!(held.lease_owner.as_deref(), Some("w1"));

    let done = backend
        .complete(&finish(held.id, held.token, at(4)))
        .await
        .unwrap();
    assert_eq!(
        (done.state, done.finished_at),
        (JobState::Completed, Some(at(4)))
    );
    // Completing twice, with a wrong token, or an unknown job: refused, nothing changes.
    assert!(matches!(
        backend.complete(&finish(held.id, held.token, at(5))).await,
        Err(QueueError::Stale(_))
    ));
    let other = &claimed[1];
    assert!(matches!(
        backend
            .complete(&finish(other.id, other.token + 1, at(5)))
            .await,
        Err(QueueError::Stale(_))
    ));
    assert_eq!(
        backend.get(other.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    assert!(matches!(
        backend.complete(&finish(999_999, 1, at(5))).await,
        Err(QueueError::NotFound { .. })
    ));

    // A batch completion completes what it still holds and reports it.
    let done = backend
        .complete_many(&[
            finish(other.id, other.token, at(6)),
            finish(held.id, held.token, at(6)),
        ])
        .await
        .unwrap();
    assert_eq!(done, [other.id]);
    // The low-priority job is next.
    assert_eq!(
        backend.claim(&claim("q", "w1", 5, at(7))).await.unwrap()[0].id,
        low.id
    );
}

async fn unique_keys_deduplicate_while_unfinished(harness: &Harness) {
    let backend = &harness.backend;
    let mut keyed = job("q", at(0));
    keyed.unique_key = Some("withdrawal:42".into());
    let first = backend.enqueue(&keyed).await.unwrap();
    let again = backend.enqueue(&keyed).await.unwrap();
    assert_eq!((again.id, again.inserted), (first.id, false));
    // Another queue has its own keys.
    let mut elsewhere = keyed.clone();
    elsewhere.queue = name("other");
    assert!(backend.enqueue(&elsewhere).await.unwrap().inserted);

    let claimed = backend.claim(&claim("q", "w1", 1, at(1))).await.unwrap();
    assert_eq!(
        backend.enqueue(&keyed).await.unwrap().id,
        first.id,
        "still unfinished while running"
    );
    backend
        .complete(&finish(claimed[0].id, claimed[0].token, at(2)))
        .await
        .unwrap();
    let after = backend.enqueue(&keyed).await.unwrap();
    assert!(
        after.inserted && after.id != first.id,
        "a finished job frees its key"
    );
}

async fn bulk_enqueue_keeps_order_and_is_all_or_nothing(harness: &Harness) {
    let backend = &harness.backend;
    let mut batch: Vec<JobInsert> = (0..500)
        .map(|n| {
            let mut insert = job(if n % 2 == 0 { "even" } else { "odd" }, at(0));
            insert.args = serde_json::json!({"n": n});
            insert
        })
        .collect();
    batch[10].unique_key = Some("k".into());
    batch[20].unique_key = Some("k".into());
    batch[20].queue = batch[10].queue.clone();
    let result = backend.enqueue_many(&batch).await.unwrap();
    assert_eq!(result.len(), 500);
    assert_eq!(
        (result[20].id, result[20].inserted),
        (result[10].id, false),
        "deduplicated within the batch"
    );
    assert_eq!(
        result.iter().filter(|inserted| inserted.inserted).count(),
        499
    );
    let stored = backend.get(result[123].id).await.unwrap().unwrap();
    assert_eq!(
        stored.args,
        serde_json::json!({"n": 123}),
        "each input row knows its id"
    );
    assert_eq!(stored.queue.as_str(), "odd");

    let too_many: Vec<JobInsert> = (0..domain::limits::JOB_ENQUEUE_BATCH_MAX + 1)
        .map(|_| job("big", at(0)))
        .collect();
    assert!(matches!(
        backend.enqueue_many(&too_many).await,
        Err(QueueError::Invalid(_))
    ));
    let mut one_bad = vec![job("big", at(0)), job("big", at(0))];
    one_bad[1].retry = Some(RetryPolicy {
        max_attempts: 0,
        ..RetryPolicy::default()
    });
    assert!(matches!(
        backend.enqueue_many(&one_bad).await,
        Err(QueueError::Invalid(_))
    ));
    let big = backend
        .list(&JobList {
            queue: Some(name("big")),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(big.is_empty(), "a refused batch writes nothing");
    assert_eq!(backend.enqueue_many(&[]).await.unwrap(), []);
}

async fn failures_retry_with_backoff_then_dead_letter(harness: &Harness) {
    let backend = &harness.backend;
    let mut insert = job("q", at(0));
    insert.retry = Some(RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    });
    let id = backend.enqueue(&insert).await.unwrap().id;
    let first = backend
        .claim(&claim("q", "w1", 1, at(1)))
        .await
        .unwrap()
        .remove(0);
    let retry_at = at(1) + first.retry_policy().retry_delay(1, 0).unwrap();
    let failed = backend
        .fail(&JobFail {
            id,
            token: first.token,
            error: "node timeout".into(),
            retry_at: Some(retry_at),
            now: at(1),
        })
        .await
        .unwrap();
    assert_eq!(
        (failed.state, failed.run_at),
        (JobState::Available, retry_at)
    );
    assert!(
        backend
            .claim(&claim("q", "w1", 1, at(1)))
            .await
            .unwrap()
            .is_empty(),
        "waits out its backoff"
    );
    let second = backend
        .claim(&claim("q", "w2", 1, retry_at))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((second.attempt, second.token), (2, 2));
    assert_eq!(
        second.retry_policy().retry_delay(2, 0),
        None,
        "that was the last attempt"
    );
    let dead = backend
        .fail(&JobFail {
            id,
            token: second.token,
            error: "reverted".into(),
            retry_at: None,
            now: at(9),
        })
        .await
        .unwrap();
    assert_eq!(
        (dead.state, dead.finished_at),
        (JobState::Failed, Some(at(9)))
    );
    let errors = dead.errors.as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        (errors[0]["attempt"].as_i64(), errors[0]["error"].as_str()),
        (Some(1), Some("node timeout"))
    );
    assert_eq!(
        (errors[1]["attempt"].as_i64(), errors[1]["error"].as_str()),
        (Some(2), Some("reverted"))
    );

    // The operator retries it: attempts start over, the history stays.
    let retried = backend.retry(id, at(10)).await.unwrap();
    assert_eq!(
        (
            retried.state,
            retried.attempt,
            retried.errors.as_array().unwrap().len()
        ),
        (JobState::Available, 0, 2)
    );
    assert!(
        matches!(
            backend.retry(id, at(10)).await,
            Err(QueueError::Conflict(_))
        ),
        "only dead jobs are retried"
    );
    let running = backend
        .claim(&claim("q", "w1", 1, at(11)))
        .await
        .unwrap()
        .remove(0);
    assert!(
        matches!(
            backend.discard(id, at(12)).await,
            Err(QueueError::Conflict(_))
        ),
        "a running job is not discarded"
    );
    backend
        .fail(&JobFail {
            id,
            token: running.token,
            error: "x".into(),
            retry_at: None,
            now: at(13),
        })
        .await
        .unwrap();
    assert_eq!(
        backend.discard(id, at(14)).await.unwrap().state,
        JobState::Cancelled
    );
    assert!(matches!(
        backend.retry(424_242, at(15)).await,
        Err(QueueError::NotFound { .. })
    ));
}

async fn snooze_waits_without_using_an_attempt(harness: &Harness) {
    let backend = &harness.backend;
    let id = backend.enqueue(&job("q", at(0))).await.unwrap().id;
    let running = backend
        .claim(&claim("q", "w1", 1, at(1)))
        .await
        .unwrap()
        .remove(0);
    let snoozed = backend
        .snooze(&JobSnooze {
            id,
            token: running.token,
            run_at: at(60),
            now: at(1),
        })
        .await
        .unwrap();
    assert_eq!(
        (snoozed.state, snoozed.attempt, snoozed.run_at),
        (JobState::Available, 0, at(60))
    );
    assert!(
        backend
            .claim(&claim("q", "w1", 1, at(59)))
            .await
            .unwrap()
            .is_empty()
    );
    let again = backend
        .claim(&claim("q", "w1", 1, at(60)))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.attempt, 1);
    let cancelled = backend
        .cancel(&finish(id, again.token, at(61)))
        .await
        .unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
}

async fn expired_leases_are_rescued_and_stale_holders_refused(harness: &Harness) {
    let backend = &harness.backend;
    let id = backend.enqueue(&job("q", at(0))).await.unwrap().id;
    let mut lease = claim("q", "w1", 1, at(0));
    lease.lease_until = at(10);
    let held = backend.claim(&lease).await.unwrap().remove(0);
    // The holder's heartbeat extends its leases; nobody else's.
    let extended = backend
        .extend_leases(&JobLeaseExtend {
            owner: "w1".into(),
            jobs: vec![(held.id, held.token)],
            lease_until: at(20),
            now: at(5),
        })
        .await
        .unwrap();
    assert_eq!(extended, 1);
    assert_eq!(
        backend
            .extend_leases(&JobLeaseExtend {
                owner: "w9".into(),
                jobs: vec![(held.id, held.token)],
                lease_until: at(90),
                now: at(5)
            })
            .await
            .unwrap(),
        0
    );
    let rescue = |now| JobRescue {
        owner: None,
        limit: 100,
        now,
    };
    assert!(
        backend.rescue(&rescue(at(15))).await.unwrap().is_empty(),
        "the extended lease holds"
    );
    let rescued = backend.rescue(&rescue(at(25))).await.unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(
        (
            rescued[0].state,
            rescued[0].rescues,
            rescued[0].lease_owner.as_deref()
        ),
        (JobState::Available, 1, None)
    );
    assert!(
        rescued[0].errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("w1")
    );

    // Someone else runs it now; the first holder wakes up and tries to finish: refused.
    let taken = backend
        .claim(&claim("q", "w2", 1, at(26)))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(taken.token, held.token + 1);
    assert!(matches!(
        backend.complete(&finish(id, held.token, at(27))).await,
        Err(QueueError::Stale(_))
    ));
    assert!(matches!(
        backend
            .fail(&JobFail {
                id,
                token: held.token,
                error: "late".into(),
                retry_at: None,
                now: at(27)
            })
            .await,
        Err(QueueError::Stale(_))
    ));
    assert_eq!(
        backend
            .complete(&finish(id, taken.token, at(28)))
            .await
            .unwrap()
            .state,
        JobState::Completed
    );

    // A job rescued after its last attempt fails for good; a lost worker's leases go at once.
    let mut once = job("q", at(30));
    once.retry = Some(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    });
    let once = backend.enqueue(&once).await.unwrap().id;
    backend.claim(&claim("q", "w3", 1, at(30))).await.unwrap();
    let released = backend
        .rescue(&JobRescue {
            owner: Some("w3".into()),
            limit: 100,
            now: at(31),
        })
        .await
        .unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(
        (released[0].id, released[0].state),
        (once, JobState::Failed)
    );
}

async fn paused_queues_and_concurrency_limits(harness: &Harness) {
    let backend = &harness.backend;
    let batch: Vec<JobInsert> = (0..5).map(|_| job("lane", at(0))).collect();
    backend.enqueue_many(&batch).await.unwrap();
    backend.pause(&name("lane"), true, at(1)).await.unwrap();
    assert!(
        backend
            .claim(&claim("lane", "w1", 5, at(2)))
            .await
            .unwrap()
            .is_empty(),
        "paused"
    );
    backend.pause(&name("lane"), false, at(3)).await.unwrap();
    backend
        .set_concurrency(&name("lane"), Some(1), at(3))
        .await
        .unwrap();
    let one = backend.claim(&claim("lane", "w1", 5, at(4))).await.unwrap();
    assert_eq!(one.len(), 1, "a serial lane");
    assert!(
        backend
            .claim(&claim("lane", "w2", 5, at(4)))
            .await
            .unwrap()
            .is_empty()
    );
    backend
        .complete(&finish(one[0].id, one[0].token, at(5)))
        .await
        .unwrap();
    assert_eq!(
        backend
            .claim(&claim("lane", "w2", 5, at(6)))
            .await
            .unwrap()
            .len(),
        1
    );
    backend
        .set_concurrency(&name("lane"), None, at(7))
        .await
        .unwrap();
    assert_eq!(
        backend
            .claim(&claim("lane", "w2", 5, at(8)))
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(matches!(
        backend.pause(&name("nope"), true, at(9)).await,
        Err(QueueError::NotFound { .. })
    ));
    assert!(matches!(
        backend.set_concurrency(&name("lane"), Some(0), at(9)).await,
        Err(QueueError::Invalid(_))
    ));
}

async fn stats_count_by_state_and_prune_keeps_the_newest(harness: &Harness) {
    let backend = &harness.backend;
    let batch: Vec<JobInsert> = (0..6).map(|_| job("q", at(0))).collect();
    backend.enqueue_many(&batch).await.unwrap();
    let mut later = job("q", at(0));
    later.run_at = at(100);
    backend.enqueue(&later).await.unwrap();
    let claimed = backend.claim(&claim("q", "w1", 4, at(1))).await.unwrap();
    backend
        .complete(&finish(claimed[0].id, claimed[0].token, at(2)))
        .await
        .unwrap();
    backend
        .complete(&finish(claimed[1].id, claimed[1].token, at(3)))
        .await
        .unwrap();
    backend
        .fail(&JobFail {
            id: claimed[2].id,
            token: claimed[2].token,
            error: "x".into(),
            retry_at: None,
            now: at(4),
        })
        .await
        .unwrap();
    let stats = backend.stats(at(5)).await.unwrap();
    assert_eq!(stats.len(), 1);
    let q = &stats[0];
    assert_eq!(
        (
            q.available,
            q.scheduled,
            q.running,
            q.completed,
            q.failed,
            q.cancelled
        ),
        (2, 1, 1, 2, 1, 0)
    );
    assert_eq!(q.oldest_available_at, Some(at(0)));
    assert!(!q.paused);

    let pruned = backend
        .prune(&JobPrune {
            keep_completed: 1,
            keep_failed: 0,
            finished_before: None,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    let left = backend
        .list(&JobList {
            state: Some(JobState::Completed),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|job| job.id).collect::<Vec<_>>(),
        [claimed[1].id],
        "the newest completed job stays"
    );
    let pruned = backend
        .prune(&JobPrune {
            keep_completed: 100,
            keep_failed: 100,
            finished_before: Some(at(10)),
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1, "and by age");
}

async fn concurrent_claimers_never_share_a_job(harness: &Harness) {
    let backend = &harness.backend;
    let batch: Vec<JobInsert> = (0..300).map(|_| job("q", at(0))).collect();
    backend.enqueue_many(&batch).await.unwrap();
    let backend = Arc::clone(backend);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let backend = Arc::clone(&backend);
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = backend
                    .claim(&claim("q", &format!("w{worker}"), 7, at(1)))
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                for job in claimed {
                    backend
                        .complete(&finish(job.id, job.token, at(2)))
                        .await
                        .unwrap();
                    mine.push(job.id);
                }
            }
        });
    }
    let mut seen = HashSet::new();
    while let Some(ids) = tasks.join_next().await {
        for id in ids.unwrap() {
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 300, "none lost");
}

async fn enqueues_wake_listeners(harness: &Harness) {
    let backend = &harness.backend;
    let mut wakeups = backend.wakeups().await.unwrap();
    backend.enqueue(&job("wake", Utc::now())).await.unwrap();
    let wake = tokio::time::timeout(Duration::from_secs(5), wakeups.next())
        .await
        .expect("a wake-up within 5 s")
        .unwrap();
    match backend.name() {
        // SQLite's cross-connection check cannot tell which queue changed.
        "sqlite" => assert!(matches!(wake, Wake::Any | Wake::Queue(_)), "{wake:?}"),
        _ => assert_eq!(wake, Wake::Queue(name("wake"))),
    }
}

async fn queues_have_their_own_retry_policy(harness: &Harness) {
    let backend = &harness.backend;
    let first = backend.enqueue(&job("q", at(0))).await.unwrap().id;
    let row = backend.get(first).await.unwrap().unwrap();
    assert_eq!(
        (row.max_attempts, row.backoff_base_ms),
        (3, 2_000),
        "the seed's defaults"
    );

    let policy = RetryPolicy {
        max_attempts: 5,
        backoff_base: Duration::from_secs(10),
        backoff_max: Duration::from_secs(60),
    };
    backend
        .set_retry(&name("q"), Some(policy), at(1))
        .await
        .unwrap();
    let second = backend.enqueue(&job("q", at(2))).await.unwrap().id;
    let row = backend.get(second).await.unwrap().unwrap();
    assert_eq!(
        (row.max_attempts, row.backoff_base_ms, row.backoff_max_ms),
        (5, 10_000, 60_000)
    );
    let bulk = backend
        .enqueue_many(&[job("q", at(3)), job("q", at(3))])
        .await
        .unwrap();
    for inserted in bulk {
        assert_eq!(
            backend
                .get(inserted.id)
                .await
                .unwrap()
                .unwrap()
                .max_attempts,
            5,
            "bulk jobs too"
        );
    }
    let mut explicit = job("q", at(4));
    explicit.retry = Some(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    });
    let explicit = backend.enqueue(&explicit).await.unwrap().id;
    assert_eq!(
        backend.get(explicit).await.unwrap().unwrap().max_attempts,
        1,
        "a job's own policy wins"
    );
    // Jobs already enqueued keep the policy they were given.
    assert_eq!(backend.get(first).await.unwrap().unwrap().max_attempts, 3);

    backend.set_retry(&name("q"), None, at(5)).await.unwrap();
    let third = backend.enqueue(&job("q", at(6))).await.unwrap().id;
    assert_eq!(backend.get(third).await.unwrap().unwrap().max_attempts, 3);
    assert!(matches!(
        backend.set_retry(&name("nope"), Some(policy), at(7)).await,
        Err(QueueError::NotFound { .. })
    ));
    let bad = RetryPolicy {
        max_attempts: 0,
        ..RetryPolicy::default()
    };
    assert!(matches!(
        backend.set_retry(&name("q"), Some(bad), at(7)).await,
        Err(QueueError::Invalid(_))
    ));
}

async fn a_job_failed_by_rescue_frees_its_unique_key(harness: &Harness) {
    let backend = &harness.backend;
    let mut keyed = job("q", at(0));
    keyed.unique_key = Some("withdrawal:42".into());
    keyed.retry = Some(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    });
    let first = backend.enqueue(&keyed).await.unwrap().id;
    let held = backend
        .claim(&claim("q", "w1", 1, at(1)))
        .await
        .unwrap()
        .remove(0);
    // Only the jobs named are extended, and a wrong token extends nothing.
    let wrong = JobLeaseExtend {
        owner: "w1".into(),
        jobs: vec![(held.id, held.token + 1)],
        lease_until: at(90),
        now: at(2),
    };
    assert_eq!(backend.extend_leases(&wrong).await.unwrap(), 0);
    // Its worker dies on the last attempt: the rescue fails the job for good...
    let rescued = backend
        .rescue(&JobRescue {
            owner: None,
            limit: 10,
            now: at(3600),
        })
        .await
        .unwrap();
    assert_eq!((rescued.len(), rescued[0].state), (1, JobState::Failed));
    // ...and the key is free for a new job.
    let again = backend.enqueue(&keyed).await.unwrap();
    assert!(again.inserted && again.id != first, "{again:?}");
}

async fn one_leader_at_a_time(harness: &Harness) {
    let backend = &harness.backend;
    let ttl = Duration::from_millis(300);
    let now = Utc::now();
    assert!(backend.lead("maintenance", "a", ttl, now).await.unwrap());
    assert!(
        !backend.lead("maintenance", "b", ttl, now).await.unwrap(),
        "a holds it"
    );
    assert!(
        backend.lead("maintenance", "a", ttl, now).await.unwrap(),
        "the holder renews"
    );
    assert!(
        backend.lead("other", "b", ttl, now).await.unwrap(),
        "names are independent"
    );
    // The holder stops renewing: after the ttl, someone else takes over.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(
        backend
            .lead("maintenance", "b", ttl, Utc::now())
            .await
            .unwrap()
    );
    assert!(
        !backend
            .lead("maintenance", "a", ttl, Utc::now())
            .await
            .unwrap()
    );
}

/// The lease owner is cleared when a job ends (a finished job holds no lease), but which
/// worker ran it last is kept: `last_worker`, set at each claim, left alone by completion,
/// failure, batch completion and retries.
async fn a_finished_job_keeps_its_last_worker(harness: &Harness) {
    let backend = &harness.backend;
    let first = backend.enqueue(&job("q", at(0))).await.unwrap().id;
    let second = backend.enqueue(&job("q", at(1))).await.unwrap().id;
    let waiting = backend.get(first).await.unwrap().unwrap();
    assert_eq!(waiting.last_worker, None, "never claimed");

    let claimed = backend.claim(&claim("q", "w1:a", 1, at(3))).await.unwrap();
    assert_eq!(claimed[0].id, first);
    assert_eq!(claimed[0].last_worker.as_deref(), Some("w1:a"));
    let done = backend
        .complete(&finish(first, claimed[0].token, at(4)))
        .await
        .unwrap();
    assert_eq!(done.lease_owner, None);
    assert_eq!(done.last_worker.as_deref(), Some("w1:a"));
    assert_eq!(
        backend
            .get(first)
            .await
            .unwrap()
            .unwrap()
            .last_worker
            .as_deref(),
        Some("w1:a")
    );

    // Failed and retried elsewhere: the last claim's worker.
    let held = backend
        .claim(&claim("q", "w1:a", 1, at(5)))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(held.id, second);
    let retried = backend
        .fail(&JobFail {
            id: second,
            token: held.token,
            error: "node timeout".into(),
            retry_at: Some(at(6)),
            now: at(5),
        })
        .await
        .unwrap();
    assert_eq!(retried.state, JobState::Available);
    assert_eq!(retried.last_worker.as_deref(), Some("w1:a"));
    let again = backend
        .claim(&claim("q", "w2:b", 1, at(7)))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.id, second);
    let failed = backend
        .fail(&JobFail {
            id: second,
            token: again.token,
            error: "node timeout".into(),
            retry_at: None,
            now: at(8),
        })
        .await
        .unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.lease_owner, None);
    assert_eq!(failed.last_worker.as_deref(), Some("w2:b"));

    // A batch completion keeps it too.
    let third = backend.enqueue(&job("q", at(9))).await.unwrap().id;
    let held = backend
        .claim(&claim("q", "w3:c", 1, at(9)))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(held.id, third);
    assert_eq!(
        backend
            .complete_many(&[finish(third, held.token, at(10))])
            .await
            .unwrap(),
        [third]
    );
    let done = backend.get(third).await.unwrap().unwrap();
    assert_eq!(
        (done.state, done.lease_owner, done.last_worker.as_deref()),
        (JobState::Completed, None, Some("w3:c"))
    );
}

macro_rules! on_every_backend {
    ($($case:ident),+ $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(&super::Harness::postgres().await).await; })+
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(&super::Harness::sqlite().await).await; })+
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(&super::Harness::redis().await).await; })+
        }
    };
}

on_every_backend!(
    claims_by_priority_and_fences_completion,
    unique_keys_deduplicate_while_unfinished,
    bulk_enqueue_keeps_order_and_is_all_or_nothing,
    failures_retry_with_backoff_then_dead_letter,
    snooze_waits_without_using_an_attempt,
    expired_leases_are_rescued_and_stale_holders_refused,
    paused_queues_and_concurrency_limits,
    stats_count_by_state_and_prune_keeps_the_newest,
    concurrent_claimers_never_share_a_job,
    enqueues_wake_listeners,
    one_leader_at_a_time,
    queues_have_their_own_retry_policy,
    a_job_failed_by_rescue_frees_its_unique_key,
    a_finished_job_keeps_its_last_worker,
);
