//! The ledger: what each wallet of a chain should hold of each asset, by the store.
//!
//! Nothing here is stored; [`read`] folds it from the rows that move money, each read a
//! bounded page at a time (`store::ledger`):
//! - a deposit address holds its **credited** deposits, and also what is on it but not
//!   credited (**held**: pending deposits, and ignored ones of a value: dust, internal
//!   transfers), since the chain counts those coins too;
//! - the hot wallet has paid out its **withdrawn** amounts (completed withdrawals) and the
//!   **fees** of every withdrawal transaction that landed (completed ones, and landed but
//!   failed ones), in the native asset;
//! - **Bitcoin deposits spent where they lie**: a Bitcoin payout spends credited deposit
//!   outputs directly (Bitcoin has no consolidation); once the attempt that spent one landed,
//!   its amount is swept out of its deposit address and into the hot wallet (the attempts'
//!   inputs are stored); while only a live attempt spends it, both lines are unknown;
//! - **adjustments** (`coinsensei ledger adjust`) record money that moved outside those rows:
//!   the hot wallet's opening balance (the operator funded it), corrections.
//!
//! - **sweeps** (consolidation, `store::sweeps`): a swept row takes its amount out of the
//!   deposit address (and its sweep fee, native) and into its destination (the hot wallet,
//!   or the cold address for the hot wallet's excess); its gas top-up's amount and fee out
//!   of the gas wallet. Not the top-up *into* the deposit address: the scanner already
//!   records that transfer as an `ignored` (internal) deposit, which counts as held. A sweep
//!   still open (`topping_up`, `sweeping`) or failed makes its lines unknown. A TRON sweep's
//!   delegation and reclaim charge their fees to the staking account.
//!
//! What cannot be known is said, never taken as zero: a withdrawal in flight (it may or may
//! not have left), one that needs a person, a completed one whose fee was not recorded, the
//! hot wallet whose address no withdrawal worker has reported. Such a line carries the
//! reasons in [`LedgerLine::unknown`] and has no expected balance.

use std::collections::BTreeMap;

use domain::limits::LIST_LIMIT_MAX;
use domain::{Amount, AssetCatalogue, Chain, WithdrawalState};
use store::{DepositAddressList, DepositState, LedgerDirection, LedgerPage, Store, StoreError};

/// The most reasons a line keeps; the rest are counted in [`LedgerLine::unknown_more`].
pub const UNKNOWN_REASONS_MAX: usize = 5;

/// Which of our wallets a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalletKind {
    /// The chain's hot wallet, which pays withdrawals.
    Hot,
    /// An issued deposit address (or any address deposits were recorded to).
    Deposit,
    /// Another address an adjustment names (a gas wallet, say).
    Other,
}

impl WalletKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WalletKind::Hot => "hot",
            WalletKind::Deposit => "deposit",
            WalletKind::Other => "other",
        }
    }
}

/// An amount that may be below zero (a ledger that paid out more than it took in, a
/// difference either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed {
    pub negative: bool,
    pub magnitude: Amount,
}

impl Signed {
    pub const ZERO: Signed = Signed {
        negative: false,
        magnitude: Amount::ZERO,
    };

    /// `plus - minus`.
    pub fn difference(plus: Amount, minus: Amount) -> Signed {
        match plus.checked_sub(minus) {
            Some(magnitude) => Signed {
                negative: false,
                magnitude,
            },
            None => Signed {
                negative: true,
                magnitude: minus.checked_sub(plus).unwrap_or(Amount::ZERO),
            },
        }
    }

    /// `on_chain - self`: how far the chain is from this expected balance.
    pub fn from_expected_to(self, on_chain: Amount) -> Signed {
        if self.negative {
            // on_chain - (-m) = on_chain + m; a sum past 2^256 cannot come from a chain.
            Signed {
                negative: false,
                magnitude: on_chain
                    .checked_add(self.magnitude)
                    .unwrap_or(Amount::from_base_units(ruint::aliases::U256::MAX)),
            }
        } else {
            Signed::difference(on_chain, self.magnitude)
        }
    }

    pub fn is_zero(self) -> bool {
        self.magnitude.is_zero()
    }

    /// In base units, with a `-` when below zero.
    pub fn base_units(self) -> String {
        let sign = if self.negative && !self.is_zero() {
            "-"
        } else {
            ""
        };
        format!("{sign}{}", self.magnitude.base_units())
    }

