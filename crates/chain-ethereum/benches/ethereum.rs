//! Issue 6's figures, on anvil (release build, 2 cores, anvil on the same machine):
//!
//! - key derivations per second: from the seed (`InProcessSigner::address`) and from the
//!   account xpub alone (`Xpub::address`);
//! - ETH and ERC-20 transfers built, signed and broadcast per second from one sender with
//!   pipelined nonces (64 in flight), counted until the node accepted the last one; every one
//!   is then checked mined.
//!
//! Run with `cargo xtask bench ethereum` (installs anvil), or with COINSENSEI_ANVIL set:
//! `cargo bench -p chain-ethereum --bench ethereum`. COINSENSEI_BENCH_TRANSFERS sets the count
//! (default 2000).

#![allow(
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    reason = "reports rates; no money here"
)]

use std::sync::Arc;
use std::time::Instant;

use chain::address::{Address, Network};
use chain::provider::SubmitOutcome;
use chain_ethereum::{Ethereum, FeeQuote, TokenTransfer, Transfer, Unsigned, sign};
use domain::{Amount, Chain};
use signer::{InProcessSigner, Mnemonic, Signer, Xpub};
use testkit::Anvil;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{ANVIL_MNEMONIC, deploy_token, mined};

const IN_FLIGHT: usize = 64;

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

/// Signs and broadcasts `count` transactions made by `make(nonce)`, `IN_FLIGHT` at a time.
async fn pipelined(
    client: &Ethereum,
    hot: &Arc<InProcessSigner>,
    start: u64,
    count: u64,
    make: Arc<dyn Fn(u64) -> Unsigned + Send + Sync>,
) -> (f64, Vec<alloy::primitives::B256>) {
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
            signed.txid
        }));
    }
    let mut txids = Vec::new();
    for task in tasks {
        txids.push(task.await.unwrap());
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    (rate, txids)
}

fn main() {
    let count: u64 = std::env::var("COINSENSEI_BENCH_TRANSFERS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(2_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("coinsensei Ethereum benchmark (release build, anvil on this machine)");
        derivations();
        let anvil = Anvil::start().await;
        let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
        let hot = Arc::new(InProcessSigner::new(
            &Mnemonic::parse(ANVIL_MNEMONIC).unwrap(),
            Network::Mainnet,
        ));
        let from = hot.address(Chain::Ethereum, 0).unwrap();
        let to: Address = hot.address(Chain::Ethereum, 7).unwrap();
        let fees: FeeQuote = client.fees(1_000_000_000_000).await.unwrap();
        // Room for base-fee growth over thousands of blocks.
        let fees = FeeQuote {
            max_fee_per_gas: fees.max_fee_per_gas * 4,
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
        for txid in &txids {
            assert!(mined(&client, *txid).await, "{txid} reverted");
        }
        println!("  ETH transfers: {count} signed and broadcast at {rate:.0}/s (all mined)");

        // The token: deployed once, then transfers.
        let token = deploy_token(&client, &hot, u128::MAX).await;
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
        for txid in &txids {
            assert!(mined(&client, *txid).await, "{txid} reverted");
        }
        println!("  ERC-20 transfers: {count} signed and broadcast at {rate:.0}/s (all mined)");
    });
}
