//! Webhooks end to end: a real `coinsensei serve` posts the outbox's events to a receiver in
//! this test, which checks every signature (HMAC-SHA256 over `t.body`, as docs/webhooks.md
//! tells receivers to) and records what it accepted. The receiver is down, then answers
//! 500s, then answers too slowly, and the control plane is SIGKILLed twice on the way; at
//! the end every event has arrived at least once, every copy of an event carries the same id
//! and body, none is lost, and each withdrawal's events arrived in order. Then failed
//! deliveries are listed and replayed from the command line, locally and through `--server`,
//! and a bad endpoint in the configuration stops `serve` before it starts.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use nix::sys::signal::{Signal, kill};
use serde_json::{Value, json};
use store::{DeliveryState, EventList, Store};
use testkit::TestDb;

const SECRET: &str = "whsec-test-0123456789abcdef";

const UP: u8 = 0;
const ERRORS: u8 = 1;
const SLOW: u8 = 2;
/// Stores the event, then answers only after the sender gave up: the sender must post it
/// again, and the receiver sees a duplicate.
const STORE_THEN_HANG: u8 = 3;

/// One post the receiver accepted (answered 2xx).
#[derive(Debug, Clone)]
struct Arrival {
    id: String,
    subject: String,
    sequence: i64,
    body: Vec<u8>,
}

