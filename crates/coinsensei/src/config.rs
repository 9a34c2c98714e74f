//! Configuration: defaults, then a TOML file (`--config`), then `COINSENSEI_*` environment
//! variables, then command-line flags. Everything is validated once, here, into [`Settings`];
//! a bad value is an error that names its key and where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use domain::limits::*;
use domain::{Chain, WorkerId, WorkerKind};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use worker::WorkerSpec;

/// The data directory `coinsensei up` uses unless told otherwise.
pub const DATA_DIR_DEFAULT: &str = ".coinsensei";
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8080";

/// Every key an environment variable may set, as `COINSENSEI_<KEY>`. Other `COINSENSEI_*`
/// variables (tokens, keystores of later features) are not configuration and are ignored here.
const ENV_KEYS: &[&str] = &[
    "database_url",
    "data_dir",
    "listen",
    "heartbeat_interval",
    "lost_after_intervals",
    "drain_timeout",
    "job_lease",
    "queue_backend",
    "redis_url",
    "redis_prefix",
    "concurrency",
    "database_max_connections",
    "metrics_public",
    "public_url",
    "ethereum_rpc_url",
    "ethereum_chain_id",
    "tron_rpc_url",
    "tron_api_key",
    "tron_fee_limit_max_sun",
    "tron_genesis_block_id",
    "bitcoin_rpc_url",
    "bitcoin_rpc_cookie_file",
    "bitcoin_rpc_user",
    "bitcoin_rpc_password",
    "bitcoin_network",
    "keystore",
    "keystore_password_file",
    "tron_hot_wallet_index",
    "ethereum_hot_wallet_index",
    "bitcoin_hot_wallet_index",
    "ethereum_confirmations",
    "bitcoin_confirmations",
    "ethereum_replace_after",
    "bitcoin_batch_max",
    "bitcoin_batch_wait",
    "bitcoin_bump_after",
    "bitcoin_wallet_start_block",
    "tron_deposit_xpub",
    "ethereum_deposit_xpub",
    "bitcoin_deposit_xpub",
    "ethereum_deposit_confirmations",
    "ethereum_deposit_internal_transfers",
    "bitcoin_deposit_confirmations",
    "tron_deposit_start_block",
    "ethereum_deposit_start_block",
    "bitcoin_deposit_start_block",
    "ethereum_sweep_base_fee_max_gwei",
    "ethereum_gas_wallet_index",
    "ethereum_cold_address",
    "tron_gas_wallet_index",
    "tron_staking_wallet_index",
    "tron_cold_address",
    "approvals_required",
    "limit_reference_separator",
    "withdrawal_allowlist",
    "withdrawal_allowlist_cooldown",
    "health_memory_limit_mb",
    "health_memory_warning_percent",
    "health_heartbeat_warning_intervals",
    "health_window",
    "health_error_rate_warning",
    "health_error_rate_unhealthy",
    "health_error_rate_min_jobs",
    "health_balance_max_age",
    "health_withdrawal_stuck_after",
    "health_restart",
    "health_restart_after",
    "health_node_timeout",
    "health_sync_lag_tron",
    "health_sync_lag_ethereum",
    "health_sync_lag_bitcoin",
    "health_pause_withdrawals",
    "health_pause_after",
    "ledger_reconcile_interval",
];

/// The configuration file's shape. Unknown keys are refused, so a typo is not silently ignored.
/// Not `Debug`: its URLs are as configured, secrets and all; print [`Settings`] instead.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`; default `sqlite://DATA_DIR/coinsensei.db`.
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub listen: String,
    /// Seconds between heartbeats (fractions allowed).
    pub heartbeat_interval: f64,
    pub lost_after_intervals: u32,
    /// Seconds a stopping worker waits for in-flight work.
    pub drain_timeout: f64,
    /// Seconds a claimed job stays leased without an extension (workers extend at a third).
    pub job_lease: f64,
    /// Where jobs live: `database` (the store above; jobs commit with its data) or `redis`.
    pub queue_backend: String,
    pub redis_url: String,
    /// Every Redis key starts with this, so several systems can share a server.
    pub redis_prefix: String,
    pub concurrency: u32,
    pub database_max_connections: u32,
    /// Serve `/metrics` without a token (a Prometheus on a private network); default false.
    pub metrics_public: bool,
    /// The URL browsers reach the dashboard at (`https://ops.example.com`), when a reverse
    /// proxy in front rewrites `Host`: dashboard POSTs must come from this origin, and https
    /// here makes the session cookie `Secure`. Default: none (the request's `Host` is the origin).
    pub public_url: Option<String>,
    /// The Ethereum node's JSON-RPC endpoint (http:// or https://); its path and query may
    /// hold a provider's API key, so they are never shown.
    pub ethereum_rpc_url: Option<String>,
    /// The chain the node must be on (1 mainnet, 11155111 Sepolia, 31337 anvil); checked at
    /// connection.
    pub ethereum_chain_id: Option<u64>,
    /// The TRON full node's HTTP API (http:// or https://, e.g. https://api.trongrid.io);
    /// its `/walletsolidity/*` endpoints must be served at the same origin.
    pub tron_rpc_url: Option<String>,
    /// The API key sent as `TRON-PRO-API-KEY` (TronGrid); never shown.
    pub tron_api_key: Option<Secret>,
    /// The most TRX (in sun) a TRC-20 transfer may burn: the `fee_limit` set on it.
    pub tron_fee_limit_max_sun: i64,
    /// The id (64 hex digits) of block 0 of the TRON network the node must be on, which
    /// names the network (mainnet's is `00000000000000001ebf88508a03865c71d452e25f4d51194196a1d22b6653dc`);
    /// checked by the health checker. Default: none (the node's network is shown, not checked).
    pub tron_genesis_block_id: Option<String>,
    /// Bitcoin Core's JSON-RPC endpoint (http:// or https://, without credentials in it);
    /// the node's network must be the one `--network` (COINSENSEI_BITCOIN_NETWORK) names.
    pub bitcoin_rpc_url: Option<String>,
    /// The node's cookie file (`DATADIR/.cookie`, rewritten at each start), read at each
    /// connection; or else `bitcoin_rpc_user` with `bitcoin_rpc_password` (rpcauth).
    pub bitcoin_rpc_cookie_file: Option<PathBuf>,
    pub bitcoin_rpc_user: Option<String>,
    /// Never shown: not in messages, logs nor `Debug`.
    pub bitcoin_rpc_password: Option<Secret>,
    /// The workers `coinsensei up` runs; default one per supported kind × chain.
    pub workers: Option<Vec<RawWorker>>,
    /// The Bitcoin network addresses and the node must be on: mainnet (default), testnet,
    /// signet or regtest.
    pub bitcoin_network: String,
    /// Assets to add to (or replace in) the built-in mainnet catalogue: a test network's
    /// token contracts, say. `[[assets]] chain = "ethereum", symbol = "USDT", decimals = 6,
    /// contract = "0x..."`.
    pub assets: Option<Vec<RawAsset>>,
    /// The encrypted keystore the withdrawal workers sign with (`coinsensei keys create`).
    pub keystore: Option<PathBuf>,
    /// A file holding the keystore's password (never the password itself in configuration).
    pub keystore_password_file: Option<PathBuf>,
    /// The keystore index of each chain's hot wallet, which pays withdrawals (default 0).
    pub tron_hot_wallet_index: u32,
    pub ethereum_hot_wallet_index: u32,
    pub bitcoin_hot_wallet_index: u32,
    /// Blocks on top of an Ethereum withdrawal's block before it is completed (default 12);
    /// a block at or below the node's `finalized` block counts as confirmed too.
    pub ethereum_confirmations: u64,
    /// Confirmations of a Bitcoin payout before its withdrawals are completed (default 3).
    pub bitcoin_confirmations: u64,
    /// Seconds an Ethereum transaction may wait unmined before it is replaced with fees
    /// raised by at least 10 % (default 120).
    pub ethereum_replace_after: f64,
    /// Withdrawals per Bitcoin transaction at most (default 25).
    pub bitcoin_batch_max: u32,
    /// Seconds a Bitcoin withdrawal may wait for others to batch with (default 30).
    pub bitcoin_batch_wait: f64,
    /// Seconds a Bitcoin payout may stay unconfirmed before its fee is bumped (default 600).
    pub bitcoin_bump_after: f64,
    /// The first block the Bitcoin withdrawal worker reads for its unspent outputs (default
    /// 1): no output of the hot wallet or of a deposit address may be older.
    pub bitcoin_wallet_start_block: Option<u64>,
    /// Per-asset withdrawal rules: `[[withdrawal_policy]] chain = "ethereum", asset = "ETH",
    /// min = "0.001", max = "50", approval_above = "5", floor = "20"` (decimals in the
    /// asset's unit).
    pub withdrawal_policy: Option<Vec<RawPolicy>>,
    /// Approvals from this many distinct operator tokens release a withdrawal held above its
    /// asset's `approval_above` (default 2).
    pub approvals_required: u32,
    /// What ends a reference's prefix for `daily_limit_per_reference` (default "/": the
    /// prefix of `user:42/w:7` is `user:42`).
    pub limit_reference_separator: String,
    /// Allowlist mode for every asset: a withdrawal pays only to a destination registered
    /// through `POST /api/v1/withdrawal-destinations` (default false; an asset's
    /// `[[withdrawal_policy]] allowlist = true` turns it on for that asset alone).
    pub withdrawal_allowlist: bool,
    /// Seconds a newly registered destination waits before withdrawals may use it (default
    /// 86400, 24 hours).
    pub withdrawal_allowlist_cooldown: f64,
    /// A worker's resident memory limit in MiB: over it unhealthy, over
    /// `health_memory_warning_percent` of it a warning (default 512, 80).
    pub health_memory_limit_mb: u64,
    pub health_memory_warning_percent: u32,
    /// A heartbeat older than this many intervals is a warning (default 2); at
    /// `lost_after_intervals` it is unhealthy.
    pub health_heartbeat_warning_intervals: u32,
    /// Seconds the job-progress and error-rate checks look back over (default 60).
    pub health_window: f64,
    /// Failed over finished jobs in the window, as a fraction: a warning at or over the
    /// first, unhealthy at or over the second (default 0.05, 0.25), judged from
    /// `health_error_rate_min_jobs` finished jobs (default 10).
    pub health_error_rate_warning: f64,
    pub health_error_rate_unhealthy: f64,
    pub health_error_rate_min_jobs: u32,
    /// Seconds since a hot wallet's balance was last read before its chain is unhealthy
    /// (default 120; the withdrawal workers read every 15 s).
    pub health_balance_max_age: f64,
    /// Seconds a withdrawal may stay in one unfinished state before it counts as stuck
    /// (default 1800; twice that is unhealthy).
    pub health_withdrawal_stuck_after: f64,
    /// Restart a worker that stayed unhealthy `health_restart_after` seconds (default true,
    /// 300); audited as `worker.restart` by the actor `health`.
    pub health_restart: bool,
    pub health_restart_after: f64,
    /// Seconds one probe of a chain's node may take before the node counts as unreachable
    /// (default 5).
    pub health_node_timeout: f64,
    /// Seconds the newest block of each chain's node may be old before the node is behind:
    /// a warning over it, unhealthy over twice (defaults 30, 60, 3600).
    pub health_sync_lag_tron: f64,
    pub health_sync_lag_ethereum: f64,
    pub health_sync_lag_bitcoin: f64,
    /// Pause a chain's withdrawal queue while its node has been unhealthy for
    /// `health_pause_after` seconds, and resume it when the node recovers (default true, 30);
    /// audited as `queue.pause` / `queue.resume` by the actor `health`. A queue an operator
    /// paused is never resumed by it.
    pub health_pause_withdrawals: bool,
    pub health_pause_after: f64,
    /// Seconds between the control plane's own ledger reconciliations (as `coinsensei ledger
    /// reconcile` of every configured chain, recorded for `/metrics`); 0 (the default) leaves
    /// it to a scheduled command (docs/ledger.md).
    pub ledger_reconcile_interval: f64,
    /// Queues whose workers `coinsensei up` scales by depth (none by default).
    pub autoscale: Option<Vec<RawAutoscale>>,
    /// Where the control plane posts events (`docs/webhooks.md`; none by default).
    pub webhooks: Option<Vec<crate::webhooks::RawWebhook>>,
    /// Each chain's deposit account xpub (`coinsensei keys xpub --chain C --deposit`): the
    /// control plane derives deposit addresses from it, publicly; a chain without one issues
    /// none.
    pub tron_deposit_xpub: Option<String>,
    pub ethereum_deposit_xpub: Option<String>,
    pub bitcoin_deposit_xpub: Option<String>,
    /// Blocks on top of an Ethereum deposit's block before it is credited (default 12); a
    /// block at or below the node's `finalized` block is credited too.
    pub ethereum_deposit_confirmations: u64,
    /// Whether the Ethereum deposit worker also reads ETH that contracts pay the deposit
    /// addresses by internal calls, from each block's call trace (default false: the node
    /// must answer `debug_traceBlockByHash` with `callTracer`, which many hosted ones do not).
    pub ethereum_deposit_internal_transfers: bool,
    /// Confirmations of a Bitcoin deposit before it is credited (default 6; never 0).
    pub bitcoin_deposit_confirmations: u64,
    /// The block a chain's deposit scanner starts from when it has no cursor yet (default:
    /// the head when it first runs; set it to the block of the first address issued when
    /// addresses were handed out before the first scanner ran).
    pub tron_deposit_start_block: Option<u64>,
    pub ethereum_deposit_start_block: Option<u64>,
    pub bitcoin_deposit_start_block: Option<u64>,
    /// Per-asset deposit rules: `[[deposit_policy]] chain = "ethereum", asset = "USDT",
    /// dust = "0.5"`: a deposit below `dust` (a decimal in the asset's unit) is recorded
    /// `ignored`, never credited.
    pub deposit_policy: Option<Vec<RawDepositPolicy>>,
    /// Our own addresses whose transfers to deposit addresses are internal (sweeps, gas
    /// top-ups) and never credited: hot, gas and staking wallets. Per chain (TRON and
    /// Ethereum; a Bitcoin output carries no sender).
    pub tron_internal_addresses: Option<Vec<String>>,
    pub ethereum_internal_addresses: Option<Vec<String>>,
    /// Consolidation: new Ethereum sweeps wait while the base fee is above this many gwei
    /// per gas (default 50).
    pub ethereum_sweep_base_fee_max_gwei: u64,
    /// Consolidation: the key index (account 0) of the wallet that pays ERC-20 sweeps' gas
    /// top-ups (default: the hot wallet, `ethereum_hot_wallet_index`). It must be in
    /// `ethereum_internal_addresses`, so its top-ups are never credited as deposits.
    pub ethereum_gas_wallet_index: Option<u32>,
    /// Consolidation: where the hot wallet's balance above an asset's `[[deposit_policy]]
    /// hot_ceiling` goes. Watch-only: its key must not be in the keystore.
    pub ethereum_cold_address: Option<String>,
    /// Consolidation: the key index (account 0) of the wallet that pays TRON sweeps' TRX
    /// top-ups (activation, bandwidth, energy to burn; default: the hot wallet,
    /// `tron_hot_wallet_index`). It must be in `tron_internal_addresses`.
    pub tron_gas_wallet_index: Option<u32>,
    /// Consolidation: the key index (account 0) of the staking account whose TRX is staked
    /// for energy (FreezeBalanceV2) and lent to TRC-20 sweeps; unset: energy is always burned.
    /// It must be in `tron_internal_addresses`.
    pub tron_staking_wallet_index: Option<u32>,
    /// Consolidation: where the TRON hot wallet's balance above an asset's `hot_ceiling` goes.
    /// Watch-only: its key must not be in the keystore.
    pub tron_cold_address: Option<String>,
}

