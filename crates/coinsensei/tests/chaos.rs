//! Withdrawals under chaos, on real processes: `coinsensei up` with one chain's withdrawal
//! worker, a private Postgres (its own `initdb` data directory) and the chain's node, N
//! withdrawals (each to a fresh recipient) sent through `/api/v1/withdrawals` while the
//! worker process is SIGKILLed every 1 to 5 s, Postgres is restarted once and the node once
//! (its mempool lost, its chain kept). At the end it reads the chain, not the store: every
//! recipient received exactly its amount once, none is lost, each withdrawal is `completed`
//! or `manual_review` with a reason. It prints the counts and the figures (throughput,
//! request → broadcast and → completed percentiles). One run per chain:
//!
//! - Ethereum: a private anvil (a block a second, `--state` kept across its restart), ETH and
//!   an ERC-20 mixed, from one hot wallet's nonces;
//! - TRON: the TRON simulation (`tron-sim`; no TRON node can run here) served by the test,
//!   TRX and USDT mixed, completed at the solidified block;
//! - Bitcoin: a private regtest bitcoind (a block a second, stopped and started on its data
//!   directory), batched; the deposit worker runs beside the withdrawal worker, and most of
//!   the funds are deposits ([`BITCOIN_DEPOSITS`] issued addresses, each paid a coinbase)
//!   that the payouts spend where they lie once credited: the hot wallet holds one coin. At
//!   the end, how many of those deposits the payouts spent, and the ledger agrees with the
//!   chain on every deposit address.
//!
//! The suite runs CI-sized runs (`COINSENSEI_CHAOS_WITHDRAWALS`, default 60 on Ethereum, 40
//! on TRON, 40 on Bitcoin); `cargo xtask chaos withdrawals [--chain C]` runs the full-sized
//! ones (1,000, 300, 200) and prints their reports. `COINSENSEI_CHAOS_KILLS=0` turns the
//! faults off, for a throughput figure; `COINSENSEI_CHAOS_STORE=sqlite` uses the embedded
//! store (no database restart); `COINSENSEI_CHAOS_CLIENTS` (default 8) is how many clients
//! of the backend send at once.

#![allow(
    clippy::float_arithmetic,
    reason = "percentiles and rates of the report; no money"
)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy_primitives::U256;
use chain::address::{Address, Network};
use chain::provider::SubmitOutcome;
use common::*;
use domain::Chain;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use signer::Signer;
use testkit::wait_for;
use tokio::process::{Child, Command};

const MNEMONIC: &str = "test test test test test test test test test test test junk";
const TOKEN_BIN: &str = include_str!("../../chain-ethereum/fixtures/erc20/TestToken.bin");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A private Postgres: its own data directory, port and postmaster, owned by the `postgres`
/// user (initdb refuses root).
struct Postgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Postgres {
    fn bin() -> PathBuf {
        let root = Path::new("/usr/lib/postgresql");
        let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
            .expect("PostgreSQL's binaries under /usr/lib/postgresql")
            .map(|entry| entry.unwrap().path())
            .collect();
        versions.sort();
        versions.pop().expect("a PostgreSQL version").join("bin")
    }

    fn as_postgres(&self, program: &str, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .stdin(Stdio::null());
        command.output().expect("run a PostgreSQL tool as postgres")
    }

    fn start_new(dir: &Path) -> Postgres {
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data).unwrap();
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(chown.success());
        let postgres = Postgres {
            dir: data,
            port: free_port(),
            bin: Postgres::bin(),
        };
        let data = postgres.dir.to_str().unwrap().to_string();
        let init = postgres.as_postgres(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        postgres.start();
        postgres
    }

