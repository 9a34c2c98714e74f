//! The client and the provider contract against the fake full node of `common::fake`
//! (recorded real response shapes, a small ledger, the node's own error codes in its order).

mod common;

use chain::provider::{
    Asset, ChainBuild, ChainRead, ChainSubmit, Payment, SubmitOutcome, TxStatus, WatchSet,
};
use chain_tron::death::AttemptFate;
use chain_tron::node::{TransactionInfo, broadcast_outcome};
use chain_tron::transaction::{self, RefBlock, Window};
use chain_tron::{Config, Tron};
use common::KeySigner;
use common::fake::{
    FIXTURES, Ledger, RECIPIENT, SOLIDIFIED_LAG, USDT, addr, block_id, block_time, fake_node,
    fixture,
};
use domain::Amount;
use serde_json::json;

fn funded(signer: &KeySigner) -> Ledger {
    Ledger::funded(&signer.tron_address())
}

/// 1 TRX from key 0 of `signer` to the recipient.
fn one_trx(signer: &KeySigner) -> Payment {
    Payment {
        from_index: 0,
        from: signer.tron_address(),
        to: addr(RECIPIENT),
        asset: Asset::Native,
        amount: Amount::from_u128(1_000_000),
    }
}

async fn send(
    tron: &Tron,
    signer: &KeySigner,
    payment: &Payment,
) -> (chain::provider::SignedTransaction, i64) {
    let metadata = tron.metadata(payment).await.unwrap();
    let unsigned = tron.build(payment, &metadata).unwrap();
    let signed = transaction::sign(unsigned, signer).unwrap();
    assert!(tron.parse(&signed).unwrap().matches(payment));
    (signed, metadata.window.expiration)
}