/// One asset's `[[deposit_policy]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDepositPolicy {
    pub chain: String,
    pub asset: String,
    pub dust: Option<String>,
    /// Consolidation: a deposit address holding more than this (a decimal in the asset's
    /// unit) is swept into the hot wallet; without it the asset is never swept.
    pub sweep_min: Option<String>,
    /// Consolidation: the hot wallet's balance above this (a decimal in the asset's unit)
    /// goes to the chain's cold address (`ethereum_cold_address`, `tron_cold_address`).
    pub hot_ceiling: Option<String>,
}

/// One asset's `[[withdrawal_policy]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub chain: String,
    pub asset: String,
    pub min: Option<String>,
    pub max: Option<String>,
    pub approval_above: Option<String>,
    pub floor: Option<String>,
    pub daily_limit: Option<String>,
    pub daily_limit_per_reference: Option<String>,
    /// Allowlist mode for this asset alone (see `withdrawal_allowlist`).
    pub allowlist: Option<bool>,
}

/// One `[[autoscale]]` entry: the roadmap's policy for one queue; every key but `queue` has
/// the roadmap's default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoscale {
    /// A queue a configured worker takes jobs from, `CHAIN.KIND` (`tron.deposit`).
    pub queue: String,
    pub min_workers: Option<i64>,
    pub max_workers: Option<i64>,
    /// Scale up while more jobs than this are ready (default 50).
    pub scale_up_depth: Option<i64>,
    /// Scale down while fewer than this are ready (default 5).
    pub scale_down_depth: Option<i64>,
    pub scale_up_step: Option<i64>,
    pub scale_down_step: Option<i64>,
    /// Seconds after any change before the next (default 300).
    pub cooldown: Option<f64>,
}

/// An asset of the configuration's `[[assets]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAsset {
    pub chain: String,
    pub symbol: String,
    pub decimals: u8,
    pub contract: Option<String>,
}

/// A configured secret: read like a string, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    pub kind: String,
    pub chain: String,
    pub id: Option<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            database_url: None,
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            listen: LISTEN_DEFAULT.into(),
            heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT.as_secs_f64(),
            lost_after_intervals: LOST_AFTER_INTERVALS_DEFAULT,
            drain_timeout: DRAIN_TIMEOUT_DEFAULT.as_secs_f64(),
            job_lease: JOB_LEASE_DEFAULT.as_secs_f64(),
            queue_backend: "database".into(),
            redis_url: "redis://127.0.0.1:6379/".into(),
            redis_prefix: "cs:".into(),
            concurrency: WORKER_CONCURRENCY_DEFAULT,
            database_max_connections: 4,
            metrics_public: false,
            public_url: None,
            ethereum_rpc_url: None,
            ethereum_chain_id: None,
            tron_rpc_url: None,
            tron_api_key: None,
            tron_fee_limit_max_sun: chain_tron::node::FEE_LIMIT_CAP_DEFAULT,
            tron_genesis_block_id: None,
            bitcoin_rpc_url: None,
            bitcoin_rpc_cookie_file: None,
            bitcoin_rpc_user: None,
            bitcoin_rpc_password: None,
            workers: None,
            bitcoin_network: "mainnet".into(),
            assets: None,
            withdrawal_policy: None,
            approvals_required: web::withdrawals::APPROVALS_REQUIRED_DEFAULT,
            limit_reference_separator: web::withdrawals::REFERENCE_SEPARATOR_DEFAULT.to_string(),
            withdrawal_allowlist: false,
            withdrawal_allowlist_cooldown: web::withdrawals::ALLOWLIST_COOLDOWN_DEFAULT
                .as_secs_f64(),
            keystore: None,
            keystore_password_file: None,
            tron_hot_wallet_index: 0,
            ethereum_hot_wallet_index: 0,
            bitcoin_hot_wallet_index: 0,
            ethereum_confirmations: 12,
            bitcoin_confirmations: 3,
            ethereum_replace_after: 120.0,
            bitcoin_batch_max: 25,
            bitcoin_batch_wait: 30.0,
            bitcoin_bump_after: 600.0,
            bitcoin_wallet_start_block: None,
            health_memory_limit_mb: HEALTH_MEMORY_LIMIT_DEFAULT / (1024 * 1024),
            health_memory_warning_percent: 80,
            health_heartbeat_warning_intervals: 2,
            health_window: HEALTH_WINDOW_DEFAULT.as_secs_f64(),
            health_error_rate_warning: 0.05,
            health_error_rate_unhealthy: 0.25,
            health_error_rate_min_jobs: 10,
            health_balance_max_age: HEALTH_BALANCE_MAX_AGE_DEFAULT.as_secs_f64(),
            health_withdrawal_stuck_after: HEALTH_WITHDRAWAL_STUCK_AFTER_DEFAULT.as_secs_f64(),
            health_restart: true,
            health_restart_after: HEALTH_RESTART_AFTER_DEFAULT.as_secs_f64(),
            health_node_timeout: HEALTH_NODE_TIMEOUT_DEFAULT.as_secs_f64(),
            health_sync_lag_tron: HEALTH_SYNC_LAG_TRON_DEFAULT.as_secs_f64(),
            health_sync_lag_ethereum: HEALTH_SYNC_LAG_ETHEREUM_DEFAULT.as_secs_f64(),
            health_sync_lag_bitcoin: HEALTH_SYNC_LAG_BITCOIN_DEFAULT.as_secs_f64(),
            health_pause_withdrawals: true,
            health_pause_after: HEALTH_PAUSE_AFTER_DEFAULT.as_secs_f64(),
            ledger_reconcile_interval: 0.0,
            autoscale: None,
            webhooks: None,
            tron_deposit_xpub: None,
            ethereum_deposit_xpub: None,
            bitcoin_deposit_xpub: None,
            ethereum_deposit_confirmations: 12,
            ethereum_deposit_internal_transfers: false,
            bitcoin_deposit_confirmations: 6,
            tron_deposit_start_block: None,
            ethereum_deposit_start_block: None,
            bitcoin_deposit_start_block: None,
            deposit_policy: None,
            tron_internal_addresses: None,
            ethereum_internal_addresses: None,
            ethereum_sweep_base_fee_max_gwei: 50,
            ethereum_gas_wallet_index: None,
            ethereum_cold_address: None,
            tron_gas_wallet_index: None,
            tron_staking_wallet_index: None,
            tron_cold_address: None,
        }
    }
}

/// Flags that override the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
}

/// One worker `coinsensei up` keeps running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEntry {
    pub id: WorkerId,
    pub spec: WorkerSpec,
}

/// `scheme://host[:port]` of an RPC endpoint, all that may be shown of it: providers put API
/// keys in the userinfo, the path or the query.
fn origin_only(url: &str) -> String {
    url::Url::parse(url)
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_else(|_| "<not a URL>".into())
}

/// Where the job queue lives.
#[derive(Clone, PartialEq, Eq)]
pub enum QueueSettings {
    /// In the configured database, so jobs commit together with the system's own data.
    Database,
    Redis {
        url: String,
        prefix: String,
    },
}

impl std::fmt::Debug for QueueSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueSettings::Database => f.write_str("Database"),
            QueueSettings::Redis { url, prefix } => f
                .debug_struct("Redis")
                .field("url", &store::redact_url(url))
                .field("prefix", prefix)
                .finish(),
        }
    }
}

/// Where the Ethereum node is.
#[derive(Clone)]
pub struct EthereumSettings {
    pub rpc_url: String,
    pub chain_id: Option<u64>,
}

impl std::fmt::Debug for EthereumSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthereumSettings")
            .field("rpc_url", &origin_only(&self.rpc_url))
            .field("chain_id", &self.chain_id)
            .finish()
    }
}

