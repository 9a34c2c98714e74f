//! The `withdrawal` table: what the exchange's backend asked to pay and where each request is.
//!
//! One SQL text serves both dialects here: Postgres and SQLite (through sqlx's `$N` binding)
//! read the same placeholders, and the statements below need no locking, upsert or
//! notification of their own. Only how a time is encoded differs (`timestamptz` against
//! integer milliseconds), and each dialect's `dialect` module says that; the `on_pool!` and
//! `on_tx!` macros of `dialect.rs` expand one body for each (after Vaultwarden's `db_run!`).
//!
//! - [`Store::withdrawal_create`]: idempotent by the backend's key. The row, its audit entry
//!   and (with a database queue) the job that pays it commit together, so a withdrawal is
//!   never stored without its job, nor a job enqueued for a request that was not stored.
//! - [`Store::withdrawal_transition`]: every move is a compare-and-set on the state the caller
//!   expects, allowed by `WithdrawalState::can_transition`, and written with its audit entry.

use chrono::{DateTime, Utc};
use domain::limits::LIST_LIMIT_MAX;
use domain::{Chain, Name, WithdrawalState};
use sqlx::Row;

use crate::dialect::{on_pool, on_tx};
use crate::outbox::EventInsert;
use crate::{AuditInsert, JobInsert, Store, StoreError, corrupt, truncate_error};

/// Reads a withdrawal row of either dialect.
macro_rules! decode_withdrawal {
    ($row:expr, $d:ident) => {{
        let row = $row;
        let chain: String = row.try_get("chain")?;
        let state: String = row.try_get("state")?;
        $crate::WithdrawalRow {
            id: row.try_get("id")?,
            idempotency_key: row.try_get("idempotency_key")?,
            request_hash: row.try_get("request_hash")?,
            reference: row.try_get("reference")?,
            chain: chain
                .parse()
                .map_err(|error| $crate::corrupt("withdrawal.chain", error))?,
            asset: row.try_get("asset")?,
            destination: row.try_get("destination")?,
            amount: row.try_get("amount")?,
            state: state
                .parse()
                .map_err(|error| $crate::corrupt("withdrawal.state", error))?,
            error: row.try_get("error")?,
            txid: row.try_get("txid")?,
            block_height: row.try_get("block_height")?,
            confirmations: row.try_get("confirmations")?,
            fee: row.try_get("fee")?,
            created_by: row.try_get("created_by")?,
            payout_round: row.try_get("payout_round")?,
            created_at: $d::read_time(&row, "created_at")?,
            updated_at: $d::read_time(&row, "updated_at")?,
        }
    }};
}
pub(crate) use decode_withdrawal;

/// Reads withdrawal rows of either dialect, in order.
macro_rules! decode_withdrawals {
    ($rows:expr, $d:ident) => {{
        let mut withdrawals = Vec::with_capacity($rows.len());
        for row in $rows {
            withdrawals.push(decode_withdrawal!(row, $d));
        }
        withdrawals
    }};
}

pub(crate) const COLUMNS: &str = "id, idempotency_key, request_hash, reference, chain, asset, destination, \
     amount, state, error, txid, block_height, confirmations, fee, created_by, payout_round, \
     created_at, updated_at";

/// A stored withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalRow {
    pub id: i64,
    pub idempotency_key: String,
    /// SHA-256 (hex) of the request as first accepted.
    pub request_hash: String,
    pub reference: String,
    pub chain: Chain,
    /// The catalogue symbol (`USDT`, `ETH`).
    pub asset: String,
    /// The destination address, normalised for its chain.
    pub destination: String,
    /// Base units, as decimal digits.
    pub amount: String,
    pub state: WithdrawalState,
    /// Why it is where it is, when that needs saying (failed, manual review, waiting for funds).
    pub error: Option<String>,
    /// The transaction that pays it (the latest attempt's, then the one that landed).
    pub txid: Option<String>,
    pub block_height: Option<i64>,
    pub confirmations: i64,
    /// The fee paid, in the chain's native base units, once known.
    pub fee: Option<String>,
    /// Who asked (the audit log's actor of the token).
    pub created_by: String,
    /// Which round of payment it is on: 1, and one more for each retry a person made after
    /// every transaction of the rounds before was proved dead (`withdrawal_review`).
    pub payout_round: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WithdrawalRow {
    /// The key that names the withdrawal itself: its job's unique key, its audit entries'
    /// target, its events' subject, its Bitcoin batch membership.
    pub fn payout_key(&self) -> String {
        payout_key(self.id)
    }

    /// The payout key the current round's transactions are held under (TRON attempts,
    /// Ethereum nonces): [`payout_key`] in round 1, [`round_key`] after a retry.
    pub fn attempt_key(&self) -> String {
        round_key(self.id, self.payout_round)
    }

    /// The payout keys of every round so far, the first first.
    pub fn attempt_keys(&self) -> Vec<String> {
        (1..=self.payout_round.max(1))
            .map(|round| round_key(self.id, round))
            .collect()
    }
}

