//! Deposits by block scan on anvil, through the wallet's scanner: ETH and token deposits to a
//! watched address are stored with their blocks and credited at the configured depth; a
//! reorg (anvil's snapshot and revert) is found by parent hash, the stored chain is cut back
//! to the fork, the deposit of the abandoned branch is orphaned and the new branch's is
//! credited in its place. And the nonce reconciliation: a transaction the node dropped, or
//! one stored by a process that died before broadcasting it, is sent again from its stored
//! bytes (same txid, paid once), so its nonce does not stall later payments.

use std::sync::Arc;

use alloy::providers::{Provider, RootProvider};
use chain::address::Address;
use chain::provider::{ChainRead, SubmitOutcome, TxStatus, WatchSet};
use chain_ethereum::Ethereum;
use domain::{Amount, Chain};
use signer::Signer;
use store::{DepositState, Store};
use testkit::{Anvil, Backend, TestDb};
use wallet::Wallet;
use wallet::conformance::included;
use wallet::scanner::{ScanPolicy, Scanner, Step};

mod common;
use common::{deploy_token, funded};

/// The longest a transaction takes to be mined on anvil.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn node(anvil: &Anvil) -> RootProvider {
    RootProvider::new_http(anvil.url.parse().unwrap())
}

async fn mine(anvil: &Anvil, blocks: u64) {
    let _: serde_json::Value = node(anvil)
        .raw_request("anvil_mine".into(), (blocks,))
        .await
        .unwrap();
}

async fn deposits(store: &Store) -> Vec<(String, u64, DepositState, Amount)> {
    let mut rows: Vec<_> = store
        .deposits_list(Chain::Ethereum, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.txid, row.block_number, row.state, row.amount))
        .collect();
    rows.sort_by_key(|row| row.1);
    rows
}

/// The stored blocks are the node's blocks, hash for hash.
async fn stored_chain_is_the_nodes(store: &Store, client: &Ethereum, from: u64) {
    let head = store.scan_head(Chain::Ethereum).await.unwrap().unwrap();
    for number in from..=head.number {
        let stored = store
            .scan_block(Chain::Ethereum, number)
            .await
            .unwrap()
            .unwrap();
        let node = ChainRead::block(client, number).await.unwrap().unwrap();
        assert_eq!(
            (stored.hash, stored.parent_hash),
            (node.hash, node.parent_hash),
            "block {number}"
        );
    }
}

