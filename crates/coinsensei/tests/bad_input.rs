//! Bad input gets a clear error, a non-zero exit, and changes nothing: no database file
//! created, no row or audit entry written.

mod common;

use std::path::Path;

use common::*;
use store::AuditList;
use testkit::{Backend, TestDb};

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("coinsensei.db").display())
}

fn assert_refused(output: &std::process::Output, expected: &[&str]) {
    let message = stderr(output);
    assert!(
        !output.status.success(),
        "expected failure, got success: {message}"
    );
    for text in expected {
        assert!(
            message.contains(text),
            "stderr should mention {text:?}: {message}"
        );
    }
}

#[tokio::test]
async fn unknown_or_unsupported_workers_are_refused_before_anything_is_written() {
    let db = TestDb::sqlite();
    let url = sqlite_url(&db.dir());
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["worker", "--kind", "withdrawal", "--chain", "solana"],
            &["solana", "tron", "ethereum", "bitcoin"],
        ),
        (
            &["worker", "--kind", "payout", "--chain", "tron"],
            &["payout", "withdrawal", "deposit", "consolidation"],
        ),
        (
            &["worker", "--kind", "consolidation", "--chain", "bitcoin"],
            &[
                "no consolidation worker for bitcoin",
                "supported:",
                "withdrawal/tron",
            ],
        ),
        (
            &[
                "worker",
                "--kind",
                "deposit",
                "--chain",
                "tron",
                "--id",
                "Not An Id",
            ],
            &["--id"],
        ),
    ];
    for (args, expected) in cases {
        let output = run(&url, args).await;
        assert_refused(&output, expected);
    }
    assert!(
        !db.dir().join("coinsensei.db").exists(),
        "no database was created"
    );
}

