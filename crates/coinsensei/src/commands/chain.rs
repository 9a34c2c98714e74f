//! `coinsensei chain status|balance`: what the configured node says. Ethereum today; TRON and
//! Bitcoin come with their adapters.

use std::process::ExitCode;

use anyhow::{Context, bail};
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

pub async fn balance(
    settings: Settings,
    chain: Chain,
    address: &str,
    asset: Option<&str>,
) -> anyhow::Result<ExitCode> {
    if chain != Chain::Ethereum {
        return Err(not_yet(chain));
    }
    // Validated before any connection: a typo is said as such, not as a node error.
    let address = Address::parse(chain, Network::Mainnet, address)?;
    if let Some(asset) = asset
        && !asset.eq_ignore_ascii_case("ETH")
    {
        bail!("token balances ({asset}) come with ERC-20 support; ETH only today");
    }
    let client = ethereum(&settings).await?;
    let wei = client.balance(&address).await?;
    println!("{} ETH ({} wei)", wei.format_decimal(18), wei.base_units());
    Ok(ExitCode::SUCCESS)
}
