//! `coinsensei ledger`: what each wallet should hold by the store (`web::ledger`), compared
//! with what the chains' nodes say it holds (`reconcile`), shown alone (`show`), and the
//! operators' adjustments for money that moved outside the ledger's rows (`adjust`: a hot
//! wallet's opening balance, a correction), each audited.
//!
//! `reconcile` reads every line's balance from its chain's node (the control plane's
//! read-only clients, `crate::chains`), a few at a time, names every line that differs or
//! could not be compared, and records the outcome per chain and asset in the store, which
//! `/metrics` exports (`coinsensei_ledger_difference`) for the alert. Exit code: 0 every line
//! agrees, 1 some line differs, 3 none differs but some could not be compared.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chain::address::{Address, Network};
use chain::provider::{Asset, ChainRead};
use chrono::Utc;
use domain::{Amount, Chain};
use serde_json::Value;
use store::{LedgerAdjustmentInsert, LedgerDirection};
use web::ledger::{LedgerLine, Reconciled, Verdict, WalletKind};

use crate::chains::ChainClients;
use crate::config::Settings;

/// Balances read at once (a node's connection pool and rate limits, not the CPU, bound this).
const READS_IN_FLIGHT: usize = 8;
/// From this many lines on, progress goes to stderr.
const PROGRESS_FROM: usize = 50;
/// What the node's client may try per read.
const BITCOIN_ATTEMPTS: u32 = 4;

/// Exit code when nothing differs but some line could not be compared.
const EXIT_UNKNOWN: u8 = 3;

fn chains(settings: &Settings, chain: Option<String>) -> anyhow::Result<Vec<Chain>> {
    match chain {
        Some(chain) => {
            Ok(vec![chain.parse().map_err(|error| {
                anyhow::anyhow!("invalid --chain: {error}")
            })?])
        }
        None => {
            let configured = ChainClients::new(settings).configured();
            if configured.is_empty() {
                anyhow::bail!(
                    "no chain node is configured: set ethereum_rpc_url, tron_rpc_url or bitcoin_rpc_url, or name one with --chain"
                );
            }
            Ok(configured)
        }
    }
}

fn network(settings: &Settings) -> Network {
    settings.withdrawals.bitcoin_network
}

