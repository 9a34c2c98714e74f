//! The system as an operator runs it: real `coinsensei` processes against real Postgres and
//! SQLite. `up` supervises workers that obey `workers stop|start|restart`; a child killed
//! with -9 is restarted; a worker killed with -9 is marked lost; SIGTERM leaves it offline.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use store::AuditList;
use testkit::{Backend, TestDb, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// Waits until `workers list --json` shows worker `id` matching `condition`.
async fn wait_worker(
    url: &str,
    id: &str,
    what: &str,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(&format!("{id} {what}"), WAIT, || async {
        let workers = workers_json(url).await;
        find(&workers, id)
            .filter(|worker| condition(worker))
            .cloned()
    })
    .await
}

async fn audit_actions(db: &TestDb, target: &str) -> Vec<(String, String)> {
    let store = db.store().await;
    let entries = store
        .audit_list(&AuditList {
            target: Some(target.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    store.close().await;
    entries
        .into_iter()
        .rev()
        .map(|entry| (entry.action, entry.actor))
        .collect()
}

async fn up_supervises_workers_that_obey_the_cli(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = db.dir();
    let config = write_config(
        &dir,
        0.2,
        &[("withdrawal", "tron"), ("deposit", "ethereum")],
    );
    let config = config.to_str().unwrap();
    let data_dir = dir.to_str().unwrap();
    // SQLite: the default database in the data directory. Postgres: from the environment.
    let up = match backend {
        Backend::Sqlite => Up::start(&["--config", config, "--data-dir", data_dir], &[]).await,
        Backend::Postgres => {
            Up::start(
                &["--config", config],
                &[("COINSENSEI_DATABASE_URL", &db.url)],
            )
            .await
        }
    };
    let url = &db.url;
    let id = "tron-withdrawal-1";
    let running = wait_worker(url, id, "running", |worker| worker["status"] == "running").await;
    wait_worker(url, "ethereum-deposit-1", "running", |worker| {
        worker["status"] == "running"
    })
    .await;
    assert_eq!(
        workers_json(url).await.len(),
        2,
        "exactly the configured workers"
    );
    let pid = running["pid"].as_i64().unwrap();

    assert_eq!(http_get(up.address, "/healthz").await.unwrap().0, 200);
    let (status, body) = http_get(up.address, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");

    // Stop: the process stays alive, heartbeating, and reports stopped.
    let output = run(url, &["workers", "stop", id, "--wait", "--timeout", "10"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let stopped = find(&workers_json(url).await, id).cloned().unwrap();
    assert_eq!(
        (
            stopped["status"].as_str(),
            stopped["desired_state"].as_str()
        ),
        (Some("stopped"), Some("stopped"))
    );
    assert_eq!(stopped["pid"].as_i64(), Some(pid), "stop keeps the process");
    let seen = stopped["last_heartbeat"].as_str().unwrap().to_string();
    let beat = wait_worker(url, id, "heartbeating while stopped", |worker| {
        worker["last_heartbeat"].as_str() != Some(&seen)
    })
    .await;
    assert!(
        beat["rss_bytes"]
            .as_i64()
            .is_some_and(|rss| rss > 1_000_000),
        "heartbeats carry the RSS: {beat}"
    );

    let output = run(url, &["workers", "start", id, "--wait", "--timeout", "10"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        find(&workers_json(url).await, id).unwrap()["status"],
        "running"
    );

    let output = run(
        url,
        &["workers", "restart", id, "--wait", "--timeout", "10"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let restarted = find(&workers_json(url).await, id).cloned().unwrap();
    assert_eq!(
        (
            restarted["generation"].as_i64(),
            restarted["applied_generation"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(restarted["status"], "running");
    assert_eq!(
        restarted["pid"].as_i64(),
        Some(pid),
        "a restart rebuilds connections in the same process"
    );

    // Starting a running worker means nothing: refused, and not recorded.
    let output = run(url, &["workers", "start", id]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("already desired running"),
        "{}",
        stderr(&output)
    );

    let actions = audit_actions(&db, &format!("worker:{id}")).await;
    let controls: Vec<&str> = actions
        .iter()
        .filter(|(_, actor)| actor.starts_with("cli:"))
        .map(|(action, _)| action.as_str())
        .collect();
    assert_eq!(controls, ["worker.stop", "worker.start", "worker.restart"]);

    // kill -9 a child: the supervisor notices, records it and starts a new process.
    signal(pid as i32, Signal::SIGKILL);
    let replaced = wait_worker(url, id, "restarted by the supervisor", |worker| {
        worker["status"] == "running" && worker["pid"].as_i64() != Some(pid)
    })
    .await;
    assert_ne!(replaced["pid"].as_i64(), Some(pid));
    let actions = audit_actions(&db, &format!("worker:{id}")).await;
    assert!(
        actions
            .iter()
            .any(|(action, actor)| action == "worker.exited" && actor == "supervisor"),
        "{actions:?}"
    );

    // Ctrl-C: everything drains and goes offline, and `up` exits cleanly.
    let status = up.stop().await;
    assert!(status.success(), "up exited with {status}");
    for worker in workers_json(url).await {
        assert_eq!(worker["status"], "offline", "{worker}");
    }
}

async fn a_killed_worker_is_lost_and_a_terminated_one_offline(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = write_config(&db.dir(), 0.2, &[]);
    let config = config.to_str().unwrap();
    let env = [("COINSENSEI_DATABASE_URL", db.url.as_str())];
    // The control plane alone: it migrates and runs the reaper.
    let serve = Up::serve(&["--config", config], &env).await;
    let worker = |kind: &'static str, chain: &'static str| {
        let mut command = coinsensei([
            "--config", config, "worker", "--kind", kind, "--chain", chain,
        ]);
        command.envs(env).stdin(std::process::Stdio::null());
        command.spawn().expect("spawn worker")
    };

    let mut terminated = worker("deposit", "tron");
    let id = "tron-deposit-1";
    wait_worker(&db.url, id, "running", |worker| {
        worker["status"] == "running"
    })
    .await;
    signal(terminated.id().unwrap() as i32, Signal::SIGTERM);
    let status = tokio::time::timeout(WAIT, terminated.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "a drained worker exits 0, got {status}");
    assert_eq!(
        find(&workers_json(&db.url).await, id).unwrap()["status"],
        "offline"
    );

    let mut killed = worker("withdrawal", "ethereum");
    let id = "ethereum-withdrawal-1";
    wait_worker(&db.url, id, "running", |worker| {
        worker["status"] == "running"
    })
    .await;
    signal(killed.id().unwrap() as i32, Signal::SIGKILL);
    let _ = killed.wait().await;
    let lost = wait_worker(&db.url, id, "lost", |worker| worker["status"] == "lost").await;
    assert_eq!(
        lost["desired_state"], "running",
        "lost is what happened, not what the operator wants"
    );
    let actions = audit_actions(&db, &format!("worker:{id}")).await;
    assert!(
        actions
            .iter()
            .any(|(action, actor)| action == "worker.lost" && actor == "reaper"),
        "{actions:?}"
    );
    // An offline worker is not lost: it left properly.
    assert_eq!(
        find(&workers_json(&db.url).await, "tron-deposit-1").unwrap()["status"],
        "offline"
    );

    assert!(serve.stop().await.success());
}

/// A child that can never run (its id belongs to a worker of another kind) is reported once
/// and not restarted in a loop.
async fn a_child_that_cannot_run_is_not_restarted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    store
        .worker_register(&store::WorkerRegister {
            id: domain::WorkerId::new("taken").unwrap(),
            name: "taken".into(),
            kind: domain::WorkerKind::Deposit,
            chain: domain::Chain::Ethereum,
            pid: None,
            host: None,
            port: None,
            version: None,
            config: serde_json::json!({}),
            incarnation: "elsewhere".into(),
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let config = db.dir().join("coinsensei.toml");
    std::fs::write(&config, "heartbeat_interval = 0.2\n[[workers]]\nkind = \"withdrawal\"\nchain = \"tron\"\nid = \"taken\"\n").unwrap();
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let actions = wait_for("the child's failure recorded", WAIT, || async {
        let actions = audit_actions(&db, "worker:taken").await;
        actions
            .iter()
            .any(|(action, _)| action == "worker.failed")
            .then_some(actions)
    })
    .await;
    assert!(
        actions.iter().all(|(action, _)| action != "worker.exited"),
        "{actions:?}"
    );
    // Longer than the first respawn backoff: still no second attempt.
    tokio::time::sleep(domain::limits::RESPAWN_BACKOFF_MIN * 3).await;
    let actions = audit_actions(&db, "worker:taken").await;
    let by_supervisor = actions
        .iter()
        .filter(|(_, actor)| actor == "supervisor")
        .count();
    assert_eq!(by_supervisor, 1, "{actions:?}");
    let row = find(&workers_json(&db.url).await, "taken")
        .cloned()
        .unwrap();
    assert_eq!(
        (row["type"].as_str(), row["pid"].as_i64()),
        (Some("deposit"), None),
        "the row is untouched"
    );
    assert!(up.stop().await.success());
}

async fn jobs_list(url: &str, queue: &str) -> Vec<serde_json::Value> {
    let output = run(
        url,
        &[
            "jobs", "list", "--queue", queue, "--limit", "1000", "--json",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Jobs enqueued with the CLI run on `up`'s workers; a worker killed with -9 while it holds
/// jobs loses them to the rescue, and every job still completes exactly once.
async fn up_runs_jobs_and_survives_a_killed_worker(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = db.dir().join("coinsensei.toml");
    std::fs::write(
        &config,
        "heartbeat_interval = 0.2\njob_lease = 1\nconcurrency = 4\n[[workers]]\nkind = \"withdrawal\"\nchain = \"tron\"\n",
    )
    .unwrap();
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let url = &db.url;
    let running = wait_worker(url, "tron-withdrawal-1", "running", |worker| {
        worker["status"] == "running"
    })
    .await;
    for n in 0..12 {
        let args = format!("{{\"ms\": 400, \"n\": {n}}}");
        let output = run(
            url,
            &[
                "jobs",
                "enqueue",
                "--queue",
                "tron.withdrawal",
                "--kind",
                "sleep",
                "--args",
                &args,
            ],
        )
        .await;
        assert!(output.status.success(), "{}", stderr(&output));
    }
    // Kill the worker while it holds jobs.
    wait_for("jobs running", WAIT, || async {
        let jobs = jobs_list(url, "tron.withdrawal").await;
        (jobs.iter().filter(|job| job["state"] == "running").count() >= 2).then_some(())
    })
    .await;
    signal(running["pid"].as_i64().unwrap() as i32, Signal::SIGKILL);
    let jobs = wait_for("every job completed", Duration::from_secs(60), || async {
        let jobs = jobs_list(url, "tron.withdrawal").await;
        jobs.iter()
            .all(|job| job["state"] == "completed")
            .then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), 12, "none lost, none duplicated");
    let rescued = jobs
        .iter()
        .filter(|job| job["rescues"].as_i64() > Some(0))
        .count();
    assert!(
        rescued >= 1,
        "the killed worker's jobs were taken back: {jobs:?}"
    );
    for job in &jobs {
        // A rescued job ran twice; the first run could not complete it (its token was stale).
        let attempts = job["attempt"].as_i64().unwrap();
        assert_eq!(attempts, 1 + job["rescues"].as_i64().unwrap(), "{job}");
    }
    assert!(up.stop().await.success());
}

/// With `queue_backend = "redis"`, the same CLI and workers run jobs from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_jobs_from_redis() {
    let db = TestDb::sqlite();
    let prefix = format!("cs-test-{}:", std::process::id());
    let config = db.dir().join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.2\nqueue_backend = \"redis\"\nredis_prefix = \"{prefix}\"\n[[workers]]\nkind = \"deposit\"\nchain = \"ethereum\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let up = Up::start(
        &["--config", &config],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    wait_worker(&db.url, "ethereum-deposit-1", "running", |worker| {
        worker["status"] == "running"
    })
    .await;
    let cli = |args: &[&str]| {
        let mut command = coinsensei(["--config", config.as_str()].iter().chain(args));
        command.env("COINSENSEI_DATABASE_URL", &db.url);
        command
    };
    for n in 0..5 {
        let args = format!("{{\"n\": {n}}}");
        let output = cli(&[
            "jobs",
            "enqueue",
            "--queue",
            "ethereum.deposit",
            "--kind",
            "noop",
            "--args",
            &args,
        ])
        .output()
        .await
        .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
    }
    wait_for("the redis jobs completed", WAIT, || async {
        let output = cli(&["queues", "list", "--json"]).output().await.unwrap();
        let queues: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).ok()?;
        queues
            .iter()
            .any(|queue| queue["name"] == "ethereum.deposit" && queue["completed"] == 5)
            .then_some(())
    })
    .await;
    assert!(up.stop().await.success());
    let redis = queue::RedisBackend::connect("redis://127.0.0.1:6379/", &prefix)
        .await
        .unwrap();
    assert!(
        redis.delete_everything().await.unwrap() > 0,
        "the jobs lived in redis under the prefix"
    );
}

testkit::on_both_stores!(
    up_runs_jobs_and_survives_a_killed_worker,
    up_supervises_workers_that_obey_the_cli,
    a_killed_worker_is_lost_and_a_terminated_one_offline,
    a_child_that_cannot_run_is_not_restarted,
);

/// `coinsensei bench queue --json` prints every figure the sizing guide relies on, and
/// leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_queue_reports_every_figure() {
    let output = coinsensei([
        "bench",
        "queue",
        "--backend",
        "sqlite",
        "--jobs",
        "300",
        "--concurrency",
        "4",
        "--recovery-trials",
        "2",
        "--json",
    ])
    .output()
    .await
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in [
        "enqueue_bulk_per_s",
        "enqueue_single_per_s",
        "processed_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
        "recovery_p99_s",
    ] {
        assert!(
            report[key].as_f64().is_some_and(|value| value > 0.0),
            "{key}: {report}"
        );
    }
    assert_eq!(
        (
            report["backend"].as_str(),
            report["jobs"].as_u64(),
            report["concurrency"].as_u64()
        ),
        (Some("sqlite"), Some(300), Some(4))
    );
    assert_eq!(report["jobs_lost"], 0);
    let recovery = report["recovery_p99_s"].as_f64().unwrap();
    let lease = domain::limits::JOB_LEASE_DEFAULT.as_secs_f64();
    assert!(
        recovery >= lease * 0.9 && recovery <= lease + 5.0,
        "recovery follows the lease: {recovery}"
    );
}
