//! `coinsensei events`: the webhook deliveries of the outbox's events, and replaying them, on
//! the configured database or, with `--server`, through `/api/admin/webhooks/deliveries`.
//! Both ways print the same JSON shape (`web::webhooks::delivery`).

use std::process::ExitCode;

use anyhow::bail;
use chrono::Utc;
use serde_json::{Value, json};
use store::{DeliveryList, DeliveryState, ReplaySelect};

use super::remote::Remote;
use crate::config::Settings;

/// What `events list` asks for.
#[derive(Debug, Clone)]
pub struct ListArgs {
    pub endpoint: Option<String>,
    pub state: Option<String>,
    pub subject: Option<String>,
    pub limit: u32,
    pub json: bool,
}

/// What `events replay` asks for.
#[derive(Debug, Clone)]
pub struct ReplayArgs {
    pub ids: Vec<i64>,
    pub failed: bool,
    pub endpoint: Option<String>,
}

fn select(args: &ReplayArgs) -> anyhow::Result<ReplaySelect> {
    match (args.ids.is_empty(), args.failed) {
        (false, false) if args.endpoint.is_none() => Ok(ReplaySelect::Ids(args.ids.clone())),
        (true, true) => Ok(ReplaySelect::Failed {
            endpoint: args.endpoint.clone(),
        }),
        (false, false) => bail!("--endpoint goes with --failed, not with delivery ids"),
        _ => bail!("name the deliveries to replay (their ids), or --failed for every failed one"),
    }
}

fn state_of(text: Option<&str>) -> anyhow::Result<Option<DeliveryState>> {
    text.map(|text| {
        DeliveryState::parse(text).ok_or_else(|| {
            anyhow::anyhow!("--state: {text:?} is not one of pending, delivered, failed")
        })
    })
    .transpose()
}

pub async fn list(settings: Settings, args: ListArgs) -> anyhow::Result<ExitCode> {
    let state = state_of(args.state.as_deref())?;
    let store = super::connect_existing(&settings).await?;
    let listed = store
        .webhook_deliveries(&DeliveryList {
            endpoint: args.endpoint.clone(),
            state,
            subject: args.subject.clone(),
            before: None,
            limit: args.limit,
        })
        .await;
    let counts = store.webhook_counts().await;
    store.close().await;
    let deliveries: Vec<Value> = listed?.iter().map(web::webhooks::delivery).collect();
    let counts: Vec<Value> = counts?
        .iter()
        .map(|count| json!({"endpoint": count.endpoint, "state": count.state.as_str(), "count": count.count}))
        .collect();
    print_list(&deliveries, &counts, args.json)
}

pub async fn replay(settings: Settings, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let select = select(&args)?;
    let store = super::connect_existing(&settings).await?;
    let replayed = store
        .webhook_replay(&select, &super::workers::actor(), Utc::now())
        .await;
    store.close().await;
    print_replayed(replayed?)
}

fn print_replayed(replayed: u64) -> anyhow::Result<ExitCode> {
    println!(
        "{replayed} deliver{} set back to pending; the control plane posts {} again now",
        if replayed == 1 { "y" } else { "ies" },
        if replayed == 1 { "it" } else { "them" },
    );
    Ok(ExitCode::SUCCESS)
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("-")
}

fn print_list(deliveries: &[Value], counts: &[Value], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(deliveries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if deliveries.is_empty() {
        println!("no deliveries");
    } else {
        println!(
            "{:>8}  {:<16} {:<10} {:>8}  {:<26} {:<20} {:<36}  LAST ERROR",
            "ID", "ENDPOINT", "STATE", "ATTEMPTS", "EVENT", "SUBJECT", "EVENT ID"
        );
        for delivery in deliveries {
            let event = &delivery["event"];
            println!(
                "{:>8}  {:<16} {:<10} {:>8}  {:<26} {:<20} {:<36}  {}",
                delivery["id"],
                text(delivery, "endpoint"),
                text(delivery, "state"),
                delivery["attempts"],
                text(event, "type"),
                text(event, "subject"),
                text(event, "id"),
                text(delivery, "last_error"),
            );
        }
    }
    let summary: Vec<String> = counts
        .iter()
        .map(|count| {
            format!(
                "{} {}: {}",
                text(count, "endpoint"),
                text(count, "state"),
                count["count"]
            )
        })
        .collect();
    if !summary.is_empty() {
        println!("all deliveries: {}", summary.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

pub mod remote {
    use super::*;

    pub async fn list(remote: &Remote, args: ListArgs) -> anyhow::Result<ExitCode> {
        state_of(args.state.as_deref())?;
        let mut query = vec![("limit", args.limit.to_string())];
        for (key, value) in [
            ("endpoint", args.endpoint),
            ("state", args.state),
            ("subject", args.subject),
        ] {
            if let Some(value) = value {
                query.push((key, value));
            }
        }
        let answer = remote
            .get(&["api", "admin", "webhooks", "deliveries"], &query)
            .await?;
        let deliveries = answer["deliveries"].as_array().cloned().unwrap_or_default();
        let counts = answer["counts"].as_array().cloned().unwrap_or_default();
        print_list(&deliveries, &counts, args.json)
    }

    pub async fn replay(remote: &Remote, args: ReplayArgs) -> anyhow::Result<ExitCode> {
        let body = match select(&args)? {
            ReplaySelect::Ids(ids) => json!({ "ids": ids }),
            ReplaySelect::Failed { endpoint } => json!({ "failed": true, "endpoint": endpoint }),
        };
        let answer = remote
            .post(
                &["api", "admin", "webhooks", "deliveries", "replay"],
                Some(&body),
            )
            .await?;
        print_replayed(answer["replayed"].as_u64().unwrap_or(0))
    }
}
