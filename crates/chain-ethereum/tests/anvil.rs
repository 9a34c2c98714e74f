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

/// The contract of `fixtures/erc20/EthSplitter.sol`: pays ETH by internal calls.
const SPLITTER_BIN: &str = include_str!("../fixtures/erc20/EthSplitter.bin");

alloy::sol! {
    function split(address[] to, uint256[] amounts) external payable;
    function payInRevertedCall(address to) external payable;
    function splitThenRevert(address[] to, uint256[] amounts) external payable;
}

/// One JSON-RPC call to anvil.
async fn anvil_rpc(anvil: &Anvil, method: &str, params: serde_json::Value) -> serde_json::Value {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(&anvil.url)
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["error"].is_null(), "{method}: {answer}");
    answer["result"].clone()
}

/// Sends a transaction from anvil's unlocked account 0 (gas given: a reverting call is
/// mined, not refused by an estimate) and mines it alone; its receipt.
async fn send_mined(anvil: &Anvil, transaction: serde_json::Value) -> serde_json::Value {
    let mut transaction = transaction;
    transaction["from"] = serde_json::json!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
    transaction["gas"] = serde_json::json!("0x2dc6c0");
    let txid = anvil_rpc(
        anvil,
        "eth_sendTransaction",
        serde_json::json!([transaction]),
    )
    .await;
    anvil_rpc(
        anvil,
        "eth_getTransactionReceipt",
        serde_json::json!([txid]),
    )
    .await
}

/// ETH a contract pays by internal calls is read from each block's call trace
/// (`with_internal_transfers`), each payment at its frame's position in the trace, as a
/// deposit of its own beside the transactions' own values (position 0); a payment inside a
/// call that reverted, and every payment of a transaction that reverted, is not. Without
/// tracing, none is seen.
#[tokio::test]
async fn eth_paid_by_a_contract_is_read_from_the_call_trace() {
    use alloy::primitives::{Address as EthAddress, U256};
    use alloy::sol_types::SolCall;
    use chain::provider::{Asset, ChainRead, WatchSet};
    let anvil = Anvil::start().await;
    let plain = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let traced = Ethereum::connect(&anvil.url, Some(31337))
        .await
        .unwrap()
        .with_internal_transfers()
        .await
        .unwrap();
    assert!(traced.reads_internal_transfers() && !plain.reads_internal_transfers());
    let customers = InProcessSigner::new(&Mnemonic::generate(), Network::Mainnet);
    let ours: Vec<_> = (0..3)
        .map(|index| customers.address(Chain::Ethereum, index).unwrap())
        .collect();
    let eth_of =
        |address: &chain::address::Address| EthAddress::from(address.ethereum_bytes().unwrap());
    let deployed = send_mined(
        &anvil,
        serde_json::json!({"data": format!("0x{}", SPLITTER_BIN.trim())}),
    )
    .await;
    let splitter = deployed["contractAddress"].as_str().unwrap().to_string();
    let from = anvil_rpc(&anvil, "eth_blockNumber", serde_json::json!([])).await;
    let from =
        u64::from_str_radix(from.as_str().unwrap().trim_start_matches("0x"), 16).unwrap() + 1;
    let call = |data: Vec<u8>, value: u128| {
        serde_json::json!({
            "to": splitter,
            "data": format!("0x{}", alloy::primitives::hex::encode(data)),
            "value": format!("{value:#x}"),
        })
    };
    // Two of ours and a stranger paid in one call; then ours inside a reverted inner call;
    // then a call that reverts whole.
    let stranger = InProcessSigner::new(&Mnemonic::generate(), Network::Mainnet)
        .address(Chain::Ethereum, 0)
        .unwrap();
    let paid = send_mined(
        &anvil,
        call(
            splitCall {
                to: vec![eth_of(&ours[0]), eth_of(&stranger), eth_of(&ours[1])],
                amounts: vec![U256::from(3_000u64), U256::from(5u64), U256::from(7_000u64)],
            }
            .abi_encode(),
            10_005,
        ),
    )
    .await;
    assert_eq!(paid["status"], "0x1");
    let undone = send_mined(
        &anvil,
        call(
            payInRevertedCallCall {
                to: eth_of(&ours[2]),
            }
            .abi_encode(),
            9_000,
        ),
    )
    .await;
    assert_eq!(undone["status"], "0x1", "the outer call succeeds");
    let reverted = send_mined(
        &anvil,
        call(
            splitThenRevertCall {
                to: vec![eth_of(&ours[2])],
                amounts: vec![U256::from(4_000u64)],
            }
            .abi_encode(),
            4_000,
        ),
    )
    .await;
    assert_eq!(reverted["status"], "0x0");
    let to = from + 2;
    let watch = WatchSet {
        addresses: ours.clone(),
        tokens: vec![],
    };
    let batch = traced.scan(from, to, &watch).await.unwrap();
    let found: Vec<(String, u64, String, u128)> = batch
        .deposits
        .iter()
        .map(|deposit| {
            assert_eq!(deposit.asset, Asset::Native);
            (
                deposit.txid.clone(),
                deposit.position,
                deposit.to.to_string(),
                deposit.amount.base_units().to::<u128>(),
            )
        })
        .collect();
    let txid = paid["transactionHash"].as_str().unwrap().to_string();
    assert_eq!(
        found,
        vec![
            (txid.clone(), 1, ours[0].to_string(), 3_000),
            (txid.clone(), 3, ours[1].to_string(), 7_000),
        ],
        "the stranger's payment is frame 2"
    );
    assert_eq!(
        batch.deposits[0].from.as_deref().map(str::to_lowercase),
        Some(splitter.to_lowercase()),
        "paid by the contract"
    );
    assert!(
        plain
            .scan(from, to, &watch)
            .await
            .unwrap()
            .deposits
            .is_empty(),
        "without tracing, a contract's payments are not seen"
    );
}
