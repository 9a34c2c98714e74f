//! The operator dashboard: server-rendered HTML (askama templates in `templates/`) made live
//! by htmx and one server-sent event stream per page (`/live`, [`live`]). No front-end build
//! step: htmx, its SSE extension and uPlot are vendored from npm at pinned versions
//! (`e2e/package-lock.json`, `e2e/vendor.mjs`) and embedded in the binary ([`assets`]).
//!
//! Security, in one place:
//! - **Login** trades an API token for a session: 256 random bits in the `cs_session` cookie
//!   (HttpOnly, SameSite=Strict, Path=/; behind https Secure and named `__Host-cs_session`),
//!   stored only as its SHA-256
//!   (`dashboard_session`). A session acts as its token: same name in the audit log, same
//!   role, and it ends when the token is revoked, at logout, at a new login from the same
//!   browser, or after [`SESSION_LIFETIME`]. Logins and logouts are audited
//!   (`session.login`, `session.logout`).
//!   Login goes through the API's own authentication, so failed attempts are counted and
//!   rate limited per client address the same way, and the token is never logged.
//! - **CSRF**: every POST must come from this origin (`Origin`, or `Referer` when a browser
//!   sends no `Origin`; the configured `public_url`, else the request's `Host`) and, once
//!   logged in, carry the session's CSRF token (the
//!   `X-CSRF-Token` header htmx sends, or a `csrf` form field). The CSRF token is a hash of
//!   the session id, so it is never stored and dies with the session.
//! - **Roles**: each action needs the role its admin API route needs (looked up in
//!   [`crate::api::route_table`]) and calls the same store operation with the same audit
//!   entry. A viewer sees disabled controls, and the server refuses them anyway (403).
//! - Pages carry a strict Content-Security-Policy (scripts and styles from this origin only)
//!   and may not be framed.

pub(crate) mod assets;
mod deposits;
pub(crate) mod history;
mod live;
mod money;
mod pages;

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Router};
use chrono::Utc;
use domain::limits::DASHBOARD_FORM_BYTES_MAX;
use domain::{ControlAction, Role};
use sha2::{Digest, Sha256};
use store::{ApiTokenRow, SessionInsert, StoreError};

use crate::AppState;
use crate::api::{ApiError, JobAction};

/// How long a dashboard session lasts from login; then the operator logs in again.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// The session cookie's name over plain http.
const SESSION_COOKIE: &str = "cs_session";
/// Its name when `Secure`: the `__Host-` prefix makes browsers refuse it unless it is Secure,
/// for this host only (no `Domain`) and `Path=/`, so no other site or subdomain can plant one.
const SESSION_COOKIE_SECURE: &str = "__Host-cs_session";
/// The header htmx sends the CSRF token in (set once on `<body hx-headers>`).
const CSRF_HEADER: &str = "x-csrf-token";

/// Why a `service` token opens no page: it is the exchange's backend's, not an operator's.
const SERVICE_REFUSED: &str = "this is a service token: the exchange's backend uses it for /api/v1/withdrawals, and it cannot open the dashboard; log in with a viewer, operator or admin token (coinsensei tokens create --role viewer --name NAME)";

/// A logged-in browser: the token it acts as, and its CSRF token.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) token: ApiTokenRow,
    pub(crate) csrf: String,
    /// The stored form of the session id, to check in a live stream that it still holds.
    pub(crate) id_hash: String,
}

impl Session {
    /// How the audit log names this operator: as the API names the same token.
    pub(crate) fn actor(&self) -> String {
        crate::api::actor_of(&self.token)
    }

    pub(crate) fn allows(&self, role: Role) -> bool {
        self.token.role.allows(role)
    }
}

/// An error on a dashboard route, as a short HTML message. htmx is told to show it in the
/// page's `#flash` area instead of where the answer would have gone.
#[derive(Debug)]
pub(crate) struct DashError(ApiError);

impl From<ApiError> for DashError {
    fn from(error: ApiError) -> Self {
        DashError(error)
    }
}

impl From<StoreError> for DashError {
    fn from(error: StoreError) -> Self {
        DashError(ApiError::from(error))
    }
}

