//! A TRON full node SIMULATION. No TRON node can run on these machines, so this answers
//! java-tron's HTTP API (the paths the `chain-tron` client uses) over a small in-memory
//! ledger. It is not a TRON node and says so wherever it shows: its startup log, the
//! `x-simulation` header on every answer, and `coinsensei up --devnet`'s banner.
//!
//! Every answer is one of the real response bodies recorded in
//! `crates/chain-tron/fixtures/recorded` (their sources are in that directory's README),
//! compiled in and adapted: numbers, ids and balances changed, keys and layout kept. It keeps
//! TRX and USDT balances, checks the signature of every broadcast transaction against the
//! account it spends from, and answers with the node's own error codes in the node's order
//! (TaPoS, expiration, then duplicate: java-tron's `Manager.processTransaction` runs
//! `validateTapos`, `validateCommon`, `validateDup`).
//!
//! Stake 2.0: accounts can hold TRX staked for energy (FreezeBalanceV2's state, set by
//! [`Ledger::stake_energy`]), lend its energy by `DelegateResourceContract` and take it back by
//! `UnDelegateResourceContract` (checked at broadcast against what can be lent, refused with the
//! recorded error texts), and the node answers `getcandelegatedmaxsize`,
//! `getdelegatedresourcev2`, `getaccountresource` and `getaccount` from that state. With
//! [`Ledger::fees`] on, it charges as java-tron does: a transaction's bandwidth from the
//! sender's free daily bandwidth (600 bytes, never renewed here) or burned at
//! `getTransactionFee` per byte; a TRX transfer that creates its recipient burns the creation
//! fees; a TRC-20 transfer uses the sender's energy (staked or delegated) and burns
//! `getEnergyFee` per unit it lacks, up to its `fee_limit` (else it lands `OUT_OF_ENERGY`); and
//! nothing but a TRX transfer may come from an account that does not exist. Off (the default),
//! it charges nothing, as the withdrawal tests' ledgers expect.
//!
//! Blocks carry their transactions (in the shapes of the recorded mainnet block), the
//! solidity endpoints (`/walletsolidity/*`) serve the chain up to the solidified head only
//! ([`SOLIDIFIED_LAG`] blocks behind), its accounts' TRX and USDT balances as that block left
//! them (`getaccount`, `triggerconstantcontract` `balanceOf`; resources as they are now), and
//! the solidity node's transaction index can be made
//! to lag (`unindexed`), answering `{}` for transactions its blocks hold. Tests drive its
//! faults through the shared [`Ledger`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chain::address::{Address, Network};
use chain::provider::Asset;
use chain_tron::transaction::{self, RefBlock};
use domain::Chain;
use serde_json::{Value, json};

/// The TRC-20 token the simulation keeps balances of: mainnet's USDT contract, so the
/// mainnet asset catalogue pays it unchanged.
pub const USDT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
/// An address of nobody's here, for tests.
pub const RECIPIENT: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";
/// How far the solidified block trails the head (mainnet's 19 of 27 witnesses).
pub const SOLIDIFIED_LAG: u64 = 19;
/// A block every 3 s, as on TRON.
pub const BLOCK_MS: i64 = 3_000;

/// Block 0's time: the simulated chain's head (block 100 at the start) is now, as the
/// transactions' timestamps come from the clock.
pub fn genesis_ms() -> i64 {
    static GENESIS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *GENESIS.get_or_init(|| now_ms() - 100 * BLOCK_MS)
}

/// A recorded body, compiled in (so the simulation runs from the binary alone).
macro_rules! fixture_entry {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../chain-tron/fixtures/recorded/", $name)),
        )
    };
}

/// The recorded answers the simulation adapts, by file name.
const FIXTURES: &[(&str, &str)] = &[
    fixture_entry!("wallet_broadcasttransaction.bandwith_error.json"),
    fixture_entry!("wallet_broadcasttransaction.contract_validate_error.json"),
    fixture_entry!("wallet_broadcasttransaction.sigerror.json"),
    fixture_entry!("wallet_broadcasttransaction.success_shasta_trx.json"),
    fixture_entry!("wallet_broadcasttransaction.tapos_error.json"),
    fixture_entry!("wallet_broadcasttransaction.transaction_expiration_error.json"),
    fixture_entry!("wallet_delegateresource.error_energy_not_available_nile.json"),
    fixture_entry!("wallet_getaccount.local_node_visible_true.json"),
    fixture_entry!("wallet_getaccount.mainnet_acquired_delegated_energy_visible_true.json"),
    fixture_entry!("wallet_getaccount.mainnet_delegator_frozenV2_visible_true.json"),
    fixture_entry!("wallet_getaccountresource.mainnet_acquired_energy_visible_true.json"),
    fixture_entry!("wallet_getcandelegatedmaxsize.nile_zero_empty.json"),
    fixture_entry!("wallet_getcandelegatedmaxsize.private_net_energy_wallet_cli.json"),
    fixture_entry!("wallet_getdelegatedresourcev2.nile_none_empty.json"),
    fixture_entry!("wallet_getdelegatedresourcev2.private_net_unlocked_wallet_cli.json"),
    fixture_entry!("wallet_gettransactionbyid.private_net_delegateresource_lock_wallet_cli.json"),
    fixture_entry!("wallet_undelegateresource.error_not_exist_nile.json"),
    fixture_entry!("wallet_getaccount.unactivated_empty.json"),
    fixture_entry!("wallet_getaccountresource.nile.json"),
    fixture_entry!("wallet_getaccountresource.unactivated_empty.json"),
    fixture_entry!("wallet_getblockbylimitnext.nile_first_block_transactions_elided.json"),
    fixture_entry!("wallet_getblockbynum.mainnet_transfer_and_usdt_abridged.json"),
    fixture_entry!("wallet_getchainparameters.mainnet_2022_chainParameter_array_only.json"),
    fixture_entry!("wallet_getchainparameters.nile_first8_truncated.json"),
    fixture_entry!("wallet_getnowblock.nile_header_transactions_elided.json"),
    fixture_entry!("wallet_gettransactioninfobyid.mainnet_trx_transfer.json"),
    fixture_entry!("wallet_gettransactioninfobyid.mainnet_usdt_out_of_energy.json"),
    fixture_entry!("wallet_gettransactioninfobyid.mainnet_usdt_transfer_success.json"),
    fixture_entry!("wallet_triggerconstantcontract.nile_usdt_balanceOf.json"),
    fixture_entry!("wallet_triggerconstantcontract.transfer_estimate_energy_used.json"),
];

