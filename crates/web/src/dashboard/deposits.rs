//! The Deposits page (`/deposits`): recent deposits newest first, filtered by state and chain,
//! the first page following every change live (`/live?page=deposits`: a new deposit, a credit,
//! a reversal); a `reversed` one is highlighted (the exchange credited money whose block left
//! the chain), an `ignored` one shows its reason. Above the list, the balances per chain and
//! asset: the hot wallet as its withdrawal worker last read it from the node, what the ledger
//! says the hot wallet and the deposit addresses should hold (`crate::ledger`), and the last
//! reconciliation against the chains. The balances are read when the page loads (the ledger
//! reads every page of the chain's rows, too much for each second's look); the list is live.
//! Below, consolidation's sweeps, live too: the open ones per chain (the oldest's start, how
//! many had a step fail), then the newest sweeps with their transactions and cost; a failed
//! one, or an open one whose last step failed, is marked.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::response::Response;
use domain::Chain;
use serde::Deserialize;
use store::{DepositList, DepositState, DepositView};

use super::pages::{Filter, Layout, Stamp, bad_query, choice, html, shorten};
use super::{DashError, Session};
use crate::AppState;
use crate::ledger::{Signed, WalletKind};

/// Deposits per page of the list.
pub(crate) const DEPOSITS_PAGE: u32 = 50;

/// One row of the deposits list.
#[derive(Debug)]
pub(crate) struct DepositLine {
    pub(crate) id: i64,
    pub(crate) chain: &'static str,
    pub(crate) asset: String,
    pub(crate) amount: String,
    pub(crate) address: String,
    pub(crate) address_short: String,
    pub(crate) reference: String,
    pub(crate) state: &'static str,
    /// Why an ignored one is never credited.
    pub(crate) reason: Option<String>,
    pub(crate) txid: String,
    pub(crate) txid_short: String,
    pub(crate) position: u64,
    pub(crate) block: u64,
    pub(crate) seen: Stamp,
    pub(crate) updated: Stamp,
}

impl DepositLine {
    fn new(view: &DepositView, catalogue: &domain::AssetCatalogue) -> Self {
        let row = &view.deposit;
        let (asset, amount) = match crate::deposits::asset_of(catalogue, row.chain, &row.asset) {
            Some((symbol, decimals)) => (symbol, row.amount.format_decimal(decimals)),
            None => (
                shorten(&row.asset),
                format!("{} base units", row.amount.base_units()),
            ),
        };
        DepositLine {
            id: row.id,
            chain: row.chain.as_str(),
            asset,
            amount,
            address: row.address.clone(),
            address_short: shorten(&row.address),
            reference: view.reference.clone().unwrap_or_default(),
            state: row.state.as_str(),
            reason: row.reason.clone(),
            txid: row.txid.clone(),
            txid_short: shorten(&row.txid),
            position: row.position,
            block: row.block_number,
            seen: Stamp(row.seen_at),
            updated: Stamp(row.updated_at.unwrap_or(row.seen_at)),
        }
    }
}

/// The page's filters, as on its address (`state`, `chain`) and where the page starts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DepositFilter {
    pub(crate) state: Option<String>,
    pub(crate) chain: Option<String>,
    pub(crate) before_id: Option<i64>,
}

impl DepositFilter {
    /// The store's list for these filters (one page), or a clear error for a bad one.
    pub(crate) fn list(&self) -> Result<DepositList, DashError> {
        let state = match self
            .state
            .as_deref()
            .map(str::trim)
            .filter(|text| !text.is_empty())
        {
            None => None,
            Some(text) => Some(crate::deposits::parse_state(text).map_err(|error| {
                DashError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("state: {error}"),
                )
            })?),
        };
        Ok(DepositList {
            chain: choice::<Chain>("chain", self.chain.as_deref())?,
            state,
            reference: None,
            before_id: self.before_id,
            limit: DEPOSITS_PAGE,
        })
    }
}

fn deposit_query(list: &DepositList) -> String {
    let mut query = String::new();
    if let Some(state) = list.state {
        query.push_str(&format!("state={}&", state.as_str()));
    }
    if let Some(chain) = list.chain {
        query.push_str(&format!("chain={chain}&"));
    }
    query
}

/// The list with its pager: what the live stream sends again, whole, when any row changes.
#[derive(Debug)]
pub(crate) struct DepositTable {
    pub(crate) lines: Vec<DepositLine>,
    pub(crate) filtered: bool,
    pub(crate) first_page: bool,
    pub(crate) query: String,
    pub(crate) older: Option<i64>,
}

#[derive(Template)]
#[template(path = "deposit_table.html")]
pub(crate) struct DepositTableFragment<'a> {
    pub(crate) table: &'a DepositTable,
}

