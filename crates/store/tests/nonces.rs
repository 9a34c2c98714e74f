//! Nonce allocation on both stores: concurrent reservations get distinct, contiguous nonces;
//! the node's count is respected; a reservation abandoned by a crash is handed out again
//! (no gap), and its first holder can no longer bind it; bound nonces are never reused. Each
//! nonce is tied to its payout: a retry of the payout gets the same nonce back, whoever asks;
//! every transaction a nonce had is kept, and it is settled once, by which one was mined.

use chrono::{DateTime, TimeZone, Utc};
use domain::Chain;
use store::{
    NONCE_TXS_MAX, NonceBind, NonceReplace, NonceReserve, NonceSettle, NonceSettlement, NonceTxNew,
    NonceUnsettled, Store, StoreError,
};
use testkit::TestDb;

const ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

/// A reservation for payout `payout-{holder}`.
fn reserve(holder: &str, node_pending: u64, now: i64) -> NonceReserve {
    reserve_for(&format!("payout-{holder}"), holder, node_pending, now)
}

fn reserve_for(payout: &str, holder: &str, node_pending: u64, now: i64) -> NonceReserve {
    NonceReserve {
        chain: Chain::Ethereum,
        address: ADDRESS.into(),
        payout: payout.into(),
        node_pending,
        holder: holder.into(),
        lease_until: at(now + 30),
        now: at(now),
    }
}

async fn nonce(store: &Store, reserve: NonceReserve) -> u64 {
    store.nonce_reserve(&reserve).await.unwrap().nonce
}

fn tx(txid: &str) -> NonceTxNew {
    NonceTxNew {
        txid: txid.into(),
        raw: txid.as_bytes().to_vec(),
        fees: None,
    }
}

fn bind(nonce: u64, holder: &str, txid: &str) -> NonceBind {
    bind_for(nonce, holder, &format!("payout-{holder}"), txid)
}

fn bind_for(nonce: u64, holder: &str, payout: &str, txid: &str) -> NonceBind {
    NonceBind {
        chain: Chain::Ethereum,
        address: ADDRESS.into(),
        nonce,
        holder: holder.into(),
        payout: payout.into(),
        tx: tx(txid),
        now: at(0),
    }
}

async fn concurrent_reservations_are_distinct_and_contiguous(db: &TestDb) {
    let store = db.store().await;
    let mut tasks = Vec::new();
    for worker in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .nonce_reserve(&reserve(&format!("worker-{worker}"), 7, 0))
                .await
                .unwrap()
                .nonce
        }));
    }
    let mut nonces = Vec::new();
    for task in tasks {
        nonces.push(task.await.unwrap());
    }
    nonces.sort_unstable();
    assert_eq!(
        nonces,
        (7..57).collect::<Vec<u64>>(),
        "no duplicate, no gap"
    );
    // Transactions sent from elsewhere moved the node past the counter: it is respected.
    assert_eq!(nonce(&store, reserve("w1", 100, 0)).await, 100);
    assert_eq!(nonce(&store, reserve("w2", 90, 0)).await, 101);
}