    fn start(&self) {
        let data = self.dir.to_str().unwrap();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
            self.port, data
        );
        let log = format!("{data}/log");
        let started = self.as_postgres(
            "pg_ctl",
            &["-D", data, "-l", &log, "-o", &options, "-w", "start"],
        );
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
    }

    /// Restarts it the hard way: connections cut, in-flight transactions lost, then back.
    fn restart(&self) {
        let data = self.dir.to_str().unwrap();
        let stopped = self.as_postgres("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
        assert!(
            stopped.status.success(),
            "{}",
            String::from_utf8_lossy(&stopped.stderr)
        );
        self.start();
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.to_str().unwrap().to_string();
        let _ = self.as_postgres("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

/// A private anvil on a fixed port that can be stopped and started again with its chain.
struct Devnet {
    port: u16,
    state: PathBuf,
    child: Option<Child>,
}

impl Devnet {
    async fn start(dir: &Path) -> Devnet {
        let mut devnet = Devnet {
            port: free_port(),
            state: dir.join("anvil-state.json"),
            child: None,
        };
        devnet.spawn().await;
        devnet
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let binary =
            std::env::var("COINSENSEI_ANVIL").expect("COINSENSEI_ANVIL (cargo xtask test)");
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--block-time", "1", "--state"])
            .arg(&self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start anvil");
        self.child = Some(child);
        let url = self.url();
        wait_for("anvil answers", Duration::from_secs(20), || async {
            chain_ethereum::Ethereum::connect(&url, Some(31337))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }

    /// Stops anvil (it writes its chain to `--state`; its mempool is lost) and starts it again.
    async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id().unwrap() as i32, Signal::SIGTERM);
            let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        }
        self.spawn().await;
    }
}

/// A private regtest bitcoind on a fixed port and data directory, so it can be stopped and
/// started again with its chain (its mempool is not kept), and a block mined every second.
struct Regtest {
    port: u16,
    datadir: PathBuf,
    child: Option<Child>,
    miner: Option<tokio::task::JoinHandle<()>>,
}

impl Regtest {
    async fn start(dir: &Path) -> Regtest {
        let mut node = Regtest {
            port: free_port(),
            datadir: dir.join("bitcoind"),
            child: None,
            miner: None,
        };
        std::fs::create_dir_all(&node.datadir).unwrap();
        node.spawn().await;
        node
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn cookie_file(&self) -> PathBuf {
        self.datadir.join("regtest/.cookie")
    }

    /// A client (the cookie changes at every start).
    fn rpc(&self) -> chain_bitcoin::Rpc {
        let cookie = std::fs::read_to_string(self.cookie_file()).unwrap();
        chain_bitcoin::Rpc::with_cookie(&self.url(), &cookie, Duration::from_secs(30)).unwrap()
    }

    async fn spawn(&mut self) {
        let binary =
            std::env::var("COINSENSEI_BITCOIND").expect("COINSENSEI_BITCOIND (cargo xtask test)");
        let child = Command::new(binary)
            .arg("-regtest")
            .arg(format!("-datadir={}", self.datadir.display()))
            .arg(format!("-rpcport={}", self.port))
            .args(chain_bitcoin::REGTEST_NODE_ARGS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start bitcoind");
        self.child = Some(child);
        let cookie = self.cookie_file();
        let url = self.url();
        let rpc = wait_for("bitcoind answers", Duration::from_secs(60), || async {
            let text = std::fs::read_to_string(&cookie).ok()?;
            let rpc = chain_bitcoin::Rpc::with_cookie(&url, &text, Duration::from_secs(30)).ok()?;
            rpc.call_once("getblockcount", json!([])).await.ok()?;
            Some(rpc)
        })
        .await;
        self.miner = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = rpc
                    .call_once("generatetoaddress", json!([1, BITCOIN_ELSEWHERE]))
                    .await;
            }
        }));
    }

    async fn restart(&mut self) {
        if let Some(miner) = self.miner.take() {
            miner.abort();
        }
        if let Some(mut child) = self.child.take() {
            signal(child.id().unwrap() as i32, Signal::SIGTERM);
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
        // The old cookie must not be read as the new one.
        let _ = std::fs::remove_file(self.cookie_file());
        self.spawn().await;
    }
}

impl Drop for Regtest {
    fn drop(&mut self) {
        if let Some(miner) = self.miner.take() {
            miner.abort();
        }
    }
}

/// How many deposit addresses the Bitcoin run issues and pays (a coinbase each).
const BITCOIN_DEPOSITS: u32 = 4;

/// Issues [`BITCOIN_DEPOSITS`] deposit addresses through the API, pays each a coinbase and
/// mines them mature: the deposit worker credits them, the payouts may then spend them. The
/// outputs paid.
async fn fund_deposits(node: &Regtest, backend: &common::backend::Backend) -> Vec<(String, u32)> {
    let rpc = node.rpc();
    let mut paid = Vec::new();
    for n in 0..BITCOIN_DEPOSITS {
        let address = backend
            .issue_address("bitcoin", &format!("chaos:deposit:{n}"))
            .await;
        let hashes = rpc
            .call("generatetoaddress", json!([1, address]))
            .await
            .unwrap();
        let block = rpc
            .call("getblock", json!([hashes[0].as_str().unwrap()]))
            .await
            .unwrap();
        paid.push((block["tx"][0].as_str().unwrap().to_string(), 0));
    }
    rpc.call("generatetoaddress", json!([100, BITCOIN_ELSEWHERE]))
        .await
        .unwrap();
    paid
}

/// Where regtest blocks go once the hot wallet is funded: BIP173's regtest example, nobody's.
const BITCOIN_ELSEWHERE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
/// Whose addresses the Bitcoin recipients are (nobody here spends them).
const BITCOIN_RECIPIENTS: &str =
    "legal winner thank year wave sausage worth useful legal winner thank yellow";

/// The chain a run pays on, with its node.
enum Node {
    Ethereum { devnet: Devnet, token: String },
    Tron(tron_sim::Sim),
    Bitcoin(Regtest),
}

/// One withdrawal a run asks for, and what its recipient must hold for it.
struct Request {
    asset: &'static str,
    to: String,
    amount: String,
    units: u128,
}

impl Node {
    async fn start(chain: Chain, dir: &Path, hot: &signer::InProcessSigner) -> Node {
        match chain {
            Chain::Ethereum => {
                let devnet = Devnet::start(dir).await;
                let client = chain_ethereum::Ethereum::connect(&devnet.url(), Some(31337))
                    .await
                    .unwrap();
                let token = deploy_token(&client, hot).await;
                Node::Ethereum { devnet, token }
            }
            Chain::Tron => {
                let mut ledger = tron_sim::Ledger {
                    head: 100,
                    ..tron_sim::Ledger::default()
                };
                let me = hot.address(Chain::Tron, 0).unwrap();
                ledger.fund(&me, 10_000_000_000_000, 10_000_000_000_000);
                let sim = tron_sim::Sim::start(ledger, "127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap();
                // Kept for the whole run: it mines on the shared ledger across restarts.
                std::mem::forget(sim.spawn_miner());
                Node::Tron(sim)
            }
            Chain::Bitcoin => {
                let node = Regtest::start(dir).await;
                let me = hot.address(Chain::Bitcoin, 0).unwrap().to_string();
                let rpc = node.rpc();
                // One coin for the hot wallet; the deposits bring the rest (`fund_deposits`).
                for (blocks, to) in [(1, me.as_str()), (101, BITCOIN_ELSEWHERE)] {
                    rpc.call("generatetoaddress", json!([blocks, to]))
                        .await
                        .unwrap();
                }
                Node::Bitcoin(node)
            }
        }
    }

    fn chain(&self) -> Chain {
        match self {
            Node::Ethereum { .. } => Chain::Ethereum,
            Node::Tron(_) => Chain::Tron,
            Node::Bitcoin(_) => Chain::Bitcoin,
        }
    }

    /// The configuration lines of the chain (top-level keys, then tables).
    fn config(&self) -> String {
        match self {
            Node::Ethereum { devnet, token } => format!(
                "ethereum_rpc_url = \"{}\"\nethereum_chain_id = 31337\nethereum_confirmations = 2\n\
                 ethereum_replace_after = 30\n\
                 [[assets]]\nchain = \"ethereum\"\nsymbol = \"USDT\"\ndecimals = 6\ncontract = \"{token}\"\n",
                devnet.url()
            ),
            Node::Tron(sim) => format!("tron_rpc_url = \"{}\"\n", sim.url),
            Node::Bitcoin(node) => format!(
                "bitcoin_rpc_url = \"{}\"\nbitcoin_rpc_cookie_file = \"{}\"\n\
                 bitcoin_network = \"regtest\"\nbitcoin_confirmations = 2\n\
                 bitcoin_batch_max = 25\nbitcoin_batch_wait = 2\nbitcoin_bump_after = 30\n",
                node.url(),
                node.cookie_file().display()
            ),
        }
    }

    /// Withdrawal `n`: its own fresh recipient and an amount of its own.
    fn request(&self, n: u64) -> Request {
        match self {
            Node::Ethereum { .. } if n % 2 == 1 => Request {
                asset: "USDT",
                to: ethereum_recipient(n),
                amount: format!("1.{:06}", n + 1),
                units: 1_000_000 + u128::from(n) + 1,
            },
            Node::Ethereum { .. } => Request {
                asset: "ETH",
                to: ethereum_recipient(n),
                amount: format!("0.001{:06}", n + 1),
                units: 1_000_000_000_000_000 + (u128::from(n) + 1) * 1_000_000_000,
            },
            Node::Tron(_) => Request {
                asset: if n % 2 == 1 { "USDT" } else { "TRX" },
                to: tron_recipient(n),
                amount: format!("1.{:06}", n + 1),
                units: 1_000_000 + u128::from(n) + 1,
            },
            Node::Bitcoin(_) => Request {
                asset: "BTC",
                to: bitcoin_recipient(n).to_string(),
                amount: format!("0.001{:05}", n + 1),
                units: 100_000 + u128::from(n) + 1,
            },
        }
    }

    /// Stops the node (its mempool is lost, its chain kept) and starts it again.
    async fn restart(&mut self) {
        match self {
            Node::Ethereum { devnet, .. } => devnet.restart().await,
            Node::Tron(sim) => sim.restart().await.unwrap(),
            Node::Bitcoin(node) => node.restart().await,
        }
    }

    /// What each recipient holds of its asset, read from the chain.
    async fn held(&self, requests: &[Request]) -> Vec<u128> {
        match self {
            Node::Ethereum { devnet, token } => {
                let client = chain_ethereum::Ethereum::connect(&devnet.url(), Some(31337))
                    .await
                    .unwrap();
                let token = Address::parse(Chain::Ethereum, Network::Mainnet, token).unwrap();
                let mut held = Vec::new();
                for request in requests {
                    let to =
                        Address::parse(Chain::Ethereum, Network::Mainnet, &request.to).unwrap();
                    let amount = if request.asset == "USDT" {
                        client.token_balance(&token, &to).await.unwrap()
                    } else {
                        client.balance(&to).await.unwrap()
                    };
                    held.push(amount.base_units().to::<u128>());
                }
                held
            }
            Node::Tron(sim) => {
                let ledger = sim.ledger.lock().unwrap();
                requests
                    .iter()
                    .map(|request| {
                        let key = tron_sim::hex21(&tron_sim::addr(&request.to));
                        if request.asset == "USDT" {
                            ledger.usdt.get(&key).copied().unwrap_or(0)
                        } else {
                            u128::from(ledger.trx.get(&key).copied().unwrap_or(0))
                        }
                    })
                    .collect()
            }
            Node::Bitcoin(node) => {
                let rpc = node.rpc();
                let tip = rpc
                    .call("getblockcount", json!([]))
                    .await
                    .unwrap()
                    .as_u64()
                    .unwrap();
                let addresses: Vec<Address> = requests
                    .iter()
                    .map(|request| {
                        Address::parse(Chain::Bitcoin, Network::Regtest, &request.to).unwrap()
                    })
                    .collect();
                let watch = chain::provider::WatchSet {
                    addresses,
                    tokens: vec![],
                };
                let paid = chain_bitcoin::scan_deposits(&rpc, Network::Regtest, 1, tip, &watch)
                    .await
                    .unwrap();
                let mut by_address: HashMap<String, u128> = HashMap::new();
                for deposit in paid.deposits {
                    *by_address.entry(deposit.to.to_string()).or_default() +=
                        deposit.amount.base_units().to::<u128>();
                }
                requests
                    .iter()
                    .map(|request| by_address.get(&request.to).copied().unwrap_or(0))
                    .collect()
            }
        }
    }
}

async fn deploy_token(client: &chain_ethereum::Ethereum, hot: &signer::InProcessSigner) -> String {
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let mut code = hex::decode(TOKEN_BIN.trim()).unwrap();
    code.extend_from_slice(&U256::from(10u128.pow(15)).to_be_bytes::<32>());
    let nonce = client.pending_nonce(&from).await.unwrap();
    let fees = client.fees(1_000_000_000_000).await.unwrap();
    let signed = chain_ethereum::sign(
        client.build_contract_creation(code, nonce, fees, 3_000_000),
        hot,
        0,
    )
    .unwrap();
    assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
    let creator = alloy_primitives::Address::from(from.ethereum_bytes().unwrap());
    let token = creator.create(nonce).to_checksum(None);
    let address = Address::parse(Chain::Ethereum, Network::Mainnet, &token).unwrap();
    wait_for("the token deployed", Duration::from_secs(20), || async {
        client
            .token_balance(&address, &from)
            .await
            .ok()
            .filter(|b| !b.is_zero())
    })
    .await;
    token
}

fn ethereum_recipient(n: u64) -> String {
    let digest = alloy_primitives::keccak256(format!("chaos-recipient-{n}-{}", std::process::id()));
    alloy_primitives::Address::from_slice(&digest[..20]).to_checksum(None)
}

fn tron_recipient(n: u64) -> String {
    let digest = alloy_primitives::keccak256(format!("chaos-recipient-{n}-{}", std::process::id()));
    let mut bytes = [0x41u8; 21];
    bytes[1..].copy_from_slice(&digest[..20]);
    chain_tron::transaction::address(&bytes)
        .unwrap()
        .to_string()
}

fn bitcoin_recipient(n: u64) -> Address {
    signer::InProcessSigner::new(
        &signer::Mnemonic::parse(BITCOIN_RECIPIENTS).unwrap(),
        Network::Regtest,
    )
    .address(Chain::Bitcoin, u32::try_from(n).unwrap())
    .unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn seconds_between(from: &str, to: &str) -> f64 {
    let from = chrono::DateTime::parse_from_rfc3339(from).unwrap();
    let to = chrono::DateTime::parse_from_rfc3339(to).unwrap();
    (to - from).num_milliseconds() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereum_withdrawals_survive_kills_and_restarts() {
    withdrawals_survive_kills_and_restarts(Chain::Ethereum, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tron_withdrawals_survive_kills_and_restarts() {
    withdrawals_survive_kills_and_restarts(Chain::Tron, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoin_withdrawals_survive_kills_and_restarts() {
    withdrawals_survive_kills_and_restarts(Chain::Bitcoin, 40).await;
}

async fn withdrawals_survive_kills_and_restarts(chain: Chain, ci_count: u64) {
    let count = env_number("COINSENSEI_CHAOS_WITHDRAWALS", ci_count);
    let chaos = env_number("COINSENSEI_CHAOS_KILLS", 1) != 0;
    // `COINSENSEI_CHAOS_STORE=sqlite`: the embedded store instead (no database to restart).
    let sqlite = std::env::var("COINSENSEI_CHAOS_STORE").is_ok_and(|store| store == "sqlite");
    let dir = tempfile_dir(chain);
    let postgres = (!sqlite).then(|| Postgres::start_new(&dir.join("pg")));
    let network = if chain == Chain::Bitcoin {
        Network::Regtest
    } else {
        Network::Mainnet
    };
    let hot = signer::InProcessSigner::new(&signer::Mnemonic::parse(MNEMONIC).unwrap(), network);
    let mut node = Node::start(chain, &dir, &hot).await;
    let worker = format!("{chain}-withdrawal-1");

    let keystore = common::backend::keystore_lines(&dir, MNEMONIC);
    let config = dir.join("coinsensei.toml");
    let mut chain_config = node.config();
    if let Node::Bitcoin(regtest) = &node {
        // The deposit worker beside the withdrawal worker: the payouts spend credited
        // deposits where they lie. It scans from the tip now, before any deposit is paid
        // (without a start block it would start at whatever the tip is when it first runs,
        // and could pass a deposit paid meanwhile).
        let tip = regtest
            .rpc()
            .call("getblockcount", json!([]))
            .await
            .unwrap();
        chain_config = format!(
            "bitcoin_deposit_xpub = \"{}\"\nbitcoin_deposit_confirmations = 2\n\
             bitcoin_deposit_start_block = {tip}\n{chain_config}\
             [[workers]]\nkind = \"deposit\"\nchain = \"bitcoin\"\n",
            hot.deposit_xpub(Chain::Bitcoin).unwrap()
        );
    }
    // Top-level keys before the first table of the chain's lines.
    let (keys, tables) = match chain_config.find("[[") {
        Some(at) => chain_config.split_at(at),
        None => (chain_config.as_str(), ""),
    };
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 3\nconcurrency = 16\ndatabase_max_connections = 20\n\
             {keys}{keystore}{tables}\
             [[workers]]\nkind = \"withdrawal\"\nchain = \"{chain}\"\n",
        ),
    )
    .unwrap();
    let database_url = match &postgres {
        Some(postgres) => postgres.url(),
        None => format!("sqlite://{}", dir.join("coinsensei.db").display()),
    };
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &database_url)],
    )
    .await;
    let backend = common::backend::Backend::new(&database_url, &up).await;
    let deposits = match &node {
        Node::Bitcoin(regtest) => fund_deposits(regtest, &backend).await,
        _ => Vec::new(),
    };
    let http = backend.client.clone();
    let token_secret = backend.token.clone();
    let base = format!("http://{}", up.address);

    // The faults, while the requests go in and the payments go out.
    let stop = tokio_util::sync::CancellationToken::new();
    let kills = tokio::spawn({
        let stop = stop.clone();
        let database_url = database_url.clone();
        let worker = worker.clone();
        async move {
            let mut killed = 0u32;
            let mut seed = u64::from(std::process::id()) ^ chain as u64;
            while chaos && !stop.is_cancelled() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let wait = Duration::from_millis(1000 + (seed >> 33) % 4000);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                let output = run(&database_url, &["workers", "list", "--json"]).await;
                let Ok(workers) = serde_json::from_slice::<Vec<Value>>(&output.stdout) else {
                    continue;
                };
                if let Some(pid) = find(&workers, &worker)
                    .filter(|worker| worker["status"] == "running")
                    .and_then(|worker| worker["pid"].as_i64())
                    && nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        Signal::SIGKILL,
                    )
                    .is_ok()
                {
                    killed += 1;
                }
            }
            killed
        }
    });

    let started = Instant::now();
    let mut requests = Vec::new();
    let mut created_ids = Vec::new();
    let mut restarted_postgres = false;
    let mut restarted_node = false;
    // The exchange's backend sends from several clients at once, each request retried with
    // its key until it has an answer (the same key, so never two withdrawals).
    let clients = env_number("COINSENSEI_CHAOS_CLIENTS", 8).max(1) as usize;
    let intake = std::sync::Arc::new(tokio::sync::Semaphore::new(clients));
    let mut sending = tokio::task::JoinSet::new();
    for n in 0..count {
        let request = node.request(n);
        let body = json!({"chain": chain.as_str(), "asset": request.asset, "to": request.to, "amount": request.amount, "reference": format!("chaos:{n}")});
        let permit = intake.clone().acquire_owned().await.unwrap();
        let (http, base, token_secret) = (http.clone(), base.clone(), token_secret.clone());
        sending.spawn(async move {
            let created = wait_for(
                "the withdrawal accepted",
                Duration::from_secs(120),
                || async {
                    let response = http
                        .post(format!("{base}/api/v1/withdrawals"))
                        .bearer_auth(&token_secret)
                        .header("Idempotency-Key", format!("chaos-{n}"))
                        .json(&body)
                        .send()
                        .await
                        .ok()?;
                    let status = response.status().as_u16();
                    let value: Value = response.json().await.ok()?;
                    matches!(status, 200 | 201).then_some(value)
                },
            )
            .await;
            drop(permit);
            created["id"].as_i64().unwrap()
        });
        requests.push(request);
        if chaos
            && !restarted_postgres
            && n >= count * 2 / 5
            && let Some(postgres) = &postgres
        {
            postgres.restart();
            restarted_postgres = true;
        }
        if chaos && !restarted_node && n >= count * 3 / 5 {
            node.restart().await;
            restarted_node = true;
        }
    }
    while let Some(id) = sending.join_next().await {
        created_ids.push(id.unwrap());
    }
    created_ids.sort_unstable();
    let sent = started.elapsed();

    let list = |state: &'static str| {
        let http = http.clone();
        let base = base.clone();
        let token_secret = token_secret.clone();
        async move {
            let mut rows = Vec::new();
            let mut before: Option<i64> = None;
            loop {
                let mut url = format!("{base}/api/v1/withdrawals?limit=1000&state={state}");
                if let Some(before) = before {
                    url.push_str(&format!("&before_id={before}"));
                }
                let response = http.get(url).bearer_auth(&token_secret).send().await.ok()?;
                let page: Value = response.json().await.ok()?;
                rows.extend(page["withdrawals"].as_array()?.iter().cloned());
                match page["next_before_id"].as_i64() {
                    Some(next) => before = Some(next),
                    None => return Some(rows),
                }
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120 + count);
    let (completed, review) = loop {
        let completed = list("completed").await.unwrap_or_default();
        let review = list("manual_review").await.unwrap_or_default();
        if completed.len() + review.len() == count as usize {
            break (completed, review);
        }
        if Instant::now() > deadline {
            // Say where the others are, and why, before failing.
            for state in ["pending", "processing", "broadcast", "confirming", "failed"] {
                let rows = list(state).await.unwrap_or_default();
                println!("  still {state}: {}", rows.len());
                for row in rows.iter().take(5) {
                    println!(
                        "    {} txid {} error {}",
                        row["id"], row["txid"], row["error"]
                    );
                }
            }
            let jobs = run(
                &database_url,
                &[
                    "jobs",
                    "list",
                    "--queue",
                    &format!("{chain}.withdrawal"),
                    "--json",
                ],
            )
            .await;
            println!(
                "  jobs: {}",
                String::from_utf8_lossy(&jobs.stdout)
                    .chars()
                    .take(4000)
                    .collect::<String>()
            );
            panic!("not every withdrawal settled in time");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let settled_after = started.elapsed();
    stop.cancel();
    let killed = kills.await.unwrap();

    // The chain, not the store.
    let held = node.held(&requests).await;
    let (mut paid_once, mut duplicates, mut lost) = (0, 0, 0);
    let mut wrong = Vec::new();
    for (request, held) in requests.iter().zip(held) {
        let in_review = review.iter().any(|row| row["to"] == request.to.as_str());
        if held == request.units {
            paid_once += 1;
        } else if held == 0 && in_review {
            // Not paid, and a person was told why.
        } else if held == 0 {
            lost += 1;
        } else {
            if held > request.units {
                duplicates += 1;
            }
            wrong.push(format!(
                "{} {}: holds {held}, asked {}",
                request.asset, request.to, request.units
            ));
        }
    }
    let reasons: Vec<String> = review
        .iter()
        .map(|row| format!("{}: {}", row["id"], row["error"]))
        .collect();
    // Figures, from the store's times (created, and the moves in each row's history).
    let mut to_completed: Vec<f64> = completed
        .iter()
        .map(|row| {
            seconds_between(
                row["created_at"].as_str().unwrap(),
                row["updated_at"].as_str().unwrap(),
            )
        })
        .collect();
    to_completed.sort_by(f64::total_cmp);
    let mut to_broadcast = Vec::new();
    for id in created_ids.iter().step_by((count as usize / 50).max(1)) {
        let shown = run(
            &database_url,
            &["withdrawals", "show", &id.to_string(), "--json"],
        )
        .await;
        if let Ok(row) = serde_json::from_slice::<Value>(&shown.stdout)
            && let Some(entry) = row["audit"].as_array().and_then(|audit| {
                audit
                    .iter()
                    .find(|entry| entry["action"] == "withdrawal.broadcast")
            })
        {
            to_broadcast.push(seconds_between(
                row["created_at"].as_str().unwrap(),
                entry["at"].as_str().unwrap(),
            ));
        }
    }
    to_broadcast.sort_by(f64::total_cmp);
    let store = if sqlite { "SQLite" } else { "Postgres" };
    let on = match node.chain() {
        Chain::Ethereum => "anvil (ETH and ERC-20)",
        Chain::Tron => "the TRON simulation (TRX and USDT)",
        Chain::Bitcoin => "regtest bitcoind (BTC, batched)",
    };
    println!("chaos withdrawals on {on}, {store}, {count} withdrawals, faults {chaos}:");
    println!(
        "  faults: {killed} worker SIGKILLs, Postgres restarted: {restarted_postgres}, node restarted: {restarted_node}"
    );
    println!(
        "  chain: paid exactly once {paid_once}, duplicates {duplicates}, lost {lost}, wrong amounts {}",
        wrong.len()
    );
    let transactions: std::collections::HashSet<&str> = completed
        .iter()
        .filter_map(|row| row["txid"].as_str())
        .collect();
    println!(
        "  store: completed {} (in {} transactions), manual_review {}",
        completed.len(),
        transactions.len(),
        review.len()
    );
    for reason in &reasons {
        println!("    manual_review {reason}");
    }
    if let Node::Bitcoin(regtest) = &node {
        // The deposits the payouts spent where they lie, by the node's UTXO set.
        let rpc = regtest.rpc();
        let mut spent = 0;
        for (txid, vout) in &deposits {
            if rpc
                .call("gettxout", json!([txid, vout, false]))
                .await
                .unwrap()
                .is_null()
            {
                spent += 1;
            }
        }
        println!(
            "  deposits spent by payouts where they lie: {spent} of {}",
            deposits.len()
        );
        assert!(spent > 0, "no payout spent a credited deposit");
        let lines = ledger_reconcile(&config, &database_url, "bitcoin").await;
        let differing: Vec<&Value> = lines
            .iter()
            .filter(|line| line["wallet"] == "deposit" && line["verdict"] != "agrees")
            .collect();
        println!(
            "  ledger: {} deposit lines, {} not agreeing with the chain",
            lines
                .iter()
                .filter(|line| line["wallet"] == "deposit")
                .count(),
            differing.len()
        );
        assert!(differing.is_empty(), "{differing:#?}");
    }
    println!(
        "  requests sent by {clients} clients in {:.1} s; all settled after {:.1} s: {:.0} withdrawals/hour end to end",
        sent.as_secs_f64(),
        settled_after.as_secs_f64(),
        count as f64 / settled_after.as_secs_f64() * 3600.0
    );
    println!(
        "  request -> broadcast: p50 {:.2} s, p99 {:.2} s ({} sampled); request -> completed: p50 {:.2} s, p99 {:.2} s",
        percentile(&to_broadcast, 50.0),
        percentile(&to_broadcast, 99.0),
        to_broadcast.len(),
        percentile(&to_completed, 50.0),
        percentile(&to_completed, 99.0)
    );
    assert!(
        wrong.is_empty() && duplicates == 0 && lost == 0,
        "{wrong:#?}"
    );
    assert!(paid_once as u64 + review.len() as u64 >= count);
    for row in &review {
        assert!(row["error"].is_string(), "a manual review says why: {row}");
    }
    assert!(up.stop().await.success());
}

/// A directory of this run's own, removed at the end unless the run failed.
fn tempfile_dir(chain: Chain) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coinsensei-chaos-{chain}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
