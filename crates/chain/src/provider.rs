//! The provider contract's shared vocabulary (DESIGN.md §6). Building and signing are
//! separate steps, so a signed transaction is stored before it leaves the process, and
//! submitting says exactly what the node answered.
//!
//! The contract is three traits every adapter implements, after Coinbase's Mesh (Rosetta)
//! construction API: [`ChainRead`] (tip, blocks, balances, transaction status, a scan of
//! blocks for deposits), [`ChainBuild`] (metadata, build, the payloads to sign, combine,
//! parse: no key anywhere), and [`ChainSubmit`]. Signing is the signer's: it signs the
//! payloads' digests and nothing else, so it can live in another process.

use domain::{Amount, Chain};

use crate::address::Address;

/// What a node said to a signed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// The node took it.
    Accepted,
    /// The node has it already (in its pool, or mined): success for this very transaction.
    AlreadyKnown,
    /// The node refused it. `retriable`: the same bytes may be accepted later (a busy node, a
    /// fee below the pool's floor); otherwise they never will (bad signature, nonce used).
    Rejected { retriable: bool, reason: String },
    /// No answer, or one that does not say: the transaction may or may not be out. Only the
    /// same bytes may be sent again until the chain says it is dead.
    Unknown { reason: String },
}

/// A chain call that failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ChainError {
    pub retriable: bool,
    pub message: String,
}

impl ChainError {
    pub fn retriable(message: impl Into<String>) -> Self {
        ChainError {
            retriable: true,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ChainError {
            retriable: false,
            message: message.into(),
        }
    }
}

/// A block, by number and hash, with its parent's hash (a reorg shows as a parent that is
/// not the hash stored for the block before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    pub number: u64,
    pub hash: String,
    pub parent_hash: String,
}

/// Where a transaction is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    /// The node does not know it.
    NotFound,
    /// Known, not in a block yet.
    Pending,
    /// In a block; `success` false when it reverted (the fee is paid, the transfer is not).
    Included {
        block: BlockRef,
        success: bool,
        confirmations: u64,
    },
}

/// What is moved: the chain's own coin, or a token by its contract.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Asset {
    Native,
    Token(Address),
}

impl std::fmt::Display for Asset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asset::Native => f.write_str("native"),
            Asset::Token(contract) => write!(f, "token {contract}"),
        }
    }
}

/// The head of the chain and the newest block that cannot be reorganised away (Ethereum's
/// `finalized`, TRON's solidified block; None where the node reports none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub head: u64,
    pub finalized: Option<u64>,
}

/// How many transactions of an account the chain has: mined, and mined or waiting in the
/// node's pool. Both are the next nonce from their point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountSequence {
    pub mined: u64,
    pub pending: u64,
}

/// A payment to make: from key `from_index` of the signer (whose address is `from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub from_index: u32,
    pub from: Address,
    pub to: Address,
    pub asset: Asset,
    pub amount: Amount,
}

/// What a signed transaction says it does, read back from its bytes (the signer recovered
/// from the signature): checked against the [`Payment`] before it is stored or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub from: Address,
    pub to: Address,
    pub asset: Asset,
    pub amount: Amount,
    /// The account sequence it uses (an Ethereum nonce), where the chain has one.
    pub sequence: Option<u64>,
}

impl Parsed {
    /// Whether these bytes do what `payment` asked, and nothing else.
    pub fn matches(&self, payment: &Payment) -> bool {
        self.from == payment.from
            && self.to == payment.to
            && self.asset == payment.asset
            && self.amount == payment.amount
    }
}

/// A signed transaction: the exact bytes to broadcast and their txid, computed locally.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    pub txid: String,
    pub raw: Vec<u8>,
}

impl std::fmt::Debug for SignedTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedTransaction")
            .field("txid", &self.txid)
            .field("bytes", &self.raw.len())
            .finish()
    }
}

