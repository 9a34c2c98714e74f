//! The store's conformance suite: every store operation, run against Postgres and SQLite.
//! Both dialects must behave the same; a case that passes on one and fails on the other is a
//! bug in the dialect, not in the case.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use domain::{Chain, ControlAction, DesiredState, WorkerId, WorkerKind, WorkerStatus};
use store::{
    AuditInsert, AuditList, Change, Store, StoreError, StoreOptions, WorkerControl,
    WorkerHeartbeat, WorkerList, WorkerReap, WorkerRegister, WorkerStatusSet,
};
use testkit::{Backend, TestDb};

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn id(text: &str) -> WorkerId {
    WorkerId::new(text).unwrap()
}

fn register(
    worker: &str,
    kind: WorkerKind,
    chain: Chain,
    incarnation: &str,
    now: DateTime<Utc>,
) -> WorkerRegister {
    WorkerRegister {
        id: id(worker),
        name: format!("{chain} {kind}"),
        kind,
        chain,
        pid: Some(4242),
        host: Some("host-a".into()),
        port: None,
        version: Some("0.1.0".into()),
        config: serde_json::json!({"concurrency": 5}),
        incarnation: incarnation.into(),
        now,
    }
}

fn status_set(
    worker: &str,
    incarnation: &str,
    from: WorkerStatus,
    to: WorkerStatus,
    now: DateTime<Utc>,
) -> WorkerStatusSet {
    WorkerStatusSet {
        id: id(worker),
        incarnation: incarnation.into(),
        from,
        to,
        error: None,
        applied_generation: None,
        now,
    }
}

fn control(worker: &str, action: ControlAction, now: DateTime<Utc>) -> WorkerControl {
    WorkerControl {
        id: id(worker),
        action,
        actor: "cli:alice".into(),
        now,
    }
}