impl From<queue::QueueError> for DashError {
    fn from(error: queue::QueueError) -> Self {
        DashError(ApiError::from(error))
    }
}

impl DashError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        DashError(ApiError::new(status, code, message))
    }
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let error = self.0;
        let body = pages::render_flash(&error.message, true);
        let mut response = (error.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert("hx-retarget", HeaderValue::from_static("#flash"));
        headers.insert("hx-reswap", HeaderValue::from_static("innerHTML"));
        // For a page opened by the browser itself, `guard` makes a whole page of it.
        response.extensions_mut().insert(Refusal(error.message));
        response
    }
}

/// What a [`DashError`] said, kept on its response so that `guard` can show it as a page
/// when the browser asked for a whole page (a bad filter in the address, a missing worker).
#[derive(Debug, Clone)]
struct Refusal(String);

/// A refused page load as a whole page, styled like the others, with a way back: the path
/// without its query (the usual culprit) or the workers page.
fn error_page(status: StatusCode, message: &str, path: &str) -> Response {
    let back = if path.starts_with("/live") || path.is_empty() {
        "/"
    } else {
        path
    };
    let mut response = pages::render_error_page(status, message, back);
    *response.status_mut() = status;
    response
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The stored form of a session id.
fn session_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// The CSRF token of a session: derived from its id (which only the browser holds, in an
/// HttpOnly cookie), under a label of its own so it differs from the stored hash.
fn csrf_of(secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"coinsensei dashboard csrf\0");
    hasher.update(secret.as_bytes());
    hex(&hasher.finalize())
}

/// Equality that takes as long for any two strings of the same length.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// The value of cookie `name` in the request's `Cookie` headers. Hand-written: one cookie of
/// our own, with a value we make ourselves, needs no cookie crate.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The session id the request's cookie carries (the `__Host-` one first).
fn session_secret(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE_SECURE).or_else(|| cookie(headers, SESSION_COOKIE))
}

/// Whether the request came in over https (directly, or as a proxy in front of us says).
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"https"))
        || headers
            .get(header::ORIGIN)
            .is_some_and(|value| value.as_bytes().starts_with(b"https://"))
}

fn session_cookie(value: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let (name, secure) = if secure {
        (SESSION_COOKIE_SECURE, "; Secure")
    } else {
        (SESSION_COOKIE, "")
    };
    let text = format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `scheme://authority` of an `Origin` or `Referer` value, lowercased.
fn origin_of(source: &str) -> Option<String> {
    let (scheme, rest) = source.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    ((scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && !authority.is_empty())
    .then(|| format!("{scheme}://{authority}").to_ascii_lowercase())
}

/// Refuses a POST that does not come from a page of this server: its `Origin` (or, when the
/// browser sends none, its `Referer`) must be `public_url` when one is configured (a proxy in
/// front may rewrite `Host`), else name the host the request was sent to.
fn check_origin(headers: &HeaderMap, public_url: Option<&str>) -> Result<(), DashError> {
    let refuse = |why: &str| {
        DashError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("refused: {why}; reload the dashboard and try again"),
        )
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| refuse("the request says not where it comes from (no Origin)"))?;
    let origin = origin_of(source);
    let allowed = match public_url {
        Some(public_url) => origin.as_deref() == Some(public_url.to_ascii_lowercase().as_str()),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| refuse("the request names no host"))?;
            origin
                .as_deref()
                .and_then(|origin| origin.split_once("://"))
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(refuse("it comes from another site"))
    }
}

/// Whether the session cookie must be `Secure`: `public_url` is https, or (without one) the
/// request came in over https.
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    match &state.options.public_url {
        Some(public_url) => public_url.starts_with("https://"),
        None => over_https(headers),
    }
}

/// Finds the request's session, if its cookie names a live one.
async fn find_session(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, DashError> {
    let Some(secret) = session_secret(headers) else {
        return Ok(None);
    };
    let id_hash = session_hash(secret);
    let Some(row) = state
        .store
        .session_authenticate(&id_hash, Utc::now())
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(Session {
        token: row.token,
        csrf: csrf_of(secret),
        id_hash,
    }))
}

