//! `coinsensei deposits`: the deposit address of a reference, the issued addresses, and the
//! deposits, on the configured database or, with `--server`, through the control plane's
//! `/api/v1/deposit-addresses` and `/api/v1/deposits`. Both ways go through the same code
//! (`web::deposits`) and print the same JSON shape. `deposits sweeps` lists consolidation's
//! sweeps and what each cost, from the database or `/api/admin/sweeps` (`web::sweeps`).

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

/// Consolidation's sweeps, newest first (every chain, or `chain`; every state, or `state`),
/// with what each cost (the fees of its top-up, delegation, sweep and reclaim, in the native
/// coin's base units) and the mean cost per chain and path of the swept ones (on TRON: energy
/// by delegation, or by TRX topped up and burned). The same rows as `GET /api/admin/sweeps`.
pub async fn sweeps(
    settings: Settings,
    chain: Option<String>,
    state: Option<String>,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let list = store::SweepList {
        chain: chain
            .map(|text| text.parse::<domain::Chain>())
            .transpose()
            .context("invalid --chain")?,
        state: state
            .map(|text| web::sweeps::parse_state(&text))
            .transpose()
            .map_err(|error| anyhow::anyhow!("invalid --state: {error}"))?,
        before_id: None,
        limit,
    };
    let store = super::connect_existing(&settings).await?;
    let rows = store.sweep_search(&list).await;
    store.close().await;
    let catalogue = settings.withdrawals.catalogue.clone();
    let now = chrono::Utc::now();
    let sweeps: Vec<Value> = rows?
        .iter()
        .map(|row| web::sweeps::sweep_dto(row, &catalogue, now))
        .collect();
    print_sweeps(&sweeps, as_json)
}

fn print_sweeps(sweeps: &[Value], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(&sweeps)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<6} {:<9} {:<10} {:<42} {:<6} {:>26} {:>20} TXID",
        "ID", "CHAIN", "STATE", "ADDRESS", "ASSET", "AMOUNT", "COST"
    );
    // (sweeps, total cost) per chain and path, for the swept ones.
    let mut paths: std::collections::BTreeMap<(String, String), (u128, u128)> = Default::default();
    for sweep in sweeps {
        println!(
            "{:<6} {:<9} {:<10} {:<42} {:<6} {:>26} {:>20} {}",
            sweep["id"].to_string(),
            text(sweep, "chain"),
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
            let cost: u128 = text(sweep, "cost").parse().unwrap_or(0);
            let entry = paths
                .entry((text(sweep, "chain"), text(sweep, "path")))
                .or_default();
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(cost);
        }
    }
    for ((chain, path), (count, total)) in paths {
        println!(
            "{chain} {path}: {count} swept, {total} in fees, {} per sweep",
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

    pub async fn sweeps(
        remote: &Remote,
        chain: Option<String>,
        state: Option<String>,
        limit: u32,
        as_json: bool,
    ) -> anyhow::Result<ExitCode> {
        let mut query = vec![("limit", limit.to_string())];
        for (key, value) in [("chain", chain), ("state", state)] {
            if let Some(value) = value {
                query.push((key, value));
            }
        }
        let answer = remote.get(&["api", "admin", "sweeps"], &query).await?;
        let sweeps = answer["sweeps"].as_array().cloned().unwrap_or_default();
        print_sweeps(&sweeps, as_json)
    }
}
