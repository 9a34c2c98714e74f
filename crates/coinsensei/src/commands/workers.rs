//! `coinsensei workers list|start|stop|restart`: the operator's view of the registry.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use domain::limits::LIST_LIMIT_MAX;
use domain::{Chain, ControlAction, DesiredState, WorkerId, WorkerKind, WorkerStatus};
use serde_json::Value;
use store::{Change, Store, StoreError, WorkerControl, WorkerList, WorkerRow};

use super::remote::{Refused, Remote};
use crate::config::Settings;

#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter {
    pub chain: Option<Chain>,
    pub kind: Option<WorkerKind>,
    pub status: Option<WorkerStatus>,
}

pub async fn list(
    settings: Settings,
    filter: ListFilter,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let store = super::connect_existing(&settings).await?;
    let mut rows = Vec::new();
    loop {
        let page = store
            .worker_list(&WorkerList {
                chain: filter.chain,
                kind: filter.kind,
                status: filter.status,
                limit: LIST_LIMIT_MAX,
                offset: u32::try_from(rows.len()).unwrap_or(u32::MAX),
            })
            .await?;
        let done = page.len() < LIST_LIMIT_MAX as usize;
        rows.extend(page);
        if done {
            break;
        }
    }
    store.close().await;
    let now = Utc::now();
    let workers: Vec<Value> = rows.iter().map(|row| web::dto::worker(row, now)).collect();
    print_workers(&workers, as_json)
}

/// `workers list --server URL`: the same list from a remote control plane, page by page.
pub async fn list_remote(
    remote: &Remote,
    filter: ListFilter,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut query = vec![("limit", LIST_LIMIT_MAX.to_string())];
    if let Some(chain) = filter.chain {
        query.push(("chain", chain.to_string()));
    }
    if let Some(kind) = filter.kind {
        query.push(("type", kind.to_string()));
    }
    if let Some(status) = filter.status {
        query.push(("status", status.to_string()));
    }
    let mut workers: Vec<Value> = Vec::new();
    loop {
        let mut page_query = query.clone();
        page_query.push(("offset", workers.len().to_string()));
        let page = remote
            .get(&["api", "admin", "workers"], &page_query)
            .await?;
        let page = page["workers"]
            .as_array()
            .context("the control plane's worker list has no `workers`")?
            .clone();
        let done = page.len() < LIST_LIMIT_MAX as usize;
        workers.extend(page);
        if done {
            break;
        }
    }
    print_workers(&workers, as_json)
}

fn print_workers(workers: &[Value], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(workers)?);
    } else {
        print!("{}", table(workers));
    }
    Ok(ExitCode::SUCCESS)
}

/// "4s ago", "3m ago", "never".
pub fn age(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    age_ms(at.map(|at| (now - at).num_milliseconds()))
}

/// An age in milliseconds as "4s ago", "3m ago"; "never" for none.
pub fn age_ms(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "never".into() };
    let seconds = ms.max(0) / 1000;
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

