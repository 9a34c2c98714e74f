//! Payouts by nonces on anvil, through `Wallet::pay_nonce` and `Wallet::settle_nonces`:
//! a payout retried after a crash at each await point (simulated by doing the steps before
//! it by hand under a dead holder, then calling `pay_nonce` again from a fresh wallet) ends
//! with one transaction, one nonce, the recipient paid once; a stuck transaction replaced and
//! the replacement mined settles the payout with the replacement's txid, every txid kept; a
//! nonce consumed by a transaction sent outside the wallet settles `Foreign`; 20 payouts in
//! flight from one address take contiguous nonces (an abandoned reservation's gap filled) and
//! are all mined; two processes running one payout's job at once pay it once.

use std::sync::Arc;
use std::time::Duration;

use alloy::providers::{Provider, RootProvider};
use chain::address::{Address, Network};
use chain::provider::{Asset, ChainBuild, ChainRead, Payment, SubmitOutcome, TxStatus};
use chain_ethereum::{Ethereum, FeeQuote, Transfer, sign};
use chrono::Utc;
use domain::{Amount, Chain};
use signer::{InProcessSigner, Mnemonic, Signer};
use store::{NonceBind, NonceReserve, NonceSettlement, NonceTxNew, Store};
use testkit::{Anvil, Backend, TestDb};
use wallet::conformance::included;
use wallet::{NonceOutcome, NonceSettlePolicy, Wallet, WalletError};

mod common;
use common::funded;

const WAIT: Duration = Duration::from_secs(30);
const AMOUNT: u128 = 1_000_000_007;

fn fresh() -> Address {
    InProcessSigner::new(&Mnemonic::generate(), Network::Mainnet)
        .address(Chain::Ethereum, 0)
        .unwrap()
}

fn payment(from: &Address, to: &Address) -> Payment {
    Payment {
        from_index: 0,
        from: from.clone(),
        to: to.clone(),
        asset: Asset::Native,
        amount: Amount::from_u128(AMOUNT),
    }
}

fn wallet(
    client: &Ethereum,
    hot: &Arc<InProcessSigner>,
    store: &Store,
    holder: &str,
) -> Wallet<Ethereum> {
    Wallet::new(client.clone(), hot.clone(), store.clone(), holder)
}

/// Settles nothing by replacing: what `settle_nonces` finds, without touching fees.
const PATIENT: NonceSettlePolicy = NonceSettlePolicy {
    replace_after: Duration::from_secs(3_600),
    fee_cap: 1_000_000_000_000,
};

async fn mine(anvil: &Anvil) {
    let node = RootProvider::<alloy::network::Ethereum>::new_http(anvil.url.parse().unwrap());
    let _: serde_json::Value = node.raw_request("evm_mine".into(), ()).await.unwrap();
}

async fn balance(client: &Ethereum, address: &Address) -> Amount {
    ChainRead::balance(client, address, &Asset::Native)
        .await
        .unwrap()
}

/// A reservation for `payout` by a holder that then dies.
async fn reserve_dead(client: &Ethereum, store: &Store, from: &Address, payout: &str) -> u64 {
    let now = Utc::now();
    store
        .nonce_reserve(&NonceReserve {
            chain: Chain::Ethereum,
            address: from.to_string(),
            payout: payout.into(),
            node_pending: client.pending_nonce(from).await.unwrap(),
            holder: format!("dead-{payout}"),
            lease_until: now + Duration::from_secs(60),
            now,
        })
        .await
        .unwrap()
        .nonce
}

