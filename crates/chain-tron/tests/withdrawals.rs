//! TRON withdrawals driven by `wallet::withdrawals::WithdrawalPayer` over the fake full node of
//! `common::fake` (a simulation built from recorded java-tron answers), on both stores: a
//! withdrawal row goes pending → processing → broadcast → completed with one transfer; a run
//! repeated after a crash (at any point) finds what is stored and pays nothing twice; a
//! canceled withdrawal is never paid; an expired attempt is proven dead and paid again, once;
//! a transfer that lands but fails goes to manual review; a short hot wallet waits; old
//! unfinished withdrawals do not keep a round from newer ones.

mod common;

use std::sync::Arc;

use chain::address::Network;
use chain_tron::Tron;
use chrono::Utc;
use common::KeySigner;
use common::fake::{Ledger, RECIPIENT, SOLIDIFIED_LAG, Shared, addr, fake_node, hex21};
use domain::{AssetCatalogue, Chain, WithdrawalState};
use store::{Store, WithdrawalCreate, WithdrawalTransition};
use testkit::TestDb;
use wallet::Wallet;
use wallet::withdrawals::review::Verdict;
use wallet::withdrawals::{ConfirmationPolicy, PayOutcome, WithdrawalPayer};

const KEY: &str = "21";

async fn payer(db: &TestDb, ledger: Ledger) -> (WithdrawalPayer<Tron>, Shared, Store) {
    let signer = KeySigner::from_hex(&format!("{KEY:0>64}"));
    let (tron, shared) = fake_node(ledger).await;
    let store = db.store().await;
    let wallet = Wallet::new(
        tron,
        Arc::new(signer),
        store.clone(),
        "tron-withdrawal-1:test",
    );
    let payer = WithdrawalPayer::new(
        wallet,
        store.clone(),
        0,
        "worker:tron-withdrawal-1",
        AssetCatalogue::mainnet(),
        Network::Mainnet,
        ConfirmationPolicy { confirmations: 1 },
    );
    (payer, shared, store)
}

fn me() -> chain::address::Address {
    KeySigner::from_hex(&format!("{KEY:0>64}")).tron_address()
}

async fn withdrawal(store: &Store, key: &str, asset: &str, amount: &str) -> i64 {
    store
        .withdrawal_create(&WithdrawalCreate {
            idempotency_key: key.into(),
            request_hash: "a".repeat(64),
            reference: "user:1".into(),
            chain: Chain::Tron,
            asset: asset.into(),
            destination: RECIPIENT.into(),
            amount: amount.into(),
            actor: "token:1:backend".into(),
            job: None,
            approval: false,
            limits: vec![],
            destination_rule: None,
            now: Utc::now(),
        })
        .await
        .unwrap()
        .row()
        .id
}

fn usdt_of_recipient(ledger: &Shared) -> u128 {
    ledger
        .lock()
        .unwrap()
        .usdt
        .get(&hex21(&addr(RECIPIENT)))
        .copied()
        .unwrap_or(0)
}

async fn state(store: &Store, id: i64) -> store::WithdrawalRow {
    store.withdrawal_get(id).await.unwrap().unwrap()
}

async fn a_withdrawal_is_paid_once_and_completed(db: &TestDb) {
    let (payer, ledger, store) = payer(db, Ledger::funded(&me())).await;
    let id = withdrawal(&store, "k-1", "USDT", "2500000").await;
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    let row = state(&store, id).await;
    assert_eq!(row.state, WithdrawalState::Broadcast);
    let txid = row.txid.clone().unwrap();
    // The job runs again (a retry after a lost answer, a rescued lease): nothing new.
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    assert_eq!(
        store
            .attempts_of(Chain::Tron, &row.payout_key())
            .await
            .unwrap()
            .len(),
        1
    );
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    let report = payer.reconcile_attempts().await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    let row = state(&store, id).await;
    assert_eq!(row.state, WithdrawalState::Completed, "{row:?}");
    assert_eq!(row.txid.as_deref(), Some(txid.as_str()));
    assert!(row.block_height.is_some());
    // Within the free bandwidth: the node's info has no fee, which is 0 sun.
    assert_eq!(row.fee.as_deref(), Some("0"));
    assert_eq!(usdt_of_recipient(&ledger), 2_500_000);
    // Once more: nothing moves, nothing is paid.
    payer.reconcile_attempts().await.unwrap();
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    assert_eq!(usdt_of_recipient(&ledger), 2_500_000);
}

