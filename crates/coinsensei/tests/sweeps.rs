//! Consolidation end to end on real processes: `coinsensei up` with an Ethereum deposit
//! worker and an Ethereum consolidation worker against a private anvil (one block a second).
//! Addresses issued through `/api/v1/deposit-addresses`, ETH and the catalogue's ERC-20 paid
//! to them by a customer (anvil's key 2) and credited by the deposit worker; every address is
//! swept into the hot wallet (key 0), the token-only one after a gas top-up from the gas
//! wallet (key 1); the consolidation worker is SIGKILLed while sweeps are open. On the
//! chain afterwards: each address sent one transaction per sweep, the gas wallet one per
//! top-up, the hot wallet grew by exactly the swept amounts, and each top-up was recorded
//! as an internal transfer, never credited. Each sweep's cost is printed (`--no-capture`).

mod common;

use std::time::Duration;

use common::anvil::{TOKEN_BIN, eth_balance, nonce, quantity, rpc, token_balance, transfer_data};
use common::*;
use domain::Chain;
use serde_json::{Value, json};
use signer::Signer as _;
use store::{SweepRow, SweepState};
use testkit::{Anvil, Backend, TestDb, wait_for};

const MNEMONIC: &str = "test test test test test test test test test test test junk";
/// anvil's key 0: the hot wallet, and the token's deployer.
const HOT: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// anvil's key 1: the gas wallet.
const GAS: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// anvil's key 2: a customer.
const CUSTOMER: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
const USDT: u128 = 1_000_000;

/// Sends a transaction from an unlocked anvil account and waits for its receipt, which
/// must say it succeeded.
async fn send(anvil: &Anvil, from: &str, transaction: Value) -> Value {
    let receipt = common::anvil::send_from(anvil, from, transaction).await;
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    receipt
}

fn units(amount: Option<domain::Amount>) -> u128 {
    amount.map_or(0, |amount| u128::try_from(amount.base_units()).unwrap())
}

