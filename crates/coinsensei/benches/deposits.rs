//! Deposit detection latency through `coinsensei up`: from a block's mining to the
//! `deposit.detected` webhook at a receiver over loopback, on Postgres, at the devnets' block
//! times:
//!
//! - Ethereum: anvil with a block every second, mined by this bench (`evm_mine` each second,
//!   so the mining instant is known to the millisecond), one ETH deposit in each block;
//! - Bitcoin: a regtest bitcoind whose blocks this bench mines (`generatetoaddress`) every
//!   second, one payment to a deposit address in each.
//!
//! Each deposit's latency is the receiver's receipt time less the time the mining call
//! returned; p50 and p99 over `COINSENSEI_BENCH_DEPOSITS` deposits per chain (default 40).
//! The path measured: the deposit worker's idle poll (a step a second), the scan step, the
//! commit with its outbox row, the deliverer's wake-up and the signed POST.
//!
//! Run with `cargo xtask bench deposits` (release), or `cargo test -p coinsensei --bench
//! deposits` (a debug build; label its figures so).

#![allow(
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    reason = "reports milliseconds; no money here"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, SystemTime};

use chain::address::Network;
use common::anvil::{head, rpc};
use common::hooks::Hooks;
use common::*;
use domain::Chain;
use serde_json::json;
use signer::Signer as _;
use testkit::{Anvil, Backend, Bitcoind, TestDb, wait_for};

const MNEMONIC: &str = "test test test test test test test test test test test junk";
const ELSEWHERE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

fn deposits_count() -> usize {
    std::env::var("COINSENSEI_BENCH_DEPOSITS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(40)
}

/// `up` with one deposit worker on `chain_lines`' chain and webhooks to `hooks`; the
/// backend's API client and the issued deposit address.
async fn start(
    db: &TestDb,
    chain: &str,
    chain_lines: &str,
    hook_url: &str,
) -> (Up, common::backend::Backend, String) {
    let config = db.dir().join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 1\n{chain_lines}\
             [[workers]]\nkind = \"deposit\"\nchain = \"{chain}\"\n{}",
            Hooks::config(hook_url, "deposit.detected"),
        ),
    )
    .unwrap();
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[
            ("COINSENSEI_DATABASE_URL", &db.url),
            ("COINSENSEI_LOG", "warn"),
        ],
    )
    .await;
    let api = common::backend::Backend::new(&db.url, &up).await;
    let address = api.issue_address(chain, "user:bench").await;
    (up, api, address)
}

/// Waits for the `deposit.detected` event of `txid`; its receipt time.
async fn detected(hooks: &Hooks, txid: &str) -> SystemTime {
    wait_for("deposit.detected", Duration::from_secs(60), || async {
        hooks
            .events()
            .into_iter()
            .find(|arrival| {
                arrival.event["data"]["txid"]
                    .as_str()
                    .is_some_and(|seen| seen.eq_ignore_ascii_case(txid))
            })
            .map(|arrival| arrival.received_at)
    })
    .await
}

fn report(chain: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let at = |quantile: f64| {
        let index = ((latencies.len() as f64 - 1.0) * quantile).round() as usize;
        latencies[index].as_secs_f64() * 1e3
    };
    println!(
        "  {chain}: block -> deposit.detected webhook: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} deposits, one block a second)",
        at(0.5),
        at(0.99),
        latencies.last().unwrap().as_secs_f64() * 1e3,
        latencies.len()
    );
}

/// Waits until the next whole second since `since`, so blocks come a second apart.
async fn tick(since: std::time::Instant, n: u32) {
    let due = since + Duration::from_secs(u64::from(n));
    tokio::time::sleep_until(due.into()).await;
}

async fn ethereum(count: usize) {
    let db = TestDb::new(Backend::Postgres).await;
    let anvil = Anvil::start_with(&["--no-mining"]).await;
    let keys = signer::InProcessSigner::new(
        &signer::Mnemonic::parse(MNEMONIC).unwrap(),
        Network::Mainnet,
    );
    let sender = keys.address(Chain::Ethereum, 2).unwrap().to_string();
    let xpub = keys.deposit_xpub(Chain::Ethereum).unwrap();
    let start_block = head(&anvil).await;
    let (hooks, hook_url) = Hooks::start().await;
    let (up, _api, address) = start(
        &db,
        "ethereum",
        &format!(
            "ethereum_rpc_url = \"{}\"\nethereum_chain_id = 31337\n\
             ethereum_deposit_confirmations = 2\nethereum_deposit_xpub = \"{xpub}\"\n\
             ethereum_deposit_start_block = {start_block}\n",
            anvil.url
        ),
        &hook_url,
    )
    .await;
    let began = std::time::Instant::now();
    let mut latencies = Vec::with_capacity(count);
    for n in 0..count {
        let txid = rpc(
            &anvil,
            "eth_sendTransaction",
            json!([{"from": sender, "to": address, "value": format!("{:#x}", 1_000_000_000_000_000u64 + n as u64)}]),
        )
        .await;
        tick(began, n as u32 + 1).await;
        rpc(&anvil, "evm_mine", json!([])).await;
        let mined = SystemTime::now();
        let received = detected(&hooks, txid.as_str().unwrap()).await;
        latencies.push(received.duration_since(mined).unwrap_or_default());
    }
    report("ethereum (anvil)", latencies);
    assert!(up.stop().await.success());
}

async fn bitcoin(count: usize) {
    let db = TestDb::new(Backend::Postgres).await;
    let node = Bitcoind::start_with(&["-disablewallet=0"]).await;
    node.cli(&["createwallet", "customer"]).await;
    let funding = node.cli(&["getnewaddress"]).await;
    node.cli(&["generatetoaddress", "150", &funding]).await;
    let keys = signer::InProcessSigner::new(
        &signer::Mnemonic::parse(MNEMONIC).unwrap(),
        Network::Regtest,
    );
    let xpub = keys.deposit_xpub(Chain::Bitcoin).unwrap();
    let start_block = node.cli(&["getblockcount"]).await;
    let (hooks, hook_url) = Hooks::start().await;
    let (up, _api, address) = start(
        &db,
        "bitcoin",
        &format!(
            "bitcoin_rpc_url = \"{}\"\nbitcoin_rpc_cookie_file = \"{}\"\n\
             bitcoin_network = \"regtest\"\nbitcoin_deposit_xpub = \"{xpub}\"\n\
             bitcoin_deposit_confirmations = 2\nbitcoin_deposit_start_block = {start_block}\n",
            node.url,
            node.datadir.join("regtest/.cookie").display(),
        ),
        &hook_url,
    )
    .await;
    let began = std::time::Instant::now();
    let mut latencies = Vec::with_capacity(count);
    for n in 0..count {
        let txid = node
            .cli(&["sendtoaddress", &address, &format!("0.001{n:03}")])
            .await;
        tick(began, n as u32 + 1).await;
        node.cli(&["generatetoaddress", "1", ELSEWHERE]).await;
        let mined = SystemTime::now();
        let received = detected(&hooks, &txid).await;
        latencies.push(received.duration_since(mined).unwrap_or_default());
    }
    report("bitcoin (regtest)", latencies);
    assert!(up.stop().await.success());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count = deposits_count();
    println!("deposit detection latency through `up` on Postgres");
    ethereum(count).await;
    bitcoin(count).await;
}