/// The process died after the attempt was stored but before the withdrawal moved on: the
/// next run finds the attempt and follows it; a withdrawal canceled before it was taken is
/// never paid.
async fn a_rerun_after_a_crash_follows_what_is_stored(db: &TestDb) {
    let (payer, ledger, store) = payer(db, Ledger::funded(&me())).await;
    let id = withdrawal(&store, "k-2", "USDT", "1000000").await;
    // As if a first run took it and stored an attempt, then died.
    store
        .withdrawal_transition(&WithdrawalTransition::new(
            id,
            WithdrawalState::Pending,
            WithdrawalState::Processing,
            "worker:dead",
            Utc::now(),
        ))
        .await
        .unwrap();
    let payment = chain::provider::Payment {
        from_index: 0,
        from: me(),
        to: addr(RECIPIENT),
        asset: chain::provider::Asset::Token(addr(common::fake::USDT)),
        amount: domain::Amount::from_u128(1_000_000),
    };
    let first = payer
        .wallet
        .pay(&store::payout_key(id), &payment)
        .await
        .unwrap();
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    let row = state(&store, id).await;
    assert_eq!(
        (row.state, row.txid.as_deref()),
        (WithdrawalState::Broadcast, Some(first.txid.as_str()))
    );
    let canceled = withdrawal(&store, "k-3", "USDT", "7").await;
    store
        .withdrawal_cancel(canceled, "token:1:backend", Utc::now())
        .await
        .unwrap();
    assert_eq!(payer.pay(canceled).await, PayOutcome::Done);
    assert_eq!(
        state(&store, canceled).await.state,
        WithdrawalState::Canceled
    );
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    payer.reconcile_attempts().await.unwrap();
    assert_eq!(state(&store, id).await.state, WithdrawalState::Completed);
    assert_eq!(
        usdt_of_recipient(&ledger),
        1_000_000,
        "paid once, the canceled one never"
    );
}

/// An attempt the node never took expires; the solidified chain past its expiration proves
/// it dead; the withdrawal goes back to be paid, and is paid once.
async fn an_expired_attempt_is_paid_again_once(db: &TestDb) {
    let (payer, ledger, store) = payer(db, Ledger::funded(&me())).await;
    let id = withdrawal(&store, "k-4", "USDT", "3000000").await;
    ledger.lock().unwrap().broadcasts_down = true;
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    let first = state(&store, id).await.txid.unwrap();
    // Past the expiration (60 s, a block every 3 s) and solidified past it, with the node
    // still refusing: the attempt can never land.
    ledger.lock().unwrap().mine_n(40 + SOLIDIFIED_LAG);
    let report = payer.reconcile_attempts().await.unwrap();
    assert_eq!(report.to_pay, vec![id], "{report:?}");
    let row = state(&store, id).await;
    assert_eq!(row.state, WithdrawalState::Processing);
    assert!(row.error.unwrap().contains("expired"));
    ledger.lock().unwrap().broadcasts_down = false;
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    let second = state(&store, id).await.txid.unwrap();
    assert_ne!(first, second);
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    payer.reconcile_attempts().await.unwrap();
    assert_eq!(state(&store, id).await.state, WithdrawalState::Completed);
    assert_eq!(usdt_of_recipient(&ledger), 3_000_000);
}

/// A transfer the node never took, not yet expired: the round sends the same bytes again
/// (counted for `/metrics`), and it completes with its first txid.
async fn a_lost_broadcast_is_sent_again_and_counted(db: &TestDb) {
    let (payer, ledger, store) = payer(db, Ledger::funded(&me())).await;
    let id = withdrawal(&store, "k-8", "USDT", "700000").await;
    ledger.lock().unwrap().broadcasts_down = true;
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    let txid = state(&store, id).await.txid.unwrap();
    ledger.lock().unwrap().broadcasts_down = false;
    let report = payer.reconcile_attempts().await.unwrap();
    assert_eq!(report.rebroadcasts, 1, "{report:?}");
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    let report = payer.reconcile_attempts().await.unwrap();
    assert_eq!(report.rebroadcasts, 0, "{report:?}");
    let row = state(&store, id).await;
    assert_eq!(
        (row.state, row.txid),
        (WithdrawalState::Completed, Some(txid))
    );
    assert_eq!(usdt_of_recipient(&ledger), 700_000);
}

