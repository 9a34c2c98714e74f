//! `coinsensei chain status|balance`: what the configured node says. Ethereum today; TRON and
//! Bitcoin come with their adapters.

use std::process::ExitCode;

use anyhow::Context;
use chain::address::{Address, Network};
use chain_ethereum::Ethereum;
use domain::Chain;

use crate::config::Settings;

async fn ethereum(settings: &Settings) -> anyhow::Result<Ethereum> {
    let config = settings.ethereum.as_ref().context(
        "no Ethereum node configured: set ethereum_rpc_url (COINSENSEI_ETHEREUM_RPC_URL)",
    )?;
    Ok(Ethereum::connect(&config.rpc_url, config.chain_id).await?)
}

fn not_yet(chain: Chain) -> anyhow::Error {
    anyhow::anyhow!("the {chain} adapter is not built yet; only ethereum answers today")
}

pub async fn status(settings: Settings, chain: Chain) -> anyhow::Result<ExitCode> {
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
    if chain != Chain::Ethereum {
        return Err(not_yet(chain));
    }
    // Validated before any connection: a typo is said as such, not as a node error.
    let address = Address::parse(chain, Network::Mainnet, address)?;
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
            Some(Address::parse(chain, Network::Mainnet, contract)?)
        }
        Asset::Contract(contract) => Some(Address::parse(chain, Network::Mainnet, contract)?),
    };
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