pub(crate) fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// To the login page: a redirect for a browser, `HX-Redirect` for htmx (which would otherwise
/// put the login page inside a card).
fn to_login(headers: &HeaderMap) -> Response {
    if is_htmx(headers) {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response
            .headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/login"));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        response
    } else {
        see_other("/login")
    }
}

fn see_other(location: &'static str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    response
}

/// The route layer of every page and action: a live session, the route's role, and for a
/// POST the origin and CSRF checks. Hands the session on as an extension. Every answer,
/// refusals included, carries the pages' protective headers.
async fn guard(
    State((state, role)): State<(AppState, Role)>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = guard_checks(&state, role, request, next).await;
    protect(response.headers_mut());
    response
}

async fn guard_checks(state: &AppState, role: Role, mut request: Request, next: Next) -> Response {
    let session = match find_session(state, request.headers()).await {
        Ok(Some(session)) => session,
        Ok(None) => return to_login(request.headers()),
        Err(error) => return error.into_response(),
    };
    // A service token's session (from before logins refused it) ends here, with the reason.
    if session.token.role == Role::Service {
        if let Err(error) = state.store.session_delete(&session.id_hash).await {
            tracing::warn!(%error, "dashboard: could not end a service token's session");
        }
        return if is_htmx(request.headers()) {
            DashError::new(StatusCode::FORBIDDEN, "forbidden", SERVICE_REFUSED).into_response()
        } else {
            pages::login_failed(StatusCode::FORBIDDEN, SERVICE_REFUSED)
        };
    }
    if request.method() == Method::POST {
        if let Err(error) = check_origin(request.headers(), state.options.public_url.as_deref()) {
            return error.into_response();
        }
        let presented = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        // A plain form (no htmx) carries the token as a field instead.
        let presented = match presented {
            Some(token) => Some(token),
            None => csrf_field(&mut request).await,
        };
        if !presented.is_some_and(|token| same(&token, &session.csrf)) {
            tracing::warn!(token = session.token.id, path = ?request.uri().path(), "dashboard: missing or wrong CSRF token");
            return DashError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the form's security token is missing or stale; reload the page and try again",
            )
            .into_response();
        }
    }
    if !session.allows(role) {
        tracing::info!(token = session.token.id, role = %session.token.role, needed = %role, path = ?request.uri().path(), "dashboard: role too low");
        return DashError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this needs the {role} role; you are logged in as {} ({})",
                session.token.name, session.token.role
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(session);
    // A browser opening a page asks for HTML; htmx, event streams and scripts' probes do
    // not get a whole page for an error.
    let whole_page = request.method() == Method::GET
        && !is_htmx(request.headers())
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    match response.extensions().get::<Refusal>() {
        Some(Refusal(message)) if whole_page => error_page(response.status(), message, &path),
        _ => response,
    }
}

/// The `csrf` field of a urlencoded form body; the body is put back for the handler.
async fn csrf_field(request: &mut Request) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Fields {
        csrf: Option<String>,
    }
    let body = std::mem::take(request.body_mut());
    let bytes = axum::body::to_bytes(body, DASHBOARD_FORM_BYTES_MAX)
        .await
        .ok()?;
    let field = serde_urlencoded::from_bytes::<Fields>(&bytes)
        .ok()
        .and_then(|fields| fields.csrf);
    *request.body_mut() = axum::body::Body::from(bytes);
    field
}

