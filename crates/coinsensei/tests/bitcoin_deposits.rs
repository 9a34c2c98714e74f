//! The deposits proof on a regtest bitcoind (Bitcoin Knots), end to end through `coinsensei
//! up` with its Bitcoin deposit worker (two confirmations), addresses issued through
//! `/api/v1/deposit-addresses`, the customer played by the node's own wallet, every block
//! mined by the test, and the events checked at a webhook receiver:
//!
//! - an ordinary deposit, credited at two confirmations and not at one;
//! - an incoming transaction replaced by fee (`bumpfee`, RBF) before it confirms: nothing is
//!   stored while it is in the pool (the mempool is never read), the replacement is credited,
//!   the replaced txid never appears;
//! - a two-block reorg (`invalidateblock` two deep, then a longer branch): a credited
//!   deposit in the first block is taken away for good (reversed, with its event and the
//!   `coinsensei_deposits{state="reversed"}` gauge), a pending one in the second is orphaned,
//!   then detected again and credited in its new block.
//!
//! At the end the store holds exactly those deposits, in those states, and the receiver got
//! each deposit's events once each, in order. On both stores.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chain::address::Network;
use common::hooks::Hooks;
use common::*;
use domain::Chain;
use serde_json::Value;
use store::{DepositList, DepositRow, DepositState, Store};
use testkit::{Backend, Bitcoind, TestDb, wait_for};

const MNEMONIC: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon \
     abandon abandon about";
/// An address of no wallet here (BIP173's regtest example): blocks the test mines pay it.
const ELSEWHERE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
const WAIT: Duration = Duration::from_secs(60);

struct Node {
    node: Bitcoind,
}

impl Node {
    async fn tip(&self) -> u64 {
        self.node.cli(&["getblockcount"]).await.parse().unwrap()
    }

    async fn hash(&self, height: u64) -> String {
        self.node.cli(&["getblockhash", &height.to_string()]).await
    }

    /// Mines `blocks` paying nobody here; the new tip.
    async fn mine(&self, blocks: u32) -> u64 {
        self.node
            .cli(&["generatetoaddress", &blocks.to_string(), ELSEWHERE])
            .await;
        self.tip().await
    }

    /// A customer pays `btc` to `address` from `wallet` (one of the node's), replaceable by
    /// fee.
    async fn pay(&self, wallet: &str, address: &str, btc: &str) -> String {
        self.node
            .cli(&[
                &format!("-rpcwallet={wallet}"),
                "-named",
                "sendtoaddress",
                &format!("address={address}"),
                &format!("amount={btc}"),
                "replaceable=true",
            ])
            .await
    }

    /// The output of `txid` paying `address`: its index.
    async fn vout(&self, txid: &str, address: &str) -> u64 {
        let tx: Value =
            serde_json::from_str(&self.node.cli(&["getrawtransaction", txid, "1"]).await).unwrap();
        tx["vout"]
            .as_array()
            .unwrap()
            .iter()
            .find(|output| output["scriptPubKey"]["address"] == address)
            .and_then(|output| output["n"].as_u64())
            .unwrap_or_else(|| panic!("{txid} pays {address}"))
    }
}

/// Every Bitcoin deposit in the store, by `txid:vout`.
async fn deposits(store: &Store) -> BTreeMap<String, DepositRow> {
    store
        .deposit_list(&DepositList {
            chain: Some(Chain::Bitcoin),
            limit: 1_000,
            ..DepositList::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|view| {
            let row = view.deposit;
            (format!("{}:{}", row.txid, row.position), row)
        })
        .collect()
}

/// Waits until the deposit worker has stored the node's block at `height`.
async fn scanned(store: &Store, node: &Node, height: u64) {
    let hash = node.hash(height).await;
    wait_for(&format!("block {height} scanned"), WAIT, || async {
        let head = store.scan_head(Chain::Bitcoin).await.unwrap()?;
        (head.number == height && head.hash == hash).then_some(())
    })
    .await;
}

async fn state_of(store: &Store, key: &str) -> Option<(DepositState, u64)> {
    deposits(store)
        .await
        .get(key)
        .map(|row| (row.state, row.block_number))
}

/// Gives the deposit worker time to finish the step that stored the newest block: it
/// credits right after its commit, and steps again a second later. Observing that something
/// did *not* happen needs such a window.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
}

/// Checks that the deposit `key` in block `block` (the tip) is pending at one confirmation,
/// then mines a block and checks it is credited at two, and not before that block existed.
async fn credited_at_two(store: &Store, node: &Node, key: &str, block: u64) {
    scanned(store, node, block).await;
    settle().await;
    assert_eq!(
        state_of(store, key).await,
        Some((DepositState::Pending, block)),
        "{key} at one confirmation"
    );
    let before = chrono::Utc::now();
    node.mine(1).await;
    let row = wait_for(&format!("{key} credited"), WAIT, || async {
        deposits(store)
            .await
            .remove(key)
            .filter(|row| row.state == DepositState::Credited)
    })
    .await;
    assert_eq!(row.block_number, block);
    assert!(row.credited_at.is_some_and(|at| at >= before), "{row:?}");
}

