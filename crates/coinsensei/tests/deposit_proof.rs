//! The deposits proof on anvil, end to end through `coinsensei up` (a deposit worker, a
//! consolidation worker, the control plane delivering webhooks to a receiver in this test):
//! `COINSENSEI_DEPOSIT_PROOF_DEPOSITS` real deposits to `COINSENSEI_DEPOSIT_PROOF_ADDRESSES`
//! addresses issued through `/api/v1/deposit-addresses` (the suite: 200 to 40, about a
//! minute; `cargo xtask proof deposits`: the issue's 1,000 to 200, about three minutes in a
//! debug build): ETH and the catalogue's ERC-20 from plain accounts, the ERC-20 paid by a
//! contract (`Forwarder`: several `Transfer` logs in one transaction, each its own position),
//! ETH paid by a contract (`EthSplitter`: several internal calls in one transaction, each its
//! own position in the call trace, read with `ethereum_deposit_internal_transfers`), mixed
//! with zero-value token transfers (address-poisoning spam, from accounts and from the
//! contract), ETH dust, and a fake "USDT" (same name, symbol and decimals, another contract).
//!
//! In the middle, a reorg by `evm_snapshot` / `evm_revert` with the blocks mined by hand:
//! deposits credited on the old branch (exactly at the confirmation depth, not a block
//! earlier) are reversed, pending ones are orphaned and, re-mined from the same signed bytes
//! at another block and other positions behind new transactions, detected again and credited
//! at their new block; an ignored transfer on the old branch does not stay counted.
//!
//! Then the chain and the store are compared as exact sets: for every transaction and
//! position sent, the deposit's state, address, amount and block; nothing else stored but
//! the sweeps' gas top-ups (ignored, internal); nothing of the fake token; and the webhook
//! events of each deposit exactly those of its story, once each. Then the consolidation
//! worker (stopped until here) sweeps every address into the hot wallet, with gas top-ups
//! for the token-only ones, and `coinsensei ledger reconcile --chain ethereum` agrees with
//! the chain on every deposit address and asset.
//!
//! On Postgres only: the store's part (commits, rollbacks, credits, events) is the same
//! code on both dialects and each is covered by the store's suite and by `deposits.rs` and
//! `bitcoin_deposits.rs` through `up`; a second minute of anvil here would add little.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::anvil::{
    TOKEN_BIN, call_data, eth_balance, head, nonce, payment_arrays, rpc, token_balance,
    transfer_data, word,
};
use common::hooks::Hooks;
use common::*;
use domain::Chain;
use serde_json::{Value, json};
use signer::Signer as _;
use store::{DepositList, DepositRow, DepositState, Store, SweepRow, SweepState};
use testkit::{Anvil, Backend, TestDb, wait_for};

const MNEMONIC: &str = "test test test test test test test test test test test junk";
const FAKE_USDT_BIN: &str = include_str!("../../chain-ethereum/fixtures/erc20/FakeUsdt.bin");
const FORWARDER_BIN: &str = include_str!("../../chain-ethereum/fixtures/erc20/Forwarder.bin");
const SPLITTER_BIN: &str = include_str!("../../chain-ethereum/fixtures/erc20/EthSplitter.bin");
const USDT: u128 = 1_000_000;
const GWEI: u128 = 1_000_000_000;
const ETHER: u128 = 1_000_000_000_000_000_000;
/// Deposits are credited this deep (the block counts as one).
const CONFIRMATIONS: u64 = 3;
/// ETH below it is dust.
const DUST_WEI: u128 = ETHER / 1_000;
/// The anvil keys of the customers who send the ordinary deposits.
const CUSTOMERS: std::ops::RangeInclusive<u32> = 2..=7;
/// The key whose deposits the reorg takes away after they were credited.
const REVERSED_SENDER: u32 = 8;
/// The key whose deposits the reorg orphans, re-mined on the new branch.
const REMINED_SENDER: u32 = 9;
const WAIT: Duration = Duration::from_secs(120);

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Size {
    deposits: usize,
    addresses: usize,
}

impl Size {
    fn from_env() -> Size {
        let read = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .map(|value| value.parse().unwrap_or_else(|_| panic!("{name}={value}")))
                .unwrap_or(default)
        };
        let size = Size {
            deposits: read("COINSENSEI_DEPOSIT_PROOF_DEPOSITS", 200),
            addresses: read("COINSENSEI_DEPOSIT_PROOF_ADDRESSES", 40),
        };
        assert!(
            size.addresses >= 16 && size.deposits >= size.addresses,
            "{size:?}: at least 16 addresses, and a deposit per address"
        );
        size
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Eth,
    Token,
    /// The token, paid by the forwarder contract.
    Forwarded,
    /// ETH, paid by the splitter contract's internal calls.
    Split,
}

/// What must become of a transfer the test sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Credited,
    /// Credited on the old branch, taken away by the reorg, never mined again.
    Reversed,
    /// Pending on the old branch, mined again on the new one.
    Remined,
    /// Recorded, never credited, with a reason starting so; its events: none.
    Ignored(&'static str),
    /// Ignored on the old branch, which the reorg took away: not on the chain any more.
    IgnoredThenOrphaned,
}