/// `coinsensei ledger reconcile`.
pub async fn reconcile(
    settings: Settings,
    chain: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let chains = chains(&settings, chain)?;
    let store = super::connect_existing(&settings).await?;
    let clients = crate::chains::clients(&settings);
    let all = reconcile_chains(&store, &clients, &settings, &chains, true).await;
    store.close().await;
    let all = all?;
    print(&all, as_json)?;
    let differs = all
        .iter()
        .any(|each| matches!(each.verdict, Verdict::Differs(_)));
    let unknown = all
        .iter()
        .any(|each| matches!(each.verdict, Verdict::Unknown(_)));
    Ok(if differs {
        ExitCode::FAILURE
    } else if unknown {
        ExitCode::from(EXIT_UNKNOWN)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reconciles each of `chains`: the ledger read, every line's balance read from the node
/// and judged, the outcome recorded per chain and asset (what `/metrics` exports).
/// `progress`: report the reads on stderr (the command's, not the control plane's).
pub async fn reconcile_chains(
    store: &store::Store,
    clients: &Arc<ChainClients>,
    settings: &Settings,
    chains: &[Chain],
    progress: bool,
) -> anyhow::Result<Vec<Reconciled>> {
    let catalogue = &settings.withdrawals.catalogue;
    let mut all = Vec::new();
    for &chain in chains {
        let lines = web::ledger::read(store, catalogue, chain)
            .await
            .context("reading the ledger")?;
        let node = node_check(clients, settings, chain).await;
        let reconciled = compare(clients, network(settings), chain, lines, node, progress).await;
        let checks = web::ledger::checks(chain, &reconciled, Utc::now());
        store
            .ledger_check_replace(chain, &checks)
            .await
            .context("recording the reconciliation")?;
        all.extend(reconciled);
    }
    Ok(all)
}

/// The chains of `chains` a round should reconcile now: those not reconciled within the last
/// half `interval` by anyone (the newest `ledger_check` of the chain, whichever control plane
/// or command recorded it). With several control-plane replicas, each wakes every `interval`
/// and skips a chain another one has just done, so the nodes are read about once an interval
/// rather than once per replica (two replicas waking together may still both run).
pub fn due_chains(
    chains: &[Chain],
    checks: &[store::LedgerCheck],
    interval: std::time::Duration,
    now: chrono::DateTime<Utc>,
) -> Vec<Chain> {
    let fresh = chrono::TimeDelta::from_std(interval / 2).unwrap_or(chrono::TimeDelta::MAX);
    chains
        .iter()
        .copied()
        .filter(|chain| {
            let newest = checks
                .iter()
                .filter(|check| check.chain == *chain)
                .map(|check| check.checked_at)
                .max();
            newest.is_none_or(|at| now - at >= fresh)
        })
        .collect()
}

/// The control plane's own reconciliation (`ledger_reconcile_interval`): every configured
/// chain, every `interval`, until `cancel`, but a chain reconciled within the last half
/// interval by anyone ([`due_chains`]: another replica, the command) is left for the next
/// round. A round replaces what the last one recorded; a failed round is logged and the next
/// one tries again.
pub async fn run_loop(
    store: store::Store,
    settings: Settings,
    interval: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let clients = crate::chains::clients(&settings);
    let chains = clients.configured();
    if chains.is_empty() {
        tracing::warn!(
            "ledger_reconcile_interval is set but no chain node is configured: nothing to reconcile"
        );
        return;
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let due = match store.ledger_check_list().await {
            Ok(checks) => due_chains(&chains, &checks, interval, Utc::now()),
            Err(error) => {
                tracing::warn!(%error, "reading the last reconciliations; reconciling every chain");
                chains.clone()
            }
        };
        if due.is_empty() {
            tracing::debug!("every chain was reconciled within the last half interval");
            continue;
        }
        let round = tokio::select! {
            () = cancel.cancelled() => return,
            round = reconcile_chains(&store, &clients, &settings, &due, false) => round,
        };
        match round {
            Ok(all) => {
                let differing = all
                    .iter()
                    .filter(|each| matches!(each.verdict, Verdict::Differs(_)))
                    .count();
                let unknown = all
                    .iter()
                    .filter(|each| matches!(each.verdict, Verdict::Unknown(_)))
                    .count();
                if differing > 0 {
                    tracing::warn!(
                        differing,
                        unknown,
                        lines = all.len(),
                        "the ledger differs from the chains: `coinsensei ledger reconcile` names each wallet"
                    );
                } else {
                    tracing::debug!(unknown, lines = all.len(), "ledger reconciled");
                }
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "the ledger reconciliation failed; trying again at the next round");
            }
        }
    }
}

/// Whether the chain's node may be believed: reachable, and (Ethereum) the configured chain.
async fn node_check(
    clients: &ChainClients,
    settings: &Settings,
    chain: Chain,
) -> Result<(), String> {
    match chain {
        Chain::Ethereum => {
            let client = clients
                .ethereum_unchecked()
                .await
                .map_err(|error| format!("{error:#}"))?;
            let head = client
                .node_head()
                .await
                .map_err(|error| format!("the Ethereum node: {error}"))?;
            match settings.ethereum.as_ref().and_then(|node| node.chain_id) {
                Some(expected) if expected != head.chain_id => Err(format!(
                    "the Ethereum node is on chain id {}, not ethereum_chain_id {expected}",
                    head.chain_id
                )),
                _ => Ok(()),
            }
        }
        Chain::Tron => clients
            .tron()
            .map(|_| ())
            .map_err(|error| format!("{error:#}")),
        Chain::Bitcoin => clients
            .bitcoin(BITCOIN_ATTEMPTS)
            .map(|_| ())
            .map_err(|error| format!("{error:#}")),
    }
}

/// Reads every line's balance, [`READS_IN_FLIGHT`] at a time (Bitcoin's `scantxoutset`
/// one at a time: the node runs one scan at once), and judges each. Every line comes back:
/// a read that panicked is judged unknown, never left out.
async fn compare(
    clients: &Arc<ChainClients>,
    network: Network,
    chain: Chain,
    lines: Vec<LedgerLine>,
    node: Result<(), String>,
    progress: bool,
) -> Vec<Reconciled> {
    let total = lines.len();
    let in_flight = if chain == Chain::Bitcoin {
        1
    } else {
        READS_IN_FLIGHT
    };
    // Progress every 5 % (and at the end), from PROGRESS_FROM lines on.
    let step = (total / 20).max(PROGRESS_FROM);
    let mut pending = lines.iter().cloned().enumerate();
    let mut running = tokio::task::JoinSet::new();
    let mut index_of = std::collections::HashMap::new();
    let mut done: Vec<(usize, Reconciled)> = Vec::with_capacity(total);
    loop {
        while running.len() < in_flight {
            let Some((index, line)) = pending.next() else {
                break;
            };
            let clients = clients.clone();
            let node = node.clone();
            let task = running.spawn(async move {
                let on_chain = match node {
                    Ok(()) => balance(&clients, network, &line).await,
                    Err(error) => Err(error),
                };
                (index, web::ledger::judge(line, on_chain))
            });
            index_of.insert(task.id(), index);
        }
        let Some(finished) = running.join_next_with_id().await else {
            break;
        };
        match finished {
            Ok((_, each)) => done.push(each),
            Err(error) => {
                tracing::error!(%error, "a balance read panicked");
                if let Some(&index) = index_of.get(&error.id()) {
                    done.push((
                        index,
                        web::ledger::judge(
                            lines[index].clone(),
                            Err(format!("the balance read failed: {error}")),
                        ),
                    ));
                }
            }
        }
        if progress
            && total >= PROGRESS_FROM
            && (done.len().is_multiple_of(step) || done.len() == total)
        {
            eprintln!("{chain}: {} of {total} balances read", done.len());
        }
    }
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, each)| each).collect()
}