/// The payout key of withdrawal `id`: what its first round's attempts and nonce, and its
/// batch membership, are held under.
pub fn payout_key(id: i64) -> String {
    format!("withdrawal:{id}")
}

/// The payout key of round `round` of withdrawal `id`: `withdrawal:ID` for the first,
/// `withdrawal:ID:rN` for the rounds a retry started.
pub fn round_key(id: i64, round: i64) -> String {
    if round <= 1 {
        payout_key(id)
    } else {
        format!("withdrawal:{id}:r{round}")
    }
}

/// The withdrawal and round a payout key names, if it names one in its canonical form.
pub fn parse_round_key(payout: &str) -> Option<(i64, i64)> {
    let rest = payout.strip_prefix("withdrawal:")?;
    let (id, round) = match rest.split_once(":r") {
        Some((id, round)) => (id.parse().ok()?, round.parse().ok()?),
        None => (rest.parse().ok()?, 1),
    };
    (round_key(id, round) == payout).then_some((id, round))
}

/// Allowlist mode's rule for one withdrawal ([`WithdrawalCreate::destination_rule`]).
#[derive(Debug, Clone)]
pub struct DestinationRule {
    /// How the rule is named in a refusal (`withdrawal_allowlist`).
    pub rule: String,
    /// The withdrawal's reference prefix (a registration may belong to one).
    pub reference_prefix: String,
}