    /// In the asset's unit (`decimals`), with a `-` when below zero.
    pub fn format(self, decimals: Option<u8>) -> String {
        let sign = if self.negative && !self.is_zero() {
            "-"
        } else {
            ""
        };
        match decimals {
            Some(decimals) => format!("{sign}{}", self.magnitude.format_decimal(decimals)),
            None => format!("{sign}{} base units", self.magnitude.base_units()),
        }
    }
}

/// What one wallet should hold of one asset, and from what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    pub chain: Chain,
    pub kind: WalletKind,
    /// None for a hot wallet whose address no withdrawal worker has reported yet.
    pub address: Option<String>,
    /// The reference a deposit address was issued for.
    pub reference: Option<String>,
    /// The catalogue symbol (the stored asset when the catalogue no longer has it).
    pub asset: String,
    /// The token's contract; None for the native coin.
    pub contract: Option<String>,
    /// None for an asset the catalogue no longer has.
    pub decimals: Option<u8>,
    pub credited: Amount,
    /// On the address, not credited: pending deposits, ignored ones of a value.
    pub held: Amount,
    pub withdrawn: Amount,
    pub fees: Amount,
    pub adjusted_in: Amount,
    pub adjusted_out: Amount,
    /// Consolidation: swept in (the hot wallet, a cold address), swept out (a deposit
    /// address, the hot wallet's excess to cold) and gas top-ups paid out (the gas wallet).
    pub swept_in: Amount,
    pub swept_out: Amount,
    pub topped_up: Amount,
    /// Why the expected balance cannot be known (at most [`UNKNOWN_REASONS_MAX`]).
    pub unknown: Vec<String>,
    /// Reasons beyond those.
    pub unknown_more: u64,
}

impl LedgerLine {
    fn new(chain: Chain, kind: WalletKind, address: Option<String>, asset: AssetKey) -> Self {
        LedgerLine {
            chain,
            kind,
            address,
            reference: None,
            asset: asset.symbol,
            contract: asset.contract,
            decimals: asset.decimals,
            credited: Amount::ZERO,
            held: Amount::ZERO,
            withdrawn: Amount::ZERO,
            fees: Amount::ZERO,
            adjusted_in: Amount::ZERO,
            adjusted_out: Amount::ZERO,
            swept_in: Amount::ZERO,
            swept_out: Amount::ZERO,
            topped_up: Amount::ZERO,
            unknown: Vec::new(),
            unknown_more: 0,
        }
    }

    fn unknown_because(&mut self, reason: String) {
        if self.unknown.len() < UNKNOWN_REASONS_MAX {
            self.unknown.push(reason);
        } else {
            self.unknown_more += 1;
        }
    }

    fn add(&mut self, field: Field, amount: Amount) {
        let slot = match field {
            Field::Credited => &mut self.credited,
            Field::Held => &mut self.held,
            Field::Withdrawn => &mut self.withdrawn,
            Field::Fees => &mut self.fees,
            Field::AdjustedIn => &mut self.adjusted_in,
            Field::AdjustedOut => &mut self.adjusted_out,
            Field::SweptIn => &mut self.swept_in,
            Field::SweptOut => &mut self.swept_out,
            Field::ToppedUp => &mut self.topped_up,
        };
        match slot.checked_add(amount) {
            Some(sum) => *slot = sum,
            // No real balance comes near 2^256: this is corrupt data, and said so.
            None => self.unknown_because("the sum passes 2^256 base units".into()),
        }
    }

    /// What the wallet should hold: everything in less everything out; the reasons when
    /// that cannot be known.
    pub fn expected(&self) -> Result<Signed, Vec<String>> {
        if !self.unknown.is_empty() {
            let mut reasons = self.unknown.clone();
            if self.unknown_more > 0 {
                reasons.push(format!("and {} more", self.unknown_more));
            }
            return Err(reasons);
        }
        let sum = |amounts: &[Amount]| {
            amounts
                .iter()
                .try_fold(Amount::ZERO, |sum, amount| sum.checked_add(*amount))
        };
        let (Some(into), Some(out)) = (
            sum(&[self.credited, self.held, self.adjusted_in, self.swept_in]),
            sum(&[
                self.withdrawn,
                self.fees,
                self.adjusted_out,
                self.swept_out,
                self.topped_up,
            ]),
        ) else {
            return Err(vec!["the sum passes 2^256 base units".into()]);
        };
        Ok(Signed::difference(into, out))
    }
}

