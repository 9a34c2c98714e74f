//! Manual review on anvil (`wallet::withdrawals::review`, `store::reviews`): a withdrawal
//! whose nonce a foreign transaction consumed goes to manual review; when that transaction
//! paid exactly the withdrawal from the hot wallet, it marks it paid once it is deep enough;
//! when it paid something else, it cannot, and a retry (once the foreign consumption is
//! final) pays the withdrawal in round 2 with a new nonce, once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use alloy::providers::{Provider, RootProvider};
use chain::address::{Address, Network};
use chain::provider::{Asset, ChainRead, SubmitOutcome};
use chain_ethereum::{Ethereum, FeeQuote, Transfer, sign};
use chrono::Utc;
use common::funded;
use domain::{Amount, AssetCatalogue, Chain, WithdrawalState};
use signer::{InProcessSigner, Mnemonic, Signer};
use store::{ReviewAction, ReviewApply, ReviewRequest, Store, WithdrawalCreate};
use testkit::{Anvil, TestDb};
use wallet::Wallet;
use wallet::nonces::NonceSettlePolicy;
use wallet::withdrawals::review::Verdict;
use wallet::withdrawals::{ConfirmationPolicy, PayOutcome, WithdrawalPayer};

const AMOUNT: u128 = 1_000_000_007;
const PATIENT: NonceSettlePolicy = NonceSettlePolicy {
    replace_after: Duration::from_secs(3_600),
    fee_cap: 1_000_000_000_000,
};

fn fresh() -> Address {
    InProcessSigner::new(&Mnemonic::generate(), Network::Mainnet)
        .address(Chain::Ethereum, 0)
        .unwrap()
}

async fn mine(anvil: &Anvil) {
    let node = RootProvider::<alloy::network::Ethereum>::new_http(anvil.url.parse().unwrap());
    let _: serde_json::Value = node.raw_request("evm_mine".into(), ()).await.unwrap();
}

