//! Ethereum through alloy, first slice: connect with a chain-id check, the head and the
//! `finalized` block, native balances, and ETH transfers in three steps that never mix:
//!
//! 1. [`Ethereum::build_transfer`] makes an unsigned EIP-1559 transaction (no key involved);
//! 2. [`sign`] has the [`Signer`] sign its signing hash and returns the raw bytes and the
//!    txid, computed locally, so the caller stores them before anything is sent;
//! 3. [`Ethereum::submit`] sends those bytes and says what the node answered; sending the same
//!    bytes again (after a crash) is recognised as the same transaction, never a second one.
//!
//! ERC-20: balances by `balanceOf`, transfers as `transfer(address,uint256)` calls with a gas
//! estimate and a margin; deposits from the `Transfer` logs of allowlisted tokens only.
//! Stuck transactions are replaced with the same nonce and both fee caps raised by at least
//! 10 % ([`Unsigned::replacement`]).
//!
//! The provider contract ([`chain::provider`]) is implemented in `contract.rs`: a block scan
//! that asks for blocks in JSON-RPC batches and for token logs over ranges, so the wallet's
//! scanner reads thousands of blocks a second; build / payloads / combine / parse, with the
//! signer recovered from the bytes when they are read back.

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::BlockNumberOrTag;
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address as EthAddress, B256, Bytes, Signature, TxKind, U256};
use alloy::providers::{Provider, RootProvider};
use chain::address::Address;
use chain::provider::{BlockRef, ChainError, SubmitOutcome, TxStatus};
use domain::{Amount, Chain};
use signer::Signer;

mod contract;
pub use contract::{
    ADDRESSES_PER_FILTER, BLOCKS_PER_REQUEST, LOG_RANGE_BLOCKS_MAX, Metadata, Prepared,
    REQUESTS_IN_FLIGHT,
};

/// The default cap on the fee per gas, in wei (500 gwei): a quote above it is refused until
/// the network calms down or an operator raises the cap.
pub const DEFAULT_FEE_CAP: u128 = 500_000_000_000;

/// Gas of a plain ETH transfer to an account without code.
pub const TRANSFER_GAS: u64 = 21_000;

alloy::sol! {
    /// The part of ERC-20 this system uses.
    interface IERC20 {
        function balanceOf(address owner) external view returns (uint256);
        function decimals() external view returns (uint8);
        function transfer(address to, uint256 amount) external returns (bool);
        event Transfer(address indexed from, address indexed to, uint256 value);
    }
}

/// An ERC-20 transfer to build. `gas_limit` from [`Ethereum::estimate_token_transfer_gas`].
#[derive(Debug, Clone)]
pub struct TokenTransfer {
    pub token: Address,
    pub to: Address,
    pub amount: Amount,
    pub nonce: u64,
    pub fees: FeeQuote,
    pub gas_limit: u64,
}

/// A sweep's fees, fixed before it is signed: price per gas (fee cap and tip) and gas limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fixed {
    pub(crate) price: u128,
    pub(crate) gas_limit: u64,
}

/// A connection to one Ethereum node, checked to be on the expected chain.
#[derive(Clone)]
pub struct Ethereum {
    provider: RootProvider,
    chain_id: u64,
    /// The most a transaction built through the provider contract may pay per gas.
    fee_cap: u128,
    /// Set by `ChainSweep::at_fixed_fees`: every payment built through the provider contract
    /// pays this price per gas (both caps) with this gas limit.
    fixed: Option<Fixed>,
    /// The endpoint as it may be shown: scheme, host and port only (providers put API keys
    /// in the path or query).
    shown: String,
    /// The endpoint as the HTTP client prints it, to scrub from error messages.
    secret: String,
    /// Whether a scan also reads ETH paid by contracts' internal calls, from each block's
    /// call trace ([`Ethereum::with_internal_transfers`]).
    internal: bool,
}

impl std::fmt::Debug for Ethereum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ethereum")
            .field("endpoint", &self.shown)
            .field("chain_id", &self.chain_id)
            .finish_non_exhaustive()
    }
}

