//! The autoscaler end to end, through the real binary: a backlog of `sleep` jobs in one
//! queue makes `up` start workers for it (at most 2 at a time, never past the maximum), and
//! once the backlog is gone, retire them one per cooldown down to the minimum, each drained
//! first. Every job completes exactly once (no rescue, no second attempt). Prints the figures
//! the issue asks for: decision latency, time to the new worker's first job, drain time.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use domain::{Chain, JobState, Name, WorkerKind, WorkerStatus};
use store::{AuditList, JobInsert, JobList, Store, WorkerList};
use testkit::{Backend, TestDb, wait_for};

// The CI size; `cargo xtask autoscale` runs the issue's: 2,000 jobs of 200 ms, up to 10
// workers (COINSENSEI_AUTOSCALE_JOBS, _JOB_MS, _MAX_WORKERS).
const TAIL: usize = 20;
const TAIL_MS: u64 = 1_000;
const COOLDOWN_MS: i64 = 1_500;

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("{name}: not a number"))
        })
        .unwrap_or(default)
}

/// Every `sleep` job of the queue, all pages.
async fn all_jobs(store: &Store) -> Vec<store::JobRow> {
    let mut jobs = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .job_list(&JobList {
                queue: Some(Name::new("tron.deposit").unwrap()),
                before_id,
                limit: 1_000,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return jobs;
        };
        before_id = Some(last.id);
        // The deposit worker's own scan job lives in this queue too, and never finishes.
        jobs.extend(page.into_iter().filter(|job| job.kind.as_str() == "sleep"));
    }
}

