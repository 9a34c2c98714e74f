//! The admin API under `/api/admin/` (first slice: workers). Every route needs a bearer
//! token; its role decides what it may do. Errors are JSON, `{"error": {"code", "message"}}`,
//! a 4xx for anything the caller can fix, and never carry internals.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use domain::{Chain, ControlAction, Role, WorkerId, WorkerKind, WorkerStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use store::{ApiTokenRow, AuditList, StoreError, WorkerControl, WorkerList};

use crate::AppState;

/// An API error: the status, a stable code for programs, and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
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

/// The caller, authenticated by `Authorization: Bearer TOKEN`.
pub struct Caller(pub ApiTokenRow);

impl Caller {
    fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role.allows(role) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this needs the {role} role; the token {} is {}",
                    self.0.prefix, self.0.role
                ),
            ))
        }
    }

    /// How the audit log names this caller.
    fn actor(&self) -> String {
        format!("token:{}:{}", self.0.id, self.0.name)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized =
            |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| {
                unauthorized("send Authorization: Bearer TOKEN (see `coinsensei tokens create`)")
            })?;
        let secret = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthorized("the Authorization header must be Bearer TOKEN"))?;
        match state
            .store
            .api_token_authenticate(&crate::auth::hash_token(secret.trim()), Utc::now())
            .await?
        {
            Some(token) => Ok(Caller(token)),
            None => {
                tracing::warn!("admin api: rejected an unknown or revoked token");
                Err(unauthorized("unknown or revoked token"))
            }
        }
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/workers", get(list_workers))
        .route("/api/admin/workers/{id}", get(get_worker))
        .route("/api/admin/workers/{id}/{action}", post(control_worker))
        .route("/api/admin/queues", get(list_queues))
        .route("/api/admin/queues/{name}/{action}", post(control_queue))
        .route("/api/admin/jobs", get(list_jobs))
        .route("/api/admin/jobs/{id}", get(get_job))
        .route("/api/admin/jobs/{id}/{action}", post(control_job))
        .route("/api/admin/audit", get(list_audit))
        .route("/api/admin/events", get(events))
}

/// Workers and queues as they are now: the first event of every stream, and what a client
/// that reconnects gets instead of replaying (`Last-Event-ID` is not kept server-side).
async fn snapshot(state: &AppState) -> Result<Value, ApiError> {
    let workers = state
        .store
        .worker_list(&WorkerList {
            limit: domain::limits::LIST_LIMIT_MAX,
            ..Default::default()
        })
        .await?;
    let now = Utc::now();
    let queues = state.queue.stats(now).await?;
    Ok(json!({
        "workers": workers.iter().map(|row| crate::dto::worker(row, now)).collect::<Vec<_>>(),
        "queues": queues.iter().map(|queue| crate::dto::queue(queue, now)).collect::<Vec<_>>(),
    }))
}

