//! `coinsensei`: runs the system (`up`, `serve`, `worker`), manages its database (`migrate`)
//! and drives its workers (`workers`). See `coinsensei --help`.

mod autoscaler;
mod bitcoin_payer;
mod chains;
mod commands;
mod config;
mod depositors;
mod payers;
mod signals;
mod sweepers;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use domain::{Chain, ControlAction, JobState, WorkerKind, WorkerStatus};

use crate::config::{Overrides, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "coinsensei",
    version,
    about = "CoinSensei workers: withdrawals, deposits and consolidation on TRON, Ethereum and Bitcoin, and the control plane that runs them.",
    after_help = "Configuration: a TOML file (--config, see coinsensei.example.toml), overridden by COINSENSEI_* environment \
                  variables (COINSENSEI_DATABASE_URL, COINSENSEI_LISTEN, COINSENSEI_HEARTBEAT_INTERVAL, ...). \
                  Logs go to stderr; set COINSENSEI_LOG (e.g. `debug`, `worker=debug`) to change what is logged."
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, value_name = "FILE", env = "COINSENSEI_CONFIG")]
    config: Option<PathBuf>,

    /// Directory of the embedded database, used when no database URL is configured
    /// [default: .coinsensei].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything on this machine: database (embedded SQLite unless configured), control
    /// plane and one supervised process per configured worker. Ctrl-C stops it all cleanly.
    Up(UpArgs),
    /// Run the control plane only (HTTP endpoints and the reaper); workers run elsewhere.
    Serve(ServeArgs),
    /// Run one worker process in the foreground.
    Worker(WorkerArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// List and control workers.
    Workers(WorkersArgs),
    /// List, pause and resume job queues.
    Queues(QueuesArgs),
    /// Enqueue, inspect, retry and discard jobs.
    Jobs(JobsArgs),
    /// The health checker's report on every worker and chain. Exit code: 0 healthy,
    /// 1 warning, 2 unhealthy or no report to be had (the message says why); a bad
    /// command line or configuration is an error as for every command.
    Health(HealthArgs),
    /// What the autoscaler of `coinsensei up` does: policies, depths, live workers and its
    /// recent decisions.
    #[command(subcommand)]
    Autoscaler(AutoscalerCommand),
    /// Create, list, show and cancel withdrawals (what the exchange's backend does through
    /// /api/v1/withdrawals).
    Withdrawals(WithdrawalsArgs),
    /// The events sent to the exchange's webhook endpoints: list their deliveries (failed
    /// ones first to look at) and replay them.
    Events(EventsArgs),
    /// Deposit addresses and deposits (what the exchange's backend does through
    /// /api/v1/deposit-addresses and /api/v1/deposits).
    Deposits(DepositsArgs),
    /// The ledger: what each wallet should hold by the store, compared with what the chains
    /// hold; adjustments for money that moved outside it (docs/ledger.md).
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Create, list and revoke API tokens for the control plane.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The HD keystore: make or import a mnemonic, show addresses and account public keys.
    Keys(KeysArgs),
    /// Ask the configured chain node: status, balances.
    Chain(ChainArgs),
    /// Build and sign a transaction offline, for air-gapped machines: no node is asked,
    /// nothing is sent.
    Tx(TxArgs),
    /// Measure parts of the system on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Create a token and print it (once: only its hash is kept).
    Create {
        /// viewer (read), operator (also start/stop/restart, pause/resume, retry/discard),
        /// admin (also tokens and everything else) or service (the exchange's backend:
        /// create, read and cancel withdrawals, nothing else).
        #[arg(long)]
        role: domain::Role,
        /// Who or what the token is for, shown in lists and the audit log.
        #[arg(long)]
        name: String,
    },
    /// List tokens (never the tokens themselves).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: it authenticates nothing from now on.
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Measure a queue backend on a throwaway database or key prefix: bulk and single
    /// enqueue, backlog throughput, enqueue-to-start latency at 200 jobs/s, and dead-worker
    /// recovery.
    Queue {
        #[arg(long, value_enum)]
        backend: commands::bench::BenchBackend,
        /// Jobs in the backlog (and in the bulk enqueue).
        #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        jobs: u32,
        /// Jobs running at once.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        concurrency: u32,
        /// Dead-worker recovery trials.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        recovery_trials: u32,
        /// Postgres server to create the throwaway database on [default: the configured
        /// database if it is Postgres, else postgres://postgres@127.0.0.1:5432/postgres].
        #[arg(long, value_name = "URL")]
        postgres_url: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct ChainArgs {
    /// The Bitcoin network the node must be on and addresses must belong to (Ethereum
    /// reads its chain id from ethereum_chain_id instead).
    #[arg(
        long,
        global = true,
        default_value = "mainnet",
        value_name = "NETWORK",
        env = "COINSENSEI_BITCOIN_NETWORK"
    )]
    network: chain::address::Network,
    #[command(subcommand)]
    command: ChainCommand,
}