/// The TRON node and what transfers built for TRON may burn.
#[derive(Clone)]
pub struct TronSettings {
    /// Absent when no node is configured: `tx build` needs none.
    pub rpc_url: Option<url::Url>,
    pub api_key: Option<Secret>,
    pub fee_limit_max_sun: i64,
    /// Block 0's id of the network the node must be on (lowercase hex), when configured.
    pub genesis_block_id: Option<String>,
}

impl std::fmt::Debug for TronSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL's path and query may carry a key too: the origin only.
        f.debug_struct("TronSettings")
            .field(
                "rpc_url",
                &self
                    .rpc_url
                    .as_ref()
                    .map(|url| url.origin().ascii_serialization()),
            )
            .field("api_key", &self.api_key)
            .field("fee_limit_max_sun", &self.fee_limit_max_sun)
            .field("genesis_block_id", &self.genesis_block_id)
            .finish()
    }
}

/// Where the Bitcoin node is and how to authenticate to it.
#[derive(Clone)]
pub struct BitcoinSettings {
    pub rpc_url: String,
    pub credentials: BitcoinCredentials,
}

#[derive(Clone)]
pub enum BitcoinCredentials {
    CookieFile(PathBuf),
    UserPassword { user: String, password: String },
}

impl std::fmt::Debug for BitcoinSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credentials = match &self.credentials {
            BitcoinCredentials::CookieFile(path) => format!("cookie file {}", path.display()),
            BitcoinCredentials::UserPassword { user, .. } => format!("user {user}, password .."),
        };
        // A provider's key may sit in the URL's path or query: the origin only.
        f.debug_struct("BitcoinSettings")
            .field("rpc_url", &origin_only(&self.rpc_url))
            .field("credentials", &credentials)
            .finish()
    }
}

impl TronSettings {
    /// The client configuration for the node, or what to set when there is none.
    pub fn node(&self) -> anyhow::Result<chain_tron::Config> {
        let url = self
            .rpc_url
            .clone()
            .context("no TRON node configured: set tron_rpc_url (COINSENSEI_TRON_RPC_URL)")?;
        let mut config = chain_tron::Config::new(url);
        config.api_key = self.api_key.as_ref().map(|key| key.0.clone());
        config.fee_limit_cap = self.fee_limit_max_sun;
        Ok(config)
    }
}

/// The highest `tron_fee_limit_max_sun`: the network's own maximum fee limit, 15,000 TRX.
pub const TRON_FEE_LIMIT_MAX_SUN: i64 = 15_000_000_000;

fn tron(raw: &RawConfig) -> anyhow::Result<TronSettings> {
    let rpc_url = match &raw.tron_rpc_url {
        None => None,
        Some(text) => {
            let mut url = url::Url::parse(text)
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
                .context(
                    "invalid configuration key `tron_rpc_url`: not an http:// or https:// URL",
                )?;
            // Endpoints are joined to the URL: a path is a directory.
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            Some(url)
        }
    };
    if let Some(key) = &raw.tron_api_key
        && (key.0.is_empty() || !key.0.bytes().all(|byte| byte.is_ascii_graphic()))
    {
        bail!(
            "invalid configuration key `tron_api_key`: empty or not printable ASCII (the key is not shown)"
        );
    }
    if raw.tron_fee_limit_max_sun <= 0 || raw.tron_fee_limit_max_sun > TRON_FEE_LIMIT_MAX_SUN {
        bail!(
            "invalid configuration key `tron_fee_limit_max_sun`: {} is out of range; expected 1 to {TRON_FEE_LIMIT_MAX_SUN} sun",
            raw.tron_fee_limit_max_sun
        );
    }
    let genesis_block_id = match &raw.tron_genesis_block_id {
        None => None,
        Some(id) => {
            let id = id.trim().trim_start_matches("0x").to_ascii_lowercase();
            if id.len() != 64 || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                bail!(
                    "invalid configuration key `tron_genesis_block_id`: not a block id (64 hex digits)"
                );
            }
            Some(id)
        }
    };
    Ok(TronSettings {
        rpc_url,
        api_key: raw.tron_api_key.clone(),
        fee_limit_max_sun: raw.tron_fee_limit_max_sun,
        genesis_block_id,
    })
}

/// Validated configuration. Its `Debug` shows no secret: the database and Redis URLs with
/// their passwords replaced, RPC endpoints by their origin only, keys redacted.
#[derive(Clone)]
pub struct Settings {
    pub database_url: String,
    pub listen: SocketAddr,
    pub heartbeat_interval: Duration,
    pub lost_after_intervals: u32,
    pub drain_timeout: Duration,
    pub job_lease: Duration,
    pub queue: QueueSettings,
    pub concurrency: u32,
    pub database_max_connections: u32,
    pub metrics_public: bool,
    /// The dashboard's public origin (`scheme://host[:port]`), when configured.
    pub public_url: Option<String>,
    pub ethereum: Option<EthereumSettings>,
    pub tron: TronSettings,
    pub bitcoin: Option<BitcoinSettings>,
    pub workers: Vec<WorkerEntry>,
    /// What withdrawals are paid with and checked against.
    pub withdrawals: WithdrawalSettings,
    /// What the deposit workers and the deposit-address intake use.
    pub deposits: DepositSettings,
    /// The health checker's limits and its restart action.
    pub health: HealthSettings,
    /// The queues `up` scales, each with its policy.
    pub autoscale: Vec<AutoscaleEntry>,
    /// How often the control plane reconciles the ledger itself; None: never.
    pub ledger_reconcile_interval: Option<Duration>,
    /// The endpoints the control plane posts events to.
    pub webhooks: Vec<crate::webhooks::Endpoint>,
    /// The file the settings came from, passed on to child processes.
    pub config_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub limits: domain::health::HealthLimits,
    /// Restart a worker unhealthy for `restart_after`; None: never.
    pub restart_after: Option<Duration>,
    /// The longest one probe of a chain's node may take.
    pub node_timeout: Duration,
    /// Pause a chain's withdrawal queue once its node has been unhealthy this long; None:
    /// never.
    pub pause_after: Option<Duration>,
}

/// One autoscaled queue: the workers it scales are of `spec`, numbered after the configured ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoscaleEntry {
    pub queue: domain::Name,
    pub spec: WorkerSpec,
    pub policy: domain::autoscale::ScalePolicy,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Taken apart field by field, so a new field cannot be left out (or in) unseen.
        let Settings {
            database_url,
            listen,
            heartbeat_interval,
            lost_after_intervals,
            drain_timeout,
            job_lease,
            queue,
            concurrency,
            database_max_connections,
            metrics_public,
            public_url,
            ethereum,
            tron,
            bitcoin,
            workers,
            withdrawals,
            deposits,
            health,
            autoscale,
            ledger_reconcile_interval,
            webhooks,
            config_file,
        } = self;
        f.debug_struct("Settings")
            .field("database_url", &store::redact_url(database_url))
            .field("listen", listen)
            .field("heartbeat_interval", heartbeat_interval)
            .field("lost_after_intervals", lost_after_intervals)
            .field("drain_timeout", drain_timeout)
            .field("job_lease", job_lease)
            .field("queue", queue)
            .field("concurrency", concurrency)
            .field("database_max_connections", database_max_connections)
            .field("metrics_public", metrics_public)
            .field("public_url", public_url)
            .field("ethereum", ethereum)
            .field("tron", tron)
            .field("bitcoin", bitcoin)
            .field("workers", workers)
            .field("withdrawals", withdrawals)
            .field("deposits", deposits)
            .field("health", health)
            .field("autoscale", autoscale)
            .field("ledger_reconcile_interval", ledger_reconcile_interval)
            .field("webhooks", webhooks)
            .field("config_file", config_file)
            .finish()
    }
}

impl Settings {
    /// Loads and validates the configuration.
    pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Settings> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(path) = config_file {
            if !path.is_file() {
                bail!("configuration file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("COINSENSEI_").only(ENV_KEYS));
        if let Some(data_dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("data_dir", data_dir));
        }
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Serialized::default("listen", listen));
        }
        let raw: RawConfig = figment
            .extract()
            .map_err(|error| anyhow::anyhow!(describe(error)))?;
        let mut settings = validate(raw)?;
        settings.config_file = config_file.map(Path::to_path_buf);
        Ok(settings)
    }

    pub fn store_options(&self) -> store::StoreOptions {
        store::StoreOptions {
            max_connections: self.database_max_connections,
            ..store::StoreOptions::default()
        }
    }
}

/// Figment's messages name the key; say where the value came from too, one line per problem.
fn describe(error: figment::Error) -> String {
    let mut lines = Vec::new();
    for error in error {
        let key = error.path.join(".");
        let source = error
            .metadata
            .as_ref()
            .map(|metadata| match &metadata.source {
                Some(source) => format!("{} ({source})", metadata.name),
                None => metadata.name.to_string(),
            });
        let mut line = format!("invalid configuration: {}", error.kind);
        if !key.is_empty() {
            line = format!("invalid configuration key `{key}`: {}", error.kind);
        }
        if let Some(source) = source {
            line.push_str(&format!(" [from {source}]"));
        }
        lines.push(line);
    }
    lines.join("\n")
}

fn seconds(key: &str, value: f64, min: Duration, max: Duration) -> anyhow::Result<Duration> {
    if !value.is_finite() || value < min.as_secs_f64() || value > max.as_secs_f64() {
        bail!(
            "invalid configuration key `{key}`: {value} is out of range; expected seconds between {} and {}",
            min.as_secs_f64(),
            max.as_secs_f64()
        );
    }
    Ok(Duration::from_secs_f64(value))
}

fn within(key: &str, value: u32, min: u32, max: u32) -> anyhow::Result<u32> {
    if value < min || value > max {
        bail!(
            "invalid configuration key `{key}`: {value} is out of range; expected {min} to {max}"
        );
    }
    Ok(value)
}

