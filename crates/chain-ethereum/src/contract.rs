//! The provider contract ([`chain::provider`]) on Ethereum: reads, a batched block scan,
//! build / payloads / combine / parse, and submit, over the inherent methods of [`Ethereum`].

use std::collections::HashMap;

use alloy::consensus::transaction::SignerRecoverable;
use alloy::consensus::{SignableTransaction, Transaction as _, TxEnvelope};
use alloy::eips::BlockNumberOrTag;
use alloy::eips::eip2718::Decodable2718;
use alloy::network::TransactionResponse as _;
use alloy::primitives::{Address as EthAddress, B256, TxKind};
use alloy::providers::Provider;
use alloy::rpc::types::Block;
use chain::address::Address;
use chain::provider::{
    AccountSequence, Asset, BlockRef, ChainBuild, ChainError, ChainRead, ChainReplace, ChainSubmit,
    Deposit, FeeCaps, Parsed, Payment, ScanBatch, SignedTransaction, SigningPayload, SubmitOutcome,
    Tip, TxStatus, WatchSet,
};
use domain::{Amount, Chain};
use futures_util::{StreamExt, TryStreamExt};

use crate::{
    Ethereum, FeeQuote, IERC20, NativeDeposit, SignedTx, TRANSFER_GAS, Unsigned, attach, bumped,
    eth_address,
};

/// Blocks asked for in one JSON-RPC batch request.
pub const BLOCKS_PER_REQUEST: u64 = 50;

/// Batch requests in flight at once during a scan.
pub const REQUESTS_IN_FLIGHT: usize = 4;

/// Blocks per `eth_getLogs` call (providers refuse wide ranges: 1,000 to 10,000 blocks).
pub const LOG_RANGE_BLOCKS_MAX: u64 = 1_000;

/// Watched addresses per `eth_getLogs` filter (providers bound a filter's size).
pub const ADDRESSES_PER_FILTER: usize = 500;

/// What building a payment needs from the node now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// The node's next nonce for the sender (pending included), or the allocator's.
    pub nonce: u64,
    pub fees: FeeQuote,
    /// The node's gas estimate plus the margin.
    pub gas_limit: u64,
}

/// An unsigned transaction and the key that must sign it.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub tx: Unsigned,
    pub key: u32,
}

fn txid_text(txid: B256) -> String {
    txid.to_string()
}

fn parse_txid(txid: &str) -> Result<B256, ChainError> {
    txid.parse()
        .map_err(|_| ChainError::permanent(format!("{txid:?} is not an Ethereum txid")))
}

fn block_ref(block: &Block) -> BlockRef {
    BlockRef {
        number: block.header.number,
        hash: block.header.hash.to_string(),
        parent_hash: block.header.parent_hash.to_string(),
    }
}

/// Internal frames of a call trace deeper than this are refused (geth's call depth is
/// bounded at 1,024 by the EVM; a deeper answer is not a node's).
const TRACE_DEPTH_MAX: usize = 1_100;

