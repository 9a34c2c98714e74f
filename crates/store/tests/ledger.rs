//! The ledger's rows on both stores: the deposits whose funds are on the chain (pending,
//! credited and ignored ones of a value; never orphaned, reversed or zero-value ones) and the
//! withdrawals that may have been signed, read a page at a time in id order; adjustments
//! recorded with their audit entry in one transaction, bad ones changing nothing; a chain's
//! reconciliation replacing its previous one, never another chain's.

use chrono::{DateTime, TimeZone, Utc};
use domain::{Amount, Chain, WithdrawalState};
use store::{
    AuditList, DepositInsert, DepositState, LedgerAdjustmentInsert, LedgerCheck, LedgerDirection,
    LedgerPage, ScannedBlock, Store, StoreError, WithdrawalCreate, WithdrawalCreated,
    WithdrawalTransition,
};
use testkit::TestDb;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

const HOT: &str = "0x00000000000000000000000000000000000000f1";
const ALICE: &str = "0x00000000000000000000000000000000000000a1";

fn block(number: u64, fork: &str) -> ScannedBlock {
    ScannedBlock {
        number,
        hash: format!("0x{fork}{number}"),
        parent_hash: if number == 0 {
            "0xgenesis".into()
        } else {
            format!("0xa{}", number - 1)
        },
    }
}

fn deposit(txid: &str, block: &ScannedBlock, amount: u128, ignored: Option<&str>) -> DepositInsert {
    DepositInsert {
        txid: txid.into(),
        asset: "native".into(),
        position: 0,
        address: ALICE.into(),
        sender: None,
        amount: Amount::from_u128(amount),
        block_number: block.number,
        block_hash: block.hash.clone(),
        ignored: ignored.map(str::to_string),
    }
}

fn page(chain: Chain, after_id: i64, limit: u32) -> LedgerPage {
    LedgerPage {
        chain,
        after_id,
        limit,
    }
}

async fn deposits_on_the_chain_are_read_in_pages(db: &TestDb) {
    let store = db.store().await;
    let chain = Chain::Ethereum;
    let (b0, b1, b2) = (block(0, "a"), block(1, "a"), block(2, "a"));
    store
        .scan_commit(
            chain,
            &[b0.clone(), b1.clone(), b2.clone()],
            &[
                deposit("0x01", &b0, 100, None),
                deposit("0x02", &b0, 0, Some("zero value")),
                deposit("0x03", &b1, 7, Some("dust")),
                deposit("0x04", &b1, 300, None),
                deposit("0x05", &b2, 500, None),
            ],
            at(0),
        )
        .await
        .unwrap();
    // 0x01 and 0x04 credited (through block 1); block 2 leaves the chain after 0x05 was
    // credited too: 0x05 reversed, its funds no longer on the chain.
    store.deposits_credit(chain, 2, at(1)).await.unwrap();
    let rollback = store.scan_rollback(chain, 1, at(2)).await.unwrap();
    assert_eq!(rollback.reversed, 1);
    let b2 = block(2, "b");
    store
        .scan_commit(
            chain,
            std::slice::from_ref(&b2),
            &[deposit("0x06", &b2, 40, None)],
            at(3),
        )
        .await
        .unwrap();

    let all = store
        .ledger_deposit_page(&page(chain, 0, 100))
        .await
        .unwrap();
    let seen: Vec<(&str, DepositState, Amount)> = all
        .iter()
        .map(|row| (row.address.as_str(), row.state, row.amount))
        .collect();
    assert_eq!(
        seen,
        [
            (ALICE, DepositState::Credited, Amount::from_u128(100)),
            (ALICE, DepositState::Ignored, Amount::from_u128(7)),
            (ALICE, DepositState::Credited, Amount::from_u128(300)),
            (ALICE, DepositState::Pending, Amount::from_u128(40)),
        ],
        "no zero-value, no reversed deposit"
    );
    // Pages: two, then the rest after the last id seen, then none.
    let first = store.ledger_deposit_page(&page(chain, 0, 2)).await.unwrap();
    assert_eq!(first, all[..2]);
    let rest = store
        .ledger_deposit_page(&page(chain, first[1].id, 100))
        .await
        .unwrap();
    assert_eq!(rest, all[2..]);
    let none = store
        .ledger_deposit_page(&page(chain, all[3].id, 100))
        .await
        .unwrap();
    assert!(none.is_empty());
    // Another chain has none; a page must be bounded.
    assert!(
        store
            .ledger_deposit_page(&page(Chain::Tron, 0, 100))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.ledger_deposit_page(&page(chain, 0, 0)).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.ledger_deposit_page(&page(chain, 0, 1_000_000)).await,
        Err(StoreError::Invalid(_))
    ));
}

