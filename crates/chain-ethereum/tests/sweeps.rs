//! Consolidation on anvil through `wallet::sweeps::Sweeper`: issued deposit addresses holding
//! ETH and the test token are swept into the hot wallet, a token sweep's gas topped up first
//! from the gas wallet (anvil's key 1); the hot wallet grows by exactly the swept amounts, a
//! native sweep leaves its address at zero, a sweep waits while the base fee is over the
//! cap and while its deposit is not deep enough (and a mined sweep is never taken for a
//! balance still to sweep), and a round that dies at each await of a sweep (`StopAt`), run again by a fresh
//! sweeper, sends no second top-up and no second sweep. The hot wallet's balance above a
//! ceiling goes to a watch-only cold address, exactly the excess, once, also when stopped at
//! each await. Each sweep's cost (top-up gas and
//! sweep gas) is printed (`--no-capture`).

use std::sync::Arc;
use std::time::Duration;

use chain::address::{Address, Network};
use chain::provider::{Asset, ChainRead};
use chain_ethereum::Ethereum;
use chrono::Utc;
use domain::{Amount, Chain};
use signer::{DepositSigner, InProcessSigner, Signer};
use store::{DepositAddressInsert, Store, SweepRow, SweepState};
use testkit::{Anvil, Backend, TestDb};
use wallet::sweeps::{StopAt, SweepPolicy, SweepRound, Sweeper};
use wallet::{NonceSettlePolicy, Wallet};

mod common;
use common::{deploy_token, funded};

const ETH: u128 = 1_000_000_000_000_000_000;
/// One unit of the six-decimal test token.
const USDT: u128 = 1_000_000;
const HOT: u32 = 0;
const GAS: u32 = 1;
const CUSTOMER: u32 = 2;

struct Setup {
    _anvil: Anvil,
    _db: TestDb,
    store: Store,
    client: Ethereum,
    keys: Arc<InProcessSigner>,
    deposits: Arc<DepositSigner>,
    token: Address,
    hot: Address,
    gas: Address,
    next_index: std::sync::atomic::AtomicU32,
}