/// A new withdrawal, already validated against the chain and catalogue by the caller.
#[derive(Debug, Clone)]
pub struct WithdrawalCreate {
    pub idempotency_key: String,
    pub request_hash: String,
    pub reference: String,
    pub chain: Chain,
    pub asset: String,
    pub destination: String,
    pub amount: String,
    pub actor: String,
    /// The queue and job kind that pay it, enqueued in the same transaction (a database
    /// queue); `None` when the queue lives elsewhere (Redis), and the caller enqueues it.
    pub job: Option<(Name, Name)>,
    /// Above its asset's approval threshold: stored in `approval`, its job queued only when
    /// it is approved ([`Store::withdrawal_decide`]).
    pub approval: bool,
    /// The rolling 24-hour limits it must stay within and is charged to.
    pub limits: Vec<crate::UsageLimit>,
    /// Allowlist mode: the destination must be registered, past its cool-down, and (when
    /// its registration names one) for this reference prefix; checked in the create's own
    /// transaction, so a registration removed meanwhile is never used.
    pub destination_rule: Option<DestinationRule>,
    pub now: DateTime<Utc>,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WithdrawalCreated {
    /// Stored now (with its job).
    Created(WithdrawalRow),
    /// The same key and the same request came before: that withdrawal, unchanged.
    Existing(WithdrawalRow),
}

impl WithdrawalCreated {
    pub fn row(&self) -> &WithdrawalRow {
        match self {
            WithdrawalCreated::Created(row) | WithdrawalCreated::Existing(row) => row,
        }
    }
}

/// Moves withdrawal `id` from `from` to `to` (or, with `from == to`, only updates its fields),
/// setting the fields given. `None` leaves a field as it is, except `error`, which is always
/// written (so a move on clears a stale reason).
#[derive(Debug, Clone)]
pub struct WithdrawalTransition {
    pub id: i64,
    pub from: WithdrawalState,
    pub to: WithdrawalState,
    pub error: Option<String>,
    pub txid: Option<String>,
    pub block_height: Option<i64>,
    pub confirmations: Option<i64>,
    pub fee: Option<String>,
    /// Who moves it (a worker id, or a token), for the audit entry.
    pub actor: String,
    pub now: DateTime<Utc>,
}

impl WithdrawalTransition {
    /// A move with no fields changed.
    pub fn new(
        id: i64,
        from: WithdrawalState,
        to: WithdrawalState,
        actor: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        WithdrawalTransition {
            id,
            from,
            to,
            error: None,
            txid: None,
            block_height: None,
            confirmations: None,
            fee: None,
            actor: actor.into(),
            now,
        }
    }
}

/// Lists withdrawals, newest first, paged by `before_id`.
#[derive(Debug, Clone, Default)]
pub struct WithdrawalList {
    pub state: Option<WithdrawalState>,
    pub chain: Option<Chain>,
    pub reference: Option<String>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// Withdrawals of a chain in some states, oldest first, for the workers' reconcilers.
#[derive(Debug, Clone)]
pub struct WithdrawalScan {
    pub chain: Chain,
    pub states: Vec<WithdrawalState>,
    /// Only those with an id above this (a reconciler's cursor through a long list).
    pub after_id: i64,
    pub limit: u32,
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::Invalid(message.into())
}

fn validate_create(create: &WithdrawalCreate) -> Result<(), StoreError> {
    domain::withdrawal::check_idempotency_key(&create.idempotency_key)
        .map_err(|error| invalid(error.to_string()))?;
    domain::withdrawal::check_reference(&create.reference)
        .map_err(|error| invalid(error.to_string()))?;
    if create.request_hash.len() != 64
        || !create.request_hash.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(invalid("a request hash is 64 hex digits"));
    }
    if create.asset.is_empty() || create.asset.len() > 20 {
        return Err(invalid("an asset symbol is 1 to 20 bytes"));
    }
    if create
        .limits
        .iter()
        .any(|limit| limit.scope.len() > crate::USAGE_SCOPE_LEN_MAX)
    {
        return Err(invalid(format!(
            "a limit's scope is at most {} bytes",
            crate::USAGE_SCOPE_LEN_MAX
        )));
    }
    if create.destination.is_empty() || create.destination.len() > 100 {
        return Err(invalid("a destination is 1 to 100 bytes"));
    }
    validate_units("amount", &create.amount)?;
    if create.actor.is_empty() || create.actor.len() > 200 {
        return Err(invalid("an actor is 1 to 200 bytes"));
    }
    Ok(())
}

/// Base units as stored: 1 to 78 decimal digits without a leading zero (zero itself aside).
fn validate_units(what: &str, units: &str) -> Result<(), StoreError> {
    let canonical = !units.is_empty()
        && units.len() <= 78
        && units.bytes().all(|b| b.is_ascii_digit())
        && (units == "0" || !units.starts_with('0'));
    if canonical {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} must be base units in canonical decimal digits"
        )))
    }
}

fn validate_transition(transition: &WithdrawalTransition) -> Result<(), StoreError> {
    if transition.from != transition.to && !transition.from.can_transition(transition.to) {
        return Err(invalid(format!(
            "a withdrawal cannot move from {} to {}",
            transition.from, transition.to
        )));
    }
    if transition.actor.is_empty() || transition.actor.len() > 200 {
        return Err(invalid("an actor is 1 to 200 bytes"));
    }
    if let Some(txid) = &transition.txid
        && (txid.is_empty() || txid.len() > 100)
    {
        return Err(invalid("a txid is 1 to 100 bytes"));
    }
    if let Some(fee) = &transition.fee {
        validate_units("fee", fee)?;
    }
    if transition.block_height.is_some_and(|height| height < 0)
        || transition.confirmations.is_some_and(|count| count < 0)
    {
        return Err(invalid("heights and confirmations are not negative"));
    }
    Ok(())
}

/// Why allowlist mode refuses `create`'s destination, given its registration (usable from,
/// reference prefix, registered at), if it does.
fn destination_refusal(
    create: &WithdrawalCreate,
    rule: &DestinationRule,
    found: Option<(DateTime<Utc>, Option<String>, DateTime<Utc>)>,
) -> Option<String> {
    let chain = create.chain;
    let to = &create.destination;
    let name = &rule.rule;
    let stamp = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match found {
        None => Some(format!(
            "{to} is not a registered {chain} withdrawal destination ({name}); an admin registers it with POST /api/v1/withdrawal-destinations and it is usable after the cool-down"
        )),
        Some((usable_at, _, created_at)) if usable_at > create.now => Some(format!(
            "{to} was registered at {} and is cooling down until {} ({name}, withdrawal_allowlist_cooldown); try again after that",
            stamp(created_at),
            stamp(usable_at)
        )),
        Some((_, Some(owner), _)) if owner != rule.reference_prefix => Some(format!(
            "{to} is registered for reference prefix {owner:?} only, not {:?} ({name})",
            rule.reference_prefix
        )),
        Some(_) => None,
    }
}

