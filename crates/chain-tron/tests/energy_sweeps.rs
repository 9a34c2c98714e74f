//! TRON consolidation (`wallet::energy_sweeps::EnergySweeper`) on the TRON simulation with its
//! fees on, on both stores: a USDT sweep gets its energy lent by the staking account and gives
//! it back (tokens moved exactly, the stake home again); a sweep burns TRX topped up when the
//! staking account cannot lend enough (its delegation refused with java-tron's text); a sweep
//! that lands failed (out of energy) gives the energy back all the same (and the address is
//! swept again later, once; three failures of one address within a day stop new sweeps of
//! it); two sweeps priced in one round never count on the same stake (the second burns); a TRX
//! sweep leaves its address empty; a round stopped at each await, then run again, ends with
//! one top-up, one delegation, one sweep and one reclaim. The costs of both paths are printed
//! (`cargo test -p chain-tron --test energy_sweeps -- --nocapture`).

mod common;

use std::sync::Arc;

use chain::address::{Address, Network};
use chain::provider::{Asset, Delegation, SubmitOutcome};
use chain_tron::Tron;
use chrono::Utc;
use common::fake::{Ledger, SOLIDIFIED_LAG, Shared, USDT, addr, fake_node, hex21};
use domain::{Amount, Chain};
use signer::{DepositSigner, InProcessSigner, Mnemonic, Signer};
use store::{
    AttemptState, DepositAddressInsert, EnergySource, ReclaimState, Store, SweepRow, SweepState,
};
use testkit::TestDb;
use wallet::Wallet;
use wallet::energy_sweeps::{ACTIVATION_SUN, EnergySweepPolicy, EnergySweeper};
use wallet::sweeps::StopAt;

const HOT: u32 = 0;
const GAS: u32 = 1;
const STAKER: u32 = 2;
const TRX: u64 = 1_000_000;

struct Setup {
    store: Store,
    tron: Tron,
    ledger: Shared,
    keys: Arc<InProcessSigner>,
    deposits: Arc<DepositSigner>,
    next_index: std::sync::atomic::AtomicU32,
}

