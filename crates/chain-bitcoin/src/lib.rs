//! Bitcoin: native SegWit (BIP84 P2WPKH) payouts and deposits through Bitcoin Core's
//! JSON-RPC (any node speaking it), with no node-side wallet.
//!
//! - **Keys**: receive keys m/84'/c'/0'/0/i and change keys m/84'/c'/0'/1/i (c = 1 on test
//!   networks) are the signer's; this adapter holds only the account xpub, from which it derives
//!   every address and the public key each input's witness carries.
//! - **Unspent outputs** are tracked from raw blocks ([`UtxoSet`], undone block by block on
//!   a reorg), never asked of a node wallet. Across processes each output is reserved for
//!   one payout by the store, atomically with the payout's attempt ([`payout::Payer`], over
//!   `chain::attempts::AttemptLog`, which the wallet implements with the store), so two
//!   payouts never spend one output and nothing is broadcast before it is stored.
//! - **Build** ([`Bitcoin::build_payout`]): coin selection that prefers one input and no change,
//!   then the largest outputs first; change to a fresh change address, dropped into the fee
//!   when it would be dust; the fee is the rate (sat/vB) times the virtual size of the
//!   transaction with its witnesses at their largest, so the signed one never pays less;
//!   every amount and sum checked, and refused above the 21 million BTC that can exist.
//!   Every input signals BIP125 replaceability; [`Bitcoin::bump`] replaces a stuck payout
//!   with the same inputs and outputs and a higher fee (taken from the change).
//! - **Sign**: one BIP143 digest per input ([`Bitcoin::payloads`]), signed by the signer with
//!   the input's key; [`Bitcoin::combine`] checks every signature against its key and digest,
//!   makes it DER with SIGHASH_ALL and computes the txid locally, then checks the fee
//!   against the real size and the cap ([`Bitcoin::check_fee`]).
//! - **Read**: tip, blocks (raw, decoded here, so amounts are integers; the parent hash shows
//!   reorgs), deposits by block scan keyed `txid:vout`, fee estimates with a floor and a cap.
//! - **Submit**: `sendrawtransaction` with `maxfeerate` at the cap, its answer mapped to
//!   [`SubmitOutcome`].
//!
//! Bitcoin does not implement the provider contract's `ChainBuild` (one `Payment`: one
//! sender, one recipient): a payout spends many keys' coins and pays many withdrawals, and
//! its inputs are what the store locks; see docs/bitcoin.md.

pub mod batch;

/// How a private regtest node for tests and the devnet is run, after `-regtest`,
/// `-datadir` and `-rpcport`: RPC on loopback only, no peers, no wallet (keys are ours),
/// a transaction index (lookups by txid), a fallback fee, its own work queue.
pub const REGTEST_NODE_ARGS: &[&str] = &[
    "-rpcbind=127.0.0.1",
    "-rpcallowip=127.0.0.1",
    "-listen=0",
    "-dnsseed=0",
    "-fixedseeds=0",
    "-disablewallet=1",
    "-txindex=1",
    "-fallbackfee=0.0002",
    "-persistmempool=0",
    "-printtoconsole=0",
    "-rpcworkqueue=64",
];
pub mod payout;
pub mod rpc;
pub mod utxo;

/// The rust-bitcoin crate this adapter is built on, for callers that name its types.
pub use bitcoin;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use bitcoin::consensus::encode;
use bitcoin::hashes::Hash;
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Block, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
    absolute::LockTime, transaction::Version,
};
use chain::address::{Address, Network};
use chain::provider::{
    AccountSequence, Asset, BlockRef, ChainError, ChainRead, ChainSubmit, Deposit, Keychain,
    ScanBatch, SignedTransaction, SigningPayload, SubmitOutcome, Tip, TxStatus, WatchSet,
};
use domain::{Amount, Chain};
use serde_json::json;
use signer::Xpub;

pub use rpc::{Rpc, RpcError};
pub use utxo::{Utxo, UtxoSet};

/// The sequence every input carries: final for lock time, and replaceable by BIP125.
pub const RBF_SEQUENCE: Sequence = Sequence::ENABLE_RBF_NO_LOCKTIME;
/// The smallest P2WPKH output Bitcoin Core relays (dust at its default 3 sat/vB).
pub const P2WPKH_DUST: u64 = 294;
/// BIP125's incremental relay fee (Bitcoin Core's default): a replacement pays at least this
/// much more per vbyte of its own size than the transactions it replaces.
pub const INCREMENTAL_RELAY_SAT_VB: u64 = 1;
/// Every bitcoin that can ever exist (21 million BTC), in satoshi: no amount, sum of amounts
/// or fee above it is meaningful, so each is refused as such.
pub const MAX_MONEY_SAT: u64 = 2_100_000_000_000_000;
/// The highest fee cap a configuration may set (0.05 BTC/kvB): far above any fee market seen,
/// far below Bitcoin Core's own refusal of 1 BTC/kvB, so a typo cannot make us burn coins.
pub const FEE_RATE_CAP_MAX_SAT_VB: u64 = 5_000;
/// estimatesmartfee answers for targets of 1 to 1008 blocks.
pub const FEE_TARGET_BLOCKS_MAX: u16 = 1008;

/// Where fee rates may come from: the node's estimate, clamped, in whole sat/vB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeePolicy {
    /// Blocks to confirm within (estimatesmartfee's target).
    pub target_blocks: u16,
    /// The lowest rate used, also when the node has no estimate (a fresh regtest).
    pub floor_sat_vb: u64,
    /// The highest rate ever paid: an estimate above it is cut to it.
    pub cap_sat_vb: u64,
}

impl FeePolicy {
    /// Refuses a policy that cannot be followed: a floor of 0, a cap below the floor or above
    /// [`FEE_RATE_CAP_MAX_SAT_VB`], a target outside estimatesmartfee's 1 to 1008 blocks.
    pub fn check(&self) -> Result<(), ChainError> {
        if self.floor_sat_vb == 0 || self.cap_sat_vb < self.floor_sat_vb {
            return Err(ChainError::permanent(
                "bitcoin fee policy: the floor must be at least 1 sat/vB and at most the cap",
            ));
        }
        if self.cap_sat_vb > FEE_RATE_CAP_MAX_SAT_VB {
            return Err(ChainError::permanent(format!(
                "bitcoin fee policy: a cap of {} sat/vB is above the most allowed, {FEE_RATE_CAP_MAX_SAT_VB}",
                self.cap_sat_vb
            )));
        }
        if self.target_blocks == 0 || self.target_blocks > FEE_TARGET_BLOCKS_MAX {
            return Err(ChainError::permanent(format!(
                "bitcoin fee policy: a target of {} blocks is outside 1 to {FEE_TARGET_BLOCKS_MAX}",
                self.target_blocks
            )));
        }
        Ok(())
    }

    /// The rate to pay from an `estimatesmartfee` answer: its `feerate` (BTC/kvB) in whole
    /// sat/vB rounded up, clamped to the floor and the cap; the floor when the answer has no
    /// `feerate` (the node has no estimate yet and says so in `errors`, e.g. on regtest). A
    /// `feerate` that is not a number of whole satoshi is an error, never a silent floor.
    pub fn rate_from_estimate(&self, answer: &serde_json::Value) -> Result<u64, ChainError> {
        let per_kvb = match answer.get("feerate") {
            None | Some(serde_json::Value::Null) => {
                tracing::debug!(errors = %answer["errors"], "estimatesmartfee has no estimate: the floor");
                None
            }
            Some(rate) => Some(
                rate.as_number()
                    .and_then(|rate| btc_text_to_sat(&rate.to_string()))
                    .ok_or_else(|| {
                        ChainError::retriable(format!(
                            "estimatesmartfee answered a fee rate that is not whole satoshi: {rate}"
                        ))
                    })?,
            ),
        };
        Ok(per_kvb
            .map_or(self.floor_sat_vb, |sat_kvb| sat_kvb.div_ceil(1000))
            .clamp(self.floor_sat_vb, self.cap_sat_vb))
    }

    /// The cap as Bitcoin Core's `maxfeerate` (BTC/kvB, exact decimal text), so the node
    /// itself refuses bytes that would pay more.
    pub fn max_fee_rate_btc_kvb(&self) -> String {
        let sat_kvb = self.cap_sat_vb.saturating_mul(1000);
        format!("{}.{:08}", sat_kvb / 100_000_000, sat_kvb % 100_000_000)
    }
}

