//! `coinsensei chain status|balance|deposits`: what the configured node says. Ethereum
//! (all three) and TRON (status and balance); Bitcoin comes with its adapter.

use std::process::ExitCode;

use anyhow::Context;
use chain::address::{Address, Network};
use chain_ethereum::Ethereum;
use chain_tron::Tron;
use domain::Chain;

use crate::config::Settings;

async fn ethereum(settings: &Settings) -> anyhow::Result<Ethereum> {
    let config = settings.ethereum.as_ref().context(
        "no Ethereum node configured: set ethereum_rpc_url (COINSENSEI_ETHEREUM_RPC_URL)",
    )?;
    Ok(Ethereum::connect(&config.rpc_url, config.chain_id).await?)
}

fn tron(settings: &Settings) -> anyhow::Result<Tron> {
    Ok(Tron::new(settings.tron.node()?)?)
}

fn not_yet(chain: Chain) -> anyhow::Error {
    anyhow::anyhow!("the {chain} adapter is not built yet; ethereum and tron answer today")
}

pub async fn status(settings: Settings, chain: Chain) -> anyhow::Result<ExitCode> {
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
    if chain != Chain::Ethereum {
        return Err(not_yet(chain));
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
    address: &str,
    asset: Asset<'_>,
) -> anyhow::Result<ExitCode> {
    if chain == Chain::Bitcoin {
        return Err(not_yet(chain));
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
    pub addresses: Vec<String>,
    pub tokens: Vec<String>,
    pub from: u64,
    pub to: Option<u64>,
    pub as_json: bool,
}

pub async fn deposits(settings: Settings, request: DepositsRequest) -> anyhow::Result<ExitCode> {
    use chain::provider::{Asset, ChainRead, WatchSet};
    let chain = request.chain;
    if chain != Chain::Ethereum {
        anyhow::bail!("chain deposits reads ethereum only today, not {chain}");
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
    let client = ethereum(&settings).await?;
    let tip = client.tip().await?;
    let to = request.to.unwrap_or(tip.head);
    anyhow::ensure!(
        to <= tip.head,
        "--to {to} is past the node's head ({})",
        tip.head
    );
    anyhow::ensure!(
        request.from <= to,
        "--from {} is past the node's head ({})",
        request.from,
        tip.head
    );
    let blocks = to - request.from + 1;
    anyhow::ensure!(
        blocks <= DEPOSITS_RANGE_MAX,
        "{blocks} blocks asked for; at most {DEPOSITS_RANGE_MAX} per call"
    );
    let mut found = Vec::new();
    let mut start = request.from;
    while start <= to {
        let end = to.min(start + DEPOSITS_STEP - 1);
        found.extend(client.scan(start, end, &watch).await?.deposits);
        if blocks > 4 * DEPOSITS_STEP {
            eprintln!(
                "read {} of {blocks} blocks, {} deposits so far",
                end - request.from + 1,
                found.len()
            );
        }
        start = end + 1;
    }
    let mut decimals = std::collections::HashMap::new();
    for token in &watch.tokens {
        decimals.insert(token.clone(), client.token_decimals(token).await?);
    }
    let confirmations = |number: u64| tip.head.saturating_sub(number) + 1;
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
                        Asset::Native => "ETH".to_string(),
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
    for deposit in &found {
        let amount = match &deposit.asset {
            Asset::Native => format!("{} ETH", deposit.amount.format_decimal(18)),
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