fn request(key: &str, asset: &str, amount: &str) -> WithdrawalCreate {
    WithdrawalCreate {
        idempotency_key: key.into(),
        request_hash: "a".repeat(64),
        reference: "user:7".into(),
        chain: Chain::Ethereum,
        asset: asset.into(),
        destination: "0x52908400098527886E0F7030069857D2E4169EE7".into(),
        amount: amount.into(),
        actor: "token:1:backend".into(),
        job: None,
        approval: false,
        limits: vec![],
        destination_rule: None,
        now: at(0),
    }
}

async fn create(store: &Store, key: &str, asset: &str, amount: &str) -> i64 {
    match store
        .withdrawal_create(&request(key, asset, amount))
        .await
        .unwrap()
    {
        WithdrawalCreated::Created(row) => row.id,
        other => panic!("{other:?}"),
    }
}

async fn walk(store: &Store, id: i64, states: &[WithdrawalState], fee: Option<&str>) {
    for pair in states.windows(2) {
        let mut transition = WithdrawalTransition::new(id, pair[0], pair[1], "worker", at(5));
        if pair[1] != WithdrawalState::Processing {
            transition.txid = Some(format!("0x{id:064x}"));
        }
        if matches!(
            pair[1],
            WithdrawalState::Completed | WithdrawalState::ManualReview
        ) {
            transition.fee = fee.map(str::to_string);
        }
        store.withdrawal_transition(&transition).await.unwrap();
    }
}

async fn withdrawals_that_may_have_been_signed(db: &TestDb) {
    use WithdrawalState::*;
    let store = db.store().await;
    let waiting = create(&store, "w-1", "ETH", "1000").await;
    let paid = create(&store, "w-2", "USDT", "2000").await;
    walk(
        &store,
        paid,
        &[Pending, Processing, Broadcast, Completed],
        Some("21"),
    )
    .await;
    let flying = create(&store, "w-3", "ETH", "3000").await;
    walk(&store, flying, &[Pending, Processing, Broadcast], None).await;
    let canceled = create(&store, "w-4", "ETH", "4000").await;
    store
        .withdrawal_cancel(canceled, "token:1:backend", at(6))
        .await
        .unwrap();
    let landed_failed = create(&store, "w-5", "ETH", "5000").await;
    walk(
        &store,
        landed_failed,
        &[Pending, Processing, Broadcast, ManualReview],
        Some("33"),
    )
    .await;

    let rows = store
        .ledger_withdrawal_page(&page(Chain::Ethereum, 0, 100))
        .await
        .unwrap();
    let seen: Vec<(i64, &str, Amount, Option<Amount>, WithdrawalState)> = rows
        .iter()
        .map(|row| (row.id, row.asset.as_str(), row.amount, row.fee, row.state))
        .collect();
    assert_eq!(
        seen,
        [
            (
                paid,
                "USDT",
                Amount::from_u128(2000),
                Some(Amount::from_u128(21)),
                Completed
            ),
            (flying, "ETH", Amount::from_u128(3000), None, Broadcast),
            (
                landed_failed,
                "ETH",
                Amount::from_u128(5000),
                Some(Amount::from_u128(33)),
                ManualReview
            ),
        ],
        "neither the pending {waiting} nor the canceled {canceled}"
    );
    assert!(rows[0].txid.is_some());
    let after = store
        .ledger_withdrawal_page(&page(Chain::Ethereum, paid, 1))
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, flying);
}

fn adjustment(amount: u128, reason: &str) -> LedgerAdjustmentInsert {
    LedgerAdjustmentInsert {
        chain: Chain::Ethereum,
        address: HOT.into(),
        asset: "ETH".into(),
        direction: LedgerDirection::In,
        amount: Amount::from_u128(amount),
        reason: reason.into(),
        actor: "token:2:admin".into(),
        now: at(10),
    }
}

async fn adjustments(store: &Store) -> Vec<store::LedgerAdjustmentRow> {
    store
        .ledger_adjustment_page(&page(Chain::Ethereum, 0, 100))
        .await
        .unwrap()
}

