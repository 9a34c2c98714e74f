//! Consolidation sweeps on both stores: a sweep is stored priced, one open sweep per address
//! (a second start answers with the open one and writes nothing), moved only along the
//! table by compare-and-set (a stale or refused move changes nothing), its txids and fees
//! kept, and listed open oldest first or all newest first; bad input is refused. A TRON
//! sweep's energy (migration 0023): delegated with its reclaim pending until a compare-and-set
//! says it is done, listed by `sweep_reclaims` only once the sweep ended, or burned.

use chrono::{DateTime, TimeZone, Utc};
use domain::{Amount, Chain};
use store::{
    EnergySource, ReclaimState, Store, StoreError, SweepAdvance, SweepEnergy, SweepInsert,
    SweepInserted, SweepKind, SweepState,
};
use testkit::TestDb;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

const A: &str = "0x52908400098527886E0F7030069857D2E4169EE7";
const B: &str = "0x8617E340B3D01FA5F11F306F4090FD50E238070D";
const HOT: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn insert(address: &str, top_up: Option<u128>, now: DateTime<Utc>) -> SweepInsert {
    SweepInsert {
        chain: Chain::Ethereum,
        kind: SweepKind::Sweep,
        address: address.into(),
        address_index: 7,
        asset: "0xdAC17F958D2ee523a2206206994597C13D831ec7".into(),
        // Past 2^64: amounts are text in base units.
        amount: Amount::from_u128(123_456_789_012_345_678_901_234),
        destination: HOT.into(),
        price_per_gas: 30_000_000_000,
        gas_limit: 65_000,
        top_up: top_up.map(|wei| {
            (
                "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
                Amount::from_u128(wei),
            )
        }),
        energy: None,
        now,
    }
}

