//! A java-tron full node's HTTP API (`/wallet/*` and the solidity endpoints
//! `/walletsolidity/*`), and the provider contract on top of it.
//!
//! The node prints protobuf JSON without defaults (a zero, `false` or empty value is simply
//! absent), so every field is optional with a default; numbers can exceed 2^53 and are read
//! as integers, never through f64; errors come with status 200 and are told by their `code`,
//! never by their (hex) message. The API key (`TRON-PRO-API-KEY`) is sent as a header and
//! never printed: errors name the endpoint's origin only.

use std::time::Duration;

use chain::address::Address;
use chain::provider::{
    AccountSequence, Asset, BlockRef, ChainAttempts, ChainBuild, ChainError, ChainRead,
    ChainSubmit, Deposit, Parsed, Payment, ScanBatch, SignedTransaction, SigningPayload,
    SubmitOutcome, Tip, TxStatus, WatchSet,
};
use domain::{Amount, Chain};
use ruint::aliases::U256;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::death::{self, AttemptFate, NotProven, Proof, SolidBlock};
use crate::fee::{self, FeeEstimate, Prices, Resources};
use crate::transaction::{self, RefBlock, Window};

/// `Transfer(address,address,uint256)`.
pub const TRANSFER_TOPIC: &str = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";
/// The default most a TRC-20 transfer may burn: 100 TRX.
pub const FEE_LIMIT_CAP_DEFAULT: i64 = 100_000_000;
/// How many times a read is tried before its error is returned.
pub const READ_ATTEMPTS_MAX: u32 = 3;
/// The first pause between tries; doubled each time, with jitter.
pub const READ_BACKOFF_BASE: Duration = Duration::from_millis(200);
/// The size of a signed TRC-20 transfer (with its 65-byte signature and protobuf framing),
/// for the bandwidth estimate; TRX transfers are smaller.
pub const TRC20_TRANSFER_BYTES: u64 = 345;
pub const TRX_TRANSFER_BYTES: u64 = 268;
/// How many requests a scan has in flight at once (pages of blocks, then blocks'
/// TransactionInfos).
pub const SCAN_CONCURRENCY: usize = 4;

/// How the client talks to the node and what it may build.
#[derive(Clone)]
pub struct Config {
    pub url: url::Url,
    pub api_key: Option<String>,
    pub timeout: Duration,
    /// The expiration set on built transactions, after their timestamp.
    pub expiration: Duration,
    /// The most a TRC-20 transfer may burn (its `fee_limit`), in sun.
    pub fee_limit_cap: i64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &origin(&self.url))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("expiration", &self.expiration)
            .field("fee_limit_cap", &self.fee_limit_cap)
            .finish()
    }
}

impl Config {
    pub fn new(url: url::Url) -> Config {
        Config {
            url,
            api_key: None,
            timeout: Duration::from_secs(10),
            expiration: Duration::from_millis(60_000),
            fee_limit_cap: FEE_LIMIT_CAP_DEFAULT,
        }
    }
}

fn origin(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port()
            .map(|port| format!(":{port}"))
            .unwrap_or_default()
    )
}

/// A connection to one full node.
#[derive(Clone)]
pub struct Tron {
    http: reqwest::Client,
    config: Config,
    shown: String,
}

impl std::fmt::Debug for Tron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tron")
            .field("endpoint", &self.shown)
            .finish_non_exhaustive()
    }
}

/// A block as the node prints it (header only is read).
#[derive(Debug, Clone, Deserialize)]
struct BlockJson {
    #[serde(rename = "blockID", default)]
    block_id: String,
    #[serde(default)]
    block_header: Option<HeaderJson>,
    #[serde(default)]
    transactions: Vec<TransactionJson>,
}

#[derive(Debug, Clone, Deserialize)]
struct HeaderJson {
    raw_data: HeaderRawJson,
}

#[derive(Debug, Clone, Deserialize)]
struct HeaderRawJson {
    #[serde(default)]
    number: u64,
    #[serde(rename = "parentHash", default)]
    parent_hash: String,
    #[serde(default)]
    timestamp: i64,
    /// The Merkle root of the block's transactions: 32 zero bytes for a block without any.
    #[serde(rename = "txTrieRoot", default)]
    tx_trie_root: String,
}

#[derive(Debug, Clone, Deserialize)]
struct TransactionJson {
    #[serde(rename = "txID")]
    txid: String,
    #[serde(default)]
    ret: Vec<Value>,
    raw_data: Value,
}

/// A block as the death rule reads it: header, and each transaction's id and result only.
#[derive(Debug, Clone, Deserialize)]
struct SolidBlockJson {
    #[serde(rename = "blockID", default)]
    block_id: String,
    #[serde(default)]
    block_header: Option<HeaderJson>,
    #[serde(default)]
    transactions: Vec<TxidJson>,
}

#[derive(Debug, Clone, Deserialize)]
struct TxidJson {
    #[serde(rename = "txID")]
    txid: String,
    #[serde(default)]
    ret: Vec<Value>,
}

/// Whether a block's transaction entry says it succeeded: `ret[0].contractRet` SUCCESS, or
/// absent (the default is not printed).
fn contract_ret_ok(ret: &[Value]) -> bool {
    ret.first()
        .and_then(|ret| ret.get("contractRet"))
        .and_then(Value::as_str)
        .is_none_or(|ret| ret == "SUCCESS")
}

impl SolidBlockJson {
    fn solid(self) -> Result<SolidBlock, ChainError> {
        let header = self
            .block_header
            .ok_or_else(|| ChainError::retriable("a solidified block without its header"))?;
        // A block printed without transactions must be one without any: its transaction root
        // says so. A node or proxy that leaves them out would otherwise make an attempt in
        // that block look absent, and so dead.
        let empty_root = header.raw_data.tx_trie_root.len() == 64
            && header
                .raw_data
                .tx_trie_root
                .bytes()
                .all(|digit| digit == b'0');
        if self.transactions.is_empty() && !empty_root {
            return Err(ChainError::retriable(format!(
                "solidified block {} is printed without transactions, but its txTrieRoot says it has some: the node (or a proxy) leaves them out",
                header.raw_data.number
            )));
        }
        Ok(SolidBlock {
            number: header.raw_data.number,
            id: self.block_id,
            parent_hash: header.raw_data.parent_hash,
            timestamp: header.raw_data.timestamp,
            transactions: self
                .transactions
                .into_iter()
                .map(|transaction| {
                    let ok = contract_ret_ok(&transaction.ret);
                    (transaction.txid, ok)
                })
                .collect(),
        })
    }
}

