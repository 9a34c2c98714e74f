//! Allowlist mode through the router, on both stores: admins register, list and remove
//! destinations (`/api/v1/withdrawal-destinations`, audited; operators, viewers and the
//! backend's service token may not change them); a withdrawal the mode covers is refused with
//! 422 `policy_refused` naming the rule when its destination is not registered, is still in
//! its cool-down, or is registered for another reference prefix, and nothing is stored or
//! queued; a usable one is paid as usual; the same request made before a removal still finds
//! its withdrawal.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use domain::{Chain, Role};
use serde_json::{Value, json};
use store::{AuditList, Store};
use testkit::TestDb;
use tower::ServiceExt;

const TRON_TO: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";
const OTHER_TRON: &str = "TUoHaVjx7n5xz8LwPRDckgFrDWhMhuSuJM";

struct Api {
    store: Store,
    options: web::WebOptions,
}

impl Api {
    async fn new(db: &TestDb, allowlist: web::withdrawals::Allowlist) -> Api {
        let intake = web::withdrawals::Intake {
            allowlist,
            ..web::withdrawals::Intake::default()
        };
        Api {
            store: db.store().await,
            options: web::WebOptions {
                intake: std::sync::Arc::new(intake),
                ..web::WebOptions::default()
            },
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Option<&Value>,
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

    async fn register(&self, token: &str, body: &Value) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/withdrawal-destinations",
            token,
            None,
            Some(body),
        )
        .await
    }