/// Which keys a key is among: the working account's receive keys (account/0/i, every
/// chain), Bitcoin's change keys (account/1/i), or the deposit account's keys (the deposit
/// addresses, `signer::DEPOSIT_ACCOUNT`: account 1', branch 0), which a Bitcoin payout signs
/// with when it spends a credited deposit where it lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Keychain {
    #[default]
    Receive,
    Change,
    Deposit,
}

impl Keychain {
    /// The BIP32 child number of the branch (BIP44/84's fourth level) within its account:
    /// a deposit address is on its account's receive branch.
    pub fn branch(self) -> u32 {
        match self {
            Keychain::Receive | Keychain::Deposit => 0,
            Keychain::Change => 1,
        }
    }
}

/// A 32-byte digest the signer signs with key `index` of `keychain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningPayload {
    pub keychain: Keychain,
    pub index: u32,
    pub digest: [u8; 32],
}

/// Funds that arrived at a watched address. `(txid, asset, position)` names it for good
/// (position: the index of a token transfer's log among its transaction's logs, never its
/// block-wide log index, which moves when a reorg re-mines the transaction elsewhere; the
/// output index on Bitcoin; 0 for a native payment by a transaction);
/// `block` says where, so a reorg that takes the block away takes the deposit with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deposit {
    pub txid: String,
    pub position: u64,
    pub block: BlockRef,
    pub asset: Asset,
    /// The sender, where the chain has one.
    pub from: Option<String>,
    pub to: Address,
    pub amount: Amount,
}

/// The addresses whose deposits are wanted and the tokens that count: a token not on the list
/// is never credited, whatever its events say (anyone can deploy a contract that emits them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSet {
    pub addresses: Vec<Address>,
    pub tokens: Vec<Address>,
}

/// Blocks `from..=to` as a scan read them: every block (number, hash, parent hash), in order
/// and chained, and the deposits in them, each naming the hash of the block it is in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanBatch {
    pub blocks: Vec<BlockRef>,
    pub deposits: Vec<Deposit>,
}

impl ScanBatch {
    /// Checks what every adapter promises: the blocks are consecutive from `from`, each one's
    /// parent is the one before, and every deposit is in one of them under the same hash. A
    /// reorg while the batch was read breaks one of these, and the batch is read again.
    pub fn check(&self, from: u64) -> Result<(), ChainError> {
        for (offset, block) in self.blocks.iter().enumerate() {
            if block.number != from + offset as u64 {
                return Err(ChainError::retriable(format!(
                    "block {} where {} was expected",
                    block.number,
                    from + offset as u64
                )));
            }
        }
        for pair in self.blocks.windows(2) {
            if pair[1].parent_hash != pair[0].hash {
                return Err(ChainError::retriable(format!(
                    "block {} does not follow {} (a reorg while reading)",
                    pair[1].number, pair[0].number
                )));
            }
        }
        for deposit in &self.deposits {
            let inside = deposit
                .block
                .number
                .checked_sub(from)
                .and_then(|offset| self.blocks.get(usize::try_from(offset).ok()?));
            if inside.is_none_or(|block| block.hash != deposit.block.hash) {
                return Err(ChainError::retriable(format!(
                    "deposit {} names block {} {}, not the one read",
                    deposit.txid, deposit.block.number, deposit.block.hash
                )));
            }
        }
        Ok(())
    }
}

