//! Dashboard sessions on both stores: found by the hash of their id while unexpired and while
//! their token is unrevoked; logout deletes them; bad input is refused and changes nothing.

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::Role;
use store::{ApiTokenInsert, SessionInsert, StoreError};
use testkit::TestDb;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn session(hash_digit: char, token_id: i64, now: i64, lifetime: i64) -> SessionInsert {
    SessionInsert {
        id_hash: hash_digit.to_string().repeat(64),
        token_id,
        now: at(now),
        expires_at: at(now) + Duration::seconds(lifetime),
    }
}

async fn sessions_live_until_expiry_logout_or_revocation(db: &TestDb) {
    let store = db.store().await;
    let token = |name: &str, role: Role, digit: char| ApiTokenInsert {
        name: name.into(),
        role,
        token_hash: digit.to_string().repeat(64),
        prefix: "cst_abcd".into(),
        now: at(0),
    };
    let operator = store
        .api_token_insert(&token("on-call", Role::Operator, 'a'))
        .await
        .unwrap();
    let viewer = store
        .api_token_insert(&token("wallboard", Role::Viewer, 'b'))
        .await
        .unwrap();

    store
        .session_insert(&session('1', operator.id, 0, 100))
        .await
        .unwrap();
    store
        .session_insert(&session('2', operator.id, 0, 100))
        .await
        .unwrap();
    store
        .session_insert(&session('3', viewer.id, 0, 100))
        .await
        .unwrap();

    let found = store
        .session_authenticate(&"1".repeat(64), at(10))
        .await
        .unwrap()
        .expect("a live session authenticates");
    assert_eq!(
        (found.token.id, found.token.role, found.expires_at),
        (operator.id, Role::Operator, at(100))
    );
    assert_eq!(found.created_at, at(0));
    assert!(
        store
            .session_authenticate(&"1".repeat(64), at(100))
            .await
            .unwrap()
            .is_none(),
        "expired at expires_at"
    );
    assert!(
        store
            .session_authenticate(&"9".repeat(64), at(10))
            .await
            .unwrap()
            .is_none(),
        "unknown"
    );
    assert!(
        store
            .session_authenticate("not-a-hash", at(10))
            .await
            .unwrap()
            .is_none()
    );

    // Logout deletes that session only.
    assert!(store.session_delete(&"1".repeat(64)).await.unwrap());
    assert!(!store.session_delete(&"1".repeat(64)).await.unwrap());
    assert!(
        store
            .session_authenticate(&"1".repeat(64), at(10))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .session_authenticate(&"2".repeat(64), at(10))
            .await
            .unwrap()
            .is_some()
    );

    // Revoking the token ends its sessions, not others'.
    store.api_token_revoke(operator.id, at(20)).await.unwrap();
    assert!(
        store
            .session_authenticate(&"2".repeat(64), at(21))
            .await
            .unwrap()
            .is_none(),
        "a revoked token's session is refused"
    );
    assert!(
        store
            .session_authenticate(&"3".repeat(64), at(21))
            .await
            .unwrap()
            .is_some()
    );

    // Bad input: refused, nothing written.
    for bad in [
        SessionInsert {
            id_hash: "z".repeat(64),
            ..session('4', viewer.id, 0, 100)
        },
        session('4', viewer.id, 10, 0),
    ] {
        assert!(
            matches!(
                store.session_insert(&bad).await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert!(
        store
            .session_insert(&session('4', 424_242, 0, 100))
            .await
            .is_err(),
        "a session for no token"
    );
    assert!(
        store
            .session_authenticate(&"4".repeat(64), at(10))
            .await
            .unwrap()
            .is_none()
    );
    // A duplicate id is refused and leaves the first session as it was.
    assert!(
        store
            .session_insert(&session('3', operator.id, 30, 100))
            .await
            .is_err()
    );
    let kept = store
        .session_authenticate(&"3".repeat(64), at(31))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.token.id, viewer.id);

    // A new session sweeps the expired ones away.
    store
        .session_insert(&session('5', viewer.id, 200, 100))
        .await
        .unwrap();
    assert!(
        !store.session_delete(&"3".repeat(64)).await.unwrap(),
        "swept"
    );
}

testkit::on_both_stores!(db: sessions_live_until_expiry_logout_or_revocation);
