//! Manual review actions on both stores (`store::reviews`): a request only on a withdrawal in
//! manual review, one open at a time, stored with its audit entry and its check job; a
//! refusal changes nothing in the withdrawal; an applied action moves it in the same
//! transaction (completed with the txid, failed with its limits given back, or processing
//! in its next payout round with its pay job); one transfer proves one withdrawal paid;
//! bad input changes nothing.

use chrono::{DateTime, TimeZone, Utc};
use domain::{Chain, Name, WithdrawalState};
use store::{
    AuditList, JobList, ReviewAction, ReviewApply, ReviewPaid, ReviewRequest, ReviewState, Store,
    StoreError, WithdrawalCreate, WithdrawalTransition,
};
use testkit::TestDb;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn queue() -> Name {
    Name::new("ethereum.withdrawal").unwrap()
}

/// A withdrawal moved to manual review (pending → processing → manual_review), with a
/// rolling limit charged to it.
async fn in_review(store: &Store, key: &str) -> i64 {
    let id = store
        .withdrawal_create(&WithdrawalCreate {
            idempotency_key: key.into(),
            request_hash: "a".repeat(64),
            reference: "user:7/w".into(),
            chain: Chain::Ethereum,
            asset: "ETH".into(),
            destination: "0x00000000000000000000000000000000000000aa".into(),
            amount: "1000".into(),
            actor: "token:1:backend".into(),
            job: None,
            approval: false,
            limits: vec![store::UsageLimit {
                scope: String::new(),
                limit: ruint::aliases::U256::from(5_000u64),
                rule: "test daily_limit".into(),
            }],
            destination_rule: None,
            now: at(0),
        })
        .await
        .unwrap()
        .row()
        .id;
    for (from, to) in [
        (WithdrawalState::Pending, WithdrawalState::Processing),
        (WithdrawalState::Processing, WithdrawalState::ManualReview),
    ] {
        let mut moved = WithdrawalTransition::new(id, from, to, "worker:w1", at(1));
        moved.error = Some("nonce 4 consumed by a foreign transaction".into());
        store.withdrawal_transition(&moved).await.unwrap();
    }
    id
}

fn ask(id: i64, action: ReviewAction, txid: Option<&str>) -> ReviewRequest {
    ReviewRequest {
        withdrawal_id: id,
        action,
        txid: txid.map(str::to_string),
        reason: "the chain explorer shows it".into(),
        token_id: Some(2),
        actor: "token:2:alice".into(),
        job: Some(queue()),
        now: at(10),
    }
}

fn applied(id: i64, paid: Option<ReviewPaid>) -> ReviewApply {
    ReviewApply {
        id,
        checked_by: "worker:ethereum-withdrawal-1".into(),
        outcome: "proved".into(),
        paid,
        pay_job: Some((queue(), Name::new("withdrawal.pay").unwrap())),
        now: at(20),
    }
}

async fn review_jobs(store: &Store) -> Vec<store::JobRow> {
    store
        .job_list(&JobList {
            queue: Some(queue()),
            state: None,
            before_id: None,
            limit: 100,
        })
        .await
        .unwrap()
}