    async fn create(&self, token: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/withdrawals",
            token,
            Some(key),
            Some(body),
        )
        .await
    }

    /// Withdrawals stored and jobs queued: what a refusal must leave alone.
    async fn stored(&self) -> (usize, usize) {
        let withdrawals = self
            .store
            .withdrawal_list(&store::WithdrawalList {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len();
        let jobs = self
            .store
            .job_list(&store::JobList {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len();
        (withdrawals, jobs)
    }
}

async fn token(store: &Store, role: Role, name: &str) -> String {
    web::auth::issue(store, name, role, Utc::now())
        .await
        .unwrap()
        .1
}

fn usdt(to: &str, reference: &str) -> Value {
    json!({"chain": "tron", "asset": "USDT", "to": to, "amount": "5", "reference": reference})
}

fn refused_by_policy(status: StatusCode, body: &Value, words: &[&str]) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "policy_refused", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for word in words {
        assert!(message.contains(word), "{word:?} in {message}");
    }
}

async fn admins_register_list_and_remove(db: &TestDb) {
    let api = Api::new(db, web::withdrawals::Allowlist::default()).await;
    let admin = token(&api.store, Role::Admin, "root").await;
    let operator = token(&api.store, Role::Operator, "ops").await;
    let viewer = token(&api.store, Role::Viewer, "eyes").await;
    let backend = token(&api.store, Role::Service, "backend").await;
    let body = json!({"chain": "tron", "address": TRON_TO, "label": "Binance cold", "reference": "user:7"});
    for (who, expected) in [
        (&operator, StatusCode::FORBIDDEN),
        (&viewer, StatusCode::FORBIDDEN),
        (&backend, StatusCode::FORBIDDEN),
    ] {
        let (status, answer) = api.register(who, &body).await;
        assert_eq!(status, expected, "{answer}");
    }
    let before = Utc::now();
    let (status, made) = api.register(&admin, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["address"], TRON_TO);
    assert_eq!(made["reference"], "user:7");
    assert_eq!(made["usable"], false, "a new one cools down first");
    let usable_at: chrono::DateTime<Utc> = made["usable_at"].as_str().unwrap().parse().unwrap();
    assert!(usable_at >= before + chrono::Duration::hours(24), "{made}");
    assert!(made["created_by"].as_str().unwrap().starts_with("token:"));

    // Bad input and repeats: a clear error, nothing stored.
    for (bad, status_expected, code) in [
        (
            json!({"chain": "tron", "address": TRON_TO, "label": "again"}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            json!({"chain": "tron", "address": "0x52908400098527886E0F7030069857D2E4169EE7", "label": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({"chain": "solana", "address": TRON_TO, "label": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({"chain": "tron", "address": OTHER_TRON, "label": "x".repeat(101)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({"chain": "tron", "address": OTHER_TRON, "label": "x", "reference": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({"chain": "tron", "address": OTHER_TRON, "label": "x", "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({"chain": "tron", "address": OTHER_TRON}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
    ] {
        let (status, answer) = api.register(&admin, &bad).await;
        assert_eq!(status, status_expected, "{bad}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{bad}: {answer}");
    }

    let (status, list) = api
        .call(
            Method::GET,
            "/api/v1/withdrawal-destinations?chain=tron",
            &viewer,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["destinations"].as_array().unwrap().len(), 1);
    assert_eq!(list["destinations"][0], made);
    let (status, _) = api
        .call(
            Method::GET,
            "/api/v1/withdrawal-destinations",
            &backend,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let remove = format!("/api/v1/withdrawal-destinations/{}/remove", made["id"]);
    let (status, _) = api.call(Method::POST, &remove, &operator, None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, removed) = api.call(Method::POST, &remove, &admin, None, None).await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["id"], made["id"]);
    let (status, again) = api.call(Method::POST, &remove, &admin, None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{again}");
    let (_, list) = api
        .call(
            Method::GET,
            "/api/v1/withdrawal-destinations",
            &viewer,
            None,
            None,
        )
        .await;
    assert_eq!(list["destinations"], json!([]));
    let audit = api
        .store
        .audit_list(&AuditList {
            target: Some(format!("destination:tron:{TRON_TO}")),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "withdrawal_destination.remove",
            "withdrawal_destination.add"
        ]
    );
    assert!(audit.iter().all(|entry| entry.actor.ends_with(":root")));
}

async fn withdrawals_pay_only_to_usable_registered_destinations(db: &TestDb) {
    // Allowlist mode for TRON USDT alone, with a cool-down the test can wait out.
    let api = Api::new(
        db,
        web::withdrawals::Allowlist {
            all: false,
            assets: vec![(Chain::Tron, "USDT".into())],
            cooldown: Duration::from_millis(1_500),
        },
    )
    .await;
    let admin = token(&api.store, Role::Admin, "root").await;
    let backend = token(&api.store, Role::Service, "backend").await;

    let (status, body) = api
        .create(&backend, "w-1", &usdt(TRON_TO, "user:7/w:1"))
        .await;
    refused_by_policy(
        status,
        &body,
        &["not a registered", "withdrawal_policy tron/USDT: allowlist"],
    );
    assert_eq!(api.stored().await, (0, 0), "a refusal stores nothing");
    // Another asset is not covered.
    let (status, trx) = api
        .create(
            &backend,
            "trx-1",
            &json!({"chain": "tron", "asset": "TRX", "to": TRON_TO, "amount": "1", "reference": "user:7/t"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{trx}");

    let (status, made) = api
        .register(
            &admin,
            &json!({"chain": "tron", "address": TRON_TO, "label": "user 7's wallet", "reference": "user:7"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let (status, body) = api
        .create(&backend, "w-1", &usdt(TRON_TO, "user:7/w:1"))
        .await;
    refused_by_policy(status, &body, &["cooling down until", "allowlist"]);
    assert_eq!(api.stored().await, (1, 1));

    // Past the cool-down: usable, for its reference prefix only.
    let usable_at: chrono::DateTime<Utc> = made["usable_at"].as_str().unwrap().parse().unwrap();
    testkit::wait_for("the cool-down to end", Duration::from_secs(10), || async {
        (Utc::now() > usable_at).then_some(())
    })
    .await;
    let (status, body) = api
        .create(&backend, "w-2", &usdt(TRON_TO, "user:8/w:1"))
        .await;
    refused_by_policy(status, &body, &["reference prefix \"user:7\" only"]);
    assert_eq!(api.stored().await, (1, 1));
    let (status, paid) = api
        .create(&backend, "w-1", &usdt(TRON_TO, "user:7/w:1"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    assert_eq!(paid["state"], "pending");
    assert_eq!(api.stored().await, (2, 2));

    // Removed: new withdrawals are refused; the same request again finds its withdrawal.
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/api/v1/withdrawal-destinations/{}/remove", made["id"]),
            &admin,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, again) = api
        .create(&backend, "w-1", &usdt(TRON_TO, "user:7/w:1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], paid["id"]);
    let (status, body) = api
        .create(&backend, "w-3", &usdt(TRON_TO, "user:7/w:3"))
        .await;
    refused_by_policy(status, &body, &["not a registered"]);
    assert_eq!(api.stored().await, (2, 2));
}

async fn the_global_switch_covers_every_asset(db: &TestDb) {
    let api = Api::new(
        db,
        web::withdrawals::Allowlist {
            all: true,
            assets: vec![],
            cooldown: Duration::ZERO,
        },
    )
    .await;
    let admin = token(&api.store, Role::Admin, "root").await;
    let backend = token(&api.store, Role::Service, "backend").await;
    let trx = |to: &str, key: &str| {
        (
            key.to_string(),
            json!({"chain": "tron", "asset": "TRX", "to": to, "amount": "1", "reference": "user:1"}),
        )
    };
    let (key, body) = trx(TRON_TO, "t-1");
    let (status, answer) = api.create(&backend, &key, &body).await;
    refused_by_policy(status, &answer, &["(withdrawal_allowlist)"]);
    let (status, _) = api
        .register(
            &admin,
            &json!({"chain": "tron", "address": TRON_TO, "label": "any user"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // No cool-down, no reference: any withdrawal to it, at once.
    let (status, answer) = api.create(&backend, &key, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (key, body) = trx(OTHER_TRON, "t-2");
    let (status, answer) = api.create(&backend, &key, &body).await;
    refused_by_policy(status, &answer, &[OTHER_TRON]);
    assert_eq!(api.stored().await, (1, 1));
}

testkit::on_both_stores!(
    db: admins_register_list_and_remove,
    withdrawals_pay_only_to_usable_registered_destinations,
    the_global_switch_covers_every_asset,
);
