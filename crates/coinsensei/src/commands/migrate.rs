//! `coinsensei migrate`: brings the database's schema up to this build.

use std::process::ExitCode;

use store::redact_url;

use crate::config::Settings;

pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    let store = super::connect_and_migrate(&settings).await?;
    store.close().await;
    println!(
        "database {} is up to date",
        redact_url(&settings.database_url)
    );
    Ok(ExitCode::SUCCESS)
}
