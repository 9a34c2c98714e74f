//! The operator commands against a remote control plane (`--server URL`, token from
//! `COINSENSEI_TOKEN`): the real binary talks to a real `coinsensei serve` over HTTP, with no
//! database configured on the client side, and the audit log names the token.

mod common;

use std::process::{Output, Stdio};

use chrono::Utc;
use common::*;
use domain::{Chain, WorkerId, WorkerKind};
use store::AuditList;
use testkit::TestDb;

/// Runs `coinsensei ARGS` with only a server and a token: no database URL, and a data
/// directory that does not exist, so a command that fell back to the local path would fail.
async fn remote(server: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = coinsensei(args);
    command
        .env("COINSENSEI_SERVER", server)
        .env("COINSENSEI_DATA_DIR", "/nonexistent/coinsensei")
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env("COINSENSEI_TOKEN", token);
    }
    command.output().await.expect("run coinsensei")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_drive_a_remote_control_plane() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    store
        .worker_register(&store::WorkerRegister {
            id: WorkerId::new("tron-withdrawal-1").unwrap(),
            name: "tron-withdrawal-1".into(),
            kind: WorkerKind::Withdrawal,
            chain: Chain::Tron,
            pid: Some(1),
            host: Some("h".into()),
            port: None,
            version: None,
            config: serde_json::json!({}),
            incarnation: "inc".into(),
            now: Utc::now(),
        })
        .await
        .unwrap();
    let operator = token(&db.url, "operator", "ops laptop").await;
    let viewer = token(&db.url, "viewer", "wallboard").await;
    let serve = Up::serve(&[], &[("COINSENSEI_DATABASE_URL", db.url.as_str())]).await;
    let server = format!("http://{}", serve.address);

    // Reads: the same table and JSON as the local commands.
    let output = remote(&server, Some(&viewer), &["workers", "list"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("tron-withdrawal-1"),
        "{}",
        stdout(&output)
    );
    let output = remote(
        &server,
        Some(&viewer),
        &["workers", "list", "--json", "--chain", "tron"],
    )
    .await;
    let workers: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(workers[0]["id"], "tron-withdrawal-1");
    let output = remote(&server, Some(&viewer), &["queues", "list", "--json"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let output = remote(&server, Some(&viewer), &["jobs", "list"]).await;
    assert!(output.status.success() && stdout(&output).contains("no jobs match"));

    // The flag wins over the environment.
    let output = remote(
        "http://127.0.0.1:9",
        Some(&viewer),
        &["workers", "list", "--server", &server],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));

    // A viewer may not act: the server's reason, exit 1, nothing written.
    let output = remote(
        &server,
        Some(&viewer),
        &["workers", "stop", "tron-withdrawal-1"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("needs the operator role"),
        "{}",
        stderr(&output)
    );

    // An operator stops the worker; the audit log names the operator's token.
    let output = remote(
        &server,
        Some(&operator),
        &["workers", "stop", "tron-withdrawal-1"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("desired state stopped"),
        "{}",
        stdout(&output)
    );
    let entries = store
        .audit_list(&AuditList {
            action: Some("worker.stop".into()),
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0].actor.ends_with(":ops laptop"),
        "{}",
        entries[0].actor
    );
    // Stopping it again is meaningless: the reason, exit 1.
    let output = remote(
        &server,
        Some(&operator),
        &["workers", "stop", "tron-withdrawal-1"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("already desired stopped"),
        "{}",
        stderr(&output)
    );
    let output = remote(&server, Some(&operator), &["workers", "start", "nope"]).await;
    assert!(
        stderr(&output).contains("worker nope not found"),
        "{}",
        stderr(&output)
    );
    let output = remote(&server, Some(&operator), &["jobs", "retry", "4242"]).await;
    assert!(stderr(&output).contains("not found"), "{}", stderr(&output));

    // Missing token, a bad URL, an unreachable server, a local-only command: clear errors.
    let output = remote(&server, None, &["workers", "list"]).await;
    assert!(
        stderr(&output).contains("COINSENSEI_TOKEN"),
        "{}",
        stderr(&output)
    );
    let output = remote("http://192.0.2.1:9", Some(&viewer), &["queues", "list"]).await;
    assert!(
        stderr(&output).contains("token crosses the network unencrypted"),
        "{}",
        stderr(&output)
    );
    let output = remote("ftp://example", Some(&viewer), &["workers", "list"]).await;
    assert!(
        stderr(&output).contains("not an http"),
        "{}",
        stderr(&output)
    );
    let output = remote("http://127.0.0.1:9", Some(&viewer), &["queues", "list"]).await;
    assert!(
        stderr(&output).contains("cannot reach the control plane"),
        "{}",
        stderr(&output)
    );
    let output = remote(
        &server,
        Some(&operator),
        &["jobs", "enqueue", "--queue", "q", "--kind", "noop"],
    )
    .await;
    assert!(
        stderr(&output).contains("no --server form"),
        "{}",
        stderr(&output)
    );
    let wrong = format!("cst_{}", "ab".repeat(32));
    let output = remote(&server, Some(&wrong), &["workers", "list"]).await;
    assert!(
        stderr(&output).contains("unknown or revoked token"),
        "{}",
        stderr(&output)
    );
    let output = remote(&server, Some("cst_wrong"), &["workers", "list"]).await;
    assert!(
        stderr(&output).contains("not a CoinSensei token"),
        "{}",
        stderr(&output)
    );
    serve.stop().await;
}

/// Four eyes from the command line: a withdrawal above its asset's `approval_above` waits in
/// `approval`; `withdrawals approve` by two operator tokens against the server releases it
/// (the audit log names both); `reject` needs a reason; the local form is refused, since
/// approvals are counted per token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_are_approved_from_the_command_line() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let config = db.dir().join("policy.toml");
    std::fs::write(
        &config,
        "[[withdrawal_policy]]\nchain = \"tron\"\nasset = \"USDT\"\napproval_above = \"100\"\n",
    )
    .unwrap();
    let backend = token(&db.url, "service", "backend").await;
    let alice = token(&db.url, "operator", "alice").await;
    let bob = token(&db.url, "operator", "bob").await;
    let serve = Up::serve(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", db.url.as_str())],
    )
    .await;
    let server = format!("http://{}", serve.address);
    let create = |key: &'static str, amount: &'static str| {
        let (server, backend) = (server.clone(), backend.clone());
        async move {
            let output = remote(
                &server,
                Some(&backend),
                &[
                    "withdrawals",
                    "create",
                    "--chain",
                    "tron",
                    "--asset",
                    "USDT",
                    "--to",
                    "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7",
                    "--amount",
                    amount,
                    "--reference",
                    "user:9",
                    "--idempotency-key",
                    key,
                    "--json",
                ],
            )
            .await;
            assert!(output.status.success(), "{}", stderr(&output));
            serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
        }
    };
    let held = create("big-1", "250").await;
    assert_eq!(held["state"], "approval");
    let id = held["id"].to_string();
    let output = remote(&server, Some(&alice), &["withdrawals", "approve", &id]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("now approval (1 approval(s))"),
        "{}",
        stdout(&output)
    );
    let output = remote(
        &server,
        Some(&bob),
        &[
            "withdrawals",
            "approve",
            &id,
            "--reason",
            "called the customer",
        ],
    )
    .await;
    assert!(
        stdout(&output).contains("now pending (2 approval(s))"),
        "{}",
        stdout(&output)
    );
    let audit = store
        .audit_list(&AuditList {
            target: Some(format!("withdrawal:{id}")),
            limit: 20,
            ..AuditList::default()
        })
        .await
        .unwrap();
    let approvers: Vec<&str> = audit
        .iter()
        .filter(|entry| entry.action == "withdrawal.approve")
        .map(|entry| entry.actor.as_str())
        .collect();
    assert_eq!(approvers.len(), 2, "{audit:?}");
    assert!(approvers.iter().any(|actor| actor.ends_with(":alice")));

    let other = create("big-2", "300").await["id"].to_string();
    let output = remote(&server, Some(&alice), &["withdrawals", "reject", &other]).await;
    assert!(!output.status.success(), "a rejection needs --reason");
    let output = run(&db.url, &["withdrawals", "approve", &other]).await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--server"), "{}", stderr(&output));
    let output = remote(
        &server,
        Some(&alice),
        &[
            "withdrawals",
            "reject",
            &other,
            "--reason",
            "duplicate request",
        ],
    )
    .await;
    assert!(
        stdout(&output).contains("now failed"),
        "{}",
        stdout(&output)
    );
}

/// Allowlist mode from the command line, against a real `serve` on SQLite:
/// `withdrawals destinations add|list|remove` with `--server` (an admin token; an operator's
/// is refused) and locally (the same rules, the local operator named in the audit log); a
/// withdrawal to an unregistered destination is refused naming the rule, one to a registered
/// destination past its cool-down (none here) is created, and after the removal refused again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawal_destinations_from_the_command_line() {
    const TO: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";
    let db = TestDb::sqlite();
    let store = db.store().await;
    let config = db.dir().join("allowlist.toml");
    std::fs::write(
        &config,
        "withdrawal_allowlist = true\nwithdrawal_allowlist_cooldown = 0\n",
    )
    .unwrap();
    let backend = token(&db.url, "service", "backend").await;
    let admin = token(&db.url, "admin", "root").await;
    let operator = token(&db.url, "operator", "ops").await;
    let serve = Up::serve(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", db.url.as_str())],
    )
    .await;
    let server = format!("http://{}", serve.address);
    let withdraw = |key: &'static str| {
        let (server, backend) = (server.clone(), backend.clone());
        async move {
            remote(
                &server,
                Some(&backend),
                &[
                    "withdrawals",
                    "create",
                    "--chain",
                    "tron",
                    "--asset",
                    "TRX",
                    "--to",
                    TO,
                    "--amount",
                    "1",
                    "--reference",
                    "user:1/w",
                    "--idempotency-key",
                    key,
                    "--json",
                ],
            )
            .await
        }
    };
    let output = withdraw("w-1").await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("not a registered tron withdrawal destination")
            && stderr(&output).contains("withdrawal_allowlist")
            && stderr(&output).contains("policy_refused"),
        "{}",
        stderr(&output)
    );

    let add = [
        "withdrawals",
        "destinations",
        "add",
        "--chain",
        "tron",
        "--address",
        TO,
        "--label",
        "exchange cold wallet",
        "--json",
    ];
    let output = remote(&server, Some(&operator), &add).await;
    assert!(!output.status.success(), "an operator may not register");
    assert!(stderr(&output).contains("admin"), "{}", stderr(&output));
    let output = remote(&server, Some(&admin), &add).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let added: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(added["address"], TO);
    assert_eq!(added["usable"], true, "no cool-down configured");
    let output = remote(&server, Some(&admin), &add).await;
    assert!(
        stderr(&output).contains("registered already"),
        "{}",
        stderr(&output)
    );
    let output = remote(
        &server,
        Some(&operator),
        &["withdrawals", "destinations", "list"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(TO) && stdout(&output).contains("exchange cold wallet"),
        "{}",
        stdout(&output)
    );

    let output = withdraw("w-1").await;
    assert!(output.status.success(), "{}", stderr(&output));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(created["state"], "pending");

    let id = added["id"].to_string();
    let output = remote(
        &server,
        Some(&admin),
        &["withdrawals", "destinations", "remove", &id],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(&format!("destination {id} removed")),
        "{}",
        stdout(&output)
    );
    let output = withdraw("w-2").await;
    assert!(
        stderr(&output).contains("not a registered"),
        "{}",
        stderr(&output)
    );

    // Locally, on the same database: the same rules, the local operator audited.
    let other = "TUoHaVjx7n5xz8LwPRDckgFrDWhMhuSuJM";
    let local_add = [
        "withdrawals",
        "destinations",
        "add",
        "--chain",
        "tron",
        "--address",
        other,
        "--label",
        "user 2",
        "--reference",
        "user:2",
        "--config",
        config.to_str().unwrap(),
    ];
    let output = run(&db.url, &local_add).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("registered"),
        "{}",
        stdout(&output)
    );
    let bad = run(
        &db.url,
        &[
            "withdrawals",
            "destinations",
            "add",
            "--chain",
            "tron",
            "--address",
            "0x52908400098527886E0F7030069857D2E4169EE7",
            "--label",
            "wrong chain",
        ],
    )
    .await;
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("address"), "{}", stderr(&bad));
    let output = run(&db.url, &["withdrawals", "destinations", "list", "--json"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["address"], other);
    assert_eq!(listed[0]["reference"], "user:2");
    assert!(
        listed[0]["created_by"]
            .as_str()
            .unwrap()
            .starts_with("cli:")
    );
    let removed = run(
        &db.url,
        &[
            "withdrawals",
            "destinations",
            "remove",
            &listed[0]["id"].to_string(),
        ],
    )
    .await;
    assert!(removed.status.success(), "{}", stderr(&removed));
    let audit = store
        .audit_list(&AuditList {
            target: Some(format!("destination:tron:{other}")),
            limit: 10,
            ..AuditList::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(audit.iter().all(|entry| entry.actor.starts_with("cli:")));
    serve.stop().await;
}