/// The recorded body `name` (one of the files the simulation compiles in), parsed.
///
/// # Panics
/// On a name it does not hold: a programming error of this crate, caught by its tests.
pub fn fixture(name: &str) -> Value {
    let (_, text) = FIXTURES
        .iter()
        .find(|(known, _)| *known == name)
        .unwrap_or_else(|| panic!("the simulation holds no recorded answer {name}"));
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// A mainnet base58 TRON address.
///
/// # Panics
/// When `text` is not one (for tests and constants).
pub fn addr(text: &str) -> Address {
    Address::parse(Chain::Tron, Network::Mainnet, text).unwrap()
}

/// The 21-byte hex (`41…`) of a TRON address.
///
/// # Panics
/// When `address` is not a TRON address.
pub fn hex21(address: &Address) -> String {
    hex::encode(address.tron_bytes().unwrap())
}

/// Block `number`'s id: its number, then bytes that differ from block to block (as a real
/// hash does), so a block 65,536 later with the same low bits has another `ref_block_hash`.
pub fn block_id(number: u64) -> String {
    let mut id = [0x5au8; 32];
    id[..8].copy_from_slice(&number.to_be_bytes());
    id[8..16].copy_from_slice(&number.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    hex::encode(id)
}

/// When block `number` was (or will be) made.
pub fn block_time(number: u64) -> i64 {
    let number = i64::try_from(number).unwrap_or(i64::MAX);
    genesis_ms().saturating_add(number.saturating_mul(BLOCK_MS))
}

/// A transaction the simulation holds: a transfer, or a Stake 2.0 (un)delegation of energy.
#[derive(Debug, Clone)]
pub enum Tx {
    Transfer(transaction::Decoded),
    Delegation(transaction::DecodedDelegation),
}

impl Tx {
    fn expiration(&self) -> i64 {
        match self {
            Tx::Transfer(decoded) => decoded.expiration,
            Tx::Delegation(decoded) => decoded.expiration,
        }
    }

    fn stamp(&self) -> ([u8; 2], [u8; 8], i64, i64, &[u8]) {
        match self {
            Tx::Transfer(d) => (
                d.ref_block_bytes,
                d.ref_block_hash,
                d.expiration,
                d.timestamp,
                &d.raw_data,
            ),
            Tx::Delegation(d) => (
                d.ref_block_bytes,
                d.ref_block_hash,
                d.expiration,
                d.timestamp,
                &d.raw_data,
            ),
        }
    }

    /// The 21-byte hex of the account that signs and pays.
    fn owner(&self) -> String {
        match self {
            Tx::Transfer(decoded) => hex21(&decoded.parsed.from),
            Tx::Delegation(decoded) => hex21(&decoded.delegation.owner),
        }
    }
}

/// What a mined transaction used and burned (its receipt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    /// Every sun burned.
    pub fee: u64,
    /// Energy from the account's own or delegated energy.
    pub energy_usage: u64,
    pub energy_fee: u64,
    pub energy_total: u64,
    /// Bytes from the free daily bandwidth.
    pub net_usage: u64,
    pub net_fee: u64,
}

/// TRX and USDT balances by 21-byte hex address, as a block left them.
pub type Balances = (HashMap<String, u64>, HashMap<String, u128>);

/// The simulated chain: balances, the pool of broadcast transactions, the blocks, and the
/// switches tests turn to make the node misbehave.
#[derive(Default)]
pub struct Ledger {
    pub head: u64,
    /// TRX balances by 21-byte hex address.
    pub trx: HashMap<String, u64>,
    pub usdt: HashMap<String, u128>,
    /// Broadcast, not yet in a block.
    pub pool: Vec<(String, Tx)>,
    /// Included transactions: txid → block number.
    pub included: HashMap<String, u64>,
    /// The transactions of each block, in order.
    pub blocks: HashMap<u64, Vec<(String, Tx)>>,
    /// Token transfers by block, for gettransactioninfobyblocknum.
    pub infos: HashMap<u64, Vec<Value>>,
    /// The solidity node's transaction index lags: `walletsolidity/gettransactioninfobyid`
    /// answers `{}` whatever its blocks hold.
    pub unindexed: bool,
    /// TRC-20 transfers mined from now on run out of energy: in their block with
    /// `contractRet: OUT_OF_ENERGY`, no balance moved, no log.
    pub fail_tokens: bool,
    /// The transactions that failed so.
    pub failed: std::collections::HashSet<String>,
    /// Broadcasts never reach the node (it answers 503): the process that sent them might as
    /// well have crashed before sending.
    pub broadcasts_down: bool,
    /// A block the solidity node leaves out of its `getblockbylimitnext` pages.
    pub hidden: Option<u64>,
    /// Blocks are printed without their transactions (their `txTrieRoot` still says they
    /// have some), as a node or proxy that trims its answers would.
    pub elide_transactions: bool,
    /// How many times each path was asked.
    pub calls: HashMap<String, u64>,
    /// Broadcasts the node took (not duplicates).
    pub accepted: u64,
    /// Charge bandwidth, energy and account creation as java-tron does (module docs).
    pub fees: bool,
    /// Sun staked for energy by FreezeBalanceV2 and not lent out, by account.
    pub staked_energy: HashMap<String, u64>,
    /// Staked sun whose energy `from` lends `to`, by (from, to).
    pub delegated: HashMap<(String, String), u64>,
    /// Energy used, by account (never renewed here).
    pub energy_used: HashMap<String, u64>,
    /// Free bandwidth used, by account (never renewed here).
    pub free_net_used: HashMap<String, u64>,
    /// What each mined transaction used and burned, with [`Ledger::fees`].
    pub charges: HashMap<String, Charge>,
    /// The signed size of each pooled or mined transaction plus java-tron's 64 bytes of
    /// result (what its bandwidth counts).
    pub sizes: HashMap<String, u64>,
    /// TRX and USDT balances as each recent block left them (taken when it is mined: what a
    /// test set directly shows from the next block), for the solidity node's
    /// `walletsolidity/getaccount` and `balanceOf`, which answer as of the solidified block.
    pub states: std::collections::BTreeMap<u64, Balances>,
}

/// java-tron's allowance of result bytes counted in every transaction's bandwidth.
pub const RESULT_BYTES: u64 = 64;

/// The chain's parameters as the simulation answers them: the truncated Nile list, with the
/// energy price and the account-creation bandwidth rate taken from the mainnet list.
fn chain_parameters() -> Value {
    let mut parameters = fixture("wallet_getchainparameters.nile_first8_truncated.json");
    let mainnet = fixture("wallet_getchainparameters.mainnet_2022_chainParameter_array_only.json");
    let wanted = ["getEnergyFee", "getCreateNewAccountBandwidthRate"];
    let extra: Vec<Value> = mainnet
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| wanted.iter().any(|key| entry["key"] == *key))
        .cloned()
        .collect();
    if let Some(list) = parameters["chainParameter"].as_array_mut() {
        list.extend(extra);
    }
    parameters
}

