//! The dashboard through the router, on both stores: every page renders what the store holds;
//! login trades a token for a session cookie; every POST needs this origin and the session's
//! CSRF token; roles are enforced by the server; actions write the API's audit entries;
//! logout and revocation end sessions; assets are embedded and cacheable. (The browser test,
//! `crates/coinsensei/tests/dashboard.rs`, drives the same pages in Chromium.)

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use domain::{Chain, DesiredState, Role, WorkerId, WorkerKind};
use store::{AuditList, Store, WorkerRegister};
use testkit::TestDb;
use tower::ServiceExt;

const HOST: &str = "127.0.0.1:8080";
const ORIGIN: &str = "http://127.0.0.1:8080";

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

fn router(store: &Store) -> axum::Router {
    web::router(
        store.clone(),
        std::sync::Arc::new(queue::SqlBackend::new(store.clone())),
        &web::WebOptions::default(),
    )
}

async fn send(store: &Store, request: Request<Body>) -> Answer {
    let response = router(store).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(store: &Store, path: &str, cookie: Option<&str>) -> Answer {
    let mut request = Request::get(path).header(header::HOST, HOST);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    send(store, request.body(Body::empty()).unwrap()).await
}

/// A POST as htmx sends it: this origin, the CSRF header, the session cookie.
async fn post(
    store: &Store,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    origin: Option<&str>,
) -> Answer {
    let mut request = Request::post(path)
        .header(header::HOST, HOST)
        .header("hx-request", "true");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    send(store, request.body(Body::empty()).unwrap()).await
}

async fn login_form(store: &Store, token: &str, origin: Option<&str>) -> Answer {
    let mut request = Request::post("/login")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    send(
        store,
        request.body(Body::from(format!("token={token}"))).unwrap(),
    )
    .await
}

/// Logs in with `token`: the cookie to send back, and the page's CSRF token.
async fn login(store: &Store, token: &str) -> (String, String) {
    let answer = login_form(store, token, Some(ORIGIN)).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.headers[header::LOCATION], "/");
    let set_cookie = answer.headers[header::SET_COOKIE].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    assert!(
        !set_cookie.contains(token),
        "the cookie is a session id, not the token"
    );
    let page = get(store, "/", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = page
        .body
        .split("\"X-CSRF-Token\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF token")
        .to_string();
    assert_eq!(csrf.len(), 64);
    (cookie, csrf)
}

async fn register(store: &Store, id: &str, kind: WorkerKind, chain: Chain) {
    store
        .worker_register(&WorkerRegister {
            id: WorkerId::new(id).unwrap(),
            name: id.into(),
            kind,
            chain,
            pid: Some(7),
            host: Some("box".into()),
            port: None,
            version: Some("0.1.0".into()),
            config: serde_json::json!({}),
            incarnation: format!("inc-{id}"),
            now: Utc::now(),
        })
        .await
        .unwrap();
}

async fn desired(store: &Store, id: &str) -> DesiredState {
    store
        .worker_get(&WorkerId::new(id).unwrap())
        .await
        .unwrap()
        .unwrap()
        .desired_state
}

async fn pages_render_and_actions_are_guarded(db: &TestDb) {
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
    let (operator_row, operator) = web::auth::issue(&store, "on-call", Role::Operator, Utc::now())
        .await
        .unwrap();
    let (_, viewer) = web::auth::issue(&store, "wallboard", Role::Viewer, Utc::now())
        .await
        .unwrap();

    // Not logged in: pages send the browser to the login page; htmx is told to go there.
    let answer = get(&store, "/", None).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.headers[header::LOCATION], "/login");
    assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    let answer = post(
        &store,
        "/workers/tron-withdrawal-1/stop",
        None,
        None,
        Some(ORIGIN),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers["hx-redirect"], "/login");
    let login_page = get(&store, "/login", None).await;
    assert_eq!(login_page.status, StatusCode::OK);
    assert!(
        login_page
            .body
            .contains(r#"<input id="token" name="token" type="password""#)
    );
    assert!(
        login_page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );

    // Bad logins: a clear message, no cookie.
    for (token, origin, status, says) in [
        (
            "cst_nope",
            Some(ORIGIN),
            StatusCode::UNAUTHORIZED,
            "not a CoinSensei token",
        ),
        (
            &*format!("cst_{}", "0".repeat(64)),
            Some(ORIGIN),
            StatusCode::UNAUTHORIZED,
            "unknown or revoked token",
        ),
        (
            &*operator,
            Some("http://evil.example"),
            StatusCode::FORBIDDEN,
            "another site",
        ),
        (&*operator, None, StatusCode::FORBIDDEN, "no Origin"),
    ] {
        let answer = login_form(&store, token, origin).await;
        assert_eq!(answer.status, status, "{}", answer.body);
        assert!(answer.body.contains(says), "{}", answer.body);
        assert!(!answer.headers.contains_key(header::SET_COOKIE));
    }

    // Logging in again from the same browser ends the session it had.
    let (first, _) = login(&store, &operator).await;
    let again = send(
        &store,
        Request::post("/login")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, ORIGIN)
            .header(header::COOKIE, &first)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={operator}")))
            .unwrap(),
    )
    .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert!(again.headers.contains_key(header::CONTENT_SECURITY_POLICY));
    assert_eq!(
        get(&store, "/", Some(&first)).await.status,
        StatusCode::SEE_OTHER,
        "the old session is over"
    );
    let logins = store
        .audit_list(&AuditList {
            action: Some("session.login".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(logins.len(), 2);
    assert_eq!(
        logins[0].actor,
        format!("token:{}:on-call", operator_row.id)
    );

    let (cookie, csrf) = login(&store, &operator).await;

    // The workers page: the seed's cards.
    let page = get(&store, "/", Some(&cookie)).await;
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    for expected in [
        r#"<article id="w-tron-withdrawal-1" class="card" sse-swap="w-tron-withdrawal-1" hx-target="this">"#,
        "tron • withdrawal",
        "ethereum • deposit",
        r#"<span class="badge starting" data-status="starting">starting</span>"#,
        r#"aria-label="Stop tron-withdrawal-1">Stop</button>"#,
        "on-call · operator",
        "2 workers",
    ] {
        assert!(page.body.contains(expected), "{expected} in {}", page.body);
    }
    // Desired running and not alive-and-stoppable-yet: Start is meaningless, Stop is not.
    assert!(
        page.body.contains(
            r#"<button hx-disabled-elt="this" hx-post="/workers/tron-withdrawal-1/start" disabled"#
        ),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(
            r#"<button hx-disabled-elt="this" hx-post="/workers/tron-withdrawal-1/stop" aria-label"#
        ),
        "{}",
        page.body
    );
    // Filters.
    let tron = get(&store, "/?chain=tron&type=&status=", Some(&cookie)).await;
    assert!(
        tron.body.contains("w-tron-withdrawal-1") && !tron.body.contains("w-ethereum-deposit-1")
    );
    assert!(tron.body.contains("<option selected>tron</option>"));
    let bad = get(&store, "/?chain=solana", Some(&cookie)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("unknown chain"), "{}", bad.body);

    // Stop without the CSRF token, with a wrong one, or from another origin: refused, and
    // nothing changes.
    for (csrf, origin) in [
        (None, Some(ORIGIN)),
        (Some("0".repeat(64)), Some(ORIGIN)),
        (Some(csrf.clone()), Some("http://evil.example")),
        (Some(csrf.clone()), None),
    ] {
        let answer = post(
            &store,
            "/workers/tron-withdrawal-1/stop",
            Some(&cookie),
            csrf.as_deref(),
            origin,
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert_eq!(answer.headers["hx-retarget"], "#flash");
        assert_eq!(
            desired(&store, "tron-withdrawal-1").await,
            DesiredState::Running
        );
    }

    // Stop, as the API does it: desired state and an audit entry naming the token.
    let answer = post(
        &store,
        "/workers/tron-withdrawal-1/stop",
        Some(&cookie),
        Some(&csrf),
        Some(ORIGIN),
    )
    .await;
    // The answer is empty: the page's live stream brings the card (so an answer that arrives
    // late cannot put an older card over a newer one).
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert!(answer.body.is_empty());
    let page = get(&store, "/", Some(&cookie)).await;
    assert!(page.body.contains("stopping…"), "{}", page.body);
    assert!(
        page.body.contains(
            r#"<button hx-disabled-elt="this" hx-post="/workers/tron-withdrawal-1/stop" disabled"#
        ),
        "{}",
        page.body
    );
    assert_eq!(
        desired(&store, "tron-withdrawal-1").await,
        DesiredState::Stopped
    );
    let audit = store
        .audit_list(&AuditList {
            target: Some("worker:tron-withdrawal-1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit[0].action, "worker.stop");
    assert_eq!(audit[0].actor, format!("token:{}:on-call", operator_row.id));
    // Again: the store refuses (already desired stopped), shown in the flash area.
    let again = post(
        &store,
        "/workers/tron-withdrawal-1/stop",
        Some(&cookie),
        Some(&csrf),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        again.body.contains("already desired stopped"),
        "{}",
        again.body
    );
    let missing = post(
        &store,
        "/workers/nobody/stop",
        Some(&cookie),
        Some(&csrf),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Restart: while the worker has not applied it, Restart is disabled and a second one
    // (a double click, a stale page) is refused, so it cannot restart twice.
    let restart = "/workers/ethereum-deposit-1/restart";
    let first = post(&store, restart, Some(&cookie), Some(&csrf), Some(ORIGIN)).await;
    assert_eq!(first.status, StatusCode::NO_CONTENT, "{}", first.body);
    let page = get(&store, "/", Some(&cookie)).await;
    assert!(
        page.body.contains(&format!(
            r#"<button hx-disabled-elt="this" hx-post="{restart}" disabled"#
        )),
        "{}",
        page.body
    );
    assert!(page.body.contains("restarting…"), "{}", page.body);
    let second = post(&store, restart, Some(&cookie), Some(&csrf), Some(ORIGIN)).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.body);
    assert!(
        second.body.contains("restarting already"),
        "{}",
        second.body
    );
    let row = store
        .worker_get(&WorkerId::new("ethereum-deposit-1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.generation, 1, "restarted once");

    // Worker detail: card, health checks, audit trail.
    let detail = get(&store, "/workers/tron-withdrawal-1", Some(&cookie)).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    for expected in [
        "<h2 id=\"health-title\">Health</h2>",
        "<td>heartbeat</td>",
        "starting but desired stopped",
        "worker.stop",
        "token:",
        r#"data-series="memory""#,
        r#"<script type="application/json" id="history">"#,
    ] {
        assert!(
            detail.body.contains(expected),
            "{expected} in {}",
            detail.body
        );
    }
    assert_eq!(
        get(&store, "/workers/nobody", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );

    // Queues: a failed job with its errors; retry it from the dashboard.
    let job = testkit::enqueue_one_shot(&store, "payouts").await;
    testkit::fail_next_job(
        &store,
        "payouts",
        job,
        "node unreachable: connection refused",
    )
    .await;
    let queues = get(&store, "/queues", Some(&cookie)).await;
    assert_eq!(queues.status, StatusCode::OK, "{}", queues.body);
    for expected in [
        r#"<tr id="q-payouts"><th scope="row">payouts</th>"#,
        &format!(r#"<tr id="job-{job}">"#),
        "node unreachable: connection refused",
        &format!(r#"aria-label="Retry job {job}">Retry</button>"#),
        r#"aria-label="Pause queue payouts">Pause</button>"#,
        r#"data-series="throughput""#,
    ] {
        assert!(
            queues.body.contains(expected),
            "{expected} in {}",
            queues.body
        );
    }
    let retried = post(
        &store,
        &format!("/jobs/{job}/retry"),
        Some(&cookie),
        Some(&csrf),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(retried.status, StatusCode::NO_CONTENT, "{}", retried.body);
    let queues = get(&store, "/queues", Some(&cookie)).await;
    assert!(
        !queues.body.contains(&format!("job-{job}")),
        "no longer failed: {}",
        queues.body
    );
    let paused = post(
        &store,
        "/queues/payouts/pause",
        Some(&cookie),
        Some(&csrf),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT, "{}", paused.body);
    let queues = get(&store, "/queues", Some(&cookie)).await;
    assert!(
        queues.body.contains("Resume queue payouts"),
        "{}",
        queues.body
    );

    // The audit log shows all of it, newest first.
    let log = get(&store, "/audit", Some(&cookie)).await;
    assert_eq!(log.status, StatusCode::OK);
    let pause_at = log.body.find("queue.pause").expect("queue.pause listed");
    let retry_at = log.body.find("job.retry").expect("job.retry listed");
    let stop_at = log.body.find("worker.stop").expect("worker.stop listed");
    assert!(pause_at < retry_at && retry_at < stop_at, "{}", log.body);
    assert_eq!(
        get(&store, "/audit?before_id=x", Some(&cookie))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // A viewer sees the controls disabled, and the server refuses them anyway.
    let (viewer_cookie, viewer_csrf) = login(&store, &viewer).await;
    let page = get(&store, "/", Some(&viewer_cookie)).await;
    assert!(page.body.contains("wallboard · viewer"));
    assert!(
        !page.body.contains(r#"/stop" aria-label"#),
        "no enabled Stop: {}",
        page.body
    );
    assert!(page.body.contains("controls need the operator role"));
    let refused = post(
        &store,
        "/workers/ethereum-deposit-1/stop",
        Some(&viewer_cookie),
        Some(&viewer_csrf),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.body.contains("needs the operator role"),
        "{}",
        refused.body
    );
    assert_eq!(
        desired(&store, "ethereum-deposit-1").await,
        DesiredState::Running
    );
    // One session's CSRF token does not pass for another.
    let crossed = post(
        &store,
        "/workers/ethereum-deposit-1/stop",
        Some(&cookie),
        Some(&viewer_csrf),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(crossed.status, StatusCode::FORBIDDEN);

    // Logout ends the session: its cookie opens nothing afterwards.
    let out = post(
        &store,
        "/logout",
        Some(&viewer_cookie),
        Some(&viewer_csrf),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(out.headers["hx-redirect"], "/login");
    let logouts = store
        .audit_list(&AuditList {
            action: Some("session.logout".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(logouts.len(), 1);
    assert!(
        logouts[0].actor.ends_with(":wallboard"),
        "{}",
        logouts[0].actor
    );
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        get(&store, "/", Some(&viewer_cookie)).await.status,
        StatusCode::SEE_OTHER
    );

    // Revoking the token ends its sessions.
    store
        .api_token_revoke(operator_row.id, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        get(&store, "/", Some(&cookie)).await.status,
        StatusCode::SEE_OTHER
    );
}

async fn assets_are_embedded_and_cacheable(db: &TestDb) {
    let store = db.store().await;
    let (_, viewer) = web::auth::issue(&store, "wallboard", Role::Viewer, Utc::now())
        .await
        .unwrap();
    let (cookie, _) = login(&store, &viewer).await;
    let page = get(&store, "/", Some(&cookie)).await;
    let htmx = page
        .body
        .split('"')
        .find(|part| part.starts_with("/assets/") && part.ends_with("/htmx.min.js"))
        .expect("the page links htmx")
        .to_string();
    let answer = get(&store, &htmx, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.body.starts_with("var htmx="),
        "{}",
        &answer.body[..40]
    );
    assert_eq!(
        answer.headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(
        answer.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(!answer.headers.contains_key(header::CONTENT_ENCODING));
    // Gzip for browsers that take it: a third of the size.
    let gzipped = router(&store)
        .oneshot(
            Request::get(&htmx)
                .header(header::HOST, HOST)
                .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(gzipped.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(gzipped.headers()[header::VARY], "accept-encoding");
    let bytes = axum::body::to_bytes(gzipped.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
    assert!(bytes.len() * 2 < answer.body.len(), "{} bytes", bytes.len());
    // It is exactly the file it stands for.
    let mut inflated = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut inflated)
        .unwrap();
    assert!(inflated == answer.body, "the .gz inflates to the .js");
    // A browser that refuses gzip (q=0) gets the plain file.
    let refused = router(&store)
        .oneshot(
            Request::get(&htmx)
                .header(header::HOST, HOST)
                .header(header::ACCEPT_ENCODING, "gzip;q=0, br")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(!refused.headers().contains_key(header::CONTENT_ENCODING));
    assert_eq!(
        get(&store, "/assets/000000000000/htmx.min.js", None)
            .await
            .status,
        StatusCode::NOT_FOUND,
        "a stale hash never gets the current file"
    );
}

async fn live_stream_sends_cards_that_change(db: &TestDb) {
    use futures_util::StreamExt;
    let store = db.store().await;
    register(
        &store,
        "tron-withdrawal-1",
        WorkerKind::Withdrawal,
        Chain::Tron,
    )
    .await;
    let (_, operator) = web::auth::issue(&store, "on-call", Role::Operator, Utc::now())
        .await
        .unwrap();
    let (cookie, _) = login(&store, &operator).await;
    let page = get(&store, "/", Some(&cookie)).await;
    let roster = live_query(&page.body)["roster"].clone();
    let at = Utc::now().timestamp_millis() + 60_000;
    let response = router(&store)
        .oneshot(
            Request::get(format!("/live?page=workers&at={at}&roster={roster}"))
                .header(header::HOST, HOST)
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    let mut seen = String::new();
    let mut read_until = async |needle: &str, seen: &mut String| {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !seen.contains(needle) {
                let chunk = body.next().await.expect("the stream goes on").unwrap();
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} within 10 s; got {seen}"));
    };
    read_until("event: ready", &mut seen).await;
    store
        .worker_control(&store::WorkerControl {
            id: WorkerId::new("tron-withdrawal-1").unwrap(),
            action: domain::ControlAction::Stop,
            actor: "test".into(),
            now: Utc::now(),
        })
        .await
        .unwrap();
    read_until("stopping…", &mut seen).await;
    // The card was already on the page (rendered "after" its last change, with the workers
    // the stream lists), so the first look did not send it: the one card event is the change,
    // and it is sent once, alone.
    assert!(!seen.contains("event: cards"), "{seen}");
    let cards: Vec<&str> = seen
        .split("\n\n")
        .filter(|event| event.contains("event: w-tron-withdrawal-1"))
        .collect();
    assert_eq!(cards.len(), 1, "{seen}");
    assert!(cards[0].contains("stopping…"), "{seen}");

    let bad = get(&store, "/live?page=nothing", Some(&cookie)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("no live page"), "{}", bad.body);
}

/// The query of the live stream a page opens (its `sse-connect`), by parameter.
fn live_query(html: &str) -> std::collections::HashMap<String, String> {
    let start =
        html.find("sse-connect=\"/live?").expect("a live page") + "sse-connect=\"/live?".len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end]
        .replace("&amp;", "&")
        .replace("&#38;", "&")
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap();
            (name.to_string(), value.to_string())
        })
        .collect()
}

async fn live_workers_follow_the_page_filters(db: &TestDb) {
    let (store, cookie) = wallboard_with_a_worker(db).await;
    let page = get(&store, "/?chain=tron&type=", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    let query = live_query(&page.body);
    assert_eq!(query["chain"], "tron");
    assert!(!query.contains_key("type"), "an empty filter is no filter");
    let router = router(&store);
    let response = live(
        &router,
        &format!(
            "page=workers&at={}&chain=tron&roster={}",
            Utc::now().timestamp_millis() + 60_000,
            query["roster"]
        ),
        &cookie,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut seen = String::new();
    read_until(&mut body, "event: ready", &mut seen).await;
    // A worker of another chain registers: not this page's business.
    register(
        &store,
        "ethereum-deposit-1",
        WorkerKind::Deposit,
        Chain::Ethereum,
    )
    .await;
    // One of this page's chain: the list comes again, with it, and counted.
    register(&store, "tron-deposit-1", WorkerKind::Deposit, Chain::Tron).await;
    read_until(&mut body, "event: cards", &mut seen).await;
    read_until(&mut body, "2 workers</p>", &mut seen).await;
    assert!(seen.contains("id=\"w-tron-deposit-1\""), "{seen}");
    assert!(seen.contains("id=\"w-tron-withdrawal-1\""), "{seen}");
    assert!(!seen.contains("ethereum-deposit-1"), "{seen}");
    // A bad filter is refused like on the page.
    let bad = live(&router, "page=workers&chain=dogecoin", &cookie).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// A store with worker `tron-withdrawal-1` registered, and a viewer's session cookie.
async fn wallboard_with_a_worker(db: &TestDb) -> (Store, String) {
    let store = db.store().await;
    register(
        &store,
        "tron-withdrawal-1",
        WorkerKind::Withdrawal,
        Chain::Tron,
    )
    .await;
    let (_, viewer) = web::auth::issue(&store, "wallboard", Role::Viewer, Utc::now())
        .await
        .unwrap();
    let (cookie, _) = login(&store, &viewer).await;
    (store, cookie)
}

/// Reads the stream until `needle` shows, for at most 10 s.
async fn read_until(body: &mut axum::body::BodyDataStream, needle: &str, seen: &mut String) {
    use futures_util::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !seen.contains(needle) {
            let chunk = body.next().await.expect("the stream goes on").unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} within 10 s; got {seen}"));
}

/// Opens `/live?QUERY` with `cookie` on `router` (one router, as in a process: each has its
/// own change feed, which holds a database connection).
async fn live(router: &axum::Router, query: &str, cookie: &str) -> axum::response::Response {
    router
        .clone()
        .oneshot(
            Request::get(format!("/live?{query}"))
                .header(header::HOST, HOST)
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap()
}

async fn live_stream_takes_any_render_time(db: &TestDb) {
    let (store, cookie) = wallboard_with_a_worker(db).await;
    let router = router(&store);
    // Render times no page has: chrono's limits and beyond. The stream does not believe them
    // and sends every card, as after a reconnect.
    for at in [
        i64::MIN,
        i64::MIN / 1000,
        chrono::DateTime::<Utc>::MIN_UTC.timestamp_millis(),
        chrono::DateTime::<Utc>::MIN_UTC.timestamp_millis() + 1_000,
        chrono::DateTime::<Utc>::MAX_UTC.timestamp_millis(),
        i64::MAX,
    ] {
        let response = live(&router, &format!("page=workers&at={at}"), &cookie).await;
        assert_eq!(response.status(), StatusCode::OK, "at={at}");
        let mut body = response.into_body().into_data_stream();
        let mut seen = String::new();
        read_until(&mut body, "event: cards", &mut seen).await;
        read_until(&mut body, "id=\"w-tron-withdrawal-1\"", &mut seen).await;
    }
    let response = live(&router, "page=workers&at=soon", &cookie).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

async fn audit_stream_resumes_after_the_last_event_id(db: &TestDb) {
    let store = db.store().await;
    let (_, viewer) = web::auth::issue(&store, "wallboard", Role::Viewer, Utc::now())
        .await
        .unwrap();
    let (cookie, _) = login(&store, &viewer).await;
    let mut ids = Vec::new();
    for action in ["test.one", "test.two", "test.three"] {
        let row = store
            .audit_insert(&store::AuditInsert {
                actor: "test".into(),
                action: action.into(),
                target: "nothing".into(),
                details: serde_json::json!({}),
                now: Utc::now(),
            })
            .await
            .unwrap();
        ids.push(row.id);
    }
    let router = router(&store);
    let open = async |query: String, last_event_id: Option<&str>| {
        let mut request = Request::get(format!("/live?{query}"))
            .header(header::HOST, HOST)
            .header(header::COOKIE, &cookie);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    };

    // A page showing up to `test.two` gets `test.three`, with its id for a reconnect.
    let response = open(format!("page=audit&after={}", ids[1]), None).await;
    let mut body = response.into_body().into_data_stream();
    let mut seen = String::new();
    read_until(&mut body, "test.three", &mut seen).await;
    assert!(seen.contains(&format!("id: {}\n", ids[1])), "ready: {seen}");
    assert!(seen.contains(&format!("id: {}\n", ids[2])), "audit: {seen}");
    assert!(!seen.contains("test.two"), "{seen}");

    // The browser reconnects to the page's first URL (after = the newest row it had at
    // first) with the id of the last event it got: entries after that one only.
    let response = open(
        format!("page=audit&after={}", ids[2]),
        Some(&ids[0].to_string()),
    )
    .await;
    let mut body = response.into_body().into_data_stream();
    let mut seen = String::new();
    read_until(&mut body, "test.three", &mut seen).await;
    assert!(
        seen.contains("test.two") && !seen.contains("test.one"),
        "{seen}"
    );
    assert_eq!(seen.matches("event: audit").count(), 1, "{seen}");

    // An id this server never sent: refused, clearly.
    let response = open("page=audit&after=0".into(), Some("nope")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

async fn a_session_has_a_few_live_pages_and_the_api_keeps_its_streams(db: &TestDb) {
    let store = db.store().await;
    let (_, viewer) = web::auth::issue(&store, "wallboard", Role::Viewer, Utc::now())
        .await
        .unwrap();
    let (cookie, _) = login(&store, &viewer).await;
    let router = router(&store);
    let max = domain::limits::DASHBOARD_STREAMS_PER_SESSION_MAX;
    let mut open = Vec::new();
    for _ in 0..max {
        let response = live(&router, "page=none", &cookie).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    // One tab too many: refused, clearly.
    let refused = live(&router, "page=none", &cookie).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let bytes = axum::body::to_bytes(refused.into_body(), 4096)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&bytes).contains("live dashboard pages are open in this session"),
        "{bytes:?}"
    );
    // Another session of the same operator, and the API's event stream, are not affected.
    let (other, _) = login(&store, &viewer).await;
    assert_eq!(
        live(&router, "page=none", &other).await.status(),
        StatusCode::OK
    );
    let api = router
        .clone()
        .oneshot(
            Request::get("/api/admin/events")
                .header(header::AUTHORIZATION, format!("Bearer {viewer}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::OK);
    // A page closes: its place is free again.
    drop(open.pop());
    assert_eq!(
        live(&router, "page=none", &cookie).await.status(),
        StatusCode::OK
    );
}

async fn behind_a_proxy_the_public_url_is_the_origin(db: &TestDb) {
    let store = db.store().await;
    let (_, operator) = web::auth::issue(&store, "on-call", Role::Operator, Utc::now())
        .await
        .unwrap();
    let options = web::WebOptions {
        public_url: Some("https://ops.example.com".into()),
        ..web::WebOptions::default()
    };
    let proxied = web::router(
        store.clone(),
        std::sync::Arc::new(queue::SqlBackend::new(store.clone())),
        &options,
    );
    // The proxy rewrote Host to the upstream's address; the browser's origin is the public one.
    let login = |origin: &'static str, router: axum::Router| {
        let token = operator.clone();
        async move {
            router
                .oneshot(
                    Request::post("/login")
                        .header(header::HOST, "10.0.0.5:8080")
                        .header(header::ORIGIN, origin)
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(Body::from(format!("token={token}")))
                        .unwrap(),
                )
                .await
                .unwrap()
        }
    };
    let answer = login("https://ops.example.com", proxied.clone()).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let set_cookie = answer.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    assert_eq!(
        login("http://10.0.0.5:8080", proxied).await.status(),
        StatusCode::FORBIDDEN,
        "only the public origin"
    );
    // Without public_url, the same request is refused: its origin is not its Host.
    assert_eq!(
        login("https://ops.example.com", router(&store))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

/// Issue 18, cases 4 and 6 on the dashboard: `/jobs/+4/retry` names no job, and a token's
/// live pages across its sessions count against its stream cap with its API streams.
async fn dashboard_ids_have_one_spelling_and_streams_count_per_token(db: &TestDb) {
    let store = db.store().await;
    let (_, operator) = web::auth::issue(&store, "on-call", Role::Operator, Utc::now())
        .await
        .unwrap();
    let job = testkit::enqueue_one_shot(&store, "tron.withdrawal").await;
    testkit::fail_next_job(&store, "tron.withdrawal", job, "boom").await;
    let (cookie, csrf) = login(&store, &operator).await;
    for path in [
        format!("/jobs/+{job}/retry"),
        format!("/jobs/0{job}/discard"),
    ] {
        let answer = post(&store, &path, Some(&cookie), Some(&csrf), Some(ORIGIN)).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            answer.body
        );
    }
    let row = store.job_get(job).await.unwrap().unwrap();
    assert_eq!(
        row.state,
        domain::JobState::Failed,
        "the job was not touched"
    );

    let router = router(&store);
    let per_token = domain::limits::EVENT_STREAMS_PER_TOKEN_MAX;
    let per_session = domain::limits::DASHBOARD_STREAMS_PER_SESSION_MAX;
    let mut open = Vec::new();
    let mut sessions = vec![cookie];
    while open.len() < per_token {
        if open.len() % per_session == 0 && !open.is_empty() {
            sessions.push(login(&store, &operator).await.0);
        }
        let response = live(&router, "page=none", sessions.last().unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    // A fresh session of the same token, and the token's API stream: both over its cap.
    let (fresh, _) = login(&store, &operator).await;
    let refused = live(&router, "page=none", &fresh).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let bytes = axum::body::to_bytes(refused.into_body(), 4096)
        .await
        .unwrap();
    let prefix = &operator[..web::auth::TOKEN_PREFIX_LEN];
    assert!(
        String::from_utf8_lossy(&bytes).contains(prefix),
        "the refusal names the token: {bytes:?}"
    );
    let api = router
        .clone()
        .oneshot(
            Request::get("/api/admin/events")
                .header(header::AUTHORIZATION, format!("Bearer {operator}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::TOO_MANY_REQUESTS);
}

testkit::on_both_stores!(db:
    dashboard_ids_have_one_spelling_and_streams_count_per_token,
    behind_a_proxy_the_public_url_is_the_origin,
    a_session_has_a_few_live_pages_and_the_api_keeps_its_streams,
    audit_stream_resumes_after_the_last_event_id,
    live_stream_takes_any_render_time,
    pages_render_and_actions_are_guarded,
    assets_are_embedded_and_cacheable,
    live_stream_sends_cards_that_change,
    live_workers_follow_the_page_filters,
);