fn validate(mut raw: RawConfig) -> anyhow::Result<Settings> {
    let tron = tron(&raw)?;
    let raw_autoscale = raw.autoscale.take();
    let webhooks = crate::webhooks::endpoints(raw.webhooks.take().unwrap_or_default())?;
    let withdrawals = withdrawal_settings(&raw)?;
    let deposits = deposit_settings(&raw, &withdrawals.catalogue, withdrawals.bitcoin_network)?;
    let listen: SocketAddr = raw.listen.parse().with_context(|| {
        format!(
            "invalid configuration key `listen`: {:?} is not an address like 127.0.0.1:8080",
            raw.listen
        )
    })?;
    let heartbeat_interval = seconds(
        "heartbeat_interval",
        raw.heartbeat_interval,
        HEARTBEAT_INTERVAL_MIN,
        HEARTBEAT_INTERVAL_MAX,
    )?;
    let lost_after_intervals = within("lost_after_intervals", raw.lost_after_intervals, 2, 100)?;
    let health = health_settings(&raw, heartbeat_interval, lost_after_intervals)?;
    // Every balance of every wallet is read at each round: at least a second apart.
    let ledger_reconcile_interval = if raw.ledger_reconcile_interval == 0.0 {
        None
    } else {
        Some(seconds(
            "ledger_reconcile_interval",
            raw.ledger_reconcile_interval,
            Duration::from_secs(1),
            Duration::from_secs(30 * 24 * 3600),
        )?)
    };
    let drain_timeout = seconds(
        "drain_timeout",
        raw.drain_timeout,
        Duration::ZERO,
        Duration::from_secs(3600),
    )?;
    let job_lease = seconds("job_lease", raw.job_lease, JOB_LEASE_MIN, JOB_LEASE_MAX)?;
    let queue = match raw.queue_backend.as_str() {
        "database" => QueueSettings::Database,
        "redis" => {
            if !(raw.redis_url.starts_with("redis://") || raw.redis_url.starts_with("rediss://")) {
                bail!(
                    "invalid configuration key `redis_url`: {:?} is not redis://HOST:PORT/DB",
                    store::redact_url(&raw.redis_url)
                );
            }
            if raw.redis_prefix.is_empty()
                || raw.redis_prefix.len() > 50
                || raw.redis_prefix.contains(char::is_whitespace)
            {
                bail!(
                    "invalid configuration key `redis_prefix`: use 1 to 50 characters without spaces"
                );
            }
            QueueSettings::Redis {
                url: raw.redis_url,
                prefix: raw.redis_prefix,
            }
        }
        other => bail!(
            "invalid configuration key `queue_backend`: {other:?}; expected \"database\" or \"redis\""
        ),
    };
    let concurrency = within("concurrency", raw.concurrency, 1, WORKER_CONCURRENCY_MAX)?;
    // A worker holds one connection for its change feed; it needs at least one more to work.
    let database_max_connections = within(
        "database_max_connections",
        raw.database_max_connections,
        2,
        1000,
    )?;
    if raw.data_dir.as_os_str().is_empty() {
        bail!("invalid configuration key `data_dir`: empty path");
    }
    let database_url = match raw.database_url {
        Some(url) if url.trim().is_empty() => {
            bail!("invalid configuration key `database_url`: empty")
        }
        Some(url) => {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                bail!(
                    "invalid configuration key `database_url`: {:?} is neither sqlite://PATH nor postgres://USER@HOST/DB",
                    store::redact_url(&url)
                );
            }
            url
        }
        None => format!("sqlite://{}", raw.data_dir.join("coinsensei.db").display()),
    };
    let bitcoin = bitcoin(
        raw.bitcoin_rpc_url,
        raw.bitcoin_rpc_cookie_file,
        raw.bitcoin_rpc_user,
        raw.bitcoin_rpc_password.map(|secret| secret.0),
    )?;
    let workers = match raw.workers {
        None => worker::SUPPORTED
            .iter()
            .map(|&(kind, chain)| WorkerEntry {
                id: default_worker_id(kind, chain, 1),
                spec: WorkerSpec { kind, chain },
            })
            .collect(),
        Some(entries) => workers(entries)?,
    };
    let autoscale = autoscale(raw_autoscale.unwrap_or_default(), &workers)?;
    Ok(Settings {
        database_url,
        listen,
        heartbeat_interval,
        lost_after_intervals,
        drain_timeout,
        job_lease,
        queue,
        concurrency,
        database_max_connections,
        metrics_public: raw.metrics_public,
        public_url: raw.public_url.as_deref().map(public_origin).transpose()?,
        ethereum: match raw.ethereum_rpc_url {
            None => None,
            Some(url) => {
                let parsed = url::Url::parse(&url).ok().filter(|parsed| {
                    matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some()
                });
                if parsed.is_none() {
                    bail!(
                        "invalid configuration key `ethereum_rpc_url`: not an http:// or https:// URL"
                    );
                }
                Some(EthereumSettings {
                    rpc_url: url,
                    chain_id: raw.ethereum_chain_id,
                })
            }
        },
        tron,
        bitcoin,
        workers,
        withdrawals,
        deposits,
        health,
        autoscale,
        ledger_reconcile_interval,
        webhooks,
        config_file: None,
    })
}

fn positive_seconds(key: &str, value: f64) -> anyhow::Result<Duration> {
    seconds(
        key,
        value,
        Duration::from_millis(1),
        Duration::from_secs(30 * 24 * 3600),
    )
}

/// A fraction in (0, 1] as basis points.
#[allow(
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a fraction checked to (0, 1] times 10,000 fits a u32"
)]
fn fraction_bp(key: &str, value: f64) -> anyhow::Result<u32> {
    if !value.is_finite() || value <= 0.0 || value > 1.0 {
        bail!(
            "invalid configuration key `{key}`: {value} is out of range; expected a fraction above 0 and at most 1 (0.05 is 5 %)"
        );
    }
    Ok((value * 10_000.0).round().max(1.0) as u32)
}

fn health_settings(
    raw: &RawConfig,
    heartbeat_interval: Duration,
    lost_after_intervals: u32,
) -> anyhow::Result<HealthSettings> {
    if raw.health_memory_limit_mb == 0 || raw.health_memory_limit_mb > 1024 * 1024 {
        bail!(
            "invalid configuration key `health_memory_limit_mb`: {} is out of range; expected 1 to 1048576 MiB",
            raw.health_memory_limit_mb
        );
    }
    let warning_intervals = within(
        "health_heartbeat_warning_intervals",
        raw.health_heartbeat_warning_intervals,
        1,
        lost_after_intervals.saturating_sub(1).max(1),
    )?;
    let error_rate_warning_bp =
        fraction_bp("health_error_rate_warning", raw.health_error_rate_warning)?;
    let error_rate_unhealthy_bp = fraction_bp(
        "health_error_rate_unhealthy",
        raw.health_error_rate_unhealthy,
    )?;
    if error_rate_unhealthy_bp < error_rate_warning_bp {
        bail!(
            "invalid configuration key `health_error_rate_unhealthy`: {} is below `health_error_rate_warning` ({})",
            raw.health_error_rate_unhealthy,
            raw.health_error_rate_warning
        );
    }
    let limits = domain::health::HealthLimits {
        heartbeat_interval,
        heartbeat_warning_intervals: warning_intervals,
        lost_after_intervals,
        memory_limit_bytes: raw.health_memory_limit_mb * 1024 * 1024,
        memory_warning_percent: within(
            "health_memory_warning_percent",
            raw.health_memory_warning_percent,
            1,
            100,
        )?,
        window: positive_seconds("health_window", raw.health_window)?,
        error_rate_warning_bp,
        error_rate_unhealthy_bp,
        error_rate_min_jobs: u64::from(within(
            "health_error_rate_min_jobs",
            raw.health_error_rate_min_jobs,
            1,
            1_000_000,
        )?),
        balance_max_age: positive_seconds("health_balance_max_age", raw.health_balance_max_age)?,
        withdrawal_stuck_after: positive_seconds(
            "health_withdrawal_stuck_after",
            raw.health_withdrawal_stuck_after,
        )?,
        sync_lag_tron: positive_seconds("health_sync_lag_tron", raw.health_sync_lag_tron)?,
        sync_lag_ethereum: positive_seconds(
            "health_sync_lag_ethereum",
            raw.health_sync_lag_ethereum,
        )?,
        sync_lag_bitcoin: positive_seconds("health_sync_lag_bitcoin", raw.health_sync_lag_bitcoin)?,
    };
    let restart_after = positive_seconds("health_restart_after", raw.health_restart_after)?;
    let pause_after = positive_seconds("health_pause_after", raw.health_pause_after)?;
    Ok(HealthSettings {
        limits,
        restart_after: raw.health_restart.then_some(restart_after),
        node_timeout: seconds(
            "health_node_timeout",
            raw.health_node_timeout,
            Duration::from_millis(10),
            Duration::from_secs(300),
        )?,
        pause_after: raw.health_pause_withdrawals.then_some(pause_after),
    })
}

/// The `[[autoscale]]` entries: each names a queue some configured worker takes jobs from,
/// at most once, with a policy that can hold (min at most max, no zero step or cooldown, no
/// negative threshold, the configured workers within the bounds).
fn autoscale(
    entries: Vec<RawAutoscale>,
    workers: &[WorkerEntry],
) -> anyhow::Result<Vec<AutoscaleEntry>> {
    use domain::autoscale::ScalePolicy;
    let mut out: Vec<AutoscaleEntry> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let key = |field: &str| format!("autoscale[{index}].{field}");
        let defaults = ScalePolicy::default();
        let number = |field: &str, value: Option<i64>, default: u64, min: i64, max: i64| {
            let value = value.unwrap_or(i64::try_from(default).unwrap_or(i64::MAX));
            if value < min || value > max {
                bail!(
                    "invalid configuration key `{}`: {value} is out of range; expected {min} to {max}",
                    key(field)
                );
            }
            Ok(u64::try_from(value).unwrap_or(0))
        };
        let workers_max = i64::from(AUTOSCALE_WORKERS_MAX);
        let count =
            |field: &str, value: Option<i64>, default: u32, min: i64| -> anyhow::Result<u32> {
                Ok(
                    u32::try_from(number(field, value, u64::from(default), min, workers_max)?)
                        .unwrap_or(u32::MAX),
                )
            };
        let policy = ScalePolicy {
            min_workers: count("min_workers", entry.min_workers, defaults.min_workers, 1)?,
            max_workers: count("max_workers", entry.max_workers, defaults.max_workers, 1)?,
            scale_up_depth: number(
                "scale_up_depth",
                entry.scale_up_depth,
                defaults.scale_up_depth,
                0,
                i64::from(u32::MAX),
            )?,
            scale_down_depth: number(
                "scale_down_depth",
                entry.scale_down_depth,
                defaults.scale_down_depth,
                0,
                i64::from(u32::MAX),
            )?,
            scale_up_step: count(
                "scale_up_step",
                entry.scale_up_step,
                defaults.scale_up_step,
                1,
            )?,
            scale_down_step: count(
                "scale_down_step",
                entry.scale_down_step,
                defaults.scale_down_step,
                1,
            )?,
            cooldown: match entry.cooldown {
                None => defaults.cooldown,
                Some(value) => positive_seconds(&key("cooldown"), value)?,
            },
        };
        if policy.min_workers > policy.max_workers {
            bail!(
                "invalid configuration key `{}`: {} is above `max_workers` ({})",
                key("min_workers"),
                policy.min_workers,
                policy.max_workers
            );
        }
        if policy.scale_down_depth > policy.scale_up_depth {
            bail!(
                "invalid configuration key `{}`: {} is above `scale_up_depth` ({}); the fleet would flap",
                key("scale_down_depth"),
                policy.scale_down_depth,
                policy.scale_up_depth
            );
        }
        let queue = domain::Name::new(entry.queue.clone())
            .with_context(|| format!("invalid configuration key `{}`", key("queue")))?;
        let Some(spec) = workers
            .iter()
            .map(|worker| worker.spec)
            .find(|spec| queue::queue_for(spec.kind, spec.chain) == queue)
        else {
            bail!(
                "invalid configuration key `{}`: no configured worker takes jobs from {:?}; queues are CHAIN.KIND of a `[[workers]]` entry (`tron.deposit`)",
                key("queue"),
                entry.queue
            );
        };
        if out.iter().any(|existing| existing.queue == queue) {
            bail!(
                "invalid configuration key `{}`: queue {queue} is scaled twice",
                key("queue")
            );
        }
        let configured = u32::try_from(workers.iter().filter(|worker| worker.spec == spec).count())
            .unwrap_or(u32::MAX);
        if configured > policy.max_workers {
            bail!(
                "invalid configuration key `{}`: {} is below the {configured} workers configured for {queue}",
                key("max_workers"),
                policy.max_workers
            );
        }
        out.push(AutoscaleEntry {
            queue,
            spec,
            policy,
        });
    }
    Ok(out)
}

