//! `coinsensei up --devnet`: the whole system against throwaway chains on this machine, to see
//! the main job done. It starts anvil (Ethereum, with an ERC-20 standing in for USDT), a
//! regtest bitcoind and the TRON simulation (`tron-sim`: no TRON node can run here), funds the
//! hot wallets, writes a configuration that points a withdrawal worker per chain at them, and
//! then runs `up` on it with a banner that says how to send a first withdrawal.
//!
//! Everything lives in `<data dir>/devnet`, made afresh at every start (the chains are new
//! each time, so yesterday's withdrawals would point at transactions no chain holds). The
//! keys come from the public test mnemonic anvil funds: a devnet's keys are nobody's secret,
//! and the banner says so. A chain whose program is missing is left out, with how to get it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use alloy_primitives::U256;
use anyhow::{Context, bail};
use chain::address::{Address, Network};
use chain::provider::SubmitOutcome;
use domain::{Chain, Role};
use signer::{InProcessSigner, Mnemonic, Signer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::{Overrides, Settings};

/// anvil's funded accounts come from this public mnemonic; so do the devnet's hot wallets.
pub const MNEMONIC: &str = "test test test test test test test test test test test junk";
/// The devnet keystore's password: a devnet's keys are public anyway.
const PASSWORD: &str = "devnet";
/// The ERC-20 the Ethereum devnet pays as USDT (OpenZeppelin's ERC20 with a constructor
/// minting its argument to the deployer; source beside it).
const TOKEN_BIN: &str = include_str!("../../../chain-ethereum/fixtures/erc20/TestToken.bin");
/// How often the regtest node mines a block (it mines only when asked).
const BITCOIN_BLOCK: Duration = Duration::from_secs(5);
/// What the hot wallets start with, in base units.
const USDT_SUPPLY: u128 = 1_000_000_000_000; // 1,000,000 USDT (6 decimals)
const TRX_FUNDS: u64 = 100_000_000_000; // 100,000 TRX
/// Blocks mined to the Bitcoin hot wallet at the start (50 BTC each once mature).
const BITCOIN_FUNDING_BLOCKS: u32 = 10;
/// Where regtest blocks go once the hot wallet is funded: BIP173's regtest example, nobody's.
const ELSEWHERE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
/// Configuration keys the devnet sets itself; an environment variable for one of them would
/// point its workers at a real chain or database, so it is refused.
const OWN_KEYS: &[&str] = &[
    "database_url",
    "queue_backend",
    "ethereum_rpc_url",
    "ethereum_chain_id",
    "tron_rpc_url",
    "tron_api_key",
    "tron_genesis_block_id",
    "bitcoin_rpc_url",
    "bitcoin_rpc_cookie_file",
    "bitcoin_rpc_user",
    "bitcoin_rpc_password",
    "bitcoin_network",
    "keystore",
    "keystore_password_file",
];

/// The devnet's chains, alive as long as this is.
struct Chains {
    dir: PathBuf,
    anvil: Option<(Child, String, String)>,
    bitcoind: Option<(Child, String, PathBuf)>,
    tron: tron_sim::Sim,
    hot: HotWallets,
    missing: Vec<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Chains {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Chains {
    /// Stops the chains' processes and waits until each has exited, so none outlives the
    /// devnet (dropping them only sends the signal).
    async fn stop(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some((child, ..)) = self.anvil.as_mut()
            && let Err(error) = child.kill().await
        {
            tracing::warn!(%error, "stopping the devnet's anvil");
        }
        if let Some((child, ..)) = self.bitcoind.as_mut()
            && let Err(error) = child.kill().await
        {
            tracing::warn!(%error, "stopping the devnet's bitcoind");
        }
    }
}

struct HotWallets {
    ethereum: Address,
    tron: Address,
    bitcoin: Address,
}

pub async fn run(
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
) -> anyhow::Result<ExitCode> {
    if config.is_some() {
        bail!("--devnet writes its own configuration: leave out --config (and COINSENSEI_CONFIG)");
    }
    for key in OWN_KEYS {
        let variable = format!("COINSENSEI_{}", key.to_ascii_uppercase());
        if std::env::var_os(&variable).is_some() {
            bail!(
                "--devnet runs its own chains and database, but {variable} is set: unset it (a devnet must not reach a real chain or database)"
            );
        }
    }
    let root = data_dir.unwrap_or_else(|| PathBuf::from(crate::config::DATA_DIR_DEFAULT));
    let dir = fresh_dir(&root.join("devnet"))?;
    eprintln!("starting a devnet in {} ...", dir.display());

    let chains = Chains::start(&dir).await?;
    let config_file = chains.write_config()?;
    let settings = Settings::load(
        Some(&config_file),
        &Overrides {
            data_dir: Some(dir.clone()),
            listen,
        },
    )?;
    let tokens = tokens(&settings).await?;
    let banner = chains.banner(&tokens);
    let code = super::up::run_with(settings, banner).await;
    chains.stop().await;
    code
}

/// `text` as a TOML basic string (a path may hold a quote or a backslash).
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `dir`, emptied: only a directory this command made (it holds `.devnet`) is ever removed.
fn fresh_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let marker = dir.join(".devnet");
    if dir.exists() {
        if !marker.exists() {
            bail!(
                "{} exists and was not made by --devnet: move it away or choose another --data-dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the last devnet in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        &marker,
        "made by `coinsensei up --devnet`; removed at its next start\n",
    )?;
    let dir = dir.canonicalize()?;
    Ok(dir)
}

/// A program of the devnet: from `variable`, else `PATH`, else where `cargo xtask` installs it.
fn tool(name: &str, variable: &str, installed: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let candidate = PathBuf::from(installed);
    candidate.is_file().then_some(candidate)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Chains {
    async fn start(dir: &Path) -> anyhow::Result<Chains> {
        let keys = InProcessSigner::new(
            &Mnemonic::parse(MNEMONIC).context("the test mnemonic")?,
            Network::Regtest,
        );
        signer::keystore::create(
            &dir.join("keystore.json"),
            &Mnemonic::parse(MNEMONIC).context("the test mnemonic")?,
            PASSWORD.as_bytes(),
            signer::keystore::KdfParams::default(),
        )
        .context("writing the devnet keystore")?;
        std::fs::write(dir.join("password"), format!("{PASSWORD}\n"))?;
        let hot = HotWallets {
            ethereum: keys.address(Chain::Ethereum, 0)?,
            tron: keys.address(Chain::Tron, 0)?,
            bitcoin: keys.address(Chain::Bitcoin, 0)?,
        };
        let mut missing = Vec::new();
        let mut tasks = Vec::new();

        let anvil = match tool(
            "anvil",
            "COINSENSEI_ANVIL",
            "target/tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil",
        ) {
            Some(binary) => Some(start_anvil(&binary, &keys).await?),
            None => {
                missing.push("ethereum: anvil not found (set COINSENSEI_ANVIL, put it on PATH, or run `cargo xtask devnet`, which installs it from npm)".into());
                None
            }
        };
        let bitcoind = match tool(
            "bitcoind",
            "COINSENSEI_BITCOIND",
            "target/tools/bitcoind/bitcoind",
        ) {
            Some(binary) => {
                let (child, url, cookie, rpc) = start_bitcoind(&binary, dir).await?;
                fund_bitcoin(&rpc, &hot.bitcoin).await?;
                tasks.push(tokio::spawn(mine_bitcoin(rpc)));
                Some((child, url, cookie))
            }
            None => {
                missing.push("bitcoin: bitcoind not found (set COINSENSEI_BITCOIND, put it on PATH, or run `cargo xtask devnet`, which installs Debian's bitcoin-knots)".into());
                None
            }
        };
        let mut ledger = tron_sim::Ledger {
            head: 100,
            ..tron_sim::Ledger::default()
        };
        ledger.fund(&hot.tron, TRX_FUNDS, USDT_SUPPLY);
        let tron = tron_sim::Sim::start(ledger, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("starting the TRON simulation")?;
        tasks.push(tron.spawn_miner());
        Ok(Chains {
            dir: dir.to_path_buf(),
            anvil,
            bitcoind,
            tron,
            hot,
            missing,
            tasks,
        })
    }

    /// The configuration `up` runs on: a withdrawal worker per chain that runs here.
    fn write_config(&self) -> anyhow::Result<PathBuf> {
        let dir = &self.dir;
        let path_in = |name: &str| quoted(&dir.join(name).display().to_string());
        // Top-level keys first, then the tables.
        let mut keys = vec![
            format!(
                "database_url = {}",
                quoted(&format!("sqlite://{}", dir.join("coinsensei.db").display()))
            ),
            format!("keystore = {}", path_in("keystore.json")),
            format!("keystore_password_file = {}", path_in("password")),
            "bitcoin_network = \"regtest\"".to_string(),
            format!("tron_rpc_url = {}", quoted(&self.tron.url)),
            // The simulation's own block 0, so the health checker checks the network.
            format!("tron_genesis_block_id = {}", quoted(&tron_sim::block_id(0))),
        ];
        let mut tables = Vec::new();
        if let Some((_, url, token)) = &self.anvil {
            keys.push(format!("ethereum_rpc_url = {}", quoted(url)));
            keys.push("ethereum_chain_id = 31337".into());
            tables.push(format!(
                "[[assets]]\nchain = \"ethereum\"\nsymbol = \"USDT\"\ndecimals = 6\ncontract = {}",
                quoted(token)
            ));
        }
        if let Some((_, url, cookie)) = &self.bitcoind {
            keys.push(format!("bitcoin_rpc_url = {}", quoted(url)));
            keys.push(format!(
                "bitcoin_rpc_cookie_file = {}",
                quoted(&cookie.display().to_string())
            ));
            keys.push(format!("bitcoin_batch_wait = {}", BITCOIN_BLOCK.as_secs()));
        }
        for (chain, runs) in [
            ("tron", true),
            ("ethereum", self.anvil.is_some()),
            ("bitcoin", self.bitcoind.is_some()),
        ] {
            if runs {
                tables.push(format!(
                    "[[workers]]\nkind = \"withdrawal\"\nchain = \"{chain}\""
                ));
            }
        }
        let text = format!(
            "# Written by `coinsensei up --devnet`; remade at every start.\n{}\n{}\n",
            keys.join("\n"),
            tables.join("\n")
        );
        let path = dir.join("coinsensei.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// What `up` prints once it listens: the chains, the keys' warning, the tokens and a
    /// first withdrawal to send.
    fn banner(&self, tokens: &Tokens) -> impl FnOnce(SocketAddr) -> String + Send + 'static {
        let mut lines = vec![
            String::new(),
            "DEVNET: throwaway chains on this machine, remade at every start.".to_string(),
            format!(
                "  keys           from the PUBLIC test mnemonic \"{MNEMONIC}\": never send real funds to them"
            ),
        ];
        if let Some((_, url, token)) = &self.anvil {
            lines.push(format!(
                "  ethereum       anvil at {url} (chain 31337, a block a second); USDT is the ERC-20 at {token}"
            ));
        }
        if let Some((_, url, _)) = &self.bitcoind {
            lines.push(format!(
                "  bitcoin        bitcoind -regtest at {url}, a block every {} s",
                BITCOIN_BLOCK.as_secs()
            ));
        }
        lines.push(format!(
            "  tron           TRON SIMULATION at {} (NOT a TRON node: an in-memory ledger answering with recorded java-tron responses)",
            self.tron.url
        ));
        for missing in &self.missing {
            lines.push(format!("  left out       {missing}"));
        }
        lines.push(format!(
            "  hot wallets    tron {}, ethereum {}, bitcoin {}",
            self.hot.tron, self.hot.ethereum, self.hot.bitcoin
        ));
        lines.push(format!(
            "  service token  {}  (the exchange's backend: create, read, cancel withdrawals)",
            tokens.service
        ));
        lines.push(format!(
            "  admin token    {}  (log in to the dashboard with it)",
            tokens.admin
        ));
        let first = if self.anvil.is_some() {
            r#"{"chain":"ethereum","asset":"ETH","to":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","amount":"0.5","reference":"user:1"}"#
        } else {
            r#"{"chain":"tron","asset":"USDT","to":"TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7","amount":"12.5","reference":"user:1"}"#
        };
        let service = tokens.service.clone();
        move |address| {
            lines.push("Send a first withdrawal:".into());
            lines.push(format!(
                "  curl -s http://{address}/api/v1/withdrawals -H 'Authorization: Bearer {service}' \\\n       -H 'Idempotency-Key: first-1' -H 'Content-Type: application/json' \\\n       -d '{first}'"
            ));
            lines.push(format!(
                "and watch it paid on http://{address}/withdrawals (other chains and assets: tron TRX/USDT, bitcoin BTC)."
            ));
            lines.join("\n")
        }
    }
}

/// anvil on a free port, a block a second; the ERC-20 deployed from the hot wallet (anvil's
/// first funded account), which then holds its whole supply. Its URL and the token.
async fn start_anvil(
    binary: &Path,
    keys: &InProcessSigner,
) -> anyhow::Result<(Child, String, String)> {
    let mut child = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", "0", "--block-time", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting anvil ({})", binary.display()))?;
    let stdout = child.stdout.take().context("anvil's output")?;
    let mut lines = BufReader::new(stdout).lines();
    let listening = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(address) = line.trim().strip_prefix("Listening on ") {
                return Ok(address.to_string());
            }
        }
        bail!("anvil exited before listening")
    })
    .await
    .context("anvil did not listen within 30 s")??;
    // anvil logs every call; keep reading so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = format!("http://{listening}");
    let client = chain_ethereum::Ethereum::connect(&url, Some(31337))
        .await
        .context("connecting to anvil")?;
    let token = deploy_token(&client, keys).await?;
    Ok((child, url, token))
}

async fn deploy_token(
    client: &chain_ethereum::Ethereum,
    keys: &InProcessSigner,
) -> anyhow::Result<String> {
    let from = keys.address(Chain::Ethereum, 0)?;
    let mut code = hex::decode(TOKEN_BIN.trim()).context("the token's bytecode")?;
    code.extend_from_slice(&U256::from(USDT_SUPPLY).to_be_bytes::<32>());
    let nonce = client.pending_nonce(&from).await?;
    let fees = client.fees(1_000_000_000_000).await?;
    let signed = chain_ethereum::sign(
        client.build_contract_creation(code, nonce, fees, 3_000_000),
        keys,
        0,
    )?;
    if client.submit(&signed).await != SubmitOutcome::Accepted {
        bail!("anvil refused the token's deployment");
    }
    let creator = alloy_primitives::Address::from(
        from.ethereum_bytes()
            .context("the hot wallet's Ethereum address")?,
    );
    let token = creator.create(nonce).to_checksum(None);
    let address = Address::parse(Chain::Ethereum, Network::Mainnet, &token)?;
    for _ in 0..100 {
        if client
            .token_balance(&address, &from)
            .await
            .is_ok_and(|balance| !balance.is_zero())
        {
            return Ok(token);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the devnet's ERC-20 was not deployed within 20 s")
}

/// A regtest bitcoind with its own data directory under the devnet's; its URL, cookie file
/// and a client.
async fn start_bitcoind(
    binary: &Path,
    dir: &Path,
) -> anyhow::Result<(Child, String, PathBuf, chain_bitcoin::Rpc)> {
    let datadir = dir.join("bitcoind");
    std::fs::create_dir_all(&datadir)?;
    let port = free_port()?;
    let child = Command::new(binary)
        .arg("-regtest")
        .arg(format!("-datadir={}", datadir.display()))
        .arg(format!("-rpcport={port}"))
        .args(chain_bitcoin::REGTEST_NODE_ARGS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting bitcoind ({})", binary.display()))?;
    let url = format!("http://127.0.0.1:{port}");
    let cookie = datadir.join("regtest/.cookie");
    for _ in 0..300 {
        if let Ok(text) = std::fs::read_to_string(&cookie)
            && let Ok(rpc) = chain_bitcoin::Rpc::with_cookie(&url, &text, Duration::from_secs(30))
            && rpc
                .call_once("getblockcount", serde_json::json!([]))
                .await
                .is_ok()
        {
            return Ok((child, url, cookie, rpc));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "bitcoind did not answer within 60 s (its log: {}/regtest/debug.log)",
        datadir.display()
    )
}

/// Blocks to the hot wallet, then 101 elsewhere so their coinbases are spendable.
async fn fund_bitcoin(rpc: &chain_bitcoin::Rpc, hot: &Address) -> anyhow::Result<()> {
    for (blocks, to) in [
        (BITCOIN_FUNDING_BLOCKS, hot.to_string()),
        (101, ELSEWHERE.to_string()),
    ] {
        rpc.call("generatetoaddress", serde_json::json!([blocks, to]))
            .await
            .map_err(|error| anyhow::anyhow!("mining on the regtest node: {error:?}"))?;
    }
    Ok(())
}

async fn mine_bitcoin(rpc: chain_bitcoin::Rpc) {
    loop {
        tokio::time::sleep(BITCOIN_BLOCK).await;
        if let Err(error) = rpc
            .call("generatetoaddress", serde_json::json!([1, ELSEWHERE]))
            .await
        {
            tracing::warn!(?error, "the devnet's regtest node did not mine");
        }
    }
}

struct Tokens {
    service: String,
    admin: String,
}

/// A `service` token for the backend and an `admin` one for the dashboard, in the devnet's
/// fresh database.
async fn tokens(settings: &Settings) -> anyhow::Result<Tokens> {
    let store = super::connect_and_migrate(settings).await?;
    let now = chrono::Utc::now();
    let (_, service) = web::auth::issue(&store, "devnet-backend", Role::Service, now).await?;
    let (_, admin) = web::auth::issue(&store, "devnet-admin", Role::Admin, now).await?;
    store.close().await;
    Ok(Tokens { service, admin })
}

#[cfg(test)]
mod tests {
    use figment::providers::Format;

    use super::quoted;

    /// A path with a quote, a backslash or a control character reads back as itself.
    #[test]
    fn quoted_paths_read_back_as_written() {
        for text in [
            "/tmp/plain",
            "/tmp/a \"b\"",
            "C:\\data\\x",
            "/tmp/tab\there",
        ] {
            let document = format!("key = {}\n", quoted(text));
            let read: std::collections::HashMap<String, String> =
                figment::Figment::from(figment::providers::Toml::string(&document))
                    .extract()
                    .unwrap();
            assert_eq!(read["key"], text, "{document}");
        }
    }
}
