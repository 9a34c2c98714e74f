//! The ledger reconciled with a real chain, end to end: `coinsensei up` with an Ethereum
//! deposit worker and withdrawal worker against a private anvil, ETH and an ERC-20 deposited
//! to issued addresses and credited by the deposit worker, then `coinsensei ledger reconcile`
//! reading each wallet's balance from the node:
//! - the control plane's own reconciliation (`ledger_reconcile_interval`) exports it first;
//! - the hot wallet, funded outside the ledger (anvil's own funding), differs by all it holds
//!   until `ledger adjust` records its opening balances (audited; bad input refused and
//!   nothing written); then every wallet agrees (exit 0) and `/metrics` says 0;
//! - a withdrawal paid by the worker leaves the hot wallet's lines agreeing again once it is
//!   completed with its fee;
//! - ETH put on a deposit address out of band (`anvil_setBalance`, no transaction for the
//!   scanner to see) is named as a difference of exactly that much (exit 1), in the JSON and
//!   the text output, and in `coinsensei_ledger_difference`.
//!
//! On both stores.

mod common;

use std::time::Duration;

use common::anvil::{TOKEN_BIN, rpc};
use common::*;
use serde_json::{Value, json};
use testkit::{Anvil, Backend, TestDb, wait_for};

const MNEMONIC: &str = "test test test test test test test test test test test junk";
/// anvil's first account (key 0 of the mnemonic): unlocked, funded, the token's deployer.
const SENDER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// The hot wallet: key 5 of the mnemonic, which anvil funds with 10,000 ETH at start (money
/// from outside the ledger, as an operator's funding is).
const HOT_INDEX: u32 = 5;

/// Sends a transaction from the unlocked `SENDER` and waits for its receipt.
async fn send(anvil: &Anvil, transaction: Value) -> Value {
    common::anvil::send_from(anvil, SENDER, transaction).await
}

struct Cli {
    database_url: String,
    config: String,
}

impl Cli {
    async fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--config", self.config.as_str()];
        all.extend_from_slice(args);
        coinsensei(all)
            .env("COINSENSEI_DATABASE_URL", &self.database_url)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("run coinsensei")
    }

    /// `ledger reconcile --json`: its exit code and lines.
    async fn reconcile(&self) -> (Option<i32>, Vec<Value>) {
        let output = self
            .run(&["ledger", "reconcile", "--chain", "ethereum", "--json"])
            .await;
        let lines: Vec<Value> = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{error}: {}", stderr(&output)));
        (output.status.code(), lines)
    }
}

