//! `coinsensei chain status|balance|deposits`: what the configured node says. Ethereum,
//! TRON (through its full node's HTTP API) and Bitcoin (through Bitcoin Core's JSON-RPC, on
//! the `--network` configured), all three commands each.

use std::process::ExitCode;

use anyhow::Context;
use chain::address::{Address, Network};
use chain_ethereum::Ethereum;
use chain_tron::Tron;
use domain::Chain;

use crate::config::{BitcoinCredentials, Settings};

async fn ethereum(settings: &Settings) -> anyhow::Result<Ethereum> {
    let config = settings.ethereum.as_ref().context(
        "no Ethereum node configured: set ethereum_rpc_url (COINSENSEI_ETHEREUM_RPC_URL)",
    )?;
    Ok(Ethereum::connect(&config.rpc_url, config.chain_id).await?)
}

fn tron(settings: &Settings) -> anyhow::Result<Tron> {
    Ok(Tron::new(settings.tron.node()?)?)
}

/// A client of the configured Bitcoin node, its credentials read now; a cookie file again
/// whenever the node refuses them (the node rewrites it at each start).
pub(crate) fn bitcoin_rpc(settings: &Settings) -> anyhow::Result<chain_bitcoin::Rpc> {
    let config = settings.bitcoin.as_ref().context(
        "no Bitcoin node configured: set bitcoin_rpc_url (COINSENSEI_BITCOIN_RPC_URL) and bitcoin_rpc_cookie_file or bitcoin_rpc_user and bitcoin_rpc_password",
    )?;
    let timeout = chain_bitcoin::DEFAULT_RPC_TIMEOUT;
    let rpc = match &config.credentials {
        // Read again whenever the node refuses it: a restarted node writes a new one.
        BitcoinCredentials::CookieFile(path) => {
            chain_bitcoin::Rpc::with_cookie_file(&config.rpc_url, path, timeout)
        }
        BitcoinCredentials::UserPassword { user, password } => {
            chain_bitcoin::Rpc::new(&config.rpc_url, user, password, timeout)
        }
    };
    rpc.map_err(|error| anyhow::anyhow!(error))
}

/// The node's status, after checking it is on `network`.
async fn bitcoin_status(
    rpc: &chain_bitcoin::Rpc,
    network: Network,
) -> anyhow::Result<chain_bitcoin::NodeStatus> {
    let status = chain_bitcoin::node_status(rpc)
        .await
        .with_context(|| format!("asking the bitcoin node at {}", rpc.url()))?;
    status.require(network)?;
    Ok(status)
}