/// A text field of a `web::dto` object, or "-".
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn table(workers: &[Value]) -> String {
    if workers.is_empty() {
        return "no workers registered (start some with `coinsensei up` or `coinsensei worker`)\n"
            .into();
    }
    let header = [
        "ID",
        "CHAIN",
        "TYPE",
        "STATUS",
        "DESIRED",
        "PID",
        "HOST",
        "LAST SEEN",
        "LAST ERROR",
    ];
    let lines: Vec<[String; 9]> = workers
        .iter()
        .map(|worker| {
            [
                text(&worker["id"]),
                text(&worker["blockchain"]),
                text(&worker["type"]),
                text(&worker["status"]),
                text(&worker["desired_state"]),
                text(&worker["pid"]),
                text(&worker["host"]),
                age_ms(worker["heartbeat_age_ms"].as_i64()),
                worker["last_error"]
                    .as_str()
                    .map(one_line)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (index, cell) in cells.enumerate() {
            if index + 1 == widths.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[index]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push(&mut header.iter().copied());
    for line in &lines {
        push(&mut line.iter().map(String::as_str));
    }
    out
}

/// The first line of an error, cut to fit a table.
fn one_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    if first.chars().count() > 60 {
        format!("{}…", first.chars().take(59).collect::<String>())
    } else {
        first.to_string()
    }
}

/// Who the audit log names for an action from this command line.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = hostname::get()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}@{host}")
}

pub async fn control(
    settings: Settings,
    id: &str,
    action: ControlAction,
    wait: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let id = WorkerId::new(id).context("invalid worker id")?;
    let store = super::connect_existing(&settings).await?;
    // Open the feed before acting so no change is missed while waiting.
    let feed = match wait {
        Some(_) => store.change_feed().await.ok(),
        None => None,
    };
    let control = WorkerControl {
        id: id.clone(),
        action,
        actor: actor(),
        now: Utc::now(),
    };
    let row = match store.worker_control(&control).await {
        Ok(row) => row,
        Err(StoreError::NotFound { .. }) => {
            bail!(
                "no worker with id {:?} (see `coinsensei workers list`)",
                id.as_str()
            )
        }
        Err(StoreError::Refused(refusal)) => bail!("cannot {action} worker {id}: {refusal}"),
        Err(error) => return Err(error.into()),
    };
    println!(
        "{action} requested for worker {id}: desired state {}, generation {}",
        row.desired_state, row.generation
    );
    if let Some(timeout) = wait {
        let reached = wait_obeyed(&store, feed, &row, action, timeout).await?;
        println!("worker {id} is {}", reached.status);
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Whether a worker reporting `status` with `applied_generation` (and wanting `desired`)
/// has obeyed `action`, requested as control generation `requested`.
fn obeyed(
    status: WorkerStatus,
    desired: DesiredState,
    applied_generation: i64,
    requested: i64,
    action: ControlAction,
) -> bool {
    match action {
        ControlAction::Stop => status == WorkerStatus::Stopped,
        ControlAction::Start => status == WorkerStatus::Running,
        ControlAction::Restart => {
            applied_generation >= requested
                && matches!(status, WorkerStatus::Running | WorkerStatus::Stopped)
                && (status == WorkerStatus::Running) == (desired == DesiredState::Running)
        }
    }
}

async fn wait_obeyed(
    store: &Store,
    mut feed: Option<store::ChangeFeed>,
    requested: &WorkerRow,
    action: ControlAction,
    timeout: Duration,
) -> anyhow::Result<WorkerRow> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let row = store
            .worker_get(&requested.id)
            .await?
            .context("the worker was deleted while waiting")?;
        if obeyed(
            row.status,
            row.desired_state,
            row.applied_generation,
            requested.generation,
            action,
        ) {
            return Ok(row);
        }
        if matches!(row.status, WorkerStatus::Lost | WorkerStatus::Offline) {
            bail!(
                "worker {} is {}: nothing runs to obey (the request stays recorded and applies when it comes back)",
                row.id,
                row.status
            );
        }
        // Wake on a change hint, or re-read every 200 ms if the feed is unavailable or quiet.
        let wake = async {
            match feed.as_mut() {
                Some(feed) => loop {
                    match feed.next().await {
                        Some(Change::Worker(id)) if id != requested.id => continue,
                        _ => break,
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wake => {}
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = tokio::time::sleep_until(deadline) => {
                bail!("timed out after {timeout:?}: worker {} is still {} (the request stays recorded)", row.id, row.status)
            }
        }
    }
}

/// `workers start|stop|restart ID --server URL`.
pub async fn control_remote(
    remote: &Remote,
    id: &str,
    action: ControlAction,
    wait: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let id = WorkerId::new(id).context("invalid worker id")?;
    let accepted = remote
        .post(
            &["api", "admin", "workers", id.as_str(), action.as_str()],
            None,
        )
        .await
        .map_err(|error| match error.downcast_ref::<Refused>() {
            Some(refused) if refused.code == "conflict" => {
                anyhow!("cannot {action} worker {id}: {}", refused.message)
            }
            _ => error,
        })?;
    let generation = accepted["generation"]
        .as_i64()
        .context("the control plane's answer has no `generation`")?;
    println!(
        "{action} requested for worker {id}: desired state {}, generation {generation}",
        text(&accepted["desired_state"])
    );
    let Some(timeout) = wait else {
        return Ok(ExitCode::SUCCESS);
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let worker = tokio::time::timeout_at(
            deadline,
            remote.get(&["api", "admin", "workers", id.as_str()], &[]),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "timed out after {timeout:?} waiting for worker {id} (the request stays recorded)"
            )
        })??;
        let status: WorkerStatus = text(&worker["status"])
            .parse()
            .context("the control plane sent an unknown status")?;
        let desired: DesiredState = text(&worker["desired_state"])
            .parse()
            .context("the control plane sent an unknown desired state")?;
        let applied = worker["applied_generation"]
            .as_i64()
            .context("the control plane's worker has no `applied_generation`")?;
        if obeyed(status, desired, applied, generation, action) {
            println!("worker {id} is {status}");
            return Ok(ExitCode::SUCCESS);
        }
        if matches!(status, WorkerStatus::Lost | WorkerStatus::Offline) {
            bail!(
                "worker {id} is {status}: nothing runs to obey (the request stays recorded and applies when it comes back)"
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "timed out after {timeout:?}: worker {id} is still {status} (the request stays recorded)"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        let now = Utc::now();
        assert_eq!(age(None, now), "never");
        assert_eq!(age(Some(now - chrono::Duration::seconds(4)), now), "4s ago");
        assert_eq!(
            age(Some(now - chrono::Duration::seconds(150)), now),
            "2m ago"
        );
        assert_eq!(age(Some(now - chrono::Duration::hours(5)), now), "5h ago");
        assert_eq!(
            age(Some(now + chrono::Duration::seconds(3)), now),
            "0s ago",
            "a clock ahead never shows a negative age"
        );
    }

    #[test]
    fn long_errors_are_cut_to_one_line() {
        assert_eq!(one_line("first\nsecond"), "first");
        assert_eq!(one_line(&"x".repeat(100)).chars().count(), 60);
    }
}
