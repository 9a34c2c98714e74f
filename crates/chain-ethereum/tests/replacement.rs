//! A stuck transaction replaced on anvil without automatic mining: the same nonce with both
//! fee caps raised by at least 10 % replaces it; other bytes without a raise are refused (and
//! may be retried with more); once a block is mined, only one of them is, and the payment happens
//! once.

use alloy::providers::Provider;
use chain::address::Network;
use chain::provider::{SubmitOutcome, TxStatus};
use chain_ethereum::{Ethereum, FeeQuote, Transfer, bumped, sign};
use domain::{Amount, Chain};
use signer::{InProcessSigner, Mnemonic, Signer};
use testkit::Anvil;

mod common;
use common::ANVIL_MNEMONIC;

#[tokio::test]
async fn a_stuck_transaction_is_replaced_and_paid_once() {
    let anvil = Anvil::start_with(&["--no-mining"]).await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = InProcessSigner::new(&Mnemonic::parse(ANVIL_MNEMONIC).unwrap(), Network::Mainnet);
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let to = InProcessSigner::new(&Mnemonic::generate(), Network::Mainnet)
        .address(Chain::Ethereum, 0)
        .unwrap();
    let quote = client.fees(1_000_000_000_000).await.unwrap();
    let low = FeeQuote {
        max_fee_per_gas: quote.max_fee_per_gas,
        max_priority_fee_per_gas: 1,
    };
    let original = client
        .build_transfer(&Transfer {
            to: to.clone(),
            value: Amount::from_u128(7_000_000_000),
            nonce: client.pending_nonce(&from).await.unwrap(),
            fees: low,
        })
        .unwrap();
    let first = sign(original.clone(), &hot, 0).unwrap();
    assert_eq!(client.submit(&first).await, SubmitOutcome::Accepted);
    assert_eq!(
        client.transaction_status(first.txid).await.unwrap(),
        TxStatus::Pending
    );

    // Other bytes on that nonce without a fee raise: the pool refuses them as underpriced,
    // which a higher fee may cure (retriable).
    let fees = original.fees();
    let same_fees = client
        .build_transfer(&Transfer {
            to: to.clone(),
            value: Amount::from_u128(9_000_000_000),
            nonce: original.nonce(),
            fees,
        })
        .unwrap();
    let refused = client.submit(&sign(same_fees, &hot, 0).unwrap()).await;
    assert!(
        matches!(
            refused,
            SubmitOutcome::Rejected {
                retriable: true,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(original.replacement(low).fees().max_fee_per_gas >= bumped(fees.max_fee_per_gas));

    // The replacement: same nonce, both caps up at least 10 %.
    let replacement = original.replacement(quote);
    assert_eq!(replacement.nonce(), original.nonce());
    assert!(replacement.fees().max_priority_fee_per_gas >= bumped(1));
    let second = sign(replacement, &hot, 0).unwrap();
    assert_ne!(second.txid, first.txid);
    assert_eq!(client.submit(&second).await, SubmitOutcome::Accepted);

    let provider = alloy::providers::RootProvider::<alloy::network::Ethereum>::new_http(
        anvil.url.parse().unwrap(),
    );
    let _: serde_json::Value = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    let TxStatus::Included { success, .. } = client.transaction_status(second.txid).await.unwrap()
    else {
        panic!("the replacement is mined");
    };
    assert!(success);
    assert_eq!(
        client.transaction_status(first.txid).await.unwrap(),
        TxStatus::NotFound
    );
    assert_eq!(
        client.balance(&to).await.unwrap(),
        Amount::from_u128(7_000_000_000)
    );
    // The replaced bytes can never come back: their nonce is used.
    assert!(matches!(
        client.submit(&first).await,
        SubmitOutcome::Rejected {
            retriable: false,
            ..
        }
    ));
}