impl Fate {
    fn state(self) -> DepositState {
        match self {
            Fate::Credited | Fate::Remined => DepositState::Credited,
            Fate::Reversed => DepositState::Reversed,
            Fate::Ignored(_) => DepositState::Ignored,
            Fate::IgnoredThenOrphaned => DepositState::Orphaned,
        }
    }

    /// The deposit's webhook events, in order.
    fn events(self) -> &'static [&'static str] {
        match self {
            Fate::Credited => &["deposit.detected", "deposit.confirmed"],
            Fate::Reversed => &["deposit.detected", "deposit.confirmed", "deposit.reversed"],
            Fate::Remined => &[
                "deposit.detected",
                "deposit.orphaned",
                "deposit.detected",
                "deposit.confirmed",
            ],
            Fate::Ignored(_) | Fate::IgnoredThenOrphaned => &[],
        }
    }
}

/// A transfer the test sent to a deposit address.
#[derive(Debug, Clone)]
struct Sent {
    address: String,
    amount: u128,
    fate: Fate,
}

impl Sent {
    fn new(address: String, amount: u128, fate: Fate) -> Sent {
        Sent {
            address,
            amount,
            fate,
        }
    }
}

/// A deposit's key in the store, lower-cased: (txid, asset, position).
type Key = (String, String, u64);

fn key(txid: &str, asset: &str, position: u64) -> Key {
    (txid.to_lowercase(), asset.to_lowercase(), position)
}

/// The test's chain: anvil, its contracts and its accounts.
struct Devnet {
    anvil: Anvil,
    token: String,
    fake: String,
    forwarder: String,
    splitter: String,
    /// anvil's keys 0 to 9 (0 the hot wallet, 1 the gas wallet).
    keys: Vec<String>,
}

