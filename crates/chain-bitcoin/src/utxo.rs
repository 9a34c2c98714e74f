//! The wallet's unspent outputs, tracked from raw blocks (no node wallet), each lockable by
//! the payout that selected it, and safe across reorgs.
//!
//! [`UtxoSet::apply_block`] adds the outputs paying a known key and removes the outputs a
//! block spends, keeping an undo record per block; it refuses a block that does not chain
//! onto the last one applied (its parent hash), which is how a reorg shows.
//! [`UtxoSet::undo_to`] disconnects the blocks above a height, newest first: the outputs
//! they created leave the set, the outputs they spent come back (with the locks they had).
//! [`UtxoSet::sync`] does both against a node: walks back to the newest block the node
//! still has, undoes to it, and applies the new branch.
//!
//! [`UtxoSet::reserve`] selects and locks under one mutex: two payouts built in one process
//! at the same time never get the same output. Across processes, the store's reservations
//! decide (`utxo_reserved` / `attempt_store`; see `payout.rs`).
//!
//! Held in memory: a process rebuilds it by applying the blocks since the wallet's first one.
//! Undo records are kept for the last [`UNDO_BLOCKS_KEPT`] blocks; a deeper reorg is an
//! error for a person to look at.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use bitcoin::{Block, BlockHash, OutPoint, ScriptBuf, Txid};
use chain::provider::{ChainError, Keychain};

/// How many blocks' undo records are kept (a reorg deeper than this cannot be undone).
pub const UNDO_BLOCKS_KEPT: u64 = 1_000;
/// Confirmations a coinbase output needs before it may be spent (consensus: the spending
/// block at least 100 above it, so 100 confirmations at the tip before it). A deposit can be
/// a coinbase output: a miner may pay a deposit address.
pub const COINBASE_MATURITY: u64 = 100;

/// An output the wallet can spend, and the key that spends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Utxo {
    pub outpoint: OutPoint,
    /// Satoshi.
    pub value: u64,
    pub keychain: Keychain,
    pub index: u32,
}

/// Which transaction spent one of our outputs, and in which block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Spend {
    pub height: u64,
    /// The spending transaction.
    pub spender: Txid,
    /// The block that holds it (compare with the node's block at `height`: same branch?).
    pub block: BlockHash,
}

/// What applying one block changed, to disconnect it.
#[derive(Debug, Clone)]
struct Undo {
    hash: BlockHash,
    parent: BlockHash,
    /// Outputs of ours it spent: the output, its height, and who held it.
    spent: Vec<(Utxo, u64, Option<String>)>,
    /// Outputs of ours it created (and did not spend itself).
    created: Vec<OutPoint>,
    /// Outputs of ours it created and spent: never in the set before or after it.
    created_and_spent: Vec<OutPoint>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<ScriptBuf, (Keychain, u32)>,
    unspent: BTreeMap<OutPoint, (Utxo, u64)>,
    locks: HashMap<OutPoint, String>,
    /// Applied blocks by height, the newest last (at most UNDO_BLOCKS_KEPT).
    applied: BTreeMap<u64, Undo>,
    /// The newest block applied: (height, hash); kept when undo records are pruned.
    last: Option<(u64, BlockHash)>,
    /// Who spent each of our outputs, and where, while the block's undo record is kept.
    spent_at: HashMap<OutPoint, Spend>,
    /// The deposit outputs ([`Keychain::Deposit`]) that may be selected; any other deposit
    /// output is never available ([`UtxoSet::spend_deposits`]).
    deposits_spendable: HashSet<OutPoint>,
    /// Our outputs created by a coinbase transaction: available only at
    /// [`COINBASE_MATURITY`] confirmations. Left when spent, dropped when their block is
    /// disconnected.
    coinbase: HashSet<OutPoint>,
}

/// See the module's documentation.
#[derive(Debug, Default)]
pub struct UtxoSet {
    inner: Mutex<Inner>,
}