async fn scans_credits_and_survives_a_reorg(backend: Backend) {
    let anvil = Anvil::start().await;
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = Arc::new(funded());
    let token = deploy_token(&client, &hot, 1_000_000_000).await;
    let alice = hot.address(Chain::Ethereum, 11).unwrap();
    let wallet = Wallet::new(client.clone(), hot.clone(), store.clone(), "scanner-test");
    let start = client.tip().await.unwrap().head + 1;
    let scanner = Scanner::new(
        client.clone(),
        store.clone(),
        ScanPolicy {
            start,
            batch_blocks: 3,
            confirmations: 3,
            credit_finalized: false,
        },
        WatchSet {
            addresses: vec![alice.clone()],
            tokens: vec![token.clone()],
        },
    )
    .unwrap();

    // A deposit, four blocks on: scanned in steps of three, credited three deep.
    let first = wallet
        .send_transaction(0, &alice, Amount::from_u128(1_000))
        .await
        .unwrap();
    included(&client, &first.txid, WAIT).await;
    mine(&anvil, 4).await;
    let steps = scanner.catch_up(start + 4).await.unwrap();
    assert!(steps.len() >= 2, "{steps:?}");
    assert_eq!(
        deposits(&store).await,
        vec![(
            first.txid.clone(),
            start,
            DepositState::Credited,
            Amount::from_u128(1_000)
        )]
    );

    // A token deposit on a branch that will be abandoned.
    let snapshot: String = node(&anvil)
        .raw_request("evm_snapshot".into(), ())
        .await
        .unwrap();
    let doomed = wallet
        .send_token(0, &token, &alice, Amount::from_u128(77))
        .await
        .unwrap();
    included(&client, &doomed.txid, WAIT).await;
    scanner.catch_up(start + 5).await.unwrap();
    let seen = deposits(&store).await;
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (&seen[1].0, seen[1].1, seen[1].2),
        (&doomed.txid, start + 5, DepositState::Pending),
        "one confirmation only"
    );

    // The reorg: back to the snapshot, and two other blocks 5 and 6 on top.
    let reverted: bool = node(&anvil)
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .unwrap();
    assert!(reverted);
    mine(&anvil, 2).await;
    let step = scanner.step().await.unwrap();
    let Step::Reorg { fork, rollback } = step else {
        panic!("the reorg is found: {step:?}");
    };
    assert_eq!(fork, start + 4, "the newest block both branches share");
    assert_eq!(
        (rollback.blocks, rollback.orphaned, rollback.reversed),
        (1, 1, 0)
    );
    assert_eq!(deposits(&store).await[1].2, DepositState::Orphaned);

    // The abandoned branch took the token payment's nonce with it: reconciliation sends the
    // same bytes again (or finds the node still has them), so the payment lands once on the
    // new branch, and the next payment is not stuck behind a gap.
    let reconciled = wallet.reconcile(0).await.unwrap();
    assert_eq!(
        reconciled.known + reconciled.rebroadcast.len(),
        1,
        "{reconciled:?}"
    );
    assert!(
        reconciled
            .rebroadcast
            .iter()
            .all(|(nonce, txid, outcome)| Some(*nonce) == doomed.sequence
                && *txid == doomed.txid
                && *outcome == SubmitOutcome::Accepted),
        "{reconciled:?}"
    );
    mine(&anvil, 1).await;
    let other = wallet
        .send_transaction(0, &alice, Amount::from_u128(3_000))
        .await
        .unwrap();
    assert_eq!(other.outcome, SubmitOutcome::Accepted);
    let block_of = |txid: String| {
        let client = client.clone();
        async move {
            let (block, success) = included(&client, &txid, WAIT).await;
            assert!(success, "{txid}");
            block.number
        }
    };
    let relanded = block_of(doomed.txid.clone()).await;
    let paid = block_of(other.txid.clone()).await;
    assert!(
        relanded > start + 5 && paid >= relanded,
        "{relanded} {paid}"
    );
    mine(&anvil, 3).await;
    scanner.catch_up(paid + 3).await.unwrap();
    assert_eq!(
        deposits(&store).await,
        vec![
            (
                first.txid.clone(),
                start,
                DepositState::Credited,
                Amount::from_u128(1_000)
            ),
            (
                doomed.txid.clone(),
                relanded,
                DepositState::Credited,
                Amount::from_u128(77)
            ),
            (
                other.txid.clone(),
                paid,
                DepositState::Credited,
                Amount::from_u128(3_000)
            ),
        ],
        "the token deposit is back, once, in its new block"
    );
    stored_chain_is_the_nodes(&store, &client, start).await;
    assert!(matches!(
        scanner.step().await.unwrap(),
        Step::Idle { credited: 0 }
    ));
}

#[tokio::test]
async fn scans_credits_and_survives_a_reorg_on_postgres() {
    scans_credits_and_survives_a_reorg(Backend::Postgres).await;
}