/// Headers every dashboard page carries: what it may load, that it may not be framed, and
/// that it is not cached (it shows live state and a CSRF token).
fn protect(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// The least role of the admin API route that does what a dashboard action does.
fn api_role(method: &Method, path: &str) -> Role {
    crate::api::route_table()
        .into_iter()
        .find(|route| route.method == *method && route.path == path)
        .map_or(Role::Admin, |route| route.role)
}

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let guarded = |role: Role, handler: MethodRouter<AppState>| {
        handler.layer(middleware::from_fn_with_state((state.clone(), role), guard))
    };
    // Actions finish with their audit entry even if the browser goes away.
    let action = |api_path: &str, handler: MethodRouter<AppState>| {
        guarded(
            api_role(&Method::POST, api_path),
            handler.layer(middleware::from_fn(crate::api::run_to_the_end)),
        )
    };
    let worker = |control: ControlAction| {
        post(
            move |state: State<AppState>,
                  session: Extension<Session>,
                  id: axum::extract::Path<String>,
                  headers: HeaderMap| {
                pages::worker_action(state, session, id, headers, control)
            },
        )
    };
    let job = |job_action: JobAction| {
        post(
            move |state: State<AppState>,
                  session: Extension<Session>,
                  id: axum::extract::Path<String>,
                  headers: HeaderMap| {
                pages::job_action(state, session, id, headers, job_action)
            },
        )
    };
    let queue = |paused: bool| {
        post(
            move |state: State<AppState>,
                  session: Extension<Session>,
                  name: axum::extract::Path<String>,
                  headers: HeaderMap| {
                pages::queue_action(state, session, name, headers, paused)
            },
        )
    };
    let webhook = |target: pages::ReplayTarget| {
        post(
            move |state: State<AppState>,
                  session: Extension<Session>,
                  id: axum::extract::Path<String>,
                  headers: HeaderMap| {
                pages::webhook_replay(state, session, id, headers, target)
            },
        )
    };
    let decision = |approve: bool| {
        post(
            move |state: State<AppState>,
                  session: Extension<Session>,
                  id: axum::extract::Path<String>,
                  headers: HeaderMap,
                  body: axum::body::Bytes| {
                money::decide(state, session, id, headers, body, approve)
            },
        )
    };
    Router::new()
        .route("/login", get(pages::login_page).post(login))
        .route("/logout", guarded(Role::Viewer, post(logout)))
        .route("/", guarded(Role::Viewer, get(pages::workers_page)))
        .route(
            "/workers/{id}",
            guarded(Role::Viewer, get(pages::worker_page)),
        )
        .route(
            "/workers/{id}/start",
            action(
                "/api/admin/workers/{id}/start",
                worker(ControlAction::Start),
            ),
        )
        .route(
            "/workers/{id}/stop",
            action("/api/admin/workers/{id}/stop", worker(ControlAction::Stop)),
        )
        .route(
            "/workers/{id}/restart",
            action(
                "/api/admin/workers/{id}/restart",
                worker(ControlAction::Restart),
            ),
        )
        .route("/queues", guarded(Role::Viewer, get(pages::queues_page)))
        .route(
            "/queues/{name}/pause",
            action("/api/admin/queues/{name}/pause", queue(true)),
        )
        .route(
            "/queues/{name}/resume",
            action("/api/admin/queues/{name}/resume", queue(false)),
        )
        .route("/jobs", guarded(Role::Viewer, get(pages::jobs_page)))
        .route("/jobs/{id}", guarded(Role::Viewer, get(pages::job_page)))
        .route(
            "/jobs/{id}/retry",
            action("/api/admin/jobs/{id}/retry", job(JobAction::Retry)),
        )
        .route(
            "/jobs/{id}/discard",
            action("/api/admin/jobs/{id}/discard", job(JobAction::Discard)),
        )
        .route(
            "/withdrawals",
            guarded(Role::Viewer, get(pages::withdrawals_page)),
        )
        .route(
            "/withdrawals/{id}",
            guarded(Role::Viewer, get(pages::withdrawal_page)),
        )
        .route(
            "/deposits",
            guarded(Role::Viewer, get(deposits::deposits_page)),
        )
        .route("/health", guarded(Role::Viewer, get(pages::health_page)))
        .route(
            "/approvals",
            guarded(Role::Viewer, get(money::approvals_page)),
        )
        .route(
            "/withdrawals/{id}/approve",
            action("/api/v1/withdrawals/{id}/approve", decision(true)),
        )
        .route(
            "/withdrawals/{id}/reject",
            action("/api/v1/withdrawals/{id}/reject", decision(false)),
        )
        .route(
            "/withdrawals/{id}/review",
            action("/api/v1/withdrawals/{id}/review", post(money::review)),
        )
        .route(
            "/destinations",
            guarded(Role::Viewer, get(money::destinations_page)),
        )
        .route(
            "/destinations/{id}/remove",
            action(
                "/api/v1/withdrawal-destinations/{id}/remove",
                post(money::remove_destination),
            ),
        )
        .route("/audit", guarded(Role::Viewer, get(pages::audit_page)))
        .route(
            "/webhooks",
            guarded(Role::Viewer, get(pages::webhooks_page)),
        )
        .route(
            "/webhooks/deliveries/{id}/replay",
            action(
                "/api/admin/webhooks/deliveries/replay",
                webhook(pages::ReplayTarget::Delivery),
            ),
        )
        .route(
            "/webhooks/endpoints/{name}/replay-failed",
            action(
                "/api/admin/webhooks/deliveries/replay",
                webhook(pages::ReplayTarget::FailedOf),
            ),
        )
        .route("/live", guarded(Role::Viewer, get(live::live)))
        .route("/assets/{version}/{file}", get(assets::serve))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm")
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `POST /login`: the token is checked by the API's own authentication (counted and rate
/// limited per client, never logged), then traded for a session.
async fn login(State(state): State<AppState>, request: Request) -> Response {
    let headers = request.headers().clone();
    let client = crate::api::client_of(&request);
    if let Err(error) = check_origin(&headers, state.options.public_url.as_deref()) {
        return pages::login_failed(StatusCode::FORBIDDEN, &error.0.message);
    }
    let bytes = match axum::body::to_bytes(request.into_body(), DASHBOARD_FORM_BYTES_MAX).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return pages::login_failed(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
        }
    };
    let Some(form) = serde_urlencoded::from_bytes::<LoginForm>(&bytes).ok() else {
        return pages::login_failed(StatusCode::BAD_REQUEST, "paste an API token to log in");
    };
    let token = form.token.trim();
    let mut bearer = HeaderMap::new();
    match HeaderValue::from_str(&format!("Bearer {token}")) {
        Ok(value) => {
            bearer.insert(header::AUTHORIZATION, value);
        }
        Err(_) => {
            return pages::login_failed(
                StatusCode::UNAUTHORIZED,
                "not a CoinSensei token (cst_ and 64 hex digits)",
            );
        }
    }
    let caller = match crate::api::authenticate(&state, &bearer, client).await {
        Ok(caller) => caller,
        Err(error) => {
            let mut response = pages::login_failed(error.status, &error.message);
            if let Some(seconds) = error.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            return response;
        }
    };
    // The exchange's backend's token opens no page: refused here, before a session exists.
    if caller.token.role == Role::Service {
        tracing::info!(token = caller.token.id, name = %caller.token.name, "dashboard: a service token tried to log in");
        return pages::login_failed(StatusCode::FORBIDDEN, SERVICE_REFUSED);
    }
    // A browser logging in again leaves its old session behind: end it.
    if let Some(old) = session_secret(&headers)
        && let Err(error) = state.store.session_delete(&session_hash(old)).await
    {
        tracing::warn!(%error, "dashboard: could not end the session replaced by a login");
    }
    let secret = format!("css_{}", hex(&rand::random::<[u8; 32]>()));
    let now = Utc::now();
    let insert = SessionInsert {
        id_hash: session_hash(&secret),
        token_id: caller.token.id,
        now,
        expires_at: now + chrono::Duration::from_std(SESSION_LIFETIME).unwrap_or_default(),
    };
    if let Err(error) = state.store.session_insert(&insert).await {
        let error = ApiError::from(error);
        return pages::login_failed(error.status, &error.message);
    }
    // Debug, not Display: a name from before names were checked is escaped, never printed raw.
    tracing::info!(token = caller.token.id, name = ?caller.token.name, "dashboard: logged in");
    let actor = crate::api::actor_of(&caller.token);
    crate::api::audit(
        &state,
        &actor,
        "session.login",
        format!("token:{}", caller.token.id),
        serde_json::json!({}),
    )
    .await;
    let mut response = see_other("/");
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&secret, SESSION_LIFETIME, secure(&state, &headers)),
    );
    protect(response.headers_mut());
    response
}

