//! The control plane against a hostile client (issue 18), one test per way it was broken:
//! through the router in-process on both stores for what a request carries (bytes, shapes,
//! ids, headers), and through a real socket for what a connection does (slowness, idling,
//! sheer numbers).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use domain::Role;
use serde_json::{Value, json};
use store::Store;
use testkit::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// How long a test waits for something that must happen before it calls it broken.
const DEADLINE: Duration = Duration::from_secs(10);

fn router(store: &Store, options: &web::WebOptions) -> axum::Router {
    web::router(
        store.clone(),
        Arc::new(queue::SqlBackend::new(store.clone())),
        options,
    )
}

async fn send(
    router: &axum::Router,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
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

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

/// Case 2: a NUL byte (or another control character) in a text value is a 4xx naming the
/// field on both stores, never a 500 from Postgres; JSON job args with `\u0000` are refused
/// by every store alike.
async fn control_characters_are_refused_at_the_edge(db: &TestDb) {
    let store = db.store().await;
    let (_, viewer) = token(&store, Role::Viewer, "viewer").await;
    let (_, admin) = token(&store, Role::Admin, "admin").await;
    let router = router(&store, &web::WebOptions::default());
    for (query, field) in [
        ("actor=%00", "actor"),
        ("action=a%00b", "action"),
        ("target=job%0A1", "target"),
    ] {
        let (status, body) = send(
            &router,
            Method::GET,
            &format!("/api/admin/audit?{query}"),
            Some(&bearer(&viewer)),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(message(&body).starts_with(field), "{query}: {body}");
    }
    let (status, body) = send(
        &router,
        Method::POST,
        "/api/admin/tokens",
        Some(&bearer(&admin)),
        Some(r#"{"name": "a\u0000b", "role": "viewer"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(message(&body).contains("name holds"), "{body}");
    // Below the API too: the store refuses what one of its databases would.
    let now = Utc::now();
    let refused = store
        .job_insert(&store::JobInsert {
            queue: domain::Name::new("q").unwrap(),
            kind: domain::Name::new("noop").unwrap(),
            args: json!({"note": "a\u{0}b"}),
            priority: 0,
            run_at: now,
            retry: None,
            unique_key: None,
            now,
        })
        .await;
    assert!(
        matches!(&refused, Err(store::StoreError::Invalid(message)) if message.contains("NUL")),
        "{refused:?}"
    );
    let refused = store
        .api_token_insert(&store::ApiTokenInsert {
            name: "ops\u{1b}[31m".into(),
            role: Role::Viewer,
            token_hash: "0".repeat(64),
            prefix: "cst_0000".into(),
            now,
        })
        .await;
    assert!(
        matches!(&refused, Err(store::StoreError::Invalid(_))),
        "{refused:?}"
    );
}

/// Case 3: a JSON array where the API says object is refused and changes nothing.
async fn bodies_must_be_objects(db: &TestDb) {
    let store = db.store().await;
    testkit::enqueue_one_shot(&store, "tron.withdrawal").await;
    let (_, operator) = token(&store, Role::Operator, "operator").await;
    let (_, admin) = token(&store, Role::Admin, "admin").await;
    let router = router(&store, &web::WebOptions::default());
    let path = "/api/admin/queues/tron.withdrawal/limit";
    let (status, body) = send(
        &router,
        Method::POST,
        path,
        Some(&bearer(&operator)),
        Some(r#"{"concurrency_limit": 7}"#),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for array in ["[5]", "[null]", "5", "\"x\"", "null"] {
        let (status, body) = send(
            &router,
            Method::POST,
            path,
            Some(&bearer(&operator)),
            Some(array),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{array}: {body}");
        assert!(message(&body).contains("JSON object"), "{body}");
    }
    let (_, queues) = send(
        &router,
        Method::GET,
        "/api/admin/queues",
        Some(&bearer(&operator)),
        None,
    )
    .await;
    assert_eq!(queues["queues"][0]["concurrency_limit"], 7, "{queues}");
    let tokens_before = store.api_token_list().await.unwrap().len();
    let (status, body) = send(
        &router,
        Method::POST,
        "/api/admin/tokens",
        Some(&bearer(&admin)),
        Some(r#"["name", "admin"]"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(store.api_token_list().await.unwrap().len(), tokens_before);
}

/// Case 4: an id is a canonical decimal integer or nothing: `+3` and `03` are 404 and act on
/// nothing.
async fn ids_have_one_spelling(db: &TestDb) {
    let store = db.store().await;
    let (_, admin) = token(&store, Role::Admin, "admin").await;
    let (victim, _) = token(&store, Role::Viewer, "victim").await;
    let job = testkit::enqueue_one_shot(&store, "tron.withdrawal").await;
    testkit::fail_next_job(&store, "tron.withdrawal", job, "boom").await;
    let router = router(&store, &web::WebOptions::default());
    for (method, path) in [
        (Method::POST, format!("/api/admin/tokens/+{victim}/revoke")),
        (Method::POST, format!("/api/admin/tokens/0{victim}/revoke")),
        (Method::POST, format!("/api/admin/jobs/+{job}/retry")),
        (Method::POST, format!("/api/admin/jobs/0{job}/discard")),
        (Method::GET, format!("/api/admin/jobs/+{job}")),
        (Method::GET, format!("/api/admin/jobs/%20{job}")),
    ] {
        let (status, body) =
            send(&router, method.clone(), &path, Some(&bearer(&admin)), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }
    let tokens = store.api_token_list().await.unwrap();
    let victim_row = tokens.iter().find(|row| row.id == victim).unwrap();
    assert!(victim_row.revoked_at.is_none(), "the token was not revoked");
    let (_, body) = send(
        &router,
        Method::GET,
        &format!("/api/admin/jobs/{job}"),
        Some(&bearer(&admin)),
        None,
    )
    .await;
    assert_eq!(body["state"], "failed", "the job was not touched: {body}");
}

/// Case 5: a token name with a newline or an escape sequence is refused (the login log line
/// cannot carry one), through the API and below it.
async fn token_names_hold_no_control_characters(db: &TestDb) {
    let store = db.store().await;
    let (_, admin) = token(&store, Role::Admin, "admin").await;
    let router = router(&store, &web::WebOptions::default());
    for name in [
        "ops\\n2026-01-01T00:00:00Z ERROR forged",
        "\\u001b[31mred",
        "tab\\there",
        "trailing\\n",
    ] {
        let (status, body) = send(
            &router,
            Method::POST,
            "/api/admin/tokens",
            Some(&bearer(&admin)),
            Some(&format!(r#"{{"name": "{name}", "role": "viewer"}}"#)),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
        assert!(message(&body).starts_with("name holds"), "{body}");
    }
    assert!(
        web::auth::issue(&store, "a\nb", Role::Viewer, Utc::now())
            .await
            .is_err()
    );
}

/// Case 6: one token holds at most its share of the event streams; beyond, a 429 names it,
/// and another token still gets one.
async fn one_token_cannot_hold_every_stream(db: &TestDb) {
    let store = db.store().await;
    let (_, greedy) = token(&store, Role::Viewer, "greedy").await;
    let (_, other) = token(&store, Role::Viewer, "other").await;
    let prefix = &greedy[..web::auth::TOKEN_PREFIX_LEN];
    let router = router(&store, &web::WebOptions::default());
    let open = |secret: String| {
        let router = router.clone();
        async move {
            let request = Request::get("/api/admin/events")
                .header("authorization", bearer(&secret))
                .body(Body::empty())
                .unwrap();
            router.oneshot(request).await.unwrap()
        }
    };
    let mut streams = Vec::new();
    for _ in 0..domain::limits::EVENT_STREAMS_PER_TOKEN_MAX {
        let response = open(greedy.clone()).await;
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response.into_body());
    }
    let response = open(greedy.clone()).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(message(&body).contains(prefix), "{body}");
    let response = open(other.clone()).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "another token is not starved"
    );
    // Closing one gives the token its place back.
    drop(streams.pop());
    let response = open(greedy.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Case 8: the scheme is case-insensitive, and a lowercase one never counts as a failure.
async fn the_bearer_scheme_is_case_insensitive(db: &TestDb) {
    let store = db.store().await;
    let (_, viewer) = token(&store, Role::Viewer, "viewer").await;
    let router = router(
        &store,
        &web::WebOptions {
            auth_failures_per_minute: 1,
            ..web::WebOptions::default()
        },
    );
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        for _ in 0..3 {
            let (status, body) = send(
                &router,
                Method::GET,
                "/api/admin/workers",
                Some(&format!("{scheme} {viewer}")),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{scheme}: {body}");
        }
    }
    // Another scheme is still refused.
    let (status, _) = send(
        &router,
        Method::GET,
        "/api/admin/workers",
        Some(&format!("Basic {viewer}")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

testkit::on_both_stores!(
    db: control_characters_are_refused_at_the_edge,
    bodies_must_be_objects,
    ids_have_one_spelling,
    token_names_hold_no_control_characters,
    one_token_cannot_hold_every_stream,
    the_bearer_scheme_is_case_insensitive
);

/// Case 10: the event stream is described as `text/event-stream` without a schema a checker
/// would apply to each event, and every event it sends has its `data` described.
#[test]
fn the_event_stream_is_documented_as_a_stream() {
    let doc: Value = serde_json::from_str(web::api::OPENAPI).unwrap();
    let operation = &doc["paths"]["/api/admin/events"]["get"];
    let content = &operation["responses"]["200"]["content"];
    assert_eq!(
        content.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["text/event-stream"]
    );
    assert!(
        content["text/event-stream"].get("schema").is_none(),
        "no schema for the stream as a whole: {content}"
    );
    let mut events: Vec<&String> = operation["x-events"].as_object().unwrap().keys().collect();
    events.sort();
    assert_eq!(
        events,
        [
            "audit",
            "audit_gap",
            "error",
            "heartbeats",
            "job_failed",
            "queues",
            "snapshot",
            "withdrawal",
            "worker"
        ]
    );
    assert!(
        operation["responses"]["429"].is_object(),
        "the per-token cap's 429"
    );
}

/// A real server on a loopback port, with `options`, until the test ends.
struct Served {
    address: std::net::SocketAddr,
    store: Store,
    cancel: tokio_util::sync::CancellationToken,
    _db: TestDb,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn serve(options: web::WebOptions) -> Served {
    let db = TestDb::new(testkit::Backend::Sqlite).await;
    let store = db.store().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let store = store.clone();
        let cancel = cancel.clone();
        async move {
            web::serve(
                listener,
                store.clone(),
                Arc::new(queue::SqlBackend::new(store)),
                &options,
                cancel,
            )
            .await
        }
    });
    Served {
        address,
        store,
        cancel,
        _db: db,
    }
}

/// Reads until the server closes the connection; what it sent. Fails the test if the server
/// keeps it open past the deadline.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(DEADLINE, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the server kept the connection open; it sent {:?}",
        String::from_utf8_lossy(&received)
    );
    String::from_utf8_lossy(&received).into_owned()
}

async fn healthz(address: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(&mut stream).await
}

/// Case 1: a head that never ends, and a kept-alive connection that goes quiet, are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_and_idle_connections_are_closed() {
    let served = serve(web::WebOptions {
        header_read_timeout: Duration::from_millis(300),
        ..web::WebOptions::default()
    })
    .await;
    let mut half_sent = TcpStream::connect(served.address).await.unwrap();
    half_sent
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut half_sent).await;
    assert!(!answer.contains("200 OK"), "{answer}");

    let mut idle = TcpStream::connect(served.address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

/// Cases 1 and 7: a body that never arrives gets 408, nothing is applied, and the connection
/// is closed (not a 503 saying the action may still take effect, on a connection kept open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_a_408_and_changes_nothing() {
    let served = serve(web::WebOptions {
        body_read_timeout: Duration::from_millis(300),
        ..web::WebOptions::default()
    })
    .await;
    let (_, admin) = token(&served.store, Role::Admin, "admin").await;
    let tokens_before = served.store.api_token_list().await.unwrap().len();
    let body = r#"{"name": "slow", "role": "admin"}"#;
    let mut stream = TcpStream::connect(served.address).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /api/admin/tokens HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {admin}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                body.len(),
                &body[..10]
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("nothing was done"), "{answer}");
    assert_eq!(
        served.store.api_token_list().await.unwrap().len(),
        tokens_before
    );
}

/// Case 1: connections are capped; past the cap a newcomer waits for a place rather than
/// taking a descriptor, and gets its answer once one frees up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_a_place() {
    let served = serve(web::WebOptions {
        connections_max: 2,
        header_read_timeout: Duration::from_secs(60),
        ..web::WebOptions::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(served.address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    let mut waiting = tokio::spawn(healthz(served.address));
    // Not served while both places are held (a cap that did nothing would answer at once).
    let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
    assert!(
        early.is_err(),
        "a third connection was served past the cap of 2"
    );
    drop(held.pop());
    let answer = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("served once a place is free")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

/// Case 1: many idle and half-sent sockets below the cap do not stop `/healthz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_with_many_idle_sockets_open() {
    let served = serve(web::WebOptions::default()).await;
    let mut held = Vec::new();
    for index in 0..200 {
        let mut stream = TcpStream::connect(served.address).await.unwrap();
        if index % 2 == 0 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\n")
                .await
                .unwrap();
        }
        held.push(stream);
    }
    let answer = healthz(served.address).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}
