//! The deposit workers' job handler: `deposit.scan`, one job per chain in the chain's
//! `deposit` queue, that runs again by snoozing itself (like the withdrawal reconciler: being a
//! job, it survives any worker's death, its lease rescued within seconds, and its unique key
//! keeps it to one at a time). On top of that, the store's scan lease (`scan_lease`) lets one
//! scanner per chain work at a time, whichever queue backend carries the job: a second
//! worker, or a rescued job running while a slow one finishes, waits for the lease.
//!
//! Each run takes (or renews) the lease, then steps the wallet's `Scanner` from the stored
//! cursor until it is idle at the head or [`RUN_BUDGET`] is spent. The scanner watches the
//! deposit addresses issued in the store, credits by the chain's policy (Ethereum
//! `ethereum_deposit_confirmations` or `finalized`; TRON solidified; Bitcoin
//! `bitcoin_deposit_confirmations`, never 0-conf), takes only the catalogue's tokens (by
//! contract), and records zero-value, dust and internal transfers as `ignored`.
//!
//! The deposit worker holds no private key: it needs a node, the store, and for Bitcoin the
//! chain's deposit xpub (the adapter derives addresses from it; public).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use chain::address::Address;
use chain::provider::{ChainRead, WatchSet};
use chrono::Utc;
use domain::{Chain, Name, WorkerKind};
use queue::{Handler, Outcome, Registry};
use store::{JobInsert, JobRow, Store};
use wallet::WalletError;
use wallet::scanner::{ScanPolicy, Scanner, Step};

use crate::config::Settings;

/// The job kind of a chain's deposit scanner.
pub const SCAN_JOB_KIND: &str = "deposit.scan";
/// How long a run steps the scanner before it hands the worker back (the job's lease is a
/// few seconds; the next run goes on at once).
const RUN_BUDGET: Duration = Duration::from_secs(2);
/// How long an idle scanner waits before it asks the node again.
pub const IDLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the scan lease lasts without renewal; renewed at every step.
const LEASE_TTL: Duration = Duration::from_secs(30);
/// How long jobs wait while their chain is not configured, or another scanner has the lease.
const UNCONFIGURED_WAIT: Duration = Duration::from_secs(30);
const LEASE_WAIT: Duration = Duration::from_secs(5);

/// One chain's scanner, whatever its provider.
#[async_trait]
trait DepositScan: Send + Sync {
    async fn step(&self) -> Result<Step, WalletError>;
}

#[async_trait]
impl<P: ChainRead + 'static> DepositScan for Scanner<P> {
    async fn step(&self) -> Result<Step, WalletError> {
        Scanner::step(self).await
    }
}

struct Deposits {
    chain: Chain,
    holder: String,
    scanner: Result<(Arc<dyn DepositScan>, Store), String>,
}

#[async_trait]
impl Handler for Deposits {
    async fn run(&self, job: &JobRow) -> Outcome {
        let (scanner, store) = match &self.scanner {
            Ok(connected) => connected,
            Err(missing) => {
                tracing::warn!(chain = %self.chain, job = job.id, "deposits wait: {missing}");
                return Outcome::Snooze(UNCONFIGURED_WAIT);
            }
        };
        let started = Instant::now();
        loop {
            match store
                .scan_lease_take(self.chain, &self.holder, LEASE_TTL, Utc::now())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(chain = %self.chain, "another scanner holds the deposit scan lease");
                    return Outcome::Snooze(LEASE_WAIT);
                }
                Err(error) => {
                    tracing::warn!(chain = %self.chain, %error, "taking the deposit scan lease");
                    return Outcome::Snooze(IDLE_INTERVAL);
                }
            }
            let step = scanner.step().await;
            let chain = self.chain.as_str();
            // What /metrics shows is read from the store at each scrape (counts by state, the
            // scan height); here only the log.
            match step {
                Ok(Step::Scanned {
                    from,
                    to,
                    deposits,
                    ignored,
                    credited,
                }) => {
                    if deposits > 0 || credited > 0 {
                        tracing::info!(
                            chain,
                            from,
                            to,
                            deposits,
                            ignored,
                            credited,
                            "deposits scanned"
                        );
                    }
                }
                Ok(Step::Reorg { fork, rollback }) => {
                    tracing::warn!(
                        chain,
                        fork,
                        blocks = rollback.blocks,
                        orphaned = rollback.orphaned,
                        reversed = rollback.reversed,
                        "deposit scan: reorg"
                    );
                }
                Ok(Step::Idle { credited }) => {
                    if credited > 0 {
                        tracing::info!(chain, credited, "deposits credited");
                    }
                    return Outcome::Snooze(IDLE_INTERVAL);
                }
                Err(error) => {
                    // A node or store hiccup: the cursor is where the last commit left it.
                    tracing::warn!(chain, %error, "a deposit scan step failed; the next run tries again");
                    return Outcome::Snooze(IDLE_INTERVAL);
                }
            }
            if started.elapsed() >= RUN_BUDGET {
                return Outcome::Snooze(Duration::from_millis(10));
            }
        }
    }
}

/// The chain's scanner job, queued once (its unique key keeps it single).
fn scan_job(chain: Chain) -> JobInsert {
    let now = Utc::now();
    JobInsert {
        queue: queue::queue_for(WorkerKind::Deposit, chain),
        kind: Name::new(SCAN_JOB_KIND).expect("a valid kind"),
        args: serde_json::json!({}),
        priority: 0,
        run_at: now,
        retry: None,
        unique_key: Some(format!("deposit.scan:{chain}")),
        now,
    }
}