#[derive(Debug, Clone, Copy)]
enum Field {
    Credited,
    Held,
    Withdrawn,
    Fees,
    AdjustedIn,
    AdjustedOut,
    SweptIn,
    SweptOut,
    ToppedUp,
}

/// An asset as a line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AssetKey {
    symbol: String,
    contract: Option<String>,
    decimals: Option<u8>,
}

/// A stored deposit's asset (`native`, or a token's contract) as the catalogue names it.
fn asset_of_deposit(catalogue: &AssetCatalogue, chain: Chain, stored: &str) -> AssetKey {
    match crate::deposits::asset_of(catalogue, chain, stored) {
        Some((symbol, decimals)) => {
            asset_by_symbol(catalogue, chain, &symbol).unwrap_or(AssetKey {
                symbol,
                contract: None,
                decimals: Some(decimals),
            })
        }
        None => AssetKey {
            symbol: stored.to_string(),
            contract: (stored != "native").then(|| stored.to_string()),
            decimals: None,
        },
    }
}

fn asset_by_symbol(catalogue: &AssetCatalogue, chain: Chain, symbol: &str) -> Option<AssetKey> {
    catalogue.get(chain, symbol).ok().map(|asset| AssetKey {
        symbol: asset.symbol.clone(),
        contract: asset.contract.clone(),
        decimals: Some(asset.decimals),
    })
}

/// A symbol the catalogue may no longer have, kept as it is.
fn asset_or_stored(catalogue: &AssetCatalogue, chain: Chain, symbol: &str) -> AssetKey {
    asset_by_symbol(catalogue, chain, symbol).unwrap_or(AssetKey {
        symbol: symbol.to_string(),
        contract: None,
        decimals: None,
    })
}

/// Addresses compared as the chain compares them: Ethereum's hex without regard to case
/// (EIP-55 only adds a checksum), the others exactly.
fn address_key(chain: Chain, address: &str) -> String {
    match chain {
        Chain::Ethereum => address.to_ascii_lowercase(),
        _ => address.to_string(),
    }
}

struct Lines {
    chain: Chain,
    hot: Option<String>,
    /// By (kind, address key or "" for an unknown hot wallet, symbol).
    lines: BTreeMap<(WalletKind, String, String), LedgerLine>,
    /// Address key → the kind and the reference of each issued address.
    issued: BTreeMap<String, Option<String>>,
}

impl Lines {
    fn kind_of(&self, address: &str) -> WalletKind {
        let key = address_key(self.chain, address);
        if self
            .hot
            .as_deref()
            .is_some_and(|hot| address_key(self.chain, hot) == key)
        {
            WalletKind::Hot
        } else if self.issued.contains_key(&key) {
            WalletKind::Deposit
        } else {
            WalletKind::Other
        }
    }

    fn line(
        &mut self,
        kind: WalletKind,
        address: Option<&str>,
        asset: AssetKey,
    ) -> &mut LedgerLine {
        let key = (
            kind,
            address
                .map(|address| address_key(self.chain, address))
                .unwrap_or_default(),
            asset.symbol.clone(),
        );
        let chain = self.chain;
        let reference = address
            .and_then(|address| self.issued.get(&address_key(chain, address)))
            .cloned()
            .flatten();
        self.lines.entry(key).or_insert_with(|| {
            let mut line = LedgerLine::new(chain, kind, address.map(str::to_string), asset);
            line.reference = reference;
            line
        })
    }

    fn hot_line(&mut self, asset: AssetKey) -> &mut LedgerLine {
        let hot = self.hot.clone();
        let line = self.line(WalletKind::Hot, hot.as_deref(), asset);
        if line.address.is_none() && line.unknown.is_empty() {
            line.unknown_because(
                "the hot wallet's address is not known: no withdrawal worker of this chain has reported its balance yet".into(),
            );
        }
        line
    }
}

