//! Payouts recorded in the store before they are broadcast (DESIGN.md §2.2) and settled from
//! the store alone (§2.3), on a regtest node and both stores: each "process" is its own
//! `Store` handle on one database, its own unspent-output set and its own `Payer`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use chain::address::Address;
use chain::attempts::{Attempt, AttemptError, AttemptLog, AttemptNew, AttemptState, Outpoint};
use chain::provider::{Asset, ChainRead, ChainSubmit, Keychain, SubmitOutcome, TxStatus};
use chain_bitcoin::UtxoSet;
use chain_bitcoin::batch::{Batcher, Pending};
use chain_bitcoin::payout::{
    BUMPS_MAX, Paid, Payer, PayoutError, Prepared, Reconciled, SETTLE_CONFIRMATIONS_MIN,
};
use common::*;
use domain::{Amount, Chain};
use testkit::TestDb;
use wallet::attempt_log::StoreAttempts;

const BTC: u128 = 100_000_000;

/// The store's attempt log, with the first `reserved` read of each process held until
/// both processes have read: both then select among the same outputs, so the race on the
/// store's reservations happens every run, not by chance. Every call goes to the store.
struct Gated {
    store: StoreAttempts,
    barrier: Option<(Arc<Barrier>, AtomicBool)>,
    /// A payout whose attempts cannot be read (the log fails for it alone).
    failing: std::sync::Mutex<Option<String>>,
}

impl AttemptLog for Gated {
    async fn reserved(&self, chain: Chain) -> Result<Vec<(Outpoint, String)>, AttemptError> {
        let reserved = self.store.reserved(chain).await;
        if let Some((barrier, first)) = &self.barrier
            && first.swap(false, Ordering::SeqCst)
        {
            barrier.wait().await;
        }
        reserved
    }
    async fn record(&self, new: &AttemptNew<'_>) -> Result<(), AttemptError> {
        self.store.record(new).await
    }
    async fn live(&self, chain: Chain, sender: Option<&str>) -> Result<Vec<Attempt>, AttemptError> {
        self.store.live(chain, sender).await
    }
    async fn attempts_of(&self, chain: Chain, payout: &str) -> Result<Vec<Attempt>, AttemptError> {
        if self.failing.lock().unwrap().as_deref() == Some(payout) {
            return Err(AttemptError::Failed {
                retriable: true,
                message: format!("{payout} cannot be read"),
            });
        }
        self.store.attempts_of(chain, payout).await
    }
    async fn landed(&self, chain: Chain, txid: &str) -> Result<(), AttemptError> {
        self.store.landed(chain, txid).await
    }
    async fn dead(&self, chain: Chain, txid: &str) -> Result<(), AttemptError> {
        self.store.dead(chain, txid).await
    }
    async fn checked(&self, chain: Chain, payout: &str) -> Result<(), AttemptError> {
        self.store.checked(chain, payout).await
    }
}

/// One process: its own store handle and its own view of the wallet's outputs.
struct Process {
    log: Gated,
    utxos: UtxoSet,
}

impl Process {
    async fn start(setup: &Setup, db: &TestDb) -> Process {
        Process::gated(setup, db, None).await
    }

    async fn gated(setup: &Setup, db: &TestDb, barrier: Option<Arc<Barrier>>) -> Process {
        let utxos = wallet_utxos(&setup.bitcoin);
        utxos.sync(&setup.bitcoin, 1, 10_000).await.unwrap();
        Process {
            log: Gated {
                store: StoreAttempts::new(db.store().await),
                barrier: barrier.map(|barrier| (barrier, AtomicBool::new(true))),
                failing: std::sync::Mutex::new(None),
            },
            utxos,
        }
    }

    fn payer<'a>(&'a self, setup: &'a Setup) -> Payer<'a, Gated> {
        Payer {
            bitcoin: &setup.bitcoin,
            utxos: &self.utxos,
            log: &self.log,
            signer: &setup.signer,
            sender: "hot",
            min_confirmations: COINBASE_MATURITY,
            settle_confirmations: SETTLE_CONFIRMATIONS_MIN,
        }
    }
}

fn pays(to: &Address, sat: u128) -> Vec<(Address, Amount)> {
    vec![(to.clone(), Amount::from_u128(sat))]
}

