//! Bitcoin has no consolidation: payouts spend credited deposits where they lie. End to end
//! on a regtest bitcoind through `coinsensei up` with the Bitcoin deposit worker and the
//! Bitcoin withdrawal worker side by side, addresses issued through the API, the customer
//! played by the node's own wallet:
//!
//! - the hot wallet holds 0.1 BTC; a customer deposits 2 BTC; a withdrawal of 1.5 BTC waits
//!   for funds while the deposit is pending (one confirmation: never spent before it is
//!   credited), and is paid once it is credited (two), in a transaction that spends the
//!   deposit's output on its deposit address, signed with that address's key, its change to
//!   the hot wallet's change key;
//! - a second deposit still pending is left alone by the next withdrawal, which waits again
//!   until that deposit is credited too;
//! - every input of every payout is the hot wallet's or a credited deposit's, read from the
//!   node (`prevout`), and each recipient got exactly its amount once;
//! - the ledger moves each spent deposit out of its address into the hot wallet, and agrees
//!   with the chain on every deposit address (`ledger reconcile`, balances read from the node).
//!
//! On both stores.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chain::address::{Address, Network};
use common::*;
use domain::{Chain, WithdrawalState};
use serde_json::{Value, json};
use signer::{InProcessSigner, Mnemonic, Signer};
use store::{DepositList, DepositState, Store};
use testkit::{Backend, Bitcoind, TestDb, wait_for};

const MNEMONIC: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon \
     abandon abandon about";
/// Whose addresses the recipients are (nobody here spends them).
const RECIPIENTS: &str =
    "legal winner thank year wave sausage worth useful legal winner thank yellow";
/// An address of no wallet here (BIP173's regtest example): blocks the test mines pay it.
const ELSEWHERE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
const WAIT: Duration = Duration::from_secs(90);

fn keys() -> InProcessSigner {
    InProcessSigner::new(&Mnemonic::parse(MNEMONIC).unwrap(), Network::Regtest)
}

fn recipient(n: u32) -> Address {
    InProcessSigner::new(&Mnemonic::parse(RECIPIENTS).unwrap(), Network::Regtest)
        .address(Chain::Bitcoin, n)
        .unwrap()
}

async fn tip(node: &Bitcoind) -> u64 {
    node.cli(&["getblockcount"]).await.parse().unwrap()
}

async fn mine(node: &Bitcoind, blocks: u32) -> u64 {
    node.cli(&["generatetoaddress", &blocks.to_string(), ELSEWHERE])
        .await;
    tip(node).await
}

/// The customer pays `btc` to `address`: the txid and the output's index.
async fn pay(node: &Bitcoind, address: &str, btc: &str) -> (String, u64) {
    let txid = node
        .cli(&["-rpcwallet=customer", "sendtoaddress", address, btc])
        .await;
    let tx: Value =
        serde_json::from_str(&node.cli(&["getrawtransaction", &txid, "1"]).await).unwrap();
    let vout = tx["vout"]
        .as_array()
        .unwrap()
        .iter()
        .find(|output| output["scriptPubKey"]["address"] == address)
        .and_then(|output| output["n"].as_u64())
        .unwrap();
    (txid, vout)
}

async fn deposit_state(store: &Store, txid: &str, vout: u64) -> Option<DepositState> {
    store
        .deposit_list(&DepositList {
            chain: Some(Chain::Bitcoin),
            limit: 100,
            ..DepositList::default()
        })
        .await
        .unwrap()
        .into_iter()
        .find(|view| view.deposit.txid == txid && view.deposit.position == vout)
        .map(|view| view.deposit.state)
}

/// Waits until withdrawal `id` says it waits for funds, and checks it stays `pending`.
async fn waits_for_funds(store: &Store, id: i64) {
    let row = wait_for("the withdrawal waits for funds", WAIT, || async {
        let row = store.withdrawal_get(id).await.unwrap().unwrap();
        row.error
            .as_deref()
            .is_some_and(|error| error.contains("waiting for funds"))
            .then_some(row)
    })
    .await;
    assert_eq!(row.state, WithdrawalState::Pending, "{row:?}");
    // Several rounds later: still waiting, nothing signed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let row = store.withdrawal_get(id).await.unwrap().unwrap();
    assert_eq!(row.state, WithdrawalState::Pending, "{row:?}");
    assert_eq!(row.txid, None);
}

