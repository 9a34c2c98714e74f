//! Block scanning and deposits on both stores: commits append only to the stored chain; a
//! rollback takes the cut blocks' deposits with it (orphaned, or reversed if credited); an
//! orphaned deposit mined again comes back with every field from its new block; crediting
//! follows the given depth; bad batches change nothing; ignored transfers (zero, dust) are
//! stored and never credited; a single block takes more deposits than a multi-block commit;
//! deposit addresses are one per reference under racing requests; the scan lease has one
//! holder at a time.

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
        ignored: None,
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
    let undone = store.scan_rollback(chain, 10, at(2)).await.unwrap();
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

async fn ignored_transfers_are_kept_and_never_credited(db: &TestDb) {
    let store = db.store().await;
    let chain = Chain::Ethereum;
    let first = blocks(0, 3, "a", "0x00");
    let mut zero = deposit("0x0a", &first[0], 0);
    zero.ignored = Some("zero value".into());
    let mut dust = deposit("0x0b", &first[1], 3);
    dust.ignored = Some("dust".into());
    let real = deposit("0x0c", &first[2], 5);
    store
        .scan_commit(chain, &first, &[zero, dust, real], at(0))
        .await
        .unwrap();
    assert_eq!(store.deposits_credit(chain, 2, at(1)).await.unwrap(), 1);
    let rows = states(&store).await;
    assert_eq!(
        rows,
        vec![
            ("0x0a".into(), 0, DepositState::Ignored),
            ("0x0b".into(), 1, DepositState::Ignored),
            ("0x0c".into(), 2, DepositState::Credited),
        ]
    );
    let listed = store
        .deposit_list(&store::DepositList {
            state: Some(DepositState::Ignored),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].deposit.reason.as_deref(), Some("dust"));
    // A reason too long, or empty, is refused.
    let mut bad = deposit("0x0d", &blocks(3, 1, "a", &first[2].hash)[0], 1);
    bad.ignored = Some(String::new());
    assert!(matches!(
        store
            .scan_commit(chain, &blocks(3, 1, "a", &first[2].hash), &[bad], at(2))
            .await,
        Err(StoreError::Invalid(_))
    ));
}

/// An ignored transfer (dust, zero value, one of our own top-ups) whose block a reorg takes
/// away is not on the chain any more: orphaned like a pending one (still with its reason, and
/// no event: the backend never heard of it), so the ledger stops counting its coins as held;
/// mined again, it is ignored again in its new block.
async fn an_ignored_transfer_leaves_with_its_block(db: &TestDb) {
    let store = db.store().await;
    let chain = Chain::Ethereum;
    store
        .webhook_subscribe(&[store::WebhookSubscription {
            endpoint: "backend".into(),
            events: vec!["deposit.*".into()],
        }])
        .await
        .unwrap();
    let first = blocks(0, 3, "a", "0x00");
    let mut dust = deposit("0x0b", &first[1], 3);
    dust.ignored = Some("dust".into());
    let mut kept = deposit("0x0a", &first[0], 4);
    kept.ignored = Some("dust".into());
    store
        .scan_commit(chain, &first, &[kept, dust.clone()], at(0))
        .await
        .unwrap();
    let held = |store: store::Store| async move {
        store
            .ledger_deposit_page(&store::LedgerPage {
                chain,
                after_id: 0,
                limit: 100,
            })
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.amount)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        held(store.clone()).await,
        [Amount::from_u128(4), Amount::from_u128(3)]
    );
    let undone = store.scan_rollback(chain, 0, at(1)).await.unwrap();
    assert_eq!((undone.orphaned, undone.reversed), (0, 0), "{undone:?}");
    assert_eq!(
        states(&store).await,
        vec![
            ("0x0a".into(), 0, DepositState::Ignored),
            ("0x0b".into(), 1, DepositState::Orphaned),
        ]
    );
    let rows = store.deposits_list(chain, None, 10).await.unwrap();
    let gone = rows.iter().find(|row| row.txid == "0x0b").unwrap();
    assert_eq!(gone.reason.as_deref(), Some("dust"));
    assert_eq!(held(store.clone()).await, [Amount::from_u128(4)]);
    // Mined again two blocks later: ignored there, counted again.
    let fork = blocks(1, 3, "b", &first[0].hash);
    let mut again = dust;
    again.block_number = 3;
    again.block_hash = fork[2].hash.clone();
    store
        .scan_commit(chain, &fork, &[again], at(2))
        .await
        .unwrap();
    assert_eq!(
        states(&store).await,
        vec![
            ("0x0a".into(), 0, DepositState::Ignored),
            ("0x0b".into(), 3, DepositState::Ignored),
        ]
    );
    assert_eq!(
        held(store.clone()).await,
        [Amount::from_u128(4), Amount::from_u128(3)]
    );
    let events = store
        .events_list(&store::EventList {
            limit: 100,
            ..store::EventList::default()
        })
        .await
        .unwrap();
    assert!(events.is_empty(), "{events:?}");
}

