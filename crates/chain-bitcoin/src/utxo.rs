//! The wallet's unspent outputs, tracked from raw blocks (no node wallet), each locked by the
//! payout that selected it.
//!
//! [`UtxoSet::apply_block`] adds the outputs paying a known key and removes the outputs a
//! block spends. [`UtxoSet::reserve`] selects and locks under one mutex: two payouts built at
//! the same time never get the same output. A lock is released when its payout is abandoned
//! ([`UtxoSet::release`]), and the output leaves the set when the block spending it is applied.
//!
//! Held in memory: a process rebuilds it by applying the blocks since the wallet's first one,
//! and the locks of payouts in flight from their stored transactions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bitcoin::{Block, OutPoint, ScriptBuf};
use chain::provider::{ChainError, Keychain};

/// An output the wallet can spend, and the key that spends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Utxo {
    pub outpoint: OutPoint,
    /// Satoshi.
    pub value: u64,
    pub keychain: Keychain,
    pub index: u32,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<ScriptBuf, (Keychain, u32)>,
    unspent: BTreeMap<OutPoint, (Utxo, u64)>,
    locks: HashMap<OutPoint, String>,
}

/// See the module's documentation.
#[derive(Debug, Default)]
pub struct UtxoSet {
    inner: Mutex<Inner>,
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

    /// Applies block `height`: its outputs to known keys are added, the outputs it spends
    /// removed (with their locks: the payout is in a block).
    pub fn apply_block(&self, block: &Block, height: u64) {
        let mut inner = self.lock();
        for tx in &block.txdata {
            for input in &tx.input {
                inner.unspent.remove(&input.previous_output);
                inner.locks.remove(&input.previous_output);
            }
            let txid = tx.compute_txid();
            for (vout, output) in tx.output.iter().enumerate() {
                if let Some(&(keychain, index)) = inner.keys.get(&output.script_pubkey) {
                    let outpoint = OutPoint {
                        txid,
                        vout: u32::try_from(vout).expect("a block has fewer than 2^32 outputs"),
                    };
                    let utxo = Utxo {
                        outpoint,
                        value: output.value.to_sat(),
                        keychain,
                        index,
                    };
                    inner.unspent.insert(outpoint, (utxo, height));
                }
            }
        }
    }

    /// Every unspent output, locked or not, with the height of its block.
    pub fn all(&self) -> Vec<(Utxo, u64)> {
        self.lock().unspent.values().copied().collect()
    }

    /// The outputs no payout holds, confirmed by at least `min_confirmations` at `tip`
    /// (coinbase outputs need 100 by consensus: the caller passes 100 for them if it mines).
    pub fn available(&self, tip: u64, min_confirmations: u64) -> Vec<Utxo> {
        let inner = self.lock();
        inner
            .unspent
            .values()
            .filter(|(utxo, height)| {
                !inner.locks.contains_key(&utxo.outpoint) && tip + 1 >= height + min_confirmations
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
        let available: Vec<Utxo> = inner
            .unspent
            .values()
            .filter(|(utxo, height)| {
                !inner.locks.contains_key(&utxo.outpoint) && tip + 1 >= height + min_confirmations
            })
            .map(|(utxo, _)| *utxo)
            .collect();
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
