//! The withdrawal workers' job handlers: `withdrawal.pay` (one per withdrawal, queued with it)
//! and `withdrawal.reconcile` (one per chain, a job that runs again every
//! [`RECONCILE_INTERVAL`] by snoozing itself: being a job, it survives any worker's death,
//! its lease rescued within seconds, and its unique key keeps it to one at a time).
//!
//! The logic lives in `wallet::withdrawals::WithdrawalPayer`; this file connects it to the
//! configured node, the keystore and the queue. A worker whose chain has no node or no
//! keystore configured still runs: its jobs wait (snoozed, with a warning that says what to
//! configure) instead of failing, so configuring the node later pays them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chain_ethereum::Ethereum;
use chain_tron::Tron;
use chrono::Utc;
use domain::{Amount, Chain, Name, WorkerKind};
use queue::{Handler, Outcome, Registry};
use store::{JobInsert, JobRow, ReviewRow, Store, WithdrawalRow};
use wallet::Wallet;
use wallet::nonces::NonceSettlePolicy;
use wallet::withdrawals::review::Verdict;
use wallet::withdrawals::{ConfirmationPolicy, PayOutcome, Reconciled, WithdrawalPayer};

use crate::commands::keys::KeystoreArgs;
use crate::config::Settings;

/// How often a chain's withdrawals are reconciled.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);
/// The job kind of a chain's reconciler.
pub const RECONCILE_JOB_KIND: &str = "withdrawal.reconcile";
/// How often the reconciler reads the hot wallet's balances for `/metrics`.
const HOT_BALANCE_INTERVAL: Duration = Duration::from_secs(15);
/// How long jobs wait while their chain is not configured.
const UNCONFIGURED_WAIT: Duration = Duration::from_secs(30);
/// The most an Ethereum replacement may pay per gas (1,000 gwei).
const ETHEREUM_FEE_CAP_WEI: u128 = 1_000_000_000_000;

/// What pays and settles one chain's withdrawals.
#[async_trait]
trait ChainPayer: Send + Sync {
    async fn pay(&self, id: i64) -> PayOutcome;
    async fn reconcile(&self) -> Result<Reconciled, wallet::WalletError>;
    /// (asset, hot wallet address, base units) per asset of the chain.
    async fn hot_balances(&self) -> Result<Vec<(String, String, Amount)>, wallet::WalletError>;
    /// Judges a manual review on the chain (`withdrawal.review`).
    async fn review(
        &self,
        review: &ReviewRow,
        row: &WithdrawalRow,
    ) -> Result<Verdict, wallet::WalletError>;
}

struct TronPayer(WithdrawalPayer<Tron>);

#[async_trait]
impl ChainPayer for TronPayer {
    async fn pay(&self, id: i64) -> PayOutcome {
        self.0.pay(id).await
    }

    async fn reconcile(&self) -> Result<Reconciled, wallet::WalletError> {
        self.0.reconcile_attempts().await
    }

    async fn hot_balances(&self) -> Result<Vec<(String, String, Amount)>, wallet::WalletError> {
        self.0.hot_balances().await
    }

    async fn review(
        &self,
        review: &ReviewRow,
        row: &WithdrawalRow,
    ) -> Result<Verdict, wallet::WalletError> {
        self.0.review(review, row).await
    }
}

struct EthereumPayer(WithdrawalPayer<Ethereum>, NonceSettlePolicy);

#[async_trait]
impl ChainPayer for EthereumPayer {
    async fn pay(&self, id: i64) -> PayOutcome {
        self.0.pay_by_nonce(id).await
    }

    async fn reconcile(&self) -> Result<Reconciled, wallet::WalletError> {
        self.0.reconcile_nonces(&self.1).await
    }

    async fn hot_balances(&self) -> Result<Vec<(String, String, Amount)>, wallet::WalletError> {
        self.0.hot_balances().await
    }

    async fn review(
        &self,
        review: &ReviewRow,
        row: &WithdrawalRow,
    ) -> Result<Verdict, wallet::WalletError> {
        self.0.review(review, row).await
    }
}

#[async_trait]
impl ChainPayer for crate::bitcoin_payer::BitcoinWithdrawals {
    async fn pay(&self, id: i64) -> PayOutcome {
        crate::bitcoin_payer::BitcoinWithdrawals::pay(self, id).await
    }

