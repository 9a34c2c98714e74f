//! Bitcoin: native SegWit (BIP84 P2WPKH) payouts and deposits through Bitcoin Core's
//! JSON-RPC (any node speaking it), with no node-side wallet.
//!
//! - **Keys**: receive keys m/84'/c'/0'/0/i and change keys m/84'/c'/0'/1/i (c = 1 on test
//!   networks) are the signer's; this adapter holds only the account xpub, from which it derives
//!   every address and the public key each input's witness carries.
//! - **Unspent outputs** are tracked from raw blocks ([`UtxoSet`]), never asked of a node
//!   wallet, and each is locked by the payout that selected it, under one mutex, so two
//!   payouts never spend one output.
//! - **Build** ([`Bitcoin::build_payout`]): coin selection that prefers one input and no change,
//!   then the largest outputs first; change to a fresh change address, dropped into the fee
//!   when it would be dust; the fee is the rate (sat/vB) times the virtual size of the
//!   transaction with its witnesses at their largest, so the signed one never pays less.
//!   Every input signals BIP125 replaceability; [`Bitcoin::bump`] replaces a stuck payout
//!   with the same inputs and outputs and a higher fee (taken from the change).
//! - **Sign**: one BIP143 digest per input ([`Bitcoin::payloads`]), signed by the signer with
//!   the input's key; [`Bitcoin::combine`] checks every signature against its key and digest,
//!   makes it DER with SIGHASH_ALL and computes the txid locally.
//! - **Read**: tip, blocks (raw, decoded here, so amounts are integers; the parent hash shows
//!   reorgs), deposits by block scan keyed `txid:vout`, fee estimates with a floor and a cap.
//! - **Submit**: `sendrawtransaction`, its answer mapped to [`SubmitOutcome`].

pub mod batch;
pub mod rpc;
pub mod utxo;

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
}

