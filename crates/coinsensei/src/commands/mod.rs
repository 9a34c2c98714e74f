//! One module per command; shared connection handling here.

pub mod autoscaler;
pub mod bench;
pub mod chain;
pub mod deposits;
pub mod destinations;
pub mod devnet;
pub mod events;
pub mod health;
pub mod keda;
pub mod keys;
pub mod ledger;
pub mod migrate;
pub mod queues;
pub mod remote;
pub mod serve;
pub mod tokens;
pub mod tx;
pub mod up;
pub mod withdrawals;
pub mod worker;
pub mod workers;

use anyhow::{Context, bail};
use store::{Store, StoreOptions, redact_url};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

/// Connects to the configured database, creating the SQLite file if needed, and migrates it.
pub async fn connect_and_migrate(settings: &Settings) -> anyhow::Result<Store> {
    let store = connect(settings, settings.store_options()).await?;
    store
        .migrate()
        .await
        .with_context(|| format!("migrating {}", redact_url(&settings.database_url)))?;
    Ok(store)
}

/// Connects to an existing, migrated database. A missing SQLite file or an old schema is an
/// error, never a silently created database.
pub async fn connect_existing(settings: &Settings) -> anyhow::Result<Store> {
    let options = StoreOptions {
        create_if_missing: false,
        ..settings.store_options()
    };
    let store = connect(settings, options).await?;
    let pending = store
        .migrations_pending()
        .await
        .context("reading the schema version")?;
    if pending > 0 {
        bail!(
            "the database at {} is {pending} migration(s) behind this build: run `coinsensei migrate` (or `coinsensei up`) first",
            redact_url(&settings.database_url)
        );
    }
    Ok(store)
}

async fn connect(settings: &Settings, options: StoreOptions) -> anyhow::Result<Store> {
    Store::connect(&settings.database_url, &options).await.map_err(|error| {
        let hint = if settings.database_url.starts_with("sqlite:") && !options.create_if_missing {
            " (no database there yet? `coinsensei up` or `coinsensei migrate` creates it; check --data-dir, --config and COINSENSEI_DATABASE_URL)"
        } else {
            ""
        };
        // The store's error already names the URL with its password redacted.
        anyhow::anyhow!("{error}{hint}")
    })
}

/// The configured job queue: the database's (sharing `store`) or Redis.
pub async fn open_queue(
    settings: &Settings,
    store: &Store,
) -> anyhow::Result<std::sync::Arc<dyn queue::Backend>> {
    Ok(match &settings.queue {
        crate::config::QueueSettings::Database => {
            std::sync::Arc::new(queue::SqlBackend::new(store.clone()))
        }
        crate::config::QueueSettings::Redis { url, prefix } => std::sync::Arc::new(
            queue::RedisBackend::connect(url, prefix)
                .await
                .with_context(|| format!("connecting to the job queue at {}", redact_url(url)))?,
        ),
    })
}

/// Runs the control plane (HTTP endpoints, the reaper, queue maintenance, the health
/// checker with its node probes and its restart and pause actions, the webhook deliverer,
/// and the ledger's reconciliation when `ledger_reconcile_interval` asks for it) until
/// `cancel` fires.
pub async fn control_plane(
    store: Store,
    settings: &Settings,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let backend = open_queue(settings, &store).await?;
    let reaper = ::worker::Reaper::new(
        store.clone(),
        ::worker::ReaperConfig::for_heartbeat(
            settings.heartbeat_interval,
            settings.lost_after_intervals,
        ),
    );
    let reaper_task = tokio::spawn({
        let cancel = cancel.clone();
        async move { reaper.run(cancel).await }
    });
    let maintenance = queue::Maintenance::new(
        std::sync::Arc::clone(&backend),
        queue::MaintenanceConfig::default(),
    );
    let maintenance_task = tokio::spawn({
        let cancel = cancel.clone();
        async move { maintenance.run(cancel).await }
    });
    let health = health::monitor(
        settings,
        Some(crate::chains::clients(settings)),
        settings.heartbeat_interval,
    );
    let probe_task = tokio::spawn(health::probe_loop(
        std::sync::Arc::clone(&health),
        settings.heartbeat_interval,
        cancel.clone(),
    ));
    let health_task = tokio::spawn(health::run_loop(
        store.clone(),
        std::sync::Arc::clone(&backend),
        std::sync::Arc::clone(&health),
        settings.heartbeat_interval,
        health::Actions {
            restart_after: settings.health.restart_after,
            pause_after: settings.health.pause_after,
        },
        cancel.clone(),
    ));
    let webhooks_task = tokio::spawn(crate::webhooks::run(
        store.clone(),
        settings.webhooks.clone(),
        cancel.clone(),
    ));
    let ledger_task = settings.ledger_reconcile_interval.map(|interval| {
        tokio::spawn(ledger::run_loop(
            store.clone(),
            settings.clone(),
            interval,
            cancel.clone(),
        ))
    });
    let options = web::WebOptions {
        metrics_public: settings.metrics_public,
        health,
        heartbeat_interval: settings.heartbeat_interval,
        public_url: settings.public_url.clone(),
        intake: std::sync::Arc::new(settings.intake()),
        autoscale: settings.scaled_queues(),
        deposits: std::sync::Arc::new(settings.deposit_intake()),
        ..web::WebOptions::default()
    };
    let served = web::serve(listener, store, backend, &options, cancel.clone()).await;
    cancel.cancel();
    let _ = reaper_task.await;
    let _ = maintenance_task.await;
    let _ = health_task.await;
    let _ = probe_task.await;
    if let Some(task) = ledger_task {
        let _ = task.await;
    }
    if let Ok(Err(error)) = webhooks_task.await {
        tracing::warn!(error = %format!("{error:#}"), "the webhook deliverer stopped");
    }
    served.context("serving HTTP")
}

/// Binds the listen address with a message that says which key to change.
pub async fn bind(settings: &Settings) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (set --listen or COINSENSEI_LISTEN to another address)",
                settings.listen
            )
        })
}
