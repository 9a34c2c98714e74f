//! Withdrawal policies through the API: `GET /api/admin/withdrawal-policies` (viewer and
//! up) shows what each asset's withdrawals keep to now and where it comes from; `PUT
//! /api/admin/withdrawal-policies/{chain}/{asset}` (admin) replaces an asset's intake rules
//! (min, max, approval_above, daily_limit, daily_limit_per_reference), checked as the
//! configuration's are, effective for the next request; `DELETE` gives the asset back to its
//! `[[withdrawal_policy]]`. Every change is audited with the policy before and after
//! (`withdrawal_policy.set`, `withdrawal_policy.clear`). The hot wallet's `floor` stays the
//! configuration's: the withdrawal workers apply it, and they read it at their start.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use domain::{Amount, Chain};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{ApiError, Caller};
use crate::withdrawals::{AssetPolicy, Intake, object_body};

/// A policy as an admin sends it: amounts in the asset's unit ("1.5"), each absent for no
/// such rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    pub min: Option<String>,
    pub max: Option<String>,
    pub approval_above: Option<String>,
    pub daily_limit: Option<String>,
    pub daily_limit_per_reference: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

fn rules(policy: &AssetPolicy) -> [(&'static str, Option<&Amount>); 5] {
    [
        ("min", policy.min.as_ref()),
        ("max", policy.max.as_ref()),
        ("approval_above", policy.approval_above.as_ref()),
        ("daily_limit", policy.daily_limit.as_ref()),
        (
            "daily_limit_per_reference",
            policy.daily_limit_per_reference.as_ref(),
        ),
    ]
}

/// How the store keeps a policy set through the API: base units as decimal strings.
fn to_stored(policy: &AssetPolicy) -> Value {
    let mut stored = serde_json::Map::new();
    for (field, amount) in rules(policy) {
        stored.insert(
            field.into(),
            amount.map_or(Value::Null, |amount| json!(amount.base_units().to_string())),
        );
    }
    Value::Object(stored)
}

/// A stored policy read back, with the configuration's floor (the API does not set it);
/// None when it cannot be read (then the configuration's applies, and a warning says why).
pub fn from_stored(
    chain: Chain,
    symbol: &str,
    configured: Option<&AssetPolicy>,
    stored: &Value,
) -> Option<AssetPolicy> {
    let amount = |field: &str| -> Result<Option<Amount>, String> {
        match &stored[field] {
            Value::Null => Ok(None),
            Value::String(text) => text
                .parse::<ruint::aliases::U256>()
                .map(|units| Some(Amount::from_base_units(units)))
                .map_err(|error| format!("{field}: {error}")),
            other => Err(format!("{field}: {other}")),
        }
    };
    let read = || -> Result<AssetPolicy, String> {
        Ok(AssetPolicy {
            chain,
            asset: symbol.to_string(),
            min: amount("min")?,
            max: amount("max")?,
            approval_above: amount("approval_above")?,
            floor: configured.and_then(|policy| policy.floor),
            daily_limit: amount("daily_limit")?,
            daily_limit_per_reference: amount("daily_limit_per_reference")?,
        })
    };
    match read() {
        Ok(policy) => Some(policy),
        Err(error) => {
            tracing::warn!(%chain, asset = symbol, %error, "a stored withdrawal policy cannot be read; the configuration's applies");
            configured.cloned()
        }
    }
}

/// A policy as the API shows it: each rule in the asset's unit and in base units.
fn dto(
    chain: Chain,
    symbol: &str,
    decimals: u8,
    policy: Option<&AssetPolicy>,
    set: Option<&store::PolicyOverride>,
) -> Value {
    let mut body = json!({
        "chain": chain.as_str(),
        "asset": symbol,
        "source": if set.is_some() { "api" } else if policy.is_some() { "config" } else { "none" },
        "updated_by": set.map(|set| set.updated_by.clone()),
        "updated_at": set.map(|set| set.updated_at.to_rfc3339()),
    });
    let empty = AssetPolicy {
        chain,
        asset: symbol.to_string(),
        min: None,
        max: None,
        approval_above: None,
        floor: None,
        daily_limit: None,
        daily_limit_per_reference: None,
    };
    let policy = policy.unwrap_or(&empty);
    for (field, amount) in rules(policy)
        .into_iter()
        .chain([("floor", policy.floor.as_ref())])
    {
        body[field] = match amount {
            None => Value::Null,
            Some(amount) => json!({
                "amount": amount.format_decimal(decimals),
                "base_units": amount.base_units().to_string(),
            }),
        };
    }
    body
}

/// The chain and catalogue asset a path names, or 404.
fn asset_of(intake: &Intake, chain: &str, asset: &str) -> Result<(Chain, String, u8), ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no asset {asset:?} on chain {chain:?} in the catalogue"),
        )
    };
    let chain: Chain = chain.parse().map_err(|_| not_found())?;
    let found = intake
        .catalogue
        .get(chain, asset)
        .map_err(|_| not_found())?;
    Ok((chain, found.symbol.clone(), found.decimals))
}