async fn balance(setup: &Setup, address: &Address) -> Amount {
    setup
        .bitcoin
        .balance(address, &Asset::Native)
        .await
        .unwrap()
}

async fn states(log: &Gated, payout: &str) -> Vec<(String, AttemptState)> {
    log.attempts_of(Chain::Bitcoin, payout)
        .await
        .unwrap()
        .into_iter()
        .map(|attempt| (attempt.txid, attempt.state))
        .collect()
}

/// Pays withdrawals `name`0..4 of 40 BTC to users `first`.., one after the other.
async fn pay_four(payer: &Payer<'_, Gated>, name: &str, first: u32) -> Vec<Paid> {
    let mut paid = Vec::new();
    for i in 0..4 {
        let to = user(first + i);
        paid.push(
            payer
                .pay(
                    &format!("{name}{i}"),
                    &[],
                    &pays(&to, 40 * BTC),
                    2,
                    first + i,
                )
                .await
                .unwrap(),
        );
    }
    paid
}

/// Two processes pay four withdrawals each at the same time from the same coins: every
/// attempt is recorded with its inputs before it is sent, no input is in two of them, the
/// node takes all eight, and each withdrawal is paid once.
async fn two_processes_paying_at_once_never_share_an_input(db: &TestDb) {
    let setup = Setup::start().await;
    let barrier = Arc::new(Barrier::new(2));
    let (a, b) = (
        Process::gated(&setup, db, Some(barrier.clone())).await,
        Process::gated(&setup, db, Some(barrier)).await,
    );
    let (payer_a, payer_b) = (a.payer(&setup), b.payer(&setup));
    let (paid_a, paid_b) = tokio::join!(pay_four(&payer_a, "a", 0), pay_four(&payer_b, "b", 10));
    for paid in paid_a.iter().chain(&paid_b) {
        assert_eq!(paid.outcome, Some(SubmitOutcome::Accepted), "{paid:?}");
    }
    // Both first payouts selected the same output; the store gave it to one, and the other
    // selected again (more than once if the winner's next payout took its next choice).
    let firsts = (paid_a[0].selections, paid_b[0].selections);
    assert_eq!(firsts.0.min(firsts.1), 1, "{paid_a:?} {paid_b:?}");
    assert!(firsts.0.max(firsts.1) >= 2, "{paid_a:?} {paid_b:?}");
    let live = a.log.live(Chain::Bitcoin, Some("hot")).await.unwrap();
    assert_eq!(live.len(), 8);
    let inputs: Vec<&Outpoint> = live.iter().flat_map(|attempt| &attempt.inputs).collect();
    let distinct: HashSet<&Outpoint> = inputs.iter().copied().collect();
    assert_eq!(distinct.len(), inputs.len(), "an input in two attempts");
    let reserved = b.log.reserved(Chain::Bitcoin).await.unwrap();
    assert_eq!(reserved.len(), inputs.len(), "every input reserved, once");
    mine_elsewhere(&setup.bitcoin, 2).await;
    // Both reconcile at once: each attempt is settled Landed once, by one of them (the
    // other finds it settled and goes on).
    let (report_a, report_b) = tokio::join!(payer_a.reconcile(), payer_b.reconcile());
    let (report_a, report_b) = (report_a.unwrap(), report_b.unwrap());
    let mut landed: Vec<&String> = report_a.landed.iter().chain(&report_b.landed).collect();
    landed.sort();
    landed.dedup();
    assert_eq!(
        (landed.len(), report_a.landed.len() + report_b.landed.len()),
        (8, 8),
        "{report_a:?} {report_b:?}"
    );
    assert_eq!(payer_a.reconcile().await.unwrap(), Reconciled::default());
    for i in (0..4).chain(10..14) {
        assert_eq!(balance(&setup, &user(i)).await, Amount::from_u128(40 * BTC));
    }
}

