//! `coinsensei withdrawals destinations`: allowlist mode's registered destinations, on the
//! configured database (the local operator acts as `cli:USER@HOST`) or, with `--server`,
//! through `/api/v1/withdrawal-destinations` as the token in `COINSENSEI_TOKEN` (admin to add
//! or remove). Both ways go through `web::destinations` and print the same JSON shape.

use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use serde_json::{Value, json};
use store::DestinationList;

use super::remote::Remote;
use crate::config::Settings;

/// What `destinations add` asks for.
#[derive(Debug, Clone)]
pub struct Add {
    pub chain: String,
    pub address: String,
    pub label: String,
    pub reference: Option<String>,
}

pub async fn add(settings: Settings, add: Add, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let result = web::destinations::register(
        &store,
        &settings.intake(),
        &super::workers::actor(),
        &web::destinations::RegisterRequest {
            chain: add.chain,
            address: add.address,
            label: add.label,
            reference: add.reference,
        },
    )
    .await;
    store.close().await;
    let row = result.map_err(|error| anyhow::anyhow!("{}", error.message()))?;
    print_added(&web::destinations::dto(&row, Utc::now()), as_json)
}

pub async fn list(
    settings: Settings,
    chain: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let list = DestinationList {
        chain: chain
            .map(|chain| chain.parse())
            .transpose()
            .context("invalid --chain")?,
        before_id: None,
        limit: domain::limits::LIST_LIMIT_MAX,
    };
    let rows = store.withdrawal_destination_list(&list).await;
    store.close().await;
    let now = Utc::now();
    let destinations: Vec<Value> = rows?
        .iter()
        .map(|row| web::destinations::dto(row, now))
        .collect();
    print_list(&destinations, as_json)
}

pub async fn remove(settings: Settings, id: i64, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let result = web::destinations::remove(&store, &super::workers::actor(), id).await;
    store.close().await;
    let row = result.map_err(|error| anyhow::anyhow!("{}", error.message()))?;
    print_removed(&web::destinations::dto(&row, Utc::now()), as_json)
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("-")
}

fn print_added(destination: &Value, as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(destination)?);
    } else {
        println!(
            "destination {} registered: {} {} ({}); usable from {}",
            destination["id"],
            text(destination, "chain"),
            text(destination, "address"),
            text(destination, "label"),
            text(destination, "usable_at"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_removed(destination: &Value, as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(destination)?);
    } else {
        println!(
            "destination {} removed: {} {}",
            destination["id"],
            text(destination, "chain"),
            text(destination, "address"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(destinations: &[Value], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!(destinations))?);
        return Ok(ExitCode::SUCCESS);
    }
    if destinations.is_empty() {
        println!(
            "no registered destinations (see `coinsensei withdrawals destinations add --help`)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>6}  {:<8}  {:<44}  {:<24}  {:<16}  USABLE",
        "ID", "CHAIN", "ADDRESS", "LABEL", "REFERENCE"
    );
    for destination in destinations {
        let usable = if destination["usable"] == true {
            "yes".to_string()
        } else {
            format!("from {}", text(destination, "usable_at"))
        };
        println!(
            "{:>6}  {:<8}  {:<44}  {:<24}  {:<16}  {usable}",
            destination["id"],
            text(destination, "chain"),
            text(destination, "address"),
            text(destination, "label"),
            destination["reference"].as_str().unwrap_or("any"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The same commands through the control plane's API.
pub mod remote {
    use super::*;

    pub async fn add(remote: &Remote, add: Add, as_json: bool) -> anyhow::Result<ExitCode> {
        let mut body = json!({
            "chain": add.chain,
            "address": add.address,
            "label": add.label,
        });
        if let Some(reference) = add.reference {
            body["reference"] = json!(reference);
        }
        let destination = remote
            .post(&["api", "v1", "withdrawal-destinations"], Some(&body))
            .await?;
        print_added(&destination, as_json)
    }

    pub async fn list(
        remote: &Remote,
        chain: Option<String>,
        as_json: bool,
    ) -> anyhow::Result<ExitCode> {
        let mut query = vec![("limit", domain::limits::LIST_LIMIT_MAX.to_string())];
        if let Some(chain) = chain {
            query.push(("chain", chain));
        }
        let answer = remote
            .get(&["api", "v1", "withdrawal-destinations"], &query)
            .await?;
        let destinations = answer["destinations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        print_list(&destinations, as_json)
    }

    pub async fn remove(remote: &Remote, id: i64, as_json: bool) -> anyhow::Result<ExitCode> {
        let text_id = id.to_string();
        let destination = remote
            .post(
                &["api", "v1", "withdrawal-destinations", &text_id, "remove"],
                None,
            )
            .await?;
        print_removed(&destination, as_json)
    }
}
