//! The admin API's first slice through the router, on both stores: every route needs a
//! token, roles decide who may act, errors are JSON 4xx, and each action is audited with the
//! token that made it; the event stream carries worker, heartbeat, audit, failure and
//! withdrawal events.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use domain::{Chain, Role, WorkerId, WorkerKind};
use serde_json::Value;
use store::{AuditList, Store, WorkerRegister};
use testkit::TestDb;
use tower::ServiceExt;

async fn call(
    store: &Store,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = web::router(
        store.clone(),
        std::sync::Arc::new(queue::SqlBackend::new(store.clone())),
        &web::WebOptions::default(),
    )
    .oneshot(request.body(Body::empty()).unwrap())
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

async fn token(store: &Store, role: Role, name: &str) -> (i64, String) {
    let (row, secret) = web::auth::issue(store, name, role, Utc::now())
        .await
        .unwrap();
    (row.id, secret)
}

async fn register(store: &Store, id: &str, kind: WorkerKind, chain: Chain) {
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
            config: serde_json::json!({}),
            incarnation: format!("inc-{id}"),
            now: Utc::now(),
        })
        .await
        .unwrap();
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
}

async fn workers_api_enforces_roles_and_audits(db: &TestDb) {
    let store = db.store().await;
    register(
        &store,
        "tron-withdrawal-1",
        WorkerKind::Withdrawal,
        Chain::Tron,
    )
    .await;
    register(
        &store,
        "ethereum-deposit-1",
        WorkerKind::Deposit,
        Chain::Ethereum,
    )
    .await;
    let (_, viewer) = token(&store, Role::Viewer, "dashboard").await;
    let (operator_id, operator) = token(&store, Role::Operator, "on-call").await;
    let (revoked_id, revoked) = token(&store, Role::Admin, "old").await;
    store
        .api_token_revoke(revoked_id, Utc::now())
        .await
        .unwrap();

    // No token, a wrong one, a revoked one: 401, and nothing else answers.
    for token in [None, Some("cst_nope"), Some(revoked.as_str())] {
        let (status, body) = call(&store, Method::GET, "/api/admin/workers", token).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        let (status, body) = call(
            &store,
            Method::POST,
            "/api/admin/workers/tron-withdrawal-1/stop",
            token,
        )
        .await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }

    // A viewer reads.
    let (status, body) = call(&store, Method::GET, "/api/admin/workers", Some(&viewer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["workers"].as_array().unwrap().len(), 2);
    let (_, body) = call(
        &store,
        Method::GET,
        "/api/admin/workers?chain=tron&limit=10",
        Some(&viewer),
    )
    .await;
    assert_eq!(body["workers"][0]["id"], "tron-withdrawal-1");
    assert_eq!(body["workers"].as_array().unwrap().len(), 1);
    for bad in [
        "/api/admin/workers?chain=solana",
        "/api/admin/workers?bogus=1",
        "/api/admin/workers?limit=lots",
    ] {
        let (status, body) = call(&store, Method::GET, bad, Some(&viewer)).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid");
    }
    let (status, body) = call(
        &store,
        Method::GET,
        "/api/admin/workers/tron-withdrawal-1",
        Some(&viewer),
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::OK, Some("withdrawal")),
        "{body}"
    );
    // Registered, fresh heartbeat, but still `starting` while desired running: one check
    // fails, so a warning that says which.
    assert_eq!(body["health"]["state"], "warning", "{body}");
    assert_eq!(body["health"]["checks"][0]["ok"], true, "{body}");
    assert_eq!(body["health"]["checks"][1]["name"], "state", "{body}");
    assert_eq!(body["health"]["checks"][1]["ok"], false, "{body}");
    let (status, body) = call(
        &store,
        Method::GET,
        "/api/admin/workers/nope",
        Some(&viewer),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    // ...but may not act, and the refusal changes nothing.
    let (status, body) = call(
        &store,
        Method::POST,
        "/api/admin/workers/tron-withdrawal-1/stop",
        Some(&viewer),
    )
    .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let row = store
        .worker_get(&WorkerId::new("tron-withdrawal-1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.desired_state.as_str(), "running");

    // An operator stops a worker: 202 with the new desired state, audited with the token.
    let (status, body) = call(
        &store,
        Method::POST,
        "/api/admin/workers/tron-withdrawal-1/stop",
        Some(&operator),
    )
    .await;
    assert_eq!(
        (status, body["desired_state"].as_str()),
        (StatusCode::ACCEPTED, Some("stopped")),
        "{body}"
    );
    let audit = store
        .audit_list(&AuditList {
            action: Some("worker.stop".into()),
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, format!("token:{operator_id}:on-call"));
    // Meaningless or unknown: 409 with the reason, 404; nothing written.
    let (status, body) = call(
        &store,
        Method::POST,
        "/api/admin/workers/tron-withdrawal-1/stop",
        Some(&operator),
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already desired stopped")
    );
    for path in [
        "/api/admin/workers/nope/stop",
        "/api/admin/workers/tron-withdrawal-1/explode",
        "/api/admin/workers/Bad%20Id/stop",
    ] {
        let (status, body) = call(&store, Method::POST, path, Some(&operator)).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    let all = store
        .audit_list(&AuditList {
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "only the accepted action was recorded");
}

async fn queues_jobs_and_audit_through_the_api(db: &TestDb) {
    let store = db.store().await;
    let (_, viewer) = token(&store, Role::Viewer, "dashboard").await;
    let (operator_id, operator) = token(&store, Role::Operator, "on-call").await;
    let id = testkit::enqueue_one_shot(&store, "tron.withdrawal").await;
    testkit::fail_next_job(&store, "tron.withdrawal", id, "node timeout").await;

    let (status, body) = call(&store, Method::GET, "/api/admin/queues", Some(&viewer)).await;
    assert_eq!(
        (status, body["queues"][0]["failed"].as_i64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    let (status, body) = call(
        &store,
        Method::GET,
        "/api/admin/jobs?state=failed",
        Some(&viewer),
    )
    .await;
    assert_eq!(
        (status, body["jobs"][0]["id"].as_i64()),
        (StatusCode::OK, Some(id)),
        "{body}"
    );
    let (status, body) = call(
        &store,
        Method::GET,
        &format!("/api/admin/jobs/{id}"),
        Some(&viewer),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["error"].as_str()),
        (StatusCode::OK, Some("node timeout")),
        "{body}"
    );
    let (status, body) = call(
        &store,
        Method::GET,
        "/api/admin/jobs?state=lost",
        Some(&viewer),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid");

    // A viewer cannot retry or pause; an operator can, and it is audited.
    let retry = format!("/api/admin/jobs/{id}/retry");
    let (status, body) = call(&store, Method::POST, &retry, Some(&viewer)).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = call(&store, Method::POST, &retry, Some(&operator)).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::ACCEPTED, Some("available")),
        "{body}"
    );
    let (status, body) = call(&store, Method::POST, &retry, Some(&operator)).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, body) = call(
        &store,
        Method::POST,
        "/api/admin/jobs/424242/discard",
        Some(&operator),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = call(
        &store,
        Method::POST,
        "/api/admin/queues/tron.withdrawal/pause",
        Some(&operator),
    )
    .await;
    assert_eq!(
        (status, body["paused"].as_bool()),
        (StatusCode::ACCEPTED, Some(true)),
        "{body}"
    );
    let (status, body) = call(
        &store,
        Method::POST,
        "/api/admin/queues/nope/pause",
        Some(&operator),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    let (status, body) = call(
        &store,
        Method::GET,
        "/api/admin/audit?limit=10",
        Some(&viewer),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let actions: Vec<&str> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["queue.pause", "job.retry"],
        "newest first, refused requests absent"
    );
    assert!(
        body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|entry| entry["actor"] == format!("token:{operator_id}:on-call"))
    );
}

/// A stop issued through the API reaches a subscribed event stream.
async fn a_stop_reaches_the_event_stream(db: &TestDb) {
    use futures_util::StreamExt;
    let store = db.store().await;
    register(
        &store,
        "tron-withdrawal-1",
        WorkerKind::Withdrawal,
        Chain::Tron,
    )
    .await;
    let (_, viewer) = token(&store, Role::Viewer, "dashboard").await;
    let (_, operator) = token(&store, Role::Operator, "on-call").await;
    let (status, body) = call(&store, Method::GET, "/api/admin/events", None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    let router = web::router(
        store.clone(),
        std::sync::Arc::new(queue::SqlBackend::new(store.clone())),
        &web::WebOptions::default(),
    );
    let request = Request::get("/api/admin/events")
        .header("authorization", format!("Bearer {viewer}"))
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body().into_data_stream();
    let mut seen = String::new();
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&first));
    assert!(
        seen.contains("event: snapshot") && seen.contains("tron-withdrawal-1"),
        "{seen}"
    );

    let (status, _) = call(
        &store,
        Method::POST,
        "/api/admin/workers/tron-withdrawal-1/stop",
        Some(&operator),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the stop reaches the stream within 5 s")
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&chunk).to_string();
        if text.contains("\"desired_state\":\"stopped\"") {
            break;
        }
    }
}

/// Reads the stream until an event of one of `kinds` whose data satisfies `matches` arrives.
async fn expect_event<S>(stream: &mut S, kinds: &[&str], matches: impl Fn(&Value) -> bool)
where
    S: futures_util::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin,
{
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut buffer = String::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {kinds:?} event within 5 s; got:\n{buffer}"))
            .unwrap()
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        // Events end with a blank line; look at each complete one.
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let name = event
                .lines()
                .find_map(|line| line.strip_prefix("event: "))
                .unwrap_or_default();
            let data: String = event
                .lines()
                .filter_map(|line| line.strip_prefix("data: "))
                .collect();
            if kinds.contains(&name) && serde_json::from_str(&data).is_ok_and(|data| matches(&data))
            {
                return;
            }
        }
    }
}

/// Besides worker changes, the stream carries heartbeats, new audit entries and failed jobs.
async fn the_event_stream_carries_heartbeats_audit_and_failures(db: &TestDb) {
    let store = db.store().await;
    register(
        &store,
        "tron-withdrawal-1",
        WorkerKind::Withdrawal,
        Chain::Tron,
    )
    .await;
    let (_, viewer) = token(&store, Role::Viewer, "dashboard").await;
    let router = web::router(
        store.clone(),
        std::sync::Arc::new(queue::SqlBackend::new(store.clone())),
        &web::WebOptions::default(),
    );
    let request = Request::get("/api/admin/events")
        .header("authorization", format!("Bearer {viewer}"))
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let mut stream = response.into_body().into_data_stream();
    expect_event(&mut stream, &["snapshot"], |_| true).await;

    store
        .worker_heartbeat(&store::WorkerHeartbeat {
            id: WorkerId::new("tron-withdrawal-1").unwrap(),
            incarnation: "inc-tron-withdrawal-1".into(),
            rss_bytes: Some(12_345_678),
            in_flight: 2,
            processed_total: 7,
            failed_total: 1,
            now: Utc::now(),
        })
        .await
        .unwrap();
    expect_event(&mut stream, &["heartbeats"], |data| {
        data["workers"][0]["rss_bytes"] == 12_345_678
    })
    .await;

    store
        .audit_insert(&store::AuditInsert {
            actor: "cli:test".into(),
            action: "queue.pause".into(),
            target: "queue:tron.withdrawal".into(),
            details: serde_json::json!({}),
            now: Utc::now(),
        })
        .await
        .unwrap();
    expect_event(&mut stream, &["audit"], |data| data["actor"] == "cli:test").await;

    let id = testkit::enqueue_one_shot(&store, "tron.withdrawal").await;
    expect_event(&mut stream, &["queues"], |data| {
        data["queues"][0]["available"] == 1
    })
    .await;
    testkit::fail_next_job(&store, "tron.withdrawal", id, "node timeout").await;
    expect_event(&mut stream, &["job_failed"], |data| {
        data["id"] == id && data["errors"][0]["error"] == "node timeout"
    })
    .await;
}

/// A withdrawal created or moved shows on the stream as a `withdrawal` event carrying the
/// API's own shape (amount in the asset's unit, state, txid), within a poll.
async fn the_event_stream_carries_withdrawals(db: &TestDb) {
    let store = db.store().await;
    let (_, viewer) = token(&store, Role::Viewer, "dashboard").await;
    let backend: std::sync::Arc<dyn queue::Backend> =
        std::sync::Arc::new(queue::SqlBackend::new(store.clone()));
    let router = web::router(
        store.clone(),
        std::sync::Arc::clone(&backend),
        &web::WebOptions::default(),
    );
    let request = Request::get("/api/admin/events")
        .header("authorization", format!("Bearer {viewer}"))
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let mut stream = response.into_body().into_data_stream();
    expect_event(&mut stream, &["snapshot"], |_| true).await;

    let created = web::withdrawals::create(
        &store,
        backend.as_ref(),
        &web::withdrawals::Intake::default(),
        "token:1:backend",
        "order-1",
        &web::withdrawals::CreateRequest {
            chain: "tron".into(),
            asset: "USDT".into(),
            to: "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7".into(),
            amount: "12.5".into(),
            reference: "user:7/w:1".into(),
        },
    )
    .await
    .unwrap();
    let id = created.row().id;
    expect_event(&mut stream, &["withdrawal"], |data| {
        data["id"] == id && data["state"] == "pending" && data["amount"] == "12.5"
    })
    .await;

    use domain::WithdrawalState::{Broadcast, Pending, Processing};
    store
        .withdrawal_transition(&store::WithdrawalTransition::new(
            id,
            Pending,
            Processing,
            "tron-withdrawal-1",
            Utc::now(),
        ))
        .await
        .unwrap();
    let mut broadcast = store::WithdrawalTransition::new(
        id,
        Processing,
        Broadcast,
        "tron-withdrawal-1",
        Utc::now(),
    );
    broadcast.txid = Some("ab".repeat(32));
    store.withdrawal_transition(&broadcast).await.unwrap();
    expect_event(&mut stream, &["withdrawal"], |data| {
        data["id"] == id && data["state"] == "broadcast" && data["txid"] == "ab".repeat(32)
    })
    .await;

    // The event is documented, with the API's withdrawal schema.
    let doc: Value = serde_json::from_str(include_str!("../openapi.json")).unwrap();
    assert_eq!(
        doc["paths"]["/api/admin/events"]["get"]["x-events"]["withdrawal"]["$ref"],
        "#/components/schemas/Withdrawal"
    );
}

/// A stream ends within a second of its token being revoked; streams are capped per process
/// and share one change feed.
async fn streams_end_on_revocation_and_are_capped(db: &TestDb) {
    let store = db.store().await;
    let (viewer_id, viewer) = token(&store, Role::Viewer, "dashboard").await;
    let router = web::router(
        store.clone(),
        std::sync::Arc::new(queue::SqlBackend::new(store.clone())),
        &web::WebOptions::default(),
    );
    let open = |router: axum::Router, token: String| async move {
        let request = Request::get("/api/admin/events")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        router.oneshot(request).await.unwrap()
    };
    // Several tokens, since one token holds only its share of the streams; the revoked
    // viewer's come last.
    let per_token = domain::limits::EVENT_STREAMS_PER_TOKEN_MAX;
    let mut secrets = Vec::new();
    for index in 0..web::events::EVENT_STREAMS_MAX.div_ceil(per_token) - 1 {
        secrets.push(
            token(&store, Role::Viewer, &format!("dashboard-{index}"))
                .await
                .1,
        );
    }
    secrets.push(viewer.clone());
    let mut streams = Vec::new();
    for index in 0..web::events::EVENT_STREAMS_MAX {
        let response = open(router.clone(), secrets[index / per_token].clone()).await;
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response.into_body().into_data_stream());
    }
    let (_, fresh) = token(&store, Role::Viewer, "fresh").await;
    let response = open(router.clone(), fresh).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Closing one frees its slot.
    drop(streams.pop());
    let response = open(router.clone(), viewer.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    streams.push(response.into_body().into_data_stream());

    store.api_token_revoke(viewer_id, Utc::now()).await.unwrap();
    let mut stream = streams.pop().unwrap();
    expect_event(&mut stream, &["error"], |data| {
        data["code"] == "unauthorized"
    })
    .await;
    use futures_util::StreamExt;
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(chunk) = stream.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ends after the revocation");
}

testkit::on_both_stores!(
    db: streams_end_on_revocation_and_are_capped,
    workers_api_enforces_roles_and_audits,
    queues_jobs_and_audit_through_the_api,
    a_stop_reaches_the_event_stream,
    the_event_stream_carries_heartbeats_audit_and_failures,
    the_event_stream_carries_withdrawals
);
