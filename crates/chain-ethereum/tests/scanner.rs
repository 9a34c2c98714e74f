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
