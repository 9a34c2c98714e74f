//! TRON transactions made here, from integers: a `TransferContract` for TRX, a
//! `TriggerSmartContract` calling TRC-20 `transfer(address,uint256)` for tokens.
//!
//! The reference block is the solidified head (ref_block_bytes = bytes 6..8 of its number,
//! ref_block_hash = bytes 8..16 of its id), so the transaction can only land on the chain
//! that block is on; the expiration bounds when it can land at all, which is what makes an
//! attempt provably dead later ([`crate::death`]). The txid is sha256 of the `raw_data`
//! bytes; the signature is 65 bytes (r, s, recovery id) over the txid. Reading signed bytes
//! back ([`decode`]) recovers the signer from the signature, so a transaction signed by the
//! wrong key, or saying something other than its payment, is caught before it is stored.

use chain::address::{Address, Network};
use chain::provider::{
    Asset, ChainError, Delegation, Parsed, Payment, SignedTransaction, SigningPayload,
};
use domain::{Amount, Chain};
use prost::Message;
use ruint::aliases::U256;
use sha2::{Digest, Sha256};
use signer::Signer;

use crate::proto;

/// The expiration when none is configured: one minute after the timestamp, as java-tron's
/// own wallet and tronpy use.
pub const EXPIRATION_DEFAULT_MS: i64 = 60_000;
/// The longest expiration the network accepts: 24 hours after the head block's time.
pub const EXPIRATION_MAX_MS: i64 = 24 * 60 * 60 * 1000;
/// `transfer(address,uint256)`.
pub const TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// The TRON address prefix byte.
pub const ADDRESS_PREFIX: u8 = 0x41;
/// The least a delegation may lend: 1 TRX of stake (java-tron's `DelegateResourceActuator`).
pub const DELEGATION_MIN_SUN: u64 = 1_000_000;

/// A block named by its id: java-tron's block id is the 8-byte big-endian number followed by
/// 24 bytes of the block hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefBlock {
    pub id: [u8; 32],
}

impl RefBlock {
    /// Reads a 64-hex-digit block id (as `blockID` in the node's answers).
    pub fn from_hex(text: &str) -> Result<RefBlock, ChainError> {
        let bytes = hex::decode(text.strip_prefix("0x").unwrap_or(text)).map_err(|error| {
            ChainError::permanent(format!("block id {text:?} is not hex: {error}"))
        })?;
        let id: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            ChainError::permanent(format!(
                "a block id has 32 bytes; {text:?} has {}",
                bytes.len()
            ))
        })?;
        Ok(RefBlock { id })
    }

    /// The block number the id starts with.
    pub fn number(&self) -> u64 {
        u64::from_be_bytes(self.id[..8].try_into().expect("8 bytes"))
    }

    pub fn ref_block_bytes(&self) -> [u8; 2] {
        [self.id[6], self.id[7]]
    }

    pub fn ref_block_hash(&self) -> [u8; 8] {
        self.id[8..16].try_into().expect("8 bytes")
    }
}

/// When and against which block a transaction is valid, and what a contract call may burn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub ref_block: RefBlock,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Milliseconds since the epoch; after `timestamp` and at most 24 hours after it.
    pub expiration: i64,
    /// The most TRX (in sun) a TRC-20 transfer may burn for energy. Not set on TRX transfers,
    /// which burn no energy.
    pub fee_limit: i64,
}

impl Window {
    /// Refuses a window the network would refuse (checked again by [`build`]).
    pub fn check(&self) -> Result<(), ChainError> {
        if self.timestamp <= 0 {
            return Err(ChainError::permanent("the timestamp must be positive"));
        }
        let lifetime = self.expiration.checked_sub(self.timestamp);
        match lifetime {
            Some(lifetime) if lifetime > 0 && lifetime <= EXPIRATION_MAX_MS => {}
            _ => {
                return Err(ChainError::permanent(format!(
                    "the expiration {} must be after the timestamp {} and at most 24 hours after it",
                    self.expiration, self.timestamp
                )));
            }
        }
        if self.fee_limit < 0 {
            return Err(ChainError::permanent("the fee limit cannot be negative"));
        }
        Ok(())
    }
}