/// The list as the page shows it for `list`.
pub(crate) async fn deposit_table(
    state: &AppState,
    list: &DepositList,
) -> Result<DepositTable, DashError> {
    let rows = state.store.deposit_list(list).await?;
    let older = (rows.len() == list.limit as usize)
        .then(|| rows.last().map(|view| view.deposit.id))
        .flatten();
    let catalogue = &state.options.intake.catalogue;
    Ok(DepositTable {
        lines: rows
            .iter()
            .map(|view| DepositLine::new(view, catalogue))
            .collect(),
        filtered: list.state.is_some() || list.chain.is_some(),
        first_page: list.before_id.is_none(),
        query: deposit_query(list),
        older,
    })
}

/// One asset of one chain in the balances table.
#[derive(Debug)]
pub(crate) struct BalanceLine {
    pub(crate) chain: &'static str,
    pub(crate) asset: String,
    /// The hot wallet's balance as its withdrawal worker last read it, and when.
    pub(crate) hot_read: Option<(String, Stamp)>,
    /// What the ledger says the hot wallet should hold ("unknown" when it cannot say).
    pub(crate) hot_expected: String,
    /// What the ledger says the deposit addresses hold together.
    pub(crate) deposits_expected: String,
    /// How many deposit addresses.
    pub(crate) addresses: usize,
    /// The last reconciliation: (verdict text, whether anything differs, when).
    pub(crate) reconciled: Option<(String, bool, Stamp)>,
}

fn total_text(total: Option<&(String, Option<u8>, Option<Signed>)>) -> String {
    match total {
        Some((_, decimals, Some(sum))) => sum.format(*decimals),
        Some((_, _, None)) => "unknown".into(),
        None => "0".into(),
    }
}

/// The balances per chain and asset, for the chains that have a wallet on record.
pub(crate) async fn balances(state: &AppState) -> Result<Vec<BalanceLine>, DashError> {
    let catalogue = &state.options.intake.catalogue;
    let hot = state.store.hot_wallet_list().await?;
    let checks = state.store.ledger_check_list().await?;
    let mut balances = Vec::new();
    for chain in Chain::ALL {
        let lines = crate::ledger::read(&state.store, catalogue, chain).await?;
        let on_record = lines.iter().any(|line| line.address.is_some())
            || checks.iter().any(|check| check.chain == chain);
        if !on_record {
            continue;
        }
        let hot_totals = crate::ledger::totals(&lines, WalletKind::Hot);
        let deposit_totals = crate::ledger::totals(&lines, WalletKind::Deposit);
        let mut assets: Vec<String> = hot_totals.iter().map(|total| total.0.clone()).collect();
        for total in &deposit_totals {
            if !assets.contains(&total.0) {
                assets.push(total.0.clone());
            }
        }
        let addresses = lines
            .iter()
            .filter(|line| line.kind == WalletKind::Deposit)
            .filter_map(|line| line.address.as_deref())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        for asset in assets {
            let decimals = catalogue
                .get(chain, &asset)
                .ok()
                .map(|asset| asset.decimals);
            let hot_read = hot
                .iter()
                .find(|balance| balance.chain == chain && balance.asset == asset)
                .map(|balance| {
                    let units = domain::Amount::parse_decimal(&balance.units, 0).ok();
                    let text = match (units, decimals) {
                        (Some(units), Some(decimals)) => units.format_decimal(decimals),
                        _ => format!("{} base units", balance.units),
                    };
                    (text, Stamp(balance.checked_at))
                });
            let reconciled = checks
                .iter()
                .find(|check| check.chain == chain && check.asset == asset)
                .map(|check| {
                    let text = if check.differing > 0 {
                        let difference = Signed {
                            negative: false,
                            magnitude: check.difference,
                        };
                        format!(
                            "{} differ by {} in all; {} agree, {} unknown",
                            check.differing,
                            difference.format(decimals),
                            check.agreeing,
                            check.unknown
                        )
                    } else {
                        format!("{} agree, {} unknown", check.agreeing, check.unknown)
                    };
                    (text, check.differing > 0, Stamp(check.checked_at))
                });
            balances.push(BalanceLine {
                chain: chain.as_str(),
                hot_read,
                hot_expected: total_text(hot_totals.iter().find(|total| total.0 == asset)),
                deposits_expected: total_text(deposit_totals.iter().find(|total| total.0 == asset)),
                addresses,
                reconciled,
                asset,
            });
        }
    }
    Ok(balances)
}

#[derive(Template)]
#[template(path = "deposits.html")]
struct DepositsPage {
    layout: Layout,
    filters: Vec<Filter>,
    filtered: bool,
    balances: Vec<BalanceLine>,
    table: DepositTable,
    sweeps: SweepTable,
}