async fn withdrawal(store: &Store, key: &str, to: &Address) -> i64 {
    store
        .withdrawal_create(&WithdrawalCreate {
            idempotency_key: key.into(),
            request_hash: "a".repeat(64),
            reference: "user:1".into(),
            chain: Chain::Ethereum,
            asset: "ETH".into(),
            destination: to.to_string(),
            amount: AMOUNT.to_string(),
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

/// Someone with the hot wallet's key sends `value` wei to `to` on `nonce`, outbidding ours.
async fn foreign(
    client: &Ethereum,
    hot: &InProcessSigner,
    nonce: u64,
    to: &Address,
    value: u128,
) -> String {
    let quote = client.fees(1_000_000_000_000).await.unwrap();
    let unsigned = client
        .build_transfer(&Transfer {
            to: to.clone(),
            value: Amount::from_u128(value),
            nonce,
            fees: FeeQuote {
                max_fee_per_gas: quote.max_fee_per_gas * 3,
                max_priority_fee_per_gas: quote.max_priority_fee_per_gas * 3 + 1,
            },
        })
        .unwrap();
    let signed = sign(unsigned, hot, 0).unwrap();
    assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
    signed.txid.to_string()
}

async fn ask(store: &Store, id: i64, action: ReviewAction, txid: Option<&str>) -> store::ReviewRow {
    store
        .withdrawal_review_request(&ReviewRequest {
            withdrawal_id: id,
            action,
            txid: txid.map(str::to_string),
            reason: "seen on the explorer".into(),
            token_id: Some(2),
            actor: "token:2:alice".into(),
            job: None,
            now: Utc::now(),
        })
        .await
        .unwrap()
}

async fn judge(
    payer: &WithdrawalPayer<Ethereum>,
    store: &Store,
    id: i64,
    action: ReviewAction,
    txid: Option<&str>,
) -> (store::ReviewRow, Verdict) {
    let review = ask(store, id, action, txid).await;
    let row = store.withdrawal_get(id).await.unwrap().unwrap();
    let verdict = payer.review(&review, &row).await.unwrap();
    if let Verdict::Refused(why) = &verdict {
        store
            .withdrawal_review_refuse(review.id, "worker:test", why, Utc::now())
            .await
            .unwrap();
    }
    (review, verdict)
}

async fn apply(store: &Store, review: &store::ReviewRow, verdict: Verdict) -> store::WithdrawalRow {
    let Verdict::Proved { outcome, paid } = verdict else {
        panic!("{verdict:?}")
    };
    store
        .withdrawal_review_apply(&ReviewApply {
            id: review.id,
            checked_by: "worker:test".into(),
            outcome,
            paid,
            pay_job: None,
            now: Utc::now(),
        })
        .await
        .unwrap()
        .1
}

#[tokio::test]
async fn a_foreign_nonce_is_reviewed_on_the_chain() {
    let anvil = Anvil::start_with(&["--no-mining"]).await;
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = Arc::new(funded());
    let payer = WithdrawalPayer::new(
        Wallet::new(client.clone(), hot.clone(), store.clone(), "w1"),
        store.clone(),
        0,
        "worker:ethereum-withdrawal-1",
        AssetCatalogue::mainnet(),
        Network::Mainnet,
        ConfirmationPolicy { confirmations: 2 },
    );
    let balance = |address: Address| {
        let client = client.clone();
        async move {
            ChainRead::balance(&client, &address, &Asset::Native)
                .await
                .unwrap()
        }
    };

    // 1. Paid by hand, exactly, on our nonce: mark paid, once it is deep enough.
    let to = fresh();
    let id = withdrawal(&store, "k-1", &to).await;
    assert_eq!(payer.pay_by_nonce(id).await, PayOutcome::Done);
    let row = store.withdrawal_get(id).await.unwrap().unwrap();
    let nonce = store
        .nonce_get(Chain::Ethereum, &row.attempt_key())
        .await
        .unwrap()
        .unwrap()
        .nonce;
    let by_hand = foreign(&client, &hot, nonce, &to, AMOUNT).await;
    mine(&anvil).await;
    payer.reconcile_nonces(&PATIENT).await.unwrap();
    assert_eq!(
        store.withdrawal_get(id).await.unwrap().unwrap().state,
        WithdrawalState::ManualReview
    );
    let (_, verdict) = judge(&payer, &store, id, ReviewAction::MarkPaid, Some(&by_hand)).await;
    assert!(
        matches!(&verdict, Verdict::Refused(why) if why.contains("foreign transaction that is not final") || why.contains("confirmations")),
        "{verdict:?}"
    );
    mine(&anvil).await;
    let (review, verdict) = judge(&payer, &store, id, ReviewAction::MarkPaid, Some(&by_hand)).await;
    let row = apply(&store, &review, verdict).await;
    assert_eq!(row.state, WithdrawalState::Completed);
    assert_eq!(row.txid.as_deref(), Some(by_hand.as_str()));
    assert!(row.fee.is_some(), "the receipt's fee");
    assert_eq!(balance(to.clone()).await, Amount::from_u128(AMOUNT));

    // 2. Its nonce spent on something else: that transaction cannot mark it paid (nor
    // can the first one, which is withdrawal 1's); a retry pays it in round 2, once.
    let to = fresh();
    let id = withdrawal(&store, "k-2", &to).await;
    assert_eq!(payer.pay_by_nonce(id).await, PayOutcome::Done);
    let row = store.withdrawal_get(id).await.unwrap().unwrap();
    let nonce = store
        .nonce_get(Chain::Ethereum, &row.attempt_key())
        .await
        .unwrap()
        .unwrap()
        .nonce;
    let elsewhere = foreign(&client, &hot, nonce, &fresh(), 5).await;
    mine(&anvil).await;
    mine(&anvil).await;
    payer.reconcile_nonces(&PATIENT).await.unwrap();
    assert_eq!(
        store.withdrawal_get(id).await.unwrap().unwrap().state,
        WithdrawalState::ManualReview
    );
    for (txid, wanted) in [
        (&elsewhere, "does not pay exactly"),
        (&by_hand, "does not pay exactly"),
    ] {
        let (_, verdict) = judge(&payer, &store, id, ReviewAction::MarkPaid, Some(txid)).await;
        assert!(
            matches!(&verdict, Verdict::Refused(why) if why.contains(wanted)),
            "{verdict:?}"
        );
    }
    let (review, verdict) = judge(&payer, &store, id, ReviewAction::Retry, None).await;
    assert!(
        matches!(&verdict, Verdict::Proved { outcome, .. } if outcome.contains("consumed by a transaction none of ours")),
        "{verdict:?}"
    );
    let row = apply(&store, &review, verdict).await;
    assert_eq!(
        (row.state, row.payout_round),
        (WithdrawalState::Processing, 2)
    );
    assert_eq!(payer.pay_by_nonce(id).await, PayOutcome::Done);
    assert_eq!(payer.pay_by_nonce(id).await, PayOutcome::Done);
    let round2 = store
        .nonce_get(Chain::Ethereum, &row.attempt_key())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(round2.nonce, nonce, "a new nonce for the new round");
    mine(&anvil).await;
    mine(&anvil).await;
    payer.reconcile_nonces(&PATIENT).await.unwrap();
    assert_eq!(
        store.withdrawal_get(id).await.unwrap().unwrap().state,
        WithdrawalState::Completed
    );
    assert_eq!(balance(to).await, Amount::from_u128(AMOUNT), "paid once");
}