/// The node as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub chain_id: u64,
    pub head: u64,
    /// The `finalized` block, where the node reports one.
    pub finalized: Option<u64>,
}

/// What the node says of itself now, for health checks: the chain it is on (asked again,
/// not the one seen at connection) and its newest block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHead {
    pub chain_id: u64,
    pub number: u64,
    /// The newest block's timestamp, in Unix seconds.
    pub timestamp: u64,
}

/// Fees for the next transaction, in wei per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeQuote {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// An ETH transfer to build.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub to: Address,
    pub value: Amount,
    pub nonce: u64,
    pub fees: FeeQuote,
}

/// An unsigned transaction: what will be signed, inspectable before it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsigned(TxEip1559);

impl Unsigned {
    pub fn nonce(&self) -> u64 {
        self.0.nonce
    }
}

/// A token credited to one of our addresses, from a `Transfer` log of an allowlisted token.
/// `(txid, log_index)` identifies it for good; `block_hash` lets a reorg be noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDeposit {
    pub txid: B256,
    pub log_index: u64,
    pub block: u64,
    pub block_hash: B256,
    pub token: Address,
    pub from: EthAddress,
    pub to: Address,
    pub amount: Amount,
}

/// ETH sent to one of our addresses by a transaction of a block, or, with
/// [`Ethereum::with_internal_transfers`], by a contract's internal call within one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeDeposit {
    pub txid: B256,
    /// 0 for the transaction's own value; an internal call's index in the transaction's call
    /// trace, depth first (the transaction's own call is 0).
    pub position: u64,
    pub block: BlockRef,
    pub from: EthAddress,
    pub to: Address,
    pub amount: Amount,
}

/// The least raise of both fee caps a node accepts for a replacement: 10 % (geth's default
/// `txpool.pricebump`), rounded up.
pub fn bumped(fee: u128) -> u128 {
    fee.saturating_add(fee.div_ceil(10))
}

impl Unsigned {
    /// The same transaction (same nonce, recipient, value and data) with both fee caps raised
    /// by at least 10 %, and to today's quote if that is higher: what replaces a stuck
    /// transaction. Whichever of the two is mined, the payment happens once.
    pub fn replacement(&self, quote: FeeQuote) -> Unsigned {
        let mut tx = self.0.clone();
        tx.max_priority_fee_per_gas =
            bumped(tx.max_priority_fee_per_gas).max(quote.max_priority_fee_per_gas);
        tx.max_fee_per_gas = bumped(tx.max_fee_per_gas)
            .max(quote.max_fee_per_gas)
            .max(tx.max_priority_fee_per_gas);
        Unsigned(tx)
    }

    /// Both fee caps, as they will be signed.
    pub fn fees(&self) -> FeeQuote {
        FeeQuote {
            max_fee_per_gas: self.0.max_fee_per_gas,
            max_priority_fee_per_gas: self.0.max_priority_fee_per_gas,
        }
    }
}

/// A signed transaction: the exact bytes to broadcast and their txid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    pub raw: Vec<u8>,
    pub txid: B256,
}

fn transport(error: impl std::fmt::Display) -> ChainError {
    ChainError::retriable(format!("ethereum node: {error}"))
}

/// `scheme://host:port` of an endpoint, nothing that may be a credential.
fn origin(url: &url::Url) -> String {
    match url.port() {
        Some(port) => format!(
            "{}://{}:{port}",
            url.scheme(),
            url.host_str().unwrap_or("?")
        ),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?")),
    }
}

fn eth_address(address: &Address) -> Result<EthAddress, ChainError> {
    address
        .ethereum_bytes()
        .map(EthAddress::from)
        .ok_or_else(|| ChainError::permanent(format!("{address} is not an Ethereum address")))
}

