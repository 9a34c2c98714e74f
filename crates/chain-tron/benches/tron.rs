//! `cargo xtask bench tron`: the figures issue 7 asks for, on one core.
//!
//! - TRC-20 (and TRX) transfers built and signed per second: `transaction::build` then
//!   `transaction::sign` (which also recovers the signer from the signature before
//!   accepting it), in a plain loop on this thread; once with a raw key (the cost of the
//!   transaction itself) and once with the `InProcessSigner` the workers use (which keeps
//!   each keychain's key and derives one BIP32 level for every signature).
//! - Deposit log parsing in blocks per second: `gettransactioninfobyblocknum` bodies made
//!   from the recorded responses in `crates/chain-tron/fixtures/recorded`, copied from the shared fixtures with their sources (ids, addresses and amounts
//!   varied; 300 transactions a block, about a mainnet block's), read exactly as the scan
//!   reads them: text to JSON value, value to `TransactionInfo`s, `token_deposits` against a
//!   watch set of 1,000 addresses and USDT, then of 100,000 (the figure); with the
//!   time to build the scan's `WatchIndex` once per step, and the rate the scan had when it
//!   decoded the watch set twice a block (`COINSENSEI_BENCH_TRON_BLOCKS`: blocks parsed,
//!   default 10,000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chain::address::{Address, Network};
use chain::provider::{Asset, BlockRef, Payment, WatchSet};
use chain_tron::node::{TransactionInfo, WatchIndex, token_deposits};
use chain_tron::transaction::{self, RefBlock, Window};
use common::KeySigner;
use domain::{Amount, Chain};
use serde_json::{Value, json};
use signer::Signer;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/recorded");
const USDT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
const TRANSACTIONS_PER_BLOCK: usize = 300;
const DISTINCT_BLOCKS: usize = 200;
/// Blocks parsed per watch set (`COINSENSEI_BENCH_TRON_BLOCKS`).
const BLOCKS_PARSED: usize = 10_000;
/// The watch sets' sizes: the earlier figure's, and the 100,000 deposit addresses.
const WATCHED: [usize; 2] = [1_000, 100_000];

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn fixture(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}");
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
}

fn address(seed: u64) -> [u8; 21] {
    let mut bytes = [0x41u8; 21];
    bytes[13..].copy_from_slice(&seed.to_be_bytes());
    bytes[1] = 0x7a;
    bytes
}

fn tron(bytes: &[u8; 21]) -> Address {
    transaction::address(bytes).unwrap()
}

#[allow(clippy::float_arithmetic, reason = "rates of benchmark figures")]
fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn window() -> Window {
    Window {
        ref_block: RefBlock::from_hex(
            "0000000003b9aca0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e",
        )
        .unwrap(),
        timestamp: 1_900_000_000_000,
        expiration: 1_900_000_060_000,
        fee_limit: 30_000_000,
    }
}

/// Builds and signs `count` transfers of `asset` from key 0 of `signer`; their rate.
fn transfers(signer: &dyn Signer, asset: &Asset, count: usize) -> f64 {
    let from = signer.address(Chain::Tron, 0).unwrap();
    let started = Instant::now();
    let mut check = 0u8;
    for n in 0..count {
        let payment = Payment {
            from_index: 0,
            from: from.clone(),
            to: tron(&address(n as u64 + 1)),
            asset: asset.clone(),
            amount: Amount::from_u128(1_000_000 + n as u128),
        };
        let unsigned = transaction::build(&payment, &window()).unwrap();
        let signed = transaction::sign(unsigned, signer).unwrap();
        check ^= signed.raw[signed.raw.len() - 1];
    }
    let elapsed = started.elapsed();
    std::hint::black_box(check);
    rate(count, elapsed)
}

/// One block's `gettransactioninfobyblocknum` body: USDT transfers (60 %), TRX transfers
/// (30 %), USDT transfers that ran out of energy (10 %), each from its recorded response.
fn block_body(number: u64, watched: usize) -> String {
    let usdt = fixture("wallet_gettransactioninfobyid.mainnet_usdt_transfer_success.json");
    let trx = fixture("wallet_gettransactioninfobyid.mainnet_trx_transfer.json");
    let failed = fixture("wallet_gettransactioninfobyid.mainnet_usdt_out_of_energy.json");
    let infos: Vec<Value> = (0..TRANSACTIONS_PER_BLOCK)
        .map(|position| {
            let seed = number * TRANSACTIONS_PER_BLOCK as u64 + position as u64;
            let mut info = match position % 10 {
                0..=5 => usdt.clone(),
                6..=8 => trx.clone(),
                _ => failed.clone(),
            };
            info["id"] = json!(format!("{seed:064x}"));
            info["blockNumber"] = json!(number);
            if let Some(log) = info.get_mut("log").and_then(|logs| logs.get_mut(0)) {
                // Every 20th seed pays a watched address.
                let to = address(seed % (20 * watched as u64));
                log["topics"][2] = json!(format!("{:0>64}", hex::encode(&to[1..])));
                log["data"] = json!(format!("{:064x}", 1_000 + seed));
            }
            info
        })
        .collect();
    serde_json::to_string(&infos).unwrap()
}