/// A transaction ready to be signed: its `raw_data` bytes, their hash, and the key to sign.
#[derive(Clone, PartialEq, Eq)]
pub struct Unsigned {
    pub index: u32,
    raw_bytes: Vec<u8>,
    txid: [u8; 32],
    owner: [u8; 21],
}

impl std::fmt::Debug for Unsigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsigned")
            .field("index", &self.index)
            .field("txid", &hex::encode(self.txid))
            .finish_non_exhaustive()
    }
}

impl Unsigned {
    /// The serialized `Transaction.raw` (the `raw_data_hex` of the node's JSON).
    pub fn raw_data(&self) -> &[u8] {
        &self.raw_bytes
    }

    /// sha256 of the raw data: the txid and the digest to sign.
    pub fn txid(&self) -> [u8; 32] {
        self.txid
    }

    pub fn payload(&self) -> SigningPayload {
        SigningPayload {
            keychain: chain::provider::Keychain::Receive,
            index: self.index,
            digest: self.txid,
        }
    }
}

fn tron_bytes(address: &Address, role: &str) -> Result<[u8; 21], ChainError> {
    address
        .tron_bytes()
        .ok_or_else(|| ChainError::permanent(format!("the {role} {address} is not a TRON address")))
}

/// The `transfer(address,uint256)` call data: selector, the 20-byte recipient left-padded to
/// a word, the amount as a big-endian word.
pub fn transfer_call(to: &[u8; 21], amount: U256) -> Vec<u8> {
    let mut data = Vec::with_capacity(68);
    data.extend_from_slice(&TRANSFER_SELECTOR);
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(&to[1..]);
    data.extend_from_slice(&amount.to_be_bytes::<32>());
    data
}

/// Builds the unsigned transaction of `payment` in `window`. Refuses (nothing built) a
/// zero amount, a TRX amount beyond int64, a payment to itself, a TRC-20 transfer without a
/// fee limit, and a window the network would refuse.
pub fn build(payment: &Payment, window: &Window) -> Result<Unsigned, ChainError> {
    window.check()?;
    let owner = tron_bytes(&payment.from, "sender")?;
    let to = tron_bytes(&payment.to, "recipient")?;
    if payment.amount.is_zero() {
        return Err(ChainError::permanent("the amount must be more than zero"));
    }
    if owner == to {
        return Err(ChainError::permanent(
            "the sender and the recipient are the same address",
        ));
    }
    let (contract, fee_limit) = match &payment.asset {
        Asset::Native => {
            let amount = i64::try_from(payment.amount.base_units()).map_err(|_| {
                ChainError::permanent(format!(
                    "{} sun does not fit a TRX transfer (at most 2^63 - 1)",
                    payment.amount.base_units()
                ))
            })?;
            let transfer = proto::TransferContract {
                owner_address: owner.to_vec(),
                to_address: to.to_vec(),
                amount,
            };
            let contract = proto::Contract {
                r#type: proto::TRANSFER_CONTRACT,
                parameter: Some(proto::Any {
                    type_url: proto::TRANSFER_TYPE_URL.into(),
                    value: transfer.encode_to_vec(),
                }),
                ..Default::default()
            };
            (contract, 0)
        }
        Asset::Token(token) => {
            if window.fee_limit <= 0 {
                return Err(ChainError::permanent(
                    "a TRC-20 transfer needs a fee limit above zero",
                ));
            }
            let call = proto::TriggerSmartContract {
                owner_address: owner.to_vec(),
                contract_address: tron_bytes(token, "token contract")?.to_vec(),
                data: transfer_call(&to, payment.amount.base_units()),
                ..Default::default()
            };
            let contract = proto::Contract {
                r#type: proto::TRIGGER_SMART_CONTRACT,
                parameter: Some(proto::Any {
                    type_url: proto::TRIGGER_TYPE_URL.into(),
                    value: call.encode_to_vec(),
                }),
                ..Default::default()
            };
            (contract, window.fee_limit)
        }
    };
    Ok(finish(
        contract,
        window,
        fee_limit,
        payment.from_index,
        owner,
    ))
}