/// The ETH a transaction's internal calls moved, from its call trace (geth's `callTracer`
/// root frame): each frame's (position, from, to, value), position being its index in the
/// trace depth first (the root, the transaction itself, is 0 and left out: its value is
/// read from the transaction). Only value that really moved: a `CALL` or a `SELFDESTRUCT`'s
/// payment, with a value above zero, in a frame that did not fail and none of whose callers
/// failed (a reverted frame undoes everything under it; a transaction that reverted has its
/// root frame failed). `DELEGATECALL`, `STATICCALL` and `CALLCODE` move nothing to another
/// account; `CREATE`s pay a new contract, never a deposit address.
pub fn internal_transfers(
    root: &serde_json::Value,
) -> Result<Vec<(u64, EthAddress, EthAddress, alloy::primitives::U256)>, ChainError> {
    let mut found = Vec::new();
    // (frame, depth), depth first in order: a stack with each frame's calls pushed reversed.
    let mut stack = vec![(root, 0usize)];
    let mut position = 0u64;
    while let Some((frame, depth)) = stack.pop() {
        if depth > TRACE_DEPTH_MAX {
            return Err(ChainError::retriable(
                "a call trace deeper than the EVM allows",
            ));
        }
        let this = position;
        position += 1;
        // A failed frame: nothing in it or under it happened; its subtree is skipped whole
        // (and still counted, so the positions after it are the trace's own).
        let failed = frame.get("error").is_some_and(|error| !error.is_null());
        let calls = frame["calls"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if failed {
            position += subtree_size(calls, depth + 1)?;
            continue;
        }
        for call in calls.iter().rev() {
            stack.push((call, depth + 1));
        }
        if this == 0 {
            continue;
        }
        let kind = frame["type"].as_str().unwrap_or("");
        if !matches!(kind, "CALL" | "SELFDESTRUCT") {
            continue;
        }
        let value = match frame["value"].as_str() {
            Some(text) => text.parse::<alloy::primitives::U256>().map_err(|_| {
                ChainError::retriable(format!("a call frame's value {text:?} is not a number"))
            })?,
            None => continue,
        };
        if value.is_zero() {
            continue;
        }
        let address = |field: &str| {
            frame[field]
                .as_str()
                .and_then(|text| text.parse::<EthAddress>().ok())
                .ok_or_else(|| {
                    ChainError::retriable(format!("a {kind} frame without a valid `{field}`"))
                })
        };
        found.push((this, address("from")?, address("to")?, value));
    }
    Ok(found)
}

/// How many frames `calls` and everything under them hold.
fn subtree_size(calls: &[serde_json::Value], depth: usize) -> Result<u64, ChainError> {
    if depth > TRACE_DEPTH_MAX {
        return Err(ChainError::retriable(
            "a call trace deeper than the EVM allows",
        ));
    }
    let mut size = 0u64;
    for call in calls {
        let inner = call["calls"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        size += 1 + subtree_size(inner, depth + 1)?;
    }
    Ok(size)
}

impl Ethereum {
    /// Blocks `from..=to`, in order, each in full (`full`: with its transactions) or with
    /// transaction hashes only; a block past the head is a retriable error.
    async fn blocks(&self, from: u64, to: u64, full: bool) -> Result<Vec<Block>, ChainError> {
        let starts: Vec<u64> = (from..=to).step_by(BLOCKS_PER_REQUEST as usize).collect();
        let batches: Vec<Vec<Block>> = futures_util::stream::iter(starts)
            .map(|start| {
                let end = to.min(start + BLOCKS_PER_REQUEST - 1);
                self.block_batch(start, end, full)
            })
            .buffered(REQUESTS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(batches.into_iter().flatten().collect())
    }

    async fn block_batch(&self, from: u64, to: u64, full: bool) -> Result<Vec<Block>, ChainError> {
        let client = self.provider.client();
        let mut batch = alloy::rpc::client::BatchRequest::new(client);
        let mut waiters = Vec::new();
        for number in from..=to {
            waiters.push(
                batch
                    .add_call::<_, Option<Block>>(
                        "eth_getBlockByNumber",
                        &(BlockNumberOrTag::Number(number), full),
                    )
                    .map_err(|error| self.scrub(error))?,
            );
        }
        batch.send().await.map_err(|error| self.scrub(error))?;
        let mut blocks = Vec::with_capacity(waiters.len());
        for (number, waiter) in (from..=to).zip(waiters) {
            let block = waiter
                .await
                .map_err(|error| self.scrub(error))?
                .ok_or_else(|| {
                    ChainError::retriable(format!("block {number} is not on the node yet"))
                })?;
            blocks.push(block);
        }
        Ok(blocks)
    }

    /// ETH paid to `watch` by the transactions of `blocks` (full blocks), reverted ones left
    /// out (their receipts are asked for in one batch), and with internal transfers read, by
    /// contracts' internal calls ([`internal_transfers`]).
    pub(crate) async fn native_in(
        &self,
        blocks: &[Block],
        watch: &[Address],
    ) -> Result<Vec<NativeDeposit>, ChainError> {
        // Parsed once per call: a watch set holds up to a hundred thousand deposit addresses.
        let watched: HashMap<[u8; 20], &Address> = watch
            .iter()
            .filter_map(|address| Some((address.ethereum_bytes()?, address)))
            .collect();
        let mut deposits = self.top_level_in(blocks, &watched).await?;
        if self.reads_internal_transfers() && !watched.is_empty() {
            // Each block's trace is one call, [`REQUESTS_IN_FLIGHT`] of them at once.
            let wanted: Vec<(B256, BlockRef)> = blocks
                .iter()
                .map(|block| (block.header.hash, block_ref(block)))
                .collect();
            let traces: Vec<_> = futures_util::stream::iter(wanted)
                .map(|(hash, reference)| async move {
                    let traces = self.call_traces(hash).await?;
                    Ok::<_, ChainError>((reference, traces))
                })
                .buffered(REQUESTS_IN_FLIGHT)
                .try_collect()
                .await?;
            for (reference, block_traces) in traces {
                for (txid, root) in block_traces {
                    for (position, from, to, value) in internal_transfers(&root)? {
                        let Some(to) = watched.get(&to.into_array()) else {
                            continue;
                        };
                        deposits.push(NativeDeposit {
                            txid,
                            position,
                            block: reference.clone(),
                            from,
                            to: (*to).clone(),
                            amount: Amount::from_base_units(value),
                        });
                    }
                }
            }
        }
        Ok(deposits)
    }

    /// ETH paid to `watched` by the transactions' own values.
    async fn top_level_in(
        &self,
        blocks: &[Block],
        watched: &HashMap<[u8; 20], &Address>,
    ) -> Result<Vec<NativeDeposit>, ChainError> {
        let mut hits = Vec::new();
        for block in blocks {
            for transaction in block.transactions.txns() {
                let Some(to) = transaction.to() else { continue };
                if transaction.value().is_zero() || !watched.contains_key(&to.into_array()) {
                    continue;
                }
                hits.push((block_ref(block), transaction.clone(), to));
            }
        }
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.provider.client();
        let mut batch = alloy::rpc::client::BatchRequest::new(client);
        let mut waiters = Vec::new();
        for (_, transaction, _) in &hits {
            waiters.push(
                batch
                    .add_call::<_, Option<alloy::rpc::types::TransactionReceipt>>(
                        "eth_getTransactionReceipt",
                        &(transaction.tx_hash(),),
                    )
                    .map_err(|error| self.scrub(error))?,
            );
        }
        batch.send().await.map_err(|error| self.scrub(error))?;
        let mut deposits = Vec::new();
        for ((block, transaction, to), waiter) in hits.into_iter().zip(waiters) {
            let receipt = waiter.await.map_err(|error| self.scrub(error))?;
            if !receipt.is_some_and(|receipt| receipt.status()) {
                continue;
            }
            let to = watched
                .get(&to.into_array())
                .map(|address| (*address).clone())
                .ok_or_else(|| ChainError::permanent("a recipient not asked for"))?;
            deposits.push(NativeDeposit {
                txid: transaction.tx_hash(),
                position: 0,
                block,
                from: transaction.from(),
                to,
                amount: Amount::from_base_units(transaction.value()),
            });
        }
        Ok(deposits)
    }

    /// Token deposits in `from..=to`, in log ranges and address chunks the node accepts.
    async fn tokens_in(
        &self,
        from: u64,
        to: u64,
        watch: &WatchSet,
        blocks: &[BlockRef],
    ) -> Result<Vec<Deposit>, ChainError> {
        let mut deposits = Vec::new();
        if watch.tokens.is_empty() || watch.addresses.is_empty() {
            return Ok(deposits);
        }
        let mut start = from;
        while start <= to {
            let end = to.min(start + LOG_RANGE_BLOCKS_MAX - 1);
            for chunk in watch.addresses.chunks(ADDRESSES_PER_FILTER) {
                for found in self
                    .token_deposits(start, end, &watch.tokens, chunk)
                    .await?
                {
                    let block = usize::try_from(found.block - from)
                        .ok()
                        .and_then(|offset| blocks.get(offset))
                        .cloned()
                        .ok_or_else(|| ChainError::retriable("a log outside the scanned range"))?;
                    if block.hash != found.block_hash.to_string() {
                        return Err(ChainError::retriable(format!(
                            "a log of block {} under another hash (a reorg while reading)",
                            found.block
                        )));
                    }
                    let position = self.position_in_transaction(&found).await?;
                    deposits.push(Deposit {
                        txid: txid_text(found.txid),
                        position,
                        block,
                        asset: Asset::Token(found.token),
                        from: Some(found.from.to_checksum(None)),
                        to: found.to,
                        amount: found.amount,
                    });
                }
            }
            start = end + 1;
        }
        Ok(deposits)
    }

    /// The index of a token deposit's log among its transaction's logs: what names it for
    /// good. A log's `logIndex` counts from the start of the block, so the same transaction
    /// mined again after a reorg, behind other transactions, would carry another one and be
    /// credited twice; its place within its own transaction does not move. Read from the
    /// transaction's receipt, which must be in the same block as the log.
    async fn position_in_transaction(
        &self,
        found: &crate::TokenDeposit,
    ) -> Result<u64, ChainError> {
        let receipt = self
            .provider
            .get_transaction_receipt(found.txid)
            .await
            .map_err(|error| self.scrub(error))?
            .ok_or_else(|| {
                ChainError::retriable(format!(
                    "no receipt for {} (a reorg while reading)",
                    found.txid
                ))
            })?;
        if receipt.block_hash != Some(found.block_hash) {
            return Err(ChainError::retriable(format!(
                "the receipt of {} is in another block (a reorg while reading)",
                found.txid
            )));
        }
        receipt
            .inner
            .logs()
            .iter()
            .position(|log| log.log_index == Some(found.log_index))
            .map(|position| position as u64)
            .ok_or_else(|| {
                ChainError::retriable(format!(
                    "log {} is not among the logs of {}",
                    found.log_index, found.txid
                ))
            })
    }

    /// Gas for a plain ETH payment: the node's estimate with a 20 % margin (a contract wallet
    /// spends more than 21,000 to receive), never under 21,000.
    async fn estimate_native_gas(
        &self,
        from: &Address,
        to: &Address,
        amount: Amount,
    ) -> Result<u64, ChainError> {
        let request = alloy::rpc::types::TransactionRequest::default()
            .from(eth_address(from)?)
            .to(eth_address(to)?)
            .value(amount.base_units());
        let gas = self
            .provider
            .estimate_gas(request)
            .await
            .map_err(|error| self.scrub(error))?;
        Ok(if gas <= TRANSFER_GAS {
            TRANSFER_GAS
        } else {
            gas.saturating_add(gas / 5)
        })
    }
}

impl ChainRead for Ethereum {
    fn chain(&self) -> Chain {
        Chain::Ethereum
    }

    async fn tip(&self) -> Result<Tip, ChainError> {
        let status = self.status().await?;
        Ok(Tip {
            head: status.head,
            finalized: status.finalized,
        })
    }

    async fn block(&self, number: u64) -> Result<Option<BlockRef>, ChainError> {
        Ethereum::block(self, number).await
    }

    async fn balance(&self, address: &Address, asset: &Asset) -> Result<Amount, ChainError> {
        match asset {
            Asset::Native => Ethereum::balance(self, address).await,
            Asset::Token(token) => self.token_balance(token, address).await,
        }
    }

    async fn transaction(&self, txid: &str) -> Result<TxStatus, ChainError> {
        self.transaction_status(parse_txid(txid)?).await
    }

    async fn fee_paid(&self, txid: &str) -> Result<Option<Amount>, ChainError> {
        self.fee_paid_by(parse_txid(txid)?).await
    }

    async fn account_sequence(
        &self,
        address: &Address,
    ) -> Result<Option<AccountSequence>, ChainError> {
        let account = eth_address(address)?;
        let mined = self
            .provider
            .get_transaction_count(account)
            .latest()
            .await
            .map_err(|error| self.scrub(error))?;
        let pending = self.pending_nonce(address).await?;
        Ok(Some(AccountSequence { mined, pending }))
    }

    async fn account_sequence_at(
        &self,
        address: &Address,
        number: u64,
    ) -> Result<Option<u64>, ChainError> {
        let mined = self
            .provider
            .get_transaction_count(eth_address(address)?)
            .number(number)
            .await
            .map_err(|error| self.scrub(error))?;
        Ok(Some(mined))
    }

    async fn scan(&self, from: u64, to: u64, watch: &WatchSet) -> Result<ScanBatch, ChainError> {
        if from > to {
            return Err(ChainError::permanent(format!(
                "an empty range {from}..={to}"
            )));
        }
        let full = !watch.addresses.is_empty();
        let blocks = self.blocks(from, to, full).await?;
        let refs: Vec<BlockRef> = blocks.iter().map(block_ref).collect();
        let mut deposits: Vec<Deposit> = self
            .native_in(&blocks, &watch.addresses)
            .await?
            .into_iter()
            .map(|found| Deposit {
                txid: txid_text(found.txid),
                position: found.position,
                block: found.block,
                asset: Asset::Native,
                from: Some(found.from.to_checksum(None)),
                to: found.to,
                amount: found.amount,
            })
            .collect();
        deposits.extend(self.tokens_in(from, to, watch, &refs).await?);
        deposits.sort_by_key(|deposit| (deposit.block.number, deposit.position));
        let batch = ScanBatch {
            blocks: refs,
            deposits,
        };
        batch.check(from)?;
        Ok(batch)
    }
}

impl ChainBuild for Ethereum {
    type Metadata = Metadata;
    type Unsigned = Prepared;

    async fn metadata(&self, payment: &Payment) -> Result<Metadata, ChainError> {
        let nonce = self.pending_nonce(&payment.from).await?;
        if let Some(fixed) = self.fixed {
            return Ok(Metadata {
                nonce,
                fees: FeeQuote {
                    max_fee_per_gas: fixed.price,
                    max_priority_fee_per_gas: fixed.price,
                },
                gas_limit: fixed.gas_limit,
            });
        }
        let fees = self.fees(self.fee_cap).await?;
        let gas_limit = match &payment.asset {
            Asset::Native => {
                self.estimate_native_gas(&payment.from, &payment.to, payment.amount)
                    .await?
            }
            Asset::Token(token) => {
                self.estimate_token_transfer_gas(&payment.from, token, &payment.to, payment.amount)
                    .await?
            }
        };
        Ok(Metadata {
            nonce,
            fees,
            gas_limit,
        })
    }

    fn max_fee(&self, metadata: &Metadata) -> Amount {
        Amount::from_u128(
            u128::from(metadata.gas_limit).saturating_mul(metadata.fees.max_fee_per_gas),
        )
    }

    fn sequence(&self, metadata: &Metadata) -> Option<u64> {
        Some(metadata.nonce)
    }

    fn set_sequence(&self, metadata: &mut Metadata, sequence: u64) {
        metadata.nonce = sequence;
    }

    fn build(&self, payment: &Payment, metadata: &Metadata) -> Result<Prepared, ChainError> {
        for address in [&payment.from, &payment.to] {
            if address.chain() != Chain::Ethereum {
                return Err(ChainError::permanent(format!(
                    "{address} is not an Ethereum address"
                )));
            }
        }
        let mut tx = match &payment.asset {
            Asset::Native => self.build_transfer(&crate::Transfer {
                to: payment.to.clone(),
                value: payment.amount,
                nonce: metadata.nonce,
                fees: metadata.fees,
            })?,
            Asset::Token(token) => self.build_token_transfer(&crate::TokenTransfer {
                token: token.clone(),
                to: payment.to.clone(),
                amount: payment.amount,
                nonce: metadata.nonce,
                fees: metadata.fees,
                gas_limit: metadata.gas_limit,
            })?,
        };
        tx.0.gas_limit = match self.fixed {
            // A sweep's gas limit is what its price and top-up were computed for.
            Some(fixed) => fixed.gas_limit,
            None => metadata.gas_limit.max(tx.0.gas_limit),
        };
        Ok(Prepared {
            tx,
            key: payment.from_index,
        })
    }

    fn payloads(&self, unsigned: &Prepared) -> Vec<SigningPayload> {
        vec![SigningPayload {
            keychain: chain::provider::Keychain::Receive,
            index: unsigned.key,
            digest: unsigned.tx.0.signature_hash().0,
        }]
    }

    fn combine(
        &self,
        unsigned: Prepared,
        signatures: &[[u8; 65]],
    ) -> Result<SignedTransaction, ChainError> {
        let [signature] = signatures else {
            return Err(ChainError::permanent(format!(
                "an Ethereum transaction takes one signature, not {}",
                signatures.len()
            )));
        };
        let SignedTx { raw, txid } = attach(unsigned.tx, signature);
        Ok(SignedTransaction {
            txid: txid_text(txid),
            raw,
        })
    }

    fn parse(&self, signed: &SignedTransaction) -> Result<Parsed, ChainError> {
        use alloy::sol_types::SolCall;
        let bad = |why: String| ChainError::permanent(format!("not a transaction of ours: {why}"));
        let envelope = TxEnvelope::decode_2718(&mut signed.raw.as_slice())
            .map_err(|error| bad(error.to_string()))?;
        if txid_text(*envelope.tx_hash()) != signed.txid {
            return Err(bad(format!("its hash is not {}", signed.txid)));
        }
        if envelope.chain_id() != Some(self.chain_id) {
            return Err(bad(format!("it is for chain {:?}", envelope.chain_id())));
        }
        let from = envelope
            .recover_signer()
            .map_err(|error| bad(error.to_string()))?;
        let TxKind::Call(callee) = envelope.kind() else {
            return Err(bad("it creates a contract".into()));
        };
        let address = |bytes: EthAddress| {
            Address::parse(
                Chain::Ethereum,
                chain::address::Network::Mainnet,
                &bytes.to_checksum(None),
            )
            .map_err(|error| bad(error.to_string()))
        };
        let input = envelope.input();
        let (to, asset, amount) = if input.is_empty() {
            (address(callee)?, Asset::Native, envelope.value())
        } else {
            if !envelope.value().is_zero() {
                return Err(bad("it sends ETH with a call".into()));
            }
            let call = IERC20::transferCall::abi_decode(input)
                .map_err(|_| bad("its call is not an ERC-20 transfer".into()))?;
            (
                address(call.to)?,
                Asset::Token(address(callee)?),
                call.amount,
            )
        };
        Ok(Parsed {
            from: address(from)?,
            to,
            asset,
            amount: Amount::from_base_units(amount),
            sequence: Some(envelope.nonce()),
        })
    }
}

impl chain::provider::ChainSweep for Ethereum {
    async fn base_fee(&self) -> Result<u128, ChainError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|error| self.scrub(error))?
            .ok_or_else(|| ChainError::retriable("the node has no latest block"))?;
        block
            .header
            .base_fee_per_gas
            .map(u128::from)
            .ok_or_else(|| {
                ChainError::permanent("the node's blocks carry no base fee (pre-London)")
            })
    }

    async fn sweep_price(&self) -> Result<u128, ChainError> {
        let base = chain::provider::ChainSweep::base_fee(self).await?;
        let quote = self.fees(self.fee_cap).await?;
        // The base fee rises at most 12.5 % a block: 27 % is room for two full blocks.
        let price = base
            .saturating_add(base.saturating_mul(27) / 100)
            .saturating_add(quote.max_priority_fee_per_gas);
        Ok(price.min(self.fee_cap))
    }

    async fn gas_limit(&self, payment: &Payment) -> Result<u64, ChainError> {
        match &payment.asset {
            Asset::Native => {
                self.estimate_native_gas(&payment.from, &payment.to, payment.amount)
                    .await
            }
            Asset::Token(token) => {
                self.estimate_token_transfer_gas(&payment.from, token, &payment.to, payment.amount)
                    .await
            }
        }
    }

    async fn balance_at(
        &self,
        address: &Address,
        asset: &Asset,
        block: u64,
    ) -> Result<Amount, ChainError> {
        match asset {
            Asset::Native => {
                let wei = self
                    .provider
                    .get_balance(eth_address(address)?)
                    .block_id(alloy::eips::BlockId::number(block))
                    .await
                    .map_err(|error| self.scrub(error))?;
                Ok(Amount::from_base_units(wei))
            }
            Asset::Token(token) => self.token_balance_at(token, address, Some(block)).await,
        }
    }

    fn at_fixed_fees(&self, price: u128, gas_limit: u64) -> Ethereum {
        Ethereum {
            fixed: Some(crate::Fixed { price, gas_limit }),
            ..self.clone()
        }
    }
}

impl ChainSubmit for Ethereum {
    async fn submit(&self, signed: &SignedTransaction) -> SubmitOutcome {
        match parse_txid(&signed.txid) {
            Ok(txid) => {
                Ethereum::submit(
                    self,
                    &SignedTx {
                        raw: signed.raw.clone(),
                        txid,
                    },
                )
                .await
            }
            Err(error) => SubmitOutcome::Rejected {
                retriable: false,
                reason: error.message,
            },
        }
    }
}

impl Ethereum {
    /// The EIP-1559 transaction inside signed bytes of ours, for this chain.
    fn stored_eip1559(
        &self,
        signed: &SignedTransaction,
    ) -> Result<alloy::consensus::TxEip1559, ChainError> {
        let bad = |why: String| ChainError::permanent(format!("not a transaction of ours: {why}"));
        let envelope = TxEnvelope::decode_2718(&mut signed.raw.as_slice())
            .map_err(|error| bad(error.to_string()))?;
        if envelope.chain_id() != Some(self.chain_id) {
            return Err(bad(format!("it is for chain {:?}", envelope.chain_id())));
        }
        match envelope {
            TxEnvelope::Eip1559(signed) => Ok(signed.tx().clone()),
            _ => Err(bad("it is not an EIP-1559 transaction".into())),
        }
    }
}

impl ChainReplace for Ethereum {
    fn fee_caps(&self, signed: &SignedTransaction) -> Result<FeeCaps, ChainError> {
        let tx = self.stored_eip1559(signed)?;
        Ok(FeeCaps {
            max_fee_per_gas: tx.max_fee_per_gas,
            max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
        })
    }

    async fn replacement(
        &self,
        signed: &SignedTransaction,
        key: u32,
        fee_cap: u128,
    ) -> Result<Option<Prepared>, ChainError> {
        let tx = self.stored_eip1559(signed)?;
        let (old_max, old_tip) = (tx.max_fee_per_gas, tx.max_priority_fee_per_gas);
        if bumped(old_max) > fee_cap {
            return Ok(None);
        }
        let estimate = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(|error| self.scrub(error))?;
        let quote = FeeQuote {
            max_fee_per_gas: estimate.max_fee_per_gas,
            max_priority_fee_per_gas: estimate
                .max_priority_fee_per_gas
                .min(estimate.max_fee_per_gas),
        };
        let mut replacement = Unsigned(tx).replacement(quote);
        // Today's quote may be over the cap; the minimum bump is not (checked above).
        replacement.0.max_fee_per_gas = replacement.0.max_fee_per_gas.min(fee_cap);
        replacement.0.max_priority_fee_per_gas = replacement
            .0
            .max_priority_fee_per_gas
            .min(replacement.0.max_fee_per_gas);
        if replacement.0.max_fee_per_gas < bumped(old_max)
            || replacement.0.max_priority_fee_per_gas < bumped(old_tip)
        {
            return Ok(None);
        }
        Ok(Some(Prepared {
            tx: replacement,
            key,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(kind: &str, to: u8, value: u64, calls: Vec<serde_json::Value>) -> serde_json::Value {
        json!({
            "type": kind,
            "from": format!("0x{}", "11".repeat(20)),
            "to": format!("0x{}", format!("{to:02x}").repeat(20)),
            "value": format!("0x{value:x}"),
            "calls": calls,
        })
    }

    fn failed(mut frame: serde_json::Value) -> serde_json::Value {
        frame["error"] = json!("execution reverted");
        frame
    }

    /// Depth-first positions, the root left out; only CALL and SELFDESTRUCT value that moved:
    /// not a delegate or static call's, not a zero value, nothing in or under a failed frame
    /// (whose frames still count for the positions after it), nothing of a failed root.
    #[test]
    fn internal_transfers_are_the_value_that_really_moved_at_trace_positions() {
        let trace = frame(
            "CALL",
            0xaa,
            7,
            vec![
                frame("CALL", 0x01, 100, vec![frame("CALL", 0x02, 20, vec![])]),
                frame("DELEGATECALL", 0x03, 50, vec![]),
                failed(frame(
                    "CALL",
                    0x04,
                    30,
                    vec![frame(
                        "CALL",
                        0x05,
                        30,
                        vec![frame("CALL", 0x06, 1, vec![])],
                    )],
                )),
                frame("STATICCALL", 0x07, 0, vec![]),
                frame("CALL", 0x08, 0, vec![]),
                frame("SELFDESTRUCT", 0x09, 40, vec![]),
                frame("CALLCODE", 0x0a, 3, vec![]),
            ],
        );
        let found: Vec<(u64, u8, u64)> = internal_transfers(&trace)
            .unwrap()
            .into_iter()
            .map(|(position, _, to, value)| (position, to.0[0], value.to::<u64>()))
            .collect();
        // Positions: root 0, 0x01 1, 0x02 2, 0x03 3, 0x04 4 (failed), 0x05 5, 0x06 6, 0x07 7,
        // 0x08 8, 0x09 9, 0x0a 10.
        assert_eq!(found, vec![(1, 0x01, 100), (2, 0x02, 20), (9, 0x09, 40)]);
        assert!(
            internal_transfers(&failed(trace.clone()))
                .unwrap()
                .is_empty(),
            "a reverted transaction moved nothing"
        );
        assert!(
            internal_transfers(&json!({"type": "CALL"}))
                .unwrap()
                .is_empty()
        );
        let mut bad = frame("CALL", 0xaa, 0, vec![frame("CALL", 0x01, 1, vec![])]);
        bad["calls"][0]["to"] = json!("nobody");
        assert!(internal_transfers(&bad).is_err());
    }
}