    async fn reconcile(&self) -> Result<Reconciled, wallet::WalletError> {
        self.round().await
    }

    async fn hot_balances(&self) -> Result<Vec<(String, String, Amount)>, wallet::WalletError> {
        crate::bitcoin_payer::BitcoinWithdrawals::hot_balances(self).await
    }

    async fn review(
        &self,
        review: &ReviewRow,
        row: &WithdrawalRow,
    ) -> Result<Verdict, wallet::WalletError> {
        crate::bitcoin_payer::BitcoinWithdrawals::review(self, review, row).await
    }
}

/// Which of a withdrawal worker's job kinds a handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pay,
    Reconcile,
    Review,
}

/// Handles the job kinds for one chain; `payer` is `Err` with what to configure when the
/// chain cannot be paid on.
struct Withdrawals {
    chain: Chain,
    payer: Result<(Arc<dyn ChainPayer>, Store), String>,
    backend: Arc<dyn queue::Backend>,
    kind: Kind,
    /// When the reconciler last read the hot wallet's balances.
    balances_read: std::sync::Mutex<Option<std::time::Instant>>,
}

#[async_trait]
impl Handler for Withdrawals {
    async fn run(&self, job: &JobRow) -> Outcome {
        let (payer, store) = match &self.payer {
            Ok(connected) => connected,
            Err(missing) => {
                tracing::warn!(chain = %self.chain, job = job.id, "withdrawals wait: {missing}");
                return Outcome::Snooze(UNCONFIGURED_WAIT);
            }
        };
        match self.kind {
            Kind::Reconcile => return self.reconcile_round(payer.as_ref(), store).await,
            Kind::Review => return self.review(job, payer.as_ref(), store).await,
            Kind::Pay => {}
        }
        let Some(id) = job
            .args
            .get("withdrawal_id")
            .and_then(serde_json::Value::as_i64)
        else {
            return Outcome::Fatal("withdrawal.pay jobs need args {\"withdrawal_id\": ID}".into());
        };
        match payer.pay(id).await {
            PayOutcome::Done => Outcome::Done,
            PayOutcome::Wait(wait) => Outcome::Snooze(wait),
            PayOutcome::Retry(error) => {
                tracing::warn!(chain = %self.chain, withdrawal = id, %error, "paying a withdrawal failed; it is retried");
                Outcome::Retry(error)
            }
        }
    }
}

