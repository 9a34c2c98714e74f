//! Deposits for the exchange's backend: `POST /api/v1/deposit-addresses` (the address of a
//! reference on a chain: the same reference always gets the same address), `GET
//! /api/v1/deposit-addresses` and `GET /api/v1/deposits`.
//!
//! Addresses are derived from each chain's deposit account xpub (public derivation only: no
//! private key is anywhere near the control plane) through [`DeriveAddress`], which the
//! binary provides (the `signer` crate's `Xpub`); this crate never sees a key. The index is
//! the next free one on the chain; the store's unique constraints settle races (see
//! `store::deposits`): a request that lost its index to another reference derives the next
//! one, a bounded number of times. The CLI's local `coinsensei deposits address` goes through
//! [`issue`] too.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chain::address::Address;
use chrono::Utc;
use domain::{AssetCatalogue, Chain};
use serde::Deserialize;
use serde_json::{Value, json};
use store::{
    DepositAddressInsert, DepositAddressInserted, DepositAddressList, DepositAddressRow,
    DepositList, DepositState, DepositView, Store, StoreError,
};

use crate::AppState;
use crate::api::{ApiError, Caller};

/// How many indexes one request tries before it gives up (each lost to a racing request for
/// another reference).
pub const ISSUE_ATTEMPTS_MAX: u32 = 32;

/// Derives the deposit address of key `index` of a chain's deposit account, from its xpub.
pub trait DeriveAddress: Send + Sync + std::fmt::Debug {
    fn derive(&self, index: u32) -> Result<Address, String>;
}

/// What deposit-address requests are served from: a deriver per chain that has a deposit
/// xpub configured, and the catalogue (to show deposits in their asset's unit).
#[derive(Debug, Clone)]
pub struct DepositIntake {
    pub derivers: HashMap<Chain, Arc<dyn DeriveAddress>>,
    pub catalogue: AssetCatalogue,
}

impl Default for DepositIntake {
    fn default() -> Self {
        DepositIntake {
            derivers: HashMap::new(),
            catalogue: AssetCatalogue::mainnet(),
        }
    }
}

/// A request as the backend sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    pub chain: String,
    pub reference: String,
}

/// Why an address was not issued; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The chain has no deposit xpub configured.
    #[error("{0}")]
    Unconfigured(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<IssueError> for ApiError {
    fn from(error: IssueError) -> Self {
        match error {
            IssueError::Invalid { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                error.to_string(),
            ),
            IssueError::Unconfigured(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unconfigured", message)
            }
            IssueError::Store(StoreError::LimitReached(message)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "exhausted", message)
            }
            IssueError::Store(error) => error.into(),
        }
    }
}

/// The address of `request.reference` on `request.chain`: the stored one, or a new one at the
/// next free index (`true`: made by this call).
pub async fn issue(
    store: &Store,
    intake: &DepositIntake,
    actor: &str,
    request: &AddressRequest,
) -> Result<(DepositAddressRow, bool), IssueError> {
    let chain: Chain = request
        .chain
        .parse()
        .map_err(|error: domain::ParseChainError| IssueError::Invalid {
            field: "chain",
            message: error.to_string(),
        })?;
    domain::withdrawal::check_reference(&request.reference).map_err(|error| {
        IssueError::Invalid {
            field: "reference",
            message: error.to_string(),
        }
    })?;
    let deriver = intake.derivers.get(&chain).ok_or_else(|| {
        IssueError::Unconfigured(format!(
            "no deposit addresses on {chain}: the control plane has no {chain}_deposit_xpub configured"
        ))
    })?;
    if let Some(row) = store
        .deposit_address_get(chain, &request.reference)
        .await
        .map_err(IssueError::Store)?
    {
        return Ok((row, false));
    }
    for _ in 0..ISSUE_ATTEMPTS_MAX {
        let index = store
            .deposit_address_next_index(chain)
            .await
            .map_err(IssueError::Store)?;
        let address = deriver.derive(index).map_err(|error| {
            tracing::error!(%chain, index, %error, "deriving a deposit address failed");
            IssueError::Store(StoreError::Invalid(format!(
                "deriving deposit address {index} of {chain}: {error}"
            )))
        })?;
        let insert = DepositAddressInsert {
            chain,
            reference: request.reference.clone(),
            index,
            address: address.as_str().to_string(),
            actor: actor.to_string(),
            now: Utc::now(),
        };
        match store
            .deposit_address_insert(&insert)
            .await
            .map_err(IssueError::Store)?
        {
            DepositAddressInserted::Created(row) => {
                tracing::info!(%chain, index, address = %row.address, "deposit address issued");
                metrics::counter!("coinsensei_deposit_addresses_issued_total", "chain" => chain.as_str())
                    .increment(1);
                return Ok((row, true));
            }
            DepositAddressInserted::Existing(row) => return Ok((row, false)),
            DepositAddressInserted::IndexTaken => continue,
        }
    }
    Err(IssueError::Store(StoreError::Conflict(format!(
        "{ISSUE_ATTEMPTS_MAX} indexes of {chain} were taken by racing requests; try again"
    ))))
}