impl Default for FeePolicy {
    fn default() -> Self {
        FeePolicy {
            target_blocks: 6,
            floor_sat_vb: 2,
            cap_sat_vb: 500,
        }
    }
}

/// The Bitcoin adapter of one network.
#[derive(Debug, Clone)]
pub struct Bitcoin {
    rpc: Rpc,
    network: Network,
    xpub: Xpub,
    /// The deposit account's key, when the payouts also spend credited deposits where they
    /// lie ([`Bitcoin::with_deposits`]): it derives [`Keychain::Deposit`] keys.
    deposit_xpub: Option<Xpub>,
    fees: FeePolicy,
}

/// A payout built and not signed: the transaction with empty witnesses, the outputs it
/// spends (with their keys) and what it pays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedPayout {
    pub tx: Transaction,
    pub inputs: Vec<Utxo>,
    /// The change key and the output it pays, when there is change.
    pub change: Option<(u32, usize)>,
    /// Fee in satoshi, and the rate it was built at.
    pub fee: u64,
    pub fee_rate_sat_vb: u64,
}

impl UnsignedPayout {
    /// The virtual size with every witness at its largest (the fee is computed on it).
    pub fn max_vsize(&self) -> u64 {
        with_dummy_witnesses(&self.tx).vsize() as u64
    }

    /// Refuses a payout whose parts disagree (its fields are public): the transaction's inputs
    /// must be `inputs`, in order, and the change must name one of its outputs.
    pub fn check_shape(&self) -> Result<(), ChainError> {
        let spends = self.tx.input.iter().map(|input| input.previous_output);
        if self.tx.input.len() != self.inputs.len()
            || !spends.eq(self.inputs.iter().map(|utxo| utxo.outpoint))
        {
            return Err(ChainError::permanent(
                "the payout's transaction spends other outputs than its inputs",
            ));
        }
        if let Some((_, vout)) = self.change
            && vout >= self.tx.output.len()
        {
            return Err(ChainError::permanent(format!(
                "the payout's change output {vout} is not in its transaction"
            )));
        }
        Ok(())
    }
}

fn chain_error(error: RpcError) -> ChainError {
    if error.retriable() {
        ChainError::retriable(error.to_string())
    } else {
        ChainError::permanent(error.to_string())
    }
}

/// What a `getrawtransaction` error says. NotFound only for Bitcoin Core's answer of a node
/// whose transaction index is built: "No such mempool or blockchain transaction". The same
/// code -5 also comes from a node still building its index ("No such mempool transaction.
/// Blockchain transactions are still in the process of being indexed") or keeping none
/// ("... Use -txindex ..."): the transaction may well be in a block, so that is a retriable
/// error, never NotFound (a mined payout must never look lost).
pub fn not_found_or_error(error: RpcError) -> Result<TxStatus, ChainError> {
    match &error {
        RpcError::Node { code: -5, message }
            if message.contains("No such mempool or blockchain transaction") =>
        {
            Ok(TxStatus::NotFound)
        }
        RpcError::Node { code: -5, message } => Err(ChainError::retriable(format!(
            "the node cannot say whether it has the transaction (its index is not ready?): \
             {message}"
        ))),
        _ => Err(chain_error(error)),
    }
}

/// BTC as the node prints it (a JSON number, read by serde_json as the nearest double and
/// written back as the shortest text that reads as the same double, which is the node's own
/// decimal below 10^15 satoshi) to satoshi, by integer arithmetic on that text.
pub fn btc_text_to_sat(text: &str) -> Option<u64> {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.starts_with('-') {
        return None;
    }
    let digits: String = format!("{whole}{fraction}");
    // value = digits × 10^(exponent - fraction.len()) BTC = digits × 10^(exponent - len + 8) sat
    let shift = exponent - i32::try_from(fraction.len()).ok()? + 8;
    let mut value: u128 = digits.parse().ok()?;
    if shift >= 0 {
        value = value.checked_mul(10u128.checked_pow(u32::try_from(shift).ok()?)?)?;
    } else {
        let divisor = 10u128.checked_pow(u32::try_from(-shift).ok()?)?;
        if !value.is_multiple_of(divisor) {
            return None;
        }
        value /= divisor;
    }
    u64::try_from(value).ok()
}

impl Bitcoin {
    /// A transaction in a block: the fee it paid (satoshi) and the scripts of its outputs, in
    /// order, from `getrawtransaction` at verbosity 2 (the node's transaction index gives the
    /// fee); None while it is not in a block.
    pub async fn fee_and_outputs(
        &self,
        txid: &str,
    ) -> Result<Option<(u64, Vec<ScriptBuf>)>, ChainError> {
        Txid::from_str(txid).map_err(|error| ChainError::permanent(format!("txid: {error}")))?;
        let answer = match self.rpc.call("getrawtransaction", json!([txid, 2])).await {
            Ok(answer) => answer,
            Err(error) => {
                // Not found, or an error to give back.
                not_found_or_error(error)?;
                return Ok(None);
            }
        };
        if answer["blockhash"].as_str().is_none() {
            return Ok(None);
        }
        let fee = answer["fee"]
            .as_number()
            .and_then(|fee| btc_text_to_sat(&fee.to_string()))
            .ok_or_else(|| {
                ChainError::retriable(format!(
                    "getrawtransaction {txid}: no fee in satoshi ({})",
                    answer["fee"]
                ))
            })?;
        let mut scripts = Vec::new();
        for output in answer["vout"].as_array().into_iter().flatten() {
            let hex = output["scriptPubKey"]["hex"].as_str().unwrap_or_default();
            scripts.push(ScriptBuf::from_hex(hex).map_err(|error| {
                ChainError::retriable(format!(
                    "getrawtransaction {txid}: an output script: {error}"
                ))
            })?);
        }
        Ok(Some((fee, scripts)))
    }

    /// A transaction's inputs: the scripts of the outputs it spends, in order, from
    /// `getrawtransaction` at verbosity 2 (each input's `prevout`); None when the node does
    /// not know it.
    pub async fn input_scripts(&self, txid: &str) -> Result<Option<Vec<ScriptBuf>>, ChainError> {
        Txid::from_str(txid).map_err(|error| ChainError::permanent(format!("txid: {error}")))?;
        let answer = match self.rpc.call("getrawtransaction", json!([txid, 2])).await {
            Ok(answer) => answer,
            Err(error) => {
                not_found_or_error(error)?;
                return Ok(None);
            }
        };
        let mut scripts = Vec::new();
        for input in answer["vin"].as_array().into_iter().flatten() {
            let hex = input["prevout"]["scriptPubKey"]["hex"]
                .as_str()
                .ok_or_else(|| {
                    ChainError::retriable(format!(
                        "getrawtransaction {txid}: an input without its prevout (a coinbase, or a node without the undo data)"
                    ))
                })?;
            scripts.push(ScriptBuf::from_hex(hex).map_err(|error| {
                ChainError::retriable(format!(
                    "getrawtransaction {txid}: an input script: {error}"
                ))
            })?);
        }
        Ok(Some(scripts))
    }
}

/// A transaction with every input's witness at its largest P2WPKH size (a 72-byte DER
/// signature with its sighash byte, and a 33-byte key), for sizing before signing.
fn with_dummy_witnesses(tx: &Transaction) -> Transaction {
    let mut sized = tx.clone();
    for input in &mut sized.input {
        let mut witness = Witness::new();
        witness.push([0u8; 73]);
        witness.push([0u8; 33]);
        input.witness = witness;
    }
    sized
}

/// `a + b` satoshi, refused past [`MAX_MONEY_SAT`] (`what` names the sum in the error).
fn add_sat(a: u64, b: u64, what: &str) -> Result<u64, ChainError> {
    a.checked_add(b)
        .filter(|sum| *sum <= MAX_MONEY_SAT)
        .ok_or_else(|| {
            ChainError::permanent(format!(
                "{what} add up to more than the 21,000,000 BTC that can ever exist"
            ))
        })
}

/// The fee of `tx` at `rate` sat/vB, its witnesses at their largest.
fn fee_at(tx: &Transaction, rate: u64) -> Result<u64, ChainError> {
    u64::try_from(with_dummy_witnesses(tx).vsize())
        .ok()
        .and_then(|vsize| vsize.checked_mul(rate))
        .filter(|fee| *fee <= MAX_MONEY_SAT)
        .ok_or_else(|| ChainError::permanent(format!("a fee of {rate} sat/vB overflows")))
}

