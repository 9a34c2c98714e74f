//! The outbox on both stores: an event with each withdrawal change, in the change's own
//! transaction (none for a change refused); a delivery per subscribed endpoint; claims that
//! keep one subject's events in order and never give one delivery to two deliverers; retries,
//! giving up and replaying; and bad input that changes nothing.

use chrono::{DateTime, TimeZone, Utc};
use domain::{Chain, WithdrawalState};
use store::{
    AuditList, DeliveryList, DeliveryOutcome, DeliveryState, EventList, ReplaySelect, Store,
    StoreError, WebhookSubscription, WithdrawalCreate, WithdrawalCreated, WithdrawalRow,
    WithdrawalTransition,
};
use testkit::TestDb;

const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn request(key: &str) -> WithdrawalCreate {
    WithdrawalCreate {
        idempotency_key: key.into(),
        request_hash: "a".repeat(64),
        reference: "user:7".into(),
        chain: Chain::Tron,
        asset: "TRX".into(),
        destination: "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7".into(),
        amount: "1000".into(),
        actor: "token:1:backend".into(),
        job: None,
        approval: false,
        limits: vec![],
        destination_rule: None,
        now: at(0),
    }
}

async fn create(store: &Store, key: &str) -> WithdrawalRow {
    match store.withdrawal_create(&request(key)).await.unwrap() {
        WithdrawalCreated::Created(row) => row,
        other => panic!("{other:?}"),
    }
}

async fn advance(store: &Store, row: &WithdrawalRow, to: WithdrawalState, at_s: i64) {
    let from = store.withdrawal_get(row.id).await.unwrap().unwrap().state;
    store
        .withdrawal_transition(&WithdrawalTransition::new(
            row.id,
            from,
            to,
            "worker",
            at(at_s),
        ))
        .await
        .unwrap();
}

async fn subscribe(store: &Store) {
    store
        .webhook_subscribe(&[
            WebhookSubscription {
                endpoint: "all".into(),
                events: vec!["withdrawal.*".into()],
            },
            WebhookSubscription {
                endpoint: "final".into(),
                events: vec!["withdrawal.completed".into(), "withdrawal.failed".into()],
            },
        ])
        .await
        .unwrap();
}

async fn events(store: &Store) -> Vec<store::EventRow> {
    store
        .events_list(&EventList {
            limit: 100,
            ..EventList::default()
        })
        .await
        .unwrap()
}

async fn deliveries(store: &Store, endpoint: &str) -> Vec<store::DeliveryRow> {
    let mut rows = store
        .webhook_deliveries(&DeliveryList {
            endpoint: Some(endpoint.into()),
            limit: 100,
            ..DeliveryList::default()
        })
        .await
        .unwrap();
    rows.reverse();
    rows
}

async fn each_change_writes_its_event_and_deliveries(db: &TestDb) {
    let store = db.store().await;
    subscribe(&store).await;
    let row = create(&store, "k-1").await;
    for (to, at_s) in [
        (WithdrawalState::Processing, 1),
        (WithdrawalState::Broadcast, 2),
        (WithdrawalState::Confirming, 3),
        (WithdrawalState::Completed, 4),
    ] {
        advance(&store, &row, to, at_s).await;
    }
    // Refused changes write nothing: a key reused for another request, a move that lost its
    // compare-and-set, a move the table forbids.
    let mut other = request("k-1");
    other.request_hash = "b".repeat(64);
    assert!(matches!(
        store.withdrawal_create(&other).await,
        Err(StoreError::KeyReused(_))
    ));
    let stale = WithdrawalTransition::new(
        row.id,
        WithdrawalState::Pending,
        WithdrawalState::Processing,
        "worker",
        at(5),
    );
    assert!(matches!(
        store.withdrawal_transition(&stale).await,
        Err(StoreError::Conflict(_))
    ));

    let events = events(&store).await;
    let kinds: Vec<&str> = events.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "withdrawal.created",
            "withdrawal.processing",
            "withdrawal.broadcast",
            "withdrawal.confirming",
            "withdrawal.completed"
        ]
    );
    assert!(
        events
            .windows(2)
            .all(|pair| pair[0].sequence < pair[1].sequence)
    );
    let subject = format!("withdrawal:{}", row.id);
    assert!(events.iter().all(|event| event.subject == subject));
    let mut ids: Vec<&str> = events.iter().map(|event| event.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "event ids are unique");
    assert_eq!(events[0].payload["state"], "pending");
    assert_eq!(events[0].payload["amount_base_units"], "1000");
    assert_eq!(events[4].payload["state"], "completed");
    assert_eq!(events[4].created_at, at(4));

    let all = deliveries(&store, "all").await;
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|each| each.state == DeliveryState::Pending));
    let last = deliveries(&store, "final").await;
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].event.kind, "withdrawal.completed");

    // An endpoint no longer configured gets no new deliveries; its old ones stay.
    store
        .webhook_subscribe(&[WebhookSubscription {
            endpoint: "final".into(),
            events: vec!["*".into()],
        }])
        .await
        .unwrap();
    create(&store, "k-2").await;
    assert_eq!(deliveries(&store, "all").await.len(), 5);
    assert_eq!(deliveries(&store, "final").await.len(), 2);
}