impl Ethereum {
    /// Connects to the node at `url`; with `expected_chain_id`, refuses a node on another
    /// chain (a mainnet key must never sign for a testnet node's view, nor the reverse).
    pub async fn connect(
        url: &str,
        expected_chain_id: Option<u64>,
    ) -> Result<Ethereum, ChainError> {
        // reqwest is built without a default TLS provider; ring is ours (idempotent).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let parsed: url::Url = url
            .parse()
            .map_err(|error| ChainError::permanent(format!("the RPC URL is not a URL: {error}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(ChainError::permanent(
                "the RPC URL must be http:// or https://",
            ));
        }
        let shown = origin(&parsed);
        let secret = parsed.to_string();
        let provider = RootProvider::new_http(parsed);
        let mut client = Ethereum {
            provider,
            chain_id: 0,
            fee_cap: DEFAULT_FEE_CAP,
            fixed: None,
            shown,
            secret,
            internal: false,
        };
        let chain_id = client
            .provider
            .get_chain_id()
            .await
            .map_err(|error| client.scrub(error))?;
        if let Some(expected) = expected_chain_id
            && expected != chain_id
        {
            return Err(ChainError::permanent(format!(
                "the node at {} is on chain {chain_id}, not the configured {expected}",
                client.shown
            )));
        }
        client.chain_id = chain_id;
        Ok(client)
    }

    /// A transport error, worded without the endpoint's path or query.
    fn scrub(&self, error: impl std::fmt::Display) -> ChainError {
        let text = error
            .to_string()
            .replace(&self.secret, &self.shown)
            .replace(self.secret.trim_end_matches('/'), &self.shown);
        transport(text)
    }

    /// The endpoint as it may be shown (no path, no query).
    pub fn endpoint(&self) -> &str {
        &self.shown
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Scans also read ETH that contracts pay our addresses by internal calls (a smart
    /// contract wallet's or a batch payout's), from each block's call trace
    /// (`debug_traceBlockByHash` with geth's `callTracer`, which geth, Erigon, Nethermind, Reth
    /// and anvil answer): one more call per block scanned. Asks the node once now, so that a
    /// node without it is refused here, with the reason, rather than at every scan.
    pub async fn with_internal_transfers(mut self) -> Result<Ethereum, ChainError> {
        let head = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|error| self.scrub(error))?
            .ok_or_else(|| ChainError::retriable("the node has no latest block"))?;
        self.call_traces(head.header.hash).await.map_err(|error| {
            ChainError::permanent(format!(
                "the node cannot trace a block's calls (debug_traceBlockByHash with callTracer), which reading ETH paid by contracts needs: {}",
                error.message
            ))
        })?;
        self.internal = true;
        Ok(self)
    }

    /// Whether scans read internal transfers ([`Ethereum::with_internal_transfers`]).
    pub fn reads_internal_transfers(&self) -> bool {
        self.internal
    }

    /// The call trace of every transaction of block `hash`: (txid, its root call frame).
    pub(crate) async fn call_traces(
        &self,
        hash: B256,
    ) -> Result<Vec<(B256, serde_json::Value)>, ChainError> {
        let traces: serde_json::Value = self
            .provider
            .raw_request(
                "debug_traceBlockByHash".into(),
                (hash, serde_json::json!({"tracer": "callTracer"})),
            )
            .await
            .map_err(|error| self.scrub(error))?;
        let entries = traces.as_array().ok_or_else(|| {
            ChainError::retriable(format!("block {hash}'s call trace is not a list"))
        })?;
        entries
            .iter()
            .map(|entry| {
                let txid = entry["txHash"]
                    .as_str()
                    .and_then(|text| text.parse::<B256>().ok())
                    .ok_or_else(|| {
                        ChainError::retriable(format!(
                            "block {hash}'s call trace has an entry without its txHash"
                        ))
                    })?;
                Ok((txid, entry["result"].clone()))
            })
            .collect()
    }

    /// The cap on the fee per gas of payments built through [`chain::provider::ChainBuild`].
    pub fn with_fee_cap(mut self, cap: u128) -> Ethereum {
        self.fee_cap = cap;
        self
    }

    pub async fn status(&self) -> Result<Status, ChainError> {
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(|error| self.scrub(error))?;
        let finalized = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Finalized)
            .await
            .map_err(|error| self.scrub(error))?
            .map(|block| block.header.number);
        Ok(Status {
            chain_id: self.chain_id,
            head,
            finalized,
        })
    }