/// What [`UtxoSet::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Synced {
    /// Blocks disconnected by a reorg (0 without one).
    pub undone: u64,
    /// Blocks applied.
    pub applied: u64,
}

impl UtxoSet {
    pub fn new() -> UtxoSet {
        UtxoSet::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Outputs paying `script` are the wallet's, spent with key `index` of `keychain`.
    pub fn watch(&self, script: ScriptBuf, keychain: Keychain, index: u32) {
        self.lock().keys.insert(script, (keychain, index));
    }

    /// Forgets every block applied (the outputs, the spends, the undo records), keeping the
    /// keys watched and the locks: the next [`UtxoSet::sync`] rebuilds the set from its start
    /// block. For keys learned after blocks that may pay them were applied, when those blocks
    /// are deeper than the undo records reach.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.unspent.clear();
        inner.applied.clear();
        inner.last = None;
        inner.spent_at.clear();
        inner.coinbase.clear();
    }

    /// Which outputs of the deposit addresses ([`Keychain::Deposit`]) a payout may select
    /// from now on (replacing the last call's): those the caller's books credit. Every other
    /// deposit output stays out of [`UtxoSet::available`], whatever its depth.
    pub fn spend_deposits(&self, outpoints: HashSet<OutPoint>) {
        self.lock().deposits_spendable = outpoints;
    }

    /// The newest block applied: (height, hash).
    pub fn last(&self) -> Option<(u64, BlockHash)> {
        self.lock().last
    }

    /// The hash of the applied block at `height`, while its undo record is kept.
    pub fn block_hash(&self, height: u64) -> Option<BlockHash> {
        self.lock().applied.get(&height).map(|undo| undo.hash)
    }

    /// Applies block `height`: its outputs to known keys are added, the outputs it spends
    /// removed (with their locks: the payout is in a block), each spend recorded with its
    /// spender ([`UtxoSet::spent_at`]). An output created and spent in the same block is
    /// only recorded as spent: disconnecting the block leaves it out. Refused, changing nothing, when
    /// it does not chain onto the last block applied: another height than the next, or
    /// another parent than its hash (a reorg: [`UtxoSet::undo_to`] the fork first).
    pub fn apply_block(&self, block: &Block, height: u64) -> Result<(), ChainError> {
        let mut inner = self.lock();
        if let Some((last_height, last_hash)) = inner.last {
            if Some(height) != last_height.checked_add(1) {
                return Err(ChainError::permanent(format!(
                    "block {height} does not follow block {last_height}, the last applied"
                )));
            }
            if block.header.prev_blockhash != last_hash {
                return Err(ChainError::retriable(format!(
                    "block {height} builds on {}, not on {last_hash} (the block applied at \
                     {last_height}): a reorg",
                    block.header.prev_blockhash
                )));
            }
        }
        let hash = block.block_hash();
        let mut undo = Undo {
            hash,
            parent: block.header.prev_blockhash,
            spent: Vec::new(),
            created: Vec::new(),
            created_and_spent: Vec::new(),
        };
        for tx in &block.txdata {
            let txid = tx.compute_txid();
            let coinbase = tx.is_coinbase();
            for input in &tx.input {
                let spent = input.previous_output;
                if let Some((utxo, at)) = inner.unspent.remove(&spent) {
                    let holder = inner.locks.remove(&spent);
                    inner.spent_at.insert(
                        spent,
                        Spend {
                            height,
                            spender: txid,
                            block: hash,
                        },
                    );
                    if let Some(position) = undo.created.iter().position(|made| *made == spent) {
                        // Created earlier in this block: it was never in the set before it.
                        undo.created.swap_remove(position);
                        undo.created_and_spent.push(spent);
                    } else {
                        undo.spent.push((utxo, at, holder));
                    }
                }
            }
            for (vout, output) in tx.output.iter().enumerate() {
                if let Some(&(keychain, index)) = inner.keys.get(&output.script_pubkey) {
                    let Ok(vout) = u32::try_from(vout) else {
                        continue;
                    };
                    let outpoint = OutPoint { txid, vout };
                    let utxo = Utxo {
                        outpoint,
                        value: output.value.to_sat(),
                        keychain,
                        index,
                    };
                    inner.unspent.insert(outpoint, (utxo, height));
                    if coinbase {
                        inner.coinbase.insert(outpoint);
                    }
                    undo.created.push(outpoint);
                }
            }
        }
        inner.last = Some((height, undo.hash));
        inner.applied.insert(height, undo);
        while inner.applied.len() as u64 > UNDO_BLOCKS_KEPT {
            if let Some((_, pruned)) = inner.applied.pop_first() {
                for (utxo, _, _) in &pruned.spent {
                    inner.spent_at.remove(&utxo.outpoint);
                }
                for outpoint in &pruned.created_and_spent {
                    inner.spent_at.remove(outpoint);
                }
            }
        }
        Ok(())
    }

