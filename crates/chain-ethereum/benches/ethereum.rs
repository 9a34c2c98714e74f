//! Issue 6's figures, on anvil (release build, 2 cores, anvil on the same machine):
//!
//! - key derivations per second: from the seed (`InProcessSigner::address`) and from the
//!   account xpub alone (`Xpub::address`);
//! - ETH and ERC-20 transfers built, signed and broadcast per second from one sender with
//!   pipelined nonces (64 in flight, none waiting for another to be mined), counted until the
//!   node accepted the last one; then blocks are mined until every one is in, successful;
//! - deposit scanning: blocks per second through the wallet's scanner (read, check, store
//!   with deposits, credit) over blocks each holding an ERC-20 transfer, half of them to
//!   watched addresses, on Postgres and on SQLite; and the adapter's `scan` alone, without and
//!   with call traces (ETH paid by contracts, `with_internal_transfers`); with the 50 paid
//!   addresses watched, then with 100,000 more (COINSENSEI_BENCH_WATCHED), the figure.
//!
//! Run with `cargo xtask bench ethereum` (installs anvil), or with COINSENSEI_ANVIL set:
//! `cargo bench -p chain-ethereum --bench ethereum`. COINSENSEI_BENCH_TRANSFERS sets the count
//! of transfers (default 2000), COINSENSEI_BENCH_SCAN_BLOCKS the blocks scanned (default
//! 10000).

#![allow(
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    reason = "reports rates; no money here"
)]

use std::sync::Arc;
use std::time::Instant;

use chain::address::{Address, Network};
use chain::provider::{ChainRead, SubmitOutcome, WatchSet};
use chain_ethereum::{Ethereum, FeeQuote, SignedTx, TokenTransfer, Transfer, Unsigned, sign};
use domain::{Amount, Chain};
use signer::{InProcessSigner, Mnemonic, Signer, Xpub};
use testkit::{Anvil, Backend, TestDb};
use wallet::scanner::{ScanPolicy, Scanner, Step};

const IN_FLIGHT: usize = 64;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{ANVIL_MNEMONIC, deploy_token};

fn derivations() {
    let signer = InProcessSigner::new(&Mnemonic::generate(), Network::Mainnet);
    for chain in [Chain::Ethereum, Chain::Tron, Chain::Bitcoin] {
        let n = 2_000u32;
        let started = Instant::now();
        for index in 0..n {
            signer.address(chain, index).unwrap();
        }
        let from_seed = f64::from(n) / started.elapsed().as_secs_f64();
        let xpub = Xpub::parse(
            chain,
            Network::Mainnet,
            &signer.xpub(chain).unwrap().to_string(),
        )
        .unwrap();
        let started = Instant::now();
        for index in 0..n {
            xpub.address(index).unwrap();
        }
        let from_xpub = f64::from(n) / started.elapsed().as_secs_f64();
        println!(
            "  {chain}: {from_seed:.0} addresses/s from the seed, {from_xpub:.0}/s from the xpub"
        );
    }
}