/// What the chain says `line`'s wallet holds of its asset.
async fn balance(
    clients: &ChainClients,
    network: Network,
    line: &LedgerLine,
) -> Result<Amount, String> {
    let text = line
        .address
        .as_deref()
        .ok_or("the wallet's address is not known")?;
    if line.chain == Chain::Bitcoin && line.kind == WalletKind::Hot {
        return Err("the Bitcoin hot wallet spans its receive and change keys: no single address holds it (its withdrawal worker's UTXO set reads it)".into());
    }
    if line.decimals.is_none() {
        return Err(format!(
            "{} is not in the asset catalogue: which contract to ask is not known",
            line.asset
        ));
    }
    let address = Address::parse(line.chain, network, text)
        .map_err(|error| format!("the address {text}: {error}"))?;
    let asset = match &line.contract {
        None => Asset::Native,
        Some(contract) => Asset::Token(
            Address::parse(line.chain, network, contract)
                .map_err(|error| format!("the contract {contract}: {error}"))?,
        ),
    };
    let read = match line.chain {
        Chain::Ethereum => {
            let client = clients
                .ethereum_unchecked()
                .await
                .map_err(|error| format!("{error:#}"))?;
            ChainRead::balance(&client, &address, &asset).await
        }
        Chain::Tron => {
            let client = clients.tron().map_err(|error| format!("{error:#}"))?;
            ChainRead::balance(&client, &address, &asset).await
        }
        Chain::Bitcoin => {
            let rpc = clients
                .bitcoin(BITCOIN_ATTEMPTS)
                .map_err(|error| format!("{error:#}"))?;
            chain_bitcoin::address_balance(&rpc, &address).await
        }
    };
    read.map_err(|error| error.to_string())
}

fn print(all: &[Reconciled], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let lines: Vec<Value> = all.iter().map(web::ledger::reconciled_json).collect();
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    let count = |verdict: &str| {
        all.iter()
            .filter(|each| each.verdict.as_str() == verdict)
            .count()
    };
    println!(
        "{} wallet lines: {} agree, {} differ, {} unknown",
        all.len(),
        count("agrees"),
        count("differs"),
        count("unknown")
    );
    for each in all {
        let line = &each.line;
        let wallet = format!(
            "{} {} {}{}",
            line.chain,
            line.kind.as_str(),
            line.address.as_deref().unwrap_or("(address not known)"),
            line.reference
                .as_deref()
                .map(|reference| format!(" ({reference})"))
                .unwrap_or_default()
        );
        let expected = line
            .expected()
            .map(|expected| expected.format(line.decimals))
            .unwrap_or_else(|_| "unknown".into());
        let on_chain = match &each.on_chain {
            Ok(held) => web::ledger::Signed {
                negative: false,
                magnitude: *held,
            }
            .format(line.decimals),
            Err(_) => "unknown".into(),
        };
        match &each.verdict {
            Verdict::Agrees => {}
            Verdict::Differs(difference) => println!(
                "DIFFERS  {wallet} {}: expected {expected}, on chain {on_chain}, difference {}",
                line.asset,
                difference.format(line.decimals)
            ),
            Verdict::Unknown(reasons) => println!(
                "UNKNOWN  {wallet} {}: expected {expected}, on chain {on_chain}: {}",
                line.asset,
                reasons.join("; ")
            ),
        }
    }
    Ok(())
}

