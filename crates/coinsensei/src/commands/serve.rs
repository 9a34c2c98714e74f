//! `coinsensei serve`: the control plane alone, for deployments that run workers elsewhere.

use std::process::ExitCode;

use store::redact_url;

use crate::config::Settings;

pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let cancel = crate::signals::shutdown_token()?;
    // Bind first: a taken address fails before anything is written.
    let listener = super::bind(&settings).await?;
    let store = super::connect_and_migrate(&settings).await?;
    let address = listener.local_addr()?;
    println!(
        "coinsensei control plane is up in {} ms",
        started.elapsed().as_millis()
    );
    println!("  control plane  http://{address}  (/healthz, /readyz)");
    println!("  dashboard      http://{address}/  (log in with an API token)");
    println!("  database       {}", redact_url(&settings.database_url));
    println!("Press Ctrl-C to stop.");
    super::control_plane(store.clone(), &settings, listener, cancel).await?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