/// The read side: what the chain says, no keys, no writes.
pub trait ChainRead: Send + Sync {
    fn chain(&self) -> Chain;
    fn tip(&self) -> impl Future<Output = Result<Tip, ChainError>> + Send;
    /// Block `number` of the chain as the node sees it now; None past the head.
    fn block(
        &self,
        number: u64,
    ) -> impl Future<Output = Result<Option<BlockRef>, ChainError>> + Send;
    fn balance(
        &self,
        address: &Address,
        asset: &Asset,
    ) -> impl Future<Output = Result<Amount, ChainError>> + Send;
    fn transaction(&self, txid: &str) -> impl Future<Output = Result<TxStatus, ChainError>> + Send;
    /// The fee a transaction in a block paid, in the native coin's base units; None while it
    /// is not in a block, or where the chain does not say (the default).
    fn fee_paid(
        &self,
        txid: &str,
    ) -> impl Future<Output = Result<Option<Amount>, ChainError>> + Send {
        let _ = txid;
        std::future::ready(Ok(None))
    }
    /// The account's transaction counts, where the chain numbers them (Ethereum nonces);
    /// None on chains without account sequences.
    fn account_sequence(
        &self,
        address: &Address,
    ) -> impl Future<Output = Result<Option<AccountSequence>, ChainError>> + Send;
    /// How many transactions of the account were mined as of block `number` (its nonce then),
    /// where the chain numbers them (Ethereum); None on chains without account sequences
    /// (the default). A manual review asks it at the final block to prove that a nonce was
    /// consumed for good.
    fn account_sequence_at(
        &self,
        address: &Address,
        number: u64,
    ) -> impl Future<Output = Result<Option<u64>, ChainError>> + Send {
        let _ = (address, number);
        std::future::ready(Ok(None))
    }
    /// Blocks `from..=to` and the deposits to `watch` in them; `to` at most the head.
    fn scan(
        &self,
        from: u64,
        to: u64,
        watch: &WatchSet,
    ) -> impl Future<Output = Result<ScanBatch, ChainError>> + Send;
}

/// The build side: transactions made without a key, signed elsewhere over their payloads,
/// combined with the signatures, and read back.
pub trait ChainBuild: ChainRead {
    /// What building needs from the chain now (fees, the node's nonce, a reference block).
    type Metadata: Clone + std::fmt::Debug + Send + Sync;
    type Unsigned: Clone + std::fmt::Debug + Send + Sync;

    fn metadata(
        &self,
        payment: &Payment,
    ) -> impl Future<Output = Result<Self::Metadata, ChainError>> + Send;
    /// The most the payment can cost in fees, in the native coin's base units.
    fn max_fee(&self, metadata: &Self::Metadata) -> Amount;
    /// The account sequence (Ethereum nonce) the metadata carries, where the chain has one:
    /// the node's next. The caller may set another one from its allocator before building.
    fn sequence(&self, metadata: &Self::Metadata) -> Option<u64>;
    fn set_sequence(&self, metadata: &mut Self::Metadata, sequence: u64);
    fn build(
        &self,
        payment: &Payment,
        metadata: &Self::Metadata,
    ) -> Result<Self::Unsigned, ChainError>;
    /// The digests to sign, with the key each one needs.
    fn payloads(&self, unsigned: &Self::Unsigned) -> Vec<SigningPayload>;
    /// The transaction with its signatures (65 bytes each, recoverable, in payload order).
    fn combine(
        &self,
        unsigned: Self::Unsigned,
        signatures: &[[u8; 65]],
    ) -> Result<SignedTransaction, ChainError>;
    /// What signed bytes do, read from the bytes alone.
    fn parse(&self, signed: &SignedTransaction) -> Result<Parsed, ChainError>;
}

/// What may be done about one stored attempt (a signed transaction that pays a payout),
/// by the chain's death rule (DESIGN.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFate {
    /// It is in a final block (TRON: solidified); `success` is what its receipt says.
    Landed { block: u64, success: bool },
    /// It may still land: only the very same bytes may be broadcast again.
    MayLand,
    /// It can provably never land: a new attempt for its payout is allowed.
    Dead,
}