impl Withdrawals {
    /// A `withdrawal.review` job: the review judged on the chain, then applied or refused
    /// (`store::reviews`). A node or store that does not answer: the job tries again.
    async fn review(&self, job: &JobRow, payer: &dyn ChainPayer, store: &Store) -> Outcome {
        let Some(id) = job
            .args
            .get("review_id")
            .and_then(serde_json::Value::as_i64)
        else {
            return Outcome::Fatal("withdrawal.review jobs need args {\"review_id\": ID}".into());
        };
        let review = match store.withdrawal_review_get(id).await {
            Ok(Some(review)) => review,
            Ok(None) => return Outcome::Fatal(format!("no withdrawal review {id}")),
            Err(error) => return Outcome::Retry(error.to_string()),
        };
        if review.state != store::ReviewState::Requested {
            return Outcome::Done;
        }
        let row = match store.withdrawal_get(review.withdrawal_id).await {
            Ok(Some(row)) => row,
            Ok(None) => return Outcome::Fatal(format!("no withdrawal {}", review.withdrawal_id)),
            Err(error) => return Outcome::Retry(error.to_string()),
        };
        let checked_by = format!(
            "worker:{}",
            job.lease_owner.as_deref().unwrap_or("withdrawal")
        );
        let verdict = if row.state == domain::WithdrawalState::ManualReview {
            match payer.review(&review, &row).await {
                Ok(verdict) => verdict,
                Err(error) => {
                    tracing::warn!(chain = %self.chain, review = id, %error, "checking a review on the chain failed; it is tried again");
                    return Outcome::Retry(error.to_string());
                }
            }
        } else {
            Verdict::Refused(format!(
                "withdrawal {} is {} now, no longer in manual_review",
                row.id, row.state
            ))
        };
        let now = Utc::now();
        match verdict {
            Verdict::Refused(outcome) => {
                tracing::warn!(chain = %self.chain, review = id, withdrawal = row.id, action = %review.action, %outcome, "a review was refused");
                match store
                    .withdrawal_review_refuse(id, &checked_by, &outcome, now)
                    .await
                {
                    Ok(_) | Err(store::StoreError::Stale(_)) => Outcome::Done,
                    Err(error) => Outcome::Retry(error.to_string()),
                }
            }
            Verdict::Proved { outcome, paid } => {
                let applied = store
                    .withdrawal_review_apply(&store::ReviewApply {
                        id,
                        checked_by: checked_by.clone(),
                        outcome: outcome.clone(),
                        paid,
                        // Queued below, after the commit, on whichever queue this is; a crash
                        // in between leaves it `processing`, which the reconciler hands back.
                        pay_job: None,
                        now,
                    })
                    .await;
                match applied {
                    Ok((review, moved)) => {
                        tracing::info!(chain = %self.chain, review = id, withdrawal = moved.id, action = %review.action, to = %moved.state, %outcome, "a review was applied");
                        if moved.state == domain::WithdrawalState::Processing
                            && let Err(error) =
                                self.backend.enqueue(&pay_job(self.chain, moved.id)).await
                        {
                            tracing::warn!(chain = %self.chain, withdrawal = moved.id, %error, "could not queue the retried withdrawal; the reconciler hands it back");
                        }
                        Outcome::Done
                    }
                    Err(store::StoreError::Stale(_)) => Outcome::Done,
                    Err(store::StoreError::Conflict(reason)) => {
                        match store
                            .withdrawal_review_refuse(id, &checked_by, &reason, now)
                            .await
                        {
                            Ok(_) | Err(store::StoreError::Stale(_)) => Outcome::Done,
                            Err(error) => Outcome::Retry(error.to_string()),
                        }
                    }
                    Err(error) => Outcome::Retry(error.to_string()),
                }
            }
        }
    }

    async fn reconcile_round(&self, payer: &dyn ChainPayer, store: &Store) -> Outcome {
        let started = std::time::Instant::now();
        match payer.reconcile().await {
            Ok(report) => {
                for error in &report.errors {
                    tracing::warn!(chain = %self.chain, %error, "reconcile");
                }
                for id in &report.to_pay {
                    if let Err(error) = self.backend.enqueue(&pay_job(self.chain, *id)).await {
                        tracing::warn!(chain = %self.chain, withdrawal = id, %error, "could not queue a withdrawal to pay again");
                    }
                }
                if !report.moved.is_empty() {
                    tracing::info!(chain = %self.chain, moved = report.moved.len(), queued = report.to_pay.len(), "withdrawals reconciled");
                }
                if report.rebroadcasts > 0
                    && let Err(error) = store
                        .payout_rebroadcasts_add(self.chain, report.rebroadcasts)
                        .await
                {
                    tracing::warn!(chain = %self.chain, %error, "counting rebroadcasts");
                }
            }
            Err(error) => {
                tracing::warn!(chain = %self.chain, %error, "a reconcile round failed; the next one tries again");
            }
        }
        metrics::histogram!("coinsensei_withdrawal_reconcile_seconds", "chain" => self.chain.as_str())
            .record(started.elapsed().as_secs_f64());
        self.record_balances(payer, store).await;
        Outcome::Snooze(RECONCILE_INTERVAL)
    }

    /// Every `HOT_BALANCE_INTERVAL`, what the hot wallet holds, read from the node and
    /// written to the store (where `/metrics` and the health checks read it).
    async fn record_balances(&self, payer: &dyn ChainPayer, store: &Store) {
        {
            let mut last = self
                .balances_read
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < HOT_BALANCE_INTERVAL) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let balances = match payer.hot_balances().await {
            Ok(balances) => balances,
            Err(error) => {
                tracing::warn!(chain = %self.chain, %error, "reading the hot wallet's balances");
                return;
            }
        };
        let now = Utc::now();
        for (asset, address, units) in balances {
            let row = store::HotWalletBalance {
                chain: self.chain,
                asset,
                address,
                units: units.base_units().to_string(),
                checked_at: now,
            };
            if let Err(error) = store.hot_wallet_set(&row).await {
                tracing::warn!(chain = %self.chain, %error, "recording the hot wallet's balance");
            }
        }
    }
}