/// One chain parameter's value (0 when absent, as the node prints a zero).
pub fn chain_parameter(key: &str) -> u64 {
    chain_parameters()["chainParameter"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["key"] == key)
        .and_then(|entry| entry["value"].as_u64())
        .unwrap_or(0)
}

/// The network's energy totals (`TotalEnergyLimit`, `TotalEnergyWeight` in whole TRX) and the
/// daily free bandwidth (`freeNetLimit`), from the recorded Nile `getaccountresource`.
pub fn energy_totals() -> (u64, u64, u64) {
    let recorded = fixture("wallet_getaccountresource.nile.json");
    let field = |name: &str| recorded[name].as_u64().unwrap_or(0);
    (
        field("TotalEnergyLimit"),
        field("TotalEnergyWeight"),
        field("freeNetLimit"),
    )
}

/// The energy `staked` sun gives (java-tron: whole TRX × limit / weight).
pub fn energy_of_stake(staked: u64) -> u64 {
    let (limit, weight, _) = energy_totals();
    let energy = u128::from(staked / 1_000_000) * u128::from(limit) / u128::from(weight.max(1));
    u64::try_from(energy).unwrap_or(u64::MAX)
}

/// The staked sun that `energy` used energy stands for (rounded up).
pub fn stake_of_energy(energy: u64) -> u64 {
    let (limit, weight, _) = energy_totals();
    let trx = (u128::from(energy) * u128::from(weight)).div_ceil(u128::from(limit.max(1)));
    u64::try_from(trx * 1_000_000).unwrap_or(u64::MAX)
}

/// A broadcast refused by the contract's validation: the recorded body, with java-tron's
/// message (`Contract validate error : ` and the validator's text, hex) for `text`.
fn contract_validate(text: &str) -> Value {
    let mut body = fixture("wallet_broadcasttransaction.contract_validate_error.json");
    body["message"] = json!(hex::encode(format!("Contract validate error : {text}")));
    body
}

/// The validator's text of a recorded builder error (`{"Error": "class … : text"}`).
fn recorded_text(name: &str) -> String {
    let body = fixture(name);
    let error = body["Error"].as_str().unwrap_or_default();
    error
        .split_once(" : ")
        .map_or(error, |(_, text)| text)
        .to_string()
}

/// A transaction entry of a block, in the recorded mainnet block's shape (its signature is
/// the template's: the fake checks signatures at broadcast, not here).
fn block_transaction(txid: &str, tx: &Tx, failed: bool) -> Value {
    let decoded = match tx {
        Tx::Transfer(decoded) => decoded,
        Tx::Delegation(decoded) => return delegation_transaction(txid, decoded),
    };
    let template = fixture("wallet_getblockbynum.mainnet_transfer_and_usdt_abridged.json");
    let parsed = &decoded.parsed;
    let mut entry = match &parsed.asset {
        Asset::Native => {
            let mut entry = template["transactions"][0].clone();
            let value = &mut entry["raw_data"]["contract"][0]["parameter"]["value"];
            value["amount"] = json!(u64::try_from(parsed.amount.base_units()).unwrap());
            value["owner_address"] = json!(hex21(&parsed.from));
            value["to_address"] = json!(hex21(&parsed.to));
            entry
        }
        Asset::Token(token) => {
            let mut entry = template["transactions"][1].clone();
            let value = &mut entry["raw_data"]["contract"][0]["parameter"]["value"];
            value["owner_address"] = json!(hex21(&parsed.from));
            value["contract_address"] = json!(hex21(token));
            value["data"] = json!(format!(
                "a9059cbb{:0>64}{:064x}",
                &hex21(&parsed.to)[2..],
                parsed.amount.base_units()
            ));
            entry["raw_data"]["fee_limit"] = json!(decoded.fee_limit);
            entry
        }
    };
    entry["txID"] = json!(txid);
    if failed {
        entry["ret"][0]["contractRet"] = json!("OUT_OF_ENERGY");
    }
    let raw = &mut entry["raw_data"];
    raw["ref_block_bytes"] = json!(hex::encode(decoded.ref_block_bytes));
    raw["ref_block_hash"] = json!(hex::encode(decoded.ref_block_hash));
    raw["expiration"] = json!(decoded.expiration);
    raw["timestamp"] = json!(decoded.timestamp);
    entry["raw_data_hex"] = json!(hex::encode(&decoded.raw_data));
    entry
}

/// A delegation's entry of a block, in the shape of the recorded confirmed
/// `DelegateResourceContract` (hex addresses), unlocked (no `lock` key) and of energy.
fn delegation_transaction(txid: &str, decoded: &transaction::DecodedDelegation) -> Value {
    let mut entry =
        fixture("wallet_gettransactionbyid.private_net_delegateresource_lock_wallet_cli.json");
    let delegation = &decoded.delegation;
    let contract = &mut entry["raw_data"]["contract"][0];
    let (kind, url) = if delegation.reclaim {
        (
            "UnDelegateResourceContract",
            "type.googleapis.com/protocol.UnDelegateResourceContract",
        )
    } else {
        (
            "DelegateResourceContract",
            "type.googleapis.com/protocol.DelegateResourceContract",
        )
    };
    contract["type"] = json!(kind);
    contract["parameter"]["type_url"] = json!(url);
    contract["parameter"]["value"] = json!({
        "balance": delegation.balance,
        "resource": "ENERGY",
        "receiver_address": hex21(&delegation.receiver),
        "owner_address": hex21(&delegation.owner),
    });
    entry["txID"] = json!(txid);
    let raw = &mut entry["raw_data"];
    raw["ref_block_bytes"] = json!(hex::encode(decoded.ref_block_bytes));
    raw["ref_block_hash"] = json!(hex::encode(decoded.ref_block_hash));
    raw["expiration"] = json!(decoded.expiration);
    raw["timestamp"] = json!(decoded.timestamp);
    entry["raw_data_hex"] = json!(hex::encode(&decoded.raw_data));
    entry
}

impl Ledger {
    /// A ledger at block 100 where `owner` holds 50 TRX and 10 USDT.
    pub fn funded(owner: &Address) -> Ledger {
        let mut ledger = Ledger {
            head: 100,
            ..Ledger::default()
        };
        ledger.trx.insert(hex21(owner), 50_000_000);
        ledger.usdt.insert(hex21(owner), 10_000_000);
        ledger
    }

