//! API tokens on both stores: stored as hashes, found by hash until revoked.

use chrono::{DateTime, TimeZone, Utc};
use domain::Role;
use store::{ApiTokenInsert, StoreError};
use testkit::TestDb;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn insert(name: &str, role: Role, hash_digit: char) -> ApiTokenInsert {
    ApiTokenInsert {
        name: name.into(),
        role,
        token_hash: hash_digit.to_string().repeat(64),
        prefix: "cst_abcd".into(),
        now: at(0),
    }
}

async fn tokens_authenticate_until_revoked(db: &TestDb) {
    let store = db.store().await;
    let admin = store
        .api_token_insert(&insert("first admin", Role::Admin, 'a'))
        .await
        .unwrap();
    store
        .api_token_insert(&insert("dashboard", Role::Viewer, 'b'))
        .await
        .unwrap();
    assert_eq!((admin.role, admin.last_used_at), (Role::Admin, None));

    let found = store
        .api_token_authenticate(&"a".repeat(64), at(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id, found.name.as_str()), (admin.id, "first admin"));
    assert!(
        store
            .api_token_authenticate(&"c".repeat(64), at(10))
            .await
            .unwrap()
            .is_none()
    );
    let listed = store.api_token_list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].last_used_at, Some(at(10)), "use is recorded");

    let revoked = store.api_token_revoke(admin.id, at(20)).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(at(20)));
    assert!(
        store
            .api_token_authenticate(&"a".repeat(64), at(21))
            .await
            .unwrap()
            .is_none(),
        "revoked means refused"
    );
    assert!(matches!(
        store.api_token_revoke(admin.id, at(22)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.api_token_revoke(424_242, at(22)).await,
        Err(StoreError::NotFound { .. })
    ));

    let mut bad = insert("x", Role::Viewer, 'z');
    assert!(
        matches!(
            store.api_token_insert(&bad).await,
            Err(StoreError::Invalid(_))
        ),
        "not hex"
    );
    bad = insert(" ", Role::Viewer, 'd');
    assert!(
        matches!(
            store.api_token_insert(&bad).await,
            Err(StoreError::Invalid(_))
        ),
        "no name"
    );
    // The same token cannot be stored twice.
    assert!(
        store
            .api_token_insert(&insert("again", Role::Viewer, 'b'))
            .await
            .is_err()
    );
}

testkit::on_both_stores!(db: tokens_authenticate_until_revoked);
