//! `coinsensei queues` and `coinsensei jobs`: the operator's view of the job queue.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use domain::{JobState, Name, RetryPolicy};
use serde_json::{Value, json};
use store::{AuditInsert, JobInsert, JobList, Store};

use crate::config::Settings;

/// The store (for the audit log) and the configured queue.
async fn open(settings: &Settings) -> anyhow::Result<(Store, std::sync::Arc<dyn queue::Backend>)> {
    let store = super::connect_existing(settings).await?;
    let backend = super::open_queue(settings, &store).await?;
    Ok((store, backend))
}

fn name(what: &str, text: &str) -> anyhow::Result<Name> {
    Name::new(text).with_context(|| format!("invalid {what}"))
}

/// Records an operator's action on the queue. Written after the action: a crash in between
/// loses the entry, never the action's effect.
async fn audit(store: &Store, action: &str, target: String, details: serde_json::Value) {
    let insert = AuditInsert {
        actor: super::workers::actor(),
        action: action.into(),
        target,
        details,
        now: Utc::now(),
    };
    if let Err(error) = store.audit_insert(&insert).await {
        tracing::warn!(%error, "the action took effect but its audit entry was not written");
    }
}

pub async fn list(settings: Settings, as_json: bool) -> anyhow::Result<ExitCode> {
    let (store, queue) = open(&settings).await?;
    let now = Utc::now();
    let stats = queue.stats(now).await?;
    store.close().await;
    let queues: Vec<Value> = stats
        .iter()
        .map(|queue| web::dto::queue(queue, now))
        .collect();
    print_queues(&queues, as_json)
}