    /// Block `number` in the node's shape (the Nile header fixture with its numbers
    /// replaced), with its transactions; a block without any has no `transactions` key.
    pub fn block(&self, number: u64) -> Value {
        let mut block = fixture("wallet_getnowblock.nile_header_transactions_elided.json");
        block["blockID"] = json!(block_id(number));
        let raw = &mut block["block_header"]["raw_data"];
        raw["number"] = json!(number);
        raw["parentHash"] = json!(block_id(number.saturating_sub(1)));
        raw["timestamp"] = json!(block_time(number));
        let transactions = self.blocks.get(&number).filter(|list| !list.is_empty());
        if transactions.is_none() {
            // java-tron's root of no transactions.
            raw["txTrieRoot"] = json!("0".repeat(64));
        }
        if let Some(transactions) = transactions.filter(|_| !self.elide_transactions) {
            block["transactions"] = json!(
                transactions
                    .iter()
                    .map(|(txid, decoded)| {
                        block_transaction(txid, decoded, self.failed.contains(txid))
                    })
                    .collect::<Vec<_>>()
            );
        }
        block
    }

    /// Puts the pool into a new head block; a transaction whose expiration is not after the
    /// parent's time is dropped, as java-tron's `validateCommon` does, and so is one that no
    /// longer passes validation.
    pub fn mine(&mut self) {
        let parent_time = block_time(self.head);
        self.head += 1;
        let mut in_block = Vec::new();
        for (txid, tx) in std::mem::take(&mut self.pool) {
            if tx.expiration() <= parent_time {
                continue;
            }
            // Checked at broadcast, but two pooled transactions may together spend more than
            // the account holds: the one that no longer fits is dropped, as a node's block
            // production drops a transaction that fails validation.
            if self.refusal(&txid, &tx).is_some() {
                continue;
            }
            self.included.insert(txid.clone(), self.head);
            self.apply(&txid, &tx);
            in_block.push((txid, tx));
        }
        self.blocks.insert(self.head, in_block);
        self.states
            .insert(self.head, (self.trx.clone(), self.usdt.clone()));
        // Only the newest state at or below the solidified block is ever read again.
        let solidified = self.solidified();
        if let Some(&keep) = self.states.range(..=solidified).next_back().map(|(n, _)| n) {
            self.states = self.states.split_off(&keep);
        }
    }

    /// The balances as of the solidified block (none before any block is solidified).
    pub fn solidified_state(&self) -> Balances {
        self.states
            .range(..=self.solidified())
            .next_back()
            .map(|(_, state)| state.clone())
            .unwrap_or_default()
    }

    /// What broadcasting `tx` is refused with now (the node's answer), if anything: the
    /// contract's validation, then its bandwidth.
    fn refusal(&self, txid: &str, tx: &Tx) -> Option<Value> {
        let owner = tx.owner();
        let exists = self.trx.contains_key(&owner);
        let balance = self.trx.get(&owner).copied().unwrap_or(0);
        // What the transaction itself takes from the balance before bandwidth.
        let mut spends: u64 = 0;
        let mut creates = false;
        match tx {
            Tx::Transfer(decoded) => {
                let amount = amount_of(decoded);
                match &decoded.parsed.asset {
                    Asset::Native => {
                        if self.trx_of(&owner) < amount {
                            return Some(contract_validate("balance is not sufficient."));
                        }
                        spends = u64::try_from(amount).unwrap_or(u64::MAX);
                        creates = !self.trx.contains_key(&hex21(&decoded.parsed.to));
                    }
                    Asset::Token(_) => {
                        if self.usdt.get(&owner).copied().unwrap_or(0) < amount {
                            return Some(contract_validate("balance is not sufficient."));
                        }
                        if self.fees && !exists {
                            return Some(contract_validate(&format!(
                                "Validate TriggerSmartContract error, no OwnerAccount[{owner}]"
                            )));
                        }
                    }
                }
            }
            Tx::Delegation(decoded) => {
                let delegation = &decoded.delegation;
                let receiver = hex21(&delegation.receiver);
                if !exists {
                    return Some(contract_validate(&format!(
                        "Account[{owner}] does not exist"
                    )));
                }
                if delegation.reclaim {
                    let lent = self
                        .delegated
                        .get(&(owner.clone(), receiver))
                        .copied()
                        .unwrap_or(0);
                    if lent == 0 {
                        return Some(contract_validate(&recorded_text(
                            "wallet_undelegateresource.error_not_exist_nile.json",
                        )));
                    }
                    if lent < delegation.balance {
                        // java-tron's text (issue #5608), as the fixtures' README derives it.
                        return Some(contract_validate(&format!(
                            "insufficient delegateFrozenBalance(Energy), request={}, unlock_balance={lent}",
                            delegation.balance
                        )));
                    }
                } else {
                    if !self.trx.contains_key(&receiver) {
                        return Some(contract_validate(&format!(
                            "Account[{receiver}] not exists"
                        )));
                    }
                    if self.delegatable(&owner) < delegation.balance {
                        return Some(contract_validate(&recorded_text(
                            "wallet_delegateresource.error_energy_not_available_nile.json",
                        )));
                    }
                }
            }
        }
        if !self.fees {
            return None;
        }
        let left = balance.saturating_sub(spends);
        let burn = if creates {
            chain_parameter("getCreateAccountFee")
                .saturating_add(chain_parameter("getCreateNewAccountFeeInSystemContract"))
        } else if self.free_net_left(&owner) >= self.size(txid) {
            0
        } else {
            self.size(txid)
                .saturating_mul(chain_parameter("getTransactionFee"))
        };
        if burn > left {
            let mut body = fixture("wallet_broadcasttransaction.bandwith_error.json");
            body["txid"] = json!(txid);
            return Some(body);
        }
        None
    }

    fn size(&self, txid: &str) -> u64 {
        self.sizes.get(txid).copied().unwrap_or(0)
    }

    fn free_net_left(&self, account: &str) -> u64 {
        let (_, _, free) = energy_totals();
        free.saturating_sub(self.free_net_used.get(account).copied().unwrap_or(0))
    }

    /// Sun staked for energy by `account` and not lent (its own, FreezeBalanceV2).
    pub fn staked(&self, account: &str) -> u64 {
        self.staked_energy.get(account).copied().unwrap_or(0)
    }

    /// Sun of stake lent to `account` by others.
    pub fn acquired(&self, account: &str) -> u64 {
        self.delegated
            .iter()
            .filter(|((_, to), _)| to == account)
            .map(|(_, sun)| *sun)
            .sum()
    }

    /// `account`'s energy limit: what its own and acquired stake give.
    pub fn energy_limit(&self, account: &str) -> u64 {
        energy_of_stake(self.staked(account).saturating_add(self.acquired(account)))
    }

    /// Energy `account` can use now.
    pub fn energy_available(&self, account: &str) -> u64 {
        self.energy_limit(account)
            .saturating_sub(self.energy_used.get(account).copied().unwrap_or(0))
    }

