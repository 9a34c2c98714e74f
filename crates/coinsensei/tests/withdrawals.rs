//! Withdrawals end to end on real processes: `coinsensei up` with its Ethereum withdrawal
//! worker against a private anvil, requests through `/api/v1/withdrawals` with a service
//! token, the worker process SIGKILLed while it pays, and the chain read at the end: every
//! recipient holds exactly its amount, every withdrawal is `completed`. On both stores.

mod common;

use std::time::Duration;

use alloy_primitives::U256;
use common::*;
use serde_json::json;
use testkit::{Anvil, Backend, TestDb, wait_for};

const MNEMONIC: &str = "test test test test test test test test test test test junk";
const WORKER: &str = "ethereum-withdrawal-1";

/// Fresh recipients: addresses of a key nobody holds (derived from the hash of `n`).
fn recipient(n: u32) -> String {
    let digest = alloy_primitives::keccak256(format!("recipient-{n}"));
    let address = alloy_primitives::Address::from_slice(&digest[..20]);
    address.to_checksum(None)
}

async fn balance(client: &chain_ethereum::Ethereum, address: &str) -> U256 {
    let address = chain::address::Address::parse(
        domain::Chain::Ethereum,
        chain::address::Network::Mainnet,
        address,
    )
    .unwrap();
    let amount = client
        .balance(&address)
        .await
        .expect("balance from the node");
    amount.base_units()
}

async fn ethereum_withdrawals_are_paid_once_through_kills(backend: Backend) {
    let db = TestDb::new(backend).await;
    let anvil = Anvil::start_with(&["--block-time", "1"]).await;
    let dir = db.dir();
    let keystore = common::backend::keystore_lines(&dir, MNEMONIC);
    let config = dir.join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 2\nconcurrency = 8\n\
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
    let client = chain_ethereum::Ethereum::connect(&anvil.url, Some(31337))
        .await
        .unwrap();

    const COUNT: u32 = 24;
    let mut expected = Vec::new();
    let mut killed: Option<i64> = None;
    for n in 0..COUNT {
        let to = recipient(n);
        // 0.001 ETH plus n wei: each recipient's amount is its own.
        let amount = format!("0.001{:06}", n + 1);
        let body = json!({"chain": "ethereum", "asset": "ETH", "to": to, "amount": amount, "reference": format!("user:{n}")});
        let (status, created) = api.create(&format!("w-{n}"), &body).await;
        assert_eq!(status, 201, "{created}");
        // The backend's retry of the same request: the same withdrawal.
        let (status, again) = api.create(&format!("w-{n}"), &body).await;
        assert_eq!((status, &again["id"]), (200, &created["id"]));
        expected.push((
            to,
            U256::from(1_000_000_000_000_000u64 + u64::from(n + 1) * 1_000_000_000),
        ));
        // Kill the worker process twice while the payments are under way; the supervisor
        // starts it again, and its jobs are rescued.
        if n == 8 || n == 16 {
            killed = Some(kill_worker(&db.url, WORKER, killed).await);
        }
    }
    let done = wait_for(
        "every withdrawal completed",
        Duration::from_secs(120),
        || async {
            let rows = api.list("").await;
            let finished = rows
                .iter()
                .filter(|row| row["state"] == "completed")
                .count();
            (finished == COUNT as usize).then_some(rows)
        },
    )
    .await;
    for row in &done {
        assert!(row["txid"].is_string(), "{row}");
        assert!(row["confirmations"].as_i64() >= Some(2), "{row}");
        // Gas used (21,000 for an ETH transfer) times the effective price, from the receipt.
        let fee: u128 = row["fee_base_units"].as_str().unwrap().parse().unwrap();
        assert!(fee >= 21_000, "{row}");
    }
    // The chain, not the store: each recipient received its amount exactly once.
    for (to, amount) in &expected {
        assert_eq!(balance(&client, to).await, *amount, "{to}");
    }
    // And nothing more arrives later (no second payment in flight).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (to, amount) in &expected {
        assert_eq!(balance(&client, to).await, *amount, "{to}");
    }
    // Cancel comes too late for a paid withdrawal.
    let id = done[0]["id"].as_i64().unwrap();
    let response = api
        .client
        .post(format!("{}/api/v1/withdrawals/{id}/cancel", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let shown = run(&db.url, &["withdrawals", "show", &id.to_string()]).await;
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("state: completed"), "{text}");
    assert!(text.contains("withdrawal.broadcast"), "{text}");
    metrics_show_the_pipeline(&db.url, &up, COUNT).await;
    assert!(up.stop().await.success());
}

/// `/metrics` after the run: every withdrawal's transaction counted, none left in a state,
/// the completion times of all of them, and the hot wallet's balance as its worker read it.
async fn metrics_show_the_pipeline(database_url: &str, up: &Up, count: u32) {
    let made = run(
        database_url,
        &["tokens", "create", "--role", "viewer", "--name", "scraper"],
    )
    .await;
    let token = String::from_utf8_lossy(&made.stdout).trim().to_string();
    let scrape = || async {
        reqwest::Client::new()
            .get(format!("http://{}/metrics", up.address))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|number| number.parse().ok())
    };
    // The worker reads its balances every 15 s: wait for a reading.
    let text = wait_for(
        "the hot wallet's balance in /metrics",
        Duration::from_secs(30),
        || async {
            let text = scrape().await;
            value(
                &text,
                r#"coinsensei_hot_wallet_balance{chain="ethereum",asset="ETH"}"#,
            )
            .is_some()
            .then_some(text)
        },
    )
    .await;
    // anvil's first account starts with 10,000 ETH; it pays out a little and some gas (the
    // reading may come from before the payments).
    let eth = value(
        &text,
        r#"coinsensei_hot_wallet_balance{chain="ethereum",asset="ETH"}"#,
    )
    .unwrap();
    assert!(eth > 9.9e21 && eth <= 1e22, "{eth}");
    let transactions = value(
        &text,
        r#"coinsensei_payout_transactions_total{chain="ethereum"}"#,
    )
    .unwrap();
    assert!(transactions >= f64::from(count), "{transactions}");
    // Sent again only when the node lost one: counted, whatever the number.
    assert!(
        value(
            &text,
            r#"coinsensei_payout_rebroadcasts_total{chain="ethereum"}"#
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"coinsensei_withdrawal_completion_seconds_count{chain="ethereum"}"#
        ),
        Some(f64::from(count))
    );
    let p50 = value(
        &text,
        r#"coinsensei_withdrawal_completion_seconds{chain="ethereum",quantile="0.5"}"#,
    )
    .unwrap();
    assert!(p50 > 0.0 && p50 < 120.0, "{p50}");
    for state in ["pending", "processing", "broadcast", "confirming"] {
        let series = format!(
            r#"coinsensei_withdrawal_state_oldest_seconds{{chain="ethereum",state="{state}"}}"#
        );
        assert_eq!(value(&text, &series), Some(0.0), "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereum_withdrawals_postgres() {
    ethereum_withdrawals_are_paid_once_through_kills(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereum_withdrawals_sqlite() {
    ethereum_withdrawals_are_paid_once_through_kills(Backend::Sqlite).await;
}