/// Stored, then the process dies before sending: a fresh process, from the store and the
/// chain alone, sends the same bytes (same txid); paying the payout again builds nothing
/// new; it lands once.
async fn a_crash_between_storing_and_broadcasting_rebroadcasts_the_same_txid(db: &TestDb) {
    let setup = Setup::start().await;
    let to = user(2);
    let stored = {
        let crashed = Process::start(&setup, db).await;
        let prepared = crashed
            .payer(&setup)
            .prepare("c1", &[], &pays(&to, 70_000_000), 2, 0)
            .await
            .unwrap();
        let Prepared::New { signed, .. } = prepared else {
            panic!("a new attempt: {prepared:?}");
        };
        signed.txid
        // The process ends here: its store handle, its outputs and its payer are gone.
    };
    assert_eq!(
        setup.bitcoin.transaction(&stored).await.unwrap(),
        TxStatus::NotFound,
        "never sent"
    );
    let fresh = Process::start(&setup, db).await;
    let payer = fresh.payer(&setup);
    let report = payer.reconcile().await.unwrap();
    assert_eq!(
        report.rebroadcast,
        vec![(stored.clone(), SubmitOutcome::Accepted)]
    );
    assert_eq!(
        payer
            .pay("c1", &[], &pays(&to, 70_000_000), 2, 1)
            .await
            .unwrap(),
        Paid {
            txid: stored.clone(),
            outcome: None,
            selections: 0
        },
        "the payout has a live attempt: nothing new is built"
    );
    mine_elsewhere(&setup.bitcoin, 2).await;
    assert_eq!(
        payer.reconcile().await.unwrap().landed,
        vec![stored.clone()]
    );
    assert_eq!(
        states(&fresh.log, "c1").await,
        vec![(stored, AttemptState::Landed)]
    );
    assert_eq!(
        balance(&setup, &to).await,
        Amount::from_u128(70_000_000),
        "paid once"
    );
    assert_eq!(payer.reconcile().await.unwrap(), Reconciled::default());
    // Paid alone, the withdrawal is held under its own id: a batch holding it too is
    // refused, nothing recorded.
    let batch = ["w-other".to_string(), "c1".to_string()];
    assert!(matches!(
        payer.pay("batch-x", &batch, &pays(&user(3), 10_000_000), 2, 2).await,
        Err(PayoutError::Log(AttemptError::Claimed { ref member, ref payout })) if member == "c1" && payout == "c1"
    ));
    assert!(states(&fresh.log, "batch-x").await.is_empty());
    // A payout to the wallet's own change address is refused before anything is built.
    let own = setup.bitcoin.key_address(Keychain::Change, 9).unwrap();
    assert!(matches!(
        payer.pay("own", &[], &pays(&own, 10_000_000), 2, 3).await,
        Err(PayoutError::Refused(ref reason)) if reason.contains("own address")
    ));
    assert!(states(&fresh.log, "own").await.is_empty());
}

/// A stuck payout replaced by fee: the replacement is recorded with `replaces` before it
/// is sent; exactly one version confirms, and the store says Landed for it and Replaced
/// for the other.
async fn a_payout_replaced_by_fee_lands_exactly_one_version(db: &TestDb) {
    let setup = Setup::start().await;
    let process = Process::start(&setup, db).await;
    let payer = process.payer(&setup);
    let to = user(1);
    let first = payer
        .pay("r1", &[], &pays(&to, 50_000_000), 1, 0)
        .await
        .unwrap();
    assert_eq!(first.outcome, Some(SubmitOutcome::Accepted));
    let second = payer.bump("r1", 10).await.unwrap();
    assert_eq!(second.outcome, Some(SubmitOutcome::Accepted));
    assert_ne!(second.txid, first.txid);
    let attempts = process.log.attempts_of(Chain::Bitcoin, "r1").await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1].replaces.as_deref(), Some(first.txid.as_str()));
    assert_eq!(attempts[1].inputs, attempts[0].inputs, "the same inputs");
    // The old version left the pool; the store keeps both live until one lands.
    assert_eq!(
        setup.bitcoin.transaction(&first.txid).await.unwrap(),
        TxStatus::NotFound
    );
    assert_eq!(payer.reconcile().await.unwrap().waiting, 1);
    mine_elsewhere(&setup.bitcoin, 2).await;
    assert_eq!(
        payer.reconcile().await.unwrap().landed,
        vec![second.txid.clone()]
    );
    assert_eq!(
        states(&process.log, "r1").await,
        vec![
            (first.txid.clone(), AttemptState::Replaced),
            (second.txid.clone(), AttemptState::Landed)
        ]
    );
    assert_eq!(
        setup.bitcoin.transaction(&first.txid).await.unwrap(),
        TxStatus::NotFound
    );
    assert_eq!(balance(&setup, &to).await, Amount::from_u128(50_000_000));
    assert!(matches!(
        payer.bump("r1", 20).await,
        Err(PayoutError::Refused(_))
    ));
}

