//! Block scanning and deposits on both stores: commits append only to the stored chain; a
//! rollback takes the cut blocks' deposits with it (orphaned, or reversed if credited); an
//! orphaned deposit mined again comes back; crediting follows the given depth; bad batches
//! change nothing.

use chrono::{DateTime, TimeZone, Utc};
use domain::{Amount, Chain};
use store::{DepositInsert, DepositState, ScannedBlock, StoreError};
use testkit::TestDb;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

/// Blocks `from..from+count` on fork `fork`, chained to `parent`.
fn blocks(from: u64, count: u64, fork: &str, parent: &str) -> Vec<ScannedBlock> {
    let mut parent = parent.to_string();
    (from..from + count)
        .map(|number| {
            let block = ScannedBlock {
                number,
                hash: format!("0x{fork}{number}"),
                parent_hash: parent.clone(),
            };
            parent = block.hash.clone();
            block
        })
        .collect()
}

fn deposit(txid: &str, block: &ScannedBlock, amount: u128) -> DepositInsert {
    DepositInsert {
        txid: txid.into(),
        asset: "native".into(),
        position: 0,
        address: "0x00000000000000000000000000000000000000a1".into(),
        sender: Some("0x00000000000000000000000000000000000000b2".into()),
        amount: Amount::from_u128(amount),
        block_number: block.number,
        block_hash: block.hash.clone(),
    }
}

async fn states(store: &store::Store) -> Vec<(String, u64, DepositState)> {
    let mut rows: Vec<_> = store
        .deposits_list(Chain::Ethereum, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.txid, row.block_number, row.state))
        .collect();
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    rows
}

async fn commits_chain_and_reorgs_roll_back(db: &TestDb) {
    let store = db.store().await;
    let chain = Chain::Ethereum;
    assert_eq!(store.scan_head(chain).await.unwrap(), None);
    let first = blocks(10, 5, "a", "0xa9");
    let mut found = vec![deposit("0x01", &first[1], 5), deposit("0x02", &first[3], 7)];
    found[1].asset = "0x00000000000000000000000000000000000000c3".into();
    found[1].position = 4;
    store
        .scan_commit(chain, &first, &found, at(0))
        .await
        .unwrap();
    assert_eq!(store.scan_head(chain).await.unwrap().as_ref(), first.last());
    assert_eq!(
        store.scan_block(chain, 12).await.unwrap().as_ref(),
        Some(&first[2])
    );

    // A batch that does not follow the stored chain is refused, by number or by parent.
    for stray in [blocks(16, 2, "a", "0xa14"), blocks(15, 2, "b", "0xb14")] {
        assert!(matches!(
            store.scan_commit(chain, &stray, &[], at(1)).await,
            Err(StoreError::Stale(_))
        ));
    }
    let rows = store.deposits_list(chain, None, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    let token = rows.iter().find(|row| row.txid == "0x02").unwrap();
    assert_eq!(
        (token.position, token.amount, token.state),
        (4, Amount::from_u128(7), DepositState::Pending)
    );
    assert_eq!(token.seen_at, at(0));

    // Credit through block 11: the first deposit only.
    assert_eq!(store.deposits_credit(chain, 11, at(2)).await.unwrap(), 1);
    assert_eq!(
        store.deposits_credit(chain, 11, at(3)).await.unwrap(),
        0,
        "once"
    );

    // A reorg from block 11: both blocks with deposits go; the credited one is reversed.
    let undone = store.scan_rollback(chain, 10).await.unwrap();
    assert_eq!((undone.blocks, undone.orphaned, undone.reversed), (4, 1, 1));
    assert_eq!(
        store.scan_head(chain).await.unwrap().as_ref(),
        Some(&first[0])
    );
    assert_eq!(
        states(&store).await,
        vec![
            ("0x01".into(), 11, DepositState::Reversed),
            ("0x02".into(), 13, DepositState::Orphaned),
        ]
    );

    // The new fork mines the orphaned deposit again, two blocks later: pending again there.
    let fork = blocks(11, 6, "b", "0xa10");
    let mut again = deposit("0x02", &fork[4], 7);
    again.asset = "0x00000000000000000000000000000000000000c3".into();
    again.position = 4;
    store
        .scan_commit(chain, &fork, &[again, deposit("0x03", &fork[0], 9)], at(4))
        .await
        .unwrap();
    assert_eq!(
        states(&store).await,
        vec![
            ("0x01".into(), 11, DepositState::Reversed),
            ("0x02".into(), 15, DepositState::Pending),
            ("0x03".into(), 11, DepositState::Pending),
        ]
    );
    // Rescanning a block seen already (after a crash before the cursor moved) is harmless.
    assert!(matches!(
        store.scan_commit(chain, &fork[..1], &[], at(5)).await,
        Err(StoreError::Stale(_))
    ));
    assert_eq!(store.deposits_credit(chain, 16, at(6)).await.unwrap(), 2);
    let credited = store
        .deposits_list(chain, Some(DepositState::Credited), 10)
        .await
        .unwrap();
    assert_eq!(credited.len(), 2);
    assert!(credited.iter().all(|row| row.credited_at == Some(at(6))));
    // Another chain is another cursor.
    assert_eq!(store.scan_head(Chain::Tron).await.unwrap(), None);
}

async fn bad_batches_change_nothing(db: &TestDb) {
    let store = db.store().await;
    let chain = Chain::Ethereum;
    let good = blocks(0, 3, "a", "0x00");
    let mut broken = good.clone();
    broken[2].parent_hash = "0xelsewhere".into();
    let mut gap = good.clone();
    gap.remove(1);
    let mut outside = deposit("0x01", &good[0], 1);
    outside.block_hash = "0xother".into();
    let mut zero = deposit("0x01", &good[0], 0);
    zero.amount = Amount::from_u128(0);
    let mut long = deposit(&"f".repeat(101), &good[0], 1);
    long.position = 0;
    for (blocks, deposits) in [
        (vec![], vec![]),
        (broken, vec![]),
        (gap, vec![]),
        (good.clone(), vec![outside]),
        (good.clone(), vec![zero]),
        (good.clone(), vec![long]),
    ] {
        assert!(matches!(
            store.scan_commit(chain, &blocks, &deposits, at(0)).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert_eq!(store.scan_head(chain).await.unwrap(), None);
    assert!(
        store
            .deposits_list(chain, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.deposits_list(chain, None, 0).await,
        Err(StoreError::Invalid(_))
    ));
    // Old blocks are pruned beyond the kept depth; the newest stay.
    let mut parent = "0x00".to_string();
    let mut next = 0;
    while next <= store::SCAN_BLOCKS_KEPT + 10 {
        let batch = blocks(next, 1_000, "p", &parent);
        parent = batch.last().unwrap().hash.clone();
        store.scan_commit(chain, &batch, &[], at(1)).await.unwrap();
        next += 1_000;
    }
    let newest = store.scan_head(chain).await.unwrap().unwrap().number;
    assert_eq!(newest, next - 1);
    assert!(
        store
            .scan_block(chain, newest - store::SCAN_BLOCKS_KEPT)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .scan_block(chain, newest - store::SCAN_BLOCKS_KEPT - 1)
            .await
            .unwrap()
            .is_none()
    );
}

testkit::on_both_stores!(
    db: commits_chain_and_reorgs_roll_back,
    bad_batches_change_nothing
);