/// The one contract in `window`, as the raw data to sign.
fn finish(
    contract: proto::Contract,
    window: &Window,
    fee_limit: i64,
    index: u32,
    owner: [u8; 21],
) -> Unsigned {
    let raw = proto::Raw {
        ref_block_bytes: window.ref_block.ref_block_bytes().to_vec(),
        ref_block_hash: window.ref_block.ref_block_hash().to_vec(),
        expiration: window.expiration,
        contract: vec![contract],
        timestamp: window.timestamp,
        fee_limit,
        ..Default::default()
    };
    let raw_bytes = raw.encode_to_vec();
    let txid: [u8; 32] = Sha256::digest(&raw_bytes).into();
    Unsigned {
        index,
        raw_bytes,
        txid,
        owner,
    }
}

/// Builds the unsigned `DelegateResourceContract` (or, to reclaim, `UnDelegateResourceContract`)
/// of `delegation`: energy, unlocked, no fee limit (it runs no contract code). Refuses
/// (nothing built) less than [`DELEGATION_MIN_SUN`], more than int64, a delegation to
/// itself, and a window the network would refuse.
pub fn build_delegation(delegation: &Delegation, window: &Window) -> Result<Unsigned, ChainError> {
    window.check()?;
    let owner = tron_bytes(&delegation.owner, "staking account")?;
    let receiver = tron_bytes(&delegation.receiver, "receiver")?;
    if owner == receiver {
        return Err(ChainError::permanent(
            "the staking account cannot delegate to itself",
        ));
    }
    if delegation.balance < DELEGATION_MIN_SUN {
        return Err(ChainError::permanent(format!(
            "a delegation lends at least {DELEGATION_MIN_SUN} sun of stake, not {}",
            delegation.balance
        )));
    }
    let balance = i64::try_from(delegation.balance).map_err(|_| {
        ChainError::permanent(format!(
            "{} sun does not fit a delegation (at most 2^63 - 1)",
            delegation.balance
        ))
    })?;
    let (kind, type_url, value) = if delegation.reclaim {
        let contract = proto::UnDelegateResourceContract {
            owner_address: owner.to_vec(),
            resource: proto::RESOURCE_ENERGY,
            balance,
            receiver_address: receiver.to_vec(),
        };
        (
            proto::UNDELEGATE_RESOURCE_CONTRACT,
            proto::UNDELEGATE_TYPE_URL,
            contract.encode_to_vec(),
        )
    } else {
        let contract = proto::DelegateResourceContract {
            owner_address: owner.to_vec(),
            resource: proto::RESOURCE_ENERGY,
            balance,
            receiver_address: receiver.to_vec(),
            ..Default::default()
        };
        (
            proto::DELEGATE_RESOURCE_CONTRACT,
            proto::DELEGATE_TYPE_URL,
            contract.encode_to_vec(),
        )
    };
    let contract = proto::Contract {
        r#type: kind,
        parameter: Some(proto::Any {
            type_url: type_url.into(),
            value,
        }),
        ..Default::default()
    };
    Ok(finish(contract, window, 0, delegation.from_index, owner))
}

/// The signed transaction: `Transaction { raw_data, signature: [signature] }` as bytes (what
/// `broadcasthex` takes) and the txid. Refuses a signature that is not the owner's.
pub fn attach(unsigned: Unsigned, signature: &[u8; 65]) -> Result<SignedTransaction, ChainError> {
    let signer = recover(&unsigned.txid, signature)?;
    if signer != unsigned.owner {
        return Err(ChainError::permanent(format!(
            "the signature is by {}, not by the sender {}",
            base58(&signer),
            base58(&unsigned.owner)
        )));
    }
    let transaction = proto::TransactionBytes {
        raw_data: unsigned.raw_bytes,
        signature: vec![signature.to_vec()],
    };
    Ok(SignedTransaction {
        txid: hex::encode(unsigned.txid),
        raw: transaction.encode_to_vec(),
    })
}