/// A payout is replaced by fee at most BUMPS_MAX times; then bump refuses, saying why.
async fn a_payout_is_bumped_a_bounded_number_of_times(db: &TestDb) {
    let setup = Setup::start().await;
    let process = Process::start(&setup, db).await;
    let payer = process.payer(&setup);
    let paid = payer
        .pay("b1", &[], &pays(&user(11), 30_000_000), 1, 0)
        .await
        .unwrap();
    assert_eq!(paid.outcome, Some(SubmitOutcome::Accepted));
    for rate in 2..2 + BUMPS_MAX as u64 {
        let bumped = payer.bump("b1", rate).await.unwrap();
        assert_eq!(bumped.outcome, Some(SubmitOutcome::Accepted), "rate {rate}");
    }
    let refused = payer.bump("b1", 50).await;
    assert!(
        matches!(&refused, Err(PayoutError::Refused(reason)) if reason.contains("at most")),
        "{refused:?}"
    );
    let attempts = process.log.attempts_of(Chain::Bitcoin, "b1").await.unwrap();
    assert_eq!(
        attempts.len(),
        1 + BUMPS_MAX,
        "nothing recorded by the refusal"
    );
}

/// An attempt whose input another transaction spent in a block is Dead, its reservation
/// released; only then may the payout be attempted again.
async fn an_attempt_whose_input_is_spent_elsewhere_is_dead(db: &TestDb) {
    let setup = Setup::start().await;
    let process = Process::start(&setup, db).await;
    // Settled two blocks deep: a spend in the tip block alone may still be reorged away.
    let payer = Payer {
        settle_confirmations: 2,
        ..process.payer(&setup)
    };
    let to = user(3);
    let Prepared::New { signed, inputs, .. } = payer
        .prepare("x1", &[], &pays(&to, 60_000_000), 2, 0)
        .await
        .unwrap()
    else {
        panic!("a new attempt");
    };
    // Something outside the log (an operator's sweep with the same keys) spends its coin.
    sweep_outside_the_log(&setup, &process, &inputs[0], &user(5), 50).await;
    // In the pool only: not proven dead; the stored bytes conflict and are not taken.
    let report = payer.reconcile().await.unwrap();
    assert!(report.dead.is_empty(), "{report:?}");
    assert!(matches!(
        report.rebroadcast.as_slice(),
        [(txid, SubmitOutcome::Rejected { retriable: true, .. })] if *txid == signed.txid
    ));
    // In a block one deep: not yet.
    mine_elsewhere(&setup.bitcoin, 1).await;
    process.utxos.sync(&setup.bitcoin, 1, 100).await.unwrap();
    let report = payer.reconcile().await.unwrap();
    assert_eq!((report.dead.len(), report.waiting), (0, 1), "{report:?}");
    // Two deep: dead.
    mine_elsewhere(&setup.bitcoin, 1).await;
    process.utxos.sync(&setup.bitcoin, 1, 100).await.unwrap();
    let report = payer.reconcile().await.unwrap();
    assert_eq!(report.dead, vec![signed.txid.clone()], "{report:?}");
    assert_eq!(
        states(&process.log, "x1").await,
        vec![(signed.txid.clone(), AttemptState::Dead)]
    );
    assert!(
        process
            .log
            .reserved(Chain::Bitcoin)
            .await
            .unwrap()
            .is_empty(),
        "its reservation is released"
    );
    // Every earlier attempt is provably dead: a new one is built, and it lands.
    let again = payer
        .pay("x1", &[], &pays(&to, 60_000_000), 2, 1)
        .await
        .unwrap();
    assert_eq!(again.outcome, Some(SubmitOutcome::Accepted));
    assert_ne!(again.txid, signed.txid);
    mine_elsewhere(&setup.bitcoin, 2).await;
    assert_eq!(payer.reconcile().await.unwrap().landed, vec![again.txid]);
    assert_eq!(balance(&setup, &to).await, Amount::from_u128(60_000_000));
}