/// The ledger of `chain`: a line per (wallet, asset) for the hot wallet and every issued
/// deposit address (each asset of the catalogue on the chain, zero when nothing moved), and
/// for any other address money was recorded to. Reads every page of the chain's rows.
pub async fn read(
    store: &Store,
    catalogue: &AssetCatalogue,
    chain: Chain,
) -> Result<Vec<LedgerLine>, StoreError> {
    let hot = store
        .hot_wallet_list()
        .await?
        .into_iter()
        .find(|balance| balance.chain == chain)
        .map(|balance| balance.address);
    let assets: Vec<AssetKey> = catalogue
        .assets()
        .iter()
        .filter(|asset| asset.chain == chain)
        .map(|asset| AssetKey {
            symbol: asset.symbol.clone(),
            contract: asset.contract.clone(),
            decimals: Some(asset.decimals),
        })
        .collect();
    let native = asset_or_stored(catalogue, chain, chain.native_symbol());
    let mut lines = Lines {
        chain,
        hot,
        lines: BTreeMap::new(),
        issued: BTreeMap::new(),
    };

    let mut after_id = None;
    let mut issued = Vec::new();
    loop {
        let page = store
            .deposit_address_list(&DepositAddressList {
                chain: Some(chain),
                reference: None,
                after_id,
                limit: LIST_LIMIT_MAX,
            })
            .await?;
        let Some(last) = page.last() else { break };
        after_id = Some(last.id);
        for address in page {
            lines.issued.insert(
                address_key(chain, &address.address),
                Some(address.reference.clone()),
            );
            issued.push(address.address);
        }
    }
    for asset in &assets {
        lines.hot_line(asset.clone());
        for address in &issued {
            lines.line(WalletKind::Deposit, Some(address), asset.clone());
        }
    }

    let page = |after_id| LedgerPage {
        chain,
        after_id,
        limit: LIST_LIMIT_MAX,
    };
    let mut after_id = 0;
    loop {
        let deposits = store.ledger_deposit_page(&page(after_id)).await?;
        let Some(last) = deposits.last() else { break };
        after_id = last.id;
        for deposit in deposits {
            let asset = asset_of_deposit(catalogue, chain, &deposit.asset);
            let kind = match lines.kind_of(&deposit.address) {
                // Deposits are only ever scanned for issued addresses; one recorded to
                // another address (a test's watch set) is still money on it.
                WalletKind::Other => WalletKind::Deposit,
                kind => kind,
            };
            let field = match deposit.state {
                DepositState::Credited => Field::Credited,
                _ => Field::Held,
            };
            lines
                .line(kind, Some(&deposit.address), asset)
                .add(field, deposit.amount);
        }
    }

    let mut after_id = 0;
    loop {
        let withdrawals = store.ledger_withdrawal_page(&page(after_id)).await?;
        let Some(last) = withdrawals.last() else {
            break;
        };
        after_id = last.id;
        for withdrawal in withdrawals {
            let asset = asset_or_stored(catalogue, chain, &withdrawal.asset);
            let id = withdrawal.id;
            match withdrawal.state {
                WithdrawalState::Completed => {
                    lines
                        .hot_line(asset)
                        .add(Field::Withdrawn, withdrawal.amount);
                    match withdrawal.fee {
                        Some(fee) => lines.hot_line(native.clone()).add(Field::Fees, fee),
                        None => lines.hot_line(native.clone()).unknown_because(format!(
                            "withdrawal {id} completed without its fee recorded (the node could not say)"
                        )),
                    }
                }
                // Refused before signing, or every transaction provably dead: nothing left
                // the wallet, unless a landed but failed one recorded its fee.
                WithdrawalState::Failed => {
                    if let Some(fee) = withdrawal.fee {
                        lines.hot_line(native.clone()).add(Field::Fees, fee);
                    }
                }
                // Landed but failed on chain: its fee is spent, the transfer did not happen.
                WithdrawalState::ManualReview if withdrawal.fee.is_some() => {
                    if let Some(fee) = withdrawal.fee {
                        lines.hot_line(native.clone()).add(Field::Fees, fee);
                    }
                }
                state => {
                    let reason = format!(
                        "withdrawal {id} is {}: whether it has left the hot wallet is not settled",
                        state.as_str()
                    );
                    let same = asset.symbol == native.symbol;
                    lines.hot_line(asset).unknown_because(reason.clone());
                    if !same {
                        lines.hot_line(native.clone()).unknown_because(reason);
                    }
                }
            }
        }
    }

    // Consolidation: each sweep moves its amount from its address to its destination and
    // pays its fee from its address; its top-up is paid, amount and fee, by the gas wallet
    // (the top-up *into* the deposit address is already held: the scanner records it as an
    // internal deposit). An open sweep leaves its lines unknown, as a withdrawal in flight
    // does; a failed one waits for a person.
    let mut before_id = None;
    loop {
        let sweeps = store.sweep_list(chain, before_id, LIST_LIMIT_MAX).await?;
        let Some(last) = sweeps.last() else { break };
        before_id = Some(last.id);
        for sweep in sweeps {
            // Stored as deposits are: `native`, or the token's contract.
            let asset = asset_of_deposit(catalogue, chain, &sweep.asset);
            let from = lines.kind_of(&sweep.address);
            let to = lines.kind_of(&sweep.destination);
            let id = sweep.id;
            if let (Some(gas_wallet), Some(amount), Some(fee)) =
                (&sweep.top_up_from, sweep.top_up_amount, sweep.top_up_fee)
            {
                let kind = lines.kind_of(gas_wallet);
                let line = lines.line(kind, Some(gas_wallet), native.clone());
                line.add(Field::ToppedUp, amount);
                line.add(Field::Fees, fee);
            } else if let Some(gas_wallet) = &sweep.top_up_from
                && sweep.top_up_txid.is_some()
            {
                let kind = lines.kind_of(gas_wallet);
                lines
                    .line(kind, Some(gas_wallet), native.clone())
                    .unknown_because(format!("sweep {id}'s gas top-up has no fee recorded yet"));
            }
            // TRON: lending energy and taking it back cost the staking account their fees
            // (bandwidth), and move no TRX.
            if let Some(staker) = &sweep.delegate_from {
                let kind = lines.kind_of(staker);
                for (txid, fee, what) in [
                    (&sweep.delegate_txid, sweep.delegate_fee, "delegation"),
                    (&sweep.reclaim_txid, sweep.reclaim_fee, "reclaim"),
                ] {
                    match (txid, fee) {
                        (_, Some(fee)) => lines
                            .line(kind, Some(staker), native.clone())
                            .add(Field::Fees, fee),
                        (Some(_), None) => lines
                            .line(kind, Some(staker), native.clone())
                            .unknown_because(format!(
                                "sweep {id}'s {what} has no fee recorded yet"
                            )),
                        (None, None) => {}
                    }
                }
            }
            match (sweep.state, sweep.sweep_fee) {
                (store::SweepState::Swept, Some(fee)) => {
                    lines
                        .line(from, Some(&sweep.address), asset.clone())
                        .add(Field::SweptOut, sweep.amount);
                    lines
                        .line(from, Some(&sweep.address), native.clone())
                        .add(Field::Fees, fee);
                    lines
                        .line(to, Some(&sweep.destination), asset)
                        .add(Field::SweptIn, sweep.amount);
                }
                (state, _) => {
                    let reason = format!(
                        "sweep {id} is {}: whether it moved is not settled",
                        state.as_str()
                    );
                    let same = asset.symbol == native.symbol;
                    lines
                        .line(from, Some(&sweep.address), asset.clone())
                        .unknown_because(reason.clone());
                    if !same {
                        lines
                            .line(from, Some(&sweep.address), native.clone())
                            .unknown_because(reason.clone());
                    }
                    lines
                        .line(to, Some(&sweep.destination), asset)
                        .unknown_because(reason);
                }
            }
        }
    }

    // Bitcoin: a payout spends credited deposits where they lie (no consolidation). A
    // deposit output an attempt that landed spent has moved from its address into the hot
    // wallet (the payout's change is the hot wallet's; what it paid out and its fee are the
    // withdrawals' lines above); one only a live attempt spends may or may not have moved.
    let mut after_id = 0;
    loop {
        let spends = store.ledger_deposit_spend_page(&page(after_id)).await?;
        let Some(last) = spends.last() else { break };
        after_id = last.id;
        for spend in spends {
            let asset = asset_of_deposit(catalogue, chain, &spend.asset);
            let from = match lines.kind_of(&spend.address) {
                WalletKind::Other => WalletKind::Deposit,
                kind => kind,
            };
            match (&spend.landed, &spend.live) {
                (Some(_), _) => {
                    lines
                        .line(from, Some(&spend.address), asset.clone())
                        .add(Field::SweptOut, spend.amount);
                    lines.hot_line(asset).add(Field::SweptIn, spend.amount);
                }
                (None, Some(txid)) => {
                    let reason = format!(
                        "deposit {} is an input of payout transaction {txid}, not settled yet",
                        spend.id
                    );
                    lines
                        .line(from, Some(&spend.address), asset.clone())
                        .unknown_because(reason.clone());
                    lines.hot_line(asset).unknown_because(reason);
                }
                (None, None) => {}
            }
        }
    }

    let mut after_id = 0;
    loop {
        let adjustments = store.ledger_adjustment_page(&page(after_id)).await?;
        let Some(last) = adjustments.last() else {
            break;
        };
        after_id = last.id;
        for adjustment in adjustments {
            let asset = asset_or_stored(catalogue, chain, &adjustment.asset);
            let kind = lines.kind_of(&adjustment.address);
            let field = match adjustment.direction {
                LedgerDirection::In => Field::AdjustedIn,
                LedgerDirection::Out => Field::AdjustedOut,
            };
            lines
                .line(kind, Some(&adjustment.address), asset)
                .add(field, adjustment.amount);
        }
    }
    Ok(lines.lines.into_values().collect())
}