/// A chain whose payments are recorded as attempts (signed bytes stored under a payout key
/// before they are broadcast) rather than by account nonces: what the attempt machinery in
/// the wallet needs from it. The chain crate implements its own death rule here and never
/// sees the store.
pub trait ChainAttempts: ChainBuild + ChainSubmit {
    /// When the bytes stop being valid, where the chain says (TRON `raw_data.expiration`, ms).
    fn expires_at(&self, signed: &SignedTransaction) -> Result<Option<i64>, ChainError>;
    /// The attempt's fate now. An answer the node cannot back with the final chain is an
    /// error or `MayLand`, never `Dead`.
    fn attempt_fate(
        &self,
        signed: &SignedTransaction,
    ) -> impl Future<Output = Result<AttemptFate, ChainError>> + Send;
}

/// Both fee caps of a transaction on a chain with fee markets (Ethereum's EIP-1559), in the
/// native coin's base units per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeCaps {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// A chain whose payments hold account nonces and whose stuck transactions are replaced by
/// another one on the same nonce with higher fees (Ethereum): what the wallet's nonce path
/// ([`ChainBuild`] plus this) needs to price and replace a transaction it stored.
pub trait ChainReplace: ChainBuild + ChainSubmit {
    /// The fee caps the signed bytes carry.
    fn fee_caps(&self, signed: &SignedTransaction) -> Result<FeeCaps, ChainError>;
    /// The same transaction (same nonce, recipient, amount and data) with both fee caps
    /// raised by at least the chain's minimum bump, and to today's quote if that is higher,
    /// never above `fee_cap` per gas: `None` when even the minimum bump would pass the cap.
    /// `key` is the signer's key index of the sender.
    fn replacement(
        &self,
        signed: &SignedTransaction,
        key: u32,
        fee_cap: u128,
    ) -> impl Future<Output = Result<Option<Self::Unsigned>, ChainError>> + Send;
}

/// Sweeping an account-model chain's deposit addresses (Ethereum's consolidation): what the
/// sweeper needs beyond payments. A sweep is priced once, before anything is signed, and
/// stored with its sweep, so a run repeated after a crash builds exactly the same payment:
/// [`ChainSweep::at_fixed_fees`] makes a provider whose every payment pays `price` per gas as
/// both fee caps (so it costs exactly gas used × price, whatever the base fee, and a native
/// sweep of balance − gas × price leaves nothing behind) with a fixed gas limit.
pub trait ChainSweep: ChainReplace + Clone {
    /// The base fee per gas of the newest block, in base units.
    fn base_fee(&self) -> impl Future<Output = Result<u128, ChainError>> + Send;
    /// The price per gas a sweep pays now: the base fee with room for two blocks of its
    /// largest rise, plus the node's priority fee.
    fn sweep_price(&self) -> impl Future<Output = Result<u128, ChainError>> + Send;
    /// The gas `payment` needs (a native payment to an account: exactly the transfer's).
    fn gas_limit(&self, payment: &Payment) -> impl Future<Output = Result<u64, ChainError>> + Send;
    /// The balance of `address` in `asset` as of block `block` (what is confirmed, when the
    /// block is deep enough).
    fn balance_at(
        &self,
        address: &Address,
        asset: &Asset,
        block: u64,
    ) -> impl Future<Output = Result<Amount, ChainError>> + Send;
    /// This provider, building every payment at `price` per gas (fee cap and tip alike) with
    /// `gas_limit`.
    fn at_fixed_fees(&self, price: u128, gas_limit: u64) -> Self;
}

/// A Stake 2.0 delegation of energy (TRON): key `from_index` (the staking account `owner`)
/// lends the energy of `balance` staked sun to `receiver`, or, with `reclaim`, takes it back.
/// Always unlocked, so it can be taken back at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    pub from_index: u32,
    pub owner: Address,
    pub receiver: Address,
    /// Staked sun (what java-tron's `balance` counts), not energy.
    pub balance: u64,
    pub reclaim: bool,
}

impl Delegation {
    /// Whether `parsed` (read back from signed bytes) does exactly this.
    pub fn matches(&self, parsed: &Delegation) -> bool {
        self.owner == parsed.owner
            && self.receiver == parsed.receiver
            && self.balance == parsed.balance
            && self.reclaim == parsed.reclaim
    }
}

