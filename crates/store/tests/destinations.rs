//! Allowlist mode's registered destinations on both stores: a registration is usable from its
//! time plus the cool-down, one per chain and address, listed newest first and by chain,
//! removed once; each registration and removal is audited in the same transaction; bad input
//! and repeats change nothing.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use domain::Chain;
use store::{AuditList, DestinationInsert, DestinationList, Store, StoreError};
use testkit::TestDb;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

const TRON: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";
const ETH: &str = "0x52908400098527886E0F7030069857D2E4169EE7";
const OTHER_TRON: &str = "TJCnKsPa7y5okkXvQAidZBzqx3QyQ6sxMW";

fn insert(chain: Chain, address: &str, now: DateTime<Utc>) -> DestinationInsert {
    DestinationInsert {
        chain,
        address: address.into(),
        label: "cold wallet".into(),
        reference: None,
        actor: "token:3:admin".into(),
        cooldown: Duration::from_secs(3_600),
        now,
    }
}

async fn audit(store: &Store, action: &str) -> Vec<store::AuditRow> {
    store
        .audit_list(&AuditList {
            action: Some(action.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn registered_usable_after_the_cooldown_and_removed_once(db: &TestDb) {
    let store = db.store().await;
    let mut tied = insert(Chain::Tron, TRON, at(0));
    tied.reference = Some("user:7".into());
    let tron = store.withdrawal_destination_insert(&tied).await.unwrap();
    assert_eq!(tron.created_at, at(0));
    assert_eq!(tron.usable_at, at(3_600), "usable after the cool-down");
    assert_eq!(tron.reference.as_deref(), Some("user:7"));
    assert_eq!(tron.created_by, "token:3:admin");
    let eth = store
        .withdrawal_destination_insert(&insert(Chain::Ethereum, ETH, at(10)))
        .await
        .unwrap();
    assert!(eth.id > tron.id);

    let found = store
        .withdrawal_destination_find(Chain::Tron, TRON)
        .await
        .unwrap();
    assert_eq!(found.as_ref(), Some(&tron));
    // The same address on another chain is another destination (none here).
    assert_eq!(
        store
            .withdrawal_destination_find(Chain::Ethereum, TRON)
            .await
            .unwrap(),
        None
    );
    let all = store
        .withdrawal_destination_list(&DestinationList {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all, [eth.clone(), tron.clone()], "newest first");
    let tron_only = store
        .withdrawal_destination_list(&DestinationList {
            chain: Some(Chain::Tron),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tron_only, std::slice::from_ref(&tron));
    let older = store
        .withdrawal_destination_list(&DestinationList {
            before_id: Some(eth.id),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(older, std::slice::from_ref(&tron));

    let added = audit(&store, "withdrawal_destination.add").await;
    assert_eq!(added.len(), 2);
    assert_eq!(added[1].target, format!("destination:tron:{TRON}"));
    assert_eq!(added[1].actor, "token:3:admin");
    assert_eq!(added[1].details["usable_at"], at(3_600).to_rfc3339());

    let removed = store
        .withdrawal_destination_remove(tron.id, "token:3:admin", at(20))
        .await
        .unwrap();
    assert_eq!(removed, tron);
    assert_eq!(
        store
            .withdrawal_destination_find(Chain::Tron, TRON)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        store
            .withdrawal_destination_remove(tron.id, "token:3:admin", at(21))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    let gone = audit(&store, "withdrawal_destination.remove").await;
    assert_eq!(gone.len(), 1, "removed once, audited once");
    assert_eq!(gone[0].target, format!("destination:tron:{TRON}"));

    // Registered again: a new registration with a new cool-down.
    let again = store
        .withdrawal_destination_insert(&insert(Chain::Tron, TRON, at(100)))
        .await
        .unwrap();
    assert_ne!(again.id, tron.id);
    assert_eq!(again.usable_at, at(3_700));
}

async fn repeats_and_bad_input_change_nothing(db: &TestDb) {
    let store = db.store().await;
    let first = store
        .withdrawal_destination_insert(&insert(Chain::Tron, TRON, at(0)))
        .await
        .unwrap();
    // Registering it again (even with another label) is refused: the running cool-down is
    // never restarted nor shortened by a second registration.
    let mut again = insert(Chain::Tron, TRON, at(5_000));
    again.label = "other".into();
    again.cooldown = Duration::ZERO;
    let refused = store.withdrawal_destination_insert(&again).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(message)) if message.contains("registered already")),
        "{refused:?}"
    );
    let mut bad = Vec::new();
    for (field, value) in [
        ("label", String::new()),
        ("label", "   ".into()),
        ("label", "x".repeat(101)),
        ("label", "a\u{0}b".into()),
        ("reference", String::new()),
        ("reference", "r".repeat(201)),
        ("reference", "user\n7".into()),
        ("address", String::new()),
        ("actor", String::new()),
    ] {
        let mut each = insert(Chain::Ethereum, ETH, at(1));
        match field {
            "label" => each.label = value,
            "reference" => each.reference = Some(value),
            "address" => each.address = value,
            _ => each.actor = value,
        }
        bad.push(each);
    }
    let mut too_long = insert(Chain::Ethereum, ETH, at(1));
    too_long.cooldown = Duration::from_secs(u64::MAX);
    bad.push(too_long);
    for each in &bad {
        let result = store.withdrawal_destination_insert(each).await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{each:?}: {result:?}"
        );
    }
    let all = store
        .withdrawal_destination_list(&DestinationList {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all, [first]);
    assert_eq!(audit(&store, "withdrawal_destination.add").await.len(), 1);
}

/// Two admins registering one address at once: one registration, one audit entry, the
/// other told it is registered already.
async fn racing_registrations_store_one(db: &TestDb) {
    let store = db.store().await;
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut each = insert(Chain::Tron, TRON, at(n));
            each.label = format!("try {n}");
            store.withdrawal_destination_insert(&each).await
        }));
    }
    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => stored += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(audit(&store, "withdrawal_destination.add").await.len(), 1);
}

fn create_to(key: &str, to: &str, reference: &str, now: DateTime<Utc>) -> store::WithdrawalCreate {
    store::WithdrawalCreate {
        idempotency_key: key.into(),
        request_hash: "a".repeat(64),
        reference: reference.into(),
        chain: Chain::Tron,
        asset: "USDT".into(),
        destination: to.into(),
        amount: "1".into(),
        actor: "token:1:backend".into(),
        job: None,
        approval: false,
        limits: vec![],
        destination_rule: Some(store::DestinationRule {
            rule: "withdrawal_allowlist".into(),
            reference_prefix: reference.split('/').next().unwrap().into(),
        }),
        now,
    }
}

/// Allowlist mode in the create's own transaction: unregistered, cooling down, another
/// reference prefix's, and removed destinations refused with nothing stored; a usable one
/// accepted; a removal racing creates lets none through after it committed.
async fn creates_check_the_registration_in_their_transaction(db: &TestDb) {
    let store = db.store().await;
    let refused = |result: Result<store::WithdrawalCreated, StoreError>, wanted: &str| {
        let error = result.unwrap_err();
        assert!(
            matches!(&error, StoreError::PolicyRefused(message) if message.contains(wanted)),
            "{error}"
        );
    };
    refused(
        store
            .withdrawal_create(&create_to("c-1", TRON, "user:1", at(0)))
            .await,
        "not a registered",
    );
    let mut owned = insert(Chain::Tron, TRON, at(0));
    owned.reference = Some("user:1".into());
    let row = store.withdrawal_destination_insert(&owned).await.unwrap();
    refused(
        store
            .withdrawal_create(&create_to("c-2", TRON, "user:1", at(60)))
            .await,
        "cooling down",
    );
    refused(
        store
            .withdrawal_create(&create_to("c-3", TRON, "user:2/x", at(7_200)))
            .await,
        "registered for reference prefix \"user:1\" only",
    );
    store
        .withdrawal_create(&create_to("c-4", TRON, "user:1/x", at(7_200)))
        .await
        .unwrap();
    store
        .withdrawal_destination_remove(row.id, "token:3:admin", at(7_300))
        .await
        .unwrap();
    refused(
        store
            .withdrawal_create(&create_to("c-5", TRON, "user:1/x", at(7_400)))
            .await,
        "not a registered",
    );
    // The same request as before the removal still finds its withdrawal.
    store
        .withdrawal_create(&create_to("c-4", TRON, "user:1/x", at(7_500)))
        .await
        .unwrap();
    let stored = store
        .withdrawal_list(&store::WithdrawalList {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "refusals store nothing");

    // A removal under way (its transaction open on Postgres, holding the row): a create to
    // that destination waits for it, then is refused; never paid to a removed destination.
    // (SQLite's write transaction runs alone, so there is no interleaving to test.)
    if db.url.starts_with("postgres") {
        let row = store
            .withdrawal_destination_insert(&insert(Chain::Tron, OTHER_TRON, at(0)))
            .await
            .unwrap();
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let mut removal = pool.begin().await.unwrap();
        sqlx::query("delete from withdrawal_destination where id = $1")
            .bind(row.id)
            .execute(&mut *removal)
            .await
            .unwrap();
        let racing = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .withdrawal_create(&create_to("race", OTHER_TRON, "user:9", at(7_200)))
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!racing.is_finished(), "the create waits for the removal");
        removal.commit().await.unwrap();
        refused(racing.await.unwrap(), "not a registered");
    }
}

testkit::on_both_stores!(
    db: creates_check_the_registration_in_their_transaction,
    registered_usable_after_the_cooldown_and_removed_once,
    repeats_and_bad_input_change_nothing,
    racing_registrations_store_one,
);
