//! What the anvil tests and the benchmark share: anvil's funded keys, waiting for a block,
//! and deploying the test token.
#![allow(dead_code)]

use std::time::Duration;

use alloy::primitives::B256;
use chain::address::{Address, Network};
use chain::provider::{SubmitOutcome, TxStatus};
use chain_ethereum::{Ethereum, sign};
use domain::Chain;
use signer::{InProcessSigner, Mnemonic, Signer};

/// anvil's funded accounts come from this mnemonic.
pub const ANVIL_MNEMONIC: &str = "test test test test test test test test test test test junk";
/// The OpenZeppelin ERC-20 of `fixtures/erc20` (six decimals; its constructor mints the
/// supply to the deployer).
pub const TOKEN_BIN: &str = include_str!("../../fixtures/erc20/TestToken.bin");

/// The signer holding anvil's funded keys.
pub fn funded() -> InProcessSigner {
    InProcessSigner::new(&Mnemonic::parse(ANVIL_MNEMONIC).unwrap(), Network::Mainnet)
}

/// Waits until `txid` is in a block; its status.
pub async fn included(client: &Ethereum, txid: B256) -> TxStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = client.transaction_status(txid).await.unwrap();
        if matches!(status, TxStatus::Included { .. }) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{txid} not mined: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `txid` is in a block; whether it succeeded (false: reverted).
pub async fn mined(client: &Ethereum, txid: B256) -> bool {
    match included(client, txid).await {
        TxStatus::Included { success, .. } => success,
        _ => unreachable!(),
    }
}

/// Deploys the test token from key 0 of `hot` with `supply` base units; its address.
pub async fn deploy_token(client: &Ethereum, hot: &InProcessSigner, supply: u128) -> Address {
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let mut code = alloy::primitives::hex::decode(TOKEN_BIN.trim()).unwrap();
    code.extend_from_slice(&alloy::primitives::U256::from(supply).to_be_bytes::<32>());
    let nonce = client.pending_nonce(&from).await.unwrap();
    let fees = client.fees(1_000_000_000_000).await.unwrap();
    let signed = sign(
        client.build_contract_creation(code, nonce, fees, 3_000_000),
        hot,
        0,
    )
    .unwrap();
    assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
    assert!(mined(client, signed.txid).await, "the token deploys");
    let creator = alloy::primitives::Address::from(from.ethereum_bytes().unwrap());
    Address::parse(
        Chain::Ethereum,
        Network::Mainnet,
        &creator.create(nonce).to_checksum(None),
    )
    .unwrap()
}
