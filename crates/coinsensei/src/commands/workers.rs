//! `coinsensei workers list|start|stop|restart`: the operator's view of the registry.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use domain::limits::LIST_LIMIT_MAX;
use domain::{Chain, ControlAction, DesiredState, WorkerId, WorkerKind, WorkerStatus};
use store::{Change, Store, StoreError, WorkerControl, WorkerList, WorkerRow};

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
    if as_json {
        let array: Vec<_> = rows.iter().map(|row| web::dto::worker(row, now)).collect();
        println!("{}", serde_json::to_string_pretty(&array)?);
    } else {
        print!("{}", table(&rows, now));
    }
    Ok(ExitCode::SUCCESS)
}

/// "4s ago", "3m ago", "never".
pub fn age(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(at) = at else { return "never".into() };
    let seconds = (now - at).num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

fn table(rows: &[WorkerRow], now: DateTime<Utc>) -> String {
    if rows.is_empty() {
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
    let lines: Vec<[String; 9]> = rows
        .iter()
        .map(|row| {
            [
                row.id.to_string(),
                row.chain.to_string(),
                row.kind.to_string(),
                row.status.to_string(),
                row.desired_state.to_string(),
                row.pid
                    .map(|pid| pid.to_string())
                    .unwrap_or_else(|| "-".into()),
                row.host.clone().unwrap_or_else(|| "-".into()),
                age(row.last_heartbeat, now),
                row.last_error
                    .as_deref()
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

/// Whether the worker's report shows that it obeyed `action` requested as `requested`.
fn obeyed(row: &WorkerRow, requested: &WorkerRow, action: ControlAction) -> bool {
    match action {
        ControlAction::Stop => row.status == WorkerStatus::Stopped,
        ControlAction::Start => row.status == WorkerStatus::Running,
        ControlAction::Restart => {
            row.applied_generation >= requested.generation
                && matches!(row.status, WorkerStatus::Running | WorkerStatus::Stopped)
                && (row.status == WorkerStatus::Running)
                    == (row.desired_state == DesiredState::Running)
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
        if obeyed(&row, requested, action) {
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