/// The Bitcoin node's settings: a URL without credentials, and either a cookie file or a user
/// with a password (never both, never half).
fn bitcoin(
    url: Option<String>,
    cookie_file: Option<PathBuf>,
    user: Option<String>,
    password: Option<String>,
) -> anyhow::Result<Option<BitcoinSettings>> {
    let Some(url) = url else {
        if cookie_file.is_some() || user.is_some() || password.is_some() {
            bail!(
                "invalid configuration key `bitcoin_rpc_url`: missing, while the node's credentials are set"
            );
        }
        return Ok(None);
    };
    let parsed = url::Url::parse(&url)
        .ok()
        .filter(|parsed| matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some());
    let Some(parsed) = parsed else {
        bail!("invalid configuration key `bitcoin_rpc_url`: not an http:// or https:// URL");
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        bail!(
            "invalid configuration key `bitcoin_rpc_url`: it carries credentials; give them as bitcoin_rpc_cookie_file or bitcoin_rpc_user and bitcoin_rpc_password instead"
        );
    }
    let credentials = match (cookie_file, user, password) {
        (Some(path), None, None) => BitcoinCredentials::CookieFile(path),
        (None, Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => {
            BitcoinCredentials::UserPassword { user, password }
        }
        (Some(_), _, _) => bail!(
            "invalid configuration key `bitcoin_rpc_cookie_file`: set either it or bitcoin_rpc_user and bitcoin_rpc_password, not both"
        ),
        (None, None, None) => bail!(
            "invalid configuration key `bitcoin_rpc_url`: no credentials; set bitcoin_rpc_cookie_file or bitcoin_rpc_user and bitcoin_rpc_password"
        ),
        (None, _, _) => bail!(
            "invalid configuration key `bitcoin_rpc_user`: a user and a password, both not empty, go together"
        ),
    };
    Ok(Some(BitcoinSettings {
        rpc_url: url,
        credentials,
    }))
}

/// The origin of `public_url`: http(s), a host, no credentials, path, query or fragment.
fn public_origin(text: &str) -> anyhow::Result<String> {
    let invalid = |why: &str| {
        anyhow::anyhow!(
            "invalid configuration key `public_url`: {text:?} {why}; expected the URL browsers use, like https://ops.example.com"
        )
    };
    let url = url::Url::parse(text).map_err(|_| invalid("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid("is not an http:// or https:// URL with a host"));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(invalid(
            "has more than a scheme, host and port (the dashboard is served at /)",
        ));
    }
    Ok(url.origin().ascii_serialization())
}

fn workers(entries: Vec<RawWorker>) -> anyhow::Result<Vec<WorkerEntry>> {
    let mut out: Vec<WorkerEntry> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let key = format!("workers[{index}]");
        let kind: WorkerKind = entry
            .kind
            .parse()
            .with_context(|| format!("invalid configuration key `{key}.kind`"))?;
        let chain: Chain = entry
            .chain
            .parse()
            .with_context(|| format!("invalid configuration key `{key}.chain`"))?;
        let spec = WorkerSpec { kind, chain };
        worker::factory::validate(spec)
            .with_context(|| format!("invalid configuration key `{key}`"))?;
        let id = match entry.id {
            Some(id) => WorkerId::new(id)
                .with_context(|| format!("invalid configuration key `{key}.id`"))?,
            None => {
                let n = out.iter().filter(|existing| existing.spec == spec).count() + 1;
                default_worker_id(kind, chain, n)
            }
        };
        if out.iter().any(|existing| existing.id == id) {
            bail!("invalid configuration key `{key}.id`: worker id {id} appears twice");
        }
        out.push(WorkerEntry { id, spec });
    }
    Ok(out)
}

