//! The outbox's API: the events (`GET /api/v1/events`, which the exchange's backend may
//! also read to catch up), their deliveries to the webhook endpoints, and replaying them
//! (`docs/webhooks.md`).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use store::{DeliveryList, DeliveryRow, DeliveryState, EventList, EventRow, ReplaySelect};

use crate::AppState;
use crate::api::{ApiError, Caller, bad_query, limit_of, object_body, text_field};

pub fn event(event: &EventRow) -> Value {
    json!({
        "id": event.event_id,
        "type": event.kind,
        "subject": event.subject,
        "sequence": event.sequence,
        "created_at": event.created_at.to_rfc3339(),
        "data": event.payload,
    })
}

pub fn delivery(delivery: &DeliveryRow) -> Value {
    let time = |at: Option<chrono::DateTime<Utc>>| at.map(|at| at.to_rfc3339());
    json!({
        "id": delivery.id,
        "endpoint": delivery.endpoint,
        "state": delivery.state.as_str(),
        "attempts": delivery.attempts,
        "next_attempt_at": (delivery.state == DeliveryState::Pending)
            .then(|| delivery.next_attempt_at.to_rfc3339()),
        "first_attempt_at": time(delivery.first_attempt_at),
        "last_attempt_at": time(delivery.last_attempt_at),
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "delivered_at": time(delivery.delivered_at),
        "event": event(&delivery.event),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    subject: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

pub(crate) async fn list_events(
    State(state): State<AppState>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    for (field, value) in [("type", &query.kind), ("subject", &query.subject)] {
        if let Some(value) = value {
            text_field(field, value, domain::Controls::None)?;
        }
    }
    let limit = limit_of(query.limit);
    let events = state
        .store
        .events_list(&EventList {
            kind: query.kind,
            subject: query.subject,
            after: query.after,
            limit,
        })
        .await?;
    let next = events.last().map(|event| event.sequence).or(query.after);
    let events: Vec<Value> = events.iter().map(event).collect();
    Ok(Json(json!({"events": events, "next_after": next})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveryQuery {
    endpoint: Option<String>,
    state: Option<String>,
    subject: Option<String>,
    before_id: Option<i64>,
    limit: Option<u32>,
}

pub(crate) async fn list_deliveries(
    State(state): State<AppState>,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    for (field, value) in [("endpoint", &query.endpoint), ("subject", &query.subject)] {
        if let Some(value) = value {
            text_field(field, value, domain::Controls::None)?;
        }
    }
    let delivery_state = query
        .state
        .as_deref()
        .map(|text| {
            DeliveryState::parse(text).ok_or_else(|| {
                ApiError::invalid(format!(
                    "state: {text:?} is not one of pending, delivered, failed"
                ))
            })
        })
        .transpose()?;
    let limit = limit_of(query.limit);
    let deliveries = state
        .store
        .webhook_deliveries(&DeliveryList {
            endpoint: query.endpoint,
            state: delivery_state,
            subject: query.subject,
            before: query.before_id,
            limit,
        })
        .await?;
    let next = if deliveries.len() == limit as usize {
        deliveries.last().map(|each| each.id)
    } else {
        None
    };
    let counts = state.store.webhook_counts().await?;
    let counts: Vec<Value> = counts
        .iter()
        .map(|count| {
            json!({
                "endpoint": count.endpoint,
                "state": count.state.as_str(),
                "count": count.count,
                "oldest_event_at": count.oldest.map(|at| at.to_rfc3339()),
            })
        })
        .collect();
    let deliveries: Vec<Value> = deliveries.iter().map(delivery).collect();
    Ok(Json(
        json!({"deliveries": deliveries, "next_before_id": next, "counts": counts}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    ids: Option<Vec<i64>>,
    #[serde(default)]
    failed: bool,
    endpoint: Option<String>,
}

/// Sets deliveries back to pending: the named ones, or every failed one (of one endpoint).
/// The one way in for the API and the dashboard.
pub(crate) async fn replay(
    state: &AppState,
    actor: &str,
    select: &ReplaySelect,
) -> Result<u64, ApiError> {
    Ok(state
        .store
        .webhook_replay(select, actor, Utc::now())
        .await?)
}

pub(crate) async fn replay_deliveries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: ReplayBody = object_body(body)?;
    let unprocessable =
        |message: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message);
    let select = match (body.ids, body.failed) {
        (Some(ids), false) if body.endpoint.is_none() => {
            if ids.is_empty() || ids.len() > store::REPLAY_MAX as usize {
                return Err(unprocessable(&format!(
                    "ids: name 1 to {} deliveries",
                    store::REPLAY_MAX
                )));
            }
            ReplaySelect::Ids(ids)
        }
        (None, true) => ReplaySelect::Failed {
            endpoint: body.endpoint,
        },
        _ => {
            return Err(unprocessable(
                "send either {\"ids\": [...]} or {\"failed\": true} with an optional \"endpoint\"",
            ));
        }
    };
    let replayed = replay(&state, &caller.actor(), &select).await?;
    Ok(Json(json!({"replayed": replayed})))
}