/// What `tx` leaves to the miner: its inputs' values (`inputs`) less its outputs'.
fn fee_of(inputs: &[Utxo], tx: &Transaction) -> Result<u64, ChainError> {
    let spent = inputs
        .iter()
        .try_fold(0u64, |sum, utxo| add_sat(sum, utxo.value, "the inputs"))?;
    let paid = tx.output.iter().try_fold(0u64, |sum, output| {
        add_sat(sum, output.value.to_sat(), "the outputs")
    })?;
    spent.checked_sub(paid).ok_or_else(|| {
        ChainError::permanent(format!(
            "the outputs ({paid} satoshi) are more than the inputs ({spent})"
        ))
    })
}

impl Bitcoin {
    /// `xpub` is the account key of `network` (tpub on test networks).
    pub fn new(
        rpc: Rpc,
        network: Network,
        xpub: Xpub,
        fees: FeePolicy,
    ) -> Result<Self, ChainError> {
        fees.check()?;
        Ok(Bitcoin {
            rpc,
            network,
            xpub,
            deposit_xpub: None,
            fees,
        })
    }

    /// This adapter derives the deposit addresses' keys too ([`Keychain::Deposit`], from the
    /// deposit account's `xpub`), so that a payout can spend a deposit where it lies. Another
    /// account's key is refused.
    pub fn with_deposits(mut self, xpub: Xpub) -> Result<Self, ChainError> {
        if !xpub.is_deposit_account() {
            return Err(ChainError::permanent(
                "the deposit xpub given is not the deposit account's key (`coinsensei keys \
                 xpub --chain bitcoin --deposit`)",
            ));
        }
        self.deposit_xpub = Some(xpub);
        Ok(self)
    }

    /// Checks the node is on the configured network (getblockchaininfo's `chain`) and keeps
    /// a transaction index (see [`require_txindex`]).
    pub async fn connect(
        rpc: Rpc,
        network: Network,
        xpub: Xpub,
        fees: FeePolicy,
    ) -> Result<Self, ChainError> {
        let this = Bitcoin::new(rpc, network, xpub, fees)?;
        node_status(&this.rpc).await?.require(network)?;
        require_txindex(&this.rpc).await?;
        Ok(this)
    }

    pub fn fee_policy(&self) -> FeePolicy {
        self.fees
    }

    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    pub fn network(&self) -> Network {
        self.network
    }

    /// A Bitcoin address of the configured network; any other network's is refused.
    pub fn address(&self, text: &str) -> Result<Address, ChainError> {
        Address::parse(Chain::Bitcoin, self.network, text)
            .map_err(|error| ChainError::permanent(error.to_string()))
    }

    /// Whether this adapter derives the deposit addresses' keys ([`Bitcoin::with_deposits`]).
    pub fn has_deposits(&self) -> bool {
        self.deposit_xpub.is_some()
    }

    /// The account key that derives `keychain`'s keys: the deposit account's for
    /// [`Keychain::Deposit`] (refused when this adapter has none), the working account's
    /// otherwise.
    fn xpub_of(&self, keychain: Keychain) -> Result<&Xpub, ChainError> {
        match keychain {
            Keychain::Deposit => self.deposit_xpub.as_ref().ok_or_else(|| {
                ChainError::permanent(
                    "a deposit address's key: this adapter has no deposit xpub (`with_deposits`)",
                )
            }),
            Keychain::Receive | Keychain::Change => Ok(&self.xpub),
        }
    }

    /// The address of key `index` on `keychain`, from the xpub alone.
    pub fn key_address(&self, keychain: Keychain, index: u32) -> Result<Address, ChainError> {
        self.xpub_of(keychain)?
            .address_on(keychain, index)
            .map_err(|error| ChainError::permanent(error.to_string()))
    }

    /// The output script of `address` (of this network; another network's is refused).
    pub fn script_of(&self, address: &Address) -> Result<ScriptBuf, ChainError> {
        script_on(self.network, address)
    }

    fn bitcoin_network(&self) -> bitcoin::Network {
        bitcoin_network(self.network)
    }

    fn public_key(
        &self,
        keychain: Keychain,
        index: u32,
    ) -> Result<bitcoin::CompressedPublicKey, ChainError> {
        self.xpub_of(keychain)?
            .public_key(keychain, index)
            .map(bitcoin::CompressedPublicKey)
            .map_err(|error| ChainError::permanent(error.to_string()))
    }

    /// The smallest amount, in satoshi, an output to `address` may carry (Bitcoin Core's dust
    /// limit for its script); `build_payout` refuses less.
    pub fn dust_of(&self, address: &Address) -> Result<u64, ChainError> {
        Ok(self.script_of(address)?.minimal_non_dust().to_sat())
    }

    /// The output script of key `index` on `keychain` (P2WPKH).
    pub fn key_script(&self, keychain: Keychain, index: u32) -> Result<ScriptBuf, ChainError> {
        Ok(ScriptBuf::new_p2wpkh(
            &self.public_key(keychain, index)?.wpubkey_hash(),
        ))
    }

    /// The fee rate to pay now: the node's estimate for the policy's target, clamped by
    /// [`FeePolicy::rate_from_estimate`].
    pub async fn fee_rate(&self) -> Result<u64, ChainError> {
        let estimate = self
            .rpc
            .call("estimatesmartfee", json!([self.fees.target_blocks]))
            .await
            .map_err(chain_error)?;
        self.fees.rate_from_estimate(&estimate)
    }

    /// Block `number`, raw, decoded here; None past the head.
    pub async fn raw_block(&self, number: u64) -> Result<Option<Block>, ChainError> {
        raw_block(&self.rpc, number).await
    }

    /// A block by its hash, raw, decoded here.
    pub async fn block_by_hash(&self, hash: &str) -> Result<Block, ChainError> {
        block_by_hash(&self.rpc, hash).await
    }

    /// Asks the node whether it would take `signed` now, without sending it.
    pub async fn test_accept(
        &self,
        signed: &SignedTransaction,
    ) -> Result<Result<(), String>, ChainError> {
        let answer = self
            .rpc
            .call(
                "testmempoolaccept",
                json!([[hex(&signed.raw)], self.fees.max_fee_rate_btc_kvb()]),
            )
            .await
            .map_err(chain_error)?;
        let first = &answer[0];
        if first["allowed"].as_bool() == Some(true) {
            Ok(Ok(()))
        } else {
            Ok(Err(first["reject-reason"]
                .as_str()
                .unwrap_or("refused")
                .to_string()))
        }
    }

