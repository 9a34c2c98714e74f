//! `coinsensei withdrawals`: create, list, show and cancel withdrawals, on the configured
//! database or, with `--server`, through the control plane's `/api/v1/withdrawals`. Both ways
//! go through the same checks (`web::withdrawals::create`) and print the same JSON shape.

use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::Utc;
use serde_json::{Value, json};
use store::{WithdrawalCreated, WithdrawalList};

use super::remote::Remote;
use crate::config::Settings;

/// What `withdrawals create` asks for.
#[derive(Debug, Clone)]
pub struct Create {
    pub chain: String,
    pub asset: String,
    pub to: String,
    pub amount: String,
    pub reference: String,
    /// The request's idempotency key; a fresh random one when not given (printed, so the
    /// same withdrawal can be asked for again).
    pub idempotency_key: Option<String>,
}

impl Create {
    fn key(&self) -> String {
        self.idempotency_key.clone().unwrap_or_else(|| {
            let random: u128 = rand::random();
            format!("cli-{random:032x}")
        })
    }

    fn request(&self) -> web::withdrawals::CreateRequest {
        web::withdrawals::CreateRequest {
            chain: self.chain.clone(),
            asset: self.asset.clone(),
            to: self.to.clone(),
            amount: self.amount.clone(),
            reference: self.reference.clone(),
        }
    }
}

pub async fn create(settings: Settings, create: Create, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let queue = super::open_queue(&settings, &store).await?;
    let intake = settings.intake();
    let key = create.key();
    let result = web::withdrawals::create(
        &store,
        queue.as_ref(),
        &intake,
        &super::workers::actor(),
        &key,
        &create.request(),
    )
    .await;
    store.close().await;
    let created = result.map_err(|error| anyhow::anyhow!("{error}"))?;
    let fresh = matches!(created, WithdrawalCreated::Created(_));
    print_created(
        &web::withdrawals::dto(created.row(), &intake),
        fresh,
        &key,
        as_json,
    )
}

fn print_created(
    withdrawal: &Value,
    fresh: bool,
    key: &str,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(withdrawal)?);
    } else {
        let what = if fresh {
            "created"
        } else {
            "exists already (same key, same request)"
        };
        println!(
            "withdrawal {} {what}; idempotency key {key}",
            withdrawal["id"]
        );
        print_one(withdrawal);
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
    let list = WithdrawalList {
        state: state
            .map(|state| state.parse())
            .transpose()
            .context("invalid --state")?,
        chain: chain
            .map(|chain| chain.parse())
            .transpose()
            .context("invalid --chain")?,
        reference,
        before_id: None,
        limit,
    };
    let rows = store.withdrawal_list(&list).await;
    store.close().await;
    let intake = settings.intake();
    let withdrawals: Vec<Value> = rows?
        .iter()
        .map(|row| web::withdrawals::dto(row, &intake))
        .collect();
    print_list(&withdrawals, as_json)
}

pub async fn show(settings: Settings, id: i64, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let row = store.withdrawal_get(id).await;
    let audit = store
        .audit_list(&store::AuditList {
            target: Some(store::payout_key(id)),
            limit: 100,
            ..store::AuditList::default()
        })
        .await;
    store.close().await;
    let Some(row) = row? else {
        bail!("no withdrawal {id} (see `coinsensei withdrawals list`)");
    };
    let mut withdrawal = web::withdrawals::dto(&row, &settings.intake());
    withdrawal["audit"] = Value::Array(audit?.iter().rev().map(web::dto::audit).collect());
    print_show(&withdrawal, as_json)
}

pub async fn cancel(settings: Settings, id: i64, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let result = store
        .withdrawal_cancel(id, &super::workers::actor(), Utc::now())
        .await;
    store.close().await;
    let row = result.map_err(|error| anyhow::anyhow!("{error}"))?;
    let withdrawal = web::withdrawals::dto(&row, &settings.intake());
    if as_json {
        println!("{}", serde_json::to_string_pretty(&withdrawal)?);
    } else {
        println!("withdrawal {id} canceled");
    }
    Ok(ExitCode::SUCCESS)
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("-")
}

fn print_one(withdrawal: &Value) {
    println!(
        "  {} {} {} to {} (reference {})",
        text(withdrawal, "chain"),
        text(withdrawal, "amount"),
        text(withdrawal, "asset"),
        text(withdrawal, "to"),
        text(withdrawal, "reference"),
    );
    println!("  state: {}", text(withdrawal, "state"));
    if let Some(txid) = withdrawal["txid"].as_str() {
        println!(
            "  txid: {txid} ({} confirmations)",
            withdrawal["confirmations"]
        );
    }
    if let Some(error) = withdrawal["error"].as_str() {
        println!("  reason: {error}");
    }
}

