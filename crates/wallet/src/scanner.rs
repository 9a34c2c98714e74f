//! Deposits by block scan.
//!
//! Each [`Scanner::step`] reads the next range of blocks after the newest stored one (at most
//! [`ScanPolicy::batch_blocks`], never past the head), checks that the range follows the
//! stored chain by its first block's parent hash, and commits the blocks and their deposits
//! in one store transaction. A range that does not follow means a reorg: the scanner walks
//! back over the stored blocks to the newest one the node still has under the same hash, and
//! rolls the store back to it (the cut blocks' deposits are orphaned, or reversed if they had
//! been credited, which is logged as an error for a person to look at); the next step scans
//! the new branch. Then deposits deep enough by the [`ScanPolicy`] are credited.
//!
//! A scanner that crashes anywhere loses nothing: the store holds the cursor, a commit is all
//! or nothing, and a range read twice finds the same deposits under the same keys.
//!
//! Nothing a chain can put in a block holds the cursor back: a transfer that will never be
//! credited (zero value, below its asset's dust threshold, from one of our own wallets) is
//! committed `ignored` with its reason ([`DepositRules`]); a range with more deposits than one
//! commit takes ([`SCAN_COMMIT_DEPOSITS_MAX`]) is read again in halves, down to a single
//! block, whose commit takes any number the chain allows. When idle at the head, the scanner
//! checks that its newest stored block is still the node's before it credits anything, so a
//! reorg that shortened the chain under an idle scanner is rolled back, not credited.
//!
//! With [`Scanner::watch_issued`], the watch set is the deposit addresses issued in the store,
//! read again at every step *after* the head is read: an address issued later than that read
//! cannot have been paid in a block the step covers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chain::address::{Address, Network};
use chain::provider::{ChainRead, Tip, WatchSet};
use chrono::Utc;
use domain::Amount;
use store::{
    DepositAddressList, DepositInsert, Rollback, SCAN_BLOCKS_KEPT, SCAN_COMMIT_BLOCKS_MAX,
    SCAN_COMMIT_DEPOSITS_MAX, ScannedBlock, Store,
};

use crate::WalletError;

/// When to scan from and when to credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPolicy {
    /// The first block to scan when nothing is stored yet (the block the deposit addresses
    /// were first handed out in; earlier blocks cannot hold deposits).
    pub start: u64,
    /// Blocks read and committed per step.
    pub batch_blocks: u64,
    /// A deposit is credited once its block has this many confirmations (the block itself
    /// counts as one)...
    pub confirmations: u64,
    /// ...or once the node reports its block final, whichever comes first.
    pub credit_finalized: bool,
}

impl ScanPolicy {
    /// Ethereum: 12 confirmations or the `finalized` block; 500 blocks per step.
    pub fn ethereum(start: u64) -> ScanPolicy {
        ScanPolicy {
            start,
            batch_blocks: 500,
            confirmations: 12,
            credit_finalized: true,
        }
    }

    /// Bitcoin: `confirmations` deep (no finality: only depth counts; 6 is usual, 1 to
    /// `SCAN_BLOCKS_KEPT`), 100 blocks per step (a Bitcoin block is read whole).
    pub fn bitcoin(start: u64, confirmations: u64) -> ScanPolicy {
        ScanPolicy {
            start,
            batch_blocks: 100,
            confirmations,
            credit_finalized: false,
        }
    }

    /// The newest block whose deposits may be credited at `tip`; None while none may.
    pub fn credit_through(&self, tip: Tip) -> Option<u64> {
        let by_depth = (tip.head + 1).checked_sub(self.confirmations.max(1));
        let by_finality = tip.finalized.filter(|_| self.credit_finalized);
        by_depth.max(by_finality)
    }

    fn check(&self) -> Result<(), WalletError> {
        if self.batch_blocks == 0 || self.batch_blocks > SCAN_COMMIT_BLOCKS_MAX as u64 {
            return Err(WalletError::Invalid(format!(
                "a scan step reads 1 to {SCAN_COMMIT_BLOCKS_MAX} blocks"
            )));
        }
        if self.confirmations == 0 || self.confirmations > SCAN_BLOCKS_KEPT {
            return Err(WalletError::Invalid(format!(
                "confirmations must be 1 to {SCAN_BLOCKS_KEPT} (the blocks kept for reorgs)"
            )));
        }
        Ok(())
    }
}

impl ScanPolicy {
    /// TRON: credited once the block is solidified (the node's final block; no depth counts,
    /// so the depth is set to the most kept and finality always comes first); 100 blocks per
    /// step.
    pub fn tron(start: u64) -> ScanPolicy {
        ScanPolicy {
            start,
            batch_blocks: 100,
            confirmations: SCAN_BLOCKS_KEPT,
            credit_finalized: true,
        }
    }
}