pub async fn status(
    settings: Settings,
    chain: Chain,
    network: Network,
) -> anyhow::Result<ExitCode> {
    if chain == Chain::Bitcoin {
        let rpc = bitcoin_rpc(&settings)?;
        let status = bitcoin_status(&rpc, network).await?;
        // Headers ahead of blocks: the node still downloads or validates blocks.
        let behind = status.headers.saturating_sub(status.blocks);
        let download = if status.initial_block_download {
            ", in initial block download"
        } else {
            ""
        };
        println!(
            "bitcoin node {}: reachable, network {network}, tip {} {}, headers {} ({behind} \
             blocks ahead), verification progress {}{download}",
            rpc.url(),
            status.blocks,
            status.best_hash,
            status.headers,
            status.verification_progress
        );
        return Ok(ExitCode::SUCCESS);
    }
    if chain == Chain::Tron {
        let client = tron(&settings)?;
        let (head, solidified) = tokio::try_join!(client.head(), client.solidified())?;
        let (head, solidified) = (head.reference.number, solidified.reference.number);
        println!(
            "tron node {}: reachable, head {head}, solidified {solidified} ({} blocks behind the head)",
            client.endpoint(),
            head.saturating_sub(solidified)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let client = ethereum(&settings).await?;
    let status = client.status().await?;
    let finalized = match status.finalized {
        Some(finalized) => format!(
            "finalized {finalized} ({} blocks behind the head)",
            status.head.saturating_sub(finalized)
        ),
        None => "no finalized block reported".to_string(),
    };
    println!(
        "ethereum node {}: reachable, chain {}, head {}, {finalized}",
        client.endpoint(),
        status.chain_id,
        status.head
    );
    Ok(ExitCode::SUCCESS)
}

/// Which balance: the native coin, an asset of the catalogue, or a token contract.
pub enum Asset<'a> {
    Native,
    Symbol(&'a str),
    Contract(&'a str),
}

pub async fn balance(
    settings: Settings,
    chain: Chain,
    network: Network,
    address: &str,
    asset: Asset<'_>,
) -> anyhow::Result<ExitCode> {
    if chain == Chain::Bitcoin {
        // Validated before any connection: another network's address is refused as such.
        let address = Address::parse(chain, network, address)?;
        match asset {
            Asset::Native => {}
            Asset::Symbol(symbol) if symbol.eq_ignore_ascii_case("BTC") => {}
            Asset::Symbol(_) | Asset::Contract(_) => {
                anyhow::bail!("bitcoin has no tokens here: drop --asset and --token")
            }
        }
        let rpc = bitcoin_rpc(&settings)?;
        bitcoin_status(&rpc, network).await?;
        let sat = chain_bitcoin::address_balance(&rpc, &address)
            .await
            .context("reading the balance from the node's UTXO set (scantxoutset)")?;
        println!(
            "{} BTC ({} satoshi)",
            sat.format_decimal(8),
            sat.base_units()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Validated before any connection: a typo is said as such, not as a node error.
    let address = Address::parse(chain, Network::Mainnet, address)?;
    // The catalogue's decimals for a listed token; otherwise the contract is asked.
    let mut listed_decimals = None;
    let token = match asset {
        Asset::Native => None,
        Asset::Symbol(symbol) if symbol.eq_ignore_ascii_case(chain.native_symbol()) => None,
        Asset::Symbol(symbol) => {
            // The built-in catalogue holds mainnet contracts; on other networks use --token.
            let catalogue = domain::AssetCatalogue::mainnet();
            let asset = catalogue.get(chain, &symbol.to_uppercase())?;
            let contract = asset
                .contract
                .as_deref()
                .context("a token without a contract in the catalogue")?;
            listed_decimals = Some(asset.decimals);
            Some(Address::parse(chain, Network::Mainnet, contract)?)
        }
        Asset::Contract(contract) => Some(Address::parse(chain, Network::Mainnet, contract)?),
    };
    if chain == Chain::Tron {
        return tron_balance(&settings, &address, token, listed_decimals).await;
    }
    let client = ethereum(&settings).await?;
    match token {
        None => {
            let wei = client.balance(&address).await?;
            println!("{} ETH ({} wei)", wei.format_decimal(18), wei.base_units());
        }
        Some(token) => {
            let decimals = client.token_decimals(&token).await?;
            let units = client.token_balance(&token, &address).await?;
            println!(
                "{} (token {token}, {decimals} decimals; {} base units)",
                units.format_decimal(decimals),
                units.base_units()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tron_balance(
    settings: &Settings,
    address: &Address,
    token: Option<Address>,
    listed_decimals: Option<u8>,
) -> anyhow::Result<ExitCode> {
    let client = tron(settings)?;
    match token {
        None => {
            let (sun, activated) = client.account(address).await?;
            let note = if activated {
                ""
            } else {
                " (not activated: it never received TRX)"
            };
            println!(
                "{} TRX ({} sun){note}",
                sun.format_decimal(6),
                sun.base_units()
            );
        }
        Some(token) => {
            let decimals = match listed_decimals {
                Some(decimals) => decimals,
                None => client.token_decimals(&token, address).await?,
            };
            let units = client.token_balance(&token, address).await?;
            println!(
                "{} (token {token}, {decimals} decimals; {} base units)",
                units.format_decimal(decimals),
                units.base_units()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The widest range `chain deposits` reads in one call.
pub const DEPOSITS_RANGE_MAX: u64 = 100_000;

/// Blocks read per scan call (and between progress lines).
const DEPOSITS_STEP: u64 = 500;

pub struct DepositsRequest {
    pub chain: Chain,
    /// The Bitcoin network (addresses and the node are checked against it).
    pub network: Network,
    pub addresses: Vec<String>,
    pub tokens: Vec<String>,
    pub from: u64,
    pub to: Option<u64>,
    pub as_json: bool,
}

pub async fn deposits(settings: Settings, request: DepositsRequest) -> anyhow::Result<ExitCode> {
    use chain::provider::WatchSet;
    let chain = request.chain;
    if chain == Chain::Bitcoin {
        return bitcoin_deposits(&settings, &request).await;
    }
    // Everything is validated before any connection.
    let parse = |text: &String| Address::parse(chain, Network::Mainnet, text);
    let watch = WatchSet {
        addresses: request
            .addresses
            .iter()
            .map(parse)
            .collect::<Result<_, _>>()?,
        tokens: request.tokens.iter().map(parse).collect::<Result<_, _>>()?,
    };
    if let Some(to) = request.to {
        anyhow::ensure!(
            to >= request.from,
            "--to {to} is before --from {}",
            request.from
        );
    }
    let mut decimals = std::collections::HashMap::new();
    let (found, head) = if chain == Chain::Tron {
        let client = tron(&settings)?;
        let scanned = scan_range(&client, &request, &watch).await?;
        // `decimals()` is a constant call: asked on behalf of the first watched address.
        if let Some(caller) = watch.addresses.first() {
            for token in &watch.tokens {
                decimals.insert(token.clone(), client.token_decimals(token, caller).await?);
            }
        }
        scanned
    } else {
        let client = ethereum(&settings).await?;
        let scanned = scan_range(&client, &request, &watch).await?;
        for token in &watch.tokens {
            decimals.insert(token.clone(), client.token_decimals(token).await?);
        }
        scanned
    };
    print_deposits(chain, &request, &found, head, &decimals)
}

/// The deposits to `watch` in the request's blocks (up to the head by default), read in steps;
/// and the head they were counted against.
async fn scan_range<C: chain::provider::ChainRead>(
    client: &C,
    request: &DepositsRequest,
    watch: &chain::provider::WatchSet,
) -> anyhow::Result<(Vec<chain::provider::Deposit>, u64)> {
    let tip = client.tip().await?;
    let to = request.to.unwrap_or(tip.head);
    let blocks = check_range(request, to, tip.head)?;
    let mut found = Vec::new();
    let mut start = request.from;
    while start <= to {
        let end = to.min(start + DEPOSITS_STEP - 1);
        found.extend(client.scan(start, end, watch).await?.deposits);
        if blocks > 4 * DEPOSITS_STEP {
            eprintln!(
                "read {} of {blocks} blocks, {} deposits so far",
                end - request.from + 1,
                found.len()
            );
        }
        start = end + 1;
    }
    Ok((found, tip.head))
}

fn print_deposits(
    chain: Chain,
    request: &DepositsRequest,
    found: &[chain::provider::Deposit],
    head: u64,
    decimals: &std::collections::HashMap<Address, u8>,
) -> anyhow::Result<ExitCode> {
    use chain::provider::Asset;
    let symbol = chain.native_symbol();
    let native_decimals = match chain {
        Chain::Tron => 6,
        Chain::Bitcoin => 8,
        Chain::Ethereum => 18,
    };
    let to = request.to.unwrap_or(head);
    let confirmations = |number: u64| head.saturating_sub(number) + 1;
    if request.as_json {
        let rows: Vec<serde_json::Value> = found
            .iter()
            .map(|deposit| {
                serde_json::json!({
                    "block": deposit.block.number,
                    "block_hash": deposit.block.hash,
                    "confirmations": confirmations(deposit.block.number),
                    "txid": deposit.txid,
                    "position": deposit.position,
                    "asset": match &deposit.asset {
                        Asset::Native => symbol.to_string(),
                        Asset::Token(contract) => contract.to_string(),
                    },
                    "to": deposit.to.to_string(),
                    "from": deposit.from,
                    "amount": deposit.amount.base_units().to_string(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if found.is_empty() {
        println!("no deposits in blocks {}..={to}", request.from);
    }
    for deposit in found {
        if chain == Chain::Bitcoin {
            // An output: its amount in satoshi too, and its txid:vout.
            println!(
                "block {} ({} confirmations) {} BTC ({} satoshi) to {} in {}:{}",
                deposit.block.number,
                confirmations(deposit.block.number),
                deposit.amount.format_decimal(8),
                deposit.amount.base_units(),
                deposit.to,
                deposit.txid,
                deposit.position
            );
            continue;
        }
        let amount = match &deposit.asset {
            Asset::Native => format!(
                "{} {symbol}",
                deposit.amount.format_decimal(native_decimals)
            ),
            Asset::Token(contract) => format!(
                "{} of token {contract}",
                deposit
                    .amount
                    .format_decimal(decimals.get(contract).copied().unwrap_or(0))
            ),
        };
        println!(
            "block {} ({} confirmations) {} to {} in {}",
            deposit.block.number,
            confirmations(deposit.block.number),
            amount,
            deposit.to,
            deposit.txid
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks `from..=to` against the node's `head` and the widest range; the number of blocks.
fn check_range(request: &DepositsRequest, to: u64, head: u64) -> anyhow::Result<u64> {
    anyhow::ensure!(to <= head, "--to {to} is past the node's head ({head})");
    anyhow::ensure!(
        request.from <= to,
        "--from {} is past the node's head ({head})",
        request.from
    );
    let blocks = to - request.from + 1;
    anyhow::ensure!(
        blocks <= DEPOSITS_RANGE_MAX,
        "{blocks} blocks asked for; at most {DEPOSITS_RANGE_MAX} per call"
    );
    Ok(blocks)
}

/// `chain deposits --chain bitcoin`: every output paying the addresses in the blocks, read
/// raw from the node (no node wallet), keyed txid:vout, with confirmations tip − height + 1.
async fn bitcoin_deposits(
    settings: &Settings,
    request: &DepositsRequest,
) -> anyhow::Result<ExitCode> {
    use chain::provider::WatchSet;
    let network = request.network;
    // Everything is validated before any connection: another network's address is refused.
    anyhow::ensure!(
        request.tokens.is_empty(),
        "bitcoin has no tokens here: drop --token"
    );
    let addresses = request
        .addresses
        .iter()
        .map(|text| Address::parse(Chain::Bitcoin, network, text))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(to) = request.to {
        anyhow::ensure!(
            to >= request.from,
            "--to {to} is before --from {}",
            request.from
        );
    }
    let rpc = bitcoin_rpc(settings)?;
    let status = bitcoin_status(&rpc, network).await?;
    let head = status.blocks;
    let to = request.to.unwrap_or(head);
    let blocks = check_range(request, to, head)?;
    let watch = WatchSet {
        addresses,
        tokens: Vec::new(),
    };
    let mut found = Vec::new();
    let mut previous: Option<String> = None;
    let mut start = request.from;
    while start <= to {
        let end = to.min(start + DEPOSITS_STEP - 1);
        let batch = chain_bitcoin::scan_deposits(&rpc, network, start, end, &watch)
            .await
            .with_context(|| format!("reading blocks {start}..={end} from the bitcoin node"))?;
        // The blocks must chain, within a step and onto the step before: a reorg while
        // reading shows as a broken link.
        batch.check(start)?;
        if let (Some(last), Some(first)) = (&previous, batch.blocks.first()) {
            anyhow::ensure!(
                first.parent_hash == *last,
                "block {start} does not follow the block read before it: the chain reorganised while reading; run the command again"
            );
        }
        previous = batch.blocks.last().map(|block| block.hash.clone());
        found.extend(batch.deposits);
        if blocks > 4 * DEPOSITS_STEP {
            eprintln!(
                "read {} of {blocks} blocks, {} deposits so far",
                end - request.from + 1,
                found.len()
            );
        }
        start = end + 1;
    }
    print_deposits(
        Chain::Bitcoin,
        request,
        &found,
        head,
        &std::collections::HashMap::new(),
    )
}
