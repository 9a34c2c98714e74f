//! The consolidation workers' job handler: `sweep.run`, one job per chain in the chain's
//! `consolidation` queue that runs again by snoozing itself every [`ROUND_INTERVAL`] (like the
//! deposit scanner: being a job, it survives any worker's death, its lease rescued within
//! seconds, and its unique key keeps it to one at a time).
//!
//! Each run is one round of `wallet::sweeps::Sweeper` (docs/deposits.md, "Consolidation"):
//! settle the gas wallet's nonces, step the open sweeps, and start sweeps of the issued
//! addresses holding more than their asset's `[[deposit_policy]] sweep_min`, while the base
//! fee is at most `ethereum_sweep_base_fee_max_gwei`; and send the hot wallet's balance above
//! an asset's `hot_ceiling` to `ethereum_cold_address`. On TRON each run is one round of
//! `wallet::energy_sweeps::EnergySweeper`: a TRC-20 sweep's energy lent by the staking account
//! (`tron_staking_wallet_index`) and taken back, or TRX topped up from the gas wallet
//! (`tron_gas_wallet_index`) to burn when it cannot lend enough; TRX sweeps; the hot wallet's
//! excess to `tron_cold_address`.
//!
//! The consolidation worker holds the keystore: the gas wallet's and the staking account's
//! keys (account 0) and the deposit account's keys (account 1', `signer::DepositSigner`) that
//! sign the sweeps.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chain::address::Address;
use chain::provider::Asset;
use chain_ethereum::Ethereum;
use chain_tron::Tron;
use chrono::Utc;
use domain::{Chain, Name, WorkerKind};
use queue::{Handler, Outcome, Registry};
use store::{JobInsert, JobRow};
use wallet::NonceSettlePolicy;
use wallet::energy_sweeps::{EnergySweepPolicy, EnergySweeper};
use wallet::sweeps::{SweepPolicy, SweepRound, Sweeper};

use crate::commands::keys::KeystoreArgs;
use crate::config::Settings;

/// The job kind of a chain's sweeper.
pub const SWEEP_JOB_KIND: &str = "sweep.run";
/// How long a sweeper waits between rounds.
pub const ROUND_INTERVAL: Duration = Duration::from_secs(2);
/// How long jobs wait while their chain cannot be swept.
const UNCONFIGURED_WAIT: Duration = Duration::from_secs(30);
/// How many of the keystore's working keys (account 0) are checked not to be the cold
/// address.
const COLD_KEYS_CHECKED: u32 = 256;
/// The most a replacement of a gas top-up may pay per gas (1,000 gwei), as withdrawals.
const ETHEREUM_FEE_CAP_WEI: u128 = 1_000_000_000_000;

/// A chain's sweeper: by gas top-ups (Ethereum) or by energy (TRON). Made once per worker and
/// kept behind an `Arc`, so the variants' sizes do not matter.
#[expect(clippy::large_enum_variant, reason = "one per worker, behind an Arc")]
enum ChainSweeper {
    Ethereum(Sweeper<Ethereum>),
    Tron(EnergySweeper<Tron>),
}

impl ChainSweeper {
    async fn run_once(&self) -> Result<SweepRound, wallet::WalletError> {
        match self {
            ChainSweeper::Ethereum(sweeper) => sweeper.run_once().await,
            ChainSweeper::Tron(sweeper) => sweeper.run_once().await,
        }
    }
}

struct Sweeps {
    chain: Chain,
    sweeper: Result<Arc<ChainSweeper>, String>,
}

#[async_trait]
impl Handler for Sweeps {
    async fn run(&self, job: &JobRow) -> Outcome {
        let sweeper = match &self.sweeper {
            Ok(sweeper) => sweeper,
            Err(missing) => {
                tracing::warn!(chain = %self.chain, job = job.id, "sweeps wait: {missing}");
                return Outcome::Snooze(UNCONFIGURED_WAIT);
            }
        };
        match sweeper.run_once().await {
            Ok(round) => {
                for error in &round.errors {
                    tracing::warn!(chain = %self.chain, %error, "sweep round");
                }
                if let Some(base_fee) = round.base_fee_over_cap {
                    tracing::info!(chain = %self.chain, base_fee, "new sweeps wait: the base fee is over ethereum_sweep_base_fee_max_gwei");
                }
                if !round.created.is_empty() || !round.moved.is_empty() {
                    tracing::info!(chain = %self.chain, created = round.created.len(), moved = round.moved.len(), "sweep round");
                }
            }
            Err(error) => {
                tracing::warn!(chain = %self.chain, %error, "a sweep round failed; the next one tries again");
            }
        }
        Outcome::Snooze(ROUND_INTERVAL)
    }
}