impl Devnet {
    /// Sends from an unlocked account; the txid (mined later).
    async fn send(&self, from: u32, transaction: Value) -> String {
        let mut transaction = transaction;
        transaction["from"] = json!(self.keys[from as usize]);
        rpc(&self.anvil, "eth_sendTransaction", json!([transaction]))
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Sends and waits for the receipt, which must say it succeeded.
    async fn send_mined(&self, from: u32, transaction: Value) -> Value {
        let receipt =
            common::anvil::send_from(&self.anvil, &self.keys[from as usize], transaction).await;
        assert_eq!(receipt["status"], "0x1", "{receipt}");
        receipt
    }

    async fn deploy(&self, bin: &str, arguments: &str) -> String {
        let receipt = self
            .send_mined(
                0,
                json!({"data": format!("0x{}{arguments}", bin.trim()), "gas": "0x2dc6c0"}),
            )
            .await;
        receipt["contractAddress"].as_str().unwrap().to_string()
    }

    /// Signs a transaction of account `from` with all its fields fixed (nonce, gas, fees),
    /// so that the same bytes can be sent again after a reorg: the same txid.
    async fn sign(&self, from: u32, nonce: u128, transaction: Value) -> String {
        let mut transaction = transaction;
        transaction["from"] = json!(self.keys[from as usize]);
        transaction["nonce"] = json!(format!("{nonce:#x}"));
        transaction["maxFeePerGas"] = json!(format!("{:#x}", 100 * GWEI));
        transaction["maxPriorityFeePerGas"] = json!(format!("{GWEI:#x}"));
        transaction["chainId"] = json!("0x7a69");
        rpc(&self.anvil, "eth_signTransaction", json!([transaction]))
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn send_raw(&self, raw: &str) -> String {
        rpc(&self.anvil, "eth_sendRawTransaction", json!([raw]))
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn mine(&self) -> u64 {
        rpc(&self.anvil, "evm_mine", json!([])).await;
        head(&self.anvil).await
    }

    async fn block_hash(&self, number: u64) -> String {
        rpc(
            &self.anvil,
            "eth_getBlockByNumber",
            json!([format!("{number:#x}"), false]),
        )
        .await["hash"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits for every txid's receipt; each must say it succeeded.
    async fn all_mined(&self, txids: &[String]) -> Vec<Value> {
        let mut receipts = Vec::with_capacity(txids.len());
        for txid in txids {
            let receipt = wait_for("a receipt", WAIT, || async {
                let receipt = rpc(&self.anvil, "eth_getTransactionReceipt", json!([txid])).await;
                (!receipt.is_null()).then_some(receipt)
            })
            .await;
            assert_eq!(receipt["status"], "0x1", "{receipt}");
            receipts.push(receipt);
        }
        receipts
    }
}

/// `forward(token, to, amounts)` call data.
fn forward_data(token: &str, payments: &[(String, u128)]) -> String {
    call_data(
        "forward(address,address[],uint256[])",
        &[word(token)],
        &payment_arrays(payments),
    )
}

/// Sends the forwarder's token payments of `forwarded` from `from`, each recorded at its log's
/// position in the transaction.
async fn send_forwarded(
    chain: &Devnet,
    from: u32,
    forwarded: &mut Vec<(String, u128)>,
    sent: &mut HashMap<Key, Sent>,
    txids: &mut Vec<String>,
) {
    let txid = chain
        .send(
            from,
            json!({"to": chain.forwarder, "data": forward_data(&chain.token, forwarded)}),
        )
        .await;
    for (position, (address, amount)) in forwarded.drain(..).enumerate() {
        sent.insert(
            key(&txid, &chain.token, position as u64),
            Sent::new(address, amount, Fate::Credited),
        );
    }
    txids.push(txid);
}

/// `split(to, amounts)` call data.
fn split_data(payments: &[(String, u128)]) -> String {
    call_data("split(address[],uint256[])", &[], &payment_arrays(payments))
}

/// Sends the splitter's payments of `split` from `from` (their sum as the call's value),
/// each recorded at its call's position in the trace (the transaction's own is 0).
async fn send_split(
    chain: &Devnet,
    from: u32,
    split: &mut Vec<(String, u128)>,
    sent: &mut HashMap<Key, Sent>,
    txids: &mut Vec<String>,
) {
    let total: u128 = split.iter().map(|(_, amount)| amount).sum();
    let txid = chain
        .send(
            from,
            json!({"to": chain.splitter, "value": format!("{total:#x}"), "data": split_data(split), "gas": "0x7a120"}),
        )
        .await;
    for (n, (address, amount)) in split.drain(..).enumerate() {
        sent.insert(
            key(&txid, "native", n as u64 + 1),
            Sent::new(address, amount, Fate::Credited),
        );
    }
    txids.push(txid);
}

/// Every Ethereum deposit in the store, oldest first.
async fn all_deposits(store: &Store) -> Vec<DepositRow> {
    let mut rows = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .deposit_list(&DepositList {
                chain: Some(Chain::Ethereum),
                state: None,
                reference: None,
                before_id,
                limit: 1_000,
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before_id = Some(last.deposit.id);
        rows.extend(page.into_iter().map(|view| view.deposit));
    }
    rows.reverse();
    rows
}

async fn by_key(store: &Store) -> HashMap<Key, DepositRow> {
    all_deposits(store)
        .await
        .into_iter()
        .map(|row| (key(&row.txid, &row.asset, row.position), row))
        .collect()
}

async fn all_sweeps(store: &Store) -> Vec<SweepRow> {
    let mut rows = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .sweep_list(Chain::Ethereum, before_id, 1_000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before_id = Some(last.id);
        rows.extend(page);
    }
    rows
}

fn units(amount: Option<domain::Amount>) -> u128 {
    amount.map_or(0, |amount| u128::try_from(amount.base_units()).unwrap())
}

/// Waits until the deposit with `key` is in `state`; the row.
async fn deposit_in(store: &Store, wanted: &Key, state: DepositState) -> DepositRow {
    wait_for(&format!("{wanted:?} {state:?}"), WAIT, || async {
        by_key(store)
            .await
            .remove(wanted)
            .filter(|row| row.state == state)
    })
    .await
}

/// Gives the deposit worker time to finish the step that stored the newest block: it
/// credits right after that commit, and steps again a second later. Observing that something
/// did *not* happen (a deposit not credited yet) needs such a window.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
}

/// Waits until the scanner has stored block `number` under `hash`.
async fn scanned(store: &Store, number: u64, hash: &str) {
    wait_for(&format!("block {number} scanned"), WAIT, || async {
        let head = store.scan_head(Chain::Ethereum).await.unwrap()?;
        (head.number == number && head.hash.eq_ignore_ascii_case(hash)).then_some(())
    })
    .await;
}

async fn deposits_proof(backend: Backend) {
    let size = Size::from_env();
    let started = Instant::now();
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let anvil = Anvil::start_with(&["--block-time", "1"]).await;
    let dir = db.dir();
    let keystore = common::backend::keystore_lines(&dir, MNEMONIC);
    let signer = signer::InProcessSigner::new(
        &signer::Mnemonic::parse(MNEMONIC).unwrap(),
        chain::address::Network::Mainnet,
    );
    let keys: Vec<String> = (0..10)
        .map(|index| signer.address(Chain::Ethereum, index).unwrap().to_string())
        .collect();
    let xpub = signer.deposit_xpub(Chain::Ethereum).unwrap();
    let mut chain = Devnet {
        anvil,
        token: String::new(),
        fake: String::new(),
        forwarder: String::new(),
        splitter: String::new(),
        keys,
    };
    let supply = format!("{:064x}", 1_000_000_000 * USDT);
    chain.token = chain.deploy(TOKEN_BIN, &supply).await;
    chain.fake = chain.deploy(FAKE_USDT_BIN, &supply).await;
    chain.forwarder = chain.deploy(FORWARDER_BIN, "").await;
    chain.splitter = chain.deploy(SPLITTER_BIN, "").await;
    let funded: Vec<u32> = CUSTOMERS.chain([REVERSED_SENDER, REMINED_SENDER]).collect();
    for &customer in &funded {
        let to = chain.keys[customer as usize].clone();
        for token in [chain.token.clone(), chain.fake.clone()] {
            chain
                .send_mined(
                    0,
                    json!({"to": token, "data": transfer_data(&to, 10_000_000 * USDT)}),
                )
                .await;
        }
    }
    let forwarder = chain.forwarder.clone();
    chain
        .send_mined(
            0,
            json!({"to": chain.token, "data": transfer_data(&forwarder, 10_000_000 * USDT)}),
        )
        .await;
    // From here on the hot wallet only receives sweeps.
    let (hot, gas) = (chain.keys[0].clone(), chain.keys[1].clone());
    let hot_eth = eth_balance(&chain.anvil, &hot).await;
    let hot_token = token_balance(&chain.anvil, &chain.token, &hot).await;
    let start = head(&chain.anvil).await;

    let (hooks, hook_url) = Hooks::start().await;
    let config = dir.join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 2\n{keystore}\
             ethereum_rpc_url = \"{}\"\nethereum_chain_id = 31337\n\
             ethereum_deposit_confirmations = {CONFIRMATIONS}\nethereum_deposit_xpub = \"{xpub}\"\n\
             ethereum_deposit_start_block = {start}\n\
             ethereum_deposit_internal_transfers = true\n\
             ethereum_hot_wallet_index = 0\nethereum_gas_wallet_index = 1\n\
             ethereum_internal_addresses = [\"{hot}\", \"{gas}\"]\n\
             ethereum_sweep_base_fee_max_gwei = 100\n\
             [[assets]]\nchain = \"ethereum\"\nsymbol = \"USDT\"\ndecimals = 6\ncontract = \"{}\"\n\
             [[deposit_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\ndust = \"0.001\"\nsweep_min = \"0.005\"\n\
             [[deposit_policy]]\nchain = \"ethereum\"\nasset = \"USDT\"\nsweep_min = \"1\"\n\
             [[workers]]\nkind = \"deposit\"\nchain = \"ethereum\"\n\
             [[workers]]\nkind = \"consolidation\"\nchain = \"ethereum\"\n{}",
            chain.anvil.url,
            chain.token,
            Hooks::config(&hook_url, "deposit.*"),
        ),
    )
    .unwrap();
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    // Consolidation waits until every deposit is settled: sweeping is the end of the story.
    wait_for("the workers running", Duration::from_secs(60), || async {
        let workers = workers_json(&db.url).await;
        ["ethereum-deposit-1", "ethereum-consolidation-1"]
            .iter()
            .all(|id| find(&workers, id).is_some_and(|worker| worker["status"] == "running"))
            .then_some(())
    })
    .await;
    let stopped = run(
        &db.url,
        &["workers", "stop", "ethereum-consolidation-1", "--wait"],
    )
    .await;
    assert!(stopped.status.success(), "{}", stderr(&stopped));

    let api = common::backend::Backend::new(&db.url, &up).await;
    let mut addresses = Vec::with_capacity(size.addresses);
    for n in 0..size.addresses {
        addresses.push(api.issue_address("ethereum", &format!("user:{n}")).await);
    }
    println!(
        "{} addresses issued, {:.1} s",
        addresses.len(),
        started.elapsed().as_secs_f64()
    );

    // Phase 1, on a chain mining every second: the ordinary deposits, spam and fakes, sent
    // as fast as the node takes them.
    let mut sent: HashMap<Key, Sent> = HashMap::new();
    let mut fakes: Vec<String> = Vec::new();
    let mut txids: Vec<String> = Vec::new();
    let token = chain.token.clone();
    let native = "native".to_string();
    // Six deposits in the reorg, four more re-mined, two on the new branch.
    let ordinary = size.deposits - 16;
    let mut forwarded: Vec<(String, u128)> = Vec::new();
    let mut split: Vec<(String, u128)> = Vec::new();
    let mut customer = CUSTOMERS.cycle();
    for n in 0..ordinary {
        let address = addresses[n % size.addresses].clone();
        let round = n / size.addresses;
        // One address in five is paid tokens only: its sweep needs a gas top-up.
        let token_only = (n % size.addresses) % 5 == 4;
        let kind = match round % 3 {
            0 if !token_only => Kind::Eth,
            0 | 1 => Kind::Token,
            // ETH from the contract to every other address paid by it (never a token-only one).
            _ if !token_only && n % 2 == 1 => Kind::Split,
            _ => Kind::Forwarded,
        };
        let from = customer.next().unwrap();
        match kind {
            Kind::Eth => {
                let amount = ETHER / 100 + n as u128 * 1_000_000_000_000;
                let txid = chain
                    .send(
                        from,
                        json!({"to": address, "value": format!("{amount:#x}")}),
                    )
                    .await;
                sent.insert(
                    key(&txid, &native, 0),
                    Sent::new(address, amount, Fate::Credited),
                );
                txids.push(txid);
            }
            Kind::Token => {
                let amount = 2 * USDT + n as u128;
                let txid = chain
                    .send(
                        from,
                        json!({"to": token, "data": transfer_data(&address, amount)}),
                    )
                    .await;
                sent.insert(
                    key(&txid, &token, 0),
                    Sent::new(address, amount, Fate::Credited),
                );
                txids.push(txid);
            }
            Kind::Forwarded => {
                forwarded.push((address, 3 * USDT + n as u128));
                // Ten to a transaction (what is left at the end, after the loop).
                if forwarded.len() == 10 {
                    send_forwarded(&chain, from, &mut forwarded, &mut sent, &mut txids).await;
                }
            }
            Kind::Split => {
                split.push((address, ETHER / 80 + n as u128 * 1_000_000_000_000));
                if split.len() == 10 {
                    send_split(&chain, from, &mut split, &mut sent, &mut txids).await;
                }
            }
        }
        // Spam between them: zero-value token transfers, a fake "USDT", ETH dust.
        if n % 10 == 3 {
            let to = addresses[(n * 7) % size.addresses].clone();
            let txid = chain
                .send(from, json!({"to": token, "data": transfer_data(&to, 0)}))
                .await;
            sent.insert(
                key(&txid, &token, 0),
                Sent::new(to, 0, Fate::Ignored("zero value")),
            );
            txids.push(txid);
        }
        if n % 20 == 7 {
            let to = addresses[(n * 3) % size.addresses].clone();
            let fake = chain.fake.clone();
            let txid = chain
                .send(
                    from,
                    json!({"to": fake, "data": transfer_data(&to, 50 * USDT)}),
                )
                .await;
            fakes.push(txid.clone());
            txids.push(txid);
        }
        if n % 50 == 11 {
            let to = addresses[(n * 11) % size.addresses].clone();
            let amount = DUST_WEI / 10 + n as u128;
            let txid = chain
                .send(from, json!({"to": to, "value": format!("{amount:#x}")}))
                .await;
            sent.insert(
                key(&txid, &native, 0),
                Sent::new(to, amount, Fate::Ignored("dust")),
            );
            txids.push(txid);
        }
    }
    // What the last rounds left in a batch.
    if !forwarded.is_empty() {
        send_forwarded(&chain, 2, &mut forwarded, &mut sent, &mut txids).await;
    }
    if !split.is_empty() {
        send_split(&chain, 2, &mut split, &mut sent, &mut txids).await;
    }
    // Zero-value transfers from the contract too: five logs of nothing in one transaction.
    let spam: Vec<(String, u128)> = (0..5).map(|n| (addresses[n * 3].clone(), 0)).collect();
    let txid = chain
        .send(
            2,
            json!({"to": forwarder, "data": forward_data(&token, &spam)}),
        )
        .await;
    for (position, (address, _)) in spam.into_iter().enumerate() {
        sent.insert(
            key(&txid, &token, position as u64),
            Sent::new(address, 0, Fate::Ignored("zero value")),
        );
    }
    txids.push(txid);
    let receipts = chain.all_mined(&txids).await;
    // Each forwarded transaction's Transfer logs come from the token, called by the
    // forwarder: the deposits' sender is the contract.
    let forwarded_logs: usize = receipts
        .iter()
        .filter(|receipt| {
            receipt["to"]
                .as_str()
                .is_some_and(|to| to.eq_ignore_ascii_case(&forwarder))
        })
        .map(|receipt| receipt["logs"].as_array().unwrap().len())
        .sum();
    assert!(forwarded_logs > 0);
    let split_payments = sent
        .keys()
        .filter(|(_, asset, position)| asset == "native" && *position > 0)
        .count();
    assert!(split_payments > 0, "ETH paid by the contract");
    println!(
        "phase 1: {} transactions mined ({} deposits, {split_payments} of them ETH by internal calls, {} fake), {:.1} s",
        txids.len(),
        sent.len(),
        fakes.len(),
        started.elapsed().as_secs_f64()
    );

    // Phase 2: the reorg, every block mined by hand.
    rpc(&chain.anvil, "evm_setIntervalMining", json!([0])).await;
    let fork = head(&chain.anvil).await;
    let snapshot = rpc(&chain.anvil, "evm_snapshot", json!([])).await;
    // Block fork + 1: deposits that will be credited, then taken away.
    let mut reversed = Vec::new();
    for (n, address) in addresses.iter().take(6).enumerate() {
        let address = address.clone();
        let (txid, asset, amount) = if n < 3 {
            let amount = ETHER / 50 + n as u128;
            let txid = chain
                .send(
                    REVERSED_SENDER,
                    json!({"to": address, "value": format!("{amount:#x}")}),
                )
                .await;
            (txid, native.clone(), amount)
        } else {
            let amount = 4 * USDT + n as u128;
            let txid = chain
                .send(
                    REVERSED_SENDER,
                    json!({"to": token, "data": transfer_data(&address, amount)}),
                )
                .await;
            (txid, token.clone(), amount)
        };
        let wanted = key(&txid, &asset, 0);
        sent.insert(wanted.clone(), Sent::new(address, amount, Fate::Reversed));
        reversed.push(wanted);
    }
    let first = chain.mine().await;
    assert_eq!(first, fork + 1);
    scanned(&store, first, &chain.block_hash(first).await).await;
    // Block fork + 2: deposits still pending when the reorg comes, signed here so the
    // same bytes can be mined again; and ignored transfers the reorg takes away for good.
    let mut remined_raw = Vec::new();
    let mut remined = Vec::new();
    let base_nonce = nonce(&chain.anvil, &chain.keys[REMINED_SENDER as usize]).await;
    for n in 0..4 {
        let address = addresses[6 + n].clone();
        let (transaction, asset, amount) = if n < 3 {
            let amount = ETHER / 40 + n as u128;
            (
                json!({"to": address, "value": format!("{amount:#x}"), "gas": "0x5208"}),
                native.clone(),
                amount,
            )
        } else {
            let amount = 5 * USDT + n as u128;
            (
                json!({"to": token, "data": transfer_data(&address, amount), "gas": "0x30d40"}),
                token.clone(),
                amount,
            )
        };
        let raw = chain
            .sign(REMINED_SENDER, base_nonce + n as u128, transaction)
            .await;
        let txid = chain.send_raw(&raw).await;
        let wanted = key(&txid, &asset, 0);
        sent.insert(wanted.clone(), Sent::new(address, amount, Fate::Remined));
        remined.push(wanted);
        remined_raw.push(raw);
    }
    let batch: Vec<(String, u128)> = (0..4)
        .map(|n| (addresses[10 + n].clone(), 6 * USDT + n as u128))
        .collect();
    let raw = chain
        .sign(
            REMINED_SENDER,
            base_nonce + 4,
            json!({"to": forwarder, "data": forward_data(&token, &batch), "gas": "0x7a120"}),
        )
        .await;
    let txid = chain.send_raw(&raw).await;
    for (position, (address, amount)) in batch.into_iter().enumerate() {
        let wanted = key(&txid, &token, position as u64);
        sent.insert(wanted.clone(), Sent::new(address, amount, Fate::Remined));
        remined.push(wanted);
    }
    remined_raw.push(raw);
    let gone_dust = chain
        .send(
            REVERSED_SENDER,
            json!({"to": addresses[12], "value": format!("{:#x}", DUST_WEI / 2)}),
        )
        .await;
    sent.insert(
        key(&gone_dust, &native, 0),
        Sent::new(
            addresses[12].clone(),
            DUST_WEI / 2,
            Fate::IgnoredThenOrphaned,
        ),
    );
    let gone_spam = chain
        .send(
            REVERSED_SENDER,
            json!({"to": token, "data": transfer_data(&addresses[13], 0)}),
        )
        .await;
    sent.insert(
        key(&gone_spam, &token, 0),
        Sent::new(addresses[13].clone(), 0, Fate::IgnoredThenOrphaned),
    );
    let second = chain.mine().await;
    // Two deep: still pending.
    scanned(&store, second, &chain.block_hash(second).await).await;
    settle().await;
    let stored = by_key(&store).await;
    for wanted in &reversed {
        assert_eq!(
            stored[wanted].state,
            DepositState::Pending,
            "{:?}",
            stored[wanted]
        );
    }
    // At head fork + 3 the first block is three deep: its deposits are credited in the
    // step that reads it, the second block's (two deep) are not.
    let third = chain.mine().await;
    scanned(&store, third, &chain.block_hash(third).await).await;
    for wanted in &reversed {
        deposit_in(&store, wanted, DepositState::Credited).await;
    }
    let stored = by_key(&store).await;
    for wanted in &remined {
        let row = &stored[wanted];
        assert_eq!(
            (row.state, row.block_number),
            (DepositState::Pending, second),
            "{row:?}"
        );
    }
    // The reorg: back to the fork, and a new branch on it. Two new deposits come first in
    // its first block, then the re-mined ones from the same bytes, at other positions.
    assert_eq!(
        rpc(&chain.anvil, "evm_revert", json!([snapshot])).await,
        true
    );
    assert_eq!(head(&chain.anvil).await, fork);
    for n in 0..2 {
        let address = addresses[14 + n].clone();
        let amount = ETHER / 30 + n as u128;
        let txid = chain
            .send(2, json!({"to": address, "value": format!("{amount:#x}")}))
            .await;
        sent.insert(
            key(&txid, &native, 0),
            Sent::new(address, amount, Fate::Credited),
        );
    }
    for raw in &remined_raw {
        chain.send_raw(raw).await;
    }
    let new_first = chain.mine().await;
    assert_eq!(new_first, fork + 1);
    // Orphaned, then detected again in its new block; pending at depths one and two.
    for depth in 1..CONFIRMATIONS {
        let tip = fork + depth;
        if depth > 1 {
            assert_eq!(chain.mine().await, tip);
        }
        scanned(&store, tip, &chain.block_hash(tip).await).await;
        settle().await;
        let stored = by_key(&store).await;
        for wanted in &remined {
            let row = &stored[wanted];
            assert_eq!(
                (row.state, row.block_number),
                (DepositState::Pending, new_first),
                "{row:?}"
            );
        }
        for wanted in &reversed {
            assert_eq!(stored[wanted].state, DepositState::Reversed);
        }
    }
    // Three deep: credited.
    chain.mine().await;
    for wanted in &remined {
        let row = deposit_in(&store, wanted, DepositState::Credited).await;
        assert_eq!(row.block_number, new_first);
        assert!(
            row.block_hash
                .eq_ignore_ascii_case(&chain.block_hash(new_first).await)
        );
    }
    rpc(&chain.anvil, "evm_setIntervalMining", json!([1])).await;
    println!(
        "phase 2 (reorg at {fork}): {} credited then reversed, {} re-mined, {:.1} s",
        reversed.len(),
        remined.len(),
        started.elapsed().as_secs_f64()
    );

    // Every transfer sent is settled: the store is exactly what was sent.
    let real = sent
        .values()
        .filter(|sent| matches!(sent.fate, Fate::Credited | Fate::Reversed | Fate::Remined))
        .count();
    assert_eq!(real, size.deposits, "the deposits sent");
    let deadline = Instant::now() + WAIT;
    let stored = loop {
        let stored = by_key(&store).await;
        let unsettled: Vec<(&Key, Fate, Option<&DepositRow>)> = sent
            .iter()
            .map(|(wanted, sent)| (wanted, sent.fate, stored.get(wanted)))
            .filter(|(_, fate, row)| row.is_none_or(|row| row.state != fate.state()))
            .collect();
        if unsettled.is_empty() {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "deposits not as they should be: {unsettled:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        stored.keys().collect::<HashSet<_>>(),
        sent.keys().collect::<HashSet<_>>(),
        "the store holds exactly the transfers sent (no sweeps yet)"
    );
    for (wanted, sent) in &sent {
        let row = &stored[wanted];
        assert!(row.address.eq_ignore_ascii_case(&sent.address), "{row:?}");
        assert_eq!(units(Some(row.amount)), sent.amount, "{row:?}");
        match sent.fate {
            Fate::Ignored(reason) => assert!(
                row.reason
                    .as_deref()
                    .is_some_and(|text| text.starts_with(reason)),
                "{row:?}"
            ),
            Fate::IgnoredThenOrphaned => assert!(row.reason.is_some(), "{row:?}"),
            _ => {
                assert_eq!(row.reason, None, "{row:?}");
                assert!(row.credited_at.is_some(), "{row:?}");
            }
        }
    }
    for fake in &fakes {
        assert!(
            !stored
                .keys()
                .any(|(txid, _, _)| txid == &fake.to_lowercase()),
            "a fake USDT transfer was recorded: {fake}"
        );
    }
    let fake_lower = chain.fake.to_lowercase();
    assert!(!stored.keys().any(|(_, asset, _)| asset == &fake_lower));

    // The events: each deposit's story, once each, in order.
    let ids: HashMap<i64, Fate> = sent
        .iter()
        .map(|(wanted, sent)| (stored[wanted].id, sent.fate))
        .collect();
    let expected: BTreeMap<String, Vec<&str>> = ids
        .iter()
        .filter(|(_, fate)| !fate.events().is_empty())
        .map(|(id, fate)| (format!("deposit:{id}"), fate.events().to_vec()))
        .collect();
    let total: usize = expected.values().map(Vec::len).sum();
    let arrivals = wait_for("every deposit event delivered", WAIT, || async {
        let arrivals = hooks.events();
        (arrivals.len() >= total).then_some(arrivals)
    })
    .await;
    let mut received: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for arrival in &arrivals {
        let event = &arrival.event;
        let subject = event["subject"].as_str().unwrap().to_string();
        let kind = event["type"].as_str().unwrap();
        let kind = expected
            .get(&subject)
            .and_then(|kinds| kinds.iter().find(|wanted| **wanted == kind).copied())
            .unwrap_or_else(|| panic!("an event nobody expected: {event}"));
        received.entry(subject).or_default().push(kind);
    }
    assert_eq!(received, expected);
    assert_eq!(hooks.bad_signatures(), 0);
    // The last event of each deposit says what the store says.
    for arrival in arrivals.iter().rev() {
        let data = &arrival.event["data"];
        let id = data["id"].as_i64().unwrap();
        let row = stored.values().find(|row| row.id == id).unwrap();
        if data["state"] == row.state.as_str() {
            assert!(
                data["txid"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(&row.txid)
            );
            assert_eq!(data["position"].as_u64(), Some(row.position));
            assert_eq!(
                data["amount_base_units"].as_str().unwrap(),
                row.amount.base_units().to_string()
            );
            assert!(
                data["address"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(&row.address)
            );
            assert_eq!(data["block_number"].as_u64(), Some(row.block_number));
        }
    }
    println!(
        "{} deposits settled and {} events checked, {:.1} s",
        stored.len(),
        arrivals.len(),
        started.elapsed().as_secs_f64()
    );

    // Phase 3: the consolidation worker sweeps every address into the hot wallet.
    let started_sweeps = run(&db.url, &["workers", "start", "ethereum-consolidation-1"]).await;
    assert!(
        started_sweeps.status.success(),
        "{}",
        stderr(&started_sweeps)
    );
    // A sweep round starts at most 32 sweeps every 2 s, and each waits for its block (and a
    // top-up's): give each address a couple of seconds on a loaded machine.
    let sweeping = WAIT + Duration::from_secs(2 * size.addresses as u64);
    let sweeps = wait_for("every address swept", sweeping, || async {
        for address in &addresses {
            if token_balance(&chain.anvil, &token, address).await != 0
                || eth_balance(&chain.anvil, address).await > ETHER / 200
            {
                return None;
            }
        }
        let sweeps = all_sweeps(&store).await;
        sweeps
            .iter()
            .all(|row| row.state == SweepState::Swept)
            .then_some(sweeps)
    })
    .await;
    assert!(
        store
            .sweep_open(Chain::Ethereum, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let top_ups: Vec<&SweepRow> = sweeps
        .iter()
        .filter(|row| row.top_up_amount.is_some())
        .collect();
    assert_eq!(nonce(&chain.anvil, &gas).await, top_ups.len() as u128);
    // On the chain at the end of phase 2, per address: (wei, token base units).
    let mut held: HashMap<String, (u128, u128)> = HashMap::new();
    for ((_, asset, _), sent) in &sent {
        if matches!(sent.fate, Fate::Reversed | Fate::IgnoredThenOrphaned) {
            continue;
        }
        let entry = held.entry(sent.address.to_lowercase()).or_default();
        if asset == "native" {
            entry.0 += sent.amount;
        } else {
            entry.1 += sent.amount;
        }
    }
    assert!(!top_ups.is_empty(), "some token-only address needed gas");
    for address in &addresses {
        let of = sweeps
            .iter()
            .filter(|row| row.address.eq_ignore_ascii_case(address))
            .count();
        assert_eq!(nonce(&chain.anvil, address).await, of as u128, "{address}");
        // An address paid tokens and no ETH at all can only have been swept after a top-up.
        let (wei, tokens) = held
            .get(&address.to_lowercase())
            .copied()
            .unwrap_or_default();
        if wei == 0 && tokens > 0 {
            assert!(
                top_ups
                    .iter()
                    .any(|row| row.address.eq_ignore_ascii_case(address)),
                "the token-only address {address} was topped up"
            );
        }
    }
    let swept = |native: bool| -> u128 {
        sweeps
            .iter()
            .filter(|row| (row.asset == "native") == native)
            .map(|row| units(Some(row.amount)))
            .sum()
    };
    assert_eq!(eth_balance(&chain.anvil, &hot).await, hot_eth + swept(true));
    assert_eq!(
        token_balance(&chain.anvil, &token, &hot).await,
        hot_token + swept(false)
    );
    // The top-ups are recorded, ignored as internal; nothing else new.
    let after = wait_for("the top-ups recorded", WAIT, || async {
        let stored = by_key(&store).await;
        top_ups
            .iter()
            .all(|row| stored.contains_key(&key(row.top_up_txid.as_deref().unwrap(), "native", 0)))
            .then_some(stored)
    })
    .await;
    for (wanted, row) in &after {
        if sent.contains_key(wanted) {
            assert_eq!(row.state, stored[wanted].state);
            continue;
        }
        assert!(
            top_ups.iter().any(|sweep| sweep
                .top_up_txid
                .as_deref()
                .is_some_and(|txid| txid.eq_ignore_ascii_case(&wanted.0))),
            "{row:?}"
        );
        assert_eq!(row.state, DepositState::Ignored);
        assert!(
            row.reason.as_deref().unwrap().starts_with("internal"),
            "{row:?}"
        );
    }
    println!(
        "phase 3: {} sweeps ({} with a gas top-up), {:.1} s",
        sweeps.len(),
        top_ups.len(),
        started.elapsed().as_secs_f64()
    );

    // The ledger agrees with the chain on every deposit address and asset.
    let lines = ledger_reconcile(&config, &db.url, "ethereum").await;
    let deposit_lines: Vec<&Value> = lines
        .iter()
        .filter(|line| line["wallet"] == "deposit")
        .collect();
    assert_eq!(deposit_lines.len(), 2 * size.addresses, "{lines:?}");
    let differing: Vec<&&Value> = deposit_lines
        .iter()
        .filter(|line| line["verdict"] != "agrees")
        .collect();
    assert!(differing.is_empty(), "{differing:#?}");
    // Sweeping told the backend nothing more: the top-ups are ignored, without events.
    assert_eq!(
        hooks.events().len(),
        total,
        "deposit events after the sweeps"
    );
    assert!(up.stop().await.success());
    println!("the proof took {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_are_credited_once_through_a_reorg_and_swept_on_postgres() {
    deposits_proof(Backend::Postgres).await;
}
