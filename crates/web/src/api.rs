//! The admin API under `/api/admin/`. Every route needs a bearer token, and its entry in
//! [`route_table`] names the least role that may call it; the OpenAPI document
//! (`openapi.json`, served at `/api/openapi.json`) is checked against that table by a test.
//! Errors are JSON, `{"error": {"code", "message"}}`, a 4xx for anything the caller can fix,
//! and never carry internals.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use chrono::Utc;
use domain::{Chain, ControlAction, Role, WorkerId, WorkerKind, WorkerStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use store::{ApiTokenRow, AuditList, StoreError, WorkerControl, WorkerList};

use crate::AppState;

/// The OpenAPI 3.1 document of this API, written by hand beside the code it describes.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// An API error: the status, a stable code for programs, and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Seconds for a `Retry-After` header (a rate-limited caller).
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// What went wrong, as the API's answer words it (for the CLI's local commands).
    pub fn message(&self) -> &str {
        &self.message
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { what, id } => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} {id} not found"),
            ),
            StoreError::Refused(refusal) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", refusal.to_string())
            }
            StoreError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            StoreError::Invalid(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
            }
            StoreError::KeyReused(key) => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                format!("idempotency key {key:?} was used before with another request"),
            ),
            error if error.is_transient() => {
                tracing::warn!(%error, "admin api: store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; try again",
                )
            }
            error => {
                tracing::error!(%error, "admin api: store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

/// The caller, authenticated by `Authorization: Bearer TOKEN` and allowed the route's role.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: ApiTokenRow,
    /// The stored form of the presented token, to check again that it is still valid (an
    /// event stream does, every second). Never the secret itself.
    token_hash: String,
}

impl Caller {
    fn require(&self, role: Role, service: bool) -> Result<(), ApiError> {
        if self.token.role.allows_route(role, service) {
            Ok(())
        } else {
            let needed = if service {
                format!("the {role} role (or service)")
            } else {
                format!("the {role} role")
            };
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this needs {needed}; the token {} is {}",
                    self.token.prefix, self.token.role
                ),
            ))
        }
    }

    /// How the audit log names this caller.
    pub(crate) fn actor(&self) -> String {
        actor_of(&self.token)
    }

    /// Whether the token still authenticates (not revoked since).
    pub(crate) async fn still_valid(&self, state: &AppState) -> Result<bool, ApiError> {
        Ok(state
            .store
            .api_token_authenticate(&self.token_hash, Utc::now())
            .await?
            .is_some())
    }
}

/// How the audit log names whoever acts with `token`, through the API or the dashboard.
pub(crate) fn actor_of(token: &ApiTokenRow) -> String {
    format!("token:{}:{}", token.id, token.name)
}