    /// Builds a transaction paying `payouts` (in order; change last) from `available`
    /// outputs at `fee_rate_sat_vb`, with change to change key `change_index`.
    ///
    /// Selection: one output that covers everything without change when there is one
    /// (whatever it has over is less than a change output would cost and leave), else the
    /// largest outputs first until the payouts, the fee and change above dust are covered.
    /// Every sum is checked: an amount, a total or a fee above the 21 million BTC that can
    /// exist is refused as such.
    pub fn build_payout(
        &self,
        payouts: &[(Address, Amount)],
        available: &[Utxo],
        fee_rate_sat_vb: u64,
        change_index: u32,
    ) -> Result<UnsignedPayout, ChainError> {
        if payouts.is_empty() {
            return Err(ChainError::permanent("a payout pays at least one output"));
        }
        if fee_rate_sat_vb == 0 || fee_rate_sat_vb > self.fees.cap_sat_vb {
            return Err(ChainError::permanent(format!(
                "fee rate {fee_rate_sat_vb} sat/vB is outside 1 to the cap {}",
                self.fees.cap_sat_vb
            )));
        }
        let mut outputs = Vec::with_capacity(payouts.len() + 1);
        let mut target: u64 = 0;
        for (to, amount) in payouts {
            let script = self.script_of(to)?;
            let value = u64::try_from(amount.base_units())
                .ok()
                .filter(|value| *value <= MAX_MONEY_SAT)
                .ok_or_else(|| {
                    ChainError::permanent(format!(
                        "{} satoshi to {to} is more than the 21,000,000 BTC that can ever exist",
                        amount.format_decimal(0)
                    ))
                })?;
            let dust = script.minimal_non_dust().to_sat();
            if value < dust {
                return Err(ChainError::permanent(format!(
                    "{value} satoshi to {to} is below the dust limit ({dust})"
                )));
            }
            target = add_sat(target, value, "the payouts")?;
            outputs.push(TxOut {
                value: bitcoin::Amount::from_sat(value),
                script_pubkey: script,
            });
        }
        for utxo in available {
            if utxo.value > MAX_MONEY_SAT {
                return Err(ChainError::permanent(format!(
                    "output {} claims {} satoshi, more than can exist",
                    utxo.outpoint, utxo.value
                )));
            }
        }
        let change_script = self.key_script(Keychain::Change, change_index)?;
        let change_dust = change_script.minimal_non_dust().to_sat();
        let fee_for = |inputs: &[Utxo], with_change: bool| -> Result<u64, ChainError> {
            let mut tx = skeleton(inputs, outputs.clone());
            if with_change {
                tx.output.push(TxOut {
                    value: bitcoin::Amount::ZERO,
                    script_pubkey: change_script.clone(),
                });
            }
            fee_at(&tx, fee_rate_sat_vb)
        };

        // One output, no change: it covers the payouts and fee, and what it has over is less
        // than the change output would cost plus the least change worth making.
        let mut ascending: Vec<Utxo> = available.to_vec();
        ascending.sort_by_key(|utxo| (utxo.value, utxo.outpoint));
        let mut single = None;
        for utxo in &ascending {
            let fee = fee_for(std::slice::from_ref(utxo), false)?;
            let change_cost = fee_for(std::slice::from_ref(utxo), true)?.saturating_sub(fee);
            let needed = add_sat(target, fee, "the payouts and the fee")?;
            if let Some(over) = utxo.value.checked_sub(needed)
                && over < change_cost.saturating_add(change_dust)
            {
                single = Some(*utxo);
                break;
            }
        }
        let (inputs, change_value) = if let Some(utxo) = single {
            (vec![utxo], None)
        } else {
            let mut chosen = Vec::new();
            let mut total: u64 = 0;
            let mut found = None;
            for utxo in ascending.iter().rev() {
                chosen.push(*utxo);
                total = add_sat(total, utxo.value, "the selected outputs")?;
                let with_change = fee_for(&chosen, true)?;
                let needed = add_sat(
                    add_sat(target, with_change, "the payouts and the fee")?,
                    change_dust,
                    "the payouts, the fee and the change",
                )?;
                if let Some(over) = total.checked_sub(needed) {
                    found = Some(Some(over.saturating_add(change_dust)));
                    break;
                }
                let without = fee_for(&chosen, false)?;
                if total >= add_sat(target, without, "the payouts and the fee")? {
                    // Not enough for change above dust: what is over goes to the fee.
                    found = Some(None);
                    break;
                }
            }
            match found {
                Some(change) => (chosen, change),
                None => {
                    return Err(ChainError::permanent(format!(
                        "insufficient funds: {target} satoshi and the fee from {} spendable outputs holding {total}",
                        available.len()
                    )));
                }
            }
        };
        let mut tx = skeleton(&inputs, outputs);
        let mut change = None;
        if let Some(value) = change_value {
            tx.output.push(TxOut {
                value: bitcoin::Amount::from_sat(value),
                script_pubkey: change_script,
            });
            change = Some((change_index, tx.output.len() - 1));
        }
        let fee = fee_of(&inputs, &tx)?;
        Ok(UnsignedPayout {
            tx,
            inputs,
            change,
            fee,
            fee_rate_sat_vb,
        })
    }

    /// A BIP125 replacement of `payout` at `fee_rate_sat_vb`: the same inputs and payouts, a
    /// fee at least the rate times its size and at least the old fee plus the incremental
    /// relay fee for its size, taken from the change (change that would fall below dust goes
    /// to the fee too).
    ///
    /// It never adds an input: a payout whose change cannot pay the higher fee (or that has
    /// no change) is refused with an error that says so. An added input would have to be
    /// reserved for this payout in the store first, and the replacement would then spend a
    /// coin its first version did not, which the caller did not ask for; a payout that needs
    /// more is bumped to what its change allows, or waits.
    pub fn bump(
        &self,
        payout: &UnsignedPayout,
        fee_rate_sat_vb: u64,
    ) -> Result<UnsignedPayout, ChainError> {
        payout.check_shape()?;
        if fee_rate_sat_vb == 0 || fee_rate_sat_vb > self.fees.cap_sat_vb {
            return Err(ChainError::permanent(format!(
                "fee rate {fee_rate_sat_vb} sat/vB is outside 1 to the cap {}",
                self.fees.cap_sat_vb
            )));
        }
        let (_, change_vout) = payout.change.ok_or_else(|| {
            ChainError::permanent(
                "cannot bump: this payout has no change to pay a higher fee from, and a bump \
                 never adds an input",
            )
        })?;
        let vsize = payout.max_vsize();
        let by_rate = vsize
            .checked_mul(fee_rate_sat_vb)
            .ok_or_else(|| ChainError::permanent("the fee overflows"))?;
        let by_increment = vsize
            .checked_mul(INCREMENTAL_RELAY_SAT_VB)
            .and_then(|increment| payout.fee.checked_add(increment))
            .ok_or_else(|| ChainError::permanent("the fee overflows"))?;
        let fee = by_rate.max(by_increment);
        let extra = fee
            .checked_sub(payout.fee)
            .ok_or_else(|| ChainError::permanent("the fee overflows"))?;
        let mut tx = payout.tx.clone();
        let mut change = payout.change;
        let change_value = tx
            .output
            .get(change_vout)
            .map(|output| output.value.to_sat())
            .ok_or_else(|| ChainError::permanent("the change output is not in the transaction"))?;
        match change_value.checked_sub(extra) {
            Some(left) if left >= P2WPKH_DUST => {
                if let Some(output) = tx.output.get_mut(change_vout) {
                    output.value = bitcoin::Amount::from_sat(left);
                }
            }
            Some(_) if tx.output.len() > 1 => {
                // Change below dust: drop it, the fee takes it all (and is higher still).
                tx.output.remove(change_vout);
                change = None;
            }
            _ => {
                return Err(ChainError::permanent(format!(
                    "cannot bump to {fee_rate_sat_vb} sat/vB: the change ({change_value} \
                     satoshi) cannot pay {extra} satoshi more in fee, and a bump never adds an \
                     input; bump to a lower rate or wait"
                )));
            }
        }
        let fee = fee_of(&payout.inputs, &tx)?;
        Ok(UnsignedPayout {
            tx,
            inputs: payout.inputs.clone(),
            change,
            fee,
            fee_rate_sat_vb,
        })
    }

    /// One BIP143 digest per input, with the key that signs it.
    pub fn payloads(&self, payout: &UnsignedPayout) -> Result<Vec<SigningPayload>, ChainError> {
        payout.check_shape()?;
        let mut cache = SighashCache::new(&payout.tx);
        payout
            .inputs
            .iter()
            .enumerate()
            .map(|(position, utxo)| {
                let script = self.key_script(utxo.keychain, utxo.index)?;
                let sighash = cache
                    .p2wpkh_signature_hash(
                        position,
                        &script,
                        bitcoin::Amount::from_sat(utxo.value),
                        EcdsaSighashType::All,
                    )
                    .map_err(|error| ChainError::permanent(error.to_string()))?;
                Ok(SigningPayload {
                    keychain: utxo.keychain,
                    index: utxo.index,
                    digest: sighash.to_byte_array(),
                })
            })
            .collect()
    }

    /// The signed transaction: each 65-byte signature (r, s, recovery id; in payload order)
    /// checked against its input's key and digest, made low-S DER with SIGHASH_ALL; then its
    /// fee checked against its real size ([`Bitcoin::check_fee`]).
    pub fn combine(
        &self,
        payout: &UnsignedPayout,
        signatures: &[[u8; 65]],
    ) -> Result<SignedTransaction, ChainError> {
        let payloads = self.payloads(payout)?;
        if signatures.len() != payloads.len() {
            return Err(ChainError::permanent(format!(
                "{} signatures for {} inputs",
                signatures.len(),
                payloads.len()
            )));
        }
        let secp = secp256k1::Secp256k1::verification_only();
        let mut tx = payout.tx.clone();
        for (position, (payload, signature)) in payloads.iter().zip(signatures).enumerate() {
            let (compact, _recovery) = signature.split_at(64);
            let mut ecdsa = secp256k1::ecdsa::Signature::from_compact(compact)
                .map_err(|error| ChainError::permanent(format!("input {position}: {error}")))?;
            ecdsa.normalize_s();
            let key = self.public_key(payload.keychain, payload.index)?;
            secp.verify_ecdsa(
                &secp256k1::Message::from_digest(payload.digest),
                &ecdsa,
                &key.0,
            )
            .map_err(|_| {
                ChainError::permanent(format!(
                    "input {position}: the signature is not by its key over its digest"
                ))
            })?;
            let input = tx.input.get_mut(position).ok_or_else(|| {
                ChainError::permanent(format!("input {position} is not in the transaction"))
            })?;
            input.witness = Witness::p2wpkh(
                &bitcoin::ecdsa::Signature {
                    signature: ecdsa,
                    sighash_type: EcdsaSighashType::All,
                },
                &key.0,
            );
        }
        let signed = SignedTransaction {
            txid: tx.compute_txid().to_string(),
            raw: encode::serialize(&tx),
        };
        let fee = self.check_fee(&signed, &payout.inputs)?;
        if fee != payout.fee {
            return Err(ChainError::permanent(format!(
                "the signed transaction pays {fee} satoshi in fee, the payout {}",
                payout.fee
            )));
        }
        Ok(signed)
    }

