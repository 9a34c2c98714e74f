//! `coinsensei worker`: one worker process in the foreground.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use domain::limits::{ERROR_BACKOFF_MAX, ERROR_BACKOFF_MIN};
use domain::{Chain, WorkerId, WorkerKind};
use store::StoreOptions;
use worker::runtime::{RuntimeError, SourceBuilder};
use worker::{RuntimeConfig, RuntimeExit, WorkerFault, WorkerRuntime, WorkerSpec};
use worker::{SourceContext, SourceSettings};

use crate::config::{QueueSettings, Settings, default_worker_id};

/// How often an idle worker asks its job source again when no wake-up came.
const IDLE_POLL_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(
    settings: Settings,
    kind: WorkerKind,
    chain: Chain,
    id: Option<String>,
    supervised: bool,
) -> anyhow::Result<ExitCode> {
    let spec = WorkerSpec { kind, chain };
    // Everything the command line says is checked before anything is written.
    worker::factory::validate(spec)?;
    let id = match id {
        Some(id) => WorkerId::new(id).context("invalid --id")?,
        None => default_worker_id(kind, chain, 1),
    };
    let cancel = crate::signals::shutdown_token()?;
    if supervised {
        crate::signals::cancel_on_stdin_eof(cancel.clone());
    }
    // Workers never migrate: that is the control plane's job, and a worker of an older build
    // must not change the schema under a newer one.
    let store = super::connect_existing(&settings).await?;
    store.close().await;

    let config = RuntimeConfig {
        id: id.clone(),
        name: id.as_str().to_string(),
        spec,
        database_url: settings.database_url.clone(),
        // A database that vanished is an error, never a fresh empty one to run against.
        store_options: StoreOptions {
            create_if_missing: false,
            ..settings.store_options()
        },
        heartbeat_interval: settings.heartbeat_interval,
        drain_timeout: settings.drain_timeout,
        concurrency: settings.concurrency,
        idle_poll_interval: IDLE_POLL_INTERVAL,
        error_backoff_min: ERROR_BACKOFF_MIN,
        error_backoff_max: ERROR_BACKOFF_MAX,
        version: env!("CARGO_PKG_VERSION").to_string(),
        host: hostname::get()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into()),
        pid: std::process::id(),
        config_json: serde_json::json!({
            "concurrency": settings.concurrency,
            "heartbeat_interval_ms": settings.heartbeat_interval.as_millis() as u64,
            "drain_timeout_ms": settings.drain_timeout.as_millis() as u64,
        }),
    };
    // Each build connects afresh, so a restart really rebuilds the queue's connections.
    let source_options = StoreOptions {
        create_if_missing: false,
        ..settings.store_options()
    };
    let database_url = settings.database_url.clone();
    let lease = settings.job_lease;
    let queue_settings = settings.queue.clone();
    let settings = Arc::new(settings);
    let build_source: SourceBuilder = Arc::new(move |context: SourceContext| {
        let database_url = database_url.clone();
        let options = source_options.clone();
        let queue_settings = queue_settings.clone();
        let settings = Arc::clone(&settings);
        Box::pin(async move {
            let fault = |error: &dyn std::fmt::Display| WorkerFault(format!("job queue: {error}"));
            let backend: Arc<dyn queue::Backend> = match queue_settings {
                QueueSettings::Database => {
                    let store = store::Store::connect(&database_url, &options)
                        .await
                        .map_err(|error| fault(&error))?;
                    Arc::new(queue::SqlBackend::new(store))
                }
                QueueSettings::Redis { url, prefix } => Arc::new(
                    queue::RedisBackend::connect(&url, &prefix)
                        .await
                        .map_err(|error| fault(&error))?,
                ),
            };
            let registry = match spec.kind {
                WorkerKind::Withdrawal => crate::payers::registry(
                    &settings,
                    spec.chain,
                    &context.owner,
                    Arc::clone(&backend),
                )
                .await
                .map_err(WorkerFault)?,
                WorkerKind::Deposit => crate::depositors::registry(
                    &settings,
                    spec.chain,
                    &context.owner,
                    Arc::clone(&backend),
                )
                .await
                .map_err(WorkerFault)?,
                WorkerKind::Consolidation => crate::sweepers::registry(
                    &settings,
                    spec.chain,
                    &context.owner,
                    Arc::clone(&backend),
                )
                .await
                .map_err(WorkerFault)?,
            };
            let settings = SourceSettings {
                backend,
                owner: context.owner,
                lease,
                registry,
            };
            worker::build_job_source(spec, settings).await
        })
    });
    let runtime = WorkerRuntime::new(config, build_source);
    let exit = match runtime.run(cancel).await {
        Ok(exit) => exit,
        // The database refused this worker (say, its id belongs to a worker of another kind):
        // restarting it would only fail again.
        Err(RuntimeError::Store(error)) if !error.is_transient() => {
            eprintln!("error: worker {id} cannot run: {error}");
            return Ok(ExitCode::from(worker::supervisor::EXIT_PERMANENT));
        }
        Err(error) => return Err(error.into()),
    };
    match exit {
        RuntimeExit::Shutdown => Ok(ExitCode::SUCCESS),
        RuntimeExit::Superseded => {
            eprintln!(
                "error: another process registered as worker {id}; this one stopped without touching its row"
            );
            Ok(ExitCode::from(worker::supervisor::EXIT_SUPERSEDED))
        }
    }
}