async fn crash_at_every_await(backend: Backend) {
    let anvil = Anvil::start().await;
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = Arc::new(funded());
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let start = client.pending_nonce(&from).await.unwrap();
    let recipients: Vec<Address> = (0..3).map(|_| fresh()).collect();

    // Before the reservation: nothing was stored, the retry is a first try. After the
    // broadcast: the retry, from another process, sends the same bytes again.
    let first = wallet(&client, &hot, &store, "w1")
        .pay_nonce("w-1", &payment(&from, &recipients[0]))
        .await
        .unwrap();
    assert_eq!(first.outcome, SubmitOutcome::Accepted);
    let again = wallet(&client, &hot, &store, "w2")
        .pay_nonce("w-1", &payment(&from, &recipients[0]))
        .await
        .unwrap();
    assert_eq!((&again.txid, again.sequence), (&first.txid, first.sequence));
    assert_eq!(again.outcome, SubmitOutcome::AlreadyKnown);

    // Between the reservation and the bind: the retry signs with that same nonce.
    let reserved = reserve_dead(&client, &store, &from, "w-2").await;
    let second = wallet(&client, &hot, &store, "w3")
        .pay_nonce("w-2", &payment(&from, &recipients[1]))
        .await
        .unwrap();
    assert_eq!(second.sequence, Some(reserved));
    assert_eq!(second.outcome, SubmitOutcome::Accepted);

    // Between the bind and the broadcast: the retry sends the stored bytes.
    let nonce = reserve_dead(&client, &store, &from, "w-3").await;
    let asked = payment(&from, &recipients[2]);
    let mut metadata = client.metadata(&asked).await.unwrap();
    client.set_sequence(&mut metadata, nonce);
    let unsigned = client.build(&asked, &metadata).unwrap();
    let signatures = hot
        .sign_payloads(Chain::Ethereum, &client.payloads(&unsigned))
        .unwrap();
    let stored = client.combine(unsigned, &signatures).unwrap();
    store
        .nonce_bind(&NonceBind {
            chain: Chain::Ethereum,
            address: from.to_string(),
            nonce,
            holder: "dead-w-3".into(),
            payout: "w-3".into(),
            tx: NonceTxNew {
                txid: stored.txid.clone(),
                raw: stored.raw.clone(),
                fees: None,
            },
            now: Utc::now(),
        })
        .await
        .unwrap();
    let third = wallet(&client, &hot, &store, "w4")
        .pay_nonce("w-3", &asked)
        .await
        .unwrap();
    assert_eq!((&third.txid, third.sequence), (&stored.txid, Some(nonce)));
    assert_eq!(third.outcome, SubmitOutcome::Accepted);

    // A payout asked again for another payment: refused, nothing sent.
    let other = wallet(&client, &hot, &store, "w5")
        .pay_nonce("w-1", &payment(&from, &recipients[2]))
        .await;
    assert!(matches!(other, Err(WalletError::Mismatch(_))), "{other:?}");

    for sent in [&first, &second, &third] {
        assert!(included(&client, &sent.txid, WAIT).await.1);
    }
    assert_eq!(
        client.pending_nonce(&from).await.unwrap(),
        start + 3,
        "one nonce each"
    );
    for recipient in &recipients {
        assert_eq!(
            balance(&client, recipient).await,
            Amount::from_u128(AMOUNT),
            "paid once"
        );
    }
    let settling = wallet(&client, &hot, &store, "settler");
    let mut mined: Vec<(String, String)> = Vec::new();
    for settled in settling.settle_nonces(0, &PATIENT).await.unwrap() {
        match settled.result {
            Ok(NonceOutcome::Mined {
                payout,
                txid,
                success,
                ..
            }) => {
                assert!(success);
                mined.push((payout, txid));
            }
            other => panic!("{other:?}"),
        }
    }
    mined.sort();
    assert_eq!(
        mined,
        vec![
            ("w-1".to_string(), first.txid.clone()),
            ("w-2".to_string(), second.txid.clone()),
            ("w-3".to_string(), third.txid.clone()),
        ]
    );
    assert!(
        settling
            .settle_nonces(0, &PATIENT)
            .await
            .unwrap()
            .is_empty()
    );
    // Settled: a retry reports the mined transaction and sends nothing.
    let late = settling
        .pay_nonce("w-2", &payment(&from, &recipients[1]))
        .await
        .unwrap();
    assert_eq!(
        (late.txid, late.outcome),
        (second.txid, SubmitOutcome::AlreadyKnown)
    );
    assert_eq!(client.pending_nonce(&from).await.unwrap(), start + 3);
}

#[tokio::test]
async fn a_payout_retried_after_a_crash_at_each_await_pays_once_on_postgres() {
    crash_at_every_await(Backend::Postgres).await;
}