/// Has `signer` sign the txid with the payment's key and attaches the signature.
pub fn sign(unsigned: Unsigned, signer: &dyn Signer) -> Result<SignedTransaction, ChainError> {
    let signature = signer
        .sign_digest(Chain::Tron, unsigned.index, unsigned.txid)
        .map_err(|error| ChainError::permanent(format!("signing failed: {error}")))?;
    attach(unsigned, &signature.0)
}

/// The 21-byte address whose key made `signature` over `digest`. Recovery ids 27 and 28
/// (TronWeb's) are read as 0 and 1, as java-tron does.
pub fn recover(digest: &[u8; 32], signature: &[u8; 65]) -> Result<[u8; 21], ChainError> {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    let bad = |error: secp256k1::Error| ChainError::permanent(format!("bad signature: {error}"));
    let v = match signature[64] {
        v @ (0 | 1) => v,
        v @ (27 | 28) => v - 27,
        v => {
            return Err(ChainError::permanent(format!(
                "bad signature: recovery id {v}"
            )));
        }
    };
    let id = RecoveryId::from_i32(i32::from(v)).map_err(bad)?;
    let signature = RecoverableSignature::from_compact(&signature[..64], id).map_err(bad)?;
    let key = secp256k1::SECP256K1
        .recover_ecdsa(&secp256k1::Message::from_digest(*digest), &signature)
        .map_err(bad)?;
    let hash = alloy_primitives::keccak256(&key.serialize_uncompressed()[1..]);
    let mut address = [0u8; 21];
    address[0] = ADDRESS_PREFIX;
    address[1..].copy_from_slice(&hash[12..]);
    Ok(address)
}

/// The base58check text of 21 address bytes.
pub fn base58(bytes: &[u8; 21]) -> String {
    bs58::encode(bytes).with_check().into_string()
}

/// 21 address bytes as a validated [`Address`] (refused: a wrong prefix, the zero account).
pub fn address(bytes: &[u8]) -> Result<Address, ChainError> {
    let bytes: [u8; 21] = bytes.try_into().map_err(|_| {
        ChainError::permanent(format!("a TRON address has 21 bytes, not {}", bytes.len()))
    })?;
    Address::parse(Chain::Tron, Network::Mainnet, &base58(&bytes))
        .map_err(|error| ChainError::permanent(error.to_string()))
}

/// Everything signed bytes say, read from the bytes alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub parsed: Parsed,
    pub txid: String,
    pub raw_data: Vec<u8>,
    pub ref_block_bytes: [u8; 2],
    pub ref_block_hash: [u8; 8],
    pub timestamp: i64,
    pub expiration: i64,
    pub fee_limit: i64,
}

/// Signed bytes opened: canonically encoded, one contract without permission, provider or
/// memo, one signature, its signer recovered.
struct Opened {
    raw: proto::Raw,
    raw_data: Vec<u8>,
    txid: [u8; 32],
    signer: [u8; 21],
}

fn refuse(why: String) -> ChainError {
    ChainError::permanent(format!("not a transaction of ours: {why}"))
}

