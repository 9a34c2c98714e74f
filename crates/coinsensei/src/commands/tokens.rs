//! `coinsensei tokens create|list|revoke`: API tokens for the control plane. A token is shown
//! once, when created; the database keeps only its hash.

use std::process::ExitCode;

use anyhow::bail;
use chrono::Utc;
use domain::Role;
use serde_json::json;
use store::{AuditInsert, StoreError};

use crate::config::Settings;

pub async fn create(settings: Settings, role: Role, name: &str) -> anyhow::Result<ExitCode> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        bail!("--name must be 1 to 100 characters");
    }
    let store = super::connect_existing(&settings).await?;
    let now = Utc::now();
    let (row, secret) = web::auth::issue(&store, name, role, now).await?;
    let audit = AuditInsert {
        actor: super::workers::actor(),
        action: "token.create".into(),
        target: format!("token:{}", row.id),
        details: json!({"name": row.name, "role": row.role.as_str(), "prefix": row.prefix}),
        now,
    };
    if let Err(error) = store.audit_insert(&audit).await {
        tracing::warn!(%error, "the token was created but its audit entry was not written");
    }
    store.close().await;
    eprintln!(
        "created {} token {} ({:?}); it is shown once, store it now:",
        row.role, row.id, row.name
    );
    println!("{secret}");
    Ok(ExitCode::SUCCESS)
}

pub async fn list(settings: Settings, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let tokens = store.api_token_list().await?;
    store.close().await;
    let now = Utc::now();
    if as_json {
        let array: Vec<_> = tokens.iter().map(web::dto::token).collect();
        println!("{}", serde_json::to_string_pretty(&array)?);
        return Ok(ExitCode::SUCCESS);
    }
    if tokens.is_empty() {
        println!(
            "no tokens yet: `coinsensei tokens create --role admin --name NAME` makes the first"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>6}  {:<24} {:<9} {:<10} {:<12} STATE",
        "ID", "NAME", "ROLE", "PREFIX", "LAST USED"
    );
    for token in &tokens {
        let state = if token.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        println!(
            "{:>6}  {:<24} {:<9} {:<10} {:<12} {state}",
            token.id,
            token.name.chars().take(24).collect::<String>(),
            token.role.as_str(),
            token.prefix,
            super::workers::age(token.last_used_at, now),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke(settings: Settings, id: i64) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let now = Utc::now();
    let row = match store.api_token_revoke(id, now).await {
        Ok(row) => row,
        Err(StoreError::NotFound { .. }) => {
            bail!("no token with id {id} (see `coinsensei tokens list`)")
        }
        Err(StoreError::Conflict(reason)) => bail!("{reason}"),
        Err(error) => return Err(error.into()),
    };
    let audit = AuditInsert {
        actor: super::workers::actor(),
        action: "token.revoke".into(),
        target: format!("token:{id}"),
        details: json!({"name": row.name, "prefix": row.prefix}),
        now,
    };
    if let Err(error) = store.audit_insert(&audit).await {
        tracing::warn!(%error, "the token was revoked but its audit entry was not written");
    }
    store.close().await;
    println!("token {id} ({:?}) revoked", row.name);
    Ok(ExitCode::SUCCESS)
}
