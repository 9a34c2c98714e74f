//! The job queue's store contract, run against Postgres and SQLite: enqueue (one, bulk, in the
//! caller's transaction, deduplicated), claims with leases and fencing tokens, retries and the
//! dead letter, snooze, rescue, pause, concurrency limits, stats, pruning and wake-ups.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use domain::{JobState, Name, RetryPolicy};
use store::{
    AuditInsert, AuditList, Change, JobClaim, JobFail, JobFinish, JobInsert, JobLeaseExtend,
    JobList, JobPrune, JobRescue, JobSnooze, Store, StoreError,
};
use testkit::{Backend, TestDb};

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
        retry: RetryPolicy::default(),
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

async fn claims_by_priority_and_fences_completion(db: &TestDb) {
    let store = db.store().await;
    let mut low = job("q", at(0));
    low.priority = 5;
    let low = store.job_insert(&low).await.unwrap();
    let first = store.job_insert(&job("q", at(1))).await.unwrap();
    let second = store.job_insert(&job("q", at(2))).await.unwrap();
    assert!(low.inserted && first.inserted && second.inserted);

    let claimed = store.job_claim(&claim("q", "w1", 2, at(3))).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|job| job.id).collect();
    assert_eq!(ids, [first.id, second.id], "priority first, then run_at");
    let held = &claimed[0];
    assert_eq!(
        (held.state, held.attempt, held.token),
        (JobState::Running, 1, 1)
    );
    assert_eq!(held.lease_owner.as_deref(), Some("w1"));

    let done = store
        .job_complete(&finish(held.id, held.token, at(4)))
        .await
        .unwrap();
    assert_eq!(
        (done.state, done.finished_at),
        (JobState::Completed, Some(at(4)))
    );
    // Completing twice, with a wrong token, or an unknown job: refused, nothing changes.
    assert!(matches!(
        store
            .job_complete(&finish(held.id, held.token, at(5)))
            .await,
        Err(StoreError::Stale(_))
    ));
    let other = &claimed[1];
    assert!(matches!(
        store
            .job_complete(&finish(other.id, other.token + 1, at(5)))
            .await,
        Err(StoreError::Stale(_))
    ));
    assert_eq!(
        store.job_get(other.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    assert!(matches!(
        store.job_complete(&finish(999_999, 1, at(5))).await,
        Err(StoreError::NotFound { .. })
    ));

    // A batch completion completes what it still holds and reports it.
    let done = store
        .job_complete_many(&[
            finish(other.id, other.token, at(6)),
            finish(held.id, held.token, at(6)),
        ])
        .await
        .unwrap();
    assert_eq!(done, [other.id]);
    // The low-priority job is next.
    assert_eq!(
        store.job_claim(&claim("q", "w1", 5, at(7))).await.unwrap()[0].id,
        low.id
    );
}

async fn unique_keys_deduplicate_while_unfinished(db: &TestDb) {
    let store = db.store().await;
    let mut keyed = job("q", at(0));
    keyed.unique_key = Some("withdrawal:42".into());
    let first = store.job_insert(&keyed).await.unwrap();
    let again = store.job_insert(&keyed).await.unwrap();
    assert_eq!((again.id, again.inserted), (first.id, false));
    // Another queue has its own keys.
    let mut elsewhere = keyed.clone();
    elsewhere.queue = name("other");
    assert!(store.job_insert(&elsewhere).await.unwrap().inserted);

    let claimed = store.job_claim(&claim("q", "w1", 1, at(1))).await.unwrap();
    assert_eq!(
        store.job_insert(&keyed).await.unwrap().id,
        first.id,
        "still unfinished while running"
    );
    store
        .job_complete(&finish(claimed[0].id, claimed[0].token, at(2)))
        .await
        .unwrap();
    let after = store.job_insert(&keyed).await.unwrap();
    assert!(
        after.inserted && after.id != first.id,
        "a finished job frees its key"
    );
}

async fn bulk_enqueue_keeps_order_and_is_all_or_nothing(db: &TestDb) {
    let store = db.store().await;
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
    let result = store.job_insert_many(&batch).await.unwrap();
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
    let stored = store.job_get(result[123].id).await.unwrap().unwrap();
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
        store.job_insert_many(&too_many).await,
        Err(StoreError::Invalid(_))
    ));
    let mut one_bad = vec![job("big", at(0)), job("big", at(0))];
    one_bad[1].retry.max_attempts = 0;
    assert!(matches!(
        store.job_insert_many(&one_bad).await,
        Err(StoreError::Invalid(_))
    ));
    let big = store
        .job_list(&JobList {
            queue: Some(name("big")),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(big.is_empty(), "a refused batch writes nothing");
    assert_eq!(store.job_insert_many(&[]).await.unwrap(), []);
}

async fn enqueue_commits_with_the_callers_data(db: &TestDb) {
    let store = db.store().await;
    let audit = |target: &str| AuditInsert {
        actor: "app".into(),
        action: "withdrawal.requested".into(),
        target: target.into(),
        details: serde_json::json!({}),
        now: at(0),
    };
    let mut transaction = store.begin().await.unwrap();
    transaction
        .audit_insert(&audit("withdrawal:1"))
        .await
        .unwrap();
    let rolled_back = transaction
        .job_insert(&job("payouts", at(0)))
        .await
        .unwrap();
    transaction.rollback().await.unwrap();
    assert!(store.job_get(rolled_back.id).await.unwrap().is_none());

    let mut transaction = store.begin().await.unwrap();
    transaction
        .audit_insert(&audit("withdrawal:2"))
        .await
        .unwrap();
    let committed = transaction
        .job_insert(&job("payouts", at(0)))
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    assert_eq!(
        store.job_get(committed.id).await.unwrap().unwrap().state,
        JobState::Available
    );
    let entries = store
        .audit_list(&AuditList {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let targets: Vec<&str> = entries.iter().map(|entry| entry.target.as_str()).collect();
    assert_eq!(
        targets,
        ["withdrawal:2"],
        "the job and the caller's data commit or vanish together"
    );
}

async fn failures_retry_with_backoff_then_dead_letter(db: &TestDb) {
    let store = db.store().await;
    let mut insert = job("q", at(0));
    insert.retry.max_attempts = 2;
    let id = store.job_insert(&insert).await.unwrap().id;
    let first = store
        .job_claim(&claim("q", "w1", 1, at(1)))
        .await
        .unwrap()
        .remove(0);
    let retry_at = at(1) + first.retry_policy().retry_delay(1, 0).unwrap();
    let failed = store
        .job_fail(&JobFail {
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
        store
            .job_claim(&claim("q", "w1", 1, at(1)))
            .await
            .unwrap()
            .is_empty(),
        "waits out its backoff"
    );
    let second = store
        .job_claim(&claim("q", "w2", 1, retry_at))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((second.attempt, second.token), (2, 2));
    assert_eq!(
        second.retry_policy().retry_delay(2, 0),
        None,
        "that was the last attempt"
    );
    let dead = store
        .job_fail(&JobFail {
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
    let retried = store.job_retry(id, at(10)).await.unwrap();
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
            store.job_retry(id, at(10)).await,
            Err(StoreError::Conflict(_))
        ),
        "only dead jobs are retried"
    );
    let running = store
        .job_claim(&claim("q", "w1", 1, at(11)))
        .await
        .unwrap()
        .remove(0);
    assert!(
        matches!(
            store.job_discard(id, at(12)).await,
            Err(StoreError::Conflict(_))
        ),
        "a running job is not discarded"
    );
    store
        .job_fail(&JobFail {
            id,
            token: running.token,
            error: "x".into(),
            retry_at: None,
            now: at(13),
        })
        .await
        .unwrap();
    assert_eq!(
        store.job_discard(id, at(14)).await.unwrap().state,
        JobState::Cancelled
    );
    assert!(matches!(
        store.job_retry(424_242, at(15)).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn snooze_waits_without_using_an_attempt(db: &TestDb) {
    let store = db.store().await;
    let id = store.job_insert(&job("q", at(0))).await.unwrap().id;
    let running = store
        .job_claim(&claim("q", "w1", 1, at(1)))
        .await
        .unwrap()
        .remove(0);
    let snoozed = store
        .job_snooze(&JobSnooze {
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
        store
            .job_claim(&claim("q", "w1", 1, at(59)))
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .job_claim(&claim("q", "w1", 1, at(60)))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.attempt, 1);
    let cancelled = store
        .job_cancel(&finish(id, again.token, at(61)))
        .await
        .unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
}

async fn expired_leases_are_rescued_and_stale_holders_refused(db: &TestDb) {
    let store = db.store().await;
    let id = store.job_insert(&job("q", at(0))).await.unwrap().id;
    let mut lease = claim("q", "w1", 1, at(0));
    lease.lease_until = at(10);
    let held = store.job_claim(&lease).await.unwrap().remove(0);
    // The holder's heartbeat extends its leases; nobody else's.
    let extended = store
        .job_lease_extend(&JobLeaseExtend {
            owner: "w1".into(),
            lease_until: at(20),
            now: at(5),
        })
        .await
        .unwrap();
    assert_eq!(extended, 1);
    assert_eq!(
        store
            .job_lease_extend(&JobLeaseExtend {
                owner: "w9".into(),
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
        store.job_rescue(&rescue(at(15))).await.unwrap().is_empty(),
        "the extended lease holds"
    );
    let rescued = store.job_rescue(&rescue(at(25))).await.unwrap();
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
    let taken = store
        .job_claim(&claim("q", "w2", 1, at(26)))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(taken.token, held.token + 1);
    assert!(matches!(
        store.job_complete(&finish(id, held.token, at(27))).await,
        Err(StoreError::Stale(_))
    ));
    assert!(matches!(
        store
            .job_fail(&JobFail {
                id,
                token: held.token,
                error: "late".into(),
                retry_at: None,
                now: at(27)
            })
            .await,
        Err(StoreError::Stale(_))
    ));
    assert_eq!(
        store
            .job_complete(&finish(id, taken.token, at(28)))
            .await
            .unwrap()
            .state,
        JobState::Completed
    );

    // A job rescued after its last attempt fails for good; a lost worker's leases go at once.
    let mut once = job("q", at(30));
    once.retry.max_attempts = 1;
    let once = store.job_insert(&once).await.unwrap().id;
    store.job_claim(&claim("q", "w3", 1, at(30))).await.unwrap();
    let released = store
        .job_rescue(&JobRescue {
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

async fn paused_queues_and_concurrency_limits(db: &TestDb) {
    let store = db.store().await;
    let batch: Vec<JobInsert> = (0..5).map(|_| job("lane", at(0))).collect();
    store.job_insert_many(&batch).await.unwrap();
    store.queue_pause(&name("lane"), true, at(1)).await.unwrap();
    assert!(
        store
            .job_claim(&claim("lane", "w1", 5, at(2)))
            .await
            .unwrap()
            .is_empty(),
        "paused"
    );
    store
        .queue_pause(&name("lane"), false, at(3))
        .await
        .unwrap();
    store
        .queue_set_concurrency(&name("lane"), Some(1), at(3))
        .await
        .unwrap();
    let one = store
        .job_claim(&claim("lane", "w1", 5, at(4)))
        .await
        .unwrap();
    assert_eq!(one.len(), 1, "a serial lane");
    assert!(
        store
            .job_claim(&claim("lane", "w2", 5, at(4)))
            .await
            .unwrap()
            .is_empty()
    );
    store
        .job_complete(&finish(one[0].id, one[0].token, at(5)))
        .await
        .unwrap();
    assert_eq!(
        store
            .job_claim(&claim("lane", "w2", 5, at(6)))
            .await
            .unwrap()
            .len(),
        1
    );
    store
        .queue_set_concurrency(&name("lane"), None, at(7))
        .await
        .unwrap();
    assert_eq!(
        store
            .job_claim(&claim("lane", "w2", 5, at(8)))
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(matches!(
        store.queue_pause(&name("nope"), true, at(9)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .queue_set_concurrency(&name("lane"), Some(0), at(9))
            .await,
        Err(StoreError::Invalid(_))
    ));
}

async fn stats_count_by_state_and_prune_keeps_the_newest(db: &TestDb) {
    let store = db.store().await;
    let batch: Vec<JobInsert> = (0..6).map(|_| job("q", at(0))).collect();
    store.job_insert_many(&batch).await.unwrap();
    let mut later = job("q", at(0));
    later.run_at = at(100);
    store.job_insert(&later).await.unwrap();
    let claimed = store.job_claim(&claim("q", "w1", 4, at(1))).await.unwrap();
    store
        .job_complete(&finish(claimed[0].id, claimed[0].token, at(2)))
        .await
        .unwrap();
    store
        .job_complete(&finish(claimed[1].id, claimed[1].token, at(3)))
        .await
        .unwrap();
    store
        .job_fail(&JobFail {
            id: claimed[2].id,
            token: claimed[2].token,
            error: "x".into(),
            retry_at: None,
            now: at(4),
        })
        .await
        .unwrap();
    let stats = store.queue_stats(at(5)).await.unwrap();
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

    let pruned = store
        .job_prune(&JobPrune {
            keep_completed: 1,
            keep_failed: 0,
            finished_before: None,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    let left = store
        .job_list(&JobList {
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
    let pruned = store
        .job_prune(&JobPrune {
            keep_completed: 100,
            keep_failed: 100,
            finished_before: Some(at(10)),
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1, "and by age");
}

async fn concurrent_claimers_never_share_a_job(db: &TestDb) {
    let store = db.store().await;
    let batch: Vec<JobInsert> = (0..300).map(|_| job("q", at(0))).collect();
    store.job_insert_many(&batch).await.unwrap();
    let store = Arc::new(store);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .job_claim(&claim("q", &format!("w{worker}"), 7, at(1)))
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                for job in claimed {
                    store
                        .job_complete(&finish(job.id, job.token, at(2)))
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

async fn enqueues_wake_listeners(db: &TestDb) {
    let store = db.store().await;
    let mut feed = store.change_feed().await.unwrap();
    let other = Store::connect(&db.url, &store::StoreOptions::default())
        .await
        .unwrap();
    other.job_insert(&job("wake", at(0))).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("a wake-up within 5 s")
        .unwrap();
    match db.backend {
        Backend::Postgres => assert_eq!(change, Change::Job(name("wake"))),
        Backend::Sqlite => assert_eq!(change, Change::Unknown),
    }
}

testkit::on_both_stores!(
    db:
    claims_by_priority_and_fences_completion,
    unique_keys_deduplicate_while_unfinished,
    bulk_enqueue_keeps_order_and_is_all_or_nothing,
    enqueue_commits_with_the_callers_data,
    failures_retry_with_backoff_then_dead_letter,
    snooze_waits_without_using_an_attempt,
    expired_leases_are_rescued_and_stale_holders_refused,
    paused_queues_and_concurrency_limits,
    stats_count_by_state_and_prune_keeps_the_newest,
    concurrent_claimers_never_share_a_job,
    enqueues_wake_listeners,
);
