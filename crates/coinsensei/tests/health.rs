//! The health checker through the real binary: `coinsensei health` exits by the worst
//! status (locally and through `--server`), and `up` restarts a worker that stayed unhealthy
//! past its grace period, through the audited control.

mod common;

use std::time::Duration;

use common::*;
use store::AuditList;
use testkit::{Backend, TestDb, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn write(db: &TestDb, memory_limit_mb: u32) -> std::path::PathBuf {
    let config = db.dir().join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.2\ndrain_timeout = 2\nhealth_memory_limit_mb = {memory_limit_mb}\nhealth_restart_after = 1\n[[workers]]\nkind = \"deposit\"\nchain = \"tron\"\n"
        ),
    )
    .unwrap();
    config
}

async fn health(db: &TestDb, config: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["--config", config.to_str().unwrap(), "health"];
    args.extend_from_slice(extra);
    let output = run(&db.url, &args).await;
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output),
    )
}

async fn exit_codes_and_the_restart_action(backend: Backend) {
    let db = TestDb::new(backend).await;
    // A limit no process meets: the worker is unhealthy on memory alone.
    let config = write(&db, 1);
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let generation = wait_for("the worker running", WAIT, || async {
        let workers = workers_json(&db.url).await;
        find(&workers, "tron-deposit-1")
            .filter(|worker| worker["status"] == "running" && worker["rss_bytes"].is_i64())
            .and_then(|worker| worker["generation"].as_i64())
    })
    .await;
    let (code, text) = health(&db, &config, &[]).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("over the 1 MiB limit"), "{text}");
    let (code, text) = health(&db, &config, &["--json"]).await;
    assert_eq!(code, 2, "{text}");
    let report: serde_json::Value = serde_json::from_str(text.lines().collect::<String>().as_str())
        .unwrap_or_else(|error| panic!("{error}: {text}"));
    assert_eq!(report["workers"][0]["checks"][1]["status"], "unhealthy");

    // Through the control plane's API, the same verdict.
    let store = db.store().await;
    let (_, token) = web::auth::issue(&store, "ops", domain::Role::Viewer, chrono::Utc::now())
        .await
        .unwrap();
    let server = format!("http://{}", up.address);
    let through_server = || async {
        coinsensei(["health", "--server", server.as_str()])
            .env("COINSENSEI_TOKEN", &token)
            .output()
            .await
            .unwrap()
    };
    let output = through_server().await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("memory"));

    // Unhealthy for more than a second: restarted, audited with the actor `health`.
    let restart = wait_for("the health restart", WAIT, || async {
        let entries = store
            .audit_list(&AuditList {
                actor: Some("health".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        entries.into_iter().next()
    })
    .await;
    assert_eq!(restart.action, "worker.restart");
    assert_eq!(restart.target, "worker:tron-deposit-1");
    wait_for("the restart applied", WAIT, || async {
        let workers = workers_json(&db.url).await;
        find(&workers, "tron-deposit-1")
            .is_some_and(|worker| {
                worker["applied_generation"].as_i64() > Some(generation)
                    && worker["status"] == "running"
            })
            .then_some(())
    })
    .await;
    assert!(up.stop().await.success());

    // No report to be had is unhealthy, never healthy.
    let output = through_server().await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).starts_with("error: "),
        "{}",
        stderr(&output)
    );

    // A sane limit and the worker gone offline: nothing is judged unhealthy, exit 0.
    let config = write(&db, 4096);
    let (code, text) = health(&db, &config, &[]).await;
    assert_eq!(code, 0, "{text}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_on_sqlite() {
    exit_codes_and_the_restart_action(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_on_postgres() {
    exit_codes_and_the_restart_action(Backend::Postgres).await;
}