fn print_queues(queues: &[Value], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(queues)?);
        return Ok(ExitCode::SUCCESS);
    }
    if queues.is_empty() {
        println!(
            "no queues yet (a queue appears with its first job: `coinsensei jobs enqueue --help`)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:<8} {:>9} {:>9} {:>7} {:>9} {:>6} {:>9}  OLDEST WAITING",
        "QUEUE", "STATE", "AVAILABLE", "SCHEDULED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED",
    );
    let count = |value: &Value| value.as_i64().unwrap_or_default();
    for queue in queues {
        let state = if queue["paused"].as_bool() == Some(true) {
            "paused"
        } else {
            "active"
        };
        let oldest = match queue["oldest_available_age_ms"].as_i64() {
            Some(ms) => super::workers::age_ms(Some(ms)),
            None => "-".into(),
        };
        println!(
            "{:<28} {:<8} {:>9} {:>9} {:>7} {:>9} {:>6} {:>9}  {}",
            queue["name"].as_str().unwrap_or("?"),
            state,
            count(&queue["available"]),
            count(&queue["scheduled"]),
            count(&queue["running"]),
            count(&queue["completed"]),
            count(&queue["failed"]),
            count(&queue["cancelled"]),
            oldest
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn pause(settings: Settings, queue: &str, paused: bool) -> anyhow::Result<ExitCode> {
    let queue = name("queue name", queue)?;
    let (store, backend) = open(&settings).await?;
    match backend.pause(&queue, paused, Utc::now()).await {
        Ok(()) => {}
        Err(queue::QueueError::NotFound { .. }) => {
            bail!("no queue named {queue} (see `coinsensei queues list`)")
        }
        Err(error) => return Err(error.into()),
    }
    let action = if paused {
        "queue.pause"
    } else {
        "queue.resume"
    };
    audit(&store, action, format!("queue:{queue}"), json!({})).await;
    store.close().await;
    print_paused(&queue, paused);
    Ok(ExitCode::SUCCESS)
}

fn print_paused(queue: &Name, paused: bool) {
    println!(
        "queue {queue} {}",
        if paused {
            "paused: running jobs finish, no new ones start"
        } else {
            "resumed"
        }
    );
}

/// `N` (1 to the maximum) or `none`.
fn parse_limit(text: &str) -> anyhow::Result<Option<u32>> {
    let max = domain::limits::QUEUE_CONCURRENCY_MAX;
    match text {
        "none" => Ok(None),
        text => match text.parse::<u32>() {
            Ok(limit) if (1..=max).contains(&limit) => Ok(Some(limit)),
            _ => bail!("invalid limit {text:?}: a number from 1 to {max}, or none"),
        },
    }
}

fn print_limit(queue: &Name, limit: Option<u32>) {
    match limit {
        Some(limit) => println!("queue {queue}: at most {limit} job(s) run at once"),
        None => println!("queue {queue}: no concurrency limit"),
    }
}

pub async fn limit(settings: Settings, queue: &str, limit: &str) -> anyhow::Result<ExitCode> {
    let queue = name("queue name", queue)?;
    let limit = parse_limit(limit)?;
    let (store, backend) = open(&settings).await?;
    match backend.set_concurrency(&queue, limit, Utc::now()).await {
        Ok(()) => {}
        Err(queue::QueueError::NotFound { .. }) => {
            bail!("no queue named {queue} (see `coinsensei queues list`)")
        }
        Err(error) => return Err(error.into()),
    }
    audit(
        &store,
        "queue.limit",
        format!("queue:{queue}"),
        json!({"concurrency_limit": limit}),
    )
    .await;
    store.close().await;
    print_limit(&queue, limit);
    Ok(ExitCode::SUCCESS)
}

/// `queues retry QUEUE`: the retry policy of the queue's jobs enqueued without one.
pub async fn retry_policy(
    settings: Settings,
    queue: &str,
    attempts: Option<u32>,
    backoff: Option<f64>,
    backoff_max: Option<f64>,
    default: bool,
) -> anyhow::Result<ExitCode> {
    let queue = name("queue name", queue)?;
    let policy = if default {
        None
    } else {
        let mut policy = RetryPolicy::default();
        if let Some(attempts) = attempts {
            policy.max_attempts = attempts;
        }
        let seconds = |flag: &str, value: f64| -> anyhow::Result<Duration> {
            if value.is_finite() && (0.0..=86_400.0).contains(&value) {
                Ok(Duration::from_secs_f64(value))
            } else {
                bail!("{flag} must be between 0 and 86400 seconds")
            }
        };
        if let Some(backoff) = backoff {
            policy.backoff_base = seconds("--backoff", backoff)?;
        }
        if let Some(backoff_max) = backoff_max {
            policy.backoff_max = seconds("--backoff-max", backoff_max)?;
        }
        store::validate_retry(&policy).map_err(|error| anyhow::anyhow!("{error}"))?;
        Some(policy)
    };
    let (store, backend) = open(&settings).await?;
    match backend.set_retry(&queue, policy, Utc::now()).await {
        Ok(()) => {}
        Err(queue::QueueError::NotFound { .. }) => {
            bail!("no queue named {queue} (see `coinsensei queues list`)")
        }
        Err(error) => return Err(error.into()),
    }
    let details = match policy {
        Some(policy) => json!({
            "max_attempts": policy.max_attempts,
            "backoff_base_ms": policy.backoff_base.as_millis() as u64,
            "backoff_max_ms": policy.backoff_max.as_millis() as u64,
        }),
        None => json!({"default": true}),
    };
    audit(&store, "queue.retry", format!("queue:{queue}"), details).await;
    store.close().await;
    match policy {
        Some(policy) => println!(
            "queue {queue}: new jobs get {} attempt(s), backoff from {:?} up to {:?}",
            policy.max_attempts, policy.backoff_base, policy.backoff_max
        ),
        None => println!("queue {queue}: new jobs get the default retry policy"),
    }
    Ok(ExitCode::SUCCESS)
}

/// What `jobs enqueue` was asked to do.
pub struct Enqueue {
    pub queue: String,
    pub kind: String,
    pub args: String,
    pub delay: Option<f64>,
    pub unique_key: Option<String>,
    pub priority: i16,
    pub attempts: Option<u32>,
}

pub async fn enqueue(settings: Settings, request: Enqueue) -> anyhow::Result<ExitCode> {
    let queue = name("--queue", &request.queue)?;
    let kind = name("--kind", &request.kind)?;
    let args: serde_json::Value =
        serde_json::from_str(&request.args).context("--args is not valid JSON")?;
    let now = Utc::now();
    let run_at = match request.delay {
        None => now,
        Some(delay) if delay.is_finite() && (0.0..=31_536_000.0).contains(&delay) => {
            now + Duration::from_secs_f64(delay)
        }
        Some(_) => bail!("--delay must be between 0 and 31536000 seconds"),
    };
    // Without --attempts the job takes its queue's policy (`queues retry`), else the defaults.
    let retry = match request.attempts {
        None => None,
        Some(attempts) if (1..=domain::limits::JOB_ATTEMPTS_MAX).contains(&attempts) => {
            Some(RetryPolicy {
                max_attempts: attempts,
                ..RetryPolicy::default()
            })
        }
        Some(_) => bail!(
            "--attempts must be between 1 and {}",
            domain::limits::JOB_ATTEMPTS_MAX
        ),
    };
    let insert = JobInsert {
        queue,
        kind,
        args,
        priority: request.priority,
        run_at,
        retry,
        unique_key: request.unique_key,
        now,
    };
    let (store, backend) = open(&settings).await?;
    let inserted = backend.enqueue(&insert).await?;
    store.close().await;
    if inserted.inserted {
        println!("enqueued job {} on {}", inserted.id, insert.queue);
    } else {
        println!(
            "job {} with this unique key is already waiting or running on {}: not enqueued again",
            inserted.id, insert.queue
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn jobs_list(
    settings: Settings,
    queue: Option<String>,
    state: Option<JobState>,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let queue = queue.map(|queue| name("--queue", &queue)).transpose()?;
    let (store, backend) = open(&settings).await?;
    let jobs = backend
        .list(&JobList {
            queue,
            state,
            before_id: None,
            limit,
        })
        .await?;
    store.close().await;
    let jobs: Vec<Value> = jobs.iter().map(web::dto::job).collect();
    print_jobs(&jobs, as_json)
}

fn print_jobs(jobs: &[Value], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(jobs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        println!("no jobs match");
        return Ok(ExitCode::SUCCESS);
    }
    let now = Utc::now();
    println!(
        "{:>10}  {:<24} {:<16} {:<10} {:>7}  {:<12} LAST ERROR",
        "ID", "QUEUE", "KIND", "STATE", "ATTEMPT", "CREATED"
    );
    for job in jobs {
        let last_error = job["errors"]
            .as_array()
            .and_then(|errors| errors.last())
            .and_then(|error| error["error"].as_str())
            .map(|error| {
                error
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(60)
                    .collect::<String>()
            })
            .unwrap_or_else(|| "-".into());
        let created = job["created_at"]
            .as_str()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.with_timezone(&Utc));
        println!(
            "{:>10}  {:<24} {:<16} {:<10} {:>3}/{:<3}  {:<12} {}",
            job["id"].as_i64().unwrap_or_default(),
            job["queue"].as_str().unwrap_or("?"),
            job["kind"].as_str().unwrap_or("?"),
            job["state"].as_str().unwrap_or("?"),
            job["attempt"].as_i64().unwrap_or_default(),
            job["max_attempts"].as_i64().unwrap_or_default(),
            super::workers::age(created, now),
            last_error
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(settings: Settings, id: i64) -> anyhow::Result<ExitCode> {
    let (store, backend) = open(&settings).await?;
    let job = backend.get(id).await?;
    store.close().await;
    let Some(job) = job else {
        bail!("no job with id {id} (see `coinsensei jobs list`)")
    };
    println!("{}", serde_json::to_string_pretty(&web::dto::job(&job))?);
    Ok(ExitCode::SUCCESS)
}

/// `jobs retry` (failed or cancelled → available) and `jobs discard` (available or failed →
/// cancelled).
pub async fn retry_or_discard(
    settings: Settings,
    id: i64,
    retry: bool,
) -> anyhow::Result<ExitCode> {
    let (store, backend) = open(&settings).await?;
    let now = Utc::now();
    let result = if retry {
        backend.retry(id, now).await
    } else {
        backend.discard(id, now).await
    };
    let job = match result {
        Ok(job) => job,
        Err(queue::QueueError::NotFound { .. }) => {
            bail!("no job with id {id} (see `coinsensei jobs list`)")
        }
        Err(queue::QueueError::Conflict(reason)) => bail!("{reason}"),
        Err(error) => return Err(error.into()),
    };
    let action = if retry { "job.retry" } else { "job.discard" };
    audit(
        &store,
        action,
        format!("job:{id}"),
        json!({"queue": job.queue.as_str()}),
    )
    .await;
    store.close().await;
    println!("job {id} is now {}", job.state);
    Ok(ExitCode::SUCCESS)
}

/// The remote forms of the queue and job commands (`--server URL`).
pub mod remote {
    use std::process::ExitCode;

    use anyhow::bail;
    use domain::JobState;
    use serde_json::json;

    use crate::commands::remote::Remote;

    pub async fn list(remote: &Remote, as_json: bool) -> anyhow::Result<ExitCode> {
        let answer = remote.get(&["api", "admin", "queues"], &[]).await?;
        let queues = answer["queues"].as_array().cloned().unwrap_or_default();
        super::print_queues(&queues, as_json)
    }

    pub async fn pause(remote: &Remote, queue: &str, paused: bool) -> anyhow::Result<ExitCode> {
        let queue = super::name("queue name", queue)?;
        let action = if paused { "pause" } else { "resume" };
        remote
            .post(&["api", "admin", "queues", queue.as_str(), action], None)
            .await?;
        super::print_paused(&queue, paused);
        Ok(ExitCode::SUCCESS)
    }

    pub async fn limit(remote: &Remote, queue: &str, limit: &str) -> anyhow::Result<ExitCode> {
        let queue = super::name("queue name", queue)?;
        let limit = super::parse_limit(limit)?;
        remote
            .post(
                &["api", "admin", "queues", queue.as_str(), "limit"],
                Some(&json!({"concurrency_limit": limit})),
            )
            .await?;
        super::print_limit(&queue, limit);
        Ok(ExitCode::SUCCESS)
    }

    pub async fn jobs_list(
        remote: &Remote,
        queue: Option<String>,
        state: Option<JobState>,
        limit: u32,
        as_json: bool,
    ) -> anyhow::Result<ExitCode> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(queue) = queue {
            query.push(("queue", super::name("--queue", &queue)?.to_string()));
        }
        if let Some(state) = state {
            query.push(("state", state.to_string()));
        }
        let answer = remote.get(&["api", "admin", "jobs"], &query).await?;
        let jobs = answer["jobs"].as_array().cloned().unwrap_or_default();
        super::print_jobs(&jobs, as_json)
    }

    pub async fn show(remote: &Remote, id: i64) -> anyhow::Result<ExitCode> {
        let job = remote
            .get(&["api", "admin", "jobs", &id.to_string()], &[])
            .await?;
        println!("{}", serde_json::to_string_pretty(&job)?);
        Ok(ExitCode::SUCCESS)
    }

    pub async fn retry_or_discard(
        remote: &Remote,
        id: i64,
        retry: bool,
    ) -> anyhow::Result<ExitCode> {
        let action = if retry { "retry" } else { "discard" };
        let job = remote
            .post(&["api", "admin", "jobs", &id.to_string(), action], None)
            .await?;
        let Some(state) = job["state"].as_str() else {
            bail!("the control plane did not say the job's new state");
        };
        println!("job {id} is now {state}");
        Ok(ExitCode::SUCCESS)
    }
}