async fn decisions(store: &Store) -> Vec<store::AuditRow> {
    let mut entries = store
        .audit_list(&AuditList {
            actor: Some("autoscaler".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    entries.reverse();
    entries
}

async fn live_workers(store: &Store) -> Vec<store::WorkerRow> {
    store
        .worker_list(&WorkerList {
            chain: Some(Chain::Tron),
            kind: Some(WorkerKind::Deposit),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|row| row.status != WorkerStatus::Offline)
        .collect()
}

async fn scales_up_and_back_down(backend: Backend) {
    let jobs_count: usize = setting("COINSENSEI_AUTOSCALE_JOBS", 600);
    let job_ms: u64 = setting("COINSENSEI_AUTOSCALE_JOB_MS", 100);
    let max_workers: i64 = setting("COINSENSEI_AUTOSCALE_MAX_WORKERS", 4);
    let db = TestDb::new(backend).await;
    let config = db.dir().join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.1\ndrain_timeout = 10\njob_lease = 2\nconcurrency = 5\nhealth_restart = false\n\
             [[workers]]\nkind = \"deposit\"\nchain = \"tron\"\n\
             [[autoscale]]\nqueue = \"tron.deposit\"\nmax_workers = {max_workers}\ncooldown = {}.{:03}\n",
            COOLDOWN_MS / 1000,
            COOLDOWN_MS % 1000
        ),
    )
    .unwrap();
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let store = db.store().await;
    wait_for(
        "the configured worker running",
        Duration::from_secs(30),
        || async {
            live_workers(&store)
                .await
                .iter()
                .any(|row| row.status == WorkerStatus::Running)
                .then_some(())
        },
    )
    .await;
    assert!(decisions(&store).await.is_empty(), "no scaling while idle");

    // The backlog: depth crosses the threshold (50) the moment it commits.
    let now = Utc::now();
    let jobs: Vec<JobInsert> = (0..jobs_count)
        .map(|n| JobInsert {
            queue: Name::new("tron.deposit").unwrap(),
            kind: Name::new("sleep").unwrap(),
            // The last few are long, so workers retired as the queue empties are likely
            // still running one: their drain must finish it, not abandon it.
            args: serde_json::json!({"ms": if n >= jobs_count - TAIL { TAIL_MS } else { job_ms }, "n": n}),
            priority: 0,
            run_at: now,
            retry: None,
            unique_key: None,
            now,
        })
        .collect();
    store.job_insert_many(&jobs).await.unwrap();
    let crossed = Instant::now();

    let first_up = wait_for("a scale-up decision", Duration::from_secs(30), || async {
        decisions(&store).await.into_iter().next()
    })
    .await;
    let decided_after = crossed.elapsed();
    assert_eq!(first_up.action, "autoscaler.scale_up", "{first_up:?}");
    let new_worker = first_up.details["workers"][0].as_str().unwrap().to_string();
    wait_for(
        "the new worker taking jobs",
        Duration::from_secs(30),
        || async {
            live_workers(&store)
                .await
                .iter()
                .any(|row| {
                    row.id.as_str() == new_worker && (row.in_flight > 0 || row.processed_total > 0)
                })
                .then_some(())
        },
    )
    .await;
    let taking_after = crossed.elapsed();

    // The backlog drains, then the fleet goes back to its minimum.
    let completed = wait_for("every job completed", Duration::from_secs(300), || async {
        let jobs = all_jobs(&store).await;
        (jobs.len() == jobs_count && jobs.iter().all(|job| job.state == JobState::Completed))
            .then_some(jobs)
    })
    .await;
    let drained_after = crossed.elapsed();
    wait_for("back to one worker", Duration::from_secs(60), || async {
        let last = decisions(&store).await.into_iter().last()?;
        (last.action == "autoscaler.scale_down"
            && last.details["to"] == 1
            && live_workers(&store).await.len() == 1)
            .then_some(())
    })
    .await;

    assert_eq!(completed.len(), jobs_count, "none lost");

    // Every decision: up by at most 2, never past the maximum, down by 1, a cooldown apart.
    let entries = decisions(&store).await;
    let mut workers = 1;
    let mut peak = 1;
    for (index, entry) in entries.iter().enumerate() {
        let from = entry.details["from"].as_i64().unwrap();
        let to = entry.details["to"].as_i64().unwrap();
        assert_eq!(from, workers, "{entries:?}");
        match entry.action.as_str() {
            "autoscaler.scale_up" => assert!(to > from && to - from <= 2, "{entry:?}"),
            "autoscaler.scale_down" => assert_eq!(to, from - 1, "{entry:?}"),
            other => panic!("unexpected decision {other}"),
        }
        assert!(to <= max_workers, "{entry:?}");
        if index > 0 {
            let gap = entry.at - entries[index - 1].at;
            assert!(
                gap >= chrono::Duration::milliseconds(COOLDOWN_MS),
                "{entries:?}"
            );
        }
        workers = to;
        peak = peak.max(to);
    }
    assert_eq!(
        peak, max_workers,
        "the backlog took the fleet to its maximum"
    );

    // Retired workers drained and left: audited with their drain time, rows offline.
    // (The row goes offline before the process exits, and the supervisor audits the exit.)
    let retired = wait_for(
        "every retirement audited",
        Duration::from_secs(30),
        || async {
            let retired = store
                .audit_list(&AuditList {
                    action: Some("worker.retired".into()),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            (retired.len() as i64 >= max_workers - 1).then_some(retired)
        },
    )
    .await;
    assert_eq!(retired.len() as i64, max_workers - 1, "{retired:?}");
    let drain_ms: Vec<i64> = retired
        .iter()
        .map(|entry| entry.details["drain_ms"].as_i64().unwrap())
        .collect();

    // No retirement cost a job: every job completed on its first attempt. The one exception
    // tolerated is a lease that ran out under the machine's load while its worker, one the
    // autoscaler never retired, was still alive (a heartbeat late under SQLite's write lock
    // on a loaded 2-core machine): rescued once, its first run's settle refused by the
    // fencing token. A job rescued from a retired worker would mean a retirement that did
    // not drain, and fails here.
    let retired_ids: Vec<&str> = retired.iter().map(|entry| entry.target.as_str()).collect();
    let mut rescued = Vec::new();
    for job in &completed {
        if (job.attempt, job.rescues) == (1, 0) {
            continue;
        }
        assert_eq!((job.attempt, job.rescues), (2, 1), "{job:?}");
        let error = job.errors[0]["error"].as_str().unwrap_or_default();
        let owner = error
            .strip_prefix("lease of ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("not a lease that ran out: {job:?}"));
        // A lease owner is `ID:INCARNATION`; a retirement's audit target is `worker:ID`.
        let owner_worker = format!("worker:{}", owner.split(':').next().unwrap_or(owner));
        assert!(
            !retired_ids.contains(&owner_worker.as_str()),
            "job {} was rescued from retired worker {owner}: {job:?}",
            job.id
        );
        rescued.push(job.id);
    }
    assert!(
        rescued.len() <= 2,
        "more than a stray lease ran out: {rescued:?}"
    );
    if !rescued.is_empty() {
        eprintln!("note: jobs {rescued:?} were rescued once from a live worker under load");
    }

    // Visible from the CLI.
    let output = run(
        &db.url,
        &[
            "--config",
            config.to_str().unwrap(),
            "autoscaler",
            "status",
            "--json",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status[0]["queue"], "tron.deposit");
    assert_eq!(status[0]["policy"]["max_workers"], max_workers);
    assert_eq!(
        status[0]["workers"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    assert_eq!(
        status[0]["decisions"].as_array().unwrap().len(),
        entries.len().min(10)
    );

    println!(
        "figures ({backend:?}, {jobs_count} jobs of {job_ms} ms (the last {TAIL} of {TAIL_MS} ms), cooldown {COOLDOWN_MS} ms): \
         depth over the threshold -> scale-up decision {} ms; -> new worker taking jobs {} ms; \
         backlog drained {} ms; decisions {}; retired workers' drain times {drain_ms:?} ms",
        decided_after.as_millis(),
        taking_after.as_millis(),
        drained_after.as_millis(),
        entries
            .iter()
            .map(|entry| format!("{}->{}", entry.details["from"], entry.details["to"]))
            .collect::<Vec<_>>()
            .join(" "),
    );
    store.close().await;
    assert!(up.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscale_on_sqlite() {
    scales_up_and_back_down(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscale_on_postgres() {
    scales_up_and_back_down(Backend::Postgres).await;
}
