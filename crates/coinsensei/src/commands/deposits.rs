//! `coinsensei deposits`: the deposit address of a reference, the issued addresses, and the
//! deposits, on the configured database or, with `--server`, through the control plane's
//! `/api/v1/deposit-addresses` and `/api/v1/deposits`. Both ways go through the same code
//! (`web::deposits`) and print the same JSON shape. `deposits sweeps` reads consolidation's
//! sweeps and what each cost from the database (no API route yet).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};
use store::{DepositAddressList, DepositList};

use super::remote::Remote;
use crate::config::Settings;

pub async fn address(
    settings: Settings,
    chain: String,
    reference: String,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let request = web::deposits::AddressRequest { chain, reference };
    let result = web::deposits::issue(
        &store,
        &settings.deposit_intake(),
        &super::workers::actor(),
        &request,
    )
    .await;
    store.close().await;
    let (row, created) = result.map_err(|error| anyhow::anyhow!("{error}"))?;
    print_address(&web::deposits::address_dto(&row), created, as_json)
}

fn print_address(address: &Value, created: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(address)?);
    } else {
        let what = if created {
            "issued"
        } else {
            "issued before (the same reference always gets it)"
        };
        eprintln!(
            "{} address of {} {what} (index {})",
            text(address, "chain"),
            text(address, "reference"),
            address["index"]
        );
        println!("{}", text(address, "address"));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn addresses(
    settings: Settings,
    chain: Option<String>,
    reference: Option<String>,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let list = DepositAddressList {
        chain: chain
            .map(|chain| chain.parse())
            .transpose()
            .context("invalid --chain")?,
        reference,
        after_id: None,
        limit,
    };
    let rows = store.deposit_address_list(&list).await;
    store.close().await;
    let addresses: Vec<Value> = rows?.iter().map(web::deposits::address_dto).collect();
    print_addresses(&addresses, as_json)
}

fn print_addresses(addresses: &[Value], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(&addresses)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<6} {:<9} {:<7} {:<44} REFERENCE",
        "ID", "CHAIN", "INDEX", "ADDRESS"
    );
    for address in addresses {
        println!(
            "{:<6} {:<9} {:<7} {:<44} {}",
            address["id"],
            text(address, "chain"),
            address["index"],
            text(address, "address"),
            text(address, "reference")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(
    settings: Settings,
    state: Option<String>,
    chain: Option<String>,
    reference: Option<String>,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let list = DepositList {
        state: state
            .map(|state| web::deposits::parse_state(&state))
            .transpose()
            .map_err(|error| anyhow::anyhow!("invalid --state: {error}"))?,
        chain: chain
            .map(|chain| chain.parse())
            .transpose()
            .context("invalid --chain")?,
        reference,
        before_id: None,
        limit,
    };
    let rows = store.deposit_list(&list).await;
    store.close().await;
    let catalogue = settings.withdrawals.catalogue.clone();
    let deposits: Vec<Value> = rows?
        .iter()
        .map(|view| web::deposits::deposit_dto(view, &catalogue))
        .collect();
    print_list(&deposits, as_json)
}

/// Consolidation's sweeps of `chain`, newest first, with what each cost (the fees of its
/// top-up, delegation, sweep and reclaim, in the native coin's base units) and the mean cost
/// per path (on TRON: energy by delegation, or by TRX topped up and burned).
pub async fn sweeps(
    settings: Settings,
    chain: String,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let chain: domain::Chain = chain.parse().context("invalid --chain")?;
    let store = super::connect_existing(&settings).await?;
    let rows = store.sweep_list(chain, None, limit).await;
    store.close().await;
    let units = |amount: Option<domain::Amount>| amount.map(|a| a.base_units().to_string());
    let sweeps: Vec<Value> = rows?
        .iter()
        .map(|row| {
            json!({
                "id": row.id,
                "chain": row.chain.as_str(),
                "address": row.address,
                "asset": row.asset,
                "amount_base_units": row.amount.base_units().to_string(),
                "destination": row.destination,
                "state": row.state.as_str(),
                "price_per_gas": row.price_per_gas.to_string(),
                "gas_limit": row.gas_limit,
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
                "created_at": row.created_at.to_rfc3339(),
                "updated_at": row.updated_at.to_rfc3339(),
            })
        })
        .collect();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&sweeps)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<6} {:<10} {:<42} {:<42} {:>26} {:>20} TXID",
        "ID", "STATE", "ADDRESS", "ASSET", "AMOUNT", "COST"
    );
    // (sweeps, total cost) per path, for the swept ones.
    let mut paths: std::collections::BTreeMap<&str, (u128, u128)> = Default::default();
    for sweep in &sweeps {
        println!(
            "{:<6} {:<10} {:<42} {:<42} {:>26} {:>20} {}",
            sweep["id"].to_string(),
            text(sweep, "state"),
            text(sweep, "address"),
            text(sweep, "asset"),
            text(sweep, "amount_base_units"),
            text(sweep, "cost"),
            text(sweep, "sweep_txid"),
        );
        if let Some(source) = sweep["energy_source"].as_str() {
            println!(
                "       energy {} by {source}, bandwidth {} bytes; reclaim {}",
                sweep["energy_used"],
                sweep["bandwidth_used"],
                sweep["reclaim_state"].as_str().unwrap_or("-"),
            );
        }
        if let Some(error) = sweep["error"].as_str() {
            println!("       error: {error}");
        }
        if sweep["state"] == "swept" {
            let path = match (
                sweep["asset"].as_str(),
                sweep["energy_source"].as_str(),
                sweep["top_up_txid"].is_null(),
            ) {
                (Some("native"), _, _) => "native",
                (_, Some("delegation"), _) => "token, energy delegated",
                (_, Some("burn"), _) => "token, energy burned from a TRX top-up",
                (_, _, false) => "token with a gas top-up",
                (_, _, true) => "token, gas held",
            };
            let cost: u128 = text(sweep, "cost").parse().unwrap_or(0);
            let entry = paths.entry(path).or_default();
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(cost);
        }
    }
    for (path, (count, total)) in paths {
        println!(
            "{path}: {count} swept, {total} in fees, {} per sweep",
            total / count
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or("-").to_string()
}

fn print_list(deposits: &[Value], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(&deposits)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<6} {:<9} {:<6} {:>22} {:<10} {:<10} {:<20} TXID",
        "ID", "CHAIN", "ASSET", "AMOUNT", "STATE", "BLOCK", "REFERENCE"
    );
    for deposit in deposits {
        let txid = text(deposit, "txid");
        let short = if txid.len() > 20 {
            format!("{}…", &txid[..20])
        } else {
            txid
        };
        println!(
            "{:<6} {:<9} {:<6} {:>22} {:<10} {:<10} {:<20} {short}:{}",
            deposit["id"],
            text(deposit, "chain"),
            text(deposit, "asset"),
            text(deposit, "amount"),
            text(deposit, "state"),
            deposit["block_number"],
            text(deposit, "reference"),
            deposit["position"],
        );
        if let Some(reason) = deposit["reason"].as_str() {
            println!("       ignored: {reason}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The same commands through the control plane's API.
pub mod remote {
    use super::*;

    pub async fn address(
        remote: &Remote,
        chain: String,
        reference: String,
        as_json: bool,
    ) -> anyhow::Result<ExitCode> {
        let body = json!({ "chain": chain, "reference": reference });
        let (status, address) = remote
            .post_answered(&["api", "v1", "deposit-addresses"], &body)
            .await?;
        print_address(&address, status == reqwest::StatusCode::CREATED, as_json)
    }

    pub async fn addresses(
        remote: &Remote,
        chain: Option<String>,
        reference: Option<String>,
        limit: u32,
        as_json: bool,
    ) -> anyhow::Result<ExitCode> {
        let mut query = vec![("limit", limit.to_string())];
        for (key, value) in [("chain", chain), ("reference", reference)] {
            if let Some(value) = value {
                query.push((key, value));
            }
        }
        let answer = remote
            .get(&["api", "v1", "deposit-addresses"], &query)
            .await?;
        let addresses = answer["deposit_addresses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        print_addresses(&addresses, as_json)
    }

    pub async fn list(
        remote: &Remote,
        state: Option<String>,
        chain: Option<String>,
        reference: Option<String>,
        limit: u32,
        as_json: bool,
    ) -> anyhow::Result<ExitCode> {
        let mut query = vec![("limit", limit.to_string())];
        for (key, value) in [("state", state), ("chain", chain), ("reference", reference)] {
            if let Some(value) = value {
                query.push((key, value));
            }
        }
        let answer = remote.get(&["api", "v1", "deposits"], &query).await?;
        let deposits = answer["deposits"].as_array().cloned().unwrap_or_default();
        print_list(&deposits, as_json)
    }
}
