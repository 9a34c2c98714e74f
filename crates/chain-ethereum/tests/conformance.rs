//! The provider contract's conformance suite on anvil: ETH and an ERC-20, with the store's
//! nonce allocator on Postgres.

use std::sync::Arc;
use std::time::Duration;

use chain_ethereum::Ethereum;
use domain::Amount;
use testkit::{Anvil, TestDb};
use wallet::conformance::{Fixture, run};

mod common;
use common::{deploy_token, funded};

#[tokio::test]
async fn ethereum_passes_the_conformance_suite() {
    let anvil = Anvil::start().await;
    let db = TestDb::postgres().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = funded();
    let token = deploy_token(&client, &hot, 1_000_000_000_000).await;
    run(
        client,
        Fixture {
            signer: Arc::new(hot),
            store: db.store().await,
            funded: 0,
            recipient: 7,
            native_amount: Amount::from_u128(1_234_567_000_000_000),
            token: Some((token, Amount::from_u128(2_500_000))),
            inclusion_timeout: Duration::from_secs(30),
        },
    )
    .await;
}