async fn sweeps_swept_end_to_end(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let anvil = Anvil::start_with(&["--block-time", "1"]).await;
    let dir = db.dir();
    let keystore = common::backend::keystore_lines(&dir, MNEMONIC);
    let keys = signer::InProcessSigner::new(
        &signer::Mnemonic::parse(MNEMONIC).unwrap(),
        chain::address::Network::Mainnet,
    );
    assert_eq!(keys.address(Chain::Ethereum, 0).unwrap().as_str(), HOT);
    assert_eq!(keys.address(Chain::Ethereum, 1).unwrap().as_str(), GAS);
    let xpub = keys.deposit_xpub(Chain::Ethereum).unwrap();

    let supply = format!("{:064x}", 1_000_000 * USDT);
    let deployed = send(
        &anvil,
        HOT,
        json!({"data": format!("0x{}{supply}", TOKEN_BIN.trim()), "gas": "0x2dc6c0"}),
    )
    .await;
    let token = deployed["contractAddress"].as_str().unwrap().to_string();
    send(
        &anvil,
        HOT,
        json!({"to": token, "data": transfer_data(CUSTOMER, 100 * USDT)}),
    )
    .await;
    let head = quantity(&rpc(&anvil, "eth_blockNumber", json!([])).await);
    // From here on the hot wallet only receives sweeps.
    let hot_eth = eth_balance(&anvil, HOT).await;
    let hot_token = token_balance(&anvil, &token, HOT).await;

    let config = dir.join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 2\n{keystore}\
             ethereum_rpc_url = \"{}\"\nethereum_chain_id = 31337\n\
             ethereum_deposit_confirmations = 2\nethereum_deposit_xpub = \"{xpub}\"\n\
             ethereum_deposit_start_block = {head}\n\
             ethereum_hot_wallet_index = 0\nethereum_gas_wallet_index = 1\n\
             ethereum_internal_addresses = [\"{HOT}\", \"{GAS}\"]\n\
             ethereum_sweep_base_fee_max_gwei = 100\n\
             [[assets]]\nchain = \"ethereum\"\nsymbol = \"USDT\"\ndecimals = 6\ncontract = \"{token}\"\n\
             [[deposit_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\nsweep_min = \"0.01\"\n\
             [[deposit_policy]]\nchain = \"ethereum\"\nasset = \"USDT\"\nsweep_min = \"1\"\n\
             [[workers]]\nkind = \"deposit\"\nchain = \"ethereum\"\n\
             [[workers]]\nkind = \"consolidation\"\nchain = \"ethereum\"\n",
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
    let mut addresses = Vec::new();
    for reference in ["user:1", "user:2", "user:3"] {
        addresses.push(api.issue_address("ethereum", reference).await);
    }
    let [eth_only, token_only, both] = [&addresses[0], &addresses[1], &addresses[2]];
    wait_for("the workers running", Duration::from_secs(60), || async {
        let workers = workers_json(&db.url).await;
        ["ethereum-deposit-1", "ethereum-consolidation-1"]
            .iter()
            .all(|id| find(&workers, id).is_some_and(|worker| worker["status"] == "running"))
            .then_some(())
    })
    .await;

    send(
        &anvil,
        CUSTOMER,
        json!({"to": eth_only, "value": "0x6f05b59d3b20000"}),
    )
    .await; // 0.5 ETH
    send(
        &anvil,
        CUSTOMER,
        json!({"to": token, "data": transfer_data(token_only, 5 * USDT)}),
    )
    .await;
    send(
        &anvil,
        CUSTOMER,
        json!({"to": token, "data": transfer_data(both, 7 * USDT)}),
    )
    .await;
    send(
        &anvil,
        CUSTOMER,
        json!({"to": both, "value": "0x429d069189e0000"}),
    )
    .await; // 0.3 ETH

    // The consolidation worker dies while sweeps are open, and is started again.
    wait_for("an open sweep", Duration::from_secs(60), || async {
        let open = store.sweep_open(Chain::Ethereum, 10).await.unwrap();
        (!open.is_empty()).then_some(())
    })
    .await;
    let killed = kill_worker(&db.url, "ethereum-consolidation-1", None).await;
    kill_worker(&db.url, "ethereum-consolidation-1", Some(killed)).await;

    // Two sweeps of the address holding both, one of each other address.
    let sweeps: Vec<SweepRow> = wait_for("every sweep swept", Duration::from_secs(120), || async {
        let rows = store.sweep_list(Chain::Ethereum, None, 100).await.unwrap();
        (rows.len() == 4 && rows.iter().all(|row| row.state == SweepState::Swept)).then_some(rows)
    })
    .await;
    for row in sweeps.iter().rev() {
        println!(
            "sweep {} of {} {}: amount {}; top-up {} wei (fee {} wei); sweep fee {} wei at {} wei/gas; cost {} wei",
            row.id,
            row.address,
            row.asset,
            row.amount.base_units(),
            units(row.top_up_amount),
            units(row.top_up_fee),
            units(row.sweep_fee),
            row.price_per_gas,
            row.cost().base_units()
        );
    }
    for address in [eth_only, token_only, both] {
        let of: Vec<&SweepRow> = sweeps
            .iter()
            .filter(|row| &row.address == address)
            .collect();
        assert_eq!(
            nonce(&anvil, address).await,
            of.len() as u128,
            "{address}: one transaction per sweep"
        );
        assert_eq!(token_balance(&anvil, &token, address).await, 0);
    }
    assert_eq!(eth_balance(&anvil, eth_only).await, 0);
    // Whichever of its deposits the sweeper saw first, what is left is under the minimum.
    assert!(eth_balance(&anvil, both).await < 10_000_000_000_000_000);
    // The token-only address needed a top-up; the other one did if its token was swept
    // before its ETH arrived. Each top-up is one transaction of the gas wallet.
    let top_ups: Vec<&SweepRow> = sweeps
        .iter()
        .filter(|row| row.top_up_amount.is_some())
        .collect();
    assert!(
        top_ups.iter().any(|row| &row.address == token_only),
        "{sweeps:?}"
    );
    assert_eq!(
        nonce(&anvil, GAS).await,
        top_ups.len() as u128,
        "one transaction per top-up"
    );
    let swept_eth: u128 = sweeps
        .iter()
        .filter(|row| row.asset == "native")
        .map(|row| units(Some(row.amount)))
        .sum();
    let swept_token: u128 = sweeps
        .iter()
        .filter(|row| row.asset != "native")
        .map(|row| units(Some(row.amount)))
        .sum();
    assert_eq!(swept_token, 12 * USDT);
    assert_eq!(eth_balance(&anvil, HOT).await, hot_eth + swept_eth);
    assert_eq!(
        token_balance(&anvil, &token, HOT).await,
        hot_token + swept_token
    );

    // The customer's four deposits are credited; the top-up is internal, never credited.
    let credited = wait_for(
        "four credited deposits",
        Duration::from_secs(60),
        || async {
            let page: Value = api
                .client
                .get(format!("{}/api/v1/deposits?state=credited", api.base))
                .bearer_auth(&api.token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let rows = page["deposits"].as_array().cloned().unwrap_or_default();
            (rows.len() == 4).then_some(rows)
        },
    )
    .await;
    assert!(
        credited.iter().all(|row| row["sender"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(CUSTOMER)),
        "{credited:?}"
    );
    for top_up in &top_ups {
        let ignored = wait_for("the top-up recorded", Duration::from_secs(60), || async {
            let page: Value = api
                .client
                .get(format!("{}/api/v1/deposits?state=ignored", api.base))
                .bearer_auth(&api.token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            page["deposits"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .find(|row| row["txid"].as_str() == top_up.top_up_txid.as_deref())
        })
        .await;
        assert!(
            ignored["reason"].as_str().unwrap().starts_with("internal"),
            "{ignored}"
        );
    }
    let gas_nonce = nonce(&anvil, GAS).await;
    // The operator's report: every sweep with what it cost, and the mean per path.
    // With the configuration, whose catalogue names the test token (USDT).
    let listed = coinsensei([
        "--config",
        config.to_str().unwrap(),
        "deposits",
        "sweeps",
        "--json",
    ])
    .env("COINSENSEI_DATABASE_URL", &db.url)
    .output()
    .await
    .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.len(), 4);
    for (shown, row) in listed.iter().zip(&sweeps) {
        assert_eq!(shown["id"], row.id);
        assert_eq!(
            shown["asset"],
            if row.asset == "native" { "ETH" } else { "USDT" }
        );
        assert_eq!(shown["state"], "swept");
        assert_eq!(
            shown["cost"].as_str().unwrap(),
            (units(row.top_up_fee) + units(row.sweep_fee)).to_string()
        );
    }
    let table = run(&db.url, &["deposits", "sweeps"]).await;
    assert!(table.status.success(), "{}", stderr(&table));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    println!("{table}");
    assert!(table.contains("ethereum token with a top-up: "), "{table}");
    assert!(table.contains("ethereum native: 2 swept"), "{table}");
    // The same rows through the control plane, for an operator (a viewer token; the
    // backend's service token is refused: sweeps are internal), and in /metrics.
    let viewer = common::token(&db.url, "viewer", "ops").await;
    let remote = coinsensei([
        "deposits", "sweeps", "--server", &api.base, "--chain", "ethereum", "--state", "swept",
        "--json",
    ])
    .env("COINSENSEI_TOKEN", &viewer)
    .output()
    .await
    .unwrap();
    assert!(remote.status.success(), "{}", stderr(&remote));
    let remote: Vec<Value> = serde_json::from_slice(&remote.stdout).unwrap();
    let without_age = |rows: &[Value]| {
        rows.iter()
            .map(|row| {
                let mut row = row.clone();
                row.as_object_mut().unwrap().remove("open_seconds");
                row
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(without_age(&remote), without_age(&listed));
    let refused = api
        .client
        .get(format!("{}/api/admin/sweeps", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"coinsensei_sweeps{chain="ethereum",state="swept"} 4"#,
        r#"coinsensei_sweeps{chain="ethereum",state="failed"} 0"#,
        r#"coinsensei_sweep_oldest_open_seconds{chain="ethereum"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // More rounds change nothing: still four sweeps, no other top-up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        store
            .sweep_list(Chain::Ethereum, None, 100)
            .await
            .unwrap()
            .len(),
        4
    );
    assert_eq!(nonce(&anvil, GAS).await, gas_nonce);
    // The ledger follows the sweeps: every deposit address agrees with the chain (what it
    // was credited and held, less what was swept and the sweep's fee), and so does the
    // gas wallet's account of its top-ups; the hot wallet is off by its opening balance
    // alone, funded outside the ledger, less the gas wallet's spending when they are one.
    let lines = ledger_reconcile(&config, &db.url, "ethereum").await;
    let deposit_lines: Vec<&Value> = lines
        .iter()
        .filter(|line| line["wallet"] == "deposit")
        .collect();
    assert!(!deposit_lines.is_empty(), "{lines:?}");
    for line in &deposit_lines {
        assert_eq!(line["verdict"], "agrees", "{line}");
    }
    assert!(
        deposit_lines.iter().any(|line| line["swept_out"] != "0"),
        "{deposit_lines:?}"
    );
    assert!(up.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_are_swept_once_into_the_hot_wallet_end_to_end_on_postgres() {
    sweeps_swept_end_to_end(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_are_swept_once_into_the_hot_wallet_end_to_end_on_sqlite() {
    sweeps_swept_end_to_end(Backend::Sqlite).await;
}
