//! Consolidation's sweeps for operators: `GET /api/admin/sweeps` (newest first, filtered by
//! chain and state, paged by `before_id`), the shape `coinsensei deposits sweeps` prints too,
//! and the Deposits page's sweeps table (`crate::dashboard`).
//!
//! A sweep is internal money movement (a deposit address into the hot wallet, or the hot
//! wallet's excess to the cold address), so it is the operators' (viewer role), not the
//! exchange backend's. What needs a person shows here: an open sweep with an error noted (a
//! step failed; the consolidation worker tries again each round, and the address waits for
//! it), an open sweep that is old, and a `failed` one (its error says why).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use domain::AssetCatalogue;
use serde::Deserialize;
use serde_json::{Value, json};
use store::{EnergySource, SweepKind, SweepList, SweepRow, SweepState};

use crate::AppState;
use crate::api::ApiError;

/// Reads a sweep state's name.
pub fn parse_state(text: &str) -> Result<SweepState, String> {
    SweepState::ALL
        .into_iter()
        .find(|state| state.as_str() == text)
        .ok_or_else(|| {
            format!(
                "unknown sweep state {text:?}; one of {}",
                SweepState::ALL.map(SweepState::as_str).join(", ")
            )
        })
}

/// How a sweep paid for its transaction, the figure its cost is compared by.
pub fn path(row: &SweepRow) -> &'static str {
    match (
        row.kind,
        row.asset.as_str(),
        row.energy_source,
        row.top_up_amount.is_some(),
    ) {
        (SweepKind::Cold, _, _, _) => "to cold",
        (_, "native", _, _) => "native",
        (_, _, Some(EnergySource::Delegation), _) => "token, energy delegated",
        (_, _, Some(EnergySource::Burn), _) => "token, energy burned from a TRX top-up",
        (_, _, None, true) => "token with a top-up",
        (_, _, None, false) => "token, fee held",
    }
}

/// How long an open sweep has been open at `now` (None once it is settled).
pub fn open_seconds(row: &SweepRow, now: DateTime<Utc>) -> Option<i64> {
    row.state
        .is_open()
        .then(|| (now - row.created_at).num_seconds().max(0))
}

/// A sweep as the API and `coinsensei deposits sweeps --json` show it: amounts in base units
/// (the asset's and, for fees, the native coin's) and, where the catalogue knows the asset,
/// in its unit.
pub fn sweep_dto(row: &SweepRow, catalogue: &AssetCatalogue, now: DateTime<Utc>) -> Value {
    let units = |amount: Option<domain::Amount>| amount.map(|a| a.base_units().to_string());
    let asset = crate::deposits::asset_of(catalogue, row.chain, &row.asset);
    json!({
        "id": row.id,
        "chain": row.chain.as_str(),
        "kind": row.kind.as_str(),
        "path": path(row),
        "address": row.address,
        "address_index": row.address_index,
        "asset": asset.as_ref().map_or(row.asset.as_str(), |(symbol, _)| symbol.as_str()),
        "contract": (row.asset != "native").then_some(row.asset.as_str()),
        "amount": asset.as_ref().map(|(_, decimals)| row.amount.format_decimal(*decimals)),
        "amount_base_units": row.amount.base_units().to_string(),
        "destination": row.destination,
        "state": row.state.as_str(),
        "price_per_gas": row.price_per_gas.to_string(),
        "gas_limit": row.gas_limit,
        "top_up_from": row.top_up_from,
        "top_up_amount": units(row.top_up_amount),
        "top_up_txid": row.top_up_txid,
        "top_up_fee": units(row.top_up_fee),
        "sweep_txid": row.sweep_txid,
        "sweep_fee": units(row.sweep_fee),
        "energy_source": row.energy_source.map(|source| source.as_str()),
        "delegate_from": row.delegate_from,
        "delegate_balance_sun": row.delegate_balance.map(|sun| sun.to_string()),
        "delegate_txid": row.delegate_txid,
        "delegate_fee": units(row.delegate_fee),
        "reclaim_txid": row.reclaim_txid,
        "reclaim_fee": units(row.reclaim_fee),
        "reclaim_state": row.reclaim_state.map(|state| state.as_str()),
        "energy_used": row.energy_used,
        "bandwidth_used": row.bandwidth_used,
        "cost": row.cost().base_units().to_string(),
        "error": row.error,
        "open_seconds": open_seconds(row, now),
        "created_at": row.created_at.to_rfc3339(),
        "updated_at": row.updated_at.to_rfc3339(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SweepQuery {
    chain: Option<String>,
    state: Option<String>,
    before_id: Option<i64>,
    limit: Option<u32>,
}

/// `GET /api/admin/sweeps?chain=&state=&before_id=&limit=`.
pub(crate) async fn list_sweeps(
    State(state): State<AppState>,
    query: Result<Query<SweepQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) =
        query.map_err(|error| crate::api::bad_parameter("query", &error.body_text()))?;
    let limit = crate::api::limit_of(query.limit);
    let list = SweepList {
        chain: crate::api::chain_filter(query.chain)?,
        state: query
            .state
            .map(|text| parse_state(&text))
            .transpose()
            .map_err(|error| crate::api::bad_parameter("state", &error))?,
        before_id: query.before_id,
        limit,
    };
    let rows = state.store.sweep_search(&list).await?;
    let next = if rows.len() == limit as usize {
        rows.last().map(|row| row.id)
    } else {
        None
    };
    let catalogue = &state.options.deposits.catalogue;
    let now = Utc::now();
    Ok(Json(json!({
        "sweeps": rows.iter().map(|row| sweep_dto(row, catalogue, now)).collect::<Vec<_>>(),
        "next_before_id": next,
    })))
}
