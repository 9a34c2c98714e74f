//! The deposit scanner's rules over a chain made up in the test (a `ChainRead` whose blocks
//! and transfers the test decides), on both stores: a range with more deposits than one
//! commit takes is shrunk instead of sticking, down to a single block that commits whatever
//! it holds; zero-value, dust and internal transfers are recorded `ignored` and never hold the
//! cursor back nor get credited; an idle scanner whose stored head left the node's chain (a
//! reorg to the same height, then finality moving on) rolls back instead of crediting a
//! deposit that is gone; the watch set follows the addresses issued in the store. The real
//! chains' versions of these are in the adapters' tests (anvil, regtest).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chain::address::{Address, Network};
use chain::provider::{
    AccountSequence, Asset, BlockRef, ChainError, ChainRead, Deposit, ScanBatch, Tip, TxStatus,
    WatchSet,
};
use domain::{Amount, Chain};
use store::{DepositState, Store};
use testkit::TestDb;
use wallet::scanner::{DepositRules, ScanPolicy, Scanner, Step};

const WATCHED: &str = "0x00000000000000000000000000000000000000A1";
const OURS: &str = "0x00000000000000000000000000000000000000B2";
const STRANGER: &str = "0x00000000000000000000000000000000000000C3";

fn address(text: &str) -> Address {
    Address::parse(Chain::Ethereum, Network::Mainnet, text).unwrap()
}

/// A chain of blocks `0..=head` on fork `fork` (blocks below 3 shared by every fork), with
/// native transfers (sender, amount, recipient) by block.
#[derive(Default)]
struct Made {
    fork: String,
    head: u64,
    finalized: Option<u64>,
    transfers: HashMap<u64, Vec<(Address, u128, Address)>>,
    /// The ranges asked for, to see the shrinking.
    asked: Vec<(u64, u64)>,
}

/// A made-up chain; cloned handles share it, so the test changes what the scanner reads.
#[derive(Clone, Default)]
struct FakeChain(Arc<Mutex<Made>>);

fn hash(fork: &str, number: u64) -> String {
    format!("0x{fork}{number:06}")
}

fn block_ref(made: &Made, number: u64) -> BlockRef {
    let fork = |n: u64| if n < 3 { "root" } else { made.fork.as_str() };
    BlockRef {
        number,
        hash: hash(fork(number), number),
        parent_hash: if number == 0 {
            "0x00".into()
        } else {
            hash(fork(number - 1), number - 1)
        },
    }
}

impl FakeChain {
    fn set(&self, change: impl FnOnce(&mut Made)) {
        change(&mut self.0.lock().unwrap());
    }
}

impl ChainRead for FakeChain {
    fn chain(&self) -> Chain {
        Chain::Ethereum
    }

    async fn tip(&self) -> Result<Tip, ChainError> {
        let made = self.0.lock().unwrap();
        Ok(Tip {
            head: made.head,
            finalized: made.finalized,
        })
    }

    async fn block(&self, number: u64) -> Result<Option<BlockRef>, ChainError> {
        let made = self.0.lock().unwrap();
        Ok((number <= made.head).then(|| block_ref(&made, number)))
    }

    async fn balance(&self, _: &Address, _: &Asset) -> Result<Amount, ChainError> {
        Err(ChainError::permanent("not in this test"))
    }

    async fn transaction(&self, _: &str) -> Result<TxStatus, ChainError> {
        Err(ChainError::permanent("not in this test"))
    }

    async fn account_sequence(&self, _: &Address) -> Result<Option<AccountSequence>, ChainError> {
        Ok(None)
    }

    async fn scan(&self, from: u64, to: u64, watch: &WatchSet) -> Result<ScanBatch, ChainError> {
        let mut made = self.0.lock().unwrap();
        made.asked.push((from, to));
        let mut batch = ScanBatch::default();
        for number in from..=to.min(made.head) {
            let block = block_ref(&made, number);
            for (position, (sender, amount, to)) in made
                .transfers
                .get(&number)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if !watch.addresses.contains(to) {
                    continue;
                }
                batch.deposits.push(Deposit {
                    txid: format!("0x{}{number:06}", made.fork),
                    position: position as u64,
                    block: block.clone(),
                    asset: Asset::Native,
                    from: Some(sender.to_string()),
                    to: to.clone(),
                    amount: Amount::from_u128(*amount),
                });
            }
            batch.blocks.push(block);
        }
        Ok(batch)
    }
}

fn policy(confirmations: u64, credit_finalized: bool) -> ScanPolicy {
    ScanPolicy {
        start: 0,
        batch_blocks: 10,
        confirmations,
        credit_finalized,
    }
}

fn watching(text: &str) -> WatchSet {
    WatchSet {
        addresses: vec![address(text)],
        tokens: vec![],
    }
}

async fn states(store: &Store) -> Vec<(u64, u128, DepositState, Option<String>)> {
    let mut rows: Vec<_> = store
        .deposits_list(Chain::Ethereum, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            (
                row.block_number,
                row.amount.base_units().to::<u128>(),
                row.state,
                row.reason,
            )
        })
        .collect();
    rows.sort_by_key(|row| (row.0, row.1));
    rows
}

async fn head(store: &Store) -> u64 {
    store
        .scan_head(Chain::Ethereum)
        .await
        .unwrap()
        .unwrap()
        .number
}