#[tokio::test]
async fn scans_credits_and_survives_a_reorg_on_sqlite() {
    scans_credits_and_survives_a_reorg(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_dropped_transaction_is_sent_again_from_its_stored_bytes() {
    let anvil = Anvil::start_with(&["--no-mining"]).await;
    let db = TestDb::sqlite();
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = Arc::new(funded());
    let wallet = Wallet::new(client.clone(), hot.clone(), store.clone(), "reconcile-test");
    let bob: Address = hot.address(Chain::Ethereum, 12).unwrap();
    let first = wallet
        .send_transaction(0, &bob, Amount::from_u128(5))
        .await
        .unwrap();
    let second = wallet
        .send_transaction(0, &bob, Amount::from_u128(6))
        .await
        .unwrap();
    assert_eq!((first.sequence, second.sequence), (Some(0), Some(1)));

    // The node loses the first (a restart, an eviction; anvil drops the second with it, as
    // it can no longer be mined): reconciliation sends the stored bytes again.
    let _: serde_json::Value = node(&anvil)
        .raw_request("anvil_dropTransaction".into(), (first.txid.clone(),))
        .await
        .unwrap();
    assert_eq!(
        client.transaction(&first.txid).await.unwrap(),
        TxStatus::NotFound
    );
    let reconciled = wallet.reconcile(0).await.unwrap();
    assert_eq!(reconciled.known + reconciled.rebroadcast.len(), 2);
    assert_eq!(
        reconciled.rebroadcast[0],
        (0, first.txid.clone(), SubmitOutcome::Accepted),
        "the same bytes, the same txid"
    );
    mine(&anvil, 1).await;
    for sent in [&first, &second] {
        assert!(matches!(
            client.transaction(&sent.txid).await.unwrap(),
            TxStatus::Included { success: true, .. }
        ));
    }
    assert_eq!(
        ChainRead::balance(&client, &bob, &chain::provider::Asset::Native)
            .await
            .unwrap(),
        Amount::from_u128(11)
    );
    // Mined: nothing left to send again; settled by the transactions that were mined,
    // nothing is left to watch.
    let reconciled = wallet.reconcile(0).await.unwrap();
    assert_eq!((reconciled.known, reconciled.rebroadcast.len()), (0, 0));
    let policy = wallet::NonceSettlePolicy {
        replace_after: std::time::Duration::from_secs(600),
        fee_cap: 1_000_000_000_000,
    };
    for settled in wallet.settle_nonces(0, &policy).await.unwrap() {
        assert!(
            matches!(settled.result, Ok(wallet::NonceOutcome::Mined { .. })),
            "{settled:?}"
        );
    }
    assert!(
        store
            .nonce_unsettled(&store::NonceUnsettled {
                chain: Chain::Ethereum,
                address: hot.address(Chain::Ethereum, 0).unwrap().to_string(),
                from_nonce: 0,
                limit: 10,
            })
            .await
            .unwrap()
            .is_empty()
    );
}

/// A sender that stored its signed bytes under the nonce and died before broadcasting: the
/// reconciliation after the restart sends those very bytes, and the payment happens once.
#[tokio::test]
async fn a_crash_between_storing_and_broadcasting_is_sent_once_after_restart() {
    use chain::provider::{Asset, ChainBuild, Payment};
    let anvil = Anvil::start().await;
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = Arc::new(funded());
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let carol = hot.address(Chain::Ethereum, 13).unwrap();
    let payment = Payment {
        from_index: 0,
        from: from.clone(),
        to: carol.clone(),
        asset: Asset::Native,
        amount: Amount::from_u128(42),
    };
    // The first process: reserve, build, sign, store; then it dies.
    let mut metadata = client.metadata(&payment).await.unwrap();
    let now = chrono::Utc::now();
    let nonce = store
        .nonce_reserve(&store::NonceReserve {
            chain: Chain::Ethereum,
            address: from.to_string(),
            payout: "withdrawal-1".into(),
            node_pending: metadata.nonce,
            holder: "first-process".into(),
            lease_until: now + std::time::Duration::from_secs(60),
            now,
        })
        .await
        .unwrap()
        .nonce;
    client.set_sequence(&mut metadata, nonce);
    let unsigned = client.build(&payment, &metadata).unwrap();
    let signatures = hot
        .sign_payloads(Chain::Ethereum, &client.payloads(&unsigned))
        .unwrap();
    let signed = client.combine(unsigned, &signatures).unwrap();
    store
        .nonce_bind(&store::NonceBind {
            chain: Chain::Ethereum,
            address: from.to_string(),
            nonce,
            holder: "first-process".into(),
            payout: "withdrawal-1".into(),
            tx: store::NonceTxNew {
                txid: signed.txid.clone(),
                raw: signed.raw.clone(),
                fees: None,
            },
            now,
        })
        .await
        .unwrap();
    assert_eq!(
        client.transaction(&signed.txid).await.unwrap(),
        TxStatus::NotFound
    );

    // The next process reconciles before it sends anything.
    let wallet = Wallet::new(client.clone(), hot.clone(), store.clone(), "second-process");
    let reconciled = wallet.reconcile(0).await.unwrap();
    assert_eq!(
        reconciled.rebroadcast,
        vec![(nonce, signed.txid.clone(), SubmitOutcome::Accepted)]
    );
    let next = wallet
        .send_transaction(0, &carol, Amount::from_u128(8))
        .await
        .unwrap();
    assert_eq!(next.sequence, Some(nonce + 1), "no gap, no reuse");
    for txid in [&signed.txid, &next.txid] {
        included(&client, txid, WAIT).await;
    }
    assert_eq!(
        ChainRead::balance(&client, &carol, &Asset::Native)
            .await
            .unwrap(),
        Amount::from_u128(50),
        "each payment once"
    );
}

/// Sends `data` (and `value` wei) to `to` from anvil's unlocked account `from`, as any user
/// of the chain could; its txid.
async fn send_raw(anvil: &Anvil, from: &Address, to: &Address, value: u128, data: &str) -> String {
    node(anvil)
        .raw_request(
            "eth_sendTransaction".into(),
            (serde_json::json!({
                "from": from.to_string(),
                "to": to.to_string(),
                "value": format!("0x{value:x}"),
                "data": data,
            }),),
        )
        .await
        .unwrap()
}

/// The calldata of an ERC-20 `transfer(to, amount)`.
fn transfer_call(to: &Address, amount: u128) -> String {
    let to = alloy::primitives::hex::encode(to.ethereum_bytes().unwrap());
    format!("0xa9059cbb{to:0>64}{amount:064x}")
}

/// The deposit rules on a real chain: one block holding a transfer of a fake token with the
/// same symbol (never looked at), a zero-value transfer of the real token (address-poisoning
/// spam: recorded ignored), dust, a transfer from one of our own wallets (internal), a real
/// token deposit behind other logs in its block (keyed by its log's position within its
/// transaction, 0, not its block-wide index) and a real ETH deposit, to an address issued in
/// the store (the scanner watches what is issued). Credited at depth; the cursor never sticks;
/// then a reorg takes the credited ones away: `reversed`, kept, never deleted.
async fn only_real_deposits_are_credited_and_a_reorg_reverses_them(backend: Backend) {
    use wallet::scanner::DepositRules;
    let anvil = Anvil::start().await;
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = Arc::new(funded());
    let token = deploy_token(&client, &hot, 1_000_000_000).await;
    let fake = deploy_token(&client, &hot, 1_000_000_000).await;
    let customer = hot.address(Chain::Ethereum, 0).unwrap();
    let gas_wallet = hot.address(Chain::Ethereum, 1).unwrap();
    let spammer = hot.address(Chain::Ethereum, 2).unwrap();
    let deposit_address = hot
        .deposit_xpub(Chain::Ethereum)
        .unwrap()
        .address(0)
        .unwrap();
    store
        .deposit_address_insert(&store::DepositAddressInsert {
            chain: Chain::Ethereum,
            reference: "user:1".into(),
            index: 0,
            address: deposit_address.to_string(),
            actor: "test".into(),
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    // The current head is stored too: the fork point of the reorg below.
    let start = client.tip().await.unwrap().head;
    let scanner = Scanner::new(
        client.clone(),
        store.clone(),
        ScanPolicy {
            start,
            batch_blocks: 5,
            confirmations: 2,
            credit_finalized: false,
        },
        WatchSet {
            addresses: vec![],
            tokens: vec![token.clone()],
        },
    )
    .unwrap()
    .with_rules(DepositRules {
        dust: [("native".to_string(), Amount::from_u128(1_000))].into(),
        internal: [gas_wallet.to_string()].into(),
    })
    .watch_issued(chain::address::Network::Mainnet);
    let snapshot: String = node(&anvil)
        .raw_request("evm_snapshot".into(), ())
        .await
        .unwrap();

    // Everything in one block, in this order.
    let _: serde_json::Value = node(&anvil)
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .unwrap();
    let fake_usdt = send_raw(
        &anvil,
        &customer,
        &fake,
        0,
        &transfer_call(&deposit_address, 1_000),
    )
    .await;
    let spam = send_raw(
        &anvil,
        &spammer,
        &token,
        0,
        &transfer_call(&deposit_address, 0),
    )
    .await;
    let real = send_raw(
        &anvil,
        &customer,
        &token,
        0,
        &transfer_call(&deposit_address, 500),
    )
    .await;
    let dust = send_raw(&anvil, &spammer, &deposit_address, 10, "0x").await;
    let internal = send_raw(&anvil, &gas_wallet, &deposit_address, 10u128.pow(18), "0x").await;
    let eth = send_raw(&anvil, &customer, &deposit_address, 2_000, "0x").await;
    mine(&anvil, 1).await;
    let (block, success) = included(&client, &real, WAIT).await;
    assert!(success);
    for txid in [&fake_usdt, &spam, &dust, &internal, &eth] {
        assert_eq!(included(&client, txid, WAIT).await.0, block, "one block");
    }
    mine(&anvil, 1).await;
    scanner.catch_up(block.number + 1).await.unwrap();
    let rows = store
        .deposit_list(&store::DepositList {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let by_txid = |txid: &str| {
        rows.iter()
            .find(|view| view.deposit.txid == txid)
            .map(|view| &view.deposit)
    };
    assert_eq!(rows.len(), 5, "{rows:#?}");
    assert!(
        by_txid(&fake_usdt).is_none(),
        "a fake token is never looked at"
    );
    let credited = by_txid(&real).unwrap();
    assert_eq!(
        (
            credited.state,
            credited.amount,
            credited.position,
            credited.asset.as_str()
        ),
        (
            DepositState::Credited,
            Amount::from_u128(500),
            0,
            token.as_str()
        ),
        "the first log of its transaction, though not of its block"
    );
    assert_eq!(
        rows.iter()
            .find(|view| view.deposit.txid == real)
            .unwrap()
            .reference
            .as_deref(),
        Some("user:1")
    );
    assert_eq!(by_txid(&eth).unwrap().state, DepositState::Credited);
    for (txid, reason) in [
        (&spam, "zero value"),
        (&dust, "dust: below the threshold of 1000 base units"),
        (&internal, "internal: from one of our own wallets"),
    ] {
        let row = by_txid(txid).unwrap();
        assert_eq!(
            (row.state, row.reason.as_deref()),
            (DepositState::Ignored, Some(reason)),
            "{txid}"
        );
    }
    assert!(matches!(
        scanner.step().await.unwrap(),
        Step::Idle { credited: 0 }
    ));

    // The reorg: the credited ones' block is gone.
    let reverted: bool = node(&anvil)
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .unwrap();
    assert!(reverted);
    mine(&anvil, 4).await;
    let steps = scanner.catch_up(block.number + 3).await.unwrap();
    let reorg = steps
        .iter()
        .find_map(|step| match step {
            Step::Reorg { rollback, .. } => Some(*rollback),
            _ => None,
        })
        .expect("the reorg is found");
    assert_eq!(reorg.reversed, 2, "{steps:?}");
    for txid in [&real, &eth] {
        let row = store
            .deposit_list(&store::DepositList {
                state: Some(DepositState::Reversed),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .find(|view| &view.deposit.txid == txid)
            .unwrap_or_else(|| panic!("{txid} reversed and kept"));
        assert!(row.deposit.updated_at.is_some());
    }
    stored_chain_is_the_nodes(&store, &client, start).await;
}

#[tokio::test]
async fn only_real_deposits_are_credited_and_a_reorg_reverses_them_on_postgres() {
    only_real_deposits_are_credited_and_a_reorg_reverses_them(Backend::Postgres).await;
}

#[tokio::test]
async fn only_real_deposits_are_credited_and_a_reorg_reverses_them_on_sqlite() {
    only_real_deposits_are_credited_and_a_reorg_reverses_them(Backend::Sqlite).await;
}