/// The chain's sweeper job, queued once (its unique key keeps it single).
fn sweep_job(chain: Chain) -> JobInsert {
    let now = Utc::now();
    JobInsert {
        queue: queue::queue_for(WorkerKind::Consolidation, chain),
        kind: Name::new(SWEEP_JOB_KIND).expect("a valid kind"),
        args: serde_json::json!({}),
        priority: 0,
        run_at: now,
        retry: None,
        unique_key: Some(format!("sweep.run:{chain}")),
        now,
    }
}

/// The handler of a consolidation worker on `chain`, connected to its node and keystore, with
/// the chain's sweeper job queued.
pub async fn registry(
    settings: &Settings,
    chain: Chain,
    holder: &str,
    backend: Arc<dyn queue::Backend>,
) -> Result<Registry, String> {
    let sweeper = match connect(settings, chain, holder).await {
        Ok(sweeper) => Ok(Arc::new(sweeper)),
        Err(error) => {
            let message = format!("{error:#}");
            tracing::warn!(%chain, "the consolidation worker cannot sweep yet: {message}");
            Err(message)
        }
    };
    backend
        .enqueue(&sweep_job(chain))
        .await
        .map_err(|error| format!("queueing the {chain} sweeper: {error}"))?;
    let mut registry = Registry::default();
    registry.register(SWEEP_JOB_KIND, Arc::new(Sweeps { chain, sweeper }));
    Ok(registry)
}

/// Per asset of `chain`, an amount from `[[deposit_policy]]` (`sweep_min`, `hot_ceiling`).
fn per_asset(
    settings: &Settings,
    chain: Chain,
    list: &[(Chain, String, domain::Amount)],
) -> anyhow::Result<Vec<(Asset, domain::Amount)>> {
    let network = settings.withdrawals.bitcoin_network;
    list.iter()
        .filter(|(of, _, _)| *of == chain)
        .map(|(_, asset, minimum)| {
            let asset = if asset == "native" {
                Asset::Native
            } else {
                Asset::Token(Address::parse(chain, network, asset)?)
            };
            Ok((asset, *minimum))
        })
        .collect()
}

/// Refuses to run unless `address` (a wallet whose transfers reach deposit addresses) is in
/// the chain's internal addresses: the scanner would credit them as deposits.
fn check_internal(
    settings: &Settings,
    chain: Chain,
    address: &Address,
    role: &str,
) -> anyhow::Result<()> {
    if !settings
        .deposits
        .rules(chain)
        .internal
        .contains(address.as_str())
    {
        anyhow::bail!(
            "invalid configuration key `{chain}_internal_addresses`: it must hold the {role} {address}, or its transfers to deposit addresses would be credited as deposits"
        );
    }
    Ok(())
}

/// The chain's cold address, checked to be watch-only: none of the keystore's working keys.
fn cold_address(
    keys: &signer::InProcessSigner,
    chain: Chain,
    text: Option<&str>,
    network: chain::address::Network,
) -> anyhow::Result<Option<Address>> {
    use signer::Signer as _;
    let Some(text) = text else { return Ok(None) };
    let cold = Address::parse(chain, network, text)?;
    for index in 0..COLD_KEYS_CHECKED {
        if keys.address(chain, index)? == cold {
            anyhow::bail!(
                "invalid configuration key `{chain}_cold_address`: it is key {index} of this keystore; a cold address's key must not be in the hot keystore"
            );
        }
    }
    Ok(Some(cold))
}

