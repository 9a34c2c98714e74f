//! The Bitcoin adapter against a real regtest node (`testkit::Bitcoind`): funded by mining,
//! payouts built, signed by the signer, checked by Bitcoin Core's script interpreter
//! (`bitcoinconsensus`), submitted and mined; the node's answers to replacements; the
//! wallet's outputs through a reorg. The payouts recorded in the store (reservations across
//! processes, a crash before broadcasting, replacement by fee, dead attempts) are in
//! `payouts.rs` (batched payouts too); deposits credited by the wallet's scanner in
//! `scanner.rs`.

mod common;

use std::time::Duration;

use chain::provider::{Asset, ChainRead, ChainSubmit, Keychain, SubmitOutcome, TxStatus, WatchSet};
use common::*;
use domain::Amount;
use serde_json::json;

#[tokio::test]
async fn pays_one_withdrawal_and_refuses_another_networks_address() {
    let mut setup = Setup::start().await;
    // Wrong network: a mainnet and a testnet address on regtest.
    assert!(
        setup
            .bitcoin
            .address("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")
            .is_err()
    );
    assert!(
        setup
            .bitcoin
            .address("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx")
            .is_err()
    );

    let to = user(0);
    let payout = setup
        .build("w1", &[(to.clone(), Amount::from_u128(12_345_678))], 5, 0)
        .await;
    assert_eq!(payout.inputs.len(), 1, "one 50 BTC output covers it");
    assert!(payout.change.is_some());
    assert!(
        payout.fee >= 5 * payout.max_vsize() - 5,
        "fee {} for {} vB",
        payout.fee,
        payout.max_vsize()
    );
    let signed = setup.sign(&payout);
    assert_eq!(setup.bitcoin.test_accept(&signed).await.unwrap(), Ok(()));
    assert_eq!(setup.bitcoin.submit(&signed).await, SubmitOutcome::Accepted);
    // Bitcoin Core answers the txid again for a transaction already in its pool.
    assert_eq!(setup.bitcoin.submit(&signed).await, SubmitOutcome::Accepted);
    assert_eq!(
        setup.bitcoin.transaction(&signed.txid).await.unwrap(),
        TxStatus::Pending
    );
    setup.mine(1).await;
    let (address, sat, confirmations) = output_of(&setup, &signed.txid, 0).await;
    assert_eq!(
        (address, sat, confirmations),
        (to.to_string(), 12_345_678, 1)
    );
    assert!(matches!(
        setup.bitcoin.transaction(&signed.txid).await.unwrap(),
        TxStatus::Included {
            confirmations: 1,
            ..
        }
    ));
    assert_eq!(
        setup.bitcoin.balance(&to, &Asset::Native).await.unwrap(),
        Amount::from_u128(12_345_678)
    );
    assert_eq!(
        setup.bitcoin.submit(&signed).await,
        SubmitOutcome::AlreadyKnown,
        "already in the chain"
    );
    // The spent coinbase left the set; the change is ours.
    let input = payout.inputs[0].outpoint;
    assert!(
        setup
            .utxos
            .all()
            .iter()
            .all(|(utxo, _)| utxo.outpoint != input)
    );
    assert!(
        setup
            .utxos
            .all()
            .iter()
            .any(|(utxo, _)| utxo.keychain == Keychain::Change)
    );
}

#[tokio::test]
async fn a_replacement_follows_bip125_and_the_replaced_bytes_are_refused_after() {
    let mut setup = Setup::start().await;
    let payout = setup
        .build("r1", &[(user(1), Amount::from_u128(50_000_000))], 1, 0)
        .await;
    let first = setup.sign(&payout);
    assert_eq!(setup.bitcoin.submit(&first).await, SubmitOutcome::Accepted);
    // The same inputs at a rate too close to the old one: BIP125 refuses it.
    let mut too_low = payout.clone();
    too_low.tx.output[payout.change.unwrap().1].value -= bitcoin::Amount::from_sat(1);
    too_low.fee += 1;
    let too_low = setup.sign(&too_low);
    assert!(matches!(
        setup.bitcoin.submit(&too_low).await,
        SubmitOutcome::Rejected { retriable: true, ref reason } if reason.contains("insufficient fee")
    ));
    let bumped = setup.bitcoin.bump(&payout, 10).unwrap();
    assert_eq!(bumped.inputs, payout.inputs);
    assert!(bumped.fee >= 10 * bumped.max_vsize());
    let second = setup.sign(&bumped);
    assert_ne!(second.txid, first.txid);
    assert_eq!(setup.bitcoin.submit(&second).await, SubmitOutcome::Accepted);
    // The old version is out of the pool, and sending it again is a conflict it loses.
    assert_eq!(
        setup.bitcoin.transaction(&first.txid).await.unwrap(),
        TxStatus::NotFound
    );
    assert!(matches!(
        setup.bitcoin.submit(&first).await,
        SubmitOutcome::Rejected {
            retriable: true,
            ..
        }
    ));
    setup.mine(1).await;
    assert!(matches!(
        setup.bitcoin.transaction(&second.txid).await.unwrap(),
        TxStatus::Included { .. }
    ));
    assert_eq!(
        setup.bitcoin.transaction(&first.txid).await.unwrap(),
        TxStatus::NotFound
    );
    // The node cannot tell the first's inputs were spent by another transaction rather than
    // by itself: not a refusal. The attempt's fate is for whoever knows every attempt of the
    // payout (here the second, which spent them, is ours: the payout is made).
    assert!(matches!(
        setup.bitcoin.submit(&first).await,
        SubmitOutcome::Unknown { ref reason } if reason.contains("missing or spent")
    ));
    let (address, sat, _) = output_of(&setup, &second.txid, 0).await;
    assert_eq!((address, sat), (user(1).to_string(), 50_000_000));
}