    /// The node's chain id and newest block, asked now.
    pub async fn node_head(&self) -> Result<NodeHead, ChainError> {
        let chain_id = self
            .provider
            .get_chain_id()
            .await
            .map_err(|error| self.scrub(error))?;
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|error| self.scrub(error))?
            .ok_or_else(|| ChainError::retriable("the node has no latest block"))?;
        Ok(NodeHead {
            chain_id,
            number: block.header.number,
            timestamp: block.header.timestamp,
        })
    }

    pub async fn block(&self, number: u64) -> Result<Option<BlockRef>, ChainError> {
        Ok(self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(|error| self.scrub(error))?
            .map(|block| BlockRef {
                number: block.header.number,
                hash: block.header.hash.to_string(),
                parent_hash: block.header.parent_hash.to_string(),
            }))
    }

    /// The native balance, in wei.
    pub async fn balance(&self, address: &Address) -> Result<Amount, ChainError> {
        let wei = self
            .provider
            .get_balance(eth_address(address)?)
            .await
            .map_err(|error| self.scrub(error))?;
        Ok(Amount::from_base_units(wei))
    }

    /// The next nonce the node expects from `address`, counting its pending transactions.
    pub async fn pending_nonce(&self, address: &Address) -> Result<u64, ChainError> {
        self.provider
            .get_transaction_count(eth_address(address)?)
            .pending()
            .await
            .map_err(|error| self.scrub(error))
    }

    /// Fees from the node's estimate, held under `cap` wei per gas (an error above it: paying
    /// more than configured needs a person, not a retry).
    pub async fn fees(&self, cap: u128) -> Result<FeeQuote, ChainError> {
        let estimate = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(|error| self.scrub(error))?;
        if estimate.max_fee_per_gas > cap {
            return Err(ChainError::retriable(format!(
                "the network asks {} wei per gas, over the cap of {cap}",
                estimate.max_fee_per_gas
            )));
        }
        Ok(FeeQuote {
            max_fee_per_gas: estimate.max_fee_per_gas,
            max_priority_fee_per_gas: estimate
                .max_priority_fee_per_gas
                .min(estimate.max_fee_per_gas),
        })
    }

    /// An unsigned ETH transfer; nothing is sent, no key is touched.
    pub fn build_transfer(&self, transfer: &Transfer) -> Result<Unsigned, ChainError> {
        if transfer.value.is_zero() {
            return Err(ChainError::permanent("a transfer of zero"));
        }
        Ok(Unsigned(TxEip1559 {
            chain_id: self.chain_id,
            nonce: transfer.nonce,
            gas_limit: TRANSFER_GAS,
            max_fee_per_gas: transfer.fees.max_fee_per_gas,
            max_priority_fee_per_gas: transfer.fees.max_priority_fee_per_gas,
            to: TxKind::Call(eth_address(&transfer.to)?),
            value: transfer.value.base_units(),
            access_list: Default::default(),
            input: Bytes::new(),
        }))
    }

    /// An ERC-20 balance, in the token's base units.
    pub async fn token_balance(
        &self,
        token: &Address,
        holder: &Address,
    ) -> Result<Amount, ChainError> {
        self.token_balance_at(token, holder, None).await
    }

    /// An ERC-20 balance as of block `block` (the newest block when `None`).
    pub async fn token_balance_at(
        &self,
        token: &Address,
        holder: &Address,
        block: Option<u64>,
    ) -> Result<Amount, ChainError> {
        use alloy::sol_types::SolCall;
        let call = IERC20::balanceOfCall {
            owner: eth_address(holder)?,
        };
        let request = alloy::rpc::types::TransactionRequest::default()
            .to(eth_address(token)?)
            .input(call.abi_encode().into());
        let block = block.map_or(alloy::eips::BlockId::latest(), alloy::eips::BlockId::number);
        let bytes = self
            .provider
            .call(request)
            .block(block)
            .await
            .map_err(|error| self.scrub(error))?;
        let balance = IERC20::balanceOfCall::abi_decode_returns(&bytes).map_err(|error| {
            ChainError::permanent(format!(
                "{token} did not answer balanceOf like an ERC-20: {error}"
            ))
        })?;
        Ok(Amount::from_base_units(balance))
    }

    /// A token's decimals, as its contract states them.
    pub async fn token_decimals(&self, token: &Address) -> Result<u8, ChainError> {
        use alloy::sol_types::SolCall;
        let request = alloy::rpc::types::TransactionRequest::default()
            .to(eth_address(token)?)
            .input(IERC20::decimalsCall {}.abi_encode().into());
        let bytes = self
            .provider
            .call(request)
            .await
            .map_err(|error| self.scrub(error))?;
        IERC20::decimalsCall::abi_decode_returns(&bytes).map_err(|error| {
            ChainError::permanent(format!(
                "{token} did not answer decimals like an ERC-20: {error}"
            ))
        })
    }

    /// `Transfer` logs of the allowlisted `tokens` to any of `watch`, in blocks `from..=to`,
    /// oldest first. Tokens not on the list are never looked at (anyone can deploy a contract
    /// that emits `Transfer` events); recipients are filtered by the node (topic 2).
    pub async fn token_deposits(
        &self,
        from: u64,
        to: u64,
        tokens: &[Address],
        watch: &[Address],
    ) -> Result<Vec<TokenDeposit>, ChainError> {
        use alloy::sol_types::SolEvent;
        if tokens.is_empty() || watch.is_empty() || from > to {
            return Ok(Vec::new());
        }
        let contracts: Vec<EthAddress> =
            tokens.iter().map(eth_address).collect::<Result<_, _>>()?;
        let recipients: Vec<B256> = watch
            .iter()
            .map(|address| eth_address(address).map(|address| address.into_word()))
            .collect::<Result<_, _>>()?;
        let filter = alloy::rpc::types::Filter::new()
            .from_block(from)
            .to_block(to)
            .address(contracts)
            .event_signature(IERC20::Transfer::SIGNATURE_HASH)
            .topic2(recipients);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(|error| self.scrub(error))?;
        let mut deposits = Vec::with_capacity(logs.len());
        for log in logs {
            if log.removed {
                continue;
            }
            let decoded = IERC20::Transfer::decode_log(&log.inner).map_err(|error| {
                ChainError::permanent(format!("a Transfer log that does not decode: {error}"))
            })?;
            let token = tokens
                .iter()
                .find(|token| token.ethereum_bytes() == Some(log.inner.address.into_array()))
                .cloned()
                .ok_or_else(|| ChainError::permanent("a log from a token not asked for"))?;
            let to = watch
                .iter()
                .find(|address| address.ethereum_bytes() == Some(decoded.to.into_array()))
                .cloned()
                .ok_or_else(|| ChainError::permanent("a log to an address not asked for"))?;
            let missing = || ChainError::retriable("a log without its block or transaction");
            deposits.push(TokenDeposit {
                txid: log.transaction_hash.ok_or_else(missing)?,
                log_index: log.log_index.ok_or_else(missing)?,
                block: log.block_number.ok_or_else(missing)?,
                block_hash: log.block_hash.ok_or_else(missing)?,
                token,
                from: decoded.from,
                to,
                amount: Amount::from_base_units(decoded.value),
            });
        }
        deposits.sort_by_key(|deposit| (deposit.block, deposit.log_index));
        Ok(deposits)
    }

    /// ETH paid to any of `watch` by the transactions of block `number` (None: no such block
    /// yet), with the block's hash and parent for reorg detection. A transaction that reverted
    /// moved nothing and is left out.
    pub async fn native_deposits(
        &self,
        number: u64,
        watch: &[Address],
    ) -> Result<Option<Vec<NativeDeposit>>, ChainError> {
        let Some(block) = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .full()
            .await
            .map_err(|error| self.scrub(error))?
        else {
            return Ok(None);
        };
        Ok(Some(
            self.native_in(std::slice::from_ref(&block), watch).await?,
        ))
    }

    /// The gas a token transfer needs, from the node's estimate plus 20 % (the state can move
    /// between the estimate and the block); an estimate that fails means the call would
    /// revert (e.g. not enough tokens), said as such.
    pub async fn estimate_token_transfer_gas(
        &self,
        from: &Address,
        token: &Address,
        to: &Address,
        amount: Amount,
    ) -> Result<u64, ChainError> {
        use alloy::sol_types::SolCall;
        let call = IERC20::transferCall {
            to: eth_address(to)?,
            amount: amount.base_units(),
        };
        let request = alloy::rpc::types::TransactionRequest::default()
            .from(eth_address(from)?)
            .to(eth_address(token)?)
            .input(call.abi_encode().into());
        let gas = self.provider.estimate_gas(request).await.map_err(|error| {
            let error = self.scrub(error);
            if error.message.contains("revert") {
                ChainError::permanent(format!("the transfer would revert: {}", error.message))
            } else {
                error
            }
        })?;
        Ok(gas.saturating_add(gas / 5))
    }

    /// An unsigned ERC-20 `transfer` call.
    pub fn build_token_transfer(&self, transfer: &TokenTransfer) -> Result<Unsigned, ChainError> {
        use alloy::sol_types::SolCall;
        if transfer.amount.is_zero() {
            return Err(ChainError::permanent("a transfer of zero"));
        }
        let call = IERC20::transferCall {
            to: eth_address(&transfer.to)?,
            amount: transfer.amount.base_units(),
        };
        Ok(Unsigned(TxEip1559 {
            chain_id: self.chain_id,
            nonce: transfer.nonce,
            gas_limit: transfer.gas_limit,
            max_fee_per_gas: transfer.fees.max_fee_per_gas,
            max_priority_fee_per_gas: transfer.fees.max_priority_fee_per_gas,
            to: TxKind::Call(eth_address(&transfer.token)?),
            value: U256::ZERO,
            access_list: Default::default(),
            input: call.abi_encode().into(),
        }))
    }

    /// An unsigned contract creation (`code` and its constructor arguments).
    pub fn build_contract_creation(
        &self,
        code: Vec<u8>,
        nonce: u64,
        fees: FeeQuote,
        gas_limit: u64,
    ) -> Unsigned {
        Unsigned(TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            to: TxKind::Create,
            value: U256::ZERO,
            access_list: Default::default(),
            input: code.into(),
        })
    }

    /// Sends signed bytes and says what the node made of them. A node that says the nonce is
    /// used is asked whether this very transaction is the one that used it (a rebroadcast
    /// after a crash): then it is `AlreadyKnown`, not a failure.
    pub async fn submit(&self, signed: &SignedTx) -> SubmitOutcome {
        match self.provider.send_raw_transaction(&signed.raw).await {
            Ok(_) => SubmitOutcome::Accepted,
            Err(error) => {
                let message = self.scrub(&error).message;
                let lower = message.to_lowercase();
                if lower.contains("already known") || lower.contains("already imported") {
                    return SubmitOutcome::AlreadyKnown;
                }
                if lower.contains("nonce too low") {
                    return match self.provider.get_transaction_by_hash(signed.txid).await {
                        Ok(Some(_)) => SubmitOutcome::AlreadyKnown,
                        Ok(None) => SubmitOutcome::Rejected {
                            retriable: false,
                            reason: message,
                        },
                        Err(lookup) => SubmitOutcome::Unknown {
                            reason: format!("{message}; and looking it up failed: {lookup}"),
                        },
                    };
                }
                if error.as_error_resp().is_some() {
                    // The node answered and refused: underpriced, insufficient funds, ...
                    let retriable = lower.contains("underpriced")
                        || lower.contains("insufficient funds")
                        || lower.contains("fee cap less than block base fee");
                    SubmitOutcome::Rejected {
                        retriable,
                        reason: message,
                    }
                } else {
                    SubmitOutcome::Unknown { reason: message }
                }
            }
        }
    }

    /// Where a transaction is, with its confirmations (head − block + 1).
    /// Gas used times the effective gas price, from the receipt; None without one.
    pub async fn fee_paid_by(&self, txid: B256) -> Result<Option<Amount>, ChainError> {
        let receipt = self
            .provider
            .get_transaction_receipt(txid)
            .await
            .map_err(|error| self.scrub(error))?;
        Ok(receipt.map(|receipt| {
            let fee = u128::from(receipt.gas_used).saturating_mul(receipt.effective_gas_price);
            Amount::from_u128(fee)
        }))
    }

    pub async fn transaction_status(&self, txid: B256) -> Result<TxStatus, ChainError> {
        if let Some(receipt) = self
            .provider
            .get_transaction_receipt(txid)
            .await
            .map_err(|error| self.scrub(error))?
        {
            let number = receipt
                .block_number
                .ok_or_else(|| transport("a receipt without a block number"))?;
            let head = self
                .provider
                .get_block_number()
                .await
                .map_err(|error| self.scrub(error))?;
            let block = self
                .block(number)
                .await?
                .ok_or_else(|| transport(format!("block {number} of a receipt is missing")))?;
            return Ok(TxStatus::Included {
                block,
                success: receipt.status(),
                confirmations: head.saturating_sub(number) + 1,
            });
        }
        match self
            .provider
            .get_transaction_by_hash(txid)
            .await
            .map_err(|error| self.scrub(error))?
        {
            Some(_) => Ok(TxStatus::Pending),
            None => Ok(TxStatus::NotFound),
        }
    }
}