/// The review's double payment: a node whose index cannot find a mined transaction by txid
/// (rebuilding it; here none is kept) answers "no such transaction" for the landed attempt,
/// whose own input is spent deep. That is no proof of death: the wallet's outputs say the
/// attempt itself spent it, so it is Landed, and paying the payout again builds nothing.
async fn a_landed_attempt_the_node_cannot_find_by_txid_is_landed_not_dead(db: &TestDb) {
    let setup = Setup::start_without_index().await;
    let process = Process::start(&setup, db).await;
    let payer = Payer {
        settle_confirmations: 2,
        ..process.payer(&setup)
    };
    let to = user(7);
    let paid = payer
        .pay("i1", &[], &pays(&to, 80_000_000), 2, 0)
        .await
        .unwrap();
    assert_eq!(paid.outcome, Some(SubmitOutcome::Accepted));
    mine_elsewhere(&setup.bitcoin, 2).await;
    process.utxos.sync(&setup.bitcoin, 1, 100).await.unwrap();
    // The node cannot say: not "not found" (a retriable error).
    let unknown = setup.bitcoin.transaction(&paid.txid).await.unwrap_err();
    assert!(unknown.retriable, "{unknown}");
    let report = payer.reconcile().await.unwrap();
    assert_eq!(
        (report.landed, report.dead),
        (vec![paid.txid.clone()], vec![]),
        "landed, never dead"
    );
    assert_eq!(
        states(&process.log, "i1").await,
        vec![(paid.txid.clone(), AttemptState::Landed)]
    );
    let again = payer
        .pay("i1", &[], &pays(&to, 80_000_000), 2, 1)
        .await
        .unwrap();
    assert_eq!((again.txid, again.outcome), (paid.txid, None));
    mine_elsewhere(&setup.bitcoin, 1).await;
    assert_eq!(
        balance(&setup, &to).await,
        Amount::from_u128(80_000_000),
        "paid once"
    );
}

/// A reorg to another branch of the same height moves the spend of an attempt's input from
/// a deep block to a shallow one. Until the wallet's outputs follow the node (their last
/// block is not the node's best), no spend they remember proves anything: nothing is Dead.
/// Synced, the spend is one block deep: still nothing; deep enough: Dead.
async fn a_same_height_reorg_declares_nothing_dead_until_the_outputs_are_synced(db: &TestDb) {
    let setup = Setup::start().await;
    let process = Process::start(&setup, db).await;
    let payer = Payer {
        settle_confirmations: 3,
        ..process.payer(&setup)
    };
    let Prepared::New { signed, inputs, .. } = payer
        .prepare("s1", &[], &pays(&user(8), 60_000_000), 2, 0)
        .await
        .unwrap()
    else {
        panic!("a new attempt");
    };
    // Something outside the log spends its coin, in block `fork`, then two more blocks.
    let sweep = sweep_outside_the_log(&setup, &process, &inputs[0], &user(9), 51).await;
    let generate = |txids: Vec<String>| {
        let rpc = setup.bitcoin.rpc();
        async move {
            rpc.call("generateblock", serde_json::json!([ELSEWHERE, txids]))
                .await
                .unwrap();
        }
    };
    generate(vec![sweep.txid.clone()]).await;
    let fork = setup.bitcoin.tip().await.unwrap().head;
    generate(vec![]).await;
    generate(vec![]).await;
    process.utxos.sync(&setup.bitcoin, 1, 100).await.unwrap();
    assert_eq!(process.utxos.last().unwrap().0, fork + 2);
    // The node moves to another branch of the same height: the sweep in its last block.
    let fork_hash = process.utxos.block_hash(fork).unwrap();
    setup
        .bitcoin
        .rpc()
        .call(
            "invalidateblock",
            serde_json::json!([fork_hash.to_string()]),
        )
        .await
        .unwrap();
    generate(vec![]).await;
    generate(vec![]).await;
    generate(vec![sweep.txid.clone()]).await;
    assert_eq!(setup.bitcoin.tip().await.unwrap().head, fork + 2);
    // Not synced: the spend they remember (three deep, on the old branch) proves nothing.
    let report = payer.reconcile().await.unwrap();
    assert_eq!((report.dead.len(), report.waiting), (0, 1), "{report:?}");
    // Synced: the reorg is seen though no block is above the last one applied.
    let synced = process.utxos.sync(&setup.bitcoin, 1, 100).await.unwrap();
    assert_eq!((synced.undone, synced.applied), (3, 3));
    let report = payer.reconcile().await.unwrap();
    assert_eq!(
        (report.dead.len(), report.waiting),
        (0, 1),
        "one deep: {report:?}"
    );
    mine_elsewhere(&setup.bitcoin, 2).await;
    process.utxos.sync(&setup.bitcoin, 1, 100).await.unwrap();
    let report = payer.reconcile().await.unwrap();
    assert_eq!(report.dead, vec![signed.txid.clone()], "{report:?}");
}

