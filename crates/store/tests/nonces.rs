//! Nonce allocation on both stores: concurrent reservations get distinct, contiguous nonces;
//! the node's count is respected; a reservation abandoned by a crash is handed out again
//! (no gap), and its first holder can no longer bind it; bound nonces are never reused.

use chrono::{DateTime, TimeZone, Utc};
use domain::Chain;
use store::{NonceReserve, StoreError};
use testkit::TestDb;

const ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn reserve(holder: &str, node_pending: u64, now: i64) -> NonceReserve {
    NonceReserve {
        chain: Chain::Ethereum,
        address: ADDRESS.into(),
        node_pending,
        holder: holder.into(),
        lease_until: at(now + 30),
        now: at(now),
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
    assert_eq!(
        store.nonce_reserve(&reserve("w", 100, 0)).await.unwrap(),
        100
    );
    assert_eq!(
        store.nonce_reserve(&reserve("w", 90, 0)).await.unwrap(),
        101
    );
}

async fn an_abandoned_reservation_fills_its_gap(db: &TestDb) {
    let store = db.store().await;
    let bind = |nonce: u64, holder: &'static str, txid: &'static str| {
        let store = store.clone();
        async move {
            store
                .nonce_bind(
                    Chain::Ethereum,
                    ADDRESS,
                    nonce,
                    holder,
                    txid,
                    txid.as_bytes(),
                )
                .await
        }
    };
    let crashed = store.nonce_reserve(&reserve("a", 0, 0)).await.unwrap();
    assert_eq!(crashed, 0);
    // While a's lease holds, b gets the next one.
    let next = store.nonce_reserve(&reserve("b", 0, 10)).await.unwrap();
    assert_eq!(next, 1);
    bind(1, "b", "0xbbb").await.unwrap();
    // a died before signing; its lease runs out; c gets nonce 0 back: no gap.
    let filled = store.nonce_reserve(&reserve("c", 0, 31)).await.unwrap();
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
    assert_eq!(
        store.nonce_reserve(&reserve("d", 0, 1_000)).await.unwrap(),
        2
    );
    // A released reservation goes to the next caller at once.
    store
        .nonce_release(Chain::Ethereum, ADDRESS, 2, "d")
        .await
        .unwrap();
    assert_eq!(
        store.nonce_reserve(&reserve("e", 0, 1_001)).await.unwrap(),
        2
    );
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
    assert_eq!(
        store.nonce_reserve(&reserve("g", 0, 1_002)).await.unwrap(),
        3
    );
}

async fn bound_bytes_are_kept_until_mined_and_follow_replacements(db: &TestDb) {
    let store = db.store().await;
    for (holder, txid) in [("a", "0xa0"), ("b", "0xb1"), ("c", "0xc2")] {
        let nonce = store.nonce_reserve(&reserve(holder, 0, 0)).await.unwrap();
        store
            .nonce_bind(
                Chain::Ethereum,
                ADDRESS,
                nonce,
                holder,
                txid,
                &[nonce as u8; 3],
            )
            .await
            .unwrap();
    }
    // An unbound reservation is not a transaction to watch.
    store.nonce_reserve(&reserve("d", 0, 0)).await.unwrap();
    let unmined = store
        .nonce_unmined(Chain::Ethereum, ADDRESS, 1)
        .await
        .unwrap();
    let seen: Vec<(u64, &str, &[u8])> = unmined
        .iter()
        .map(|row| (row.nonce, row.txid.as_str(), row.raw.as_slice()))
        .collect();
    assert_eq!(
        seen,
        vec![(1, "0xb1", &[1u8, 1, 1][..]), (2, "0xc2", &[2u8, 2, 2][..])],
        "nonce 0 is mined: forgotten"
    );
    // A replacement takes the nonce over, bytes and all; only from the transaction it replaces.
    store
        .nonce_replace(Chain::Ethereum, ADDRESS, 2, "0xc2", "0xc2bis", b"faster")
        .await
        .unwrap();
    assert!(matches!(
        store
            .nonce_replace(Chain::Ethereum, ADDRESS, 2, "0xc2", "0xc2ter", b"again")
            .await,
        Err(StoreError::Stale(_))
    ));
    let unmined = store
        .nonce_unmined(Chain::Ethereum, ADDRESS, 2)
        .await
        .unwrap();
    assert_eq!(unmined.len(), 1);
    assert_eq!(
        (unmined[0].txid.as_str(), unmined[0].raw.as_slice()),
        ("0xc2bis", &b"faster"[..])
    );
    // A transaction refused for good gives its nonce back: the next reservation fills it.
    store
        .nonce_unbind(Chain::Ethereum, ADDRESS, 2, "0xc2bis")
        .await
        .unwrap();
    assert!(matches!(
        store
            .nonce_unbind(Chain::Ethereum, ADDRESS, 2, "0xc2bis")
            .await,
        Err(StoreError::Stale(_))
    ));
    assert_eq!(
        store.nonce_reserve(&reserve("e", 2, 1)).await.unwrap(),
        2,
        "the freed nonce first"
    );
    store
        .nonce_bind(Chain::Ethereum, ADDRESS, 2, "e", "0xe2", b"again")
        .await
        .unwrap();
    // Bad input changes nothing.
    assert!(matches!(
        store
            .nonce_bind(Chain::Ethereum, ADDRESS, 3, "d", "0xd3", &[])
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .nonce_bind(Chain::Ethereum, ADDRESS, 3, "d", "", b"x")
            .await,
        Err(StoreError::Invalid(_))
    ));
    let unmined = store
        .nonce_unmined(Chain::Ethereum, ADDRESS, 0)
        .await
        .unwrap();
    assert_eq!(unmined.len(), 1);
    assert_eq!(unmined[0].txid, "0xe2");
}

testkit::on_both_stores!(
    db: concurrent_reservations_are_distinct_and_contiguous,
    an_abandoned_reservation_fills_its_gap,
    bound_bytes_are_kept_until_mined_and_follow_replacements
);