    /// The fee signed bytes pay, checked against their real virtual size: at least the
    /// minimum relay rate (1 sat/vB) and at most the policy's cap. `inputs` are the outputs
    /// it spends, in order (their values are not in the bytes). Run on every signed payout
    /// before it is stored or sent.
    pub fn check_fee(
        &self,
        signed: &SignedTransaction,
        inputs: &[Utxo],
    ) -> Result<u64, ChainError> {
        let tx: Transaction = encode::deserialize(&signed.raw)
            .map_err(|error| ChainError::permanent(format!("not a transaction: {error}")))?;
        if tx.compute_txid().to_string() != signed.txid {
            return Err(ChainError::permanent(
                "the bytes do not have the stored txid",
            ));
        }
        let spends: Vec<OutPoint> = tx.input.iter().map(|input| input.previous_output).collect();
        let given: Vec<OutPoint> = inputs.iter().map(|utxo| utxo.outpoint).collect();
        if spends != given {
            return Err(ChainError::permanent(
                "the signed transaction spends other outputs than its payout's",
            ));
        }
        let fee = fee_of(inputs, &tx)?;
        let vsize = u64::try_from(tx.vsize())
            .map_err(|_| ChainError::permanent("the transaction's size overflows"))?;
        let most = vsize.saturating_mul(self.fees.cap_sat_vb);
        if fee > most {
            return Err(ChainError::permanent(format!(
                "the signed transaction pays {fee} satoshi for {vsize} vB, above the cap of {} \
                 sat/vB ({most} satoshi): not stored, not sent",
                self.fees.cap_sat_vb
            )));
        }
        if fee < vsize {
            return Err(ChainError::permanent(format!(
                "the signed transaction pays {fee} satoshi for {vsize} vB, below the 1 sat/vB \
                 the network relays"
            )));
        }
        Ok(fee)
    }

    /// The outputs of signed bytes, read from the bytes alone: (address, amount), in order.
    /// An output whose script is no address (OP_RETURN) is refused.
    pub fn parse_outputs(
        &self,
        signed: &SignedTransaction,
    ) -> Result<Vec<(Address, Amount)>, ChainError> {
        let tx: Transaction = encode::deserialize(&signed.raw)
            .map_err(|error| ChainError::permanent(format!("not a transaction: {error}")))?;
        if tx.compute_txid().to_string() != signed.txid {
            return Err(ChainError::permanent(
                "the bytes do not have the stored txid",
            ));
        }
        tx.output
            .iter()
            .map(|output| {
                let address =
                    bitcoin::Address::from_script(&output.script_pubkey, self.bitcoin_network())
                        .map_err(|error| {
                            ChainError::permanent(format!("output script: {error}"))
                        })?;
                Ok((
                    self.address(&address.to_string())?,
                    Amount::from_u128(u128::from(output.value.to_sat())),
                ))
            })
            .collect()
    }

    /// Whether the node has `txid` (pool or chain); None when it could not say.
    async fn known(&self, txid: &str) -> Option<bool> {
        match self.transaction(txid).await {
            Ok(TxStatus::Pending | TxStatus::Included { .. }) => Some(true),
            Ok(TxStatus::NotFound) => Some(false),
            Err(_) => None,
        }
    }
}