#[derive(Debug, Subcommand)]
enum ChainCommand {
    /// Whether the node answers, its chain id, head and finalized block.
    Status {
        #[arg(long)]
        chain: Chain,
    },
    /// An address's balance, in the chain's unit and in base units.
    Balance {
        #[arg(long)]
        chain: Chain,
        #[arg(long)]
        address: String,
        /// An asset of the built-in mainnet catalogue, e.g. USDT (default: the native coin).
        #[arg(long, value_name = "SYMBOL", conflicts_with = "token")]
        asset: Option<String>,
        /// Any ERC-20 or TRC-20 by its contract address (its decimals are read from it).
        #[arg(long, value_name = "CONTRACT")]
        token: Option<String>,
    },
    /// Deposits to the given addresses in a range of blocks, as the deposit scanner reads
    /// them (native payments, and the Transfer events of the given tokens only; on Bitcoin
    /// every output paying an address, keyed txid:vout), with their confirmations. Reads
    /// only; changes nothing.
    Deposits {
        #[arg(long)]
        chain: Chain,
        /// A watched address; repeat for several.
        #[arg(long = "address", value_name = "ADDR", required = true)]
        addresses: Vec<String>,
        /// An allowlisted token contract; repeat for several (without: native deposits only).
        #[arg(long = "token", value_name = "CONTRACT")]
        tokens: Vec<String>,
        /// The first block to read.
        #[arg(long)]
        from: u64,
        /// The last block to read (default: the head).
        #[arg(long)]
        to: Option<u64>,
        /// One JSON array instead of lines (amounts in base units, as strings).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct KeysArgs {
    /// The keystore file (the mnemonic, encrypted with scrypt and XChaCha20-Poly1305).
    #[arg(long, global = true, value_name = "FILE", env = "COINSENSEI_KEYSTORE")]
    keystore: Option<PathBuf>,
    /// A file holding the keystore's password (never a flag: flags show in `ps`).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "COINSENSEI_KEYSTORE_PASSWORD_FILE"
    )]
    password_file: Option<PathBuf>,
    /// The Bitcoin network (its coin type and address prefix); Ethereum and TRON keys are
    /// the same on every network.
    #[arg(
        long,
        global = true,
        default_value = "mainnet",
        value_name = "NETWORK",
        env = "COINSENSEI_BITCOIN_NETWORK"
    )]
    network: chain::address::Network,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new 24-word mnemonic, write it encrypted to the keystore, and print it once.
    Init,
    /// Write an existing mnemonic (read from a file) encrypted to the keystore.
    Import {
        /// The file holding the mnemonic's words.
        #[arg(long, value_name = "FILE")]
        mnemonic_file: PathBuf,
    },
    /// Print the address of key INDEX on a chain (TRON m/44'/195'/0'/0/i, Ethereum
    /// m/44'/60'/0'/0/i, Bitcoin m/84'/0'/0'/0/i).
    Address {
        #[arg(long)]
        chain: Chain,
        #[arg(long, value_name = "I", value_parser = clap::value_parser!(u32).range(0..(1 << 31)))]
        index: u32,
    },
    /// Print a chain's account-level extended public key: with --deposit the deposit
    /// account's (m/44'/60'/1', ...), from which the control plane derives deposit addresses
    /// without any secret; without it the hot wallet's account 0.
    Xpub {
        #[arg(long)]
        chain: Chain,
        /// The deposit account's key (set it as `<chain>_deposit_xpub`).
        #[arg(long)]
        deposit: bool,
    },
}

#[derive(Debug, Args)]
struct TxArgs {
    /// The keystore file holding the signing keys (as for `keys`).
    #[arg(long, global = true, value_name = "FILE", env = "COINSENSEI_KEYSTORE")]
    keystore: Option<PathBuf>,
    /// A file holding the keystore's password (never a flag: flags show in `ps`).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "COINSENSEI_KEYSTORE_PASSWORD_FILE"
    )]
    password_file: Option<PathBuf>,
    #[command(subcommand)]
    command: TxCommand,
}

#[derive(Debug, Subcommand)]
enum TxCommand {
    /// Build and sign a transfer from key INDEX, offline, and print its raw_data_hex, txid
    /// and signature (TRON only: TRX or a TRC-20 of the catalogue, e.g. USDT).
    Build(TxBuildArgs),
}

#[derive(Debug, Args)]
struct TxBuildArgs {
    /// The chain (tron).
    #[arg(long)]
    chain: Chain,
    /// The sending key's index (TRON m/44'/195'/0'/0/I).
    #[arg(long, value_name = "I", value_parser = clap::value_parser!(u32).range(0..(1 << 31)))]
    index: u32,
    /// The recipient (base58check, T...).
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// TRX, or a token of the built-in mainnet catalogue (USDT).
    #[arg(long, value_name = "SYMBOL")]
    asset: String,
    /// The amount in the asset's unit, as a decimal (1.5 TRX is 1500000 sun); at most the
    /// asset's decimals.
    #[arg(long, value_name = "DECIMAL", allow_hyphen_values = true)]
    amount: String,
    /// The reference block's id (64 hex digits, `blockID` of a recent solidified block read
    /// on an online machine); the transaction is valid only on the chain holding it.
    #[arg(long, value_name = "HEX")]
    ref_block_id: String,
    /// The transaction's timestamp, in milliseconds since the epoch.
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    timestamp: i64,
    /// When the transaction expires, in milliseconds since the epoch: after --timestamp and
    /// at most 24 hours after it (60,000 ms after is usual).
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    expiration: i64,
    /// The most TRX, in sun, a TRC-20 transfer may burn for energy (required for tokens,
    /// refused for TRX; at most tron_fee_limit_max_sun).
    #[arg(long, value_name = "SUN", allow_negative_numbers = true)]
    fee_limit: Option<i64>,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

/// Where an operator command acts: the configured database, or a remote control plane.
#[derive(Debug, Args)]
struct ServerArgs {
    /// Act through the admin API of the control plane at URL (http:// or https://) instead
    /// of on the database; the API token comes from COINSENSEI_TOKEN, and the audit log
    /// names that token.
    #[arg(long, global = true, value_name = "URL", env = "COINSENSEI_SERVER")]
    server: Option<String>,
}

impl ServerArgs {
    fn remote(&self) -> anyhow::Result<Option<commands::remote::Remote>> {
        self.server
            .as_deref()
            .map(commands::remote::Remote::new)
            .transpose()
    }
}

#[derive(Debug, Args)]
struct WorkersArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: WorkersCommand,
}

