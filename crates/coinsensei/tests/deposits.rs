//! Deposits end to end on real processes: `coinsensei up` with two Ethereum deposit workers
//! against a private anvil (one block a second), the deposit xpub exported by `coinsensei keys
//! xpub --deposit` from a keystore the control plane and the workers never open, addresses
//! issued through `/api/v1/deposit-addresses` (and `coinsensei deposits address --server`),
//! ETH and an ERC-20 of the configured catalogue sent on the chain, ETH paid by a contract's
//! internal calls (`ethereum_deposit_internal_transfers`: one payment credited at its call's
//! position, one made inside a call that reverted never), and the deposits read through
//! `GET /api/v1/deposits`: each credited exactly once at its depth, also after the scanning
//! worker is SIGKILLed and comes back. On both stores.

mod common;

use std::time::Duration;

use common::anvil::{TOKEN_BIN, call_data, payment_arrays, rpc, word};
use common::*;
use serde_json::{Value, json};
use testkit::{Anvil, Backend, TestDb, wait_for};

const MNEMONIC: &str = "test test test test test test test test test test test junk";
/// anvil's first account (key 0 of the mnemonic): unlocked, funded, the token's deployer.
const SENDER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// `fixtures/erc20/EthSplitter.sol`: pays ETH by internal calls.
const SPLITTER_BIN: &str = include_str!("../../chain-ethereum/fixtures/erc20/EthSplitter.bin");

/// Sends a transaction from the unlocked `SENDER` and waits for its receipt.
async fn send(anvil: &Anvil, transaction: Value) -> Value {
    common::anvil::send_from(anvil, SENDER, transaction).await
}