async fn actions_of(store: &Store, id: i64) -> Vec<String> {
    let mut actions: Vec<String> = store
        .audit_list(&AuditList {
            target: Some(store::payout_key(id)),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.action)
        .collect();
    actions.reverse();
    actions
}

async fn requests_are_checked_and_queued(db: &TestDb) {
    let store = db.store().await;
    let id = in_review(&store, "r-1").await;
    // Bad input: refused, nothing stored or queued.
    for (request, wanted) in [
        (ask(id, ReviewAction::MarkPaid, None), "needs the txid"),
        (
            ask(id, ReviewAction::Retry, Some("ab12")),
            "only to mark_paid",
        ),
        (
            ask(id, ReviewAction::MarkPaid, Some("0x12;drop")),
            "letters and digits",
        ),
        (
            ReviewRequest {
                reason: "x".repeat(501),
                ..ask(id, ReviewAction::MarkFailed, None)
            },
            "1 to 500",
        ),
        (
            ReviewRequest {
                reason: "  ".into(),
                ..ask(id, ReviewAction::MarkFailed, None)
            },
            "1 to 500",
        ),
    ] {
        let error = store.withdrawal_review_request(&request).await.unwrap_err();
        assert!(
            matches!(&error, StoreError::Invalid(message) if message.contains(wanted)),
            "{error}"
        );
    }
    assert!(store.withdrawal_reviews(id).await.unwrap().is_empty());
    assert!(review_jobs(&store).await.is_empty());
    // A withdrawal that is not in manual review: refused.
    let other = store
        .withdrawal_create(&WithdrawalCreate {
            idempotency_key: "r-other".into(),
            request_hash: "b".repeat(64),
            reference: "user:8".into(),
            chain: Chain::Ethereum,
            asset: "ETH".into(),
            destination: "0x00000000000000000000000000000000000000bb".into(),
            amount: "1".into(),
            actor: "token:1:backend".into(),
            job: None,
            approval: false,
            limits: vec![],
            destination_rule: None,
            now: at(0),
        })
        .await
        .unwrap()
        .row()
        .id;
    let error = store
        .withdrawal_review_request(&ask(other, ReviewAction::MarkFailed, None))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict(message) if message.contains("pending") && message.contains("manual_review")),
        "{error}"
    );
    let error = store
        .withdrawal_review_request(&ask(9_999_999, ReviewAction::MarkFailed, None))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");

    // A good request: stored, audited, its check queued; a second one waits for it.
    let review = store
        .withdrawal_review_request(&ask(id, ReviewAction::MarkFailed, None))
        .await
        .unwrap();
    assert_eq!(review.state, ReviewState::Requested);
    assert_eq!(review.chain, Chain::Ethereum);
    let jobs = review_jobs(&store).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].kind.as_str(), store::REVIEW_JOB_KIND);
    assert_eq!(jobs[0].args, serde_json::json!({"review_id": review.id}));
    let error = store
        .withdrawal_review_request(&ask(id, ReviewAction::Retry, None))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict(message) if message.contains("open")),
        "{error}"
    );
    assert!(
        actions_of(&store, id)
            .await
            .contains(&"withdrawal.review_request".to_string())
    );

    // Refused: the withdrawal is untouched; a refusal is final.
    let refused = store
        .withdrawal_review_refuse(review.id, "worker:w1", "nonce 4 is not settled yet", at(15))
        .await
        .unwrap();
    assert_eq!(refused.state, ReviewState::Refused);
    assert_eq!(
        refused.outcome.as_deref(),
        Some("nonce 4 is not settled yet")
    );
    let row = store.withdrawal_get(id).await.unwrap().unwrap();
    assert_eq!(row.state, WithdrawalState::ManualReview);
    assert_eq!(row.payout_round, 1);
    let error = store
        .withdrawal_review_apply(&applied(review.id, None))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Stale(_)), "{error}");
    let error = store
        .withdrawal_review_refuse(review.id, "worker:w1", "again", at(16))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Stale(_)), "{error}");
}

