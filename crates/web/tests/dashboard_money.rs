//! The dashboard's money pages through the router, on both stores: the approvals page lists
//! held withdrawals with what an operator needs; Approve and Reject keep the API's rules (a
//! viewer refused by role, the creator's token refused, the same token twice counting once,
//! a rejection needing a reason of at most 500 characters) and write the API's audit
//! entries; nothing refused changes anything; a held withdrawal's page shows its decisions;
//! the destinations page lists registrations and only an admin removes one. (The Chromium
//! test, `crates/coinsensei/tests/dashboard.rs` `approvals_in_chromium`, clicks the same.)

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use domain::{Chain, Role, WithdrawalState};
use store::{AuditList, Store};
use testkit::TestDb;
use tower::ServiceExt;

const HOST: &str = "127.0.0.1:8080";
const ORIGIN: &str = "http://127.0.0.1:8080";
const TO: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";

async fn send(store: &Store, request: Request<Body>) -> (StatusCode, String) {
    let router = web::router(
        store.clone(),
        std::sync::Arc::new(queue::SqlBackend::new(store.clone())),
        &web::WebOptions::default(),
    );
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn get(store: &Store, path: &str, cookie: &str) -> (StatusCode, String) {
    let request = Request::get(path)
        .header(header::HOST, HOST)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    send(store, request).await
}

/// A POST as htmx sends it from a page: this origin, the CSRF header, a urlencoded form.
async fn post(
    store: &Store,
    path: &str,
    who: &(String, String),
    form: &str,
) -> (StatusCode, String) {
    let request = Request::post(path)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header("hx-request", "true")
        .header(header::COOKIE, &who.0)
        .header("x-csrf-token", &who.1)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .unwrap();
    send(store, request).await
}

/// Logs `name` in with a new token of `role`: its row, its cookie and its CSRF token.
async fn login(store: &Store, name: &str, role: Role) -> (store::ApiTokenRow, (String, String)) {
    let (row, token) = web::auth::issue(store, name, role, Utc::now())
        .await
        .unwrap();
    let request = Request::post("/login")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .unwrap();
    let router = web::router(
        store.clone(),
        std::sync::Arc::new(queue::SqlBackend::new(store.clone())),
        &web::WebOptions::default(),
    );
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (_, page) = get(store, "/approvals", &cookie).await;
    let csrf = page
        .split("\"X-CSRF-Token\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF token")
        .to_string();
    (row, (cookie, csrf))
}

async fn held(store: &Store, creator: &store::ApiTokenRow, key: &str) -> i64 {
    store
        .withdrawal_create(&store::WithdrawalCreate {
            idempotency_key: key.into(),
            request_hash: "a".repeat(64),
            reference: format!("user:42/{key}"),
            chain: Chain::Tron,
            asset: "USDT".into(),
            destination: TO.into(),
            amount: "1500000000".into(),
            actor: format!("token:{}:{}", creator.id, creator.name),
            job: None,
            approval: true,
            limits: vec![],
            destination_rule: None,
            now: Utc::now(),
        })
        .await
        .unwrap()
        .row()
        .id
}

/// What a refused decision must leave alone.
async fn state_of(store: &Store, id: i64) -> (WithdrawalState, usize, Option<i64>) {
    let row = store.withdrawal_get(id).await.unwrap().unwrap();
    let decisions = store.withdrawal_approvals(id).await.unwrap().len();
    let audit_head = store
        .audit_list(&AuditList {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .first()
        .map(|entry| entry.id);
    (row.state, decisions, audit_head)
}

async fn approvals_keep_the_api_rules(db: &TestDb) {
    let store = db.store().await;
    let (carol_row, carol) = login(&store, "carol", Role::Admin).await;
    let (_, alice) = login(&store, "alice", Role::Operator).await;
    let (_, bob) = login(&store, "bob", Role::Operator).await;
    let (_, viewer) = login(&store, "wallboard", Role::Viewer).await;
    let first = held(&store, &carol_row, "w:1").await;
    let second = held(&store, &carol_row, "w:2").await;

    let (status, page) = get(&store, "/approvals", &alice.0).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for expected in [
        format!(r#"<tr id="held-{first}">"#),
        "1500 USDT".to_string(),
        "user:42/w:1".to_string(),
        format!("token:{}:carol", carol_row.id),
        "0 of 2".to_string(),
        format!(r#"hx-confirm="Approve withdrawal {first}: 1500 USDT on tron to {TO}?""#),
        format!(r#"hx-confirm="Reject withdrawal {first}: 1500 USDT on tron to {TO}?""#),
        r#"maxlength="500""#.to_string(),
        r#"sse-connect="/live?page=approvals""#.to_string(),
        r#"<a href="/approvals" aria-current="page">Approvals</a>"#.to_string(),
    ] {
        assert!(page.contains(&expected), "{expected} in {page}");
    }
    // The creator and a viewer see disabled controls, with the reason.
    let (_, page) = get(&store, "/approvals", &carol.0).await;
    assert!(
        page.contains("your token created this withdrawal"),
        "{page}"
    );
    let (_, page) = get(&store, "/approvals", &viewer.0).await;
    assert!(page.contains("need the operator role"), "{page}");

    // Refused, each changing nothing: a viewer (by role), the creator, a rejection without a
    // reason or with one over 500 characters.
    let approve = format!("/withdrawals/{first}/approve");
    let reject = format!("/withdrawals/{first}/reject");
    let long = format!("reason={}", "x".repeat(501));
    for (who, path, form, status, says) in [
        (
            &viewer,
            &approve,
            "",
            StatusCode::FORBIDDEN,
            "operator role",
        ),
        (
            &carol,
            &approve,
            "",
            StatusCode::CONFLICT,
            "creator can never approve",
        ),
        (
            &alice,
            &reject,
            "",
            StatusCode::UNPROCESSABLE_ENTITY,
            "needs a reason",
        ),
        (
            &alice,
            &reject,
            "reason=+++",
            StatusCode::UNPROCESSABLE_ENTITY,
            "needs a reason",
        ),
        (
            &alice,
            &reject,
            long.as_str(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1 to 500",
        ),
    ] {
        let before = state_of(&store, first).await;
        let (answer, body) = post(&store, path, who, form).await;
        assert_eq!(answer, status, "{path} {form}: {body}");
        assert!(body.contains(says), "{says} in {body}");
        assert_eq!(before, state_of(&store, first).await, "{path} {form}");
    }

    // Alice approves (twice: counted once), Bob approves: released, each audited.
    for who in [&alice, &alice] {
        let (status, body) = post(&store, &approve, who, "").await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    assert_eq!(
        store.withdrawal_approvals(first).await.unwrap().len(),
        1,
        "the same token twice counts once"
    );
    let (_, page) = get(&store, &format!("/withdrawals/{first}"), &alice.0).await;
    assert!(page.contains("1 of 2 so far"), "{page}");
    assert!(page.contains("your token approved it already"), "{page}");
    let (status, body) = post(&store, &approve, &bob, "reason=called+the+customer").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let released = store.withdrawal_get(first).await.unwrap().unwrap();
    assert_eq!(released.state, WithdrawalState::Pending);
    let audit = store
        .audit_list(&AuditList {
            action: Some("withdrawal.approve".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let actors: Vec<&str> = audit.iter().map(|entry| entry.actor.as_str()).collect();
    assert_eq!(actors.len(), 2, "{actors:?}");
    assert!(actors[0].ends_with(":bob") && actors[1].ends_with(":alice"));
    let (_, page) = get(&store, &format!("/withdrawals/{first}"), &bob.0).await;
    assert!(page.contains("called the customer"), "{page}");
    assert!(
        !page.contains("Waiting for approval"),
        "released: no controls"
    );

    // Bob rejects the other with a reason: failed, its page says who and why.
    let (status, body) = post(
        &store,
        &format!("/withdrawals/{second}/reject"),
        &bob,
        "reason=duplicate+of+order+7",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let rejected = store.withdrawal_get(second).await.unwrap().unwrap();
    assert_eq!(rejected.state, WithdrawalState::Failed);
    let (_, page) = get(&store, &format!("/withdrawals/{second}"), &alice.0).await;
    assert!(
        page.contains("rejected</td><td>duplicate of order 7</td>"),
        "{page}"
    );
    let (_, page) = get(&store, "/approvals", &alice.0).await;
    assert!(
        page.contains("No withdrawal is waiting for approval"),
        "{page}"
    );
}

async fn destinations_are_listed_and_removed_by_admins(db: &TestDb) {
    let store = db.store().await;
    let (_, admin) = login(&store, "root", Role::Admin).await;
    let (_, operator) = login(&store, "ops", Role::Operator).await;
    let row = store
        .withdrawal_destination_insert(&store::DestinationInsert {
            chain: Chain::Tron,
            address: TO.into(),
            label: "customer 42".into(),
            reference: Some("user:42".into()),
            actor: "token:1:root".into(),
            cooldown: std::time::Duration::from_secs(3_600),
            now: Utc::now(),
        })
        .await
        .unwrap();
    let (status, page) = get(&store, "/destinations", &operator.0).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for expected in [
        format!(r#"<tr id="dest-{}" data-usable="false">"#, row.id),
        "customer 42".to_string(),
        "cooling down".to_string(),
        "Allowlist mode is off".to_string(),
        "removing needs the admin role".to_string(),
    ] {
        assert!(page.contains(&expected), "{expected} in {page}");
    }
    let remove = format!("/destinations/{}/remove", row.id);
    let (status, body) = post(&store, &remove, &operator, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        store
            .withdrawal_destination_find(Chain::Tron, TO)
            .await
            .unwrap()
            .is_some()
    );
    let (status, body) = post(&store, &remove, &admin, "").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        store
            .withdrawal_destination_find(Chain::Tron, TO)
            .await
            .unwrap()
            .is_none()
    );
    let (status, _) = post(&store, &remove, &admin, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A withdrawal in manual review: its page offers the review actions to an operator (not to
/// a viewer), a form sends the API's request (stored, its check queued, audited), a bad one
/// is refused with the reason and stores nothing, and the page then shows the open review
/// and locks the actions until the worker answers.
async fn review_actions_keep_the_api_rules(db: &TestDb) {
    let store = db.store().await;
    let (creator, _) = login(&store, "backend", Role::Admin).await;
    let (_, alice) = login(&store, "alice", Role::Operator).await;
    let (_, viewer) = login(&store, "wally", Role::Viewer).await;
    let id = held(&store, &creator, "rv-1").await;
    for (from, to) in [
        (WithdrawalState::Approval, WithdrawalState::Pending),
        (WithdrawalState::Pending, WithdrawalState::Processing),
        (WithdrawalState::Processing, WithdrawalState::ManualReview),
    ] {
        store
            .withdrawal_transition(&store::WithdrawalTransition::new(
                id,
                from,
                to,
                "test",
                Utc::now(),
            ))
            .await
            .unwrap();
    }
    let page = format!("/withdrawals/{id}");
    let (status, body) = get(&store, &page, &alice.0).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("Manual review") && body.contains("Mark paid"),
        "{body}"
    );
    assert!(body.contains(&format!("hx-post=\"/withdrawals/{id}/review\"")));
    assert!(!body.contains("review actions need the operator role"));
    let (_, body) = get(&store, &page, &viewer.0).await;
    assert!(
        body.contains("review actions need the operator role; you are viewer"),
        "{body}"
    );

    let action = format!("/withdrawals/{id}/review");
    // A viewer: refused by role, nothing stored.
    let (status, _) = post(&store, &action, &viewer, "action=retry&reason=go").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Bad input: refused with the reason, nothing stored.
    for (form, wanted) in [
        ("action=mark_paid&txid=&reason=paid", "needs the txid"),
        ("action=retry&reason=", "1 to 500"),
        ("action=pay_twice&reason=x", "unknown review action"),
    ] {
        let (status, body) = post(&store, &action, &alice, form).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{form}: {body}");
        assert!(body.contains(wanted), "{form}: {body}");
    }
    assert!(store.withdrawal_reviews(id).await.unwrap().is_empty());

    // A good one: stored with its check queued; the txid field counts for mark_paid only.
    let (status, body) = post(
        &store,
        &action,
        &alice,
        "action=retry&txid=ignored&reason=its+nonce+is+final",
    )
    .await;
    assert!(
        status.is_success() || status == StatusCode::SEE_OTHER,
        "{status}: {body}"
    );
    let reviews = store.withdrawal_reviews(id).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].action, store::ReviewAction::Retry);
    assert_eq!(reviews[0].txid, None);
    assert_eq!(
        reviews[0].actor,
        format!("token:{}:alice", reviews[0].token_id.unwrap())
    );
    let jobs = store
        .job_list(&store::JobList {
            queue: Some(domain::Name::new("tron.withdrawal").unwrap()),
            state: None,
            before_id: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(
        jobs.iter()
            .any(|job| job.kind.as_str() == store::REVIEW_JOB_KIND),
        "{jobs:?}"
    );
    let (_, body) = get(&store, &page, &alice.0).await;
    assert!(body.contains("is being checked on the chain"), "{body}");
    assert!(body.contains("data-status=\"requested\""), "{body}");
    // A second one waits for the first.
    let (status, body) = post(&store, &action, &alice, "action=mark_failed&reason=x").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

testkit::on_both_stores!(
    db: approvals_keep_the_api_rules,
    destinations_are_listed_and_removed_by_admins,
    review_actions_keep_the_api_rules,
);