async fn bitcoin_deposits_through_rbf_and_a_reorg(backend: Backend) {
    let started = Instant::now();
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let node = Node {
        node: Bitcoind::start_with(&["-disablewallet=0"]).await,
    };
    // Two customers, each with a wallet of their own and mature coins: the second one's
    // payment must not spend the first one's change, so that the reorg can keep the first
    // one's transaction out of the new branch and mine the second's.
    for wallet in ["customer", "other"] {
        node.node.cli(&["createwallet", wallet]).await;
        let funding = node
            .node
            .cli(&[&format!("-rpcwallet={wallet}"), "getnewaddress"])
            .await;
        node.node.cli(&["generatetoaddress", "101", &funding]).await;
    }
    // And every coinbase of theirs mature well before the reorg: a payment spending one
    // that matured only in a block the reorg takes away could not be mined again.
    node.mine(100).await;
    let start = node.tip().await;
    let keys = signer::InProcessSigner::new(
        &signer::Mnemonic::parse(MNEMONIC).unwrap(),
        Network::Regtest,
    );
    let xpub = keys.deposit_xpub(Chain::Bitcoin).unwrap();
    let (hooks, hook_url) = Hooks::start().await;
    let dir = db.dir();
    let config = dir.join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 2\n\
             bitcoin_rpc_url = \"{}\"\nbitcoin_rpc_cookie_file = \"{}\"\n\
             bitcoin_network = \"regtest\"\nbitcoin_deposit_xpub = \"{xpub}\"\n\
             bitcoin_deposit_confirmations = 2\nbitcoin_deposit_start_block = {start}\n\
             [[workers]]\nkind = \"deposit\"\nchain = \"bitcoin\"\n{}",
            node.node.url,
            node.node.datadir.join("regtest/.cookie").display(),
            Hooks::config(&hook_url, "deposit.*"),
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
    for reference in ["user:ordinary", "user:rbf", "user:reversed", "user:remined"] {
        addresses.push(api.issue_address("bitcoin", reference).await);
    }
    scanned(&store, &node, start).await;

    // An ordinary deposit: pending at one confirmation, credited at two.
    let ordinary = node.pay("customer", &addresses[0], "0.5").await;
    let ordinary = format!("{ordinary}:{}", node.vout(&ordinary, &addresses[0]).await);
    let block = node.mine(1).await;
    credited_at_two(&store, &node, &ordinary, block).await;

    // Replaced by fee before it confirms: nothing stored at zero confirmations, the
    // replacement credited, the replaced transaction never seen.
    let replaced = node.pay("customer", &addresses[1], "0.3").await;
    let replaced_key = format!("{replaced}:{}", node.vout(&replaced, &addresses[1]).await);
    // The worker steps once a second while idle at the head; give it several steps with
    // the transaction in the pool (observing an absence needs a window of time).
    let tip = node.tip().await;
    for _ in 0..3 {
        scanned(&store, &node, tip).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            deposits(&store)
                .await
                .keys()
                .all(|key| !key.starts_with(&replaced)),
            "a transaction in the pool was stored"
        );
    }
    let bumped: Value = serde_json::from_str(
        &node
            .node
            .cli(&["-rpcwallet=customer", "bumpfee", &replaced])
            .await,
    )
    .unwrap();
    let replacement = bumped["txid"].as_str().unwrap().to_string();
    assert_ne!(replacement, replaced);
    let replacement = format!(
        "{replacement}:{}",
        node.vout(&replacement, &addresses[1]).await
    );
    let block = node.mine(1).await;
    credited_at_two(&store, &node, &replacement, block).await;
    assert_eq!(state_of(&store, &replaced_key).await, None);

    // Two blocks: the first with a deposit credited once the second is mined, the second
    // with one still pending.
    let reversed = node.pay("customer", &addresses[2], "0.2").await;
    let reversed_txid = reversed.clone();
    let reversed = format!("{reversed}:{}", node.vout(&reversed, &addresses[2]).await);
    let first = node.mine(1).await;
    scanned(&store, &node, first).await;
    let remined_txid = node.pay("other", &addresses[3], "0.1").await;
    let remined_raw = node.node.cli(&["getrawtransaction", &remined_txid]).await;
    let remined = format!(
        "{remined_txid}:{}",
        node.vout(&remined_txid, &addresses[3]).await
    );
    let second = node.mine(1).await;
    scanned(&store, &node, second).await;
    let credited = wait_for("the first block's deposit credited", WAIT, || async {
        state_of(&store, &reversed)
            .await
            .filter(|(state, _)| *state == DepositState::Credited)
    })
    .await;
    assert_eq!(credited, (DepositState::Credited, first));
    settle().await;
    assert_eq!(
        state_of(&store, &remined).await,
        Some((DepositState::Pending, second))
    );
    // Both blocks taken away, and a new branch: its first block holds neither deposit (the
    // credited one's transaction is kept out, as a double spend would; the pending one,
    // locked to its old height by the wallet's anti-fee-sniping locktime, cannot be mined
    // at that height and leaves the pool), the customer's wallet broadcasts the pending one
    // again and the next block mines it.
    let first_hash = node.hash(first).await;
    let second_hash = node.hash(second).await;
    node.node.cli(&["invalidateblock", &first_hash]).await;
    node.node
        .cli(&["prioritisetransaction", &reversed_txid, "0", "-100000000"])
        .await;
    assert_eq!(node.tip().await, first - 1);
    let again = node.mine(1).await;
    assert_eq!(again, first);
    scanned(&store, &node, again).await;
    assert_eq!(
        state_of(&store, &reversed).await,
        Some((DepositState::Reversed, first))
    );
    assert_eq!(
        state_of(&store, &remined).await,
        Some((DepositState::Orphaned, second))
    );
    node.node.cli(&["sendrawtransaction", &remined_raw]).await;
    let remined_block = node.mine(1).await;
    assert_eq!(remined_block, second);
    // The same height as before, another block.
    assert_ne!(node.hash(remined_block).await, second_hash);
    let (state, height) = wait_for("the re-mined deposit detected", WAIT, || async {
        state_of(&store, &remined)
            .await
            .filter(|(state, _)| *state == DepositState::Pending)
    })
    .await;
    assert_eq!((state, height), (DepositState::Pending, remined_block));
    // The new branch grows past the old one: the re-mined deposit is credited at two.
    credited_at_two(&store, &node, &remined, remined_block).await;
    assert_eq!(node.tip().await, second + 1);
    let row = deposits(&store).await.remove(&remined).unwrap();
    assert_eq!(row.block_hash, node.hash(remined_block).await);

    // The store holds exactly these deposits.
    let stored: BTreeMap<String, DepositState> = deposits(&store)
        .await
        .into_iter()
        .map(|(key, row)| (key, row.state))
        .collect();
    let expected: BTreeMap<String, DepositState> = [
        (ordinary.clone(), DepositState::Credited),
        (replacement.clone(), DepositState::Credited),
        (reversed.clone(), DepositState::Reversed),
        (remined.clone(), DepositState::Credited),
    ]
    .into_iter()
    .collect();
    assert_eq!(stored, expected);

    // Each deposit's events, once each and in order, at the receiver.
    let ids: BTreeMap<String, i64> = deposits(&store)
        .await
        .into_iter()
        .map(|(key, row)| (key, row.id))
        .collect();
    let story = |key: &String, kinds: &[&str]| {
        (
            format!("deposit:{}", ids[key]),
            kinds
                .iter()
                .map(|kind| kind.to_string())
                .collect::<Vec<_>>(),
        )
    };
    let expected_events: BTreeMap<String, Vec<String>> = [
        story(&ordinary, &["deposit.detected", "deposit.confirmed"]),
        story(&replacement, &["deposit.detected", "deposit.confirmed"]),
        story(
            &reversed,
            &["deposit.detected", "deposit.confirmed", "deposit.reversed"],
        ),
        story(
            &remined,
            &[
                "deposit.detected",
                "deposit.orphaned",
                "deposit.detected",
                "deposit.confirmed",
            ],
        ),
    ]
    .into_iter()
    .collect();
    let total: usize = expected_events.values().map(Vec::len).sum();
    let arrivals = wait_for("every deposit event delivered", WAIT, || async {
        let arrivals = hooks.events();
        (arrivals.len() >= total).then_some(arrivals)
    })
    .await;
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for arrival in &arrivals {
        let event = &arrival.event;
        received
            .entry(event["subject"].as_str().unwrap().to_string())
            .or_default()
            .push(event["type"].as_str().unwrap().to_string());
    }
    assert_eq!(received, expected_events);
    assert_eq!(hooks.bad_signatures(), 0);
    let reversal = arrivals
        .iter()
        .find(|arrival| arrival.event["type"] == "deposit.reversed")
        .unwrap();
    assert_eq!(reversal.event["data"]["reference"], "user:reversed");
    assert_eq!(reversal.event["data"]["block_hash"], first_hash);

    // The reversal is what operators are alerted on.
    let viewer = token(&db.url, "viewer", "metrics").await;
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
    assert!(
        metrics
            .lines()
            .any(|line| line == "coinsensei_deposits{chain=\"bitcoin\",state=\"reversed\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|line| line.starts_with("coinsensei_deposits"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(up.stop().await.success());
    println!(
        "the regtest deposits proof took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoin_deposits_through_rbf_and_a_two_block_reorg_on_postgres() {
    bitcoin_deposits_through_rbf_and_a_reorg(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoin_deposits_through_rbf_and_a_two_block_reorg_on_sqlite() {
    bitcoin_deposits_through_rbf_and_a_reorg(Backend::Sqlite).await;
}