/// An account's resources now (TRON), in sun, energy and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountResources {
    /// Whether the account exists on chain (receiving TRC-20 tokens does not create it).
    pub activated: bool,
    pub balance: u64,
    pub energy_available: u64,
    pub free_bandwidth: u64,
    pub staked_bandwidth: u64,
}

/// What the chain charges, in sun (TRON's chain parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BurnPrices {
    /// Per unit of energy burned.
    pub energy: u64,
    /// Per byte of bandwidth burned.
    pub bandwidth: u64,
    /// What a TRX transfer that creates its recipient burns in all (bandwidth and the
    /// creation fee), when the sender has no staked bandwidth.
    pub create_account: u64,
}

/// What a landed transaction used and burned, from its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceReceipt {
    pub success: bool,
    /// Every sun it burned (energy, bandwidth, account creation).
    pub fee: u64,
    /// Energy used in all (own, delegated, and burned for).
    pub energy: u64,
    /// Sun burned for energy.
    pub energy_fee: u64,
    /// Bandwidth bytes used from the account's free or staked bandwidth.
    pub bandwidth: u64,
    /// Sun burned for bandwidth.
    pub bandwidth_fee: u64,
}

/// Sweeping a chain whose token transfers are paid with energy (TRON, Stake 2.0): what the
/// energy sweeper needs beyond payments by attempts. Energy comes from a staking account by
/// [`Delegation`], or, when that account has too little to lend, from TRX burned by the
/// deposit address itself.
pub trait ChainEnergy: ChainAttempts + Clone {
    /// `address`'s balance of `asset` as of the newest block no reorganisation can take away
    /// (TRON: the solidified block): what a sweep may move, as a deposit there is credited.
    fn settled_balance(
        &self,
        address: &Address,
        asset: &Asset,
    ) -> impl Future<Output = Result<Amount, ChainError>> + Send;

    /// Staked sun `owner` can delegate for energy now (`getcandelegatedmaxsize`).
    fn delegatable(&self, owner: &Address) -> impl Future<Output = Result<u64, ChainError>> + Send;
    /// Staked sun whose energy is at least `energy` now (at least the chain's 1 TRX minimum),
    /// by the network's totals as `owner` (an existing account) reads them.
    fn stake_for_energy(
        &self,
        owner: &Address,
        energy: u64,
    ) -> impl Future<Output = Result<u64, ChainError>> + Send;
    /// The energy `payment` (a token transfer) needs, by simulating it.
    fn energy_needed(
        &self,
        payment: &Payment,
    ) -> impl Future<Output = Result<u64, ChainError>> + Send;
    /// `address`'s balance and resources now.
    fn account_resources(
        &self,
        address: &Address,
    ) -> impl Future<Output = Result<AccountResources, ChainError>> + Send;
    fn burn_prices(&self) -> impl Future<Output = Result<BurnPrices, ChainError>> + Send;
    /// The bandwidth bytes a transfer of `asset` takes.
    fn transfer_bytes(&self, asset: &Asset) -> u64;
    /// The unsigned transaction of `delegation`, valid from now.
    fn build_delegation(
        &self,
        delegation: &Delegation,
    ) -> impl Future<Output = Result<Self::Unsigned, ChainError>> + Send;
    /// What signed bytes delegate (or reclaim), read back from them; refused for anything
    /// else.
    fn parse_delegation(&self, signed: &SignedTransaction) -> Result<Delegation, ChainError>;
    /// The receipt of a landed transaction; None while it has none.
    fn receipt(
        &self,
        txid: &str,
    ) -> impl Future<Output = Result<Option<ResourceReceipt>, ChainError>> + Send;
}

/// The submit side: signed bytes out, and exactly what the node said.
pub trait ChainSubmit: Send + Sync {
    fn submit(&self, signed: &SignedTransaction) -> impl Future<Output = SubmitOutcome> + Send;
}
