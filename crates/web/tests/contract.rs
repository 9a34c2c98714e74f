//! The admin API's contract, on both stores: the OpenAPI document matches the routes and the
//! responses; every route × every role × no token answers as its least role says; every
//! accepted mutation writes one audit entry naming the token; generated bad requests never
//! get a 5xx nor change anything; tokens, metrics, the failed-authentication limit and the
//! request limits work through the router.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use chrono::Utc;
use domain::{Chain, Role, WorkerId, WorkerKind};
use serde_json::{Value, json};
use store::{AuditList, Store, WorkerRegister};
use testkit::TestDb;
use tower::ServiceExt;

const QUEUE: &str = "tron.withdrawal";
const WORKER: &str = "tron-withdrawal-1";

fn openapi() -> Value {
    serde_json::from_str(web::api::OPENAPI).expect("openapi.json is JSON")
}

/// A request to send through the router.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    token: Option<String>,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    body: Vec<u8>,
    client: Option<SocketAddr>,
}

impl Call {
    fn new(method: Method, path: impl Into<String>, token: Option<&str>) -> Call {
        Call {
            method,
            path: path.into(),
            token: token.map(str::to_string),
            content_type: None,
            idempotency_key: None,
            body: Vec::new(),
            client: None,
        }
    }

    fn json(mut self, body: &Value) -> Call {
        self.content_type = Some("application/json".into());
        self.body = body.to_string().into_bytes();
        self
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(router: &Router, call: &Call) -> Answer {
    let mut request = Request::builder()
        .method(call.method.clone())
        .uri(&call.path);
    if let Some(token) = &call.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(content_type) = &call.content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(key) = &call.idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let mut request = request.body(Body::from(call.body.clone())).unwrap();
    if let Some(client) = call.client {
        request.extensions_mut().insert(ConnectInfo(client));
    }
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let is_stream = headers
        .get("content-type")
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    let body = if is_stream {
        Value::String("(event stream)".into())
    } else {
        let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// The data every test starts from: two workers, a queue with a failed job, a token per role
/// and a spare token to revoke.
struct Fixture {
    store: Store,
    backend: Arc<dyn queue::Backend>,
    router: Router,
    tokens: Vec<(Role, i64, String)>,
    spare_token: i64,
    job: i64,
    withdrawal: i64,
}

impl Fixture {
    async fn new(db: &TestDb, options: web::WebOptions) -> Fixture {
        let store = db.store().await;
        for (id, kind, chain) in [
            (WORKER, WorkerKind::Withdrawal, Chain::Tron),
            ("ethereum-deposit-1", WorkerKind::Deposit, Chain::Ethereum),
        ] {
            store
                .worker_register(&WorkerRegister {
                    id: WorkerId::new(id).unwrap(),
                    name: id.into(),
                    kind,
                    chain,
                    pid: Some(1),
                    host: Some("h".into()),
                    port: None,
                    version: None,
                    config: json!({}),
                    incarnation: format!("inc-{id}"),
                    now: Utc::now(),
                })
                .await
                .unwrap();
        }
        let job = testkit::enqueue_one_shot(&store, QUEUE).await;
        testkit::fail_next_job(&store, QUEUE, job, "node timeout").await;
        let mut tokens = Vec::new();
        for role in Role::ALL {
            let (id, secret) = token(&store, *role, &format!("{role}-token")).await;
            tokens.push((*role, id, secret));
        }
        let (spare_token, _) = token(&store, Role::Viewer, "spare").await;
        // A withdrawal to read and cancel (without a job: the fixture's queue holds one only).
        let withdrawal = store
            .withdrawal_create(&store::WithdrawalCreate {
                idempotency_key: "fixture".into(),
                request_hash: "0".repeat(64),
                reference: "user:1".into(),
                chain: Chain::Tron,
                asset: "TRX".into(),
                destination: "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7".into(),
                amount: "1500000".into(),
                actor: "test".into(),
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
        let backend: Arc<dyn queue::Backend> = Arc::new(queue::SqlBackend::new(store.clone()));
        let router = web::router(store.clone(), Arc::clone(&backend), &options);
        Fixture {
            store,
            backend,
            router,
            tokens,
            spare_token,
            job,
            withdrawal,
        }
    }

    fn secret(&self, role: Role) -> &str {
        &self
            .tokens
            .iter()
            .find(|(held, _, _)| *held == role)
            .unwrap()
            .2
    }

    fn token_id(&self, role: Role) -> i64 {
        self.tokens
            .iter()
            .find(|(held, _, _)| *held == role)
            .unwrap()
            .1
    }

    /// A route's template with its placeholders filled with things that exist.
    fn concrete(&self, path: &str) -> String {
        let id = if path.starts_with("/api/admin/jobs/") {
            self.job.to_string()
        } else if path.starts_with("/api/admin/tokens/") {
            self.spare_token.to_string()
        } else if path.starts_with("/api/v1/withdrawals/") {
            self.withdrawal.to_string()
        } else {
            WORKER.to_string()
        };
        path.replace("{id}", &id).replace("{name}", QUEUE)
    }

    /// What a request may change: compared before and after every refused request.
    async fn fingerprint(&self) -> Value {
        let workers = self
            .store
            .worker_list(&store::WorkerList {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let jobs = self
            .backend
            .list(&store::JobList {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let queues = self.backend.stats(Utc::now()).await.unwrap();
        let tokens = self.store.api_token_list().await.unwrap();
        let withdrawals = self
            .store
            .withdrawal_list(&store::WithdrawalList {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let audit = self
            .store
            .audit_list(&AuditList {
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        json!({
            "workers": workers.iter().map(|w| json!([w.id.as_str(), w.desired_state.as_str(), w.generation, w.status.as_str()])).collect::<Vec<_>>(),
            "jobs": jobs.iter().map(|j| json!([j.id, j.state.as_str(), j.attempt])).collect::<Vec<_>>(),
            "queues": queues.iter().map(|q| json!([q.name.as_str(), q.paused, q.concurrency_limit, q.available, q.failed])).collect::<Vec<_>>(),
            "tokens": tokens.iter().map(|t| json!([t.id, t.revoked_at.is_some()])).collect::<Vec<_>>(),
            "withdrawals": withdrawals.iter().map(|w| json!([w.id, w.state.as_str()])).collect::<Vec<_>>(),
            "audit_head": audit.first().map(|entry| entry.id),
        })
    }
}

async fn token(store: &Store, role: Role, name: &str) -> (i64, String) {
    let (row, secret) = web::auth::issue(store, name, role, Utc::now())
        .await
        .unwrap();
    (row.id, secret)
}

/// Derives deposit addresses from a deposit xpub, as the binary does.
#[derive(Debug)]
struct Derive(signer::Xpub);

impl web::deposits::DeriveAddress for Derive {
    fn derive(&self, index: u32) -> Result<chain::address::Address, String> {
        self.0.address(index).map_err(|error| error.to_string())
    }
}

/// Deposit addresses on every chain, from the public test mnemonic's deposit accounts.
fn deposit_intake() -> web::deposits::DepositIntake {
    let mnemonic = signer::Mnemonic::parse(
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
    )
    .unwrap();
    let signer = signer::InProcessSigner::new(&mnemonic, chain::address::Network::Mainnet);
    web::deposits::DepositIntake {
        derivers: [Chain::Tron, Chain::Ethereum, Chain::Bitcoin]
            .into_iter()
            .map(|chain| {
                let derive: std::sync::Arc<dyn web::deposits::DeriveAddress> =
                    std::sync::Arc::new(Derive(signer.deposit_xpub(chain).unwrap()));
                (chain, derive)
            })
            .collect(),
        ..Default::default()
    }
}

fn lenient() -> web::WebOptions {
    web::WebOptions {
        auth_failures_per_minute: u32::MAX,
        deposits: std::sync::Arc::new(deposit_intake()),
        ..web::WebOptions::default()
    }
}

/// A valid body for the routes that take one.
fn body_for(path: &str) -> Option<Value> {
    if path.ends_with("/limit") {
        Some(json!({"concurrency_limit": 3}))
    } else if path == "/api/admin/tokens" {
        Some(json!({"name": "made-by-test", "role": "viewer"}))
    } else if path == "/api/v1/deposit-addresses" {
        Some(json!({"chain": "tron", "reference": "user:1"}))
    } else if path == "/api/v1/withdrawals" {
        Some(
            json!({"chain": "tron", "asset": "TRX", "to": "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7", "amount": "1.5", "reference": "user:1"}),
        )
    } else if path == "/api/v1/withdrawal-destinations" {
        Some(
            json!({"chain": "tron", "address": "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7", "label": "cold wallet"}),
        )
    } else {
        None
    }
}

/// Checks `body` against the schema the document gives for `method path` answering `status`.
fn assert_documented(doc: &Value, method: &Method, path: &str, status: StatusCode, body: &Value) {
    let operation = &doc["paths"][path][method.as_str().to_lowercase()];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let response = &operation["responses"][status.as_str()];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which the document does not list"
    );
    let response = match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &doc["components"]["responses"][name]
        }
        None => response,
    };
    let Some(schema) = response["content"]["application/json"]["schema"].as_object() else {
        return;
    };
    let mut root = Value::Object(schema.clone());
    root["components"] = doc["components"].clone();
    let validator = jsonschema::validator_for(&root).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the body does not match the document: {errors:#?}\n{body:#}"
    );
}

#[test]
fn the_document_lists_exactly_the_routes_with_their_roles() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            if path.starts_with("/api/") {
                documented.insert((
                    method.to_uppercase(),
                    path.clone(),
                    operation["x-required-role"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string(),
                    operation["x-service-role"].as_bool().unwrap_or(false),
                ));
                assert!(
                    operation["responses"]["401"].is_object(),
                    "{method} {path} must document 401"
                );
            }
        }
    }
    let routed: BTreeSet<(String, String, String, bool)> = web::api::route_table()
        .iter()
        .map(|route| {
            (
                route.method.to_string(),
                route.path.to_string(),
                route.role.as_str().to_string(),
                route.service,
            )
        })
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes not documented (or with another role): {missing:#?}\ndocumented but not routed: {extra:#?}"
    );
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert!(doc["paths"][probe]["get"].is_object(), "{probe}");
    }
}

/// Every route × no token and every role: 401 without a token, 403 below the route's role
/// (nothing changed), and otherwise an answer that matches the document; each accepted
/// mutation adds exactly one audit entry naming its token.
async fn every_route_and_role(db: &TestDb) {
    let fixture = Fixture::new(db, lenient()).await;
    let doc = openapi();
    let mut callers: Vec<Option<Role>> = vec![None];
    callers.extend(Role::ALL.iter().copied().map(Some));
    for route in web::api::route_table() {
        for caller in &callers {
            let path = fixture.concrete(route.path);
            let token = caller.map(|role| fixture.secret(role).to_string());
            let mut call = Call::new(route.method.clone(), path.clone(), token.as_deref());
            if let Some(mut body) = body_for(route.path) {
                // Each accepted address request is a new reference's: a new address.
                if route.path == "/api/v1/deposit-addresses" {
                    body["reference"] = json!(format!("{} {caller:?}", route.method));
                }
                call = call.json(&body);
            }
            // Each accepted creation is a new withdrawal: a key of its own per call.
            call.idempotency_key = Some(format!("{} {path} {caller:?}", route.method));
            let before = fixture.fingerprint().await;
            let answer = send(&fixture.router, &call).await;
            let after = fixture.fingerprint().await;
            let context = format!("{} {path} as {caller:?}", route.method);
            assert!(
                !answer.status.is_server_error(),
                "{context}: {}",
                answer.body
            );
            match caller {
                None => assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{context}"),
                Some(role) if !role.allows_route(route.role, route.service) => {
                    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{context}")
                }
                Some(_) => assert!(
                    answer.status != StatusCode::UNAUTHORIZED
                        && answer.status != StatusCode::FORBIDDEN,
                    "{context}: {} {}",
                    answer.status,
                    answer.body
                ),
            }
            if answer.body != json!("(event stream)") {
                assert_documented(&doc, &route.method, route.path, answer.status, &answer.body);
            }
            if !answer.status.is_success() {
                assert_eq!(before, after, "{context}: a refused request changed state");
                continue;
            }
            if route.method == Method::POST {
                let audit = fixture
                    .store
                    .audit_list(&AuditList {
                        limit: 5,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                let newest = &audit[0];
                assert_eq!(Some(newest.id), after["audit_head"].as_i64(), "{context}");
                assert_ne!(
                    before["audit_head"], after["audit_head"],
                    "{context}: an accepted mutation must be audited"
                );
                assert!(
                    audit.get(1).map(|entry| entry.id) == before["audit_head"].as_i64(),
                    "{context}: exactly one audit entry per mutation"
                );
                let role = caller.unwrap();
                assert_eq!(
                    newest.actor,
                    format!("token:{}:{role}-token", fixture.token_id(role)),
                    "{context}"
                );
            } else {
                assert_eq!(before, after, "{context}: a read changed state");
            }
        }
    }
}

/// Tokens through the API: an admin makes one (shown once), it works with its role, the list
/// never shows a secret, and once revoked it opens nothing.
async fn tokens_through_the_api(db: &TestDb) {
    let fixture = Fixture::new(db, lenient()).await;
    let admin = fixture.secret(Role::Admin).to_string();
    let created = send(
        &fixture.router,
        &Call::new(Method::POST, "/api/admin/tokens", Some(&admin))
            .json(&json!({"name": "grafana", "role": "operator"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret = created.body["token"].as_str().unwrap().to_string();
    let id = created.body["id"].as_i64().unwrap();
    assert!(secret.starts_with("cst_") && secret.len() == 68);
    let stop = Call::new(
        Method::POST,
        format!("/api/admin/workers/{WORKER}/stop"),
        Some(&secret),
    );
    assert_eq!(
        send(&fixture.router, &stop).await.status,
        StatusCode::ACCEPTED
    );
    let listed = send(
        &fixture.router,
        &Call::new(Method::GET, "/api/admin/tokens", Some(&admin)),
    )
    .await;
    assert!(
        !listed.body.to_string().contains(&secret[4..]),
        "no secret in lists"
    );
    assert!(
        listed.body["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|token| token["id"] == id && token["role"] == "operator")
    );
    let revoked = send(
        &fixture.router,
        &Call::new(
            Method::POST,
            format!("/api/admin/tokens/{id}/revoke"),
            Some(&admin),
        ),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    let start = Call::new(
        Method::POST,
        format!("/api/admin/workers/{WORKER}/start"),
        Some(&secret),
    );
    assert_eq!(
        send(&fixture.router, &start).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = send(
        &fixture.router,
        &Call::new(
            Method::POST,
            format!("/api/admin/tokens/{id}/revoke"),
            Some(&admin),
        ),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let actions: Vec<String> = fixture
        .store
        .audit_list(&AuditList {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        // The fixture's own withdrawal is not this test's.
        .filter(|entry| entry.actor != "test")
        .map(|entry| format!("{} {}", entry.action, entry.actor))
        .collect();
    let admin_actor = format!("token:{}:admin-token", fixture.token_id(Role::Admin));
    assert_eq!(
        actions,
        [
            format!("token.revoke {admin_actor}"),
            format!("worker.stop token:{id}:grafana"),
            format!("token.create {admin_actor}"),
        ]
    );
    // Bad bodies: each a 4xx with the reason, nothing made.
    let before = fixture.fingerprint().await;
    for (body, content_type, status) in [
        (
            "{\"name\": \"x\"",
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            "{\"name\": \"x\", \"role\": \"root\"}",
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "{\"name\": \"x\", \"role\": \"viewer\", \"admin\": true}",
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "{\"name\": 7, \"role\": \"viewer\"}",
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "{\"name\": \"  \", \"role\": \"viewer\"}",
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "name=x&role=viewer",
            "application/x-www-form-urlencoded",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let mut call = Call::new(Method::POST, "/api/admin/tokens", Some(&admin));
        call.content_type = Some(content_type.into());
        call.body = body.as_bytes().to_vec();
        let answer = send(&fixture.router, &call).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(
            answer.body["error"]["message"].as_str().is_some(),
            "{}",
            answer.body
        );
    }
    assert_eq!(before, fixture.fingerprint().await);
}

/// `/metrics`: a viewer token by default (a service token is refused), public when
/// configured; the fleet and the withdrawals from the database.
async fn metrics_scrape(db: &TestDb) {
    let fixture = Fixture::new(db, lenient()).await;
    let anonymous = send(&fixture.router, &Call::new(Method::GET, "/metrics", None)).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let service = send(
        &fixture.router,
        &Call::new(Method::GET, "/metrics", Some(fixture.secret(Role::Service))),
    )
    .await;
    assert_eq!(service.status, StatusCode::FORBIDDEN, "{}", service.body);
    assert_documented(
        &openapi(),
        &Method::GET,
        "/metrics",
        service.status,
        &service.body,
    );
    // The fixture's withdrawal is canceled; one more, older, moved on to `processing`, is the
    // oldest unfinished one.
    fixture
        .store
        .withdrawal_cancel(fixture.withdrawal, "test", Utc::now())
        .await
        .unwrap();
    let moved = fixture
        .store
        .withdrawal_create(&store::WithdrawalCreate {
            idempotency_key: "metrics".into(),
            request_hash: "1".repeat(64),
            reference: "user:2".into(),
            chain: Chain::Tron,
            asset: "TRX".into(),
            destination: "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7".into(),
            amount: "1".into(),
            actor: "test".into(),
            job: None,
            approval: false,
            limits: vec![],
            destination_rule: None,
            now: Utc::now() - chrono::Duration::seconds(90),
        })
        .await
        .unwrap()
        .row()
        .id;
    fixture
        .store
        .withdrawal_transition(&store::WithdrawalTransition::new(
            moved,
            domain::WithdrawalState::Pending,
            domain::WithdrawalState::Processing,
            "test",
            Utc::now(),
        ))
        .await
        .unwrap();
    // A second one waits for its hot wallet: the alert's gauge counts it.
    let short = fixture
        .store
        .withdrawal_create(&store::WithdrawalCreate {
            idempotency_key: "metrics-short".into(),
            request_hash: "2".repeat(64),
            reference: "user:3".into(),
            chain: Chain::Tron,
            asset: "TRX".into(),
            destination: "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7".into(),
            amount: "1".into(),
            actor: "test".into(),
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
    for (from, to, error) in [
        (
            domain::WithdrawalState::Pending,
            domain::WithdrawalState::Processing,
            None,
        ),
        (
            domain::WithdrawalState::Processing,
            domain::WithdrawalState::Pending,
            Some(format!(
                "{}: the hot wallet holds 0",
                domain::withdrawal::WAITING_FOR_FUNDS
            )),
        ),
    ] {
        let mut transition = store::WithdrawalTransition::new(short, from, to, "test", Utc::now());
        transition.error = error;
        fixture
            .store
            .withdrawal_transition(&transition)
            .await
            .unwrap();
    }
    let scrape = send(
        &fixture.router,
        &Call::new(Method::GET, "/metrics", Some(fixture.secret(Role::Viewer))),
    )
    .await;
    assert_eq!(scrape.status, StatusCode::OK);
    let text = scrape.body.as_str().unwrap().to_string();
    for expected in [
        "coinsensei_workers{chain=\"tron\",type=\"withdrawal\",status=\"starting\"} 1",
        "coinsensei_workers{chain=\"bitcoin\",type=\"deposit\",status=\"running\"} 0",
        "coinsensei_queue_jobs{queue=\"tron.withdrawal\",state=\"failed\"} 1",
        "coinsensei_queue_paused{queue=\"tron.withdrawal\"} 0",
        "coinsensei_auth_failures_total{reason=\"missing\"}",
        "coinsensei_http_request_duration_seconds_bucket{route=\"/metrics\",method=\"GET\",le=\"0.005\"}",
        "coinsensei_withdrawals{chain=\"tron\",state=\"canceled\"} 1",
        "coinsensei_withdrawals{chain=\"tron\",state=\"pending\"} 1",
        "coinsensei_withdrawals_waiting_for_funds{chain=\"tron\"} 1",
        "coinsensei_withdrawals_waiting_for_funds{chain=\"ethereum\"} 0",
        "coinsensei_withdrawals{chain=\"tron\",state=\"processing\"} 1",
        "coinsensei_withdrawals{chain=\"bitcoin\",state=\"manual_review\"} 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // The oldest unfinished one was created 90 s ago.
    let oldest: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("coinsensei_withdrawal_oldest_unfinished_age_seconds "))
        .expect("the oldest unfinished withdrawal's age")
        .parse()
        .unwrap();
    assert!((90.0..600.0).contains(&oldest), "{oldest}");
    let public = web::router(
        fixture.store.clone(),
        Arc::clone(&fixture.backend),
        &web::WebOptions {
            metrics_public: true,
            ..lenient()
        },
    );
    let open = send(&public, &Call::new(Method::GET, "/metrics", None)).await;
    assert_eq!(open.status, StatusCode::OK);
}

/// Failed authentications are limited per client: past the limit a bad token gets 429 with
/// Retry-After; a good token from the same address still passes (an attacker behind the same
/// proxy cannot lock the operators out); other clients are not affected.
async fn failed_authentication_is_rate_limited(db: &TestDb) {
    let fixture = Fixture::new(
        db,
        web::WebOptions {
            auth_failures_per_minute: 3,
            ..web::WebOptions::default()
        },
    )
    .await;
    let attacker: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let other: SocketAddr = "192.0.2.2:5000".parse().unwrap();
    let guess = format!("cst_{}", "0".repeat(64));
    let mut bad = Call::new(Method::GET, "/api/admin/workers", Some(&guess));
    bad.client = Some(attacker);
    for _ in 0..3 {
        assert_eq!(
            send(&fixture.router, &bad).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let refused = send(&fixture.router, &bad).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.body["error"]["code"], "rate_limited");
    let wait: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let mut malformed = Call::new(Method::GET, "/api/admin/workers", Some("password123"));
    malformed.client = Some(attacker);
    assert_eq!(
        send(&fixture.router, &malformed).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let mut good = Call::new(
        Method::GET,
        "/api/admin/workers",
        Some(fixture.secret(Role::Viewer)),
    );
    good.client = Some(attacker);
    assert_eq!(send(&fixture.router, &good).await.status, StatusCode::OK);
    bad.client = Some(other);
    assert_eq!(
        send(&fixture.router, &bad).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Body size, request time, unknown routes and methods: JSON errors, never plain text.
async fn limits_and_unknown_routes(db: &TestDb) {
    let fixture = Fixture::new(db, lenient()).await;
    let admin = fixture.secret(Role::Admin).to_string();
    let huge = json!({"name": "x".repeat(100_000), "role": "viewer"});
    let answer = send(
        &fixture.router,
        &Call::new(Method::POST, "/api/admin/tokens", Some(&admin)).json(&huge),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.body["error"]["code"], "too_large", "{}", answer.body);
    let operator = fixture.secret(Role::Operator).to_string();
    let limit = format!("/api/admin/queues/{QUEUE}/limit");
    let answer = send(
        &fixture.router,
        &Call::new(Method::POST, limit.clone(), Some(&operator)).json(&json!({})),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "`{{}}` is not `null`: {}",
        answer.body
    );
    let answer = send(
        &fixture.router,
        &Call::new(Method::POST, limit, Some(&operator)).json(&json!({"concurrency_limit": null})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let answer = send(
        &fixture.router,
        &Call::new(Method::GET, "/api/admin/nothing-here", None),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "no token, no map of the API"
    );
    let answer = send(
        &fixture.router,
        &Call::new(Method::GET, "/api/admin/nothing-here", Some(&admin)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body["error"]["code"], "not_found");
    let answer = send(
        &fixture.router,
        &Call::new(Method::DELETE, "/api/admin/workers", Some(&admin)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.body["error"]["code"], "method_not_allowed");
    // Without a token, not even the methods a route takes are told.
    let answer = send(
        &fixture.router,
        &Call::new(
            Method::DELETE,
            format!("/api/admin/workers/{WORKER}/stop"),
            None,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.headers.get("allow").is_none());
    // Something that is not our token is refused without a lookup, and said so.
    let answer = send(
        &fixture.router,
        &Call::new(
            Method::GET,
            "/api/admin/workers",
            Some("ghp_someothersecret"),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a CoinSensei token"),
        "{}",
        answer.body
    );
}

/// A request that cannot finish in time gets 503 `timeout` (Postgres: a lock held elsewhere
/// makes the token lookup wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_times_out() {
    use sqlx::Connection;
    let db = TestDb::new(testkit::Backend::Postgres).await;
    let fixture = Fixture::new(
        &db,
        web::WebOptions {
            request_timeout: std::time::Duration::from_millis(300),
            ..lenient()
        },
    )
    .await;
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("begin").execute(&mut blocker).await.unwrap();
    sqlx::query("lock table api_token in access exclusive mode")
        .execute(&mut blocker)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = send(
        &fixture.router,
        &Call::new(
            Method::GET,
            "/api/admin/workers",
            Some(fixture.secret(Role::Viewer)),
        ),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["error"]["code"], "timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    sqlx::query("rollback").execute(&mut blocker).await.unwrap();
}

/// Escapes what may not appear raw in a query string (a client library would).
fn percent_encode(query: &str) -> String {
    query
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "?=&-._~!$'()*+,;:@/".contains(c) {
                c.to_string()
            } else {
                format!("%{:02X}", u32::from(c))
            }
        })
        .collect()
}

/// Requests made up at random from the routes: wrong methods, odd ids, unknown and
/// malformed query parameters, bodies that are not JSON or not the right JSON, bad tokens.
/// None may get a 5xx; every 4xx is the JSON error shape and changes nothing.
async fn generated_bad_requests(db: &TestDb) {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let fixture = Fixture::new(db, lenient()).await;
    let routes = web::api::route_table();
    let templates: Vec<String> = routes.iter().map(|route| route.path.to_string()).collect();
    let segment = prop_oneof![
        Just(WORKER.to_string()),
        Just(QUEUE.to_string()),
        Just(fixture.job.to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999".to_string()),
        Just("%00".to_string()),
        Just("%E2%82%AC".to_string()),
        Just("..".to_string()),
        "[a-zA-Z0-9._-]{0,70}",
    ];
    let query = prop_oneof![
        Just(String::new()),
        Just("?limit=0".to_string()),
        Just("?limit=-5".to_string()),
        Just("?limit=1000000".to_string()),
        Just("?offset=abc".to_string()),
        Just("?before_id=x".to_string()),
        Just("?state=failed&queue=tron.withdrawal".to_string()),
        Just("?chain=tron&type=withdrawal&status=running".to_string()),
        Just("?chain=solana".to_string()),
        Just("?status=%FF".to_string()),
        "\\?[a-z_]{1,12}=[ -~]{0,20}".prop_map(|query| percent_encode(&query)),
    ];
    let body = prop_oneof![
        Just((None, Vec::new())),
        Just((Some("application/json"), b"{".to_vec())),
        Just((Some("application/json"), b"null".to_vec())),
        Just((Some("application/json"), b"[]".to_vec())),
        Just((
            Some("application/json"),
            br#"{"concurrency_limit": -1}"#.to_vec()
        )),
        Just((
            Some("application/json"),
            br#"{"concurrency_limit": 0}"#.to_vec()
        )),
        Just((
            Some("application/json"),
            br#"{"concurrency_limit": 1e99}"#.to_vec()
        )),
        Just((
            Some("application/json"),
            br#"{"concurrency_limit": "5"}"#.to_vec()
        )),
        Just((
            Some("application/json"),
            br#"{"name": "", "role": "admin"}"#.to_vec()
        )),
        Just((
            Some("application/json"),
            br#"{"name": "n", "role": "god"}"#.to_vec()
        )),
        Just((
            Some("application/json"),
            br#"{"name": "n", "role": "viewer", "x": 1}"#.to_vec()
        )),
        Just((Some("text/plain"), b"stop".to_vec())),
        Just((Some("application/json"), vec![b'['; 70_000])),
        proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|bytes| (Some("application/json"), bytes)),
    ];
    let method = prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
    ];
    // A real token for most requests, so the requests get past authentication.
    let auth = prop_oneof![
        Just(Some(fixture.secret(Role::Admin).to_string())),
        Just(Some(fixture.secret(Role::Operator).to_string())),
        Just(Some(fixture.secret(Role::Viewer).to_string())),
        Just(None),
        "cst_[0-9a-f]{0,70}".prop_map(Some),
    ];
    let strategy = (
        proptest::sample::select(templates),
        segment,
        query,
        method,
        body,
        auth,
    );
    let mut runner = TestRunner::default();
    let cases = 400;
    let mut rejected = 0;
    for _ in 0..cases {
        let (template, segment, query, method, (content_type, body), token) =
            strategy.new_tree(&mut runner).unwrap().current();
        let path = template
            .replace("{id}", &segment)
            .replace("{name}", &segment)
            + &query;
        // A request that is valid (a real action by a real role) may change state; only
        // rejected ones are held to changing nothing.
        let call = Call {
            method,
            path,
            token,
            content_type: content_type.map(str::to_string),
            // Half the generated calls carry a key, so creation's body checks are reached.
            idempotency_key: segment.len().is_multiple_of(2).then(|| segment.clone()),
            body,
            client: None,
        };
        let before = fixture.fingerprint().await;
        let answer = send(&fixture.router, &call).await;
        assert!(
            !answer.status.is_server_error(),
            "{call:?} got {}: {}",
            answer.status,
            answer.body
        );
        if answer.status.is_client_error() {
            rejected += 1;
            assert!(
                answer.body["error"]["code"].is_string()
                    && answer.body["error"]["message"].is_string(),
                "{call:?}: not the JSON error shape: {}",
                answer.body
            );
            assert_eq!(
                before,
                fixture.fingerprint().await,
                "{call:?} was refused ({}) but changed state",
                answer.status
            );
        }
    }
    assert!(
        rejected > cases / 2,
        "the generator should mostly make bad requests ({rejected})"
    );
}

testkit::on_both_stores!(
    db: every_route_and_role,
    tokens_through_the_api,
    metrics_scrape,
    failed_authentication_is_rate_limited,
    limits_and_unknown_routes,
    generated_bad_requests
);