fn skeleton(inputs: &[Utxo], outputs: Vec<TxOut>) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|utxo| TxIn {
                previous_output: utxo.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: RBF_SEQUENCE,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

impl ChainRead for Bitcoin {
    fn chain(&self) -> Chain {
        Chain::Bitcoin
    }

    /// Bitcoin has no finality: `finalized` is None, depth is counted by confirmations.
    async fn tip(&self) -> Result<Tip, ChainError> {
        let head = self
            .rpc
            .call("getblockcount", json!([]))
            .await
            .map_err(chain_error)?;
        Ok(Tip {
            head: head
                .as_u64()
                .ok_or_else(|| ChainError::retriable("getblockcount: not a number"))?,
            finalized: None,
        })
    }

    async fn block(&self, number: u64) -> Result<Option<BlockRef>, ChainError> {
        let hash = match self.rpc.call("getblockhash", json!([number])).await {
            Ok(hash) => hash,
            Err(RpcError::Node { code: -8, .. }) => return Ok(None),
            Err(error) => return Err(chain_error(error)),
        };
        let hash = hash
            .as_str()
            .ok_or_else(|| ChainError::retriable("getblockhash: not a hash"))?
            .to_string();
        let header = self
            .rpc
            .call("getblockheader", json!([hash, true]))
            .await
            .map_err(chain_error)?;
        Ok(Some(BlockRef {
            number,
            parent_hash: header["previousblockhash"]
                .as_str()
                .unwrap_or("0000000000000000000000000000000000000000000000000000000000000000")
                .to_string(),
            hash,
        }))
    }

    /// The confirmed balance of an address, from the node's UTXO set (`scantxoutset`).
    async fn balance(&self, address: &Address, asset: &Asset) -> Result<Amount, ChainError> {
        if *asset != Asset::Native {
            return Err(ChainError::permanent("Bitcoin has no tokens here"));
        }
        self.script_of(address)?;
        address_balance(&self.rpc, address).await
    }

    /// Needs the node's `-txindex` for transactions already mined.
    /// The whole transaction's fee (a batch's, for all its withdrawals).
    async fn fee_paid(&self, txid: &str) -> Result<Option<Amount>, ChainError> {
        Ok(self
            .fee_and_outputs(txid)
            .await?
            .map(|(fee, _)| Amount::from_u128(u128::from(fee))))
    }

    async fn transaction(&self, txid: &str) -> Result<TxStatus, ChainError> {
        Txid::from_str(txid).map_err(|error| ChainError::permanent(format!("txid: {error}")))?;
        let answer = match self.rpc.call("getrawtransaction", json!([txid, 1])).await {
            Ok(answer) => answer,
            Err(error) => return not_found_or_error(error),
        };
        let Some(block_hash) = answer["blockhash"].as_str() else {
            return Ok(TxStatus::Pending);
        };
        let confirmations = answer["confirmations"].as_u64().unwrap_or(0);
        if confirmations == 0 {
            // In a block that is no longer on the best chain.
            return Ok(TxStatus::Pending);
        }
        let header = self
            .rpc
            .call("getblockheader", json!([block_hash, true]))
            .await
            .map_err(chain_error)?;
        Ok(TxStatus::Included {
            block: BlockRef {
                number: header["height"]
                    .as_u64()
                    .ok_or_else(|| ChainError::retriable("getblockheader: no height"))?,
                hash: block_hash.to_string(),
                parent_hash: header["previousblockhash"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            },
            success: true,
            confirmations,
        })
    }

    async fn account_sequence(
        &self,
        _address: &Address,
    ) -> Result<Option<AccountSequence>, ChainError> {
        Ok(None)
    }

    /// Blocks `from..=to`, raw; every output paying a watched address is a deposit keyed
    /// `txid:vout` (position = vout). See [`scan_deposits`].
    async fn scan(&self, from: u64, to: u64, watch: &WatchSet) -> Result<ScanBatch, ChainError> {
        scan_deposits(&self.rpc, self.network, from, to, watch).await
    }
}

impl ChainSubmit for Bitcoin {
    async fn submit(&self, signed: &SignedTransaction) -> SubmitOutcome {
        // maxfeerate: our own cap, so the node refuses bytes that would pay more (checked
        // after signing too, by check_fee).
        let answer = self
            .rpc
            .call_once(
                "sendrawtransaction",
                json!([hex(&signed.raw), self.fees.max_fee_rate_btc_kvb()]),
            )
            .await;
        match answer {
            Ok(txid) if txid.as_str() == Some(signed.txid.as_str()) => SubmitOutcome::Accepted,
            Ok(other) => SubmitOutcome::Unknown {
                reason: format!("the node answered txid {other}, not {}", signed.txid),
            },
            Err(RpcError::Transport(reason)) => SubmitOutcome::Unknown { reason },
            Err(RpcError::Node { code, message }) => {
                let lower = message.to_lowercase();
                if code == -27
                    || lower.contains("already in block chain")
                    || lower.contains("txn-already-in-mempool")
                    || lower.contains("txn-already-known")
                    || lower.contains("txn-same-nonwitness-data-in-mempool")
                    || lower.contains("already in utxo set")
                {
                    SubmitOutcome::AlreadyKnown
                } else if lower.contains("missing inputs") || lower.contains("missingorspent") {
                    // This very transaction, mined with its outputs spent since, looks the
                    // same as inputs spent by another one; so do parents the node does not
                    // know (a reorg, a node still syncing), and our own replacement. Only
                    // knowing who spent each input proves this attempt dead: not a refusal.
                    match self.known(&signed.txid).await {
                        Some(true) => SubmitOutcome::AlreadyKnown,
                        _ => SubmitOutcome::Unknown {
                            reason: format!(
                                "inputs missing or spent, by this transaction or another: {message}"
                            ),
                        },
                    }
                } else if lower.contains("insufficient fee")
                    || lower.contains("min relay fee not met")
                    || lower.contains("mempool min fee not met")
                    || lower.contains("txn-mempool-conflict")
                    || lower.contains("mempool full")
                    || lower.contains("too-long-mempool-chain")
                    || lower.contains("too many potential replacements")
                    || lower.contains("non-final")
                    // Above our maxfeerate: the same bytes pass under a higher cap, and they
                    // may have gone out before the cap was lowered.
                    || lower.contains("max-fee-exceeded")
                    || lower.contains("fee exceeds maximum")
                    || code == -28
                {
                    // The same bytes may go in later: the conflicting transaction may leave
                    // the pool, the pool's floor may fall, the lock time may pass.
                    SubmitOutcome::Rejected {
                        retriable: true,
                        reason: message,
                    }
                } else if code == -22
                    || lower.contains("mandatory-script-verify-flag")
                    || lower.contains("bad-txns")
                    || lower.contains("bad-witness")
                    || lower.contains("dust")
                    || lower.contains("tx-size")
                {
                    // Bytes that can never be valid (undecodable, a script or signature that
                    // fails, a rule broken by the transaction itself): they cannot have landed.
                    SubmitOutcome::Rejected {
                        retriable: false,
                        reason: message,
                    }
                } else {
                    // Anything else (an internal error, an authentication failure after the
                    // node restarted, a message of a later version): it may or may not be out.
                    SubmitOutcome::Unknown { reason: message }
                }
            }
        }
    }
}

/// What the node says of itself (`getblockchaininfo`), for `chain status` and the network
/// check at connection; needs no keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Bitcoin Core's name of its network: main, test, testnet4, signet, regtest.
    pub chain: String,
    /// The height of the best validated block, and its hash.
    pub blocks: u64,
    pub best_hash: String,
    /// The height of the best header known (ahead of `blocks` while syncing).
    pub headers: u64,
    /// The node's own estimate of its sync progress, as it printed it (a ratio, 0 to 1;
    /// shown, never computed with).
    pub verification_progress: String,
    pub initial_block_download: bool,
}

impl NodeStatus {
    /// Bitcoin Core's name of `network`.
    pub fn chain_name(network: Network) -> &'static str {
        match network {
            Network::Mainnet => "main",
            Network::Testnet => "test",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }

    /// An error unless the node is on `network`.
    pub fn require(&self, network: Network) -> Result<(), ChainError> {
        if self.chain != NodeStatus::chain_name(network) {
            return Err(ChainError::permanent(format!(
                "the bitcoin node is on {:?}, the configuration says {network}",
                self.chain
            )));
        }
        Ok(())
    }
}

/// Asks the node how it is (`getblockchaininfo`).
pub async fn node_status(rpc: &Rpc) -> Result<NodeStatus, ChainError> {
    let info = rpc
        .call("getblockchaininfo", json!([]))
        .await
        .map_err(chain_error)?;
    let missing = |field: &str| ChainError::retriable(format!("getblockchaininfo: no {field}"));
    Ok(NodeStatus {
        chain: info["chain"]
            .as_str()
            .ok_or_else(|| missing("chain"))?
            .to_string(),
        blocks: info["blocks"].as_u64().ok_or_else(|| missing("blocks"))?,
        best_hash: info["bestblockhash"]
            .as_str()
            .ok_or_else(|| missing("bestblockhash"))?
            .to_string(),
        headers: info["headers"].as_u64().ok_or_else(|| missing("headers"))?,
        verification_progress: info["verificationprogress"]
            .as_number()
            .map_or_else(|| "unknown".to_string(), ToString::to_string),
        initial_block_download: info["initialblockdownload"].as_bool().unwrap_or(false),
    })
}

/// Block `number` of the node's best chain, raw, decoded here (integer amounts); None past
/// the head. Needs no keys.
pub async fn raw_block(rpc: &Rpc, number: u64) -> Result<Option<Block>, ChainError> {
    let hash = match rpc.call("getblockhash", json!([number])).await {
        Ok(hash) => hash,
        // -8: block height out of range.
        Err(RpcError::Node { code: -8, .. }) => return Ok(None),
        Err(error) => return Err(chain_error(error)),
    };
    let hash = hash
        .as_str()
        .ok_or_else(|| ChainError::retriable("getblockhash: not a hash"))?;
    block_by_hash(rpc, hash).await.map(Some)
}

/// A block by its hash, raw, decoded here; refused unless its header hashes to `hash`.
pub async fn block_by_hash(rpc: &Rpc, hash: &str) -> Result<Block, ChainError> {
    let hex = rpc
        .call("getblock", json!([hash, 0]))
        .await
        .map_err(chain_error)?;
    let hex = hex
        .as_str()
        .ok_or_else(|| ChainError::retriable(format!("getblock {hash}: not hex")))?;
    let block: Block = encode::deserialize_hex(hex)
        .map_err(|error| ChainError::permanent(format!("block {hash}: {error}")))?;
    if block.block_hash().to_string() != hash {
        return Err(ChainError::permanent(format!(
            "the node sent another block for {hash}"
        )));
    }
    Ok(block)
}

/// Deposits to `watch`'s addresses in blocks `from..=to` of `network`'s node: every output
/// paying a watched address, keyed `txid:vout` (position = vout), with its block and the
/// block's parent. Reads raw blocks only (no node wallet, no mempool: a transaction with
/// zero confirmations is never a deposit). Needs no keys: `chain deposits` calls it.
pub async fn scan_deposits(
    rpc: &Rpc,
    network: Network,
    from: u64,
    to: u64,
    watch: &WatchSet,
) -> Result<ScanBatch, ChainError> {
    let mut scripts: HashMap<ScriptBuf, Address> = HashMap::new();
    for address in &watch.addresses {
        scripts.insert(script_on(network, address)?, address.clone());
    }
    let mut batch = ScanBatch::default();
    for number in from..=to {
        let block = raw_block(rpc, number)
            .await?
            .ok_or_else(|| ChainError::retriable(format!("block {number} is past the head")))?;
        let reference = BlockRef {
            number,
            hash: block.block_hash().to_string(),
            parent_hash: block.header.prev_blockhash.to_string(),
        };
        for tx in &block.txdata {
            let txid = tx.compute_txid().to_string();
            for (vout, output) in tx.output.iter().enumerate() {
                if let Some(address) = scripts.get(&output.script_pubkey) {
                    batch.deposits.push(Deposit {
                        txid: txid.clone(),
                        position: vout as u64,
                        block: reference.clone(),
                        asset: Asset::Native,
                        from: None,
                        to: address.clone(),
                        amount: Amount::from_u128(u128::from(output.value.to_sat())),
                    });
                }
            }
        }
        batch.blocks.push(reference);
    }
    Ok(batch)
}

/// rust-bitcoin's name of `network`.
fn bitcoin_network(network: Network) -> bitcoin::Network {
    match network {
        Network::Mainnet => bitcoin::Network::Bitcoin,
        Network::Testnet => bitcoin::Network::Testnet,
        Network::Signet => bitcoin::Network::Signet,
        Network::Regtest => bitcoin::Network::Regtest,
    }
}

/// The output script of a Bitcoin `address` of `network`; another network's is refused.
fn script_on(network: Network, address: &Address) -> Result<ScriptBuf, ChainError> {
    if address.chain() != Chain::Bitcoin {
        return Err(ChainError::permanent(format!(
            "{address} is not a Bitcoin address"
        )));
    }
    let parsed = bitcoin::Address::from_str(address.as_str())
        .map_err(|error| ChainError::permanent(error.to_string()))?
        .require_network(bitcoin_network(network))
        .map_err(|error| ChainError::permanent(error.to_string()))?;
    Ok(parsed.script_pubkey())
}

/// Refuses a node without a synced transaction index (`-txindex`): a mined payout's status
/// (`getrawtransaction` of a txid in a block, what reconciliation and `bump` ask) is only
/// answered by a node that indexes every transaction. A node still building its index is a
/// retriable error. (Death is never proven by the index: see `payout::fate`.)
pub async fn require_txindex(rpc: &Rpc) -> Result<(), ChainError> {
    let info = rpc
        .call("getindexinfo", json!(["txindex"]))
        .await
        .map_err(chain_error)?;
    txindex_ready(&info)
}

/// What [`require_txindex`] makes of `getindexinfo txindex`'s answer.
pub fn txindex_ready(info: &serde_json::Value) -> Result<(), ChainError> {
    let Some(index) = info.get("txindex") else {
        return Err(ChainError::permanent(
            "the bitcoin node keeps no transaction index: start it with -txindex=1 (CoinSensei \
             reads mined payouts by txid with getrawtransaction, which needs it)",
        ));
    };
    if index["synced"].as_bool() != Some(true) {
        return Err(ChainError::retriable(format!(
            "the bitcoin node is still building its transaction index (at block {}): wait for \
             it to finish",
            index["best_block_height"]
        )));
    }
    Ok(())
}

/// The satoshi held by `address` in the node's UTXO set (`scantxoutset`: every unspent
/// output, immature coinbase outputs included; no mempool). Needs no keys; the caller has
/// checked the address is of the node's network.
pub async fn address_balance(rpc: &Rpc, address: &Address) -> Result<Amount, ChainError> {
    if address.chain() != Chain::Bitcoin {
        return Err(ChainError::permanent(format!(
            "{address} is not a Bitcoin address"
        )));
    }
    let answer = rpc
        .call(
            "scantxoutset",
            json!(["start", [format!("addr({address})")]]),
        )
        .await
        .map_err(chain_error)?;
    let total = answer["total_amount"]
        .as_number()
        .and_then(|amount| btc_text_to_sat(&amount.to_string()))
        .ok_or_else(|| ChainError::retriable("scantxoutset: no total_amount"))?;
    Ok(Amount::from_u128(u128::from(total)))
}

/// How long a call may take before it counts as no answer.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Converts a txid and vout to the outpoint.
pub fn outpoint(txid: &str, vout: u32) -> Result<OutPoint, ChainError> {
    Ok(OutPoint {
        txid: Txid::from_str(txid).map_err(|error| ChainError::permanent(error.to_string()))?,
        vout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use signer::{InProcessSigner, Mnemonic, Signer};

    const MNEMONIC: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    fn signer() -> InProcessSigner {
        InProcessSigner::new(&Mnemonic::parse(MNEMONIC).unwrap(), Network::Regtest)
    }

    /// An adapter that never connects (its node is a closed port): building, signing and
    /// checking need no node.
    fn offline(fees: FeePolicy) -> Bitcoin {
        let rpc = Rpc::new("http://127.0.0.1:9", "u", "p", Duration::from_secs(1)).unwrap();
        Bitcoin::new(
            rpc,
            Network::Regtest,
            signer().xpub(Chain::Bitcoin).unwrap(),
            fees,
        )
        .unwrap()
    }

    fn utxo(n: u8, value: u64) -> Utxo {
        Utxo {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([n; 32]),
                vout: u32::from(n),
            },
            value,
            keychain: Keychain::Receive,
            index: 0,
        }
    }

    fn user() -> Address {
        Address::parse(
            Chain::Bitcoin,
            Network::Regtest,
            "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
        )
        .unwrap()
    }

    fn sign(bitcoin: &Bitcoin, payout: &UnsignedPayout) -> Result<SignedTransaction, ChainError> {
        let signatures = signer()
            .sign_payloads(Chain::Bitcoin, &bitcoin.payloads(payout)?)
            .unwrap();
        bitcoin.combine(payout, &signatures)
    }

    #[test]
    fn node_amounts_become_satoshi_without_floats() {
        assert_eq!(btc_text_to_sat("0.5"), Some(50_000_000));
        assert_eq!(btc_text_to_sat("1e-8"), Some(1));
        assert_eq!(btc_text_to_sat("2.1e-5"), Some(2_100));
        assert_eq!(btc_text_to_sat("50"), Some(5_000_000_000));
        assert_eq!(btc_text_to_sat("0.000000001"), None, "below a satoshi");
        assert_eq!(btc_text_to_sat("-1"), None);
    }

    /// estimatesmartfee's answers as Bitcoin Core prints them: a rate in BTC/kvB rounded up
    /// to whole sat/vB, clamped to the floor and the cap; the floor when the node has no
    /// estimate and says why in `errors`; an answer that is not whole satoshi an error.
    #[test]
    fn the_fee_estimate_is_clamped_to_the_floor_and_the_cap() {
        let policy = FeePolicy {
            target_blocks: 6,
            floor_sat_vb: 2,
            cap_sat_vb: 100,
        };
        let rate = |text: &str| {
            let answer: serde_json::Value = serde_json::from_str(text).unwrap();
            policy.rate_from_estimate(&answer)
        };
        assert_eq!(rate(r#"{"feerate": 0.00012345, "blocks": 6}"#).unwrap(), 13);
        assert_eq!(rate(r#"{"feerate": 0.00010000, "blocks": 6}"#).unwrap(), 10);
        assert_eq!(
            rate(r#"{"feerate": 0.00001000, "blocks": 2}"#).unwrap(),
            2,
            "1 sat/vB is below the floor"
        );
        assert_eq!(
            rate(r#"{"feerate": 0.05, "blocks": 1}"#).unwrap(),
            100,
            "5,000 sat/vB is cut to the cap"
        );
        assert_eq!(
            rate(r#"{"errors": ["Insufficient data or no feerate found"], "blocks": 0}"#).unwrap(),
            2,
            "a fresh regtest node has no estimate: the floor"
        );
        assert_eq!(rate(r#"{"feerate": null, "blocks": 0}"#).unwrap(), 2);
        assert!(rate(r#"{"feerate": 0.000000001, "blocks": 2}"#).is_err());
        assert!(rate(r#"{"feerate": "0.0001", "blocks": 2}"#).is_err());
        assert!(rate(r#"{"feerate": -0.0001, "blocks": 2}"#).is_err());
    }

    #[test]
    fn a_fee_policy_is_bounded() {
        let ok = FeePolicy::default();
        assert!(ok.check().is_ok());
        for bad in [
            FeePolicy {
                floor_sat_vb: 0,
                ..ok
            },
            FeePolicy {
                cap_sat_vb: 1,
                floor_sat_vb: 2,
                ..ok
            },
            FeePolicy {
                cap_sat_vb: FEE_RATE_CAP_MAX_SAT_VB + 1,
                ..ok
            },
            FeePolicy {
                target_blocks: 0,
                ..ok
            },
            FeePolicy {
                target_blocks: FEE_TARGET_BLOCKS_MAX + 1,
                ..ok
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
            let rpc = Rpc::new("http://127.0.0.1:9", "u", "p", Duration::from_secs(1)).unwrap();
            assert!(
                Bitcoin::new(
                    rpc,
                    Network::Regtest,
                    signer().xpub(Chain::Bitcoin).unwrap(),
                    bad
                )
                .is_err()
            );
        }
        assert_eq!(ok.max_fee_rate_btc_kvb(), "0.00500000", "500 sat/vB");
        let most = FeePolicy {
            cap_sat_vb: FEE_RATE_CAP_MAX_SAT_VB,
            ..ok
        };
        assert_eq!(most.max_fee_rate_btc_kvb(), "0.05000000");
    }

    #[test]
    fn amounts_past_the_supply_and_sums_that_overflow_are_refused() {
        let bitcoin = offline(FeePolicy::default());
        let big = [utxo(1, MAX_MONEY_SAT)];
        let error = bitcoin
            .build_payout(
                &[(user(), Amount::from_u128(u128::from(MAX_MONEY_SAT) + 1))],
                &big,
                2,
                0,
            )
            .unwrap_err();
        assert!(error.to_string().contains("21,000,000 BTC"), "{error}");
        let error = bitcoin
            .build_payout(&[(user(), Amount::from_u128(u128::MAX))], &big, 2, 0)
            .unwrap_err();
        assert!(error.to_string().contains("21,000,000 BTC"), "{error}");
        // Each below the supply, together above it.
        let half = Amount::from_u128(u128::from(MAX_MONEY_SAT / 2 + 1));
        let error = bitcoin
            .build_payout(&[(user(), half), (user(), half)], &big, 2, 0)
            .unwrap_err();
        assert!(error.to_string().contains("add up"), "{error}");
        // Outputs whose values overflow u64 together: an error, not a wrap.
        let error = bitcoin
            .build_payout(
                &[(user(), Amount::from_u128(10_000))],
                &[utxo(1, u64::MAX), utxo(2, u64::MAX)],
                2,
                0,
            )
            .unwrap_err();
        assert!(error.to_string().contains("more than can exist"), "{error}");
        let error = bitcoin.build_payout(
            &[(user(), Amount::from_u128(10_000))],
            &[utxo(1, MAX_MONEY_SAT), utxo(2, MAX_MONEY_SAT)],
            2,
            0,
        );
        assert!(error.is_ok(), "one output covers it: {error:?}");
        assert!(
            bitcoin
                .build_payout(&[(user(), Amount::from_u128(10_000))], &big, 501, 0)
                .is_err(),
            "above the cap"
        );
        assert!(
            bitcoin
                .build_payout(
                    &[(user(), Amount::from_u128(10_000))],
                    &[utxo(1, 10_100)],
                    2,
                    0
                )
                .unwrap_err()
                .to_string()
                .contains("insufficient funds")
        );
    }

    #[test]
    fn a_bump_pays_from_the_change_or_says_why_it_cannot() {
        let bitcoin = offline(FeePolicy::default());
        let payout = bitcoin
            .build_payout(
                &[(user(), Amount::from_u128(100_000))],
                &[utxo(1, 110_000)],
                2,
                0,
            )
            .unwrap();
        assert!(payout.change.is_some());
        let bumped = bitcoin.bump(&payout, 20).unwrap();
        assert_eq!(bumped.inputs, payout.inputs);
        assert!(bumped.fee >= 20 * bumped.max_vsize());
        sign(&bitcoin, &bumped).unwrap();
        // The change cannot pay 400 sat/vB: refused, saying a bump never adds an input.
        let error = bitcoin.bump(&payout, 400).unwrap_err();
        assert!(error.to_string().contains("never adds an input"), "{error}");
        // Without change: the same.
        let exact = bitcoin
            .build_payout(
                &[(user(), Amount::from_u128(100_000))],
                &[utxo(2, 100_300)],
                2,
                0,
            )
            .unwrap();
        assert_eq!(exact.change, None);
        let error = bitcoin.bump(&exact, 3).unwrap_err();
        assert!(error.to_string().contains("no change"), "{error}");
        // Parts that disagree (a change output that is not there, other inputs): errors,
        // not panics.
        let mut broken = payout.clone();
        broken.change = Some((0, 7));
        assert!(bitcoin.bump(&broken, 20).is_err());
        assert!(bitcoin.payloads(&broken).is_err());
        let mut broken = payout.clone();
        broken.inputs.push(utxo(3, 1));
        assert!(bitcoin.bump(&broken, 20).is_err());
        assert!(bitcoin.combine(&broken, &[[0; 65], [0; 65]]).is_err());
        broken.inputs.clear();
        assert!(bitcoin.combine(&broken, &[]).is_err());
    }

    /// The fee is checked after signing, on the real size: bytes paying above the cap are
    /// refused, and so are bytes whose fee is not the payout's.
    #[test]
    fn the_signed_fee_is_checked_against_the_real_size_and_the_cap() {
        let bitcoin = offline(FeePolicy {
            target_blocks: 6,
            floor_sat_vb: 1,
            cap_sat_vb: 50,
        });
        let payout = bitcoin
            .build_payout(
                &[(user(), Amount::from_u128(100_000))],
                &[utxo(1, 200_000)],
                50,
                0,
            )
            .unwrap();
        let signed = sign(&bitcoin, &payout).unwrap();
        let fee = bitcoin.check_fee(&signed, &payout.inputs).unwrap();
        assert_eq!(fee, payout.fee);
        let tx: Transaction = encode::deserialize(&signed.raw).unwrap();
        assert!(fee <= 50 * tx.vsize() as u64);
        // Change cut so the fee is above 50 sat/vB of the real size.
        let mut greedy = payout.clone();
        let (_, vout) = greedy.change.unwrap();
        greedy.tx.output[vout].value = bitcoin::Amount::from_sat(1_000);
        greedy.fee = fee_of(&greedy.inputs, &greedy.tx).unwrap();
        let error = sign(&bitcoin, &greedy).unwrap_err();
        assert!(error.to_string().contains("above the cap"), "{error}");
        // A fee field that lies about the bytes.
        let mut lying = payout.clone();
        lying.fee -= 1;
        assert!(sign(&bitcoin, &lying).is_err());
        // Garbage and bytes with another txid: errors.
        let garbage = SignedTransaction {
            txid: signed.txid.clone(),
            raw: vec![1, 2, 3],
        };
        assert!(bitcoin.check_fee(&garbage, &payout.inputs).is_err());
        assert!(bitcoin.parse_outputs(&garbage).is_err());
        let renamed = SignedTransaction {
            txid: "00".repeat(32),
            raw: signed.raw.clone(),
        };
        assert!(bitcoin.check_fee(&renamed, &payout.inputs).is_err());
        assert!(
            bitcoin.check_fee(&signed, &[utxo(9, 200_000)]).is_err(),
            "other inputs"
        );
        // Truncated bytes of a real transaction.
        for cut in [0, 1, 10, signed.raw.len() / 2, signed.raw.len() - 1] {
            let short = SignedTransaction {
                txid: signed.txid.clone(),
                raw: signed.raw[..cut].to_vec(),
            };
            assert!(bitcoin.parse_outputs(&short).is_err(), "{cut}");
            assert!(bitcoin.check_fee(&short, &payout.inputs).is_err(), "{cut}");
        }
    }

    #[test]
    fn only_the_indexed_nodes_answer_is_not_found() {
        let node = |code, message: &str| RpcError::Node {
            code,
            message: message.to_string(),
        };
        assert_eq!(
            not_found_or_error(node(
                -5,
                "No such mempool or blockchain transaction. Use gettransaction for wallet \
                 transactions."
            )),
            Ok(TxStatus::NotFound)
        );
        for (error, what) in [
            (
                node(
                    -5,
                    "No such mempool transaction. Blockchain transactions are still in the \
                     process of being indexed. Use gettransaction for wallet transactions.",
                ),
                "an index being built",
            ),
            (
                node(
                    -5,
                    "No such mempool transaction. Use -txindex or provide a block hash to \
                     enable blockchain transaction queries. Use gettransaction for wallet \
                     transactions.",
                ),
                "no index",
            ),
            (node(-5, ""), "an unknown message"),
            (node(-28, "Loading block index..."), "warming up"),
            (RpcError::Transport("timeout".into()), "no answer"),
        ] {
            let answer = not_found_or_error(error);
            assert!(
                matches!(
                    answer,
                    Err(ChainError {
                        retriable: true,
                        ..
                    })
                ),
                "{what}: {answer:?}"
            );
        }
    }

    #[test]
    fn a_node_without_a_synced_txindex_is_refused_with_what_to_do() {
        let answer = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let error = txindex_ready(&answer("{}")).unwrap_err();
        assert!(!error.retriable);
        assert!(error.to_string().contains("-txindex=1"), "{error}");
        let error = txindex_ready(&answer(
            r#"{"txindex": {"synced": false, "best_block_height": 5}}"#,
        ))
        .unwrap_err();
        assert!(error.retriable, "{error}");
        assert!(
            txindex_ready(&answer(
                r#"{"txindex": {"synced": true, "best_block_height": 5}}"#
            ))
            .is_ok()
        );
    }
}
