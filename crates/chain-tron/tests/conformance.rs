//! The provider contract's conformance suite (`wallet::conformance::run_attempts`) on the fake
//! full node of `common::fake`, mining a block every 3 s of real time: TRX and USDT, paid by
//! stored attempts on Postgres.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chain::address::Network;
use common::fake::{Ledger, USDT, addr, fake_node, spawn_miner};
use domain::{Amount, Chain};
use signer::{InProcessSigner, Mnemonic, Signer};
use testkit::TestDb;
use wallet::conformance::{Fixture, run_attempts};

const MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tron_passes_the_conformance_suite() {
    let signer = InProcessSigner::new(&Mnemonic::parse(MNEMONIC).unwrap(), Network::Mainnet);
    let hot = signer.address(Chain::Tron, 0).unwrap();
    let (tron, ledger) = fake_node(Ledger::funded(&hot)).await;
    spawn_miner(ledger.clone());
    let db = TestDb::postgres().await;
    run_attempts(
        tron,
        Fixture {
            signer: Arc::new(signer),
            store: db.store().await,
            funded: 0,
            recipient: 7,
            native_amount: Amount::from_u128(1_234_567),
            token: Some((addr(USDT), Amount::from_u128(2_500_000))),
            inclusion_timeout: Duration::from_secs(30),
        },
    )
    .await;
}
