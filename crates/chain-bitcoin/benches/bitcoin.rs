//! Issue 8's figures, on a private regtest node (`testkit::Bitcoind`, release build, 2 cores):
//!
//! - 100 withdrawals paid one transaction each, then batched 25 and 100 to a transaction:
//!   withdrawals per transaction, vsize and fee per withdrawal (satoshi, integer arithmetic),
//!   all at the same rate, every transaction accepted by the node and mined;
//! - build + sign time of one 100-output transaction (median and extremes of 15 runs);
//! - deposit scan speed (blocks/s) over 1,000 blocks, each holding one payment, every other
//!   one to a watched address: through the adapter's `scan`, and through the wallet's
//!   scanner storing blocks and deposits on Postgres and on SQLite; with the 50 paid
//!   addresses watched, then with 100,000 more (COINSENSEI_BENCH_WATCHED), the figure.
//!
//! Run with `cargo xtask bench bitcoin` (installs bitcoind), or with COINSENSEI_BITCOIND set:
//! `cargo bench -p chain-bitcoin --bench bitcoin`. COINSENSEI_BENCH_SCAN_BLOCKS sets the
//! blocks scanned (default 1000).

#![allow(
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    reason = "reports rates and times; every amount is integer satoshi"
)]

use std::time::{Duration, Instant};

use chain::address::{Address, Network};
use chain::provider::{
    ChainRead, ChainSubmit, Keychain, SignedTransaction, SubmitOutcome, WatchSet,
};
use chain_bitcoin::{Bitcoin, FeePolicy, Rpc, UnsignedPayout, Utxo, UtxoSet};
use domain::{Amount, Chain};
use serde_json::json;
use signer::{InProcessSigner, Mnemonic, Signer};
use testkit::{Backend, Bitcoind, TestDb};
use wallet::scanner::{ScanPolicy, Scanner, Step};

const MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
use chain_bitcoin::utxo::COINBASE_MATURITY;
/// Every payout of the comparison pays this rate, so only the shapes differ.
const RATE_SAT_VB: u64 = 2;
const PAYOUTS: u32 = 100;
/// An address of no one here: blocks mined to it add nothing to the wallet.
const ELSEWHERE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

struct Bench {
    _node: Bitcoind,
    bitcoin: Bitcoin,
    signer: InProcessSigner,
    users: InProcessSigner,
    utxos: UtxoSet,
    applied: u64,
    /// The next unused change key.
    next_change: u32,
}

impl Bench {
    async fn mine_to(&mut self, blocks: u64, address: &str) {
        self.bitcoin
            .rpc()
            .call("generatetoaddress", json!([blocks, address]))
            .await
            .unwrap();
        let tip = self.bitcoin.tip().await.unwrap().head;
        for height in self.applied + 1..=tip {
            let block = self.bitcoin.raw_block(height).await.unwrap().unwrap();
            self.utxos.apply_block(&block, height).unwrap();
        }
        self.applied = tip;
    }

    fn user(&self, index: u32) -> Address {
        self.users.address(Chain::Bitcoin, index).unwrap()
    }

    fn sign(&self, payout: &UnsignedPayout) -> SignedTransaction {
        let signatures = self
            .signer
            .sign_payloads(Chain::Bitcoin, &self.bitcoin.payloads(payout).unwrap())
            .unwrap();
        self.bitcoin.combine(payout, &signatures).unwrap()
    }

