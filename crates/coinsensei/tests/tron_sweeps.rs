//! TRON consolidation end to end on real processes: `coinsensei up` with a TRON deposit
//! worker and a TRON consolidation worker against the TRON simulation (`tron-sim`: no TRON
//! node can run here) with its fees on, served by this test and mining a block every 200 ms
//! (so a transaction is solidified in 4 s rather than a minute). Addresses issued through
//! `/api/v1/deposit-addresses`; a customer pays TRX to one and USDT to two; the deposits are
//! credited; the TRX is swept whole; the first USDT sweep's energy is lent by the staking
//! account (key 2) and taken back; then the operator unstakes, and the second USDT sweep
//! burns TRX topped up from the gas wallet (key 1) instead. On the chain afterwards: the hot
//! wallet grew by exactly the swept amounts, nothing is lent, and `ledger reconcile --chain
//! tron` agrees with the node for every deposit address. Each sweep's cost is printed
//! (`--nocapture`).

mod common;

use std::net::SocketAddr;
use std::sync::PoisonError;
use std::time::Duration;

use chain::address::{Address, Network};
use chain::provider::{Asset, ChainBuild, ChainSubmit, Payment, SubmitOutcome};
use common::*;
use domain::{Amount, Chain};
use serde_json::{Value, json};
use signer::Signer as _;
use store::{EnergySource, ReclaimState, SweepRow, SweepState};
use testkit::{Backend, TestDb, wait_for};
use tron_sim::{Ledger, Sim, USDT, addr, hex21};

const MNEMONIC: &str = "test test test test test test test test test test test junk";
const TRX: u64 = 1_000_000;
const CUSTOMER: u32 = 5;

/// Pays `amount` of `asset` from the customer (key 5) to `to`, signed here, and waits until
/// the simulation took it.
async fn pay(
    tron: &chain_tron::Tron,
    keys: &signer::InProcessSigner,
    to: &str,
    asset: Asset,
    amount: u128,
) {
    let payment = Payment {
        from_index: CUSTOMER,
        from: keys.address(Chain::Tron, CUSTOMER).unwrap(),
        to: Address::parse(Chain::Tron, Network::Mainnet, to).unwrap(),
        asset,
        amount: Amount::from_u128(amount),
    };
    let metadata = tron.metadata(&payment).await.unwrap();
    let unsigned = tron.build(&payment, &metadata).unwrap();
    let signed = chain_tron::transaction::sign(unsigned, keys).unwrap();
    let outcome = tron.submit(&signed).await;
    assert_eq!(outcome, SubmitOutcome::Accepted, "{outcome:?}");
}

fn units(amount: Option<Amount>) -> u128 {
    amount.map_or(0, |amount| u128::try_from(amount.base_units()).unwrap())
}

