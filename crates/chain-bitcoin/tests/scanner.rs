//! Deposits credited through the wallet's scanner with the store, on a regtest node: never
//! at zero confirmations, credited when the block is `confirmations` deep (confirmations =
//! tip − height + 1), and reversed when a reorg (`invalidateblock`) takes a credited
//! deposit's block away, orphaned when it takes a pending one's. On both stores.

mod common;

use chain::provider::{ChainRead, ChainSubmit, Keychain, SubmitOutcome, WatchSet};
use common::*;
use domain::{Amount, Chain};
use serde_json::json;
use store::{DepositState, Store};
use testkit::TestDb;
use wallet::scanner::{ScanPolicy, Scanner, Step};

async fn deposits(store: &Store) -> Vec<(String, u64, DepositState)> {
    let mut rows: Vec<_> = store
        .deposits_list(Chain::Bitcoin, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            (
                format!("{}:{}", row.txid, row.position),
                row.block_number,
                row.state,
            )
        })
        .collect();
    rows.sort_by_key(|row| row.1);
    rows
}

/// Takes the block at `height` away and mines `blocks` on its parent, keeping `txid` out.
async fn reorg(setup: &mut Setup, height: u64, txid: &str, blocks: u64) {
    let hash = setup.bitcoin.block(height).await.unwrap().unwrap().hash;
    let rpc = setup.bitcoin.rpc();
    rpc.call("invalidateblock", json!([hash])).await.unwrap();
    rpc.call("prioritisetransaction", json!([txid, 0, -100_000_000]))
        .await
        .unwrap();
    setup.mine(blocks).await;
}

async fn credited_at_depth_and_reversed_or_orphaned_by_a_reorg(db: &TestDb) {
    let mut setup = Setup::start().await;
    let store = db.store().await;
    let deposit_address = setup.bitcoin.key_address(Keychain::Receive, 3).unwrap();
    let first = setup.tip().await + 1;
    let scanner = Scanner::new(
        setup.bitcoin.clone(),
        store.clone(),
        // A few blocks before the deposit are stored too: the fork is found among them.
        ScanPolicy::bitcoin(first - 5, 3),
        WatchSet {
            addresses: vec![deposit_address.clone()],
            tokens: vec![],
        },
    )
    .unwrap();
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
    // In the pool, zero confirmations: not in any block scanned, nothing stored.
    scanner.catch_up(setup.tip().await).await.unwrap();
    assert!(matches!(
        scanner.step().await.unwrap(),
        Step::Idle { credited: 0 }
    ));
    assert!(deposits(&store).await.is_empty());
    let key = format!("{}:0", signed.txid);
    // One confirmation: stored, pending. Its block taken away before it is deep enough (a
    // longer branch without it): the scanner finds the fork by parent hash, orphaned.
    setup.mine(1).await;
    scanner.catch_up(setup.tip().await).await.unwrap();
    assert_eq!(
        deposits(&store).await,
        vec![(key.clone(), first, DepositState::Pending)]
    );
    reorg(&mut setup, first, &signed.txid, 2).await;
    let steps = scanner.catch_up(setup.tip().await).await.unwrap();
    assert!(
        steps
            .iter()
            .any(|step| matches!(step, Step::Reorg { fork, .. } if *fork == first - 1)),
        "{steps:?}"
    );
    assert_eq!(
        deposits(&store).await,
        vec![(key.clone(), first, DepositState::Orphaned)]
    );
    // Mined again (its priority restored): pending in its new block, at one and two
    // confirmations.
    setup
        .bitcoin
        .rpc()
        .call(
            "prioritisetransaction",
            json!([signed.txid, 0, 100_000_000]),
        )
        .await
        .unwrap();
    setup.mine(1).await;
    let again = setup.tip().await;
    for _ in 0..2 {
        scanner.catch_up(setup.tip().await).await.unwrap();
        assert_eq!(
            deposits(&store).await,
            vec![(key.clone(), again, DepositState::Pending)],
            "tip {}",
            setup.tip().await
        );
        setup.mine(1).await;
    }
    // Three: tip − height + 1 = 3, credited.
    assert_eq!(setup.tip().await - again + 1, 3);
    let steps = scanner.catch_up(setup.tip().await).await.unwrap();
    assert!(
        steps
            .iter()
            .any(|step| matches!(step, Step::Scanned { credited: 1, .. })),
        "{steps:?}"
    );
    assert_eq!(
        deposits(&store).await,
        vec![(key.clone(), again, DepositState::Credited)]
    );
    // A deeper reorg takes the credited deposit's block away: reversed, for a person.
    reorg(&mut setup, again, &signed.txid, 4).await;
    let steps = scanner.catch_up(setup.tip().await).await.unwrap();
    assert!(
        steps
            .iter()
            .any(|step| matches!(step, Step::Reorg { fork, .. } if *fork == again - 1)),
        "{steps:?}"
    );
    assert_eq!(
        deposits(&store).await,
        vec![(key.clone(), again, DepositState::Reversed)]
    );
}

testkit::on_both_stores!(db: credited_at_depth_and_reversed_or_orphaned_by_a_reorg);