/// A deposit address on the wire.
pub fn address_dto(row: &DepositAddressRow) -> Value {
    json!({
        "id": row.id,
        "chain": row.chain.as_str(),
        "reference": row.reference,
        "address": row.address,
        "index": row.index,
        "created_at": row.created_at.to_rfc3339(),
    })
}

/// The symbol and decimals of a stored asset (`native`, or a token's contract), from the
/// catalogue; None for an asset no longer configured.
pub(crate) fn asset_of(
    catalogue: &AssetCatalogue,
    chain: Chain,
    asset: &str,
) -> Option<(String, u8)> {
    catalogue
        .assets()
        .iter()
        .find(|entry| {
            entry.chain == chain
                && match (&entry.contract, asset) {
                    (None, "native") => true,
                    // Ethereum's hex is case-insensitive (EIP-55 only adds a checksum);
                    // TRON's base58 is not.
                    (Some(contract), asset) if chain == Chain::Ethereum => {
                        contract.eq_ignore_ascii_case(asset)
                    }
                    (Some(contract), asset) => contract == asset,
                    _ => false,
                }
        })
        .map(|entry| (entry.symbol.clone(), entry.decimals))
}

/// A deposit as the API, the CLI's `--json` and the deposit events show it: amounts in the
/// asset's unit from the catalogue's decimals, and in base units.
pub fn deposit_dto(view: &DepositView, catalogue: &AssetCatalogue) -> Value {
    let row = &view.deposit;
    let asset = asset_of(catalogue, row.chain, &row.asset);
    let amount = match &asset {
        Some((_, decimals)) => row.amount.format_decimal(*decimals),
        None => format!("{} base units", row.amount.base_units()),
    };
    json!({
        "id": row.id,
        "chain": row.chain.as_str(),
        "asset": asset.as_ref().map_or(row.asset.as_str(), |(symbol, _)| symbol.as_str()),
        "contract": (row.asset != "native").then_some(row.asset.as_str()),
        "amount": amount,
        "amount_base_units": row.amount.base_units().to_string(),
        "address": row.address,
        "reference": view.reference,
        "sender": row.sender,
        "txid": row.txid,
        "position": row.position,
        "block_number": row.block_number,
        "block_hash": row.block_hash,
        "state": row.state.as_str(),
        "reason": row.reason,
        "seen_at": row.seen_at.to_rfc3339(),
        "credited_at": row.credited_at.map(|at| at.to_rfc3339()),
        "updated_at": row.updated_at.map(|at| at.to_rfc3339()),
    })
}

pub(crate) async fn create_deposit_address(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: AddressRequest = crate::withdrawals::object_body(&headers, &body)?;
    let (row, created) = issue(
        &state.store,
        &state.options.deposits,
        &caller.actor(),
        &request,
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(address_dto(&row))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddressQuery {
    chain: Option<String>,
    reference: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

pub(crate) async fn list_deposit_addresses(
    State(state): State<AppState>,
    query: Result<Query<AddressQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid", error.body_text()))?;
    if let Some(reference) = &query.reference {
        // Postgres refuses a NUL byte that SQLite would take: the same 400 on both.
        crate::api::text_field("reference", reference, domain::Controls::None)?;
    }
    let limit = crate::api::limit_of(query.limit);
    let rows = state
        .store
        .deposit_address_list(&DepositAddressList {
            chain: crate::api::chain_filter(query.chain)?,
            reference: query.reference,
            after_id: query.after,
            limit,
        })
        .await?;
    let next = if rows.len() == limit as usize {
        rows.last().map(|row| row.id)
    } else {
        None
    };
    Ok(Json(json!({
        "deposit_addresses": rows.iter().map(address_dto).collect::<Vec<_>>(),
        "next_after": next,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DepositQuery {
    chain: Option<String>,
    state: Option<String>,
    reference: Option<String>,
    before_id: Option<i64>,
    limit: Option<u32>,
}

/// Reads a deposit state's name.
pub fn parse_state(text: &str) -> Result<DepositState, String> {
    DepositState::ALL
        .into_iter()
        .find(|state| state.as_str() == text)
        .ok_or_else(|| {
            format!(
                "unknown deposit state {text:?}; one of {}",
                DepositState::ALL.map(DepositState::as_str).join(", ")
            )
        })
}

pub(crate) async fn list_deposits(
    State(state): State<AppState>,
    query: Result<Query<DepositQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid", error.body_text()))?;
    if let Some(reference) = &query.reference {
        crate::api::text_field("reference", reference, domain::Controls::None)?;
    }
    let limit = crate::api::limit_of(query.limit);
    let rows = state
        .store
        .deposit_list(&DepositList {
            chain: crate::api::chain_filter(query.chain)?,
            state: query
                .state
                .map(|text| parse_state(&text))
                .transpose()
                .map_err(|error| crate::api::bad_parameter("state", &error))?,
            reference: query.reference,
            before_id: query.before_id,
            limit,
        })
        .await?;
    let next = if rows.len() == limit as usize {
        rows.last().map(|view| view.deposit.id)
    } else {
        None
    };
    let catalogue = &state.options.deposits.catalogue;
    Ok(Json(json!({
        "deposits": rows.iter().map(|view| deposit_dto(view, catalogue)).collect::<Vec<_>>(),
        "next_before_id": next,
    })))
}