async fn an_abandoned_reservation_fills_its_gap(db: &TestDb) {
    let store = db.store().await;
    let bind = |nonce: u64, holder: &'static str, txid: &'static str| {
        let store = store.clone();
        async move { store.nonce_bind(&bind(nonce, holder, txid)).await }
    };
    let crashed = nonce(&store, reserve("a", 0, 0)).await;
    assert_eq!(crashed, 0);
    // While a's lease holds, b gets the next one.
    let next = nonce(&store, reserve("b", 0, 10)).await;
    assert_eq!(next, 1);
    bind(1, "b", "0xbbb").await.unwrap();
    // a died before signing; its lease runs out; c gets nonce 0 back: no gap.
    let filled = nonce(&store, reserve("c", 0, 31)).await;
    assert_eq!(filled, 0);
    assert!(
        matches!(bind(0, "a", "0xaaa").await, Err(StoreError::Stale(_))),
        "a lost it"
    );
    bind(0, "c", "0xccc").await.unwrap();
    assert!(
        matches!(bind(0, "c", "0xddd").await, Err(StoreError::Stale(_))),
        "bound once"
    );
    // Bound nonces are never handed out again, whatever the leases.
    assert_eq!(nonce(&store, reserve("d", 0, 1_000)).await, 2);
    // A released reservation goes to the next caller at once.
    store
        .nonce_release(Chain::Ethereum, ADDRESS, 2, "d")
        .await
        .unwrap();
    assert_eq!(nonce(&store, reserve("e", 0, 1_001)).await, 2);
    assert!(matches!(
        store.nonce_release(Chain::Ethereum, ADDRESS, 2, "d").await,
        Err(StoreError::Stale(_))
    ));
    // Bad input changes nothing.
    let mut bad = reserve("", 0, 0);
    assert!(matches!(
        store.nonce_reserve(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    bad = reserve("f", u64::MAX, 0);
    assert!(matches!(
        store.nonce_reserve(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    bad = reserve("f", 0, 0);
    bad.lease_until = bad.now;
    assert!(matches!(
        store.nonce_reserve(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(nonce(&store, reserve("g", 0, 1_002)).await, 3);
}

async fn a_payout_holds_one_nonce_whoever_asks_again(db: &TestDb) {
    let store = db.store().await;
    // A worker reserves for payout P and dies before binding; the retry (another holder,
    // its lease still running) gets the same nonce and takes the reservation over.
    let first = store
        .nonce_reserve(&reserve_for("P", "h1", 0, 0))
        .await
        .unwrap();
    assert_eq!((first.nonce, first.is_bound()), (0, false));
    let retry = store
        .nonce_reserve(&reserve_for("P", "h2", 0, 1))
        .await
        .unwrap();
    assert_eq!((retry.nonce, retry.holder.as_str()), (0, "h2"));
    assert!(
        matches!(
            store.nonce_bind(&bind_for(0, "h1", "P", "0xp0")).await,
            Err(StoreError::Stale(_))
        ),
        "the first holder lost it"
    );
    assert!(
        matches!(
            store.nonce_bind(&bind_for(0, "h2", "Q", "0xp0")).await,
            Err(StoreError::Stale(_))
        ),
        "not for another payout"
    );
    store
        .nonce_bind(&bind_for(0, "h2", "P", "0xp0"))
        .await
        .unwrap();
    // Bound: a third try gets the nonce with its transaction, and nothing new.
    let bound = store
        .nonce_reserve(&reserve_for("P", "h3", 0, 2))
        .await
        .unwrap();
    assert_eq!(bound.nonce, 0);
    assert_eq!(bound.latest().unwrap().txid, "0xp0");
    assert_eq!(bound.latest().unwrap().raw, b"0xp0");
    assert_eq!(bound.holder, "h2", "a bound nonce is not taken over");
    assert_eq!(nonce(&store, reserve_for("Q", "h1", 0, 2)).await, 1);
    // The node's count passing a bound nonce drops nothing: only its settlement will.
    assert_eq!(nonce(&store, reserve_for("R", "h1", 5, 3)).await, 5);
    let held = store
        .nonce_get(Chain::Ethereum, "P")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.txs.len(), 1);
    // Q's reservation ran out (nonce 1 is below the node's count now: moot, dropped); R's
    // runs out at 33 and R asks again later: its own nonce, not a fresh one.
    assert_eq!(store.nonce_get(Chain::Ethereum, "Q").await.unwrap(), None);
    let again = store
        .nonce_reserve(&reserve_for("R", "h9", 5, 100))
        .await
        .unwrap();
    assert_eq!((again.nonce, again.holder.as_str()), (5, "h9"));
    // A payout's nonce belongs to one address.
    let mut elsewhere = reserve_for("P", "h1", 0, 3);
    elsewhere.address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into();
    assert!(matches!(
        store.nonce_reserve(&elsewhere).await,
        Err(StoreError::Conflict(_))
    ));
    // Bad payout keys change nothing.
    for payout in [String::new(), "x".repeat(201)] {
        assert!(matches!(
            store.nonce_reserve(&reserve_for(&payout, "h1", 0, 3)).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert_eq!(nonce(&store, reserve_for("S", "h1", 0, 3)).await, 6);
}

fn replace(nonce: u64, replaces: &str, txid: &str) -> NonceReplace {
    NonceReplace {
        chain: Chain::Ethereum,
        address: ADDRESS.into(),
        nonce,
        replaces: replaces.into(),
        tx: tx(txid),
        now: at(5),
    }
}

fn settle(nonce: u64, settlement: NonceSettlement) -> NonceSettle {
    NonceSettle {
        chain: Chain::Ethereum,
        address: ADDRESS.into(),
        nonce,
        settlement,
        now: at(9),
    }
}

fn mined(txid: &str) -> NonceSettlement {
    NonceSettlement::Mined { txid: txid.into() }
}

async fn unsettled(store: &Store) -> Vec<(u64, Vec<String>)> {
    unsettled_from(store, 0).await
}

async fn unsettled_from(store: &Store, from_nonce: u64) -> Vec<(u64, Vec<String>)> {
    store
        .nonce_unsettled(&NonceUnsettled {
            chain: Chain::Ethereum,
            address: ADDRESS.into(),
            from_nonce,
            limit: 100,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|held| (held.nonce, held.txs.into_iter().map(|tx| tx.txid).collect()))
        .collect()
}

async fn every_txid_is_kept_and_a_nonce_settles_once(db: &TestDb) {
    let store = db.store().await;
    for (holder, txid) in [("a", "0xa0"), ("b", "0xb1"), ("c", "0xc2")] {
        let nonce = nonce(&store, reserve(holder, 0, 0)).await;
        store.nonce_bind(&bind(nonce, holder, txid)).await.unwrap();
    }
    // An unbound reservation is not a transaction to watch.
    nonce(&store, reserve("d", 0, 0)).await;
    // A replacement adds a transaction and keeps the first; only from the latest one.
    store
        .nonce_replace(&replace(2, "0xc2", "0xc2bis"))
        .await
        .unwrap();
    assert!(matches!(
        store.nonce_replace(&replace(2, "0xc2", "0xc2ter")).await,
        Err(StoreError::Stale(_))
    ));
    assert!(matches!(
        store.nonce_replace(&replace(3, "0xd3", "0xd3bis")).await,
        Err(StoreError::Stale(_))
    ));
    assert!(
        matches!(
            store.nonce_replace(&replace(2, "0xc2bis", "0xa0")).await,
            Err(StoreError::Stale(_))
        ),
        "a txid is kept under one nonce"
    );
    store
        .nonce_replace(&replace(2, "0xc2bis", "0xc2ter"))
        .await
        .unwrap();
    assert_eq!(
        unsettled(&store).await,
        vec![
            (0, vec!["0xa0".into()]),
            (1, vec!["0xb1".into()]),
            (2, vec!["0xc2".into(), "0xc2bis".into(), "0xc2ter".into()]),
        ],
        "nothing dropped while undecided, every txid kept, oldest first"
    );
    assert_eq!(
        unsettled_from(&store, 2).await,
        vec![(2, vec!["0xc2".into(), "0xc2bis".into(), "0xc2ter".into()])],
        "from a nonce up"
    );
    // Settled by the one that was mined (here the first, not the latest); once.
    assert!(
        matches!(
            store.nonce_settle(&settle(2, mined("0xb1"))).await,
            Err(StoreError::Stale(_))
        ),
        "another nonce's txid"
    );
    store.nonce_settle(&settle(2, mined("0xc2"))).await.unwrap();
    assert!(matches!(
        store.nonce_settle(&settle(2, mined("0xc2ter"))).await,
        Err(StoreError::Stale(_))
    ));
    assert!(matches!(
        store
            .nonce_settle(&settle(2, NonceSettlement::Foreign))
            .await,
        Err(StoreError::Stale(_))
    ));
    assert!(
        matches!(
            store
                .nonce_replace(&replace(2, "0xc2ter", "0xc2quater"))
                .await,
            Err(StoreError::Stale(_))
        ),
        "a settled nonce takes no replacement"
    );
    store
        .nonce_settle(&settle(1, NonceSettlement::Foreign))
        .await
        .unwrap();
    assert!(
        matches!(
            store
                .nonce_settle(&settle(3, NonceSettlement::Foreign))
                .await,
            Err(StoreError::Stale(_))
        ),
        "an unbound nonce is not settled"
    );
    assert_eq!(unsettled(&store).await, vec![(0, vec!["0xa0".into()])]);
    let held = store
        .nonce_get(Chain::Ethereum, "payout-c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.settlement, Some(mined("0xc2")));
    assert_eq!(held.settled_at, Some(at(9)));
    let txids: Vec<&str> = held.txs.iter().map(|tx| tx.txid.as_str()).collect();
    assert_eq!(txids, ["0xc2", "0xc2bis", "0xc2ter"]);
    let foreign = store
        .nonce_get(Chain::Ethereum, "payout-b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(foreign.settlement, Some(NonceSettlement::Foreign));
    // A retry of a settled payout gets its settled nonce back, never a new one.
    let retried = store.nonce_reserve(&reserve("b", 0, 50)).await.unwrap();
    assert_eq!(
        (retried.nonce, retried.settlement),
        (1, Some(NonceSettlement::Foreign))
    );

    // At most NONCE_TXS_MAX transactions per nonce.
    let mut latest = "0xa0".to_string();
    for bump in 1..NONCE_TXS_MAX {
        let next = format!("0xa0-{bump}");
        store
            .nonce_replace(&replace(0, &latest, &next))
            .await
            .unwrap();
        latest = next;
    }
    assert!(matches!(
        store
            .nonce_replace(&replace(0, &latest, "0xa0-too-many"))
            .await,
        Err(StoreError::Conflict(_))
    ));

    // A nonce whose only transaction was refused for good is freed; one with a replacement
    // is not (the replaced bytes may be out).
    assert!(matches!(
        store
            .nonce_unbind(Chain::Ethereum, ADDRESS, 0, &latest)
            .await,
        Err(StoreError::Stale(_))
    ));
    let e = nonce(&store, reserve("e", 0, 60)).await;
    assert_eq!(e, 3, "d's reservation ran out: its gap is filled");
    store.nonce_bind(&bind(e, "e", "0xe4")).await.unwrap();
    store
        .nonce_unbind(Chain::Ethereum, ADDRESS, e, "0xe4")
        .await
        .unwrap();
    assert_eq!(nonce(&store, reserve("e", 0, 61)).await, e, "its own again");
    store.nonce_bind(&bind(e, "e", "0xe4bis")).await.unwrap();
    let d = nonce(&store, reserve("d", 0, 62)).await;
    // Bad input changes nothing.
    let mut empty = bind(d, "d", "0xd9");
    empty.tx.raw.clear();
    assert!(matches!(
        store.nonce_bind(&empty).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.nonce_bind(&bind(d, "d", "")).await,
        Err(StoreError::Invalid(_))
    ));
    let mut costly = bind(d, "d", "0xd3");
    costly.tx.fees = Some(store::NonceFees {
        max_fee_per_gas: u128::MAX,
        max_priority_fee_per_gas: 1,
    });
    assert!(matches!(
        store.nonce_bind(&costly).await,
        Err(StoreError::Invalid(_))
    ));
    let mut priced = bind(d, "d", "0xd3");
    priced.tx.fees = Some(store::NonceFees {
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 2,
    });
    store.nonce_bind(&priced).await.unwrap();
    let held = store
        .nonce_get(Chain::Ethereum, "payout-d")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.txs[0].fees, priced.tx.fees);
    assert_eq!(held.txs[0].created_at, at(0));
}

testkit::on_both_stores!(
    db: concurrent_reservations_are_distinct_and_contiguous,
    an_abandoned_reservation_fills_its_gap,
    a_payout_holds_one_nonce_whoever_asks_again,
    every_txid_is_kept_and_a_nonce_settles_once
);