    /// What `getcandelegatedmaxsize` answers for energy: the account's own stake less what
    /// its used energy stands for.
    pub fn delegatable(&self, account: &str) -> u64 {
        let used = self.energy_used.get(account).copied().unwrap_or(0);
        self.staked(account).saturating_sub(stake_of_energy(used))
    }

    /// `getaccount` of an existing account: the recorded local node's shape, with Stake 2.0's
    /// fields in the recorded mainnet delegator's and receiver's shapes when it has any.
    fn account_json(&self, body: &Value, key: &str, balance: u64) -> Value {
        let mut account = fixture("wallet_getaccount.local_node_visible_true.json");
        account["address"] = body["address"].clone();
        account["balance"] = json!(balance);
        let staked = self.staked(key);
        let lent: u64 = self
            .delegated
            .iter()
            .filter(|((from, _), _)| from == key)
            .map(|(_, sun)| *sun)
            .sum();
        let acquired = self.acquired(key);
        if staked > 0 || lent > 0 || acquired > 0 {
            let mut energy = json!({"type": "ENERGY"});
            if staked > 0 {
                energy["amount"] = json!(staked);
            }
            account["frozenV2"] = json!([{}, energy, {"type": "TRON_POWER"}]);
            let mut resource = json!({});
            if lent > 0 {
                let delegator =
                    fixture("wallet_getaccount.mainnet_delegator_frozenV2_visible_true.json");
                resource = delegator["account_resource"].clone();
                resource["delegated_frozenV2_balance_for_energy"] = json!(lent);
            }
            if acquired > 0 {
                let receiver = fixture(
                    "wallet_getaccount.mainnet_acquired_delegated_energy_visible_true.json",
                );
                if resource.as_object().is_some_and(serde_json::Map::is_empty) {
                    resource = receiver["account_resource"].clone();
                }
                resource["acquired_delegated_frozenV2_balance_for_energy"] = json!(acquired);
            }
            if resource
                .as_object()
                .is_some_and(|object| !object.is_empty())
            {
                account["account_resource"] = resource;
            }
        }
        account
    }

    /// `getaccountresource` from the ledger: `{}` for an account that does not exist, else the
    /// recorded Nile shape with this account's free bandwidth and energy (zeros left out).
    fn resources_json(&self, key: &str) -> Value {
        if !self.trx.contains_key(key) {
            return fixture("wallet_getaccountresource.unactivated_empty.json");
        }
        let mut answer = fixture("wallet_getaccountresource.nile.json");
        let (_, _, free) = energy_totals();
        let Some(object) = answer.as_object_mut() else {
            return answer;
        };
        let mut put = |name: &str, value: u64| {
            if value == 0 {
                object.remove(name);
            } else {
                object.insert(name.into(), json!(value));
            }
        };
        put("freeNetLimit", free);
        put(
            "freeNetUsed",
            self.free_net_used.get(key).copied().unwrap_or(0),
        );
        put("EnergyLimit", self.energy_limit(key));
        put(
            "EnergyUsed",
            self.energy_used.get(key).copied().unwrap_or(0),
        );
        answer
    }

    /// Stakes `sun` of `address`'s TRX for energy (FreezeBalanceV2's effect): from its
    /// balance, which must hold it.
    ///
    /// # Panics
    /// When the balance does not (a test's mistake).
    pub fn stake_energy(&mut self, address: &Address, sun: u64) {
        let key = hex21(address);
        let balance = self
            .trx
            .get_mut(&key)
            .expect("a staking account that exists");
        *balance = balance.checked_sub(sun).expect("the TRX to stake");
        *self.staked_energy.entry(key).or_default() += sun;
    }

    /// The energy a USDT transfer to `to` takes: the recorded simulation's, twice for a
    /// first-time holder (its balance slot is created).
    fn transfer_energy(&self, to: &str) -> u64 {
        let used = fixture("wallet_triggerconstantcontract.transfer_estimate_energy_used.json")
            ["energy_used"]
            .as_u64()
            .unwrap_or(0);
        if self.usdt.contains_key(to) {
            used
        } else {
            2 * used
        }
    }

    fn burn(&mut self, account: &str, sun: u64) {
        let balance = self.trx.entry(account.to_string()).or_default();
        *balance = balance.saturating_sub(sun);
    }