/// The ledger's lines of one kind summed per asset (the dashboard's balances): the expected
/// total, or None when any line of it is unknown.
pub fn totals(lines: &[LedgerLine], kind: WalletKind) -> Vec<(String, Option<u8>, Option<Signed>)> {
    let mut totals: Vec<(String, Option<u8>, Option<Signed>)> = Vec::new();
    for line in lines.iter().filter(|line| line.kind == kind) {
        let index = match totals.iter().position(|(asset, ..)| *asset == line.asset) {
            Some(index) => index,
            None => {
                totals.push((line.asset.clone(), line.decimals, Some(Signed::ZERO)));
                totals.len() - 1
            }
        };
        let total = &mut totals[index].2;
        *total = match (*total, line.expected()) {
            (Some(sum), Ok(expected)) => add(sum, expected),
            _ => None,
        };
    }
    totals
}

fn add(a: Signed, b: Signed) -> Option<Signed> {
    if a.negative == b.negative {
        return Some(Signed {
            negative: a.negative,
            magnitude: a.magnitude.checked_add(b.magnitude)?,
        });
    }
    let (plus, minus) = if a.negative { (b, a) } else { (a, b) };
    Some(Signed::difference(plus.magnitude, minus.magnitude))
}

/// What a reconciliation found for one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The chain holds what the ledger expects.
    Agrees,
    /// The chain holds this much more (or, negative, less) than the ledger expects.
    Differs(Signed),
    /// Not compared: the expected balance or the chain's is not known, for these reasons.
    Unknown(Vec<String>),
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Agrees => "agrees",
            Verdict::Differs(_) => "differs",
            Verdict::Unknown(_) => "unknown",
        }
    }
}