async fn audit_count(store: &Store) -> usize {
    store
        .audit_list(&AuditList {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

async fn migrations_apply_once_and_report_current(db: &TestDb) {
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let dialect = match db.backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    let files = std::fs::read_dir(format!(
        "{}/migrations/{dialect}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .count();
    assert_eq!(
        store.migrations_pending().await.unwrap(),
        files,
        "every migration file is embedded"
    );
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.migrations_pending().await.unwrap(), 0);
    store.ping().await.unwrap();
}

async fn register_creates_then_takes_over_keeping_operator_intent(db: &TestDb) {
    let store = db.store().await;
    let row = store
        .worker_register(&register(
            "tron-withdrawal-1",
            WorkerKind::Withdrawal,
            Chain::Tron,
            "inc-1",
            at(0),
        ))
        .await
        .unwrap();
    assert_eq!(row.status, WorkerStatus::Starting);
    assert_eq!(row.desired_state, DesiredState::Running);
    assert_eq!((row.kind, row.chain), (WorkerKind::Withdrawal, Chain::Tron));
    assert_eq!(row.pid, Some(4242));
    assert_eq!(row.last_heartbeat, Some(at(0)));
    assert_eq!(row.config["concurrency"], 5);
    assert_eq!(row.created_at, at(0));

    store
        .worker_status_set(&status_set(
            "tron-withdrawal-1",
            "inc-1",
            WorkerStatus::Starting,
            WorkerStatus::Running,
            at(1),
        ))
        .await
        .unwrap();
    store
        .worker_control(&control("tron-withdrawal-1", ControlAction::Stop, at(2)))
        .await
        .unwrap();
    store
        .worker_control(&control("tron-withdrawal-1", ControlAction::Restart, at(3)))
        .await
        .unwrap();

    // A new process takes the row over: new incarnation, counters reset, operator intent kept.
    let row = store
        .worker_register(&register(
            "tron-withdrawal-1",
            WorkerKind::Withdrawal,
            Chain::Tron,
            "inc-2",
            at(10),
        ))
        .await
        .unwrap();
    assert_eq!(row.status, WorkerStatus::Starting);
    assert_eq!(row.incarnation.as_deref(), Some("inc-2"));
    assert_eq!(row.desired_state, DesiredState::Running);
    assert_eq!(row.generation, 1);
    assert_eq!(
        row.applied_generation, 1,
        "a new process starts on the current generation"
    );
    assert_eq!(row.created_at, at(0));
    assert_eq!(row.started_at, Some(at(10)));

    // The old process is fenced out.
    let heartbeat = WorkerHeartbeat {
        id: id("tron-withdrawal-1"),
        incarnation: "inc-1".into(),
        rss_bytes: Some(1),
        in_flight: 0,
        processed_total: 0,
        failed_total: 0,
        now: at(11),
    };
    assert!(matches!(
        store.worker_heartbeat(&heartbeat).await,
        Err(StoreError::Superseded(_))
    ));
    let stale = status_set(
        "tron-withdrawal-1",
        "inc-1",
        WorkerStatus::Starting,
        WorkerStatus::Running,
        at(11),
    );
    assert!(matches!(
        store.worker_status_set(&stale).await,
        Err(StoreError::Superseded(_))
    ));
}

async fn register_refuses_an_id_of_another_kind(db: &TestDb) {
    let store = db.store().await;
    store
        .worker_register(&register(
            "w1",
            WorkerKind::Deposit,
            Chain::Ethereum,
            "a",
            at(0),
        ))
        .await
        .unwrap();
    let error = store
        .worker_register(&register(
            "w1",
            WorkerKind::Withdrawal,
            Chain::Ethereum,
            "b",
            at(1),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict(message) if message.contains("ethereum deposit")),
        "{error}"
    );
    let row = store.worker_get(&id("w1")).await.unwrap().unwrap();
    assert_eq!(
        (row.kind, row.incarnation.as_deref()),
        (WorkerKind::Deposit, Some("a")),
        "nothing changed"
    );
}

async fn heartbeat_records_usage_and_returns_desired_state(db: &TestDb) {
    let store = db.store().await;
    store
        .worker_register(&register(
            "w1",
            WorkerKind::Deposit,
            Chain::Bitcoin,
            "a",
            at(0),
        ))
        .await
        .unwrap();
    store
        .worker_control(&control("w1", ControlAction::Stop, at(1)))
        .await
        .unwrap();
    let heartbeat = WorkerHeartbeat {
        id: id("w1"),
        incarnation: "a".into(),
        rss_bytes: Some(12_345_678),
        in_flight: 3,
        processed_total: 17,
        failed_total: 2,
        now: at(5),
    };
    let row = store.worker_heartbeat(&heartbeat).await.unwrap();
    assert_eq!(row.desired_state, DesiredState::Stopped);
    assert_eq!(row.last_heartbeat, Some(at(5)));
    assert_eq!(
        (
            row.rss_bytes,
            row.in_flight,
            row.processed_total,
            row.failed_total
        ),
        (Some(12_345_678), 3, 17, 2)
    );
    let unknown = WorkerHeartbeat {
        id: id("nobody"),
        ..heartbeat
    };
    assert!(matches!(
        store.worker_heartbeat(&unknown).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn status_changes_are_compare_and_set(db: &TestDb) {
    let store = db.store().await;
    store
        .worker_register(&register(
            "w1",
            WorkerKind::Withdrawal,
            Chain::Ethereum,
            "a",
            at(0),
        ))
        .await
        .unwrap();
    let running = store
        .worker_status_set(&status_set(
            "w1",
            "a",
            WorkerStatus::Starting,
            WorkerStatus::Running,
            at(1),
        ))
        .await
        .unwrap();
    assert_eq!(running.status, WorkerStatus::Running);

    // The row is no longer `starting`: the same change again loses the compare-and-set.
    let again = store
        .worker_status_set(&status_set(
            "w1",
            "a",
            WorkerStatus::Starting,
            WorkerStatus::Running,
            at(2),
        ))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    // A transition the table forbids never reaches the database.
    let forbidden = store
        .worker_status_set(&status_set(
            "w1",
            "a",
            WorkerStatus::Offline,
            WorkerStatus::Running,
            at(2),
        ))
        .await;
    assert!(
        matches!(forbidden, Err(StoreError::Invalid(_))),
        "{forbidden:?}"
    );
    // Same status: refused, unless it records the generation the process has applied.
    let same = status_set(
        "w1",
        "a",
        WorkerStatus::Running,
        WorkerStatus::Running,
        at(2),
    );
    let refused = store.worker_status_set(&same).await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    let recorded = store
        .worker_status_set(&WorkerStatusSet {
            applied_generation: Some(7),
            ..same
        })
        .await
        .unwrap();
    assert_eq!(
        (recorded.status, recorded.applied_generation),
        (WorkerStatus::Running, 7)
    );

    let mut to_error = status_set("w1", "a", WorkerStatus::Running, WorkerStatus::Error, at(3));
    to_error.error = Some(format!("node timeout {}", "é".repeat(2_000)));
    let errored = store.worker_status_set(&to_error).await.unwrap();
    let last_error = errored.last_error.unwrap();
    assert!(last_error.starts_with("node timeout"));
    assert!(
        last_error.len() <= domain::limits::LAST_ERROR_LEN_MAX,
        "last_error is bounded"
    );

    // Recovery keeps the last error for the operator to read, and records the generation.
    let mut recovered = status_set("w1", "a", WorkerStatus::Error, WorkerStatus::Running, at(4));
    recovered.applied_generation = Some(0);
    let recovered = store.worker_status_set(&recovered).await.unwrap();
    assert_eq!(recovered.status, WorkerStatus::Running);
    assert!(recovered.last_error.is_some());
    assert_eq!(recovered.updated_at, at(4));
}

async fn controls_write_desired_state_and_audit_atomically(db: &TestDb) {
    let store = db.store().await;
    store
        .worker_register(&register(
            "w1",
            WorkerKind::Consolidation,
            Chain::Tron,
            "a",
            at(0),
        ))
        .await
        .unwrap();
    store
        .worker_status_set(&status_set(
            "w1",
            "a",
            WorkerStatus::Starting,
            WorkerStatus::Running,
            at(1),
        ))
        .await
        .unwrap();

    let stopped = store
        .worker_control(&control("w1", ControlAction::Stop, at(2)))
        .await
        .unwrap();
    assert_eq!(
        (stopped.desired_state, stopped.generation),
        (DesiredState::Stopped, 0)
    );
    let restarted = store
        .worker_control(&control("w1", ControlAction::Restart, at(3)))
        .await
        .unwrap();
    assert_eq!(
        (restarted.desired_state, restarted.generation),
        (DesiredState::Running, 1)
    );

    let entries = store
        .audit_list(&AuditList {
            target: Some("worker:w1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = entries.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(actions, ["worker.restart", "worker.stop"], "newest first");
    assert_eq!(entries[0].actor, "cli:alice");
    assert_eq!(entries[0].at, at(3));
    assert_eq!(entries[0].details["generation"], 1);
    assert_eq!(entries[1].details["desired_state"]["from"], "running");
    assert_eq!(entries[1].details["desired_state"]["to"], "stopped");

    // Meaningless and unknown: refused, and nothing written.
    let before = audit_count(&store).await;
    let refused = store
        .worker_control(&control("w1", ControlAction::Start, at(4)))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Refused(_))),
        "{refused:?}"
    );
    let unknown = store
        .worker_control(&control("nobody", ControlAction::Stop, at(4)))
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { .. })),
        "{unknown:?}"
    );
    assert_eq!(audit_count(&store).await, before);
    assert_eq!(
        store
            .worker_get(&id("w1"))
            .await
            .unwrap()
            .unwrap()
            .generation,
        1
    );
}

async fn racing_controls_take_effect_once(db: &TestDb) {
    let store = db.store().await;
    store
        .worker_register(&register(
            "w1",
            WorkerKind::Withdrawal,
            Chain::Tron,
            "a",
            at(0),
        ))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .worker_control(&control("w1", ControlAction::Stop, at(1)))
                .await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(StoreError::Refused(_)) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(accepted, 1, "exactly one stop wins");
    assert_eq!(audit_count(&store).await, 1, "and exactly one audit entry");
}

async fn reaper_marks_stale_live_workers_lost(db: &TestDb) {
    let store = db.store().await;
    for (worker, incarnation, seen) in [
        ("fresh", "a", 100),
        ("stale", "b", 10),
        ("stale-stopped", "c", 20),
        ("gone", "d", 0),
    ] {
        store
            .worker_register(&register(
                worker,
                WorkerKind::Deposit,
                Chain::Tron,
                incarnation,
                at(seen),
            ))
            .await
            .unwrap();
    }
    store
        .worker_status_set(&status_set(
            "stale-stopped",
            "c",
            WorkerStatus::Starting,
            WorkerStatus::Stopped,
            at(20),
        ))
        .await
        .unwrap();
    store
        .worker_status_set(&status_set(
            "gone",
            "d",
            WorkerStatus::Starting,
            WorkerStatus::Offline,
            at(0),
        ))
        .await
        .unwrap();

    let reap = WorkerReap {
        heartbeat_before: at(85),
        limit: 100,
        actor: "reaper".into(),
        now: at(100),
    };
    let reaped = store.worker_reap(&reap).await.unwrap();
    let mut ids: Vec<&str> = reaped.iter().map(|row| row.id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["stale", "stale-stopped"],
        "offline and fresh workers are left alone"
    );
    assert!(
        reaped
            .iter()
            .all(|row| row.status == WorkerStatus::Lost && row.updated_at == at(100))
    );
    assert!(
        store.worker_reap(&reap).await.unwrap().is_empty(),
        "a second pass finds nothing"
    );

    let entries = store
        .audit_list(&AuditList {
            action: Some("worker.lost".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    let stopped_entry = entries
        .iter()
        .find(|entry| entry.target == "worker:stale-stopped")
        .unwrap();
    assert_eq!(stopped_entry.details["status_before"], "stopped");
    assert_eq!(stopped_entry.actor, "reaper");

    // A lost worker that answers again reports what it is.
    let back = store
        .worker_status_set(&status_set(
            "stale",
            "b",
            WorkerStatus::Lost,
            WorkerStatus::Running,
            at(101),
        ))
        .await
        .unwrap();
    assert_eq!(back.status, WorkerStatus::Running);
}

async fn lists_filter_and_page(db: &TestDb) {
    let store = db.store().await;
    let mut expected = Vec::new();
    for chain in Chain::ALL {
        for kind in WorkerKind::ALL {
            let worker = format!("{chain}-{kind}-1");
            store
                .worker_register(&register(&worker, *kind, chain, "a", at(0)))
                .await
                .unwrap();
            expected.push(worker);
        }
    }
    expected.sort();
    let all = store
        .worker_list(&WorkerList {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|row| row.id.to_string()).collect::<Vec<_>>(),
        expected
    );

    let tron = store
        .worker_list(&WorkerList {
            chain: Some(Chain::Tron),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tron.len(), 3);
    let tron_deposit = WorkerList {
        chain: Some(Chain::Tron),
        kind: Some(WorkerKind::Deposit),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.worker_list(&tron_deposit).await.unwrap().len(), 1);
    let running = WorkerList {
        status: Some(WorkerStatus::Running),
        limit: 100,
        ..Default::default()
    };
    assert!(store.worker_list(&running).await.unwrap().is_empty());

    let page = store
        .worker_list(&WorkerList {
            limit: 4,
            offset: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter()
            .map(|row| row.id.to_string())
            .collect::<Vec<_>>(),
        expected[4..8]
    );
}

async fn audit_log_filters_pages_and_validates(db: &TestDb) {
    let store = db.store().await;
    for n in 0..5 {
        let insert = AuditInsert {
            actor: if n % 2 == 0 {
                "alice".into()
            } else {
                "bob".into()
            },
            action: "token.create".into(),
            target: format!("token:{n}"),
            details: serde_json::json!({"n": n}),
            now: at(n),
        };
        let row = store.audit_insert(&insert).await.unwrap();
        assert_eq!((row.at, row.details["n"].as_i64()), (at(n), Some(n)));
    }
    let alice = store
        .audit_list(&AuditList {
            actor: Some("alice".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        alice
            .iter()
            .map(|entry| entry.details["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [4, 2, 0]
    );
    let first_page = store
        .audit_list(&AuditList {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let second_page = store
        .audit_list(&AuditList {
            limit: 2,
            before_id: Some(first_page[1].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        second_page
            .iter()
            .map(|entry| entry.details["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [2, 1]
    );

    let empty_actor = AuditInsert {
        actor: String::new(),
        action: "x".into(),
        target: "y".into(),
        details: serde_json::json!({}),
        now: at(0),
    };
    assert!(matches!(
        store.audit_insert(&empty_actor).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(audit_count(&store).await, 5);
}

async fn change_feed_sees_another_connections_writes(db: &TestDb) {
    let store = db.store().await;
    store
        .worker_register(&register(
            "w1",
            WorkerKind::Deposit,
            Chain::Tron,
            "a",
            at(0),
        ))
        .await
        .unwrap();
    let mut feed = store.change_feed().await.unwrap();
    // A separate pool stands in for another process (the CLI or the control plane).
    let other = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    other
        .worker_control(&control("w1", ControlAction::Stop, at(1)))
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("a change within 5 s")
        .expect("feed open");
    match db.backend {
        Backend::Postgres => assert_eq!(change, Change::Worker(id("w1"))),
        Backend::Sqlite => assert_eq!(change, Change::Unknown),
    }
}

async fn time_is_stored_to_the_millisecond(db: &TestDb) {
    let store = db.store().await;
    let now = at(0) + TimeDelta::milliseconds(123);
    let row = store
        .worker_register(&register("w1", WorkerKind::Deposit, Chain::Tron, "a", now))
        .await
        .unwrap();
    assert_eq!(row.last_heartbeat, Some(now));
}

testkit::on_both_stores!(
    db:
    migrations_apply_once_and_report_current,
    register_creates_then_takes_over_keeping_operator_intent,
    register_refuses_an_id_of_another_kind,
    heartbeat_records_usage_and_returns_desired_state,
    status_changes_are_compare_and_set,
    controls_write_desired_state_and_audit_atomically,
    racing_controls_take_effect_once,
    reaper_marks_stale_live_workers_lost,
    lists_filter_and_page,
    audit_log_filters_pages_and_validates,
    change_feed_sees_another_connections_writes,
    time_is_stored_to_the_millisecond,
);
