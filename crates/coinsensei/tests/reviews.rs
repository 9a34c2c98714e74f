//! Manual review end to end on real processes: `coinsensei up` with its Ethereum withdrawal
//! worker against a private anvil that mines only when told. A withdrawal's nonce is taken by
//! a transaction sent by hand with the hot wallet's key (paying the same destination the same
//! amount, as an operator might), so the worker sends it to `manual_review`. An operator then
//! runs `coinsensei withdrawals review ID --mark-paid TXID --server`: the CLI waits while the
//! worker checks the transaction on the chain, and the withdrawal is completed by it, paid
//! exactly once. A second review on it is refused. On both stores.

mod common;

use std::process::Stdio;
use std::time::Duration;

use chain::address::{Address, Network};
use chain::provider::SubmitOutcome;
use chain_ethereum::{Ethereum, FeeQuote, Transfer, sign};
use common::*;
use domain::{Amount, Chain};
use serde_json::json;
use signer::{InProcessSigner, Mnemonic};
use testkit::{Anvil, Backend, TestDb, wait_for};

const MNEMONIC: &str = "test test test test test test test test test test test junk";
const TO: &str = "0x000000000000000000000000000000000000dEaD";
const WEI: u128 = 1_000_000_000_000_000;

async fn mine(anvil: &Anvil, blocks: u32) {
    let client = reqwest::Client::new();
    for _ in 0..blocks {
        let answer: serde_json::Value = client
            .post(&anvil.url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "evm_mine", "params": []}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer.get("error").is_none(), "{answer}");
    }
}

async fn review_cli(server: &str, token: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["withdrawals", "review"];
    all.extend_from_slice(args);
    coinsensei(&all)
        .env("COINSENSEI_SERVER", server)
        .env("COINSENSEI_TOKEN", token)
        .env("COINSENSEI_DATA_DIR", "/nonexistent/coinsensei")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run coinsensei")
}

async fn a_review_marks_a_withdrawal_paid_by_hand(backend: Backend) {
    let db = TestDb::new(backend).await;
    let anvil = Anvil::start_with(&["--no-mining"]).await;
    let dir = db.dir();
    let keystore = common::backend::keystore_lines(&dir, MNEMONIC);
    let config = dir.join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 5\n\
             ethereum_rpc_url = \"{}\"\nethereum_chain_id = 31337\nethereum_confirmations = 2\n\
             {keystore}\
             [[workers]]\nkind = \"withdrawal\"\nchain = \"ethereum\"\n",
            anvil.url,
        ),
    )
    .unwrap();
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let api = common::backend::Backend::new(&db.url, &up).await;
    let made = run(
        &db.url,
        &["tokens", "create", "--role", "operator", "--name", "ops"],
    )
    .await;
    assert!(made.status.success(), "{}", stderr(&made));
    let operator = String::from_utf8_lossy(&made.stdout).trim().to_string();
    let server = format!("http://{}", up.address);
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();

    let (status, created) = api
        .create(
            "r-1",
            &json!({"chain": "ethereum", "asset": "ETH", "to": TO, "amount": "0.001", "reference": "user:1"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let held = wait_for("its nonce bound", Duration::from_secs(60), || async {
        store
            .nonce_get(Chain::Ethereum, &store::payout_key(id))
            .await
            .unwrap()
            .filter(|held| held.is_bound())
    })
    .await;

    // By hand, on the same nonce, outbidding it: the same destination and amount.
    let hot = InProcessSigner::new(&Mnemonic::parse(MNEMONIC).unwrap(), Network::Mainnet);
    let quote = client.fees(1_000_000_000_000).await.unwrap();
    let to = Address::parse(Chain::Ethereum, Network::Mainnet, TO).unwrap();
    let unsigned = client
        .build_transfer(&Transfer {
            to: to.clone(),
            value: Amount::from_u128(WEI),
            nonce: held.nonce,
            fees: FeeQuote {
                max_fee_per_gas: quote.max_fee_per_gas * 4,
                max_priority_fee_per_gas: quote.max_priority_fee_per_gas * 4 + 1,
            },
        })
        .unwrap();
    let by_hand = sign(unsigned, &hot, 0).unwrap();
    assert_eq!(client.submit(&by_hand).await, SubmitOutcome::Accepted);
    let by_hand = by_hand.txid.to_string();
    let before = client.balance(&to).await.unwrap().base_units();
    mine(&anvil, 1).await;
    wait_for("manual review", Duration::from_secs(60), || async {
        let row = store.withdrawal_get(id).await.unwrap().unwrap();
        (row.state == domain::WithdrawalState::ManualReview).then_some(())
    })
    .await;
    mine(&anvil, 2).await;

    // Bad input first: refused by the API, nothing stored.
    let output = review_cli(
        &server,
        &operator,
        &[&id.to_string(), "--mark-paid", "0x12;x", "--reason", "r"],
    )
    .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("letters and digits"),
        "{}",
        stderr(&output)
    );
    assert!(store.withdrawal_reviews(id).await.unwrap().is_empty());

    let output = review_cli(
        &server,
        &operator,
        &[
            &id.to_string(),
            "--mark-paid",
            &by_hand,
            "--reason",
            "paid by hand on its nonce",
        ],
    )
    .await;
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}{}", stderr(&output));
    assert!(printed.contains("applied"), "{printed}");
    let row = store.withdrawal_get(id).await.unwrap().unwrap();
    assert_eq!(row.state, domain::WithdrawalState::Completed, "{row:?}");
    assert_eq!(row.txid.as_deref(), Some(by_hand.as_str()));
    let after = client.balance(&to).await.unwrap().base_units();
    assert_eq!(
        after - before,
        alloy_primitives::U256::from(WEI),
        "paid once"
    );
    let reviews = store.withdrawal_reviews(id).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].state, store::ReviewState::Applied);
    assert_eq!(
        reviews[0].actor,
        format!("token:{}:ops", reviews[0].token_id.unwrap())
    );
    assert!(
        reviews[0]
            .outcome
            .as_deref()
            .unwrap()
            .contains("from the hot wallet")
    );

    // Completed: nothing more to review.
    let output = review_cli(
        &server,
        &operator,
        &[&id.to_string(), "--retry", "--reason", "again"],
    )
    .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("manual_review"),
        "{}",
        stderr(&output)
    );
    // A service token never reviews.
    let output = review_cli(
        &server,
        &api.token,
        &[&id.to_string(), "--mark-failed", "--reason", "x"],
    )
    .await;
    assert!(!output.status.success());
    assert_eq!(store.withdrawal_reviews(id).await.unwrap().len(), 1);
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_marks_a_withdrawal_paid_by_hand_on_postgres() {
    a_review_marks_a_withdrawal_paid_by_hand(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_marks_a_withdrawal_paid_by_hand_on_sqlite() {
    a_review_marks_a_withdrawal_paid_by_hand(Backend::Sqlite).await;
}