#[tokio::test]
async fn malformed_configuration_names_the_key() {
    let db = TestDb::sqlite();
    let dir = db.dir();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let files = [
        (
            write("a.toml", "heartbeat_interval = \"soon\"\n"),
            "heartbeat_interval",
        ),
        (
            write("b.toml", "heartbeat_interval = 0\n"),
            "heartbeat_interval",
        ),
        (
            write("c.toml", "databse_url = \"sqlite://x.db\"\n"),
            "databse_url",
        ),
        (write("d.toml", "listen = \"everywhere\"\n"), "listen"),
        (
            write(
                "e.toml",
                "[[workers]]\nkind = \"withdrawal\"\nchain = \"solana\"\n",
            ),
            "workers[0].chain",
        ),
        (write("f.toml", "heartbeat_interval = [\n"), "f.toml"),
        (
            write("g.toml", "health_memory_limit_mb = 0\n"),
            "health_memory_limit_mb",
        ),
        (
            write(
                "h.toml",
                "[[autoscale]]\nqueue = \"tron.deposit\"\nmin_workers = 5\nmax_workers = 2\n",
            ),
            "autoscale[0].min_workers",
        ),
        (
            write(
                "i.toml",
                "[[autoscale]]\nqueue = \"tron.deposit\"\ncooldown = 0\n",
            ),
            "autoscale[0].cooldown",
        ),
        (
            write(
                "j.toml",
                "[[autoscale]]\nqueue = \"tron.deposit\"\nscale_up_depth = -1\n",
            ),
            "autoscale[0].scale_up_depth",
        ),
        (
            write("k.toml", "[[autoscale]]\nqueue = \"solana.deposit\"\n"),
            "autoscale[0].queue",
        ),
    ];
    for (path, key) in &files {
        let output = coinsensei([
            "--config",
            path,
            "--data-dir",
            dir.to_str().unwrap(),
            "migrate",
        ])
        .output()
        .await
        .unwrap();
        assert_refused(&output, &[key]);
    }
    // `up` refuses a bad policy before it serves or starts anything.
    let output = coinsensei([
        "--config",
        &files[7].0,
        "--data-dir",
        dir.to_str().unwrap(),
        "up",
        "--listen",
        "127.0.0.1:0",
    ])
    .output()
    .await
    .unwrap();
    assert_refused(&output, &["autoscale[0].min_workers"]);
    assert!(!dir.join("coinsensei.db").exists(), "nothing written");
    // The same checks apply to environment variables, and name them.
    let output = coinsensei(["--data-dir", dir.to_str().unwrap(), "migrate"])
        .env("COINSENSEI_HEARTBEAT_INTERVAL", "often")
        .output()
        .await
        .unwrap();
    assert_refused(&output, &["heartbeat_interval", "COINSENSEI_"]);
    let output = coinsensei(["--config", "/nonexistent/coinsensei.toml", "migrate"])
        .output()
        .await
        .unwrap();
    assert_refused(&output, &["/nonexistent/coinsensei.toml", "does not exist"]);
    assert!(
        !dir.join("coinsensei.db").exists(),
        "no database was created"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    let url = "postgres://coinsensei:s3cret-pass@127.0.0.1:1/coinsensei";
    // Refused at once (issue 18); run together all the same.
    let (a, b, c) = tokio::join!(
        run(url, &["workers", "list"]),
        run(url, &["migrate"]),
        run(url, &["workers", "stop", "tron-withdrawal-1"])
    );
    for output in [a, b, c] {
        assert_refused(&output, &["127.0.0.1:1"]);
        assert!(
            !stderr(&output).contains("s3cret-pass"),
            "the password leaked: {}",
            stderr(&output)
        );
    }
    let output = run("mysql://root:hunter2@localhost/x", &["migrate"]).await;
    assert_refused(&output, &["database_url"]);
    assert!(!stderr(&output).contains("hunter2"), "{}", stderr(&output));
}

/// Issue 18, case 9: what the CLI says when it cannot reach its database or keystore is one
/// clear sentence: the refused address (at once, not "pool timed out" after the acquire
/// timeout), no cause printed twice, no "at line N" of the server's own source.
#[tokio::test]
async fn connection_and_keystore_errors_read_as_one_sentence() {
    let output = run("postgres://postgres@127.0.0.1:1/test", &["workers", "list"]).await;
    assert_refused(&output, &["connection refused at 127.0.0.1:1"]);
    assert!(
        !stderr(&output).contains("pool timed out"),
        "{}",
        stderr(&output)
    );
    let missing = format!(
        "{}/coinsensei_no_such_database",
        testkit::postgres_admin_url().rsplit_once('/').unwrap().0
    );
    let output = run(&missing, &["workers", "list"]).await;
    assert_refused(&output, &["coinsensei_no_such_database\" does not exist"]);
    assert!(
        !stderr(&output).contains(" at line "),
        "{}",
        stderr(&output)
    );

    let dir = std::env::temp_dir().join(format!("coinsensei-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let password = dir.join("password");
    std::fs::write(&password, "correct horse").unwrap();
    let output = coinsensei(["keys", "address", "--chain", "tron", "--index", "0"])
        .env("COINSENSEI_KEYSTORE", dir.join("missing.json"))
        .env("COINSENSEI_KEYSTORE_PASSWORD_FILE", &password)
        .output()
        .await
        .unwrap();
    let message = stderr(&output);
    assert!(!output.status.success());
    assert_eq!(
        message.matches("No such file or directory").count(),
        1,
        "the cause once: {message}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn operator_commands_never_create_a_database() {
    let db = TestDb::sqlite();
    let url = sqlite_url(&db.dir().join("typo"));
    let output = run(&url, &["workers", "list"]).await;
    assert_refused(&output, &["coinsensei up"]);
    let output = run(&url, &["workers", "stop", "tron-withdrawal-1"]).await;
    assert!(!output.status.success());
    assert!(!db.dir().join("typo").exists(), "nothing was created");
}

async fn unknown_worker_ids_change_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let output = run(&db.url, &["migrate"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    for action in ["start", "stop", "restart"] {
        let output = run(&db.url, &["workers", action, "no-such-worker"]).await;
        assert_refused(&output, &["no worker with id \"no-such-worker\""]);
    }
    let output = run(&db.url, &["workers", "stop", "Bad Id!"]).await;
    assert_refused(&output, &["invalid worker id"]);
    let store = db.store().await;
    assert!(
        store
            .audit_list(&AuditList {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
    assert!(workers_json(&db.url).await.is_empty());
}

#[tokio::test]
async fn unknown_worker_ids_change_nothing_on_postgres() {
    unknown_worker_ids_change_nothing(Backend::Postgres).await;
}

#[tokio::test]
async fn unknown_worker_ids_change_nothing_on_sqlite() {
    unknown_worker_ids_change_nothing(Backend::Sqlite).await;
}

async fn bad_queue_commands_change_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    assert!(run(&db.url, &["migrate"]).await.status.success());
    let enqueue = |extra: &'static [&'static str]| {
        let mut args = vec![
            "jobs",
            "enqueue",
            "--queue",
            "tron.withdrawal",
            "--kind",
            "noop",
        ];
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["jobs", "enqueue", "--queue", "Bad Queue", "--kind", "noop"],
            "invalid --queue",
        ),
        (
            vec!["jobs", "enqueue", "--queue", "q", "--kind", "no op"],
            "invalid --kind",
        ),
        (
            enqueue(&["--args", "{not json"]),
            "--args is not valid JSON",
        ),
        (enqueue(&["--delay=-5"]), "--delay"),
        (enqueue(&["--attempts", "0"]), "--attempts"),
        (
            enqueue(&["--args", "[1,2,3]", "--unique-key", ""]),
            "unique key",
        ),
        (vec!["jobs", "retry", "4242"], "no job with id 4242"),
        (vec!["jobs", "discard", "4242"], "no job with id 4242"),
        (vec!["jobs", "show", "4242"], "no job with id 4242"),
        (vec!["queues", "pause", "nope"], "no queue named nope"),
        (vec!["queues", "limit", "nope", "3"], "no queue named nope"),
        (
            vec!["queues", "retry", "nope", "--attempts", "5"],
            "no queue named nope",
        ),
        (
            vec![
                "queues",
                "retry",
                "tron.withdrawal",
                "--backoff",
                "10",
                "--backoff-max",
                "1",
            ],
            "backoff",
        ),
        (
            vec!["queues", "limit", "tron.withdrawal", "0"],
            "invalid limit",
        ),
        (
            vec!["queues", "limit", "tron.withdrawal", "lots"],
            "invalid limit",
        ),
    ];
    for (args, expected) in &cases {
        let output = run(&db.url, args).await;
        assert_refused(&output, &[expected]);
    }
    let store = db.store().await;
    assert!(
        store
            .queue_stats(chrono::Utc::now())
            .await
            .unwrap()
            .is_empty(),
        "no queue or job was written"
    );
    assert!(
        store
            .audit_list(&AuditList {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn bad_queue_commands_change_nothing_on_postgres() {
    bad_queue_commands_change_nothing(Backend::Postgres).await;
}

#[tokio::test]
async fn bad_queue_commands_change_nothing_on_sqlite() {
    bad_queue_commands_change_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_taken_listen_address_fails_before_writing() {
    let db = TestDb::sqlite();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = coinsensei([
        "up",
        "--data-dir",
        db.dir().to_str().unwrap(),
        "--listen",
        &address,
    ])
    .output()
    .await
    .unwrap();
    assert_refused(&output, &[&address, "COINSENSEI_LISTEN"]);
    assert!(!db.dir().join("coinsensei.db").exists());
}

#[tokio::test]
async fn every_command_has_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["up"],
        &["serve"],
        &["worker"],
        &["migrate"],
        &["workers"],
        &["workers", "list"],
        &["workers", "start"],
        &["workers", "stop"],
        &["workers", "restart"],
        &["queues", "list"],
        &["queues", "pause"],
        &["queues", "limit"],
        &["queues", "retry"],
        &["tokens", "create"],
        &["tokens", "list"],
        &["tokens", "revoke"],
        &["bench", "queue"],
        &["jobs", "enqueue"],
        &["jobs", "list"],
        &["jobs", "show"],
        &["jobs", "retry"],
        &["jobs", "discard"],
        &["health"],
        &["autoscaler", "status"],
    ];
    for command in commands {
        let output = coinsensei(command.iter().chain(&["--help"]))
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command:?} --help failed");
        assert!(
            text.contains("Usage: coinsensei"),
            "{command:?} --help: {text}"
        );
    }
}