impl Setup {
    /// The hot wallet (holding USDT already), the gas wallet with 1,000 TRX, and the staking
    /// account with `staked` TRX staked for energy.
    async fn new(db: &TestDb, staked: u64) -> Setup {
        let keys = Arc::new(InProcessSigner::new(
            &Mnemonic::generate(),
            Network::Mainnet,
        ));
        let address = |index| keys.address(Chain::Tron, index).unwrap();
        let mut ledger = Ledger {
            head: 100,
            fees: true,
            ..Ledger::default()
        };
        ledger.fund(&address(HOT), 10 * TRX, 1_000_000);
        ledger.fund(&address(GAS), 1_000 * TRX, 0);
        ledger.fund(&address(STAKER), 100_000 * TRX, 0);
        ledger.stake_energy(&address(STAKER), staked * TRX);
        let (tron, ledger) = fake_node(ledger).await;
        Setup {
            store: db.store().await,
            tron,
            ledger,
            deposits: Arc::new(DepositSigner::new(keys.clone())),
            keys,
            next_index: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn address(&self, index: u32) -> Address {
        self.keys.address(Chain::Tron, index).unwrap()
    }

    fn policy(&self) -> EnergySweepPolicy {
        EnergySweepPolicy {
            destination: self.address(HOT),
            gas_index: GAS,
            staker_index: Some(STAKER),
            minimums: vec![
                (Asset::Native, Amount::from_u128(10 * u128::from(TRX))),
                (Asset::Token(addr(USDT)), Amount::from_u128(1_000_000)),
            ],
            network: Network::Mainnet,
            hot_index: HOT,
            cold: None,
            ceilings: Vec::new(),
        }
    }

    fn sweeper(&self) -> EnergySweeper<Tron> {
        EnergySweeper::new(
            self.tron.clone(),
            self.keys.clone(),
            self.deposits.clone(),
            self.store.clone(),
            "tron-consolidation-1:test",
            self.policy(),
        )
        .unwrap()
    }

    /// Issues the next deposit address, as the API does, and gives it `sun` TRX and `usdt`
    /// USDT (a deposit; USDT alone does not create the account), in a block that is then
    /// solidified (as the deposit worker credits it).
    async fn deposit(&self, sun: u64, usdt: u128) -> Address {
        let address = self.deposit_unsettled(sun, usdt).await;
        self.ledger.lock().unwrap().mine_n(1 + SOLIDIFIED_LAG);
        address
    }

    /// [`Setup::deposit`] with the block not yet mined nor solidified.
    async fn deposit_unsettled(&self, sun: u64, usdt: u128) -> Address {
        let index = self
            .next_index
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let address = self
            .keys
            .deposit_xpub(Chain::Tron)
            .unwrap()
            .address(index)
            .unwrap();
        self.store
            .deposit_address_insert(&DepositAddressInsert {
                chain: Chain::Tron,
                reference: format!("user:{index}"),
                index,
                address: address.to_string(),
                actor: "test".into(),
                now: Utc::now(),
            })
            .await
            .unwrap();
        let mut ledger = self.ledger.lock().unwrap();
        if sun > 0 {
            ledger.fund(&address, sun, 0);
        }
        if usdt > 0 {
            *ledger.usdt.entry(hex21(&address)).or_default() += usdt;
        }
        address
    }

    /// Puts what was broadcast into a block and solidifies it.
    fn mine(&self) {
        let mut ledger = self.ledger.lock().unwrap();
        if !ledger.pool.is_empty() {
            ledger.mine_n(1 + SOLIDIFIED_LAG);
        }
    }

    /// Runs rounds (mining after each) until every sweep of the chain ended with nothing
    /// left to take back; at most `rounds`.
    async fn settle(&self, sweeper: &EnergySweeper<Tron>, rounds: usize) -> Vec<SweepRow> {
        for _ in 0..rounds {
            let round = sweeper.run_once().await.unwrap();
            assert!(round.errors.is_empty(), "{:?}", round.errors);
            self.mine();
            let rows = self.store.sweep_list(Chain::Tron, None, 100).await.unwrap();
            if !rows.is_empty()
                && rows.iter().all(|row| {
                    !row.state.is_open() && row.reclaim_state != Some(ReclaimState::Pending)
                })
                && self.ledger.lock().unwrap().pool.is_empty()
            {
                return rows;
            }
        }
        panic!("the sweeps did not end in {rounds} rounds");
    }

    fn trx(&self, address: &Address) -> u64 {
        self.ledger
            .lock()
            .unwrap()
            .trx
            .get(&hex21(address))
            .copied()
            .unwrap_or(0)
    }

    fn usdt(&self, address: &Address) -> u128 {
        self.ledger
            .lock()
            .unwrap()
            .usdt
            .get(&hex21(address))
            .copied()
            .unwrap_or(0)
    }

    /// The landed attempts of a payout, and whether any is still live.
    async fn landed(&self, payout: &str) -> usize {
        let attempts = self.store.attempts_of(Chain::Tron, payout).await.unwrap();
        assert!(
            attempts.iter().all(|a| a.state != AttemptState::Live),
            "{payout} has a live attempt"
        );
        attempts
            .iter()
            .filter(|a| a.state == AttemptState::Landed)
            .count()
    }
}

fn print_cost(path: &str, row: &SweepRow, burned_by_sweep: u64) {
    println!(
        "FIGURE tron sweep cost, {path}: top-up {} sun (fee {} sun), delegation fee {} sun, sweep fee {} sun (energy {} of which burned for {burned_by_sweep} sun, bandwidth {} bytes), reclaim fee {} sun; burned in all {} sun",
        row.top_up_amount
            .map_or(ruint::aliases::U256::ZERO, |a| a.base_units()),
        row.top_up_fee
            .map_or(ruint::aliases::U256::ZERO, |a| a.base_units()),
        row.delegate_fee
            .map_or(ruint::aliases::U256::ZERO, |a| a.base_units()),
        row.sweep_fee
            .map_or(ruint::aliases::U256::ZERO, |a| a.base_units()),
        row.energy_used.unwrap_or(0),
        row.bandwidth_used.unwrap_or(0),
        row.reclaim_fee
            .map_or(ruint::aliases::U256::ZERO, |a| a.base_units()),
        row.cost().base_units(),
    );
}

async fn a_usdt_sweep_borrows_energy_and_gives_it_back(db: &TestDb) {
    let setup = Setup::new(db, 50_000).await;
    let staker = hex21(&setup.address(STAKER));
    let lendable = setup.ledger.lock().unwrap().delegatable(&staker);
    let gas_before = setup.trx(&setup.address(GAS));
    let hot_before = setup.usdt(&setup.address(HOT));
    let deposit = setup.deposit(0, 25_000_000).await;
    let sweeper = setup.sweeper();
    let rows = setup.settle(&sweeper, 8).await;
    let [row] = rows.as_slice() else {
        panic!("{rows:?}")
    };
    assert_eq!(row.state, SweepState::Swept, "{row:?}");
    assert_eq!(row.energy_source, Some(EnergySource::Delegation));
    assert_eq!(row.reclaim_state, Some(ReclaimState::Done));
    assert!(row.delegate_txid.is_some() && row.reclaim_txid.is_some());
    // The tokens moved exactly.
    assert_eq!(setup.usdt(&deposit), 0);
    assert_eq!(setup.usdt(&setup.address(HOT)), hot_before + 25_000_000);
    // The address was activated by the least transfer; the gas wallet paid it and the
    // creation fees, nothing else.
    assert_eq!(
        row.top_up_amount,
        Some(Amount::from_u128(u128::from(ACTIVATION_SUN)))
    );
    let charges = setup.ledger.lock().unwrap().charges.clone();
    let top_up = charges[row.top_up_txid.as_ref().unwrap()];
    assert_eq!(
        setup.trx(&setup.address(GAS)),
        gas_before - ACTIVATION_SUN - top_up.fee
    );
    assert_eq!(
        row.top_up_fee,
        Some(Amount::from_u128(u128::from(top_up.fee)))
    );
    // The sweep burned nothing for energy: all of it was lent.
    let sweep = charges[row.sweep_txid.as_ref().unwrap()];
    assert_eq!(
        (sweep.energy_fee, sweep.energy_usage),
        (0, sweep.energy_total)
    );
    assert_eq!(row.energy_used, Some(sweep.energy_total));
    assert!(sweep.energy_total > 0);
    // The energy is back: nothing lent, the whole stake home, and what the staking account
    // can lend again is its stake less the used energy the reclaim brought back with it.
    {
        let ledger = setup.ledger.lock().unwrap();
        assert!(ledger.delegated.is_empty(), "{:?}", ledger.delegated);
        assert_eq!(ledger.staked(&staker), 50_000 * TRX);
        let carried = ledger.energy_used.get(&staker).copied().unwrap_or(0);
        assert_eq!(
            ledger.delegatable(&staker),
            lendable - tron_sim::stake_of_energy(carried)
        );
    }
    // One of each, by the attempts path.
    for payout in [
        row.top_up_payout(),
        row.delegate_payout(),
        row.sweep_payout(),
        row.reclaim_payout(),
    ] {
        assert_eq!(setup.landed(&payout).await, 1, "{payout}");
    }
    print_cost("delegation", row, sweep.energy_fee);
}

async fn a_usdt_sweep_burns_trx_when_the_staker_cannot_lend(db: &TestDb) {
    // 10 TRX staked gives far less energy than a transfer needs.
    let setup = Setup::new(db, 10).await;
    let staker = setup.address(STAKER);
    // Asked to lend more than it can, the node refuses with java-tron's own text.
    let wallet = Wallet::new(
        setup.tron.clone(),
        setup.keys.clone(),
        setup.store.clone(),
        "test",
    );
    let refused = wallet
        .pay_delegation(
            "probe:1",
            &Delegation {
                from_index: STAKER,
                owner: staker.clone(),
                receiver: setup.address(GAS),
                balance: 400 * TRX,
                reclaim: false,
            },
        )
        .await
        .unwrap();
    match &refused.outcome {
        SubmitOutcome::Rejected { reason, .. } => assert!(
            reason.contains(
                "delegateBalance must be less than or equal to available FreezeEnergyV2 balance"
            ),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    let hot_before = setup.usdt(&setup.address(HOT));
    let deposit = setup.deposit(0, 7_000_000).await;
    let rows = setup.settle(&setup.sweeper(), 8).await;
    let [row] = rows.as_slice() else {
        panic!("{rows:?}")
    };
    assert_eq!(row.state, SweepState::Swept, "{row:?}");
    assert_eq!(row.energy_source, Some(EnergySource::Burn));
    assert_eq!(
        (row.reclaim_state, row.delegate_txid.as_ref()),
        (None, None)
    );
    assert_eq!(setup.usdt(&deposit), 0);
    assert_eq!(setup.usdt(&setup.address(HOT)), hot_before + 7_000_000);
    // The top-up carried exactly what the transfer burned for its energy, and the
    // activating sun stays.
    let sweep = setup.ledger.lock().unwrap().charges[row.sweep_txid.as_ref().unwrap()];
    assert_eq!(sweep.energy_usage, 0);
    assert_eq!(
        row.top_up_amount,
        Some(Amount::from_u128(u128::from(
            sweep.energy_fee + ACTIVATION_SUN
        )))
    );
    assert_eq!(setup.trx(&deposit), ACTIVATION_SUN);
    assert!(setup.ledger.lock().unwrap().delegated.is_empty());
    print_cost("top-up (energy burned)", row, sweep.energy_fee);
}

async fn a_failed_sweep_still_gives_the_energy_back(db: &TestDb) {
    let setup = Setup::new(db, 50_000).await;
    let staker = hex21(&setup.address(STAKER));
    let hot_before = setup.usdt(&setup.address(HOT));
    // Token transfers land out of energy for now: the sweep fails on chain.
    setup.ledger.lock().unwrap().fail_tokens = true;
    let deposit = setup.deposit(0, 4_000_000).await;
    let sweeper = setup.sweeper();
    let mut failed = None;
    for _ in 0..8 {
        let round = sweeper.run_once().await.unwrap();
        assert!(round.errors.is_empty(), "{:?}", round.errors);
        setup.mine();
        let rows = setup.store.sweep_list(Chain::Tron, None, 10).await.unwrap();
        if let Some(row) = rows.iter().find(|row| {
            row.state == SweepState::Failed && row.reclaim_state == Some(ReclaimState::Done)
        }) {
            failed = Some(row.clone());
            break;
        }
    }
    let row = failed.expect("the failed sweep's energy taken back within 8 rounds");
    assert!(
        row.error
            .as_deref()
            .unwrap_or("")
            .contains("landed but failed")
    );
    assert!(row.reclaim_txid.is_some());
    // Nothing moved, and the energy is back all the same.
    assert_eq!(setup.usdt(&deposit), 4_000_000);
    {
        let ledger = setup.ledger.lock().unwrap();
        assert!(ledger.delegated.is_empty(), "{:?}", ledger.delegated);
        assert_eq!(ledger.staked(&staker), 50_000 * TRX);
    }
    // The address still holds its tokens, so a later round sweeps it again, once.
    setup.ledger.lock().unwrap().fail_tokens = false;
    let rows = setup.settle(&sweeper, 8).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].state, SweepState::Swept, "{rows:?}");
    assert_eq!(setup.usdt(&deposit), 0);
    assert_eq!(setup.usdt(&setup.address(HOT)), hot_before + 4_000_000);
    assert!(setup.ledger.lock().unwrap().delegated.is_empty());
}

/// Each failed sweep burned a fee: after `SWEEP_FAILURES_MAX` failures of one address and
/// asset within a day, no new sweep of it starts, round after round, even once the cause is
/// gone (a person looks first; a day after the oldest failure, one more is tried).
async fn repeated_failures_stop_new_sweeps_of_the_address(db: &TestDb) {
    use wallet::sweeps::SWEEP_FAILURES_MAX;
    let setup = Setup::new(db, 50_000).await;
    setup.ledger.lock().unwrap().fail_tokens = true;
    let deposit = setup.deposit(0, 4_000_000).await;
    let sweeper = setup.sweeper();
    let failed = |rows: &[SweepRow]| {
        rows.iter()
            .filter(|row| row.state == SweepState::Failed)
            .count() as u64
    };
    let mut rows = Vec::new();
    for _ in 0..60 {
        let round = sweeper.run_once().await.unwrap();
        assert!(round.errors.is_empty(), "{:?}", round.errors);
        setup.mine();
        rows = setup
            .store
            .sweep_list(Chain::Tron, None, 100)
            .await
            .unwrap();
        if failed(&rows) == SWEEP_FAILURES_MAX && rows.iter().all(|row| !row.state.is_open()) {
            break;
        }
    }
    assert_eq!(failed(&rows), SWEEP_FAILURES_MAX, "{rows:#?}");
    // The cause is gone, but no new sweep starts.
    setup.ledger.lock().unwrap().fail_tokens = false;
    for _ in 0..6 {
        let round = sweeper.run_once().await.unwrap();
        assert!(round.created.is_empty(), "{round:?}");
        setup.mine();
    }
    let after = setup
        .store
        .sweep_list(Chain::Tron, None, 100)
        .await
        .unwrap();
    assert_eq!(after.len() as u64, SWEEP_FAILURES_MAX, "{after:#?}");
    assert_eq!(setup.usdt(&deposit), 4_000_000, "still on the address");
    assert_eq!(
        setup
            .store
            .sweep_failures(
                Chain::Tron,
                deposit.as_str(),
                &after[0].asset,
                chrono::Utc::now() - chrono::Duration::days(1),
            )
            .await
            .unwrap(),
        SWEEP_FAILURES_MAX
    );
    assert_eq!(
        setup
            .store
            .sweep_failures(
                Chain::Tron,
                deposit.as_str(),
                &after[0].asset,
                chrono::Utc::now() + chrono::Duration::seconds(1),
            )
            .await
            .unwrap(),
        0,
        "none from the future"
    );
}

/// Two USDT sweeps priced in one round when the staking account can lend for one only: the
/// node's `getcandelegatedmaxsize` does not know the first sweep's delegation (not sent yet),
/// so the second counts it as promised and burns TRX instead; without that, its delegation
/// would be refused at broadcast round after round. Both end swept, no round erring.
async fn sweeps_priced_together_never_count_on_the_same_stake(db: &TestDb) {
    use chain::provider::{ChainEnergy, Payment};
    let setup = Setup::new(db, 50_000).await;
    let staker = setup.address(STAKER);
    let first = setup.deposit(0, 4_000_000).await;
    let second = setup.deposit(0, 5_000_000).await;
    // What one sweep's delegation stakes, as the sweeper prices it (the deposit address
    // has no energy of its own).
    let energy = setup
        .tron
        .energy_needed(&Payment {
            from_index: 0,
            from: first.clone(),
            to: setup.address(HOT),
            asset: Asset::Token(addr(USDT)),
            amount: Amount::from_u128(4_000_000),
        })
        .await
        .unwrap();
    let stake = setup.tron.stake_for_energy(&staker, energy).await.unwrap();
    // Enough for one and a half.
    setup
        .ledger
        .lock()
        .unwrap()
        .staked_energy
        .insert(hex21(&staker), stake + stake / 2);
    assert!(setup.tron.delegatable(&staker).await.unwrap() >= stake);
    let sweeper = setup.sweeper();
    let rows = setup.settle(&sweeper, 12).await;
    let source = |address: &Address| {
        rows.iter()
            .find(|row| row.address == address.to_string())
            .map(|row| (row.state, row.energy_source))
    };
    assert_eq!(
        source(&first),
        Some((SweepState::Swept, Some(EnergySource::Delegation))),
        "{rows:#?}"
    );
    assert_eq!(
        source(&second),
        Some((SweepState::Swept, Some(EnergySource::Burn))),
        "{rows:#?}"
    );
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!((setup.usdt(&first), setup.usdt(&second)), (0, 0));
    assert!(setup.ledger.lock().unwrap().delegated.is_empty());
}

async fn a_trx_sweep_leaves_the_address_empty(db: &TestDb) {
    let setup = Setup::new(db, 50_000).await;
    let hot_before = setup.trx(&setup.address(HOT));
    let deposit = setup.deposit(50 * TRX, 0).await;
    let rows = setup.settle(&setup.sweeper(), 4).await;
    let [row] = rows.as_slice() else {
        panic!("{rows:?}")
    };
    assert_eq!(row.state, SweepState::Swept, "{row:?}");
    // Its free bandwidth pays the transfer: everything goes, nothing is left.
    assert_eq!(row.amount, Amount::from_u128(u128::from(50 * TRX)));
    assert_eq!(setup.trx(&deposit), 0);
    assert_eq!(setup.trx(&setup.address(HOT)), hot_before + 50 * TRX);
    assert_eq!(row.energy_source, None);
    assert_eq!(row.cost(), Amount::ZERO);
}

/// Only what the solidified block shows is swept, as deposits are credited: a deposit in a
/// block not yet solidified waits; once it is, the address is swept; and a later deposit
/// not yet solidified is left for the next sweep, never taken with the first.
async fn only_a_solidified_balance_is_swept(db: &TestDb) {
    let setup = Setup::new(db, 50_000).await;
    let sweeper = setup.sweeper();
    let deposit = setup.deposit_unsettled(50 * TRX, 0).await;
    setup.ledger.lock().unwrap().mine_n(SOLIDIFIED_LAG);
    // In a block, SOLIDIFIED_LAG behind the head's one short of solidified: nothing starts.
    let round = sweeper.run_once().await.unwrap();
    assert!(round.errors.is_empty(), "{:?}", round.errors);
    assert!(round.created.is_empty(), "{round:?}");
    assert!(
        setup
            .store
            .sweep_list(Chain::Tron, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // One more block solidifies it: swept whole.
    setup.ledger.lock().unwrap().mine_n(1);
    // A second deposit to the same address, not yet solidified, stays out of this sweep.
    {
        let mut ledger = setup.ledger.lock().unwrap();
        ledger.fund(&deposit, 17 * TRX, 0);
        ledger.mine_n(1);
    }
    let round = sweeper.run_once().await.unwrap();
    assert!(round.errors.is_empty(), "{:?}", round.errors);
    let [id] = round.created.as_slice() else {
        panic!("{round:?}")
    };
    let row = setup.store.sweep_get(*id).await.unwrap().unwrap();
    assert_eq!(row.amount, Amount::from_u128(u128::from(50 * TRX)));
    // Once the later deposit is solidified too, it is swept by a sweep of its own (the
    // address's second, after its first ended).
    setup.settle(&sweeper, 8).await;
    let rows = setup.settle(&sweeper, 8).await;
    let amounts: Vec<Amount> = rows.iter().rev().map(|row| row.amount).collect();
    assert_eq!(
        amounts,
        vec![
            Amount::from_u128(u128::from(50 * TRX)),
            Amount::from_u128(u128::from(17 * TRX))
        ],
        "{rows:?}"
    );
    assert!(rows.iter().all(|row| row.state == SweepState::Swept));
    assert_eq!(setup.trx(&deposit), 0);
}

async fn a_round_stopped_at_each_await_finishes_once(db: &TestDb) {
    let setup = Setup::new(db, 50_000).await;
    let staker = hex21(&setup.address(STAKER));
    let points = [
        StopAt::SweepStored,
        StopAt::TopUpSent,
        StopAt::TopUpMined,
        StopAt::DelegationSent,
        StopAt::DelegationMined,
        StopAt::SweepSent,
        StopAt::SweepMined,
        StopAt::ReclaimSent,
        StopAt::ReclaimMined,
    ];
    let normal = setup.sweeper();
    for point in points {
        let hot_before = setup.usdt(&setup.address(HOT));
        let deposit = setup.deposit(0, 3_000_000).await;
        let stopping = setup.sweeper().stop_at(point);
        // Rounds of the process that dies at `point`, until it does.
        let mut stopped = false;
        for _ in 0..8 {
            match stopping.run_once().await {
                Ok(round) => assert!(round.errors.is_empty(), "{point:?}: {:?}", round.errors),
                Err(error) => {
                    assert!(error.to_string().contains("stopped at"), "{error}");
                    stopped = true;
                    break;
                }
            }
            setup.mine();
        }
        assert!(stopped, "{point:?} was never reached");
        setup.mine();
        // Another process finishes it.
        let rows = setup.settle(&normal, 8).await;
        let row = rows
            .iter()
            .find(|row| row.address == deposit.to_string())
            .unwrap();
        assert_eq!(row.state, SweepState::Swept, "{point:?}: {row:?}");
        assert_eq!(setup.usdt(&deposit), 0, "{point:?}");
        assert_eq!(
            setup.usdt(&setup.address(HOT)),
            hot_before + 3_000_000,
            "{point:?}"
        );
        for payout in [
            row.top_up_payout(),
            row.delegate_payout(),
            row.sweep_payout(),
            row.reclaim_payout(),
        ] {
            assert_eq!(setup.landed(&payout).await, 1, "{point:?}: {payout}");
        }
        let ledger = setup.ledger.lock().unwrap();
        assert!(ledger.delegated.is_empty(), "{point:?}");
        assert_eq!(ledger.staked(&staker), 50_000 * TRX, "{point:?}");
    }
    // Every transaction the chain holds is one of those: 4 per sweep.
    let ledger = setup.ledger.lock().unwrap();
    let mined: usize = ledger.blocks.values().map(Vec::len).sum();
    assert_eq!(mined, 4 * points.len());
}

testkit::on_both_stores!(
    db: a_usdt_sweep_borrows_energy_and_gives_it_back,
    a_usdt_sweep_burns_trx_when_the_staker_cannot_lend,
    a_failed_sweep_still_gives_the_energy_back,
    repeated_failures_stop_new_sweeps_of_the_address,
    sweeps_priced_together_never_count_on_the_same_stake,
    a_trx_sweep_leaves_the_address_empty,
    a_round_stopped_at_each_await_finishes_once,
    only_a_solidified_balance_is_swept,
);
