//! `/api/v1/withdrawals` through the router, on both stores: idempotent creation by the
//! `Idempotency-Key` header (201, then 200 with the same withdrawal, 409 for another body,
//! 400 without a key), the job enqueued once, bad input refused with nothing stored or
//! enqueued, reads, paging and cancel, and the `service` role that may do this and nothing
//! else.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use domain::{Name, Role};
use queue::Backend as _;
use serde_json::{Value, json};
use store::{JobList, Store};
use testkit::TestDb;
use tower::ServiceExt;

const TRON_TO: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";

struct Api {
    store: Store,
    options: web::WebOptions,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let response = web::router(
            self.store.clone(),
            std::sync::Arc::new(queue::SqlBackend::new(self.store.clone())),
            &self.options,
        )
        .oneshot(
            request
                .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn create(&self, token: &str, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/withdrawals",
            token,
            key,
            Some(&body.to_string()),
        )
        .await
    }

    async fn jobs(&self) -> usize {
        self.store
            .job_list(&JobList {
                queue: Some(Name::new("tron.withdrawal").unwrap()),
                state: None,
                before_id: None,
                limit: 100,
            })
            .await
            .unwrap()
            .len()
    }

    async fn stored(&self) -> usize {
        self.store
            .withdrawal_list(&store::WithdrawalList {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }
}

async fn token(store: &Store, role: Role, name: &str) -> String {
    web::auth::issue(store, name, role, Utc::now())
        .await
        .unwrap()
        .1
}

fn usdt(amount: &str, reference: &str) -> Value {
    json!({"chain": "tron", "asset": "USDT", "to": TRON_TO, "amount": amount, "reference": reference})
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
}

async fn created_once_per_idempotency_key(db: &TestDb) {
    let api = Api {
        store: db.store().await,
        options: web::WebOptions::default(),
    };
    let backend = token(&api.store, Role::Service, "backend").await;
    let (status, first) = api
        .create(&backend, Some("order-1"), &usdt("12.5", "user:7/w:1"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["state"], "pending");
    assert_eq!(first["amount"], "12.5");
    assert_eq!(first["amount_base_units"], "12500000");
    assert_eq!(first["asset"], "USDT");
    assert_eq!(first["to"], TRON_TO);
    assert_eq!(first["reference"], "user:7/w:1");
    assert!(first["txid"].is_null());
    assert_eq!(api.jobs().await, 1);
    // The same key and the same request (said another way): the same withdrawal, 200.
    let (status, again) = api
        .create(&backend, Some("order-1"), &usdt("12.500000", "user:7/w:1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"]);
    // The same key with another request: 409 naming the key, nothing changed.
    let (status, body) = api
        .create(&backend, Some("order-1"), &usdt("13", "user:7/w:1"))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "idempotency_key_reused",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("order-1")
    );
    // No key: 400.
    let (status, body) = api.create(&backend, None, &usdt("1", "user:7/w:2")).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "missing_idempotency_key",
    );
    assert_eq!((api.stored().await, api.jobs().await), (1, 1));

    // Read back, by id and in lists.
    let id = first["id"].as_i64().unwrap();
    let (status, one) = api
        .call(
            Method::GET,
            &format!("/api/v1/withdrawals/{id}"),
            &backend,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, first);
    for (key, amount) in [("order-2", "1"), ("order-3", "2")] {
        let (status, _) = api
            .create(&backend, Some(key), &usdt(amount, "user:8/w"))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, page) = api
        .call(
            Method::GET,
            "/api/v1/withdrawals?limit=2",
            &backend,
            None,
            None,
        )
        .await;
    let page_ids: Vec<i64> = page["withdrawals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect();
    assert_eq!(page_ids.len(), 2);
    let next = page["next_before_id"].as_i64().unwrap();
    let (_, rest) = api
        .call(
            Method::GET,
            &format!("/api/v1/withdrawals?limit=2&before_id={next}"),
            &backend,
            None,
            None,
        )
        .await;
    assert_eq!(rest["withdrawals"][0]["id"], first["id"]);
    let (_, of_user) = api
        .call(
            Method::GET,
            "/api/v1/withdrawals?reference=user:8/w&state=pending&chain=tron",
            &backend,
            None,
            None,
        )
        .await;
    assert_eq!(of_user["withdrawals"].as_array().unwrap().len(), 2);
    for bad in [
        "/api/v1/withdrawals?state=done",
        "/api/v1/withdrawals?chain=solana",
        "/api/v1/withdrawals?bogus=1",
    ] {
        let (status, body) = api.call(Method::GET, bad, &backend, None, None).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid");
    }
    for missing in [
        "/api/v1/withdrawals/999999",
        "/api/v1/withdrawals/+1",
        "/api/v1/withdrawals/01",
    ] {
        let (status, body) = api.call(Method::GET, missing, &backend, None, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
}

async fn bad_requests_store_and_enqueue_nothing(db: &TestDb) {
    let api = Api {
        store: db.store().await,
        options: web::WebOptions::default(),
    };
    let backend = token(&api.store, Role::Service, "backend").await;
    let with = |field: &str, value: Value| {
        let mut body = usdt("1", "user:1");
        body[field] = value;
        body
    };
    let cases: Vec<(&str, Value, StatusCode)> = vec![
        (
            "wrong network address",
            with("to", json!("0x52908400098527886E0F7030069857D2E4169EE7")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "mistyped address",
            with("to", json!("TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU8")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown asset",
            with("asset", json!("DOGE")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown chain",
            with("chain", json!("solana")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "too many decimals",
            with("amount", json!("1.0000001")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "zero",
            with("amount", json!("0")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "negative",
            with("amount", json!("-5")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "overflow",
            with("amount", json!("1".repeat(90))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "amount as a number",
            with("amount", json!(1)),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "control in reference",
            with("reference", json!("a\u{1b}[31mb")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "empty reference",
            with("reference", json!("")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown field",
            with("memo", json!("x")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "an array",
            json!(["tron", "USDT", TRON_TO, "1", "user:1"]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (what, body, expected) in cases {
        let (status, answer) = api.create(&backend, Some(what), &body).await;
        assert_eq!(status, expected, "{what}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{what}: {answer}");
    }
    for (what, key) in [
        ("long key", "k".repeat(101)),
        ("control in key", "a\tb".to_string()),
    ] {
        let (status, answer) = api.create(&backend, Some(&key), &usdt("1", "user:1")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
    }
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/withdrawals",
            &backend,
            Some("not-json"),
            Some("{"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let big = usdt("1", &"r".repeat(70 * 1024));
    let (status, _) = api.create(&backend, Some("big"), &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!((api.stored().await, api.jobs().await), (0, 0));
}

async fn cancel_only_while_pending(db: &TestDb) {
    let api = Api {
        store: db.store().await,
        options: web::WebOptions::default(),
    };
    let backend = token(&api.store, Role::Service, "backend").await;
    let (_, first) = api.create(&backend, Some("c-1"), &usdt("1", "u:1")).await;
    let (_, second) = api.create(&backend, Some("c-2"), &usdt("2", "u:1")).await;
    let cancel = |row: &Value| format!("/api/v1/withdrawals/{}/cancel", row["id"]);
    let (status, canceled) = api
        .call(Method::POST, &cancel(&first), &backend, None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{canceled}");
    assert_eq!(canceled["state"], "canceled");
    let (status, body) = api
        .call(Method::POST, &cancel(&first), &backend, None, None)
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    // A payer took the second: it may be signed, so it can no longer be canceled.
    api.store
        .withdrawal_transition(&store::WithdrawalTransition::new(
            second["id"].as_i64().unwrap(),
            domain::WithdrawalState::Pending,
            domain::WithdrawalState::Processing,
            "worker:tron-withdrawal-1",
            Utc::now(),
        ))
        .await
        .unwrap();
    let (status, body) = api
        .call(Method::POST, &cancel(&second), &backend, None, None)
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may have been signed")
    );
    let audit = api
        .store
        .audit_list(&store::AuditList {
            action: Some("withdrawal.canceled".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert!(audit[0].actor.ends_with(":backend"), "{}", audit[0].actor);
}

async fn the_service_role_does_withdrawals_and_nothing_else(db: &TestDb) {
    let api = Api {
        store: db.store().await,
        options: web::WebOptions::default(),
    };
    let backend = token(&api.store, Role::Service, "backend").await;
    let viewer = token(&api.store, Role::Viewer, "wallboard").await;
    let operator = token(&api.store, Role::Operator, "on-call").await;
    let admin = token(&api.store, Role::Admin, "root").await;
    for path in [
        "/api/admin/workers",
        "/api/admin/queues",
        "/api/admin/audit",
        "/api/admin/tokens",
        "/api/openapi.json",
    ] {
        let (status, body) = api.call(Method::GET, path, &backend, None, None).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    let (status, body) = api
        .call(
            Method::POST,
            "/api/admin/tokens",
            &backend,
            None,
            Some(r#"{"name":"x","role":"admin"}"#),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    // Viewers and operators read withdrawals but neither create nor cancel them.
    let (status, created) = api
        .create(&admin, Some("by-admin"), &usdt("1", "u:2"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for reader in [&viewer, &operator] {
        let (status, _) = api
            .call(Method::GET, "/api/v1/withdrawals", reader, None, None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = api
            .create(reader, Some("by-reader"), &usdt("1", "u:2"))
            .await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
        let path = format!("/api/v1/withdrawals/{}/cancel", created["id"]);
        let (status, body) = api.call(Method::POST, &path, reader, None, None).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    assert_eq!(api.stored().await, 1);
}

/// Policy and four eyes through the API: below the minimum or above the maximum is refused
/// with the rule named and nothing stored; above the approval threshold it is held with
/// nothing queued; the backend and viewers cannot decide; the creator's token cannot either;
/// two distinct operator tokens release it (its job queued once); a rejection fails another
/// with the reason.
async fn policy_and_four_eyes(db: &TestDb) {
    let mut intake = web::withdrawals::Intake::default();
    let units = |text: &str| domain::Amount::parse_positive(text, 6).unwrap();
    intake.policies = vec![web::withdrawals::AssetPolicy {
        chain: domain::Chain::Tron,
        asset: "USDT".into(),
        min: Some(units("1")),
        max: Some(units("1000")),
        approval_above: Some(units("100")),
        floor: None,
        daily_limit: None,
        daily_limit_per_reference: None,
    }];
    let api = Api {
        store: db.store().await,
        options: web::WebOptions {
            intake: std::sync::Arc::new(intake),
            ..web::WebOptions::default()
        },
    };
    let backend = token(&api.store, Role::Service, "backend").await;
    let viewer = token(&api.store, Role::Viewer, "wallboard").await;
    let alice = token(&api.store, Role::Admin, "alice").await;
    let bob = token(&api.store, Role::Operator, "bob").await;
    for (amount, rule) in [("0.5", "min"), ("1000.000001", "max")] {
        let (status, body) = api
            .create(&backend, Some(amount), &usdt(amount, "user:1"))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_refused",
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("tron/USDT: {rule}")), "{message}");
    }
    assert_eq!(api.stored().await, 0);
    let (status, small) = api
        .create(&backend, Some("small"), &usdt("100", "user:1"))
        .await;
    assert_eq!(
        (status, small["state"].as_str()),
        (StatusCode::CREATED, Some("pending"))
    );
    assert_eq!(api.jobs().await, 1);
    let (status, held) = api
        .create(&alice, Some("big"), &usdt("100.000001", "user:2"))
        .await;
    assert_eq!(
        (status, held["state"].as_str()),
        (StatusCode::CREATED, Some("approval"))
    );
    assert_eq!(api.jobs().await, 1, "nothing queued while held");
    let approve = format!("/api/v1/withdrawals/{}/approve", held["id"]);
    for who in [&backend, &viewer] {
        let (status, body) = api.call(Method::POST, &approve, who, None, None).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    // alice created it.
    let (status, body) = api.call(Method::POST, &approve, &alice, None, None).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, body) = api
        .call(
            Method::POST,
            &approve,
            &bob,
            None,
            Some(r#"{"reason": "known customer"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "approval");
    assert_eq!(body["approvals"].as_array().unwrap().len(), 1);
    // bob again: counted once.
    let (status, body) = api.call(Method::POST, &approve, &bob, None, None).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("approval"))
    );
    let carol = token(&api.store, Role::Operator, "carol").await;
    let (status, body) = api.call(Method::POST, &approve, &carol, None, None).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("pending")),
        "{body}"
    );
    assert_eq!(api.jobs().await, 2, "released: its job queued");

    let (_, other) = api
        .create(&backend, Some("big-2"), &usdt("500", "user:3"))
        .await;
    let reject = format!("/api/v1/withdrawals/{}/reject", other["id"]);
    let (status, body) = api.call(Method::POST, &reject, &bob, None, None).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (status, body) = api
        .call(
            Method::POST,
            &reject,
            &bob,
            None,
            Some(r#"{"reason": "sanctioned address"}"#),
        )
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("failed")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("sanctioned address")
    );
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/api/v1/withdrawals/{}/approve", other["id"]),
            &carol,
            None,
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert_eq!(api.jobs().await, 2);
}

/// A per-reference daily limit through the API: the prefix before `/` is the user; a second
/// withdrawal of the same user past the limit is refused with the rule named, another user's
/// passes.
async fn daily_limit_per_reference(db: &TestDb) {
    let intake = web::withdrawals::Intake {
        policies: vec![web::withdrawals::AssetPolicy {
            chain: domain::Chain::Tron,
            asset: "USDT".into(),
            min: None,
            max: None,
            approval_above: None,
            floor: None,
            daily_limit: None,
            daily_limit_per_reference: Some(domain::Amount::parse_positive("150", 6).unwrap()),
        }],
        ..web::withdrawals::Intake::default()
    };
    let api = Api {
        store: db.store().await,
        options: web::WebOptions {
            intake: std::sync::Arc::new(intake),
            ..web::WebOptions::default()
        },
    };
    let backend = token(&api.store, Role::Service, "backend").await;
    let (status, _) = api
        .create(&backend, Some("d-1"), &usdt("100", "user:1/w:1"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = api
        .create(&backend, Some("d-2"), &usdt("100", "user:1/w:2"))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "policy_refused",
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("daily_limit_per_reference") && message.contains("\"user:1\""),
        "{message}"
    );
    let (status, _) = api
        .create(&backend, Some("d-3"), &usdt("100", "user:2/w:1"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(api.stored().await, 2);
}

/// Policies through the API: an admin replaces an asset's rules (checked like the
/// configuration's, audited with before and after), the next request keeps to them, and
/// deleting gives the configuration's back; operators and viewers cannot change them, bad
/// values change nothing.
async fn policies_change_through_the_api(db: &TestDb) {
    let mut intake = web::withdrawals::Intake::default();
    let units = |text: &str| domain::Amount::parse_positive(text, 6).unwrap();
    intake.policies = vec![web::withdrawals::AssetPolicy {
        chain: domain::Chain::Tron,
        asset: "USDT".into(),
        min: None,
        max: Some(units("1000")),
        approval_above: None,
        floor: Some(units("5")),
        daily_limit: None,
        daily_limit_per_reference: None,
    }];
    let api = Api {
        store: db.store().await,
        options: web::WebOptions {
            intake: std::sync::Arc::new(intake),
            ..web::WebOptions::default()
        },
    };
    let backend = token(&api.store, Role::Service, "backend").await;
    let viewer = token(&api.store, Role::Viewer, "wallboard").await;
    let operator = token(&api.store, Role::Operator, "bob").await;
    let admin = token(&api.store, Role::Admin, "carol").await;
    let path = "/api/admin/withdrawal-policies/tron/USDT";
    let list = |who: String| {
        let api = &api;
        async move {
            let (status, body) = api
                .call(
                    Method::GET,
                    "/api/admin/withdrawal-policies",
                    &who,
                    None,
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["policies"]
                .as_array()
                .unwrap()
                .iter()
                .find(|each| each["chain"] == "tron" && each["asset"] == "USDT")
                .cloned()
                .unwrap()
        }
    };
    let usdt_now = list(viewer.clone()).await;
    assert_eq!(usdt_now["source"], "config");
    assert_eq!(usdt_now["max"]["amount"], "1000");
    assert_eq!(usdt_now["floor"]["base_units"], "5000000");

    // Not an admin: refused. Bad values: refused, nothing changed.
    for who in [&viewer, &operator, &backend] {
        let (status, body) = api
            .call(Method::PUT, path, who, None, Some(r#"{"max": "10"}"#))
            .await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    for (body, wanted) in [
        (r#"{"max": "-1"}"#, "max"),
        (r#"{"min": "0.0000001"}"#, "min"),
        (r#"{"min": "5", "max": "1"}"#, "min is above max"),
        (r#"{"floor": "1"}"#, "floor"),
        (r#"{"max": 10}"#, "expected a string"),
    ] {
        let (status, answer) = api.call(Method::PUT, path, &admin, None, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert!(answer.to_string().contains(wanted), "{body}: {answer}");
    }
    let (status, body) = api
        .call(
            Method::PUT,
            "/api/admin/withdrawal-policies/tron/DOGE",
            &admin,
            None,
            Some("{}"),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(list(viewer.clone()).await, usdt_now, "nothing changed");

    // Set: the next request keeps to it.
    let (status, body) = api
        .call(
            Method::PUT,
            path,
            &admin,
            None,
            Some(r#"{"max": "10", "approval_above": "5"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["source"], "api");
    assert_eq!(body["max"]["base_units"], "10000000");
    assert_eq!(
        body["floor"]["amount"], "5",
        "the floor stays the configuration's"
    );
    let (status, body) = api
        .create(&backend, Some("p-1"), &usdt("11", "user:1"))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "policy_refused",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tron/USDT: max")
    );
    let (status, body) = api
        .create(&backend, Some("p-2"), &usdt("6", "user:1"))
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::CREATED, Some("approval"))
    );
    let audit = api
        .store
        .audit_list(&store::AuditList {
            action: Some("withdrawal_policy.set".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].target, "withdrawal_policy:tron/USDT");
    assert_eq!(audit[0].details["before"]["max"], "1000000000");
    assert_eq!(audit[0].details["after"]["max"], "10000000");
    assert!(audit[0].actor.ends_with(":carol"), "{}", audit[0].actor);

    // Cleared: the configuration's again.
    let (status, body) = api.call(Method::DELETE, path, &admin, None, None).await;
    assert_eq!(
        (status, body["source"].as_str()),
        (StatusCode::OK, Some("config")),
        "{body}"
    );
    let (status, _) = api
        .create(&backend, Some("p-3"), &usdt("11", "user:1"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = api.call(Method::DELETE, path, &admin, None, None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

/// A review asked through the API with the Redis queue: stored `requested`, its check queued
/// on the chain's withdrawal queue in Redis (after the commit); the service role refused;
/// viewers read the reviews.
#[tokio::test]
async fn a_review_is_queued_on_redis() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let prefix = format!("cs-review-{}:", std::process::id());
    let redis = std::sync::Arc::new(
        queue::RedisBackend::connect("redis://127.0.0.1:6379", &prefix)
            .await
            .expect("redis at 127.0.0.1:6379"),
    );
    let id = store
        .withdrawal_create(&store::WithdrawalCreate {
            idempotency_key: "rv".into(),
            request_hash: "a".repeat(64),
            reference: "user:1".into(),
            chain: domain::Chain::Tron,
            asset: "USDT".into(),
            destination: TRON_TO.into(),
            amount: "1".into(),
            actor: "token:1:backend".into(),
            job: None,
            approval: false,
            limits: vec![],
            destination_rule: None,
            now: Utc::now(),
        })
        .await
        .unwrap()
        .row()
        .id;
    for (from, to) in [
        (
            domain::WithdrawalState::Pending,
            domain::WithdrawalState::Processing,
        ),
        (
            domain::WithdrawalState::Processing,
            domain::WithdrawalState::ManualReview,
        ),
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
    let operator = token(&store, Role::Operator, "bob").await;
    let service = token(&store, Role::Service, "backend").await;
    let call = |token: String, method: Method, path: String, body: Option<&'static str>| {
        let router = web::router(store.clone(), redis.clone(), &web::WebOptions::default());
        async move {
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {token}"));
            if body.is_some() {
                request = request.header("content-type", "application/json");
            }
            let response = router
                .oneshot(
                    request
                        .body(body.map_or_else(Body::empty, Body::from))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let path = format!("/api/v1/withdrawals/{id}/review");
    let body = r#"{"action": "retry", "reason": "every attempt is dead"}"#;
    let (status, _) = call(service.clone(), Method::POST, path.clone(), Some(body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, review) = call(operator.clone(), Method::POST, path.clone(), Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{review}");
    assert_eq!(review["state"], "requested");
    let jobs = redis
        .list(&JobList {
            queue: Some(Name::new("tron.withdrawal").unwrap()),
            state: None,
            before_id: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(
        jobs.iter()
            .any(|job| job.kind.as_str() == store::REVIEW_JOB_KIND
                && job.args == json!({"review_id": review["id"]})),
        "{jobs:?}"
    );
    let (status, listed) = call(
        operator,
        Method::GET,
        format!("/api/v1/withdrawals/{id}/reviews"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["reviews"][0]["id"], review["id"]);
    // The review jobs in the store's queue: none (Redis holds it).
    assert!(
        store
            .job_list(&JobList {
                queue: Some(Name::new("tron.withdrawal").unwrap()),
                state: None,
                before_id: None,
                limit: 10,
            })
            .await
            .unwrap()
            .is_empty()
    );
}

testkit::on_both_stores!(
    db:
    created_once_per_idempotency_key,
    bad_requests_store_and_enqueue_nothing,
    cancel_only_while_pending,
    the_service_role_does_withdrawals_and_nothing_else,
    policy_and_four_eyes,
    daily_limit_per_reference,
    policies_change_through_the_api,
);
