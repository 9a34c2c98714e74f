//! The supervisor's retirement, on real child processes (a shell that, like a worker, takes
//! a moment to finish on SIGTERM): a retired child is signalled, waited for, audited with
//! its drain time and not restarted; its id cannot be started again while it drains.

use std::path::PathBuf;
use std::time::Duration;

use domain::WorkerId;
use store::AuditList;
use testkit::{TestDb, wait_for};
use tokio_util::sync::CancellationToken;
use worker::{ChildSpec, Supervisor, SupervisorConfig};

fn child(id: &str) -> ChildSpec {
    ChildSpec {
        id: WorkerId::new(id).unwrap(),
        program: PathBuf::from("/bin/sh"),
        // On SIGTERM: "drain" for 300 ms, then exit 0.
        args: vec![
            "-c".into(),
            "trap 'sleep 0.3; exit 0' TERM; while :; do sleep 0.05; done".into(),
        ],
        env: Vec::new(),
    }
}

async fn retired_children_drain_and_stay_gone(db: &TestDb) {
    let store = db.store().await;
    let cancel = CancellationToken::new();
    let supervisor = Supervisor::new(SupervisorConfig::default(), store.clone(), cancel.clone());
    let id = WorkerId::new("extra-1").unwrap();
    assert!(supervisor.spawn(child("extra-1")));
    assert!(supervisor.spawn(child("extra-2")));
    assert!(!supervisor.spawn(child("extra-1")), "one process per id");
    // Let the shells install their trap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(supervisor.retire(&id));
    assert!(supervisor.has(&id), "still draining");
    assert!(!supervisor.spawn(child("extra-1")), "not while it drains");
    let entry = wait_for(
        "the retirement audited",
        Duration::from_secs(10),
        || async {
            store
                .audit_list(&AuditList {
                    action: Some("worker.retired".into()),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .next()
        },
    )
    .await;
    assert_eq!(entry.target, "worker:extra-1");
    let drain_ms = entry.details["drain_ms"].as_u64().unwrap();
    assert!((250..5_000).contains(&drain_ms), "{drain_ms}");
    wait_for("the id free again", Duration::from_secs(5), || async {
        (!supervisor.has(&id)).then_some(())
    })
    .await;
    assert!(supervisor.has(&WorkerId::new("extra-2").unwrap()));
    // Never restarted, never counted as an unexpected exit.
    let exits = store
        .audit_list(&AuditList {
            action: Some("worker.exited".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(exits.is_empty(), "{exits:?}");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), supervisor.wait())
        .await
        .expect("every child stops");
    assert!(!supervisor.has(&WorkerId::new("extra-2").unwrap()));
}

testkit::on_both_stores!(
    db:
    retired_children_drain_and_stay_gone,
);
