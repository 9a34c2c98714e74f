//! The dashboard end to end, in headless Chromium against a real `coinsensei up` (SQLite, real
//! worker processes): log in, see the workers, stop one and watch its badge turn `stopped`
//! without a reload, start it again, filter (the lists follow a worker into and out of a
//! status filter, live), open its page (health, charts, audit trail),
//! retry a failed job, read the audit log, restart the control plane and watch the page
//! reconnect by itself and show a change made while it was away (an audit log tab too, each
//! entry once), log out, check that a viewer cannot act, and that a page whose token is
//! revoked goes to the login page; the withdrawals page lists withdrawals made through the
//! store in their states, and one that moves shows its new state without a reload. The
//! trial's items too: destructive actions ask first (cancelling sends nothing), a refused or
//! unsent action says so beside its control, controls dim while not live, a page past the
//! session's stream limit says why, pages fit a 390 px phone, a job page and job search,
//! opened error histories stay open across live updates, UTC times with "ago" on hover, a
//! favicon, a styled page for a bad filter and dark mode. The Health page shows every worker's
//! and chain's checks (a regtest bitcoind configured, in initial block download until the test
//! mines a block, which the open page then shows without a reload) and the autoscaler's
//! policy and decisions.
//! Console errors and CSP violations fail it. The browser side is
//! `crates/web/e2e/dashboard.mjs`; screenshots go to `target/dashboard-e2e/test/`.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::browser::{artifacts, free_port, start_script, start_script_named};
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

/// A withdrawal stored as the intake stores one, without a job (no worker here pays).
async fn withdrawal(store: &store::Store, asset: &str, amount: &str, key: &str) -> i64 {
    let chain = match asset {
        "ETH" => domain::Chain::Ethereum,
        "BTC" => domain::Chain::Bitcoin,
        _ => domain::Chain::Tron,
    };
    let destination = match chain {
        domain::Chain::Ethereum => "0x52908400098527886E0F7030069857D2E4169EE7",
        domain::Chain::Bitcoin => "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
        domain::Chain::Tron => "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7",
    };
    store
        .withdrawal_create(&store::WithdrawalCreate {
            idempotency_key: key.into(),
            request_hash: format!("{:0>64}", key.len()),
            reference: format!("user:{key}"),
            chain,
            asset: asset.into(),
            destination: destination.into(),
            amount: amount.into(),
            actor: "token:9:backend".into(),
            job: None,
            approval: false,
            limits: vec![],
            destination_rule: None,
            now: Utc::now(),
        })
        .await
        .unwrap()
        .row()
        .id
}

/// Moves withdrawal `id` along `states` (each move audited), the last one with `error`.
async fn walk(
    store: &store::Store,
    id: i64,
    states: &[&str],
    txid: Option<String>,
    error: Option<&str>,
) {
    for pair in states.windows(2) {
        let mut transition = store::WithdrawalTransition::new(
            id,
            pair[0].parse().unwrap(),
            pair[1].parse().unwrap(),
            "tron-withdrawal-1",
            Utc::now(),
        );
        if pair[1] == "broadcast" {
            transition.txid = txid.clone();
        }
        if pair[1] == "confirming" || pair[1] == "completed" {
            transition.block_height = Some(68_512_230);
            transition.confirmations = Some(if pair[1] == "completed" { 20 } else { 3 });
        }
        if pair[1] == states[states.len() - 1] {
            transition.error = error.map(str::to_string);
        }
        store.withdrawal_transition(&transition).await.unwrap();
    }
}

/// A few withdrawals in different states, the newest `pending` (the one the script watches
/// move); returns its id.
async fn withdrawals(store: &store::Store) -> i64 {
    let txid = |byte: &str| Some(byte.repeat(32));
    let paid = withdrawal(store, "USDT", "1250000000", "order-1").await;
    walk(
        store,
        paid,
        &[
            "pending",
            "processing",
            "broadcast",
            "confirming",
            "completed",
        ],
        txid("3f"),
        None,
    )
    .await;
    let review = withdrawal(store, "ETH", "250000000000000000", "order-2").await;
    walk(
        store,
        review,
        &["pending", "processing", "broadcast", "manual_review"],
        txid("9c"),
        Some("the transaction landed but reverted on chain; look before paying again"),
    )
    .await;
    let refused = withdrawal(store, "BTC", "150000", "order-3").await;
    walk(
        store,
        refused,
        &["pending", "failed"],
        None,
        Some("refused before signing: the destination is on another network"),
    )
    .await;
    let confirming = withdrawal(store, "TRX", "75000000", "order-4").await;
    walk(
        store,
        confirming,
        &["pending", "processing", "broadcast", "confirming"],
        txid("a1"),
        None,
    )
    .await;
    let canceled = withdrawal(store, "USDT", "5000000", "order-5").await;
    store
        .withdrawal_cancel(canceled, "token:9:backend", Utc::now())
        .await
        .unwrap();
    withdrawal(store, "USDT", "42000000", "order-6").await
}

