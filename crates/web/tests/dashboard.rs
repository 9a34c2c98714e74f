//! The dashboard through the router, on both stores: every page renders what the store holds;
//! login trades a token for a session cookie; every POST needs this origin and the session's
//! CSRF token; roles are enforced by the server; actions write the API's audit entries;
//! logout and revocation end sessions; a service token opens nothing; assets are embedded
//! and cacheable; the withdrawals pages show the store, filtered, paged and live. (The browser
//! test, `crates/coinsensei/tests/dashboard.rs`, drives the same pages in Chromium.)

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use domain::{Chain, DesiredState, Role, WithdrawalState, WorkerId, WorkerKind};
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
            r#"<button hx-disabled-elt="this" hx-post="/workers/tron-withdrawal-1/stop" hx-confirm="Stop worker tron-withdrawal-1?" aria-label"#
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
    // A browser opening that address gets a whole page, styled, with the reason and a way
    // back; htmx and event streams keep the short message.
    let browser = send(
        &store,
        Request::get("/?chain=solana")
            .header(header::HOST, HOST)
            .header(header::COOKIE, &cookie)
            .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(browser.status, StatusCode::BAD_REQUEST);
    for expected in [
        "<!doctype html>",
        "<h1>Bad address</h1>",
        "unknown chain",
        r#"<a href="/">Back to /</a>"#,
        "dashboard.css",
        r#"rel="icon""#,
    ] {
        assert!(
            browser.body.contains(expected),
            "{expected} in {}",
            browser.body
        );
    }
    assert!(
        browser.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert!(!bad.body.contains("<!doctype html>"), "{}", bad.body);
    // Stop and Restart ask first, naming the worker; Start does not.
    assert!(
        page.body
            .contains(r#"hx-confirm="Stop worker tron-withdrawal-1?"#)
    );
    assert!(
        page.body
            .contains(r#"hx-confirm="Restart worker tron-withdrawal-1?"#)
    );
    assert!(!page.body.contains(r#"hx-confirm="Start"#));
    // What each action does is said once per page, in the dialog, not on every card.
    assert_eq!(
        page.body
            .matches("takes no new work until someone starts it")
            .count(),
        1
    );

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
            r#"<button hx-disabled-elt="this" hx-post="/workers/tron-withdrawal-1/stop" hx-confirm="Stop worker tron-withdrawal-1?" disabled"#
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
            r#"<button hx-disabled-elt="this" hx-post="{restart}" hx-confirm="Restart worker ethereum-deposit-1?" disabled"#
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
        r#"data-range="3600""#,
        r#"<a href="?range=1h" aria-current="true">1 h</a>"#,
        // The audit table scrolls in its own box; its details are indented JSON.
        "<div class=\"scroll\">\n<table class=\"audit\">",
        "<pre>{\n",
    ] {
        assert!(
            detail.body.contains(expected),
            "{expected} in {}",
            detail.body
        );
    }
    // The charts' range is on the address: 1 h or 24 h, anything else a clear 400.
    let day = get(
        &store,
        "/workers/tron-withdrawal-1?range=24h",
        Some(&cookie),
    )
    .await;
    assert!(day.body.contains(r#"data-range="86400""#), "{}", day.body);
    assert!(
        day.body
            .contains(r#"<a href="?range=24h" aria-current="true">24 h</a>"#)
    );
    for bad in [
        "/workers/tron-withdrawal-1?range=7d",
        "/queues?range=1w",
        "/queues?zoom=1",
    ] {
        let answer = get(&store, bad, Some(&cookie)).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            answer.body
        );
    }
    assert!(
        get(&store, "/queues?range=24h", Some(&cookie))
            .await
            .body
            .contains(r#"data-range="86400""#)
    );
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
    // Destructive actions ask first, naming what they do.
    for expected in [
        &format!(r#"hx-confirm="Retry job {job} (noop on payouts)?"#),
        &format!(r#"hx-confirm="Discard job {job} (noop on payouts)?"#),
        r#"hx-confirm="Pause queue payouts?"#,
    ] {
        assert!(
            queues.body.contains(expected),
            "{expected} in {}",
            queues.body
        );
    }
    // The job's page: arguments (indented), attempts, error history, retry and discard.
    let page = get(&store, &format!("/jobs/{job}"), Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for expected in [
        "<h1>Job ",
        r#"<dd id="job-attempts">1 of 1</dd>"#,
        "{\n  &#34;n&#34;: 1\n}",
        "node unreachable: connection refused",
        r#"<time datetime=""#,
        &format!(r#"aria-label="Retry job {job}">Retry</button>"#),
        // The lease is cleared when a job ends; the worker that ran it last is kept.
        r#"<dd id="job-worker">testkit</dd>"#,
    ] {
        assert!(page.body.contains(expected), "{expected} in {}", page.body);
    }
    // Search: an id opens the job's page, anything else is a kind.
    let by_id = get(&store, &format!("/jobs?q=+{job}+"), Some(&cookie)).await;
    assert_eq!(by_id.status, StatusCode::SEE_OTHER, "{}", by_id.body);
    assert_eq!(by_id.headers[header::LOCATION], format!("/jobs/{job}"));
    let by_kind = get(&store, "/jobs?q=NOO", Some(&cookie)).await;
    assert!(
        by_kind.body.contains(&format!(r#"<tr id="job-{job}">"#)),
        "{}",
        by_kind.body
    );
    let none = get(&store, "/jobs?q=sweep", Some(&cookie)).await;
    assert!(none.body.contains("No job of that kind"), "{}", none.body);
    for missing in ["/jobs/999999", "/jobs/+1", "/jobs/01"] {
        let answer = get(&store, missing, Some(&cookie)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{missing}");
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
    // The favicon is ours, served like the other assets.
    let favicon = page
        .body
        .split('"')
        .find(|part| part.starts_with("/assets/") && part.ends_with("/favicon.svg"))
        .expect("the page links its favicon")
        .to_string();
    let icon = get(&store, &favicon, None).await;
    assert_eq!(icon.status, StatusCode::OK);
    assert_eq!(icon.headers[header::CONTENT_TYPE], "image/svg+xml");
    assert!(icon.body.starts_with("<svg"), "{}", icon.body);
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

/// Creates a withdrawal through the API's own intake (the mainnet catalogue).
async fn withdrawal(store: &Store, chain: &str, asset: &str, to: &str, amount: &str) -> i64 {
    let backend = queue::SqlBackend::new(store.clone());
    web::withdrawals::create(
        store,
        &backend,
        &web::withdrawals::Intake::default(),
        "token:1:backend",
        &format!("{chain}-{asset}-{amount}"),
        &web::withdrawals::CreateRequest {
            chain: chain.into(),
            asset: asset.into(),
            to: to.into(),
            amount: amount.into(),
            reference: format!("user:7/{asset}"),
        },
    )
    .await
    .unwrap()
    .row()
    .id
}

/// Moves withdrawal `id` from `from` to `to`, with a txid, block and confirmations if given.
async fn move_withdrawal(
    store: &Store,
    id: i64,
    from: WithdrawalState,
    to: WithdrawalState,
    txid: Option<&str>,
    block: Option<(i64, i64)>,
    error: Option<&str>,
) {
    let mut transition =
        store::WithdrawalTransition::new(id, from, to, "tron-withdrawal-1", Utc::now());
    transition.txid = txid.map(str::to_string);
    transition.block_height = block.map(|(height, _)| height);
    transition.confirmations = block.map(|(_, confirmations)| confirmations);
    transition.error = error.map(str::to_string);
    store.withdrawal_transition(&transition).await.unwrap();
}

const TRON_TO: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";
const ETHEREUM_TO: &str = "0x52908400098527886E0F7030069857D2E4169EE7";
const BITCOIN_TO: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";

/// The withdrawals list and one withdrawal's page: what the store holds, filtered and paged,
/// amounts in the asset's unit, every txid the audit trail names, canonical ids only.
async fn withdrawal_pages_show_the_store(db: &TestDb) {
    use WithdrawalState::*;
    let store = db.store().await;
    let (_, viewer) = web::auth::issue(&store, "wallboard", Role::Viewer, Utc::now())
        .await
        .unwrap();
    let paid = withdrawal(&store, "tron", "USDT", TRON_TO, "12.5").await;
    let refused = withdrawal(&store, "ethereum", "ETH", ETHEREUM_TO, "0.25").await;
    let waiting = withdrawal(&store, "bitcoin", "BTC", BITCOIN_TO, "0.001").await;
    let first_tx = "aa".repeat(32);
    let second_tx = "bb".repeat(32);
    // Paid on its second transaction: a reorg took the first one's block away.
    move_withdrawal(&store, paid, Pending, Processing, None, None, None).await;
    move_withdrawal(
        &store,
        paid,
        Processing,
        Broadcast,
        Some(&first_tx),
        None,
        None,
    )
    .await;
    move_withdrawal(
        &store,
        paid,
        Broadcast,
        Confirming,
        None,
        Some((100, 1)),
        None,
    )
    .await;
    move_withdrawal(
        &store,
        paid,
        Confirming,
        Broadcast,
        Some(&second_tx),
        None,
        None,
    )
    .await;
    move_withdrawal(
        &store,
        paid,
        Broadcast,
        Completed,
        None,
        Some((102, 19)),
        None,
    )
    .await;
    move_withdrawal(
        &store,
        refused,
        Pending,
        Failed,
        None,
        None,
        Some("the hot wallet holds no ETH on this network"),
    )
    .await;

    // Not logged in: to the login page.
    let answer = get(&store, "/withdrawals", None).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.headers[header::LOCATION], "/login");

    let (cookie, _) = login(&store, &viewer).await;
    let list = get(&store, "/withdrawals", Some(&cookie)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(
        list.body
            .contains(r#"<a href="/withdrawals" aria-current="page">Withdrawals</a>"#),
        "the nav names the page"
    );
    for expected in [
        format!(r#"<a href="/withdrawals/{paid}">{paid}</a>"#),
        r#"<span class="badge completed" data-status="completed">completed</span>"#.into(),
        r#"<span class="badge failed" data-status="failed">failed</span>"#.into(),
        r#"<span class="badge pending" data-status="pending">pending</span>"#.into(),
        "12.5 USDT".into(),
        "0.25 ETH".into(),
        "0.001 BTC".into(),
        // The txid, short, with the whole in its title.
        format!(r#"<code title="{second_tx}">bbbbbbbb…bbbbbb</code>"#),
        "19 conf.".into(),
        // A reason shows under its badge.
        "the hot wallet holds no ETH on this network</small>".into(),
    ] {
        assert!(list.body.contains(&expected), "{expected} in {}", list.body);
    }
    // Newest first.
    let at = |id: i64| list.body.find(&format!("id=\"wd-{id}\"")).unwrap();
    assert!(at(waiting) < at(refused) && at(refused) < at(paid));
    assert_eq!(live_query(&list.body)["page"], "withdrawals");

    // Filters: the page and its live stream.
    let failed = get(&store, "/withdrawals?state=failed&chain=", Some(&cookie)).await;
    assert_eq!(failed.status, StatusCode::OK);
    assert!(failed.body.contains(&format!("id=\"wd-{refused}\"")));
    assert!(!failed.body.contains(&format!("id=\"wd-{paid}\"")));
    assert_eq!(live_query(&failed.body)["state"], "failed");
    assert!(!live_query(&failed.body).contains_key("chain"));
    let bitcoin = get(&store, "/withdrawals?chain=bitcoin", Some(&cookie)).await;
    assert!(bitcoin.body.contains(&format!("id=\"wd-{waiting}\"")));
    assert!(!bitcoin.body.contains(&format!("id=\"wd-{refused}\"")));
    let none = get(&store, "/withdrawals?state=canceled", Some(&cookie)).await;
    assert!(
        none.body.contains("No withdrawals match these filters"),
        "{}",
        none.body
    );
    // An older page: below the id given, and no live list (new ones land on the first).
    let older = get(
        &store,
        &format!("/withdrawals?before_id={waiting}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(older.status, StatusCode::OK);
    assert!(!older.body.contains(&format!("id=\"wd-{waiting}\"")));
    assert!(older.body.contains(&format!("id=\"wd-{paid}\"")));
    assert_eq!(live_query(&older.body)["page"], "none");
    for bad in [
        "/withdrawals?state=lost",
        "/withdrawals?chain=dogecoin",
        "/withdrawals?before_id=x",
        "/withdrawals?sort=amount",
    ] {
        let answer = get(&store, bad, Some(&cookie)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            answer.body.contains("class=\"flash error\""),
            "{bad}: {}",
            answer.body
        );
    }

    // One withdrawal: every field, both txids with their blocks, the audit trail.
    let page = get(&store, &format!("/withdrawals/{paid}"), Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for expected in [
        format!("Withdrawal {paid}"),
        "12.5 USDT".into(),
        "12500000 base units".into(),
        TRON_TO.into(),
        "user:7/USDT".into(),
        "tron-USDT-12.5".into(),
        "token:1:backend".into(),
        first_tx.clone(),
        second_tx.clone(),
        "<td>100</td>".into(),
        "<td>102</td><td>19</td>".into(),
        "(current)".into(),
        "withdrawal.create".into(),
        "withdrawal.confirming".into(),
        "withdrawal.completed".into(),
    ] {
        assert!(page.body.contains(&expected), "{expected} in {}", page.body);
    }
    assert_eq!(live_query(&page.body)["id"], paid.to_string());
    let reason = get(&store, &format!("/withdrawals/{refused}"), Some(&cookie)).await;
    assert!(
        reason
            .body
            .contains("the hot wallet holds no ETH on this network")
    );
    assert!(reason.body.contains("Nothing signed for it yet."));
    // Ids are canonical decimals; anything else, or an unknown one, is 404.
    for path in [
        format!("/withdrawals/0{paid}"),
        format!("/withdrawals/+{paid}"),
        format!("/withdrawals/{paid}.0"),
        "/withdrawals/abc".into(),
        "/withdrawals/99999999".into(),
        "/withdrawals/99999999999999999999999".into(),
    ] {
        let answer = get(&store, &path, Some(&cookie)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(answer.body.contains("class=\"flash error\""), "{path}");
    }
}

/// The list's live stream sends the table again when a withdrawal shown changes (a new one,
/// a move); one withdrawal's stream sends its page again.
async fn live_withdrawals_follow_the_store(db: &TestDb) {
    use WithdrawalState::*;
    let store = db.store().await;
    let (_, viewer) = web::auth::issue(&store, "wallboard", Role::Viewer, Utc::now())
        .await
        .unwrap();
    let (cookie, _) = login(&store, &viewer).await;
    let router = router(&store);
    let response = live(&router, "page=withdrawals&chain=tron", &cookie).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut seen = String::new();
    read_until(&mut body, "event: withdrawals", &mut seen).await;
    read_until(&mut body, "No withdrawals match these filters", &mut seen).await;

    let id = withdrawal(&store, "tron", "USDT", TRON_TO, "3").await;
    // Another chain's: not this page's business.
    let other = withdrawal(&store, "ethereum", "ETH", ETHEREUM_TO, "1").await;
    read_until(
        &mut body,
        &format!("id=\"wd-{id}\" data-state=\"pending\""),
        &mut seen,
    )
    .await;
    let detail = live(&router, &format!("page=withdrawal&id={id}"), &cookie).await;
    assert_eq!(detail.status(), StatusCode::OK);
    let mut detail = detail.into_body().into_data_stream();
    let mut detail_seen = String::new();
    read_until(&mut detail, "event: withdrawal", &mut detail_seen).await;

    move_withdrawal(&store, id, Pending, Processing, None, None, None).await;
    move_withdrawal(
        &store,
        id,
        Processing,
        Broadcast,
        Some(&"cd".repeat(32)),
        None,
        None,
    )
    .await;
    read_until(
        &mut body,
        &format!("id=\"wd-{id}\" data-state=\"broadcast\""),
        &mut seen,
    )
    .await;
    assert!(!seen.contains(&format!("wd-{other}\"")), "{seen}");
    read_until(&mut detail, &"cd".repeat(32), &mut detail_seen).await;
    read_until(&mut detail, "withdrawal.broadcast", &mut detail_seen).await;

    for bad in [
        "page=withdrawal",
        "page=withdrawal&id=01",
        "page=withdrawals&state=lost",
    ] {
        let answer = live(&router, bad, &cookie).await;
        assert!(
            answer.status().is_client_error(),
            "{bad}: {}",
            answer.status()
        );
    }
}

/// A `service` token (the exchange's backend's) opens no dashboard page: its login is refused
/// with the reason and no session; a session it held from before is ended with the reason.
async fn service_tokens_open_no_page(db: &TestDb) {
    let store = db.store().await;
    let (service_row, service) = web::auth::issue(&store, "backend", Role::Service, Utc::now())
        .await
        .unwrap();
    let answer = login_form(&store, &service, Some(ORIGIN)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(answer.headers.get(header::SET_COOKIE).is_none());
    assert!(
        answer.body.contains("this is a service token") && answer.body.contains("--role viewer"),
        "{}",
        answer.body
    );
    // A session made for it anyway (as logins did before they refused it).
    let secret = "css_".to_string() + &"ab".repeat(32);
    let id_hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(secret.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    };
    store
        .session_insert(&store::SessionInsert {
            id_hash: id_hash.clone(),
            token_id: service_row.id,
            now: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
        })
        .await
        .unwrap();
    let cookie = format!("cs_session={secret}");
    let page = get(&store, "/queues", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body.contains("this is a service token"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/login\">")
    );
    // The session is gone: the next request goes to the login page.
    let again = get(&store, "/", Some(&cookie)).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(again.headers[header::LOCATION], "/login");
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

/// The webhooks page: each endpoint's deliveries by state, failed ones listed with why, and
/// Replay (per delivery, or every failed one of an endpoint) for operators only, audited.
async fn webhooks_page_lists_failed_deliveries_and_replays_them(db: &TestDb) {
    let store = db.store().await;
    store
        .webhook_subscribe(&[store::WebhookSubscription {
            endpoint: "backend".into(),
            events: vec!["withdrawal.*".into()],
        }])
        .await
        .unwrap();
    let first = withdrawal(&store, "tron", "TRX", TRON_TO, "1").await;
    withdrawal(&store, "tron", "TRX", TRON_TO, "2").await;
    // Both given up.
    let now = Utc::now();
    let claimed = store
        .webhook_claim("backend", 10, std::time::Duration::from_secs(30), now)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    for delivery in &claimed {
        let outcome = store::DeliveryOutcome::Failed {
            status: Some(502),
            error: "the endpoint answered 502 Bad Gateway".into(),
            retry_at: None,
        };
        assert!(store.webhook_settle(delivery, &outcome, now).await.unwrap());
    }
    let (_, operator) = web::auth::issue(&store, "on-call", Role::Operator, Utc::now())
        .await
        .unwrap();
    let (_, viewer) = web::auth::issue(&store, "wallboard", Role::Viewer, Utc::now())
        .await
        .unwrap();
    let (viewer_cookie, viewer_csrf) = login(&store, &viewer).await;
    let page = get(&store, "/webhooks", Some(&viewer_cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("id=\"endpoint-backend\""),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<span class=\"badge failed\">2</span>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("answered 502 Bad Gateway"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(&format!("withdrawal:{first}")),
        "{}",
        page.body
    );
    // A viewer sees the buttons disabled, and a viewer's post is refused.
    assert!(
        page.body.contains("disabled aria-label=\"Replay delivery"),
        "{}",
        page.body
    );
    let delivery = claimed[0].id;
    let refused = post(
        &store,
        &format!("/webhooks/deliveries/{delivery}/replay"),
        Some(&viewer_cookie),
        Some(&viewer_csrf),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    // A bad filter gets the error page and changes nothing.
    let bad = get(&store, "/webhooks?state=lost", Some(&viewer_cookie)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);

    let (cookie, csrf) = login(&store, &operator).await;
    let replayed = post(
        &store,
        &format!("/webhooks/deliveries/{delivery}/replay"),
        Some(&cookie),
        Some(&csrf),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(replayed.status, StatusCode::NO_CONTENT, "{}", replayed.body);
    assert_eq!(replayed.headers["hx-refresh"], "true");
    let pending = get(&store, "/webhooks?state=pending", Some(&cookie)).await;
    assert!(
        pending
            .body
            .contains(&format!("id=\"delivery-{delivery}\"")),
        "{}",
        pending.body
    );
    let all_failed = post(
        &store,
        "/webhooks/endpoints/backend/replay-failed",
        Some(&cookie),
        Some(&csrf),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(
        all_failed.status,
        StatusCode::NO_CONTENT,
        "{}",
        all_failed.body
    );
    let counts = store.webhook_counts().await.unwrap();
    assert!(
        counts
            .iter()
            .all(|count| count.state == store::DeliveryState::Pending && count.count == 2),
        "{counts:?}"
    );
    let audit = store
        .audit_list(&store::AuditList {
            action: Some("webhook.replay".into()),
            limit: 10,
            ..store::AuditList::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 2);
    assert!(audit.iter().all(|entry| entry.actor.contains("on-call")));
    // An unknown delivery: 404, nothing audited.
    let unknown = post(
        &store,
        "/webhooks/deliveries/999999/replay",
        Some(&cookie),
        Some(&csrf),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
}

/// The Deposits page: balances per chain and asset (the hot wallet as read, what the ledger
/// says the hot wallet and the deposit addresses hold, the last reconciliation, a difference
/// marked), then the deposits newest first, a reversed one highlighted and an ignored one
/// with its reason, filtered by state and chain, bad filters refused; its live stream sends
/// the list again when a deposit arrives.
async fn deposits_page_shows_the_store_and_follows_it_live(db: &TestDb) {
    let store = db.store().await;
    let (_, viewer) = web::auth::issue(&store, "wallboard", Role::Viewer, Utc::now())
        .await
        .unwrap();
    let (cookie, _) = login(&store, &viewer).await;
    let empty = get(&store, "/deposits", Some(&cookie)).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert!(
        empty.body.contains("No wallet on record yet"),
        "{}",
        empty.body
    );
    assert!(empty.body.contains("No deposits."), "{}", empty.body);
    assert!(
        empty
            .body
            .contains(r#"<a href="/deposits" aria-current="page">Deposits</a>"#),
        "in the nav: {}",
        empty.body
    );

    const ALICE: &str = "0x00000000000000000000000000000000000000A1";
    const USDT: &str = "0xdAC17F958D2ee523a2206206994597C13D831ec7";
    store
        .deposit_address_insert(&store::DepositAddressInsert {
            chain: Chain::Ethereum,
            reference: "user:1".into(),
            index: 0,
            address: ALICE.into(),
            actor: "test".into(),
            now: Utc::now(),
        })
        .await
        .unwrap();
    let blocks: Vec<store::ScannedBlock> = (0..2)
        .map(|number| store::ScannedBlock {
            number,
            hash: format!("0xa{number}"),
            parent_hash: format!("0xa{}", i64::try_from(number).unwrap() - 1),
        })
        .collect();
    let deposit = |txid: &str,
                   asset: &str,
                   block: &store::ScannedBlock,
                   amount: u128,
                   ignored: Option<&str>| {
        store::DepositInsert {
            txid: txid.into(),
            asset: asset.into(),
            position: 0,
            address: ALICE.into(),
            sender: None,
            amount: domain::Amount::from_u128(amount),
            block_number: block.number,
            block_hash: block.hash.clone(),
            ignored: ignored.map(str::to_string),
        }
    };
    store
        .scan_commit(
            Chain::Ethereum,
            &blocks,
            &[
                deposit("0xd1", "native", &blocks[0], 500_000_000_000_000_000, None),
                deposit("0xd2", USDT, &blocks[0], 12_500_000, None),
                deposit(
                    "0xd3",
                    "native",
                    &blocks[0],
                    1_000_000_000_000,
                    Some("dust"),
                ),
                deposit(
                    "0xd4",
                    "native",
                    &blocks[1],
                    2_000_000_000_000_000_000,
                    None,
                ),
            ],
            Utc::now(),
        )
        .await
        .unwrap();
    store
        .deposits_credit(Chain::Ethereum, 1, Utc::now())
        .await
        .unwrap();
    // Block 1 leaves the chain after its deposit was credited.
    store
        .scan_rollback(Chain::Ethereum, 0, Utc::now())
        .await
        .unwrap();
    let ids: std::collections::HashMap<String, i64> = store
        .deposits_list(Chain::Ethereum, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.txid, row.id))
        .collect();
    store
        .hot_wallet_set(&store::HotWalletBalance {
            chain: Chain::Ethereum,
            asset: "ETH".into(),
            address: "0x52908400098527886E0F7030069857D2E4169EE7".into(),
            units: "9000000000000000000".into(),
            checked_at: Utc::now(),
        })
        .await
        .unwrap();
    store
        .ledger_check_replace(
            Chain::Ethereum,
            &[store::LedgerCheck {
                chain: Chain::Ethereum,
                asset: "ETH".into(),
                agreeing: 1,
                differing: 1,
                unknown: 0,
                difference: domain::Amount::from_u128(100_000_000_000_000_000),
                checked_at: Utc::now(),
            }],
        )
        .await
        .unwrap();

    let page = get(&store, "/deposits", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    let reversed = ids["0xd4"];
    assert!(
        body.contains(&format!(
            r#"<tr id="dep-{reversed}" data-state="reversed" class="reversed">"#
        )),
        "{body}"
    );
    assert!(body.contains("a person must look"), "{body}");
    assert!(
        body.contains(&format!(
            r#"<tr id="dep-{}" data-state="ignored">"#,
            ids["0xd3"]
        )),
        "{body}"
    );
    assert!(
        body.contains(r#"<small class="reason" title="dust">dust</small>"#),
        "{body}"
    );
    assert!(body.contains("12.5 USDT"), "{body}");
    assert!(body.contains("0.5 ETH"), "{body}");
    assert!(body.contains("user:1"), "{body}");
    // The balances: the hot wallet as read (no opening balance recorded, so its ledger says
    // 0), the deposit address's credited 0.5 and held dust, the reconciliation's difference.
    let row = body
        .split(r#"<tr id="bal-ethereum-ETH" class="differs">"#)
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no marked ETH balance row: {body}"));
    for part in [
        "9 <span",
        "0.500001 <span",
        "1 address<",
        "1 differ by 0.1 in all; 1 agree, 0 unknown",
    ] {
        assert!(row.contains(part), "{part:?} in {row}");
    }
    let usdt = body
        .split(r#"<tr id="bal-ethereum-USDT">"#)
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no USDT balance row: {body}"));
    assert!(usdt.contains("not reported"), "{usdt}");
    assert!(usdt.contains("12.5 <span"), "{usdt}");
    assert!(usdt.contains("never"), "{usdt}");

    let only = get(&store, "/deposits?state=reversed", Some(&cookie)).await;
    assert!(
        only.body.contains(&format!("dep-{reversed}")),
        "{}",
        only.body
    );
    assert!(
        !only.body.contains(&format!("dep-{}\"", ids["0xd1"])),
        "{}",
        only.body
    );
    let tron = get(&store, "/deposits?chain=tron", Some(&cookie)).await;
    assert!(
        tron.body.contains("No deposits match these filters"),
        "{}",
        tron.body
    );
    for bad in [
        "/deposits?state=lost",
        "/deposits?chain=doge",
        "/deposits?colour=red",
    ] {
        let answer = get(&store, bad, Some(&cookie)).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            answer.body
        );
    }
    assert_ne!(
        get(&store, "/deposits", None).await.status,
        StatusCode::OK,
        "a session is needed"
    );

    let router = router(&store);
    let response = live(&router, "page=deposits&chain=ethereum", &cookie).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body().into_data_stream();
    let mut seen = String::new();
    read_until(&mut stream, "event: deposits", &mut seen).await;
    read_until(&mut stream, &format!("dep-{reversed}"), &mut seen).await;
    let fork = store::ScannedBlock {
        number: 1,
        hash: "0xb1".into(),
        parent_hash: "0xa0".into(),
    };
    store
        .scan_commit(
            Chain::Ethereum,
            std::slice::from_ref(&fork),
            &[deposit(
                "0xd5",
                "native",
                &fork,
                300_000_000_000_000_000,
                None,
            )],
            Utc::now(),
        )
        .await
        .unwrap();
    let new = store
        .deposits_list(Chain::Ethereum, None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.txid == "0xd5")
        .unwrap()
        .id;
    read_until(
        &mut stream,
        &format!(r#"<tr id="dep-{new}" data-state="pending">"#),
        &mut seen,
    )
    .await;
    for bad in ["page=deposits&state=lost", "page=deposits&chain=doge"] {
        let answer = live(&router, bad, &cookie).await;
        assert!(
            answer.status().is_client_error(),
            "{bad}: {}",
            answer.status()
        );
    }
}

/// The Deposits page's sweeps: none yet says so; an open sweep whose step failed and a
/// failed one are marked with their errors, the open ones counted per chain; the live stream
/// sends the table again when a sweep starts.
async fn sweeps_on_the_deposits_page_follow_the_store(db: &TestDb) {
    let store = db.store().await;
    let (_, viewer) = web::auth::issue(&store, "wallboard", Role::Viewer, Utc::now())
        .await
        .unwrap();
    let (cookie, _) = login(&store, &viewer).await;
    let empty = get(&store, "/deposits", Some(&cookie)).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert!(empty.body.contains("No sweeps yet."), "{}", empty.body);
    assert!(empty.body.contains("No sweep is open."), "{}", empty.body);

    const USDT: &str = "0xdAC17F958D2ee523a2206206994597C13D831ec7";
    let sweep = |address: &str, asset: &str, top_up: bool| store::SweepInsert {
        chain: Chain::Ethereum,
        kind: store::SweepKind::Sweep,
        address: address.into(),
        address_index: 3,
        asset: asset.into(),
        amount: domain::Amount::from_u128(12_500_000),
        destination: "0x00000000000000000000000000000000000000F0".into(),
        price_per_gas: 2_000_000_000,
        gas_limit: 41_372,
        top_up: top_up.then(|| {
            (
                "0x00000000000000000000000000000000000000F1".into(),
                domain::Amount::from_u128(82_744_000_000_000),
            )
        }),
        energy: None,
        now: Utc::now(),
    };
    let started = |inserted| match inserted {
        store::SweepInserted::Created(row) => row,
        other => panic!("{other:?}"),
    };
    let erring = started(
        store
            .sweep_insert(&sweep(
                "0x00000000000000000000000000000000000000A1",
                USDT,
                true,
            ))
            .await
            .unwrap(),
    );
    let mut noted = store::SweepAdvance::new(
        erring.id,
        store::SweepState::ToppingUp,
        store::SweepState::ToppingUp,
        Utc::now(),
    );
    noted.error = Some("the node refused the top-up: insufficient funds".into());
    store.sweep_advance(&noted).await.unwrap();
    let failed = started(
        store
            .sweep_insert(&sweep(
                "0x00000000000000000000000000000000000000A2",
                "native",
                false,
            ))
            .await
            .unwrap(),
    );
    let mut failing = store::SweepAdvance::new(
        failed.id,
        store::SweepState::Sweeping,
        store::SweepState::Failed,
        Utc::now(),
    );
    failing.sweep_txid = Some("0x5e".into());
    failing.error = Some("its sweep was mined but reverted".into());
    store.sweep_advance(&failing).await.unwrap();

    let page = get(&store, "/deposits", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for text in [
        format!(
            r#"<tr id="sweep-{}" data-state="topping_up" class="needs-look">"#,
            erring.id
        ),
        format!(
            r#"<tr id="sweep-{}" data-state="failed" class="needs-look">"#,
            failed.id
        ),
        "the node refused the top-up: insufficient funds".to_string(),
        "its sweep was mined but reverted".to_string(),
        "ethereum: 1 open, the oldest since".to_string(),
        "1 had a step fail".to_string(),
        "token with a top-up".to_string(),
        // The fee known so far, in ETH: none for the open one.
        "0 ETH".to_string(),
    ] {
        assert!(page.body.contains(&text), "{text} in {}", page.body);
    }

    let router = router(&store);
    let response = live(&router, "page=deposits", &cookie).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body().into_data_stream();
    let mut seen = String::new();
    read_until(&mut stream, "event: sweeps", &mut seen).await;
    let next = started(
        store
            .sweep_insert(&sweep(
                "0x00000000000000000000000000000000000000A3",
                "native",
                false,
            ))
            .await
            .unwrap(),
    );
    read_until(
        &mut stream,
        &format!(r#"<tr id="sweep-{}" data-state="sweeping">"#, next.id),
        &mut seen,
    )
    .await;
    read_until(&mut stream, "ethereum: 2 open", &mut seen).await;
}

testkit::on_both_stores!(db:
    deposits_page_shows_the_store_and_follows_it_live,
    sweeps_on_the_deposits_page_follow_the_store,
    webhooks_page_lists_failed_deliveries_and_replays_them,
    withdrawal_pages_show_the_store,
    live_withdrawals_follow_the_store,
    service_tokens_open_no_page,
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