#[tokio::test]
async fn a_deposit_is_found_by_scan_counted_by_depth_and_gone_after_a_reorg() {
    let mut setup = Setup::start().await;
    let deposit_address = setup.bitcoin.key_address(Keychain::Receive, 3).unwrap();
    let watch = WatchSet {
        addresses: vec![deposit_address.clone()],
        tokens: vec![],
    };
    let payout = setup
        .build(
            "d1",
            &[(deposit_address.clone(), Amount::from_u128(25_000_000))],
            2,
            0,
        )
        .await;
    let signed = setup.sign(&payout);
    assert_eq!(setup.bitcoin.submit(&signed).await, SubmitOutcome::Accepted);
    let before = setup.tip().await;
    // At zero confirmations there is nothing to scan: the mempool is never read.
    let empty = setup.bitcoin.scan(before, before, &watch).await.unwrap();
    assert!(
        empty
            .deposits
            .iter()
            .all(|deposit| deposit.txid != signed.txid)
    );
    setup.mine(3).await;
    let tip = setup.tip().await;
    let batch = setup.bitcoin.scan(before + 1, tip, &watch).await.unwrap();
    batch.check(before + 1).unwrap();
    let found: Vec<_> = batch
        .deposits
        .iter()
        .filter(|d| d.txid == signed.txid)
        .collect();
    assert_eq!(found.len(), 1);
    let deposit = found[0];
    assert_eq!(deposit.position, 0, "txid:vout");
    assert_eq!(deposit.amount, Amount::from_u128(25_000_000));
    assert_eq!(deposit.block.number, before + 1);
    assert_eq!(
        tip - deposit.block.number + 1,
        3,
        "confirmations: tip - height + 1"
    );
    // A reorg takes its block away: the parent hash of the new block at that height differs
    // from the one stored, and the deposit is not in the new chain.
    setup
        .bitcoin
        .rpc()
        .call("invalidateblock", json!([deposit.block.hash]))
        .await
        .unwrap();
    // The transaction went back to the pool: keep it out of the new blocks.
    setup
        .bitcoin
        .rpc()
        .call(
            "prioritisetransaction",
            json!([signed.txid, 0, -100_000_000]),
        )
        .await
        .unwrap();
    setup.mine(4).await;
    let new_tip = setup.tip().await;
    let rescan = setup
        .bitcoin
        .scan(before + 1, new_tip, &watch)
        .await
        .unwrap();
    rescan.check(before + 1).unwrap();
    assert_ne!(
        rescan.blocks[0].hash, deposit.block.hash,
        "the block is replaced"
    );
    assert!(
        rescan.deposits.iter().all(|d| d.txid != signed.txid),
        "the deposit is gone"
    );
}

/// The wallet's unspent outputs follow a reorg: the block holding a payout is invalidated,
/// the set sees the new branch does not chain onto it, undoes it: the change output created
/// in it disappears, the coin spent in it comes back (locked again by its payout).
#[tokio::test]
async fn a_reorg_undoes_the_outputs_a_removed_block_created_and_spent() {
    let mut setup = Setup::start().await;
    let payout = setup
        .build("u1", &[(user(4), Amount::from_u128(30_000_000))], 2, 7)
        .await;
    let spent = payout.inputs[0].outpoint;
    let signed = setup.sign(&payout);
    assert_eq!(setup.bitcoin.submit(&signed).await, SubmitOutcome::Accepted);
    setup.mine(1).await;
    let change = bitcoin::OutPoint {
        txid: signed.txid.parse().unwrap(),
        vout: payout.change.unwrap().1 as u32,
    };
    assert!(setup.utxos.contains(&change), "the change is ours");
    assert!(!setup.utxos.contains(&spent), "the coin is spent");
    let removed = setup.applied;
    let removed_hash = setup.utxos.block_hash(removed).unwrap();
    setup
        .bitcoin
        .rpc()
        .call("invalidateblock", json!([removed_hash.to_string()]))
        .await
        .unwrap();
    // Keep the payout out of the new branch (it went back to the pool).
    setup
        .bitcoin
        .rpc()
        .call(
            "prioritisetransaction",
            json!([signed.txid, 0, -100_000_000]),
        )
        .await
        .unwrap();
    setup.mine(2).await;
    let synced = setup.utxos.last().unwrap();
    assert_eq!(synced.0, removed + 1, "the new branch is applied");
    assert_ne!(setup.utxos.block_hash(removed), Some(removed_hash));
    assert!(
        !setup.utxos.contains(&change),
        "the change created in the removed block is gone"
    );
    assert!(
        setup.utxos.contains(&spent),
        "the coin spent in the removed block is back"
    );
    assert_eq!(setup.utxos.holder(&spent).as_deref(), Some("u1"));
    // A block that does not chain onto the set is refused, changing nothing.
    let stale = setup
        .bitcoin
        .block_by_hash(&removed_hash.to_string())
        .await
        .unwrap();
    assert!(setup.utxos.apply_block(&stale, removed + 2).is_err());
    assert!(setup.utxos.contains(&spent));
}