/// Deposits to an issued Ethereum address as a scanner records them: 0.5 ETH credited, dust
/// ignored, 12.5 USDT credited in block 0, and 2 ETH credited in block 1 (the one the script
/// watches turn reversed when block 1 leaves the chain). No Ethereum node is configured here,
/// so the deposit worker scans nothing of its own.
async fn deposits(store: &store::Store) -> i64 {
    const ALICE: &str = "0x00000000000000000000000000000000000000A1";
    store
        .deposit_address_insert(&store::DepositAddressInsert {
            chain: domain::Chain::Ethereum,
            reference: "user:1".into(),
            index: 0,
            address: ALICE.into(),
            actor: "e2e".into(),
            now: Utc::now(),
        })
        .await
        .unwrap();
    let blocks = [
        store::ScannedBlock {
            number: 0,
            hash: "0xa0".into(),
            parent_hash: "0xgenesis".into(),
        },
        store::ScannedBlock {
            number: 1,
            hash: "0xa1".into(),
            parent_hash: "0xa0".into(),
        },
    ];
    let deposit = |txid: &str, asset: &str, block: u64, amount: u128, ignored: Option<&str>| {
        store::DepositInsert {
            txid: txid.into(),
            asset: asset.into(),
            position: 0,
            address: ALICE.into(),
            sender: None,
            amount: domain::Amount::from_u128(amount),
            block_number: block,
            block_hash: format!("0xa{block}"),
            ignored: ignored.map(str::to_string),
        }
    };
    store
        .scan_commit(
            domain::Chain::Ethereum,
            &blocks,
            &[
                deposit("0xd1", "native", 0, 500_000_000_000_000_000, None),
                deposit(
                    "0xd2",
                    "0xdAC17F958D2ee523a2206206994597C13D831ec7",
                    0,
                    12_500_000,
                    None,
                ),
                deposit("0xd3", "native", 0, 1_000_000_000_000, Some("dust")),
                deposit("0xd4", "native", 1, 2_000_000_000_000_000_000, None),
            ],
            Utc::now(),
        )
        .await
        .unwrap();
    store
        .deposits_credit(domain::Chain::Ethereum, 1, Utc::now())
        .await
        .unwrap();
    store
        .deposits_list(domain::Chain::Ethereum, None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.txid == "0xd4")
        .unwrap()
        .id
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
    // A chain node for the Health page: a fresh regtest node is in initial block download
    // (its sync lag unhealthy) until a block is mined. No bitcoin worker runs here.
    let node = testkit::Bitcoind::start().await;
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "bitcoin_rpc_url = \"{}\"\nbitcoin_rpc_cookie_file = \"{}\"\nbitcoin_network = \"regtest\"\n{text}\n[[autoscale]]\nqueue = \"tron.withdrawal\"\n",
            node.url,
            node.datadir.join("regtest").join(".cookie").display()
        ),
    )
    .unwrap();
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

    let moving = withdrawals(&store).await;
    let doomed = deposits(&store).await;
    // A decision of the autoscaler, as `up`'s autoscaler audits one (this queue never gets
    // deep enough here to make one).
    store
        .audit_insert(&store::AuditInsert {
            actor: "autoscaler".into(),
            action: "autoscaler.scale_up".into(),
            target: "queue:tron.withdrawal".into(),
            details: serde_json::json!({"from": 1, "to": 3, "depth": 80, "workers": ["tron-withdrawal-2", "tron-withdrawal-3"]}),
            now: Utc::now(),
        })
        .await
        .unwrap();

    let mut script = start_script(&[
        ("WITHDRAWAL", moving.to_string()),
        ("DEPOSIT", doomed.to_string()),
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
            if line == "STOP_SERVER" {
                // The control plane goes away (the page then shows it is not live, and says
                // a click was not sent) and comes back at `RESTART` on the same address.
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
                script.stdin.write_all(b"down\n").await.unwrap();
            } else if line == "RESTART" {
                up = Some(Up::start_at("up", &listen, &args, &env).await);
                wait_running(&db.url, worker).await;
                script.stdin.write_all(b"restarted\n").await.unwrap();
            } else if line == "FAIL_ANOTHER" {
                // One more failed job: the failed-jobs table is sent again, whole.
                let another = testkit::enqueue_one_shot(&store, "reports").await;
                testkit::fail_next_job(&store, "reports", another, "node unreachable: timed out")
                    .await;
                script
                    .stdin
                    .write_all(format!("{another}\n").as_bytes())
                    .await
                    .unwrap();
            } else if line == "MOVE_WITHDRAWAL" {
                // A payer takes the watched withdrawal and broadcasts it.
                walk(
                    &store,
                    moving,
                    &["pending", "processing", "broadcast"],
                    Some("5e".repeat(32)),
                    None,
                )
                .await;
                script.stdin.write_all(b"moved\n").await.unwrap();
            } else if line == "REVERSE_DEPOSIT" {
                // Block 1 leaves the chain: its credited deposit is reversed.
                store
                    .scan_rollback(domain::Chain::Ethereum, 0, Utc::now())
                    .await
                    .unwrap();
                script.stdin.write_all(b"reversed\n").await.unwrap();
            } else if line == "MINE_BLOCK" {
                node.cli(&[
                    "generatetoaddress",
                    "1",
                    "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
                ])
                .await;
                script.stdin.write_all(b"mined\n").await.unwrap();
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
        "withdrawals.png",
        "withdrawal.png",
        "deposits.png",
        "confirm.png",
        "job.png",
        "not-sent.png",
        "stream-limit.png",
        "bad-filter.png",
        "workers-dark.png",
        "withdrawals-phone.png",
        "health.png",
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

/// A withdrawal held for approval, created by `creator`'s token as the intake creates one.
async fn held(store: &store::Store, creator: &store::ApiTokenRow, amount: &str, key: &str) -> i64 {
    store
        .withdrawal_create(&store::WithdrawalCreate {
            idempotency_key: key.into(),
            request_hash: format!("{:0>64}", key.len()),
            reference: format!("user:42/{key}"),
            chain: domain::Chain::Tron,
            asset: "USDT".into(),
            destination: "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7".into(),
            amount: amount.into(),
            actor: format!("token:{}:{}", creator.id, creator.name),
            job: None,
            approval: true,
            limits: vec![],
            destination_rule: None,
            now: Utc::now(),
        })
        .await
        .unwrap()
        .row()
        .id
}

/// Four eyes in Chromium (`crates/web/e2e/approvals.mjs`): two operator sessions approve a
/// held withdrawal (asked first, the dialog naming it, its amount and destination), the
/// creator's token is refused, a rejection needs a bounded reason, the withdrawal pages show
/// the decisions, and an admin removes a registered destination. What the browser did is
/// then read from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_in_chromium() {
    let db = TestDb::sqlite();
    let dir = db.dir();
    let config = write_config(&dir, 1.0, &[("deposit", "ethereum")]);
    let config = config.to_str().unwrap().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [("COINSENSEI_DATABASE_URL", db.url.as_str())];
    let up = Up::start_at("up", &listen, &["--config", config.as_str()], &env).await;
    let store = db.store().await;
    let mut tokens = Vec::new();
    for (name, role) in [
        ("e2e-alice", Role::Operator),
        ("e2e-bob", Role::Operator),
        ("e2e-carol", Role::Admin),
    ] {
        tokens.push(
            web::auth::issue(&store, name, role, Utc::now())
                .await
                .unwrap(),
        );
    }
    let carol = &tokens[2].0;
    let approve = held(&store, carol, "1500000000", "w:1").await;
    let reject = held(&store, carol, "250000000", "w:2").await;
    // One that needs a person: in manual review (no withdrawal worker runs here, so its
    // review stays asked, which is what the page shows).
    let review = held(&store, carol, "300000000", "w:3").await;
    for (from, to) in [
        (
            domain::WithdrawalState::Approval,
            domain::WithdrawalState::Pending,
        ),
        (
            domain::WithdrawalState::Pending,
            domain::WithdrawalState::Processing,
        ),
        (
            domain::WithdrawalState::Processing,
            domain::WithdrawalState::ManualReview,
        ),
    ] {
        let mut moved = store::WithdrawalTransition::new(review, from, to, "test", Utc::now());
        moved.error = Some("nonce 4 consumed by a transaction none of ours".into());
        store.withdrawal_transition(&moved).await.unwrap();
    }
    let destination = store
        .withdrawal_destination_insert(&store::DestinationInsert {
            chain: domain::Chain::Tron,
            address: "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7".into(),
            label: "customer 42".into(),
            reference: Some("user:42".into()),
            actor: "token:9:root".into(),
            cooldown: Duration::from_secs(86_400),
            now: Utc::now(),
        })
        .await
        .unwrap();
    let mut script = start_script_named(
        "approvals.mjs",
        &[
            ("BASE_URL", format!("http://{listen}")),
            ("ALICE_TOKEN", tokens[0].1.clone()),
            ("BOB_TOKEN", tokens[1].1.clone()),
            ("CAROL_TOKEN", tokens[2].1.clone()),
            ("APPROVE", approve.to_string()),
            ("REJECT", reject.to_string()),
            ("REVIEW", review.to_string()),
            ("DESTINATION", destination.id.to_string()),
            ("ARTIFACTS", artifacts("approvals").display().to_string()),
        ],
    );
    let outcome = tokio::time::timeout(SCRIPT_TIMEOUT, async {
        let mut result = None;
        while let Some(line) = script.lines.next_line().await.expect("read the script") {
            if line.starts_with('{') {
                result = Some(line);
            }
        }
        (script.child.wait().await.expect("wait for node"), result)
    })
    .await;
    let (status, result) = outcome.expect("the browser script finished in time");
    assert!(status.success(), "the browser script failed ({status})");
    let result: serde_json::Value = serde_json::from_str(&result.expect("a result line")).unwrap();
    assert_eq!(result["checks"], "passed", "{result}");
    // The timings, for whoever runs it with --nocapture (benchmarks measure; this asserts).
    println!("approvals in chromium: {result}");

    // What the clicks did, read from the store: released by alice and bob (each once), the
    // other rejected by bob with his reason, carol never deciding, the destination removed.
    let released = store.withdrawal_get(approve).await.unwrap().unwrap();
    assert_eq!(released.state, domain::WithdrawalState::Pending);
    let decisions = store.withdrawal_approvals(approve).await.unwrap();
    let who: Vec<&str> = decisions.iter().map(|each| each.actor.as_str()).collect();
    assert_eq!(who.len(), 2, "{who:?}");
    assert!(
        who[0].ends_with(":e2e-alice") && who[1].ends_with(":e2e-bob"),
        "{who:?}"
    );
    assert!(decisions.iter().all(|each| each.approve));
    let rejected = store.withdrawal_get(reject).await.unwrap().unwrap();
    assert_eq!(rejected.state, domain::WithdrawalState::Failed);
    assert!(
        rejected
            .error
            .as_deref()
            .is_some_and(|error| error.contains("duplicate of order 7")),
        "{rejected:?}"
    );
    let decisions = store.withdrawal_approvals(reject).await.unwrap();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert!(!decisions[0].approve && decisions[0].actor.ends_with(":e2e-bob"));
    assert_eq!(
        store
            .withdrawal_destination_find(domain::Chain::Tron, "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7")
            .await
            .unwrap(),
        None
    );
    // The review: the mark-paid without a txid refused with nothing stored, the retry asked
    // by bob and waiting for the chain's worker.
    let reviews = store.withdrawal_reviews(review).await.unwrap();
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(reviews[0].action, store::ReviewAction::Retry);
    assert_eq!(reviews[0].state, store::ReviewState::Requested);
    assert!(reviews[0].actor.ends_with(":e2e-bob"), "{reviews:?}");
    assert_eq!(reviews[0].reason, "its nonce is final");
    for screenshot in [
        "review.png",
        "approvals.png",
        "approve-confirm.png",
        "approvals-creator.png",
        "withdrawal-rejected.png",
        "destinations.png",
    ] {
        let path = artifacts("approvals").join(screenshot);
        assert!(
            std::fs::metadata(&path).is_ok_and(|meta| meta.len() > 1_000),
            "{} saved",
            path.display()
        );
    }
    up.stop().await;
}
