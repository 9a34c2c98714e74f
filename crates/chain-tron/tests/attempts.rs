//! TRON payments as stored attempts (DESIGN.md §2.2, §2.3): the wallet's `pay` and
//! `reconcile_attempts` over the fake full node of `common::fake`, on the real stores
//! (Postgres and SQLite, `testkit::on_both_stores!`).

mod common;

use std::sync::Arc;

use chain::provider::{Asset, Payment, SubmitOutcome};
use chain_tron::Tron;
use common::KeySigner;
use common::fake::{
    Ledger, RECIPIENT, SOLIDIFIED_LAG, Shared, USDT, addr, block_time, fake_node, hex21,
};
use domain::Amount;
use store::AttemptState;
use store::{Store, StoreError};
use testkit::TestDb;
use wallet::attempts::Settled;
use wallet::{Wallet, WalletError};

const PAYOUT: &str = "withdrawal-42";

async fn setup(db: &TestDb, key: &str) -> (Wallet<Tron>, Shared, Store, Payment) {
    let signer = KeySigner::from_hex(&format!("{key:0>64}"));
    let me = signer.tron_address();
    let (tron, ledger) = fake_node(Ledger::funded(&me)).await;
    let store = db.store().await;
    let wallet = Wallet::new(tron, Arc::new(signer), store.clone(), "tron-test");
    let payment = Payment {
        from_index: 0,
        from: me,
        to: addr(RECIPIENT),
        asset: Asset::Token(addr(USDT)),
        amount: Amount::from_u128(2_500_000),
    };
    (wallet, ledger, store, payment)
}

fn recipient_usdt(ledger: &Shared) -> u128 {
    ledger
        .lock()
        .unwrap()
        .usdt
        .get(&hex21(&addr(RECIPIENT)))
        .copied()
        .unwrap_or(0)
}

async fn states(store: &Store) -> Vec<(String, AttemptState)> {
    store
        .attempts_of(domain::Chain::Tron, PAYOUT)
        .await
        .unwrap()
        .into_iter()
        .map(|attempt| (attempt.txid, attempt.state))
        .collect()
}

/// The broadcast never reaches the node after the bytes are stored (as if the process died
/// between the two): the attempt is Live with its bytes; reconcile sends those very bytes
/// (same txid), and the payment lands once.
async fn a_crash_between_store_and_broadcast_is_finished_by_reconcile(db: &TestDb) {
    let (wallet, ledger, store, payment) = setup(db, "11").await;
    ledger.lock().unwrap().broadcasts_down = true;
    let paid = wallet.pay(PAYOUT, &payment).await.unwrap();
    assert!(
        matches!(paid.outcome, SubmitOutcome::Unknown { .. }),
        "{paid:?}"
    );
    let live = store
        .attempts_live(domain::Chain::Tron, Some(payment.from.as_str()))
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].txid, paid.txid);
    assert!(live[0].expires_at.is_some());
    assert_eq!(
        ledger.lock().unwrap().accepted,
        0,
        "nothing reached the node"
    );

    // The node is back: reconcile sends the stored bytes again.
    ledger.lock().unwrap().broadcasts_down = false;
    let report = wallet.reconcile_attempts(None).await.unwrap();
    assert_eq!(
        report,
        vec![Settled::Rebroadcast {
            payout: PAYOUT.into(),
            txid: paid.txid.clone(),
            outcome: SubmitOutcome::Accepted
        }]
    );
    // Again before it is mined: the node has it already.
    let report = wallet.reconcile_attempts(None).await.unwrap();
    assert!(
        matches!(&report[..], [Settled::Rebroadcast { outcome: SubmitOutcome::AlreadyKnown, txid, .. }] if *txid == paid.txid),
        "{report:?}"
    );
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    // Two reconcilers at once (two worker processes): the attempt is settled once, and the
    // one that finds it settled already is not failed by it.
    let other = Wallet::new(
        wallet.provider().clone(),
        Arc::new(KeySigner::from_hex(&format!("{:0>64}", "11"))),
        store.clone(),
        "tron-test-2",
    );
    let (one, two) = tokio::join!(
        wallet.reconcile_attempts(None),
        other.reconcile_attempts(None)
    );
    let report: Vec<Settled> = one.unwrap().into_iter().chain(two.unwrap()).collect();
    assert!(
        matches!(&report[..], [Settled::Landed { success: true, txid, .. }] if *txid == paid.txid),
        "{report:?}"
    );
    assert_eq!(
        states(&store).await,
        vec![(paid.txid, AttemptState::Landed)]
    );
    assert_eq!(recipient_usdt(&ledger), 2_500_000, "paid once");
    assert_eq!(ledger.lock().unwrap().accepted, 1);
    // Nothing Live is left, and the payout cannot be paid again.
    assert!(wallet.reconcile_attempts(None).await.unwrap().is_empty());
    let again = wallet.pay(PAYOUT, &payment).await;
    assert!(
        matches!(again, Err(WalletError::Store(StoreError::Conflict(_)))),
        "{again:?}"
    );
    assert_eq!(recipient_usdt(&ledger), 2_500_000);
}