/// `GET /api/admin/withdrawal-policies`: every catalogue asset's policy now.
pub(crate) async fn list_policies(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let intake = &state.options.intake;
    let set = state.store.policy_overrides().await?;
    let mut policies = Vec::new();
    for asset in intake.catalogue.assets() {
        let found = set
            .iter()
            .find(|each| each.chain == asset.chain && each.asset == asset.symbol);
        let policy = intake
            .policy_now(&state.store, asset.chain, &asset.symbol)
            .await?;
        policies.push(dto(
            asset.chain,
            &asset.symbol,
            asset.decimals,
            policy.as_ref(),
            found,
        ));
    }
    Ok(Json(json!({ "policies": policies })))
}

/// `PUT /api/admin/withdrawal-policies/{chain}/{asset}`: replaces the asset's intake rules.
pub(crate) async fn set_policy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((chain, asset)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let intake = &state.options.intake;
    let (chain, symbol, decimals) = asset_of(intake, &chain, &asset)?;
    let request: PolicyRequest = object_body(&headers, &body)?;
    let amount = |field: &str, text: &Option<String>| -> Result<Option<Amount>, ApiError> {
        text.as_deref()
            .map(|text| {
                Amount::parse_positive(text, decimals).map_err(|error| {
                    invalid(format!(
                        "{field}: {text:?}: {error} (a positive amount in {symbol})"
                    ))
                })
            })
            .transpose()
    };
    let before = intake.policy_now(&state.store, chain, &symbol).await?;
    let policy = AssetPolicy {
        chain,
        asset: symbol.clone(),
        min: amount("min", &request.min)?,
        max: amount("max", &request.max)?,
        approval_above: amount("approval_above", &request.approval_above)?,
        floor: intake
            .policies
            .iter()
            .find(|p| p.chain == chain && p.asset == symbol)
            .and_then(|p| p.floor),
        daily_limit: amount("daily_limit", &request.daily_limit)?,
        daily_limit_per_reference: amount(
            "daily_limit_per_reference",
            &request.daily_limit_per_reference,
        )?,
    };
    if let (Some(min), Some(max)) = (&policy.min, &policy.max)
        && min.base_units() > max.base_units()
    {
        return Err(invalid("min is above max"));
    }
    state
        .store
        .policy_override_write(
            chain,
            &symbol,
            Some(&to_stored(&policy)),
            &before.as_ref().map_or(Value::Null, to_stored),
            &caller.actor(),
            Utc::now(),
        )
        .await?;
    tracing::info!(%chain, asset = %symbol, "a withdrawal policy was set through the API");
    let set = state.store.policy_override_get(chain, &symbol).await?;
    Ok(Json(dto(
        chain,
        &symbol,
        decimals,
        Some(&policy),
        set.as_ref(),
    )))
}

/// `DELETE /api/admin/withdrawal-policies/{chain}/{asset}`: back to the configuration's.
pub(crate) async fn clear_policy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((chain, asset)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let intake = &state.options.intake;
    let (chain, symbol, decimals) = asset_of(intake, &chain, &asset)?;
    let Some(set) = state.store.policy_override_get(chain, &symbol).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{chain}/{symbol} has no policy set through the API"),
        ));
    };
    state
        .store
        .policy_override_write(
            chain,
            &symbol,
            None,
            &set.policy,
            &caller.actor(),
            Utc::now(),
        )
        .await?;
    let configured = intake
        .policies
        .iter()
        .find(|p| p.chain == chain && p.asset == symbol);
    Ok(Json(dto(chain, &symbol, decimals, configured, None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_survives_the_store() {
        let policy = AssetPolicy {
            chain: Chain::Ethereum,
            asset: "ETH".into(),
            min: Some(Amount::from_u128(5)),
            max: None,
            approval_above: Some(Amount::from_u128(10u128.pow(30))),
            floor: Some(Amount::from_u128(7)),
            daily_limit: None,
            daily_limit_per_reference: Some(Amount::from_u128(1)),
        };
        let stored = to_stored(&policy);
        assert_eq!(
            stored["approval_above"],
            json!("1000000000000000000000000000000")
        );
        assert_eq!(stored["max"], Value::Null);
        assert_eq!(stored.as_object().unwrap().len(), 5);
        let back = from_stored(Chain::Ethereum, "ETH", Some(&policy), &stored).unwrap();
        assert_eq!(back, policy, "the floor comes from the configuration");
        // Unreadable: the configuration's applies.
        let broken = json!({"min": 5});
        assert_eq!(
            from_stored(Chain::Ethereum, "ETH", Some(&policy), &broken),
            Some(policy)
        );
    }
}