#[tokio::test]
async fn trx_and_usdt_transfers_flow_through_the_node() {
    let signer = KeySigner::from_hex(&format!("{:0>64}", "1"));
    let (tron, ledger) = fake_node(funded(&signer)).await;
    let me = signer.tron_address();
    let usdt = Asset::Token(addr(USDT));
    let tip = tron.tip().await.unwrap();
    assert_eq!((tip.head, tip.finalized), (100, Some(100 - SOLIDIFIED_LAG)));
    assert_eq!(
        tron.balance(&me, &Asset::Native).await.unwrap(),
        Amount::from_u128(50_000_000)
    );
    assert_eq!(
        tron.balance(&me, &usdt).await.unwrap(),
        Amount::from_u128(10_000_000)
    );
    assert_eq!(
        tron.balance(&addr(RECIPIENT), &Asset::Native)
            .await
            .unwrap(),
        Amount::ZERO
    );

    let payment = Payment {
        from_index: 0,
        from: me.clone(),
        to: addr(RECIPIENT),
        asset: usdt.clone(),
        amount: Amount::from_u128(2_500_000),
    };
    // A first-time holder: twice the simulated energy, priced at the chain's energy fee.
    let metadata = tron.metadata(&payment).await.unwrap();
    assert_eq!(metadata.estimate.energy, 2 * 29_631);
    assert_eq!(metadata.estimate.burn, 2 * 29_631 * 280 + 345 * 1_000);
    // The reference block is the solidified head, not the head.
    assert_eq!(metadata.window.ref_block.number(), 100 - SOLIDIFIED_LAG);

    let (signed, expiration) = send(&tron, &signer, &payment).await;
    assert!(expiration > block_time(100));
    assert_eq!(tron.submit(&signed).await, SubmitOutcome::Accepted);
    assert_eq!(tron.submit(&signed).await, SubmitOutcome::AlreadyKnown);
    assert_eq!(
        tron.transaction(&signed.txid).await.unwrap(),
        TxStatus::NotFound
    );
    assert_eq!(
        tron.attempt_fate_of(&signed.raw).await.unwrap(),
        AttemptFate::MayLand
    );
    ledger.lock().unwrap().mine();
    let TxStatus::Included {
        block,
        success,
        confirmations,
    } = tron.transaction(&signed.txid).await.unwrap()
    else {
        panic!("not included");
    };
    assert_eq!((block.number, success, confirmations), (101, true, 1));
    assert_eq!(
        tron.balance(&addr(RECIPIENT), &usdt).await.unwrap(),
        Amount::from_u128(2_500_000)
    );
    // Included but not solidified yet: it may still land (it has), not dead.
    assert_eq!(
        tron.attempt_fate_of(&signed.raw).await.unwrap(),
        AttemptFate::MayLand
    );
    for _ in 0..SOLIDIFIED_LAG {
        ledger.lock().unwrap().mine();
    }
    assert_eq!(
        tron.attempt_fate_of(&signed.raw).await.unwrap(),
        AttemptFate::Landed {
            block: 101,
            success: true
        }
    );

    let first_txid = signed.txid.clone();
    // The deposit shows in a scan, from the Transfer log of the allowlisted token only.
    let watch = WatchSet {
        addresses: vec![addr(RECIPIENT)],
        tokens: vec![addr(USDT)],
    };
    let batch = tron.scan(100, 102, &watch).await.unwrap();
    assert_eq!(batch.blocks.len(), 3);
    assert_eq!(batch.deposits.len(), 1);
    let deposit = &batch.deposits[0];
    assert_eq!(
        (deposit.txid.as_str(), deposit.block.number),
        (signed.txid.as_str(), 101)
    );
    assert_eq!(deposit.amount, Amount::from_u128(2_500_000));
    assert_eq!(deposit.from.as_deref(), Some(me.as_str()));
    let other_token = WatchSet {
        addresses: vec![addr(RECIPIENT)],
        tokens: vec![addr(RECIPIENT)],
    };
    assert!(
        tron.scan(101, 101, &other_token)
            .await
            .unwrap()
            .deposits
            .is_empty()
    );

    // TRX to an unactivated address pays the creation fee in the estimate.
    let trx = Payment {
        asset: Asset::Native,
        to: addr("TUoHaVjx7n5xz8LwPRDckgFrDWhMhuSuJM"),
        amount: Amount::from_u128(1_000_000),
        ..payment
    };
    let metadata = tron.metadata(&trx).await.unwrap();
    assert_eq!(metadata.window.fee_limit, 0);
    // Activating its recipient: no staked bandwidth, so Nile's account-creation fee for the
    // bandwidth (free bandwidth never pays for a creation), plus the transfer's own creation
    // fee: 1.1 TRX, as the recorded mainnet receipt of such a transfer.
    assert_eq!(metadata.estimate.burn, 100_000 + 1_000_000);
    let (signed, _) = send(&tron, &signer, &trx).await;
    assert_eq!(tron.submit(&signed).await, SubmitOutcome::Accepted);
    ledger.lock().unwrap().mine();
    let head = ledger.lock().unwrap().head;

    // The TRX deposit is found in its block by a scan over more than one page of blocks
    // (getblockbylimitnext answers 100 at most), for the watched address only.
    let trx_to = addr("TUoHaVjx7n5xz8LwPRDckgFrDWhMhuSuJM");
    let watch = WatchSet {
        addresses: vec![trx_to.clone(), addr(RECIPIENT)],
        tokens: vec![addr(USDT)],
    };
    ledger.lock().unwrap().calls.clear();
    let batch = tron.scan(1, head, &watch).await.unwrap();
    assert_eq!(batch.blocks.len(), usize::try_from(head).unwrap());
    // Blocks come a page of 100 per call, and TransactionInfos only for the blocks with a
    // contract call (101 here).
    let calls = ledger.lock().unwrap().calls.clone();
    assert_eq!(calls.get("/wallet/getblockbynum"), None, "{calls:?}");
    assert_eq!(calls["/wallet/getblockbylimitnext"], 2, "{calls:?}");
    assert_eq!(
        calls["/wallet/gettransactioninfobyblocknum"], 1,
        "{calls:?}"
    );
    let found: Vec<_> = batch
        .deposits
        .iter()
        .map(|deposit| {
            (
                deposit.txid.as_str(),
                deposit.block.number,
                deposit.asset.clone(),
                deposit.to.clone(),
                deposit.amount,
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (
                first_txid.as_str(),
                101,
                usdt.clone(),
                addr(RECIPIENT),
                Amount::from_u128(2_500_000)
            ),
            (
                signed.txid.as_str(),
                head,
                Asset::Native,
                trx_to,
                Amount::from_u128(1_000_000)
            ),
        ]
    );
    let not_watched = WatchSet {
        addresses: vec![addr(RECIPIENT)],
        tokens: vec![],
    };
    assert!(
        tron.scan(head, head, &not_watched)
            .await
            .unwrap()
            .deposits
            .is_empty()
    );
}

#[tokio::test]
async fn the_node_refusals_map_to_outcomes_and_expired_attempts_die() {
    let signer = KeySigner::from_hex(&format!("{:0>64}", "2"));
    let (tron, ledger) = fake_node(funded(&signer)).await;
    let payment = one_trx(&signer);
    let solid = RefBlock::from_hex(&block_id(100 - SOLIDIFIED_LAG)).unwrap();
    let window = |timestamp: i64| Window {
        ref_block: solid,
        timestamp,
        expiration: timestamp + 60_000,
        fee_limit: 0,
    };
    let sign = |window: Window, payment: &Payment| {
        transaction::sign(transaction::build(payment, &window).unwrap(), &signer).unwrap()
    };

    // Expired against the node's head.
    let expired = sign(window(block_time(100) - 120_000), &payment);
    assert!(
        matches!(tron.submit(&expired).await, SubmitOutcome::Unknown { ref reason } if reason.contains("TRANSACTION_EXPIRATION_ERROR"))
    );
    // A reference block the node does not have.
    let foreign = Window {
        ref_block: RefBlock::from_hex(&"11".repeat(32)).unwrap(),
        ..window(block_time(100))
    };
    assert!(
        matches!(tron.submit(&sign(foreign, &payment)).await, SubmitOutcome::Rejected { retriable: true, ref reason } if reason.contains("TAPOS_ERROR"))
    );
    // More than the balance.
    let too_much = Payment {
        amount: Amount::from_u128(60_000_000),
        ..payment.clone()
    };
    assert!(
        matches!(tron.submit(&sign(window(block_time(100)), &too_much)).await, SubmitOutcome::Rejected { retriable: true, ref reason } if reason.contains("CONTRACT_VALIDATE_ERROR"))
    );
    // A signature by another key.
    let good = sign(window(block_time(100)), &payment);
    let mut forged: chain_tron::proto::TransactionBytes =
        prost::Message::decode(good.raw.as_slice()).unwrap();
    forged.signature[0][64] ^= 1;
    let forged = chain::provider::SignedTransaction {
        txid: good.txid.clone(),
        raw: prost::Message::encode_to_vec(&forged),
    };
    assert!(
        matches!(tron.submit(&forged).await, SubmitOutcome::Rejected { retriable: false, ref reason } if reason.contains("SIGERROR"))
    );

    // An attempt that never reached the node: alive until the solidified chain reaches its
    // expiration (block 120 is at it exactly: block 121's parent is, so 121 cannot take it,
    // and 120 is the last block that could), then dead, proven from blocks 82..=120.
    let lost = sign(window(block_time(100)), &payment);
    let expiration = block_time(100) + 60_000;
    assert_eq!(expiration, block_time(120));
    assert_eq!(
        tron.attempt_fate_of(&lost.raw).await.unwrap(),
        AttemptFate::MayLand
    );
    // The solidified head lags 19 behind.
    ledger.lock().unwrap().mine_n(19 + SOLIDIFIED_LAG);
    assert_eq!(ledger.lock().unwrap().solidified(), 119);
    assert_eq!(
        tron.attempt_fate_of(&lost.raw).await.unwrap(),
        AttemptFate::MayLand
    );
    ledger.lock().unwrap().mine();
    assert_eq!(
        tron.attempt_fate_of(&lost.raw).await.unwrap(),
        AttemptFate::Dead
    );
    // The proof read the solidified blocks after the reference block (81) in one page.
    let calls = ledger.lock().unwrap().calls.clone();
    assert_eq!(calls["/walletsolidity/getblockbylimitnext"], 1, "{calls:?}");
    assert_eq!(calls["/walletsolidity/getblockbynum"], 1, "{calls:?}");
}

/// An attempt that lands in the last block that could take it (the first one at its
/// expiration), while the solidity node's transaction index answers `{}`: the blocks show it
/// Landed, never Dead. With the index, the quick lookup says the same.
#[tokio::test]
async fn an_attempt_in_a_solidified_block_at_its_expiration_is_landed_even_unindexed() {
    let signer = KeySigner::from_hex(&format!("{:0>64}", "3"));
    let (tron, ledger) = fake_node(funded(&signer)).await;
    ledger.lock().unwrap().unindexed = true;
    let payment = one_trx(&signer);
    // Expires between block 100 (the head) and 101: 101 is the first block at or past its
    // expiration, and the last that may hold it (its parent, 100, is before it).
    let window = Window {
        ref_block: RefBlock::from_hex(&block_id(100 - SOLIDIFIED_LAG)).unwrap(),
        timestamp: block_time(100) - 57_000,
        expiration: block_time(101) - 1_000,
        fee_limit: 0,
    };
    let signed =
        transaction::sign(transaction::build(&payment, &window).unwrap(), &signer).unwrap();
    assert_eq!(tron.submit(&signed).await, SubmitOutcome::Accepted);
    ledger.lock().unwrap().mine();
    assert_eq!(ledger.lock().unwrap().included[&signed.txid], 101);
    // Not solidified yet.
    assert_eq!(
        tron.attempt_fate_of(&signed.raw).await.unwrap(),
        AttemptFate::MayLand
    );
    // The solidified head reaches 101, past the expiration; the index says `{}`.
    ledger.lock().unwrap().mine_n(SOLIDIFIED_LAG);
    let landed = AttemptFate::Landed {
        block: 101,
        success: true,
    };
    // A node that prints its blocks without their transactions proves nothing: its block 101
    // says (by its transaction root) that it has some.
    ledger.lock().unwrap().elide_transactions = true;
    let error = tron.attempt_fate_of(&signed.raw).await.unwrap_err();
    assert!(
        error.retriable && error.message.contains("txTrieRoot"),
        "{error}"
    );
    ledger.lock().unwrap().elide_transactions = false;
    assert_eq!(tron.attempt_fate_of(&signed.raw).await.unwrap(), landed);
    ledger.lock().unwrap().mine_n(50);
    assert_eq!(tron.attempt_fate_of(&signed.raw).await.unwrap(), landed);
    ledger.lock().unwrap().unindexed = false;
    assert_eq!(tron.attempt_fate_of(&signed.raw).await.unwrap(), landed);
    // Sending the landed, expired bytes again: java-tron checks the expiration before
    // duplicates, so the node says expired, not duplicate; the outcome is Unknown, and only
    // the death rule (Landed here) decides.
    assert!(matches!(
        tron.submit(&signed).await,
        SubmitOutcome::Unknown { ref reason } if reason.contains("TRANSACTION_EXPIRATION_ERROR")
    ));
}

/// A TRC-20 transfer that ran out of energy is in its block all the same: Landed, with
/// `success: false` from its receipt (the quick lookup) or from its block's `contractRet`
/// (the block scan, when the index answers `{}`); the payout it was for was not paid.
#[tokio::test]
async fn an_attempt_that_landed_but_failed_is_landed_without_success() {
    let signer = KeySigner::from_hex(&format!("{:0>64}", "5"));
    let (tron, ledger) = fake_node(funded(&signer)).await;
    ledger.lock().unwrap().fail_tokens = true;
    let payment = Payment {
        from_index: 0,
        from: signer.tron_address(),
        to: addr(RECIPIENT),
        asset: Asset::Token(addr(USDT)),
        amount: Amount::from_u128(2_500_000),
    };
    let (signed, _) = send(&tron, &signer, &payment).await;
    assert_eq!(tron.submit(&signed).await, SubmitOutcome::Accepted);
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    assert!(matches!(
        tron.transaction(&signed.txid).await.unwrap(),
        TxStatus::Included { success: false, .. }
    ));
    let failed = AttemptFate::Landed {
        block: 101,
        success: false,
    };
    assert_eq!(tron.attempt_fate_of(&signed.raw).await.unwrap(), failed);
    // Past its expiration, with the index lagging: the block says the same.
    ledger.lock().unwrap().unindexed = true;
    ledger.lock().unwrap().mine_n(30);
    assert_eq!(tron.attempt_fate_of(&signed.raw).await.unwrap(), failed);
    assert_eq!(
        tron.balance(&addr(RECIPIENT), &Asset::Token(addr(USDT)))
            .await
            .unwrap(),
        Amount::ZERO
    );
}

/// A solidity node that serves a page with a block missing proves nothing: an error, never
/// Dead. And a solidified head past the expiration with blocks it cannot serve is the same.
#[tokio::test]
async fn a_scan_that_cannot_read_every_candidate_block_proves_nothing() {
    let signer = KeySigner::from_hex(&format!("{:0>64}", "4"));
    let (tron, ledger) = fake_node(funded(&signer)).await;
    let payment = one_trx(&signer);
    let window = Window {
        ref_block: RefBlock::from_hex(&block_id(100 - SOLIDIFIED_LAG)).unwrap(),
        timestamp: block_time(100),
        expiration: block_time(100) + 60_000,
        fee_limit: 0,
    };
    let signed =
        transaction::sign(transaction::build(&payment, &window).unwrap(), &signer).unwrap();
    // Never broadcast; the chain moves well past the expiration.
    ledger.lock().unwrap().mine_n(200);
    // A solidity node whose page lacks block 110 (between the reference block, 81, and the
    // expiration, block 120): not proven, a retriable error.
    ledger.lock().unwrap().hidden = Some(110);
    let error = tron.attempt_fate_of(&signed.raw).await.unwrap_err();
    assert!(error.retriable, "{error}");
    // A transaction whose reference block is not on this chain (the same low bits, another
    // hash): the blocks after it cannot be told apart from a later namesake's, not proven.
    let mut foreign_id = hex::decode(block_id(100 - SOLIDIFIED_LAG)).unwrap();
    foreign_id[8..16].copy_from_slice(&[0x11; 8]);
    let foreign = Window {
        ref_block: RefBlock::from_hex(&hex::encode(&foreign_id)).unwrap(),
        ..window
    };
    let foreign =
        transaction::sign(transaction::build(&payment, &foreign).unwrap(), &signer).unwrap();
    ledger.lock().unwrap().hidden = None;
    let error = tron.attempt_fate_of(&foreign.raw).await.unwrap_err();
    assert!(error.message.contains("reference block"), "{error}");
    // A missing block past the last candidate changes nothing.
    ledger.lock().unwrap().hidden = Some(250);
    assert_eq!(
        tron.attempt_fate_of(&signed.raw).await.unwrap(),
        AttemptFate::Dead
    );
    // Reconciled only after a long outage: the solidified head is three 65,536-block cycles
    // on, so three later blocks share the reference block's low bits; the rule steps back to
    // the reference block itself and proves the attempt dead all the same.
    ledger.lock().unwrap().head = 100 + 3 * 65_536 + 40;
    assert_eq!(
        tron.attempt_fate_of(&signed.raw).await.unwrap(),
        AttemptFate::Dead
    );
}

#[test]
fn every_broadcast_fixture_maps_to_an_outcome() {
    let expected = [
        ("bandwith_error", "retriable"),
        ("contract_validate_error", "retriable"),
        ("contract_validate_error_balance_2020", "retriable"),
        ("not_enough_effective_connection", "retriable"),
        ("sigerror", "permanent"),
        ("sigerror_2021", "permanent"),
        ("success_local_node", "accepted"),
        ("success_shasta_trc20", "accepted"),
        ("success_shasta_trx", "accepted"),
        ("tapos_error", "retriable"),
        ("tapos_error_shasta_2023", "retriable"),
        ("transaction_expiration_error", "unknown"),
    ];
    for (case, kind) in expected {
        let outcome = broadcast_outcome(&fixture(&format!(
            "wallet_broadcasttransaction.{case}.json"
        )));
        let got = match outcome {
            SubmitOutcome::Accepted => "accepted",
            SubmitOutcome::Rejected {
                retriable: true, ..
            } => "retriable",
            SubmitOutcome::Rejected {
                retriable: false, ..
            } => "permanent",
            SubmitOutcome::Unknown { .. } => "unknown",
            other => panic!("{case}: {other:?}"),
        };
        assert_eq!(got, kind, "{case}");
    }
    let dup = json!({"code": "DUP_TRANSACTION_ERROR", "txid": "00", "message": hex::encode("Dup transaction.")});
    assert_eq!(broadcast_outcome(&dup), SubmitOutcome::AlreadyKnown);
    assert!(matches!(
        broadcast_outcome(&json!({"code": "SERVER_BUSY"})),
        SubmitOutcome::Rejected {
            retriable: true,
            ..
        }
    ));
    assert!(matches!(
        broadcast_outcome(&json!({"code": "SOMETHING_NEW"})),
        SubmitOutcome::Unknown { .. }
    ));
}

#[test]
fn every_fixture_parses_and_transaction_infos_read_as_recorded() {
    let mut count = 0;
    for entry in std::fs::read_dir(FIXTURES).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".json") {
            continue;
        }
        let value = fixture(&name);
        count += 1;
        if name.starts_with("wallet_gettransactioninfobyid.") {
            let info: TransactionInfo = serde_json::from_value(value.clone()).unwrap();
            let failed = name.contains("out_of_energy") || name.contains("failed");
            assert_eq!(info.succeeded(), !failed, "{name}");
        }
        if name.starts_with("wallet_gettransactioninfobyblocknum.") {
            let infos: Vec<TransactionInfo> = serde_json::from_value(value).unwrap();
            assert_eq!(infos.len(), 2);
        }
    }
    assert!(count >= 50, "{count} fixtures");
    // The recorded USDT transfer's Transfer log is a deposit when its token is allowlisted.
    let info: TransactionInfo = serde_json::from_value(fixture(
        "wallet_gettransactioninfobyid.mainnet_usdt_transfer_success.json",
    ))
    .unwrap();
    let to =
        transaction::address(&hex::decode("41cdae4e9a6287333a3f7df432b050af7b17e79e63").unwrap())
            .unwrap();
    let block = chain::provider::BlockRef {
        number: 66_861_993,
        hash: "h".into(),
        parent_hash: "p".into(),
    };
    let watch = WatchSet {
        addresses: vec![to.clone()],
        tokens: vec![addr(USDT)],
    };
    let deposits = chain_tron::node::token_deposits(
        &block,
        std::slice::from_ref(&info),
        &chain_tron::node::WatchIndex::new(&watch),
    )
    .unwrap();
    assert_eq!(deposits.len(), 1);
    assert_eq!(deposits[0].amount, Amount::from_u128(0x35_67e0));
    assert_eq!(deposits[0].to, to);
    let unlisted = WatchSet {
        addresses: vec![to],
        tokens: vec![],
    };
    assert!(
        chain_tron::node::token_deposits(
            &block,
            &[info],
            &chain_tron::node::WatchIndex::new(&unlisted),
        )
        .unwrap()
        .is_empty()
    );
}