fn queue_of(chain: Chain) -> Name {
    queue::queue_for(WorkerKind::Withdrawal, chain)
}

/// The job that pays withdrawal `id` (the same as the intake's: one per withdrawal).
fn pay_job(chain: Chain, id: i64) -> JobInsert {
    let now = Utc::now();
    JobInsert {
        queue: queue_of(chain),
        kind: Name::new(web::withdrawals::PAY_JOB_KIND).expect("a valid kind"),
        args: serde_json::json!({ "withdrawal_id": id }),
        priority: 0,
        run_at: now,
        retry: Some(domain::withdrawal::job_retry()),
        unique_key: Some(store::payout_key(id)),
        now,
    }
}

/// The chain's reconciler job, queued once (its unique key keeps it single).
fn reconcile_job(chain: Chain) -> JobInsert {
    let now = Utc::now();
    JobInsert {
        queue: queue_of(chain),
        kind: Name::new(RECONCILE_JOB_KIND).expect("a valid kind"),
        args: serde_json::json!({}),
        // Ahead of the payments waiting in the queue.
        priority: -1,
        run_at: now,
        retry: Some(domain::withdrawal::job_retry()),
        unique_key: Some(format!("withdrawal.reconcile:{chain}")),
        now,
    }
}

/// The handlers of a withdrawal worker on `chain`, connected to its node and keystore, with
/// the chain's reconciler queued.
pub async fn registry(
    settings: &Settings,
    chain: Chain,
    holder: &str,
    backend: Arc<dyn queue::Backend>,
) -> Result<Registry, String> {
    let payer = match connect(settings, chain, holder).await {
        Ok(payer) => Ok(payer),
        Err(error) => {
            let message = format!("{error:#}");
            tracing::warn!(%chain, "the withdrawal worker cannot pay yet: {message}");
            Err(message)
        }
    };
    if payer.is_ok() {
        backend
            .enqueue(&reconcile_job(chain))
            .await
            .map_err(|error| format!("queueing the {chain} reconciler: {error}"))?;
    }
    let mut registry = Registry::default();
    for (name, kind) in [
        (web::withdrawals::PAY_JOB_KIND, Kind::Pay),
        (RECONCILE_JOB_KIND, Kind::Reconcile),
        (store::REVIEW_JOB_KIND, Kind::Review),
    ] {
        registry.register(
            name,
            Arc::new(Withdrawals {
                chain,
                payer: payer.clone(),
                backend: Arc::clone(&backend),
                kind,
                balances_read: std::sync::Mutex::new(None),
            }),
        );
    }
    Ok(registry)
}

/// The chain's payer, and the store it writes to.
async fn connect(
    settings: &Settings,
    chain: Chain,
    holder: &str,
) -> anyhow::Result<(Arc<dyn ChainPayer>, Store)> {
    let store = Store::connect(
        &settings.database_url,
        &store::StoreOptions {
            create_if_missing: false,
            ..settings.store_options()
        },
    )
    .await?;
    let payer = connect_payer(settings, chain, holder, store.clone()).await?;
    Ok((payer, store))
}