/// The handler of a deposit worker on `chain`, connected to its node, with the chain's scan
/// job queued.
pub async fn registry(
    settings: &Settings,
    chain: Chain,
    holder: &str,
    backend: Arc<dyn queue::Backend>,
) -> Result<Registry, String> {
    let scanner = match connect(settings, chain).await {
        Ok(scanner) => Ok(scanner),
        Err(error) => {
            let message = format!("{error:#}");
            tracing::warn!(%chain, "the deposit worker cannot scan yet: {message}");
            Err(message)
        }
    };
    backend
        .enqueue(&scan_job(chain))
        .await
        .map_err(|error| format!("queueing the {chain} deposit scanner: {error}"))?;
    let mut registry = Registry::default();
    registry.register(
        SCAN_JOB_KIND,
        Arc::new(Deposits {
            chain,
            holder: holder.to_string(),
            scanner,
        }),
    );
    Ok(registry)
}

/// The allowlisted token contracts of `chain`: the catalogue's, by contract (a token of the
/// same symbol at another contract is never looked at).
fn tokens(settings: &Settings, chain: Chain) -> anyhow::Result<Vec<Address>> {
    let network = settings.withdrawals.bitcoin_network;
    settings
        .withdrawals
        .catalogue
        .assets()
        .iter()
        .filter(|asset| asset.chain == chain)
        .filter_map(|asset| asset.contract.as_deref())
        .map(|contract| {
            Address::parse(chain, network, contract)
                .with_context(|| format!("the catalogue's {chain} contract {contract}"))
        })
        .collect()
}

async fn connect(
    settings: &Settings,
    chain: Chain,
) -> anyhow::Result<(Arc<dyn DepositScan>, Store)> {
    let store = Store::connect(
        &settings.database_url,
        &store::StoreOptions {
            create_if_missing: false,
            ..settings.store_options()
        },
    )
    .await?;
    let network = settings.withdrawals.bitcoin_network;
    let watch = WatchSet {
        addresses: Vec::new(),
        tokens: tokens(settings, chain)?,
    };
    let rules = settings.deposits.rules(chain);
    let deposits = &settings.deposits;
    let scanner: Arc<dyn DepositScan> = match chain {
        Chain::Tron => {
            let provider = chain_tron::Tron::new(settings.tron.node()?)?;
            let start = start_block(&store, &provider, deposits.start_block(chain)).await?;
            Arc::new(
                Scanner::new(provider, store.clone(), ScanPolicy::tron(start), watch)?
                    .with_rules(rules)
                    .watch_issued(network),
            )
        }
        Chain::Ethereum => {
            let node = settings.ethereum.as_ref().context(
                "no Ethereum node configured: set ethereum_rpc_url (COINSENSEI_ETHEREUM_RPC_URL)",
            )?;
            let mut provider =
                chain_ethereum::Ethereum::connect(&node.rpc_url, node.chain_id).await?;
            if deposits.ethereum_internal_transfers {
                provider = provider.with_internal_transfers().await.context(
                    "ethereum_deposit_internal_transfers is set: the node must trace blocks' calls",
                )?;
            }
            let start = start_block(&store, &provider, deposits.start_block(chain)).await?;
            let policy = ScanPolicy {
                confirmations: deposits.ethereum_confirmations,
                ..ScanPolicy::ethereum(start)
            };
            Arc::new(
                Scanner::new(provider, store.clone(), policy, watch)?
                    .with_rules(rules)
                    .watch_issued(network),
            )
        }
        Chain::Bitcoin => {
            let rpc = crate::commands::chain::bitcoin_rpc(settings)?;
            let xpub = deposits
                .xpubs
                .iter()
                .find(|(of, _)| *of == Chain::Bitcoin)
                .map(|(_, xpub)| xpub.clone())
                .context("no bitcoin_deposit_xpub configured (`coinsensei keys xpub --chain bitcoin --deposit`)")?;
            let provider = chain_bitcoin::Bitcoin::connect(
                rpc,
                network,
                xpub,
                chain_bitcoin::FeePolicy::default(),
            )
            .await
            .context("connecting to the bitcoin node")?;
            let start = start_block(&store, &provider, deposits.start_block(chain)).await?;
            Arc::new(
                Scanner::new(
                    provider,
                    store.clone(),
                    ScanPolicy::bitcoin(start, deposits.bitcoin_confirmations),
                    watch,
                )?
                .with_rules(rules)
                .watch_issued(network),
            )
        }
    };
    Ok((scanner, store))
}

/// Where the scanner starts when the store has no cursor: the configured block, else the
/// node's head now (said in the log, so an operator who issued addresses earlier knows to
/// set `<chain>_deposit_start_block`). With a cursor, it goes on from the cursor.
async fn start_block(
    store: &Store,
    provider: &impl ChainRead,
    configured: Option<u64>,
) -> anyhow::Result<u64> {
    let chain = provider.chain();
    if store.scan_head(chain).await?.is_some() {
        return Ok(configured.unwrap_or(0));
    }
    if let Some(block) = configured {
        return Ok(block);
    }
    let head = provider.tip().await?.head;
    tracing::info!(%chain, head, "no deposit cursor and no {chain}_deposit_start_block: scanning from the head");
    Ok(head)
}
