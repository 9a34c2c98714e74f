//! Manual review actions (`withdrawal_review`, migration 0020): what a person asks of a
//! withdrawal in `manual_review`, checked against the chain before anything changes.
//!
//! 1. [`Store::withdrawal_review_request`]: an operator asks (mark paid by a txid, mark
//!    failed, or try again), with a reason. The review is stored `requested`, audited, and
//!    (with a database queue) its `withdrawal.review` job queued, all in one transaction. One
//!    open review per withdrawal at a time.
//! 2. The chain's withdrawal worker runs the job: it asks the chain whether the action is
//!    proved (`wallet::review`), then either [`Store::withdrawal_review_apply`]s it (the review
//!    `applied` and the withdrawal moved, in one transaction) or
//!    [`Store::withdrawal_review_refuse`]s it with the reason. Nothing in the withdrawal
//!    changes on a refusal.
//!
//! A transfer proves one withdrawal paid, never two: an applied `mark_paid` holds its (chain,
//! txid, position) under a unique index, and a txid another withdrawal records as its own is
//! refused. A retry starts the withdrawal's next payout round (`payout_round`), so what the
//! rounds before stored is never followed again.

use chrono::{DateTime, Utc};
use domain::{Chain, Name, WithdrawalState};
use sqlx::Row;

use crate::dialect::{in_write_tx, on_pool};
use crate::withdrawals::{COLUMNS, decode_withdrawal, moved_audit, moved_event, withdrawal_job};
use crate::{AuditInsert, JobInsert, Store, StoreError, WithdrawalRow, WithdrawalTransition};

/// The longest reason a review may give.
pub const REVIEW_REASON_LEN_MAX: usize = 500;
/// The job kind that checks and applies a review, in the chain's withdrawal queue.
pub const REVIEW_JOB_KIND: &str = "withdrawal.review";

/// What a person asks of a withdrawal in `manual_review`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReviewAction {
    /// Completed by this transaction: it must exist, be confirmed at the chain's policy, and
    /// pay exactly the destination and amount from our wallet.
    MarkPaid,
    /// Failed: only when every transaction ever stored for it is provably dead.
    MarkFailed,
    /// Paid again, in a new round: under the same rule as marking it failed.
    Retry,
}

impl ReviewAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewAction::MarkPaid => "mark_paid",
            ReviewAction::MarkFailed => "mark_failed",
            ReviewAction::Retry => "retry",
        }
    }
}

impl std::str::FromStr for ReviewAction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "mark_paid" => Ok(ReviewAction::MarkPaid),
            "mark_failed" => Ok(ReviewAction::MarkFailed),
            "retry" => Ok(ReviewAction::Retry),
            other => Err(format!(
                "unknown review action {other:?}: expected mark_paid, mark_failed or retry"
            )),
        }
    }
}

impl std::fmt::Display for ReviewAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a review is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReviewState {
    /// Asked; the chain's withdrawal worker has not judged it yet.
    Requested,
    /// Proved on the chain and applied: the withdrawal moved.
    Applied,
    /// Not proved (or no longer applicable): nothing changed; `outcome` says why.
    Refused,
}

impl ReviewState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Requested => "requested",
            ReviewState::Applied => "applied",
            ReviewState::Refused => "refused",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "requested" => Ok(ReviewState::Requested),
            "applied" => Ok(ReviewState::Applied),
            "refused" => Ok(ReviewState::Refused),
            other => Err(crate::corrupt("withdrawal_review.state", other)),
        }
    }
}

/// A person's request.
#[derive(Debug, Clone)]
pub struct ReviewRequest {
    pub withdrawal_id: i64,
    pub action: ReviewAction,
    /// The paying transaction (`mark_paid` only).
    pub txid: Option<String>,
    pub reason: String,
    /// The asking API token, if the request came through the API.
    pub token_id: Option<i64>,
    /// Who, for the audit log (`token:ID:NAME`, `cli`).
    pub actor: String,
    /// The withdrawal queue and the review job kind (a database queue); `None` when the
    /// caller queues [`review_job`] itself (Redis).
    pub job: Option<Name>,
    pub now: DateTime<Utc>,
}