async fn audited(store: &Store) -> Vec<store::AuditRow> {
    store
        .audit_list(&AuditList {
            action: Some("ledger.adjust".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn adjustments_are_audited_and_bad_ones_change_nothing(db: &TestDb) {
    let store = db.store().await;
    let opening = store
        .ledger_adjustment_insert(&adjustment(
            10u128.pow(20),
            "  opening balance: funded from cold  ",
        ))
        .await
        .unwrap();
    assert_eq!(
        opening.reason, "opening balance: funded from cold",
        "trimmed"
    );
    assert_eq!(opening.amount, Amount::from_u128(10u128.pow(20)));
    let mut out = adjustment(5, "a correction");
    out.direction = LedgerDirection::Out;
    let correction = store.ledger_adjustment_insert(&out).await.unwrap();
    assert_eq!(
        adjustments(&store).await,
        [opening.clone(), correction.clone()]
    );
    let trail = audited(&store).await;
    assert_eq!(trail.len(), 2);
    let entry = trail
        .iter()
        .find(|entry| entry.target == format!("ledger_adjustment:{}", opening.id))
        .unwrap();
    assert_eq!(entry.actor, "token:2:admin");
    assert_eq!(entry.details["amount_base_units"], "100000000000000000000");
    assert_eq!(entry.details["direction"], "in");
    // A token amount of 77 digits fits.
    let mut huge = adjustment(1, "the largest token amount");
    huge.asset = "TOKEN".into();
    huge.amount = Amount::parse_decimal(&"9".repeat(77), 0).unwrap();
    let huge = store.ledger_adjustment_insert(&huge).await.unwrap();
    assert_eq!(
        adjustments(&store).await.last().unwrap().amount,
        huge.amount
    );

    let mut bad = vec![
        adjustment(0, "zero"),
        adjustment(1, "   "),
        adjustment(1, &"x".repeat(501)),
        adjustment(1, "bell \u{7} in it"),
    ];
    let mut no_address = adjustment(1, "no address");
    no_address.address = String::new();
    bad.push(no_address);
    let mut long_asset = adjustment(1, "long asset");
    long_asset.asset = "A".repeat(21);
    bad.push(long_asset);
    let mut control_address = adjustment(1, "escape");
    control_address.address = "0x\u{1b}[31m".into();
    bad.push(control_address);
    for insert in &bad {
        assert!(
            matches!(
                store.ledger_adjustment_insert(insert).await,
                Err(StoreError::Invalid(_))
            ),
            "{insert:?}"
        );
    }
    assert_eq!(adjustments(&store).await.len(), 3, "nothing written");
    assert_eq!(audited(&store).await.len(), 3, "nothing audited");
}

fn check(chain: Chain, asset: &str, differing: u64, difference: u128) -> LedgerCheck {
    LedgerCheck {
        chain,
        asset: asset.into(),
        agreeing: 3,
        differing,
        unknown: 1,
        difference: Amount::from_u128(difference),
        checked_at: at(20),
    }
}

async fn a_reconciliation_replaces_its_chains_last_one(db: &TestDb) {
    let store = db.store().await;
    store
        .ledger_check_replace(
            Chain::Ethereum,
            &[
                check(Chain::Ethereum, "ETH", 1, 5),
                check(Chain::Ethereum, "USDT", 0, 0),
            ],
        )
        .await
        .unwrap();
    store
        .ledger_check_replace(Chain::Tron, &[check(Chain::Tron, "TRX", 0, 0)])
        .await
        .unwrap();
    // Ethereum again, without USDT this time: its row goes, TRON's stays.
    let wide = check(Chain::Ethereum, "ETH", 2, u128::MAX);
    store
        .ledger_check_replace(Chain::Ethereum, std::slice::from_ref(&wide))
        .await
        .unwrap();
    assert_eq!(
        store.ledger_check_list().await.unwrap(),
        [wide.clone(), check(Chain::Tron, "TRX", 0, 0)]
    );
    // Another chain's row in a chain's reconciliation changes nothing.
    assert!(matches!(
        store
            .ledger_check_replace(
                Chain::Ethereum,
                &[
                    check(Chain::Ethereum, "ETH", 0, 0),
                    check(Chain::Tron, "TRX", 9, 9)
                ]
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.ledger_check_list().await.unwrap().len(), 2);
    assert_eq!(store.ledger_check_list().await.unwrap()[0], wide);
}

testkit::on_both_stores!(
    db: deposits_on_the_chain_are_read_in_pages,
    withdrawals_that_may_have_been_signed,
    adjustments_are_audited_and_bad_ones_change_nothing,
    a_reconciliation_replaces_its_chains_last_one,
);