    /// Mines `tx`, which passed [`Ledger::refusal`]: its effect and, with fees, its charge.
    fn apply(&mut self, txid: &str, tx: &Tx) {
        let owner = tx.owner();
        let mut charge = Charge::default();
        if self.fees {
            let creates = matches!(tx, Tx::Transfer(d) if matches!(d.parsed.asset, Asset::Native)
                && !self.trx.contains_key(&hex21(&d.parsed.to)));
            let size = self.size(txid);
            if creates {
                charge.net_fee = chain_parameter("getCreateAccountFee");
                charge.fee = charge
                    .net_fee
                    .saturating_add(chain_parameter("getCreateNewAccountFeeInSystemContract"));
            } else if self.free_net_left(&owner) >= size {
                *self.free_net_used.entry(owner.clone()).or_default() += size;
                charge.net_usage = size;
            } else {
                charge.net_fee = size.saturating_mul(chain_parameter("getTransactionFee"));
                charge.fee = charge.net_fee;
            }
            self.burn(&owner, charge.fee);
        }
        match tx {
            Tx::Transfer(decoded) => {
                let from = owner.clone();
                let to = hex21(&decoded.parsed.to);
                let amount = amount_of(decoded);
                match &decoded.parsed.asset {
                    Asset::Native => {
                        let sun = u64::try_from(amount).unwrap_or(u64::MAX);
                        *self.trx.entry(from).or_default() -= sun;
                        *self.trx.entry(to).or_default() += sun;
                    }
                    Asset::Token(token) => {
                        let mut out_of_energy = self.fail_tokens;
                        if self.fees {
                            let needed = self.transfer_energy(&to);
                            let own = self.energy_available(&from).min(needed);
                            let price = chain_parameter("getEnergyFee");
                            let burn = (needed - own).saturating_mul(price);
                            let limit = u64::try_from(decoded.fee_limit).unwrap_or(0);
                            let balance = self.trx.get(&from).copied().unwrap_or(0);
                            if burn > limit || burn > balance {
                                // It runs until its energy ends: all it may burn is burned.
                                out_of_energy = true;
                                charge.energy_fee = limit.min(balance);
                                charge.energy_usage = own;
                                charge.energy_total = own + charge.energy_fee / price.max(1);
                            } else {
                                charge.energy_fee = burn;
                                charge.energy_usage = own;
                                charge.energy_total = needed;
                            }
                            *self.energy_used.entry(from.clone()).or_default() +=
                                charge.energy_usage;
                            self.burn(&from, charge.energy_fee);
                            charge.fee = charge.fee.saturating_add(charge.energy_fee);
                        }
                        if out_of_energy {
                            let mut info = fixture(
                                "wallet_gettransactioninfobyid.mainnet_usdt_out_of_energy.json",
                            );
                            info["id"] = json!(txid);
                            info["blockNumber"] = json!(self.head);
                            info["blockTimeStamp"] = json!(block_time(self.head));
                            self.infos.entry(self.head).or_default().push(info);
                            self.failed.insert(txid.to_string());
                        } else {
                            *self.usdt.entry(from.clone()).or_default() -= amount;
                            *self.usdt.entry(to.clone()).or_default() += amount;
                            let mut info = fixture(
                                "wallet_gettransactioninfobyid.mainnet_usdt_transfer_success.json",
                            );
                            info["id"] = json!(txid);
                            info["blockNumber"] = json!(self.head);
                            info["blockTimeStamp"] = json!(block_time(self.head));
                            info["contract_address"] = json!(hex21(token));
                            let log = &mut info["log"][0];
                            log["address"] = json!(&hex21(token)[2..]);
                            log["topics"][1] = json!(format!("{:0>64}", &from[2..]));
                            log["topics"][2] = json!(format!("{:0>64}", &to[2..]));
                            log["data"] = json!(format!("{amount:064x}"));
                            self.infos.entry(self.head).or_default().push(info);
                        }
                    }
                }
            }
            Tx::Delegation(decoded) => {
                let delegation = &decoded.delegation;
                let receiver = hex21(&delegation.receiver);
                let key = (owner.clone(), receiver.clone());
                if delegation.reclaim {
                    // java-tron's UnDelegateResourceActuator: the receiver's used energy goes
                    // with the stake, in proportion, to the owner.
                    let receiver_stake = self.staked(&receiver) + self.acquired(&receiver);
                    let used = self.energy_used.get(&receiver).copied().unwrap_or(0);
                    let moved = if receiver_stake == 0 {
                        0
                    } else {
                        let share = u128::from(used) * u128::from(delegation.balance)
                            / u128::from(receiver_stake);
                        u64::try_from(share).unwrap_or(used)
                    };
                    *self.energy_used.entry(receiver.clone()).or_default() -= moved;
                    *self.energy_used.entry(owner.clone()).or_default() += moved;
                    let lent = self.delegated.entry(key.clone()).or_default();
                    *lent -= delegation.balance;
                    if *lent == 0 {
                        self.delegated.remove(&key);
                    }
                    *self.staked_energy.entry(owner).or_default() += delegation.balance;
                } else {
                    *self.staked_energy.entry(owner).or_default() -= delegation.balance;
                    *self.delegated.entry(key).or_default() += delegation.balance;
                }
            }
        }
        if self.fees {
            self.charges.insert(txid.to_string(), charge);
        }
    }

    fn trx_of(&self, address: &str) -> u128 {
        u128::from(self.trx.get(address).copied().unwrap_or(0))
    }

    /// Gives `address` `sun` more TRX and `usdt` more USDT (base units): a faucet.
    pub fn fund(&mut self, address: &Address, sun: u64, usdt: u128) {
        let key = hex21(address);
        let trx = self.trx.entry(key.clone()).or_default();
        *trx = trx.saturating_add(sun);
        let tokens = self.usdt.entry(key).or_default();
        *tokens = tokens.saturating_add(usdt);
    }

    pub fn mine_n(&mut self, count: u64) {
        for _ in 0..count {
            self.mine();
        }
    }

    pub fn solidified(&self) -> u64 {
        self.head.saturating_sub(SOLIDIFIED_LAG)
    }

    fn info(&self, txid: &str, solid: bool) -> Value {
        if solid && self.unindexed {
            return json!({});
        }
        match self.included.get(txid) {
            Some(&number) if !solid || number <= self.solidified() => {
                let mut info = fixture(if self.failed.contains(txid) {
                    "wallet_gettransactioninfobyid.mainnet_usdt_out_of_energy.json"
                } else {
                    "wallet_gettransactioninfobyid.mainnet_trx_transfer.json"
                });
                info["id"] = json!(txid);
                info["blockNumber"] = json!(number);
                info["blockTimeStamp"] = json!(block_time(number));
                if let Some(charge) = self.charges.get(txid) {
                    // The node prints no zeros: a field of 0 is absent.
                    let set = |value: &mut Value, key: &str, number: u64| {
                        if let Some(object) = value.as_object_mut() {
                            if number == 0 {
                                object.remove(key);
                            } else {
                                object.insert(key.into(), json!(number));
                            }
                        }
                    };
                    set(&mut info, "fee", charge.fee);
                    let receipt = &mut info["receipt"];
                    set(receipt, "net_usage", charge.net_usage);
                    set(receipt, "net_fee", charge.net_fee);
                    set(receipt, "energy_usage", charge.energy_usage);
                    set(receipt, "energy_fee", charge.energy_fee);
                    set(receipt, "energy_usage_total", charge.energy_total);
                }
                info
            }
            _ => json!({}),
        }
    }

    /// `getblockbylimitnext` over blocks up to `last`: java-tron's servlet answers `{}` for a
    /// range it refuses (empty, or more than 100).
    fn block_range(&self, body: &Value, last: u64) -> Value {
        let start = body["startNum"].as_u64().unwrap_or(0);
        let end = body["endNum"].as_u64().unwrap_or(0);
        if end == 0 || end <= start || end - start > 100 {
            return json!({});
        }
        let blocks: Vec<Value> = (start..end.min(last + 1))
            .filter(|number| Some(*number) != self.hidden)
            .map(|number| self.block(number))
            .collect();
        if blocks.is_empty() {
            return json!({});
        }
        let mut answer =
            fixture("wallet_getblockbylimitnext.nile_first_block_transactions_elided.json");
        answer["block"] = json!(blocks);
        answer
    }
}

pub type Shared = Arc<Mutex<Ledger>>;

fn dup(txid: &str) -> Value {
    // Derived from java-tron's Wallet.broadcastTransaction (no recorded body exists).
    json!({"code": "DUP_TRANSACTION_ERROR", "txid": txid, "message": hex::encode("Dup transaction.")})
}

/// A transfer's amount in base units (a TRON amount is at most 2^256 by type, but a
/// transaction decoded from the wire holds at most u64 sun or a uint256 token amount;
/// anything beyond u128 cannot be held by any account here, so it saturates).
fn amount_of(decoded: &transaction::Decoded) -> u128 {
    u128::try_from(decoded.parsed.amount.base_units()).unwrap_or(u128::MAX)
}