    /// Pays `payouts` in transactions of at most `per_transaction` outputs; mines them and
    /// checks each is in a block. Returns (transactions, total vsize, total fee).
    async fn pay(
        &mut self,
        payouts: &[(Address, Amount)],
        per_transaction: usize,
        label: &str,
    ) -> (u64, u64, u64) {
        let tip = self.bitcoin.tip().await.unwrap().head;
        let mut sent = Vec::new();
        let (mut vsize, mut fee) = (0u64, 0u64);
        for (number, chunk) in payouts.chunks(per_transaction).enumerate() {
            let id = format!("{label}-{number}");
            let change = self.next_change;
            self.next_change += 1;
            let payout = self
                .utxos
                .reserve(&id, tip, COINBASE_MATURITY, |available| {
                    let payout =
                        self.bitcoin
                            .build_payout(chunk, available, RATE_SAT_VB, change)?;
                    let inputs = payout.inputs.clone();
                    Ok((payout, inputs))
                })
                .unwrap();
            let signed = self.sign(&payout);
            let tx: bitcoin::Transaction =
                bitcoin::consensus::encode::deserialize(&signed.raw).unwrap();
            vsize += tx.vsize() as u64;
            fee += payout.fee;
            assert_eq!(self.bitcoin.submit(&signed).await, SubmitOutcome::Accepted);
            sent.push(signed.txid);
        }
        self.mine_to(1, ELSEWHERE).await;
        for txid in &sent {
            assert!(matches!(
                self.bitcoin.transaction(txid).await.unwrap(),
                chain::provider::TxStatus::Included { .. }
            ));
        }
        (sent.len() as u64, vsize, fee)
    }
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// `whole.fraction` with two decimals, by integer arithmetic.
fn ratio(numerator: u64, denominator: u64) -> String {
    let hundredths = (numerator * 100 + denominator / 2) / denominator;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

async fn batching(bench: &mut Bench) {
    let payouts: Vec<(Address, Amount)> = (0..PAYOUTS)
        .map(|index| {
            (
                bench.user(index),
                Amount::from_u128(100_000 + u128::from(index)),
            )
        })
        .collect();
    println!(
        "  {PAYOUTS} withdrawals of about 0.001 BTC at {RATE_SAT_VB} sat/vB, each transaction \
         spending one 50 BTC output with change:"
    );
    println!(
        "    {:<22} {:>6} {:>14} {:>10} {:>12} {:>16}",
        "paid", "txs", "withdrawals/tx", "vsize", "fee (sat)", "fee/withdrawal"
    );
    let mut one_by_one = 0;
    for (label, per_transaction) in [
        ("one by one", 1usize),
        ("batched, N = 25", 25),
        ("batched, N = 100", 100),
    ] {
        let (transactions, vsize, fee) = bench.pay(&payouts, per_transaction, label).await;
        if per_transaction == 1 {
            one_by_one = fee;
        }
        println!(
            "    {label:<22} {transactions:>6} {:>14} {vsize:>10} {fee:>12} {:>16}{}",
            ratio(u64::from(PAYOUTS), transactions),
            ratio(fee, u64::from(PAYOUTS)),
            if per_transaction == 1 {
                String::new()
            } else {
                format!("  ({}% of one by one)", ratio(fee * 100, one_by_one))
            }
        );
    }
}

fn build_and_sign(bench: &Bench) {
    let payouts: Vec<(Address, Amount)> = (0..100)
        .map(|index| {
            (
                bench.user(index),
                Amount::from_u128(100_000 + u128::from(index)),
            )
        })
        .collect();
    let tip = bench.applied;
    let available = bench.utxos.available(tip, COINBASE_MATURITY);
    let mut builds = Vec::new();
    let mut signs = Vec::new();
    let mut totals = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        let payout = bench
            .bitcoin
            .build_payout(&payouts, &available, RATE_SAT_VB, 0)
            .unwrap();
        let built = started.elapsed();
        let signed = bench.sign(&payout);
        let total = started.elapsed();
        assert!(!signed.raw.is_empty());
        builds.push(built);
        signs.push(total - built);
        totals.push(total);
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        (times[times.len() / 2], times[0], times[times.len() - 1])
    };
    let (build, _, _) = median(&mut builds);
    let (sign, _, _) = median(&mut signs);
    let (total, fastest, slowest) = median(&mut totals);
    println!(
        "  build + sign of a 100-output transaction (1 input, change): median {:.2} ms \
         (build {:.2} ms, sign {:.2} ms; fastest {:.2} ms, slowest {:.2} ms; 15 runs)",
        total.as_secs_f64() * 1e3,
        build.as_secs_f64() * 1e3,
        sign.as_secs_f64() * 1e3,
        fastest.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3,
    );
}

/// `blocks` blocks, each holding one payment from a chain of change outputs, every other one
/// to one of 50 watched addresses (the wallet's receive keys 100 to 149).
async fn scanning(bench: &mut Bench, blocks: u64) {
    let tip = bench.applied;
    let mut utxo: Utxo = *bench
        .utxos
        .available(tip, COINBASE_MATURITY)
        .iter()
        .max_by_key(|utxo| utxo.value)
        .unwrap();
    let watched: Vec<Address> = (100..150)
        .map(|index| bench.bitcoin.key_address(Keychain::Receive, index).unwrap())
        .collect();
    let first = tip + 1;
    let started = Instant::now();
    for number in 0..blocks {
        let to = if number % 2 == 0 {
            watched[usize::try_from(number / 2 % 50).unwrap()].clone()
        } else {
            bench.user(u32::try_from(number % 100).unwrap())
        };
        let payout = bench
            .bitcoin
            .build_payout(&[(to, Amount::from_u128(10_000))], &[utxo], RATE_SAT_VB, 0)
            .unwrap();
        let signed = bench.sign(&payout);
        assert_eq!(bench.bitcoin.submit(&signed).await, SubmitOutcome::Accepted);
        let (_, vout) = payout.change.unwrap();
        utxo = Utxo {
            outpoint: chain_bitcoin::outpoint(&signed.txid, u32::try_from(vout).unwrap()).unwrap(),
            value: payout.tx.output[vout].value.to_sat(),
            keychain: Keychain::Change,
            index: 0,
        };
        bench
            .bitcoin
            .rpc()
            .call("generatetoaddress", json!([1, ELSEWHERE]))
            .await
            .unwrap();
    }
    let last = bench.bitcoin.tip().await.unwrap().head;
    assert_eq!(last - first + 1, blocks, "one block a payment");
    println!(
        "  {blocks} blocks with one payment each made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The 50 paid addresses alone, then among the 100,000 (COINSENSEI_BENCH_WATCHED):
    // P2WPKH addresses of nobody's keys.
    let extra = usize::try_from(env_count("COINSENSEI_BENCH_WATCHED", 100_000)).unwrap();
    for others in [0, extra] {
        let mut addresses = watched.clone();
        addresses.extend((0..others as u64).map(|n| {
            let mut program = [0x5au8; 20];
            program[12..].copy_from_slice(&n.to_be_bytes());
            let program =
                bitcoin::WitnessProgram::new(bitcoin::WitnessVersion::V0, &program).unwrap();
            let text = bitcoin::Address::from_witness_program(program, bitcoin::KnownHrp::Regtest)
                .to_string();
            Address::parse(Chain::Bitcoin, Network::Regtest, &text).unwrap()
        }));
        scan_with(bench, first, last, blocks, addresses).await;
    }
}

/// Scans blocks `first..=last` for deposits to `addresses` (the 50 paid ones first): through
/// the adapter alone, and through the wallet's scanner on each store.
async fn scan_with(bench: &Bench, first: u64, last: u64, blocks: u64, addresses: Vec<Address>) {
    let count = addresses.len();
    let watch = WatchSet {
        addresses,
        tokens: vec![],
    };
    println!(
        "  deposit scan of blocks {first}..={last}, every other payment to one of 50 of {count} watched addresses:"
    );
    let started = Instant::now();
    let mut found = 0;
    let mut from = first;
    while from <= last {
        let to = last.min(from + 499);
        found += bench
            .bitcoin
            .scan(from, to, &watch)
            .await
            .unwrap()
            .deposits
            .len();
        from = to + 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(
        found as u64,
        blocks.div_ceil(2),
        "every watched payment found"
    );
    println!(
        "    the adapter's scan alone: {:.0} blocks/s ({found} deposits, {elapsed:.2} s)",
        blocks as f64 / elapsed
    );
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::new(backend).await;
        let scanner = Scanner::new(
            bench.bitcoin.clone(),
            db.store().await,
            ScanPolicy {
                start: first,
                batch_blocks: 500,
                confirmations: 6,
                credit_finalized: false,
            },
            watch.clone(),
        )
        .unwrap();
        let started = Instant::now();
        let steps = scanner.catch_up(last).await.unwrap();
        let elapsed = started.elapsed().as_secs_f64();
        let stored: usize = steps
            .iter()
            .map(|step| match step {
                Step::Scanned { deposits, .. } => *deposits,
                _ => 0,
            })
            .sum();
        assert_eq!(stored, found, "the scanner stores what the adapter finds");
        println!(
            "    scanner on {backend:?}: {:.0} blocks/s ({stored} deposits stored, {} steps, {elapsed:.2} s)",
            blocks as f64 / elapsed,
            steps.len()
        );
    }
}

fn main() {
    let scan_blocks = env_count("COINSENSEI_BENCH_SCAN_BLOCKS", 1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("coinsensei Bitcoin benchmark (release build, bitcoind -regtest on this machine)");
        let node = Bitcoind::start().await;
        let signer = InProcessSigner::new(&Mnemonic::parse(MNEMONIC).unwrap(), Network::Regtest);
        let users = InProcessSigner::new(
            &Mnemonic::parse(
                "legal winner thank year wave sausage worth useful legal winner thank yellow",
            )
            .unwrap(),
            Network::Regtest,
        );
        let rpc = Rpc::with_cookie(&node.url, &node.cookie(), Duration::from_secs(30)).unwrap();
        let bitcoin = Bitcoin::connect(
            rpc,
            Network::Regtest,
            signer.xpub(Chain::Bitcoin).unwrap(),
            FeePolicy::default(),
        )
        .await
        .unwrap();
        let utxos = UtxoSet::new();
        utxos.watch(
            bitcoin.key_script(Keychain::Receive, 0).unwrap(),
            Keychain::Receive,
            0,
        );
        for index in 0..300 {
            utxos.watch(
                bitcoin.key_script(Keychain::Change, index).unwrap(),
                Keychain::Change,
                index,
            );
        }
        let mut bench = Bench {
            _node: node,
            bitcoin,
            signer,
            users,
            utxos,
            applied: 0,
            next_change: 1,
        };
        // 110 mature coinbase outputs of 50 BTC (or less, by the halving every 150 blocks on
        // regtest) for the 100 one-by-one payouts and the batches.
        let hot = bench
            .bitcoin
            .key_address(Keychain::Receive, 0)
            .unwrap()
            .to_string();
        bench.mine_to(110, &hot).await;
        bench.mine_to(COINBASE_MATURITY, ELSEWHERE).await;
        batching(&mut bench).await;
        build_and_sign(&bench);
        scanning(&mut bench, scan_blocks).await;
    });
}