/// A line compared with what the chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub line: LedgerLine,
    /// What the node said the wallet holds, or why it could not be read.
    pub on_chain: Result<Amount, String>,
    pub verdict: Verdict,
}

/// Compares `line` with the chain's balance `on_chain`.
pub fn judge(line: LedgerLine, on_chain: Result<Amount, String>) -> Reconciled {
    let verdict = match (line.expected(), &on_chain) {
        (Ok(expected), Ok(held)) => {
            let difference = expected.from_expected_to(*held);
            if difference.is_zero() {
                Verdict::Agrees
            } else {
                Verdict::Differs(difference)
            }
        }
        (expected, held) => {
            let mut reasons = expected.err().unwrap_or_default();
            if let Err(error) = held {
                reasons.push(format!("the chain's balance: {error}"));
            }
            Verdict::Unknown(reasons)
        }
    };
    Reconciled {
        line,
        on_chain,
        verdict,
    }
}

/// A chain's reconciliation summed per asset, as the store keeps it for `/metrics` and the
/// dashboard: how many wallets agree, differ and could not be compared, and the sum of the
/// differences' sizes.
pub fn checks(
    chain: Chain,
    reconciled: &[Reconciled],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<store::LedgerCheck> {
    let mut checks: Vec<store::LedgerCheck> = Vec::new();
    for each in reconciled.iter().filter(|each| each.line.chain == chain) {
        let index = match checks
            .iter()
            .position(|check| check.asset == each.line.asset)
        {
            Some(index) => index,
            None => {
                checks.push(store::LedgerCheck {
                    chain,
                    asset: each.line.asset.clone(),
                    agreeing: 0,
                    differing: 0,
                    unknown: 0,
                    difference: Amount::ZERO,
                    checked_at: now,
                });
                checks.len() - 1
            }
        };
        let check = &mut checks[index];
        match &each.verdict {
            Verdict::Agrees => check.agreeing += 1,
            Verdict::Unknown(_) => check.unknown += 1,
            Verdict::Differs(difference) => {
                check.differing += 1;
                check.difference = check
                    .difference
                    .checked_add(difference.magnitude)
                    .unwrap_or(Amount::from_base_units(ruint::aliases::U256::MAX));
            }
        }
    }
    checks
}

/// A line as `coinsensei ledger reconcile --json` shows it.
pub fn reconciled_json(each: &Reconciled) -> serde_json::Value {
    let line = &each.line;
    let amount = |amount: Amount| match line.decimals {
        Some(decimals) => amount.format_decimal(decimals),
        None => format!("{} base units", amount.base_units()),
    };
    let expected = line.expected().ok();
    serde_json::json!({
        "chain": line.chain.as_str(),
        "wallet": line.kind.as_str(),
        "address": line.address,
        "reference": line.reference,
        "asset": line.asset,
        "contract": line.contract,
        "verdict": each.verdict.as_str(),
        "expected": expected.map(|expected| expected.format(line.decimals)),
        "expected_base_units": expected.map(Signed::base_units),
        "on_chain": each.on_chain.as_ref().ok().map(|held| amount(*held)),
        "on_chain_base_units": each.on_chain.as_ref().ok().map(|held| held.base_units().to_string()),
        "difference": match &each.verdict {
            Verdict::Differs(difference) => Some(difference.format(line.decimals)),
            _ => None,
        },
        "difference_base_units": match &each.verdict {
            Verdict::Differs(difference) => Some(difference.base_units()),
            _ => None,
        },
        "unknown": match &each.verdict {
            Verdict::Unknown(reasons) => reasons.clone(),
            _ => Vec::new(),
        },
        "credited": amount(line.credited),
        "held": amount(line.held),
        "withdrawn": amount(line.withdrawn),
        "fees": amount(line.fees),
        "adjusted_in": amount(line.adjusted_in),
        "adjusted_out": amount(line.adjusted_out),
        "swept_in": amount(line.swept_in),
        "swept_out": amount(line.swept_out),
        "topped_up": amount(line.topped_up),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(n: u128) -> Amount {
        Amount::from_u128(n)
    }

    #[test]
    fn signed_arithmetic() {
        let below = Signed::difference(units(3), units(10));
        assert_eq!(below.base_units(), "-7");
        assert_eq!(below.format(Some(1)), "-0.7");
        assert_eq!(Signed::difference(units(10), units(3)).base_units(), "7");
        assert_eq!(Signed::difference(units(3), units(3)).base_units(), "0");
        // The chain holds 5 where -7 was expected: 12 more than expected.
        assert_eq!(below.from_expected_to(units(5)).base_units(), "12");
        let expected = Signed::difference(units(10), units(0));
        assert_eq!(expected.from_expected_to(units(4)).base_units(), "-6");
        assert_eq!(add(expected, below).unwrap().base_units(), "3");
        assert_eq!(add(below, below).unwrap().base_units(), "-14");
        assert_eq!(Signed::ZERO.format(None), "0 base units");
    }

    #[test]
    fn an_unknown_is_never_zero() {
        let key = AssetKey {
            symbol: "ETH".into(),
            contract: None,
            decimals: Some(18),
        };
        let mut line = LedgerLine::new(Chain::Ethereum, WalletKind::Hot, None, key);
        assert_eq!(line.expected(), Ok(Signed::ZERO));
        line.add(Field::AdjustedIn, units(100));
        line.add(Field::Withdrawn, units(30));
        line.add(Field::Fees, units(1));
        assert_eq!(line.expected().unwrap().base_units(), "69");
        for n in 0..7 {
            line.unknown_because(format!("withdrawal {n} is broadcast"));
        }
        let reasons = line.expected().unwrap_err();
        assert_eq!(reasons.len(), UNKNOWN_REASONS_MAX + 1);
        assert_eq!(reasons.last().unwrap(), "and 2 more");
        let totals = totals(std::slice::from_ref(&line), WalletKind::Hot);
        assert_eq!(totals, [("ETH".to_string(), Some(18), None)]);
    }
}