#[tokio::test]
async fn a_payout_retried_after_a_crash_at_each_await_pays_once_on_sqlite() {
    crash_at_every_await(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_mined_replacement_settles_the_payout_with_its_txid() {
    let anvil = Anvil::start_with(&["--no-mining"]).await;
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = Arc::new(funded());
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let to = fresh();
    let wallet = wallet(&client, &hot, &store, "w1");
    let sent = wallet.pay_nonce("r-1", &payment(&from, &to)).await.unwrap();
    assert_eq!(sent.outcome, SubmitOutcome::Accepted);

    let impatient = NonceSettlePolicy {
        replace_after: Duration::ZERO,
        fee_cap: 1_000_000_000_000,
    };
    let round = wallet.settle_nonces(0, &impatient).await.unwrap();
    let [settled] = round.as_slice() else {
        panic!("{round:?}")
    };
    let Ok(NonceOutcome::Replaced {
        replaced,
        txid: replacement,
        outcome,
        ..
    }) = &settled.result
    else {
        panic!("{settled:?}");
    };
    assert_eq!(replaced, &sent.txid);
    assert_eq!(outcome, &SubmitOutcome::Accepted);
    let held = store
        .nonce_get(Chain::Ethereum, "r-1")
        .await
        .unwrap()
        .unwrap();
    let fees: Vec<_> = held.txs.iter().map(|tx| tx.fees.unwrap()).collect();
    assert!(fees[1].max_fee_per_gas >= chain_ethereum::bumped(fees[0].max_fee_per_gas));
    assert!(
        fees[1].max_priority_fee_per_gas
            >= chain_ethereum::bumped(fees[0].max_priority_fee_per_gas)
    );

    mine(&anvil).await;
    let round = wallet.settle_nonces(0, &PATIENT).await.unwrap();
    let [settled] = round.as_slice() else {
        panic!("{round:?}")
    };
    let Ok(NonceOutcome::Mined {
        payout,
        txid,
        success,
        ..
    }) = &settled.result
    else {
        panic!("{settled:?}");
    };
    assert_eq!(
        (payout.as_str(), txid, *success),
        ("r-1", replacement, true)
    );
    let held = store
        .nonce_get(Chain::Ethereum, "r-1")
        .await
        .unwrap()
        .unwrap();
    let txids: Vec<&str> = held.txs.iter().map(|tx| tx.txid.as_str()).collect();
    assert_eq!(
        txids,
        [sent.txid.as_str(), replacement.as_str()],
        "every txid kept"
    );
    assert_eq!(
        held.settlement,
        Some(NonceSettlement::Mined {
            txid: replacement.clone()
        })
    );
    assert_eq!(
        client.transaction(&sent.txid).await.unwrap(),
        TxStatus::NotFound
    );
    assert_eq!(
        balance(&client, &to).await,
        Amount::from_u128(AMOUNT),
        "paid once"
    );
    let late = wallet.pay_nonce("r-1", &payment(&from, &to)).await.unwrap();
    assert_eq!(&late.txid, replacement);
}

#[tokio::test]
async fn a_nonce_consumed_by_a_foreign_transaction_settles_foreign() {
    let anvil = Anvil::start_with(&["--no-mining"]).await;
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = Arc::new(funded());
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let to = fresh();
    let wallet = wallet(&client, &hot, &store, "w1");
    let sent = wallet.pay_nonce("f-1", &payment(&from, &to)).await.unwrap();
    assert_eq!(sent.outcome, SubmitOutcome::Accepted);
    let nonce = sent.sequence.unwrap();

    // Someone with the key sends another transaction on that nonce, paying more fees.
    let quote = client.fees(1_000_000_000_000).await.unwrap();
    let outsider = fresh();
    let foreign = client
        .build_transfer(&Transfer {
            to: outsider.clone(),
            value: Amount::from_u128(5),
            nonce,
            fees: FeeQuote {
                max_fee_per_gas: quote.max_fee_per_gas * 3,
                max_priority_fee_per_gas: quote.max_priority_fee_per_gas * 3 + 1,
            },
        })
        .unwrap();
    let foreign = sign(foreign, hot.as_ref(), 0).unwrap();
    assert_eq!(client.submit(&foreign).await, SubmitOutcome::Accepted);
    mine(&anvil).await;

    let round = wallet.settle_nonces(0, &PATIENT).await.unwrap();
    let [settled] = round.as_slice() else {
        panic!("{round:?}")
    };
    assert!(
        matches!(&settled.result, Ok(NonceOutcome::Foreign { payout, nonce: n }) if payout == "f-1" && *n == nonce),
        "{settled:?}"
    );
    let held = store
        .nonce_get(Chain::Ethereum, "f-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.settlement, Some(NonceSettlement::Foreign));
    let retried = wallet.pay_nonce("f-1", &payment(&from, &to)).await;
    assert!(
        matches!(retried, Err(WalletError::NonceForeign { .. })),
        "{retried:?}"
    );
    assert_eq!(balance(&client, &to).await, Amount::ZERO, "never paid");
    assert_eq!(balance(&client, &outsider).await, Amount::from_u128(5));
}

/// Two processes run the same payout's job at once (a lease that ran out while the first
/// still worked): whatever the interleaving, one nonce and one transaction pay it; each
/// process either finishes that transaction or is told to try again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_paying_one_payout_at_once_pay_it_once() {
    let anvil = Anvil::start().await;
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = Arc::new(funded());
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let start = client.pending_nonce(&from).await.unwrap();
    let rounds: u64 = 5;
    let mut recipients = Vec::new();
    for round in 0..rounds {
        let to = fresh();
        let payout = format!("race-{round}");
        let (one, two) = (
            wallet(&client, &hot, &store, "process-1"),
            wallet(&client, &hot, &store, "process-2"),
        );
        let paid = payment(&from, &to);
        let (first, second) =
            tokio::join!(one.pay_nonce(&payout, &paid), two.pay_nonce(&payout, &paid));
        let txids: Vec<String> = [&first, &second]
            .into_iter()
            .filter_map(|result| match result {
                Ok(sent) => Some(sent.txid.clone()),
                Err(error) => {
                    assert!(error.is_retriable(), "{error}");
                    None
                }
            })
            .collect();
        assert!(!txids.is_empty(), "{first:?} {second:?}");
        assert!(txids.iter().all(|txid| *txid == txids[0]), "{txids:?}");
        // The retry the worker makes finishes the same transaction.
        let retry = one.pay_nonce(&payout, &paid).await.unwrap();
        assert_eq!(retry.txid, txids[0]);
        assert!(included(&client, &retry.txid, WAIT).await.1);
        recipients.push(to);
    }
    assert_eq!(client.pending_nonce(&from).await.unwrap(), start + rounds);
    for to in &recipients {
        assert_eq!(
            balance(&client, to).await,
            Amount::from_u128(AMOUNT),
            "paid once"
        );
    }
}

async fn pipelined(backend: Backend) {
    let anvil = Anvil::start().await;
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = Arc::new(funded());
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let start = client.pending_nonce(&from).await.unwrap();
    // A reservation whose holder died and whose lease is over: its nonce is a gap to fill.
    let long_ago = Utc::now() - Duration::from_secs(600);
    let abandoned = store
        .nonce_reserve(&NonceReserve {
            chain: Chain::Ethereum,
            address: from.to_string(),
            payout: "abandoned".into(),
            node_pending: start,
            holder: "dead".into(),
            lease_until: long_ago + Duration::from_secs(60),
            now: long_ago,
        })
        .await
        .unwrap();
    assert_eq!(abandoned.nonce, start);

    let wallet = Arc::new(wallet(&client, &hot, &store, "hot-0"));
    let recipients: Vec<Address> = (0..20).map(|_| fresh()).collect();
    let mut tasks = Vec::new();
    for (index, to) in recipients.iter().enumerate() {
        let (wallet, paid) = (wallet.clone(), payment(&from, to));
        tasks.push(tokio::spawn(async move {
            wallet
                .pay_nonce(&format!("p-{index}"), &paid)
                .await
                .unwrap()
        }));
    }
    let mut sent = Vec::new();
    for task in tasks {
        sent.push(task.await.unwrap());
    }
    let mut nonces: Vec<u64> = sent.iter().map(|sent| sent.sequence.unwrap()).collect();
    nonces.sort_unstable();
    assert_eq!(
        nonces,
        (start..start + 20).collect::<Vec<u64>>(),
        "gap-free"
    );
    for sent in &sent {
        assert!(included(&client, &sent.txid, WAIT).await.1);
    }
    assert_eq!(client.pending_nonce(&from).await.unwrap(), start + 20);
    let round = wallet.settle_nonces(0, &PATIENT).await.unwrap();
    assert_eq!(round.len(), 20);
    for settled in &round {
        assert!(
            matches!(
                settled.result,
                Ok(NonceOutcome::Mined { success: true, .. })
            ),
            "{settled:?}"
        );
    }
    for to in &recipients {
        assert_eq!(balance(&client, to).await, Amount::from_u128(AMOUNT));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pipelined_payouts_from_one_address_on_postgres() {
    pipelined(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pipelined_payouts_from_one_address_on_sqlite() {
    pipelined(Backend::Sqlite).await;
}