/// A stored review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRow {
    pub id: i64,
    pub withdrawal_id: i64,
    pub chain: Chain,
    pub action: ReviewAction,
    pub txid: Option<String>,
    /// The paying transfer's position in `txid` (a token log's index within its transaction,
    /// a Bitcoin output), once applied.
    pub position: Option<i64>,
    pub reason: String,
    pub token_id: Option<i64>,
    pub actor: String,
    pub state: ReviewState,
    /// Why it was refused, or what applying it found.
    pub outcome: Option<String>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// What the chain proved for a `mark_paid`: where the paying transfer is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewPaid {
    pub position: i64,
    pub block_height: Option<i64>,
    pub confirmations: Option<i64>,
    /// The fee the transaction paid (native base units), where the chain says.
    pub fee: Option<String>,
    /// Bitcoin: the batch (payout) that holds the withdrawal as a member, when the txid is
    /// one of that batch's attempts. Its other members record the same txid, each paid by
    /// its own output, and do not count as "another withdrawal's transaction".
    pub batch: Option<String>,
}

/// The worker's verdict, applied.
#[derive(Debug, Clone)]
pub struct ReviewApply {
    pub id: i64,
    /// The worker that checked it (`worker:ID`), for the audit log.
    pub checked_by: String,
    /// What the chain showed, in a sentence.
    pub outcome: String,
    /// `mark_paid` only.
    pub paid: Option<ReviewPaid>,
    /// The withdrawal queue and pay job kind, for a retry (a database queue); `None` when
    /// the caller queues the pay job itself.
    pub pay_job: Option<(Name, Name)>,
    pub now: DateTime<Utc>,
}

fn invalid<T>(message: impl Into<String>) -> Result<T, StoreError> {
    Err(StoreError::Invalid(message.into()))
}

/// Checks a reason: 1 to [`REVIEW_REASON_LEN_MAX`] characters, no control characters.
pub fn validate_review_reason(reason: &str) -> Result<(), StoreError> {
    if reason.trim().is_empty()
        || reason.chars().count() > REVIEW_REASON_LEN_MAX
        || reason.chars().any(char::is_control)
    {
        return invalid(format!(
            "a reason is 1 to {REVIEW_REASON_LEN_MAX} characters without control characters"
        ));
    }
    Ok(())
}

fn validate(request: &ReviewRequest) -> Result<(), StoreError> {
    validate_review_reason(&request.reason)?;
    match (&request.txid, request.action) {
        (None, ReviewAction::MarkPaid) => invalid("marking a withdrawal paid needs the txid")?,
        (Some(_), ReviewAction::MarkFailed | ReviewAction::Retry) => invalid(format!(
            "a txid is given only to mark_paid, not {}",
            request.action
        ))?,
        (Some(txid), _)
            if txid.is_empty()
                || txid.len() > 100
                || !txid.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            invalid("a txid is 1 to 100 letters and digits (hex, with or without 0x)")?
        }
        _ => {}
    }
    if request.actor.is_empty() || request.actor.len() > 200 {
        return invalid("an actor is 1 to 200 bytes");
    }
    Ok(())
}

/// The job that checks review `id` on `chain`'s withdrawal queue (`queue`).
pub fn review_job(queue: &Name, id: i64, now: DateTime<Utc>) -> JobInsert {
    JobInsert {
        queue: queue.clone(),
        kind: Name::new(REVIEW_JOB_KIND).expect("a valid kind"),
        args: serde_json::json!({ "review_id": id }),
        // Ahead of the payments: a person is waiting for the answer.
        priority: -1,
        run_at: now,
        retry: Some(domain::withdrawal::job_retry()),
        unique_key: Some(format!("withdrawal.review:{id}")),
        now,
    }
}

/// Another withdrawal recording txid `$2` on chain `$1`: not `$3`, not failed or canceled,
/// and not a member of batch `$4` (when given).
const OTHER_WITH_TXID: &str = "select id from withdrawal
     where chain = $1 and lower(txid) = lower($2) and id <> $3
       and state not in ('failed', 'canceled')
       and ($4 is null or not exists (
           select 1 from payout_member m
           where m.chain = withdrawal.chain and m.payout = $4
             and m.member = 'withdrawal:' || withdrawal.id))
     order by id limit 1";

const REVIEW_COLUMNS: &str = "id, withdrawal_id, chain, action, txid, position, reason, token_id, \
     actor, state, outcome, created_at, decided_at";