/// The hot wallet keeps its floor: a payment that would leave less waits for funds, with
/// the floor in the reason, and one that leaves exactly the floor is paid.
async fn the_hot_wallet_keeps_its_floor(db: &TestDb) {
    let (payer, ledger, store) = payer(db, Ledger::funded(&me())).await;
    // 10 USDT held; keep 9.
    let payer = payer.with_floors(vec![("USDT".into(), domain::Amount::from_u128(9_000_000))]);
    let id = withdrawal(&store, "k-9", "USDT", "1000001").await;
    assert!(matches!(payer.pay(id).await, PayOutcome::Wait(_)));
    let row = state(&store, id).await;
    assert_eq!(row.state, WithdrawalState::Pending);
    let reason = row.error.unwrap();
    assert!(reason.contains("keeping its floor of 9000000"), "{reason}");
    let id = withdrawal(&store, "k-10", "USDT", "1000000").await;
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    payer.reconcile_attempts().await.unwrap();
    assert_eq!(state(&store, id).await.state, WithdrawalState::Completed);
    assert_eq!(usdt_of_recipient(&ledger), 1_000_000);
}

/// A TRC-20 transfer that lands but fails (out of energy): manual review, never paid again.
async fn landed_but_failed_goes_to_manual_review(db: &TestDb) {
    let (payer, ledger, store) = payer(db, Ledger::funded(&me())).await;
    ledger.lock().unwrap().fail_tokens = true;
    let id = withdrawal(&store, "k-5", "USDT", "500000").await;
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    payer.reconcile_attempts().await.unwrap();
    let row = state(&store, id).await;
    assert_eq!(row.state, WithdrawalState::ManualReview, "{row:?}");
    assert!(row.error.as_deref().unwrap().contains("failed on chain"));
    // The energy it burnt, from the transaction's info (the recorded 16.5 TRX).
    assert_eq!(row.fee.as_deref(), Some("16500120"));
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    assert_eq!(
        store
            .attempts_of(Chain::Tron, &row.payout_key())
            .await
            .unwrap()
            .len(),
        1,
        "no second attempt"
    );
}

/// The hot wallet cannot pay: the withdrawal waits in `pending` with the reason, nothing is
/// signed, and it can still be canceled.
async fn a_short_hot_wallet_waits(db: &TestDb) {
    let (payer, _ledger, store) = payer(db, Ledger::funded(&me())).await;
    let id = withdrawal(&store, "k-6", "TRX", "999999999999999").await;
    assert!(matches!(payer.pay(id).await, PayOutcome::Wait(_)));
    let row = state(&store, id).await;
    assert_eq!(row.state, WithdrawalState::Pending);
    assert!(
        row.error
            .as_deref()
            .unwrap()
            .starts_with("waiting for funds"),
        "reason shown"
    );
    assert!(
        store
            .attempts_of(Chain::Tron, &row.payout_key())
            .await
            .unwrap()
            .is_empty()
    );
    store
        .withdrawal_cancel(id, "token:1:backend", Utc::now())
        .await
        .unwrap();
}

/// Old withdrawals that stay unfinished (here waiting for funds) fill a round's sweep; a newer
/// one, paid, is still looked at and completed: rounds go round the list.
async fn old_unfinished_withdrawals_do_not_starve_newer_ones(db: &TestDb) {
    let (payer, ledger, store) = payer(db, Ledger::funded(&me())).await;
    let payer = payer.with_sweep_max(2);
    for key in ["k-7a", "k-7b", "k-7c"] {
        let id = withdrawal(&store, key, "TRX", "999999999999999").await;
        assert!(matches!(payer.pay(id).await, PayOutcome::Wait(_)));
    }
    let id = withdrawal(&store, "k-7d", "USDT", "1000000").await;
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    for _ in 0..2 {
        let report = payer.reconcile_attempts().await.unwrap();
        assert!(report.errors.is_empty(), "{report:?}");
    }
    assert_eq!(state(&store, id).await.state, WithdrawalState::Completed);
    assert_eq!(usdt_of_recipient(&ledger), 1_000_000);
}

/// A review of `id` asked and read back as the worker sees it.
async fn asked(
    store: &Store,
    id: i64,
    action: store::ReviewAction,
    txid: Option<&str>,
) -> store::ReviewRow {
    store
        .withdrawal_review_request(&store::ReviewRequest {
            withdrawal_id: id,
            action,
            txid: txid.map(str::to_string),
            reason: "checked by a person".into(),
            token_id: Some(2),
            actor: "token:2:alice".into(),
            job: None,
            now: Utc::now(),
        })
        .await
        .unwrap()
}