#[tokio::test]
async fn the_api_key_never_shows() {
    let tron_client = Tron::new(Config {
        api_key: Some("secret-api-key-123".into()),
        ..Config::new("http://127.0.0.1:9/".parse().unwrap())
    })
    .unwrap();
    let error = tron_client.tip().await.unwrap_err();
    assert!(error.retriable);
    assert!(!format!("{error} {tron_client:?}").contains("secret-api-key-123"));
}

/// The simulation answers a request it cannot read as java-tron does (an `Error` member),
/// says it is a simulation on every answer, and keeps serving; a transaction naming a block
/// far back (more than 65,536) or never made fails TaPoS; two pooled transfers that together
/// spend more than the account holds leave the second out of the block instead of stopping
/// the node.
#[tokio::test]
async fn the_simulation_refuses_bad_requests_and_overdrafts_without_stopping() {
    let signer = KeySigner::from_hex(&format!("{:0>64}", "3"));
    let me = signer.tron_address();
    let mut ledger = Ledger {
        head: 100,
        ..Ledger::default()
    };
    ledger.fund(&me, 1_500_000, 0);
    let (url, ledger) = common::fake::serve(ledger).await;
    let url: url::Url = url.parse().unwrap();
    let tron = Tron::new(Config::new(url.clone())).unwrap();
    let http = reqwest::Client::new();
    for (path, body) in [
        ("wallet/getaccount", json!({})),
        ("wallet/getaccount", json!({"address": "not-an-address"})),
        ("wallet/getblockbynum", json!({"num": "x"})),
        ("wallet/broadcasthex", json!({"transaction": "zz"})),
        (
            "wallet/triggerconstantcontract",
            json!({"function_selector": "balanceOf(address)", "parameter": "12"}),
        ),
    ] {
        let response = http
            .post(url.join(path).unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path} {body}");
        assert_eq!(response.headers()[tron_sim::SIMULATION_HEADER], "tron-sim");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert!(
            answer["Error"].is_string() || answer["code"].is_string(),
            "{path} {body}: {answer}"
        );
    }
    let unknown = http
        .post(url.join("wallet/nosuchthing").unwrap())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // Two transfers of 1 TRX from 1.5 TRX: both pass the broadcast check, one lands.
    let mut first = one_trx(&signer);
    first.amount = Amount::from_u128(1_000_000);
    let mut second = first.clone();
    second.amount = Amount::from_u128(1_000_001);
    for payment in [&first, &second] {
        let (signed, _) = send(&tron, &signer, payment).await;
        assert_eq!(tron.submit(&signed).await, SubmitOutcome::Accepted);
    }
    ledger.lock().unwrap().mine();
    let ledger = ledger.lock().unwrap();
    assert_eq!(ledger.blocks[&101].len(), 1);
    assert_eq!(ledger.trx[&common::fake::hex21(&me)], 500_000);
}