/// Signs and broadcasts `count` transactions made by `make(nonce)`, `IN_FLIGHT` at a time,
/// none waiting for another to be mined (anvil runs without automine here: the pool takes
/// them all, in whatever order they arrive, and blocks are mined afterwards).
async fn pipelined(
    client: &Ethereum,
    hot: &Arc<InProcessSigner>,
    start: u64,
    count: u64,
    make: Arc<dyn Fn(u64) -> Unsigned + Send + Sync>,
) -> (f64, Vec<SignedTx>) {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for nonce in start..start + count {
        let permit = Arc::clone(&semaphore).acquire_owned().await.unwrap();
        let (client, hot, make) = (client.clone(), Arc::clone(hot), Arc::clone(&make));
        tasks.push(tokio::spawn(async move {
            let signed = sign(make(nonce), hot.as_ref(), 0).unwrap();
            let outcome = client.submit(&signed).await;
            drop(permit);
            assert_eq!(outcome, SubmitOutcome::Accepted, "nonce {nonce}");
            signed
        }));
    }
    let mut sent = Vec::new();
    for task in tasks {
        sent.push(task.await.unwrap());
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    (rate, sent)
}

/// anvil started without automine, and its test methods.
struct Devnet {
    _anvil: Anvil,
    client: Ethereum,
    node: alloy::providers::RootProvider,
}

impl Devnet {
    async fn start() -> Devnet {
        let anvil = Anvil::start_with(&["--no-mining"]).await;
        let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
        let node = alloy::providers::RootProvider::new_http(anvil.url.parse().unwrap());
        Devnet {
            _anvil: anvil,
            client,
            node,
        }
    }

    async fn call(&self, method: &'static str, params: serde_json::Value) {
        use alloy::providers::Provider;
        let _: serde_json::Value = self.node.raw_request(method.into(), params).await.unwrap();
    }

    async fn mine(&self) {
        self.call("evm_mine", serde_json::json!([])).await;
    }

    /// The test token, deployed with automine on for the while.
    async fn token(&self, hot: &InProcessSigner) -> Address {
        self.call("evm_setAutomine", serde_json::json!([true]))
            .await;
        let token = deploy_token(&self.client, hot, u128::MAX).await;
        self.call("evm_setAutomine", serde_json::json!([false]))
            .await;
        token
    }
}

/// Mines until every one of `sent` is in a block; each must have succeeded.
async fn all_mined(devnet: &Devnet, sent: &[SignedTx]) {
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    for signed in sent {
        loop {
            match devnet.client.transaction_status(signed.txid).await.unwrap() {
                chain::provider::TxStatus::Included { success, .. } => {
                    assert!(success, "{} reverted", signed.txid);
                    break;
                }
                status => {
                    assert!(
                        Instant::now() < deadline,
                        "{} not mined: {status:?}",
                        signed.txid
                    );
                    devnet.mine().await;
                }
            }
        }
    }
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// `blocks` blocks of ERC-20 traffic (one transfer each, to 100 recipients), then scanned
/// by the wallet's scanner on each store, and by the adapter alone.
async fn scanning(devnet: &Devnet, hot: &Arc<InProcessSigner>, token: &Address, blocks: u64) {
    let client = &devnet.client;
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let recipients: Vec<Address> = (100..200)
        .map(|index| hot.address(Chain::Ethereum, index).unwrap())
        .collect();
    // Gas for a recipient that never held the token (its balance slot is new), and a fee
    // cap far above anything anvil's base fee reaches.
    let gas = client
        .estimate_token_transfer_gas(&from, token, &recipients[0], Amount::from_u128(1))
        .await
        .unwrap();
    let quote = client.fees(1_000_000_000_000).await.unwrap();
    let fees = FeeQuote {
        max_fee_per_gas: 1_000_000_000_000,
        ..quote
    };
    let first = client.tip().await.unwrap().head + 1;
    let start = client.pending_nonce(&from).await.unwrap();
    let started = Instant::now();
    for nonce in start..start + blocks {
        let unsigned = client
            .build_token_transfer(&TokenTransfer {
                token: token.clone(),
                to: recipients[(nonce % 100) as usize].clone(),
                amount: Amount::from_u128(1),
                nonce,
                fees,
                gas_limit: gas,
            })
            .unwrap();
        let signed = sign(unsigned, hot.as_ref(), 0).unwrap();
        assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
        // A block of its own.
        devnet.mine().await;
    }
    let sequence = client.account_sequence(&from).await.unwrap().unwrap();
    assert_eq!(sequence.mined, start + blocks, "every transfer is mined");
    println!(
        "  {blocks} blocks of ERC-20 traffic made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let last = client.tip().await.unwrap().head;
    let count = last - first + 1;
    let sequence = client.account_sequence(&from).await.unwrap().unwrap();
    assert_eq!(sequence.mined, start + blocks, "every transfer is mined");
    assert_eq!(count, blocks, "one transfer per block");
    // The 50 paid addresses alone, then among the 100,000 (COINSENSEI_BENCH_WATCHED):
    // addresses of nobody's keys.
    let extra = env_count("COINSENSEI_BENCH_WATCHED", 100_000);
    for others in [0, extra] {
        let mut addresses = recipients[..50].to_vec();
        addresses.extend((0..others).map(|n| {
            Address::parse(
                Chain::Ethereum,
                Network::Mainnet,
                &format!("0x5a5a5a5a5a5a5a5a5a5a5a5a{n:016x}"),
            )
            .unwrap()
        }));
        scan_with(client, token, first, last, addresses).await;
    }
}

/// Scans blocks `first..=last` for deposits of `token` to `addresses` (the 50 paid ones
/// first): through the wallet's scanner on each store, and through the adapter alone.
async fn scan_with(
    client: &Ethereum,
    token: &Address,
    first: u64,
    last: u64,
    addresses: Vec<Address>,
) {
    let count = last - first + 1;
    let watched = addresses.len();
    let watch = WatchSet {
        addresses,
        tokens: vec![token.clone()],
    };
    println!(
        "  deposit scan of {count} blocks ({first}..={last}), each holding an ERC-20 \
         transfer, half of them to 50 of the {watched} watched addresses:"
    );
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::new(backend).await;
        let scanner = Scanner::new(
            client.clone(),
            db.store().await,
            ScanPolicy {
                start: first,
                batch_blocks: 500,
                confirmations: 12,
                credit_finalized: false,
            },
            watch.clone(),
        )
        .unwrap();
        let started = Instant::now();
        let steps = scanner.catch_up(last).await.unwrap();
        let elapsed = started.elapsed().as_secs_f64();
        let found: usize = steps
            .iter()
            .map(|step| match step {
                Step::Scanned { deposits, .. } => *deposits,
                _ => 0,
            })
            .sum();
        assert!(
            found as u64 >= count / 2 - 1,
            "{found} deposits in {count} blocks"
        );
        println!(
            "    scanner on {backend:?}: {:.0} blocks/s ({found} deposits stored, {} steps, \
             {elapsed:.2} s)",
            count as f64 / elapsed,
            steps.len()
        );
    }
    let started = Instant::now();
    let mut found = 0;
    let mut from = first;
    while from <= last {
        let to = last.min(from + 499);
        found += client.scan(from, to, &watch).await.unwrap().deposits.len();
        from = to + 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "    the adapter's scan alone: {:.0} blocks/s ({found} deposits)",
        count as f64 / elapsed
    );
    // The same with ETH paid by contracts read too: one call trace per block.
    let traced = client.clone().with_internal_transfers().await.unwrap();
    let started = Instant::now();
    let mut traced_found = 0;
    let mut from = first;
    while from <= last {
        let to = last.min(from + 499);
        traced_found += traced.scan(from, to, &watch).await.unwrap().deposits.len();
        from = to + 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(traced_found, found, "the traces add no deposit here");
    println!(
        "    the adapter's scan with call traces (ethereum_deposit_internal_transfers): {:.0} blocks/s",
        count as f64 / elapsed
    );
}

fn main() {
    let count = env_count("COINSENSEI_BENCH_TRANSFERS", 2_000);
    let scan_blocks = env_count("COINSENSEI_BENCH_SCAN_BLOCKS", 10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("coinsensei Ethereum benchmark (release build, anvil on this machine)");
        derivations();
        let devnet = Devnet::start().await;
        let client = devnet.client.clone();
        let hot = Arc::new(InProcessSigner::new(
            &Mnemonic::parse(ANVIL_MNEMONIC).unwrap(),
            Network::Mainnet,
        ));
        let from = hot.address(Chain::Ethereum, 0).unwrap();
        let to: Address = hot.address(Chain::Ethereum, 7).unwrap();
        let fees: FeeQuote = client.fees(1_000_000_000_000).await.unwrap();
        // Room for the base fee's growth over full blocks.
        let fees = FeeQuote {
            max_fee_per_gas: fees.max_fee_per_gas * 100,
            ..fees
        };

        let start = client.pending_nonce(&from).await.unwrap();
        let eth = {
            let client = client.clone();
            let to = to.clone();
            Arc::new(move |nonce| {
                client
                    .build_transfer(&Transfer {
                        to: to.clone(),
                        value: Amount::from_u128(1_000),
                        nonce,
                        fees,
                    })
                    .unwrap()
            })
        };
        let (rate, txids) = pipelined(&client, &hot, start, count, eth).await;
        all_mined(&devnet, &txids).await;
        println!("  ETH transfers: {count} signed and broadcast at {rate:.0}/s (all mined)");

        // The token: deployed once, then transfers.
        let token = devnet.token(&hot).await;
        let nonce = client.pending_nonce(&from).await.unwrap() - 1;
        let gas = client
            .estimate_token_transfer_gas(&from, &token, &to, Amount::from_u128(1))
            .await
            .unwrap();
        let start = nonce + 1;
        let erc20 = {
            let client = client.clone();
            Arc::new(move |nonce| {
                client
                    .build_token_transfer(&TokenTransfer {
                        token: token.clone(),
                        to: to.clone(),
                        amount: Amount::from_u128(1),
                        nonce,
                        fees,
                        gas_limit: gas,
                    })
                    .unwrap()
            })
        };
        let (rate, txids) = pipelined(&client, &hot, start, count, erc20).await;
        all_mined(&devnet, &txids).await;
        println!("  ERC-20 transfers: {count} signed and broadcast at {rate:.0}/s (all mined)");

        // Scanning on a devnet of its own, from block 1.
        drop(devnet);
        let devnet = Devnet::start().await;
        let token = devnet.token(&hot).await;
        scanning(&devnet, &hot, &token, scan_blocks).await;
    });
}