pub(crate) fn is_unique_violation(error: &StoreError) -> bool {
    matches!(error, StoreError::Database(sqlx::Error::Database(database))
        if database.is_unique_violation())
}

impl Store {
    /// Stores a withdrawal (with its job and audit entry) unless its idempotency key was used
    /// before: then the earlier withdrawal when the request is the same
    /// ([`WithdrawalCreated::Existing`]), else [`StoreError::KeyReused`], changing nothing.
    pub async fn withdrawal_create(
        &self,
        create: &WithdrawalCreate,
    ) -> Result<WithdrawalCreated, StoreError> {
        validate_create(create)?;
        if let Some(existing) = self.withdrawal_by_key(&create.idempotency_key).await? {
            return same_request(create, existing);
        }
        match self.withdrawal_insert(create).await {
            Ok(row) => Ok(WithdrawalCreated::Created(row)),
            // Another request with the key committed between the look-up and the insert.
            Err(error) if is_unique_violation(&error) => {
                match self.withdrawal_by_key(&create.idempotency_key).await? {
                    Some(existing) => same_request(create, existing),
                    None => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    async fn withdrawal_insert(
        &self,
        create: &WithdrawalCreate,
    ) -> Result<WithdrawalRow, StoreError> {
        let amount = crate::usage::units_of(&create.amount)
            .map_err(|_| invalid("an amount is decimal digits"))?;
        let mut limits = create.limits.clone();
        // One order for every writer: two creates under the same limits never deadlock.
        limits.sort_by(|a, b| a.scope.cmp(&b.scope));
        let mut tx = self.begin().await?;
        let row = on_tx!(&mut tx, |conn, d| {
            if let Some(rule) = &create.destination_rule {
                // Postgres: `for share`, so a removal waits for this create to commit, and a
                // removal that committed first is not seen. SQLite: the write transaction
                // already runs alone.
                let found = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "select usable_at, reference, created_at from withdrawal_destination
                     where chain = $1 and address = $2{}",
                    d::FOR_SHARE
                )))
                .bind(create.chain.as_str())
                .bind(&create.destination)
                .fetch_optional(&mut *conn)
                .await?;
                let found = match found {
                    Some(row) => Some((
                        d::read_time(&row, "usable_at")?,
                        row.try_get::<Option<String>, _>("reference")?,
                        d::read_time(&row, "created_at")?,
                    )),
                    None => None,
                };
                if let Some(refusal) = destination_refusal(create, rule, found) {
                    return Err(StoreError::PolicyRefused(refusal));
                }
            }
            crate::usage::check_usage!(
                conn,
                d,
                create.chain,
                &create.asset,
                amount,
                &limits,
                create.now
            );
            let sql = format!(
                "insert into withdrawal (idempotency_key, request_hash, reference, chain, asset,
                     destination, amount, state, created_by, created_at, updated_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $10, $8, $9, $9)
                 returning {COLUMNS}"
            );
            let state = if create.approval {
                WithdrawalState::Approval
            } else {
                WithdrawalState::Pending
            };
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&create.idempotency_key)
                .bind(&create.request_hash)
                .bind(&create.reference)
                .bind(create.chain.as_str())
                .bind(&create.asset)
                .bind(&create.destination)
                .bind(&create.amount)
                .bind(&create.actor)
                .bind(d::time(create.now))
                .bind(state.as_str())
                .fetch_one(&mut *conn)
                .await?;
            let row = decode_withdrawal!(&row, d);
            crate::usage::charge_usage!(conn, d, row, amount, &limits);
            d::audit::insert_on(&mut *conn, &created_audit(&row)).await?;
            d::outbox::append_on(&mut *conn, &withdrawal_event("withdrawal.created", &row)).await?;
            if let Some((queue, kind)) = create.job.as_ref().filter(|_| !create.approval) {
                d::job_insert_on(
                    &mut *conn,
                    &withdrawal_job(&row, queue, kind, row.created_at),
                )
                .await?;
            }
            row
        });
        tx.commit().await?;
        Ok(row)
    }

    pub async fn withdrawal_get(&self, id: i64) -> Result<Option<WithdrawalRow>, StoreError> {
        let sql = format!("select {COLUMNS} from withdrawal where id = $1");
        on_pool!(self, |pool, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(row) => Some(decode_withdrawal!(&row, d)),
                None => None,
            })
        })
    }

    pub async fn withdrawal_by_key(&self, key: &str) -> Result<Option<WithdrawalRow>, StoreError> {
        let sql = format!("select {COLUMNS} from withdrawal where idempotency_key = $1");
        on_pool!(self, |pool, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(key)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(row) => Some(decode_withdrawal!(&row, d)),
                None => None,
            })
        })
    }

    /// Withdrawals, newest first, filtered and paged (`before_id`).
    pub async fn withdrawal_list(
        &self,
        list: &WithdrawalList,
    ) -> Result<Vec<WithdrawalRow>, StoreError> {
        let limit = i64::from(list.limit.clamp(1, LIST_LIMIT_MAX));
        let sql = format!(
            "select {COLUMNS} from withdrawal
             where ($1 is null or state = $1)
               and ($2 is null or chain = $2)
               and ($3 is null or reference = $3)
               and ($4 is null or id < $4)
             order by id desc
             limit $5"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(list.state.map(WithdrawalState::as_str))
                .bind(list.chain.map(Chain::as_str))
                .bind(list.reference.as_deref())
                .bind(list.before_id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            Ok(decode_withdrawals!(&rows, d))
        })
    }

    /// Withdrawals of a chain in the given states, oldest first, from `after_id` on.
    pub async fn withdrawal_scan(
        &self,
        scan: &WithdrawalScan,
    ) -> Result<Vec<WithdrawalRow>, StoreError> {
        if scan.states.is_empty() {
            return Ok(Vec::new());
        }
        let limit = i64::from(scan.limit.clamp(1, LIST_LIMIT_MAX));
        // The states are a closed set of our own spellings, so they are written into the
        // text: one statement per set of states, the same on both dialects.
        let states = scan
            .states
            .iter()
            .map(|state| format!("'{}'", state.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "select {COLUMNS} from withdrawal
             where chain = $1 and state in ({states}) and id > $2
             order by id
             limit $3"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(scan.chain.as_str())
                .bind(scan.after_id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            Ok(decode_withdrawals!(&rows, d))
        })
    }

    /// The payout that holds `member` (a withdrawal's payout key, `withdrawal:ID`) on `chain`
    /// while that payout may land (`payout_member`, migration 0009), if any. A payout's
    /// members are released only when none of its attempts is live or landed any more, so
    /// `None` means no transaction that pays this withdrawal can land: a Bitcoin batcher that
    /// finds a withdrawal `processing` after a crash may batch it again.
    pub async fn payout_of_member(
        &self,
        chain: Chain,
        member: &str,
    ) -> Result<Option<String>, StoreError> {
        if member.is_empty() || member.len() > 200 {
            return Err(StoreError::Invalid(
                "a withdrawal id is 1 to 200 bytes".into(),
            ));
        }
        on_pool!(self, |pool, _d| {
            sqlx::query_scalar::<_, String>(
                "select payout from payout_member where chain = $1 and member = $2",
            )
            .bind(chain.as_str())
            .bind(member)
            .fetch_optional(pool)
            .await
        })
        .map_err(StoreError::from)
    }

    /// How many withdrawals there are per (chain, state), and the oldest unfinished one's
    /// creation time, for the metrics.
    pub async fn withdrawal_counts(
        &self,
    ) -> Result<(Vec<(Chain, WithdrawalState, i64)>, Option<DateTime<Utc>>), StoreError> {
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select chain, state, count(*) as n from withdrawal group by chain, state",
            )
            .fetch_all(pool)
            .await?;
            let mut counts = Vec::with_capacity(rows.len());
            for row in &rows {
                let chain: String = row.try_get("chain")?;
                let state: String = row.try_get("state")?;
                counts.push((
                    chain
                        .parse()
                        .map_err(|error| corrupt("withdrawal.chain", error))?,
                    state
                        .parse()
                        .map_err(|error| corrupt("withdrawal.state", error))?,
                    row.try_get::<i64, _>("n")?,
                ));
            }
            let oldest = sqlx::query(
                "select created_at from withdrawal
                 where state not in ('completed', 'failed', 'canceled')
                 order by id limit 1",
            )
            .fetch_optional(pool)
            .await?;
            let oldest = match oldest {
                Some(row) => Some(d::read_time(&row, "created_at")?),
                None => None,
            };
            Ok((counts, oldest))
        })
    }

    /// How many `pending` withdrawals per chain wait for their hot wallet to hold enough
    /// (their reason starts with `domain::withdrawal::WAITING_FOR_FUNDS`).
    pub async fn withdrawal_waiting_for_funds(&self) -> Result<Vec<(Chain, i64)>, StoreError> {
        let pattern = format!("{}%", domain::withdrawal::WAITING_FOR_FUNDS);
        on_pool!(self, |pool, _d| {
            let rows = sqlx::query(
                "select chain, count(*) as n from withdrawal
                 where state = 'pending' and error like $1 group by chain",
            )
            .bind(&pattern)
            .fetch_all(pool)
            .await?;
            let mut counts = Vec::with_capacity(rows.len());
            for row in &rows {
                let chain: String = row.try_get("chain")?;
                counts.push((
                    chain
                        .parse()
                        .map_err(|error| corrupt("withdrawal.chain", error))?,
                    row.try_get::<i64, _>("n")?,
                ));
            }
            Ok(counts)
        })
    }

    /// Applies a move as a compare-and-set on `from`, with its audit entry (none for an
    /// update that stays in its state). `Conflict` naming the state it is in when it is no
    /// longer `from`; `NotFound` when there is no such withdrawal.
    pub async fn withdrawal_transition(
        &self,
        transition: &WithdrawalTransition,
    ) -> Result<WithdrawalRow, StoreError> {
        validate_transition(transition)?;
        let error = transition.error.as_deref().map(truncate_error);
        let sql = format!(
            "update withdrawal
             set state = $1, error = $2, txid = coalesce($3, txid),
                 block_height = coalesce($4, block_height),
                 confirmations = coalesce($5, confirmations), fee = coalesce($6, fee),
                 updated_at = $7
             where id = $8 and state = $9
             returning {COLUMNS}"
        );
        let mut tx = self.begin().await?;
        let row = on_tx!(&mut tx, |conn, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(transition.to.as_str())
                .bind(error.as_deref())
                .bind(transition.txid.as_deref())
                .bind(transition.block_height)
                .bind(transition.confirmations)
                .bind(transition.fee.as_deref())
                .bind(d::time(transition.now))
                .bind(transition.id)
                .bind(transition.from.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            match row {
                Some(row) => {
                    let row = decode_withdrawal!(&row, d);
                    if transition.from != transition.to {
                        d::audit::insert_on(&mut *conn, &moved_audit(transition, &row)).await?;
                        d::outbox::append_on(&mut *conn, &moved_event(&row)).await?;
                        if matches!(
                            transition.to,
                            WithdrawalState::Failed | WithdrawalState::Canceled
                        ) {
                            // Never paid: what it used of its limits is given back.
                            crate::usage::release_usage!(conn, d, row);
                        }
                    }
                    Some(row)
                }
                None => None,
            }
        });
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(match self.withdrawal_get(transition.id).await? {
                None => StoreError::NotFound {
                    what: "withdrawal",
                    id: transition.id.to_string(),
                },
                Some(row) => StoreError::Conflict(format!(
                    "withdrawal {} is {}, not {}",
                    row.id, row.state, transition.from
                )),
            });
        };
        tx.commit().await?;
        Ok(row)
    }

    /// Cancels a withdrawal that nothing was signed for yet (it is `pending`): the
    /// compare-and-set makes a payer that took it first win, and the cancel a `Conflict` that
    /// says so.
    pub async fn withdrawal_cancel(
        &self,
        id: i64,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<WithdrawalRow, StoreError> {
        let mut cancel = WithdrawalTransition::new(
            id,
            WithdrawalState::Pending,
            WithdrawalState::Canceled,
            actor,
            now,
        );
        cancel.error = Some(format!("canceled by {actor}"));
        // Still waiting for its approvals, nothing was queued or signed either; the
        // compare-and-set below holds whichever it is by then.
        if self
            .withdrawal_get(id)
            .await?
            .is_some_and(|row| row.state == WithdrawalState::Approval)
        {
            cancel.from = WithdrawalState::Approval;
        }
        match self.withdrawal_transition(&cancel).await {
            Err(StoreError::Conflict(_)) => {
                let Some(row) = self.withdrawal_get(id).await? else {
                    return Err(StoreError::NotFound {
                        what: "withdrawal",
                        id: id.to_string(),
                    });
                };
                Err(StoreError::Conflict(
                    if row.state == WithdrawalState::Canceled {
                        format!("withdrawal {id} is canceled already")
                    } else {
                        format!(
                            "withdrawal {id} is {}: a transaction may have been signed for it, so it can no longer be canceled",
                            row.state
                        )
                    },
                ))
            }
            other => other,
        }
    }
}