/// Mines until withdrawal `id` is `completed`; its txid.
async fn completed(store: &Store, node: &Bitcoind, id: i64) -> String {
    let row = wait_for("the withdrawal completed", WAIT, || async {
        let row = store.withdrawal_get(id).await.unwrap().unwrap();
        if row.state == WithdrawalState::Completed {
            return Some(row);
        }
        if row.state == WithdrawalState::Broadcast || row.state == WithdrawalState::Confirming {
            mine(node, 1).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        None
    })
    .await;
    row.txid.unwrap()
}

/// The outpoints a transaction spends, each with the address of the output it spends.
async fn inputs_of(node: &Bitcoind, txid: &str) -> Vec<(String, String)> {
    let tx: Value =
        serde_json::from_str(&node.cli(&["getrawtransaction", txid, "2"]).await).unwrap();
    tx["vin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|input| {
            (
                format!("{}:{}", input["txid"].as_str().unwrap(), input["vout"]),
                input["prevout"]["scriptPubKey"]["address"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

/// Every output of a transaction: (address, satoshi).
async fn outputs_of(node: &Bitcoind, txid: &str) -> Vec<(String, u64)> {
    let tx: Value =
        serde_json::from_str(&node.cli(&["getrawtransaction", txid, "1"]).await).unwrap();
    tx["vout"]
        .as_array()
        .unwrap()
        .iter()
        .map(|output| {
            let btc = output["value"].to_string();
            (
                output["scriptPubKey"]["address"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                chain_bitcoin::btc_text_to_sat(&btc).unwrap(),
            )
        })
        .collect()
}

async fn payouts_spend_credited_deposits_where_they_lie(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let node = Bitcoind::start_with(&["-disablewallet=0"]).await;
    node.cli(&["createwallet", "customer"]).await;
    let funding = node.cli(&["-rpcwallet=customer", "getnewaddress"]).await;
    node.cli(&["generatetoaddress", "101", &funding]).await;
    mine(&node, 100).await;
    let keys = keys();
    let hot = keys.address(Chain::Bitcoin, 0).unwrap().to_string();
    let hot_change = {
        use chain::provider::Keychain;
        let bitcoin = chain_bitcoin::Bitcoin::new(
            chain_bitcoin::Rpc::new("http://127.0.0.1:9", "u", "p", Duration::from_secs(1))
                .unwrap(),
            Network::Regtest,
            keys.xpub(Chain::Bitcoin).unwrap(),
            chain_bitcoin::FeePolicy::default(),
        )
        .unwrap();
        bitcoin
            .key_address(Keychain::Change, 0)
            .unwrap()
            .to_string()
    };
    // The hot wallet: 0.1 BTC, confirmed.
    pay(&node, &hot, "0.1").await;
    let start = mine(&node, 1).await;

    let xpub = keys.deposit_xpub(Chain::Bitcoin).unwrap();
    let dir = db.dir();
    let keystore = common::backend::keystore_lines(&dir, MNEMONIC);
    let config = dir.join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 2\nconcurrency = 8\n\
             bitcoin_rpc_url = \"{}\"\nbitcoin_rpc_cookie_file = \"{}\"\n\
             bitcoin_network = \"regtest\"\nbitcoin_confirmations = 2\n\
             bitcoin_batch_max = 1\nbitcoin_batch_wait = 0\n\
             bitcoin_deposit_xpub = \"{xpub}\"\nbitcoin_deposit_confirmations = 2\n\
             bitcoin_deposit_start_block = {start}\n{keystore}\
             [[workers]]\nkind = \"deposit\"\nchain = \"bitcoin\"\n\
             [[workers]]\nkind = \"withdrawal\"\nchain = \"bitcoin\"\n",
            node.url,
            node.datadir.join("regtest/.cookie").display(),
        ),
    )
    .unwrap();
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let api = common::backend::Backend::new(&db.url, &up).await;
    let first = api.issue_address("bitcoin", "user:first").await;
    let second = api.issue_address("bitcoin", "user:second").await;

    // 2 BTC deposited, one confirmation: pending, and not spent.
    let (first_txid, first_vout) = pay(&node, &first, "2").await;
    mine(&node, 1).await;
    wait_for("the first deposit pending", WAIT, || async {
        (deposit_state(&store, &first_txid, first_vout).await == Some(DepositState::Pending))
            .then_some(())
    })
    .await;
    let withdraw = |key: &'static str, n: u32, btc: &'static str| {
        let api = &api;
        async move {
            let (status, created) = api
                .create(
                    key,
                    &json!({"chain": "bitcoin", "asset": "BTC", "to": recipient(n).to_string(), "amount": btc, "reference": format!("user:{n}")}),
                )
                .await;
            assert_eq!(status, 201, "{created}");
            created["id"].as_i64().unwrap()
        }
    };
    let one = withdraw("spend-1", 1, "1.5").await;
    waits_for_funds(&store, one).await;
    assert_eq!(
        deposit_state(&store, &first_txid, first_vout).await,
        Some(DepositState::Pending)
    );

    // The second confirmation credits it, and the withdrawal is paid from it.
    mine(&node, 1).await;
    let one_txid = completed(&store, &node, one).await;
    assert_eq!(
        deposit_state(&store, &first_txid, first_vout).await,
        Some(DepositState::Credited)
    );
    let inputs = inputs_of(&node, &one_txid).await;
    let first_outpoint = format!("{first_txid}:{first_vout}");
    assert!(
        inputs
            .iter()
            .any(|(outpoint, address)| *outpoint == first_outpoint && *address == first),
        "the payout spends the deposit where it lies: {inputs:?}"
    );
    let outputs = outputs_of(&node, &one_txid).await;
    assert_eq!(outputs[0], (recipient(1).to_string(), 150_000_000));
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert_eq!(outputs[1].0, hot_change, "the change is the hot wallet's");

    // A second deposit, pending: the next withdrawal is more than the hot wallet holds
    // without it, and waits until it is credited.
    let (second_txid, second_vout) = pay(&node, &second, "3").await;
    mine(&node, 1).await;
    wait_for("the second deposit pending", WAIT, || async {
        (deposit_state(&store, &second_txid, second_vout).await == Some(DepositState::Pending))
            .then_some(())
    })
    .await;
    let two = withdraw("spend-2", 2, "2.5").await;
    waits_for_funds(&store, two).await;
    mine(&node, 1).await;
    let two_txid = completed(&store, &node, two).await;
    let inputs = inputs_of(&node, &two_txid).await;
    let second_outpoint = format!("{second_txid}:{second_vout}");
    assert!(
        inputs
            .iter()
            .any(|(outpoint, address)| *outpoint == second_outpoint && *address == second),
        "{inputs:?}"
    );

    // Every input of every payout is the hot wallet's or a credited deposit's.
    let ours: BTreeSet<String> = [
        hot.clone(),
        hot_change.clone(),
        first.clone(),
        second.clone(),
    ]
    .into_iter()
    .collect();
    for txid in [&one_txid, &two_txid] {
        for (outpoint, address) in inputs_of(&node, txid).await {
            assert!(
                ours.contains(&address),
                "{txid} spends {outpoint} of {address}"
            );
        }
    }
    // Each recipient got exactly its amount, once.
    for (n, sat, txid) in [(1, 150_000_000u64, &one_txid), (2, 250_000_000, &two_txid)] {
        let to = recipient(n).to_string();
        let paid: Vec<u64> = outputs_of(&node, txid)
            .await
            .into_iter()
            .filter(|(address, _)| *address == to)
            .map(|(_, sat)| sat)
            .collect();
        assert_eq!(paid, vec![sat], "{to}");
    }
    let watch = chain::provider::WatchSet {
        addresses: vec![recipient(1), recipient(2)],
        tokens: vec![],
    };
    let rpc = chain_bitcoin::Rpc::with_cookie(&node.url, &node.cookie(), Duration::from_secs(30))
        .unwrap();
    let received =
        chain_bitcoin::scan_deposits(&rpc, Network::Regtest, 1, tip(&node).await, &watch)
            .await
            .unwrap()
            .deposits;
    assert_eq!(received.len(), 2, "{received:?}");

    // The ledger: each deposit swept out of its address into the hot wallet, and every
    // deposit address agrees with the chain (nothing is left on either).
    let lines = ledger_reconcile(&config, &db.url, "bitcoin").await;
    for (address, credited) in [(&first, "2"), (&second, "3")] {
        let line = lines
            .iter()
            .find(|line| line["wallet"] == "deposit" && line["address"] == *address)
            .unwrap_or_else(|| panic!("{address}: {lines:#?}"));
        assert_eq!(line["verdict"], "agrees", "{line:#}");
        assert_eq!(line["credited"], line["swept_out"], "{line:#}");
        assert_eq!(
            line["credited"]
                .as_str()
                .unwrap()
                .trim_end_matches('0')
                .trim_end_matches('.'),
            credited,
            "{line:#}"
        );
        assert_eq!(line["on_chain_base_units"], "0", "{line:#}");
    }
    let hot_line = lines
        .iter()
        .find(|line| line["wallet"] == "hot")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(
        hot_line["swept_in"]
            .as_str()
            .unwrap()
            .trim_end_matches('0')
            .trim_end_matches('.'),
        "5",
        "{hot_line:#}"
    );
    assert!(up.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_spend_credited_deposits_where_they_lie_on_postgres() {
    payouts_spend_credited_deposits_where_they_lie(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_spend_credited_deposits_where_they_lie_on_sqlite() {
    payouts_spend_credited_deposits_where_they_lie(Backend::Sqlite).await;
}