fn main() {
    println!("chain-tron bench (one core, a plain loop on this thread)");
    let usdt = Asset::Token(Address::parse(Chain::Tron, Network::Mainnet, USDT).unwrap());
    let raw_key = KeySigner::from_hex(&format!("{:0>64}", "1"));
    let hd = signer::InProcessSigner::new(
        &signer::Mnemonic::parse("test test test test test test test test test test test junk")
            .unwrap(),
        Network::Mainnet,
    );
    // Warm up, then measure.
    transfers(&raw_key, &usdt, 500);
    println!(
        "TRC-20 transfers built and signed: {:.0}/s (raw key), {:.0}/s (InProcessSigner, one BIP32 level per signature)",
        transfers(&raw_key, &usdt, 20_000),
        transfers(&hd, &usdt, 5_000)
    );
    println!(
        "TRX transfers built and signed:    {:.0}/s (raw key), {:.0}/s (InProcessSigner)",
        transfers(&raw_key, &Asset::Native, 20_000),
        transfers(&hd, &Asset::Native, 5_000)
    );

    let blocks = env_count("COINSENSEI_BENCH_TRON_BLOCKS", BLOCKS_PARSED);
    for watched in WATCHED {
        parsing(watched, blocks);
    }
}

/// Deposit log parsing against `watched` addresses, over `blocks` blocks.
fn parsing(watched: usize, blocks: usize) {
    let bodies: Vec<String> = (0..DISTINCT_BLOCKS as u64)
        .map(|n| block_body(70_000_000 + n, watched))
        .collect();
    let bytes: usize = bodies.iter().map(String::len).sum();
    let watch = WatchSet {
        addresses: (0..watched as u64)
            .map(|n| tron(&address(20 * n)))
            .collect(),
        tokens: vec![Address::parse(Chain::Tron, Network::Mainnet, USDT).unwrap()],
    };
    let block = BlockRef {
        number: 70_000_000,
        hash: "h".into(),
        parent_hash: "p".into(),
    };
    // The index a scan builds once per step (up to 100 blocks), timed apart.
    let indexed = Instant::now();
    let index = WatchIndex::new(&watch);
    let index_time = indexed.elapsed();
    let started = Instant::now();
    let mut deposits = 0usize;
    for n in 0..blocks {
        let body = &bodies[n % DISTINCT_BLOCKS];
        // As the client does: the body to a JSON value, the value to TransactionInfos.
        let value: Value = serde_json::from_str(body).unwrap();
        let infos: Vec<TransactionInfo> = serde_json::from_value(value).unwrap();
        deposits += token_deposits(&block, &infos, &index).unwrap().len();
    }
    let elapsed = started.elapsed();
    println!(
        "watch index of {watched} addresses: {} ms (once per scan step of up to 100 blocks)",
        index_time.as_millis()
    );
    // How the scan did it before the index: the addresses decoded for every block, twice
    // (native transfers, then token logs).
    let old_blocks = blocks.min(50);
    let old = Instant::now();
    for n in 0..old_blocks {
        let body = &bodies[n % DISTINCT_BLOCKS];
        let value: Value = serde_json::from_str(body).unwrap();
        let infos: Vec<TransactionInfo> = serde_json::from_value(value).unwrap();
        std::hint::black_box(WatchIndex::new(&watch));
        std::hint::black_box(token_deposits(&block, &infos, &WatchIndex::new(&watch)).unwrap());
    }
    println!(
        "  (decoding the watch set twice a block, as the scan did before: {:.0} blocks/s over {old_blocks} blocks)",
        rate(old_blocks, old.elapsed())
    );
    println!(
        "deposit log parsing: {:.0} blocks/s ({blocks} blocks of {TRANSACTIONS_PER_BLOCK} transactions, {} KiB a block on average, {deposits} deposits to {watched} watched addresses; {:.0} transactions/s)",
        rate(blocks, elapsed),
        bytes / DISTINCT_BLOCKS / 1024,
        rate(blocks * TRANSACTIONS_PER_BLOCK, elapsed),
    );
}