/// The number of the block among the last 65,536 whose low 16 bits are `ref_block_bytes`
/// (the one block TaPoS can name), if the chain is that long.
fn tapos_candidate(head: u64, ref_block_bytes: [u8; 2]) -> Option<u64> {
    let low = u16::from_be_bytes(ref_block_bytes);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the low 16 bits, on purpose"
    )]
    let back = (head as u16).wrapping_sub(low);
    head.checked_sub(u64::from(back))
}

fn broadcast(ledger: &mut Ledger, hex_bytes: &str) -> Value {
    let Ok(bytes) = hex::decode(hex_bytes) else {
        return fixture("wallet_broadcasttransaction.sigerror.json");
    };
    let (txid, tx) = match transaction::decode(&bytes) {
        Ok(decoded) => (decoded.txid.clone(), Tx::Transfer(decoded)),
        Err(_) => match transaction::decode_delegation(&bytes) {
            Ok(decoded) => (decoded.txid.clone(), Tx::Delegation(decoded)),
            Err(_) => return fixture("wallet_broadcasttransaction.sigerror.json"),
        },
    };
    let answer = |mut body: Value| {
        body["txid"] = json!(txid);
        body
    };
    let (ref_block_bytes, ref_block_hash, expiration, _, _) = tx.stamp();
    // java-tron's order: TaPoS, then the expiration against the head, then duplicates. So
    // an expired transaction is refused as expired even when it is on chain already.
    let known = tapos_candidate(ledger.head, ref_block_bytes).is_some_and(|number| {
        RefBlock::from_hex(&block_id(number)).is_ok_and(|id| {
            id.ref_block_bytes() == ref_block_bytes && id.ref_block_hash() == ref_block_hash
        })
    });
    if !known {
        return answer(fixture("wallet_broadcasttransaction.tapos_error.json"));
    }
    if expiration <= block_time(ledger.head) {
        return answer(fixture(
            "wallet_broadcasttransaction.transaction_expiration_error.json",
        ));
    }
    if ledger.included.contains_key(&txid) || ledger.pool.iter().any(|(id, _)| *id == txid) {
        return dup(&txid);
    }
    let size = u64::try_from(bytes.len())
        .unwrap_or(u64::MAX)
        .saturating_add(RESULT_BYTES);
    ledger.sizes.insert(txid.clone(), size);
    if let Some(refused) = ledger.refusal(&txid, &tx) {
        ledger.sizes.remove(&txid);
        return answer(refused);
    }
    ledger.pool.push((txid.clone(), tx));
    ledger.accepted += 1;
    answer(fixture(
        "wallet_broadcasttransaction.success_shasta_trx.json",
    ))
}

/// java-tron's answer to a request its servlet cannot read (a missing or malformed field).
fn refused(what: &str) -> Value {
    json!({"Error": format!("class java.lang.IllegalArgumentException : {what}")})
}

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str, Value> {
    body[name]
        .as_str()
        .ok_or_else(|| refused(&format!("{name} is missing or not a string")))
}

fn number(body: &Value, name: &str) -> Result<u64, Value> {
    body[name]
        .as_u64()
        .ok_or_else(|| refused(&format!("{name} is missing or not a number")))
}

/// The 21-byte hex of a base58 address in a request.
fn account(body: &Value) -> Result<String, Value> {
    let text = field(body, "address")?;
    Address::parse(Chain::Tron, Network::Mainnet, text)
        .ok()
        .and_then(|address| address.tron_bytes())
        .map(hex::encode)
        .ok_or_else(|| refused("address is not a TRON address"))
}

/// The 21-byte hex of an address field (base58 or `41…` hex) in a request.
fn owner_of(body: &Value, name: &str) -> Result<String, Value> {
    let text = field(body, name)?;
    if text.len() == 42 && text.starts_with("41") && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(text.to_ascii_lowercase());
    }
    Address::parse(Chain::Tron, Network::Mainnet, text)
        .ok()
        .and_then(|address| address.tron_bytes())
        .map(hex::encode)
        .ok_or_else(|| refused(&format!("{name} is not a TRON address")))
}