fn print_show(withdrawal: &Value, as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(withdrawal)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("withdrawal {}", withdrawal["id"]);
    print_one(withdrawal);
    println!(
        "  created {}, updated {}",
        text(withdrawal, "created_at"),
        text(withdrawal, "updated_at")
    );
    if let Some(entries) = withdrawal["audit"].as_array() {
        println!("  history:");
        for entry in entries {
            println!(
                "    {} {} by {} {}",
                text(entry, "at"),
                text(entry, "action"),
                text(entry, "actor"),
                entry["details"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(withdrawals: &[Value], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(withdrawals)?);
        return Ok(ExitCode::SUCCESS);
    }
    if withdrawals.is_empty() {
        println!("no withdrawals (see `coinsensei withdrawals create --help`)");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>8}  {:<8}  {:<6}  {:>24}  {:<14}  {:<44}  REFERENCE",
        "ID", "CHAIN", "ASSET", "AMOUNT", "STATE", "TO"
    );
    for withdrawal in withdrawals {
        println!(
            "{:>8}  {:<8}  {:<6}  {:>24}  {:<14}  {:<44}  {}",
            withdrawal["id"],
            text(withdrawal, "chain"),
            text(withdrawal, "asset"),
            text(withdrawal, "amount"),
            text(withdrawal, "state"),
            text(withdrawal, "to"),
            text(withdrawal, "reference"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The same commands through the control plane's API.
pub mod remote {
    use super::*;

    pub async fn create(
        remote: &Remote,
        create: Create,
        as_json: bool,
    ) -> anyhow::Result<ExitCode> {
        let key = create.key();
        let body = json!({
            "chain": create.chain,
            "asset": create.asset,
            "to": create.to,
            "amount": create.amount,
            "reference": create.reference,
        });
        let (status, withdrawal) = remote
            .post_keyed(&["api", "v1", "withdrawals"], &body, &key)
            .await?;
        print_created(
            &withdrawal,
            status == reqwest::StatusCode::CREATED,
            &key,
            as_json,
        )
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
        let answer = remote.get(&["api", "v1", "withdrawals"], &query).await?;
        let withdrawals = answer["withdrawals"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        print_list(&withdrawals, as_json)
    }

    pub async fn show(remote: &Remote, id: i64, as_json: bool) -> anyhow::Result<ExitCode> {
        let id = id.to_string();
        let withdrawal = remote.get(&["api", "v1", "withdrawals", &id], &[]).await?;
        print_show(&withdrawal, as_json)
    }

    /// `withdrawals approve|reject ID` against the server, as the token in use.
    pub async fn decide(
        remote: &Remote,
        id: i64,
        approve: bool,
        reason: Option<String>,
        as_json: bool,
    ) -> anyhow::Result<ExitCode> {
        let text_id = id.to_string();
        let action = if approve { "approve" } else { "reject" };
        let body = serde_json::json!({ "reason": reason });
        let withdrawal = remote
            .post(&["api", "v1", "withdrawals", &text_id, action], Some(&body))
            .await?;
        if as_json {
            println!("{}", serde_json::to_string_pretty(&withdrawal)?);
        } else {
            let approvals = withdrawal["approvals"].as_array().map_or(0, |all| {
                all.iter()
                    .filter(|each| each["decision"] == "approve")
                    .count()
            });
            println!(
                "withdrawal {id}: {}d; now {} ({approvals} approval(s))",
                action,
                text(&withdrawal, "state")
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `withdrawals review ID`: asks, then waits up to `wait` seconds for the worker's check.
    pub async fn review(
        remote: &Remote,
        id: i64,
        action: &str,
        txid: Option<String>,
        reason: String,
        wait: u64,
        as_json: bool,
    ) -> anyhow::Result<ExitCode> {
        let text_id = id.to_string();
        let body = serde_json::json!({ "action": action, "txid": txid, "reason": reason });
        let mut review = remote
            .post(
                &["api", "v1", "withdrawals", &text_id, "review"],
                Some(&body),
            )
            .await?;
        let review_id = review["id"].as_i64().unwrap_or_default();
        if !as_json {
            eprintln!(
                "review {review_id} ({action}) asked; the {} withdrawal worker checks it on the chain",
                text(&review, "chain")
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
        while review["state"] == "requested" && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let all = remote
                .get(&["api", "v1", "withdrawals", &text_id, "reviews"], &[])
                .await?;
            if let Some(found) = all["reviews"]
                .as_array()
                .and_then(|all| all.iter().find(|each| each["id"] == review_id))
            {
                review = found.clone();
            }
        }
        if as_json {
            println!("{}", serde_json::to_string_pretty(&review)?);
        } else {
            match review["state"].as_str() {
                Some("applied") => {
                    println!("review {review_id} applied: {}", text(&review, "outcome"))
                }
                Some("refused") => println!(
                    "review {review_id} refused, nothing changed: {}",
                    text(&review, "outcome")
                ),
                _ => println!(
                    "review {review_id} is still waiting for the worker's check (is the {} withdrawal worker running?); see `coinsensei withdrawals show {id}`",
                    text(&review, "chain")
                ),
            }
        }
        Ok(match review["state"].as_str() {
            Some("applied") => ExitCode::SUCCESS,
            Some("refused") => ExitCode::from(1),
            _ => ExitCode::from(2),
        })
    }

    pub async fn cancel(remote: &Remote, id: i64, as_json: bool) -> anyhow::Result<ExitCode> {
        let text_id = id.to_string();
        let withdrawal = remote
            .post(&["api", "v1", "withdrawals", &text_id, "cancel"], None)
            .await?;
        if as_json {
            println!("{}", serde_json::to_string_pretty(&withdrawal)?);
        } else {
            println!("withdrawal {id} canceled");
        }
        Ok(ExitCode::SUCCESS)
    }
}
