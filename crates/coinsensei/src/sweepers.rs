//! The consolidation workers' job handler: `sweep.run`, one job per chain in the chain's
//! `consolidation` queue that runs again by snoozing itself every [`ROUND_INTERVAL`] (like the
//! deposit scanner: being a job, it survives any worker's death, its lease rescued within
//! seconds, and its unique key keeps it to one at a time).
//!
//! Each run is one round of `wallet::sweeps::Sweeper` (docs/deposits.md, "Consolidation"):
//! settle the gas wallet's nonces, step the open sweeps, and start sweeps of the issued
//! addresses holding more than their asset's `[[deposit_policy]] sweep_min`, while the base
//! fee is at most `ethereum_sweep_base_fee_max_gwei`; and send the hot wallet's balance above
//! an asset's `hot_ceiling` to `ethereum_cold_address`. Ethereum only: TRON's sweeps (energy by
//! delegation) are not built yet, and a TRON consolidation worker's jobs wait with a warning
//! that says so.
//!
//! The consolidation worker holds the keystore: the gas wallet's key (account 0) and the
//! deposit account's keys (account 1', `signer::DepositSigner`) that sign the sweeps.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chain::address::Address;
use chain::provider::Asset;
use chain_ethereum::Ethereum;
use chrono::Utc;
use domain::{Chain, Name, WorkerKind};
use queue::{Handler, Outcome, Registry};
use store::{JobInsert, JobRow};
use wallet::NonceSettlePolicy;
use wallet::sweeps::{SweepPolicy, Sweeper};

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

struct Sweeps {
    chain: Chain,
    sweeper: Result<Arc<Sweeper<Ethereum>>, String>,
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

async fn connect(
    settings: &Settings,
    chain: Chain,
    holder: &str,
) -> anyhow::Result<Sweeper<Ethereum>> {
    if chain != Chain::Ethereum {
        anyhow::bail!(
            "{chain} sweeps are not built yet (only Ethereum's); stop this worker or leave it idle"
        );
    }
    let minimums = per_asset(settings, chain, &settings.deposits.sweep_min)?;
    let ceilings = per_asset(settings, chain, &settings.deposits.hot_ceiling)?;
    if minimums.is_empty() && ceilings.is_empty() {
        anyhow::bail!(
            "nothing to sweep: set `sweep_min` (or `hot_ceiling`) on an ethereum `[[deposit_policy]]` entry"
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
    let node = settings.ethereum.as_ref().context(
        "no Ethereum node configured: set ethereum_rpc_url (COINSENSEI_ETHEREUM_RPC_URL)",
    )?;
    let provider = Ethereum::connect(&node.rpc_url, node.chain_id).await?;
    let config = &settings.withdrawals;
    let keystore = KeystoreArgs {
        keystore: config.keystore.clone(),
        password_file: config.keystore_password_file.clone(),
        network: config.bitcoin_network,
    };
    let keys = Arc::new(keystore.signer()?);
    let hot_index = config.hot_wallet_index(chain);
    let gas_index = settings
        .deposits
        .ethereum_gas_wallet_index
        .unwrap_or(hot_index);
    use signer::Signer as _;
    let destination = keys
        .address(chain, hot_index)
        .context("deriving the hot wallet (`ethereum_hot_wallet_index`)")?;
    let gas_wallet = keys
        .address(chain, gas_index)
        .context("invalid configuration key `ethereum_gas_wallet_index`")?;
    // A top-up to a deposit address must never be credited: the scanner knows our wallets
    // only from this list.
    let internal = settings.deposits.rules(chain).internal;
    if !internal.contains(gas_wallet.as_str()) {
        anyhow::bail!(
            "invalid configuration key `ethereum_internal_addresses`: it must hold the gas wallet {gas_wallet} (`ethereum_gas_wallet_index` {gas_index}), or its gas top-ups would be credited as deposits"
        );
    }
    // The keystore must be the one the deposit xpub came from, or sweeps would sign for
    // addresses that are not the issued ones.
    if let Some((_, xpub)) = settings.deposits.xpubs.iter().find(|(of, _)| *of == chain)
        && keys.deposit_xpub(chain)? != *xpub
    {
        anyhow::bail!(
            "invalid configuration key `ethereum_deposit_xpub`: it is not the deposit xpub of this keystore; sweeps need the keystore the deposit addresses were derived from"
        );
    }
    // The cold address is watch-only: none of the keystore's working keys may be it.
    let cold = match &settings.deposits.ethereum_cold_address {
        Some(text) => {
            let cold = Address::parse(chain, config.bitcoin_network, text)?;
            for index in 0..COLD_KEYS_CHECKED {
                if keys.address(chain, index)? == cold {
                    anyhow::bail!(
                        "invalid configuration key `ethereum_cold_address`: it is key {index} of this keystore; a cold address's key must not be in the hot keystore"
                    );
                }
            }
            Some(cold)
        }
        None => None,
    };
    let deposit_signer = Arc::new(signer::DepositSigner::new(keys.clone()));
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
    Ok(sweeper)
}