impl Setup {
    async fn new(backend: Backend) -> Setup {
        let anvil = Anvil::start().await;
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
        let keys = Arc::new(funded());
        let token = deploy_token(&client, &keys, 1_000_000 * USDT).await;
        Setup {
            hot: keys.address(Chain::Ethereum, HOT).unwrap(),
            gas: keys.address(Chain::Ethereum, GAS).unwrap(),
            deposits: Arc::new(DepositSigner::new(keys.clone())),
            _anvil: anvil,
            _db: db,
            store,
            client,
            keys,
            token,
            next_index: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn policy(&self) -> SweepPolicy {
        SweepPolicy {
            destination: self.hot.clone(),
            gas_index: GAS,
            minimums: vec![
                (Asset::Native, Amount::from_u128(ETH / 100)),
                (Asset::Token(self.token.clone()), Amount::from_u128(USDT)),
            ],
            base_fee_max: 100_000_000_000,
            gas_settle: NonceSettlePolicy {
                replace_after: Duration::from_secs(3_600),
                fee_cap: 1_000_000_000_000,
            },
            network: Network::Mainnet,
            confirmations: 1,
            hot_index: HOT,
            cold: None,
            ceilings: Vec::new(),
        }
    }

    fn sweeper(&self, holder: &str, policy: SweepPolicy) -> Sweeper<Ethereum> {
        Sweeper::new(
            self.client.clone(),
            self.keys.clone(),
            self.deposits.clone(),
            self.store.clone(),
            holder,
            policy,
        )
        .unwrap()
    }

    /// Issues the next deposit address, as the API does: derived from the deposit xpub.
    async fn issue(&self) -> Address {
        let index = self
            .next_index
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let xpub = self.keys.deposit_xpub(Chain::Ethereum).unwrap();
        let address = xpub.address(index).unwrap();
        self.store
            .deposit_address_insert(&DepositAddressInsert {
                chain: Chain::Ethereum,
                reference: format!("user:{index}"),
                index,
                address: address.to_string(),
                actor: "test".into(),
                now: Utc::now(),
            })
            .await
            .unwrap();
        address
    }

    /// A customer's deposit: ETH from anvil's key 2, tokens from the deployer.
    async fn deposit(&self, to: &Address, asset: &Asset, amount: u128) {
        let wallet = Wallet::new(
            self.client.clone(),
            self.keys.clone(),
            self.store.clone(),
            "customer",
        );
        let sent = match asset {
            Asset::Native => wallet
                .send_transaction(CUSTOMER, to, Amount::from_u128(amount))
                .await
                .unwrap(),
            Asset::Token(token) => wallet
                .send_token(HOT, token, to, Amount::from_u128(amount))
                .await
                .unwrap(),
        };
        assert!(
            wallet::conformance::included(&self.client, &sent.txid, Duration::from_secs(30))
                .await
                .1
        );
    }

    async fn balance(&self, address: &Address, asset: &Asset) -> u128 {
        let units = ChainRead::balance(&self.client, address, asset)
            .await
            .unwrap()
            .base_units();
        u128::try_from(units).unwrap()
    }

    async fn sweeps(&self) -> Vec<SweepRow> {
        let mut rows = self
            .store
            .sweep_list(Chain::Ethereum, None, 1_000)
            .await
            .unwrap();
        rows.reverse();
        rows
    }

    async fn sweeps_of(&self, address: &Address) -> Vec<SweepRow> {
        self.sweeps()
            .await
            .into_iter()
            .filter(|row| row.address == address.as_str())
            .collect()
    }
}

/// Rounds until no sweep is open and a round neither starts nor moves one (anvil mines each
/// transaction at once, so a sweep takes two or three rounds).
async fn until_idle(sweeper: &Sweeper<Ethereum>, store: &Store) -> Vec<SweepRound> {
    let mut rounds = Vec::new();
    for _ in 0..30 {
        let round = sweeper.run_once().await.unwrap();
        assert!(round.errors.is_empty(), "{round:?}");
        let idle = round.created.is_empty()
            && round.moved.is_empty()
            && store
                .sweep_open(Chain::Ethereum, 10)
                .await
                .unwrap()
                .is_empty();
        rounds.push(round);
        if idle {
            return rounds;
        }
    }
    panic!("the sweeper did not finish: {rounds:?}");
}

fn units(amount: Option<Amount>) -> u128 {
    amount.map_or(0, |amount| u128::try_from(amount.base_units()).unwrap())
}

fn report(row: &SweepRow) {
    let path = match (&row.asset[..], row.top_up_amount) {
        ("native", _) => "native ETH",
        (_, Some(_)) => "ERC-20 with a gas top-up",
        (_, None) => "ERC-20, gas already held",
    };
    println!(
        "sweep {} {path}: amount {} at {} wei/gas, gas limit {}; top-up {} wei (fee {} wei, tx {:?}); sweep fee {} wei (tx {:?}); cost {} wei",
        row.id,
        row.amount.base_units(),
        row.price_per_gas,
        row.gas_limit,
        units(row.top_up_amount),
        units(row.top_up_fee),
        row.top_up_txid,
        units(row.sweep_fee),
        row.sweep_txid,
        row.cost().base_units(),
    );
}

async fn every_address_swept_once(backend: Backend) {
    let setup = Setup::new(backend).await;
    let token = Asset::Token(setup.token.clone());
    let [eth_only, token_only, both, small] = [
        setup.issue().await,
        setup.issue().await,
        setup.issue().await,
        setup.issue().await,
    ];
    setup.deposit(&eth_only, &Asset::Native, ETH).await;
    setup.deposit(&token_only, &token, 5 * USDT).await;
    setup.deposit(&both, &token, 7 * USDT).await;
    setup.deposit(&both, &Asset::Native, 3 * ETH / 10).await;
    // Under the minimum: left where it is.
    setup.deposit(&small, &Asset::Native, ETH / 1_000).await;
    let hot_eth = setup.balance(&setup.hot, &Asset::Native).await;
    let hot_token = setup.balance(&setup.hot, &token).await;
    let gas_nonce = setup.client.pending_nonce(&setup.gas).await.unwrap();

    // Over the base fee cap nothing starts.
    let capped = setup.sweeper(
        "capped",
        SweepPolicy {
            base_fee_max: 0,
            ..setup.policy()
        },
    );
    let round = capped.run_once().await.unwrap();
    assert!(round.base_fee_over_cap.is_some(), "{round:?}");
    assert!(round.created.is_empty(), "{round:?}");
    assert!(setup.sweeps().await.is_empty());

    let sweeper = setup.sweeper("sweeper", setup.policy());
    assert_eq!(sweeper.gas_wallet().unwrap(), setup.gas);
    until_idle(&sweeper, &setup.store).await;

    let sweeps = setup.sweeps().await;
    for row in &sweeps {
        report(row);
        assert_eq!(row.state, SweepState::Swept, "{row:?}");
        assert_eq!(row.destination, setup.hot.as_str());
        let mined = wallet::conformance::included(
            &setup.client,
            row.sweep_txid.as_ref().unwrap(),
            Duration::from_secs(5),
        )
        .await;
        assert!(mined.1, "{row:?}");
    }
    let native: Vec<&SweepRow> = sweeps.iter().filter(|row| row.asset == "native").collect();
    let tokens: Vec<&SweepRow> = sweeps.iter().filter(|row| row.asset != "native").collect();
    assert_eq!(native.len(), 2, "{sweeps:?}");
    assert_eq!(tokens.len(), 2, "{sweeps:?}");
    // Native sweeps: the balance less exactly 21,000 gas at the sweep's price; nothing left.
    for row in &native {
        assert_eq!(units(row.sweep_fee), 21_000 * row.price_per_gas, "{row:?}");
        assert!(row.top_up_amount.is_none());
        let address = Address::parse(Chain::Ethereum, Network::Mainnet, &row.address).unwrap();
        assert_eq!(setup.balance(&address, &Asset::Native).await, 0, "{row:?}");
    }
    let eth_sweep = native
        .iter()
        .find(|row| row.address == eth_only.as_str())
        .unwrap();
    assert_eq!(
        units(Some(eth_sweep.amount)) + units(eth_sweep.sweep_fee),
        ETH
    );
    // The token-only address got exactly its sweep's gas at its price; what the estimate's
    // margin left unused stays there, under the minimum.
    let topped = tokens
        .iter()
        .find(|row| row.address == token_only.as_str())
        .unwrap();
    assert_eq!(
        units(topped.top_up_amount),
        u128::from(topped.gas_limit) * topped.price_per_gas
    );
    assert!(topped.top_up_txid.is_some());
    assert_eq!(
        setup.balance(&token_only, &Asset::Native).await,
        units(topped.top_up_amount) - units(topped.sweep_fee)
    );
    // The address holding ETH paid its token sweep's gas itself, then its ETH was swept.
    let own_gas = tokens
        .iter()
        .find(|row| row.address == both.as_str())
        .unwrap();
    assert!(own_gas.top_up_amount.is_none(), "{own_gas:?}");
    assert!(
        own_gas.id
            < native
                .iter()
                .find(|row| row.address == both.as_str())
                .unwrap()
                .id
    );
    for address in [&token_only, &both] {
        assert_eq!(setup.balance(address, &token).await, 0);
    }
    // The hot wallet grew by exactly what was swept; the gas wallet paid one top-up.
    let swept_eth: u128 = native.iter().map(|row| units(Some(row.amount))).sum();
    let swept_token: u128 = tokens.iter().map(|row| units(Some(row.amount))).sum();
    assert_eq!(swept_token, 12 * USDT);
    assert_eq!(
        setup.balance(&setup.hot, &Asset::Native).await,
        hot_eth + swept_eth
    );
    assert_eq!(
        setup.balance(&setup.hot, &token).await,
        hot_token + swept_token
    );
    assert_eq!(
        setup.client.pending_nonce(&setup.gas).await.unwrap(),
        gas_nonce + 1
    );
    assert_eq!(
        setup.balance(&small, &Asset::Native).await,
        ETH / 1_000,
        "under the minimum"
    );
    assert!(setup.sweeps_of(&small).await.is_empty());
    // Nothing more to do: another round starts nothing.
    let round = sweeper.run_once().await.unwrap();
    assert!(
        round.created.is_empty() && round.moved.is_empty(),
        "{round:?}"
    );
}

#[tokio::test]
async fn every_address_is_swept_once_into_the_hot_wallet_on_postgres() {
    every_address_swept_once(Backend::Postgres).await;
}

#[tokio::test]
async fn every_address_is_swept_once_into_the_hot_wallet_on_sqlite() {
    every_address_swept_once(Backend::Sqlite).await;
}

async fn crash_at_every_await(backend: Backend) {
    let setup = Setup::new(backend).await;
    let token = Asset::Token(setup.token.clone());
    for (point, amount) in [
        (StopAt::SweepStored, 2 * USDT),
        (StopAt::TopUpSent, 3 * USDT),
        (StopAt::TopUpMined, 4 * USDT),
        (StopAt::SweepSent, 5 * USDT),
        (StopAt::SweepMined, 6 * USDT),
    ] {
        let address = setup.issue().await;
        setup.deposit(&address, &token, amount).await;
        let hot_token = setup.balance(&setup.hot, &token).await;
        let gas_nonce = setup.client.pending_nonce(&setup.gas).await.unwrap();

        // The first process runs until it dies at `point`.
        let dying = setup
            .sweeper(&format!("dying-{point:?}"), setup.policy())
            .stop_at(point);
        let mut died = false;
        for _ in 0..10 {
            if let Err(error) = dying.run_once().await {
                assert!(error.to_string().contains("stopped at"), "{error}");
                died = true;
                break;
            }
        }
        assert!(died, "{point:?} was never reached");
        drop(dying);

        // Another process takes over and finishes.
        let rerun = setup.sweeper(&format!("rerun-{point:?}"), setup.policy());
        until_idle(&rerun, &setup.store).await;

        let rows = setup.sweeps_of(&address).await;
        let [row] = rows.as_slice() else {
            panic!("{point:?}: one sweep, not {rows:?}")
        };
        report(row);
        assert_eq!(row.state, SweepState::Swept, "{point:?}: {row:?}");
        assert_eq!(
            setup.client.pending_nonce(&setup.gas).await.unwrap(),
            gas_nonce + 1,
            "{point:?}: one top-up"
        );
        assert_eq!(
            setup.client.pending_nonce(&address).await.unwrap(),
            1,
            "{point:?}: one sweep"
        );
        assert_eq!(setup.balance(&address, &token).await, 0);
        assert_eq!(
            setup.balance(&setup.hot, &token).await,
            hot_token + amount,
            "{point:?}: swept once"
        );
        let held = setup
            .store
            .nonce_get(Chain::Ethereum, &row.top_up_payout())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held.txs.len(), 1, "{point:?}");
        assert_eq!(Some(&held.txs[0].txid), row.top_up_txid.as_ref());
    }
}

#[tokio::test]
async fn a_sweep_stopped_at_each_await_and_run_again_pays_once_on_postgres() {
    crash_at_every_await(Backend::Postgres).await;
}

#[tokio::test]
async fn a_sweep_stopped_at_each_await_and_run_again_pays_once_on_sqlite() {
    crash_at_every_await(Backend::Sqlite).await;
}

/// A deposit is swept only once it is as deep as the policy asks; the sweep mined, the
/// balance it moved (still there as of the deep block) is never swept again.
#[tokio::test]
async fn only_deep_enough_balances_are_swept_and_only_once() {
    let setup = Setup::new(Backend::Postgres).await;
    let address = setup.issue().await;
    setup.deposit(&address, &Asset::Native, ETH).await;
    let policy = SweepPolicy {
        confirmations: 3,
        ..setup.policy()
    };
    let sweeper = setup.sweeper("deep", policy);
    let round = sweeper.run_once().await.unwrap();
    assert!(round.created.is_empty(), "one block deep: {round:?}");
    mine(&setup).await;
    let round = sweeper.run_once().await.unwrap();
    assert!(round.created.is_empty(), "two blocks deep: {round:?}");
    mine(&setup).await;
    let round = sweeper.run_once().await.unwrap();
    assert_eq!(round.created.len(), 1, "three blocks deep: {round:?}");
    // Its sweep mined (anvil mines it at once) is recorded at the next round; as of the
    // block three deep the address still holds the ETH, and nothing starts again.
    for _ in 0..3 {
        let round = sweeper.run_once().await.unwrap();
        assert!(round.created.is_empty(), "{round:?}");
        assert!(round.errors.is_empty(), "{round:?}");
    }
    let sweeps = setup.sweeps_of(&address).await;
    let [row] = sweeps.as_slice() else {
        panic!("{sweeps:?}")
    };
    assert_eq!(row.state, SweepState::Swept);
    assert_eq!(setup.balance(&address, &Asset::Native).await, 0);
    assert_eq!(setup.client.pending_nonce(&address).await.unwrap(), 1);
}

async fn mine(setup: &Setup) {
    use alloy::providers::Provider;
    let node = alloy::providers::RootProvider::<alloy::network::Ethereum>::new_http(
        setup._anvil.url.parse().unwrap(),
    );
    let _: serde_json::Value = node.raw_request("evm_mine".into(), ()).await.unwrap();
}

/// The hot wallet's excess over each asset's ceiling goes to the cold address: exactly the
/// excess, one transaction each, also when the round dies at each await and another runs.
async fn excess_to_cold(backend: Backend) {
    let setup = Setup::new(backend).await;
    let token = Asset::Token(setup.token.clone());
    let cold = InProcessSigner::new(&signer::Mnemonic::generate(), Network::Mainnet)
        .address(Chain::Ethereum, 0)
        .unwrap();
    let hot_nonce = setup.client.pending_nonce(&setup.hot).await.unwrap();
    let mut expected_eth = 0;
    let mut expected_token = 0;
    let mut transfers = 0;
    for (round, point) in [
        None,
        Some(StopAt::SweepStored),
        Some(StopAt::SweepSent),
        Some(StopAt::SweepMined),
    ]
    .into_iter()
    .enumerate()
    {
        let round = round as u128 + 1;
        let hot_eth = setup.balance(&setup.hot, &Asset::Native).await;
        let hot_token = setup.balance(&setup.hot, &token).await;
        let policy = SweepPolicy {
            cold: Some(cold.clone()),
            ceilings: vec![
                (Asset::Native, Amount::from_u128(hot_eth - round * ETH)),
                (
                    token.clone(),
                    Amount::from_u128(hot_token - round * 10 * USDT),
                ),
            ],
            ..setup.policy()
        };
        if let Some(point) = point {
            let dying = setup
                .sweeper(&format!("dying-{point:?}"), policy.clone())
                .stop_at(point);
            let mut died = false;
            for _ in 0..10 {
                if dying.run_once().await.is_err() {
                    died = true;
                    break;
                }
            }
            assert!(died, "{point:?} was never reached");
        }
        let sweeper = setup.sweeper(&format!("cold-{round}"), policy);
        until_idle(&sweeper, &setup.store).await;
        expected_eth += round * ETH;
        expected_token += round * 10 * USDT;
        transfers += 2;
        assert_eq!(
            setup.balance(&cold, &Asset::Native).await,
            expected_eth,
            "{point:?}"
        );
        assert_eq!(
            setup.balance(&cold, &token).await,
            expected_token,
            "{point:?}"
        );
        assert_eq!(
            setup.client.pending_nonce(&setup.hot).await.unwrap(),
            hot_nonce + transfers,
            "{point:?}: one transaction per transfer"
        );
        // At its ceiling (the token) or under it (ETH, less the gas): nothing more goes.
        assert_eq!(
            setup.balance(&setup.hot, &token).await,
            hot_token - round * 10 * USDT
        );
    }
    let rows = setup.sweeps_of(&setup.hot).await;
    assert_eq!(rows.len(), 8);
    for row in &rows {
        report(row);
        assert_eq!(row.kind, store::SweepKind::Cold);
        assert_eq!(row.state, SweepState::Swept);
        assert_eq!(row.destination, cold.as_str());
        assert!(row.top_up_amount.is_none());
        let held = setup
            .store
            .nonce_get(Chain::Ethereum, &row.sweep_payout())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held.txs.len(), 1);
        assert!(row.sweep_payout().starts_with("cold:"));
    }
}