    /// Disconnects every applied block above `height`, newest first: the outputs they
    /// created leave the set (with any lock), the outputs they spent come back (with the
    /// lock they had). Refused, changing nothing, when an undo record is missing (a reorg
    /// deeper than [`UNDO_BLOCKS_KEPT`]). Returns the blocks disconnected.
    pub fn undo_to(&self, height: u64) -> Result<u64, ChainError> {
        let mut inner = self.lock();
        let Some((last_height, _)) = inner.last else {
            return Ok(0);
        };
        if last_height <= height {
            return Ok(0);
        }
        let oldest_kept = inner.applied.keys().next().copied().unwrap_or(last_height);
        if height.saturating_add(1) < oldest_kept {
            return Err(ChainError::permanent(format!(
                "cannot undo to block {height}: undo records go back to {oldest_kept} only (a \
                 reorg deeper than {UNDO_BLOCKS_KEPT} blocks): rebuild the set from the chain"
            )));
        }
        let mut undone = 0;
        while let Some((&at, _)) = inner.applied.last_key_value() {
            if at <= height {
                break;
            }
            let Some((_, undo)) = inner.applied.pop_last() else {
                break;
            };
            // The block below is now the last: its hash is this one's parent.
            inner.last = at.checked_sub(1).map(|below| (below, undo.parent));
            for outpoint in &undo.created {
                inner.unspent.remove(outpoint);
                inner.locks.remove(outpoint);
                inner.coinbase.remove(outpoint);
            }
            for outpoint in &undo.created_and_spent {
                inner.spent_at.remove(outpoint);
                inner.locks.remove(outpoint);
                inner.coinbase.remove(outpoint);
            }
            for (utxo, spent_height, holder) in undo.spent.into_iter().rev() {
                inner.spent_at.remove(&utxo.outpoint);
                inner.unspent.insert(utxo.outpoint, (utxo, spent_height));
                if let Some(holder) = holder {
                    inner.locks.insert(utxo.outpoint, holder);
                }
            }
            undone += 1;
        }
        Ok(undone)
    }