macro_rules! decode_review {
    ($row:expr, $d:ident) => {{
        let row = $row;
        let chain: String = row.try_get("chain")?;
        let action: String = row.try_get("action")?;
        ReviewRow {
            id: row.try_get("id")?,
            withdrawal_id: row.try_get("withdrawal_id")?,
            chain: chain
                .parse()
                .map_err(|error| crate::corrupt("withdrawal_review.chain", error))?,
            action: action
                .parse()
                .map_err(|error| crate::corrupt("withdrawal_review.action", error))?,
            txid: row.try_get("txid")?,
            position: row.try_get("position")?,
            reason: row.try_get("reason")?,
            token_id: row.try_get("token_id")?,
            actor: row.try_get("actor")?,
            state: ReviewState::parse(&row.try_get::<String, _>("state")?)?,
            outcome: row.try_get("outcome")?,
            created_at: $d::read_time(row, "created_at")?,
            decided_at: $d::read_time_opt(row, "decided_at")?,
        }
    }};
}

/// Reads the withdrawal `$id` on `$conn`, locked for the transaction (Postgres `for update`;
/// SQLite's write transaction runs alone).
macro_rules! locked_withdrawal {
    ($conn:expr, $d:ident, $id:expr) => {{
        $d::lock_withdrawal(&mut *$conn, $id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from withdrawal where id = $1"
        )))
        .bind($id)
        .fetch_optional(&mut *$conn)
        .await?;
        match row {
            Some(row) => decode_withdrawal!(&row, $d),
            None => {
                return Err(StoreError::NotFound {
                    what: "withdrawal",
                    id: $id.to_string(),
                });
            }
        }
    }};
}

fn not_in_review(row: &WithdrawalRow) -> StoreError {
    StoreError::Conflict(format!(
        "withdrawal {} is {}: review actions apply only to a withdrawal in manual_review",
        row.id, row.state
    ))
}

fn truncate_outcome(text: &str) -> String {
    text.chars().take(2000).collect()
}

impl Store {
    /// Stores a person's request on a withdrawal in `manual_review` and queues its check (see
    /// the module). `Conflict` when the withdrawal is elsewhere or has an open review;
    /// `NotFound` when there is no such withdrawal; `Invalid` for a bad reason or txid.
    pub async fn withdrawal_review_request(
        &self,
        request: &ReviewRequest,
    ) -> Result<ReviewRow, StoreError> {
        validate(request)?;
        let insert = format!(
            "insert into withdrawal_review
                 (withdrawal_id, chain, action, txid, reason, token_id, actor, state, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, 'requested', $8)
             returning {REVIEW_COLUMNS}"
        );
        in_write_tx!(self, |_store, conn, d| {
            let row = locked_withdrawal!(conn, d, request.withdrawal_id);
            if row.state != WithdrawalState::ManualReview {
                return Err(not_in_review(&row));
            }
            let open: Option<i64> = sqlx::query_scalar(
                "select id from withdrawal_review where withdrawal_id = $1 and state = 'requested'",
            )
            .bind(row.id)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(open) = open {
                return Err(StoreError::Conflict(format!(
                    "withdrawal {} has review {open} open: wait for its answer",
                    row.id
                )));
            }
            let review = sqlx::query(sqlx::AssertSqlSafe(insert))
                .bind(row.id)
                .bind(row.chain.as_str())
                .bind(request.action.as_str())
                .bind(request.txid.as_deref())
                .bind(&request.reason)
                .bind(request.token_id)
                .bind(&request.actor)
                .bind(d::time(request.now))
                .fetch_one(&mut *conn)
                .await?;
            let review = decode_review!(&review, d);
            d::audit::insert_on(
                &mut *conn,
                &AuditInsert {
                    actor: request.actor.clone(),
                    action: "withdrawal.review_request".into(),
                    target: row.payout_key(),
                    details: serde_json::json!({
                        "review": review.id,
                        "action": review.action.as_str(),
                        "txid": review.txid,
                        "reason": review.reason,
                    }),
                    now: request.now,
                },
            )
            .await?;
            if let Some(queue) = &request.job {
                d::job_insert_on(&mut *conn, &review_job(queue, review.id, request.now)).await?;
            }
            Ok(review)
        })
    }