async fn connect_payer(
    settings: &Settings,
    chain: Chain,
    holder: &str,
    store: Store,
) -> anyhow::Result<Arc<dyn ChainPayer>> {
    use anyhow::Context;
    let config = &settings.withdrawals;
    let keystore = KeystoreArgs {
        keystore: config.keystore.clone(),
        password_file: config.keystore_password_file.clone(),
        network: config.bitcoin_network,
    };
    let from_index = config.hot_wallet_index(chain);
    let actor = format!("worker:{}", holder.split(':').next().unwrap_or(holder));
    match chain {
        Chain::Tron => {
            let provider = Tron::new(settings.tron.node()?)?;
            let signer: Arc<dyn signer::Signer> = Arc::new(keystore.signer()?);
            let wallet = Wallet::new(provider, signer, store.clone(), holder);
            Ok(Arc::new(TronPayer(
                WithdrawalPayer::new(
                    wallet,
                    store,
                    from_index,
                    actor,
                    config.catalogue.clone(),
                    config.bitcoin_network,
                    // A TRON attempt counts once it is in a solidified block.
                    ConfirmationPolicy { confirmations: 1 },
                )
                .with_floors(config.floors(Chain::Tron)),
            )))
        }
        Chain::Ethereum => {
            let node = settings.ethereum.as_ref().context(
                "no Ethereum node configured: set ethereum_rpc_url (COINSENSEI_ETHEREUM_RPC_URL)",
            )?;
            let provider = Ethereum::connect(&node.rpc_url, node.chain_id).await?;
            let signer: Arc<dyn signer::Signer> = Arc::new(keystore.signer()?);
            let wallet = Wallet::new(provider, signer, store.clone(), holder);
            Ok(Arc::new(EthereumPayer(
                WithdrawalPayer::new(
                    wallet,
                    store,
                    from_index,
                    actor,
                    config.catalogue.clone(),
                    config.bitcoin_network,
                    ConfirmationPolicy {
                        confirmations: config.ethereum_confirmations,
                    },
                )
                .with_floors(config.floors(Chain::Ethereum)),
                NonceSettlePolicy {
                    replace_after: config.ethereum_replace_after,
                    fee_cap: ETHEREUM_FEE_CAP_WEI,
                },
            )))
        }
        Chain::Bitcoin => {
            let rpc = crate::commands::chain::bitcoin_rpc(settings)?;
            let keys = keystore.signer()?;
            // With a deposit xpub configured, payouts also spend credited deposits where
            // they lie (Bitcoin has no consolidation); the keystore must be the one the
            // deposit addresses were derived from, or the payer would watch keys it cannot
            // sign for.
            let deposit_xpub = match settings
                .deposits
                .xpubs
                .iter()
                .find(|(of, _)| *of == Chain::Bitcoin)
            {
                Some((_, xpub)) => {
                    if let Some(deposits_from) = settings.deposits.start_block(Chain::Bitcoin)
                        && deposits_from < config.bitcoin_wallet_start_block
                    {
                        anyhow::bail!(
                            "invalid configuration key `bitcoin_wallet_start_block`: it is {}, after `bitcoin_deposit_start_block` ({deposits_from}); deposits credited from the blocks between would never be spent",
                            config.bitcoin_wallet_start_block
                        );
                    }
                    let own = keys.deposit_xpub(Chain::Bitcoin)?;
                    if own != *xpub {
                        anyhow::bail!(
                            "invalid configuration key `bitcoin_deposit_xpub`: it is not the deposit xpub of this keystore; Bitcoin payouts spend deposits where they lie and need the keystore the deposit addresses were derived from"
                        );
                    }
                    Some(own)
                }
                None => None,
            };
            let signer: Arc<dyn signer::Signer> = Arc::new(keys);
            let mut bitcoin = chain_bitcoin::Bitcoin::connect(
                rpc,
                config.bitcoin_network,
                signer.xpub(Chain::Bitcoin)?,
                chain_bitcoin::FeePolicy::default(),
            )
            .await
            .context("connecting to the bitcoin node")?;
            if let Some(xpub) = deposit_xpub {
                bitcoin = bitcoin.with_deposits(xpub)?;
            }
            let payer = crate::bitcoin_payer::BitcoinWithdrawals::new(
                bitcoin,
                store,
                signer,
                config.catalogue.clone(),
                config.bitcoin_network,
                actor,
                crate::bitcoin_payer::Policy {
                    confirmations: config.bitcoin_confirmations.max(1),
                    batch_max: usize::try_from(config.bitcoin_batch_max.max(1)).unwrap_or(25),
                    batch_wait: config.bitcoin_batch_wait,
                    bump_after: config.bitcoin_bump_after,
                    hot_index: from_index,
                    floor: config
                        .floors(Chain::Bitcoin)
                        .iter()
                        .find(|(asset, _)| asset == "BTC")
                        .map_or(0, |(_, floor)| {
                            u64::try_from(floor.base_units()).unwrap_or(u64::MAX)
                        }),
                    start_block: config.bitcoin_wallet_start_block,
                },
            )
            .await
            .context("reading the hot wallet's outputs from the bitcoin node")?;
            Ok(Arc::new(payer))
        }
    }
}