/// A second `pay` for a payout whose attempt is Live is refused by the store, with nothing
/// stored or sent; once that attempt is provably dead (expired, absent from the solidified
/// chain past its expiration), a new attempt pays, once.
async fn a_new_attempt_only_once_the_old_one_is_dead(db: &TestDb) {
    let (wallet, ledger, store, payment) = setup(db, "12").await;
    ledger.lock().unwrap().broadcasts_down = true;
    let first = wallet.pay(PAYOUT, &payment).await.unwrap();
    ledger.lock().unwrap().broadcasts_down = false;

    let refused = wallet.pay(PAYOUT, &payment).await;
    assert!(
        matches!(refused, Err(WalletError::Store(StoreError::Conflict(_)))),
        "{refused:?}"
    );
    assert_eq!(
        states(&store).await,
        vec![(first.txid.clone(), AttemptState::Live)]
    );
    assert_eq!(ledger.lock().unwrap().accepted, 0, "nothing was sent");

    // The first attempt is lost (the node never got it) and the chain moves on; while the
    // solidified chain has not reached its expiration, reconcile may only send it again. It
    // is sent while expired against the head: the node refuses it, and it stays Live.
    let expires_at = store
        .attempts_of(domain::Chain::Tron, PAYOUT)
        .await
        .unwrap()[0]
        .expires_at
        .unwrap();
    {
        let mut ledger = ledger.lock().unwrap();
        while block_time(ledger.head) < expires_at {
            assert!(ledger.head < 1_000, "the expiration is within minutes");
            ledger.mine();
        }
    }
    let report = wallet.reconcile_attempts(None).await.unwrap();
    assert!(
        matches!(
            &report[..],
            [Settled::Rebroadcast {
                outcome: SubmitOutcome::Unknown { .. },
                ..
            }]
        ),
        "{report:?}"
    );
    assert_eq!(ledger.lock().unwrap().accepted, 0);
    ledger.lock().unwrap().mine_n(SOLIDIFIED_LAG);
    let report = wallet.reconcile_attempts(None).await.unwrap();
    assert_eq!(
        report,
        vec![Settled::Dead {
            payout: PAYOUT.into(),
            txid: first.txid.clone()
        }]
    );

    // Now a new attempt: other bytes, and it pays.
    let second = wallet.pay(PAYOUT, &payment).await.unwrap();
    assert_ne!(second.txid, first.txid);
    assert_eq!(second.outcome, SubmitOutcome::Accepted);
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    let report = wallet.reconcile_attempts(None).await.unwrap();
    assert!(
        matches!(&report[..], [Settled::Landed { success: true, txid, .. }] if *txid == second.txid),
        "{report:?}"
    );
    assert_eq!(
        states(&store).await,
        vec![
            (first.txid, AttemptState::Dead),
            (second.txid, AttemptState::Landed)
        ]
    );
    assert_eq!(recipient_usdt(&ledger), 2_500_000, "paid once");
    assert_eq!(ledger.lock().unwrap().accepted, 1);
}

/// An attempt that landed but failed (a TRC-20 out of energy) is settled Landed with
/// `success: false`: the payout was not paid, and it is not paid again blindly either (the
/// store refuses a new attempt while a Landed one exists): that is for an operator.
async fn a_landed_failure_is_reported_and_not_retried(db: &TestDb) {
    let (wallet, ledger, store, payment) = setup(db, "14").await;
    ledger.lock().unwrap().fail_tokens = true;
    let paid = wallet.pay(PAYOUT, &payment).await.unwrap();
    assert_eq!(paid.outcome, SubmitOutcome::Accepted);
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    let report = wallet.reconcile_attempts(None).await.unwrap();
    assert!(
        matches!(&report[..], [Settled::Landed { success: false, txid, .. }] if *txid == paid.txid),
        "{report:?}"
    );
    assert_eq!(
        states(&store).await,
        vec![(paid.txid, AttemptState::Landed)]
    );
    assert!(matches!(
        wallet.pay(PAYOUT, &payment).await,
        Err(WalletError::Store(StoreError::Conflict(_)))
    ));
    assert_eq!(recipient_usdt(&ledger), 0);
}

/// Bad input stores and sends nothing.
async fn bad_payouts_and_payments_are_refused(db: &TestDb) {
    let (wallet, ledger, store, payment) = setup(db, "13").await;
    let too_long = "x".repeat(201);
    for payout in ["", too_long.as_str()] {
        assert!(matches!(
            wallet.pay(payout, &payment).await,
            Err(WalletError::Invalid(_))
        ));
    }
    let zero = Payment {
        amount: Amount::ZERO,
        ..payment.clone()
    };
    assert!(matches!(
        wallet.pay(PAYOUT, &zero).await,
        Err(WalletError::Invalid(_))
    ));
    assert!(states(&store).await.is_empty());
    assert_eq!(ledger.lock().unwrap().accepted, 0);
}

/// An attempt looked at by a reconcile, decided or not, goes behind the attempts looked at
/// less recently: one that stays undecided round after round never keeps newer ones from
/// being looked at within the round's bound.
async fn a_looked_at_attempt_goes_to_the_back(db: &TestDb) {
    let (wallet, ledger, store, payment) = setup(db, "15").await;
    ledger.lock().unwrap().broadcasts_down = true;
    let old = wallet.pay("w-old", &payment).await.unwrap();
    let report = wallet.reconcile_attempts(None).await.unwrap();
    assert!(
        matches!(&report[..], [Settled::Rebroadcast { txid, outcome: SubmitOutcome::Unknown { .. }, .. }] if *txid == old.txid),
        "{report:?}"
    );
    let newer = Payment {
        amount: Amount::from_u128(1_000_000),
        ..payment
    };
    let new = wallet.pay("w-new", &newer).await.unwrap();
    let live: Vec<String> = store
        .attempts_live(domain::Chain::Tron, None)
        .await
        .unwrap()
        .into_iter()
        .map(|attempt| attempt.txid)
        .collect();
    assert_eq!(live, [new.txid, old.txid], "the one never looked at first");
}

testkit::on_both_stores!(
    db: a_crash_between_store_and_broadcast_is_finished_by_reconcile,
    a_looked_at_attempt_goes_to_the_back,
    a_new_attempt_only_once_the_old_one_is_dead,
    a_landed_failure_is_reported_and_not_retried,
    bad_payouts_and_payments_are_refused,
);