async fn a_revived_deposit_takes_every_field_from_its_new_block(db: &TestDb) {
    let store = db.store().await;
    let chain = Chain::Ethereum;
    let first = blocks(0, 3, "a", "0x00");
    let mut token = deposit("0x01", &first[2], 7);
    token.asset = "0x00000000000000000000000000000000000000c3".into();
    token.position = 1;
    store
        .scan_commit(chain, &first, &[token.clone()], at(0))
        .await
        .unwrap();
    store.scan_rollback(chain, 1, at(1)).await.unwrap();
    // Mined again where its logs paid another address another amount (a contract whose
    // state changed): the row must say what the new block says, nothing of the old one.
    let fork = blocks(2, 2, "b", &first[1].hash);
    let mut again = token.clone();
    again.address = "0x00000000000000000000000000000000000000d4".into();
    again.sender = None;
    again.amount = Amount::from_u128(9);
    again.block_number = fork[1].number;
    again.block_hash = fork[1].hash.clone();
    store
        .scan_commit(chain, &fork, &[again], at(2))
        .await
        .unwrap();
    let rows = store.deposits_list(chain, None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (
            row.address.as_str(),
            row.sender.as_deref(),
            row.amount,
            row.block_number,
            row.block_hash.as_str(),
            row.state
        ),
        (
            "0x00000000000000000000000000000000000000d4",
            None,
            Amount::from_u128(9),
            3,
            fork[1].hash.as_str(),
            DepositState::Pending
        )
    );
    // A credited deposit whose block goes is reversed for good: seen again, it stays
    // reversed and keeps what it said (a person decides).
    store.deposits_credit(chain, 3, at(3)).await.unwrap();
    store.scan_rollback(chain, 2, at(4)).await.unwrap();
    let fork = blocks(3, 1, "c", &fork[0].hash);
    let mut third = token.clone();
    third.amount = Amount::from_u128(1);
    third.block_number = 3;
    third.block_hash = fork[0].hash.clone();
    store
        .scan_commit(chain, &fork, &[third], at(5))
        .await
        .unwrap();
    let rows = store.deposits_list(chain, None, 10).await.unwrap();
    assert_eq!(
        (rows[0].state, rows[0].amount, rows[0].updated_at),
        (DepositState::Reversed, Amount::from_u128(9), Some(at(4)))
    );
}

async fn a_single_block_takes_more_deposits_than_a_range(db: &TestDb) {
    let store = db.store().await;
    let chain = Chain::Bitcoin;
    let range = blocks(0, 2, "a", "0x00");
    let many = |block: &ScannedBlock| -> Vec<DepositInsert> {
        (0..store::SCAN_COMMIT_DEPOSITS_MAX as u64 + 1)
            .map(|vout| DepositInsert {
                position: vout,
                ..deposit("0xaa", block, 1)
            })
            .collect()
    };
    assert!(matches!(
        store
            .scan_commit(chain, &range, &many(&range[0]), at(0))
            .await,
        Err(StoreError::Invalid(_))
    ));
    store
        .scan_commit(chain, &range[..1], &many(&range[0]), at(0))
        .await
        .unwrap();
    assert_eq!(store.scan_head(chain).await.unwrap().unwrap().number, 0);
}