fn chain_error(error: RpcError) -> ChainError {
    if error.retriable() {
        ChainError::retriable(error.to_string())
    } else {
        ChainError::permanent(error.to_string())
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

impl Bitcoin {
    /// `xpub` is the account key of `network` (tpub on test networks).
    pub fn new(
        rpc: Rpc,
        network: Network,
        xpub: Xpub,
        fees: FeePolicy,
    ) -> Result<Self, ChainError> {
        if fees.floor_sat_vb == 0 || fees.cap_sat_vb < fees.floor_sat_vb {
            return Err(ChainError::permanent(
                "bitcoin fee policy: the floor must be at least 1 sat/vB and at most the cap",
            ));
        }
        Ok(Bitcoin {
            rpc,
            network,
            xpub,
            fees,
        })
    }

    /// Checks the node is on the configured network (getblockchaininfo's `chain`).
    pub async fn connect(
        rpc: Rpc,
        network: Network,
        xpub: Xpub,
        fees: FeePolicy,
    ) -> Result<Self, ChainError> {
        let this = Bitcoin::new(rpc, network, xpub, fees)?;
        node_status(&this.rpc).await?.require(network)?;
        Ok(this)
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

    /// The address of key `index` on `keychain`, from the xpub alone.
    pub fn key_address(&self, keychain: Keychain, index: u32) -> Result<Address, ChainError> {
        self.xpub
            .address_on(keychain, index)
            .map_err(|error| ChainError::permanent(error.to_string()))
    }

    fn script_of(&self, address: &Address) -> Result<ScriptBuf, ChainError> {
        if address.chain() != Chain::Bitcoin {
            return Err(ChainError::permanent(format!(
                "{address} is not a Bitcoin address"
            )));
        }
        let parsed = bitcoin::Address::from_str(address.as_str())
            .map_err(|error| ChainError::permanent(error.to_string()))?
            .require_network(self.bitcoin_network())
            .map_err(|error| ChainError::permanent(error.to_string()))?;
        Ok(parsed.script_pubkey())
    }

    fn bitcoin_network(&self) -> bitcoin::Network {
        match self.network {
            Network::Mainnet => bitcoin::Network::Bitcoin,
            Network::Testnet => bitcoin::Network::Testnet,
            Network::Signet => bitcoin::Network::Signet,
            Network::Regtest => bitcoin::Network::Regtest,
        }
    }

    fn public_key(
        &self,
        keychain: Keychain,
        index: u32,
    ) -> Result<bitcoin::CompressedPublicKey, ChainError> {
        self.xpub
            .public_key(keychain, index)
            .map(bitcoin::CompressedPublicKey)
            .map_err(|error| ChainError::permanent(error.to_string()))
    }

    /// The output script of key `index` on `keychain` (P2WPKH).
    pub fn key_script(&self, keychain: Keychain, index: u32) -> Result<ScriptBuf, ChainError> {
        Ok(ScriptBuf::new_p2wpkh(
            &self.public_key(keychain, index)?.wpubkey_hash(),
        ))
    }

    /// The fee rate to pay now: the node's estimate for the policy's target, in whole sat/vB
    /// rounded up, clamped to the floor and the cap (the floor when the node has none).
    pub async fn fee_rate(&self) -> Result<u64, ChainError> {
        let estimate = self
            .rpc
            .call("estimatesmartfee", json!([self.fees.target_blocks]))
            .await
            .map_err(chain_error)?;
        // No `feerate` (the node has no estimate yet, e.g. on regtest): the floor. One that
        // does not read as whole satoshi is an error, never a silent floor.
        let per_kvb = match estimate.get("feerate") {
            None | Some(serde_json::Value::Null) => None,
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
            .map_or(self.fees.floor_sat_vb, |sat_kvb| sat_kvb.div_ceil(1000))
            .clamp(self.fees.floor_sat_vb, self.fees.cap_sat_vb))
    }

    /// Block `number`, raw, decoded here; None past the head.
    pub async fn raw_block(&self, number: u64) -> Result<Option<Block>, ChainError> {
        let hash = match self.rpc.call("getblockhash", json!([number])).await {
            Ok(hash) => hash,
            // -8: block height out of range.
            Err(RpcError::Node { code: -8, .. }) => return Ok(None),
            Err(error) => return Err(chain_error(error)),
        };
        self.block_by_hash(hash.as_str().unwrap_or_default())
            .await
            .map(Some)
    }

    /// A block by its hash, raw, decoded here.
    pub async fn block_by_hash(&self, hash: &str) -> Result<Block, ChainError> {
        let hex = self
            .rpc
            .call("getblock", json!([hash, 0]))
            .await
            .map_err(chain_error)?;
        let block: Block = encode::deserialize_hex(hex.as_str().unwrap_or_default())
            .map_err(|error| ChainError::permanent(format!("block {hash}: {error}")))?;
        if block.block_hash().to_string() != hash {
            return Err(ChainError::permanent(format!(
                "the node sent another block for {hash}"
            )));
        }
        Ok(block)
    }

    /// Asks the node whether it would take `signed` now, without sending it.
    pub async fn test_accept(
        &self,
        signed: &SignedTransaction,
    ) -> Result<Result<(), String>, ChainError> {
        let answer = self
            .rpc
            .call("testmempoolaccept", json!([[hex(&signed.raw)]]))
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
            let value = u64::try_from(amount.base_units()).map_err(|_| {
                ChainError::permanent(format!("{} satoshi is too much", amount.format_decimal(0)))
            })?;
            let dust = script.minimal_non_dust().to_sat();
            if value < dust {
                return Err(ChainError::permanent(format!(
                    "{value} satoshi to {to} is below the dust limit ({dust})"
                )));
            }
            target = target
                .checked_add(value)
                .ok_or_else(|| ChainError::permanent("the payouts add up past 2^64 satoshi"))?;
            outputs.push(TxOut {
                value: bitcoin::Amount::from_sat(value),
                script_pubkey: script,
            });
        }
        let change_script = self.key_script(Keychain::Change, change_index)?;
        let change_dust = change_script.minimal_non_dust().to_sat();
        let fee_for = |inputs: &[Utxo], with_change: bool| -> u64 {
            let mut tx = skeleton(inputs, outputs.clone());
            if with_change {
                tx.output.push(TxOut {
                    value: bitcoin::Amount::ZERO,
                    script_pubkey: change_script.clone(),
                });
            }
            with_dummy_witnesses(&tx).vsize() as u64 * fee_rate_sat_vb
        };

        // One output, no change: it covers the payouts and fee, and what it has over is less
        // than the change output would cost plus the least change worth making.
        let mut ascending: Vec<Utxo> = available.to_vec();
        ascending.sort_by_key(|utxo| (utxo.value, utxo.outpoint));
        let single = ascending.iter().find(|utxo| {
            let fee = fee_for(std::slice::from_ref(utxo), false);
            let change_cost = fee_for(std::slice::from_ref(utxo), true) - fee;
            utxo.value >= target + fee && utxo.value - target - fee < change_cost + change_dust
        });
        let (inputs, change_value) = if let Some(utxo) = single {
            (vec![*utxo], None)
        } else {
            let mut chosen = Vec::new();
            let mut total: u64 = 0;
            let mut found = None;
            for utxo in ascending.iter().rev() {
                chosen.push(*utxo);
                total += utxo.value;
                let with_change = fee_for(&chosen, true);
                if total >= target + with_change + change_dust {
                    found = Some(Some(total - target - with_change));
                    break;
                }
                let without = fee_for(&chosen, false);
                if total >= target + without {
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
        let spent: u64 = inputs.iter().map(|utxo| utxo.value).sum();
        let paid: u64 = tx.output.iter().map(|output| output.value.to_sat()).sum();
        Ok(UnsignedPayout {
            tx,
            inputs,
            change,
            fee: spent - paid,
            fee_rate_sat_vb,
        })
    }

    /// A BIP125 replacement of `payout` at `fee_rate_sat_vb`: the same inputs and payouts, a
    /// fee at least the rate times its size and at least the old fee plus the incremental
    /// relay fee for its size, taken from the change (change that would fall below dust goes
    /// to the fee too). Without enough change it is refused: adding inputs is not done here.
    pub fn bump(
        &self,
        payout: &UnsignedPayout,
        fee_rate_sat_vb: u64,
    ) -> Result<UnsignedPayout, ChainError> {
        if fee_rate_sat_vb > self.fees.cap_sat_vb {
            return Err(ChainError::permanent(format!(
                "fee rate {fee_rate_sat_vb} sat/vB is above the cap {}",
                self.fees.cap_sat_vb
            )));
        }
        let (change_index, change_vout) = payout.change.ok_or_else(|| {
            ChainError::permanent("this payout has no change to pay a higher fee from")
        })?;
        let vsize = payout.max_vsize();
        let fee = (fee_rate_sat_vb * vsize).max(payout.fee + INCREMENTAL_RELAY_SAT_VB * vsize);
        let change_value = payout.tx.output[change_vout].value.to_sat();
        let extra = fee - payout.fee;
        let mut tx = payout.tx.clone();
        let mut change = payout.change;
        match change_value.checked_sub(extra) {
            Some(left) if left >= P2WPKH_DUST => {
                tx.output[change_vout].value = bitcoin::Amount::from_sat(left);
            }
            Some(_) => {
                // Change below dust: drop it, the fee takes it all (and is higher still).
                tx.output.remove(change_vout);
                change = None;
            }
            None => {
                return Err(ChainError::permanent(format!(
                    "the change ({change_value} satoshi) cannot pay {extra} more in fee"
                )));
            }
        }
        let _ = change_index;
        let spent: u64 = payout.inputs.iter().map(|utxo| utxo.value).sum();
        let paid: u64 = tx.output.iter().map(|output| output.value.to_sat()).sum();
        Ok(UnsignedPayout {
            tx,
            inputs: payout.inputs.clone(),
            change,
            fee: spent - paid,
            fee_rate_sat_vb,
        })
    }

    /// One BIP143 digest per input, with the key that signs it.
    pub fn payloads(&self, payout: &UnsignedPayout) -> Result<Vec<SigningPayload>, ChainError> {
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
    /// checked against its input's key and digest, made low-S DER with SIGHASH_ALL.
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
            let mut ecdsa = secp256k1::ecdsa::Signature::from_compact(&signature[..64])
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
            tx.input[position].witness = Witness::p2wpkh(
                &bitcoin::ecdsa::Signature {
                    signature: ecdsa,
                    sighash_type: EcdsaSighashType::All,
                },
                &key.0,
            );
        }
        Ok(SignedTransaction {
            txid: tx.compute_txid().to_string(),
            raw: encode::serialize(&tx),
        })
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
        let hash = hash.as_str().unwrap_or_default().to_string();
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
    async fn transaction(&self, txid: &str) -> Result<TxStatus, ChainError> {
        Txid::from_str(txid).map_err(|error| ChainError::permanent(format!("txid: {error}")))?;
        let answer = match self.rpc.call("getrawtransaction", json!([txid, 1])).await {
            Ok(answer) => answer,
            Err(RpcError::Node { code: -5, .. }) => return Ok(TxStatus::NotFound),
            Err(error) => return Err(chain_error(error)),
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
                number: header["height"].as_u64().unwrap_or(0),
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
    /// `txid:vout` (position = vout).
    async fn scan(&self, from: u64, to: u64, watch: &WatchSet) -> Result<ScanBatch, ChainError> {
        let mut scripts: HashMap<ScriptBuf, Address> = HashMap::new();
        for address in &watch.addresses {
            scripts.insert(self.script_of(address)?, address.clone());
        }
        let mut batch = ScanBatch::default();
        for number in from..=to {
            let block = self
                .raw_block(number)
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
}

impl ChainSubmit for Bitcoin {
    async fn submit(&self, signed: &SignedTransaction) -> SubmitOutcome {
        // maxfeerate 0: the fee is ours to decide (capped when built), not the node's.
        let answer = self
            .rpc
            .call_once("sendrawtransaction", json!([hex(&signed.raw), 0]))
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
    use super::btc_text_to_sat;

    #[test]
    fn node_amounts_become_satoshi_without_floats() {
        assert_eq!(btc_text_to_sat("0.5"), Some(50_000_000));
        assert_eq!(btc_text_to_sat("1e-8"), Some(1));
        assert_eq!(btc_text_to_sat("2.1e-5"), Some(2_100));
        assert_eq!(btc_text_to_sat("50"), Some(5_000_000_000));
        assert_eq!(btc_text_to_sat("0.000000001"), None, "below a satoshi");
        assert_eq!(btc_text_to_sat("-1"), None);
    }
}