/// `getblockbylimitnext`'s answer: `{"block": [...]}`, or `{}` for none.
#[derive(Debug, Clone, Deserialize)]
struct BlockListJson<T> {
    #[serde(default = "Vec::new")]
    block: Vec<T>,
}

/// A block's header, as the client uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub reference: BlockRef,
    pub id: RefBlock,
    pub timestamp: i64,
}

impl BlockJson {
    fn header(&self) -> Result<Option<Header>, ChainError> {
        let Some(header) = &self.block_header else {
            return Ok(None);
        };
        let id = RefBlock::from_hex(&self.block_id)?;
        Ok(Some(Header {
            reference: BlockRef {
                number: header.raw_data.number,
                hash: self.block_id.clone(),
                parent_hash: header.raw_data.parent_hash.clone(),
            },
            id,
            timestamp: header.raw_data.timestamp,
        }))
    }
}

/// `TransactionInfo` (gettransactioninfobyid and ...byblocknum).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct TransactionInfo {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub fee: i64,
    #[serde(rename = "blockNumber", default)]
    pub block_number: u64,
    #[serde(rename = "blockTimeStamp", default)]
    pub block_time: i64,
    #[serde(default)]
    pub receipt: Receipt,
    #[serde(default)]
    pub log: Vec<Log>,
    /// "FAILED" for a failed transaction; absent (SUCESS, the default) otherwise.
    #[serde(default)]
    pub result: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Receipt {
    /// "SUCCESS", "REVERT", "OUT_OF_ENERGY"...; absent on TRX transfers (DEFAULT).
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub energy_usage_total: i64,
    /// Sun burned for energy.
    #[serde(default)]
    pub energy_fee: i64,
    /// Bandwidth bytes taken from the account's free or staked bandwidth.
    #[serde(default)]
    pub net_usage: i64,
    #[serde(default)]
    pub net_fee: i64,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Log {
    /// The contract, 20 bytes hex without 41 (base58 when visible=true was asked).
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub data: String,
}

impl TransactionInfo {
    /// Whether the transaction did what it said: no `result: FAILED`, and a contract call's
    /// receipt says SUCCESS (a TRX transfer's receipt carries no result).
    pub fn succeeded(&self) -> bool {
        self.result.as_deref() != Some("FAILED")
            && matches!(self.receipt.result.as_deref(), None | Some("SUCCESS"))
    }
}

/// A broadcast answer.
#[derive(Debug, Clone, Deserialize, Default)]
struct BroadcastJson {
    #[serde(default)]
    result: bool,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// What the node's broadcast answer means. `code`s are java-tron's `response_code`.
pub fn broadcast_outcome(body: &Value) -> SubmitOutcome {
    let Ok(answer) = serde_json::from_value::<BroadcastJson>(body.clone()) else {
        return SubmitOutcome::Unknown {
            reason: "an answer that is not a broadcast result".into(),
        };
    };
    if answer.result {
        return SubmitOutcome::Accepted;
    }
    let message = answer
        .message
        .as_deref()
        .map(|text| {
            hex::decode(text)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .unwrap_or_else(|| text.to_string())
        })
        .unwrap_or_default();
    let code = answer.code.unwrap_or_default();
    let reason = format!("{code}: {message}");
    let rejected = |retriable| SubmitOutcome::Rejected {
        retriable,
        reason: reason.clone(),
    };
    match code.as_str() {
        // This very transaction is in the node's pool or chain.
        "DUP_TRANSACTION_ERROR" => SubmitOutcome::AlreadyKnown,
        // The node is not taking transactions now; the same bytes may be taken later.
        "SERVER_BUSY" | "NOT_ENOUGH_EFFECTIVE_CONNECTION" | "NO_CONNECTION" => rejected(true),
        // Bandwidth recovers and TRX can be topped up before the expiration: the same bytes
        // may pass later.
        "BANDWITH_ERROR" => rejected(true),
        // The reference block is not on this node's chain: a node still syncing to our
        // (solidified) reference block; another node, or this one later, may take the bytes.
        // If the chain really is another, the expiration ends the attempt anyway.
        "TAPOS_ERROR" => rejected(true),
        // A refusal that depends on the account's state (no balance yet, not enough energy):
        // the same bytes may pass once it changes, before they expire.
        "CONTRACT_VALIDATE_ERROR" | "CONTRACT_EXE_ERROR" => rejected(true),
        // Expired bytes are never taken again, but java-tron checks the expiration before it
        // looks for a duplicate: these very bytes may be on chain already. Only the attempt
        // death rule (`attempt_fate`) may call the attempt dead.
        "TRANSACTION_EXPIRATION_ERROR" => SubmitOutcome::Unknown { reason },
        // These bytes can never be valid (a signature that is not the sender's, a size the
        // chain refuses), so they cannot have landed either.
        "SIGERROR" | "TOO_BIG_TRANSACTION_ERROR" => rejected(false),
        // OTHER_ERROR and codes of later versions: the node may or may not have kept it.
        _ => SubmitOutcome::Unknown { reason },
    }
}

impl Tron {
    /// A client for the node at `config.url` (nothing is asked yet).
    pub fn new(config: Config) -> Result<Tron, ChainError> {
        // Installing the process-wide provider fails harmlessly when one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &config.api_key {
            let mut value = reqwest::header::HeaderValue::from_str(key)
                .map_err(|_| ChainError::permanent("the TRON API key is not a valid header"))?;
            value.set_sensitive(true);
            headers.insert("TRON-PRO-API-KEY", value);
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .default_headers(headers)
            .build()
            .map_err(|error| ChainError::permanent(format!("building the HTTP client: {error}")))?;
        if config.fee_limit_cap <= 0 {
            return Err(ChainError::permanent(
                "the fee limit cap must be above zero",
            ));
        }
        let expiration = i64::try_from(config.expiration.as_millis()).unwrap_or(i64::MAX);
        if expiration <= 0 || expiration > transaction::EXPIRATION_MAX_MS {
            return Err(ChainError::permanent(
                "the expiration must be more than zero and at most 24 hours",
            ));
        }
        Ok(Tron {
            shown: origin(&config.url),
            http,
            config,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.shown
    }

    /// One POST, answered with JSON; transport errors and 5xx are retriable, and the error
    /// names the endpoint's origin only.
    async fn post_once(&self, path: &str, body: &Value) -> Result<Value, ChainError> {
        let url =
            self.config.url.join(path).map_err(|error| {
                ChainError::permanent(format!("bad endpoint path {path}: {error}"))
            })?;
        let response = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|error| {
                ChainError::retriable(format!("{} {path}: {}", self.shown, error.without_url()))
            })?;
        let status = response.status();
        let text = response.text().await.map_err(|error| {
            ChainError::retriable(format!("{} {path}: {}", self.shown, error.without_url()))
        })?;
        if !status.is_success() {
            let error = format!("{} {path}: HTTP {status}", self.shown);
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                ChainError::retriable(error)
            } else {
                ChainError::permanent(error)
            });
        }
        let value: Value = serde_json::from_str(&text).map_err(|error| {
            ChainError::retriable(format!("{} {path}: not JSON: {error}", self.shown))
        })?;
        if let Some(error) = value.get("Error").and_then(Value::as_str) {
            return Err(ChainError::permanent(format!(
                "{} {path}: {error}",
                self.shown
            )));
        }
        Ok(value)
    }

    /// A read, tried again with backoff while its error is retriable.
    async fn post(&self, path: &str, body: Value) -> Result<Value, ChainError> {
        let mut pause = READ_BACKOFF_BASE;
        let mut attempt = 1;
        loop {
            match self.post_once(path, &body).await {
                Err(error) if error.retriable && attempt < READ_ATTEMPTS_MAX => {
                    tracing::debug!(endpoint = %self.shown, path, attempt, error = %error, "retrying a TRON read");
                    let jitter = Duration::from_millis(u64::from(rand_jitter()));
                    tokio::time::sleep(pause + jitter).await;
                    pause *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        value: Value,
    ) -> Result<T, ChainError> {
        serde_json::from_value(value).map_err(|error| {
            ChainError::permanent(format!("{} {path}: unexpected answer: {error}", self.shown))
        })
    }

    /// The head block's header.
    pub async fn head(&self) -> Result<Header, ChainError> {
        let block: BlockJson =
            self.parse("now", self.post("wallet/getnowblock", json!({})).await?)?;
        block
            .header()?
            .ok_or_else(|| ChainError::retriable("the node has no head block"))
    }

    /// The solidified head's header.
    pub async fn solidified(&self) -> Result<Header, ChainError> {
        let block: BlockJson = self.parse(
            "solid",
            self.post("walletsolidity/getnowblock", json!({})).await?,
        )?;
        block
            .header()?
            .ok_or_else(|| ChainError::retriable("the node has no solidified block"))
    }

    async fn block_json(&self, number: u64) -> Result<Option<BlockJson>, ChainError> {
        let value = self
            .post("wallet/getblockbynum", json!({ "num": number }))
            .await?;
        if value.as_object().is_some_and(|object| object.is_empty()) {
            return Ok(None);
        }
        self.parse("getblockbynum", value).map(Some)
    }

    /// Blocks `start..end` (at most [`death::PAGE_BLOCKS`]) of `api` ("wallet" or
    /// "walletsolidity") in one call, checked to be exactly those, in order.
    async fn block_range<T: serde::de::DeserializeOwned>(
        &self,
        api: &str,
        start: u64,
        end: u64,
        number_of: impl Fn(&T) -> Option<u64>,
    ) -> Result<Vec<T>, ChainError> {
        debug_assert!(end > start && end - start <= death::PAGE_BLOCKS);
        let path = format!("{api}/getblockbylimitnext");
        let value = self
            .post(&path, json!({ "startNum": start, "endNum": end }))
            .await?;
        let list: BlockListJson<T> = self.parse(&path, value)?;
        let numbers: Vec<Option<u64>> = list.block.iter().map(&number_of).collect();
        if numbers.iter().copied().ne((start..end).map(Some)) {
            return Err(ChainError::retriable(format!(
                "{path} {start}..{end} answered {} blocks, not each of those in order",
                numbers.len()
            )));
        }
        Ok(list.block)
    }

    /// One solidified block, as the death rule reads it.
    async fn solid_block(&self, number: u64) -> Result<SolidBlock, ChainError> {
        let value = self
            .post("walletsolidity/getblockbynum", json!({ "num": number }))
            .await?;
        if value.as_object().is_some_and(|object| object.is_empty()) {
            return Err(ChainError::retriable(format!(
                "solidified block {number} is not served"
            )));
        }
        let block: SolidBlockJson = self.parse("walletsolidity/getblockbynum", value)?;
        let block = block.solid()?;
        if block.number != number {
            return Err(ChainError::retriable(format!(
                "block {} where {number} was asked",
                block.number
            )));
        }
        Ok(block)
    }

    /// The account's TRX balance in sun and whether it exists on chain (an address that
    /// never received TRX is not activated, and `getaccount` answers `{}`).
    pub async fn account(&self, address: &Address) -> Result<(Amount, bool), ChainError> {
        self.account_on("wallet", address).await
    }

    /// The account's TRX balance as of the solidified block (the solidity node's
    /// `walletsolidity/getaccount`), and whether it existed then.
    async fn account_on(&self, api: &str, address: &Address) -> Result<(Amount, bool), ChainError> {
        let value = self
            .post(
                &format!("{api}/getaccount"),
                json!({ "address": address.as_str(), "visible": true }),
            )
            .await?;
        let activated = value.as_object().is_some_and(|object| !object.is_empty());
        let balance = value.get("balance").and_then(Value::as_u64).unwrap_or(0);
        Ok((Amount::from_u128(u128::from(balance)), activated))
    }

    /// The account's free energy and bandwidth now.
    pub async fn resources(&self, address: &Address) -> Result<Resources, ChainError> {
        let value = self
            .post(
                "wallet/getaccountresource",
                json!({ "address": address.as_str(), "visible": true }),
            )
            .await?;
        let field = |name: &str| value.get(name).and_then(Value::as_u64).unwrap_or(0);
        Ok(Resources {
            energy_available: field("EnergyLimit").saturating_sub(field("EnergyUsed")),
            staked_bandwidth: field("NetLimit").saturating_sub(field("NetUsed")),
            free_bandwidth: field("freeNetLimit").saturating_sub(field("freeNetUsed")),
        })
    }

    /// The chain's prices, read from its parameters.
    pub async fn prices(&self) -> Result<Prices, ChainError> {
        let value = self.post("wallet/getchainparameters", json!({})).await?;
        let parameters = value
            .get("chainParameter")
            .and_then(Value::as_array)
            .ok_or_else(|| ChainError::permanent("getchainparameters without chainParameter"))?;
        let find = |key: &str| -> Result<u64, ChainError> {
            parameters
                .iter()
                .find(|entry| entry.get("key").and_then(Value::as_str) == Some(key))
                // A zero value has no `value` key.
                .map(|entry| entry.get("value").and_then(Value::as_u64).unwrap_or(0))
                .ok_or_else(|| ChainError::permanent(format!("the chain parameters lack {key}")))
        };
        Ok(Prices {
            energy: find("getEnergyFee")?,
            bandwidth: find("getTransactionFee")?,
            create_account: find("getCreateAccountFee")?,
            create_account_in_contract: find("getCreateNewAccountFeeInSystemContract")?,
            create_account_bandwidth_rate: find("getCreateNewAccountBandwidthRate")?,
        })
    }

    /// Calls a contract without a transaction; returns the first result word and the energy.
    async fn constant_call(
        &self,
        owner: &Address,
        contract: &Address,
        selector: &str,
        parameter: String,
    ) -> Result<(Vec<u8>, u64), ChainError> {
        self.constant_call_on("wallet", owner, contract, selector, parameter)
            .await
    }

    /// [`Tron::constant_call`] on `api`: `wallet` (the head's state) or `walletsolidity`
    /// (the solidified block's).
    async fn constant_call_on(
        &self,
        api: &str,
        owner: &Address,
        contract: &Address,
        selector: &str,
        parameter: String,
    ) -> Result<(Vec<u8>, u64), ChainError> {
        let value = self
            .post(
                &format!("{api}/triggerconstantcontract"),
                json!({
                    "owner_address": owner.as_str(),
                    "contract_address": contract.as_str(),
                    "function_selector": selector,
                    "parameter": parameter,
                    "visible": true,
                }),
            )
            .await?;
        if value.pointer("/result/result").and_then(Value::as_bool) != Some(true) {
            return Err(ChainError::permanent(format!(
                "{selector} on {contract} failed: {}",
                value
                    .pointer("/result/code")
                    .and_then(Value::as_str)
                    .unwrap_or("no result")
            )));
        }
        let result = value
            .pointer("/constant_result/0")
            .and_then(Value::as_str)
            .and_then(|text| hex::decode(text).ok())
            .unwrap_or_default();
        let energy = value
            .get("energy_used")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok((result, energy))
    }

    fn word_of(address: &Address) -> Result<String, ChainError> {
        let bytes = address
            .tron_bytes()
            .ok_or_else(|| ChainError::permanent(format!("{address} is not a TRON address")))?;
        Ok(format!("{:0>64}", hex::encode(&bytes[1..])))
    }

    /// A TRC-20 balance by `balanceOf`.
    pub async fn token_balance(
        &self,
        token: &Address,
        owner: &Address,
    ) -> Result<Amount, ChainError> {
        self.token_balance_on("wallet", token, owner).await
    }

    /// `owner`'s balance of `asset` as of the solidified block: what no reorganisation can
    /// take away any more (the solidity node's `walletsolidity/getaccount` and
    /// `walletsolidity/triggerconstantcontract`).
    pub async fn solidified_balance(
        &self,
        owner: &Address,
        asset: &Asset,
    ) -> Result<Amount, ChainError> {
        match asset {
            Asset::Native => Ok(self.account_on("walletsolidity", owner).await?.0),
            Asset::Token(token) => self.token_balance_on("walletsolidity", token, owner).await,
        }
    }

    async fn token_balance_on(
        &self,
        api: &str,
        token: &Address,
        owner: &Address,
    ) -> Result<Amount, ChainError> {
        let (word, _) = self
            .constant_call_on(
                api,
                owner,
                token,
                "balanceOf(address)",
                Self::word_of(owner)?,
            )
            .await?;
        if word.len() != 32 {
            return Err(ChainError::permanent(format!(
                "balanceOf on {token} answered {} bytes",
                word.len()
            )));
        }
        Ok(Amount::from_base_units(U256::from_be_slice(&word)))
    }

    /// A TRC-20's `decimals()`, asked on behalf of `caller` (any account: the call is
    /// constant). Refused: an answer that is not one word, or more than 77 decimals (10^78
    /// does not fit 256 bits).
    pub async fn token_decimals(
        &self,
        token: &Address,
        caller: &Address,
    ) -> Result<u8, ChainError> {
        let (word, _) = self
            .constant_call(caller, token, "decimals()", String::new())
            .await?;
        if word.len() != 32 {
            return Err(ChainError::permanent(format!(
                "decimals on {token} answered {} bytes",
                word.len()
            )));
        }
        u8::try_from(U256::from_be_slice(&word))
            .ok()
            .filter(|decimals| *decimals <= 77)
            .ok_or_else(|| ChainError::permanent(format!("{token} claims absurd decimals")))
    }

    /// The energy a TRC-20 transfer needs now, by simulating it.
    pub async fn transfer_energy(
        &self,
        payment: &Payment,
        token: &Address,
    ) -> Result<u64, ChainError> {
        let amount = format!(
            "{:0>64}",
            hex::encode(payment.amount.base_units().to_be_bytes::<32>())
        );
        let parameter = format!("{}{amount}", Self::word_of(&payment.to)?);
        let (_, energy) = self
            .constant_call(&payment.from, token, "transfer(address,uint256)", parameter)
            .await?;
        Ok(energy)
    }

    async fn info(&self, api: &str, txid: &str) -> Result<Option<TransactionInfo>, ChainError> {
        let value = self
            .post(
                &format!("{api}/gettransactioninfobyid"),
                json!({ "value": txid }),
            )
            .await?;
        if value.as_object().is_some_and(|object| object.is_empty()) {
            return Ok(None);
        }
        self.parse("gettransactioninfobyid", value).map(Some)
    }

    /// What may be done about the attempt whose signed bytes are `raw` (DESIGN.md §2.3 and
    /// `death.rs`): Landed once a solidified block holds it, Dead only once every solidified
    /// block that could hold it has been read without it and the solidified chain is past its
    /// expiration, MayLand before. A node that cannot show that is an error, never Dead.
    pub async fn attempt_fate_of(&self, raw: &[u8]) -> Result<AttemptFate, ChainError> {
        let decoded = transaction::stamp(raw)?;
        self.fate_of(
            &decoded.txid,
            decoded.ref_block_bytes,
            decoded.ref_block_hash,
            decoded.expiration,
        )
        .await
    }

    /// [`Tron::attempt_fate_of`] from what the bytes say: the txid, the reference block's
    /// `ref_block_bytes` and `ref_block_hash`, and the expiration (ms).
    pub async fn fate_of(
        &self,
        txid: &str,
        ref_block_bytes: [u8; 2],
        ref_block_hash: [u8; 8],
        expiration: i64,
    ) -> Result<AttemptFate, ChainError> {
        let not_proven = |error: NotProven| ChainError::retriable(format!("{txid}: {error}"));
        // The solidified head first: had the transaction entered a solidified block after
        // the lookups below, a head read after them could make a live attempt look dead.
        let solidified = self.solidified().await?;
        let head = solidified.reference.number;
        // The node's transaction index: a quick yes. Its `{}` means "not (yet) indexed" as
        // much as "absent", so a no is only taken from the blocks themselves.
        if let Some(info) = self.info("walletsolidity", txid).await?
            && info.block_number > 0
            && info.block_number <= head
        {
            return Ok(AttemptFate::Landed {
                block: info.block_number,
                success: info.succeeded(),
            });
        }
        if solidified.timestamp < expiration {
            // A solidified block yet to come may hold it.
            return Ok(AttemptFate::MayLand);
        }
        // The reference block R: the latest solidified block with its low 16 bits, unless
        // that one is already at or past the expiration (nothing after it can hold the
        // transaction); then the one 65,536 blocks before.
        let mut reference = death::ref_block_number(ref_block_bytes, head).ok_or_else(|| {
            not_proven(NotProven(
                "no solidified block matches its reference".into(),
            ))
        })?;
        let mut block = self.solid_block(reference).await?;
        // Blocks with the same low bits at or past the expiration cannot be it (it was made
        // before its expiration): step back a cycle at a time, a bounded number of times (a
        // reconcile that comes back after a long outage may be several cycles late).
        let mut cycles = 0;
        while block.timestamp >= expiration {
            cycles += 1;
            reference = reference
                .checked_sub(death::REF_BLOCK_CYCLE)
                .filter(|_| cycles <= death::REF_BLOCK_CYCLES_BACK_MAX)
                .ok_or_else(|| {
                    not_proven(NotProven(
                        "no solidified block matches its reference".into(),
                    ))
                })?;
            block = self.solid_block(reference).await?;
        }
        // The block found must be the reference block itself (its id's bytes 8..16): a block
        // with the same low bits 65,536 blocks later would leave the blocks between them
        // unread. Ours are solidified blocks, so this holds for every attempt we make.
        let hash = hex::decode(&block.id).ok();
        if hash.as_deref().and_then(|id| id.get(8..16)) != Some(ref_block_hash.as_slice()) {
            return Err(not_proven(NotProven(format!(
                "its reference block is not solidified block {reference}"
            ))));
        }
        let mut proof = Proof::new(txid, expiration, &block);
        // Blocks R+1.. up to the first one at or past the expiration, a page at a time; the
        // proof bounds the count.
        while proof.next() <= head {
            let start = proof.next();
            let end = start
                .saturating_add(death::PAGE_BLOCKS)
                .min(head.saturating_add(1));
            let page: Vec<SolidBlockJson> = self
                .block_range("walletsolidity", start, end, |block: &SolidBlockJson| {
                    block
                        .block_header
                        .as_ref()
                        .map(|header| header.raw_data.number)
                })
                .await?;
            let mut verdict = None;
            for block in page {
                verdict = proof.feed(&block.solid()?).map_err(not_proven)?;
                if verdict.is_some() {
                    break;
                }
            }
            if let Some(verdict) = verdict {
                return Ok(verdict);
            }
        }
        proof
            .finish((head, solidified.timestamp))
            .map_err(not_proven)
    }

    /// The TransactionInfos of block `number` (a bare array; `[]` for an empty block).
    pub async fn block_infos(&self, number: u64) -> Result<Vec<TransactionInfo>, ChainError> {
        let value = self
            .post(
                "wallet/gettransactioninfobyblocknum",
                json!({ "num": number }),
            )
            .await?;
        if value.as_object().is_some_and(|object| object.is_empty()) {
            return Ok(Vec::new());
        }
        self.parse("gettransactioninfobyblocknum", value)
    }

    /// A transaction's window from now: the solidified head as its reference block, the
    /// configured expiration.
    fn window(
        &self,
        head: &Header,
        solidified: &Header,
        fee_limit: i64,
    ) -> Result<Window, ChainError> {
        // The node judges the expiration against its head block's time: counted from the
        // later of this clock and that time, a clock behind the chain cannot make bytes that
        // are expired when they arrive.
        let now = now_ms();
        if head.timestamp > now.saturating_add(HEAD_AHEAD_MAX_MS) {
            // Bytes expiring after a made-up time would stay "may land" for as long.
            return Err(ChainError::retriable(format!(
                "the node's head block is {} s ahead of this clock: check the node (or this machine's clock)",
                (head.timestamp - now) / 1_000
            )));
        }
        let timestamp = now.max(head.timestamp);
        let expiration = i64::try_from(self.config.expiration.as_millis()).unwrap_or(i64::MAX);
        Ok(Window {
            ref_block: solidified.id,
            timestamp,
            expiration: timestamp
                .checked_add(expiration)
                .ok_or_else(|| ChainError::permanent("the expiration is out of range"))?,
            fee_limit,
        })
    }

    /// The estimate for `payment` now.
    pub async fn estimate(&self, payment: &Payment) -> Result<FeeEstimate, ChainError> {
        let (prices, resources) = tokio::try_join!(self.prices(), self.resources(&payment.from))?;
        match &payment.asset {
            Asset::Native => {
                let (_, activated) = self.account(&payment.to).await?;
                Ok(fee::estimate(
                    prices,
                    resources,
                    TRX_TRANSFER_BYTES,
                    0,
                    !activated,
                ))
            }
            Asset::Token(token) => {
                let energy = self.transfer_energy(payment, token).await?;
                Ok(fee::estimate(
                    prices,
                    resources,
                    TRC20_TRANSFER_BYTES,
                    energy,
                    false,
                ))
            }
        }
    }
}

fn rand_jitter() -> u16 {
    // Jitter spreads retries of many workers; the low bits of the clock are enough for that.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    u16::try_from(nanos % 100).unwrap_or(0)
}

/// A watch set's addresses by their 21 bytes, decoded once per scan, not once per block:
/// base58check decoding hashes twice, and a watch set holds up to a hundred thousand deposit
/// addresses (decoded twice a block, they were nearly all of a scan's time).
pub struct WatchIndex<'a> {
    tokens: std::collections::HashMap<[u8; 21], &'a Address>,
    addresses: std::collections::HashMap<[u8; 21], &'a Address>,
}

impl<'a> WatchIndex<'a> {
    pub fn new(watch: &'a WatchSet) -> WatchIndex<'a> {
        WatchIndex {
            tokens: by_bytes(&watch.tokens),
            addresses: by_bytes(&watch.addresses),
        }
    }
}

/// Token deposits to the watched addresses in a block's TransactionInfos: `Transfer` logs of
/// allowlisted tokens, in transactions that succeeded.
pub fn token_deposits(
    block: &BlockRef,
    infos: &[TransactionInfo],
    watch: &WatchIndex<'_>,
) -> Result<Vec<Deposit>, ChainError> {
    let (tokens, addresses) = (&watch.tokens, &watch.addresses);
    let mut deposits = Vec::new();
    for info in infos.iter().filter(|info| info.succeeded()) {
        for (position, log) in info.log.iter().enumerate() {
            if log.topics.len() != 3 || !log.topics[0].eq_ignore_ascii_case(TRANSFER_TOPIC) {
                continue;
            }
            let Some(token) = log_address(&log.address) else {
                continue;
            };
            let Some(token) = tokens.get(&token) else {
                continue;
            };
            let (Some(from), Some(to)) =
                (topic_address(&log.topics[1]), topic_address(&log.topics[2]))
            else {
                continue;
            };
            let Some(to) = addresses.get(&to) else {
                continue;
            };
            let data = hex::decode(&log.data).map_err(|_| {
                ChainError::permanent(format!("a Transfer log of {} with bad data", info.id))
            })?;
            if data.len() != 32 {
                continue;
            }
            deposits.push(Deposit {
                txid: info.id.clone(),
                position: position as u64,
                block: block.clone(),
                asset: Asset::Token((*token).clone()),
                from: Some(transaction::base58(&from)),
                to: (*to).clone(),
                amount: Amount::from_base_units(U256::from_be_slice(&data)),
            });
        }
    }
    Ok(deposits)
}

/// The TRON addresses of `addresses` by their 21 bytes.
fn by_bytes(addresses: &[Address]) -> std::collections::HashMap<[u8; 21], &Address> {
    addresses
        .iter()
        .filter_map(|address| Some((address.tron_bytes()?, address)))
        .collect()
}

/// A log's contract: 20-byte hex without 41 (or 21 with it).
fn log_address(text: &str) -> Option<[u8; 21]> {
    let bytes = hex::decode(text).ok()?;
    let mut address = [transaction::ADDRESS_PREFIX; 21];
    match bytes.len() {
        20 => address[1..].copy_from_slice(&bytes),
        21 if bytes[0] == transaction::ADDRESS_PREFIX => address.copy_from_slice(&bytes),
        _ => return None,
    }
    Some(address)
}

/// An indexed address topic: 12 zero bytes and the 20 address bytes.
fn topic_address(text: &str) -> Option<[u8; 21]> {
    let bytes = hex::decode(text).ok()?;
    if bytes.len() != 32 || bytes[..12] != [0u8; 12] {
        return None;
    }
    let mut address = [transaction::ADDRESS_PREFIX; 21];
    address[1..].copy_from_slice(&bytes[12..]);
    Some(address)
}

/// Native deposits to `watch` in a block's transactions: successful `TransferContract`s.
fn native_deposits(block: &BlockRef, json: &BlockJson, watch: &WatchIndex<'_>) -> Vec<Deposit> {
    let addresses = &watch.addresses;
    let mut deposits = Vec::new();
    for transaction in &json.transactions {
        let ok = contract_ret_ok(&transaction.ret);
        let contract = &transaction.raw_data["contract"][0];
        if !ok || contract["type"] != "TransferContract" {
            continue;
        }
        let value = &contract["parameter"]["value"];
        let Some(to) = value["to_address"]
            .as_str()
            .and_then(|text| hex::decode(text).ok())
        else {
            continue;
        };
        let Some(to) = <[u8; 21]>::try_from(to)
            .ok()
            .and_then(|to| addresses.get(&to))
        else {
            continue;
        };
        let Some(amount) = value["amount"].as_u64() else {
            continue;
        };
        deposits.push(Deposit {
            txid: transaction.txid.clone(),
            position: 0,
            block: block.clone(),
            asset: Asset::Native,
            from: value["owner_address"]
                .as_str()
                .and_then(|text| hex::decode(text).ok())
                .and_then(|bytes| <[u8; 21]>::try_from(bytes).ok())
                .map(|bytes| transaction::base58(&bytes)),
            to: (*to).clone(),
            amount: Amount::from_u128(u128::from(amount)),
        });
    }
    deposits
}

/// What building a transfer needs now.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub window: Window,
    pub estimate: FeeEstimate,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl ChainRead for Tron {
    fn chain(&self) -> Chain {
        Chain::Tron
    }

    async fn tip(&self) -> Result<Tip, ChainError> {
        let (head, solidified) = tokio::try_join!(self.head(), self.solidified())?;
        Ok(Tip {
            head: head.reference.number,
            finalized: Some(solidified.reference.number),
        })
    }

    async fn block(&self, number: u64) -> Result<Option<BlockRef>, ChainError> {
        Ok(match self.block_json(number).await? {
            Some(json) => json.header()?.map(|header| header.reference),
            None => None,
        })
    }

    async fn balance(&self, address: &Address, asset: &Asset) -> Result<Amount, ChainError> {
        match asset {
            Asset::Native => Ok(self.account(address).await?.0),
            Asset::Token(token) => self.token_balance(token, address).await,
        }
    }

    async fn transaction(&self, txid: &str) -> Result<TxStatus, ChainError> {
        if txid.len() != 64 || !txid.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(ChainError::permanent(format!(
                "{txid:?} is not a TRON txid (64 hex digits)"
            )));
        }
        let Some(info) = self.info("wallet", txid).await? else {
            return Ok(TxStatus::NotFound);
        };
        if info.block_number == 0 {
            return Ok(TxStatus::Pending);
        }
        let head = self.head().await?;
        let block = self
            .block(info.block_number)
            .await?
            .ok_or_else(|| ChainError::retriable("the transaction's block is not served"))?;
        Ok(TxStatus::Included {
            block,
            success: info.succeeded(),
            confirmations: head.reference.number.saturating_sub(info.block_number) + 1,
        })
    }

    /// The `fee` of the transaction's info (sun: bandwidth and energy burnt), once it is in
    /// a block.
    async fn fee_paid(&self, txid: &str) -> Result<Option<Amount>, ChainError> {
        Ok(self
            .info("wallet", txid)
            .await?
            .filter(|info| info.block_number > 0)
            .map(|info| Amount::from_u128(u128::try_from(info.fee.max(0)).unwrap_or(0))))
    }

    async fn account_sequence(
        &self,
        _address: &Address,
    ) -> Result<Option<AccountSequence>, ChainError> {
        // TRON has no account nonce: a transaction is unique by its raw data and expires.
        Ok(None)
    }

    async fn scan(&self, from: u64, to: u64, watch: &WatchSet) -> Result<ScanBatch, ChainError> {
        use futures_util::{StreamExt, TryStreamExt};
        let mut batch = ScanBatch::default();
        if from > to {
            return Ok(batch);
        }
        // The blocks, a page of 100 in one call, a few pages at a time.
        let pages: Vec<(u64, u64)> = (from..=to)
            .step_by(usize::try_from(death::PAGE_BLOCKS).unwrap_or(100))
            .map(|start| {
                (
                    start,
                    start
                        .saturating_add(death::PAGE_BLOCKS)
                        .min(to.saturating_add(1)),
                )
            })
            .collect();
        let blocks: Vec<BlockJson> = futures_util::stream::iter(pages)
            .map(|(start, end)| {
                self.block_range("wallet", start, end, |block: &BlockJson| {
                    block
                        .block_header
                        .as_ref()
                        .map(|header| header.raw_data.number)
                })
            })
            .buffered(SCAN_CONCURRENCY)
            .try_concat()
            .await?;
        // Token transfers come from contract calls only: the TransactionInfos (with their
        // logs) of the blocks that have one, a few blocks at a time.
        let with_calls: Vec<u64> = if watch.tokens.is_empty() {
            Vec::new()
        } else {
            blocks
                .iter()
                .filter(|block| block.transactions.iter().any(is_contract_call))
                .filter_map(|block| {
                    block
                        .block_header
                        .as_ref()
                        .map(|header| header.raw_data.number)
                })
                .collect()
        };
        let mut infos: std::collections::HashMap<u64, Vec<TransactionInfo>> =
            futures_util::stream::iter(with_calls)
                .map(|number| async move {
                    Ok::<_, ChainError>((number, self.block_infos(number).await?))
                })
                .buffered(SCAN_CONCURRENCY)
                .try_collect()
                .await?;
        let index = WatchIndex::new(watch);
        for json in &blocks {
            let header = json
                .header()?
                .ok_or_else(|| ChainError::retriable("a block without its header in a scan"))?;
            batch
                .deposits
                .extend(native_deposits(&header.reference, json, &index));
            if let Some(infos) = infos.remove(&header.reference.number) {
                let infos = infos_of_block(json, header.reference.number, infos)?;
                batch
                    .deposits
                    .extend(token_deposits(&header.reference, &infos, &index)?);
            }
            batch.blocks.push(header.reference);
        }
        batch.check(from)?;
        Ok(batch)
    }
}

/// The contract types whose transactions can emit logs (a TRC-20 `Transfer` can also come
/// from a constructor).
const CONTRACT_CALLS: [&str; 2] = ["TriggerSmartContract", "CreateSmartContract"];

fn is_contract_call(transaction: &TransactionJson) -> bool {
    transaction.raw_data["contract"][0]["type"]
        .as_str()
        .is_some_and(|kind| CONTRACT_CALLS.contains(&kind))
}

/// How far ahead of this clock the node's head block may be before building is refused: a
/// node far in the future would make bytes that stay "may land" (and block their payout)
/// until the real chain catches up with that time.
const HEAD_AHEAD_MAX_MS: i64 = 3_600_000;

/// The TransactionInfos of `block` that belong to it: every contract call in it must have
/// one (a node whose index lags answers `[]` or a part: retried, never skipped), and an
/// info for a transaction that is not in the block read is left out.
fn infos_of_block(
    block: &BlockJson,
    number: u64,
    infos: Vec<TransactionInfo>,
) -> Result<Vec<TransactionInfo>, ChainError> {
    let ids: std::collections::HashSet<&str> = infos.iter().map(|info| info.id.as_str()).collect();
    if let Some(missing) = block.transactions.iter().find(|transaction| {
        is_contract_call(transaction) && !ids.contains(transaction.txid.as_str())
    }) {
        return Err(ChainError::retriable(format!(
            "the node has no transaction info yet for {} in block {number}: its index lags",
            missing.txid
        )));
    }
    let in_block: std::collections::HashSet<&str> = block
        .transactions
        .iter()
        .map(|transaction| transaction.txid.as_str())
        .collect();
    Ok(infos
        .into_iter()
        .filter(|info| in_block.contains(info.id.as_str()))
        .collect())
}

impl ChainBuild for Tron {
    type Metadata = Metadata;
    type Unsigned = transaction::Unsigned;

    async fn metadata(&self, payment: &Payment) -> Result<Metadata, ChainError> {
        let (head, solidified, estimate) =
            tokio::try_join!(self.head(), self.solidified(), self.estimate(payment))?;
        let fee_limit = match payment.asset {
            Asset::Native => 0,
            Asset::Token(_) => {
                let needed = i64::try_from(estimate.burn).unwrap_or(i64::MAX);
                if needed > self.config.fee_limit_cap {
                    return Err(ChainError::retriable(format!(
                        "the transfer would burn {needed} sun, above the cap of {} sun",
                        self.config.fee_limit_cap
                    )));
                }
                self.config.fee_limit_cap
            }
        };
        Ok(Metadata {
            window: self.window(&head, &solidified, fee_limit)?,
            estimate,
        })
    }

    fn max_fee(&self, metadata: &Metadata) -> Amount {
        let limit = u128::try_from(metadata.window.fee_limit).unwrap_or(0);
        Amount::from_u128(limit.max(u128::from(metadata.estimate.burn)))
    }

    fn sequence(&self, _metadata: &Metadata) -> Option<u64> {
        None
    }

    fn set_sequence(&self, _metadata: &mut Metadata, _sequence: u64) {}

    fn build(
        &self,
        payment: &Payment,
        metadata: &Metadata,
    ) -> Result<transaction::Unsigned, ChainError> {
        transaction::build(payment, &metadata.window)
    }

    fn payloads(&self, unsigned: &transaction::Unsigned) -> Vec<SigningPayload> {
        vec![unsigned.payload()]
    }

    fn combine(
        &self,
        unsigned: transaction::Unsigned,
        signatures: &[[u8; 65]],
    ) -> Result<SignedTransaction, ChainError> {
        let [signature] = signatures else {
            return Err(ChainError::permanent(format!(
                "one signature expected, {} given",
                signatures.len()
            )));
        };
        transaction::attach(unsigned, signature)
    }

    /// The bytes read back; a TRC-20 call whose `fee_limit` is above the configured cap is
    /// refused (it could burn more than the operator allows).
    fn parse(&self, signed: &SignedTransaction) -> Result<Parsed, ChainError> {
        transaction::parse_capped(signed, self.config.fee_limit_cap).map(|decoded| decoded.parsed)
    }
}

impl ChainAttempts for Tron {
    fn expires_at(&self, signed: &SignedTransaction) -> Result<Option<i64>, ChainError> {
        Ok(Some(transaction::parse_stamp(signed)?.expiration))
    }

    async fn attempt_fate(&self, signed: &SignedTransaction) -> Result<AttemptFate, ChainError> {
        let decoded = transaction::parse_stamp(signed)?;
        self.fate_of(
            &decoded.txid,
            decoded.ref_block_bytes,
            decoded.ref_block_hash,
            decoded.expiration,
        )
        .await
    }
}

impl ChainSubmit for Tron {
    async fn submit(&self, signed: &SignedTransaction) -> SubmitOutcome {
        // Sent once: a retry is the caller's decision, with the same bytes.
        match self
            .post_once(
                "wallet/broadcasthex",
                &json!({ "transaction": hex::encode(&signed.raw) }),
            )
            .await
        {
            Ok(body) => broadcast_outcome(&body),
            Err(error) => SubmitOutcome::Unknown {
                reason: error.message,
            },
        }
    }
}

/// Staked TRX whose energy is `energy` by the chain's totals (java-tron's
/// `EnergyProcessor.calculateGlobalEnergyLimit`: whole TRX × `TotalEnergyLimit` /
/// `TotalEnergyWeight`), in sun, with one TRX more for java-tron's rounding through a
/// double, and at least the 1 TRX a delegation lends.
pub fn stake_for(energy: u64, total_energy_limit: u64, total_energy_weight: u64) -> Option<u64> {
    if total_energy_limit == 0 {
        return None;
    }
    let trx = u128::from(energy)
        .checked_mul(u128::from(total_energy_weight))?
        .div_ceil(u128::from(total_energy_limit))
        .checked_add(1)?;
    let sun = u64::try_from(trx.checked_mul(1_000_000)?).ok()?;
    Some(sun.max(transaction::DELEGATION_MIN_SUN))
}

impl chain::provider::ChainEnergy for Tron {
    async fn settled_balance(
        &self,
        address: &Address,
        asset: &Asset,
    ) -> Result<Amount, ChainError> {
        self.solidified_balance(address, asset).await
    }

    async fn delegatable(&self, owner: &Address) -> Result<u64, ChainError> {
        // `type` 1 is ENERGY; `max_size` 0 is left out (`{}`).
        let value = self
            .post(
                "wallet/getcandelegatedmaxsize",
                json!({ "owner_address": owner.as_str(), "type": 1, "visible": true }),
            )
            .await?;
        Ok(value.get("max_size").and_then(Value::as_u64).unwrap_or(0))
    }

    async fn stake_for_energy(&self, owner: &Address, energy: u64) -> Result<u64, ChainError> {
        // The totals are the chain's, whoever asks, but an account that does not exist is
        // answered `{}`: the staking account asks.
        let value = self
            .post(
                "wallet/getaccountresource",
                json!({ "address": owner.as_str(), "visible": true }),
            )
            .await?;
        let field = |name: &str| value.get(name).and_then(Value::as_u64).unwrap_or(0);
        stake_for(
            energy,
            field("TotalEnergyLimit"),
            field("TotalEnergyWeight"),
        )
        .ok_or_else(|| {
            ChainError::permanent("getaccountresource has no TotalEnergyLimit (or it overflows)")
        })
    }

    async fn energy_needed(&self, payment: &Payment) -> Result<u64, ChainError> {
        match &payment.asset {
            Asset::Native => Ok(0),
            Asset::Token(token) => self.transfer_energy(payment, token).await,
        }
    }

    async fn account_resources(
        &self,
        address: &Address,
    ) -> Result<chain::provider::AccountResources, ChainError> {
        let ((balance, activated), resources) =
            tokio::try_join!(self.account(address), self.resources(address))?;
        Ok(chain::provider::AccountResources {
            activated,
            balance: u64::try_from(balance.base_units()).unwrap_or(u64::MAX),
            energy_available: resources.energy_available,
            free_bandwidth: resources.free_bandwidth,
            staked_bandwidth: resources.staked_bandwidth,
        })
    }

    async fn burn_prices(&self) -> Result<chain::provider::BurnPrices, ChainError> {
        let prices = self.prices().await?;
        Ok(chain::provider::BurnPrices {
            energy: prices.energy,
            bandwidth: prices.bandwidth,
            create_account: prices
                .create_account
                .saturating_add(prices.create_account_in_contract),
        })
    }

    fn transfer_bytes(&self, asset: &Asset) -> u64 {
        match asset {
            Asset::Native => TRX_TRANSFER_BYTES,
            Asset::Token(_) => TRC20_TRANSFER_BYTES,
        }
    }

    async fn build_delegation(
        &self,
        delegation: &chain::provider::Delegation,
    ) -> Result<transaction::Unsigned, ChainError> {
        let (head, solidified) = tokio::try_join!(self.head(), self.solidified())?;
        transaction::build_delegation(delegation, &self.window(&head, &solidified, 0)?)
    }

    fn parse_delegation(
        &self,
        signed: &SignedTransaction,
    ) -> Result<chain::provider::Delegation, ChainError> {
        let decoded = transaction::decode_delegation(&signed.raw)?;
        if decoded.txid != signed.txid {
            return Err(ChainError::permanent(format!(
                "the bytes hash to {}, not to the txid {} they came with",
                decoded.txid, signed.txid
            )));
        }
        Ok(decoded.delegation)
    }

    async fn receipt(
        &self,
        txid: &str,
    ) -> Result<Option<chain::provider::ResourceReceipt>, ChainError> {
        let Some(info) = self
            .info("wallet", txid)
            .await?
            .filter(|info| info.block_number > 0)
        else {
            return Ok(None);
        };
        let sun = |value: i64| u64::try_from(value).unwrap_or(0);
        Ok(Some(chain::provider::ResourceReceipt {
            success: info.succeeded(),
            fee: sun(info.fee),
            energy: sun(info.receipt.energy_usage_total),
            energy_fee: sun(info.receipt.energy_fee),
            bandwidth: sun(info.receipt.net_usage),
            bandwidth_fee: sun(info.receipt.net_fee),
        }))
    }
}