/// Fifty withdrawals (each pushed twice, as a job delivered twice would) leave the batcher
/// as two batches of 25, each recorded under its batch key and committed only once stored;
/// two transactions pay every output. A restart that queues the same withdrawals gets the
/// same batch keys, and the store says they are paid: nothing is built again.
async fn fifty_withdrawals_in_two_recorded_batches_paid_once(db: &TestDb) {
    let setup = Setup::start().await;
    let process = Process::start(&setup, db).await;
    let payer = process.payer(&setup);
    let withdrawals: Vec<Pending> = (0..50u32)
        .map(|index| Pending {
            id: format!("w{index}"),
            to: user(index),
            amount: Amount::from_u128(100_000 + u128::from(index)),
        })
        .collect();
    let queue = |batcher: &mut Batcher, now| {
        for pending in &withdrawals {
            batcher.push(pending.clone(), now).unwrap();
            assert!(!batcher.push(pending.clone(), now).unwrap(), "held once");
        }
    };
    let now = Instant::now();
    let mut batcher = Batcher::new(25, Duration::from_secs(30)).unwrap();
    queue(&mut batcher, now);
    let mut sent = Vec::new();
    let mut change = 0;
    while let Some(batch) = batcher.take(now) {
        let outputs = batch.outputs();
        change += 1;
        match payer
            .pay(&batch.key, &batch.ids(), &outputs, 3, change)
            .await
        {
            Ok(paid) => {
                batcher.commit(&batch.key).unwrap();
                assert_eq!(paid.outcome, Some(SubmitOutcome::Accepted));
                sent.push((paid.txid, batch));
            }
            Err(error) => {
                batcher.putback(&batch.key).unwrap();
                panic!("{error}");
            }
        }
    }
    assert_eq!(sent.len(), 2, "50 withdrawals, 25 a transaction");
    assert!(batcher.is_empty() && batcher.out() == 0);
    mine_elsewhere(&setup.bitcoin, 2).await;
    assert_eq!(payer.reconcile().await.unwrap().landed.len(), 2);
    for (txid, batch) in &sent {
        for (vout, pending) in batch.withdrawals.iter().enumerate() {
            let (address, sat, confirmations) = output_of(&setup, txid, vout).await;
            assert_eq!(
                (address, Amount::from_u128(u128::from(sat)), confirmations),
                (pending.to.to_string(), pending.amount, 2),
                "{}",
                pending.id
            );
        }
    }
    // A restart queues the same withdrawals again (its queue is rebuilt): the same keys,
    // already landed in the store, so nothing new is built or sent.
    let mut restarted = Batcher::new(25, Duration::from_secs(30)).unwrap();
    queue(&mut restarted, now);
    for (txid, _) in &sent {
        let batch = restarted.take(now).unwrap();
        let outputs = batch.outputs();
        let paid = payer
            .pay(&batch.key, &batch.ids(), &outputs, 3, 90)
            .await
            .unwrap();
        assert_eq!((&paid.txid, paid.outcome, paid.selections), (txid, None, 0));
        restarted.commit(&batch.key).unwrap();
    }
    // A restart that groups them differently (20 a batch): every batch holds withdrawals the
    // store has in a payout already, so each is refused as claimed and let go; nothing new is
    // built or sent.
    let mut regrouped = Batcher::new(20, Duration::from_secs(30)).unwrap();
    queue(&mut regrouped, now);
    let mut claimed = 0;
    while let Some(batch) = regrouped.take(now + Duration::from_secs(30)) {
        let outputs = batch.outputs();
        match payer.pay(&batch.key, &batch.ids(), &outputs, 3, 91).await {
            Err(PayoutError::Log(AttemptError::Claimed { member, payout })) => {
                assert!(sent.iter().any(|(_, paid)| paid.key == payout), "{payout}");
                regrouped.drop_paid(&batch.key, &[member]).unwrap();
                claimed += 1;
            }
            other => panic!("a regrouped batch must be refused: {other:?}"),
        }
    }
    assert_eq!(claimed, 50, "each withdrawal let go once");
    assert!(regrouped.is_empty() && regrouped.out() == 0);
    for pending in &withdrawals {
        assert_eq!(
            balance(&setup, &pending.to).await,
            pending.amount,
            "paid once"
        );
    }
}