fn open(bytes: &[u8]) -> Result<Opened, ChainError> {
    let envelope = proto::TransactionBytes::decode(bytes)
        .map_err(|error| refuse(format!("undecodable transaction: {error}")))?;
    let txid: [u8; 32] = Sha256::digest(&envelope.raw_data).into();
    let raw = proto::Raw::decode(envelope.raw_data.as_slice())
        .map_err(|error| refuse(format!("undecodable raw data: {error}")))?;
    if raw.encode_to_vec() != envelope.raw_data || envelope.encode_to_vec() != bytes {
        return Err(refuse(
            "not canonically encoded (unknown or repeated fields)".into(),
        ));
    }
    let [contract] = raw.contract.as_slice() else {
        return Err(refuse(format!("{} contracts", raw.contract.len())));
    };
    if contract.permission_id != 0 || !contract.provider.is_empty() || !raw.data.is_empty() {
        return Err(refuse("a permission id, provider or memo is set".into()));
    }
    let [signature] = envelope.signature.as_slice() else {
        return Err(refuse(format!(
            "{} signatures where one is expected",
            envelope.signature.len()
        )));
    };
    let signature: &[u8; 65] = signature
        .as_slice()
        .try_into()
        .map_err(|_| refuse(format!("a signature of {} bytes", signature.len())))?;
    let signer = recover(&txid, signature)?;
    Ok(Opened {
        raw,
        raw_data: envelope.raw_data,
        txid,
        signer,
    })
}

