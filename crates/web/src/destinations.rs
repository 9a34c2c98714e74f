//! Registered withdrawal destinations for allowlist mode: `POST /api/v1/withdrawal-destinations`
//! (admin), `GET /api/v1/withdrawal-destinations` (viewer and up) and
//! `POST /api/v1/withdrawal-destinations/{id}/remove` (admin). A destination is checked like a
//! withdrawal's (its chain's address rules for the configured network, stored normalised,
//! never one of our own addresses) and is usable after the configured cool-down
//! ([`crate::withdrawals::Allowlist::cooldown`]). Registering and removing are audited by the
//! store in the same transaction. The CLI's local `coinsensei withdrawals destinations` goes
//! through [`register`] and [`remove`] too.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chain::address::Address;
use chrono::{DateTime, Utc};
use domain::Chain;
use serde::Deserialize;
use serde_json::{Value, json};
use store::{DestinationInsert, DestinationList, DestinationRow, Store, StoreError};

use crate::AppState;
use crate::api::{ApiError, Caller};
use crate::withdrawals::Intake;

/// A registration as the admin sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub chain: String,
    pub address: String,
    pub label: String,
    /// The reference prefix (the backend's user part) the destination belongs to.
    pub reference: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

/// Registers a destination: the API's and the local CLI's one way.
pub async fn register(
    store: &Store,
    intake: &Intake,
    actor: &str,
    request: &RegisterRequest,
) -> Result<DestinationRow, ApiError> {
    let chain: Chain = request
        .chain
        .parse()
        .map_err(|error: domain::ParseChainError| invalid(format!("chain: {error}")))?;
    let address = Address::parse(chain, intake.bitcoin_network, &request.address)
        .map_err(|error| invalid(format!("address: {error}")))?;
    let address = address.as_str().to_string();
    if intake.own_addresses.contains(&(chain, address.clone())) {
        return Err(invalid(format!(
            "address: {address} is one of our own addresses"
        )));
    }
    let row = store
        .withdrawal_destination_insert(&DestinationInsert {
            chain,
            address,
            label: request.label.clone(),
            reference: request.reference.clone(),
            actor: actor.to_string(),
            cooldown: intake.allowlist.cooldown,
            now: Utc::now(),
        })
        .await
        .map_err(store_error)?;
    tracing::info!(destination = row.id, chain = %row.chain, "withdrawal destination registered");
    Ok(row)
}

/// Removes registration `id`: the API's and the local CLI's one way.
pub async fn remove(store: &Store, actor: &str, id: i64) -> Result<DestinationRow, ApiError> {
    let row = store
        .withdrawal_destination_remove(id, actor, Utc::now())
        .await
        .map_err(store_error)?;
    tracing::info!(destination = row.id, chain = %row.chain, "withdrawal destination removed");
    Ok(row)
}

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Invalid(message) => invalid(message),
        other => other.into(),
    }
}

/// A registration as the API and the CLI's `--json` show it.
pub fn dto(row: &DestinationRow, now: DateTime<Utc>) -> Value {
    json!({
        "id": row.id,
        "chain": row.chain.as_str(),
        "address": row.address,
        "label": row.label,
        "reference": row.reference,
        "created_by": row.created_by,
        "created_at": row.created_at.to_rfc3339(),
        "usable_at": row.usable_at.to_rfc3339(),
        "usable": row.usable_at <= now,
    })
}

pub(crate) async fn create_destination(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RegisterRequest = crate::withdrawals::object_body(&headers, &body)?;
    let row = register(
        &state.store,
        &state.options.intake,
        &caller.actor(),
        &request,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(dto(&row, Utc::now()))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    chain: Option<String>,
    before_id: Option<i64>,
    limit: Option<u32>,
}

pub(crate) async fn list_destinations(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid", error.body_text()))?;
    let limit = query
        .limit
        .unwrap_or(domain::limits::LIST_LIMIT_DEFAULT)
        .clamp(1, domain::limits::LIST_LIMIT_MAX);
    let chain = query
        .chain
        .map(|text| text.parse::<Chain>())
        .transpose()
        .map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("chain: {error}"),
            )
        })?;
    let rows = state
        .store
        .withdrawal_destination_list(&DestinationList {
            chain,
            before_id: query.before_id,
            limit,
        })
        .await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|row| row.id))
        .flatten();
    let now = Utc::now();
    Ok(Json(json!({
        "destinations": rows.iter().map(|row| dto(row, now)).collect::<Vec<_>>(),
        "next_before_id": next,
    })))
}

/// A destination id: a canonical decimal integer, anything else names none.
pub(crate) fn destination_id(text: &str) -> Result<i64, ApiError> {
    crate::withdrawals::withdrawal_id(text).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no withdrawal destination {text:?}"),
        )
    })
}

pub(crate) async fn remove_destination(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = destination_id(&id)?;
    let row = remove(&state.store, &caller.actor(), id).await?;
    Ok(Json(dto(&row, Utc::now())))
}