/// Signs `unsigned` with key `index` of the signer: the raw bytes to send and their txid.
pub fn sign(unsigned: Unsigned, signer: &dyn Signer, index: u32) -> Result<SignedTx, ChainError> {
    let hash = unsigned.0.signature_hash();
    let signature = signer
        .sign_digest(Chain::Ethereum, index, hash.0)
        .map_err(|error| ChainError::permanent(format!("signing: {error}")))?;
    Ok(attach(unsigned, &signature.0))
}

/// The transaction with its 65-byte recoverable signature over its signing hash.
pub(crate) fn attach(unsigned: Unsigned, bytes: &[u8; 65]) -> SignedTx {
    let signature = Signature::new(
        U256::from_be_slice(&bytes[..32]),
        U256::from_be_slice(&bytes[32..64]),
        bytes[64] == 1,
    );
    let envelope = TxEnvelope::from(unsigned.0.into_signed(signature));
    let txid = *envelope.tx_hash();
    SignedTx {
        raw: envelope.encoded_2718(),
        txid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsigned(max_fee: u128, priority: u128) -> Unsigned {
        Unsigned(TxEip1559 {
            chain_id: 1,
            nonce: 4,
            gas_limit: TRANSFER_GAS,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
            to: TxKind::Call(EthAddress::ZERO),
            value: U256::from(1),
            access_list: Default::default(),
            input: Bytes::new(),
        })
    }

    #[test]
    fn replacements_raise_both_caps_by_at_least_ten_percent() {
        assert_eq!(bumped(100), 110);
        assert_eq!(bumped(101), 112, "101 + ceil(10.1): never below 10 %");
        assert_eq!(bumped(1), 2);
        assert_eq!(bumped(u128::MAX), u128::MAX, "no overflow");
        let low = FeeQuote {
            max_fee_per_gas: 1,
            max_priority_fee_per_gas: 1,
        };
        let replaced = unsigned(1_000, 10).replacement(low);
        assert_eq!(replaced.nonce(), 4);
        assert_eq!(
            replaced.fees(),
            FeeQuote {
                max_fee_per_gas: 1_100,
                max_priority_fee_per_gas: 11
            }
        );
        // Today's quote wins when it is higher; the max fee never falls under the tip.
        let high = FeeQuote {
            max_fee_per_gas: 5_000,
            max_priority_fee_per_gas: 6_000,
        };
        let replaced = unsigned(1_000, 10).replacement(high);
        assert_eq!(replaced.fees().max_priority_fee_per_gas, 6_000);
        assert_eq!(replaced.fees().max_fee_per_gas, 6_000);
        assert_eq!(replaced.0.to, unsigned(1_000, 10).0.to);
        assert_eq!(replaced.0.value, U256::from(1));
    }
}