/// Which transfers to our addresses are recorded but never credited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepositRules {
    /// Per asset as stored (`native`, or the token's contract): an amount below it is dust.
    pub dust: HashMap<String, Amount>,
    /// Our own wallets (hot, gas, staking), as their canonical address text: a transfer from
    /// one of them is internal (a sweep, a gas top-up), never a customer's deposit.
    pub internal: HashSet<String>,
}

impl DepositRules {
    /// Why a transfer of `amount` of `asset` from `sender` is not credited; None to credit it.
    pub fn ignore_reason(
        &self,
        asset: &str,
        sender: Option<&str>,
        amount: &Amount,
    ) -> Option<String> {
        if amount.is_zero() {
            return Some("zero value".into());
        }
        if sender.is_some_and(|sender| self.internal.contains(sender)) {
            return Some("internal: from one of our own wallets".into());
        }
        if let Some(dust) = self.dust.get(asset)
            && amount.base_units() < dust.base_units()
        {
            return Some(format!(
                "dust: below the threshold of {} base units",
                dust.base_units()
            ));
        }
        None
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Blocks `from..=to` stored with their deposits (`ignored` of them recorded, never to be
    /// credited); `credited` deposits credited.
    Scanned {
        from: u64,
        to: u64,
        deposits: usize,
        ignored: usize,
        credited: u64,
    },
    /// A reorg: the stored chain was cut back to `fork` (the newest block both agree on).
    Reorg { fork: u64, rollback: Rollback },
    /// Nothing new on the chain; `credited` deposits credited.
    Idle { credited: u64 },
}

/// Issued deposit addresses read per store call while refreshing the watch set.
const WATCH_PAGE: u32 = 1_000;

/// A deposit scanner for one chain.
pub struct Scanner<P> {
    provider: P,
    store: Store,
    policy: ScanPolicy,
    watch: Mutex<Arc<WatchSet>>,
    rules: DepositRules,
    /// Set by [`Scanner::watch_issued`]: the network addresses are parsed for, and the id of
    /// the newest issued address already in the watch set.
    issued: Option<(Network, Mutex<Option<i64>>)>,
}

impl<P> std::fmt::Debug for Scanner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let watch = self.watch_set();
        f.debug_struct("Scanner")
            .field("policy", &self.policy)
            .field("watched", &watch.addresses.len())
            .field("tokens", &watch.tokens.len())
            .finish_non_exhaustive()
    }
}

