//! The ledger's fold (`web::ledger::read`) over real store rows on both stores: a line per
//! asset for the hot wallet and each issued deposit address; credited and held deposits in,
//! completed withdrawals and every landed transaction's fee out of the hot wallet, the
//! operators' adjustments; and what cannot be known said so, never taken as zero (a
//! withdrawal in flight, a completed one without its fee, a hot wallet no worker reported).
//! Then a reconciliation's verdicts and the per-asset checks the store keeps for `/metrics`.

use chrono::{DateTime, TimeZone, Utc};
use domain::{Amount, AssetCatalogue, Chain, WithdrawalState};
use store::{
    DepositAddressInsert, DepositInsert, HotWalletBalance, LedgerAdjustmentInsert, LedgerDirection,
    ScannedBlock, Store, WithdrawalCreate, WithdrawalCreated, WithdrawalTransition,
};
use testkit::TestDb;
use web::ledger::{LedgerLine, Verdict, WalletKind};

const HOT: &str = "0x52908400098527886E0F7030069857D2E4169EE7";
const ALICE: &str = "0x00000000000000000000000000000000000000A1";
const BOB: &str = "0x00000000000000000000000000000000000000b2";
const USDT: &str = "0xdAC17F958D2ee523a2206206994597C13D831ec7";

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn eth(milli: u128) -> Amount {
    Amount::from_u128(milli * 10u128.pow(15))
}

async fn issue(store: &Store, reference: &str, index: u32, address: &str) {
    store
        .deposit_address_insert(&DepositAddressInsert {
            chain: Chain::Ethereum,
            reference: reference.into(),
            index,
            address: address.into(),
            actor: "test".into(),
            now: at(0),
        })
        .await
        .unwrap();
}

fn deposit(
    txid: &str,
    asset: &str,
    address: &str,
    amount: Amount,
    ignored: Option<&str>,
) -> DepositInsert {
    DepositInsert {
        txid: txid.into(),
        asset: asset.into(),
        position: 0,
        // Deposits name their address as the scanner spells it; lowercase here, to show the
        // ledger matches Ethereum addresses without regard to case.
        address: address.to_lowercase(),
        sender: None,
        amount,
        block_number: 1,
        block_hash: "0xb1".into(),
        ignored: ignored.map(str::to_string),
    }
}

async fn withdraw(
    store: &Store,
    key: &str,
    asset: &str,
    amount: Amount,
    to: &[WithdrawalState],
    fee: Option<Amount>,
) -> i64 {
    let created = store
        .withdrawal_create(&WithdrawalCreate {
            idempotency_key: key.into(),
            request_hash: "a".repeat(64),
            reference: "user:9".into(),
            chain: Chain::Ethereum,
            asset: asset.into(),
            destination: BOB.into(),
            amount: amount.base_units().to_string(),
            actor: "backend".into(),
            job: None,
            approval: false,
            limits: vec![],
            destination_rule: None,
            now: at(1),
        })
        .await
        .unwrap();
    let WithdrawalCreated::Created(row) = created else {
        panic!("{created:?}")
    };
    let mut from = WithdrawalState::Pending;
    for &state in to {
        let mut transition = WithdrawalTransition::new(row.id, from, state, "worker", at(2));
        if state == WithdrawalState::Completed {
            transition.fee = fee.map(|fee| fee.base_units().to_string());
        }
        store.withdrawal_transition(&transition).await.unwrap();
        from = state;
    }
    row.id
}

fn find<'a>(
    lines: &'a [LedgerLine],
    kind: WalletKind,
    address: Option<&str>,
    asset: &str,
) -> &'a LedgerLine {
    lines
        .iter()
        .find(|line| {
            line.kind == kind
                && line.asset == asset
                && line.address.as_deref().map(str::to_lowercase) == address.map(str::to_lowercase)
        })
        .unwrap_or_else(|| panic!("no {kind:?} {address:?} {asset} line in {lines:#?}"))
}

fn expected(line: &LedgerLine) -> String {
    match line.expected() {
        Ok(expected) => expected.format(line.decimals),
        Err(reasons) => format!("unknown: {}", reasons.join("; ")),
    }
}