/// The client's address, when the server was started with connection info.
pub(crate) fn client_of(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// Finds the token a request carries. Failures are logged (with the client and, for a
/// well-formed token, its public prefix; never more of it) and counted per client address.
/// A client over its limit gets 429 instead of 401 for a bad token, and a malformed one is
/// refused without a lookup; a valid token always passes, so an attacker sharing an address
/// (a proxy, a NAT) with the operators cannot lock them out.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    let now = Instant::now();
    let blocked = state.auth_failures.blocked(client, now);
    let fail = |reason: &'static str, prefix: &str, message: &str| {
        state.auth_failures.record_failure(client, now);
        metrics::counter!("coinsensei_auth_failures_total", "reason" => reason).increment(1);
        if let Some(wait) = blocked {
            tracing::debug!(client = ?client, reason, token_prefix = prefix, "admin api: authentication failed (rate limited)");
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed authentications from this address; wait and try again",
            );
            error.retry_after = Some(wait.as_secs().max(1));
            return error;
        }
        tracing::warn!(client = ?client, reason, token_prefix = prefix, "admin api: authentication failed");
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    };
    let Some(header) = headers.get(header::AUTHORIZATION) else {
        return Err(fail(
            "missing",
            "",
            "send Authorization: Bearer TOKEN (see `coinsensei tokens create`)",
        ));
    };
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer`, `BEARER` and `Bearer` alike.
    let secret = header
        .to_str()
        .ok()
        .and_then(|value| value.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, secret)| secret.trim())
        .ok_or_else(|| {
            fail(
                "malformed",
                "",
                "the Authorization header must be Bearer TOKEN",
            )
        })?;
    // Only our own token shape is looked up, and only then is its (public) prefix logged: a
    // secret of some other system pasted by mistake never reaches the logs.
    if !crate::auth::is_token_shaped(secret) {
        return Err(fail(
            "malformed",
            "",
            "not a CoinSensei token (cst_ and 64 hex digits)",
        ));
    }
    let prefix = &secret[..crate::auth::TOKEN_PREFIX_LEN];
    let token_hash = crate::auth::hash_token(secret);
    match state
        .store
        .api_token_authenticate(&token_hash, Utc::now())
        .await?
    {
        Some(token) => Ok(Caller { token, token_hash }),
        None => Err(fail("unknown", prefix, "unknown or revoked token")),
    }
}

/// The route layer: authenticates, checks the route's role, and hands the caller on.
async fn authorize(
    State((state, role, service)): State<(AppState, Role, bool)>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = client_of(&request);
    let caller = match authenticate(&state, request.headers(), client).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    if let Err(error) = caller.require(role, service) {
        tracing::info!(token = caller.token.id, role = %caller.token.role, needed = %role, path = ?request.uri().path(), "admin api: role too low");
        return error.into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Runs the rest of the request in its own task, so dropping the request cannot cut a
/// mutation off between its effect and its audit entry.
pub(crate) async fn run_to_the_end(request: Request, next: Next) -> Response {
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "admin api: an action's task failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .into_response()
        }
    }
}

/// One route of the admin API: what the OpenAPI document and the role matrix are held to.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// The least role that may call it.
    pub role: Role,
    /// Whether the exchange's backend (a `service` token) may call it too.
    pub service: bool,
}

fn table() -> Vec<(Route, MethodRouter<AppState>)> {
    use Role::{Admin, Operator, Viewer};
    let route = |method: Method, path: &'static str, role: Role| Route {
        method,
        path,
        role,
        service: false,
    };
    // The exchange's backend's routes: a service token, and the operators' roles named.
    let backend = |method: Method, path: &'static str, role: Role| Route {
        method,
        path,
        role,
        service: true,
    };
    use crate::withdrawals as w;
    vec![
        (
            backend(Method::POST, "/api/v1/withdrawals", Admin),
            post(w::create_withdrawal),
        ),
        (
            backend(Method::GET, "/api/v1/withdrawals", Viewer),
            get(w::list_withdrawals),
        ),
        (
            backend(Method::GET, "/api/v1/withdrawals/{id}", Viewer),
            get(w::get_withdrawal),
        ),
        (
            backend(Method::POST, "/api/v1/withdrawals/{id}/cancel", Admin),
            post(w::cancel_withdrawal),
        ),
        // Four eyes: operators decide, never the backend (a stolen service token must not
        // release what it asked for).
        (
            route(Method::POST, "/api/v1/withdrawals/{id}/approve", Operator),
            post(w::approve_withdrawal),
        ),
        (
            route(Method::POST, "/api/v1/withdrawals/{id}/reject", Operator),
            post(w::reject_withdrawal),
        ),
        // Withdrawal policies: viewers read; admins change an asset's intake rules (audited).
        (
            route(Method::GET, "/api/admin/withdrawal-policies", Viewer),
            get(crate::policies::list_policies),
        ),
        (
            route(
                Method::PUT,
                "/api/admin/withdrawal-policies/{chain}/{asset}",
                Admin,
            ),
            axum::routing::put(crate::policies::set_policy),
        ),
        (
            route(
                Method::DELETE,
                "/api/admin/withdrawal-policies/{chain}/{asset}",
                Admin,
            ),
            axum::routing::delete(crate::policies::clear_policy),
        ),
        // Manual review: operators ask, the chain's withdrawal worker checks on the chain
        // and applies or refuses (202; the answer is in the reviews list).
        (
            route(Method::POST, "/api/v1/withdrawals/{id}/review", Operator),
            post(w::review_withdrawal),
        ),
        (
            route(Method::GET, "/api/v1/withdrawals/{id}/reviews", Viewer),
            get(w::withdrawal_reviews),
        ),
        // Allowlist mode's registered destinations: admins register and remove (audited);
        // a new one is usable after the cool-down.
        (
            route(Method::POST, "/api/v1/withdrawal-destinations", Admin),
            post(crate::destinations::create_destination),
        ),
        (
            route(Method::GET, "/api/v1/withdrawal-destinations", Viewer),
            get(crate::destinations::list_destinations),
        ),
        (
            route(
                Method::POST,
                "/api/v1/withdrawal-destinations/{id}/remove",
                Admin,
            ),
            post(crate::destinations::remove_destination),
        ),
        (
            backend(Method::GET, "/api/v1/events", Viewer),
            get(crate::webhooks::list_events),
        ),
        (
            route(Method::GET, "/api/admin/webhooks/deliveries", Viewer),
            get(crate::webhooks::list_deliveries),
        ),
        (
            route(
                Method::POST,
                "/api/admin/webhooks/deliveries/replay",
                Operator,
            ),
            post(crate::webhooks::replay_deliveries),
        ),
        // Deposits: the backend asks for addresses (an operator never needs to) and reads
        // deposits; operators read both.
        (
            backend(Method::POST, "/api/v1/deposit-addresses", Admin),
            post(crate::deposits::create_deposit_address),
        ),
        (
            backend(Method::GET, "/api/v1/deposit-addresses", Viewer),
            get(crate::deposits::list_deposit_addresses),
        ),
        (
            backend(Method::GET, "/api/v1/deposits", Viewer),
            get(crate::deposits::list_deposits),
        ),
        // Consolidation's sweeps: internal money movement, for operators.
        (
            route(Method::GET, "/api/admin/sweeps", Viewer),
            get(crate::sweeps::list_sweeps),
        ),
        (
            route(Method::GET, "/api/openapi.json", Viewer),
            get(openapi),
        ),
        (
            route(Method::GET, "/api/admin/workers", Viewer),
            get(list_workers),
        ),
        (
            route(Method::GET, "/api/admin/workers/{id}", Viewer),
            get(get_worker),
        ),
        (
            route(Method::POST, "/api/admin/workers/{id}/start", Operator),
            worker_action(ControlAction::Start),
        ),
        (
            route(Method::POST, "/api/admin/workers/{id}/stop", Operator),
            worker_action(ControlAction::Stop),
        ),
        (
            route(Method::POST, "/api/admin/workers/{id}/restart", Operator),
            worker_action(ControlAction::Restart),
        ),
        (
            route(Method::GET, "/api/admin/health", Viewer),
            get(get_health),
        ),
        (
            route(Method::GET, "/api/admin/queues", Viewer),
            get(list_queues),
        ),
        (
            route(Method::POST, "/api/admin/queues/{name}/pause", Operator),
            queue_pause(true),
        ),
        (
            route(Method::POST, "/api/admin/queues/{name}/resume", Operator),
            queue_pause(false),
        ),
        (
            route(Method::POST, "/api/admin/queues/{name}/limit", Operator),
            post(limit_queue),
        ),
        (
            route(Method::GET, "/api/admin/jobs", Viewer),
            get(list_jobs),
        ),
        (
            route(Method::GET, "/api/admin/jobs/{id}", Viewer),
            get(get_job),
        ),
        (
            route(Method::POST, "/api/admin/jobs/{id}/retry", Operator),
            job_action(JobAction::Retry),
        ),
        (
            route(Method::POST, "/api/admin/jobs/{id}/discard", Operator),
            job_action(JobAction::Discard),
        ),
        (
            route(Method::GET, "/api/admin/audit", Viewer),
            get(list_audit),
        ),
        (
            route(Method::GET, "/api/admin/events", Viewer),
            get(crate::events::events),
        ),
        (
            route(Method::GET, "/api/admin/tokens", Admin),
            get(list_tokens),
        ),
        (
            route(Method::POST, "/api/admin/tokens", Admin),
            post(create_token),
        ),
        (
            route(Method::POST, "/api/admin/tokens/{id}/revoke", Admin),
            post(revoke_token),
        ),
    ]
}

/// Every route of the admin API with its method and least role.
pub fn route_table() -> Vec<Route> {
    table().into_iter().map(|(route, _)| route).collect()
}

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, (route, handler)| {
            let guard = middleware::from_fn_with_state(
                (state.clone(), route.role, route.service),
                authorize,
            );
            // An action and its audit entry finish together even if the request is dropped
            // (a timeout, a client that hangs up).
            let handler = if route.method == Method::POST {
                handler.layer(middleware::from_fn(run_to_the_end))
            } else {
                handler
            };
            // `layer`, not `route_layer`: the method-not-allowed answer is guarded too.
            router.route(route.path, handler.layer(guard))
        })
}

/// No such route: under `/api/` the caller must still be authenticated to learn that (so the
/// API's shape is not probed without a token).
pub(crate) async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    if request.uri().path().starts_with("/api/")
        && let Err(error) = authenticate(&state, request.headers(), client_of(&request)).await
    {
        return error.into_response();
    }
    ApiError::not_found(format!(
        "no route {} {}",
        request.method(),
        request.uri().path()
    ))
    .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

impl From<queue::QueueError> for ApiError {
    fn from(error: queue::QueueError) -> Self {
        use queue::QueueError;
        match error {
            QueueError::NotFound { what, id } => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} {id} not found"),
            ),
            QueueError::Conflict(message) | QueueError::Stale(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            QueueError::Invalid(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
            }
            QueueError::Unavailable(message) => {
                tracing::warn!(error = %message, "admin api: queue unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the job queue is unavailable; try again",
                )
            }
            QueueError::Backend(message) => {
                tracing::error!(error = %message, "admin api: queue error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

pub(crate) fn bad_query(error: QueryRejection) -> ApiError {
    ApiError::invalid(error.body_text())
}

/// A JSON body that did not parse: 400 (syntax), 415 (not JSON), 413 (too large), 422 (wrong
/// fields or types), each with the parser's reason.
fn bad_body(error: JsonRejection) -> ApiError {
    let code = match error.status() {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid",
    };
    ApiError::new(error.status(), code, error.body_text())
}

/// A JSON body the API describes as an object. serde reads a struct from an array too (field
/// by field, in order), so `[5]` would pass for `{"concurrency_limit": 5}`: anything but an
/// object is refused (422) before it is read.
pub(crate) fn object_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<Value>, JsonRejection>,
) -> Result<T, ApiError> {
    let Json(value) = body.map_err(bad_body)?;
    let unprocessable =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message);
    if !value.is_object() {
        return Err(unprocessable(
            "the request body must be a JSON object".into(),
        ));
    }
    serde_json::from_value(value)
        .map_err(|error| unprocessable(format!("the request body does not fit: {error}")))
}

/// A text field from the client under the one text rule ([`domain::check_text`]): 400
/// naming the field.
pub(crate) fn text_field(
    field: &str,
    value: &str,
    controls: domain::Controls,
) -> Result<(), ApiError> {
    domain::check_text(field, value, controls).map_err(|error| ApiError::invalid(error.to_string()))
}

/// A row id from a path: canonical decimal only ([`domain::canonical_id`]), or 404.
pub(crate) fn row_id(what: &str, text: &str) -> Result<i64, ApiError> {
    domain::canonical_id(text).ok_or_else(|| {
        ApiError::not_found(format!("no {what} {:?}", text.escape_debug().to_string()))
    })
}

/// A query parameter that does not parse: 400 `invalid`, naming it.
pub(crate) fn bad_parameter(what: &str, error: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid",
        format!("{what}: {error}"),
    )
}

/// A list's `chain` filter: none, or a chain's name.
pub(crate) fn chain_filter(text: Option<String>) -> Result<Option<domain::Chain>, ApiError> {
    text.map(|text| text.parse::<domain::Chain>())
        .transpose()
        .map_err(|error| bad_parameter("chain", &error))
}

pub(crate) fn limit_of(limit: Option<u32>) -> u32 {
    limit
        .unwrap_or(domain::limits::LIST_LIMIT_DEFAULT)
        .clamp(1, domain::limits::LIST_LIMIT_MAX)
}

fn name(what: &str, text: &str) -> Result<domain::Name, ApiError> {
    domain::Name::new(text).map_err(|error| ApiError::not_found(format!("{what}: {error}")))
}

/// Records an operator's action on the queue; written after it (a crash in between loses the
/// entry, never the effect).
pub(crate) async fn audit(
    state: &AppState,
    actor: &str,
    action: &str,
    target: String,
    details: Value,
) {
    let insert = store::AuditInsert {
        actor: actor.to_string(),
        action: action.into(),
        target,
        details,
        now: Utc::now(),
    };
    if let Err(error) = state.store.audit_insert(&insert).await {
        tracing::error!(%error, action, "admin api: the action took effect but its audit entry was not written");
    }
}

async fn list_queues(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let stats = state.queue.stats(now).await?;
    let queues: Vec<Value> = stats
        .iter()
        .map(|queue| crate::dto::queue(queue, now))
        .collect();
    Ok(Json(json!({"queues": queues})))
}

/// Pauses or resumes a queue and audits it: the one way, for the API and the dashboard.
pub(crate) async fn pause_queue(
    state: &AppState,
    actor: &str,
    queue: &str,
    paused: bool,
) -> Result<domain::Name, ApiError> {
    let queue = name("queue", queue)?;
    state.queue.pause(&queue, paused, Utc::now()).await?;
    let action = if paused {
        "queue.pause"
    } else {
        "queue.resume"
    };
    audit(state, actor, action, format!("queue:{queue}"), json!({})).await;
    Ok(queue)
}

fn queue_pause(paused: bool) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>,
              Extension(caller): Extension<Caller>,
              Path(queue): Path<String>| async move {
            let queue = pause_queue(&state, &caller.actor(), &queue, paused).await?;
            Ok::<_, ApiError>((
                StatusCode::ACCEPTED,
                Json(json!({"name": queue.as_str(), "paused": paused})),
            ))
        },
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitBody {
    /// At most this many of the queue's jobs run at once; `null` removes the limit. Required:
    /// `{}` is refused rather than read as "no limit".
    #[serde(default, deserialize_with = "present")]
    concurrency_limit: Option<Option<u32>>,
}

/// A field that may be `null` but must be there: missing is `None`, `null` is `Some(None)`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

async fn limit_queue(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let queue = name("queue", &queue)?;
    let body: LimitBody = object_body(body)?;
    let max = domain::limits::QUEUE_CONCURRENCY_MAX;
    let refuse = || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("concurrency_limit must be 1 to {max}, or null for no limit"),
        )
    };
    let limit = body.concurrency_limit.ok_or_else(refuse)?;
    if limit.is_some_and(|limit| !(1..=max).contains(&limit)) {
        return Err(refuse());
    }
    state
        .queue
        .set_concurrency(&queue, limit, Utc::now())
        .await?;
    audit(
        &state,
        &caller.actor(),
        "queue.limit",
        format!("queue:{queue}"),
        json!({"concurrency_limit": limit}),
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"name": queue.as_str(), "concurrency_limit": limit})),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobQuery {
    queue: Option<String>,
    state: Option<String>,
    before_id: Option<i64>,
    limit: Option<u32>,
}

async fn list_jobs(
    State(state): State<AppState>,
    query: Result<Query<JobQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let queue = query
        .queue
        .map(|queue| {
            domain::Name::new(queue).map_err(|error| ApiError::invalid(format!("queue: {error}")))
        })
        .transpose()?;
    let limit = limit_of(query.limit);
    let jobs = state
        .queue
        .list(&store::JobList {
            queue,
            state: parse::<domain::JobState>("state", query.state)?,
            before_id: query.before_id,
            limit,
        })
        .await?;
    let next = if jobs.len() == limit as usize {
        jobs.last().map(|job| job.id)
    } else {
        None
    };
    Ok(Json(
        json!({"jobs": jobs.iter().map(crate::dto::job).collect::<Vec<_>>(), "next_before_id": next}),
    ))
}

pub(crate) fn job_id(text: &str) -> Result<i64, ApiError> {
    row_id("job", text)
}

async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let job = state
        .queue
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {id} not found")))?;
    Ok(Json(crate::dto::job(&job)))
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum JobAction {
    Retry,
    Discard,
}

/// Retries or discards a failed job and audits it: the one way, for the API and the
/// dashboard.
pub(crate) async fn act_on_job(
    state: &AppState,
    actor: &str,
    id: &str,
    action: JobAction,
) -> Result<store::JobRow, ApiError> {
    let id = job_id(id)?;
    let now = Utc::now();
    let (job, name) = match action {
        JobAction::Retry => (state.queue.retry(id, now).await?, "job.retry"),
        JobAction::Discard => (state.queue.discard(id, now).await?, "job.discard"),
    };
    audit(
        state,
        actor,
        name,
        format!("job:{id}"),
        json!({"queue": job.queue.as_str()}),
    )
    .await;
    Ok(job)
}

fn job_action(action: JobAction) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>,
              Extension(caller): Extension<Caller>,
              Path(id): Path<String>| async move {
            let job = act_on_job(&state, &caller.actor(), &id, action).await?;
            Ok::<_, ApiError>((StatusCode::ACCEPTED, Json(crate::dto::job(&job))))
        },
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    before_id: Option<i64>,
    limit: Option<u32>,
}

async fn list_audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    for (field, value) in [
        ("actor", &query.actor),
        ("action", &query.action),
        ("target", &query.target),
    ] {
        if let Some(value) = value {
            text_field(field, value, domain::Controls::None)?;
        }
    }
    let limit = limit_of(query.limit);
    let entries = state
        .store
        .audit_list(&AuditList {
            actor: query.actor,
            action: query.action,
            target: query.target,
            before_id: query.before_id,
            limit,
        })
        .await?;
    let next = if entries.len() == limit as usize {
        entries.last().map(|entry| entry.id)
    } else {
        None
    };
    let entries: Vec<Value> = entries.iter().map(crate::dto::audit).collect();
    Ok(Json(json!({"entries": entries, "next_before_id": next})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerQuery {
    chain: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

fn parse<T: std::str::FromStr>(what: &str, text: Option<String>) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    text.map(|text| {
        text.parse::<T>()
            .map_err(|error| ApiError::invalid(format!("{what}: {error}")))
    })
    .transpose()
}

pub(crate) fn worker_id(id: String) -> Result<WorkerId, ApiError> {
    WorkerId::new(id).map_err(|error| ApiError::not_found(error.to_string()))
}

async fn list_workers(
    State(state): State<AppState>,
    query: Result<Query<WorkerQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let limit = limit_of(query.limit);
    let offset = query.offset.unwrap_or(0);
    let rows = state
        .store
        .worker_list(&WorkerList {
            chain: parse::<Chain>("chain", query.chain)?,
            kind: parse::<WorkerKind>("type", query.kind)?,
            status: parse::<WorkerStatus>("status", query.status)?,
            limit,
            offset,
        })
        .await?;
    let now = Utc::now();
    let workers: Vec<crate::dto::WorkerView<'_>> = rows
        .iter()
        .map(|row| crate::dto::WorkerView::new(row, now))
        .collect();
    #[derive(serde::Serialize)]
    struct WorkerPage<'a> {
        workers: Vec<crate::dto::WorkerView<'a>>,
        limit: u32,
        offset: u32,
    }
    Ok(Json(WorkerPage {
        workers,
        limit,
        offset,
    })
    .into_response())
}

/// The health checker's report: every worker and chain, each check with its reason and value.
async fn get_health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let report = state
        .options
        .health
        .evaluate(&state.store, Utc::now())
        .await?;
    Ok(Json(crate::health::report_json(&report)))
}

async fn get_worker(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = worker_id(id)?;
    let row = state
        .store
        .worker_get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("worker {id} not found")))?;
    let audit = state
        .store
        .audit_list(&AuditList {
            target: Some(format!("worker:{id}")),
            limit: 20,
            ..Default::default()
        })
        .await?;
    let now = Utc::now();
    let mut body = crate::dto::worker(&row, now);
    body["health"] = crate::dto::worker_health(&row, now, state.options.heartbeat_interval);
    body["audit"] = audit.iter().map(crate::dto::audit).collect();
    Ok(Json(body))
}

/// Starts, stops or restarts a worker (its desired state and the audit entry, in one store
/// transaction): the one way, for the API and the dashboard.
pub(crate) async fn control_worker(
    state: &AppState,
    actor: &str,
    id: String,
    action: ControlAction,
) -> Result<store::WorkerRow, ApiError> {
    let id = worker_id(id)?;
    Ok(state
        .store
        .worker_control(&WorkerControl {
            id,
            action,
            actor: actor.to_string(),
            now: Utc::now(),
        })
        .await?)
}

fn worker_action(action: ControlAction) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>,
              Extension(caller): Extension<Caller>,
              Path(id): Path<String>| async move {
            let row = control_worker(&state, &caller.actor(), id, action).await?;
            Ok::<_, ApiError>((
                StatusCode::ACCEPTED,
                Json(json!({
                    "id": row.id.as_str(),
                    "desired_state": row.desired_state.as_str(),
                    "generation": row.generation,
                })),
            ))
        },
    )
}

async fn list_tokens(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let tokens = state.store.api_token_list().await?;
    Ok(Json(
        json!({"tokens": tokens.iter().map(crate::dto::token).collect::<Vec<_>>()}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    role: String,
}

/// Makes a token; the answer is the only place its secret ever appears.
async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body: TokenBody = object_body(body)?;
    let unprocessable =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message);
    // Before trimming: a name is refused for a newline at its end too.
    domain::check_text("name", &body.name, domain::Controls::None)
        .map_err(|error| unprocessable(error.to_string()))?;
    let role: Role = body
        .role
        .parse()
        .map_err(|error| unprocessable(format!("role: {error}")))?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(unprocessable("name must be 1 to 100 bytes".into()));
    }
    let (row, secret) = crate::auth::issue(&state.store, name, role, Utc::now()).await?;
    audit(
        &state,
        &caller.actor(),
        "token.create",
        format!("token:{}", row.id),
        json!({"name": row.name, "role": row.role.as_str(), "prefix": row.prefix}),
    )
    .await;
    let mut body = crate::dto::token(&row);
    body["token"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = row_id("token", &id)?;
    let row = state.store.api_token_revoke(id, Utc::now()).await?;
    audit(
        &state,
        &caller.actor(),
        "token.revoke",
        format!("token:{id}"),
        json!({"name": row.name, "prefix": row.prefix}),
    )
    .await;
    Ok(Json(crate::dto::token(&row)))
}