async fn get(api: &common::backend::Backend, path: &str) -> Value {
    api.client
        .get(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn ethereum_deposits_are_credited_once_end_to_end(backend: Backend) {
    let db = TestDb::new(backend).await;
    let anvil = Anvil::start_with(&["--block-time", "1"]).await;
    let dir = db.dir();
    // The deposit xpub, from the keystore, by the CLI; the rest of the system never sees
    // the keystore.
    common::backend::keystore_lines(&dir, MNEMONIC);
    let xpub = common::backend::deposit_xpub(&dir).await;

    let supply = format!("{:064x}", 1_000_000_000_000u64);
    let deployed = send(
        &anvil,
        json!({"data": format!("0x{}{supply}", TOKEN_BIN.trim()), "gas": "0x2dc6c0"}),
    )
    .await;
    let token = deployed["contractAddress"].as_str().unwrap().to_string();
    let deployed = send(
        &anvil,
        json!({"data": format!("0x{}", SPLITTER_BIN.trim()), "gas": "0x2dc6c0"}),
    )
    .await;
    let splitter = deployed["contractAddress"].as_str().unwrap().to_string();
    // Scanning starts here: no address is issued before.
    let head = rpc(&anvil, "eth_blockNumber", json!([])).await;
    let head = u64::from_str_radix(head.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();

    let config = dir.join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 2\n\
             ethereum_rpc_url = \"{}\"\nethereum_chain_id = 31337\n\
             ethereum_deposit_confirmations = 2\nethereum_deposit_xpub = \"{xpub}\"\n\
             ethereum_deposit_start_block = {head}\n\
             ethereum_deposit_internal_transfers = true\n\
             [[assets]]\nchain = \"ethereum\"\nsymbol = \"USDT\"\ndecimals = 6\ncontract = \"{token}\"\n\
             [[workers]]\nkind = \"deposit\"\nchain = \"ethereum\"\n\
             [[workers]]\nkind = \"deposit\"\nchain = \"ethereum\"\n",
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

    // Addresses: through the API (201, then 200 with the same one) and the CLI.
    let issue = |reference: &str| {
        let api = &api;
        let body = json!({"chain": "ethereum", "reference": reference});
        async move {
            let response = api
                .client
                .post(format!("{}/api/v1/deposit-addresses", api.base))
                .bearer_auth(&api.token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = issue("user:1").await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = issue("user:1").await;
    assert_eq!((status, &again), (200, &first));
    let by_cli = coinsensei([
        "deposits",
        "address",
        "--chain",
        "ethereum",
        "--reference",
        "user:2",
        "--server",
        &api.base,
    ])
    .env("COINSENSEI_TOKEN", &api.token)
    .output()
    .await
    .unwrap();
    assert!(by_cli.status.success(), "{}", stderr(&by_cli));
    let second = String::from_utf8_lossy(&by_cli.stdout).trim().to_string();
    let one = first["address"].as_str().unwrap().to_string();
    assert_ne!(one, second);

    // Both deposit workers run; only the lease holder scans.
    wait_for(
        "the deposit workers running",
        Duration::from_secs(60),
        || async {
            let workers = workers_json(&db.url).await;
            ["ethereum-deposit-1", "ethereum-deposit-2"]
                .iter()
                .all(|id| find(&workers, id).is_some_and(|worker| worker["status"] == "running"))
                .then_some(())
        },
    )
    .await;

    send(&anvil, json!({"to": one, "value": "0x6f05b59d3b20000"})).await; // 0.5 ETH
    let to_word = format!("{:0>64}", one.trim_start_matches("0x").to_lowercase());
    send(
        &anvil,
        json!({"to": token, "data": format!("0xa9059cbb{to_word}{:064x}", 12_500_000u64)}),
    )
    .await; // 12.5 USDT
    send(&anvil, json!({"to": second, "value": "0x3782dace9d90000"})).await; // 0.25 ETH
    // A contract pays 0.1 ETH to the second address by an internal call (beside 0.05 to
    // nobody of ours), then pays the first 0.3 ETH inside a call that reverts.
    let paid = send(
        &anvil,
        json!({
            "to": splitter,
            "value": format!("{:#x}", 150_000_000_000_000_000u128),
            "gas": "0x2dc6c0",
            "data": call_data(
                "split(address[],uint256[])",
                &[],
                &payment_arrays(&[
                    (second.clone(), 100_000_000_000_000_000),
                    ("0x000000000000000000000000000000000000dEaD".into(), 50_000_000_000_000_000),
                ]),
            ),
        }),
    )
    .await;
    assert_eq!(paid["status"], "0x1", "{paid}");
    let undone = send(
        &anvil,
        json!({
            "to": splitter,
            "value": format!("{:#x}", 300_000_000_000_000_000u128),
            "gas": "0x2dc6c0",
            "data": call_data("payInRevertedCall(address)", &[word(&one)], &[]),
        }),
    )
    .await;
    assert_eq!(undone["status"], "0x1", "{undone}");

    let credited = wait_for(
        "four credited deposits",
        Duration::from_secs(90),
        || async {
            let page = get(&api, "/api/v1/deposits?state=credited").await;
            let rows = page["deposits"].as_array().cloned().unwrap_or_default();
            (rows.len() == 4).then_some(rows)
        },
    )
    .await;
    let mut seen: Vec<(String, String, String)> = credited
        .iter()
        .map(|row| {
            (
                row["reference"].as_str().unwrap().to_string(),
                row["asset"].as_str().unwrap().to_string(),
                row["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("user:1".into(), "ETH".into(), "0.5".into()),
            ("user:1".into(), "USDT".into(), "12.5".into()),
            ("user:2".into(), "ETH".into(), "0.1".into()),
            ("user:2".into(), "ETH".into(), "0.25".into()),
        ]
    );
    let internal = credited.iter().find(|row| row["amount"] == "0.1").unwrap();
    assert_eq!(internal["txid"], paid["transactionHash"], "{internal}");
    assert_eq!(
        internal["position"], 1,
        "the first call the contract made: {internal}"
    );
    assert_eq!(
        internal["sender"].as_str().map(str::to_lowercase),
        Some(splitter.to_lowercase()),
        "{internal}"
    );
    let user1 = get(&api, "/api/v1/deposits?reference=user:1").await;
    assert_eq!(user1["deposits"].as_array().unwrap().len(), 2, "{user1}");

    // The scanning worker dies and comes back (or the other takes the lease over): nothing
    // is credited twice, nothing new appears.
    let killed = kill_worker(&db.url, "ethereum-deposit-1", None).await;
    kill_worker(&db.url, "ethereum-deposit-1", Some(killed)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let all = get(&api, "/api/v1/deposits").await;
    let rows = all["deposits"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "nothing of the reverted call: {all}");
    assert!(rows.iter().all(|row| row["state"] == "credited"), "{all}");
    // The local CLI reads the same.
    let listed = run(
        &db.url,
        &["deposits", "list", "--state", "credited", "--json"],
    )
    .await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.len(), 4);
    assert!(up.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereum_deposits_are_credited_once_end_to_end_on_postgres() {
    ethereum_deposits_are_credited_once_end_to_end(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereum_deposits_are_credited_once_end_to_end_on_sqlite() {
    ethereum_deposits_are_credited_once_end_to_end(Backend::Sqlite).await;
}
