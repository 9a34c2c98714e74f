//! `coinsensei up`: the whole system on one machine. Migrates the database, serves the control
//! plane, supervises one child process per configured worker, and scales the `[[autoscale]]`
//! queues' workers by depth (`crate::autoscaler`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use domain::WorkerId;
use store::redact_url;
use worker::{ChildSpec, Supervisor, SupervisorConfig, WorkerSpec};

use crate::autoscaler::Autoscaler;

use crate::config::{QueueSettings, Settings};

/// Extra time a child gets beyond its drain timeout before the supervisor kills it.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    run_with(settings, |_| String::new()).await
}

/// `up`, with `more` printed after the banner once the control plane's address is known (the
/// devnet's chains and first withdrawal).
pub async fn run_with(
    settings: Settings,
    more: impl FnOnce(std::net::SocketAddr) -> String,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let cancel = crate::signals::shutdown_token()?;
    // Bind first: a taken address fails before anything is written.
    let listener = super::bind(&settings).await?;
    let store = super::connect_and_migrate(&settings).await?;
    let address = listener.local_addr()?;

    let program =
        std::env::current_exe().context("locating the coinsensei binary to start workers")?;
    let supervisor = Arc::new(Supervisor::new(
        SupervisorConfig {
            stop_timeout: settings.drain_timeout + STOP_GRACE,
            ..SupervisorConfig::default()
        },
        store.clone(),
        cancel.clone(),
    ));
    for entry in &settings.workers {
        supervisor.spawn(child_spec(&settings, &program, entry.spec, &entry.id));
    }
    let autoscaler_task = if settings.autoscale.is_empty() {
        None
    } else {
        let backend = super::open_queue(&settings, &store).await?;
        let autoscaler = Autoscaler::new(
            &settings.autoscale,
            &settings.workers,
            backend,
            store.clone(),
            Arc::clone(&supervisor),
            Box::new({
                let settings = settings.clone();
                let program = program.clone();
                move |spec, id| child_spec(&settings, &program, spec, id)
            }),
        );
        Some(tokio::spawn(autoscaler.run(cancel.clone())))
    };

    println!("coinsensei is up in {} ms", started.elapsed().as_millis());
    println!("  control plane  http://{address}  (/healthz, /readyz)");
    println!("  dashboard      http://{address}/  (log in with an API token)");
    println!("  database       {}", redact_url(&settings.database_url));
    println!(
        "  workers        {} starting (see `coinsensei workers list`)",
        settings.workers.len()
    );
    match store.api_token_list().await {
        Ok(tokens) if tokens.iter().all(|token| token.revoked_at.is_some()) => println!(
            "  first admin token: `coinsensei tokens create --role admin --name NAME` (shown once)"
        ),
        _ => {}
    }
    let more = more(address);
    if !more.is_empty() {
        println!("{more}");
    }
    println!("Press Ctrl-C to stop.");

    let served = super::control_plane(store.clone(), &settings, listener, cancel.clone()).await;
    cancel.cancel();
    if let Some(task) = autoscaler_task {
        let _ = task.await;
    }
    supervisor.wait().await;
    store.close().await;
    served?;
    println!("coinsensei stopped");
    Ok(ExitCode::SUCCESS)
}

fn child_spec(
    settings: &Settings,
    program: &std::path::Path,
    spec: WorkerSpec,
    id: &WorkerId,
) -> ChildSpec {
    let mut args = Vec::new();
    if let Some(config) = &settings.config_file {
        args.push("--config".to_string());
        args.push(config.display().to_string());
    }
    args.extend([
        "worker".to_string(),
        "--kind".into(),
        spec.kind.to_string(),
        "--chain".into(),
        spec.chain.to_string(),
        "--id".into(),
        id.to_string(),
        "--supervised".into(),
    ]);
    // The resolved settings win over whatever the file or environment said, so a child
    // always runs against the same database and timings as its supervisor.
    let mut env = vec![
        (
            "COINSENSEI_DATABASE_URL".to_string(),
            settings.database_url.clone(),
        ),
        (
            "COINSENSEI_HEARTBEAT_INTERVAL".into(),
            settings.heartbeat_interval.as_secs_f64().to_string(),
        ),
        (
            "COINSENSEI_DRAIN_TIMEOUT".into(),
            settings.drain_timeout.as_secs_f64().to_string(),
        ),
        (
            "COINSENSEI_JOB_LEASE".into(),
            settings.job_lease.as_secs_f64().to_string(),
        ),
        (
            "COINSENSEI_QUEUE_BACKEND".into(),
            match settings.queue {
                QueueSettings::Database => "database".into(),
                QueueSettings::Redis { .. } => "redis".into(),
            },
        ),
        (
            "COINSENSEI_CONCURRENCY".into(),
            settings.concurrency.to_string(),
        ),
        (
            "COINSENSEI_DATABASE_MAX_CONNECTIONS".into(),
            settings.database_max_connections.to_string(),
        ),
    ];
    if let QueueSettings::Redis { url, prefix } = &settings.queue {
        env.push(("COINSENSEI_REDIS_URL".into(), url.clone()));
        env.push(("COINSENSEI_REDIS_PREFIX".into(), prefix.clone()));
    }
    ChildSpec {
        id: id.clone(),
        program: program.to_path_buf(),
        args,
        env,
    }
}