    /// Brings the set to the node's best chain: applies the blocks after the last one, and
    /// on a reorg walks back (at most the undo records kept) to the newest block the node
    /// still has under the same hash, disconnects above it and applies the new branch.
    /// A reorg shows by a block that does not chain onto the last one applied, and also by
    /// the node's block at the last height applied being another one (a new branch of the
    /// same height, or a shorter one, sends no block above it).
    /// `at_most` bounds the blocks applied in one call.
    pub async fn sync(
        &self,
        bitcoin: &crate::Bitcoin,
        start: u64,
        at_most: u64,
    ) -> Result<Synced, ChainError> {
        use chain::provider::ChainRead;
        let mut synced = Synced::default();
        let tip = bitcoin.tip().await?.head;
        if let Some((last_height, last_hash)) = self.last() {
            let same = match bitcoin.block(last_height).await? {
                Some(block) => block.hash == last_hash.to_string(),
                None => false,
            };
            if !same {
                let fork = self.fork_point(bitcoin).await?;
                synced.undone = self.undo_to(fork)?;
                tracing::warn!(
                    fork,
                    undone = synced.undone,
                    "bitcoin reorg: unspent outputs rolled back"
                );
            }
        }
        let mut next = self.last().map_or(start, |(height, _)| height + 1);
        while next <= tip && synced.applied < at_most {
            let Some(block) = bitcoin.raw_block(next).await? else {
                break;
            };
            match self.apply_block(&block, next) {
                Ok(()) => {
                    synced.applied += 1;
                    next += 1;
                }
                Err(error) if error.retriable && synced.undone == 0 => {
                    let fork = self.fork_point(bitcoin).await?;
                    synced.undone = self.undo_to(fork)?;
                    tracing::warn!(
                        fork,
                        undone = synced.undone,
                        "bitcoin reorg: unspent outputs rolled back"
                    );
                    next = fork + 1;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(synced)
    }

    /// The newest applied height whose hash the node still has there.
    async fn fork_point(&self, bitcoin: &crate::Bitcoin) -> Result<u64, ChainError> {
        use chain::provider::ChainRead;
        let heights: Vec<(u64, BlockHash)> = {
            let inner = self.lock();
            inner
                .applied
                .iter()
                .rev()
                .map(|(&height, undo)| (height, undo.hash))
                .collect()
        };
        for (height, hash) in heights {
            if let Some(block) = bitcoin.block(height).await?
                && block.hash == hash.to_string()
            {
                return Ok(height);
            }
        }
        Err(ChainError::permanent(format!(
            "no block of the last {UNDO_BLOCKS_KEPT} applied is on the node's chain: rebuild \
             the unspent outputs from the chain"
        )))
    }

    /// Every unspent output, locked or not, with the height of its block.
    pub fn all(&self) -> Vec<(Utxo, u64)> {
        self.lock().unspent.values().copied().collect()
    }

    /// Who spent our output `outpoint` and in which block (within the blocks whose undo
    /// records are kept); None while it is unspent, unknown, or spent longer ago.
    pub fn spent_at(&self, outpoint: &OutPoint) -> Option<Spend> {
        self.lock().spent_at.get(outpoint).copied()
    }

    /// The unspent output at `outpoint`, if the wallet has it.
    pub fn get(&self, outpoint: &OutPoint) -> Option<Utxo> {
        self.lock().unspent.get(outpoint).map(|(utxo, _)| *utxo)
    }

    /// The key that spends outputs paying `script`, if it is one of the wallet's.
    pub fn key_of(&self, script: &ScriptBuf) -> Option<(Keychain, u32)> {
        self.lock().keys.get(script).copied()
    }

    /// Whether `outpoint` is an unspent output of the wallet.
    pub fn contains(&self, outpoint: &OutPoint) -> bool {
        self.lock().unspent.contains_key(outpoint)
    }

    /// The outputs no payout holds, confirmed by at least `min_confirmations` at `tip` (a
    /// coinbase output by at least [`COINBASE_MATURITY`] too, as consensus requires); a
    /// deposit output only when [`UtxoSet::spend_deposits`] named it.
    pub fn available(&self, tip: u64, min_confirmations: u64) -> Vec<Utxo> {
        let inner = self.lock();
        Self::available_in(&inner, tip, min_confirmations)
    }

    fn available_in(inner: &Inner, tip: u64, min_confirmations: u64) -> Vec<Utxo> {
        inner
            .unspent
            .values()
            .filter(|(utxo, height)| {
                let needed = if inner.coinbase.contains(&utxo.outpoint) {
                    min_confirmations.max(COINBASE_MATURITY)
                } else {
                    min_confirmations
                };
                !inner.locks.contains_key(&utxo.outpoint)
                    && tip.saturating_add(1) >= height.saturating_add(needed)
                    && (utxo.keychain != Keychain::Deposit
                        || inner.deposits_spendable.contains(&utxo.outpoint))
            })
            .map(|(utxo, _)| *utxo)
            .collect()
    }

    /// Selects with `select` among the available outputs and locks what it chose for
    /// `payout`, all under the set's mutex.
    pub fn reserve<T>(
        &self,
        payout: &str,
        tip: u64,
        min_confirmations: u64,
        select: impl FnOnce(&[Utxo]) -> Result<(T, Vec<Utxo>), ChainError>,
    ) -> Result<T, ChainError> {
        let mut inner = self.lock();
        let available = Self::available_in(&inner, tip, min_confirmations);
        let (built, chosen) = select(&available)?;
        for utxo in &chosen {
            if inner.locks.contains_key(&utxo.outpoint)
                || !inner.unspent.contains_key(&utxo.outpoint)
            {
                return Err(ChainError::permanent(format!(
                    "output {} is not available",
                    utxo.outpoint
                )));
            }
        }
        for utxo in chosen {
            inner.locks.insert(utxo.outpoint, payout.to_string());
        }
        Ok(built)
    }

    /// Who holds `outpoint`, if anyone.
    pub fn holder(&self, outpoint: &OutPoint) -> Option<String> {
        self.lock().locks.get(outpoint).cloned()
    }

    /// Releases every output `payout` holds (an abandoned payout, never one that may land).
    pub fn release(&self, payout: &str) -> usize {
        let mut inner = self.lock();
        let before = inner.locks.len();
        inner.locks.retain(|_, holder| holder != payout);
        before - inner.locks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::block::{Header, Version as BlockVersion};
    use bitcoin::hashes::Hash;
    use bitcoin::{
        Amount, CompactTarget, Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Witness,
        absolute::LockTime, transaction::Version,
    };

    fn script(n: u8) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([n; 20]))
    }

    fn tx(spends: &[OutPoint], pays: &[(u8, u64)], nonce: u32) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::from_consensus(nonce),
            input: spends
                .iter()
                .map(|outpoint| TxIn {
                    previous_output: *outpoint,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: pays
                .iter()
                .map(|(n, value)| TxOut {
                    value: Amount::from_sat(*value),
                    script_pubkey: script(*n),
                })
                .collect(),
        }
    }

    fn block(parent: BlockHash, txdata: Vec<Transaction>, nonce: u32) -> Block {
        Block {
            header: Header {
                version: BlockVersion::TWO,
                prev_blockhash: parent,
                merkle_root: TxMerkleNode::all_zeros(),
                time: 0,
                bits: CompactTarget::from_consensus(0),
                nonce,
            },
            txdata,
        }
    }

    #[test]
    fn a_block_that_does_not_chain_is_refused_and_undo_restores_the_set() {
        let set = UtxoSet::new();
        set.watch(script(1), Keychain::Receive, 0);
        set.watch(script(2), Keychain::Change, 0);
        let funding = tx(&[], &[(1, 50_000), (9, 1)], 0);
        let funded = OutPoint {
            txid: funding.compute_txid(),
            vout: 0,
        };
        let b1 = block(BlockHash::all_zeros(), vec![funding], 1);
        set.apply_block(&b1, 1).unwrap();
        assert_eq!(set.all().len(), 1);
        // A payout spends the funding output and pays change to us, in block 2.
        set.reserve("p1", 2, 1, |available| Ok(((), available.to_vec())))
            .unwrap();
        let payout = tx(&[funded], &[(9, 30_000), (2, 19_000)], 0);
        let change = OutPoint {
            txid: payout.compute_txid(),
            vout: 1,
        };
        let b2 = block(b1.block_hash(), vec![payout], 2);
        // Another height, or another parent, is refused and changes nothing.
        assert!(set.apply_block(&b2, 3).is_err());
        let orphan = block(BlockHash::from_byte_array([7; 32]), vec![], 9);
        let refused = set.apply_block(&orphan, 2).unwrap_err();
        assert!(refused.retriable, "a reorg: {refused}");
        assert_eq!(set.last(), Some((1, b1.block_hash())));
        set.apply_block(&b2, 2).unwrap();
        assert!(set.contains(&change) && !set.contains(&funded));
        assert_eq!(set.holder(&funded), None, "spent: the lock went with it");
        assert_eq!(
            set.spent_at(&funded),
            Some(Spend {
                height: 2,
                spender: change.txid,
                block: b2.block_hash(),
            })
        );
        // Block 2 disconnected: the change is gone, the funding output back, locked again
        // by its payout (its transaction is back in the pool, not abandoned).
        assert_eq!(set.undo_to(1).unwrap(), 1);
        assert!(!set.contains(&change));
        assert!(set.contains(&funded));
        assert_eq!(set.holder(&funded).as_deref(), Some("p1"));
        assert_eq!(set.spent_at(&funded), None, "unspent again");
        assert_eq!(set.last(), Some((1, b1.block_hash())));
        assert_eq!(set.undo_to(5).unwrap(), 0, "nothing above 5");
        // The other branch applies on the fork.
        let other = block(b1.block_hash(), vec![], 3);
        set.apply_block(&other, 2).unwrap();
        assert_eq!(set.block_hash(2), Some(other.block_hash()));
        assert_eq!(set.undo_to(0).unwrap(), 2);
        assert!(set.all().is_empty());
    }

    #[test]
    fn an_output_created_and_spent_in_one_block_is_not_resurrected_by_undo() {
        let set = UtxoSet::new();
        set.watch(script(1), Keychain::Receive, 0);
        set.watch(script(2), Keychain::Change, 0);
        let b1 = block(BlockHash::all_zeros(), vec![], 1);
        set.apply_block(&b1, 1).unwrap();
        // Block 2: a parent pays us, a child spends that output and pays us change.
        let parent = tx(&[], &[(1, 50_000)], 0);
        let made = OutPoint {
            txid: parent.compute_txid(),
            vout: 0,
        };
        let child = tx(&[made], &[(9, 30_000), (2, 19_000)], 0);
        let change = OutPoint {
            txid: child.compute_txid(),
            vout: 1,
        };
        let b2 = block(b1.block_hash(), vec![parent, child], 2);
        set.apply_block(&b2, 2).unwrap();
        assert!(!set.contains(&made) && set.contains(&change));
        assert_eq!(
            set.spent_at(&made),
            Some(Spend {
                height: 2,
                spender: change.txid,
                block: b2.block_hash(),
            })
        );
        // Disconnected: neither the parent's output nor the change is ours any more.
        assert_eq!(set.undo_to(1).unwrap(), 1);
        assert!(set.all().is_empty(), "{:?}", set.all());
        assert_eq!(set.spent_at(&made), None);
        assert_eq!(set.last(), Some((1, b1.block_hash())));
    }

    /// Outputs of the deposit addresses are tracked like any other (spends, undo), but a
    /// payout may select one only while the caller names it spendable; a reset forgets the
    /// blocks and keeps the keys, so the same blocks applied again give the same outputs.
    #[test]
    fn a_deposit_output_is_available_only_when_named_and_a_reset_rebuilds_the_same_set() {
        let set = UtxoSet::new();
        set.watch(script(1), Keychain::Receive, 0);
        set.watch(script(3), Keychain::Deposit, 7);
        let funding = tx(&[], &[(1, 50_000), (3, 20_000), (3, 30_000)], 0);
        let txid = funding.compute_txid();
        let hot = OutPoint { txid, vout: 0 };
        let credited = OutPoint { txid, vout: 1 };
        let other = OutPoint { txid, vout: 2 };
        let b1 = block(BlockHash::all_zeros(), vec![funding], 1);
        set.apply_block(&b1, 1).unwrap();
        assert_eq!(set.all().len(), 3);
        assert_eq!(set.get(&credited).unwrap().keychain, Keychain::Deposit);
        assert_eq!(set.get(&credited).unwrap().index, 7);
        let available = |set: &UtxoSet| {
            let mut outpoints: Vec<OutPoint> = set
                .available(1, 1)
                .iter()
                .map(|utxo| utxo.outpoint)
                .collect();
            outpoints.sort();
            outpoints
        };
        assert_eq!(available(&set), vec![hot], "no deposit output named yet");
        set.spend_deposits(HashSet::from([credited]));
        let mut expected = vec![hot, credited];
        expected.sort();
        assert_eq!(available(&set), expected);
        assert!(
            set.available(0, 2).is_empty(),
            "still one confirmation short"
        );
        set.spend_deposits(HashSet::new());
        assert_eq!(available(&set), vec![hot], "named no more");
        // A payout spends the credited deposit.
        let payout = tx(&[credited], &[(9, 19_000)], 0);
        let b2 = block(b1.block_hash(), vec![payout.clone()], 2);
        set.apply_block(&b2, 2).unwrap();
        assert!(!set.contains(&credited) && set.contains(&other));
        assert_eq!(
            set.spent_at(&credited).unwrap().spender,
            payout.compute_txid()
        );
        let before = set.all();
        set.reset();
        assert!(set.all().is_empty() && set.last().is_none());
        set.apply_block(&b1, 1).unwrap();
        set.apply_block(&b2, 2).unwrap();
        let mut after = set.all();
        let mut before = before;
        before.sort_by_key(|(utxo, _)| utxo.outpoint);
        after.sort_by_key(|(utxo, _)| utxo.outpoint);
        assert_eq!(before, after);
    }

    /// A coinbase output of ours (a miner paid one of our addresses) is available only at
    /// 100 confirmations, whatever the caller asks; an ordinary output at what it asks.
    #[test]
    fn a_coinbase_output_waits_for_maturity() {
        let set = UtxoSet::new();
        set.watch(script(1), Keychain::Receive, 0);
        let mut coinbase = tx(&[], &[(1, 50_000)], 0);
        coinbase.input.push(TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(vec![1, 1]),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        });
        assert!(coinbase.is_coinbase());
        let ordinary = tx(&[], &[(1, 20_000)], 1);
        let mined = OutPoint {
            txid: coinbase.compute_txid(),
            vout: 0,
        };
        let paid = OutPoint {
            txid: ordinary.compute_txid(),
            vout: 0,
        };
        let b1 = block(BlockHash::all_zeros(), vec![coinbase, ordinary], 1);
        set.apply_block(&b1, 1).unwrap();
        let available = |tip| -> Vec<OutPoint> {
            set.available(tip, 1)
                .iter()
                .map(|utxo| utxo.outpoint)
                .collect()
        };
        assert_eq!(available(1), vec![paid]);
        assert_eq!(
            available(COINBASE_MATURITY - 1),
            vec![paid],
            "99 confirmations"
        );
        assert_eq!(available(COINBASE_MATURITY).len(), 2, "100");
        assert!(
            set.available(1, 0)
                .iter()
                .all(|utxo| utxo.outpoint != mined)
        );
        // Disconnected and mined again as an ordinary output: no longer a coinbase.
        set.undo_to(0).unwrap();
        assert!(set.all().is_empty());
    }

    #[test]
    fn undo_records_are_bounded_and_a_deeper_reorg_is_refused() {
        let set = UtxoSet::new();
        let mut parent = BlockHash::all_zeros();
        for height in 1..=UNDO_BLOCKS_KEPT + 5 {
            let b = block(parent, vec![], height as u32);
            set.apply_block(&b, height).unwrap();
            parent = b.block_hash();
        }
        assert_eq!(set.block_hash(5), None, "pruned");
        assert!(set.undo_to(4).is_err());
        assert_eq!(set.last().unwrap().0, UNDO_BLOCKS_KEPT + 5);
        let hash_6 = set.block_hash(6).unwrap();
        assert_eq!(set.undo_to(5).unwrap(), UNDO_BLOCKS_KEPT);
        assert_eq!(set.last().unwrap().0, 5);
        // A block on the undone block 6 is refused: the last applied is 5.
        assert!(set.apply_block(&block(hash_6, vec![], 99), 6).is_err());
    }
}