impl Opened {
    fn parameter(&self) -> Result<(i32, &proto::Any), ChainError> {
        let contract = &self.raw.contract[0];
        let parameter = contract
            .parameter
            .as_ref()
            .ok_or_else(|| refuse("no contract parameter".into()))?;
        Ok((contract.r#type, parameter))
    }

    fn check_owner(&self, owner: &[u8]) -> Result<(), ChainError> {
        if self.signer.as_slice() != owner {
            return Err(refuse(format!(
                "signed by {} but spends from {}",
                base58(&self.signer),
                hex::encode(owner)
            )));
        }
        Ok(())
    }

    fn stamp(&self) -> Result<([u8; 2], [u8; 8]), ChainError> {
        let ref_block_bytes = self
            .raw
            .ref_block_bytes
            .as_slice()
            .try_into()
            .map_err(|_| refuse("ref_block_bytes is not 2 bytes".into()))?;
        let ref_block_hash = self
            .raw
            .ref_block_hash
            .as_slice()
            .try_into()
            .map_err(|_| refuse("ref_block_hash is not 8 bytes".into()))?;
        Ok((ref_block_bytes, ref_block_hash))
    }
}

/// Reads signed transaction bytes: one contract, a TRX transfer or a TRC-20
/// `transfer(address,uint256)` without value attached, canonically encoded, signed once by
/// the account it spends from. A delegation is refused here ([`decode_delegation`] reads it),
/// so bytes checked as a payment can never be anything else.
pub fn decode(bytes: &[u8]) -> Result<Decoded, ChainError> {
    let opened = open(bytes)?;
    let (kind, parameter) = opened.parameter()?;
    let (owner, to, asset, amount) = match (kind, parameter.type_url.as_str()) {
        (proto::TRANSFER_CONTRACT, proto::TRANSFER_TYPE_URL) => {
            let transfer = proto::TransferContract::decode(parameter.value.as_slice())
                .map_err(|error| refuse(format!("undecodable TransferContract: {error}")))?;
            let amount =
                u128::try_from(transfer.amount).map_err(|_| refuse("a negative amount".into()))?;
            (
                transfer.owner_address,
                address(&transfer.to_address)?,
                Asset::Native,
                Amount::from_u128(amount),
            )
        }
        (proto::TRIGGER_SMART_CONTRACT, proto::TRIGGER_TYPE_URL) => {
            let call = proto::TriggerSmartContract::decode(parameter.value.as_slice())
                .map_err(|error| refuse(format!("undecodable TriggerSmartContract: {error}")))?;
            if call.call_value != 0 || call.call_token_value != 0 || call.token_id != 0 {
                return Err(refuse("the call sends value along".into()));
            }
            let data = call.data.as_slice();
            if data.len() != 68 || data[..4] != TRANSFER_SELECTOR || data[4..16] != [0u8; 12] {
                return Err(refuse(
                    "the call is not a canonical transfer(address,uint256)".into(),
                ));
            }
            let mut to = [ADDRESS_PREFIX; 21];
            to[1..].copy_from_slice(&data[16..36]);
            let amount = U256::from_be_slice(&data[36..68]);
            (
                call.owner_address,
                address(&to)?,
                Asset::Token(address(&call.contract_address)?),
                Amount::from_base_units(amount),
            )
        }
        (kind, url) => return Err(refuse(format!("contract type {kind} ({url})"))),
    };
    opened.check_owner(&owner)?;
    let (ref_block_bytes, ref_block_hash) = opened.stamp()?;
    Ok(Decoded {
        parsed: Parsed {
            from: address(&opened.signer)?,
            to,
            asset,
            amount,
            sequence: None,
        },
        txid: hex::encode(opened.txid),
        ref_block_bytes,
        ref_block_hash,
        timestamp: opened.raw.timestamp,
        expiration: opened.raw.expiration,
        fee_limit: opened.raw.fee_limit,
        raw_data: opened.raw_data,
    })
}

/// A delegation read from signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedDelegation {
    /// `from_index` is not in the bytes: 0.
    pub delegation: Delegation,
    pub txid: String,
    pub raw_data: Vec<u8>,
    pub ref_block_bytes: [u8; 2],
    pub ref_block_hash: [u8; 8],
    pub timestamp: i64,
    pub expiration: i64,
}

/// Reads signed bytes of an energy `DelegateResourceContract` or `UnDelegateResourceContract`,
/// unlocked, without a fee limit, signed by the staking account; anything else is refused.
pub fn decode_delegation(bytes: &[u8]) -> Result<DecodedDelegation, ChainError> {
    let opened = open(bytes)?;
    let (kind, parameter) = opened.parameter()?;
    let (owner, resource, balance, receiver, reclaim) = match (kind, parameter.type_url.as_str()) {
        (proto::DELEGATE_RESOURCE_CONTRACT, proto::DELEGATE_TYPE_URL) => {
            let contract = proto::DelegateResourceContract::decode(parameter.value.as_slice())
                .map_err(|error| {
                    refuse(format!("undecodable DelegateResourceContract: {error}"))
                })?;
            if contract.lock || contract.lock_period != 0 {
                return Err(refuse("a locked delegation".into()));
            }
            (
                contract.owner_address,
                contract.resource,
                contract.balance,
                contract.receiver_address,
                false,
            )
        }
        (proto::UNDELEGATE_RESOURCE_CONTRACT, proto::UNDELEGATE_TYPE_URL) => {
            let contract = proto::UnDelegateResourceContract::decode(parameter.value.as_slice())
                .map_err(|error| {
                    refuse(format!("undecodable UnDelegateResourceContract: {error}"))
                })?;
            (
                contract.owner_address,
                contract.resource,
                contract.balance,
                contract.receiver_address,
                true,
            )
        }
        (kind, url) => return Err(refuse(format!("contract type {kind} ({url})"))),
    };
    if resource != proto::RESOURCE_ENERGY {
        return Err(refuse(format!("a delegation of resource {resource}")));
    }
    if opened.raw.fee_limit != 0 {
        return Err(refuse("a delegation with a fee limit".into()));
    }
    let balance = u64::try_from(balance).map_err(|_| refuse("a negative balance".into()))?;
    opened.check_owner(&owner)?;
    let (ref_block_bytes, ref_block_hash) = opened.stamp()?;
    Ok(DecodedDelegation {
        delegation: Delegation {
            from_index: 0,
            owner: address(&opened.signer)?,
            receiver: address(&receiver)?,
            balance,
            reclaim,
        },
        txid: hex::encode(opened.txid),
        ref_block_bytes,
        ref_block_hash,
        timestamp: opened.raw.timestamp,
        expiration: opened.raw.expiration,
        raw_data: opened.raw_data,
    })
}

/// What the death rule needs of any transaction of ours (a transfer or a delegation): its
/// txid, reference block and expiration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub txid: String,
    pub ref_block_bytes: [u8; 2],
    pub ref_block_hash: [u8; 8],
    pub expiration: i64,
}