/// Manual review on TRON: a transfer that landed but failed cannot mark it paid; a live
/// attempt blocks failing or paying again; once every attempt is provably dead, a retry pays
/// it in round 2 under its own payout key, once.
async fn reviews_are_judged_on_the_chain(db: &TestDb) {
    let (payer, ledger, store) = payer(db, Ledger::funded(&me())).await;
    ledger.lock().unwrap().fail_tokens = true;
    let id = withdrawal(&store, "k-r1", "USDT", "500000").await;
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    let failed_txid = state(&store, id).await.txid.unwrap();

    // Still live (not yet in a solidified block): neither failing nor a retry is proved.
    store
        .withdrawal_transition(&{
            let mut t = WithdrawalTransition::new(
                id,
                WithdrawalState::Broadcast,
                WithdrawalState::ManualReview,
                "test",
                Utc::now(),
            );
            t.error = Some("a person looks".into());
            t
        })
        .await
        .unwrap();
    let review = asked(&store, id, store::ReviewAction::Retry, None).await;
    let row = state(&store, id).await;
    match payer.review(&review, &row).await.unwrap() {
        Verdict::Refused(why) => assert!(why.contains("is live"), "{why}"),
        proved => panic!("{proved:?}"),
    }
    store
        .withdrawal_review_refuse(review.id, "worker:t", "live", Utc::now())
        .await
        .unwrap();

    // Landed and failed, solidified: dead for good.
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    payer.wallet.reconcile_attempts(None).await.unwrap();
    let row = state(&store, id).await;
    let review = asked(
        &store,
        id,
        store::ReviewAction::MarkPaid,
        Some(&failed_txid),
    )
    .await;
    match payer.review(&review, &row).await.unwrap() {
        Verdict::Refused(why) => assert!(why.contains("failed on chain"), "{why}"),
        proved => panic!("{proved:?}"),
    }
    store
        .withdrawal_review_refuse(review.id, "worker:t", "failed", Utc::now())
        .await
        .unwrap();
    let review = asked(
        &store,
        id,
        store::ReviewAction::MarkPaid,
        Some("ab".repeat(32).as_str()),
    )
    .await;
    match payer.review(&review, &row).await.unwrap() {
        Verdict::Refused(why) => assert!(why.contains("does not know"), "{why}"),
        proved => panic!("{proved:?}"),
    }
    store
        .withdrawal_review_refuse(review.id, "worker:t", "unknown", Utc::now())
        .await
        .unwrap();
    let review = asked(&store, id, store::ReviewAction::Retry, None).await;
    let Verdict::Proved {
        outcome,
        paid: None,
    } = payer.review(&review, &row).await.unwrap()
    else {
        panic!("not proved")
    };
    assert!(
        outcome.contains("failed on chain in final block"),
        "{outcome}"
    );
    let (_, row) = store
        .withdrawal_review_apply(&store::ReviewApply {
            id: review.id,
            checked_by: "worker:t".into(),
            outcome,
            paid: None,
            pay_job: None,
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(
        (row.state, row.payout_round),
        (WithdrawalState::Processing, 2)
    );

    // Round 2 pays it, once, under its own key; round 1's failed attempt is left alone.
    ledger.lock().unwrap().fail_tokens = false;
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    assert_eq!(payer.pay(id).await, PayOutcome::Done);
    let row = state(&store, id).await;
    assert_eq!(row.state, WithdrawalState::Broadcast);
    assert_ne!(row.txid.as_deref(), Some(failed_txid.as_str()));
    for (key, count) in [(row.payout_key(), 1), (row.attempt_key(), 1)] {
        assert_eq!(
            store.attempts_of(Chain::Tron, &key).await.unwrap().len(),
            count,
            "{key}"
        );
    }
    ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
    payer.reconcile_attempts().await.unwrap();
    assert_eq!(state(&store, id).await.state, WithdrawalState::Completed);
    assert_eq!(usdt_of_recipient(&ledger), 500_000, "paid once");
}

testkit::on_both_stores!(
    db:
    a_withdrawal_is_paid_once_and_completed,
    a_rerun_after_a_crash_follows_what_is_stored,
    an_expired_attempt_is_paid_again_once,
    landed_but_failed_goes_to_manual_review,
    a_short_hot_wallet_waits,
    old_unfinished_withdrawals_do_not_starve_newer_ones,
    a_lost_broadcast_is_sent_again_and_counted,
    the_hot_wallet_keeps_its_floor,
    reviews_are_judged_on_the_chain,
);
