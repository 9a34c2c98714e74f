//! Bitcoin withdrawals end to end on real processes: `coinsensei up` with its Bitcoin
//! withdrawal worker against a private regtest node, requests through `/api/v1/withdrawals`
//! with a service token, the worker process SIGKILLed while it batches and pays, blocks
//! mined until every withdrawal is `completed`, and the chain read at the end (not the
//! store): every recipient received exactly its amount once, in fewer transactions than
//! withdrawals. On both stores. And the crash healing alone: a withdrawal left `processing`
//! while a stored batch holds it is moved to `broadcast` with that batch's txid and paid by
//! it, never by a second transaction, then replaced by fee (RBF) while unconfirmed; and a hot
//! wallet that cannot pay keeps the withdrawal `pending` with the reason until it is funded
//! above the floor it keeps.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chain::address::{Address, Network};
use chain::provider::{Keychain, WatchSet};
use chain_bitcoin::payout::{Payer, Prepared};
use chain_bitcoin::{Bitcoin, FeePolicy, Rpc, UtxoSet};
use common::*;
use domain::{Amount, Chain, WithdrawalState};
use serde_json::json;
use signer::{InProcessSigner, Mnemonic, Signer};
use testkit::{Backend, Bitcoind, TestDb, wait_for};

const MNEMONIC: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon \
     abandon abandon about";
/// Whose addresses the recipients are (nobody here spends them).
const RECIPIENTS: &str =
    "legal winner thank year wave sausage worth useful legal winner thank yellow";
const WORKER: &str = "bitcoin-withdrawal-1";
/// An address of no wallet here (BIP173's regtest example).
const ELSEWHERE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

fn recipient(n: u32) -> Address {
    InProcessSigner::new(&Mnemonic::parse(RECIPIENTS).unwrap(), Network::Regtest)
        .address(Chain::Bitcoin, n)
        .unwrap()
}

fn signer() -> InProcessSigner {
    InProcessSigner::new(&Mnemonic::parse(MNEMONIC).unwrap(), Network::Regtest)
}

fn rpc(node: &Bitcoind) -> Rpc {
    Rpc::with_cookie(&node.url, &node.cookie(), Duration::from_secs(30)).unwrap()
}

async fn bitcoin(node: &Bitcoind) -> Bitcoin {
    Bitcoin::connect(
        rpc(node),
        Network::Regtest,
        signer().xpub(Chain::Bitcoin).unwrap(),
        FeePolicy::default(),
    )
    .await
    .unwrap()
}

/// Mines `blocks` to the hot wallet (key 0), then 101 elsewhere: its coinbase outputs are
/// spendable, and later blocks pay nobody here.
async fn fund(node: &Bitcoind, blocks: u32) {
    let hot = signer().address(Chain::Bitcoin, 0).unwrap().to_string();
    node.cli(&["generatetoaddress", &blocks.to_string(), &hot])
        .await;
    node.cli(&["generatetoaddress", "101", ELSEWHERE]).await;
}

/// Every payment to `recipients` on the node's chain: (recipient, txid, satoshi).
async fn paid_on_chain(node: &Bitcoind, recipients: &[Address]) -> Vec<(String, String, u128)> {
    let tip: u64 = node.cli(&["getblockcount"]).await.parse().unwrap();
    let watch = WatchSet {
        addresses: recipients.to_vec(),
        tokens: vec![],
    };
    let batch = chain_bitcoin::scan_deposits(&rpc(node), Network::Regtest, 1, tip, &watch)
        .await
        .unwrap();
    batch
        .deposits
        .into_iter()
        .map(|deposit| {
            (
                deposit.to.to_string(),
                deposit.txid,
                deposit.amount.base_units().to::<u128>(),
            )
        })
        .collect()
}