async fn applied_actions_move_the_withdrawal(db: &TestDb) {
    let store = db.store().await;

    // Mark failed: failed, its limit given back (another withdrawal can use it).
    let failed = in_review(&store, "a-1").await;
    let review = store
        .withdrawal_review_request(&ask(failed, ReviewAction::MarkFailed, None))
        .await
        .unwrap();
    let (review, row) = store
        .withdrawal_review_apply(&applied(review.id, None))
        .await
        .unwrap();
    assert_eq!(review.state, ReviewState::Applied);
    assert_eq!(row.state, WithdrawalState::Failed);
    assert!(
        row.error
            .as_deref()
            .unwrap()
            .contains("marked failed by token:2:alice")
    );
    let actions = actions_of(&store, failed).await;
    for wanted in [
        "withdrawal.review_request",
        "withdrawal.failed",
        "withdrawal.review_applied",
    ] {
        assert!(actions.contains(&wanted.to_string()), "{actions:?}");
    }

    // Retry: processing in round 2, with its pay job; its transactions get a new key.
    let retried = in_review(&store, "a-2").await;
    let before = review_jobs(&store).await.len();
    let review = store
        .withdrawal_review_request(&ask(retried, ReviewAction::Retry, None))
        .await
        .unwrap();
    let (_, row) = store
        .withdrawal_review_apply(&applied(review.id, None))
        .await
        .unwrap();
    assert_eq!(row.state, WithdrawalState::Processing);
    assert_eq!(row.payout_round, 2);
    assert_eq!(row.attempt_key(), format!("withdrawal:{retried}:r2"));
    assert_eq!(
        row.attempt_keys(),
        vec![
            format!("withdrawal:{retried}"),
            format!("withdrawal:{retried}:r2")
        ]
    );
    assert_eq!(
        store::parse_round_key(&row.attempt_key()),
        Some((retried, 2))
    );
    assert_eq!(
        store::parse_round_key(&row.payout_key()),
        Some((retried, 1))
    );
    let jobs = review_jobs(&store).await;
    assert_eq!(jobs.len(), before + 2, "its review job and its pay job");
    assert!(jobs.iter().any(|job| job.kind.as_str() == "withdrawal.pay"
        && job.args == serde_json::json!({"withdrawal_id": retried})));

    // Mark paid: completed with the txid and where it is.
    let paid = in_review(&store, "a-3").await;
    let review = store
        .withdrawal_review_request(&ask(paid, ReviewAction::MarkPaid, Some("0xAB12")))
        .await
        .unwrap();
    let proof = ReviewPaid {
        position: 0,
        block_height: Some(77),
        confirmations: Some(12),
        fee: Some("21000".into()),
        batch: None,
    };
    let (review, row) = store
        .withdrawal_review_apply(&applied(review.id, Some(proof.clone())))
        .await
        .unwrap();
    assert_eq!(review.position, Some(0));
    assert_eq!(row.state, WithdrawalState::Completed);
    assert_eq!(row.txid.as_deref(), Some("0xAB12"));
    assert_eq!(row.block_height, Some(77));
    assert_eq!(row.fee.as_deref(), Some("21000"));

    // The same transfer cannot prove a second withdrawal paid (any case of the txid).
    let second = in_review(&store, "a-4").await;
    assert_eq!(
        store
            .withdrawal_with_txid(Chain::Ethereum, "0xab12", second, None)
            .await
            .unwrap(),
        Some(paid)
    );
    let review = store
        .withdrawal_review_request(&ask(second, ReviewAction::MarkPaid, Some("0xab12")))
        .await
        .unwrap();
    let error = store
        .withdrawal_review_apply(&applied(review.id, Some(proof)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict(message) if message.contains(&format!("withdrawal {paid}'s"))),
        "{error}"
    );
    let row = store.withdrawal_get(second).await.unwrap().unwrap();
    assert_eq!(row.state, WithdrawalState::ManualReview, "nothing changed");

    // The failed one gave its 1,000 back: 3,000 of the 5,000 are used (the retried, the
    // paid and the one in review), so 2,000 more fit, and not one more.
    let more = |key: &str, amount: &str| WithdrawalCreate {
        idempotency_key: key.into(),
        request_hash: "c".repeat(64),
        reference: "user:7/more".into(),
        chain: Chain::Ethereum,
        asset: "ETH".into(),
        destination: "0x00000000000000000000000000000000000000aa".into(),
        amount: amount.into(),
        actor: "token:1:backend".into(),
        job: None,
        approval: false,
        limits: vec![store::UsageLimit {
            scope: String::new(),
            limit: ruint::aliases::U256::from(5_000u64),
            rule: "test daily_limit".into(),
        }],
        destination_rule: None,
        now: at(30),
    };
    let error = store
        .withdrawal_create(&more("m-1", "2001"))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::LimitReached(_)), "{error}");
    store.withdrawal_create(&more("m-2", "2000")).await.unwrap();
    assert_eq!(
        store
            .withdrawal_review_get(review.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ReviewState::Requested
    );
}

/// Two workers applying the same review at once (a lease that ran out): it applies once.
async fn racing_applies_apply_once(db: &TestDb) {
    let store = db.store().await;
    let id = in_review(&store, "race-1").await;
    let review = store
        .withdrawal_review_request(&ask(id, ReviewAction::Retry, None))
        .await
        .unwrap();
    let runs = (0..6).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .withdrawal_review_apply(&applied(review.id, None))
                .await
        })
    });
    let mut applied_count = 0;
    for run in runs {
        match run.await.unwrap() {
            Ok(_) => applied_count += 1,
            Err(StoreError::Stale(_) | StoreError::Conflict(_)) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(applied_count, 1);
    let row = store.withdrawal_get(id).await.unwrap().unwrap();
    assert_eq!(row.payout_round, 2, "one round more, not six");
}

testkit::on_both_stores!(
    db:
    requests_are_checked_and_queued,
    applied_actions_move_the_withdrawal,
    racing_applies_apply_once,
);