async fn deposit_addresses_are_one_per_reference(db: &TestDb) {
    let store = db.store().await;
    let chain = Chain::Tron;
    let insert = |reference: &str, index: u32| store::DepositAddressInsert {
        chain,
        reference: reference.into(),
        index,
        address: format!("T-address-{index}"),
        actor: "test".into(),
        now: at(0),
    };
    assert_eq!(store.deposit_address_next_index(chain).await.unwrap(), 0);
    // Racing requests for one reference, each at the index it read: one address.
    let racing = (0..8).map(|_| {
        let store = store.clone();
        let insert = insert("user:1", 0);
        tokio::spawn(async move { store.deposit_address_insert(&insert).await.unwrap() })
    });
    let mut created = 0;
    for outcome in futures_util::future::join_all(racing).await {
        match outcome.unwrap() {
            store::DepositAddressInserted::Created(row) => {
                created += 1;
                assert_eq!((row.index, row.address.as_str()), (0, "T-address-0"));
            }
            store::DepositAddressInserted::Existing(row) => assert_eq!(row.index, 0),
            store::DepositAddressInserted::IndexTaken => panic!("the same reference"),
        }
    }
    assert_eq!(created, 1);
    // Another reference at a taken index is told to take the next one.
    assert_eq!(
        store
            .deposit_address_insert(&insert("user:2", 0))
            .await
            .unwrap(),
        store::DepositAddressInserted::IndexTaken
    );
    assert_eq!(store.deposit_address_next_index(chain).await.unwrap(), 1);
    assert!(matches!(
        store
            .deposit_address_insert(&insert("user:2", 1))
            .await
            .unwrap(),
        store::DepositAddressInserted::Created(_)
    ));
    // Another chain has its own indexes; bad input changes nothing.
    assert_eq!(
        store
            .deposit_address_next_index(Chain::Ethereum)
            .await
            .unwrap(),
        0
    );
    for bad in [
        insert(&"r".repeat(201), 5),
        insert("a\u{7}b", 5),
        insert("ok", 1 << 31),
    ] {
        assert!(matches!(
            store.deposit_address_insert(&bad).await,
            Err(StoreError::Invalid(_))
        ));
    }
    let page = |after_id| store::DepositAddressList {
        chain: Some(chain),
        after_id,
        limit: 1,
        ..Default::default()
    };
    let first = store.deposit_address_list(&page(None)).await.unwrap();
    assert_eq!(first[0].reference, "user:1");
    let second = store
        .deposit_address_list(&page(Some(first[0].id)))
        .await
        .unwrap();
    assert_eq!(second[0].reference, "user:2");
    assert!(
        store
            .deposit_address_list(&page(Some(second[0].id)))
            .await
            .unwrap()
            .is_empty()
    );
    // A deposit to an issued address is listed with its reference, and found by it.
    let block = blocks(0, 1, "a", "0x00");
    let mut paid = deposit("0x77", &block[0], 5);
    paid.address = "T-address-1".into();
    store
        .scan_commit(chain, &block, &[paid], at(1))
        .await
        .unwrap();
    let found = store
        .deposit_list(&store::DepositList {
            reference: Some("user:2".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].reference.as_deref(), Some("user:2"));
    assert_eq!(
        store
            .deposit_get(found[0].deposit.id)
            .await
            .unwrap()
            .unwrap(),
        found[0]
    );
}

async fn the_scan_lease_has_one_holder(db: &TestDb) {
    let store = db.store().await;
    let chain = Chain::Ethereum;
    let ttl = std::time::Duration::from_secs(10);
    assert!(store.scan_lease_take(chain, "a", ttl, at(0)).await.unwrap());
    assert!(!store.scan_lease_take(chain, "b", ttl, at(5)).await.unwrap());
    assert!(
        store.scan_lease_take(chain, "a", ttl, at(8)).await.unwrap(),
        "renewed"
    );
    assert!(
        !store
            .scan_lease_take(chain, "b", ttl, at(17))
            .await
            .unwrap()
    );
    assert!(
        store
            .scan_lease_take(chain, "b", ttl, at(19))
            .await
            .unwrap(),
        "expired"
    );
    assert!(
        !store
            .scan_lease_take(chain, "a", ttl, at(20))
            .await
            .unwrap()
    );
    assert!(
        store
            .scan_lease_take(Chain::Tron, "a", ttl, at(20))
            .await
            .unwrap()
    );
    store.scan_lease_release(chain, "a").await.unwrap();
    assert!(
        !store
            .scan_lease_take(chain, "a", ttl, at(21))
            .await
            .unwrap(),
        "not a's to give"
    );
    store.scan_lease_release(chain, "b").await.unwrap();
    assert!(
        store
            .scan_lease_take(chain, "a", ttl, at(21))
            .await
            .unwrap()
    );
}

/// Deposit events: detected when first seen (and when revived from an orphaned block),
/// confirmed when credited, orphaned or reversed when a reorg takes the block, each in the
/// change's own transaction, with its address's reference, in order per deposit; ignored
/// transfers tell nothing.
async fn deposit_changes_write_their_events(db: &TestDb) {
    let store = db.store().await;
    let chain = Chain::Ethereum;
    store
        .webhook_subscribe(&[store::WebhookSubscription {
            endpoint: "backend".into(),
            events: vec!["deposit.*".into()],
        }])
        .await
        .unwrap();
    store
        .deposit_address_insert(&store::DepositAddressInsert {
            chain,
            reference: "user:42".into(),
            index: 0,
            address: "0x00000000000000000000000000000000000000a1".into(),
            actor: "token:1:backend".into(),
            now: at(0),
        })
        .await
        .unwrap();
    let first = blocks(10, 4, "a", "0xa9");
    let mut dust = deposit("0x09", &first[1], 1);
    dust.ignored = Some("dust".into());
    let found = vec![
        deposit("0x01", &first[1], 5),
        deposit("0x02", &first[3], 7),
        dust,
    ];
    store
        .scan_commit(chain, &first, &found, at(1))
        .await
        .unwrap();
    assert_eq!(store.deposits_credit(chain, 11, at(2)).await.unwrap(), 1);
    store.scan_rollback(chain, 10, at(3)).await.unwrap();
    // 0x02 is mined again in the new fork.
    let second = blocks(11, 3, "b", "0xa10");
    store
        .scan_commit(chain, &second, &[deposit("0x02", &second[2], 7)], at(4))
        .await
        .unwrap();

    let events = store
        .events_list(&store::EventList {
            limit: 100,
            ..store::EventList::default()
        })
        .await
        .unwrap();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|event| {
            (
                event.payload["txid"].as_str().unwrap().to_string(),
                event.kind.clone(),
            )
        })
        .collect();
    let expect = |txid: &str, kind: &str| (txid.to_string(), kind.to_string());
    assert_eq!(
        seen,
        [
            expect("0x01", "deposit.detected"),
            expect("0x02", "deposit.detected"),
            expect("0x01", "deposit.confirmed"),
            expect("0x02", "deposit.orphaned"),
            expect("0x01", "deposit.reversed"),
            expect("0x02", "deposit.detected"),
        ]
    );
    let last = events.last().unwrap();
    assert_eq!(last.payload["reference"], "user:42");
    assert_eq!(last.payload["amount_base_units"], "7");
    assert_eq!(last.payload["block_number"], 13);
    assert_eq!(last.payload["block_hash"], "0xb13");
    assert_eq!(last.payload["state"], "pending");
    assert!(last.subject.starts_with("deposit:"));
    // Each with its delivery to the subscribed endpoint.
    let deliveries = store
        .webhook_deliveries(&store::DeliveryList {
            endpoint: Some("backend".into()),
            limit: 100,
            ..store::DeliveryList::default()
        })
        .await
        .unwrap();
    assert_eq!(deliveries.len(), events.len());
}

testkit::on_both_stores!(
    db: deposit_changes_write_their_events,
    commits_chain_and_reorgs_roll_back,
    bad_batches_change_nothing,
    ignored_transfers_are_kept_and_never_credited,
    an_ignored_transfer_leaves_with_its_block,
    a_revived_deposit_takes_every_field_from_its_new_block,
    a_single_block_takes_more_deposits_than_a_range,
    deposit_addresses_are_one_per_reference,
    the_scan_lease_has_one_holder
);
