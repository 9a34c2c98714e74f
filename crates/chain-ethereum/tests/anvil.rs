//! ETH transfers against a real devnet (anvil, installed by `cargo xtask test`): built
//! without keys, signed by the signer, submitted; a rebroadcast of the same bytes (a crash
//! between signing and sending) is the same transaction, paid once; a used nonce is refused
//! for good; a node on another chain is refused.

use chain::address::Network;
use chain::provider::{SubmitOutcome, TxStatus};
use chain_ethereum::{Ethereum, FeeQuote, Transfer, sign};
use domain::{Amount, Chain};
use signer::{InProcessSigner, Mnemonic, Signer};
use testkit::Anvil;

mod common;
use common::{funded, included};

fn eth(whole: u128) -> Amount {
    Amount::from_u128(whole * 1_000_000_000_000_000_000)
}

#[tokio::test]
async fn transfers_are_paid_once_whatever_is_resent() {
    let anvil = Anvil::start().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status.chain_id, 31337);

    let hot = funded();
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let to = InProcessSigner::new(&Mnemonic::generate(), Network::Mainnet)
        .address(Chain::Ethereum, 0)
        .unwrap();
    assert!(client.balance(&to).await.unwrap().is_zero());
    let fees: FeeQuote = client.fees(1_000_000_000_000).await.unwrap();
    let nonce = client.pending_nonce(&from).await.unwrap();
    let unsigned = client
        .build_transfer(&Transfer {
            to: to.clone(),
            value: eth(3),
            nonce,
            fees,
        })
        .unwrap();
    let signed = sign(unsigned, &hot, 0).unwrap();
    // The caller stores `signed` here, before anything leaves the process. Then a crash: a
    // new connection sends the stored bytes.
    drop(client);
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
    let TxStatus::Included {
        success,
        confirmations,
        block,
    } = included(&client, signed.txid).await
    else {
        unreachable!()
    };
    assert!(success);
    assert!(confirmations >= 1);
    let parent = client.block(block.number - 1).await.unwrap().unwrap();
    assert_eq!(
        block.parent_hash, parent.hash,
        "blocks chain by parent hash"
    );
    // The same bytes again (the worker did not know the first send went out): the same
    // transaction, not a second payment.
    assert_eq!(client.submit(&signed).await, SubmitOutcome::AlreadyKnown);
    assert_eq!(client.balance(&to).await.unwrap(), eth(3));

    // Other bytes with the used nonce: refused for good, nothing paid.
    let double = sign(
        client
            .build_transfer(&Transfer {
                to: to.clone(),
                value: eth(5),
                nonce,
                fees,
            })
            .unwrap(),
        &hot,
        0,
    )
    .unwrap();
    assert_ne!(double.txid, signed.txid);
    assert!(
        matches!(
            client.submit(&double).await,
            SubmitOutcome::Rejected {
                retriable: false,
                ..
            }
        ),
        "a second transaction on a used nonce must be refused"
    );
    assert_eq!(client.balance(&to).await.unwrap(), eth(3));
    assert_eq!(
        client.transaction_status(double.txid).await.unwrap(),
        TxStatus::NotFound
    );
}

#[tokio::test]
async fn a_node_on_another_chain_is_refused_and_bad_input_is_caught() {
    let anvil = Anvil::start().await;
    let error = Ethereum::connect(&anvil.url, Some(1)).await.unwrap_err();
    assert!(!error.retriable);
    assert!(error.message.contains("31337"), "{error}");
    let client = Ethereum::connect(&anvil.url, None).await.unwrap();
    let hot = funded();
    let fees = client.fees(1_000_000_000_000).await.unwrap();
    let zero = client.build_transfer(&Transfer {
        to: hot.address(Chain::Ethereum, 1).unwrap(),
        value: Amount::from_u128(0),
        nonce: 0,
        fees,
    });
    assert!(zero.is_err());
    let tron = hot.address(Chain::Tron, 0).unwrap();
    assert!(
        client.balance(&tron).await.is_err(),
        "a TRON address is not an Ethereum one"
    );
    assert!(matches!(
        client.fees(1).await,
        Err(error) if error.message.contains("over the cap")
    ));
}

#[tokio::test]
async fn native_deposits_are_read_from_block_transactions() {
    let anvil = Anvil::start().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = funded();
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let customers = InProcessSigner::new(&Mnemonic::generate(), Network::Mainnet);
    let alice = customers.address(Chain::Ethereum, 0).unwrap();
    let stranger = customers.address(Chain::Ethereum, 1).unwrap();
    let fees = client.fees(1_000_000_000_000).await.unwrap();
    let mut blocks = Vec::new();
    for (to, value) in [(&alice, eth(2)), (&stranger, eth(1))] {
        let nonce = client.pending_nonce(&from).await.unwrap();
        let signed = sign(
            client
                .build_transfer(&Transfer {
                    to: to.clone(),
                    value,
                    nonce,
                    fees,
                })
                .unwrap(),
            &hot,
            0,
        )
        .unwrap();
        assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
        let TxStatus::Included { block, .. } = included(&client, signed.txid).await else {
            unreachable!()
        };
        blocks.push((block, signed.txid));
    }
    let (block, txid) = &blocks[0];
    let deposits = client
        .native_deposits(block.number, std::slice::from_ref(&alice))
        .await
        .unwrap()
        .expect("the block exists");
    assert_eq!(deposits.len(), 1, "{deposits:#?}");
    assert_eq!(
        (deposits[0].txid, &deposits[0].to, deposits[0].amount),
        (*txid, &alice, eth(2))
    );
    assert_eq!(deposits[0].from.to_checksum(None), from.as_str());
    assert_eq!(
        &deposits[0].block, block,
        "with the block's hash and parent hash"
    );
    // The stranger's block credits nothing to the watched address.
    let (other, _) = &blocks[1];
    assert!(
        client
            .native_deposits(other.number, &[alice])
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    // A block that does not exist yet.
    assert_eq!(
        client
            .native_deposits(other.number + 100, &[stranger])
            .await
            .unwrap(),
        None
    );
}