/// Server-sent events: a `snapshot` first, then a `worker` event for each worker change
/// (Postgres NOTIFY), or a fresh `snapshot` when the store cannot say what changed (SQLite,
/// reconnects) or jobs moved.
async fn events(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    caller.require(Role::Viewer)?;
    let feed = state.store.change_feed().await?;
    let first = Event::default()
        .event("snapshot")
        .id("0")
        .data(snapshot(&state).await?.to_string());
    let stream = futures_util::stream::unfold(
        (state, feed, Some(first), 1u64),
        |(state, mut feed, pending, seq)| async move {
            if let Some(event) = pending {
                return Some((Ok(event), (state, feed, None, seq)));
            }
            loop {
                let event = match feed.next().await? {
                    store::Change::Worker(id) => match state.store.worker_get(&id).await {
                        Ok(Some(row)) => Event::default()
                            .event("worker")
                            .data(crate::dto::worker(&row, Utc::now()).to_string()),
                        _ => continue,
                    },
                    store::Change::Job(_) | store::Change::Unknown => {
                        match snapshot(&state).await {
                            Ok(snapshot) => Event::default()
                                .event("snapshot")
                                .data(snapshot.to_string()),
                            Err(_) => continue,
                        }
                    }
                };
                let event = event.id(seq.to_string());
                return Some((Ok(event), (state, feed, None, seq + 1)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
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

fn bad_query(error: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", error.body_text())
}

fn name(what: &str, text: &str) -> Result<domain::Name, ApiError> {
    domain::Name::new(text).map_err(|error| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what}: {error}"),
        )
    })
}

/// Records an operator's action on the queue; written after it (a crash in between loses the
/// entry, never the effect).
async fn audit(state: &AppState, caller: &Caller, action: &str, target: String, details: Value) {
    let insert = store::AuditInsert {
        actor: caller.actor(),
        action: action.into(),
        target,
        details,
        now: Utc::now(),
    };
    if let Err(error) = state.store.audit_insert(&insert).await {
        tracing::warn!(%error, "admin api: the action took effect but its audit entry was not written");
    }
}

async fn list_queues(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let now = Utc::now();
    let stats = state.queue.stats(now).await?;
    let queues: Vec<Value> = stats
        .iter()
        .map(|queue| crate::dto::queue(queue, now))
        .collect();
    Ok(Json(json!({"queues": queues})))
}

async fn control_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path((queue, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no queue action {other:?}: pause or resume"),
            ));
        }
    };
    caller.require(Role::Operator)?;
    let queue = name("queue", &queue)?;
    state.queue.pause(&queue, paused, Utc::now()).await?;
    audit(
        &state,
        &caller,
        &format!("queue.{action}"),
        format!("queue:{queue}"),
        json!({}),
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"name": queue.as_str(), "paused": paused})),
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
    caller: Caller,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query.map_err(bad_query)?;
    let queue = query
        .queue
        .map(|queue| {
            domain::Name::new(queue).map_err(|error| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", error.to_string())
            })
        })
        .transpose()?;
    let limit = query
        .limit
        .unwrap_or(domain::limits::LIST_LIMIT_DEFAULT)
        .clamp(1, domain::limits::LIST_LIMIT_MAX);
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

fn job_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job {text:?}"),
        )
    })
}

async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let id = job_id(&id)?;
    let job = state.queue.get(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("job {id} not found"),
        )
    })?;
    Ok(Json(crate::dto::job(&job)))
}

async fn control_job(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if action != "retry" && action != "discard" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job action {action:?}: retry or discard"),
        ));
    }
    caller.require(Role::Operator)?;
    let id = job_id(&id)?;
    let now = Utc::now();
    let job = if action == "retry" {
        state.queue.retry(id, now).await?
    } else {
        state.queue.discard(id, now).await?
    };
    audit(
        &state,
        &caller,
        &format!("job.{action}"),
        format!("job:{id}"),
        json!({"queue": job.queue.as_str()}),
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(crate::dto::job(&job))).into_response())
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
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query.map_err(bad_query)?;
    let limit = query
        .limit
        .unwrap_or(domain::limits::LIST_LIMIT_DEFAULT)
        .clamp(1, domain::limits::LIST_LIMIT_MAX);
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
        text.parse::<T>().map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("{what}: {error}"),
            )
        })
    })
    .transpose()
}

fn worker_id(id: String) -> Result<WorkerId, ApiError> {
    WorkerId::new(id)
        .map_err(|error| ApiError::new(StatusCode::NOT_FOUND, "not_found", error.to_string()))
}

async fn list_workers(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<WorkerQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid", error.body_text()))?;
    let limit = query
        .limit
        .unwrap_or(domain::limits::LIST_LIMIT_DEFAULT)
        .clamp(1, domain::limits::LIST_LIMIT_MAX);
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
    Ok(Json(json!({
        "workers": rows.iter().map(|row| crate::dto::worker(row, Utc::now())).collect::<Vec<_>>(),
        "limit": limit,
        "offset": offset,
    })))
}

async fn get_worker(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let id = worker_id(id)?;
    let row = state.store.worker_get(&id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("worker {id} not found"),
        )
    })?;
    let audit = state
        .store
        .audit_list(&AuditList {
            target: Some(format!("worker:{id}")),
            limit: 20,
            ..Default::default()
        })
        .await?;
    let mut body = crate::dto::worker(&row, Utc::now());
    body["audit"] = audit.iter().map(crate::dto::audit).collect();
    Ok(Json(body))
}

async fn control_worker(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let action: ControlAction = action
        .parse()
        .map_err(|error| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{error}")))?;
    caller.require(Role::Operator)?;
    let id = worker_id(id)?;
    let row = state
        .store
        .worker_control(&WorkerControl {
            id,
            action,
            actor: caller.actor(),
            now: Utc::now(),
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": row.id.as_str(), "desired_state": row.desired_state.as_str(), "generation": row.generation})),
    )
        .into_response())
}