/// The [`Stamp`] of signed bytes that [`decode`] or [`decode_delegation`] reads.
pub fn stamp(bytes: &[u8]) -> Result<Stamp, ChainError> {
    match decode(bytes) {
        Ok(decoded) => Ok(Stamp {
            txid: decoded.txid,
            ref_block_bytes: decoded.ref_block_bytes,
            ref_block_hash: decoded.ref_block_hash,
            expiration: decoded.expiration,
        }),
        Err(transfer) => match decode_delegation(bytes) {
            Ok(decoded) => Ok(Stamp {
                txid: decoded.txid,
                ref_block_bytes: decoded.ref_block_bytes,
                ref_block_hash: decoded.ref_block_hash,
                expiration: decoded.expiration,
            }),
            Err(_) => Err(transfer),
        },
    }
}

/// [`stamp`], checked against the txid the signed transaction claims.
pub fn parse_stamp(signed: &SignedTransaction) -> Result<Stamp, ChainError> {
    let stamp = stamp(&signed.raw)?;
    if stamp.txid != signed.txid {
        return Err(ChainError::permanent(format!(
            "the bytes hash to {}, not to the txid {} they came with",
            stamp.txid, signed.txid
        )));
    }
    Ok(stamp)
}

/// [`parse`], and a TRC-20 call's `fee_limit` at most `fee_limit_cap` (sun): refused above
/// it, as bytes that could burn more than allowed.
pub fn parse_capped(signed: &SignedTransaction, fee_limit_cap: i64) -> Result<Decoded, ChainError> {
    let decoded = parse(signed)?;
    if decoded.fee_limit > fee_limit_cap {
        return Err(ChainError::permanent(format!(
            "the fee limit {} sun is above the cap of {fee_limit_cap} sun",
            decoded.fee_limit
        )));
    }
    Ok(decoded)
}

