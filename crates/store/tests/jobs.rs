//! What only the SQL stores offer the job queue: enqueueing inside the caller's own
//! transaction, and wake-ups on the store's change feed. The rest of the queue contract is
//! pinned for every backend by `crates/queue/tests/conformance.rs`.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use domain::{JobState, Name};
use store::{AuditInsert, AuditList, Change, JobClaim, JobInsert, Store};
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
        retry: None,
        unique_key: None,
        now,
    }
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

/// Jobs whose holder let their lease expire are counted per holder until a rescue takes
/// them back; jobs still leased, or finished, are not.
async fn overdue_leases_are_counted_per_holder(db: &TestDb) {
    let store = db.store().await;
    for _ in 0..3 {
        store.job_insert(&job("lease", at(0))).await.unwrap();
    }
    let claim = |owner: &str, limit: u32, lease_until| JobClaim {
        queue: name("lease"),
        owner: owner.into(),
        limit,
        lease_until,
        now: at(1),
    };
    store.job_claim(&claim("w-1:a", 2, at(10))).await.unwrap();
    store.job_claim(&claim("w-2:b", 1, at(30))).await.unwrap();
    assert_eq!(store.job_lease_overdue(at(5)).await.unwrap(), []);
    assert_eq!(
        store.job_lease_overdue(at(11)).await.unwrap(),
        [("w-1:a".to_string(), 2)]
    );
    assert_eq!(
        store.job_lease_overdue(at(31)).await.unwrap(),
        [("w-1:a".to_string(), 2), ("w-2:b".to_string(), 1)]
    );
}

testkit::on_both_stores!(
    db:
    enqueue_commits_with_the_callers_data,
    enqueues_wake_listeners,
    overdue_leases_are_counted_per_holder,
);