/// Spends `input` (a coin of a recorded attempt) by a transaction outside the log, as an
/// operator's sweep with the same keys would, paying `to` 1 BTC with change `change`; sent.
async fn sweep_outside_the_log(
    setup: &Setup,
    process: &Process,
    input: &Outpoint,
    to: &Address,
    change: u32,
) -> chain::provider::SignedTransaction {
    let coin = process
        .utxos
        .get(&bitcoin::OutPoint {
            txid: input.txid.parse().unwrap(),
            vout: input.vout,
        })
        .unwrap();
    let sweep = setup
        .bitcoin
        .build_payout(&pays(to, BTC), &[coin], 2, change)
        .unwrap();
    let sweep = setup.sign(&sweep);
    assert_eq!(setup.bitcoin.submit(&sweep).await, SubmitOutcome::Accepted);
    sweep
}

/// A payout whose settling fails is reported for it, and the round goes on with the others;
/// a `settle_confirmations` under the floor is refused before anything is settled.
async fn one_failing_payout_does_not_stop_the_round(db: &TestDb) {
    let setup = Setup::start().await;
    let process = Process::start(&setup, db).await;
    let payer = process.payer(&setup);
    let first = payer
        .pay("e1", &[], &pays(&user(21), 10_000_000), 2, 0)
        .await
        .unwrap();
    let second = payer
        .pay("e2", &[], &pays(&user(22), 10_000_000), 2, 1)
        .await
        .unwrap();
    mine_elsewhere(&setup.bitcoin, 2).await;
    let shallow = Payer {
        settle_confirmations: 1,
        ..process.payer(&setup)
    };
    let refused = shallow.reconcile().await;
    assert!(
        matches!(&refused, Err(PayoutError::Refused(reason)) if reason.contains("at least 2")),
        "{refused:?}"
    );
    *process.log.failing.lock().unwrap() = Some("e1".into());
    let report = payer.reconcile().await.unwrap();
    assert_eq!(report.landed, vec![second.txid.clone()], "{report:?}");
    assert_eq!(
        report
            .failed
            .iter()
            .map(|(payout, _)| payout.as_str())
            .collect::<Vec<_>>(),
        ["e1"]
    );
    *process.log.failing.lock().unwrap() = None;
    let report = payer.reconcile().await.unwrap();
    assert_eq!((report.landed, report.failed), (vec![first.txid], vec![]));
}

testkit::on_both_stores!(db:
    one_failing_payout_does_not_stop_the_round,
    fifty_withdrawals_in_two_recorded_batches_paid_once,
    two_processes_paying_at_once_never_share_an_input,
    a_crash_between_storing_and_broadcasting_rebroadcasts_the_same_txid,
    a_payout_replaced_by_fee_lands_exactly_one_version,
    an_attempt_whose_input_is_spent_elsewhere_is_dead,
    a_landed_attempt_the_node_cannot_find_by_txid_is_landed_not_dead,
    a_same_height_reorg_declares_nothing_dead_until_the_outputs_are_synced,
    a_payout_is_bumped_a_bounded_number_of_times,
);