/// [`decode`], checked against the txid the signed transaction claims.
pub fn parse(signed: &SignedTransaction) -> Result<Decoded, ChainError> {
    let decoded = decode(&signed.raw)?;
    if decoded.txid != signed.txid {
        return Err(ChainError::permanent(format!(
            "the bytes hash to {}, not to the txid {} they came with",
            decoded.txid, signed.txid
        )));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPIENT: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";
    const USDT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
    /// The address of private key 0x00…01.
    const KEY_ONE: &str = "TMVQGm1qAQYVdetCeGRRkTWYYrLXuHK2HC";

    fn tron(text: &str) -> Address {
        Address::parse(Chain::Tron, Network::Mainnet, text).unwrap()
    }

    fn payment(asset: Asset, amount: u128) -> Payment {
        Payment {
            from_index: 0,
            from: tron(KEY_ONE),
            to: tron(RECIPIENT),
            asset,
            amount: Amount::from_u128(amount),
        }
    }

    fn window() -> Window {
        Window {
            ref_block: RefBlock::from_hex(
                "0000000003b9aca0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e",
            )
            .unwrap(),
            timestamp: 1_900_000_000_000,
            expiration: 1_900_000_060_000,
            fee_limit: 30_000_000,
        }
    }

    fn key_one_signature(digest: [u8; 32]) -> [u8; 65] {
        let mut secret = [0u8; 32];
        secret[31] = 1;
        let key = secp256k1::SecretKey::from_slice(&secret).unwrap();
        let (id, compact) = secp256k1::SECP256K1
            .sign_ecdsa_recoverable(&secp256k1::Message::from_digest(digest), &key)
            .serialize_compact();
        let mut bytes = [0u8; 65];
        bytes[..64].copy_from_slice(&compact);
        bytes[64] = u8::try_from(id.to_i32()).unwrap();
        bytes
    }

    #[test]
    fn the_reference_block_is_cut_from_the_block_id() {
        let block = window().ref_block;
        assert_eq!(block.number(), 62_500_000);
        assert_eq!(block.ref_block_bytes(), [0xac, 0xa0]);
        assert_eq!(hex::encode(block.ref_block_hash()), "a1b2c3d4e5f6a7b8");
        assert!(RefBlock::from_hex("00").is_err());
        assert!(RefBlock::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn bad_payments_and_windows_build_nothing() {
        let usdt = Asset::Token(tron(USDT));
        let cases: Vec<(Payment, Window, &str)> = vec![
            (payment(Asset::Native, 0), window(), "more than zero"),
            (
                payment(Asset::Native, u128::from(u64::MAX)),
                window(),
                "does not fit",
            ),
            (
                Payment {
                    to: tron(KEY_ONE),
                    ..payment(Asset::Native, 1)
                },
                window(),
                "same address",
            ),
            (
                payment(usdt.clone(), 1),
                Window {
                    fee_limit: 0,
                    ..window()
                },
                "fee limit",
            ),
            (
                payment(Asset::Native, 1),
                Window {
                    expiration: window().timestamp,
                    ..window()
                },
                "expiration",
            ),
            (
                payment(usdt, 1),
                Window {
                    expiration: window().timestamp + EXPIRATION_MAX_MS + 1,
                    ..window()
                },
                "24 hours",
            ),
        ];
        for (payment, window, expected) in cases {
            let error = build(&payment, &window).unwrap_err();
            assert!(error.message.contains(expected), "{error} for {payment:?}");
            assert!(!error.retriable);
        }
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        let unsigned = build(&payment(Asset::Native, 1_000_000), &window()).unwrap();
        let mut other = key_one_signature(unsigned.txid());
        // The same r and s with the other recovery id recover another key.
        other[64] ^= 1;
        let error = attach(unsigned.clone(), &other).unwrap_err();
        assert!(error.message.contains("not by the sender"), "{error}");
        let signed = attach(
            unsigned,
            &key_one_signature(
                build(&payment(Asset::Native, 1_000_000), &window())
                    .unwrap()
                    .txid(),
            ),
        )
        .unwrap();
        assert_eq!(
            signed.txid,
            "5ff0441e5da914a324ec45d082373ce5f53b7aade7cad13a1b67fb3b166fc7eb"
        );
    }

    #[test]
    fn tampered_bytes_do_not_parse() {
        let payment = payment(Asset::Token(tron(USDT)), 2_500_000);
        let unsigned = build(&payment, &window()).unwrap();
        let signature = key_one_signature(unsigned.txid());
        let signed = attach(unsigned, &signature).unwrap();
        let decoded = parse(&signed).unwrap();
        assert!(decoded.parsed.matches(&payment));
        assert_eq!(decoded.expiration, 1_900_000_060_000);
        assert_eq!(decoded.fee_limit, 30_000_000);

        // Any changed byte of the raw data changes the txid, and the signature no longer
        // recovers the owner (or the bytes no longer decode).
        for position in 0..decoded.raw_data.len() {
            let mut raw = signed.raw.clone();
            // The envelope starts with the raw data's tag and a two-byte length.
            raw[3 + position] ^= 0x01;
            let tampered = SignedTransaction {
                txid: signed.txid.clone(),
                raw,
            };
            assert!(parse(&tampered).is_err(), "byte {position} changed");
        }
        // A txid that is not the bytes' own.
        let wrong = SignedTransaction {
            txid: "00".repeat(32),
            raw: signed.raw.clone(),
        };
        assert!(parse(&wrong).unwrap_err().message.contains("hash to"));
        // Trailing garbage and a second signature.
        let mut longer = signed.raw.clone();
        longer.extend_from_slice(&[0x12, 0x41]);
        longer.extend_from_slice(&signature);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn a_fee_limit_above_the_cap_is_refused() {
        let payment = payment(Asset::Token(tron(USDT)), 2_500_000);
        let unsigned = build(&payment, &window()).unwrap();
        let signature = key_one_signature(unsigned.txid());
        let signed = attach(unsigned, &signature).unwrap();
        // The window's fee limit is 30 TRX.
        assert!(parse_capped(&signed, 30_000_000).is_ok());
        assert!(parse_capped(&signed, 100_000_000).is_ok());
        let error = parse_capped(&signed, 29_999_999).unwrap_err();
        assert!(error.message.contains("above the cap"), "{error}");
        assert!(!error.retriable);
    }
}