async fn claims_keep_each_subject_in_order(db: &TestDb) {
    let store = db.store().await;
    subscribe(&store).await;
    let one = create(&store, "k-1").await;
    let two = create(&store, "k-2").await;
    advance(&store, &one, WithdrawalState::Processing, 1).await;
    advance(&store, &two, WithdrawalState::Processing, 1).await;

    // The first event of each subject; the second waits for the first.
    let claimed = store.webhook_claim("all", 10, LEASE, at(10)).await.unwrap();
    let kinds: Vec<(&str, i64)> = claimed
        .iter()
        .map(|each| {
            (
                each.event.kind.as_str(),
                each.event.payload["id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("withdrawal.created", one.id),
            ("withdrawal.created", two.id)
        ]
    );
    // Claimed: no one else gets them while the claim holds.
    assert!(
        store
            .webhook_claim("all", 10, LEASE, at(11))
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        store
            .webhook_settle(
                &claimed[0],
                &DeliveryOutcome::Delivered { status: 200 },
                at(12)
            )
            .await
            .unwrap()
    );
    let next = store.webhook_claim("all", 10, LEASE, at(13)).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event.kind, "withdrawal.processing");
    assert_eq!(next[0].event.payload["id"], one.id);

    // The claim on two's event ran out: another deliverer takes it, and the first one's
    // settlement no longer counts.
    let retaken = store
        .webhook_claim("all", 10, LEASE, at(10 + 31))
        .await
        .unwrap();
    let retaken: Vec<_> = retaken
        .into_iter()
        .filter(|each| each.id == claimed[1].id)
        .collect();
    assert_eq!(retaken.len(), 1);
    assert!(
        !store
            .webhook_settle(
                &claimed[1],
                &DeliveryOutcome::Delivered { status: 200 },
                at(42)
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .webhook_settle(
                &retaken[0],
                &DeliveryOutcome::Delivered { status: 204 },
                at(42)
            )
            .await
            .unwrap()
    );
    let settled = deliveries(&store, "all").await;
    let two_created = settled
        .iter()
        .find(|each| each.id == claimed[1].id)
        .unwrap();
    assert_eq!(two_created.state, DeliveryState::Delivered);
    assert_eq!(two_created.attempts, 1);
    assert_eq!(two_created.last_status, Some(204));
    assert_eq!(two_created.delivered_at, Some(at(42)));
}

async fn failures_retry_give_up_and_replay(db: &TestDb) {
    let store = db.store().await;
    subscribe(&store).await;
    let row = create(&store, "k-1").await;
    advance(&store, &row, WithdrawalState::Processing, 1).await;

    let first = store.webhook_claim("all", 10, LEASE, at(10)).await.unwrap();
    assert_eq!(first.len(), 1);
    let failed = DeliveryOutcome::Failed {
        status: Some(500),
        error: "HTTP 500".into(),
        retry_at: Some(at(20)),
    };
    assert!(
        store
            .webhook_settle(&first[0], &failed, at(10))
            .await
            .unwrap()
    );
    // Not due before its retry time, and the later event still waits behind it.
    assert!(
        store
            .webhook_claim("all", 10, LEASE, at(19))
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.webhook_claim("all", 10, LEASE, at(20)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].first_attempt_at, Some(at(10)));
    // Given up: failed, and the subject's next event goes on.
    let give_up = DeliveryOutcome::Failed {
        status: None,
        error: "connection refused".into(),
        retry_at: None,
    };
    assert!(
        store
            .webhook_settle(&again[0], &give_up, at(20))
            .await
            .unwrap()
    );
    let next = store.webhook_claim("all", 10, LEASE, at(21)).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event.kind, "withdrawal.processing");

    let failed_list = store
        .webhook_deliveries(&DeliveryList {
            state: Some(DeliveryState::Failed),
            limit: 10,
            ..DeliveryList::default()
        })
        .await
        .unwrap();
    assert_eq!(failed_list.len(), 1);
    assert_eq!(failed_list[0].attempts, 2);
    assert_eq!(
        failed_list[0].last_error.as_deref(),
        Some("connection refused")
    );

    let counts = store.webhook_counts().await.unwrap();
    let failed_count = counts
        .iter()
        .find(|count| count.endpoint == "all" && count.state == DeliveryState::Failed)
        .unwrap();
    assert_eq!(failed_count.count, 1);

    // Replayed: pending again, due now, with a fresh period, and audited.
    let replayed = store
        .webhook_replay(
            &ReplaySelect::Failed {
                endpoint: Some("all".into()),
            },
            "token:2:ops",
            at(30),
        )
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    let back = store.webhook_claim("all", 10, LEASE, at(30)).await.unwrap();
    assert!(
        back.iter()
            .any(|each| each.id == first[0].id && each.attempts == 0)
    );
    let audit = store
        .audit_list(&AuditList {
            action: Some("webhook.replay".into()),
            limit: 10,
            ..AuditList::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "token:2:ops");
    assert_eq!(audit[0].details["deliveries"][0], first[0].id);
    // Nothing failed is left: a second replay sets nothing back and audits nothing.
    assert_eq!(
        store
            .webhook_replay(
                &ReplaySelect::Failed { endpoint: None },
                "token:2:ops",
                at(31)
            )
            .await
            .unwrap(),
        0
    );
}

async fn bad_input_changes_nothing(db: &TestDb) {
    let store = db.store().await;
    subscribe(&store).await;
    for bad in [
        WebhookSubscription {
            endpoint: "bad name".into(),
            events: vec!["*".into()],
        },
        WebhookSubscription {
            endpoint: "ok".into(),
            events: vec!["withdrawal%".into()],
        },
    ] {
        assert!(matches!(
            store.webhook_subscribe(&[bad]).await,
            Err(StoreError::Invalid(_))
        ));
    }
    // The earlier subscriptions still hold.
    create(&store, "k-1").await;
    assert_eq!(deliveries(&store, "all").await.len(), 1);

    let unknown = store
        .webhook_replay(&ReplaySelect::Ids(vec![999_999]), "token:2:ops", at(1))
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { .. })),
        "{unknown:?}"
    );
    assert!(matches!(
        store
            .webhook_replay(&ReplaySelect::Ids(vec![]), "token:2:ops", at(1))
            .await,
        Err(StoreError::Invalid(_))
    ));
    // A replay naming a real and an unknown delivery changes neither.
    let real = deliveries(&store, "all").await[0].clone();
    let claimed = store.webhook_claim("all", 1, LEASE, at(2)).await.unwrap();
    store
        .webhook_settle(
            &claimed[0],
            &DeliveryOutcome::Delivered { status: 200 },
            at(2),
        )
        .await
        .unwrap();
    assert!(
        store
            .webhook_replay(
                &ReplaySelect::Ids(vec![real.id, 999_999]),
                "token:2:ops",
                at(3)
            )
            .await
            .is_err()
    );
    assert_eq!(
        deliveries(&store, "all").await[0].state,
        DeliveryState::Delivered
    );
    let unclaimed = real;
    assert!(matches!(
        store
            .webhook_settle(
                &unclaimed,
                &DeliveryOutcome::Delivered { status: 200 },
                at(4)
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    let audit = store
        .audit_list(&AuditList {
            action: Some("webhook.replay".into()),
            limit: 10,
            ..AuditList::default()
        })
        .await
        .unwrap();
    assert!(audit.is_empty());
}

testkit::on_both_stores!(
    db:
    each_change_writes_its_event_and_deliveries,
    claims_keep_each_subject_in_order,
    failures_retry_give_up_and_replay,
    bad_input_changes_nothing,
);