/// `tron-withdrawal-1` and so on.
pub fn default_worker_id(kind: WorkerKind, chain: Chain, n: usize) -> WorkerId {
    WorkerId::new(format!("{chain}-{kind}-{n}")).expect("generated ids are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(text: &str) -> anyhow::Result<Settings> {
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|error| anyhow::anyhow!(describe(error)))?;
        validate(raw)
    }

    #[test]
    fn withdrawal_policies_are_checked_with_the_key_named() {
        let settings = load_toml(
            "approvals_required = 3\n\
             [[withdrawal_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\nmin = \"0.001\"\nmax = \"50\"\napproval_above = \"5\"\n",
        )
        .unwrap();
        let intake = settings.intake();
        assert_eq!(intake.approvals_required, 3);
        assert_eq!(intake.policies.len(), 1);
        assert_eq!(
            intake.policies[0]
                .min
                .as_ref()
                .unwrap()
                .base_units()
                .to_string(),
            "1000000000000000"
        );
        assert_eq!(load_toml("").unwrap().intake().approvals_required, 2);
        let off = load_toml("").unwrap().intake().allowlist;
        assert!(!off.all && off.assets.is_empty());
        assert_eq!(off.cooldown, Duration::from_secs(86_400));
        let one = load_toml(
            "withdrawal_allowlist_cooldown = 60\n\
             [[withdrawal_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\n\
             [[withdrawal_policy]]\nchain = \"tron\"\nasset = \"USDT\"\nallowlist = true\n",
        )
        .unwrap()
        .intake()
        .allowlist;
        assert_eq!(one.assets, [(Chain::Tron, "USDT".to_string())]);
        assert_eq!(one.cooldown, Duration::from_secs(60));
        assert_eq!(
            one.rule_for(Chain::Tron, "USDT").as_deref(),
            Some("withdrawal_policy tron/USDT: allowlist")
        );
        assert_eq!(one.rule_for(Chain::Ethereum, "ETH"), None);
        let all = load_toml("withdrawal_allowlist = true").unwrap().intake();
        assert_eq!(
            all.allowlist.rule_for(Chain::Ethereum, "ETH").as_deref(),
            Some("withdrawal_allowlist")
        );
        for (text, expected) in [
            (
                "withdrawal_allowlist_cooldown = -1",
                "`withdrawal_allowlist_cooldown`",
            ),
            ("withdrawal_allowlist = \"yes\"", "withdrawal_allowlist"),
            ("approvals_required = 0", "`approvals_required`"),
            ("approvals_required = 11", "`approvals_required`"),
            (
                "limit_reference_separator = \"ab\"",
                "`limit_reference_separator`",
            ),
            (
                "[[withdrawal_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\ndaily_limit = \"0\"",
                "`withdrawal_policy[0].daily_limit`",
            ),
            (
                "[[withdrawal_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\nmin = \"2\"\nmax = \"1\"",
                "`withdrawal_policy[0]`: min is above max",
            ),
            (
                "[[withdrawal_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\nmax = \"-1\"",
                "`withdrawal_policy[0].max`",
            ),
            (
                "[[withdrawal_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\nmin = \"0.0000000000000000001\"",
                "`withdrawal_policy[0].min`",
            ),
            (
                "[[withdrawal_policy]]\nchain = \"ethereum\"\nasset = \"DOGE\"",
                "`withdrawal_policy[0].asset`",
            ),
            (
                "[[withdrawal_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\n[[withdrawal_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"",
                "`withdrawal_policy[1]`",
            ),
            (
                "[[withdrawal_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\nmaximum = \"1\"",
                "maximum",
            ),
        ] {
            let error = format!("{:#}", load_toml(text).unwrap_err());
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn defaults_run_every_supported_worker_on_embedded_sqlite() {
        let settings = load_toml("").unwrap();
        assert_eq!(settings.database_url, "sqlite://.coinsensei/coinsensei.db");
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(settings.workers.len(), worker::SUPPORTED.len());
        assert_eq!(settings.workers[0].id.as_str(), "tron-withdrawal-1");
    }

    #[test]
    fn public_url_is_an_origin() {
        assert_eq!(load_toml("").unwrap().public_url, None);
        for (text, origin) in [
            ("https://ops.example.com", "https://ops.example.com"),
            ("https://OPS.example.com:443/", "https://ops.example.com"),
            ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
        ] {
            let settings = load_toml(&format!("public_url = {text:?}")).unwrap();
            assert_eq!(settings.public_url.as_deref(), Some(origin), "{text}");
        }
        for bad in [
            "ops.example.com",
            "ftp://ops.example.com",
            "https://ops.example.com/dashboard",
            "https://user:pw@ops.example.com",
            "https://ops.example.com/?x=1",
        ] {
            let error = load_toml(&format!("public_url = {bad:?}"))
                .unwrap_err()
                .to_string();
            assert!(error.contains("`public_url`"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_example_file_is_valid_and_shows_the_defaults() {
        let example = load_toml(include_str!("../../../coinsensei.example.toml")).unwrap();
        assert_eq!(
            format!("{example:?}"),
            format!("{:?}", load_toml("").unwrap())
        );
    }

    #[test]
    fn deposit_settings_are_checked() {
        let mnemonic = signer::Mnemonic::parse(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        )
        .unwrap();
        let signer = signer::InProcessSigner::new(&mnemonic, chain::address::Network::Mainnet);
        let deposit = signer.deposit_xpub(Chain::Ethereum).unwrap().to_string();
        let settings = load_toml(&format!(
            "ethereum_deposit_xpub = \"{deposit}\"\n\
             ethereum_internal_addresses = [\"0x52908400098527886e0f7030069857d2e4169ee7\"]\n\
             ethereum_sweep_base_fee_max_gwei = 30\nethereum_gas_wallet_index = 3\n\
             ethereum_cold_address = \"0x8617e340b3d01fa5f11f306f4090fd50e238070d\"\n\
             [[deposit_policy]]\nchain = \"ethereum\"\nasset = \"USDT\"\ndust = \"0.5\"\nsweep_min = \"10\"\nhot_ceiling = \"50000\"\n"
        ))
        .unwrap();
        assert_eq!(
            settings.deposits.sweep_min,
            vec![(
                Chain::Ethereum,
                "0xdAC17F958D2ee523a2206206994597C13D831ec7".to_string(),
                domain::Amount::from_u128(10_000_000)
            )]
        );
        assert_eq!(
            settings.deposits.ethereum_sweep_base_fee_max,
            30_000_000_000
        );
        assert_eq!(settings.deposits.ethereum_gas_wallet_index, Some(3));
        let tron = load_toml(
            "tron_gas_wallet_index = 1\ntron_staking_wallet_index = 2\n\
             tron_cold_address = \"TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7\"\n\
             [[deposit_policy]]\nchain = \"tron\"\nasset = \"USDT\"\nsweep_min = \"1\"\nhot_ceiling = \"20000\"\n",
        )
        .unwrap();
        assert_eq!(
            (
                tron.deposits.tron_gas_wallet_index,
                tron.deposits.tron_staking_wallet_index,
                tron.deposits.tron_cold_address.as_deref()
            ),
            (Some(1), Some(2), Some("TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7"))
        );
        assert_eq!(tron.deposits.hot_ceiling.len(), 1);
        assert_eq!(
            settings.deposits.ethereum_cold_address.as_deref(),
            Some("0x8617E340B3D01FA5F11F306F4090FD50E238070D")
        );
        assert_eq!(
            settings.deposits.hot_ceiling,
            vec![(
                Chain::Ethereum,
                "0xdAC17F958D2ee523a2206206994597C13D831ec7".to_string(),
                domain::Amount::from_u128(50_000_000_000)
            )]
        );
        let rules = settings.deposits.rules(Chain::Ethereum);
        assert_eq!(
            rules.dust.get("0xdAC17F958D2ee523a2206206994597C13D831ec7"),
            Some(&domain::Amount::from_u128(500_000))
        );
        assert!(
            rules
                .internal
                .contains("0x52908400098527886E0F7030069857D2E4169EE7")
        );
        assert_eq!(settings.deposit_intake().derivers.len(), 1);
        // The hot wallet's account (0') is refused as a deposit xpub, naming the key.
        let working = signer::Signer::xpub(&signer, Chain::Ethereum)
            .unwrap()
            .to_string();
        for (text, key) in [
            (
                format!("ethereum_deposit_xpub = \"{working}\""),
                "ethereum_deposit_xpub",
            ),
            (
                "tron_deposit_xpub = \"xpub-nonsense\"".to_string(),
                "tron_deposit_xpub",
            ),
            (
                "bitcoin_deposit_confirmations = 0".to_string(),
                "bitcoin_deposit_confirmations",
            ),
            (
                "[[deposit_policy]]\nchain = \"ethereum\"\nasset = \"DOGE\"\ndust = \"1\""
                    .to_string(),
                "deposit_policy[0].asset",
            ),
            (
                "[[deposit_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\ndust = \"-1\""
                    .to_string(),
                "deposit_policy[0].dust",
            ),
            (
                "ethereum_internal_addresses = [\"T-not-ethereum\"]".to_string(),
                "ethereum_internal_addresses[0]",
            ),
            (
                "[[deposit_policy]]\nchain = \"ethereum\"\nasset = \"USDT\"\nsweep_min = \"0.0000001\""
                    .to_string(),
                "deposit_policy[0].sweep_min",
            ),
            (
                "[[deposit_policy]]\nchain = \"bitcoin\"\nasset = \"BTC\"\nsweep_min = \"1\""
                    .to_string(),
                "deposit_policy[0].sweep_min",
            ),
            (
                "ethereum_sweep_base_fee_max_gwei = 0".to_string(),
                "ethereum_sweep_base_fee_max_gwei",
            ),
            (
                "[[deposit_policy]]\nchain = \"ethereum\"\nasset = \"ETH\"\nhot_ceiling = \"100\""
                    .to_string(),
                "deposit_policy[0].hot_ceiling",
            ),
            (
                "ethereum_cold_address = \"T-not-ethereum\"".to_string(),
                "ethereum_cold_address",
            ),
            (
                "tron_cold_address = \"0x8617e340b3d01fa5f11f306f4090fd50e238070d\"".to_string(),
                "tron_cold_address",
            ),
            (
                "[[deposit_policy]]\nchain = \"tron\"\nasset = \"USDT\"\nhot_ceiling = \"100\""
                    .to_string(),
                "deposit_policy[0].hot_ceiling",
            ),
            (
                "tron_staking_wallet_index = 0".to_string(),
                "tron_staking_wallet_index",
            ),
            (
                "tron_gas_wallet_index = 3\ntron_staking_wallet_index = 3".to_string(),
                "tron_staking_wallet_index",
            ),
        ] {
            let error = format!("{:#}", load_toml(&text).unwrap_err());
            assert!(error.contains(&format!("`{key}`")), "{text}: {error}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("heartbeat_interval = \"soon\"", "heartbeat_interval"),
            ("heartbeat_interval = 0.001", "heartbeat_interval"),
            ("listen = \"localhost\"", "listen"),
            ("concurrency = 0", "concurrency"),
            ("queue_backend = \"kafka\"", "queue_backend"),
            (
                "queue_backend = \"redis\"\nredis_url = \"http://x\"",
                "redis_url",
            ),
            ("database_max_connections = 1", "database_max_connections"),
            ("databse_url = \"sqlite://x\"", "databse_url"),
            ("database_url = \"mysql://x\"", "database_url"),
            ("tron_rpc_url = \"api.trongrid.io\"", "tron_rpc_url"),
            ("tron_api_key = \"\"", "tron_api_key"),
            ("tron_fee_limit_max_sun = 0", "tron_fee_limit_max_sun"),
            (
                "tron_fee_limit_max_sun = 15000000001",
                "tron_fee_limit_max_sun",
            ),
            (
                "[[workers]]\nkind = \"withdrawal\"\nchain = \"solana\"",
                "workers[0].chain",
            ),
            (
                "[[workers]]\nkind = \"consolidation\"\nchain = \"bitcoin\"",
                "workers[0]",
            ),
            (
                "bitcoin_wallet_start_block = 0",
                "bitcoin_wallet_start_block",
            ),
            ("health_memory_limit_mb = 0", "health_memory_limit_mb"),
            (
                "health_memory_warning_percent = 0",
                "health_memory_warning_percent",
            ),
            (
                "health_heartbeat_warning_intervals = 0",
                "health_heartbeat_warning_intervals",
            ),
            (
                "health_heartbeat_warning_intervals = 3",
                "health_heartbeat_warning_intervals",
            ),
            ("health_window = 0", "health_window"),
            ("health_error_rate_warning = 0", "health_error_rate_warning"),
            (
                "health_error_rate_unhealthy = 1.5",
                "health_error_rate_unhealthy",
            ),
            (
                "health_error_rate_warning = 0.5\nhealth_error_rate_unhealthy = 0.2",
                "health_error_rate_unhealthy",
            ),
            (
                "health_error_rate_min_jobs = 0",
                "health_error_rate_min_jobs",
            ),
            ("health_balance_max_age = 0", "health_balance_max_age"),
            (
                "health_withdrawal_stuck_after = 0",
                "health_withdrawal_stuck_after",
            ),
            ("health_restart_after = 0", "health_restart_after"),
            ("health_node_timeout = 0", "health_node_timeout"),
            ("health_node_timeout = 301", "health_node_timeout"),
            ("health_sync_lag_tron = 0", "health_sync_lag_tron"),
            ("health_sync_lag_ethereum = -1", "health_sync_lag_ethereum"),
            ("health_sync_lag_bitcoin = 0", "health_sync_lag_bitcoin"),
            ("health_pause_after = 0", "health_pause_after"),
            ("tron_genesis_block_id = \"00\"", "tron_genesis_block_id"),
            (
                "tron_genesis_block_id = \"zz000000000000001ebf88508a03865c71d452e25f4d51194196a1d22b6653dc\"",
                "tron_genesis_block_id",
            ),
            (
                "[[autoscale]]\nqueue = \"tron.deposit\"\nmin_workers = 4\nmax_workers = 3",
                "autoscale[0].min_workers",
            ),
            (
                "[[autoscale]]\nqueue = \"tron.deposit\"\nmin_workers = 0",
                "autoscale[0].min_workers",
            ),
            (
                "[[autoscale]]\nqueue = \"tron.deposit\"\nmax_workers = 101",
                "autoscale[0].max_workers",
            ),
            (
                "[[autoscale]]\nqueue = \"tron.deposit\"\ncooldown = 0",
                "autoscale[0].cooldown",
            ),
            (
                "[[autoscale]]\nqueue = \"tron.deposit\"\nscale_up_depth = -1",
                "autoscale[0].scale_up_depth",
            ),
            (
                "[[autoscale]]\nqueue = \"tron.deposit\"\nscale_down_depth = -5",
                "autoscale[0].scale_down_depth",
            ),
            (
                "[[autoscale]]\nqueue = \"tron.deposit\"\nscale_down_depth = 60",
                "autoscale[0].scale_down_depth",
            ),
            (
                "[[autoscale]]\nqueue = \"tron.deposit\"\nscale_up_step = 0",
                "autoscale[0].scale_up_step",
            ),
            (
                "[[autoscale]]\nqueue = \"tron.nothing\"",
                "autoscale[0].queue",
            ),
            (
                "[[autoscale]]\nqueue = \"tron.deposit\"\n[[autoscale]]\nqueue = \"tron.deposit\"",
                "autoscale[1].queue",
            ),
            (
                "[[autoscale]]\nqueue = \"tron.deposit\"\nmaximum = 3",
                "maximum",
            ),
        ] {
            let error = format!("{:#}", load_toml(text).unwrap_err());
            assert!(error.contains(key), "{text:?} gave {error:?}");
        }
    }

    #[test]
    fn the_control_plane_reconciles_the_ledger_only_when_asked() {
        assert_eq!(load_toml("").unwrap().ledger_reconcile_interval, None);
        assert_eq!(
            load_toml("ledger_reconcile_interval = 0")
                .unwrap()
                .ledger_reconcile_interval,
            None
        );
        assert_eq!(
            load_toml("ledger_reconcile_interval = 600")
                .unwrap()
                .ledger_reconcile_interval,
            Some(Duration::from_secs(600))
        );
        for bad in [
            "ledger_reconcile_interval = 0.5",
            "ledger_reconcile_interval = -1",
            "ledger_reconcile_interval = 1e12",
            "ledger_reconcile_interval = nan",
        ] {
            let error = format!("{:#}", load_toml(bad).unwrap_err());
            assert!(
                error.contains("ledger_reconcile_interval"),
                "{bad:?} gave {error:?}"
            );
        }
    }

    #[test]
    fn autoscale_takes_the_roadmaps_defaults() {
        let settings = load_toml("[[autoscale]]\nqueue = \"tron.deposit\"").unwrap();
        assert_eq!(settings.autoscale.len(), 1);
        let entry = &settings.autoscale[0];
        assert_eq!(entry.queue.as_str(), "tron.deposit");
        assert_eq!(entry.policy, domain::autoscale::ScalePolicy::default());
        assert_eq!(entry.policy.cooldown, Duration::from_secs(300));
        assert_eq!(
            (entry.policy.min_workers, entry.policy.max_workers),
            (1, 10)
        );
        assert!(load_toml("").unwrap().autoscale.is_empty());
        let health = load_toml("health_restart = false").unwrap().health;
        assert_eq!(health.restart_after, None);
        assert_eq!(
            load_toml("").unwrap().health.restart_after,
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn the_tron_api_key_is_never_shown() {
        let settings = load_toml(
            "tron_rpc_url = \"https://api.trongrid.io/jsonrpc?key=in-the-url\"\ntron_api_key = \"key-3f2a-secret\"",
        )
        .unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("key-3f2a-secret"), "{shown}");
        assert!(!shown.contains("in-the-url"), "{shown}");
        let node = settings.tron.node().unwrap();
        assert_eq!(node.api_key.as_deref(), Some("key-3f2a-secret"));
        assert_eq!(node.url.path(), "/jsonrpc/");
        assert_eq!(node.fee_limit_cap, 100_000_000);
        let error = format!(
            "{:#}",
            load_toml("tron_api_key = \"bad key-3f2a\"").unwrap_err()
        );
        assert!(!error.contains("key-3f2a"), "{error}");
        assert!(load_toml("").unwrap().tron.node().is_err());
    }

    /// `Settings` are printed (`{:?}`) in logs and errors: no password, API key or
    /// credential of any URL may show, wherever it sits (userinfo, path, query).
    #[test]
    fn settings_debug_shows_no_secret_of_any_url() {
        let settings = load_toml(
            r#"
            database_url = "postgres://app:db-pass-1@db.internal:5432/coinsensei?sslpassword=db-pass-2"
            queue_backend = "redis"
            redis_url = "redis://default:redis-pass-3@cache.internal:6379/0"
            ethereum_rpc_url = "https://eth-user:eth-pass-4@mainnet.infura.io/v3/eth-key-5?apikey=eth-key-6"
            tron_rpc_url = "https://api.trongrid.io/tron-key-7/?key=tron-key-8"
            tron_api_key = "tron-key-9"
            bitcoin_rpc_url = "https://btc.example.com:8332/wallet/btc-key-10?token=btc-key-11"
            bitcoin_rpc_user = "ops"
            bitcoin_rpc_password = "btc-pass-12"
            "#,
        )
        .unwrap();
        let shown = format!("{settings:?} {settings:#?}");
        for secret in [
            "db-pass-1",
            "db-pass-2",
            "redis-pass-3",
            "eth-user",
            "eth-pass-4",
            "eth-key-5",
            "eth-key-6",
            "tron-key-7",
            "tron-key-8",
            "tron-key-9",
            "btc-key-10",
            "btc-key-11",
            "btc-pass-12",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        // Still useful: where things are.
        for place in [
            "db.internal:5432/coinsensei",
            "cache.internal:6379",
            "https://mainnet.infura.io",
            "https://api.trongrid.io",
            "https://btc.example.com:8332",
        ] {
            assert!(shown.contains(place), "{place} missing from {shown}");
        }
        // What the program uses is untouched.
        assert!(settings.database_url.contains("db-pass-1"));
        assert!(
            settings
                .ethereum
                .as_ref()
                .unwrap()
                .rpc_url
                .contains("eth-key-5")
        );
    }

    #[test]
    fn bitcoin_credentials_are_a_cookie_or_a_user_with_a_password_and_never_shown() {
        let settings = load_toml(
            "bitcoin_rpc_url = \"http://127.0.0.1:8332\"\nbitcoin_rpc_user = \"ops\"\nbitcoin_rpc_password = \"hunter2-secret\"",
        )
        .unwrap();
        assert!(!format!("{settings:?}").contains("hunter2-secret"));
        assert!(matches!(
            settings.bitcoin.unwrap().credentials,
            BitcoinCredentials::UserPassword { .. }
        ));
        let cookie = load_toml(
            "bitcoin_rpc_url = \"http://127.0.0.1:8332\"\nbitcoin_rpc_cookie_file = \"/n/.cookie\"",
        )
        .unwrap();
        assert!(matches!(
            cookie.bitcoin.unwrap().credentials,
            BitcoinCredentials::CookieFile(_)
        ));
        for (text, key) in [
            (
                "bitcoin_rpc_url = \"http://u:hunter2-secret@127.0.0.1:8332\"\nbitcoin_rpc_cookie_file = \"/c\"",
                "carries credentials",
            ),
            (
                "bitcoin_rpc_url = \"127.0.0.1:8332\"\nbitcoin_rpc_cookie_file = \"/c\"",
                "`bitcoin_rpc_url`",
            ),
            (
                "bitcoin_rpc_url = \"http://127.0.0.1:8332\"",
                "no credentials",
            ),
            (
                "bitcoin_rpc_url = \"http://127.0.0.1:8332\"\nbitcoin_rpc_user = \"ops\"",
                "`bitcoin_rpc_user`",
            ),
            (
                "bitcoin_rpc_url = \"http://127.0.0.1:8332\"\nbitcoin_rpc_cookie_file = \"/c\"\nbitcoin_rpc_user = \"ops\"\nbitcoin_rpc_password = \"p\"",
                "not both",
            ),
            (
                "bitcoin_rpc_password = \"hunter2-secret\"",
                "`bitcoin_rpc_url`",
            ),
        ] {
            let error = format!("{:#}", load_toml(text).unwrap_err());
            assert!(error.contains(key), "{text:?} gave {error:?}");
            assert!(!error.contains("hunter2-secret"), "{error}");
        }
    }

    #[test]
    fn worker_list_numbers_repeats_and_refuses_duplicate_ids() {
        let settings = load_toml(
            "[[workers]]\nkind = \"withdrawal\"\nchain = \"tron\"\n[[workers]]\nkind = \"withdrawal\"\nchain = \"tron\"\n",
        )
        .unwrap();
        let ids: Vec<_> = settings
            .workers
            .iter()
            .map(|entry| entry.id.as_str().to_string())
            .collect();
        assert_eq!(ids, ["tron-withdrawal-1", "tron-withdrawal-2"]);
        let error = load_toml(
            "[[workers]]\nkind = \"deposit\"\nchain = \"tron\"\nid = \"a\"\n[[workers]]\nkind = \"deposit\"\nchain = \"ethereum\"\nid = \"a\"\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("appears twice"), "{error}");
    }
}

/// What the withdrawal workers pay with and the intake checks requests against.
#[derive(Debug, Clone)]
pub struct WithdrawalSettings {
    pub catalogue: domain::AssetCatalogue,
    pub policies: Vec<web::withdrawals::AssetPolicy>,
    pub approvals_required: u32,
    pub reference_separator: char,
    pub allowlist: web::withdrawals::Allowlist,
    pub bitcoin_network: chain::address::Network,
    pub keystore: Option<PathBuf>,
    pub keystore_password_file: Option<PathBuf>,
    pub hot_wallet_index: [(Chain, u32); 3],
    pub ethereum_confirmations: u64,
    pub bitcoin_confirmations: u64,
    pub ethereum_replace_after: Duration,
    pub bitcoin_batch_max: u32,
    pub bitcoin_batch_wait: Duration,
    pub bitcoin_bump_after: Duration,
    /// The first block the Bitcoin withdrawal worker's unspent outputs are read from.
    pub bitcoin_wallet_start_block: u64,
}

impl WithdrawalSettings {
    /// What the hot wallet of `chain` keeps of each asset (symbol, base units).
    pub fn floors(&self, chain: Chain) -> Vec<(String, domain::Amount)> {
        self.policies
            .iter()
            .filter(|policy| policy.chain == chain)
            .filter_map(|policy| Some((policy.asset.clone(), policy.floor?)))
            .collect()
    }

    pub fn hot_wallet_index(&self, chain: Chain) -> u32 {
        self.hot_wallet_index
            .iter()
            .find(|(of, _)| *of == chain)
            .map_or(0, |(_, index)| *index)
    }
}

/// The largest keystore index a hot wallet may have (BIP32's non-hardened range).
const HOT_WALLET_INDEX_MAX: u32 = (1 << 31) - 1;

fn withdrawal_settings(raw: &RawConfig) -> anyhow::Result<WithdrawalSettings> {
    let bitcoin_network: chain::address::Network =
        raw.bitcoin_network.parse().map_err(|error: String| {
            anyhow::anyhow!("invalid configuration key `bitcoin_network`: {error}")
        })?;
    let mut assets = domain::AssetCatalogue::mainnet().assets().to_vec();
    for (index, entry) in raw.assets.iter().flatten().enumerate() {
        let key = format!("assets[{index}]");
        let chain: Chain = entry
            .chain
            .parse()
            .with_context(|| format!("invalid configuration key `{key}.chain`"))?;
        if let Some(contract) = &entry.contract {
            chain::address::Address::parse(chain, bitcoin_network, contract)
                .with_context(|| format!("invalid configuration key `{key}.contract`"))?;
        }
        assets.retain(|asset| !(asset.chain == chain && asset.symbol == entry.symbol));
        assets.push(domain::Asset {
            symbol: entry.symbol.clone(),
            chain,
            decimals: entry.decimals,
            contract: entry.contract.clone(),
        });
    }
    let catalogue = domain::AssetCatalogue::new(assets)
        .map_err(|error| anyhow::anyhow!("invalid configuration key `assets`: {error}"))?;
    for (key, index) in [
        ("tron_hot_wallet_index", raw.tron_hot_wallet_index),
        ("ethereum_hot_wallet_index", raw.ethereum_hot_wallet_index),
        ("bitcoin_hot_wallet_index", raw.bitcoin_hot_wallet_index),
    ] {
        within(key, index, 0, HOT_WALLET_INDEX_MAX)?;
    }
    if !(1..=1000).contains(&raw.ethereum_confirmations) {
        bail!(
            "invalid configuration key `ethereum_confirmations`: {} is out of range; expected 1 to 1000",
            raw.ethereum_confirmations
        );
    }
    if !(1..=1000).contains(&raw.bitcoin_confirmations) {
        bail!(
            "invalid configuration key `bitcoin_confirmations`: {} is out of range; expected 1 to 1000 (never 0)",
            raw.bitcoin_confirmations
        );
    }
    let policies = policies(raw, &catalogue)?;
    let allowlist = web::withdrawals::Allowlist {
        all: raw.withdrawal_allowlist,
        assets: raw
            .withdrawal_policy
            .iter()
            .flatten()
            .zip(&policies)
            .filter(|(entry, _)| entry.allowlist == Some(true))
            .map(|(_, policy)| (policy.chain, policy.asset.clone()))
            .collect(),
        cooldown: seconds(
            "withdrawal_allowlist_cooldown",
            raw.withdrawal_allowlist_cooldown,
            Duration::ZERO,
            Duration::from_secs(30 * 86_400),
        )?,
    };
    Ok(WithdrawalSettings {
        catalogue,
        policies,
        allowlist,
        approvals_required: within("approvals_required", raw.approvals_required, 1, 10)?,
        reference_separator: {
            let mut chars = raw.limit_reference_separator.chars();
            match (chars.next(), chars.next()) {
                (Some(separator), None) if !separator.is_control() => separator,
                _ => bail!(
                    "invalid configuration key `limit_reference_separator`: {:?} is not one printable character",
                    raw.limit_reference_separator
                ),
            }
        },
        bitcoin_network,
        keystore: raw.keystore.clone(),
        keystore_password_file: raw.keystore_password_file.clone(),
        hot_wallet_index: [
            (Chain::Tron, raw.tron_hot_wallet_index),
            (Chain::Ethereum, raw.ethereum_hot_wallet_index),
            (Chain::Bitcoin, raw.bitcoin_hot_wallet_index),
        ],
        ethereum_confirmations: raw.ethereum_confirmations,
        bitcoin_confirmations: raw.bitcoin_confirmations,
        ethereum_replace_after: seconds(
            "ethereum_replace_after",
            raw.ethereum_replace_after,
            Duration::from_secs(5),
            Duration::from_secs(86_400),
        )?,
        bitcoin_batch_max: within("bitcoin_batch_max", raw.bitcoin_batch_max, 1, 500)?,
        bitcoin_batch_wait: seconds(
            "bitcoin_batch_wait",
            raw.bitcoin_batch_wait,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?,
        bitcoin_bump_after: seconds(
            "bitcoin_bump_after",
            raw.bitcoin_bump_after,
            Duration::from_secs(10),
            Duration::from_secs(7 * 86_400),
        )?,
        bitcoin_wallet_start_block: match raw.bitcoin_wallet_start_block {
            None => 1,
            Some(0) => anyhow::bail!(
                "invalid configuration key `bitcoin_wallet_start_block`: blocks start at 1 (the genesis block's output cannot be spent)"
            ),
            Some(block) => block,
        },
    })
}

/// The `[[withdrawal_policy]]` entries, checked against the catalogue: a known asset, each
/// amount a positive decimal in its unit, min not above max, one entry per asset.
fn policies(
    raw: &RawConfig,
    catalogue: &domain::AssetCatalogue,
) -> anyhow::Result<Vec<web::withdrawals::AssetPolicy>> {
    let mut policies: Vec<web::withdrawals::AssetPolicy> = Vec::new();
    for (index, entry) in raw.withdrawal_policy.iter().flatten().enumerate() {
        let key = format!("withdrawal_policy[{index}]");
        let chain: Chain = entry
            .chain
            .parse()
            .with_context(|| format!("invalid configuration key `{key}.chain`"))?;
        let asset = catalogue
            .get(chain, &entry.asset)
            .with_context(|| format!("invalid configuration key `{key}.asset`"))?;
        let amount = |field: &str,
                      text: &Option<String>|
         -> anyhow::Result<Option<domain::Amount>> {
            text.as_deref()
                .map(|text| {
                    domain::Amount::parse_positive(text, asset.decimals).map_err(|error| {
                        anyhow::anyhow!(
                            "invalid configuration key `{key}.{field}`: {text:?}: {error} (a positive amount in {})",
                            asset.symbol
                        )
                    })
                })
                .transpose()
        };
        let policy = web::withdrawals::AssetPolicy {
            chain,
            asset: asset.symbol.clone(),
            min: amount("min", &entry.min)?,
            max: amount("max", &entry.max)?,
            approval_above: amount("approval_above", &entry.approval_above)?,
            floor: amount("floor", &entry.floor)?,
            daily_limit: amount("daily_limit", &entry.daily_limit)?,
            daily_limit_per_reference: amount(
                "daily_limit_per_reference",
                &entry.daily_limit_per_reference,
            )?,
        };
        if let (Some(min), Some(max)) = (&policy.min, &policy.max)
            && min.base_units() > max.base_units()
        {
            bail!("invalid configuration key `{key}`: min is above max");
        }
        if policies
            .iter()
            .any(|each| each.chain == chain && each.asset == policy.asset)
        {
            bail!(
                "invalid configuration key `{key}`: {chain}/{} has a withdrawal_policy already",
                policy.asset
            );
        }
        policies.push(policy);
    }
    Ok(policies)
}

impl Settings {
    /// The `[[autoscale]]` queues, as the web crate shows them.
    pub fn scaled_queues(&self) -> Vec<web::scaling::ScaledQueue> {
        self.autoscale
            .iter()
            .map(|entry| web::scaling::ScaledQueue {
                queue: entry.queue.clone(),
                kind: entry.spec.kind,
                chain: entry.spec.chain,
                policy: entry.policy.clone(),
            })
            .collect()
    }

    /// What withdrawal requests are checked against. Our own hot wallets are added where the
    /// keystore can be read without its password: not here (the intake never opens the
    /// keystore), so the workers refuse a payment to the sender themselves.
    pub fn intake(&self) -> web::withdrawals::Intake {
        web::withdrawals::Intake {
            catalogue: self.withdrawals.catalogue.clone(),
            bitcoin_network: self.withdrawals.bitcoin_network,
            own_addresses: std::collections::HashSet::new(),
            policies: self.withdrawals.policies.clone(),
            approvals_required: self.withdrawals.approvals_required,
            reference_separator: self.withdrawals.reference_separator,
            allowlist: self.withdrawals.allowlist.clone(),
        }
    }
}

/// What the deposit workers credit by and the deposit-address intake derives from. An xpub
/// is public: printing it is harmless, and `Debug` shows it.
#[derive(Debug, Clone)]
pub struct DepositSettings {
    /// Each configured chain's deposit account xpub, checked to be of the deposit account.
    pub xpubs: Vec<(Chain, signer::Xpub)>,
    pub ethereum_confirmations: u64,
    /// Whether Ethereum deposits include ETH paid by contracts' internal calls.
    pub ethereum_internal_transfers: bool,
    pub bitcoin_confirmations: u64,
    pub start_blocks: Vec<(Chain, u64)>,
    /// (chain, asset as stored: `native` or the contract, threshold in base units).
    pub dust: Vec<(Chain, String, domain::Amount)>,
    /// (chain, canonical address) of our own wallets.
    pub internal: Vec<(Chain, String)>,
    /// Consolidation: (chain, asset as stored, balance a deposit address must pass to be
    /// swept, in base units).
    pub sweep_min: Vec<(Chain, String, domain::Amount)>,
    /// Consolidation: new Ethereum sweeps wait while the base fee (wei per gas) is above this.
    pub ethereum_sweep_base_fee_max: u128,
    /// Consolidation: the key index paying Ethereum gas top-ups; `None`: the hot wallet's.
    pub ethereum_gas_wallet_index: Option<u32>,
    /// Consolidation: the Ethereum cold address (canonical), if any.
    pub ethereum_cold_address: Option<String>,
    /// Consolidation: the key index paying TRON top-ups; `None`: the hot wallet's.
    pub tron_gas_wallet_index: Option<u32>,
    /// Consolidation: the key index of the TRON staking account that lends energy.
    pub tron_staking_wallet_index: Option<u32>,
    /// Consolidation: the TRON cold address (canonical), if any.
    pub tron_cold_address: Option<String>,
    /// Consolidation: (chain, asset as stored, the hot wallet's ceiling in base units).
    pub hot_ceiling: Vec<(Chain, String, domain::Amount)>,
}

impl DepositSettings {
    pub fn start_block(&self, chain: Chain) -> Option<u64> {
        self.start_blocks
            .iter()
            .find(|(of, _)| *of == chain)
            .map(|(_, block)| *block)
    }

    /// The scanner's rules for `chain`.
    pub fn rules(&self, chain: Chain) -> wallet::scanner::DepositRules {
        wallet::scanner::DepositRules {
            dust: self
                .dust
                .iter()
                .filter(|(of, _, _)| *of == chain)
                .map(|(_, asset, amount)| (asset.clone(), *amount))
                .collect(),
            internal: self
                .internal
                .iter()
                .filter(|(of, _)| *of == chain)
                .map(|(_, address)| address.clone())
                .collect(),
        }
    }
}

fn deposit_settings(
    raw: &RawConfig,
    catalogue: &domain::AssetCatalogue,
    network: chain::address::Network,
) -> anyhow::Result<DepositSettings> {
    let mut xpubs = Vec::new();
    for (chain, key, text) in [
        (Chain::Tron, "tron_deposit_xpub", &raw.tron_deposit_xpub),
        (
            Chain::Ethereum,
            "ethereum_deposit_xpub",
            &raw.ethereum_deposit_xpub,
        ),
        (
            Chain::Bitcoin,
            "bitcoin_deposit_xpub",
            &raw.bitcoin_deposit_xpub,
        ),
    ] {
        if let Some(text) = text {
            let xpub = signer::Xpub::parse_deposit(chain, network, text)
                .map_err(|error| anyhow::anyhow!("invalid configuration key `{key}`: {error}"))?;
            xpubs.push((chain, xpub));
        }
    }
    if !(1..=1000).contains(&raw.ethereum_deposit_confirmations) {
        bail!(
            "invalid configuration key `ethereum_deposit_confirmations`: {} is out of range; expected 1 to 1000",
            raw.ethereum_deposit_confirmations
        );
    }
    if !(1..=1000).contains(&raw.bitcoin_deposit_confirmations) {
        bail!(
            "invalid configuration key `bitcoin_deposit_confirmations`: {} is out of range; expected 1 to 1000 (never 0: a deposit is credited only in a block)",
            raw.bitcoin_deposit_confirmations
        );
    }
    let start_blocks = [
        (Chain::Tron, raw.tron_deposit_start_block),
        (Chain::Ethereum, raw.ethereum_deposit_start_block),
        (Chain::Bitcoin, raw.bitcoin_deposit_start_block),
    ]
    .into_iter()
    .filter_map(|(chain, block)| Some((chain, block?)))
    .collect();
    let mut dust = Vec::new();
    let mut sweep_min = Vec::new();
    let mut hot_ceiling = Vec::new();
    let ethereum_cold_address = raw
        .ethereum_cold_address
        .as_deref()
        .map(|text| {
            chain::address::Address::parse(Chain::Ethereum, network, text)
                .map(|address| address.to_string())
                .with_context(|| "invalid configuration key `ethereum_cold_address`")
        })
        .transpose()?;
    let tron_cold_address = raw
        .tron_cold_address
        .as_deref()
        .map(|text| {
            chain::address::Address::parse(Chain::Tron, network, text)
                .map(|address| address.to_string())
                .with_context(|| "invalid configuration key `tron_cold_address`")
        })
        .transpose()?;
    if let (Some(gas), Some(staking)) = (raw.tron_gas_wallet_index, raw.tron_staking_wallet_index)
        && gas == staking
    {
        bail!(
            "invalid configuration key `tron_staking_wallet_index`: {staking} is the gas wallet's key too (`tron_gas_wallet_index`); the staking account needs a key of its own"
        );
    }
    if raw.tron_staking_wallet_index.is_some()
        && raw.tron_staking_wallet_index == Some(raw.tron_hot_wallet_index)
    {
        bail!(
            "invalid configuration key `tron_staking_wallet_index`: {} is the hot wallet's key (`tron_hot_wallet_index`); the staking account needs a key of its own",
            raw.tron_hot_wallet_index
        );
    }
    for (index, entry) in raw.deposit_policy.iter().flatten().enumerate() {
        let key = format!("deposit_policy[{index}]");
        let chain: Chain = entry
            .chain
            .parse()
            .with_context(|| format!("invalid configuration key `{key}.chain`"))?;
        let asset = catalogue
            .get(chain, &entry.asset)
            .with_context(|| format!("invalid configuration key `{key}.asset`"))?;
        let stored = match &asset.contract {
            None => "native".to_string(),
            // As the scanner stores it: the contract's canonical text.
            Some(contract) => chain::address::Address::parse(chain, network, contract)
                .with_context(|| format!("invalid configuration key `{key}.asset`"))?
                .to_string(),
        };
        if dust
            .iter()
            .any(|(of, asset, _): &(Chain, String, domain::Amount)| {
                *of == chain && *asset == stored
            })
        {
            bail!(
                "invalid configuration key `{key}`: {chain}/{} has a deposit_policy already",
                asset.symbol
            );
        }
        if let Some(text) = &entry.dust {
            let amount = domain::Amount::parse_positive(text, asset.decimals).map_err(|error| {
                anyhow::anyhow!(
                    "invalid configuration key `{key}.dust`: {text:?}: {error} (a positive amount in {})",
                    asset.symbol
                )
            })?;
            dust.push((chain, stored.clone(), amount));
        }
        if let Some(text) = &entry.sweep_min {
            if chain == Chain::Bitcoin {
                bail!(
                    "invalid configuration key `{key}.sweep_min`: bitcoin is never swept (its payouts spend deposit outputs directly)"
                );
            }
            let amount = domain::Amount::parse_decimal(text, asset.decimals).map_err(|error| {
                anyhow::anyhow!(
                    "invalid configuration key `{key}.sweep_min`: {text:?}: {error} (an amount in {}, 0 or more)",
                    asset.symbol
                )
            })?;
            sweep_min.push((chain, stored.clone(), amount));
        }
        if let Some(text) = &entry.hot_ceiling {
            let (cold, cold_key) = match chain {
                Chain::Ethereum => (&ethereum_cold_address, "ethereum_cold_address"),
                Chain::Tron => (&tron_cold_address, "tron_cold_address"),
                Chain::Bitcoin => bail!(
                    "invalid configuration key `{key}.hot_ceiling`: bitcoin's hot wallet does not go to a cold address"
                ),
            };
            if cold.is_none() {
                bail!(
                    "invalid configuration key `{key}.hot_ceiling`: set `{cold_key}`, where the excess goes"
                );
            }
            let amount = domain::Amount::parse_decimal(text, asset.decimals).map_err(|error| {
                anyhow::anyhow!(
                    "invalid configuration key `{key}.hot_ceiling`: {text:?}: {error} (an amount in {}, 0 or more)",
                    asset.symbol
                )
            })?;
            hot_ceiling.push((chain, stored, amount));
        }
    }
    if !(1..=100_000).contains(&raw.ethereum_sweep_base_fee_max_gwei) {
        bail!(
            "invalid configuration key `ethereum_sweep_base_fee_max_gwei`: {} is out of range; expected 1 to 100000",
            raw.ethereum_sweep_base_fee_max_gwei
        );
    }
    let mut internal = Vec::new();
    for (chain, key, list) in [
        (
            Chain::Tron,
            "tron_internal_addresses",
            &raw.tron_internal_addresses,
        ),
        (
            Chain::Ethereum,
            "ethereum_internal_addresses",
            &raw.ethereum_internal_addresses,
        ),
    ] {
        for (index, text) in list.iter().flatten().enumerate() {
            let address = chain::address::Address::parse(chain, network, text)
                .with_context(|| format!("invalid configuration key `{key}[{index}]`"))?;
            internal.push((chain, address.to_string()));
        }
    }
    Ok(DepositSettings {
        xpubs,
        ethereum_confirmations: raw.ethereum_deposit_confirmations,
        ethereum_internal_transfers: raw.ethereum_deposit_internal_transfers,
        bitcoin_confirmations: raw.bitcoin_deposit_confirmations,
        start_blocks,
        dust,
        internal,
        sweep_min,
        ethereum_sweep_base_fee_max: u128::from(raw.ethereum_sweep_base_fee_max_gwei)
            * 1_000_000_000,
        ethereum_gas_wallet_index: raw.ethereum_gas_wallet_index,
        ethereum_cold_address,
        tron_gas_wallet_index: raw.tron_gas_wallet_index,
        tron_staking_wallet_index: raw.tron_staking_wallet_index,
        tron_cold_address,
        hot_ceiling,
    })
}

/// Derives deposit addresses from a chain's deposit xpub, for the control plane.
#[derive(Debug)]
struct XpubDeriver(signer::Xpub);

impl web::deposits::DeriveAddress for XpubDeriver {
    fn derive(&self, index: u32) -> Result<chain::address::Address, String> {
        self.0.address(index).map_err(|error| error.to_string())
    }
}

impl Settings {
    /// What deposit-address requests derive from, and how deposits are shown.
    pub fn deposit_intake(&self) -> web::deposits::DepositIntake {
        web::deposits::DepositIntake {
            derivers: self
                .deposits
                .xpubs
                .iter()
                .map(|(chain, xpub)| {
                    (
                        *chain,
                        std::sync::Arc::new(XpubDeriver(xpub.clone()))
                            as std::sync::Arc<dyn web::deposits::DeriveAddress>,
                    )
                })
                .collect(),
            catalogue: self.withdrawals.catalogue.clone(),
        }
    }
}