    /// One review.
    pub async fn withdrawal_review_get(&self, id: i64) -> Result<Option<ReviewRow>, StoreError> {
        let sql = format!("select {REVIEW_COLUMNS} from withdrawal_review where id = $1");
        on_pool!(self, |pool, d| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(row) => Some(decode_review!(&row, d)),
                None => None,
            })
        })
    }

    /// The reviews of a withdrawal, oldest first.
    pub async fn withdrawal_reviews(
        &self,
        withdrawal_id: i64,
    ) -> Result<Vec<ReviewRow>, StoreError> {
        let sql = format!(
            "select {REVIEW_COLUMNS} from withdrawal_review where withdrawal_id = $1 order by id"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(withdrawal_id)
                .fetch_all(pool)
                .await?;
            let mut reviews = Vec::with_capacity(rows.len());
            for row in &rows {
                reviews.push(decode_review!(row, d));
            }
            Ok(reviews)
        })
    }

    /// The withdrawal another withdrawal's txid names, if any: `txid` on `chain` recorded by
    /// a withdrawal other than `except` that is not failed or canceled, and not a member of
    /// `batch` (a Bitcoin batch's members share its txid).
    pub async fn withdrawal_with_txid(
        &self,
        chain: Chain,
        txid: &str,
        except: i64,
        batch: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        on_pool!(self, |pool, _d| {
            sqlx::query_scalar::<_, i64>(OTHER_WITH_TXID)
                .bind(chain.as_str())
                .bind(txid)
                .bind(except)
                .bind(batch)
                .fetch_optional(pool)
                .await
        })
        .map_err(StoreError::from)
    }

    /// Refuses review `id` with `outcome` (why the chain did not prove it): the review is
    /// `refused`, audited; the withdrawal is untouched. `Stale` when it was decided already.
    pub async fn withdrawal_review_refuse(
        &self,
        id: i64,
        checked_by: &str,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> Result<ReviewRow, StoreError> {
        let update = format!(
            "update withdrawal_review set state = 'refused', outcome = $1, decided_at = $2
             where id = $3 and state = 'requested' returning {REVIEW_COLUMNS}"
        );
        let outcome = truncate_outcome(outcome);
        in_write_tx!(self, |_store, conn, d| {
            let review = sqlx::query(sqlx::AssertSqlSafe(update))
                .bind(&outcome)
                .bind(d::time(now))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            let Some(review) = review else {
                return Err(StoreError::Stale(format!(
                    "review {id} is not waiting for a check"
                )));
            };
            let review = decode_review!(&review, d);
            d::audit::insert_on(
                &mut *conn,
                &AuditInsert {
                    actor: checked_by.to_string(),
                    action: "withdrawal.review_refused".into(),
                    target: crate::payout_key(review.withdrawal_id),
                    details: serde_json::json!({
                        "review": review.id,
                        "action": review.action.as_str(),
                        "requested_by": review.actor,
                        "outcome": outcome,
                    }),
                    now,
                },
            )
            .await?;
            Ok(review)
        })
    }

    /// Applies review `id`, which the chain proved: in one transaction the review is
    /// `applied` and the withdrawal moves out of `manual_review` (`completed` with the txid,
    /// `failed` with its limits given back, or `processing` in its next payout round with its
    /// pay job queued), audited as the person who asked and the worker that checked.
    /// `Stale` when the review was decided already; `Conflict` when the withdrawal left
    /// `manual_review` meanwhile, or the transfer already proves another withdrawal paid.
    pub async fn withdrawal_review_apply(
        &self,
        apply: &ReviewApply,
    ) -> Result<(ReviewRow, WithdrawalRow), StoreError> {
        let select = format!("select {REVIEW_COLUMNS} from withdrawal_review where id = $1");
        let update_review = format!(
            "update withdrawal_review set state = 'applied', outcome = $1, decided_at = $2,
                 position = $3
             where id = $4 and state = 'requested' returning {REVIEW_COLUMNS}"
        );
        let move_sql = format!(
            "update withdrawal
             set state = $1, error = $2, txid = coalesce($3, txid),
                 block_height = coalesce($4, block_height),
                 confirmations = coalesce($5, confirmations), fee = coalesce($6, fee),
                 payout_round = payout_round + $7, updated_at = $8
             where id = $9 and state = 'manual_review'
             returning {COLUMNS}"
        );
        let outcome = truncate_outcome(&apply.outcome);
        in_write_tx!(self, |_store, conn, d| {
            let review = sqlx::query(sqlx::AssertSqlSafe(select))
                .bind(apply.id)
                .fetch_optional(&mut *conn)
                .await?;
            let Some(review) = review else {
                return Err(StoreError::NotFound {
                    what: "withdrawal review",
                    id: apply.id.to_string(),
                });
            };
            let review = decode_review!(&review, d);
            let row = locked_withdrawal!(conn, d, review.withdrawal_id);
            if review.state != ReviewState::Requested {
                return Err(StoreError::Stale(format!(
                    "review {} is {} already",
                    review.id,
                    review.state.as_str()
                )));
            }
            if row.state != WithdrawalState::ManualReview {
                return Err(not_in_review(&row));
            }
            let position = match (review.action, &apply.paid) {
                (ReviewAction::MarkPaid, Some(paid)) => Some(paid.position),
                (ReviewAction::MarkPaid, None) => {
                    return invalid("marking paid needs where the transfer is");
                }
                _ => None,
            };
            if let (ReviewAction::MarkPaid, Some(txid)) = (review.action, &review.txid) {
                let batch = apply.paid.as_ref().and_then(|paid| paid.batch.as_deref());
                let other: Option<i64> = sqlx::query_scalar(OTHER_WITH_TXID)
                    .bind(row.chain.as_str())
                    .bind(txid)
                    .bind(row.id)
                    .bind(batch)
                    .fetch_optional(&mut *conn)
                    .await?;
                let proved: Option<i64> = sqlx::query_scalar(
                    "select withdrawal_id from withdrawal_review
                     where chain = $1 and lower(txid) = lower($2) and position = $3
                       and action = 'mark_paid' and state = 'applied'",
                )
                .bind(row.chain.as_str())
                .bind(txid)
                .bind(position)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(other) = other.or(proved) {
                    return Err(StoreError::Conflict(format!(
                        "transaction {txid} is withdrawal {other}'s: one transfer proves one withdrawal paid"
                    )));
                }
            }
            let review = sqlx::query(sqlx::AssertSqlSafe(update_review))
                .bind(&outcome)
                .bind(d::time(apply.now))
                .bind(position)
                .bind(review.id)
                .fetch_one(&mut *conn)
                .await?;
            let review = decode_review!(&review, d);
            let (to, error, round) = match review.action {
                ReviewAction::MarkPaid => (WithdrawalState::Completed, None, 0),
                ReviewAction::MarkFailed => (
                    WithdrawalState::Failed,
                    Some(format!(
                        "marked failed by {}: {}",
                        review.actor, review.reason
                    )),
                    0,
                ),
                ReviewAction::Retry => (
                    WithdrawalState::Processing,
                    Some(format!(
                        "paying again (round {}), asked by {}: {}",
                        row.payout_round + 1,
                        review.actor,
                        review.reason
                    )),
                    1,
                ),
            };
            let paid = apply.paid.clone().unwrap_or_default();
            let moved = sqlx::query(sqlx::AssertSqlSafe(move_sql))
                .bind(to.as_str())
                .bind(error.as_deref())
                .bind(review.txid.as_deref())
                .bind(paid.block_height)
                .bind(paid.confirmations)
                .bind(paid.fee.as_deref())
                .bind(round)
                .bind(d::time(apply.now))
                .bind(row.id)
                .fetch_one(&mut *conn)
                .await?;
            let moved = decode_withdrawal!(&moved, d);
            let transition = WithdrawalTransition::new(
                row.id,
                WithdrawalState::ManualReview,
                to,
                review.actor.clone(),
                apply.now,
            );
            d::audit::insert_on(&mut *conn, &moved_audit(&transition, &moved)).await?;
            d::audit::insert_on(
                &mut *conn,
                &AuditInsert {
                    actor: apply.checked_by.clone(),
                    action: "withdrawal.review_applied".into(),
                    target: moved.payout_key(),
                    details: serde_json::json!({
                        "review": review.id,
                        "action": review.action.as_str(),
                        "requested_by": review.actor,
                        "txid": review.txid,
                        "position": review.position,
                        "outcome": outcome,
                    }),
                    now: apply.now,
                },
            )
            .await?;
            d::outbox::append_on(&mut *conn, &moved_event(&moved)).await?;
            if to == WithdrawalState::Failed {
                // Proved never paid: what it used of its limits is given back.
                crate::usage::release_usage!(conn, d, moved);
            }
            if to == WithdrawalState::Processing
                && let Some((queue, kind)) = &apply.pay_job
            {
                d::job_insert_on(&mut *conn, &withdrawal_job(&moved, queue, kind, apply.now))
                    .await?;
            }
            Ok((review, moved))
        })
    }
}
