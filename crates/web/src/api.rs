//! The admin API under `/api/admin/` (first slice: workers). Every route needs a bearer
//! token; its role decides what it may do. Errors are JSON, `{"error": {"code", "message"}}`,
//! a 4xx for anything the caller can fix, and never carry internals.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::{Chain, ControlAction, Role, WorkerId, WorkerKind, WorkerStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use store::{ApiTokenRow, AuditList, StoreError, WorkerControl, WorkerList, WorkerRow};

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

fn time(at: Option<DateTime<Utc>>) -> Value {
    at.map(|at| Value::String(at.to_rfc3339()))
        .unwrap_or(Value::Null)
}

/// The wire form of a worker: the keys of `coinsensei workers list --json`.
fn worker_json(row: &WorkerRow) -> Value {
    json!({
        "id": row.id.as_str(),
        "name": row.name,
        "type": row.kind.as_str(),
        "blockchain": row.chain.as_str(),
        "status": row.status.as_str(),
        "desired_state": row.desired_state.as_str(),
        "pid": row.pid,
        "host": row.host,
        "version": row.version,
        "generation": row.generation,
        "applied_generation": row.applied_generation,
        "last_heartbeat": time(row.last_heartbeat),
        "last_error": row.last_error,
        "rss_bytes": row.rss_bytes,
        "in_flight": row.in_flight,
        "processed_total": row.processed_total,
        "failed_total": row.failed_total,
        "started_at": time(row.started_at),
    })
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
        "workers": rows.iter().map(worker_json).collect::<Vec<_>>(),
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
    let mut body = worker_json(&row);
    body["audit"] = audit
        .iter()
        .map(|entry| json!({"at": entry.at.to_rfc3339(), "actor": entry.actor, "action": entry.action, "details": entry.details}))
        .collect();
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