/// `GET /deposits`: the balances, then deposits newest first, fifty a page, filtered by state
/// and chain; the first page's list follows every change live.
pub(crate) async fn deposits_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<DepositFilter>, QueryRejection>,
) -> Result<Response, DashError> {
    let Query(filter) = query.map_err(bad_query)?;
    let list = filter.list()?;
    let table = deposit_table(&state, &list).await?;
    let balances = balances(&state).await?;
    let sweeps = sweep_table(&state).await?;
    let (filters, live) = super::pages::state_chain_view(
        "deposits",
        DepositState::ALL.iter().map(|each| each.as_str()),
        list.state.map(DepositState::as_str),
        list.chain,
        list.before_id.is_some(),
    );
    html(&DepositsPage {
        layout: Layout::new(&session, "Deposits", "deposits", live),
        filters,
        filtered: table.filtered,
        balances,
        table,
        sweeps,
    })
}

/// Sweeps the Deposits page shows: the newest, every open one among them.
pub(crate) const SWEEPS_SHOWN: u32 = 25;

/// One sweep of the sweeps table.
#[derive(Debug)]
pub(crate) struct SweepLine {
    pub(crate) id: i64,
    pub(crate) chain: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) path: &'static str,
    pub(crate) state: &'static str,
    pub(crate) asset: String,
    pub(crate) amount: String,
    pub(crate) address: String,
    pub(crate) address_short: String,
    /// The transactions known so far: (what, txid, shortened).
    pub(crate) txids: Vec<(&'static str, String, String)>,
    /// The fees known so far, in the native coin's unit.
    pub(crate) cost: String,
    /// The open sweep's last error, or why it failed.
    pub(crate) error: Option<String>,
    pub(crate) erring: bool,
    pub(crate) created: Stamp,
    pub(crate) updated: Stamp,
}

impl SweepLine {
    fn new(row: &store::SweepRow, catalogue: &domain::AssetCatalogue) -> Self {
        let (asset, amount) = match crate::deposits::asset_of(catalogue, row.chain, &row.asset) {
            Some((symbol, decimals)) => (symbol, row.amount.format_decimal(decimals)),
            None => (
                shorten(&row.asset),
                format!("{} base units", row.amount.base_units()),
            ),
        };
        let cost = match crate::deposits::asset_of(catalogue, row.chain, "native") {
            Some((symbol, decimals)) => format!("{} {symbol}", row.cost().format_decimal(decimals)),
            None => format!("{} base units", row.cost().base_units()),
        };
        let txids = [
            ("top-up", &row.top_up_txid),
            ("delegation", &row.delegate_txid),
            ("sweep", &row.sweep_txid),
            ("reclaim", &row.reclaim_txid),
        ]
        .into_iter()
        .filter_map(|(what, txid)| {
            txid.as_ref()
                .map(|txid| (what, txid.clone(), shorten(txid)))
        })
        .collect();
        SweepLine {
            id: row.id,
            chain: row.chain.as_str(),
            kind: row.kind.as_str(),
            path: crate::sweeps::path(row),
            state: row.state.as_str(),
            asset,
            amount,
            address: row.address.clone(),
            address_short: shorten(&row.address),
            txids,
            cost,
            error: row.error.clone(),
            erring: row.state.is_open() && row.error.is_some(),
            created: Stamp(row.created_at),
            updated: Stamp(row.updated_at),
        }
    }
}

/// The sweeps table: the newest sweeps, and what needs a look.
#[derive(Debug)]
pub(crate) struct SweepTable {
    pub(crate) lines: Vec<SweepLine>,
    /// Open sweeps per chain with the oldest's start and how many had a step fail.
    pub(crate) open: Vec<(&'static str, i64, Stamp, i64)>,
}

#[derive(Template)]
#[template(path = "sweep_table.html")]
pub(crate) struct SweepTableFragment<'a> {
    pub(crate) sweeps: &'a SweepTable,
}

/// The sweeps table as the page shows it; the live stream sends it again when it changes.
pub(crate) async fn sweep_table(state: &AppState) -> Result<SweepTable, DashError> {
    let rows = state
        .store
        .sweep_search(&store::SweepList {
            chain: None,
            state: None,
            before_id: None,
            limit: SWEEPS_SHOWN,
        })
        .await?;
    let stats = state.store.sweep_stats().await?;
    let catalogue = &state.options.intake.catalogue;
    let open = stats
        .open
        .iter()
        .map(|(chain, oldest, erring)| {
            let count = stats
                .counts
                .iter()
                .filter(|(each, sweep_state, _)| each == chain && sweep_state.is_open())
                .map(|(_, _, n)| n)
                .sum();
            (chain.as_str(), count, Stamp(*oldest), *erring)
        })
        .collect();
    Ok(SweepTable {
        lines: rows
            .iter()
            .map(|row| SweepLine::new(row, catalogue))
            .collect(),
        open,
    })
}