async fn too_many_deposits_shrink_the_range(db: &TestDb) {
    let store = db.store().await;
    let chain = FakeChain::default();
    let many = store::SCAN_COMMIT_DEPOSITS_MAX + 5;
    chain.set(|made| {
        made.fork = "a".into();
        made.head = 9;
        // Blocks 2 and 6 each hold more deposits than a multi-block commit takes.
        for block in [2, 6] {
            made.transfers.insert(
                block,
                (0..many)
                    .map(|n| (address(STRANGER), 1 + n as u128, address(WATCHED)))
                    .collect(),
            );
        }
    });
    let scanner = Scanner::new(
        chain.clone(),
        store.clone(),
        policy(1, false),
        watching(WATCHED),
    )
    .unwrap();
    let steps = scanner.catch_up(9).await.unwrap();
    // Nothing stuck: every block stored, every deposit of both blocks counted once.
    assert_eq!(head(&store).await, 9);
    let asked = chain.0.lock().unwrap().asked.clone();
    assert_eq!(asked[0], (0, 9), "{asked:?}");
    assert!(
        asked.contains(&(2, 2)),
        "halved down to block 2 alone: {asked:?}"
    );
    let scanned: usize = steps
        .iter()
        .map(|step| match step {
            Step::Scanned { deposits, .. } => *deposits,
            _ => 0,
        })
        .sum();
    assert_eq!(scanned, 2 * many, "{steps:?}");
    let credited = store
        .deposits_list(Chain::Ethereum, Some(DepositState::Credited), 1000)
        .await
        .unwrap();
    assert_eq!(credited.len(), 1000, "a full page of credited ones");
}

async fn ignored_transfers_never_block_nor_credit(db: &TestDb) {
    let store = db.store().await;
    let chain = FakeChain::default();
    chain.set(|made| {
        made.fork = "a".into();
        made.head = 4;
        made.transfers.insert(
            1,
            vec![
                (address(STRANGER), 0, address(WATCHED)),
                (address(STRANGER), 99, address(WATCHED)),
                (address(OURS), 5_000, address(WATCHED)),
                (address(STRANGER), 100, address(WATCHED)),
            ],
        );
    });
    let rules = DepositRules {
        dust: [("native".to_string(), Amount::from_u128(100))].into(),
        internal: [address(OURS).to_string()].into(),
    };
    let scanner = Scanner::new(chain, store.clone(), policy(2, false), watching(WATCHED))
        .unwrap()
        .with_rules(rules);
    scanner.catch_up(4).await.unwrap();
    assert_eq!(head(&store).await, 4, "the cursor moved past them");
    assert_eq!(
        states(&store).await,
        vec![
            (1, 0, DepositState::Ignored, Some("zero value".into())),
            (
                1,
                99,
                DepositState::Ignored,
                Some("dust: below the threshold of 100 base units".into())
            ),
            (1, 100, DepositState::Credited, None),
            (
                1,
                5_000,
                DepositState::Ignored,
                Some("internal: from one of our own wallets".into())
            ),
        ]
    );
}

async fn an_idle_scanner_checks_its_head_before_crediting(db: &TestDb) {
    let store = db.store().await;
    let chain = FakeChain::default();
    chain.set(|made| {
        made.fork = "a".into();
        made.head = 4;
        made.transfers
            .insert(4, vec![(address(STRANGER), 7, address(WATCHED))]);
    });
    // Credited at 12 deep or final: neither yet.
    let scanner = Scanner::new(
        chain.clone(),
        store.clone(),
        policy(12, true),
        watching(WATCHED),
    )
    .unwrap();
    scanner.catch_up(4).await.unwrap();
    assert_eq!(states(&store).await[0].2, DepositState::Pending);
    // A reorg to the same height takes blocks 3 and 4 and the deposit away, and the node
    // then calls block 4 (of the new branch) final. The scanner is idle (nothing above its
    // cursor): crediting "through 4" now would credit a deposit that no longer exists.
    chain.set(|made| {
        made.fork = "b".into();
        made.transfers.clear();
        made.finalized = Some(4);
    });
    let step = scanner.step().await.unwrap();
    let Step::Reorg { fork, rollback } = step else {
        panic!("the idle scanner must notice its head is gone: {step:?}");
    };
    assert_eq!((fork, rollback.orphaned, rollback.reversed), (2, 1, 0));
    scanner.catch_up(4).await.unwrap();
    assert!(matches!(
        scanner.step().await.unwrap(),
        Step::Idle { credited: 0 }
    ));
    assert_eq!(
        states(&store).await[0].2,
        DepositState::Orphaned,
        "never credited"
    );
}

async fn the_watch_set_follows_the_issued_addresses(db: &TestDb) {
    let store = db.store().await;
    let chain = FakeChain::default();
    chain.set(|made| {
        made.fork = "a".into();
        made.head = 2;
        made.transfers
            .insert(1, vec![(address(STRANGER), 5, address(WATCHED))]);
        made.transfers
            .insert(4, vec![(address(STRANGER), 6, address(WATCHED))]);
    });
    let scanner = Scanner::new(
        chain.clone(),
        store.clone(),
        policy(1, false),
        WatchSet::default(),
    )
    .unwrap()
    .watch_issued(Network::Mainnet);
    scanner.catch_up(2).await.unwrap();
    assert!(
        states(&store).await.is_empty(),
        "not issued yet: not watched"
    );
    store
        .deposit_address_insert(&store::DepositAddressInsert {
            chain: Chain::Ethereum,
            reference: "user:1".into(),
            index: 0,
            address: address(WATCHED).to_string(),
            actor: "test".into(),
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    chain.set(|made| made.head = 4);
    scanner.catch_up(4).await.unwrap();
    assert_eq!(scanner.watched(), 1);
    assert_eq!(
        states(&store).await,
        vec![(4, 6, DepositState::Credited, None)]
    );
}

testkit::on_both_stores!(
    db: too_many_deposits_shrink_the_range,
    ignored_transfers_never_block_nor_credit,
    an_idle_scanner_checks_its_head_before_crediting,
    the_watch_set_follows_the_issued_addresses
);