/// The audit log's `ledger.adjust` entries, through the admin API.
async fn audited_adjustments(up: &Up, token: &str) -> Vec<Value> {
    let page: Value = reqwest::Client::new()
        .get(format!(
            "http://{}/api/admin/audit?action=ledger.adjust",
            up.address
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["entries"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{page}"))
}

fn line<'a>(lines: &'a [Value], wallet: &str, reference: Option<&str>, asset: &str) -> &'a Value {
    lines
        .iter()
        .find(|line| {
            line["wallet"] == wallet
                && line["asset"] == asset
                && reference.is_none_or(|reference| line["reference"] == reference)
        })
        .unwrap_or_else(|| panic!("no {wallet} {reference:?} {asset} line: {lines:#?}"))
}

async fn scrape(up: &Up, token: &str) -> String {
    reqwest::Client::new()
        .get(format!("http://{}/metrics", up.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn the_ledger_reconciles_with_anvil(backend: Backend) {
    let db = TestDb::new(backend).await;
    let anvil = Anvil::start_with(&["--block-time", "1"]).await;
    let dir = db.dir();
    let keystore = common::backend::keystore_lines(&dir, MNEMONIC);
    let xpub = common::backend::deposit_xpub(&dir).await;

    let supply = format!("{:064x}", 1_000_000_000_000u64);
    let deployed = send(
        &anvil,
        json!({"data": format!("0x{}{supply}", TOKEN_BIN.trim()), "gas": "0x2dc6c0"}),
    )
    .await;
    let token = deployed["contractAddress"].as_str().unwrap().to_string();
    let head = rpc(&anvil, "eth_blockNumber", json!([])).await;
    let head = u64::from_str_radix(head.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();

    let config = dir.join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 2\nledger_reconcile_interval = 1\n\
             ethereum_rpc_url = \"{}\"\nethereum_chain_id = 31337\nethereum_confirmations = 2\n\
             ethereum_hot_wallet_index = {HOT_INDEX}\n\
             ethereum_deposit_confirmations = 2\nethereum_deposit_xpub = \"{xpub}\"\n\
             ethereum_deposit_start_block = {head}\n\
             {keystore}\
             [[assets]]\nchain = \"ethereum\"\nsymbol = \"USDT\"\ndecimals = 6\ncontract = \"{token}\"\n\
             [[workers]]\nkind = \"deposit\"\nchain = \"ethereum\"\n\
             [[workers]]\nkind = \"withdrawal\"\nchain = \"ethereum\"\n",
            anvil.url,
        ),
    )
    .unwrap();
    let cli = Cli {
        database_url: db.url.clone(),
        config: config.to_str().unwrap().to_string(),
    };
    let up = Up::start(
        &["--config", &cli.config],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let api = common::backend::Backend::new(&db.url, &up).await;
    let issue = |reference: &'static str| {
        let api = &api;
        async move {
            let response = api
                .client
                .post(format!("{}/api/v1/deposit-addresses", api.base))
                .bearer_auth(&api.token)
                .json(&json!({"chain": "ethereum", "reference": reference}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 201);
            let body: Value = response.json().await.unwrap();
            body["address"].as_str().unwrap().to_string()
        }
    };
    let one = issue("user:1").await;
    let two = issue("user:2").await;

    // The hot wallet is known once its withdrawal worker has read its balance.
    let hot = wait_for(
        "the hot wallet reported",
        Duration::from_secs(60),
        || async {
            let shown = cli
                .run(&["ledger", "show", "--chain", "ethereum", "--json"])
                .await;
            assert!(shown.status.success(), "{}", stderr(&shown));
            let lines: Vec<Value> = serde_json::from_slice(&shown.stdout).unwrap();
            line(&lines, "hot", None, "ETH")["address"]
                .as_str()
                .map(str::to_string)
        },
    )
    .await;
    // Some USDT for the hot wallet too (from outside the ledger).
    let word = |address: &str| format!("{:0>64}", address.trim_start_matches("0x").to_lowercase());
    send(
        &anvil,
        json!({"to": token, "data": format!("0xa9059cbb{}{:064x}", word(&hot), 500_000_000u64)}),
    )
    .await; // 500 USDT
    send(&anvil, json!({"to": one, "value": "0x6f05b59d3b20000"})).await; // 0.5 ETH
    send(
        &anvil,
        json!({"to": token, "data": format!("0xa9059cbb{}{:064x}", word(&one), 12_500_000u64)}),
    )
    .await; // 12.5 USDT
    send(&anvil, json!({"to": two, "value": "0x3782dace9d90000"})).await; // 0.25 ETH
    wait_for(
        "three credited deposits",
        Duration::from_secs(90),
        || async {
            let listed = cli
                .run(&["deposits", "list", "--state", "credited", "--json"])
                .await;
            let rows: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap_or_default();
            (rows.len() == 3).then_some(())
        },
    )
    .await;

    let viewer = cli
        .run(&["tokens", "create", "--role", "viewer", "--name", "scraper"])
        .await;
    let viewer = String::from_utf8_lossy(&viewer.stdout)
        .split_whitespace()
        .find(|word| word.starts_with("cst_"))
        .expect("a token")
        .to_string();
    // The control plane's own reconciliation (`ledger_reconcile_interval = 1`) finds them
    // before any command runs: both deposit addresses agree, the hot wallet differs.
    wait_for(
        "the control plane's reconciliation",
        Duration::from_secs(60),
        || async {
            let metrics = scrape(&up, &viewer).await;
            [
                r#"coinsensei_ledger_wallets{chain="ethereum",asset="ETH",verdict="agrees"} 2"#,
                r#"coinsensei_ledger_wallets{chain="ethereum",asset="ETH",verdict="differs"} 1"#,
                r#"coinsensei_ledger_wallets{chain="ethereum",asset="USDT",verdict="agrees"} 2"#,
            ]
            .iter()
            .all(|series| metrics.contains(series))
            .then_some(())
        },
    )
    .await;

    // The deposit addresses agree; the hot wallet holds what anvil and the token transfer
    // gave it, none of which the ledger knows: a difference of all of it.
    let (code, lines) = cli.reconcile().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert_eq!(
        lines.len(),
        6,
        "hot, user:1, user:2 × ETH, USDT: {lines:#?}"
    );
    for (reference, asset, expected) in [
        ("user:1", "ETH", "0.5"),
        ("user:1", "USDT", "12.5"),
        ("user:2", "ETH", "0.25"),
        ("user:2", "USDT", "0"),
    ] {
        let each = line(&lines, "deposit", Some(reference), asset);
        assert_eq!(each["verdict"], "agrees", "{each}");
        assert_eq!(each["expected"], expected, "{each}");
        assert_eq!(each["on_chain"], expected, "{each}");
    }
    let hot_eth = line(&lines, "hot", None, "ETH").clone();
    assert_eq!(hot_eth["verdict"], "differs", "{hot_eth}");
    assert_eq!(hot_eth["expected"], "0");
    assert_eq!(hot_eth["difference"], hot_eth["on_chain"]);
    let hot_usdt = line(&lines, "hot", None, "USDT").clone();
    assert_eq!(hot_usdt["difference"], "500", "{hot_usdt}");

    // Bad adjustments are refused before anything is written.
    assert!(audited_adjustments(&up, &viewer).await.is_empty());
    for bad in [
        vec!["--asset", "DOGE", "--amount", "1"],
        vec!["--asset", "ETH", "--amount=-1"],
        vec!["--asset", "ETH", "--amount", "0"],
        vec!["--asset", "USDT", "--amount", "1.0000001"],
        vec!["--asset", "ETH", "--amount", "1", "--direction", "sideways"],
    ] {
        let mut args = vec![
            "ledger",
            "adjust",
            "--chain",
            "ethereum",
            "--address",
            &hot,
            "--reason",
            "bad",
        ];
        args.extend(bad.iter().copied());
        let output = cli.run(&args).await;
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(
            stderr(&output).contains("error: invalid --"),
            "{}",
            stderr(&output)
        );
    }
    let wrong_address = cli
        .run(&[
            "ledger",
            "adjust",
            "--chain",
            "ethereum",
            "--address",
            "0x1234",
            "--asset",
            "ETH",
            "--amount",
            "1",
            "--reason",
            "bad",
        ])
        .await;
    assert!(
        stderr(&wrong_address).contains("invalid --address"),
        "{}",
        stderr(&wrong_address)
    );
    assert!(
        audited_adjustments(&up, &viewer).await.is_empty(),
        "nothing audited"
    );
    // The opening balances, as the operator records them.
    for (asset, amount) in [
        ("ETH", hot_eth["on_chain"].as_str().unwrap()),
        ("USDT", hot_usdt["on_chain"].as_str().unwrap()),
    ] {
        let output = cli
            .run(&[
                "ledger",
                "adjust",
                "--chain",
                "ethereum",
                "--address",
                &hot,
                "--asset",
                asset,
                "--amount",
                amount,
                "--reason",
                "opening balance: funded at setup",
            ])
            .await;
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains("recorded"));
    }
    let audited = audited_adjustments(&up, &viewer).await;
    assert_eq!(audited.len(), 2, "{audited:#?}");
    assert!(
        audited
            .iter()
            .all(|entry| entry["details"]["reason"] == "opening balance: funded at setup"),
        "{audited:#?}"
    );
    let (code, lines) = cli.reconcile().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        lines.iter().all(|line| line["verdict"] == "agrees"),
        "{lines:#?}"
    );
    let metrics = scrape(&up, &viewer).await;
    assert!(
        metrics.contains(r#"coinsensei_ledger_difference{chain="ethereum",asset="ETH"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"coinsensei_ledger_wallets{chain="ethereum",asset="ETH",verdict="agrees"} 3"#
        ),
        "{metrics}"
    );

    // A withdrawal paid by the worker: once completed with its fee, the hot wallet agrees.
    let (status, created) = api
        .create(
            "w-1",
            &json!({"chain": "ethereum", "asset": "ETH", "to": "0x52908400098527886E0F7030069857D2E4169EE7", "amount": "0.125", "reference": "user:9"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let paid = wait_for(
        "the withdrawal completed",
        Duration::from_secs(90),
        || async {
            let listed = cli
                .run(&["withdrawals", "show", &id.to_string(), "--json"])
                .await;
            let row: Value = serde_json::from_slice(&listed.stdout).ok()?;
            (row["state"] == "completed").then_some(row)
        },
    )
    .await;
    let fee: u128 = paid["fee_base_units"]
        .as_str()
        .unwrap_or_else(|| panic!("{paid}"))
        .parse()
        .unwrap();
    assert!(fee >= 21_000, "{paid}");
    let (code, lines) = cli.reconcile().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let hot_eth = line(&lines, "hot", None, "ETH");
    assert_eq!(hot_eth["withdrawn"], "0.125", "{hot_eth}");
    assert_eq!(
        hot_eth["fees"],
        domain::Amount::from_u128(fee).format_decimal(18),
        "{hot_eth}"
    );

    // Money the scanner never saw: 0.1 ETH more on user:1's address, set by the node itself.
    rpc(
        &anvil,
        "anvil_setBalance",
        json!([one, "0x853a0d2313c0000"]), // 0.6 ETH
    )
    .await;
    let (code, lines) = cli.reconcile().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    let differing: Vec<&Value> = lines
        .iter()
        .filter(|line| line["verdict"] != "agrees")
        .collect();
    assert_eq!(differing.len(), 1, "{differing:#?}");
    let moved = differing[0];
    assert_eq!(moved["reference"], "user:1");
    assert_eq!(moved["asset"], "ETH");
    assert_eq!(moved["expected"], "0.5");
    assert_eq!(moved["on_chain"], "0.6");
    assert_eq!(moved["difference"], "0.1");
    assert_eq!(moved["difference_base_units"], "100000000000000000");
    // The text output names it too.
    let text = cli
        .run(&["ledger", "reconcile", "--chain", "ethereum"])
        .await;
    assert_eq!(text.status.code(), Some(1));
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("6 wallet lines: 5 agree, 1 differ, 0 unknown"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "DIFFERS  ethereum deposit {one} (user:1) ETH: expected 0.5, on chain 0.6, difference 0.1"
        )),
        "{out}"
    );
    let metrics = scrape(&up, &viewer).await;
    assert!(
        metrics.contains(
            r#"coinsensei_ledger_difference{chain="ethereum",asset="ETH"} 100000000000000000"#
        ),
        "{metrics}"
    );
    // A node that does not answer: every line unknown, none taken as agreeing or as zero
    // (exit 3); a bad chain is refused.
    let output = coinsensei([
        "--config",
        cli.config.as_str(),
        "ledger",
        "reconcile",
        "--json",
    ])
    .env("COINSENSEI_DATABASE_URL", &db.url)
    .env("COINSENSEI_ETHEREUM_RPC_URL", "http://127.0.0.1:1")
    .output()
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let lines: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(lines.len(), 6);
    for each in &lines {
        assert_eq!(each["verdict"], "unknown", "{each}");
        assert!(each["on_chain"].is_null(), "{each}");
        assert!(each["difference"].is_null(), "{each}");
        assert!(
            each["unknown"][0]
                .as_str()
                .is_some_and(|reason| reason.starts_with("the chain's balance: ")),
            "{each}"
        );
    }
    let bad = cli.run(&["ledger", "reconcile", "--chain", "doge"]).await;
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid --chain"), "{}", stderr(&bad));
    assert!(up.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_reconciles_with_anvil_on_postgres() {
    the_ledger_reconciles_with_anvil(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_reconciles_with_anvil_on_sqlite() {
    the_ledger_reconciles_with_anvil(Backend::Sqlite).await;
}