impl<P> Scanner<P> {
    fn watch_set(&self) -> Arc<WatchSet> {
        Arc::clone(
            &self
                .watch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl<P: ChainRead> Scanner<P> {
    pub fn new(
        provider: P,
        store: Store,
        policy: ScanPolicy,
        watch: WatchSet,
    ) -> Result<Self, WalletError> {
        policy.check()?;
        let chain = provider.chain();
        for address in watch.addresses.iter().chain(&watch.tokens) {
            if address.chain() != chain {
                return Err(WalletError::Invalid(format!(
                    "{address} is a {} address, not {chain}",
                    address.chain()
                )));
            }
        }
        Ok(Scanner {
            provider,
            store,
            policy,
            watch: Mutex::new(Arc::new(watch)),
            rules: DepositRules::default(),
            issued: None,
        })
    }

    /// Records transfers these rules ignore as `ignored` instead of crediting them.
    pub fn with_rules(mut self, rules: DepositRules) -> Self {
        self.rules = rules;
        self
    }

    /// Watches every deposit address issued for the chain in the store (added to the
    /// addresses given to [`Scanner::new`]), read again at every step.
    pub fn watch_issued(mut self, network: Network) -> Self {
        self.issued = Some((network, Mutex::new(None)));
        self
    }

    pub fn provider(&self) -> &P {
        &self.provider
    }

    /// How many addresses are watched now.
    pub fn watched(&self) -> usize {
        self.watch_set().addresses.len()
    }

    /// Adds the deposit addresses issued since the last call to the watch set.
    async fn refresh_watch(&self) -> Result<(), WalletError> {
        let Some((network, newest)) = &self.issued else {
            return Ok(());
        };
        let chain = self.provider.chain();
        let mut after = *newest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut added = Vec::new();
        loop {
            let page = self
                .store
                .deposit_address_list(&DepositAddressList {
                    chain: Some(chain),
                    reference: None,
                    after_id: after,
                    limit: WATCH_PAGE,
                })
                .await?;
            for row in &page {
                // Stored by the control plane after the same check; a row that no longer
                // parses (a changed network) is said, never silently dropped.
                let address = Address::parse(chain, *network, &row.address).map_err(|error| {
                    WalletError::Invalid(format!(
                        "issued deposit address {} ({}): {error}",
                        row.id, row.address
                    ))
                })?;
                added.push(address);
            }
            let full = page.len() == WATCH_PAGE as usize;
            if let Some(last) = page.last() {
                after = Some(last.id);
            }
            if !full {
                break;
            }
        }
        if !added.is_empty() {
            let mut watch = self
                .watch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut next = WatchSet::clone(&watch);
            next.addresses.extend(added);
            *watch = Arc::new(next);
        }
        *newest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = after;
        Ok(())
    }

    /// Reads, checks and stores the next range; rolls back on a reorg; credits.
    pub async fn step(&self) -> Result<Step, WalletError> {
        let chain = self.provider.chain();
        let tip = self.provider.tip().await?;
        // After the head is read: see the module's comment.
        self.refresh_watch().await?;
        let watch = self.watch_set();
        let stored = self.store.scan_head(chain).await?;
        let next = stored
            .as_ref()
            .map_or(self.policy.start, |block| block.number + 1);
        if next > tip.head {
            // Idle at the head: the newest stored block must still be the node's, or the
            // chain was reorganised shorter (or sideways at the same height) under us.
            if let Some(stored) = &stored {
                let node = self.provider.block(stored.number).await?;
                if node.is_none_or(|block| block.hash != stored.hash) {
                    return self.roll_back(stored.number).await;
                }
            }
            let credited = self.credit(tip).await?;
            return Ok(Step::Idle { credited });
        }
        let mut to = tip.head.min(next + self.policy.batch_blocks - 1);
        let batch = loop {
            let batch = self.provider.scan(next, to, &watch).await?;
            batch.check(next)?;
            if batch.deposits.len() <= SCAN_COMMIT_DEPOSITS_MAX || to == next {
                break batch;
            }
            // More than one commit takes: read the first half again.
            let shorter = next + (to - next) / 2;
            tracing::info!(%chain, from = next, to, shorter, deposits = batch.deposits.len(), "a scan range with too many deposits is shrunk");
            to = shorter;
        };
        if let (Some(stored), Some(first)) = (&stored, batch.blocks.first())
            && first.parent_hash != stored.hash
        {
            return self.roll_back(stored.number).await;
        }
        let blocks: Vec<ScannedBlock> = batch
            .blocks
            .iter()
            .map(|block| ScannedBlock {
                number: block.number,
                hash: block.hash.clone(),
                parent_hash: block.parent_hash.clone(),
            })
            .collect();
        let deposits: Vec<DepositInsert> = batch
            .deposits
            .iter()
            .map(|deposit| {
                let asset = match &deposit.asset {
                    chain::provider::Asset::Native => "native".to_string(),
                    chain::provider::Asset::Token(contract) => contract.to_string(),
                };
                let ignored =
                    self.rules
                        .ignore_reason(&asset, deposit.from.as_deref(), &deposit.amount);
                DepositInsert {
                    txid: deposit.txid.clone(),
                    asset,
                    position: deposit.position,
                    address: deposit.to.to_string(),
                    sender: deposit.from.clone(),
                    amount: deposit.amount,
                    block_number: deposit.block.number,
                    block_hash: deposit.block.hash.clone(),
                    ignored,
                }
            })
            .collect();
        let ignored = deposits
            .iter()
            .filter(|deposit| deposit.ignored.is_some())
            .count();
        self.store
            .scan_commit(chain, &blocks, &deposits, Utc::now())
            .await?;
        let credited = self.credit(tip).await?;
        Ok(Step::Scanned {
            from: next,
            to,
            deposits: deposits.len(),
            ignored,
            credited,
        })
    }

    /// Steps until the stored chain reaches `target` (or the head, if lower); the steps taken.
    pub async fn catch_up(&self, target: u64) -> Result<Vec<Step>, WalletError> {
        let mut steps = Vec::new();
        loop {
            let step = self.step().await?;
            let done = match &step {
                Step::Scanned { to, .. } => *to >= target,
                Step::Idle { .. } => true,
                Step::Reorg { .. } => false,
            };
            steps.push(step);
            if done {
                return Ok(steps);
            }
        }
    }

    async fn credit(&self, tip: Tip) -> Result<u64, WalletError> {
        let Some(through) = self.policy.credit_through(tip) else {
            return Ok(0);
        };
        Ok(self
            .store
            .deposits_credit(self.provider.chain(), through, Utc::now())
            .await?)
    }

    /// Finds the newest stored block the node still has under the same hash, at or below
    /// `from`, and cuts the stored chain back to it.
    async fn roll_back(&self, from: u64) -> Result<Step, WalletError> {
        let chain = self.provider.chain();
        let mut number = from;
        loop {
            let Some(stored) = self.store.scan_block(chain, number).await? else {
                return Err(WalletError::Unsupported(format!(
                    "a {chain} reorg deeper than the {SCAN_BLOCKS_KEPT} blocks kept: no stored \
                     block at {number} to compare; a person must look before scanning goes on"
                )));
            };
            let node = self.provider.block(number).await?;
            if node.is_some_and(|block| block.hash == stored.hash) {
                break;
            }
            number = number.checked_sub(1).ok_or_else(|| {
                WalletError::Unsupported(format!("{chain}: no common block with the node"))
            })?;
        }
        let rollback = self.store.scan_rollback(chain, number, Utc::now()).await?;
        if rollback.reversed > 0 {
            metrics::counter!("coinsensei_deposits_reversed_total", "chain" => chain.as_str())
                .increment(rollback.reversed);
            tracing::error!(%chain, fork = number, reversed = rollback.reversed, "a reorg took away credited deposits: look at the reversed deposits");
        } else {
            tracing::warn!(%chain, fork = number, blocks = rollback.blocks, orphaned = rollback.orphaned, "reorg: the stored chain was cut back");
        }
        Ok(Step::Reorg {
            fork: number,
            rollback,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tron_credits_only_solidified_blocks() {
        let policy = ScanPolicy::tron(0);
        let tip = |head, finalized| Tip { head, finalized };
        assert_eq!(policy.credit_through(tip(100, Some(81))), Some(81));
        assert_eq!(
            policy.credit_through(tip(100, None)),
            None,
            "no depth counts"
        );
        assert_eq!(
            policy.credit_through(tip(5_000, Some(4_981))),
            Some(4_981),
            "the solidified block, not 2,048 deep"
        );
        assert!(policy.check().is_ok());
        assert!(ScanPolicy::bitcoin(0, 6).check().is_ok());
        assert!(ScanPolicy::bitcoin(0, 0).check().is_err(), "never 0-conf");
    }

    #[test]
    fn rules_say_why_a_transfer_is_ignored() {
        let rules = DepositRules {
            dust: [("native".to_string(), Amount::from_u128(10))].into(),
            internal: ["ours".to_string()].into(),
        };
        let units = Amount::from_u128;
        assert_eq!(
            rules.ignore_reason("native", None, &units(0)).as_deref(),
            Some("zero value")
        );
        assert!(
            rules
                .ignore_reason("native", None, &units(9))
                .unwrap()
                .starts_with("dust")
        );
        assert_eq!(rules.ignore_reason("native", None, &units(10)), None);
        assert_eq!(
            rules.ignore_reason("0xtoken", None, &units(1)),
            None,
            "no threshold"
        );
        assert!(
            rules
                .ignore_reason("native", Some("ours"), &units(50))
                .unwrap()
                .starts_with("internal")
        );
        assert_eq!(
            rules.ignore_reason("native", Some("theirs"), &units(50)),
            None
        );
    }

    #[test]
    fn credits_by_depth_or_finality() {
        let policy = ScanPolicy::ethereum(0);
        let tip = |head, finalized| Tip { head, finalized };
        assert_eq!(policy.credit_through(tip(5, None)), None, "not 12 deep yet");
        assert_eq!(policy.credit_through(tip(11, None)), Some(0));
        assert_eq!(policy.credit_through(tip(100, None)), Some(89));
        assert_eq!(policy.credit_through(tip(100, Some(95))), Some(95));
        assert_eq!(policy.credit_through(tip(100, Some(10))), Some(89));
        let no_finality = ScanPolicy {
            credit_finalized: false,
            ..policy
        };
        assert_eq!(no_finality.credit_through(tip(100, Some(95))), Some(89));
        let one = ScanPolicy {
            confirmations: 1,
            ..policy
        };
        assert_eq!(one.credit_through(tip(7, None)), Some(7));
        assert!(
            ScanPolicy {
                batch_blocks: 0,
                ..policy
            }
            .check()
            .is_err()
        );
        assert!(
            ScanPolicy {
                confirmations: 0,
                ..policy
            }
            .check()
            .is_err()
        );
        assert!(
            ScanPolicy {
                confirmations: SCAN_BLOCKS_KEPT + 1,
                ..policy
            }
            .check()
            .is_err()
        );
    }
}