async fn the_ledger_adds_up_and_says_what_it_cannot_know(db: &TestDb) {
    use WithdrawalState::*;
    let store = db.store().await;
    let catalogue = AssetCatalogue::mainnet();
    issue(&store, "user:1", 0, ALICE).await;
    issue(&store, "user:2", 1, BOB).await;

    // Nothing moved yet, and no worker reported the hot wallet: every deposit address
    // expects 0 of each asset; the hot wallet's lines are unknown, not 0.
    let lines = web::ledger::read(&store, &catalogue, Chain::Ethereum)
        .await
        .unwrap();
    assert_eq!(lines.len(), 6, "hot, alice, bob × ETH, USDT: {lines:#?}");
    assert_eq!(
        expected(find(&lines, WalletKind::Deposit, Some(ALICE), "ETH")),
        "0"
    );
    assert_eq!(
        find(&lines, WalletKind::Deposit, Some(BOB), "USDT")
            .reference
            .as_deref(),
        Some("user:2")
    );
    let hot = find(&lines, WalletKind::Hot, None, "ETH");
    assert!(
        expected(hot).starts_with("unknown: the hot wallet's address is not known"),
        "{hot:?}"
    );

    store
        .hot_wallet_set(&HotWalletBalance {
            chain: Chain::Ethereum,
            asset: "ETH".into(),
            address: HOT.into(),
            units: eth(9_000).base_units().to_string(),
            checked_at: at(3),
        })
        .await
        .unwrap();
    let block = ScannedBlock {
        number: 1,
        hash: "0xb1".into(),
        parent_hash: "0xb0".into(),
    };
    store
        .scan_commit(
            Chain::Ethereum,
            &[block],
            &[
                deposit("0x01", "native", ALICE, eth(500), None),
                deposit("0x02", USDT, ALICE, Amount::from_u128(12_500_000), None),
                deposit("0x03", "native", BOB, eth(1), Some("dust")),
                deposit("0x04", "native", BOB, Amount::ZERO, Some("zero value")),
                deposit("0x05", "native", BOB, eth(250), None),
            ],
            at(4),
        )
        .await
        .unwrap();
    store
        .deposits_credit(Chain::Ethereum, 1, at(5))
        .await
        .unwrap();
    // The operator funded the hot wallet with 10 ETH and 1,000 USDT: the opening balances.
    for (asset, amount) in [
        ("ETH", eth(10_000)),
        ("USDT", Amount::from_u128(1_000_000_000)),
    ] {
        store
            .ledger_adjustment_insert(&LedgerAdjustmentInsert {
                chain: Chain::Ethereum,
                address: HOT.into(),
                asset: asset.into(),
                direction: LedgerDirection::In,
                amount,
                reason: "opening balance".into(),
                actor: "admin".into(),
                now: at(6),
            })
            .await
            .unwrap();
    }
    // Paid: 1 ETH (fee 0.021), 100 USDT (fee 0.05 ETH); failed before signing: nothing.
    withdraw(
        &store,
        "w-1",
        "ETH",
        eth(1_000),
        &[Processing, Broadcast, Completed],
        Some(eth(21)),
    )
    .await;
    withdraw(
        &store,
        "w-2",
        "USDT",
        Amount::from_u128(100_000_000),
        &[Processing, Broadcast, Completed],
        Some(eth(50)),
    )
    .await;
    withdraw(
        &store,
        "w-3",
        "ETH",
        eth(7_000),
        &[Processing, Failed],
        None,
    )
    .await;

    let lines = web::ledger::read(&store, &catalogue, Chain::Ethereum)
        .await
        .unwrap();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let alice_eth = find(&lines, WalletKind::Deposit, Some(ALICE), "ETH");
    assert_eq!(
        (alice_eth.credited, alice_eth.held),
        (eth(500), Amount::ZERO)
    );
    assert_eq!(expected(alice_eth), "0.5");
    assert_eq!(
        expected(find(&lines, WalletKind::Deposit, Some(ALICE), "USDT")),
        "12.5"
    );
    let bob_eth = find(&lines, WalletKind::Deposit, Some(BOB), "ETH");
    assert_eq!(
        (bob_eth.credited, bob_eth.held),
        (eth(250), eth(1)),
        "dust is held, not credited"
    );
    assert_eq!(expected(bob_eth), "0.251");
    let hot_eth = find(&lines, WalletKind::Hot, Some(HOT), "ETH");
    assert_eq!((hot_eth.withdrawn, hot_eth.fees), (eth(1_000), eth(71)));
    assert_eq!(expected(hot_eth), "8.929", "10 - 1 - 0.021 - 0.05");
    assert_eq!(
        expected(find(&lines, WalletKind::Hot, Some(HOT), "USDT")),
        "900"
    );

    // Reconciled against what a chain would say: the hot wallet agrees; Alice holds 0.1 ETH
    // more than the ledger (sent outside any transaction the scanner saw); Bob's balance
    // could not be read.
    let chain_says = |line: &LedgerLine| -> Result<Amount, String> {
        match (
            line.kind,
            line.address.as_deref().map(str::to_lowercase),
            line.asset.as_str(),
        ) {
            (WalletKind::Deposit, Some(address), "ETH") if address == ALICE.to_lowercase() => {
                Ok(eth(600))
            }
            (WalletKind::Deposit, Some(address), _) if address == BOB.to_lowercase() => {
                Err("the node timed out".into())
            }
            _ => line
                .expected()
                .map(|expected| expected.magnitude)
                .map_err(|_| "unknown".into()),
        }
    };
    let reconciled: Vec<_> = lines
        .iter()
        .map(|line| web::ledger::judge(line.clone(), chain_says(line)))
        .collect();
    let alice = reconciled
        .iter()
        .find(|each| each.line == *alice_eth)
        .unwrap();
    let Verdict::Differs(difference) = alice.verdict else {
        panic!("{alice:?}")
    };
    assert_eq!(difference.format(Some(18)), "0.1");
    let json = web::ledger::reconciled_json(alice);
    assert_eq!(json["difference_base_units"], "100000000000000000");
    assert_eq!(json["expected"], "0.5");
    assert_eq!(json["on_chain"], "0.6");
    assert_eq!(json["reference"], "user:1");
    let checks = web::ledger::checks(Chain::Ethereum, &reconciled, at(9));
    let eth_check = checks.iter().find(|check| check.asset == "ETH").unwrap();
    assert_eq!(
        (
            eth_check.agreeing,
            eth_check.differing,
            eth_check.unknown,
            eth_check.difference
        ),
        (1, 1, 1, eth(100))
    );
    let usdt_check = checks.iter().find(|check| check.asset == "USDT").unwrap();
    assert_eq!(
        (
            usdt_check.agreeing,
            usdt_check.differing,
            usdt_check.unknown
        ),
        (2, 0, 1)
    );

    // A withdrawal in flight: the hot wallet's USDT and ETH lines cannot be known until it
    // settles, and a completed one without its fee leaves ETH unknown: never counted as 0.
    withdraw(
        &store,
        "w-4",
        "USDT",
        Amount::from_u128(5_000_000),
        &[Processing, Broadcast],
        None,
    )
    .await;
    let lines = web::ledger::read(&store, &catalogue, Chain::Ethereum)
        .await
        .unwrap();
    let hot_usdt = find(&lines, WalletKind::Hot, Some(HOT), "USDT");
    assert!(
        expected(hot_usdt)
            .contains("is broadcast: whether it has left the hot wallet is not settled"),
        "{hot_usdt:?}"
    );
    assert!(expected(find(&lines, WalletKind::Hot, Some(HOT), "ETH")).starts_with("unknown"));
    let unknown = web::ledger::judge(hot_usdt.clone(), Ok(Amount::from_u128(900_000_000)));
    assert!(
        matches!(unknown.verdict, Verdict::Unknown(_)),
        "{unknown:?}"
    );
    // The deposit addresses are not touched by it.
    assert_eq!(
        expected(find(&lines, WalletKind::Deposit, Some(ALICE), "ETH")),
        "0.5"
    );
    let totals = web::ledger::totals(&lines, WalletKind::Deposit);
    let eth_total = totals.iter().find(|total| total.0 == "ETH").unwrap();
    assert_eq!(eth_total.2.unwrap().format(Some(18)), "0.751");

    withdraw(
        &store,
        "w-5",
        "ETH",
        eth(1),
        &[Processing, Broadcast, Completed],
        None,
    )
    .await;
    let lines = web::ledger::read(&store, &catalogue, Chain::Ethereum)
        .await
        .unwrap();
    let hot_eth = find(&lines, WalletKind::Hot, Some(HOT), "ETH");
    let reasons = hot_eth.expected().unwrap_err();
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("completed without its fee recorded")),
        "{reasons:?}"
    );
    // Other chains have their own ledger: TRON's shows only its unknown hot wallet.
    let tron = web::ledger::read(&store, &catalogue, Chain::Tron)
        .await
        .unwrap();
    assert!(
        tron.iter()
            .all(|line| line.kind == WalletKind::Hot && line.address.is_none()),
        "{tron:#?}"
    );
}

testkit::on_both_stores!(db: the_ledger_adds_up_and_says_what_it_cannot_know,);
