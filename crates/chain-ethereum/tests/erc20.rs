//! ERC-20 on anvil: the OpenZeppelin token of `fixtures/erc20` (compiled by solc-js from
//! npm; `node build.mjs` rebuilds `TestToken.bin`) is deployed, read and transferred through
//! the same build → sign → submit steps; a transfer that reverts is seen as a revert.

use alloy::primitives::B256;
use chain::address::{Address, Network};
use chain::provider::SubmitOutcome;
use chain_ethereum::{Ethereum, TokenTransfer, sign};
use domain::{Amount, Chain};
use signer::{InProcessSigner, Mnemonic, Signer};
use testkit::Anvil;

mod common;
use common::{ANVIL_MNEMONIC, deploy_token, mined};

/// One million tokens of six decimals.
const SUPPLY: u128 = 1_000_000 * 1_000_000;

async fn deploy(client: &Ethereum, hot: &InProcessSigner) -> Address {
    deploy_token(client, hot, SUPPLY).await
}

#[tokio::test]
async fn token_transfers_and_reverts() {
    let anvil = Anvil::start().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = InProcessSigner::new(&Mnemonic::parse(ANVIL_MNEMONIC).unwrap(), Network::Mainnet);
    let token = deploy(&client, &hot).await;
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    assert_eq!(
        client.token_balance(&token, &from).await.unwrap(),
        Amount::from_u128(SUPPLY)
    );

    let customer = InProcessSigner::new(&Mnemonic::generate(), Network::Mainnet)
        .address(Chain::Ethereum, 0)
        .unwrap();
    let amount = Amount::parse_positive("1.5", 6).unwrap();
    let gas = client
        .estimate_token_transfer_gas(&from, &token, &customer, amount)
        .await
        .unwrap();
    assert!((30_000..200_000).contains(&gas), "{gas}");
    let fees = client.fees(1_000_000_000_000).await.unwrap();
    let nonce = client.pending_nonce(&from).await.unwrap();
    let transfer = TokenTransfer {
        token: token.clone(),
        to: customer.clone(),
        amount,
        nonce,
        fees,
        gas_limit: gas,
    };
    let signed = sign(client.build_token_transfer(&transfer).unwrap(), &hot, 0).unwrap();
    assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
    assert!(mined(&client, signed.txid).await);
    assert_eq!(
        client.token_balance(&token, &customer).await.unwrap(),
        Amount::from_u128(1_500_000)
    );
    assert_eq!(client.submit(&signed).await, SubmitOutcome::AlreadyKnown);
    assert_eq!(
        client.token_balance(&token, &customer).await.unwrap(),
        Amount::from_u128(1_500_000)
    );

    // Account 1 has ETH for gas but no tokens: the estimate says the call would revert...
    let empty = hot.address(Chain::Ethereum, 1).unwrap();
    let error = client
        .estimate_token_transfer_gas(&empty, &token, &customer, amount)
        .await
        .unwrap_err();
    assert!(error.message.contains("revert"), "{error}");
    // ...and sent anyway (a fixed gas limit), it is mined as a revert: fee paid, no tokens.
    let reverting = TokenTransfer {
        nonce: client.pending_nonce(&empty).await.unwrap(),
        gas_limit: 100_000,
        ..transfer
    };
    let signed = sign(client.build_token_transfer(&reverting).unwrap(), &hot, 1).unwrap();
    assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
    assert!(
        !mined(&client, signed.txid).await,
        "a revert is reported as one"
    );
    assert_eq!(
        client.token_balance(&token, &customer).await.unwrap(),
        Amount::from_u128(1_500_000)
    );
    // Not a token: balanceOf on an account without code answers nothing decodable.
    assert!(client.token_balance(&customer, &from).await.is_err());
}

/// Sends `amount` of `token` from key `index` to `to`; returns the txid once mined.
async fn pay(
    client: &Ethereum,
    hot: &InProcessSigner,
    token: &Address,
    to: &Address,
    amount: u128,
) -> B256 {
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let amount = Amount::from_u128(amount);
    let transfer = TokenTransfer {
        token: token.clone(),
        to: to.clone(),
        amount,
        nonce: client.pending_nonce(&from).await.unwrap(),
        fees: client.fees(1_000_000_000_000).await.unwrap(),
        gas_limit: client
            .estimate_token_transfer_gas(&from, token, to, amount)
            .await
            .unwrap(),
    };
    let signed = sign(client.build_token_transfer(&transfer).unwrap(), hot, 0).unwrap();
    assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
    assert!(mined(client, signed.txid).await);
    signed.txid
}

#[tokio::test]
async fn deposits_come_from_allowlisted_tokens_to_watched_addresses_only() {
    let anvil = Anvil::start().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = InProcessSigner::new(&Mnemonic::parse(ANVIL_MNEMONIC).unwrap(), Network::Mainnet);
    let usdt = deploy(&client, &hot).await;
    // Anyone can deploy a contract that emits Transfer events: this one is not on the list.
    let rogue = deploy(&client, &hot).await;
    let customers = InProcessSigner::new(&Mnemonic::generate(), Network::Mainnet);
    let alice = customers.address(Chain::Ethereum, 0).unwrap();
    let bob = customers.address(Chain::Ethereum, 1).unwrap();
    let stranger = customers.address(Chain::Ethereum, 2).unwrap();
    let first = client.status().await.unwrap().head;

    let to_alice = pay(&client, &hot, &usdt, &alice, 2_500_000).await;
    pay(&client, &hot, &rogue, &alice, 9_999_000_000).await;
    pay(&client, &hot, &usdt, &stranger, 1_000_000).await;
    let to_bob = pay(&client, &hot, &usdt, &bob, 42).await;
    let head = client.status().await.unwrap().head;

    let deposits = client
        .token_deposits(
            first,
            head,
            std::slice::from_ref(&usdt),
            &[alice.clone(), bob.clone()],
        )
        .await
        .unwrap();
    assert_eq!(deposits.len(), 2, "{deposits:#?}");
    assert_eq!(
        (
            deposits[0].txid,
            &deposits[0].to,
            deposits[0].amount,
            &deposits[0].token
        ),
        (to_alice, &alice, Amount::from_u128(2_500_000), &usdt)
    );
    assert_eq!(
        (deposits[1].txid, &deposits[1].to, deposits[1].amount),
        (to_bob, &bob, Amount::from_u128(42))
    );
    let sender = alloy::primitives::Address::from(
        hot.address(Chain::Ethereum, 0)
            .unwrap()
            .ethereum_bytes()
            .unwrap(),
    );
    assert_eq!(deposits[0].from, sender);
    let block = client.block(deposits[0].block).await.unwrap().unwrap();
    assert_eq!(
        block.hash,
        deposits[0].block_hash.to_string(),
        "the block hash to notice a reorg by"
    );
    // Before the payments, an empty range, or nothing to watch: nothing.
    assert!(
        client
            .token_deposits(
                0,
                first - 1,
                std::slice::from_ref(&usdt),
                std::slice::from_ref(&alice)
            )
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        client
            .token_deposits(
                head,
                head - 1,
                std::slice::from_ref(&usdt),
                std::slice::from_ref(&alice)
            )
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        client
            .token_deposits(first, head, &[usdt], &[])
            .await
            .unwrap()
            .is_empty()
    );
}