/// A TRC-20 call's 32-byte address word (`parameter`, hex) as 21-byte hex.
fn word_address(parameter: &str) -> Result<String, Value> {
    parameter
        .get(24..64)
        .filter(|hex| hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .map(|hex| format!("41{hex}"))
        .ok_or_else(|| refused("parameter is not an ABI-encoded address"))
}

fn answer(ledger: &mut Ledger, path: &str, body: &Value) -> Result<Value, Value> {
    Ok(match path {
        "/wallet/getnowblock" => ledger.block(ledger.head),
        "/walletsolidity/getnowblock" => ledger.block(ledger.solidified()),
        "/wallet/getblockbynum" | "/walletsolidity/getblockbynum" => {
            let last = if path.starts_with("/walletsolidity") {
                ledger.solidified()
            } else {
                ledger.head
            };
            let number = number(body, "num")?;
            if number <= last {
                ledger.block(number)
            } else {
                json!({})
            }
        }
        "/wallet/getblockbylimitnext" => ledger.block_range(body, ledger.head),
        "/walletsolidity/getblockbylimitnext" => ledger.block_range(body, ledger.solidified()),
        "/wallet/getaccount" => {
            let key = account(body)?;
            match ledger.trx.get(&key) {
                None => fixture("wallet_getaccount.unactivated_empty.json"),
                Some(&balance) => ledger.account_json(body, &key, balance),
            }
        }
        // The solidity node: the account's balance as of the solidified block (its resources
        // as they are now: this simulation keeps no history of them).
        "/walletsolidity/getaccount" => {
            let key = account(body)?;
            match ledger.solidified_state().0.get(&key) {
                None => fixture("wallet_getaccount.unactivated_empty.json"),
                Some(&balance) => ledger.account_json(body, &key, balance),
            }
        }
        "/wallet/getaccountresource" => {
            let key = account(body)?;
            if ledger.fees || ledger.staked(&key) > 0 || ledger.acquired(&key) > 0 {
                ledger.resources_json(&key)
            } else {
                fixture("wallet_getaccountresource.nile.json")
            }
        }
        "/wallet/getchainparameters" => chain_parameters(),
        "/wallet/getcandelegatedmaxsize" => {
            let owner = owner_of(body, "owner_address")?;
            if number(body, "type")? != 1 {
                return Err(refused("the simulation lends energy only (type 1)"));
            }
            match ledger.delegatable(&owner) {
                // `max_size` 0 is left out.
                0 => fixture("wallet_getcandelegatedmaxsize.nile_zero_empty.json"),
                max => {
                    let mut answer =
                        fixture("wallet_getcandelegatedmaxsize.private_net_energy_wallet_cli.json");
                    answer["max_size"] = json!(max);
                    answer
                }
            }
        }
        "/wallet/getdelegatedresourcev2" => {
            let from = owner_of(body, "fromAddress")?;
            let to = owner_of(body, "toAddress")?;
            match ledger.delegated.get(&(from, to)) {
                None => fixture("wallet_getdelegatedresourcev2.nile_none_empty.json"),
                Some(&sun) => {
                    let mut answer = fixture(
                        "wallet_getdelegatedresourcev2.private_net_unlocked_wallet_cli.json",
                    );
                    let record = &mut answer["delegatedResource"][0];
                    record["from"] = body["fromAddress"].clone();
                    record["to"] = body["toAddress"].clone();
                    if let Some(object) = record.as_object_mut() {
                        // Energy only: the bandwidth amount is 0, so absent.
                        object.remove("frozen_balance_for_bandwidth");
                    }
                    record["frozen_balance_for_energy"] = json!(sun);
                    answer
                }
            }
        }
        "/wallet/triggerconstantcontract" | "/walletsolidity/triggerconstantcontract" => {
            let parameter = field(body, "parameter")?;
            let solid = path.starts_with("/walletsolidity");
            if field(body, "function_selector")? == "balanceOf(address)" {
                let owner = word_address(parameter)?;
                let balance = if solid {
                    ledger
                        .solidified_state()
                        .1
                        .get(&owner)
                        .copied()
                        .unwrap_or(0)
                } else {
                    ledger.usdt.get(&owner).copied().unwrap_or(0)
                };
                let mut answer = fixture("wallet_triggerconstantcontract.nile_usdt_balanceOf.json");
                answer["constant_result"][0] = json!(format!("{balance:064x}"));
                answer
            } else {
                let to = word_address(parameter)?;
                let mut answer =
                    fixture("wallet_triggerconstantcontract.transfer_estimate_energy_used.json");
                // A first-time holder costs about twice: its balance slot is created.
                if !ledger.usdt.contains_key(&to) {
                    let used = answer["energy_used"].as_u64().unwrap_or(0);
                    answer["energy_used"] = json!(2 * used);
                }
                answer
            }
        }
        "/wallet/broadcasthex" => broadcast(ledger, field(body, "transaction")?),
        "/wallet/gettransactioninfobyid" => ledger.info(field(body, "value")?, false),
        "/walletsolidity/gettransactioninfobyid" => ledger.info(field(body, "value")?, true),
        "/wallet/gettransactioninfobyblocknum" => json!(
            ledger
                .infos
                .get(&number(body, "num")?)
                .cloned()
                .unwrap_or_default()
        ),
        other => return Err(json!({"Error": format!("the TRON simulation has no {other}")})),
    })
}

async fn handle(
    State(ledger): State<Shared>,
    path: axum::http::Uri,
    Json(body): Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // A test that panicked while holding the ledger leaves it as it was: keep answering.
    let mut ledger = ledger.lock().unwrap_or_else(PoisonError::into_inner);
    *ledger.calls.entry(path.path().to_string()).or_default() += 1;
    if ledger.broadcasts_down && path.path() == "/wallet/broadcasthex" {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = match answer(&mut ledger, path.path(), &body) {
        Ok(body) => body,
        Err(error)
            if error["Error"]
                .as_str()
                .is_some_and(|e| e.contains("has no")) =>
        {
            return (StatusCode::NOT_FOUND, Json(error)).into_response();
        }
        // java-tron answers a servlet's exception with 200 and an `Error` member.
        Err(error) => error,
    };
    ([(SIMULATION_HEADER, "tron-sim")], Json(body)).into_response()
}

/// The header every answer carries, so nobody mistakes the simulation for a node.
pub const SIMULATION_HEADER: &str = "x-simulation";

/// A running simulation: its URL and ledger; stopped when dropped (or by [`Sim::stop`]).
pub struct Sim {
    pub url: String,
    pub address: SocketAddr,
    pub ledger: Shared,
    server: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

impl Sim {
    /// Serves `ledger` on `address` (port 0 for any free one).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(ledger: Ledger, address: SocketAddr) -> std::io::Result<Sim> {
        Sim::serve_shared(Arc::new(Mutex::new(ledger)), address).await
    }

    async fn serve_shared(ledger: Shared, address: SocketAddr) -> std::io::Result<Sim> {
        let app = Router::new()
            .fallback(post(handle))
            .with_state(ledger.clone());
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(error) = serving.await {
                tracing::error!(%error, "the TRON simulation stopped serving");
            }
        });
        tracing::info!(%address, "TRON SIMULATION serving (not a TRON node: a ledger in memory, recorded answers)");
        Ok(Sim {
            url: format!("http://{address}/"),
            address,
            ledger,
            server: Some((task, stop)),
        })
    }

    /// Stops serving (open connections are closed) and forgets the pool of broadcast
    /// transactions not yet in a block, as a node restarted loses its mempool.
    pub async fn stop(&mut self) {
        if let Some((task, stop)) = self.server.take() {
            let _ = stop.send(());
            task.abort();
            let _ = task.await;
        }
        self.ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pool
            .clear();
    }

    /// Serves the same ledger on the same address again, after [`Sim::stop`].
    ///
    /// # Errors
    /// When the address cannot be bound again.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await;
        let again = Sim::serve_shared(self.ledger.clone(), self.address).await?;
        *self = again;
        Ok(())
    }

    /// Mines a block whenever the clock reaches the next block's time (every 3 s: the
    /// simulated chain keeps to real time), until the simulation is dropped.
    pub fn spawn_miner(&self) -> tokio::task::JoinHandle<()> {
        spawn_miner(self.ledger.clone())
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some((task, stop)) = self.server.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}

/// Serves `ledger` on a free local port; its URL and the shared ledger (the server lives as
/// long as the runtime).
///
/// # Panics
/// When no local port can be bound.
pub async fn serve(ledger: Ledger) -> (String, Shared) {
    let sim = Sim::start(ledger, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("a local port for the TRON simulation");
    let served = (sim.url.clone(), sim.ledger.clone());
    // Served until the runtime ends: the handle is never dropped.
    std::mem::forget(sim);
    served
}

/// Mines a block whenever the clock reaches the next block's time (every 3 s, the simulated
/// chain keeping to real time).
pub fn spawn_miner(ledger: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let now = now_ms();
            let mut ledger = ledger.lock().unwrap_or_else(PoisonError::into_inner);
            while block_time(ledger.head + 1) <= now {
                ledger.mine();
            }
        }
    })
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    i64::try_from(now).unwrap_or(i64::MAX)
}