async fn tron_swept_end_to_end(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let dir = db.dir();
    let keystore = common::backend::keystore_lines(&dir, MNEMONIC);
    let keys = signer::InProcessSigner::new(
        &signer::Mnemonic::parse(MNEMONIC).unwrap(),
        Network::Mainnet,
    );
    let key = |index| keys.address(Chain::Tron, index).unwrap();
    let (hot, gas, staker) = (key(0), key(1), key(2));
    let mut ledger = Ledger {
        head: 100,
        fees: true,
        ..Ledger::default()
    };
    ledger.fund(&hot, 10 * TRX, 1_000_000);
    ledger.fund(&gas, 1_000 * TRX, 0);
    ledger.fund(&staker, 100_000 * TRX, 0);
    ledger.stake_energy(&staker, 50_000 * TRX);
    ledger.fund(&key(CUSTOMER), 1_000 * TRX, 100_000_000);
    let sim = Sim::start(ledger, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let shared = sim.ledger.clone();
    // A block every 200 ms: the solidified head trails by 19 blocks, 4 s here.
    let miner = tokio::spawn({
        let shared = shared.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                shared.lock().unwrap_or_else(PoisonError::into_inner).mine();
            }
        }
    });
    let tron = chain_tron::Tron::new(chain_tron::Config::new(sim.url.parse().unwrap())).unwrap();
    let trx_of = |address: &Address| {
        shared
            .lock()
            .unwrap()
            .trx
            .get(&hex21(address))
            .copied()
            .unwrap_or(0)
    };
    let usdt_of = |address: &Address| {
        shared
            .lock()
            .unwrap()
            .usdt
            .get(&hex21(address))
            .copied()
            .unwrap_or(0)
    };
    let (hot_trx, hot_usdt) = (trx_of(&hot), usdt_of(&hot));
    let head = shared.lock().unwrap().head;
    let xpub = keys.deposit_xpub(Chain::Tron).unwrap();

    let config = dir.join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 2\n{keystore}\
             tron_rpc_url = \"{}\"\n\
             tron_deposit_xpub = \"{xpub}\"\ntron_deposit_start_block = {head}\n\
             tron_hot_wallet_index = 0\ntron_gas_wallet_index = 1\ntron_staking_wallet_index = 2\n\
             tron_internal_addresses = [\"{hot}\", \"{gas}\", \"{staker}\"]\n\
             [[deposit_policy]]\nchain = \"tron\"\nasset = \"TRX\"\nsweep_min = \"10\"\n\
             [[deposit_policy]]\nchain = \"tron\"\nasset = \"USDT\"\nsweep_min = \"1\"\n\
             [[workers]]\nkind = \"deposit\"\nchain = \"tron\"\n\
             [[workers]]\nkind = \"consolidation\"\nchain = \"tron\"\n",
            sim.url,
        ),
    )
    .unwrap();
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let api = common::backend::Backend::new(&db.url, &up).await;
    let mut addresses = Vec::new();
    for reference in ["user:1", "user:2", "user:3"] {
        let response = api
            .client
            .post(format!("{}/api/v1/deposit-addresses", api.base))
            .bearer_auth(&api.token)
            .json(&json!({"chain": "tron", "reference": reference}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let body: Value = response.json().await.unwrap();
        addresses.push(body["address"].as_str().unwrap().to_string());
    }
    let [trx_only, lent, burned] = [&addresses[0], &addresses[1], &addresses[2]];
    wait_for("the workers running", Duration::from_secs(60), || async {
        let workers = workers_json(&db.url).await;
        ["tron-deposit-1", "tron-consolidation-1"]
            .iter()
            .all(|id| find(&workers, id).is_some_and(|worker| worker["status"] == "running"))
            .then_some(())
    })
    .await;

    pay(&tron, &keys, trx_only, Asset::Native, 50_000_000).await;
    pay(&tron, &keys, lent, Asset::Token(addr(USDT)), 25_000_000).await;
    let swept = |address: &str| {
        let address = address.to_string();
        let store = store.clone();
        async move {
            let rows = store.sweep_list(Chain::Tron, None, 100).await.unwrap();
            rows.into_iter().find(|row| {
                row.address == address
                    && row.state == SweepState::Swept
                    && row.reclaim_state != Some(ReclaimState::Pending)
            })
        }
    };
    let by_delegation: SweepRow = wait_for(
        "the USDT swept by delegation",
        Duration::from_secs(90),
        || swept(lent),
    )
    .await;
    assert_eq!(by_delegation.energy_source, Some(EnergySource::Delegation));
    assert_eq!(by_delegation.reclaim_state, Some(ReclaimState::Done));

    // The operator unstakes nearly everything: the staking account can no longer lend enough.
    shared
        .lock()
        .unwrap()
        .staked_energy
        .insert(hex21(&staker), 10 * TRX);
    pay(&tron, &keys, burned, Asset::Token(addr(USDT)), 7_000_000).await;
    let by_burn: SweepRow = wait_for(
        "the USDT swept by a top-up",
        Duration::from_secs(90),
        || swept(burned),
    )
    .await;
    assert_eq!(by_burn.energy_source, Some(EnergySource::Burn));
    let trx_sweep: SweepRow =
        wait_for("the TRX swept", Duration::from_secs(60), || swept(trx_only)).await;

    for row in [&trx_sweep, &by_delegation, &by_burn] {
        println!(
            "FIGURE tron sweep {} of {} {} by {}: amount {}; top-up {} sun (fee {} sun); delegation fee {} sun; sweep fee {} sun (energy {}, bandwidth {} bytes); reclaim fee {} sun; cost {} sun",
            row.id,
            row.address,
            row.asset,
            row.energy_source.map_or("-", EnergySource::as_str),
            row.amount.base_units(),
            units(row.top_up_amount),
            units(row.top_up_fee),
            units(row.delegate_fee),
            units(row.sweep_fee),
            row.energy_used.unwrap_or(0),
            row.bandwidth_used.unwrap_or(0),
            units(row.reclaim_fee),
            row.cost().base_units()
        );
    }
    // On the chain: the hot wallet grew by exactly the swept amounts; every address is left
    // at what its top-up's activation sun (or nothing) makes it; nothing stays lent.
    let parse = |text: &str| Address::parse(Chain::Tron, Network::Mainnet, text).unwrap();
    assert_eq!(trx_of(&hot), hot_trx + 50 * TRX);
    assert_eq!(usdt_of(&hot), hot_usdt + 25_000_000 + 7_000_000);
    assert_eq!(trx_of(&parse(trx_only)), 0);
    for address in [lent, burned] {
        assert_eq!(usdt_of(&parse(address)), 0, "{address}");
        assert_eq!(
            trx_of(&parse(address)),
            wallet::energy_sweeps::ACTIVATION_SUN,
            "{address}"
        );
    }
    assert!(shared.lock().unwrap().delegated.is_empty());
    // Three sweeps, no more.
    assert_eq!(
        store
            .sweep_list(Chain::Tron, None, 100)
            .await
            .unwrap()
            .len(),
        3
    );

    // The ledger agrees with the node for every deposit address.
    let output = run(
        &db.url,
        &[
            "--config",
            config.to_str().unwrap(),
            "ledger",
            "reconcile",
            "--chain",
            "tron",
            "--json",
        ],
    )
    .await;
    let lines: Vec<Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", stderr(&output)));
    let deposits: Vec<&Value> = lines
        .iter()
        .filter(|line| line["wallet"] == "deposit")
        .collect();
    // TRX and USDT of each of the three addresses.
    assert_eq!(deposits.len(), 6, "{lines:#?}");
    for line in deposits {
        assert_eq!(line["verdict"], "agrees", "{line}");
    }
    // The burned sweep's address: its top-up held, the sweep's fee burned, the activating
    // sun left, on both sides.
    let burned_trx = lines
        .iter()
        .find(|line| line["address"] == burned.as_str() && line["asset"] == "TRX")
        .unwrap();
    assert_eq!(burned_trx["expected_base_units"], "1", "{burned_trx}");
    assert_eq!(burned_trx["on_chain_base_units"], "1", "{burned_trx}");

    up.stop().await;
    miner.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tron_swept_end_to_end_on_sqlite() {
    tron_swept_end_to_end(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tron_swept_end_to_end_on_postgres() {
    tron_swept_end_to_end(Backend::Postgres).await;
}