/// A node that keeps no transaction index is refused at connection, saying what to do.
#[tokio::test]
async fn a_node_without_a_transaction_index_is_refused_at_connect() {
    use chain::address::Network;
    use chain_bitcoin::{Bitcoin, FeePolicy, Rpc};
    use signer::{InProcessSigner, Mnemonic, Signer};
    let node = testkit::Bitcoind::start_with(&["-txindex=0"]).await;
    let rpc = Rpc::with_cookie(&node.url, &node.cookie(), Duration::from_secs(30)).unwrap();
    let signer = InProcessSigner::new(&Mnemonic::parse(MNEMONIC).unwrap(), Network::Regtest);
    let error = Bitcoin::connect(
        rpc,
        Network::Regtest,
        signer.xpub(domain::Chain::Bitcoin).unwrap(),
        FeePolicy::default(),
    )
    .await
    .unwrap_err();
    assert!(!error.retriable);
    assert!(
        error.message.contains("start it with -txindex=1"),
        "{error}"
    );
}

/// A node writes a new cookie at every start: a client made from the cookie file reads it
/// again when the node refuses the credentials, and asks once more, so a long-running worker
/// outlives the node's restarts. Here the file first holds stale credentials (refused, and
/// read again to the same: the error is the node's refusal), then the node's own.
#[tokio::test]
async fn a_client_of_a_cookie_file_reads_it_again_when_the_node_refuses_it() {
    use chain_bitcoin::{Rpc, RpcError};
    let node = testkit::Bitcoind::start().await;
    let dir = std::env::temp_dir().join(format!("coinsensei-cookie-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(".cookie");
    std::fs::write(&file, "__cookie__:stale").unwrap();
    let rpc = Rpc::with_cookie_file(&node.url, &file, Duration::from_secs(30)).unwrap();
    let refused = rpc.call("getblockcount", json!([])).await.unwrap_err();
    assert!(
        matches!(refused, RpcError::Node { code: -401, .. }),
        "{refused}"
    );
    assert!(!format!("{refused} {rpc:?}").contains("stale"));
    // The node "restarted": its new cookie is in the file.
    std::fs::write(&file, node.cookie()).unwrap();
    let clone = rpc.clone();
    assert_eq!(
        rpc.call("getblockcount", json!([])).await.unwrap(),
        json!(0)
    );
    // The clones share what was read.
    std::fs::write(&file, "__cookie__:gone").unwrap();
    assert_eq!(
        clone.call_once("getblockcount", json!([])).await.unwrap(),
        json!(0)
    );
    let missing =
        Rpc::with_cookie_file(&node.url, &dir.join("none"), Duration::from_secs(1)).unwrap_err();
    assert!(missing.contains("cookie file"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The cap travels with the bytes as `maxfeerate`: bytes paying more than this adapter's
/// cap (signed under a higher one) are refused by the node itself, by testmempoolaccept and
/// by sendrawtransaction (retriable: the same bytes pass under a higher cap).
#[tokio::test]
async fn the_node_refuses_bytes_paying_above_the_cap() {
    use chain::address::Network;
    use chain_bitcoin::{Bitcoin, FeePolicy, Rpc};
    use signer::Signer;
    let setup = Setup::start().await;
    let payout = setup
        .build("m1", &[(user(6), Amount::from_u128(10_000_000))], 20, 0)
        .await;
    let signed = setup.sign(&payout);
    let strict = Bitcoin::connect(
        Rpc::with_cookie(
            &setup.node.url,
            &setup.node.cookie(),
            Duration::from_secs(30),
        )
        .unwrap(),
        Network::Regtest,
        setup.signer.xpub(domain::Chain::Bitcoin).unwrap(),
        FeePolicy {
            target_blocks: 6,
            floor_sat_vb: 1,
            cap_sat_vb: 10,
        },
    )
    .await
    .unwrap();
    assert!(
        strict.check_fee(&signed, &payout.inputs).is_err(),
        "above its cap"
    );
    let refusal = strict.test_accept(&signed).await.unwrap().unwrap_err();
    assert!(refusal.contains("max-fee-exceeded"), "{refusal}");
    assert!(matches!(
        strict.submit(&signed).await,
        SubmitOutcome::Rejected { retriable: true, ref reason } if reason.contains("maximum")
    ));
    assert_eq!(
        setup.bitcoin.transaction(&signed.txid).await.unwrap(),
        TxStatus::NotFound
    );
    // Under the usual cap the same bytes go.
    assert_eq!(setup.bitcoin.submit(&signed).await, SubmitOutcome::Accepted);
}
