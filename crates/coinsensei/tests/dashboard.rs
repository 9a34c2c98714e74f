//! The dashboard end to end, in headless Chromium against a real `coinsensei up` (SQLite, real
//! worker processes): log in, see the workers, stop one and watch its badge turn `stopped`
//! without a reload, start it again, filter (the lists follow a worker into and out of a
//! status filter, live), open its page (health, charts, audit trail),
//! retry a failed job, read the audit log, restart the control plane and watch the page
//! reconnect by itself and show a change made while it was away (an audit log tab too, each
//! entry once), log out, check that a viewer cannot act, and that a page whose token is
//! revoked goes to the login page. Console errors and CSP violations fail it. The browser side is
//! `crates/web/e2e/dashboard.mjs`; screenshots go to `target/dashboard-e2e/test/`.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::browser::{artifacts, free_port, start_script};
use common::*;
use domain::Role;
use testkit::{TestDb, wait_for};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(30);
/// The whole browser script, restart included, takes well under this.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

async fn wait_running(url: &str, id: &str) {
    wait_for(&format!("{id} running"), WAIT, || async {
        let workers = workers_json(url).await;
        find(&workers, id)
            .filter(|worker| worker["status"] == "running")
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium() {
    let db = TestDb::sqlite();
    let dir = db.dir();
    let config = write_config(
        &dir,
        1.0,
        &[("withdrawal", "tron"), ("deposit", "ethereum")],
    );
    let config = config.to_str().unwrap().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [("COINSENSEI_DATABASE_URL", db.url.as_str())];
    let args = ["--config", config.as_str()];
    let mut up = Some(Up::start_at("up", &listen, &args, &env).await);
    let worker = "tron-withdrawal-1";
    wait_running(&db.url, worker).await;
    wait_running(&db.url, "ethereum-deposit-1").await;

    let store = db.store().await;
    let (_, operator) = web::auth::issue(&store, "e2e-operator", Role::Operator, Utc::now())
        .await
        .unwrap();
    let (_, viewer) = web::auth::issue(&store, "e2e-viewer", Role::Viewer, Utc::now())
        .await
        .unwrap();
    let (revoked_row, revoked) = web::auth::issue(&store, "e2e-revoked", Role::Viewer, Utc::now())
        .await
        .unwrap();
    // A queue no worker reads, so the job stays failed until the browser retries it.
    let job = testkit::enqueue_one_shot(&store, "reports").await;
    testkit::fail_next_job(
        &store,
        "reports",
        job,
        "node unreachable: connection refused",
    )
    .await;

    let mut script = start_script(&[
        ("BASE_URL", format!("http://{listen}")),
        ("OPERATOR_TOKEN", operator),
        ("VIEWER_TOKEN", viewer),
        ("REVOKED_TOKEN", revoked),
        ("WORKER", worker.into()),
        ("FAILED_JOB", job.to_string()),
        ("ARTIFACTS", artifacts("test").display().to_string()),
        ("MODE", "test".into()),
    ]);
    let outcome = tokio::time::timeout(SCRIPT_TIMEOUT, async {
        let mut result = None;
        while let Some(line) = script.lines.next_line().await.expect("read the script") {
            if line == "RESTART" {
                // The control plane goes away and comes back on the same address.
                let status = up.take().expect("up is running").stop().await;
                assert!(status.success(), "up stopped cleanly: {status}");
                // A change while the control plane is away: the page must show it after.
                store
                    .worker_control(&store::WorkerControl {
                        id: domain::WorkerId::new("ethereum-deposit-1").unwrap(),
                        action: domain::ControlAction::Stop,
                        actor: "e2e".into(),
                        now: Utc::now(),
                    })
                    .await
                    .unwrap();
                up = Some(Up::start_at("up", &listen, &args, &env).await);
                wait_running(&db.url, worker).await;
                script.stdin.write_all(b"restarted\n").await.unwrap();
            } else if line == "REVOKE" {
                store
                    .api_token_revoke(revoked_row.id, Utc::now())
                    .await
                    .unwrap();
                script.stdin.write_all(b"revoked\n").await.unwrap();
            } else if line.starts_with('{') {
                result = Some(line);
            }
        }
        let status = script.child.wait().await.expect("wait for node");
        (status, result)
    })
    .await;
    let (status, result) = outcome.expect("the browser script finished in time");
    assert!(
        status.success(),
        "the browser script failed ({status}); its output is above"
    );
    let result: serde_json::Value = serde_json::from_str(&result.expect("a result line")).unwrap();
    assert_eq!(result["checks"], "passed", "{result}");
    for screenshot in [
        "workers.png",
        "worker.png",
        "queues.png",
        "audit.png",
        "viewer.png",
    ] {
        let path = artifacts("test").join(screenshot);
        assert!(
            std::fs::metadata(&path).is_ok_and(|meta| meta.len() > 1_000),
            "{} saved",
            path.display()
        );
    }
    if let Some(up) = up {
        up.stop().await;
    }
}