#[derive(Debug, Subcommand)]
enum AutoscalerCommand {
    /// Each autoscaled queue: its policy, depth, live workers and last decisions.
    Status {
        /// Print a JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print KEDA ScaledObjects (YAML) for the worker Deployments of deploy/k8s/, one per
    /// [[autoscale]] entry, from the same policy `up` follows; needs no database.
    Keda {
        /// The namespace the worker Deployments run in.
        #[arg(long, default_value = "coinsensei")]
        namespace: String,
        /// The Prometheus that scrapes the control plane, which KEDA asks for queue depth.
        #[arg(long, default_value = "http://prometheus.monitoring.svc:9090")]
        prometheus_url: String,
    },
}

#[derive(Debug, Args)]
struct HealthArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Print the report as JSON (the API's shape).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct QueuesArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: QueuesCommand,
}

#[derive(Debug, Args)]
struct WithdrawalsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: WithdrawalsCommand,
}

#[derive(Debug, Subcommand)]
enum WithdrawalsCommand {
    /// Ask for a withdrawal: checked (chain, asset, address for the configured network,
    /// amount, reference), stored with the job that pays it, and printed.
    Create {
        /// tron, ethereum or bitcoin.
        #[arg(long)]
        chain: String,
        /// An asset of the configured catalogue: TRX, USDT, ETH, BTC, ...
        #[arg(long)]
        asset: String,
        /// The destination address on that chain.
        #[arg(long)]
        to: String,
        /// A decimal amount in the asset's unit, e.g. 12.5 (not base units).
        #[arg(long)]
        amount: String,
        /// The exchange's own id for it (e.g. user:7/withdrawal:99), 1 to 200 characters.
        #[arg(long)]
        reference: String,
        /// Names this withdrawal: the same key with the same request finds the same
        /// withdrawal instead of paying twice. Default: a fresh random key (printed).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Print the withdrawal as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Withdrawals, newest first.
    List {
        /// Only this state: pending, processing, broadcast, confirming, completed, failed,
        /// canceled, manual_review.
        #[arg(long)]
        state: Option<String>,
        /// Only this chain.
        #[arg(long)]
        chain: Option<String>,
        /// Only this reference.
        #[arg(long)]
        reference: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One withdrawal with its transaction and its history (the audit trail).
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a withdrawal that nothing was signed for yet (state pending or approval).
    Cancel {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Approve a withdrawal held for approval (above its asset's `approval_above`), as the
    /// operator token in COINSENSEI_TOKEN: `--server` only, since four eyes are counted by
    /// token. Its creator's token can never approve; the same token twice counts once.
    Approve {
        id: i64,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Reject a withdrawal held for approval: it fails with the reason (`--server` only).
    Reject {
        id: i64,
        /// Why (required; shown as the withdrawal's error).
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Act on a withdrawal in manual_review, as the operator token in COINSENSEI_TOKEN
    /// (`--server` only): mark it paid by a txid, mark it failed, or pay it again. The
    /// chain's withdrawal worker checks the action on the chain first (the txid must pay
    /// exactly this withdrawal from the hot wallet, confirmed; failing or paying again needs
    /// every transaction stored for it provably dead), then applies it or refuses it with
    /// the reason. Waits for that answer and exits non-zero on a refusal.
    #[command(group(clap::ArgGroup::new("action").required(true).args(["mark_paid", "mark_failed", "retry"])))]
    Review {
        id: i64,
        /// Completed by this transaction.
        #[arg(long, value_name = "TXID")]
        mark_paid: Option<String>,
        /// Failed: it was never paid.
        #[arg(long)]
        mark_failed: bool,
        /// Paid again, in a new payout round.
        #[arg(long)]
        retry: bool,
        /// Why, for the audit log (1 to 500 characters).
        #[arg(long)]
        reason: String,
        /// How long to wait for the worker's answer, in seconds (0: do not wait).
        #[arg(long, default_value_t = 120)]
        wait: u64,
        #[arg(long)]
        json: bool,
    },
    /// Allowlist mode's registered destinations: add (usable after the cool-down), list,
    /// remove. Adding and removing need an admin token with `--server`.
    #[command(subcommand)]
    Destinations(DestinationsCommand),
}

#[derive(Debug, Subcommand)]
enum DestinationsCommand {
    /// Register a destination; withdrawals may pay to it once the cool-down is over.
    Add {
        /// tron, ethereum or bitcoin.
        #[arg(long)]
        chain: String,
        /// The address on that chain.
        #[arg(long)]
        address: String,
        /// What it is, for people (1 to 100 characters).
        #[arg(long)]
        label: String,
        /// Only withdrawals of this reference prefix (the user part) may use it.
        #[arg(long)]
        reference: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Registered destinations, newest first.
    List {
        /// Only this chain.
        #[arg(long)]
        chain: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a registration: withdrawals can no longer pay to it.
    Remove {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct EventsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Webhook deliveries, newest first, with the counts per endpoint and state.
    List {
        /// Only this endpoint (its configured name).
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this state: pending, delivered or failed (given up after `retry_for`).
        #[arg(long)]
        state: Option<String>,
        /// Only events about this subject, e.g. withdrawal:42.
        #[arg(long)]
        subject: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Post deliveries again: the ones named, or every failed one (--failed). They keep their
    /// event ids, so a receiver that has one already recognises it. Audited.
    Replay {
        /// Delivery ids, as `events list` shows them.
        ids: Vec<i64>,
        /// Every failed delivery (at most 1000 at a time).
        #[arg(long)]
        failed: bool,
        /// With --failed: only this endpoint's.
        #[arg(long)]
        endpoint: Option<String>,
    },
}

#[derive(Debug, Args)]
struct DepositsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: DepositsCommand,
}

#[derive(Debug, Subcommand)]
enum DepositsCommand {
    /// The deposit address of a reference on a chain: the stored one, or a new one derived
    /// from the chain's deposit xpub at the next free index (the same reference always gets
    /// the same address). Prints the address.
    Address {
        /// tron, ethereum or bitcoin.
        #[arg(long)]
        chain: String,
        /// The exchange's own id for it (e.g. user:7), 1 to 200 characters.
        #[arg(long)]
        reference: String,
        #[arg(long)]
        json: bool,
    },
    /// Issued deposit addresses, oldest first.
    Addresses {
        #[arg(long)]
        chain: Option<String>,
        #[arg(long)]
        reference: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Deposits, newest first, with the reference of the address each one paid.
    List {
        /// Only this state: pending, credited, orphaned, reversed, ignored.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        chain: Option<String>,
        #[arg(long)]
        reference: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Consolidation's sweeps (deposit addresses into the hot wallet, the hot wallet's excess
    /// to cold), newest first, with their txids, what each cost (the fees of the top-up, the
    /// sweep and, on TRON, the energy's delegation and reclaim), the last error of an open one
    /// and the mean cost per path of the swept ones.
    Sweeps {
        /// Only this chain (tron or ethereum).
        #[arg(long)]
        chain: Option<String>,
        /// Only sweeps in this state: topping_up, sweeping, swept or failed.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Compare every wallet's expected balance (hot wallet, deposit addresses) with what its
    /// chain's node says it holds, name every difference and record the outcome for
    /// /metrics. Exit code: 0 every wallet agrees, 1 one differs, 3 none differs but some
    /// could not be compared (the lines say why).
    Reconcile {
        /// Only this chain (default: every chain whose node is configured).
        #[arg(long)]
        chain: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every wallet's expected balance by the store alone; no node is asked.
    Show {
        #[arg(long)]
        chain: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Record money that moved outside the ledger's rows, audited: a hot wallet's opening
    /// balance (the operator funded it), or a correction. Never edited: undo one with an
    /// opposite one.
    Adjust {
        #[arg(long)]
        chain: String,
        /// The wallet's address.
        #[arg(long)]
        address: String,
        /// The catalogue symbol (ETH, USDT, TRX, BTC).
        #[arg(long)]
        asset: String,
        /// In the asset's unit (10.5), more than zero.
        #[arg(long)]
        amount: String,
        /// in (money arrived) or out (money left).
        #[arg(long, default_value = "in")]
        direction: String,
        /// Where the money came from or went, for the audit log.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct JobsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Debug, Subcommand)]
enum QueuesCommand {
    /// Every queue with its jobs counted by state.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop starting jobs of a queue (running ones finish).
    Pause { queue: String },
    /// Start jobs of a paused queue again.
    Resume { queue: String },
    /// Set the retry policy of a queue's jobs that are enqueued without one (default: 3
    /// attempts, exponential backoff from 2 s up to an hour).
    Retry {
        queue: String,
        /// Runs in all before a job is dead-lettered.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        attempts: Option<u32>,
        /// Seconds before the first retry; doubled after each failure.
        #[arg(long, value_name = "SECONDS")]
        backoff: Option<f64>,
        /// Longest wait between two attempts, in seconds.
        #[arg(long, value_name = "SECONDS")]
        backoff_max: Option<f64>,
        /// Back to the defaults.
        #[arg(long, conflicts_with_all = ["attempts", "backoff", "backoff_max"])]
        default: bool,
    },
    /// Limit how many jobs of a queue run at once across all workers (1 makes a serial
    /// lane, e.g. per hot wallet), or remove the limit with `none`.
    Limit {
        queue: String,
        /// A number from 1, or `none`.
        limit: String,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Add a job to a queue.
    Enqueue(EnqueueArgs),
    /// List jobs, newest first.
    List {
        #[arg(long)]
        queue: Option<String>,
        /// available, running, completed, failed or cancelled.
        #[arg(long)]
        state: Option<JobState>,
        /// Most jobs to show.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One job in full, with its error history (JSON).
    Show { id: i64 },
    /// Run a failed or cancelled job again, with its attempts reset.
    Retry { id: i64 },
    /// Drop a failed job, or one that has not run yet.
    Discard { id: i64 },
}

#[derive(Debug, Args)]
struct EnqueueArgs {
    /// The queue, e.g. tron.withdrawal.
    #[arg(long)]
    queue: String,
    /// The job kind; workers run the kinds they have handlers for (built in: noop).
    #[arg(long)]
    kind: String,
    /// The job's arguments as JSON.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Seconds to wait before the job may run.
    #[arg(long, value_name = "SECONDS")]
    delay: Option<f64>,
    /// While a job with this key waits or runs in the queue, return it instead of adding one.
    #[arg(long)]
    unique_key: Option<String>,
    /// Lower runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i16,
    /// Runs in all before the job is dead-lettered [default: 3].
    #[arg(long)]
    attempts: Option<u32>,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Address of the control plane's HTTP endpoints.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Against throwaway chains on this machine instead: anvil (Ethereum, with an ERC-20 as
    /// USDT), a regtest bitcoind and the TRON simulation, hot wallets funded from the public
    /// test mnemonic, everything in <data dir>/devnet (remade at every start). Prints how to
    /// send a first withdrawal. `cargo xtask devnet` installs anvil and bitcoind first.
    #[arg(long)]
    devnet: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address of the control plane's HTTP endpoints.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    /// What the worker does: withdrawal, deposit or consolidation.
    #[arg(long)]
    kind: WorkerKind,
    /// Which chain: tron, ethereum or bitcoin.
    #[arg(long)]
    chain: Chain,
    /// The worker's id in the registry [default: CHAIN-KIND-1].
    #[arg(long)]
    id: Option<String>,
    /// Exit (gracefully) when stdin closes: set by the supervisor of `coinsensei up` so that
    /// its children never outlive it.
    #[arg(long, hide = true)]
    supervised: bool,
}

#[derive(Debug, Subcommand)]
enum WorkersCommand {
    /// List the registered workers.
    List(ListArgs),
    /// Ask a stopped worker to take work again.
    Start(ControlArgs),
    /// Ask a worker to finish its in-flight work and take no more (the process stays up).
    Stop(ControlArgs),
    /// Ask a worker to drain, rebuild its connections and start again.
    Restart(ControlArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Only workers on this chain.
    #[arg(long)]
    chain: Option<Chain>,
    /// Only workers of this kind.
    #[arg(long)]
    kind: Option<WorkerKind>,
    /// Only workers with this status.
    #[arg(long)]
    status: Option<WorkerStatus>,
}

#[derive(Debug, Args)]
struct ControlArgs {
    /// The worker's id (see `coinsensei workers list`).
    id: String,
    /// Wait until the worker reports that it obeyed.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(
        long,
        default_value_t = 60.0,
        requires = "wait",
        value_name = "SECONDS"
    )]
    timeout: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Up(_) | Command::Serve(_) | Command::Worker(_) => "info",
        Command::Migrate
        | Command::Workers(_)
        | Command::Queues(_)
        | Command::Jobs(_)
        | Command::Health(_)
        | Command::Autoscaler(_)
        | Command::Withdrawals(_)
        | Command::Events(_)
        | Command::Deposits(_)
        | Command::Ledger(_)
        | Command::Tokens(_)
        | Command::Keys(_)
        | Command::Chain(_)
        | Command::Tx(_)
        | Command::Bench(_) => "warn",
    };
    init_logging(default_log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    // A blocked stdin read (supervised workers) must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("COINSENSEI_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // alloy's HTTP transport opens a span carrying the whole RPC URL, where providers put
    // their API keys; held at info (whatever COINSENSEI_LOG says), the span is never made.
    let filter = filter.add_directive(
        "alloy_transport_http=info"
            .parse()
            .expect("a valid logging directive"),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

struct Global {
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
}

impl Global {
    fn settings(&self, listen: Option<&String>) -> anyhow::Result<Settings> {
        Settings::load(
            self.config.as_deref(),
            &Overrides {
                data_dir: self.data_dir.clone(),
                listen: listen.cloned(),
            },
        )
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = Global {
        config: cli.config,
        data_dir: cli.data_dir,
    };
    match cli.command {
        Command::Up(args) if args.devnet => {
            commands::devnet::run(global.config.as_deref(), global.data_dir, args.listen).await
        }
        Command::Up(args) => commands::up::run(global.settings(args.listen.as_ref())?).await,
        Command::Serve(args) => commands::serve::run(global.settings(args.listen.as_ref())?).await,
        Command::Worker(args) => {
            let settings = global.settings(None)?;
            commands::worker::run(settings, args.kind, args.chain, args.id, args.supervised).await
        }
        Command::Migrate => commands::migrate::run(global.settings(None)?).await,
        Command::Workers(WorkersArgs { server, command }) => {
            let remote = server.remote()?;
            match command {
                WorkersCommand::List(args) => {
                    let filter = commands::workers::ListFilter {
                        chain: args.chain,
                        kind: args.kind,
                        status: args.status,
                    };
                    match remote {
                        Some(remote) => {
                            commands::workers::list_remote(&remote, filter, args.json).await
                        }
                        None => {
                            commands::workers::list(global.settings(None)?, filter, args.json).await
                        }
                    }
                }
                WorkersCommand::Start(args) => {
                    control(&global, remote, args, ControlAction::Start).await
                }
                WorkersCommand::Stop(args) => {
                    control(&global, remote, args, ControlAction::Stop).await
                }
                WorkersCommand::Restart(args) => {
                    control(&global, remote, args, ControlAction::Restart).await
                }
            }
        }
        Command::Health(HealthArgs { server, json }) => {
            let remote = server.remote()?;
            let settings = match remote {
                Some(_) => None,
                None => Some(global.settings(None)?),
            };
            // A report that cannot be had (the database or server away, a timeout) is
            // unhealthy, never healthy: exit 2, with the reason.
            let reported = match (remote, settings) {
                (Some(remote), _) => commands::health::remote(&remote, json).await,
                (None, Some(settings)) => commands::health::local(settings, json).await,
                (None, None) => unreachable!("settings are loaded when there is no server"),
            };
            Ok(reported.unwrap_or_else(|error| {
                eprintln!("error: {error:#}");
                ExitCode::from(domain::health::HealthLevel::Unhealthy.code())
            }))
        }
        Command::Autoscaler(AutoscalerCommand::Status { json }) => {
            commands::autoscaler::status(global.settings(None)?, json).await
        }
        Command::Autoscaler(AutoscalerCommand::Keda {
            namespace,
            prometheus_url,
        }) => commands::keda::keda(&global.settings(None)?, &namespace, &prometheus_url),
        Command::Queues(QueuesArgs { server, command }) => {
            if let Some(remote) = server.remote()? {
                use commands::queues::remote as queues;
                return match command {
                    QueuesCommand::List { json } => queues::list(&remote, json).await,
                    QueuesCommand::Pause { queue } => queues::pause(&remote, &queue, true).await,
                    QueuesCommand::Resume { queue } => queues::pause(&remote, &queue, false).await,
                    QueuesCommand::Limit { queue, limit } => {
                        queues::limit(&remote, &queue, &limit).await
                    }
                    QueuesCommand::Retry { .. } => {
                        Err(commands::remote::local_only("queues retry"))
                    }
                };
            }
            let settings = global.settings(None)?;
            match command {
                QueuesCommand::List { json } => commands::queues::list(settings, json).await,
                QueuesCommand::Pause { queue } => {
                    commands::queues::pause(settings, &queue, true).await
                }
                QueuesCommand::Resume { queue } => {
                    commands::queues::pause(settings, &queue, false).await
                }
                QueuesCommand::Retry {
                    queue,
                    attempts,
                    backoff,
                    backoff_max,
                    default,
                } => {
                    commands::queues::retry_policy(
                        settings,
                        &queue,
                        attempts,
                        backoff,
                        backoff_max,
                        default,
                    )
                    .await
                }
                QueuesCommand::Limit { queue, limit } => {
                    commands::queues::limit(settings, &queue, &limit).await
                }
            }
        }
        Command::Bench(BenchCommand::Queue {
            backend,
            jobs,
            concurrency,
            recovery_trials,
            postgres_url,
            json,
        }) => {
            let request = commands::bench::BenchQueue {
                backend,
                jobs,
                concurrency,
                json,
                postgres_url,
                recovery_trials,
            };
            commands::bench::queue(global.settings(None)?, request).await
        }
        Command::Chain(ChainArgs { network, command }) => {
            let settings = global.settings(None)?;
            match command {
                ChainCommand::Status { chain } => {
                    commands::chain::status(settings, chain, network).await
                }
                ChainCommand::Balance {
                    chain,
                    address,
                    asset,
                    token,
                } => {
                    let asset = match (&asset, &token) {
                        (_, Some(token)) => commands::chain::Asset::Contract(token),
                        (Some(symbol), None) => commands::chain::Asset::Symbol(symbol),
                        (None, None) => commands::chain::Asset::Native,
                    };
                    commands::chain::balance(settings, chain, network, &address, asset).await
                }
                ChainCommand::Deposits {
                    chain,
                    addresses,
                    tokens,
                    from,
                    to,
                    json,
                } => {
                    let request = commands::chain::DepositsRequest {
                        chain,
                        network,
                        addresses,
                        tokens,
                        from,
                        to,
                        as_json: json,
                    };
                    commands::chain::deposits(settings, request).await
                }
            }
        }
        Command::Tx(TxArgs {
            keystore,
            password_file,
            command: TxCommand::Build(args),
        }) => {
            let keystore = commands::keys::KeystoreArgs {
                keystore,
                password_file,
                // TRON keys are the same on every network.
                network: chain::address::Network::Mainnet,
            };
            let request = commands::tx::TxBuild {
                chain: args.chain,
                index: args.index,
                to: args.to,
                asset: args.asset,
                amount: args.amount,
                ref_block_id: args.ref_block_id,
                timestamp: args.timestamp,
                expiration: args.expiration,
                fee_limit: args.fee_limit,
                as_json: args.json,
            };
            commands::tx::build(&global.settings(None)?, &keystore, request)
        }
        Command::Keys(args) => {
            let keystore = commands::keys::KeystoreArgs {
                keystore: args.keystore,
                password_file: args.password_file,
                network: args.network,
            };
            match args.command {
                KeysCommand::Init => commands::keys::init(&keystore),
                KeysCommand::Import { mnemonic_file } => {
                    commands::keys::import(&keystore, &mnemonic_file)
                }
                KeysCommand::Address { chain, index } => {
                    commands::keys::address(&keystore, chain, index)
                }
                KeysCommand::Xpub { chain, deposit } => {
                    commands::keys::xpub(&keystore, chain, deposit)
                }
            }
        }
        Command::Withdrawals(WithdrawalsArgs { server, command }) => {
            use commands::withdrawals as w;
            let create_of = |chain, asset, to, amount, reference, idempotency_key| w::Create {
                chain,
                asset,
                to,
                amount,
                reference,
                idempotency_key,
            };
            if let Some(remote) = server.remote()? {
                return match command {
                    WithdrawalsCommand::Create {
                        chain,
                        asset,
                        to,
                        amount,
                        reference,
                        idempotency_key,
                        json,
                    } => {
                        let create =
                            create_of(chain, asset, to, amount, reference, idempotency_key);
                        w::remote::create(&remote, create, json).await
                    }
                    WithdrawalsCommand::List {
                        state,
                        chain,
                        reference,
                        limit,
                        json,
                    } => w::remote::list(&remote, state, chain, reference, limit, json).await,
                    WithdrawalsCommand::Show { id, json } => {
                        w::remote::show(&remote, id, json).await
                    }
                    WithdrawalsCommand::Cancel { id, json } => {
                        w::remote::cancel(&remote, id, json).await
                    }
                    WithdrawalsCommand::Approve { id, reason, json } => {
                        w::remote::decide(&remote, id, true, reason, json).await
                    }
                    WithdrawalsCommand::Reject { id, reason, json } => {
                        w::remote::decide(&remote, id, false, Some(reason), json).await
                    }
                    WithdrawalsCommand::Review {
                        id,
                        mark_paid,
                        mark_failed: _,
                        retry,
                        reason,
                        wait,
                        json,
                    } => {
                        let (action, txid) = match (mark_paid, retry) {
                            (Some(txid), _) => ("mark_paid", Some(txid)),
                            (None, true) => ("retry", None),
                            (None, false) => ("mark_failed", None),
                        };
                        w::remote::review(&remote, id, action, txid, reason, wait, json).await
                    }
                    WithdrawalsCommand::Destinations(command) => {
                        use commands::destinations::remote as d;
                        match command {
                            DestinationsCommand::Add {
                                chain,
                                address,
                                label,
                                reference,
                                json,
                            } => {
                                let add = commands::destinations::Add {
                                    chain,
                                    address,
                                    label,
                                    reference,
                                };
                                d::add(&remote, add, json).await
                            }
                            DestinationsCommand::List { chain, json } => {
                                d::list(&remote, chain, json).await
                            }
                            DestinationsCommand::Remove { id, json } => {
                                d::remove(&remote, id, json).await
                            }
                        }
                    }
                };
            }
            let settings = global.settings(None)?;
            match command {
                WithdrawalsCommand::Create {
                    chain,
                    asset,
                    to,
                    amount,
                    reference,
                    idempotency_key,
                    json,
                } => {
                    let create = create_of(chain, asset, to, amount, reference, idempotency_key);
                    w::create(settings, create, json).await
                }
                WithdrawalsCommand::List {
                    state,
                    chain,
                    reference,
                    limit,
                    json,
                } => w::list(settings, state, chain, reference, limit, json).await,
                WithdrawalsCommand::Show { id, json } => w::show(settings, id, json).await,
                WithdrawalsCommand::Cancel { id, json } => w::cancel(settings, id, json).await,
                WithdrawalsCommand::Approve { .. } | WithdrawalsCommand::Reject { .. } => {
                    Err(anyhow::anyhow!(
                        "approvals are counted per operator token: run it with --server URL and the token in COINSENSEI_TOKEN"
                    ))
                }
                WithdrawalsCommand::Review { .. } => Err(anyhow::anyhow!(
                    "review actions are audited per operator token: run it with --server URL and the token in COINSENSEI_TOKEN"
                )),
                WithdrawalsCommand::Destinations(command) => {
                    use commands::destinations as d;
                    match command {
                        DestinationsCommand::Add {
                            chain,
                            address,
                            label,
                            reference,
                            json,
                        } => {
                            let add = d::Add {
                                chain,
                                address,
                                label,
                                reference,
                            };
                            d::add(settings, add, json).await
                        }
                        DestinationsCommand::List { chain, json } => {
                            d::list(settings, chain, json).await
                        }
                        DestinationsCommand::Remove { id, json } => {
                            d::remove(settings, id, json).await
                        }
                    }
                }
            }
        }
        Command::Events(EventsArgs { server, command }) => {
            use commands::events as e;
            let remote = server.remote()?;
            match command {
                EventsCommand::List {
                    endpoint,
                    state,
                    subject,
                    limit,
                    json,
                } => {
                    let args = e::ListArgs {
                        endpoint,
                        state,
                        subject,
                        limit,
                        json,
                    };
                    match remote {
                        Some(remote) => e::remote::list(&remote, args).await,
                        None => e::list(global.settings(None)?, args).await,
                    }
                }
                EventsCommand::Replay {
                    ids,
                    failed,
                    endpoint,
                } => {
                    let args = e::ReplayArgs {
                        ids,
                        failed,
                        endpoint,
                    };
                    match remote {
                        Some(remote) => e::remote::replay(&remote, args).await,
                        None => e::replay(global.settings(None)?, args).await,
                    }
                }
            }
        }
        Command::Deposits(DepositsArgs { server, command }) => {
            use commands::deposits as d;
            if let Some(remote) = server.remote()? {
                return match command {
                    DepositsCommand::Address {
                        chain,
                        reference,
                        json,
                    } => d::remote::address(&remote, chain, reference, json).await,
                    DepositsCommand::Addresses {
                        chain,
                        reference,
                        limit,
                        json,
                    } => d::remote::addresses(&remote, chain, reference, limit, json).await,
                    DepositsCommand::List {
                        state,
                        chain,
                        reference,
                        limit,
                        json,
                    } => d::remote::list(&remote, state, chain, reference, limit, json).await,
                    DepositsCommand::Sweeps {
                        chain,
                        state,
                        limit,
                        json,
                    } => d::remote::sweeps(&remote, chain, state, limit, json).await,
                };
            }
            let settings = global.settings(None)?;
            match command {
                DepositsCommand::Address {
                    chain,
                    reference,
                    json,
                } => d::address(settings, chain, reference, json).await,
                DepositsCommand::Addresses {
                    chain,
                    reference,
                    limit,
                    json,
                } => d::addresses(settings, chain, reference, limit, json).await,
                DepositsCommand::List {
                    state,
                    chain,
                    reference,
                    limit,
                    json,
                } => d::list(settings, state, chain, reference, limit, json).await,
                DepositsCommand::Sweeps {
                    chain,
                    state,
                    limit,
                    json,
                } => d::sweeps(settings, chain, state, limit, json).await,
            }
        }
        Command::Ledger(command) => {
            use commands::ledger as l;
            let settings = global.settings(None)?;
            match command {
                LedgerCommand::Reconcile { chain, json } => {
                    l::reconcile(settings, chain, json).await
                }
                LedgerCommand::Show { chain, json } => l::show(settings, chain, json).await,
                LedgerCommand::Adjust {
                    chain,
                    address,
                    asset,
                    amount,
                    direction,
                    reason,
                    json,
                } => {
                    let request = l::AdjustRequest {
                        chain,
                        address,
                        asset,
                        amount,
                        direction,
                        reason,
                    };
                    l::adjust(settings, request, json).await
                }
            }
        }
        Command::Tokens(command) => {
            let settings = global.settings(None)?;
            match command {
                TokensCommand::Create { role, name } => {
                    commands::tokens::create(settings, role, &name).await
                }
                TokensCommand::List { json } => commands::tokens::list(settings, json).await,
                TokensCommand::Revoke { id } => commands::tokens::revoke(settings, id).await,
            }
        }
        Command::Jobs(JobsArgs { server, command }) => {
            if let Some(remote) = server.remote()? {
                use commands::queues::remote as jobs;
                return match command {
                    JobsCommand::List {
                        queue,
                        state,
                        limit,
                        json,
                    } => jobs::jobs_list(&remote, queue, state, limit, json).await,
                    JobsCommand::Show { id } => jobs::show(&remote, id).await,
                    JobsCommand::Retry { id } => jobs::retry_or_discard(&remote, id, true).await,
                    JobsCommand::Discard { id } => jobs::retry_or_discard(&remote, id, false).await,
                    JobsCommand::Enqueue(_) => Err(commands::remote::local_only("jobs enqueue")),
                };
            }
            let settings = global.settings(None)?;
            match command {
                JobsCommand::Enqueue(args) => {
                    let request = commands::queues::Enqueue {
                        queue: args.queue,
                        kind: args.kind,
                        args: args.args,
                        delay: args.delay,
                        unique_key: args.unique_key,
                        priority: args.priority,
                        attempts: args.attempts,
                    };
                    commands::queues::enqueue(settings, request).await
                }
                JobsCommand::List {
                    queue,
                    state,
                    limit,
                    json,
                } => commands::queues::jobs_list(settings, queue, state, limit, json).await,
                JobsCommand::Show { id } => commands::queues::show(settings, id).await,
                JobsCommand::Retry { id } => {
                    commands::queues::retry_or_discard(settings, id, true).await
                }
                JobsCommand::Discard { id } => {
                    commands::queues::retry_or_discard(settings, id, false).await
                }
            }
        }
    }
}

async fn control(
    global: &Global,
    remote: Option<commands::remote::Remote>,
    args: ControlArgs,
    action: ControlAction,
) -> anyhow::Result<ExitCode> {
    let wait = if args.wait {
        if !args.timeout.is_finite() || args.timeout <= 0.0 || args.timeout > 86_400.0 {
            anyhow::bail!("--timeout must be between 0 and 86400 seconds");
        }
        Some(std::time::Duration::from_secs_f64(args.timeout))
    } else {
        None
    };
    match remote {
        Some(remote) => commands::workers::control_remote(&remote, &args.id, action, wait).await,
        None => commands::workers::control(global.settings(None)?, &args.id, action, wait).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