/// `coinsensei ledger show`: the expected balances alone; no node is asked.
pub async fn show(
    settings: Settings,
    chain: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let chains = match chain {
        Some(chain) => vec![
            chain
                .parse()
                .map_err(|error| anyhow::anyhow!("invalid --chain: {error}"))?,
        ],
        None => Chain::ALL.to_vec(),
    };
    let store = super::connect_existing(&settings).await?;
    let mut all = Vec::new();
    for chain in chains {
        match web::ledger::read(&store, &settings.withdrawals.catalogue, chain).await {
            Ok(lines) => all.extend(lines),
            Err(error) => {
                store.close().await;
                return Err(error).context("reading the ledger");
            }
        }
    }
    store.close().await;
    // The reconciliation's shape, with the chain's side left out.
    let shown: Vec<Reconciled> = all
        .into_iter()
        .map(|line| web::ledger::judge(line, Err("not read: `ledger show` asks no node".into())))
        .collect();
    if as_json {
        let lines: Vec<Value> = shown.iter().map(web::ledger::reconciled_json).collect();
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        println!("chain     wallet   asset   expected                        address (reference)");
        for each in &shown {
            let line = &each.line;
            let expected = match line.expected() {
                Ok(expected) => expected.format(line.decimals),
                Err(reasons) => format!("unknown: {}", reasons.join("; ")),
            };
            println!(
                "{:<9} {:<8} {:<7} {:<31} {}{}",
                line.chain.as_str(),
                line.kind.as_str(),
                line.asset,
                expected,
                line.address.as_deref().unwrap_or("(address not known)"),
                line.reference
                    .as_deref()
                    .map(|reference| format!(" ({reference})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `coinsensei ledger adjust` records.
#[derive(Debug)]
pub struct AdjustRequest {
    pub chain: String,
    pub address: String,
    pub asset: String,
    /// In the asset's unit (`10.5`).
    pub amount: String,
    pub direction: String,
    pub reason: String,
}

/// `coinsensei ledger adjust`: checked whole before anything is written.
pub async fn adjust(
    settings: Settings,
    request: AdjustRequest,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let chain: Chain = request
        .chain
        .parse()
        .map_err(|error| anyhow::anyhow!("invalid --chain: {error}"))?;
    let asset = settings
        .withdrawals
        .catalogue
        .get(chain, &request.asset)
        .map_err(|error| anyhow::anyhow!("invalid --asset: {error}"))?
        .clone();
    let address = Address::parse(chain, network(&settings), &request.address)
        .map_err(|error| anyhow::anyhow!("invalid --address: {error}"))?;
    let amount = Amount::parse_positive(&request.amount, asset.decimals).map_err(|error| {
        anyhow::anyhow!(
            "invalid --amount {:?}: {error} ({} has {} decimals)",
            request.amount,
            asset.symbol,
            asset.decimals
        )
    })?;
    let direction: LedgerDirection = request
        .direction
        .parse()
        .map_err(|error: String| anyhow::anyhow!("invalid --direction: {error}"))?;
    let store = super::connect_existing(&settings).await?;
    let row = store
        .ledger_adjustment_insert(&LedgerAdjustmentInsert {
            chain,
            address: address.to_string(),
            asset: asset.symbol.clone(),
            direction,
            amount,
            reason: request.reason,
            actor: super::workers::actor(),
            now: Utc::now(),
        })
        .await;
    store.close().await;
    let row = row.map_err(|error| anyhow::anyhow!("{error}"))?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "id": row.id,
                "chain": row.chain.as_str(),
                "address": row.address,
                "asset": row.asset,
                "direction": row.direction.as_str(),
                "amount": row.amount.format_decimal(asset.decimals),
                "amount_base_units": row.amount.base_units().to_string(),
                "reason": row.reason,
                "created_by": row.created_by,
                "created_at": row.created_at.to_rfc3339(),
            }))?
        );
    } else {
        println!(
            "adjustment {} recorded: {} {} {} {} (audited as ledger.adjust)",
            row.id,
            row.direction.as_str(),
            row.amount.format_decimal(asset.decimals),
            row.asset,
            row.address
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn check(chain: Chain, asset: &str, at: chrono::DateTime<Utc>) -> store::LedgerCheck {
        store::LedgerCheck {
            chain,
            asset: asset.into(),
            agreeing: 1,
            differing: 0,
            unknown: 0,
            difference: domain::Amount::ZERO,
            checked_at: at,
        }
    }

    #[test]
    fn a_chain_reconciled_within_half_an_interval_waits_for_the_next_round() {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let interval = std::time::Duration::from_secs(3_600);
        let all = [Chain::Tron, Chain::Ethereum, Chain::Bitcoin];
        // Never reconciled: every chain is due.
        assert_eq!(due_chains(&all, &[], interval, now), all.to_vec());
        let checks = [
            // Ethereum: another replica did it 10 minutes ago (its newest asset counts).
            check(Chain::Ethereum, "ETH", now - chrono::TimeDelta::minutes(50)),
            check(
                Chain::Ethereum,
                "USDT",
                now - chrono::TimeDelta::minutes(10),
            ),
            // TRON: 30 minutes ago, half the interval: due again.
            check(Chain::Tron, "TRX", now - chrono::TimeDelta::minutes(30)),
        ];
        assert_eq!(
            due_chains(&all, &checks, interval, now),
            vec![Chain::Tron, Chain::Bitcoin]
        );
        // Only the chains asked about are answered.
        assert_eq!(
            due_chains(&[Chain::Ethereum], &checks, interval, now),
            Vec::<Chain>::new()
        );
    }
}