async fn sweeps(store: &Store) {
    let created = match store
        .sweep_insert(&insert(A, Some(1_950_000_000_000_000), at(0)))
        .await
        .unwrap()
    {
        SweepInserted::Created(row) => row,
        other => panic!("{other:?}"),
    };
    assert_eq!(created.state, SweepState::ToppingUp);
    assert_eq!(
        created.amount,
        Amount::from_u128(123_456_789_012_345_678_901_234)
    );
    assert_eq!(
        created.top_up_amount,
        Some(Amount::from_u128(1_950_000_000_000_000))
    );
    assert_eq!(
        (
            created.price_per_gas,
            created.gas_limit,
            created.address_index
        ),
        (30_000_000_000, 65_000, 7)
    );
    assert_eq!(created.created_at, at(0));
    assert_eq!(created.top_up_payout(), format!("gas:{}", created.id));
    assert_eq!(created.sweep_payout(), format!("sweep:{}", created.id));
    // One open sweep per address: a second start answers with it and writes nothing.
    let again = store.sweep_insert(&insert(A, None, at(1))).await.unwrap();
    assert_eq!(again, SweepInserted::Open(created.clone()));
    // Another address has its own; without a top-up it starts sweeping.
    let other = match store.sweep_insert(&insert(B, None, at(2))).await.unwrap() {
        SweepInserted::Created(row) => row,
        other => panic!("{other:?}"),
    };
    assert_eq!(other.state, SweepState::Sweeping);
    assert_eq!(other.top_up_from, None);

    // Moves: only along the table, only from the state the row is in.
    let refused = store
        .sweep_advance(&SweepAdvance::new(
            created.id,
            SweepState::ToppingUp,
            SweepState::Swept,
            at(3),
        ))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    let stale = store
        .sweep_advance(&SweepAdvance::new(
            created.id,
            SweepState::Sweeping,
            SweepState::Swept,
            at(3),
        ))
        .await;
    assert!(matches!(stale, Err(StoreError::Stale(_))), "{stale:?}");
    let mut noted = SweepAdvance::new(
        created.id,
        SweepState::ToppingUp,
        SweepState::ToppingUp,
        at(4),
    );
    noted.error = Some("the node is away".into());
    assert_eq!(
        store.sweep_advance(&noted).await.unwrap().error.as_deref(),
        Some("the node is away")
    );
    let mut topped = SweepAdvance::new(
        created.id,
        SweepState::ToppingUp,
        SweepState::Sweeping,
        at(5),
    );
    topped.top_up_txid = Some("0xaa".into());
    topped.top_up_fee = Some(Amount::from_u128(21_000));
    topped.error = Some(String::new());
    let row = store.sweep_advance(&topped).await.unwrap();
    assert_eq!(
        (row.state, row.error.as_deref(), row.top_up_txid.as_deref()),
        (SweepState::Sweeping, None, Some("0xaa"))
    );
    assert_eq!(row.updated_at, at(5));
    let mut swept = SweepAdvance::new(created.id, SweepState::Sweeping, SweepState::Swept, at(6));
    swept.sweep_txid = Some("0xbb".into());
    swept.sweep_fee = Some(Amount::from_u128(50_000));
    let row = store.sweep_advance(&swept).await.unwrap();
    assert_eq!(row.state, SweepState::Swept);
    // Fields set earlier are kept.
    assert_eq!(
        (row.top_up_txid.as_deref(), row.sweep_txid.as_deref()),
        (Some("0xaa"), Some("0xbb"))
    );
    assert_eq!(row.cost(), Amount::from_u128(71_000));
    // Ended: no move leaves `swept`, and the address may be swept again.
    let after = store
        .sweep_advance(&SweepAdvance::new(
            created.id,
            SweepState::Swept,
            SweepState::Failed,
            at(7),
        ))
        .await;
    assert!(matches!(after, Err(StoreError::Invalid(_))), "{after:?}");
    let next = store.sweep_insert(&insert(A, None, at(8))).await.unwrap();
    assert!(
        matches!(next, SweepInserted::Created(ref row) if row.id > other.id),
        "{next:?}"
    );

    let open: Vec<i64> = store
        .sweep_open(Chain::Ethereum, 10)
        .await
        .unwrap()
        .iter()
        .map(|row| row.id)
        .collect();
    let SweepInserted::Created(next) = next else {
        unreachable!()
    };
    assert_eq!(open, vec![other.id, next.id], "open, oldest first");
    let all: Vec<i64> = store
        .sweep_list(Chain::Ethereum, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|row| row.id)
        .collect();
    assert_eq!(all, vec![next.id, other.id, created.id], "newest first");
    let page: Vec<i64> = store
        .sweep_list(Chain::Ethereum, Some(other.id), 10)
        .await
        .unwrap()
        .iter()
        .map(|row| row.id)
        .collect();
    assert_eq!(page, vec![created.id]);
    assert!(
        store
            .sweep_list(Chain::Tron, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.sweep_get(created.id).await.unwrap().unwrap().state,
        SweepState::Swept
    );
    assert!(store.sweep_get(-1).await.unwrap().is_none());

    // A transfer to the cold address: its own payout key, never a top-up.
    let mut cold = insert(HOT, None, at(9));
    cold.kind = SweepKind::Cold;
    cold.destination = B.into();
    let SweepInserted::Created(cold_row) = store.sweep_insert(&cold).await.unwrap() else {
        panic!("a new cold transfer")
    };
    assert_eq!(
        (cold_row.kind, cold_row.state),
        (SweepKind::Cold, SweepState::Sweeping)
    );
    assert_eq!(cold_row.sweep_payout(), format!("cold:{}", cold_row.id));
    let mut cold_top_up = insert("0x0000000000000000000000000000000000000003", Some(5), at(9));
    cold_top_up.kind = SweepKind::Cold;
    assert!(matches!(
        store.sweep_insert(&cold_top_up).await,
        Err(StoreError::Invalid(_))
    ));

    // Bad input changes nothing.
    let mut zero = insert(B, None, at(9));
    zero.amount = Amount::ZERO;
    assert!(matches!(
        store.sweep_insert(&zero).await,
        Err(StoreError::Invalid(_))
    ));
    let mut no_gas = insert("0x0000000000000000000000000000000000000001", None, at(9));
    no_gas.gas_limit = 0;
    assert!(matches!(
        store.sweep_insert(&no_gas).await,
        Err(StoreError::Invalid(_))
    ));
    let zero_top_up = insert("0x0000000000000000000000000000000000000002", Some(0), at(9));
    assert!(matches!(
        store.sweep_insert(&zero_top_up).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.sweep_list(Chain::Ethereum, None, 0).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store
            .sweep_list(Chain::Ethereum, None, 100)
            .await
            .unwrap()
            .len(),
        4
    );
}

const DEPOSIT: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";
const STAKER: &str = "TMVQGm1qAQYVdetCeGRRkTWYYrLXuHK2HC";

fn tron_insert(energy: Option<SweepEnergy>, top_up: Option<u128>) -> SweepInsert {
    SweepInsert {
        chain: Chain::Tron,
        kind: SweepKind::Sweep,
        address: DEPOSIT.into(),
        address_index: 3,
        asset: "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t".into(),
        amount: Amount::from_u128(25_000_000),
        destination: "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t".into(),
        price_per_gas: 420,
        gas_limit: 29_631,
        top_up: top_up.map(|sun| (STAKER.into(), Amount::from_u128(sun))),
        energy,
        now: at(0),
    }
}

async fn energy(store: &Store) {
    // Bad input: a delegation without its staking account, a burn with one, a cold transfer
    // with energy of its own; nothing is written.
    for energy in [
        SweepEnergy {
            source: EnergySource::Delegation,
            delegate: None,
        },
        SweepEnergy {
            source: EnergySource::Burn,
            delegate: Some((STAKER.into(), 400_000_000)),
        },
        SweepEnergy {
            source: EnergySource::Delegation,
            delegate: Some((STAKER.into(), 0)),
        },
    ] {
        let refused = store
            .sweep_insert(&tron_insert(Some(energy), None))
            .await
            .unwrap_err();
        assert!(matches!(refused, StoreError::Invalid(_)), "{refused:?}");
    }
    let mut cold = tron_insert(
        Some(SweepEnergy {
            source: EnergySource::Burn,
            delegate: None,
        }),
        None,
    );
    cold.kind = SweepKind::Cold;
    assert!(matches!(
        store.sweep_insert(&cold).await.unwrap_err(),
        StoreError::Invalid(_)
    ));
    assert!(
        store
            .sweep_list(Chain::Tron, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let delegated = SweepEnergy {
        source: EnergySource::Delegation,
        delegate: Some((STAKER.into(), 400_000_000)),
    };
    let SweepInserted::Created(row) = store
        .sweep_insert(&tron_insert(Some(delegated), Some(1)))
        .await
        .unwrap()
    else {
        panic!("not created")
    };
    assert_eq!(row.energy_source, Some(EnergySource::Delegation));
    assert_eq!(row.delegate_from.as_deref(), Some(STAKER));
    assert_eq!(row.delegate_balance, Some(400_000_000));
    assert_eq!(row.reclaim_state, Some(ReclaimState::Pending));
    assert_eq!(row.delegate_payout(), format!("delegate:{}", row.id));
    assert_eq!(row.reclaim_payout(), format!("reclaim:{}", row.id));
    // Open: not a reclaim yet.
    assert!(
        store
            .sweep_reclaims(Chain::Tron, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mut advance = SweepAdvance::new(row.id, row.state, SweepState::Sweeping, at(1));
    advance.top_up_txid = Some("aa".into());
    advance.top_up_fee = Some(Amount::from_u128(1_100_000));
    advance.delegate_txid = Some("bb".into());
    advance.delegate_fee = Some(Amount::ZERO);
    let row = store.sweep_advance(&advance).await.unwrap();
    let mut advance = SweepAdvance::new(row.id, row.state, SweepState::Swept, at(2));
    advance.sweep_txid = Some("cc".into());
    advance.sweep_fee = Some(Amount::from_u128(345_000));
    advance.energy_used = Some(29_631);
    advance.bandwidth_used = Some(0);
    let row = store.sweep_advance(&advance).await.unwrap();
    assert_eq!(
        (row.energy_used, row.bandwidth_used),
        (Some(29_631), Some(0))
    );
    let reclaims = store.sweep_reclaims(Chain::Tron, 10).await.unwrap();
    assert_eq!(reclaims, vec![row.clone()]);
    // The reclaim: a compare-and-set from pending, once.
    let mut done = SweepAdvance::new(row.id, SweepState::Swept, SweepState::Swept, at(3));
    done.reclaim_txid = Some("dd".into());
    done.reclaim_fee = Some(Amount::from_u128(7));
    done.reclaim_done = true;
    let row = store.sweep_advance(&done).await.unwrap();
    assert_eq!(row.reclaim_state, Some(ReclaimState::Done));
    assert_eq!(row.reclaim_txid.as_deref(), Some("dd"));
    // Every fee counts in the cost: top-up, delegation, sweep, reclaim.
    assert_eq!(row.cost(), Amount::from_u128(1_100_000 + 345_000 + 7));
    assert!(matches!(
        store.sweep_advance(&done).await.unwrap_err(),
        StoreError::Stale(_)
    ));
    assert!(
        store
            .sweep_reclaims(Chain::Tron, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Energy burned: no delegation, nothing to reclaim.
    let SweepInserted::Created(burned) = store
        .sweep_insert(&tron_insert(
            Some(SweepEnergy {
                source: EnergySource::Burn,
                delegate: None,
            }),
            Some(12_500_000),
        ))
        .await
        .unwrap()
    else {
        panic!("not created")
    };
    assert_eq!(burned.energy_source, Some(EnergySource::Burn));
    assert_eq!((burned.delegate_from, burned.reclaim_state), (None, None));
}

#[tokio::test]
async fn energy_on_postgres() {
    let db = TestDb::postgres().await;
    energy(&db.store().await).await;
}

#[tokio::test]
async fn energy_on_sqlite() {
    let db = TestDb::sqlite();
    energy(&db.store().await).await;
}

#[tokio::test]
async fn sweeps_on_postgres() {
    let db = TestDb::postgres().await;
    sweeps(&db.store().await).await;
}

#[tokio::test]
async fn sweeps_on_sqlite() {
    let db = TestDb::sqlite();
    sweeps(&db.store().await).await;
}

/// The views of the API, the dashboard and `/metrics`: every chain or one, every state or
/// one, newest first with paging; counts per chain and state; the oldest open sweep and how
/// many open ones have an error noted.
async fn sweep_views(store: &Store) {
    assert_eq!(
        store.sweep_stats().await.unwrap(),
        store::SweepStats::default()
    );
    let mut ids = Vec::new();
    for (n, address) in [A, B, "0x0000000000000000000000000000000000000004"]
        .into_iter()
        .enumerate()
    {
        let top_up = (n == 0).then_some(5);
        let SweepInserted::Created(row) = store
            .sweep_insert(&insert(address, top_up, at(10 * n as i64)))
            .await
            .unwrap()
        else {
            panic!("a new sweep")
        };
        ids.push(row.id);
    }
    let mut tron = insert("TJRabPrwbZy45sbavfcjinPJC18kjpRTv8", None, at(5));
    tron.chain = Chain::Tron;
    tron.asset = "native".into();
    let SweepInserted::Created(tron) = store.sweep_insert(&tron).await.unwrap() else {
        panic!("a new TRON sweep")
    };
    // B's sweep is swept; the third's step failed once (noted, still open).
    let mut swept = SweepAdvance::new(ids[1], SweepState::Sweeping, SweepState::Swept, at(30));
    swept.sweep_txid = Some("0xab".into());
    swept.sweep_fee = Some(Amount::from_u128(21_000));
    store.sweep_advance(&swept).await.unwrap();
    let mut noted = SweepAdvance::new(ids[2], SweepState::Sweeping, SweepState::Sweeping, at(31));
    noted.error = Some("the node refused it".into());
    store.sweep_advance(&noted).await.unwrap();

    let list = |chain, state, before_id, limit| store::SweepList {
        chain,
        state,
        before_id,
        limit,
    };
    let found = |rows: Vec<store::SweepRow>| rows.iter().map(|row| row.id).collect::<Vec<_>>();
    assert_eq!(
        found(
            store
                .sweep_search(&list(None, None, None, 100))
                .await
                .unwrap()
        ),
        vec![tron.id, ids[2], ids[1], ids[0]]
    );
    assert_eq!(
        found(
            store
                .sweep_search(&list(
                    Some(Chain::Ethereum),
                    Some(SweepState::Sweeping),
                    None,
                    100
                ))
                .await
                .unwrap()
        ),
        vec![ids[2]]
    );
    assert_eq!(
        found(
            store
                .sweep_search(&list(Some(Chain::Tron), None, None, 100))
                .await
                .unwrap()
        ),
        vec![tron.id]
    );
    // Paging: two, then what is below the second.
    let first = found(
        store
            .sweep_search(&list(None, None, None, 2))
            .await
            .unwrap(),
    );
    assert_eq!(first, vec![tron.id, ids[2]]);
    assert_eq!(
        found(
            store
                .sweep_search(&list(None, None, Some(ids[2]), 2))
                .await
                .unwrap()
        ),
        vec![ids[1], ids[0]]
    );
    for limit in [0, store::SWEEPS_LIST_MAX + 1] {
        assert!(matches!(
            store.sweep_search(&list(None, None, None, limit)).await,
            Err(StoreError::Invalid(_))
        ));
    }

    let mut stats = store.sweep_stats().await.unwrap();
    stats
        .counts
        .sort_by_key(|(chain, state, _)| (chain.as_str(), state.as_str()));
    assert_eq!(
        stats.counts,
        vec![
            (Chain::Ethereum, SweepState::Sweeping, 1),
            (Chain::Ethereum, SweepState::Swept, 1),
            (Chain::Ethereum, SweepState::ToppingUp, 1),
            (Chain::Tron, SweepState::Sweeping, 1),
        ]
    );
    stats.open.sort_by_key(|(chain, _, _)| chain.as_str());
    // Ethereum's oldest open one is A's (stored at 0), one open with an error; TRON's at 5.
    assert_eq!(
        stats.open,
        vec![(Chain::Ethereum, at(0), 1), (Chain::Tron, at(5), 0)]
    );
}

#[tokio::test]
async fn sweep_views_on_postgres() {
    let db = TestDb::postgres().await;
    sweep_views(&db.store().await).await;
}

#[tokio::test]
async fn sweep_views_on_sqlite() {
    let db = TestDb::sqlite();
    sweep_views(&db.store().await).await;
}