/// `POST /logout`: deletes the session, so its cookie opens nothing even if kept.
async fn logout(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
) -> Result<Response, DashError> {
    state.store.session_delete(&session.id_hash).await?;
    crate::api::audit(
        &state,
        &session.actor(),
        "session.logout",
        format!("token:{}", session.token.id),
        serde_json::json!({}),
    )
    .await;
    let mut response = if is_htmx(&headers) {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response
            .headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/login"));
        response
    } else {
        see_other("/login")
    };
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", Duration::ZERO, secure(&state, &headers)),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_csrf_and_origins() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; cs_session=css_abc; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("css_abc"));
        assert_eq!(cookie(&headers, "c"), None);

        let csrf = csrf_of("css_abc");
        assert_eq!(csrf.len(), 64);
        assert_ne!(csrf, session_hash("css_abc"), "not the stored hash");
        assert!(same(&csrf, &csrf_of("css_abc")));
        assert!(!same(&csrf, &csrf_of("css_abd")));
        assert!(!same("ab", "abc"));

        let mut post = HeaderMap::new();
        post.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let check_origin = |headers: &HeaderMap| check_origin(headers, None);
        assert!(check_origin(&post).is_err(), "no origin at all");
        post.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(check_origin(&post).is_err());
        post.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_origin(&post).is_ok());
        post.remove(header::ORIGIN);
        post.insert(
            header::REFERER,
            HeaderValue::from_static("http://127.0.0.1:8080/queues"),
        );
        assert!(check_origin(&post).is_ok(), "Referer when no Origin");
        post.insert(
            header::REFERER,
            HeaderValue::from_static("http://127.0.0.1:8080.evil.example/"),
        );
        assert!(check_origin(&post).is_err());

        // Behind a proxy that rewrites Host, the configured public URL is the origin.
        let public = Some("https://ops.example.com");
        let mut proxied = HeaderMap::new();
        proxied.insert(header::HOST, HeaderValue::from_static("10.0.0.5:8080"));
        proxied.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://ops.example.com"),
        );
        assert!(super::check_origin(&proxied, public).is_ok());
        assert!(super::check_origin(&proxied, None).is_err(), "Host differs");
        for other in [
            "http://ops.example.com",
            "https://ops.example.com:8443",
            "https://ops.example.com.evil.example",
            "https://evil.example",
        ] {
            proxied.insert(header::ORIGIN, HeaderValue::from_static(other));
            assert!(super::check_origin(&proxied, public).is_err(), "{other}");
        }
        proxied.remove(header::ORIGIN);
        proxied.insert(
            header::REFERER,
            HeaderValue::from_static("https://ops.example.com/queues?x=1"),
        );
        assert!(super::check_origin(&proxied, public).is_ok(), "Referer");

        let cookie = session_cookie("css_abc", SESSION_LIFETIME, false);
        let text = cookie.to_str().unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(text.contains(part), "{text}");
        }
        assert!(!text.contains("Secure"));
        let secure = session_cookie("x", SESSION_LIFETIME, true);
        let secure = secure.to_str().unwrap();
        assert!(secure.starts_with("__Host-cs_session=x;") && secure.ends_with("; Secure"));
        let mut both = HeaderMap::new();
        both.insert(
            header::COOKIE,
            HeaderValue::from_static("cs_session=plain; __Host-cs_session=strong"),
        );
        assert_eq!(session_secret(&both), Some("strong"));
    }

    #[test]
    fn actions_need_the_roles_of_their_api_routes() {
        assert_eq!(
            api_role(&Method::POST, "/api/admin/workers/{id}/stop"),
            Role::Operator
        );
        assert_eq!(
            api_role(&Method::POST, "/api/admin/jobs/{id}/retry"),
            Role::Operator
        );
        assert_eq!(
            api_role(&Method::POST, "/api/admin/no/such/route"),
            Role::Admin,
            "an unknown route asks for the most"
        );
    }
}