#[tokio::test]
async fn the_hot_wallets_excess_goes_to_the_cold_address_once_on_postgres() {
    excess_to_cold(Backend::Postgres).await;
}

#[tokio::test]
async fn the_hot_wallets_excess_goes_to_the_cold_address_once_on_sqlite() {
    excess_to_cold(Backend::Sqlite).await;
}

/// Forty issued addresses, half paid ETH and half the token: more than a round starts
/// (`SWEEPS_NEW_PER_ROUND_MAX`), all swept, one transaction from each address and one top-up
/// per token address, the hot wallet grown by exactly the sums; the mean cost per path printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_addresses_are_swept_with_exact_sums() {
    let setup = Setup::new(Backend::Postgres).await;
    let token = Asset::Token(setup.token.clone());
    let mut paid = Vec::new();
    for index in 0..40u128 {
        let address = setup.issue().await;
        let (asset, amount) = if index % 2 == 0 {
            (Asset::Native, ETH / 10 + index)
        } else {
            (token.clone(), 2 * USDT + index)
        };
        setup.deposit(&address, &asset, amount).await;
        paid.push((address, asset, amount));
    }
    let hot_eth = setup.balance(&setup.hot, &Asset::Native).await;
    let hot_token = setup.balance(&setup.hot, &token).await;
    let gas_nonce = setup.client.pending_nonce(&setup.gas).await.unwrap();
    let sweeper = setup.sweeper("forty", setup.policy());
    let started = std::time::Instant::now();
    let rounds = until_idle(&sweeper, &setup.store).await;
    assert!(
        rounds
            .iter()
            .all(|round| round.created.len() <= wallet::sweeps::SWEEPS_NEW_PER_ROUND_MAX)
    );
    let sweeps = setup.sweeps().await;
    assert_eq!(sweeps.len(), 40);
    let mut swept_eth = 0;
    let mut swept_token = 0;
    let (mut native_cost, mut token_cost) = (0, 0);
    for (address, asset, amount) in &paid {
        let rows = setup.sweeps_of(address).await;
        let [row] = rows.as_slice() else {
            panic!("{address}: {rows:?}")
        };
        assert_eq!(row.state, SweepState::Swept);
        assert_eq!(setup.client.pending_nonce(address).await.unwrap(), 1);
        assert_eq!(setup.balance(address, asset).await, 0);
        match asset {
            Asset::Native => {
                assert_eq!(units(Some(row.amount)) + units(row.sweep_fee), *amount);
                swept_eth += units(Some(row.amount));
                native_cost += units(Some(row.cost()));
            }
            Asset::Token(_) => {
                assert_eq!(units(Some(row.amount)), *amount);
                assert!(row.top_up_txid.is_some());
                swept_token += amount;
                token_cost += units(Some(row.cost()));
            }
        }
    }
    assert_eq!(
        setup.balance(&setup.hot, &Asset::Native).await,
        hot_eth + swept_eth
    );
    assert_eq!(
        setup.balance(&setup.hot, &token).await,
        hot_token + swept_token
    );
    assert_eq!(
        setup.client.pending_nonce(&setup.gas).await.unwrap(),
        gas_nonce + 20,
        "one top-up per token address"
    );
    println!(
        "40 addresses swept in {} rounds, {:?}: native {} wei per sweep, ERC-20 with a top-up {} wei per sweep",
        rounds.len(),
        started.elapsed(),
        native_cost / 20,
        token_cost / 20
    );
}