/// The config of `up` with a Bitcoin withdrawal worker on `node`.
fn config(db: &TestDb, node: &Bitcoind, extra: &str) -> std::path::PathBuf {
    let dir = db.dir();
    let keystore = common::backend::keystore_lines(&dir, MNEMONIC);
    let config = dir.join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 2\nconcurrency = 8\n\
             bitcoin_rpc_url = \"{}\"\nbitcoin_rpc_cookie_file = \"{}\"\n\
             bitcoin_network = \"regtest\"\nbitcoin_confirmations = 2\n{extra}\
             {keystore}\
             [[workers]]\nkind = \"withdrawal\"\nchain = \"bitcoin\"\n",
            node.url,
            node.datadir.join("regtest/.cookie").display(),
        ),
    )
    .unwrap();
    config
}

async fn service_api(db: &TestDb, up: &Up) -> common::backend::Backend {
    common::backend::Backend::new(&db.url, up).await
}

async fn bitcoin_withdrawals_are_batched_and_paid_once_through_kills(backend: Backend) {
    let db = TestDb::new(backend).await;
    let node = Bitcoind::start().await;
    fund(&node, 12).await;
    let config = config(
        &db,
        &node,
        "bitcoin_batch_max = 10\nbitcoin_batch_wait = 3\n",
    );
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let api = service_api(&db, &up).await;
    let started = Instant::now();

    const COUNT: u32 = 30;
    let mut first_kill: Option<i64> = None;
    let mut expected = BTreeMap::new();
    for n in 0..COUNT {
        let to = recipient(n);
        // 0.001 BTC plus n + 1 satoshi: each recipient's amount is its own.
        let amount = format!("0.0010{:04}", n + 1);
        let body = json!({"chain": "bitcoin", "asset": "BTC", "to": to.to_string(), "amount": amount, "reference": format!("user:{n}")});
        let (status, created) = api.create(&format!("b-{n}"), &body).await;
        assert_eq!(status, 201, "{created}");
        let (status, again) = api.create(&format!("b-{n}"), &body).await;
        assert_eq!((status, &again["id"]), (200, &created["id"]));
        expected.insert(to.to_string(), 100_000 + u128::from(n) + 1);
        if n == 12 {
            first_kill = Some(kill_worker(&db.url, WORKER, None).await);
        }
    }
    // Below dust: refused before anything is signed, alone.
    let dust_to = recipient(1000);
    let (status, dust) = api
        .create(
            "b-dust",
            &json!({"chain": "bitcoin", "asset": "BTC", "to": dust_to.to_string(), "amount": "0.00000100", "reference": "user:dust"}),
        )
        .await;
    assert_eq!(status, 201, "{dust}");

    // Kill the worker again once a batch is out, then mine until every one is completed.
    let mut killed = false;
    let mut mined = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    let rows = loop {
        let rows = api.list("").await;
        let state = |wanted: &str| rows.iter().filter(|row| row["state"] == wanted).count();
        if !killed && state("broadcast") + state("confirming") > 0 {
            kill_worker(&db.url, WORKER, first_kill).await;
            killed = true;
        }
        if state("completed") == COUNT as usize {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "not all completed: {:?}",
            rows.iter()
                .map(|row| (
                    row["id"].clone(),
                    row["state"].clone(),
                    row["error"].clone()
                ))
                .collect::<Vec<_>>()
        );
        // A block every 1.5 s, once something is out.
        if state("broadcast") + state("confirming") > 0 {
            node.cli(&["generatetoaddress", "1", ELSEWHERE]).await;
            mined += 1;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    };
    let elapsed = started.elapsed();
    assert!(killed, "the worker was killed while it paid");
    let dust_row = rows
        .iter()
        .find(|row| row["id"] == dust["id"])
        .expect("the dust withdrawal is listed");
    assert_eq!(dust_row["state"], "failed", "{dust_row}");
    assert!(
        dust_row["error"].as_str().unwrap_or("").contains("dust"),
        "{dust_row}"
    );
    for row in rows.iter().filter(|row| row["state"] == "completed") {
        assert!(row["txid"].is_string(), "{row}");
        assert!(row["confirmations"].as_i64() >= Some(2), "{row}");
    }
    // Each withdrawal's share of its batch's fee: the node's fee for the transaction divided
    // among the outputs that pay someone (the change is the hot wallet's), rounded down.
    let rpc = rpc(&node);
    let mut by_tx: HashMap<String, Vec<u64>> = HashMap::new();
    for row in rows.iter().filter(|row| row["state"] == "completed") {
        let share: u64 = row["fee_base_units"].as_str().unwrap().parse().unwrap();
        by_tx
            .entry(row["txid"].as_str().unwrap().to_string())
            .or_default()
            .push(share);
    }
    for (txid, shares) in &by_tx {
        let answer = rpc
            .call("getrawtransaction", json!([txid, 2]))
            .await
            .unwrap();
        let fee = chain_bitcoin::btc_text_to_sat(&answer["fee"].to_string()).unwrap();
        let outputs = answer["vout"].as_array().unwrap().len() as u64;
        // Its withdrawals and at most one change output.
        let payees = shares.len() as u64;
        assert!(
            outputs == payees || outputs == payees + 1,
            "{txid}: {answer}"
        );
        for share in shares {
            assert_eq!(*share, fee / payees, "{txid}");
        }
    }

    // The chain, not the store: each recipient received its amount exactly once.
    let recipients: Vec<Address> = (0..COUNT).map(recipient).chain([dust_to]).collect();
    let check = |payments: Vec<(String, String, u128)>| {
        let mut by_recipient: HashMap<String, Vec<u128>> = HashMap::new();
        let mut by_tx: HashMap<String, usize> = HashMap::new();
        for (to, txid, sat) in payments {
            by_recipient.entry(to).or_default().push(sat);
            *by_tx.entry(txid).or_default() += 1;
        }
        for (to, sat) in &expected {
            assert_eq!(by_recipient.get(to), Some(&vec![*sat]), "{to}");
        }
        assert_eq!(by_recipient.len(), expected.len(), "nobody else was paid");
        by_tx
    };
    let by_tx = check(paid_on_chain(&node, &recipients).await);
    let transactions = by_tx.len();
    assert!(
        transactions < COUNT as usize,
        "batched: {transactions} transactions for {COUNT} withdrawals"
    );
    assert!(by_tx.values().any(|&n| n > 1), "{by_tx:?}");
    let txids: HashSet<&str> = rows.iter().filter_map(|row| row["txid"].as_str()).collect();
    for txid in by_tx.keys() {
        assert!(txids.contains(txid.as_str()), "{txid} is a withdrawal's");
    }
    eprintln!(
        "bitcoin withdrawals: {COUNT} completed in {transactions} transactions ({:?} per \
         transaction), {mined} blocks mined, {:.1} s from the first request to all completed",
        by_tx.values().collect::<Vec<_>>(),
        elapsed.as_secs_f64()
    );
    // Nothing more arrives later (no second payment in flight).
    tokio::time::sleep(Duration::from_secs(4)).await;
    node.cli(&["generatetoaddress", "2", ELSEWHERE]).await;
    check(paid_on_chain(&node, &recipients).await);
    assert!(up.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoin_withdrawals_postgres() {
    bitcoin_withdrawals_are_batched_and_paid_once_through_kills(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoin_withdrawals_sqlite() {
    bitcoin_withdrawals_are_batched_and_paid_once_through_kills(Backend::Sqlite).await;
}

/// A worker killed after its batch was recorded, before it moved the withdrawal on: the
/// withdrawal is `processing`, the store holds the batch (not broadcast). The next worker
/// moves it to `broadcast` with that batch's txid, sends those very bytes, and pays nothing
/// else.
async fn a_processing_withdrawal_held_by_a_stored_batch_is_not_paid_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    let node = Bitcoind::start().await;
    fund(&node, 3).await;
    let store = db.store().await;
    let to = recipient(7);
    let created = store
        .withdrawal_create(&store::WithdrawalCreate {
            idempotency_key: "crash-1".into(),
            request_hash: "0".repeat(64),
            reference: "user:7".into(),
            chain: Chain::Bitcoin,
            asset: "BTC".into(),
            destination: to.to_string(),
            amount: "150000".into(),
            actor: "test".into(),
            job: None,
            approval: false,
            limits: vec![],
            destination_rule: None,
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let row = created.row().clone();
    let taken = store
        .withdrawal_transition(&store::WithdrawalTransition::new(
            row.id,
            WithdrawalState::Pending,
            WithdrawalState::Processing,
            "worker:dead",
            chrono::Utc::now(),
        ))
        .await
        .unwrap();
    assert_eq!(taken.state, WithdrawalState::Processing);
    // The dead worker's batch: recorded with the withdrawal as its member, never sent.
    let bitcoin = bitcoin(&node).await;
    let utxos = UtxoSet::new();
    for keychain in [Keychain::Receive, Keychain::Change] {
        utxos.watch(bitcoin.key_script(keychain, 0).unwrap(), keychain, 0);
    }
    utxos.sync(&bitcoin, 1, 10_000).await.unwrap();
    let log = wallet::attempt_log::StoreAttempts::new(store.clone());
    let signer: Arc<dyn Signer> = Arc::new(signer());
    let payer = Payer {
        bitcoin: &bitcoin,
        utxos: &utxos,
        log: &log,
        signer: signer.as_ref(),
        sender: "hot",
        min_confirmations: 1,
        settle_confirmations: 2,
    };
    let member = row.payout_key();
    let outputs = vec![(to.clone(), Amount::from_u128(150_000))];
    let Prepared::New { signed, .. } = payer
        .prepare("batch-crashed", &[member], &outputs, 2, 0)
        .await
        .unwrap()
    else {
        panic!("a new attempt");
    };
    let mempool = node.cli(&["getrawmempool"]).await;
    assert!(!mempool.contains(&signed.txid), "not sent");

    let config = config(
        &db,
        &node,
        "bitcoin_batch_max = 5\nbitcoin_batch_wait = 0\nbitcoin_bump_after = 10\n",
    );
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let moved = wait_for("broadcast", Duration::from_secs(60), || async {
        let row = store.withdrawal_get(row.id).await.unwrap().unwrap();
        (row.state != WithdrawalState::Processing).then_some(row)
    })
    .await;
    assert_eq!(moved.state, WithdrawalState::Broadcast);
    assert_eq!(moved.txid.as_deref(), Some(signed.txid.as_str()));
    // Those very bytes are sent (the reconcile round).
    wait_for(
        "the stored bytes in the pool",
        Duration::from_secs(30),
        || async {
            node.cli(&["getrawmempool"])
                .await
                .contains(&signed.txid)
                .then_some(())
        },
    )
    .await;
    // Unconfirmed for bitcoin_bump_after (10 s): replaced by fee (RBF), the same inputs.
    let bumped = wait_for("a fee bump", Duration::from_secs(60), || async {
        let row = store.withdrawal_get(row.id).await.unwrap().unwrap();
        row.txid.filter(|txid| *txid != signed.txid)
    })
    .await;
    let attempts = store
        .attempts_of(Chain::Bitcoin, "batch-crashed")
        .await
        .unwrap();
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert!(
        attempts
            .iter()
            .any(|a| a.txid == bumped && a.replaces.is_some())
    );
    let done = wait_for("completed", Duration::from_secs(90), || async {
        node.cli(&["generatetoaddress", "1", ELSEWHERE]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let row = store.withdrawal_get(row.id).await.unwrap().unwrap();
        (row.state == WithdrawalState::Completed).then_some(row)
    })
    .await;
    let txid = done.txid.clone().expect("a txid");
    let landed: Vec<String> = store
        .attempts_of(Chain::Bitcoin, "batch-crashed")
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.state == store::AttemptState::Landed)
        .map(|a| a.txid)
        .collect();
    assert_eq!(
        landed,
        vec![txid.clone()],
        "one attempt of the batch landed"
    );
    let payments = paid_on_chain(&node, std::slice::from_ref(&to)).await;
    assert_eq!(
        payments,
        vec![(to.to_string(), txid, 150_000)],
        "paid once, by the stored batch (or its replacement)"
    );
    assert!(up.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_healing_postgres() {
    a_processing_withdrawal_held_by_a_stored_batch_is_not_paid_again(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_healing_sqlite() {
    a_processing_withdrawal_held_by_a_stored_batch_is_not_paid_again(Backend::Sqlite).await;
}

/// A hot wallet that cannot pay: the withdrawal stays `pending` with the reason, never
/// `failed`; funded later, it is paid.
async fn a_short_hot_wallet_keeps_withdrawals_pending_until_funded(backend: Backend) {
    let db = TestDb::new(backend).await;
    let node = Bitcoind::start().await;
    // Blocks elsewhere only: the hot wallet holds nothing.
    node.cli(&["generatetoaddress", "101", ELSEWHERE]).await;
    let store = db.store().await;
    let to = recipient(9);
    let created = store
        .withdrawal_create(&store::WithdrawalCreate {
            idempotency_key: "short-1".into(),
            request_hash: "0".repeat(64),
            reference: "user:9".into(),
            chain: Chain::Bitcoin,
            asset: "BTC".into(),
            destination: to.to_string(),
            amount: "250000".into(),
            actor: "test".into(),
            job: None,
            approval: false,
            limits: vec![],
            destination_rule: None,
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let id = created.row().id;
    let config = config(
        &db,
        &node,
        "bitcoin_batch_max = 5\nbitcoin_batch_wait = 0\n",
    );
    // The hot wallet keeps 60 BTC: one coinbase of 50 is not enough, two are.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[[withdrawal_policy]]\nchain = \"bitcoin\"\nasset = \"BTC\"\nfloor = \"60\"\n");
    std::fs::write(&config, text).unwrap();
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let waiting = wait_for("the reason shown", Duration::from_secs(60), || async {
        let row = store.withdrawal_get(id).await.unwrap().unwrap();
        row.error.is_some().then_some(row)
    })
    .await;
    assert_eq!(waiting.state, WithdrawalState::Pending, "{waiting:?}");
    assert!(
        waiting
            .error
            .as_deref()
            .unwrap()
            .contains("waiting for funds"),
        "{waiting:?}"
    );
    // Still pending a few rounds later: it waits, it does not fail.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let row = store.withdrawal_get(id).await.unwrap().unwrap();
    assert_eq!(row.state, WithdrawalState::Pending, "{row:?}");
    fund(&node, 1).await;
    // 50 BTC now, short of 60 kept and the withdrawal: still waiting, the floor said.
    let floor = wait_for(
        "the floor in the reason",
        Duration::from_secs(60),
        || async {
            let row = store.withdrawal_get(id).await.unwrap().unwrap();
            row.error
                .as_deref()
                .is_some_and(|reason| reason.contains("keeps 6000000000 satoshi"))
                .then_some(row)
        },
    )
    .await;
    assert_eq!(floor.state, WithdrawalState::Pending, "{floor:?}");
    fund(&node, 1).await;
    let done = wait_for("completed", Duration::from_secs(90), || async {
        node.cli(&["generatetoaddress", "1", ELSEWHERE]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let row = store.withdrawal_get(id).await.unwrap().unwrap();
        (row.state == WithdrawalState::Completed).then_some(row)
    })
    .await;
    let payments = paid_on_chain(&node, std::slice::from_ref(&to)).await;
    assert_eq!(
        payments,
        vec![(to.to_string(), done.txid.clone().unwrap(), 250_000)]
    );
    assert!(up.stop().await.success());
}

/// Manual review on Bitcoin through `up` and the CLI: a withdrawal whose batch is out is
/// put in manual review (as a held payout would be); a retry, and marking it paid by another
/// transaction, are refused while its batch may still pay; its own batch short of
/// `bitcoin_confirmations` cannot mark it paid; its own batch, deep enough, does.
async fn a_review_is_judged_on_the_chain(backend: Backend) {
    let db = TestDb::new(backend).await;
    let node = Bitcoind::start().await;
    fund(&node, 3).await;
    let config = config(
        &db,
        &node,
        "bitcoin_batch_max = 1\nbitcoin_batch_wait = 1\nbitcoin_bump_after = 3600\n",
    );
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let api = service_api(&db, &up).await;
    let made = run(
        &db.url,
        &["tokens", "create", "--role", "operator", "--name", "ops"],
    )
    .await;
    assert!(made.status.success(), "{}", stderr(&made));
    let operator = String::from_utf8_lossy(&made.stdout).trim().to_string();
    let server = format!("http://{}", up.address);
    let store = db.store().await;
    let to = recipient(0);
    let (status, created) = api
        .create(
            "review-1",
            &json!({"chain": "bitcoin", "asset": "BTC", "to": to.to_string(), "amount": "0.01", "reference": "user:1"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let txid = wait_for("its batch out", Duration::from_secs(60), || async {
        let row = store.withdrawal_get(id).await.unwrap().unwrap();
        (row.state == WithdrawalState::Broadcast).then_some(row.txid?)
    })
    .await;
    let mut held = store::WithdrawalTransition::new(
        id,
        WithdrawalState::Broadcast,
        WithdrawalState::ManualReview,
        "test",
        chrono::Utc::now(),
    );
    held.error = Some("held for a person".into());
    store.withdrawal_transition(&held).await.unwrap();

    let review = |args: Vec<String>| {
        let server = server.clone();
        let operator = operator.clone();
        async move {
            let mut all = vec!["withdrawals".to_string(), "review".into(), id.to_string()];
            all.extend(args);
            let output = coinsensei(&all)
                .env("COINSENSEI_SERVER", &server)
                .env("COINSENSEI_TOKEN", &operator)
                .env("COINSENSEI_DATA_DIR", "/nonexistent/coinsensei")
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap();
            (
                output.status.code(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    stderr(&output)
                ),
            )
        }
    };
    let args = |list: &[&str]| list.iter().map(|each| each.to_string()).collect::<Vec<_>>();
    let (code, said) = review(args(&["--retry", "--reason", "try again"])).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("may still pay"), "{said}");

    let first = node.cli(&["getblockhash", "1"]).await;
    let coinbase: serde_json::Value =
        serde_json::from_str(&node.cli(&["getblock", first.trim()]).await).unwrap();
    let coinbase = coinbase["tx"][0].as_str().unwrap().to_string();
    // Another transaction cannot mark it paid while its own batch may still pay it.
    let (code, said) = review(args(&["--mark-paid", &coinbase, "--reason", "wrong"])).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("may still pay"), "{said}");

    node.cli(&["generatetoaddress", "1", ELSEWHERE]).await;
    let (code, said) = review(args(&["--mark-paid", &txid, "--reason", "its batch"])).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("confirmations"), "{said}");

    node.cli(&["generatetoaddress", "1", ELSEWHERE]).await;
    let (code, said) = review(args(&["--mark-paid", &txid, "--reason", "its batch"])).await;
    assert_eq!(code, Some(0), "{said}");
    let row = store.withdrawal_get(id).await.unwrap().unwrap();
    assert_eq!(row.state, WithdrawalState::Completed, "{row:?}");
    assert_eq!(row.txid.as_deref(), Some(txid.as_str()));
    let paid = paid_on_chain(&node, std::slice::from_ref(&to)).await;
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].2, 1_000_000);
    let reviews = store.withdrawal_reviews(id).await.unwrap();
    let states: Vec<_> = reviews.iter().map(|each| each.state).collect();
    use store::ReviewState::{Applied, Refused};
    assert_eq!(states, vec![Refused, Refused, Refused, Applied]);
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_postgres() {
    a_review_is_judged_on_the_chain(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_sqlite() {
    a_review_is_judged_on_the_chain(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_hot_wallet_postgres() {
    a_short_hot_wallet_keeps_withdrawals_pending_until_funded(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_hot_wallet_sqlite() {
    a_short_hot_wallet_keeps_withdrawals_pending_until_funded(Backend::Sqlite).await;
}