#[derive(Default)]
struct Receiver {
    mode: AtomicU8,
    accepted: Mutex<Vec<Arrival>>,
    refused: AtomicUsize,
    bad_signatures: AtomicUsize,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if !common::hooks::verified(&headers, &body, SECRET) {
        receiver.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    match receiver.mode.load(Ordering::SeqCst) {
        ERRORS => {
            receiver.refused.fetch_add(1, Ordering::SeqCst);
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        SLOW => {
            // Past the endpoint's timeout: the sender gives up on this post, whatever the
            // receiver then does with it.
            receiver.refused.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3)).await;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        _ => {}
    }
    let hang = receiver.mode.load(Ordering::SeqCst) == STORE_THEN_HANG;
    let event: Value = serde_json::from_slice(&body).expect("an event is JSON");
    let header_id = headers
        .get("coinsensei-event-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    assert_eq!(event["id"], header_id, "the header names the body's event");
    receiver.accepted.lock().unwrap().push(Arrival {
        id: event["id"].as_str().unwrap().to_string(),
        subject: event["subject"].as_str().unwrap().to_string(),
        sequence: event["sequence"].as_i64().unwrap(),
        body: body.to_vec(),
    });
    if hang {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    StatusCode::NO_CONTENT
}

/// Starts answering on `address` (until the test ends).
async fn listen(address: SocketAddr, receiver: Arc<Receiver>) {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("the receiver's port is free again");
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await });
}

/// A port nothing listens on yet.
fn free_address() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn config(dir: &std::path::Path, receiver: SocketAddr, extra: &str) -> std::path::PathBuf {
    let path = dir.join("webhooks.toml");
    std::fs::write(
        &path,
        format!(
            "[[withdrawal_policy]]\nchain = \"tron\"\nasset = \"USDT\"\napproval_above = \"100\"\n\n\
             [[webhooks]]\nname = \"backend\"\nurl = \"http://{receiver}/hook\"\nsecret = \"{SECRET}\"\n\
             events = [\"withdrawal.*\"]\ntimeout = 1\nretry_base = 0.2\nretry_max_delay = 1\n{extra}"
        ),
    )
    .unwrap();
    path
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(up: &Up) -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
            base: format!("http://{}", up.address),
        }
    }

    async fn post(&self, token: &str, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn withdraw(&self, backend: &str, key: &str, amount: &str) -> Value {
        let (status, body) = self
            .post(
                backend,
                "/api/v1/withdrawals",
                Some(key),
                &json!({"chain": "tron", "asset": "USDT", "to": "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7",
                        "amount": amount, "reference": format!("user:{key}")}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }
}

async fn all_events(store: &Store) -> Vec<store::EventRow> {
    let mut events = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .events_list(&EventList {
                after,
                limit: 1000,
                ..EventList::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return events;
        };
        after = Some(last.sequence);
        events.extend(page);
    }
}

async fn count(store: &Store, state: DeliveryState) -> i64 {
    store
        .webhook_counts()
        .await
        .unwrap()
        .iter()
        .filter(|count| count.state == state)
        .map(|count| count.count)
        .sum()
}

/// Makes the state changes of `n` withdrawals: every third held for approval and then
/// approved by two operators or rejected, some of the others canceled.
async fn changes(api: &Api, backend: &str, operators: &[String; 2], prefix: &str, n: usize) {
    for index in 0..n {
        let key = format!("{prefix}-{index}");
        if index % 3 == 0 {
            let held = api.withdraw(backend, &key, "250").await;
            assert_eq!(held["state"], "approval");
            let id = held["id"].as_i64().unwrap();
            if index % 2 == 0 {
                for operator in operators {
                    let path = format!("/api/v1/withdrawals/{id}/approve");
                    let (status, body) = api.post(operator, &path, None, &json!({})).await;
                    assert_eq!(status, 200, "{body}");
                }
            } else {
                let path = format!("/api/v1/withdrawals/{id}/reject");
                let (status, body) = api
                    .post(&operators[0], &path, None, &json!({"reason": "unusual"}))
                    .await;
                assert_eq!(status, 200, "{body}");
            }
        } else {
            let made = api.withdraw(backend, &key, "5").await;
            if index % 3 == 1 {
                let path = format!("/api/v1/withdrawals/{}/cancel", made["id"]);
                let (status, body) = api.post(backend, &path, None, &json!({})).await;
                assert_eq!(status, 200, "{body}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_signed_at_least_once_and_in_order_through_outages_and_kills() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let receiver = Arc::new(Receiver::default());
    let address = free_address();
    let config = config(&db.dir(), address, "");
    let config = config.to_str().unwrap();
    let backend = token(&db.url, "service", "backend").await;
    let operators = [
        token(&db.url, "operator", "alice").await,
        token(&db.url, "operator", "bob").await,
    ];
    let env = [("COINSENSEI_DATABASE_URL", db.url.as_str())];

    // The receiver is down (nothing listens) while the first changes are made.
    let serve = Up::serve(&["--config", config], &env).await;
    let api = Api::new(&serve);
    changes(&api, &backend, &operators, "a", 18).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Up, but answering 500s; the control plane is killed under it.
    receiver.mode.store(ERRORS, Ordering::SeqCst);
    listen(address, Arc::clone(&receiver)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    kill(serve.pid(), Signal::SIGKILL).unwrap();
    drop(serve);

    // Answering too slowly; more changes; then answering, and killed again mid-delivery.
    receiver.mode.store(SLOW, Ordering::SeqCst);
    let serve = Up::serve(&["--config", config], &env).await;
    let api = Api::new(&serve);
    changes(&api, &backend, &operators, "b", 12).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Stored by the receiver, but the answer never reaches the sender: killed mid-post.
    receiver.mode.store(STORE_THEN_HANG, Ordering::SeqCst);
    testkit::wait_for("a post in flight", Duration::from_secs(10), || async {
        (!receiver.accepted.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    kill(serve.pid(), Signal::SIGKILL).unwrap();
    drop(serve);
    receiver.mode.store(UP, Ordering::SeqCst);
    let serve = Up::serve(&["--config", config], &env).await;

    let events = all_events(&store).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while count(&store, DeliveryState::Pending).await > 0 {
        if std::time::Instant::now() > deadline {
            let pending = store
                .webhook_deliveries(&store::DeliveryList {
                    state: Some(DeliveryState::Pending),
                    limit: 10,
                    ..store::DeliveryList::default()
                })
                .await
                .unwrap();
            panic!("not delivered within 90 s: {pending:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve.stop().await;
    assert_eq!(count(&store, DeliveryState::Failed).await, 0);

    // Every kind of change made is there: 30 created, 5 approved to pending (two approvals
    // each, one event), 5 rejected to failed, 10 canceled.
    let kinds = events.iter().fold(BTreeMap::new(), |mut kinds, event| {
        *kinds.entry(event.kind.as_str()).or_insert(0) += 1;
        kinds
    });
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("withdrawal.canceled", 10),
            ("withdrawal.created", 30),
            ("withdrawal.failed", 5),
            ("withdrawal.pending", 5),
        ]),
        "{kinds:?}"
    );
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
    assert!(
        receiver.refused.load(Ordering::SeqCst) > 0,
        "the outage was seen"
    );
    let accepted = receiver.accepted.lock().unwrap().clone();
    // None lost: every event arrived.
    let arrived: HashSet<&str> = accepted.iter().map(|each| each.id.as_str()).collect();
    let made: HashSet<&str> = events.iter().map(|event| event.event_id.as_str()).collect();
    assert_eq!(arrived, made);
    // Duplicates are the same event: the same id always carries the same body.
    let mut bodies: HashMap<&str, &[u8]> = HashMap::new();
    for each in &accepted {
        let first = bodies.entry(each.id.as_str()).or_insert(&each.body);
        assert_eq!(*first, each.body.as_slice(), "event {} changed", each.id);
    }
    // In order per withdrawal: each subject's first arrivals follow the outbox's order.
    let mut seen = HashSet::new();
    let mut last: HashMap<&str, i64> = HashMap::new();
    for each in &accepted {
        if !seen.insert(each.id.as_str()) {
            continue;
        }
        if let Some(previous) = last.insert(each.subject.as_str(), each.sequence) {
            assert!(
                previous < each.sequence,
                "{}: {} arrived after {}",
                each.subject,
                each.sequence,
                previous
            );
        }
    }
    let duplicates = accepted.len() - arrived.len();
    assert!(duplicates > 0, "the posts cut short were posted again");
    println!(
        "webhooks: {} events, {} posts accepted ({duplicates} duplicates), {} refused while down",
        events.len(),
        accepted.len(),
        receiver.refused.load(Ordering::SeqCst)
    );
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn remote(server: &str, token: &str, args: &[&str]) -> std::process::Output {
    coinsensei(args)
        .env("COINSENSEI_SERVER", server)
        .env("COINSENSEI_TOKEN", token)
        .env("COINSENSEI_DATA_DIR", "/nonexistent/coinsensei")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_listed_and_replayed_from_the_command_line() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let receiver = Arc::new(Receiver::default());
    receiver.mode.store(ERRORS, Ordering::SeqCst);
    let address = free_address();
    listen(address, Arc::clone(&receiver)).await;
    // Given up on after a second of 500s.
    let config = config(&db.dir(), address, "retry_for = 1\n");
    let config = config.to_str().unwrap();
    let backend = token(&db.url, "service", "backend").await;
    let operator = token(&db.url, "operator", "carol").await;
    let viewer = token(&db.url, "viewer", "wallboard").await;
    let env = [("COINSENSEI_DATABASE_URL", db.url.as_str())];
    let serve = Up::serve(&["--config", config], &env).await;
    let server = format!("http://{}", serve.address);
    let api = Api::new(&serve);
    api.withdraw(&backend, "f-1", "5").await;
    api.withdraw(&backend, "f-2", "5").await;
    testkit::wait_for("both given up", Duration::from_secs(30), || async {
        (count(&store, DeliveryState::Failed).await == 2).then_some(())
    })
    .await;

    // Listed, locally and through the server, with why they failed.
    let output = run(&db.url, &["events", "list", "--state", "failed", "--json"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let listed: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|each| each["state"] == "failed"
        && each["last_status"] == 500
        && each["event"]["type"] == "withdrawal.created"));
    let output = remote(&server, &viewer, &["events", "list", "--state", "failed"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(table.contains("backend failed: 2"), "{table}");
    assert!(table.contains("500 Internal Server Error"), "{table}");

    // Refused: a viewer replaying, an unknown delivery, ids with --endpoint. Nothing moves.
    let output = remote(&server, &viewer, &["events", "replay", "--failed"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("forbidden") || stderr(&output).contains("role"),
        "{}",
        stderr(&output)
    );
    let output = run(&db.url, &["events", "replay", "999999"]).await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("not found"), "{}", stderr(&output));
    let first = listed[0]["id"].to_string();
    let output = run(
        &db.url,
        &["events", "replay", &first, "--endpoint", "backend"],
    )
    .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--endpoint goes with --failed"),
        "{}",
        stderr(&output)
    );
    assert_eq!(count(&store, DeliveryState::Failed).await, 2);

    // The receiver is fixed; one replayed by id locally, the rest through the server.
    receiver.mode.store(UP, Ordering::SeqCst);
    let output = run(&db.url, &["events", "replay", &first]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("1 delivery set back to pending"),
        "{}",
        stdout(&output)
    );
    let output = remote(
        &server,
        &operator,
        &["events", "replay", "--failed", "--endpoint", "backend"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("1 delivery set back"),
        "{}",
        stdout(&output)
    );
    testkit::wait_for("both delivered", Duration::from_secs(30), || async {
        (count(&store, DeliveryState::Delivered).await == 2).then_some(())
    })
    .await;
    let arrived: HashSet<String> = receiver
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|each| each.id.clone())
        .collect();
    assert_eq!(arrived.len(), 2);
    let audit = store
        .audit_list(&store::AuditList {
            action: Some("webhook.replay".into()),
            limit: 10,
            ..store::AuditList::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 2);
    assert!(audit.iter().any(|entry| entry.actor.contains("carol")));
    // The metrics show them.
    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("coinsensei_webhook_deliveries{endpoint=\"backend\",state=\"delivered\"} 2"),
        "{metrics}"
    );
    serve.stop().await;

    // A bad endpoint stops `serve` before it starts, naming the key; the secret is not shown.
    let bad = db.dir().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[[webhooks]]\nname = \"x\"\nurl = \"ftp://example.com/\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let output = run(&db.url, &["serve", "--config", bad.to_str().unwrap()]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("webhooks[0].url"),
        "{}",
        stderr(&output)
    );
    assert!(!stderr(&output).contains(SECRET));
}