async fn connect(settings: &Settings, chain: Chain, holder: &str) -> anyhow::Result<ChainSweeper> {
    if chain == Chain::Bitcoin {
        anyhow::bail!(
            "bitcoin is never swept (its payouts spend deposit outputs directly); stop this worker"
        );
    }
    let minimums = per_asset(settings, chain, &settings.deposits.sweep_min)?;
    let ceilings = per_asset(settings, chain, &settings.deposits.hot_ceiling)?;
    if minimums.is_empty() && ceilings.is_empty() {
        anyhow::bail!(
            "nothing to sweep: set `sweep_min` (or `hot_ceiling`) on a {chain} `[[deposit_policy]]` entry"
        );
    }
    let store = store::Store::connect(
        &settings.database_url,
        &store::StoreOptions {
            create_if_missing: false,
            ..settings.store_options()
        },
    )
    .await?;
    let config = &settings.withdrawals;
    let keystore = KeystoreArgs {
        keystore: config.keystore.clone(),
        password_file: config.keystore_password_file.clone(),
        network: config.bitcoin_network,
    };
    let keys = Arc::new(keystore.signer()?);
    let hot_index = config.hot_wallet_index(chain);
    use signer::Signer as _;
    let destination = keys
        .address(chain, hot_index)
        .with_context(|| format!("deriving the hot wallet (`{chain}_hot_wallet_index`)"))?;
    // The keystore must be the one the deposit xpub came from, or sweeps would sign for
    // addresses that are not the issued ones.
    if let Some((_, xpub)) = settings.deposits.xpubs.iter().find(|(of, _)| *of == chain)
        && keys.deposit_xpub(chain)? != *xpub
    {
        anyhow::bail!(
            "invalid configuration key `{chain}_deposit_xpub`: it is not the deposit xpub of this keystore; sweeps need the keystore the deposit addresses were derived from"
        );
    }
    let deposit_signer = Arc::new(signer::DepositSigner::new(keys.clone()));
    if chain == Chain::Tron {
        let deposits = &settings.deposits;
        let cold = cold_address(
            &keys,
            chain,
            deposits.tron_cold_address.as_deref(),
            config.bitcoin_network,
        )?;
        let gas_index = deposits.tron_gas_wallet_index.unwrap_or(hot_index);
        let gas_wallet = keys
            .address(chain, gas_index)
            .context("invalid configuration key `tron_gas_wallet_index`")?;
        check_internal(settings, chain, &gas_wallet, "gas wallet")?;
        let staker = match deposits.tron_staking_wallet_index {
            Some(index) => {
                let staker = keys
                    .address(chain, index)
                    .context("invalid configuration key `tron_staking_wallet_index`")?;
                check_internal(settings, chain, &staker, "staking account")?;
                Some(staker)
            }
            None => None,
        };
        let provider = Tron::new(settings.tron.node()?)?;
        tracing::info!(%chain, hot = %destination, gas = %gas_wallet, staker = ?staker.as_ref().map(ToString::to_string), "the sweeper is connected");
        return Ok(ChainSweeper::Tron(EnergySweeper::new(
            provider,
            keys,
            deposit_signer,
            store,
            holder,
            EnergySweepPolicy {
                destination,
                gas_index,
                staker_index: deposits.tron_staking_wallet_index,
                minimums,
                network: config.bitcoin_network,
                hot_index,
                cold,
                ceilings,
            },
        )?));
    }
    let node = settings.ethereum.as_ref().context(
        "no Ethereum node configured: set ethereum_rpc_url (COINSENSEI_ETHEREUM_RPC_URL)",
    )?;
    let provider = Ethereum::connect(&node.rpc_url, node.chain_id).await?;
    let gas_index = settings
        .deposits
        .ethereum_gas_wallet_index
        .unwrap_or(hot_index);
    let gas_wallet = keys
        .address(chain, gas_index)
        .context("invalid configuration key `ethereum_gas_wallet_index`")?;
    // A top-up to a deposit address must never be credited: the scanner knows our wallets
    // only from this list.
    check_internal(settings, chain, &gas_wallet, "gas wallet")?;
    let cold = cold_address(
        &keys,
        chain,
        settings.deposits.ethereum_cold_address.as_deref(),
        config.bitcoin_network,
    )?;
    tracing::info!(%chain, hot = %destination, gas = %gas_wallet, "the sweeper is connected");
    let sweeper = Sweeper::new(
        provider,
        keys,
        deposit_signer,
        store,
        holder,
        SweepPolicy {
            destination,
            gas_index,
            minimums,
            base_fee_max: settings.deposits.ethereum_sweep_base_fee_max,
            gas_settle: NonceSettlePolicy {
                replace_after: config.ethereum_replace_after,
                fee_cap: ETHEREUM_FEE_CAP_WEI,
            },
            network: config.bitcoin_network,
            // Swept only once the deposit worker would credit it.
            confirmations: settings.deposits.ethereum_confirmations,
            hot_index,
            cold,
            ceilings,
        },
    )?;
    Ok(ChainSweeper::Ethereum(sweeper))
}