fn same_request(
    create: &WithdrawalCreate,
    existing: WithdrawalRow,
) -> Result<WithdrawalCreated, StoreError> {
    if existing.request_hash == create.request_hash {
        Ok(WithdrawalCreated::Existing(existing))
    } else {
        Err(StoreError::KeyReused(create.idempotency_key.clone()))
    }
}

/// The job that pays `row`: one per withdrawal (its unique key), carrying only its id; the
/// handler reads everything else from the row.
pub(crate) fn withdrawal_job(
    row: &WithdrawalRow,
    queue: &Name,
    kind: &Name,
    now: DateTime<Utc>,
) -> JobInsert {
    JobInsert {
        queue: queue.clone(),
        kind: kind.clone(),
        args: serde_json::json!({ "withdrawal_id": row.id }),
        priority: 0,
        run_at: now,
        retry: Some(domain::withdrawal::job_retry()),
        unique_key: Some(row.payout_key()),
        now,
    }
}

/// The event of a withdrawal's move into the state it is in now: `withdrawal.completed`.
pub(crate) fn moved_event(row: &WithdrawalRow) -> EventInsert {
    withdrawal_event(&format!("withdrawal.{}", row.state), row)
}

/// An event about `row` as it is now, for the exchange's backend (`docs/webhooks.md`): the
/// API's withdrawal, with its amount in base units only (the store knows no decimals).
pub(crate) fn withdrawal_event(kind: &str, row: &WithdrawalRow) -> EventInsert {
    EventInsert {
        kind: kind.to_string(),
        subject: row.payout_key(),
        payload: serde_json::json!({
            "id": row.id,
            "chain": row.chain.as_str(),
            "asset": row.asset,
            "to": row.destination,
            "amount_base_units": row.amount,
            "reference": row.reference,
            "state": row.state.as_str(),
            "txid": row.txid,
            "block_height": row.block_height,
            "confirmations": row.confirmations,
            "fee_base_units": row.fee,
            "error": row.error,
            "idempotency_key": row.idempotency_key,
            "created_at": row.created_at.to_rfc3339(),
            "updated_at": row.updated_at.to_rfc3339(),
        }),
        now: row.updated_at,
    }
}

fn created_audit(row: &WithdrawalRow) -> AuditInsert {
    AuditInsert {
        actor: row.created_by.clone(),
        action: "withdrawal.create".into(),
        target: row.payout_key(),
        details: serde_json::json!({
            "chain": row.chain.as_str(),
            "asset": row.asset,
            "to": row.destination,
            "amount": row.amount,
            "reference": row.reference,
            "idempotency_key": row.idempotency_key,
        }),
        now: row.created_at,
    }
}

pub(crate) fn moved_audit(transition: &WithdrawalTransition, row: &WithdrawalRow) -> AuditInsert {
    AuditInsert {
        actor: transition.actor.clone(),
        action: format!("withdrawal.{}", transition.to),
        target: row.payout_key(),
        details: serde_json::json!({
            "from": transition.from.as_str(),
            "to": transition.to.as_str(),
            "txid": row.txid,
            "block_height": row.block_height,
            "confirmations": row.confirmations,
            "error": row.error,
        }),
        now: transition.now,
    }
}
